"""Recordings at rest: a run's transition records kept in a store, chunk by chunk.

Theory of operation: a recording is what a subscriber reads of a run (``Transition`` records,
and a ``Gap`` marker wherever records were missed) kept under one key in the namespace the
store layer reserves for the engine's own records, ``engine:recording:<name>``. Like the
metrics history it asks nothing of a store beyond the ``Store`` protocol, agents' readers
(``load``, restore) skip it, and ``compact`` leaves it alone. Unlike the history it grows: a
save appends chunks of at most ``CHUNK`` items, all of one call in one ``write`` (one
transaction: a call is saved whole or not at all), and ``load_recording`` reads the key's
``history``, oldest first, which is sequence order: a save that would go back (records saved
already, or another run's, whose numbers start again at 0) is refused, so one name holds one
run, and a ``Gap`` saved stays in it, so a recording with a hole says so (``replay`` refuses
it). ``recordings`` lists names from ``store.latest()`` (the protocol has no key listing: it
reads the newest record of every key).

Records are checked as they come in (a user may build ``Transition`` values), an item that
cannot be encoded fails the call with a ``CodecError`` naming its sequence number before
anything is written, and the chunks' format and the checks made reading them back are
``_chunk``'s.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterable
from typing import Any, Final

from ..core._exceptions import InvalidArgumentError, RecordingNotFoundError, brief
from ..core._validate import number
from ..runtime._records import RecordBatch
from ..runtime._ring import Gap, Transition
from ._chunk import MAX_SEQ, Row, decode_chunk, encode_chunks, row_end, stored_end
from ._codec import Codec, CorruptRecordError
from ._snapshot import DEFAULT_CODEC
from ._stores import RESERVED, Store

PREFIX: Final = RESERVED + "recording:"
"""A recording named ``name`` is kept under the store key ``PREFIX + name``."""
MAX_NAME: Final = 200
"""Longest recording name, in characters."""


def check_name(name: Any) -> str:
    """``name`` if it can name a recording: a str of 1..``MAX_NAME`` characters without
    control characters (or lone surrogates, which no database can store)."""
    if type(name) is not str or not 0 < len(name) <= MAX_NAME:
        raise InvalidArgumentError(
            f"a recording name must be a str of 1..{MAX_NAME} characters, got {brief(name)}"
        )
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise InvalidArgumentError(
            f"a recording name cannot hold control characters, got {brief(name)}"
        )
    return name


def recording_key(name: Any) -> str:
    """The store key of the recording ``name`` (checked)."""
    return PREFIX + check_name(name)


def check_store(store: Any) -> Store:
    if not isinstance(store, Store):
        raise InvalidArgumentError(f"store must be an engine.store.Store, got {brief(store)}")
    return store


def check_codec(codec: Any) -> Codec:
    if codec is None:
        return DEFAULT_CODEC
    if not isinstance(codec, Codec):
        raise InvalidArgumentError(f"codec must be an engine.store.Codec, got {brief(codec)}")
    return codec


# -- the public calls ---------------------------------------------------------------------


def save_recording(
    store: Store,
    name: str,
    records: RecordBatch | Iterable[Transition | Gap],
    *,
    codec: Codec | None = None,
) -> int:
    """Append records to the recording ``name`` in ``store`` (made by the first save).

    Args:
        store: Where the recording is kept.
        name: The recording's name (1..200 characters, no control characters).
        records: ``Transition`` and ``Gap`` items in sequence order (what a subscription's
            ``batch()`` returns, ``rt.transitions()``, a loaded recording), or a
            ``RecordBatch`` (its ``gap`` first). A ``Gap`` is kept as a marker: the recording
            has a hole there.
        codec: Encodes agent ids, outputs and payloads (default: builtins only).

    Returns:
        How many items (transitions and gap markers) were written.

    Raises:
        InvalidArgumentError: A bad argument, an item that is not a well-formed record, or
            records out of sequence order (among themselves, or going back behind what the
            recording holds: saved already, or another run's).
        CodecError: An item's agent id, outputs or payload cannot be encoded (names its
            sequence number). Nothing was written.
        CorruptRecordError: The recording's last chunk in the store is damaged.
        StoreError: The store failed.
    """
    key = recording_key(name)
    check_store(store)
    codec = check_codec(codec)
    given: Any = records  # (any object may come in)
    if isinstance(given, RecordBatch):
        rows = batch_rows(given)
    elif isinstance(given, str | bytes) or not isinstance(given, Iterable):
        raise InvalidArgumentError(
            f"records must be a RecordBatch or an iterable of Transition and Gap, "
            f"got {brief(given)}"
        )
    else:
        rows = item_rows(given)
    if not rows:
        return 0
    check_order(rows, name, stored_end(store, key, name))
    chunks = encode_chunks(rows, codec)
    now = time.time()
    store.write([(key, now, chunk) for chunk in chunks])
    return len(rows)


def load_recording(
    store: Store, name: str, *, codec: Codec | None = None
) -> list[Transition | Gap]:
    """The recording ``name``: its transitions, and a ``Gap`` wherever records were missed,
    in sequence order (feed it to ``engine.replay``).

    Raises:
        InvalidArgumentError: A bad argument.
        RecordingNotFoundError: ``store`` holds no recording of that name.
        CorruptRecordError: A chunk is damaged (names it), or was written with a codec that
            knew types this one does not.
        StoreError: The store failed.
    """
    key = recording_key(name)
    check_store(store)
    codec = check_codec(codec)
    chunks = store.history(key)
    if not chunks:
        raise RecordingNotFoundError(name)
    out: list[Transition | Gap] = []
    at = 0
    for index, stored in enumerate(chunks):
        where = f"recording {name!r}, chunk {index} (store record {stored.id})"
        first, end, items = decode_chunk(stored, codec, where)
        if first < at:
            raise CorruptRecordError(
                f"{where}: starts at seq {first}, behind the chunk before it (ends at {at})"
            )
        out.extend(items)
        at = end
    return out


def recordings(store: Store) -> list[str]:
    """Names of the recordings in ``store``, sorted. Reads the newest record of every key
    (agents' too: the ``Store`` protocol has no listing of keys).

    Raises:
        StoreError: The store failed.
    """
    check_store(store)
    return sorted(r.agent[len(PREFIX) :] for r in store.latest() if r.agent.startswith(PREFIX))


def forget_recording(store: Store, name: str) -> int:
    """Drop the recording ``name`` from ``store``; return how many chunks were dropped (0:
    there was none).

    Raises:
        InvalidArgumentError: A bad argument.
        StoreError: The store failed.
    """
    key = recording_key(name)
    return check_store(store).forget(key)


# -- rows -------------------------------------------------------------------------------


def batch_rows(batch: RecordBatch) -> list[Row]:
    """A batch's records as rows, its gap first (records from the engine: not checked)."""
    rows: list[Row] = []
    gap = batch.gap
    if gap is not None:
        rows.append([gap.seq, gap.missed])
    if not len(batch):
        return rows
    columns = zip(
        batch.seq.tolist(),
        batch.agent_ids,
        batch.sources().tolist(),
        batch.events().tolist(),
        batch.targets().tolist(),
        batch.time.tolist(),
        batch.priority.tolist(),
        batch.payloads,
        batch.front().tolist(),
        strict=True,
    )
    rows.extend(
        [seq, agent, source, event, target, list(batch.outputs(i)), t, priority, payload, front]
        for i, (seq, agent, source, event, target, t, priority, payload, front) in enumerate(
            columns
        )
    )
    return rows


def item_rows(items: Iterable[Any]) -> list[Row]:
    """``Transition`` and ``Gap`` items as rows, each checked (a user may build records)."""
    rows: list[Row] = []
    for item in items:
        if type(item) is Transition:
            rows.append(_transition_row(item))
        elif type(item) is Gap:
            seq = _seq(item.seq, "a Gap's seq")
            if type(item.missed) is not int or not 0 < item.missed <= MAX_SEQ - seq:
                raise InvalidArgumentError(f"Gap at {seq}: missed must be a positive int")
            rows.append([seq, item.missed])
        else:
            raise InvalidArgumentError(f"expected Transition and Gap items, got {brief(item)}")
    return rows


def _transition_row(t: Transition) -> Row:
    seq = _seq(t.seq, "a Transition's seq")
    for field in ("source", "event", "target"):
        if type(getattr(t, field)) is not str:
            raise InvalidArgumentError(
                f"record {seq}: {field} must be a str, got {brief(getattr(t, field))}"
            )
    if type(t.outputs) is not tuple:
        raise InvalidArgumentError(f"record {seq}: outputs must be a tuple")
    priority = t.priority
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 3:
        raise InvalidArgumentError(f"record {seq}: priority must be 0..3, got {brief(priority)}")
    if type(t.front) is not bool:
        raise InvalidArgumentError(f"record {seq}: front must be True or False")
    try:
        hash(t.agent_id)
    except Exception:
        raise InvalidArgumentError(f"record {seq}: an agent id must be hashable") from None
    return [
        seq, t.agent_id, t.source, t.event, t.target, list(t.outputs),
        number(f"record {seq}: time", t.time), int(priority), t.payload, t.front,
    ]  # fmt: skip


def _seq(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < MAX_SEQ:
        raise InvalidArgumentError(f"{what} must be an int in 0..2**62, got {brief(value)}")
    return value


def check_order(rows: list[Row], name: str, after: int | None) -> None:
    """Refuse rows that go back: behind ``after`` (where the stored recording ends) or behind
    the row before them."""
    if after is not None and rows[0][0] < after:
        raise InvalidArgumentError(
            f"recording {name!r} holds records up to seq {after - 1}; record {rows[0][0]} "
            f"goes back (saved already, or another run's: forget it or use another name)"
        )
    end = 0
    for row in rows:
        if row[0] < end:
            raise InvalidArgumentError(f"records out of order: seq {row[0]} after seq {end - 1}")
        end = row_end(row)
