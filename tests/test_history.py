"""Snapshot history: rollback in place and fork, against reference runs, on both hot paths."""

from __future__ import annotations

import random

import pytest
import trio
from long_lived import counter

import engine
import engine.store as store
from engine import DeadLetterReason, Priority, Runtime


def _with_store(impl: str) -> Runtime:
    rt = Runtime(implementation=impl)
    store.Hibernation(rt, store.MemoryStore())
    return rt


def _feed(rt: Runtime, agent: str, items: list[int]) -> None:
    for k in items:
        rt.send_nowait(agent, "inc", k)
    rt.run_until_idle()


def test_rollback_gives_the_state_a_reference_run_gives(impl: str) -> None:
    rng = random.Random(5)
    first, second, third = ([rng.randrange(100) for _ in range(n)] for n in (7, 5, 4))
    rt = _with_store(impl)
    rt.spawn(counter, "a", {"seen": []})
    _feed(rt, "a", first)
    sid = rt.snapshot("a")
    _feed(rt, "a", second)
    rt.rollback("a", to=sid)
    _feed(rt, "a", third)
    reference = Runtime(implementation=impl)
    reference.spawn(counter, "a", {"seen": []})
    _feed(reference, "a", first + third)
    assert (rt.state("a"), rt.data("a")) == (reference.state("a"), reference.data("a"))
    assert rt.statistics("a").processed == len(first + third)
    assert [s.id for s in rt.snapshots("a")] == [sid]


def test_rollback_keeps_or_dead_letters_the_mail_queued_now(impl: str) -> None:
    for mail in ("keep", "dead_letter"):
        rt = _with_store(impl)
        rt.spawn(counter, "a", {"seen": []})
        _feed(rt, "a", [1])
        sid = rt.snapshot("a")
        _feed(rt, "a", [2])
        rt.pause("a")
        rt.send_nowait("a", "inc", 3, priority=Priority.HIGH)
        rt.send_nowait("a", "inc", 4)
        rt.rollback("a", to=sid, mail=mail)
        assert rt.data("a") == {"seen": [1]}
        assert not rt.paused("a")  # the snapshot was not paused
        if mail == "keep":
            assert [p for _, _, p in rt.queued("a")] == [3, 4]
            rt.run_until_idle()
            assert rt.data("a") == {"seen": [1, 3, 4]}
        else:
            assert rt.queued("a") == []
            letters = rt.take_dead_letters()
            assert [(d.payload, d.reason) for d in letters] == [
                (3, DeadLetterReason.ROLLED_BACK), (4, DeadLetterReason.ROLLED_BACK)
            ]


def test_a_request_waiting_in_the_mailbox_survives_a_rollback(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(store=store.MemoryStore(), implementation=impl) as rt:
            rt.spawn(counter, "a", {"seen": []})
            await rt.send("a", "inc", 1)
            await rt.wait_until_idle()
            sid = rt.snapshot("a")
            await rt.send("a", "inc", 2)
            await rt.wait_until_idle()
            rt.pause("a")
            async with trio.open_nursery() as nursery:
                answers: list[object] = []

                async def ask() -> None:
                    answers.append(await rt.request("a", "ask"))

                nursery.start_soon(ask)
                await trio.sleep(0.01)
                rt.rollback("a", to=sid)  # the request stays queued, then is answered
            assert answers == [[1]]

    trio.run(main)


def test_rollback_restores_timers_and_refuses_bad_snapshots(impl: str) -> None:
    rt = _with_store(impl)
    rt.spawn(counter, "a", {"seen": []})
    rt.spawn(counter, "b", {"seen": []})
    rt.send_nowait("a", "arm", 100.0)
    rt.run_until_idle()
    sid = rt.snapshot("a")
    other = rt.snapshot("b")
    rt.send_nowait("a", "inc", 1)
    rt.run_until_idle()
    with pytest.raises(store.SnapshotNotFoundError):
        rt.rollback("a", to=other)
    for bad in (10**9, "1", True, 1.0, None):
        with pytest.raises(store.SnapshotNotFoundError):
            rt.rollback("a", to=bad)  # type: ignore[arg-type]
        if bad is not None:  # (at=None: a fork of the agent as it is now)
            with pytest.raises(store.SnapshotNotFoundError):
                rt.fork("a", "never", at=bad)
    assert "never" not in rt
    with pytest.raises(engine.InvalidArgumentError):
        rt.rollback("a", to=sid, mail="lose")
    assert rt.data("a") == {"seen": [1]}  # nothing changed
    rt.rollback("a", to=sid)
    assert rt.data("a") == {"seen": []}
    assert rt.timers("a")  # the snapshot's timer is armed again
    other_machine = engine.Machine("counter", ["x"], "x", [("x", "inc", "x")])
    rt.spawn(other_machine, "c")
    csid = rt.snapshot("c")
    rt.terminate("c")
    rt.spawn(counter, "c", {"seen": []})
    with pytest.raises(engine.UnknownStateError):
        rt.rollback("c", to=csid)  # same name, another machine: refused, unchanged
    assert rt.state("c") == "even"


def test_fork_starts_an_exact_copy_that_diverges(impl: str) -> None:
    rt = _with_store(impl)
    rt.spawn(counter, "a", {"seen": []})
    _feed(rt, "a", [1, 2])
    sid = rt.snapshot("a")
    rt.pause("a")
    rt.send_nowait("a", "inc", 3)
    rt.fork("a", "now")  # as it is now: paused, with 3 queued
    rt.fork("a", "then", at=sid)
    assert rt.queued("now") == [(Priority.NORMAL, "inc", 3)]
    assert rt.paused("now")
    rt.resume("a")
    rt.resume("now")
    _feed(rt, "then", [9])
    assert rt.data("a") == {"seen": [1, 2, 3]}
    assert rt.data("now") == {"seen": [1, 2, 3]}
    assert rt.data("then") == {"seen": [1, 2, 9]}
    rt.data("now")["seen"].append("mine")  # nothing is shared
    assert rt.data("a") == {"seen": [1, 2, 3]}
    with pytest.raises(engine.AgentExistsError):
        rt.fork("a", "then")


def test_fork_without_a_store_copies_the_live_agent(impl: str) -> None:
    rt = Runtime(implementation=impl)
    rt.spawn(counter, "a", {"seen": [1]})
    rt.fork("a", "b")
    rt.data("b")["seen"].append(2)
    assert (rt.data("a"), rt.data("b")) == ({"seen": [1]}, {"seen": [1, 2]})
    with pytest.raises(engine.InvalidArgumentError, match="no store"):
        rt.snapshot("a")


def test_retention_keeps_the_newest_snapshots(impl: str) -> None:
    rt = _with_store(impl)
    rt.spawn(counter, "a", {"seen": []})
    ids = [rt.snapshot("a", keep=3) for _ in range(5)]
    assert [s.id for s in rt.snapshots("a")] == ids[-3:]
    with pytest.raises(engine.InvalidArgumentError):
        rt.snapshot("a", keep=0)
    assert [s.id for s in rt.snapshots("a")] == ids[-3:]  # nothing written
