"""Versioned machines and hot upgrade, on both hot paths."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import engine
from engine import DeadLetterReason, Priority, Reply, Runtime, Step, Timer, UpgradeError


def _v1() -> engine.Machine:
    m = engine.Machine(
        "door", ["open", "shut", "jammed"], "shut",
        [("shut", "push", "open"), ("open", "push", "shut"), ("*", "kick", "jammed")],
        events=["push", "kick", "ring", "arm", "ask"], unhandled="ignore", version=1,
    )  # fmt: skip

    @m.handler("*", "arm")
    def arm(agent: engine.AgentContext, event: engine.Event) -> Step:
        return Step(actions=[Timer("t", event.payload, "ring")])

    @m.handler("*", "ring")
    def ring(agent: engine.AgentContext, event: engine.Event) -> None:
        agent.data["rings"] += 1

    return m


def _v2() -> engine.Machine:
    m = engine.Machine(
        "door", ["opened", "closed"], "closed",
        [("closed", "push", "opened"), ("opened", "push", "closed")],
        events=["push", "ring", "ask"], unhandled="ignore", version=2,
    )  # fmt: skip

    @m.handler("*", "ring")
    def ring(agent: engine.AgentContext, event: engine.Event) -> None:
        agent.data["bells"] += 1

    @m.handler("*", "ask")
    def ask(agent: engine.AgentContext, event: engine.Event) -> Step:
        return Step(actions=[Reply((agent.state, agent.data))])

    return m


MAPPING = {"open": "opened", "shut": "closed", "jammed": "closed"}


def _migrate(state: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"bells": data["rings"], "from": state}


def test_an_upgrade_moves_state_data_mail_and_timers(impl: str) -> None:
    v1, v2 = _v1(), _v2()
    clock = [0.0]
    rt = Runtime(implementation=impl, clock=lambda: clock[0])
    for i in range(4):
        rt.spawn(v1, i, {"rings": i})
    rt.send_many([1, 2, 3], ["push", "kick", "arm"], payloads=[None, None, 5.0])
    rt.run_until_idle()
    rt.pause(0)
    rt.send_nowait(0, "push", priority=Priority.HIGH)
    rt.send_nowait(0, "kick")  # v2 has no "kick": a dead letter
    report = rt.upgrade(v1, v2, states=MAPPING, migrate=_migrate)
    assert (report.agents, report.dead_letters, report.timers_dropped) == (4, 1, 0)
    assert [rt.state(i) for i in range(4)] == ["closed", "opened", "closed", "closed"]
    assert rt.data(2) == {"bells": 2, "from": "jammed"}
    assert rt.machine(0) is v2
    assert rt.queued(0) == [(Priority.HIGH, "push", None)]
    (letter,) = rt.take_dead_letters()
    assert (letter.event, letter.reason) == ("kick", DeadLetterReason.UNDELIVERABLE)
    assert rt.statistics(1).processed == 1  # counters carry over
    clock[0] = 5.0
    rt.fire_timers()  # agent 3's timer, armed under v1, rings under v2
    rt.resume(0)
    rt.run_until_idle()
    assert rt.data(3) == {"bells": 4, "from": "shut"}
    assert rt.state(0) == "opened"
    assert rt.upgrades == rt.statistics().upgrades == 1


def test_an_upgrade_with_a_state_missing_changes_nothing(impl: str) -> None:
    v1, v2 = _v1(), _v2()
    rt = Runtime(implementation=impl)
    rt.spawn(v1, "d", {"rings": 0})
    with pytest.raises(UpgradeError, match=r"'open' -> 'open'.*'jammed' -> 'jammed'"):
        rt.upgrade(v1, v2, states={"shut": "closed"})
    with pytest.raises(UpgradeError, match="not states of"):
        rt.upgrade(v1, v2, states={**MAPPING, "ajar": "opened"})

    def broken(state: str, data: Any) -> Any:
        raise ValueError("no")

    with pytest.raises(UpgradeError, match="migrate failed for agent 'd'"):
        rt.upgrade(v1, v2, states=MAPPING, migrate=broken)
    assert rt.machine("d") is v1
    assert (rt.state("d"), rt.data("d")) == ("shut", {"rings": 0})
    with pytest.raises(engine.InvalidArgumentError):
        rt.upgrade(v1, v1)
    assert rt.upgrades == 0


def test_a_failing_health_check_puts_everything_back(impl: str) -> None:
    v1, v2 = _v1(), _v2()
    rt = Runtime(implementation=impl)
    for i in range(5):
        rt.spawn(v1, i, {"rings": i})
    rt.pause(1)
    rt.send_nowait(1, "push")
    seen: list[list[Any]] = []

    def check(rt_: Runtime, ids: list[Any]) -> bool:
        seen.append(ids)
        assert all(rt_.machine(i) is v2 for i in ids)
        return False

    with pytest.raises(UpgradeError, match="rolled back: the health check returned False"):
        rt.upgrade(v1, v2, states=MAPPING, migrate=_migrate, check=check, canary=2)
    assert seen == [[0, 1]]
    assert all(rt.machine(i) is v1 for i in range(5))
    assert [rt.data(i) for i in range(5)] == [{"rings": i} for i in range(5)]
    assert rt.queued(1) == [(Priority.NORMAL, "push", None)]

    def raises(rt_: Runtime, ids: list[Any]) -> bool:
        raise RuntimeError("down")

    with pytest.raises(UpgradeError, match="raised RuntimeError: down"):
        rt.upgrade(v1, v2, states=MAPPING, migrate=_migrate, check=raises)
    assert rt.machine(0) is v1
    report = rt.upgrade(v1, v2, states=MAPPING, migrate=_migrate, check=lambda r, ids: True)
    assert report.agents == 5
    back = rt.rollback_upgrade(migrate=lambda state, data: {"rings": data["bells"]})
    assert back.agents == 5
    assert rt.machine(0) is v1
    assert [rt.state(i) for i in range(5)] == ["shut"] * 5
    assert rt.data(3) == {"rings": 3}
    assert rt.upgrades == 0
    with pytest.raises(UpgradeError, match="no upgrade"):
        rt.rollback_upgrade()


def test_ten_thousand_agents_upgraded_while_messages_flow_lose_none(impl: str) -> None:
    v1, v2 = _v1(), _v2()
    n = 10_000

    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            for i in range(n):
                rt.spawn(v1, i, {"rings": 0})

            async def flood() -> None:
                for _ in range(10):
                    rt.send_many(list(range(n)), ["push"] * n)
                    await trio.sleep(0)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                await trio.sleep(0)
                await trio.sleep(0)
                rt.upgrade(v1, v2, states=MAPPING, migrate=_migrate)
            await rt.wait_until_idle()
            stats = rt.statistics()
            assert stats.processed == 10 * n
            assert stats.dead_letters == 0
            assert all(rt.machine(i) is v2 for i in range(0, n, 997))
            state, data = await rt.request(7, "ask")
            assert state == "closed"  # ten pushes, some before the upgrade and some after
            assert data["bells"] == 0
            assert data["from"] in ("open", "shut")

    trio.run(main)


def test_a_request_queued_across_an_upgrade_is_answered(impl: str) -> None:
    v1, v2 = _v1(), _v2()

    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            rt.spawn(v1, "d", {"rings": 0})
            rt.pause("d")
            answers: list[Any] = []
            async with trio.open_nursery() as nursery:

                async def ask() -> None:
                    answers.append(await rt.request("d", "ask"))

                nursery.start_soon(ask)
                await trio.sleep(0.01)
                rt.upgrade(v1, v2, states=MAPPING, migrate=_migrate)
                rt.resume("d")
            assert answers == [("closed", {"bells": 0, "from": "shut"})]

    trio.run(main)


def test_machine_versions_are_checked() -> None:
    with pytest.raises(engine.MachineDefinitionError, match="version"):
        engine.Machine("m", ["a"], "a", [], version=0)
    assert engine.Machine("m", ["a"], "a", []).version == 1


def test_hibernated_agents_and_old_records_migrate_along_the_upgrades(impl: str) -> None:
    import engine.store as store

    v1, v2 = _v1(), _v2()
    s = store.MemoryStore()
    rt = Runtime(implementation=impl)
    store.Hibernation(rt, s)
    rt.spawn(v1, "sleeper", {"rings": 2})
    rt.spawn(v1, "awake", {"rings": 3})
    rt.send_nowait("sleeper", "push")
    rt.run_until_idle()
    store.save(rt, s)  # records of v1 (the sleeper's is overwritten by its hibernation)
    rt.hibernate("sleeper")
    rt.upgrade(v1, v2, states=MAPPING, migrate=_migrate)  # only "awake" is in memory
    assert rt.state("awake") == "closed"
    assert rt.state("sleeper") == "opened"  # woken: migrated on the way in
    assert rt.data("sleeper") == {"bells": 2, "from": "open"}
    assert rt.machine("sleeper") is v2

    fresh = Runtime(implementation=impl)  # another process: the v1 records in the store
    report = store.load(fresh, s, [v2])
    assert report.restored == []  # no upgrade declared: refused, and reported
    assert all(isinstance(e, UpgradeError) for _, e in report.failed)
    fresh = Runtime(implementation=impl)
    fresh.upgrade(v1, v2, states=MAPPING, migrate=_migrate)  # no agents: declares the step
    report = store.load(fresh, s, [v2])
    assert sorted(report.restored) == ["awake", "sleeper"]
    assert fresh.data("awake") == {"bells": 3, "from": "shut"}


def test_an_old_record_with_mail_the_new_machine_cannot_take_is_refused(impl: str) -> None:
    import engine.store as store

    v1, v2 = _v1(), _v2()
    rt = Runtime(implementation=impl)
    rt.spawn(v1, "d", {"rings": 0})
    rt.pause("d")
    rt.send_nowait("d", "kick")  # v2 has no "kick"
    s = store.MemoryStore()
    store.save(rt, s)
    fresh = Runtime(implementation=impl)
    fresh.upgrade(v1, v2, states=MAPPING, migrate=_migrate)
    ((_, error),) = store.load(fresh, s, [v2]).failed
    assert isinstance(error, UpgradeError)
    assert "'kick'" in str(error)
    assert "d" not in fresh
