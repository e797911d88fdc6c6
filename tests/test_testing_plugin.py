"""engine.testing, the pytest plugin: its fixtures and helpers, in real pytest sessions."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

import engine
from engine.testing import (
    Recorder,
    assert_outputs,
    assert_transitions,
    recording,
)

MACHINE = """
import engine
light = engine.Machine("light", ["red", "green", "yellow"], "red", [
    ("red", "tick", "green", "go"), ("green", "tick", "yellow", "slow"),
    ("yellow", "tick", "red", "stop")], events=["tick", "bogus"])
"""


def test_registered_through_the_pytest11_entry_point() -> None:
    (ep,) = [e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "engine"]
    assert ep.value == "engine.testing"


def test_fixtures_and_helpers_in_a_session(pytester: pytest.Pytester, impl: str) -> None:
    pytester.makepyfile(
        MACHINE
        + """
import trio
from engine import StateTimeout, Step
from engine.testing import assert_outputs, assert_transitions, recording

def test_sync(engine_runtime, engine_implementation):
    assert engine_runtime.implementation == engine_implementation
    engine_runtime.spawn(light, "l1")
    with recording(engine_runtime) as rec:
        for _ in range(4):
            engine_runtime.send_nowait("l1", "tick")
        engine_runtime.run_until_idle()
    assert_transitions(rec, [("red", "tick", "green"), ("green", "tick", "yellow"),
                             ("yellow", "tick", "red"), ("red", "tick", "green")])
    assert_outputs(rec, ["go", "slow", "stop", "go"], agent_id="l1")

def test_factory(engine_runtime_factory):
    rt = engine_runtime_factory(capacity=1)
    rt.spawn(light, 1)
    rt.send_nowait(1, "tick")
    with __import__("pytest").raises(engine.MailboxFullError):
        rt.send_nowait(1, "tick")

def test_virtual_time(engine_sim):
    timed = engine.Machine("timed", ["on", "off"], "on", [("on", "expire", "off")],
                           events=["arm", "expire"])

    @timed.handler("on", "arm")
    def arm(agent, event):
        return Step(actions=[StateTimeout(3600, "expire")])

    async def main(rt):
        rt.spawn(timed, "t")
        rt.send_nowait("t", "arm")
        await trio.sleep(3599)
        before = rt.state("t")
        await trio.sleep(2)
        return before, rt.state("t"), trio.current_time(), rt.implementation

    before, after, now, impl = engine_sim.run(main)
    assert (before, after) == ("on", "off")
    assert now == 3601
    assert engine_sim.clock.current_time() == 3601
    assert impl == engine_sim.implementation
"""
    )
    result = pytester.runpytest(f"--engine-impl={impl}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_both_runs_each_test_once_per_hot_path(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
def test_it(engine_runtime, engine_implementation):
    assert engine_runtime.implementation == engine_implementation

def test_without_engine_fixtures():
    pass
"""
    )
    result = pytester.runpytest("--engine-impl=both", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_it?native? PASSED*", "*test_it?python? PASSED*"])


def test_native_without_the_extension_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "USE_EXTENSIONS", False)
    pytester.makepyfile("def test_x(engine_runtime): pass")
    result = pytester.runpytest("--engine-impl=native")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--engine-impl=native needs the compiled hot path*"])
    result = pytester.runpytest()  # auto falls back to the twin
    result.assert_outcomes(passed=1)


def test_a_wrong_sequence_fails_with_the_divergence(pytester: pytest.Pytester, impl: str) -> None:
    pytester.makepyfile(
        MACHINE
        + """
from engine.testing import assert_transitions, recording

def test_wrong(engine_runtime):
    engine_runtime.spawn(light, "l1")
    with recording(engine_runtime) as rec:
        engine_runtime.send_nowait("l1", "tick")
        engine_runtime.send_nowait("l1", "tick")
        engine_runtime.run_until_idle()
    assert_transitions(rec, [("red", "tick", "green"), ("green", "tick", "red")])
"""
    )
    result = pytester.runpytest(f"--engine-impl={impl}")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "transitions differ at index 1 (expected 2, got 2):" in out
    assert "> [1] expected ('green', 'tick', 'red')" in out
    assert "> [1]      got ('green', 'tick', 'yellow')" in out


@pytest.mark.parametrize("disabled", [True, False])
def test_benchmark_fixture(pytester: pytest.Pytester, impl: str, disabled: bool) -> None:
    pytester.makepyfile(
        MACHINE
        + """
def test_bench(engine_benchmark):
    r = engine_benchmark(light, agents=50, messages=2000, rounds=2)
    assert r.messages == 2000 and r.agents == 50
    # "bogus" has no row anywhere: about half the messages fail, and are counted
    assert 700 < r.failed < 1300
    assert (r.ns_per_message is None) == DISABLED
"""
        + f"DISABLED = {disabled}\n"
    )
    args = [f"--engine-impl={impl}"]
    args += ["--benchmark-disable"] if disabled else ["--benchmark-json=out.json"]
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1)
    if not disabled:
        (bench,) = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
        assert bench["group"] == "engine: light"
        assert bench["extra_info"]["implementation"] == impl
        assert bench["extra_info"]["messages"] == 2000
        assert bench["extra_info"]["ns_per_message"] > 0
        assert bench["stats"]["rounds"] == 2


def test_benchmark_fixture_checks_its_arguments(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        MACHINE
        + """
import pytest, engine
def test_bad(engine_benchmark):
    with pytest.raises(engine.InvalidArgumentError):
        engine_benchmark("light")
    with pytest.raises(engine.InvalidArgumentError):
        engine_benchmark(light, agents=0)
"""
    )
    pytester.runpytest("--benchmark-disable").assert_outcomes(passed=1)


def test_helpers_without_pytest(make_runtime: object) -> None:
    rt = engine.Runtime()
    m = engine.Machine("m", ["a", "b"], "a", [("a", "go", "b", "went")])
    rt.spawn(m, 1)
    rt.spawn(m, 2)
    with recording(rt) as rec:
        rt.send_nowait(2, "go")
        rt.send_nowait(1, "go")
        rt.send_nowait(1, "go")  # no row in b: fails, recorded as a failure
        rt.run_until_idle()
    assert isinstance(rec, Recorder)
    assert_transitions(rec, [("a", "go", "b")], agent_id=1)
    assert_outputs(rec, ["went", "went"])
    assert [a for a, _ in rec.failures] == [1]
    assert isinstance(rec.failures[0][1], engine.InvalidTransitionError)
    rt.send_nowait(2, "go")  # after the with: not recorded
    rt.run_until_idle()
    assert len(rec.steps) == 2
    with pytest.raises(AssertionError, match="outputs differ at index 2"):
        assert_outputs(rec, ["went", "went", "went"])
    with pytest.raises(engine.InvalidArgumentError):
        assert_transitions(rec, "a -> b")
    with pytest.raises(engine.InvalidArgumentError):
        assert_transitions(rec, [("a", "b")])
    with pytest.raises(engine.InvalidArgumentError):
        recording(object()).__enter__()
    rec.clear()
    assert rec.steps == []


def test_the_readme_example_session(pytester: pytest.Pytester, impl: str) -> None:
    """The README's test_light.py passes on both hot paths."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (example,) = re.findall(r"```py\n(# test_light\.py.*?)```", readme, flags=re.S)
    pytester.makepyfile(test_light=example)
    result = pytester.runpytest(f"--engine-impl={impl}", "--benchmark-disable")
    result.assert_outcomes(passed=3)
