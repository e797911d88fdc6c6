"""Shared fixtures: every hot-path test runs against the compiled module and the twin; a real
PostgreSQL server (tests/pg.py) for the stores, with a fresh database per test; a real model
server (tests/llm_server.py) for the engine-llm plugin."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pg
import pytest

import engine
from engine import hotpath as _hotpath

pytest_plugins = ["pytester"]  # tests/test_testing_plugin.py runs pytest sessions

IMPLEMENTATIONS = ["native", "python"]


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> str:
    """Name of a hot-path implementation. ``native`` fails (not skips) when it is missing,
    unless the build was made pure on purpose with ``ENGINE_NO_EXTENSIONS=1``."""
    name: str = request.param
    if name == "native" and _hotpath.NO_EXTENSIONS:
        pytest.skip("ENGINE_NO_EXTENSIONS=1: the compiled module is disabled on purpose")
    _hotpath.implementation(name)  # raises ImportError if the extension is missing
    return name


@pytest.fixture
def make_runtime(impl: str) -> Callable[..., engine.Runtime]:
    """Factory for runtimes on the implementation under test."""

    def make(**kwargs: Any) -> engine.Runtime:
        return engine.Runtime(implementation=impl, **kwargs)

    return make


@pytest.fixture
def light() -> engine.Machine:
    """The traffic light from the README."""
    return engine.Machine(
        "light",
        states=["red", "green", "yellow"],
        initial="red",
        transitions=[
            ("red", "tick", "green", "go"),
            ("green", "tick", "yellow", "slow"),
            ("yellow", "tick", "red", "stop"),
            ("*", "fault", "red", "stop"),
        ],
    )


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The DSN of a throwaway PostgreSQL server started for the session (fsync off), stopped
    and removed at its end. Fails, never skips, when the server is not installed."""
    try:
        dsn, stop = pg.start_server(fsync=False)
    except pg.ServerNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield dsn
    finally:
        stop()


_databases = itertools.count()


@pytest.fixture
def postgres_db(postgres_dsn: str) -> Iterator[str]:
    """The DSN of a fresh, empty database on the session's server, dropped after the test (so
    no test sees another's tables)."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = f"test_{next(_databases)}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(postgres_dsn, dbname=name)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:  # FORCE: a store left open
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def llm_server() -> Iterator[str]:
    """The base URL (``http://127.0.0.1:<port>``) of the test model server, a process of its
    own (hypercorn on trio) started for the session; its switches go in the path, see
    tests/llm_server.py."""
    script = Path(__file__).with_name("llm_server.py")
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=script.parent
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "listening <url>", or "" if it died
        if not line.startswith("listening "):
            pytest.fail(f"the model server did not start: {line!r}", pytrace=False)
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """A real local Ray instance for the session (2 CPUs, no dashboard), stopped at the end;
    the shards' machine modules of tests/ are shipped to its workers by value, and the
    workers import the engine this process imported (not whichever checkout the editable
    install points at)."""
    import cluster_machines
    import ray
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(cluster_machines)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(Path(engine.__file__).parent.parent)}},
    )
    try:
        yield ray
    finally:
        ray.shutdown()
