"""The live view of ``python -m engine top``: one text frame per refresh, from counters only.

Each frame compares the runtime's counters with the previous frame's: throughput over the
interval, the sampled latencies, the busiest agents (messages and busy time in the interval),
and how many agents sit in each state.
"""

from __future__ import annotations

import time
from typing import Any, final

import numpy as np

BUSIEST = 10


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} µs"


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
        self.last, self.last_total = now, stats.processed
        self.last_processed, self.last_busy = processed, busy
        return "\n".join(lines)
