"""The organization layer's overhead: ``execute_agent`` against the engine calls it makes.

``test_execute_agent_against_request``: executions of a resident agent (not long-running, so
no memory is restored or stored) through ``orgs.execute_agent``, and the raw
``rt.request`` of another agent of the same organization and package, in alternating blocks
of ``BLOCK`` in one trio run, so both see the same machine state; ``extra_info`` has the
median time per call of each and ``overhead`` = median over blocks of (layer / raw) (target
<= 2). ``test_memory_restore_and_store``: a long-running agent, whose memory is woken before
and hibernated after each execution, on a ``MemoryStore`` and on SQLite, against the raw
``rt.wake`` + ``rt.request`` + ``rt.hibernate``; ``extra_info`` has the medians of the
restore and store stages as ``ExecutionResult`` times them. Sizes: BENCH_ORG_EXECUTIONS
(default 20 000) and BENCH_ORG_MEMORY (default 2 000).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from engine import Machine, Reply, Step
from engine.services.organizations import open_organizations
from engine.store import MemoryStore, SQLiteStore

EXECUTIONS = int(os.environ.get("BENCH_ORG_EXECUTIONS", "20000"))
MEMORY = int(os.environ.get("BENCH_ORG_MEMORY", "2000"))
BLOCK = 500


def package() -> Machine:
    m = Machine("bench", ["s"], "s", [], events=["execute"])

    @m.handler("s", "execute")
    def execute(ctx: Any, ev: Any) -> Step:
        if ctx.data is not None:
            ctx.data["n"] += 1
        return Step(actions=[Reply(ev.payload)])

    return m


def medians(seconds: list[float], per: int) -> float:
    return round(float(np.median(np.asarray(seconds))) / per * 1e6, 3)


@pytest.mark.benchmark(group="services-organizations")
def test_execute_agent_against_request(benchmark: Any, impl: str) -> None:
    times: dict[str, list[float]] = {"raw": [], "layer": []}
    blocks = max(1, EXECUTIONS // BLOCK)

    def run() -> None:
        async def main() -> None:
            async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
                orgs.register_package(package())
                orgs.create("o")
                orgs.deploy("o", "bench")
                orgs.add_agent("o", "layer", "bench", long_running=False)
                orgs.add_agent("o", "raw", "bench", long_running=False)
                request, execute, raw = orgs.runtime.request, orgs.execute_agent, ("o", "raw")
                clock = time.perf_counter
                for _ in range(blocks):
                    t0 = clock()
                    for i in range(BLOCK):
                        await request(raw, "execute", i)
                    t1 = clock()
                    for i in range(BLOCK):
                        await execute("o", "layer", i)
                    t2 = clock()
                    times["raw"].append(t1 - t0)
                    times["layer"].append(t2 - t1)
                assert orgs.metrics("o").executions == blocks * BLOCK

        trio.run(main)

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = np.asarray(times["layer"]) / np.asarray(times["raw"])
    benchmark.extra_info.update(
        raw_us=medians(times["raw"], BLOCK),
        layer_us=medians(times["layer"], BLOCK),
        overhead=round(float(np.median(ratio)), 3),
        target=2.0,
        executions=blocks * BLOCK,
        system=impl,
    )


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
@pytest.mark.benchmark(group="services-organizations-memory")
def test_memory_restore_and_store(
    benchmark: Any, impl: str, store_kind: str, tmp_path: Path
) -> None:
    times: dict[str, list[float]] = {"raw": [], "layer": []}
    stages: dict[str, list[float]] = {"restore": [], "store": [], "execute": []}

    def run() -> None:
        store = MemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "o.db")

        async def main() -> None:
            async with open_organizations(
                store=store, implementation=impl, metrics_interval=None
            ) as orgs:
                rt = orgs.runtime
                orgs.register_package(package())
                orgs.create("o")
                orgs.deploy("o", "bench")
                orgs.add_agent("o", "layer", "bench", data={"n": 0})
                orgs.add_agent("o", "raw", "bench", data={"n": 0})
                rt.hibernate(("o", "layer"))
                rt.hibernate(("o", "raw"))
                raw = ("o", "raw")
                clock = time.perf_counter
                for i in range(MEMORY):
                    t0 = clock()
                    rt.wake(raw)
                    await rt.request(raw, "execute", i)
                    rt.hibernate(raw)
                    t1 = clock()
                    result = await orgs.execute_agent("o", "layer", i)
                    t2 = clock()
                    assert result.memory == "restored"
                    assert result.stored
                    times["raw"].append(t1 - t0)
                    times["layer"].append(t2 - t1)
                    for stage in stages:
                        stages[stage].append(getattr(result, stage))
                assert orgs.memory("o", "layer") == {"n": MEMORY}

        trio.run(main)

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = np.asarray(times["layer"]) / np.asarray(times["raw"])
    benchmark.extra_info.update(
        raw_us=medians(times["raw"], 1),
        layer_us=medians(times["layer"], 1),
        overhead=round(float(np.median(ratio)), 3),
        **{f"{stage}_us": medians(v, 1) for stage, v in stages.items()},
        executions=MEMORY,
        store=store_kind,
        system=impl,
    )
