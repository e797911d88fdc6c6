"""Idle agent memory: RSS growth of a fresh process that spawns N agents with integer ids.

Each measurement runs in its own interpreter, so nothing else the session allocated counts.
The agent's returned handle is dropped (what stays is what the runtime keeps). Figures go to
``extra_info["bytes_per_agent"]``; `make bench` sizes are 10**5 and 10**6 (transitions, at
~14 KB per agent, only to 10**5), `make test` uses BENCH_MEMORY_AGENTS=10000.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
SIZES = [int(n) for n in os.environ.get("BENCH_MEMORY_AGENTS", "100000,1000000").split(",")]

SCRIPT = """
import gc, json, sys
sys.path.insert(0, {here!r})

def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

peer, n = sys.argv[1], int(sys.argv[2])
if peer in ("native", "python"):
    import engine
    from conftest import STATES, rows
    machine = engine.Machine("bench", list(STATES), STATES[0], rows())
    rt = engine.Runtime(implementation=peer)
    rt.spawn(machine, -1)  # first use: registration and first allocations happen before
    make = lambda i: rt.spawn(machine, i)
elif peer == "automat":
    from _peers import Core, automat_factory
    factory = automat_factory(False)
    keep = []
    make = lambda i: keep.append(factory(Core()))
else:
    from _peers import transitions_models
    keep = []
    transitions_models(1)
    make = lambda i: keep.extend(transitions_models(1))
gc.collect()
before = rss()
for i in range(n):
    make(i)
gc.collect()
print(json.dumps({{"bytes_per_agent": (rss() - before) / n}}))
"""


def measure(peer: str, n: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(here=str(HERE)), peer, str(n)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1200,
    )
    return float(json.loads(done.stdout)["bytes_per_agent"])


CASES = [(peer, n) for peer in ("native", "python", "automat") for n in SIZES] + [
    ("transitions", n) for n in SIZES if n <= 100_000
]


@pytest.mark.parametrize(("peer", "n"), CASES)
@pytest.mark.benchmark(group="memory")
def test_idle_agent_memory(benchmark: Any, peer: str, n: int) -> None:
    result: dict[str, float] = {}

    def run() -> None:
        result["bytes"] = measure(peer, n)

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert result["bytes"] > 0
    benchmark.extra_info.update(peer=peer, agents=n, bytes_per_agent=round(result["bytes"], 1))
