"""The workload on the peers: ``transitions`` (the baseline) and ``automat``'s typed builder.

Peers have no mailbox and no priorities: they apply each message in arrival order, one call
per message, which is less work than the engine does (it queues every message in a priority
lane, then drains the mailboxes). Their ``priorities`` are ignored.

What is built outside the timed part, for both peers alike (as the engine's runtime, agents
and ``AgentRef``s are):

* the agents: one ``transitions.Machine`` per model, one automat instance per agent;
* the bound method per agent: ``model.trigger`` for transitions, and for automat the list of
  its four bound input methods (``getattr(instance, "e0")`` ...), so the timed loop makes one
  call per message and no attribute lookup;
* the messages as Python lists (event names for transitions, event codes for automat).

The handler variants run a Python function on every step, as the engine's handler workload
does: an ``after=`` callback on every transition for transitions, an implementation function
(``state.upon(input).to(dest)(function)``, which returns the output) for automat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import transitions
from automat import TypeMachineBuilder
from conftest import EVENTS, STATES, dest, output

# -- transitions ---------------------------------------------------------------------------


class Model:
    """A transitions model: the machine adds ``state`` and ``trigger``."""

    state: str
    trigger: Callable[..., bool]


def _noop_after() -> None:
    return None


def transitions_spec(after: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """The workload's transitions, with ``after`` called after each one when given."""
    extra: dict[str, Any] = {} if after is None else {"after": after}
    return [
        {"trigger": EVENTS[e], "source": STATES[s], "dest": STATES[dest(s, e)], **extra}
        for s in range(len(STATES))
        for e in range(len(EVENTS))
    ]


def transitions_models(
    n: int, *, handler: bool = False, after: Callable[[], None] | None = None
) -> list[Model]:
    """``n`` models, each with its own ``transitions.Machine`` (auto transitions off).

    ``handler=True`` adds a no-op ``after`` callback on every transition (or ``after``).
    """
    spec = transitions_spec(after or (_noop_after if handler else None))
    models = []
    for _ in range(n):
        model = Model()
        transitions.Machine(
            model=model,
            states=list(STATES),
            transitions=spec,
            initial=STATES[0],
            auto_transitions=False,
        )
        models.append(model)
    return models


def run_transitions(
    triggers: list[Callable[[str], bool]], agents: list[int], event_names: list[str]
) -> None:
    """The timed loop: ``model.trigger(event_name)`` per message, in arrival order."""
    for a, name in zip(agents, event_names, strict=True):
        triggers[a](name)


# -- automat -------------------------------------------------------------------------------


class Inputs(Protocol):
    def e0(self) -> str: ...
    def e1(self) -> str: ...
    def e2(self) -> str: ...
    def e3(self) -> str: ...


class Core:
    """automat's core object (the workload keeps no data)."""


def automat_factory(handler: bool = False) -> Callable[[Core], Inputs]:
    """The workload as an automat typed machine; ``handler=True`` makes every step run a
    Python implementation function (returning the output) instead of ``.returns(output)``."""
    builder = TypeMachineBuilder(Inputs, Core)
    states = [builder.state(name) for name in STATES]
    inputs = [Inputs.e0, Inputs.e1, Inputs.e2, Inputs.e3]
    for s, state in enumerate(states):
        for e, method in enumerate(inputs):
            to = state.upon(method).to(states[dest(s, e)])
            if handler:
                to(_step_function(output(s, e)))
            else:
                to.returns(output(s, e))
    return builder.build()


def _step_function(out: str) -> Callable[[Inputs, Core], str]:
    def step(inputs: Inputs, core: Core) -> str:
        return out

    return step


def automat_instances(n: int, *, handler: bool = False) -> list[Inputs]:
    """``n`` instances of the machine, one per agent."""
    factory = automat_factory(handler)
    return [factory(Core()) for _ in range(n)]


def automat_methods(instances: list[Inputs]) -> list[list[Callable[[], str]]]:
    """Each instance's bound input methods, indexed by event code (looked up once)."""
    return [[getattr(m, name) for name in EVENTS] for m in instances]


def run_automat(
    methods: list[list[Callable[[], str]]], agents: list[int], events: list[int]
) -> None:
    """The timed loop: one bound input method call per message, in arrival order."""
    for a, e in zip(agents, events, strict=True):
        methods[a][e]()


def automat_state(instance: Inputs) -> int:
    """The state code an instance is in, read by feeding it ``e0`` (its output names the
    source state). Changes the instance: for checks after a run only."""
    return int(instance.e0()[1])
