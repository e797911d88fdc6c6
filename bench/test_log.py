"""Groups ``log`` and ``checkpoint``: what durability costs, against the raw database and a peer.

``log`` (the issue's target: ``"log"`` at >= 50 % of the raw insert rate): the table workload
(``conftest.workload``: 1000 agents) under ``open_runtime``, fed in chunks of ``CHUNK``
messages with one ``send_many_slots`` each, and acknowledged per chunk: with durability
``"none"`` the chunk is waited out (``wait_until_idle``), with ``"log"`` it is waited until
committed (``await rt.flush()``). The raw peers insert the same messages (agent, event,
priority) into the same kind of database with one ``executemany`` and one commit per chunk:
what a host that journals every message itself would pay for the same acknowledgement. On
SQLite (WAL, synchronous=NORMAL, as ``SQLiteStore``) and on PostgreSQL (a server of our own,
fsync on). Rates are messages per second.

``checkpoint`` (target: >= 100x the peer's steps per second): one agent counting steps, made
durable after every step (``send_nowait``, ``run``, ``CommitLog.commit``), against LangGraph's
``SqliteSaver`` on the equivalent one-node graph (a node adding 1 to ``n``), ``invoke``d once
per step on one thread; both on SQLite files with the same journal settings.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypedDict

import pytest
import trio
from conftest import AGENTS, STATES, Workload, rows

import engine
import engine.store as store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import pg  # (tests/pg.py: a throwaway PostgreSQL server)

LOG_MESSAGES = int(os.environ.get("BENCH_LOG_MESSAGES", "200000"))
CHUNK = 10_000
STEPS = int(os.environ.get("BENCH_CHECKPOINT_STEPS", "2000"))
MACHINE = engine.Machine("table", list(STATES), STATES[0], rows())


@pytest.fixture(scope="module")
def messages(workload: Workload) -> list[tuple[Any, Any, Any]]:
    n = min(LOG_MESSAGES, len(workload.agents))
    return [
        (workload.agents[i : i + CHUNK], workload.events[i : i + CHUNK],
         workload.priorities[i : i + CHUNK])
        for i in range(0, n, CHUNK)
    ]


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    dsn, stop = pg.start_server(fsync=True)
    try:
        yield dsn
    finally:
        stop()


def _run_engine(
    chunks: list[tuple[Any, Any, Any]], s: store.Store | None, interval: float
) -> engine.Runtime:
    async def main() -> engine.Runtime:
        kwargs: dict[str, Any] = {}
        if s is not None:
            kwargs.update(store=s, durability="log", commit_interval=interval)
        async with engine.open_runtime(**kwargs) as rt:
            for i in range(AGENTS):
                rt.spawn(MACHINE, i)
            if s is not None:
                await rt.flush()
            for slots, codes, priorities in chunks:
                rt.send_many_slots(slots, codes, priorities)
                await rt.wait_until_idle()
                if s is not None:
                    await rt.flush()
            return rt

    return trio.run(main)


def _check(rt: engine.Runtime, chunks: list[tuple[Any, Any, Any]]) -> None:
    assert int(rt.processed.sum()) == sum(len(c[0]) for c in chunks)


@pytest.mark.parametrize(
    ("where", "interval"), [("none", 0.0), ("sqlite", 0.0), ("sqlite", 0.05), ("postgres", 0.0)]
)
def test_log_engine(
    benchmark: Any,
    messages: list[Any],
    where: str,
    interval: float,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    benchmark.group = "log"
    files = iter(range(10**6))
    dsn = request.getfixturevalue("postgres") if where == "postgres" else ""

    made: list[store.Store] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        if where == "none":
            return (None,), {}
        if where == "sqlite":
            made.append(store.SQLiteStore(tmp_path / f"log{next(files)}.db"))
        else:
            made.append(store.PostgresStore(dsn, table=f"log{next(files)}"))
        return (made[-1],), {}

    def timed(s: store.Store | None) -> tuple[engine.Runtime, store.Store | None]:
        return _run_engine(messages, s, interval), s

    rt, s = benchmark.pedantic(timed, setup=setup, rounds=3)
    _check(rt, messages)
    if s is not None:
        recovered = engine.Runtime()
        assert not store.load(recovered, s, [MACHINE]).failed
        assert all(recovered.state(a) == rt.state(a) for a in range(AGENTS))  # all stored
    for each in made:
        each.close()
    benchmark.extra_info.update(
        system="engine", durability="none" if where == "none" else "log", database=where,
        commit_interval=interval,
        messages=sum(len(c[0]) for c in messages),
    )


def _raw_rows(chunks: list[tuple[Any, Any, Any]]) -> list[list[tuple[int, int, int]]]:
    return [
        list(zip(slots.tolist(), codes.tolist(), priorities.tolist(), strict=True))
        for slots, codes, priorities in chunks
    ]


@pytest.mark.parametrize("where", ["sqlite", "postgres"])
def test_log_raw_inserts(
    benchmark: Any, messages: list[Any], where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    benchmark.group = "log"
    chunks = _raw_rows(messages)
    files = iter(range(10**6))
    dsn = request.getfixturevalue("postgres") if where == "postgres" else ""
    table = "CREATE TABLE {} (id {}, agent INTEGER, event INTEGER, priority INTEGER)"
    made: list[Any] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        if where == "sqlite":
            db: Any = sqlite3.connect(tmp_path / f"raw{next(files)}.db", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(table.format("m", "INTEGER PRIMARY KEY"))
        else:
            import psycopg

            db = psycopg.connect(dsn, autocommit=True)
            name = f"raw{next(files)}"
            db.execute(table.format(name, "BIGSERIAL PRIMARY KEY"))
            db.name = name
        made.append(db)
        return (db,), {}

    def timed(db: Any) -> Any:
        if where == "sqlite":
            for chunk in chunks:
                db.execute("BEGIN")
                db.executemany("INSERT INTO m (agent, event, priority) VALUES (?, ?, ?)", chunk)
                db.execute("COMMIT")
        else:
            insert = f"INSERT INTO {db.name} (agent, event, priority) VALUES (%s, %s, %s)"
            for chunk in chunks:
                with db.transaction(), db.cursor() as cur:
                    cur.executemany(insert, chunk)
        return db

    db = benchmark.pedantic(timed, setup=setup, rounds=3)
    name = "m" if where == "sqlite" else db.name
    assert db.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0] == sum(map(len, chunks))
    for each in made:
        each.close()
    benchmark.extra_info.update(
        system=where, durability="raw", database=where, messages=sum(map(len, chunks))
    )


# -- per-step durable checkpoints against LangGraph -----------------------------------------

stepper = engine.Machine("stepper", ["on"], "on", [("on", "step", "on")])


@stepper.handler("on", "step")
def _step(agent: engine.AgentContext, event: engine.Event) -> None:
    agent.data["n"] += 1


def test_checkpoint_engine(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = "checkpoint"
    files = iter(range(10**6))

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        rt = engine.Runtime()
        log = store.CommitLog(rt, store.SQLiteStore(tmp_path / f"ck{next(files)}.db"))
        rt.spawn(stepper, "t", {"n": 0})
        log.commit()
        return (rt, log), {}

    def timed(rt: engine.Runtime, log: store.CommitLog) -> tuple[engine.Runtime, store.CommitLog]:
        send, run, commit = rt.send_nowait, rt.run, log.commit
        for _ in range(STEPS):
            send("t", "step")
            run()
            commit()
        return rt, log

    _, log = benchmark.pedantic(timed, setup=setup, rounds=3)
    recovered = engine.Runtime()
    store.load(recovered, log.store, [stepper])
    assert recovered.data("t") == {"n": STEPS}  # every step is in the store
    log.store.close()
    benchmark.extra_info.update(system="engine", steps=STEPS)


class _Count(TypedDict):
    n: int


def _langgraph(path: Path) -> tuple[Callable[..., Any], sqlite3.Connection]:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(_Count)
    graph.add_node("step", lambda s: {"n": s["n"] + 1})
    graph.add_edge(START, "step")
    graph.add_edge("step", END)
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")  # the settings SQLiteStore uses
    conn.execute("PRAGMA synchronous=NORMAL")
    app = graph.compile(checkpointer=SqliteSaver(conn))
    return app.invoke, conn


def test_checkpoint_langgraph(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = "checkpoint"
    files = iter(range(10**6))
    steps = max(1, STEPS // 20)  # ~100x slower: fewer steps, the rate is what is compared
    config = {"configurable": {"thread_id": "t"}}

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (_langgraph(tmp_path / f"lg{next(files)}.db"),), {}

    def timed(made: tuple[Callable[..., Any], sqlite3.Connection]) -> Any:
        invoke, _ = made
        state: Any = {"n": 0}
        for _ in range(steps):
            state = invoke(state, config)
        return made, state

    (_, conn), state = benchmark.pedantic(timed, setup=setup, rounds=3)
    assert state == {"n": steps}
    conn.close()
    benchmark.extra_info.update(system="langgraph", steps=steps)

