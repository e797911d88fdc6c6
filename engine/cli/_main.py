"""``python -m engine``: run an app file (plainly or with a live view), or list plugins.

``run APP.toml`` loads machines by import path, spawns the agents, builds the plugins the file
names (through their entry points), and runs under trio until SIGINT or SIGTERM (or
``--for SECONDS``); then it shuts down cleanly: receptors stop, effectors take what is queued
and close. ``plugins`` lists what discovery finds, with versions and whether each loads.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TextIO

import trio

from ..core._exceptions import ConfigError, EngineError
from ..core._machine import Machine
from ..core._types import OverflowPolicy
from ..environment import _discovery as _plugins
from ..environment._config import AppConfig, load_app
from ..environment._open import open_runtime
from ..environment._wiring import Plugin
from ..observe._top import TopView


def import_object(path: str) -> Any:
    """``package.module:attribute`` (dots allowed after the colon)."""
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{path!r} is not of the form 'package.module:attribute'")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load_machines(app: AppConfig, where: str) -> dict[str, Machine]:
    machines, problems = {}, []
    for name, cfg in app.machines.items():
        try:
            obj = import_object(cfg.path)
        except Exception as exc:
            problems.append(
                f"machines.{name}: cannot import {cfg.path!r}: {type(exc).__name__}: {exc}"
            )
            continue
        if not isinstance(obj, Machine):
            problems.append(
                f"machines.{name}: {cfg.path!r} is a {type(obj).__name__}, not an engine.Machine"
            )
        machines[name] = obj
    if problems:
        raise ConfigError(where, problems)
    return machines


def build_plugins(app: AppConfig, where: str) -> tuple[list[Plugin], list[Plugin]]:
    """Instances for the app's ``[[plugins]]``: (receptors, effectors)."""
    receptors, effectors = [], []
    installed = _plugins.discover()
    for i, cfg in enumerate(app.plugins):
        infos = [p for p in installed if p.name == cfg.name]
        roles = {p.role for p in infos}
        if not infos:
            known = ", ".join(sorted({p.name for p in installed})) or "none"
            raise ConfigError(
                where,
                [f"plugins[{i}]: no plugin named {cfg.name!r} is installed (installed: {known})"],
            )
        wanted = roles if cfg.role in (None, "both") else {cfg.role}
        if len(wanted) == 2 and len({p.value for p in infos}) == 2:
            raise ConfigError(
                where,
                [
                    f"plugins[{i}]: {cfg.name!r} has separate receptor and effector factories "
                    '(set role = "receptor" or "effector", one entry each)'
                ],
            )
        if not wanted <= roles:
            raise ConfigError(
                where,
                [
                    f"plugins[{i}]: {cfg.name!r} is not registered as "
                    f"{' and '.join(sorted(wanted - roles))}"
                ],
            )
        factory = _plugins.load(next(p for p in infos if p.role in wanted))
        obj = _plugins.create(cfg.name, factory, cfg.config)
        plugin = Plugin(obj, cfg.name, cfg.restart)
        if "receptor" in wanted:
            receptors.append(plugin)
        if "effector" in wanted:
            effectors.append(plugin)
    return receptors, effectors


@asynccontextmanager
async def app_runtime(app: AppConfig, where: str, **overrides: Any) -> AsyncIterator[Any]:
    """The app's runtime under trio, its agents spawned and its plugins wired."""
    machines = load_machines(app, where)
    receptors, effectors = build_plugins(app, where)
    rc = app.runtime
    options: dict[str, Any] = {
        "implementation": rc.implementation,
        "capacity": rc.capacity,
        "policy": OverflowPolicy.DROP_OLDEST
        if rc.policy == "drop_oldest"
        else OverflowPolicy.REJECT,
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
    async with open_runtime(receptors=receptors, effectors=effectors, **options) as rt:
        for group in app.agents:
            machine = machines[group.machine]
            policy = (
                None
                if group.policy is None
                else (
                    OverflowPolicy.DROP_OLDEST
                    if group.policy == "drop_oldest"
                    else OverflowPolicy.REJECT
                )
            )
            for agent_id in group.agent_ids():
                rt.spawn(
                    machine,
                    agent_id,
                    capacity=group.capacity,
                    policy=policy,
                    supervision=group.supervision,
                )
        yield rt, [p.name for p in receptors], [p.name for p in effectors]


async def until_stopped(seconds: float | None, out: TextIO) -> None:
    """Return on SIGINT/SIGTERM, or after ``seconds``."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        with trio.move_on_after(float("inf") if seconds is None else seconds):
            async for sig in signals:
                print(f"engine: {signal.Signals(sig).name}, shutting down", file=out, flush=True)
                return


async def serve(app: AppConfig, where: str, seconds: float | None, out: TextIO) -> None:
    async with app_runtime(app, where) as (rt, receptors, effectors):
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
    app: AppConfig, where: str, seconds: float | None, interval: float, screen: TextIO
) -> None:
    clear = "\x1b[H\x1b[2J" if screen.isatty() else ""
    async with app_runtime(
        app, where, metrics=True, sample_every=app.runtime.sample_every or 64
    ) as (rt, _, _):
        view = TopView(rt, where)

        async def refresh() -> None:
            while True:
                await trio.sleep(interval)
                print(clear + view.frame(), file=screen, flush=True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(refresh)
            await until_stopped(seconds, sys.stderr)
            nursery.cancel_scope.cancel()
        print(view.frame(), file=screen, flush=True)


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
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[4],
            file=out,
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an app file until interrupted")
    run.add_argument("app", help="the app's TOML file")
    run.add_argument(
        "--for", dest="seconds", type=float, default=None, help="stop after this many seconds"
    )
    sub.add_parser("plugins", help="list installed plugins and whether they load")
    live = sub.add_parser("top", help="run an app file with a live view of its metrics")
    live.add_argument("app", help="the app's TOML file")
    live.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    live.add_argument(
        "--for", dest="seconds", type=float, default=None, help="stop after this many seconds"
    )
    args = parser.parse_args(argv)
    if args.command == "plugins":
        return list_plugins(sys.stdout)
    try:
        app = load_app(args.app)
        if args.command == "top":
            trio.run(top, app, args.app, args.seconds, args.interval, sys.stdout)
        else:
            trio.run(serve, app, args.app, args.seconds, sys.stderr)
    except EngineError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return 2
    return 0
