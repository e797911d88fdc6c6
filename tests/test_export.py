"""Export: Prometheus' /metrics over HTTP on loopback, parsed with prometheus_client's own
parser; the OpenTelemetry bridge read through the SDK."""

from __future__ import annotations

from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

import engine
import engine.observe
import engine.store
from engine import Machine


async def http_get(port: int, path: str) -> tuple[str, str]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return head.split("\r\n")[0], body


def test_metrics_endpoint_scraped_and_parsed(impl: str, light: Machine) -> None:
    async def main() -> None:
        async with engine.open_runtime(implementation=impl, sample_every=1) as rt:
            port = await engine.observe.serve_metrics(rt, port=0)
            for i in range(10):
                rt.spawn(light, i)
            for i in range(10):
                for _ in range(i % 3):
                    rt.send_nowait(i, "tick")
            rt.send_nowait(0, "fault")
            await rt.wait_until_idle()
            status, body = await http_get(port, "/metrics")
            assert status == "HTTP/1.1 200 OK"
            families = {f.name: f for f in text_string_to_metric_families(body)}
            assert families["engine_messages_processed"].samples[0].value == 10
            assert families["engine_agents"].samples[0].value == 10
            states = {
                s.labels["state"]: s.value for s in families["engine_agents_in_state"].samples
            }
            assert states == {"red": 4, "green": 3, "yellow": 3}
            step = {
                s.labels.get("quantile"): s.value
                for s in families["engine_step_seconds"].samples
                if s.name == "engine_step_seconds"
            }
            assert set(step) == {"0.5", "0.9", "0.99"}
            assert 0 < step["0.5"] < 1
            count = [
                s.value
                for s in families["engine_step_seconds"].samples
                if s.name == "engine_step_seconds_count"
            ]
            assert count == [10]
            status, _ = await http_get(port, "/elsewhere")
            assert status == "HTTP/1.1 404 Not Found"

    trio.run(main)


def test_registry_for_a_synchronous_runtime(light: Machine) -> None:
    from prometheus_client import generate_latest

    rt = engine.Runtime()
    engine.store.Hibernation(rt, engine.store.MemoryStore())
    rt.spawn(light, 1)
    rt.spawn(light, 2)
    rt.send_nowait(1, "tick")
    rt.run_until_idle()
    rt.hibernate(1)
    rt.hibernate(2)
    rt.wake(2)
    text = generate_latest(engine.observe.prometheus_registry(rt)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["engine_messages_processed"].samples[0].value == 1  # 1's, asleep
    assert families["engine_agents"].samples[0].value == 1
    assert families["engine_agents_hibernated"].samples[0].value == 1
    assert families["engine_hibernations"].samples[0].value == 2
    assert families["engine_wakes"].samples[0].value == 1
    assert families["engine_upgrades"].samples[0].value == 0
    assert families["engine_expired"].samples[0].value == 0
    assert [s.value for s in families["engine_step_seconds"].samples] == [0.0, 0.0]


def test_opentelemetry_bridge(light: Machine) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    rt = engine.Runtime(sample_every=1)
    keep = engine.observe.instrument_opentelemetry(rt, provider.get_meter("engine-test"))
    for i in range(3):
        rt.spawn(light, i)
        rt.send_nowait(i, "tick")
    rt.run_until_idle()
    data = reader.get_metrics_data()
    points: dict[str, Any] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    assert points["engine.messages.processed"][0].value == 3
    assert points["engine.agents"][0].value == 3
    in_state = {p.attributes["state"]: p.value for p in points["engine.agents.in_state"]}
    assert in_state == {"red": 0, "green": 3, "yellow": 0}
    quantiles = {p.attributes["quantile"] for p in points["engine.step.latency"]}
    assert quantiles == {"p50", "p90", "p99", "max"}
    assert points["engine.agents.hibernated"][0].value == 0
    assert points["engine.wakes"][0].value == 0
    assert points["engine.upgrades"][0].value == 0
    assert len(keep) == 28
    provider.shutdown()
