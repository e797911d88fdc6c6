"""Stateful property test: random lifecycles against a plain model of the runtime.

Hypothesis drives spawn, send at every priority, terminate, pause, resume, timer arm and
cancel (through handler actions) and clock advances against the runtime on a manual clock,
once per hot path, and after every step checks that states, queued mail, outputs and dead
letters agree with a small model written from the documented rules.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import engine
from engine import DeadLetterReason, Machine, Runtime, Step

STATES = ["a", "b", "c"]
EVENTS = ["e0", "e1", "e2", "arm", "disarm", "ring"]
IDS = list(range(5))
TIMER_NAMES = ["x", "y"]


def build_machine() -> Machine:
    rows = [
        (s, f"e{k}", STATES[(i + k + 1) % 3], f"{s}{k}")
        for i, s in enumerate(STATES)
        for k in range(3)
        if (s, k) != ("b", 1)  # (b, e1) has no row: an invalid transition
    ]
    m = Machine("model", STATES, "a", rows, events=EVENTS, unhandled="error")

    @m.handler("c", "e2")
    def fails(ctx: Any, ev: Any) -> None:
        raise RuntimeError("c/e2 always fails")

    m.handler("*", "arm")(
        lambda ctx, ev: Step(
            actions=[engine.Timer(ev.payload[0], ev.payload[1], "ring", ev.payload[0])]
        )
    )
    m.handler("*", "disarm")(lambda ctx, ev: Step(actions=[engine.CancelTimer(ev.payload)]))
    m.handler("*", "ring")(lambda ctx, ev: Step(outputs=[("rang", ev.payload)]))
    return m


MACHINE = build_machine()


class Model:
    """The runtime's documented behaviour, for this machine, in plain Python."""

    def __init__(self) -> None:
        self.now = 0.0
        self.agents: dict[int, dict[str, Any]] = {}
        self.outputs: dict[int, list[Any]] = defaultdict(list)
        self.dead: dict[int, list[Any]] = defaultdict(list)
        self.timers: dict[tuple[int, str], tuple[float, int]] = {}
        self.seq = 0

    def spawn(self, a: int) -> None:
        self.agents[a] = {"state": "a", "lanes": [deque() for _ in range(4)], "paused": False}

    def send(self, a: int, event: str, payload: Any, prio: int) -> None:
        self.agents[a]["lanes"][prio].append((event, payload))

    def queued(self, a: int) -> list[tuple[int, str, Any]]:
        lanes = self.agents[a]["lanes"]
        return [(p, e, pl) for p in (3, 2, 1, 0) for e, pl in lanes[p]]

    def terminate(self, a: int) -> None:
        for _, event, payload in self.queued(a):
            self.dead[a].append((event, payload, DeadLetterReason.TERMINATED))
        del self.agents[a]
        for key in [k for k in self.timers if k[0] == a]:
            del self.timers[key]

    def run_until_idle(self) -> None:
        busy = True
        while busy:
            busy = False
            for a, agent in list(self.agents.items()):
                if agent["paused"]:
                    continue
                for p in (3, 2, 1, 0):
                    if agent["lanes"][p]:
                        event, payload = agent["lanes"][p].popleft()
                        self.step(a, event, payload)
                        busy = True
                        break

    def step(self, a: int, event: str, payload: Any) -> None:
        agent = self.agents[a]
        s = agent["state"]
        if event in ("e0", "e1", "e2"):
            k = int(event[1])
            if (s, k) == ("b", 1):
                self.dead[a].append((event, payload, DeadLetterReason.INVALID_TRANSITION))
            elif (s, k) == ("c", 2):
                self.dead[a].append((event, payload, DeadLetterReason.HANDLER_FAILED))
            else:
                agent["state"] = STATES[(STATES.index(s) + k + 1) % 3]
                self.outputs[a].append(f"{s}{k}")
        elif event == "arm":
            name, seconds = payload
            self.seq += 1
            self.timers[a, name] = (self.now + seconds, self.seq)
        elif event == "disarm":
            self.timers.pop((a, payload), None)
        else:  # ring
            self.outputs[a].append(("rang", payload))

    def advance(self, dt: float) -> None:
        self.now += dt
        due = sorted((v, k) for k, v in self.timers.items() if v[0] <= self.now)
        for _, (a, name) in due:
            del self.timers[a, name]
            self.send(a, "ring", name, 1)


class RuntimeMachine(RuleBasedStateMachine):
    IMPL = "python"

    def __init__(self) -> None:
        super().__init__()
        self.clock_now = 0.0
        self.outputs: dict[int, list[Any]] = defaultdict(list)

        def sink(batch: engine.OutputBatch) -> None:
            for agent_id, out in batch:
                self.outputs[agent_id].append(out)

        self.rt = Runtime(implementation=self.IMPL, clock=lambda: self.clock_now, on_output=sink)
        self.model = Model()

    @rule(a=st.sampled_from(IDS))
    def spawn(self, a: int) -> None:
        if a in self.model.agents:
            try:
                self.rt.spawn(MACHINE, a)
            except engine.AgentExistsError:
                return
            raise AssertionError("duplicate spawn accepted")
        self.rt.spawn(MACHINE, a)
        self.model.spawn(a)

    @rule(
        a=st.sampled_from(IDS),
        k=st.integers(0, 2),
        prio=st.integers(0, 3),
        payload=st.integers(0, 99),
    )
    def send(self, a: int, k: int, prio: int, payload: int) -> None:
        if a not in self.model.agents:
            try:
                self.rt.send_nowait(a, f"e{k}", payload, prio)
            except engine.AgentNotFoundError:
                return
            raise AssertionError("send to a missing agent accepted")
        self.rt.send_nowait(a, f"e{k}", payload, prio)
        self.model.send(a, f"e{k}", payload, prio)

    @rule(
        a=st.sampled_from(IDS),
        name=st.sampled_from(TIMER_NAMES),
        seconds=st.sampled_from([0.5, 1.0, 2.5]),
        prio=st.integers(0, 3),
    )
    def arm(self, a: int, name: str, seconds: float, prio: int) -> None:
        if a in self.model.agents:
            self.rt.send_nowait(a, "arm", (name, seconds), prio)
            self.model.send(a, "arm", (name, seconds), prio)

    @rule(a=st.sampled_from(IDS), name=st.sampled_from(TIMER_NAMES))
    def disarm(self, a: int, name: str) -> None:
        if a in self.model.agents:
            self.rt.send_nowait(a, "disarm", name)
            self.model.send(a, "disarm", name, 1)

    @rule(a=st.sampled_from(IDS))
    def terminate(self, a: int) -> None:
        if a in self.model.agents:
            self.rt.terminate(a)
            self.model.terminate(a)

    @rule(a=st.sampled_from(IDS))
    def pause(self, a: int) -> None:
        if a in self.model.agents:
            self.rt.pause(a)
            self.model.agents[a]["paused"] = True

    @rule(a=st.sampled_from(IDS))
    def resume(self, a: int) -> None:
        if a in self.model.agents:
            self.rt.resume(a)
            self.model.agents[a]["paused"] = False

    @rule()
    def run(self) -> None:
        self.rt.run_until_idle()
        self.model.run_until_idle()

    @rule(dt=st.sampled_from([0.25, 0.5, 1.0, 3.0]))
    def advance(self, dt: float) -> None:
        self.clock_now += dt
        self.rt.fire_timers()
        self.model.advance(dt)

    @invariant()
    def agree(self) -> None:
        rt, model = self.rt, self.model
        assert sorted(rt.agent_ids()) == sorted(model.agents)
        for a, agent in model.agents.items():
            assert rt.state(a) == agent["state"]
            assert [(int(p), e, pl) for p, e, pl in rt.queued(a)] == model.queued(a)
            assert rt.paused(a) == agent["paused"]
            armed = sorted(k[1] for k in rt.timers(a))
            assert armed == sorted(name for (b, name) in model.timers if b == a)
        dead: dict[int, list[Any]] = defaultdict(list)
        for d in rt.dead_letters():
            dead[d.agent_id].append((d.event, d.payload, d.reason))
        assert dict(dead) == {a: v for a, v in model.dead.items() if v}
        assert dict(self.outputs) == {a: v for a, v in model.outputs.items() if v}


class NativeRuntimeMachine(RuntimeMachine):
    IMPL = "native"


SETTINGS = settings(max_examples=200, stateful_step_count=50, deadline=None)
TestPythonRuntime = RuntimeMachine.TestCase
TestPythonRuntime.settings = SETTINGS
if not engine.hotpath.NO_EXTENSIONS:
    TestNativeRuntime = NativeRuntimeMachine.TestCase
    TestNativeRuntime.settings = SETTINGS
