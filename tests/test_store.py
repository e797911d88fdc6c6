"""engine.store: the codec, record frames, the stores (one conformance suite for all), and
snapshots that restore into agents behaving exactly as the originals (both hot paths, and in
a fresh process)."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
import engine.store as store
from engine import Machine, NextEvent, Postpone, Priority, Runtime, StateTimeout, Step, Timer
from engine.store import Codec, CodecError, CorruptRecordError

# -- the codec ---------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**64, max_value=2**300)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
hashables = st.recursive(
    scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=5
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
        | st.dictionaries(hashables, inner, max_size=4)
    ),
    max_leaves=20,
)


@given(values)
@settings(max_examples=300, deadline=None)
def test_values_round_trip_exactly(value: Any) -> None:
    codec = Codec()
    back = codec.unpack(codec.pack(value))
    assert back == value
    assert _types(back) == _types(value)


def _types(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return (type(value), [_types(v) for v in value])
    if isinstance(value, dict):
        return (dict, sorted((repr(_types(k)), repr(_types(v))) for k, v in value.items()))
    if isinstance(value, set | frozenset):
        return (type(value), sorted(repr(_types(v)) for v in value))
    return type(value)


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (other.x, other.y) == (self.x, self.y)

    __hash__ = None  # type: ignore[assignment]


def test_user_types_are_registered_by_name_and_others_refused_with_their_path() -> None:
    codec = Codec()
    value = {"route": [Point(1, 2), (Point(3, 4),)]}
    with pytest.raises(CodecError, match=r"agent 'a1'.*Point.*\$\['route'\]\[0\]"):
        codec.pack(value, agent="a1")
    codec.register(Point, "geo.Point", lambda p: [p.x, p.y], lambda xy: Point(*xy))
    assert codec.unpack(codec.pack(value)) == value
    with pytest.raises(CodecError, match="already registered"):
        codec.register(Point, "geo.Point", list, list)
    with pytest.raises(CodecError, match=r"geo\.Point"):
        Codec().unpack(codec.pack(Point(0, 0)))  # a codec that does not know the name


def test_a_value_nested_too_deeply_is_a_codec_error() -> None:
    deep: list[Any] = []
    inner = deep
    for _ in range(5000):
        inner.append([])
        inner = inner[0]
    with pytest.raises(CodecError, match="agent 'a'"):
        Codec().pack(deep, agent="a")


@pytest.mark.parametrize(
    "damage",
    [
        lambda r: r[:5],  # truncated inside the head
        lambda r: r[:-3],  # truncated body
        lambda r: r[:7] + bytes([r[7] ^ 0x40]) + r[8:],  # a flipped bit in the body
        lambda r: b"XX" + r[2:],  # not a record
        lambda r: r[:2] + bytes([99]) + r[3:],  # a newer format
    ],
)
def test_damaged_records_are_refused(damage: Callable[[bytes], bytes]) -> None:
    record = store.encode(_snapshot("a1"))
    assert store.decode(record) == _snapshot("a1", taken=store.decode(record).taken_at)
    with pytest.raises(CorruptRecordError, match="agent 'a1'"):
        store.decode(damage(record), agent="a1")


def _snapshot(agent: Any, taken: float = 0.0) -> store.AgentSnapshot:
    return store.AgentSnapshot(
        agent_id=agent,
        machine="light",
        state="red",
        data={"n": (1, 2)},
        mail=(("tick", None, Priority.NORMAL),),
        postponed=(),
        timers=(),
        taken_at=taken,
    )


# -- the stores: one conformance suite ----------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def a_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[store.Store]:
    made: store.Store
    if request.param == "memory":
        made = store.MemoryStore()
    elif request.param == "sqlite":
        made = store.SQLiteStore(tmp_path / "s.db")
    else:  # a real server (tests/pg.py), a fresh database
        made = store.PostgresStore(request.getfixturevalue("postgres_db"))
    yield made
    made.close()


def test_store_conformance(a_store: store.Store) -> None:
    assert isinstance(a_store, store.Store)
    assert a_store.latest() == []
    ids = a_store.write([("s:a", 1.0, b"a1"), ("s:b", 2.0, b"b1"), ("s:a", 3.0, b"a2")])
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    assert [(r.agent, r.record) for r in a_store.latest()] == [("s:a", b"a2"), ("s:b", b"b1")]
    assert [r.record for r in a_store.latest(["s:b", "s:nobody"])] == [b"b1"]
    assert [(r.taken_at, r.record) for r in a_store.history("s:a")] == [(1.0, b"a1"), (3.0, b"a2")]
    assert a_store.read(ids[1]).record == b"b1"
    with pytest.raises(KeyError):
        a_store.read(10**9)
    more = a_store.write([("s:a", 4.0, b"a3")])
    assert more[0] > max(ids)
    assert a_store.forget("s:a", keep=1) == 2
    assert [r.record for r in a_store.history("s:a")] == [b"a3"]
    assert a_store.forget("s:b") == 1
    assert [r.agent for r in a_store.latest()] == ["s:a"]


def test_compaction_keeps_the_newest_records_and_drops_terminated_agents(
    a_store: store.Store,
) -> None:
    a_store.write([("s:a", 1.0, b"a1"), ("s:b", 1.0, b"b1"), ("s:c", 1.0, b"c1")])
    a_store.write([("s:a", 2.0, b"a2"), ("s:b", 2.0, store.TOMBSTONE), ("s:a", 3.0, b"a3")])
    assert [(r.agent, r.record) for r in a_store.latest()] == [
        ("s:a", b"a3"),
        ("s:b", b""),
        ("s:c", b"c1"),
    ]
    assert a_store.compact(keep=2) == 3  # a1, and both of b's
    assert [r.record for r in a_store.history("s:a")] == [b"a2", b"a3"]
    assert a_store.history("s:b") == []
    assert a_store.compact() == 1
    assert [(r.agent, r.record) for r in a_store.latest()] == [("s:a", b"a3"), ("s:c", b"c1")]
    assert a_store.compact() == 0
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="keep"):
            a_store.compact(keep=bad)
    assert a_store.write([("s:b", 4.0, b"b again")])[0] > 0  # a terminated id can come back
    assert [r.record for r in a_store.history("s:b")] == [b"b again"]


def test_record_ids_never_come_back(a_store: store.Store) -> None:
    first = a_store.write([("s:a", 1.0, b"a"), ("s:b", 1.0, b"b")])
    a_store.forget("s:b")
    a_store.write([("s:c", 1.0, store.TOMBSTONE)])
    a_store.compact()
    (again,) = a_store.write([("s:d", 2.0, b"d")])
    assert again > max(first) + 1


def test_a_store_write_is_all_or_nothing(a_store: store.Store) -> None:
    a_store.write([("s:a", 1.0, b"ok")])
    with pytest.raises(TypeError):
        a_store.write([("s:a", 2.0, b"fine"), ("s:b", 2.0, "not bytes")])  # type: ignore[list-item]
    assert [r.record for r in a_store.history("s:a")] == [b"ok"]
    assert a_store.latest(["s:b"]) == []


def test_sqlite_store_keeps_records_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = store.SQLiteStore(path)
    first.write([("s:a", 1.0, b"x")])
    first.close()
    again = store.SQLiteStore(path)
    assert [r.record for r in again.latest()] == [b"x"]
    assert again.write([("s:a", 2.0, b"y")])[0] == 2
    again.close()


def test_sqlite_errors_are_store_errors(tmp_path: Path) -> None:
    with pytest.raises(engine.StoreError, match="SQLiteStore"):
        store.SQLiteStore(tmp_path / "no" / "such" / "dir.db")
    db = store.SQLiteStore(tmp_path / "s.db")
    db.close()
    with pytest.raises(engine.StoreError) as caught:
        db.write([("s:a", 1.0, b"x")])
    assert isinstance(caught.value.__cause__, sqlite3.Error)


def test_agent_keys_keep_id_types_apart() -> None:
    keys = {store.agent_key(a) for a in (1, "1", (1,), 1.0, True, "i:1")}
    assert len(keys) == 6


# -- snapshots ---------------------------------------------------------------------------------


def lab() -> Machine:
    """A machine that uses everything a snapshot must carry: postponed events, NextEvent,
    state, event and named timers, payloads, failures."""
    m = Machine(
        "lab",
        ["idle", "busy", "done"],
        "idle",
        [
            ("idle", "go", "busy", "started"),
            ("busy", "finish", "done", ("finished", 1)),
            ("done", "reset", "idle"),
            ("*", "tick", None),
        ],
        events=["go", "finish", "reset", "tick", "enter", "arm", "boom", "chain"],
        unhandled="ignore",
    )

    @m.handler("idle", "enter")
    def later(agent: engine.AgentContext, event: engine.Event) -> Step:
        return Step(actions=[Postpone()])

    @m.handler("*", "arm")
    def arm(agent: engine.AgentContext, event: engine.Event) -> Step:
        n = event.payload or 1
        return Step(
            actions=[
                StateTimeout(5 * n, "finish"),
                Timer(f"t{n % 3}", 7 * n, "tick", payload={"n": n}),
                engine.EventTimeout(11, "reset"),
            ]
        )

    @m.handler("*", "boom")
    def boom(agent: engine.AgentContext, event: engine.Event) -> None:
        raise ValueError("boom")

    @m.handler("*", "chain")
    def chain(agent: engine.AgentContext, event: engine.Event) -> Step:
        agent.data["chains"] = agent.data.get("chains", 0) + 1
        return Step(outputs=[("chained", agent.data["chains"])], actions=[NextEvent("tick", 7)])

    return m


EVENTS = ["go", "finish", "reset", "tick", "enter", "arm", "boom", "chain"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drive(rt: Runtime, clock: Clock, rng: random.Random, steps: int, agents: list[Any]) -> None:
    """Random sends (some bounded mailboxes drop), pauses, runs and clock moves."""
    for _ in range(steps):
        roll = rng.random()
        agent = rng.choice(agents)
        if roll < 0.6:
            with contextlib.suppress(engine.EngineError):  # full mailboxes refuse
                rt.send_nowait(
                    agent, rng.choice(EVENTS), rng.choice([None, 1, 2, "p"]), rng.randint(0, 3)
                )
        elif roll < 0.65:
            rt.pause(agent) if rng.random() < 0.5 else rt.resume(agent)
        elif roll < 0.85:
            rt.run(rng.randint(1, 6))
        else:
            clock.now += rng.choice([1, 3, 6, 12])
            rt.fire_timers()


def observe(rt: Runtime, agents: list[Any], outputs: list[Any]) -> Any:
    return (
        [
            (
                rt.state(a),
                rt.status(a),
                rt.queued(a),
                rt.postponed(a),
                rt.timers(a),
                rt.data(a),
                rt.statistics(a).processed,
                rt.statistics(a).failed,
                rt.statistics(a).dropped,
                rt.statistics(a).restarts,
                rt.paused(a),
            )
            for a in agents
        ],
        [(d.agent_id, d.event, d.payload, d.reason) for d in rt.dead_letters()],
        list(outputs),
    )


def population(rt: Runtime, machine: Machine) -> list[Any]:
    agents: list[Any] = ["a", 2, ("c", 3), "bounded", "dropping"]
    rt.spawn(machine, "a", {"k": {1, 2}})
    rt.spawn(machine, 2, {})
    rt.spawn(
        machine,
        ("c", 3),
        {"t": (1, (2,))},
        supervision=engine.Supervision("restart", backoff=4, max_restarts=50, within=1000),
    )
    rt.spawn(machine, "bounded", {}, capacity=3)
    rt.spawn(machine, "dropping", {}, capacity=2, policy=engine.OverflowPolicy.DROP_OLDEST)
    return agents


@pytest.mark.parametrize("seed", range(6))
def test_a_restored_runtime_continues_exactly_as_the_original(impl: str, seed: int) -> None:
    machine = lab()
    clock_a, clock_b = Clock(), Clock()
    out_a: list[Any] = []
    out_b: list[Any] = []
    a = Runtime(implementation=impl, clock=clock_a, on_output=out_a.extend)
    agents = population(a, machine)
    rng = random.Random(seed)
    drive(a, clock_a, rng, 150, agents)
    records = [store.encode(s) for s in store.capture(a)]
    # the copy starts with the original's dead letters and outputs behind it
    b = Runtime(implementation=impl, clock=clock_b, on_output=out_b.extend)
    clock_b.now = clock_a.now
    store.restore(b, [store.decode(r) for r in records], [machine])
    a.take_dead_letters()
    out_a.clear()
    assert observe(b, agents, out_b)[0] == observe(a, agents, out_a)[0]
    for runtime, clock, copy in (
        (a, clock_a, random.Random(seed + 100)),
        (b, clock_b, random.Random(seed + 100)),
    ):
        drive(runtime, clock, copy, 150, agents)
        clock.now += 100
        runtime.fire_timers()
        runtime.run_until_idle()
    assert observe(b, agents, out_b) == observe(a, agents, out_a)


def test_timers_fire_once_after_a_restart_of_the_process(tmp_path: Path, impl: str) -> None:
    """Saved to SQLite here, restored in a fresh process: a timer due while the process was
    gone fires at the first fire_timers, once; one still pending fires on time."""
    machine_code = textwrap.dedent(
        """
        import engine
        from engine import Step, Timer
        m = engine.Machine("t", ["s"], "s", [("s", "ring", None, "rang")],
                           events=["ring", "arm"])

        @m.handler("s", "arm")
        def arm(agent, event):
            return Step(actions=[Timer("soon", 0.05, "ring", payload="soon"),
                                 Timer("later", 3600, "ring", payload="later")])
        """
    )
    (tmp_path / "lab_machine.py").write_text(machine_code)
    sys.path.insert(0, str(tmp_path))
    try:
        from lab_machine import m  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    rt = Runtime(implementation=impl)
    rt.spawn(m, "x")
    rt.send_nowait("x", "arm")
    rt.run_until_idle()
    db = store.SQLiteStore(tmp_path / "agents.db")
    store.save(rt, db)
    db.close()
    script = textwrap.dedent(
        f"""
        import json, time, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import engine, engine.store as store
        from lab_machine import m
        time.sleep(0.1)  # the "soon" timer is overdue now
        out = []
        rt = engine.Runtime(implementation={impl!r}, on_output=out.extend)
        report = store.load(rt, store.SQLiteStore({str(tmp_path / "agents.db")!r}), [m])
        fired = [rt.fire_timers(), rt.fire_timers()]
        rt.run_until_idle()
        print(json.dumps([report.restored, fired, [o for _, o in out], rt.timers("x")]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    restored, fired, outputs, timers = json.loads(done.stdout)
    assert restored == ["x"]
    assert fired == [1, 0]
    assert outputs == ["rang"]
    assert timers == [["timer", "later"]]


def test_load_restores_the_good_records_and_reports_the_rest(tmp_path: Path, impl: str) -> None:
    light = Machine("light", ["red", "green"], "red", [("red", "tick", "green")])
    other = Machine("other", ["s"], "s", [])
    rt = Runtime(implementation=impl)
    for i in range(5):
        rt.spawn(light, f"l{i}")
        rt.send_nowait(f"l{i}", "tick")
    rt.spawn(other, "stranger")
    db = store.SQLiteStore(tmp_path / "agents.db")
    store.save(rt, db)
    # damage one record in place
    raw = db._db  # the store's own connection (a test may look behind the API)
    (rid, record) = raw.execute(
        "SELECT id, record FROM snapshots WHERE agent = ?", (store.agent_key("l2"),)
    ).fetchone()
    raw.execute("UPDATE snapshots SET record = ? WHERE id = ?", (record[:-4], rid))
    fresh = Runtime(implementation=impl)
    report = store.load(fresh, db, [light])
    assert sorted(report.restored) == ["l0", "l1", "l3", "l4"]
    failed = dict(report.failed)
    assert isinstance(failed[store.agent_key("l2")], CorruptRecordError)
    assert isinstance(failed[store.agent_key("stranger")], store.MachineNotFoundError)
    assert fresh.run_until_idle() == 4
    db.close()


def test_plain_agents_are_encoded_as_the_general_path_encodes_them(impl: str) -> None:
    """``records`` takes a fast path for agents holding nothing but counters and data; its
    records must be the general path's, byte for byte, and the others must still be whole."""
    from engine.store._snapshot import encode_exported, encode_plain

    m = Machine("m", ["a", "b"], "a", [("a", "go", "b"), ("b", "go", "a")], events=["go", "t"])
    rt = Runtime(implementation=impl)
    for i in range(12):
        rt.spawn(m, i if i % 2 else f"agent {i}", {"n": i}, capacity=3 * (i % 3),
                 policy=engine.OverflowPolicy.DROP_OLDEST if i % 4 == 1 else None)
    rt.send_many([1, 3, "agent 4"], ["go"] * 3)
    rt.run_until_idle()
    rt.send_nowait(5, "go")  # queued: not plain
    rt.pause(7)  # paused: not plain
    rt.spawn(m, "own supervision", supervision=engine.Supervision(max_restarts=2))
    all_slots = rt.slots(rt.agent_ids())
    (ids, *_) = columns = rt._export_slots(all_slots)[0]
    assert set(ids) == set(rt.agent_ids()) - {5, 7, "own supervision"}
    wall = 1234.5
    fast = encode_plain(columns, wall)
    general = [encode_exported(s, wall) for s in rt._export(ids)]
    assert [r for _, _, r in fast] == general
    back = {}
    for key, _, record in store.records(rt):
        snap = store.decode(record)
        back[snap.agent_id] = snap
        assert key == store.agent_key(snap.agent_id)
    assert sorted(back, key=str) == sorted(rt.agent_ids(), key=str)
    for snap in store.capture(rt):
        assert attrs.evolve(back[snap.agent_id], taken_at=snap.taken_at) == snap


@pytest.mark.parametrize(
    ("field", "value"),
    [(13, -1), (14, "2"), (18, 1.5), (19, True), (9, 0), (8, False), (20, 7), (7, "now"),
     (2, "nowhere"), (1, 5), (16, False), (22, None),
     (25, 7), (25, ["acme"]), (25, "no such tenant"), (25, "x" * 100_000)],
)
def test_records_that_look_plain_are_checked_as_strictly(
    impl: str, field: int, value: Any
) -> None:
    """``load`` reads plain records a shorter way; a record whose checksum holds but whose
    fields are wrong must still be refused (``CorruptRecordError`` or the state's error)."""
    from engine.store._codec import frame

    m = Machine("m", ["a"], "a", [("a", "go", "a")])
    (_, _, good), = store.records(_one(impl, m), [0])
    from engine.store._snapshot import DEFAULT_CODEC

    body = DEFAULT_CODEC.unpack(good[7:])
    body[field] = value
    s = store.MemoryStore()
    s.write([("i:0", 1.0, frame(DEFAULT_CODEC.pack(body)))])
    report = store.load(Runtime(implementation=impl), s, [m])
    assert report.restored == []
    ((_, error),) = report.failed
    assert isinstance(error, engine.EngineError)
    s.write([("i:0", 2.0, good)])
    assert store.load(Runtime(implementation=impl), s, [m]).restored == [0]


def _one(impl: str, m: Machine) -> Runtime:
    rt = Runtime(implementation=impl)
    rt.spawn(m, 0, {"x": 1})
    return rt


def test_a_value_that_cannot_be_encoded_writes_nothing(impl: str) -> None:
    light = Machine("light", ["red", "green"], "red", [("red", "tick", "green")])
    rt = Runtime(implementation=impl)
    rt.spawn(light, "fine", {"n": 1})
    rt.spawn(light, "odd", {"handle": Point(1, 2)})
    mem = store.MemoryStore()
    with pytest.raises(CodecError, match=r"agent 'odd'.*\$\[3\]\['handle'\]"):
        store.save(rt, mem)
    assert mem.latest() == []
    codec = Codec()
    codec.register(Point, "geo.Point", lambda p: [p.x, p.y], lambda xy: Point(*xy))
    store.save(rt, mem, codec=codec)
    fresh = Runtime(implementation=impl)
    assert sorted(store.load(fresh, mem, [light], codec=codec).restored) == ["fine", "odd"]
    assert fresh.data("odd") == {"handle": Point(1, 2)}


def test_restoring_over_a_live_agent_or_an_unknown_name_is_refused(impl: str) -> None:
    light = Machine("light", ["red", "green"], "red", [("red", "tick", "green")])
    rt = Runtime(implementation=impl)
    rt.spawn(light, "a")
    (snap,) = store.capture(rt)
    with pytest.raises(engine.AgentExistsError):
        store.restore(rt, [snap], [light])
    renamed = Machine("light", ["amber"], "amber", [])  # another machine under that name
    with pytest.raises(engine.UnknownStateError):
        store.restore(Runtime(implementation=impl), [snap], [renamed])
    with pytest.raises(engine.AgentNotFoundError):
        store.capture(rt, ["nobody"])


def test_records_of_format_1_still_read(impl: str) -> None:
    """Format 1 had no machine version and no hibernation flag: it reads as version 1."""
    import zlib

    from engine.store._codec import _HEAD, MAGIC
    from engine.store._snapshot import DEFAULT_CODEC

    m = Machine("m", ["a", "b"], "a", [("a", "go", "b")])
    (_, _, record), = store.records(_one(impl, m), [0])
    body = DEFAULT_CODEC.unpack(record[_HEAD.size :])
    old = DEFAULT_CODEC.pack(body[:-3])  # without version, flag and tenant
    framed = _HEAD.pack(MAGIC, 1, zlib.crc32(old)) + old
    snap = store.decode(framed)
    assert (snap.version, snap.hibernated, snap.data) == (1, False, {"x": 1})
    s = store.MemoryStore()
    s.write([("i:0", 1.0, framed)])
    assert store.load(Runtime(implementation=impl), s, [m]).restored == [0]


@pytest.mark.parametrize(
    ("field", "value"),
    [(6, "junk"), (13, -1), (1, 5), (6, [[1]]), (25, 7), (25, "no such tenant")],
)
def test_damaged_hibernation_records_are_reported_not_adopted(
    impl: str, field: int, value: Any
) -> None:
    from engine.store._codec import frame
    from engine.store._snapshot import DEFAULT_CODEC

    m = Machine("m", ["a"], "a", [("a", "go", "a")])
    rt = _one(impl, m)
    s = store.MemoryStore()
    store.Hibernation(rt, s)
    rt.hibernate(0)
    (good,) = s.latest()
    body = DEFAULT_CODEC.unpack(good.record[7:])
    assert body[24] is True  # a hibernation record
    body[field] = value
    s.write([("i:0", 2.0, frame(DEFAULT_CODEC.pack(body)))])
    fresh = Runtime(implementation=impl)
    store.Hibernation(fresh, s)
    report = store.load(fresh, s, [m])
    assert (report.restored, report.hibernated) == ([], [])
    ((_, error),) = report.failed
    assert isinstance(error, engine.EngineError)
    assert 0 not in fresh
