"""One client connection: its socket, its bounded outbox and the task that writes it.

Theory of operation: whatever is written to a client (a batch's output lines, shared by every
client as one ``bytes`` object, or an error line of its own) is appended to its outbox without
waiting (``offer``); the connection's writer task sends the outbox in order. The bytes offered
but not yet taken by the socket (``buffered``, the item being written included) are bounded by
the plugin's ``send_buffer``: ``offer`` returns False instead of going past it, and the plugin
drops that client. So nothing a client does (stop reading, read slowly, vanish) makes anyone
wait but itself: neither the effector's ``deliver`` nor the other clients.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import final

import trio

CHUNK = 65536
"""Bytes received at a time."""
LINGER = 1.0
"""Seconds a closing connection waits for the peer to read our last lines and close."""
GONE = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError)
"""What a socket operation raises when the connection is gone."""


@final
class Connection:
    """A client connection (mutable internal state of the plugin)."""

    __slots__ = (
        "_lock",
        "_queue",
        "_wakeup",
        "authed",
        "buffered",
        "closing",
        "dead",
        "peer",
        "reader_scope",
        "scope",
        "stream",
    )

    def __init__(self, stream: trio.SocketStream, peer: str, authed: bool) -> None:
        self.stream = stream
        self.peer = peer
        self.authed = authed
        """It sent the token (or no token is configured)."""
        self.buffered = 0
        """Bytes offered and not yet taken by the socket."""
        self.closing = False
        """Nothing more will be offered: the writer sends what is queued and stops."""
        self.dead = False
        """Dropped, or writing failed: nothing more is sent."""
        self.scope = trio.CancelScope()
        """Cancelled to drop the connection (its reader and writer)."""
        self.reader_scope = trio.CancelScope()
        """Cancelled to stop reading (the connection then closes after its last lines)."""
        self._queue: deque[bytes] = deque()
        self._wakeup = trio.lowlevel.ParkingLot()  # the writer, waiting for something to send
        self._lock = trio.StrictFIFOLock()  # one write at a time (writer task or final flush)

    def offer(self, blob: bytes, limit: int) -> bool:
        """Queue ``blob`` without waiting; False (nothing queued) if that would take the bytes
        waiting for this client past ``limit``. One item is always taken when nothing waits,
        however large: a client that reads keeps up with any batch."""
        if self.dead or self.closing:
            return True  # it is going away: nothing to send, nothing to report
        if self.buffered and self.buffered + len(blob) > limit:
            return False
        self._queue.append(blob)
        self.buffered += len(blob)
        self._wakeup.unpark_all()
        return True

    def finish(self) -> None:
        """No more offers: the writer sends what is queued, then returns."""
        self.closing = True
        self._wakeup.unpark_all()

    def kill(self) -> None:
        """Stop at once, without waiting: forget the outbox, cancel the reader and the writer,
        and close the socket (which wakes a write or read blocked on it). The connection's
        task closes the stream object itself."""
        if self.dead:
            return
        self.dead = True
        self._queue.clear()
        self.buffered = 0
        self.scope.cancel()
        self._wakeup.unpark_all()
        self.stream.socket.close()

    async def write_all(self, send_timeout: float) -> bool:
        """The writer task's loop: send the outbox in order until ``finish`` (True) or until
        the connection is dead (False)."""
        while not self.dead:
            if not self._queue:
                if self.closing:
                    return True
                await self._wakeup.park()
            elif not await self.write_next(send_timeout):
                return False
        return False

    async def write_next(self, send_timeout: float) -> bool:
        """Send the oldest queued item; False if the connection is (now) dead, or if the write
        did not complete within ``send_timeout`` (the caller drops it). The write is shielded,
        so that cancellation never cuts a line in two."""
        async with self._lock:
            if self.dead:
                return False
            if not self._queue:
                return True
            blob = self._queue.popleft()
            with trio.CancelScope(shield=True), trio.move_on_after(send_timeout):
                try:
                    await self.stream.send_all(blob)
                except GONE:
                    self.kill()
                    return False
                self.buffered -= len(blob)
                return True
            return False  # timed out: still counted in ``buffered``

    async def flush(self, send_timeout: float) -> bool:
        """Send what is queued, without a writer task (at shutdown)."""
        while self._queue:
            if not await self.write_next(send_timeout):
                return False
        return not self.dead


def peer_name(stream: trio.SocketStream) -> str:
    """``host:port`` of the peer (``[host]:port`` for IPv6), or ``?``."""
    try:
        addr = stream.socket.getpeername()
    except OSError:
        return "?"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def close_gently(stream: trio.SocketStream) -> None:
    """Close after the peer has had a chance to read our last lines: half-close, then read
    and discard until the peer closes (at most ``LINGER`` seconds). Closing a socket with
    unread input resets the connection, and the peer could lose what we sent last."""
    try:
        with trio.move_on_after(LINGER), contextlib.suppress(*GONE):
            await stream.send_eof()
            while await stream.receive_some(CHUNK):
                pass
    finally:
        await trio.aclose_forcefully(stream)  # closes at once, even when cancelled
