"""Bad arguments get a typed error at the call that was wrong, the same on both hot paths, and
change nothing; NaN and infinite durations never reach the timer queue."""

from __future__ import annotations

import asyncio
import enum
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

import engine
from engine import (
    AgentStatus,
    DeadLetterReason,
    EventTimeout,
    Machine,
    NextEvent,
    Runtime,
    StateTimeout,
    Step,
    Supervision,
    Timer,
)

MakeRuntime = Callable[..., Runtime]
NOT_FINITE = [math.nan, math.inf, -math.inf]


# -- timers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [*NOT_FINITE, -1, 10**400, True, "5", None])
def test_timer_durations_must_be_finite_numbers(seconds: Any) -> None:
    with pytest.raises(engine.InvalidArgumentError):
        Timer("t", seconds, "go")
    if seconds is not None:  # None cancels a state or event timeout
        with pytest.raises(engine.InvalidArgumentError):
            StateTimeout(seconds, "go")
        with pytest.raises(engine.InvalidArgumentError):
            EventTimeout(seconds, "go")


def test_absolute_timers_may_be_in_the_past_but_not_infinite() -> None:
    assert Timer("t", -5.0, "go", absolute=True).seconds == -5.0
    assert Timer("t", np.float32(2.5), "go").seconds == 2.5
    with pytest.raises(engine.InvalidArgumentError):
        Timer("t", math.inf, "go", absolute=True)


def timer_machine() -> Machine:
    m = Machine(
        "t", ["idle", "armed"], "idle", [("armed", "ring", "idle", "rang")], events=["arm", "ring"]
    )

    @m.handler("idle", "arm")
    def arm(agent: engine.AgentContext, event: engine.Event) -> Step:
        return Step("armed", actions=[Timer("t", event.payload, "ring")])

    return m


@pytest.mark.parametrize("bad", NOT_FINITE)
def test_a_nan_timer_fails_only_its_step(make_runtime: MakeRuntime, bad: float) -> None:
    now = [0.0]
    rt = make_runtime(clock=lambda: now[0])
    m = timer_machine()
    rt.spawn(m, "bad")
    rt.spawn(m, "good")
    rt.send_nowait("bad", "arm", bad)
    rt.send_nowait("good", "arm", 5.0)
    rt.run_until_idle()
    (letter,) = rt.take_dead_letters()
    assert letter.reason is DeadLetterReason.HANDLER_FAILED
    assert isinstance(letter.error.__cause__, engine.InvalidArgumentError)
    assert (rt.state("bad"), rt.status("bad")) == ("idle", AgentStatus.ERROR)
    assert rt.timers("bad") == []
    now[0] = 5.0
    assert rt.fire_timers() == 1  # the other agent's timer still fires
    rt.run_until_idle()
    assert rt.state("good") == "idle"
    with pytest.raises(engine.InvalidArgumentError):
        rt.fire_timers(math.nan)


def test_a_nan_timer_under_open_runtime_keeps_the_runtime_alive(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            m = timer_machine()
            rt.spawn(m, "bad")
            rt.spawn(m, "good")
            rt.send_nowait("bad", "arm", math.nan)
            rt.send_nowait("good", "arm", 5.0)
            await trio.sleep(6)
            assert rt.state("good") == "idle"
            assert rt.statistics("good").processed == 2
            assert rt.status("bad") is AgentStatus.ERROR

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_supervision_numbers() -> None:
    sup = Supervision("restart", backoff=1.0, factor=1e200, max_restarts=50, within=1e9)
    history: Any = __import__("collections").deque()
    delays = [sup.decide(history, 0.0)[1] for _ in range(10)]
    assert delays == [1.0] + [30.0] * 9  # capped, never an overflow
    for bad in (
        {"factor": math.nan},
        {"backoff": math.inf},
        {"within": -1},
        {"max_restarts": 2.5},
        {"max_restarts": True},
        {"policy": "reboot"},
    ):
        with pytest.raises(engine.InvalidArgumentError):
            Supervision(**bad)


# -- Runtime() ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"supervision": "stop"},
        {"on_output": 5},
        {"clock": 1.0},
        {"capacity": -1},
        {"capacity": 2.5},
        {"capacity": 2**40},
        {"budget": 2**40},
        {"budget": 0},
        {"budget": True},
        {"batch": 0},
        {"policy": "drop everything"},
        {"dead_letter_limit": 0},
        {"retention": 2**40},
        {"ring_size": 2**40},
        {"sample_every": -1},
        {"record": "no"},
        {"metrics": 1},
        {"implementation": "fortran"},
    ],
)
def test_runtime_arguments_are_checked_at_construction(impl: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(engine.InvalidArgumentError):
        engine.Runtime(implementation=impl, **kwargs) if "implementation" not in kwargs else (
            engine.Runtime(**kwargs)
        )


# -- events, priorities, send_many ------------------------------------------------------------


class Ev(enum.StrEnum):
    TICK = "tick"
    FAULT = "fault"


def test_str_enum_event_names_are_accepted_everywhere(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    outputs: list[tuple[Any, Any]] = []
    rt = make_runtime(on_output=outputs.extend)
    ref = rt.spawn(light, "a")
    rt.spawn(light, "b")
    rt.send_nowait("a", Ev.TICK)
    ref.send_nowait(Ev.TICK)
    rt.send_many(["a", "b"], [Ev.TICK, Ev.FAULT])
    relay = Machine("relay", ["s"], "s", [("s", "go", None)])
    relay.handler("s", "go")(lambda agent, event: Step(actions=[engine.Send("b", Ev.TICK)]))
    rt.spawn(relay, "r")
    rt.send_nowait("r", "go")
    rt.run_until_idle()
    assert rt.state("a") == "red"  # three ticks
    assert rt.state("b") == "green"  # fault, then the relay's tick
    assert light.event_code(Ev.FAULT) == light.event_code("fault")
    assert not rt.dead_letters()


@pytest.mark.parametrize("events", [[1.9, 0], np.array([1.9, 0.0]), [True, 0], ["tick", None]])
def test_send_many_refuses_what_is_not_an_event_and_queues_nothing(
    make_runtime: MakeRuntime, light: Machine, events: Any
) -> None:
    rt = make_runtime()
    rt.spawn(light, "a")
    rt.spawn(light, "b")
    with pytest.raises((engine.UnknownEventError, engine.InvalidArgumentError)):
        rt.send_many(["a", "b"], events)
    assert rt.queued("a") == rt.queued("b") == []
    with pytest.raises(engine.InvalidArgumentError):
        rt.send_many(["a", "b"], ["tick"])  # lengths differ
    with pytest.raises(engine.UnknownEventError):
        rt.send_nowait("a", 1.9)


@pytest.mark.parametrize("priority", [7, -1, 1.0, True, "high", None])
def test_priorities_are_checked_the_same_everywhere(
    make_runtime: MakeRuntime, light: Machine, priority: Any
) -> None:
    rt = make_runtime()
    ref = rt.spawn(light, "a")
    with pytest.raises(engine.InvalidArgumentError):
        NextEvent("tick", priority=priority)
    with pytest.raises(engine.InvalidArgumentError):
        engine.Send("a", "tick", priority=priority)
    with pytest.raises(engine.InvalidArgumentError):
        Timer("t", 1.0, "tick", priority=priority)
    with pytest.raises(engine.InvalidArgumentError):
        rt.send_nowait("a", "tick", None, priority)
    with pytest.raises(engine.InvalidArgumentError):
        ref.send_nowait("tick", None, priority)
    assert rt.queued("a") == []


# -- outside trio ------------------------------------------------------------------------------


def test_open_runtime_under_asyncio_says_what_to_do() -> None:
    async def main() -> None:
        async with engine.open_runtime():
            pass  # pragma: no cover

    with pytest.raises(engine.RuntimeNotRunningError, match=r"asyncio.*trio\.run\(main\)"):
        asyncio.run(main())


def test_async_calls_without_open_runtime_say_what_to_do(light: Machine) -> None:
    rt = engine.Runtime()
    rt.spawn(light, "a")

    async def main() -> None:
        await rt.send("a", "tick")

    with pytest.raises(engine.RuntimeNotRunningError, match="open_runtime"):
        trio.run(main)
