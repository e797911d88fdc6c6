"""The runtime: an agent registry in front of one hot-path dispatcher, plus time and tasks.

``Runtime`` works with no event loop at all (a host drives it with ``send_nowait`` /
``send_many`` / ``run_until_idle`` and, for timers, ``fire_timers``), and under trio through
``open_runtime``, which attaches a dispatch task (``_trio_host.py``) and enables the async
methods. Everything per message happens in the dispatcher; this layer resolves names, checks
arguments once, and owns what the dispatcher must not know: the clock, the timer heap,
supervision, pending requests and the transition log.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast, final, overload

import attrs
import numpy as np
import trio

from .. import hotpath as _hotpath
from ..core._actions import CancelTimer, EventTimeout, Send, StateTimeout, Timer, Work
from ..core._exceptions import (
    AgentExistsError,
    AgentNotFoundError,
    AgentStoppedError,
    EngineError,
    InvalidArgumentError,
    RuntimeBusyError,
    RuntimeNotRunningError,
)
from ..core._machine import Machine
from ..core._types import (
    AgentStatus,
    DeadLetter,
    DeadLetterReason,
    OutputBatch,
    OverflowPolicy,
    Priority,
)
from ..core._validate import brief, flag, integer, number
from ..hotpath._metrics import LatencyRing, LatencySummary
from . import _upgrade
from ._instruments import DeadLetterTap, Instruments
from ._records import RecordBatch, RecordSubscription
from ._records import read as read_records
from ._ring import Ring, Transition
from ._supervision import Supervision
from ._tenants import TENANTS, Limits, Tenant, Tenants, TenantStatistics
from ._timers import (
    EVENT_GUARD,
    NO_GUARD,
    STATE_GUARD,
    Entry,
    TimerQueue,
    owner,
    owner_gen,
    owner_slot,
)
from ._upgrade import UpgradeReport

if TYPE_CHECKING:
    import numpy.typing as npt

    from ..hotpath._python import AgentRef, Dispatcher
    from ._host import Host, RuntimePortal, Subscription

_ALL: Any = None
_SEQ = 2**62
"""Largest sequence number an argument may name."""
"""``subscribe(None)``: every agent (None is never an agent id: ``spawn`` refuses it)."""
_INT32 = 2**31 - 1
_MAX_RING = 2**24
"""Largest retention ring or latency ring (entries): rings are allocated whole, up front."""


def _policy(value: Any) -> OverflowPolicy:
    try:
        return OverflowPolicy(value)
    except (ValueError, TypeError):
        raise InvalidArgumentError(f"unknown overflow policy {brief(value)}") from None


_RESTART = ("restart",)
SLEEPERS = -1
"""The timer owner of hibernated agents' wake-ups (keys ``("wake", agent_id)``)."""
_TIMER_KEYS: dict[str, tuple[str, str]] = {}


def _timer_key(name: str) -> tuple[str, str]:
    """The key of the named timer ``name``: ``("timer", name)``, made once per name."""
    key = _TIMER_KEYS.get(name)
    if key is None:
        key = _TIMER_KEYS[name] = ("timer", name)
    return key


_STATE_KEY = ("state_timeout",)
_EVENT_KEY = ("event_timeout",)


@final
@attrs.frozen
class AgentStatistics:
    """Counters and status of one agent."""

    agent_id: Any
    """The agent."""
    state: str
    """Current state."""
    status: AgentStatus
    """Current status."""
    processed: int
    """Messages processed (a step happened, or an ignored event was consumed)."""
    failed: int
    """Messages that failed (handler raised, or no transition); each is a dead letter."""
    dropped: int
    """Messages dropped by a full ``DROP_OLDEST`` mailbox; each is a dead letter."""
    depth: int
    """Messages queued now."""
    status_since: float = 0.0
    """Clock reading when the status last changed."""
    paused: bool = False
    """True while paused."""
    restarts: int = 0
    """Restarts by supervision."""
    timers: int = 0
    """Armed timers."""
    busy_s: float | None = None
    """Time spent processing its messages (``metrics=True`` only)."""
    high_water: int | None = None
    """Largest mailbox depth seen (``metrics=True`` only)."""
    postponed: int | None = None
    """Events it postponed (``metrics=True`` only)."""
    last_error: BaseException | None = None
    """The error of its last failed message."""


@final
@attrs.frozen
class RuntimeStatistics:
    """Counters of the whole runtime."""

    agents: int
    """Live agents."""
    ready: int
    """Agents with mail waiting (not paused)."""
    processed: int
    """Messages processed since the runtime started (terminated agents included)."""
    failed: int
    """Messages failed since the runtime started."""
    dropped: int
    """Messages dropped by full mailboxes since the runtime started."""
    dead_letters: int
    """Dead letters recorded since the runtime started (some may have aged out)."""
    implementation: str
    """``"native"`` or ``"python"``."""
    timers: int = 0
    """Armed timers."""
    pending_requests: int = 0
    """Requests waiting for an answer."""
    step: LatencySummary | None = None
    """Sampled step durations, µs (``sample_every`` > 0)."""
    wait: LatencySummary | None = None
    """Sampled time in mailbox, µs (``sample_every`` > 0)."""
    rejected: int = 0
    """Inputs receptors refused since the runtime started (``rejected()`` keeps the last
    10 000)."""
    effector_failures: int = 0
    """Times an effector raised since the runtime started (``effector_failures()`` keeps the
    last 1 000, with what each failed to take)."""
    receptor_failures: int = 0
    """Times a receptor raised since the runtime started (``receptor_failures()`` keeps the
    last 1 000)."""
    hibernated: int = 0
    """Agents hibernated now (in the store, out of memory)."""
    hibernations: int = 0
    """Times an agent was hibernated since the runtime started."""
    woken: int = 0
    """Times a hibernated agent was brought back since the runtime started."""
    upgrades: int = 0
    """Upgrades in force (``upgrade`` adds one, ``rollback_upgrade`` takes one away)."""
    expired: int = 0
    """Hibernated agents removed for idling past their time to live."""
    tenants: tuple[TenantStatistics, ...] = ()
    """Per tenant, once a tenant was added or changed (``tenant_statistics``)."""


@final
@attrs.frozen
class MachineStatistics:
    """Agents of one machine, and how many sit in each state."""

    machine: str
    agents: int
    states: dict[str, int]
    """Agents per state (every state listed, zeros included)."""
    processed: int
    """Messages processed by its live agents."""
    failed: int


@final
class Runtime:
    """Hosts agents and drives them: synchronously, or under trio with ``open_runtime``.

    Args:
        on_output: Called with an ``OutputBatch`` after each drain (``None``: outputs are not
            collected, which is fastest).
        capacity: Default mailbox capacity for spawned agents (0 = unbounded).
        policy: Default overflow policy for bounded mailboxes.
        dead_letter_limit: Dead letters kept for reading (oldest age out; all are counted).
        budget: Messages an agent may process per turn before the next ready agent runs.
        supervision: Default supervision (``resume`` unless given).
        clock: Seconds, for timers and status stamps (``open_runtime`` uses trio's clock;
            default ``time.monotonic``).
        retention: Transition records kept for subscribers.
        record: Record transitions even while nobody subscribes (to read history later).
        batch: Messages the trio dispatch task processes before it yields to other tasks.
        metrics: Keep per-agent busy time, mailbox high-water mark, postponed and restart
            counts.
        sample_every: Sample every Nth step's duration and every Nth message's time in its
            mailbox into latency rings (0: off).
        ring_size: Samples each latency ring keeps.
        implementation: ``"native"``, ``"python"`` or ``None`` for the live one.
    """

    def __init__(
        self,
        *,
        on_output: Callable[[OutputBatch], object] | None = None,
        capacity: int = 0,
        policy: OverflowPolicy = OverflowPolicy.REJECT,
        dead_letter_limit: int = 100_000,
        budget: int = 64,
        supervision: Supervision | None = None,
        clock: Callable[[], float] | None = None,
        retention: int = 65_536,
        record: bool = False,
        batch: int = 4096,
        metrics: bool = False,
        sample_every: int = 0,
        ring_size: int = 65_536,
        implementation: str | None = None,
    ) -> None:
        # every argument is checked here, so a bad one fails this call with a typed error
        # (and nothing per message pays for it)
        if on_output is not None and not callable(on_output):
            raise InvalidArgumentError(
                f"on_output must be callable or None, got {brief(on_output)}"
            )
        if clock is not None and not callable(clock):
            raise InvalidArgumentError(f"clock must be callable or None, got {brief(clock)}")
        if supervision is not None and not isinstance(supervision, Supervision):
            raise InvalidArgumentError(
                f"supervision must be an engine.Supervision, got {brief(supervision)}"
            )
        capacity = integer("capacity", capacity, 0, _INT32)
        policy = _policy(policy)
        dead_letter_limit = integer("dead_letter_limit", dead_letter_limit, 1, _MAX_RING)
        budget = integer("budget", budget, 1, _INT32)
        retention = integer("retention", retention, 1, _MAX_RING)
        record = flag("record", record)
        batch = integer("batch", batch, 1, _INT32)
        metrics = flag("metrics", metrics)
        sample_every = integer("sample_every", sample_every, 0, _INT32)
        ring_size = integer("ring_size", ring_size, 1, _MAX_RING)
        if implementation not in (None, "native", "python"):
            raise InvalidArgumentError(
                f"implementation must be 'native', 'python' or None, got {brief(implementation)}"
            )
        impl = _hotpath.implementation(implementation)
        self.implementation: str = impl.IMPLEMENTATION
        """Which hot path this runtime runs on: ``"native"`` or ``"python"``."""
        self._dead: Ring[DeadLetter] = Ring(dead_letter_limit)
        self._retention = retention
        self._rejected: Ring[Any] = Ring(10_000)
        self._effector_failures: Ring[Any] = Ring(1_000)
        self._receptor_failures: Ring[Any] = Ring(1_000)
        self._d: Dispatcher = impl.Dispatcher(
            sink=on_output,
            dead_letters=self._dead,
            budget=budget,
            metrics=metrics,
            sample_every=sample_every,
            ring_size=ring_size,
        )
        self._capacity = capacity
        self._policy = policy
        self._budget = budget
        self._batch = batch
        self._clock = clock or time.monotonic
        self._timers = TimerQueue()
        self._supervision = supervision or Supervision()
        self._by_machine: dict[int, Supervision] = {}
        self._by_agent: dict[Any, Supervision] = {}
        self._history: dict[Any, deque[float]] = {}
        self._restarts: dict[Any, int] = {}
        self._requests: dict[int, _Pending] = {}
        self._last_request = 0
        self._record_always = record
        self._subscribers = 0
        self._host: Host | None = None
        self._gone: list[Any] | None = None
        """Ids terminated since the last commit, while a commit log is attached."""
        self._upgrades: list[Any] = []
        """``(old, new, states, migrate)`` of every upgrade, roll backs included, oldest first:
        the chain older records migrate along when they are restored."""
        self._undo: list[Any] = []
        """The upgrades in force, for ``rollback_upgrade``."""
        self._sleeper: Any = None
        """The hibernation of this runtime's agents (``engine.store.Hibernation``), if any."""
        self._tenants = Tenants(self)
        self.recovery: Any = None
        """What ``open_runtime(restore=...)`` brought back from its store (an
        ``engine.store.LoadReport``: agents restored, records that failed), else None."""
        self.metrics_history: Any = None
        self.recording_names: set[str] = set()
        """Names of the recordings ``engine.store.record_to_store`` kept of this runtime (one
        of another run is never continued: its sequence numbers are another run's)."""
        """The ``engine.observe.MetricsHistory`` that ``open_runtime(metrics_history=...)`` runs."""
        self.recorder: Any = None
        """The ``engine.store.Recorder`` that ``open_runtime(record_to=...)`` runs."""
        d = self._d
        d.on_actions = self._on_actions
        d.on_failure = self._on_failure
        d.on_request = self._on_request
        d.on_delay = self._on_delay
        d.clock = self._clock
        # the per-message send is the dispatcher's own (compiled) method: no Python frame
        self.send_nowait = d.send_nowait  # type: ignore[method-assign]
        d.now = self._clock()
        self._instruments = Instruments(self._rewire)
        self._rewire()

    # -- lifecycle -----------------------------------------------------------------------

    def spawn(
        self,
        machine: Machine,
        agent_id: Any,
        data: Any = None,
        *,
        capacity: int | None = None,
        policy: OverflowPolicy | None = None,
        state: str | None = None,
        supervision: Supervision | None = None,
        tenant: str | None = None,
    ) -> AgentRef:
        """Create an agent running ``machine`` and return its ``AgentRef``; ``tenant`` names
        its tenant (default: the ``"default"`` tenant).

        Raises:
            AgentExistsError: ``agent_id`` is taken.
            InvalidArgumentError: Unhashable id, bad capacity or policy.
            UnknownStateError: ``state`` is not a state of the machine.
            TenantNotFoundError: No tenant named ``tenant``.
            TenantLimitError: The tenant is at ``max_agents`` or ``max_memory`` and no agent
                of it could be hibernated to make room.
        """
        return self._spawn(
            machine, agent_id, data, capacity, policy, state, supervision, tenant, True
        )

    def _spawn(
        self,
        machine: Machine,
        agent_id: Any,
        data: Any,
        capacity: int | None,
        policy: OverflowPolicy | None,
        state: str | None,
        supervision: Supervision | None,
        tenant: str | None,
        admit: bool,
    ) -> AgentRef:
        """``spawn``; ``admit=False`` skips the tenant's spawn limits (an agent coming back
        from the store: waking one is never refused)."""
        if supervision is not None and not isinstance(supervision, Supervision):
            raise InvalidArgumentError(f"supervision must be a Supervision, got {supervision!r}")
        if self._sleeper is not None and self._sleeper.hibernated(agent_id) is not None:
            raise AgentExistsError(agent_id)
        index = 0 if tenant is None else self._tenants.index(tenant)
        if admit and self._tenants.enabled:
            self._tenants.admit(index, data)
        self._d.now = self._clock()
        ref = self._d.spawn(
            machine,
            agent_id,
            data,
            capacity=self._capacity if capacity is None else capacity,
            policy=self._policy if policy is None else policy,
            state=state,
            tenant=index,
        )
        if supervision is not None:
            self._by_agent[ref] = supervision
        return ref

    # -- tenants (engine.runtime._tenants does the work) ---------------------------------

    def add_tenant(
        self,
        name: str,
        *,
        weight: float = 1.0,
        limits: Limits | None = None,
        sizer: Callable[[Any], int] | None = None,
    ) -> None:
        """Add a tenant: agents spawned with ``tenant=name`` share its ``limits``, and when
        several tenants have mail each gets dispatcher time in proportion to its ``weight``.

        Raises:
            TenantExistsError: The name is taken.
            InvalidArgumentError: A bad name, weight, limits or sizer.
        """
        self._tenants.add(Tenant(name, weight, Limits() if limits is None else limits, sizer))

    def update_tenant(
        self,
        name: str,
        *,
        weight: float | None = None,
        limits: Limits | None = None,
        sizer: Any = ...,
    ) -> None:
        """Change a tenant's weight (from its next scheduling round), limits (from the next
        message or spawn) or sizer, while it runs. The default tenant can be changed too.

        Raises:
            TenantNotFoundError: No such tenant.
            InvalidArgumentError: A bad weight, limits or sizer.
        """
        self._tenants.change(name, weight, limits, sizer)

    def remove_tenant(self, name: str, *, terminate: bool = False) -> int:
        """Remove a tenant. It is refused while the tenant has agents, unless ``terminate``:
        then they are terminated (their mail becomes ``TERMINATED`` dead letters, like any
        termination) and so is the mail its rate still held back. Returns how many messages
        were dead-lettered.

        Raises:
            TenantNotFoundError: No such tenant.
            TenantBusyError: It has agents and ``terminate`` is False, or it is the default
                tenant.
            RuntimeBusyError: Called from inside a run (a handler).
        """
        return self._tenants.remove(name, flag("terminate", terminate))

    def tenants(self) -> list[Tenant]:
        """The tenants, the default one first, in the order they were added."""
        return [self._tenants.info[i] for i in self._tenants.by_name.values()]

    def tenant_of(self, agent_id: Any) -> str:
        """The name of a live agent's tenant."""
        return self._tenants.name_of(int(self._d.tenant_of(agent_id)))

    def tenant_statistics(self, name: str | None = None) -> Any:
        """Counters of one tenant (``TenantStatistics``), or of all of them as a list.

        Raises:
            TenantNotFoundError: No such tenant.
        """
        every = self._tenants.statistics()
        if name is None:
            return every
        self._tenants.index(name)
        return next(t for t in every if t.name == name)

    def _work_deadline(self, ref: AgentRef) -> tuple[int, float]:
        """``(tenant index, turn_deadline)`` of an agent's ``Work`` (0.0: none)."""
        if not self._tenants.enabled:
            return 0, 0.0
        index = int(self._d.tenant_of(ref.id))
        return index, self._tenants.info[index].limits.turn_deadline

    def _on_delay(self, index: int, due: float) -> None:
        """A tenant's rate holds mail back: release it at ``due``."""
        self._timers.arm(due, TENANTS, ("release", index))
        if self._host is not None:  # a parked dispatch task must see the new deadline
            self._host.poke()

    def supervise(self, machine: Machine, supervision: Supervision) -> None:
        """Set the supervision of every agent of ``machine`` without its own."""
        if not isinstance(supervision, Supervision):
            raise InvalidArgumentError(f"supervision must be a Supervision, got {supervision!r}")
        self._by_machine[id(machine)] = supervision

    def terminate(self, agent_id: Any) -> int:
        """Remove an agent. Its queued and postponed messages become ``TERMINATED`` dead
        letters, its pending requests fail with ``AgentStoppedError``, its timers and work
        are cancelled.

        Returns:
            How many messages were dead-lettered.

        Raises:
            AgentNotFoundError: No such agent.
        """
        ref = self._d.ref(agent_id)
        self._forget(ref)
        if self._gone is not None:
            self._gone.append(agent_id)
        return int(self._d.terminate(agent_id))

    def _owner(self, ref: Any) -> int:
        """The timer owner of a live agent's ref."""
        slot = ref.slot
        return owner(slot, self._d.timer_guard(slot)[0])

    def _forget(self, ref: Any) -> None:
        self._timers.cancel_all(self._owner(ref))
        self._by_agent.pop(ref, None)
        self._history.pop(ref, None)
        self._restarts.pop(ref, None)
        if self._host is not None:
            self._host.cancel_work(ref)

    def pause(self, agent_id: Any) -> None:
        """Stop stepping an agent; it keeps receiving mail (and its timers keep running)."""
        self._d.pause(agent_id)

    def resume(self, agent_id: Any) -> None:
        """Step a paused agent again."""
        self._d.resume(agent_id)

    def ref(self, agent_id: Any) -> AgentRef:
        """Return the ``AgentRef`` of a live agent (raises ``AgentNotFoundError``)."""
        return self._d.ref(agent_id)

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, agent_id: object) -> bool:
        """True for a live agent, resident or hibernated."""
        if agent_id in self._d:
            return True
        return self._sleeper is not None and self._sleeper.hibernated(agent_id) is not None

    def agent_ids(self) -> list[Any]:
        """Ids of the live agents in memory (``hibernated_ids`` lists the others)."""
        return list(self._d.agent_ids())

    # -- hibernation (engine.store.Hibernation does the work) ----------------------------

    def hibernate(self, agent_id: Any) -> None:
        """Write an idle agent to the store and free its memory; it stays addressable, with
        status ``HIBERNATED``, and the next message, request, call naming it (``state``,
        ``data``, ...) or due timer brings it back as it was. Needs a store (``open_runtime(
        store=...)`` or ``engine.store.Hibernation(rt, store)``).

        Raises:
            AgentNotFoundError: No such agent.
            AgentBusyError: It has mail queued, postponed events or ``Work`` running.
            RuntimeBusyError: Called from inside a run (a handler).
            InvalidArgumentError: This runtime has no store to hibernate into.
        """
        self._hibernation().hibernate(agent_id)

    def wake(self, agent_id: Any) -> bool:
        """Bring a hibernated agent back now (what sending to it does by itself); False if it
        was resident already.

        Raises:
            AgentNotFoundError: No such agent.
            CorruptRecordError, StoreError: Its record cannot be read back.
        """
        if agent_id in self._d:
            return False
        if self._sleeper is None or not self._sleeper.wake(agent_id):
            raise AgentNotFoundError(agent_id)
        return True

    def hibernated_ids(self) -> list[Any]:
        """Ids of the hibernated agents."""
        return [] if self._sleeper is None else self._sleeper.ids()

    def snapshot(self, agent_id: Any, keep: int | None = None) -> int:
        """Write a snapshot of one agent to the runtime's store and return its id (for
        ``rollback`` and ``fork``); ``keep``: then drop all but its newest ``keep`` records.
        (Under the commit log, its rounds and compaction share that history.)"""
        return int(self._hibernation().snapshot(agent_id, keep))

    def snapshots(self, agent_id: Any) -> list[Any]:
        """The agent's records in the store, oldest first: ``SnapshotInfo(id, taken_at)``."""
        return list(self._hibernation().snapshots(agent_id))

    def rollback(self, agent_id: Any, to: int, *, mail: str = "keep") -> None:
        """Put an agent back as snapshot ``to`` had it, in place (same id): state, data,
        counters, flags, supervision and timers. Its mail now is kept queued (``mail="keep"``)
        or dead-lettered as ``ROLLED_BACK`` (``"dead_letter"``); the snapshot's own queued mail
        is not queued again. Checked whole before anything changes.

        Raises:
            SnapshotNotFoundError: ``to`` is not one of this agent's snapshots.
            CorruptRecordError, UnknownStateError, UnknownEventError: It cannot be restored
                on the agent's machine.
        """
        self._hibernation().rollback(agent_id, to, mail)

    def fork(self, agent_id: Any, new_id: Any, *, at: int | None = None) -> AgentRef:
        """Start ``new_id`` as an exact copy of ``agent_id`` (mail included) as it is now, or
        as snapshot ``at`` had it; the two then diverge.

        Raises:
            AgentExistsError: ``new_id`` is taken.
        """
        if at is not None:
            return cast("AgentRef", self._hibernation().fork(agent_id, new_id, at))
        (saved,) = self._export([agent_id])
        copied = copy.deepcopy(
            {k: saved[k] for k in ("data", "front", "mail", "postponed", "timers")}
        )  # nothing shared
        saved = {**saved, **copied, "id": new_id, "ready": -1}
        ref = self._import(saved, wake=False)
        self._finish_import([(ref, saved)])
        return ref

    # -- versions ------------------------------------------------------------------------

    def upgrade(
        self,
        old: Machine,
        new: Machine,
        *,
        states: Mapping[str, str] | None = None,
        migrate: Callable[[str, Any], Any] | None = None,
        check: Callable[[Runtime, list[Any]], object] | None = None,
        canary: int | None = None,
    ) -> UpgradeReport:
        """Move every agent of ``old`` to ``new`` between two steps, atomically: each state
        goes to the state of that name in ``new`` unless ``states`` maps it; ``migrate(state,
        data)`` returns the new data (give a new value: with a ``check`` the old one is kept
        for a roll back); mail (requests included) and timers carry over, and a message whose
        event ``new`` lacks becomes an ``UNDELIVERABLE`` dead letter. ``check(rt, ids)`` runs
        on the upgraded agents (or the first ``canary`` of them) before the upgrade counts:
        False or an exception puts every agent back as it was.

        Raises:
            UpgradeError: A state of ``old`` has nowhere to go, ``migrate`` raised, agents are
                hibernated (nothing changed), or the check failed (everything put back).
            RuntimeBusyError: Called from inside a run (a handler).
        """
        return _upgrade.upgrade(
            self, old, new, states=states, migrate=migrate, check=check, canary=canary
        )

    def rollback_upgrade(
        self,
        *,
        states: Mapping[str, str] | None = None,
        migrate: Callable[[str, Any], Any] | None = None,
    ) -> UpgradeReport:
        """Move the last upgrade's agents back to its old machine (the inverse of its state
        mapping unless ``states`` is given; ``migrate`` converts data back).

        Raises:
            UpgradeError: No upgrade to roll back, or it cannot be undone as asked.
        """
        return _upgrade.rollback_upgrade(self, states=states, migrate=migrate)

    @property
    def upgrades(self) -> int:
        """Upgrades in force (``upgrade`` adds one, ``rollback_upgrade`` takes one away)."""
        return len(self._undo)

    def _hibernation(self) -> Any:
        if self._sleeper is None:
            raise InvalidArgumentError(
                "this runtime has no store to hibernate into: open_runtime(store=...) or "
                "engine.store.Hibernation(rt, store)"
            )
        return self._sleeper

    # -- sending -------------------------------------------------------------------------

    def send_nowait(
        self,
        agent_id: Any,
        event: str | int,
        payload: Any = None,
        priority: int = Priority.NORMAL,
    ) -> None:
        """Queue ``event`` (a name, or a code from ``machine.event_code``) for an agent.

        Raises:
            AgentNotFoundError: No such agent.
            AgentStoppedError: Supervision stopped it.
            UnknownEventError: The event is not one of the agent's machine.
            InvalidArgumentError: ``priority`` is not 0..3.
            MailboxFullError: The mailbox is bounded, full and rejects (a ``trio.WouldBlock``).
        """
        self._d.send_nowait(agent_id, event, payload, priority)

    def send_many(
        self,
        agent_ids: Iterable[Hashable],
        events: Iterable[str | int] | npt.NDArray[np.integer[Any]],
        priorities: int | Iterable[int] | npt.NDArray[np.integer[Any]] = Priority.NORMAL,
        payloads: Iterable[Any] | None = None,
    ) -> None:
        """Queue many messages at once, by agent id; all are checked before any is queued.

        ``agent_ids`` is a list, tuple or array of ids; ``events`` event names (``StrEnum``
        members too) or codes, or an integer array of codes; ``priorities`` one priority
        (``Priority`` or int) or one per message; ``payloads`` None or one per message. The
        conversion (ids to slots, names to codes) runs in the dispatcher in one pass.

        Raises:
            AgentNotFoundError, AgentStoppedError, UnknownEventError, InvalidArgumentError,
            MailboxFullError: As ``send_nowait``, for the first bad message (none is queued).
        """
        self._d.send_many(agent_ids, events, priorities, payloads)

    def send_many_slots(
        self,
        slots: npt.ArrayLike,
        events: npt.ArrayLike,
        priorities: npt.ArrayLike = Priority.NORMAL,
        payloads: Sequence[Any] | None = None,
    ) -> None:
        """The one-call path: integer arrays of slots (``slots()``), event codes, priorities."""
        self._d.send_many_slots(slots, events, priorities, payloads)

    def slots(self, agent_ids: Iterable[Any]) -> npt.NDArray[np.int32]:
        """Return the dispatcher slots of ``agent_ids`` (for ``send_many_slots``)."""
        ids = agent_ids if isinstance(agent_ids, np.ndarray) else list(agent_ids)
        return self._d.slots(ids)

    # -- running (synchronous hosts) -----------------------------------------------------

    def run(self, limit: int = -1) -> int:
        """Process up to ``limit`` messages (negative: until idle); return how many."""
        if not isinstance(limit, int):
            raise InvalidArgumentError(f"limit must be an int, got {limit!r}")
        self._d.now = self._clock()
        return int(self._d.run(limit))

    def run_until_idle(self) -> int:
        """Process messages until no agent has mail; return how many were processed.

        Timers are not waited for; ``fire_timers`` delivers the due ones.
        """
        total = 0
        while True:
            n = self.run(-1)
            total += n
            if n == 0:
                return total

    def fire_timers(self, now: float | None = None) -> int:
        """Deliver every timer due at ``now`` (default: the clock); return how many fired.

        Under ``open_runtime`` the dispatch task does this by itself.
        """
        now = self._clock() if now is None else number("now", now)
        self._d.now = now
        fired = 0
        for due in self._timers.pop_due(now):
            fired += self._fire(due)
        return fired

    def next_deadline(self) -> float | None:
        """When the earliest armed timer is due, or None."""
        return self._timers.next_deadline()

    def _fire(self, entry: Entry) -> int:
        _, _, who, key, guard, guard_value, event, payload, lane = entry
        if who == SLEEPERS:  # a hibernated agent's timer is due: bring it back (its own
            _, agent_id = cast(tuple[str, Any], key)  # timers, re-armed, fire at once)
            return int(self._sleeper is not None and self._sleeper.wake(agent_id))
        if who == TENANTS:  # a tenant's rate lets held-back mail go
            _, index = cast(tuple[str, int], key)
            due = self._d.release_delayed(index)
            if due >= 0:
                self._timers.arm(due, TENANTS, key)
            return 1
        d = self._d
        slot = owner_slot(who)
        if key == _RESTART:
            if d.timer_guard(slot)[0] != owner_gen(who):
                return 0
            d.restart(d.agent_at(slot))  # ends the backoff; a pause() meanwhile stays
            return 1
        try:
            return int(d.fire(slot, owner_gen(who), guard, guard_value, event, payload, lane))
        except EngineError as exc:
            agent_id = d.agent_at(slot)
            d.dead_letters.append(
                DeadLetter(
                    agent_id,
                    d.machine(agent_id).events[event],
                    payload,
                    Priority(lane),
                    DeadLetterReason.UNDELIVERABLE,
                    exc,
                )
            )
            d.dead_letter_count += 1
        return 1

    # -- export and import (snapshots: engine.store builds on these) ---------------------

    def _export(self, agent_ids: Iterable[Hashable]) -> list[dict[str, Any]]:
        """Everything the runtime holds for each agent, as plain data (no encoding): the
        dispatcher's part (``Dispatcher.export``) plus id, machine, data, per-agent
        supervision, restarts (and how long ago those in supervision's window were), the
        place on the ready queue, and the armed timers as ``(key, seconds from now, guard kind,
        event code, payload, lane, live, order)`` (``live`` is False for a guarded timer whose
        guard no longer holds: armed, but it will never fire; ``order`` ranks all timers by
        arming, which breaks ties between equal deadlines)."""
        d = self._d
        ids = list(agent_ids)
        refs = [d.ref(agent_id) for agent_id in ids]  # AgentNotFoundError before any work
        timers = self._timers.live()
        ready = {agent_id: i for i, agent_id in enumerate(d.ready_order())}
        now = self._clock()
        by_agent, restarts, history = self._by_agent, self._restarts, self._history
        out = []
        export = d.export
        for agent_id, ref in zip(ids, refs, strict=True):
            saved = export(agent_id)
            kept = []
            if timers:  # (most runtimes snapshot far more agents than they have timers)
                taken = saved["processed"] + saved["failed"]
                for deadline, seq, _, key, guard, value, event, payload, lane in timers.get(
                    self._owner(ref), ()
                ):
                    live = not (
                        (guard == STATE_GUARD and value != saved["epoch"])
                        or (guard == EVENT_GUARD and value != taken)
                    )
                    kept.append((key, deadline - now, guard, event, payload, lane, live, seq))
            saved["supervision"] = by_agent.get(ref) if by_agent else None
            saved["restarts"] = restarts.get(ref, 0) if restarts else 0
            saved["restart_ages"] = [now - t for t in history.get(ref, ())] if history else []
            saved["timers"] = kept
            saved["ready"] = ready.get(agent_id, -1) if ready else -1
            saved["tenant"] = self._tenants.name_of(int(d.tenant_of(agent_id)))
            out.append(saved)
        return out

    def _export_slots(
        self, slots: npt.NDArray[np.int32]
    ) -> tuple[tuple[list[Any], ...], list[dict[str, Any]]]:
        """``_export`` of the live agents in ``slots``, split: the *plain* ones (nothing but
        counters and data: no mail, flags, timers, per-agent supervision or restarts) as the
        columns ``(ids, machines, data, states, epochs, processed, failed, capacities,
        drop_oldest)`` that ``Dispatcher.export_plain`` reads in one pass, plus their tenants'
        names, and the others as ``_export`` dicts. Snapshots of many idle agents take the
        first, fast way."""
        d = self._d
        pos, *cols = d.export_plain(slots)
        special: set[int] = set()  # slots with something the dispatcher does not hold
        if self._timers:
            special.update(owner_slot(o) for o in self._timers.live())
        for refs in (self._by_agent, self._restarts, self._history):
            if refs:
                special.update(ref.slot for ref in refs)
        slot_list = slots.tolist()
        if special:
            keep = [k for k, i in enumerate(pos) if slot_list[i] not in special]
            cols = [[col[k] for k in keep] for col in cols]
            pos = [pos[k] for k in keep]
        if self._tenants.enabled and pos:  # one name per tenant, looked up once
            indexes = d.tenant_indexes()[slots[pos]].tolist()
            names = {index: self._tenants.name_of(index) for index in set(indexes)}
            cols.append([names[index] for index in indexes])
        else:
            cols.append([self._tenants.name_of(0)] * len(pos))
        plain = set(pos)
        rest = [d.agent_at(s) for i, s in enumerate(slot_list) if i not in plain]
        return tuple(cols), self._export(rest) if rest else []

    def _import(self, saved: dict[str, Any], wake: bool = True) -> AgentRef:
        """Spawn an agent from what ``_export`` returned (with ``machine`` a ``Machine``);
        its timers are re-armed as many seconds from now as they had left (overdue ones fire
        at the next ``fire_timers``, once). ``wake=False``: see ``_wake_in_order``."""
        ref = self._spawn(
            saved["machine"],
            saved["id"],
            saved["data"],
            saved["capacity"],
            saved["policy"],
            None,
            saved["supervision"],
            saved.get("tenant"),
            False,
        )
        try:
            self._d.load(saved["id"], saved, wake)
        except BaseException:  # undone as if never spawned (no tombstone for a commit log)
            self._forget(ref)
            self._d.terminate(saved["id"])
            raise
        if saved["restarts"]:
            self._restarts[ref] = saved["restarts"]
        if saved["restart_ages"]:  # supervision's window: how long ago each restart was
            now = self._clock()
            self._history[ref] = deque(now - age for age in saved["restart_ages"])
        if wake:
            self._arm_imported([(ref, saved)])
        return ref

    def _arm_imported(self, agents: Sequence[tuple[AgentRef, dict[str, Any]]]) -> None:
        """Re-arm the timers of imported agents, all in their original arming order (so
        timers due at the same instant fire in the order they would have)."""
        now = self._clock()
        pending = []
        for ref, saved in agents:
            who = self._owner(ref)
            _, epoch, taken = self._d.timer_guard(ref.slot)
            for key, remaining, guard, event, payload, lane, live, order in saved["timers"]:
                value = epoch if guard == STATE_GUARD else taken if guard == EVENT_GUARD else 0
                if not live:
                    value = -1  # never equal to a count: armed, and dead, as it was
                pending.append(
                    (order, now + remaining, who, key, guard, value, event, payload, lane)
                )
        pending.sort(key=lambda t: t[0])
        for _, *timer in pending:
            self._timers.arm(*timer)
        if pending and self._host is not None:  # a parked dispatch task: a sooner deadline
            self._host.poke()

    def _finish_import(self, agents: Sequence[tuple[AgentRef, dict[str, Any]]]) -> None:
        """After ``_import(..., wake=False)`` of many agents: arm their timers in their
        original order, and put them on the ready queue in the order they had (``ready``),
        after whatever is queued already, so a restored runtime runs as the original would."""
        self._arm_imported(agents)
        saved = [s for _, s in agents]
        queued = sorted((s for s in saved if s["ready"] >= 0), key=lambda s: s["ready"])
        for s in [*queued, *(s for s in saved if s["ready"] < 0)]:
            self._d.wake(s["id"])

    # -- hooks called by the dispatcher --------------------------------------------------

    def _on_actions(
        self, agent_id: Any, slot: int, gen: int, actions: list[tuple[Any, int]]
    ) -> None:
        d = self._d
        now = d.now
        timers = self._timers
        who = owner(slot, gen)
        for action, code in actions:
            kind = type(action)
            if kind is Timer:
                deadline = action.seconds if action.absolute else now + action.seconds
                timers.arm(
                    deadline,
                    who,
                    _timer_key(action.name),
                    NO_GUARD,
                    0,
                    code,
                    action.payload,
                    int(action.priority),
                )
            elif kind is CancelTimer:
                timers.cancel(who, _timer_key(action.name))
            elif kind is StateTimeout or kind is EventTimeout:
                key = _STATE_KEY if kind is StateTimeout else _EVENT_KEY
                if action.seconds is None:
                    timers.cancel(who, key)
                    continue
                _, epoch, events = d.timer_guard(slot)
                guard = STATE_GUARD if kind is StateTimeout else EVENT_GUARD
                value = epoch if kind is StateTimeout else events
                timers.arm(
                    now + action.seconds,
                    who,
                    key,
                    guard,
                    value,
                    code,
                    action.payload,
                    int(action.priority),
                )
            elif kind is Work:
                if self._host is None:
                    raise RuntimeNotRunningError("Work actions need open_runtime")
                self._host.start_work(d.ref(agent_id), action)

    def _on_failure(self, agent_id: Any, slot: int, error: BaseException) -> None:
        d = self._d
        if self._instruments.hooks["on_failure"]:
            self._instruments.call("on_failure", agent_id, error)
        ref = d.ref(agent_id)
        sup = self._by_agent.get(ref) or self._by_machine.get(id(d.machine(agent_id)))
        sup = sup or self._supervision
        if sup.policy == "resume":
            return
        verdict, delay = sup.decide(self._history.setdefault(ref, deque()), d.now)
        if verdict == "stop":
            self._timers.cancel_all(self._owner(ref))
            if self._host is not None:
                self._host.cancel_work(ref)
            d.stop(agent_id)
            return
        self._restarts[ref] = self._restarts.get(ref, 0) + 1
        self._timers.cancel_all(self._owner(ref))
        if self._host is not None:
            self._host.cancel_work(ref)
        if delay <= 0:
            d.restart(agent_id)
        else:
            d.backoff(agent_id)
            self._timers.arm(d.now + delay, self._owner(ref), _RESTART)

    def _on_request(self, request: int, ok: bool, value: Any) -> None:
        pending = self._requests.pop(request, None)
        if pending is not None:
            pending.settle(ok, value)

    def _on_record(
        self, agent_id: Any, source: str, event: str, target: str, outputs: tuple[Any, ...]
    ) -> None:
        self._instruments.call("after_transition", agent_id, source, event, target, outputs)

    def _rewire(self) -> None:
        """Connect exactly the dispatcher hooks that someone needs now, and keep transition
        records while someone subscribes (or always, with ``record=True``)."""
        d, hooks = self._d, self._instruments.hooks
        d.record(self._retention if self._subscribers or self._record_always else 0)
        d.on_record = self._on_record if hooks["after_transition"] else None
        d.on_step = self._before_step if hooks["before_step"] else None
        d.on_overflow = self._on_overflow if hooks["on_overflow"] else None
        d.dead_letters = (
            DeadLetterTap(self._dead, self._instruments) if hooks["on_dead_letter"] else self._dead
        )

    def _before_step(self, agent_id: Any, state: str, event: str) -> None:
        self._instruments.call("before_step", agent_id, state, event)

    def _on_overflow(self, agent_id: Any, event: str, payload: Any, policy: str) -> None:
        self._instruments.call("on_overflow", agent_id, event, payload, policy)

    # -- instruments -----------------------------------------------------------------------

    def add_instrument(self, instrument: Any) -> None:
        """Install an instrument (see ``engine.Instrument``): only the hooks it defines are
        connected, so the others cost nothing.

        Raises:
            TypeError: It defines none of the hooks.
        """
        self._instruments.add(instrument)

    def remove_instrument(self, instrument: Any) -> None:
        """Uninstall an instrument (nothing happens if it is not installed)."""
        self._instruments.remove(instrument)

    def instrument_failures(self) -> list[Any]:
        """Instruments that raised and were removed, with the hook and the error."""
        return self._instruments.failures.items()

    # -- async API (needs open_runtime) --------------------------------------------------

    def _attach(self, host: Host) -> None:
        """Called by the trio host when it starts driving this runtime."""
        if self._host is not None:
            raise RuntimeBusyError("this runtime is already running under open_runtime")
        self._host = host
        self._d.work_enabled = True

    def _detach(self) -> None:
        self._host = None
        self._d.work_enabled = False

    def _running_host(self) -> Host:
        if self._host is None:
            raise RuntimeNotRunningError("this needs the runtime to run under open_runtime")
        return self._host

    async def send(
        self,
        agent_id: Any,
        event: str | int,
        payload: Any = None,
        priority: int = Priority.NORMAL,
    ) -> None:
        """Queue an event, waiting for room while the agent's bounded mailbox is full. Under
        ``durability="log"`` it returns once the message is committed (if cancelled while
        waiting for that, the message stays queued and is committed with the next group).

        Raises what ``send_nowait`` raises, except ``MailboxFullError``.
        """
        await self._running_host().send(agent_id, event, payload, priority)

    async def flush(self) -> None:
        """Return once everything accepted so far (``send_nowait``, ``send_many``, receptors)
        is committed, under ``durability="log"``; at once otherwise."""
        await self._running_host().flush()

    async def request(
        self,
        agent_id: Any,
        event: str | int,
        payload: Any = None,
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
    ) -> Any:
        """Send an event and wait for its answer: the handler's ``Reply(value)``, or else the
        tuple of outputs of the step that processed it.

        Raises:
            trio.TooSlowError: No answer within ``timeout`` seconds.
            AgentStoppedError: The agent was terminated or stopped before answering.
            HandlerError, InvalidTransitionError: Processing the event failed.
            MailboxFullError: The agent's bounded mailbox is full (requests do not wait).
        """
        self._running_host()
        request = self._new_request()
        pending = self._requests[request] = _Pending()
        try:
            self._d.send_request(agent_id, event, payload, priority, request)
            if timeout is None:
                await pending.wait()
            else:
                with trio.move_on_after(timeout):
                    await pending.wait()
                if not pending.settled:
                    raise trio.TooSlowError(f"no answer from {agent_id!r} within {timeout} s")
        finally:
            self._requests.pop(request, None)
        return pending.result()

    def _new_request(self) -> int:
        rid = self._last_request
        while True:
            rid = rid % 0x7FFFFFFF + 1
            if rid not in self._requests:
                self._last_request = rid
                return rid

    @asynccontextmanager
    async def subscribe(
        self, agent_id: Any = _ALL, from_seq: int | None = None
    ) -> AsyncIterator[RecordSubscription]:
        """Follow transition records of one agent, or of every agent when ``agent_id`` is None
        (the default; no agent can have the id None). Never takes mail from a mailbox.

        Every step has a sequence number; a reader gets every record from ``from_seq`` on, or
        a ``Gap`` saying how many it missed (records are kept only while someone subscribes,
        or always with ``Runtime(record=True)``, and only the last ``retention``). ``None``
        starts with the next record. Read them one by one (``async for``), in lists
        (``await sub.batch()``) or as numpy columns (``await sub.columns()``).
        """
        host = self._running_host()
        seq = self._d.record_seq if from_seq is None else integer("from_seq", from_seq, 0, _SEQ)
        self._subscribers += 1
        self._rewire()
        try:
            yield RecordSubscription(self, host.progress, agent_id, seq, _ALL)
        finally:
            self._subscribers -= 1
            self._rewire()

    @asynccontextmanager
    async def watch_dead_letters(
        self, agent_id: Any = _ALL, from_seq: int | None = None
    ) -> AsyncIterator[Subscription]:
        """Follow dead letters as they are recorded (failures, drops, terminations), with a
        ``Gap`` where this reader fell more than ``dead_letter_limit`` behind."""
        yield self._running_host().follow(self._dead, agent_id, from_seq)

    def interrupt(self, agent_id: Any, event: str = "interrupted") -> int:
        """Cancel the agent's running ``Work`` and deliver ``event`` to it (at HIGH priority).
        A full bounded mailbox delays the event until there is room, as ``send`` would (the
        work is cancelled at once either way); it is never lost.

        Returns:
            How many pieces of work were cancelled.

        Raises:
            AgentNotFoundError, UnknownEventError, AgentStoppedError: As ``send_nowait``.
        """
        host = self._running_host()
        ref = self._d.ref(agent_id)
        self._d.machine(agent_id).event_code(event)
        if self._d.status(agent_id) == AgentStatus.STOPPED:
            raise AgentStoppedError(agent_id, "is stopped")
        cancelled = host.cancel_work(ref)
        host.deliver_event(ref, event, None, Priority.HIGH)
        return cancelled

    def start_work(self, agent_id: Any, work: Work) -> None:
        """Run ``work`` for an agent as if one of its handlers had returned it: a task of the
        runtime's nursery in a cancel scope filed under the agent, so ``interrupt``,
        ``terminate`` and a supervision restart or stop cancel it, and ``done`` / ``failed``
        are delivered to the agent as for the action. Plugins start I/O that an agent owns
        this way (``WorkSink.start_work``), e.g. a stream an agent's output asked for. A
        hibernated agent is woken first (its work keeps it resident until it ends). Such
        work is the agent's I/O, not a turn: its tenant's ``turn_deadline`` does not apply
        (the plugin's own timeouts do).

        Raises:
            RuntimeNotRunningError: Not under ``open_runtime``.
            InvalidArgumentError: ``work`` is not a ``Work``.
            AgentNotFoundError: No such agent.
            AgentStoppedError: Supervision stopped it.
        """
        host = self._running_host()
        if not isinstance(work, Work):
            raise InvalidArgumentError(f"start_work takes a Work, got {type(work).__name__}")
        if agent_id not in self._d:
            self.wake(agent_id)  # AgentNotFoundError when it is not hibernated either
        if self._d.status(agent_id) == AgentStatus.STOPPED:
            raise AgentStoppedError(agent_id, "is stopped")
        host.start_work(self._d.ref(agent_id), work, turn=False)

    def route_sends(self, router: Callable[[Send], bool] | None, *, every: bool = False) -> None:
        """Give ``Send`` actions whose agent is not in this runtime to ``router`` (called in
        the drain loop with the ``Send``; it returns True when it took the message, False to
        leave it to local delivery, which dead-letters an unknown id). ``every=True`` offers
        it every ``Send`` action first, local or not. ``None`` removes it. A sharded host
        (``engine.cluster``) routes messages to other processes this way. The router must
        not block; an ``EngineError`` it raises dead-letters the message.

        Raises:
            InvalidArgumentError: ``router`` is not callable, or ``every`` without one.
        """
        if router is not None and not callable(router):
            raise InvalidArgumentError(f"router must be callable, got {type(router).__name__}")
        if router is None and every:
            raise InvalidArgumentError("every=True needs a router")
        self._d.route_all = False  # never route_all with no router, even for an instant
        self._d.router = router
        self._d.route_all = bool(every)

    async def start(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> Any:
        """Start ``fn(*args, task_status=...)`` as a task of the runtime's nursery (as
        ``trio.Nursery.start``) and return what it reports; it is cancelled when the runtime
        closes. Exporters and services attach to a running runtime this way.

        Raises:
            RuntimeNotRunningError: Not under ``open_runtime``.
        """
        return await self._running_host().nursery.start(fn, *args, name=name)

    def portal(self) -> RuntimePortal:
        """A handle for threads other than trio's: ``send_nowait``, ``send``, ``request``."""
        return self._running_host().portal()

    async def wait_until_idle(self) -> None:
        """Wait until no agent has mail to process (timers may still be armed)."""
        await self._running_host().wait_until_idle()

    # -- inspection ----------------------------------------------------------------------

    def state(self, agent_id: Any) -> str:
        """Current state name of an agent."""
        return str(self._d.state(agent_id))

    def status(self, agent_id: Any) -> AgentStatus:
        """Current status of an agent (``AgentNotFoundError`` once terminated)."""
        if self._sleeper is not None and self._sleeper.hibernated(agent_id) is not None:
            return AgentStatus.HIBERNATED  # (asking does not wake it)
        return AgentStatus(self._d.status(agent_id))

    def status_since(self, agent_id: Any) -> float:
        """Clock reading when the agent's status last changed (precision: one dispatch batch)."""
        if self._sleeper is not None:
            since = self._sleeper.hibernated(agent_id)
            if since is not None:
                return float(since)
        return float(self._d.status_since(agent_id))

    def paused(self, agent_id: Any) -> bool:
        """True while the agent is paused."""
        return bool(self._d.paused(agent_id))

    def data(self, agent_id: Any) -> Any:
        """The data object of an agent."""
        return self._d.data(agent_id)

    def machine(self, agent_id: Any) -> Machine:
        """The machine an agent runs."""
        return self._d.machine(agent_id)

    def diagram(self, agent_id: Any, format: str = "mermaid") -> str:
        """The agent's machine drawn as Mermaid (``"mermaid"``) or Graphviz (``"dot"``), its
        current state highlighted.

        Raises:
            AgentNotFoundError: No such agent.
            InvalidArgumentError: Another format.
        """
        machine, state = self._d.machine(agent_id), self._d.state(agent_id)
        if format == "mermaid":
            return machine.to_mermaid(highlight=state)
        if format == "dot":
            return machine.to_dot(highlight=state)
        raise InvalidArgumentError(f"format must be 'mermaid' or 'dot', got {brief(format)}")

    def queued(self, agent_id: Any) -> list[tuple[Priority, str, Any]]:
        """Queued messages of an agent as ``(priority, event, payload)``, in process order."""
        return list(self._d.queued(agent_id))

    def postponed(self, agent_id: Any) -> list[tuple[Priority, str, Any]]:
        """Postponed messages of an agent, oldest first."""
        return list(self._d.postponed(agent_id))

    def timers(self, agent_id: Any) -> list[Any]:
        """Keys of the agent's armed timers: ``("timer", name)``, ``("state_timeout",)``,
        ``("event_timeout",)`` or ``("restart",)``."""
        return self._timers.armed(self._owner(self._d.ref(agent_id)))

    def dead_letters(self) -> list[DeadLetter]:
        """Dead letters kept so far (oldest first), without removing them."""
        return self._dead.items()

    def take_dead_letters(self) -> list[DeadLetter]:
        """Remove and return the dead letters kept so far (a stream reader that had not read
        them yet gets a ``Gap`` for them)."""
        return self._dead.discard()

    def rejected(self) -> list[Any]:
        """Input that receptors refused (``ErrorRecord``), oldest first (the last 10 000;
        ``statistics().rejected`` counts them all)."""
        return self._rejected.items()

    def effector_failures(self) -> list[Any]:
        """Effectors that raised, each with the batch (or record) it failed to take (the
        last 1 000; ``statistics().effector_failures`` counts them all)."""
        return self._effector_failures.items()

    def receptor_failures(self) -> list[Any]:
        """Receptors that raised, each with what followed (restart or stop; the last 1 000,
        ``statistics().receptor_failures`` counts them all)."""
        return self._receptor_failures.items()

    @property
    def step_latency(self) -> LatencyRing:
        """The ring of sampled step durations (ns); see ``sample_every``."""
        return self._d.step_ring

    @property
    def wait_latency(self) -> LatencyRing:
        """The ring of sampled times messages spent in their mailbox (ns)."""
        return self._d.wait_ring

    def track(self, agent_id: Any) -> tuple[LatencyRing, LatencyRing]:
        """Keep this agent's sampled (step, wait) latencies in rings of its own too."""
        return self._d.track(agent_id)

    def track_machine(self, machine: Machine) -> tuple[LatencyRing, LatencyRing]:
        """Keep the sampled (step, wait) latencies of this machine's agents apart too."""
        return self._d.track_machine(machine)

    def last_error(self, agent_id: Any) -> BaseException | None:
        """The error of the agent's last failed message (kept until it is terminated)."""
        return self._d.last_error(agent_id)

    def machine_statistics(self) -> list[MachineStatistics]:
        """Per machine: agents, agents per state, messages processed and failed."""
        d = self._d
        machines = d.machine_indexes()
        states = d.states()
        processed, failed = d.processed, d.failed
        out = []
        for m, machine in enumerate(d.machines):
            mine = machines == m
            counts = np.bincount(states[mine], minlength=len(machine.states))
            out.append(
                MachineStatistics(
                    machine.name,
                    int(mine.sum()),
                    {name: int(counts[i]) for i, name in enumerate(machine.states)},
                    int(processed[mine].sum()),
                    int(failed[mine].sum()),
                )
            )
        return out

    def transitions(self) -> list[Transition]:
        """Transition records retained (while someone subscribes, or with ``record=True``)."""
        return self.records().transitions()

    def records(self, from_seq: int | None = None, limit: int | None = None) -> RecordBatch:
        """Transition records retained, from ``from_seq`` on (the oldest kept if None), at
        most ``limit``, as numpy columns; its ``gap`` says how many from ``from_seq`` were not
        kept. Synchronous: for a runtime run without trio, or a look at the history."""
        d = self._d
        start = d.record_floor if from_seq is None else integer("from_seq", from_seq, 0, _SEQ)
        count = self._retention if limit is None else integer("limit", limit, 0, _SEQ)
        return read_records(self, start, count, _ALL, _ALL)

    @property
    def processed(self) -> npt.NDArray[np.int64]:
        """Processed count per slot (index with ``AgentRef.slot``); a read-only copy."""
        return np.array(self._d.processed)

    @property
    def failed(self) -> npt.NDArray[np.int64]:
        """Failed count per slot; a read-only copy."""
        return np.array(self._d.failed)

    @overload
    def statistics(self) -> RuntimeStatistics: ...

    @overload
    def statistics(self, agent_id: Hashable) -> AgentStatistics: ...

    def statistics(self, agent_id: Hashable = _ALL) -> AgentStatistics | RuntimeStatistics:
        """Counters of one agent (``AgentStatistics``) or, with no argument, of the runtime
        (``RuntimeStatistics``).

        Raises:
            AgentNotFoundError: No such agent.
        """
        d = self._d
        if agent_id is not _ALL:
            ref = d.ref(agent_id)
            slot = ref.slot
            return AgentStatistics(
                agent_id,
                d.state(agent_id),
                AgentStatus(d.status(agent_id)),
                int(d.processed[slot]),
                int(d.failed[slot]),
                int(d.dropped[slot]),
                int(d.depth(agent_id)),
                float(d.status_since(agent_id)),
                bool(d.paused(agent_id)),
                self._restarts.get(ref, 0),
                len(self._timers.armed(self._owner(ref))),
                *self._agent_metrics(slot),
                d.last_error(agent_id),
            )
        sleeper = self._sleeper
        asleep = (0, 0, 0) if sleeper is None else sleeper.counts
        return RuntimeStatistics(
            len(d),
            int(d.ready),
            int(d.processed.sum()) + d.retired[0] + asleep[0],
            int(d.failed.sum()) + d.retired[1] + asleep[1],
            int(d.dropped.sum()) + d.retired[2] + asleep[2],
            int(d.dead_letter_count),
            self.implementation,
            len(self._timers),
            len(self._requests),
            d.step_ring.summary(),
            d.wait_ring.summary(),
            self._rejected.total,
            self._effector_failures.total,
            self._receptor_failures.total,
            0 if sleeper is None else len(sleeper),
            0 if sleeper is None else sleeper.hibernations,
            0 if sleeper is None else sleeper.woken,
            self.upgrades,
            0 if sleeper is None else sleeper.expired,
            tuple(self._tenants.statistics()) if self._tenants.enabled else (),
        )

    def _agent_metrics(self, slot: int) -> tuple[float | None, int | None, int | None]:
        if not self._d.metrics_enabled:
            return None, None, None
        row = self._d.metrics[slot]
        return int(row["busy_ns"]) / 1e9, int(row["high_water"]), int(row["postponed"])


@final
class _Pending:
    """One request waiting for its answer (parks its task directly: the cheapest wait)."""

    __slots__ = ("_ok", "_task", "_value", "settled")

    def __init__(self) -> None:
        self.settled = False
        self._ok = False
        self._value: Any = None
        self._task: trio.lowlevel.Task | None = None

    def settle(self, ok: bool, value: Any) -> None:
        self._ok, self._value, self.settled = ok, value, True
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        if self.settled:  # answered before we waited (e.g. dropped at once)
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, raise_cancel: Any) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def result(self) -> Any:
        if not self._ok:
            raise self._value
        return self._value
