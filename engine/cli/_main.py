"""``python -m engine``: run an app file (plainly or with a live view), or list plugins.

``run APP.toml`` loads machines by import path, adds the tenants, spawns the agents into
them, builds the plugins the file names (through their entry points), and runs under trio
until SIGINT or SIGTERM (or ``--for SECONDS``); then it shuts down cleanly: receptors stop,
effectors take what is queued and close. ``plugins`` lists what discovery finds, with versions
and whether each loads. ``metrics-plot --store ... --out FILE.png`` draws the metrics history
an app kept in its store (``[runtime] metrics_history``) to a PNG.

``run`` and ``top`` serve Prometheus' ``/metrics`` and, with ``--dashboard``, the live web
dashboard, when given ``--metrics-port`` or when the app file has a ``[metrics]`` table (the
command line wins field by field). The token comes from ``--token`` or, so that it is not on
a command line that ``ps`` shows, from ``ENGINE_METRICS_TOKEN``; it is never printed.

Before anything runs, ``prepare_app`` checks the whole file in one pass: its schema, its
cross references, every machine's import and every plugin (installed, in its role, loadable,
its own config), and reports every problem at once, one line each, with exit code 2.
"""

from __future__ import annotations

import argparse
import math
import os
import pkgutil
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, final

import attrs
import trio

from ..core._exceptions import (
    ConfigError,
    EngineError,
    InvalidArgumentError,
    PluginLoadError,
    PluginValidationError,
    StoreError,
)
from ..core._machine import Machine
from ..core._types import OverflowPolicy
from ..environment import _discovery as _plugins
from ..environment._config import (
    AppConfig,
    MachineConfig,
    PluginConfig,
    check_app,
    read_app,
    valid_entries,
)
from ..environment._durable import start_commit_log, start_hibernation, start_snapshots
from ..environment._open import open_runtime
from ..environment._wiring import Plugin
from ..observe._plot import plot_metrics
from ..observe._series import MetricsHistory, start_metrics_history
from ..observe._server import check_token, serve_metrics
from ..observe._top import TopView
from ..store import Hibernation, MemoryStore, PostgresStore, SQLiteStore, Store, load_records

if TYPE_CHECKING:
    from ..runtime._runtime import Runtime

TOKEN_VARIABLE = "ENGINE_METRICS_TOKEN"
"""The environment variable ``run`` and ``top`` read the metrics token from (``--token``
wins)."""


@final
@attrs.frozen
class Serving:
    """Where ``run`` and ``top`` serve ``/metrics`` (and the dashboard), settled from the
    command line and the app file's ``[metrics]``."""

    host: str
    port: int
    dashboard: bool
    token: str | None = attrs.field(repr=False)  # never shown
    where: str
    """Where the address was given, for an error: ``--metrics-port`` or ``$.metrics``."""

    def url(self, port: int, path: str = "/metrics") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}{path}"


@final
@attrs.frozen
class App:
    """An app file, checked: its configuration, its machines and its plugins, built."""

    where: str
    config: AppConfig
    machines: dict[str, Machine]
    receptors: list[Plugin]
    effectors: list[Plugin]


def resolve_machines(configs: Mapping[str, MachineConfig]) -> tuple[dict[str, Machine], list[str]]:
    """Import each machine (``pkgutil.resolve_name``): the machines, and the problems."""
    machines, problems = {}, []
    for name, cfg in configs.items():
        where = f"$.machines[{name!r}].path"
        try:
            obj = pkgutil.resolve_name(cfg.path)
        except Exception as exc:  # the module's own code may raise anything
            problems.append(f"cannot import {cfg.path!r}: {type(exc).__name__}: {exc} @ {where}")
            continue
        if isinstance(obj, Machine):
            machines[name] = obj
        else:
            problems.append(
                f"{cfg.path!r} is a {type(obj).__name__}, not an engine.Machine @ {where}"
            )
    return machines, problems


def make_plugins(
    configs: Mapping[int, PluginConfig],
) -> tuple[list[Plugin], list[Plugin], list[str]]:
    """Build the ``[[plugins]]`` entries (by index): receptors, effectors, and the problems."""
    receptors, effectors, problems = [], [], []
    installed = _plugins.discover()
    taken: dict[tuple[str, str], int] = {}  # (role, name) -> index: names are unique per role
    for i, cfg in configs.items():
        at = f"$.plugins[{i}]"
        infos = [p for p in installed if p.name == cfg.name]
        roles = {p.role for p in infos}
        wanted: set[_plugins.Role] = roles
        if cfg.role == "receptor" or cfg.role == "effector":
            wanted = {cfg.role}
        twins = [f"plugins[{taken[r, cfg.name]}]" for r in sorted(wanted) if (r, cfg.name) in taken]
        if twins:
            problems.append(
                f"{cfg.name!r} is already wired by {twins[0]} (one instance per role) @ {at}.name"
            )
            continue
        taken.update({(r, cfg.name): i for r in wanted})
        if not infos:
            known = ", ".join(sorted({p.name for p in installed})) or "none"
            problems.append(
                f"no plugin named {cfg.name!r} is installed (installed: {known}) @ {at}.name"
            )
            continue
        if len(wanted) == 2 and len({p.value for p in infos}) == 2:
            problems.append(
                f"{cfg.name!r} has separate receptor and effector factories (set role = "
                f'"receptor" or "effector", one entry each) @ {at}.role'
            )
            continue
        if not wanted <= roles:
            missing = " and ".join(sorted(wanted - roles))
            problems.append(f"{cfg.name!r} is not registered as {missing} @ {at}.role")
            continue
        try:
            factory = _plugins.load(next(p for p in infos if p.role in wanted))
            obj = _plugins.create(cfg.name, factory, cfg.config, path=f"{at}.config")
            for role in sorted(wanted):
                _plugins.check_role(cfg.name, obj, role)
        except ConfigError as exc:
            problems += exc.problems
            continue
        except (PluginLoadError, PluginValidationError) as exc:
            problems.append(f"{exc} @ {at}.name")
            continue
        plugin = Plugin(obj, cfg.name, cfg.restart)
        if "receptor" in wanted:
            receptors.append(plugin)
        if "effector" in wanted:
            effectors.append(plugin)
    return receptors, effectors, problems


def build_plugins(app: AppConfig, where: str) -> tuple[list[Plugin], list[Plugin]]:
    """Instances for the app's ``[[plugins]]``: (receptors, effectors).

    Raises:
        ConfigError: Every plugin that is not installed, does not fit its role, does not load,
            or whose config is bad.
    """
    receptors, effectors, problems = make_plugins(dict(enumerate(app.plugins)))
    if problems:
        raise ConfigError(where, problems)
    return receptors, effectors


def prepare_app(path: str, store: dict[str, Any] | None = None) -> App:
    """Read an app file, import its machines and build its plugins. ``store`` replaces
    entries of its ``[store]`` table (the command line's ``--store`` and ``--durability``).

    Raises:
        ConfigError: Every problem of the file, found in one pass (the imports and plugins of
            its valid entries are checked even when other entries are bad).
    """
    data = read_app(path)
    if store:
        table = data.get("store")
        kept = table if isinstance(table, dict) else {}
        if "kind" in store:  # another store: its own place, not the file's
            kept = {k: v for k, v in kept.items() if k not in ("kind", "path", "dsn")}
        data["store"] = {**kept, **store}
    problems: list[str] = []
    config = None
    try:
        config = check_app(data, path)
    except ConfigError as exc:
        problems += exc.problems
    machines, found = resolve_machines(valid_entries(data, "machines", MachineConfig))
    problems += found
    receptors, effectors, found = make_plugins(valid_entries(data, "plugins", PluginConfig))
    problems += found
    if problems or config is None:
        raise ConfigError(path, problems)
    return App(path, config, machines, receptors, effectors)


def _policy(name: str | None) -> OverflowPolicy | None:
    if name is None:
        return None
    return OverflowPolicy.DROP_OLDEST if name == "drop_oldest" else OverflowPolicy.REJECT


@asynccontextmanager
async def app_runtime(app: App, **overrides: Any) -> AsyncIterator[Any]:
    """The app's runtime under trio, its tenants added, its agents spawned (into their
    tenants) and its plugins wired."""
    rc = app.config.runtime
    options: dict[str, Any] = {
        "implementation": rc.implementation,
        "capacity": rc.capacity,
        "policy": _policy(rc.policy),
        "budget": rc.budget,
        "batch": rc.batch,
        "dead_letter_limit": rc.dead_letter_limit,
        "retention": rc.retention,
        "record": rc.record,
        "supervision": rc.supervision,
        "metrics": rc.metrics,
        "sample_every": rc.sample_every,
    }
    options.update(overrides)
    async with AsyncExitStack() as stack:
        # the store first: closed after the runtime, whose last snapshot it takes at exit
        store = None if app.config.store is None else stack.enter_context(_opened_store(app))
        runtime = open_runtime(
            receptors=app.receptors,
            effectors=app.effectors,
            tenants=app.config.tenant_list(),
            **options,
        )
        try:
            rt = await stack.enter_async_context(runtime)
        except OSError as exc:  # an effector's aopen: a file in a directory that is not there
            problem = f"a plugin could not start: {type(exc).__name__}: {exc}"
            raise ConfigError(app.where, [problem]) from exc
        if store is not None:
            config = app.config.store
            logged = config is not None and config.durability == "log"
            sleeper = Hibernation(rt, store) if logged else None  # keeps sleepers asleep
            stored = await trio.to_thread.run_sync(store.latest)
            report = load_records(rt, stored, app.machines.values())
            asleep = f" ({len(report.hibernated)} more asleep)" if report.hibernated else ""
            print(
                f"engine: restored {len(report.restored)} agents from the store{asleep}",
                file=sys.stderr,
                flush=True,
            )
            for key, error in report.failed:
                print(f"engine: not restored: {key}: {error}", file=sys.stderr, flush=True)
            if config is not None and sleeper is not None:
                # before the app file's new agents are spawned: the log commits them, and not
                # the restored ones, which are in the store as they are
                log = await start_commit_log(
                    rt, store, commit_interval=config.commit_interval, commit_existing=False
                )
                sleeper.attach_log(log)
                if (config.hibernate_after, config.max_resident, config.expire_after) != (
                    None, None, None,
                ):  # fmt: skip
                    await start_hibernation(
                        rt, config.hibernate_after, config.max_resident, config.expire_after
                    )
        for group in app.config.agents:
            machine = app.machines[group.machine]
            policy = _policy(group.policy)
            for agent_id in group.agent_ids():
                if agent_id in rt:  # restored from the store
                    continue
                rt.spawn(
                    machine,
                    agent_id,
                    capacity=group.capacity,
                    policy=policy,
                    supervision=group.supervision,
                    tenant=group.tenant,
                )
        config = app.config.store
        if store is not None and config is not None and config.durability == "snapshot":
            await start_snapshots(rt, store, config.snapshot_every)
        if rc.metrics_history is not None:  # saved to the app's store, before it closes
            await start_metrics_history(rt, rc.metrics_history, rc.metrics_history_size, store)
        yield rt, [p.name for p in app.receptors], [p.name for p in app.effectors]


@contextmanager
def _opened_store(app: App) -> Iterator[Store]:
    """The app file's store, closed at exit (after the runtime's last snapshot)."""
    config = app.config.store
    assert config is not None
    try:
        store: Store = (
            MemoryStore()
            if config.kind == "memory"
            else PostgresStore(str(config.dsn))
            if config.kind == "postgres"
            else SQLiteStore(str(config.path))
        )
    except (OSError, sqlite3.Error, StoreError) as exc:
        where = "$.store.dsn" if config.kind == "postgres" else "$.store.path"
        raise ConfigError(app.where, [f"cannot open the store: {exc} @ {where}"]) from exc
    try:
        yield store
    finally:
        store.close()


async def until_stopped(seconds: float | None, out: TextIO) -> None:
    """Return on SIGINT/SIGTERM, or after ``seconds``."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        with trio.move_on_after(math.inf if seconds is None else seconds):
            async for sig in signals:
                print(f"engine: {signal.Signals(sig).name}, shutting down", file=out, flush=True)
                return


def serving(args: argparse.Namespace, app: App, environ: Mapping[str, str]) -> Serving | None:
    """What ``--metrics-port``, ``--metrics-host``, ``--dashboard``, ``--token``, the
    ``ENGINE_METRICS_TOKEN`` variable and the app's ``[metrics]`` ask for (None: no server).

    Raises:
        ConfigError: An option that needs a port without one, or a malformed token (the
            problem names where the token came from, never the token).
    """
    config = app.config.metrics
    port: int | None = args.metrics_port
    if port is None and config is not None:
        port = config.port
    if port is None:
        given = [
            option
            for option, value in (
                ("--metrics-host", args.metrics_host),
                ("--dashboard", args.dashboard or None),  # --no-dashboard needs nothing
                ("--token", args.token),
            )
            if value is not None
        ]
        if given:
            problem = f"{given[0]} needs --metrics-port (or a [metrics] table in {app.where})"
            raise ConfigError("the command line", [problem])
        return None
    host = args.metrics_host or (config.host if config else "127.0.0.1")
    dashboard = args.dashboard if args.dashboard is not None else bool(config and config.dashboard)
    token, source = args.token, "--token"
    if token is None:
        token, source = environ.get(TOKEN_VARIABLE), TOKEN_VARIABLE
    try:
        check_token(token)
    except InvalidArgumentError:
        problem = (
            f"the metrics token ({source}) must be 1 to 1024 letters, digits and - . _ ~ "
            "(python -c 'import secrets; print(secrets.token_urlsafe())' makes one)"
        )
        raise ConfigError("the command line", [problem]) from None
    where = "--metrics-port" if args.metrics_port is not None else "$.metrics"
    return Serving(host, port, dashboard, token, where)


async def start_serving(rt: Runtime, app: App, how: Serving, out: TextIO) -> str:
    """Serve ``/metrics`` (and the dashboard) from the runtime's nursery; print and return
    where (the token is never printed).

    Raises:
        ConfigError: The address cannot be bound (in use, not this machine's, no such host).
    """
    try:
        port = await serve_metrics(rt, how.host, how.port, dashboard=how.dashboard, token=how.token)
    except OSError as exc:
        where = app.where if how.where.startswith("$") else "the command line"
        problem = f"cannot serve metrics on {how.url(how.port, '')}: {exc} @ {how.where}"
        raise ConfigError(where, [problem]) from exc
    shown = how.url(port, "/dashboard" if how.dashboard else "/metrics")
    needs = " (with the token: Authorization: Bearer or ?token=)" if how.token else ""
    extra = f" and the dashboard at {shown}" if how.dashboard else ""
    print(f"engine: serving {how.url(port)}{extra}{needs}", file=out, flush=True)
    return shown


def _serving_options(how: Serving | None, app: App) -> dict[str, Any]:
    """A server shows latencies: sampling on, as the app file has it or every 64th step."""
    if how is None:
        return {}
    return {"sample_every": app.config.runtime.sample_every or 64}


async def serve(app: App, seconds: float | None, out: TextIO, how: Serving | None = None) -> None:
    async with app_runtime(app, **_serving_options(how, app)) as (rt, receptors, effectors):
        if how is not None:
            await start_serving(rt, app, how, out)
        print(
            f"engine: {len(rt)} agents on the {rt.implementation} hot path; receptors: "
            f"{receptors}; effectors: {effectors}",
            file=out,
            flush=True,
        )
        await until_stopped(seconds, out)
    stats = rt.statistics()
    print(
        f"engine: stopped; {stats.processed} processed, {stats.failed} failed, "
        f"{len(rt.rejected())} inputs refused",
        file=out,
        flush=True,
    )


async def top(
    app: App, seconds: float | None, interval: float, screen: TextIO, how: Serving | None = None
) -> None:
    clear = "\x1b[H\x1b[2J" if screen.isatty() else ""
    async with app_runtime(
        app, metrics=True, sample_every=app.config.runtime.sample_every or 64
    ) as (rt, _, _):
        title = app.where
        if how is not None:  # on the view too: the screen is cleared at each frame
            title += f", serving {await start_serving(rt, app, how, sys.stderr)}"
        view = TopView(rt, title)

        async def refresh() -> None:
            while True:
                await trio.sleep(interval)
                print(clear + view.frame(), file=screen, flush=True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(refresh)
            await until_stopped(seconds, sys.stderr)
            nursery.cancel_scope.cancel()
        print(view.frame(), file=screen, flush=True)


def plot_history(
    where: Mapping[str, str], out: str, tenant: str | None, machine: str | None, err: TextIO
) -> int:
    """``metrics-plot``: the history saved in a store, drawn to ``out``; 2 when it cannot be
    (no history, no such tenant or machine, no matplotlib, a file that cannot be written)."""
    problem = None
    if where["kind"] == "memory":
        problem = "a memory store keeps nothing between runs: give sqlite:PATH or postgres:DSN"
    elif where["kind"] == "sqlite" and not Path(where["path"]).is_file():
        problem = f"no SQLite store at {where['path']!r}"  # (opening it would make one)
    if problem is not None:
        print(f"engine: {problem}", file=err)
        return 2
    store: Store = (
        SQLiteStore(where["path"]) if where["kind"] == "sqlite" else PostgresStore(where["dsn"])
    )
    try:
        readings = MetricsHistory.load(store)
    finally:
        store.close()
    if readings is None:
        print("engine: the store holds no metrics history (run with metrics_history)", file=err)
        return 2
    try:
        plot_metrics(readings, out, tenant=tenant, machine=machine)
    except (ModuleNotFoundError, OSError) as exc:
        print(f"engine: cannot plot: {exc}", file=err)
        return 2
    print(f"engine: {len(readings)} readings plotted to {out}", file=err)
    return 0


def list_plugins(out: TextIO) -> int:
    if _plugins.autoload_disabled():
        print("plugin discovery is off (ENGINE_DISABLE_PLUGIN_AUTOLOAD)", file=out)
        return 0
    rows = [("name", "role", "distribution", "version", "status")]
    for status in _plugins.inventory():
        info = status.info
        rows.append(
            (
                info.name,
                info.role,
                info.distribution or "?",
                info.version or "?",
                "ok" if status.error is None else f"BROKEN: {status.error}",
            )
        )
    # four padded columns: smaller than a table library, and nothing to install
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[4],
            file=out,
        )
    return 0


def _seconds(text: str) -> float:
    """``--for``: a finite number of seconds, 0 or more."""
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def _interval(text: str) -> float:
    """``--interval``: a finite number of seconds, more than 0."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds > 0, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    return value if math.isfinite(value) else math.nan  # nan fails every comparison


def _port(text: str) -> int:
    """``--metrics-port``: an int in 0..65535."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in 0..65535, got {text!r}")
    return value


def _host(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("expected a host name or address, got ''")
    return text


def _store(text: str) -> dict[str, str]:
    kind, _, where = text.partition(":")
    if kind == "memory" and not where:
        return {"kind": "memory"}
    if kind in ("sqlite", "postgres") and where:
        return {"kind": kind, "path" if kind == "sqlite" else "dsn": where}
    raise argparse.ArgumentTypeError(f"expected memory, sqlite:PATH or postgres:DSN, got {text!r}")


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", type=_store, default=None,
        help="keep the agents in memory, sqlite:PATH or postgres:DSN (replaces the app "
        "file's [store] kind and place)",
    )  # fmt: skip
    parser.add_argument(
        "--durability", choices=("snapshot", "log"), default=None,
        help="snapshot (periodic and at exit) or log (every change, in group commits)",
    )  # fmt: skip


def _serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port", type=_port, default=None, metavar="PORT",
        help="serve Prometheus' /metrics on this port (0: any free one, printed); replaces "
        "the app file's [metrics] port",
    )  # fmt: skip
    parser.add_argument(
        "--metrics-host", type=_host, default=None, metavar="HOST",
        help="the address to serve on (default: the app file's, else 127.0.0.1)",
    )  # fmt: skip
    parser.add_argument(
        "--dashboard", action=argparse.BooleanOptionalAction, default=None,
        help="also serve the live dashboard at /dashboard",
    )  # fmt: skip
    parser.add_argument(
        "--token", default=None, metavar="TOKEN",
        help=f"a secret every request must carry (Bearer or ?token=); prefer {TOKEN_VARIABLE}, "
        "which ps does not show",
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an app file until interrupted")
    run.add_argument("app", help="the app's TOML file")
    run.add_argument(
        "--for", dest="seconds", type=_seconds, default=None, help="stop after this many seconds"
    )
    _store_options(run)
    _serve_options(run)
    sub.add_parser("plugins", help="list installed plugins and whether they load")
    live = sub.add_parser("top", help="run an app file with a live view of its metrics")
    live.add_argument("app", help="the app's TOML file")
    live.add_argument("--interval", type=_interval, default=1.0, help="seconds between refreshes")
    live.add_argument(
        "--for", dest="seconds", type=_seconds, default=None, help="stop after this many seconds"
    )
    _store_options(live)
    _serve_options(live)
    plot = sub.add_parser("metrics-plot", help="plot the metrics history kept in a store")
    plot.add_argument(
        "--store", type=_store, required=True, help="the store: sqlite:PATH or postgres:DSN"
    )
    plot.add_argument("--out", required=True, help="the PNG file to write")
    one = plot.add_mutually_exclusive_group()
    one.add_argument("--tenant", default=None, help="plot this tenant's columns")
    one.add_argument("--machine", default=None, help="plot this machine's columns")
    args = parser.parse_args(argv)
    if args.command == "plugins":
        return list_plugins(sys.stdout)
    if args.command == "metrics-plot":
        try:
            return plot_history(args.store, args.out, args.tenant, args.machine, sys.stderr)
        except EngineError as exc:
            print(f"engine: {exc}", file=sys.stderr)
            return 2
    store = dict(args.store or {})
    if args.durability is not None:
        store["durability"] = args.durability
    try:
        app = prepare_app(args.app, store)
        how = serving(args, app, os.environ)
        if args.command == "top":
            trio.run(top, app, args.seconds, args.interval, sys.stdout, how)
        else:
            trio.run(serve, app, args.seconds, sys.stderr, how)
    except EngineError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return 2
    return 0
