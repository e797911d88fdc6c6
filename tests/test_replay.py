"""Replay: a run recorded under ``open_runtime`` (sends between agents, timers, NextEvent,
postponed mail, payloads, priorities) fed into a fresh runtime reproduces every step, states
and data; a changed handler, a nondeterministic one or a missing agent is reported at the
first record it breaks. Both hot paths, on ``trio.testing.MockClock``."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
import trio
import trio.testing

import engine
from engine import (
    Divergence,
    Gap,
    InvalidArgumentError,
    Machine,
    NextEvent,
    Postpone,
    Send,
    Step,
    Timer,
    open_runtime,
    replay,
)

N = 20


def player(bias: int = 0) -> Machine:
    """Passes a ball around a ring of players; every few passes it rests (a timer), counts
    twice (a NextEvent) or holds an early ``count`` until it is resting (Postpone)."""
    m = Machine(
        "player", ["ready", "resting"], "ready", [], events=["ball", "wake", "count", "kick"]
    )

    @m.handler("ready", "ball")
    def ball(ctx: Any, ev: Any) -> Step:
        n = ev.payload + 1 + bias
        ctx.data = (ctx.data or 0) + n
        nxt = (ctx.agent_id + 1) % N
        actions: list[Any] = [Send(nxt, "ball", n, priority=n % 4)] if n < 400 else []
        if n % 5 == 0:
            actions.append(Timer("rest", 0.5, "wake", n))
            return Step(state="resting", outputs=[("rest", n)], actions=actions)
        if n % 7 == 0:
            actions.append(NextEvent("count", n))
        return Step(outputs=[("pass", n)], actions=actions)

    @m.handler("resting", "ball")
    def held(ctx: Any, ev: Any) -> Step:
        return Step(actions=[Postpone()])

    @m.handler("*", "count")
    def count(ctx: Any, ev: Any) -> Step:
        ctx.data = (ctx.data or 0) + 1000
        return Step(outputs=[("count", ev.payload)])

    @m.handler("resting", "wake")
    def wake(ctx: Any, ev: Any) -> Step:
        return Step(state="ready", outputs=[("woke", ev.payload)])

    @m.handler("*", "kick")
    def kick(ctx: Any, ev: Any) -> Step:
        return Step(outputs=[("kicked", ev.payload)])

    return m


def setup(machine: Machine) -> Any:
    def spawn_all(rt: engine.Runtime) -> None:
        for i in range(N):
            rt.spawn(machine, i)

    return spawn_all


def record_game(impl: str, machine: Machine, **options: Any) -> tuple[list[Any], dict[int, Any]]:
    """Play under open_runtime on virtual time; return what a subscriber read, and each
    player's final (state, data)."""
    rng = random.Random(3)

    async def main() -> tuple[list[Any], dict[int, Any]]:
        got: list[Any] = []
        async with open_runtime(implementation=impl, **options) as rt:
            setup(machine)(rt)
            async with rt.subscribe() as sub:
                for k in range(6):
                    rt.send_nowait(rng.randrange(N), "ball", k)
                    rt.send_nowait(rng.randrange(N), "kick", {"k": k}, priority=rng.randrange(4))
                while True:  # until every ball stopped and every timer fired
                    await rt.wait_until_idle()
                    if not rt.statistics().timers:
                        break
                    await trio.sleep(1)
                while sub.seq < rt._d.record_seq:
                    got.extend(await sub.batch())
            final = {i: (rt.state(i), rt.data(i)) for i in range(N)}
        return got, final

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_recorded_game_replays_exactly(impl: str) -> None:
    recording, final = record_game(impl, player())
    assert len(recording) > 500
    assert not any(isinstance(r, Gap) for r in recording)
    assert any(r.front for r in recording)  # NextEvents and postponed balls were replayed
    assert any(r.event == "wake" for r in recording)  # timers fired
    report = replay(recording, setup(player()), implementation=impl)
    assert report.divergence is None, report.divergence
    assert report.ok
    assert report.steps == len(recording)
    rt = report.runtime
    assert {i: (rt.state(i), rt.data(i)) for i in range(N)} == final


def test_the_other_hot_path_replays_it_too(impl: str) -> None:
    recording, final = record_game(impl, player())
    other = "python" if impl == "native" else "native"
    if other == "native" and engine.hotpath.NO_EXTENSIONS:
        pytest.skip("ENGINE_NO_EXTENSIONS=1: no compiled path to replay on")
    report = replay(recording, setup(player()), implementation=other)
    assert report.ok, report.divergence
    assert {i: report.runtime.data(i) for i in range(N)} == {i: d for i, (_, d) in final.items()}


def test_a_changed_handler_is_reported_at_its_first_step(impl: str) -> None:
    recording, _ = record_game(impl, player())
    report = replay(recording, setup(player(bias=1)), implementation=impl)
    assert not report.ok
    d = report.divergence
    assert isinstance(d, Divergence)
    first_ball = next(r for r in recording if r.event == "ball")
    assert d.seq == first_ball.seq
    assert d.reason in ("target", "outputs")
    assert report.steps == sum(1 for r in recording if r.seq < d.seq)


def test_nondeterminism_is_found(impl: str) -> None:
    """A handler reading shared state diverges where the shared state differs."""
    m = Machine("dice", ["a"], "a", [], events=["roll"])
    shared = itertools.count()

    @m.handler("*", "roll")
    def roll(ctx: Any, ev: Any) -> Step:
        return Step(outputs=[next(shared)])

    rt = engine.Runtime(implementation=impl, record=True)
    rt.spawn(m, "d")
    for _ in range(5):
        rt.send_nowait("d", "roll")
    rt.run_until_idle()
    report = replay(rt.records(), lambda fresh: fresh.spawn(m, "d"), implementation=impl)
    assert report.divergence == Divergence(0, "d", "outputs", (0,), (5,))


def test_a_failing_step_and_a_missing_agent(impl: str) -> None:
    m = Machine("m", ["a", "b"], "a", [("a", "go", "b", None), ("b", "go", "a", None)])
    rt = engine.Runtime(implementation=impl, record=True)
    rt.spawn(m, 1)
    rt.spawn(m, 2)
    rt.send_nowait(1, "go")
    rt.send_nowait(2, "go")
    rt.run_until_idle()
    recording = rt.records()
    # agent 1 starts in "b" in the replay: its first step leads elsewhere
    report = replay(
        recording, lambda f: (f.spawn(m, 1, state="b"), f.spawn(m, 2)), implementation=impl
    )
    assert report.divergence == Divergence(0, 1, "source", "a", "b")
    # agent 2 was never spawned: its message cannot be delivered
    report = replay(recording, lambda f: f.spawn(m, 1), implementation=impl)
    d = report.divergence
    assert d is not None
    assert (d.seq, d.agent_id, d.reason) == (1, 2, "failed")
    assert isinstance(d.actual, engine.AgentNotFoundError)
    # ...unless spawn= brings it in
    report = replay(
        recording,
        lambda f: f.spawn(m, 1),
        spawn=lambda f, r: f.spawn(m, r.agent_id, state=r.source),
        implementation=impl,
    )
    assert report.ok


def test_a_handler_that_raises_in_the_replay(impl: str) -> None:
    m = Machine("m", ["a"], "a", [], events=["go"])
    fail = [False]

    @m.handler("*", "go")
    def go(ctx: Any, ev: Any) -> Step:
        if fail[0]:
            raise ValueError("now it fails")
        return Step(outputs=["ok"])

    rt = engine.Runtime(implementation=impl, record=True)
    rt.spawn(m, "x")
    rt.send_nowait("x", "go")
    rt.run_until_idle()
    fail[0] = True
    report = replay(rt.records(), lambda f: f.spawn(m, "x"), implementation=impl)
    d = report.divergence
    assert d is not None
    assert d.reason == "failed"
    assert isinstance(d.actual, engine.HandlerError)


def test_extra_steps_are_reported(impl: str) -> None:
    """A replay whose machine makes a step the recording lacks (a NextEvent that was not
    there when it was recorded)."""
    m = Machine("m", ["a"], "a", [], events=["go", "more"])
    extra = [False]

    @m.handler("*", "go")
    def go(ctx: Any, ev: Any) -> Step:
        return Step(actions=[NextEvent("more")] if extra[0] else [])

    @m.handler("*", "more")
    def more(ctx: Any, ev: Any) -> None:
        return None

    rt = engine.Runtime(implementation=impl, record=True)
    rt.spawn(m, "x")
    rt.send_nowait("x", "go")
    rt.run_until_idle()
    extra[0] = True
    report = replay(rt.records(), lambda f: f.spawn(m, "x"), implementation=impl)
    d = report.divergence
    assert d is not None
    assert (d.seq, d.reason) == (-1, "extra")
    assert d.actual.event == "more"


def test_bad_recordings_are_refused(impl: str) -> None:
    m = Machine("m", ["a"], "a", [("a", "go", "a", None)])
    with pytest.raises(InvalidArgumentError, match="hole"):
        replay([Gap(0, 3)], lambda f: None, implementation=impl)
    with pytest.raises(InvalidArgumentError, match="Transition"):
        replay(["not a record"], lambda f: None, implementation=impl)
    with pytest.raises(InvalidArgumentError):
        replay([], "not callable", implementation=impl)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="record"):
        replay([], lambda f: None, implementation=impl, record=False)
    with pytest.raises(InvalidArgumentError, match="clock"):
        replay([], lambda f: None, implementation=impl, clock=lambda: 0.0)
    rt = engine.Runtime(implementation=impl, record=True, retention=2)
    rt.spawn(m, "x")
    for _ in range(5):
        rt.send_nowait("x", "go")
    rt.run_until_idle()
    with pytest.raises(InvalidArgumentError, match="hole"):
        replay(rt.records(from_seq=0), lambda f: f.spawn(m, "x"), implementation=impl)
    assert replay(rt.records(), lambda f: f.spawn(m, "x"), implementation=impl).ok


def test_outputs_with_nan_and_arrays_replay(impl: str) -> None:
    import numpy as np

    m = Machine("m", ["a"], "a", [], events=["go"])

    @m.handler("*", "go")
    def go(ctx: Any, ev: Any) -> Step:
        return Step(outputs=[float("nan"), np.arange(3), (np.ones(2), "x")])

    rt = engine.Runtime(implementation=impl, record=True)
    rt.spawn(m, "x")
    rt.send_nowait("x", "go")
    rt.run_until_idle()
    assert replay(rt.records(), lambda f: f.spawn(m, "x"), implementation=impl).ok


def test_a_chain_longer_than_the_retention_replays(impl: str) -> None:
    """One message starts a NextEvent chain of more steps than the replay's ring keeps."""
    m = Machine("m", ["a"], "a", [], events=["go"])

    @m.handler("*", "go")
    def go(ctx: Any, ev: Any) -> Step:
        more = [NextEvent("go", ev.payload + 1)] if ev.payload < 300 else []
        return Step(outputs=[ev.payload], actions=more)

    rt = engine.Runtime(implementation=impl, record=True, retention=1000)
    rt.spawn(m, "x")
    rt.send_nowait("x", "go", 0)
    rt.run_until_idle()
    report = replay(
        rt.records(), lambda f: f.spawn(m, "x"), implementation=impl, budget=1000, retention=64
    )
    assert report.ok
    assert report.steps == 301
