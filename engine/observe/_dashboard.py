"""What the live dashboard shows, as one JSON document (``GET /dashboard/data.json``).

Theory of operation: ``DashboardReader.read`` takes one reading of a runtime, synchronously
(no ``await`` inside, so under trio nothing runs between its parts and every figure belongs to
the same instant): ``statistics()`` for the totals, latencies and tenants, and the
dispatcher's per-slot arrays (processed, failed, mailbox depths, statuses) for the agents.
Ranking agents costs O(agents) in numpy, whatever their number: ``np.argpartition`` picks the
``TOP`` largest, and only those few become Python objects.

Rates (messages and failures per second, overall and per tenant) are differences of the
monotone counters between this reading and a *baseline* the reader keeps: the previous reading
at least ``MIN_INTERVAL`` seconds older. Readings closer together than that (several open pages
polling) reuse the last rates and leave the baseline alone, so a rate is never a quotient of
tiny noisy differences, and one reader serves any number of pages. The first reading has no
rate (``null``).

Time: rates and the document's ``clock`` are on the runtime's clock (trio's under
``open_runtime``, so ``MockClock`` drives them), the clock of the metrics history's ``time``
column too; ``time`` is the wall clock, for people. The page plots its trends against
``clock``, so a history point and a polled one of the same instant line up.

Trends: when the runtime carries a metrics history (``rt.metrics_history``, not None),
``history`` holds the last ``HISTORY_POINTS`` readings of its runtime columns and each tenant
row a ``trend``, its ``processed_per_s`` over the last ``TREND_POINTS`` readings (aligned with
the end of ``history``; NaN and infinities as ``null``), read with ``last=`` so the rings are
not copied whole. Without one, both are ``null`` and the page keeps the trend of the readings
it polls itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

import numpy as np
import numpy.typing as npt

from ..core._types import AgentStatus

if TYPE_CHECKING:
    from ..hotpath._metrics import LatencySummary
    from ..runtime._runtime import Runtime, RuntimeStatistics
    from ._series import MetricsHistory

_RATES = ("interval", "processed_per_s", "failed_per_s", "error_ratio")

FORMAT = 1
"""The document's ``version``; bumped when a field changes meaning or goes away."""
TOP = 10
"""Rows of each agent table."""
MIN_INTERVAL = 0.4
"""Seconds a baseline must be old before a reading replaces it (see the module docstring)."""
_FIRST = 1 << 40  # added to a rank to put a row before every unmarked one
HISTORY_POINTS = 300
"""Points of each history column sent (the most recent ones)."""
TREND_POINTS = 60
"""Points of each tenant's ``trend`` (the most recent ones)."""
HISTORY_COLUMNS = (
    "time", "processed_per_s", "failed_per_s", "processed", "failed", "queued", "ready",
    "agents", "hibernated", "step_p50", "step_p99", "wait_p50", "wait_p99",
)  # fmt: skip
"""The columns of ``MetricsHistory.runtime()`` sent, when present."""


def _latency(summary: LatencySummary | None) -> dict[str, float] | None:
    if summary is None:
        return None
    return {
        "count": summary.count,
        "total": summary.total,
        "p50": summary.p50,
        "p90": summary.p90,
        "p99": summary.p99,
        "max": summary.max,
        "mean": summary.mean,
    }


def _finite(values: Any) -> list[float | None]:
    """A column as JSON numbers, NaN and infinities as ``None`` (JSON has neither)."""
    return [v if math.isfinite(v) else None for v in np.asarray(values, np.float64).tolist()]


def _largest(values: npt.NDArray[np.int64], k: int) -> npt.NDArray[np.intp]:
    """Slots of the ``k`` largest positive ``values``, largest first (ties: lower slot)."""
    if len(values) > k:
        picked = np.argpartition(values, len(values) - k)[len(values) - k :]
    else:
        picked = np.arange(len(values))
    picked = picked[values[picked] > 0]
    ranked: npt.NDArray[np.intp] = picked[np.lexsort((picked, -values[picked]))]
    return ranked  # (named: with numpy 1.23's stubs the index expression is Any)


@final
class DashboardReader:
    """Readings of one runtime for the dashboard, with the baseline its rates need.

    Args:
        rt: The runtime read.
        clock: Seconds, monotonic (the rates' and the document's ``clock``); None: the
            runtime's own clock, which its metrics history reads too.
        wall: Seconds since the epoch (the document's ``time``).
    """

    def __init__(
        self,
        rt: Runtime,
        clock: Callable[[], float] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.rt = rt
        self._clock = rt._clock if clock is None else clock
        self._wall = wall
        self.readings = 0
        """Readings taken (the document's ``seq`` is this count, the first one 1)."""
        self._base: tuple[float, int, int, dict[str, int]] | None = None
        self._rates: dict[str, float | None] = dict.fromkeys(_RATES)
        self._tenant_rates: dict[str, float] = {}
        self._tenanted = False  # this reading's runtime has tenants (its rows name them)

    def read(self) -> dict[str, Any]:
        """One reading, as the JSON-ready document ``/dashboard/data.json`` serves."""
        rt, d = self.rt, self.rt._d
        now = self._clock()
        stats = rt.statistics()
        statuses = d.statuses()
        live = statuses >= 0
        erring = statuses == AgentStatus.ERROR
        depths = np.where(live, d.depths(), 0).astype(np.int64)
        processed = np.where(live, d.processed, 0).astype(np.int64)
        failed = np.where(live, d.failed, 0).astype(np.int64)
        counts = np.bincount(statuses[live], minlength=len(AgentStatus))
        self.readings += 1
        self._tenanted = bool(stats.tenants)

        def rows(rank: npt.NDArray[np.int64]) -> list[dict[str, Any]]:
            return self._rows(_largest(rank, TOP), statuses, processed, failed, depths)

        self._update_rates(now, stats)
        history = self.rt.metrics_history
        trends = {} if history is None else _trends(history)
        return {
            "version": FORMAT,
            "seq": self.readings,
            "time": self._wall(),
            "clock": now,
            "implementation": stats.implementation,
            "runtime": {
                "agents": stats.agents,
                "ready": stats.ready,
                "processed": stats.processed,
                "failed": stats.failed,
                "dropped": stats.dropped,
                "dead_letters": stats.dead_letters,
                "timers": stats.timers,
                "pending_requests": stats.pending_requests,
                "rejected": stats.rejected,
                "hibernated": stats.hibernated,
                "queued": int(depths.sum()),
                "max_depth": int(depths.max(initial=0)),
            },
            "statuses": {s.name: int(counts[s]) for s in AgentStatus},
            "rates": dict(self._rates),
            "latency": {"step": _latency(stats.step), "wait": _latency(stats.wait)},
            "top_agents": rows(processed),
            # ERROR first, then by failures (an agent in ERROR has failed at least once)
            "problem_agents": rows(np.where(erring, _FIRST + failed, failed)),
            "deepest_agents": rows(depths),
            "tenants": [
                {
                    "name": t.name,
                    "weight": t.weight,
                    "agents": t.agents,
                    "processed": t.processed,
                    "failed": t.failed,
                    "queued": t.queued,
                    "delayed_now": t.delayed_now,
                    "rejected": t.rejected,
                    "delayed": t.delayed,
                    "overruns": t.overruns,
                    "memory": t.memory,
                    "hibernated": t.hibernated,
                    "processed_per_s": self._tenant_rates.get(t.name),
                    "step": _latency(t.step),
                    "wait": _latency(t.wait),
                    "trend": trends.get(t.name),
                }
                for t in stats.tenants
            ],
            "history": None if history is None else _history(history),
        }

    def _update_rates(self, now: float, stats: RuntimeStatistics) -> None:
        tenants = {t.name: t.processed for t in stats.tenants}
        if self._base is not None:
            since, processed, failed, before = self._base
            dt = now - since
            if dt < MIN_INTERVAL:
                return  # keep the rates and the baseline (see the module docstring)
            dp, df = max(stats.processed - processed, 0), max(stats.failed - failed, 0)
            self._rates = {
                "interval": dt,
                "processed_per_s": dp / dt,
                "failed_per_s": df / dt,
                "error_ratio": df / (dp + df) if dp + df else None,
            }
            self._tenant_rates = {}
            for name, n in tenants.items():
                # a tenant new since the baseline, or removed and added again, counts from 0
                was = before.get(name)
                self._tenant_rates[name] = (n if was is None or n < was else n - was) / dt
        self._base = (now, stats.processed, stats.failed, tenants)

    def _rows(
        self,
        slots: npt.NDArray[np.intp],
        statuses: npt.NDArray[np.int8],
        processed: npt.NDArray[np.int64],
        failed: npt.NDArray[np.int64],
        depths: npt.NDArray[np.int64],
    ) -> list[dict[str, Any]]:
        """The table rows of a few slots (the only per-agent Python work of a reading)."""
        rt, d = self.rt, self.rt._d
        rows = []
        for slot in slots.tolist():
            agent = d.agent_at(slot)
            rows.append(
                {
                    "agent": agent if isinstance(agent, str) else repr(agent),
                    "tenant": rt.tenant_of(agent) if self._tenanted else None,
                    "machine": d.machine(agent).name,
                    "state": d.state(agent),
                    "status": AgentStatus(int(statuses[slot])).name,
                    "processed": int(processed[slot]),
                    "failed": int(failed[slot]),
                    "depth": int(depths[slot]),
                }
            )
        return rows


def _history(history: MetricsHistory) -> dict[str, list[float | None]]:
    """The document's ``history``: the last ``HISTORY_POINTS`` readings of the columns sent."""
    columns = history.runtime(last=HISTORY_POINTS)
    return {name: _finite(columns[name]) for name in HISTORY_COLUMNS}


def _trends(history: MetricsHistory) -> dict[str, list[float | None]]:
    """Each tenant's ``processed_per_s`` over the last ``TREND_POINTS`` readings."""
    return {
        name: _finite(columns["processed_per_s"])
        for name, columns in history.tenants(last=TREND_POINTS).items()
    }
