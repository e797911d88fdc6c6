"""The machine the long-lived-agent tests share (tests/test_hibernate.py, test_history.py):
a counter that records each payload it is sent, relays, arms a timer, and answers requests
with what it has seen."""

from __future__ import annotations

import engine
from engine import Reply, Send, Step, Timer

counter = engine.Machine(
    "counter",
    ["even", "odd"],
    "even",
    [("even", "inc", "odd"), ("odd", "inc", "even")],
    events=["inc", "relay", "ding", "arm", "ask"],
    unhandled="ignore",
)


@counter.handler("*", "inc")
def _inc(agent: engine.AgentContext, event: engine.Event) -> None:
    agent.data["seen"].append(event.payload)


@counter.handler("*", "relay")
def _relay(agent: engine.AgentContext, event: engine.Event) -> Step:
    target, payload = event.payload
    return Step(actions=[Send(target, "inc", payload)])


@counter.handler("*", "arm")
def _arm(agent: engine.AgentContext, event: engine.Event) -> Step:
    return Step(actions=[Timer("t", event.payload, "ding")])


@counter.handler("*", "ding")
def _ding(agent: engine.AgentContext, event: engine.Event) -> None:
    agent.data["seen"].append("ding")


@counter.handler("*", "ask")
def _ask(agent: engine.AgentContext, event: engine.Event) -> Step:
    return Step(actions=[Reply(list(agent.data["seen"]))])
