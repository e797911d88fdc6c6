"""The organization runtime manager (``engine.services.organizations``): the old design's
organization flow translated to Python (create an organization with limits, deploy a package,
execute agents until the limits are hit and see the queued ones run later in order, memory
that survives between executions and expires after its TTL, a v2 deployed and rolled back,
metrics with history, the organization destroyed), on both hot paths and ``MockClock``.

The design's documents (an "Agent Runtime Management Layer" plan: ``OrganizationRuntimeManager``
with ``createOrganizationRuntime`` / ``getOrganizationRuntime`` / ``destroyOrganizationRuntime``,
``AgentMemoryManager``, ``AgentPackageManager.deployPackage`` / ``rollbackPackage``,
``RuntimeMetricsCollector.getMetricsHistory`` and the ``executeAgent`` flow) show no runnable
example beyond ``executeAgent`` itself; the flow below follows its steps and its default
``ResourceLimits`` (``maxConcurrentAgents``, ``maxQueueSize``, ``rateLimitPerMinute``, ...).
"""

from __future__ import annotations

import contextlib
import gc
import random
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

import engine
import engine.services.organizations as eo
from engine import Reply, Step
from engine.services.organizations import (
    ExecutionResult,
    ResourceLimits,
    open_organizations,
)
from engine.store import MemoryStore, agent_key


def run(fn: Callable[[], Awaitable[None]]) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def assistant(version: int = 1) -> engine.Machine:
    """A package: each execution appends its input to the agent's memory and answers with
    what it remembers (v2 answers with its version too, and has a state of another name)."""
    state = "ready" if version == 1 else "idle"
    m = engine.Machine(
        "assistant", [state], state, [], events=["execute", "forget"], version=version
    )

    @m.handler(state, "execute")
    def execute(ctx: Any, ev: Any) -> Step:
        ctx.data["seen"].append(ev.payload)
        answer = list(ctx.data["seen"])
        return Step(actions=[Reply(answer if version == 1 else ("v2", answer))])

    return m


async def executions_in_order(orgs: Any, org: str, agents: list[str]) -> list[ExecutionResult]:
    """Start one execution per agent, one virtual millisecond apart (so the order they
    arrive in is defined), and return their results in that order."""
    results: list[Any] = [None] * len(agents)

    async def one(i: int, agent: str) -> None:
        results[i] = await orgs.execute_agent(org, agent, f"job {i}")

    async with trio.open_nursery() as nursery:
        for i, agent in enumerate(agents):
            nursery.start_soon(one, i, agent)
            await trio.sleep(0.001)
    return results


def test_the_organization_flow(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(memory_ttl=3600, implementation=impl) as orgs:
            # the design's "free" tier, smaller: 2 executions a minute, 3 waiting at most
            limits = ResourceLimits(
                max_concurrent_agents=2, max_queue_size=3, rate_limit_per_minute=2
            )
            acme = orgs.create("acme", limits)
            assert (acme.name, acme.limits, acme.packages, acme.agents) == ("acme", limits, {}, ())
            # each version's starting memory: what an agent whose memory expired starts with
            orgs.register_package(assistant(1), data=lambda: {"seen": []})
            orgs.register_package(assistant(2), data=lambda: {"seen": []})
            assert orgs.packages() == {"assistant": (1, 2)}
            installed = orgs.deploy("acme", "assistant", 1)
            assert (installed.version, installed.previous) == (1, None)
            for k in range(8):
                orgs.add_agent("acme", f"a{k}", "assistant", data={"seen": []})
            assert orgs.get("acme").agents == tuple(f"a{k}" for k in range(8))
            # eight executions at once: two run now (the rate's burst), three are held back
            # by the engine's rate limit (queued), three more wait in the organization's line
            results = await executions_in_order(orgs, "acme", [f"a{k}" for k in range(8)])
            assert [r.output for r in results] == [[f"job {i}"] for i in range(8)]
            assert [r.queued for r in results] == [False] * 5 + [True] * 3
            # each ran in its turn: the rate releases one every 30 s, in order (task i
            # started i virtual milliseconds after the first)
            done_at = [round(0.001 * i + r.total) for i, r in enumerate(results)]
            assert done_at == [0, 0, 30, 60, 90, 120, 150, 180]
            assert [round(r.waited) for r in results] == [0] * 5 + [30, 60, 90]
            # max_concurrent_agents=2: the engine keeps two of them in memory at most (the
            # least recently used are hibernated to make room), so most were woken
            memories = [r.memory for r in results]
            assert set(memories) == {"restored", "resident"}
            assert memories.count("resident") <= 2
            assert all(r.stored for r in results)  # and each execution stored its memory
            assert orgs.runtime.hibernated_ids() == [("acme", f"a{k}") for k in range(8)]

            # memory survives between executions (woken from the store) ...
            await trio.sleep(60)  # the rate's bucket refills
            again = await orgs.execute_agent("acme", "a0", "more")
            assert again.memory == "restored"
            assert again.output == ["job 0", "more"]
            assert orgs.memory("acme", "a0") == {"seen": ["job 0", "more"]}
            # ... and expires after its TTL: the agent starts again from its package's
            # starting memory
            await trio.sleep(3601)
            assert orgs.memory("acme", "a0") is None
            fresh = await orgs.execute_agent("acme", "a0", "anew")
            assert (fresh.memory, fresh.output) == ("expired", ["anew"])

            # deploy v2, then roll back: memory kept across both
            v2 = orgs.deploy("acme", "assistant", 2, states={"ready": "idle"})
            assert (v2.version, v2.previous, v2.states) == (2, 1, {"ready": "idle"})
            r2 = await orgs.execute_agent("acme", "a0", "on v2")
            assert (r2.version, r2.output) == (2, ("v2", ["anew", "on v2"]))
            assert orgs.machine("acme", "assistant").version == 2
            back = orgs.rollback("acme", "assistant")
            assert (back.version, back.previous, back.undo) == (1, 2, True)
            assert orgs.runtime.upgrades == 2  # an upgrade back (never rollback_upgrade)
            r1 = await orgs.execute_agent("acme", "a0", "on v1")
            assert (r1.version, r1.output) == (1, ["anew", "on v2", "on v1"])
            assert orgs.get("acme").packages == {"assistant": 1}

            # metrics and their history show the organization's figures
            metrics = orgs.metrics("acme")
            assert (metrics.executions, metrics.failures, metrics.queued) == (12, 0, 3)
            assert metrics.tenant.processed == 12
            assert metrics.tenant.delayed >= 3
            await trio.sleep(2)
            history = orgs.history("acme")
            assert history["processed"][-1] == 12
            assert history["time"].shape == history["processed"].shape
            assert list(history) == ["time", *engine.observe.TENANT_COLUMNS, "waiting"]
            assert history["waiting"][-1] == 0

            # destroy: its agents and their memory are gone, the name can be used again
            orgs.destroy("acme")
            assert orgs.names() == []
            assert not any(t.name == "acme" for t in orgs.runtime.tenants())
            orgs.create("acme")
            orgs.deploy("acme", "assistant", 1)
            orgs.add_agent("acme", "a0", "assistant", data={"seen": []})
            assert (await orgs.execute_agent("acme", "a0", "x")).output == ["x"]

    run(main)


def test_refuse_policy_raises_instead_of_queueing(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl) as orgs:
            orgs.register_package(assistant(1))
            orgs.create(
                "acme",
                ResourceLimits(max_queue_size=1, rate_limit_per_minute=1, overflow="refuse"),
            )
            orgs.deploy("acme", "assistant")
            for k in range(3):
                orgs.add_agent("acme", f"a{k}", "assistant", data={"seen": []})
            results: list[Any] = []

            async def one(agent: str) -> None:
                try:
                    results.append(await orgs.execute_agent("acme", agent, agent))
                except eo.OrganizationLimitError as exc:
                    results.append(exc)

            async with trio.open_nursery() as nursery:
                for k in range(3):
                    nursery.start_soon(one, f"a{k}")
                    await trio.sleep(0.001)
            ok = [r for r in results if isinstance(r, ExecutionResult)]
            refused = [r for r in results if not isinstance(r, ExecutionResult)]
            assert [r.agent for r in ok] == ["a0", "a1"]  # a1 held back 60 s by the rate
            assert len(refused) == 1
            error = refused[0]
            assert isinstance(error, engine.TenantLimitError)
            assert (error.organization, error.limit, error.value) == ("acme", "max_queued", 1)
            assert isinstance(error.__cause__, engine.TenantLimitError)
            assert "acme" in str(error)
            assert "refused" in str(error)
            assert orgs.metrics("acme").tenant.rejected == 1

    run(main)


def test_deployments_are_per_organization(impl: str) -> None:
    def to_v2(state: str, data: Any) -> Any:
        return {**data, "schema": 2}

    def to_v1(state: str, data: Any) -> Any:
        return {k: v for k, v in data.items() if k != "schema"}

    async def main() -> None:
        async with open_organizations(implementation=impl) as orgs:
            rt = orgs.runtime
            orgs.register_package(assistant(1))
            orgs.register_package(assistant(2))
            for name in ("acme", "globex"):
                orgs.create(name)
                orgs.deploy(name, "assistant")  # the highest version: 2
            assert orgs.get("acme").packages == {"assistant": 2}
            orgs.destroy("acme")
            orgs.destroy("globex")
            for name in ("acme", "globex"):
                orgs.create(name)
                orgs.deploy(name, "assistant", 1)
                orgs.add_agent(name, "asleep", "assistant", data={"seen": []})
                orgs.add_agent(name, "awake", "assistant", data={"seen": []}, long_running=False)
                await orgs.execute_agent(name, "asleep", "before")
                await orgs.execute_agent(name, "awake", "before")
            assert rt.status(("acme", "asleep")) is engine.AgentStatus.HIBERNATED
            assert rt.status(("acme", "awake")) is engine.AgentStatus.IDLE
            # acme goes to v2: only its agents move (the resident one now, the hibernated
            # one when it wakes), its data migrated
            up = orgs.deploy("acme", "assistant", 2, states={"ready": "idle"}, migrate=to_v2)
            assert (up.agents, up.previous, up.version) == (1, 1, 2)
            assert rt.machine(("acme", "awake")).name == "acme/assistant"
            assert rt.machine(("acme", "awake")).version == 2
            assert rt.machine(("globex", "awake")).version == 1
            for agent in ("asleep", "awake"):
                r = await orgs.execute_agent("acme", agent, "after")
                assert r.output == ("v2", ["before", "after"])
                assert r.version == 2
                assert orgs.memory("acme", agent)["schema"] == 2
                g = await orgs.execute_agent("globex", agent, "after")
                assert g.output == ["before", "after"]
                assert g.version == 1
            # globex deploys v2 since: acme's roll back is an upgrade back (the runtime's
            # last upgrade is globex's), and so is globex's then (the last is acme's)
            orgs.deploy("globex", "assistant", 2, states={"ready": "idle"})
            assert rt.upgrades == 2
            back = orgs.rollback("acme", "assistant", migrate=to_v1)
            assert (back.version, back.states) == (1, {"idle": "ready"})
            assert rt.upgrades == 3  # an upgrade back, on the runtime's stack
            assert rt.machine(("globex", "awake")).version == 2
            orgs.rollback("globex", "assistant")
            assert rt.upgrades == 4
            for name in ("acme", "globex"):
                for agent in ("asleep", "awake"):
                    r = await orgs.execute_agent(name, agent, "last")
                    assert r.version == 1
                    assert r.output[-1] == "last"
                    assert "schema" not in orgs.memory(name, agent)
            with pytest.raises(engine.UpgradeError, match="no deployment to roll back"):
                orgs.rollback("acme", "assistant")
            with pytest.raises(engine.UpgradeError, match="deployed in organization"):
                orgs.deploy("acme", "assistant", 1)
            # a failed health check puts everything back, and the layer is unchanged
            with pytest.raises(engine.UpgradeError, match="health check"):
                orgs.deploy("acme", "assistant", 2, states={"ready": "idle"}, check=lambda *a: 0)
            assert orgs.get("acme").packages == {"assistant": 1}
            assert rt.machine(("acme", "awake")).version == 1
            # a state with nowhere to go refuses the deployment
            with pytest.raises(engine.UpgradeError, match="ready"):
                orgs.deploy("acme", "assistant", 2)
            assert orgs.get("acme").packages == {"assistant": 1}

    run(main)


def test_the_copy_of_a_package_behaves_as_the_package(impl: str) -> None:
    """Each organization runs a copy of the package rebuilt from its public tables:
    wildcard rows, outputs, handlers on "*" and ``unhandled`` carry over."""
    m = engine.Machine(
        "light", ["red", "green"], "red",
        [("red", "tick", "green", "go"), ("green", "tick", "red", ("stop", 1)),
         ("*", "fault", "red", True)],
        events=["tick", "fault", "ping", "execute"], unhandled="ignore", version=3,
    )  # fmt: skip
    m.handler("*", "ping")(lambda ctx, ev: Step(actions=[Reply((ctx.state, ev.payload))]))
    m.handler("green", "execute")(lambda ctx, ev: Step(state="red", outputs=["x"]))

    async def main() -> None:
        async with open_organizations(implementation=impl) as orgs:
            orgs.register_package(m)
            orgs.create("o")
            orgs.deploy("o", "light")
            copy = orgs.machine("o", "light")
            assert copy is not m
            assert copy.name == "o/light"
            assert copy.version == 3
            assert (copy.states, copy.events, copy.initial) == (m.states, m.events, m.initial)
            assert copy.unhandled == "ignore"
            for state in m.states:
                for event in m.events:
                    assert copy.step(state, event) == m.step(state, event)
            orgs.add_agent("o", "l", "light", long_running=False)
            ex = orgs.execute_agent
            assert (await ex("o", "l", 1, event="ping")).output == ("red", 1)
            assert (await ex("o", "l", event="tick")).output == ("go",)
            assert (await ex("o", "l", event="execute")).output == ("x",)
            assert (await ex("o", "l", event="execute")).output == ()  # ignored in red
            assert (await ex("o", "l", event="tick")).output == ("go",)
            assert (await ex("o", "l", event="tick")).output == (("stop", 1),)
            assert (await ex("o", "l", event="fault")).output == (True,)

    run(main)


def test_concurrent_executions_of_one_agent(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl) as orgs:
            orgs.register_package(assistant(1))
            orgs.create("o", ResourceLimits(rate_limit_per_minute=1))
            orgs.deploy("o", "assistant")
            orgs.add_agent("o", "a", "assistant", data={"seen": []})
            results = await executions_in_order(orgs, "o", ["a"] * 4)
            expected = [[f"job {i}" for i in range(k + 1)] for k in range(4)]
            assert [r.output for r in results] == expected
            # the first finished before the others came; the rate then held each next one
            # back until the last: only that one could store the memory again (an agent
            # with mail stays in memory)
            assert [r.stored for r in results] == [True, False, False, True]
            assert [r.memory for r in results] == ["resident", "restored", "resident", "resident"]
            assert orgs.runtime.status(("o", "a")) is engine.AgentStatus.HIBERNATED

    run(main)


def test_a_cancelled_waiter_leaves_the_line_and_order_holds(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl) as orgs:
            orgs.register_package(assistant(1))
            orgs.create("o", ResourceLimits(max_queue_size=1, rate_limit_per_minute=1))
            orgs.deploy("o", "assistant")
            for k in range(5):
                orgs.add_agent("o", f"a{k}", "assistant", data={"seen": []})
            done: list[str] = []

            async def one(agent: str, scope: trio.CancelScope) -> None:
                with scope:
                    await orgs.execute_agent("o", agent, agent)
                    done.append(agent)

            scopes = [trio.CancelScope() for _ in range(5)]
            async with trio.open_nursery() as nursery:
                for k in range(5):
                    nursery.start_soon(one, f"a{k}", scopes[k])
                    await trio.sleep(0.001)
                assert orgs.metrics("o").waiting == 3  # a0 ran, a1 is held by the rate
                scopes[2].cancel()  # waiting in the line: it leaves it
                await trio.sleep(0.001)
                assert orgs.metrics("o").waiting == 2
            assert done == ["a0", "a1", "a3", "a4"]
            assert orgs.memory("o", "a2") == {"seen": []}  # never executed

    run(main)


def test_a_queue_filled_around_the_layer_still_drains(impl: str) -> None:
    """An execution refused by the engine although the layer counted room (the queue was
    filled around the layer) keeps its place and looks at the queue again, backing off from
    ``POLL`` seconds, without sending."""

    async def main() -> None:
        async with open_organizations(implementation=impl) as orgs:
            orgs.register_package(assistant(1))
            orgs.create("o", ResourceLimits(max_queue_size=2))
            orgs.deploy("o", "assistant")
            orgs.add_agent("o", "a", "assistant", data={"seen": []}, long_running=False)
            rt = orgs.runtime
            rt.pause(("o", "a"))
            rt.send_nowait(("o", "a"), "execute", "around 1")
            rt.send_nowait(("o", "a"), "execute", "around 2")

            async def resume_later() -> None:
                await trio.sleep(1)
                rt.resume(("o", "a"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(resume_later)
                results = await executions_in_order(orgs, "o", ["a", "a"])
            assert [r.queued for r in results] == [True, True]
            assert 1 <= results[0].waited <= 2  # looks at 0.05, 0.15, ... 0.75, 1.55 s
            assert rt.tenant_statistics("o").rejected == 1  # one refused send: job 1 waits behind
            assert results[-1].output == ["around 1", "around 2", "job 0", "job 1"]

    run(main)


def test_destroy_fails_what_waits_and_what_runs(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl) as orgs:
            orgs.register_package(assistant(1))
            orgs.create("o", ResourceLimits(max_queue_size=1, rate_limit_per_minute=1))
            orgs.deploy("o", "assistant")
            for k in range(3):
                orgs.add_agent("o", f"a{k}", "assistant", data={"seen": []})
            outcomes: dict[str, Any] = {}

            async def one(agent: str) -> None:
                try:
                    outcomes[agent] = await orgs.execute_agent("o", agent, agent)
                except engine.EngineError as exc:
                    outcomes[agent] = exc

            async with trio.open_nursery() as nursery:
                for k in range(3):
                    nursery.start_soon(one, f"a{k}")
                    await trio.sleep(0.001)
                assert orgs.destroy("o") == 1  # a1's message, held by the rate
            assert isinstance(outcomes["a0"], ExecutionResult)
            assert isinstance(outcomes["a1"], eo.ExecutionFailedError)
            assert outcomes["a1"].stage == "execute"
            assert isinstance(outcomes["a2"], eo.OrganizationNotFoundError)
            assert orgs.runtime.hibernated_ids() == []  # memory gone with it
            with pytest.raises(eo.OrganizationNotFoundError):
                orgs.get("o")

    run(main)


@pytest.mark.parametrize("seed", range(6))
def test_executions_run_in_the_order_they_came(impl: str, seed: int) -> None:
    """Random arrivals, agents and limits: every execution runs, and the organization's
    messages are processed in the order the executions came (the rate releases one message
    at a time, so processing order is sending order)."""
    rng = random.Random(seed)
    processed: list[int] = []
    m = engine.Machine("worker", ["s"], "s", [], events=["execute"])

    @m.handler("s", "execute")
    def work(ctx: Any, ev: Any) -> Step:
        processed.append(ev.payload)
        return Step(actions=[Reply(ev.payload)])

    async def main() -> None:
        async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
            orgs.register_package(m)
            limits = ResourceLimits(
                max_queue_size=rng.randint(1, 4),
                rate_limit_per_minute=rng.choice([6, 30, 60]),
                burst=1,
                max_concurrent_agents=rng.randint(0, 3),
            )
            orgs.create("o", limits)
            orgs.deploy("o", "worker")
            agents = [f"a{k}" for k in range(rng.randint(1, 5))]
            for agent in agents:
                orgs.add_agent("o", agent, "worker", long_running=rng.random() < 0.5)
            n = 40
            answers: dict[int, Any] = {}

            async def one(i: int, agent: str) -> None:
                answers[i] = (await orgs.execute_agent("o", agent, i)).output

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(one, i, rng.choice(agents))
                    # a burst first (more than the queue and the rate's token take), so the
                    # line is used whatever the seed; then random arrivals
                    await trio.sleep(0.001 if i < 8 else rng.choice([0.001, 0.5, 3, 20]))
            assert answers == {i: i for i in range(n)}
            assert processed == list(range(n))
            metrics = orgs.metrics("o")
            assert (metrics.executions, metrics.failures, metrics.waiting) == (n, 0, 0)
            assert metrics.tenant.delayed > 0  # the rate held messages back
            assert metrics.queued > 0  # and executions waited in the line

    run(main)


def test_an_execution_cancelled_while_it_runs_frees_its_place(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
            orgs.register_package(assistant(1))
            orgs.create("o", ResourceLimits(max_queue_size=1, rate_limit_per_minute=1))
            orgs.deploy("o", "assistant")
            for k in range(3):
                orgs.add_agent("o", f"a{k}", "assistant", data={"seen": []})
            await orgs.execute_agent("o", "a0", "first")  # the rate's token is used
            done: list[str] = []

            async def one(agent: str) -> None:
                await orgs.execute_agent("o", agent, agent)
                done.append(agent)

            with trio.fail_after(600):  # (a lost turn would leave a2 waiting for ever)
                async with trio.open_nursery() as nursery:
                    with trio.move_on_after(1):  # held by the rate, then given up on
                        await orgs.execute_agent("o", "a1", "given up")
                    nursery.start_soon(one, "a2")  # refused (a1's message is still held)
                    await trio.sleep(0.001)
                    assert orgs.metrics("o").tenant.rejected == 1
            # none of its executions in flight any more: a2 tried again until there was room
            assert done == ["a2"]
            # a1's message stayed queued (the engine keeps it) and ran; nobody waited
            assert orgs.memory("o", "a1") == {"seen": ["given up"]}
            assert orgs.metrics("o").tenant.processed == 3

    run(main)


def test_priorities_are_the_mailbox_lanes(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
            orgs.register_package(assistant(1))
            orgs.create("o")
            orgs.deploy("o", "assistant")
            orgs.add_agent("o", "a", "assistant", data={"seen": []}, long_running=False)
            orgs.runtime.pause(("o", "a"))
            results: dict[str, Any] = {}

            async def one(label: str, priority: engine.Priority) -> None:
                results[label] = await orgs.execute_agent("o", "a", label, priority=priority)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, "low", engine.Priority.LOW)
                await trio.sleep(0.001)
                nursery.start_soon(one, "high", engine.Priority.HIGH)
                await trio.sleep(0.001)
                orgs.runtime.resume(("o", "a"))
            assert results["high"].output == ["high"]
            assert results["low"].output == ["high", "low"]

    run(main)


# -- review fixes: each test below failed before its fix ------------------------------------


def with_factory(version: int = 1) -> tuple[engine.Machine, Callable[[], Any]]:
    """A package and its starting-memory factory (v2's memory has a schema field)."""

    def fresh() -> Any:
        return {"seen": []} if version == 1 else {"seen": [], "schema": 2}

    return assistant(version), fresh


def test_a_removed_agent_waiting_in_the_line_does_not_come_back(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
            rt = orgs.runtime
            orgs.register_package(assistant(1))
            orgs.create("o", ResourceLimits(max_queue_size=1, rate_limit_per_minute=1))
            orgs.deploy("o", "assistant")
            for k in range(4):
                orgs.add_agent("o", f"a{k}", "assistant", data={"seen": []})
            outcomes: dict[str, Any] = {}

            async def one(agent: str) -> None:
                try:
                    outcomes[agent] = await orgs.execute_agent("o", agent, agent)
                except engine.EngineError as exc:
                    outcomes[agent] = exc

            async with trio.open_nursery() as nursery:
                for k in range(4):
                    nursery.start_soon(one, f"a{k}")
                    await trio.sleep(0.001)
                assert orgs.metrics("o").waiting == 2
                orgs.remove_agent("o", "a3")  # waiting in the line
            assert isinstance(outcomes["a3"], engine.AgentNotFoundError)
            assert ("o", "a3") not in rt
            assert rt.tenant_statistics("o").agents + len(rt.hibernated_ids()) == 3
            orgs.add_agent("o", "a3", "assistant", data={"seen": []})  # the name is free
            assert [outcomes[f"a{k}"].output for k in range(3)] == [["a0"], ["a1"], ["a2"]]

    run(main)


def test_the_line_does_not_read_every_tenants_statistics(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
            rt = orgs.runtime
            orgs.register_package(assistant(1))
            orgs.create("o", ResourceLimits(max_queue_size=2, rate_limit_per_minute=6, burst=1))
            orgs.deploy("o", "assistant")
            orgs.add_agent("o", "a", "assistant", data={"seen": []}, long_running=False)
            calls = [0]
            real = rt.tenant_statistics

            def counting(*args: Any) -> Any:
                calls[0] += 1
                return real(*args)

            rt.tenant_statistics = counting  # type: ignore[method-assign]
            results = await executions_in_order(orgs, "o", ["a"] * 20)
            assert sum(r.queued for r in results) > 0
            assert calls[0] == 0

    run(main)


def test_a_failed_store_keeps_the_answer(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
            rt = orgs.runtime
            m = engine.Machine("p", ["s"], "s", [], events=["execute"])

            @m.handler("s", "execute")
            def execute(ctx: Any, ev: Any) -> Step:
                ctx.data["bad"] = object()  # cannot be encoded
                return Step(actions=[Reply("the answer")])

            orgs.register_package(m)
            orgs.create("o")
            orgs.deploy("o", "p")
            orgs.add_agent("o", "a", "p", data={})
            result = await orgs.execute_agent("o", "a")
            assert (result.output, result.stored) == ("the answer", False)
            assert isinstance(result.store_error, engine.store.CodecError)
            assert rt.status(("o", "a")) is engine.AgentStatus.IDLE  # still in memory
            metrics = orgs.metrics("o")
            assert (metrics.executions, metrics.failures) == (1, 0)

    run(main)


def test_the_layer_keeps_no_copy_of_an_agents_data(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
            orgs.register_package(assistant(1))
            orgs.create("o")
            orgs.deploy("o", "assistant")
            for k in range(3):
                orgs.add_agent("o", f"a{k}", "assistant", data={"tag": "unique-7f3a", "seen": []})
                orgs.store_memory("o", f"a{k}")
            gc.collect()
            alive = [
                o for o in gc.get_objects() if type(o) is dict and o.get("tag") == "unique-7f3a"
            ]
            assert alive == []

    run(main)


def test_an_expired_agent_starts_on_the_deployed_versions_memory(impl: str) -> None:
    def to_v2(state: str, data: Any) -> Any:
        return {**data, "schema": 2}

    async def main() -> None:
        async with open_organizations(
            implementation=impl, metrics_interval=None, memory_ttl=100
        ) as orgs:
            v1, fresh1 = with_factory(1)
            v2, fresh2 = with_factory(2)
            orgs.register_package(v1, data=fresh1)
            orgs.register_package(v2, data=fresh2)
            orgs.create("o")
            orgs.deploy("o", "assistant", 1)
            orgs.add_agent("o", "a", "assistant")  # the package's starting memory
            assert orgs.memory("o", "a") == {"seen": []}
            await orgs.execute_agent("o", "a", "one")
            orgs.deploy("o", "assistant", 2, states={"ready": "idle"}, migrate=to_v2)
            await trio.sleep(200)  # expires asleep, on v1's data
            result = await orgs.execute_agent("o", "a", "two")
            assert (result.memory, result.version, result.output) == ("expired", 2, ("v2", ["two"]))
            assert orgs.memory("o", "a") == {"seen": ["two"], "schema": 2}

    run(main)


def test_the_line_honours_timeout_and_refuses_nothing_while_it_waits(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
            rt = orgs.runtime
            orgs.register_package(assistant(1))
            orgs.create("o", ResourceLimits(max_queue_size=1))
            orgs.deploy("o", "assistant")
            orgs.add_agent("o", "stuck", "assistant", data={"seen": []}, long_running=False)
            orgs.add_agent("o", "a", "assistant", data={"seen": []})
            orgs.store_memory("o", "a")
            rt.pause(("o", "stuck"))
            rt.send_nowait(("o", "stuck"), "execute", "x")  # the queue filled around the layer
            start = trio.current_time()
            seen: list[int] = []

            async def look() -> None:
                await trio.sleep(1)
                seen.append(orgs.metrics("o").waiting)  # refused, looking again

            async with trio.open_nursery() as nursery:
                nursery.start_soon(look)
                with trio.fail_after(60), pytest.raises(eo.ExecutionFailedError) as caught:
                    await orgs.execute_agent("o", "a", "hi", timeout=5)
            assert seen == [1]
            assert trio.current_time() - start == pytest.approx(5, abs=0.01)
            assert caught.value.stage == "line"
            assert isinstance(caught.value.__cause__, trio.TooSlowError)
            assert rt.tenant_statistics("o").rejected <= 1
            assert rt.status(("o", "a")) is engine.AgentStatus.HIBERNATED
            assert orgs.metrics("o").waiting == 0

    run(main)


def test_the_line_has_a_length_limit_serves_priorities_and_shows_its_length(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl, metrics_interval=1.0) as orgs:
            rt = orgs.runtime
            orgs.register_package(assistant(1))
            assert ResourceLimits().max_waiting == 1000
            orgs.create(
                "o", ResourceLimits(max_queue_size=1, rate_limit_per_minute=1, max_waiting=3)
            )
            orgs.deploy("o", "assistant")
            orgs.add_agent("o", "a", "assistant", data={"seen": []}, long_running=False)
            order: list[str] = []

            async def one(label: str, priority: int) -> None:
                await orgs.execute_agent("o", "a", label, priority=priority)
                order.append(label)

            async with trio.open_nursery() as nursery:
                for label, priority in [("first", 1), ("held", 1), ("low", 0), ("normal", 1),
                                        ("high", 2)]:  # fmt: skip
                    nursery.start_soon(one, label, priority)
                    await trio.sleep(0.001)
                assert orgs.metrics("o").waiting == 3
                with pytest.raises(eo.OrganizationLimitError, match="max_waiting") as caught:
                    await orgs.execute_agent("o", "a", "one too many")
                assert caught.value.limit == "max_waiting"
                await trio.sleep(2)
                assert orgs.history("o")["waiting"][-1] == 3
            assert order == ["first", "held", "high", "normal", "low"]
            assert rt.data(("o", "a"))["seen"] == ["first", "held", "high", "normal", "low"]
            await trio.sleep(2)
            assert orgs.history("o")["waiting"][-1] == 0

    run(main)


def test_reading_memory_does_not_wake_the_agent_or_move_its_expiry(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(
            implementation=impl, metrics_interval=None, memory_ttl=100
        ) as orgs:
            rt = orgs.runtime
            orgs.register_package(assistant(1))
            orgs.create("o")
            orgs.deploy("o", "assistant")
            orgs.add_agent("o", "a", "assistant", data={"seen": []})
            await orgs.execute_agent("o", "a", "one")
            woken = rt.statistics().woken
            since = rt.status_since(("o", "a"))
            for _ in range(3):
                await trio.sleep(30)
                assert orgs.memory("o", "a") == {"seen": ["one"]}
            assert rt.statistics().woken == woken
            assert rt.status_since(("o", "a")) == since
            await trio.sleep(20)  # 110 s asleep: expired, whatever was read
            assert orgs.memory("o", "a") is None

    run(main)


def test_a_refused_execution_leaves_the_agent_asleep(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
            rt = orgs.runtime
            orgs.register_package(assistant(1))
            orgs.create("o", ResourceLimits(max_queue_size=1, overflow="refuse"))
            orgs.deploy("o", "assistant")
            orgs.add_agent("o", "stuck", "assistant", data={"seen": []}, long_running=False)
            orgs.add_agent("o", "a", "assistant", data={"seen": []})
            orgs.store_memory("o", "a")
            rt.pause(("o", "stuck"))
            rt.send_nowait(("o", "stuck"), "execute", "x")
            with pytest.raises(eo.OrganizationLimitError):
                await orgs.execute_agent("o", "a", "hi")
            assert rt.status(("o", "a")) is engine.AgentStatus.HIBERNATED
            woken = rt.statistics().woken
            with pytest.raises(engine.UnknownEventError):
                await orgs.execute_agent("o", "a", "hi", event="nope")
            assert rt.statistics().woken == woken
            assert rt.status(("o", "a")) is engine.AgentStatus.HIBERNATED

    run(main)


def test_a_given_up_execution_still_stores_the_agent(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
            rt = orgs.runtime
            orgs.register_package(assistant(1))
            orgs.create("o", ResourceLimits(rate_limit_per_minute=1))
            orgs.deploy("o", "assistant")
            orgs.add_agent("o", "a", "assistant", data={"seen": []})
            await orgs.execute_agent("o", "a", "one")
            with trio.move_on_after(1):
                await orgs.execute_agent("o", "a", "two")  # held by the rate: given up
            with pytest.raises(eo.ExecutionFailedError):
                await orgs.execute_agent("o", "a", "three", timeout=1)
            await trio.sleep(300)
            assert rt.status(("o", "a")) is engine.AgentStatus.HIBERNATED
            assert orgs.memory("o", "a") == {"seen": ["one", "two", "three"]}

    run(main)


def test_removed_and_destroyed_agents_leave_no_records(impl: str) -> None:
    store = MemoryStore()

    async def main() -> None:
        async with open_organizations(
            store=store, implementation=impl, metrics_interval=None
        ) as orgs:
            orgs.register_package(assistant(1))
            orgs.create("o")
            orgs.deploy("o", "assistant")
            for k in range(3):
                orgs.add_agent("o", f"a{k}", "assistant", data={"seen": []})
                await orgs.execute_agent("o", f"a{k}", "x")
            assert all(store.history(agent_key(("o", f"a{k}"))) for k in range(3))
            orgs.remove_agent("o", "a0")
            assert store.history(agent_key(("o", "a0"))) == []
            orgs.add_agent("o", "a0", "assistant", data={"seen": []})
            assert orgs.memory("o", "a0") == {"seen": []}
            orgs.destroy("o")
            assert store.latest() == []

    run(main)


def test_a_rollback_is_always_an_upgrade_back(impl: str) -> None:
    """The runtime's upgrade stack is shared: a rollback never pops it (the last upgrade
    there may be anyone's, at the depth the organization's had)."""
    other_v1 = engine.Machine("other", ["s"], "s", [], events=["execute"], version=1)
    other_v2 = engine.Machine("other", ["s"], "s", [], events=["execute"], version=2)

    async def main() -> None:
        async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
            rt = orgs.runtime
            orgs.register_package(assistant(1))
            orgs.register_package(assistant(2))
            orgs.create("acme")
            orgs.deploy("acme", "assistant", 1)
            orgs.add_agent("acme", "a", "assistant", data={"seen": []}, long_running=False)
            rt.spawn(other_v1, "other")
            orgs.deploy("acme", "assistant", 2, states={"ready": "idle"})
            rt.rollback_upgrade()  # someone undoes it around the layer ...
            rt.upgrade(other_v1, other_v2)  # ... and upgrades their own: the same depth
            assert rt.machine(("acme", "a")).version == 1
            back = orgs.rollback("acme", "assistant")
            assert back.version == 1
            assert rt.machine("other") is other_v2  # not undone
            assert rt.upgrades == 2

    run(main)


def test_the_history_of_a_new_organization_starts_when_it_was_created(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl, metrics_interval=1.0) as orgs:
            orgs.register_package(assistant(1))
            orgs.create("o")
            orgs.deploy("o", "assistant")
            orgs.add_agent("o", "a", "assistant", data={"seen": []})
            for i in range(5):
                await orgs.execute_agent("o", "a", i)
            await trio.sleep(3)
            orgs.destroy("o")
            orgs.create("o")
            await trio.sleep(2.5)
            history = orgs.history("o")
            times = np.asarray(history["time"])  # (the reading at 3 s: either side)
            assert np.isnan(history["processed"][times < 3]).all()  # the predecessor's
            assert np.isnan(history["waiting"][times < 3]).all()
            assert (history["processed"][times > 3] == 0).all()

    run(main)


@pytest.mark.parametrize("seed", [0, 1, 2, 45, 50, 53])
def test_order_holds_with_executions_given_up(impl: str, seed: int) -> None:
    """Executions cancelled or timed out leave their messages queued, which the layer does
    not count (the queue is then filled around it): the ones that complete are still
    processed in the order they came, and the line ends empty."""
    rng = random.Random(seed)
    processed: list[int] = []
    m = engine.Machine("worker", ["s"], "s", [], events=["execute"])

    @m.handler("s", "execute")
    def work(ctx: Any, ev: Any) -> Step:
        processed.append(ev.payload)
        return Step(actions=[Reply(ev.payload)])

    async def main() -> None:
        async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
            orgs.register_package(m)
            limits = ResourceLimits(
                max_queue_size=rng.randint(1, 3), rate_limit_per_minute=rng.choice([6, 60, 600]),
                burst=1,
            )  # fmt: skip
            orgs.create("o", limits)
            orgs.deploy("o", "worker")
            agents = [f"a{k}" for k in range(rng.randint(1, 4))]
            for agent in agents:
                orgs.add_agent("o", agent, "worker", long_running=rng.random() < 0.5)
            done: list[int] = []

            async def one(i: int, agent: str, kind: str, delay: float) -> None:
                if kind == "cancel":
                    with trio.move_on_after(delay):
                        await orgs.execute_agent("o", agent, i)
                        done.append(i)
                elif kind == "timeout":
                    with contextlib.suppress(eo.ExecutionFailedError):
                        await orgs.execute_agent("o", agent, i, timeout=delay)
                        done.append(i)
                else:
                    await orgs.execute_agent("o", agent, i)
                    done.append(i)

            with trio.fail_after(10**6):
                async with trio.open_nursery() as nursery:
                    for i in range(60):
                        kind = rng.choice(["plain"] * 3 + ["cancel", "timeout"])
                        delay = rng.choice([0.0005, 0.01, 1, 5, 30])
                        nursery.start_soon(one, i, rng.choice(agents), kind, delay)
                        await trio.sleep(rng.choice([0, 0.001, 0.5, 3]))
            finished = set(done)
            assert [p for p in processed if p in finished] == sorted(finished)
            line = orgs._orgs["o"].line
            assert (len(line), line.taken, line.blocked, orgs.metrics("o").waiting) == (0,) * 4

    run(main)


@pytest.mark.parametrize("flushed", [True, False])
def test_under_the_commit_log_removed_agents_get_the_engines_tombstones(
    impl: str, flushed: bool
) -> None:
    store = MemoryStore()

    async def main() -> None:
        async with open_organizations(
            store=store, durability="log", implementation=impl, metrics_interval=None
        ) as orgs:
            rt = orgs.runtime
            orgs.register_package(assistant(1))
            orgs.create("o")
            orgs.deploy("o", "assistant")
            orgs.add_agent("o", "a", "assistant", data={"seen": []})
            await orgs.execute_agent("o", "a", "x")
            assert orgs.memory("o", "a") == {"seen": ["x"]}  # (woken and stored again)
            if flushed:  # (the hibernation record is written in a round of its own)
                await rt.flush()
            orgs.remove_agent("o", "a")
            await rt.flush()
            assert store.latest([agent_key(("o", "a"))])[0].record == engine.store.TOMBSTONE

    run(main)
