"""Tenants: weighted fair scheduling in the drain loop, and every limit pushed past. Every
test runs on both hot paths."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

import engine
import engine.store as store
from engine import (
    AgentStatus,
    DeadLetterReason,
    Limits,
    Machine,
    Priority,
    Runtime,
    Step,
    TenantBusyError,
    TenantExistsError,
    TenantLimitError,
    TenantNotFoundError,
    TurnDeadlineError,
    Work,
    open_runtime,
)
from engine.runtime._tenants import AGENT_BYTES, MESSAGE_BYTES

BUDGET = 64  # the default turn budget: a tenant of weight w takes w x 64 messages a round


def ping() -> Machine:
    """One state; every ``go`` is a table step with an output (the fast path)."""
    return Machine("ping", ["idle"], "idle", [("idle", "go", None, "pong")])


def recorder(log: list[Any]) -> Machine:
    """Records ``(agent id, payload)`` of every message, in processing order."""
    m = Machine("rec", ["idle"], "idle", [("idle", "go", None)])

    @m.handler("idle", "go")
    def go(ctx: Any, ev: Any) -> None:
        log.append((ctx.agent_id, ev.payload))

    return m


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def served(rt: Runtime) -> dict[str, int]:
    return {t.name: t.processed + t.failed for t in rt.tenant_statistics()}


def flood(rt: Runtime, ids: list[Any], n: int, event: str = "go") -> None:
    """Queue ``n`` messages round robin over ``ids`` in one call (slots: no id lookups)."""
    slots = rt.slots(ids)
    rt.send_many_slots(np.resize(slots, n), np.zeros(n, np.int32))


# -- scheduling ---------------------------------------------------------------------------


def test_one_tenant_keeps_the_plain_drain_loop(impl: str) -> None:
    rt = Runtime(implementation=impl)
    rt.spawn(ping(), "a")
    rt.send_nowait("a", "go")
    rt.run_until_idle()
    assert not rt._d.tenanted  # nobody added a tenant: the loop of before, untouched
    assert rt.statistics().tenants == ()
    assert rt.tenant_of("a") == "default"
    rt.add_tenant("t")
    assert rt._d.tenanted


def test_backlogged_tenants_share_in_proportion_to_their_weights(impl: str) -> None:
    rt = Runtime(implementation=impl)
    m = ping()
    for weight, name in [(1, "one"), (2, "two"), (3, "three")]:
        rt.add_tenant(name, weight=weight)
        ids = [(name, i) for i in range(20)]
        for agent_id in ids:
            rt.spawn(m, agent_id, tenant=name)
        flood(rt, ids, 60_000)  # more than any tenant can take in 10^5: all stay backlogged
    assert rt.run(100_000) == 100_000
    shares = served(rt)
    assert sum(shares.values()) == 100_000
    for name, weight in [("one", 1), ("two", 2), ("three", 3)]:
        share = shares[name] / 100_000
        assert abs(share - weight / 6) <= 0.05 * weight / 6, (name, share)


def test_an_idle_tenants_share_goes_to_the_others(impl: str) -> None:
    rt = Runtime(implementation=impl)
    m = ping()
    rt.add_tenant("busy", weight=1)
    rt.add_tenant("idle", weight=9)
    rt.spawn(m, "b", tenant="busy")
    rt.spawn(m, "i", tenant="idle")
    flood(rt, ["b"], 10_000)
    assert rt.run(5_000) == 5_000  # all of it, though its weight is a tenth
    rt.send_nowait("i", "go")
    rt.run_until_idle()
    assert served(rt) == {"default": 0, "busy": 10_000, "idle": 1}


def test_a_flood_delays_a_quiet_tenant_by_at_most_one_round(impl: str) -> None:
    """10^6 messages flood one tenant; a quiet tenant's messages, sent while the flood is
    queued, each wait for at most one scheduling round: the other tenants' quanta."""
    rt = Runtime(implementation=impl, sample_every=1)
    m = ping()
    quiet_log: list[int] = []
    quiet = Machine("quiet", ["idle"], "idle", [("idle", "go", None)])

    @quiet.handler("idle", "go")
    def go(ctx: Any, ev: Any) -> None:  # how far the flood got when this one was served
        quiet_log.append(int(rt._d.tenant_table()[1]["served"]) - ev.payload)

    rt.add_tenant("flood", weight=2)
    rt.add_tenant("quiet", weight=1)
    ids = [("f", i) for i in range(1000)]
    for agent_id in ids:
        rt.spawn(m, agent_id, tenant="flood")
    rt.spawn(quiet, "q", tenant="quiet")
    flood(rt, ids, 1_000_000)
    rng = np.random.default_rng(5)
    while rt._d.tenant_table()[1]["queued"]:
        rt.run(int(rng.integers(1, 5000)))
        rt.send_nowait("q", "go", int(rt._d.tenant_table()[1]["served"]))
    rt.run_until_idle()
    one_round = 2 * BUDGET  # the flood's quantum: all that is served before the quiet one
    delays = np.array(quiet_log)
    assert len(delays) > 200
    assert delays.max() <= one_round
    assert np.percentile(delays, 99) <= one_round
    stats = {t.name: t for t in rt.tenant_statistics()}
    assert stats["flood"].processed == 1_000_000
    assert stats["quiet"].wait is not None
    assert stats["quiet"].wait.total == len(delays)


def test_a_new_weight_counts_from_the_next_round(impl: str) -> None:
    rt = Runtime(implementation=impl)
    m = ping()
    rt.add_tenant("a")
    rt.add_tenant("b")
    rt.spawn(m, "a", tenant="a")
    rt.spawn(m, "b", tenant="b")
    flood(rt, ["a"], 5_000)
    flood(rt, ["b"], 5_000)
    assert rt.run(10) == 10  # a is being served: 54 of its 64 left in this round
    rt.update_tenant("a", weight=3)
    assert rt.run(54) == 54
    assert served(rt) == {"default": 0, "a": 64, "b": 0}  # the old quantum, to its end
    assert rt.run(64 + 192) == 256
    assert served(rt) == {"default": 0, "a": 64 + 192, "b": 64}  # then the new one
    assert rt.run(4 * 256) == 1024
    assert served(rt) == {"default": 0, "a": 64 + 192 * 5, "b": 64 * 5}


def test_priorities_still_order_mail_inside_an_agent(impl: str) -> None:
    log: list[Any] = []
    rt = Runtime(implementation=impl)
    rt.add_tenant("t")
    rt.spawn(recorder(log), "a", tenant="t")
    for k, prio in enumerate([Priority.LOW, Priority.NORMAL, Priority.CRITICAL, Priority.HIGH]):
        rt.send_nowait("a", "go", k, prio)
    rt.run_until_idle()
    assert [p for _, p in log] == [2, 3, 1, 0]


def test_agents_of_one_tenant_take_turns_in_fifo_order(impl: str) -> None:
    log: list[Any] = []
    rt = Runtime(implementation=impl, budget=2)
    rt.add_tenant("t")
    m = recorder(log)
    for name in "xyz":
        rt.spawn(m, name, tenant="t")
    for k in range(3):
        for name in "xyz":
            rt.send_nowait(name, "go", k)
    rt.run_until_idle()
    assert log == [
        ("x", 0), ("x", 1), ("y", 0), ("y", 1), ("z", 0), ("z", 1),
        ("x", 2), ("y", 2), ("z", 2),
    ]  # fmt: skip


def test_tenancy_turned_on_from_a_handler_loses_nothing(impl: str) -> None:
    log: list[Any] = []
    rt = Runtime(implementation=impl, budget=1)
    m = recorder(log)
    late = Machine("late", ["idle"], "idle", [("idle", "go", None)])

    @late.handler("idle", "go")
    def go(ctx: Any, ev: Any) -> None:
        if "new" not in [t.name for t in rt.tenants()]:
            rt.add_tenant("new", weight=2)
            rt.spawn(m, "n", tenant="new")
            rt.send_nowait("n", "go", "from the handler")
        log.append((ctx.agent_id, ev.payload))

    rt.spawn(late, "l")
    for name in "ab":
        rt.spawn(m, name)
    for k in range(5):
        for name in "lab":
            rt.send_nowait(name, "go", k)
    rt.run_until_idle()
    assert sorted(log, key=repr) == sorted(
        [(n, k) for n in "lab" for k in range(5)] + [("n", "from the handler")], key=repr
    )
    assert served(rt) == {"default": 15, "new": 1}


# -- max_agents and max_memory ------------------------------------------------------------


def test_max_agents_refuses_the_spawn_past_it(impl: str) -> None:
    rt = Runtime(implementation=impl)
    m = ping()
    rt.add_tenant("small", limits=Limits(max_agents=2))
    rt.spawn(m, 1, tenant="small")
    rt.spawn(m, 2, tenant="small")
    with pytest.raises(TenantLimitError) as info:
        rt.spawn(m, 3, tenant="small")
    assert (info.value.tenant, info.value.limit, info.value.value) == ("small", "max_agents", 2)
    assert 3 not in rt
    assert len(rt) == 2
    rt.spawn(m, 3)  # other tenants are not limited by it
    rt.terminate(1)
    rt.spawn(m, 4, tenant="small")
    assert rt.tenant_statistics("small").agents == 2


def test_max_memory_counts_agents_mail_and_sized_data(impl: str) -> None:
    rt = Runtime(implementation=impl)
    m = ping()
    rt.add_tenant(
        "t", limits=Limits(max_memory=3 * AGENT_BYTES + 1000 + 4 * MESSAGE_BYTES), sizer=len
    )
    rt.spawn(m, "a", "x" * 1000, tenant="t")
    rt.spawn(m, "b", "", tenant="t")
    for _ in range(4):
        rt.send_nowait("a", "go")
    assert rt.tenant_statistics("t").memory == 2 * AGENT_BYTES + 1000 + 4 * MESSAGE_BYTES
    with pytest.raises(TenantLimitError) as info:
        rt.spawn(m, "c", "y", tenant="t")  # one byte of data too many
    assert info.value.limit == "max_memory"
    rt.spawn(m, "c", "", tenant="t")
    assert "c" in rt


def test_a_sizer_that_raises_or_lies_never_breaks_a_spawn(impl: str) -> None:
    def bad(data: Any) -> Any:
        if data == "raise":
            raise RuntimeError("no")
        return data

    rt = Runtime(implementation=impl)
    rt.add_tenant("t", limits=Limits(max_memory=10 * AGENT_BYTES), sizer=bad)
    for k, data in enumerate(["raise", -5, math.nan, "text", 7]):
        rt.spawn(ping(), k, data, tenant="t")  # each counts 0 bytes of data, but 7
    assert rt.tenant_statistics("t").memory == 5 * AGENT_BYTES + 7
    with pytest.raises(TenantLimitError):
        rt.spawn(ping(), "huge", 2**100, tenant="t")  # a huge claim is taken at its word
    assert "huge" not in rt


# -- max_queued ---------------------------------------------------------------------------


def test_max_queued_rejects_and_changes_nothing(impl: str) -> None:
    log: list[Any] = []
    rt = Runtime(implementation=impl)
    m = recorder(log)
    rt.add_tenant("t", limits=Limits(max_queued=3))
    rt.spawn(m, "a", tenant="t")
    rt.spawn(m, "b", tenant="t")
    rt.spawn(m, "free")
    rt.send_nowait("a", "go", 1)
    rt.send_nowait("b", "go", 2)
    rt.send_nowait("a", "go", 3)
    with pytest.raises(TenantLimitError) as info:
        rt.send_nowait("b", "go", 4)
    assert isinstance(info.value, trio.WouldBlock)
    assert not info.value.wait
    with pytest.raises(TenantLimitError):
        rt.send_many(["free", "a"], ["go", "go"], payloads=[5, 6])  # all or nothing
    assert rt.queued("a") == [(Priority.NORMAL, "go", 1), (Priority.NORMAL, "go", 3)]
    assert rt.queued("b") == [(Priority.NORMAL, "go", 2)]
    assert rt.queued("free") == []
    assert rt.status("b") == AgentStatus.PROCESSING
    stats = rt.tenant_statistics("t")
    assert (stats.queued, stats.rejected) == (3, 2)  # the refused send and the batch's one
    rt.run_until_idle()
    rt.send_nowait("b", "go", 7)  # room again
    rt.run_until_idle()
    assert [p for _, p in log] == [1, 3, 2, 7]


@pytest.mark.parametrize(
    "limits",
    [Limits(max_queued=100), Limits(max_agents=100), Limits(max_memory=10**6), Limits()],
    ids=["max_queued", "max_agents", "max_memory", "none"],
)  # the compiled path keeps the count as mail moves for the first three, sums it for none
def test_queued_counts_mail_leaving_every_way(impl: str, limits: Limits) -> None:
    rt = Runtime(implementation=impl)
    rt.add_tenant("t", limits=limits)
    m = ping()
    rt.spawn(m, "run", tenant="t")
    rt.spawn(m, "dropped", tenant="t", capacity=2, policy=engine.OverflowPolicy.DROP_OLDEST)
    rt.spawn(m, "stopped", tenant="t")
    rt.spawn(m, "gone", tenant="t")
    rt.spawn(m, "moved", tenant="t")
    for agent_id in ["run", "stopped", "gone", "moved"]:
        for _ in range(3):
            rt.send_nowait(agent_id, "go")
    for _ in range(5):
        rt.send_nowait("dropped", "go")  # three dropped on arrival
    assert rt.tenant_statistics("t").queued == 14
    rt._d.stop("stopped")
    rt.terminate("gone")
    rt._d.take_mail("moved")
    assert rt.tenant_statistics("t").queued == 5
    rt.run_until_idle()
    assert rt.tenant_statistics("t").queued == 0


def test_await_send_waits_for_room_when_the_tenant_says_wait(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.add_tenant("w", limits=Limits(max_queued=2, overflow="wait"))
            rt.add_tenant("r", limits=Limits(max_queued=2))
            rt.spawn(ping(), "w", tenant="w")
            rt.spawn(ping(), "r", tenant="r")
            rt.pause("w")
            rt.pause("r")
            for agent_id in ("w", "r"):
                await rt.send(agent_id, "go")
                await rt.send(agent_id, "go")
            with pytest.raises(TenantLimitError):
                await rt.send("r", "go")  # the reject policy: await raises too
            done = trio.Event()

            async def third() -> None:
                await rt.send("w", "go")
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(third)
                await trio.sleep(1)
                assert not done.is_set()  # waits while the tenant is full
                rt.resume("w")
            assert done.is_set()
            await rt.wait_until_idle()
            assert rt.statistics("w").processed == 3

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# -- rate -----------------------------------------------------------------------------------


def test_rate_delays_the_excess_in_order_and_drops_nothing(impl: str) -> None:
    log: list[Any] = []
    clock = Clock()
    rt = Runtime(implementation=impl, clock=clock)
    m = recorder(log)
    rt.add_tenant("slow", limits=Limits(rate=10, burst=5))
    rt.spawn(m, "a", tenant="slow")
    rt.spawn(m, "b", tenant="slow")
    rt.spawn(m, "free")
    for k in range(20):
        rt.send_nowait("ab"[k % 2], "go", k)
        rt.send_nowait("free", "go", k)
    stats = rt.tenant_statistics("slow")
    assert (stats.delayed_now, stats.delayed, stats.queued) == (15, 15, 20)
    rt.run_until_idle()
    assert sorted(p for a, p in log if a != "free") == [0, 1, 2, 3, 4]  # the burst
    assert len([a for a, _ in log if a == "free"]) == 20  # others are not held back
    times: list[float] = []
    while rt.tenant_statistics("slow").delayed_now:
        due = rt.next_deadline()
        assert due is not None
        clock.now = due
        rt.fire_timers()
        before = len(log)
        rt.run_until_idle()
        times += [clock.now] * (len(log) - before)
    assert [p for a, p in log if a != "free"][5:] == list(range(5, 20))  # in sending order
    assert times[0] == pytest.approx(0.1)
    assert times[-1] == pytest.approx(1.5)
    assert np.diff(times) == pytest.approx(np.full(14, 0.1))  # 10 a second, evenly
    assert rt.tenant_statistics("slow").queued == 0


def test_rate_per_minute_and_a_late_tenant_change(impl: str) -> None:
    clock = Clock()
    rt = Runtime(implementation=impl, clock=clock)
    rt.add_tenant("t", limits=Limits(rate=60, per="minute", burst=1))
    rt.spawn(ping(), "a", tenant="t")
    for _ in range(5):
        rt.send_nowait("a", "go")
    rt.run_until_idle()
    assert rt.statistics("a").processed == 1
    assert rt.next_deadline() == pytest.approx(1.0)  # one a second
    rt.update_tenant("t", limits=Limits())  # no rate any more: the rest goes at once
    clock.now = 0.001
    rt.fire_timers(rt.next_deadline())
    rt.run_until_idle()
    assert rt.statistics("a").processed == 5


def test_delayed_mail_of_a_terminated_agent_is_a_dead_letter(impl: str) -> None:
    clock = Clock()
    rt = Runtime(implementation=impl, clock=clock)
    rt.add_tenant("t", limits=Limits(rate=1, burst=1))
    rt.spawn(ping(), "a", tenant="t")
    rt.spawn(ping(), "b", tenant="t")
    rt.send_nowait("a", "go", "first")
    rt.send_nowait("a", "go", "held")
    rt.send_nowait("b", "go", "held for b")
    rt.terminate("a")
    clock.now = 10.0
    rt.fire_timers()
    rt.run_until_idle()
    letters = [(d.agent_id, d.payload, d.reason) for d in rt.dead_letters()]
    assert ("a", "held", DeadLetterReason.UNDELIVERABLE) in letters
    assert rt.statistics("b").processed == 1
    assert rt.tenant_statistics("t").queued == 0


def test_rate_limited_requests_are_answered_under_trio(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.add_tenant("t", limits=Limits(rate=2, burst=1))
            rt.spawn(ping(), "a", tenant="t")
            start = trio.current_time()
            answers = [await rt.request("a", "go") for _ in range(5)]
            assert answers == [("pong",)] * 5
            assert trio.current_time() - start == pytest.approx(2.0)  # 1 at once, then 2/s

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# -- turn_deadline --------------------------------------------------------------------------


def sleeper(seconds: float) -> Machine:
    m = Machine("sleepy", ["a", "b"], "a", [("a", "go", "b", "went"), ("b", "go", "a", "went")])

    @m.handler("a", "go")
    def slow(ctx: Any, ev: Any) -> None:
        time.sleep(seconds)

    return m


@pytest.mark.parametrize("policy", ["report", "fail", "stop"])
def test_a_handler_past_its_turn_deadline(impl: str, policy: str) -> None:
    outputs: list[Any] = []
    rt = Runtime(implementation=impl, on_output=lambda b: outputs.extend(b.outputs()))
    rt.add_tenant("t", limits=Limits(turn_deadline=0.005, on_deadline=policy))
    rt.spawn(sleeper(0.03), "slow", tenant="t")
    rt.spawn(sleeper(0.03), "other")  # the default tenant has no deadline
    rt.send_nowait("slow", "go")
    rt.send_nowait("other", "go")
    rt.run_until_idle()
    assert rt.tenant_statistics("t").overruns == 1
    assert rt.state("other") == "b"
    if policy == "report":
        assert rt.state("slow") == "b"
        assert outputs.count("went") == 2
        return
    assert rt.state("slow") == "a"  # the step is discarded: no transition, no output
    assert outputs == ["went"]
    (letter,) = rt.dead_letters()
    assert letter.reason == DeadLetterReason.HANDLER_FAILED
    assert isinstance(letter.error, engine.HandlerError)
    cause = letter.error.__cause__
    assert isinstance(cause, TurnDeadlineError)
    assert cause.deadline == 0.005
    assert cause.seconds >= 0.03
    expected = AgentStatus.ERROR if policy == "fail" else AgentStatus.STOPPED
    assert rt.status("slow") == expected


def test_work_is_cancelled_at_its_tenants_turn_deadline(impl: str) -> None:
    m = Machine(
        "worker",
        ["idle", "busy", "done", "late"],
        "idle",
        [("idle", "start", "busy"), ("busy", "ok", "done"), ("busy", "timeout", "late")],
    )

    async def job(seconds: float) -> str:
        await trio.sleep(seconds)
        return "ok"

    @m.handler("idle", "start")
    def start(ctx: Any, ev: Any) -> Step:
        return Step(actions=[Work(job, (ev.payload,), done="ok", failed="timeout")])

    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.add_tenant("t", limits=Limits(turn_deadline=1.0))
            rt.spawn(m, "quick", tenant="t")
            rt.spawn(m, "slow", tenant="t")
            rt.spawn(m, "free")
            rt.send_nowait("quick", "start", 0.5)
            rt.send_nowait("slow", "start", 100.0)
            rt.send_nowait("free", "start", 100.0)
            await trio.sleep(2)
            assert (rt.state("quick"), rt.state("slow"), rt.state("free")) == (
                "done", "late", "busy",
            )  # fmt: skip
            assert rt.tenant_statistics("t").overruns == 1

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_interrupt_waits_for_its_tenants_room_under_the_wait_policy(impl: str) -> None:
    """A tenant full under ``overflow="wait"`` delays the runtime's own ``interrupted`` (as
    it delays ``await rt.send``) instead of dead-lettering it; "reject" dead-letters it."""
    m = Machine("w", ["on"], "on", [], events=["x", "interrupted"], unhandled="ignore")
    log: list[str] = []
    for name in ("x", "interrupted"):
        m.handler("*", name)(lambda ctx, ev, name=name: log.append(name))

    async def forever() -> None:
        await trio.sleep_forever()

    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.add_tenant("t", limits=Limits(max_queued=1, overflow="wait"))
            rt.spawn(m, "a", tenant="t")
            rt.pause("a")
            rt.send_nowait("a", "x")
            rt.start_work("a", Work(forever))
            assert rt.interrupt("a") == 1
            await trio.sleep(1)
            assert rt.dead_letters() == []
            rt.resume("a")
            await rt.wait_until_idle()
            await trio.sleep(1)
            await rt.wait_until_idle()
            assert log == ["x", "interrupted"]
            rt.update_tenant("t", limits=Limits(max_queued=1, overflow="reject"))
            rt.pause("a")
            rt.send_nowait("a", "x")
            rt.interrupt("a")
            assert [d.event for d in rt.dead_letters()] == ["interrupted"]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_work_a_plugin_started_is_not_held_to_the_turn_deadline(impl: str) -> None:
    """``start_work`` (a plugin's I/O for an agent, e.g. an LLM stream) is not a turn: the
    tenant's turn deadline, which cancels handler-started work, leaves it alone."""
    m = Machine(
        "worker",
        ["idle", "done", "late"],
        "idle",
        [("idle", "ok", "done"), ("idle", "timeout", "late")],
    )

    async def job(seconds: float) -> str:
        await trio.sleep(seconds)
        return "ok"

    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.add_tenant("t", limits=Limits(turn_deadline=1.0))
            rt.spawn(m, "streaming", tenant="t")
            rt.start_work("streaming", Work(job, (5.0,), done="ok", failed="timeout"))
            await trio.sleep(6)
            assert rt.state("streaming") == "done"
            assert rt.tenant_statistics("t").overruns == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# -- the tenants themselves -----------------------------------------------------------------


def test_tenants_are_listed_changed_and_removed(impl: str) -> None:
    rt = Runtime(implementation=impl)
    m = ping()
    rt.add_tenant("a", weight=2, limits=Limits(max_agents=5))
    rt.add_tenant("b")
    assert [(t.name, t.weight) for t in rt.tenants()] == [("default", 1.0), ("a", 2.0), ("b", 1.0)]
    with pytest.raises(TenantExistsError):
        rt.add_tenant("a")
    rt.update_tenant("a", weight=0.5)
    assert rt.tenants()[1].limits.max_agents == 5
    assert rt.tenants()[1].weight == 0.5
    rt.spawn(m, "x", tenant="a")
    rt.send_nowait("x", "go")
    with pytest.raises(TenantBusyError):
        rt.remove_tenant("a")
    with pytest.raises(TenantBusyError):
        rt.remove_tenant("default")
    assert rt.remove_tenant("a", terminate=True) == 1
    assert "x" not in rt
    assert [d.reason for d in rt.dead_letters()] == [DeadLetterReason.TERMINATED]
    with pytest.raises(TenantNotFoundError):
        rt.spawn(m, "y", tenant="a")
    rt.add_tenant("a")  # the name is free again
    rt.spawn(m, "y", tenant="a")
    rt.run_until_idle()
    assert served(rt)["a"] == 0
    assert rt.tenant_of("y") == "a"


def test_removing_a_backlogged_tenant_then_adding_another(impl: str) -> None:
    rt = Runtime(implementation=impl)
    m = ping()
    rt.add_tenant("old")
    rt.add_tenant("keep")
    for k in range(10):
        rt.spawn(m, ("old", k), tenant="old")
        rt.spawn(m, ("keep", k), tenant="keep")
    flood(rt, [("old", k) for k in range(10)], 1000)
    flood(rt, [("keep", k) for k in range(10)], 1000)
    rt.run(100)
    rt.remove_tenant("old", terminate=True)  # its dead agents are still queued
    rt.add_tenant("new")
    rt.spawn(m, "n", tenant="new")
    rt.send_nowait("n", "go")
    rt.run_until_idle()
    stats = served(rt)
    assert stats["keep"] == 1000
    assert stats["new"] == 1
    assert "old" not in stats


def test_bad_tenant_arguments_are_typed_errors(impl: str) -> None:
    rt = Runtime(implementation=impl)
    for weight in (0, -1, math.nan, math.inf, True, "2", 2e6):
        with pytest.raises(engine.InvalidArgumentError):
            rt.add_tenant("t", weight=weight)
    for bad in (
        {"max_agents": -1},
        {"max_queued": 1.5},
        {"overflow": "drop"},
        {"rate": math.nan},
        {"rate": -1},
        {"per": "hour"},
        {"turn_deadline": math.inf},
        {"on_deadline": "ignore"},
        {"max_memory": 2**70},
        {"burst": True},
    ):
        with pytest.raises(engine.InvalidArgumentError):
            Limits(**bad)
    for name in ("", None, 5, "x" * 201):
        with pytest.raises(engine.InvalidArgumentError):
            rt.add_tenant(name)  # type: ignore[arg-type]
    with pytest.raises(engine.InvalidArgumentError):
        rt.add_tenant("t", limits={"max_agents": 1})  # type: ignore[arg-type]
    with pytest.raises(engine.InvalidArgumentError):
        rt.add_tenant("t", sizer=5)  # type: ignore[arg-type]
    with pytest.raises(TenantNotFoundError):
        rt.spawn(ping(), "a", tenant="nobody")
    with pytest.raises(TenantNotFoundError):
        rt.update_tenant(["unhashable"], weight=1)  # type: ignore[arg-type]
    assert [t.name for t in rt.tenants()] == ["default"]
    assert len(rt) == 0
    assert not rt._d.tenanted


def test_removing_a_tenant_from_a_handler_is_refused(impl: str) -> None:
    rt = Runtime(implementation=impl)
    rt.add_tenant("t")
    m = Machine("m", ["idle"], "idle", [("idle", "go", None)])
    seen: list[Any] = []

    @m.handler("idle", "go")
    def go(ctx: Any, ev: Any) -> None:
        try:
            rt.remove_tenant("t")
        except engine.RuntimeBusyError as exc:
            seen.append(exc)
        rt.update_tenant("t", weight=3)  # a change is fine: it counts from the next round

    rt.spawn(m, "a", tenant="t")
    rt.send_nowait("a", "go")
    rt.run_until_idle()
    assert len(seen) == 1
    assert rt.tenants()[1].weight == 3.0


def test_tenant_statistics_count_terminated_agents_and_failures(impl: str) -> None:
    rt = Runtime(implementation=impl, sample_every=1)
    m = Machine("m", ["idle"], "idle", [("idle", "go", None)])
    rt.add_tenant("t")
    rt.spawn(m, "a", tenant="t")
    rt.spawn(m, "b", tenant="t")
    for agent_id in "ab":
        rt.send_nowait(agent_id, "go")
    rt.run_until_idle()
    with pytest.raises(engine.UnknownEventError):
        rt.send_nowait("a", "nope")
    fragile = Machine("f", ["idle"], "idle", [("idle", "go", None)])

    @fragile.handler("idle", "go")
    def boom(ctx: Any, ev: Any) -> None:
        raise ValueError("boom")

    rt.spawn(fragile, "f", tenant="t")
    rt.send_nowait("f", "go")
    rt.run_until_idle()
    rt.terminate("a")
    stats = rt.tenant_statistics("t")
    assert (stats.processed, stats.failed, stats.agents) == (2, 1, 2)
    assert stats.step is not None
    assert stats.step.total == 3
    assert rt.tenant_statistics("default").processed == 0
    assert rt.statistics().tenants == tuple(rt.tenant_statistics())


# -- found by review: re-entrancy and hostile input ------------------------------------------


def test_max_queued_turned_on_in_the_middle_of_a_turn_counts_the_rest_of_it(impl: str) -> None:
    rt = Runtime(implementation=impl)
    rt.add_tenant("a")
    m = Machine("m", ["idle"], "idle", [("idle", "go", None)])
    calls: list[int] = []

    @m.handler("idle", "go")
    def go(ctx: Any, ev: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            rt.update_tenant("a", limits=Limits(max_queued=100))

    rt.spawn(m, "x", tenant="a")
    for _ in range(10):
        rt.send_nowait("x", "go")
    rt.run_until_idle()
    assert rt.tenant_statistics("a").queued == 0
    for _ in range(100):  # the whole limit is there again
        rt.send_nowait("x", "go")
    with pytest.raises(TenantLimitError):
        rt.send_nowait("x", "go")


def test_a_handler_raising_turn_deadline_error_itself_is_an_ordinary_failure(impl: str) -> None:
    for tenants in (False, True):
        rt = Runtime(implementation=impl)
        if tenants:
            rt.add_tenant("t", limits=Limits(turn_deadline=60.0, on_deadline="stop"))
        m = Machine("m", ["idle"], "idle", [("idle", "go", None)])

        @m.handler("idle", "go")
        def go(ctx: Any, ev: Any) -> None:
            raise TurnDeadlineError("x", 1.0, 0.5)  # not measured: its own error

        rt.spawn(m, "x", tenant="t" if tenants else None)
        rt.send_nowait("x", "go")
        rt.run_until_idle()
        assert rt.status("x") == AgentStatus.ERROR  # failed, not stopped


def test_a_clock_that_adds_tenants_while_one_is_set(impl: str) -> None:
    d = engine.hotpath.implementation(impl).Dispatcher()
    armed = [False]

    def clock() -> float:
        if armed[0]:
            armed[0] = False
            for i in range(2, 200):  # grows (and moves) the tenant table
                d.set_tenant(i, f"t{i}", quantum=64)
        return 5.0

    d.clock = clock
    d.set_tenant(0, "default", quantum=64)
    armed[0] = True
    d.set_tenant(1, "one", quantum=7, max_queued=3)
    table = d.tenant_table()
    assert len(table) == 200
    assert table[1]["quantum"] == 7


def test_a_clock_that_terminates_the_agent_being_sent_to(impl: str) -> None:
    d = engine.hotpath.implementation(impl).Dispatcher()
    m = ping()
    armed = [False]

    def clock() -> float:
        if armed[0]:
            armed[0] = False
            d.terminate("x")
        return 1.0

    d.clock = clock
    d.set_tenant(1, "a", quantum=64, rate=100.0, burst=100.0)
    d.spawn(m, "x", tenant=1)
    armed[0] = True
    with pytest.raises(engine.AgentStoppedError):
        d.send_nowait("x", "go")
    d.spawn(m, "y", tenant=1)
    d.send_nowait("y", "go")
    assert d.run() == 1
    assert not d.has_ready
    assert d.tenant_load(1) == (1, 0)


def test_a_release_does_not_let_the_sends_of_hooks_past_the_limits(impl: str) -> None:
    clock = Clock()
    rt = Runtime(implementation=impl, clock=clock)
    rt.add_tenant("slow", limits=Limits(rate=1, burst=1))
    rt.add_tenant("small", limits=Limits(max_queued=1))
    rt.spawn(ping(), "s", tenant="slow", capacity=1, policy=engine.OverflowPolicy.DROP_OLDEST)
    rt.spawn(ping(), "b", tenant="small")
    refused: list[str] = []

    class Reroute(engine.Instrument):
        def on_overflow(self, agent_id: Any, event: str, payload: Any, policy: str) -> None:
            for _ in range(3):  # a hook that reroutes dropped mail
                try:
                    rt.send_nowait("b", "go")
                except TenantLimitError:
                    refused.append("b")

    rt.add_instrument(Reroute())
    rt.send_nowait("s", "go")  # the bucket's token
    rt.send_nowait("s", "go")  # held back
    clock.now = 5.0
    rt.fire_timers()  # released into a full DROP_OLDEST mailbox: the hook runs meanwhile
    assert refused == ["b", "b"]
    assert rt.tenant_statistics("small").queued == 1


def test_what_a_handler_that_terminates_its_own_agent_did_stays_in_its_tenant(
    impl: str,
) -> None:
    rt = Runtime(implementation=impl)
    rt.add_tenant("a")
    m = Machine("m", ["idle"], "idle", [("idle", "go", None), ("idle", "bad", None)])

    @m.handler("idle", "go")
    def go(ctx: Any, ev: Any) -> None:
        rt.terminate(ctx.agent_id)

    @m.handler("idle", "bad")
    def bad(ctx: Any, ev: Any) -> None:
        rt.terminate(ctx.agent_id)
        raise ValueError("and then it fails")

    rt.spawn(m, "x", tenant="a")
    rt.spawn(m, "y", tenant="a")
    rt.send_nowait("x", "go")
    rt.send_nowait("y", "bad")
    rt.run_until_idle()
    stats = rt.tenant_statistics("a")
    assert (stats.processed, stats.failed) == (1, 1)
    assert (rt.statistics().processed, rt.statistics().failed) == (1, 1)


def test_the_default_tenant_keeps_what_terminated_agents_did_before_tenants(
    impl: str,
) -> None:
    rt = Runtime(implementation=impl)
    rt.spawn(ping(), "x")
    for _ in range(5):
        rt.send_nowait("x", "go")
    rt.run_until_idle()
    rt.terminate("x")
    rt.add_tenant("a")
    assert rt.tenant_statistics("default").processed == 5


def test_remove_tenant_counts_the_mail_its_rate_held_back(impl: str) -> None:
    rt = Runtime(implementation=impl, clock=Clock())
    rt.add_tenant("a", limits=Limits(rate=1, burst=1))
    rt.spawn(ping(), "x", tenant="a")
    for _ in range(4):
        rt.send_nowait("x", "go")  # one queued, three held
    assert rt.remove_tenant("a", terminate=True) == 4
    assert len(rt.dead_letters()) == 4


def test_direct_dispatcher_settings_are_checked_alike(impl: str) -> None:
    d = engine.hotpath.implementation(impl).Dispatcher()
    for bad in (
        {"quantum": 0},
        {"quantum": 64, "max_queued": -1},
        {"quantum": 64, "rate": math.nan},
        {"quantum": 64, "rate": -1.0},
        {"quantum": 64, "burst": math.inf},
        {"quantum": 64, "deadline_ns": -5},
        {"quantum": 64, "policy": 7},
    ):
        with pytest.raises(engine.InvalidArgumentError):
            d.set_tenant(1, "t", **bad)
    d.set_tenant(1, "t", quantum=64)
    d.drop_tenant(1)
    with pytest.raises(engine.InvalidArgumentError):
        d.spawn(ping(), "x", tenant=1)


def test_an_agent_with_mail_held_by_its_rate_is_never_hibernated(impl: str) -> None:
    clock = Clock()
    rt = Runtime(implementation=impl, clock=clock)
    rt.add_tenant("a", limits=Limits(rate=1.0, burst=1, max_agents=1))
    store.Hibernation(rt, store.MemoryStore())
    rt.spawn(ping(), "x", tenant="a")
    rt.send_nowait("x", "go")
    rt.send_nowait("x", "go")  # held back by the rate
    rt.run_until_idle()
    with pytest.raises(engine.AgentBusyError):
        rt.hibernate("x")
    with pytest.raises(TenantLimitError):
        rt.spawn(ping(), "y", tenant="a")  # no room can be made: x's mail is held
    clock.now = 5.0
    rt.fire_timers()
    rt.run_until_idle()
    assert rt.statistics("x").processed == 2
    assert rt.dead_letters() == []
    rt.spawn(ping(), "y", tenant="a")  # now x can make room
    assert rt.hibernated_ids() == ["x"]


def test_rollback_keeping_mail_does_not_pass_it_through_the_rate_again(impl: str) -> None:
    clock = Clock()
    rt = Runtime(implementation=impl, clock=clock)
    rt.add_tenant("a", limits=Limits(rate=1.0, burst=3))
    store.Hibernation(rt, store.MemoryStore())
    rt.spawn(ping(), "x", tenant="a")
    snap = rt.snapshot("x")
    rt.pause("x")
    for _ in range(3):
        rt.send_nowait("x", "go")  # the bucket's three tokens
    rt.rollback("x", snap, mail="keep")
    assert len(rt.queued("x")) == 3
    assert rt.tenant_statistics("a").delayed == 0


def test_await_send_under_the_log_returns_once_held_mail_is_released(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(
            implementation=impl, store=store.MemoryStore(), durability="log"
        ) as rt:
            rt.add_tenant("a", limits=Limits(rate=1.0, burst=1))
            rt.spawn(ping(), "x", tenant="a")
            start = trio.current_time()
            await rt.send("x", "go")
            assert trio.current_time() - start < 0.5  # the bucket's token: at once
            await rt.send("x", "go")  # held for a second: committed after that
            assert trio.current_time() - start == pytest.approx(1.0, abs=0.2)
            assert rt.tenant_statistics("a").delayed_now == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("gone", ["terminated", "paused"])
def test_a_tenant_whose_only_ready_agent_left_leaves_the_round(impl: str, gone: str) -> None:
    """The default tenant's one ready agent is terminated (or paused) before its turn: the run
    that pops it takes the tenant out of the round, so a tenant ready before it comes back is
    served first (hypothesis found both hot paths keeping it current)."""
    log: list[tuple[Any, Any]] = []
    m = Machine("rec", ["idle"], "idle", [("idle", "go", None)])

    @m.handler("idle", "go")
    def go(ctx: Any, ev: Any) -> None:
        log.append((ctx.agent_id, ev.payload))

    rt = Runtime(implementation=impl, budget=3)
    rt.spawn(m, 1)
    rt.add_tenant("c", weight=0.5)
    rt.spawn(m, 3, tenant="c")
    rt.send_nowait(1, "go", 1)
    if gone == "terminated":
        rt.terminate(1)
    else:
        rt.pause(1)
    rt.run(-1)
    rt.spawn(m, 0)
    rt.send_nowait(3, "go", 2)
    rt.send_nowait(0, "go", 3)
    rt.run(-1)
    assert log == [(3, 2), (0, 3)]
