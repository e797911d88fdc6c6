"""The plugin contract: receptors turn the world into events, effectors turn outputs into acts.

A plugin is a separate distribution that registers a *factory* under an entry-point group::

    [project.entry-points."engine.receptors"]
    tcp = "engine_tcp:TcpPlugin"

    [project.entry-points."engine.effectors"]
    tcp = "engine_tcp:TcpPlugin"       # the same factory in both groups: one object, two roles

The factory is a class (or any callable) with a ``Config`` attribute, an attrs class that
describes its configuration. The engine structures the user's configuration (a dict, e.g. a
TOML table) into ``Config`` with its cattrs converter, reporting every bad field at once, and
calls ``factory(config)``. The object it returns must satisfy ``Receptor``, ``Effector`` or
both. Discovery imports nothing; loading a plugin that fails to import raises
``PluginLoadError`` naming it; an object that does not satisfy its role raises
``PluginValidationError``. A broken plugin never keeps the others from loading.

Receptors run as tasks of the runtime's nursery and push events through an ``EventSink``
(the runtime's is a ``WorkSink``, which can also start work an agent owns: I/O that
``Runtime.interrupt`` cancels); they are cancelled on shutdown. A receptor that raises is
restarted with backoff or stops the runtime, as its policy says, and the failure names it.
Bad input (malformed records, unknown agents or events, oversized lines) is not a failure: the
receptor reports it with ``sink.reject(ErrorRecord(...))`` and keeps serving; every
effector's ``report`` receives it.

Effectors receive outputs in batches (``OutputBatch``, iterable as ``(agent_id, output)``).
A synchronous ``deliver`` is called inside the drain loop, once per batch (the fast path); an
``async def deliver`` runs in the effector's own task, fed through a bounded queue, so a slow
effector slows the dispatcher down (backpressure) instead of buffering without bound. An
effector that raises loses nothing: the runtime records the batch with the error
(``Runtime.effector_failures``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

import attrs

from ..core._types import Priority

if TYPE_CHECKING:
    from ..core._actions import Work
    from ..core._types import OutputBatch

RECEPTORS = "engine.receptors"
"""Entry-point group of receptor factories."""
EFFECTORS = "engine.effectors"
"""Entry-point group of effector factories."""


@final
@attrs.frozen
class ErrorRecord:
    """Bad input a receptor refused, as effectors see it."""

    source: str
    """Name of the plugin that refused it."""
    error: str
    """What was wrong, as an exception type name (``JSONDecodeError``, ``UnknownEventError``,
    ``LineTooLong``, ``Unauthorized``, ...)."""
    message: str
    """Human-readable detail."""
    raw: str | None = None
    """The offending input, truncated to a reasonable length (None if there is none)."""
    context: Mapping[str, Any] = attrs.field(factory=dict)
    """Where it came from, e.g. ``{"peer": "127.0.0.1:50412", "line": 17}``."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"error": ..., "message": ..., "source": ..., ...}``."""
        out: dict[str, Any] = {"error": self.error, "message": self.message, "source": self.source}
        if self.raw is not None:
            out["raw"] = self.raw
        out.update(self.context)
        return out


@runtime_checkable
class EventSink(Protocol):
    """What a receptor pushes events through (one per receptor, made by the runtime)."""

    @property
    def name(self) -> str:
        """The plugin's name, for error records."""
        ...

    def send_nowait(
        self,
        agent_id: Any,
        event: str | int,
        payload: Any = None,
        priority: int = Priority.NORMAL,
    ) -> None:
        """Queue an event. Raises the runtime's typed errors (``AgentNotFoundError``,
        ``UnknownEventError``, ``InvalidArgumentError``, ``AgentStoppedError``) and
        ``trio.WouldBlock`` when the agent's bounded mailbox is full."""
        ...

    async def send(
        self,
        agent_id: Any,
        event: str | int,
        payload: Any = None,
        priority: int = Priority.NORMAL,
    ) -> None:
        """Queue an event, waiting while the agent's bounded mailbox is full."""
        ...

    def reject(self, record: ErrorRecord) -> None:
        """Report bad input: every effector's ``report`` gets the record."""
        ...


@runtime_checkable
class WorkSink(EventSink, Protocol):
    """The sink the runtime gives a receptor: an ``EventSink`` that can also start work an
    agent owns. A plugin that does I/O on an agent's behalf (a stream one of its outputs
    asked for) runs it this way, so that ``Runtime.interrupt`` cancels it."""

    def start_work(self, agent_id: Any, work: Work) -> None:
        """Run ``work`` as the agent's own ``Work`` (``Runtime.start_work``): a task of the
        runtime's nursery, cancelled by ``interrupt``, ``terminate`` and supervision, with
        ``done`` / ``failed`` delivered to the agent. Raises ``AgentNotFoundError``,
        ``AgentStoppedError`` and ``RuntimeNotRunningError``."""
        ...


@runtime_checkable
class Receptor(Protocol):
    """A source of events."""

    async def run(self, sink: EventSink) -> None:
        """Push events through ``sink`` until cancelled."""
        ...


@runtime_checkable
class Effector(Protocol):
    """A sink of outputs.

    Optional methods, called when present: ``async def aopen(self)`` before the first batch,
    ``async def aclose(self)`` at shutdown (flush here), and ``report(record: ErrorRecord)``
    (sync or async) for input that receptors refused.
    """

    def deliver(self, batch: OutputBatch) -> Awaitable[None] | None:
        """Take one batch of outputs: a plain ``def`` runs inside the drain loop, an
        ``async def`` in the effector's own task."""
        ...


@final
@attrs.frozen
class NoConfig:
    """The ``Config`` of a plugin that takes no configuration."""
