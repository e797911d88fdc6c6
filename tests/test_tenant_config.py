"""Tenants in the environment: ``open_runtime(tenants=...)`` adds them before anything is
restored or spawned, and an app file's ``[tenants.NAME]`` tables and ``tenant = "NAME"`` of
its agents run (``engine run``) with the limits they set, every bad field reported at once."""

from __future__ import annotations

import re
import sys
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import engine
import engine.store as store
from engine.cli import _main as _cli
from engine.cli import main
from engine.core._exceptions import brief
from engine.environment._config import TenantConfig, load_app

# the README's app file with tenants, read from the README itself (so it cannot drift)
README_APP = next(
    block
    for block in re.findall(
        r"```toml\n(.*?)```",
        (Path(__file__).resolve().parent.parent / "README.md").read_text(),
        flags=re.S,
    )
    if "[tenants.acme]" in block
)

MACHINES = """
import engine

ORDER = engine.Machine(
    "order", ["open"], "open", [("open", "place", None)], events=["place"]
)
"""

ACME = engine.Tenant("acme", weight=3.0, limits=engine.Limits(max_queued=3, rate=100.0))
GLOBEX = engine.Tenant("globex", limits=engine.Limits(turn_deadline=0.05))


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path holding the package ``myapp`` (``myapp.machines:ORDER``)."""
    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "machines.py").write_text(MACHINES)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("myapp.machines", None)
    sys.modules.pop("myapp", None)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# -- the app file runs, its agents in their tenants -------------------------------------------


def test_the_readme_app_file_runs_its_agents_in_their_tenants(app_dir: Path, impl: str) -> None:
    app = _cli.prepare_app(str(write(app_dir / "app.toml", README_APP)))
    assert app.config.tenant_list() == [ACME, GLOBEX]

    async def run() -> None:
        async with _cli.app_runtime(app, implementation=impl) as (rt, _, _):
            assert rt.implementation == impl
            assert rt.tenants() == [engine.Tenant("default"), ACME, GLOBEX]
            assert {a: rt.tenant_of(a) for a in sorted(rt.agent_ids())} == {
                "a1": "acme",
                "a2": "acme",
                "g1": "globex",
                "g2": "globex",
            }
            # max_queued = 3 counts across the tenant's agents; nothing runs between sends
            for agent_id in ("a1", "a2", "a1"):
                rt.send_nowait(agent_id, "place")
            with pytest.raises(engine.TenantLimitError) as info:
                rt.send_nowait("a2", "place")
            assert (info.value.tenant, info.value.limit, info.value.value) == (
                "acme",
                "max_queued",
                3,
            )
            for _ in range(5):  # another tenant's agents are not held back by acme's limit
                rt.send_nowait("g1", "place")
            await rt.wait_until_idle()
            rt.send_nowait("a2", "place")  # room again
            await rt.wait_until_idle()
            stats = {t.name: t for t in rt.tenant_statistics()}
            assert (stats["acme"].processed, stats["acme"].rejected) == (4, 1)
            assert (stats["globex"].processed, stats["globex"].rejected) == (5, 0)

    trio.run(run)


def test_engine_run_spawns_into_tenants_and_reports_a_limit_it_hits(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = write(app_dir / "app.toml", README_APP)
    assert main(["run", str(app), "--for", "0"]) == 0
    assert capsys.readouterr().err.startswith("engine: 4 agents on the ")
    # the file cannot tell whether a store will make room (hibernation): the spawn refuses
    app.write_text(README_APP.replace("[tenants.globex]", "[tenants.globex]\nmax_agents = 1"))
    assert main(["run", str(app), "--for", "0"]) == 2
    assert capsys.readouterr().err == (
        "engine: tenant 'globex' is at its max_agents limit (1): spawn refused\n"
    )


def test_agents_without_a_tenant_or_with_default_are_in_the_default_tenant(
    app_dir: Path, impl: str
) -> None:
    app = write(
        app_dir / "app.toml",
        """
        [machines.order]
        path = "myapp.machines:ORDER"
        [tenants.default]
        weight = 2.0
        max_queued = 1
        [[agents]]
        machine = "order"
        ids = ["x"]
        [[agents]]
        machine = "order"
        ids = ["y"]
        tenant = "default"
        """,
    )
    prepared = _cli.prepare_app(str(app))

    async def run() -> None:
        async with _cli.app_runtime(prepared, implementation=impl) as (rt, _, _):
            # [tenants.default] sets the default tenant's weight and limits
            assert rt.tenants() == [
                engine.Tenant("default", weight=2.0, limits=engine.Limits(max_queued=1))
            ]
            assert rt.tenant_of("x") == rt.tenant_of("y") == "default"
            rt.send_nowait("x", "place")
            with pytest.raises(engine.TenantLimitError):
                rt.send_nowait("y", "place")

    trio.run(run)


# -- every bad field, with its path ------------------------------------------------------------

T = "$.tenants['t']"
BAD_FIELDS = [
    ("weight = 0", f"weight must be in (0, 1e+06], got 0.0 @ {T}.weight"),
    ("weight = -1.5", f"weight must be in (0, 1e+06], got -1.5 @ {T}.weight"),
    ("weight = 2e6", f"weight must be in (0, 1e+06], got 2000000.0 @ {T}.weight"),
    ("weight = nan", f"expected a finite number, got nan @ {T}.weight"),
    ('weight = "heavy"', f"expected a number, got 'heavy' @ {T}.weight"),
    ("max_agents = -1", f"max_agents must be in 0..4611686018427387904, got -1 @ {T}.max_agents"),
    ("max_agents = 1.5", f"expected an integer, got 1.5 @ {T}.max_agents"),
    ("max_queued = -3", f"max_queued must be in 0..4611686018427387904, got -3 @ {T}.max_queued"),
    ("max_queued = true", f"expected an integer, got True @ {T}.max_queued"),
    (
        'overflow = "drop"',
        f"expected one of 'reject', 'wait', got 'drop' @ {T}.overflow",
    ),
    ("overflow = 1", f"expected one of 'reject', 'wait', got 1 @ {T}.overflow"),
    ("rate = -1", f"rate must be >= 0, got -1.0 @ {T}.rate"),
    ("rate = inf", f"expected a finite number, got inf @ {T}.rate"),
    ('rate = "10/s"', f"expected a number, got '10/s' @ {T}.rate"),
    ('per = "hour"', f"expected one of 'second', 'minute', got 'hour' @ {T}.per"),
    ("burst = -1", f"burst must be in 0..4611686018427387904, got -1 @ {T}.burst"),
    ("burst = 2.0", f"expected an integer, got 2.0 @ {T}.burst"),
    (
        "turn_deadline = -0.5",
        f"turn_deadline must be >= 0, got -0.5 @ {T}.turn_deadline",
    ),
    (
        "turn_deadline = 1e6",
        f"turn_deadline must be in 0..86400, got 1000000.0 @ {T}.turn_deadline",
    ),
    ("turn_deadline = nan", f"expected a finite number, got nan @ {T}.turn_deadline"),
    (
        'on_deadline = "ignore"',
        f"expected one of 'report', 'fail', 'stop', got 'ignore' @ {T}.on_deadline",
    ),
    (
        "max_memory = -1",
        f"max_memory must be in 0..4611686018427387904, got -1 @ {T}.max_memory",
    ),
    (
        "max_memory = 9223372036854775807",
        f"max_memory must be in 0..4611686018427387904, got 9223372036854775807 @ {T}.max_memory",
    ),
    ("colour = 1", f"extra fields found (colour) @ {T}"),
]

BASE = """\
[machines.m]
path = "x:M"
[[agents]]
machine = "m"
count = 1
tenant = "t"
"""


def problems_of(path: Path, text: str) -> list[str]:
    path.write_text(text)
    with pytest.raises(engine.ConfigError) as info:
        load_app(path)
    assert info.value.where == str(path)
    return list(info.value.problems)


@pytest.mark.parametrize(("line", "problem"), BAD_FIELDS, ids=[line for line, _ in BAD_FIELDS])
def test_a_bad_tenant_field_is_reported_with_its_path(
    tmp_path: Path, line: str, problem: str
) -> None:
    assert problems_of(tmp_path / "app.toml", f"{BASE}[tenants.t]\n{line}\n") == [problem]


def test_every_bad_tenant_field_is_reported_at_once(tmp_path: Path) -> None:
    # each case in a tenant of its own (t0, t1, ...), all in one file, with bad agents too
    tables = "".join(f"[tenants.t{i}]\n{line}\n" for i, (line, _) in enumerate(BAD_FIELDS))
    agents = '[[agents]]\nmachine = "m"\nids = [2]\ntenant = "ghost"\n'
    agents += '[[agents]]\nmachine = "m"\nids = [3]\ntenant = 5\n'
    text = BASE.replace('tenant = "t"', 'tenant = "t0"') + agents + tables
    expected = [
        problem.replace(T, f"$.tenants['t{i}']") for i, (_, problem) in enumerate(BAD_FIELDS)
    ]
    expected += [
        "'ghost' is not a tenant of [tenants] (nor 'default') @ $.agents[1].tenant",
        "expected a string, got 5 @ $.agents[2].tenant",
    ]
    assert sorted(problems_of(tmp_path / "app.toml", text)) == sorted(expected)


def test_tenant_names_and_tables_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    assert problems_of(path, '[tenants.""]\n[tenants.ok]\n') == [
        "a tenant name is a str of 1..200 characters: '' @ $.tenants['']"
    ]
    long = brief("n" * 201)
    assert problems_of(path, f"[tenants.{'n' * 201}]\n") == [
        f"a tenant name is a str of 1..200 characters: {long} @ $.tenants[{long}]"
    ]
    assert problems_of(path, "[tenants]\nt = 5\n") == ["expected a table, got 5 @ $.tenants['t']"]
    assert problems_of(path, 'tenants = ["t"]\n' + BASE) == [
        "expected a mapping @ $.tenants",
        "'t' is not a tenant of [tenants] (nor 'default') @ $.agents[0].tenant",
    ]
    # an agent's tenant is checked even when [tenants] itself is broken, and the machine too
    text = BASE.replace('"x:M"', "5") + "[tenants.t]\nrate = -1\n"
    assert sorted(problems_of(path, text.replace('"m"', '"other"'))) == sorted(
        [
            "expected a string, got 5 @ $.machines['m'].path",
            "'other' is not a machine of [machines] @ $.agents[0].machine",
            f"rate must be >= 0, got -1.0 @ {T}.rate",
        ]
    )


def test_a_tenant_table_is_exactly_a_tenant_and_its_limits() -> None:
    # the file's keys are Limits' fields and weight, with the runtime's defaults and choices
    fields = typing.get_type_hints(TenantConfig)
    assert set(fields) == {"weight", *attrs.fields_dict(engine.Limits)}
    assert TenantConfig().tenant("t") == engine.Tenant("t")
    for name in ("overflow", "per", "on_deadline"):
        for choice in typing.get_args(fields[name]):
            engine.Limits(**{name: choice})  # every word the file takes, Limits takes
        with pytest.raises(engine.InvalidArgumentError):
            engine.Limits(**{name: "none of them"})
    limits = {"max_agents": 5, "max_queued": 7, "overflow": "wait", "rate": 2, "per": "minute"}
    limits |= {"burst": 4, "turn_deadline": 1.5, "on_deadline": "stop", "max_memory": 10**6}
    assert TenantConfig(weight=0.5, **limits).tenant("t") == engine.Tenant(
        "t", weight=0.5, limits=engine.Limits(**limits)
    )


# -- open_runtime(tenants=...) ----------------------------------------------------------------


def test_open_runtime_adds_its_tenants_before_the_body(impl: str) -> None:
    machine = engine.Machine("echo", ["s"], "s", [], events=["say"], unhandled="ignore")

    async def run() -> None:
        tenants = (t for t in [ACME, GLOBEX, engine.Tenant("default", weight=0.5)])
        async with engine.open_runtime(tenants=tenants, implementation=impl) as rt:
            assert rt.tenants() == [engine.Tenant("default", weight=0.5), ACME, GLOBEX]
            rt.spawn(machine, "a", tenant="acme")
            assert rt.tenant_of("a") == "acme"

    trio.run(run)


@pytest.mark.parametrize(
    ("tenants", "error", "message"),
    [
        (ACME, engine.InvalidArgumentError, "tenants must be an iterable of engine.Tenant"),
        ("acme", engine.InvalidArgumentError, "tenants must be an iterable of engine.Tenant"),
        (None, engine.InvalidArgumentError, "tenants must be an iterable of engine.Tenant"),
        ([ACME, "globex"], engine.InvalidArgumentError, "tenants holds 'globex', not an"),
        ({"acme": ACME}, engine.InvalidArgumentError, "tenants holds 'acme', not an"),
        ([ACME, GLOBEX, ACME], engine.TenantExistsError, "a tenant named 'acme' already"),
    ],
)
def test_open_runtime_refuses_bad_tenants_before_it_starts(
    impl: str, tenants: Any, error: type[Exception], message: str
) -> None:
    async def run() -> None:
        with pytest.raises(error, match=message):
            async with engine.open_runtime(tenants=tenants, implementation=impl):
                pytest.fail("the body ran")  # pragma: no cover

    trio.run(run)


# -- restored agents find their tenants --------------------------------------------------------


@pytest.mark.parametrize("durability", ["snapshot", "log"])
def test_restored_agents_come_back_into_their_tenants(impl: str, durability: str) -> None:
    machine = engine.Machine("counter", ["s"], "s", [("s", "add", None)], events=["add"])

    @machine.handler("s", "add")
    def add(agent: engine.AgentContext, event: engine.Event) -> None:
        agent.data["n"] = agent.data.get("n", 0) + 1

    mem = store.MemoryStore()
    where = {"a1": "acme", "a2": "acme", "g1": "globex", "d": "default"}

    async def first() -> None:
        async with engine.open_runtime(
            tenants=[ACME, GLOBEX], store=mem, durability=durability, implementation=impl
        ) as rt:
            for agent_id, tenant in where.items():
                rt.spawn(machine, agent_id, {}, tenant=tenant)
            await rt.send("a1", "add")  # one agent with a history, the others plain
            await rt.wait_until_idle()

    async def second() -> None:
        async with engine.open_runtime(
            tenants=[ACME, GLOBEX], store=mem, restore=[machine], implementation=impl
        ) as rt:
            assert rt.recovery.failed == []
            assert sorted(rt.recovery.restored) == sorted(where)
            assert {a: rt.tenant_of(a) for a in where} == where
            assert rt.data("a1") == {"n": 1}
            assert {t.name: t.agents for t in rt.tenant_statistics()} == {
                "default": 1,
                "acme": 2,
                "globex": 1,
            }

    trio.run(first)
    trio.run(second)


def test_an_app_file_store_keeps_agents_in_their_tenants_across_runs(
    app_dir: Path, impl: str
) -> None:
    db = app_dir / "agents.db"
    app = write(app_dir / "app.toml", f'{README_APP}\n[store]\npath = "{db}"\n')
    prepared = _cli.prepare_app(str(app))

    async def run(again: bool) -> None:
        async with _cli.app_runtime(prepared, implementation=impl) as (rt, _, _):
            assert rt.tenants() == [engine.Tenant("default"), ACME, GLOBEX]
            assert {a: rt.tenant_of(a) for a in sorted(rt.agent_ids())} == {
                "a1": "acme",
                "a2": "acme",
                "g1": "globex",
                "g2": "globex",
            }
            processed = {t.name: t.processed for t in rt.tenant_statistics()}
            assert processed == {"default": 0, "acme": int(again), "globex": 0}
            if not again:  # the restored agent's counter shows it is the same agent
                await rt.send("a1", "place")
                await rt.wait_until_idle()

    trio.run(run, False)
    trio.run(run, True)
