"""engine-timers: periodic or one-shot ticks to chosen agents, on trio's clock.

``Timers`` (entry point ``engine.receptors: timers``) runs one task per timer spec. A tick
sends the spec's event to each of its agents in order with ``await sink.send`` (so a full
mailbox delays the tick: backpressure, not buffering). An agent or event the runtime refuses
is reported with ``sink.reject(ErrorRecord(...))`` (context: timer, agent, tick) and the tick
goes on to the other agents; the next tick tries again (the agent may have been spawned
since).

Ticks are due at fixed times, ``t0 + start + k * every`` (``t0``: when the receptor starts),
so they do not drift. A tick delayed past later due times (a full mailbox) is not followed by
a burst of catch-up ticks: the missed times are skipped and the next tick is the first one due
at or after the moment the late tick finished. ``count`` counts ticks actually sent. When every
timer is done (one-shot, or periodic with a ``count``) the receptor finishes.

Under ``trio.testing.MockClock`` the ticks follow virtual time.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from engine import (
    AgentNotFoundError,
    AgentStoppedError,
    EngineError,
    InvalidArgumentError,
    UnknownEventError,
)
from engine.plugin_spec import ErrorRecord

if TYPE_CHECKING:
    from engine.plugin_spec import EventSink

__all__ = ["TimerSpec", "TimerSpecError", "Timers"]

REFUSED = (AgentNotFoundError, UnknownEventError, InvalidArgumentError, AgentStoppedError)
"""What ``sink.send`` raises for a tick that cannot be delivered (reported, not fatal)."""

_IMMUTABLE = (str, int, float, bool, type(None))


class TimerSpecError(EngineError):
    """A timer spec whose fields contradict each other (``every`` and ``after`` both given,
    or neither; ``count`` or ``start`` on a one-shot timer)."""


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"'{attribute.name}' must be > 0: {value!r}")


@final
@attrs.frozen
class TimerSpec:
    """One timer: ``event`` (with ``payload``, at ``priority``) to each of ``agents``, either
    ``every`` seconds (periodic; the first tick after ``start`` seconds, by default after one
    period; at most ``count`` ticks) or once, ``after`` seconds."""

    agents: list[str | int] = attrs.field(validator=attrs.validators.min_len(1))
    """Agent ids, in the order each tick reaches them."""
    event: str = attrs.field(validator=attrs.validators.min_len(1))
    payload: Any = None
    """Sent with every tick (a copy of it, if it is mutable)."""
    priority: int = attrs.field(
        default=1, validator=[attrs.validators.ge(0), attrs.validators.le(3)]
    )
    """Mailbox lane, 0 (LOW) .. 3 (CRITICAL)."""
    every: float | None = attrs.field(default=None, validator=_positive)
    """Period in seconds (periodic timer)."""
    after: float | None = attrs.field(default=None, validator=_positive)
    """Delay in seconds (one-shot timer)."""
    count: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    """Stop after this many ticks (periodic timers; default: never)."""
    start: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    """Seconds before the first periodic tick (default: ``every``; 0 ticks at once)."""
    name: str | None = None
    """A label for error records (default: the spec's index)."""

    def __attrs_post_init__(self) -> None:
        # Not a ValueError: the engine's config reader shows this message as it is.
        if (self.every is None) == (self.after is None):
            raise TimerSpecError("a timer needs exactly one of 'every' (periodic) or 'after'")
        if self.after is not None and (self.count is not None or self.start is not None):
            raise TimerSpecError("'count' and 'start' apply to periodic timers ('every')")


@final
class Timers:
    """A receptor running the configured timers."""

    @final
    @attrs.frozen
    class Config:
        timers: list[TimerSpec] = attrs.Factory(list)

    def __init__(self, config: Timers.Config) -> None:
        self.config = config

    async def run(self, sink: EventSink) -> None:
        async with trio.open_nursery() as nursery:
            for index, spec in enumerate(self.config.timers):
                label = spec.name if spec.name is not None else index
                nursery.start_soon(self._timer, sink, label, spec, name=f"timer {label}")

    async def _timer(self, sink: EventSink, label: str | int, spec: TimerSpec) -> None:
        base = trio.current_time()
        if spec.after is not None:
            await trio.sleep_until(base + spec.after)
            await self._tick(sink, label, spec, 1)
            return
        period = spec.every
        assert period is not None
        base += period if spec.start is None else spec.start
        k = 0
        sent = 0
        while spec.count is None or sent < spec.count:
            await trio.sleep_until(base + k * period)
            sent += 1
            await self._tick(sink, label, spec, sent)
            k += 1
            late = trio.current_time() - (base + k * period)
            if late > 0:  # delayed by backpressure: skip the due times already past
                k += math.ceil(late / period)

    async def _tick(self, sink: EventSink, label: str | int, spec: TimerSpec, tick: int) -> None:
        mutable = not isinstance(spec.payload, _IMMUTABLE)
        for agent in spec.agents:
            payload = copy.deepcopy(spec.payload) if mutable else spec.payload
            try:
                await sink.send(agent, spec.event, payload, spec.priority)
            except REFUSED as exc:
                context = {"timer": label, "agent": agent, "tick": tick}
                sink.reject(ErrorRecord(sink.name, type(exc).__name__, str(exc), None, context))
