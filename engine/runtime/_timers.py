"""One heap for every timer of a runtime: state timeouts, event timeouts, named timers.

Theory of operation: a timer is an entry ``(deadline, seq, ...)`` in the bucket of its
deadline (a heap orders the distinct deadlines, and a bucket keeps arming order) plus a
live-key map ``(owner, key) -> seq``, where the owner is one int for the agent's slot and
generation. Arming a key again, cancelling it, or dropping all of an agent's keys only edits
the map; an entry whose seq is no longer the live one is stale and is skipped when its deadline
comes (lazy deletion), and the buckets are rebuilt when stale entries outnumber live ones.
Guards are checked when a timer fires, not when things happen: a state timeout remembers the
agent's state-change count and an event timeout its events-taken count at arming, so the drain
loop does no timer work at all. Nothing here knows about trio: the runtime passes clock
readings in.
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
"""A timer entry: ``(deadline, seq, owner, key, guard, guard_value, event, payload, lane)``.

A plain tuple of ints, floats and strings (unless the payload is an object), so the garbage
collector stops tracking it after its first pass: 10**5 pending timers cost the collector
nothing. ``event`` is an event code; deliver it to ``owner`` if the guard holds."""


@final
class TimerQueue:
    """Timers bucketed by deadline, with lazy cancellation (see the module docstring)."""

    def __init__(self) -> None:
        self._deadlines: list[float] = []
        """Heap of the distinct deadlines that have a bucket."""
        self._buckets: dict[float, list[Entry]] = {}
        """Entries per deadline, in arming order. Simulations arm many timers for the same
        instant (the next day, say); one heap item per instant keeps those O(1) each."""
        self._entries = 0
        """Entries in all buckets, stale ones included."""
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
        entry = (deadline, seq, owner, key, guard, guard_value, event, payload, lane)
        bucket = self._buckets.get(deadline)
        if bucket is None:
            self._buckets[deadline] = [entry]
            heapq.heappush(self._deadlines, deadline)
        else:
            bucket.append(entry)
        self._entries += 1
        if self._entries > 2 * len(live) + 1024:
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

    def live(self) -> dict[int, list[Entry]]:
        """The armed timers per owner, each owner's in deadline order (one pass over all)."""
        out: dict[int, list[Entry]] = {}
        live = self._live
        for deadline in sorted(self._buckets):
            for entry in self._buckets[deadline]:
                if live.get((entry[2], entry[3])) == entry[1]:
                    out.setdefault(entry[2], []).append(entry)
        return out

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None."""
        deadlines = self._deadlines
        live = self._live
        while deadlines:
            deadline = deadlines[0]
            bucket = self._buckets[deadline]
            for i, (_, seq, who, key, *_) in enumerate(bucket):
                if live.get((who, key)) == seq:
                    del bucket[:i]  # the stale prefix, so the next look starts here
                    self._entries -= i
                    return deadline
            heapq.heappop(deadlines)
            del self._buckets[deadline]
            self._entries -= len(bucket)
        return None

    def pop_due(self, now: float) -> list[Entry]:
        """Remove and return the live timers with ``deadline <= now``, in deadline order
        (ties in arming order)."""
        out = []
        deadlines = self._deadlines
        live = self._live
        while deadlines and deadlines[0] <= now:
            bucket = self._buckets.pop(heapq.heappop(deadlines))
            self._entries -= len(bucket)
            for entry in bucket:
                _, seq, who, key, *_ = entry
                if live.get((who, key)) == seq:
                    self.cancel(who, key)
                    out.append(entry)
        return out

    def _compact(self) -> None:
        live = self._live
        buckets = {}
        for deadline, bucket in self._buckets.items():
            kept = [e for e in bucket if live.get((e[2], e[3])) == e[1]]
            if kept:
                buckets[deadline] = kept
        self._buckets = buckets
        self._deadlines = list(buckets)
        heapq.heapify(self._deadlines)
        self._entries = sum(map(len, buckets.values()))
