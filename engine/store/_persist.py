"""``save`` and ``load``: snapshots of a runtime's agents into a store and back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, final

import attrs

from ..core._exceptions import EngineError
from ..core._machine import Machine
from ._codec import Codec
from ._snapshot import capture, decode, encode, restore
from ._stores import Store, agent_key

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
    (``CorruptRecordError``), an unknown machine (``MachineNotFoundError``), an id taken."""


def records(
    rt: Runtime, agent_ids: Iterable[Any] | None = None, codec: Codec | None = None
) -> list[tuple[str, float, bytes]]:
    """``(agent key, taken_at, record)`` of ``agent_ids`` (default: all), captured at one
    instant and all encoded: what ``Store.write`` takes. Call it where the runtime runs (under
    trio, on the trio thread), then write in a worker thread if the store is slow.

    Raises:
        CodecError: A value cannot be encoded (nothing is returned, so nothing is written).
    """
    return [
        (agent_key(s.agent_id, codec), s.taken_at, encode(s, codec)) for s in capture(rt, agent_ids)
    ]


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
    restored all the same."""
    machines = dict(machines) if isinstance(machines, Mapping) else {m.name: m for m in machines}
    keys = None if agent_ids is None else [agent_key(a, codec) for a in agent_ids]
    restored, failed = [], []
    for stored in store.latest(keys):
        try:
            snapshot = decode(stored.record, codec, agent=stored.agent)
            restore(rt, [snapshot], machines)
        except EngineError as exc:
            failed.append((stored.agent, exc))
        else:
            restored.append(snapshot.agent_id)
    return LoadReport(restored, failed)
