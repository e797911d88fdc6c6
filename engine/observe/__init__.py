"""Observers of a runtime: Prometheus, OpenTelemetry, the web dashboard and the ``top`` view.

Theory of operation: everything here *reads* a runtime (``statistics()``, the per-slot counter
arrays, the latency rings) or attaches through its public hooks (``Runtime.start`` for a
server task in its nursery, instruments); the runtime never imports this package, so removing
it breaks nothing below. Readings are taken when a scraper or SDK asks, never per message.

- ``serve_metrics(rt, host, port, dashboard=, token=)``: Prometheus' ``GET /metrics`` from the
  runtime's nursery, and with ``dashboard=True`` the live web dashboard at ``/dashboard`` (a
  page of ours and uPlot, vendored in ``static/``, reading ``/dashboard/data.json``).
- ``prometheus_registry(rt)``: a ``prometheus_client`` registry for any other exporter.
- ``instrument_opentelemetry(rt, meter)``: observable OpenTelemetry instruments.

Prometheus needs the ``prometheus`` extra, OpenTelemetry the ``otel`` extra.
"""

from ._otel import instrument as instrument_opentelemetry
from ._prometheus import registry as prometheus_registry
from ._server import serve_metrics as serve_metrics

__all__ = ["instrument_opentelemetry", "prometheus_registry", "serve_metrics"]
