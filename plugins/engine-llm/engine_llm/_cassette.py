"""Cassettes: streams recorded from a live server, replayed offline with the same timing.

Theory of operation: both sides are httpx transports (httpx's documented extension point),
so everything above them (the retries, the timeouts, the SSE and format decoders, the events)
runs the same code live, recording and replaying. ``RecordingTransport`` wraps the real
transport and writes one *interaction* per request when its response is closed;
``ReplayTransport`` answers from the file and never opens a socket.

A cassette is JSON Lines. The first line is ``{"format": "engine-llm-cassette", "version":
1}``; then, per interaction ``n``, in order::

    {"n": 0, "type": "request", "method": "POST", "endpoint": "chat/completions", "body": {...}}
    {"n": 0, "type": "response", "t": 0.0021, "status": 200, "headers": {"content-type": ...}}
    {"n": 0, "type": "chunk", "t": 0.0105, "data": "data: {...}\\n\\n"}     (or "b64": ...)
    {"n": 0, "type": "end", "t": 0.2113, "outcome": "complete"}

``t`` is seconds since the request was sent, on trio's clock. ``outcome`` is ``complete``,
``cancelled`` (the client stopped reading: a timeout of its own, or an interrupt; replay then
stays silent after the last chunk, as the server was), or the name of the httpx error that
ended it (``RemoteProtocolError`` for a cut stream, ``ConnectError`` before any response;
replay raises the same class at the same time). The endpoint is relative to the base URL, so
a cassette recorded against one server replays under any ``url``.

What is kept out: request headers are never written (the API key travels there), response
headers are reduced to ``content-type`` and ``retry-after``, and the key is redacted from
every chunk and error message should a server echo it.

Replay matches a request by method, endpoint and its JSON body (keys sorted). Recordings of
the same request are served in the order they were recorded, the last one again once the
others are used (a 429 then a 200 replays as a retry that succeeds; a hundred agents asking
the same thing share one recording). A request with no recording raises
``NoRecordingError`` naming it; the plugin turns that into an ``llm_error`` for the agent.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import math
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, final

import attrs
import httpx
import trio

from engine import EngineError

if TYPE_CHECKING:
    from ._config import Secret

FORMAT = "engine-llm-cassette"
VERSION = 1
KEPT_HEADERS = ("content-type", "retry-after")

_ERRORS: dict[str, type[httpx.TransportError]] = {
    cls.__name__: cls
    for cls in (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.ReadError,
        httpx.ReadTimeout,
        httpx.WriteError,
        httpx.WriteTimeout,
        httpx.PoolTimeout,
        httpx.RemoteProtocolError,
        httpx.LocalProtocolError,
        httpx.NetworkError,
        httpx.ProtocolError,
        httpx.TimeoutException,
        httpx.TransportError,
    )
}
"""The errors a recording may end with, by name (anything else replays as TransportError)."""

CHECKPOINT_EVERY = 64
"""Chunks served without sleeping before replay yields to other tasks once."""


class CassetteError(EngineError):
    """Raised when a cassette file cannot be read (names the file and the line)."""


class NoRecordingError(EngineError):
    """Raised by replay for a request the cassette holds no recording of (names it)."""


def request_key(method: str, endpoint: str, body: bytes) -> str:
    """What replay matches on: the method, the endpoint and the body's JSON, keys sorted."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("utf-8", "replace")
    return f"{method} {endpoint} {canonical}"


def describe_body(method: str, endpoint: str, body: Any) -> str:
    """Names a request in errors: endpoint, model, the start of its last message, a digest."""
    digest = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:12]
    model, last = None, ""
    if isinstance(body, dict):
        model = body.get("model")
        messages = body.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
            content = messages[-1].get("content")
            last = content if isinstance(content, str) else json.dumps(content)
    last = last if len(last) <= 60 else last[:60] + "..."
    return f"{method} {endpoint} (model {model!r}, last message {last!r}, body {digest})"


@final
@attrs.define(eq=False)
class Interaction:
    """One recorded request and what came back."""

    method: str
    endpoint: str
    body: Any
    status: int | None = None
    headers: dict[str, str] = attrs.Factory(dict)
    t_response: float = 0.0
    chunks: list[tuple[float, bytes]] = attrs.Factory(list)
    t_end: float = 0.0
    outcome: str = "cancelled"
    message: str = ""

    def lines(self, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [
            {
                "n": n,
                "type": "request",
                "method": self.method,
                "endpoint": self.endpoint,
                "body": self.body,
            }
        ]
        if self.status is not None:
            out.append(
                {
                    "n": n,
                    "type": "response",
                    "t": self.t_response,
                    "status": self.status,
                    "headers": self.headers,
                }
            )
        for t, data in self.chunks:
            line: dict[str, Any] = {"n": n, "type": "chunk", "t": t}
            try:
                line["data"] = data.decode("utf-8")
            except UnicodeDecodeError:  # a chunk may end inside a character
                line["b64"] = base64.b64encode(data).decode("ascii")
            out.append(line)
        end: dict[str, Any] = {"n": n, "type": "end", "t": self.t_end, "outcome": self.outcome}
        if self.message:
            end["message"] = self.message
        out.append(end)
        return out


def _endpoint(url: httpx.URL, base_path: str) -> str:
    path = url.path
    return path[len(base_path) :].lstrip("/") if path.startswith(base_path) else path


# -- recording ------------------------------------------------------------------------------


@final
class CassetteWriter:
    """Appends interactions to a cassette file (the header first, if the file is new)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file: TextIO | None = self.path.open("a", encoding="utf-8")
        self._n = 0
        if new:
            self._file.write(json.dumps({"format": FORMAT, "version": VERSION}) + "\n")
        else:
            self._n = sum(1 for _ in _read(self.path))
        self.written = 0
        """Interactions written by this writer."""

    def write(self, interaction: Interaction) -> None:
        """One interaction, all its lines at once (small: no thread is worth it)."""
        if self._file is None:
            return
        text = "".join(
            json.dumps(line, separators=(",", ":")) + "\n" for line in interaction.lines(self._n)
        )
        self._file.write(text)
        self._file.flush()
        self._n += 1
        self.written += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@final
class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes requests to ``inner`` and records each interaction to ``writer``."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, writer: CassetteWriter, base_path: str, key: Secret
    ) -> None:
        self.inner = inner
        self.writer = writer
        self.base_path = base_path
        self.key = key

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = request.content
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        rec = Interaction(request.method, _endpoint(request.url, self.base_path), parsed)
        start = trio.current_time()
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.TransportError as exc:
            rec.t_end = trio.current_time() - start
            rec.outcome = type(exc).__name__
            rec.message = self.key.redact(str(exc))
            self.writer.write(rec)
            raise
        except BaseException:
            rec.t_end = trio.current_time() - start
            self.writer.write(rec)  # cancelled while waiting for the response
            raise
        rec.status = response.status_code
        rec.t_response = trio.current_time() - start
        rec.headers = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_RecordingStream(stream, rec, start, self),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


@final
class _RecordingStream(httpx.AsyncByteStream):
    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        rec: Interaction,
        start: float,
        owner: RecordingTransport,
    ) -> None:
        self.inner = inner
        self.rec = rec
        self.start = start
        self.owner = owner
        self.written = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        rec, key = self.rec, self.owner.key
        try:
            async for chunk in self.inner:
                rec.chunks.append((trio.current_time() - self.start, key.redact_bytes(chunk)))
                yield chunk
        except httpx.TransportError as exc:
            rec.outcome = type(exc).__name__
            rec.message = key.redact(str(exc))
            raise
        rec.outcome = "complete"

    async def aclose(self) -> None:
        if not self.written:
            self.written = True
            self.rec.t_end = trio.current_time() - self.start
            self.owner.writer.write(self.rec)
        await self.inner.aclose()


# -- replay ---------------------------------------------------------------------------------


def _read(path: Path) -> list[Interaction]:
    """The interactions of a cassette, in order.

    Raises:
        CassetteError: Not a cassette, or a line that does not fit (its number given).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CassetteError(f"cannot read cassette {str(path)!r}: {exc}") from None
    lines = text.splitlines()
    where = f"cassette {str(path)!r}"
    if not lines:
        raise CassetteError(f"{where} is empty")
    try:
        header = json.loads(lines[0])
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CassetteError(f"{where} is not an engine-llm cassette (line 1)")
    if header.get("version") != VERSION:
        raise CassetteError(f"{where} has version {header.get('version')!r}; {VERSION} is known")
    found: dict[int, Interaction] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            _apply(found, json.loads(line))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CassetteError(f"{where}, line {number}: {type(exc).__name__}: {exc}") from None
    return [found[n] for n in sorted(found)]


def _time(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"'t' must be a finite number >= 0, not {value!r}")
    return float(value)


def _apply(found: dict[int, Interaction], line: Any) -> None:
    n, kind = line["n"], line["type"]
    if type(n) is not int:
        raise ValueError(f"'n' must be an integer, not {n!r}")
    if kind == "request":
        if n in found:
            raise ValueError(f"interaction {n} has two requests")
        method, endpoint = line["method"], line["endpoint"]
        if type(method) is not str or type(endpoint) is not str:
            raise ValueError("'method' and 'endpoint' must be strings")
        found[n] = Interaction(method, endpoint, line["body"])
        return
    rec = found[n]
    if kind == "response":
        status = line["status"]
        if type(status) is not int or not 100 <= status <= 599:
            raise ValueError(f"'status' must be an HTTP status, not {status!r}")
        headers = line.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ValueError("'headers' must map names to strings")
        rec.status, rec.t_response, rec.headers = status, _time(line["t"]), headers
    elif kind == "chunk":
        data = line["data"].encode() if "data" in line else base64.b64decode(line["b64"])
        rec.chunks.append((_time(line["t"]), data))
    elif kind == "end":
        rec.t_end, rec.outcome = _time(line["t"]), str(line["outcome"])
        rec.message = str(line.get("message", ""))
    else:
        raise ValueError(f"unknown line type {kind!r}")


def load(path: str | Path) -> list[Interaction]:
    """The interactions of the cassette at ``path`` (``CassetteError`` if it is not one)."""
    return _read(Path(path))


@final
class _ReplayClock:
    """Wakes replayed streams at their chunks' times with one timer for them all.

    ``trio.sleep_until`` per chunk costs a cancel scope and a ``Cancelled`` raised and caught
    for every chunk of every stream (about 60 µs a token with a thousand streams here);
    instead a stream parks with its due time in a heap, and one system task sleeps until the
    earliest due time and reschedules every stream due then, in due-then-arrival order. A
    stream cancelled while it waits (an interrupt) leaves a dead entry, skipped when popped.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, list[Any]]] = []
        self._seq = 0
        self._running = False
        self._target = math.inf
        self._lot = trio.lowlevel.ParkingLot()

    async def wait_until(self, due: float) -> None:
        entry: list[Any] = [trio.lowlevel.current_task(), True]
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, entry))
        if not self._running:
            self._running = True
            trio.lowlevel.spawn_system_task(self._run, name="engine-llm replay clock")
        elif due < self._target:
            self._lot.unpark_all()  # the timer sleeps past this one: let it look again

        def abort(raise_cancel: Any) -> trio.lowlevel.Abort:
            entry[1] = False
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def _run(self) -> None:
        heap = self._heap
        try:
            while heap:
                due = heap[0][0]
                if due > trio.current_time():
                    self._target = due
                    with trio.move_on_at(due):
                        await self._lot.park()
                    self._target = math.inf
                    continue
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    task, alive = heapq.heappop(heap)[2]
                    if alive:
                        trio.lowlevel.reschedule(task)
        finally:
            self._running = False
            heap.clear()  # (a run that ended left only cancelled waiters)


@final
class ReplayTransport(httpx.AsyncBaseTransport):
    """Answers requests from recorded interactions; never opens a socket."""

    def __init__(
        self,
        interactions: list[Interaction],
        base_path: str,
        *,
        timing: bool = True,
        name: str = "",
    ) -> None:
        self.base_path = base_path
        self.timing = timing
        self.name = name
        self._by_key: dict[str, deque[Interaction]] = {}
        for rec in interactions:
            body = (
                json.dumps(rec.body).encode()
                if not isinstance(rec.body, str)
                else rec.body.encode()
            )
            self._by_key.setdefault(request_key(rec.method, rec.endpoint, body), deque()).append(
                rec
            )
        self.served = 0
        """Requests answered."""
        self.clock = _ReplayClock()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = _endpoint(request.url, self.base_path)
        queue = self._by_key.get(request_key(request.method, endpoint, request.content))
        if not queue:
            try:
                body = json.loads(request.content)
            except ValueError:
                body = request.content.decode("utf-8", "replace")
            where = f" in cassette {self.name!r}" if self.name else ""
            raise NoRecordingError(
                f"no recording of {describe_body(request.method, endpoint, body)}{where}"
            )
        rec = queue.popleft() if len(queue) > 1 else queue[0]
        self.served += 1
        start = trio.current_time()
        if rec.status is None:  # it failed before any response
            await self._at(start, rec.t_end)
            if rec.outcome == "cancelled":
                await trio.sleep_forever()
            raise _ERRORS.get(rec.outcome, httpx.TransportError)(rec.message or rec.outcome)
        await self._at(start, rec.t_response)
        return httpx.Response(
            rec.status, headers=rec.headers, stream=_ReplayStream(rec, start, self), request=request
        )

    async def _at(self, start: float, offset: float) -> None:
        if self.timing:
            if start + offset > trio.current_time():
                await self.clock.wait_until(start + offset)
            else:
                await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint()


@final
class _ReplayStream(httpx.AsyncByteStream):
    def __init__(self, rec: Interaction, start: float, owner: ReplayTransport) -> None:
        self.rec = rec
        self.start = start
        self.owner = owner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        rec, start, timing = self.rec, self.start, self.owner.timing
        wait_until = self.owner.clock.wait_until
        unchecked = 0
        for t, data in rec.chunks:
            due = start + t
            if timing and due > trio.current_time():
                await wait_until(due)
                unchecked = 0
            else:
                unchecked += 1
                if unchecked >= CHECKPOINT_EVERY:
                    await trio.lowlevel.checkpoint()
                    unchecked = 0
            yield data
        if rec.outcome == "complete":
            return
        if timing and start + rec.t_end > trio.current_time():
            await wait_until(start + rec.t_end)
        if rec.outcome == "cancelled":  # the client stopped listening; the server said no more
            await trio.sleep_forever()
        raise _ERRORS.get(rec.outcome, httpx.TransportError)(rec.message or rec.outcome)
