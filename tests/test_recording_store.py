"""Recordings kept in a store (``engine.store.save_recording`` / ``load_recording`` /
``record_to_store``): a mixed recording round-trips exactly in every store; a simulation
recorded under ``open_runtime`` on virtual time replays from the store step for step, and a
changed handler is reported at its first record; gaps, unencodable values, failing stores,
damaged and hostile chunks, agents in the same store and bad arguments. Both hot paths."""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]
import pytest
import trio
import trio.testing
from flaky_store import FlakyStore
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import (
    Gap,
    InvalidArgumentError,
    Machine,
    NextEvent,
    Postpone,
    Runtime,
    RuntimeNotRunningError,
    Send,
    Step,
    StoreError,
    Timer,
    Transition,
    open_runtime,
    replay,
    store,
)
from engine.store import (
    Codec,
    CodecError,
    CorruptRecordError,
    RecordingNotFoundError,
    forget_recording,
    load_recording,
    record_to_store,
    recordings,
    save_recording,
)
from engine.store._chunk import CHUNK, array_head, frame_chunk

N = 8


def mock_run(fn: Any, *args: Any) -> Any:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


class Point:
    """A user type, registered on a codec."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


def point_codec() -> Codec:
    codec = Codec()
    codec.register(Point, "point", lambda p: [p.x, p.y], lambda v: Point(*v))
    return codec


def courier(changed_at: int | None = None) -> Machine:
    """Agents in a ring pass numbered mail on; every fifth rests (a timer wakes it), a seventh
    counts twice (a NextEvent), mail arriving while resting waits (Postpone). With
    ``changed_at``, the handler's outputs differ for the mail numbered so (a changed
    handler)."""
    m = Machine("courier", ["ready", "resting"], "ready", [], events=["mail", "wake", "count"])

    @m.handler("ready", "mail")
    def mail(ctx: Any, ev: Any) -> Step:
        n = ev.payload["n"]
        ctx.data = (ctx.data or 0) + n
        actions: list[Any] = []
        if n < 120:
            actions.append(Send((ctx.agent_id + 1) % N, "mail", {"n": n + 1}, priority=n % 4))
        tag = "changed" if n == changed_at else "pass"
        if n % 5 == 0:
            actions.append(Timer("rest", 1.5, "wake", (n, "rested")))
            return Step(state="resting", outputs=[(tag, n)], actions=actions)
        if n % 7 == 0:
            actions.append(NextEvent("count", {n}))
        return Step(outputs=[(tag, n)], actions=actions)

    @m.handler("resting", "mail")
    def held(ctx: Any, ev: Any) -> Step:
        return Step(actions=[Postpone()])

    @m.handler("*", "count")
    def count(ctx: Any, ev: Any) -> Step:
        return Step(outputs=[("count", ev.payload)])

    @m.handler("resting", "wake")
    def wake(ctx: Any, ev: Any) -> Step:
        return Step(state="ready", outputs=[ev.payload])

    return m


def spawn_all(machine: Machine) -> Any:
    def setup(rt: Runtime) -> None:
        for i in range(N):
            rt.spawn(machine, i)

    return setup


def finals(rt: Runtime) -> dict[int, tuple[str, Any]]:
    return {i: (rt.state(i), rt.data(i)) for i in range(N)}


async def play(rt: Runtime) -> None:
    """Start three letters and run until every letter stopped and every timer fired."""
    for k in range(3):
        rt.send_nowait(k * 3 % N, "mail", {"n": k * 40}, priority=k)
    while True:
        await rt.wait_until_idle()
        if not rt.statistics().timers:
            return
        await trio.sleep(1)


# -- stores ---------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[store.Store]:
    made: store.Store
    if request.param == "memory":
        made = store.MemoryStore()
    elif request.param == "sqlite":
        made = store.SQLiteStore(tmp_path / "rec.db")
    else:  # a real server (tests/pg.py), a fresh database
        made = store.PostgresStore(request.getfixturevalue("postgres_db"))
    yield made
    made.close()


# -- round trips ----------------------------------------------------------------------------


def mixed_recording(impl: str, steps: int = 60) -> tuple[Runtime, Machine]:
    """A synchronous run that records everything: outputs, payloads of many types (a user
    type among them), every priority, front records (NextEvent, postponed mail replayed)."""
    m = Machine("mixed", ["open", "shut"], "open", [], events=["put", "again", "flip"])

    @m.handler("open", "put")
    def put(ctx: Any, ev: Any) -> Step:
        extra = [NextEvent("again", ev.payload)] if ctx.agent_id == ("b", 2) else []
        return Step(outputs=[("got", ev.payload), int(ev.priority)], actions=extra)

    @m.handler("shut", "put")
    def wait(ctx: Any, ev: Any) -> Step:
        return Step(actions=[Postpone()])

    @m.handler("*", "again")
    def again(ctx: Any, ev: Any) -> Step:
        return Step(outputs=[{"again": ev.payload}])

    @m.handler("*", "flip")
    def flip(ctx: Any, ev: Any) -> Step:
        return Step(state="shut" if ctx.state == "open" else "open")

    payloads = [
        None, 1, -(2**80), 1.5, "text", b"\x00bytes", (1, (2, "x")), {3, 4}, frozenset({5}),
        {"k": [1, {"n": None}]}, {(1, 2): "tuple key"}, Point(1, 2), [Point(3, 4)], True,
    ]  # fmt: skip
    rt = Runtime(implementation=impl, record=True)
    for agent in ("a", ("b", 2), 7):
        rt.spawn(m, agent)
    for i in range(steps):
        agent = ("a", ("b", 2), 7)[i % 3]
        if i % 11 == 5:
            rt.send_nowait(agent, "flip")
        rt.send_nowait(agent, "put", payloads[i % len(payloads)], priority=i % 4)
        if i % 11 == 8:
            rt.send_nowait(agent, "flip")
        rt.run_until_idle()
    return rt, m


def test_a_mixed_recording_round_trips_exactly(impl: str, any_store: store.Store) -> None:
    rt, _ = mixed_recording(impl)
    everything = rt.transitions()
    assert {r.priority for r in everything} == {0, 1, 2, 3}
    assert any(r.front and r.event == "again" for r in everything)  # a NextEvent
    assert any(r.front and r.event == "put" for r in everything)  # postponed mail replayed
    codec = point_codec()
    half = len(everything) // 2
    gap = Gap(everything[-1].seq + 1, 3)
    assert save_recording(any_store, "mixed", rt.records(limit=half), codec=codec) == half
    assert save_recording(any_store, "mixed", [*everything[half:], gap], codec=codec) == (
        len(everything) - half + 1
    )
    loaded = load_recording(any_store, "mixed", codec=codec)
    assert loaded == [*everything, gap]
    for got, want in zip(loaded, everything, strict=False):  # exact types, not just equal
        assert isinstance(got, Transition)
        assert type(got.payload) is type(want.payload)
        assert type(got.agent_id) is type(want.agent_id)
        assert [type(o) for o in got.outputs] == [type(o) for o in want.outputs]
    assert recordings(any_store) == ["mixed"]
    assert forget_recording(any_store, "mixed") == 2
    assert recordings(any_store) == []
    with pytest.raises(RecordingNotFoundError, match="mixed"):
        load_recording(any_store, "mixed", codec=codec)


def test_a_long_recording_is_kept_in_chunks_and_replays(impl: str) -> None:
    rt, m = mixed_recording(impl, steps=2 * CHUNK)
    records = rt.records()
    s = store.MemoryStore()
    assert save_recording(s, "long", records, codec=point_codec()) == len(records)
    chunks = s.history("engine:recording:long")
    assert len(chunks) == math.ceil(len(records) / CHUNK) >= 3
    loaded = load_recording(s, "long", codec=point_codec())
    assert loaded == records.transitions()
    report = replay(
        loaded, lambda f: [f.spawn(m, a) for a in ("a", ("b", 2), 7)], implementation=impl
    )
    assert report.ok, report.divergence
    assert report.steps == len(records)


def test_a_save_appends_in_order_and_never_goes_back(impl: str) -> None:
    rt, _ = mixed_recording(impl, steps=12)
    records = rt.transitions()
    s = store.MemoryStore()
    codec = point_codec()
    save_recording(s, "r", records[:5], codec=codec)
    with pytest.raises(InvalidArgumentError, match="goes back"):  # saved already
        save_recording(s, "r", records[3:], codec=codec)
    with pytest.raises(InvalidArgumentError, match="out of order"):
        save_recording(s, "r", [records[7], records[6]], codec=codec)
    with pytest.raises(InvalidArgumentError, match="out of order"):
        save_recording(s, "r", [Gap(records[5].seq, 2), records[6]], codec=codec)
    assert save_recording(s, "r", [], codec=codec) == 0
    save_recording(s, "r", records[5:], codec=codec)
    assert load_recording(s, "r", codec=codec) == records


# -- end to end: a simulation recorded in the store, replayed from it -------------------------


def record_simulation(impl: str, path: Path, machine: Machine) -> tuple[Any, dict[int, Any]]:
    """Run the couriers under open_runtime with a recording kept in a SQLite file; return
    the recorder's statistics and the final states."""

    async def main() -> tuple[Any, dict[int, Any]]:
        db = store.SQLiteStore(path)
        async with open_runtime(implementation=impl, record_to=db, record_name="sim") as rt:
            spawn_all(machine)(rt)
            await play(rt)
            recorder = rt.recorder
            while not recorder.statistics().writes:  # it writes while the runtime runs
                await trio.sleep(1)  # (its write runs in a thread: virtual time jumps meanwhile)
            rt.send_nowait(0, "mail", {"n": 121})  # and this one is written at the end
            await rt.wait_until_idle()
            final = finals(rt)
        db.close()
        return recorder.statistics(), final

    result: tuple[Any, dict[int, Any]] = mock_run(main)
    return result


def test_a_simulation_recorded_in_the_store_replays_exactly(impl: str, tmp_path: Path) -> None:
    path = tmp_path / "sim.db"
    stats, final = record_simulation(impl, path, courier())
    assert (stats.gaps, stats.unencodable, stats.failed_writes, stats.pending) == (0, 0, 0, 0)
    db = store.SQLiteStore(path)  # as another process would
    recording = load_recording(db, "sim")
    db.close()
    assert stats.writes >= 2  # while it ran, and at the end
    steps = [r for r in recording if isinstance(r, Transition)]
    assert steps == recording  # no gaps
    assert steps[-1].payload == {"n": 121}
    assert len(steps) == stats.written == stats.seq > 300
    assert [r.seq for r in steps] == list(range(len(steps)))
    assert any(r.front for r in steps)
    assert any(r.event == "wake" for r in steps)
    assert {r.priority for r in steps} == {0, 1, 2, 3}
    report = replay(recording, spawn_all(courier()), implementation=impl)
    assert report.ok, report.divergence
    assert report.steps == len(recording)
    assert finals(report.runtime) == final


def test_a_changed_handler_diverges_at_its_first_changed_step(impl: str, tmp_path: Path) -> None:
    path = tmp_path / "sim.db"
    record_simulation(impl, path, courier())
    recording = load_recording(store.SQLiteStore(path), "sim")
    changed = next(
        r
        for r in recording
        if isinstance(r, Transition)
        and (r.source, r.event, r.payload) == ("ready", "mail", {"n": 57})
    )
    report = replay(recording, spawn_all(courier(changed_at=57)), implementation=impl)
    d = report.divergence
    assert d is not None
    assert (d.seq, d.agent_id, d.reason) == (changed.seq, changed.agent_id, "outputs")
    assert (d.expected, d.actual) == ((("pass", 57),), (("changed", 57),))
    assert report.steps == sum(1 for r in recording if r.seq < changed.seq)


def test_record_to_store_for_one_agent_and_with_a_codec(impl: str) -> None:
    s = store.MemoryStore()
    codec = point_codec()

    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            spawn_all(courier())(rt)
            recorder = await rt.start(
                partial(record_to_store, rt, s, "three", agent_id=3, every=0.5, codec=codec)
            )
            assert isinstance(recorder, store.Recorder)
            await play(rt)
            rt.send_nowait(3, "count", Point(1, 2))  # a user type, encoded by the codec
            await rt.wait_until_idle()

    mock_run(main)
    recording = [r for r in load_recording(s, "three", codec=codec) if isinstance(r, Transition)]
    assert recording
    assert {r.agent_id for r in recording} == {3}
    assert recording[-1].outputs == (("count", Point(1, 2)),)


# -- gaps -----------------------------------------------------------------------------------


def test_a_recorder_started_again_continues_and_keeps_the_hole(impl: str) -> None:
    """Records made while no recorder ran (nobody subscribed: numbered, not kept) are a Gap
    when it continues the recording; replay refuses the hole."""
    s = store.MemoryStore()
    m = courier()

    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            spawn_all(m)(rt)
            with trio.CancelScope() as first:  # a recorder in a nursery of our own, stopped
                async with trio.open_nursery() as nursery:
                    one = await nursery.start(record_to_store, rt, s, "holes")
                    rt.send_nowait(0, "mail", {"n": 121})  # one step, no Send
                    await rt.wait_until_idle()
                    first.cancel()
            assert one.statistics().written == 1
            for i in range(1, 4):
                rt.send_nowait(i, "mail", {"n": 121})  # three steps nobody keeps
            await rt.wait_until_idle()
            two = await rt.start(record_to_store, rt, s, "holes")
            rt.send_nowait(4, "mail", {"n": 121})
            await rt.wait_until_idle()
            await trio.sleep(2)
            assert (two.statistics().gaps, two.statistics().missed) == (1, 3)

    mock_run(main)
    recording = load_recording(s, "holes")
    assert [type(r).__name__ for r in recording] == ["Transition", "Gap", "Transition"]
    assert recording[1] == Gap(1, 3)
    with pytest.raises(InvalidArgumentError, match="hole"):
        replay(recording, spawn_all(m), implementation=impl)


def test_a_recorder_that_falls_behind_keeps_a_gap(
    impl: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the store is down the recorder holds at most MAX_PENDING records and stops
    reading; what the runtime overwrites meanwhile is a Gap once the store is back."""
    monkeypatch.setattr("engine.store._recorder.MAX_PENDING", 4)
    s = FlakyStore()
    s.down = True
    m = courier()

    async def main() -> Any:
        async with open_runtime(implementation=impl, retention=16) as rt:
            spawn_all(m)(rt)
            recorder = await rt.start(record_to_store, rt, s, "behind")
            for _ in range(40):  # one step at a time, the reader taking each it can
                rt.send_nowait(0, "mail", {"n": 121})
                await rt.wait_until_idle()
                await trio.testing.wait_all_tasks_blocked()
            while recorder.statistics().failed_writes < 2:  # (writes run in threads:
                await trio.sleep(1)  # virtual time jumps meanwhile, so wait for counts)
            stats = recorder.statistics()
            assert stats.pending == 4
            assert stats.written == 0
            assert isinstance(stats.last_error, StoreError)
            s.down = False
            while recorder.statistics().written < 4 + 1 + 16:  # a gap, then the last 16
                await trio.sleep(1)
            rt.send_nowait(1, "mail", {"n": 121})
            await rt.wait_until_idle()
        return recorder.statistics()

    stats = mock_run(main)
    assert (stats.gaps, stats.missed, stats.pending) == (1, 40 - 4 - 16, 0)
    recording = load_recording(s, "behind")
    assert len(recording) == 4 + 1 + 16 + 1
    assert recording[4] == Gap(4, 20)
    assert [r.seq for r in recording[5:]] == list(range(24, 41))


# -- failures: the store, the codec -----------------------------------------------------------


def test_failing_writes_are_counted_and_retried(impl: str) -> None:
    s = FlakyStore(fail=3)
    m = courier()

    async def main() -> tuple[Any, dict[int, Any]]:
        async with open_runtime(implementation=impl, record_to=s, record_name="flaky") as rt:
            spawn_all(m)(rt)
            await play(rt)
            while rt.recorder.statistics().failed_writes < 3:  # tried every second
                await trio.sleep(1)
            final = finals(rt)
        return rt.recorder.statistics(), final

    stats, final = mock_run(main)
    assert stats.failed_writes == 3
    assert "the disk is gone" in str(stats.last_error)
    assert stats.pending == 0
    assert stats.gaps == 0
    recording = load_recording(s, "flaky")
    assert len(recording) == stats.written
    report = replay(recording, spawn_all(courier()), implementation=impl)
    assert report.ok
    assert finals(report.runtime) == final


def test_an_unencodable_value_writes_nothing(impl: str) -> None:
    rt = Runtime(implementation=impl, record=True)
    m = Machine("m", ["a"], "a", [("a", "go", "a", None)])
    rt.spawn(m, "x")
    for payload in (1, 2, object(), 4):
        rt.send_nowait("x", "go", payload)
    rt.run_until_idle()
    s = store.SQLiteStore(":memory:")
    save_recording(s, "before", rt.records(limit=2))
    with pytest.raises(CodecError, match=r"record 2, its payload: cannot encode a object"):
        save_recording(s, "before", rt.records(from_seq=2))
    with pytest.raises(CodecError, match="record 2"):
        save_recording(s, "new", rt.transitions())
    assert recordings(s) == ["before"]  # nothing of those calls was written
    assert len(load_recording(s, "before")) == 2
    save_recording(s, "before", [Gap(2, 1), *rt.records(from_seq=3)])  # honest about it
    assert load_recording(s, "before")[2] == Gap(2, 1)
    assert [r.payload for r in load_recording(s, "before") if isinstance(r, Transition)] == [
        1, 2, 4,
    ]  # fmt: skip
    failing = Codec()
    failing.register(Point, "point", lambda p: 1 / 0, lambda v: v)
    with pytest.raises(CodecError, match="record 0, its payload: ZeroDivisionError"):
        save_recording(s, "p", [Transition(0, "x", "a", "go", "a", (), 0.0, 1, Point(0, 0))],
                       codec=failing)  # fmt: skip


def test_a_recorder_keeps_an_unencodable_record_as_a_gap(impl: str) -> None:
    s = store.MemoryStore()
    m = Machine("m", ["a"], "a", [("a", "go", "a", None)])

    async def main() -> Any:
        async with open_runtime(implementation=impl, record_to=s, record_name="r") as rt:
            rt.spawn(m, "x")
            for payload in ("one", object(), "three"):
                await rt.send("x", "go", payload)
            await rt.wait_until_idle()
            assert rt.state("x") == "a"  # the runtime runs on
        return rt.recorder.statistics()

    stats = mock_run(main)
    assert (stats.unencodable, stats.written, stats.gaps) == (1, 3, 0)
    assert isinstance(stats.last_codec_error, CodecError)
    assert "record 1, its payload" in str(stats.last_codec_error)
    recording = load_recording(s, "r")
    assert recording[1] == Gap(1, 1)
    assert [r.payload for r in recording if isinstance(r, Transition)] == ["one", "three"]


# -- damaged and hostile chunks -----------------------------------------------------------------


def _saved(path: Path) -> list[Any]:
    s = store.SQLiteStore(path)
    rt = Runtime(record=True)
    m = Machine("m", ["a"], "a", [("a", "go", "a", "out")])
    rt.spawn(m, "x")
    for i in range(6):
        rt.send_nowait("x", "go", i)
    rt.run_until_idle()
    save_recording(s, "r", rt.records(limit=3))
    save_recording(s, "r", rt.records(from_seq=3))
    s.close()
    return rt.transitions()


def test_a_damaged_chunk_is_named(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    records = _saved(path)
    assert load_recording(store.SQLiteStore(path), "r") == records
    with sqlite3.connect(path) as db:
        (rid, blob) = db.execute(
            "SELECT id, record FROM snapshots WHERE agent = ? ORDER BY id DESC LIMIT 1",
            ("engine:recording:r",),
        ).fetchone()
        db.execute(
            "UPDATE snapshots SET record = ? WHERE id = ?",
            (blob[:-2] + bytes([blob[-2] ^ 0x40]) + blob[-1:], rid),
        )
    with pytest.raises(CorruptRecordError, match=rf"recording 'r', chunk 1 \(store record {rid}"):
        load_recording(store.SQLiteStore(path), "r")
    with pytest.raises(CorruptRecordError, match="checksum"):  # appending reads the last one
        save_recording(store.SQLiteStore(path), "r", [Gap(6, 1)])


def _chunk(rows: list[Any], first: int | None = None, end: int | None = None) -> bytes:
    body = msgpack.packb(rows)
    first = rows[0][0] if first is None else first
    end = (rows[-1][0] + (rows[-1][1] if len(rows[-1]) == 2 else 1)) if end is None else end
    return frame_chunk(first, end, len(rows), body)


GOOD_ROW = [0, "x", "a", "go", "a", ["out"], 0.0, 1, None, False]
HOSTILE = {
    "empty": b"",
    "truncated": _chunk([GOOD_ROW])[:10],
    "wrong magic": b"EMH" + _chunk([GOOD_ROW])[3:],
    "newer format": _chunk([GOOD_ROW])[:3] + b"\x02" + _chunk([GOOD_ROW])[4:],
    "not msgpack": frame_chunk(0, 1, 1, b"\xc1\xc1"),
    "not a list": frame_chunk(0, 1, 1, msgpack.packb({"a": 1})),
    "more items than announced": frame_chunk(0, 1, 1, msgpack.packb([GOOD_ROW, GOOD_ROW])),
    "a short row": _chunk([[0, "x", "a"]]),
    "a bad seq": _chunk([[-1, *GOOD_ROW[1:]]], first=0, end=1),
    "a bool seq": _chunk([[True, *GOOD_ROW[1:]]], first=1, end=2),
    "a state not str": _chunk([[0, "x", 5, "go", "a", [], 0.0, 1, None, False]]),
    "outputs not a list": _chunk([[0, "x", "a", "go", "a", "out", 0.0, 1, None, False]]),
    "a nan time": _chunk([[0, "x", "a", "go", "a", [], math.nan, 1, None, False]]),
    "an int time": _chunk([[0, "x", "a", "go", "a", [], 0, 1, None, False]]),
    "a priority of 9": _chunk([[0, "x", "a", "go", "a", [], 0.0, 9, None, False]]),
    "a front of 1": _chunk([[0, "x", "a", "go", "a", [], 0.0, 1, None, 1]]),
    "an unhashable agent": _chunk([[0, ["x"], "a", "go", "a", [], 0.0, 1, None, False]]),
    "a gap of 0": _chunk([[0, 0]], first=0, end=1),
    "not the first": _chunk([[1, *GOOD_ROW[1:]], [2, 1]], first=0, end=3),
    "out of order": _chunk([GOOD_ROW, [2, *GOOD_ROW[1:]], [1, 1]], first=0, end=3),
    "a span that lies": _chunk([GOOD_ROW], first=0, end=5),
    "an empty span": frame_chunk(3, 3, 1, msgpack.packb([GOOD_ROW])),
    "an unknown ext type": frame_chunk(0, 1, 1, msgpack.packb([msgpack.ExtType(99, b"")])),
}


@pytest.mark.parametrize("record", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_chunks_are_corrupt_record_errors(record: bytes) -> None:
    assert load_recording(_store_with(_chunk([GOOD_ROW])), "r")[0] == Transition(
        0, "x", "a", "go", "a", ("out",), 0.0, 1, None, False
    )
    with pytest.raises(CorruptRecordError, match=r"recording 'r', chunk 0"):
        load_recording(_store_with(record), "r")


@pytest.mark.parametrize("n", [0, 1, 15, 16, 65_535, 65_536])
def test_rows_packed_one_by_one_make_the_body_of_all_at_once(n: int) -> None:
    """The recorder packs each record as it reads it and joins them after an array header."""
    codec = point_codec()
    rows = [[i, 1] if i % 3 else [i, "x", "a", "go", "a", [(Point(i, 0),)], 0.5, 1, {i}, True]
            for i in range(n)]  # fmt: skip
    assert array_head(n) + b"".join(codec.pack(r) for r in rows) == codec.pack(rows)


def test_a_user_type_the_codec_does_not_know_is_a_corrupt_record_error() -> None:
    rt = Runtime(record=True)
    m = Machine("m", ["a"], "a", [("a", "go", "a", None)])
    rt.spawn(m, "x")
    rt.send_nowait("x", "go", Point(1, 2))
    rt.run_until_idle()
    s = store.MemoryStore()
    save_recording(s, "r", rt.records(), codec=point_codec())
    with pytest.raises(CorruptRecordError, match="no type registered as 'point'"):
        load_recording(s, "r")


def test_chunks_that_go_back_are_refused() -> None:
    s = _store_with(_chunk([[5, *GOOD_ROW[1:]]]))
    s.write([("engine:recording:r", 0.0, _chunk([GOOD_ROW]))])
    with pytest.raises(CorruptRecordError, match=r"chunk 1 .* behind the chunk before it"):
        load_recording(s, "r")


def _store_with(record: bytes) -> store.MemoryStore:
    s = store.MemoryStore()
    s.write([("engine:recording:r", 0.0, record)])
    return s


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 200), st.integers(0, 2**62), st.integers(0, 9))
def test_hostile_bytes_never_crash(noise: bytes, cut: int, first: int, items: int) -> None:
    good = _chunk([GOOD_ROW, [1, 2], [3, *GOOD_ROW[1:]]])
    for record in (noise, good[:cut] + noise, frame_chunk(first, first + 4, items, noise)):
        with contextlib.suppress(CorruptRecordError):
            load_recording(_store_with(record), "r")


# -- agents in the same store ---------------------------------------------------------------------


def test_agents_in_the_same_store_are_unaffected(impl: str, tmp_path: Path) -> None:
    """Under the commit log (which compacts) with a recording in the same SQLite file: a
    restore sees only the agents, compaction keeps every chunk, and the recording replays."""
    path = tmp_path / "both.db"
    m = courier()

    async def first() -> dict[int, Any]:
        db = store.SQLiteStore(path)
        async with open_runtime(
            implementation=impl, store=db, durability="log", record_to=db, record_name="sim"
        ) as rt:
            spawn_all(m)(rt)
            await play(rt)
            await rt.flush()
            final = finals(rt)
        db.close()
        return final

    final = mock_run(first)
    db = store.SQLiteStore(path)
    chunks = len(db.history("engine:recording:sim"))
    assert chunks >= 2
    db.compact()
    assert len(db.history("engine:recording:sim")) == chunks
    fresh = Runtime(implementation=impl)
    report = store.load(fresh, db, [m])
    assert (sorted(report.restored), report.failed) == (list(range(N)), [])
    assert finals(fresh) == final
    assert recordings(db) == ["sim"]
    replayed = replay(load_recording(db, "sim"), spawn_all(courier()), implementation=impl)
    assert replayed.ok
    assert finals(replayed.runtime) == final
    forget_recording(db, "sim")
    assert store.load(Runtime(implementation=impl), db, [m]).restored  # agents stay
    db.close()


# -- arguments ------------------------------------------------------------------------------------

BAD_NAMES = ["", "x" * 201, "a\x00b", "line\nbreak", "bell\x07", "\x9f", "\ud800", 5, None, b"n"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_are_refused_everywhere(impl: str, name: Any) -> None:
    s = store.MemoryStore()
    for call in (
        lambda: save_recording(s, name, []),
        lambda: load_recording(s, name),
        lambda: forget_recording(s, name),
    ):
        with pytest.raises(InvalidArgumentError, match="recording name"):
            call()

    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            with pytest.raises(InvalidArgumentError, match="recording name"):
                await rt.start(record_to_store, rt, s, name)
        with pytest.raises(InvalidArgumentError, match=r"recording name|go together"):
            async with open_runtime(implementation=impl, record_to=s, record_name=name):
                pass

    mock_run(main)
    assert s.latest() == []


def test_names_that_are_fine() -> None:
    s = store.MemoryStore()
    record = [Transition(0, "x", "a", "go", "a", (), 0.0)]
    for name in ("x" * 200, "ünïcode ✓", "with:colons/and spaces", "engine:recording:x"):
        assert save_recording(s, name, record) == 1
        assert load_recording(s, name) == record
    assert len(recordings(s)) == 4


@pytest.mark.parametrize("every", [0, -1, math.nan, math.inf, "1", True, None, 10**400])
def test_a_bad_every_is_refused(impl: str, every: Any) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            with pytest.raises(InvalidArgumentError, match="every"):
                await rt.start(partial(record_to_store, rt, store.MemoryStore(), "r", every=every))

    mock_run(main)


BAD_RECORDS = [
    5,
    "text",
    b"bytes",
    [1],
    [Transition(-1, "x", "a", "go", "a", (), 0.0)],
    [Transition(0, "x", 5, "go", "a", (), 0.0)],  # type: ignore[arg-type]
    [Transition(0, "x", "a", "go", "a", ["list"], 0.0)],  # type: ignore[arg-type]
    [Transition(0, "x", "a", "go", "a", (), math.nan)],
    [Transition(0, "x", "a", "go", "a", (), 0.0, priority=4)],
    [Transition(0, "x", "a", "go", "a", (), 0.0, front=1)],  # type: ignore[arg-type]
    [Transition(0, ["unhashable"], "a", "go", "a", (), 0.0)],
    [Gap(0, 0)],
    [Gap(2**62, 1)],
]


@pytest.mark.parametrize("records", BAD_RECORDS, ids=repr)
def test_bad_records_are_refused(records: Any) -> None:
    s = store.MemoryStore()
    with pytest.raises(InvalidArgumentError):
        save_recording(s, "r", records)
    assert s.latest() == []


def test_other_bad_arguments(impl: str) -> None:
    s = store.MemoryStore()
    record = [Transition(0, "x", "a", "go", "a", (), 0.0)]
    for bad_store in (None, "store", object()):
        with pytest.raises(InvalidArgumentError, match="store"):
            save_recording(bad_store, "r", record)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="store"):
            load_recording(bad_store, "r")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="store"):
            recordings(bad_store)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="codec"):
        save_recording(s, "r", record, codec="msgpack")  # type: ignore[arg-type]
    with pytest.raises(RecordingNotFoundError) as missing:
        load_recording(s, "nothing here")
    assert isinstance(missing.value, KeyError)
    assert str(missing.value) == "no recording named 'nothing here' in the store"
    assert forget_recording(s, "nothing here") == 0
    with pytest.raises(InvalidArgumentError, match="rt must be"):
        store.Recorder("runtime", s, "r")  # type: ignore[arg-type]

    async def main() -> None:
        with pytest.raises(InvalidArgumentError, match="go together"):
            async with open_runtime(implementation=impl, record_to=s):
                pass
        with pytest.raises(InvalidArgumentError, match="go together"):
            async with open_runtime(implementation=impl, record_name="r"):
                pass
        with pytest.raises(InvalidArgumentError, match="store must be"):
            async with open_runtime(implementation=impl, record_to="db", record_name="r"):  # type: ignore[arg-type]
                pass
        save_recording(s, "other run", [Transition(99, "x", "a", "go", "a", (), 0.0)])
        async with open_runtime(implementation=impl) as rt:
            with pytest.raises(InvalidArgumentError, match="another run's"):
                await rt.start(record_to_store, rt, s, "other run")
        # a recording ending below this runtime's count is another run's too: continuing it
        # would splice two runs' numbers into one stream
        save_recording(s, "short run", [Transition(0, "x", "a", "go", "a", (), 0.0)])
        async with open_runtime(implementation=impl) as rt:
            rt.spawn(Machine("m", ["a"], "a", [("a", "go", "a", None)]), "x")
            for _ in range(5):
                rt.send_nowait("x", "go")
            await rt.wait_until_idle()
            with pytest.raises(InvalidArgumentError, match="another run's"):
                await rt.start(record_to_store, rt, s, "short run")

    mock_run(main)
    with pytest.raises(RuntimeNotRunningError):
        trio.run(record_to_store, Runtime(implementation=impl), s, "r")
