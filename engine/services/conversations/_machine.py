"""The conversation machine: one engine agent per image, ``idle -> waiting -> streaming``.

Theory of operation: an image is an engine agent whose id is the image id and whose data is
the image (container, session, name, description, system prompt, message history, run
count); running it keeps it resident, stopping it hibernates it into the store, so the
conversation has exactly one home at a time. A user message (``user``) appends to the history
and asks for a completion by emitting the output ``("llm", request)`` as a plain mapping (the
LLM plugin accepts one; the engine never imports the plugin); the plugin's stream events come
back into this agent's mailbox. ``message_start`` moves to ``streaming``, each ``text_delta``
becomes a bus event, ``message_stop`` appends the assistant's final text and goes back to
``idle``; ``llm_error`` and ``interrupted`` end the turn too. Each turn's request has the
id ``<image id>:<n>`` (``llm_request`` in the data); a stream event whose ``request_id``
differs (a leftover of an interrupted turn) is ignored, and the layer interrupts a turn with
``interrupt_turn`` naming that id, so a late interrupt never ends a newer turn (a bare
``interrupted``, from ``rt.interrupt`` called directly, ends whatever turn is current). A
user message that arrives mid-turn is postponed (the engine retries it once the turn ends);
``run``, ``update`` and ``user`` carry their command's deadline (trio's clock, None: none)
and are dropped unanswered once it has passed, so a command that timed out is withdrawn,
never done later (the handler reads trio's clock; a replay outside trio takes them all).
Bus events leave as ``(TAG, ConversationEvent)`` outputs and a request to save the image as
``(SAVE, image_id)``; the runtime's effector turns them into handler calls and snapshots,
outside the handlers.
Payloads of the plugin are read by attribute (``.text``, ``.stop_reason``), never imported.
"""

from __future__ import annotations

import time
from typing import Any

import trio

import engine
from engine import AgentContext, Event, Postpone, Reply, Step

from ._values import ConversationEvent, EventContext

TAG = "conversations"
"""The first item of the outputs that carry bus events."""
SAVE = "conversations:save"
"""The first item of the outputs that ask for the image to be written to the store."""
STOPPED = "conversations:stopped"
"""The reply to a user message that reached an image being stopped."""
WITHDRAWN = "conversations:withdrawn"
"""The reply (to nobody: its command timed out) to a message taken after its deadline."""

LLM_EVENTS = (
    "message_start",
    "text_delta",
    "tool_call",
    "message_stop",
    "llm_error",
    "interrupted",
)
"""The LLM plugin's events (``engine_llm.EVENTS``), named here: the engine never imports it."""


def expired(deadline: Any) -> bool:
    """True once trio's clock has reached a command's ``deadline`` (None: never)."""
    if deadline is None:
        return False
    try:
        return bool(trio.current_time() >= deadline)
    except RuntimeError:  # run outside trio (a replay): taken, as nearly all were
        return False


def agent_id_of(image_id: str, run: int) -> str:
    """The id of an image's ``run``-th agent."""
    return f"{image_id}#{run}"


def context(agent: AgentContext) -> EventContext:
    """The bus context of an event of this image's current turn."""
    data = agent.data
    return EventContext(
        data["container"],
        agent.agent_id,
        agent_id_of(agent.agent_id, data["run"]),
        data["session"],
        data["turn"],
    )


def _event(agent: AgentContext, kind: str, payload: Any) -> tuple[str, ConversationEvent]:
    return (TAG, ConversationEvent(kind, payload, context(agent), time.time()))


def llm_request(data: dict[str, Any]) -> dict[str, Any]:
    """The completion request for an image's history, as the mapping the plugin accepts."""
    messages = [{"role": m["role"], "content": m["content"]} for m in data["messages"]]
    if data["system_prompt"]:
        messages.insert(0, {"role": "system", "content": data["system_prompt"]})
    return {"messages": messages, "id": data["llm_request"]}


def _message(data: dict[str, Any], role: str, content: str) -> dict[str, Any]:
    message = {
        "id": f"{data['session']}:{len(data['messages']) + 1}",
        "role": role,
        "content": content,
        "timestamp": time.time(),
    }
    data["messages"].append(message)
    data["updated_at"] = message["timestamp"]
    return message


def build() -> engine.Machine:
    """The machine every image agent runs."""
    m = engine.Machine(
        "conversation",
        ["idle", "waiting", "streaming"],
        "idle",
        [],
        events=[
            "run",
            "stop",
            "unstop",
            "settle",
            "update",
            "user",
            "interrupt_turn",
            *LLM_EVENTS,
        ],
        unhandled="ignore",  # a late event of an interrupted turn is dropped
    )

    @m.handler("*", "run")
    def run(agent: AgentContext, event: Event) -> Step:
        if expired(event.payload):
            return Step(actions=[Reply(WITHDRAWN)])
        agent.data["stopping"] = False
        agent.data["run"] += 1
        return Step(actions=[Reply(agent.data["run"])])

    @m.handler("*", "stop")
    def stop(agent: AgentContext, event: Event) -> Step:
        agent.data["stopping"] = True
        return Step(actions=[Reply(agent.state)])

    @m.handler("*", "unstop")
    def unstop(agent: AgentContext, event: Event) -> Step:  # a stop that timed out, undone
        agent.data["stopping"] = bool(event.payload)
        return Step()

    @m.handler("*", "settle")
    def settle(agent: AgentContext, event: Event) -> Step:
        return Step(actions=[Reply(None)])

    @m.handler("*", "update")
    def update(agent: AgentContext, event: Event) -> Step:
        updates, deadline = event.payload
        if expired(deadline):
            return Step(actions=[Reply(WITHDRAWN)])
        agent.data.update(updates)
        agent.data["updated_at"] = time.time()
        return Step(outputs=[(SAVE, agent.agent_id)], actions=[Reply(None)])

    @m.handler("idle", "user")
    def user(agent: AgentContext, event: Event) -> Step:
        content, request_id, deadline = event.payload
        if expired(deadline):
            return Step(actions=[Reply(WITHDRAWN)])
        if agent.data["stopping"]:
            return Step(actions=[Reply(STOPPED)])
        agent.data["turn"] = request_id
        agent.data["turns"] = turns = agent.data.get("turns", 0) + 1
        agent.data["llm_request"] = f"{agent.agent_id}:{turns}"
        message = _message(agent.data, "user", content)
        return Step(
            "waiting",
            outputs=[
                _event(agent, "user_message", dict(message)),
                ("llm", llm_request(agent.data)),
            ],
            actions=[Reply(dict(message))],
        )

    def busy(agent: AgentContext, event: Event) -> Step:
        if expired(event.payload[2]):
            return Step(actions=[Reply(WITHDRAWN)])
        if agent.data["stopping"]:
            return Step(actions=[Reply(STOPPED)])
        return Step(actions=[Postpone()])  # taken once this turn ends

    m.handler("waiting", "user")(busy)
    m.handler("streaming", "user")(busy)

    def current(agent: AgentContext, event: Event) -> bool:
        """The event belongs to this turn's request (not to an interrupted one's)."""
        request = getattr(event.payload, "request_id", None)
        return request is not None and request == agent.data.get("llm_request")

    @m.handler("waiting", "message_start")
    def start(agent: AgentContext, event: Event) -> Step:
        if not current(agent, event):
            return Step()
        return Step("streaming", outputs=[_event(agent, "message_start", event.payload)])

    @m.handler("streaming", "text_delta")
    def delta(agent: AgentContext, event: Event) -> Step:
        if not current(agent, event):
            return Step()
        return Step(outputs=[_event(agent, "text_delta", event.payload)])

    @m.handler("streaming", "tool_call")
    def tool_call(agent: AgentContext, event: Event) -> Step:
        if not current(agent, event):
            return Step()
        return Step(outputs=[_event(agent, "tool_call", event.payload)])

    def stopped(agent: AgentContext, event: Event) -> Step:
        if not current(agent, event):
            return Step()
        text = getattr(event.payload, "text", "")
        message = _message(agent.data, "assistant", text if type(text) is str else str(text))
        return Step(
            "idle",
            outputs=[
                _event(agent, "message_stop", event.payload),
                _event(agent, "assistant_message", dict(message)),
                (SAVE, agent.agent_id),
            ],
        )

    m.handler("waiting", "message_stop")(stopped)
    m.handler("streaming", "message_stop")(stopped)

    @m.handler("*", "llm_error")
    def failed(agent: AgentContext, event: Event) -> Step:
        if agent.state == "idle" or not current(agent, event):
            return Step()
        return Step(
            "idle", outputs=[_event(agent, "llm_error", event.payload), (SAVE, agent.agent_id)]
        )

    @m.handler("*", "interrupted")
    def interrupted(agent: AgentContext, event: Event) -> Step:
        if agent.state == "idle":
            return Step()
        return Step("idle", outputs=[_event(agent, "interrupted", None), (SAVE, agent.agent_id)])

    @m.handler("*", "interrupt_turn")
    def interrupt_turn(agent: AgentContext, event: Event) -> Step:
        if event.payload is None or event.payload != agent.data.get("llm_request"):
            return Step()  # rt.interrupt's own copy (None), or a turn that has ended
        return interrupted(agent, event)

    return m


CONVERSATION = build()
"""The machine of every image agent (restore and reopen find it by its name)."""


def new_image(
    container: str, session: str, name: str, description: str, system_prompt: str
) -> dict[str, Any]:
    """The data of a new image's agent: builtins only, so every store's codec keeps it."""
    now = time.time()
    return {
        "container": container,
        "session": session,
        "name": name,
        "description": description,
        "system_prompt": system_prompt,
        "messages": [],
        "created_at": now,
        "updated_at": now,
        "run": 0,
        "stopping": False,
        "turn": None,
        "turns": 0,
        "llm_request": None,
    }
