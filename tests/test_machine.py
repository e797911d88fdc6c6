"""The sans-IO Mealy core: definitions, validation, tables, step, handlers, import, diagrams."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def test_to_mermaid(light: Machine) -> None:
    text = light.to_mermaid()
    assert text.startswith("stateDiagram-v2\n")
    assert "[*] --> s0" in text
    assert "s0 --> s1 : tick / go" in text
    assert "s2 --> s0 : fault / stop" in text
    assert text.count("-->") == 1 + 6


def test_mermaid_escapes_labels() -> None:
    m = Machine("m", ['say "hi"'], 'say "hi"', [('say "hi"', "a:b", None, "x:y")])
    text = m.to_mermaid()
    assert 'state "say #quot;hi#quot;" as s0' in text
    assert "a#colon;b / x#colon;y" in text


# -- transitions import ------------------------------------------------------------------


def test_from_transitions_dict_lists_and_dicts() -> None:
    spec = {
        "name": "door",
        "states": ["closed", {"name": "open"}, "locked"],
        "initial": "closed",
        "transitions": [
            ["open", "closed", "open"],
            {"trigger": "close", "source": "open", "dest": "closed"},
            {"trigger": "lock", "source": ["closed"], "dest": "locked"},
            ["knock", "*", "="],
        ],
    }
    m = Machine.from_transitions(spec)
    assert m.name == "door"
    assert m.states == ("closed", "open", "locked")
    assert m.events == ("open", "close", "lock", "knock")
    assert m.step("closed", "open") == ("open", None)
    assert m.step("open", "close") == ("closed", None)
    assert m.step("locked", "knock") == ("locked", None)
    with pytest.raises(engine.InvalidTransitionError):
        m.step("locked", "open")


def test_from_live_transitions_machine() -> None:
    from transitions import Machine as TMachine

    model = type("Model", (), {})()
    live = TMachine(
        model=model,
        states=["a", "b", "c"],
        initial="a",
        transitions=[["go", "a", "b"], ["go", "b", "c"], ["reset", "*", "a"], ["stay", "c", None]],
    )
    m = Machine.from_transitions(live, name="live")
    assert m.name == "live"
    assert m.events == ("go", "reset", "stay")  # auto to_<state> triggers left out
    assert m.step("a", "go") == ("b", None)
    assert m.step("c", "reset") == ("a", None)
    assert m.step("c", "stay") == ("c", None)
    # the live model and our table agree on a walk
    for event in ["go", "go", "reset", "go"]:
        expected = m.step(model.state, event)[0]
        model.trigger(event)
        assert model.state == expected


def test_from_transitions_rejects_what_a_table_cannot_hold() -> None:
    from transitions import Machine as TMachine
    from transitions.extensions.nesting import HierarchicalMachine

    nested = HierarchicalMachine(states=["a", {"name": "b", "children": ["x", "y"]}], initial="a")
    with pytest.raises(MachineDefinitionError, match="nested"):
        Machine.from_transitions(nested)
    with pytest.raises(MachineDefinitionError, match="nested"):
        Machine.from_transitions(
            {"states": ["a", {"name": "b", "children": ["x"]}], "initial": "a", "transitions": []}
        )
    conditional = TMachine(
        states=["a", "b"],
        initial="a",
        transitions=[{"trigger": "go", "source": "a", "dest": "b", "conditions": "ok"}],
    )
    with pytest.raises(MachineDefinitionError, match="conditions"):
        Machine.from_transitions(conditional)
    with pytest.raises(MachineDefinitionError) as info:
        Machine.from_transitions(
            {
                "states": ["a", {"name": "b", "on_enter": "x"}],
                "transitions": [{"trigger": "go", "source": "a", "dest": "b", "after": "f"}],
            }
        )
    problems = "\n".join(info.value.problems)
    assert "on_enter" in problems
    assert "callbacks" in problems
    assert "'initial' is required" in problems
    with pytest.raises(MachineDefinitionError, match="expected a transitions"):
        Machine.from_transitions(42)


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
