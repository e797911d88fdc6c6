"""``open_activity_service``: the service for the body of an ``async with``.

It opens like the engine itself: with no runtime given it runs its own under
``engine.open_runtime`` (with ``metrics=True``, so the average processing time is known);
given a running ``Runtime`` it joins it, so its agents live beside the host's own machines,
tenants, stores and plugins. Either way the service's agents live as long as the service:
those still there at exit are terminated (their queued activities become dead letters);
an agent that took one of their ids behind the service's back is left alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from ... import Runtime, open_runtime
from ._agent import Workflow
from ._errors import InvalidActivityError, brief
from ._machine import Handler
from ._service import ActivityService


@asynccontextmanager
async def open_activity_service(
    runtime: Runtime | None = None,
    *,
    name: str = "activities",
    workflow: Workflow | None = None,
    types: Mapping[str, Handler] | None = None,
    commands: Mapping[str, Handler] | None = None,
    **runtime_kwargs: Any,
) -> AsyncIterator[ActivityService]:
    """Run an ``ActivityService`` for the body of an ``async with``.

    Args:
        runtime: A runtime running under ``engine.open_runtime`` to join; None opens one.
        name: The name of the service's machine (two services sharing a runtime need two).
        workflow: The default workflow ``(state, activity) -> new_state`` of its agents.
        types: Custom activity types to register: name -> ``handler(state, activity)``.
        commands: Command handlers to register: name -> ``handler(state, activity)``.
        **runtime_kwargs: ``engine.open_runtime``'s arguments, when no runtime is given
            (``metrics`` defaults to True; ``implementation`` picks the hot path).

    Raises:
        InvalidActivityError: A bad argument, or ``runtime`` together with runtime
            arguments.
    """
    for what, table in (("types", types), ("commands", commands)):
        if table is not None and not isinstance(table, Mapping):
            raise InvalidActivityError(f"{what} must be a mapping, got {brief(table)}")
    if runtime is None:
        runtime_kwargs.setdefault("metrics", True)
        async with (
            open_runtime(**runtime_kwargs) as rt,
            _serve(rt, name, workflow, types, commands) as service,
        ):
            yield service
        return
    if runtime_kwargs:
        raise InvalidActivityError(
            f"runtime arguments ({', '.join(sorted(runtime_kwargs))}) go with runtime=None"
        )
    async with _serve(runtime, name, workflow, types, commands) as service:
        yield service


@asynccontextmanager
async def _serve(
    rt: Runtime,
    name: str,
    workflow: Workflow | None,
    types: Mapping[str, Handler] | None,
    commands: Mapping[str, Handler] | None,
) -> AsyncIterator[ActivityService]:
    service = ActivityService(rt, name, workflow)
    for type_name, handler in (types or {}).items():
        service.register_type(type_name, handler)
    for command, handler in (commands or {}).items():
        service.register_command(command, handler)
    try:
        yield service
    finally:
        service.close()
