"""Actions a handler can return in ``Step(actions=[...])``: gen_statem's vocabulary, as data.

Theory of operation: actions are validated and resolved (event names to codes) by
``prepare()`` *before* the step commits, so a bad action fails the message and leaves the
agent's state unchanged, like any handler error. After the commit the dispatcher applies the
mailbox actions itself (``Postpone``, ``NextEvent``, ``Reply``, ``Send``) and hands the rest
(timers, ``Work``) to the runtime, which owns time and tasks.
"""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, final

import attrs

from ._exceptions import InvalidArgumentError
from ._types import Priority
from ._validate import number

if TYPE_CHECKING:
    from ._machine import Machine


def _number(value: Any) -> float:
    """``value`` as a finite float, or ``InvalidArgumentError`` (NaN, infinities, bools and
    non-numbers would corrupt the timer queue's ordering or never fire)."""
    return number("seconds", value)


def _delay(value: Any) -> float:
    return number("seconds", value, minimum=0)


def _optional_delay(value: Any) -> float | None:
    return None if value is None else _delay(value)


def _priority(instance: Any, attribute: Any, value: Any) -> None:
    lane(value)


def _event(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{attribute.name} must be an event name, got {value!r}")


def _optional_event(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None:
        _event(instance, attribute, value)


@final
@attrs.frozen
class Postpone:
    """Keep the current event and retry it, in original order, after the next state change."""


@final
@attrs.frozen
class NextEvent:
    """Process ``event`` before anything already queued (after this step)."""

    event: str = attrs.field(validator=_event)
    payload: Any = None
    priority: int = attrs.field(default=Priority.NORMAL, validator=_priority)
    """What the handler sees as ``event.priority``; NextEvents always go first."""


@final
@attrs.frozen
class StateTimeout:
    """Deliver ``event`` after ``seconds`` unless the state changes first (one per agent:
    a new one replaces the old; ``seconds=None`` cancels)."""

    seconds: float | None = attrs.field(converter=_optional_delay)
    """Finite and >= 0 (``InvalidArgumentError`` otherwise), or None."""
    event: str = attrs.field(default="state_timeout", validator=_event)
    payload: Any = None
    priority: int = attrs.field(default=Priority.NORMAL, validator=_priority)


@final
@attrs.frozen
class EventTimeout:
    """Deliver ``event`` after ``seconds`` unless any event is processed first (one per agent;
    ``seconds=None`` cancels)."""

    seconds: float | None = attrs.field(converter=_optional_delay)
    """Finite and >= 0 (``InvalidArgumentError`` otherwise), or None."""
    event: str = attrs.field(default="event_timeout", validator=_event)
    payload: Any = None
    priority: int = attrs.field(default=Priority.NORMAL, validator=_priority)


@final
@attrs.frozen
class Timer:
    """A named timer: deliver ``event`` after ``seconds`` (or at the clock time ``seconds``
    when ``absolute=True``). Arming a name again replaces it; it survives state changes."""

    name: str
    seconds: float = attrs.field(converter=_number)
    """Finite (``InvalidArgumentError`` otherwise); >= 0 unless ``absolute``."""
    event: str = attrs.field(validator=_event)
    payload: Any = None
    priority: int = attrs.field(default=Priority.NORMAL, validator=_priority)
    absolute: bool = False

    def __attrs_post_init__(self) -> None:
        if not self.absolute and self.seconds < 0:
            raise InvalidArgumentError(f"seconds must be >= 0, got {self.seconds!r}")


@final
@attrs.frozen
class CancelTimer:
    """Cancel the named timer (nothing happens if it is not armed)."""

    name: str


@final
@attrs.frozen
class Reply:
    """Answer the request that carried the current event (``Runtime.request``)."""

    value: Any = None


@final
@attrs.frozen
class Send:
    """Queue an event for another agent of the same runtime, from inside the drain loop.

    An undeliverable message (no such agent, unknown event, full mailbox) becomes an
    ``UNDELIVERABLE`` dead letter; the sender's step stands.
    """

    agent_id: Any
    event: str | int
    """An event name, or a code of the receiver's machine."""
    payload: Any = None
    priority: int = attrs.field(default=Priority.NORMAL, validator=_priority)


@final
@attrs.frozen
class Work:
    """Run ``fn(*args)`` (async) as a task of the agent, in a cancel scope the runtime owns.

    When it returns, ``done`` is delivered with the result as payload; when it raises,
    ``failed`` is delivered with the exception (or, if ``failed`` is None, the failure is a
    dead letter). ``Runtime.interrupt`` cancels the agent's work and delivers ``interrupted``.
    Needs ``open_runtime``.
    """

    fn: Callable[..., Awaitable[Any]] = attrs.field(validator=attrs.validators.is_callable())
    args: tuple[Any, ...] = attrs.field(default=(), converter=tuple)
    done: str | None = attrs.field(default=None, validator=_optional_event)
    failed: str | None = attrs.field(default=None, validator=_optional_event)


RUNTIME_ACTIONS = (StateTimeout, EventTimeout, Timer, CancelTimer, Work)
"""Actions the runtime applies (time and tasks); the dispatcher applies the others."""


@final
@attrs.define(eq=False)
class Prepared:
    """A validated action list, event names resolved to codes of the agent's machine."""

    postpone: bool = False
    front: list[tuple[int, Any, int]] = attrs.Factory(list)
    """NextEvents as (event code, payload, lane), in order."""
    reply: tuple[bool, Any] | None = None
    sends: list[Send] = attrs.Factory(list)
    runtime: list[tuple[Any, int]] = attrs.Factory(list)
    """Runtime actions with their event code (-1 where none)."""


def lane(priority: Any) -> int:
    """A priority as a lane number: anything integral (``Priority``, int, numpy integer)
    in 0..3; otherwise ``InvalidArgumentError``."""
    try:
        value = -1 if isinstance(priority, bool) else operator.index(priority)
    except TypeError:
        value = -1
    if 0 <= value <= 3:
        return value
    raise InvalidArgumentError(f"priority must be 0..3 (a Priority), got {priority!r}")


def prepare(machine: Machine, actions: Sequence[Any]) -> Prepared:
    """Validate ``actions`` for an agent running ``machine`` (the twin's path; the compiled
    dispatcher does the same in C).

    Raises:
        TypeError: Something that is not an action, or two ``Reply``.
        UnknownEventError: An action names an event the machine does not have.
        InvalidArgumentError: A priority outside 0..3.
    """
    out = Prepared()
    for action in actions:
        kind = type(action)
        if kind is Postpone:
            out.postpone = True
        elif kind is NextEvent:
            out.front.append(
                (machine.event_code(action.event), action.payload, int(action.priority))
            )
        elif kind is Reply:
            if out.reply is not None:
                raise TypeError("a step can Reply only once")
            out.reply = (True, action.value)
        elif kind is Send:
            out.sends.append(action)
        elif kind in (StateTimeout, EventTimeout, Timer):
            lane(action.priority)
            out.runtime.append((action, machine.event_code(action.event)))
        elif kind in (CancelTimer, Work):
            if kind is Work:
                for name in (action.done, action.failed):
                    if name is not None:
                        machine.event_code(name)
            out.runtime.append((action, -1))
        else:
            raise TypeError(f"{action!r} is not an action")
    return out
