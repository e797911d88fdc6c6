"""One heap for every timer of a runtime: state timeouts, event timeouts, named timers.

Theory of operation: a timer is a heap entry ``(deadline, seq, ...)`` plus a live-key map
``(owner, key) -> seq``, where the owner is one int for the agent's slot and generation. Arming
a key again, cancelling it, or dropping all of an agent's keys only edits the map; a heap entry
whose seq is no longer the live one is stale and is skipped when it reaches the top (lazy
deletion), and the heap is rebuilt when stale entries outnumber live ones. Guards are checked
when a timer fires, not when things happen: a state timeout remembers the agent's state-change
count and an event timeout its events-taken count at arming, so the drain loop does no timer
work at all. Nothing here knows about trio: the runtime passes clock readings in.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Any, Final, final

NO_GUARD: Final = 0
STATE_GUARD: Final = 1
EVENT_GUARD: Final = 2


def owner(slot: int, gen: int) -> int:
    """One int naming an agent incarnation: its dispatcher slot and that slot's generation
    (bumped on terminate, so a reused slot is another owner)."""
    return gen << 32 | slot


def owner_slot(owner: int) -> int:
    return owner & 0xFFFFFFFF


def owner_gen(owner: int) -> int:
    return owner >> 32


Entry = tuple[float, int, int, Hashable, int, int, int, Any, int]
"""A heap entry: ``(deadline, seq, owner, key, guard, guard_value, event, payload, lane)``.

A plain tuple of ints, floats and strings (unless the payload is an object), so the garbage
collector stops tracking it after its first pass: a heap of 10**5 pending timers costs the
collector nothing. ``event`` is an event code; deliver it to ``owner`` if the guard holds."""


@final
class TimerQueue:
    """Deadlines on a heap with lazy cancellation (see the module docstring)."""

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._live: dict[tuple[int, Hashable], int] = {}
        self._keys: dict[int, Any] = {}
        """Armed keys per owner: the key itself while it is the only one, else a set."""
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Armed (live) timers."""
        return len(self._live)

    def __bool__(self) -> bool:
        return bool(self._live)

    def arm(
        self,
        deadline: float,
        owner: int,
        key: Hashable,
        guard: int = NO_GUARD,
        guard_value: int = 0,
        event: int = -1,
        payload: Any = None,
        lane: int = 1,
    ) -> None:
        """Arm ``key`` for ``owner`` at ``deadline``, replacing any timer with that key."""
        seq = next(self._seq)
        live = self._live
        if live.get((owner, key)) is None:
            keys = self._keys.get(owner)
            if keys is None:
                self._keys[owner] = key
            elif type(keys) is set:
                keys.add(key)
            else:
                self._keys[owner] = {keys, key}
        live[owner, key] = seq
        heapq.heappush(
            self._heap, (deadline, seq, owner, key, guard, guard_value, event, payload, lane)
        )
        if len(self._heap) > 2 * len(live) + 1024:
            self._compact()

    def cancel(self, owner: int, key: Hashable) -> bool:
        """Cancel one timer; return whether it was armed."""
        if self._live.pop((owner, key), None) is None:
            return False
        keys = self._keys[owner]
        if type(keys) is set:
            keys.discard(key)
            if len(keys) == 1:
                self._keys[owner] = next(iter(keys))
        else:
            del self._keys[owner]
        return True

    def cancel_all(self, owner: int) -> int:
        """Cancel every timer of one owner; return how many were armed."""
        keys = self._keys.pop(owner, None)
        if keys is None:
            return 0
        if type(keys) is not set:
            keys = {keys}
        for key in keys:
            del self._live[owner, key]
        return len(keys)

    def armed(self, owner: int) -> list[Hashable]:
        """Keys of the owner's armed timers."""
        keys = self._keys.get(owner)
        if keys is None:
            return []
        return sorted(keys, key=repr) if type(keys) is set else [keys]

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None."""
        heap = self._heap
        live = self._live
        while heap:
            deadline, seq, who, key, *_ = heap[0]
            if live.get((who, key)) == seq:
                return deadline
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[Entry]:
        """Remove and return the live timers with ``deadline <= now``, in deadline order
        (ties in arming order)."""
        out = []
        heap = self._heap
        live = self._live
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            _, seq, who, key, *_ = entry
            if live.get((who, key)) == seq:
                self.cancel(who, key)
                out.append(entry)
        return out

    def _compact(self) -> None:
        live = self._live
        self._heap = [e for e in self._heap if live.get((e[2], e[3])) == e[1]]
        heapq.heapify(self._heap)
