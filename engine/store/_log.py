"""The commit log: every change of every agent made durable in group commits.

Theory of operation: the dispatcher marks an agent whenever it changes (mail accepted or
refused, a step, pause, resume, stop, restart, a timer fired; ``take_dirty`` collects and
clears the marks in one pass), and the runtime lists the agents it terminates. A commit
``capture``s, at one instant and on the runtime's thread, a snapshot record of every marked
agent and a tombstone of every terminated one, then ``write``s them in one store
transaction (from any thread). The store's newest record of each agent is therefore always
the agent as it was at the last commit that landed: a consistent cut of the whole runtime,
because every commit is captured at one instant and written whole, in order. Recovery is
``load``: the newest record of every agent, tombstones skipped.

What a commit guarantees: a message accepted before a capture is, in the store once that
commit lands, either reflected in its agent's state or still queued in its record; never
both, never neither. What may happen twice: steps taken after the last commit that landed
are lost with the process and taken again after recovery (at least once), and their outputs
are emitted again with the same ``OutputBatch.steps`` numbers, which is how an effector
deduplicates. Compaction keeps the store bounded: every ``compact_every`` commits it drops all
but the newest record of each agent, and every record of a terminated one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, final

import attrs

from ..core._exceptions import InvalidArgumentError
from ..core._validate import integer
from ._codec import Codec
from ._snapshot import encode_slots
from ._stores import TOMBSTONE, Store, agent_key

if TYPE_CHECKING:
    from ..runtime._runtime import Runtime


@final
@attrs.frozen
class Commit:
    """One group commit, captured and not yet written."""

    number: int
    """Commits are numbered from 1 in capture order."""
    records: list[tuple[str, float, bytes]]
    """``(agent key, taken_at, record)``: tombstones first, then snapshots."""
    agents: int
    """Agents captured (snapshots)."""
    terminated: int
    """Tombstones."""
    included: list[tuple[Any, bytes]] = attrs.field(factory=list)
    """``(agent id, record)`` of the records given to ``include`` (hibernated agents)."""


@final
class CommitLog:
    """Group commits of a runtime's changed agents into a store.

    Drive it yourself (``commit()`` after your own ``run``s: synchronous, on the runtime's
    thread), or let ``open_runtime(store=..., durability="log")`` run it as a task that
    captures on the trio thread and writes in a worker thread.

    Args:
        rt: The runtime. One log per runtime.
        store: Where the records go.
        codec: Encodes agent data and payloads (default: builtins only).
        compact_every: Compact the store after this many commits (0: never).
    """

    def __init__(
        self, rt: Runtime, store: Store, codec: Codec | None = None, compact_every: int = 256
    ) -> None:
        if rt._gone is not None:
            raise InvalidArgumentError("this runtime already has a commit log")
        self.compact_every = integer("compact_every", compact_every, 0, 2**31 - 1)
        self.rt = rt
        self.store = store
        self.codec = codec
        self.captured = 0
        """Number of the last commit captured."""
        self.durable = 0
        """Number of the last commit written (everything captured up to it is durable)."""
        self.records_written = 0
        self._writing = threading.Lock()  # commits are written one at a time, in order
        self._included: list[tuple[int, tuple[Any, str, float, bytes]]] = []
        self.on_written: list[Callable[[list[tuple[Any, bytes]]], object]] = []
        """Called (from the writing thread) with ``Commit.included`` once a commit is written."""
        rt._gone = []

    def close(self) -> None:
        """Detach from the runtime (terminations are no longer listed). The store stays open."""
        self.rt._gone = None

    def forget_changes(self) -> None:
        """Treat every agent as committed as it is now (after restoring them from this store,
        say, so the first commit does not write them all again)."""
        self.rt._d.take_dirty()
        if self.rt._gone:
            self.rt._gone.clear()

    def include(self, items: Sequence[tuple[Any, str, float, bytes]]) -> None:
        """Have the next commit write these ``(agent id, agent key, taken_at, record)`` too
        (after every commit captured before): records of agents that left the runtime, such
        as hibernated ones. They keep their place among the terminations of the round, so
        an agent hibernated and then terminated (or terminated, spawned again and
        hibernated) in one round ends with the record of what happened last."""
        at = len(self.rt._gone or [])
        self._included += [(at, item) for item in items]

    def capture(self) -> Commit | None:
        """Take the next commit: a record of every agent changed since the last capture and a
        tombstone of every agent terminated since; None if there is nothing to commit.

        Raises:
            CodecError: An agent's data or mail cannot be encoded. Nothing is captured, and
                the changes stay marked, so a later capture tries again.
        """
        rt = self.rt
        d = rt._d
        slots = d.take_dirty()
        gone = rt._gone or []
        included, self._included = self._included, []
        if not len(slots) and not gone and not included:
            return None
        try:
            codec = self.codec
            wall = time.time()
            records = []
            done = 0  # tombstones and included records in the order they happened
            for at, (_, key, taken, record) in included:
                records += [(agent_key(a, codec), wall, TOMBSTONE) for a in gone[done:at]]
                done = max(done, at)
                records.append((key, taken, record))
            records += [(agent_key(a, codec), wall, TOMBSTONE) for a in gone[done:]]
            records += encode_slots(rt, slots, codec)
        except BaseException:
            for slot in slots.tolist():  # undo the capture: the next one tries again
                d.touch(d.agent_at(slot))
            self._included[:0] = included
            raise
        rt._gone = []
        self.captured += 1
        written = [(agent_id, record) for _, (agent_id, _, _, record) in included]
        return Commit(self.captured, records, len(slots), len(gone), written)

    def write(self, commit: Commit) -> None:
        """Write a captured commit in one store transaction (from any thread; commits must
        be written in the order they were captured), then compact when it is time."""
        with self._writing:
            if commit.number != self.durable + 1:
                raise InvalidArgumentError(
                    f"commit {commit.number} written out of order (the last written is "
                    f"{self.durable})"
                )
            self.store.write(commit.records)
            self.durable = commit.number
            self.records_written += len(commit.records)
            if commit.included:
                for callback in self.on_written:
                    callback(commit.included)
            if self.compact_every and commit.number % self.compact_every == 0:
                self.store.compact()

    def commit(self) -> int:
        """Capture and write now (synchronously); return how many records were written."""
        taken = self.capture()
        if taken is None:
            return 0
        self.write(taken)
        return len(taken.records)
