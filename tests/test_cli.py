"""``python -m engine``: a bad app file or argument is reported, one line per problem and all
problems of a file in one run, with exit code 2 and never a traceback. The plugins used are
our own ``engine-jsonl`` distribution, installed with the project."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.cli import main

MACHINES = """
import engine

ECHO = engine.Machine("echo", ["s"], "s", [], events=["say"], unhandled="ignore")
NOT_A_MACHINE = {"states": ["s"]}


class Catalogue:
    class Inner:
        ECHO = ECHO
"""


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path holding ``cli_machines.py``; plugin discovery is on."""
    (tmp_path / "cli_machines.py").write_text(MACHINES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("ENGINE_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    yield tmp_path
    sys.modules.pop("cli_machines", None)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of ``python -m engine *argv``, run in this process."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.splitlines()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("seconds", ["nan", "-1", "inf", "-inf", "soon"])
def test_run_for_needs_a_finite_number_of_seconds(
    app_dir: Path, capsys: pytest.CaptureFixture[str], seconds: str
) -> None:
    app = write(app_dir / "app.toml", "")
    code, err = run_cli(capsys, "run", str(app), f"--for={seconds}")
    assert code == 2
    assert err[-1] == (
        f"python -m engine run: error: argument --for: expected a finite number of seconds "
        f">= 0, got {seconds!r}"
    )


@pytest.mark.parametrize("interval", ["0", "nan", "inf"])
def test_top_interval_must_be_positive_and_finite(
    app_dir: Path, capsys: pytest.CaptureFixture[str], interval: str
) -> None:
    app = write(app_dir / "app.toml", "")
    code, err = run_cli(capsys, "top", str(app), f"--interval={interval}")
    assert code == 2
    assert "argument --interval: expected a finite number of seconds > 0" in err[-1]


def test_unreadable_app_files_exit_2_without_a_traceback(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = app_dir / "binary.toml"
    binary.write_bytes(b"[runtime]\nname = '\xff'\n")
    code, err = run_cli(capsys, "run", str(binary))
    assert code == 2
    assert err == [
        f"engine: {binary} is invalid (1 problem):",
        "  - not UTF-8 text: 'utf-8' codec can't decode byte 0xff in position 18: "
        "invalid start byte",
    ]
    syntax = write(app_dir / "syntax.toml", "[runtime\n")
    code, err = run_cli(capsys, "top", str(syntax))
    assert code == 2
    assert err[1].startswith("  - not valid TOML: Expected ']'")


def test_every_problem_of_an_app_file_in_one_run(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the file's schema, its cross references, the machines' imports and the plugins (names,
    # their own configs) are all checked before anything runs, and reported together
    app = write(
        app_dir / "app.toml",
        """
        [runtime]
        budget = 0
        [machines.echo]
        path = "cli_machines:ECHO"
        [machines.missing]
        path = "cli_no_such_module:ECHO"
        [machines.wrong]
        path = "cli_machines:NOT_A_MACHINE"
        [machines.typo]
        path = "cli_machines:ECHOO"
        [[agents]]
        machine = "echo"
        ids = ["a"]
        [[agents]]
        machine = "ghost"
        count = 1
        [[plugins]]
        name = "no-such-plugin"
        [[plugins]]
        name = "jsonl"
        role = "effector"
        config = { mode = "sideways", colour = 1 }
        [[plugins]]
        name = "jsonl"
        role = "effector"
        restart = { backoff = -1 }
        """,
    )
    code, err = run_cli(capsys, "run", str(app), "--for", "0")
    assert code == 2
    assert err[0] == f"engine: {app} is invalid (9 problems):"
    problems = [line.removeprefix("  - ") for line in err[1:]]
    assert len(problems) == 9
    expected = [
        "'budget' must be >= 1: 0 @ $.runtime.budget",
        "'ghost' is not a machine of [machines] @ $.agents[1].machine",
        "'backoff' must be >= 0: -1.0 @ $.plugins[2].restart.backoff",
        "cannot import 'cli_no_such_module:ECHO': ModuleNotFoundError: No module named "
        "'cli_no_such_module' @ $.machines['missing'].path",
        "'cli_machines:NOT_A_MACHINE' is a dict, not an engine.Machine @ $.machines['wrong'].path",
        "cannot import 'cli_machines:ECHOO': AttributeError: module 'cli_machines' has no "
        "attribute 'ECHOO' @ $.machines['typo'].path",
        "expected one of 'append', 'truncate', got 'sideways' @ $.plugins[1].config.mode",
        "extra fields found (colour) @ $.plugins[1].config",
    ]
    for line in expected:
        assert line in problems
    (unknown,) = [p for p in problems if p not in expected]
    assert unknown.startswith("no plugin named 'no-such-plugin' is installed (installed: ")
    assert unknown.endswith(") @ $.plugins[0].name")


def test_machines_are_resolved_by_pkgutil_with_dots_after_the_colon(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = write(
        app_dir / "app.toml",
        """
        [machines.echo]
        path = "cli_machines:Catalogue.Inner.ECHO"
        [[agents]]
        machine = "echo"
        prefix = "e"
        count = 3
        """,
    )
    code, err = run_cli(capsys, "run", str(app), "--for", "0")
    assert code == 0, err
    assert err[0].startswith("engine: 3 agents on the ")
    assert err[-1] == "engine: stopped; 0 processed, 0 failed, 0 inputs refused"


def test_a_plugin_writing_into_a_missing_directory_is_reported(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = app_dir / "no" / "such" / "dir" / "out.jsonl"
    app = write(
        app_dir / "app.toml",
        f"""
        [[plugins]]
        name = "jsonl"
        role = "effector"
        config = {{ path = "{out}" }}
        """,
    )
    code, err = run_cli(capsys, "run", str(app), "--for", "0")
    assert code == 2
    assert err == [
        f"engine: {app} is invalid (1 problem):",
        f"  - a plugin could not start: FileNotFoundError: [Errno 2] No such file or "
        f"directory: '{out}'",
    ]


def test_a_bad_app_file_from_a_real_process(app_dir: Path) -> None:
    app = write(app_dir / "app.toml", '[runtime]\nrecord = "no"\nbudget = 64.9\n')
    done = subprocess.run(
        [sys.executable, "-m", "engine", "run", str(app)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines()[1:] == [
        "  - expected an integer, got 64.9 @ $.runtime.budget",
        "  - expected true or false, got 'no' @ $.runtime.record",
    ]


def test_a_plugin_wired_twice_in_one_role_is_reported_with_the_rest(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = write(
        app_dir / "app.toml",
        """
        [runtime]
        metrics = "yes"
        [[plugins]]
        name = "jsonl"
        role = "effector"
        [[plugins]]
        name = "jsonl"
        config = { path = "-" }
        """,
    )
    code, err = run_cli(capsys, "run", str(app), "--for", "0")
    assert code == 2
    assert err[1:] == [
        "  - expected true or false, got 'yes' @ $.runtime.metrics",
        "  - 'jsonl' is already wired by plugins[0] (one instance per role) @ $.plugins[1].name",
    ]
