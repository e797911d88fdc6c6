"""Group ``hibernate``: what a hibernated agent costs and how fast it comes back.

* ``memory``: in a fresh interpreter, 10**4 awake agents and ``BENCH_HIBERNATE_AGENTS``
  (default 10**6) more, all hibernated into a SQLite file by one sweep
  (``max_resident=10**4``). Two figures per hibernated agent: the resident set's growth
  from before the extra agents were spawned to after they were hibernated (this includes
  the dispatcher's slot capacity they leave behind, which woken agents reuse), and the bytes
  Python allocates for the hibernation's own bookkeeping (``tracemalloc`` over the sweep: the
  registry entry and id). Target: <= 32 B resident per hibernated agent.
* ``wake``: p50/p99 of the time a ``send_nowait`` to a hibernated small agent takes (a point
  read from SQLite, decode, restore, queue), one agent at a time among ``WAKE_AGENTS``
  hibernated ones. Target: p99 <= 200 us.
* ``working set``: ``BENCH_HIBERNATE_AGENTS`` agents, ``max_resident`` 1 % of them, and a
  stream of messages to a working set of 1 % (that drifts: every ``DRIFT`` messages a tenth of
  the set is replaced), under ``open_runtime`` with a sweep every 50 ms; throughput in
  messages per second, against the same stream with every agent resident.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

import engine
import engine.store as store

ROOT = Path(__file__).resolve().parent.parent
AGENTS = int(os.environ.get("BENCH_HIBERNATE_AGENTS", "1000000"))
WAKE_AGENTS = min(AGENTS, 20_000)
MESSAGES = int(os.environ.get("BENCH_HIBERNATE_MESSAGES", "200000"))
GROUP = "hibernate"
MACHINE = engine.Machine("flip", ["idle", "on"], "idle", [("idle", "on", "on"),
                                                           ("on", "on", "idle")])

SCRIPT = """
import gc, json, os, sys, tracemalloc
sys.path[:0] = [{root!r}]
import engine, engine.store as store

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

n, path = int(sys.argv[1]), sys.argv[2]
machine = engine.Machine("meter", ["idle", "on"], "idle", [("idle", "on", "on")])
rt = engine.Runtime()
hib = store.Hibernation(rt, store.SQLiteStore(path))
for i in range(10_000):
    rt.spawn(machine, i)
gc.collect()
before = rss()
for i in range(10_000, 10_000 + n):
    rt.spawn(machine, i)
tracemalloc.start()
mark = tracemalloc.get_traced_memory()[0]
slept = hib.sweep(max_resident=10_000)
kept = tracemalloc.get_traced_memory()[0] - mark
tracemalloc.stop()
gc.collect()
assert slept == n and len(rt) == 10_000, (slept, len(rt))
print(json.dumps({{"rss": (rss() - before) / n, "python": kept / n}}))
"""


def test_memory_of_hibernated_agents(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = GROUP
    script = SCRIPT.format(root=str(ROOT))

    def measure() -> dict[str, float]:
        done = subprocess.run(
            [sys.executable, "-c", script, str(AGENTS), str(tmp_path / "m.db")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    figures = benchmark.pedantic(measure, rounds=1)
    benchmark.extra_info.update(
        system="engine", mode="memory", agents=AGENTS,
        rss_bytes_per_agent=round(figures["rss"], 1),
        python_bytes_per_agent=round(figures["python"], 1),
    )  # fmt: skip
    print(f"\nhibernated agent: {figures['rss']:.0f} B resident growth, "
          f"{figures['python']:.0f} B of bookkeeping")


def test_wake_latency(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = GROUP
    rt = engine.Runtime()
    hib = store.Hibernation(rt, store.SQLiteStore(tmp_path / "w.db"))
    for i in range(WAKE_AGENTS):
        rt.spawn(MACHINE, i)
    hib.sweep(max_resident=0)
    order = np.random.default_rng(7).permutation(WAKE_AGENTS).tolist()
    samples: list[float] = []

    def wake_all() -> None:
        samples.clear()
        clock = time.perf_counter_ns
        send = rt.send_nowait
        for agent in order:
            t0 = clock()
            send(agent, "on")
            samples.append(clock() - t0)
        rt.run_until_idle()
        hib.sweep(max_resident=0)

    benchmark.pedantic(wake_all, rounds=1)
    assert hib.woken == WAKE_AGENTS
    p50, p99 = (float(np.percentile(samples, q)) / 1000 for q in (50, 99))
    benchmark.extra_info.update(
        system="engine", mode="wake", agents=WAKE_AGENTS, p50_us=round(p50, 1),
        p99_us=round(p99, 1),
    )  # fmt: skip
    print(f"\nwake on SQLite: p50 {p50:.0f} us, p99 {p99:.0f} us")


def _stream(seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    size = max(1, AGENTS // 100)
    working = rng.choice(AGENTS, size, replace=False)
    out = []
    drift = max(1, MESSAGES // 20)
    for start in range(0, MESSAGES, drift):
        out += working[rng.integers(0, size, min(drift, MESSAGES - start))].tolist()
        replace = rng.choice(size, max(1, size // 10), replace=False)
        working[replace] = rng.choice(AGENTS, len(replace), replace=False)
    return out


@pytest.mark.parametrize("mode", ["resident", "max_resident"])
def test_working_set(benchmark: Any, tmp_path: Path, mode: str) -> None:
    benchmark.group = GROUP
    stream = _stream(11)
    events = ["on"] * len(stream)
    files = iter(range(10**6))

    def run() -> engine.RuntimeStatistics:
        async def main() -> engine.RuntimeStatistics:
            kwargs: dict[str, Any] = {}
            if mode == "max_resident":
                path = tmp_path / f"ws{next(files)}.db"
                kwargs.update(store=store.SQLiteStore(path), max_resident=max(1, AGENTS // 100))
            async with engine.open_runtime(**kwargs) as rt:
                for i in range(AGENTS):
                    rt.spawn(MACHINE, i)
                if mode == "max_resident":
                    rt._sleeper.sweep(max_resident=AGENTS // 100)
                start = time.perf_counter()
                for k in range(0, len(stream), 1000):
                    rt.send_many(stream[k : k + 1000], events[k : k + 1000])
                    await rt.wait_until_idle()
                elapsed = time.perf_counter() - start
                stats = rt.statistics()
            benchmark.extra_info["seconds_streaming"] = elapsed
            return stats

        return trio.run(main)

    stats = benchmark.pedantic(run, rounds=1)
    assert stats.processed == len(stream)
    benchmark.extra_info.update(
        system="engine", mode=f"working set ({mode})", agents=AGENTS, messages=len(stream),
        woken=stats.woken, hibernated=stats.hibernated,
        messages_per_second=round(len(stream) / benchmark.extra_info["seconds_streaming"]),
    )  # fmt: skip
