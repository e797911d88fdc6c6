"""Small public value types shared by every layer: priorities, policies, statuses, records."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, final

import attrs

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class Priority(enum.IntEnum):
    """Mailbox lanes. Higher lanes are served first; FIFO inside a lane."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


def as_priority(value: Any) -> Priority:
    """``value`` as a ``Priority`` if it is one, else ``NORMAL`` (for records of bad input)."""
    try:
        return Priority(value)
    except (ValueError, TypeError):
        return Priority.NORMAL


class OverflowPolicy(enum.IntEnum):
    """What a bounded mailbox does when a message arrives and it is full."""

    REJECT = 0
    """``send_nowait`` raises ``MailboxFullError`` (a ``trio.WouldBlock``); nothing is queued."""
    DROP_OLDEST = 1
    """The oldest message of the lowest non-empty lane at or below the new message's priority
    is dropped to make room (or the new message, if every queued one outranks it). The drop is
    counted per agent and recorded as a dead letter."""


class AgentStatus(enum.IntEnum):
    """What an agent is doing now."""

    IDLE = 0
    """Alive with an empty mailbox."""
    PROCESSING = 1
    """Alive with mail queued (it is on the ready queue) or being stepped."""
    ERROR = 2
    """Its last message failed (handler raised or no transition); cleared by the next success
    or a restart (during a supervision backoff it stays ERROR, paused or not)."""
    STOPPED = 3
    """Takes no mail: stopped by supervision, or terminated (then only an ``AgentRef`` that
    outlived it can still see it)."""
    PAUSED = 4
    """Paused by ``Runtime.pause``: it receives mail (and its timers run) but is not stepped
    until ``resume``."""
    HIBERNATED = 5
    """Written to the store and out of memory (``Runtime.hibernate``); the next message,
    request, call naming it or due timer brings it back."""


class DeadLetterReason(enum.Enum):
    """Why a message was not processed normally."""

    HANDLER_FAILED = "handler_failed"
    """The slot's Python handler raised or returned something invalid."""
    INVALID_TRANSITION = "invalid_transition"
    """No transition for (state, event) and the machine says ``unhandled="error"``."""
    DROPPED = "dropped"
    """Evicted from a full ``DROP_OLDEST`` mailbox."""
    TERMINATED = "terminated"
    """Still queued (or postponed) when its agent was terminated."""
    STOPPED = "stopped"
    """Still queued when supervision stopped its agent."""
    UNDELIVERABLE = "undeliverable"
    """Sent by a ``Send`` action or a timer to an agent that cannot take it (gone, unknown
    event, full mailbox); ``agent_id`` is the intended recipient."""
    ROLLED_BACK = "rolled_back"
    """Still queued when its agent was rolled back to a snapshot with ``mail="dead_letter"``."""


@final
@attrs.frozen
class Step:
    """What a handler returns to override its slot's table row; ``None`` fields keep the row."""

    state: str | None = None
    """Next state name; ``None`` keeps the row's destination (or the current state if none)."""
    outputs: Sequence[Any] | None = None
    """Outputs to emit, in order; ``None`` keeps the row's output, ``()`` emits nothing."""
    actions: Sequence[Any] = ()
    """Actions (``Postpone``, ``NextEvent``, timers, ``Reply``, ``Send``, ``Work``), applied
    in order after the step commits; an invalid one fails the step instead."""


@final
@attrs.frozen
class DeadLetter:
    """A message that was not processed normally, kept with its reason and error."""

    agent_id: Any
    """The agent it was addressed to."""
    event: str
    """Event name."""
    payload: Any
    """The payload it carried."""
    priority: Priority
    """The lane it was queued in."""
    reason: DeadLetterReason
    """Why it is here."""
    error: BaseException | None = None
    """The error (``HandlerError`` wrapping the cause, ``InvalidTransitionError``), if any."""
    state: str | None = None
    """The agent's state when the message failed (``None`` if it never reached the machine)."""


@final
@attrs.frozen(eq=False)
class OutputBatch:
    """Outputs of one drain, delivered to the runtime's sink in one call.

    Iterating yields ``(agent_id, output)`` pairs in emission order. The columnar fields let a
    vectorised consumer skip Python objects: ``codes[i] >= 0`` indexes ``values``, a negative
    code ``-(k + 1)`` indexes ``extras`` (outputs a handler returned).
    """

    agent_ids: list[Any]
    """Agent id of each output."""
    slots: npt.NDArray[np.int32]
    """Dispatcher slot of each output."""
    codes: npt.NDArray[np.int32]
    """Output code of each output (see class docstring)."""
    values: Sequence[Any]
    """The runtime's table of interned machine outputs, indexed by non-negative codes."""
    extras: Sequence[Any]
    """Outputs returned by handlers, indexed by ``-(code + 1)``."""
    steps: npt.NDArray[np.int64]
    """The step of its agent that emitted each output: the agent's ``processed`` count once
    that step was done (1 for its first). Snapshots keep the count, so a step processed again
    after a crash recovery emits the same ``(agent_id, step, k-th output of the step)``: the
    key an effector deduplicates on (see ``sequence``)."""

    def __len__(self) -> int:
        return len(self.agent_ids)

    def sequence(self) -> Iterator[tuple[Any, int, int, Any]]:
        """``(agent_id, step, k, output)`` for each output, ``k`` counting from 0 within its
        step: a key that is the same when a step is processed again after a recovery."""
        values, extras = self.values, self.extras
        last: tuple[Any, int] | None = None
        k = 0
        for agent_id, step, code in zip(
            self.agent_ids, self.steps.tolist(), self.codes.tolist(), strict=True
        ):
            k = k + 1 if last is not None and last[1] == step and last[0] == agent_id else 0
            last = (agent_id, step)
            yield agent_id, step, k, (values[code] if code >= 0 else extras[-code - 1])

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        values, extras = self.values, self.extras
        for agent_id, code in zip(self.agent_ids, self.codes.tolist(), strict=True):
            yield agent_id, (values[code] if code >= 0 else extras[-code - 1])

    def outputs(self) -> list[Any]:
        """Return the outputs alone, in emission order."""
        return [out for _, out in self]
