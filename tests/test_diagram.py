"""Diagrams: Mermaid and Graphviz DOT drawings of a machine are valid whatever the names.

Mermaid is checked line by line against the statement shapes the generator may emit (ids are
safe identifiers; labels are made only of safe characters and entity codes, so nothing in a
name can end a statement); DOT is parsed by a real DOT parser (pydot). Both are decoded
back and compared with what the machine does.
"""

from __future__ import annotations

import enum
import re
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
from engine import Machine

with warnings.catch_warnings():
    # pydot 4.0.1 (the newest) still calls pyparsing's camelCase names, which pyparsing 3.3
    # deprecates; its parser is built once, here
    warnings.simplefilter("ignore", DeprecationWarning)
    import pydot
    import pydot.dot_parser

# -- a strict reader of the Mermaid we emit ----------------------------------------------

_CH = r"(?:[A-Za-z0-9_.,\-+*/=!?@'()]|#\d+;)"
LABEL = rf"{_CH}(?:(?:{_CH}| )*{_CH})?"  # no raw space at either end (Mermaid trims them)
ID = r"s\d+|s_any"
MERMAID_LINES = {
    "state": re.compile(rf'    state "({LABEL})" as ({ID})'),
    "initial": re.compile(rf"    \[\*\] --> ({ID})"),
    "edge": re.compile(rf"    ({ID}) --> ({ID}) : ({LABEL})( \[handler\])?"),
    "classdef": re.compile(
        r"    classDef (?:wildcard stroke-dasharray:4 4"
        r"|current fill:#fde68a,stroke:#b45309,stroke-width:3px)"
    ),
    "class": re.compile(rf"    class ({ID}) (wildcard|current)"),
}


def decode(label: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m[1])), label)


def read_mermaid(text: str) -> dict[str, Any]:
    """Parse our Mermaid output; fail on any line that is not one of the shapes above."""
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    assert lines[0] == "stateDiagram-v2"
    states: dict[str, str] = {}
    edges: list[tuple[str, str, str, bool]] = []
    initial, classes = None, {}
    for line in lines[1:]:
        # Mermaid's lexer reads "direction TB" anywhere on a line as a statement, and %% as a
        # comment: no label may contain them
        assert not re.search(r"direction\s+(tb|bt|rl|lr)", line, re.IGNORECASE), line
        assert "%%" not in line
        kinds = [k for k, rx in MERMAID_LINES.items() if rx.fullmatch(line)]
        assert len(kinds) == 1, f"unexpected line {line!r}"
        m = MERMAID_LINES[kinds[0]].fullmatch(line)
        assert m
        if kinds[0] == "state":
            assert m[2] not in states
            states[m[2]] = decode(m[1])
        elif kinds[0] == "initial":
            initial = m[1]
        elif kinds[0] == "edge":
            edges.append((m[1], m[2], decode(m[3]), m[4] is not None))
        elif kinds[0] == "class":
            classes[m[1]] = m[2]
    used = {initial, *classes, *(e[0] for e in edges), *(e[1] for e in edges)}
    assert used <= set(states), used - set(states)
    return {"states": states, "initial": initial, "edges": edges, "classes": classes}


# -- pydot, decoded ----------------------------------------------------------------------


def dot_unquote(value: str) -> str:
    assert value.startswith('"'), value
    assert value.endswith('"'), value
    return re.sub(r'\\(["\\n])', lambda m: "\n" if m[1] == "n" else m[1], value[1:-1])


def read_dot(text: str) -> dict[str, Any]:
    graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None
    assert len(graphs) == 1
    g = graphs[0]
    assert g.get_type() == "digraph"
    nodes = {
        n.get_name(): n.get_attributes()
        for n in g.get_nodes()
        if n.get_name() not in ("node", "edge", "graph")
    }
    edges = [
        (e.get_source(), e.get_destination(), e.get_attributes().get("label"))
        for e in g.get_edges()
    ]
    return {"name": dot_unquote(g.get_name()), "nodes": nodes, "edges": edges}


def visible(text: str) -> str:
    """What a DOT label shows for ``text``: control characters spelled out."""
    return "".join(
        f"\\x{ord(c):02x}"
        if c != "\n" and (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0)
        else f"\\u{ord(c):04x}"
        if 0xD800 <= ord(c) < 0xE000
        else c
        for c in text
    )


# -- examples ------------------------------------------------------------------------------


def test_mermaid_of_the_light(light: Machine) -> None:
    text = light.to_mermaid()
    assert text == (
        "stateDiagram-v2\n"
        '    state "red" as s0\n'
        '    state "green" as s1\n'
        '    state "yellow" as s2\n'
        '    state "*" as s_any\n'
        "    [*] --> s0\n"
        "    s0 --> s1 : tick / go\n"
        "    s1 --> s2 : tick / slow\n"
        "    s2 --> s0 : tick / stop\n"
        "    s_any --> s0 : fault / stop\n"
        "    classDef wildcard stroke-dasharray:4 4\n"
        "    class s_any wildcard\n"
    )
    read_mermaid(text)


def test_dot_of_the_light(light: Machine) -> None:
    g = read_dot(light.to_dot())
    assert g["name"] == "light"
    assert {k: dot_unquote(v["label"]) for k, v in g["nodes"].items()} == {
        "start": "",
        "s0": "red",
        "s1": "green",
        "s2": "yellow",
        "any": "*",
    }
    assert [(s, d, dot_unquote(label)) for s, d, label in g["edges"] if label] == [
        ("s0", "s1", "tick / go"),
        ("s1", "s2", "tick / slow"),
        ("s2", "s0", "tick / stop"),
        ("any", "s0", "fault / stop"),
    ]
    assert ("start", "s0", None) in g["edges"]


def test_highlight_marks_the_current_state(light: Machine) -> None:
    mer = read_mermaid(light.to_mermaid(highlight="green"))
    assert mer["classes"] == {"s_any": "wildcard", "s1": "current"}
    assert "current" not in light.to_mermaid()
    nodes = read_dot(light.to_dot(highlight="green"))["nodes"]
    assert "filled" in nodes["s1"]["style"]
    assert all("filled" not in str(n.get("style")) for k, n in nodes.items() if k != "s1")
    assert "filled" not in light.to_dot()


def test_highlight_takes_a_str_enum_member(light: Machine) -> None:
    class Light(enum.StrEnum):
        GREEN = "green"

    assert light.to_mermaid(highlight=Light.GREEN) == light.to_mermaid(highlight="green")
    assert light.to_dot(highlight=Light.GREEN) == light.to_dot(highlight="green")


@pytest.mark.parametrize("method", ["to_mermaid", "to_dot"])
@pytest.mark.parametrize("state", ["blue", "*", ["red"], None])
def test_unknown_highlight_is_an_unknown_state_error(
    light: Machine, method: str, state: Any
) -> None:
    if state is None:
        getattr(light, method)(highlight=None)  # None means: no highlight
        return
    with pytest.raises(engine.UnknownStateError):
        getattr(light, method)(highlight=state)


def test_handler_slots_are_marked() -> None:
    m = Machine(
        "m",
        ["a", "b", "c"],
        "a",
        [("a", "go", "b", "out"), ("*", "w", "c")],
        events=["go", "w", "poke"],
    )
    m.handler("a", "go")(lambda ctx, ev: None)  # a slot with a row
    m.handler("b", "poke")(lambda ctx, ev: None)  # a slot with no row: a loop
    m.handler("c", "w")(lambda ctx, ev: None)  # a state taking a "*" row, with its own handler
    edges = read_mermaid(m.to_mermaid())["edges"]
    assert sorted(edges) == sorted(
        [
            ("s0", "s1", "go / out", True),
            ("s1", "s1", "poke", True),
            ("s2", "s2", "w", True),
            ("s_any", "s2", "w", False),  # for a and b
        ]
    )
    dot_edges = read_dot(m.to_dot())["edges"]
    assert ("s1", "s1", '"poke [handler]"') in dot_edges
    m.handler("*", "w")(lambda ctx, ev: None)
    assert ("s_any", "s2", "w", True) in read_mermaid(m.to_mermaid())["edges"]


def test_wildcard_rows_staying_or_shadowed() -> None:
    m = Machine(
        "m",
        ["a", "b"],
        "a",
        [("*", "ping", None, "pong"), ("*", "x", "b"), ("a", "x", "a"), ("b", "x", "a")],
    )
    edges = read_mermaid(m.to_mermaid())["edges"]
    # the stay row loops on the * node; the x row is overridden everywhere, so it is not drawn
    assert sorted(edges) == sorted(
        [
            ("s_any", "s_any", "ping / pong", False),
            ("s0", "s0", "x", False),
            ("s1", "s0", "x", False),
        ]
    )
    no_wild = Machine("m", ["a"], "a", [("a", "go", "a")])
    assert "s_any" not in no_wild.to_mermaid()
    assert "any" not in read_dot(no_wild.to_dot())["nodes"]


NASTY = [
    "line\nbreak",
    'say "hi"',
    "a:b",
    "x;y",
    "#quot;",
    "#35;",
    "{brace}",
    "<b>bold</b>",
    "a|b",
    "back\\slash",
    "trailing\\",
    "ünïcødé ✓ 😀",
    "%% comment",
    "direction TB",
    "Direction\tlr",
    " padded ",
    "[*]",
    "s0 --> s1 : x",
    "tab\there",
    "nul\x00bell\x07",
    "state",
    "classDef x fill:#fff;",
    "\\N \\G \\l",
    "end",
]


@pytest.mark.parametrize("text", NASTY)
def test_nasty_text_gives_valid_diagrams(text: str) -> None:
    m = Machine(
        "n" + text,
        [text, "other"],
        text,
        [(text, text, "other", text), ("other", "plain", text, f"out {text}")],
    )
    mer = read_mermaid(m.to_mermaid(highlight=text))
    assert list(mer["states"].values()) == [text, "other"]
    assert sorted(mer["edges"]) == sorted(
        [("s0", "s1", f"{text} / {text}", False), ("s1", "s0", f"plain / out {text}", False)]
    )
    g = read_dot(m.to_dot(highlight=text))
    assert g["name"] == visible("n" + text)
    assert dot_unquote(g["nodes"]["s0"]["label"]) == visible(text)
    labels = sorted(dot_unquote(label) for _, _, label in g["edges"] if label)
    assert labels == sorted([visible(f"{text} / {text}"), visible(f"plain / out {text}")])


def test_the_old_escaping_broke_on_a_newline() -> None:
    # before: 's0 --> s1 : a\nb' put 'b' on a line of its own, a new (broken) statement
    m = Machine("m", ["x", "y"], "x", [("x", "a\nb", "y")])
    assert read_mermaid(m.to_mermaid())["edges"] == [("s0", "s1", "a\nb", False)]


# -- property: any names, any outputs: both diagrams are valid and say what step() does ---

names = st.text(min_size=1, max_size=8).filter(lambda s: s != "*")


@st.composite
def machines(draw: st.DrawFn) -> tuple[Machine, list[tuple[Any, ...]]]:
    states = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    events = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    outputs = st.none() | st.text(max_size=6) | st.integers(-3, 3) | st.booleans()
    rows: list[tuple[Any, ...]] = []
    for e in events:
        if draw(st.booleans()):
            rows.append(("*", e, draw(st.sampled_from([*states, None])), draw(outputs)))
        for s in states:
            if draw(st.booleans()):
                rows.append((s, e, draw(st.sampled_from([*states, None])), draw(outputs)))
    m = Machine(draw(names), states, draw(st.sampled_from(states)), rows, events=events)
    return m, rows


def label(event: str, out: Any) -> str:
    return event if out is None else f"{event} / {out}"


@settings(max_examples=200, deadline=None)
@given(machines(), st.data())
def test_any_machine_draws_valid_diagrams(
    defn: tuple[Machine, list[tuple[Any, ...]]], data: st.DataObject
) -> None:
    m, rows = defn
    current = data.draw(st.sampled_from([None, *m.states]))
    mer = read_mermaid(m.to_mermaid(highlight=current))
    ids = {name: i for i, name in mer["states"].items() if i != "s_any"}
    assert list(ids) == list(m.states)
    assert mer["initial"] == ids[m.initial]
    if current is not None:
        assert mer["classes"][ids[current]] == "current"
    # what step() does, drawn from the state, or once from the * node for cells that take
    # a "*" row
    explicit = {(r[0], r[1]) for r in rows if r[0] != "*"}
    wild_rows = {r[1]: r for r in rows if r[0] == "*"}
    want_edges, want_wild = [], set()
    for s in m.states:
        for e in m.events:
            if (s, e) in explicit:
                nxt, out = m.step(s, e)
                want_edges.append((ids[s], ids[nxt], label(e, out), False))
            elif e in wild_rows:
                _, _, dest, out = wild_rows[e]
                assert m.step(s, e) == (s if dest is None else dest, out)
                target = "s_any" if dest is None else ids[dest]
                want_wild.add(("s_any", target, label(e, out), False))
    drawn = mer["edges"]
    assert sorted(x for x in drawn if x[0] != "s_any") == sorted(want_edges)
    assert sorted(x for x in drawn if x[0] == "s_any") == sorted(want_wild)

    g = read_dot(m.to_dot(highlight=current))
    assert g["name"] == visible(m.name)
    labels = {k: dot_unquote(v["label"]) for k, v in g["nodes"].items()}
    assert [labels[f"s{i}"] for i in range(len(m.states))] == [visible(s) for s in m.states]
    dot_edges = sorted((s, d, dot_unquote(lbl)) for s, d, lbl in g["edges"] if lbl)
    mer_edges = sorted(
        (s.replace("s_any", "any"), d.replace("s_any", "any"), visible(lbl))
        for s, d, lbl, _ in mer["edges"]
    )
    assert dot_edges == mer_edges
