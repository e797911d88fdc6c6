"""Idle agent memory: RSS growth of a fresh process that creates N idle agents.

Each measurement runs in its own interpreter (``subprocess``), so nothing the session
allocated counts. Everything an agent does not own is made before the first reading: imports,
the machine definition, the engine's ``Runtime`` (automat: the built factory; transitions: the
transition spec). Then ``gc.collect()``, resident set size from ``/proc/self/statm``, N agents,
``gc.collect()``, resident set size again; the figure is the growth divided by N.

* engine (``native``, ``python``): ``rt.spawn(machine, i)`` for integer ids ``0..N-1``; the
  returned ``AgentRef`` is dropped, so what stays is what the runtime keeps (the int id object
  included, since the runtime holds it).
* automat: one instance per agent, kept in a list.
* transitions: one model with its own ``transitions.Machine`` per agent, kept in a list.
* python-statemachine (``bench`` group): one ``StateMachine`` instance per agent, kept in a list.
* pykka (``bench`` group): one started ``ThreadingActor`` per agent (an OS thread each, idle in
  its inbox); stopped after the second reading.
* xoscar (``bench`` group): one actor per agent in an in-process actor pool (made, with its event
  loop, before the first reading).

Sizes: BENCH_MEMORY_AGENTS (default ``100000,1000000``) for the engine and automat; transitions
(about 14 KB per agent) at a tenth of each, i.e. 10**4 and 10**5 by default; xoscar at a tenth
of the smallest; python-statemachine (about 9 KB and 0.4 ms to build per agent) at a
hundredth of each, at least 1 000; pykka at 1 000 agents only (BENCH_MEMORY_THREADS), which is
already 1 000 OS threads. `make test` sets BENCH_MEMORY_AGENTS=10000. The benchmark's time is
the subprocess's wall time, which means little; the figure is
``extra_info["bytes_per_agent"]``, and the session prints a table.
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
ROOT = HERE.parent
SIZES = [int(n) for n in os.environ.get("BENCH_MEMORY_AGENTS", "100000,1000000").split(",")]
TRANSITIONS_SIZES = [max(1, n // 10) for n in SIZES]
STATEMACHINE_SIZES = sorted({max(1000, n // 100) for n in SIZES})
XOSCAR_SIZES = [max(1, min(SIZES) // 10)]
PYKKA_SIZES = [int(os.environ.get("BENCH_MEMORY_THREADS", "1000"))]
OPTIONAL = {"python-statemachine": "statemachine", "pykka": "pykka", "xoscar": "xoscar"}

SCRIPT = """
import gc, json, os, sys
sys.path[:0] = [{root!r}, {here!r}]

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

peer, n = sys.argv[1], int(sys.argv[2])
if peer in ("native", "python"):
    import engine
    from conftest import STATES, rows
    machine = engine.Machine("bench", list(STATES), STATES[0], rows())
    rt = engine.Runtime(implementation=peer)
    def create():
        for i in range(n):
            rt.spawn(machine, i)
    def count():
        return len(rt)
elif peer == "automat":
    from _peers import Core, automat_factory
    factory = automat_factory()
    keep = []
    def create():
        for _ in range(n):
            keep.append(factory(Core()))
    def count():
        return len(keep)
elif peer == "transitions":
    import transitions
    from _peers import Model, transitions_spec
    from conftest import STATES
    spec = transitions_spec()
    keep = []
    def create():
        for _ in range(n):
            model = Model()
            transitions.Machine(model=model, states=list(STATES), transitions=spec,
                                initial=STATES[0], auto_transitions=False)
            keep.append(model)
    def count():
        return len(keep)
elif peer == "python-statemachine":
    from _peers_extra import statemachine_class
    cls = statemachine_class()
    keep = []
    def create():
        for _ in range(n):
            keep.append(cls())
    def count():
        return len(keep)
elif peer == "pykka":
    import pykka
    from _peers_extra import pykka_actors
    keep = []
    def create():
        keep.extend(pykka_actors(n))
    def count():
        return sum(ref.is_alive() for ref in keep)
    def cleanup():
        pykka.ActorRegistry.stop_all()
elif peer == "xoscar":
    import asyncio
    import xoscar as xo
    from _peers_extra import xoscar_actor_class
    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(xo.create_actor_pool("127.0.0.1", n_process=0))
    cls = xoscar_actor_class()
    keep = []
    async def spawn():
        for i in range(n):
            keep.append(await xo.create_actor(cls, address=pool.external_address, uid=f"a{{i}}"))
    def create():
        loop.run_until_complete(spawn())
    def count():
        return len(keep)
    def cleanup():
        loop.run_until_complete(pool.stop())
else:
    raise SystemExit(f"unknown peer {{peer!r}}")
gc.collect()
before = rss()
create()
gc.collect()
after = rss()
assert count() == n, (count(), n)
if "cleanup" in globals():
    cleanup()
print(json.dumps({{"before": before, "after": after, "bytes_per_agent": (after - before) / n}}))
"""


def measure(peer: str, n: int) -> dict[str, float]:
    """Run the measurement in a fresh interpreter and return its readings."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(root=str(ROOT), here=str(HERE)), peer, str(n)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
        cwd=ROOT,
    )
    if done.returncode != 0:
        pytest.fail(f"measurement {peer} {n} failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


CASES = [
    *[(peer, n) for peer in ("native", "python", "automat") for n in SIZES],
    *[("transitions", n) for n in TRANSITIONS_SIZES],
    *[("python-statemachine", n) for n in STATEMACHINE_SIZES],
    *[("pykka", n) for n in PYKKA_SIZES],
    *[("xoscar", n) for n in XOSCAR_SIZES],
]


@pytest.mark.parametrize(("peer", "n"), CASES)
def test_idle_agent_memory(
    benchmark: Any, peer: str, n: int, memory_results: list[dict[str, Any]]
) -> None:
    benchmark.group = "memory"
    if peer in OPTIONAL:
        pytest.importorskip(OPTIONAL[peer], reason=f"{peer}: pip install --group bench")
    result = benchmark.pedantic(measure, args=(peer, n), rounds=1, iterations=1)
    per_agent = result["bytes_per_agent"]
    assert per_agent > 0
    info = {"peer": peer, "agents": n, "bytes_per_agent": round(per_agent, 1)}
    benchmark.extra_info.update(info, rss_before=result["before"], rss_after=result["after"])
    memory_results.append(info)
