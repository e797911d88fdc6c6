"""engine.cluster on a real local Ray instance: routing, cross-shard order, requests and
subscriptions across shards, live moves under load, added and removed shards, and a killed
shard recovered from its store. Both hot paths run in the shards."""

from __future__ import annotations

import contextlib
import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.cluster import Cluster, Routes, ShardFailedError
from engine.store import SQLiteStore

pytestmark = pytest.mark.cluster

import cluster_machines  # noqa: E402 (after the marker: tests/ is on the path)


@pytest.fixture
def cluster(ray_local: Any, impl: str) -> Iterator[Cluster]:
    c = Cluster(cluster_machines.setup, shards=2, runtime_options={"implementation": impl})
    try:
        yield c
    finally:
        c.close()


def ids_on(c: Cluster, shard: int, n: int, prefix: str = "a") -> list[str]:
    """``n`` ids the hash puts on ``shard``."""
    out, i = [], 0
    while len(out) < n:
        if c.shard_of(f"{prefix}{i}") == shard:
            out.append(f"{prefix}{i}")
        i += 1
    return out


def test_agents_live_where_their_id_hashes(cluster: Cluster, impl: str) -> None:
    ids = [f"r{i}" for i in range(40)] + [7, (1, "x")]
    for agent_id in ids:
        cluster.spawn("relay", agent_id)
    per_shard = {s: set(cluster._wait(cluster.handle(s).agent_ids.remote())) for s in (0, 1)}
    for agent_id in ids:
        assert agent_id in per_shard[cluster.shard_of(agent_id)]
    assert per_shard[0]  # both shards used
    assert per_shard[1]
    # the hash is stable: a fresh router in this process agrees with the shards
    assert [Routes([0, 1])(a) for a in ids] == [cluster.shard_of(a) for a in ids]
    stats = cluster.statistics()
    assert stats.agents == len(ids)
    assert {s.implementation for s in stats.shards} == {impl}
    with pytest.raises(engine.AgentExistsError):
        cluster.spawn("relay", "r0")
    with pytest.raises(engine.EngineError):
        cluster.spawn("no-such-machine", "zz")
    with pytest.raises(engine.InvalidArgumentError):
        cluster.spawn("relay", ["unhashable"])
    with pytest.raises(engine.AgentNotFoundError):
        cluster.send("nobody", "hop", ([], 0))
    with pytest.raises(engine.UnknownEventError):
        cluster.send("r0", "no-such-event")


def test_a_ring_across_shards_and_requests(cluster: Cluster) -> None:
    ring = [f"n{i}" for i in range(10)]
    for agent_id in ring:
        cluster.spawn("relay", agent_id)
    assert {cluster.shard_of(a) for a in ring} == {0, 1}
    cluster.send("n0", "hop", (ring, 99))  # 100 hops round the ring, most between shards
    cluster.wait_until_idle()
    assert [cluster.request(a, "log") for a in ring] == [10] * 10
    assert cluster.statistics().processed == 100 + 10  # the hops and the requests
    assert cluster.dead_letters() == []


def test_order_per_sender_and_receiver_across_shards(cluster: Cluster) -> None:
    senders = ids_on(cluster, 0, 3, "s") + ids_on(cluster, 1, 3, "s")
    sinks = ids_on(cluster, 0, 2, "k") + ids_on(cluster, 1, 2, "k")
    for agent_id in senders + sinks:
        cluster.spawn("relay", agent_id)
    for round_ in range(5):  # each sender sends 40 numbered messages per round to each sink
        cluster.send_many(senders, ["fan"] * len(senders), payloads=[(sinks, round_ * 40, 40)] * 6)
    cluster.wait_until_idle()
    for sink in sinks:
        got = cluster.data(sink)
        assert len(got) == 6 * 200
        for sender in senders:
            assert [n for s, n in got if s == sender] == list(range(200))


def test_subscribe_across_shards(cluster: Cluster) -> None:
    ring = [f"n{i}" for i in range(6)]
    for agent_id in ring:
        cluster.spawn("relay", agent_id)
    everything = cluster.subscribe()
    one = cluster.subscribe("n3")
    cluster.send("n0", "hop", (ring, 11))
    cluster.wait_until_idle()
    records = everything.poll()
    assert len(records) == 12
    assert sorted(t.agent_id for _, t in records) == sorted(ring * 2)
    assert all(shard == cluster.shard_of(t.agent_id) for shard, t in records)
    mine = one.poll()
    assert [t.agent_id for _, t in mine] == ["n3", "n3"]
    assert everything.poll() == []  # nothing new, nothing twice
    assert everything.gaps == []


def test_move_keeps_everything_in_order(cluster: Cluster) -> None:
    """Agents move back and forth while numbered mail flows to them from both shards and
    from the driver: nothing lost, nothing reordered per sender."""
    senders = ids_on(cluster, 0, 2, "s") + ids_on(cluster, 1, 2, "s")
    sinks = ids_on(cluster, 0, 2, "k") + ids_on(cluster, 1, 2, "k")
    for agent_id in senders + sinks:
        cluster.spawn("relay", agent_id)
    stop = threading.Event()
    rounds = [0]
    failure: list[BaseException] = []

    def load() -> None:
        try:
            while not stop.is_set():
                r = rounds[0]
                cluster.send_many(
                    senders, ["fan"] * len(senders), payloads=[(sinks, r * 20, 20)] * 4
                )
                rounds[0] = r + 1
        except BaseException as exc:  # reported below
            failure.append(exc)

    # the driver's own calls are not thread-safe with each other: the mover waits its turn
    lock = threading.Lock()
    real = cluster.send_many

    def locked(*args: Any, **kwargs: Any) -> None:
        with lock:
            real(*args, **kwargs)

    cluster.send_many = locked  # type: ignore[method-assign]
    thread = threading.Thread(target=load)
    thread.start()
    try:
        for k in range(8):
            agent_id = sinks[k % len(sinks)]
            with lock:
                cluster.move(agent_id, 1 - cluster.shard_of(agent_id))
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert not failure
    cluster.wait_until_idle()
    total = rounds[0] * 20
    assert total >= 20
    for sink in sinks:
        got = cluster.data(sink)
        for sender in senders:
            assert [n for s, n in got if s == sender] == list(range(total)), sink
    assert cluster.dead_letters() == []


def test_mail_for_an_agent_on_its_way_is_held_then_delivered(cluster: Cluster) -> None:
    (a,) = ids_on(cluster, 0, 1, "m")
    cluster.spawn("relay", a)
    cluster.send(a, "hi", ("driver", 0))
    cluster.move(a, 1)
    assert cluster.shard_of(a) == 1
    cluster.send(a, "hi", ("driver", 1))
    cluster.wait_until_idle()
    assert cluster.data(a) == [("driver", 0), ("driver", 1)]
    assert cluster.request(a, "log") == [("driver", 0), ("driver", 1)]
    cluster.move(a, 0)  # and back
    cluster.send(a, "hi", ("driver", 2))
    cluster.wait_until_idle()
    assert [n for _, n in cluster.data(a)] == [0, 1, 2]
    with pytest.raises(engine.InvalidArgumentError):
        cluster.move(a, 7)
    with pytest.raises(engine.AgentNotFoundError):
        cluster.move("nobody", 1 - cluster.shard_of("nobody"))
    assert cluster.data(a)  # a failed move changed nothing


def test_shards_added_and_removed_live(cluster: Cluster) -> None:
    ring = [f"n{i}" for i in range(30)]
    for agent_id in ring:
        cluster.spawn("relay", agent_id)
    cluster.send("n0", "hop", (ring, 299))
    new = cluster.add_shard()
    assert cluster.shards == [0, 1, new]
    homes = Routes([0, 1, new])
    assert all(cluster.shard_of(a) == homes(a) for a in ring)
    assert any(cluster.shard_of(a) == new for a in ring)
    cluster.wait_until_idle()
    assert sum(cluster.request(a, "log") or 0 for a in ring) == 300
    cluster.send("n0", "hop", (ring, 299))
    cluster.remove_shard(0)
    assert cluster.shards == [1, new]
    cluster.wait_until_idle()
    assert sum(cluster.request(a, "log") or 0 for a in ring) == 600
    assert sorted(cluster.agent_ids()) == sorted(ring)
    assert cluster.dead_letters() == []


def crash_and_recover(impl: str, store: Any) -> None:
    """Spawn agents on shard 1, send them committed mail, kill its process: a call caught by
    the crash fails typed, then Ray restarts it and it has everything back from its store."""
    c = Cluster(
        cluster_machines.setup, shards=2, store=store, runtime_options={"implementation": impl}
    )
    try:
        sinks = ids_on(c, 1, 3, "k")
        for agent_id in sinks:
            c.spawn("relay", agent_id)
        for n in range(20):  # under the commit log, a send returns once it is committed
            c.send(sinks[n % 3], "hi", ("driver", n))
        c.wait_until_idle()
        (sender,) = ids_on(c, 0, 1, "s")  # traffic between the shards before the crash
        c.spawn("relay", sender)
        c.send(sender, "fan", (sinks, 1000, 5))
        c.wait_until_idle()
        before = [c.data(a) for a in sinks]
        assert sum(len(b) for b in before) == 35
        c.kill_shard(1)
        failed = None
        for _ in range(200):  # a call caught by the crash fails, typed
            try:
                c.data(sinks[0])
            except ShardFailedError as exc:
                failed = exc
                break
            time.sleep(0.01)
        assert isinstance(failed, ShardFailedError)
        assert failed.shard == 1
        deadline = time.monotonic() + 60
        while True:  # Ray restarts it; it recovers from its store
            try:
                after = [c.data(a) for a in sinks]
                break
            except ShardFailedError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert after == before
        (other,) = ids_on(c, 0, 1, "o")  # mail between shards flows again, both ways
        c.spawn("relay", other)
        c.send(other, "fan", ([sinks[0]], 100, 3))
        c.wait_until_idle()
        assert c.data(sinks[0])[-3:] == [(other, 100), (other, 101), (other, 102)]
        assert c.dead_letters() == []
    finally:
        c.close()


def test_a_killed_shard_recovers_from_sqlite(ray_local: Any, impl: str, tmp_path: Path) -> None:
    folder = str(tmp_path)
    crash_and_recover(impl, lambda index: SQLiteStore(f"{folder}/shard-{index}.sqlite"))


def test_a_killed_shard_recovers_from_postgres(ray_local: Any, postgres_db: str) -> None:
    from engine.store import PostgresStore

    dsn = postgres_db
    crash_and_recover("native", lambda index: PostgresStore(dsn, table=f"shard_{index}"))


def test_virtual_time_in_lock_step(ray_local: Any, impl: str) -> None:
    """``virtual_time=True``: every shard runs on a MockClock that ``run_until`` moves in
    lock-step; a message sent at an instant is processed at that instant on any shard."""
    c = Cluster(
        cluster_machines.setup,
        shards=2,
        virtual_time=True,
        runtime_options={"implementation": impl},
    )
    try:
        (a,) = ids_on(c, 0, 1, "t")
        (b,) = ids_on(c, 1, 1, "t")
        c.spawn("ticker", a)
        c.spawn("ticker", b)
        c.send(a, "start", (b, 1.0))  # a ticks every second, b every 0.75 s
        c.send(b, "start", (a, 0.75))
        c.run_until(10.5)
        assert c.now() == 10.5
        # each tick's message is taken at the instant it was sent, on the other shard
        assert c.data(b)["got"] == [(float(t), float(t)) for t in range(1, 11)]
        assert c.data(a)["got"] == [(0.75 * k, 0.75 * k) for k in range(1, 15)]
        c.move(a, 1)  # a moves with its timer (as seconds left: exact in lock-step)
        c.run_until(20.5)
        assert c.data(b)["got"][-1] == (20.0, 20.0)
        assert [t for t, _ in c.data(b)["got"]] == [float(t) for t in range(1, 21)]
        assert c.on_each_shard(lambda rt: sorted(rt.agent_ids())) == [[], sorted([a, b])]
        for bad in (float("nan"), float("inf"), "10"):
            with pytest.raises(engine.InvalidArgumentError):
                c.run_until(bad)  # type: ignore[arg-type]
        for bad in (float("nan"), float("inf"), 0, -1):
            with pytest.raises(engine.InvalidArgumentError):
                c.wait_until_idle(timeout=bad)
        assert c.now() == 20.5  # nothing moved
    finally:
        c.close()
    real = Cluster(cluster_machines.setup, shards=1)
    try:
        with pytest.raises(engine.InvalidArgumentError):
            real.run_until(1.0)
    finally:
        real.close()


def test_hostile_sends_between_shards_are_dead_letters(cluster: Cluster) -> None:
    """A handler sending an unhashable id or a payload that cannot cross processes costs
    only that message (a dead letter); the shards go on."""
    (a,) = ids_on(cluster, 0, 1, "h")
    (b,) = ids_on(cluster, 1, 1, "h")
    cluster.spawn("relay", a)
    cluster.spawn("relay", b)
    cluster.send(a, "raw", (["unhashable"], 1))
    cluster.send(a, "raw", (b, "a generator"))  # made there: a payload no pickle takes
    with pytest.raises(engine.InvalidArgumentError):  # nor from the driver
        cluster.send(b, "hi", (x for x in range(3)))
    cluster.send(a, "raw", (b, "fine"))
    cluster.wait_until_idle()
    assert cluster.data(b) == ["fine"]
    letters = cluster.dead_letters()
    assert len(letters) == 2
    assert all(d.reason == engine.DeadLetterReason.UNDELIVERABLE for d in letters)
    cluster.send(b, "raw", (a, "back"))  # both shards still serve
    cluster.wait_until_idle()
    assert cluster.data(a) == ["back"]
    # a batch the receiver cannot read is reported there; its number is not lost
    cluster.send(a, "raw", (b, "unreadable"))
    cluster.wait_until_idle()
    assert cluster.routing()[1][3] == 1  # one failure kept on b's shard
    cluster.send(a, "raw", (b, "after"))
    cluster.wait_until_idle()
    assert cluster.data(b) == ["fine", "after"]
    # an agent holding what cannot be pickled cannot move; nothing changes
    cluster.send(a, "raw", (None, "keep a generator"))
    cluster.wait_until_idle()
    with pytest.raises(engine.InvalidArgumentError):
        cluster.move(a, 1)
    assert cluster.shard_of(a) == 0
    assert cluster.routing()[0][:3] == (0, 0, 0)
    assert cluster.routing()[1][:3] == (0, 0, 0)
    cluster.send(b, "raw", (a, "still here"))
    cluster.wait_until_idle()
    assert cluster.statistics(a).processed == 8  # every message it was sent, nothing lost


def test_moves_over_three_shards_and_a_removal(ray_local: Any, impl: str) -> None:
    """An agent moved twice, then sent home by a shard's removal: mail from every shard and
    the driver reaches it in order, and no shard keeps forwarding it."""
    c = Cluster(cluster_machines.setup, shards=3, runtime_options={"implementation": impl})
    try:
        (x,) = ids_on(c, 0, 1, "x")
        senders = [ids_on(c, s, 1, f"s{s}-")[0] for s in (0, 1, 2)]
        for agent_id in [x, *senders]:
            c.spawn("relay", agent_id)

        def burst(first: int) -> None:
            c.send_many(senders, ["fan"] * 3, payloads=[([x], first, 10)] * 3)

        burst(0)
        c.move(x, 2)
        burst(10)
        c.move(x, 1)
        burst(20)
        c.remove_shard(1)
        assert c.shard_of(x) == 0
        burst(30)
        c.wait_until_idle()
        got = c.data(x)
        for s in senders:
            assert [n for who, n in got if who == s] == list(range(40))
        assert c.routing() == [(0, 0, 0, 0), (0, 0, 0, 0)]  # nothing forwarded or held
        assert c.dead_letters() == []
    finally:
        c.close()


def test_a_request_waiting_in_a_moving_agents_mail_is_answered_once(cluster: Cluster) -> None:
    """A request queued behind a paused agent when it moves is not lost or run twice: the
    old home fails it with AgentMovedError and the driver asks the new home."""
    (a,) = ids_on(cluster, 0, 1, "q")
    cluster.spawn("relay", a)
    cluster.on_each_shard(cluster_machines.pause_if_here, a)
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(cluster.request(a, "log")))
    thread.start()
    time.sleep(0.5)  # the request waits in the paused agent's mailbox
    cluster.send(a, "hi", ("driver", 1))
    cluster.move(a, 1)
    cluster.on_each_shard(cluster_machines.resume_if_here, a)
    thread.join(30)
    assert not thread.is_alive()
    assert len(answers) == 1
    cluster.wait_until_idle()
    assert cluster.data(a) == [("driver", 1)]
    assert cluster.statistics(a).processed == 2  # the message and one request


def test_engine_errors_cross_processes() -> None:
    for exc in (
        engine.AgentNotFoundError("x"),
        engine.MailboxFullError("x", 3),
        engine.AgentStoppedError("x", "is stopped"),
        engine.InvalidArgumentError("bad"),
        ShardFailedError(2, "died"),
        engine.HandlerError("a", "s", "e", ValueError("v")),
    ):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc)
        assert str(back) == str(exc)
        assert back.__dict__ == exc.__dict__


def test_bad_arguments(ray_local: Any) -> None:
    with pytest.raises(engine.InvalidArgumentError):
        Cluster(cluster_machines.setup, shards=0)
    with pytest.raises(engine.InvalidArgumentError):
        Cluster("not callable", shards=2)  # type: ignore[arg-type]


def test_a_connection_without_the_clusters_key_costs_only_itself(cluster: Cluster) -> None:
    """Shards send each other batches over TCP (the data plane): a connection that does not
    open with the cluster's key is closed and reported, before any of it is unpickled."""
    import socket

    host, port = cluster._wait(cluster.handle(0).where.remote())
    bomb = pickle.dumps(("m",) * 10)  # never read: the key comes first
    for hostile in (b"k" * 36 + bomb, b"\xff" * 4096, b"\0" * 35):
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(hostile)
            if len(hostile) < 36:
                s.shutdown(socket.SHUT_WR)  # a hello cut short
            with contextlib.suppress(ConnectionResetError):  # (bytes left unread: a reset)
                assert s.recv(1) == b""  # the shard hung up
    # connections that never say who they are: a bounded number stays open, then new ones
    # are closed at once
    silent = [socket.create_connection((host, port), timeout=10) for _ in range(64)]
    try:
        time.sleep(1.0)  # all taken in by the shard
        with socket.create_connection((host, port), timeout=10) as s:
            assert s.recv(1) == b""
    finally:
        for s in silent:
            s.close()
    ring = [f"n{i}" for i in range(6)]
    for agent_id in ring:
        cluster.spawn("relay", agent_id)
    cluster.send("n0", "hop", (ring, 59))  # traffic between the shards goes on
    cluster.wait_until_idle()
    assert [cluster.request(a, "log") for a in ring] == [10] * 6
    # the two with a wrong key and the one over the bound (the short one just ended)
    assert cluster.routing()[0][3] == 3
