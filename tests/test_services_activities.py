"""engine.services.activities: the agent runtime service, on both hot paths.

The design's own usage examples first (create / send / getState / terminate, and subscribe),
translated to Python; then every activity type, the workflow, priorities, status times (on
MockClock under trio, and step by step on a runtime driven by hand), metrics, subscriptions
and the service's lifetime. Errors and hostile input: test_services_activities_errors.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

import engine
import engine.store
from engine import AgentStatus, Priority
from engine.services import activities
from engine.services.activities import (
    KEEP,
    Activity,
    ActivityRecord,
    ActivityType,
    Outcome,
    ProcessingError,
    StatusTimes,
    open_activity_service,
)


def run(fn: Callable[[], Awaitable[None]]) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def add(state: Any, activity: Activity) -> Outcome:
    by = activity.payload["by"]
    return Outcome(state={**state, "count": state["count"] + by}, results=[("added", by)])


def test_the_designs_usage_example(impl: str) -> None:
    # runtime = create("agent-1", {count: 0}); runtime.send({id: "increment", type:
    # STATE_CHANGE, payload: {count: 1}}); state = runtime.getState(); terminate(runtime.id)
    async def main() -> None:
        async with open_activity_service(implementation=impl) as service:
            runtime = await service.create("agent-1", {"count": 0})
            await runtime.send(
                Activity(id="increment", type=ActivityType.STATE_CHANGE, payload={"count": 1})
            )
            await service.runtime.wait_until_idle()
            state = await runtime.get_state()
            assert state.id == "agent-1"
            assert state.state == {"count": 1}
            assert state.status is AgentStatus.IDLE
            assert state.processing.processed == 1
            assert state.processing.failures == 0
            await service.terminate(runtime.id)
            assert service.agent_ids() == []
            assert "agent-1" not in service.runtime

    run(main)


def test_the_designs_subscribe_example(impl: str) -> None:
    # events = subscribe("agent-1"); Stream.runForEach(event => log(`Received activity:
    # ${event.id}`), events)
    log: list[str] = []

    async def main() -> None:
        async with open_activity_service(implementation=impl) as service:
            await service.create("agent-1", {"count": 0})
            async with service.subscribe("agent-1") as events:
                for n in range(3):
                    await service.send(
                        "agent-1", {"id": f"a{n}", "type": "STATE_CHANGE", "payload": {"count": n}}
                    )
                async for event in events:
                    assert isinstance(event, ActivityRecord)
                    log.append(f"Received activity: {event.activity.id}")
                    if len(log) == 3:
                        break

    run(main)
    assert log == [f"Received activity: a{n}" for n in range(3)]


def test_state_change_replaces_the_state(impl: str) -> None:
    async def main() -> None:
        async with open_activity_service(implementation=impl) as service:
            agent = await service.create("a", {"keep": "me", "count": 0})
            new = {"count": 5}
            await agent.process(Activity("s", ActivityType.STATE_CHANGE, new))
            state = (await agent.get_state()).state
            assert state is new  # the payload itself: no copy, no merge
            assert service.runtime.data("a") is new  # the agent's data is the only copy

    run(main)


def test_command_changes_state_and_emits_results(impl: str) -> None:
    outputs: list[Any] = []

    def peek(state: Any, activity: Activity) -> None:
        return None  # no change, no results

    async def main() -> None:
        async with open_activity_service(
            implementation=impl, commands={"add": add}, on_output=lambda b: outputs.extend(b)
        ) as service:
            service.register_command("peek", peek)
            assert service.commands == ("add", "peek")
            agent = await service.create("a", {"count": 1})
            async with agent.subscribe() as stream:
                results = await agent.process(
                    Activity("c1", ActivityType.COMMAND, {"command": "add", "by": 2})
                )
                assert results == (("added", 2),)
                assert await agent.process(Activity("c2", "COMMAND", {"command": "peek"})) == ()
                first, second = await stream.__anext__(), await stream.__anext__()
            assert isinstance(first, ActivityRecord)
            assert isinstance(second, ActivityRecord)
            assert (first.activity.id, first.results) == ("c1", (("added", 2),))
            assert (second.activity.id, second.results) == ("c2", ())
            assert (await agent.get_state()).state == {"count": 3}
        assert outputs == [("a", ("added", 2))]  # results are the engine's outputs

    run(main)


def test_custom_types_at_open_and_while_agents_run(impl: str) -> None:
    def ping(state: Any, activity: Activity) -> Outcome:
        return Outcome(results=["pong"])

    def reset(state: Any, activity: Activity) -> Outcome:
        return Outcome(state={"count": 0})

    async def main() -> None:
        async with open_activity_service(implementation=impl, types={"ping": ping}) as service:
            assert service.types == ("STATE_CHANGE", "COMMAND", "ping")
            agent = await service.create("a", {"count": 7})
            assert await agent.process(Activity("p", "ping")) == ("pong",)
            assert (await agent.get_state()).state == {"count": 7}  # KEEP by default
            rt = service.runtime
            version = rt.machine("a").version
            agent.send_nowait(Activity("s", "STATE_CHANGE", {"count": 9}))  # queued...
            service.register_type("reset", reset)  # ...moved onto the next version
            assert rt.machine("a") is service.machine
            assert service.machine.version == version + 1
            assert [event for _, event, _ in rt.queued("a")] == ["STATE_CHANGE"]
            await agent.process(Activity("r", "reset"))
            assert (await agent.get_state()).state == {"count": 0}
            assert (await agent.get_state()).processing.processed == 3

    run(main)


def test_workflow_runs_after_the_type_and_per_agent(impl: str) -> None:
    seen: list[tuple[Any, str]] = []

    def audit(state: Any, activity: Activity) -> Any:
        seen.append((state, activity.id))
        return {**state, "last": activity.id}

    def stamp(state: Any, activity: Activity) -> Any:
        return {**state, "stamped": True}

    async def main() -> None:
        async with open_activity_service(
            implementation=impl, workflow=audit, commands={"add": add}
        ) as service:
            a = await service.create("a", {"count": 0})
            b = await service.create("b", {"count": 0}, workflow=stamp)
            await a.process(Activity("x", "STATE_CHANGE", {"count": 1}))
            await a.process(Activity("y", "COMMAND", {"command": "add", "by": 2}))
            await b.process(Activity("z", "STATE_CHANGE", {"count": 4}))
            # the workflow saw the state the type produced, and had the last word
            assert seen == [({"count": 1}, "x"), ({"count": 3, "last": "x"}, "y")]
            assert (await a.get_state()).state == {"count": 3, "last": "y"}
            assert (await b.get_state()).state == {"count": 4, "stamped": True}

    run(main)


def test_priorities_are_served_highest_lane_first(impl: str) -> None:
    order = [
        ("low", Priority.LOW),
        ("n1", Priority.NORMAL),
        ("crit", Priority.CRITICAL),
        ("high", Priority.HIGH),
        ("n2", 1),
    ]

    async def main() -> None:
        async with open_activity_service(implementation=impl) as service:
            agent = await service.create("a", None)
            async with agent.subscribe() as stream:
                for name, priority in order:  # no checkpoint between: all queued at once
                    agent.send_nowait(Activity(name, "STATE_CHANGE", name, priority))
                assert [p for p, _, _ in service.runtime.queued("a")] == [3, 2, 1, 1, 0]
                got = [await stream.__anext__() for _ in order]
            ids = [r.activity.id for r in got if isinstance(r, ActivityRecord)]
            assert ids == ["crit", "high", "n1", "n2", "low"]
            assert [r.activity.priority for r in got if isinstance(r, ActivityRecord)] == [
                3,
                2,
                1,
                1,
                0,
            ]
            assert (await agent.get_state()).state == "low"

    run(main)


def test_status_times_under_mockclock(impl: str) -> None:
    def boom(state: Any, activity: Activity) -> None:
        raise ValueError("boom")

    async def main() -> None:
        async with open_activity_service(implementation=impl, types={"boom": boom}) as service:
            agent = await service.create("a", 1)
            first = await agent.get_state()
            assert (first.status, first.last_updated) == (AgentStatus.IDLE, 0.0)
            assert first.since == StatusTimes(idle=0.0)
            await trio.sleep(3)
            await agent.send(Activity("b", "boom"))
            await service.runtime.wait_until_idle()
            failed = await agent.get_state()
            assert (failed.status, failed.last_updated) == (AgentStatus.ERROR, 3.0)
            assert failed.since == StatusTimes(idle=0.0, processing=3.0, error=3.0)
            assert isinstance(failed.error, ProcessingError)
            await trio.sleep(4)
            await agent.send(Activity("ok", "STATE_CHANGE", 2))
            await service.runtime.wait_until_idle()
            back = await agent.get_state()
            assert (back.status, back.last_updated, back.state) == (AgentStatus.IDLE, 7.0, 2)
            # a send to an agent in ERROR leaves it in ERROR until a step succeeds
            assert back.since == StatusTimes(idle=7.0, processing=3.0, error=3.0)
            assert back.error is None
            assert back.since[AgentStatus.ERROR] == 3.0

    run(main)


def test_status_times_step_by_step(impl: str) -> None:
    """On a runtime driven by hand, the PROCESSING spells can be seen from outside: each
    status's time is when it was last entered, through every path between the three."""
    now = [0.0]
    rt = engine.Runtime(implementation=impl, clock=lambda: now[0], metrics=True)

    def boom(state: Any, activity: Activity) -> None:
        raise ValueError("boom")

    async def main() -> None:
        async with open_activity_service(rt, types={"boom": boom}) as service:
            agent = await service.create("a", 0)

            def at(t: float, *names: str) -> None:
                now[0] = t
                for name in names:
                    agent.send_nowait(Activity(name, "boom" if name[0] == "x" else "STATE_CHANGE"))

            def step(t: float) -> None:
                now[0] = t
                assert rt.run(1) == 1

            async def times() -> tuple[AgentStatus, float, StatusTimes]:
                s = await agent.get_state()
                return s.status, s.last_updated, s.since

            at(1, "a1", "a2")
            assert await times() == (AgentStatus.PROCESSING, 1, StatusTimes(0, 1, None))
            step(2)
            assert await times() == (AgentStatus.PROCESSING, 1, StatusTimes(0, 1, None))
            step(3)
            assert await times() == (AgentStatus.IDLE, 3, StatusTimes(3, 1, None))
            at(4, "x1")
            step(5)
            assert await times() == (AgentStatus.ERROR, 5, StatusTimes(3, 4, 5))
            at(6, "a3")
            step(7)  # ERROR -> IDLE
            assert await times() == (AgentStatus.IDLE, 7, StatusTimes(7, 4, 5))
            at(8, "x2", "a4", "a5")
            step(9)  # IDLE -> PROCESSING (8) -> ERROR (9)
            step(10)  # ERROR -> PROCESSING (10): a5 still queued
            assert await times() == (AgentStatus.PROCESSING, 10, StatusTimes(7, 10, 9))
            step(11)  # PROCESSING -> IDLE, unseen from outside until now
            assert await times() == (AgentStatus.IDLE, 11, StatusTimes(11, 10, 9))

    run(main)


def test_status_times_across_a_type_registered_with_activities_queued(impl: str) -> None:
    """The upgrade that a registration makes re-makes the agents (the engine stamps their
    status anew); the steps after it still note their PROCESSING spell."""
    now = [0.0]
    rt = engine.Runtime(implementation=impl, clock=lambda: now[0])

    async def main() -> None:
        async with open_activity_service(rt) as service:
            agent = await service.create("a", 0)
            now[0] = 1
            agent.send_nowait(Activity("a1", "STATE_CHANGE", 1))
            agent.send_nowait(Activity("a2", "STATE_CHANGE", 2))
            now[0] = 2
            service.register_type("t", lambda state, activity: None)
            assert (rt.status("a"), rt.status_since("a")) == (AgentStatus.PROCESSING, 2)
            now[0] = 3
            assert rt.run_until_idle() == 2  # no call of the service in between
            state = await agent.get_state()
            assert (state.state, state.status) == (2, AgentStatus.IDLE)
            assert state.since == StatusTimes(idle=3, processing=2, error=None)

    run(main)


def test_metrics(impl: str) -> None:
    def boom(state: Any, activity: Activity) -> None:
        raise KeyError("missing")

    async def main() -> None:
        async with open_activity_service(implementation=impl, types={"boom": boom}) as service:
            agent = await service.create("a", 0)
            for n in range(4):
                agent.send_nowait(Activity(f"s{n}", "STATE_CHANGE", n))
            agent.send_nowait(Activity("b", "boom"))
            await service.runtime.wait_until_idle()
            metrics = (await agent.get_state()).processing
            stats = service.runtime.statistics("a")
            assert (
                (metrics.processed, metrics.failures) == (4, 1) == (stats.processed, stats.failed)
            )
            assert stats.busy_s is not None
            assert metrics.avg_processing_time is not None
            assert metrics.avg_processing_time == stats.busy_s / 5 > 0
            error = metrics.last_error
            assert isinstance(error, ProcessingError)
            assert error.activity_id == "b"
            assert isinstance(error.__cause__, KeyError)
            await agent.send(Activity("s", "STATE_CHANGE", 9))  # ERROR clears; last error stays
            await service.runtime.wait_until_idle()
            state = await agent.get_state()
            assert state.status is AgentStatus.IDLE
            assert state.error is None
            assert state.processing.last_error is error

    run(main)


def test_average_time_needs_the_engines_busy_time(impl: str) -> None:
    async def main() -> None:
        async with open_activity_service(implementation=impl, metrics=False) as service:
            agent = await service.create("a", 0)
            await agent.process(Activity("s", "STATE_CHANGE", 1))
            assert (await agent.get_state()).processing.avg_processing_time is None

    run(main)


def test_subscribers_never_take_activities(impl: str) -> None:
    async def main() -> None:
        async with open_activity_service(implementation=impl) as service:
            agent = await service.create("a", 0)
            async with agent.subscribe() as one, agent.subscribe() as two:
                for n in range(5):
                    await agent.send(Activity(f"s{n}", "STATE_CHANGE", n))
                got_one = [await one.__anext__() for _ in range(5)]
                got_two = [await two.__anext__() for _ in range(5)]
                cursor = two.seq
            assert got_one == got_two
            assert (await agent.get_state()).state == 4
            assert (await agent.get_state()).processing.processed == 5
            await agent.send(Activity("late", "STATE_CHANGE", 5))  # nobody subscribes
            await service.runtime.wait_until_idle()
            async with agent.subscribe(from_seq=cursor) as again:
                await agent.send(Activity("again", "STATE_CHANGE", 6))
                gap, record = await again.__anext__(), await again.__anext__()
            assert isinstance(gap, engine.Gap)
            assert gap.missed == 1
            assert isinstance(record, ActivityRecord)
            assert record.activity.id == "again"

    run(main)


def test_a_shared_runtime_and_the_services_lifetime(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            async with (
                open_activity_service(rt, name="one") as one,
                open_activity_service(rt, name="two", commands={"add": add}) as two,
            ):
                await one.create("a", 0)
                await two.create("b", {"count": 0})
                rt.pause("a")
                one.send_nowait("a", Activity("queued", "STATE_CHANGE", 1))
                assert await two.process(
                    "b", Activity("c", "COMMAND", {"command": "add", "by": 1})
                ) == (("added", 1),)
                assert one.agent_ids() == ["a"]
                assert two.agent_ids() == ["b"]
            # the agents lived as long as their services; queued activities are dead letters
            assert "a" not in rt
            assert "b" not in rt
            (letter,) = rt.dead_letters()
            assert letter.reason is engine.DeadLetterReason.TERMINATED
            assert letter.payload == Activity("queued", "STATE_CHANGE", 1)

    run(main)


def test_hibernation_and_a_type_registered_meanwhile(impl: str) -> None:
    """A hibernated agent stays the service's: it wakes on the next call naming it, and a
    type registered while it sleeps reaches it along the engine's upgrade chain."""

    async def main() -> None:
        async with open_activity_service(
            implementation=impl, store=engine.store.MemoryStore()
        ) as service:
            agent = await service.create("a", {"n": 1})
            await agent.process(Activity("s", "STATE_CHANGE", {"n": 2}))
            rt = service.runtime
            rt.hibernate("a")
            assert rt.status("a") is AgentStatus.HIBERNATED
            assert (await agent.get_state()).state == {"n": 2}  # woken by the look
            rt.hibernate("a")
            service.register_type("t", lambda state, activity: Outcome(results=["t"]))
            assert await agent.process(Activity("t", "t")) == ("t",)  # woken by the send
            assert rt.machine("a") is service.machine
            stats = service.statistics()
            assert (stats.agents, stats.types, stats.commands) == (
                1,
                ("STATE_CHANGE", "COMMAND", "t"),
                (),
            )
            assert (stats.version, stats.processed, stats.failed) == (2, 2, 0)

    run(main)


def test_outcome_keep_and_public_names() -> None:
    assert Outcome().state is KEEP
    assert Outcome(results=("x",)).results == ("x",)
    # (pytest's assertion rewriting may add names that are not identifiers)
    names = [n for n in vars(activities) if n.isidentifier() and not n.startswith("_")]
    public = {
        "KEEP", "Activity", "ActivityAgent", "ActivityAgentExistsError",
        "ActivityAgentNotFoundError", "ActivityAgentState", "ActivityError", "ActivityRecord",
        "ActivityService", "ActivityServiceStatistics", "ActivityStream", "ActivityTimeoutError",
        "ActivityType",
        "InvalidActivityError",
        "Outcome", "ProcessingError", "ProcessingMetrics", "StatusTimes",
        "UnknownActivityTypeError", "UnknownCommandError", "open_activity_service",
    }  # fmt: skip
    assert set(names) == public
    with open(activities.__file__) as f:
        source = f.read()
    for name in public:  # re-exported exactly once
        assert source.count(f" as {name}\n") == 1, name
    for name in public - {"KEEP", "open_activity_service", "ActivityError", "ActivityType"}:
        cls = getattr(activities, name)
        assert getattr(cls, "__final__", False), name
