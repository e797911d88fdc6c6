"""The sans-IO Mealy core: a machine definition compiled once into int32 tables.

Theory of operation: a machine has S states and E events, both interned to indexes in
definition order. Three tables of S*E int32 cells, indexed ``state * E + event``, say what a
step does: ``next`` (destination state, -1 = no transition), ``output`` (index into
``outputs``, -1 = none) and ``handler`` (index into the bound handler list, -1 = none). The
dispatcher reads the same arrays, so a handler registered later is seen by running agents.
Nothing here knows about time, I/O, trio or agents: ``step()`` is a pure table lookup.

Names are plain ``str``: a ``StrEnum`` member (or any ``str`` subclass) given as a state or
event name is accepted everywhere a name is taken and stored as its plain string value.
Outputs are interned by type and value all the way down, so ``True``, ``1``, ``1.0``, ``(1,)``
and ``(True,)`` stay five outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final

import numpy as np

from . import _diagram
from ._exceptions import (
    InvalidTransitionError,
    MachineDefinitionError,
    UnknownEventError,
    UnknownStateError,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    import numpy.typing as npt

    from ..hotpath._python import AgentContext, Event
    from ._types import Step

    Handler: TypeAlias = Callable[[AgentContext, Event], Step | None]
    """A handler: ``(context, event) -> Step | None``."""

H = TypeVar("H", bound="Handler")

ANY_STATE = "*"
"""Source wildcard: the row applies to every state without an explicit row for its event."""

Row = tuple[Any, ...]

CompiledRow = tuple[tuple[int, ...] | None, int, int | None, int]
"""A validated row: (source indexes or None for ``"*"``, event, dest or None, output code)."""


@final
class Machine:
    """A Mealy machine definition: states, events, a transition table and optional handlers.

    Args:
        name: A name for messages and diagrams.
        states: State names, in order; the first index is 0.
        initial: The state new agents start in.
        transitions: Rows ``(source, event, dest)`` or ``(source, event, dest, output)``.
            ``source`` is a state, a list of states, or ``"*"`` (every state that has no
            explicit row for the event). ``dest=None`` stays in the current state. ``output``
            is any hashable value; ``None`` means no output.
        events: Optional event names, to fix their order or declare events without rows.
        unhandled: ``"error"`` (an event with no transition is a failure, state unchanged) or
            ``"ignore"`` (it is consumed and does nothing).
        version: The definition's version (an int >= 1), for ``Runtime.upgrade`` and what
            statistics report; two versions of one machine share its name.

    Names may be ``str`` subclasses (``StrEnum`` members); they are stored as plain ``str``.

    Raises:
        MachineDefinitionError: Listing every problem in the definition at once.
    """

    __slots__ = (
        "_event_index",
        "_handler_fns",
        "_handler_rows",
        "_rows",
        "_state_index",
        "events",
        "handler_table",
        "initial",
        "name",
        "next_table",
        "output_table",
        "outputs",
        "states",
        "unhandled",
        "version",
    )

    name: str
    states: tuple[str, ...]
    events: tuple[str, ...]
    outputs: tuple[Hashable, ...]
    initial: str
    unhandled: Literal["error", "ignore"]
    version: int
    next_table: npt.NDArray[np.int32]
    output_table: npt.NDArray[np.int32]
    handler_table: npt.NDArray[np.int32]

    def __init__(
        self,
        name: str,
        states: Sequence[str],
        initial: str,
        transitions: Iterable[Row],
        *,
        events: Sequence[str] | None = None,
        unhandled: Literal["error", "ignore"] = "error",
        version: int = 1,
    ) -> None:
        problems: list[str] = []
        if type(version) is not int or version < 1:
            problems.append(f"version must be an int >= 1, got {version!r}")
        if not isinstance(name, str) or not name:
            problems.append(f"name must be a non-empty string, got {name!r}")
            name = str(name)
        name = _plain(name)
        state_list = _names("state", states, problems)
        if ANY_STATE in state_list:
            problems.append(f"{ANY_STATE!r} is reserved for 'any state' and cannot be a state")
        state_index = {s: i for i, s in enumerate(state_list)}
        if not state_list:
            problems.append("a machine needs at least one state")
        if not isinstance(initial, str) or _plain(initial) not in state_index:
            problems.append(f"initial state {initial!r} is not one of the states")
        else:
            initial = _plain(initial)
        if not (isinstance(unhandled, str) and unhandled in ("error", "ignore")):
            problems.append(f"unhandled must be 'error' or 'ignore', got {unhandled!r}")

        declared = _names("event", events, problems) if events is not None else None
        event_index: dict[str, int] = {e: i for i, e in enumerate(declared or ())}
        outputs: dict[Hashable, tuple[int, Hashable]] = {}  # True, 1, 1.0 differ (_output_key)
        rows = _parse_rows(
            transitions, state_index, event_index, declared is not None, outputs, problems
        )
        if problems:
            raise MachineDefinitionError(name, problems)

        n_s, n_e = len(state_list), len(event_index)
        next_t = np.full(n_s * n_e, -1, dtype=np.int32)
        out_t = np.full(n_s * n_e, -1, dtype=np.int32)
        # wildcard rows first, explicit rows overwrite them
        for srcs, ev, dest, code in sorted(rows, key=lambda r: r[0] is not None):
            for s in range(n_s) if srcs is None else srcs:
                cell = s * n_e + ev
                next_t[cell] = s if dest is None else dest
                out_t[cell] = code

        self.name = name
        self.states = tuple(state_list)
        self.events = tuple(event_index)
        self.outputs = tuple(value for _, value in outputs.values())
        self.initial = initial
        self.unhandled = unhandled
        self.version = version
        self.next_table = next_t
        self.output_table = out_t
        self.handler_table = np.full(n_s * n_e, -1, dtype=np.int32)
        self._state_index = state_index
        self._event_index = event_index
        self._rows: tuple[CompiledRow, ...] = tuple(rows)
        self._handler_fns: list[Handler] = []
        self._handler_rows: dict[tuple[int | None, int], int] = {}

    # -- lookups -------------------------------------------------------------------------

    def state_code(self, state: str) -> int:
        """Return the index of ``state`` (a ``str`` subclass is looked up by its value).

        Raises:
            UnknownStateError: If it is not a state of this machine.
        """
        try:
            return self._state_index[_plain(state)]
        except (KeyError, TypeError):
            raise UnknownStateError(self.name, state) from None

    def event_code(self, event: str) -> int:
        """Return the index of ``event`` (what ``send_many`` takes as an event code).

        A ``str`` subclass (a ``StrEnum`` member) is looked up by its value.

        Raises:
            UnknownEventError: If it is not an event of this machine.
        """
        try:
            return self._event_index[_plain(event)]
        except (KeyError, TypeError):
            raise UnknownEventError(self.name, event) from None

    @property
    def state_index(self) -> Mapping[str, int]:
        """Read-only mapping of state name to index."""
        return self._state_index

    @property
    def event_index(self) -> Mapping[str, int]:
        """Read-only mapping of event name to index (the hot path reads it directly)."""
        return self._event_index

    @property
    def handlers(self) -> Sequence[Handler]:
        """Bound handlers, indexed by ``handler_table`` cells (the hot path reads it directly)."""
        return self._handler_fns

    # -- the pure step -------------------------------------------------------------------

    def step(self, state: str, event: str) -> tuple[str, Hashable | None]:
        """Apply the table to ``(state, event)`` and return ``(next_state, output)``.

        Handlers are not called (they need an agent); with ``unhandled="ignore"`` a missing
        transition returns ``(state, None)``. The state returned is always a plain ``str``.

        Raises:
            UnknownStateError: ``state`` is not a state.
            UnknownEventError: ``event`` is not an event.
            InvalidTransitionError: No transition and ``unhandled="error"``.
        """
        s, e = self.state_code(state), self.event_code(event)
        cell = s * len(self.events) + e
        nxt = int(self.next_table[cell])
        if nxt < 0:
            if self.unhandled == "ignore":
                return self.states[s], None
            raise InvalidTransitionError(self.name, self.states[s], self.events[e])
        out = int(self.output_table[cell])
        return self.states[nxt], (self.outputs[out] if out >= 0 else None)

    # -- handlers ------------------------------------------------------------------------

    def handler(self, state: str, event: str) -> Callable[[H], H]:
        """Decorator binding a Python handler to one ``(state, event)`` slot (``"*"`` = all).

        The handler is called as ``handler(context, event)`` when an agent in ``state``
        processes ``event``; it may return a ``Step`` to choose the next state and outputs,
        or ``None`` to apply the slot's table row. A slot with a handler but no row is
        handled (it stays in its state unless the handler says otherwise). An explicit
        state's handler takes precedence over a ``"*"`` handler. The decorator returns the
        function unchanged, with its own type.

        Raises:
            MachineDefinitionError: Unknown state or event, a slot bound twice, or a
                non-callable.
        """
        problems = []
        s: int | None = None  # None: every state ("*")
        if not (isinstance(state, str) and _plain(state) == ANY_STATE):
            s = self._state_index.get(_plain(state)) if isinstance(state, str) else None
            if s is None:
                problems.append(f"handler for unknown state {state!r}")
        e = self._event_index.get(_plain(event)) if isinstance(event, str) else None
        if e is None:
            problems.append(f"handler for unknown event {event!r}")
        if problems or e is None:
            raise MachineDefinitionError(self.name, problems)
        key = (s, e)
        if key in self._handler_rows:
            where = ANY_STATE if s is None else self.states[s]
            raise MachineDefinitionError(
                self.name, [f"a handler is already bound to ({where!r}, {self.events[e]!r})"]
            )

        def bind(fn: H) -> H:
            if not callable(fn):
                raise MachineDefinitionError(self.name, [f"handler {fn!r} is not callable"])
            self._handler_rows[key] = len(self._handler_fns)
            self._handler_fns.append(fn)
            self._compile_handlers()
            return fn

        return bind

    def _compile_handlers(self) -> None:
        n_e = len(self.events)
        table = np.full(len(self.states) * n_e, -1, dtype=np.int32)
        for (s, e), idx in sorted(self._handler_rows.items(), key=lambda kv: kv[0][0] is not None):
            for st in range(len(self.states)) if s is None else (s,):
                table[st * n_e + e] = idx
        self.handler_table[:] = table  # in place: dispatchers hold this array

    # -- import and export ---------------------------------------------------------------

    @classmethod
    def from_transitions(
        cls,
        source: Mapping[str, Any] | Any,
        *,
        name: str | None = None,
        unhandled: Literal["error", "ignore"] | None = None,
    ) -> Machine:
        """Build a machine that behaves as a ``transitions`` machine: its dict format or a
        live flat ``transitions.Machine``.

        transitions tries a trigger's transitions for the current state in the order they
        were added and fires the first whose conditions pass; a ``"*"`` source is expanded to
        the states known when the row is added. So a ``"*"`` row listed before an explicit
        row for the same trigger wins in every state, and the explicit row never fires: the
        table says the same. ``"="`` (reflexive), internal (``dest=None``), ``auto_transitions``
        (the ``to_<state>`` triggers, listed after the others), ``ordered_transitions`` and an
        initial state outside ``states`` mean what they mean in transitions. Outputs are
        ``None``: transitions has no outputs.

        Args:
            source: A dict spec (the keyword arguments of ``transitions.Machine``) or a live
                ``transitions.Machine``.
            name: The machine's name; by default the source's ``name``, else ``"machine"``.
            unhandled: ``None`` follows ``ignore_invalid_triggers`` (machine-wide, or per
                state through stay rows); ``"error"`` or ``"ignore"`` overrides it.

        Raises:
            MachineDefinitionError: Listing everything a flat Mealy table cannot express
                (conditions, callbacks, nested states, unknown keys, ...) together with the
                table's own problems: nothing is dropped silently.
        """
        from ._transitions import read_transitions

        spec = read_transitions(source, name, unhandled)
        try:
            machine = cls(
                spec.name,
                spec.states,
                spec.initial,
                spec.rows,
                events=spec.events,
                unhandled=spec.unhandled,
            )
        except MachineDefinitionError as err:
            raise MachineDefinitionError(spec.name, [*spec.problems, *err.problems]) from None
        if spec.problems:
            raise MachineDefinitionError(spec.name, spec.problems)
        return machine

    def to_mermaid(self, highlight: str | None = None) -> str:
        """Return a Mermaid ``stateDiagram-v2`` of the machine.

        Edges are labelled ``event / output``; ``"*"`` rows start at a dashed ``*`` node;
        slots with a handler end in `` [handler]``. Every label is escaped, so any state,
        event or output text gives a valid diagram.

        Args:
            highlight: A state to mark (an agent's current state), or ``None``.

        Raises:
            UnknownStateError: ``highlight`` is not a state.
        """
        return _diagram.mermaid(self, highlight)

    def to_dot(self, highlight: str | None = None) -> str:
        """Return a Graphviz DOT ``digraph`` of the machine (the same drawing as Mermaid's).

        Args:
            highlight: A state to mark (an agent's current state), or ``None``.

        Raises:
            UnknownStateError: ``highlight`` is not a state.
        """
        return _diagram.dot(self, highlight)

    def __repr__(self) -> str:
        return (
            f"<Machine {self.name!r}: {len(self.states)} states, {len(self.events)} events, "
            f"{len(self._handler_fns)} handlers>"
        )


def _output_key(value: Hashable) -> Hashable:
    """What makes two outputs the same output: equal *and* of the same types, all the way
    down (``True``, ``1``, ``1.0``, ``(True,)``, ``(1,)``, ``0.0`` and ``-0.0`` are six)."""
    if isinstance(value, tuple):
        return (type(value), tuple(_output_key(item) for item in value))
    if isinstance(value, float):
        return (float, value, math.copysign(1.0, value))
    return (type(value), value)


def _plain(name: str) -> str:
    """``name`` as a plain ``str`` (the value of a ``StrEnum`` member or ``str`` subclass)."""
    return name if type(name) is str else str.__str__(name)


def _names(kind: str, names: object, problems: list[str]) -> list[str]:
    if isinstance(names, str | bytes) or not isinstance(names, Iterable):
        problems.append(f"{kind}s must be a sequence of strings, got {names!r}")
        return []
    out: dict[str, None] = {}
    for n in names:
        if not isinstance(n, str) or not n:
            problems.append(f"{kind} name must be a non-empty string, got {n!r}")
        elif _plain(n) in out:
            problems.append(f"duplicate {kind} {n!r}")
        else:
            out[_plain(n)] = None
    return list(out)


def _parse_rows(
    transitions: object,
    state_index: Mapping[str, int],
    event_index: dict[str, int],
    events_declared: bool,
    outputs: dict[Hashable, tuple[int, Hashable]],
    problems: list[str],
) -> list[CompiledRow]:
    """Validate rows; collect problems; intern new events (unless they were declared) and
    outputs (by type and value, in definition order)."""
    rows: list[CompiledRow] = []
    seen: dict[tuple[int | None, int], int] = {}
    if isinstance(transitions, str | bytes) or not isinstance(transitions, Iterable):
        problems.append(f"transitions must be a sequence of rows, got {transitions!r}")
        return rows
    for i, row in enumerate(transitions):
        where = f"row {i} {row!r}"
        if not isinstance(row, tuple | list) or len(row) not in (3, 4):
            problems.append(f"{where}: must be (source, event, dest[, output])")
            continue
        src, event, dest = row[0], row[1], row[2]
        out = row[3] if len(row) == 4 else None
        bad = len(problems)
        srcs: tuple[int, ...] | None = None
        if not (isinstance(src, str) and _plain(src) == ANY_STATE):
            src_names = [src] if isinstance(src, str) else src
            if not isinstance(src_names, list | tuple) or not src_names:
                problems.append(f"{where}: source must be a state, a list of states or '*'")
            else:
                for s in src_names:
                    if not isinstance(s, str) or _plain(s) not in state_index:
                        problems.append(f"{where}: unknown source state {s!r}")
                if len(problems) == bad:
                    srcs = tuple(state_index[_plain(s)] for s in src_names)
        if not isinstance(event, str) or not event:
            problems.append(f"{where}: event must be a non-empty string")
        elif _plain(event) not in event_index:
            if events_declared:
                problems.append(f"{where}: event {event!r} is not among the declared events")
            else:
                event_index[_plain(event)] = len(event_index)
        if dest is not None and (not isinstance(dest, str) or _plain(dest) not in state_index):
            problems.append(f"{where}: unknown destination state {dest!r}")
        try:
            hash(out)
        except TypeError:
            problems.append(f"{where}: output {out!r} is not hashable")
        if len(problems) > bad:
            continue
        ev = event_index[_plain(event)]
        for s in (None,) if srcs is None else srcs:
            if (s, ev) in seen:
                what = (
                    "'*'" if s is None else repr(next(k for k, v in state_index.items() if v == s))
                )
                problems.append(
                    f"{where}: a second row for ({what}, {_plain(event)!r}) "
                    f"(first was row {seen[s, ev]})"
                )
            seen[s, ev] = i
        code = -1 if out is None else outputs.setdefault(_output_key(out), (len(outputs), out))[0]
        rows.append((srcs, ev, None if dest is None else state_index[_plain(dest)], code))
    return rows
