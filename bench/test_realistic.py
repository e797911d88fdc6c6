"""Group ``realistic``: the messages users really send, on a machine of a realistic size.

The workload: a seeded random Mealy machine of 12 states x 8 events (every cell defined, half
of them with an output), ``REALISTIC_AGENTS`` agents (default 10 000) with string ids, and
``BENCH_MESSAGES`` messages (default 10**6) whose agent, event, priority and int payload are
uniform. What each contender is given, all built outside the timed part:

* engine ``ints``: ``send_many_slots`` with int32 arrays of slots, event codes and priorities
  and the payload list, then ``run_until_idle`` (the integer baseline);
* engine ``lists``: ``send_many`` with Python lists of the string ids, event names,
  ``Priority`` members and payloads, then ``run_until_idle``;
* engine ``nowait``: ``rt.send_nowait(id, name, payload, priority)`` per message from a Python
  loop, then ``run_until_idle``;
* engine ``run-payload`` / ``run-bare``: ``run_until_idle`` alone, the same messages queued
  in setup with and without their payloads (what a payload costs the drain loop);
* ``handwritten``: the runtime a user would write in twenty lines (a dict of states, a dict of
  four-deque mailboxes, a ready deque; ``send`` per message from the same loop, then ``run``);
* ``automat`` and ``transitions``: one call per message, in each agent's mailbox order
  (highest priority first, arrival order within one: the order the engine processes them),
  so every contender must end with the same states; transitions runs a prefix
  (``BENCH_PEER_MESSAGES``) and is compared per message.

After timing, every contender's final states are checked against a plain reference.
``bench/report.py`` reports the ratios and the targets (README, "Performance").
"""

from __future__ import annotations

import enum
import os
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pytest
import transitions
from _peers_extra import PEER_MESSAGES
from automat import TypeMachineBuilder

import engine
from engine import Priority

GROUP = "realistic"
STATES = tuple(f"state_{i}" for i in range(12))
EVENT_NAMES = (
    "order_placed",
    "payment_received",
    "payment_failed",
    "item_shipped",
    "item_delivered",
    "return_requested",
    "refund_issued",
    "order_cancelled",
)
Event = enum.StrEnum("Event", {name.upper(): name for name in EVENT_NAMES})  # type: ignore[misc]
AGENTS = int(os.environ.get("BENCH_REALISTIC_AGENTS", "10000"))
SEED = 20261130
ROUNDS = {"native": 5, "python": 2, "handwritten": 2, "automat": 2, "transitions": 2}


class Spec:
    """The random machine and the messages, as every contender needs them."""

    def __init__(self, n_messages: int, n_agents: int = AGENTS, seed: int = SEED) -> None:
        rng = np.random.default_rng(seed)
        n_s, n_e = len(STATES), len(EVENT_NAMES)
        self.dest = rng.integers(0, n_s, (n_s, n_e)).tolist()
        has_output = rng.random((n_s, n_e)) < 0.5
        self.output = [
            [f"{STATES[s]}:{EVENT_NAMES[e]}" if has_output[s][e] else None for e in range(n_e)]
            for s in range(n_s)
        ]
        self.n_agents = n_agents
        self.ids = [f"customer-{i}" for i in range(n_agents)]
        agents = rng.integers(0, n_agents, n_messages, dtype=np.int32)
        events = rng.integers(0, n_e, n_messages, dtype=np.int32)
        prios = rng.integers(0, 4, n_messages, dtype=np.int32)
        self.agents, self.events, self.prios = agents, events, prios
        self.payloads = rng.integers(1_000, 1_000_000, n_messages).tolist()
        self.agent_ids = [self.ids[a] for a in agents.tolist()]
        self.event_names = [EVENT_NAMES[e] for e in events.tolist()]
        self.priorities = [Priority(p) for p in prios.tolist()]
        # mailbox order: highest priority first, arrival order within a priority
        order = np.lexsort((np.arange(n_messages), -prios))
        self.ordered_agents = agents[order].tolist()
        self.ordered_events = events[order].tolist()

    @property
    def size(self) -> int:
        return len(self.payloads)

    def rows(self) -> list[tuple[str, str, str, str | None]]:
        return [
            (STATES[s], EVENT_NAMES[e], STATES[self.dest[s][e]], self.output[s][e])
            for s in range(len(STATES))
            for e in range(len(EVENT_NAMES))
        ]

    def final_states(self, n: int | None = None) -> list[int]:
        """Each agent's state code after the first ``n`` messages in mailbox order."""
        state = [0] * self.n_agents
        dest = self.dest
        agents, events = self.ordered_agents, self.ordered_events
        if n is not None:
            agents, events = self._prefix(n)
        for a, e in zip(agents, events, strict=True):
            state[a] = dest[state[a]][e]
        return state

    def _prefix(self, n: int) -> tuple[list[int], list[int]]:
        """The first ``n`` messages (arrival order), put in mailbox order."""
        prios = self.prios[:n]
        order = np.lexsort((np.arange(n), -prios))
        return self.agents[:n][order].tolist(), self.events[:n][order].tolist()


@pytest.fixture(scope="module")
def spec() -> Spec:
    return Spec(int(os.environ.get("BENCH_MESSAGES", "1000000")))


@pytest.fixture(scope="module")
def reference(spec: Spec) -> list[int]:
    return spec.final_states()


# -- the engine ----------------------------------------------------------------------------


def engine_runtime(impl: str, spec: Spec) -> engine.Runtime:
    machine = engine.Machine("order", list(STATES), STATES[0], spec.rows())
    rt = engine.Runtime(implementation=impl)
    for agent_id in spec.ids:
        rt.spawn(machine, agent_id)
    return rt


def run_ints(rt: engine.Runtime, slots: Any, events: Any, prios: Any, payloads: Any) -> int:
    rt.send_many_slots(slots, events, prios, payloads)
    return rt.run_until_idle()


def run_lists(rt: engine.Runtime, ids: Any, names: Any, prios: Any, payloads: Any) -> int:
    rt.send_many(ids, names, prios, payloads)
    return rt.run_until_idle()


def run_nowait(rt: engine.Runtime, ids: Any, names: Any, prios: Any, payloads: Any) -> int:
    send = rt.send_nowait
    for agent_id, name, payload, priority in zip(ids, names, payloads, prios, strict=True):
        send(agent_id, name, payload, priority)
    return rt.run_until_idle()


def run_only(rt: engine.Runtime) -> int:
    return rt.run_until_idle()


MODES: dict[str, Callable[..., int]] = {
    "ints": run_ints,
    "lists": run_lists,
    "nowait": run_nowait,
    "run-payload": run_only,
    "run-bare": run_only,
}


def engine_args(rt: engine.Runtime, spec: Spec, mode: str) -> tuple[Any, ...]:
    slots = rt.slots(spec.ids)[spec.agents]
    if mode == "ints":
        return (rt, slots, spec.events, spec.prios, spec.payloads)
    if mode in ("lists", "nowait"):
        return (rt, spec.agent_ids, spec.event_names, spec.priorities, spec.payloads)
    payloads = spec.payloads if mode == "run-payload" else None
    rt.send_many_slots(slots, spec.events, spec.prios, payloads)
    return (rt,)


@pytest.mark.parametrize("mode", list(MODES))
def test_engine(
    benchmark: Any, impl: str, mode: str, spec: Spec, reference: list[int]
) -> None:
    benchmark.group = GROUP
    counts: list[int] = []
    run = MODES[mode]

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return engine_args(engine_runtime(impl, spec), spec, mode), {}

    def timed(rt: engine.Runtime, *args: Any) -> engine.Runtime:
        counts.append(run(rt, *args))
        return rt

    rt = benchmark.pedantic(timed, setup=setup, rounds=ROUNDS[impl])
    assert counts == [spec.size] * len(counts)
    assert rt.statistics().failed == 0
    assert [STATES.index(rt.state(a)) for a in spec.ids] == reference
    benchmark.extra_info.update(system=impl, mode=mode, messages=spec.size, agents=spec.n_agents)


# -- the hand-written runtime --------------------------------------------------------------


class Handwritten:
    """What a user might write instead of the engine: dicts and deques, four lanes."""

    def __init__(self, table: dict[tuple[int, str], tuple[int, str | None]], n: int) -> None:
        self.table = table
        self.state: dict[str, int] = {}
        self.boxes: dict[str, tuple[deque[Any], ...]] = {}
        self.ready: deque[str] = deque()
        self.outputs: list[tuple[str, str]] | None = None

    def spawn(self, agent_id: str) -> None:
        self.state[agent_id] = 0

    def send(self, agent_id: str, event: str, payload: Any = None, priority: int = 1) -> None:
        box = self.boxes.get(agent_id)
        if box is None:
            box = self.boxes[agent_id] = (deque(), deque(), deque(), deque())
            self.ready.append(agent_id)
        box[priority].append((event, payload))

    def run(self) -> int:
        n, table, boxes, state = 0, self.table, self.boxes, self.state
        while self.ready:
            agent_id = self.ready.popleft()
            box = boxes.pop(agent_id)
            s = state[agent_id]
            for lane in (box[3], box[2], box[1], box[0]):
                for event, _payload in lane:
                    s, _output = table[s, event]
                    n += 1
            state[agent_id] = s
        return n


def handwritten(spec: Spec) -> Handwritten:
    table = {
        (s, EVENT_NAMES[e]): (spec.dest[s][e], spec.output[s][e])
        for s in range(len(STATES))
        for e in range(len(EVENT_NAMES))
    }
    rt = Handwritten(table, spec.n_agents)
    for agent_id in spec.ids:
        rt.spawn(agent_id)
    return rt


def run_handwritten(rt: Handwritten, ids: Any, names: Any, prios: Any, payloads: Any) -> int:
    send = rt.send
    for agent_id, name, payload, priority in zip(ids, names, payloads, prios, strict=True):
        send(agent_id, name, payload, priority)
    return rt.run()


def test_handwritten(benchmark: Any, spec: Spec, reference: list[int]) -> None:
    benchmark.group = GROUP
    counts: list[int] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        rt = handwritten(spec)
        return (rt, spec.agent_ids, spec.event_names, spec.prios.tolist(), spec.payloads), {}

    def timed(rt: Handwritten, *args: Any) -> Handwritten:
        counts.append(run_handwritten(rt, *args))
        return rt

    rt = benchmark.pedantic(timed, setup=setup, rounds=ROUNDS["handwritten"])
    assert counts == [spec.size] * len(counts)
    assert [rt.state[a] for a in spec.ids] == reference
    benchmark.extra_info.update(system="handwritten", messages=spec.size, agents=spec.n_agents)


# -- automat and transitions ---------------------------------------------------------------


class Core:
    """automat's core object (the workload keeps no data)."""


def automat_factory(spec: Spec) -> Callable[[Core], Any]:
    """The machine as an automat typed machine; each input returns the source state's index
    (so a check can read the state back)."""
    inputs: dict[str, Any] = {}
    for name in EVENT_NAMES:

        def method(self: Any) -> str: ...

        method.__name__ = name
        inputs[name] = method
    protocol = type("OrderInputs", (Protocol,), inputs)
    builder = TypeMachineBuilder(protocol, Core)
    states = [builder.state(name) for name in STATES]
    for s, state in enumerate(states):
        for e, name in enumerate(EVENT_NAMES):
            state.upon(getattr(protocol, name)).to(states[spec.dest[s][e]]).returns(str(s))
    return builder.build()


def run_calls(methods: list[list[Callable[[], Any]]], agents: list[int], events: list[int]) -> int:
    for a, e in zip(agents, events, strict=True):
        methods[a][e]()
    return len(agents)


def test_automat(benchmark: Any, spec: Spec, reference: list[int]) -> None:
    benchmark.group = GROUP
    factory = automat_factory(spec)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        instances = [factory(Core()) for _ in range(spec.n_agents)]
        methods = [[getattr(m, name) for name in EVENT_NAMES] for m in instances]
        return (methods, spec.ordered_agents, spec.ordered_events), {}

    methods = benchmark.pedantic(
        lambda m, a, e: (run_calls(m, a, e), m)[1], setup=setup, rounds=ROUNDS["automat"]
    )
    assert [int(m[0]()) for m in methods] == reference  # each input returns its source state
    benchmark.extra_info.update(system="automat", messages=spec.size, agents=spec.n_agents)


class Model:
    """A transitions model; the machine adds ``state`` and ``trigger``."""

    state: str
    trigger: Callable[..., bool]


def transitions_models(spec: Spec) -> list[Model]:
    """One ``transitions.Machine`` for every model (its documented way to drive many)."""
    models = [Model() for _ in range(spec.n_agents)]
    transitions.Machine(
        model=models,
        states=list(STATES),
        transitions=[
            {"trigger": EVENT_NAMES[e], "source": STATES[s], "dest": STATES[spec.dest[s][e]]}
            for s in range(len(STATES))
            for e in range(len(EVENT_NAMES))
        ],
        initial=STATES[0],
        auto_transitions=False,
    )
    return models


def test_transitions(benchmark: Any, spec: Spec) -> None:
    benchmark.group = GROUP
    n = min(PEER_MESSAGES, spec.size)
    agents, events = spec._prefix(n)
    names = [EVENT_NAMES[e] for e in events]

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        models = transitions_models(spec)
        return ([m.trigger for m in models], agents, names, models), {}

    def timed(triggers: Any, agents: list[int], names: list[str], models: Any) -> Any:
        for a, name in zip(agents, names, strict=True):
            triggers[a](name)
        return models

    models = benchmark.pedantic(timed, setup=setup, rounds=ROUNDS["transitions"])
    assert [STATES.index(m.state) for m in models] == spec.final_states(n)
    benchmark.extra_info.update(system="transitions", messages=n, agents=spec.n_agents)
