"""Group ``store``: snapshot and restore of idle agents on SQLite, against raw ``executemany``
of rows of the same sizes into the same kind of database (the issue's target: ≥ 30 % of the
raw rate).

``BENCH_STORE_AGENTS`` (default 10**6) idle agents of a small machine with int ids and small
dict data. ``save``: capture + encode + one ``SQLiteStore.write``; ``load``: read the newest
records + decode + restore into a fresh runtime. The raw peers write (and read back) the same
number of rows whose blobs are as long as the engine's records, with one ``executemany`` in
one transaction (and one ``SELECT``), on a fresh file each round. Every round is checked: the
store holds one record per agent, and the restored runtime has every agent in its state.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import engine
import engine.store as store

AGENTS = int(os.environ.get("BENCH_STORE_AGENTS", "1000000"))
GROUP = "store"
MACHINE = engine.Machine(
    "meter", ["idle", "on"], "idle", [("idle", "on", "on"), ("on", "off", "idle")]
)


@pytest.fixture(scope="module")
def runtime() -> engine.Runtime:
    rt = engine.Runtime()
    for i in range(AGENTS):
        rt.spawn(MACHINE, i, {"reading": i % 97})
    rt.send_many(list(range(0, AGENTS, 2)), ["on"] * len(range(0, AGENTS, 2)))
    rt.run_until_idle()
    return rt


@pytest.fixture(scope="module")
def record_size(runtime: engine.Runtime) -> int:
    (record,) = store.records(runtime, [0])
    return len(record[2])


def test_save(benchmark: Any, runtime: engine.Runtime, tmp_path: Path) -> None:
    benchmark.group = GROUP
    paths = iter(range(10**6))

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (store.SQLiteStore(tmp_path / f"save{next(paths)}.db"),), {}

    def timed(db: store.SQLiteStore) -> store.SQLiteStore:
        store.save(runtime, db)
        return db

    db = benchmark.pedantic(timed, setup=setup, rounds=3)
    assert len(db.latest()) == AGENTS
    db.close()
    benchmark.extra_info.update(system="engine", mode="save", agents=AGENTS, messages=AGENTS)


def test_load(benchmark: Any, runtime: engine.Runtime, tmp_path: Path) -> None:
    benchmark.group = GROUP
    db = store.SQLiteStore(tmp_path / "load.db")
    store.save(runtime, db)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (engine.Runtime(),), {}

    def timed(fresh: engine.Runtime) -> engine.Runtime:
        report = store.load(fresh, db, [MACHINE])
        assert not report.failed
        return fresh

    fresh = benchmark.pedantic(timed, setup=setup, rounds=3)
    assert len(fresh) == AGENTS
    assert (fresh.state(0), fresh.state(1)) == ("on", "idle")
    db.close()
    benchmark.extra_info.update(system="engine", mode="load", agents=AGENTS, messages=AGENTS)


def test_raw_executemany(benchmark: Any, record_size: int, tmp_path: Path) -> None:
    benchmark.group = GROUP
    blob = b"x" * record_size
    rows = [(f"i:{i:x}", 0.0, blob) for i in range(AGENTS)]
    paths = iter(range(10**6))

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        db = sqlite3.connect(tmp_path / f"raw{next(paths)}.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, agent TEXT, taken_at REAL, record BLOB)"
        )
        return (db,), {}

    def timed(db: sqlite3.Connection) -> sqlite3.Connection:
        db.execute("BEGIN")
        db.executemany("INSERT INTO t (agent, taken_at, record) VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
        return db

    db = benchmark.pedantic(timed, setup=setup, rounds=3)
    assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == AGENTS
    db.close()
    benchmark.extra_info.update(system="sqlite", mode="insert", agents=AGENTS, messages=AGENTS)


def test_raw_select(benchmark: Any, record_size: int, tmp_path: Path) -> None:
    benchmark.group = GROUP
    db = sqlite3.connect(tmp_path / "raw-read.db", isolation_level=None)
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, agent TEXT, taken_at REAL, record BLOB)")
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO t (agent, taken_at, record) VALUES (?, ?, ?)",
        [(f"i:{i:x}", 0.0, b"x" * record_size) for i in range(AGENTS)],
    )
    db.execute("COMMIT")
    count = benchmark.pedantic(
        lambda: len(db.execute("SELECT id, agent, taken_at, record FROM t").fetchall()),
        rounds=3,
    )
    assert count == AGENTS
    db.close()
    benchmark.extra_info.update(system="sqlite", mode="select", agents=AGENTS, messages=AGENTS)
