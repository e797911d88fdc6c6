"""Hot upgrade: every agent of one machine moved to another version between two steps.

Theory of operation: ``upgrade`` first works out everything and changes nothing: the state
mapping (a state of the old machine goes to the state of that name in the new one unless
``states`` says otherwise; one with nowhere to go refuses the upgrade, listing them all), each
agent's new data (``migrate(state, data)``; an exception refuses the upgrade, naming the
agent), and which events the new machine lacks. Then, in one synchronous pass (no step runs in
between, so it is atomic for the runtime), each agent is re-made on the new machine: state,
data, counters, flags, supervision and timers carry over (a timer whose event the new machine
lacks is dropped and counted), and its mail is moved over in order, requests included (a
message whose event the new machine lacks becomes an ``UNDELIVERABLE`` dead letter, its
request failed). An optional ``check(rt, agent_ids)`` runs on the upgraded agents (all, or a
``canary`` subset); if it returns False or raises, every agent is put back as it was before
the upgrade (the steps the check took are undone with them) and ``UpgradeError`` says why.
``rollback_upgrade`` runs the last upgrade backwards. Agents not in memory (hibernated, or
in a snapshot) are not touched: the runtime keeps its upgrades as a chain, and a record of an
older version is migrated along it when it is restored (``engine.store``). In a fresh
process, declaring the upgrade again (with no agent of ``old`` alive) restores the chain.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, final

import attrs
import numpy as np

from ..core._exceptions import (
    AgentStoppedError,
    EngineError,
    InvalidArgumentError,
    RuntimeBusyError,
    UnknownEventError,
    brief,
)
from ..core._machine import Machine
from ..core._types import DeadLetter, DeadLetterReason, Priority

if TYPE_CHECKING:
    from ._runtime import Runtime


class UpgradeError(EngineError):
    """Raised when ``Runtime.upgrade`` is refused (nothing changed) or its health check
    failed (everything was put back)."""


@final
@attrs.frozen
class UpgradeReport:
    """What ``upgrade`` did."""

    old: Machine
    new: Machine
    agents: int
    """Agents moved to the new machine."""
    dead_letters: int
    """Queued messages whose event the new machine lacks (now ``UNDELIVERABLE``)."""
    timers_dropped: int
    """Armed timers whose event the new machine lacks."""
    states: Mapping[str, str]
    """Where each state of the old machine went."""


Migrate = Callable[[str, Any], Any]


def upgrade(
    rt: Runtime,
    old: Machine,
    new: Machine,
    *,
    states: Mapping[str, str] | None = None,
    migrate: Migrate | None = None,
    check: Callable[[Runtime, list[Any]], object] | None = None,
    canary: int | None = None,
    undoing: bool = False,
) -> UpgradeReport:
    """See ``Runtime.upgrade`` (``undoing``: this is ``rollback_upgrade``'s)."""
    if not isinstance(old, Machine) or not isinstance(new, Machine) or old is new:
        raise InvalidArgumentError("upgrade needs two different Machine objects")
    if migrate is not None and not callable(migrate):
        raise InvalidArgumentError(f"migrate must be callable, got {brief(migrate)}")
    if check is not None and not callable(check):
        raise InvalidArgumentError(f"check must be callable, got {brief(check)}")
    if canary is not None and (type(canary) is not int or canary < 1):
        raise InvalidArgumentError(f"canary must be an int >= 1, got {brief(canary)}")
    d = rt._d
    if d.running:
        raise RuntimeBusyError("upgrade() called from inside a run (from a handler?)")
    mapping = {s: (states or {}).get(s, s) for s in old.states}
    unknown = sorted(set(states or ()) - set(old.states))
    if unknown:
        raise UpgradeError(f"states {unknown} are not states of {old.name!r}")
    missing = [f"{s!r} -> {t!r}" for s, t in mapping.items() if t not in new.state_index]
    if missing:
        raise UpgradeError(
            f"states of {old.name!r} v{old.version} with no state in {new.name!r} v"
            f"{new.version} (map them with states=): {', '.join(missing)}"
        )
    ids = _agents_of(rt, old)
    before = rt._export(ids)
    after = []
    for saved in before:
        state = old.states[saved["state"]]
        data = saved["data"]
        if migrate is not None:
            kept = copy.deepcopy(data) if check is not None else data  # (for a roll back)
            try:
                data = migrate(state, kept)
            except Exception as exc:
                raise UpgradeError(
                    f"migrate failed for agent {brief(saved['id'])} in state {state!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        after.append((saved, new.state_code(mapping[state]), data))
    events = [new.event_index.get(name, -1) for name in old.events]
    # -- nothing has changed so far; from here on it is one pass -------------------------
    dead, dropped = _move(rt, old, new, [(s, code, data, events) for s, code, data in after])
    report = UpgradeReport(old, new, len(ids), dead, dropped, mapping)
    if check is not None:
        chosen = ids if canary is None else ids[:canary]
        try:
            ok = check(rt, list(chosen))
            why = "" if ok else "the health check returned False"
        except Exception as exc:
            why = f"the health check raised {type(exc).__name__}: {exc}"
        if why:
            back = [old.event_index.get(name, -1) for name in new.events]
            _move(rt, new, old, [(s, s["state"], s["data"], back) for s in before])
            raise UpgradeError(f"upgrade of {old.name!r} rolled back: {why}")
    rt._upgrades.append((old, new, mapping, migrate))  # the chain records migrate along
    if undoing:
        rt._undo.pop()
    else:
        rt._undo.append((old, new, mapping, migrate))
    sleeper = rt._sleeper
    if sleeper is not None and old.name in sleeper._machines:  # hibernated agents of old
        del sleeper._machines[old.name]  # migrate when they wake, along rt._upgrades
        sleeper._machines[new.name] = new
    return report


def _agents_of(rt: Runtime, machine: Machine) -> list[Any]:
    d = rt._d
    index = next((i for i, m in enumerate(d.machines) if m is machine), None)
    if index is None:
        return []
    return [d.agent_at(slot) for slot in np.nonzero(d.machine_indexes() == index)[0].tolist()]


def _move(
    rt: Runtime,
    old: Machine,
    new: Machine,
    agents: list[tuple[dict[str, Any], int, Any, list[int]]],
) -> tuple[int, int]:
    """Re-make each agent on ``new`` with the state code and data given; its mail moves over
    with event codes mapped by the list (-1: the new machine lacks it)."""
    d = rt._d
    dead = dropped = 0
    loaded = []
    requeue = []
    refs = [d.ref(saved["id"]) for saved, _, _, _ in agents]
    slots = np.array([ref.slot for ref in refs], dtype=np.int64)
    for i, column in enumerate((d.processed, d.failed, d.dropped)):
        d.retired[i] -= int(column[slots].sum())  # the agents go on counting where they were
    for (saved, state, data, events), ref in zip(agents, refs, strict=True):
        agent_id = saved["id"]
        taken = d.take_mail(agent_id)
        timers = [t for t in saved["timers"] if t[3] < 0 or events[t[3]] >= 0]
        dropped += len(saved["timers"]) - len(timers)
        remade = {
            **saved, "machine": new, "state": state, "data": data,
            "front": [], "mail": [], "postponed": [], "ready": -1,
            "timers": [(k, r, g, ev if ev < 0 else events[ev], p, lane, live, order)
                       for k, r, g, ev, p, lane, live, order in timers],
        }  # fmt: skip
        rt._forget(ref)
        d.terminate(agent_id)  # (no mail left: nothing is dead-lettered)
        loaded.append((rt._import(remade, wake=False), remade))
        requeue.append((agent_id, taken, events))
    rt._finish_import(loaded)
    for agent_id, taken, events in requeue:
        for ev, payload, lane, request in taken:
            code = events[ev]
            if code >= 0:
                d.send_request(agent_id, code, payload, lane, request)
                continue
            error = UnknownEventError(new.name, old.events[ev])
            d.dead_letters.append(
                DeadLetter(agent_id, old.events[ev], payload, Priority(lane),
                           DeadLetterReason.UNDELIVERABLE, error)
            )  # fmt: skip
            d.dead_letter_count += 1
            dead += 1
            if request:
                rt._on_request(request, False, AgentStoppedError(agent_id, "was upgraded"))
    return dead, dropped


def rollback_upgrade(
    rt: Runtime, *, states: Mapping[str, str] | None = None, migrate: Migrate | None = None
) -> UpgradeReport:
    """Run the last upgrade backwards: its new machine's agents go back to the old one, with
    the inverse of its state mapping unless ``states`` is given."""
    if not rt._undo:
        raise UpgradeError("no upgrade to roll back")
    old, new, mapping, _ = rt._undo[-1]
    if states is None:
        inverse: dict[str, str] = {}
        for source, target in mapping.items():
            inverse.setdefault(target, source)
        states = {t: inverse.get(t, t) for t in new.states if inverse.get(t, t) in old.states}
    return upgrade(rt, new, old, states=states, migrate=migrate, undoing=True)
