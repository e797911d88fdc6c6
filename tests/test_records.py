"""The transition record stream: never a silent hole, cancel-safe reads, batches as numpy
columns, ids of terminated agents, hostile arguments and payloads. Both hot paths, on
``trio.testing.MockClock``."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

import engine
from engine import Gap, InvalidArgumentError, Machine, Priority, Step, Transition, open_runtime
from engine.core._actions import NextEvent


def run(fn: Callable[[], Awaitable[None]]) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def toggle() -> Machine:
    """Table only: the drain loop's compiled path (no handler) records these steps."""
    return Machine(
        "toggle", ["off", "on"], "off", [("off", "flip", "on", "lit"), ("on", "flip", "off", None)]
    )


def counted() -> Machine:
    """A handler on every step: the general path."""
    m = Machine("counted", ["idle", "busy"], "idle", [], events=["add", "twice"])

    @m.handler("*", "add")
    def add(ctx: Any, ev: Any) -> Step:
        ctx.data = (ctx.data or 0) + 1
        return Step(state="busy" if ctx.data % 2 else "idle", outputs=[ctx.data, ev.payload])

    @m.handler("*", "twice")
    def twice(ctx: Any, ev: Any) -> Step:
        return Step(actions=[NextEvent("add", ev.payload)])

    return m


class Incomparable:
    """An agent id whose ``==`` raises (hashable, so it can be an id)."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing")

    def __hash__(self) -> int:
        return 1


def contiguous(items: list[Any], start: int) -> int:
    """Check that ``items`` (records and gaps) cover ``start`` onwards with no hole; return
    the first sequence number after them."""
    seq = start
    for item in items:
        assert item.seq == seq, (item, seq)
        seq += item.missed if isinstance(item, Gap) else 1
    return seq


def count(items: list[Any]) -> int:
    """Records in ``items``, a Gap counting what it missed."""
    return sum(1 if isinstance(r, Transition) else r.missed for r in items)


async def feed(rt: Any, agent: Any, n: int, chunk: int = 500) -> None:
    for i in range(0, n, chunk):
        for _ in range(min(chunk, n - i)):
            rt.send_nowait(agent, "flip")
        await trio.sleep(0.001)
    await rt.wait_until_idle()


@pytest.mark.parametrize(
    ("settings", "lossless"),
    [({}, False), ({"retention": 64}, False), ({"record": True, "retention": 200_000}, True)],
    ids=["default", "small-retention", "record"],
)
def test_a_reader_that_reconnects_misses_nothing_silently(
    impl: str, settings: dict[str, Any], lossless: bool
) -> None:
    """10⁵ steps, a reader that disconnects at four random points and resumes from its cursor:
    every record after the cursor arrives, or a Gap counts it."""
    n = 100_000
    rng = random.Random(7)
    stops = sorted(rng.sample(range(1, n), 4))

    async def main() -> None:
        async with open_runtime(implementation=impl, **settings) as rt:
            rt.spawn(toggle(), "t")
            got: list[Any] = []
            cursor = rt._d.record_seq
            start = cursor
            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed, rt, "t", n)
                for stop in [*stops, n]:
                    async with rt.subscribe("t", from_seq=cursor) as sub:
                        while count(got) < stop:
                            got.extend(await sub.batch(rng.randrange(1, 3000)))
                        cursor = sub.seq
                    for _ in range(rng.randrange(1, 5)):  # away while records go by
                        await trio.sleep(0.001)
            assert contiguous(got, start) == start + n
            missed = sum(r.missed for r in got if isinstance(r, Gap))
            records = [r for r in got if isinstance(r, Transition)]
            assert len(records) + missed == n
            if lossless:
                assert missed == 0
            # the records are the agent's steps, in order: off/on alternate
            for r in records:
                expected = ("off", "on") if r.seq % 2 == start % 2 else ("on", "off")
                assert (r.source, r.target) == expected

    run(main)


def test_no_subscriber_numbers_steps_but_keeps_nothing(impl: str) -> None:
    rt = engine.Runtime(implementation=impl)
    rt.spawn(toggle(), "t")
    for _ in range(10):
        rt.send_nowait("t", "flip")
    rt.run_until_idle()
    assert rt._d.record_seq == 10
    assert rt._d.recording == 0
    batch = rt.records(from_seq=3)
    assert len(batch) == 0
    assert batch.gap == Gap(3, 7)
    assert rt.transitions() == []


def test_record_true_keeps_the_last_retention(impl: str) -> None:
    rt = engine.Runtime(implementation=impl, record=True, retention=5)
    rt.spawn(toggle(), "t")
    for i in range(12):
        rt.send_nowait("t", "flip", payload=i, priority=i % 4)
    rt.run_until_idle()
    assert [t.seq for t in rt.transitions()] == [7, 8, 9, 10, 11]
    # lanes first: URGENT (3, 7, 11), HIGH, NORMAL, then LOW (0, 4, 8)
    assert [t.payload for t in rt.transitions()] == [5, 9, 0, 4, 8]
    batch = rt.records(from_seq=0)
    assert batch.gap == Gap(0, 7)
    assert batch.seq.tolist() == [7, 8, 9, 10, 11]
    assert batch.events().tolist() == ["flip"] * 5
    assert batch.priority.tolist() == [1, 1, 0, 0, 0]
    assert [batch.outputs(i) for i in range(5)] == [(), ("lit",), (), ("lit",), ()]
    assert rt.records(from_seq=9, limit=1).seq.tolist() == [9]


def test_columns_carry_what_a_replay_needs(impl: str) -> None:
    rt = engine.Runtime(implementation=impl, record=True)
    rt.spawn(counted(), "c")
    rt.spawn(toggle(), "t")
    rt.send_nowait("c", "add", payload={"k": 1}, priority=Priority.HIGH)
    rt.send_nowait("t", "flip")
    rt.send_nowait("c", "twice", payload="x")
    rt.run_until_idle()
    ts = rt.transitions()
    seen = [
        (t.agent_id, t.source, t.event, t.target, t.outputs, t.payload, t.priority, t.front)
        for t in ts
    ]
    assert seen == [
        ("c", "idle", "add", "busy", (1, {"k": 1}), {"k": 1}, 2, False),  # c's turn first
        ("c", "busy", "twice", "busy", (), "x", 1, False),
        ("c", "busy", "add", "idle", (2, "x"), "x", 1, True),
        ("t", "off", "flip", "on", ("lit",), None, 1, False),
    ]
    batch = rt.records()
    assert batch.front().tolist() == [False, False, True, False]
    assert batch.sources().tolist() == ["idle", "busy", "busy", "off"]
    assert batch.targets().tolist() == ["busy", "busy", "idle", "on"]
    assert batch.agent_ids == ["c", "c", "c", "t"]
    assert batch.transitions() == ts
    assert isinstance(batch.time, np.ndarray)
    assert batch.time.dtype == np.float64


def test_records_keep_the_ids_of_terminated_agents(impl: str) -> None:
    """A slot is reused after a termination; records made before keep the old id."""
    rt = engine.Runtime(implementation=impl, record=True)
    m = toggle()
    rt.spawn(m, "a")
    rt.send_nowait("a", "flip")
    rt.run_until_idle()
    rt.terminate("a")
    rt.spawn(m, "b")  # takes a's slot
    rt.send_nowait("b", "flip")
    rt.run_until_idle()
    rt.terminate("b")
    rt.spawn(m, "a")  # a again, a new agent in the same slot
    rt.send_nowait("a", "flip")
    rt.run_until_idle()
    assert [t.agent_id for t in rt.transitions()] == ["a", "b", "a"]
    assert rt.records().agent_ids == ["a", "b", "a"]


def test_one_agent_subscription_after_slot_reuse(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl, record=True) as rt:
            m = toggle()
            rt.spawn(m, "a")
            async with rt.subscribe("b", from_seq=0) as only_b:
                rt.send_nowait("a", "flip")
                await rt.wait_until_idle()
                rt.terminate("a")
                rt.spawn(m, "b")
                rt.send_nowait("b", "flip")
                rt.send_nowait("b", "flip")
                await rt.wait_until_idle()
                batch = await only_b.columns()
                assert batch.agent_ids == ["b", "b"]
                assert batch.seq.tolist() == [1, 2]
                assert batch.gap is None

    run(main)


async def read_with_cancellations(sub: Any, how: str, rng: random.Random, want: int) -> list[Any]:
    """Read ``want`` records, cancelling reads at random (before they start, or while they
    wait for records); return what the reads handed out."""
    got: list[Any] = []
    while count(got) < want:
        with trio.CancelScope() as scope:
            if rng.random() < 0.3:
                scope.cancel()  # cancelled at the read's first checkpoint
            elif rng.random() < 0.3:
                scope.deadline = trio.current_time() + 1e-7  # maybe while parked
            if how == "next":
                got.append(await sub.__anext__())
            elif how == "batch":
                got.extend(await sub.batch(rng.randrange(1, 50)))
            else:
                cols = await sub.columns(rng.randrange(1, 50))
                if cols.gap is not None:
                    got.append(cols.gap)
                got.extend(cols)
        await trio.sleep(0)
    return got


@pytest.mark.parametrize("how", ["next", "batch", "columns"])
def test_cancelled_reads_lose_nothing(impl: str, how: str) -> None:
    n = 3000

    async def main() -> None:
        async with open_runtime(implementation=impl, record=True, retention=n) as rt:
            rt.spawn(toggle(), "t")
            async with rt.subscribe(from_seq=0) as sub, trio.open_nursery() as nursery:
                nursery.start_soon(feed, rt, "t", n, 37)
                got = await read_with_cancellations(sub, how, random.Random(how), n)
            assert contiguous(got, 0) == n
            assert not any(isinstance(r, Gap) for r in got)
            assert got == rt.transitions()

    run(main)


def test_a_cancelled_read_keeps_its_gap(impl: str) -> None:
    """The Gap is handed out by the next read when the one that found it is cancelled."""

    async def main() -> None:
        async with open_runtime(implementation=impl, retention=4) as rt:
            rt.spawn(toggle(), "t")
            async with rt.subscribe() as sub:
                for _ in range(10):
                    rt.send_nowait("t", "flip")
                await rt.wait_until_idle()
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await sub.__anext__()
                assert sub.seq == 0
                first = await sub.__anext__()
                assert first == Gap(0, 6)
                assert [r.seq for r in await sub.batch()] == [6, 7, 8, 9]

    run(main)


def test_dead_letter_reads_are_cancel_safe(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.spawn(toggle(), "t")
            async with rt.watch_dead_letters() as letters:
                rt.send_nowait("t", "flip")
                rt.send_nowait("t", "flip")
                rt.terminate("t")
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await letters.__anext__()
                assert letters.seq == 0
                got = [await letters.__anext__(), await letters.__anext__()]
                assert [d.event for d in got] == ["flip", "flip"]
                assert letters.seq == 2

    run(main)


@pytest.mark.parametrize("bad", [-1, 2**70, 1.5, True, "3", None])
def test_bad_cursors_are_refused(impl: str, bad: Any) -> None:
    rt = engine.Runtime(implementation=impl, record=True)
    if bad is not None:
        with pytest.raises(InvalidArgumentError):
            rt.records(from_seq=bad)
    with pytest.raises(InvalidArgumentError):
        rt.records(limit=-1 if bad is None else bad)

    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            if bad is not None:
                with pytest.raises(InvalidArgumentError):
                    async with rt.subscribe(from_seq=bad):
                        pass
            assert rt._d.recording == 0  # nothing left attached

    run(main)


def test_a_cursor_past_the_end_waits_for_that_record(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.spawn(toggle(), "t")
            async with rt.subscribe(from_seq=3) as sub:
                with trio.move_on_after(1):
                    await sub.__anext__()
                    raise AssertionError("nothing was recorded yet")
                for _ in range(5):
                    rt.send_nowait("t", "flip")
                first = await sub.__anext__()
                assert first.seq == 3

    run(main)


def test_payload_released_by_the_ring_may_reenter(impl: str) -> None:
    """Overwritten records drop their payloads; a payload whose ``__del__`` sends mail
    corrupts neither the ring nor a mailbox."""
    rt = engine.Runtime(implementation=impl, record=True, retention=2)
    rt.spawn(toggle(), "t")
    rt.spawn(toggle(), "u")
    sent: list[int] = []

    class Haunted:
        def __del__(self) -> None:
            sent.append(1)
            rt.send_nowait("u", "flip")

    for _ in range(6):
        rt.send_nowait("t", "flip", payload=Haunted())
    while rt.run_until_idle():
        pass
    # u's steps overwrote every record of t: all six payloads were released, each sent once
    assert len(sent) == 6
    assert rt.statistics("u").processed == 6
    assert [t.agent_id for t in rt.transitions()] == ["u", "u"]
    assert rt._d.record_seq == 12


def test_an_id_whose_eq_raises_is_just_another_agent(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl, record=True) as rt:
            rt.spawn(toggle(), "t")
            odd = Incomparable()
            rt.spawn(toggle(), odd)
            async with rt.subscribe("t", from_seq=0) as sub:
                rt.send_nowait(odd, "flip")
                rt.send_nowait("t", "flip")
                batch = await sub.columns()
                assert batch.agent_ids == ["t"]

    run(main)


def test_the_ring_gives_back_each_payload_reference_once(impl: str) -> None:
    """Records with and without payloads interleaved in a small ring: every reference the
    ring took is returned once, and a record without a payload never shows an old one."""
    import sys

    rt = engine.Runtime(implementation=impl, record=True, retention=2)
    rt.spawn(toggle(), "t")
    p = object()
    base = sys.getrefcount(p)
    for payload in [p, None, None, "x", "y", None, None, "z", p, None, "w"]:
        rt.send_nowait("t", "flip", payload=payload)
        rt.run_until_idle()
        got = rt.transitions()
        assert got[-1].payload is payload
    assert [t.payload for t in rt.transitions()] == [None, "w"]
    assert sys.getrefcount(p) == base
    rt._d.record(0)
    assert sys.getrefcount(p) == base


def test_an_agent_filter_finds_an_id_spawned_again_elsewhere(impl: str) -> None:
    """"a" is terminated, its slot reused, and "a" spawned again in another slot: a reader
    of "a" gets the records of both."""

    async def main() -> None:
        async with open_runtime(implementation=impl, record=True) as rt:
            m = toggle()
            rt.spawn(m, "a")
            async with rt.subscribe("a", from_seq=0) as only_a:
                rt.send_nowait("a", "flip")
                await rt.wait_until_idle()
                rt.terminate("a")
                rt.spawn(m, "b")  # takes a's slot
                rt.spawn(m, "a")  # another slot
                rt.send_nowait("a", "flip")
                rt.send_nowait("b", "flip")
                await rt.wait_until_idle()
                batch = await only_a.columns()
                assert batch.agent_ids == ["a", "a"]
                assert batch.seq.tolist() == [0, 1]

    run(main)


def test_terminations_kept_for_ids_stay_bounded(impl: str) -> None:
    """Agents spawned and terminated (hibernation does that) while few steps are made: the
    terminations kept for the ids of old records do not grow without bound."""
    rt = engine.Runtime(implementation=impl, record=True, retention=16)
    m = toggle()
    rt.spawn(m, "steady")
    rt.send_nowait("steady", "flip")
    rt.run_until_idle()
    for i in range(5000):
        rt.spawn(m, i)
        rt.terminate(i)
    assert rt._d.record_gone <= 1024
    assert [t.agent_id for t in rt.transitions()] == ["steady"]


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, 2**40])
def test_bad_read_limits_are_refused(impl: str, limit: Any) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl, record=True) as rt:
            rt.spawn(toggle(), "t")
            rt.send_nowait("t", "flip")
            async with rt.subscribe(from_seq=0) as sub:
                for read in (sub.batch, sub.columns):
                    with pytest.raises(InvalidArgumentError):
                        await read(limit)
                assert sub.seq == 0
                assert [r.seq for r in await sub.batch(1)] == [0]

    run(main)


def test_a_dead_letter_filter_survives_ids_whose_eq_raises(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            odd = Incomparable()
            rt.spawn(toggle(), odd)
            rt.spawn(toggle(), "t")
            async with rt.watch_dead_letters("t") as letters:
                rt.send_nowait(odd, "flip")
                rt.send_nowait("t", "flip")
                rt.terminate(odd)
                rt.terminate("t")
                letter = await letters.__anext__()
                assert letter.agent_id == "t"

    run(main)


def test_a_payload_del_that_reads_the_ring_sees_it_whole(impl: str) -> None:
    rt = engine.Runtime(implementation=impl, record=True, retention=2)
    rt.spawn(toggle(), "t")
    seen: list[list[int]] = []

    class Reader:
        def __del__(self) -> None:
            seen.append([t.seq for t in rt.transitions()])

    for _ in range(4):
        rt.send_nowait("t", "flip", payload=Reader())
    rt.run_until_idle()
    looked = [seqs for seqs in seen if seqs]  # (dropping the ring at the end: it is empty)
    assert len(looked) >= 2  # the two payloads overwritten during the run
    for seqs in looked:  # whenever it looked, the ring held consecutive records, two of them
        assert seqs == list(range(seqs[0], seqs[0] + 2))
    rt._d.record(0)
