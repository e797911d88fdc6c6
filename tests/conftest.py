"""Shared fixtures: every hot-path test runs against the compiled module and the twin; a real
PostgreSQL server (tests/pg.py) for the stores, with a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
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
