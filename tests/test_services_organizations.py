"""The organization runtime manager (``engine.services.organizations``): the old design's
organization flow translated to Python (create an organization with limits, deploy a package,
execute agents until the limits are hit and see the queued ones run later in order, memory
that survives between executions and expires after its TTL, a v2 deployed and rolled back,
metrics with history, the organization destroyed), on both hot paths and ``MockClock``.

The design's documents (an "Agent Runtime Management Layer" plan: ``OrganizationRuntimeManager``
with ``createOrganizationRuntime`` / ``getOrganizationRuntime`` / ``destroyOrganizationRuntime``,
``AgentMemoryManager``, ``AgentPackageManager.deployPackage`` / ``rollbackPackage``,
``RuntimeMetricsCollector.getMetricsHistory`` and the ``executeAgent`` flow) show no runnable
example beyond ``executeAgent`` itself; the flow below follows its steps and its default
``ResourceLimits`` (``maxConcurrentAgents``, ``maxQueueSize``, ``rateLimitPerMinute``, ...).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import engine
import engine.services.organizations as eo
from engine import Reply, Step
from engine.services.organizations import (
    ExecutionResult,
    ResourceLimits,
    open_organizations,
)


def run(fn: Callable[[], Awaitable[None]]) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def assistant(version: int = 1) -> engine.Machine:
    """A package: each execution appends its input to the agent's memory and answers with
    what it remembers (v2 answers with its version too, and has a state of another name)."""
    state = "ready" if version == 1 else "idle"
    m = engine.Machine(
        "assistant", [state], state, [], events=["execute", "forget"], version=version
    )

    @m.handler(state, "execute")
    def execute(ctx: Any, ev: Any) -> Step:
        ctx.data["seen"].append(ev.payload)
        answer = list(ctx.data["seen"])
        return Step(actions=[Reply(answer if version == 1 else ("v2", answer))])

    return m


async def executions_in_order(orgs: Any, org: str, agents: list[str]) -> list[ExecutionResult]:
    """Start one execution per agent, one virtual millisecond apart (so the order they
    arrive in is defined), and return their results in that order."""
    results: list[Any] = [None] * len(agents)

    async def one(i: int, agent: str) -> None:
        results[i] = await orgs.execute_agent(org, agent, f"job {i}")

    async with trio.open_nursery() as nursery:
        for i, agent in enumerate(agents):
            nursery.start_soon(one, i, agent)
            await trio.sleep(0.001)
    return results


def test_the_organization_flow(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(memory_ttl=3600, implementation=impl) as orgs:
            # the design's "free" tier, smaller: 2 executions a minute, 3 waiting at most
            limits = ResourceLimits(
                max_concurrent_agents=2, max_queue_size=3, rate_limit_per_minute=2
            )
            acme = orgs.create("acme", limits)
            assert (acme.name, acme.limits, acme.packages, acme.agents) == ("acme", limits, {}, ())
            orgs.register_package(assistant(1))
            orgs.register_package(assistant(2))
            installed = orgs.deploy("acme", "assistant", 1)
            assert (installed.version, installed.previous) == (1, None)
            for k in range(8):
                orgs.add_agent("acme", f"a{k}", "assistant", data={"seen": []})
            assert orgs.get("acme").agents == tuple(f"a{k}" for k in range(8))
            # eight executions at once: two run now (the rate's burst), three are held back
            # by the engine's rate limit (queued), three more wait in the organization's line
            results = await executions_in_order(orgs, "acme", [f"a{k}" for k in range(8)])
            assert [r.output for r in results] == [[f"job {i}"] for i in range(8)]
            assert [r.queued for r in results] == [False] * 5 + [True] * 3
            # each ran in its turn: the rate releases one every 30 s, in order (task i
            # started i virtual milliseconds after the first)
            done_at = [round(0.001 * i + r.total) for i, r in enumerate(results)]
            assert done_at == [0, 0, 30, 60, 90, 120, 150, 180]
            assert [round(r.waited) for r in results] == [0] * 5 + [30, 60, 90]
            # max_concurrent_agents=2: the engine keeps two of them in memory at most (the
            # least recently used are hibernated to make room), so most were woken
            memories = [r.memory for r in results]
            assert set(memories) == {"restored", "resident"} and memories.count("resident") <= 2
            assert all(r.stored for r in results)  # and each execution stored its memory
            assert orgs.runtime.hibernated_ids() == [("acme", f"a{k}") for k in range(8)]

            # memory survives between executions (woken from the store) ...
            await trio.sleep(60)  # the rate's bucket refills
            again = await orgs.execute_agent("acme", "a0", "more")
            assert again.memory == "restored" and again.output == ["job 0", "more"]
            assert orgs.memory("acme", "a0") == {"seen": ["job 0", "more"]}
            # ... and expires after its TTL: the agent starts again from its initial memory
            await trio.sleep(3601)
            assert orgs.memory("acme", "a0") is None
            fresh = await orgs.execute_agent("acme", "a0", "anew")
            assert (fresh.memory, fresh.output) == ("expired", ["anew"])

            # deploy v2, then roll back: memory kept across both
            v2 = orgs.deploy("acme", "assistant", 2, states={"ready": "idle"})
            assert (v2.version, v2.previous, v2.states) == (2, 1, {"ready": "idle"})
            r2 = await orgs.execute_agent("acme", "a0", "on v2")
            assert (r2.version, r2.output) == (2, ("v2", ["anew", "on v2"]))
            assert orgs.machine("acme", "assistant").version == 2
            back = orgs.rollback("acme", "assistant")
            assert (back.version, back.previous, back.undo) == (1, 2, True)
            r1 = await orgs.execute_agent("acme", "a0", "on v1")
            assert (r1.version, r1.output) == (1, ["anew", "on v2", "on v1"])
            assert orgs.get("acme").packages == {"assistant": 1}

            # metrics and their history show the organization's figures
            metrics = orgs.metrics("acme")
            assert (metrics.executions, metrics.failures, metrics.queued) == (12, 0, 3)
            assert metrics.tenant.processed == 12 and metrics.tenant.delayed >= 3
            await trio.sleep(2)
            history = orgs.history("acme")
            assert history["processed"][-1] == 12
            assert history["time"].shape == history["processed"].shape
            assert list(history) == ["time", *engine.observe.TENANT_COLUMNS]

            # destroy: its agents and their memory are gone, the name can be used again
            orgs.destroy("acme")
            assert orgs.names() == []
            assert not any(t.name == "acme" for t in orgs.runtime.tenants())
            orgs.create("acme")
            orgs.deploy("acme", "assistant", 1)
            orgs.add_agent("acme", "a0", "assistant", data={"seen": []})
            assert (await orgs.execute_agent("acme", "a0", "x")).output == ["x"]

    run(main)


def test_refuse_policy_raises_instead_of_queueing(impl: str) -> None:
    async def main() -> None:
        async with open_organizations(implementation=impl) as orgs:
            orgs.register_package(assistant(1))
            orgs.create(
                "acme",
                ResourceLimits(max_queue_size=1, rate_limit_per_minute=1, overflow="refuse"),
            )
            orgs.deploy("acme", "assistant")
            for k in range(3):
                orgs.add_agent("acme", f"a{k}", "assistant", data={"seen": []})
            results: list[Any] = []

            async def one(agent: str) -> None:
                try:
                    results.append(await orgs.execute_agent("acme", agent, agent))
                except eo.OrganizationLimitError as exc:
                    results.append(exc)

            async with trio.open_nursery() as nursery:
                for k in range(3):
                    nursery.start_soon(one, f"a{k}")
                    await trio.sleep(0.001)
            ok = [r for r in results if isinstance(r, ExecutionResult)]
            refused = [r for r in results if not isinstance(r, ExecutionResult)]
            assert [r.agent for r in ok] == ["a0", "a1"]  # a1 held back 60 s by the rate
            assert len(refused) == 1
            error = refused[0]
            assert isinstance(error, engine.TenantLimitError)
            assert (error.organization, error.limit, error.value) == ("acme", "max_queued", 1)
            assert isinstance(error.__cause__, engine.TenantLimitError)
            assert "acme" in str(error) and "refused" in str(error)
            assert orgs.metrics("acme").tenant.rejected == 1

    run(main)

