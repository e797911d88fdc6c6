"""``save`` and ``load``: snapshots of a runtime's agents into a store and back."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, final

import attrs

from ..core._exceptions import EngineError
from ..core._machine import Machine
from ._codec import Codec
from ._snapshot import MachineNotFoundError, decode_saved, encode_slots, peek_hibernated
from ._stores import TOMBSTONE, Store, StoredRecord, agent_key, is_reserved

if TYPE_CHECKING:
    from ..runtime._runtime import Runtime


@final
@attrs.frozen
class LoadReport:
    """What ``load`` did."""

    restored: list[Any]
    """Ids of the agents restored."""
    failed: list[tuple[str, EngineError]]
    """``(agent key, error)`` of each record that could not be restored: a damaged record
    (``CorruptRecordError``), an unknown machine (``MachineNotFoundError``), a tenant the
    runtime does not have (``TenantNotFoundError``: add it and load again), an id taken."""
    hibernated: list[Any] = attrs.field(factory=list)
    """Ids of the agents kept asleep: their records were written by ``hibernate`` and the
    runtime has a store to wake them from (a ``Hibernation``)."""


def records(
    rt: Runtime, agent_ids: Iterable[Any] | None = None, codec: Codec | None = None
) -> list[tuple[str, float, bytes]]:
    """``(agent key, taken_at, record)`` of ``agent_ids`` (default: all), captured at one
    instant and all encoded: what ``Store.write`` takes. Call it where the runtime runs (under
    trio, on the trio thread), then write in a worker thread if the store is slow.

    Raises:
        CodecError: A value cannot be encoded (nothing is returned, so nothing is written).
    """
    slots = rt.slots(rt.agent_ids() if agent_ids is None else agent_ids)
    return encode_slots(rt, slots, codec)


def save(
    rt: Runtime,
    store: Store,
    agent_ids: Iterable[Any] | None = None,
    codec: Codec | None = None,
) -> list[int]:
    """Snapshot ``agent_ids`` (default: all) at one instant and write them in one store
    transaction; return the record ids. Every snapshot is encoded before anything is written,
    so a value that cannot be encoded (``CodecError``) leaves the store as it was."""
    return store.write(records(rt, agent_ids, codec))


def load(
    rt: Runtime,
    store: Store,
    machines: Mapping[str, Machine] | Iterable[Machine],
    agent_ids: Iterable[Any] | None = None,
    codec: Codec | None = None,
) -> LoadReport:
    """Restore the newest snapshot of ``agent_ids`` (default: every agent in the store) into
    ``rt``. A record that cannot be restored is reported in the result and the others are
    restored all the same.

    Each agent goes back into the tenant it was in (records of formats 1 and 2: the default
    tenant), so add the tenants first; a record naming a tenant ``rt`` does not have fails
    with ``TenantNotFoundError``, and is never put in another tenant. Agents coming back are
    never refused by their tenant's ``max_agents`` or ``max_memory`` (their mail must not be
    lost), so a load can leave a tenant above those limits."""
    keys = None if agent_ids is None else [agent_key(a, codec) for a in agent_ids]
    return load_records(rt, store.latest(keys), machines, codec)


def load_records(
    rt: Runtime,
    stored: Iterable[StoredRecord],
    machines: Mapping[str, Machine] | Iterable[Machine],
    codec: Codec | None = None,
) -> LoadReport:
    """``load``'s second half: restore records already read from a store (read them in a
    worker thread, restore on the runtime's thread). Tombstones are skipped, and so are the
    engine's own records (keys under ``RESERVED``: a metrics history), which are no agents."""
    machines = dict(machines) if isinstance(machines, Mapping) else {m.name: m for m in machines}
    wall, now = time.time(), rt._clock()
    restored, failed, loaded, asleep = [], [], [], []
    sleeper = rt._sleeper
    try:
        for item in stored:
            if item.record == TOMBSTONE or is_reserved(item.agent):
                continue
            try:
                if sleeper is not None:  # a hibernated agent stays asleep
                    peeked = peek_hibernated(item.record, codec, item.agent)
                    if peeked is not None:
                        agent_id, name, tenant, counts, due = peeked
                        machine = machines.get(name)
                        if machine is None:
                            raise MachineNotFoundError(agent_id, name)
                        sleeper.adopt(agent_id, machine, counts, due, tenant)
                        asleep.append(agent_id)
                        continue
                agent_id, saved = decode_saved(
                    item.record, machines, wall, now, codec, item.agent, rt._upgrades
                )
                loaded.append((rt._import(saved, wake=False), saved))
            except EngineError as exc:
                failed.append((item.agent, exc))
            else:
                restored.append(agent_id)
    finally:  # timers and the ready queue, in their original order, for all of them at once
        rt._finish_import(loaded)
    return LoadReport(restored, failed, asleep)
