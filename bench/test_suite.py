"""The groups beyond the throughput ones: step, the mailbox peers of send, timers, requests.

* ``step``: the cost of stepping messages already queued. The engine's messages are queued
  with ``send_many_slots`` in ``setup`` and ``run_until_idle`` alone is timed; the peers have
  no queue, so their step is their call per message (python-statemachine on a prefix).
* ``send``: (with ``test_throughput``'s engine and sync peers) the mailbox peers: pykka's
  ``tell`` to one ``ThreadingActor`` per agent and xoscar's ``tell`` to one actor per agent in
  an in-process pool, on a prefix of the workload, ending when every actor answered a last
  request (so every message was applied).
* ``timers``: BENCH_TIMERS (default 100 000) agents each arm a timer 1..1000 virtual seconds
  ahead and take its event when it fires, on ``trio.testing.MockClock``: the engine (a
  ``StateTimeout`` action) against what a user would write without it, one trio task per
  agent sleeping then stepping its automat machine (``test_timers_peer_trio_tasks`` says why
  not transitions).
* ``request``: (with ``test_trio``'s engine and trio-channel entries) pykka's ``ask`` and an
  xoscar actor call, one round trip at a time.

Every benchmark records ``extra_info["messages"]`` (the report compares time per message) and
checks its result after timing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pytest
import trio
import trio.testing
from _peers import (
    Core,
    automat_instances,
    automat_methods,
    automat_state,
    run_automat,
    run_transitions,
    transitions_models,
)
from _peers_extra import (
    PEER_MESSAGES,
    pykka_actors,
    pykka_stop,
    run_pykka_tell,
    run_statemachine,
    statemachine_instances,
    statemachine_state,
    xoscar_agents,
)
from automat import TypeMachineBuilder
from conftest import EVENTS, SEED, STATES, Workload, prefix, rows
from test_trio import REQUESTS, rtt

import engine
from engine import StateTimeout, Step

TIMERS = int(os.environ.get("BENCH_TIMERS", "100000"))
PEER_REQUESTS = min(REQUESTS, PEER_MESSAGES)


# -- step ------------------------------------------------------------------------------------


def test_step_engine(
    benchmark: Any, impl: str, workload: Workload, reference_states: list[int]
) -> None:
    benchmark.group = "step"
    w = workload
    machine = engine.Machine("bench", list(STATES), STATES[0], rows())
    runtimes: list[engine.Runtime] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        rt = engine.Runtime(implementation=impl)
        for i in range(w.n_agents):
            rt.spawn(machine, i)
        rt.send_many_slots(rt.slots(range(w.n_agents))[w.agents], w.events, w.priorities)
        runtimes[:] = [rt]
        return (rt,), {}

    done = benchmark.pedantic(
        lambda rt: rt.run_until_idle(), setup=setup, rounds=5 if impl == "native" else 2
    )
    assert done == w.size
    rt = runtimes[0]
    assert [STATES.index(rt.state(i)) for i in range(w.n_agents)] == reference_states
    benchmark.extra_info.update(system=impl, messages=w.size, agents=w.n_agents)


@pytest.mark.parametrize("peer", ["transitions", "automat", "python-statemachine"])
def test_step_peer(benchmark: Any, peer: str, workload: Workload) -> None:
    benchmark.group = "step"
    w = workload
    n = w.size if peer != "python-statemachine" else min(w.size, PEER_MESSAGES)
    agents, events, reference = prefix(w, n)
    names = [EVENTS[e] for e in events]
    if peer == "transitions":
        models = transitions_models(w.n_agents)
        benchmark.pedantic(
            run_transitions, args=([m.trigger for m in models], agents, names), rounds=1
        )
        states = [STATES.index(m.state) for m in models]
    elif peer == "automat":
        instances = automat_instances(w.n_agents)
        benchmark.pedantic(run_automat, args=(automat_methods(instances), agents, events), rounds=1)
        states = [automat_state(m) for m in instances]
    else:
        pytest.importorskip("statemachine", reason="python-statemachine: pip install --group bench")
        machines = statemachine_instances(w.n_agents)
        benchmark.pedantic(run_statemachine, args=(machines, agents, names), rounds=1)
        states = [statemachine_state(m) for m in machines]
    assert states == reference
    benchmark.extra_info.update(system=peer, messages=n, agents=w.n_agents)


# -- send: the mailbox peers -------------------------------------------------------------------


def test_send_peer_pykka(benchmark: Any, workload: Workload) -> None:
    pytest.importorskip("pykka", reason="pykka: pip install --group bench")
    benchmark.group = "send"
    agents, events, reference = prefix(workload, min(workload.size, PEER_MESSAGES))
    refs = pykka_actors(workload.n_agents)
    try:
        states = benchmark.pedantic(run_pykka_tell, args=(refs, agents, events), rounds=1)
    finally:
        pykka_stop(refs)
    assert states == reference
    benchmark.extra_info.update(system="pykka", messages=len(agents), agents=workload.n_agents)


def test_send_peer_xoscar(benchmark: Any, workload: Workload) -> None:
    pytest.importorskip("xoscar", reason="xoscar: pip install --group bench")
    benchmark.group = "send"
    agents, events, reference = prefix(workload, min(workload.size, PEER_MESSAGES))

    async def main(refs: list[Any]) -> list[int]:
        steps = [r.step for r in refs]
        for a, e in zip(agents, events, strict=True):
            await steps[a].tell(e)
        return [await r.get() for r in refs]  # each answers after its earlier messages

    with xoscar_agents(workload.n_agents) as (loop, refs):  # pool and actors not timed
        states = benchmark.pedantic(lambda: loop.run_until_complete(main(refs)), rounds=1)
    assert states == reference
    benchmark.extra_info.update(system="xoscar", messages=len(agents), agents=workload.n_agents)


# -- timers ------------------------------------------------------------------------------------


def timer_delays() -> list[float]:
    rng = np.random.default_rng(SEED)
    return rng.integers(1, 1001, TIMERS).astype(float).tolist()


def test_timers_engine(benchmark: Any, impl: str) -> None:
    benchmark.group = "timers"
    delays = timer_delays()
    machine = engine.Machine(
        "timed", ["waiting", "done"], "waiting", [("waiting", "expire", "done")],
        events=["arm", "expire"],
    )
    arming = {d: Step(actions=[StateTimeout(d, "expire")]) for d in set(delays)}

    @machine.handler("waiting", "arm")
    def arm(agent: Any, event: Any) -> Step:
        return arming[event.payload]

    def run() -> dict[str, int]:
        async def main() -> dict[str, int]:
            async with engine.open_runtime(implementation=impl) as rt:
                for i in range(TIMERS):
                    rt.spawn(machine, i)
                rt.send_many(range(TIMERS), ["arm"] * TIMERS, payloads=delays)
                await trio.sleep(1001)
                return rt.machine_statistics()[0].states

        return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    states = benchmark.pedantic(run, rounds=3 if impl == "native" else 1)
    assert states == {"waiting": 0, "done": TIMERS}
    benchmark.extra_info.update(system=impl, messages=TIMERS, agents=TIMERS)


class TimerInputs(Protocol):
    def expire(self) -> str: ...


def timer_automat() -> Callable[[Core], TimerInputs]:
    """``waiting --expire--> done``; each step's output names its source state (``done``
    takes ``expire`` too, so the check after the run can read the state)."""
    builder = TypeMachineBuilder(TimerInputs, Core)
    waiting, done = builder.state("waiting"), builder.state("done")
    waiting.upon(TimerInputs.expire).to(done).returns("waiting")
    done.upon(TimerInputs.expire).to(done).returns("done")
    return builder.build()


def test_timers_peer_trio_tasks(benchmark: Any) -> None:
    """One trio task per agent: sleep, then step its automat machine.

    automat rather than transitions: a transitions ``Machine`` per agent costs about 0.2 ms
    and 14 KB to build (20 s and 1.4 GB at 10**5 agents), which would make this a benchmark
    of building transitions machines. Like the engine's spawns, building the agents is in the
    timed run (for automat about 2 us an agent).
    """
    benchmark.group = "timers"
    delays = timer_delays()
    factory = timer_automat()
    fired: list[float] = []

    def run() -> list[TimerInputs]:
        fired.clear()
        agents = [factory(Core()) for _ in range(TIMERS)]

        async def agent(inputs: TimerInputs, delay: float) -> None:
            await trio.sleep(delay)
            fired.append(trio.current_time() - delay)
            inputs.expire()

        async def main() -> None:
            async with trio.open_nursery() as n:
                for inputs, d in zip(agents, delays, strict=True):
                    n.start_soon(agent, inputs, d)

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        return agents

    agents = benchmark.pedantic(run, rounds=1)
    assert len(fired) == TIMERS
    assert max(fired) == min(fired) == 0.0  # each woke at its deadline
    assert [a.expire() for a in agents] == ["done"] * TIMERS
    benchmark.extra_info.update(system="trio tasks + automat", messages=TIMERS, agents=TIMERS)


# -- request: the actor peers ------------------------------------------------------------------


def test_request_peer_pykka(benchmark: Any) -> None:
    pytest.importorskip("pykka", reason="pykka: pip install --group bench")
    benchmark.group = "request"
    samples: list[int] = []
    (ref,) = pykka_actors(1)

    def run() -> None:
        samples.clear()
        clock = time.perf_counter_ns
        for i in range(PEER_REQUESTS):
            t = clock()
            ref.ask(i % 4)
            samples.append(clock() - t)

    try:
        benchmark.pedantic(run, rounds=1)
        assert ref.ask(None) in (0, 1, 2)
    finally:
        pykka_stop([ref])
    benchmark.extra_info.update(rtt(samples), system="pykka", messages=PEER_REQUESTS)


def test_request_peer_xoscar(benchmark: Any) -> None:
    pytest.importorskip("xoscar", reason="xoscar: pip install --group bench")
    benchmark.group = "request"
    samples: list[int] = []

    async def main(ref: Any) -> None:
        samples.clear()
        clock = time.perf_counter_ns
        for i in range(PEER_REQUESTS):
            t = clock()
            assert await ref.get(i) == i
            samples.append(clock() - t)

    with xoscar_agents(1) as (loop, (ref,)):  # the pool and its actor are not timed
        benchmark.pedantic(lambda: loop.run_until_complete(main(ref)), rounds=1)
    assert len(samples) == PEER_REQUESTS
    benchmark.extra_info.update(rtt(samples), system="xoscar", messages=PEER_REQUESTS)
