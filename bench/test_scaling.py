"""Throughput against population: the cost of a message at 10**2 ... 10**6 agents.

The workload is the shared table machine (``conftest``) under steady load: BENCH_SCALING_MESSAGES
(default 2**20) messages, each to a uniformly random agent with a uniform event and priority,
arrive in batches of ``BATCH`` (4096); each batch is queued with one ``send_many_slots`` call
and drained with ``run_until_idle`` before the next, as a host feeding the runtime would. The
agents are spawned once per population (outside the timing) and reused by every round: every
round drains what it sends, so it starts from idle agents.

What changes with the population is locality and batching, not the work. At 10**2 agents a
batch gives each agent about 40 messages, which it takes in one turn; at 10**6 almost every
message is an agent's only one (a mailbox taken from the pool, a turn, the mailbox given back)
and its agent record is a cache miss (48 bytes in a 48 MB array). The issue's target is
throughput at 10**6 at least half that at 10**2; ``bench/report.py`` plots the curve, and the
session prints the ratios.

Sizes: BENCH_SCALING_AGENTS (default ``100,1000,10000,100000,1000000``); `make test` runs a
small smoke version. The twin runs the same populations with a quarter of the messages.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from conftest import SEED, STATES, rows

import engine

BATCH = 4096
POPULATIONS = [
    int(n)
    for n in os.environ.get("BENCH_SCALING_AGENTS", "100,1000,10000,100000,1000000").split(",")
]
MESSAGES = int(os.environ.get("BENCH_SCALING_MESSAGES", str(2**20)))
ROUNDS = {"native": 5, "python": 1}

SCALING_RESULTS = pytest.StashKey[dict[tuple[str, int], float]]()


def batches(rt: engine.Runtime, n_agents: int, messages: int) -> list[tuple[Any, Any, Any]]:
    """The seeded messages, as (slots, events, priorities) arrays of ``BATCH`` messages."""
    rng = np.random.default_rng(SEED)
    slots = rt.slots(range(n_agents))[rng.integers(0, n_agents, messages)]
    events = rng.integers(0, 4, messages, dtype=np.int32)
    priorities = rng.integers(0, 4, messages, dtype=np.int32)
    return [
        (slots[i : i + BATCH], events[i : i + BATCH], priorities[i : i + BATCH])
        for i in range(0, messages, BATCH)
    ]


def run_batches(rt: engine.Runtime, work: list[tuple[Any, Any, Any]]) -> int:
    """Queue and drain each batch in turn; return how many messages were processed."""
    done = 0
    for slots, events, priorities in work:
        rt.send_many_slots(slots, events, priorities)
        done += rt.run_until_idle()
    return done


@pytest.mark.parametrize("n_agents", POPULATIONS, ids=lambda n: f"{n:.0e}".replace("+0", ""))
def test_scaling(benchmark: Any, impl: str, n_agents: int, pytestconfig: pytest.Config) -> None:
    messages = MESSAGES if impl == "native" else MESSAGES // 4
    machine = engine.Machine("bench", list(STATES), STATES[0], rows())
    rt = engine.Runtime(implementation=impl)
    for i in range(n_agents):
        rt.spawn(machine, i)
    work = batches(rt, n_agents, messages)
    benchmark.group = "scaling"
    benchmark.extra_info.update(agents=n_agents, messages=messages, impl=impl, batch=BATCH)
    done = benchmark.pedantic(
        run_batches, args=(rt, work), rounds=ROUNDS[impl], iterations=1, warmup_rounds=0
    )
    assert done == messages
    assert int(rt.processed.sum()) == messages * (ROUNDS[impl] if benchmark.enabled else 1)
    if benchmark.enabled and benchmark.stats is not None:
        per_message = benchmark.stats.stats.min / messages
        benchmark.extra_info["ns_per_message"] = per_message * 1e9
        pytestconfig.stash.setdefault(SCALING_RESULTS, {})[(impl, n_agents)] = per_message


def scaling_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """ns/message and the ratio of each population's throughput to the smallest's (called
    from conftest's ``pytest_terminal_summary``)."""
    results = config.stash.get(SCALING_RESULTS, {})
    if not results:
        return
    tr = terminalreporter
    tr.section("throughput against population (best round, steady batches of 4096)")
    tr.write_line(f"{'hot path':<8} {'agents':>10} {'ns/msg':>8} {'msg/s':>12} {'vs smallest':>12}")
    for impl in ("native", "python"):
        sizes = sorted(n for i, n in results if i == impl)
        if not sizes:
            continue
        base = results[(impl, sizes[0])]
        for n in sizes:
            t = results[(impl, n)]
            tr.write_line(f"{impl:<8} {n:>10,} {t * 1e9:>8.1f} {1 / t:>12,.0f} {base / t:>12.2f}")
