"""engine-tcp: newline-delimited JSON over TCP, so another process can drive agents and read
their outputs.

``TcpPlugin`` is registered under both ``engine.receptors: tcp`` and ``engine.effectors: tcp``;
one object plays both roles.

As a receptor (``run``) it listens on ``host:port`` (``127.0.0.1`` and an ephemeral port by
default; the bound port is written to ``port_file`` once listening, and kept in ``.port``).
Each connection sends lines ``{"agent": ..., "event": ..., "payload": ..., "priority": ...}``
(payload and priority optional). A valid line is sent with ``await sink.send``: while the
agent's mailbox is full the connection is not read, so TCP flow control slows the client down.
A bad line (malformed JSON, wrong or missing fields, bad priority, unknown agent or event, a
line over ``max_line`` bytes) gets an error line ``ErrorRecord.to_json()`` written back to that
connection, is reported with ``sink.reject`` and the connection goes on (an oversized line is
skipped up to its newline). With a ``token``, the first line must be ``{"token": "..."}``;
anything else (or nothing within ``auth_timeout`` seconds) gets an ``Unauthorized`` line and
the connection is closed. A connection beyond ``max_connections`` gets ``TooManyConnections``
and is closed. The connection closes when the client closes its side.

As an effector (``async def deliver``) it writes every output to every authenticated
connection as ``{"agent": id, "output": value}`` (JSON text of a batch is built once, for all
connections). Each connection has a queue of at most ``queue`` items (a batch's lines, or an
error line) drained by its own writer task; ``deliver`` waits for room (backpressure on the
runtime) but not forever: a connection whose queue stays full for ``send_timeout`` seconds is
dropped and reported as ``SlowConsumer``. A connection that is gone is dropped quietly.
``aclose`` writes what is still queued and closes every connection. With ``forward_errors``,
records refused by *other* receptors are written to every authenticated connection too.

Nothing a client does ends the runtime: errors of one connection close that connection.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import math
import os
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from engine.plugin_spec import ErrorRecord
from engine.plugin_util import LineSplitter as LineSplitter
from engine.plugin_util import encode_batch, encode_record, submit, too_long

if TYPE_CHECKING:
    from engine import OutputBatch
    from engine.plugin_spec import EventSink

__all__ = ["TcpPlugin"]

CHUNK = 65536
"""Bytes received at a time."""
LINGER = 1.0
"""Seconds a closing connection waits for the peer to read our last lines and close."""
_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError)


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"'{attribute.name}' must be > 0: {value!r}")


@final
class _Conn:
    """One client connection: its stream, its bounded outgoing queue and its state."""

    __slots__ = (
        "authed",
        "closing",
        "data",
        "dead",
        "lock",
        "peer",
        "queue",
        "room",
        "scope",
        "stream",
    )

    def __init__(self, stream: trio.SocketStream, peer: str, authed: bool) -> None:
        self.stream = stream
        self.peer = peer
        self.authed = authed
        self.queue: deque[bytes] = deque()
        self.room = trio.lowlevel.ParkingLot()  # pushers waiting for the queue to shrink
        self.data = trio.lowlevel.ParkingLot()  # the writer waiting for the queue to fill
        self.lock = trio.StrictFIFOLock()  # one writer at a time; pops happen under it
        self.scope = trio.CancelScope()  # cancelled to drop the connection
        self.closing = False  # nothing more will be queued: the writer drains and stops
        self.dead = False  # writing failed or the connection was dropped

    def wake(self) -> None:
        self.room.unpark_all()
        self.data.unpark_all()


def _peer(stream: trio.SocketStream) -> str:
    try:
        addr = stream.socket.getpeername()
    except OSError:
        return "?"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@final
class TcpPlugin:
    """A newline-delimited JSON server: a receptor and an effector in one object."""

    @final
    @attrs.frozen
    class Config:
        host: str = "127.0.0.1"
        """Address to listen on (loopback unless configured)."""
        port: int = attrs.field(
            default=0, validator=[attrs.validators.ge(0), attrs.validators.le(65535)]
        )
        """Port to listen on; 0 picks a free one (see ``port_file``)."""
        port_file: str | None = None
        """Where to write the bound port (one line) once listening; removed when it stops."""
        token: str | None = attrs.field(
            default=None, validator=attrs.validators.optional(attrs.validators.min_len(1))
        )
        """Shared secret: each connection must first send ``{"token": "..."}``."""
        auth_timeout: float = attrs.field(default=10.0, validator=_positive)
        """Seconds a connection has to send its token."""
        max_line: int = attrs.field(default=65536, validator=attrs.validators.ge(1))
        """Longest input line, in bytes."""
        max_connections: int = attrs.field(default=64, validator=attrs.validators.ge(1))
        queue: int = attrs.field(default=64, validator=attrs.validators.ge(1))
        """Items (a batch's output lines, or an error line) queued per connection."""
        send_timeout: float = attrs.field(default=10.0, validator=_positive)
        """Seconds a connection may keep its queue full (or one write pending) before it is
        dropped as a slow consumer."""
        forward_errors: bool = False
        """Also write records refused by other receptors to every authenticated connection."""

    def __init__(self, config: TcpPlugin.Config | None = None) -> None:
        self.config = config if config is not None else TcpPlugin.Config()
        self.port: int | None = None
        """The bound port while listening."""
        self.address: tuple[str, int] | None = None
        """The bound ``(host, port)`` while listening."""
        self.listening = trio.Event()
        """Set once the server listens (and ``port_file`` is written)."""
        self._conns: dict[_Conn, None] = {}  # insertion-ordered set
        self._sink: EventSink | None = None
        self._serving = False  # writer tasks are running (inside ``run``)
        self._effector = False  # aopen was called: aclose will flush and close connections

    # -- receptor ------------------------------------------------------------------------------

    async def run(self, sink: EventSink) -> None:
        cfg = self.config
        self._sink = sink
        listeners = await trio.open_tcp_listeners(cfg.port, host=cfg.host)
        try:
            host, self.port = listeners[0].socket.getsockname()[:2]
            self.address = (host, self.port)
            if cfg.port_file is not None:
                tmp = Path(f"{cfg.port_file}.tmp")
                tmp.write_text(f"{self.port}\n")
                tmp.replace(cfg.port_file)
            self._serving = True
            self.listening.set()
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(self._accept, listener, nursery)
        finally:
            self._serving = False
            self.port = self.address = None
            self.listening = trio.Event()
            if cfg.port_file is not None:
                with contextlib.suppress(OSError):
                    os.unlink(cfg.port_file)
            # cancelled (the runtime shuts down) and wired as an effector: the connections stay
            # open for the last outputs, and aclose flushes and closes them
            keep = self._effector and trio.current_effective_deadline() == -math.inf
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
                for conn in list(self._conns):
                    conn.wake()  # pushers waiting for a writer task: there is none now
                    if not keep:
                        await self._kill(conn, slow=False)

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_RETRY:  # out of descriptors: let some close
                    await trio.sleep(0.1)
                    continue
                raise
            if len(self._conns) >= self.config.max_connections:
                nursery.start_soon(self._refuse, stream)
                continue
            conn = _Conn(stream, _peer(stream), authed=self.config.token is None)
            self._conns[conn] = None
            nursery.start_soon(self._serve, conn, name=f"tcp connection {conn.peer}")

    async def _refuse(self, stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        record = self._record(
            "TooManyConnections",
            f"the server already has {self.config.max_connections} connections",
            {"peer": peer},
        )
        self._reject(record)
        try:
            with trio.move_on_after(self.config.send_timeout), contextlib.suppress(*_GONE):
                await stream.send_all(encode_record(record).encode())
        finally:
            await _close(stream)

    async def _serve(self, conn: _Conn) -> None:
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, conn)
                    await self._reader(conn)
                    conn.closing = True  # the writer sends what is queued, then returns
                    conn.data.unpark_all()
        except Exception as exc:  # a bug must not take the server down: drop this client
            self._reject(
                self._record(type(exc).__name__, f"connection failed: {exc}", {"peer": conn.peer})
            )
            await self._kill(conn, slow=False)
        finally:
            if trio.current_effective_deadline() != -math.inf:  # else run() decides
                self._conns.pop(conn, None)
                conn.wake()
                if conn.dead:
                    await trio.aclose_forcefully(conn.stream)
                else:
                    await _close(conn.stream)

    async def _reader(self, conn: _Conn) -> None:
        cfg = self.config
        lines = LineSplitter(cfg.max_line)
        deadline = math.inf if conn.authed else trio.current_time() + cfg.auth_timeout
        while True:
            data = b""
            with trio.move_on_at(deadline) as scope:
                try:
                    data = await conn.stream.receive_some(CHUNK)
                except _GONE:
                    await self._kill(conn, slow=False)
                    return
            if scope.cancelled_caught:
                await self._unauthorized(conn, f"no token within {cfg.auth_timeout} s", None)
                return
            items = lines.feed(data) if data else lines.finish()
            for lineno, line, oversized in items:
                if not conn.authed:
                    if not line.strip() and not oversized:
                        continue
                    if oversized or not self._token_ok(line):
                        await self._unauthorized(conn, "the first line must be the token", lineno)
                        return
                    conn.authed = True
                    deadline = math.inf
                    continue
                context = {"peer": conn.peer, "line": lineno}
                record: ErrorRecord | None
                if oversized:
                    record = too_long(self._name, line, cfg.max_line, context)
                elif not line.strip():
                    continue
                else:
                    assert self._sink is not None
                    record = await submit(self._sink, line, context)
                if record is None:
                    continue
                self._reject(record)
                await self._push(conn, encode_record(record).encode())
            if not data:
                return  # the client closed its side

    def _token_ok(self, line: bytes) -> bool:
        token = self.config.token
        assert token is not None
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return False
        given = obj.get("token") if isinstance(obj, dict) and len(obj) == 1 else None
        return isinstance(given, str) and hmac.compare_digest(given.encode(), token.encode())

    async def _unauthorized(self, conn: _Conn, message: str, lineno: int | None) -> None:
        context: dict[str, Any] = {"peer": conn.peer}
        if lineno is not None:
            context["line"] = lineno
        record = self._record("Unauthorized", message, context)  # no raw: it may be a secret
        self._reject(record)
        await self._push(conn, encode_record(record).encode())

    async def _writer(self, conn: _Conn) -> None:
        while not conn.dead:
            if not conn.queue:
                if conn.closing:
                    return
                await conn.data.park()
                continue
            if not await self._write_next(conn):
                return

    async def _write_next(self, conn: _Conn) -> bool:
        """Write the oldest queued item; False if the connection is (now) dead. The write is
        shielded, so that cancellation never cuts a line, and bounded by ``send_timeout``."""
        async with conn.lock:
            if conn.dead:
                return False
            if not conn.queue:
                return True
            blob = conn.queue.popleft()
            conn.room.unpark_all()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(self.config.send_timeout) as timeout:
                    try:
                        await conn.stream.send_all(blob)
                        return True
                    except _GONE:
                        pass
                await self._kill(conn, slow=timeout.cancelled_caught)
            return False

    async def _push(self, conn: _Conn, blob: bytes) -> None:
        """Queue ``blob`` for ``conn``, waiting while its queue is full: at most
        ``send_timeout`` seconds, then the connection is dropped as a slow consumer."""
        limit = self.config.queue
        with trio.move_on_after(self.config.send_timeout) as scope:
            while len(conn.queue) >= limit and not conn.dead:
                if self._serving:
                    await conn.room.park()
                else:  # no writer task (shutting down): make room ourselves
                    await self._write_next(conn)
        if conn.dead:
            return
        if scope.cancelled_caught:
            await self._kill(conn, slow=True)
            return
        conn.queue.append(blob)
        conn.data.unpark_all()
        if not self._serving:
            while conn.queue and await self._write_next(conn):
                pass

    async def _kill(self, conn: _Conn, slow: bool) -> None:
        """Drop a connection at once: quietly if it is gone, reported if it was too slow."""
        if conn.dead:
            return
        conn.dead = True
        conn.queue.clear()
        self._conns.pop(conn, None)
        if slow:
            self._reject(
                self._record(
                    "SlowConsumer",
                    f"the connection did not take its outputs within {self.config.send_timeout}"
                    " s; dropped",
                    {"peer": conn.peer},
                )
            )
        conn.scope.cancel()  # its reader and writer stop (this may be one of them)
        conn.wake()
        await trio.aclose_forcefully(conn.stream)  # wakes a blocked send_all or receive too

    # -- effector ------------------------------------------------------------------------------

    async def aopen(self) -> None:
        """Called by the runtime when this object is wired as an effector."""
        self._effector = True

    async def deliver(self, batch: OutputBatch) -> None:
        """Write a batch to every authenticated connection, waiting for room in each queue."""
        targets = [c for c in self._conns if c.authed and not (c.dead or c.closing)]
        if not targets:
            return
        blob = encode_batch(batch).encode()
        if blob:
            for conn in targets:
                await self._push(conn, blob)

    async def report(self, record: ErrorRecord) -> None:
        """With ``forward_errors``, write records refused by other receptors to every
        authenticated connection (a connection already got its own errors)."""
        if not self.config.forward_errors or record.source == self._name:
            return
        targets = [c for c in self._conns if c.authed and not (c.dead or c.closing)]
        if targets:
            blob = encode_record(record).encode()
            for conn in targets:
                await self._push(conn, blob)

    async def aclose(self) -> None:
        """Write what is still queued, then close every connection."""
        conns = list(self._conns)
        self._conns.clear()
        async with trio.open_nursery() as nursery:
            for conn in conns:
                conn.closing = True
                conn.wake()
                nursery.start_soon(self._flush_close, conn)

    async def _flush_close(self, conn: _Conn) -> None:
        while conn.queue and await self._write_next(conn):
            pass
        if not conn.dead:
            await _close(conn.stream)

    # -- helpers -------------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return self._sink.name if self._sink is not None else "tcp"

    def _record(self, error: str, message: str, context: dict[str, Any]) -> ErrorRecord:
        return ErrorRecord(self._name, error, message, None, context)

    def _reject(self, record: ErrorRecord) -> None:
        if self._sink is not None:
            self._sink.reject(record)


async def _close(stream: trio.SocketStream) -> None:
    """Close after the peer has had a chance to read our last lines: half-close, then read
    and discard until the peer closes (at most ``LINGER`` seconds). Closing a socket with
    unread input resets the connection, and the peer could lose what we sent last."""
    try:
        with trio.move_on_after(LINGER), contextlib.suppress(*_GONE):
            await stream.send_eof()
            while await stream.receive_some(CHUNK):
                pass
    finally:
        await trio.aclose_forcefully(stream)  # closes at once, even when cancelled
