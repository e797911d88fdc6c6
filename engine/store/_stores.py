"""Stores: where snapshot records live, per agent, with ids and times.

Theory of operation: a store keeps opaque records (bytes made by ``encode``) under an agent
key (``agent_key``: the id's exact encoding, so ``1``, ``"1"`` and ``(1,)`` are three agents)
with a wall-clock time, and gives each record an id that only grows. ``write`` stores many in
one transaction (all or none), ``latest`` reads the newest record of each agent, ``history``
an agent's records oldest first, ``forget`` drops an agent's records but the newest ``keep``,
``compact`` does that for every agent at once. An empty record is a tombstone (the agent was
terminated): ``latest`` returns it like any record, and ``compact`` drops every record of an
agent whose newest record is one.
Stores know nothing of agents or codecs: checksums and decoding happen above them, so a
damaged record fails alone. Calls are synchronous and never made from the drain loop.

Keys that start with ``RESERVED`` (``"engine:"``) are the engine's own records, not agents
(``engine.observe.MetricsHistory`` keeps its readings under one, ``save_recording`` a
recording's chunks under one per recording): ``agent_key`` never makes one (its keys start
``s:``, ``i:`` or ``x:``), ``load`` skips them and ``compact`` leaves them alone (a recording
is many records of one key; each owner drops its own with ``forget``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, final, runtime_checkable

import attrs

from ..core._exceptions import StoreError
from ._codec import Codec


@final
@attrs.frozen
class StoredRecord:
    """One record as a store returns it."""

    id: int
    """Assigned by the store; larger is newer."""
    agent: str
    """The agent key (``agent_key``)."""
    taken_at: float
    """Wall-clock time given at ``write``."""
    record: bytes


@runtime_checkable
class Store(Protocol):
    """What ``save``, ``load`` (and later the commit log) need of a store."""

    def write(self, records: Sequence[tuple[str, float, bytes]]) -> list[int]:
        """Store ``(agent key, taken_at, record)`` items in one transaction; return their ids."""
        ...

    def latest(self, agents: Iterable[str] | None = None) -> list[StoredRecord]:
        """The newest record of each agent (of ``agents``, or of every agent)."""
        ...

    def history(self, agent: str) -> list[StoredRecord]:
        """An agent's records, oldest first."""
        ...

    def read(self, record_id: int) -> StoredRecord:
        """One record by id (``KeyError`` if there is none)."""
        ...

    def forget(self, agent: str, keep: int = 0) -> int:
        """Drop the agent's records but the newest ``keep``; return how many were dropped."""
        ...

    def compact(self, keep: int = 1) -> int:
        """Keep the newest ``keep`` (at least 1) records of each agent and none of an agent
        whose newest record is a tombstone (``b""``); return how many were dropped. Reserved
        keys (``RESERVED``) are not agents: their records are left as they are."""
        ...

    def close(self) -> None: ...


TOMBSTONE = b""
"""The record that says "this agent was terminated"."""

RESERVED = "engine:"
"""The prefix of keys that hold the engine's own records, never an agent's (``agent_key``
never makes one); readers of every agent (``load``) skip them."""


def is_reserved(key: str) -> bool:
    """Whether ``key`` is one of the engine's own records rather than an agent's."""
    return key.startswith(RESERVED)


def agent_key(agent_id: Any, codec: Codec | None = None) -> str:
    """The text a store files an agent under: readable for str and int ids, the hex of the
    id's exact encoding for anything else (so equal-looking ids of other types differ)."""
    if type(agent_id) is str:
        return "s:" + agent_id
    if type(agent_id) is int:
        return f"i:{agent_id:x}"
    return "x:" + (codec or _KEY_CODEC).pack(agent_id, agent=agent_id).hex()


_NOT_RESERVED = f"substr(agent, 1, {len(RESERVED)}) <> '{RESERVED}'"
"""SQL that is true of an agent's key, false of a reserved one (``compact`` leaves those)."""

_KEY_CODEC = Codec()
"""Builtins only: enough for ids (made once, not per key)."""


@final
class MemoryStore:
    """A store in this process's memory (tests, and runtimes that only need rollback)."""

    def __init__(self) -> None:
        self._records: dict[int, StoredRecord] = {}
        self._by_agent: dict[str, list[int]] = {}
        self._next = 1
        self._lock = threading.Lock()

    def write(self, records: Sequence[tuple[str, float, bytes]]) -> list[int]:
        items = [(_text(a), float(t), _blob(r)) for a, t, r in records]  # check all first
        with self._lock:
            ids = []
            for agent, taken_at, record in items:
                rid, self._next = self._next, self._next + 1
                self._records[rid] = StoredRecord(rid, agent, taken_at, record)
                self._by_agent.setdefault(agent, []).append(rid)
                ids.append(rid)
            return ids

    def latest(self, agents: Iterable[str] | None = None) -> list[StoredRecord]:
        with self._lock:
            keys = sorted(self._by_agent) if agents is None else list(agents)
            return [self._records[self._by_agent[a][-1]] for a in keys if self._by_agent.get(a)]

    def history(self, agent: str) -> list[StoredRecord]:
        with self._lock:
            return [self._records[rid] for rid in self._by_agent.get(agent, ())]

    def read(self, record_id: int) -> StoredRecord:
        with self._lock:
            return self._records[record_id]

    def forget(self, agent: str, keep: int = 0) -> int:
        with self._lock:
            ids = self._by_agent.get(agent, [])
            drop = ids[: max(0, len(ids) - keep)]
            for rid in drop:
                del self._records[rid]
            if len(drop) == len(ids):
                self._by_agent.pop(agent, None)
            else:
                del ids[: len(drop)]
            return len(drop)

    def compact(self, keep: int = 1) -> int:
        keep = _keep(keep)
        dropped = 0
        with self._lock:
            for agent in [a for a in self._by_agent if not is_reserved(a)]:
                ids = self._by_agent[agent]
                cut = len(ids) if self._records[ids[-1]].record == TOMBSTONE else len(ids) - keep
                for rid in ids[: max(0, cut)]:
                    del self._records[rid]
                dropped += max(0, cut)
                if cut >= len(ids):
                    del self._by_agent[agent]
                elif cut > 0:
                    del ids[:cut]
        return dropped

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    taken_at REAL NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_by_agent ON snapshots (agent, id);
"""


@final
class SQLiteStore:
    """The embedded store: one SQLite file (stdlib ``sqlite3``), WAL journal, one writer,
    every ``write`` one transaction. ``":memory:"`` works too (one connection)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()  # one connection, used from any thread, one at a time
        with self._errors():
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        with self._guard():
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def write(self, records: Sequence[tuple[str, float, bytes]]) -> list[int]:
        items = [(_text(a), float(t), _blob(r)) for a, t, r in records]  # check all first
        insert = "INSERT INTO snapshots (agent, taken_at, record) VALUES (?, ?, ?)"
        with self._guard():
            db = self._db
            if len(items) == 1:  # one statement is one transaction (a per-step checkpoint)
                row_id = db.execute(insert, items[0]).lastrowid
                assert row_id is not None
                return [row_id]
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(insert, items)
                # AUTOINCREMENT: the one writer's rows got consecutive ids that never come back
                (last,) = db.execute("SELECT last_insert_rowid()").fetchone()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return list(range(last - len(items) + 1, last + 1))

    def latest(self, agents: Iterable[str] | None = None) -> list[StoredRecord]:
        query = (
            "SELECT s.id, s.agent, s.taken_at, s.record FROM snapshots s JOIN "
            "(SELECT agent, MAX(id) AS id FROM snapshots GROUP BY agent) n ON s.id = n.id "
            "ORDER BY s.agent"
        )
        with self._guard():
            if agents is None:
                rows = self._db.execute(query).fetchall()
            else:
                rows = []
                for agent in agents:
                    rows += self._db.execute(
                        "SELECT id, agent, taken_at, record FROM snapshots WHERE agent = ? "
                        "ORDER BY id DESC LIMIT 1",
                        (agent,),
                    ).fetchall()
        return [StoredRecord(*row) for row in rows]

    def history(self, agent: str) -> list[StoredRecord]:
        with self._guard():
            rows = self._db.execute(
                "SELECT id, agent, taken_at, record FROM snapshots WHERE agent = ? ORDER BY id",
                (agent,),
            ).fetchall()
        return [StoredRecord(*row) for row in rows]

    def read(self, record_id: int) -> StoredRecord:
        with self._guard():
            row = self._db.execute(
                "SELECT id, agent, taken_at, record FROM snapshots WHERE id = ?", (record_id,)
            ).fetchone()
        if row is None:
            raise KeyError(record_id)
        return StoredRecord(*row)

    def forget(self, agent: str, keep: int = 0) -> int:
        with self._guard():
            cursor = self._db.execute(
                "DELETE FROM snapshots WHERE agent = ? AND id NOT IN "
                "(SELECT id FROM snapshots WHERE agent = ? ORDER BY id DESC LIMIT ?)",
                (agent, agent, max(0, keep)),
            )
            return cursor.rowcount

    def compact(self, keep: int = 1) -> int:
        keep = _keep(keep)
        with self._guard():
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                dropped = db.execute(
                    "DELETE FROM snapshots WHERE id IN (SELECT id FROM (SELECT id, "
                    "ROW_NUMBER() OVER (PARTITION BY agent ORDER BY id DESC) AS n, "
                    "FIRST_VALUE(length(record)) OVER (PARTITION BY agent ORDER BY id DESC) "
                    f"AS newest FROM snapshots WHERE {_NOT_RESERVED}) WHERE n > ? OR newest = 0)",
                    (keep,),
                ).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return dropped

    def close(self) -> None:
        with self._guard():
            self._db.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """The connection, one caller at a time; SQLite's errors as ``StoreError``."""
        with self._lock, self._errors():
            yield

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"SQLiteStore ({self.path})", exc) from exc


def _text(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(f"an agent key must be a str, got {type(value).__name__}")
    return value


def _keep(value: Any) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"keep must be an int of at least 1, got {value!r}")
    return value


def _blob(value: Any) -> bytes:
    if type(value) is bytes:
        return value
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"a record must be bytes, got {type(value).__name__}")
    return bytes(value)
