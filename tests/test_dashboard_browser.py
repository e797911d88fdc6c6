"""The live dashboard in a real browser: Debian's chromium, headless, driven by selenium.

A runtime runs under trio in a thread of its own, serving the dashboard with a token, while a
workload sends mail (agent ``wNN`` gets NN+1 messages a tick, so every count differs; ``flaky``
fails every tick; ``held`` is paused with mail). The page must load with the token, show
numbers that move while the workload runs, and then, with the workload paused and the
runtime idle, show exactly what the runtime's own accessors say (see ``test_the_dashboard``).
Without the token, or with another, the page is refused. With a metrics history on the
runtime, the trend charts draw it (not what the page polled) and each tenant row gets a
sparkline of its own history (``test_the_trends_come_from_the_metrics_history``).

Chromium and its driver are not Python packages: ``.ci/run`` installs them (Debian's
``chromium`` and ``chromium-driver``). Without them this test fails, never skips. With
``DASHBOARD_SCREENSHOT=docs/dashboard.png`` it also writes the README's screenshot there.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from test_dashboard import expected_rows, worker

import engine
import engine.observe
from engine import AgentStatus, Supervision

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "dash-Token_42"
HOSTILE = "<b>beta</b> & co"
"""A tenant name with markup: the page must show it as text."""
WORKERS = 20
TICK = 0.02
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,1100",
]
"""Headless, and quiet: without the background-networking flags chromium keeps trying to
reach its services."""

READ_PAGE = """
const out = {seq: document.body.dataset.seq || null, values: {}, tables: {}};
for (const el of document.querySelectorAll("[data-key]")) {
  out.values[el.dataset.key] = el.dataset.value;
}
for (const id of ["top_agents", "problem_agents", "deepest_agents", "tenants"]) {
  out.tables[id] = [...document.querySelectorAll("#" + id + " tr[data-row]")].map((tr) => ({
    row: tr.dataset.row,
    first: tr.cells[0].textContent,
    cells: Object.fromEntries([...tr.cells].map((td) => [td.dataset.field, td.dataset.value])),
  }));
}
out.elements = document.querySelectorAll("#tenants img, #tenants b").length;
out.charts = {};
for (const el of document.querySelectorAll(".chart")) {
  out.charts[el.id] = {source: el.dataset.source, points: Number(el.dataset.points),
                       last: el.dataset.last ? JSON.parse(el.dataset.last) : null};
}
out.sparks = [...document.querySelectorAll("#tenants tr[data-row]")].map(
  (tr) => tr.querySelectorAll("svg.spark polyline").length);
out.trend = document.getElementById("trend-source").textContent;
out.canvases = document.querySelectorAll(".chart canvas").length;
out.status = document.getElementById("status").textContent;
return out;
"""
"""One consistent reading of the page (its script renders a document in one go)."""


class Served:
    """A runtime in a trio thread serving the dashboard, with a workload the test pauses."""

    def __init__(self, history: float | None = None) -> None:
        self.history = history
        self.paused = False
        self.resumed = trio.Event()
        self.rt: engine.Runtime | None = None
        self.scope = trio.CancelScope()
        ready: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=trio.run, args=(self._main, ready), daemon=True)
        self.thread.start()
        got = ready.get(timeout=10)
        if isinstance(got, BaseException):
            raise got
        self.port, self.token = got

    async def _main(self, ready: queue.Queue[Any]) -> None:
        try:
            async with engine.open_runtime(sample_every=4, metrics_history=self.history) as rt:
                self.rt = rt
                rt.add_tenant("acme", weight=2)
                rt.add_tenant(HOSTILE, weight=0.5)
                m, resume = worker(), Supervision(policy="resume")
                tenants = ("default", "acme", HOSTILE)
                for i in range(WORKERS):
                    rt.spawn(m, f"w{i:02}", tenant=tenants[i % 3], supervision=resume)
                rt.spawn(m, "flaky", tenant="acme", supervision=resume)
                rt.spawn(m, "held")
                rt.pause("held")
                for _ in range(5):
                    rt.send_nowait("held", "go")
                port = await engine.observe.serve_metrics(rt, dashboard=True, token=TOKEN)
                ready.put((port, trio.lowlevel.current_trio_token()))
                with self.scope:
                    await self._workload(rt)
        except BaseException as exc:
            ready.put(exc)
            raise

    async def _workload(self, rt: engine.Runtime) -> None:
        while True:
            if self.paused:
                await self.resumed.wait()
            for i in range(WORKERS):
                for _ in range(i + 1):
                    rt.send_nowait(f"w{i:02}", "go")
            rt.send_nowait("flaky", "go")
            rt.send_nowait("flaky", "go", "boom")  # last: flaky ends each tick in ERROR
            await trio.sleep(TICK)

    def call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        return trio.from_thread.run(fn, trio_token=self.token)

    async def pause(self) -> None:
        """Stop sending (the workload checks before each tick) and wait until all is run."""
        assert self.rt is not None
        self.paused = True
        self.resumed = trio.Event()
        await self.rt.wait_until_idle()

    async def resume(self) -> None:
        self.paused = False
        self.resumed.set()

    async def expected(self) -> dict[str, Any]:
        """What the page must show, from the runtime's own accessors (in its thread)."""
        rt = self.rt
        assert rt is not None
        stats = rt.statistics()
        every = {a: rt.statistics(a) for a in rt.agent_ids()}
        assert stats.step is not None
        assert stats.wait is not None
        return {
            "stats": stats,
            "agents": every,
            "depths": sum(s.depth for s in every.values()),
            "errors": sum(s.status == AgentStatus.ERROR for s in every.values()),
            "top": expected_rows(rt, lambda s: s.processed),
            "problems": expected_rows(
                rt, lambda s: s.failed + (1 << 40) * (s.status == AgentStatus.ERROR)
            ),
            "deepest": expected_rows(rt, lambda s: s.depth),
            "tenants": {t.name: t for t in rt.tenant_statistics()},
        }

    async def stop(self) -> None:
        self.scope.cancel()


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    """The served runtime; ``@pytest.mark.parametrize("served", [SECONDS], indirect=True)``
    gives it a metrics history read every SECONDS."""
    s = Served(getattr(request, "param", None))
    try:
        yield s
    finally:
        s.call(s.stop)
        s.thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    if missing:
        pytest.fail(
            f"the dashboard's browser test needs Debian's chromium and its driver ({missing} "
            "missing): apt-get install --no-install-recommends chromium chromium-driver "
            "(.ci/run installs them)",
            pytrace=False,
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.fail(f"selenium is missing (the `test` dependency group): {exc}", pytrace=False)
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium manager: never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """The first reading of the page that passes ``check`` (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        page: dict[str, Any] = driver.execute_script(READ_PAGE)
        if check(page):
            return page
        if time.monotonic() > deadline:
            raise AssertionError(f"the page never showed {what}; it shows {page}")
        time.sleep(0.05)


def test_the_dashboard(served: Served, browser: Any, tmp_path: Path) -> None:
    started = time.monotonic()
    base = f"http://127.0.0.1:{served.port}/dashboard"
    browser.get(f"{base}?token={TOKEN}")
    assert browser.title == "engine dashboard"

    # live: the numbers move while the workload runs
    first = wait_for(
        browser, lambda p: float(p["values"]["rates.processed_per_s"] or 0) > 0, "a throughput"
    )
    moved = wait_for(
        browser,
        lambda p: int(p["values"]["runtime.processed"]) > int(first["values"]["runtime.processed"])
        and int(p["seq"]) > int(first["seq"]),
        "the processed count moving",
    )
    assert moved["canvases"] == 3
    assert moved["status"].startswith("live")
    assert {c["source"] for c in moved["charts"].values()} == {"polled"}  # no history
    assert moved["trend"] == "polled by this page"
    assert browser.save_screenshot(str(tmp_path / "dashboard.png"))
    shot = os.environ.get("DASHBOARD_SCREENSHOT")
    if shot:  # the README's: with some trend to show
        time.sleep(8)
        assert browser.save_screenshot(shot)
        started += 8

    # exact: paused and idle, nothing changes; a reading requested after the page showed
    # `seen` (itself read after the pause) was taken after the pause, and is then exact
    served.call(served.pause)
    seen = int(browser.execute_script(READ_PAGE)["seq"])
    want = served.call(served.expected)
    page = wait_for(
        browser,
        lambda p: int(p["seq"]) >= seen + 2 and p["values"]["rates.processed_per_s"] == "0",
        "a reading after the pause",
    )
    values, stats = page["values"], want["stats"]
    for key, expected in {
        "runtime.processed": stats.processed,
        "runtime.failed": stats.failed,
        "runtime.dropped": stats.dropped,
        "runtime.dead_letters": stats.dead_letters,
        "runtime.agents": stats.agents,
        "runtime.ready": stats.ready,
        "runtime.hibernated": stats.hibernated,
        "runtime.timers": stats.timers,
        "runtime.queued": want["depths"],
        "runtime.max_depth": 5,
        "statuses.ERROR": want["errors"],
        "statuses.PAUSED": 1,
    }.items():
        assert int(values[key]) == expected, key
    for ring in ("step", "wait"):
        summary = getattr(stats, ring)
        for q in ("p50", "p99", "max"):
            assert float(values[f"latency.{ring}.{q}"]) == getattr(summary, q), (ring, q)
    assert values["rates.failed_per_s"] == "0"
    assert stats.processed > 1000
    assert stats.failed > 10
    assert want["errors"] == 1

    tables = page["tables"]
    for table, key in (
        ("top_agents", "top"),
        ("problem_agents", "problems"),
        ("deepest_agents", "deepest"),
    ):
        assert [r["row"] for r in tables[table]] == want[key], table
        for row in tables[table]:
            agent = want["agents"][row["row"]]
            assert row["cells"]["status"] == agent.status.name
            for field in ("processed", "failed", "depth"):
                assert int(row["cells"][field]) == getattr(agent, field), (row, field)
    assert want["problems"][0] == "flaky"
    assert want["deepest"] == ["held"]
    assert [r["row"] for r in tables["tenants"]] == list(want["tenants"])
    for row in tables["tenants"]:
        t = want["tenants"][row["row"]]
        for field in ("agents", "processed", "failed", "queued"):
            assert int(row["cells"][field]) == getattr(t, field), (t.name, field)
        assert row["cells"]["processed_per_s"] == "0"
    hostile = next(r for r in tables["tenants"] if r["row"] == HOSTILE)
    assert hostile["first"] == HOSTILE  # shown as text, never as markup
    assert page["elements"] == 0

    problems = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert problems == []  # no script error, no refused load, no CSP violation

    # refused: without the token, or with another one
    browser.get(base)
    assert browser.find_element("tag name", "body").text.startswith("Unauthorized")
    browser.get(f"{base}?token=wrong")
    assert browser.find_element("tag name", "body").text.startswith("Forbidden")
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("served", [0.05], indirect=True)
def test_the_trends_come_from_the_metrics_history(served: Served, browser: Any) -> None:
    """With ``metrics_history``, every chart draws the server's history: more points than the
    page has polled, and once the runtime is paused and idle, last points equal to what the
    runtime says (rates 0, the held mail, the latency percentiles in µs); every tenant row
    has its sparkline, ending at 0 too."""
    started = time.monotonic()
    browser.get(f"http://127.0.0.1:{served.port}/dashboard?token={TOKEN}")

    def drawn(page: dict[str, Any]) -> bool:  # more points than the page can have polled
        charts = page["charts"].values()
        seq = int(page["seq"] or 0)
        return seq > 0 and all(c["source"] == "history" and c["points"] > seq for c in charts)

    live = wait_for(browser, drawn, "the charts drawing the history")
    assert live["trend"] == "the runtime's metrics history"
    served.call(served.pause)
    seen = int(browser.execute_script(READ_PAGE)["seq"])
    want = served.call(served.expected)
    stats = want["stats"]
    # a document asked for after the page showed `seen` (read after the pause) ends with
    # history readings taken after it (one every 0.05 s)
    page = wait_for(browser, lambda p: int(p["seq"]) >= seen + 2, "a reading after the pause")
    assert page["charts"]["chart-throughput"]["last"] == [0, 0]
    charts = page["charts"]
    assert charts["chart-queue"]["last"] == [want["depths"], stats.ready]
    assert charts["chart-latency"]["last"] == [
        stats.step.p50, stats.step.p99, stats.wait.p50, stats.wait.p99,
    ]  # fmt: skip
    assert len({c["points"] for c in charts.values()}) == 1  # one time axis for all
    rows = page["tables"]["tenants"]
    assert [r["row"] for r in rows] == list(want["tenants"])
    assert all(n >= 1 for n in page["sparks"]), page["sparks"]
    for row in rows:
        trend = row["cells"]["trend"].split(",")
        assert len(trend) == min(60, charts["chart-queue"]["points"])  # TREND_POINTS at most
        assert float(trend[-1]) == 0.0
        assert max(float(v) for v in trend if v) > 0
    problems = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert problems == []  # no script error, no CSP violation from the sparklines
    assert time.monotonic() - started < 10
