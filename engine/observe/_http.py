"""A small HTTP/1.x responder under trio: one request per connection, GET and HEAD only.

Theory of operation: the observers serve a handful of read-only pages (``/metrics``, the
dashboard) from a task of the runtime's nursery, so the server must never let a client cost
the runtime or the other clients anything but a bounded share of one task:

* ``trio.serve_listeners`` gives every connection a task of its own; at most
  ``MAX_CONNECTIONS`` are open at once (one more gets a 503 and is closed).
* The request head is read within ``READ_TIMEOUT`` seconds (408 past it, so a client that
  sends nothing, or a byte at a time, holds only its own task for that long) and within
  ``MAX_HEAD`` bytes (431), its request line within ``MAX_LINE`` bytes (414). A malformed head
  is a 400, another method a 405; any request body is ignored.
* The answer is written within ``SEND_TIMEOUT`` seconds (a client that stops reading is
  dropped), then the write side is shut and what the client still sends is discarded for up
  to ``LINGER`` seconds before closing, so an early error answer is not lost to a reset.
* A client that resets or leaves is dropped quietly; nothing a client does raises out of its
  task. Errors of the page functions themselves (bugs) do propagate.

``route`` maps a parsed ``Request`` to a ``Response``; it runs synchronously in the
connection's task, so what it reads of the runtime is one consistent reading.
"""

from __future__ import annotations

import contextlib
import hmac
import http
import re
from collections.abc import Callable
from typing import final
from urllib.parse import parse_qs

import attrs
import trio

MAX_LINE = 4096
"""Longest request line, in bytes (414 past it)."""
MAX_HEAD = 8192
"""Longest request head (request line and headers), in bytes (431 past it)."""
MAX_CONNECTIONS = 64
"""Connections served at once; one more is answered 503 and closed."""
READ_TIMEOUT = 10.0
"""Seconds a client has, from its accept, to send its request head (408 past it)."""
SEND_TIMEOUT = 10.0
"""Seconds the answer may take to write before the client is dropped."""
LINGER = 1.0
"""Seconds the client's leftover input is read and discarded after the answer."""

_METHOD = re.compile(rb"[A-Z]{1,16}")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_FIELD_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # in a field value (a tab is allowed)


@final
@attrs.frozen
class Request:
    """A parsed request head."""

    method: str
    """``GET`` or ``HEAD``."""
    path: str
    """The target's path, as sent (no percent-decoding: routes are ASCII)."""
    query: dict[str, list[str]]
    """The target's query, decoded."""
    headers: dict[str, str]
    """Header fields by lower-case name (Latin-1 decoded, as HTTP defines)."""


@final
@attrs.frozen
class Response:
    """An answer: status, body and the header fields beyond the standard ones."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def error(status: int, detail: str = "", headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """A plain-text error answer: the status line's phrase, then ``detail``."""
    phrase = http.HTTPStatus(status).phrase
    return Response(status, f"{phrase}{': ' if detail else ''}{detail}\n".encode(), headers=headers)


class BadRequest(Exception):
    """Raised by ``parse`` for a head it refuses; carries the answer to send."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def parse(head: bytes) -> Request:
    """Parse a request head (without its final empty line).

    Raises:
        BadRequest: Malformed (400), or a method other than GET and HEAD (405).
    """
    line, *fields = head.split(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise BadRequest(error(400, "malformed request line"))
    method, target, version = parts
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise BadRequest(error(400, "HTTP/1.0 or HTTP/1.1 only"))
    if method not in (b"GET", b"HEAD"):
        raise BadRequest(error(405, "GET and HEAD only", (("Allow", "GET, HEAD"),)))
    headers: dict[str, str] = {}
    for field in fields:
        name, colon, value = field.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name) or _CONTROL.search(value):
            raise BadRequest(error(400, "malformed header field"))  # obsolete folding too
        key = name.decode("ascii").lower()
        if key in headers and key in ("authorization", "host"):
            raise BadRequest(error(400, f"more than one {key} field"))
        headers[key] = value.strip(b" \t").decode("latin-1")
    path, _, query = target.decode("ascii").partition("?")
    try:
        parsed = parse_qs(query, keep_blank_values=True, max_num_fields=16, errors="strict")
    except (ValueError, UnicodeDecodeError):  # too many fields, or not UTF-8
        raise BadRequest(error(400, "malformed query")) from None
    return Request(method.decode("ascii"), path, parsed, headers)


def check_token(request: Request, token: str | None) -> Response | None:
    """``None`` if the request may go on: no token is configured, or it carries the token
    (``Authorization: Bearer TOKEN``, else a ``token`` query parameter). Otherwise the
    refusal: 401 without credentials, 403 with wrong ones (compared in constant time)."""
    if token is None:
        return None
    given: bytes | None = None
    auth = request.headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip().encode("latin-1")
    elif "token" in request.query:
        values = request.query["token"]
        given = values[0].encode() if len(values) == 1 else b""
    if given is None:
        challenge = (("WWW-Authenticate", 'Bearer realm="engine"'),)
        return error(401, "this server needs its token (?token=... or a Bearer header)", challenge)
    if not hmac.compare_digest(given, token.encode()):
        return error(403, "wrong token")
    return None


def encode(response: Response, head_only: bool) -> bytes:
    """The answer's bytes (headers only for HEAD)."""
    status = http.HTTPStatus(response.status)
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


async def _read_head(stream: trio.SocketStream) -> bytes | Response | None:
    """The request head, the error answer for a bad one, or ``None`` if the client left
    without sending anything (a port probe)."""
    data = b""
    with trio.move_on_after(READ_TIMEOUT):
        while True:
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                if data.find(b"\r\n") > MAX_LINE:
                    return error(414)
                return data[:end] if end <= MAX_HEAD else error(431)
            if b"\r\n" not in data[: MAX_LINE + 2] and len(data) > MAX_LINE:
                return error(414)
            if len(data) > MAX_HEAD:
                return error(431)
            chunk = await stream.receive_some(4096)
            if not chunk:
                return error(400, "incomplete request head") if data else None
            data += chunk
    return error(408)


async def _answer(stream: trio.SocketStream, payload: bytes) -> None:
    """Write ``payload`` (bounded in time), shut the write side, and discard what the client
    still sends for a moment, so it reads the answer rather than a reset."""
    with trio.move_on_after(SEND_TIMEOUT) as sending:
        await stream.send_all(payload)
    if sending.cancelled_caught:
        return
    await stream.send_eof()
    with trio.move_on_after(LINGER):
        while await stream.receive_some(65536):
            pass


async def serve(
    listeners: list[trio.SocketListener],
    route: Callable[[Request], Response],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer requests on ``listeners`` with ``route`` until cancelled."""
    open_now = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal open_now
        open_now += 1
        try:
            async with stream:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    if open_now > MAX_CONNECTIONS:
                        await _answer(stream, encode(error(503, "too many connections"), False))
                        return
                    head = await _read_head(stream)
                    if head is None:
                        return
                    if isinstance(head, Response):
                        await _answer(stream, encode(head, False))
                        return
                    try:
                        request = parse(head)
                    except BadRequest as exc:
                        await _answer(stream, encode(exc.response, False))
                        return
                    try:
                        response = route(request)
                    except Exception:  # a page that fails costs its client a 500, never
                        response = error(500, "internal error")  # the runtime
                    await _answer(stream, encode(response, request.method == "HEAD"))
        finally:
            open_now -= 1

    task_status.started()
    await trio.serve_listeners(handle, listeners)
