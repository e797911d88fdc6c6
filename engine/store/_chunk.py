"""Recording chunks: how a recording's records are kept in a store, and checked back.

Theory of operation: a chunk is one store record holding up to ``CHUNK`` items of a
recording: ``MAGIC``, a format version, a CRC-32 of the rest, the first sequence number, the
one after the last, the number of items, and a msgpack body through a ``Codec`` (exact tuples,
sets, big ints and the user's registered types, as in snapshots; never pickle). The body is a
list of rows, ``[seq, agent, source, event, target, outputs, time, priority, payload, front]``
for a transition and ``[seq, missed]`` for a gap. Rows packed one at a time and joined after
an array header (``array_head``) are the same bytes, which is how a recorder packs each record
when it reads it and frames them later. Reading, everything a chunk holds is checked before a
record is built from it (types, ranges, hashable agent ids, sequence numbers in order and
within the announced span), so a damaged or hostile chunk is one ``CorruptRecordError`` that
names it.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any, Final

from ..core._exceptions import EngineError, brief
from ..runtime._ring import Gap, Transition
from ._codec import Codec, CodecError, CorruptRecordError
from ._stores import Store, StoredRecord

CHUNK: Final = 4096
"""Items (transitions and gap markers) per store record, at most."""
MAGIC: Final = b"ERC"
FORMAT_VERSION: Final = 1
MAX_SEQ: Final = 2**62
"""Sequence numbers are below this."""
ROW: Final = 10
"""Fields of a transition row (a gap row has 2)."""
_HEAD = struct.Struct(">3sBI")  # magic, version, CRC-32 of everything after it
_SPAN = struct.Struct(">qqI")  # first seq, the seq after the last item, items

Row = list[Any]
"""A transition or gap as stored (see the module docstring)."""


def row_end(row: Row) -> int:
    """The sequence number after ``row``'s (a gap covers ``missed`` of them)."""
    return int(row[0]) + (int(row[1]) if len(row) == 2 else 1)


def encode_chunks(rows: list[Row], codec: Codec) -> list[bytes]:
    """``rows`` as chunks of at most ``CHUNK`` items.

    Raises:
        CodecError: A row cannot be encoded, by the codec or a user's encode function
            (names its sequence number and agent).
    """
    out = []
    for start in range(0, len(rows), CHUNK):
        part = rows[start : start + CHUNK]
        try:
            body = codec.pack(part)
        except Exception as exc:  # a CodecError, or a user's encode function failing
            raise row_error(codec, part) from (None if isinstance(exc, CodecError) else exc)
        out.append(_frame(part, body))
    return out


def row_error(codec: Codec, rows: list[Row]) -> CodecError:
    """The ``CodecError`` of the first row that ``codec`` cannot encode, naming its seq."""
    for row in rows:
        if len(row) != ROW:
            continue
        for field, index in (("agent id", 1), ("outputs", 5), ("payload", 8)):
            try:
                codec.pack(row[index])
            except CodecError as exc:
                return CodecError(f"record {row[0]}, its {field}: {exc}", agent=row[1])
            except Exception as exc:  # a user's encode function failing
                return CodecError(
                    f"record {row[0]}, its {field}: {type(exc).__name__}: {exc}", agent=row[1]
                )
    return CodecError("the records cannot be encoded")


def _frame(rows: list[Row], body: bytes) -> bytes:
    return frame_chunk(rows[0][0], row_end(rows[-1]), len(rows), body)


def frame_chunk(first: int, end: int, items: int, body: bytes) -> bytes:
    """A chunk of ``items`` rows from seq ``first`` to before ``end``; ``body`` is their
    msgpack array."""
    span = _SPAN.pack(first, end, items)
    return _HEAD.pack(MAGIC, FORMAT_VERSION, zlib.crc32(body, zlib.crc32(span))) + span + body


def array_head(items: int) -> bytes:
    """The msgpack header of an array of ``items`` (as msgpack writes it): rows packed one by
    one and joined after it are the body ``codec.pack(rows)`` would make."""
    if items < 16:
        return bytes([0x90 | items])
    if items < 1 << 16:
        return b"\xdc" + items.to_bytes(2, "big")
    return b"\xdd" + items.to_bytes(4, "big")


def _unframe(record: Any, where: str) -> tuple[int, int, int, bytes]:
    """``(first seq, seq after the last, items, body)`` of a chunk, its checksum checked."""
    if not isinstance(record, bytes | bytearray | memoryview):
        raise CorruptRecordError(f"{where}: a record is bytes, got {type(record).__name__}")
    record = bytes(record)
    if len(record) < _HEAD.size + _SPAN.size:
        raise CorruptRecordError(f"{where}: truncated to {len(record)} bytes")
    magic, version, crc = _HEAD.unpack_from(record)
    if magic != MAGIC:
        raise CorruptRecordError(f"{where}: not a recording chunk (bad magic)")
    if not 1 <= version <= FORMAT_VERSION:
        raise CorruptRecordError(
            f"{where}: format {version} is not one this engine reads ({FORMAT_VERSION})"
        )
    rest = record[_HEAD.size :]
    if zlib.crc32(rest) != crc:
        raise CorruptRecordError(f"{where}: checksum mismatch (the chunk is damaged)")
    first, end, items = _SPAN.unpack_from(rest)
    if not (0 <= first < end <= MAX_SEQ and 0 < items <= end - first):
        raise CorruptRecordError(f"{where}: a bad span ({first}..{end}, {items} items)")
    return first, end, items, rest[_SPAN.size :]


def stored_end(store: Store, key: str, name: str) -> int | None:
    """Where the recording under ``key`` ends (the seq after its last item), or None if the
    store holds none. Reads only its newest chunk."""
    found = store.latest([key])
    if not found:
        return None
    where = f"recording {name!r}, last chunk (store record {found[0].id})"
    return _unframe(found[0].record, where)[1]


def decode_chunk(
    stored: StoredRecord, codec: Codec, where: str
) -> tuple[int, int, list[Transition | Gap]]:
    """``(first seq, seq after the last, items)`` of a stored chunk, all of it checked.

    Raises:
        CorruptRecordError: Anything wrong with it (``where`` names it).
    """
    first, end, count, body = _unframe(stored.record, where)
    try:
        rows = codec.unpack(body)
        if type(rows) is not list or len(rows) != count:
            raise ValueError(f"{count} items announced, the body holds something else")
        items = [_item(row) for row in rows]
    except (CodecError, EngineError, TypeError, ValueError, KeyError) as exc:
        raise CorruptRecordError(f"{where}: not a valid recording chunk ({exc})") from None
    at = first
    for item in items:
        if item.seq < at or (at == first and item.seq != first):
            raise CorruptRecordError(f"{where}: seq {item.seq} is out of place")
        at = item.seq + (item.missed if type(item) is Gap else 1)
    if at != end:
        raise CorruptRecordError(f"{where}: its items end at seq {at}, not {end}")
    return first, end, items


def _item(row: Any) -> Transition | Gap:
    """A row as a record, every field checked (``ValueError`` if any is not what it must be)."""
    if type(row) is not list or len(row) not in (2, ROW):
        raise ValueError("an item that is not a transition or a gap")
    seq = row[0]
    if type(seq) is not int or not 0 <= seq < MAX_SEQ:
        raise ValueError(f"a bad seq {brief(seq)}")
    if len(row) == 2:
        missed = row[1]
        if type(missed) is not int or not 0 < missed <= MAX_SEQ - seq:
            raise ValueError(f"a gap at {seq} with a bad count {brief(missed)}")
        return Gap(seq, missed)
    _, agent, source, event, target, outputs, t, priority, payload, front = row
    if not (type(source) is str and type(event) is str and type(target) is str):
        raise ValueError(f"record {seq}: states and events are str")
    if type(outputs) is not list:
        raise ValueError(f"record {seq}: outputs are a list")
    if type(t) is not float or not math.isfinite(t):
        raise ValueError(f"record {seq}: a bad time")
    if type(priority) is not int or not 0 <= priority <= 3:
        raise ValueError(f"record {seq}: a bad priority")
    if type(front) is not bool:
        raise ValueError(f"record {seq}: a bad front flag")
    try:
        hash(agent)
    except Exception:
        raise ValueError(f"record {seq}: an agent id that cannot be hashed") from None
    return Transition(
        seq, agent, source, event, target, tuple(outputs), t, priority, payload, front
    )
