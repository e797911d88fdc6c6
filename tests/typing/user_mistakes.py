"""Mistakes a typed API catches: tests/test_typing.py expects mypy to report each line
marked ``# error``."""

from __future__ import annotations

import engine

light = engine.Machine("light", ["red"], "red", [("red", "tick", None)])
rt = engine.Runtime()
ref = rt.spawn(light, "a")
ref.send_nowait(1.5)  # error
total = rt.statistics().processed + "x"  # error
missing = rt.statistics("a").no_such_field  # error


@light.handler("red", "tick")  # error
def wrong(agent: engine.AgentContext) -> engine.Step | None:
    return None
