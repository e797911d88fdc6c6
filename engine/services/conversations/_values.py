"""The values of the conversation layer: commands, events, responses, records and errors.

Every name an older container/image/agent runtime's users wrote against has one here: the
commands of ``request`` (``container_create`` ... ``agent_destroy_all``), the event types of
the bus (lifecycle, messages, and the LLM plugin's stream events), the response record with
its correlation id, and the typed errors, each a subclass in the engine's exception tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

import attrs

import engine

COMMANDS = (
    "container_create",
    "container_get",
    "container_list",
    "image_create",
    "image_run",
    "image_stop",
    "image_update",
    "image_list",
    "image_get",
    "image_delete",
    "image_messages",
    "message_send",
    "agent_interrupt",
    "agent_get",
    "agent_list",
    "agent_destroy",
    "agent_destroy_all",
)
"""Every command ``ConversationRuntime.request`` answers."""

LIFECYCLE_EVENTS = (
    "container_created",
    "image_created",
    "session_created",
    "image_updated",
    "image_deleted",
    "session_destroyed",
    "agent_registered",
    "agent_unregistered",
)
"""Bus events the layer emits as containers, images, sessions and agents come and go."""

MESSAGE_EVENTS = ("user_message", "assistant_message")
"""Bus events for messages added to an image's history (the assistant's at ``message_stop``)."""

STREAM_EVENTS = (
    "message_start",
    "text_delta",
    "tool_call",
    "message_stop",
    "llm_error",
    "interrupted",
)
"""Bus events of an agent's LLM stream, in the LLM plugin's names; ``data`` is the plugin's
payload (``event.data.text`` of a ``text_delta``), ``None`` for ``interrupted``."""

EVENT_TYPES = LIFECYCLE_EVENTS + MESSAGE_EVENTS + STREAM_EVENTS
"""Every event type the bus carries."""

MAX_TEXT = 1 << 20
"""The longest text (characters) a command accepts: ids, names, prompts, message content."""

MAX_WAITING = 64
"""The most messages an image holds for its next turns (mid-turn); ``message_send`` past it
is refused with ``engine.AgentBusyError``."""


@final
@attrs.frozen
class EventContext:
    """Where an event belongs: the scope fields of the older design's event context."""

    container_id: str | None = None
    image_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    correlation_id: str | None = None
    """The ``request_id`` of the command that caused it (a stream: its ``message_send``)."""


@final
@attrs.frozen
class ConversationEvent:
    """One event on the bus."""

    type: str
    """One of ``EVENT_TYPES``."""
    data: Any
    """Lifecycle and message events: a mapping; stream events: the LLM plugin's payload."""
    context: EventContext
    timestamp: float
    """The runtime's clock (trio's under ``open_conversations``) when it was made."""


@final
@attrs.frozen
class ImageRecord:
    """An image: a persistent conversation's definition (its history is read apart, with
    ``image_messages``), and whether an agent runs it now."""

    image_id: str
    container_id: str
    session_id: str
    name: str
    description: str
    system_prompt: str
    created_at: float
    updated_at: float
    messages: int
    """How many messages its history holds."""
    online: bool
    """An agent runs it (it is resident); offline, it is kept in the store only."""
    agent_id: str | None
    """The running agent's id, or None offline."""


@final
@attrs.frozen
class Response:
    """The answer to one ``request``: its data, or the typed error that stopped it."""

    command: str
    request_id: str
    """The correlation id: the caller's, or ``"req-<n>"``."""
    data: Mapping[str, Any] = attrs.field(factory=dict)
    error: engine.EngineError | None = None

    @property
    def type(self) -> str:
        """The older design's response type, ``"<command>_response"``."""
        return f"{self.command}_response"

    @property
    def ok(self) -> bool:
        """No error."""
        return self.error is None

    def unwrap(self) -> Mapping[str, Any]:
        """The data, or raise the error.

        Raises:
            EngineError: This response's error.
        """
        if self.error is not None:
            raise self.error
        return self.data


@final
@attrs.frozen
class HandlerFailure:
    """A bus handler that raised: kept, never re-raised into the runtime."""

    event: ConversationEvent
    handler: str
    """The handler's repr."""
    error: BaseException


@final
@attrs.frozen
class SaveFailure:
    """A snapshot of an image that the background saver could not write: kept, counted and
    retried at the next save, never raised into the runtime."""

    image_id: str
    error: BaseException
    timestamp: float


class UnknownCommandError(engine.EngineError, KeyError):
    """Raised (in a response) when ``request`` is given a command the layer lacks."""

    def __init__(self, command: object) -> None:
        super().__init__(command)
        self.command = command

    def __str__(self) -> str:
        return f"no command {_brief(self.command)}; commands: {', '.join(COMMANDS)}"


class ImageNotFoundError(engine.AgentNotFoundError):
    """Raised (in a response) when an image id names no image."""

    def __str__(self) -> str:
        return f"no image with id {_brief(self.agent_id)}"


class RequestTimeoutError(engine.EngineError, TimeoutError):
    """Raised (in a response) when a command took longer than its timeout."""

    def __init__(self, command: str, request_id: str, timeout: float) -> None:
        super().__init__(f"{command} ({request_id}) took longer than {timeout} s")
        self.command = command
        self.request_id = request_id
        self.timeout = timeout


def _brief(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."
