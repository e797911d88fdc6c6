"""The synchronous runtime: an agent registry in front of one hot-path dispatcher.

``Runtime`` is a plain object with no event loop: a host drives it with ``send_nowait`` /
``send_many`` and ``run_until_idle``. Everything per message happens in the dispatcher
(compiled or twin); this layer resolves names, checks arguments once, and reports.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, final

import attrs
import numpy as np

from . import _hotpath
from ._exceptions import InvalidArgumentError
from ._machine import Machine
from ._types import AgentStatus, DeadLetter, OutputBatch, OverflowPolicy, Priority

if TYPE_CHECKING:
    import numpy.typing as npt


_ALL: Any = object()


@final
@attrs.frozen
class AgentStatistics:
    """Counters of one agent."""

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


@final
@attrs.frozen
class RuntimeStatistics:
    """Counters of the whole runtime."""

    agents: int
    """Live agents."""
    ready: int
    """Agents with mail waiting."""
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


@final
class Runtime:
    """Hosts agents and drives them synchronously.

    Args:
        on_output: Called with an ``OutputBatch`` after each drain (``None``: outputs are not
            collected, which is fastest).
        capacity: Default mailbox capacity for spawned agents (0 = unbounded).
        policy: Default overflow policy for bounded mailboxes.
        dead_letter_limit: Dead letters kept for reading (oldest age out; all are counted).
        budget: Messages an agent may process per turn before the next ready agent runs.
        implementation: ``"native"``, ``"python"`` or ``None`` for the live one.
    """

    def __init__(
        self,
        *,
        on_output: Callable[[OutputBatch], object] | None = None,
        capacity: int = 0,
        policy: OverflowPolicy = OverflowPolicy.REJECT,
        dead_letter_limit: int | None = 100_000,
        budget: int = 64,
        implementation: str | None = None,
    ) -> None:
        impl = _hotpath.implementation(implementation)
        self._impl = impl
        self.implementation: str = impl.IMPLEMENTATION
        """Which hot path this runtime runs on: ``"native"`` or ``"python"``."""
        self._dead: deque[DeadLetter] = deque(maxlen=dead_letter_limit)
        self._d = impl.Dispatcher(sink=on_output, dead_letters=self._dead, budget=budget)
        self._capacity = capacity
        self._policy = policy

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
    ) -> Any:
        """Create an agent running ``machine`` and return its ``AgentRef``.

        Raises:
            AgentExistsError: ``agent_id`` is taken.
            InvalidArgumentError: Unhashable id, bad capacity or policy.
            UnknownStateError: ``state`` is not a state of the machine.
        """
        return self._d.spawn(
            machine,
            agent_id,
            data,
            capacity=self._capacity if capacity is None else capacity,
            policy=self._policy if policy is None else policy,
            state=state,
        )

    def terminate(self, agent_id: Any) -> int:
        """Remove an agent. Its queued messages become ``TERMINATED`` dead letters.

        Returns:
            How many queued messages were dead-lettered.

        Raises:
            AgentNotFoundError: No such agent.
        """
        return int(self._d.terminate(agent_id))

    def ref(self, agent_id: Any) -> Any:
        """Return the ``AgentRef`` of a live agent (raises ``AgentNotFoundError``)."""
        return self._d.ref(agent_id)

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._d

    def agent_ids(self) -> list[Any]:
        """Ids of the live agents."""
        return list(self._d.agent_ids())

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
            UnknownEventError: The event is not one of the agent's machine.
            InvalidArgumentError: ``priority`` is not 0..3.
            MailboxFullError: The mailbox is bounded, full and rejects (a ``trio.WouldBlock``).
        """
        self._d.send_nowait(agent_id, event, payload, priority)

    def send_many(
        self,
        agent_ids: Iterable[Any],
        events: Any,
        priorities: Any = Priority.NORMAL,
        payloads: Sequence[Any] | None = None,
    ) -> None:
        """Queue many messages at once; all are validated before any is queued.

        ``events`` is a sequence of event names or an integer array of event codes;
        ``priorities`` is one priority or one per message.
        """
        ids = agent_ids if isinstance(agent_ids, np.ndarray) else list(agent_ids)
        slots = self._d.slots(ids)
        if not (isinstance(events, np.ndarray) and events.dtype.kind in "iu"):
            machines = [self._d.machine(a) for a in ids]
            events = np.array(
                [
                    m.event_code(e) if isinstance(e, str) else e
                    for m, e in zip(machines, events, strict=True)
                ],
                dtype=np.int32,
            )
        self._d.send_many_slots(slots, events, priorities, payloads)

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
        return self._d.slots(ids)  # type: ignore[no-any-return]

    # -- running -------------------------------------------------------------------------

    def run(self, limit: int = -1) -> int:
        """Process up to ``limit`` messages (negative: until idle); return how many."""
        if not isinstance(limit, int):
            raise InvalidArgumentError(f"limit must be an int, got {limit!r}")
        return int(self._d.run(limit))

    def run_until_idle(self) -> int:
        """Process messages until no agent has mail; return how many were processed."""
        total = 0
        while True:
            n = int(self._d.run(-1))
            total += n
            if n == 0:
                return total

    # -- inspection ----------------------------------------------------------------------

    def state(self, agent_id: Any) -> str:
        """Current state name of an agent."""
        return str(self._d.state(agent_id))

    def status(self, agent_id: Any) -> AgentStatus:
        """Current status of an agent (``AgentNotFoundError`` once terminated)."""
        return AgentStatus(self._d.status(agent_id))

    def data(self, agent_id: Any) -> Any:
        """The data object of an agent."""
        return self._d.data(agent_id)

    def machine(self, agent_id: Any) -> Machine:
        """The machine an agent runs."""
        return self._d.machine(agent_id)  # type: ignore[no-any-return]

    def queued(self, agent_id: Any) -> list[tuple[Priority, str, Any]]:
        """Queued messages of an agent as ``(priority, event, payload)``, in process order."""
        return list(self._d.queued(agent_id))

    def dead_letters(self) -> list[DeadLetter]:
        """Dead letters kept so far (oldest first), without removing them."""
        return list(self._dead)

    def take_dead_letters(self) -> list[DeadLetter]:
        """Remove and return the dead letters kept so far (oldest first)."""
        out = list(self._dead)
        self._dead.clear()
        return out

    @property
    def processed(self) -> npt.NDArray[np.int64]:
        """Processed count per slot (index with ``AgentRef.slot``); a read-only copy."""
        return np.array(self._d.processed)

    @property
    def failed(self) -> npt.NDArray[np.int64]:
        """Failed count per slot; a read-only copy."""
        return np.array(self._d.failed)

    def statistics(self, agent_id: Any = _ALL) -> Any:
        """Counters of one agent (``AgentStatistics``) or of the runtime (``RuntimeStatistics``)."""
        d = self._d
        if agent_id is not _ALL:
            slot = d.ref(agent_id).slot
            return AgentStatistics(
                agent_id,
                d.state(agent_id),
                AgentStatus(d.status(agent_id)),
                int(d.processed[slot]),
                int(d.failed[slot]),
                int(d.dropped[slot]),
                int(d.depth(agent_id)),
            )
        return RuntimeStatistics(
            len(d),
            int(d.ready),
            int(d.processed.sum()) + d.retired[0],
            int(d.failed.sum()) + d.retired[1],
            int(d.dropped.sum()) + d.retired[2],
            int(d.dead_letter_count),
            self.implementation,
        )
