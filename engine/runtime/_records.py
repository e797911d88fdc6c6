"""Transition records as readers see them: numpy columns per batch, or one record at a time.

Theory of operation: the dispatcher writes each committed step into a ring of fixed-size C
records (``RECORD_DTYPE``: agent slot, machine, event, source and target state, output code,
priority, flags, time) with the payload and a handler's outputs as references beside them
(``Dispatcher.record``). Nothing becomes a Python object until someone reads. Every step has a
sequence number whether it is kept or not (the ring is off while nobody subscribes, unless
``Runtime(record=True)``), so a reader resuming from a cursor gets every record after it or a
``Gap`` saying how many it missed: never a silent hole.

A read copies a run of records out in one call (``Dispatcher.read_records``: two ``memcpy`` and
three lists) into a ``RecordBatch``: numpy columns a reader can filter and count at full speed,
with names and ``Transition`` objects made only for the rows it asks about. A
``RecordSubscription`` hands out batches (``columns``), lists (``batch``) or single records
(``async for``), and is cancel-safe: a read cancelled while it waits takes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

import numpy as np
import numpy.typing as npt
import trio

from ..core._validate import integer
from ..hotpath._metrics import RECORD_DTYPE, RECORD_FRONT
from ._ring import Gap, Transition

if TYPE_CHECKING:
    from ._runtime import Runtime

BATCH = 4096
"""Records a one-by-one reader copies out of the ring at a time."""
_LIMIT = 2**31 - 1


@final
class RecordBatch:
    """A run of transition records as numpy columns, and the records missed just before it.

    Columns are numpy arrays, one entry per record: ``seq``, ``machine`` (index into
    ``machines``), ``event``, ``source``, ``target`` (codes of that machine), ``priority``
    (0..3), ``time``. ``agent_ids`` and ``payloads`` are lists. Names, outputs and
    ``Transition`` objects are made on request (``events()``, ``outputs(i)``, ``transition(i)``,
    iteration).
    """

    __slots__ = (
        "_extras",
        "_flags",
        "_output",
        "_payloads",
        "_values",
        "agent_ids",
        "event",
        "gap_seq",
        "machine",
        "machines",
        "missed",
        "next_seq",
        "priority",
        "seq",
        "source",
        "target",
        "time",
    )

    def __init__(
        self,
        *,
        seq: npt.NDArray[np.int64],
        rows: npt.NDArray[Any],
        agent_ids: list[Any],
        payloads: list[Any] | None,
        extras: list[Any] | None,
        missed: int,
        gap_seq: int,
        next_seq: int,
        machines: list[Any],
        values: Any,
    ) -> None:
        self.seq = seq
        """Sequence number of each record."""
        self.machine: npt.NDArray[np.int32] = rows["machine"]
        self.event: npt.NDArray[np.int32] = rows["event"]
        self.source: npt.NDArray[np.int32] = rows["source"]
        self.target: npt.NDArray[np.int32] = rows["target"]
        self.priority: npt.NDArray[np.int32] = rows["priority"]
        self.time: npt.NDArray[np.float64] = rows["time"]
        self._output: npt.NDArray[np.int32] = rows["output"]
        self._flags: npt.NDArray[np.int32] = rows["flags"]
        self.agent_ids = agent_ids
        self._payloads = payloads
        self._extras = extras
        self.missed = missed
        """Records this reader missed just before this batch (0: none)."""
        self.gap_seq = gap_seq
        """Sequence number of the first record missed."""
        self.next_seq = next_seq
        """Where the next read starts (past records of other agents a filter skipped)."""
        self.machines = machines
        """The runtime's machines, by ``machine`` index."""
        self._values = values

    @property
    def gap(self) -> Gap | None:
        """The records missed just before this batch, or None."""
        return Gap(self.gap_seq, self.missed) if self.missed else None

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def payloads(self) -> list[Any]:
        """The payload of each record."""
        if self._payloads is None:
            self._payloads = [None] * len(self.seq)
        return self._payloads

    def _names(self, codes: npt.NDArray[np.int32], attr: str) -> npt.NDArray[Any]:
        out = np.empty(len(codes), dtype=object)
        for m in np.unique(self.machine).tolist():
            mine = self.machine == m
            names = np.array(getattr(self.machines[m], attr), dtype=object)
            out[mine] = names[codes[mine]]
        return out

    def events(self) -> npt.NDArray[Any]:
        """Event names (an object array)."""
        return self._names(self.event, "events")

    def sources(self) -> npt.NDArray[Any]:
        """State names before each step."""
        return self._names(self.source, "states")

    def targets(self) -> npt.NDArray[Any]:
        """State names after each step."""
        return self._names(self.target, "states")

    def front(self) -> npt.NDArray[np.bool_]:
        """True where the message came from the agent's front queue (a ``NextEvent`` or a
        postponed message replayed) rather than its mailbox."""
        front: npt.NDArray[np.bool_] = (self._flags & RECORD_FRONT) != 0
        return front

    def outputs(self, i: int) -> tuple[Any, ...]:
        """The outputs of record ``i``."""
        code = int(self._output[i])
        if code >= 0:
            return (self._values[code],)
        if code == -2 and self._extras is not None:
            return tuple(self._extras[i])
        return ()

    def transition(self, i: int) -> Transition:
        """Record ``i`` as a ``Transition``."""
        machine = self.machines[int(self.machine[i])]
        states = machine.states
        return Transition(
            int(self.seq[i]),
            self.agent_ids[i],
            states[int(self.source[i])],
            machine.events[int(self.event[i])],
            states[int(self.target[i])],
            self.outputs(i),
            float(self.time[i]),
            int(self.priority[i]),
            None if self._payloads is None else self._payloads[i],
            bool(self._flags[i] & RECORD_FRONT),
        )

    def __iter__(self) -> Any:
        for i in range(len(self.seq)):
            yield self.transition(i)

    def transitions(self) -> list[Transition]:
        """Every record as a ``Transition``."""
        return list(self)

    def take(self, start: int, stop: int, missed: int = 0) -> RecordBatch:
        """Rows ``start:stop`` as a batch of their own (with ``missed`` before them)."""
        rows = np.empty(stop - start, dtype=RECORD_DTYPE)
        for name in ("machine", "event", "source", "target", "priority", "time"):
            rows[name] = getattr(self, name)[start:stop]
        rows["output"] = self._output[start:stop]
        rows["flags"] = self._flags[start:stop]
        last = self.next_seq if stop >= len(self.seq) else int(self.seq[stop])
        return RecordBatch(
            seq=self.seq[start:stop],
            rows=rows,
            agent_ids=self.agent_ids[start:stop],
            payloads=None if self._payloads is None else self._payloads[start:stop],
            extras=None if self._extras is None else self._extras[start:stop],
            missed=missed,
            gap_seq=self.gap_seq,
            next_seq=last,
            machines=self.machines,
            values=self._values,
        )


def read(rt: Runtime, seq: int, limit: int, agent_id: Any, every: Any) -> RecordBatch:
    """Up to ``limit`` records from ``seq`` on (of ``agent_id`` only, unless it is ``every``)."""
    d = rt._d
    first, rows, payloads, extras, ids = d.read_records(seq, limit)
    n = len(rows)
    seqs = np.arange(first, first + n, dtype=np.int64)
    if agent_id is not every and n:
        keep = _of_agent(rt, rows, ids, agent_id)
        if len(keep) < n:
            rows, seqs = rows[keep], seqs[keep]
            picked = keep.tolist()
            ids = [ids[i] for i in picked]
            if payloads is not None:
                payloads = [payloads[i] for i in picked]
            if extras is not None:
                extras = [extras[i] for i in picked]
    return RecordBatch(
        seq=seqs,
        rows=rows,
        agent_ids=ids,
        payloads=payloads,
        extras=extras,
        missed=first - seq,
        gap_seq=seq,
        next_seq=first + n,
        machines=d.machines,
        values=d.output_values,
    )


def _of_agent(rt: Runtime, rows: npt.NDArray[Any], ids: list[Any], agent_id: Any) -> Any:
    """Indexes of the records of ``agent_id``: candidates by its slot (while it lives), each
    checked by id (a slot may have held another agent)."""
    candidates: Any = range(len(ids))
    try:
        if not rt._d.record_gone and agent_id in rt._d:  # (no slot held another agent since)
            candidates = np.flatnonzero(rows["slot"] == rt._d.ref(agent_id).slot).tolist()
    except Exception:  # an unhashable id: no agent has it, look at every record
        pass
    return np.array([i for i in candidates if same(ids[i], agent_id)], dtype=np.intp)


def same(a: Any, b: Any) -> bool:
    """``a == b``, False where comparing raises (an id whose ``__eq__`` raises is another)."""
    try:
        return bool(a == b)
    except Exception:  # an id whose == raises is not this agent
        return False


@final
class RecordSubscription:
    """Transition records of one agent or of all, from a sequence number on: as numpy
    columns (``await columns()``), as lists (``await batch()``) or one at a time (``async
    for``). Each read waits until there is something to return: records, or a ``Gap`` for
    records this reader missed. A read cancelled while it waits takes nothing."""

    def __init__(
        self, rt: Runtime, progress: trio.lowlevel.ParkingLot, agent_id: Any, seq: int, every: Any
    ) -> None:
        self._rt = rt
        self._progress = progress
        self._agent = agent_id
        self._every = every
        self._cursor = seq
        self._pending: RecordBatch | None = None  # read from the ring, not yet handed out
        self._at = 0  # first row of _pending not yet handed out
        self._gap = False  # _pending's gap not yet handed out

    @property
    def seq(self) -> int:
        """Sequence number of the next record this reader will get (resume from it)."""
        p = self._pending
        if p is not None:
            if self._gap:
                return p.gap_seq
            if self._at < len(p):
                return int(p.seq[self._at])
        return self._cursor

    def _ready(self, limit: int) -> bool:
        """Something to hand out (reading the ring if nothing is pending)."""
        p = self._pending
        if p is not None and (self._gap or self._at < len(p)):
            return True
        batch = read(self._rt, self._cursor, limit, self._agent, self._every)
        self._cursor = batch.next_seq
        if batch.missed or len(batch):
            self._pending, self._at, self._gap = batch, 0, bool(batch.missed)
            return True
        self._pending = None
        return False

    async def _wait(self, limit: int) -> None:
        integer("limit", limit, 1, _LIMIT)
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._ready(limit):
            await self._progress.park()

    async def columns(self, limit: int = 65_536) -> RecordBatch:
        """The next records (at most ``limit``) as a ``RecordBatch``; its ``gap`` is the
        records missed just before them."""
        await self._wait(limit)
        p = self._pending
        assert p is not None
        missed = p.missed if self._gap else 0
        if self._at == 0 and len(p) <= limit:
            out = p if missed == p.missed else p.take(0, len(p), missed)
            self._at = len(p)
        else:
            stop = min(len(p), self._at + limit)
            out = p.take(self._at, stop, missed)
            self._at = stop
        self._gap = False
        await trio.lowlevel.cancel_shielded_checkpoint()
        return out

    async def batch(self, limit: int = BATCH) -> list[Transition | Gap]:
        """The next records (at most ``limit``, a ``Gap`` first where some were missed)."""
        await self._wait(limit)
        p = self._pending
        assert p is not None
        out: list[Transition | Gap] = []
        if self._gap:
            out.append(p.gap)  # type: ignore[arg-type]
            self._gap = False
        stop = min(len(p), self._at + limit - len(out))
        out.extend(p.transition(i) for i in range(self._at, stop))
        self._at = stop
        await trio.lowlevel.cancel_shielded_checkpoint()
        return out

    def __aiter__(self) -> RecordSubscription:
        return self

    async def __anext__(self) -> Transition | Gap:
        await self._wait(BATCH)
        p = self._pending
        assert p is not None
        item: Transition | Gap
        if self._gap:
            item = p.gap  # type: ignore[assignment]
            self._gap = False
        else:
            item = p.transition(self._at)
            self._at += 1
        await trio.lowlevel.cancel_shielded_checkpoint()
        return item
