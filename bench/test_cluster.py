"""engine.cluster: two shards against one on this machine, and the cross-shard hop.

Group ``cluster`` (a real local Ray, ``ray.init(num_cpus=2)``), ratios taken inside one run:

* ``table``: the headline workload (the 3-state x 4-event table machine of conftest, no
  handler) with BENCH_CLUSTER_MESSAGES messages spread over 1000 agents. Each shard makes
  the messages for its own agents (``on_each_shard``: no driver in the way) and drains
  them; timed from the call to the cluster settling (``wait_until_idle``). 2 shards against 1
  (target >= 1.5x), and 1 shard against a plain runtime in this process (what the shard
  costs).
* ``hops``: chains of ``hop`` messages between 1000 agents, each step a Python handler that
  sends the next hop: to a peer on the same shard, or, every 10th step of an agent, to a peer
  on the other shard (10 % cross-shard traffic under 2 shards; the same ids and sends on 1
  shard are all local). 2 shards against 1 (target >= 1.3x), and at 0 % for reference.
* ``latency``: one ping-pong between an agent on each shard, BENCH_CLUSTER_PINGS round
  trips; each hop carries its send time (``time.monotonic_ns``: one clock for every
  process of the machine) and the receiver keeps the difference: p50 / p99 of a hop.

Each comparison runs BENCH_CLUSTER_ROUNDS rounds, the modes in turn, and reports the median
of the per-round ratios in ``extra_info``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import EVENTS, STATES, rows

import engine
from engine import Send, Step
from engine.cluster import Cluster, Routes

pytestmark = pytest.mark.cluster

MESSAGES = int(os.environ.get("BENCH_CLUSTER_MESSAGES", "16000000"))
HOPS = int(os.environ.get("BENCH_CLUSTER_HOPS", "300"))
PINGS = int(os.environ.get("BENCH_CLUSTER_PINGS", "2000"))
ROUNDS = int(os.environ.get("BENCH_CLUSTER_ROUNDS", "3"))
AGENTS = 1000


def setup() -> list[engine.Machine]:
    table = engine.Machine("table", list(STATES), STATES[0], rows(), events=list(EVENTS))
    hopper = engine.Machine("hopper", ["on"], "on", [], events=["hop", "ping"])

    @hopper.handler("on", "hop")
    def hop(ctx: Any, ev: Any) -> Step | None:
        local, remote, every, count = ctx.data
        count += 1
        ctx.data = (local, remote, every, count)
        left = ev.payload
        if left <= 0:
            return None
        target = remote if every and count % every == 0 else local
        return Step(actions=[Send(target, "hop", left - 1)])

    @hopper.handler("on", "ping")
    def ping(ctx: Any, ev: Any) -> Step | None:
        sent, left = ev.payload
        got = ctx.data[3]
        got.append(time.monotonic_ns() - sent)
        if left <= 0:
            return None
        return Step(actions=[Send(ctx.data[1], "ping", (time.monotonic_ns(), left - 1))])

    return [table, hopper]


def load_table(rt: Any, n: int, seed: int) -> int:
    """On a shard: ``n`` table messages to its own agents (uniform), queued at once."""
    ids = sorted(a for a in rt.agent_ids() if isinstance(a, str) and a.startswith("t"))
    slots = rt.slots(ids)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(slots), n, dtype=np.int64)
    events = rng.integers(0, len(EVENTS), n, dtype=np.int32)
    rt.send_many_slots(slots[pick], events, np.ones(n, dtype=np.int32))
    return n


@pytest.fixture(scope="module")
def ray_running() -> Iterator[Any]:
    import ray
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.cloudpickle.register_pickle_by_value(sys.modules["conftest"])
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)  # fmt: skip
    yield ray
    if started:
        ray.shutdown()


def clusters(shards: tuple[int, ...]) -> dict[int, Cluster]:
    return {n: Cluster(setup, shards=n, num_cpus=0) for n in shards}


def close(cs: dict[int, Cluster]) -> None:
    for c in cs.values():
        c.close()


def table_round(c: Cluster, n: int, seed: int) -> float:
    per = n // len(c.shards)
    t0 = time.perf_counter()
    c.on_each_shard(load_table, per, seed)
    c.wait_until_idle(timeout=600, poll=0.001)
    return time.perf_counter() - t0


def test_cluster_table(benchmark: Any, ray_running: Any) -> None:
    cs = clusters((1, 2))
    ids = [f"t{i}" for i in range(AGENTS)]
    try:
        for c in cs.values():
            for agent_id in ids:
                c.spawn("table", agent_id)
        local = engine.Runtime()
        table = setup()[0]
        for agent_id in ids:
            local.spawn(table, agent_id)
        times: dict[str, list[float]] = {"plain": [], "1 shard": [], "2 shards": []}

        def run() -> None:
            for r in range(ROUNDS):
                t0 = time.perf_counter()
                load_table(local, MESSAGES, r)
                local.run_until_idle()
                times["plain"].append(time.perf_counter() - t0)
                times["1 shard"].append(table_round(cs[1], MESSAGES, r))
                times["2 shards"].append(table_round(cs[2], MESSAGES, r))

        benchmark.pedantic(run, rounds=1, iterations=1)
        report(benchmark, times, MESSAGES)
        assert cs[2].statistics().processed == cs[1].statistics().processed
    finally:
        close(cs)


def spawn_hoppers(c: Cluster, every: int) -> list[str]:
    """1000 hoppers; each one's local peer is on its shard under 2 shards, its remote peer
    on the other (the same ids on any cluster, so the work is the same)."""
    two = Routes([0, 1])
    ids = [f"h{i}" for i in range(AGENTS)]
    by = {0: [a for a in ids if two(a) == 0], 1: [a for a in ids if two(a) == 1]}
    for agent_id in ids:
        mine, other = by[two(agent_id)], by[1 - two(agent_id)]
        k = mine.index(agent_id)
        local, remote = mine[(k + 1) % len(mine)], other[k % len(other)]
        c.spawn("hopper", agent_id, (local, remote, every, 0))
    return ids


def hops_round(c: Cluster, ids: list[str]) -> float:
    t0 = time.perf_counter()
    c.send_many(ids, ["hop"] * len(ids), payloads=[HOPS] * len(ids))
    c.wait_until_idle(timeout=600, poll=0.001)
    return time.perf_counter() - t0


@pytest.mark.parametrize("every", [10, 0], ids=["10pct", "0pct"])
def test_cluster_hops(benchmark: Any, ray_running: Any, every: int) -> None:
    cs = clusters((1, 2))
    try:
        ids = {n: spawn_hoppers(c, every) for n, c in cs.items()}
        times: dict[str, list[float]] = {"1 shard": [], "2 shards": []}

        def run() -> None:
            for _ in range(ROUNDS):
                times["1 shard"].append(hops_round(cs[1], ids[1]))
                times["2 shards"].append(hops_round(cs[2], ids[2]))

        benchmark.pedantic(run, rounds=1, iterations=1)
        report(benchmark, times, AGENTS * (HOPS + 1))
        assert cs[2].statistics().processed == cs[1].statistics().processed
        assert cs[2].dead_letters() == []
    finally:
        close(cs)


def test_cluster_hop_latency(benchmark: Any, ray_running: Any) -> None:
    c = Cluster(setup, shards=2, num_cpus=0)
    try:
        two = Routes([0, 1])
        a = next(f"p{i}" for i in range(100) if two(f"p{i}") == 0)
        b = next(f"p{i}" for i in range(100) if two(f"p{i}") == 1)
        c.spawn("hopper", a, (a, b, 0, []))
        c.spawn("hopper", b, (b, a, 0, []))

        def run() -> None:
            c.send(a, "ping", (time.monotonic_ns(), 2 * PINGS))
            c.wait_until_idle(timeout=600)

        benchmark.pedantic(run, rounds=1, iterations=1)
        hops = np.array(c.data(a)[3][1:] + c.data(b)[3], dtype=np.float64) / 1e3
        assert len(hops) == 2 * PINGS
        benchmark.extra_info.update(
            hops=len(hops),
            p50_us=round(float(np.percentile(hops, 50)), 1),
            p99_us=round(float(np.percentile(hops, 99)), 1),
            max_us=round(float(hops.max()), 1),
        )
    finally:
        c.close()


def report(benchmark: Any, times: dict[str, list[float]], messages: int) -> None:
    info = benchmark.extra_info
    for mode, ts in times.items():
        info[f"{mode} msg/s"] = round(messages / float(np.median(ts)))
    one = np.array(times["1 shard"])
    info["2 shards / 1 shard"] = round(float(np.median(one / np.array(times["2 shards"]))), 3)
    if "plain" in times:
        info["1 shard / plain"] = round(float(np.median(np.array(times["plain"]) / one)), 3)
