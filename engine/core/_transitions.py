"""Read the ``transitions`` library's definitions (dict format or a live flat machine).

Only what a flat Mealy table can express is accepted: conditions, callbacks and nested
states change behaviour that a table cannot carry, so each one is reported as a problem
rather than silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._exceptions import MachineDefinitionError

_CALLBACK_KEYS = ("before", "after", "prepare")
_CONDITION_KEYS = ("conditions", "unless")
_STATE_CALLBACKS = ("on_enter", "on_exit", "on_timeout")
_MACHINE_CALLBACKS = (
    "before_state_change",
    "after_state_change",
    "prepare_event",
    "finalize_event",
    "on_exception",
)


@attrs.frozen
class ImportedSpec:
    """A flat machine read from ``transitions``, ready for ``Machine(...)``."""

    name: str
    states: list[str]
    initial: str
    rows: list[tuple[Any, ...]]
    events: list[str]


def read_transitions(source: Mapping[str, Any] | Any, name: str | None) -> ImportedSpec:
    """Return the flat spec of ``source``; raise ``MachineDefinitionError`` listing problems."""
    if isinstance(source, Mapping):
        return _read_dict(source, name)
    try:
        from transitions import Machine as TMachine
        from transitions.extensions.nesting import HierarchicalMachine
    except ImportError as exc:  # pragma: no cover - transitions is a dependency
        raise MachineDefinitionError(
            name or "?", [f"transitions is not importable: {exc}"]
        ) from exc
    if isinstance(source, HierarchicalMachine):
        raise MachineDefinitionError(
            name or source.name or "machine",
            ["nested (hierarchical) machines are not supported: flatten the states first"],
        )
    if not isinstance(source, TMachine):
        raise MachineDefinitionError(
            name or "machine",
            [f"expected a transitions dict spec or transitions.Machine, got {type(source)!r}"],
        )
    return _read_live(source, name)


def _read_dict(spec: Mapping[str, Any], name: str | None) -> ImportedSpec:
    problems: list[str] = []
    mname = name or str(spec.get("name") or "machine")
    unknown = set(spec) - {"name", "states", "transitions", "initial", "auto_transitions"}
    if unknown:
        problems.append(f"unsupported keys: {sorted(unknown)}")
    states: list[str] = []
    raw_states = spec.get("states")
    if not isinstance(raw_states, Sequence) or isinstance(raw_states, str):
        problems.append(f"'states' must be a list, got {raw_states!r}")
        raw_states = []
    for st in raw_states:
        if isinstance(st, Mapping):
            if st.get("children") or st.get("states"):
                problems.append(
                    f"state {st.get('name')!r} is nested: nested machines are not supported"
                )
            problems += [
                f"state {st.get('name')!r}: {k} callbacks cannot be imported; bind a handler"
                for k in _STATE_CALLBACKS
                if st.get(k)
            ]
            st = st.get("name")
        states.append(st)
    initial = spec.get("initial")
    if initial is None:
        problems.append("'initial' is required")
    rows: list[tuple[Any, ...]] = []
    events: list[str] = []
    raw_rows = spec.get("transitions", [])
    if not isinstance(raw_rows, Sequence) or isinstance(raw_rows, str):
        problems.append(f"'transitions' must be a list, got {raw_rows!r}")
        raw_rows = []
    for i, row in enumerate(raw_rows):
        if isinstance(row, Mapping):
            extra = set(row) - {"trigger", "source", "dest", *_CALLBACK_KEYS, *_CONDITION_KEYS}
            if extra:
                problems.append(f"transition {i}: unsupported keys {sorted(extra)}")
            trigger, src, dest = row.get("trigger"), row.get("source"), row.get("dest")
            problems += _callback_problems(f"transition {i}", row)
        elif isinstance(row, Sequence) and not isinstance(row, str) and len(row) == 3:
            trigger, src, dest = row
        else:
            problems.append(
                f"transition {i}: expected [trigger, source, dest] or a dict, got {row!r}"
            )
            continue
        if dest == "=":
            dest = None
        rows.append((src, trigger, dest))
        if isinstance(trigger, str) and trigger not in events:
            events.append(trigger)
    if problems:
        raise MachineDefinitionError(mname, problems)
    return ImportedSpec(mname, states, str(initial), rows, events)


def _callback_problems(where: str, row: Mapping[str, Any]) -> list[str]:
    out = []
    if any(row.get(k) for k in _CONDITION_KEYS):
        out.append(f"{where}: conditions cannot be expressed in a table; use a handler")
    if any(row.get(k) for k in _CALLBACK_KEYS):
        out.append(f"{where}: callbacks (before/after/prepare) cannot be imported; use a handler")
    return out


def _read_live(machine: Any, name: str | None) -> ImportedSpec:
    problems: list[str] = []
    mname = name or machine.name or "machine"
    states = list(machine.states)
    for sname, st in machine.states.items():
        problems += [
            f"state {sname!r}: {k} callbacks cannot be imported; bind a handler"
            for k in _STATE_CALLBACKS
            if getattr(st, k, None)
        ]
    problems += [
        f"machine-level {k} callbacks cannot be imported"
        for k in _MACHINE_CALLBACKS
        if getattr(machine, k, None)
    ]
    auto = {f"to_{s}" for s in states} if machine.auto_transitions else set()
    rows: list[tuple[Any, ...]] = []
    events: list[str] = []
    for trigger, event in machine.events.items():
        if trigger in auto:
            continue
        events.append(trigger)
        for src, transitions in event.transitions.items():
            if len(transitions) > 1:
                problems.append(
                    f"({src!r}, {trigger!r}) has {len(transitions)} alternative transitions;"
                    " a table allows one"
                )
            for tr in transitions:
                problems += _callback_problems(
                    f"transition ({src!r}, {trigger!r})",
                    {k: getattr(tr, k, None) for k in (*_CALLBACK_KEYS, "conditions")},
                )
                rows.append((src, trigger, tr.dest))
    if problems:
        raise MachineDefinitionError(mname, problems)
    return ImportedSpec(mname, states, str(machine.initial), rows, events)
