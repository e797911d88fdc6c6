"""``ConversationRuntime``: the command API and the bus over one engine runtime under trio.

Theory of operation: ``request(command, data)`` gives each call a correlation id, runs the
command under its timeout and answers with a ``Response``: its data, or the typed
``EngineError`` that stopped it (``request`` returns errors, it does not raise them;
``Response.unwrap()`` raises). The runtime's effector (``deliver``, called in the drain loop
once per batch) hands bus events to the ``EventBus`` and notes the images whose turn ended;
a task writes a snapshot of each of them (``save_now``), never inside the drain loop, and
only when the image is idle with no mail (a busy one is saved when its next turn ends); a
store error there ends the runtime with it, as the engine's own snapshots do.
Stopping an image is shielded from its request's timeout, so it is never left half done.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping
from typing import Any, final

import trio

import engine
import engine.store
from engine import AgentStatus, Priority

from ._bus import BusStatistics, EventBus, Handler, Unsubscribe
from ._checks import check_timeout
from ._commands import COMMAND_TABLE
from ._images import Images, forget_image
from ._machine import SAVE, TAG, agent_id_of
from ._values import (
    ConversationEvent,
    EventContext,
    HandlerFailure,
    RequestTimeoutError,
    Response,
    UnknownCommandError,
    _brief,
)


@final
class ConversationRuntime:
    """Containers, images and agents, driven by ``request`` and watched through the bus.
    Made by ``open_conversations``; ``engine`` is the engine runtime underneath."""

    def __init__(
        self, rt: engine.Runtime, store: engine.store.Store, codec: Any, timeout: float
    ) -> None:
        self.engine = rt
        self.store = store
        self.images = Images(rt, store, codec)
        self.bus = EventBus()
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._dirty: set[str] = set()
        self._stopping: dict[str, trio.Event] = {}
        self._wake = trio.Event()

    # -- the command API ---------------------------------------------------------------

    async def request(
        self,
        command: str,
        data: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> Response:
        """Run one command and answer it.

        Args:
            command: One of ``COMMANDS`` (``"image_create"``...).
            data: The command's fields (``{"container_id": "main"}``...).
            timeout: Seconds the command may take (default: the runtime's, 30 s).
            request_id: The correlation id (default ``"req-<n>"``): in the response and in
                the context of the events the command causes.

        Returns:
            A ``Response``: ``data``, or ``error``, a typed ``EngineError``
            (``UnknownCommandError``, ``InvalidArgumentError``, ``TenantNotFoundError`` for an
            unknown container, ``ImageNotFoundError``, ``AgentNotFoundError``,
            ``AgentStoppedError``, ``RequestTimeoutError``...). A command refused for its
            data changed nothing.
        """
        rid = f"req-{next(self._ids)}" if request_id is None else request_id
        try:
            if type(rid) is not str or not 0 < len(rid) <= 200:
                raise engine.InvalidArgumentError(
                    f"request_id is a str of 1..200 characters, not {_brief(rid)}"
                )
            limit = self.timeout if timeout is None else check_timeout(timeout)
            run = COMMAND_TABLE.get(command) if type(command) is str else None
            if run is None:
                raise UnknownCommandError(command)
            with trio.move_on_after(limit) as scope:
                result = await run(self, {} if data is None else data, rid)
            if scope.cancelled_caught:
                raise RequestTimeoutError(command, rid, limit)
        except engine.EngineError as exc:
            return Response(
                str(command) if type(command) is str else _brief(command), str(rid), {}, exc
            )
        return Response(command, rid, result)

    # -- the bus -------------------------------------------------------------------------

    def on(self, types: str | Iterable[str], handler: Handler) -> Unsubscribe:
        """Call ``handler(event)`` for each event of ``types``; returns the unsubscribe."""
        return self.bus.on(types, handler)

    def on_any(self, handler: Handler) -> Unsubscribe:
        """Call ``handler(event)`` for every event; returns the unsubscribe."""
        return self.bus.on_any(handler)

    def failures(self) -> list[HandlerFailure]:
        """The last 1000 errors of bus handlers (they never reach the runtime)."""
        return self.bus.failures()

    def statistics(self) -> BusStatistics:
        """The bus's counts."""
        return self.bus.statistics()

    def emit(self, kind: str, data: Any, **context: Any) -> None:
        self.bus.emit(ConversationEvent(kind, data, EventContext(**context), time.time()))

    def scope(self, image_id: str, rid: str) -> dict[str, Any]:
        data = self.images.data(image_id)
        online = self.images.online(image_id)
        return {
            "container_id": data["container"],
            "image_id": image_id,
            "agent_id": agent_id_of(image_id, data["run"]) if online else None,
            "session_id": data["session"],
            "correlation_id": rid,
        }

    # -- what several commands do ------------------------------------------------------

    def container_ids(self) -> list[str]:
        return [t.name for t in self.engine.tenants() if t.name != "default"]

    async def run_image(self, image_id: str, rid: str) -> tuple[str, bool]:
        """Make sure an agent runs the image; its id, and whether it was running already.

        Raises:
            AgentStoppedError: The image is being stopped now.
        """
        if image_id in self._stopping:
            raise engine.AgentStoppedError(image_id, "is being stopped")
        if self.images.online(image_id):
            data = self.images.data(image_id)
            if not data["stopping"] and data["run"]:
                return agent_id_of(image_id, data["run"]), True
            # resident without a run: woken by a call that named it (rt.data...)
        else:
            self.engine.wake(image_id)
        run = await self.engine.request(image_id, "run", priority=Priority.CRITICAL)
        context = self.scope(image_id, rid)
        self.emit(
            "agent_registered", {"agent_id": context["agent_id"], "image_id": image_id}, **context
        )
        return agent_id_of(image_id, run), False

    async def stop_image(self, image_id: str, rid: str) -> bool:
        """Stop the image's agent: end its turn, refuse what it had not taken, hibernate it.
        False if it was not running (or another call is stopping it: this one waits)."""
        if image_id in self._stopping:
            await self._stopping[image_id].wait()
            return False
        if not self.images.online(image_id):
            return False
        self._stopping[image_id] = done = trio.Event()
        try:
            with trio.CancelScope(shield=True):  # a timeout never leaves it half stopped
                await self._stop(image_id, rid)
        finally:
            del self._stopping[image_id]
            done.set()
        return True

    async def _stop(self, image_id: str, rid: str) -> None:
        context = self.scope(image_id, rid)
        rt = self.engine
        if await rt.request(image_id, "stop", priority=Priority.CRITICAL) != "idle":
            rt.interrupt(image_id)  # cancels the stream; "interrupted" ends the turn
        while True:  # mail that arrived meanwhile is refused (STOPPED) as it is taken
            await rt.request(image_id, "settle", priority=Priority.LOW)
            try:
                rt.hibernate(image_id)
                break
            except engine.AgentBusyError:
                continue
        self.emit(
            "agent_unregistered", {"agent_id": context["agent_id"], "image_id": image_id}, **context
        )

    async def delete_image(self, image_id: str, rid: str) -> None:
        await self.stop_image(image_id, rid)
        context = self.scope(image_id, rid)
        self.engine.wake(image_id)
        self.engine.terminate(image_id)
        forget_image(self.store, image_id)
        self.emit("image_deleted", {"image_id": image_id}, **context)
        self.emit(
            "session_destroyed",
            {"session_id": context["session_id"], "image_id": image_id},
            **context,
        )

    # -- the effector and the saver ----------------------------------------------------

    def deliver(self, batch: Iterable[tuple[Any, Any]]) -> None:
        """Effector: bus events to the bus, saves noted for the saver (in the drain loop)."""
        for _, output in batch:
            if type(output) is tuple and len(output) == 2:
                if output[0] == TAG:
                    self.bus.emit(output[1])
                elif output[0] == SAVE:
                    self._dirty.add(output[1])
                    self._wake.set()

    async def _saver(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self.save_now()

    def save_now(self) -> None:
        """Snapshot every image noted since the last save that is idle with no mail (a
        busy one is saved when its turn ends)."""
        dirty, self._dirty = self._dirty, set()
        rt = self.engine
        for image_id in dirty:
            if (
                image_id in rt
                and rt.status(image_id) is AgentStatus.IDLE
                and rt.state(image_id) == "idle"
            ):
                rt.snapshot(image_id, keep=1)

    async def close(self) -> None:
        """Stop every online image (their records go to the store)."""
        for image_id in self.images.ids(online_only=True):
            await self.stop_image(image_id, "close")
