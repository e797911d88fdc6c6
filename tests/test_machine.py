"""The sans-IO Mealy core: definitions, validation, tables, step, handlers, import, diagrams."""

from __future__ import annotations

import copy
import enum
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transitions import Machine as TMachine
from transitions import MachineError, State

import engine
from engine import Machine, MachineDefinitionError


def test_tables_and_step(light: Machine) -> None:
    assert light.states == ("red", "green", "yellow")
    assert light.events == ("tick", "fault")
    assert light.outputs == ("go", "slow", "stop")
    assert light.next_table.dtype.name == "int32"
    assert light.next_table.tolist() == [1, 0, 2, 0, 0, 0]
    assert light.step("red", "tick") == ("green", "go")
    assert light.step("yellow", "tick") == ("red", "stop")
    assert light.step("green", "fault") == ("red", "stop")


def test_step_errors_leave_nothing_changed(light: Machine) -> None:
    with pytest.raises(engine.UnknownStateError):
        light.step("blue", "tick")
    with pytest.raises(engine.UnknownEventError):
        light.step("red", "honk")
    m = Machine("m", ["a", "b"], "a", [("a", "go", "b")])
    with pytest.raises(engine.InvalidTransitionError) as info:
        m.step("b", "go")
    assert (info.value.state, info.value.event) == ("b", "go")
    ignoring = Machine("m", ["a", "b"], "a", [("a", "go", "b")], unhandled="ignore")
    assert ignoring.step("b", "go") == ("b", None)


def test_explicit_row_overrides_wildcard_in_any_order() -> None:
    for rows in (
        [("*", "e", "a", "any"), ("b", "e", "c", "b-only")],
        [("b", "e", "c", "b-only"), ("*", "e", "a", "any")],
    ):
        m = Machine("m", ["a", "b", "c"], "a", rows)
        assert m.step("a", "e") == ("a", "any")
        assert m.step("b", "e") == ("c", "b-only")
        assert m.step("c", "e") == ("a", "any")


def test_dest_none_stays_and_source_list() -> None:
    m = Machine("m", ["a", "b", "c"], "a", [(["a", "b"], "ping", None, "pong")])
    assert m.step("a", "ping") == ("a", "pong")
    assert m.step("b", "ping") == ("b", "pong")
    with pytest.raises(engine.InvalidTransitionError):
        m.step("c", "ping")


def test_declared_events_fix_order_and_allow_rowless_events() -> None:
    m = Machine("m", ["a"], "a", [("a", "y", "a")], events=["x", "y"], unhandled="ignore")
    assert m.events == ("x", "y")
    assert m.event_code("y") == 1
    assert m.step("a", "x") == ("a", None)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(MachineDefinitionError) as info:
        Machine(
            "bad",
            states=["a", "b", "a", "*", 3],
            initial="z",
            transitions=[
                ("a", "go", "nowhere"),  # unknown destination
                ("q", "go", "b"),  # unknown source
                ("a", "", "b"),  # empty event
                ("a", "go", "b", ["unhashable"]),  # output not hashable
                ("a", "x"),  # wrong arity
                ("b", "go", "a"),
                ("b", "go", "b"),  # second row for (b, go)
                ("*", "w", "a"),
                ("*", "w", "b"),  # second wildcard row
            ],
            unhandled="sometimes",
        )
    problems = "\n".join(info.value.problems)
    for fragment in (
        "duplicate state 'a'",
        "'*' is reserved",
        "state name must be a non-empty string, got 3",
        "initial state 'z'",
        "unhandled must be",
        "unknown destination state 'nowhere'",
        "unknown source state 'q'",
        "event must be a non-empty string",
        "is not hashable",
        "must be (source, event, dest[, output])",
        "a second row for ('b', 'go')",
        "a second row for ('*', 'w')",
    ):
        assert fragment in problems
    assert len(info.value.problems) == 12
    assert "12 problems" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"states": "abc"}, "states must be a sequence"),
        ({"states": []}, "at least one state"),
        ({"transitions": 5}, "transitions must be a sequence"),
        ({"events": ["x"]}, "not among the declared events"),
        ({"name": ""}, "name must be a non-empty string"),
    ],
)
def test_bad_types_are_definition_errors(kwargs: dict[str, Any], fragment: str) -> None:
    args: dict[str, Any] = {
        "name": "m",
        "states": ["a"],
        "initial": "a",
        "transitions": [("a", "go", "a")],
    }
    args.update(kwargs)
    with pytest.raises(MachineDefinitionError, match=fragment):
        Machine(**args)


def test_handler_binding_rules() -> None:
    m = Machine("m", ["a", "b"], "a", [("a", "go", "b")], events=["go", "back"])

    @m.handler("*", "back")
    def any_back(ctx: Any, ev: Any) -> None:
        return None

    @m.handler("b", "back")
    def b_back(ctx: Any, ev: Any) -> None:
        return None

    assert m.handlers[m.handler_table[m.state_code("b") * 2 + 1]] is b_back
    assert m.handlers[m.handler_table[m.state_code("a") * 2 + 1]] is any_back
    assert m.handler_table[0] == -1  # (a, go) has none
    with pytest.raises(MachineDefinitionError, match="already bound"):
        m.handler("b", "back")
    with pytest.raises(MachineDefinitionError, match="unknown state 'z'") as info:
        m.handler("z", "nope")
    assert len(info.value.problems) == 2
    with pytest.raises(MachineDefinitionError, match="not callable"):
        m.handler("a", "go")(42)  # type: ignore[type-var]


def test_handler_table_is_updated_in_place(light: Machine) -> None:
    table = light.handler_table
    light.handler("red", "tick")(lambda ctx, ev: None)
    assert light.handler_table is table
    assert table[0] == 0


# -- validation: every problem at once, unhashable names included ----------------------


def test_unhashable_names_are_definition_problems_not_type_errors() -> None:
    with pytest.raises(MachineDefinitionError) as info:
        Machine(
            "m",
            ["a", ["b"]],
            ["a"],  # unhashable initial
            [
                (["a", ["x"]], "go", ["a"]),  # unhashable source in a list, unhashable dest
                ("a", {"e"}, "a"),  # unhashable event
                ("a", "f", "a", {"o": 1}),  # unhashable output
                ({"a"}, "g", "a"),  # a set is not a source
                (np.array(["a"]), "h", "a"),  # nor is an array
            ],
            events=None,
            unhandled=["error"],  # type: ignore[arg-type]
        )
    problems = "\n".join(info.value.problems)
    for fragment in (
        "state name must be a non-empty string, got ['b']",
        "initial state ['a'] is not one of the states",
        "unknown source state ['x']",
        "unknown destination state ['a']",
        "event must be a non-empty string",
        "output {'o': 1} is not hashable",
        "source must be a state, a list of states or '*'",
        "unhandled must be 'error' or 'ignore'",
    ):
        assert fragment in problems
    assert len(info.value.problems) == 9  # the set and the array are one problem each
    with pytest.raises(MachineDefinitionError, match="event name must be a non-empty string"):
        Machine("m", ["a"], "a", [], events=[["go"]])  # type: ignore[list-item]


def test_handler_with_unhashable_names_is_a_definition_error() -> None:
    m = Machine("m", ["a"], "a", [("a", "go", "a")])
    with pytest.raises(MachineDefinitionError) as info:
        m.handler(["a"], {"go"})  # type: ignore[arg-type]
    assert info.value.problems == (
        "handler for unknown state ['a']",
        "handler for unknown event {'go'}",
    )


# -- names: StrEnum members and other str subclasses -------------------------------------


class Phase(enum.StrEnum):
    IDLE = "idle"
    BUSY = "busy"


class Signal(str, enum.Enum):  # noqa: UP042  # the older spelling: a str mix-in enum
    GO = "go"
    STOP = "stop"


def test_str_subclass_names_are_accepted_and_stored_plain() -> None:
    m = Machine(
        Phase.IDLE,  # a str subclass as the machine's name, too
        [Phase.IDLE, "busy"],
        Phase.IDLE,
        [(Phase.IDLE, Signal.GO, Phase.BUSY), ("busy", "stop", "idle"), ("*", Signal.STOP, None)],
        unhandled="ignore",
    )
    plain = (m.name, m.initial, *m.states, *m.events)
    assert plain == ("idle", "idle", "idle", "busy", "go", "stop")
    assert all(type(x) is str for x in plain)
    assert m.event_code(Signal.GO) == m.event_code("go") == 0
    assert m.state_code(Phase.BUSY) == m.state_code("busy") == 1
    for state, event in [(Phase.IDLE, Signal.GO), ("idle", "go"), (Phase.IDLE, "go")]:
        nxt, _ = m.step(state, event)
        assert nxt == "busy"
        assert type(nxt) is str
    stay, _ = m.step(Phase.BUSY, Signal.GO)  # ignored: still a plain str
    assert type(stay) is str
    with pytest.raises(engine.InvalidTransitionError) as info:
        Machine("m", ["idle"], "idle", [], events=["go"]).step(Phase.IDLE, Signal.GO)
    assert type(info.value.state) is str
    assert type(info.value.event) is str


def test_str_subclass_names_are_the_same_names_everywhere() -> None:
    with pytest.raises(MachineDefinitionError) as info:
        Machine(
            "m",
            ["idle", Phase.IDLE],
            "idle",
            [("idle", "go", "idle"), (Phase.IDLE, Signal.GO, "idle")],
            events=["go", Signal.GO],
        )
    problems = "\n".join(info.value.problems)
    assert "duplicate state" in problems
    assert "duplicate event" in problems
    assert "a second row for ('idle', 'go')" in problems
    m = Machine("m", [Phase.IDLE], "idle", [("idle", Signal.GO, None)], events=[Signal.GO, "x"])
    assert m.events == ("go", "x")

    @m.handler(Phase.IDLE, Signal.GO)
    def h(ctx: Any, ev: Any) -> None:
        return None

    assert m.handler_table[m.state_code("idle") * 2 + m.event_code("go")] == 0
    with pytest.raises(MachineDefinitionError, match="already bound to \\('idle', 'go'\\)"):
        m.handler("idle", "go")
    m.handler("*", "x")(h)


# -- outputs are interned by type and value -----------------------------------------------


def test_outputs_are_distinct_by_type() -> None:
    values: list[Any] = [True, 1, 1.0, False, 0, 0.0, -0.0, "1", (1,), (True,), ((1.0,), "x")]
    m = Machine("m", ["a"], "a", [("a", f"e{i}", None, v) for i, v in enumerate(values)])
    assert len(m.outputs) == len(values)
    assert [type(v) for v in m.outputs] == [type(v) for v in values]
    for i, v in enumerate(values):
        _, out = m.step("a", f"e{i}")
        assert type(out) is type(v)
        assert out == v
    assert m.step("a", "e0")[1] is True
    assert m.step("a", "e3")[1] is False
    assert str(m.step("a", "e6")[1]) == "-0.0"
    assert type(m.step("a", "e9")[1][0]) is bool
    assert type(m.step("a", "e10")[1][0][0]) is float
    # equal values of one type are still one output
    same = Machine(
        "m",
        ["a"],
        "a",
        [("a", "x", None, (1, "a")), ("a", "y", None, (1, "a")), ("a", "z", None, 2)],
    )
    assert same.outputs == ((1, "a"), 2)
    assert same.output_table.tolist() == [0, 0, 1]


# -- typing: the handler decorator keeps the function's type ------------------------------

TYPED_USER_CODE = """
import engine

m = engine.Machine("m", ["a", "b"], "a", [("a", "go", "b")])


@m.handler("a", "go")
def h(agent: engine.AgentContext, event: engine.Event) -> engine.Step | None:
    return engine.Step(state=agent.state) if event.name == "go" else None


reveal_type(h)


def wrong_args(agent: int, event: str) -> None:
    return None


def wrong_return(agent: engine.AgentContext, event: engine.Event) -> int:
    return 1


m.handler("b", "go")(wrong_args)
m.handler("b", "go")(wrong_return)
"""


def test_handler_decorator_is_typed_for_mypy_strict(tmp_path: Path) -> None:
    user = tmp_path / "user.py"
    user.write_text(TYPED_USER_CODE)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",  # judge the user's file, not the engine's
            f"--cache-dir={tmp_path / 'cache'}",
            str(user),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    lines = [line.split(": ", 1)[1] for line in result.stdout.splitlines() if "user.py:" in line]
    assert lines == [
        'note: Revealed type is "def (agent: engine.hotpath._python.AgentContext, '
        'event: engine.hotpath._python.Event) -> engine.core._types.Step | None"',
        'error: Value of type variable "H" of function cannot be "Callable[[int, str], None]"'
        "  [type-var]",
        'error: Value of type variable "H" of function cannot be '
        '"Callable[[AgentContext, Event], int]"  [type-var]',
    ], result.stdout


# -- transitions import: the same machine as transitions runs ----------------------------


class Model:
    """A bare transitions model."""

    state: Any


def transitions_says(spec: dict[str, Any], state: str, trigger: str) -> str | None:
    """What transitions does on ``trigger`` in ``state``: the next state, or None if it
    raises MachineError."""
    model = Model()
    live = TMachine(model=model, **copy.deepcopy(spec))
    live.set_state(state, model=model)
    try:
        model.trigger(trigger)
    except MachineError:
        return None
    return str(live.get_model_state(model).name)


def we_say(m: Machine, state: str, trigger: str) -> str | None:
    try:
        return m.step(state, trigger)[0]
    except engine.InvalidTransitionError:
        return None


def assert_same_table(spec: dict[str, Any], m: Machine) -> None:
    live = TMachine(model=None, **copy.deepcopy(spec))
    assert list(m.states) == list(live.states)
    assert sorted(m.events) == sorted(live.events)
    assert m.initial == live.initial
    for s in m.states:
        for t in m.events:
            assert we_say(m, s, t) == transitions_says(spec, s, t), (s, t)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # a "*" row before an explicit row for the same trigger: "*" wins everywhere
        ([["e", "*", "c"], ["e", "b", "a"]], {"a": "c", "b": "c", "c": "c"}),
        # the explicit row first: it wins in its state
        ([["e", "b", "a"], ["e", "*", "c"]], {"a": "c", "b": "a", "c": "c"}),
        # two rows for one source: the first
        ([["e", "a", "b"], ["e", "a", "c"], ["e", ["a", "b"], "a"]], {"a": "b", "b": "a"}),
        # "=" is reflexive, None is internal: both stay
        ([["e", "*", "="], ["e", "c", None]], {"a": "a", "b": "b", "c": "c"}),
    ],
)
def test_row_order_means_what_it_means_in_transitions(
    rows: list[list[Any]], expected: dict[str, str]
) -> None:
    spec = {"states": ["a", "b", "c"], "initial": "a", "transitions": rows}
    m = Machine.from_transitions(spec)
    assert {s: we_say(m, s, "e") for s in m.states} == {s: expected.get(s) for s in ("a", "b", "c")}
    assert_same_table(spec, m)


def test_a_wildcard_covers_the_states_known_when_it_was_added() -> None:
    live = TMachine(model=None, states=["a", "b"], initial="a", auto_transitions=False)
    live.add_transition("reset", "*", "a")
    live.add_state("c")  # after the "*" row: transitions gives it no reset
    m = Machine.from_transitions(live)
    assert m.step("b", "reset") == ("a", None)
    with pytest.raises(engine.InvalidTransitionError):
        m.step("c", "reset")


def test_from_transitions_dict_lists_and_dicts() -> None:
    spec = {
        "name": "door",
        "states": ["closed", {"name": "open"}, "locked"],
        "initial": "closed",
        "auto_transitions": False,
        "transitions": [
            ["open", "closed", "open"],
            {"trigger": "close", "source": "open", "dest": "closed"},
            {"trigger": "lock", "source": ["closed"], "dest": "locked"},
            ("knock", "*", "="),  # a tuple row, which transitions itself would refuse
        ],
    }
    before = copy.deepcopy(spec)
    m = Machine.from_transitions(spec)
    assert spec == before  # transitions fills state dicts in; we give it a copy
    assert m.name == "door"
    assert m.states == ("closed", "open", "locked")
    assert m.events == ("open", "close", "lock", "knock")
    assert m.step("closed", "open") == ("open", None)
    assert m.step("open", "close") == ("closed", None)
    assert m.step("locked", "knock") == ("locked", None)
    with pytest.raises(engine.InvalidTransitionError):
        m.step("locked", "open")


def test_auto_transitions_are_imported_after_the_user_triggers() -> None:
    spec = {
        "states": ["a", "b"],
        "initial": "a",
        "transitions": [["go", "a", "b"], ["to_b", "b", "a"]],  # to_b: auto's comes first
    }
    m = Machine.from_transitions(spec)
    assert m.events == ("go", "to_a", "to_b")
    assert m.step("b", "to_a") == ("a", None)
    assert m.step("b", "to_b") == ("b", None)  # the automatic row, added first, wins
    assert_same_table(spec, m)
    assert Machine.from_transitions({**spec, "auto_transitions": False}).events == ("go", "to_b")
    custom = Machine.from_transitions({**spec, "model_attribute": "status"})
    assert custom.events == ("go", "to_b", "to_status_a", "to_status_b")


def test_ordered_transitions_and_a_missing_initial_state_as_transitions_does() -> None:
    m = Machine.from_transitions({"states": ["a", "b"], "ordered_transitions": True})
    # transitions' default initial is a state named 'initial', added to the states
    assert m.states == ("a", "b", "initial")
    assert m.initial == "initial"
    assert m.step("initial", "next_state") == ("a", None)
    assert m.step("b", "next_state") == ("initial", None)
    assert_same_table({"states": ["a", "b"], "ordered_transitions": True}, m)


def test_enum_states_are_read_by_name() -> None:
    class Door(enum.Enum):
        OPEN = 1
        CLOSED = 2

    live = TMachine(
        model=None,
        states=Door,
        initial=Door.CLOSED,
        transitions=[["open", Door.CLOSED, Door.OPEN]],
        auto_transitions=False,
    )
    m = Machine.from_transitions(live)
    assert m.states == ("OPEN", "CLOSED")
    assert m.step("CLOSED", "open") == ("OPEN", None)


def test_ignore_invalid_triggers_is_honoured() -> None:
    base: dict[str, Any] = {
        "initial": "a",
        "auto_transitions": False,
        "transitions": [["go", "a", "b"]],
    }
    everywhere = {**base, "states": ["a", "b"], "ignore_invalid_triggers": True}
    m = Machine.from_transitions(everywhere)
    assert m.unhandled == "ignore"
    assert m.step("b", "go") == ("b", None)
    assert_same_table(everywhere, m)
    # per state, both ways round: stay rows for the states that ignore
    for spec in (
        {**base, "states": ["a", {"name": "b", "ignore_invalid_triggers": True}, "c"]},
        {
            **base,
            "states": ["a", "b", {"name": "c", "ignore_invalid_triggers": False}],
            "ignore_invalid_triggers": True,
        },
    ):
        m = Machine.from_transitions(spec)
        assert m.unhandled == "error"
        assert m.step("b", "go") == ("b", None)
        with pytest.raises(engine.InvalidTransitionError):
            m.step("c", "go")
        assert_same_table(spec, m)
    # an explicit unhandled= overrides what transitions says
    strict = Machine.from_transitions(everywhere, unhandled="error")
    with pytest.raises(engine.InvalidTransitionError):
        strict.step("b", "go")


def test_options_without_effect_on_a_table_are_accepted() -> None:
    m = Machine.from_transitions(
        {
            "states": ["a", {"name": "b", "final": True}],
            "initial": "a",
            "transitions": [["go", "a", "b"]],
            "queued": True,  # our agents run each step to completion: queued processing
            "send_event": True,  # only changes what callbacks receive; there are none
            "model_override": True,  # only about binding methods to models
        }
    )
    assert m.step("a", "go") == ("b", None)


def test_from_live_transitions_machine() -> None:
    model = Model()
    live = TMachine(
        model=model,
        name="live one",
        states=["a", "b", "c"],
        initial="a",
        transitions=[["go", "a", "b"], ["go", "b", "c"], ["reset", "*", "a"], ["stay", "c", None]],
    )
    m = Machine.from_transitions(live)
    assert m.name == "live one"  # transitions stores 'live one: '
    assert Machine.from_transitions(live, name="other").name == "other"
    assert m.events[:3] == ("go", "reset", "stay")
    assert m.step("c", "reset") == ("a", None)
    for event in ["go", "go", "reset", "go", "to_c", "stay"]:
        expected = m.step(model.state, event)[0]
        model.trigger(event)
        assert model.state == expected


def test_everything_a_table_cannot_hold_is_reported_at_once() -> None:
    with pytest.raises(MachineDefinitionError) as info:
        Machine.from_transitions(
            {
                "states": [
                    "a",
                    {"name": "b", "on_enter": "x", "on_exit": "y", "tags": ["t"]},
                    {"name": "n", "children": ["x"]},
                    42,
                ],
                "initial": "a",
                "model": object(),
                "prepare_event": "p",
                "before_state_change": "q",
                "on_exception": "r",
                "transitions": [
                    {"trigger": "go", "source": "a", "dest": "b", "conditions": "ok"},
                    {"trigger": "go", "source": "b", "dest": "a", "unless": "ok"},
                    {"trigger": "hop", "source": "*", "dest": "a", "after": "f", "weight": 2},
                    ["push", "a", "b", None, None, "before_push"],
                    ["bad"],
                    {"trigger": "nodest", "source": "a"},
                    ["jump", "a", "nowhere"],
                ],
            }
        )
    problems = info.value.problems
    text = "\n".join(problems)
    for fragment in (
        "unsupported keys ['model']",
        "state 'b': unsupported keys ['tags']",
        "state 'n' is nested (children)",
        "state 42 must be a name",
        "transition 2: unsupported keys ['weight']",
        "transition 4: expected [trigger, source, dest, ...]",
        "transition 5: missing dest",
        "machine-level before_state_change callbacks",
        "machine-level prepare_event callbacks",
        "machine-level on_exception callbacks",
        "state 'b': on_enter callbacks",
        "state 'b': on_exit callbacks",
        "trigger 'go' from 'a', 'b': conditions (or unless)",
        "trigger 'hop' from 'a', 'b', 'n': before/after/prepare callbacks",
        "trigger 'push' from 'a': before/after/prepare callbacks",
        "unknown destination state 'nowhere'",  # the table's own check, in the same list
    ):
        assert fragment in text, fragment
    assert len(problems) == 16, text


def test_live_machines_report_what_they_carry() -> None:
    from transitions.extensions.nesting import HierarchicalMachine
    from transitions.extensions.states import Timeout, add_state_features

    class Convention:
        def on_enter_b(self) -> None:  # bound by transitions' naming convention
            pass

    live = TMachine(model=Convention(), states=["a", "b"], initial="a", on_final="done")
    problems = "\n".join(problem_list(live))
    assert "state 'b': on_enter callbacks" in problems
    assert "machine-level on_final callbacks" in problems

    @add_state_features(Timeout)
    class TimedMachine(TMachine):  # type: ignore[misc]
        pass

    timed = TimedMachine(
        model=None, states=["a", {"name": "b", "timeout": 3, "on_timeout": "t"}], initial="a"
    )
    problems = "\n".join(problem_list(timed))
    assert "state 'b': on_timeout callbacks" in problems
    assert "state 'b': a timeout cannot be imported" in problems

    class Sticky(State):  # type: ignore[misc]
        def enter(self, event_data: Any) -> None:
            pass

    class StickyMachine(TMachine):  # type: ignore[misc]
        state_cls = Sticky

    assert "a custom Sticky class" in "\n".join(
        problem_list(StickyMachine(model=None, states=["a"], initial="a"))
    )
    nested = HierarchicalMachine(states=["a", {"name": "b", "children": ["x", "y"]}], initial="a")
    with pytest.raises(MachineDefinitionError, match="nested"):
        Machine.from_transitions(nested)
    with pytest.raises(MachineDefinitionError, match="expected a transitions"):
        Machine.from_transitions(42)
    with pytest.raises(MachineDefinitionError, match="transitions rejects the definition"):
        Machine.from_transitions(
            {"states": ["a"], "initial": "a", "transitions": [["state", "a", "a"]]}
        )


def problem_list(source: Any) -> tuple[str, ...]:
    with pytest.raises(MachineDefinitionError) as info:
        Machine.from_transitions(source)
    return info.value.problems


# -- property: our import behaves as transitions on random small specs --------------------


ROW_KEYS = ("trigger", "source", "dest")


@st.composite
def transitions_specs(draw: st.DrawFn) -> dict[str, Any]:
    states = [f"s{i}" for i in range(draw(st.integers(1, 4)))]
    triggers = [f"t{i}" for i in range(draw(st.integers(1, 3)))]
    sources = (
        st.just("*")
        | st.sampled_from(states)
        | st.lists(st.sampled_from(states), min_size=1, max_size=3, unique=True)
    )
    dests = st.sampled_from([*states, None, "="])
    rows = draw(st.lists(st.tuples(st.sampled_from(triggers), sources, dests), max_size=8))
    flags = st.sampled_from([None, True, False])
    spec: dict[str, Any] = {
        "states": [
            {"name": s, "ignore_invalid_triggers": draw(flags)} if draw(st.booleans()) else s
            for s in states
        ],
        "transitions": [
            list(r)
            if draw(st.booleans())
            else dict(zip(("trigger", "source", "dest"), r, strict=True))
            for r in rows
        ],
        "auto_transitions": draw(st.booleans()),
        "ignore_invalid_triggers": draw(flags),
        "queued": draw(st.booleans()),
    }
    initial = draw(st.sampled_from([*states, None]))
    if initial is not None:  # else transitions adds a state 'initial'
        spec["initial"] = initial
    if len(states) >= 2 and draw(st.booleans()):
        spec["ordered_transitions"] = True
    return spec


@settings(max_examples=150, deadline=None)
@given(transitions_specs())
def test_import_behaves_as_transitions(spec: dict[str, Any]) -> None:
    assert_same_table(spec, Machine.from_transitions(copy.deepcopy(spec)))


# -- property: the compiled table agrees with a dict reference ---------------------------


@st.composite
def definitions(draw: st.DrawFn) -> tuple[list[str], list[tuple[Any, ...]]]:
    n_states = draw(st.integers(1, 6))
    n_events = draw(st.integers(1, 5))
    states = [f"s{i}" for i in range(n_states)]
    events = [f"e{i}" for i in range(n_events)]
    rows: list[tuple[Any, ...]] = []
    for e in events:
        if draw(st.booleans()):
            rows.append(
                (
                    "*",
                    e,
                    draw(st.sampled_from([*states, None])),
                    draw(st.none() | st.integers(0, 3)),
                )
            )
        for s in states:
            if draw(st.booleans()):
                rows.append(
                    (
                        s,
                        e,
                        draw(st.sampled_from([*states, None])),
                        draw(st.none() | st.integers(0, 3)),
                    )
                )
    return states, rows


@given(definitions())
def test_step_matches_dict_reference(defn: tuple[list[str], list[tuple[Any, ...]]]) -> None:
    states, rows = defn
    m = Machine("p", states, states[0], rows, unhandled="ignore")
    ref: dict[tuple[str, str], tuple[str | None, Any]] = {}
    for src, ev, dest, out in rows:
        if src == "*":
            for s in states:
                ref.setdefault((s, ev), (dest, out))
    for src, ev, dest, out in rows:
        if src != "*":
            ref[src, ev] = (dest, out)
    for s in states:
        for e in m.events:
            dest, out = ref.get((s, e), (s, None))
            assert m.step(s, e) == (dest if dest is not None else s, out)
