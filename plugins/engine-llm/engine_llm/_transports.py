"""The transports that record and replay cassettes (``_cassette`` has the file format).

Theory of operation: both are httpx transports (httpx's documented extension point), so
everything above them (the retries, the timeouts, the SSE and format decoders, the events)
runs the same code live, recording and replaying. ``RecordingTransport`` wraps the real
transport and writes one interaction when its response is closed (what was read by then, with
the time of each chunk on trio's clock). ``ReplayTransport`` answers from the interactions
with no socket: the response after its recorded delay, each chunk at its recorded offset,
woken by one ``_ReplayClock`` for every stream, and the recorded end (complete, silence after
the last chunk for a client that had stopped reading, or the same httpx error).
"""

from __future__ import annotations

import heapq
import json
import math
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, final

import httpx
import trio

from ._cassette import (
    KEPT_HEADERS,
    CassetteWriter,
    Interaction,
    NoRecordingError,
    describe_body,
    request_key,
)

if TYPE_CHECKING:
    from ._config import Secret

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


def _endpoint(url: httpx.URL, base_path: str) -> str:
    path = url.path
    return path[len(base_path) :].lstrip("/") if path.startswith(base_path) else path


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
        if "retry-after" in rec.headers and "date" in response.headers:  # what it counts from
            rec.headers["date"] = response.headers["date"]
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
        self.carry: tuple[float, bytes] | None = None
        """The end of a chunk that could be the start of the key, and that chunk's time."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        rec, key = self.rec, self.owner.key
        try:
            async for chunk in self.inner:
                t = trio.current_time() - self.start
                if self.carry:  # a key's start ended the last chunk: redact them together
                    data = key.redact_bytes(self.carry[1] + chunk)
                    t = self.carry[0]
                    self.carry = None
                else:
                    data = key.redact_bytes(chunk)
                keep = key.dangling(data)
                if keep:  # held back until the next chunk tells whether it is the key
                    self.carry = (t, data[-keep:])
                    data = data[:-keep]
                if data:
                    rec.chunks.append((t, data))
                yield chunk
        except httpx.TransportError as exc:
            rec.outcome = type(exc).__name__
            rec.message = key.redact(str(exc))
            raise
        rec.outcome = "complete"

    async def aclose(self) -> None:
        if not self.written:
            self.written = True
            if self.carry is not None:  # the body ended on a key's start: not written
                self.rec.chunks.append((self.carry[0], b"[redacted]"))
                self.carry = None
            self.rec.t_end = trio.current_time() - self.start
            self.owner.writer.write(self.rec)
        await self.inner.aclose()


# -- replay --------------------------------------------------------------------------------


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
