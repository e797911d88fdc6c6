"""``open_runtime``: a runtime under trio, with its receptors and effectors wired in.

Theory of operation: one nursery owns everything. The runtime's ``Host`` (``engine.runtime``)
runs the dispatch task and agent work; this module adds what the environment brings: each
receptor as a task pushing events through an ``EventSink``, and the effectors behind the
``Wiring`` that the dispatch task flushes (the host sees it only as an outlet with ``pending``
and ``flush()``). Shutdown runs in order: receptors are cancelled, the dispatch task hands its
queued outputs to the effectors, effectors close, then the dispatch task and all agent work
are cancelled.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from ..core._exceptions import (
    InvalidArgumentError,
    RuntimeNotRunningError,
    TenantExistsError,
    brief,
)
from ..core._machine import Machine
from ..core._validate import integer, number
from ..observe._series import MetricsHistory, check_interval, check_size
from ..runtime._host import Host
from ..runtime._runtime import Runtime
from ..runtime._tenants import DEFAULT, Tenant
from ..store._codec import Codec
from ..store._hibernate import Hibernation
from ..store._persist import load_records
from ..store._recorder import record_to_store
from ..store._recording import check_name, check_store
from ..store._stores import Store
from ._durable import start_commit_log, start_hibernation, start_snapshots
from ._wiring import Plugin, Wiring, as_plugins

DURABILITY = ("none", "snapshot", "log")


@asynccontextmanager
async def open_runtime(
    *,
    receptors: Sequence[Any] = (),
    effectors: Sequence[Any] = (),
    shutdown_timeout: float = 5.0,
    store: Store | None = None,
    durability: str = "none",
    restore: Iterable[Machine] | None = None,
    snapshot_every: float | None = None,
    commit_interval: float = 0.0,
    codec: Codec | None = None,
    hibernate_after: float | None = None,
    max_resident: int | None = None,
    expire_after: float | None = None,
    tenants: Iterable[Tenant] = (),
    metrics_history: float | None = None,
    metrics_history_size: int = 3600,
    record_to: Store | None = None,
    record_name: str | None = None,
    **kwargs: Any,
) -> AsyncIterator[Runtime]:
    """Run a ``Runtime`` under trio for the body of an ``async with``.

    Args:
        receptors: Receptor objects (or ``Plugin`` wrappers with a name and restart policy);
            each runs as a task pushing events through its ``EventSink``.
        effectors: Effector objects (or ``Plugin`` wrappers) that receive every output batch.
        shutdown_timeout: Seconds allowed at exit for effectors to take what is queued and
            close (``aclose``).
        store: Where agents are kept (``engine.store``); needed by ``restore`` and by the
            durability levels "snapshot" and "log".
        durability: "none" (nothing is kept), "snapshot" (every agent is snapshotted every
            ``snapshot_every`` seconds, or only at exit when None, and at exit), or "log"
            (every change is committed in group commits; ``await rt.send`` returns once its
            message is committed; see ``engine.store.CommitLog``).
        restore: Machines of the agents to bring back from ``store`` before anything runs
            (``rt.recovery`` is the ``LoadReport``: agents restored, records that failed).
        snapshot_every: Seconds between snapshots (durability "snapshot").
        commit_interval: Seconds a commit round gathers changes before it is written
            (durability "log"; 0: a round starts as soon as the previous one is written).
        codec: Encodes agent data and payloads (default: builtins only).
        hibernate_after: Hibernate agents idle this many seconds (needs a store, durability
            "none" or "log"; ``rt.hibernate`` works with any such store).
        max_resident: Keep at most this many agents in memory: hibernate the ones idle the
            longest beyond it (agents with mail are never hibernated, so it can be exceeded).
        expire_after: Remove agents hibernated this many seconds from the store (reported
            in ``statistics().expired`` and the hibernation's ``expired_ids``).
        tenants: ``engine.Tenant`` values added to the runtime before anything is restored
            (so restored agents find their tenants) or runs; one named ``"default"`` sets
            the default tenant's weight, limits and sizer.
        metrics_history: Seconds between readings of the runtime's own figures kept as
            ``rt.metrics_history`` (an ``engine.observe.MetricsHistory``, saved to ``store``
            when there is one); None: no history.
        metrics_history_size: Readings the history keeps (the oldest go first).
        record_to: Keep the runtime's transition records in this store as it runs, as the
            recording ``record_name`` (``engine.store.record_to_store``, writing every second
            with ``codec``; ``rt.recorder`` is its ``Recorder``), from before the body runs
            to the end; ``engine.store.load_recording`` reads it back for ``engine.replay``.
        record_name: The recording's name (with ``record_to``).
        **kwargs: ``Runtime``'s keyword arguments; its clock defaults to
            ``trio.current_time``, so ``trio.testing.MockClock`` drives timers.

    Raises:
        InvalidArgumentError: A bad argument (``tenants`` not an iterable of ``Tenant``).
        TenantExistsError: Two of ``tenants`` have the same name.

    On exit, receptors are cancelled first, queued outputs are handed to the effectors and
    they are closed; then the dispatch task and all agent work are cancelled. Mail still
    queued stays in the runtime, which remains usable synchronously. An error of the runtime
    itself, or of a receptor whose policy is stop, propagates out of the ``async with``.
    """
    _require_trio()
    if durability not in DURABILITY:
        raise InvalidArgumentError(
            f"durability must be one of {', '.join(DURABILITY)}, got {brief(durability)}"
        )
    if store is None and (durability != "none" or restore is not None):
        raise InvalidArgumentError(f"durability={durability!r} and restore need a store")
    if store is not None and not isinstance(store, Store):
        raise InvalidArgumentError(f"store must be an engine.store.Store, got {brief(store)}")
    sleep = _sleep_policy(hibernate_after, max_resident, expire_after)
    if sleep is not None and (store is None or durability == "snapshot"):
        raise InvalidArgumentError(
            "hibernate_after, max_resident and expire_after need a store, with durability "
            "'none' or 'log'"
        )
    tenant_list = _tenants(tenants)
    if metrics_history is not None:
        metrics_history = check_interval("metrics_history", metrics_history)
    metrics_history_size = check_size("metrics_history_size", metrics_history_size)
    if record_to is not None or record_name is not None:
        if record_to is None or record_name is None:
            raise InvalidArgumentError("record_to and record_name go together")
        check_store(record_to)
        check_name(record_name)
    receptor_plugins = as_plugins(receptors, "receptor")
    wiring = Wiring(as_plugins(effectors, "effector"), kwargs.pop("on_output", None))
    kwargs.setdefault("clock", trio.current_time)
    rt = Runtime(on_output=wiring.fanout if wiring.active else None, **kwargs)
    wiring.rt = rt
    history = None
    if metrics_history is not None:
        history = MetricsHistory(
            rt, interval=metrics_history, size=metrics_history_size, store=store
        )
    for tenant in tenant_list:  # before a restore: its agents name their tenants
        add = rt.update_tenant if tenant.name == DEFAULT else rt.add_tenant
        add(tenant.name, weight=tenant.weight, limits=tenant.limits, sizer=tenant.sizer)
    try:
        async with trio.open_nursery() as nursery:
            host = Host(rt, nursery, wiring)
            rt._attach(host)
            try:
                if store is not None:
                    await _start_durability(
                        rt, store, durability, restore, snapshot_every, commit_interval, codec
                    )
                    if sleep is not None:
                        await start_hibernation(rt, *sleep)
                if history is not None:  # (its last save runs when the nursery is cancelled)
                    await rt.start(history.run, name="metrics history")
                    rt.metrics_history = history
                if record_to is not None:  # (its last write runs when the nursery is cancelled)
                    assert record_name is not None
                    rt.recorder = await rt.start(
                        partial(record_to_store, rt, record_to, record_name, codec=codec),
                        name=f"recorder {record_name}",
                    )
                try:
                    async with trio.open_nursery() as plugged:  # effector tasks, receptors
                        await wiring.open(plugged)
                        nursery.start_soon(host.dispatch_loop)
                        receptor_scope = trio.CancelScope()
                        plugged.start_soon(_run_receptors, wiring, receptor_plugins, receptor_scope)
                        try:
                            yield rt
                        finally:
                            receptor_scope.cancel()
                            host.stop()
                            with trio.move_on_after(shutdown_timeout) as scope:
                                scope.shield = True
                                await host.stopped.wait()
                            wiring.close()
                finally:  # even when the body or a receptor raised: close files and sockets
                    with trio.move_on_after(shutdown_timeout) as scope:
                        scope.shield = True
                        await wiring.aclose_all()
            finally:
                rt._detach()
                host.detach()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # one task failed: raise its error, not groups of one
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        if error is group:
            raise
        raise error from error.__cause__  # keep the cause (e.g. PluginFailedError's)


def _tenants(tenants: Any) -> list[Tenant]:
    """``tenants`` as a list, checked before anything is built."""
    if isinstance(tenants, str | bytes) or not isinstance(tenants, Iterable):
        raise InvalidArgumentError(
            f"tenants must be an iterable of engine.Tenant, got {brief(tenants)}"
        )
    out = list(tenants)
    names: set[str] = set()
    for tenant in out:
        if not isinstance(tenant, Tenant):
            raise InvalidArgumentError(f"tenants holds {brief(tenant)}, not an engine.Tenant")
        if tenant.name in names:
            raise TenantExistsError(tenant.name)
        names.add(tenant.name)
    return out


def _sleep_policy(
    hibernate_after: float | None, max_resident: int | None, expire_after: float | None
) -> tuple[float | None, int | None, float | None] | None:
    if hibernate_after is not None:
        hibernate_after = number("hibernate_after", hibernate_after, minimum=0)
    if max_resident is not None:
        max_resident = integer("max_resident", max_resident, 0, 2**31 - 1)
    if expire_after is not None:
        expire_after = number("expire_after", expire_after, minimum=0)
    if hibernate_after is None and max_resident is None and expire_after is None:
        return None
    return hibernate_after, max_resident, expire_after


async def _start_durability(
    rt: Runtime,
    store: Store,
    durability: str,
    restore: Iterable[Machine] | None,
    snapshot_every: float | None,
    commit_interval: float,
    codec: Codec | None,
) -> None:
    # first, so that hibernated agents in the store are kept asleep by the restore
    sleeper = Hibernation(rt, store, codec) if durability != "snapshot" else None
    if restore is not None:
        stored = await trio.to_thread.run_sync(store.latest)
        rt.recovery = load_records(rt, stored, list(restore), codec)
    if durability == "log":
        log = await start_commit_log(
            rt,
            store,
            commit_interval=commit_interval,
            codec=codec,
            commit_existing=restore is None,
        )
        assert sleeper is not None
        sleeper.attach_log(log)
    elif durability == "snapshot":
        await start_snapshots(rt, store, snapshot_every, codec)


async def _run_receptors(wiring: Wiring, plugins: list[Plugin], scope: trio.CancelScope) -> None:
    with scope:
        async with trio.open_nursery() as nursery:
            for plugin in plugins:
                nursery.start_soon(wiring.run_receptor, plugin, name=f"receptor {plugin.name}")


def _require_trio() -> None:
    """Refuse, with a message that says what to do, to start outside trio (under asyncio,
    say, where trio's primitives would fail with an error that names neither)."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        where = "outside trio"
        asyncio = sys.modules.get("asyncio")
        if asyncio is not None:
            try:
                asyncio.get_running_loop()
                where = "under asyncio"
            except RuntimeError:
                pass
        raise RuntimeNotRunningError(
            f"open_runtime needs trio and was entered {where}: run it with trio.run(main) "
            "(the runtime's tasks, timers and clock are trio's), or drive an engine.Runtime "
            "synchronously from your own loop (send_nowait, run_until_idle, fire_timers)"
        ) from None
