"""``send_many`` with what users pass (lists of ids, names, enums, payloads), and payloads on
the drain loop's fast path with exact reference counts, on both hot paths."""

from __future__ import annotations

import enum
import gc
import sys
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import engine
from engine import Machine, Priority, Runtime, Step

MakeRuntime = Callable[..., Runtime]


class Ev(enum.StrEnum):
    TICK = "tick"
    FAULT = "fault"


def test_lists_of_ids_names_enums_priorities_and_payloads(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    rt = make_runtime()
    ids = [f"agent-{i}" for i in range(6)] + [(1, "tuple id"), 7.5]
    for agent in ids:
        rt.spawn(light, agent)
    events = ["tick", Ev.TICK, light.event_code("tick"), np.int64(0), "fault", Ev.FAULT, "tick", 0]
    prios = [Priority.LOW, 1, Priority.HIGH, np.int32(3), 0, 1, 2, Priority.CRITICAL]
    payloads = [object() for _ in ids]
    rt.send_many(ids, events, prios, payloads)
    names = [e if isinstance(e, str) else light.events[int(e)] for e in events]
    assert [rt.queued(a)[0] for a in ids] == [
        (Priority(int(p)), name, x) for p, name, x in zip(prios, names, payloads, strict=True)
    ]
    rt.send_many(tuple(ids), tuple(["tick"] * len(ids)))  # tuples, one priority
    assert rt.run_until_idle() == 16
    # fault at LOW after a NORMAL tick (red); fault then tick in one lane (green)
    assert [rt.state(a) for a in ids] == ["yellow"] * 4 + ["red", "green"] + ["yellow"] * 2


def test_numpy_ids_and_codes(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    for i in range(100):
        rt.spawn(light, i)
    ids = np.arange(100)
    rt.send_many(ids, np.zeros(100, dtype=np.int16), np.full(100, 2, dtype=np.int8))
    rt.send_many(ids.astype(np.int64), ["tick"] * 100, payloads=np.arange(100))
    assert rt.queued(5) == [(Priority.HIGH, "tick", None), (Priority.NORMAL, "tick", 5)]
    assert rt.run_until_idle() == 200


@pytest.mark.parametrize(
    ("ids", "events", "prios", "payloads", "error"),
    [
        (["a", "ghost"], ["tick", "tick"], 1, None, engine.AgentNotFoundError),
        (["a", "b"], ["tick", "honk"], 1, None, engine.UnknownEventError),
        (["a", "b"], ["tick", 1.9], 1, None, engine.UnknownEventError),
        (["a", "b"], ["tick", None], 1, None, engine.UnknownEventError),
        (["a", "b"], ["tick", True], 1, None, engine.UnknownEventError),
        (["a", "b"], np.array([0, 9]), 1, None, engine.UnknownEventError),
        (["a", "b"], np.array([0.0, 1.0]), 1, None, engine.UnknownEventError),
        (["a", "b"], ["tick", "tick"], [1, 7], None, engine.InvalidArgumentError),
        (["a", "b"], ["tick", "tick"], [1, True], None, engine.InvalidArgumentError),
        (["a", "b"], ["tick", "tick"], np.array([1, 4]), None, engine.InvalidArgumentError),
        (["a", "b"], ["tick", "tick"], 1.0, None, engine.InvalidArgumentError),
        (["a", "b"], ["tick"], 1, None, engine.InvalidArgumentError),
        (["a", "b"], ["tick", "tick"], [1], None, engine.InvalidArgumentError),
        (["a", "b"], ["tick", "tick"], 1, [1], engine.InvalidArgumentError),
        (["a", [1]], ["tick", "tick"], 1, None, engine.AgentNotFoundError),
        ("ab", "tt", 1, None, engine.InvalidArgumentError),
        (np.zeros((2, 1)), ["tick", "tick"], 1, None, engine.InvalidArgumentError),
    ],
)
def test_bad_batches_queue_nothing(
    make_runtime: MakeRuntime,
    light: Machine,
    ids: Any,
    events: Any,
    prios: Any,
    payloads: Any,
    error: type[Exception],
) -> None:
    rt = make_runtime()
    rt.spawn(light, "a")
    rt.spawn(light, "b", capacity=1)
    with pytest.raises(error):
        rt.send_many(ids, events, prios, payloads)
    assert rt.queued("a") == rt.queued("b") == []


class Tracked:
    """A payload whose lifetime the test watches."""


def test_payloads_on_the_fast_path_are_released_exactly(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    rt = make_runtime()
    for i in range(50):
        rt.spawn(light, i)
    payloads = [Tracked() for _ in range(500)]
    shared = Tracked()
    before = sys.getrefcount(shared)
    refs = [weakref.ref(p) for p in payloads]
    rt.send_many([i % 50 for i in range(500)], ["tick"] * 500, payloads=payloads)
    for i in range(50):
        rt.send_nowait(i, "tick", shared)
        rt.send_nowait(i, "fault", shared)
    assert sys.getrefcount(shared) == before + 100
    del payloads
    assert rt.run_until_idle() == 600
    gc.collect()
    assert all(r() is None for r in refs)
    assert sys.getrefcount(shared) == before


def test_a_failing_payload_message_keeps_its_payload_in_the_dead_letter(
    make_runtime: MakeRuntime,
) -> None:
    rt = make_runtime()
    m = Machine("m", ["a", "b"], "a", [("a", "go", "b")], events=["go", "stop"])
    rt.spawn(m, 1)
    payload = Tracked()
    rt.send_many([1, 1], ["stop", "go"], payloads=[payload, payload])
    assert rt.run_until_idle() == 2
    (letter,) = rt.dead_letters()
    assert letter.payload is payload
    assert rt.state(1) == "b"


def test_a_payload_whose_del_reenters_the_runtime(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    """A payload released on the fast path may run any code (here: a send) from __del__."""
    rt = make_runtime()
    rt.spawn(light, "a")
    rt.spawn(light, "b")

    class Sends:
        def __del__(self) -> None:
            rt.send_nowait("b", "tick")

    rt.send_nowait("a", "tick", Sends())
    assert rt.run_until_idle() == 2
    assert rt.state("b") == "green"


def test_send_actions_with_payloads(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    relay = Machine("relay", ["s"], "s", [("s", "go", None)])
    relay.handler("s", "go")(
        lambda agent, event: Step(
            actions=[engine.Send(f"l{i}", Ev.TICK, event.payload) for i in range(3)]
        )
    )
    rt.spawn(relay, "r")
    for i in range(3):
        rt.spawn(light, f"l{i}")
    payload = Tracked()
    before = sys.getrefcount(payload)
    rt.send_nowait("r", "go", payload)
    assert rt.run_until_idle() == 4
    assert [rt.state(f"l{i}") for i in range(3)] == ["green"] * 3
    assert sys.getrefcount(payload) == before


def test_payload_counts_are_exact_after_every_partial_run(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    """Payload references are dropped in batches inside a run, never later."""
    rt = make_runtime(budget=7)
    for i in range(10):
        rt.spawn(light, i)
    shared = Tracked()
    before = sys.getrefcount(shared)
    rt.send_many([i % 10 for i in range(1000)], ["tick"] * 1000, payloads=[shared] * 1000)
    for done in (1, 99, 300, 600):
        rt.run(done)
        assert sys.getrefcount(shared) - before == len(
            [m for i in range(10) for m in rt.queued(i)]
        )
    rt.run_until_idle()
    assert sys.getrefcount(shared) == before


def test_a_failing_sink_still_drops_the_payloads_of_its_run(light: Machine, impl: str) -> None:
    def sink(batch: Any) -> None:
        raise RuntimeError("sink down")

    rt = Runtime(implementation=impl, on_output=sink)
    rt.spawn(light, "a")
    shared = Tracked()
    before = sys.getrefcount(shared)
    rt.send_many(["a"] * 300, ["tick"] * 300, payloads=[shared] * 300)
    with pytest.raises(RuntimeError, match="sink down"):
        rt.run_until_idle()
    assert sys.getrefcount(shared) - before == len(rt.queued("a"))
