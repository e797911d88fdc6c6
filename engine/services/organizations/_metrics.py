"""An organization's metrics: the engine's figures of its tenant (counted in the drain loop,
read by ``TenantStatistics`` and, on the runtime's clock, by ``MetricsHistory``) and the
layer's own counts of executions and of its line (whose length at each reading is taken from
the line's ring of changes)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ... import InvalidArgumentError
from ...observe import TENANT_COLUMNS
from ._values import OrganizationMetrics

if TYPE_CHECKING:
    from ... import Runtime
    from ._records import Org


def metrics(rt: Runtime, org: Org) -> OrganizationMetrics:
    """See ``Organizations.metrics``."""
    mean = org.total_time / org.executions if org.executions else math.nan
    return OrganizationMetrics(
        org.name, org.executions, org.failures, org.queued, len(org.line) + org.retrying,
        mean, rt.tenant_statistics(org.name),
    )  # fmt: skip


def _waiting(org: Org, times: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The line's length at each of ``times`` (0 before its first change; NaN before the
    oldest change its ring still holds, when it has dropped some)."""
    changes = org.line.changes
    out = np.zeros(len(times))
    if changes:
        at = np.fromiter((t for t, _ in changes), float, len(changes))
        n = np.fromiter((k for _, k in changes), float, len(changes))
        i = np.searchsorted(at, times, side="right") - 1
        out = np.where(i >= 0, n[np.maximum(i, 0)], 0.0)
        if len(changes) == changes.maxlen:
            out[i < 0] = np.nan
    return out


def history(rt: Runtime, org: Org, last: int | None) -> dict[str, npt.NDArray[np.float64]]:
    """See ``Organizations.history``."""
    readings = rt.metrics_history
    if readings is None:
        raise InvalidArgumentError("the runtime keeps no metrics history (metrics_history=)")
    runtime = readings.runtime(last=last)
    times = runtime["time"]
    before = runtime["wall"] < org.created_at  # (an earlier organization of that name)
    mine = readings.tenants(last=last).get(org.name)
    if mine is None:  # no reading since it was created
        mine = {c: np.full(len(times), np.nan) for c in TENANT_COLUMNS}
    elif before.any():
        mine = {c: np.where(before, np.nan, v) for c, v in mine.items()}
    waiting = _waiting(org, times)
    waiting[before] = np.nan
    return {"time": times, **mine, "waiting": waiting}
