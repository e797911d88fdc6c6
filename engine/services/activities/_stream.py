"""``subscribe``: the engine's record stream of one agent, read as processed activities.

The engine's drain loop writes every committed step into its record ring; a subscription
reads that ring from its own cursor, so following an agent never takes an activity from its
mailbox and never slows the agent down. Each record whose payload is an ``Activity`` becomes
an ``ActivityRecord`` (the activity, the results its handler emitted, the sequence number and
the time); an ``engine.Gap`` is passed through where the reader missed records. Failed
activities make no record (nothing was committed): ``rt.watch_dead_letters()`` has them.
The stream ends (``StopAsyncIteration``) once its agent is terminated: a read waits in a
scope that the service's ``terminate`` cancels, and that gives up every second to look
whether the agent is still there (for a terminate behind the service's back).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

import trio

from ... import Gap
from ._values import Activity, ActivityRecord

if TYPE_CHECKING:
    from ... import RecordSubscription
    from ._agent import Entry

_LOOK = 1.0
"""Seconds a read waits before it looks again whether the agent is still there."""


@final
class ActivityStream:
    """The processed activities of one agent, in order: ``async for record in stream``.

    Yields ``ActivityRecord`` values, and an ``engine.Gap`` where records were missed (made
    while nobody subscribed, or overwritten before they were read).
    """

    def __init__(
        self,
        records: RecordSubscription,
        agent_id: Any,
        alive: Callable[[], bool],
        entry: Entry,
    ) -> None:
        self._records = records
        self._agent_id = agent_id
        self._alive = alive
        self._entry = entry

    @property
    def seq(self) -> int:
        """The cursor: the sequence number of the next record (for ``from_seq``)."""
        return self._records.seq

    def __aiter__(self) -> ActivityStream:
        return self

    async def __anext__(self) -> ActivityRecord | Gap:
        while True:
            alive = self._alive()  # gone: what is ready still comes, then the end
            waiters = self._entry.waiters
            with trio.CancelScope(deadline=trio.current_time() + (_LOOK if alive else 0)) as scope:
                waiters.add(scope)
                try:
                    item = await self._records.__anext__()
                finally:
                    waiters.discard(scope)
            if scope.cancelled_caught:  # (a cancelled read takes nothing)
                if not alive:
                    raise StopAsyncIteration
                continue
            if isinstance(item, Gap):
                return item
            activity = item.payload
            if type(activity) is Activity:  # (an event sent past the service is skipped)
                return ActivityRecord(
                    self._agent_id, activity, tuple(item.outputs), item.seq, item.time
                )
