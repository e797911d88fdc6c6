"""pytest plugin and helpers for testing and benchmarking your own machines.

Installed with the engine and registered through the ``pytest11`` entry point, so its fixtures
are available in any pytest session (``-p no:engine`` turns it off):

* ``engine_runtime``: a fresh synchronous :class:`engine.Runtime`;
* ``engine_runtime_factory``: ``factory(**kwargs)`` making more of them;
* ``engine_sim``: runs ``async def main(rt)`` under ``engine.open_runtime`` on trio's
  ``MockClock`` (virtual time, autojump), and returns what ``main`` returns;
* ``engine_implementation``: the hot path those use, from ``--engine-impl`` (``auto``,
  ``native``, ``python``, or ``both``: every test using the fixtures runs once per hot path);
* ``engine_benchmark``: ``engine_benchmark(machine, agents=..., messages=...)`` times your
  machine on a generated workload with pytest-benchmark.

The helpers need no fixture: ``recording(rt)`` attaches a :class:`Recorder` (an instrument:
it sees every step, sync or under trio), and ``assert_transitions`` / ``assert_outputs``
compare what it saw with what you expect, showing where the two first differ.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Final, final

import attrs
import pytest

import engine

from .core._exceptions import InvalidArgumentError

IMPLEMENTATIONS: Final = ("native", "python")
ALL: Final[Any] = object()
"""Default ``agent_id`` of the helpers: every agent, in processing order."""


# -- recording and assertions ------------------------------------------------------------


@final
@attrs.frozen
class RecordedStep:
    """One step an agent took, as a :class:`Recorder` saw it."""

    agent_id: Any
    source: str
    event: str
    target: str
    outputs: tuple[Any, ...]


@final
class Recorder(engine.Instrument):
    """An instrument keeping every step (and every failure) of a runtime, in order.

    Attach it with :func:`recording`, or ``rt.add_instrument(recorder)`` and later
    ``rt.remove_instrument(recorder)``. While attached, steps leave the compiled fast path
    (each one calls Python): fine for tests, not for benchmarks.
    """

    def __init__(self) -> None:
        self.steps: list[RecordedStep] = []
        self.failures: list[tuple[Any, BaseException]] = []

    def after_transition(
        self, agent_id: Any, source: str, event: str, target: str, outputs: tuple[Any, ...]
    ) -> None:
        self.steps.append(RecordedStep(agent_id, source, event, target, tuple(outputs)))

    def on_failure(self, agent_id: Any, error: BaseException) -> None:
        self.failures.append((agent_id, error))

    def transitions(self, agent_id: Any = ALL) -> list[tuple[str, str, str]]:
        """``(source, event, target)`` of each step, of one agent or of all."""
        return [(s.source, s.event, s.target) for s in self._of(agent_id)]

    def outputs(self, agent_id: Any = ALL) -> list[Any]:
        """Every output, in the order the steps emitted them."""
        return [o for s in self._of(agent_id) for o in s.outputs]

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.steps.clear()
        self.failures.clear()

    def _of(self, agent_id: Any) -> list[RecordedStep]:
        if agent_id is ALL:
            return self.steps
        return [s for s in self.steps if s.agent_id == agent_id]


@contextlib.contextmanager
def recording(runtime: engine.Runtime) -> Iterator[Recorder]:
    """Record every step of ``runtime`` for the body of the ``with``."""
    if not isinstance(runtime, engine.Runtime):
        raise InvalidArgumentError(f"recording() takes an engine.Runtime, got {runtime!r}")
    recorder = Recorder()
    runtime.add_instrument(recorder)
    try:
        yield recorder
    finally:
        runtime.remove_instrument(recorder)


def _diff(what: str, expected: list[Any], actual: list[Any]) -> str:
    """Where two sequences first differ, with both around that point."""
    at = next(
        (i for i, (e, a) in enumerate(zip(expected, actual, strict=False)) if e != a),
        min(len(expected), len(actual)),
    )
    lines = [f"{what} differ at index {at} (expected {len(expected)}, got {len(actual)}):"]
    for i in range(max(0, at - 2), min(max(len(expected), len(actual)), at + 3)):
        e = repr(expected[i]) if i < len(expected) else "(nothing)"
        a = repr(actual[i]) if i < len(actual) else "(nothing)"
        mark = ">" if i == at else " "
        lines.append(f"{mark} [{i}] expected {e}\n{mark} [{i}]      got {a}")
    return "\n".join(lines)


def _as_list(expected: Any, what: str) -> list[Any]:
    if isinstance(expected, str | bytes) or not isinstance(expected, Sequence):
        raise InvalidArgumentError(f"expected {what} must be a list or tuple, got {expected!r}")
    return list(expected)


def assert_transitions(
    recorder: Recorder, expected: Sequence[tuple[str, str, str]], agent_id: Any = ALL
) -> None:
    """Assert the exact sequence of ``(source, event, target)`` steps (of one agent, or of
    all in processing order); an ``AssertionError`` shows where it first differs."""
    want = [tuple(t) for t in _as_list(expected, "transitions")]
    if any(len(t) != 3 for t in want):
        raise InvalidArgumentError("each expected transition is (source, event, target)")
    got = recorder.transitions(agent_id)
    if got != want:
        raise AssertionError(_diff("transitions", want, list(got)))


def assert_outputs(recorder: Recorder, expected: Sequence[Any], agent_id: Any = ALL) -> None:
    """Assert the exact sequence of outputs (of one agent, or of all in processing order)."""
    want = _as_list(expected, "outputs")
    got = recorder.outputs(agent_id)
    if got != want:
        raise AssertionError(_diff("outputs", want, got))


# -- pytest hooks and fixtures ------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("engine", "engine state machines")
    group.addoption(
        "--engine-impl",
        choices=("auto", "native", "python", "both"),
        default="auto",
        help="hot path of the engine_* fixtures: auto (the compiled one when it is built), "
        "native, python, or both (tests using them run once per hot path)",
    )


def pytest_configure(config: pytest.Config) -> None:
    choice = config.getoption("engine_impl", "auto")
    if choice in ("native", "both") and not engine.USE_EXTENSIONS:
        raise pytest.UsageError(
            f"--engine-impl={choice} needs the compiled hot path, which is not loaded "
            "(not built, or ENGINE_NO_EXTENSIONS is set)"
        )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if (
        "engine_implementation" in metafunc.fixturenames
        and metafunc.config.getoption("engine_impl", "auto") == "both"
    ):
        metafunc.parametrize("engine_implementation", IMPLEMENTATIONS, indirect=True)


@pytest.fixture
def engine_implementation(request: pytest.FixtureRequest) -> str:
    """The hot path of the ``engine_*`` fixtures: ``"native"`` or ``"python"``."""
    choice = getattr(request, "param", None) or request.config.getoption("engine_impl", "auto")
    if choice == "auto":
        return "native" if engine.USE_EXTENSIONS else "python"
    return str(choice)


@pytest.fixture
def engine_runtime_factory(engine_implementation: str) -> Callable[..., engine.Runtime]:
    """``factory(**kwargs)``: a new ``engine.Runtime`` on the selected hot path."""

    def make(**kwargs: Any) -> engine.Runtime:
        kwargs.setdefault("implementation", engine_implementation)
        return engine.Runtime(**kwargs)

    return make


@pytest.fixture
def engine_runtime(engine_runtime_factory: Callable[..., engine.Runtime]) -> engine.Runtime:
    """A fresh synchronous ``engine.Runtime`` on the selected hot path."""
    return engine_runtime_factory()


@final
class Sim:
    """Runs async code against a runtime under trio on a ``MockClock`` (``engine_sim``)."""

    def __init__(self, implementation: str) -> None:
        self.implementation = implementation
        self.clock: Any = None
        """The ``MockClock`` of the last run (``clock.current_time()`` is virtual seconds)."""

    def run(self, main: Callable[..., Awaitable[Any]], *args: Any, **runtime_kwargs: Any) -> Any:
        """``trio.run`` ``main(rt, *args)`` inside ``engine.open_runtime(**runtime_kwargs)``
        on a fresh autojumping ``MockClock``; return its result (errors propagate)."""
        import trio
        import trio.testing

        if not callable(main):
            raise InvalidArgumentError(f"engine_sim.run() takes an async function, got {main!r}")
        runtime_kwargs.setdefault("implementation", self.implementation)
        self.clock = trio.testing.MockClock(autojump_threshold=0)

        async def body() -> Any:
            async with engine.open_runtime(**runtime_kwargs) as rt:
                return await main(rt, *args)

        return trio.run(body, clock=self.clock)


@pytest.fixture
def engine_sim(engine_implementation: str) -> Sim:
    """``engine_sim.run(main, **runtime_kwargs)``: ``async def main(rt)`` on virtual time."""
    return Sim(engine_implementation)


@final
@attrs.frozen
class BenchmarkResult:
    """What ``engine_benchmark`` measured (also in the benchmark's ``extra_info``)."""

    implementation: str
    agents: int
    messages: int
    failed: int
    """Messages whose step failed (dead letters), in the last round."""
    ns_per_message: float | None
    """Best round's time per message; ``None`` with ``--benchmark-disable``."""


def _workload(machine: engine.Machine, agents: int, messages: int, seed: int) -> tuple[Any, ...]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, agents, messages),
        rng.integers(0, len(machine.events), messages, dtype=np.int32),
        rng.integers(0, 4, messages, dtype=np.int32),
    )


@pytest.fixture
def engine_benchmark(
    request: pytest.FixtureRequest, engine_implementation: str
) -> Callable[..., BenchmarkResult]:
    """``engine_benchmark(machine, agents=1000, messages=100_000, seed=0, rounds=5)``.

    Spawns ``agents`` agents of ``machine`` on a fresh runtime per round (outside the timing),
    then times queuing ``messages`` messages (agent, event and priority uniform, seeded) with
    ``send_many_slots`` and draining them with ``run_until_idle``. Every message must be
    taken; steps that fail (an event with no row in the current state, unless the machine
    ignores unhandled events) count, and how many is reported. Needs pytest-benchmark.
    """

    def run(
        machine: engine.Machine,
        *,
        agents: int = 1000,
        messages: int = 100_000,
        seed: int = 0,
        rounds: int = 5,
    ) -> BenchmarkResult:
        if not isinstance(machine, engine.Machine):
            raise InvalidArgumentError(f"engine_benchmark takes an engine.Machine, got {machine!r}")
        for name, value in (("agents", agents), ("messages", messages), ("rounds", rounds)):
            if not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
        benchmark = request.getfixturevalue("benchmark")  # after the checks
        targets, events, priorities = _workload(machine, agents, messages, seed)
        last: list[engine.Runtime] = []

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            rt = engine.Runtime(implementation=engine_implementation, dead_letter_limit=1)
            for i in range(agents):
                rt.spawn(machine, i)
            last[:] = [rt]
            return (rt, rt.slots(range(agents))[targets]), {}

        def send_and_drain(rt: engine.Runtime, slots: Any) -> int:
            rt.send_many_slots(slots, events, priorities)
            return rt.run_until_idle()

        benchmark.group = benchmark.group or f"engine: {machine.name}"
        taken = benchmark.pedantic(send_and_drain, setup=setup, rounds=rounds, iterations=1)
        if taken != messages:
            raise AssertionError(f"{taken} of {messages} messages were taken")
        failed = last[0].statistics().failed
        stats = getattr(benchmark, "stats", None)
        per_message = None if stats is None else stats.stats.min / messages * 1e9
        benchmark.extra_info.update(
            implementation=engine_implementation,
            agents=agents,
            messages=messages,
            failed=failed,
            ns_per_message=per_message,
        )
        return BenchmarkResult(engine_implementation, agents, messages, failed, per_message)

    return run
