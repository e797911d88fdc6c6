"""A stateful test of long-lived agents: spawn, send, hibernate, wake, snapshot, rollback, fork
and upgrade mixed at random against a plain-Python model, on both hot paths.

The model keeps, per agent, the payloads it processed (in order), whether it is hibernated,
and which machine version it runs; a snapshot remembers the agent's payloads and version. A
snapshot (or a hibernated agent) of another version is migrated along the runtime's upgrades
(``rollback_upgrade`` included) when it is restored. The
runtime must agree after every step: statuses always; data and state for resident agents
(reading a hibernated agent would wake it); everything at the end, after waking them all.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

import engine
import engine.store as store
from engine import AgentStatus


def _machine(version: int) -> engine.Machine:
    even, odd = ("even", "odd") if version == 1 else ("EVEN", "ODD")
    m = engine.Machine(
        "counter", [even, odd], even, [(even, "inc", odd), (odd, "inc", even)], version=version
    )

    @m.handler("*", "inc")
    def inc(agent: engine.AgentContext, event: engine.Event) -> None:
        agent.data["seen"].append(event.payload)

    return m


V1, V2 = _machine(1), _machine(2)
TO_V2 = {"even": "EVEN", "odd": "ODD"}


class LongLived(RuleBasedStateMachine):
    implementation = "native"
    agents = Bundle("agents")
    snapshots = Bundle("snapshots")

    @initialize()
    def start(self) -> None:
        self.rt = engine.Runtime(implementation=self.implementation)
        store.Hibernation(self.rt, store.MemoryStore())
        self.seen: dict[str, list[int]] = {}
        self.asleep: set[str] = set()
        self.version = 1
        self.count = 0

    def _state(self, agent: str) -> str:
        parity = len(self.seen[agent]) % 2
        return (("even", "odd") if self.version == 1 else ("EVEN", "ODD"))[parity]

    @rule(target=agents)
    def spawn(self) -> str:
        self.count += 1
        name = f"a{self.count}"
        self.rt.spawn(V1 if self.version == 1 else V2, name, {"seen": []})
        self.seen[name] = []
        return name

    @rule(agent=agents, payload=st.integers(0, 99))
    def send(self, agent: str, payload: int) -> None:
        self.rt.send_nowait(agent, "inc", payload)  # wakes it if it sleeps
        self.rt.run_until_idle()
        self.seen[agent].append(payload)
        self.asleep.discard(agent)

    @rule(agent=agents)
    def hibernate(self, agent: str) -> None:
        self.rt.hibernate(agent)
        self.asleep.add(agent)

    @rule(agent=agents)
    def wake(self, agent: str) -> None:
        assert self.rt.wake(agent) is (agent in self.asleep)
        self.asleep.discard(agent)

    @rule(target=snapshots, agent=agents)
    def snapshot(self, agent: str) -> tuple[str, int, list[int], int]:
        sid = self.rt.snapshot(agent)  # (a hibernated agent is woken to be read)
        self.asleep.discard(agent)
        return agent, sid, list(self.seen[agent]), self.version

    @rule(snap=snapshots)
    def rollback(self, snap: tuple[str, int, list[int], int]) -> None:
        agent, sid, seen, _ = snap
        if agent not in self.seen:  # terminated since
            with pytest.raises(engine.AgentNotFoundError):
                self.rt.rollback(agent, to=sid)
            return
        self.rt.rollback(agent, to=sid)  # another version is migrated along the upgrades
        self.seen[agent] = list(seen)
        self.asleep.discard(agent)

    @rule(target=agents, snap=snapshots)
    def fork(self, snap: tuple[str, int, list[int], int]) -> str:
        agent, sid, seen, _ = snap
        self.count += 1
        name = f"a{self.count}"
        if agent not in self.seen:  # terminated since: its machine is not known any more
            with pytest.raises(engine.AgentNotFoundError):
                self.rt.fork(agent, name, at=sid)
            return self.spawn()
        self.rt.fork(agent, name, at=sid)
        self.asleep.discard(agent)
        self.seen[name] = list(seen)
        return name

    @rule(agent=consumes(agents))
    def terminate(self, agent: str) -> None:
        self.rt.terminate(agent)
        del self.seen[agent]
        self.asleep.discard(agent)

    @rule()
    def upgrade(self) -> None:  # hibernated agents migrate when they wake
        if self.version == 1:
            self.rt.upgrade(V1, V2, states=TO_V2)
            self.version = 2
        else:
            self.rt.rollback_upgrade()
            self.version = 1

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "rt"):
            return
        for agent in self.seen:
            status = self.rt.status(agent)
            assert (status is AgentStatus.HIBERNATED) is (agent in self.asleep), agent
        assert sorted(self.rt.hibernated_ids()) == sorted(self.asleep)
        for agent in set(self.seen) - self.asleep:
            assert self.rt.data(agent)["seen"] == self.seen[agent]
            assert self.rt.state(agent) == self._state(agent)

    def teardown(self) -> None:
        if not hasattr(self, "rt"):
            return
        for agent in self.seen:
            assert self.rt.data(agent)["seen"] == self.seen[agent]  # wakes the sleepers
            assert self.rt.state(agent) == self._state(agent)
        assert self.rt.hibernated_ids() == []
        assert sorted(self.rt.agent_ids()) == sorted(self.seen)


class LongLivedPython(LongLived):
    implementation = "python"


SETTINGS = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
TestLongLivedNative = LongLived.TestCase
TestLongLivedNative.settings = SETTINGS
TestLongLivedPython = LongLivedPython.TestCase
TestLongLivedPython.settings = SETTINGS


def test_the_compiled_path_is_the_one_tested_natively() -> None:
    rt: Any = engine.Runtime(implementation=LongLived.implementation)
    assert rt.implementation == "native"
    assert engine.USE_EXTENSIONS
