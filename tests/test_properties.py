"""Property test: both hot paths agree with a plain reference model of the dispatcher.

Hypothesis generates machines (tables with gaps, handlers that record, override or raise),
agents and a stream of sends (single and batched, every priority) interleaved with bounded
runs. After every run the compiled dispatcher, the twin and the reference must agree on
states, queued mail, the global output sequence and the dead letters. The reference is
written from the rules, not from either implementation: highest lane first, FIFO within a
lane, ready agents served in FIFO order for at most ``budget`` messages per turn.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine import DeadLetterReason, Machine, Runtime, Step


@attrs.define
class Spec:
    n_states: int
    n_events: int
    rows: dict[tuple[int, int], tuple[int, str | None]]
    handlers: dict[tuple[int, int], tuple[str, int]]
    ignore: bool
    n_agents: int
    budget: int
    ops: list[tuple[Any, ...]]


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    n_states = draw(st.integers(1, 4))
    n_events = draw(st.integers(1, 4))
    cells = [(s, e) for s in range(n_states) for e in range(n_events)]
    rows = {}
    handlers = {}
    for cell in cells:
        if draw(st.integers(0, 3)):
            rows[cell] = (
                draw(st.integers(0, n_states - 1)),
                draw(st.sampled_from([None, "x", "y", "z"])),
            )
        kind = draw(st.sampled_from(["none", "none", "record", "override", "raise"]))
        if kind != "none":
            handlers[cell] = (kind, draw(st.integers(0, n_states - 1)))
    n_agents = draw(st.integers(1, 5))
    send = st.tuples(
        st.just("send"),
        st.integers(0, n_agents - 1),
        st.integers(0, n_events - 1),
        st.integers(0, 3),
    )
    many = st.tuples(
        st.just("many"),
        st.lists(
            st.tuples(
                st.integers(0, n_agents - 1), st.integers(0, n_events - 1), st.integers(0, 3)
            ),
            max_size=12,
        ),
    )
    run = st.tuples(st.just("run"), st.integers(-1, 8))
    ops = draw(st.lists(st.one_of(send, send, many, run), max_size=40))
    return Spec(
        n_states,
        n_events,
        rows,
        handlers,
        draw(st.booleans()),
        n_agents,
        draw(st.integers(1, 4)),
        [*ops, ("run", -1)],
    )


def build_machine(spec: Spec) -> Machine:
    states = [f"s{i}" for i in range(spec.n_states)]
    events = [f"e{i}" for i in range(spec.n_events)]
    m = Machine(
        "prop",
        states,
        states[0],
        [(states[s], events[e], states[d], out) for (s, e), (d, out) in spec.rows.items()],
        events=events,
        unhandled="ignore" if spec.ignore else "error",
    )
    for (s, e), (kind, target) in spec.handlers.items():
        m.handler(states[s], events[e])(make_handler(kind, states[target]))
    return m


def make_handler(kind: str, target: str) -> Any:
    def handler(ctx: Any, ev: Any) -> Step | None:
        if kind == "override":
            return Step(target, [ev.payload])
        if kind == "raise" and ev.payload % 3 == 0:
            raise ValueError(ev.payload)
        return None

    return handler


class Reference:
    """The dispatcher's rules, written plainly."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.state = [0] * spec.n_agents
        self.lanes: list[list[deque[tuple[int, int]]]] = [
            [deque() for _ in range(4)] for _ in range(spec.n_agents)
        ]
        self.ready: deque[int] = deque()
        self.outputs: list[tuple[int, Any]] = []
        self.dead: list[tuple[int, str, int, DeadLetterReason]] = []

    def send(self, agent: int, event: int, prio: int, payload: int) -> None:
        if not any(self.lanes[agent]):
            self.ready.append(agent)
        self.lanes[agent][prio].append((event, payload))

    def run(self, limit: int) -> int:
        done = 0
        while self.ready and (limit < 0 or done < limit):
            agent = self.ready.popleft()
            budget = self.spec.budget if limit < 0 else min(self.spec.budget, limit - done)
            for _ in range(budget):
                lane = next((p for p in (3, 2, 1, 0) if self.lanes[agent][p]), None)
                if lane is None:
                    break
                event, payload = self.lanes[agent][lane].popleft()
                self.step(agent, event, payload)
                done += 1
            if any(self.lanes[agent]):
                self.ready.append(agent)
        return done

    def step(self, agent: int, event: int, payload: int) -> None:
        s = self.state[agent]
        row = self.spec.rows.get((s, event))
        handler = self.spec.handlers.get((s, event))
        if handler is None:
            if row is None:
                if not self.spec.ignore:
                    self.dead.append(
                        (agent, f"e{event}", payload, DeadLetterReason.INVALID_TRANSITION)
                    )
                return
            self.state[agent] = row[0]
            if row[1] is not None:
                self.outputs.append((agent, row[1]))
            return
        kind, target = handler
        if kind == "raise" and payload % 3 == 0:
            self.dead.append((agent, f"e{event}", payload, DeadLetterReason.HANDLER_FAILED))
            return
        nxt, outs = (row[0], [row[1]] if row[1] is not None else []) if row else (s, [])
        if kind == "override":
            nxt, outs = target, [payload]
        self.state[agent] = nxt
        self.outputs.extend((agent, o) for o in outs)

    def queued(self, agent: int) -> list[tuple[int, str, int]]:
        return [(p, f"e{e}", pl) for p in (3, 2, 1, 0) for e, pl in self.lanes[agent][p]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_both_implementations_match_the_reference(spec: Spec) -> None:
    machine = build_machine(spec)
    ref = Reference(spec)
    outputs: dict[str, list[tuple[Any, Any]]] = {"native": [], "python": []}
    runtimes = {
        name: Runtime(implementation=name, budget=spec.budget, on_output=outputs[name].extend)
        for name in (["python"] if engine.hotpath.NO_EXTENSIONS else ["native", "python"])
    }
    for rt in runtimes.values():
        for a in range(spec.n_agents):
            rt.spawn(machine, a)
    payload = 0
    for op in spec.ops:
        if op[0] == "send":
            _, agent, event, prio = op
            for rt in runtimes.values():
                rt.send_nowait(agent, f"e{event}", payload, prio)
            ref.send(agent, event, prio, payload)
            payload += 1
        elif op[0] == "many":
            msgs = op[1]
            payloads = list(range(payload, payload + len(msgs)))
            for rt in runtimes.values():
                rt.send_many(
                    [m[0] for m in msgs], [f"e{m[1]}" for m in msgs], [m[2] for m in msgs], payloads
                )
            for (agent, event, prio), pl in zip(msgs, payloads, strict=True):
                ref.send(agent, event, prio, pl)
            payload += len(msgs)
        else:
            expected = ref.run(op[1])
            for name, rt in runtimes.items():
                assert rt.run(op[1]) == expected, name
                assert [
                    rt.machine(a).state_code(rt.state(a)) for a in range(spec.n_agents)
                ] == ref.state, name
                assert [
                    [(int(p), e, pl) for p, e, pl in rt.queued(a)] for a in range(spec.n_agents)
                ] == [ref.queued(a) for a in range(spec.n_agents)], name
                assert outputs[name] == ref.outputs, name
                assert [
                    (d.agent_id, d.event, d.payload, d.reason) for d in rt.dead_letters()
                ] == ref.dead, name
    for rt in runtimes.values():
        stats = rt.statistics()
        assert stats.failed == len(ref.dead)
        assert stats.processed + stats.failed == payload
