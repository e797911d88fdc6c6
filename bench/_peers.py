"""The same workload on the peers: transitions (the baseline) and automat's typed builder.

Peers have no mailbox: they apply each message in arrival order, one call per message, which
is less work than the engine does (it queues by priority, then drains). Bound methods are
looked up outside the timed part for both peers alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from automat import TypeMachineBuilder
from conftest import EVENTS, STATES, dest
from transitions import Machine as TMachine


class _Model:
    state: str


def transitions_models(n: int, callback: Callable[..., Any] | None = None) -> list[Any]:
    """One transitions model per agent; ``callback`` runs after every transition."""
    spec = [
        {"trigger": EVENTS[e], "source": STATES[s], "dest": STATES[dest(s, e)]}
        | ({"after": callback} if callback else {})
        for s in range(len(STATES))
        for e in range(len(EVENTS))
    ]
    models = []
    for _ in range(n):
        model = _Model()
        TMachine(
            model=model,
            states=list(STATES),
            initial=STATES[0],
            transitions=spec,
            auto_transitions=False,
        )
        models.append(model)
    return models


def transitions_run(
    triggers: list[Callable[[str], Any]], agents: list[int], events: list[int]
) -> int:
    """Apply the messages: ``triggers`` are the models' bound ``trigger`` methods."""
    for a, e in zip(agents, events, strict=True):
        triggers[a](EVENTS[e])
    return len(agents)


class Inputs(Protocol):
    def e0(self) -> str: ...
    def e1(self) -> str: ...
    def e2(self) -> str: ...
    def e3(self) -> str: ...


class Core:
    steps = 0


def automat_factory(with_callback: bool) -> Callable[[Core], Inputs]:
    """An automat typed machine of the workload; with a Python function on every step."""
    builder = TypeMachineBuilder(Inputs, Core)
    states = [builder.state(name) for name in STATES]
    inputs = [Inputs.e0, Inputs.e1, Inputs.e2, Inputs.e3]
    for s, state in enumerate(states):
        for e, method in enumerate(inputs):
            to = state.upon(method).to(states[dest(s, e)])
            if with_callback:
                to(_make_impl(f"o{s}{e}"))
            else:
                to.returns(f"o{s}{e}")
    return builder.build()


def _make_impl(output: str) -> Callable[[Inputs, Core], str]:
    def impl(inputs: Inputs, core: Core) -> str:
        core.steps += 1
        return output

    return impl


def automat_machines(n: int, with_callback: bool = False) -> list[Inputs]:
    factory = automat_factory(with_callback)
    return [factory(Core()) for _ in range(n)]


def automat_methods(machines: list[Inputs]) -> list[list[Callable[[], str]]]:
    """Bound input methods per machine, looked up once."""
    return [[getattr(m, name) for name in EVENTS] for m in machines]


def automat_run(
    methods: list[list[Callable[[], str]]], agents: list[int], events: list[int]
) -> list[str | None]:
    """Apply the messages; return each agent's last output (it names the final state)."""
    last: list[str | None] = [None] * len(methods)
    for a, e in zip(agents, events, strict=True):
        last[a] = methods[a][e]()
    return last
