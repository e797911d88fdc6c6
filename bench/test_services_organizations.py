"""The organization layer's overhead: ``execute_agent`` against the engine calls it makes.

``test_long_running_execution_against_the_engine`` (the headline: the layer's default path,
``add_agent(long_running=True)``): each execution wakes the agent's memory from the store,
requests, and hibernates it again; the raw side does the same with ``rt.wake`` +
``rt.request`` + ``rt.hibernate`` on another agent of the same organization and package, in
alternating blocks of ``MEMORY_BLOCK`` in one trio run, on a ``MemoryStore`` and on SQLite;
``extra_info`` has the median time per execution of each, ``overhead`` = median over blocks
of (layer / raw) (target <= 2) and the medians of the restore, execute and store stages as
``ExecutionResult`` times them.

``test_resident_execution_against_request``: executions of a resident agent (not
long-running: nothing restored or stored) against the raw ``rt.request``, in alternating
blocks of ``BLOCK``.

``test_many_organizations_with_the_line``: ``ORGS`` organizations (``max_queue_size=2``,
long-running agents), ``PER_ORG`` executions each started at once, so most wait in their
organization's line; the raw side sends the same executions with the same bound (a
``trio.Semaphore(2)`` per organization around ``rt.wake`` + ``rt.request`` +
``rt.hibernate``, which is what a user of the raw engine writes for the limit); each side in
its own runtime. ``extra_info`` has the time per execution of each and ``overhead``.

Sizes: BENCH_ORG_EXECUTIONS (default 20 000), BENCH_ORG_MEMORY (default 2 000), BENCH_ORGS
(default 200) and BENCH_ORG_PER_ORG (default 20).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from engine import AgentBusyError, Machine, Reply, Step
from engine.services.organizations import ResourceLimits, open_organizations
from engine.store import MemoryStore, SQLiteStore

EXECUTIONS = int(os.environ.get("BENCH_ORG_EXECUTIONS", "20000"))
MEMORY = int(os.environ.get("BENCH_ORG_MEMORY", "2000"))
ORGS = int(os.environ.get("BENCH_ORGS", "200"))
PER_ORG = int(os.environ.get("BENCH_ORG_PER_ORG", "20"))
BLOCK = 500
MEMORY_BLOCK = 100


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


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
@pytest.mark.benchmark(group="services-organizations")
def test_long_running_execution_against_the_engine(
    benchmark: Any, impl: str, store_kind: str, tmp_path: Path
) -> None:
    times: dict[str, list[float]] = {"raw": [], "layer": []}
    stages: dict[str, list[float]] = {"restore": [], "execute": [], "store": []}
    blocks = max(1, MEMORY // MEMORY_BLOCK)

    def run() -> None:
        store = MemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "o.db")

        async def main() -> None:
            async with open_organizations(
                store=store, implementation=impl, metrics_interval=None
            ) as orgs:
                rt = orgs.runtime
                orgs.register_package(package(), data=lambda: {"n": 0})
                orgs.create("o")
                orgs.deploy("o", "bench")
                orgs.add_agent("o", "layer", "bench")  # long-running: the default
                orgs.add_agent("o", "raw", "bench")
                rt.hibernate(("o", "layer"))
                rt.hibernate(("o", "raw"))
                raw = ("o", "raw")
                execute, wake = orgs.execute_agent, rt.wake
                request, hibernate = rt.request, rt.hibernate
                clock = time.perf_counter
                for _ in range(blocks):
                    t0 = clock()
                    for i in range(MEMORY_BLOCK):
                        wake(raw)
                        await request(raw, "execute", i)
                        hibernate(raw)
                    t1 = clock()
                    for i in range(MEMORY_BLOCK):
                        result = await execute("o", "layer", i)
                        assert result.memory == "restored"
                        assert result.stored
                        for stage, values in stages.items():
                            values.append(getattr(result, stage))
                    t2 = clock()
                    times["raw"].append(t1 - t0)
                    times["layer"].append(t2 - t1)
                assert orgs.memory("o", "layer") == {"n": blocks * MEMORY_BLOCK}

        trio.run(main)

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = np.asarray(times["layer"]) / np.asarray(times["raw"])
    benchmark.extra_info.update(
        raw_us=medians(times["raw"], MEMORY_BLOCK),
        layer_us=medians(times["layer"], MEMORY_BLOCK),
        overhead=round(float(np.median(ratio)), 3),
        target=2.0,
        **{f"{stage}_us": medians(v, 1) for stage, v in stages.items()},
        executions=blocks * MEMORY_BLOCK,
        store=store_kind,
        system=impl,
    )


@pytest.mark.benchmark(group="services-organizations-resident")
def test_resident_execution_against_request(benchmark: Any, impl: str) -> None:
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


QUEUE = 2


@pytest.mark.benchmark(group="services-organizations-line")
def test_many_organizations_with_the_line(benchmark: Any, impl: str) -> None:
    seconds: dict[str, float] = {}
    waited = [0]

    async def setup(orgs: Any) -> None:
        orgs.register_package(package(), data=lambda: {"n": 0})
        for k in range(ORGS):
            orgs.create(f"o{k}", ResourceLimits(max_queue_size=QUEUE))
            orgs.deploy(f"o{k}", "bench")
            orgs.add_agent(f"o{k}", "a", "bench")
            orgs.store_memory(f"o{k}", "a")

    async def layer() -> None:
        async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
            await setup(orgs)

            async def one(org: str, i: int) -> None:
                waited[0] += (await orgs.execute_agent(org, "a", i)).queued

            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for k in range(ORGS):
                    for i in range(PER_ORG):
                        nursery.start_soon(one, f"o{k}", i)
            seconds["layer"] = time.perf_counter() - t0
            assert orgs.memory("o0", "a") == {"n": PER_ORG}

    async def raw() -> None:
        async with open_organizations(implementation=impl, metrics_interval=None) as orgs:
            await setup(orgs)
            rt = orgs.runtime
            bounds = {f"o{k}": trio.Semaphore(QUEUE) for k in range(ORGS)}

            async def one(org: str, i: int) -> None:
                eid = (org, "a")
                async with bounds[org]:
                    rt.wake(eid)
                    await rt.request(eid, "execute", i)
                    with contextlib.suppress(AgentBusyError):  # more mail: the last stores it
                        rt.hibernate(eid)

            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for k in range(ORGS):
                    for i in range(PER_ORG):
                        nursery.start_soon(one, f"o{k}", i)
            seconds["raw"] = time.perf_counter() - t0

    def run() -> None:
        trio.run(raw)
        trio.run(layer)

    benchmark.pedantic(run, rounds=1, iterations=1)
    n = ORGS * PER_ORG
    assert waited[0] > 0  # the line was used
    benchmark.extra_info.update(
        raw_us=round(seconds["raw"] / n * 1e6, 3),
        layer_us=round(seconds["layer"] / n * 1e6, 3),
        overhead=round(seconds["layer"] / seconds["raw"], 3),
        target=2.0,
        executions=n,
        organizations=ORGS,
        waited_in_the_line=waited[0],
        system=impl,
    )
