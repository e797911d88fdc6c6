"""The activity service's errors: one branch of the engine's exception tree.

``ActivityError`` is the design's base runtime error. Each other class is also the engine
error it refines, so code written against the engine catches it unchanged: not-found is an
``engine.AgentNotFoundError`` (a ``KeyError``), a failed activity an ``engine.HandlerError``,
an unregistered type an ``engine.UnknownEventError`` (types are the machine's events).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

import trio

from ... import (
    AgentExistsError,
    AgentNotFoundError,
    EngineError,
    HandlerError,
    InvalidArgumentError,
    UnknownEventError,
)
from ...core._exceptions import _text as _text  # the engine's short reprs of hostile input
from ...core._exceptions import brief as brief

if TYPE_CHECKING:
    from ._values import Activity


class ActivityError(EngineError):
    """Raised for every error of the activity service on purpose: the base runtime error of
    the design (its ``AgentRuntimeError``)."""


@final
class ActivityAgentNotFoundError(ActivityError, AgentNotFoundError):
    """Raised when an id names no agent of this service (never created, or terminated)."""

    def __str__(self) -> str:
        return f"no activity agent with id {brief(self.agent_id)}"


@final
class ActivityAgentExistsError(ActivityError, AgentExistsError):
    """Raised by ``create`` when the id is taken (by an agent of any machine)."""


@final
class InvalidActivityError(ActivityError, InvalidArgumentError):
    """Raised when an activity, a handler or a registration is malformed: a field of the
    wrong type, a priority outside 0..3, a COMMAND payload without a command name."""


@final
class UnknownActivityTypeError(ActivityError, UnknownEventError):
    """Raised by ``send`` (nothing is queued) when the activity's type is not registered."""

    def __str__(self) -> str:
        return (
            f"activity type {brief(self.event)} is not registered "
            f"(service machine {self.machine!r})"
        )


@final
class UnknownCommandError(ActivityError, InvalidArgumentError):
    """Raised by ``send`` (nothing is queued) when a COMMAND names no registered handler."""

    def __init__(self, command: object) -> None:
        super().__init__(f"no command handler registered for {brief(command)}")
        self.command = command


@final
class ActivityTimeoutError(ActivityError, trio.TooSlowError, TimeoutError):
    """Raised by ``process`` when the activity was not processed within its ``timeout``.
    The activity stays queued: it may still be processed later (and change the state); it
    is not withdrawn. Also a ``trio.TooSlowError`` (what ``process`` raised before)."""

    def __init__(self, agent_id: Any, activity_id: Any, timeout: float) -> None:
        super().__init__(
            f"activity {brief(activity_id)} of agent {brief(agent_id)} was not processed "
            f"within {timeout} s (it stays queued)"
        )
        self.agent_id = agent_id
        self.activity_id = activity_id
        self.timeout = timeout


@final
class ProcessingError(ActivityError, HandlerError):
    """Raised (and kept as the agent's last error) when processing an activity failed: its
    type's handler, a command handler or the workflow raised or returned something invalid.
    The agent's state is left as it was; the original exception is ``__cause__``."""

    def __init__(self, agent_id: Any, activity: Activity, cause: BaseException) -> None:
        Exception.__init__(
            self,
            f"activity {brief(activity.id)} ({activity.type}) of agent {brief(agent_id)} "
            f"failed: {type(cause).__name__}: {_text(cause)}",
        )
        self.agent_id = agent_id
        self.state = "active"
        self.event = activity.type
        self.activity = activity
        """The activity that failed."""
        self.activity_id = activity.id
        """Its id (the design's ``activityId``)."""
        self.__cause__ = cause
