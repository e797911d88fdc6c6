"""Pure-Python twin of the compiled dispatcher (``_native/``): same API, same scheduling.

Theory of operation: agents live in *slots* (dense integers reused after termination, with a
generation counter so a stale ``AgentRef`` is detected). Each slot has a state, a machine, and
a mailbox of four FIFO lanes that exists only while it holds mail. A slot with mail is on the
*ready queue* exactly once. ``run()`` pops a ready slot, processes up to ``budget`` messages
from it (always the head of its highest non-empty lane), and puts it back at the end of the
queue if it still has mail. Outputs are buffered and handed to the sink in one batch per run
(or sooner when the buffer fills), between agent turns. Every message that is not processed
normally becomes a ``DeadLetter``.

The compiled module must behave identically: the same tests run against both.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Final, final

import numpy as np

from ._batch import batch_arrays
from ._exceptions import (
    AgentExistsError,
    AgentNotFoundError,
    AgentStoppedError,
    HandlerError,
    InvalidArgumentError,
    InvalidTransitionError,
    MailboxFullError,
    RuntimeBusyError,
    UnknownEventError,
)
from ._machine import Machine
from ._types import (
    AgentStatus,
    DeadLetter,
    DeadLetterReason,
    OutputBatch,
    OverflowPolicy,
    Priority,
    Step,
)

if TYPE_CHECKING:
    import numpy.typing as npt

IMPLEMENTATION: Final = "python"

_LIVE: Final = 1
_QUEUED: Final = 2
_DEAD: Final = 4  # terminated while on the ready queue; released when popped
_ERROR: Final = 8
_DROP_OLDEST: Final = 16
_PRIORITIES: Final = tuple(Priority)
_HANDLER_FAILED: Final = DeadLetterReason.HANDLER_FAILED
_INVALID: Final = DeadLetterReason.INVALID_TRANSITION
_DROPPED: Final = DeadLetterReason.DROPPED


@final
class Event:
    """An event as a handler sees it: ``name``, ``payload`` and ``priority``."""

    __slots__ = ("_lane", "name", "payload")

    def __init__(self, name: str, payload: Any = None, priority: int = Priority.NORMAL) -> None:
        self.name = name
        self.payload = payload
        self._lane = int(priority)

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
        d = self._d
        slot = d._check(self._slot, self._gen)
        return d._machines[d._mach[slot]].states[d._state[slot]]

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
        slot = d._check(self._slot, self._gen)
        d._enqueue(slot, d._event_code(slot, event), payload, d._lane(priority))

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
    """

    def __init__(
        self,
        *,
        sink: Callable[[OutputBatch], object] | None = None,
        dead_letters: deque[DeadLetter] | None = None,
        budget: int = 64,
        output_buffer: int = 65536,
    ) -> None:
        if budget < 1 or output_buffer < 1:
            raise InvalidArgumentError("budget and output_buffer must be positive")
        self._sink = sink
        self.dead_letters: deque[DeadLetter] = deque() if dead_letters is None else dead_letters
        self.dead_letter_count = 0
        self.retired = [0, 0, 0]
        """Processed, failed and dropped counts of terminated agents."""
        self._budget = budget
        self._out_limit = output_buffer
        self._running = False
        # machines
        self._machine_index: dict[int, int] = {}
        self._machines: list[Machine] = []
        self._entries: list[_MachineEntry] = []
        self._values: list[Hashable] = []
        self._value_codes: dict[Hashable, int] = {}
        # slots
        self._index: dict[Any, int] = {}
        self._ids: list[Any] = []
        self._data: list[Any] = []
        self._state: list[int] = []
        self._mach: list[int] = []
        self._flags: list[int] = []
        self._gen: list[int] = []
        self._cap: list[int] = []
        self._box: list[list[deque[tuple[int, Any]]] | None] = []
        self._count: list[int] = []
        self._free: list[int] = []
        self._processed = np.zeros(0, dtype=np.int64)
        self._failed = np.zeros(0, dtype=np.int64)
        self._dropped = np.zeros(0, dtype=np.int64)
        self._ready: deque[int] = deque()
        self._out_slots: list[int] = []
        self._out_codes: list[int] = []
        self._extras: list[Any] = []

    # -- machines ------------------------------------------------------------------------

    def register(self, machine: Machine) -> int:
        """Register ``machine`` (once) and return its index in this dispatcher."""
        key = id(machine)
        idx = self._machine_index.get(key)
        if idx is not None:
            return idx
        if not isinstance(machine, Machine):
            raise TypeError(f"expected an engine.Machine, got {type(machine)!r}")
        codes = [self._intern(v) for v in machine.outputs]
        out = [codes[c] if c >= 0 else -1 for c in machine.output_table.tolist()]
        idx = len(self._machines)
        self._machines.append(machine)
        self._entries.append(_MachineEntry(machine, out))
        self._machine_index[key] = idx
        return idx

    def _intern(self, value: Hashable) -> int:
        code = self._value_codes.get(value)
        if code is None:
            code = self._value_codes[value] = len(self._values)
            self._values.append(value)
        return code

    @property
    def output_values(self) -> Sequence[Hashable]:
        """Interned machine outputs, indexed by non-negative output codes."""
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
    ) -> AgentRef:
        """Create an agent in ``state`` (default: the machine's initial state)."""
        m = self.register(machine)
        s = machine.state_code(machine.initial if state is None else state)
        if not isinstance(capacity, int) or capacity < 0:
            raise InvalidArgumentError(
                f"capacity must be an int >= 0 (0 = unbounded): {capacity!r}"
            )
        try:
            policy = OverflowPolicy(policy)
        except ValueError:
            raise InvalidArgumentError(f"unknown overflow policy {policy!r}") from None
        try:
            hash(agent_id)
        except TypeError:
            raise InvalidArgumentError(f"agent id {agent_id!r} is not hashable") from None
        if agent_id in self._index:
            raise AgentExistsError(agent_id)
        flags = _LIVE | (_DROP_OLDEST if policy == OverflowPolicy.DROP_OLDEST else 0)
        if self._free:
            slot = self._free.pop()
            self._ids[slot] = agent_id
            self._data[slot] = data
            self._state[slot] = s
            self._mach[slot] = m
            self._flags[slot] = flags
            self._cap[slot] = capacity
            self._box[slot] = None
            self._count[slot] = 0
        else:
            slot = len(self._ids)
            self._ids.append(agent_id)
            self._data.append(data)
            self._state.append(s)
            self._mach.append(m)
            self._flags.append(flags)
            self._gen.append(0)
            self._cap.append(capacity)
            self._box.append(None)
            self._count.append(0)
            if slot >= len(self._processed):
                n = max(64, 2 * len(self._processed))
                self._processed = _grow(self._processed, n)
                self._failed = _grow(self._failed, n)
                self._dropped = _grow(self._dropped, n)
        self._processed[slot] = self._failed[slot] = self._dropped[slot] = 0
        self._index[agent_id] = slot
        return AgentRef(self, slot, self._gen[slot])

    def terminate(self, agent_id: Any) -> int:
        """Remove an agent; its queued mail becomes TERMINATED dead letters (returns how many)."""
        slot = self._slot_of(agent_id)
        machine = self._machines[self._mach[slot]]
        n = 0
        while self._count[slot]:
            lane, ev, payload = self._dequeue(slot)
            self._dead_letter(agent_id, machine, ev, payload, lane, DeadLetterReason.TERMINATED)
            n += 1
        del self._index[agent_id]
        self.retired[0] += int(self._processed[slot])
        self.retired[1] += int(self._failed[slot])
        self.retired[2] += int(self._dropped[slot])
        self._processed[slot] = self._failed[slot] = self._dropped[slot] = 0
        self._gen[slot] += 1
        self._ids[slot] = None
        self._data[slot] = None
        if self._flags[slot] & _QUEUED:
            self._flags[slot] = _DEAD | _QUEUED
        else:
            self._release(slot)
        return n

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
        except TypeError:
            return False

    def agent_ids(self) -> list[Any]:
        """Ids of live agents, in slot order."""
        return [self._ids[s] for s in sorted(self._index.values())]

    def slots(self, agent_ids: Sequence[Any]) -> npt.NDArray[np.int32]:
        """Return the slots of ``agent_ids`` as an int32 array (for ``send_many_slots``)."""
        return np.array([self._slot_of(a) for a in agent_ids], dtype=np.int32)

    # -- sending -------------------------------------------------------------------------

    def send_nowait(
        self, agent_id: Any, event: str | int, payload: Any = None, priority: int = 1
    ) -> None:
        """Queue ``event`` for ``agent_id`` at ``priority``; see ``Runtime.send_nowait``."""
        slot = self._slot_of(agent_id)
        self._enqueue(slot, self._event_code(slot, event), payload, self._lane(priority))

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
        if payloads is not None and len(payloads) != n:
            raise InvalidArgumentError(f"payloads has {len(payloads)} items for {n} messages")
        nslots = len(self._ids)
        bounded: dict[int, int] = {}
        for i in range(n):
            slot, e, p = int(sl[i]), int(ev[i]), int(pr[i])
            if not 0 <= slot < nslots or self._flags[slot] & (_LIVE | _DEAD) != _LIVE:
                raise AgentNotFoundError(f"<slot {slot}>")
            if not 0 <= e < len(self._machines[self._mach[slot]].events):
                raise UnknownEventError(self._machines[self._mach[slot]].name, e)
            if not 0 <= p <= 3:
                raise InvalidArgumentError(p)
            if self._cap[slot] and not self._flags[slot] & _DROP_OLDEST:
                bounded[slot] = bounded.get(slot, 0) + 1
        for slot, k in bounded.items():
            if self._count[slot] + k > self._cap[slot]:
                raise MailboxFullError(self._ids[slot], self._cap[slot])
        for i in range(n):
            self._enqueue(
                int(sl[i]), int(ev[i]), None if payloads is None else payloads[i], int(pr[i])
            )

    def _slot_of(self, agent_id: Any) -> int:
        try:
            return self._index[agent_id]
        except (KeyError, TypeError):
            raise AgentNotFoundError(agent_id) from None

    def _check(self, slot: int, gen: int) -> int:
        if self._gen[slot] != gen or not self._flags[slot] & _LIVE:
            raise AgentStoppedError("(stale reference)", "was terminated")
        return slot

    def _event_code(self, slot: int, event: str | int) -> int:
        machine = self._machines[self._mach[slot]]
        if type(event) is str:
            code = machine.event_index.get(event)
            if code is not None:
                return code
        elif isinstance(event, int) and 0 <= event < len(machine.events):
            return int(event)
        raise UnknownEventError(machine.name, event)

    @staticmethod
    def _lane(priority: int) -> int:
        if isinstance(priority, int) and 0 <= priority <= 3:
            return int(priority)
        raise InvalidArgumentError(priority)

    def _enqueue(self, slot: int, ev: int, payload: Any, lane: int) -> None:
        cap = self._cap[slot]
        if cap and self._count[slot] >= cap:
            if not self._flags[slot] & _DROP_OLDEST:
                raise MailboxFullError(self._ids[slot], cap)
            box = self._box[slot]
            assert box is not None
            victim = next((lo for lo in range(lane + 1) if box[lo]), -1)
            self._dropped[slot] += 1
            machine = self._machines[self._mach[slot]]
            if victim < 0:  # everything queued outranks the newcomer: drop the newcomer
                self._dead_letter(self._ids[slot], machine, ev, payload, lane, _DROPPED)
                return
            old_ev, old_payload = box[victim].popleft()
            self._count[slot] -= 1
            self._dead_letter(self._ids[slot], machine, old_ev, old_payload, victim, _DROPPED)
        box = self._box[slot]
        if box is None:
            box = self._box[slot] = [deque(), deque(), deque(), deque()]
        box[lane].append((ev, payload))
        self._count[slot] += 1
        if not self._flags[slot] & _QUEUED:
            self._flags[slot] |= _QUEUED
            self._ready.append(slot)

    def _dequeue(self, slot: int) -> tuple[int, int, Any]:
        box = self._box[slot]
        assert box is not None
        lane = 3
        while not box[lane]:
            lane -= 1
        ev, payload = box[lane].popleft()
        self._count[slot] -= 1
        if not self._count[slot]:
            self._box[slot] = None
        return lane, ev, payload

    # -- running -------------------------------------------------------------------------

    def run(self, limit: int = -1) -> int:
        """Process up to ``limit`` messages (all, if negative); return how many were taken.

        Raises:
            RuntimeBusyError: If called from inside a run (a handler).
        """
        if self._running:
            raise RuntimeBusyError("run() called from inside a run (from a handler?)")
        self._running = True
        done = 0
        try:
            while self._ready and (limit < 0 or done < limit):
                slot = self._ready.popleft()
                if self._flags[slot] & _DEAD:
                    self._release(slot)
                    continue
                budget = self._budget if limit < 0 else min(self._budget, limit - done)
                try:
                    done += self._turn(slot, budget)
                finally:
                    if self._flags[slot] & _DEAD:
                        self._release(slot)
                    elif self._count[slot]:
                        self._ready.append(slot)
                    else:
                        self._flags[slot] &= ~_QUEUED
                if len(self._out_codes) >= self._out_limit:
                    self._flush()
        finally:
            self._running = False
        self._flush()
        return done

    def _turn(self, slot: int, budget: int) -> int:
        k = 0
        while k < budget and self._count[slot]:
            lane, ev, payload = self._dequeue(slot)
            k += 1
            self._step(slot, ev, payload, lane)
            if self._flags[slot] & _DEAD:
                break
        return k

    def _step(self, slot: int, ev: int, payload: Any, lane: int) -> None:
        entry = self._entries[self._mach[slot]]
        s = self._state[slot]
        cell = s * entry.n_events + ev
        h = entry.handlers.item(cell)
        nxt = entry.next[cell]
        code = entry.out[cell]
        if h < 0:
            if nxt < 0:
                if entry.ignore:
                    self._processed[slot] += 1
                    self._flags[slot] &= ~_ERROR
                    return
                machine = entry.machine
                err = InvalidTransitionError(machine.name, machine.states[s], machine.events[ev])
                self._fail(slot, self._ids[slot], s, ev, payload, lane, _INVALID, err)
                return
            self._state[slot] = nxt
            if code >= 0 and self._sink is not None:
                self._out_slots.append(slot)
                self._out_codes.append(code)
            self._processed[slot] += 1
            self._flags[slot] &= ~_ERROR
            return
        machine = entry.machine
        gen = self._gen[slot]
        agent_id = self._ids[slot]
        try:
            result = machine.handlers[h](
                AgentContext(self, slot, gen), Event(machine.events[ev], payload, lane)
            )
            if self._gen[slot] != gen:  # the handler terminated its own agent
                return
            if nxt < 0:
                nxt = s
            extras: tuple[Any, ...] | None = None
            if result is not None:
                if type(result) is not Step:
                    raise TypeError(f"handler returned {result!r}; expected Step or None")
                if result.state is not None:
                    nxt = machine.state_code(result.state)
                if result.outputs is not None:
                    extras = tuple(result.outputs)
        except Exception as exc:
            wrapped = HandlerError(agent_id, machine.states[s], machine.events[ev], exc)
            self._fail(slot, agent_id, s, ev, payload, lane, _HANDLER_FAILED, wrapped)
            return
        except BaseException as exc:  # KeyboardInterrupt and friends: record, then propagate
            self._fail(slot, agent_id, s, ev, payload, lane, _HANDLER_FAILED, exc)
            raise
        self._state[slot] = nxt
        if self._sink is not None:
            if extras is None:
                if code >= 0:
                    self._out_slots.append(slot)
                    self._out_codes.append(code)
            else:
                for value in extras:
                    self._extras.append(value)
                    self._out_slots.append(slot)
                    self._out_codes.append(-len(self._extras))
        self._processed[slot] += 1
        self._flags[slot] &= ~_ERROR

    def _fail(
        self,
        slot: int,
        agent_id: Any,
        state: int,
        ev: int,
        payload: Any,
        lane: int,
        reason: DeadLetterReason,
        error: BaseException,
    ) -> None:
        """Record a failed message: count it, flag ERROR (if still alive), dead-letter it."""
        machine = self._machines[self._mach[slot]]
        self._failed[slot] += 1
        if self._ids[slot] is agent_id:
            self._flags[slot] |= _ERROR
        self._dead_letter(
            agent_id, machine, ev, payload, lane, reason, error, machine.states[state]
        )

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
        batch = OutputBatch(
            [self._ids[s] for s in self._out_slots],
            slots,
            np.array(self._out_codes, dtype=np.int32),
            self._values,
            self._extras,
        )
        self._out_slots, self._out_codes, self._extras = [], [], []
        assert self._sink is not None
        self._sink(batch)

    # -- inspection ----------------------------------------------------------------------

    @property
    def ready(self) -> int:
        """Agents on the ready queue (with mail and not yet drained)."""
        return sum(1 for s in self._ready if not self._flags[s] & _DEAD)

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
        if self._flags[slot] & _ERROR:
            return AgentStatus.ERROR
        return AgentStatus.PROCESSING if self._count[slot] else AgentStatus.IDLE

    def machine(self, agent_id: Any) -> Machine:
        """The machine of ``agent_id``."""
        return self._machines[self._mach[self._slot_of(agent_id)]]

    def data(self, agent_id: Any) -> Any:
        """The data object of ``agent_id``."""
        return self._data[self._slot_of(agent_id)]

    def depth(self, agent_id: Any) -> int:
        """Messages queued for ``agent_id``."""
        return self._count[self._slot_of(agent_id)]

    def queued(self, agent_id: Any) -> list[tuple[Priority, str, Any]]:
        """Queued messages of ``agent_id`` as ``(priority, event, payload)``, in process order."""
        slot = self._slot_of(agent_id)
        box = self._box[slot]
        if box is None:
            return []
        events = self._machines[self._mach[slot]].events
        return [
            (_PRIORITIES[lane], events[ev], payload)
            for lane in (3, 2, 1, 0)
            for ev, payload in box[lane]
        ]


def _grow(arr: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
    new = np.zeros(n, dtype=arr.dtype)
    new[: len(arr)] = arr
    return new
