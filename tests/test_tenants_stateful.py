"""Stateful property test of tenants: scheduling and limits against a plain-Python model.

Hypothesis adds, reweighs and removes tenants, spawns and terminates agents in them, sends at
every priority (some past ``max_queued``) and runs the dispatcher in slices of random length,
once per hot path. After every step the order in which messages were processed, each
tenant's queued count, the refused sends and the dead letters must agree with a model written
from the documented rules: before any tenant exists, one FIFO ready queue with turns of at
most ``budget`` messages; from the first tenant on, deficit round robin over the tenants
with ready agents (a quantum of ``round(weight x budget)`` messages a round; unused deficit
kept while backlogged and forgotten the moment its last ready agent is served; a tenant that
becomes ready joining the end of the round; each tenant's agents served FIFO in turns of at
most ``min(budget, deficit)``), and inside an agent the highest lane first.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import engine
from engine import DeadLetterReason, Limits, Machine, Runtime, TenantLimitError

BUDGET = 3
IDS = list(range(8))
NAMES = ["a", "b", "c"]


class ModelTenant:
    def __init__(self, name: str, weight: float, max_queued: int) -> None:
        self.name = name
        self.quantum = max(1, round(weight * BUDGET))
        self.max_queued = max_queued
        self.ready: deque[tuple[int, int]] = deque()  # (agent, incarnation)
        self.active = False
        self.deficit = 0
        self.dropped = False


class Model:
    """The documented scheduling and limits, in plain Python."""

    def __init__(self) -> None:
        self.tenanted = False
        self.ring: deque[tuple[int, int]] = deque()  # the one ready queue, before any tenant
        self.tenants: dict[str, ModelTenant] = {"default": ModelTenant("default", 1, 0)}
        self.active: deque[ModelTenant] = deque()
        self.cur: ModelTenant | None = None
        self.tenant_of: dict[int, ModelTenant] = {}
        self.box: dict[int, list[deque[Any]]] = {}
        self.inc: dict[int, int] = {}  # incarnation of each id (an id can be spawned again)
        self.queued_flag: set[int] = set()  # agents on a ready queue
        self.dead: set[tuple[int, int]] = set()  # terminated while on a ready queue
        self.processed: list[tuple[int, Any]] = []
        self.letters: list[tuple[int, Any]] = []

    def enable(self) -> None:
        if self.tenanted:
            return
        self.tenanted = True
        default = self.tenants["default"]
        default.ready, self.ring = self.ring, deque()
        if default.ready:
            default.active = True
            self.active.append(default)

    def queued(self, tenant: ModelTenant) -> int:
        return sum(
            sum(len(lane) for lane in self.box[a]) for a, t in self.tenant_of.items() if t is tenant
        )

    def push_ready(self, agent: int) -> None:
        entry = (agent, self.inc[agent])
        if not self.tenanted:
            self.ring.append(entry)
            return
        tenant = self.tenant_of[agent]
        tenant.ready.append(entry)
        if not tenant.active:
            tenant.active = True
            self.active.append(tenant)

    def send(self, agent: int, payload: Any, lane: int) -> bool:
        tenant = self.tenant_of[agent]
        if self.tenanted and tenant.max_queued and self.queued(tenant) >= tenant.max_queued:
            return False
        self.box[agent][lane].append(payload)
        if agent not in self.queued_flag:
            self.queued_flag.add(agent)
            self.push_ready(agent)
        return True

    def terminate(self, agent: int) -> None:
        for lane in reversed(self.box.pop(agent)):
            self.letters += [(agent, p) for p in lane]
        del self.tenant_of[agent]
        if agent in self.queued_flag:
            self.queued_flag.discard(agent)
            self.dead.add((agent, self.inc[agent]))

    def _turn(self, agent: int, budget: int) -> int:
        box = self.box[agent]
        k = 0
        while k < budget and any(box):
            lane = max(i for i in range(4) if box[i])
            self.processed.append((agent, box[lane].popleft()))
            k += 1
        return k

    def _pop(self, queue: deque[tuple[int, int]]) -> int | None:
        """Pop a ready agent; None for a dead one (released, not run)."""
        entry = queue.popleft()
        if entry in self.dead:
            self.dead.discard(entry)
            return None
        return entry[0]

    def _requeue(self, agent: int) -> None:
        if any(self.box[agent]):
            self.push_ready(agent)
        else:
            self.queued_flag.discard(agent)

    def run(self, limit: int) -> None:
        done = 0
        while not self.tenanted and self.ring and (limit < 0 or done < limit):
            agent = self._pop(self.ring)
            if agent is None:
                continue
            budget = BUDGET if limit < 0 else min(BUDGET, limit - done)
            done += self._turn(agent, budget)
            self._requeue(agent)
        while self.tenanted and (limit < 0 or done < limit):
            if self.cur is None:
                if not self.active:
                    return
                self.cur = self.active.popleft()
                self.cur.deficit += self.cur.quantum
            tenant = self.cur
            if not tenant.ready or tenant.deficit <= 0:
                self.cur = None
                if tenant.ready:
                    self.active.append(tenant)
                else:
                    tenant.active = False
                    tenant.deficit = 0
                continue
            agent = self._pop(tenant.ready)
            if agent is None:
                continue
            budget = min(BUDGET, tenant.deficit)
            if limit >= 0:
                budget = min(budget, limit - done)
            k = self._turn(agent, budget)
            done += k
            tenant.deficit -= k
            self._requeue(agent)
            if not tenant.ready:  # drained: out of the round at once, its deficit forgotten
                self.cur = None
                tenant.active = False
                tenant.deficit = 0


def recorder(log: list[tuple[Any, Any]]) -> Machine:
    m = Machine("rec", ["idle"], "idle", [("idle", "go", None)])

    @m.handler("idle", "go")
    def go(ctx: Any, ev: Any) -> None:
        log.append((ctx.agent_id, ev.payload))

    return m


class TenantMachine(RuleBasedStateMachine):
    IMPL = "python"

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[Any, Any]] = []
        self.rt = Runtime(implementation=self.IMPL, budget=BUDGET)
        self.m = recorder(self.log)
        self.model = Model()
        self.payload = 0

    @rule(name=st.sampled_from(NAMES), weight=st.sampled_from([0.5, 1, 2, 3]),
          max_queued=st.sampled_from([0, 2, 6]))  # fmt: skip
    def add_tenant(self, name: str, weight: float, max_queued: int) -> None:
        if name in self.model.tenants:
            try:
                self.rt.add_tenant(name)
            except engine.TenantExistsError:
                return
            raise AssertionError("a taken name was accepted")
        self.rt.add_tenant(name, weight=weight, limits=Limits(max_queued=max_queued))
        self.model.enable()
        self.model.tenants[name] = ModelTenant(name, weight, max_queued)

    @rule(name=st.sampled_from(["default", *NAMES]), weight=st.sampled_from([0.5, 1, 4]))
    def reweigh(self, name: str, weight: float) -> None:
        if name not in self.model.tenants:
            return
        self.rt.update_tenant(name, weight=weight)
        self.model.enable()
        self.model.tenants[name].quantum = max(1, round(weight * BUDGET))

    @rule(name=st.sampled_from(NAMES))
    def remove_tenant(self, name: str) -> None:
        tenant = self.model.tenants.get(name)
        if tenant is None:
            return
        mine = sorted(a for a, t in self.model.tenant_of.items() if t is tenant)
        self.rt.remove_tenant(name, terminate=True)
        for agent in mine:  # (the runtime terminates them in slot order: same letters)
            self.model.terminate(agent)
        self.model.letters.sort(key=repr)
        del self.model.tenants[name]

    @rule(agent=st.sampled_from(IDS), name=st.sampled_from(["default", *NAMES]))
    def spawn(self, agent: int, name: str) -> None:
        tenant = self.model.tenants.get(name)
        if agent in self.model.tenant_of or tenant is None:
            return
        self.rt.spawn(self.m, agent, tenant=None if name == "default" else name)
        self.model.tenant_of[agent] = tenant
        self.model.inc[agent] = self.model.inc.get(agent, 0) + 1
        self.model.box[agent] = [deque(), deque(), deque(), deque()]

    @rule(agent=st.sampled_from(IDS), lane=st.integers(0, 3), n=st.integers(1, 4))
    def send(self, agent: int, lane: int, n: int) -> None:
        if agent not in self.model.tenant_of:
            return
        for _ in range(n):
            self.payload += 1
            accepted = self.model.send(agent, self.payload, lane)
            if accepted:
                self.rt.send_nowait(agent, "go", self.payload, lane)
            else:
                try:
                    self.rt.send_nowait(agent, "go", self.payload, lane)
                except TenantLimitError:
                    continue
                raise AssertionError("a send past max_queued was accepted")

    @rule(agent=st.sampled_from(IDS))
    def terminate(self, agent: int) -> None:
        if agent not in self.model.tenant_of:
            return
        self.rt.terminate(agent)
        self.model.terminate(agent)

    @rule(limit=st.sampled_from([-1, 1, 2, 3, 5, 8, 13, 40]))
    def run(self, limit: int) -> None:
        self.rt.run(limit)
        self.model.run(limit)

    @invariant()
    def agrees(self) -> None:
        model, rt = self.model, self.rt
        assert self.log == model.processed
        stats = {t.name: t for t in rt.tenant_statistics()} if rt._d.tenanted else {}
        for name, tenant in model.tenants.items():
            if model.tenanted:
                assert stats[name].queued == model.queued(tenant), name
                assert stats[name].agents == sum(1 for t in model.tenant_of.values() if t is tenant)
        assert rt._d.tenanted == model.tenanted
        letters = sorted(
            ((d.agent_id, d.payload) for d in rt.dead_letters()
             if d.reason == DeadLetterReason.TERMINATED),
            key=repr,
        )  # fmt: skip
        assert letters == sorted(model.letters, key=repr)


class NativeTenantMachine(TenantMachine):
    IMPL = "native"


SETTINGS = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestPythonTenants = TenantMachine.TestCase
TestPythonTenants.settings = SETTINGS
if not engine.hotpath.NO_EXTENSIONS:
    TestNativeTenants = NativeTenantMachine.TestCase
    TestNativeTenants.settings = SETTINGS
