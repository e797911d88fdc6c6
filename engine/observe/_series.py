"""``MetricsHistory``: a runtime's own figures as a time series, in numpy rings.

Theory of operation: a reading (``sample``) reads the runtime once: ``statistics()`` (totals,
gauges, latency percentiles and, once it has tenants, each tenant's figures),
``machine_statistics()``, and the mailbox depths per slot summed by machine in one
``bincount``. Those are vectorised passes over the slot arrays and a loop over machines and
tenants: nothing in Python per agent, nothing per message. The hot path is not touched and
pays nothing, sampling or not.

Each series (the runtime, one machine, one tenant) is one float64 array of shape
``(columns, size)`` sharing the history's write index: a reading writes one column of each,
and once ``size`` readings are kept the oldest is overwritten. Rates (``*_per_s``) divide the
change of a cumulative counter by the time since the previous reading (NaN in a first reading
that has none). A machine or tenant new since then counted from 0 (a machine had no agents, a
tenant added anew starts at 0; the default tenant, which appears when the first tenant is
added, counted what the runtime did). It has NaN in the readings before it existed; one
missing from a reading (a removed tenant) has NaN there and is dropped once its last reading
has aged out of the ring. So every
column of every series lines up with ``runtime()["time"]``. Memory: 8 bytes per column per
reading per series (the runtime's 17 columns at the default 3 600 readings: 490 kB; each
tenant about as much).

``run`` samples on trio's clock at ``start + k * interval`` (a late reading skips the instants
it missed instead of bunching up; ``start`` is when it began, and a baseline read then makes
the first reading's rates real). With a store, a second task saves the whole history every
``SAVE_EVERY`` seconds (at least every interval) and once more when cancelled, writing in a
worker thread, so a slow store never delays a reading. A save that fails with ``StoreError``
is counted (``failed_saves``, ``last_save_error``) and the next one tries again: a history is
not worth stopping the runtime for, and the failure stays visible.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Final, final

import numpy as np
import numpy.typing as npt
import trio

from ..core._exceptions import InvalidArgumentError, StoreError, brief
from ..core._validate import integer, number
from ..runtime._runtime import Runtime
from ..runtime._tenants import DEFAULT
from ..store._stores import Store
from ._readings import KEY, MAX_SIZE, Columns, MetricsReadings, decode, encode

if TYPE_CHECKING:
    from ..hotpath._metrics import LatencySummary

RUNTIME_COLUMNS: Final = (
    "time", "wall", "processed_per_s", "failed_per_s", "dropped_per_s", "processed", "failed",
    "dropped", "queued", "ready", "agents", "hibernated", "timers",
    "step_p50", "step_p99", "wait_p50", "wait_p99",
)  # fmt: skip
"""The runtime's columns: ``time`` is the runtime's clock at the reading (trio's under
``open_runtime``), ``wall`` the wall clock; counts are cumulative, ``queued`` is the messages
in mailboxes now, ``agents`` those in memory, ``hibernated`` those asleep in the store; the
latencies are percentiles of the retained samples in µs (NaN with ``sample_every=0``)."""
MACHINE_COLUMNS: Final = (
    "agents", "processed_per_s", "failed_per_s", "processed", "failed", "queued",
)  # fmt: skip
"""A machine's columns, over its live agents (``machine_statistics``): an agent that is
terminated or hibernated takes its counts along, so a rate that would be negative is 0."""
TENANT_COLUMNS: Final = (
    "agents", "processed_per_s", "failed_per_s", "processed", "failed", "queued",
    "delayed_now", "delayed", "rejected", "overruns", "hibernated", "memory",
    "step_p50", "step_p99", "wait_p50", "wait_p99",
)  # fmt: skip
"""A tenant's columns, as ``TenantStatistics`` names them (``hibernated``: its agents
hibernated to make room, so far); present once the runtime has tenants. A tenant removed and
added again between two readings counts from 0: its rate is then its count over the time."""
SAVE_EVERY: Final = 60.0
"""Seconds between saves of ``run`` (at least one interval)."""
SHUTDOWN_TIMEOUT: Final = 10.0
"""Seconds the last save may take when ``run`` is cancelled."""
MIN_INTERVAL, MAX_INTERVAL = 0.001, 86_400.0

_NAN = math.nan
_RUNTIME = ("runtime", "")
_DEFAULT = ("tenant", DEFAULT)


def check_interval(name: str, value: Any) -> float:
    """``value`` as seconds between readings: a finite number in 0.001..86 400."""
    out = number(name, value)
    if not MIN_INTERVAL <= out <= MAX_INTERVAL:
        raise InvalidArgumentError(
            f"{name} must be in {MIN_INTERVAL:g}..{MAX_INTERVAL:g} seconds, got {brief(value)}"
        )
    return out


def check_size(name: str, value: Any) -> int:
    """``value`` as readings kept: an int in 1..``MAX_SIZE``."""
    return integer(name, value, 1, MAX_SIZE)


@final
class _Series:
    """One series' ring: ``data[column, reading]``, and the last reading it was in."""

    __slots__ = ("data", "last")

    def __init__(self, columns: int, size: int) -> None:
        self.data: npt.NDArray[np.float64] = np.full((columns, size), _NAN)
        self.last = -1


_Row = tuple[dict[str, _Series] | None, str, int, tuple[float, ...]]
"""A reading of one series: its group (None: the runtime's), name, width and values."""


@final
class MetricsHistory:
    """The runtime's figures every ``interval`` seconds, the last ``size`` readings of each.

    Args:
        rt: The runtime to read.
        interval: Seconds between the readings ``run`` takes (0.001..86 400).
        size: Readings kept (1..1 000 000); the oldest go first.
        store: Where ``run`` and ``save`` keep the history (under ``KEY``; see
            ``engine.store.RESERVED``), for ``load`` and ``python -m engine metrics-plot``.

    Raises:
        InvalidArgumentError: A bad argument.
    """

    def __init__(
        self, rt: Runtime, *, interval: float = 1.0, size: int = 3600, store: Store | None = None
    ) -> None:
        if not isinstance(rt, Runtime):
            raise InvalidArgumentError(f"rt must be an engine.Runtime, got {brief(rt)}")
        if store is not None and not isinstance(store, Store):
            raise InvalidArgumentError(f"store must be an engine.store.Store, got {brief(store)}")
        self.interval: float = check_interval("interval", interval)
        """Seconds between readings."""
        self.size: int = check_size("size", size)
        """Readings kept at most."""
        self.store: Store | None = store
        """Where the history is saved, if anywhere."""
        self.failed_saves = 0
        """Saves of ``run`` that failed with ``StoreError`` (the next one tries again)."""
        self.last_save_error: StoreError | None = None
        """The error of the last failed save."""
        self._rt = rt
        self._n = 0  # readings taken; the next one goes to self._n % size
        self._runtime = _Series(len(RUNTIME_COLUMNS), self.size)
        self._machines: dict[str, _Series] = {}
        self._tenants: dict[str, _Series] = {}
        self._then: float | None = None  # the clock at the previous reading (or baseline)
        self._counts: dict[tuple[str, str], tuple[int, ...]] = {}  # its cumulative counters

    def __len__(self) -> int:
        return min(self._n, self.size)

    def __repr__(self) -> str:
        return f"MetricsHistory(interval={self.interval:g}, size={self.size}, readings={len(self)})"

    # -- readings ------------------------------------------------------------------------

    def sample(self) -> None:
        """Take one reading now."""
        self._read(keep=True)

    def _read(self, keep: bool) -> None:
        """Read the runtime; with ``keep``, write a reading, else only remember the counters
        the next reading's rates start from (``run``'s baseline)."""
        rt = self._rt
        now = float(rt._clock())
        stats = rt.statistics()
        machines = rt.machine_statistics()
        d = rt._d
        depths, index = d.depths(), d.machine_indexes()
        live = index >= 0
        queued = np.bincount(index[live], weights=depths[live], minlength=len(machines))
        dt = _NAN if self._then is None else now - self._then
        before = self._counts
        counts: dict[tuple[str, str], tuple[int, ...]] = {}

        def rates(key: tuple[str, str], *count: int, clamp: bool = False) -> list[float]:
            counts[key] = count
            then = before.get(key)
            if then is None and key == _DEFAULT:  # it was the runtime until a tenant was added
                then = before.get(_RUNTIME, (0, 0))[:2]
            return _rates(then or (0,) * len(count), count, dt, clamp=clamp)

        rows: list[_Row] = [
            (None, "", len(RUNTIME_COLUMNS), (
                now, time.time(), *rates(_RUNTIME, stats.processed, stats.failed, stats.dropped),
                stats.processed, stats.failed, stats.dropped, float(depths.sum()), stats.ready,
                stats.agents, stats.hibernated, stats.timers, *_latency(stats.step, stats.wait),
            ))
        ]  # fmt: skip
        for m, q in zip(machines, queued.tolist(), strict=True):
            rows.append((self._machines, m.machine, len(MACHINE_COLUMNS), (
                m.agents, *rates(("machine", m.machine), m.processed, m.failed, clamp=True),
                m.processed, m.failed, q,
            )))  # fmt: skip
        for t in stats.tenants:
            rows.append((self._tenants, t.name, len(TENANT_COLUMNS), (
                t.agents, *rates(("tenant", t.name), t.processed, t.failed), t.processed,
                t.failed, t.queued, t.delayed_now, t.delayed, t.rejected, t.overruns,
                t.hibernated, t.memory, *_latency(t.step, t.wait),
            )))  # fmt: skip
        self._then, self._counts = now, counts
        if keep:
            self._write(rows)

    def _write(self, rows: list[_Row]) -> None:
        n, size = self._n, self.size
        w = n % size
        for group, name, width, row in rows:
            series = self._runtime if group is None else group.get(name)
            if series is None:  # a machine or tenant first seen now: NaN before
                assert group is not None
                series = group[name] = _Series(width, size)
            series.data[:, w] = row
            series.last = n
        for group in (self._machines, self._tenants):
            for name, series in list(group.items()):
                if series.last == n:
                    continue
                series.data[:, w] = _NAN
                if n - series.last >= size:  # its last reading just aged out
                    del group[name]
        self._n = n + 1

    # -- reading the columns -------------------------------------------------------------

    def runtime(self, *, last: int | None = None) -> Columns:
        """The runtime's columns (``RUNTIME_COLUMNS``), oldest reading first: copies.

        Args:
            last: Only the last ``last`` readings (a positive int; None: all of them), so a
                reader that wants a few does not copy the whole ring.
        """
        return dict(zip(RUNTIME_COLUMNS, self._ordered(self._runtime, last), strict=True))

    def machines(self, *, last: int | None = None) -> dict[str, Columns]:
        """Machine name -> its columns (``MACHINE_COLUMNS``), aligned with ``runtime()``
        (``last`` as there)."""
        return {
            name: dict(zip(MACHINE_COLUMNS, self._ordered(s, last), strict=True))
            for name, s in self._machines.items()
        }

    def tenants(self, *, last: int | None = None) -> dict[str, Columns]:
        """Tenant name -> its columns (``TENANT_COLUMNS``), aligned with ``runtime()``
        (``last`` as there)."""
        return {
            name: dict(zip(TENANT_COLUMNS, self._ordered(s, last), strict=True))
            for name, s in self._tenants.items()
        }

    def readings(self) -> MetricsReadings:
        """All the columns at once, as ``save`` writes them and ``load`` reads them back."""
        return MetricsReadings(
            self.interval, self.size, self.runtime(), self.machines(), self.tenants()
        )

    def _ordered(self, series: _Series, last: int | None = None) -> npt.NDArray[np.float64]:
        """A series' readings, oldest first (the last ``last`` of them), as a new array."""
        n, size = self._n, self.size
        kept = min(n, size)
        if last is not None:
            kept = min(kept, check_size("last", last))
        start = (n - kept) % size  # the ring's index of the oldest reading returned
        if start + kept <= size:
            return series.data[:, start : start + kept].copy()
        wrapped = start + kept - size  # the newest readings, at the ring's start
        return np.concatenate((series.data[:, start:], series.data[:, :wrapped]), axis=1)

    # -- the store -----------------------------------------------------------------------

    def save(self) -> None:
        """Write the history to its store now, as one record, and drop the older ones.

        Raises:
            InvalidArgumentError: The history has no store.
            StoreError: The store failed.
        """
        if self.store is None:
            raise InvalidArgumentError("this MetricsHistory has no store to save to")
        _put(self.store, encode(self.readings()))

    @classmethod
    def load(cls, store: Store) -> MetricsReadings | None:
        """The history saved in ``store``, or None if it holds none.

        Raises:
            CorruptRecordError: The saved history is damaged.
            StoreError: The store failed.
        """
        if not isinstance(store, Store):
            raise InvalidArgumentError(f"store must be an engine.store.Store, got {brief(store)}")
        found = store.latest([KEY])
        return decode(found[0].record) if found else None

    # -- under trio ----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Take a reading every ``interval`` seconds of trio's clock until cancelled; with a
        store, save every ``SAVE_EVERY`` seconds and once more at the end. Start it with
        ``await rt.start(history.run)`` (``open_runtime(metrics_history=...)`` does)."""
        async with trio.open_nursery() as nursery:
            if self.store is not None:
                await nursery.start(self._save_loop, self.store)
            self._read(keep=False)
            task_status.started()
            start, k = trio.current_time(), 1
            while True:
                await trio.sleep_until(start + k * self.interval)
                self.sample()
                behind = math.floor((trio.current_time() - start) / self.interval)
                k = max(k + 1, behind + 1)

    async def _save_loop(self, store: Store, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await trio.sleep(max(SAVE_EVERY, self.interval))
                await self._save_now(store)
        finally:
            with trio.move_on_after(SHUTDOWN_TIMEOUT) as scope:
                scope.shield = True
                await self._save_now(store)

    async def _save_now(self, store: Store) -> None:
        if not self._n:  # nothing read: keep what the store has (a previous run's history)
            return
        record = encode(self.readings())  # on the trio thread, where the rings are written
        try:
            # not abandoned at the shutdown timeout (on MockClock it passes at once while the
            # thread works, and the history would be lost): a store that hangs holds the exit
            await trio.to_thread.run_sync(_put, store, record)
        except StoreError as exc:
            self.failed_saves += 1
            self.last_save_error = exc


async def start_metrics_history(
    rt: Runtime, interval: float, size: int = 3600, store: Store | None = None
) -> MetricsHistory:
    """A ``MetricsHistory`` of ``rt`` running in its nursery, kept as ``rt.metrics_history``.

    Raises:
        InvalidArgumentError: A bad argument.
        RuntimeNotRunningError: ``rt`` is not under ``open_runtime``.
    """
    history = MetricsHistory(rt, interval=interval, size=size, store=store)
    await rt.start(history.run, name="metrics history")
    rt.metrics_history = history
    return history


def _put(store: Store, record: bytes) -> None:
    """Write the history's record, then drop the ones before it."""
    store.write([(KEY, time.time(), record)])
    store.forget(KEY, keep=1)


def _rates(before: tuple[int, ...], now: tuple[int, ...], dt: float, *, clamp: bool) -> list[float]:
    """Per-second changes of cumulative counters (NaN without a time between); a counter that
    went down started again from 0 (``clamp``: it lost counts, and its rate is 0)."""
    if not dt > 0:
        return [_NAN] * len(now)
    out = []
    for b, n in zip(before, now, strict=True):
        change = n - b
        if change < 0:
            change = 0 if clamp else n
        out.append(change / dt)
    return out


def _latency(step: LatencySummary | None, wait: LatencySummary | None) -> tuple[float, ...]:
    """``step_p50, step_p99, wait_p50, wait_p99`` in µs, NaN where there are no samples."""
    return (
        _NAN if step is None else step.p50,
        _NAN if step is None else step.p99,
        _NAN if wait is None else wait.p50,
        _NAN if wait is None else wait.p99,
    )
