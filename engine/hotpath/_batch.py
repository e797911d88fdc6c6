"""Helpers shared by the compiled dispatcher and its twin: ``send_many`` argument coercion,
and the ids of outputs whose agents were terminated before their batch was flushed."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..core._exceptions import InvalidArgumentError

_I32 = np.iinfo(np.int32)


def as_int32(name: str, values: Any) -> npt.NDArray[np.int32]:
    """Return ``values`` as a contiguous int32 array, refusing non-integers and overflow."""
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.int32)
    if arr.dtype.kind not in "iu":
        raise InvalidArgumentError(f"{name} must be integers, got dtype {arr.dtype}")
    if np.can_cast(arr.dtype, np.int32):
        return np.asarray(arr, dtype=np.int32, order="C")
    if arr.min() < _I32.min or arr.max() > _I32.max:
        raise InvalidArgumentError(f"{name} has values outside the int32 range")
    return np.asarray(arr, dtype=np.int32, order="C")


def batch_arrays(
    slots: Any, events: Any, priorities: Any
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Coerce ``send_many`` inputs to equal-length int32 arrays (a scalar priority broadcasts)."""
    sl = as_int32("slots", slots)
    ev = as_int32("events", events)
    pr = as_int32("priorities", priorities)
    if sl.ndim != 1 or ev.shape != sl.shape:
        raise InvalidArgumentError(
            f"slots and events must be 1-d and the same length ({sl.shape}, {ev.shape})"
        )
    if pr.ndim == 0:
        pr = np.full(sl.shape, int(pr), dtype=np.int32)
    elif pr.shape != sl.shape:
        raise InvalidArgumentError(
            f"priorities must be a scalar or match slots ({pr.shape} != {sl.shape})"
        )
    return sl, ev, pr


def restore_ids(
    ids: list[Any],
    slots: Sequence[int] | npt.NDArray[np.int32],
    retired: list[tuple[int, int, Any]],
) -> None:
    """Give the outputs of agents terminated before the flush their own ids back.

    Outputs are buffered by slot, and a slot can be reused within one batch. ``retired`` holds
    ``(outputs buffered at termination, slot, agent id)`` in order of termination, so an
    output at index ``i`` of slot ``s`` belongs to the first record of ``s`` whose count is
    above ``i`` (or, if none is, to the slot's present agent, which ``ids`` already names).
    One pass over the batch, run only when some agent was terminated with outputs pending.
    """
    by_slot: dict[int, list[tuple[int, Any]]] = {}
    for count, slot, agent_id in retired:
        by_slot.setdefault(slot, []).append((count, agent_id))
    cursor = dict.fromkeys(by_slot, 0)
    for i, slot in enumerate(slots.tolist() if isinstance(slots, np.ndarray) else slots):
        records = by_slot.get(slot)
        if records is None:
            continue
        c = cursor[slot]
        while c < len(records) and records[c][0] <= i:
            c += 1
        cursor[slot] = c
        if c < len(records):
            ids[i] = records[c][1]


def resolve_gone(
    ids: list[Any], slots: npt.NDArray[np.int32], first: int, gone: Any
) -> None:
    """Give transition records of agents terminated since the ids they had (in place).

    ``ids`` holds each record's slot's current agent; ``gone`` holds ``(seq, slot, id)`` per
    termination while recording, oldest first. A record at ``seq`` in slot ``s`` was made by
    the agent of the first termination of ``s`` after ``seq``, when there is one.
    """
    later: dict[int, deque[tuple[int, Any]]] = {}
    for when, slot, agent_id in gone:
        if when > first:
            later.setdefault(slot, deque()).append((when, agent_id))
    if not later:
        return
    for i, slot in enumerate(slots.tolist()):
        q = later.get(slot)
        if q is None:
            continue
        while q and q[0][0] <= first + i:
            q.popleft()
        if q:
            ids[i] = q[0][1]
        else:
            del later[slot]
