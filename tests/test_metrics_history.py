"""The metrics history (``engine.observe.MetricsHistory``): readings on trio's clock, rates
against known workloads, the ring, machines and tenants that come and go, latencies, saving
to real stores and reading back, the agents' paths (restore, hibernation, the commit log,
compaction, ``engine run``) untouched by the saved history, damaged records, bad arguments,
and ``engine metrics-plot`` writing a real PNG. Every runtime test runs on both hot paths."""

from __future__ import annotations

import contextlib
import math
import struct
import sys
import textwrap
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import trio
import trio.testing
from flaky_store import FlakyStore
from hypothesis import given, settings
from hypothesis import strategies as st
from long_lived import counter

import engine
import engine.store as store
from engine import (
    AgentStatus,
    ConfigError,
    InvalidArgumentError,
    Limits,
    Machine,
    Runtime,
    StoreError,
)
from engine.cli import main
from engine.environment._config import check_app
from engine.observe import (
    MACHINE_COLUMNS,
    RUNTIME_COLUMNS,
    TENANT_COLUMNS,
    MetricsHistory,
    MetricsReadings,
)
from engine.observe._readings import KEY, decode, encode
from engine.store import CorruptRecordError

PNG = b"\x89PNG\r\n\x1a\n"


def job() -> Machine:
    """``go`` is processed; ``bad`` has no transition, so it fails (a dead letter)."""
    return Machine("job", ["idle"], "idle", [("idle", "go", None)], events=["go", "bad"])


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def mock_run(main: Any) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Two sets of columns are equal, NaN for NaN."""
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# -- readings on trio's clock ---------------------------------------------------------------


def test_run_reads_once_every_interval_of_virtual_time(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(metrics_history=0.25, implementation=impl) as rt:
            start = trio.current_time()
            history = rt.metrics_history
            assert isinstance(history, MetricsHistory)
            await trio.sleep(10.1)
            assert len(history) == 40
            t = history.runtime()["time"]
            np.testing.assert_allclose(t - start, 0.25 * np.arange(1, 41), atol=1e-9)
            await trio.sleep(0.2)  # 10.3: still 41 (10.25), not 42
            assert len(history) == 41
        assert len(rt.metrics_history) == 41  # stopped with the runtime; still readable

    mock_run(main)


def test_rates_under_trio_match_a_workload_of_known_rate(impl: str) -> None:
    """7 messages and 2 failures per virtual second, sent half-way between readings, into a
    tenant: the runtime's, the machine's and the tenant's rates are exactly 7 and 2."""
    m = job()

    async def sender(rt: Runtime) -> None:
        await trio.sleep(0.5)
        while True:
            for _ in range(7):
                await rt.send("a", "go")
            for _ in range(2):
                await rt.send("a", "bad")
            await trio.sleep(1.0)

    async def main() -> None:
        async with engine.open_runtime(
            metrics_history=1.0, tenants=[engine.Tenant("acme")], implementation=impl
        ) as rt:
            rt.spawn(m, "a", tenant="acme")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender, rt)
                await trio.sleep(12.9)
                nursery.cancel_scope.cancel()
            history = rt.metrics_history
            assert len(history) == 12
            r = history.runtime()
            for columns in (r, history.machines()["job"], history.tenants()["acme"]):
                assert columns["processed_per_s"].tolist() == [7.0] * 12
                assert columns["failed_per_s"].tolist() == [2.0] * 12
                assert columns["processed"].tolist() == [7.0 * k for k in range(1, 13)]
            assert r["failed"][-1] == 24
            assert set(history.tenants()) == {"default", "acme"}
            assert history.tenants()["default"]["processed_per_s"].tolist() == [0.0] * 12

    mock_run(main)


def test_rates_counts_and_gauges_of_a_synchronous_runtime(make_runtime: Any) -> None:
    clock = Clock()
    rt = make_runtime(clock=clock)
    m = job()
    rt.spawn(m, "a")
    rt.spawn(m, "b")
    history = MetricsHistory(rt, interval=2.0)
    history.sample()  # the first reading has no rates
    for ok, bad in [(30, 0), (10, 4), (0, 0)]:
        clock.now += 2.0
        if ok + bad:
            rt.send_many(["a"] * ok + ["b"] * bad, ["go"] * ok + ["bad"] * bad)
        rt.run_until_idle()
        history.sample()
    rt.send_many(["a", "a", "b"], ["go", "go", "go"])  # queued, not run
    clock.now += 0.5
    history.sample()
    r = history.runtime()
    assert math.isnan(r["processed_per_s"][0])
    assert r["processed_per_s"][1:].tolist() == [15.0, 5.0, 0.0, 0.0]
    assert r["failed_per_s"][1:].tolist() == [0.0, 2.0, 0.0, 0.0]
    assert r["processed"].tolist() == [0, 30, 40, 40, 40]
    assert r["failed"].tolist() == [0, 0, 4, 4, 4]
    assert r["queued"].tolist() == [0, 0, 0, 0, 3]
    assert r["ready"].tolist() == [0, 0, 0, 0, 2]
    assert r["agents"].tolist() == [2] * 5
    assert r["time"].tolist() == [0.0, 2.0, 4.0, 6.0, 6.5]
    machine = history.machines()["job"]
    assert machine["queued"].tolist() == [0, 0, 0, 0, 3]
    assert machine["processed_per_s"][1:].tolist() == [15.0, 5.0, 0.0, 0.0]
    assert history.tenants() == {}  # no tenants: none reported, as statistics().tenants


def test_a_machine_rate_is_never_negative_when_agents_leave(make_runtime: Any) -> None:
    clock = Clock()
    rt = make_runtime(clock=clock)
    m = job()
    rt.spawn(m, "a")
    rt.send_many(["a"] * 5, ["go"] * 5)
    rt.run_until_idle()
    history = MetricsHistory(rt)
    history.sample()
    rt.terminate("a")  # its 5 go with it from the machine's sum, not from the runtime's
    clock.now = 1.0
    history.sample()
    assert history.machines()["job"]["processed_per_s"][1] == 0.0
    assert history.machines()["job"]["processed"].tolist() == [5.0, 0.0]
    assert history.runtime()["processed_per_s"][1] == 0.0
    assert history.runtime()["processed"].tolist() == [5.0, 5.0]


# -- the ring, and series that come and go ---------------------------------------------------


def test_the_ring_wraps_at_size_and_keeps_the_newest(make_runtime: Any) -> None:
    clock = Clock()
    rt = make_runtime(clock=clock)
    rt.spawn(job(), "a")
    history = MetricsHistory(rt, size=4)
    for k in range(1, 11):
        clock.now = float(k)
        rt.send_many(["a"] * k, ["go"] * k)
        rt.run_until_idle()
        history.sample()
        assert len(history) == min(k, 4)
    r = history.runtime()
    assert set(r) == set(RUNTIME_COLUMNS)
    assert r["time"].tolist() == [7.0, 8.0, 9.0, 10.0]
    assert r["processed_per_s"].tolist() == [7.0, 8.0, 9.0, 10.0]
    assert r["processed"].tolist() == [28.0, 36.0, 45.0, 55.0]
    assert history.machines()["job"]["processed"].tolist() == [28.0, 36.0, 45.0, 55.0]
    r["time"][:] = 0  # a copy: the ring is not touched
    assert history.runtime()["time"].tolist() == [7.0, 8.0, 9.0, 10.0]


def test_last_reads_the_newest_readings_across_the_wrap(make_runtime: Any) -> None:
    """``last=`` (what the dashboard reads) is the tail of the whole columns, for every
    position of the ring's write index, for the runtime, machines and tenants alike."""
    clock = Clock()
    rt = make_runtime(clock=clock)
    rt.add_tenant("acme")
    rt.spawn(job(), "a", tenant="acme")
    history = MetricsHistory(rt, size=5)
    assert history.runtime(last=3)["time"].shape == (0,)  # no reading yet
    for k in range(1, 13):
        clock.now = float(k)
        rt.send_many(["a"] * k, ["go"] * k)
        rt.run_until_idle()
        history.sample()
        whole = history.readings()
        for last in (1, 2, 4, 5, 6, 1000):
            same(history.runtime(last=last), {n: v[-last:] for n, v in whole.runtime.items()})
            for got, every in (
                (history.machines(last=last), whole.machines),
                (history.tenants(last=last), whole.tenants),
            ):
                assert got.keys() == every.keys()
                for name, columns in every.items():
                    same(got[name], {n: v[-last:] for n, v in columns.items()})
    assert history.tenants(last=2)["acme"]["processed"].tolist() == [66.0, 78.0]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="last"):
            history.runtime(last=bad)


def test_machines_and_tenants_that_come_and_go_stay_aligned(make_runtime: Any) -> None:
    clock = Clock()
    rt = make_runtime(clock=clock)
    rt.spawn(job(), "a")
    history = MetricsHistory(rt, size=5)

    def tick() -> None:
        clock.now += 1.0
        history.sample()
        n = len(history)
        for group in (history.machines(), history.tenants()):
            for columns in group.values():
                assert {len(v) for v in columns.values()} == {n}

    tick()
    tick()
    rt.add_tenant("acme", limits=Limits(max_queued=100))
    rt.spawn(counter, "c", {"seen": []}, tenant="acme")
    rt.send_many(["c"] * 3, ["inc"] * 3)
    tick()  # reading 3: the new machine and both tenants appear
    machines, tenants = history.machines(), history.tenants()
    assert set(machines) == {"job", "counter"}
    assert set(tenants) == {"default", "acme"}
    assert set(tenants["acme"]) == set(TENANT_COLUMNS)
    assert set(machines["counter"]) == set(MACHINE_COLUMNS)
    np.testing.assert_array_equal(machines["counter"]["agents"], [np.nan, np.nan, 1.0])
    np.testing.assert_array_equal(tenants["acme"]["queued"], [np.nan, np.nan, 3.0])
    assert tenants["acme"]["processed_per_s"][-1] == 0.0  # new: counted from 0
    rt.run_until_idle()
    tick()
    assert history.tenants()["acme"]["processed_per_s"][-1] == 3.0
    rt.remove_tenant("acme", terminate=True)
    tick()  # reading 5: acme is gone from the runtime, kept here with NaN
    acme = history.tenants()["acme"]["agents"]
    np.testing.assert_array_equal(acme, [np.nan, np.nan, 1.0, 1.0, np.nan])
    for _ in range(3):
        tick()
        assert "acme" in history.tenants()  # its readings 3 and 4 are still in the ring
    tick()  # reading 9: the ring holds readings 5..9, none of them with acme
    assert set(history.tenants()) == {"default"}
    assert set(history.machines()) == {"job", "counter"}  # a machine stays registered
    rt.add_tenant("acme")  # back, under its old name: a new series, NaN before
    tick()
    np.testing.assert_array_equal(history.tenants()["acme"]["agents"], [np.nan] * 4 + [0.0])


def test_the_default_tenant_takes_over_the_runtime_counts(make_runtime: Any) -> None:
    """The default tenant appears when the first tenant is added, with everything the
    runtime did before: its first rate is over the interval, not a spike."""
    clock = Clock()
    rt = make_runtime(clock=clock)
    rt.spawn(job(), "a")
    rt.send_many(["a"] * 10, ["go"] * 10)
    rt.run_until_idle()
    history = MetricsHistory(rt)
    history.sample()
    rt.send_many(["a"] * 4, ["go"] * 4)
    rt.run_until_idle()
    rt.add_tenant("acme")
    clock.now = 2.0
    history.sample()
    default = history.tenants()["default"]
    np.testing.assert_array_equal(default["processed"], [np.nan, 14.0])
    assert default["processed_per_s"][-1] == 2.0  # 4 in 2 s
    assert history.tenants()["acme"]["processed_per_s"][-1] == 0.0


# -- latencies -------------------------------------------------------------------------------


def test_latencies_are_nan_without_sampling(make_runtime: Any) -> None:
    rt = make_runtime()
    rt.add_tenant("acme")
    rt.spawn(job(), "a", tenant="acme")
    rt.send_many(["a"] * 50, ["go"] * 50)
    rt.run_until_idle()
    history = MetricsHistory(rt)
    history.sample()
    for columns in (history.runtime(), history.tenants()["acme"]):
        for name in ("step_p50", "step_p99", "wait_p50", "wait_p99"):
            assert math.isnan(columns[name][0]), name


def test_latency_percentiles_are_kept_when_sampling(make_runtime: Any) -> None:
    rt = make_runtime(sample_every=1)
    rt.add_tenant("acme")
    rt.spawn(job(), "a", tenant="acme")
    rt.send_many(["a"] * 200, ["go"] * 200)
    rt.run_until_idle()
    history = MetricsHistory(rt)
    history.sample()
    stats = rt.statistics()
    r, acme = history.runtime(), history.tenants()["acme"]
    assert stats.step is not None
    assert stats.wait is not None
    assert r["step_p50"][0] == stats.step.p50 > 0
    assert r["step_p99"][0] == stats.step.p99 >= stats.step.p50
    assert r["wait_p99"][0] == stats.wait.p99 > 0
    assert acme["step_p50"][0] > 0
    assert acme["wait_p50"][0] > 0


# -- saving to stores ------------------------------------------------------------------------


def _history_run(impl: str, s: store.Store, seconds: float = 130.5) -> MetricsHistory:
    """A runtime with tenants, sampling and traffic for ``seconds`` of virtual time, with a
    history saved to ``s``; returns the history (read after the runtime closed)."""
    m = job()

    async def main() -> MetricsHistory:
        async with engine.open_runtime(
            store=s, metrics_history=1.0, metrics_history_size=100, sample_every=2,
            tenants=[engine.Tenant("acme")], implementation=impl,
        ) as rt:  # fmt: skip
            rt.spawn(m, "a", tenant="acme")
            rt.spawn(m, "b")
            for k in range(int(seconds)):
                for _ in range(k % 5):
                    await rt.send("a", "go")
                await rt.send("b", "bad" if k % 3 else "go")
                await trio.sleep(1.0)
            await trio.sleep(seconds % 1)
        history: MetricsHistory = rt.metrics_history
        return history

    out: list[MetricsHistory] = []

    async def run() -> None:
        out.append(await main())

    mock_run(run)
    return out[0]


def _same_readings(saved: MetricsReadings | None, history: MetricsHistory) -> None:
    assert saved is not None
    assert (saved.interval, saved.size) == (history.interval, history.size)
    assert len(saved) == len(history)
    same(saved.runtime, history.runtime())
    assert saved.machines.keys() == history.machines().keys()
    assert saved.tenants.keys() == history.tenants().keys()
    for name, columns in history.machines().items():
        same(saved.machines[name], columns)
    for name, columns in history.tenants().items():
        same(saved.tenants[name], columns)


def test_saved_to_a_memory_store_periodically_and_at_exit(impl: str) -> None:
    s = store.MemoryStore()
    history = _history_run(impl, s)
    assert len(history) == 100  # 130 readings, the ring keeps 100
    _same_readings(MetricsHistory.load(s), history)  # the save at exit has all of them
    assert len(s.history(KEY)) == 1  # two periodic saves and the last: one record kept
    assert np.isfinite(history.runtime()["step_p99"]).all()


def test_saved_to_sqlite_and_read_back_by_another_connection(impl: str, tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    first = store.SQLiteStore(path)
    history = _history_run(impl, first, seconds=20.5)
    first.close()
    again = store.SQLiteStore(path)
    _same_readings(MetricsHistory.load(again), history)
    assert len(again.history(KEY)) == 1
    again.close()


def test_saved_to_postgres(postgres_db: str) -> None:
    s = store.PostgresStore(postgres_db)
    try:
        history = _history_run("python", s, seconds=5.5)
        _same_readings(MetricsHistory.load(s), history)
        assert store.load(Runtime(), s, [job()]).failed == []
    finally:
        s.close()


def test_save_and_load_directly(make_runtime: Any) -> None:
    rt = make_runtime()
    rt.spawn(job(), "a")
    s = store.MemoryStore()
    assert MetricsHistory.load(s) is None
    history = MetricsHistory(rt, store=s)
    history.sample()
    history.save()
    history.sample()
    history.save()
    _same_readings(MetricsHistory.load(s), history)
    assert [r.agent for r in s.latest()] == [KEY]
    assert len(s.history(KEY)) == 1


def test_hostile_names_survive_the_record() -> None:
    rt = Runtime()
    hostile = 'a\x00b"\n☃/' + "z" * 150
    rt.add_tenant(hostile)
    rt.spawn(Machine("m/\x01☃", ["s"], "s", [("s", "go", None)]), 1, tenant=hostile)
    history = MetricsHistory(rt)
    history.sample()
    saved = decode(encode(history.readings()))
    assert set(saved.tenants) == {"default", hostile}
    assert set(saved.machines) == {"m/\x01☃"}


@settings(max_examples=60, deadline=None)
@given(
    runtime=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20),
    names=st.lists(st.text(max_size=30), max_size=4, unique=True),
)
def test_any_columns_round_trip(runtime: list[float], names: list[str]) -> None:
    n = len(runtime)
    column = np.array(runtime)
    group = {name: {"agents": column[::-1].copy()} for name in names}
    readings = MetricsReadings(0.5, max(n, 7), {"time": column}, group, dict(group))
    back = decode(encode(readings))
    same(back.runtime, readings.runtime)
    assert back.machines.keys() == back.tenants.keys() == set(names)
    for name in names:
        same(back.tenants[name], group[name])


def test_a_failing_save_is_counted_and_the_next_one_tries_again(impl: str) -> None:
    s = FlakyStore(down=True)

    async def main() -> None:
        async with engine.open_runtime(store=s, metrics_history=1.0, implementation=impl) as rt:
            history = rt.metrics_history
            while history.failed_saves < 2:  # the saves at 60 and 120 s fail
                await trio.sleep(1.0)
            assert "the disk is gone" in str(history.last_save_error)
            assert len(history) >= 120  # it reads on, and the runtime runs on
            s.down = False
        assert history.failed_saves == 2  # the save at exit worked
        saved = MetricsHistory.load(s)  # type: ignore[arg-type]
        assert saved is not None
        same(saved.runtime, history.runtime())

    mock_run(main)


# -- the agents' paths do not see it --------------------------------------------------------


def _agents_then_history(impl: str, path: Path, **options: Any) -> None:
    """A first run: agents of ``counter``, mail, a history saved to the SQLite file."""

    async def main() -> None:
        async with engine.open_runtime(
            store=store.SQLiteStore(path), metrics_history=1.0, implementation=impl, **options
        ) as rt:
            for i in range(4):
                rt.spawn(counter, i, {"seen": []})
            for i in range(4):
                await rt.send(i, "inc", f"m{i}")
            await trio.sleep(30)

    mock_run(main)


def test_open_runtime_restore_and_load_skip_the_history(impl: str, tmp_path: Path) -> None:
    path = tmp_path / "snap.db"
    _agents_then_history(impl, path, durability="snapshot")
    s = store.SQLiteStore(path)
    assert KEY in [r.agent for r in s.latest()]  # it is there, among the agents
    report = store.load(Runtime(implementation=impl), s, [counter])
    assert (sorted(report.restored), report.failed, report.hibernated) == ([0, 1, 2, 3], [], [])
    s.close()

    async def second() -> None:
        async with engine.open_runtime(
            store=store.SQLiteStore(path), restore=[counter], implementation=impl
        ) as rt:
            assert sorted(rt.recovery.restored) == [0, 1, 2, 3]
            assert rt.recovery.failed == []
            assert rt.data(2) == {"seen": ["m2"]}

    mock_run(second)


def test_a_damaged_history_does_not_fail_a_restore(impl: str) -> None:
    rt = Runtime(implementation=impl)
    rt.spawn(counter, "x", {"seen": [1]})
    s = store.MemoryStore()
    store.save(rt, s)
    s.write([(KEY, 0.0, b"not a history at all")])
    report = store.load(Runtime(implementation=impl), s, [counter])
    assert (report.restored, report.failed) == (["x"], [])
    with pytest.raises(CorruptRecordError):
        MetricsHistory.load(s)


def test_hibernation_the_commit_log_and_its_recovery_with_a_history(
    impl: str, tmp_path: Path
) -> None:
    """Agents hibernate, wake and expire under the commit log while the history is saved to
    the same SQLite file; a second run recovers what is left and nothing fails. (Real time:
    on a mock clock, virtual time would run on while SQLite writes in a worker thread.)"""
    path = tmp_path / "log.db"

    async def first() -> None:
        async with engine.open_runtime(
            store=store.SQLiteStore(path), durability="log", hibernate_after=0.05,
            expire_after=0.5, metrics_history=0.02, implementation=impl,
        ) as rt:  # fmt: skip
            for i in range(4):
                rt.spawn(counter, i, {"seen": []})
                rt.send_nowait(i, "inc", i)
            await rt.flush()
            await trio.sleep(0.3)
            assert all(rt.status(i) is AgentStatus.HIBERNATED for i in range(4))
            await rt.send(1, "inc", "awake")  # wakes it from the store
            await rt.wait_until_idle()
            assert rt.data(1) == {"seen": [1, "awake"]}
            await trio.sleep(1.5)  # all four expire, 1 after sleeping again
            assert rt.statistics().expired == 4
            rt.spawn(counter, "new", {"seen": []})
            await rt.send("new", "inc", "n")
            assert rt.metrics_history.runtime()["hibernated"].max() == 4

    async def second() -> None:
        async with engine.open_runtime(
            store=store.SQLiteStore(path), durability="log", restore=[counter],
            hibernate_after=0.05, implementation=impl,
        ) as rt:  # fmt: skip
            assert (rt.recovery.restored, rt.recovery.failed) == (["new"], [])
            assert rt.data("new") == {"seen": ["n"]}
            await trio.sleep(0.5)
            assert rt.status("new") is AgentStatus.HIBERNATED

    trio.run(first)
    trio.run(second)
    s = store.SQLiteStore(path)
    saved = MetricsHistory.load(s)
    assert saved is not None
    assert len(saved) > 50
    assert store.load(Runtime(implementation=impl), s, [counter]).failed == []
    s.close()


def test_compaction_keeps_the_history_and_the_agents(impl: str, tmp_path: Path) -> None:
    path = tmp_path / "compact.db"
    _agents_then_history(impl, path, durability="log")
    s = store.SQLiteStore(path)
    before = MetricsHistory.load(s)
    rt = Runtime(implementation=impl)
    rt.spawn(counter, 0, {"seen": ["again"]})
    store.save(rt, s)  # a second record for agent 0
    s.write([(store.agent_key(3), 0.0, store.TOMBSTONE)])  # agent 3 terminated
    assert before is not None
    s.write([(KEY, 0.0, encode(before))])  # a second record of the history
    assert len(s.history(KEY)) == 2
    assert s.compact() >= 3
    assert len(s.history(store.agent_key(0))) == 1
    assert s.history(store.agent_key(3)) == []
    assert len(s.history(KEY)) == 2  # compaction leaves reserved keys alone (saves drop them)
    after = MetricsHistory.load(s)
    assert after is not None
    same(after.runtime, before.runtime)
    report = store.load(Runtime(implementation=impl), s, [counter])
    assert (sorted(report.restored), report.failed) == ([0, 1, 2], [])
    s.close()


# -- damaged records -------------------------------------------------------------------------


def _frame(body: bytes, version: int = 1) -> bytes:
    return struct.pack(">3sBI", b"EMH", version, zlib.crc32(body)) + body


def _body(**changes: Any) -> bytes:
    good: dict[str, Any] = {
        "interval": 1.0,
        "size": 10,
        "runtime": {"time": np.arange(3.0).tobytes()},
        "machines": {"m": {"agents": np.ones(3).tobytes()}},
        "tenants": {},
    }
    good.update(changes)
    return msgpack.packb({k: v for k, v in good.items() if v is not ...}, use_bin_type=True)


GOOD = _frame(_body())
DAMAGED = {
    "empty": b"",
    "truncated head": GOOD[:5],
    "truncated body": GOOD[:-3],
    "flipped byte": GOOD[:-1] + bytes([GOOD[-1] ^ 1]),
    "wrong magic": b"ENX" + GOOD[3:],
    "newer version": _frame(_body(), version=2),
    "not msgpack": _frame(b"\xc1\xc1\xc1"),
    "a list": _frame(msgpack.packb([1, 2, 3])),
    "a missing field": _frame(_body(tenants=...)),
    "an extra field": _frame(_body(extra=1)),
    "nan interval": _frame(_body(interval=math.nan)),
    "zero interval": _frame(_body(interval=0.0)),
    "int interval": _frame(_body(interval=1)),
    "huge size": _frame(_body(size=10**7)),
    "bool size": _frame(_body(size=True)),
    "no time": _frame(_body(runtime={"agents": np.ones(3).tobytes()})),
    "no columns": _frame(_body(runtime={})),
    "odd bytes": _frame(_body(runtime={"time": b"1234567"})),
    "a str column": _frame(_body(runtime={"time": "abc"})),
    "uneven columns": _frame(_body(machines={"m": {"agents": np.ones(4).tobytes()}})),
    "longer than size": _frame(_body(size=2)),
    "a name not str": _frame(_body(machines={b"m": {"agents": np.ones(3).tobytes()}})),
    "a group not a table": _frame(_body(tenants=[1])),
    "a group's columns not a table": _frame(_body(tenants={"t": 5})),
    "an ext type": _frame(msgpack.packb(msgpack.ExtType(5, b"x"))),
}


@pytest.mark.parametrize("record", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_record_is_a_corrupt_record_error(record: bytes) -> None:
    assert decode(GOOD).runtime["time"].tolist() == [0.0, 1.0, 2.0]
    s = store.MemoryStore()
    s.write([(KEY, 0.0, record)])
    with pytest.raises(CorruptRecordError, match="metrics history"):
        MetricsHistory.load(s)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 400))
def test_hostile_bytes_never_crash(noise: bytes, cut: int) -> None:
    for record in (noise, GOOD[:cut] + noise, _frame(noise)):
        with contextlib.suppress(CorruptRecordError):
            decode(record)


# -- arguments --------------------------------------------------------------------------------

BAD_INTERVALS = [0, -1, 0.0, math.nan, math.inf, -math.inf, 1e-9, 1e9, 10**400, "1", True, None]
BAD_SIZES = [0, -1, 1.5, True, 10**7, 2**100, "3", None]


@pytest.mark.parametrize("interval", BAD_INTERVALS)
def test_a_bad_interval_is_refused(impl: str, interval: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="interval"):
        MetricsHistory(Runtime(implementation=impl), interval=interval)

    async def main() -> None:
        with pytest.raises(InvalidArgumentError, match="metrics_history"):
            async with engine.open_runtime(metrics_history=interval, implementation=impl):
                pytest.fail("the runtime started")  # pragma: no cover

    if interval is not None:
        mock_run(main)


@pytest.mark.parametrize("size", BAD_SIZES)
def test_a_bad_size_is_refused(impl: str, size: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="size"):
        MetricsHistory(Runtime(implementation=impl), size=size)

    async def main() -> None:
        with pytest.raises(InvalidArgumentError, match="metrics_history_size"):
            async with engine.open_runtime(
                metrics_history=1.0, metrics_history_size=size, implementation=impl
            ):
                pytest.fail("the runtime started")  # pragma: no cover

    mock_run(main)


def test_other_bad_arguments() -> None:
    rt = Runtime()
    with pytest.raises(InvalidArgumentError, match=r"engine\.Runtime"):
        MetricsHistory("rt")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="Store"):
        MetricsHistory(rt, store={})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="no store"):
        MetricsHistory(rt).save()
    with pytest.raises(InvalidArgumentError, match="Store"):
        MetricsHistory.load("sqlite:x.db")  # type: ignore[arg-type]
    assert MetricsHistory(rt, interval=0.001, size=1_000_000).size == 1_000_000


def test_an_app_file_checks_its_history_settings() -> None:
    with pytest.raises(ConfigError) as caught:
        check_app({"runtime": {"metrics_history": 0, "metrics_history_size": 0}}, "app.toml")
    assert len(caught.value.problems) == 2
    text = "\n".join(caught.value.problems)
    assert "@ $.runtime.metrics_history\n" in text
    assert text.endswith("@ $.runtime.metrics_history_size")
    config = check_app({"runtime": {"metrics_history": 0.5}}, "app.toml")
    assert (config.runtime.metrics_history, config.runtime.metrics_history_size) == (0.5, 3600)


# -- engine run and engine metrics-plot -------------------------------------------------------

APP_MACHINES = """
import engine
from flaky_store import FlakyStore

JOB = engine.Machine("job", ["idle"], "idle", [("idle", "go", None)], events=["go", "bad"])
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An app file whose agents are kept in a SQLite store, with a metrics history."""
    (tmp_path / "history_machines.py").write_text(APP_MACHINES)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "app.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [runtime]
            metrics_history = 0.05
            sample_every = 1
            [machines.job]
            path = "history_machines:JOB"
            [tenants.acme]
            weight = 2.0
            [[agents]]
            machine = "job"
            ids = ["a", "b"]
            tenant = "acme"
            [store]
            kind = "sqlite"
            path = "{tmp_path / "app.db"}"
            durability = "snapshot"
            """
        )
    )
    yield path
    sys.modules.pop("history_machines", None)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_engine_run_keeps_a_history_that_metrics_plot_draws(
    app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    assert main(["run", str(app), "--for", "0.4"]) == 0
    assert main(["run", str(app), "--for", "0.3"]) == 0  # restores, next to the history
    err = capsys.readouterr().err
    assert "engine: restored 2 agents from the store" in err
    assert "not restored" not in err
    s = store.SQLiteStore(db)
    saved = MetricsHistory.load(s)
    s.close()
    assert saved is not None
    assert len(saved) >= 3  # the second run's: 0.3 s, every 0.05 s
    assert set(saved.tenants) == {"default", "acme"}

    out = tmp_path / "history.png"
    assert main(["metrics-plot", "--store", f"sqlite:{db}", "--out", str(out)]) == 0
    assert _png_size(out) == (1000, 1040)  # 10 x 10.4 inches at 100 dpi, four panels
    assert out.stat().st_size > 20_000
    assert f"readings plotted to {out}" in capsys.readouterr().err
    for flag, name, height in (("--tenant", "acme", 1040), ("--machine", "job", 780)):
        one = tmp_path / f"{name}.png"
        assert main(["metrics-plot", "--store", f"sqlite:{db}", "--out", str(one), flag, name]) == 0
        assert _png_size(one) == (1000, height)
        assert one.read_bytes() != out.read_bytes()


def _plot_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    try:
        code = main(["metrics-plot", *argv])
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_metrics_plot_reports_what_it_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = str(tmp_path / "x.png")
    missing = tmp_path / "missing.db"
    assert "no SQLite store" in _plot_error(capsys, "--store", f"sqlite:{missing}", "--out", out)
    assert not missing.exists()  # not made by looking
    assert "memory store" in _plot_error(capsys, "--store", "memory", "--out", out)
    empty = tmp_path / "empty.db"
    store.SQLiteStore(empty).close()
    assert "no metrics history" in _plot_error(capsys, "--store", f"sqlite:{empty}", "--out", out)

    db = tmp_path / "h.db"
    rt = Runtime()
    rt.spawn(job(), "a")
    s = store.SQLiteStore(db)
    history = MetricsHistory(rt, store=s)
    history.sample()
    history.save()
    s.close()
    where = f"sqlite:{db}"
    err = _plot_error(capsys, "--store", where, "--out", out, "--tenant", "nope")
    assert "no tenant 'nope' (it has: none)" in err
    err = _plot_error(capsys, "--store", where, "--out", out, "--machine", "nope")
    assert "no machine 'nope' (it has: 'job')" in err
    err = _plot_error(capsys, "--store", where, "--out", str(tmp_path / "no" / "dir.png"))
    assert "cannot plot" in err
    _plot_error(capsys, "--store", where, "--out", out, "--tenant", "t", "--machine", "m")
    _plot_error(capsys, "--store", where)  # --out is required

    s = store.SQLiteStore(db)
    s.write([(KEY, 0.0, b"EMH\x01damaged")])
    s.close()
    assert "metrics history record" in _plot_error(capsys, "--store", where, "--out", out)

    with pytest.raises(StoreError):  # its store is closed: SQLite's error, typed
        history.save()
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    s = store.SQLiteStore(db)
    history.store = s
    history.save()
    s.close()
    err = _plot_error(capsys, "--store", where, "--out", out)
    assert "needs matplotlib: pip install matplotlib" in err
