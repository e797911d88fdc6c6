"""Ordered channels between shards: batches numbered per (sender, receiver) pair.

Batches travel on one TCP connection per pair (``_wire``), in order while it lasts; but a
connection can break and be opened again, and either end can restart. So every batch a shard
sends another carries the sender's index and incarnation (a fresh id each time its process
starts), the receiver's incarnation as the sender knows it, and a sequence number counted
per receiver incarnation. The receiver applies a pair's batches in sequence order, holding
early ones until the gap before them fills, and drops a number it has already applied. (A
batch lost on a broken connection while the receiver stays up is not sent again yet: its
gap holds the pair's later batches; see the README's "Not built yet".)

Restarts: a batch addressed to an earlier incarnation of the receiver, or sent by an earlier
incarnation of the sender, is applied at once and not counted (order across a restart of
either end is not kept, and what was in flight to a process that died is lost: cross-shard
mail is at most once across a crash). A batch from an incarnation of the sender not seen
before makes it the sender's current one. Counts of what was sent and received serve the
driver's test for quiescence; they are kept per current incarnation so they balance again
after a restart.
"""

from __future__ import annotations

from typing import Any, final

Item = tuple[Any, ...]
"""``("m", agent_id, event, payload, priority, sender)``, ``("arrive", agent_id, saved)``,
``("switch", agent_id, sender)``, ``("settled", agent_id)``."""


def messages(items: list[Item]) -> int:
    return sum(1 for i in items if i[0] == "m")


@final
class Outbox:
    """What one shard owes the others, gathered per receiver until its connection takes
    it (everything queued while the previous batch was written goes as the next one)."""

    __slots__ = ("_next", "incarnations", "pending", "sent")

    def __init__(self, incarnations: dict[int, str]) -> None:
        self.pending: dict[int, list[Item]] = {}
        self._next: dict[int, int] = {}
        self.incarnations = dict(incarnations)
        """The receivers' incarnations as this shard knows them."""
        self.sent: dict[tuple[int, str], int] = {}
        """Messages sent per (receiver, its incarnation)."""

    def put(self, shard: int, item: Item) -> bool:
        """Queue an item; True when it is the first for ``shard`` since its last ``take``."""
        queued = self.pending.get(shard)
        if queued is None:
            self.pending[shard] = [item]
            return True
        queued.append(item)
        return False

    def restarted(self, shard: int, incarnation: str) -> None:
        """The receiver came back as ``incarnation``: its batches count from 0 again."""
        if self.incarnations.get(shard) != incarnation:
            self.incarnations[shard] = incarnation
            self._next[shard] = 0

    def take(self, shard: int) -> tuple[str, int, list[Item]] | None:
        """``(receiver's incarnation, seq, items)`` of what is queued for ``shard``, as one
        numbered batch (None when nothing is)."""
        items = self.pending.pop(shard, None)
        if items is None:
            return None
        seq = self._next.get(shard, 0)
        self._next[shard] = seq + 1
        incarnation = self.incarnations.get(shard, "")
        key = (shard, incarnation)
        self.sent[key] = self.sent.get(key, 0) + messages(items)
        return incarnation, seq, items


@final
class Inbox:
    """Batches from other shards, released in each pair's order."""

    __slots__ = ("_early", "_next", "_retired", "current", "received")

    def __init__(self, incarnations: dict[int, str]) -> None:
        self.current = dict(incarnations)
        """Each sender's current incarnation."""
        self._retired: dict[int, set[str]] = {}
        self._next: dict[int, int] = {}
        self._early: dict[int, dict[int, tuple[list[Item], int]]] = {}
        self.received: dict[int, int] = {}
        """Messages received from each sender's current incarnation."""

    def restarted(self, sender: int, incarnation: str) -> list[list[Item]]:
        """The sender came back as ``incarnation``: what its old one left early is released
        (to apply at once), and its count starts again."""
        old = self.current.get(sender)
        if old == incarnation or incarnation in self._retired.get(sender, ()):
            return []
        if old is not None:
            self._retired.setdefault(sender, set()).add(old)
        self.current[sender] = incarnation
        self._next[sender] = 0
        self.received[sender] = 0
        early = self._early.pop(sender, {})
        return [early[seq][0] for seq in sorted(early)]

    def accept(
        self,
        sender: int,
        incarnation: str,
        current: bool,
        seq: int,
        items: list[Item],
        sent: int,
    ) -> list[list[Item]]:
        """The batches that can be applied now, in order (none while a gap is open).
        ``current``: the batch was addressed to this incarnation of the receiver; ``sent``:
        the messages the sender counted in it (counted here even if some could not be
        read, so that the pair balances)."""
        if not current or incarnation in self._retired.get(sender, ()):
            return [items]  # across a restart: at once, not counted
        released = []
        if self.current.get(sender) != incarnation:  # a sender's new incarnation
            released = self.restarted(sender, incarnation)
        expected = self._next.get(sender, 0)
        if seq < expected:
            return released  # a duplicate
        if seq > expected:
            self._early.setdefault(sender, {})[seq] = (items, sent)
            return released
        ready = [*released, self._count(sender, items, sent)]
        early = self._early.get(sender)
        seq += 1
        while early and seq in early:
            ready.append(self._count(sender, *early.pop(seq)))
            seq += 1
        if early is not None and not early:
            del self._early[sender]
        self._next[sender] = seq
        return ready

    def waiting(self) -> int:
        """Batches held for a gap."""
        return sum(len(e) for e in self._early.values())

    def _count(self, sender: int, items: list[Item], sent: int) -> list[Item]:
        self.received[sender] = self.received.get(sender, 0) + sent
        return items
