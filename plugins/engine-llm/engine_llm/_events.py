"""The event vocabulary: what a streamed completion becomes in an agent's mailbox.

Theory of operation: both wire formats (OpenAI-compatible chat completions and Anthropic
messages) are decoded into the same five events, named by the constants below, each carrying
a frozen attrs payload that names the request it belongs to (``request_id``), so an agent can
tell a late event of an interrupted turn from one of the turn it is in. One stream delivers,
in order: ``message_start``, any number of ``text_delta``, the ``tool_call``s (each complete,
its arguments parsed), then ``message_stop``; or, at any point, one ``llm_error`` that ends
it. ``interrupted`` is the runtime's own event (``Runtime.interrupt``), listed here because a
machine that streams must handle it.
"""

from __future__ import annotations

import enum
from typing import Any, final

import attrs

MESSAGE_START = "message_start"
TEXT_DELTA = "text_delta"
TOOL_CALL = "tool_call"
MESSAGE_STOP = "message_stop"
LLM_ERROR = "llm_error"
INTERRUPTED = "interrupted"

EVENTS = (MESSAGE_START, TEXT_DELTA, TOOL_CALL, MESSAGE_STOP, LLM_ERROR, INTERRUPTED)
"""Every event a streaming agent's machine should know (``Machine(..., events=[*EVENTS])``)."""


@final
@attrs.frozen
class MessageStart:
    """The server accepted the request and began its answer."""

    request_id: str
    """The request's ``id``."""
    model: str | None
    """The model the server says answers (None if it does not say)."""
    message_id: str | None
    """The server's id of the message (None if it gives none)."""


@final
@attrs.frozen
class TextDelta:
    """A piece of the answer's text, in order."""

    request_id: str
    text: str
    """The piece (never empty)."""
    index: int
    """Its position among the message's text deltas, from 0."""


@final
@attrs.frozen
class ToolCall:
    """The model asks for a tool, complete (its streamed arguments joined and parsed)."""

    request_id: str
    id: str
    """The call's id, to answer it with a ``Message("tool", ..., tool_call_id=id)``."""
    name: str
    arguments: Any = attrs.field(hash=False)
    """The arguments, parsed from JSON (an object, usually a dict; ``{}`` when empty). Left
    out of the hash (a dict has none), so a call can sit in a machine's table outputs."""


@final
@attrs.frozen
class Usage:
    """Token counts, as the server reports them (None where it does not)."""

    input_tokens: int | None = None
    output_tokens: int | None = None


STOP_REASONS = frozenset(
    {"end_turn", "max_tokens", "tool_use", "stop_sequence", "content_filter", "refusal", "other"}
)
"""The normalised stop reasons of ``MessageStop.stop_reason``."""

_STOP = {
    # OpenAI-compatible finish_reason
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
    # Anthropic stop_reason
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "tool_use": "tool_use",
    "stop_sequence": "stop_sequence",
    "refusal": "refusal",
}


def stop_reason(raw: str | None) -> str:
    """One of ``STOP_REASONS`` for a server's finish or stop reason."""
    if raw is None:
        return "end_turn"
    return _STOP.get(raw, "other")


@final
@attrs.frozen
class MessageStop:
    """The message is complete: the last event of a stream that succeeded."""

    request_id: str
    stop_reason: str
    """Why it stopped, normalised: one of ``STOP_REASONS``."""
    raw_stop_reason: str | None
    """The reason as the server said it (``"stop"``, ``"end_turn"``, ...)."""
    usage: Usage
    text: str
    """The whole text of the message (the ``text_delta``s joined)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The tool calls, as delivered before this event, in order."""


@final
class ErrorReason(enum.StrEnum):
    """Why a stream failed (``LLMError.reason``)."""

    CONNECT_TIMEOUT = "connect_timeout"
    """No connection within ``timeouts.connect`` seconds (after the retries)."""
    CONNECT_ERROR = "connect_error"
    """The connection was refused or failed (after the retries)."""
    FIRST_TOKEN_TIMEOUT = "first_token_timeout"
    """Nothing streamed within ``timeouts.first_token`` seconds of the request."""
    IDLE_TIMEOUT = "idle_timeout"
    """Nothing streamed for ``timeouts.between_tokens`` seconds in the middle of a message
    (keep-alives are not something)."""
    TOTAL_TIMEOUT = "total_timeout"
    """The completion took more than ``timeouts.total`` seconds, retries included."""
    RATE_LIMITED = "rate_limited"
    """HTTP 429 on every attempt, or a ``Retry-After`` longer than ``retry.max_retry_after``."""
    SERVER_ERROR = "server_error"
    """HTTP 5xx on every attempt."""
    HTTP_ERROR = "http_error"
    """Another status that is not 200 (400, 401, 404, ...): not retried."""
    MALFORMED_CHUNK = "malformed_chunk"
    """A streamed event that is not JSON, or not the shape of its format, or out of order,
    or a message with more than 128 tool calls."""
    STREAM_CUT = "stream_cut"
    """The stream ended (or the connection broke) before the message was complete."""
    API_ERROR = "api_error"
    """The server sent an error event inside the stream (overloaded, ...)."""
    TOO_LARGE = "too_large"
    """One streamed event (or an error body) was over ``max_event`` bytes, or the message's
    text and tool-call arguments over ``max_message`` characters."""
    REFUSED = "refused"
    """The agent's mailbox refused an event (its tenant at ``max_queued`` with overflow
    ``reject``): the stream stops there rather than drop it; this ``llm_error`` waits for
    room."""
    INVALID_REQUEST = "invalid_request"
    """The agent's output was not a valid request."""
    NO_RECORDING = "no_recording"
    """Replaying a cassette that holds no recording of this request."""
    INTERNAL = "internal"
    """A defect of the plugin: reported here rather than lost (please file it)."""


@final
@attrs.frozen
class LLMError:
    """The stream failed; it is over (no ``message_stop`` follows)."""

    request_id: str
    reason: ErrorReason
    message: str
    """What happened, for people (never the API key)."""
    status: int | None = None
    """The HTTP status, when there was one."""
    attempts: int = 1
    """Requests made for this completion, retries included."""
