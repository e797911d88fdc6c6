"""The event bus: ``on(type, handler)``, ``on([types], handler)``, ``on_any(handler)``.

Theory of operation: handlers are plain synchronous callables, kept per event type in tuples
that are replaced, never mutated, when someone subscribes or unsubscribes; ``emit`` reads the
tuple once and calls each handler in subscription order (the type's handlers, then the
any-handlers). So a handler may subscribe or unsubscribe anyone, itself included, while an
event is being delivered: the change counts from the next event. Stream events are emitted
from inside the engine's drain loop (the bus is an effector), lifecycle events from the
command that caused them; a handler must not block. A handler that raises is not removed and
breaks nothing: its error is kept as a ``HandlerFailure`` (the last 1000, ``failures()``;
``statistics()`` counts all) and the other handlers still get the event. Only
``BaseException``s that are not ``Exception``s (cancellation, KeyboardInterrupt) go through.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import cast, final

import attrs

import engine

from ._values import EVENT_TYPES, ConversationEvent, HandlerFailure, _brief

Handler = Callable[[ConversationEvent], object]
Unsubscribe = Callable[[], None]


@final
@attrs.frozen
class BusStatistics:
    """What the bus has done."""

    emitted: int
    """Events emitted."""
    delivered: int
    """Handler calls that returned."""
    failed: int
    """Handler calls that raised (kept in ``failures()``, the last 1000)."""
    handlers: int
    """Subscriptions now (one ``on([a, b], h)`` counts 2)."""


@final
class EventBus:
    """Subscriptions to a conversation runtime's events (``ConversationRuntime.on`` etc.)."""

    def __init__(self) -> None:
        self._by_type: dict[str, tuple[Handler, ...]] = {}
        self._any: tuple[Handler, ...] = ()
        self._failures: deque[HandlerFailure] = deque(maxlen=1000)
        self._emitted = 0
        self._delivered = 0
        self._failed = 0

    def on(self, types: str | Iterable[str], handler: Handler) -> Unsubscribe:
        """Call ``handler(event)`` for each event of ``types`` (one type or several).

        Returns:
            A function that ends this subscription (calling it again does nothing).

        Raises:
            InvalidArgumentError: An unknown event type, no types, or a handler that is not
                callable.
        """
        given = [types] if isinstance(types, str) else _names(types)
        names: list[str] = []
        for name in given:
            if type(name) is not str or name not in EVENT_TYPES:
                raise engine.InvalidArgumentError(
                    f"no event type {_brief(name)}; types: {', '.join(EVENT_TYPES)}"
                )
            names.append(name)
        if not names:
            raise engine.InvalidArgumentError("on() needs at least one event type")
        _check_callable(handler)
        token = _Token(handler)
        for name in dict.fromkeys(names):
            self._by_type[name] = (*self._by_type.get(name, ()), token)

        def unsubscribe() -> None:
            for name in dict.fromkeys(names):
                left = tuple(h for h in self._by_type.get(name, ()) if h is not token)
                if left:
                    self._by_type[name] = left
                else:
                    self._by_type.pop(name, None)

        return unsubscribe

    def on_any(self, handler: Handler) -> Unsubscribe:
        """Call ``handler(event)`` for every event.

        Returns:
            A function that ends this subscription (calling it again does nothing).

        Raises:
            InvalidArgumentError: ``handler`` is not callable.
        """
        _check_callable(handler)
        token = _Token(handler)
        self._any = (*self._any, token)

        def unsubscribe() -> None:
            self._any = tuple(h for h in self._any if h is not token)

        return unsubscribe

    def emit(self, event: ConversationEvent) -> None:
        """Deliver ``event`` to its type's handlers, then to the any-handlers."""
        self._emitted += 1
        handlers = self._by_type.get(event.type, ())
        if self._any:
            handlers = handlers + self._any
        for handler in handlers:
            try:
                handler(event)
            except Exception as exc:
                self._failed += 1
                self._failures.append(HandlerFailure(event, repr(handler), exc))
            else:
                self._delivered += 1

    def failures(self) -> list[HandlerFailure]:
        """The last 1000 handler errors, oldest first."""
        return list(self._failures)

    def statistics(self) -> BusStatistics:
        """Counts of events, handler calls and failures."""
        count = sum(len(h) for h in self._by_type.values()) + len(self._any)
        return BusStatistics(self._emitted, self._delivered, self._failed, count)


class _Token:
    """One subscription (two subscriptions of one function are two tokens)."""

    __slots__ = ("handler",)

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def __call__(self, event: ConversationEvent) -> object:
        return self.handler(event)

    def __repr__(self) -> str:
        return _brief(self.handler)


def _names(types: object) -> list[object]:
    try:
        return list(cast(Iterable[object], types))
    except TypeError:
        raise engine.InvalidArgumentError(
            f"event types must be a string or an iterable of strings, not {_brief(types)}"
        ) from None


def _check_callable(handler: object) -> None:
    if not callable(handler):
        raise engine.InvalidArgumentError(f"a handler must be callable, not {_brief(handler)}")
