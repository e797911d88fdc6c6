"""The shared workload: a 3-state x 4-event Mealy machine driven by a seeded message stream.

BENCH_MESSAGES (default 10**6) messages go to BENCH_AGENTS (default 1000) agents; per message
the agent, the event and the priority are uniform. `make test` runs every benchmark once at
20 000 messages with --benchmark-disable so none can rot; `make bench` runs them for real.
"""

from __future__ import annotations

import os

import attrs
import numpy as np
import numpy.typing as npt
import pytest

from engine import _hotpath

STATES = ("s0", "s1", "s2")
EVENTS = ("e0", "e1", "e2", "e3")


def dest(state: int, event: int) -> int:
    """The workload's transition function (every cell defined)."""
    return (state + event + 1) % len(STATES)


def rows() -> list[tuple[str, str, str, str]]:
    """Transition rows with an output per row."""
    return [
        (STATES[s], EVENTS[e], STATES[dest(s, e)], f"o{s}{e}")
        for s in range(len(STATES))
        for e in range(len(EVENTS))
    ]


@attrs.frozen
class Workload:
    agents: npt.NDArray[np.int32]
    events: npt.NDArray[np.int32]
    priorities: npt.NDArray[np.int32]
    n_agents: int

    @property
    def size(self) -> int:
        return len(self.agents)

    def final_states(self) -> list[int]:
        """Final state of each agent when messages are applied in arrival order."""
        state = [0] * self.n_agents
        for a, e in zip(self.agents.tolist(), self.events.tolist(), strict=True):
            state[a] = dest(state[a], e)
        return state


@pytest.fixture(scope="session")
def workload() -> Workload:
    n = int(os.environ.get("BENCH_MESSAGES", "1000000"))
    n_agents = int(os.environ.get("BENCH_AGENTS", "1000"))
    rng = np.random.default_rng(20261123)
    return Workload(
        rng.integers(0, n_agents, n, dtype=np.int32),
        rng.integers(0, len(EVENTS), n, dtype=np.int32),
        rng.integers(0, 4, n, dtype=np.int32),
        n_agents,
    )


@pytest.fixture(params=["native", "python"])
def impl(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "native" and _hotpath.NO_EXTENSIONS:
        pytest.skip("ENGINE_NO_EXTENSIONS=1")
    _hotpath.implementation(name)
    return name
