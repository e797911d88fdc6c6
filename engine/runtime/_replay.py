"""Replay: a recorded transition stream fed into a fresh runtime, checked step by step.

Theory of operation: a record holds what its step consumed (agent, event, payload, priority,
time) and what it produced (source and target state, outputs). ``replay`` builds a fresh
runtime, lets the caller's ``setup`` spawn the same agents as the recorded run began with, and
sends each recorded mailbox message to its agent in recorded order, with the runtime's clock
at the recorded time, stepping until idle. What agents did *to each other* is not sent again:
the fresh runtime's ``Send`` actions go nowhere (the messages they delivered are records of
their own, fed in their turn), timers are never fired (their events are records too), and
front-queue steps (``NextEvent``, postponed messages replayed) are left to the machines, which
produce them again. So each agent sees exactly its recorded inputs, in its recorded order.

Every step of the fresh runtime is read back from its own record ring and compared with the
recording's next record *of the same agent* (agents' interleaving is a scheduling choice, not
behaviour). The first record not reproduced is reported as a ``Divergence``: a different
source, target or outputs, a step that failed (the error attached), a recorded step the replay
did not make, or one the replay made that was never recorded. Deterministic handlers replay
exactly; a handler reading wall-clock time, randomness or shared state shows up here.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, final

import attrs
import numpy as np

from ..core._exceptions import EngineError, InvalidArgumentError
from ._records import RecordBatch
from ._ring import Gap, Transition
from ._runtime import Runtime

FIELDS = ("source", "event", "target", "outputs")
"""What a replayed step must reproduce of its record."""


@final
@attrs.frozen
class Divergence:
    """The first recorded step a replay did not reproduce."""

    seq: int
    """Sequence number of the record in the recording."""
    agent_id: Any
    reason: str
    """``"source"``, ``"event"``, ``"target"``, ``"outputs"`` (that field differs),
    ``"failed"`` (the step failed: ``actual`` is the error), ``"missing"`` (the replay made no
    such step) or ``"extra"`` (the replay made a step the recording lacks: ``seq`` is -1)."""
    expected: Any
    actual: Any


@final
@attrs.frozen
class ReplayReport:
    """What a replay reproduced."""

    steps: int
    """Recorded steps reproduced before the first divergence (all of them when none)."""
    divergence: Divergence | None
    runtime: Runtime
    """The fresh runtime, in the state the replay left it (inspect agents and data)."""

    @property
    def ok(self) -> bool:
        """Every recorded step was reproduced, and nothing else happened."""
        return self.divergence is None


def replay(
    records: RecordBatch | Iterable[Transition | Gap],
    setup: Callable[[Runtime], object],
    *,
    spawn: Callable[[Runtime, Transition], object] | None = None,
    implementation: str | None = None,
    **runtime_options: Any,
) -> ReplayReport:
    """Feed a recorded transition stream into a fresh runtime and compare every step.

    Args:
        records: The recording, oldest first: ``rt.records()``, ``rt.transitions()``, or what a
            subscriber collected (a ``Gap`` in it cannot be replayed).
        setup: Called with the fresh runtime before anything is fed: spawn the agents the
            recorded run started with (same machines, states and data).
        spawn: Called with the fresh runtime and a record whose agent it lacks (one the
            recorded run spawned later): spawn that agent (its state is ``record.source``).
        implementation: The hot path to replay on (default: the live one).
        **runtime_options: Other ``Runtime`` arguments (``record`` and ``clock`` are the
            replay's own; a ``retention`` smaller than a chain of steps one message starts
            is fine: the replay steps in slices the ring keeps).

    Raises:
        InvalidArgumentError: ``records`` holds a ``Gap`` or something that is not a record,
            or ``setup`` is not callable.
    """
    if not callable(setup) or (spawn is not None and not callable(spawn)):
        raise InvalidArgumentError("setup and spawn must be callable")
    for name in ("record", "clock"):
        if name in runtime_options:
            raise InvalidArgumentError(f"replay sets {name} itself")
    recording = _records(records)
    now = [recording[0].time if recording else 0.0]
    rt = Runtime(
        implementation=implementation, record=True, clock=lambda: now[0], **runtime_options
    )
    setup(rt)
    rt._d.deliver_sends = False
    expected: dict[Any, deque[Transition]] = {}
    for r in recording:
        expected.setdefault(r.agent_id, deque()).append(r)
    steps = 0
    cursor = rt._d.record_seq
    slice_ = max(1, rt._retention // 2)
    for r in recording:
        if r.front:
            continue  # the machine makes it again
        now[0] = r.time
        rt._d.now = r.time
        try:
            if spawn is not None and r.agent_id not in rt._d:
                spawn(rt, r)
            rt.send_nowait(r.agent_id, r.event, r.payload, r.priority)
        except EngineError as exc:
            return ReplayReport(steps, Divergence(r.seq, r.agent_id, "failed", r, exc), rt)
        while True:  # steps in slices the ring keeps whole (a NextEvent chain may be long)
            ran = rt.run(slice_)
            made = rt.records(from_seq=cursor)
            cursor = made.next_seq
            for mine in made:
                queue = expected.get(mine.agent_id)
                if not queue:
                    extra = Divergence(-1, mine.agent_id, "extra", None, mine)
                    return ReplayReport(steps, extra, rt)
                want = queue.popleft()
                for field in FIELDS:
                    if not _equal(getattr(want, field), getattr(mine, field)):
                        diverged = Divergence(
                            want.seq, want.agent_id, field, getattr(want, field),
                            getattr(mine, field),
                        )
                        return ReplayReport(steps, diverged, rt)
                steps += 1
            if not ran:
                break
        queue = expected.get(r.agent_id)
        if queue and queue[0] is r:  # fed, but no step made: it failed
            error = rt._d.last_error(r.agent_id) if r.agent_id in rt._d else None
            reason = "failed" if error is not None else "missing"
            return ReplayReport(steps, Divergence(r.seq, r.agent_id, reason, r, error), rt)
    left = [q[0] for q in expected.values() if q]
    if left:
        first = min(left, key=lambda t: t.seq)
        diverged = Divergence(first.seq, first.agent_id, "missing", first, None)
        return ReplayReport(steps, diverged, rt)
    return ReplayReport(steps, None, rt)


def _equal(a: Any, b: Any) -> bool:
    """Equal values, NaN equal to NaN and arrays equal element by element (``==`` of a
    tuple holding numpy arrays raises; NaN is never ``==`` NaN)."""
    if a is b:
        return True
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        try:
            return bool(np.array_equal(a, b, equal_nan=True))
        except TypeError:  # arrays of objects: NaN cannot be asked for
            return bool(np.array_equal(a, b))
    try:
        return bool(a == b)
    except Exception:  # a value whose == raises (or is ambiguous) is not reproduced
        return False


def _records(records: Any) -> list[Transition]:
    if isinstance(records, RecordBatch):
        if records.gap is not None:
            raise InvalidArgumentError(f"the recording has a hole: {records.gap}")
        return records.transitions()
    out: list[Transition] = []
    for r in records:
        if isinstance(r, Gap):
            raise InvalidArgumentError(f"the recording has a hole: {r}")
        if not isinstance(r, Transition):
            raise InvalidArgumentError(f"expected Transition records, got {type(r).__name__}")
        out.append(r)
    return out
