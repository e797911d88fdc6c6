"""Durability under trio: periodic snapshots (level "snapshot") and the commit log's task
(level "log").

Theory of operation, snapshots: one task of the runtime's nursery (``Runtime.start``) wakes every
``every`` seconds of trio's clock, captures and encodes every agent on the trio thread (the
runtime is not thread-safe, and a capture is synchronous, so it sees one instant), and writes
the records in a worker thread (``trio.to_thread``), so the store's I/O never blocks the trio
loop and never runs inside the drain loop. When the runtime closes, the task takes one last
snapshot before it returns (shielded, so a shutdown does not lose the last interval). A
snapshot that cannot be encoded (``CodecError``) or written fails the task, and with it the
runtime, naming the cause: silently keeping an old snapshot would lose data.

The commit task runs rounds: wait until agents changed (the dispatch task says so after each
batch) or someone waits for durability (``await rt.send``, ``rt.flush``), or at most a second
(mail queued for a paused agent runs no batch); unless someone waits, gather changes until
``commit_interval`` seconds have passed since the previous round began; capture one commit on
the trio thread; write it in a worker thread; wake the waiters. A waiter waits
for the end of a round that started after it arrived, so everything it accepted is in that
round's commit. A commit that fails (a value the codec cannot encode, a store error) fails
the task and the runtime: a runtime that silently stopped being durable would lose data.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import trio

from ..core._exceptions import InvalidArgumentError
from ..core._validate import number
from ..store._codec import Codec
from ..store._log import CommitLog
from ..store._persist import records

if TYPE_CHECKING:
    from ..runtime._runtime import Runtime
    from ..store._stores import Store


async def start_snapshots(
    rt: Runtime,
    store: Store,
    every: float | None,
    codec: Codec | None = None,
    shutdown_timeout: float = 10.0,
) -> None:
    """Snapshot every agent of ``rt`` into ``store`` every ``every`` seconds (None: only at
    the end), and once more when the runtime closes (that last write may take
    ``shutdown_timeout`` seconds).

    Raises:
        InvalidArgumentError: ``every`` is not a positive, finite number of seconds.
        RuntimeNotRunningError: ``rt`` is not under ``open_runtime``.
    """
    if every is not None:
        every = number("every", every, minimum=0)
    if every == 0:
        raise InvalidArgumentError(f"every must be a positive number of seconds, got {every!r}")
    await rt.start(_snapshot_loop, rt, store, every, codec, shutdown_timeout, name="snapshots")


async def _snapshot_loop(
    rt: Runtime,
    store: Store,
    every: float | None,
    codec: Codec | None,
    shutdown_timeout: float,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    period = math.inf if every is None else every  # (trio sleeps forever on inf)
    try:
        while True:
            await trio.sleep(period)
            await snapshot_now(rt, store, codec)
    finally:
        with trio.move_on_after(shutdown_timeout) as scope:
            scope.shield = True
            await snapshot_now(rt, store, codec)


async def snapshot_now(rt: Runtime, store: Store, codec: Codec | None = None) -> list[int]:
    """Capture every agent now (on the trio thread) and write them in a worker thread."""
    return await trio.to_thread.run_sync(store.write, records(rt, codec=codec))


_SWEEP = 1.0
"""Seconds after which the commit task looks for changes nobody told it about."""


class CommitTask:
    """The commit log run as a task of the runtime's nursery (the host's ``Durability``)."""

    def __init__(self, log: CommitLog, interval: float, shutdown_timeout: float) -> None:
        self.log = log
        self.interval = interval
        self.shutdown_timeout = shutdown_timeout
        self._changed = trio.Event()  # agents changed since the last round began
        self._wanted = trio.Event()  # someone waits for a round: start it now
        self._landed = trio.lowlevel.ParkingLot()
        self.started = 0
        """Rounds begun (a round captures everything changed before it began)."""
        self.done = 0
        """Rounds whose commit is written."""

    def drained(self) -> None:
        self._changed.set()

    async def wait_durable(self) -> None:
        target = self.started + 1
        self._wanted.set()
        self._changed.set()
        while self.done < target:
            await self._landed.park()

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                last = trio.current_time()
                with trio.move_on_after(_SWEEP):  # (mail for paused agents runs no batch)
                    await self._changed.wait()
                if self.interval and not self._wanted.is_set():
                    with trio.move_on_at(last + self.interval):  # gather, unless wanted
                        await self._wanted.wait()
                await self._round()
        finally:
            with trio.move_on_after(self.shutdown_timeout) as scope:
                scope.shield = True
                await self._round()

    async def _round(self) -> None:
        self._changed = trio.Event()
        self._wanted = trio.Event()
        self.started += 1
        commit = self.log.capture()
        if commit is not None:
            await trio.to_thread.run_sync(self.log.write, commit)
        self.done = self.started
        self._landed.unpark_all()


async def start_commit_log(
    rt: Runtime,
    store: Store,
    *,
    commit_interval: float = 0.0,
    codec: Codec | None = None,
    compact_every: int = 256,
    shutdown_timeout: float = 10.0,
    commit_existing: bool = True,
) -> CommitLog:
    """Make every change of ``rt``'s agents durable in ``store`` (durability level "log"):
    from now on ``await rt.send`` returns once its message is committed, and ``rt.flush()``
    waits for everything accepted so far. Agents already in ``rt`` are committed by the first
    round, unless ``commit_existing`` is False (they were just restored from ``store``).
    Returns the ``CommitLog``.

    Raises:
        InvalidArgumentError: A bad interval, or the runtime has a commit log already.
        RuntimeNotRunningError: ``rt`` is not under ``open_runtime``.
    """
    commit_interval = number("commit_interval", commit_interval, minimum=0)
    host = rt._running_host()
    log = CommitLog(rt, store, codec, compact_every)
    if not commit_existing:
        log.forget_changes()
    task = CommitTask(log, commit_interval, shutdown_timeout)
    try:
        await rt.start(task.run, name="commit log")
    except BaseException:
        log.close()
        raise
    host.durability = task
    return log


async def start_hibernation(
    rt: Runtime,
    hibernate_after: float | None,
    max_resident: int | None,
    expire_after: float | None = None,
) -> None:
    """Hibernate ``rt``'s agents idle ``hibernate_after`` seconds, and the least recently
    used beyond ``max_resident`` in memory, and remove the ones hibernated ``expire_after``
    seconds, from a task that sweeps every so often (a tenth of the shortest of those times,
    at most a second; every 50 ms with ``max_resident``). The runtime needs a
    ``Hibernation`` (``open_runtime(store=...)`` makes one)."""
    sleeper = rt._hibernation()
    times = [t for t in (hibernate_after, expire_after) if t is not None]
    period = min([1.0, *(max(t / 10, 0.001) for t in times)])
    if max_resident is not None:
        period = min(period, 0.05)
    await rt.start(
        _sleep_loop, sleeper, hibernate_after, max_resident, expire_after, period,
        name="hibernation",
    )  # fmt: skip


async def _sleep_loop(
    sleeper: Any,
    hibernate_after: float | None,
    max_resident: int | None,
    expire_after: float | None,
    period: float,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    while True:
        await trio.sleep(period)
        if hibernate_after is not None or max_resident is not None:
            sleeper.sweep(hibernate_after, max_resident)
        if expire_after is not None:
            sleeper.expire(expire_after)
