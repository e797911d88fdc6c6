"""Read the ``transitions`` library's definitions (its dict format or a live flat machine).

Theory of operation: transitions keeps, per trigger, an ordered list of ``Transition`` objects
per source state (``Event.transitions[source]``). A trigger tries the list of the model's
current state in the order the transitions were added and fires the first whose conditions
pass (``Event._process``); a state with no list is an invalid trigger, raised or ignored by
``ignore_invalid_triggers`` (``Event._is_valid_source``). A ``"*"`` source is expanded, when
the row is added, to the states known then (``Machine.add_transition``), so a ``"*"`` row
listed before an explicit row for the same trigger comes first in every state's list and
wins there: the explicit row never fires. We therefore never hand ``"*"`` on to our table:
we read the expanded per-source lists and keep the first transition of each, which is what
transitions fires when there are no conditions (and conditions are reported).

The dict format is read by building the ``transitions.Machine`` it describes, without a model
(so no callback is resolved and no user code runs), from a copy of the spec that we checked
key by key first; transitions itself then expands ``"*"``, ``"="``, the automatic
``to_<state>`` triggers, ``ordered_transitions`` and an initial state missing from
``states``, exactly as it would for the user. What a table cannot carry is reported, all of
it at once; what it can is honoured: ``ignore_invalid_triggers`` (machine-wide or per state),
``queued`` (our agents run each step to completion, which is queued processing), and options
that only matter to callbacks or to model binding (``send_event``, ``model_attribute``,
``model_override``) are accepted, since every callback is reported anyway.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from ._exceptions import MachineDefinitionError

_TRANSITION_ARGS = (
    "trigger",
    "source",
    "dest",
    "conditions",
    "unless",
    "before",
    "after",
    "prepare",
)
"""``Machine.add_transition``'s parameters, in positional order."""
_CONDITIONS = ("conditions", "unless")
_TRANSITION_CALLBACKS = ("prepare", "before", "after")
_STATE_KEYS = ("name", "on_enter", "on_exit", "ignore_invalid_triggers", "final")
_NESTED_KEYS = ("children", "states", "initial", "parallel", "transitions")
_STATE_CALLBACKS = ("on_enter", "on_exit", "on_timeout", "on_failure")
_MACHINE_CALLBACKS = (
    "before_state_change",
    "after_state_change",
    "prepare_event",
    "finalize_event",
    "on_exception",
    "on_final",
)
_MACHINE_KEYS = (
    "name",
    "states",
    "initial",
    "transitions",
    "auto_transitions",
    "ordered_transitions",
    "ignore_invalid_triggers",
    "queued",
    "send_event",
    "model_attribute",
    "model_override",
    *_MACHINE_CALLBACKS,
)


@attrs.frozen
class ImportedSpec:
    """A flat machine read from ``transitions``, ready for ``Machine(...)``."""

    name: str
    """The machine's name."""
    states: list[str]
    """State names, in transitions' order."""
    initial: str
    """The initial state."""
    rows: list[tuple[Any, ...]]
    """One ``(source, trigger, dest)`` row per source state and trigger: no wildcards."""
    events: list[str]
    """Triggers: the user's in transitions' order, then the automatic ``to_<state>`` ones."""
    unhandled: Literal["error", "ignore"]
    """What an invalid trigger does, from ``ignore_invalid_triggers`` unless overridden."""
    problems: tuple[str, ...]
    """What the table cannot express; ``from_transitions`` raises if there is any."""


def read_transitions(
    source: Mapping[str, Any] | Any,
    name: str | None,
    unhandled: Literal["error", "ignore"] | None = None,
) -> ImportedSpec:
    """Return the flat spec of ``source`` with every problem found.

    Raises:
        MachineDefinitionError: When no machine can be read at all (not a spec, nested,
            rejected by transitions itself); it lists every problem found so far.
    """
    from transitions import Machine as TMachine
    from transitions.extensions.nesting import HierarchicalMachine

    if isinstance(source, Mapping):
        return _read_dict(source, name, unhandled)
    if isinstance(source, HierarchicalMachine):
        raise MachineDefinitionError(
            name or _live_name(source),
            ["nested (hierarchical) machines are not supported: flatten the states first"],
        )
    if not isinstance(source, TMachine):
        raise MachineDefinitionError(
            name or "machine",
            [f"expected a transitions dict spec or transitions.Machine, got {type(source)!r}"],
        )
    return _read_live(source, name, unhandled, [])


def _read_dict(
    spec: Mapping[str, Any], name: str | None, unhandled: Literal["error", "ignore"] | None
) -> ImportedSpec:
    """Check the spec key by key, build the transitions machine from a cleaned copy."""
    from transitions import Machine as TMachine

    problems: list[str] = []
    spec_name = spec.get("name")
    mname = name or (spec_name if isinstance(spec_name, str) and spec_name else "machine")
    unknown = [k for k in spec if k not in _MACHINE_KEYS]
    if unknown:
        problems.append(f"unsupported keys {sorted(map(str, unknown))}: a table cannot hold them")
    clean: dict[str, Any] = {k: spec[k] for k in _MACHINE_KEYS if k in spec and k != "name"}
    if "states" in spec:
        clean["states"] = _clean_states(spec["states"], problems)
    if "transitions" in spec:
        clean["transitions"] = _clean_transitions(spec["transitions"], problems)
    try:
        live = TMachine(model=None, **clean)
    except Exception as exc:  # transitions' own checks: report, never crash
        problems.append(f"transitions rejects the definition: {type(exc).__name__}: {exc}")
        raise MachineDefinitionError(mname, problems) from exc
    return _read_live(live, mname, unhandled, problems)


def _clean_states(states: Any, problems: list[str]) -> list[Any]:
    """A copy of ``states`` (transitions mutates state dicts) with what a table cannot hold
    reported and left out."""
    if states is None:
        return []
    if isinstance(states, str | enum.Enum | Mapping) or not isinstance(
        states, Sequence | enum.EnumMeta
    ):
        states = [states]  # transitions' listify: one state
    out: list[Any] = []
    for st in states:
        if isinstance(st, Mapping):
            sname = st.get("name")
            nested = [k for k in _NESTED_KEYS if st.get(k)]
            if nested:
                problems.append(
                    f"state {sname!r} is nested ({', '.join(nested)}): nested machines are"
                    " not supported"
                )
            extra = [k for k in st if k not in _STATE_KEYS and k not in _NESTED_KEYS]
            if extra:
                problems.append(f"state {sname!r}: unsupported keys {sorted(map(str, extra))}")
            out.append({k: st[k] for k in _STATE_KEYS if k in st})
        elif isinstance(st, str | enum.Enum) or hasattr(st, "on_enter"):
            out.append(st)  # a name, an enum member or a State object
        else:
            problems.append(f"state {st!r} must be a name, an enum member, a dict or a State")
    return out


def _clean_transitions(rows: Any, problems: list[str]) -> list[Any]:
    """The transitions as transitions' ``add_transitions`` takes them (lists or dicts);
    malformed ones reported and left out."""
    if isinstance(rows, Mapping):
        rows = [rows]  # transitions' listify: one transition
    elif isinstance(rows, str) or not isinstance(rows, Sequence):
        problems.append(f"'transitions' must be a list, got {rows!r}")
        return []
    out: list[Any] = []
    for i, row in enumerate(rows):
        if isinstance(row, Mapping):
            extra = [k for k in row if k not in _TRANSITION_ARGS]
            missing = [k for k in _TRANSITION_ARGS[:3] if k not in row]
            if extra:
                problems.append(f"transition {i}: unsupported keys {sorted(map(str, extra))}")
            if missing:
                problems.append(f"transition {i}: missing {', '.join(missing)}")
                continue
            out.append({k: row[k] for k in _TRANSITION_ARGS if k in row})
        elif isinstance(row, list | tuple) and 3 <= len(row) <= len(_TRANSITION_ARGS):
            out.append(list(row))
        else:
            problems.append(
                f"transition {i}: expected [trigger, source, dest, ...] or a dict, got {row!r}"
            )
    return out


def _live_name(machine: Any) -> str:
    """The name given to a transitions machine (it stores ``name + ": "``)."""
    text = str(getattr(machine, "name", "") or "")
    return text[:-2] if text.endswith(": ") else text or "machine"


def _custom(obj: object, *methods: str) -> bool:
    """True when one of ``methods`` of ``obj``'s class is defined outside transitions."""
    for m in methods:
        fn = getattr(type(obj), m, None)
        module = getattr(fn, "__module__", "") or ""
        if fn is not None and not module.startswith("transitions."):
            return True
    return False


def _read_live(
    machine: Any,
    name: str | None,
    unhandled: Literal["error", "ignore"] | None,
    problems: list[str],
) -> ImportedSpec:
    mname = name or _live_name(machine)
    states: list[str] = list(machine.states)
    initial = machine.initial
    if initial is None:
        problems.append("no initial state")
    problems += [
        f"machine-level {k} callbacks cannot be imported; use handlers"
        for k in _MACHINE_CALLBACKS
        if getattr(machine, k, None)
    ]
    for sname, st in machine.states.items():
        problems += _state_problems(machine, sname, st)

    attr = getattr(machine, "model_attribute", "state")
    auto_names = (
        {f"to_{s}" if attr == "state" else f"to_{attr}_{s}" for s in states}
        if machine.auto_transitions
        else set()
    )
    rows: list[tuple[Any, ...]] = []
    events: list[str] = []
    auto: list[str] = []
    for trigger, event in machine.events.items():
        (auto if trigger in auto_names else events).append(trigger)
        if _custom(event, "trigger", "_trigger", "_process", "_is_valid_source"):
            problems.append(f"trigger {trigger!r}: a custom {type(event).__name__} class")
        flagged: dict[str, list[str]] = {}
        for src, transitions in event.transitions.items():
            for tr in transitions:
                if any(getattr(tr, k, None) for k in _CONDITIONS):
                    flagged.setdefault("conditions (or unless)", []).append(src)
                if any(getattr(tr, k, None) for k in _TRANSITION_CALLBACKS):
                    flagged.setdefault("before/after/prepare callbacks", []).append(src)
                if _custom(tr, "execute", "_change_state"):
                    flagged.setdefault(f"a custom {type(tr).__name__} class", []).append(src)
            # the first transition fires (later ones only if it has failing conditions);
            # an empty list is a valid source where nothing happens
            rows.append((src, trigger, transitions[0].dest if transitions else None))
        for what, sources in flagged.items():
            listed = ", ".join(repr(s) for s in dict.fromkeys(sources))
            problems.append(
                f"trigger {trigger!r} from {listed}: {what} cannot be expressed in a table;"
                " use a handler"
            )

    if unhandled is None:
        ignoring = [s for s, st in machine.states.items() if _ignores(machine, st)]
        unhandled = "ignore" if ignoring and len(ignoring) == len(states) else "error"
        if unhandled == "error" and ignoring:
            # per-state ignore_invalid_triggers: consume the state's invalid triggers
            handled = {(r[0], r[1]) for r in rows}
            rows += [
                (s, t, None) for s in ignoring for t in [*events, *auto] if (s, t) not in handled
            ]
    return ImportedSpec(
        mname, states, str(initial), rows, [*events, *auto], unhandled, tuple(problems)
    )


def _ignores(machine: Any, state: Any) -> bool:
    own = getattr(state, "ignore_invalid_triggers", None)
    return bool(machine.ignore_invalid_triggers if own is None else own)


def _state_problems(machine: Any, sname: str, st: Any) -> list[str]:
    from transitions.extensions.states import Error

    out = [
        f"state {sname!r}: {k} callbacks cannot be imported; use a handler"
        for k in _STATE_CALLBACKS
        if getattr(st, k, None)
    ]
    if getattr(st, "timeout", 0):
        out.append(f"state {sname!r}: a timeout cannot be imported; use a timer action")
    if getattr(st, "retries", 0):
        out.append(f"state {sname!r}: retries cannot be imported")
    if getattr(st, "volatile_cls", None) is not None:
        out.append(f"state {sname!r}: volatile objects cannot be imported; use agent data")
    accepted = getattr(st, "is_accepted", True)
    if isinstance(st, Error) and not accepted and not machine.get_triggers(sname):
        out.append(f"state {sname!r}: an Error state, which raises when it is entered")
    if _custom(st, "enter", "exit"):
        out.append(f"state {sname!r}: a custom {type(st).__name__} class (enter/exit)")
    return out
