"""The per-agent pieces: the service's note on each agent, and the handle ``create`` returns.

``Entry`` is all the service keeps per agent beside the engine: the agent's ``AgentRef``
(stale once the agent is gone or moved, so a send can never reach another agent that took
the same id), its workflow, and when it last entered each status.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from ... import AgentRef, AgentStatus, HandlerError
from ._errors import InvalidActivityError, ProcessingError, brief
from ._values import Activity, ActivityAgentState

if TYPE_CHECKING:
    from ._service import ActivityService
    from ._stream import ActivityStream

Workflow = Callable[[Any, Activity], Any]
"""``(state, activity) -> new_state``: runs after the activity's type has been applied."""
_FIELDS = frozenset(("id", "type", "payload", "priority"))


@attrs.define(eq=False)
class Entry:
    """What the service keeps per agent beside the engine: its workflow, status times."""

    ref: AgentRef
    """The engine agent (stale once it went away or was moved: ``ActivityService._entry``)."""
    workflow: Workflow | None
    ended: bool = False
    """Terminated by the service (or the service closed): its waiters give up."""
    waiters: set[trio.CancelScope] = attrs.field(factory=set)
    """Scopes of blocked sends and subscription reads: cancelled when it ends, to look."""
    idle: float | None = None
    processing: float | None = None
    error: float | None = None

    def end(self) -> None:
        self.ended = True
        for scope in self.waiters:
            scope.cancel()

    async def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the agent ends meanwhile."""
        with trio.CancelScope(deadline=trio.current_time() + seconds) as scope:
            self.waiters.add(scope)
            try:
                await trio.sleep_forever()
            finally:
                self.waiters.discard(scope)

    def note(self, status: AgentStatus, since: float) -> None:
        if status is AgentStatus.IDLE:
            self.idle = since
        elif status is AgentStatus.PROCESSING:
            self.processing = since
        elif status is AgentStatus.ERROR:
            self.error = since


def check_callable(what: str, value: Any, optional: bool = False) -> None:
    if not callable(value) and not (optional and value is None):
        raise InvalidActivityError(f"{what} must be callable, got {brief(value)}")


def as_activity(value: Any) -> Activity:
    """An ``Activity``, or a mapping with its fields (as the design's object literals)."""
    if type(value) is Activity:
        return value
    if isinstance(value, Mapping) and value.keys() <= _FIELDS and "id" in value and "type" in value:
        return Activity(**value)
    raise InvalidActivityError(
        f"an activity must be an Activity or a mapping of id, type, payload, priority; "
        f"got {brief(value)}"
    )


def unwrap(error: BaseException | None) -> BaseException | None:
    """The ``ProcessingError`` inside the engine's ``HandlerError`` (or ``error`` itself)."""
    if isinstance(error, HandlerError) and isinstance(error.__cause__, ProcessingError):
        return error.__cause__
    return error


def hashable(value: Any) -> bool:
    try:
        hash(value)
    except Exception:
        return False
    return True


@final
@attrs.frozen
class ActivityAgent:
    """The handle ``create`` returns (the design's runtime handle): the service's calls,
    bound to one agent id."""

    service: ActivityService
    id: Any

    async def send(self, activity: Activity | Mapping[str, Any]) -> None:
        """``service.send(id, activity)``."""
        await self.service.send(self.id, activity)

    def send_nowait(self, activity: Activity | Mapping[str, Any]) -> None:
        """``service.send_nowait(id, activity)``."""
        self.service.send_nowait(self.id, activity)

    async def process(
        self, activity: Activity | Mapping[str, Any], *, timeout: float | None = None
    ) -> tuple[Any, ...]:
        """``service.process(id, activity)``."""
        return await self.service.process(self.id, activity, timeout=timeout)

    async def get_state(self) -> ActivityAgentState:
        """``service.get_state(id)``."""
        return await self.service.get_state(self.id)

    def subscribe(
        self, from_seq: int | None = None
    ) -> contextlib.AbstractAsyncContextManager[ActivityStream]:
        """``service.subscribe(id)``: an async context manager of an ``ActivityStream``."""
        return self.service.subscribe(self.id, from_seq)

    async def terminate(self) -> int:
        """``service.terminate(id)``."""
        return await self.service.terminate(self.id)
