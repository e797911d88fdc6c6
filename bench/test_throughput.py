"""Throughput of the table workload: the engine's two hot paths against transitions and automat.

Group "table": each peer applies the messages one call at a time; the engine queues them (by
priority) and drains, either with one ``send_many_slots`` call or with ``send_nowait`` per
message from a Python loop. Group "handler": a Python function runs on every step, for the
peers as for the engine. A fresh runtime (or set of peer machines) is built outside the timed
part of every round. ``bench/report.py`` turns a saved run into ratios against the peers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _peers import (
    automat_machines,
    automat_methods,
    automat_run,
    transitions_models,
    transitions_run,
)
from conftest import EVENTS, STATES, Workload, dest, rows

import engine

ROUNDS = {"native": 5, "python": 1}
PEER_ROUNDS = 1


def engine_machine(with_handler: bool) -> engine.Machine:
    machine = engine.Machine("bench", list(STATES), STATES[0], rows())
    if with_handler:
        for event in EVENTS:
            machine.handler("*", event)(_noop)
    return machine


def _noop(ctx: Any, event: Any) -> None:
    return None


def fresh_runtime(impl: str, machine: engine.Machine, n_agents: int) -> tuple[engine.Runtime, Any]:
    rt = engine.Runtime(implementation=impl)
    refs = [rt.spawn(machine, i) for i in range(n_agents)]
    return rt, refs


def check_engine(rt: engine.Runtime, w: Workload) -> None:
    assert rt.statistics().processed == w.size
    # the engine reorders by priority, so compare counts rather than final states
    assert int(rt.processed.sum()) == w.size


@pytest.mark.benchmark(group="table")
def test_engine_send_many(benchmark: Any, impl: str, workload: Workload) -> None:
    machine = engine_machine(with_handler=False)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        rt, _ = fresh_runtime(impl, machine, workload.n_agents)
        return (rt, rt.slots(range(workload.n_agents))[workload.agents]), {}

    def run(rt: engine.Runtime, slots: Any) -> engine.Runtime:
        rt.send_many_slots(slots, workload.events, workload.priorities)
        rt.run_until_idle()
        return rt

    rt = benchmark.pedantic(run, setup=setup, rounds=ROUNDS[impl], iterations=1)
    check_engine(rt, workload)
    benchmark.extra_info.update(messages=workload.size, agents=workload.n_agents)


@pytest.mark.benchmark(group="table")
def test_engine_send_nowait(benchmark: Any, impl: str, workload: Workload) -> None:
    machine = engine_machine(with_handler=False)
    agents, events, prios = (
        x.tolist() for x in (workload.agents, workload.events, workload.priorities)
    )

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return fresh_runtime(impl, machine, workload.n_agents), {}

    def run(rt: engine.Runtime, refs: list[Any]) -> engine.Runtime:
        for a, e, p in zip(agents, events, prios, strict=True):
            refs[a].send_nowait(e, None, p)
        rt.run_until_idle()
        return rt

    rt = benchmark.pedantic(run, setup=setup, rounds=ROUNDS[impl], iterations=1)
    check_engine(rt, workload)
    benchmark.extra_info.update(messages=workload.size, agents=workload.n_agents)


@pytest.mark.benchmark(group="table")
def test_peer_transitions(benchmark: Any, workload: Workload) -> None:
    agents, events = workload.agents.tolist(), workload.events.tolist()

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        models = transitions_models(workload.n_agents)
        return ([m.trigger for m in models], agents, events, models), {}

    def run(triggers: Any, agents: list[int], events: list[int], models: Any) -> Any:
        transitions_run(triggers, agents, events)
        return models

    models = benchmark.pedantic(run, setup=setup, rounds=PEER_ROUNDS, iterations=1)
    assert [STATES.index(m.state) for m in models] == workload.final_states()
    benchmark.extra_info.update(messages=workload.size, agents=workload.n_agents)


@pytest.mark.benchmark(group="table")
def test_peer_automat(benchmark: Any, workload: Workload) -> None:
    agents, events = workload.agents.tolist(), workload.events.tolist()

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (automat_methods(automat_machines(workload.n_agents)), agents, events), {}

    last = benchmark.pedantic(automat_run, setup=setup, rounds=PEER_ROUNDS, iterations=1)
    finals = [0 if out is None else dest(int(out[1]), int(out[2])) for out in last]
    assert finals == workload.final_states()
    benchmark.extra_info.update(messages=workload.size, agents=workload.n_agents)


@pytest.mark.benchmark(group="handler")
def test_engine_handler(benchmark: Any, impl: str, workload: Workload) -> None:
    machine = engine_machine(with_handler=True)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        rt, _ = fresh_runtime(impl, machine, workload.n_agents)
        return (rt, rt.slots(range(workload.n_agents))[workload.agents]), {}

    def run(rt: engine.Runtime, slots: Any) -> engine.Runtime:
        rt.send_many_slots(slots, workload.events, workload.priorities)
        rt.run_until_idle()
        return rt

    rt = benchmark.pedantic(run, setup=setup, rounds=ROUNDS[impl], iterations=1)
    check_engine(rt, workload)
    benchmark.extra_info.update(messages=workload.size, agents=workload.n_agents)


@pytest.mark.benchmark(group="handler")
def test_peer_transitions_handler(benchmark: Any, workload: Workload) -> None:
    agents, events = workload.agents.tolist(), workload.events.tolist()
    calls = np.zeros(1, dtype=np.int64)

    def after() -> None:
        calls[0] += 1

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        calls[0] = 0
        models = transitions_models(workload.n_agents, callback=after)
        return ([m.trigger for m in models], agents, events), {}

    benchmark.pedantic(transitions_run, setup=setup, rounds=PEER_ROUNDS, iterations=1)
    assert calls[0] == workload.size
    benchmark.extra_info.update(messages=workload.size, agents=workload.n_agents)


@pytest.mark.benchmark(group="handler")
def test_peer_automat_handler(benchmark: Any, workload: Workload) -> None:
    agents, events = workload.agents.tolist(), workload.events.tolist()

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (automat_methods(automat_machines(workload.n_agents, True)), agents, events), {}

    last = benchmark.pedantic(automat_run, setup=setup, rounds=PEER_ROUNDS, iterations=1)
    finals = [0 if out is None else dest(int(out[1]), int(out[2])) for out in last]
    assert finals == workload.final_states()
    benchmark.extra_info.update(messages=workload.size, agents=workload.n_agents)
