"""The live dashboard without a browser: ``/dashboard/data.json`` against ``statistics()`` and
against the metrics history on both hot paths, its rates, the token, the static files, and
the HTTP server under hostile clients (oversized, malformed, silent, dripping, not reading,
resetting). The page itself runs in a real browser in tests/test_dashboard_browser.py."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import json
import math
import re
import socket
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

import engine
import engine.observe
from engine import AgentStatus, Limits, Machine, Runtime, Supervision
from engine.observe import _dashboard, _http, _server

TOKEN = "s3cret-Token_123"
HOSTILE = '<img src=x onerror="alert(1)">\n"ü'


async def fetch(port: int, raw: bytes, *, half_close: bool = False) -> bytes:
    """Send ``raw`` and read until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        if half_close:
            await stream.send_eof()
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data


def split(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for field in fields:
        name, _, value = field.partition(":")
        headers[name.lower()] = value.strip()
    return int(line.split()[1]), headers, body


async def get(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return split(await fetch(port, ("\r\n".join(lines) + "\r\n\r\n").encode()))


def worker() -> Machine:
    """``go`` counts; with payload ``"boom"`` it raises (the agent goes to ERROR)."""
    m = Machine("worker", ["idle"], "idle", [("idle", "go", None)])

    @m.handler("idle", "go")
    def go(ctx: Any, ev: Any) -> None:
        if ev.payload == "boom":
            raise RuntimeError("boom")

    return m


def populate(rt: Runtime) -> None:
    """30 agents over three tenants (one named with HTML and a newline), processed counts all
    different; two end in ERROR, one failed then recovered, one fails and is terminated by
    ``hold_mail``."""
    rt.add_tenant("acme", weight=2, limits=Limits(max_queued=1000))
    rt.add_tenant(HOSTILE, weight=0.5)
    m = worker()
    for i in range(30):
        tenant = ("default", "acme", HOSTILE)[i % 3]
        rt.spawn(m, f"a{i:02}", tenant=tenant, supervision=Supervision(policy="resume"))
        for _ in range(i + 1):
            rt.send_nowait(f"a{i:02}", "go")
    for agent in ("a03", "a07"):
        rt.send_nowait(agent, "go", "boom")  # last message failed: ERROR
    rt.send_nowait("a11", "go", "boom")
    rt.send_nowait("a11", "go")  # failed, then a success clears ERROR
    rt.send_nowait("a29", "go", "boom")


def hold_mail(rt: Runtime) -> None:
    """After the rest ran: the busiest agent leaves (its counts retired, no row of its own), a
    paused agent has 7 queued, another 3."""
    rt.terminate("a29")
    rt.pause("a05")
    rt.pause("a06")
    for _ in range(7):
        rt.send_nowait("a05", "go")
    for _ in range(3):
        rt.send_nowait("a06", "go")


def expected_rows(rt: Runtime, key: Callable[[engine.AgentStatistics], int]) -> list[str]:
    """The agents a table should list, worked out the slow way, one agent at a time."""
    rows = [(key(s), rt.ref(a).slot, a) for a in rt.agent_ids() if key(s := rt.statistics(a)) > 0]
    return [a for _, _, a in sorted(rows, key=lambda r: (-r[0], r[1]))][: _dashboard.TOP]


def check_document(rt: Runtime, doc: dict[str, Any]) -> None:
    """Every figure of ``doc`` equals what the runtime's own accessors say."""
    stats = rt.statistics()
    assert doc["version"] == 1
    assert doc["implementation"] == stats.implementation
    every = [rt.statistics(a) for a in rt.agent_ids()]
    assert doc["runtime"] == {
        "agents": stats.agents,
        "ready": stats.ready,
        "processed": stats.processed,
        "failed": stats.failed,
        "dropped": stats.dropped,
        "dead_letters": stats.dead_letters,
        "timers": stats.timers,
        "pending_requests": stats.pending_requests,
        "rejected": stats.rejected,
        "hibernated": stats.hibernated,
        "queued": sum(s.depth for s in every),
        "max_depth": max(s.depth for s in every),
    }
    assert doc["statuses"] == {
        s.name: sum(1 for a in every if a.status == s) for s in AgentStatus
    }
    for name in ("step", "wait"):
        summary = getattr(stats, name)
        assert summary is not None
        assert doc["latency"][name] == {
            f: getattr(summary, f) for f in ("count", "total", "p50", "p90", "p99", "max", "mean")
        }
    by_id = {s.agent_id: s for s in every}
    for table, key in (
        ("top_agents", lambda s: s.processed),
        ("problem_agents", lambda s: s.failed + (1 << 40) * (s.status == AgentStatus.ERROR)),
        ("deepest_agents", lambda s: s.depth),
    ):
        assert [r["agent"] for r in doc[table]] == expected_rows(rt, key), table
        for row in doc[table]:
            s = by_id[row["agent"]]
            assert row == {
                "agent": s.agent_id,
                "tenant": rt.tenant_of(s.agent_id),
                "machine": "worker",
                "state": s.state,
                "status": s.status.name,
                "processed": s.processed,
                "failed": s.failed,
                "depth": s.depth,
            }
    tenants = rt.tenant_statistics()
    assert [t["name"] for t in doc["tenants"]] == [t.name for t in tenants]
    for row, t in zip(doc["tenants"], tenants, strict=True):
        for field in ("weight", "agents", "processed", "failed", "queued", "delayed_now"):
            assert row[field] == getattr(t, field), field
        for field in ("rejected", "delayed", "overruns", "memory", "hibernated"):
            assert row[field] == getattr(t, field), field
        assert row["step"] == (None if t.step is None else _dashboard._latency(t.step))
        assert row["trend"] is None  # no metrics history on this runtime
    assert doc["history"] is None


def test_data_json_matches_statistics(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(implementation=impl, sample_every=1) as rt:
            port = await engine.observe.serve_metrics(rt, dashboard=True)
            populate(rt)
            await rt.wait_until_idle()
            hold_mail(rt)
            status, headers, body = await get(port, "/dashboard/data.json")
            assert status == 200
            assert headers["content-type"] == "application/json"
            doc = json.loads(body)
            check_document(rt, doc)
            # the figures the test set up, as a reader would see them
            assert doc["statuses"]["ERROR"] == 2
            assert doc["statuses"]["PAUSED"] == 2
            assert [r["agent"] for r in doc["problem_agents"]][:3] == ["a03", "a07", "a11"]
            assert [(r["agent"], r["depth"]) for r in doc["deepest_agents"]] == [
                ("a05", 7),
                ("a06", 3),
            ]
            assert doc["top_agents"][0]["agent"] == "a28"  # a29 was terminated
            assert doc["runtime"]["processed"] == sum(range(1, 31)) + 1  # a11's success
            assert doc["rates"] == dict.fromkeys(_dashboard._RATES)  # the first reading
            assert doc["seq"] == 1
            # pages polling at once share a reading younger than FRESH; then a new one
            assert (await get(port, "/dashboard/data.json"))[2] == body
            await trio.sleep(_server.FRESH)
            _, _, again = await get(port, "/dashboard/data.json")
            assert json.loads(again)["seq"] == 2

    trio.run(main)


def test_rates_come_from_a_baseline_at_least_min_interval_old(impl: str) -> None:
    now = [100.0]
    rt = Runtime(implementation=impl)
    rt.add_tenant("acme")
    m = worker()
    rt.spawn(m, "x", tenant="acme", supervision=Supervision(policy="resume"))
    rt.spawn(m, "y")
    reader = _dashboard.DashboardReader(rt, clock=lambda: now[0], wall=lambda: 5.0)

    def run(agent: str, n: int, failures: int = 0) -> None:
        for _ in range(n):
            rt.send_nowait(agent, "go")
        for _ in range(failures):
            rt.send_nowait(agent, "go", "boom")
        rt.run_until_idle()

    first = reader.read()
    assert first["rates"] == dict.fromkeys(_dashboard._RATES)
    assert first["tenants"][1]["processed_per_s"] is None
    assert first["time"] == 5.0
    run("x", 60, failures=20)
    run("y", 20)
    now[0] += 0.5
    second = reader.read()["rates"]
    assert second == {
        "interval": 0.5,
        "processed_per_s": 160.0,
        "failed_per_s": 40.0,
        "error_ratio": 0.2,
    }
    run("x", 100)
    now[0] += 0.125  # too soon after the baseline: the same rates, the baseline kept
    third = reader.read()
    assert third["rates"] == second
    assert third["seq"] == 3
    now[0] += 0.375  # 0.5 s after the baseline: its 100 messages over 0.5 s
    fourth = reader.read()
    assert fourth["rates"]["processed_per_s"] == 200.0
    assert fourth["rates"]["error_ratio"] == 0.0
    assert {t["name"]: t["processed_per_s"] for t in fourth["tenants"]} == {
        "default": 0.0,
        "acme": 200.0,
    }
    now[0] += 1.0  # nothing handled: no error ratio (0 of 0)
    assert reader.read()["rates"]["error_ratio"] is None


def test_history_columns_become_json_numbers_or_null() -> None:
    values = np.array([1.0, math.nan, math.inf, -math.inf, 2.5])
    assert _dashboard._finite(values) == [1.0, None, None, None, 2.5]
    assert set(_dashboard.HISTORY_COLUMNS) <= set(engine.observe.RUNTIME_COLUMNS)


def null(values: Any) -> list[float | None]:
    """Numpy values as the document must have them: NaN as None."""
    return [None if math.isnan(v) else v for v in np.asarray(values).tolist()]


def check_history(rt: Runtime, doc: dict[str, Any]) -> None:
    """``doc``, read at the instant of the history's last reading, has the history's columns
    exactly, aligned, in the units and on the clock of the rest of the document."""
    history = rt.metrics_history
    assert history is not None
    columns, tenants = history.runtime(), history.tenants()
    n = min(len(history), _dashboard.HISTORY_POINTS)
    sent = doc["history"]
    assert list(sent) == list(_dashboard.HISTORY_COLUMNS)
    for name, values in sent.items():
        assert values == null(columns[name][-n:]), name
    # one point per reading, at the interval, the last one the reading's own instant
    assert np.diff(sent["time"]).tolist() == [history.interval] * (n - 1)
    assert sent["time"][-1] == doc["clock"] == trio.current_time()
    for name in ("processed", "failed", "queued", "ready", "agents", "hibernated"):
        assert sent[name][-1] == doc["runtime"][name], name
    for ring in ("step", "wait"):  # µs on both sides (None: no sample yet)
        summary = doc["latency"][ring]
        for q in ("p50", "p99"):
            assert sent[f"{ring}_{q}"][-1] == (summary and summary[q]), (ring, q)
    assert [t["name"] for t in doc["tenants"]] == list(tenants)
    for row in doc["tenants"]:
        want = tenants[row["name"]]["processed_per_s"][-_dashboard.TREND_POINTS :]
        assert row["trend"] == null(want), row["name"]


def test_data_json_history_is_the_metrics_history(
    impl: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``open_runtime(metrics_history=...)``, under a ``MockClock`` moved by hand (the
    server is on real sockets, so it must not autojump): ``history`` is the last
    ``HISTORY_POINTS`` readings of ``rt.metrics_history.runtime()``, NaN as null, before and
    after the ring holds more than that; each tenant's ``trend`` is the end of its own
    ``processed_per_s``; the document's rates are on the history's clock, so over the same
    interval they equal its last rates."""
    monkeypatch.setattr(_server, "FRESH", 0.0)  # every request a new reading
    clock = trio.testing.MockClock()
    interval, readings = 0.5, _dashboard.HISTORY_POINTS + 20

    async def main() -> None:
        async with engine.open_runtime(
            implementation=impl, sample_every=1, metrics_history=interval
        ) as rt:
            port = await engine.observe.serve_metrics(rt, dashboard=True)
            m = worker()
            rt.spawn(m, "w", supervision=Supervision(policy="resume"))
            docs = {}
            for k in range(1, readings + 1):
                if k == 4:  # a tenant from reading 4 on: NaN in its trend before
                    rt.add_tenant("acme")
                    rt.spawn(m, "t", tenant="acme")
                for i in range((k - 1) % 7):  # none before reading 1: NaN latencies there
                    rt.send_nowait("w", "go", "boom" if i == 1 else None)
                if k >= 4:
                    for _ in range(k % 3):
                        rt.send_nowait("t", "go")
                await rt.wait_until_idle()
                clock.jump(interval)
                await trio.testing.wait_all_tasks_blocked()  # the history took reading k
                assert len(rt.metrics_history) == min(k, rt.metrics_history.size)
                if k in (10, readings - 1, readings):
                    status, _, body = await get(port, "/dashboard/data.json")
                    assert status == 200
                    docs[k] = json.loads(body)
                    check_history(rt, docs[k])
            early = docs[10]
            assert len(early["history"]["time"]) == 10
            assert early["history"]["step_p50"][0] is None
            assert early["history"]["failed_per_s"][-1] == 2.0  # reading 10: one boom
            acme = next(t for t in early["tenants"] if t["name"] == "acme")
            assert acme["trend"][:3] == [None] * 3
            assert None not in acme["trend"][3:]
            last = docs[readings]
            assert len(last["history"]["time"]) == _dashboard.HISTORY_POINTS
            assert last["rates"]["interval"] == interval
            for name in ("processed_per_s", "failed_per_s"):
                assert last["rates"][name] == last["history"][name][-1], name
            rates = {t["name"]: t["processed_per_s"] for t in last["tenants"]}
            assert rates == {t["name"]: t["trend"][-1] for t in last["tenants"]}

    trio.run(main, clock=clock)


def test_dashboard_is_off_by_default(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            port = await engine.observe.serve_metrics(rt)
            for path in ("/dashboard", "/dashboard/data.json", "/dashboard/static/dashboard.js"):
                assert (await get(port, path))[0] == 404, path
            assert (await get(port, "/metrics"))[0] == 200

    trio.run(main)


def test_static_files_and_the_page(impl: str) -> None:
    files = importlib.resources.files("engine.observe") / "static"

    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            port = await engine.observe.serve_metrics(rt, dashboard=True)
            for name, kind in _server.STATIC.items():
                status, headers, body = await get(port, f"/dashboard/static/{name}")
                assert status == 200, name
                assert headers["content-type"] == kind
                assert headers["x-content-type-options"] == "nosniff"
                assert body == (files / name).read_bytes()
            status, headers, body = await get(port, "/dashboard")
            assert status == 200
            assert headers["content-type"] == "text/html; charset=utf-8"
            assert headers["content-security-policy"] == _server.PAGE_POLICY
            assert headers["referrer-policy"] == "no-referrer"
            # the page names only files that are served, by relative URLs (no CDN)
            named = re.findall(rb'(?:src|href)="([^"]+)"', body)
            assert set(named) == {
                b"data:,",
                *(f"dashboard/static/{n}".encode() for n in _server.STATIC),
            }
            status, headers, body = await get(port, "/dashboard", method="HEAD")
            assert status == 200
            assert body == b""
            assert int(headers["content-length"]) == len((files / "dashboard.html").read_bytes())
            for path in (
                "/dashboard/static/README.md",  # in the folder, not served
                "/dashboard/static/../_server.py",
                "/dashboard/static/",
                "/dashboard/",
                "/dashboard/data.json/x",
                "/",
            ):
                assert (await get(port, path))[0] == 404, path

    trio.run(main)


def test_vendored_uplot_is_the_one_its_readme_names() -> None:
    files = importlib.resources.files("engine.observe") / "static"
    readme = (files / "README.md").read_text()
    sums = dict(re.findall(r"\| `([\w.]+)` \| `([0-9a-f]{64})` \|", readme))
    assert set(sums) == {"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"}
    for name, digest in sums.items():
        assert hashlib.sha256((files / name).read_bytes()).hexdigest() == digest, name
    assert "(v1.6.32)" in (files / "uPlot.iife.min.js").read_text()[:100]
    assert "MIT License" in (files / "uPlot.LICENSE").read_text()


def test_token_guards_the_data_but_not_the_static_files(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            port = await engine.observe.serve_metrics(rt, dashboard=True, token=TOKEN)
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            for path in ("/dashboard", "/dashboard/data.json", "/metrics"):
                status, headers, _ = await get(port, path)
                assert status == 401, path
                assert headers["www-authenticate"] == 'Bearer realm="engine"'
                assert (await get(port, path + "?token=wrong"))[0] == 403, path
                assert (await get(port, path + f"?token={TOKEN}x"))[0] == 403, path
                assert (await get(port, path, {"Authorization": "Bearer wrong"}))[0] == 403
                assert (await get(port, path, {"Authorization": f"Basic {TOKEN}"}))[0] == 401
                assert (await get(port, f"{path}?token={TOKEN}&token={TOKEN}"))[0] == 403
                assert (await get(port, path + f"?token={TOKEN}"))[0] == 200, path
                assert (await get(port, path, bearer))[0] == 200, path
                assert (await get(port, path, {"authorization": f"bearer {TOKEN}"}))[0] == 200
            # the header wins over the query: a wrong header is refused whatever the URL says
            wrong = {"Authorization": "Bearer nope"}
            assert (await get(port, f"/dashboard/data.json?token={TOKEN}", wrong))[0] == 403
            twice = f"Authorization: Bearer {TOKEN}\r\n" * 2
            raw = f"GET /metrics HTTP/1.1\r\n{twice}\r\n"
            assert split(await fetch(port, raw.encode()))[0] == 400  # two credentials
            assert (await get(port, "/dashboard/static/dashboard.js"))[0] == 200

    trio.run(main)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"token": ""}, "token must be"),
        ({"token": "has space"}, "token must be"),
        ({"token": "a+b"}, "token must be"),  # a query would read it as "a b"
        ({"token": "a%41"}, "token must be"),
        ({"token": "ünïcode"}, "token must be"),
        ({"token": 12345}, "token must be"),
        ({"dashboard": "yes"}, "dashboard must be True or False"),
        ({"port": 70000}, "port must be in 0..65535"),
        ({"port": 1.5}, "port must be an integer"),
        ({"host": ""}, "host must be"),
    ],
)
def test_bad_arguments_are_refused(arguments: dict[str, Any], message: str) -> None:
    async def main() -> None:
        async with engine.open_runtime() as rt:
            with pytest.raises(engine.InvalidArgumentError, match=message):
                await engine.observe.serve_metrics(rt, **arguments)

    trio.run(main)


HOSTILE_REQUESTS = [
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 9000 + b"\r\n\r\n", 431),
    (b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(900)), 431),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /metrics\r\n\r\n", 400),
    (b"GET /metrics HTTP/2.0\r\n\r\n", 400),
    (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
    (b"GET metrics HTTP/1.1\r\n\r\n", 400),
    (b"GET /met\x00rics HTTP/1.1\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nName : v\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nA: b\nc\r\n\r\n", 400),  # a bare LF in a value
    (b"GET /metrics HTTP/1.1\r\nA: b\x00\r\n\r\n", 400),
    (b"GET /dashboard?token=%ff HTTP/1.1\r\n\r\n", 400),
    (b"GET /metrics?" + b"&".join(b"k%d=v" % i for i in range(40)) + b" HTTP/1.1\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # TLS hello-ish
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", 400),  # the head never ends: EOF
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 405),
    (b"DELETE /dashboard HTTP/1.1\r\n\r\n", 405),
    (b"GET /nowhere HTTP/1.0\r\n\r\n", 404),
]


def test_hostile_requests_get_an_answer_and_harm_nothing(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            port = await engine.observe.serve_metrics(rt, dashboard=True)
            rt.spawn(worker(), "w")
            for raw, expected in HOSTILE_REQUESTS:
                status, headers, _ = split(await fetch(port, raw, half_close=True))
                assert status == expected, raw[:60]
                if expected == 405:
                    assert headers["allow"] == "GET, HEAD"
            # a client that resets mid-request (SO_LINGER 0) costs nothing either
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"GET /metr")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await trio.sleep(0.05)
            # a connection that says nothing and closes is a port probe: no answer
            assert await fetch(port, b"", half_close=True) == b""
            rt.send_nowait("w", "go")
            await rt.wait_until_idle()
            status, _, body = await get(port, "/dashboard/data.json")
            assert status == 200
            assert json.loads(body)["runtime"]["processed"] == 1

    trio.run(main)


def test_silent_and_dripping_clients_time_out_without_stalling_others(
    impl: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "READ_TIMEOUT", 0.5)

    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            port = await engine.observe.serve_metrics(rt, dashboard=True)
            silent = await trio.open_tcp_stream("127.0.0.1", port)
            drip = await trio.open_tcp_stream("127.0.0.1", port)
            start = trio.current_time()
            # while both hang, others are served at once
            for _ in range(5):
                assert (await get(port, "/dashboard/data.json"))[0] == 200
            assert trio.current_time() - start < 0.4

            async def dripping() -> None:
                with contextlib.suppress(trio.BrokenResourceError):
                    for byte in b"GET /metrics HTTP/1.1\r\nX-Drip: " + b"a" * 1000:
                        await drip.send_all(bytes([byte]))
                        await trio.sleep(0.05)

            async def answer(stream: trio.SocketStream) -> int:
                data = b""
                with trio.fail_after(3):
                    while chunk := await stream.receive_some(65536):
                        data += chunk
                return split(data)[0]

            async with silent, drip, trio.open_nursery() as nursery:
                nursery.start_soon(dripping)
                # the whole head is due within READ_TIMEOUT, however busy the client is
                assert await answer(drip) == 408
                assert await answer(silent) == 408
                assert 0.5 <= trio.current_time() - start < 2.5
                nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_client_that_stops_reading_is_dropped_and_the_connection_cap_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Straight on ``_http.serve``: a 16 MiB answer to a client that never reads fills every
    buffer; past ``SEND_TIMEOUT`` the server drops it. With ``MAX_CONNECTIONS`` 1, a second
    client is refused (503) while the first holds the place, and served once it is gone."""
    monkeypatch.setattr(_http, "SEND_TIMEOUT", 0.5)
    monkeypatch.setattr(_http, "MAX_CONNECTIONS", 1)
    big = b"x" * (16 << 20)

    def route(request: _http.Request) -> _http.Response:
        return _http.Response(200, big if request.path == "/big" else b"small")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            await nursery.start(_http.serve, listeners, route)
            with socket.socket() as stuck:
                stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                stuck.connect(("127.0.0.1", port))
                stuck.sendall(b"GET /big HTTP/1.1\r\n\r\n")
                await trio.sleep(0.2)
                status, _, body = await get(port, "/small")
                assert status == 503
                assert b"too many connections" in body
                await trio.sleep(0.6)  # past SEND_TIMEOUT: the stuck client was dropped
                status, _, body = await get(port, "/small")
                assert (status, body) == (200, b"small")
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_page_that_fails_costs_its_client_a_500_not_the_runtime(impl: str) -> None:
    """An agent id whose repr raises breaks the data of the page, not the runtime."""

    class Cursed:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            cursed = Cursed()
            rt.spawn(worker(), cursed)
            rt.send_nowait(cursed, "go")  # the top agent: its row is made
            await rt.wait_until_idle()
            port = await engine.observe.serve_metrics(rt, dashboard=True)
            status, _, body = await get(port, "/dashboard/data.json")
            assert status == 500
            assert b"internal error" in body
            assert (await get(port, "/metrics"))[0] == 200  # the server and runtime go on
            rt.spawn(worker(), "after")
            assert "after" in rt

    trio.run(main)
