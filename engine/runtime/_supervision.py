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

Policy = Literal["resume", "restart", "stop"]


@final
@attrs.frozen
class Supervision:
    """A supervision policy, for a runtime, a machine or one spawn."""

    policy: Policy = attrs.field(
        default="resume", validator=attrs.validators.in_(("resume", "restart", "stop"))
    )
    """``"resume"``, ``"restart"`` or ``"stop"``."""
    max_restarts: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    """Restarts allowed within ``within`` seconds; one more failure stops the agent."""
    within: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    """The window, in seconds of the runtime's clock."""
    backoff: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    """Delay before the first restart in the window (0: restart at once)."""
    backoff_max: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    """Largest delay."""
    factor: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))
    """Each restart in the window multiplies the delay by this."""

    def decide(self, history: deque[float], now: float) -> tuple[str, float]:
        """Record a failure at ``now`` in ``history`` (restart times) and return the verdict:
        ``("resume", 0)``, ``("restart", delay)`` or ``("stop", 0)``."""
        if self.policy != "restart":
            return self.policy, 0.0
        while history and history[0] <= now - self.within:
            history.popleft()
        if len(history) >= self.max_restarts:
            return "stop", 0.0
        delay = min(self.backoff * self.factor ** len(history), self.backoff_max)
        history.append(now)
        return "restart", delay
