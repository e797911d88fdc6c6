"""Ordered channels between shards: batches numbered per (sender, receiver) pair.

Ray does not promise that calls from one caller to a threaded actor run in the order they
were made, so every batch a shard sends another carries the sender's index, the sender's
incarnation (a fresh id each time its process starts), the receiver's incarnation as the
sender knows it, and a sequence number counted per receiver. The receiver applies a pair's
batches in sequence order, holding early ones until the gap before them fills. A batch
addressed to an earlier incarnation of the receiver (sent before the sender heard it had
restarted) is applied at once: order is kept per pair except across a restart of either end.
"""

from __future__ import annotations

from typing import Any, final

Item = tuple[Any, ...]
"""``("m", agent_id, event, payload, priority, sender)``, ``("arrive", agent_id, record)``,
``("switch", agent_id, sender)``."""


@final
class Outbox:
    """What one shard owes the others, gathered during a drain and sent once after it."""

    __slots__ = ("_incarnations", "_next", "pending", "sent")

    def __init__(self) -> None:
        self.pending: dict[int, list[Item]] = {}
        self._next: dict[int, int] = {}
        self._incarnations: dict[int, str] = {}
        self.sent: dict[int, int] = {}
        """Messages (``"m"`` items) sent per receiver, for quiescence."""

    def put(self, shard: int, item: Item) -> bool:
        """Queue an item; True when it is the first since the last ``take``."""
        first = not self.pending
        self.pending.setdefault(shard, []).append(item)
        return first

    def restarted(self, shard: int, incarnation: str) -> None:
        """The receiver came back as ``incarnation``: its batches count from 0 again."""
        if self._incarnations.get(shard) != incarnation:
            self._incarnations[shard] = incarnation
            self._next[shard] = 0

    def take(self) -> list[tuple[int, str, int, list[Item]]]:
        """``(receiver, its incarnation, seq, items)`` per receiver with something queued."""
        out = []
        for shard, items in self.pending.items():
            seq = self._next.get(shard, 0)
            self._next[shard] = seq + 1
            self.sent[shard] = self.sent.get(shard, 0) + sum(1 for i in items if i[0] == "m")
            out.append((shard, self._incarnations.get(shard, ""), seq, items))
        self.pending = {}
        return out


@final
class Inbox:
    """Batches from other shards, released in each pair's order."""

    __slots__ = ("_early", "_next", "received")

    def __init__(self) -> None:
        self._next: dict[tuple[int, str], int] = {}
        self._early: dict[tuple[int, str], dict[int, list[Item]]] = {}
        self.received: dict[int, int] = {}
        """Messages (``"m"`` items) received per sender, for quiescence."""

    def accept(
        self, sender: int, incarnation: str, current: bool, seq: int, items: list[Item]
    ) -> list[list[Item]]:
        """The batches that can be applied now, in order (none while a gap is open).
        ``current``: the batch was addressed to this incarnation of the receiver."""
        if not current:
            return [self._count(sender, items)]
        key = (sender, incarnation)
        expected = self._next.get(key, 0)
        if seq < expected:
            return []  # a duplicate
        if seq > expected:
            self._early.setdefault(key, {})[seq] = items
            return []
        ready = [self._count(sender, items)]
        early = self._early.get(key)
        seq += 1
        while early and seq in early:
            ready.append(self._count(sender, early.pop(seq)))
            seq += 1
        if early is not None and not early:
            del self._early[key]
        self._next[key] = seq
        return ready

    def waiting(self) -> int:
        """Batches held for a gap."""
        return sum(len(e) for e in self._early.values())

    def _count(self, sender: int, items: list[Item]) -> list[Item]:
        self.received[sender] = self.received.get(sender, 0) + sum(
            1 for i in items if i[0] == "m"
        )
        return items
