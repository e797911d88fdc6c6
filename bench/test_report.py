"""bench/report.py on a small synthetic run: tables, ratios per message, targets, plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPORT = Path(__file__).resolve().parent / "report.py"


def bench(name: str, group: str, system: str, median: float, **info: Any) -> dict[str, Any]:
    return {
        "name": name,
        "group": group,
        "stats": {"median": median, "min": median, "rounds": 1},
        "extra_info": {"system": system, **info},
    }


def test_report_writes_tables_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = {
        "datetime": "2026-11-23",
        "benchmarks": [
            bench("test_engine[native-drain]", "drain", "native", 0.1, messages=1000),
            bench("test_engine[python-drain]", "drain", "python", 1.0, messages=1000),
            bench("test_peer_transitions[drain]", "drain", "transitions", 10.0, messages=1000),
            # a prefix of 100 messages at 0.05 s: 500 us/message, 5x native's 100 us
            bench("test_peer_statemachine[drain]", "drain", "python-statemachine", 0.05,
                  messages=100),
            bench("test_engine_request[native]", "request", "native", 1.0, messages=10,
                  p50_us=10.0, p90_us=12.0, p99_us=20.0, **{"p99.9_us": 30.0}, samples=10),
            *[
                bench(f"test_scaling[{impl}-{n}]", "scaling", impl, 1.0,
                      agents=n, messages=1000 // (n // 100),
                      impl=impl)
                for impl in ("native", "python")
                for n in (100, 10_000)
            ],
        ],
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    here = tmp_path / "bench"
    here.mkdir()
    script = here / "report.py"
    script.write_text(REPORT.read_text())  # writes its outputs beside itself
    done = subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    md = (here / "results.md").read_text()
    assert "| transitions | 1,000 | 10.0000 | 10,000,000 | 100 | 100.0x | 10.0x |" in md
    assert "| python-statemachine | 100 |" in md
    assert "| python-statemachine | 100 | 0.0500 | 500,000 | 2,000 | 5.0x | 0.5x |" in md
    assert "| drain, native | x transitions | ≥ 80x | 100.0x | PASS |" in md
    assert "| drain, native | x automat | ≥ 15x | n/a | not measured |" in md
    assert "| native | 10,000 | 10 | 0.01 |" in md  # 10 msg/s vs 1000 msg/s
    assert "MISS" in md.split("throughput at 10,000 agents")[1].splitlines()[0]
    for png in ("throughput_vs_agents.png", "latency_percentiles.png"):
        assert (here / png).read_bytes()[:4] == b"\x89PNG"
