"""The service's values: activities, what handlers return, and what ``get_state`` reports.

Every value is a frozen attrs class checked once, where it is made (an ``Activity`` with a
bad field never exists, so nothing downstream checks it again per message).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Any, final

import attrs

from ... import AgentStatus, Priority
from ._errors import InvalidActivityError, brief


class ActivityType(enum.StrEnum):
    """The built-in activity types (custom types are plain names registered by the user)."""

    STATE_CHANGE = "STATE_CHANGE"
    """The payload becomes the agent's new state."""
    COMMAND = "COMMAND"
    """The payload names a registered command handler (``{"command": name, ...}``)."""


def _name(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidActivityError(f"an activity type must be a str, got {brief(value)}")
    return str.__str__(value)  # a StrEnum member (or any str subclass) as its plain value


def _id(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidActivityError(f"an activity id must be a str, got {brief(value)}")
    return str.__str__(value)


def _priority(value: Any) -> Priority:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
        raise InvalidActivityError(
            f"priority must be an engine.Priority (0..3), got {brief(value)}"
        )
    return Priority(value)


@final
@attrs.frozen
class Activity:
    """One activity for an agent: ``{id, type, payload, priority}``.

    ``type`` is ``ActivityType.STATE_CHANGE``, ``ActivityType.COMMAND`` or the name of a
    registered custom type (stored as a plain ``str``); ``priority`` picks the mailbox lane
    (``engine.Priority``; higher lanes are served first, FIFO inside a lane).
    """

    id: str = attrs.field(converter=_id)
    """The activity's id (chosen by the sender; reported in errors and streams)."""
    type: str = attrs.field(converter=_name)
    """The activity type: the engine event it is sent as."""
    payload: Any = None
    """Carried as is, never copied (STATE_CHANGE: the new state; COMMAND: a mapping with
    a ``"command"`` key)."""
    priority: Priority = attrs.field(default=Priority.NORMAL, converter=_priority)
    """The mailbox lane."""


class _Keep(enum.Enum):
    KEEP = "KEEP"


KEEP = _Keep.KEEP
"""``Outcome.state`` default: leave the agent's state as it is."""


def _results(value: Any) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidActivityError(f"results must be a sequence, got {brief(value)}")
    return tuple(value)


@final
@attrs.frozen
class Outcome:
    """What a command handler or a custom type's handler returns (``None`` means
    ``Outcome()``: nothing changes, nothing is emitted)."""

    state: Any = KEEP
    """The agent's new state (``KEEP``: unchanged)."""
    results: tuple[Any, ...] = attrs.field(default=(), converter=_results)
    """Emitted as the step's outputs: to effectors, the record stream and ``process``."""


@final
@attrs.frozen
class StatusTimes:
    """When the agent last entered each status (its runtime's clock; None: never yet)."""

    idle: float | None = None
    processing: float | None = None
    error: float | None = None

    def __getitem__(self, status: AgentStatus) -> float | None:
        """The time for ``status`` (IDLE, PROCESSING or ERROR)."""
        if status is AgentStatus.IDLE:
            return self.idle
        if status is AgentStatus.PROCESSING:
            return self.processing
        if status is AgentStatus.ERROR:
            return self.error
        raise KeyError(status)


@final
@attrs.frozen
class ProcessingMetrics:
    """Per-agent metrics (the design's ``processing``), read from the engine's counters."""

    processed: int
    """Activities processed (``engine.AgentStatistics.processed``)."""
    failures: int
    """Activities that failed (``engine.AgentStatistics.failed``)."""
    avg_processing_time: float | None
    """Mean seconds per activity, processed or failed: the engine's busy time over their
    count (None when the runtime keeps no busy time: ``metrics=False``)."""
    last_error: BaseException | None
    """The last failure: a ``ProcessingError`` with its cause (kept until terminate)."""


@final
@attrs.frozen
class ActivityAgentState:
    """What ``get_state`` returns (the design's ``AgentRuntimeState``)."""

    id: Any
    """The agent's id."""
    state: Any
    """Its state: the engine agent's data (the only copy)."""
    status: AgentStatus
    """``IDLE``, ``PROCESSING`` or ``ERROR`` (the engine's own status)."""
    last_updated: float
    """When the status last changed (``rt.status_since``)."""
    since: StatusTimes
    """When it last entered each status."""
    error: BaseException | None
    """The error that put it in ERROR (None unless ``status`` is ERROR)."""
    processing: ProcessingMetrics


@final
@attrs.frozen
class ActivityRecord:
    """One processed activity, as ``subscribe`` streams it (from an engine ``Transition``)."""

    agent_id: Any
    activity: Activity
    results: tuple[Any, ...]
    """What its handler emitted."""
    seq: int
    """The engine's record sequence number (a cursor for ``subscribe(from_seq=...)``)."""
    time: float
    """When it was processed (the runtime's clock)."""


@final
@attrs.frozen
class ActivityServiceStatistics:
    """What ``ActivityService.statistics()`` returns."""

    agents: int
    """The service's agents."""
    types: tuple[str, ...]
    """Registered activity types, built-in ones first."""
    commands: tuple[str, ...]
    """Registered command names."""
    version: int
    """The version of the service's machine (one more per type registered after open)."""
    processed: int
    """Activities processed by its live agents (``rt.machine_statistics``)."""
    failed: int
    """Activities failed by its live agents."""


def finite(name: str, value: Any) -> float | None:
    """``value`` if it is None or a finite number (for timeouts)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidActivityError(f"{name} must be a finite number or None, got {brief(value)}")
    return float(value)
