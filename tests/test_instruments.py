"""Instruments: hooks by name, connected only while wanted; a raising one is removed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import engine
from engine import Instrument, Machine, OverflowPolicy, Runtime

MakeRuntime = Callable[..., Runtime]


class Recorder(Instrument):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def before_step(self, agent_id: Any, state: str, event: str) -> None:
        self.calls.append(("before", agent_id, state, event))

    def after_transition(
        self, agent_id: Any, source: str, event: str, target: str, outputs: tuple[Any, ...]
    ) -> None:
        self.calls.append(("after", agent_id, source, event, target, outputs))

    def on_overflow(self, agent_id: Any, event: str, payload: Any, policy: str) -> None:
        self.calls.append(("overflow", agent_id, event, payload, policy))

    def on_failure(self, agent_id: Any, error: BaseException) -> None:
        self.calls.append(("failure", agent_id, type(error).__name__))

    def on_dead_letter(self, letter: Any) -> None:
        self.calls.append(("dead", letter.agent_id, letter.reason.value))


def test_every_hook(make_runtime: MakeRuntime, light: Machine) -> None:
    strict = Machine("strict", ["a"], "a", [("a", "go", "a")], events=["go", "nope"])
    rt = make_runtime()
    rec = Recorder()
    rt.add_instrument(rec)
    rt.spawn(light, "l")
    rt.spawn(light, "tight", capacity=1)
    rt.spawn(light, "lossy", capacity=1, policy=OverflowPolicy.DROP_OLDEST)
    rt.spawn(strict, "s")
    rt.send_nowait("l", "tick")
    rt.send_nowait("tight", "tick")
    with pytest.raises(engine.MailboxFullError):
        rt.send_nowait("tight", "fault", "refused")
    rt.send_nowait("lossy", "tick", "first")
    rt.send_nowait("lossy", "tick", "second")
    rt.send_nowait("s", "nope")
    rt.run_until_idle()
    calls = rec.calls
    assert ("overflow", "tight", "fault", "refused", "reject") in calls
    assert ("overflow", "lossy", "tick", "first", "drop_oldest") in calls
    assert ("dead", "lossy", "dropped") in calls
    assert ("failure", "s", "InvalidTransitionError") in calls
    assert ("dead", "s", "invalid_transition") in calls
    i = calls.index(("before", "l", "red", "tick"))
    assert calls[i + 1] == ("after", "l", "red", "tick", "green", ("go",))
    assert ("before", "s", "a", "nope") in calls  # before_step sees failing steps too
    assert not any(c[0] == "after" and c[1] == "s" for c in calls)


def test_hooks_are_connected_only_while_wanted(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    d = rt._d
    assert (d.on_step, d.on_record, d.on_overflow) == (None, None, None)

    class OnlyFailures:  # not a subclass: any object with hook methods will do
        def on_failure(self, agent_id: Any, error: BaseException) -> None:
            pass

    only = OnlyFailures()
    rt.add_instrument(only)
    assert (d.on_step, d.on_record, d.on_overflow) == (None, None, None)
    rec = Recorder()
    rt.add_instrument(rec)
    assert d.on_step is not None
    assert d.on_record is not None
    rt.remove_instrument(rec)
    assert (d.on_step, d.on_record, d.on_overflow) == (None, None, None)
    assert d.dead_letters is rt._dead
    with pytest.raises(TypeError, match="defines none"):
        rt.add_instrument(object())


def test_a_raising_instrument_is_removed_and_reported(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    class Broken(Instrument):
        def before_step(self, agent_id: Any, state: str, event: str) -> None:
            raise RuntimeError("instrument bug")

        def on_failure(self, agent_id: Any, error: BaseException) -> None:
            raise AssertionError("never called: removed already")

    rt = make_runtime()
    broken, rec = Broken(), Recorder()
    rt.add_instrument(broken)
    rt.add_instrument(rec)
    rt.spawn(light, 1)
    for _ in range(3):
        rt.send_nowait(1, "tick")
    assert rt.run_until_idle() == 3
    assert rt.state(1) == "red"  # the runtime went on
    (failure,) = rt.instrument_failures()
    assert (failure.instrument, failure.hook) == (broken, "before_step")
    assert isinstance(failure.error, RuntimeError)
    assert broken not in rt._instruments.hooks["on_failure"]
    assert sum(1 for c in rec.calls if c[0] == "before") == 3  # the others still called
