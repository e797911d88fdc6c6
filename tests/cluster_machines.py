"""Machines the cluster tests run on their shards (shipped to Ray's workers by value)."""

from __future__ import annotations

from typing import Any

# `from trio import ...`, not `import trio`: trio < 0.25 makes its module an object that
# cloudpickle cannot pickle, and this module is shipped to the shards by value
from trio import current_time

import engine
from engine import Reply, Send, Step, Timer


class Unreadable(Exception):
    """Pickles as ``Unreadable(1)``, which its constructor refuses."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(a)


def setup() -> list[engine.Machine]:
    """``relay``: forwards numbered messages along a ring and logs what it got; ``sink``:
    logs ``(sender, n)`` per message, answers ``log`` requests; ``counter``."""
    relay = engine.Machine(
        "relay", ["on"], "on", [], events=["hop", "fan", "log", "hi", "raw"], unhandled="ignore"
    )

    @relay.handler("on", "hop")
    def hop(ctx: Any, ev: Any) -> Step | None:
        ring, n = ev.payload
        ctx.data = (ctx.data or 0) + 1
        if n <= 0:
            return None
        me = ring.index(ctx.agent_id)
        return Step(actions=[Send(ring[(me + 1) % len(ring)], "hop", (ring, n - 1))])

    @relay.handler("on", "fan")
    def fan(ctx: Any, ev: Any) -> Step:
        # payload: (targets, first, count): send `count` numbered messages to each target
        targets, first, count = ev.payload
        sends = [
            Send(t, "hi", (ctx.agent_id, first + k), priority=engine.Priority.NORMAL)
            for k in range(count)
            for t in targets
        ]
        return Step(actions=sends)

    @relay.handler("on", "raw")
    def raw(ctx: Any, ev: Any) -> Step:
        target, payload = ev.payload  # any target, any payload (hostile ones included)
        if payload == "a generator":
            payload = (x for x in range(3))
        elif payload == "unreadable":  # pickles, but cannot be unpickled
            payload = Unreadable(1, 2)
        elif payload == "keep a generator":  # data that cannot leave the shard
            ctx.data = (x for x in range(3))
            return Step()
        return Step(actions=[Send(target, "hi", payload)])

    @relay.handler("on", "log")
    def log(ctx: Any, ev: Any) -> Step:
        return Step(actions=[Reply(ctx.data)])

    @relay.handler("on", "hi")
    def hi(ctx: Any, ev: Any) -> None:
        got = ctx.data if isinstance(ctx.data, list) else []
        got.append(ev.payload)
        ctx.data = got

    ticker = engine.Machine(
        "ticker", ["on"], "on", [], events=["start", "tick", "hi"], unhandled="ignore"
    )

    @ticker.handler("on", "start")
    def start(ctx: Any, ev: Any) -> Step:
        partner, period = ev.payload
        ctx.data = {"partner": partner, "period": period, "got": []}
        return Step(actions=[Timer("t", period, "tick")])

    @ticker.handler("on", "tick")
    def tick(ctx: Any, ev: Any) -> Step:
        now = current_time()
        period = ctx.data["period"]
        return Step(actions=[Timer("t", period, "tick"), Send(ctx.data["partner"], "hi", now)])

    @ticker.handler("on", "hi")
    def got(ctx: Any, ev: Any) -> None:
        ctx.data["got"].append((ev.payload, current_time()))

    return [relay, ticker]


def pause_if_here(rt: Any, agent_id: Any) -> None:
    """For ``on_each_shard``: pause the agent on the shard that has it."""
    if agent_id in rt.agent_ids():
        rt.pause(agent_id)


def resume_if_here(rt: Any, agent_id: Any) -> None:
    if agent_id in rt.agent_ids():
        rt.resume(agent_id)
