"""The cost of metrics: the table workload with per-agent counters and latency sampling on,
against the same workload with them off (target: < 5 % on the compiled path).

A few percent is below this shared machine's run-to-run noise, so the modes are measured
*interleaved* in one process: each round runs every mode once on warm runtimes, and the
overhead reported is the median over rounds of (mode time / off time in the same round).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from conftest import STATES, Workload, interleaved, rows

import engine

MODES: dict[str, dict[str, Any]] = {
    "off": {},
    "metrics": {"metrics": True},
    "metrics+sample/64": {"metrics": True, "sample_every": 64},
    "metrics+sample/1024": {"metrics": True, "sample_every": 1024},
    "sample/64": {"sample_every": 64},
    "sample/1024": {"sample_every": 1024},
}
ROUNDS = int(os.environ.get("BENCH_METRICS_ROUNDS", "25"))


@pytest.mark.benchmark(group="metrics")
def test_metrics_overhead_interleaved(benchmark: Any, impl: str, workload: Workload) -> None:
    machine = engine.Machine("bench", list(STATES), STATES[0], rows())
    runtimes = {mode: engine.Runtime(implementation=impl, **kw) for mode, kw in MODES.items()}
    for rt in runtimes.values():
        for i in range(workload.n_agents):
            rt.spawn(machine, i)
    slots = runtimes["off"].slots(range(workload.n_agents))[workload.agents]
    interleaved(benchmark, runtimes, slots, workload, ROUNDS if impl == "native" else 1)
    sampled = runtimes["metrics+sample/64"]
    assert sampled.step_latency.total == sampled.statistics().processed // 64
