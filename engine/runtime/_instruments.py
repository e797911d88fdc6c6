"""Instruments: optional observers of the runtime, costing nothing for hooks nobody installed.

Theory of operation (trio's ``Instrument``): installed instruments are indexed by hook name,
and only the hooks an instrument actually defines are registered. The runtime connects a
dispatcher hook only while at least one instrument wants it; while none does, the drain loop
does not even make the check (``before_step`` and ``after_transition`` take the steps off
the compiled fast path only while installed). An instrument that raises is removed from
every hook and the failure is kept (``Runtime.instrument_failures()``); it never breaks the
runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, final

import attrs

from ._ring import Ring

HOOKS = ("before_step", "after_transition", "on_overflow", "on_failure", "on_dead_letter")


class Instrument:
    """Base class for instruments: define the hooks you want; the others cost nothing.

    Instruments need not subclass this: any object with some of these methods will do.
    """

    def before_step(self, agent_id: Any, state: str, event: str) -> None:
        """An agent is about to process ``event`` in ``state``."""

    def after_transition(
        self, agent_id: Any, source: str, event: str, target: str, outputs: tuple[Any, ...]
    ) -> None:
        """An agent processed ``event``: ``source`` -> ``target``, emitting ``outputs``."""

    def on_overflow(self, agent_id: Any, event: str, payload: Any, policy: str) -> None:
        """A bounded mailbox was full: ``policy`` is ``"reject"`` or ``"drop_oldest"``, and
        ``event``/``payload`` are the message refused or dropped."""

    def on_failure(self, agent_id: Any, error: BaseException) -> None:
        """A message failed (before supervision decides)."""

    def on_dead_letter(self, letter: Any) -> None:
        """A dead letter was recorded."""


@final
@attrs.frozen
class InstrumentFailure:
    """An instrument raised in ``hook`` and was removed."""

    instrument: Any
    hook: str
    error: BaseException


def _defines(instrument: Any, hook: str) -> bool:
    method = getattr(type(instrument), hook, None)
    if method is None:
        return callable(getattr(instrument, hook, None))
    return method is not getattr(Instrument, hook, None)


@final
class Instruments:
    """The installed instruments, by hook (private to the runtime)."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.hooks: dict[str, list[Any]] = {hook: [] for hook in HOOKS}
        self.failures: Ring[InstrumentFailure] = Ring(1_000)
        self._on_change = on_change

    def add(self, instrument: Any) -> None:
        hooks = [hook for hook in HOOKS if _defines(instrument, hook)]
        if not hooks:
            raise TypeError(f"{instrument!r} defines none of the hooks {HOOKS}")
        for hook in hooks:
            if instrument not in self.hooks[hook]:
                self.hooks[hook].append(instrument)
        self._on_change()

    def remove(self, instrument: Any) -> None:
        for listeners in self.hooks.values():
            if instrument in listeners:
                listeners.remove(instrument)
        self._on_change()

    def __bool__(self) -> bool:
        return any(self.hooks.values())

    def call(self, hook: str, *args: Any) -> None:
        for instrument in list(self.hooks[hook]):
            try:
                getattr(instrument, hook)(*args)
            except Exception as exc:
                self.failures.append(InstrumentFailure(instrument, hook, exc))
                self.remove(instrument)


@final
class DeadLetterTap:
    """Stands in for the dead-letter ring while ``on_dead_letter`` instruments are installed."""

    __slots__ = ("_instruments", "_ring")

    def __init__(self, ring: Ring[Any], instruments: Instruments) -> None:
        self._ring = ring
        self._instruments = instruments

    def append(self, letter: Any) -> None:
        self._ring.append(letter)
        self._instruments.call("on_dead_letter", letter)
