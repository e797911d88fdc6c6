"""The timer queue on its own: order, replacement, cancellation, compaction."""

from __future__ import annotations

import random

from engine.runtime._timers import TimerQueue, owner, owner_gen, owner_slot


def fired(q: TimerQueue, now: float) -> list[tuple[float, int, object]]:
    return [(e[0], e[2], e[3]) for e in q.pop_due(now)]


def test_owner_packs_slot_and_generation() -> None:
    who = owner(12345, 7)
    assert (owner_slot(who), owner_gen(who)) == (12345, 7)
    assert owner(12345, 8) != who


def test_deadline_order_and_ties_in_arming_order() -> None:
    q = TimerQueue()
    q.arm(2.0, 1, "a")
    q.arm(1.0, 2, "a")
    q.arm(2.0, 3, "a")
    q.arm(1.0, 4, "a")
    assert q.next_deadline() == 1.0
    assert fired(q, 1.5) == [(1.0, 2, "a"), (1.0, 4, "a")]
    assert fired(q, 5.0) == [(2.0, 1, "a"), (2.0, 3, "a")]
    assert q.next_deadline() is None
    assert len(q) == 0


def test_rearming_replaces_and_cancel_forgets() -> None:
    q = TimerQueue()
    q.arm(1.0, 1, "t")
    q.arm(3.0, 1, "t")  # replaces the 1.0 one
    q.arm(2.0, 1, "u")
    assert q.armed(1) == ["t", "u"]
    assert q.next_deadline() == 2.0  # the stale 1.0 entry is skipped
    assert q.cancel(1, "u")
    assert not q.cancel(1, "u")
    assert q.armed(1) == ["t"]
    assert fired(q, 2.5) == []
    assert fired(q, 3.0) == [(3.0, 1, "t")]
    assert q.armed(1) == []


def test_cancel_all_drops_one_owner() -> None:
    q = TimerQueue()
    for key in ("a", "b", "c"):
        q.arm(1.0, 1, key)
    q.arm(1.0, 2, "a")
    assert q.cancel_all(1) == 3
    assert q.cancel_all(1) == 0
    assert fired(q, 1.0) == [(1.0, 2, "a")]


def test_many_rearms_compact_and_keep_the_live_ones() -> None:
    """Re-arming leaves stale entries behind; past 2 x live + 1024 they are dropped, and the
    live timers still fire in order."""
    q = TimerQueue()
    rng = random.Random(5)
    expect = {}
    for _ in range(20_000):
        who = rng.randrange(50)
        deadline = float(rng.randrange(1, 100))
        q.arm(deadline, who, "k")
        expect[who] = deadline
    assert q._entries <= 2 * len(q) + 1024
    assert len(q) == len(expect)
    got = fired(q, 1000.0)
    assert sorted((d, w) for d, w, _ in got) == sorted((d, w) for w, d in expect.items())
    assert [d for d, _, _ in got] == sorted(d for d, _, _ in got)
