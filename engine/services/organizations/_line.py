"""The line: executions of one organization waiting, in order, for room in its queue.

Why the layer has it: the engine enforces ``max_queued`` at the send, and with its
``overflow="wait"`` policy ``await rt.send`` waits for room, but ``rt.request`` (which an
execution needs, for the answer) never waits: it raises ``TenantLimitError``. And the
engine's waiting senders are woken all at once after each dispatch batch, so the order in
which they get in is trio's (which shuffles). The line holds no message, only the callers
that were refused, each with a ``trio.Event``.

Theory of operation: the caller at the head of the line gets one turn at a time. A turn is
given when an execution of the organization finishes (its message has left the queue, so
there is room); with none in flight, the refused caller keeps the head and tries again every
``POLL`` seconds (``_execute``: its queue was filled around the layer). While a turn is given
and not yet used, the line counts as busy, so a newcomer cannot slip in ahead: it joins the
tail. The caller whose turn it is hands the next turn on before sending only when the room
left covers both, so the next caller can only send after it; refused anyway, it goes back to
the head. Cancelled while waiting, a caller leaves the line, and hands on a turn it was given.
"""

from __future__ import annotations

from collections import deque
from typing import final

import trio


@final
class Line:
    """Callers waiting for room, first come first served."""

    __slots__ = ("_given", "_waiting", "closed")

    def __init__(self) -> None:
        self._waiting: deque[trio.Event] = deque()
        self._given = 0  # turns given and not yet used
        self.closed = False
        """Set when the organization is destroyed: every waiter is woken to fail."""

    def __len__(self) -> int:
        return len(self._waiting)

    @property
    def busy(self) -> bool:
        """Someone waits or holds a turn: a newcomer must join the tail."""
        return bool(self._waiting) or self._given > 0

    async def wait(self, *, head: bool = False) -> None:
        """Wait for a turn, at the tail (or at the head: a caller refused in its turn)."""
        event = trio.Event()
        if head:
            self._waiting.appendleft(event)
        else:
            self._waiting.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():  # given a turn it will not use: hand it on
                self.used()
                self.give()
            else:
                self._waiting.remove(event)
            raise

    def give(self) -> None:
        """Give the head of the line its turn, unless a turn is out already."""
        if self._waiting and not self._given:
            self._given += 1
            self._waiting.popleft().set()

    def give_next(self) -> None:
        """The caller whose turn it is hands the next turn on now (it will send first)."""
        if self._waiting:
            self._given += 1
            self._waiting.popleft().set()

    def hold(self) -> None:
        """Take a turn without waiting (a refused caller with nothing of its organization
        in flight keeps its place while it waits to try again)."""
        self._given += 1

    def used(self) -> None:
        """The caller's turn is used (it sent, or was refused and waits again)."""
        self._given -= 1

    def close(self) -> None:
        """Wake every waiter (the organization is gone)."""
        self.closed = True
        while self._waiting:
            self._given += 1
            self._waiting.popleft().set()
