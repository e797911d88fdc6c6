"""engine-llm: streamed LLM completions as agent events, with record and replay.

``LLM`` is registered under both ``engine.receptors: llm`` and ``engine.effectors: llm``; one
object plays both roles. An agent asks for a completion by emitting the output
``("llm", Request(messages=[Message("user", "hi")]))``; the stream's events come back into
that agent's mailbox, in order, at the request's priority: ``message_start``, ``text_delta``
..., ``tool_call`` ..., ``message_stop``, or one ``llm_error`` (``EVENTS`` lists them, with
``interrupted``, which ``rt.interrupt(agent_id)`` delivers after cancelling the stream).

It speaks the OpenAI-compatible chat-completions streaming API and the Anthropic messages
streaming API (``LLMConfig.api``), over httpx on trio. Failures (timeouts, 429 and 5xx after
retries, malformed chunks, cut streams) become ``llm_error`` events with an ``ErrorReason``.
A ``Cassette`` records streams from a live server to JSON Lines and replays them offline with
their timing on trio's clock, so tests and simulations run deterministically on
``MockClock``. See ``_plugin`` for the design, ``_events`` for the vocabulary, ``_cassette``
for the file format, ``_transports`` for record and replay.
"""

from __future__ import annotations

from ._cassette import CassetteError as CassetteError
from ._cassette import NoRecordingError as NoRecordingError
from ._cassette import load as load_cassette
from ._config import Cassette as Cassette
from ._config import LLMConfig as LLMConfig
from ._config import Retry as Retry
from ._config import Timeouts as Timeouts
from ._decode import AnthropicDecoder as AnthropicDecoder
from ._decode import OpenAIDecoder as OpenAIDecoder
from ._events import EVENTS as EVENTS
from ._events import INTERRUPTED as INTERRUPTED
from ._events import LLM_ERROR as LLM_ERROR
from ._events import MESSAGE_START as MESSAGE_START
from ._events import MESSAGE_STOP as MESSAGE_STOP
from ._events import STOP_REASONS as STOP_REASONS
from ._events import TEXT_DELTA as TEXT_DELTA
from ._events import TOOL_CALL as TOOL_CALL
from ._events import ErrorReason as ErrorReason
from ._events import LLMError as LLMError
from ._events import MessageStart as MessageStart
from ._events import MessageStop as MessageStop
from ._events import TextDelta as TextDelta
from ._events import ToolCall as ToolCall
from ._events import Usage as Usage
from ._plugin import LLM as LLM
from ._plugin import LLMStatistics as LLMStatistics
from ._plugin import PluginWiringError as PluginWiringError
from ._request import Message as Message
from ._request import Request as Request
from ._request import Tool as Tool
from ._sse import EventTooLarge as EventTooLarge
from ._sse import MalformedStream as MalformedStream
from ._sse import SSEDecoder as SSEDecoder
from ._transports import ReplayTransport as ReplayTransport

__all__ = [
    "EVENTS",
    "INTERRUPTED",
    "LLM",
    "LLM_ERROR",
    "MESSAGE_START",
    "MESSAGE_STOP",
    "STOP_REASONS",
    "TEXT_DELTA",
    "TOOL_CALL",
    "AnthropicDecoder",
    "Cassette",
    "CassetteError",
    "ErrorReason",
    "EventTooLarge",
    "LLMConfig",
    "LLMError",
    "LLMStatistics",
    "MalformedStream",
    "Message",
    "MessageStart",
    "MessageStop",
    "NoRecordingError",
    "OpenAIDecoder",
    "PluginWiringError",
    "ReplayTransport",
    "Request",
    "Retry",
    "SSEDecoder",
    "TextDelta",
    "Timeouts",
    "Tool",
    "ToolCall",
    "Usage",
    "load_cassette",
]
