"""Periodic snapshots of a running runtime into a store (durability level "snapshot").

Theory of operation: one task of the runtime's nursery (``Runtime.start``) wakes every
``every`` seconds of trio's clock, captures and encodes every agent on the trio thread (the
runtime is not thread-safe, and a capture is synchronous, so it sees one instant), and writes
the records in a worker thread (``trio.to_thread``), so the store's I/O never blocks the trio
loop and never runs inside the drain loop. When the runtime closes, the task takes one last
snapshot before it returns (shielded, so a shutdown does not lose the last interval). A
snapshot that cannot be encoded (``CodecError``) or written fails the task, and with it the
runtime, naming the cause: silently keeping an old snapshot would lose data.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import trio

from ..core._exceptions import InvalidArgumentError
from ..core._validate import number
from ..store._codec import Codec
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
