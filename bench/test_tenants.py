"""Tenants: what fair scheduling costs, how fair it is, and what a flood does to a quiet tenant.

``tenants`` (targets: one tenant <= 3 % over no tenancy, ten tenants <= 10 %): the table
workload with every agent in one added tenant (the fair drain loop, one backlogged tenant),
and spread over ten tenants of equal weight, against the same workload on a runtime that
never had a tenant (the plain drain loop). Measured interleaved in one process, as
``test_metrics.py`` does: each round runs every mode once on warm runtimes, and the overhead
reported is the median over rounds of (mode time / plain time in the same round).

``tenants-fairness``: three backlogged tenants of weights 1:2:3; ``fairness_error`` is the
largest relative distance of a processed share from its weight's share, over the first half
of the messages.

``tenants-flood``: BENCH_MESSAGES messages flood one tenant while a quiet tenant sends one
message after every dispatch batch (4 096 messages, as under ``open_runtime``); reported are
the quiet messages' time in mailbox (p50/p99, µs; from just before ``send_nowait`` to the
start of their handler), the same with no flood (the fixed part: a dispatcher call and a
Python handler), and one scheduling round's time (the flood's quantum at the measured
per-message cost), which bounds what the flood adds.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest
from conftest import STATES, Workload, interleaved, rows

import engine

ROUNDS = int(os.environ.get("BENCH_TENANT_ROUNDS", "15"))
TENANTS = 10


def _runtime(impl: str, mode: str, n_agents: int) -> engine.Runtime:
    machine = engine.Machine("bench", list(STATES), STATES[0], rows())
    rt = engine.Runtime(implementation=impl)
    names = {"off": [None], "one tenant": ["t"], "ten tenants": [f"t{k}" for k in range(TENANTS)]}
    for name in names[mode]:
        if name is not None:
            rt.add_tenant(name)
    for i in range(n_agents):
        rt.spawn(machine, i, tenant=names[mode][i % len(names[mode])])
    return rt


@pytest.mark.benchmark(group="tenants")
def test_tenancy_overhead_interleaved(benchmark: Any, impl: str, workload: Workload) -> None:
    modes = ("off", "one tenant", "ten tenants")
    runtimes = {mode: _runtime(impl, mode, workload.n_agents) for mode in modes}
    slots = runtimes["off"].slots(range(workload.n_agents))[workload.agents]
    rounds = ROUNDS if impl == "native" else 1
    interleaved(benchmark, runtimes, slots, workload, rounds)
    ten = runtimes["ten tenants"].tenant_statistics()
    assert sum(t.processed for t in ten) == rounds * workload.size


@pytest.mark.benchmark(group="tenants-fairness")
def test_weighted_shares(benchmark: Any, impl: str, workload: Workload) -> None:
    n = workload.size
    weights = {"one": 1, "two": 2, "three": 3}
    rt = engine.Runtime(implementation=impl)
    machine = engine.Machine("bench", list(STATES), STATES[0], rows())
    for name, weight in weights.items():
        rt.add_tenant(name, weight=weight)
        ids = [(name, i) for i in range(100)]
        for agent_id in ids:
            rt.spawn(machine, agent_id, tenant=name)
        rt.send_many_slots(np.resize(rt.slots(ids), n), np.resize(workload.events, n))

    def run() -> None:
        rt.run(n * 3 // 2)  # half of everything: every tenant stays backlogged

    benchmark.pedantic(run, rounds=1, iterations=1)
    taken = {t.name: t.processed for t in rt.tenant_statistics() if t.name in weights}
    total = sum(taken.values())
    assert total == n * 3 // 2
    error = max(abs(taken[k] / total - w / 6) / (w / 6) for k, w in weights.items())
    benchmark.extra_info.update(
        fairness_error=round(error, 6), shares={k: v / total for k, v in taken.items()}
    )


@pytest.mark.benchmark(group="tenants-flood")
def test_quiet_tenant_under_a_flood(benchmark: Any, impl: str, workload: Workload) -> None:
    n = workload.size
    rt = engine.Runtime(implementation=impl)
    machine = engine.Machine("bench", list(STATES), STATES[0], rows())
    waits: list[float] = []
    quiet = engine.Machine("quiet", ["idle"], "idle", [("idle", "go", None)])

    @quiet.handler("idle", "go")
    def go(ctx: Any, ev: Any) -> None:
        waits.append(time.perf_counter() - ev.payload)

    rt.add_tenant("flood")
    rt.add_tenant("quiet")
    ids = list(range(workload.n_agents))
    for i in ids:
        rt.spawn(machine, i, tenant="flood")
    rt.spawn(quiet, "q", tenant="quiet")
    for _ in range(200):  # the same sends and runs with no flood: the fixed part of a wait
        rt.send_nowait("q", "go", time.perf_counter())
        rt.run(4096)
    alone = np.array(waits) * 1e6
    waits.clear()
    rt.send_many_slots(rt.slots(ids)[workload.agents], workload.events, workload.priorities)
    batches = 0

    def run() -> None:
        nonlocal batches
        t0 = time.perf_counter()
        while rt._d.tenant_load(1)[1]:  # the flood still queued (tenant index 1)
            rt.run(4096)
            batches += 1
            rt.send_nowait("q", "go", time.perf_counter())
        rt.run_until_idle()
        benchmark.extra_info["per_message_us"] = (time.perf_counter() - t0) / n * 1e6

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert len(waits) == batches
    us = np.array(waits) * 1e6
    per_message = benchmark.extra_info["per_message_us"]
    benchmark.extra_info.update(
        quiet_wait_p50_us=float(np.percentile(us, 50)),
        quiet_wait_p99_us=float(np.percentile(us, 99)),
        quiet_wait_max_us=float(us.max()),
        alone_wait_p50_us=float(np.percentile(alone, 50)),
        alone_wait_p99_us=float(np.percentile(alone, 99)),
        round_us=64 * per_message,  # the flood's quantum (weight 1 x budget 64)
        quiet_messages=len(us),
    )
