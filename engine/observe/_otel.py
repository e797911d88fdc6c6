"""An OpenTelemetry metrics bridge (the ``otel`` extra): observable instruments over one runtime.

Nothing is measured twice: each instrument's callback reads the runtime's own counters when
the OpenTelemetry SDK collects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..runtime._runtime import Runtime


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
    return made
