"""Supervision: what happens to an agent after one of its messages fails.

``resume`` keeps the state and goes on (the failed message is a dead letter either way).
``restart`` puts the agent back in its initial state after an exponential backoff (it is
paused meanwhile; its mail waits), at most ``max_restarts`` times within ``within`` seconds,
after which it is stopped. ``stop`` stops it: its mail becomes dead letters and it takes no
more until it is terminated.
"""

from __future__ import annotations

from collections import deque
from typing import Literal, final

import attrs

from ..core._exceptions import InvalidArgumentError
from ..core._validate import brief, integer, number

Policy = Literal["resume", "restart", "stop"]


def _count(value: object) -> int:
    return integer("max_restarts", value, 0, 2**31 - 1)


def _within(value: object) -> float:
    return number("within", value, minimum=0)


def _backoff(value: object) -> float:
    return number("backoff", value, minimum=0)


def _backoff_max(value: object) -> float:
    return number("backoff_max", value, minimum=0)


def _factor(value: object) -> float:
    return number("factor", value, minimum=0)


def _policy(value: object) -> None:
    if value not in ("resume", "restart", "stop"):
        raise InvalidArgumentError(
            f"supervision policy must be 'resume', 'restart' or 'stop', got {brief(value)}"
        )


@final
@attrs.frozen
class Supervision:
    """A supervision policy, for a runtime, a machine or one spawn."""

    policy: Policy = attrs.field(default="resume", validator=lambda _, __, v: _policy(v))
    """``"resume"``, ``"restart"`` or ``"stop"``."""
    max_restarts: int = attrs.field(default=3, converter=_count)
    """Restarts allowed within ``within`` seconds; one more failure stops the agent."""
    within: float = attrs.field(default=60.0, converter=_within)
    """The window, in seconds of the runtime's clock."""
    backoff: float = attrs.field(default=0.0, converter=_backoff)
    """Delay before the first restart in the window (0: restart at once)."""
    backoff_max: float = attrs.field(default=30.0, converter=_backoff_max)
    """Largest delay."""
    factor: float = attrs.field(default=2.0, converter=_factor)
    """Each restart in the window multiplies the delay by this (finite; the delay never
    exceeds ``backoff_max``, however large the factor)."""

    def decide(self, history: deque[float], now: float) -> tuple[str, float]:
        """Record a failure at ``now`` in ``history`` (restart times) and return the verdict:
        ``("resume", 0)``, ``("restart", delay)`` or ``("stop", 0)``."""
        if self.policy != "restart":
            return self.policy, 0.0
        while history and history[0] <= now - self.within:
            history.popleft()
        if len(history) >= self.max_restarts:
            return "stop", 0.0
        try:
            delay = min(self.backoff * self.factor ** len(history), self.backoff_max)
        except OverflowError:  # factor ** n beyond a float: the cap applies
            delay = self.backoff_max
        history.append(now)
        return "restart", delay
