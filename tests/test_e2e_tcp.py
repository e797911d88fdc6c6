"""End to end: ``python -m engine run`` with the tcp plugin (found through its entry point) in
one process, a client driving 10**4 events over loopback in another; every valid event's
output comes back, every malformed line gets a typed error record (a 5000-digit integer
included), nothing valid is lost, and SIGINT shuts the engine down cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N = 10_000
AGENTS = 100


def test_engine_run_over_tcp_from_another_process(tmp_path: Path) -> None:
    tcp = [ep for ep in metadata.entry_points(group="engine.receptors") if ep.name == "tcp"]
    assert tcp, "the engine-tcp distribution is not installed (make test installs it)"
    port_file = tmp_path / "port"
    app = tmp_path / "app.toml"
    app.write_text(
        textwrap.dedent(f"""
        [machines.echo]
        path = "tests.e2e_app:ECHO"
        [[agents]]
        machine = "echo"
        count = {AGENTS}
        prefix = "a"
        [[plugins]]
        name = "tcp"
        config = {{ port = 0, port_file = "{port_file}", token = "secret", max_line = 8192 }}
    """)
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ENGINE_DISABLE_PLUGIN_AUTOLOAD", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", str(app)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "the engine did not start listening"
            time.sleep(0.05)
        port = int(port_file.read_text())
        client = subprocess.run(
            [
                sys.executable,
                str(ROOT / "tests" / "e2e_client.py"),
                str(port),
                "secret",
                str(N),
                str(AGENTS),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        summary = json.loads(client.stdout)
        assert summary["outputs"] == list(range(N))  # every valid event, once
        assert summary["errors"] == {
            "JSONDecodeError": N // 1000,
            "AgentNotFoundError": N // 1000,
            "UnknownEventError": N // 1000,
            "LineTooLong": N // 1000,
            "InvalidPriority": N // 1000,
            "InvalidNumber": N // 1000,
        }
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert f"stopped; {N} processed, 0 failed, {6 * N // 1000} inputs refused" in err
