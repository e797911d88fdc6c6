"""Group ``upgrade``: the time ``Runtime.upgrade`` takes to move ``BENCH_UPGRADE_AGENTS``
(default 10**5) idle agents of a small machine to its next version (states renamed through a
mapping, data migrated by a function), on both hot paths. A fresh runtime is built before
each round, outside the timing; every round is checked (every agent on the new machine, in
the mapped state, with migrated data)."""

from __future__ import annotations

import os
from typing import Any

import pytest

import engine

AGENTS = int(os.environ.get("BENCH_UPGRADE_AGENTS", "100000"))
V1 = engine.Machine("meter", ["idle", "on"], "idle", [("idle", "on", "on")], version=1)
V2 = engine.Machine("meter", ["off", "running"], "off", [("off", "on", "running")], version=2)
STATES = {"idle": "off", "on": "running"}


def _migrate(state: str, data: Any) -> Any:
    return {"reading": data, "was": state}


@pytest.mark.parametrize("impl", ["native", "python"])
def test_upgrade(benchmark: Any, impl: str) -> None:
    benchmark.group = "upgrade"

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        rt = engine.Runtime(implementation=impl)
        for i in range(AGENTS):
            rt.spawn(V1, i, i % 97)
        return (rt,), {}

    def timed(rt: engine.Runtime) -> engine.Runtime:
        rt.upgrade(V1, V2, states=STATES, migrate=_migrate)
        return rt

    rt = benchmark.pedantic(timed, setup=setup, rounds=3 if impl == "native" else 1)
    assert all(rt.machine(i) is V2 for i in range(0, AGENTS, 101))
    assert rt.data(5) == {"reading": 5, "was": "idle"}
    assert rt.state(5) == "off"
    benchmark.extra_info.update(system="engine", implementation=impl, agents=AGENTS)
