"""The optional peers on the shared workload (the ``bench`` dependency group:
``pip install --group bench``).

* python-statemachine: one ``StateMachine`` instance per agent, ``sm.send(event_name)``;
* pykka: one ``ThreadingActor`` per agent (an OS thread each), ``ref.tell(event_code)``;
* xoscar: one actor per agent in an in-process actor pool (asyncio), ``ref.step.tell(code)``
  (fire and forget) or ``await ref.step(code)`` (a call).

These cost tens to hundreds of microseconds a message here, so they run on a prefix of the
workload (``PEER_MESSAGES``, default 10 000) and every benchmark records how many messages it
ran: the report compares time per message. Importing this module needs none of them; the
helpers import their peer when called.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from typing import Any

from conftest import EVENTS, STATES, dest

PEER_MESSAGES = int(os.environ.get("BENCH_PEER_MESSAGES", "10000"))


# -- python-statemachine ---------------------------------------------------------------------


def statemachine_class(handler: bool = False) -> Any:
    """The workload as a ``StateMachine`` subclass; ``handler=True`` adds an
    ``after_transition`` callback run on every step."""
    from statemachine import State, StateMachine

    ns: dict[str, Any] = {
        name: State(initial=(i == 0), value=i) for i, name in enumerate(STATES)
    }
    for e, event in enumerate(EVENTS):
        transition = None
        for s, source in enumerate(STATES):
            t = ns[source].to(ns[STATES[dest(s, e)]])
            transition = t if transition is None else transition | t
        ns[event] = transition
    if handler:
        ns["after_transition"] = lambda self: None
    return type("BenchMachine", (StateMachine,), ns)


def statemachine_instances(n: int, handler: bool = False) -> list[Any]:
    cls = statemachine_class(handler)
    return [cls() for _ in range(n)]


def run_statemachine(machines: list[Any], agents: list[int], event_names: list[str]) -> None:
    """The timed loop: ``machines[a].send(name)`` per message, in arrival order."""
    sends = [m.send for m in machines]
    for a, name in zip(agents, event_names, strict=True):
        sends[a](name)


def statemachine_state(machine: Any) -> int:
    return int(machine.current_state_value)


# -- pykka -----------------------------------------------------------------------------------


def pykka_actors(n: int) -> list[Any]:
    """``n`` started actors applying the workload's table; ``ask(None)`` returns the state."""
    import pykka

    class Agent(pykka.ThreadingActor):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.state = 0

        def on_receive(self, message: Any) -> Any:
            if message is None:
                return self.state
            self.state = dest(self.state, message)
            return self.state

    return [Agent.start() for _ in range(n)]


def pykka_stop(refs: list[Any]) -> None:
    for ref in refs:
        ref.stop()


def run_pykka_tell(refs: list[Any], agents: list[int], events: list[int]) -> list[int]:
    """``tell`` every message, then ``ask`` every actor its state (which waits for its
    mailbox to drain); return the states."""
    tells = [r.tell for r in refs]
    for a, e in zip(agents, events, strict=True):
        tells[a](e)
    return [r.ask(None) for r in refs]


# -- xoscar ----------------------------------------------------------------------------------


def xoscar_actor_class() -> Any:
    import xoscar as xo

    class Agent(xo.Actor):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.state = 0

        def step(self, event: int) -> int:
            self.state = dest(self.state, event)
            return self.state

        def get(self, value: Any = None) -> Any:
            return self.state if value is None else value

    return Agent


async def xoscar_pool(n: int) -> tuple[Any, list[Any]]:
    """An in-process actor pool with ``n`` agents."""
    import xoscar as xo

    pool = await xo.create_actor_pool("127.0.0.1", n_process=0)
    cls = xoscar_actor_class()
    refs = [
        await xo.create_actor(cls, address=pool.external_address, uid=f"agent-{i}")
        for i in range(n)
    ]
    return pool, refs


@contextlib.contextmanager
def xoscar_agents(n: int) -> Iterator[tuple[asyncio.AbstractEventLoop, list[Any]]]:
    """An event loop and ``n`` agents in an in-process pool on it, made (and afterwards
    stopped) outside the timed part: the benchmark runs its coroutine with
    ``loop.run_until_complete``."""
    loop = asyncio.new_event_loop()
    try:
        pool, refs = loop.run_until_complete(xoscar_pool(n))
        try:
            yield loop, refs
        finally:
            loop.run_until_complete(pool.stop())
    finally:
        loop.close()
