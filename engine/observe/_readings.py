"""A metrics history at rest: ``MetricsReadings`` (columns, oldest first) and its record.

Theory of operation: a history lives in a store under one key, ``KEY``, in the namespace the
store layer reserves for the engine's own records (``engine.store.RESERVED``). ``agent_key``
never makes such a key and the readers of every agent skip it (``load``, so
``open_runtime(restore=)`` and ``python -m engine run`` too); the other paths name agents by
their own keys (hibernation's wake and expiry, rollback, the commit log's tombstones), so they
never meet it; compaction leaves reserved keys alone (each save drops the older ones). A
key rather than a table of its own because the ``Store`` protocol is all that every store
(memory, SQLite, PostgreSQL, a user's) implements: a reserved key asks nothing more of them.
Each save writes the whole history as one record and then drops the older ones, so the store
holds one record of it (two for the moment between the two calls).

The record is ``MAGIC``, a format version, the CRC-32 of the body, and a msgpack body:
``{"interval", "size", "runtime": {column: bytes}, "machines": {name: {column: bytes}},
"tenants": {...}}``, every column little-endian float64. msgpack keeps any name exactly (a
tenant's name may hold anything) and numpy reads the columns back without pickle. ``decode``
checks all of it before it builds anything: any fault is one ``CorruptRecordError``.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any, Final, final

import attrs
import msgpack  # type: ignore[import-untyped,unused-ignore]
import numpy as np
import numpy.typing as npt

from ..store._codec import CorruptRecordError
from ..store._stores import RESERVED

KEY: Final = RESERVED + "metrics-history"
"""The store key a metrics history is saved under."""
MAGIC: Final = b"EMH"
FORMAT_VERSION: Final = 1
_HEAD = struct.Struct(">3sBI")  # magic, version, CRC-32 of the body
MAX_SIZE: Final = 1_000_000
"""Most readings a history keeps (the runtime's columns alone are 136 MB at this size)."""
_FIELDS = {"interval", "size", "runtime", "machines", "tenants"}

Columns = dict[str, npt.NDArray[np.float64]]


@final
@attrs.frozen(eq=False)
class MetricsReadings:
    """A metrics history's columns at one instant, oldest reading first: every column of the
    runtime, of each machine and of each tenant holds one value per reading, so each lines up
    with ``runtime["time"]`` (the runtime's clock at each reading)."""

    interval: float
    """Seconds between readings."""
    size: int
    """Readings the history keeps at most."""
    runtime: Columns
    """The runtime's columns (``engine.observe.RUNTIME_COLUMNS``)."""
    machines: dict[str, Columns]
    """Machine name -> its columns (``MACHINE_COLUMNS``)."""
    tenants: dict[str, Columns]
    """Tenant name -> its columns (``TENANT_COLUMNS``)."""

    def __len__(self) -> int:
        return len(self.runtime["time"])


def encode(readings: MetricsReadings) -> bytes:
    """The record of ``readings`` (see the module docstring)."""

    def pack(columns: Columns) -> dict[str, bytes]:
        return {name: np.asarray(v, dtype="<f8").tobytes() for name, v in columns.items()}

    body: bytes = msgpack.packb(
        {
            "interval": readings.interval,
            "size": readings.size,
            "runtime": pack(readings.runtime),
            "machines": {name: pack(c) for name, c in readings.machines.items()},
            "tenants": {name: pack(c) for name, c in readings.tenants.items()},
        },
        use_bin_type=True,
    )
    return _HEAD.pack(MAGIC, FORMAT_VERSION, zlib.crc32(body)) + body


def decode(record: bytes) -> MetricsReadings:
    """The readings a record of ``encode`` holds.

    Raises:
        CorruptRecordError: The record is not one: truncated, a bad checksum, a newer format,
            or a body of the wrong shape (columns of different lengths, names that are not
            strings, values that are not columns).
    """
    if not isinstance(record, bytes | bytearray | memoryview):
        raise _corrupt(f"a record is bytes, got {type(record).__name__}")
    record = bytes(record)
    if len(record) < _HEAD.size:
        raise _corrupt("truncated")
    magic, version, crc = _HEAD.unpack_from(record)
    if magic != MAGIC:
        raise _corrupt("not a metrics history record")
    if version > FORMAT_VERSION:
        raise _corrupt(f"format version {version} is newer than this engine reads")
    body = record[_HEAD.size :]
    if zlib.crc32(body) != crc:
        raise _corrupt("checksum mismatch")
    try:
        data = msgpack.unpackb(body, raw=False, use_list=False)
    except Exception as exc:  # msgpack raises several kinds for bad bytes
        raise _corrupt(f"unreadable body ({type(exc).__name__})") from None
    if not isinstance(data, dict) or set(data) != _FIELDS:
        raise _corrupt("the body is not a metrics history")
    interval, size = data["interval"], data["size"]
    if type(interval) is not float or not (math.isfinite(interval) and interval > 0):
        raise _corrupt("a bad interval")
    if type(size) is not int or not 1 <= size <= MAX_SIZE:
        raise _corrupt("a bad size")
    runtime = _columns(data["runtime"], "runtime")
    if "time" not in runtime:
        raise _corrupt("the runtime has no time column")
    machines = _groups(data["machines"], "machines")
    tenants = _groups(data["tenants"], "tenants")
    lengths = {len(v) for c in (runtime, *machines.values(), *tenants.values()) for v in c.values()}
    if len(lengths) != 1 or lengths.pop() > size:
        raise _corrupt("columns of different lengths")
    return MetricsReadings(interval, size, runtime, machines, tenants)


def _groups(value: Any, where: str) -> dict[str, Columns]:
    if not isinstance(value, dict) or not all(type(k) is str for k in value):
        raise _corrupt(f"{where} is not a table of names")
    return {name: _columns(c, f"{where}[{name!r}]") for name, c in value.items()}


def _columns(value: Any, where: str) -> Columns:
    if not isinstance(value, dict) or not value:
        raise _corrupt(f"{where} has no columns")
    out = {}
    for name, raw in value.items():
        if type(name) is not str or type(raw) is not bytes or len(raw) % 8:
            raise _corrupt(f"{where} has a column that is not float64 values")
        out[name] = np.frombuffer(raw, dtype="<f8").astype(np.float64)  # (a writable copy)
    return out


def _corrupt(detail: str) -> CorruptRecordError:
    return CorruptRecordError(f"metrics history record ({KEY!r}): {detail}")
