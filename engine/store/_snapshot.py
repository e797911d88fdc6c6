"""Snapshots of agents: what one holds, how it is encoded, and how agents are rebuilt.

Theory of operation: ``capture`` reads agents through the runtime's ``_export`` (plain data,
no encoding) and turns machine-relative things into portable ones: event codes become event
names, lanes ``Priority`` values, and timer deadlines, which are readings of the runtime's
clock, become wall-clock times (``time.time()``), so a timer survives a restart of the process
and fires at most once (an overdue one at the next ``fire_timers``). ``encode`` packs a
snapshot with a ``Codec`` into one framed, checksummed record; ``decode`` checks the frame,
unpacks and structures it (every field typed; a damaged one is a ``CorruptRecordError``
naming the agent). ``restore`` spawns each agent on the machine of that name, in the tenant of
that name, and loads it, the same way on both hot paths: a restored agent behaves exactly as
the original would have.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, final

import attrs

from ..core._exceptions import EngineError, brief
from ..core._machine import Machine
from ..core._types import OverflowPolicy, Priority
from ..runtime._supervision import Supervision
from ..runtime._tenants import DEFAULT
from ..runtime._upgrade import UpgradeError
from ._codec import Codec, CodecError, CorruptRecordError, frame, unframe
from ._stores import agent_key

if TYPE_CHECKING:
    from ..hotpath._python import AgentRef
    from ..runtime._runtime import Runtime

Message = tuple[str, Any, Priority]
"""A queued message: ``(event name, payload, priority)``."""


@final
@attrs.frozen
class TimerSnapshot:
    """An armed timer of a snapshot."""

    key: tuple[str, ...]
    """``("timer", name)``, ``("state_timeout",)``, ``("event_timeout",)`` or ``("restart",)``."""
    due: float
    """Wall-clock time (``time.time()``) when it fires."""
    guard: int
    """0: none; 1: dies at the next state change; 2: dies when the next event is taken."""
    event: str | None
    """The event it delivers (None for a restart)."""
    payload: Any
    priority: Priority
    live: bool = True
    """False for a guarded timer whose guard already failed: it stays armed (its key is taken)
    but will never fire, as in the original."""
    order: int = 0
    """Rank among the timers of one ``capture`` by arming order (ties in ``due`` fire in it)."""


@final
@attrs.frozen
class AgentSnapshot:
    """Everything an agent is: enough to rebuild it, in this process or another."""

    agent_id: Any
    machine: str
    """The machine's name (``restore`` looks the machine up by it)."""
    state: str
    data: Any
    mail: tuple[Message, ...]
    """Queued messages in processing order: the front queue, then the lanes."""
    postponed: tuple[Message, ...]
    timers: tuple[TimerSnapshot, ...]
    taken_at: float
    """Wall-clock time of the snapshot."""
    front: int = 0
    """How many of ``mail`` were in the front queue (NextEvents, replayed postponed events)."""
    paused: bool = False
    stopped: bool = False
    error: bool = False
    backoff: bool = False
    """In a supervision backoff (its ``("restart",)`` timer is among ``timers``)."""
    processed: int = 0
    failed: int = 0
    dropped: int = 0
    restarts: int = 0
    restarted_at: tuple[float, ...] = ()
    """Wall-clock times of the restarts inside supervision's window (they set the backoff)."""
    epoch: int = 0
    """State changes so far (what state timeouts are guarded by)."""
    capacity: int = 0
    policy: OverflowPolicy = OverflowPolicy.REJECT
    supervision: Supervision | None = None
    ready: int = -1
    """Its place on the ready queue when the snapshot was taken (-1: not on it): ``restore``
    puts agents back in that order, so they run in the order they would have."""
    version: int = 1
    """Its machine's version (records of format 1 have none: 1). Restored under a newer
    machine of that name, the runtime's upgrades migrate it step by step."""
    hibernated: bool = False
    """Taken when the agent went to sleep (``Runtime.hibernate``): ``load`` into a runtime
    with a store keeps it asleep."""
    tenant: str = DEFAULT
    """The name of its tenant (records of formats 1 and 2 have none: the default tenant).
    ``restore`` puts it back into the tenant of that name, which the runtime must have."""


def capture(rt: Runtime, agent_ids: Iterable[Any] | None = None) -> list[AgentSnapshot]:
    """Snapshots of ``agent_ids`` (default: every agent), all taken at one instant.

    Raises:
        AgentNotFoundError: An id names no agent (nothing is captured).
    """
    ids = rt.agent_ids() if agent_ids is None else list(agent_ids)
    exported = rt._export(ids)
    wall = time.time()
    out = []
    for saved in exported:
        machine: Machine = saved["machine"]
        events = machine.events
        out.append(
            AgentSnapshot(
                agent_id=saved["id"],
                machine=machine.name,
                state=machine.states[saved["state"]],
                data=saved["data"],
                mail=_named(events, saved["front"]) + _named(events, saved["mail"]),
                front=len(saved["front"]),
                postponed=_named(events, saved["postponed"]),
                timers=tuple(
                    TimerSnapshot(
                        tuple(key),
                        wall + remaining,
                        guard,
                        events[event] if event >= 0 else None,
                        payload,
                        Priority(lane),
                        live,
                        order,
                    )
                    for key, remaining, guard, event, payload, lane, live, order in saved["timers"]
                ),
                taken_at=wall,
                paused=saved["paused"],
                stopped=saved["stopped"],
                error=saved["error"],
                backoff=saved["backoff"],
                processed=int(saved["processed"]),
                failed=int(saved["failed"]),
                dropped=int(saved["dropped"]),
                restarts=saved["restarts"],
                restarted_at=tuple(wall - age for age in saved["restart_ages"]),
                epoch=int(saved["epoch"]),
                capacity=int(saved["capacity"]),
                policy=OverflowPolicy(saved["policy"]),
                supervision=saved["supervision"],
                ready=saved["ready"],
                version=machine.version,
                tenant=saved["tenant"],
            )
        )
    return out


def _named(events: tuple[str, ...], items: Sequence[tuple[int, Any, int]]) -> tuple[Message, ...]:
    """Messages as a snapshot keeps them: event names and priorities."""
    return tuple((events[e], p, Priority(lane)) for e, p, lane in items)


class MachineNotFoundError(EngineError, KeyError):
    """Raised by ``restore`` when a snapshot names a machine it was not given."""

    def __init__(self, agent_id: Any, machine: str) -> None:
        super().__init__(agent_id, machine)
        self.agent_id = agent_id
        self.machine = machine

    def __str__(self) -> str:
        return f"agent {brief(self.agent_id)}: no machine named {self.machine!r} was given"


def restore(
    rt: Runtime,
    snapshots: Iterable[AgentSnapshot],
    machines: Mapping[str, Machine] | Iterable[Machine],
) -> list[AgentRef]:
    """Spawn an agent from each snapshot, on the machine of its name, exactly as it was:
    state, data, mail in order, postponed events, flags, counters, supervision, and timers
    re-armed for their wall-clock time (overdue ones fire at the next ``fire_timers``).

    Each agent goes back into its tenant (add the tenants before restoring); the tenant's
    ``max_agents`` and ``max_memory`` are not applied to agents coming back.

    Raises:
        MachineNotFoundError: A snapshot names a machine not in ``machines``.
        AgentExistsError: An agent with that id is already in ``rt``.
        TenantNotFoundError: ``rt`` has no tenant of the snapshot's tenant name.
        UnknownStateError, UnknownEventError: The machine of that name does not have a state
            or event the snapshot needs (a different machine under the same name).
    """
    by_name = dict(machines) if isinstance(machines, Mapping) else {m.name: m for m in machines}
    wall, now = time.time(), rt._clock()
    refs = []
    loaded = []
    for snap in snapshots:
        saved = prepare(snap, by_name, wall, now, rt._upgrades)
        ref = rt._import(saved, wake=False)
        refs.append(ref)
        loaded.append((ref, saved))
    rt._finish_import(loaded)
    return refs


def prepare(
    snap: AgentSnapshot,
    by_name: Mapping[str, Machine],
    wall: float,
    now: float,
    chain: Sequence[Step] = (),
) -> dict[str, Any]:
    """What ``Runtime._import`` takes, for a snapshot restored at wall-clock time ``wall``
    and runtime clock reading ``now`` (``restore``'s first half, one agent at a time); a
    snapshot of an older version of its machine is migrated through ``chain`` (the runtime's
    upgrades, oldest first).

    Raises:
        MachineNotFoundError, UnknownStateError, UnknownEventError: as ``restore``.
        UpgradeError: No chain of upgrades leads from the snapshot's version to the machine's,
            a migration raised, or queued mail names an event the new machine lacks.
    """
    snap, machine = _migrated(snap, by_name, chain)
    code = machine.event_code
    mail = _raw(machine, snap.mail) if snap.mail else []
    return {
        "id": snap.agent_id,
        "machine": machine,
        "data": snap.data,
        "state": machine.state_code(snap.state),
        "epoch": snap.epoch,
        "since": now,
        "processed": snap.processed,
        "failed": snap.failed,
        "dropped": snap.dropped,
        "capacity": snap.capacity,
        "policy": snap.policy,
        "paused": snap.paused,
        "stopped": snap.stopped,
        "error": snap.error,
        "backoff": snap.backoff,
        "front": mail[: snap.front],
        "mail": mail[snap.front :],
        "postponed": _raw(machine, snap.postponed) if snap.postponed else [],
        "supervision": snap.supervision,
        "restarts": snap.restarts,
        "restart_ages": [wall - t for t in snap.restarted_at],
        "ready": snap.ready,
        "tenant": snap.tenant,
        "timers": [
            (
                t.key,
                t.due - wall,
                t.guard,
                -1 if t.event is None else code(t.event),
                t.payload,
                int(t.priority),
                t.live,
                t.order,
            )
            for t in snap.timers
        ],
    }


Step = tuple[Machine, Machine, Mapping[str, str], Any]
"""One upgrade: ``(old, new, state mapping, migrate or None)``."""


def _migrated(
    snap: AgentSnapshot, by_name: Mapping[str, Machine], chain: Sequence[Step]
) -> tuple[AgentSnapshot, Machine]:
    """The snapshot moved along ``chain`` until its version is its machine's (from each
    version, the newest upgrade out of it: the path the runtime itself took)."""
    for _ in range(len(chain) + 1):
        machine = by_name.get(snap.machine)
        if machine is not None and machine.version == snap.version:
            return snap, machine
        step = next(
            (s for s in reversed(chain) if s[0].name == snap.machine
             and s[0].version == snap.version),
            None,
        )  # fmt: skip
        if step is None:
            if machine is None:
                raise MachineNotFoundError(snap.agent_id, snap.machine)
            raise UpgradeError(
                f"agent {brief(snap.agent_id)}: no upgrade leads from {snap.machine!r} "
                f"v{snap.version} to v{machine.version} (declare it with rt.upgrade)"
            )
        _, new, mapping, migrate = step
        data = snap.data
        if migrate is not None:
            try:
                data = migrate(snap.state, data)
            except Exception as exc:
                raise UpgradeError(
                    f"migrate failed for agent {brief(snap.agent_id)} in state "
                    f"{snap.state!r}: {type(exc).__name__}: {exc}"
                ) from exc
        lost = [name for name, _, _ in (*snap.mail, *snap.postponed) if name not in new.events]
        if lost:
            raise UpgradeError(
                f"agent {brief(snap.agent_id)}: queued events {sorted(set(lost))} are not "
                f"events of {new.name!r} v{new.version}"
            )
        timers = tuple(t for t in snap.timers if t.event is None or t.event in new.events)
        snap = attrs.evolve(
            snap, machine=new.name, version=new.version, state=mapping[snap.state], data=data,
            timers=timers,
        )  # fmt: skip
    raise UpgradeError(
        f"agent {brief(snap.agent_id)}: the upgrades go round in circles from {snap.machine!r} "
        f"v{snap.version}"
    )


def _raw(machine: Machine, items: Sequence[Message]) -> list[tuple[int, Any, int]]:
    """Messages as the dispatcher holds them: event codes and lanes."""
    return [(machine.event_code(name), payload, int(priority)) for name, payload, priority in items]


# -- encoding ----------------------------------------------------------------------------------

# A record's body is the snapshot's fields in ``_FIELDS`` order. Format 1 had 23 of them (up to
# ``ready``), format 2 added ``version`` and ``hibernated``, format 3 ``tenant``, written as
# None for the default tenant (one byte, not eight, in the records of most agents) and as its
# name for any other. ``_fields`` completes older bodies.
_FIELDS = tuple(a.name for a in attrs.fields(AgentSnapshot))
_FORMAT_1: Final = len(_FIELDS) - 3
_FORMAT_2: Final = len(_FIELDS) - 1


def encode(snapshot: AgentSnapshot, codec: Codec | None = None) -> bytes:
    """One framed, checksummed record (``CodecError`` naming the agent and the path of a
    value that cannot be encoded)."""
    codec = codec or DEFAULT_CODEC
    s = snapshot
    body = [
        s.agent_id,
        s.machine,
        s.state,
        s.data,
        [[name, payload, int(priority)] for name, payload, priority in s.mail],
        [[name, payload, int(priority)] for name, payload, priority in s.postponed],
        [
            [list(t.key), t.due, t.guard, t.event, t.payload, int(t.priority), t.live, t.order]
            for t in s.timers
        ],
        s.taken_at,
        s.front,
        s.paused,
        s.stopped,
        s.error,
        s.backoff,
        s.processed,
        s.failed,
        s.dropped,
        s.restarts,
        list(s.restarted_at),
        s.epoch,
        s.capacity,
        s.policy.value,
        None if s.supervision is None else attrs.astuple(s.supervision),
        s.ready,
        s.version,
        s.hibernated,
        None if s.tenant == DEFAULT else s.tenant,
    ]
    return frame(codec.pack(body, agent=s.agent_id))


_POLICY_VALUES: dict[OverflowPolicy, int] = {p: p.value for p in OverflowPolicy}
_POLICIES: dict[int, OverflowPolicy] = {p.value: p for p in OverflowPolicy}


def encode_exported(
    saved: dict[str, Any], wall: float, codec: Codec | None = None, hibernated: bool = False
) -> bytes:
    """What ``encode(capture(...))`` makes, straight from one item of ``Runtime._export``
    taken at wall-clock time ``wall``, with no snapshot object in between (the commit log's
    and ``records``' path: several times faster per agent)."""
    machine: Machine = saved["machine"]
    events = machine.events
    front = saved["front"]
    sup = saved["supervision"]
    body = [
        saved["id"],
        machine.name,
        machine.states[saved["state"]],
        saved["data"],
        [[events[e], p, lane] for e, p, lane in front]
        + [[events[e], p, lane] for e, p, lane in saved["mail"]]
        if front or saved["mail"]
        else [],
        [[events[e], p, lane] for e, p, lane in saved["postponed"]] if saved["postponed"] else [],
        [
            [
                list(key),
                wall + remaining,
                guard,
                events[ev] if ev >= 0 else None,
                p,
                lane,
                live,
                order,
            ]
            for key, remaining, guard, ev, p, lane, live, order in saved["timers"]
        ]
        if saved["timers"]
        else [],
        wall,
        len(front),
        saved["paused"],
        saved["stopped"],
        saved["error"],
        saved["backoff"],
        int(saved["processed"]),
        int(saved["failed"]),
        int(saved["dropped"]),
        saved["restarts"],
        [wall - age for age in saved["restart_ages"]],
        int(saved["epoch"]),
        int(saved["capacity"]),
        _POLICY_VALUES[saved["policy"]],
        None if sup is None else attrs.astuple(sup),
        saved["ready"],
        machine.version,
        hibernated,
        None if saved["tenant"] == DEFAULT else saved["tenant"],
    ]
    return frame((codec or DEFAULT_CODEC).pack(body, agent=saved["id"]))


def encode_plain(
    columns: tuple[list[Any], ...],
    wall: float,
    codec: Codec | None = None,
    hibernated: bool = False,
) -> list[tuple[str, float, bytes]]:
    """``(agent key, wall, record)`` of the plain agents ``Runtime._export_slots`` gives as
    columns: the same records ``encode_exported`` makes, without a dict per agent."""
    pack = (codec or DEFAULT_CODEC).pack
    out = []
    for agent_id, machine, data, state, epoch, processed, failed, capacity, drop, tenant in zip(
        *columns, strict=True
    ):
        body = [
            agent_id, machine.name, machine.states[state], data, [], [], [], wall, 0,
            False, False, False, False, processed, failed, 0, 0, [], epoch, capacity,
            1 if drop else 0, None, -1, machine.version, hibernated,
            None if tenant == DEFAULT else tenant,
        ]  # fmt: skip
        out.append((agent_key(agent_id, codec), wall, frame(pack(body, agent=agent_id))))
    return out


def encode_slots(
    rt: Runtime, slots: Any, codec: Codec | None = None, hibernated: bool = False
) -> list[tuple[str, float, bytes]]:
    """``(agent key, taken_at, record)`` of the live agents in ``slots`` (an int32 array),
    all taken at one instant: plain agents through ``encode_plain``, the rest through
    ``encode_exported``."""
    plain, rest = rt._export_slots(slots)
    wall = time.time()
    out = encode_plain(plain, wall, codec, hibernated)
    out += [
        (agent_key(s["id"], codec), wall, encode_exported(s, wall, codec, hibernated)) for s in rest
    ]
    return out


def decode(record: bytes, codec: Codec | None = None, agent: Any = None) -> AgentSnapshot:
    """The snapshot ``encode`` made.

    Raises:
        CorruptRecordError: The record is damaged, truncated, of a newer format, or its fields
            are not what a snapshot holds (names ``agent`` when it is given).
    """
    codec = codec or DEFAULT_CODEC
    body = unframe(record, agent)
    try:
        fields = _fields(codec.unpack(body, agent))
        if fields is None:
            raise CorruptRecordError("not a snapshot record", agent)
        values = dict(zip(_FIELDS, fields, strict=True))
        if type(values["version"]) is not int or values["version"] < 1:
            raise TypeError(f"version {values['version']!r}")
        _bool(values["hibernated"])
        values["tenant"] = DEFAULT if values["tenant"] is None else _str(values["tenant"])
        values["mail"] = tuple(_message(m) for m in values["mail"]) if values["mail"] else ()
        values["postponed"] = (
            tuple(_message(m) for m in values["postponed"]) if values["postponed"] else ()
        )
        values["timers"] = (
            ()
            if not values["timers"]
            else tuple(
                TimerSnapshot(
                    tuple(_str(k) for k in key),
                    _float(due),
                    _int(guard),
                    event,
                    payload,
                    Priority(lane),
                    _bool(live),
                    _int(order),
                )
                for key, due, guard, event, payload, lane, live, order in values["timers"]
            )
        )
        values["policy"] = _POLICIES[values["policy"]]
        sup = values["supervision"]
        values["supervision"] = None if sup is None else Supervision(*sup)
        for name in ("processed", "failed", "dropped", "restarts", "epoch", "capacity", "front"):
            values[name] = _int(values[name])
        if type(values["ready"]) is not int:
            raise TypeError("ready")
        for name in ("paused", "stopped", "error", "backoff"):
            _bool(values[name])
        for name in ("machine", "state"):
            values[name] = _str(values[name])
        values["taken_at"] = _float(values["taken_at"])
        values["restarted_at"] = (
            tuple(_float(t) for t in values["restarted_at"]) if values["restarted_at"] else ()
        )
        return AgentSnapshot(**values)
    except CorruptRecordError:
        raise
    except (CodecError, EngineError, TypeError, ValueError, KeyError) as exc:
        raise CorruptRecordError(f"not a valid snapshot record ({exc})", agent) from None


def decode_saved(
    record: bytes,
    by_name: Mapping[str, Machine],
    wall: float,
    now: float,
    codec: Codec | None = None,
    agent: Any = None,
    chain: Sequence[Step] = (),
) -> tuple[Any, dict[str, Any]]:
    """``(agent id, what Runtime._import takes)`` from a record: ``prepare(decode(...))``,
    with a short way for plain agents (nothing but counters and data, as ``encode_plain``
    writes them), checked as strictly.

    The dict names the record's tenant (``"tenant"``: None for the default one); whether
    the runtime has it is for ``Runtime._import`` to find out (``TenantNotFoundError``).

    Raises:
        CorruptRecordError, MachineNotFoundError, UnknownStateError: as ``decode`` and
            ``prepare``.
    """
    codec = codec or DEFAULT_CODEC
    try:
        fields = _fields(codec.unpack(unframe(record, agent), agent))
    except EngineError:
        fields = None  # decode says what is wrong
    machine = by_name.get(fields[1]) if fields is not None else None
    if (
        type(fields) is list
        and len(fields) == len(_FIELDS)
        and machine is not None
        and fields[23] == machine.version  # (else the slow way, which migrates)
        and type(fields[23]) is int
        and fields[4:7] == _EMPTY3  # mail, postponed, timers
        and fields[8:13] == _PLAIN_FLAGS  # front count, paused, stopped, error, backoff
        and [type(v) for v in fields[8:13]] == _PLAIN_FLAG_TYPES
        and fields[15:18] == _PLAIN_RESTARTS  # dropped, restarts, restart times
        and [type(v) for v in fields[15:17]] == _INTS
        and fields[21:23] == _PLAIN_TAIL  # supervision, ready
        and type(fields[22]) is int
        and type(fields[24]) is bool
        and (fields[25] is None or type(fields[25]) is str)
        and type(fields[1]) is str
        and type(fields[2]) is str
        and fields[20] in _POLICIES
    ):
        agent_id, _, state, data = fields[:4]
        processed, failed, epoch, capacity = fields[13], fields[14], fields[18], fields[19]
        if not (
            type(processed) is int and processed >= 0 and type(failed) is int and failed >= 0
            and type(epoch) is int and epoch >= 0 and type(capacity) is int and capacity >= 0
            and type(fields[7]) in (int, float)
        ):  # fmt: skip
            raise CorruptRecordError("not a valid snapshot record (counts or time)", agent)
        return agent_id, {
            "id": agent_id, "machine": machine, "data": data,
            "state": machine.state_code(state), "epoch": epoch, "since": now,
            "processed": processed, "failed": failed, "dropped": 0, "capacity": capacity,
            "policy": _POLICIES[fields[20]], "paused": False, "stopped": False, "error": False,
            "backoff": False, "front": [], "mail": [], "postponed": [], "supervision": None,
            "restarts": 0, "restart_ages": [], "ready": -1, "timers": [], "tenant": fields[25],
        }  # fmt: skip
    snapshot = decode(record, codec, agent)
    return snapshot.agent_id, prepare(snapshot, by_name, wall, now, chain)


def _fields(body: Any) -> list[Any] | None:
    """A record's fields, those of older formats completed: format 1 as version 1, not
    hibernated, and formats 1 and 2 in the default tenant (None)."""
    if type(body) is not list:
        return None
    if len(body) == _FORMAT_1:
        body += [1, False, None]
    elif len(body) == _FORMAT_2:
        body.append(None)
    return body if len(body) == len(_FIELDS) else None


def peek_hibernated(
    record: bytes, codec: Codec | None = None, agent: Any = None
) -> tuple[Any, str, str, list[int], float | None] | None:
    """For a record ``hibernate`` wrote, what keeping the agent asleep needs without
    restoring it: ``(agent id, machine name, tenant name, [processed, failed, dropped],
    wall-clock time its first live timer is due or None)``; None for any other record.

    Raises:
        CorruptRecordError: The record is damaged.
    """
    try:
        fields = _fields((codec or DEFAULT_CODEC).unpack(unframe(record, agent), agent))
    except CodecError as exc:
        raise CorruptRecordError(f"not a valid snapshot record ({exc})", agent) from None
    if fields is None or fields[24] is not True:
        return None
    try:
        counts = [_int(fields[13]), _int(fields[14]), _int(fields[15])]
        due = [_float(t[1]) for t in fields[6] if t[6] is True]
        name = _str(fields[1])
        tenant = DEFAULT if fields[25] is None else _str(fields[25])
    except (TypeError, IndexError) as exc:
        raise CorruptRecordError(f"not a valid snapshot record ({exc})", agent) from None
    return fields[0], name, tenant, counts, min(due) if due else None


_EMPTY3: Final[list[Any]] = [[], [], []]
_PLAIN_FLAGS: Final = [0, False, False, False, False]
_PLAIN_FLAG_TYPES: Final = [int, bool, bool, bool, bool]
_INTS: Final = [int, int]
_PLAIN_RESTARTS: Final = [0, 0, []]
_PLAIN_TAIL: Final = [None, -1]


def _message(item: Any) -> Message:
    name, payload, priority = item
    return (_str(name), payload, Priority(priority))


def _int(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise TypeError(f"expected a count, got {value!r}")
    return value


def _float(value: Any) -> float:
    if type(value) not in (int, float):
        raise TypeError(f"expected a time, got {value!r}")
    return float(value)


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise TypeError(f"expected True or False, got {value!r}")
    return value


def _str(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(f"expected a name, got {value!r}")
    return value


DEFAULT_CODEC = Codec()
"""Builtins only (tuples, sets and big ints kept exactly); register types on your own Codec."""
