"""Plugin discovery, loading and validation, app configuration, and plugins wired into a
running runtime. The fixture distributions under tests/fixtures/plugins are installed for
real (``pip install --target``) and found through their entry points."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import engine
from engine.environment import _discovery as _plugins
from engine.environment._config import AppConfig, load_app, structure
from engine.plugin_spec import EFFECTORS, RECEPTORS, ErrorRecord

FIXTURES = Path(__file__).parent / "fixtures" / "plugins"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where the fixture plugin distributions are installed."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(FIXTURES / "engine-fixture-good"),
            str(FIXTURES / "engine-fixture-broken"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


@pytest.fixture
def installed(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.delenv("ENGINE_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    yield plugin_site
    for name in ("engine_fixture_good", "engine_fixture_noconfig", "engine_fixture_broken"):
        sys.modules.pop(name, None)


def fixture_infos() -> dict[str, _plugins.PluginInfo]:
    return {
        i.name: i
        for i in _plugins.discover()
        if i.distribution and i.distribution.startswith("engine-fixture")
    }


def test_discovery_reads_metadata_and_imports_nothing(installed: Path) -> None:
    infos = _plugins.discover()
    assert list(infos) == sorted(infos)
    mine = fixture_infos()
    assert set(mine) == {"counter", "collector", "broken", "noconfig"}
    assert mine["counter"] == _plugins.PluginInfo(
        "counter", RECEPTORS, "engine_fixture_good:Counter", "engine-fixture-good", "1.2.3"
    )
    assert mine["noconfig"].group == EFFECTORS
    assert mine["broken"].role == "receptor"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        mine["counter"].name = "x"  # type: ignore[misc]
    assert "engine_fixture_broken" not in sys.modules  # discovery imported nothing
    assert "engine_fixture_good" not in sys.modules


def test_autoload_switch(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert _plugins.discover() == ()
    assert _plugins.inventory() == []


def test_a_broken_plugin_is_reported_by_name_and_the_others_load(installed: Path) -> None:
    mine = fixture_infos()
    with pytest.raises(engine.PluginLoadError, match="'broken'") as info:
        _plugins.load(mine["broken"])
    assert isinstance(info.value.__cause__, ImportError)
    statuses = {s.info.name: s for s in _plugins.inventory() if s.info.name in mine}
    assert statuses["counter"].error is None
    assert statuses["collector"].error is None
    assert "'broken' failed to load: ImportError" in (statuses["broken"].error or "")
    assert "has no attrs Config" in (statuses["noconfig"].error or "")


def test_create_structures_config_and_reports_every_bad_field(installed: Path) -> None:
    factory = _plugins.load(fixture_infos()["counter"])
    counter = _plugins.create("counter", factory, {"agent": "a", "count": 3})
    assert counter.config.count == 3
    _plugins.check_role("counter", counter, "receptor")
    with pytest.raises(engine.ConfigError) as info:
        _plugins.create("counter", factory, {"count": "many", "every": -1, "colour": "red"})
    text = "\n".join(info.value.problems)
    assert "$.count" in text
    assert "agent" in text  # missing
    assert "colour" in text  # extra
    with pytest.raises(engine.PluginValidationError, match="an effector needs"):
        _plugins.check_role("counter", counter, "effector")
    with pytest.raises(engine.PluginValidationError, match="attrs Config"):
        _plugins.create("noconfig", _plugins.load(fixture_infos()["noconfig"]), {})

    class Exploding:
        @attrs.frozen
        class Config:
            pass

        def __init__(self, config: Any) -> None:
            raise OSError("port in use")

    with pytest.raises(engine.PluginLoadError, match="port in use"):
        _plugins.create("exploding", Exploding, None)


# -- wired into a runtime --------------------------------------------------------------


def echo_machine() -> engine.Machine:
    m = engine.Machine("echo", ["s"], "s", [], events=["say"], unhandled="ignore")
    m.handler("s", "say")(lambda ctx, ev: engine.Step(outputs=[ev.payload]))
    return m


class ListReceptor:
    name = "list"

    def __init__(self, events: list[tuple[Any, str, Any]]) -> None:
        self.events = events

    async def run(self, sink: Any) -> None:
        for agent, event, payload in self.events:
            try:
                await sink.send(agent, event, payload)
            except engine.EngineError as exc:
                sink.reject(
                    ErrorRecord(sink.name, type(exc).__name__, str(exc), repr((agent, event)))
                )


class SyncEffector:
    def __init__(self) -> None:
        self.outputs: list[Any] = []
        self.records: list[ErrorRecord] = []
        self.closed = False

    def deliver(self, batch: engine.OutputBatch) -> None:
        self.outputs.extend(batch)

    def report(self, record: ErrorRecord) -> None:
        self.records.append(record)

    async def aclose(self) -> None:
        self.closed = True


class SlowAsyncEffector:
    def __init__(self) -> None:
        self.outputs: list[Any] = []
        self.records: list[ErrorRecord] = []
        self.opened = self.closed = False

    async def aopen(self) -> None:
        self.opened = True

    async def deliver(self, batch: engine.OutputBatch) -> None:
        await trio.sleep(1)  # a slow sink: the dispatcher must wait for it, not pile up
        self.outputs.extend(batch)

    async def report(self, record: ErrorRecord) -> None:
        self.records.append(record)

    async def aclose(self) -> None:
        self.closed = True


class FailingEffector:
    def deliver(self, batch: engine.OutputBatch) -> None:
        raise RuntimeError("disk full")


def run(fn: Any) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def test_receptors_and_effectors_in_a_runtime(impl: str) -> None:
    sync, slow = SyncEffector(), SlowAsyncEffector()
    receptor = ListReceptor(
        [("a", "say", i) for i in range(5)] + [("ghost", "say", 0), ("a", "shout", 0)]
    )

    async def main() -> None:
        async with engine.open_runtime(
            implementation=impl, receptors=[receptor], effectors=[sync, slow, FailingEffector()]
        ) as rt:
            rt.spawn(echo_machine(), "a")
            await trio.sleep(60)
            assert [o for _, o in sync.outputs] == [0, 1, 2, 3, 4]
            assert [r.error for r in sync.records] == ["AgentNotFoundError", "UnknownEventError"]
            assert [r.error for r in rt.rejected()] == ["AgentNotFoundError", "UnknownEventError"]
            failures = rt.effector_failures()
            assert {f.plugin for f in failures} == {"FailingEffector"}
            assert sum(len(f.batch) for f in failures if f.batch) == 5  # nothing lost
            assert slow.opened
        assert slow.closed
        assert sync.closed
        assert [o for _, o in slow.outputs] == [0, 1, 2, 3, 4]
        assert len(slow.records) == 2

    run(main)


def test_async_effector_backpressure_and_flush_on_exit(impl: str) -> None:
    slow = SlowAsyncEffector()

    async def main() -> None:
        async with engine.open_runtime(implementation=impl, effectors=[slow], batch=1) as rt:
            rt.spawn(echo_machine(), "a")
            for i in range(40):
                rt.send_nowait("a", "say", i)
            await trio.sleep(5)  # the effector takes one batch a second
            in_flight = rt.statistics("a").processed - len(slow.outputs)
            assert in_flight <= 16 + 2  # its queue, one being delivered, one in hand
            assert rt.statistics("a").depth > 0  # the rest waits in the mailbox
        # leaving the block: receptors stop, queued outputs are delivered, then aclose
        assert [o for _, o in slow.outputs] == list(range(len(slow.outputs)))
        assert slow.closed

    run(main)


class Flaky:
    name = "flaky"

    def __init__(self) -> None:
        self.starts: list[float] = []

    async def run(self, sink: Any) -> None:
        self.starts.append(trio.current_time())
        raise ConnectionError("upstream gone")


def test_receptor_restart_with_backoff_then_stop(impl: str) -> None:
    flaky = Flaky()
    policy = engine.RestartPolicy(backoff=1.0, max_restarts=3, within=100.0)

    async def main() -> None:
        async with engine.open_runtime(
            implementation=impl, receptors=[engine.Plugin(flaky, restart=policy)]
        ):
            await trio.sleep_forever()

    with pytest.raises(engine.PluginFailedError, match=r"'flaky'.*4 failures") as info:
        run(main)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert [t - flaky.starts[0] for t in flaky.starts] == [0, 1, 3, 7]  # 1, 2, 4 s backoff


def test_receptor_stop_policy_and_restart_records(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(
            implementation=impl,
            receptors=[engine.Plugin(Flaky(), restart=engine.RestartPolicy("stop"))],
        ):
            await trio.sleep_forever()

    with pytest.raises(engine.PluginFailedError, match="'flaky' failed: ConnectionError"):
        run(main)

    async def restarts() -> None:
        flaky = Flaky()
        async with engine.open_runtime(
            implementation=impl,
            receptors=[engine.Plugin(flaky, "f", engine.RestartPolicy(backoff=1, max_restarts=99))],
        ) as rt:
            await trio.sleep(2.5)
            # failures at 0 and 1 (backoff 1 s, then 2 s): the third start is at 3
            assert [(f.plugin, f.action) for f in rt.receptor_failures()] == [("f", "restart")] * 2

    run(restarts)


def test_plugins_must_fit_their_role() -> None:
    class NotAReceptor:
        def run(self, sink: Any) -> None:  # not async
            pass

    async def main(receptors: Any = (), effectors: Any = ()) -> None:
        async with engine.open_runtime(receptors=receptors, effectors=effectors):
            pass

    with pytest.raises(engine.PluginValidationError, match="async def run"):
        trio.run(main, [NotAReceptor()])
    with pytest.raises(engine.PluginValidationError, match="deliver"):
        trio.run(main, (), [object()])
    with pytest.raises(engine.PluginValidationError, match="unique"):
        trio.run(main, (), [SyncEffector(), SyncEffector()])


# -- app files and the command line ----------------------------------------------------


def test_app_config_reports_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        textwrap.dedent("""
        [runtime]
        capacity = -1
        policy = "sometimes"
        [machines.m]
        [[agents]]
        machine = "nowhere"
        [[plugins]]
        role = "spectator"
    """)
    )
    with pytest.raises(engine.ConfigError) as info:
        load_app(bad)
    # one run finds them all: types, validators, cross-field checks and cross references
    assert sorted(info.value.problems) == sorted(
        [
            "'capacity' must be >= 0: -1 @ $.runtime.capacity",
            "expected one of 'reject', 'drop_oldest', got 'sometimes' @ $.runtime.policy",
            "required field missing @ $.machines['m'].path",
            "needs exactly one of ids or count @ $.agents[0]",
            "'nowhere' is not a machine of [machines] @ $.agents[0].machine",
            "required field missing @ $.plugins[0].name",
            "expected one of 'receptor', 'effector', 'both', got 'spectator' @ $.plugins[0].role",
        ]
    )
    good = tmp_path / "good.toml"
    good.write_text(
        '[machines.m]\npath = "x:y"\n[[agents]]\nmachine = "m"\nids = [1]\n'
        '[[agents]]\nmachine = "other"\n'
    )
    with pytest.raises(engine.ConfigError) as info:
        load_app(good)
    assert info.value.problems == (
        "needs exactly one of ids or count @ $.agents[1]",
        "'other' is not a machine of [machines] @ $.agents[1].machine",
    )
    assert structure({}, AppConfig, "x") == AppConfig()


ECHO = "tests.test_plugins_core:ECHO_MACHINE"
ECHO_MACHINE = echo_machine()


def test_cli_lists_plugins_with_versions_and_status(plugin_site: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine", "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**_env(), "PYTHONPATH": f"{plugin_site}:{Path.cwd()}"},
        check=True,
    )
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert "engine-fixture-good" in lines["counter"]
    assert "1.2.3" in lines["counter"]
    assert lines["counter"].rstrip().endswith("ok")
    assert "BROKEN: plugin 'broken' failed to load: ImportError" in lines["broken"]


def test_cli_runs_an_app_file(plugin_site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    app = tmp_path / "app.toml"
    app.write_text(
        textwrap.dedent(f"""
        [runtime]
        implementation = "python"
        [machines.echo]
        path = "{ECHO}"
        [[agents]]
        machine = "echo"
        ids = ["a"]
        [[plugins]]
        name = "counter"
        config = {{ agent = "a", event = "say", count = 3 }}
        [[plugins]]
        name = "collector"
        config = {{ path = "{out}" }}
    """)
    )
    done = subprocess.run(
        [sys.executable, "-m", "engine", "run", str(app), "--for", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**_env(), "PYTHONPATH": f"{plugin_site}:{Path.cwd()}"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1 agents on the python hot path" in done.stderr
    assert "3 processed" in done.stderr
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"agent": "a", "output": i} for i in range(3)
    ]
    broken = tmp_path / "broken.toml"
    broken.write_text('[[plugins]]\nname = "broken"\n')
    done = subprocess.run(
        [sys.executable, "-m", "engine", "run", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**_env(), "PYTHONPATH": f"{plugin_site}:{Path.cwd()}"},
    )
    assert done.returncode == 2
    assert "plugin 'broken' failed to load" in done.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "ENGINE_DISABLE_PLUGIN_AUTOLOAD"}


def test_top_shows_throughput_latency_busiest_agents_and_states(
    plugin_site: Path, tmp_path: Path
) -> None:
    app = tmp_path / "app.toml"
    app.write_text(
        textwrap.dedent(f"""
        [machines.echo]
        path = "{ECHO}"
        [[agents]]
        machine = "echo"
        ids = ["busy", "quiet"]
        [[plugins]]
        name = "counter"
        config = {{ agent = "busy", event = "say", count = 100000, every = 0.0 }}
    """)
    )
    done = subprocess.run(
        [sys.executable, "-m", "engine", "top", str(app), "--for", "2", "--interval", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**_env(), "PYTHONPATH": f"{plugin_site}:{Path.cwd()}"},
    )
    assert done.returncode == 0, done.stderr
    frames = done.stdout.split("engine top: ")[1:]
    assert len(frames) >= 3  # about one every half second, and a last one
    last = frames[-1]
    assert "msg/s" in last
    assert "step  p50" in last
    assert "wait  p50" in last
    busiest = last.split("busiest agents")[1].split("agents per state")[0]
    assert "busy" in busiest
    assert "quiet" not in busiest
    assert "echo: s 2" in last
