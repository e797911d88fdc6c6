"""Containers, images (persistent conversations) and agents, driven by a command API with
correlation ids and watched through an event bus: the older container/image/agent runtime's
API over the engine.

Theory of operation: a container is a tenant of the engine runtime (plus a reserved record
in the store, so a reopened store has its tenants before its agents come back). An image is
an engine agent of one machine, ``conversation`` (``idle -> waiting -> streaming``), whose id
is the image id and whose data is the image: its definition (name, description, system
prompt), its session id and its message history. Running an image keeps that agent resident
(the image's n-th agent is ``<image id>#<n>``); stopping it hibernates it into the store, so a
conversation has exactly one home at a time and survives the agent. A user message makes the
agent emit ``("llm", request)`` for the LLM plugin (``engine-llm``, a separate distribution,
never imported here: the request is a plain mapping and the stream's payloads are read by
attribute), whose stream events come back into the agent's mailbox and out again as bus
events; at ``message_stop`` the assistant's text joins the history and the image is written
to the store. ``request`` answers every command with a ``Response`` (data, or a typed
``EngineError``); the bus calls plain handlers and keeps, never re-raises, their errors.
Stores: ``engine.store.MemoryStore``, ``SQLiteStore``, ``PostgresStore``.

- ``_values``: commands, event types, ``Response``, ``ConversationEvent``, records, errors.
- ``_bus``: ``EventBus`` (``on``, ``on_any``, unsubscribe, handler failures).
- ``_machine``: the conversation machine and the image's data.
- ``_images``: reading images and containers out of the runtime and the store.
- ``_commands``: one function per command, with the checks of its data.
- ``_checks``: the checks of commands' data.
- ``_runtime``: ``ConversationRuntime``.
- ``_open``: ``open_conversations``.
"""

from __future__ import annotations

from ._bus import BusStatistics as BusStatistics
from ._bus import EventBus as EventBus
from ._machine import CONVERSATION as CONVERSATION
from ._open import open_conversations as open_conversations
from ._runtime import ConversationRuntime as ConversationRuntime
from ._values import COMMANDS as COMMANDS
from ._values import EVENT_TYPES as EVENT_TYPES
from ._values import LIFECYCLE_EVENTS as LIFECYCLE_EVENTS
from ._values import MAX_TEXT as MAX_TEXT
from ._values import MAX_WAITING as MAX_WAITING
from ._values import MESSAGE_EVENTS as MESSAGE_EVENTS
from ._values import STREAM_EVENTS as STREAM_EVENTS
from ._values import ConversationEvent as ConversationEvent
from ._values import EventContext as EventContext
from ._values import HandlerFailure as HandlerFailure
from ._values import ImageNotFoundError as ImageNotFoundError
from ._values import ImageRecord as ImageRecord
from ._values import RequestTimeoutError as RequestTimeoutError
from ._values import Response as Response
from ._values import SaveFailure as SaveFailure
from ._values import UnknownCommandError as UnknownCommandError

__all__ = [
    "COMMANDS",
    "CONVERSATION",
    "EVENT_TYPES",
    "LIFECYCLE_EVENTS",
    "MAX_TEXT",
    "MAX_WAITING",
    "MESSAGE_EVENTS",
    "STREAM_EVENTS",
    "BusStatistics",
    "ConversationEvent",
    "ConversationRuntime",
    "EventBus",
    "EventContext",
    "HandlerFailure",
    "ImageNotFoundError",
    "ImageRecord",
    "RequestTimeoutError",
    "Response",
    "SaveFailure",
    "UnknownCommandError",
    "open_conversations",
]
