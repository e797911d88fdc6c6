"""``python -m engine``: a bad app file or argument is reported, one line per problem and all
problems of a file in one run, with exit code 2 and never a traceback. The plugins used are
our own ``engine-jsonl`` distribution, installed with the project."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# -- serving /metrics and the dashboard from `run` and `top` -----------------------------------

TOKEN = "cli-Token_7"
SERVED_MACHINES = """
import engine

JOB = engine.Machine("job", ["idle"], "idle", [("idle", "go", None)], events=["go"])
"""


def served_app(tmp_path: Path, metrics: str = "") -> Path:
    """An app whose jsonl receptor sends 200 ``go`` to agent ``a`` (of two), with a metrics
    history, and ``metrics`` (a ``[metrics]`` table, or nothing)."""
    (tmp_path / "served_machines.py").write_text(SERVED_MACHINES)
    events = tmp_path / "events.jsonl"
    events.write_text('{"agent": "a", "event": "go"}\n' * 200)
    return write(
        tmp_path / "app.toml",
        f"""
        [runtime]
        metrics_history = 0.05
        [machines.job]
        path = "served_machines:JOB"
        [[agents]]
        machine = "job"
        ids = ["a", "b"]
        [[plugins]]
        name = "jsonl"
        role = "receptor"
        config = {{ path = "{events}" }}
        {metrics}
        """,
    )


class Running:
    """``python -m engine ARGV`` in a real process, its output read line by line by threads,
    stopped with SIGINT as a user would."""

    def __init__(self, tmp_path: Path, argv: list[str], environ: dict[str, str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(tmp_path), **environ}
        env.pop("ENGINE_DISABLE_PLUGIN_AUTOLOAD", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", *argv],
            cwd=Path(__file__).resolve().parent.parent,  # this checkout's engine
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self.out: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.lines.put)),
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out.append)),
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, keep: Any) -> None:
        for line in stream:
            keep(line.rstrip("\n"))

    def line(self, start: str) -> str:
        """The first stderr line starting with ``start`` (15 s at most)."""
        deadline = time.monotonic() + 15
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no line {start!r}; stderr: {self.err}") from None
            self.err.append(line)
            if line.startswith(start):
                return line

    def stop(self) -> tuple[int, str, list[str]]:
        """SIGINT; the exit code, stdout and every stderr line."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=30)
        for reader in self.readers:
            reader.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            assert stream is not None
            stream.close()
        while not self.lines.empty():
            self.err.append(self.lines.get())
        return code, "\n".join(self.out), self.err


def http_get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def data_when(base: str, check: Any, token: str | None = None) -> dict[str, Any]:
    """The first ``data.json`` that passes ``check`` (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        status, body = http_get(f"{base}/dashboard/data.json", token)
        assert status == 200
        doc: dict[str, Any] = json.loads(body)
        if check(doc) or time.monotonic() > deadline:
            return doc
        time.sleep(0.1)


def test_run_serves_what_the_app_file_asks_with_the_token_from_the_environment(
    tmp_path: Path,
) -> None:
    app = served_app(tmp_path, '[metrics]\nport = 0\nhost = "127.0.0.1"\ndashboard = true\n')
    running = Running(tmp_path, ["run", str(app)], {"ENGINE_METRICS_TOKEN": TOKEN})
    try:
        line = running.line("engine: serving ")
        match = re.fullmatch(
            r"engine: serving http://127\.0\.0\.1:(\d+)/metrics and the dashboard at "
            r"http://127\.0\.0\.1:\1/dashboard \(with the token: .*\)",
            line,
        )
        assert match, line
        base = f"http://127.0.0.1:{match[1]}"
        for path in ("/metrics", "/dashboard", "/dashboard/data.json"):
            assert http_get(base + path)[0] == 401, path
            assert http_get(base + path, "wrong")[0] == 403, path
        status, body = http_get(f"{base}/metrics", TOKEN)
        assert status == 200
        assert b"engine_" in body
        assert http_get(f"{base}/dashboard?token={TOKEN}")[0] == 200
        # the receptor's 200 messages, and the history the app file asked for
        doc = data_when(
            base,
            lambda d: d["runtime"]["processed"] == 200 and len(d["history"]["time"]) >= 2,
            TOKEN,
        )
        assert doc["runtime"]["processed"] == 200
        assert doc["runtime"]["agents"] == 2
        assert doc["history"]["processed"][-1] == 200
        assert doc["latency"]["step"]["count"] == 3  # serving samples every 64th step
    finally:
        code, out, err = running.stop()
    assert code == 0, err
    assert err[-1] == "engine: stopped; 200 processed, 0 failed, 0 inputs refused"
    assert TOKEN not in out + "\n".join(err)  # never printed


@pytest.mark.parametrize("command", ["run", "top"])
def test_command_line_options_win_over_the_app_file(tmp_path: Path, command: str) -> None:
    # the file serves /metrics alone, on a port that is taken: the command line moves it,
    # adds the dashboard, and its token wins over the environment's
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        app = served_app(tmp_path, f"[metrics]\nport = {taken.getsockname()[1]}\n")
        argv = [command, str(app), "--metrics-port", "0", "--dashboard", "--token", TOKEN]
        running = Running(tmp_path, argv, {"ENGINE_METRICS_TOKEN": "not-this-one"})
        try:
            port = re.search(r":(\d+)/metrics and the dashboard", running.line("engine: serv"))
            assert port
            base = f"http://127.0.0.1:{port[1]}"
            assert http_get(f"{base}/metrics", "not-this-one")[0] == 403
            assert http_get(f"{base}/metrics", TOKEN)[0] == 200
            doc = data_when(base, lambda d: d["runtime"]["processed"] == 200, TOKEN)
            assert doc["runtime"]["processed"] == 200
        finally:
            code, out, err = running.stop()
    assert code == 0, err
    if command == "top":  # the view says where too, as it redraws the screen
        assert f"engine top: {app}, serving {base}/dashboard, " in out
    assert TOKEN not in out + "\n".join(err)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metrics-port", "70000"], "argument --metrics-port: expected a port number in "
         "0..65535, got '70000'"),
        (["--metrics-port", "-1"], "argument --metrics-port: expected a port number in "
         "0..65535, got '-1'"),
        (["--metrics-port", "http"], "argument --metrics-port: expected a port number in "
         "0..65535, got 'http'"),
        (["--metrics-port", "0", "--metrics-host", ""], "argument --metrics-host: expected a "
         "host name or address, got ''"),
    ],
)  # fmt: skip
def test_a_bad_metrics_port_is_a_usage_error(
    app_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    app = write(app_dir / "app.toml", "")
    for command in ("run", "top"):
        code, err = run_cli(capsys, command, str(app), *argv, "--for", "0")
        assert code == 2
        assert err[-1] == f"python -m engine {command}: error: {message}"


def test_a_port_that_cannot_be_bound_is_reported_cleanly(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = write(app_dir / "app.toml", "")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run_cli(capsys, "run", str(app), "--metrics-port", str(port), "--for", "0")
        assert code == 2
        assert err == [
            "engine: the command line is invalid (1 problem):",
            f"  - cannot serve metrics on http://127.0.0.1:{port}: [Errno 98] Address already "
            "in use @ --metrics-port",
        ]
        file = write(app_dir / "served.toml", f"[metrics]\nport = {port}\n")
        code, err = run_cli(capsys, "top", str(file), "--for", "0")
        assert code == 2
        assert err[0] == f"engine: {file} is invalid (1 problem):"
        assert err[1].endswith("@ $.metrics")


def test_serving_options_need_a_port_and_a_well_formed_token(
    app_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = write(app_dir / "app.toml", "")
    for option in (["--dashboard"], ["--metrics-host", "::1"], ["--token", TOKEN]):
        code, err = run_cli(capsys, "run", str(app), *option, "--for", "0")
        assert code == 2
        assert err == [
            "engine: the command line is invalid (1 problem):",
            f"  - {option[0]} needs --metrics-port (or a [metrics] table in {app})",
        ]
    monkeypatch.setenv("ENGINE_METRICS_TOKEN", "not a token")  # unused without a server
    assert run_cli(capsys, "run", str(app), "--for", "0")[0] == 0
    for argv, source in (
        ([], "ENGINE_METRICS_TOKEN"),
        (["--token", "with+plus"], "--token"),
        (["--token", ""], "--token"),
    ):
        code, err = run_cli(capsys, "run", str(app), "--metrics-port", "0", *argv, "--for", "0")
        assert code == 2
        assert err[1].startswith(f"  - the metrics token ({source}) must be 1 to 1024 letters")
        assert "not a token" not in err[1]
        assert "with+plus" not in err[1]
