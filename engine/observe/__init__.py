"""Observers of a runtime: a metrics history, Prometheus, OpenTelemetry, the web dashboard
and the ``top`` view.

Theory of operation: everything here *reads* a runtime (``statistics()``, the per-slot counter
arrays, the latency rings) or attaches through its public hooks (``Runtime.start`` for a
server task in its nursery, instruments); the runtime never imports this package, so removing
it breaks nothing below. Readings are taken when a scraper, an SDK or a timer asks, never per
message.

- ``MetricsHistory(rt, interval=, size=, store=)``: the runtime's, each machine's and each
  tenant's figures every ``interval`` seconds, the last ``size`` readings in numpy rings,
  saved to a store (``open_runtime(metrics_history=...)`` runs one); ``plot_metrics`` draws
  them to a PNG (matplotlib).
- ``serve_metrics(rt, host, port, dashboard=, token=)``: Prometheus' ``GET /metrics`` from the
  runtime's nursery, and with ``dashboard=True`` the live web dashboard at ``/dashboard`` (a
  page of ours and uPlot, vendored in ``static/``, reading ``/dashboard/data.json``).
- ``prometheus_registry(rt)``: a ``prometheus_client`` registry for any other exporter.
- ``instrument_opentelemetry(rt, meter)``: observable OpenTelemetry instruments.

Prometheus needs the ``prometheus`` extra, OpenTelemetry the ``otel`` extra.
"""

from ._otel import instrument as instrument_opentelemetry
from ._plot import plot_metrics as plot_metrics
from ._prometheus import registry as prometheus_registry
from ._readings import MetricsReadings as MetricsReadings
from ._series import MACHINE_COLUMNS as MACHINE_COLUMNS
from ._series import RUNTIME_COLUMNS as RUNTIME_COLUMNS
from ._series import TENANT_COLUMNS as TENANT_COLUMNS
from ._series import MetricsHistory as MetricsHistory
from ._server import serve_metrics as serve_metrics

__all__ = [
    "MACHINE_COLUMNS",
    "RUNTIME_COLUMNS",
    "TENANT_COLUMNS",
    "MetricsHistory",
    "MetricsReadings",
    "instrument_opentelemetry",
    "plot_metrics",
    "prometheus_registry",
    "serve_metrics",
]
