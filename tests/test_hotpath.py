"""The dispatcher, on both implementations: mailboxes, scheduling, handlers, failures, limits."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import trio

import engine
from engine import (
    AgentStatus,
    DeadLetterReason,
    Machine,
    OverflowPolicy,
    Priority,
    Runtime,
    Step,
)
from engine import hotpath as _hotpath

MakeRuntime = Callable[..., Runtime]


def recorder(states: list[str], events: list[str]) -> tuple[Machine, list[tuple[Any, ...]]]:
    """A machine whose every slot has a handler that records (agent, state, event, payload)."""
    m = Machine("rec", states, states[0], [], events=events, unhandled="ignore")
    seen: list[tuple[Any, ...]] = []

    def record(ctx: Any, ev: Any) -> None:
        seen.append((ctx.agent_id, ctx.state, ev.name, ev.payload, ev.priority))

    for e in events:
        m.handler("*", e)(record)
    return m, seen


def test_compiled_module_is_live_unless_disabled() -> None:
    if _hotpath.NO_EXTENSIONS:
        assert not engine.USE_EXTENSIONS
    else:
        assert engine.USE_EXTENSIONS, "engine._native did not load: the build is broken"
        assert _hotpath.implementation().IMPLEMENTATION == "native"
        assert engine.Event is _hotpath.implementation("native").Event
        assert Runtime().implementation == "native"


def test_implementation_names(impl: str) -> None:
    assert Runtime(implementation=impl).implementation == impl
    with pytest.raises(ValueError, match="unknown hot-path"):
        _hotpath.implementation("fortran")


# -- ordering ------------------------------------------------------------------------------


def test_priority_lanes_then_fifo(make_runtime: MakeRuntime) -> None:
    m, seen = recorder(["s"], ["e"])
    rt = make_runtime()
    rt.spawn(m, "a")
    order = [0, 2, 1, 3, 0, 2, 3, 1, 1]
    for i, p in enumerate(order):
        rt.send_nowait("a", "e", i, p)
    assert [q[2] for q in rt.queued("a")] == [3, 6, 1, 5, 2, 7, 8, 0, 4]
    assert rt.status("a") is AgentStatus.PROCESSING
    assert rt.run_until_idle() == len(order)
    assert [s[3] for s in seen] == [3, 6, 1, 5, 2, 7, 8, 0, 4]
    assert [s[4] for s in seen] == sorted((Priority(p) for p in order), reverse=True)
    assert rt.status("a") is AgentStatus.IDLE


def test_ready_queue_round_robin_with_budget(make_runtime: MakeRuntime) -> None:
    m, seen = recorder(["s"], ["e"])
    rt = make_runtime(budget=4)
    for a in "abc":
        rt.spawn(m, a)
    for i in range(10):
        rt.send_nowait("a", "e", i)
    rt.send_nowait("b", "e", 0)
    rt.send_nowait("c", "e", 0, Priority.CRITICAL)
    rt.run_until_idle()
    assert [s[0] for s in seen] == list("aaaa" + "b" + "c" + "aaaa" + "aa")


def test_run_limit_and_reentrancy(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    rt.spawn(light, 1)
    for _ in range(5):
        rt.send_nowait(1, "tick")
    assert rt.run(2) == 2
    assert rt.state(1) == "yellow"
    assert rt.run(0) == 0
    assert len(rt.queued(1)) == 3

    @light.handler("*", "fault")
    def nested(ctx: Any, ev: Any) -> None:
        rt.run()

    rt.send_nowait(1, "fault")
    rt.run_until_idle()
    (dl,) = rt.take_dead_letters()
    assert isinstance(dl.error, engine.HandlerError)
    assert isinstance(dl.error.__cause__, engine.RuntimeBusyError)


# -- sending -------------------------------------------------------------------------------


def test_send_many_equals_send_loop(make_runtime: MakeRuntime, light: Machine) -> None:
    rng = np.random.default_rng(7)
    agents = rng.integers(0, 50, 2000)
    events = rng.integers(0, 2, 2000)
    prios = rng.integers(0, 4, 2000)
    outs_a: list[Any] = []
    outs_b: list[Any] = []
    a, b = make_runtime(on_output=outs_a.extend), make_runtime(on_output=outs_b.extend)
    for rt in (a, b):
        for i in range(50):
            rt.spawn(light, i)
    for i in range(2000):
        a.send_nowait(int(agents[i]), int(events[i]), None, int(prios[i]))
    b.send_many_slots(b.slots(agents.tolist()), events, prios)
    assert a.queued(3) == b.queued(3)
    assert a.run_until_idle() == b.run_until_idle() == 2000
    assert [a.state(i) for i in range(50)] == [b.state(i) for i in range(50)]
    assert outs_a == outs_b


def test_send_many_by_ids_and_names(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    for name in ("x", "y"):
        rt.spawn(light, name)
    rt.send_many(["x", "y", "x"], ["tick", "tick", "fault"], [1, 1, Priority.HIGH], ["p", "q", "r"])
    assert rt.queued("x") == [(Priority.HIGH, "fault", "r"), (Priority.NORMAL, "tick", "p")]
    rt.send_many(np.array(["y"]), np.array([0]))
    assert rt.queued("y") == [(Priority.NORMAL, "tick", "q"), (Priority.NORMAL, "tick", None)]


@pytest.mark.parametrize(
    ("slots", "events", "prios", "payloads", "error"),
    [
        ([0, 1, 99], [0, 0, 0], 1, None, engine.AgentNotFoundError),
        ([0, 1, -1], [0, 0, 0], 1, None, engine.AgentNotFoundError),
        ([0, 1, 2], [0, 0, 7], 1, None, engine.UnknownEventError),
        ([0, 1, 2], [0, 0, 0], [1, 1, 4], None, engine.InvalidArgumentError),
        ([0, 1, 2], [0, 0, 0], 1, ["only one"], engine.InvalidArgumentError),
        ([0, 1, 2], [0, 0], 1, None, engine.InvalidArgumentError),
        ([0.5, 1, 2], [0, 0, 0], 1, None, engine.InvalidArgumentError),
        ([0, 1, 2**40], [0, 0, 0], 1, None, engine.InvalidArgumentError),
        ([0, 1, 2], [0, 0, 0], [1, 1], None, engine.InvalidArgumentError),
    ],
)
def test_send_many_validates_everything_first(
    make_runtime: MakeRuntime,
    light: Machine,
    slots: Any,
    events: Any,
    prios: Any,
    payloads: Any,
    error: type[Exception],
) -> None:
    rt = make_runtime()
    for i in range(3):
        rt.spawn(light, i)
    rt.send_nowait(0, "tick")
    with pytest.raises(error):
        rt.send_many_slots(np.array(slots), np.array(events), prios, payloads)
    assert [len(rt.queued(i)) for i in range(3)] == [1, 0, 0]


def test_send_errors_are_typed_and_change_nothing(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    rt = make_runtime()
    ref = rt.spawn(light, "a")
    rt.send_nowait("a", "tick")
    cases: list[tuple[Callable[[], object], type[Exception]]] = [
        (lambda: rt.send_nowait("nobody", "tick"), engine.AgentNotFoundError),
        (lambda: rt.send_nowait(["unhashable"], "tick"), engine.AgentNotFoundError),
        (lambda: rt.send_nowait("a", "honk"), engine.UnknownEventError),
        (lambda: rt.send_nowait("a", 2), engine.UnknownEventError),
        (lambda: rt.send_nowait("a", -1), engine.UnknownEventError),
        (lambda: rt.send_nowait("a", 2**70), engine.UnknownEventError),
        (lambda: rt.send_nowait("a", 1.0), engine.UnknownEventError),  # type: ignore[arg-type]
        (lambda: rt.send_nowait("a", "tick", None, 4), engine.InvalidArgumentError),
        (lambda: rt.send_nowait("a", "tick", None, -1), engine.InvalidArgumentError),
        (lambda: rt.send_nowait("a", "tick", None, "HIGH"), engine.InvalidArgumentError),  # type: ignore[arg-type]
        (lambda: ref.send_nowait("honk"), engine.UnknownEventError),
        (lambda: ref.send_nowait("tick", None, 9), engine.InvalidArgumentError),
        (lambda: rt.spawn(light, "a"), engine.AgentExistsError),
        (lambda: rt.spawn(light, ["x"]), engine.InvalidArgumentError),
        (lambda: rt.spawn(light, "b", capacity=-1), engine.InvalidArgumentError),
        (lambda: rt.spawn(light, "b", policy=7), engine.InvalidArgumentError),  # type: ignore[arg-type]
        (lambda: rt.spawn(light, "b", state="blue"), engine.UnknownStateError),
        (lambda: rt.state("nobody"), engine.AgentNotFoundError),
        (lambda: rt.terminate("nobody"), engine.AgentNotFoundError),
    ]
    for call, error in cases:
        with pytest.raises(error):
            call()
        assert issubclass(error, engine.EngineError)
    assert rt.queued("a") == [(Priority.NORMAL, "tick", None)]
    assert rt.state("a") == "red"
    assert len(rt) == 1
    assert "b" not in rt


def test_numpy_integers_are_event_codes_and_priorities(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    rt = make_runtime()
    ref = rt.spawn(light, 0)
    ref.send_nowait(np.int32(1), None, np.int64(2))
    rt.send_nowait(0, np.uint8(0), "p", np.int16(3))
    assert rt.queued(0) == [(Priority.CRITICAL, "tick", "p"), (Priority.HIGH, "fault", None)]
    with pytest.raises(engine.UnknownEventError):
        ref.send_nowait(np.int64(2**40))
    with pytest.raises(engine.InvalidArgumentError):
        ref.send_nowait("tick", None, np.int8(-1))
    with pytest.raises(engine.InvalidArgumentError):
        ref.send_nowait("tick", None, np.float64(1.0))


def test_int_event_codes_and_equal_ids(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    rt.spawn(light, 1)
    rt.spawn(light, "1")
    with pytest.raises(engine.AgentExistsError):
        rt.spawn(light, 1.0)  # equal to 1, as in a dict
    rt.send_nowait(1, light.event_code("tick"))
    rt.send_nowait(1.0, 1)  # the agent 1 (1.0 == 1, as a dict key); event code 1 ("fault")
    with pytest.raises(engine.UnknownEventError):
        rt.send_nowait(1, True)  # a bool is not an event code (nor a priority)
    with pytest.raises(engine.InvalidArgumentError):
        rt.send_nowait(1, "tick", None, True)
    rt.run_until_idle()
    assert rt.state(1) == "red"
    assert rt.state("1") == "red"
    assert rt.statistics(1).processed == 2


# -- bounded mailboxes ---------------------------------------------------------------------


def test_reject_policy(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    ref = rt.spawn(light, "a", capacity=2)
    rt.send_nowait("a", "tick", 1)
    ref.send_nowait("tick", 2)
    with pytest.raises(engine.MailboxFullError) as info:
        rt.send_nowait("a", "fault", 3, Priority.CRITICAL)
    assert isinstance(info.value, trio.WouldBlock)
    assert info.value.capacity == 2
    with pytest.raises(trio.WouldBlock):
        ref.send_nowait("tick")
    with pytest.raises(engine.MailboxFullError):
        rt.send_many(["a"], ["tick"])
    assert [q[2] for q in rt.queued("a")] == [1, 2]
    rt.run_until_idle()
    rt.send_many(["a", "a"], ["tick", "tick"])  # exactly fits
    with pytest.raises(engine.MailboxFullError):
        rt.send_many(["a"], ["tick"])
    assert rt.dead_letters() == []


def test_send_many_reject_is_atomic_across_agents(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    rt = make_runtime()
    rt.spawn(light, "free")
    rt.spawn(light, "tight", capacity=1)
    with pytest.raises(engine.MailboxFullError):
        rt.send_many(["free", "tight", "free", "tight"], ["tick"] * 4)
    assert rt.queued("free") == []
    assert rt.queued("tight") == []


def test_drop_oldest_policy(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    rt.spawn(light, "a", capacity=3, policy=OverflowPolicy.DROP_OLDEST)
    rt.send_nowait("a", "tick", "low1", Priority.LOW)
    rt.send_nowait("a", "tick", "high1", Priority.HIGH)
    rt.send_nowait("a", "tick", "low2", Priority.LOW)
    rt.send_nowait("a", "tick", "norm1", Priority.NORMAL)  # evicts low1 (lowest lane, oldest)
    assert [q[2] for q in rt.queued("a")] == ["high1", "norm1", "low2"]
    rt.send_nowait("a", "tick", "crit", Priority.CRITICAL)  # evicts low2
    rt.send_nowait("a", "tick", "low3", Priority.LOW)  # everything queued outranks it: dropped
    assert [q[2] for q in rt.queued("a")] == ["crit", "high1", "norm1"]
    rt.send_nowait("a", "tick", "high2", Priority.HIGH)  # evicts norm1
    assert [q[2] for q in rt.queued("a")] == ["crit", "high1", "high2"]
    dead = rt.take_dead_letters()
    assert [(d.payload, d.reason, d.priority) for d in dead] == [
        ("low1", DeadLetterReason.DROPPED, Priority.LOW),
        ("low2", DeadLetterReason.DROPPED, Priority.LOW),
        ("low3", DeadLetterReason.DROPPED, Priority.LOW),
        ("norm1", DeadLetterReason.DROPPED, Priority.NORMAL),
    ]
    assert rt.statistics("a").dropped == 4
    assert rt.statistics().dropped == 4
    assert rt.run_until_idle() == 3


def test_drop_oldest_in_send_many(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    rt.spawn(light, "a", capacity=2, policy=OverflowPolicy.DROP_OLDEST)
    rt.send_many(["a"] * 5, ["tick"] * 5, 1, list(range(5)))
    assert [q[2] for q in rt.queued("a")] == [3, 4]
    assert [d.payload for d in rt.dead_letters()] == [0, 1, 2]


# -- handlers ------------------------------------------------------------------------------


def test_handler_context_and_step(make_runtime: MakeRuntime) -> None:
    m = Machine(
        "m",
        ["a", "b", "c"],
        "a",
        [("a", "go", "b", "row-out"), ("b", "go", "c", "b-out")],
        events=["go", "jump", "quiet"],
    )
    calls: list[Any] = []

    @m.handler("a", "go")
    def keep_row(ctx: Any, ev: Any) -> None:
        calls.append((ctx.agent_id, ctx.state, ctx.data, ctx.machine.name, ev.name, ev.payload))
        ctx.data = "changed"

    @m.handler("*", "jump")
    def jump(ctx: Any, ev: Any) -> Step:
        return Step(ev.payload, ["j1", "j2"])

    @m.handler("*", "quiet")
    def quiet(ctx: Any, ev: Any) -> Step:
        return Step(outputs=())

    @m.handler("b", "go")
    def override_state_only(ctx: Any, ev: Any) -> Step:
        return Step("a")

    outs: list[Any] = []
    rt = make_runtime(on_output=outs.extend)
    ref = rt.spawn(m, "x", data={"n": 1})
    ref.send_nowait("go", 5)
    rt.run_until_idle()
    assert calls == [("x", "a", {"n": 1}, "m", "go", 5)]
    assert (rt.state("x"), ref.data, rt.data("x")) == ("b", "changed", "changed")
    ref.send_nowait("go")  # state overridden to a, row output kept
    ref.send_nowait("jump", "c")
    ref.send_nowait("quiet")  # handler slot without a row: stays, emits nothing
    rt.run_until_idle()
    assert rt.state("x") == "c"
    assert outs == [("x", "row-out"), ("x", "b-out"), ("x", "j1"), ("x", "j2")]
    ref.data = 3
    assert rt.data("x") == 3


def test_handler_failures_are_dead_letters(make_runtime: MakeRuntime) -> None:
    m = Machine("m", ["a", "b"], "a", [("a", "go", "b"), ("b", "go", "a")], events=["go", "bad"])

    @m.handler("*", "bad")
    def bad(ctx: Any, ev: Any) -> Any:
        if ev.payload == "raise":
            raise ValueError("boom")
        if ev.payload == "type":
            return "b"
        return Step("nowhere")

    rt = make_runtime()
    rt.spawn(m, 1)
    rt.spawn(m, 2)
    for payload in ("raise", "type", "state"):
        rt.send_nowait(1, "bad", payload, Priority.HIGH)
    rt.send_nowait(1, "go")
    rt.send_nowait(2, "go")
    rt.run(3)  # the three bad messages, all failing; agent 1 is left in ERROR, state unchanged
    assert rt.status(1) is AgentStatus.ERROR
    assert rt.state(1) == "a"
    dead = rt.dead_letters()
    assert [d.reason for d in dead] == [DeadLetterReason.HANDLER_FAILED] * 3
    assert all(isinstance(d.error, engine.HandlerError) for d in dead)
    causes = [type(d.error.__cause__) for d in dead if d.error is not None]
    assert causes == [ValueError, TypeError, engine.UnknownStateError]
    assert [(d.agent_id, d.event, d.payload, d.state) for d in dead] == [
        (1, "bad", "raise", "a"),
        (1, "bad", "type", "a"),
        (1, "bad", "state", "a"),
    ]
    rt.run_until_idle()  # other agents go on; a success clears ERROR
    assert (rt.state(1), rt.state(2)) == ("b", "b")
    assert rt.status(1) is AgentStatus.IDLE
    st = rt.statistics(1)
    assert (st.processed, st.failed) == (1, 3)
    assert rt.statistics().failed == 3


def test_invalid_transition_in_dispatch(make_runtime: MakeRuntime) -> None:
    strict = Machine("strict", ["a", "b"], "a", [("a", "go", "b")])
    lax = Machine("lax", ["a", "b"], "a", [("a", "go", "b")], unhandled="ignore")
    rt = make_runtime()
    rt.spawn(strict, "s")
    rt.spawn(lax, "l")
    for agent in ("s", "l"):
        rt.send_nowait(agent, "go")
        rt.send_nowait(agent, "go", "second")
    rt.run_until_idle()
    (dl,) = rt.dead_letters()
    assert dl.reason is DeadLetterReason.INVALID_TRANSITION
    assert isinstance(dl.error, engine.InvalidTransitionError)
    assert (dl.agent_id, dl.payload, dl.state) == ("s", "second", "b")
    assert rt.status("s") is AgentStatus.ERROR
    assert rt.status("l") is AgentStatus.IDLE
    assert (rt.statistics("l").processed, rt.statistics("l").failed) == (2, 0)
    assert (rt.statistics("s").processed, rt.statistics("s").failed) == (1, 1)


def test_base_exception_is_recorded_then_propagates(make_runtime: MakeRuntime) -> None:
    m = Machine("m", ["a"], "a", [("a", "go", "a", "out")], events=["go", "stop"])

    @m.handler("a", "stop")
    def stop(ctx: Any, ev: Any) -> None:
        raise KeyboardInterrupt

    outs: list[Any] = []
    rt = make_runtime(on_output=outs.extend)
    rt.spawn(m, "x")
    rt.send_nowait("x", "go")
    rt.send_nowait("x", "stop")
    rt.send_nowait("x", "go")
    with pytest.raises(KeyboardInterrupt):
        rt.run_until_idle()
    (dl,) = rt.dead_letters()
    assert isinstance(dl.error, KeyboardInterrupt)
    assert rt.queued("x") == [(Priority.NORMAL, "go", None)]  # nothing else lost
    assert rt.run_until_idle() == 1
    assert outs == [("x", "out"), ("x", "out")]


def test_handlers_may_send_spawn_and_terminate(make_runtime: MakeRuntime) -> None:
    m = Machine(
        "m", ["idle"], "idle", [], events=["fork", "ping", "kill", "suicide"], unhandled="ignore"
    )
    rt = make_runtime()
    log: list[Any] = []

    @m.handler("*", "fork")
    def fork(ctx: Any, ev: Any) -> None:
        rt.spawn(m, ev.payload)
        rt.send_nowait(ev.payload, "ping", ctx.agent_id)

    @m.handler("*", "ping")
    def ping(ctx: Any, ev: Any) -> None:
        log.append((ctx.agent_id, ev.payload))

    @m.handler("*", "kill")
    def kill(ctx: Any, ev: Any) -> None:
        rt.terminate(ev.payload)

    @m.handler("*", "suicide")
    def suicide(ctx: Any, ev: Any) -> None:
        me = ctx.agent_id
        rt.terminate(me)
        with pytest.raises(engine.AgentStoppedError):
            ctx.state  # noqa: B018 - the context is stale now
        log.append(("suicide", me))

    rt.spawn(m, "root")
    rt.spawn(m, "victim")
    rt.send_nowait("root", "fork", "child")
    rt.send_nowait("victim", "ping", "never", Priority.LOW)
    rt.send_nowait("root", "kill", "victim")
    rt.send_nowait("root", "suicide")
    rt.send_nowait("root", "ping", "after death")
    rt.run_until_idle()
    assert log == [("suicide", "root"), ("child", "root")]
    assert sorted(rt.agent_ids()) == ["child"]
    dead = {(d.agent_id, d.payload, d.reason) for d in rt.dead_letters()}
    assert dead == {
        ("victim", "never", DeadLetterReason.TERMINATED),
        ("root", "after death", DeadLetterReason.TERMINATED),
    }
    # slots are reused after the ready queue let go of them
    rt.spawn(m, "again")
    rt.send_nowait("again", "ping", 1)
    rt.run_until_idle()
    assert log[-1] == ("again", 1)


# -- lifecycle -----------------------------------------------------------------------------


def test_terminate_dead_letters_in_order_and_stale_refs(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    rt = make_runtime()
    ref = rt.spawn(light, "a", data="d")
    old_slot = ref.slot
    for i, p in enumerate([0, 3, 1, 3]):
        rt.send_nowait("a", "tick", i, p)
    assert rt.terminate("a") == 4
    assert [d.payload for d in rt.dead_letters()] == [1, 3, 2, 0]
    assert all(d.reason is DeadLetterReason.TERMINATED for d in rt.dead_letters())
    assert not ref.alive
    assert ref.status is AgentStatus.STOPPED
    for attempt in (
        lambda: ref.send_nowait("tick"),
        lambda: ref.state,
        lambda: ref.id,
        lambda: ref.data,
        lambda: ref.slot,
    ):
        with pytest.raises(engine.AgentStoppedError):
            attempt()
    assert "terminated" in repr(ref)
    assert rt.run_until_idle() == 0  # the stale ready entry is released, nothing runs
    new = rt.spawn(light, "a")  # the id is free again; the slot is reused
    assert new.slot == old_slot
    assert new != ref
    assert not ref.alive
    new.send_nowait("tick")
    assert rt.run_until_idle() == 1
    assert rt.state("a") == "green"
    assert rt.statistics().processed == 1


def test_refs(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    ref = rt.spawn(light, "a")
    again = rt.ref("a")
    assert ref == again
    assert hash(ref) == hash(again)
    assert ref != rt.spawn(light, "b")
    assert ref != "a"
    assert (ref.id, ref.state, ref.status, ref.alive) == ("a", "red", AgentStatus.IDLE, True)
    assert "'a'" in repr(ref)


def test_many_agents_and_id_table_growth(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    n = 20_000
    for i in range(n):
        rt.spawn(light, i if i % 2 else f"agent-{i}")
    for i in range(0, n, 3):
        rt.terminate(i if i % 2 else f"agent-{i}")
    alive = [i if i % 2 else f"agent-{i}" for i in range(n) if i % 3]
    assert len(rt) == len(alive)
    assert sorted(map(str, rt.agent_ids())) == sorted(map(str, alive))
    for i in range(n, n + 5000):  # reuse freed slots, insert over deleted cells
        rt.spawn(light, i)
    rt.send_many(alive, ["tick"] * len(alive))
    assert rt.run_until_idle() == len(alive)
    assert all(rt.state(a) == "green" for a in alive)
    assert 0 not in rt
    assert [] not in rt


def test_output_batches(impl: str, light: Machine) -> None:
    batches: list[engine.OutputBatch] = []
    d = _hotpath.implementation(impl).Dispatcher(sink=batches.append, output_buffer=5)
    for i in range(10):
        d.spawn(light, i)
        d.send_nowait(i, "tick")
        d.send_nowait(i, "tick")
    assert d.run() == 20
    assert len(batches) > 1  # flushed between turns once 5 were buffered
    pairs = [p for b in batches for p in b]
    assert pairs == [(i, o) for i in range(10) for o in ("go", "slow")]
    b = batches[0]
    assert len(b) == len(b.agent_ids) == len(b.slots) == len(b.codes)
    assert b.codes.dtype == np.int32
    assert [b.values[c] for c in b.codes] == b.outputs()
    silent = _hotpath.implementation(impl).Dispatcher()  # no sink: nothing collected
    silent.spawn(light, 0)
    silent.send_nowait(0, "tick")
    assert silent.run() == 1


def test_sink_error_propagates_and_runtime_stays_consistent(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    got: list[Any] = []

    def sink(batch: engine.OutputBatch) -> None:
        if not got:
            got.append("failed once")
            raise RuntimeError("effector down")
        got.extend(batch)

    rt = make_runtime(on_output=sink)
    rt.spawn(light, 0)
    rt.send_nowait(0, "tick")
    with pytest.raises(RuntimeError, match="effector down"):
        rt.run_until_idle()
    rt.send_nowait(0, "tick")
    assert rt.run_until_idle() == 1
    assert got == ["failed once", (0, "slow")]
    assert rt.state(0) == "yellow"


def test_counters_are_numpy(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    refs = [rt.spawn(light, i) for i in range(4)]
    for k, ref in enumerate(refs):
        for _ in range(k):
            ref.send_nowait("tick")
    rt.run_until_idle()
    assert rt.processed.dtype == np.int64
    assert [int(rt.processed[r.slot]) for r in refs] == [0, 1, 2, 3]
    assert rt.failed.sum() == 0
    assert rt.statistics() == engine.RuntimeStatistics(4, 0, 6, 0, 0, 0, rt.implementation)


# -- references and memory -----------------------------------------------------------------


class Payload:
    pass


def test_payload_references_are_released(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime(on_output=lambda batch: None)
    rt.spawn(light, "run")
    rt.spawn(light, "term")
    rt.spawn(light, "drop", capacity=1, policy=OverflowPolicy.DROP_OLDEST)
    rt.spawn(light, "kept")
    payloads = [Payload() for _ in range(8)]
    refs = [weakref.ref(p) for p in payloads]
    base = sys.getrefcount(payloads[0])
    for agent, p in zip(
        ["run", "run", "term", "term", "drop", "drop", "kept", "kept"], payloads, strict=True
    ):
        rt.send_nowait(agent, "tick", p)
    queued = sys.getrefcount(payloads[0])  # outside the assert: rewriting adds references
    assert queued == base + 1
    assert rt.run(2) == 2  # "run" drains its two
    rt.terminate("term")
    rt.take_dead_letters()  # the terminated two and the one "drop" evicted
    del payloads, agent, p
    gc.collect()
    alive = [r() is not None for r in refs]
    assert alive == [False] * 5 + [True] * 3  # released unless still queued
    del rt
    gc.collect()
    assert [r() for r in refs] == [None] * 8  # the dispatcher released queued payloads


def test_cycle_with_queued_mail_is_collected_safely(impl: str) -> None:
    """A runtime in a reference cycle, collected by the GC with payloads still queued.

    Runs in a subprocess: the failure this guards against (the GC clearing the array that
    holds the agent records before the dispatcher's deallocator reads it) is a crash.
    """
    code = f"""
import gc, weakref, engine
from engine import hotpath as _hotpath
m = engine.Machine("m", ["a"], "a", [("a", "go", "a", "out")])
class P: pass
p = P()
probe = weakref.ref(p)
gc.disable()
for _ in range(50):
    d = _hotpath.implementation({impl!r}).Dispatcher()
    for i in range(200):
        d.spawn(m, i, data=d)  # agent data points back at the dispatcher: a cycle
        d.send_nowait(i, "go", p)
del d, p
gc.collect()
assert probe() is None, "queued payloads were not released"
print("ok")
"""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
