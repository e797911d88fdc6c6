"""engine-jsonl: JSON Lines in and out, from and to files or stdin/stdout.

``JsonlReader`` (entry point ``engine.receptors: jsonl``) reads records
``{"agent": ..., "event": ..., "payload": ..., "priority": ...}`` (payload and priority
optional) and sends them with ``await sink.send`` (so a full mailbox slows the reader down).
A bad line is refused with ``sink.reject(ErrorRecord(...))``, naming the error
(``JSONDecodeError``, ``UnicodeDecodeError``, ``InvalidNumber``, ``InvalidRecord``,
``MissingField``, ``UnknownField``, ``InvalidField``, ``InvalidPriority``, ``LineTooLong``,
``AgentNotFoundError``, ``UnknownEventError``, ``AgentStoppedError``) with the path and the
line number in its context, and reading goes on. Without ``follow`` the receptor finishes at
the end of the input; with it, it waits for the file to grow (and starts over if the file is
truncated), like ``tail -f``.

Restarts: a reader object remembers where it stopped (``_Position``: the bytes of the input it
has taken, the lines it has split but not yet handled, the line count), and ``run`` goes on
from there, so the runtime's restart of a failed receptor neither sends earlier lines again
nor skips later ones. Each line is handled at most once: the line being sent when the reader
failed is not sent again, it is reported as ``Interrupted``. For a file, the position is kept
for that file: when ``run`` finds a different file at the path (another inode) or a shorter
one, it reads from the top. stdin cannot be read again: the lines a failed run had already
read are kept by the object, and the next ``run`` goes on with the next line and the rest of
the stream. A new reader object starts at the top.

``JsonlWriter`` (entry point ``engine.effectors: jsonl``) writes each output as
``{"agent": id, "output": value}`` (a value JSON cannot represent is written as its
``repr``) and each refused input as its ``ErrorRecord.to_json()`` line. Its ``deliver`` is
synchronous: a batch is encoded and written to a local file inside the drain loop, in one
``write`` call, which costs less than a task switch and a queue per batch. Writing to a pipe
whose reader stops reading would block the runtime; use a file for that.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from functools import partial
from typing import IO, TYPE_CHECKING, Any, Literal, final

import attrs
import trio

from engine.plugin_spec import ErrorRecord
from engine.plugin_util import (
    LineSplitter,
    encode_batch,
    encode_record,
    raw_text,
    submit,
    too_long,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from engine import OutputBatch
    from engine.plugin_spec import EventSink

__all__ = ["JsonlReader", "JsonlWriter"]

CHUNK = 65536
"""Bytes read at a time."""


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"'{attribute.name}' must be > 0: {value!r}")


@final
@attrs.define(eq=False)
class _Position:
    """Where a reader stopped, kept on the reader object across runs (restarts)."""

    splitter: LineSplitter
    """Holds a partial last line and counts lines."""
    pending: deque[tuple[int, bytes, bool]] = attrs.Factory(deque)
    """Lines split from what was read but not handled yet: ``(line number, line, too long)``."""
    offset: int = 0
    """Bytes of the file fed to the splitter (where the next read starts)."""
    file: tuple[int, int] | None = None
    """``(st_dev, st_ino)`` of the file the offset belongs to."""
    inflight: tuple[int, bytes] | None = None
    """The line being handled; still set at the next ``run`` if handling it failed."""

    def rewind(self, file: tuple[int, int] | None) -> None:
        """Start over at the top of ``file``."""
        self.splitter.reset()
        self.pending.clear()
        self.offset = 0
        self.file = file


@final
class JsonlReader:
    """A receptor reading event records from a JSON Lines file or stdin."""

    @final
    @attrs.frozen
    class Config:
        path: str = "-"
        """The file to read; ``"-"`` is stdin."""
        max_line: int = attrs.field(default=65536, validator=attrs.validators.ge(1))
        """Longest line accepted, in bytes (a longer one is refused as ``LineTooLong``)."""
        follow: bool = False
        """Keep reading as the file grows (ignored for stdin, whose end is final)."""
        poll_interval: float = attrs.field(default=0.25, validator=_positive)
        """Seconds between looks at the end of a followed file."""

    def __init__(self, config: JsonlReader.Config | None = None) -> None:
        self.config = config if config is not None else JsonlReader.Config()
        self._pos = _Position(LineSplitter(self.config.max_line))

    @property
    def _where(self) -> str:
        return "<stdin>" if self.config.path == "-" else self.config.path

    async def run(self, sink: EventSink) -> None:
        """Read from where the last run stopped (see the module's docstring) to the end of the
        input (or forever, with ``follow``)."""
        pos = self._pos
        if pos.inflight is not None:  # the last run failed while handling this line
            lineno, line = pos.inflight
            pos.inflight = None
            sink.reject(
                ErrorRecord(
                    sink.name,
                    "Interrupted",
                    "the reader failed while handling this line; it was not sent again",
                    raw_text(line),
                    {"path": self._where, "line": lineno},
                )
            )
        if self.config.path == "-":
            stdin = sys.stdin.buffer
            read1 = getattr(stdin, "read1", stdin.read)
            # a thread blocked on stdin cannot be interrupted: abandon it on cancellation
            await self._read(
                sink,
                lambda: trio.to_thread.run_sync(read1, CHUNK, abandon_on_cancel=True),
                follow=False,
            )
            return
        async with await trio.open_file(self.config.path, "rb") as file:
            stat = os.fstat(file.fileno())
            ident = (stat.st_dev, stat.st_ino)
            if ident != pos.file or stat.st_size < pos.offset:  # another file, or truncated
                pos.rewind(ident)
            else:
                await file.seek(pos.offset)
            await self._read(sink, partial(file.read, CHUNK), self.config.follow, file)

    async def _read(
        self,
        sink: EventSink,
        read: Callable[[], Awaitable[bytes]],
        follow: bool,
        file: Any = None,
    ) -> None:
        pos = self._pos
        while True:
            await self._handle_pending(sink)
            data = await read()
            if data:
                pos.offset += len(data)
                pos.pending.extend(pos.splitter.feed(data))
                continue
            if not follow:
                break
            # at the end of a followed file: a partial last line waits for its newline
            if os.fstat(file.fileno()).st_size < pos.offset:  # truncated: start over
                await file.seek(0)
                pos.rewind(pos.file)
                continue
            await trio.sleep(self.config.poll_interval)
        pos.pending.extend(pos.splitter.finish())
        await self._handle_pending(sink)

    async def _handle_pending(self, sink: EventSink) -> None:
        """Handle the lines split so far, each at most once: a line leaves ``pending`` before
        it is handled, and stays ``inflight`` until it has been."""
        pos = self._pos
        while pos.pending:
            lineno, line, oversized = pos.pending.popleft()
            pos.inflight = (lineno, line)
            await self._line(sink, lineno, line, oversized)
            pos.inflight = None

    async def _line(self, sink: EventSink, lineno: int, line: bytes, oversized: bool) -> None:
        context = {"path": self._where, "line": lineno}
        if oversized:
            sink.reject(too_long(sink.name, line, self.config.max_line, context))
            return
        if not line.strip():
            return  # blank lines are allowed
        record = await submit(sink, line, context)
        if record is not None:
            sink.reject(record)


@final
class JsonlWriter:
    """An effector writing outputs and refused input as JSON Lines to a file or stdout."""

    @final
    @attrs.frozen
    class Config:
        path: str = "-"
        """The file to write; ``"-"`` is stdout."""
        mode: Literal["append", "truncate"] = "append"
        """Whether an existing file is appended to or emptied first."""
        flush: Literal["batch", "close"] = "batch"
        """Flush after every batch (readers see outputs at once), or only at ``aclose``."""
        errors: bool = True
        """Write refused input (``ErrorRecord``) as ``{"error": ...}`` lines too."""

    def __init__(self, config: JsonlWriter.Config | None = None) -> None:
        self.config = config if config is not None else JsonlWriter.Config()
        self._file: IO[str] | None = None
        self._owned = False

    def _open(self) -> IO[str]:
        if self._file is None:
            if self.config.path == "-":
                self._file, self._owned = sys.stdout, False
            else:
                mode = "a" if self.config.mode == "append" else "w"
                self._file = open(self.config.path, mode, encoding="utf-8")  # noqa: SIM115
                self._owned = True
        return self._file

    async def aopen(self) -> None:
        """Open the file (``deliver`` also opens it on first use)."""
        self._open()

    def deliver(self, batch: OutputBatch) -> None:
        """Write one batch: called inside the drain loop."""
        self._write(encode_batch(batch))

    def report(self, record: ErrorRecord) -> None:
        """Write a refused input as an error line."""
        if self.config.errors:
            self._write(encode_record(record))

    def _write(self, text: str) -> None:
        if not text:
            return
        file = self._open()
        file.write(text)
        if self.config.flush == "batch":
            file.flush()

    async def aclose(self) -> None:
        """Flush, and close the file (stdout is flushed, not closed)."""
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.flush()
        finally:
            if self._owned:
                file.close()
