"""Every error of ``engine.services.organizations``, and hostile input: each is a typed error
in the engine's tree and changes nothing. Both hot paths, ``MockClock``."""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import engine
import engine.services.organizations as eo
from engine import Reply, Step
from engine.services.organizations import Organizations, ResourceLimits, open_organizations
from engine.store import MemoryStore, agent_key


def run(fn: Callable[[], Awaitable[None]]) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def package(version: int = 1) -> engine.Machine:
    m = engine.Machine("p", ["s"], "s", [], events=["execute", "slow"], version=version)

    @m.handler("s", "execute")
    def execute(ctx: Any, ev: Any) -> Step:
        if ev.payload == "boom":
            raise ValueError("boom")
        if callable(ev.payload):
            ev.payload()  # a re-entrant call into the manager, from a handler
        if ev.payload == "unstorable":
            ctx.data["bad"] = object()
        return Step(actions=[Reply(ev.payload)])

    @m.handler("s", "slow")
    def slow(ctx: Any, ev: Any) -> Step:
        time.sleep(0.03)  # a step cannot be interrupted: timed against the deadline
        return Step(actions=[Reply("late")])

    return m


def state_of(orgs: Organizations) -> tuple[Any, ...]:
    """What a refused call must leave unchanged: the organizations, tenants, agents and
    their statuses and data, the store's records, the packages, the upgrades and the
    counters of the runtime and of each organization."""
    rt = orgs.runtime
    ids = [*rt.agent_ids(), *rt.hibernated_ids()]
    store = orgs._store
    assert store is not None
    stats = rt.statistics()
    counters = [
        (m.executions, m.failures, m.queued, m.waiting, m.tenant.processed, m.tenant.rejected)
        for m in map(orgs.metrics, orgs.names())
    ]
    return (
        [orgs.get(n) for n in orgs.names()],
        [t.name for t in rt.tenants()],
        sorted((repr(i), rt.status(i).name) for i in ids),
        sorted(repr(rt.data(i)) for i in rt.agent_ids()),
        sorted((r.agent, r.record) for r in store.latest()),
        orgs.packages(),
        rt.upgrades,
        (stats.processed, stats.failed, stats.rejected, stats.woken, stats.hibernations),
        counters,
    )


def layout_of(orgs: Organizations) -> tuple[Any, ...]:
    """``state_of`` but the statuses and counters (a failed execution changes those)."""
    state = state_of(orgs)
    return (*state[:2], *state[3:7])


def test_public_names_are_exported_once_and_classes_are_final() -> None:
    names = eo.__all__
    assert len(names) == len(set(names))
    public = {n for n in dir(eo) if n.isidentifier() and not n.startswith("_")}
    assert public == set(names)
    seen: dict[int, str] = {}
    for name in names:
        obj = getattr(eo, name)
        assert id(obj) not in seen
        seen[id(obj)] = name
        if inspect.isclass(obj):
            if issubclass(obj, BaseException):
                assert issubclass(obj, engine.EngineError), name
            else:
                assert getattr(obj, "__final__", False), f"{name} is not @final"


def test_errors_are_in_the_engines_tree() -> None:
    assert issubclass(eo.OrganizationNotFoundError, engine.TenantNotFoundError)
    assert issubclass(eo.OrganizationNotFoundError, KeyError)
    assert issubclass(eo.OrganizationExistsError, engine.TenantExistsError)
    assert issubclass(eo.OrganizationLimitError, engine.TenantLimitError)
    assert issubclass(eo.OrganizationLimitError, trio.WouldBlock)
    assert issubclass(eo.PackageNotFoundError, KeyError)
    for cls in (eo.PackageExistsError, eo.PackageNotFoundError, eo.ExecutionFailedError):
        assert issubclass(cls, engine.EngineError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_queue_size": -1},
        {"max_queue_size": 1.5},
        {"max_concurrent_agents": True},
        {"max_memory_mb": math.nan},
        {"max_memory_mb": -1},
        {"max_memory_mb": "1"},
        {"rate_limit_per_minute": math.inf},
        {"max_execution_time_s": math.nan},
        {"burst": -3},
        {"weight": 0},
        {"weight": math.nan},
        {"overflow": "drop"},
        {"overflow": None},
        {"max_waiting": -1},
        {"max_waiting": 1.5},
        {"max_waiting": True},
    ],
)
def test_bad_limits_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(engine.InvalidArgumentError):
        ResourceLimits(**kwargs)


def test_limits_map_onto_the_engines() -> None:
    limits = ResourceLimits(
        max_concurrent_agents=50, max_memory_mb=4096, max_execution_time_s=1800,
        max_queue_size=1000, rate_limit_per_minute=1000, weight=3, overflow="refuse",
    )  # fmt: skip
    assert limits.to_limits() == engine.Limits(
        max_agents=50, max_queued=1000, overflow="reject", rate=1000, per="minute",
        turn_deadline=1800, on_deadline="fail", max_memory=4096 << 20,
    )  # fmt: skip
    assert ResourceLimits().to_limits().overflow == "wait"


def test_organizations_need_a_runtime_with_a_store(impl: str) -> None:
    with pytest.raises(engine.InvalidArgumentError, match="store"):
        Organizations(engine.Runtime(implementation=impl))
    with pytest.raises(engine.InvalidArgumentError):
        Organizations("a runtime")  # type: ignore[arg-type]
    rt = engine.Runtime(implementation=impl)
    engine.store.Hibernation(rt, MemoryStore())
    for bad in ({"store": "s"}, {"codec": 1}, {"log": 1}):
        with pytest.raises(engine.InvalidArgumentError):
            Organizations(rt, **bad)


def test_organization_errors_change_nothing(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl) as orgs:
            orgs.register_package(package())
            orgs.create("acme")
            orgs.deploy("acme", "p")
            orgs.add_agent("acme", "a", "p")
            orgs.runtime.add_tenant("tenant-not-org")
            before = state_of(orgs)
            for taken in ("acme", "default", "tenant-not-org"):
                with pytest.raises(eo.OrganizationExistsError, match="already exists"):
                    orgs.create(taken)
            for bad in (123, "", "x" * 201, "a/b", "\ud800", None, ["x"]):
                with pytest.raises(engine.InvalidArgumentError):
                    orgs.create(bad)  # type: ignore[arg-type]
            with pytest.raises(engine.InvalidArgumentError):
                orgs.create("b", engine.Limits())  # type: ignore[arg-type]
            for missing in ("nope", ["unhashable"], None):
                with pytest.raises(eo.OrganizationNotFoundError, match="no organization"):
                    orgs.get(missing)  # type: ignore[arg-type]
                for call in (orgs.destroy, orgs.metrics, orgs.history):
                    with pytest.raises(eo.OrganizationNotFoundError):
                        call(missing)  # type: ignore[operator]
                with pytest.raises(eo.OrganizationNotFoundError):
                    orgs.deploy(missing, "p")  # type: ignore[arg-type]
                with pytest.raises(eo.OrganizationNotFoundError):
                    await orgs.execute_agent(missing, "a")  # type: ignore[arg-type]
            assert state_of(orgs) == before

    run(main)


def test_package_errors_change_nothing(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl) as orgs:
            orgs.register_package(package())
            orgs.create("acme")
            before = state_of(orgs)
            with pytest.raises(eo.PackageExistsError, match="registered already"):
                orgs.register_package(package())
            with pytest.raises(engine.InvalidArgumentError):
                orgs.register_package("p")  # type: ignore[arg-type]
            with pytest.raises(eo.PackageNotFoundError, match="not registered") as caught:
                orgs.deploy("acme", "nope")
            assert caught.value.package == "nope"
            with pytest.raises(eo.PackageNotFoundError, match="version 7"):
                orgs.deploy("acme", "p", 7)
            for bad in ("1", 0, True, 1.0):
                with pytest.raises(engine.InvalidArgumentError):
                    orgs.deploy("acme", "p", bad)  # type: ignore[arg-type]
            with pytest.raises(engine.InvalidArgumentError, match="installing"):
                orgs.deploy("acme", "p", states={"s": "s"})
            with pytest.raises(engine.InvalidArgumentError, match="callable"):
                orgs.register_package(package(2), data={"not": "a factory"})  # type: ignore[arg-type]
            assert orgs.packages() == {"p": (1,)}
            orgs.register_package(package(2))
            orgs.deploy("acme", "p", 1)
            before = state_of(orgs)
            for bad in (
                {"states": 5}, {"states": {"s": 1}}, {"migrate": 5}, {"check": "x"},
                {"canary": 0}, {"canary": 1.5},
            ):  # fmt: skip
                with pytest.raises(engine.InvalidArgumentError):
                    orgs.deploy("acme", "p", 2, **bad)
            with pytest.raises(engine.InvalidArgumentError):
                orgs.rollback("acme", "p", states=5)  # type: ignore[arg-type]
            assert state_of(orgs) == before
            orgs.destroy("acme")
            orgs.create("acme")
            before = state_of(orgs)
            for call in (orgs.rollback, orgs.machine):
                with pytest.raises(eo.PackageNotFoundError, match="not deployed"):
                    call("acme", "p")
            with pytest.raises(eo.PackageNotFoundError, match="not deployed"):
                orgs.add_agent("acme", "a", "p")
            assert state_of(orgs) == before

    run(main)


def test_agent_errors_change_nothing(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl) as orgs:
            orgs.register_package(package())
            orgs.create("acme")
            orgs.deploy("acme", "p")
            orgs.add_agent("acme", "a", "p", data={"k": 1})
            before = state_of(orgs)
            with pytest.raises(engine.AgentExistsError):
                orgs.add_agent("acme", "a", "p")
            for bad in (1, "", "a/b", None, ("t",)):
                with pytest.raises(engine.InvalidArgumentError):
                    orgs.add_agent("acme", bad, "p")  # type: ignore[arg-type]
            with pytest.raises(engine.InvalidArgumentError, match="long_running"):
                orgs.add_agent("acme", "b", "p", long_running=1)  # type: ignore[arg-type]
            for missing in ("b", ["unhashable"]):
                for call in (orgs.remove_agent, orgs.memory, orgs.store_memory):
                    with pytest.raises(engine.AgentNotFoundError):
                        call("acme", missing)  # type: ignore[operator]
                with pytest.raises(engine.AgentNotFoundError):
                    await orgs.execute_agent("acme", missing)  # type: ignore[arg-type]
            for bad_event in (None, 1, b"execute"):
                with pytest.raises(engine.InvalidArgumentError):
                    await orgs.execute_agent("acme", "a", event=bad_event)  # type: ignore[arg-type]
            for bad_priority in (-1, 4, True, "high", None, 1.0, [1]):
                with pytest.raises(engine.InvalidArgumentError, match="priority"):
                    await orgs.execute_agent("acme", "a", priority=bad_priority)
            for bad_timeout in (math.nan, 0, -1, True, "1", math.inf):
                with pytest.raises(engine.InvalidArgumentError):
                    await orgs.execute_agent("acme", "a", timeout=bad_timeout)  # type: ignore[arg-type]
            assert state_of(orgs) == before
            assert orgs.metrics("acme").executions == 0
            # past max_memory_mb with nothing to hibernate: refused, nothing added
            assert ResourceLimits(max_memory_mb=1e-12).to_limits().max_memory == 1  # not 0
            orgs.create("tiny", ResourceLimits(max_memory_mb=0.00001))
            orgs.deploy("tiny", "p")
            with pytest.raises(eo.OrganizationLimitError, match="max_memory") as caught:
                orgs.add_agent("tiny", "a", "p")
            assert caught.value.organization == "tiny"
            assert orgs.get("tiny").agents == ()
            assert ("tiny", "a") not in orgs.runtime
            assert orgs.remove_agent("acme", "a") == 0
            assert orgs.get("acme").agents == ()

    run(main)


def test_failed_executions_keep_the_cause(impl: str) -> None:
    store = MemoryStore()

    async def main() -> None:
        async with open_organizations(
            store=store, implementation=impl, metrics_interval=None
        ) as orgs:
            rt = orgs.runtime
            orgs.register_package(package())
            orgs.create("acme", ResourceLimits(max_execution_time_s=0.01))
            orgs.deploy("acme", "p")
            orgs.add_agent("acme", "a", "p", data={})

            async def failure(payload: Any = None, **kwargs: Any) -> eo.ExecutionFailedError:
                with pytest.raises(eo.ExecutionFailedError) as caught:
                    await orgs.execute_agent("acme", "a", payload, **kwargs)
                error = caught.value
                assert (error.organization, error.agent) == ("acme", "a")
                assert "acme" in str(error)
                return error

            async def failure_of(agent: str) -> eo.ExecutionFailedError:
                with pytest.raises(eo.ExecutionFailedError) as caught:
                    await orgs.execute_agent("acme", agent, "x")
                return caught.value

            error = await failure("boom")  # the handler raised
            assert error.stage == "execute"
            assert rt.status(("acme", "a")) is engine.AgentStatus.HIBERNATED  # stored anyway
            assert isinstance(error.__cause__, engine.HandlerError)
            assert isinstance(error.__cause__.__cause__, ValueError)
            with pytest.raises(engine.UnknownEventError):  # bad input: nothing woken or sent
                await orgs.execute_agent("acme", "a", event="nope")
            error = await failure(event="slow")  # past max_execution_time_s
            assert isinstance(error.__cause__.__cause__, engine.TurnDeadlineError)
            rt.pause(("acme", "a"))
            error = await failure(timeout=5)  # no answer in time
            assert isinstance(error.__cause__, trio.TooSlowError)
            rt.resume(("acme", "a"))
            await rt.wait_until_idle()  # (the late message is processed; nobody waits)
            # memory that cannot be encoded: the store stage fails, the answer stands, the
            # agent stays in memory
            kept = await orgs.execute_agent("acme", "a", "unstorable")
            assert (kept.output, kept.stored) == ("unstorable", False)
            assert isinstance(kept.store_error, engine.store.CodecError)
            assert rt.status(("acme", "a")) is engine.AgentStatus.IDLE
            del rt.data(("acme", "a"))["bad"]
            assert (await orgs.execute_agent("acme", "a", "fine")).stored
            # a damaged record: the restore stage fails, the agent stays asleep
            store.write([(agent_key(("acme", "a")), time.time(), b"not a record")])
            error = await failure("x")
            assert error.stage == "restore"
            assert isinstance(error.__cause__, engine.store.CorruptRecordError)
            assert rt.status(("acme", "a")) is engine.AgentStatus.HIBERNATED
            metrics = orgs.metrics("acme")
            assert (metrics.executions, metrics.failures) == (6, 4)  # the restore counted
            # an expired agent whose starting memory cannot be made: a restore failure
            orgs.register_package(package(2), data=lambda: 1 / 0)
            orgs.deploy("acme", "p", 2)
            orgs.add_agent("acme", "b", "p", data={})
            orgs.store_memory("acme", "b")
            rt.terminate(("acme", "b"))  # (as expiry would have removed it)
            error = await failure_of("b")
            assert error.stage == "restore"
            assert isinstance(error.__cause__, ZeroDivisionError)
            assert orgs.metrics("acme").failures == 5
            with pytest.raises(engine.InvalidArgumentError, match="metrics history"):
                orgs.history("acme")

    run(main)


def test_hostile_inputs_are_carried_or_refused(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl) as orgs:
            orgs.register_package(package())
            orgs.create("acme")
            orgs.deploy("acme", "p")
            orgs.add_agent("acme", "a", "p", data={})
            huge = list(range(10**6))
            assert (await orgs.execute_agent("acme", "a", huge)).output is huge
            nan = (await orgs.execute_agent("acme", "a", math.nan)).output
            assert math.isnan(nan)
            assert orgs.memory("acme", "a") == {}

    run(main)


def test_reentrant_calls_from_a_handler_change_nothing(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl) as orgs:
            orgs.register_package(package())
            orgs.register_package(package(2))
            orgs.create("acme")
            orgs.deploy("acme", "p", 1)
            orgs.add_agent("acme", "a", "p", data={}, long_running=False)
            before = layout_of(orgs)
            for call in (
                lambda: orgs.deploy("acme", "p", 2),
                lambda: orgs.destroy("acme"),
            ):
                with pytest.raises(eo.ExecutionFailedError) as caught:
                    await orgs.execute_agent("acme", "a", call)
                assert isinstance(caught.value.__cause__.__cause__, engine.RuntimeBusyError)
                assert layout_of(orgs) == before
            # what the engine allows from a handler works through the layer too
            await orgs.execute_agent("acme", "a", lambda: orgs.create("globex"))
            assert orgs.names() == ["acme", "globex"]

    run(main)
