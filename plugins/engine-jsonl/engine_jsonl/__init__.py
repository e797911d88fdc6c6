"""engine-jsonl: JSON Lines in and out, from and to files or stdin/stdout.

``JsonlReader`` (entry point ``engine.receptors: jsonl``) reads records
``{"agent": ..., "event": ..., "payload": ..., "priority": ...}`` (payload and priority
optional) and sends them with ``await sink.send`` (so a full mailbox slows the reader down).
A bad line is refused with ``sink.reject(ErrorRecord(...))``, naming the error
(``JSONDecodeError``, ``UnicodeDecodeError``, ``InvalidRecord``, ``MissingField``,
``UnknownField``, ``InvalidField``, ``InvalidPriority``, ``LineTooLong``,
``AgentNotFoundError``, ``UnknownEventError``, ``AgentStoppedError``) with the path and the
line number in its context, and reading goes on. Without ``follow`` the receptor finishes at
the end of the input; with it, it waits for the file to grow (and starts over if the file is
truncated), like ``tail -f``.

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
from functools import partial
from typing import IO, TYPE_CHECKING, Any, Literal, final

import attrs
import trio

from engine.plugin_util import LineSplitter, encode_batch, encode_record, submit, too_long

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from engine import OutputBatch
    from engine.plugin_spec import ErrorRecord, EventSink

__all__ = ["JsonlReader", "JsonlWriter"]

CHUNK = 65536
"""Bytes read at a time."""


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"'{attribute.name}' must be > 0: {value!r}")


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

    @property
    def _where(self) -> str:
        return "<stdin>" if self.config.path == "-" else self.config.path

    async def run(self, sink: EventSink) -> None:
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
            await self._read(sink, partial(file.read, CHUNK), self.config.follow, file)

    async def _read(
        self,
        sink: EventSink,
        read: Callable[[], Awaitable[bytes]],
        follow: bool,
        file: Any = None,
    ) -> None:
        cfg = self.config
        lines = LineSplitter(cfg.max_line)
        while True:
            data = await read()
            if data:
                for item in lines.feed(data):
                    await self._line(sink, *item)
                continue
            if not follow:
                break
            # at the end of a followed file: a partial last line waits for its newline
            if os.fstat(file.fileno()).st_size < await file.tell():  # truncated: start over
                await file.seek(0)
                lines.reset()
                continue
            await trio.sleep(cfg.poll_interval)
        for item in lines.finish():
            await self._line(sink, *item)

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
