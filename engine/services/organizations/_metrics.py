"""An organization's metrics: the engine's figures of its tenant (counted in the drain loop,
read by ``TenantStatistics`` and, on the runtime's clock, by ``MetricsHistory``) and the
layer's own counts of executions."""

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
        org.name, org.executions, org.failures, org.queued, len(org.line), mean,
        rt.tenant_statistics(org.name),
    )  # fmt: skip


def history(rt: Runtime, org: Org, last: int | None) -> dict[str, npt.NDArray[np.float64]]:
    """See ``Organizations.history``."""
    readings = rt.metrics_history
    if readings is None:
        raise InvalidArgumentError("the runtime keeps no metrics history (metrics_history=)")
    times = readings.runtime(last=last)["time"]
    mine = readings.tenants(last=last).get(org.name)
    if mine is None:  # no reading since it was created
        mine = {c: np.full(len(times), np.nan) for c in TENANT_COLUMNS}
    return {"time": times, **mine}
