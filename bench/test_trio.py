"""The runtime under trio: latency of a hop and of a request, throughput, recording cost.

Peers in the same session: trio's memory channels between two tasks (what a hop or a round
trip costs with a task switch each way). Per-operation latencies are sampled with
``time.perf_counter_ns`` inside the loop and reported as p50/p99 in ``extra_info``; the
benchmark's own time is the whole run. Sizes: BENCH_HOPS (default 200 000), BENCH_REQUESTS
(default 20 000), and the shared table workload for throughput.
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
from engine import Machine, Reply, Send, Step, open_runtime

HOPS = int(os.environ.get("BENCH_HOPS", "200000"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "20000"))


def percentiles(stamps: list[int]) -> dict[str, float]:
    gaps = np.diff(np.asarray(stamps, dtype=np.int64)) / 1000.0
    return {**latency(gaps), "mean_us": round(float(gaps.mean()), 3)}


def latency(us: Any) -> dict[str, float]:
    """p50, p90, p99 and p99.9 of microsecond samples (what report.py plots), and how many."""
    out = {f"p{q}_us": round(float(np.percentile(us, q)), 3) for q in (50, 90, 99, 99.9)}
    return {**out, "samples": len(us)}


def pingpong(stamps: list[int], fresh: bool) -> Machine:
    """Two agents bounce one event with ``Send``; the handler stamps every hop."""
    m = Machine("pingpong", ["s"], "s", [], events=["ping"], unhandled="ignore")
    prebuilt = {"a": Step(actions=(Send("b", "ping"),)), "b": Step(actions=(Send("a", "ping"),))}
    clock = time.perf_counter_ns
    n = [0]

    @m.handler("s", "ping")
    def ping(ctx: Any, ev: Any) -> Step | None:
        i = n[0]
        stamps[i] = clock()
        n[0] = i + 1
        if i + 1 == len(stamps):
            return None
        if fresh:
            return Step(actions=[Send("b" if ctx.agent_id == "a" else "a", "ping")])
        return prebuilt[ctx.agent_id]

    return m


@pytest.mark.parametrize("actions", ["prebuilt", "fresh"])
@pytest.mark.benchmark(group="hop")
def test_engine_hop(benchmark: Any, impl: str, actions: str) -> None:
    stamps = [0] * HOPS

    def run() -> None:
        machine = pingpong(stamps, actions == "fresh")

        async def main() -> None:
            async with open_runtime(implementation=impl) as rt:
                rt.spawn(machine, "a")
                rt.spawn(machine, "b")
                rt.send_nowait("a", "ping")
                await rt.wait_until_idle()

        trio.run(main)

    benchmark.pedantic(run, rounds=3 if impl == "native" else 1, iterations=1)
    benchmark.extra_info.update(percentiles(stamps), messages=HOPS, system=impl, actions=actions)


@pytest.mark.benchmark(group="hop")
def test_peer_channel_hop(benchmark: Any) -> None:
    stamps = [0] * HOPS

    def run() -> None:
        async def main() -> None:
            a_send, a_recv = trio.open_memory_channel[int](0)
            b_send, b_recv = trio.open_memory_channel[int](0)
            clock = time.perf_counter_ns

            async def player(inbox: Any, outbox: Any) -> None:
                async for i in inbox:
                    stamps[i] = clock()
                    if i + 1 == HOPS:
                        await a_send.aclose()
                        return
                    await outbox.send(i + 1)

            async with trio.open_nursery() as n:
                n.start_soon(player, a_recv, b_send)
                n.start_soon(player, b_recv, a_send)
                await a_send.send(0)

        trio.run(main)

    benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info.update(percentiles(stamps), messages=HOPS, system="trio channels")


def rtt(samples: list[int]) -> dict[str, float]:
    return latency(np.asarray(samples, dtype=np.int64) / 1000.0)


@pytest.mark.benchmark(group="request")
def test_engine_request(benchmark: Any, impl: str) -> None:
    m = Machine("server", ["s"], "s", [], events=["get"], unhandled="ignore")
    m.handler("s", "get")(lambda ctx, ev: Step(actions=[Reply(ev.payload)]))
    samples: list[int] = []

    def run() -> None:
        samples.clear()

        async def main() -> None:
            clock = time.perf_counter_ns
            async with open_runtime(implementation=impl) as rt:
                rt.spawn(m, 0)
                for i in range(REQUESTS):
                    t = clock()
                    assert await rt.request(0, "get", i) == i
                    samples.append(clock() - t)

        trio.run(main)

    benchmark.pedantic(run, rounds=3 if impl == "native" else 1, iterations=1)
    benchmark.extra_info.update(rtt(samples), messages=REQUESTS, system=impl)


@pytest.mark.benchmark(group="request")
def test_peer_channel_roundtrip(benchmark: Any) -> None:
    samples: list[int] = []

    def run() -> None:
        samples.clear()

        async def main() -> None:
            ask_send, ask_recv = trio.open_memory_channel[int](0)
            answer_send, answer_recv = trio.open_memory_channel[int](0)
            clock = time.perf_counter_ns

            async def server() -> None:
                async for i in ask_recv:
                    await answer_send.send(i)

            async with trio.open_nursery() as n:
                n.start_soon(server)
                for i in range(REQUESTS):
                    t = clock()
                    await ask_send.send(i)
                    assert await answer_recv.receive() == i
                    samples.append(clock() - t)
                n.cancel_scope.cancel()

        trio.run(main)

    benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info.update(rtt(samples), messages=REQUESTS, system="trio channels")


def table_machine() -> Machine:
    return Machine("bench", list(STATES), STATES[0], rows())


THROUGHPUT_CASES = [
    ("native", "sync"),
    ("native", "open_runtime"),
    ("native", "open_runtime+subscriber"),
    ("python", "open_runtime"),
]


@pytest.mark.parametrize(("impl_name", "mode"), THROUGHPUT_CASES)
@pytest.mark.benchmark(group="trio-throughput")
def test_table_throughput_under_trio(
    benchmark: Any, impl_name: str, mode: str, workload: Workload
) -> None:
    impl = impl_name
    if impl == "native" and engine.hotpath.NO_EXTENSIONS:
        pytest.skip("ENGINE_NO_EXTENSIONS=1")
    machine = table_machine()
    drains: list[float] = []  # send + drain only, without set-up or trio start-up

    def run() -> int:
        clock = time.perf_counter
        if mode == "sync":
            rt = engine.Runtime(implementation=impl)
            for i in range(workload.n_agents):
                rt.spawn(machine, i)
            slots = rt.slots(range(workload.n_agents))[workload.agents]
            t0 = clock()
            rt.send_many_slots(slots, workload.events, workload.priorities)
            rt.run_until_idle()
            drains.append(clock() - t0)
            return int(rt.statistics().processed)

        async def main() -> int:
            async with open_runtime(implementation=impl) as rt:
                for i in range(workload.n_agents):
                    rt.spawn(machine, i)
                slots = rt.slots(range(workload.n_agents))[workload.agents]
                if mode == "open_runtime+subscriber":
                    async with rt.subscribe():  # attached, not read: the ring overwrites
                        t0 = clock()
                        rt.send_many_slots(slots, workload.events, workload.priorities)
                        await rt.wait_until_idle()
                        drains.append(clock() - t0)
                else:
                    t0 = clock()
                    rt.send_many_slots(slots, workload.events, workload.priorities)
                    await rt.wait_until_idle()
                    drains.append(clock() - t0)
                return int(rt.statistics().processed)

        return trio.run(main)

    processed = benchmark.pedantic(run, rounds=5 if impl == "native" else 1, iterations=1)
    assert processed == workload.size
    benchmark.extra_info.update(
        messages=workload.size, agents=workload.n_agents, drain_median_s=float(np.median(drains))
    )
