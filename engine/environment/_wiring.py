"""Receptors and effectors wired to a running runtime (see ``engine.environment._spec``).

Theory of operation: outputs leave the drain loop through one ``fanout`` sink. It calls every
synchronous effector at once (one call per batch) and queues the batch for the asynchronous
ones; the dispatch task then ``flush()``es that queue into each async effector's bounded
channel before its next batch, so a slow effector makes the dispatcher wait (and, through
bounded mailboxes, the receptors) instead of buffering without bound. An effector that raises
loses nothing: the batch is kept with the error in ``Runtime.effector_failures()``. Each
receptor runs in its own task with an ``EventSink``; refused input goes to every effector's
``report``; a receptor that raises is restarted after a backoff or stops the runtime, per its
``RestartPolicy``, and either way the failure is recorded with the plugin's name.
"""

from __future__ import annotations

import inspect
from collections import deque
from typing import TYPE_CHECKING, Any, Literal, final

import attrs
import trio

from ..core._exceptions import PluginFailedError, PluginValidationError
from ..core._types import OutputBatch, Priority
from ._config import RestartPolicy
from ._discovery import check_role
from ._spec import ErrorRecord

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..core._actions import Work
    from ..runtime._runtime import Runtime

QUEUE = 16
"""Batches (or error records) an async effector may have waiting."""


@final
@attrs.frozen
class Plugin:
    """A receptor or effector object with its name and (for receptors) restart policy."""

    obj: Any
    name: str = ""
    """Defaults to the object's ``name`` attribute or its class name."""
    restart: RestartPolicy = attrs.Factory(RestartPolicy)

    def named(self) -> Plugin:
        if self.name:
            return self
        return attrs.evolve(self, name=str(getattr(self.obj, "name", type(self.obj).__name__)))


@final
@attrs.frozen
class EffectorFailure:
    """An effector raised: what it was given is kept here with the error."""

    plugin: str
    error: BaseException
    batch: OutputBatch | None = None
    """The outputs it failed to take (None if it failed on an error record)."""
    record: ErrorRecord | None = None


@final
@attrs.frozen
class ReceptorFailure:
    """A receptor raised; ``action`` says what followed."""

    plugin: str
    error: BaseException
    action: Literal["restart", "stop"]
    time: float


def as_plugins(items: Sequence[Any], role: Literal["receptor", "effector"]) -> list[Plugin]:
    """Wrap bare objects, name them, and check that each can play ``role``."""
    plugins = [(p if isinstance(p, Plugin) else Plugin(p)).named() for p in items]
    for p in plugins:
        check_role(p.name, p.obj, role)
    names = [p.name for p in plugins]
    if len(set(names)) != len(names):
        raise PluginValidationError(", ".join(sorted(names)), f"{role} names must be unique")
    return plugins


class _Effector:
    __slots__ = ("async_", "name", "obj", "receive", "report", "send")

    def __init__(self, plugin: Plugin) -> None:
        self.name = plugin.name
        self.obj = plugin.obj
        self.async_ = inspect.iscoroutinefunction(plugin.obj.deliver)
        self.report = getattr(plugin.obj, "report", None)
        self.send: trio.MemorySendChannel[tuple[str, Any]] | None = None
        self.receive: trio.MemoryReceiveChannel[tuple[str, Any]] | None = None
        if self.async_:
            self.send, self.receive = trio.open_memory_channel[tuple[str, Any]](QUEUE)


@final
class Wiring:
    """The plugins of one ``open_runtime`` (private)."""

    def __init__(self, effectors: list[Plugin], user_sink: Callable[[OutputBatch], object] | None):
        self.rt: Runtime | None = None
        self.effectors = [_Effector(p) for p in effectors]
        self.user_sink = user_sink
        self.pending: deque[tuple[str, Any]] = deque()
        self._async = [e for e in self.effectors if e.async_]

    @property
    def active(self) -> bool:
        return bool(self.effectors) or self.user_sink is not None

    def fanout(self, batch: OutputBatch) -> None:
        """The runtime's output sink: called inside the drain loop."""
        if self.user_sink is not None:
            self.user_sink(batch)
        for eff in self.effectors:
            if not eff.async_:
                try:
                    eff.obj.deliver(batch)
                except Exception as exc:
                    self._failed(eff.name, exc, batch=batch)
        if self._async:
            self.pending.append(("batch", batch))

    def reject(self, record: ErrorRecord) -> None:
        """A receptor refused input: record it and tell every effector."""
        assert self.rt is not None
        self.rt._rejected.append(record)
        for eff in self.effectors:
            if eff.report is None or eff.async_:
                continue
            try:
                result = eff.report(record)
                if inspect.isawaitable(result):
                    raise TypeError("a synchronous effector's report must not be async")
            except Exception as exc:
                self._failed(eff.name, exc, record=record)
        if self._async:
            self.pending.append(("report", record))
            if self.rt._host is not None:  # the dispatch task flushes: wake it if parked
                self.rt._host._on_wake()

    async def flush(self) -> None:
        """Hand queued batches and records to the async effectors, waiting for room."""
        while self.pending:
            item = self.pending.popleft()
            for eff in self._async:
                if item[0] == "report" and eff.report is None:
                    continue
                assert eff.send is not None
                await eff.send.send(item)

    def _failed(
        self,
        name: str,
        exc: Exception,
        batch: OutputBatch | None = None,
        record: ErrorRecord | None = None,
    ) -> None:
        assert self.rt is not None
        self.rt._effector_failures.append(EffectorFailure(name, exc, batch, record))

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self, nursery: trio.Nursery) -> None:
        for eff in self.effectors:
            aopen = getattr(eff.obj, "aopen", None)
            if aopen is not None:
                await aopen()
            if eff.async_:
                nursery.start_soon(self._serve, eff)

    async def _serve(self, eff: _Effector) -> None:
        assert eff.receive is not None
        async with eff.receive:
            async for kind, item in eff.receive:
                try:
                    if kind == "batch":
                        await eff.obj.deliver(item)
                    else:
                        report = eff.report
                        assert report is not None  # flush() sends records only to reporters
                        result = report(item)
                        if inspect.isawaitable(result):
                            await result
                except Exception as exc:
                    if kind == "batch":
                        self._failed(eff.name, exc, batch=item)
                    else:
                        self._failed(eff.name, exc, record=item)

    def close(self) -> None:
        """End the async effectors' queues (they finish what they hold, then stop). Anything
        the dispatch task could not hand over in time is recorded as a failure, not lost."""
        while self.pending:
            kind, item = self.pending.popleft()
            for eff in self._async:
                error = trio.TooSlowError(f"effector {eff.name!r} did not take it in time")
                if kind == "batch":
                    self._failed(eff.name, error, batch=item)
                elif eff.report is not None:
                    self._failed(eff.name, error, record=item)
        for eff in self._async:
            assert eff.send is not None
            eff.send.close()

    async def aclose_all(self) -> None:
        for eff in self.effectors:
            aclose = getattr(eff.obj, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception as exc:
                    self._failed(eff.name, exc)

    # -- receptors ---------------------------------------------------------------------------

    async def run_receptor(self, plugin: Plugin) -> None:
        assert self.rt is not None
        rt = self.rt
        sink = _Sink(rt, plugin.name, self)
        history: deque[float] = deque()
        policy = plugin.restart
        while True:
            try:
                await plugin.obj.run(sink)
                return  # a receptor may finish (a file read to its end)
            except Exception as exc:
                now = trio.current_time()
                while history and history[0] <= now - policy.within:
                    history.popleft()
                stop = policy.policy == "stop" or len(history) >= policy.max_restarts
                rt._receptor_failures.append(
                    ReceptorFailure(plugin.name, exc, "stop" if stop else "restart", now)
                )
                if stop:
                    detail = (
                        ""
                        if policy.policy == "stop"
                        else (f"{len(history) + 1} failures within {policy.within} s")
                    )
                    raise PluginFailedError(plugin.name, exc, detail) from exc
                delay = min(policy.backoff * 2 ** len(history), policy.backoff_max)
                history.append(now)
                await trio.sleep(delay)


@final
class _Sink:
    """The ``EventSink`` a receptor gets (a ``WorkSink``: it can start an agent's work)."""

    __slots__ = ("_name", "_rt", "_wiring")

    def __init__(self, rt: Runtime, name: str, wiring: Wiring) -> None:
        self._rt = rt
        self._name = name
        self._wiring = wiring

    @property
    def name(self) -> str:
        return self._name

    def send_nowait(
        self, agent_id: Any, event: str | int, payload: Any = None, priority: int = Priority.NORMAL
    ) -> None:
        self._rt.send_nowait(agent_id, event, payload, priority)

    async def send(
        self, agent_id: Any, event: str | int, payload: Any = None, priority: int = Priority.NORMAL
    ) -> None:
        await self._rt.send(agent_id, event, payload, priority)

    def reject(self, record: ErrorRecord) -> None:
        self._wiring.reject(record)

    def start_work(self, agent_id: Any, work: Work) -> None:
        self._rt.start_work(agent_id, work)
