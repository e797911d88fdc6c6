"""A metrics history drawn to a PNG (``python -m engine metrics-plot``).

matplotlib is imported only here, when a plot is asked for, and drawn through its Agg canvas
on a ``Figure`` of our own (never ``pyplot``, whose global state and backend choice would leak
into the caller's process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core._exceptions import InvalidArgumentError, brief
from ._readings import Columns, MetricsReadings

_PANELS: dict[str, list[tuple[str, list[str]]]] = {
    "runtime": [
        ("messages / s", ["processed_per_s", "failed_per_s", "dropped_per_s"]),
        ("queued now", ["queued", "ready"]),
        ("latency µs", ["step_p50", "step_p99", "wait_p50", "wait_p99"]),
        ("agents", ["agents", "hibernated"]),
    ],
    "tenant": [
        ("messages / s", ["processed_per_s", "failed_per_s"]),
        ("queued now", ["queued", "delayed_now"]),
        ("latency µs", ["step_p50", "step_p99", "wait_p50", "wait_p99"]),
        ("agents", ["agents"]),
    ],
    "machine": [
        ("messages / s", ["processed_per_s", "failed_per_s"]),
        ("queued now", ["queued"]),
        ("agents", ["agents"]),
    ],
}


def plot_metrics(
    readings: MetricsReadings,
    out: str | Path,
    *,
    tenant: str | None = None,
    machine: str | None = None,
) -> None:
    """Draw the runtime's columns (or one tenant's, or one machine's) of ``readings`` against
    time to a PNG file: throughput and failures, what is queued, the latency percentiles, the
    agents in memory and hibernated. A column with no value (latencies without sampling) is
    left out, and a panel with none says so.

    Raises:
        InvalidArgumentError: ``readings`` has no such tenant or machine, or both are given.
        ModuleNotFoundError: matplotlib is not installed (the message says how to get it).
        OSError: ``out`` cannot be written.
    """
    if tenant is not None and machine is not None:
        raise InvalidArgumentError("plot a tenant or a machine, not both")
    columns, kind, title = readings.runtime, "runtime", "runtime"
    if tenant is not None:
        columns, kind, title = _pick(readings.tenants, tenant, "tenant"), "tenant", tenant
    elif machine is not None:
        columns, kind, title = _pick(readings.machines, machine, "machine"), "machine", machine
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ModuleNotFoundError(
            "plotting a metrics history needs matplotlib: pip install matplotlib",
            name="matplotlib",
        ) from None
    t = readings.runtime["time"]
    x = t - t[0] if len(t) else t
    panels = _PANELS[kind]
    fig = Figure(figsize=(10, 2.6 * len(panels)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes: Any = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, names) in zip(axes, panels, strict=True):
        drawn = [n for n in names if n in columns and np.isfinite(columns[n]).any()]
        for name in drawn:
            ax.plot(x, columns[name], label=name, linewidth=1.2)
        if drawn:
            ax.legend(loc="upper left", fontsize="small")
        else:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds since the first reading")
    fig.suptitle(
        f"engine metrics history: {kind} {title!r}, {len(readings)} readings every "
        f"{readings.interval:g} s"
        if kind != "runtime"
        else f"engine metrics history: {len(readings)} readings every {readings.interval:g} s"
    )
    fig.savefig(out, format="png")


def _pick(groups: dict[str, Columns], name: str, kind: str) -> Columns:
    if name not in groups:
        names = sorted(groups)
        known = ", ".join(brief(n) for n in names[:10]) + (", ..." if len(names) > 10 else "")
        raise InvalidArgumentError(
            f"the history has no {kind} {brief(name)} (it has: {known or 'none'})"
        )
    return groups[name]
