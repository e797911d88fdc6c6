"""Stored agents keep their tenant: records of format 3 name it, and every way back from the
store (load, restore, wake, commit-log recovery, rollback, fork) puts the agent into it; older
records go to the default tenant, and a record naming a tenant the runtime lacks fails loudly.
Also the tenant limits at spawn that hibernate to make room. Every test runs on both hot
paths."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from long_lived import counter

import engine
import engine.store as store
from engine import Limits, Runtime
from engine.store._codec import _HEAD, MAGIC, frame
from engine.store._snapshot import DEFAULT_CODEC, encode_exported, encode_plain

TENANT = 25
"""The tenant's place in a record's body (None: the default tenant)."""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _populated(impl: str, clock: Clock | None = None) -> Runtime:
    """Agents in three tenants, idle ones (plain records) and ones with mail or a pause
    (general records)."""
    rt = Runtime(implementation=impl, clock=clock)
    rt.add_tenant("acme")
    rt.add_tenant("zeta", weight=2)
    for name, tenant in (("d1", None), ("a1", "acme"), ("a2", "acme"), ("z1", "zeta")):
        rt.spawn(counter, name, {"seen": []}, tenant=tenant)
    rt.send_many(["d1", "a1", "z1"], ["inc"] * 3, payloads=[1, 2, 3])
    rt.run_until_idle()
    rt.send_nowait("a2", "inc", "queued 1")  # mail queued: not a plain record
    rt.send_nowait("a2", "inc", "queued 2")
    rt.pause("z1")
    rt.send_nowait("z1", "inc", "held")
    return rt


def _fresh(impl: str, *tenants: str, clock: Clock | None = None) -> Runtime:
    rt = Runtime(implementation=impl, clock=clock)
    for name in tenants:
        rt.add_tenant(name)
    return rt


def _where(rt: Runtime) -> dict[Any, str]:
    return {a: rt.tenant_of(a) for a in rt.agent_ids()}


def _counts(rt: Runtime) -> dict[str, tuple[int, int, int]]:
    return {t.name: (t.agents, t.queued, t.processed) for t in rt.tenant_statistics()}


def _body(record: bytes) -> list[Any]:
    body: list[Any] = DEFAULT_CODEC.unpack(record[_HEAD.size :])
    return body


def _framed(body: list[Any], version: int = 3) -> bytes:
    packed = DEFAULT_CODEC.pack(body)
    return _HEAD.pack(MAGIC, version, zlib.crc32(packed)) + packed


def test_save_and_load_put_every_agent_back_in_its_tenant(impl: str) -> None:
    rt = _populated(impl)
    s = store.MemoryStore()
    store.save(rt, s)
    fresh = _fresh(impl, "zeta", "acme")  # another order: other tenant indexes
    report = store.load(fresh, s, [counter])
    assert (sorted(report.restored), report.failed) == (["a1", "a2", "d1", "z1"], [])
    assert _where(fresh) == {"d1": "default", "a1": "acme", "a2": "acme", "z1": "zeta"}
    assert _counts(fresh) == _counts(rt)
    assert fresh.tenant_statistics("acme").queued == 2  # a2's mail, counted in its tenant
    assert fresh.tenant_statistics("zeta").queued == 1
    fresh.resume("z1")
    fresh.run_until_idle()
    assert fresh.data("a2") == {"seen": ["queued 1", "queued 2"]}
    assert {t.name: t.processed for t in fresh.tenant_statistics()} == {
        "default": 1,
        "zeta": 2,
        "acme": 3,
    }


def test_snapshots_name_their_tenant_and_restore_into_it(impl: str) -> None:
    rt = _populated(impl)
    snaps = [store.decode(store.encode(s)) for s in store.capture(rt)]
    assert {s.agent_id: s.tenant for s in snaps} == _where(rt)
    fresh = _fresh(impl, "acme", "zeta")
    store.restore(fresh, snaps, [counter])
    assert _where(fresh) == _where(rt)
    assert _counts(fresh) == _counts(rt)


def test_plain_records_are_the_general_paths_byte_for_byte_in_any_tenant(impl: str) -> None:
    rt = _populated(impl)
    for i in range(6):  # idle agents of every tenant, interleaved in the slots
        rt.spawn(counter, i, {"n": i}, tenant=(None, "acme", "zeta")[i % 3])
    columns, rest = rt._export_slots(rt.slots(rt.agent_ids()))
    ids, tenants = columns[0], columns[-1]
    assert {a for a, t in zip(ids, tenants, strict=True) if t != "default"} >= {"a1", 1, 2}
    assert {s["id"] for s in rest} == {"a2", "z1"}  # mail queued, paused
    wall = 1234.5
    fast = encode_plain(columns, wall)
    general = [encode_exported(s, wall) for s in rt._export(ids)]
    assert [r for _, _, r in fast] == general
    by_id = {_body(r)[0]: _body(r)[TENANT] for _, _, r in store.records(rt)}
    assert by_id == {a: None if t == "default" else t for a, t in _where(rt).items()}


def test_hibernated_agents_wake_into_their_tenant(impl: str) -> None:
    rt = _populated(impl)
    s = store.MemoryStore()
    hib = store.Hibernation(rt, s)
    for agent in ("a1", "d1"):
        rt.hibernate(agent)
    assert rt.tenant_statistics("acme").agents == 1
    rt.send_nowait("a1", "inc", "wake up")  # wakes it
    assert rt.tenant_of("a1") == "acme"
    assert rt.tenant_statistics("acme").queued == 3  # its message and a2's two
    rt.run_until_idle()
    assert rt.data("a1") == {"seen": [2, "wake up"]}
    assert rt.wake("d1")
    assert rt.tenant_of("d1") == "default"
    assert hib.woken == 2


def test_a_load_keeps_hibernated_agents_asleep_until_they_wake_into_their_tenant(
    impl: str,
) -> None:
    rt = _populated(impl)
    s = store.MemoryStore()
    store.Hibernation(rt, s)
    rt.hibernate("a1")
    store.save(rt, s)
    fresh = _fresh(impl, "acme", "zeta")
    store.Hibernation(fresh, s)
    report = store.load(fresh, s, [counter])
    assert (report.hibernated, report.failed) == (["a1"], [])
    assert fresh.hibernated_ids() == ["a1"]
    assert fresh.data("a1") == {"seen": [2]}  # a read wakes it
    assert fresh.tenant_of("a1") == "acme"
    assert fresh.tenant_statistics("acme").agents == 2


def test_a_hibernated_agent_whose_tenant_is_gone_raises_and_stays_asleep(impl: str) -> None:
    rt = _populated(impl)
    s = store.MemoryStore()
    store.Hibernation(rt, s)
    rt.hibernate("a1")
    (stored,) = s.latest([store.agent_key("a1")])
    body = _body(stored.record)
    assert body[TENANT] == "acme"
    body[TENANT] = "gone"
    s.write([(stored.agent, stored.taken_at, frame(DEFAULT_CODEC.pack(body)))])
    with pytest.raises(engine.TenantNotFoundError, match="gone"):
        rt.wake("a1")
    with pytest.raises(engine.TenantNotFoundError, match="gone"):
        rt.send_nowait("a1", "inc", "lost?")
    assert rt.hibernated_ids() == ["a1"]
    assert rt.status("a1") is engine.AgentStatus.HIBERNATED
    rt.add_tenant("gone")
    assert rt.wake("a1")
    assert rt.tenant_of("a1") == "gone"
    assert rt.data("a1") == {"seen": [2]}


def test_commit_log_recovery_puts_agents_back_in_their_tenants(impl: str) -> None:
    rt = _populated(impl)
    s = store.SQLiteStore(":memory:")
    log = store.CommitLog(rt, s)
    store.Hibernation(rt, s, log=log)
    log.commit()
    rt.send_nowait("a1", "inc", "after")
    rt.run_until_idle()
    rt.hibernate("a1")  # its record joins the next round
    rt.spawn(counter, "late", {"seen": []}, tenant="zeta")
    log.commit()
    fresh = _fresh(impl, "acme", "zeta")
    store.Hibernation(fresh, s)
    report = store.load(fresh, s, [counter])
    assert (report.hibernated, report.failed) == (["a1"], [])
    assert fresh.wake("a1")
    assert _where(fresh) == _where(rt) | {"a1": "acme"}
    assert fresh.data("a1") == {"seen": [2, "after"]}
    assert _counts(fresh) == {"default": (1, 0, 1), "acme": (2, 0, 4), "zeta": (2, 1, 1)}
    s.close()


def test_rollback_and_fork_keep_the_tenant(impl: str) -> None:
    rt = _populated(impl)
    store.Hibernation(rt, store.MemoryStore())
    sid = rt.snapshot("a1")
    rt.send_nowait("a1", "inc", "later")
    rt.run_until_idle()
    rt.rollback("a1", to=sid)
    assert (rt.tenant_of("a1"), rt.data("a1")) == ("acme", {"seen": [2]})
    assert rt.tenant_statistics("acme").agents == 2
    assert rt.tenant_of(rt.fork("a1", "copy now").id) == "acme"
    assert rt.tenant_of(rt.fork("z1", "copy of z1").id) == "zeta"
    assert rt.tenant_of(rt.fork("a1", "copy then", at=sid).id) == "acme"
    assert rt.data("copy then") == {"seen": [2]}
    assert rt.tenant_statistics("acme").agents == 4


def test_rollback_to_a_record_older_than_tenants_stays_in_the_agents_tenant(impl: str) -> None:
    """In place means in its tenant: a format-2 record says nothing of one."""
    rt = _populated(impl)
    s = store.MemoryStore()
    store.Hibernation(rt, s)
    ((_, _, record),) = store.records(rt, ["a1"])
    (old_id,) = s.write([(store.agent_key("a1"), 1.0, _framed(_body(record)[:TENANT], 2))])
    rt.rollback("a1", to=old_id)
    assert rt.tenant_of("a1") == "acme"
    assert rt.tenant_of(rt.fork("a1", "old copy", at=old_id).id) == "default"


@pytest.mark.parametrize(("version", "cut"), [(2, TENANT), (1, TENANT - 2)])
def test_records_of_older_formats_load_into_the_default_tenant(
    impl: str, version: int, cut: int
) -> None:
    rt = _populated(impl)
    s = store.MemoryStore()
    for key, at, record in store.records(rt):
        body = _body(record)
        assert len(body) == TENANT + 1
        s.write([(key, at, _framed(body[:cut], version))])
    snaps = [store.decode(r.record) for r in s.latest()]
    assert {snap.tenant for snap in snaps} == {"default"}
    fresh = _fresh(impl, "acme", "zeta")
    report = store.load(fresh, s, [counter])
    assert (len(report.restored), report.failed) == (4, [])
    assert set(_where(fresh).values()) == {"default"}
    assert fresh.tenant_statistics("default").queued == 3
    assert fresh.tenant_statistics("acme").agents == 0


def test_a_record_whose_tenant_is_missing_is_reported_failed_by_load(impl: str) -> None:
    rt = _populated(impl)
    s = store.MemoryStore()
    store.save(rt, s)
    rt.add_tenant("sleepy")
    rt.spawn(counter, "s1", {"seen": []}, tenant="sleepy")
    store.Hibernation(rt, s)
    rt.hibernate("s1")
    fresh = _fresh(impl, "zeta")  # no acme, no sleepy
    store.Hibernation(fresh, s)
    report = store.load(fresh, s, [counter])
    assert (sorted(report.restored), report.hibernated) == (["d1", "z1"], [])
    missing = {}
    for key, error in report.failed:
        assert isinstance(error, engine.TenantNotFoundError)
        missing[key] = error.tenant
    assert missing == {  # a plain record, one with mail, a hibernated one
        store.agent_key("a1"): "acme",
        store.agent_key("a2"): "acme",
        store.agent_key("s1"): "sleepy",
    }
    for agent in ("a1", "a2", "s1"):  # not moved to the default tenant either
        assert agent not in fresh
    assert fresh.tenant_statistics("default").agents == 1
    with pytest.raises(engine.TenantNotFoundError):
        store.restore(fresh, store.capture(rt, ["a1"]), [counter])
    fresh.add_tenant("acme")  # add it and load again: they come back
    assert sorted(store.load(fresh, s, [counter], ["a1", "a2"]).restored) == ["a1", "a2"]
    assert fresh.tenant_statistics("acme").queued == 2


def test_a_tenants_processed_count_is_the_same_asleep_and_after_wake(impl: str) -> None:
    rt = _populated(impl)
    store.Hibernation(rt, store.MemoryStore())
    before = rt.tenant_statistics("acme").processed
    assert before > 0
    rt.hibernate("a1")
    assert rt.tenant_statistics("acme").processed == before
    rt.wake("a1")
    assert rt.tenant_statistics("acme").processed == before
    assert rt.statistics().processed == sum(t.processed for t in rt.tenant_statistics())


def test_removing_a_tenant_counts_and_terminates_its_hibernated_agents(impl: str) -> None:
    rt = _populated(impl)
    store.Hibernation(rt, store.MemoryStore())
    rt.run_until_idle()
    mine = [a for a in rt.agent_ids() if rt.tenant_of(a) == "acme"]
    for agent_id in mine:
        rt.hibernate(agent_id)
    with pytest.raises(engine.TenantBusyError):
        rt.remove_tenant("acme")  # asleep, but still its agents
    rt.remove_tenant("acme", terminate=True)
    assert not any(a in rt for a in mine)
    assert rt.hibernated_ids() == []


# -- limits at spawn that make room by hibernation -----------------------------------------


def _limited(impl: str, with_store: bool, **tenant: Any) -> tuple[Runtime, Clock]:
    """Tenant "acme" limited as ``tenant`` says, its agents a1 (used last) and a2 (least
    recently used), and in other tenants older idle agents that must be left alone."""
    clock = Clock()
    rt = Runtime(implementation=impl, clock=clock)
    if with_store:
        store.Hibernation(rt, store.MemoryStore())
    rt.add_tenant("acme", **tenant)
    rt.add_tenant("zeta")
    rt.spawn(counter, "z", {"seen": [], "size": 1000}, tenant="zeta")
    rt.spawn(counter, "d", {"seen": [], "size": 1000})
    for agent in ("a1", "a2"):
        clock.now += 1
        rt.spawn(counter, agent, {"seen": [], "size": 1000}, tenant="acme")
    clock.now += 1
    rt.send_nowait("a1", "inc", "used")
    rt.run_until_idle()
    clock.now += 1
    return rt, clock


LIMITS = [
    {"limits": Limits(max_agents=2)},
    {"limits": Limits(max_memory=2 * (105 + 1000) + 100), "sizer": lambda data: data["size"]},
]


@pytest.mark.parametrize("tenant", LIMITS, ids=["max_agents", "max_memory"])
def test_a_spawn_past_the_limit_hibernates_the_tenants_least_recently_used_agent(
    impl: str, tenant: dict[str, Any]
) -> None:
    rt, clock = _limited(impl, True, **tenant)
    rt.spawn(counter, "a3", {"seen": [], "size": 1000}, tenant="acme")
    assert rt.hibernated_ids() == ["a2"]
    assert sorted(rt.agent_ids()) == ["a1", "a3", "d", "z"]
    assert rt.tenant_statistics("acme").hibernated == 1
    assert rt.tenant_statistics("acme").agents == 2
    for other in ("zeta", "default"):
        stats = rt.tenant_statistics(other)
        assert (stats.agents, stats.hibernated) == (1, 0)
    clock.now += 1
    rt.send_nowait("a2", "inc", "mail")  # wakes it: waking is never refused
    rt.run_until_idle()
    assert rt.tenant_of("a2") == "acme"
    assert rt.data("a2")["seen"] == ["mail"]
    assert rt.tenant_statistics("acme").agents == 3
    rt.spawn(counter, "a4", {"seen": [], "size": 1000}, tenant="acme")
    assert sorted(rt.hibernated_ids()) == ["a1", "a3"]  # the least recently used two now
    assert rt.tenant_statistics("acme").hibernated == 3
    assert sorted(rt.agent_ids()) == ["a2", "a4", "d", "z"]


@pytest.mark.parametrize("tenant", LIMITS, ids=["max_agents", "max_memory"])
def test_without_a_store_a_spawn_past_the_limit_is_refused_and_creates_nothing(
    impl: str, tenant: dict[str, Any]
) -> None:
    rt, _ = _limited(impl, False, **tenant)
    before = _counts(rt)
    with pytest.raises(engine.TenantLimitError):
        rt.spawn(counter, "a3", {"seen": [], "size": 1000}, tenant="acme")
    assert "a3" not in rt
    assert sorted(rt.agent_ids()) == ["a1", "a2", "d", "z"]
    assert _counts(rt) == before
    assert rt.tenant_statistics("acme").hibernated == 0
    rt.spawn(counter, "z2", {"seen": [], "size": 1000}, tenant="zeta")  # others unaffected
