"""A user's module, checked with ``mypy --strict`` by tests/test_typing.py: the public API
is typed (these ``assert_type`` lines fail the check if a type degrades to ``Any``)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import assert_type

import trio

import engine

light = engine.Machine(
    "light", ["red", "green"], "red", [("red", "tick", "green", "go"), ("green", "tick", "red")]
)


@light.handler("green", "tick")
def on_tick(agent: engine.AgentContext, event: engine.Event) -> engine.Step | None:
    assert_type(agent.state, str)
    assert_type(event.name, str)
    assert_type(event.priority, engine.Priority)
    return engine.Step("red", outputs=["stop"], actions=[engine.StateTimeout(5, "tick")])


handler: Callable[[engine.AgentContext, engine.Event], engine.Step | None] = on_tick

rt = engine.Runtime(capacity=10, supervision=engine.Supervision("restart", backoff=1.0))
ref = rt.spawn(light, "a")
assert_type(ref, engine.AgentRef)
ref.send_nowait("tick", priority=engine.Priority.HIGH)
assert_type(rt.run_until_idle(), int)
assert_type(rt.statistics(), engine.RuntimeStatistics)
assert_type(rt.statistics("a"), engine.AgentStatistics)
assert_type(rt.statistics("a").processed, int)
assert_type(rt.state("a"), str)
assert_type(rt.status("a"), engine.AgentStatus)
assert_type(rt.ref("a"), engine.AgentRef)
assert_type(rt.dead_letters(), list[engine.DeadLetter])
assert_type(light.step("red", "tick"), tuple[str, Hashable | None])


async def main() -> None:
    async with engine.open_runtime() as running:
        assert_type(running, engine.Runtime)
        running.spawn(light, "b")
        await running.send("b", "tick")
        async with running.subscribe() as records:
            assert_type(records, engine.RecordSubscription)
            assert_type(records.seq, int)
            assert_type(running.records(), engine.RecordBatch)
        async with running.watch_dead_letters() as letters:
            assert_type(letters, engine.Subscription)


trio.run(main)
