"""Draw a machine: Mermaid ``stateDiagram-v2`` and Graphviz DOT, from the compiled tables.

Theory of operation: both formats draw the same edge list. Each cell of the table that does
something (a row, a handler, or both) is an edge ``state -> next`` labelled ``event``,
`` / output`` when the row has one and `` [handler]`` when a handler is bound to the slot; a
slot with a handler but no row is a loop (the handler may choose another state). Cells that
take a ``"*"`` row (no explicit row, no handler of their own) are drawn once, from a dashed
``*`` node, instead of once per state; a ``"*"`` row that stays (``dest=None``) loops on it.
An optional highlighted state (an agent's current state) is filled.

Every text (state names, events, outputs) is escaped for its format, so no name can end a
statement early: in Mermaid every character outside a small safe set becomes an entity code
``#<decimal>;`` (which Mermaid decodes when it renders), and an ``n`` that would let a label
read as a ``direction TB`` statement is encoded too; in DOT, text is always a quoted string
with ``\\`` and ``"`` escaped, newlines as ``\\n`` and other control characters spelled out.
Pure functions of a ``Machine``: no I/O.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ._machine import Machine

HANDLER_MARK = " [handler]"
"""Appended to the label of an edge whose slot has a handler."""

ANY_LABEL = "*"
"""Label of the node that ``"*"`` rows start from."""

_HIGHLIGHT_FILL = "#fde68a"
_HIGHLIGHT_STROKE = "#b45309"


class Edge(NamedTuple):
    """One drawn edge; ``None`` as ``source`` or ``dest`` is the ``*`` node."""

    source: int | None
    dest: int | None
    text: str
    """``event`` or ``event / output``, unescaped."""
    handler: bool
    """A handler is bound to the slot(s) the edge stands for."""


def edges(machine: Machine) -> list[Edge]:
    """Return the edges of ``machine``, state by state, then the ``*`` rows."""
    n_s, n_e = len(machine.states), len(machine.events)
    nxt_t = machine.next_table.tolist()
    out_t = machine.output_table.tolist()
    hnd_t = machine.handler_table.tolist()
    handled = machine._handler_rows
    explicit: set[tuple[int, int]] = set()
    wild: dict[int, tuple[int | None, int]] = {}
    for srcs, ev, dest, code in machine._rows:
        if srcs is None:
            wild[ev] = (dest, code)
        else:
            explicit.update((s, ev) for s in srcs)

    def text(ev: int, code: int) -> str:
        name = machine.events[ev]
        return name if code < 0 else f"{name} / {machine.outputs[code]}"

    out: list[Edge] = []
    used_wild: set[int] = set()
    for s in range(n_s):
        for e in range(n_e):
            cell = s * n_e + e
            nxt, code, h = nxt_t[cell], out_t[cell], hnd_t[cell]
            if nxt < 0 and h < 0:
                continue
            if e in wild and (s, e) not in explicit and (s, e) not in handled:
                used_wild.add(e)  # drawn once, from the * node
                continue
            out.append(Edge(s, nxt if nxt >= 0 else s, text(e, code if nxt >= 0 else -1), h >= 0))
    for e in sorted(used_wild):
        dest, code = wild[e]
        out.append(Edge(None, dest, text(e, code), (None, e) in handled))
    return out


def _highlighted(machine: Machine, highlight: str | None) -> int | None:
    return None if highlight is None else machine.state_code(highlight)


# -- Mermaid -----------------------------------------------------------------------------

_MERMAID_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _.,-+*/=!?@'()"
)
_DIRECTION = re.compile(r"(directio)n(?= |$)", re.IGNORECASE)


def mermaid_text(text: str) -> str:
    """Escape ``text`` for a Mermaid label: safe characters as they are, the rest (and
    leading or trailing spaces) as ``#<decimal>;`` entity codes."""
    body = "".join(c if c in _MERMAID_SAFE else f"#{ord(c)};" for c in text)
    body = _DIRECTION.sub(lambda m: f"{m[1]}#{ord(m[0][-1])};", body)
    stripped = body.strip(" ")
    if stripped != body:
        lead = len(body) - len(body.lstrip(" "))
        trail = len(body) - len(body.rstrip(" "))
        body = "#32;" * lead + stripped + "#32;" * trail if stripped else "#32;" * len(body)
    return body


def mermaid(machine: Machine, highlight: str | None = None) -> str:
    """Return a Mermaid ``stateDiagram-v2`` of ``machine`` (see the module docstring).

    Raises:
        UnknownStateError: ``highlight`` is not a state.
    """
    current = _highlighted(machine, highlight)
    drawn = edges(machine)

    def node(s: int | None) -> str:
        return "s_any" if s is None else f"s{s}"

    lines = ["stateDiagram-v2"]
    lines += [f'    state "{mermaid_text(s)}" as s{i}' for i, s in enumerate(machine.states)]
    wildcard = any(e.source is None for e in drawn)
    if wildcard:
        lines.append(f'    state "{mermaid_text(ANY_LABEL)}" as s_any')
    lines.append(f"    [*] --> s{machine.state_code(machine.initial)}")
    lines += [
        f"    {node(e.source)} --> {node(e.dest)} : {mermaid_text(e.text)}"
        + (HANDLER_MARK if e.handler else "")
        for e in drawn
    ]
    if wildcard:
        lines.append("    classDef wildcard stroke-dasharray:4 4")
        lines.append("    class s_any wildcard")
    if current is not None:
        lines.append(
            f"    classDef current fill:{_HIGHLIGHT_FILL},stroke:{_HIGHLIGHT_STROKE},"
            "stroke-width:3px"
        )
        lines.append(f"    class s{current} current")
    return "\n".join(lines) + "\n"


# -- Graphviz DOT ------------------------------------------------------------------------

_DOT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n"}


def dot_text(text: str) -> str:
    """Return ``text`` as a DOT quoted string: ``\\`` and ``"`` escaped, newlines as ``\\n``,
    other control characters (and lone surrogates) spelled ``\\xNN`` / ``\\uNNNN``."""
    out = []
    for c in text:
        if c in _DOT_ESCAPES:
            out.append(_DOT_ESCAPES[c])
        elif ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0:
            out.append(f"\\\\x{ord(c):02x}")
        elif 0xD800 <= ord(c) < 0xE000:
            out.append(f"\\\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def dot(machine: Machine, highlight: str | None = None) -> str:
    """Return a Graphviz ``digraph`` of ``machine`` (see the module docstring).

    Raises:
        UnknownStateError: ``highlight`` is not a state.
    """
    current = _highlighted(machine, highlight)
    drawn = edges(machine)

    def node(s: int | None) -> str:
        return "any" if s is None else f"s{s}"

    lines = [
        f"digraph {dot_text(machine.name)} {{",
        "    rankdir=LR;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
        '    edge [fontname="Helvetica"];',
        '    start [shape=point, label=""];',
    ]
    for i, s in enumerate(machine.states):
        extra = (
            f', style="rounded,filled,bold", fillcolor="{_HIGHLIGHT_FILL}",'
            f' color="{_HIGHLIGHT_STROKE}", penwidth=2'
            if i == current
            else ""
        )
        lines.append(f"    s{i} [label={dot_text(s)}{extra}];")
    if any(e.source is None for e in drawn):
        lines.append(f'    any [label={dot_text(ANY_LABEL)}, style="rounded,dashed"];')
    lines.append(f"    start -> s{machine.state_code(machine.initial)};")
    for e in drawn:
        style = ", style=dashed" if e.source is None else ""
        label = dot_text(e.text + (HANDLER_MARK if e.handler else ""))
        if e.handler:
            style += ", penwidth=2"
        lines.append(f"    {node(e.source)} -> {node(e.dest)} [label={label}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
