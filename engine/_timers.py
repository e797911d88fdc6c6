"""One heap for every timer of a runtime: state timeouts, event timeouts, named timers.

Theory of operation: a timer is a heap entry ``(deadline, seq, ...)`` plus a live-key map
``(agent ref, key) -> seq``. Arming a key again, cancelling it, or dropping all of an agent's
keys only edits the map; a heap entry whose seq is no longer the live one is stale and is
skipped when it reaches the top (lazy deletion), and the heap is rebuilt when stale entries
outnumber live ones. Guards are checked when a timer fires, not when things happen: a state
timeout remembers the agent's state-change count and an event timeout its events-taken count
at arming, so the drain loop does no timer work at all. Nothing here knows about trio: the
runtime passes clock readings in.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Any, Final, NamedTuple, final

NO_GUARD: Final = 0
STATE_GUARD: Final = 1
EVENT_GUARD: Final = 2


class Due(NamedTuple):
    """A timer that fired: deliver ``event`` (a code) to ``ref`` if its guard still holds."""

    ref: Any
    key: Hashable
    guard: int
    guard_value: int
    event: int
    payload: Any
    lane: int


@final
class TimerQueue:
    """Deadlines on a heap with lazy cancellation (see the module docstring)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Due]] = []
        self._live: dict[tuple[Any, Hashable], int] = {}
        self._by_ref: dict[Any, set[Hashable]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Armed (live) timers."""
        return len(self._live)

    def __bool__(self) -> bool:
        return bool(self._live)

    def arm(self, deadline: float, due: Due) -> None:
        """Arm ``due.key`` for ``due.ref`` at ``deadline``, replacing any timer with that key."""
        seq = next(self._seq)
        self._live[due.ref, due.key] = seq
        self._by_ref.setdefault(due.ref, set()).add(due.key)
        heapq.heappush(self._heap, (deadline, seq, due))
        if len(self._heap) > 2 * len(self._live) + 1024:
            self._compact()

    def cancel(self, ref: Any, key: Hashable) -> bool:
        """Cancel one timer; return whether it was armed."""
        if self._live.pop((ref, key), None) is None:
            return False
        keys = self._by_ref[ref]
        keys.discard(key)
        if not keys:
            del self._by_ref[ref]
        return True

    def cancel_all(self, ref: Any) -> int:
        """Cancel every timer of one agent; return how many were armed."""
        keys = self._by_ref.pop(ref, ())
        for key in keys:
            del self._live[ref, key]
        return len(keys)

    def armed(self, ref: Any) -> list[Hashable]:
        """Keys of the agent's armed timers."""
        return sorted(self._by_ref.get(ref, ()), key=repr)

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None."""
        heap = self._heap
        while heap:
            _, seq, due = heap[0]
            if self._live.get((due.ref, due.key)) == seq:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[Due]:
        """Remove and return the live timers with ``deadline <= now``, in deadline order
        (ties in arming order)."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, due = heapq.heappop(heap)
            if self._live.get((due.ref, due.key)) == seq:
                self.cancel(due.ref, due.key)
                out.append(due)
        return out

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._live.get((e[2].ref, e[2].key)) == e[1]]
        heapq.heapify(self._heap)
