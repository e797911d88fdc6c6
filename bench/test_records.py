"""The cost of following the transition record stream: the table workload under
``open_runtime`` with one subscriber reading every record, against the same workload with
nobody subscribed (target: reading in batches takes <= 1.25x, measured until the reader has
every record).

The modes run interleaved (each round runs each once, in a fresh trio run on a warm machine
definition) and the ratio reported is the median over rounds of (mode time / plain time in the
same round): a few percent is below this shared machine's run-to-run noise.

- ``plain``: send the workload, wait until idle.
- ``columns``: the same with a reader taking ``await sub.columns()`` until it has them all.
- ``batch``: a reader taking lists of ``Transition`` objects (``await sub.batch()``): what a
  reader pays to have a Python object per record.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest
import trio
from conftest import STATES, Workload, rows

import engine
from engine import open_runtime

ROUNDS = int(os.environ.get("BENCH_RECORD_ROUNDS", "9"))
MODES = ("plain", "columns", "batch")


def follow(impl: str, machine: engine.Machine, w: Workload, mode: str) -> float:
    """One run of the workload under ``open_runtime``; seconds from the first send until the
    runtime is idle and (with a reader) the reader holds every record."""

    async def main() -> float:
        async with open_runtime(implementation=impl) as rt:
            for i in range(w.n_agents):
                rt.spawn(machine, i)
            slots = rt.slots(range(w.n_agents))[w.agents]
            if mode == "plain":
                t0 = time.perf_counter()
                rt.send_many_slots(slots, w.events, w.priorities)
                await rt.wait_until_idle()
                return time.perf_counter() - t0
            got = 0
            async with rt.subscribe() as sub:
                t0 = time.perf_counter()
                rt.send_many_slots(slots, w.events, w.priorities)
                while got < w.size:
                    if mode == "columns":
                        batch = await sub.columns()
                        assert batch.gap is None
                        got += len(batch)
                    else:
                        got += len(await sub.batch())
                took = time.perf_counter() - t0
            assert got == w.size
            return took

    return trio.run(main)


@pytest.mark.benchmark(group="records")
def test_subscriber_overhead_interleaved(benchmark: Any, impl: str, workload: Workload) -> None:
    machine = engine.Machine("bench", list(STATES), STATES[0], rows())
    rounds = ROUNDS if impl == "native" else 1
    modes = MODES if impl == "native" else ("plain", "columns")
    times: dict[str, list[float]] = {mode: [] for mode in modes}

    def run() -> None:
        for _ in range(rounds):
            for mode in modes:
                times[mode].append(follow(impl, machine, workload, mode))

    benchmark.pedantic(run, rounds=1, iterations=1)
    base = np.array(times["plain"])
    for mode in modes:
        ratio = float(np.median(np.array(times[mode]) / base))
        benchmark.extra_info[f"ratio_{mode}"] = round(ratio, 3)
        benchmark.extra_info[f"median_s_{mode}"] = float(np.median(times[mode]))
    benchmark.extra_info.update(messages=workload.size, rounds=rounds)
