"""``subscribe``: the engine's record stream of one agent, read as processed activities.

The engine's drain loop writes every committed step into its record ring; a subscription
reads that ring from its own cursor, so following an agent never takes an activity from its
mailbox and never slows the agent down. Each record whose payload is an ``Activity`` becomes
an ``ActivityRecord`` (the activity, the results its handler emitted, the sequence number and
the time); an ``engine.Gap`` is passed through where the reader missed records. Failed
activities make no record (nothing was committed): ``rt.watch_dead_letters()`` has them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

from ... import Gap
from ._values import Activity, ActivityRecord

if TYPE_CHECKING:
    from ... import RecordSubscription


@final
class ActivityStream:
    """The processed activities of one agent, in order: ``async for record in stream``.

    Yields ``ActivityRecord`` values, and an ``engine.Gap`` where records were missed (made
    while nobody subscribed, or overwritten before they were read).
    """

    def __init__(self, records: RecordSubscription, agent_id: Any) -> None:
        self._records = records
        self._agent_id = agent_id

    @property
    def seq(self) -> int:
        """The cursor: the sequence number of the next record (for ``from_seq``)."""
        return self._records.seq

    def __aiter__(self) -> ActivityStream:
        return self

    async def __anext__(self) -> ActivityRecord | Gap:
        while True:
            item = await self._records.__anext__()
            if isinstance(item, Gap):
                return item
            activity = item.payload
            if type(activity) is Activity:  # (an event sent past the service is skipped)
                return ActivityRecord(
                    self._agent_id, activity, tuple(item.outputs), item.seq, item.time
                )
