"""`make demo` keeps working: the demo script runs (small) and both hot paths agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import engine

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def test_demo_runs_and_implementations_agree() -> None:
    done = subprocess.run(
        [sys.executable, str(DEMO), "--agents", "500", "--messages", "20000", "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    if engine.USE_EXTENSIONS:  # both ran and were compared
        assert "same final states and outputs: True" in done.stdout
    assert "dead letters:" in done.stdout
