"""Retention rings: bounded, sequence-numbered logs that readers follow at their own pace.

Theory of operation: a ring keeps the last ``capacity`` items; item ``n`` (counting from 0
since the ring was made) lives at ``n % capacity`` until ``n + capacity`` overwrites it. A
reader holds only a sequence number, so a slow reader never slows the writer; when it falls
more than ``capacity`` behind, ``since()`` tells it how many it missed (a ``Gap``) instead of
dropping them silently. Dead letters and failures use it; transition records live in the
dispatcher's own ring (``_records``), with the same sequence-number and ``Gap`` contract.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, final

import attrs

T = TypeVar("T")


@final
@attrs.frozen
class Transition:
    """One step of one agent, as a subscriber sees it."""

    seq: int
    """Position in the runtime's transition log (0 = first step recorded)."""
    agent_id: Any
    source: str
    """State before the step."""
    event: str
    target: str
    """State after the step (equal to ``source`` for a self-loop or an ignored event)."""
    outputs: tuple[Any, ...]
    time: float
    """Clock reading of the dispatch batch that ran the step."""
    priority: int = 1
    """The message's priority (lane): 0 (LOW) to 3 (URGENT)."""
    payload: Any = None
    """The message's payload."""
    front: bool = False
    """The message came from the agent's front queue (a ``NextEvent``, or a postponed message
    replayed), not from its mailbox: a replay does not send it again."""


@final
@attrs.frozen
class Gap:
    """Records a reader missed because it fell more than the retention behind."""

    seq: int
    """Sequence number of the first missed record."""
    missed: int
    """How many records were missed."""


@final
class Ring(Generic[T]):
    """The last ``capacity`` items appended, with sequence numbers."""

    __slots__ = ("_items", "capacity", "floor", "total")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._items: list[T | None] = [None] * capacity
        self.total = 0
        """Items ever appended; the next item's sequence number."""
        self.floor = 0
        """Items before this sequence number were discarded (see ``discard``)."""

    def append(self, item: T) -> None:
        self._items[self.total % self.capacity] = item
        self.total += 1

    def oldest(self) -> int:
        """Sequence number of the oldest retained item."""
        return max(self.floor, self.total - self.capacity)

    def since(self, seq: int) -> tuple[int, list[T]]:
        """Items from ``seq`` on: ``(missed, items)`` where ``missed`` counts items that
        were overwritten before this reader got them."""
        start = max(seq, self.oldest())
        items = [self._items[n % self.capacity] for n in range(start, self.total)]
        return start - seq, items  # type: ignore[return-value]

    def items(self) -> list[T]:
        """Retained items, oldest first."""
        return self.since(self.oldest())[1]

    def discard(self) -> list[T]:
        """Remove and return the retained items (releasing them); readers that had not got
        them yet are told they missed them."""
        out = self.items()
        for n in range(self.oldest(), self.total):
            self._items[n % self.capacity] = None
        self.floor = self.total
        return out

    def __len__(self) -> int:
        return self.total - self.oldest()
