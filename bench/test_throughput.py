"""Throughput of the workload: the engine's two hot paths against transitions and automat.

Every group holds the engine (``native`` and the ``python`` twin), transitions and automat,
all on the same messages (``conftest.workload``):

* ``drain``: the engine queues all messages with one ``send_many_slots`` call and drains
  them with ``run_until_idle``;
* ``send``: the engine queues them from a Python loop, ``refs[a].send_nowait(e, None,
  p)`` per message (the attribute lookup included, unlike the peers' pre-resolved bound
  methods), then drains;
* ``handler``: as ``send_many``, with a trivial Python handler (returning ``None``: apply the
  table row) bound to every (state, event) slot; the peers run a Python callback per step.

python-statemachine (from the ``[peers]`` extra) runs every group too, on a prefix of the
messages (``_peers_extra``); pykka and xoscar, which have mailboxes, join ``send`` from
``test_suite``.

The peers apply each message in arrival order with one call (see ``_peers``); in the
``drain`` and ``send`` groups they run the same table workload, measured once per
group. All per-message loops iterate with ``zip`` over Python lists made outside the timed
part. A fresh runtime (or fresh peer agents) is built in ``setup`` before every round,
outside the timing. After the rounds the engine's ``run_until_idle`` counts are checked
against the number of messages, and the final states of the last round against the plain
arrival-order reference (order-independent, see ``conftest``); the plain ``test_*_matches_*``
tests check the same things without timing (they run under `make test`, not `make bench`).
``bench/report.py`` turns a saved run into ratios against the peers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from _peers import (
    Inputs,
    Model,
    automat_instances,
    automat_methods,
    automat_state,
    run_automat,
    run_transitions,
    transitions_models,
)
from _peers_extra import (
    PEER_MESSAGES,
    run_statemachine,
    statemachine_instances,
    statemachine_state,
)
from conftest import EVENTS, STATES, Workload, prefix, rows

import engine

GROUPS = ("drain", "send", "handler")
ROUNDS = {"native": 5, "python": 2, "transitions": 2, "automat": 3}
"""Rounds per benchmark: about 0.1-0.3 s, 5-7 s, 23 s and 4.5 s a round at 10**6 messages."""

Setup = Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]


# -- the engine ----------------------------------------------------------------------------


def _noop_handler(ctx: Any, event: Any) -> None:
    return None


def engine_machine(handler: Callable[[Any, Any], Any] | None = None) -> engine.Machine:
    """The workload's machine; with ``handler`` bound to every (state, event) slot.

    A handler belongs to its ``Machine`` object, so every call builds a new one.
    """
    machine = engine.Machine("bench", list(STATES), STATES[0], rows())
    if handler is not None:
        for event in EVENTS:
            machine.handler("*", event)(handler)
    return machine


def fresh_runtime(
    impl: str, machine: engine.Machine, n_agents: int
) -> tuple[engine.Runtime, list[Any]]:
    """A runtime (outputs not collected) with agents ``0..n_agents-1`` and their refs."""
    rt = engine.Runtime(implementation=impl)
    return rt, [rt.spawn(machine, i) for i in range(n_agents)]


def run_send_many(
    rt: engine.Runtime,
    slots: npt.NDArray[np.int32],
    events: npt.NDArray[np.int32],
    priorities: npt.NDArray[np.int32],
) -> int:
    """Queue every message in one call and drain; return how many were processed."""
    rt.send_many_slots(slots, events, priorities)
    return rt.run_until_idle()


def run_send_nowait(
    rt: engine.Runtime,
    refs: list[Any],
    agents: list[int],
    events: list[int],
    priorities: list[int],
) -> int:
    """Queue the messages one ``AgentRef.send_nowait`` at a time and drain."""
    for a, e, p in zip(agents, events, priorities, strict=True):
        refs[a].send_nowait(e, None, p)
    return rt.run_until_idle()


def engine_setup(impl: str, machine: engine.Machine, w: Workload, mode: str) -> Setup:
    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        rt, refs = fresh_runtime(impl, machine, w.n_agents)
        if mode == "send":
            return (rt, refs, w.agent_list, w.event_list, w.priority_list), {}
        slots = rt.slots(range(w.n_agents))[w.agents]
        return (rt, slots, w.events, w.priorities), {}

    return setup


def engine_states(rt: engine.Runtime, n_agents: int) -> list[int]:
    return [STATES.index(rt.state(i)) for i in range(n_agents)]


def check_engine(rt: engine.Runtime, counts: list[int], w: Workload, reference: list[int]) -> None:
    assert counts, "the engine never ran"
    assert counts == [w.size] * len(counts), f"processed {counts}, expected {w.size} each"
    stats = rt.statistics()
    assert (stats.processed, stats.failed, stats.ready) == (w.size, 0, 0)
    assert engine_states(rt, w.n_agents) == reference


@pytest.mark.parametrize("mode", GROUPS)
def test_engine(
    benchmark: Any, impl: str, mode: str, workload: Workload, reference_states: list[int]
) -> None:
    benchmark.group = mode
    machine = engine_machine(_noop_handler if mode == "handler" else None)
    run = run_send_nowait if mode == "send" else run_send_many
    counts: list[int] = []

    def timed(rt: engine.Runtime, *args: Any) -> engine.Runtime:
        counts.append(run(rt, *args))
        return rt

    rt = benchmark.pedantic(
        timed, setup=engine_setup(impl, machine, workload, mode), rounds=ROUNDS[impl]
    )
    check_engine(rt, counts, workload, reference_states)
    benchmark.extra_info.update(
        system=impl, messages=workload.size, agents=workload.n_agents, processed=counts[-1]
    )


# -- the peers -----------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS)
def test_peer_transitions(
    benchmark: Any, group: str, workload: Workload, reference_states: list[int]
) -> None:
    benchmark.group = group
    w = workload

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        models = transitions_models(w.n_agents, handler=group == "handler")
        return (models, [m.trigger for m in models]), {}

    def timed(models: list[Model], triggers: list[Callable[[str], bool]]) -> list[Model]:
        run_transitions(triggers, w.agent_list, w.event_names)
        return models

    models = benchmark.pedantic(timed, setup=setup, rounds=ROUNDS["transitions"])
    assert [STATES.index(m.state) for m in models] == reference_states
    benchmark.extra_info.update(system="transitions", messages=w.size, agents=w.n_agents)


@pytest.mark.parametrize("group", GROUPS)
def test_peer_automat(
    benchmark: Any, group: str, workload: Workload, reference_states: list[int]
) -> None:
    benchmark.group = group
    w = workload

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        instances = automat_instances(w.n_agents, handler=group == "handler")
        return (instances, automat_methods(instances)), {}

    def timed(instances: list[Inputs], methods: list[list[Callable[[], str]]]) -> list[Inputs]:
        run_automat(methods, w.agent_list, w.event_list)
        return instances

    instances = benchmark.pedantic(timed, setup=setup, rounds=ROUNDS["automat"])
    assert [automat_state(m) for m in instances] == reference_states
    benchmark.extra_info.update(system="automat", messages=w.size, agents=w.n_agents)


@pytest.mark.parametrize("group", GROUPS)
def test_peer_statemachine(benchmark: Any, group: str, workload: Workload) -> None:
    pytest.importorskip("statemachine", reason="python-statemachine: install engine[peers]")
    benchmark.group = group
    agents, events, reference = prefix(workload, min(workload.size, PEER_MESSAGES))
    names = [EVENTS[e] for e in events]
    machines = statemachine_instances(workload.n_agents, handler=group == "handler")
    benchmark.pedantic(run_statemachine, args=(machines, agents, names), rounds=1)
    assert [statemachine_state(m) for m in machines] == reference
    benchmark.extra_info.update(
        system="python-statemachine", messages=len(agents), agents=workload.n_agents
    )


# -- correctness against the plain reference, untimed (skipped by --benchmark-only) ----------


@pytest.mark.parametrize("mode", GROUPS)
def test_engine_matches_reference(
    impl: str, mode: str, workload: Workload, reference_states: list[int]
) -> None:
    calls = [0]

    def counting_handler(ctx: Any, event: Any) -> None:
        calls[0] += 1

    machine = engine_machine(counting_handler if mode == "handler" else None)
    (rt, *args), _ = engine_setup(impl, machine, workload, mode)()
    run = run_send_nowait if mode == "send" else run_send_many
    check_engine(rt, [run(rt, *args)], workload, reference_states)
    assert calls[0] == (workload.size if mode == "handler" else 0)


@pytest.mark.parametrize("handler", [False, True], ids=["table", "handler"])
def test_transitions_matches_reference(
    handler: bool, workload: Workload, reference_states: list[int]
) -> None:
    calls = [0]

    def after() -> None:
        calls[0] += 1

    models = transitions_models(workload.n_agents, after=after if handler else None)
    run_transitions([m.trigger for m in models], workload.agent_list, workload.event_names)
    assert [STATES.index(m.state) for m in models] == reference_states
    assert calls[0] == (workload.size if handler else 0)


@pytest.mark.parametrize("handler", [False, True], ids=["table", "handler"])
def test_automat_matches_reference(
    handler: bool, workload: Workload, reference_states: list[int]
) -> None:
    instances = automat_instances(workload.n_agents, handler=handler)
    run_automat(automat_methods(instances), workload.agent_list, workload.event_list)
    assert [automat_state(m) for m in instances] == reference_states


def test_automat_outputs_follow_the_table(workload: Workload) -> None:
    """Each step's output is the table's, with and without the per-step function."""
    for handler in (False, True):
        (m,) = automat_instances(1, handler=handler)
        methods = automat_methods([m])[0]
        state = 0
        for e in workload.event_list[:200]:
            assert methods[e]() == f"o{state}{e}"
            state = (state + e + 1) % len(STATES)
