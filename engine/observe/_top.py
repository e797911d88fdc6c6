"""The live view of ``python -m engine top``: one text frame per refresh, from counters only.

Each frame compares the runtime's counters with the previous frame's: throughput over the
interval, the sampled latencies, the busiest agents (messages and busy time in the interval),
how many agents sit in each state and, once the runtime has tenants, a row per tenant.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, final

import numpy as np

if TYPE_CHECKING:
    from ..runtime._tenants import TenantStatistics

BUSIEST = 10
NAME_WIDTH = 20
"""Characters of a tenant's name shown (longer names end with an ellipsis)."""


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} µs"


def _bytes(value: int) -> str:
    if value < 1024:
        return f"{value:,} B"
    size = value / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GiB"


def _name(name: str) -> str:
    """A tenant's name for one cell: what is not printable (newlines, escape sequences that
    would drive the terminal) written as its escape, cut to ``NAME_WIDTH``."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
    return shown if len(shown) <= NAME_WIDTH else shown[: NAME_WIDTH - 1] + "…"


@final
class TopView:
    """Renders frames for one runtime (made with ``metrics=True`` and sampling on)."""

    def __init__(self, rt: Any, title: str) -> None:
        self.rt = rt
        self.title = title
        self.start = self.last = time.monotonic()
        self.last_processed = np.zeros(0, dtype=np.int64)
        self.last_busy = np.zeros(0, dtype=np.int64)
        self.last_total = 0
        self.last_tenants: dict[str, int] = {}

    def frame(self) -> str:
        rt, d = self.rt, self.rt._d
        now = time.monotonic()
        dt = max(now - self.last, 1e-9)
        stats = rt.statistics()
        processed = np.array(d.processed)
        busy = np.array(d.metrics["busy_ns"]) if d.metrics_enabled else np.zeros_like(processed)
        prev_p = np.zeros_like(processed)
        prev_p[: len(self.last_processed)] = self.last_processed[: len(processed)]
        prev_b = np.zeros_like(busy)
        prev_b[: len(self.last_busy)] = self.last_busy[: len(busy)]
        delta, busy_delta = processed - prev_p, busy - prev_b
        rate = (stats.processed - self.last_total) / dt
        lines = [
            f"engine top: {self.title}, {now - self.start:,.1f} s, {rt.implementation} hot path",
            f"throughput {rate:,.0f} msg/s   processed {stats.processed:,}   failed "
            f"{stats.failed:,}   dropped {stats.dropped:,}   dead letters {stats.dead_letters:,}",
        ]
        for name, summary in (("step", stats.step), ("wait", stats.wait)):
            if summary is None:
                lines.append(f"{name:<5} no samples yet")
            else:
                lines.append(
                    f"{name:<5} p50 {_us(summary.p50)}  p90 {_us(summary.p90)}  "
                    f"p99 {_us(summary.p99)}  max {_us(summary.max)}  "
                    f"({summary.total:,} samples)"
                )
        lines.append(
            f"agents {stats.agents:,}   ready {stats.ready:,}   timers "
            f"{stats.timers:,}   refused inputs {len(rt.rejected()):,}"
        )
        lines += [
            "",
            "busiest agents (last interval)",
            f"  {'agent':<20} {'state':<14} {'msg/s':>12} {'busy':>7} {'depth':>7}",
        ]
        live = d.machine_indexes() >= 0
        order = np.argsort(-np.where(live, delta, -1), kind="stable")[:BUSIEST]
        depths = d.depths()
        for slot in order.tolist():
            if not live[slot] or delta[slot] <= 0:
                break
            agent = d.agent_at(slot)
            lines.append(
                f"  {agent!s:<20} {rt.state(agent):<14} {delta[slot] / dt:>12,.0f} "
                f"{busy_delta[slot] / 1e9 / dt:>6.0%} {int(depths[slot]):>7}"
            )
        lines += ["", "agents per state"]
        for m in rt.machine_statistics():
            counts = "  ".join(f"{state} {n:,}" for state, n in m.states.items())
            lines.append(f"  {m.machine}: {counts}")
        if stats.tenants:
            lines += ["", "tenants", *self._tenant_rows(stats.tenants, dt)]
        self.last, self.last_total = now, stats.processed
        self.last_processed, self.last_busy = processed, busy
        return "\n".join(lines)

    def _tenant_rows(self, tenants: tuple[TenantStatistics, ...], dt: float) -> list[str]:
        rows = [
            f"  {'tenant':<{NAME_WIDTH}} {'weight':>7} {'agents':>8} {'queued':>8} "
            f"{'msg/s':>10} {'processed':>12} {'rejected':>9} {'delayed':>9} "
            f"{'overruns':>9} {'memory':>11} {'p99 step':>12}"
        ]
        for t in tenants:
            # a tenant removed and added again under its name counts from 0 again
            delta = t.processed - self.last_tenants.get(t.name, 0)
            rate = (t.processed if delta < 0 else delta) / dt
            rows.append(
                f"  {_name(t.name):<{NAME_WIDTH}} {t.weight:>7g} {t.agents:>8,} {t.queued:>8,} "
                f"{rate:>10,.0f} {t.processed:>12,} {t.rejected:>9,} {t.delayed:>9,} "
                f"{t.overruns:>9,} {_bytes(t.memory):>11} "
                f"{_us(None if t.step is None else t.step.p99):>12}"
            )
        self.last_tenants = {t.name: t.processed for t in tenants}
        return rows
