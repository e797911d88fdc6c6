"""Values to bytes and back, exactly, without pickle; records framed with a version and a
checksum.

Theory of operation: a value is packed with msgpack (C, compact) with ``strict_types``, so
only exact builtins pack natively (None, bool, int up to 64 bits, float, str, bytes, list,
dict with any keys) and everything else reaches one hook. The hook keeps what JSON or plain
msgpack would lose: a tuple stays a tuple, a set a set, a big int a big int, and a type the
user registered on a ``Codec`` is written as its name and its own encoding. Anything else is
a ``CodecError`` that names the agent and the path inside the value (found by a second, slow
walk only when packing fails), raised before anything is written. A record is
``MAGIC, format version, CRC-32 of the body, body``; ``unframe`` refuses a wrong magic, a
newer version, a bad checksum or a truncated record with a ``CorruptRecordError``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Any, Final, final

import msgpack  # type: ignore[import-untyped,unused-ignore]  # (no stubs; users run mypy too)

from ..core._exceptions import EngineError, brief

MAGIC: Final = b"EN"
FORMAT_VERSION: Final = 3
"""The record format this engine writes; it reads this version and older ones (2: snapshots
carry their machine's version; 3: and their tenant's name)."""
_HEAD = struct.Struct(">2sBI")  # magic, version, CRC-32 of the body

_TUPLE, _SET, _FROZENSET, _BIGINT, _USER = 1, 2, 3, 4, 5


class CodecError(EngineError, ValueError):
    """Raised when a value cannot be encoded (a type nobody registered) or decoded; names
    the agent and the path inside the value. Nothing was written."""

    def __init__(self, message: str, agent: Any = None, path: str = "") -> None:
        where = "" if agent is None else f"agent {brief(agent)}: "
        super().__init__(f"{where}{message}" + (f" at {path}" if path else ""))
        self.agent = agent
        self.path = path


class CorruptRecordError(EngineError, ValueError):
    """Raised when a stored record is truncated, fails its checksum, or has a format version
    newer than this engine reads; names the agent when it is known."""

    def __init__(self, message: str, agent: Any = None) -> None:
        super().__init__(("" if agent is None else f"agent {brief(agent)}: ") + message)
        self.agent = agent


@final
class Codec:
    """How values are packed: the builtins exactly, plus the user's registered types.

    ``register(cls, name, encode, decode)``: ``encode(obj)`` returns something this codec
    can pack (a dict of builtins, say) and ``decode(that)`` rebuilds the object; ``name`` is
    what is stored, so keep it stable across releases of your code.
    """

    def __init__(self) -> None:
        self._by_type: dict[type, tuple[str, Callable[[Any], Any]]] = {}
        self._by_name: dict[str, Callable[[Any], Any]] = {}

    def register(
        self,
        cls: type,
        name: str,
        encode: Callable[[Any], Any],
        decode: Callable[[Any], Any],
    ) -> None:
        if not isinstance(cls, type) or not isinstance(name, str) or not name:
            raise CodecError(f"register needs a class and a name, got {brief(cls)}, {brief(name)}")
        if name in self._by_name:
            raise CodecError(f"a type is already registered as {name!r}")
        self._by_type[cls] = (name, encode)
        self._by_name[name] = decode

    def pack(self, value: Any, agent: Any = None) -> bytes:
        """``value`` as msgpack bytes (``CodecError`` naming ``agent`` and the path)."""
        try:
            packed: bytes = msgpack.packb(value, default=self._default, strict_types=True)
            return packed
        except (CodecError, TypeError, ValueError, OverflowError, RecursionError) as exc:
            try:
                message, path = _locate(self, value)
            except RecursionError:
                message, path = "the value is nested too deeply", ""
            raise CodecError(message or str(exc), agent=agent, path=path) from None

    def unpack(self, data: bytes, agent: Any = None) -> Any:
        """The value ``pack`` made (``CodecError`` if it cannot be read back)."""
        try:
            return msgpack.unpackb(
                data, ext_hook=self._ext, strict_map_key=False, use_list=True, raw=False
            )
        except CodecError as exc:
            raise CodecError(str(exc), agent=agent) from None
        except Exception as exc:  # msgpack's own errors: a damaged body
            raise CodecError(f"cannot decode: {exc}", agent=agent) from None

    def _default(self, obj: Any) -> msgpack.ExtType:
        kind = type(obj)
        if kind is tuple:
            return msgpack.ExtType(_TUPLE, self._pack_inner(list(obj)))
        if kind is set or kind is frozenset:
            items = _in_order(obj)
            return msgpack.ExtType(_SET if kind is set else _FROZENSET, self._pack_inner(items))
        if kind is int:  # beyond 64 bits: two's complement bytes, any size
            return msgpack.ExtType(
                _BIGINT, obj.to_bytes(obj.bit_length() // 8 + 1, "big", signed=True)
            )
        found = self._by_type.get(kind)
        if found is not None:
            name, encode = found
            return msgpack.ExtType(_USER, self._pack_inner([name, encode(obj)]))
        raise CodecError(f"cannot encode a {kind.__qualname__} (register it on a Codec)")

    def _pack_inner(self, value: Any) -> bytes:
        packed: bytes = msgpack.packb(value, default=self._default, strict_types=True)
        return packed

    def _ext(self, code: int, data: bytes) -> Any:
        if code == _BIGINT:
            return int.from_bytes(data, "big", signed=True)
        inner = msgpack.unpackb(
            data, ext_hook=self._ext, strict_map_key=False, use_list=True, raw=False
        )
        if code == _TUPLE:
            return tuple(inner)
        if code == _SET:
            return set(inner)
        if code == _FROZENSET:
            return frozenset(inner)
        if code == _USER:
            name, encoded = inner
            decode = self._by_name.get(name)
            if decode is None:
                raise CodecError(f"no type registered as {name!r} on this Codec")
            return decode(encoded)
        raise CodecError(f"unknown extension type {code}")


def _order(item: Any) -> Any:
    return (type(item).__name__, item)


def _in_order(items: Any) -> list[Any]:
    """A set's items in a stable order when they can be ordered (same bytes for the same set,
    run after run); otherwise in iteration order. Sorted once."""
    try:
        return sorted(items, key=_order)
    except TypeError:
        return list(items)


def _locate(codec: Codec, value: Any, path: str = "$") -> tuple[str, str]:
    """The first place in ``value`` the codec cannot pack, as (what, path)."""
    kind = type(value)
    if kind in (type(None), bool, int, float, str, bytes):
        return "", ""
    if kind in (list, tuple):
        for i, item in enumerate(value):
            found = _locate(codec, item, f"{path}[{i}]")
            if found[1]:
                return found
        return "", ""
    if kind in (set, frozenset):
        for item in value:
            found = _locate(codec, item, f"{path}{{{brief(item)}}}")
            if found[1]:
                return found
        return "", ""
    if kind is dict:
        for key, item in value.items():
            for found in (
                _locate(codec, key, f"{path}.<key {brief(key)}>"),
                _locate(codec, item, f"{path}[{brief(key)}]"),
            ):
                if found[1]:
                    return found
        return "", ""
    if kind in codec._by_type:
        return "", ""
    return f"cannot encode a {kind.__qualname__} (register it on a Codec)", path


def frame(body: bytes) -> bytes:
    """A record: magic, format version, CRC-32 of ``body``, ``body``."""
    return _HEAD.pack(MAGIC, FORMAT_VERSION, zlib.crc32(body)) + body


def unframe(record: bytes, agent: Any = None) -> bytes:
    """The body of a record made by ``frame``, checked.

    Raises:
        CorruptRecordError: Truncated, not a record, a newer format version, or a checksum
            that does not match.
    """
    if len(record) < _HEAD.size:
        raise CorruptRecordError(f"record truncated to {len(record)} bytes", agent)
    magic, version, crc = _HEAD.unpack_from(record)
    if magic != MAGIC:
        raise CorruptRecordError("not an engine record (bad magic)", agent)
    if version > FORMAT_VERSION:
        raise CorruptRecordError(
            f"record format {version} is newer than this engine reads ({FORMAT_VERSION})", agent
        )
    body = record[_HEAD.size :]
    if zlib.crc32(body) != crc:
        raise CorruptRecordError("checksum mismatch (the record is damaged)", agent)
    return body
