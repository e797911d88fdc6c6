"""Hibernation: agents written to the store and out of memory, woken by whatever names them.
Every test runs on both hot paths."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from long_lived import counter

import engine
import engine.store as store
from engine import AgentStatus, Priority, Runtime


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _runtime(impl: str, clock: Clock | None = None) -> tuple[Runtime, store.Hibernation]:
    rt = Runtime(implementation=impl, clock=clock)
    return rt, store.Hibernation(rt, store.MemoryStore())


def test_a_hibernated_agent_wakes_to_process_its_mail_as_an_awake_one_would(impl: str) -> None:
    rng = random.Random(13)
    mail = [(rng.randrange(4), k) for k in range(1000)]
    results = []
    for sleep in (False, True):
        rt, hib = _runtime(impl)
        rt.spawn(counter, "a", {"seen": []})
        rt.send_nowait("a", "inc", "before")
        rt.run_until_idle()
        if sleep:
            rt.hibernate("a")
            assert rt.status("a") is AgentStatus.HIBERNATED
            assert "a" in rt
            assert len(rt) == 0
            assert rt.hibernated_ids() == ["a"]
            assert rt.agent_ids() == []
        for priority, k in mail:
            rt.send_nowait("a", "inc", k, priority=priority)
        assert rt.status("a") is AgentStatus.PROCESSING  # awake again, mail queued
        rt.run_until_idle()
        results.append((rt.state("a"), rt.data("a"), rt.statistics("a").processed))
        assert rt.statistics().processed == 1001
    assert results[0] == results[1]
    assert (hib.hibernations, hib.woken) == (1, 1)


def test_anything_naming_a_hibernated_agent_wakes_it(impl: str) -> None:
    rt, hib = _runtime(impl)
    for name in ("a", "b"):
        rt.spawn(counter, name, {"seen": [name]})
    since = rt.status_since("a")
    rt.hibernate("a")
    assert rt.status_since("a") >= since
    assert rt.data("a") == {"seen": ["a"]}  # a read wakes it too
    assert rt.status("a") is AgentStatus.IDLE
    rt.hibernate("a")
    rt.send_nowait("b", "relay", ("a", "from b"))  # a Send action, inside a run
    rt.run_until_idle()
    assert rt.data("a") == {"seen": ["a", "from b"]}
    rt.hibernate("a")
    rt.send_many(["b", "a", "a"], ["inc", "inc", "inc"], payloads=[1, 2, 3])
    rt.run_until_idle()
    assert rt.data("a")["seen"][-2:] == [2, 3]
    rt.hibernate("a")
    assert rt.terminate("a") == 0  # woken, then terminated
    assert "a" not in rt
    with pytest.raises(engine.AgentNotFoundError):
        rt.status("a")
    assert hib.woken == 4


def _asleep_with_a_timer(impl: str) -> tuple[Runtime, Clock]:
    """Agent "a", hibernated with a timer due at 5.0 on a clock at 0."""
    clock = Clock()
    rt, _ = _runtime(impl, clock)
    rt.spawn(counter, "a", {"seen": []})
    rt.send_nowait("a", "arm", 5.0)
    rt.run_until_idle()
    rt.hibernate("a")
    return rt, clock


def test_a_timer_wakes_a_hibernated_agent_at_its_deadline(impl: str) -> None:
    rt, clock = _asleep_with_a_timer(impl)
    assert rt.next_deadline() == 5.0
    clock.now = 4.9
    rt.fire_timers()
    assert rt.status("a") is AgentStatus.HIBERNATED
    clock.now = 5.0
    rt.fire_timers()  # wakes it; its own timer, re-armed overdue, fires now
    rt.fire_timers()
    rt.run_until_idle()
    assert rt.data("a") == {"seen": ["ding"]}
    assert rt.next_deadline() is None


def test_a_woken_agent_drops_its_wake_up_timer(impl: str) -> None:
    rt, clock = _asleep_with_a_timer(impl)
    rt.send_nowait("a", "inc", 1)  # woken by mail before the deadline
    rt.run_until_idle()
    clock.now = 6.0
    assert rt.fire_timers() == 1  # its own timer only
    rt.run_until_idle()
    assert rt.data("a") == {"seen": [1, "ding"]}


def test_hibernate_refuses_what_it_cannot_do_and_changes_nothing(impl: str) -> None:
    rt = Runtime(implementation=impl)
    rt.spawn(counter, "a", {"seen": []})
    with pytest.raises(engine.InvalidArgumentError, match="no store"):
        rt.hibernate("a")
    store.Hibernation(rt, store.MemoryStore())
    with pytest.raises(engine.InvalidArgumentError, match="already has"):
        store.Hibernation(rt, store.MemoryStore())
    rt.send_nowait("a", "inc", 1)
    with pytest.raises(engine.AgentBusyError, match="mail"):
        rt.hibernate("a")
    assert rt.queued("a") == [(Priority.NORMAL, "inc", 1)]
    with pytest.raises(engine.AgentNotFoundError):
        rt.hibernate("nobody")
    with pytest.raises(engine.AgentNotFoundError):
        rt.wake("nobody")
    assert rt.wake("a") is False  # resident

    sleepy = engine.Machine("sleepy", ["s"], "s", [("s", "go", "s")])

    @sleepy.handler("s", "go")
    def go(agent: engine.AgentContext, event: engine.Event) -> None:
        rt.hibernate("a")

    rt.spawn(sleepy, "s")
    rt.send_nowait("s", "go")
    rt.run_until_idle()  # a, with mail, is processed; then s's handler is refused:
    error = rt.last_error("s")
    assert isinstance(error, engine.HandlerError)
    assert isinstance(error.__cause__, engine.RuntimeBusyError)
    assert rt.status("a") is AgentStatus.IDLE
    rt.hibernate("a")
    with pytest.raises(engine.AgentExistsError):
        rt.spawn(counter, "a")
    assert rt.status("a") is AgentStatus.HIBERNATED


def test_a_missing_record_is_a_typed_error(impl: str) -> None:
    rt = Runtime(implementation=impl)
    s = store.MemoryStore()
    store.Hibernation(rt, s)
    rt.spawn(counter, "a", {"seen": []})
    rt.hibernate("a")
    s.forget(store.agent_key("a"))
    with pytest.raises(store.CorruptRecordError, match="not in the store"):
        rt.send_nowait("a", "inc", 1)
    assert rt.status("a") is AgentStatus.HIBERNATED


def test_sweep_hibernates_idle_and_least_recently_used_agents(impl: str) -> None:
    clock = Clock()
    rt, hib = _runtime(impl, clock)
    for i in range(10):
        clock.now = float(i)
        rt.spawn(counter, i, {"seen": []})
    clock.now = 10.0
    rt.send_nowait(9, "inc", 1)  # mail queued: never hibernated
    assert hib.sweep(idle_for=7.5) == 3  # idle since 0, 1 and 2
    assert sorted(rt.hibernated_ids()) == [0, 1, 2]
    assert hib.sweep(max_resident=4) == 3  # the least recently used: 3, 4, 5
    assert sorted(rt.agent_ids()) == [6, 7, 8, 9]
    assert rt.statistics().hibernated == 6


def test_open_runtime_hibernates_by_policy_and_wakes_on_requests(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(
            store=store.MemoryStore(), hibernate_after=10.0, implementation=impl
        ) as rt:
            for i in range(3):
                rt.spawn(counter, i, {"seen": []})
            await trio.sleep(5)
            await rt.send(0, "inc", "x")
            await trio.sleep(6)  # 1 and 2 idle for 11 s; 0 for 6 s
            assert sorted(rt.hibernated_ids()) == [1, 2]
            assert await rt.request(1, "ask") == []
            assert rt.status(1) is AgentStatus.IDLE
            await trio.sleep(20)
            assert sorted(rt.hibernated_ids()) == [0, 1, 2]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hibernate_after": 1.0}, "need a store"),
        ({"store": store.MemoryStore(), "durability": "snapshot", "max_resident": 5},
         "need a store"),
        ({"store": store.MemoryStore(), "hibernate_after": -1}, ">= 0"),
        ({"store": store.MemoryStore(), "max_resident": 1.5}, "max_resident"),
    ],
)
def test_bad_hibernation_settings_are_typed_errors(kwargs: dict[str, Any], match: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(**kwargs):
            pass

    with pytest.raises(engine.InvalidArgumentError, match=match):
        trio.run(main)


def test_under_the_commit_log_hibernation_records_join_the_rounds(
    impl: str, tmp_path: Path
) -> None:
    s = store.SQLiteStore(tmp_path / "h.db")

    async def main() -> None:
        async with engine.open_runtime(store=s, durability="log", implementation=impl) as rt:
            for i in range(3):
                rt.spawn(counter, i, {"seen": []})
            await rt.send(0, "inc", 1)
            await rt.wait_until_idle()
            rt.hibernate(0)
            assert rt.data(0) == {"seen": [1]}  # woken from memory or from the store
            rt.hibernate(0)
            rt.hibernate(1)
            await rt.flush()
            assert rt._sleeper._pending == {}  # written: no copies kept in memory
            await rt.send(1, "inc", 2)  # woken from the store
            await rt.wait_until_idle()
            await rt.flush()

    trio.run(main)
    rt = Runtime(implementation=impl)
    store.load(rt, s, [counter])
    assert {i: rt.data(i)["seen"] for i in range(3)} == {0: [1], 1: [2], 2: []}
    s.close()


def test_agents_hibernated_past_their_time_to_live_expire(impl: str) -> None:
    clock = Clock()
    rt, hib = _runtime(impl, clock)
    for i in range(4):
        rt.spawn(counter, i, {"seen": []})
    rt.send_nowait(3, "arm", 50.0)  # its wake-up timer goes with it
    rt.run_until_idle()
    processed = rt.statistics().processed
    rt.hibernate(0)
    rt.hibernate(3)
    clock.now = 10.0
    rt.hibernate(1)
    assert hib.expire(idle_for=10.0) == [0, 3]
    assert hib.expire(idle_for=10.0) == []
    assert list(hib.expired_ids) == [0, 3]
    assert rt.statistics().expired == 2
    assert rt.statistics().processed == processed  # their counts stay in the totals
    assert 0 not in rt
    assert 1 in rt
    with pytest.raises(engine.AgentNotFoundError):
        rt.send_nowait(0, "inc", 1)
    assert hib.store.latest([store.agent_key(0)])[0].record == store.TOMBSTONE
    assert rt.next_deadline() is None
    rt.spawn(counter, 0, {"seen": ["new"]})  # the id is free again
    assert rt.data(0) == {"seen": ["new"]}


def test_open_runtime_expires_by_policy_under_the_commit_log(impl: str) -> None:
    s = store.MemoryStore()

    async def main() -> None:
        async with engine.open_runtime(
            store=s, durability="log", hibernate_after=5.0, expire_after=20.0,
            implementation=impl,
        ) as rt:  # fmt: skip
            rt.spawn(counter, "a", {"seen": []})
            await trio.sleep(10)
            assert rt.status("a") is AgentStatus.HIBERNATED
            await trio.sleep(25)
            assert "a" not in rt
            assert rt.statistics().expired == 1
            await rt.flush()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    fresh = Runtime(implementation=impl)
    assert store.load(fresh, s, [counter]).restored == []  # the tombstone wins


def test_a_restart_keeps_hibernated_agents_asleep(impl: str, tmp_path: Path) -> None:
    path = tmp_path / "sleep.db"
    clock = Clock()
    rt = Runtime(implementation=impl, clock=clock)
    first = store.SQLiteStore(path)
    store.Hibernation(rt, first)
    for name in ("awake", "sleeper", "timed"):
        rt.spawn(counter, name, {"seen": [name]})
    rt.send_many(["sleeper", "timed"], ["inc", "arm"], payloads=[1, 30.0])
    rt.run_until_idle()
    rt.hibernate("sleeper")
    rt.hibernate("timed")
    store.save(rt, first)  # the resident agent too
    first.close()

    clock2 = Clock()
    again = Runtime(implementation=impl, clock=clock2)
    second = store.SQLiteStore(path)
    store.Hibernation(again, second)
    report = store.load(again, second, [counter])
    assert (report.restored, sorted(report.hibernated), report.failed) == (
        ["awake"], ["sleeper", "timed"], []
    )
    assert again.agent_ids() == ["awake"]
    assert again.status("sleeper") is AgentStatus.HIBERNATED
    assert again.statistics().processed == 2  # the sleepers' counts are in the totals
    deadline = again.next_deadline()
    assert deadline is not None
    assert 29.0 < deadline <= 30.0  # the wake-up of "timed", on this runtime's clock
    again.send_nowait("sleeper", "inc", 2)
    again.run_until_idle()
    assert again.data("sleeper") == {"seen": ["sleeper", 1, 2]}
    clock2.now = 30.0
    again.fire_timers()
    again.fire_timers()
    again.run_until_idle()
    assert again.data("timed") == {"seen": ["timed", "ding"]}

    plain = Runtime(implementation=impl)  # no store to wake them from: all restored
    assert sorted(store.load(plain, second, [counter]).restored) == ["awake", "sleeper", "timed"]
    second.close()


def test_open_runtime_restores_hibernated_agents_asleep(impl: str, tmp_path: Path) -> None:
    path = tmp_path / "h.db"

    async def first() -> None:
        async with engine.open_runtime(
            store=store.SQLiteStore(path), durability="log", implementation=impl
        ) as rt:
            for i in range(3):
                rt.spawn(counter, i, {"seen": []})
            await rt.send(1, "inc", "x")
            await rt.wait_until_idle()
            rt.hibernate(1)
            rt.hibernate(2)

    async def second() -> None:
        async with engine.open_runtime(
            store=store.SQLiteStore(path), durability="log", restore=[counter],
            implementation=impl,
        ) as rt:  # fmt: skip
            assert rt.recovery.restored == [0]
            assert sorted(rt.recovery.hibernated) == [1, 2]
            assert rt.data(1) == {"seen": ["x"]}  # woken from the store

    trio.run(first)
    trio.run(second)


def test_on_mock_clock_a_timer_wakes_a_hibernated_agent_at_its_deadline(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(store=store.MemoryStore(), implementation=impl) as rt:
            rt.spawn(counter, "a", {"seen": []})
            await rt.send("a", "arm", 100.0)
            await rt.wait_until_idle()
            start = trio.current_time()
            rt.hibernate("a")
            await trio.sleep(99.9)
            assert rt.status("a") is AgentStatus.HIBERNATED
            await trio.sleep(0.2)
            await rt.wait_until_idle()
            assert rt.status("a") is AgentStatus.IDLE
            assert rt.data("a") == {"seen": ["ding"]}
            assert trio.current_time() - start < 100.5

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


class _Hostile:
    """An id whose hash works once (so a lookup gets past the dispatcher) and then fails."""

    def __init__(self) -> None:
        self.calls = 0

    def __hash__(self) -> int:
        self.calls += 1
        if self.calls > 1:
            raise ValueError("no hash today")
        return 7

    def __eq__(self, other: object) -> bool:
        raise ValueError("no comparison either")


def test_hostile_ids_naming_no_agent_are_typed_errors_with_hibernation(impl: str) -> None:
    rt, _ = _runtime(impl)
    rt.spawn(counter, "a", {"seen": []})
    rt.hibernate("a")
    for bad in ([1], _Hostile(), None, float("nan")):
        with pytest.raises(engine.AgentNotFoundError):
            rt.send_nowait(bad, "inc", 1)
        with pytest.raises((engine.AgentNotFoundError, engine.InvalidArgumentError)):
            rt.wake(bad)
        assert bad not in rt
    assert rt.status("a") is AgentStatus.HIBERNATED  # nothing woke it


def test_a_migration_that_names_the_waking_agent_does_not_wake_it_twice(impl: str) -> None:
    v2 = engine.Machine(
        "counter", ["even", "odd"], "even", [("even", "inc", "odd"), ("odd", "inc", "even")],
        events=["inc", "relay", "ding", "arm", "ask"], unhandled="ignore", version=2,
    )  # fmt: skip
    rt, _ = _runtime(impl)
    rt.spawn(counter, "a", {"seen": []})
    rt.hibernate("a")
    seen: list[str] = []

    def migrate(state: str, data: Any) -> Any:
        try:
            rt.send_nowait("a", "inc", "from migrate")  # re-entrant: "a" is waking
        except engine.AgentNotFoundError as exc:
            seen.append(type(exc).__name__)
        return data

    rt.upgrade(counter, v2, migrate=migrate)  # "a" sleeps: it migrates when it wakes
    rt.send_nowait("a", "inc", 1)
    rt.run_until_idle()
    assert seen == ["AgentNotFoundError"]
    assert rt.machine("a") is v2
    assert rt.state("a") == "odd"  # the one message, taken once (v2 has no handlers)
    assert rt.statistics("a").processed == 1
