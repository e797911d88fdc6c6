"""The shared workload: a 3-state x 4-event Mealy machine driven by a seeded message stream.

BENCH_MESSAGES (default 10**6) messages go to ``AGENTS`` (1000) agents; per message the agent
index, the event code and the priority are uniform (numpy ``default_rng(SEED)``). `make test`
runs every benchmark once at 20 000 messages with ``--benchmark-disable`` so none can rot;
`make bench` runs them for real and saves the run for ``bench/report.py``.

The transition function ``dest(s, e) = (s + e + 1) % 3`` is additive modulo 3, so an agent's
final state does not depend on the order its messages are processed in: the engine (which
serves its mailboxes by priority) and the peers (which apply messages in arrival order) must
all end where the arrival-order reference ends.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the in-place build, also when pytest runs as a script
    sys.path.insert(0, str(ROOT))

from engine import hotpath as _hotpath  # noqa: E402

SEED = 20261123
AGENTS = 1000
PRIORITIES = 4
STATES = ("s0", "s1", "s2")
EVENTS = ("e0", "e1", "e2", "e3")
IMPLEMENTATIONS = ("native", "python")


def dest(state: int, event: int) -> int:
    """The workload's transition function (every cell defined)."""
    return (state + event + 1) % len(STATES)


def output(state: int, event: int) -> str:
    """The output of the step from ``state`` on ``event``."""
    return f"o{state}{event}"


def rows() -> list[tuple[str, str, str, str]]:
    """Transition rows ``(source, event, dest, output)`` of the workload's machine."""
    return [
        (STATES[s], EVENTS[e], STATES[dest(s, e)], output(s, e))
        for s in range(len(STATES))
        for e in range(len(EVENTS))
    ]


@attrs.frozen
class Workload:
    """The messages as int32 arrays, and as Python lists for the per-message loops."""

    agents: npt.NDArray[np.int32]
    """Agent index of each message, in ``[0, n_agents)``."""
    events: npt.NDArray[np.int32]
    """Event code of each message (index in ``EVENTS``)."""
    priorities: npt.NDArray[np.int32]
    """Priority of each message, 0..3 (peers have no mailbox and ignore it)."""
    n_agents: int
    agent_list: list[int] = attrs.field(init=False, eq=False, repr=False)
    event_list: list[int] = attrs.field(init=False, eq=False, repr=False)
    priority_list: list[int] = attrs.field(init=False, eq=False, repr=False)
    event_names: list[str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        events = self.events.tolist()
        object.__setattr__(self, "agent_list", self.agents.tolist())
        object.__setattr__(self, "event_list", events)
        object.__setattr__(self, "priority_list", self.priorities.tolist())
        object.__setattr__(self, "event_names", [EVENTS[e] for e in events])

    @property
    def size(self) -> int:
        """Number of messages."""
        return len(self.agents)

    def final_states(self) -> list[int]:
        """The plain reference: each agent's final state code when its messages are applied
        in arrival order."""
        state = [0] * self.n_agents
        for a, e in zip(self.agent_list, self.event_list, strict=True):
            state[a] = dest(state[a], e)
        return state


def prefix(w: Workload, n: int) -> tuple[list[int], list[int], list[int]]:
    """The first ``n`` messages (agents, event codes) and each agent's reference state after
    them (the slow peers run on a prefix)."""
    agents, events = w.agent_list[:n], w.event_list[:n]
    state = [0] * w.n_agents
    for a, e in zip(agents, events, strict=True):
        state[a] = dest(state[a], e)
    return agents, events, state


def make_workload(n: int, n_agents: int = AGENTS, seed: int = SEED) -> Workload:
    """The seeded message stream: agent, event and priority uniform per message."""
    rng = np.random.default_rng(seed)
    return Workload(
        rng.integers(0, n_agents, n, dtype=np.int32),
        rng.integers(0, len(EVENTS), n, dtype=np.int32),
        rng.integers(0, PRIORITIES, n, dtype=np.int32),
        n_agents,
    )


def interleaved(
    benchmark: Any,
    runtimes: dict[str, Any],
    slots: npt.NDArray[np.int32],
    w: Workload,
    rounds: int,
) -> None:
    """Time the workload (``send_many_slots`` + drain) on each runtime in turn, ``rounds``
    times, then record per mode the median over rounds of (its time / the first mode's time
    in the same round) - 1 as ``overhead_<mode>``: differences of a few percent are below
    this shared machine's run-to-run noise, so modes are compared inside one round."""
    times: dict[str, list[float]] = {mode: [] for mode in runtimes}

    def run() -> None:
        for _ in range(rounds):
            for mode, rt in runtimes.items():
                t0 = time.perf_counter()
                rt.send_many_slots(slots, w.events, w.priorities)
                rt.run_until_idle()
                times[mode].append(time.perf_counter() - t0)

    benchmark.pedantic(run, rounds=1, iterations=1)
    base = np.array(times[next(iter(runtimes))])
    for mode, rt in runtimes.items():
        assert rt.statistics().processed == len(times[mode]) * w.size
        ratio = float(np.median(np.array(times[mode]) / base))
        benchmark.extra_info[f"overhead_{mode}"] = round(ratio - 1, 4)
        benchmark.extra_info[f"median_s_{mode}"] = float(np.median(times[mode]))
    benchmark.extra_info.update(messages=w.size, rounds=rounds)


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run without the project's pytest settings (``filterwarnings = error``,
    ``--strict-markers``), e.g. when pytest picked another configuration file."""
    if config.inipath is None or config.inipath.resolve() != ROOT / "pyproject.toml":
        raise pytest.UsageError(
            f"bench/ must run with {ROOT / 'pyproject.toml'} as its configuration "
            f"(got {config.inipath}); run `pytest bench` from the project root"
        )


@pytest.fixture(scope="session")
def workload() -> Workload:
    """BENCH_MESSAGES messages (default 10**6) to ``AGENTS`` agents, seed ``SEED``."""
    return make_workload(int(os.environ.get("BENCH_MESSAGES", "1000000")))


@pytest.fixture(scope="session")
def reference_states(workload: Workload) -> list[int]:
    """Final state codes of the plain arrival-order reference (computed once)."""
    return workload.final_states()


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> str:
    """The engine's hot path: the compiled one or its pure-Python twin."""
    name: str = request.param
    if name == "native" and _hotpath.NO_EXTENSIONS:
        pytest.skip("ENGINE_NO_EXTENSIONS=1")
    _hotpath.implementation(name)  # ImportError here if the extension is not built
    return name


MEMORY_RESULTS = pytest.StashKey[list[dict[str, Any]]]()


@pytest.fixture(scope="session")
def memory_results(pytestconfig: pytest.Config) -> list[dict[str, Any]]:
    """Idle-memory measurements of this session, printed at its end."""
    return pytestconfig.stash.setdefault(MEMORY_RESULTS, [])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    scaling = sys.modules.get("test_scaling")  # imported only if this session collected it
    if scaling is not None:
        scaling.scaling_summary(terminalreporter, config)
    results = config.stash.get(MEMORY_RESULTS, [])
    if not results:
        return
    tr = terminalreporter
    tr.section("idle agent memory (RSS growth in a fresh process)")
    tr.write_line(f"{'peer':<20} {'agents':>10} {'bytes/agent':>12}")
    for r in sorted(results, key=lambda r: (r["peer"], r["agents"])):
        tr.write_line(f"{r['peer']:<20} {r['agents']:>10,} {r['bytes_per_agent']:>12.1f}")
