"""``record_to_store``: a running runtime's transition records saved to a store as it runs.

Theory of operation: a ``Recorder`` is two tasks around one record subscription. The reader
takes batches as the drain loop makes them (``sub.columns()``, cancel-safe: a cancelled read
takes nothing) and packs each record with the codec at once, on the trio thread, so what is
saved is each payload and output as it was when it was read, and a record the codec cannot
encode is known at once: it is kept as a one-record gap (counted, its error kept), because a
recording must not stop the runtime and must not pretend to be whole. A ``Gap`` the
subscription reports (the recorder fell more than the runtime's ``retention`` behind) is kept
as a gap marker and counted the same way. The writer, every ``every`` seconds, frames what
was packed into chunks (``engine.store.save_recording``'s format: packed rows joined after an
array header are the body) and writes them in one ``store.write`` in a worker thread, so a
slow store never delays the runtime. A write that fails is counted with its error and the
records stay for the next one (as the metrics history's saves do); while they pile up past
``MAX_PENDING`` the reader stops reading, and what the runtime overwrites meanwhile becomes
a ``Gap``: memory stays bounded and the recording stays honest. Cancelled, the recorder
reads what is left (synchronously, from its cursor) and writes it once more, shielded, for
at most ``SHUTDOWN_TIMEOUT`` seconds.

A new recording starts with the first record after the call; one that exists continues
where it ended, so a recorder started again on the same runtime leaves no silent hole (the
records in between, or a ``Gap`` for those no longer retained). One that ends past the
runtime's records is another run's, and is refused.
"""

from __future__ import annotations

import time
from typing import Any, Final, final

import attrs
import trio

from ..core._exceptions import InvalidArgumentError, brief
from ..core._validate import number
from ..runtime._records import read
from ..runtime._runtime import Runtime
from ._chunk import CHUNK, Row, array_head, frame_chunk, row_end, row_error, stored_end
from ._codec import Codec, CodecError
from ._recording import batch_rows, check_codec, check_store, recording_key
from ._stores import Store

BATCH: Final = 65_536
"""Records the reader takes from the subscription at a time."""
MAX_PENDING: Final = 1 << 20
"""Records read and not yet written past which the reader waits for a write to succeed."""
SHUTDOWN_TIMEOUT: Final = 10.0
"""Seconds the last write may take when the recorder is cancelled."""


@final
@attrs.frozen
class RecorderStatistics:
    """How a ``Recorder`` is doing."""

    name: str
    """The recording's name."""
    seq: int
    """Sequence number of the next record the recorder will read."""
    written: int
    """Items (transitions and gap markers) written to the store."""
    pending: int
    """Items read and not written yet (they wait for the next write)."""
    writes: int
    """Store writes that succeeded."""
    failed_writes: int
    """Store writes that failed (their items were kept for the next one)."""
    last_error: Exception | None
    """The error of the last failed write."""
    gaps: int
    """Gaps taken: runs of records missed because the recorder fell behind the runtime's
    retention (kept as gap markers: the recording has holes)."""
    missed: int
    """Records those gaps stand for."""
    unencodable: int
    """Records the codec could not encode (each kept as a one-record gap marker)."""
    last_codec_error: CodecError | None
    """The error of the last of those (names its sequence number)."""


@final
class Recorder:
    """Saves a runtime's transition records to a store under a name as the runtime runs:
    made and run by ``record_to_store``, which reports it; ``statistics()`` says how it goes.
    """

    def __init__(
        self,
        rt: Runtime,
        store: Store,
        name: str,
        *,
        agent_id: Any = None,
        every: float = 1.0,
        codec: Codec | None = None,
    ) -> None:
        if not isinstance(rt, Runtime):
            raise InvalidArgumentError(f"rt must be an engine.Runtime, got {brief(rt)}")
        self._key = recording_key(name)
        self.name: str = name
        """The recording's name."""
        self.store: Store = check_store(store)
        """Where the recording is kept."""
        every = number("every", every)
        if not every > 0:
            raise InvalidArgumentError(f"every must be more than 0 seconds, got {brief(every)}")
        self.every: float = every
        """Seconds between writes."""
        self.agent_id: Any = agent_id
        """The agent recorded, or None: every agent."""
        self._rt = rt
        self._codec = check_codec(codec)
        self._pending: list[tuple[int, int, bytes]] = []  # (seq, seq after it, packed row)
        self._room = trio.Event()  # set after a write that made room
        self._cursor = 0
        self._written = self._writes = self._failed = 0
        self._gaps = self._missed = self._unencodable = 0
        self._last_error: Exception | None = None
        self._last_codec_error: CodecError | None = None

    def __repr__(self) -> str:
        return f"Recorder({self.name!r}, written={self._written}, pending={len(self._pending)})"

    def statistics(self) -> RecorderStatistics:
        """A snapshot of the recorder's counts."""
        return RecorderStatistics(
            self.name, self._cursor, self._written, len(self._pending), self._writes,
            self._failed, self._last_error, self._gaps, self._missed, self._unencodable,
            self._last_codec_error,
        )  # fmt: skip

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Record until cancelled, then write what is left (see the module docstring);
        reports the recorder to ``task_status`` once records are being kept.

        Raises:
            RuntimeNotRunningError: The runtime is not under ``open_runtime``.
            InvalidArgumentError: The recording in the store ends past the runtime's records.
            CorruptRecordError: The recording's last chunk in the store is damaged.
            StoreError: The store failed when the recording's end was read.
        """
        rt = self._rt
        # subscribed first (the probe only keeps the ring on), so nothing made while the
        # store is read is lost
        async with rt.subscribe(self.agent_id) as probe:
            end = await trio.to_thread.run_sync(stored_end, self.store, self._key, self.name)
            if end is not None and (end > probe.seq or self.name not in rt.recording_names):
                raise InvalidArgumentError(
                    f"recording {self.name!r} (ending at seq {end}) is another run's: this "
                    f"runtime did not record it (forget it, or use another name)"
                )
            rt.recording_names.add(self.name)
            start = probe.seq if end is None else end
            async with rt.subscribe(self.agent_id, from_seq=start) as sub:
                self._cursor = start
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._read, sub)
                        task_status.started(self)
                        while True:
                            await trio.sleep(self.every)
                            await self._write()
                finally:
                    with trio.move_on_after(SHUTDOWN_TIMEOUT) as scope:
                        scope.shield = True
                        self._drain(sub)
                        await self._write()

    async def _read(self, sub: Any) -> None:
        while True:
            if len(self._pending) >= MAX_PENDING:  # the store is failing: let the ring overflow
                await self._room.wait()
                continue
            batch = await sub.columns(BATCH)
            self._take(batch_rows(batch))
            self._cursor = sub.seq

    def _drain(self, sub: Any) -> None:
        """Take what the subscription has not handed out yet, synchronously."""
        rt, seq = self._rt, sub.seq
        while seq < rt._d.record_seq:
            batch = read(rt, seq, BATCH, self.agent_id, None)
            self._take(batch_rows(batch))
            if batch.next_seq <= seq:  # (cannot happen: a read always moves on)
                break
            seq = batch.next_seq
        self._cursor = seq

    def _take(self, rows: list[Row]) -> None:
        """Pack rows into the pending list: a gap is counted, a record the codec cannot
        encode becomes a one-record gap."""
        pack, pending = self._codec.pack, self._pending
        for row in rows:
            if len(row) == 2:
                self._gaps += 1
                self._missed += row[1]
            try:
                packed = pack(row)
            except Exception:  # a CodecError, or a user's encode function failing
                self._unencodable += 1
                self._last_codec_error = row_error(self._codec, [row])
                row = [row[0], 1]
                packed = pack(row)
            pending.append((row[0], row_end(row), packed))

    async def _write(self) -> None:
        """Write what is pending, in chunks, in one store write in a worker thread; on
        failure count it, keep the error and the records for the next write."""
        pending = self._pending
        n = len(pending)
        if not n:
            return
        chunks = []
        for start in range(0, n, CHUNK):
            part = pending[start : min(n, start + CHUNK)]
            body = array_head(len(part)) + b"".join(p[2] for p in part)
            chunks.append(frame_chunk(part[0][0], part[-1][1], len(part), body))
        try:
            # not abandoned at the shutdown timeout, not even the last write: on MockClock
            # the timeout passes at once while the thread works (virtual time jumps), and
            # the write would be lost; a store that hangs holds the exit instead
            await trio.to_thread.run_sync(_put, self.store, self._key, chunks)
        except Exception as exc:  # StoreError from the engine's stores; any error of a user's
            self._failed += 1
            self._last_error = exc
            return
        del pending[:n]  # (the reader only appends meanwhile)
        self._written += n
        self._writes += 1
        self._room.set()
        self._room = trio.Event()


async def record_to_store(
    rt: Runtime,
    store: Store,
    name: str,
    *,
    agent_id: Any = None,
    every: float = 1.0,
    codec: Codec | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``rt``'s transition records in ``store`` as the recording ``name`` while it runs:
    a task for the runtime's nursery, ``recorder = await rt.start(record_to_store, rt, store,
    name)``, which reports its ``Recorder``. It writes every ``every`` seconds and once more
    when cancelled (when the runtime closes); ``engine.store.load_recording`` reads it back.

    Args:
        rt: The runtime, under ``open_runtime``.
        store: Where the recording is kept.
        name: The recording's name (1..200 characters, no control characters). A new one
            starts with the next record; one that exists continues where it ended.
        agent_id: Record this agent only (None: every agent).
        every: Seconds between writes (finite, more than 0).
        codec: Encodes agent ids, outputs and payloads (default: builtins only).

    Raises:
        InvalidArgumentError: A bad argument, or a recording of that name that is another
            run's.
        RuntimeNotRunningError: ``rt`` is not under ``open_runtime``.
        CorruptRecordError, StoreError: Reading where the stored recording ends failed.

    Once started it raises nothing of the store's: failed writes are counted and retried, a
    record that cannot be encoded or records it fell behind on are kept as gap markers (see
    ``Recorder.statistics()``).
    """
    recorder = Recorder(rt, store, name, agent_id=agent_id, every=every, codec=codec)
    await recorder.run(task_status=task_status)


def _put(store: Store, key: str, chunks: list[bytes]) -> None:
    now = time.time()
    store.write([(key, now, chunk) for chunk in chunks])
