"""``TcpPlugin``: the server (receptor), the fan-out of outputs (effector), its statistics."""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from engine.plugin_spec import ErrorRecord, FloatOrInfinity
from engine.plugin_util import LineSplitter, encode_batch, encode_record, submit, too_long

from ._connection import CHUNK, GONE, Connection, close_gently, peer_name

if TYPE_CHECKING:
    from engine import OutputBatch
    from engine.plugin_spec import EventSink

_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_REFUSING = 16
"""Refused connections told why at once; beyond, more are closed without a word."""


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"'{attribute.name}' must be > 0: {value!r}")


@final
@attrs.frozen
class TcpStatistics:
    """What ``TcpPlugin.statistics()`` returns."""

    connections: int
    """Authenticated connections open (every connection, without a token)."""
    unauthenticated: int
    """Connections still waiting to send their token."""
    accepted: int
    """Connections accepted since the plugin was made, refused ones included."""
    buffered: int
    """Output bytes waiting to be taken by clients' sockets, summed over clients (a batch
    waiting for several clients is one object in memory, counted once per client)."""
    dropped: Mapping[str, int]
    """Connections the server closed, by the error it reported: ``SlowConsumer``,
    ``IdleTimeout``, ``Unauthorized``, ``TooManyConnections`` (or the name of an unexpected
    exception of the connection's task, also reported)."""


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
        """Seconds a connection has, from its accept, to send its token."""
        max_unauthenticated: int = attrs.field(default=8, validator=attrs.validators.ge(1))
        """Connections waiting to send their token at once; one more closes the oldest of them
        (``TooManyConnections``), so idle peers cannot keep clients with the token out."""
        max_connections: int = attrs.field(default=64, validator=attrs.validators.ge(1))
        """Authenticated connections; one more is refused (``TooManyConnections``)."""
        idle_timeout: FloatOrInfinity | None = attrs.field(default=300.0, validator=_positive)
        """Seconds an authenticated connection may send nothing (an empty line will do) before
        it is closed (``IdleTimeout``); None or ``inf``: never."""
        max_line: int = attrs.field(default=65536, validator=attrs.validators.ge(1))
        """Longest input line, in bytes."""
        send_buffer: int = attrs.field(default=16 << 20, validator=attrs.validators.ge(1))
        """Bytes of output that may wait for one client; past it, the client is dropped
        (``SlowConsumer``). A batch is always taken when nothing waits, however large."""
        send_timeout: float = attrs.field(default=10.0, validator=_positive)
        """Seconds one write to a client may take before it is dropped (``SlowConsumer``)."""
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
        self._clients: dict[Connection, None] = {}  # authenticated, in accept order
        self._waiting: dict[Connection, None] = {}  # waiting for their token, oldest first
        self._sink: EventSink | None = None
        self._effector = False  # aopen was called: aclose will flush and close connections
        self._accepted = 0
        self._refusing = 0
        self._dropped: Counter[str] = Counter()

    def statistics(self) -> TcpStatistics:
        """Connections now and since the start, and why the server closed some."""
        conns = [*self._clients, *self._waiting]
        return TcpStatistics(
            connections=len(self._clients),
            unauthenticated=len(self._waiting),
            accepted=self._accepted,
            buffered=sum(c.buffered for c in conns),
            dropped=dict(self._dropped),
        )

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
            self.listening.set()
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(self._accept, listener, nursery)
        finally:
            self.port = self.address = None
            self.listening = trio.Event()
            if cfg.port_file is not None:
                with contextlib.suppress(OSError):
                    os.unlink(cfg.port_file)
            # cancelled (the runtime shuts down) and wired as an effector: the clients stay
            # connected for the last outputs, and aclose flushes and closes them
            keep = self._effector and trio.current_effective_deadline() == -math.inf
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
                for conn in [*self._waiting, *(() if keep else self._clients)]:
                    self._forget(conn)
                    conn.kill()
                    await trio.aclose_forcefully(conn.stream)

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        cfg = self.config
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_RETRY:  # out of descriptors: let some close
                    await trio.sleep(0.1)
                    continue
                raise
            self._accepted += 1
            peer = peer_name(stream)
            if cfg.token is None:
                if len(self._clients) >= cfg.max_connections:
                    self._refuse(stream, peer, nursery)
                    continue
                conn = Connection(stream, peer, authed=True)
                self._clients[conn] = None
            else:
                if len(self._waiting) >= cfg.max_unauthenticated:
                    oldest = next(iter(self._waiting))
                    self._close(
                        oldest,
                        "TooManyConnections",
                        f"{cfg.max_unauthenticated} newer connections are waiting to send their"
                        " token; closed to make room",
                    )
                conn = Connection(stream, peer, authed=False)
                self._waiting[conn] = None
            nursery.start_soon(self._serve, conn, name=f"tcp connection {peer}")

    def _refuse(self, stream: trio.SocketStream, peer: str, nursery: trio.Nursery) -> None:
        """Too many clients: tell this one why and close (at once, past ``_REFUSING``)."""
        record = self._record(
            "TooManyConnections",
            f"the server already has {self.config.max_connections} connections",
            {"peer": peer},
        )
        self._dropped[record.error] += 1
        self._reject(record)
        if self._refusing >= _REFUSING:
            stream.socket.close()
            return
        self._refusing += 1
        nursery.start_soon(self._tell_and_close, stream, encode_record(record).encode())

    async def _tell_and_close(self, stream: trio.SocketStream, blob: bytes) -> None:
        try:
            with trio.move_on_after(self.config.send_timeout), contextlib.suppress(*GONE):
                await stream.send_all(blob)
            await close_gently(stream)
        finally:
            self._refusing -= 1
            await trio.aclose_forcefully(stream)

    async def _serve(self, conn: Connection) -> None:
        cfg = self.config
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, conn)
                    with conn.reader_scope:
                        await self._reader(conn)
                    # no more input: the writer sends what is queued (for a bounded time)
                    conn.finish()
                    nursery.cancel_scope.deadline = trio.current_time() + cfg.send_timeout
        except Exception as exc:  # a bug must not take the server down: drop this client
            while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]
            name = type(exc).__name__
            self._dropped[name] += 1
            self._reject(self._record(name, f"connection failed: {exc}", {"peer": conn.peer}))
            self._forget(conn)
            conn.kill()
        finally:
            if trio.current_effective_deadline() != -math.inf:  # else run() decides
                self._forget(conn)
                if conn.dead:
                    await trio.aclose_forcefully(conn.stream)
                else:
                    await close_gently(conn.stream)

    async def _writer(self, conn: Connection) -> None:
        if not await conn.write_all(self.config.send_timeout) and not conn.dead:
            self._slow(conn, f"a write did not complete within {self.config.send_timeout} s")

    async def _reader(self, conn: Connection) -> None:
        cfg = self.config
        lines = LineSplitter(cfg.max_line)
        deadline = trio.current_time() + cfg.auth_timeout if not conn.authed else self._idle()
        while True:
            data = b""
            with trio.move_on_at(deadline) as timer:
                try:
                    data = await conn.stream.receive_some(CHUNK)
                except GONE:
                    conn.kill()
                    return
            if timer.cancelled_caught:
                if conn.authed:
                    message = f"nothing received for {cfg.idle_timeout} s"
                    self._close(conn, "IdleTimeout", message)
                else:
                    self._close(conn, "Unauthorized", f"no token within {cfg.auth_timeout} s")
                return
            items = lines.feed(data) if data else lines.finish()
            for lineno, line, oversized in items:
                if conn.closing or conn.dead:  # closed by another task while this chunk came
                    return
                if not conn.authed:
                    if not line.strip() and not oversized:
                        continue
                    if oversized or not self._token_ok(line):
                        message = "the first line must be the token"
                        self._close(conn, "Unauthorized", message, lineno)
                        return
                    if not self._admit(conn):
                        return
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
                if record is not None:
                    self._reject(record)
                    self._send(conn, encode_record(record).encode())
            if not data:
                return  # the client closed its side
            if conn.authed:  # the time spent waiting for mailboxes is not the client's
                deadline = self._idle()

    def _idle(self) -> float:
        idle = self.config.idle_timeout
        return math.inf if idle is None else trio.current_time() + idle

    def _token_ok(self, line: bytes) -> bool:
        token = self.config.token
        assert token is not None
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return False
        given = obj.get("token") if isinstance(obj, dict) and len(obj) == 1 else None
        return isinstance(given, str) and hmac.compare_digest(given.encode(), token.encode())

    def _admit(self, conn: Connection) -> bool:
        """A connection sent the right token: a client now, if there is room for one."""
        self._waiting.pop(conn, None)
        if len(self._clients) >= self.config.max_connections:
            limit = self.config.max_connections
            self._close(conn, "TooManyConnections", f"the server already has {limit} clients")
            return False
        conn.authed = True
        self._clients[conn] = None
        return True

    # -- closing connections -------------------------------------------------------------------

    def _close(self, conn: Connection, error: str, message: str, line: int | None = None) -> None:
        """Tell ``conn`` why, and close it after its last lines (report and count it too)."""
        context: dict[str, Any] = {"peer": conn.peer}
        if line is not None:
            context["line"] = line
        record = self._record(error, message, context)  # no raw: it may be a secret
        self._dropped[error] += 1
        self._reject(record)
        self._forget(conn)
        self._send(conn, encode_record(record).encode())
        conn.finish()
        conn.reader_scope.cancel()

    def _slow(self, conn: Connection, why: str) -> None:
        """Drop ``conn`` at once: it does not take what is sent to it."""
        self._dropped["SlowConsumer"] += 1
        self._reject(self._record("SlowConsumer", f"{why}; dropped", {"peer": conn.peer}))
        self._forget(conn)
        conn.kill()

    def _send(self, conn: Connection, blob: bytes) -> None:
        if not conn.offer(blob, self.config.send_buffer):
            limit = self.config.send_buffer
            self._slow(conn, f"more than {limit} bytes of output were waiting for the client")

    def _forget(self, conn: Connection) -> None:
        self._clients.pop(conn, None)
        self._waiting.pop(conn, None)

    # -- effector ------------------------------------------------------------------------------

    async def aopen(self) -> None:
        """Called by the runtime when this object is wired as an effector."""
        self._effector = True

    def deliver(self, batch: OutputBatch) -> None:
        """Queue a batch for every authenticated connection, without waiting (a client that
        cannot take it is dropped): called inside the drain loop."""
        if self._clients:
            blob = encode_batch(batch).encode()
            if blob:
                for conn in list(self._clients):
                    self._send(conn, blob)

    def report(self, record: ErrorRecord) -> None:
        """With ``forward_errors``, queue records refused by other receptors for every
        authenticated connection (a connection already got its own errors)."""
        if self.config.forward_errors and record.source != self._name and self._clients:
            blob = encode_record(record).encode()
            for conn in list(self._clients):
                self._send(conn, blob)

    async def aclose(self) -> None:
        """Write what is still queued (each write bounded by ``send_timeout``), then close
        every connection."""
        conns = [*self._clients, *self._waiting]
        self._clients.clear()
        self._waiting.clear()
        async with trio.open_nursery() as nursery:
            for conn in conns:
                conn.finish()
                nursery.start_soon(self._flush_close, conn)

    async def _flush_close(self, conn: Connection) -> None:
        if await conn.flush(self.config.send_timeout):
            await close_gently(conn.stream)
        else:
            conn.kill()
            await trio.aclose_forcefully(conn.stream)

    # -- helpers -------------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return self._sink.name if self._sink is not None else "tcp"

    def _record(self, error: str, message: str, context: dict[str, Any]) -> ErrorRecord:
        return ErrorRecord(self._name, error, message, None, context)

    def _reject(self, record: ErrorRecord) -> None:
        if self._sink is not None:
            self._sink.reject(record)
