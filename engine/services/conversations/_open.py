"""``open_conversations``: a ``ConversationRuntime`` over an engine runtime it opens.

Theory of operation: the store is read once, before the engine runtime opens, for the
containers it holds (so they are tenants before the images that name them are restored);
then ``engine.open_runtime`` restores the images (offline ones stay hibernated: they cost a
dictionary entry until they run) and wires the LLM plugin and the layer's effector. The
effector exists before the ``ConversationRuntime`` that it feeds, so it keeps what restored
agents emit until the runtime is bound. On exit every resident image is stopped (shielded
from outside, at most ``shutdown_timeout`` seconds: a stop cut short is undone), so the
store holds every conversation; an exit by an outer cancel (the engine's tasks are being
cancelled too, nothing would answer a stop) skips the stops and only writes what the saver
would, so it ends at once: images stopped by nobody keep their last saved turn.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

import engine
import engine.store

from ._checks import check_timeout
from ._images import stored_containers
from ._machine import CONVERSATION
from ._runtime import ConversationRuntime


@asynccontextmanager
async def open_conversations(
    *,
    llm: Any = None,
    store: engine.store.Store | None = None,
    timeout: float = 30.0,
    codec: engine.store.Codec | None = None,
    shutdown_timeout: float = 5.0,
    save_turns: bool = True,
    **runtime: Any,
) -> AsyncIterator[ConversationRuntime]:
    """Run a ``ConversationRuntime`` for the body of an ``async with``.

    Args:
        llm: The LLM plugin object (``engine_llm.LLM``), wired as receptor and effector;
            None: no completions (user messages wait for one; ``agent_interrupt`` ends them).
        store: Where containers and images are kept: ``MemoryStore()`` (the default),
            ``SQLiteStore(path)`` or ``PostgresStore(dsn)``; what it holds is reopened.
        timeout: Default seconds a command may take.
        codec: The store's codec (``open_runtime``'s).
        shutdown_timeout: Seconds allowed at exit to stop the resident images (none is
            stopped at an exit by an outer cancel).
        save_turns: Write a snapshot of an image each time its turn ends (False: only when
            it stops, and at exit; for a runtime whose ``durability="log"`` keeps every
            change anyway, or that accepts losing the turns since a stop in a crash).
        **runtime: More ``engine.open_runtime`` arguments (``implementation=``...).

    Raises:
        InvalidArgumentError: A bad argument.
        StoreError: At exit, an image could not be written (the others were stopped).
    """
    timeout = check_timeout(timeout)
    shutdown_timeout = check_timeout(shutdown_timeout)
    if type(save_turns) is not bool:
        raise engine.InvalidArgumentError(f"save_turns is a bool, not {save_turns!r}"[:200])
    if store is None:
        store = engine.store.MemoryStore()
    tenants = [engine.Tenant(cid) for cid, _ in stored_containers(store)]
    plugins = [] if llm is None else [llm]
    effector = _Effector()
    async with engine.open_runtime(
        receptors=plugins,
        effectors=[*plugins, effector],
        store=store,
        restore=[CONVERSATION],
        tenants=tenants,
        codec=codec,
        **runtime,
    ) as rt:
        crt = ConversationRuntime(rt, store, codec, timeout)
        effector.bind(crt)
        if save_turns:
            await rt.start(crt._saver, name="conversations saver")
        try:
            yield crt
        finally:
            error = None
            if trio.current_effective_deadline() != -math.inf:  # (not cancelled from outside)
                with trio.move_on_after(shutdown_timeout) as scope:
                    scope.shield = True
                    error = await crt.close()
            if save_turns:
                crt.save_now()
            if error is not None:  # an image that could not be written: say so
                raise error


class _Effector:
    """Forwards output batches to the ``ConversationRuntime`` made after the engine's."""

    def __init__(self) -> None:
        self.target: ConversationRuntime | None = None
        self.early: list[list[tuple[Any, Any]]] = []

    def bind(self, crt: ConversationRuntime) -> None:
        self.target = crt
        for batch in self.early:  # outputs of restored agents, before the runtime was made
            crt.deliver(batch)
        self.early.clear()

    def deliver(self, batch: engine.OutputBatch) -> None:
        if self.target is None:
            self.early.append(list(batch))
        else:
            self.target.deliver(batch)
