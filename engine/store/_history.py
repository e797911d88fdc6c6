"""Snapshot history of one agent: take one, list them, roll an agent back, fork a copy.

Theory of operation: an agent's records in a store are its history (explicit snapshots, and
the records the commit log and hibernation write), each with an id and a time. ``rollback``
reads one, checks all of it against the agent's machine before anything changes, then puts the
agent back in place (same id): state, data, counters, flags, supervision and timers come from
the snapshot; the mail is the agent's own, now: kept in its queue (requests included) or
dead-lettered as ``ROLLED_BACK``. The snapshot's queued mail is not queued again, because the
messages processed since it cannot be told apart from the ones still waiting. ``fork`` starts
a new agent from a snapshot, mail included: an exact copy that then diverges.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, final

import attrs

from ..core._exceptions import AgentStoppedError, InvalidArgumentError, brief
from ..core._machine import Machine
from ..core._types import DeadLetter, DeadLetterReason, Priority
from ._codec import Codec
from ._snapshot import AgentSnapshot, decode, encode_slots, prepare, restore
from ._stores import Store, agent_key

if TYPE_CHECKING:
    from ..hotpath._python import AgentRef
    from ..runtime._runtime import Runtime


@final
@attrs.frozen
class SnapshotInfo:
    """One record in an agent's history."""

    id: int
    """What ``rollback(to=)`` and ``fork(at=)`` take."""
    taken_at: float
    """Wall-clock time it was taken."""


class SnapshotNotFoundError(InvalidArgumentError):
    """Raised when a snapshot id names no record of that agent in the store."""


def snapshot(
    rt: Runtime, store: Store, agent_id: Any, codec: Codec | None = None, keep: int | None = None
) -> int:
    """Write a snapshot of one agent to ``store`` and return its id; with ``keep``, drop all
    but the agent's newest ``keep`` records (a retention policy)."""
    if keep is not None and (type(keep) is not int or keep < 1):
        raise InvalidArgumentError(f"keep must be an int of at least 1, got {brief(keep)}")
    records = encode_slots(rt, rt.slots([agent_id]), codec)
    (record_id,) = store.write(records)
    if keep is not None:
        store.forget(records[0][0], keep)
    return record_id


def snapshots(store: Store, agent_id: Any, codec: Codec | None = None) -> list[SnapshotInfo]:
    """The agent's records in ``store``, oldest first (tombstones left out)."""
    return [
        SnapshotInfo(r.id, r.taken_at)
        for r in store.history(agent_key(agent_id, codec))
        if r.record
    ]


def _read(store: Store, agent_id: Any, record_id: int, codec: Codec | None) -> AgentSnapshot:
    if type(record_id) is not int:
        raise SnapshotNotFoundError(f"a snapshot id is an int, got {brief(record_id)}")
    try:
        stored = store.read(record_id)
    except KeyError:
        raise SnapshotNotFoundError(f"no snapshot {brief(record_id)} in the store") from None
    if stored.agent != agent_key(agent_id, codec) or not stored.record:
        raise SnapshotNotFoundError(f"snapshot {record_id} is not one of agent {brief(agent_id)}'s")
    return decode(stored.record, codec, agent_id)


def _machines(rt: Runtime, agent_id: Any, given: Iterable[Machine] | None) -> dict[str, Machine]:
    if given is not None:
        return {m.name: m for m in given}
    machine = rt.machine(agent_id)
    return {machine.name: machine}


def rollback(
    rt: Runtime,
    store: Store,
    agent_id: Any,
    to: int,
    *,
    mail: Literal["keep", "dead_letter"] = "keep",
    machines: Iterable[Machine] | None = None,
    codec: Codec | None = None,
) -> None:
    """Put ``agent_id`` back as snapshot ``to`` had it, in place (see the module docstring):
    same id, same tenant.

    Raises:
        SnapshotNotFoundError: ``to`` is not a record of this agent.
        CorruptRecordError: The record is damaged.
        MachineNotFoundError, UnknownStateError, UnknownEventError: The snapshot's machine is
            not the agent's (or one of ``machines``), or lacks a state or event it needs.
        InvalidArgumentError: ``mail`` is neither "keep" nor "dead_letter".
    Nothing changes when it raises.
    """
    if mail not in ("keep", "dead_letter"):
        raise InvalidArgumentError(f"mail must be 'keep' or 'dead_letter', got {brief(mail)}")
    d = rt._d
    ref = d.ref(agent_id)  # AgentNotFoundError (and wakes a hibernated one)
    agent_id = d.agent_at(ref.slot)
    snap = _read(store, agent_id, to, codec)
    # in place: in the tenant it is in now (the same, unless the record predates tenants)
    tenant = rt.tenant_of(agent_id)
    snap = attrs.evolve(snap, mail=(), postponed=(), front=0, ready=-1, tenant=tenant)
    saved = prepare(snap, _machines(rt, agent_id, machines), time.time(), rt._clock(), rt._upgrades)
    machine = d.machine(agent_id)
    taken = d.take_mail(agent_id)
    rt._forget(ref)
    d.terminate(agent_id)  # (no mail left: nothing is dead-lettered)
    new = rt._import(saved, wake=False)
    rt._finish_import([(new, saved)])
    if mail == "keep":  # (its tenant's limits admitted this mail once already)
        d.requeue(agent_id, taken)
        return
    error = AgentStoppedError(agent_id, "was rolled back")
    for ev, payload, lane, request in taken:
        d.dead_letters.append(
            DeadLetter(agent_id, machine.events[ev], payload, Priority(lane),
                       DeadLetterReason.ROLLED_BACK)
        )  # fmt: skip
        d.dead_letter_count += 1
        if request:
            rt._on_request(request, False, error)


def fork(
    rt: Runtime,
    store: Store | None,
    agent_id: Any,
    new_id: Any,
    at: int | None = None,
    *,
    machines: Iterable[Machine] | Mapping[str, Machine] | None = None,
    codec: Codec | None = None,
) -> AgentRef:
    """Start ``new_id`` as an exact copy of ``agent_id`` (state, data, mail, timers,
    counters) as it is now (``Runtime.fork``), or as snapshot ``at`` of ``store`` had it; the
    two then diverge. The copy is in the original's tenant (the snapshot's, with ``at``).

    Raises:
        AgentExistsError: ``new_id`` is taken.
        SnapshotNotFoundError, CorruptRecordError, MachineNotFoundError: as ``rollback``.
        TenantNotFoundError: The snapshot's tenant is not one of ``rt``'s.
    """
    if at is None:
        return rt.fork(agent_id, new_id)
    if store is None:
        raise InvalidArgumentError("fork(at=...) needs the store the snapshot is in")
    snap = _read(store, agent_id, at, codec)
    by_name = dict(machines) if isinstance(machines, Mapping) else _machines(rt, agent_id, machines)
    (ref,) = restore(rt, [attrs.evolve(snap, agent_id=new_id, ready=-1)], by_name)
    return ref
