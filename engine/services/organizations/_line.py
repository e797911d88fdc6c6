"""The line: executions of one organization waiting, by priority and in order, for room in
its queue.

Why the layer has it: the engine enforces ``max_queued`` at the send, and with its
``overflow="wait"`` policy ``await rt.send`` waits for room, but ``rt.request`` (which an
execution needs, for the answer) never waits: it raises ``TenantLimitError``. And the
engine's waiting senders are woken all at once after each dispatch batch, so the order in
which they get in is trio's (which shuffles). The line holds no message, only the callers
waiting, each with a ``trio.Event``.

Theory of operation: the room is counted by the layer itself, with no call into the engine:
``taken`` is the organization's executions accepted (sent, or about to be) and not finished.
An execution takes a place at once when ``taken < max_queue_size`` and the line is idle
(nobody waits, no place is given and unused, nobody is blocked); otherwise it joins the line
(refused with ``max_waiting`` callers in it already). A place that comes free is given to the
first caller of the highest priority waiting, taken on its behalf (no newcomer can slip in
ahead), and one at a time: the next place is given only once that caller has sent (or left),
so callers woken in one scheduling batch (trio runs those in any order) never overtake each
other. A caller the engine refuses anyway (its queue was filled around the layer) keeps its
place and blocks the line while it looks again; a caller given a place meanwhile goes back
to the head of its lane. A caller leaving (cancelled, timed out, its organization or agent
gone) hands on its place. ``changes`` keeps the line's length at each change (a bounded ring,
for ``history``).
"""

from __future__ import annotations

from collections import deque
from typing import final

import trio

LANES = 4
"""One deque per ``engine.Priority`` (0: LOW .. 3: CRITICAL); higher lanes are served first."""

CHANGES = 4096
"""Changes of the line's length kept for ``history`` (the oldest go first)."""


@final
class Line:
    """Callers waiting for a place in the organization's queue."""

    __slots__ = ("_lanes", "_n", "_pending", "blocked", "changes", "closed", "limit", "taken")

    def __init__(self, limit: int) -> None:
        self._lanes: tuple[deque[trio.Event], ...] = tuple(deque() for _ in range(LANES))
        self._n = 0
        self._pending: trio.Event | None = None  # the place given and not yet used
        self.limit = limit
        """``max_queue_size`` (0: no limit: nobody ever waits)."""
        self.taken = 0
        """Places taken: executions accepted and not finished (and a place given)."""
        self.blocked = 0
        """Callers refused by the engine, looking again: nobody else may send meanwhile."""
        self.closed = False
        """Set when the organization is destroyed: every waiter is woken to fail."""
        self.changes: deque[tuple[float, int]] = deque(maxlen=CHANGES)
        """``(trio time, length)`` at each change of the line's length."""

    def __len__(self) -> int:
        return self._n

    def take(self) -> bool:
        """Take a place now if there is one and the line is idle."""
        if self._n or self._pending is not None or self.blocked:
            return False
        if self.limit and self.taken >= self.limit:
            return False
        self.taken += 1
        return True

    async def wait(self, priority: int, *, head: bool = False) -> trio.Event:
        """Wait in the line (at the head of its lane: a caller sent back) until a place is
        given; returns the token to pass to ``sent``."""
        event = trio.Event()
        lane = self._lanes[priority]
        if head:
            lane.appendleft(event)
        else:
            lane.append(event)
        self._changed(1)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():  # given a place it will not use: hand it on
                self.sent(event)
                self.free()
            else:
                lane.remove(event)
                self._changed(-1)
            raise
        return event

    def sent(self, token: trio.Event | None) -> None:
        """The caller given the place ``token`` has sent (or left): the next may be given."""
        if token is not None and self._pending is token:
            self._pending = None
            self._give()

    def back(self, token: trio.Event) -> None:
        """A caller given a place while the line was blocked gives it back (and waits
        again at the head)."""
        if self._pending is token:
            self._pending = None
        self.taken -= 1

    def free(self) -> None:
        """A place is free again (an execution finished, or gave up its place)."""
        self.taken -= 1
        self._give()

    def block(self) -> None:
        self.blocked += 1

    def unblock(self) -> None:
        self.blocked -= 1
        self._give()

    def _give(self) -> None:
        if not self._n or self._pending is not None or self.blocked or self.closed:
            return
        if self.limit and self.taken >= self.limit:
            return
        for lane in reversed(self._lanes):
            if lane:
                self.taken += 1
                self._changed(-1)
                event = self._pending = lane.popleft()
                event.set()
                return

    def close(self) -> None:
        """Wake every waiter (the organization is gone): each fails when it wakes."""
        self.closed = True
        for lane in self._lanes:
            while lane:
                self.taken += 1  # (freed by the waiter as it fails)
                self._changed(-1)
                lane.popleft().set()

    def _changed(self, by: int) -> None:
        self._n += by
        now = trio.current_time()
        changes = self.changes
        if changes and changes[-1][0] == now:
            changes[-1] = (now, self._n)
        else:
            changes.append((now, self._n))
