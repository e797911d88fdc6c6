"""``ConversationRuntime``: the command API and the bus over one engine runtime under trio.

Theory of operation: ``request(command, data)`` gives each call a correlation id, runs the
command under its timeout and answers with a ``Response``: its data, or the typed
``EngineError`` that stopped it (``request`` returns errors, it does not raise them;
``Response.unwrap()`` raises). The runtime's effector (``deliver``, called in the drain loop
once per batch) hands bus events to the ``EventBus`` and notes the images whose turn ended;
a task writes a snapshot of each of them (``save_now``), never inside the drain loop, and
only when the image is idle with no mail (a busy one is saved when its next turn ends); an
error there never reaches the runtime: it is kept (``save_failures()``, ``saves_failed``)
and the image is saved again at the next save. Outputs of the layer's shape that no image
made are refused and kept (``rejected()``), never raised in the drain loop. One call at a
time runs an image (others wait and find it running); a stop that its timeout cuts short is
undone (the image goes on running; a turn it had interrupted stays ended).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, final

import trio

import engine
import engine.store
from engine import AgentStatus, Priority

from ._bus import BusStatistics, EventBus, Handler, Unsubscribe
from ._checks import check_timeout, deadline
from ._commands import COMMAND_TABLE
from ._images import Images, forget_image, is_image_id
from ._machine import SAVE, TAG, WITHDRAWN, agent_id_of
from ._values import (
    ConversationEvent,
    EventContext,
    HandlerFailure,
    RequestTimeoutError,
    Response,
    SaveFailure,
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
        self._starting: dict[str, trio.Event] = {}
        self._wake = trio.Event()
        self._save_failures: deque[SaveFailure] = deque(maxlen=1000)
        self.saves_failed = 0
        """Snapshots the saver could not write (each kept in ``save_failures()``, the last
        1000, and retried at the next save)."""
        self._rejected: deque[tuple[Any, Any]] = deque(maxlen=1000)
        self.outputs_rejected = 0
        """Outputs of the layer's shape refused (kept in ``rejected()``, the last 1000)."""

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

    def save_failures(self) -> list[SaveFailure]:
        """The last 1000 snapshots the background saver failed to write (each is retried)."""
        return list(self._save_failures)

    def rejected(self) -> list[tuple[Any, Any]]:
        """The last 1000 ``(agent id, output)`` of the layer's shape (``("conversations",
        ...)``) that no image made, or that were malformed: refused, never delivered."""
        return list(self._rejected)

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
        One call at a time starts an image: the others wait and then find it running.

        Raises:
            AgentStoppedError: The image is being stopped now.
        """
        while True:
            if image_id in self._stopping:
                raise engine.AgentStoppedError(image_id, "is being stopped")
            starting = self._starting.get(image_id)
            if starting is None:
                break
            await starting.wait()
        if self.images.online(image_id):
            return agent_id_of(image_id, self.images.data(image_id)["run"]), True
        rt = self.engine
        self._starting[image_id] = done = trio.Event()
        try:
            if not self.images.resident(image_id):
                rt.wake(image_id)
            run = await rt.request(image_id, "run", deadline(), priority=Priority.CRITICAL)
        finally:
            del self._starting[image_id]
            done.set()
        if run == WITHDRAWN:  # (only after the deadline, which cancels this call first)
            raise engine.AgentStoppedError(image_id, "was not run in time")
        context = self.scope(image_id, rid)
        self.emit(
            "agent_registered", {"agent_id": context["agent_id"], "image_id": image_id}, **context
        )
        return agent_id_of(image_id, run), False

    def interrupt_turn(self, image_id: str) -> None:
        """Cancel the image's stream and end its current turn (that turn only: the event
        names the turn's request, so arriving late it ends nothing)."""
        rt = self.engine
        request = rt.data(image_id).get("llm_request")
        rt.interrupt(image_id, "interrupt_turn")  # its own copy (no request) is ignored
        rt.send_nowait(image_id, "interrupt_turn", request, Priority.CRITICAL)

    async def stop_image(self, image_id: str, rid: str) -> bool:
        """Stop the image's agent: end its turn, refuse what it had not taken, hibernate it.
        False if it was not running (another call stopping it: this one waits, then sees).
        Cut short (its timeout, a cancel), it is undone: the image goes on running."""
        while True:
            waiting = self._stopping.get(image_id)
            if waiting is None:
                waiting = self._starting.get(image_id)
            if waiting is None:
                break
            await waiting.wait()
        if not self.images.resident(image_id):
            return False
        running = self.images.online(image_id)
        self._stopping[image_id] = done = trio.Event()
        try:
            await self._stop(image_id, rid, running)
        finally:
            del self._stopping[image_id]
            done.set()
        return running

    async def _stop(self, image_id: str, rid: str, running: bool) -> None:
        context = self.scope(image_id, rid)
        rt = self.engine
        before = rt.data(image_id)["stopping"]
        try:
            if await rt.request(image_id, "stop", priority=Priority.CRITICAL) != "idle":
                self.interrupt_turn(image_id)
            while True:  # mail that arrived meanwhile is refused (STOPPED) as it is taken
                await rt.request(image_id, "settle", priority=Priority.LOW)
                try:
                    rt.hibernate(image_id)
                    break
                except engine.AgentBusyError:
                    continue
        except BaseException:
            if image_id in rt and self.images.resident(image_id):
                # queued after "stop" (same lane): taken after it, whenever that is
                with contextlib.suppress(engine.EngineError):
                    rt.send_nowait(image_id, "unstop", before, Priority.CRITICAL)
            raise
        if running:
            self.emit(
                "agent_unregistered",
                {"agent_id": context["agent_id"], "image_id": image_id},
                **context,
            )

    def rest(self, image_id: str) -> None:
        """Hibernate an image woken by a command (not run): best effort, never raises. One
        that cannot go now (mail queued) stays resident, offline, until it runs or stops."""
        if (
            image_id in self._starting
            or image_id in self._stopping
            or image_id not in self.engine
            or not self.images.resident(image_id)
            or self.images.online(image_id)
        ):
            return
        with contextlib.suppress(engine.EngineError):
            self.engine.hibernate(image_id)

    async def delete_image(self, image_id: str, rid: str) -> None:
        """Stop the image, write its tombstone, then forget it (a failed write changes
        nothing: the image stays, offline)."""
        await self.stop_image(image_id, rid)
        context = self.scope(image_id, rid)
        rt = self.engine
        rt.wake(image_id)  # (its record is read before the tombstone covers it)
        try:
            forget_image(self.store, image_id)
        except BaseException:
            self.rest(image_id)
            raise
        rt.terminate(image_id)
        self.emit("image_deleted", {"image_id": image_id}, **context)
        self.emit(
            "session_destroyed",
            {"session_id": context["session_id"], "image_id": image_id},
            **context,
        )

    # -- the effector and the saver ----------------------------------------------------

    def deliver(self, batch: Iterable[tuple[Any, Any]]) -> None:
        """Effector: bus events to the bus, saves noted for the saver (in the drain loop).
        Outputs tagged as the layer's that an image did not make, or that are malformed,
        are refused (``rejected()``); nothing here raises."""
        for agent_id, output in batch:
            if type(output) is not tuple or len(output) != 2:
                continue
            tag, value = output
            if type(tag) is not str or (tag != TAG and tag != SAVE):
                continue
            try:
                if not is_image_id(agent_id):
                    raise ValueError("not an image")
                if tag == TAG and type(value) is ConversationEvent:
                    self.bus.emit(value)
                elif tag == SAVE and value == agent_id:
                    self._dirty.add(agent_id)
                    self._wake.set()
                else:
                    raise ValueError("malformed")
            except Exception:
                self.outputs_rejected += 1
                self._rejected.append((agent_id, output))

    async def _saver(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self.save_now()

    def save_now(self) -> None:
        """Snapshot every image noted since the last save that is idle with no mail (a
        busy one is saved when its turn ends). A failed write is kept and counted
        (``save_failures()``), and the image is noted again: never raises."""
        dirty, self._dirty = self._dirty, set()
        rt = self.engine
        for image_id in dirty:
            try:
                if (
                    image_id in rt
                    and rt.status(image_id) is AgentStatus.IDLE
                    and rt.state(image_id) == "idle"
                ):
                    rt.snapshot(image_id, keep=1)
            except Exception as exc:
                self.saves_failed += 1
                self._save_failures.append(SaveFailure(image_id, exc, time.time()))
                self._dirty.add(image_id)

    async def close(self) -> engine.EngineError | None:
        """Stop every resident image (their records go to the store); one that fails (its
        record cannot be written) is kept in ``save_failures()`` and the others still stop.
        Returns the first such error."""
        first: engine.EngineError | None = None
        for image_id in self.images.ids(resident_only=True):
            try:
                await self.stop_image(image_id, "close")
            except engine.EngineError as exc:
                self.saves_failed += 1
                self._save_failures.append(SaveFailure(image_id, exc, time.time()))
                first = exc if first is None else first
        return first
