"""engine.store.PostgresStore on a real server (tests/pg.py; conftest's ``postgres_db`` is a
fresh database per test). The Store conformance suite runs on it in tests/test_store.py; here
is what only a shared, networked store has: reconnects, many writers, connection errors."""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys
import threading

import pg
import psycopg
import pytest

import engine
import engine.store as store
from engine import Machine, Runtime


def test_records_survive_a_reconnect(postgres_db: str) -> None:
    first = store.PostgresStore(postgres_db)
    ids = first.write([("s:a", 1.0, b"a1"), ("i:7", 2.5, b"\x00\xff" * 100)])
    first.close()
    again = store.PostgresStore(postgres_db, pool_size=1)
    assert [(r.id, r.agent, r.taken_at, r.record) for r in again.latest()] == [
        (ids[1], "i:7", 2.5, b"\x00\xff" * 100),
        (ids[0], "s:a", 1.0, b"a1"),
    ]
    assert again.write([("s:a", 3.0, b"a2")])[0] > max(ids)
    again.close()


def test_concurrent_writers_get_distinct_growing_ids_and_lose_nothing(postgres_db: str) -> None:
    db = store.PostgresStore(postgres_db, pool_size=3)
    writers, writes, batch = 6, 15, 40
    done: dict[int, list[tuple[list[int], list[tuple[str, float, bytes]]]]] = {
        w: [] for w in range(writers)
    }
    failures: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for n in range(writes):
                items = [(f"s:w{w}-{k}", float(n), f"{w}/{n}/{k}".encode()) for k in range(batch)]
                done[w].append((db.write(items), items))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failures
    every = [rid for w in done.values() for ids, _ in w for rid in ids]
    assert len(every) == len(set(every)) == writers * writes * batch
    for w in range(writers):
        assert len(done[w]) == writes
        mine = [rid for ids, _ in done[w] for rid in ids]
        assert mine == sorted(mine)  # a writer's ids grow, within a write and across them
        for ids, items in done[w][::5]:
            assert [(r.agent, r.taken_at, r.record) for r in map(db.read, ids)] == items
        for k in range(batch):
            assert [r.record for r in db.history(f"s:w{w}-{k}")] == [
                f"{w}/{n}/{k}".encode() for n in range(writes)
            ]
    assert len(db.latest()) == writers * batch
    db.close()


def test_latest_orders_agents_by_code_point_like_the_memory_store(postgres_db: str) -> None:
    keys = ["s:b", "s:B", "s:é", "s:a", "s:Z", "s:~", "s:日本", "s: ", "i:a", "x:00", "s:ab"]
    items = [(k, float(i), k.encode()) for i, k in enumerate(keys)]
    memory, db = store.MemoryStore(), store.PostgresStore(postgres_db)
    memory.write(items)
    db.write(items)
    assert [r.agent for r in db.latest()] == [r.agent for r in memory.latest()] == sorted(keys)
    asked = ["s:日本", "s:none", "s:a", "s:a"]
    assert [r.agent for r in db.latest(asked)] == [r.agent for r in memory.latest(asked)]
    db.close()


@pytest.mark.parametrize(
    "dsn",
    [
        "host=/nonexistent/engine-test dbname=postgres",  # no server there
        "this is not a dsn",
        "postgresql://user@/db?host=/nonexistent&bogus_option=1",
    ],
)
def test_a_bad_dsn_is_a_store_error(dsn: str) -> None:
    with pytest.raises(engine.StoreError, match=r"PostgresStore \(table 'snapshots'\)") as info:
        store.PostgresStore(dsn)
    assert isinstance(info.value.__cause__, psycopg.Error)
    assert isinstance(info.value, engine.EngineError)


def test_a_missing_database_is_a_store_error(postgres_dsn: str) -> None:
    from psycopg.conninfo import make_conninfo

    with pytest.raises(engine.StoreError, match="engine_no_such_db"):
        store.PostgresStore(make_conninfo(postgres_dsn, dbname="engine_no_such_db"))


@pytest.mark.parametrize(
    "table", ["", "Snapshots", "1st", "a-b", "s; DROP TABLE x", "a" * 55, "é", None]
)
def test_a_bad_table_name_is_refused_before_connecting(table: object) -> None:
    with pytest.raises(engine.InvalidArgumentError, match="table"):
        store.PostgresStore("this is not a dsn", table=table)  # type: ignore[arg-type]
    with pytest.raises(engine.InvalidArgumentError, match="pool_size"):
        store.PostgresStore("this is not a dsn", pool_size=0)


def test_tables_are_apart_and_a_reserved_word_is_a_fine_name(postgres_db: str) -> None:
    users, snapshots = (
        store.PostgresStore(postgres_db, table="user"),
        store.PostgresStore(postgres_db),
    )
    users.write([("s:a", 1.0, b"in user")])
    snapshots.write([("s:a", 1.0, b"in snapshots")])
    assert [r.record for r in users.latest()] == [b"in user"]
    assert [r.record for r in snapshots.latest()] == [b"in snapshots"]
    users.close()
    snapshots.close()


def test_a_key_postgres_cannot_hold_and_a_closed_store_are_typed_errors(postgres_db: str) -> None:
    db = store.PostgresStore(postgres_db)
    with pytest.raises(engine.InvalidArgumentError, match="NUL"):
        db.write([("s:fine", 1.0, b"x"), ("s:a\x00b", 1.0, b"y")])
    assert db.latest() == []  # nothing of that write
    db.close()
    with pytest.raises(engine.StoreError):
        db.latest()


def test_without_psycopg_import_works_and_making_a_store_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = "import sys; sys.modules['psycopg'] = None; import engine, engine.store"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    monkeypatch.setitem(sys.modules, "psycopg", None)  # the import fails as if not installed
    with pytest.raises(engine.ConfigError, match=r"pip install 'engine\[postgres\]'"):
        store.PostgresStore("host=/nonexistent")


def test_a_machine_without_postgresql_is_told_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    with pytest.raises(pg.ServerNotFound, match="install Debian's `postgresql` package"):
        pg.start_server()


def test_save_and_load_round_trip_through_postgres(postgres_db: str, impl: str) -> None:
    light = Machine("light", ["red", "green"], "red", [("red", "tick", "green")])
    rt = Runtime(implementation=impl)
    for i in range(20):
        rt.spawn(light, ("lamp", i), {"n": i})
        if i % 2:
            rt.send_nowait(("lamp", i), "tick")
    rt.run_until_idle()
    db = store.PostgresStore(postgres_db)
    assert len(store.save(rt, db)) == 20
    fresh = Runtime(implementation=impl)
    report = store.load(fresh, db, [light])
    assert report.failed == []
    assert sorted(report.restored) == sorted(("lamp", i) for i in range(20))
    assert [fresh.state(("lamp", i)) for i in range(20)] == ["red", "green"] * 10
    assert fresh.data(("lamp", 3)) == {"n": 3}
    db.close()
