"""The synchronous Runtime's own surface: statistics, dead-letter keeping, argument checks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import engine
from engine import AgentStatistics, Machine, Priority, Runtime, RuntimeStatistics

MakeRuntime = Callable[..., Runtime]


def test_statistics_survive_termination(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    for i in range(3):
        rt.spawn(light, i)
        rt.send_nowait(i, "tick")
    rt.send_nowait(0, "tick", priority=Priority.LOW)
    rt.run_until_idle()
    st = rt.statistics(0)
    assert isinstance(st, AgentStatistics)
    assert (st.agent_id, st.state, st.status, st.processed, st.failed, st.dropped, st.depth) == (
        0,
        "yellow",
        engine.AgentStatus.IDLE,
        2,
        0,
        0,
        0,
    )
    assert (st.paused, st.restarts, st.timers) == (False, 0, 0)
    rt.send_nowait(1, "tick")
    assert rt.statistics(1).depth == 1
    assert rt.statistics(1).status is engine.AgentStatus.PROCESSING
    rt.terminate(0)
    rt.spawn(light, 9)  # reuses slot 0 with fresh counters
    assert rt.statistics(9).processed == 0
    stats = rt.statistics()
    assert isinstance(stats, RuntimeStatistics)
    assert (stats.agents, stats.ready, stats.processed, stats.dead_letters) == (3, 1, 4, 0)
    with pytest.raises(engine.AgentNotFoundError):
        rt.statistics(0)


def test_none_is_not_an_agent_id(make_runtime: MakeRuntime, light: Machine) -> None:
    """None means "every agent" (subscribe, statistics), so no agent may be called None."""
    rt = make_runtime()
    with pytest.raises(engine.InvalidArgumentError, match="None is not an agent id"):
        rt.spawn(light, None)
    assert len(rt) == 0
    assert rt.statistics(None) == rt.statistics()
    assert rt.statistics().agents == 0


def test_dead_letter_limit_keeps_newest_and_counts_all(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    rt = make_runtime(dead_letter_limit=3)
    rt.spawn(light, "a")
    for i in range(5):
        rt.send_nowait("a", "tick", i)
    rt.terminate("a")
    assert [d.payload for d in rt.dead_letters()] == [2, 3, 4]
    assert rt.statistics().dead_letters == 5
    assert [d.payload for d in rt.take_dead_letters()] == [2, 3, 4]
    assert rt.dead_letters() == []


def test_defaults_for_capacity_and_policy(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime(capacity=1, policy=engine.OverflowPolicy.DROP_OLDEST)
    rt.spawn(light, "a")
    rt.spawn(light, "b", capacity=0)
    for _ in range(3):
        rt.send_nowait("a", "tick")
        rt.send_nowait("b", "tick")
    assert (len(rt.queued("a")), len(rt.queued("b"))) == (1, 3)
    assert rt.statistics("a").dropped == 2


def test_arguments_are_checked(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    with pytest.raises(engine.InvalidArgumentError):
        rt.run(1.5)  # type: ignore[arg-type]
    with pytest.raises(engine.InvalidArgumentError):
        make_runtime(budget=0)
    with pytest.raises(TypeError):
        rt.spawn("not a machine", 1)  # type: ignore[arg-type]
    rt.spawn(light, "a")
    with pytest.raises(engine.UnknownEventError):
        rt.send_many(["a"], ["honk"])


def test_slots_and_numpy_ids(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    refs = [rt.spawn(light, i) for i in range(10)]
    ids = np.arange(10)
    slots = rt.slots(ids)
    assert slots.dtype == np.int32
    assert slots.tolist() == [r.slot for r in refs]
    with pytest.raises(engine.AgentNotFoundError):
        rt.slots([1, 2, 99])
    rt.send_many(ids, np.zeros(10, dtype=np.int8), np.full(10, 3))
    assert rt.run_until_idle() == 10
    assert {rt.state(i) for i in range(10)} == {"green"}
    assert rt.machine(3) is light
    assert sorted(rt.agent_ids()) == list(range(10))


def test_machine_limit_is_a_typed_error(make_runtime: MakeRuntime) -> None:
    """A runtime holds 65535 machines (the compiled path stores the index in 16 bits); the
    next spawn is refused and nothing is registered or created."""
    rt = make_runtime()
    machines = [Machine(f"m{i}", ["a"], "a", []) for i in range(0xFFFF + 1)]
    for i, m in enumerate(machines[:-1]):
        rt.spawn(m, i)
    with pytest.raises(engine.InvalidArgumentError, match="65535 machines"):
        rt.spawn(machines[-1], "one too many")
    assert len(rt) == 0xFFFF
    assert rt.state(0xFFFF - 1) == "a"
    assert rt.machine(0xFFFF - 1) is machines[-2]
