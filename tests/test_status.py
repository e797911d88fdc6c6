"""Statuses and their timestamps: fresh after an idle period, PAUSED of its own, and a
supervision backoff kept apart from pause/resume; failure counters that count everything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

import engine
from engine import AgentStatus, Machine, Runtime, Supervision

MakeRuntime = Callable[..., Runtime]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def flaky() -> Machine:
    m = Machine("flaky", ["ok"], "ok", [("ok", "poke", None)])

    @m.handler("ok", "poke")
    def poke(agent: engine.AgentContext, event: engine.Event) -> None:
        if event.payload == "bad":
            raise ValueError("bad poke")

    return m


def test_status_since_is_read_when_mail_arrives_after_an_idle_period(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    clock = Clock()
    rt = make_runtime(clock=clock)
    ref = rt.spawn(light, "a")
    rt.spawn(light, "b")
    assert rt.status_since("a") == 0.0
    clock.now = 100.0
    rt.send_nowait("a", "tick")  # IDLE -> PROCESSING now, not when the runtime last ran
    assert (rt.status("a"), rt.status_since("a")) == (AgentStatus.PROCESSING, 100.0)
    clock.now = 150.0
    ref.send_nowait("tick")  # already PROCESSING: no change
    assert rt.status_since("a") == 100.0
    clock.now = 200.0
    rt.send_many(["b"], ["tick"])
    assert rt.status_since("b") == 200.0
    clock.now = 300.0
    rt.run_until_idle()
    assert (rt.status("a"), rt.status_since("a")) == (AgentStatus.IDLE, 300.0)


def test_status_since_under_trio_after_an_idle_period(impl: str, light: Machine) -> None:
    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            rt.spawn(light, "a")
            await trio.sleep(50)
            rt.send_nowait("a", "tick")
            assert rt.status_since("a") == trio.current_time() == 50
            await rt.wait_until_idle()
            await trio.sleep(25)
            await rt.send("a", "tick")
            assert rt.status_since("a") == 75

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_paused_agent_is_paused_not_processing(make_runtime: MakeRuntime, light: Machine) -> None:
    clock = Clock()
    rt = make_runtime(clock=clock)
    rt.spawn(light, "a")
    clock.now = 10.0
    rt.pause("a")
    assert (rt.status("a"), rt.status_since("a")) == (AgentStatus.PAUSED, 10.0)
    clock.now = 20.0
    rt.send_nowait("a", "tick")  # mail for a paused agent: still PAUSED, same stamp
    assert (rt.status("a"), rt.status_since("a")) == (AgentStatus.PAUSED, 10.0)
    assert rt.run_until_idle() == 0
    assert rt.statistics("a").paused
    clock.now = 30.0
    rt.resume("a")
    assert (rt.status("a"), rt.status_since("a")) == (AgentStatus.PROCESSING, 30.0)
    rt.run_until_idle()
    assert rt.state("a") == "green"


def test_pause_and_resume_during_a_restart_backoff(
    make_runtime: MakeRuntime,
) -> None:
    clock = Clock()
    rt = make_runtime(clock=clock, supervision=Supervision("restart", backoff=5.0))
    rt.spawn(flaky(), "f")
    rt.send_nowait("f", "poke", "bad")
    rt.run_until_idle()
    assert (rt.status("f"), rt.timers("f")) == (AgentStatus.ERROR, [("restart",)])

    # resume() during the backoff does not run the agent in ERROR
    rt.send_nowait("f", "poke", "fine")
    rt.resume("f")
    assert rt.run_until_idle() == 0
    assert rt.status("f") is AgentStatus.ERROR

    # pause() during the backoff is not undone when the restart fires
    rt.pause("f")
    clock.now = 5.0
    rt.fire_timers()
    assert rt.statistics("f").restarts == 1
    assert (rt.status("f"), rt.status_since("f")) == (AgentStatus.PAUSED, 5.0)
    assert rt.run_until_idle() == 0
    rt.resume("f")
    assert rt.run_until_idle() == 1
    assert rt.status("f") is AgentStatus.IDLE


def test_failure_counters_count_past_what_is_kept(impl: str) -> None:
    class Broken:
        def deliver(self, batch: Any) -> None:
            raise RuntimeError("no")

    light = Machine("l", ["r", "g"], "r", [("r", "t", "g", "go"), ("g", "t", "r", "stop")])

    async def main() -> None:
        async with engine.open_runtime(implementation=impl, effectors=[Broken()]) as rt:
            rt.spawn(light, "a")
            for _ in range(1_050):
                rt.send_nowait("a", "t")
                await rt.wait_until_idle()
            stats = rt.statistics()
            assert stats.effector_failures == 1_050
            assert len(rt.effector_failures()) == 1_000  # the last 1 000 are kept

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_subscribe_none_follows_every_agent(impl: str, light: Machine) -> None:
    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            rt.spawn(light, "a")
            rt.spawn(light, "b")
            async with rt.subscribe(None) as records, rt.subscribe() as all_records:
                rt.send_nowait("a", "tick")
                rt.send_nowait("b", "tick")
                got = [(await records.__anext__()).agent_id for _ in range(2)]
                also = [(await all_records.__anext__()).agent_id for _ in range(2)]
            assert got == also == ["a", "b"]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("agent", ["a", 0])
def test_statistics_typed_by_argument(
    make_runtime: MakeRuntime, light: Machine, agent: Any
) -> None:
    rt = make_runtime()
    rt.spawn(light, agent)
    assert isinstance(rt.statistics(), engine.RuntimeStatistics)
    assert isinstance(rt.statistics(agent), engine.AgentStatistics)


def test_diagram_of_an_agent_highlights_its_state(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    rt = make_runtime()
    rt.spawn(light, "a")
    rt.send_nowait("a", "tick")
    rt.run_until_idle()
    assert rt.diagram("a") == light.to_mermaid(highlight="green")
    assert rt.diagram("a", format="dot") == light.to_dot(highlight="green")
    assert rt.diagram("a") != light.to_mermaid(highlight="red")
    with pytest.raises(engine.InvalidArgumentError):
        rt.diagram("a", format="svg")
    with pytest.raises(engine.AgentNotFoundError):
        rt.diagram("nobody")


def test_statuses_per_slot_agree_with_status(make_runtime: MakeRuntime, light: Machine) -> None:
    """The dispatcher's one-pass ``statuses()`` (the dashboard ranks agents with it) says what
    ``status()`` says of every live slot, and -1 for free ones."""
    rt = make_runtime(supervision=Supervision(policy="resume"))
    m = flaky()
    for i in range(6):
        rt.spawn(light if i % 2 else m, i)
    rt.send_nowait(0, "poke", "bad")  # ERROR
    rt.pause(1)
    rt.send_nowait(1, "tick")  # PAUSED with mail
    rt.send_nowait(3, "tick")  # PROCESSING until run
    rt.terminate(4)  # a free slot
    rt.send_nowait(2, "poke", "bad")
    rt.run(limit=1)  # 0 fails; 2 and 3 still have mail
    got = rt._d.statuses()
    assert got.dtype == np.int8
    assert len(got) == rt._d.slot_count
    for i in (0, 1, 2, 3, 5):
        slot = rt.ref(i).slot
        assert got[slot] == rt.status(i), i
    assert got[4] == -1  # slot 4 was agent 4's and is free
    assert {AgentStatus(int(v)) for v in got if v >= 0} >= {
        AgentStatus.ERROR,
        AgentStatus.PAUSED,
        AgentStatus.PROCESSING,
        AgentStatus.IDLE,
    }
