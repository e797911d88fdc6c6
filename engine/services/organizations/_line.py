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
An execution takes a place when ``taken < max_queue_size`` and nobody waits; otherwise it
joins the line (refused with ``max_waiting`` callers in it already). Each execution that
finishes frees its place and gives it, at once, to the first caller of the highest priority
waiting: the place is taken on its behalf, so no newcomer can slip in ahead, and the caller
only has to use it. A caller leaving the line (cancelled, timed out, its organization or
agent gone) hands on a place it was given. ``changes`` keeps the line's length at each
change (a bounded ring, for ``history``).
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

    __slots__ = ("_lanes", "_n", "changes", "closed", "limit", "taken")

    def __init__(self, limit: int) -> None:
        self._lanes: tuple[deque[trio.Event], ...] = tuple(deque() for _ in range(LANES))
        self._n = 0
        self.limit = limit
        """``max_queue_size`` (0: no limit: nobody ever waits)."""
        self.taken = 0
        """Places taken: executions accepted and not finished (and places given to waiters)."""
        self.closed = False
        """Set when the organization is destroyed: every waiter is woken to fail."""
        self.changes: deque[tuple[float, int]] = deque(maxlen=CHANGES)
        """``(trio time, length)`` at each change of the line's length."""

    def __len__(self) -> int:
        return self._n

    def take(self) -> bool:
        """Take a place now if there is one and nobody waits."""
        if self._n or (self.limit and self.taken >= self.limit):
            return False
        self.taken += 1
        return True

    async def wait(self, priority: int) -> None:
        """Wait in the line until a place is given (taken on the caller's behalf)."""
        event = trio.Event()
        lane = self._lanes[priority]
        lane.append(event)
        self._changed(1)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():  # given a place it will not use: hand it on
                self.free()
            else:
                lane.remove(event)
                self._changed(-1)
            raise

    def free(self) -> None:
        """A place is free again (an execution finished, or gave up its place): give it to
        the first caller of the highest priority waiting."""
        self.taken -= 1
        if self._n and not self.closed:
            for lane in reversed(self._lanes):
                if lane:
                    self.taken += 1
                    self._changed(-1)
                    lane.popleft().set()
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
