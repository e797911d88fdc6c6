"""Per-tenant metrics: Prometheus' /metrics scraped over HTTP and parsed with
prometheus_client's own parser, the OpenTelemetry bridge read through the SDK, and the frames
of ``engine top``, each checked against ``Runtime.tenant_statistics()``; a hostile tenant name
comes out escaped, and nothing of tenants shows before the runtime has one. Every test runs
on both hot paths."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import trio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_export import http_get

import engine
import engine.observe
from engine import Limits, Machine, Runtime, TenantLimitError
from engine.observe._top import TopView

HOSTILE = 'q"b\\n\nü☃\t\x1b[2J ' + "z" * 180
"""A quote, a backslash before an ``n``, a newline, non-ASCII, a tab, an escape sequence;
199 characters."""
HOSTILE_LABEL = 'q\\"b\\\\n\\nü☃\t\x1b[2J ' + "z" * 180
"""``HOSTILE`` as the text format writes it: only ``"``, ``\\`` and newline are escaped."""
HOSTILE_SHOWN = 'q"b\\n\\nü☃\\t\\x1b[2J …'
"""``HOSTILE`` in a ``top`` frame: what is not printable escaped, cut to 20 characters."""
TENANTS = ["default", "acme", "beta", "idle", HOSTILE]

COUNTERS = {
    "messages_processed": "processed",
    "messages_failed": "failed",
    "messages_rejected": "rejected",
    "messages_delayed": "delayed",
    "overruns": "overruns",
    "hibernations": "hibernated",
}
GAUGES = {
    "agents": "agents",
    "messages_queued": "queued",
    "messages_delayed_now": "delayed_now",
    "memory_bytes": "memory",
    "weight": "weight",
}


class Clock:
    """A clock that stands still: ``beta``'s rate bucket is never refilled."""

    def __call__(self) -> float:
        return 0.0


def worker() -> Machine:
    """``go`` with payload ``"slow"`` sleeps 20 ms, with ``"boom"`` raises."""
    m = Machine("worker", ["idle"], "idle", [("idle", "go", None)])

    @m.handler("idle", "go")
    def go(ctx: Any, ev: Any) -> None:
        if ev.payload == "slow":
            time.sleep(0.02)
        elif ev.payload == "boom":
            raise RuntimeError("boom")

    return m


def add_tenants(rt: Runtime) -> None:
    rt.add_tenant("acme", weight=2, limits=Limits(max_queued=3))
    rt.add_tenant("beta", weight=0.5, limits=Limits(rate=10, burst=3, turn_deadline=0.005))
    rt.add_tenant("idle", weight=1.5)
    rt.add_tenant(HOSTILE, weight=3)


def populate(rt: Runtime) -> None:
    """Spawn and send (the caller runs it) to give every tenant something to count: acme a
    refusal at ``max_queued``; beta an overrun, a failure and two messages its rate holds
    back; ``idle`` an agent that never gets mail (so no latency samples)."""
    m = worker()
    for i in range(4):
        rt.spawn(m, f"acme-{i}", tenant="acme")
    rt.spawn(m, "beta-0", tenant="beta")
    rt.spawn(m, "beta-1", tenant="beta")
    rt.spawn(m, "idle-0", tenant="idle")
    rt.spawn(m, "hostile-0", tenant=HOSTILE)
    rt.spawn(m, "plain")
    for i in range(3):
        rt.send_nowait(f"acme-{i}", "go")
    with pytest.raises(TenantLimitError):
        rt.send_nowait("acme-3", "go")
    for payload in ("slow", "boom", None, None, None):
        rt.send_nowait("beta-0", "go", payload)
    for _ in range(2):
        rt.send_nowait("hostile-0", "go")
    rt.send_nowait("plain", "go")


def check_expected(rt: Runtime) -> dict[str, engine.TenantStatistics]:
    """The tenants' statistics by name, after ``populate``; what they should be."""
    stats = {t.name: t for t in rt.tenant_statistics()}
    assert list(stats) == TENANTS
    acme, beta, idle = stats["acme"], stats["beta"], stats["idle"]
    assert (acme.processed, acme.rejected, acme.agents, acme.weight) == (3, 1, 4, 2.0)
    assert (beta.failed, beta.overruns, beta.delayed, beta.delayed_now) == (1, 1, 2, 2)
    assert (beta.queued, beta.processed) == (2, 2)  # the slow one and one more
    assert (idle.step, idle.wait, idle.processed) == (None, None, 0)
    assert (stats[HOSTILE].processed, stats["default"].processed) == (2, 1)
    assert all(t.memory > 0 for t in stats.values())
    return stats


def by_tenant(family: Any, sample_name: str | None = None) -> dict[str, float]:
    name = family.name if sample_name is None else sample_name
    return {s.labels["tenant"]: s.value for s in family.samples if s.name == name}


def check_families(families: dict[str, Any], stats: dict[str, engine.TenantStatistics]) -> None:
    for name, field in (COUNTERS | GAUGES).items():
        family = families[f"engine_tenant_{name}"]
        assert family.type == ("counter" if name in COUNTERS else "gauge")
        sample = f"{family.name}_total" if name in COUNTERS else None
        assert by_tenant(family, sample) == {n: getattr(t, field) for n, t in stats.items()}
    for name, field in (("step_seconds", "step"), ("mailbox_wait_seconds", "wait")):
        family = families[f"engine_tenant_{name}"]
        assert family.type == "summary"
        sampled = {n: getattr(t, field) for n, t in stats.items() if getattr(t, field)}
        # the default tenant samples latency only once it was changed itself; idle's
        # agents never had mail
        assert {"acme", "beta", HOSTILE} <= set(sampled)
        assert "idle" not in sampled
        for q, attr in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99")):
            quantile = {
                s.labels["tenant"]: s.value
                for s in family.samples
                if s.name == family.name and s.labels["quantile"] == q
            }
            assert quantile == {
                n: pytest.approx(getattr(s, attr) / 1e6) for n, s in sampled.items()
            }
        count = by_tenant(family, f"{family.name}_count")
        assert count == {n: s.total for n, s in sampled.items()}
        total = by_tenant(family, f"{family.name}_sum")
        assert total == {n: pytest.approx(s.mean * s.total / 1e6) for n, s in sampled.items()}


# -- Prometheus -----------------------------------------------------------------------------


def test_tenant_series_scraped_over_http(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(implementation=impl, sample_every=1, clock=Clock()) as rt:
            port = await engine.observe.serve_metrics(rt, port=0)
            add_tenants(rt)
            populate(rt)
            await rt.wait_until_idle()
            stats = check_expected(rt)
            status, body = await http_get(port, "/metrics")
            assert status == "HTTP/1.1 200 OK"
            families = {f.name: f for f in text_string_to_metric_families(body)}
            check_families(families, stats)
            # the runtime's own series are still there and still add up
            total = families["engine_messages_processed"].samples[0].value
            assert total == sum(t.processed for t in stats.values())

    trio.run(main)


def test_hostile_tenant_names_are_escaped(impl: str) -> None:
    rt = Runtime(implementation=impl, sample_every=1, clock=Clock())
    add_tenants(rt)
    populate(rt)
    rt.run_until_idle()
    body = generate_latest(engine.observe.prometheus_registry(rt)).decode()
    assert f'engine_tenant_agents{{tenant="{HOSTILE_LABEL}"}} 1.0\n' in body
    assert f'engine_tenant_weight{{tenant="{HOSTILE_LABEL}"}} 3.0\n' in body
    sample = re.compile(r'^[a-z_]+(\{(?:[a-z_]+="(?:[^"\\\n]|\\.)*",?)*\})? \S+$')
    for line in body.splitlines():  # no name broke a line or a quote
        assert line.startswith("#") or sample.match(line), line
    families = {f.name: f for f in text_string_to_metric_families(body)}
    check_families(families, {t.name: t for t in rt.tenant_statistics()})


def test_a_name_utf8_cannot_encode_is_refused_before_any_exporter_sees_it(impl: str) -> None:
    rt = Runtime(implementation=impl)
    with pytest.raises(engine.InvalidArgumentError):
        rt.add_tenant("lone \ud800 surrogate")  # it would break every scrape
    assert [t.name for t in rt.tenants()] == ["default"]


def test_no_tenant_series_until_a_tenant_is_added_or_changed(impl: str) -> None:
    rt = Runtime(implementation=impl, sample_every=1)
    rt.spawn(worker(), 1)
    rt.send_nowait(1, "go")
    rt.run_until_idle()
    assert rt.statistics().tenants == ()
    registry = engine.observe.prometheus_registry(rt)
    body = generate_latest(registry).decode()
    assert "tenant" not in body
    assert "engine_messages_processed_total 1.0" in body
    rt.update_tenant("default", weight=2)  # changing the default tenant turns them on
    body = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert by_tenant(families["engine_tenant_weight"]) == {"default": 2.0}
    assert by_tenant(families["engine_tenant_agents"]) == {"default": 1}


# -- OpenTelemetry --------------------------------------------------------------------------


def otel_points(reader: Any) -> dict[str, list[Any]]:
    points: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    return points


def per_tenant(points: list[Any]) -> dict[str, float]:
    return {p.attributes["tenant"]: p.value for p in points}


def test_opentelemetry_tenant_instruments(impl: str) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    rt = Runtime(implementation=impl, sample_every=1, clock=Clock())
    keep = engine.observe.instrument_opentelemetry(rt, provider.get_meter("engine-test"))
    assert len(keep) == 15 + 13
    rt.spawn(worker(), "early")
    rt.send_nowait("early", "go")
    rt.run_until_idle()
    assert not [name for name in otel_points(reader) if ".tenant." in name]
    add_tenants(rt)
    rt.terminate("early")  # the default tenant keeps its count
    populate(rt)
    rt.run_until_idle()
    stats = {t.name: t for t in rt.tenant_statistics()}
    points = otel_points(reader)
    for name, field in (COUNTERS | GAUGES).items():
        otel_name = "engine.tenant." + name.replace("_bytes", "").replace("messages_", "messages.")
        assert per_tenant(points[otel_name]) == {n: getattr(t, field) for n, t in stats.items()}
    assert per_tenant(points["engine.tenant.messages.processed"])["default"] == 2
    for otel_name, field in (("step.latency", "step"), ("mailbox.wait", "wait")):
        seen = {
            (p.attributes["tenant"], p.attributes["quantile"]): p.value
            for p in points[f"engine.tenant.{otel_name}"]
        }
        assert seen == {
            (n, q): pytest.approx(getattr(getattr(t, field), q) / 1e6)
            for n, t in stats.items()
            if getattr(t, field) is not None
            for q in ("p50", "p90", "p99", "max")
        }
    # each collection takes a fresh reading, for every instrument
    for _ in range(5):
        rt.send_nowait("idle-0", "go")
    rt.run_until_idle()
    points = otel_points(reader)
    idle = {"messages.processed": 5, "agents": 1, "weight": 1.5, "messages.queued": 0}
    for name, value in idle.items():
        assert per_tenant(points[f"engine.tenant.{name}"])["idle"] == value
    assert "idle" in {p.attributes["tenant"] for p in points["engine.tenant.step.latency"]}
    provider.shutdown()


# -- engine top -----------------------------------------------------------------------------


def tenant_rows(frame: str) -> dict[str, list[str]]:
    """The tenants table of a ``top`` frame: cells by the tenant's shown name."""
    lines = frame.splitlines()
    start = lines.index("tenants")
    header = lines[start + 1].split()
    assert header == [
        "tenant", "weight", "agents", "queued", "msg/s", "processed", "rejected", "delayed",
        "overruns", "memory", "p99", "step",
    ]  # fmt: skip
    rows = {}
    for line in lines[start + 2 :]:
        name, rest = line[2:22].rstrip(), line[22:].split()
        rows[name] = rest
    return rows


def test_top_shows_a_row_per_tenant(impl: str) -> None:
    rt = Runtime(implementation=impl, sample_every=1, clock=Clock(), metrics=True)
    view = TopView(rt, "tenants")
    assert "tenants" not in view.frame().splitlines()
    add_tenants(rt)
    populate(rt)
    rt.run_until_idle()
    stats = {t.name: t for t in rt.tenant_statistics()}
    frame = view.frame()
    rows = tenant_rows(frame)
    assert list(rows) == ["default", "acme", "beta", "idle", HOSTILE_SHOWN]
    assert "\x1b" not in frame  # nothing reaches the terminal raw
    assert HOSTILE not in frame
    for name, t in stats.items():
        cells = rows[HOSTILE_SHOWN if name == HOSTILE else name]
        weight, agents, queued, _, processed, rejected, delayed, overruns = cells[:8]
        assert float(weight) == t.weight
        counts = [int(c.replace(",", "")) for c in (agents, queued, processed)]
        assert counts == [t.agents, t.queued, t.processed]
        assert [int(rejected), int(delayed), int(overruns)] == [t.rejected, t.delayed, t.overruns]
        assert " ".join(cells[8:10]) == f"{t.memory:,} B"
        p99 = "-" if t.step is None else f"{t.step.p99:,.1f} µs"
        assert " ".join(cells[10:]) == p99
    for _ in range(4):
        rt.send_nowait("acme-3", "go")  # acme's max_queued is 3: send one by one
        rt.run_until_idle()
    rows = tenant_rows(view.frame())  # rates over the last interval only
    rate = {name: float(cells[3].replace(",", "")) for name, cells in rows.items()}
    assert rate["acme"] > 0
    assert [rate[name] for name in ("default", "beta", "idle", HOSTILE_SHOWN)] == [0, 0, 0, 0]
