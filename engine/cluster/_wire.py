"""The data plane between shards: one TCP connection per (sender, receiver) pair.

Ray stays the control plane (starting shards, moves, restarts, the driver's calls). Batches
of cross-shard mail go straight from the sender's trio thread to the receiver's over a
socket: no Ray task per batch and no hop between threads on either side, which is most of
what a batch cost when each was an actor call. The stream keeps each pair's order; the
numbering of ``_channel`` still serves restarts (batches are not acknowledged or sent
again yet).

A connection opens with the cluster's key (32 random bytes the driver made; a peer that
does not present it is closed before anything it sent is read further) and the sender's
index. Then frames: an 8-byte length, a header (pickled by the standard library: the
sender's index and incarnation, the receiver's incarnation as the sender knows it, the
batch's number, the sender's clock, the messages counted in it, and the sizes of its
parts), then its parts: the batch as one pickle, or one per item when the batch could not
be pickled whole. A header is at most ``MAX_HEADER`` bytes and a part ``MAX_PART``.
"""

from __future__ import annotations

import hmac
import pickle
import struct
from typing import Any

import trio

HELLO = struct.Struct("!32si")
LENGTH = struct.Struct("!Q")
MAX_HEADER = 1 << 20
MAX_PART = 1 << 28
"""256 MiB: a cross-shard message whose pickle is larger is undeliverable."""
JOIN_BELOW = 1 << 20
"""Pieces of a frame smaller than this in all go in one write."""

Header = tuple[int, str, str, int, float, int, bool, list[int]]
"""``(sender, incarnation, to, seq, stamp, messages, whole, sizes)``: ``whole`` when the one
part is the batch, else a part per item."""


class WireError(Exception):
    """A peer broke the protocol (bad key, oversized or malformed frame)."""


def frame(header: Header, parts: list[bytes]) -> list[bytes]:
    """The pieces to write for one batch (joined when small)."""
    head = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
    pieces = [LENGTH.pack(len(head)), head, *parts]
    if len(head) + sum(len(p) for p in parts) < JOIN_BELOW:
        return [b"".join(pieces)]
    return pieces


class Reader:
    """Exact reads from a stream, through one buffer."""

    __slots__ = ("_buffer", "_stream")

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def exactly(self, n: int) -> bytes:
        """``n`` bytes; ``EOFError`` when the stream ends first."""
        buffer = self._buffer
        while len(buffer) < n:
            chunk = await self._stream.receive_some(min(max(n - len(buffer), 65536), 1 << 20))
            if not chunk:
                raise EOFError
            buffer += chunk
        out = bytes(buffer[:n])
        del buffer[:n]
        return out

    async def hello(self, key: bytes) -> int:
        """The sender's index, once it presented ``key``."""
        presented, sender = HELLO.unpack(await self.exactly(HELLO.size))
        if not hmac.compare_digest(presented, key):
            raise WireError("a connection did not present the cluster's key")
        return int(sender)

    async def batch(self) -> tuple[Header, bytes | list[bytes]]:
        """The next frame: its header, and the batch (one pickle, or one per item)."""
        (n,) = LENGTH.unpack(await self.exactly(LENGTH.size))
        if n > MAX_HEADER:
            raise WireError(f"a frame header of {n} bytes (at most {MAX_HEADER})")
        header: Any = pickle.loads(await self.exactly(n))
        if not (isinstance(header, tuple) and len(header) == 8 and isinstance(header[7], list)):
            raise WireError("a malformed frame header")
        sizes = header[7]
        if any(type(s) is not int or not 0 <= s <= MAX_PART for s in sizes):
            raise WireError("a frame part of a size out of bounds")
        parts = [await self.exactly(s) for s in sizes]
        if header[6]:
            if len(parts) != 1:
                raise WireError("a whole batch in more than one part")
            return header, parts[0]
        return header, parts


def hello(key: bytes, sender: int) -> bytes:
    return HELLO.pack(key, sender)
