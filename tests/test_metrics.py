"""Metrics: latency rings and their percentiles, sampling, per-agent counters, aggregates."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import engine
from engine import LatencyRing, Machine, Priority, Runtime, Step

MakeRuntime = Callable[..., Runtime]


@given(st.integers(1, 50), st.lists(st.integers(0, 10**9), max_size=200))
def test_ring_keeps_the_last_maxlen_and_percentiles_match_numpy(
    maxlen: int, samples: list[int]
) -> None:
    ring = LatencyRing(maxlen)
    for value in samples:
        ring.append(value)
    kept = samples[-maxlen:] if samples else []
    assert ring.total == len(samples)
    assert len(ring) == len(kept)
    assert np.asarray(ring).tolist() == kept
    assert list(ring) == kept
    summary = ring.summary()
    if not kept:
        assert summary is None
        return
    assert summary is not None
    p50, p90, p99 = np.percentile(kept, [50, 90, 99]) / 1000.0
    assert (summary.p50, summary.p90, summary.p99) == (p50, p90, p99)
    assert summary.max == max(kept) / 1000.0
    assert summary.count == len(kept)
    assert summary.total == len(samples)


def test_ring_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="maxlen"):
        LatencyRing(0)
    ring = LatencyRing(3)
    ring.append(5)
    ring.clear()
    assert len(ring) == 0
    assert "maxlen=3" in repr(ring)


def sleepy_machine(step_s: float) -> Machine:
    m = Machine("sleepy", ["s"], "s", [], events=["work"], unhandled="ignore")

    @m.handler("s", "work")
    def work(ctx: Any, ev: Any) -> None:
        time.sleep(step_s)

    return m


def test_sampled_latencies_measure_real_time(make_runtime: MakeRuntime) -> None:
    rt = make_runtime(sample_every=1, ring_size=64)
    rt.spawn(sleepy_machine(0.005), "a")
    for _ in range(4):
        rt.send_nowait("a", "work")
    time.sleep(0.02)
    rt.run_until_idle()
    waits = np.asarray(rt.wait_latency)
    steps = np.asarray(rt.step_latency)
    assert len(waits) == len(steps) == 4
    assert waits.min() >= 20_000_000  # at least the 20 ms sleep before the run
    assert (np.diff(waits) >= 4_000_000).all()  # each waited for the steps before it
    assert steps.min() >= 5_000_000
    assert waits.max() < 2_000_000_000
    stats = rt.statistics()
    assert stats.step is not None
    assert stats.step.p50 == np.percentile(steps, 50) / 1000.0
    assert stats.wait is not None
    assert stats.wait.max == waits.max() / 1000.0


def test_sampling_every_nth_is_exact_and_the_same_on_both_paths(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    rt = make_runtime(sample_every=7)
    for i in range(10):
        rt.spawn(light, i)
    rng = np.random.default_rng(1)
    agents = rng.integers(0, 10, 1000)
    rt.send_many(agents, np.zeros(1000, dtype=np.int32), rng.integers(0, 4, 1000))
    for i in range(50):  # some mail is never processed: evicted messages are not sampled
        rt.send_nowait(9, "tick", i)
    rt.terminate(9)
    rt.run_until_idle()
    processed = rt.statistics().processed
    assert rt.step_latency.total == processed // 7
    # every 7th message sent was stamped; those to agent 9 (all 50 extra ones too) were
    # evicted by the terminate, unsampled
    stamped_processed = sum(1 for n in range(1, 1001) if n % 7 == 0 and agents[n - 1] != 9)
    assert rt.wait_latency.total == stamped_processed
    assert rt.statistics().step is not None
    off = make_runtime()
    off.spawn(light, 1)
    off.send_nowait(1, "tick")
    off.run_until_idle()
    assert off.step_latency.total == off.wait_latency.total == 0
    assert off.statistics().step is None


def test_counters_match_an_independent_count(make_runtime: MakeRuntime) -> None:
    """Handlers count what they see; the runtime's counters must agree."""
    m = Machine(
        "m",
        ["a", "b"],
        "a",
        [("a", "go", "b"), ("b", "go", "a")],
        events=["go", "bad", "wait"],
        unhandled="ignore",
    )
    seen: Counter[tuple[Any, str]] = Counter()

    def count(kind: str, result: Any = None) -> Any:
        def handler(ctx: Any, ev: Any) -> Any:
            seen[ctx.agent_id, kind] += 1
            if kind == "bad":
                raise ValueError("bad")
            return result

        return handler

    m.handler("*", "go")(count("go"))
    m.handler("*", "bad")(count("bad"))
    m.handler("a", "wait")(count("postponed", Step(actions=[engine.Postpone()])))
    m.handler("b", "wait")(count("waited"))
    rt = make_runtime(metrics=True)
    rng = np.random.default_rng(3)
    for a in range(20):
        rt.spawn(m, a)
    for _ in range(3000):
        a = int(rng.integers(0, 20))
        rt.send_nowait(
            a,
            str(rng.choice(["go", "bad", "wait"], p=[0.8, 0.1, 0.1])),
            priority=int(rng.integers(0, 4)),
        )
    depth_before = {a: len(rt.queued(a)) for a in range(20)}
    rt.run_until_idle()
    idle = rt.spawn(m, "idle")
    for a in range(20):
        st = rt.statistics(a)
        assert st.failed == seen[a, "bad"]
        assert st.processed == seen[a, "go"] + seen[a, "postponed"] + seen[a, "waited"]
        assert st.postponed == seen[a, "postponed"]
        assert st.high_water == depth_before[a]
        assert st.busy_s is not None
        assert st.busy_s > 0
        assert isinstance(st.last_error, engine.HandlerError)
    assert sum(seen[a, "postponed"] for a in range(20)) > 0  # the scenario exercised it
    idle_stats = rt.statistics(idle.id)
    assert (idle_stats.busy_s, idle_stats.processed, idle_stats.last_error) == (0, 0, None)
    assert rt._d.metrics.dtype == engine.hotpath._metrics.METRICS_DTYPE


def test_postponed_and_restart_counts(make_runtime: MakeRuntime) -> None:
    m = Machine(
        "m",
        ["a", "b"],
        "a",
        [("a", "open", "b")],
        events=["open", "wait", "bad"],
        unhandled="ignore",
    )
    m.handler("a", "wait")(lambda ctx, ev: Step(actions=[engine.Postpone()]))
    m.handler("*", "bad")(lambda ctx, ev: 1 / 0)
    rt = make_runtime(metrics=True, supervision=engine.Supervision("restart"))
    rt.spawn(m, 1)
    for _ in range(3):
        rt.send_nowait(1, "wait")
    rt.send_nowait(1, "bad")
    rt.send_nowait(1, "bad")
    rt.run_until_idle()
    st = rt.statistics(1)
    assert st.postponed == 9  # 3 postponed, then replayed and postponed again by each restart
    assert st.restarts == 2
    assert int(rt._d.metrics[rt.ref(1).slot]["restarts"]) == 2
    assert st.last_error is not None


def test_metrics_off_reports_none(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    rt.spawn(light, 1)
    st = rt.statistics(1)
    assert (st.busy_s, st.high_water, st.postponed) == (None, None, None)
    assert len(rt._d.metrics) == 0


def test_tracked_agents_and_machines(make_runtime: MakeRuntime, light: Machine) -> None:
    other = Machine("other", ["x"], "x", [("x", "tick", None)])
    rt = make_runtime(sample_every=1)
    rt.spawn(light, "l")
    rt.spawn(other, "o")
    l_step, l_wait = rt.track("l")
    o_step, _ = rt.track_machine(other)
    for _ in range(5):
        rt.send_nowait("l", "tick")
        rt.send_nowait("o", "tick")
    rt.run_until_idle()
    assert (l_step.total, l_wait.total, o_step.total) == (5, 5, 5)
    assert rt.step_latency.total == 10
    assert rt.track("l")[0] is l_step


def test_machine_statistics_and_depths(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    for i in range(9):
        rt.spawn(light, i)
    for i in range(9):
        for _ in range(i % 3):
            rt.send_nowait(i, "tick")
    assert rt._d.depths().tolist() == [i % 3 for i in range(9)]
    rt.run_until_idle()
    rt.terminate(0)
    (stats,) = rt.machine_statistics()
    assert stats.machine == "light"
    assert stats.agents == 8
    assert stats.states == {"red": 2, "green": 3, "yellow": 3}
    assert stats.processed == 9
    rt.send_nowait(4, "tick", priority=Priority.HIGH)
    assert rt._d.depths()[rt.ref(4).slot] == 1
