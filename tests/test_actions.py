"""Handler actions, pause/resume and supervision, on both hot paths, driven synchronously with
a manual clock (the trio-driven behaviour is in test_trio_runtime.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import engine
from engine import (
    AgentStatus,
    CancelTimer,
    DeadLetterReason,
    EventTimeout,
    Machine,
    NextEvent,
    Postpone,
    Priority,
    Runtime,
    Send,
    StateTimeout,
    Step,
    Supervision,
    Timer,
)
from engine import hotpath as _hotpath


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


MakeRuntime = Callable[..., Runtime]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(impl: str, clock: Clock) -> MakeRuntime:
    def make(**kwargs: Any) -> Runtime:
        return Runtime(implementation=impl, clock=clock, **kwargs)

    return make


def advance(rt: Runtime, clock: Clock, seconds: float) -> None:
    """Move the clock, deliver due timers and drain, as the trio host would."""
    clock.now += seconds
    rt.fire_timers()
    rt.run_until_idle()


def door() -> tuple[Machine, list[Any]]:
    """A door that postpones ``enter`` while locked."""
    log: list[Any] = []
    m = Machine(
        "door",
        ["locked", "open"],
        "locked",
        [("locked", "unlock", "open"), ("open", "lock", "locked")],
        events=["unlock", "lock", "enter", "note"],
        unhandled="ignore",
    )

    @m.handler("locked", "enter")
    def wait(ctx: Any, ev: Any) -> Step:
        log.append(("postponed", ev.payload))
        return Step(actions=[Postpone()])

    @m.handler("open", "enter")
    def come_in(ctx: Any, ev: Any) -> None:
        log.append(("entered", ev.payload))

    @m.handler("*", "note")
    def note(ctx: Any, ev: Any) -> None:
        log.append(("note", ev.payload))

    return m, log


def test_postponed_events_replay_in_order_after_a_state_change(make: MakeRuntime) -> None:
    m, log = door()
    rt = make()
    rt.spawn(m, "d")
    for i in range(3):
        rt.send_nowait("d", "enter", i)
    rt.run_until_idle()
    assert [p[2] for p in rt.postponed("d")] == [0, 1, 2]
    assert rt.statistics("d").processed == 3
    rt.send_nowait("d", "note", "before")  # no state change: postponed stay postponed
    rt.run_until_idle()
    assert len(rt.postponed("d")) == 3
    rt.send_nowait("d", "unlock")
    rt.send_nowait("d", "note", "after", Priority.LOW)
    rt.send_nowait("d", "enter", 3, Priority.CRITICAL)
    rt.run_until_idle()
    # CRITICAL enter is postponed (locked), then unlock replays all four before the LOW note
    assert log[3:] == [
        ("note", "before"),
        ("postponed", 3),
        ("entered", 0),
        ("entered", 1),
        ("entered", 2),
        ("entered", 3),
        ("note", "after"),
    ]
    assert rt.postponed("d") == []


def test_postpone_with_a_state_change_retries_at_once(make: MakeRuntime) -> None:
    m = Machine("m", ["a", "b"], "a", [], events=["go"], unhandled="ignore")
    seen: list[str] = []

    @m.handler("a", "go")
    def go(ctx: Any, ev: Any) -> Step:
        seen.append("a")
        return Step("b", actions=[Postpone()])

    @m.handler("b", "go")
    def again(ctx: Any, ev: Any) -> None:
        seen.append("b")

    rt = make()
    rt.spawn(m, 1)
    rt.send_nowait(1, "go")
    assert rt.run_until_idle() == 2
    assert seen == ["a", "b"]


def test_next_event_order(make: MakeRuntime) -> None:
    m = Machine("m", ["a", "b"], "a", [], events=["start", "x", "y", "p", "q"], unhandled="ignore")
    seen: list[Any] = []

    @m.handler("a", "p")
    def park(ctx: Any, ev: Any) -> Step:
        return Step(actions=[Postpone()])

    @m.handler("a", "start")
    def start(ctx: Any, ev: Any) -> Step:
        return Step("b", actions=[NextEvent("x", 1), NextEvent("y", 2)])

    @m.handler("b", "x")
    def x(ctx: Any, ev: Any) -> Step:
        seen.append(("x", ev.payload))
        return Step(actions=[NextEvent("q", "from-x")])

    for name in ("y", "p", "q"):
        m.handler("b", name)(lambda ctx, ev: seen.append((ev.name, ev.payload)))

    rt = make()
    rt.spawn(m, 1)
    rt.send_nowait(1, "p", "parked")
    rt.run_until_idle()
    rt.send_nowait(1, "start")
    rt.run_until_idle()
    rt.send_nowait(1, "q", "late")
    rt.run_until_idle()
    # start's NextEvents first (x, y), then the replayed postponed p; x's own NextEvent q is
    # inserted at the very front, before y
    assert seen == [("x", 1), ("q", "from-x"), ("y", 2), ("p", "parked"), ("q", "late")]


def test_timers_on_a_manual_clock(make: MakeRuntime, clock: Clock) -> None:
    m = Machine(
        "t",
        ["idle", "busy"],
        "idle",
        [("idle", "work", "busy"), ("busy", "done", "idle")],
        events=["work", "done", "arm", "disarm", "poke", "tick", "tock", "ring"],
        unhandled="ignore",
    )
    fired: list[Any] = []

    @m.handler("idle", "work")
    def work(ctx: Any, ev: Any) -> Step:
        return Step(actions=[StateTimeout(5.0, "done", "state-timeout")])

    @m.handler("*", "arm")
    def arm(ctx: Any, ev: Any) -> Step:
        name, seconds = ev.payload
        return Step(actions=[Timer(name, seconds, "ring", name)])

    @m.handler("*", "disarm")
    def disarm(ctx: Any, ev: Any) -> Step:
        return Step(actions=[CancelTimer(ev.payload)])

    @m.handler("*", "poke")
    def poke(ctx: Any, ev: Any) -> Step:
        return Step(actions=[EventTimeout(2.0, "tick", "event-timeout")])

    for name in ("ring", "tick", "done"):

        def record(ctx: Any, ev: Any, name: str = name) -> None:
            fired.append((clock.now, ctx.state, ev.name, ev.payload))

        m.handler("*", name)(record)
    # "done" is also a row: the handler's None keeps it (busy -> idle)

    rt = make()
    rt.spawn(m, "a")
    rt.send_nowait("a", "work")
    rt.run_until_idle()
    assert rt.timers("a") == [("state_timeout",)]
    assert rt.next_deadline() == 5.0
    advance(rt, clock, 4.0)
    assert fired == []
    advance(rt, clock, 1.0)
    assert fired == [(5.0, "busy", "done", "state-timeout")]
    assert rt.state("a") == "idle"

    # a state timeout dies with a state change
    rt.send_nowait("a", "work")
    rt.run_until_idle()
    rt.send_nowait("a", "done", "by hand")
    rt.run_until_idle()
    advance(rt, clock, 10.0)
    assert fired[-1] == (5.0, "busy", "done", "by hand")

    # event timeouts die with any event; named timers survive, can be replaced and cancelled
    rt.send_nowait("a", "poke")
    rt.send_nowait("a", "arm", ("t1", 3.0))
    rt.run_until_idle()  # the "arm" event cancels the event timeout armed by "poke"
    rt.send_nowait("a", "arm", ("t2", 1.0))
    rt.send_nowait("a", "arm", ("t3", 1.0))
    rt.send_nowait("a", "disarm", "t3")
    rt.send_nowait("a", "arm", ("t1", 4.0))  # replaces t1
    rt.send_nowait("a", "poke")
    rt.run_until_idle()
    assert sorted(rt.timers("a")) == [("event_timeout",), ("timer", "t1"), ("timer", "t2")]
    t0 = clock.now
    advance(rt, clock, 1.0)  # t2 fires: its event cancels the event timeout
    advance(rt, clock, 5.0)
    assert [f[2:] for f in fired[-2:]] == [("ring", "t2"), ("ring", "t1")]
    assert [f[0] - t0 for f in fired[-2:]] == [1.0, 6.0]  # t1 fired at the first check past 4
    assert rt.timers("a") == []
    rt.send_nowait("a", "poke")
    rt.run_until_idle()
    advance(rt, clock, 2.0)  # nothing else happened: the event timeout fires
    assert fired[-1][2:] == ("tick", "event-timeout")


def test_absolute_timer_and_timers_die_with_the_agent(make: MakeRuntime, clock: Clock) -> None:
    m = Machine("m", ["s"], "s", [], events=["arm", "ring"], unhandled="ignore")
    rings: list[float] = []
    m.handler("s", "arm")(
        lambda ctx, ev: Step(actions=[Timer("x", ev.payload, "ring", absolute=True)])
    )
    m.handler("s", "ring")(lambda ctx, ev: rings.append(clock.now))
    rt = make()
    rt.spawn(m, 1)
    rt.spawn(m, 2)
    rt.send_nowait(1, "arm", 7.5)
    rt.send_nowait(2, "arm", 7.5)
    rt.run_until_idle()
    rt.terminate(2)
    assert rt.statistics().timers == 1
    advance(rt, clock, 7.5)
    assert rings == [7.5]


def test_send_action_delivers_in_the_same_run(make: MakeRuntime) -> None:
    m = Machine("pp", ["s"], "s", [], events=["ping"], unhandled="ignore")
    hops: list[Any] = []

    @m.handler("s", "ping")
    def ping(ctx: Any, ev: Any) -> Step | None:
        hops.append((ctx.agent_id, ev.payload))
        if ev.payload == 0:
            return None
        other = "b" if ctx.agent_id == "a" else "a"
        return Step(
            actions=[
                Send(other, "ping", ev.payload - 1),
                Send("nobody", "ping", -1),
                Send(other, "nope"),
            ]
        )

    rt = make()
    rt.spawn(m, "a")
    rt.spawn(m, "b")
    rt.send_nowait("a", "ping", 4)
    assert rt.run() == 5  # one run: every hop delivered inside the drain loop
    assert hops == [("a", 4), ("b", 3), ("a", 2), ("b", 1), ("a", 0)]
    dead = rt.dead_letters()
    assert len(dead) == 8
    assert {d.reason for d in dead} == {DeadLetterReason.UNDELIVERABLE}
    assert {type(d.error) for d in dead} == {engine.AgentNotFoundError, engine.UnknownEventError}


def test_route_sends_takes_sends_for_agents_elsewhere(make: MakeRuntime) -> None:
    """``route_sends``: Send actions to ids not here go to the router (a sharded host's
    outbox); what it declines is dead-lettered; ``every=True`` offers it local ones too."""
    m = Machine("fan", ["s"], "s", [], events=["go", "hit"], unhandled="ignore")
    got: list[Any] = []

    @m.handler("s", "go")
    def go(ctx: Any, ev: Any) -> Step:
        return Step(actions=[Send(t, "hit", i) for i, t in enumerate(ev.payload)])

    @m.handler("s", "hit")
    def hit(ctx: Any, ev: Any) -> None:
        got.append((ctx.agent_id, ev.payload))

    routed: list[tuple[Any, str, Any, int]] = []

    def router(send: Send) -> bool:
        if send.agent_id == "refused":
            return False
        if send.agent_id == "bad":
            raise engine.InvalidArgumentError("no route")
        routed.append((send.agent_id, send.event, send.payload, int(send.priority)))
        return True

    rt = make()
    rt.spawn(m, "a")
    rt.spawn(m, "b")
    rt.route_sends(router)
    rt.send_nowait("a", "go", ["b", "far", "refused", "bad", "far"])
    rt.run_until_idle()
    assert got == [("b", 0)]
    assert routed == [("far", "hit", 1, 1), ("far", "hit", 4, 1)]
    dead = rt.dead_letters()
    assert [(d.agent_id, type(d.error)) for d in dead] == [
        ("refused", engine.AgentNotFoundError),
        ("bad", engine.InvalidArgumentError),
    ]
    routed.clear()
    rt.route_sends(router, every=True)
    rt.send_nowait("a", "go", ["b", "far"])
    rt.run_until_idle()
    assert got == [("b", 0)]
    assert routed == [("b", "hit", 0, 1), ("far", "hit", 1, 1)]
    rt.route_sends(None)
    rt.send_nowait("a", "go", ["b", "far"])
    rt.run_until_idle()
    assert got == [("b", 0), ("b", 0)]
    assert len(routed) == 2
    with pytest.raises(engine.InvalidArgumentError):
        rt.route_sends(None, every=True)
    with pytest.raises(engine.InvalidArgumentError):
        rt.route_sends(42)  # type: ignore[arg-type]


def test_bad_actions_fail_the_step(make: MakeRuntime) -> None:
    m = Machine("m", ["a", "b"], "a", [], events=["go"], unhandled="ignore")
    m.handler("a", "go")(lambda ctx, ev: Step("b", actions=ev.payload))
    rt = make()
    rt.spawn(m, 1)
    for bad in (
        [42],
        [NextEvent("nope")],
        [Timer("t", 1.0, "nope")],
        [engine.Reply(1), engine.Reply(2)],
    ):
        rt.send_nowait(1, "go", bad)
    rt.run_until_idle()
    dead = rt.take_dead_letters()
    assert [type(d.error.__cause__) for d in dead if d.error] == [
        TypeError,
        engine.UnknownEventError,
        engine.UnknownEventError,
        TypeError,
    ]
    assert rt.state(1) == "a"
    with pytest.raises(engine.InvalidArgumentError):
        StateTimeout("soon")  # type: ignore[arg-type]


def test_timer_actions_need_a_runtime(impl: str) -> None:
    m = Machine("m", ["a"], "a", [], events=["go"], unhandled="ignore")
    m.handler("a", "go")(lambda ctx, ev: Step(actions=[Timer("t", 1.0, "go")]))
    d = _hotpath.implementation(impl).Dispatcher()
    d.spawn(m, 1)
    d.send_nowait(1, "go")
    d.run()
    (dl,) = d.dead_letters
    assert "need a Runtime" in str(dl.error)


def test_work_needs_open_runtime(make: MakeRuntime) -> None:
    async def job() -> None:
        return None

    m = Machine("m", ["a"], "a", [], events=["go"], unhandled="ignore")
    m.handler("a", "go")(lambda ctx, ev: Step(actions=[engine.Work(job)]))
    rt = make()
    rt.spawn(m, 1)
    rt.send_nowait(1, "go")
    assert rt.run_until_idle() == 1  # the step fails; the runtime goes on
    (letter,) = rt.take_dead_letters()
    assert letter.reason is DeadLetterReason.HANDLER_FAILED
    assert isinstance(letter.error, engine.HandlerError)
    assert isinstance(letter.error.__cause__, engine.RuntimeNotRunningError)
    assert rt.status(1) is AgentStatus.ERROR
    assert rt.statistics(1).failed == 1


def test_pause_and_resume(make: MakeRuntime, light: Machine) -> None:
    rt = make()
    rt.spawn(light, "a")
    rt.spawn(light, "b")
    rt.pause("a")
    rt.send_nowait("a", "tick")
    rt.send_nowait("b", "tick")
    assert rt.run_until_idle() == 1
    assert (rt.state("a"), rt.state("b")) == ("red", "green")
    assert rt.paused("a")
    assert rt.statistics("a").paused
    assert rt.queued("a") == [(Priority.NORMAL, "tick", None)]
    assert rt.statistics().ready == 0
    rt.resume("a")
    assert rt.run_until_idle() == 1
    assert rt.state("a") == "green"
    # pausing an agent that is already on the ready queue
    rt.send_nowait("a", "tick")
    rt.pause("a")
    assert rt.run_until_idle() == 0
    rt.resume("a")
    assert rt.run_until_idle() == 1


def flaky() -> Machine:
    m = Machine(
        "flaky",
        ["start", "middle"],
        "start",
        [("start", "step", "middle")],
        events=["step", "boom", "ok"],
        unhandled="ignore",
    )

    @m.handler("*", "boom")
    def boom(ctx: Any, ev: Any) -> None:
        raise RuntimeError("boom")

    return m


def test_supervision_restart_with_backoff_then_stop(make: MakeRuntime, clock: Clock) -> None:
    rt = make()
    rt.supervise(
        m := flaky(), Supervision("restart", max_restarts=2, within=100.0, backoff=1.0, factor=2.0)
    )
    rt.spawn(m, "f")
    rt.send_nowait("f", "step")
    rt.send_nowait("f", "boom")
    rt.send_nowait("f", "ok", priority=Priority.LOW)
    rt.run_until_idle()
    assert rt.state("f") == "middle"  # failed in middle; restart waits for the backoff
    assert rt.status("f") is AgentStatus.ERROR  # a backoff, not a pause
    assert not rt.paused("f")
    assert rt.queued("f") == [(Priority.LOW, "ok", None)]
    assert rt.timers("f") == [("restart",)]
    advance(rt, clock, 1.0)
    assert (rt.state("f"), rt.status("f"), rt.statistics("f").restarts) == (
        "start",
        AgentStatus.IDLE,
        1,
    )
    assert rt.statistics("f").processed == 2  # step, then ok after the restart
    rt.send_nowait("f", "boom")
    rt.run_until_idle()
    advance(rt, clock, 1.0)
    assert rt.timers("f") == [("restart",)]  # second backoff is 2 s
    advance(rt, clock, 1.0)
    assert rt.timers("f") == []
    assert rt.status("f") is AgentStatus.IDLE
    rt.send_nowait("f", "boom")  # third failure within the window: stop
    rt.send_nowait("f", "ok")
    rt.run_until_idle()
    assert rt.status("f") is AgentStatus.STOPPED
    with pytest.raises(engine.AgentStoppedError):
        rt.send_nowait("f", "ok")
    with pytest.raises(engine.AgentStoppedError):
        rt.ref("f").send_nowait("ok")
    reasons = [d.reason for d in rt.dead_letters()]
    assert reasons == [DeadLetterReason.HANDLER_FAILED] * 3 + [DeadLetterReason.STOPPED]
    assert rt.terminate("f") == 0
    assert "f" not in rt


def test_supervision_per_spawn_and_immediate_restart(make: MakeRuntime) -> None:
    rt = make(supervision=Supervision("stop"))
    m = flaky()
    rt.spawn(m, "restarts", supervision=Supervision("restart"))
    rt.spawn(m, "stops")
    rt.spawn(m, "resumes", supervision=Supervision())
    for a in ("restarts", "stops", "resumes"):
        rt.send_nowait(a, "step")
        rt.send_nowait(a, "boom")
    rt.run_until_idle()
    assert rt.state("restarts") == "start"
    assert rt.status("restarts") is AgentStatus.IDLE
    assert rt.status("stops") is AgentStatus.STOPPED
    assert (rt.state("resumes"), rt.status("resumes")) == ("middle", AgentStatus.ERROR)
    with pytest.raises(ValueError, match="policy"):
        Supervision("retry")  # type: ignore[arg-type]
    with pytest.raises(engine.InvalidArgumentError):
        rt.spawn(m, "x", supervision="restart")  # type: ignore[arg-type]


def test_status_stamps(make: MakeRuntime, clock: Clock, light: Machine) -> None:
    m = flaky()
    rt = make()
    clock.now = 1.0
    rt.spawn(m, "a")
    assert rt.status_since("a") == 1.0
    clock.now = 2.0
    rt.run()  # refreshes the dispatcher's reading
    rt.send_nowait("a", "step")
    assert (rt.status("a"), rt.status_since("a")) == (AgentStatus.PROCESSING, 2.0)
    clock.now = 3.0
    rt.run_until_idle()
    assert (rt.status("a"), rt.status_since("a")) == (AgentStatus.IDLE, 3.0)
    clock.now = 4.0
    rt.send_nowait("a", "boom")
    rt.run_until_idle()
    assert (rt.status("a"), rt.status_since("a")) == (AgentStatus.ERROR, 4.0)
    clock.now = 5.0
    rt.send_nowait("a", "ok")
    rt.run_until_idle()
    assert (rt.status("a"), rt.status_since("a")) == (AgentStatus.IDLE, 5.0)
