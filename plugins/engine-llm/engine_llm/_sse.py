"""Server-Sent Events: an incremental, bounded ``text/event-stream`` decoder (sans-IO).

Theory of operation: ``feed(bytes)`` returns the events completed by those bytes as
``(event, data)`` pairs, following the WHATWG rules that streaming APIs use: lines end with
``\\n``, ``\\r\\n`` or ``\\r`` (a ``\\r`` at the end of a chunk waits for the next one, which may
start with its ``\\n``); a blank line dispatches the event; ``data`` lines are joined with
``\\n``; a line starting with ``:`` is a comment (a keep-alive); ``id`` and ``retry`` are
ignored (a completion is never resumed); a field without a colon has an empty value; one space
after the colon is dropped. An event without ``data`` is not dispatched. Chunk boundaries never
matter: any split of the same bytes gives the same events.

Hostile input is bounded: an event (its data so far, or one unfinished line) over
``max_event`` bytes raises ``EventTooLarge`` and the decoder keeps nothing of it; bytes that
are not UTF-8 raise ``MalformedStream``.
"""

from __future__ import annotations

from typing import final

from engine import EngineError


class MalformedStream(EngineError):
    """Raised when streamed bytes are not a valid event stream (not UTF-8)."""


class EventTooLarge(EngineError):
    """Raised when one event, or one line of it, is over the decoder's ``max_event`` bytes."""


@final
class SSEDecoder:
    """Cuts a byte stream into ``(event, data)`` pairs; see the module docstring."""

    __slots__ = ("_buf", "_cr", "_data", "_event", "_held", "_size", "max_event")

    def __init__(self, max_event: int = 1 << 20) -> None:
        self.max_event = max_event
        self._buf: list[bytes] = []
        """The unfinished line, in pieces."""
        self._held = 0
        self._cr = False
        self._data: list[str] = []
        self._event = ""
        self._size = 0

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """The events completed by ``chunk``, in order.

        Raises:
            EventTooLarge: An event or line over ``max_event`` bytes.
            MalformedStream: A line that is not UTF-8.
        """
        if (
            not self._buf
            and not self._data
            and not self._cr
            and not self._event  # (an "event:" line of the last chunk names the next data)
            and chunk.endswith(b"\n\n")
            and b"\r" not in chunk
        ):  # whole events (what servers send): one or two lines each, cut without a loop
            out: list[tuple[str, str]] = []
            blocks = chunk.split(b"\n\n")
            blocks.pop()  # the empty piece after the last "\n\n"
            for block in blocks:
                if block.startswith(b"data: ") and b"\n" not in block:
                    event, data = b"", block[6:]
                elif block.startswith(b"event: ") and block.count(b"\n") == 1:
                    event, _, data = block[7:].partition(b"\n")
                    if not data.startswith(b"data: "):
                        out += self._lines([*block.split(b"\n"), b""])
                        continue
                    data = data[6:]
                else:
                    out += self._lines([*block.split(b"\n"), b""])
                    continue
                if len(data) > self.max_event:
                    raise EventTooLarge(f"an event of more than {self.max_event} bytes")
                try:
                    out.append((event.decode("utf-8"), data.decode("utf-8")))
                except UnicodeDecodeError as exc:
                    raise MalformedStream(f"a line that is not UTF-8: {exc}") from None
            return out
        if self._cr:  # the last chunk ended with "\r": a "\n" now belongs to it
            self._cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\n" not in chunk and b"\r" not in chunk:  # inside a line: keep it, joined later
            self._held += len(chunk)
            if self._held > self.max_event:
                self._reset()
                raise EventTooLarge(f"a line of more than {self.max_event} bytes")
            if chunk:
                self._buf.append(chunk)
            return []
        if self._buf:
            self._buf.append(chunk)
            buf = b"".join(self._buf)
        else:
            buf = chunk
        if b"\r" in buf:
            self._cr = buf.endswith(b"\r")
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        tail = lines.pop()
        if len(tail) > self.max_event:
            self._reset()
            raise EventTooLarge(f"a line of more than {self.max_event} bytes")
        self._buf = [tail] if tail else []
        self._held = len(tail)
        return self._lines(lines)

    def _lines(self, lines: list[bytes]) -> list[tuple[str, str]]:
        """Events completed by whole lines."""
        out: list[tuple[str, str]] = []
        for line in lines:
            if not line:
                if self._data:
                    out.append((self._event, "\n".join(self._data)))
                self._data = []
                self._event = ""
                self._size = 0
                continue
            self._line(line)
        return out

    def _line(self, line: bytes) -> None:
        if line[0] == 58:  # b":": a comment
            return
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._reset()
            raise MalformedStream(f"a line that is not UTF-8: {exc}") from None
        if field == b"data":
            self._size += len(value) + 1
            if self._size > self.max_event:
                self._reset()
                raise EventTooLarge(f"an event of more than {self.max_event} bytes")
            self._data.append(text)
        elif field == b"event":
            self._event = text

    def _reset(self) -> None:
        self._buf = []
        self._held = 0
        self._data = []
        self._event = ""
        self._size = 0

    @property
    def pending(self) -> bool:
        """True while part of an event has been read (a stream ending now ends inside it)."""
        return bool(self._buf or self._data)
