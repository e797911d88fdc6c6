"""Pure-Python twin of the compiled dispatcher (``_native/``): same API, same scheduling.

Theory of operation: agents live in *slots* (dense integers reused after termination, with a
generation counter so a stale ``AgentRef`` is detected). Each slot has a state, a machine, and
a mailbox of four FIFO lanes that exists only while it holds mail, plus two rarely used
queues: the *front* queue (``NextEvent`` actions and postponed events being replayed, served
before any lane) and the *postponed* list. A slot with mail is on the *ready queue* exactly
once (unless paused or stopped). ``run()`` pops a ready slot, processes up to ``budget``
messages from it (front first, then the head of its highest non-empty lane), and puts it back
at the end of the queue if it still has mail. Outputs are buffered and handed to the sink in
one batch per run (or sooner when the buffer fills), between agent turns. Every message that
is not processed normally becomes a ``DeadLetter``.

The runtime plugs in through hooks that cost nothing while unset: ``on_wake`` (the ready
queue became non-empty), ``on_request`` (a request message was answered or failed),
``on_actions`` (timers and work to schedule), ``on_failure`` (supervision) and ``on_record``
(a transition, for subscribers). ``now`` is the clock reading stamped on status changes.

The compiled module must behave identically: the same tests run against both.
"""

from __future__ import annotations

import math
import operator
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, cast, final

import numpy as np

from ..core._actions import Prepared, Send, Work, lane, prepare
from ..core._exceptions import (
    AgentExistsError,
    AgentNotFoundError,
    AgentStoppedError,
    EngineError,
    HandlerError,
    InvalidArgumentError,
    InvalidTransitionError,
    MailboxFullError,
    RuntimeBusyError,
    RuntimeNotRunningError,
    TenantLimitError,
    TurnDeadlineError,
    UnknownEventError,
)
from ..core._machine import Machine
from ..core._types import (
    AgentStatus,
    DeadLetter,
    DeadLetterReason,
    OutputBatch,
    OverflowPolicy,
    Priority,
    Step,
    as_priority,
)
from ..core._validate import brief
from ._batch import as_int32, batch_arrays, resolve_gone, restore_ids
from ._metrics import METRICS_DTYPE, RECORD_DTYPE, RECORD_FRONT, TENANT_DTYPE, LatencyRing

if TYPE_CHECKING:
    import numpy.typing as npt

IMPLEMENTATION: Final = "python"
MAX_MACHINES: Final = 0xFFFF
"""Machines one runtime can hold (the compiled path keeps the index in 16 bits)."""

_LIVE: Final = 1
_QUEUED: Final = 2
_DEAD: Final = 4  # terminated while on the ready queue; released when popped
_ERROR: Final = 8
_DROP_OLDEST: Final = 16
_REJECT: Final = 32
_PAUSED: Final = 64
_STOPPED: Final = 128
_BACKOFF: Final = 1024  # waiting out a restart backoff (supervision)
_DIRTY: Final = 2048  # changed since the last take_dirty() (the commit log reads it)
_HOLD: Final = _PAUSED | _STOPPED | _BACKOFF  # not stepped
_PRIORITIES: Final = tuple(Priority)
_HANDLER_FAILED: Final = DeadLetterReason.HANDLER_FAILED
_INVALID: Final = DeadLetterReason.INVALID_TRANSITION
_DROPPED: Final = DeadLetterReason.DROPPED
_TERMINATED: Final = DeadLetterReason.TERMINATED
MAX_TENANTS: Final = 0xFFFF
"""Tenants one runtime can hold at once (the compiled path keeps the index in 16 bits)."""
_WHOLE: Final = 1.0 - 1e-9
"""A token bucket holding this much has a whole token."""
DEADLINE_REPORT: Final = 0
DEADLINE_FAIL: Final = 1
DEADLINE_STOP: Final = 2


class DeadLetterSink(Protocol):
    """Where dead letters go (a deque, the runtime's retention ring, an instrument tap)."""

    def append(self, letter: DeadLetter, /) -> None: ...


Entry = tuple[int, Any, int, int]
"""A queued message: (event code, payload, lane, request id or 0)."""


@final
class Event:
    """An event as a handler sees it: ``name``, ``payload`` and ``priority``."""

    __slots__ = ("_lane", "name", "payload")

    def __init__(self, name: str, payload: Any = None, priority: int = Priority.NORMAL) -> None:
        self.name = name
        self.payload = payload
        self._lane = lane(priority)

    @property
    def priority(self) -> Priority:
        """The lane the event was queued in."""
        return _PRIORITIES[self._lane]

    def __repr__(self) -> str:
        return f"Event({self.name!r}, payload={self.payload!r}, priority={self.priority.name})"


@final
class AgentContext:
    """What a handler knows about its agent: id, current state, data, machine."""

    __slots__ = ("_d", "_gen", "_slot")

    def __init__(self, dispatcher: Dispatcher, slot: int, gen: int) -> None:
        self._d = dispatcher
        self._slot = slot
        self._gen = gen

    @property
    def agent_id(self) -> Any:
        """The agent's id."""
        return self._d._ids[self._d._check(self._slot, self._gen)]

    @property
    def state(self) -> str:
        """The agent's state (during a handler: the state the event arrived in)."""
        return self._d._state_name(self._d._check(self._slot, self._gen))

    @property
    def data(self) -> Any:
        """The agent's data object (settable)."""
        return self._d._data[self._d._check(self._slot, self._gen)]

    @data.setter
    def data(self, value: Any) -> None:
        self._d._data[self._d._check(self._slot, self._gen)] = value

    @property
    def machine(self) -> Machine:
        """The agent's machine definition."""
        d = self._d
        return d._machines[d._mach[d._check(self._slot, self._gen)]]


@final
class AgentRef:
    """A fast handle on one agent: sends skip the id lookup. Stale once the agent is gone."""

    __slots__ = ("_d", "_gen", "_slot")

    def __init__(self, dispatcher: Dispatcher, slot: int, gen: int) -> None:
        self._d = dispatcher
        self._slot = slot
        self._gen = gen

    def send_nowait(
        self, event: str | int, payload: Any = None, priority: int = Priority.NORMAL
    ) -> None:
        """Queue ``event`` for this agent (see ``Runtime.send_nowait``)."""
        d = self._d
        slot = d._sendable(d._check(self._slot, self._gen))
        d._enqueue(slot, d._event_code(slot, event), payload, d._lane(priority), 0)

    @property
    def id(self) -> Any:
        """The agent's id."""
        return self._d._ids[self._d._check(self._slot, self._gen)]

    @property
    def slot(self) -> int:
        """The dispatcher slot (what ``send_many_slots`` takes)."""
        return self._d._check(self._slot, self._gen)

    @property
    def alive(self) -> bool:
        """False once the agent was terminated."""
        return self._d._gen[self._slot] == self._gen and bool(self._d._flags[self._slot] & _LIVE)

    @property
    def state(self) -> str:
        """The agent's current state name."""
        return self._d._state_name(self._d._check(self._slot, self._gen))

    @property
    def status(self) -> AgentStatus:
        """The agent's status; ``STOPPED`` once it was terminated."""
        if not self.alive:
            return AgentStatus.STOPPED
        return self._d._status(self._slot)

    @property
    def data(self) -> Any:
        """The agent's data object (settable)."""
        return self._d._data[self._d._check(self._slot, self._gen)]

    @data.setter
    def data(self, value: Any) -> None:
        self._d._data[self._d._check(self._slot, self._gen)] = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AgentRef):
            return NotImplemented
        return (self._d, self._slot, self._gen) == (other._d, other._slot, other._gen)

    def __hash__(self) -> int:
        return hash((id(self._d), self._slot, self._gen))

    def __repr__(self) -> str:
        if not self.alive:
            return f"<AgentRef slot={self._slot} (terminated)>"
        return f"<AgentRef {self.id!r} state={self.state!r}>"


class _Tenant:
    """One tenant as the dispatcher sees it: its ready queue, its round's deficit, its
    limits and counters (``TENANT_DTYPE`` names them)."""

    __slots__ = (
        "active",
        "agents",
        "burst",
        "deadline_ns",
        "deficit",
        "delayed",
        "delayed_q",
        "dropped",
        "last",
        "max_queued",
        "name",
        "overruns",
        "policy",
        "quantum",
        "queued",
        "rate",
        "ready",
        "rejected",
        "retired_failed",
        "retired_processed",
        "rings",
        "served",
        "tokens",
        "wait",
    )

    def __init__(self, name: Any) -> None:
        self.name = name
        self.ready: deque[int] = deque()
        self.active = False  # on the active queue, or being served
        self.dropped = False  # removed; kept while dead agents of it are queued
        self.quantum = 1
        self.deficit = 0
        self.queued = 0
        self.max_queued = 0
        self.wait = False
        self.rate = 0.0
        self.burst = 0.0
        self.tokens = 0.0
        self.last = 0.0
        self.deadline_ns = 0
        self.policy = DEADLINE_REPORT
        self.agents = 0
        self.delayed_q: deque[tuple[int, int, Any, int, int, Any, int, int]] = deque()
        self.delayed = self.rejected = self.overruns = self.served = 0
        self.retired_processed = self.retired_failed = 0
        self.rings: tuple[LatencyRing, LatencyRing] | None = None


class _MachineEntry:
    __slots__ = ("handlers", "ignore", "machine", "n_events", "next", "out")

    def __init__(self, machine: Machine, out: list[int]) -> None:
        self.machine = machine
        self.out = out  # output codes, remapped to the dispatcher's interned values
        self.next = machine.next_table.tolist()
        self.handlers = machine.handler_table  # shared and updated in place by the machine
        self.n_events = len(machine.events)
        self.ignore = machine.unhandled == "ignore"


@final
class Dispatcher:
    """Agent slots, four-lane mailboxes, the ready queue and the drain loop.

    Args:
        sink: Called with one ``OutputBatch`` per drain; ``None`` discards outputs.
        dead_letters: Where dead letters are appended (a bounded deque is typical).
        budget: Messages one agent may process per turn before the next ready agent runs.
        output_buffer: Outputs buffered before a batch is flushed mid-run (between turns).
        metrics: Keep per-agent busy time, mailbox high-water mark, postponed and restart
            counts (``metrics``); without it the drain loop does none of that work.
        sample_every: Time every Nth step (``step_ring``) and every Nth message's wait in
            its mailbox (``wait_ring``); 0 turns sampling off.
        ring_size: Samples each latency ring keeps.
    """

    def __init__(
        self,
        *,
        sink: Callable[[OutputBatch], object] | None = None,
        dead_letters: DeadLetterSink | None = None,
        budget: int = 64,
        output_buffer: int = 65536,
        metrics: bool = False,
        sample_every: int = 0,
        ring_size: int = 65_536,
    ) -> None:
        if budget < 1 or output_buffer < 1:
            raise InvalidArgumentError("budget and output_buffer must be positive")
        if sample_every < 0 or ring_size < 1:
            raise InvalidArgumentError("sample_every must be >= 0 and ring_size positive")
        self.metrics_enabled = metrics
        self.sample_every = sample_every
        self.step_ring = LatencyRing(ring_size)
        """Sampled step durations (ns)."""
        self.wait_ring = LatencyRing(ring_size)
        """Sampled time messages spent in their mailbox (ns)."""
        self._ring_size = ring_size
        self._enq_left = self._step_left = sample_every
        self._mx = np.zeros(0, dtype=METRICS_DTYPE)
        self._last_error: dict[int, BaseException] = {}
        self._tracked: dict[int, tuple[LatencyRing, LatencyRing]] = {}
        self._tracked_machines: dict[int, tuple[LatencyRing, LatencyRing]] = {}
        self._sink = sink
        self.dead_letters: DeadLetterSink = deque() if dead_letters is None else dead_letters
        self.dead_letter_count = 0
        self.retired = [0, 0, 0]
        """Processed, failed and dropped counts of terminated agents."""
        self.now = 0.0
        """Clock reading stamped on status changes (the runtime keeps it current)."""
        self.clock: Callable[[], float] | None = None
        """Read when a status changes outside a run (a send after a long idle)."""
        self._now_fresh = False
        self.work_enabled = False
        """True while a host runs ``Work`` actions (``open_runtime``); else they fail."""
        self.deliver_sends = True
        """False: ``Send`` actions go nowhere (a replay feeds what they delivered itself)."""
        self.router: Callable[[Send], bool] | None = None
        """Takes ``Send`` actions whose agent is not here (or all of them, ``route_all``):
        True when it took one, False to leave it to local delivery (or a dead letter)."""
        self.route_all = False
        self._out_retired: list[tuple[int, int, Any]] = []
        self.on_wake: Callable[[], object] | None = None
        self.on_missing: Callable[[Any], bool] | None = None
        """An id not resident: wake it from a store (hibernation); True if it did."""
        self.on_request: Callable[[int, bool, Any], object] | None = None
        self.on_actions: Callable[[Any, int, int, list[tuple[Any, int]]], object] | None = None
        self.on_failure: Callable[[Any, int, BaseException], object] | None = None
        self.on_record: Callable[[Any, str, str, str, tuple[Any, ...]], object] | None = None
        self.on_step: Callable[[Any, str, str], object] | None = None
        self.on_overflow: Callable[[Any, str, Any, str], object] | None = None
        self._budget = budget
        self._out_limit = output_buffer
        self._running = False
        # machines
        self._machine_index: dict[int, int] = {}
        self._machines: list[Machine] = []
        self._entries: list[_MachineEntry] = []
        self._values: list[Hashable] = []
        # slots
        self._index: dict[Any, int] = {}
        self._ids: list[Any] = []
        self._data: list[Any] = []
        self._state: list[int] = []
        self._mach: list[int] = []
        self._flags: list[int] = []
        self._gen: list[int] = []
        self._epoch: list[int] = []
        self._since: list[float] = []
        self._cap: list[int] = []
        self._box: list[list[deque[tuple[int, Any, int, int]]] | None] = []
        self._count: list[int] = []
        self._free: list[int] = []
        self._front: dict[int, deque[Entry]] = {}
        self._postponed: dict[int, list[Entry]] = {}
        self._processed = np.zeros(0, dtype=np.int64)
        self._failed = np.zeros(0, dtype=np.int64)
        self._dropped = np.zeros(0, dtype=np.int64)
        self._ready: deque[int] = deque()
        # tenants (engine.runtime names them; here they are indexes, 0 the default)
        self._tenanted = False  # set by the first set_tenant: run() schedules fairly
        self._tof: list[int] = []  # tenant index per slot
        self._tenants: list[_Tenant | None] = []
        self._active: deque[int] = deque()  # tenants with ready agents, in round order
        self._cur = -1  # the tenant being served (a run may end inside its turn)
        self._nready = 0  # agents on the tenants' ready queues
        self._step_tenant = 0  # the tenant of the agent whose handler runs
        self.on_delay: Callable[[int, float], object] | None = None
        """A tenant's rate began holding messages back: ``on_delay(tenant, due)`` asks for
        ``release_delayed(tenant)`` at clock time ``due``."""
        self._out_slots: list[int] = []
        self._out_codes: list[int] = []
        self._out_steps: list[int] = []
        self._extras: list[Any] = []
        # transition records: a ring of RECORD_DTYPE rows, payloads and a handler's outputs
        # beside them; off (no ring) until record(capacity)
        self._rseq = 0  # records ever made (steps committed), kept or not
        self._rstart = 0  # the oldest record this ring was ever given
        self._rcap = 0  # records the ring keeps, 0 = not recording
        self._rpos = 0  # where record _rseq goes
        self._rec = np.zeros(0, dtype=RECORD_DTYPE)
        self._rpay: list[Any] = []
        self._rext: list[Any] = []
        self._rgone: deque[tuple[int, int, Any]] = deque()  # (seq, slot, id) of terminations
        self._rflags = 0  # RECORD_FRONT while a front-queue message is stepped

    # -- machines ------------------------------------------------------------------------

    def register(self, machine: Machine) -> int:
        """Register ``machine`` (once) and return its index in this dispatcher."""
        key = id(machine)
        idx = self._machine_index.get(key)
        if idx is not None:
            return idx
        if not isinstance(machine, Machine):
            raise TypeError(f"expected an engine.Machine, got {type(machine)!r}")
        if len(self._machines) == MAX_MACHINES:
            raise InvalidArgumentError(f"a runtime holds at most {MAX_MACHINES} machines")
        # each machine's outputs get codes of their own: values equal across types (True, 1,
        # 1.0) or across machines stay distinct objects
        base = len(self._values)
        out = [base + c if c >= 0 else -1 for c in machine.output_table.tolist()]
        self._values.extend(machine.outputs)
        idx = len(self._machines)
        self._machines.append(machine)
        self._entries.append(_MachineEntry(machine, out))
        self._machine_index[key] = idx
        return idx

    @property
    def output_values(self) -> Sequence[Hashable]:
        """Machine outputs, indexed by non-negative output codes (each machine's own, in
        registration order; equal values of different machines or types stay apart)."""
        return self._values

    # -- agents --------------------------------------------------------------------------

    def spawn(
        self,
        machine: Machine,
        agent_id: Any,
        data: Any = None,
        *,
        capacity: int = 0,
        policy: int = OverflowPolicy.REJECT,
        state: str | None = None,
        tenant: int = 0,
    ) -> AgentRef:
        """Create an agent in ``state`` (default: the machine's initial state), in tenant
        ``tenant`` (an index given to ``set_tenant``; 0 is the default tenant)."""
        m = self.register(machine)
        s = machine.state_code(machine.initial if state is None else state)
        if not isinstance(capacity, int) or not 0 <= capacity <= 0x7FFFFFFF:
            raise InvalidArgumentError(
                f"capacity must be an int >= 0 (0 = unbounded): {capacity!r}"
            )
        try:
            policy = OverflowPolicy(policy)
        except ValueError:
            raise InvalidArgumentError(f"unknown overflow policy {policy!r}") from None
        if agent_id is None:
            raise InvalidArgumentError(
                "None is not an agent id (subscribe(None) and statistics() mean every agent)"
            )
        try:
            exists = agent_id in self._index
        except Exception as exc:
            raise InvalidArgumentError(
                f"agent id {brief(agent_id)} is not hashable or comparable: {exc!r}"
            ) from exc
        if exists:
            raise AgentExistsError(agent_id)
        # (checked after the id's __hash__ and __eq__ ran: they could have removed it)
        if tenant and not (
            type(tenant) is int
            and 0 < tenant < len(self._tenants)
            and (known := self._tenants[tenant]) is not None
            and not known.dropped
        ):
            raise InvalidArgumentError(f"no tenant with index {brief(tenant)}")
        flags = _LIVE
        if capacity:
            flags |= _DROP_OLDEST if policy == OverflowPolicy.DROP_OLDEST else _REJECT
        if self._free:
            slot = self._free.pop()
            self._ids[slot] = agent_id
            self._data[slot] = data
        else:
            slot = len(self._ids)
            self._ids.append(agent_id)
            self._data.append(data)
            for ints in (
                self._tof,
                self._state,
                self._mach,
                self._flags,
                self._gen,
                self._epoch,
                self._cap,
                self._count,
            ):
                ints.append(0)
            self._since.append(0.0)
            self._box.append(None)
            if slot >= len(self._processed):
                n = max(64, 2 * len(self._processed))
                self._processed = _grow(self._processed, n)
                self._failed = _grow(self._failed, n)
                self._dropped = _grow(self._dropped, n)
                if self.metrics_enabled:
                    grown = np.zeros(n, dtype=METRICS_DTYPE)
                    grown[: len(self._mx)] = self._mx
                    self._mx = grown
        self._state[slot] = s
        self._mach[slot] = m
        self._flags[slot] = flags | _DIRTY
        self._epoch[slot] = 0
        self._since[slot] = self.now
        self._cap[slot] = capacity
        self._box[slot] = None
        self._count[slot] = 0
        self._processed[slot] = self._failed[slot] = self._dropped[slot] = 0
        if self.metrics_enabled:
            self._mx[slot] = 0
        self._index[agent_id] = slot
        self._tof[slot] = tenant
        if self._tenanted:
            cast(_Tenant, self._tenants[tenant]).agents += 1
        return AgentRef(self, slot, self._gen[slot])

    def terminate(self, agent_id: Any) -> int:
        """Remove an agent; its queued and postponed mail becomes TERMINATED dead letters.

        Returns:
            How many messages were dead-lettered.
        """
        slot = self._slot_of(agent_id)
        queued = self._flags[slot] & _QUEUED
        counted = self._tenanted  # in its tenant's agents (tenancy may start below)
        agent_id = self._ids[slot]  # the stored id (the argument only compares equal)
        # unreachable first: the dead letters below run instruments, which may send to it
        del self._index[agent_id]
        self._gen[slot] += 1
        self._flags[slot] = _DEAD
        if self._out_codes:  # its outputs still in the buffer keep its id
            self._out_retired.append((len(self._out_codes), slot, agent_id))
        n = self._evict(slot, DeadLetterReason.TERMINATED)
        self.retired[0] += int(self._processed[slot])
        self.retired[1] += int(self._failed[slot])
        self.retired[2] += int(self._dropped[slot])
        if self._tenanted:
            t = cast(_Tenant, self._tenants[self._tof[slot]])
            t.agents -= counted
            t.retired_processed += int(self._processed[slot])
            t.retired_failed += int(self._failed[slot])
        self._processed[slot] = self._failed[slot] = self._dropped[slot] = 0
        self._last_error.pop(slot, None)
        self._tracked.pop(slot, None)
        if self._rcap:  # its records keep its id
            self._forget_records()
            self._rgone.append((self._rseq, slot, agent_id))
        self._ids[slot] = None
        self._data[slot] = None
        if queued:  # on the ready queue: released when run() pops it
            self._flags[slot] = _DEAD | _QUEUED
        else:
            self._release(slot)
        return n

    def requeue(self, agent_id: Any, entries: list[tuple[int, Any, int, int]]) -> None:
        """Queue ``(event code, payload, lane, request)`` entries for ``agent_id`` as
        ``take_mail`` returned them (a rollback keeping its mail): past its tenant's limits,
        which admitted them once already."""
        slot = self._slot_of(agent_id)
        for ev, payload, lane_, request in entries:
            self._push(slot, ev, payload, lane_, request)

    def take_mail(self, agent_id: Any) -> list[tuple[int, Any, int, int]]:
        """Remove and return everything queued or postponed for ``agent_id``, in processing
        order (front queue, lanes from the highest, postponed), as ``(event code, payload,
        lane, request)``: nothing is dead-lettered (a rollback moves it)."""
        slot = self._slot_of(agent_id)
        self._flags[slot] |= _DIRTY
        return self._take(slot)

    def _take(self, slot: int) -> list[tuple[int, Any, int, int]]:
        taken = list(self._front.pop(slot, ()))
        while self._count[slot]:
            taken.append(self._dequeue(slot, sample=False))
        taken += self._postponed.pop(slot, [])
        return taken

    def _evict(self, slot: int, reason: DeadLetterReason) -> int:
        """Dead-letter everything queued or postponed for ``slot``, in processing order."""
        agent_id = self._ids[slot]
        machine = self._machines[self._mach[slot]]
        evicted = self._take(slot)
        error = AgentStoppedError(agent_id, "was " + reason.value) if evicted else None
        for ev, payload, lane_, request in evicted:
            self._dead_letter(agent_id, machine, ev, payload, lane_, reason)
            if request:
                self._answer(request, False, error)
        return len(evicted)

    def _release(self, slot: int) -> None:
        self._flags[slot] = 0
        self._free.append(slot)

    def ref(self, agent_id: Any) -> AgentRef:
        """Return an ``AgentRef`` for a live agent."""
        slot = self._slot_of(agent_id)
        return AgentRef(self, slot, self._gen[slot])

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, agent_id: object) -> bool:
        try:
            return agent_id in self._index
        except Exception:
            return False

    def agent_at(self, slot: int) -> Any:
        """The id of the agent in ``slot``.

        Raises:
            AgentNotFoundError: The slot holds no live agent.
        """
        if not 0 <= slot < len(self._ids) or not self._flags[slot] & _LIVE:
            raise AgentNotFoundError(f"<slot {slot}>")
        return self._ids[slot]

    def agent_ids(self) -> list[Any]:
        """Ids of live agents, in slot order."""
        return [self._ids[s] for s in sorted(self._index.values())]

    def slots(self, agent_ids: Sequence[Any] | npt.NDArray[Any]) -> npt.NDArray[np.int32]:
        """Return the slots of ``agent_ids`` as an int32 array (for ``send_many_slots``)."""
        return np.array([self._slot_of(a) for a in agent_ids], dtype=np.int32)

    # -- lifecycle controls (used by the runtime: pause/resume, supervision) -------------

    def pause(self, agent_id: Any) -> None:
        """Stop stepping an agent (status PAUSED); it keeps receiving mail."""
        slot = self._slot_of(agent_id)
        if not self._flags[slot] & (_PAUSED | _ERROR | _STOPPED):  # the status shown changes
            self._since[slot] = self._status_time()
        self._flags[slot] |= _PAUSED | _DIRTY

    def resume(self, agent_id: Any) -> None:
        """Step a paused agent again (an agent in a restart backoff still waits it out)."""
        slot = self._slot_of(agent_id)
        flags = self._flags[slot]
        if flags & _PAUSED and not flags & (_ERROR | _STOPPED):
            self._since[slot] = self._status_time()
        self._flags[slot] = (self._flags[slot] & ~_PAUSED) | _DIRTY
        self._wake(slot)

    def paused(self, agent_id: Any) -> bool:
        """True while the agent is paused (by ``pause``; a restart backoff is not a pause)."""
        return bool(self._flags[self._slot_of(agent_id)] & _PAUSED)

    def backoff(self, agent_id: Any) -> None:
        """Hold an agent until ``restart`` (supervision's backoff); ``pause``/``resume``
        during it are kept apart from it."""
        self._flags[self._slot_of(agent_id)] |= _BACKOFF | _DIRTY

    def stop(self, agent_id: Any) -> int:
        """Stop an agent for good: its mail becomes STOPPED dead letters and it takes no more
        (sends raise ``AgentStoppedError``); it stays registered until terminated."""
        slot = self._slot_of(agent_id)
        self._flags[slot] = (self._flags[slot] | _STOPPED | _DIRTY) & ~(_ERROR | _BACKOFF)
        self._since[slot] = self._status_time()
        return self._evict(slot, DeadLetterReason.STOPPED)

    def _status_time(self) -> float:
        """The time to stamp on a status change: ``now`` inside a run (fresh to one batch)
        or a send_many call, else a clock reading (a send may come after a long idle)."""
        if self._running or self._now_fresh or self.clock is None:
            return self.now
        self.now = float(self.clock())
        return self.now

    def restart(self, agent_id: Any, state: str | None = None) -> None:
        """Put an agent back in ``state`` (default: initial), clearing ERROR; its mail stays
        and its postponed events are replayed first."""
        slot = self._slot_of(agent_id)
        if self._flags[slot] & _STOPPED:
            raise AgentStoppedError(agent_id, "is stopped")
        machine = self._machines[self._mach[slot]]
        self._state[slot] = machine.state_code(machine.initial if state is None else state)
        self._epoch[slot] += 1
        if self.metrics_enabled:
            self._mx[slot]["restarts"] += 1
        self._flags[slot] = (self._flags[slot] & ~(_ERROR | _BACKOFF)) | _DIRTY
        self._since[slot] = self._status_time()
        self._replay(slot, [])
        self._wake(slot)

    def _wake(self, slot: int) -> None:
        """Put ``slot`` on the ready queue if it has mail and may run."""
        flags = self._flags[slot]
        if (self._count[slot] or slot in self._front) and not flags & (_QUEUED | _HOLD):
            self._flags[slot] |= _QUEUED
            if self._push_ready(slot) == 1 and self.on_wake is not None:
                self.on_wake()

    def _push_ready(self, slot: int) -> int:
        """Append ``slot`` to the ready queue (its tenant's, under tenancy); return how many
        agents are ready now."""
        if not self._tenanted:
            self._ready.append(slot)
            return len(self._ready)
        t = self._tof[slot]
        tenant = cast(_Tenant, self._tenants[t])
        tenant.ready.append(slot)
        if not tenant.active:
            tenant.active = True
            self._active.append(t)
        self._nready += 1
        return self._nready

    # -- sending -------------------------------------------------------------------------

    def send_nowait(
        self, agent_id: Any, event: str | int, payload: Any = None, priority: int = 1
    ) -> None:
        """Queue ``event`` for ``agent_id`` at ``priority``; see ``Runtime.send_nowait``."""
        slot = self._sendable(self._slot_of(agent_id))
        self._enqueue(slot, self._event_code(slot, event), payload, self._lane(priority), 0)

    def send_request(
        self, agent_id: Any, event: str | int, payload: Any, priority: int, request: int
    ) -> None:
        """``send_nowait`` with a request id: ``on_request`` reports the message's answer."""
        slot = self._sendable(self._slot_of(agent_id))
        self._enqueue(slot, self._event_code(slot, event), payload, self._lane(priority), request)

    def send_many(
        self,
        agent_ids: Any,
        events: Any,
        priorities: Any = 1,
        payloads: Any = None,
    ) -> None:
        """Queue many messages by agent id; see ``Runtime.send_many``.

        Ids, names, priorities and payloads are converted in one pass and every message is
        checked before any is queued.
        """
        ids = _as_list(agent_ids)
        n = len(ids)
        payload_list = _payloads(payloads, n)
        coded = isinstance(events, np.ndarray) and events.dtype.kind in "iu"
        codes_in: list[Any] = as_int32("events", events).tolist() if coded else _as_list(events)
        if len(codes_in) != n:
            raise InvalidArgumentError(f"{len(codes_in)} events for {n} agents")
        if isinstance(priorities, np.ndarray) and priorities.ndim == 1:
            lanes_in: list[Any] | None = as_int32("priorities", priorities).tolist()
        elif isinstance(priorities, list | tuple):
            lanes_in = list(priorities)
        else:
            lanes_in = None
            one = lane(priorities)
        if lanes_in is not None and len(lanes_in) != n:
            raise InvalidArgumentError(f"{len(lanes_in)} priorities for {n} agents")
        slots, codes, lanes = [0] * n, [0] * n, [0] * n
        for i in range(n):
            slot = self._sendable(self._slot_of(ids[i]))
            event = codes_in[i]
            if coded:
                machine = self._machines[self._mach[slot]]
                if not 0 <= event < len(machine.events):
                    raise UnknownEventError(machine.name, event)
                codes[i] = event
            else:
                codes[i] = self._event_code(slot, event)
            slots[i] = slot
            lanes[i] = one if lanes_in is None else lane(lanes_in[i])
        self._queue_checked(slots, codes, lanes, payload_list)

    def send_many_slots(
        self,
        slots: Any,
        events: Any,
        priorities: Any = Priority.NORMAL,
        payloads: Sequence[Any] | None = None,
    ) -> None:
        """Queue many messages at once; all are validated before any is queued."""
        sl, ev, pr = batch_arrays(slots, events, priorities)
        n = len(sl)
        payload_list = _payloads(payloads, n)
        nslots = len(self._ids)
        for i in range(n):
            slot, e, p = int(sl[i]), int(ev[i]), int(pr[i])
            if not 0 <= slot < nslots or self._flags[slot] & (_LIVE | _DEAD) != _LIVE:
                raise AgentNotFoundError(f"<slot {slot}>")
            self._sendable(slot)
            if not 0 <= e < len(self._machines[self._mach[slot]].events):
                raise UnknownEventError(self._machines[self._mach[slot]].name, e)
            if not 0 <= p <= 3:
                raise InvalidArgumentError(f"priority must be 0..3, got {p}")
        self._queue_checked(sl.tolist(), ev.tolist(), pr.tolist(), payload_list)

    def _queue_checked(
        self, slots: list[int], events: list[int], lanes: list[int], payloads: list[Any] | None
    ) -> None:
        """Queue valid messages, unless one would overflow a REJECT mailbox (then none)."""
        bounded: dict[int, int] = {}
        for slot in slots:
            if self._flags[slot] & _REJECT:
                bounded[slot] = bounded.get(slot, 0) + 1
        for slot, k in bounded.items():
            if self._count[slot] + k > self._cap[slot]:
                first = slots.index(slot)
                payload = None if payloads is None else payloads[first]
                self._overflowed(slot, events[first], payload, "reject")
                raise MailboxFullError(self._ids[slot], self._cap[slot])
        if self._tenanted:
            self._check_tenant_room(slots)
        self._status_time()  # one clock reading stamps every agent this batch wakes
        self._now_fresh = True
        try:
            for i, slot in enumerate(slots):
                payload = None if payloads is None else payloads[i]
                self._enqueue(slot, events[i], payload, lanes[i], 0)
        finally:
            self._now_fresh = False

    def _check_tenant_room(self, slots: list[int]) -> None:
        """Refuse a batch that would take a tenant past ``max_queued`` (before any is
        queued)."""
        per: dict[int, int] = {}
        for slot in slots:
            t = self._tof[slot]
            per[t] = per.get(t, 0) + 1
        for t, k in per.items():
            tenant = cast(_Tenant, self._tenants[t])
            if tenant.max_queued and tenant.queued + k > tenant.max_queued:
                tenant.rejected += k
                raise TenantLimitError(
                    tenant.name,
                    "max_queued",
                    tenant.max_queued,
                    f"a batch of {k} refused",
                    tenant.wait,
                )

    def _slot_of(self, agent_id: Any) -> int:
        try:
            return self._index[agent_id]
        except KeyError:
            if self.on_missing is not None and self.on_missing(agent_id):
                slot = self._index.get(agent_id)
                if slot is not None:
                    return slot
            raise AgentNotFoundError(agent_id) from None
        except Exception as exc:  # unhashable, or a hostile __hash__/__eq__
            raise AgentNotFoundError(agent_id) from exc

    def _check(self, slot: int, gen: int) -> int:
        if self._gen[slot] != gen or not self._flags[slot] & _LIVE:
            raise AgentStoppedError("(stale reference)", "was terminated")
        return slot

    def _sendable(self, slot: int) -> int:
        if self._flags[slot] & _STOPPED:
            raise AgentStoppedError(self._ids[slot], "is stopped")
        return slot

    def _event_code(self, slot: int, event: str | int) -> int:
        machine = self._machines[self._mach[slot]]
        if isinstance(event, str):  # a name (a StrEnum member too)
            code = machine.event_index.get(event)
            if code is not None:
                return code
        elif not isinstance(event, bool):
            try:
                code = operator.index(event)  # ints, IntEnums, numpy ints
            except TypeError:
                code = -1
            if 0 <= code < len(machine.events):
                return code
        raise UnknownEventError(machine.name, event)

    @staticmethod
    def _lane(priority: int) -> int:
        return lane(priority)

    def _enqueue(self, slot: int, ev: int, payload: Any, lane: int, request: int) -> None:
        self._flags[slot] |= _DIRTY  # (even if nothing is queued in the end: a spare record)
        if self._tenanted:
            t = self._tof[slot]
            tenant = cast(_Tenant, self._tenants[t])
            if tenant.max_queued and tenant.queued >= tenant.max_queued:
                tenant.rejected += 1
                raise TenantLimitError(
                    tenant.name, "max_queued", tenant.max_queued, "send refused", tenant.wait
                )
            if tenant.rate and (
                tenant.delayed_q or not self._token(tenant, self._stamp_time(slot))
            ):
                # over its rate: held back in order, released by release_delayed
                tenant.delayed_q.append(
                    (
                        slot,
                        self._gen[slot],
                        self._ids[slot],
                        self._mach[slot],
                        ev,
                        payload,
                        lane,
                        request,
                    )
                )
                tenant.queued += 1
                tenant.delayed += 1
                if len(tenant.delayed_q) == 1 and self.on_delay is not None:
                    self.on_delay(t, self._due(tenant))
                return
        self._push(slot, ev, payload, lane, request)

    def _push(self, slot: int, ev: int, payload: Any, lane: int, request: int) -> None:
        """Queue a message past the tenant's limits: the mailbox's capacity and policy."""
        cap = self._cap[slot]
        if cap and self._count[slot] >= cap:
            agent_id = self._ids[slot]
            if self._flags[slot] & _REJECT:
                self._overflowed(slot, ev, payload, "reject")
                raise MailboxFullError(agent_id, cap)
            box = self._box[slot]
            assert box is not None
            victim = next((lo for lo in range(lane + 1) if box[lo]), -1)
            self._dropped[slot] += 1
            machine = self._machines[self._mach[slot]]
            if victim < 0:  # everything queued outranks the newcomer: drop the newcomer
                self._drop(slot, machine, ev, payload, lane, request)
                return
            old_ev, old_payload, old_request, _ = box[victim].popleft()
            self._count[slot] -= 1
            if self._tenanted:
                cast(_Tenant, self._tenants[self._tof[slot]]).queued -= 1
            if not self._count[slot]:
                self._box[slot] = None
            gen = self._gen[slot]
            self._drop(slot, machine, old_ev, old_payload, victim, old_request)
            if self._gen[slot] != gen or self._flags[slot] & _STOPPED:
                # an on_overflow instrument terminated or stopped it: nothing is queued
                raise AgentStoppedError(agent_id, "was terminated or stopped while sending")
        box = self._box[slot]
        since = None
        if box is None:
            if not (slot in self._front or self._flags[slot] & (_ERROR | _STOPPED | _PAUSED)):
                since = self._stamp_time(slot)  # IDLE -> PROCESSING (before: it may run a clock)
            box = self._box[slot] = [deque(), deque(), deque(), deque()]
        stamp = 0
        if self.sample_every:
            self._enq_left -= 1
            if not self._enq_left:
                self._enq_left = self.sample_every
                stamp = time.perf_counter_ns()
        box[lane].append((ev, payload, request, stamp))
        self._count[slot] += 1
        if self._tenanted:
            cast(_Tenant, self._tenants[self._tof[slot]]).queued += 1
        if self.metrics_enabled and self._count[slot] > self._mx[slot]["high_water"]:
            self._mx[slot]["high_water"] = self._count[slot]
        if since is not None:
            self._since[slot] = since
        self._wake(slot)

    def _stamp_time(self, slot: int) -> float:
        """``_status_time()`` while sending to ``slot``: when it runs the clock, which can do
        anything, the agent must still be there, live and not stopped, after it."""
        if self._running or self._now_fresh or self.clock is None:
            return self.now
        agent_id, gen = self._ids[slot], self._gen[slot]
        now = self._status_time()
        if self._gen[slot] != gen or self._flags[slot] & (_LIVE | _STOPPED) != _LIVE:
            raise AgentStoppedError(
                agent_id, "was terminated or stopped while sending (by the clock)"
            )
        return now

    def _overflowed(self, slot: int, ev: int, payload: Any, policy: str) -> None:
        if self.on_overflow is not None:
            events = self._machines[self._mach[slot]].events
            self.on_overflow(self._ids[slot], events[ev], payload, policy)

    def _drop(
        self, slot: int, machine: Machine, ev: int, payload: Any, lane: int, request: int
    ) -> None:
        agent_id = self._ids[slot]
        self._overflowed(slot, ev, payload, "drop_oldest")
        self._dead_letter(agent_id, machine, ev, payload, lane, _DROPPED)
        if request:
            self._answer(request, False, MailboxFullError(agent_id, self._cap[slot]))

    def _dequeue(self, slot: int, sample: bool = True) -> Entry:
        """Take the next message from the lanes (not the front queue); a stamped message's
        wait is sampled unless it is being evicted (``sample=False``)."""
        box = self._box[slot]
        assert box is not None
        lane = 3
        while not box[lane]:
            lane -= 1
        ev, payload, request, stamp = box[lane].popleft()
        self._count[slot] -= 1
        if self._tenanted:
            cast(_Tenant, self._tenants[self._tof[slot]]).queued -= 1
        if not self._count[slot]:
            self._box[slot] = None
        if stamp and sample:
            self._sample(slot, 1, time.perf_counter_ns() - stamp)
        return ev, payload, lane, request

    def _sample(self, slot: int, which: int, ns: int) -> None:
        """Record one latency sample (0: step, 1: wait) in the runtime's ring and in the
        rings of the agent or its machine if they are tracked."""
        (self.step_ring, self.wait_ring)[which].append(ns)
        if self._tenanted:
            tenant_rings = cast(_Tenant, self._tenants[self._tof[slot]]).rings
            if tenant_rings is not None:
                tenant_rings[which].append(ns)
        if self._tracked:
            rings = self._tracked.get(slot)
            if rings is not None:
                rings[which].append(ns)
        if self._tracked_machines:
            rings = self._tracked_machines.get(self._mach[slot])
            if rings is not None:
                rings[which].append(ns)

    def _stamp(self, slot: int) -> None:
        """Record that the status shown changed now (IDLE <-> PROCESSING; not while it shows
        ERROR, PAUSED or STOPPED)."""
        if not self._flags[slot] & (_ERROR | _STOPPED | _PAUSED):
            self._since[slot] = self._status_time()

    # -- running -------------------------------------------------------------------------

    def run(self, limit: int = -1) -> int:
        """Process up to ``limit`` messages (all, if negative); return how many were taken.

        Raises:
            RuntimeBusyError: If called from inside a run (a handler).
        """
        if self._running:
            raise RuntimeBusyError("run() called from inside a run (from a handler?)")
        if self._tenanted:
            return self._run_fair(limit)
        self._running = True
        done = 0
        try:
            while self._ready and (limit < 0 or done < limit):
                slot = self._ready.popleft()
                if not self._runnable(slot):
                    continue
                budget = self._budget if limit < 0 else min(self._budget, limit - done)
                t0 = time.perf_counter_ns() if self.metrics_enabled else 0
                try:
                    done += self._turn(slot, budget)
                finally:
                    self._after_turn(slot, t0)
                if len(self._out_codes) >= self._out_limit:
                    self._flush()
        finally:
            self._running = False
        self._flush()
        return done

    def _run_fair(self, limit: int) -> int:
        """``run`` under tenancy: deficit round robin over the tenants with ready agents.

        Each round a tenant may take up to its quantum (weight x budget) messages, in turns
        of at most ``budget`` per agent, round robin over its own ready agents; what it
        leaves unused carries over while it stays backlogged. A tenant that becomes ready
        joins the end of the round, so it waits at most one round (the other tenants'
        quanta). ``self._cur`` keeps the tenant being served across runs, so a run that
        stops at ``limit`` resumes the same round.
        """
        self._running = True
        done = 0
        tenants = self._tenants
        try:
            while self._nready and (limit < 0 or done < limit):
                t = self._cur
                if t < 0:
                    t = self._cur = self._active.popleft()
                    tenant = cast(_Tenant, tenants[t])
                    tenant.deficit += tenant.quantum
                tenant = cast(_Tenant, tenants[t])
                if not tenant.ready:
                    self._idle_tenant(t, tenant)
                    continue
                if tenant.deficit <= 0:  # its turn in this round is over
                    self._cur = -1
                    self._active.append(t)
                    continue
                slot = tenant.ready.popleft()
                self._nready -= 1
                if not self._runnable(slot):
                    if not tenant.ready:  # none left: out of the round now, as after a turn
                        self._idle_tenant(t, tenant)  # (or it would stay current, ahead of
                    continue  # tenants that became ready since)
                budget = min(self._budget, tenant.deficit)
                if limit >= 0:
                    budget = min(budget, limit - done)
                t0 = time.perf_counter_ns() if self.metrics_enabled else 0
                try:
                    k = self._turn(slot, budget)
                    done += k
                    tenant.deficit -= k
                    tenant.served += k
                finally:
                    self._after_turn(slot, t0)
                if not tenant.ready:  # drained: its turn ends now, its deficit with it
                    self._idle_tenant(t, tenant)
                if len(self._out_codes) >= self._out_limit:
                    self._flush()
        finally:
            self._running = False
        self._flush()
        return done

    def _runnable(self, slot: int) -> bool:
        """A slot just popped from a ready queue may take a turn; else it is released (a
        terminated agent) or left off the queue (paused, stopped, in backoff)."""
        flags = self._flags[slot]
        if flags & _DEAD:
            self._release(slot)
            return False
        if flags & _HOLD:
            self._flags[slot] &= ~_QUEUED
            return False
        return True

    def _after_turn(self, slot: int, t0: int) -> None:
        """After a turn: its busy time, and back on the ready queue if mail is left."""
        if self.metrics_enabled:
            self._mx[slot]["busy_ns"] += time.perf_counter_ns() - t0
        flags = self._flags[slot] = self._flags[slot] | _DIRTY
        if flags & _DEAD:
            self._release(slot)
        elif (self._count[slot] or slot in self._front) and not flags & _HOLD:
            self._push_ready(slot)
        else:
            self._flags[slot] &= ~_QUEUED
            if not (self._count[slot] or slot in self._front):
                self._stamp(slot)

    def _idle_tenant(self, t: int, tenant: _Tenant) -> None:
        """End the turn of a tenant left with no ready agent: it leaves the round, and its
        unused deficit is forgotten (it joins the end of a round when mail comes)."""
        self._cur = -1
        tenant.active = False
        tenant.deficit = 0
        if tenant.dropped:  # its last dead agents are released
            self._tenants[t] = None

    def _turn(self, slot: int, budget: int) -> int:
        k = 0
        while k < budget:
            front = self._front.get(slot)
            if front:
                entry = front.popleft()
                if not front:
                    del self._front[slot]
                self._rflags = RECORD_FRONT
            elif self._count[slot]:
                entry = self._dequeue(slot)
            else:
                break
            k += 1
            try:
                self._step_sampled(slot, entry)
            finally:
                self._rflags = 0
            if self._flags[slot] & (_DEAD | _HOLD):
                break
        return k

    def _step_sampled(self, slot: int, entry: Entry) -> None:
        """Step one message, timing it if it is the Nth (``sample_every``)."""
        if self.sample_every:
            self._step_left -= 1
            if not self._step_left:
                self._step_left = self.sample_every
                t0 = time.perf_counter_ns()
                self._step(slot, *entry)
                self._sample(slot, 0, time.perf_counter_ns() - t0)
                return
        self._step(slot, *entry)

    def _step(self, slot: int, ev: int, payload: Any, lane: int, request: int) -> None:
        entry = self._entries[self._mach[slot]]
        s = self._state[slot]
        if self.on_step is not None:
            machine = entry.machine
            agent_id, gen = self._ids[slot], self._gen[slot]
            self.on_step(agent_id, machine.states[s], machine.events[ev])
            if self._gen[slot] != gen or self._flags[slot] & _STOPPED:
                # a before_step instrument terminated or stopped it: the message is not lost
                reason = DeadLetterReason.STOPPED if self._gen[slot] == gen else _TERMINATED
                self._dead_letter(agent_id, machine, ev, payload, lane, reason)
                if request:
                    self._answer(request, False, AgentStoppedError(agent_id, "was stopped"))
                return
        cell = s * entry.n_events + ev
        h = entry.handlers.item(cell)
        nxt = entry.next[cell]
        code = entry.out[cell]
        agent_id = self._ids[slot]
        if h < 0:
            if nxt < 0:
                if entry.ignore:
                    self._commit(slot, agent_id, s, s, ev, payload, lane, request, -1, None, None)
                    return
                machine = entry.machine
                err = InvalidTransitionError(machine.name, machine.states[s], machine.events[ev])
                self._fail(slot, agent_id, s, ev, payload, lane, request, _INVALID, err)
                return
            self._commit(slot, agent_id, s, nxt, ev, payload, lane, request, code, None, None)
            return
        machine = entry.machine
        gen = self._gen[slot]
        extras: tuple[Any, ...] | None = None
        prepared: Prepared | None = None
        self._step_tenant = self._tof[slot]
        tenant = cast(_Tenant, self._tenants[self._tof[slot]]) if self._tenanted else None
        deadline = 0 if tenant is None else tenant.deadline_ns
        t0 = time.perf_counter_ns() if deadline else 0
        policy = -1  # the tenant's deadline policy, once this step overran it
        try:
            result = machine.handlers[h](
                AgentContext(self, slot, gen), Event(machine.events[ev], payload, lane)
            )
            if deadline and time.perf_counter_ns() - t0 > deadline:
                policy = cast(_Tenant, tenant).policy
                self._overran(cast(_Tenant, tenant), agent_id, deadline, t0)
            if self._gen[slot] != gen:  # the handler terminated its own agent
                self.retired[0] += 1  # processed, by an agent that is gone
                if tenant is not None:
                    tenant.retired_processed += 1
                if request:
                    self._answer(request, False, AgentStoppedError(agent_id, "was terminated"))
                return
            if nxt < 0:
                nxt = s
            if result is not None:
                if type(result) is not Step:
                    raise TypeError(f"handler returned {result!r}; expected Step or None")
                if result.state is not None:
                    nxt = machine.state_code(result.state)
                if result.outputs is not None:
                    extras = tuple(result.outputs)
                if result.actions:
                    prepared = prepare(machine, result.actions)
                    if prepared.runtime and self.on_actions is None:
                        raise TypeError("timer and work actions need a Runtime")
                    if not self.work_enabled and any(type(a) is Work for a, _ in prepared.runtime):
                        raise RuntimeNotRunningError(
                            "Work actions need the runtime to run under open_runtime"
                        )
        except Exception as exc:
            wrapped = HandlerError(agent_id, machine.states[s], machine.events[ev], exc)
            self._fail(slot, agent_id, s, ev, payload, lane, request, _HANDLER_FAILED, wrapped)
            stoppable = self._gen[slot] == gen and not self._flags[slot] & _STOPPED
            if policy == DEADLINE_STOP and stoppable:
                self.stop(agent_id)
            return
        except BaseException as exc:  # KeyboardInterrupt and friends: record, then propagate
            self._fail(slot, agent_id, s, ev, payload, lane, request, _HANDLER_FAILED, exc)
            raise
        self._commit(slot, agent_id, s, nxt, ev, payload, lane, request, code, extras, prepared)

    @staticmethod
    def _overran(tenant: _Tenant, agent_id: Any, deadline: int, t0: int) -> None:
        """Count a handler step that overran its tenant's turn deadline; unless the tenant
        only reports overruns, fail its message (raise)."""
        took = time.perf_counter_ns() - t0
        tenant.overruns += 1
        if tenant.policy != DEADLINE_REPORT:
            raise TurnDeadlineError(agent_id, took / 1e9, deadline / 1e9)

    def _commit(
        self,
        slot: int,
        agent_id: Any,
        s: int,
        nxt: int,
        ev: int,
        payload: Any,
        lane: int,
        request: int,
        code: int,
        extras: tuple[Any, ...] | None,
        prepared: Prepared | None,
    ) -> None:
        """Apply a successful step: state, mailbox actions, outputs, counters, then the
        answer to a request, records, sends and runtime actions (which may re-enter)."""
        postpone = prepared is not None and prepared.postpone
        gen = self._gen[slot]
        if postpone:
            self._postponed.setdefault(slot, []).append((ev, payload, lane, request))
            if self.metrics_enabled:
                self._mx[slot]["postponed"] += 1
        self._state[slot] = nxt
        if nxt != s:
            self._epoch[slot] += 1
        if (prepared is not None and prepared.front) or (nxt != s and slot in self._postponed):
            self._replay(slot, [] if prepared is None else prepared.front, nxt != s)
        outputs = extras if extras is not None else (() if code < 0 else (self._values[code],))
        if self._sink is not None:
            step = int(self._processed[slot]) + 1
            if extras is None:
                if code >= 0:
                    self._out_slots.append(slot)
                    self._out_codes.append(code)
                    self._out_steps.append(step)
            else:
                for value in extras:
                    self._extras.append(value)
                    self._out_slots.append(slot)
                    self._out_codes.append(-len(self._extras))
                    self._out_steps.append(step)
        self._processed[slot] += 1
        if self._flags[slot] & _ERROR:
            self._flags[slot] &= ~_ERROR
            self._since[slot] = self.now
        old: tuple[Any, Any] | None = None  # the overwritten record's references: dropped last
        if self._rcap:
            i = self._rpos
            self._rec[i] = (slot, self._mach[slot], ev, s, nxt,
                            -2 if extras is not None else code, lane, self._rflags, self.now)
            old = self._rpay[i], self._rext[i]
            self._rpay[i] = payload
            self._rext[i] = extras
            self._rpos = i + 1 if i + 1 < self._rcap else 0
        self._rseq += 1
        del old  # (a __del__ may run any code: the ring is whole by now)
        if request and not postpone:
            if prepared is not None and prepared.reply is not None:
                self._answer(request, *prepared.reply)
            else:
                self._answer(request, True, outputs)
        if self.on_record is not None:
            machine = self._machines[self._mach[slot]]
            self.on_record(
                agent_id, machine.states[s], machine.events[ev], machine.states[nxt], outputs
            )
        if prepared is not None:  # a Reply with no request to answer goes nowhere
            for send in prepared.sends:
                self._deliver(send)
            # instruments and sends above may have terminated it: then its timers die with it
            if prepared.runtime and self._gen[slot] == gen:
                assert self.on_actions is not None
                self.on_actions(agent_id, slot, gen, prepared.runtime)

    def _replay(self, slot: int, inserted: list[tuple[int, Any, int]], replay: bool = True) -> None:
        """Front queue := inserted NextEvents, then postponed events (if ``replay``), then
        what was already in front."""
        items: list[Entry] = [(e, p, lane, 0) for e, p, lane in inserted]
        if replay:
            items += self._postponed.pop(slot, [])
        if not items:
            return
        front = self._front.get(slot)
        if front is None:
            if not self._count[slot]:
                self._stamp(slot)
            self._front[slot] = deque(items)
        else:
            front.extendleft(reversed(items))

    def _deliver(self, send: Send) -> None:
        """A ``Send`` action: queue it, or dead-letter it as UNDELIVERABLE."""
        if not self.deliver_sends:
            return
        router = self.router
        try:
            if self.route_all and router is not None and router(send):
                return
            if (
                router is not None
                and not self.route_all
                and send.agent_id not in self
                and router(send)
            ):
                return
            self.send_nowait(send.agent_id, send.event, send.payload, send.priority)
        except EngineError as exc:
            self.dead_letters.append(
                DeadLetter(
                    send.agent_id,
                    str(send.event),
                    send.payload,
                    as_priority(send.priority),
                    DeadLetterReason.UNDELIVERABLE,
                    exc,
                )
            )
            self.dead_letter_count += 1

    def _answer(self, request: int, ok: bool, value: Any) -> None:
        if self.on_request is not None:
            self.on_request(request, ok, value)

    def _fail(
        self,
        slot: int,
        agent_id: Any,
        state: int,
        ev: int,
        payload: Any,
        lane: int,
        request: int,
        reason: DeadLetterReason,
        error: BaseException,
    ) -> None:
        """Record a failed message: count it, flag ERROR (if still alive), dead-letter it,
        fail its request, and tell supervision."""
        machine = self._machines[self._mach[slot]]
        gen = self._gen[slot]
        alive = self._ids[slot] is agent_id and bool(self._flags[slot] & _LIVE)
        if alive:
            self._failed[slot] += 1
            self._last_error[slot] = error
            if not self._flags[slot] & _ERROR:
                self._flags[slot] |= _ERROR
                self._since[slot] = self.now
        else:  # terminated during its own step: counted with the retired agents
            self.retired[1] += 1
            if self._tenanted:  # (only a handler step can lose its agent: _step's)
                cast(_Tenant, self._tenants[self._step_tenant]).retired_failed += 1
        self._dead_letter(
            agent_id, machine, ev, payload, lane, reason, error, machine.states[state]
        )
        if request:
            self._answer(request, False, error)
        # a dead-letter instrument may have terminated it meanwhile
        if alive and self._gen[slot] == gen and self.on_failure is not None:
            self.on_failure(agent_id, slot, error)

    def _dead_letter(
        self,
        agent_id: Any,
        machine: Machine,
        ev: int,
        payload: Any,
        lane: int,
        reason: DeadLetterReason,
        error: BaseException | None = None,
        state: str | None = None,
    ) -> None:
        self.dead_letters.append(
            DeadLetter(
                agent_id, machine.events[ev], payload, _PRIORITIES[lane], reason, error, state
            )
        )
        self.dead_letter_count += 1

    def _flush(self) -> None:
        if not self._out_codes:
            return
        slots = np.array(self._out_slots, dtype=np.int32)
        ids = [self._ids[s] for s in self._out_slots]
        if self._out_retired:
            restore_ids(ids, self._out_slots, self._out_retired)
            self._out_retired = []
        batch = OutputBatch(
            ids,
            slots,
            np.array(self._out_codes, dtype=np.int32),
            self._values,
            self._extras,
            np.array(self._out_steps, dtype=np.int64),
        )
        self._out_slots, self._out_codes, self._out_steps, self._extras = [], [], [], []
        assert self._sink is not None
        self._sink(batch)

    # -- inspection ----------------------------------------------------------------------

    @property
    def ready(self) -> int:
        """Agents on the ready queue (with mail and not yet drained)."""
        return sum(1 for s in self._ready_slots() if not self._flags[s] & (_DEAD | _HOLD))

    def _ready_slots(self) -> list[int]:
        """The ready queue's slots in the order they will run (under tenancy: the tenant
        being served, then the others in round order; each tenant's own queue in order)."""
        if not self._tenanted:
            return list(self._ready)
        order = ([self._cur] if self._cur >= 0 else []) + list(self._active)
        return [s for t in order for s in cast(_Tenant, self._tenants[t]).ready]

    @property
    def has_ready(self) -> bool:
        """True if the ready queue is not empty (it may hold only agents that will turn out
        paused or terminated: ``run()`` then discards them). O(1), unlike ``ready``."""
        return bool(self._ready) or self._nready > 0

    @property
    def running(self) -> bool:
        """True while ``run()`` is on the stack."""
        return self._running

    @property
    def slot_count(self) -> int:
        """Slots in use or free (the length of the counter arrays)."""
        return len(self._ids)

    @property
    def processed(self) -> npt.NDArray[np.int64]:
        """Messages processed per slot (a view; index with ``AgentRef.slot``)."""
        return self._processed[: len(self._ids)]

    @property
    def failed(self) -> npt.NDArray[np.int64]:
        """Messages failed per slot (handler raised, or no transition)."""
        return self._failed[: len(self._ids)]

    @property
    def dropped(self) -> npt.NDArray[np.int64]:
        """Messages dropped per slot by a ``DROP_OLDEST`` mailbox."""
        return self._dropped[: len(self._ids)]

    def state(self, agent_id: Any) -> str:
        """Current state name of ``agent_id``."""
        return self._state_name(self._slot_of(agent_id))

    def _state_name(self, slot: int) -> str:
        return self._machines[self._mach[slot]].states[self._state[slot]]

    def status(self, agent_id: Any) -> AgentStatus:
        """Current status of ``agent_id``."""
        return self._status(self._slot_of(agent_id))

    def _status(self, slot: int) -> AgentStatus:
        flags = self._flags[slot]
        if flags & _STOPPED:
            return AgentStatus.STOPPED
        if flags & _ERROR:
            return AgentStatus.ERROR
        if flags & _PAUSED:
            return AgentStatus.PAUSED
        if self._count[slot] or slot in self._front:
            return AgentStatus.PROCESSING
        return AgentStatus.IDLE

    def status_since(self, agent_id: Any) -> float:
        """The ``now`` reading when the agent's status last changed."""
        return self._since[self._slot_of(agent_id)]

    @property
    def metrics(self) -> npt.NDArray[np.void]:
        """Per-slot ``METRICS_DTYPE`` records (busy_ns, high_water, postponed, restarts);
        empty unless the dispatcher was made with ``metrics=True``."""
        return self._mx[: len(self._ids)] if self.metrics_enabled else self._mx[:0]

    def depths(self) -> npt.NDArray[np.int32]:
        """Messages queued per slot now (front queue and lanes)."""
        out = np.array(self._count, dtype=np.int32)
        for slot, front in self._front.items():
            out[slot] += len(front)
        return out

    def states(self) -> npt.NDArray[np.int32]:
        """State index per slot (meaningful for live slots; see ``machine_indexes``)."""
        return np.array(self._state, dtype=np.int32)

    def machine_indexes(self) -> npt.NDArray[np.int32]:
        """Machine index per slot, -1 for free slots."""
        live = np.array([f & _LIVE for f in self._flags], dtype=bool)
        return np.where(live, np.array(self._mach, dtype=np.int32), -1).astype(np.int32)

    def statuses(self) -> npt.NDArray[np.int8]:
        """``AgentStatus`` value per slot now (as ``status``), -1 for free slots: one pass for
        readers that rank many agents (``engine.observe``'s dashboard)."""
        return np.array(
            [self._status(s) if f & _LIVE else -1 for s, f in enumerate(self._flags)],
            dtype=np.int8,
        )

    @property
    def machines(self) -> list[Machine]:
        """Registered machines, by machine index."""
        return list(self._machines)

    def last_error(self, agent_id: Any) -> BaseException | None:
        """The error of the agent's last failed message (kept until it is terminated)."""
        return self._last_error.get(self._slot_of(agent_id))

    def track(self, agent_id: Any) -> tuple[LatencyRing, LatencyRing]:
        """Also keep this agent's sampled (step, wait) latencies in rings of its own."""
        slot = self._slot_of(agent_id)
        rings = self._tracked.get(slot)
        if rings is None:
            rings = self._tracked[slot] = (
                LatencyRing(self._ring_size),
                LatencyRing(self._ring_size),
            )
        return rings

    def track_machine(self, machine: Machine) -> tuple[LatencyRing, LatencyRing]:
        """Also keep the sampled (step, wait) latencies of this machine's agents apart."""
        m = self.register(machine)
        rings = self._tracked_machines.get(m)
        if rings is None:
            rings = self._tracked_machines[m] = (
                LatencyRing(self._ring_size),
                LatencyRing(self._ring_size),
            )
        return rings

    def fire(
        self,
        slot: int,
        gen: int,
        guard: int,
        guard_value: int,
        event: int,
        payload: Any,
        lane: int,
    ) -> int:
        """Deliver a timer's ``event`` (a valid code) to ``slot`` if it still holds generation
        ``gen`` and the guard holds (1: state changes, 2: events taken, equal to
        ``guard_value``); return 1 if queued, 0 if the timer is stale.

        Raises:
            AgentStoppedError: The agent is stopped.
            MailboxFullError: Its bounded mailbox rejects the message.
        """
        if not 0 <= slot < len(self._ids):
            return 0
        if self._gen[slot] != gen or not self._flags[slot] & _LIVE:
            return 0
        self._flags[slot] |= _DIRTY  # the timer is gone, whatever happens next
        if guard == 1 and guard_value != self._epoch[slot]:
            return 0
        if guard == 2 and guard_value != self._processed[slot] + self._failed[slot]:
            return 0
        self._enqueue(self._sendable(slot), event, payload, lane, 0)
        return 1

    def timer_guard(self, slot: int) -> tuple[int, int, int]:
        """(generation, state changes, events taken) of a slot: what a timer checks at firing."""
        return self._gen[slot], self._epoch[slot], int(self._processed[slot] + self._failed[slot])

    def machine(self, agent_id: Any) -> Machine:
        """The machine of ``agent_id``."""
        return self._machines[self._mach[self._slot_of(agent_id)]]

    def data(self, agent_id: Any) -> Any:
        """The data object of ``agent_id``."""
        return self._data[self._slot_of(agent_id)]

    def depth(self, agent_id: Any) -> int:
        """Messages queued for ``agent_id`` (front queue and lanes; not postponed ones)."""
        slot = self._slot_of(agent_id)
        return self._count[slot] + len(self._front.get(slot, ()))

    def queued(self, agent_id: Any) -> list[tuple[Priority, str, Any]]:
        """Queued messages of ``agent_id`` as ``(priority, event, payload)``, in process order."""
        slot = self._slot_of(agent_id)
        events = self._machines[self._mach[slot]].events
        out = [(_PRIORITIES[lane], events[ev], p) for ev, p, lane, _ in self._front.get(slot, ())]
        box = self._box[slot]
        if box is not None:
            out += [
                (_PRIORITIES[lane], events[ev], payload)
                for lane in (3, 2, 1, 0)
                for ev, payload, _, _ in box[lane]
            ]
        return out

    def postponed(self, agent_id: Any) -> list[tuple[Priority, str, Any]]:
        """Postponed messages of ``agent_id``, oldest first."""
        slot = self._slot_of(agent_id)
        events = self._machines[self._mach[slot]].events
        return [
            (_PRIORITIES[lane], events[ev], p) for ev, p, lane, _ in self._postponed.get(slot, ())
        ]

    # -- export and load (snapshots: engine.store) --------------------------------------

    def export(self, agent_id: Any) -> dict[str, Any]:
        """Everything the dispatcher holds for ``agent_id``, as plain data: its id, machine
        and data, its state code,
        state-change count (``epoch``), status stamp, counters, mailbox settings, the
        ``paused``/``stopped``/``error``/``backoff`` flags, and its mail as
        ``(event code, payload, lane)`` lists: the front queue, the lanes in processing order
        (highest lane first, FIFO within one) and the postponed list. Request ids are not
        kept (a request belongs to the process that is waiting for it)."""
        slot = self._slot_of(agent_id)
        flags = self._flags[slot]
        mail: list[tuple[int, Any, int]] = []
        box = self._box[slot]
        if box is not None:
            for lane_ in (3, 2, 1, 0):
                mail += [(ev, p, lane_) for ev, p, _, _ in box[lane_]]
        return {
            "id": self._ids[slot],
            "machine": self._machines[self._mach[slot]],
            "data": self._data[slot],
            "state": self._state[slot],
            "epoch": self._epoch[slot],
            "since": self._since[slot],
            "processed": int(self._processed[slot]),
            "failed": int(self._failed[slot]),
            "dropped": int(self._dropped[slot]),
            "capacity": self._cap[slot],
            "policy": OverflowPolicy.DROP_OLDEST if flags & _DROP_OLDEST else OverflowPolicy.REJECT,
            "paused": bool(flags & _PAUSED),
            "stopped": bool(flags & _STOPPED),
            "error": bool(flags & _ERROR),
            "backoff": bool(flags & _BACKOFF),
            "front": [(e, p, lane_) for e, p, lane_, _ in self._front.get(slot, ())],
            "mail": mail,
            "postponed": [(e, p, lane_) for e, p, lane_, _ in self._postponed.get(slot, ())],
        }

    def ready_order(self) -> list[Any]:
        """Ids of the agents on the ready queue, in the order they will run."""
        return [self._ids[s] for s in self._ready_slots() if self._flags[s] & _LIVE]

    def wake(self, agent_id: Any) -> None:
        """Put an agent with mail on the ready queue (if it may run and is not on it)."""
        self._wake(self._slot_of(agent_id))

    def touch(self, agent_id: Any) -> None:
        """Mark an agent changed (for ``take_dirty``): for changes made outside the
        dispatcher, such as its timers."""
        self._flags[self._slot_of(agent_id)] |= _DIRTY

    # -- transition records --------------------------------------------------------------

    def record(self, capacity: int) -> None:
        """Keep the last ``capacity`` transition records (0: keep none, and drop the ring).

        Records are numbered by ``record_seq`` whether they are kept or not, so a reader can
        always tell what it missed. A new capacity starts an empty ring.
        """
        if capacity < 0:
            raise InvalidArgumentError("capacity must be >= 0")
        if capacity == self._rcap:
            return
        self._rcap = 0
        self._rgone.clear()
        self._rpay, self._rext = [], []  # (references dropped here)
        self._rec = np.zeros(capacity, dtype=RECORD_DTYPE)
        self._rpay = [None] * capacity
        self._rext = [None] * capacity
        self._rpos = 0
        self._rstart = self._rseq
        self._rcap = capacity

    @property
    def recording(self) -> int:
        """Records the ring keeps (0: not recording)."""
        return self._rcap

    @property
    def record_seq(self) -> int:
        """Records ever made: the sequence number of the next one."""
        return self._rseq

    @property
    def record_floor(self) -> int:
        """Sequence number of the oldest record kept (``record_seq`` when none is)."""
        return max(self._rstart, self._rseq - self._rcap) if self._rcap else self._rseq

    def _forget_records(self) -> None:
        """Drop terminations older than every record kept: no record needs their ids."""
        floor, gone = self.record_floor, self._rgone
        while gone and gone[0][0] <= floor:
            gone.popleft()
        if len(gone) > max(1024, self._rcap):  # agents hibernated and woken, few steps made
            kept = set(self._rec["slot"][: min(self._rcap, self._rseq - self._rstart)].tolist())
            live = [entry for entry in gone if entry[1] in kept]
            gone.clear()
            gone.extend(live)

    @property
    def record_gone(self) -> int:
        """Terminations the records kept still need (ids of agents gone since): while there
        are none, a record's agent is its slot's agent now."""
        self._forget_records()
        return len(self._rgone)

    def read_records(
        self, seq: int, limit: int
    ) -> tuple[int, np.ndarray[Any, Any], list[Any], list[Any], list[Any]]:
        """Records from ``seq`` on, at most ``limit``: ``(first, rows, payloads, extras, ids)``.

        ``first`` is the sequence number of ``rows[0]`` (above ``seq`` when records from
        ``seq`` were not kept: the reader missed ``first - seq``); ``rows`` is a copy
        (``RECORD_DTYPE``); ``payloads``, ``extras`` (a handler's outputs or None) and ``ids``
        (the agent of each record, also of agents terminated since) are lists.
        """
        first = max(seq, self.record_floor)
        n = max(0, min(limit, self._rseq - first))
        if n == 0:
            return first, np.empty(0, dtype=RECORD_DTYPE), [], [], []
        cap = self._rcap
        at = (self._rpos - (self._rseq - first)) % cap
        index = (np.arange(n) + at) % cap
        rows = self._rec[index]
        pay, ext = self._rpay, self._rext
        positions = index.tolist()
        payloads = [pay[i] for i in positions]
        extras = [ext[i] for i in positions]
        ids = [self._ids[slot] for slot in rows["slot"].tolist()]
        self._forget_records()
        if self._rgone:
            resolve_gone(ids, rows["slot"], first, self._rgone)
        return first, rows, payloads, extras, ids

    def take_dirty(self) -> npt.NDArray[np.int32]:
        """Slots (an int32 array, ascending) of the live agents changed since the last call:
        spawned, sent to (even if refused), stepped, paused, resumed, stopped, restarted, a
        timer fired, or ``touch``ed. Clears the marks: one pass over the slots."""
        flags = self._flags
        out = []
        for slot, f in enumerate(flags):
            if f & _DIRTY:
                flags[slot] = f & ~_DIRTY
                if f & _LIVE and not f & _DEAD:
                    out.append(slot)
        return np.array(out, dtype=np.int32)

    def idle_since(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float64]]:
        """``(slots, since)``: the live agents with nothing queued, front or postponed, nor
        held back by their tenant's rate (what may hibernate), and the ``now`` reading when
        each last changed status: int32 and float64 arrays, in slot order."""
        held = self.held_slots()
        slots = [
            slot
            for slot, f in enumerate(self._flags)
            if f & _LIVE
            and not f & (_DEAD | _QUEUED)
            and not self._count[slot]
            and slot not in self._front
            and slot not in self._postponed
            and slot not in held
        ]
        since = [self._since[slot] for slot in slots]
        return np.array(slots, dtype=np.int32), np.array(since, dtype=np.float64)

    def export_plain(self, slots: Any) -> tuple[list[Any], ...]:
        """For the live agents in ``slots`` (an int32 array) that hold nothing but counters
        (no mail, front or postponed queue; not paused, stopped, in error or backoff; nothing
        dropped), what ``export`` would say, as columns: ``(positions, ids, machines, data,
        states, epochs, processed, failed, capacities, drop_oldest)``, lists indexed alike;
        ``positions`` are their places in ``slots``. Others are left to ``export``."""
        cols: tuple[list[Any], ...] = tuple([] for _ in range(10))
        pos, ids, machs, data, states, epochs, processed, failed, caps, drop = cols
        busy = _DEAD | _HOLD | _ERROR
        for i, slot in enumerate(np.asarray(slots, dtype=np.int32).tolist()):
            if not 0 <= slot < len(self._ids):
                continue
            f = self._flags[slot]
            if (
                not f & _LIVE
                or f & busy
                or self._count[slot]
                or slot in self._front
                or slot in self._postponed
                or self._dropped[slot]
            ):
                continue
            pos.append(i)
            ids.append(self._ids[slot])
            machs.append(self._machines[self._mach[slot]])
            data.append(self._data[slot])
            states.append(self._state[slot])
            epochs.append(self._epoch[slot])
            processed.append(int(self._processed[slot]))
            failed.append(int(self._failed[slot]))
            caps.append(self._cap[slot])
            drop.append(bool(f & _DROP_OLDEST))
        return cols

    # -- tenants -------------------------------------------------------------------------

    @property
    def tenanted(self) -> bool:
        """True once ``set_tenant`` was called: ``run()`` schedules tenants fairly."""
        return self._tenanted

    def set_tenant(
        self,
        index: int,
        name: Any,
        *,
        quantum: int,
        max_queued: int = 0,
        wait: bool = False,
        rate: float = 0.0,
        burst: float = 0.0,
        deadline_ns: int = 0,
        policy: int = DEADLINE_REPORT,
        count: bool = False,
    ) -> None:
        """Create tenant ``index`` or change it (the runtime checks the values and keeps the
        names). The first call turns fair scheduling on for good: every agent so far is in
        tenant 0. A new quantum counts from the tenant's next round; limits from the next
        message. ``count``: keep its queued count as mail comes and goes (the twin always
        does; the compiled path only when asked, or with ``max_queued``)."""
        if not (type(index) is int and 0 <= index < MAX_TENANTS):
            raise InvalidArgumentError(f"tenant index must be 0..{MAX_TENANTS - 1}: {index!r}")
        quantum, max_queued, rate, burst = int(quantum), int(max_queued), float(rate), float(burst)
        deadline_ns, policy = int(deadline_ns), int(policy)
        if (
            quantum < 1
            or max_queued < 0
            or not 0.0 <= rate < math.inf
            or not 0.0 <= burst < math.inf
            or deadline_ns < 0
            or not DEADLINE_REPORT <= policy <= DEADLINE_STOP
        ):
            raise InvalidArgumentError("bad tenant settings (see engine.Limits)")
        if not self._tenanted:
            self._enable_tenants()
        while len(self._tenants) <= index:
            self._tenants.append(None)
        tenant = self._tenants[index]
        if tenant is None:
            tenant = self._tenants[index] = _Tenant(name)
            tenant.last = self._status_time()
        elif tenant.dropped:
            raise InvalidArgumentError(f"tenant index {index} is still in use")
        tenant.name = name
        tenant.quantum = max(1, int(quantum))
        tenant.max_queued = int(max_queued)
        tenant.wait = bool(wait)
        if rate != tenant.rate or burst != tenant.burst:
            tenant.rate, tenant.burst = float(rate), float(burst)
            tenant.tokens = tenant.burst  # a changed bucket starts full
            tenant.last = self._status_time()
        tenant.deadline_ns = int(deadline_ns)
        tenant.policy = int(policy)
        if self.sample_every and tenant.rings is None:
            tenant.rings = (LatencyRing(self._ring_size), LatencyRing(self._ring_size))
        if tenant.rate and tenant.delayed_q and self.on_delay is not None:
            self.on_delay(index, self._due(tenant))  # the new rate may release them sooner

    def _enable_tenants(self) -> None:
        default = _Tenant("default")
        default.quantum = self._budget  # weight 1
        if self.sample_every:
            default.rings = (LatencyRing(self._ring_size), LatencyRing(self._ring_size))
        default.agents = len(self._index)
        default.retired_processed, default.retired_failed = self.retired[0], self.retired[1]
        default.queued = sum(self._count)
        self._tenants = [default]
        self._tenanted = True
        self._nready = len(self._ready)
        default.ready, self._ready = self._ready, deque()
        if default.ready:
            default.active = True
            self._active.append(0)

    def free_tenant_index(self) -> int:
        """The lowest index ``set_tenant`` may create a tenant at (a removed tenant's index
        stays taken while dead agents of it wait on its ready queue)."""
        for i in range(1, len(self._tenants)):
            if self._tenants[i] is None:
                return i
        return max(1, len(self._tenants))

    def drop_tenant(self, index: int) -> int:
        """Remove a tenant that has no live agents (the runtime terminates them first); the
        messages its rate still holds back are dead-lettered. Returns how many."""
        tenant = self._tenant(index)
        if index == 0:
            raise InvalidArgumentError("the default tenant cannot be removed")
        if tenant.agents:
            raise InvalidArgumentError(f"tenant {brief(tenant.name)} still has agents")
        n = self._drop_delayed(tenant)
        if tenant.agents:  # a dead-letter hook spawned one meanwhile
            raise InvalidArgumentError(f"tenant {brief(tenant.name)} still has agents")
        if tenant.active:  # dead slots of it are still queued: keep the index until then
            tenant.dropped = True
        else:
            self._tenants[index] = None
        return n

    def _tenant(self, index: int) -> _Tenant:
        tenant = (
            self._tenants[index] if type(index) is int and 0 <= index < len(self._tenants) else None
        )
        if tenant is None or tenant.dropped:
            raise InvalidArgumentError(f"no tenant with index {brief(index)}")
        return tenant

    def tenant_of(self, agent_id: Any) -> int:
        """The tenant index of a live agent."""
        return self._tof[self._slot_of(agent_id)]

    def tenant_agents(self, index: int) -> list[Any]:
        """Ids of the live agents of tenant ``index``, in slot order."""
        return [
            self._ids[s]
            for s, t in enumerate(self._tof)
            if t == index and self._flags[s] & (_LIVE | _DEAD) == _LIVE
        ]

    def tenant_indexes(self) -> npt.NDArray[np.uint16]:
        """The tenant index per slot (zeros until tenants are set; stale for free slots)."""
        return np.array(self._tof, dtype=np.uint16)

    def tenant_table(self) -> npt.NDArray[np.void]:
        """One ``TENANT_DTYPE`` row per tenant index (empty until tenants are set)."""
        out = np.zeros(len(self._tenants), dtype=TENANT_DTYPE)
        for i, tenant in enumerate(self._tenants):
            if tenant is None:
                continue
            out[i] = (
                tenant.agents,
                tenant.queued,
                len(tenant.delayed_q),
                tenant.delayed,
                tenant.rejected,
                tenant.overruns,
                tenant.retired_processed,
                tenant.retired_failed,
                len(tenant.ready),
                tenant.quantum,
                tenant.deficit,
                tenant.served,
            )
        return out

    def tenant_load(self, index: int) -> tuple[int, int]:
        """``(live agents, queued messages)`` of tenant ``index``."""
        tenant = self._tenant(index)
        return tenant.agents, tenant.queued

    def held_slots(self) -> set[int]:
        """Slots of the live agents that have messages held back by their tenant's rate."""
        return {
            entry[0]
            for tenant in self._tenants
            if tenant is not None
            for entry in tenant.delayed_q
            if self._gen[entry[0]] == entry[1]
        }

    def tenant_held(self, index: int) -> tuple[int, int]:
        """``(messages its rate ever held back, held back now)`` for tenant ``index``."""
        tenant = self._tenant(index)
        return tenant.delayed, len(tenant.delayed_q)

    def tenant_retire(self, index: int, processed: int, failed: int) -> None:
        """Add to the tenant's counts of terminated agents (negative: take away; hibernation
        moves a sleeping agent's counts out, and they come back with it)."""
        tenant = self._tenant(index)
        tenant.retired_processed += processed
        tenant.retired_failed += failed

    def tenant_rings(self, index: int) -> tuple[LatencyRing, LatencyRing] | None:
        """The tenant's (step, wait) latency rings, if sampling is on."""
        return self._tenant(index).rings

    def tenant_overrun(self, index: int) -> None:
        """Count an overrun the runtime saw (a ``Work`` task past the deadline)."""
        self._tenant(index).overruns += 1

    def _token(self, tenant: _Tenant, now: float) -> bool:
        """Take one token from the tenant's bucket, refilled for the time since the last."""
        if now > tenant.last:
            tenant.tokens = min(tenant.burst, tenant.tokens + (now - tenant.last) * tenant.rate)
            tenant.last = now
        if tenant.tokens >= _WHOLE:  # (a refill at the due time may fall short by an ulp)
            tenant.tokens = max(0.0, tenant.tokens - 1.0)
            return True
        return False

    @staticmethod
    def _due(tenant: _Tenant) -> float:
        """When the bucket will hold a whole token."""
        return tenant.last + max(0.0, 1.0 - tenant.tokens) / tenant.rate

    def release_delayed(self, index: int) -> float:
        """Queue the messages a tenant's rate held back, in order, as far as its tokens
        allow; return when the next is due (clock seconds), or -1.0 when none is left.
        A message whose agent is gone or stopped meanwhile is dead-lettered, and one its
        agent's full mailbox refuses too (with the error)."""
        tenant = self._tenant(index)
        q = tenant.delayed_q
        while q:
            if tenant.rate and not self._token(tenant, self._status_time()):
                return self._due(tenant)
            slot, gen, agent_id, mach, ev, payload, lane_, request = q.popleft()
            tenant.queued -= 1
            error: EngineError | None = None
            if self._gen[slot] != gen or not self._flags[slot] & _LIVE:
                error = AgentStoppedError(agent_id, "was terminated")
            elif self._flags[slot] & _STOPPED:
                error = AgentStoppedError(agent_id, "is stopped")
            else:
                try:
                    self._push(slot, ev, payload, lane_, request)
                except (MailboxFullError, AgentStoppedError) as exc:
                    error = exc
            if error is not None:
                tenant.tokens += 1.0  # its token goes to the next one
                reason = DeadLetterReason.UNDELIVERABLE
                self._dead_letter(agent_id, self._machines[mach], ev, payload, lane_, reason, error)
                if request:
                    self._answer(request, False, error)
        return -1.0

    def _drop_delayed(self, tenant: _Tenant) -> int:
        n = 0
        while tenant.delayed_q:
            n += 1
            _, _, agent_id, mach, ev, payload, lane_, request = tenant.delayed_q.popleft()
            tenant.queued -= 1
            error = AgentStoppedError(agent_id, "was terminated with its tenant")
            self._dead_letter(
                agent_id, self._machines[mach], ev, payload, lane_, _TERMINATED, error
            )
            if request:
                self._answer(request, False, error)
        return n

    def load(self, agent_id: Any, saved: dict[str, Any], wake: bool = True) -> None:
        """Give a just-spawned agent what ``export`` returned (its mail bypasses capacity);
        everything is checked before anything changes. ``wake=False`` leaves it off the
        ready queue (``wake`` it later, to restore the queue's order)."""
        slot = self._slot_of(agent_id)
        machine = self._machines[self._mach[slot]]
        if self._count[slot] or slot in self._front or slot in self._postponed:
            raise InvalidArgumentError(f"agent {brief(agent_id)} already has mail")
        state = saved["state"]
        if not 0 <= state < len(machine.states):
            raise InvalidArgumentError(f"state {state!r} is not a state of this machine")
        for part in ("front", "mail", "postponed"):
            for ev, _, lane_ in saved[part]:
                if not (0 <= ev < len(machine.events) and 0 <= lane_ <= 3):
                    raise InvalidArgumentError(f"bad message ({ev!r}, lane {lane_!r}) in {part}")
        self._state[slot] = state
        self._epoch[slot] = saved["epoch"]
        self._since[slot] = saved["since"]
        self._processed[slot] = saved["processed"]
        self._failed[slot] = saved["failed"]
        self._dropped[slot] = saved["dropped"]
        if saved["mail"]:
            box = self._box[slot] = [deque(), deque(), deque(), deque()]
            for ev, payload, lane_ in saved["mail"]:
                box[lane_].append((ev, payload, 0, 0))
            self._count[slot] = len(saved["mail"])
            if self._tenanted:
                cast(_Tenant, self._tenants[self._tof[slot]]).queued += len(saved["mail"])
        if saved["front"]:
            self._front[slot] = deque((e, p, lane_, 0) for e, p, lane_ in saved["front"])
        if saved["postponed"]:
            self._postponed[slot] = [(e, p, lane_, 0) for e, p, lane_ in saved["postponed"]]
        self._flags[slot] |= (
            (_PAUSED if saved["paused"] else 0)
            | (_STOPPED if saved["stopped"] else 0)
            | (_ERROR if saved["error"] else 0)
            | (_BACKOFF if saved["backoff"] else 0)
        )
        if wake:
            self._wake(slot)


def _grow(arr: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
    new = np.zeros(n, dtype=arr.dtype)
    new[: len(arr)] = arr
    return new


def _as_list(items: Any) -> list[Any]:
    """``items`` as a list (numpy arrays through ``tolist``), refusing strings."""
    if type(items) is list:
        return items
    if isinstance(items, np.ndarray):
        if items.ndim != 1:
            raise InvalidArgumentError(f"expected a 1-d array, got shape {items.shape}")
        return list(items.tolist())
    if isinstance(items, str | bytes):
        raise InvalidArgumentError(f"expected a sequence, got {brief(items)}")
    return list(items)


def _payloads(payloads: Any, n: int) -> list[Any] | None:
    if payloads is None:
        return None
    out = _as_list(payloads)
    if len(out) != n:
        raise InvalidArgumentError(f"payloads has {len(out)} items for {n} messages")
    return out
