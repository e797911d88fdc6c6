"""An OpenTelemetry metrics bridge (the ``otel`` extra): observable instruments over one runtime.

Nothing is measured twice: each instrument's callback reads the runtime's own counters when
the OpenTelemetry SDK collects. Once the runtime has tenants, the ``engine.tenant.*``
instruments give each figure of ``TenantStatistics`` per tenant (a ``tenant`` attribute); they
share one reading per collection (``_TenantReadings``), so a tenant's figures agree with each
other and the tenants are read once, not once per instrument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, final

if TYPE_CHECKING:
    from ..runtime._runtime import Runtime
    from ..runtime._tenants import TenantStatistics

TENANT_COUNTERS = {
    "messages.processed": "processed",
    "messages.failed": "failed",
    "messages.rejected": "rejected",
    "messages.delayed": "delayed",
    "overruns": "overruns",
    "hibernations": "hibernated",
}
"""``engine.tenant.<name>`` observable counters: the ``TenantStatistics`` field each reads."""
TENANT_GAUGES = {
    "agents": "agents",
    "messages.queued": "queued",
    "messages.delayed_now": "delayed_now",
    "memory": "memory",
    "weight": "weight",
}
"""``engine.tenant.<name>`` observable gauges (``memory`` in bytes)."""


@final
class _TenantReadings:
    """``statistics().tenants``, read once per collection and shared by the tenant
    instruments' callbacks: a callback that was already served the current reading (so a new
    collection began) takes a fresh one. This needs no order among the callbacks."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.tenants: tuple[TenantStatistics, ...] = ()
        self.served: set[str] = set()

    def read(self, reader: str) -> tuple[TenantStatistics, ...]:
        if not self.served or reader in self.served:
            self.tenants = self.rt.statistics().tenants
            self.served.clear()
        self.served.add(reader)
        return self.tenants


def instrument(rt: Runtime, meter: Any, prefix: str = "engine") -> list[Any]:
    """Register observable counters and gauges for ``rt`` on an OpenTelemetry ``meter``.

    Returns:
        The instruments created (keep them alive as long as you want the readings).
    """
    from opentelemetry.metrics import CallbackOptions, Observation

    def observe(read: Callable[[], float]) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(read())]

        return callback

    def per_state(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"machine": m.machine, "state": state})
            for m in rt.machine_statistics()
            for state, count in m.states.items()
        ]

    def latency(ring_name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            summary = getattr(rt, ring_name).summary()
            if summary is None:
                return []
            return [
                Observation(getattr(summary, q) / 1e6, {"quantile": q})
                for q in ("p50", "p90", "p99", "max")
            ]

        return callback

    counters = {
        "messages.processed": lambda: rt.statistics().processed,
        "messages.failed": lambda: rt.statistics().failed,
        "messages.dropped": lambda: rt.statistics().dropped,
        "dead_letters": lambda: rt.statistics().dead_letters,
        "hibernations": lambda: rt.statistics().hibernations,
        "wakes": lambda: rt.statistics().woken,
        "expired": lambda: rt.statistics().expired,
    }
    gauges = {
        "agents": lambda: rt.statistics().agents,
        "agents.hibernated": lambda: rt.statistics().hibernated,
        "upgrades": lambda: rt.statistics().upgrades,
        "agents.ready": lambda: rt.statistics().ready,
        "timers": lambda: rt.statistics().timers,
    }
    made = [
        meter.create_observable_counter(f"{prefix}.{name}", callbacks=[observe(read)])
        for name, read in counters.items()
    ]
    made += [
        meter.create_observable_gauge(f"{prefix}.{name}", callbacks=[observe(read)])
        for name, read in gauges.items()
    ]
    made.append(meter.create_observable_gauge(f"{prefix}.agents.in_state", callbacks=[per_state]))
    made.append(
        meter.create_observable_gauge(
            f"{prefix}.step.latency", unit="s", callbacks=[latency("step_latency")]
        )
    )
    made.append(
        meter.create_observable_gauge(
            f"{prefix}.mailbox.wait", unit="s", callbacks=[latency("wait_latency")]
        )
    )
    return made + _tenant_instruments(rt, meter, prefix)


def _tenant_instruments(rt: Runtime, meter: Any, prefix: str) -> list[Any]:
    """The ``engine.tenant.*`` instruments; they observe nothing until the runtime has
    tenants (``statistics().tenants`` is empty)."""
    from opentelemetry.metrics import CallbackOptions, Observation

    readings = _TenantReadings(rt)

    def per_tenant(name: str, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(getattr(t, field), {"tenant": t.name})
                for t in readings.read(name)
            ]

        return callback

    def latency(name: str, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for t in readings.read(name):
                summary = getattr(t, field)
                if summary is None:
                    continue
                label = t.name
                out += [
                    Observation(getattr(summary, q) / 1e6, {"tenant": label, "quantile": q})
                    for q in ("p50", "p90", "p99", "max")
                ]
            return out

        return callback

    made = [
        meter.create_observable_counter(
            f"{prefix}.tenant.{name}", callbacks=[per_tenant(name, field)]
        )
        for name, field in TENANT_COUNTERS.items()
    ]
    made += [
        meter.create_observable_gauge(
            f"{prefix}.tenant.{name}",
            unit="By" if name == "memory" else "",
            callbacks=[per_tenant(name, field)],
        )
        for name, field in TENANT_GAUGES.items()
    ]
    made += [
        meter.create_observable_gauge(
            f"{prefix}.tenant.{name}", unit="s", callbacks=[latency(name, field)]
        )
        for name, field in (("step.latency", "step"), ("mailbox.wait", "wait"))
    ]
    return made
