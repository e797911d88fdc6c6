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
  agent sleeping then stepping its transitions model.
* ``request``: (with ``test_trio``'s engine and trio-channel entries) pykka's ``ask`` and an
  xoscar actor call, one round trip at a time.

Every benchmark records ``extra_info["messages"]`` (the report compares time per message) and
checks its result after timing.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
from _peers import (
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
    xoscar_pool,
)
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
        pytest.importorskip("statemachine", reason="python-statemachine: install engine[peers]")
        machines = statemachine_instances(w.n_agents)
        benchmark.pedantic(run_statemachine, args=(machines, agents, names), rounds=1)
        states = [statemachine_state(m) for m in machines]
    assert states == reference
    benchmark.extra_info.update(system=peer, messages=n, agents=w.n_agents)


# -- send: the mailbox peers -------------------------------------------------------------------


def test_send_peer_pykka(benchmark: Any, workload: Workload) -> None:
    pytest.importorskip("pykka", reason="pykka: install engine[peers]")
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
    pytest.importorskip("xoscar", reason="xoscar: install engine[peers]")
    benchmark.group = "send"
    agents, events, reference = prefix(workload, min(workload.size, PEER_MESSAGES))
    elapsed: list[float] = []

    async def main() -> list[int]:
        pool, refs = await xoscar_pool(workload.n_agents)
        async with pool:
            t = time.perf_counter()
            for a, e in zip(agents, events, strict=True):
                await refs[a].step.tell(e)
            states = [await r.get() for r in refs]
            elapsed.append(time.perf_counter() - t)
            return states

    # asyncio does not run under pytest-benchmark's timer: time inside, report through it
    states = benchmark.pedantic(lambda: asyncio.run(main()), rounds=1)
    assert states == reference
    benchmark.extra_info.update(
        system="xoscar", messages=len(agents), agents=workload.n_agents, timed_s=elapsed[0]
    )


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


def test_timers_peer_trio_tasks(benchmark: Any) -> None:
    """One trio task per agent: sleep, then step a transitions model."""
    import transitions

    benchmark.group = "timers"
    delays = timer_delays()

    def run() -> list[str]:
        class Model:
            state: str

        models = [Model() for _ in range(TIMERS)]
        for m in models:
            transitions.Machine(
                model=m, states=["waiting", "done"], initial="waiting",
                transitions=[{"trigger": "expire", "source": "waiting", "dest": "done"}],
                auto_transitions=False,
            )

        async def agent(model: Any, delay: float) -> None:
            await trio.sleep(delay)
            model.trigger("expire")

        async def main() -> None:
            async with trio.open_nursery() as n:
                for m, d in zip(models, delays, strict=True):
                    n.start_soon(agent, m, d)

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        return [m.state for m in models]

    states = benchmark.pedantic(run, rounds=1)
    assert states == ["done"] * TIMERS
    benchmark.extra_info.update(system="trio tasks + transitions", messages=TIMERS, agents=TIMERS)


# -- request: the actor peers ------------------------------------------------------------------


def test_request_peer_pykka(benchmark: Any) -> None:
    pytest.importorskip("pykka", reason="pykka: install engine[peers]")
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
    pytest.importorskip("xoscar", reason="xoscar: install engine[peers]")
    benchmark.group = "request"
    samples: list[int] = []

    async def main() -> None:
        pool, (ref,) = await xoscar_pool(1)
        async with pool:
            clock = time.perf_counter_ns
            for i in range(PEER_REQUESTS):
                t = clock()
                assert await ref.get(i) == i
                samples.append(clock() - t)

    benchmark.pedantic(lambda: asyncio.run(main()), rounds=1)
    benchmark.extra_info.update(rtt(samples), system="xoscar", messages=PEER_REQUESTS)
