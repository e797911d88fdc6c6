"""What an agent asks for: ``Request``, its ``Message``s and ``Tool``s, and their wire bodies.

Theory of operation: an agent emits the output ``("llm", Request(...))`` (the tag is the
plugin's ``tag``). A request is written once, in a neutral shape, and the plugin turns it
into the body of whichever API it talks to (``body``): system messages become the first
``system`` message (OpenAI-compatible) or the top-level ``system`` field (Anthropic); an
assistant message's ``tool_calls`` become ``tool_calls`` entries or ``tool_use`` blocks; a
``tool`` message (a tool's result) becomes a ``tool`` message or a ``tool_result`` block in a
user message (consecutive results share one). ``extra`` is merged into the body as it is, for
options one API has and the other lacks.

Requests are checked where they enter (``as_request``): a malformed one becomes an
``llm_error`` with reason ``invalid_request`` for the agent that sent it, never an exception
in the drain loop. A plain mapping with the same fields is accepted too (an agent whose state
is plain data).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Literal, final

import attrs

from ._events import ToolCall

ROLES = ("system", "user", "assistant", "tool")


@final
@attrs.frozen
class Tool:
    """A tool the model may call."""

    name: str = attrs.field(validator=attrs.validators.min_len(1))
    description: str = ""
    parameters: Mapping[str, Any] = attrs.field(
        factory=lambda: {"type": "object", "properties": {}}, hash=False
    )
    """A JSON Schema of the arguments (not hashed: requests can be table outputs)."""


@final
@attrs.frozen
class Message:
    """One message of the conversation, in a shape both APIs are made from."""

    role: Literal["system", "user", "assistant", "tool"] = attrs.field(
        validator=attrs.validators.in_(ROLES)
    )
    content: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=tuple)
    """An assistant message's tool calls (``MessageStop.tool_calls``)."""
    tool_call_id: str | None = None
    """A ``tool`` message answers this call."""


def _messages(value: Any) -> tuple[Message, ...]:
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise TypeError(f"messages must be a sequence of messages, not {type(value).__name__}")
    out = []
    for item in value:
        if isinstance(item, Mapping):
            item = Message(**item)
        elif not isinstance(item, Message):
            raise TypeError(f"a message must be a Message or a mapping, not {type(item).__name__}")
        out.append(item)
    return tuple(out)


def _priority(instance: Any, attribute: Any, value: Any) -> None:
    if type(value) is not int or not 0 <= value <= 3:
        raise ValueError(f"priority must be an integer 0..3, not {value!r}")


@final
@attrs.frozen
class Request:
    """A streamed completion, as an agent asks for it (``("llm", Request(...))``)."""

    messages: tuple[Message, ...] = attrs.field(converter=_messages)
    """The conversation so far (``Message`` objects or mappings of their fields)."""
    model: str | None = None
    """None: the plugin's ``model``."""
    tools: tuple[Tool, ...] = attrs.field(default=(), converter=tuple)
    max_tokens: int | None = None
    """None: the plugin's ``max_tokens``."""
    temperature: float | None = None
    priority: int = attrs.field(default=1, validator=_priority)
    """The mailbox lane (0 LOW .. 3 CRITICAL) the stream's events are delivered at."""
    id: str | None = None
    """Names the request in every event of its stream; None: ``"<agent id>:<n>"``, ``n``
    counting the plugin's requests from 1."""
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    """Merged into the body as it is (API-specific options). Not hashed: a request can be
    one of a machine's table outputs (which the engine interns)."""

    def __attrs_post_init__(self) -> None:
        for tool in self.tools:
            if not isinstance(tool, Tool):
                raise TypeError(f"a tool must be a Tool, not {type(tool).__name__}")
        if self.max_tokens is not None and (
            type(self.max_tokens) is not int or self.max_tokens < 1
        ):
            raise ValueError(f"max_tokens must be a positive integer, not {self.max_tokens!r}")


class InvalidRequest(Exception):
    """An agent's output that is not a request (becomes ``llm_error``/``invalid_request``)."""


def as_request(value: Any) -> Request:
    """``value`` as a ``Request``, checked: what the constructor lets through and no body
    could carry (a ``temperature`` that is not a finite number, a ``model`` or ``id`` that
    is not a string, ``extra``, tool parameters or tool-call arguments that are not JSON).

    Raises:
        InvalidRequest: It is neither a ``Request`` nor a mapping that makes one, or it
            could not be sent.
    """
    if isinstance(value, Request):
        request = value
    elif isinstance(value, Mapping):
        try:
            request = Request(**value)
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"not a valid request: {exc}") from None
    else:
        raise InvalidRequest(
            f"a request must be a Request or a mapping, not {type(value).__name__}"
        )
    _check(request)
    return request


def _check(request: Request) -> None:
    t = request.temperature
    if t is not None and (type(t) not in (int, float) or not math.isfinite(t)):
        raise InvalidRequest(f"not a valid request: temperature must be a finite number, not {t!r}")
    for name in ("model", "id"):
        v = getattr(request, name)
        if v is not None and type(v) is not str:
            raise InvalidRequest(
                f"not a valid request: {name} must be a string, not {type(v).__name__}"
            )
    if not isinstance(request.extra, Mapping):
        raise InvalidRequest("not a valid request: extra must be a mapping")
    _json(dict(request.extra), "extra")
    for tool in request.tools:
        _json(dict(tool.parameters), f"the parameters of tool {tool.name!r}")
    for message in request.messages:
        for call in message.tool_calls:
            if not isinstance(call, ToolCall):
                raise InvalidRequest("not a valid request: a tool call must be a ToolCall")
            _json(call.arguments, f"the arguments of tool call {call.id!r}")


def _json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidRequest(f"not a valid request: {what} is not JSON ({exc})") from None


def body(api: str, request: Request, model: str, max_tokens: int) -> dict[str, Any]:
    """The JSON body of ``request`` for ``api`` ("openai" or "anthropic"), streaming."""
    if api == "anthropic":
        out = _anthropic(request)
    else:
        out = _openai(request)
        out["stream_options"] = {"include_usage": True}
    out["model"] = request.model or model
    out["max_tokens"] = request.max_tokens or max_tokens
    out["stream"] = True
    if request.temperature is not None:
        out["temperature"] = request.temperature
    out.update(request.extra)
    return out


def _openai(request: Request) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for m in request.messages:
        entry: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            entry["content"] = m.content or None
            entry["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in m.tool_calls
            ]
        if m.role == "tool":
            entry["tool_call_id"] = m.tool_call_id
        messages.append(entry)
    out: dict[str, Any] = {"messages": messages}
    if request.tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": dict(t.parameters),
                },
            }
            for t in request.tools
        ]
    return out


def _anthropic(request: Request) -> dict[str, Any]:
    system = [m.content for m in request.messages if m.role == "system"]
    messages: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "user" and isinstance(last["content"], list):
                last["content"].append(block)
            else:
                messages.append({"role": "user", "content": [block]})
        elif m.tool_calls:
            blocks: list[dict[str, Any]] = (
                [{"type": "text", "text": m.content}] if m.content else []
            )
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in m.tool_calls
            ]
            messages.append({"role": "assistant", "content": blocks})
        else:
            messages.append({"role": m.role, "content": m.content})
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = "\n\n".join(system)
    if request.tools:
        out["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
            for t in request.tools
        ]
    return out


def describe(request: Request) -> str:
    """A short description naming a request in error messages: its id, model and the start
    of its last message."""
    last = request.messages[-1].content if request.messages else ""
    last = last if len(last) <= 60 else last[:60] + "..."
    return f"request {request.id!r} (model {request.model!r}, last message {last!r})"
