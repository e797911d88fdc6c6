"""Values of the organization layer: the limits an organization is created with, what ``get``
returns, what an execution and a deployment report, and an organization's metrics.

``ResourceLimits`` keeps the old design's names and converts to the engine's own
``engine.Limits`` (and the tenant's weight), which the engine enforces; it is checked whole
when made (every field goes through ``engine.Limits`` and ``engine.Tenant``), so a bad value
never reaches the runtime.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, final

import attrs

from ... import InvalidArgumentError, Limits, Tenant, TenantStatistics
from ._errors import brief

OVERFLOW: Final = ("queue", "refuse")
MEMORY: Final = ("resident", "restored", "expired")
MB: Final = 1 << 20


def _megabytes(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgumentError(f"max_memory_mb must be a finite number, got {brief(value)}")
    if not 0 <= value <= 2**40:
        raise InvalidArgumentError(f"max_memory_mb must be in 0..2**40, got {brief(value)}")
    return float(value)


@final
@attrs.frozen
class ResourceLimits:
    """What one organization may use (0: no limit), in the old design's terms. Each maps onto
    the engine's tenant limits (``to_limits``), enforced at the call that would pass them.

    Args:
        max_concurrent_agents: Its agents in memory at once (``Limits.max_agents``): past it
            the engine hibernates the organization's least recently used idle agents to make
            room; their memory stays in the store.
        max_memory_mb: Estimated resident memory (``Limits.max_memory``, in bytes).
        max_execution_time_s: Seconds one step or ``Work`` task may take
            (``Limits.turn_deadline``, ``on_deadline="fail"``): past it the execution fails
            with ``TurnDeadlineError`` as the cause.
        max_queue_size: Executions waiting in its agents' mailboxes (``Limits.max_queued``).
            Past it, ``overflow`` decides.
        rate_limit_per_minute: Executions accepted per minute (``Limits.rate``,
            ``per="minute"``): the excess is held back by the engine, in order, and released
            on the runtime's clock.
        burst: Tokens of the rate's bucket (``Limits.burst``; 0: the rate).
        weight: Its share of the dispatcher when organizations compete (the tenant's weight;
            the old design's ``maxCPUPercent`` had no cap the engine could enforce).
        overflow: ``"queue"`` (past ``max_queue_size`` an execution waits in the
            organization's line, higher priorities first and in order inside one, for room)
            or ``"refuse"`` (it raises ``OrganizationLimitError``).
        max_waiting: Executions that may wait in the line at once (0: no limit); past it,
            ``OrganizationLimitError`` (limit ``"max_waiting"``). The layer's own limit: the
            engine has no line.
    """

    max_concurrent_agents: int = 0
    max_memory_mb: float = attrs.field(default=0.0, converter=_megabytes)
    max_execution_time_s: float = 0.0
    max_queue_size: int = 0
    rate_limit_per_minute: float = 0.0
    burst: int = 0
    weight: float = 1.0
    overflow: str = "queue"
    max_waiting: int = 1000

    def __attrs_post_init__(self) -> None:
        if type(self.max_waiting) is not int or not 0 <= self.max_waiting <= 2**31:
            raise InvalidArgumentError(
                f"max_waiting must be an int in 0..2**31, got {brief(self.max_waiting)}"
            )
        if self.overflow not in OVERFLOW:
            raise InvalidArgumentError(
                f"overflow must be 'queue' or 'refuse', got {brief(self.overflow)}"
            )
        Tenant("check", self.weight, self.to_limits())  # the engine checks every field

    def to_limits(self) -> Limits:
        """The engine's ``Limits`` these map onto."""
        return Limits(
            max_agents=self.max_concurrent_agents,
            max_queued=self.max_queue_size,
            overflow="wait" if self.overflow == "queue" else "reject",
            rate=self.rate_limit_per_minute,
            per="minute",
            burst=self.burst,
            turn_deadline=self.max_execution_time_s,
            on_deadline="fail",
            max_memory=math.ceil(self.max_memory_mb * MB),  # (a positive amount: >= 1 byte)
        )


@final
@attrs.frozen
class Organization:
    """An organization's runtime as ``get`` reads it (a copy: later changes are not seen)."""

    name: str
    limits: ResourceLimits
    created_at: float
    """Wall-clock time (``time.time()``) when it was created."""
    packages: Mapping[str, int]
    """Package name -> the version deployed now."""
    agents: tuple[str, ...]
    """Its agents, in the order they were added."""


@final
@attrs.frozen
class ExecutionResult:
    """What one ``execute_agent`` did, with its timings in seconds of the runtime's clock."""

    organization: str
    agent: str
    output: Any
    """The agent's answer: its handler's ``Reply(value)``, or the outputs of the step."""
    package: str
    version: int
    """The package version deployed when the answer came."""
    memory: str
    """``"resident"`` (it was in memory), ``"restored"`` (woken from the store) or
    ``"expired"`` (its memory had expired: it started again from the deployed version's
    initial state and starting memory, ``register_package(data=)``)."""
    stored: bool
    """Its memory was written back to the store (a long-running agent with no other
    execution queued). False with ``store_error`` set: writing it failed; the answer is
    still the answer, the agent stays in memory (nothing is lost) and the next execution
    that empties its mailbox tries again."""
    queued: bool
    """It waited in the organization's line for room (``max_queue_size``)."""
    waited: float
    """Time in the line."""
    restore: float
    execute: float
    """From sending the input to the answer (a rate limit's delay included)."""
    store: float
    total: float
    store_error: BaseException | None = None
    """Why its memory could not be stored (a ``CodecError``, a ``StoreError``), or None."""


@final
@attrs.frozen
class Deployment:
    """What ``deploy`` or ``rollback`` did in one organization."""

    organization: str
    package: str
    version: int
    previous: int | None
    """The version deployed before (None: this installed the package)."""
    agents: int
    """Agents in memory moved to ``version`` (hibernated ones move when they wake)."""
    dead_letters: int
    timers_dropped: int
    states: Mapping[str, str]
    """Where each state of ``previous`` went."""
    undo: bool = False
    """This was ``rollback``: an upgrade back to the previous version (never
    ``rt.rollback_upgrade``, whose stack every organization and user of the runtime shares)."""


@final
@attrs.frozen
class OrganizationMetrics:
    """An organization's figures now: the layer's executions and the engine's own counters
    of its tenant (``engine.TenantStatistics``)."""

    organization: str
    executions: int
    """Executions answered (failed ones included)."""
    failures: int
    queued: int
    """Executions that waited in the line, so far."""
    waiting: int
    """Executions waiting now: in the line, and refused by the engine (a queue filled around
    the layer) waiting to try again. ``history`` has it as the ``waiting`` column."""
    mean_execution_s: float
    """Mean of ``ExecutionResult.total`` (NaN before the first)."""
    tenant: TenantStatistics
