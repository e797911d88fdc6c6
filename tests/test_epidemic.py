"""The epidemic demo (`make demo`): determinism across hot paths and the simulation's
invariants, checked on its event log."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "epidemic.py"
_spec = importlib.util.spec_from_file_location("epidemic", SCRIPT)
assert _spec is not None
assert _spec.loader is not None
epidemic: Any = importlib.util.module_from_spec(_spec)
sys.modules["epidemic"] = epidemic
_spec.loader.exec_module(epidemic)

Run = Callable[..., Any]


@pytest.fixture(scope="module")
def run() -> Run:
    """``run(agents, seed, implementation)``: a simulation, computed once per module."""
    cache: dict[tuple[int, int, str], Any] = {}

    def get(agents: int, seed: int, implementation: str) -> Any:
        key = (agents, seed, implementation)
        if key not in cache:
            if implementation == "native" and not engine.USE_EXTENSIONS:
                pytest.skip("the compiled extension is not built (ENGINE_NO_EXTENSIONS)")
            params = epidemic.Params(agents=agents, seed=seed, implementation=implementation)
            cache[key] = epidemic.simulate(params)
            assert cache[key].implementation == implementation
        return cache[key]

    return get


@pytest.mark.parametrize("agents", [1_000, 100_000])
def test_same_seed_same_log_on_both_hot_paths(run: Run, agents: int) -> None:
    native, twin = run(agents, 1, "native"), run(agents, 1, "python")
    assert native.digest == twin.digest
    assert native.log == twin.log
    assert np.array_equal(native.curve, twin.curve)
    assert native.messages == twin.messages
    # a real epidemic happened: a third of the people or more fell ill, and a campaign ran
    final = native.curve[-1]
    assert final[epidemic.R] >= agents // 3
    assert final[epidemic.V] > 0


def test_another_seed_gives_another_log(run: Run) -> None:
    assert run(1_000, 1, "native").digest != run(1_000, 2, "native").digest
    assert run(1_000, 2, "native").digest == run(1_000, 2, "python").digest


@pytest.mark.parametrize(("agents", "implementation"), [(1_000, "python"), (100_000, "native")])
def test_invariants(run: Run, agents: int, implementation: str) -> None:
    r = run(agents, 1, implementation)
    S, I, R, V = epidemic.S, epidemic.I, epidemic.R, epidemic.V  # noqa: E741
    # S + I + R + V is the population every day, and the engine agrees with the log at the end
    assert (r.curve.sum(axis=1) == agents).all()
    assert r.engine_counts == {
        name: int(r.curve[-1][k]) for k, name in zip((S, I, R, V), "SIRV", strict=True)
    }
    assert r.curve[-1][I] == 0  # the run ends when nobody is ill
    day, kind, person, by = r.entries().T
    assert (np.diff(day) >= 0).all()  # the log is in time order
    for k in (I, R, V):
        assert len(np.unique(person[kind == k])) == (kind == k).sum()  # at most once each
    ill = set(person[kind == I].tolist())
    vaccinated = set(person[kind == V].tolist())
    assert not ill & vaccinated  # vaccinated people never fall ill
    # nobody recovers before falling ill: the recovery comes later in the log, days later
    first = {int(p): i for i, p in enumerate(person) if kind[i] == I}
    for i in np.flatnonzero(kind == R).tolist():
        j = first[int(person[i])]
        assert j < i
        assert day[j] + r.params.illness[0] <= day[i] <= day[j] + r.params.illness[1]
    # every infection after the seeds comes from someone already ill
    seeds = by == epidemic.NOBODY
    assert ((kind == I) & seeds).sum() == r.params.initial
    for i in np.flatnonzero((kind == I) & ~seeds).tolist():
        assert first[int(by[i])] < i


def test_script_prints_table_and_writes_png(tmp_path: Path) -> None:
    png = tmp_path / "curves.png"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--agents", "3000", "--seed", "7", "--plot", str(png)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for label in ("messages / s", "step latency", "final S / I / R / V", "blake2b"):
        assert label in done.stdout
    assert done.stderr == ""  # no progress bar: stderr is not a terminal
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    digest = done.stdout.split("blake2b ")[1].split()[0]
    params = epidemic.Params(agents=3000, seed=7)
    assert digest == epidemic.simulate(params).digest  # the printed hash is the run's


@pytest.mark.parametrize(
    "args",
    [["--agents", "0"], ["--agents", "20000000"], ["--beta", "2"], ["--days", "0"]],
)
def test_script_refuses_bad_arguments(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--plot", ""],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "error:" in done.stderr


def test_params_are_checked() -> None:
    with pytest.raises(engine.InvalidArgumentError):
        epidemic.Params(agents=10, contacts=10)
    with pytest.raises(engine.InvalidArgumentError):
        epidemic.Params(illness=(3, 2))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_is_tqdm_over_the_days() -> None:
    params = epidemic.Params(agents=1000, seed=1)
    out = Terminal()
    r = epidemic.simulate(params, bar=epidemic.progress_bar(params, out))
    last = out.getvalue().split("\r")[-1]
    days = len(r.curve) - 1
    final = r.curve[-1]
    assert last.startswith("days: ")
    assert f"| {days}/{params.days} [" in last
    assert f"S {final[epidemic.S]:,}  I 0  R {final[epidemic.R]:,}  V {final[epidemic.V]:,}" in (
        last
    )
    assert last.endswith("\n")  # closed: the table starts on a line of its own
    # not a terminal, or disabled (--quiet): nothing is drawn
    for out, disable in ((io.StringIO(), None), (Terminal(), True)):
        epidemic.simulate(params, bar=epidemic.progress_bar(params, out, disable=disable))
        assert out.getvalue() == ""


@pytest.mark.parametrize("quiet", [False, True])
def test_quiet_turns_the_bar_off_on_a_terminal(
    quiet: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    for name in ("COLUMNS", "LINES"):  # tqdm reads these for a terminal it cannot measure
        monkeypatch.delenv(name, raising=False)
    epidemic.main(["--agents", "1000", "--plot", "", *(["--quiet"] if quiet else [])])
    assert "ever infected" in capsys.readouterr().out
    assert ("days: " in terminal.getvalue()) is not quiet


@pytest.mark.parametrize(
    ("plot", "error"),
    [
        ("no/such/dir/curves.png", "argument --plot: directory {dir} does not exist"),
        ("curves.nosuchformat", "argument --plot: matplotlib cannot write '.nosuchformat' files"),
    ],
)
def test_a_plot_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], plot: str, error: str
) -> None:
    path = tmp_path / plot
    with pytest.raises(SystemExit) as info:
        epidemic.main(["--agents", "1000", "--plot", str(path)])
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran
    assert captured.err.splitlines()[-1].endswith(error.format(dir=path.parent))
