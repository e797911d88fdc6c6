"""Durability level "snapshot": periodic snapshots of a running runtime, and app files that
keep their agents across runs of ``python -m engine run``."""

from __future__ import annotations

import math
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import engine
import engine.store as store
from engine import Machine
from engine.cli import main
from engine.environment import snapshot_now, start_snapshots


def counter() -> Machine:
    m = Machine("counter", ["s"], "s", [("s", "add", None)], events=["add"])

    @m.handler("s", "add")
    def add(agent: engine.AgentContext, event: engine.Event) -> None:
        agent.data["n"] = agent.data.get("n", 0) + 1

    return m


def test_periodic_snapshots_and_one_at_exit(impl: str) -> None:
    m = counter()
    mem = store.MemoryStore()

    async def main_() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            rt.spawn(m, "a", {})
            rt.spawn(m, "b", {})
            await start_snapshots(rt, mem, every=10)
            for _ in range(3):
                rt.send_nowait("a", "add")
                await trio.sleep(10.5)  # one snapshot a period
            rt.send_nowait("b", "add")
            await rt.wait_until_idle()

    # (the writes run in a worker thread: virtual time must not jump while one is under way)
    trio.run(main_, clock=trio.testing.MockClock(autojump_threshold=0.05))
    history = mem.history(store.agent_key("a"))
    assert len(history) == 4  # three periods, and one at exit
    counts = [store.decode(r.record).data.get("n", 0) for r in history]
    assert counts == [1, 2, 3, 3]
    fresh = engine.Runtime(implementation=impl)
    store.load(fresh, mem, [m])
    assert (fresh.data("a"), fresh.data("b")) == ({"n": 3}, {"n": 1})


@pytest.mark.parametrize("every", [0, -1, math.nan, math.inf, "60"])
def test_the_period_must_be_positive_and_finite(every: Any) -> None:
    async def main_() -> None:
        async with engine.open_runtime() as rt:
            with pytest.raises(engine.InvalidArgumentError):
                await start_snapshots(rt, store.MemoryStore(), every=every)

    trio.run(main_)


def test_a_snapshot_that_cannot_be_encoded_stops_the_runtime(impl: str) -> None:
    m = counter()

    async def main_() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            rt.spawn(m, "a", {"handle": object()})
            await start_snapshots(rt, store.MemoryStore(), every=5)
            await trio.sleep(6)

    with pytest.raises(store.CodecError, match="agent 'a'"):
        trio.run(main_, clock=trio.testing.MockClock(autojump_threshold=0))


def test_snapshot_now_writes_from_a_worker_thread(impl: str) -> None:
    m = counter()
    mem = store.MemoryStore()

    async def main_() -> list[int]:
        async with engine.open_runtime(implementation=impl) as rt:
            rt.spawn(m, "a", {})
            return await snapshot_now(rt, mem)

    assert trio.run(main_) == [1]


MACHINES = """
import engine

COUNTER = engine.Machine("counter", ["s"], "s", [("s", "add", None)], events=["add"])

@COUNTER.handler("s", "add")
def add(agent, event):
    agent.data = (agent.data or 0) + 1
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "durable_machines.py").write_text(MACHINES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("ENGINE_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    path = tmp_path / "app.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [machines.counter]
            path = "durable_machines:COUNTER"

            [[agents]]
            machine = "counter"
            ids = ["c1", "c2"]

            [[plugins]]
            name = "timers"
            [plugins.config]
            timers = [{{ agents = ["c1"], event = "add", every = 0.05, count = 3 }}]

            [store]
            kind = "sqlite"
            path = "{tmp_path / 'agents.db'}"
            """
        )
    )
    yield path
    sys.modules.pop("durable_machines", None)


@pytest.mark.parametrize("durability", ["snapshot", "log"])
def test_an_app_file_store_keeps_agents_across_runs(
    app: Path, capsys: pytest.CaptureFixture[str], durability: str
) -> None:
    app.write_text(app.read_text().replace("[store]", f'[store]\ndurability = "{durability}"'))
    for run in range(2):
        assert main(["run", str(app), "--for", "0.6"]) == 0
        err = capsys.readouterr().err
        assert f"restored {2 * run} agents from the store" in err
    db = store.SQLiteStore(app.parent / "agents.db")
    latest = {r.agent: store.decode(r.record).data for r in db.latest()}
    db.close()
    assert latest == {store.agent_key("c1"): 6, store.agent_key("c2"): None}  # 3 ticks a run


def test_an_app_file_hibernates_its_idle_agents(
    app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app.write_text(
        app.read_text().replace("[store]", '[store]\ndurability = "log"\nhibernate_after = 0.2')
    )
    assert main(["run", str(app), "--for", "0.8"]) == 0
    db = store.SQLiteStore(app.parent / "agents.db")
    latest = {r.agent: store.decode(r.record) for r in db.latest()}
    db.close()
    assert {key: snap.data for key, snap in latest.items()} == {
        store.agent_key("c1"): 3, store.agent_key("c2"): None
    }
    assert all(snap.hibernated for snap in latest.values())  # both idle: asleep at the end
    text = app.read_text().replace('durability = "log"', 'durability = "snapshot"')
    app.write_text(text)
    assert main(["run", str(app), "--for", "0.1"]) == 2
    assert 'need durability = \"log\"' in capsys.readouterr().err


def test_the_command_line_chooses_the_store_and_durability(
    app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    for run in range(2):
        args = ["run", str(app), "--for", "0.6", "--store", f"sqlite:{elsewhere}"]
        assert main([*args, "--durability", "log"]) == 0
        assert f"restored {2 * run} agents from the store" in capsys.readouterr().err
    db = store.SQLiteStore(elsewhere)
    assert {r.agent: store.decode(r.record).data for r in db.latest()}[store.agent_key("c1")] == 6
    db.close()
    assert not (tmp_path / "agents.db").exists()  # the app file's store was not used
    assert main(["run", str(app), "--for", "0.1", "--store", "memory"]) == 0
    with pytest.raises(SystemExit):
        main(["run", str(app), "--store", "sqlite:"])
    with pytest.raises(SystemExit):
        main(["run", str(app), "--durability", "sometimes"])
    assert "expected memory, sqlite:PATH or postgres:DSN" in capsys.readouterr().err


def test_a_bad_store_section_is_reported_with_the_rest(
    app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = app.read_text().replace('kind = "sqlite"', 'kind = "oracle"')
    text = text.replace("[store]", '[store]\nsnapshot_every = -1\ndurability = "always"')
    app.write_text(text)
    assert main(["run", str(app), "--for", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "$.store.kind" in err
    assert "$.store.snapshot_every" in err
    assert "$.store.durability" in err


def test_an_app_file_keeps_agents_in_postgres_under_the_log(
    app: Path, capsys: pytest.CaptureFixture[str], postgres_db: str
) -> None:
    text = app.read_text().replace('kind = "sqlite"', f'kind = "postgres"\ndsn = "{postgres_db}"')
    app.write_text(text.replace("[store]", '[store]\ndurability = "log"'))
    for run in range(2):
        assert main(["run", str(app), "--for", "0.6"]) == 0
        assert f"restored {2 * run} agents from the store" in capsys.readouterr().err
    db = store.PostgresStore(postgres_db)
    latest = {r.agent: store.decode(r.record).data for r in db.latest()}
    db.close()
    assert latest == {store.agent_key("c1"): 6, store.agent_key("c2"): None}
    app.write_text(app.read_text().replace(postgres_db, "host=/no/such/dir dbname=x"))
    assert main(["run", str(app), "--for", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "cannot open the store" in err
    assert "$.store.dsn" in err


def test_a_store_that_cannot_be_opened_is_a_config_error(
    app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app.write_text(app.read_text().replace("agents.db", "no/such/dir/agents.db"))
    assert main(["run", str(app), "--for", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "cannot open the store" in err
    assert "Traceback" not in err
