"""The machine the end-to-end test's app file names (``tests.e2e_app:ECHO``)."""

from __future__ import annotations

from typing import Any

import engine

ECHO = engine.Machine("echo", ["ready"], "ready", [], events=["say"], unhandled="ignore")


@ECHO.handler("ready", "say")
def say(agent: Any, event: Any) -> engine.Step:
    return engine.Step(outputs=[event.payload])
