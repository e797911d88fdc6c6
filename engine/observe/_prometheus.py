"""Prometheus export: a collector over one runtime, and a ``/metrics`` endpoint under trio.

``prometheus_client`` (the ``prometheus`` extra) is imported only when this is used. The
collector reads the runtime's counters when Prometheus scrapes, never on the hot path:
totals, gauges, agents per machine and state, and the sampled latencies as summaries with
their quantiles (``sample_every`` > 0). Once the runtime has tenants, each figure of
``TenantStatistics`` is a series with a ``tenant`` label too (``engine_tenant_*``), all of one
scrape from one reading. ``serve_metrics`` (``_server``) answers ``GET /metrics`` with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, final

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry  # type: ignore[import-untyped,unused-ignore]

    from ..hotpath._metrics import LatencySummary
    from ..runtime._runtime import Runtime
    from ..runtime._tenants import TenantStatistics

QUANTILES = (0.5, 0.9, 0.99)
"""The quantiles of the latency summaries (``LatencySummary`` has p50, p90 and p99)."""


@final
class EngineCollector:
    """A ``prometheus_client`` collector for one runtime."""

    def __init__(self, rt: Runtime, prefix: str = "engine") -> None:
        self.rt = rt
        self.prefix = prefix

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric  # type: ignore[import-untyped,unused-ignore]

        p, rt = self.prefix, self.rt
        stats = rt.statistics()
        for name, value, doc in (
            ("messages_processed", stats.processed, "Messages processed"),
            ("messages_failed", stats.failed, "Messages that failed (each is a dead letter)"),
            ("messages_dropped", stats.dropped, "Messages dropped by full mailboxes"),
            ("dead_letters", stats.dead_letters, "Dead letters recorded"),
            ("inputs_refused", len(rt.rejected()), "Inputs refused by receptors (retained)"),
            ("hibernations", stats.hibernations, "Times an agent was hibernated"),
            ("wakes", stats.woken, "Times a hibernated agent was brought back"),
            ("expired", stats.expired, "Hibernated agents removed past their time to live"),
        ):
            yield CounterMetricFamily(f"{p}_{name}", doc, value=value)
        for name, value, doc in (
            ("agents", stats.agents, "Live agents in memory"),
            ("agents_hibernated", stats.hibernated, "Agents hibernated (in the store)"),
            ("upgrades", stats.upgrades, "Machine upgrades in force"),
            ("agents_ready", stats.ready, "Agents with mail waiting"),
            ("timers", stats.timers, "Armed timers"),
            ("pending_requests", stats.pending_requests, "Requests waiting for an answer"),
        ):
            yield GaugeMetricFamily(f"{p}_{name}", doc, value=value)
        depth = GaugeMetricFamily(
            f"{p}_mailbox_depth_max",
            "Deepest mailbox now",
            value=int(rt._d.depths().max(initial=0)),
        )
        yield depth
        in_state = GaugeMetricFamily(
            f"{p}_agents_in_state", "Agents per machine and state", labels=["machine", "state"]
        )
        for m in rt.machine_statistics():
            for state, count in m.states.items():
                in_state.add_metric([m.machine, state], count)
        yield in_state
        for name, ring, doc in (
            (
                "step_seconds",
                rt.step_latency,
                "Sampled step durations (the sum is estimated from the retained samples)",
            ),
            (
                "mailbox_wait_seconds",
                rt.wait_latency,
                "Sampled time messages waited (the sum is estimated from the retained samples)",
            ),
        ):
            values = ring.values()
            summary = Metric(f"{p}_{name}", doc, "summary")
            if len(values):
                for q in QUANTILES:
                    summary.add_sample(
                        f"{p}_{name}", {"quantile": str(q)}, float(_quantile(values, q)) / 1e9
                    )
            summary.add_sample(f"{p}_{name}_count", {}, float(ring.total))
            summary.add_sample(
                f"{p}_{name}_sum",
                {},
                float(values.sum()) / 1e9 * (ring.total / len(values) if len(values) else 0.0),
            )
            yield summary
        if stats.tenants:
            yield from _tenant_families(p, stats.tenants)


def _tenant_families(p: str, tenants: tuple[TenantStatistics, ...]) -> Iterator[Any]:
    """The ``engine_tenant_*`` families: one series per tenant, labelled ``tenant``."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # type: ignore[import-untyped,unused-ignore]

    labels = [t.name for t in tenants]
    for kind, name, field, doc in (
        ("counter", "messages_processed", "processed", "Messages its agents processed"),
        ("counter", "messages_failed", "failed", "Messages of its agents that failed"),
        ("counter", "messages_rejected", "rejected", "Sends refused at its max_queued"),
        ("counter", "messages_delayed", "delayed", "Messages its rate held back"),
        ("counter", "overruns", "overruns", "Steps and Work tasks past its turn_deadline"),
        ("counter", "hibernations", "hibernated", "Its agents hibernated to make room"),
        ("gauge", "agents", "agents", "Its agents in memory"),
        ("gauge", "messages_queued", "queued", "Messages queued for its agents"),
        ("gauge", "messages_delayed_now", "delayed_now", "Messages its rate holds back now"),
        ("gauge", "memory_bytes", "memory", "Its estimated resident bytes"),
        ("gauge", "weight", "weight", "Its share of the dispatcher when tenants have mail"),
    ):
        make = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        family = make(f"{p}_tenant_{name}", doc, labels=["tenant"])
        for label, t in zip(labels, tenants, strict=True):
            family.add_metric([label], getattr(t, field))
        yield family
    for name, field, doc in (
        ("step_seconds", "step", "Sampled step durations of its agents"),
        ("mailbox_wait_seconds", "wait", "Sampled time its messages waited"),
    ):
        summaries = [(label, getattr(t, field)) for label, t in zip(labels, tenants, strict=True)]
        if any(s is not None for _, s in summaries):
            yield _tenant_summary(f"{p}_tenant_{name}", doc, summaries)


def _tenant_summary(name: str, doc: str, summaries: list[tuple[str, LatencySummary | None]]) -> Any:
    """A summary family over the tenants that have samples (µs in, seconds out); the sum is
    estimated from the retained samples' mean, as for the runtime's own summaries."""
    from prometheus_client.core import Metric  # type: ignore[import-untyped,unused-ignore]

    family = Metric(name, f"{doc} (the sum is estimated from the retained samples)", "summary")
    for label, s in summaries:
        if s is None:
            continue
        for q, value in zip(QUANTILES, (s.p50, s.p90, s.p99), strict=True):
            family.add_sample(name, {"tenant": label, "quantile": str(q)}, value / 1e6)
        family.add_sample(f"{name}_count", {"tenant": label}, float(s.total))
        family.add_sample(f"{name}_sum", {"tenant": label}, s.mean * s.total / 1e6)
    return family


def _quantile(values: Any, q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q * 100))


def registry(rt: Runtime) -> CollectorRegistry:
    """A ``CollectorRegistry`` holding only this runtime's collector (for any exporter)."""
    from prometheus_client import CollectorRegistry  # type: ignore[import-untyped,unused-ignore]

    reg = CollectorRegistry(auto_describe=False)
    reg.register(EngineCollector(rt))
    return reg
