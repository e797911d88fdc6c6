"""Users get types: a user's module passes ``mypy --strict`` with ``assert_type`` lines on the
public API, and a module with mistakes fails it exactly where marked."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent / "typing"


def mypy(path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file=", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=HERE,
        # an editable install is an import hook mypy cannot follow: point it at the sources
        env=dict(os.environ, MYPYPATH=str(HERE.parent.parent)),
    )


@pytest.mark.slow
def test_a_users_module_passes_mypy_strict() -> None:
    done = mypy(HERE / "user_code.py")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_mistakes_are_reported_where_they_are() -> None:
    path = HERE / "user_mistakes.py"
    expected = {
        n for n, line in enumerate(path.read_text().splitlines(), 1) if line.endswith("# error")
    }
    done = mypy(path)
    reported = {
        int(line.split(":")[1]) for line in done.stdout.splitlines() if ": error:" in line
    }
    assert reported == expected, done.stdout
