"""``LLM``: the effector that starts the streams agents ask for, and the receptor whose sink
carries their events back.

Theory of operation: one object plays both roles. As an effector, ``deliver`` runs in the
drain loop and picks the outputs ``(tag, request)`` out of each batch; for each it asks the
runtime to run the stream as that agent's own ``Work`` (``WorkSink.start_work``, on the sink
its receptor side was given), so the stream is a task of the runtime's nursery filed under the
agent: ``rt.interrupt(agent_id)`` cancels it at once (the HTTP response is closed, the server
sees the connection go) and delivers ``interrupted``; ``terminate`` and supervision cancel it
too. As a receptor, ``run`` only keeps that sink while the runtime runs.

A stream reads the response body chunk by chunk, cuts it into SSE events and decodes them into
the vocabulary (``_events``), and delivers each event to the agent's mailbox, in order, at the
request's priority: ``send_nowait`` when there is room, else ``await sink.send``, which waits
for room. While it waits, the body is not read, so a full mailbox slows the server down
(TCP flow control) and nothing is ever dropped; that wait is not counted by the timeouts.

Everything that can go wrong becomes one ``llm_error`` event for the agent, with an
``ErrorReason``; nothing a server does raises into the runtime. A 429, a 5xx or a failed
connection is retried (``Retry``) as long as nothing has been delivered; once the agent has
seen an event of a stream, a failure ends it. Timeouts run on trio's clock, so they hold
under ``MockClock`` too: ``first_token`` from the start of an attempt to the first SSE event,
``between_tokens`` between events after that (a keep-alive is not one), ``total`` for the
whole completion, retries included, ``connect`` inside httpx. ``max_streams`` streams
run at once; the others wait for a slot before their clocks start.

The API key is sent in the request headers and nowhere else: errors are built from the
plugin's own words, server text in them is redacted (before it is cut: a cut through the key
would leave its start), and cassettes never hold headers. A key with a character no header
can carry is a ``ConfigError`` when the plugin is made; a request h11 refuses to write
(``LocalProtocolError``) is ``invalid_request``, not retried.
``aclose`` cancels the streams still running (quietly: the runtime is shutting down) and
closes the client.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, final

import attrs
import httpx
import trio

from engine import AgentNotFoundError, AgentStoppedError, EngineError, UnknownEventError, Work
from engine.plugin_spec import ErrorRecord, WorkSink

from ._cassette import CassetteWriter, Interaction, NoRecordingError, load
from ._config import LLMConfig
from ._decode import (
    AnthropicDecoder,
    ApiError,
    MalformedChunk,
    MessageTooLarge,
    OpenAIDecoder,
    StreamCut,
    decoder,
)
from ._events import LLM_ERROR, MESSAGE_STOP, TEXT_DELTA, ErrorReason, LLMError
from ._request import InvalidRequest, Request, as_request, body, describe
from ._sse import EventTooLarge, MalformedStream, SSEDecoder
from ._transports import RecordingTransport, ReplayTransport

if TYPE_CHECKING:
    from engine import OutputBatch

WIRING_GRACE = 1.0
"""Seconds (trio's clock) after ``aopen`` within which the receptor side must have started:
requests emitted before it has wait for it; after, no receptor side is a wiring error."""

MAX_EARLY = 4096
"""Requests that may wait for the receptor side to start."""

_log = logging.getLogger("engine_llm")

MESSAGE_LIMIT = 300
"""Characters of server text kept in an error message."""

REPLAY_SEED = 0
"""The jitter's seed when replaying with no ``retry.seed``: a replay runs at the same virtual
times every time."""

GONE = (AgentNotFoundError, AgentStoppedError)
"""The agent is no longer there: its stream stops."""


class PluginWiringError(EngineError):
    """Raised by ``run`` when the runtime's sink cannot start work (an engine without
    ``WorkSink``); by ``deliver`` when the plugin was never opened, or its receptor side has
    not started ``WIRING_GRACE`` seconds after it was (wired as an effector only); and by
    ``aclose`` when requests waited for a receptor side that never came."""


@final
@attrs.frozen
class LLMStatistics:
    """What the plugin has done since it was made (``LLM.statistics()``)."""

    requests: int
    """Streams agents asked for."""
    active: int
    """Streams running now (waiting for a slot included)."""
    completed: int
    """Streams whose ``message_stop`` was delivered."""
    failed: Mapping[str, int]
    """Streams that ended with ``llm_error``, by reason."""
    cancelled: int
    """Streams cancelled: interrupted, the agent terminated, or the runtime shutting down."""
    retries: int
    """Requests made again after a 429, a 5xx or a failed connection."""
    deltas: int
    """``text_delta`` events delivered."""
    waited: int
    """Events that had to wait for room in a full mailbox (backpressure)."""


@final
class _Cancelled(Exception):
    """Internal: the stream stops without an event (the agent is gone)."""


@final
class _Refused(Exception):
    """Internal: the agent's mailbox refused an event (its tenant's ``max_queued`` with
    overflow ``reject``); the stream stops, its ``llm_error`` waits for room."""


REFUSED_POLL = 0.05
"""Seconds between two tries to deliver the ``llm_error`` of a refused stream (a tenant
that rejects gives no wait to park on)."""


@final
class LLM:
    """Streamed completions for agents; see the module docstring.

    Wire one object as both receptor and effector::

        llm = LLM(LLMConfig(url="http://127.0.0.1:8080/v1"))
        async with engine.open_runtime(receptors=[llm], effectors=[llm]) as rt: ...
    """

    Config = LLMConfig
    name = "llm"

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self._key = config.resolve_key()
        replaying = config.cassette is not None and config.cassette.mode == "replay"
        seed = config.retry.seed
        self._rng = random.Random(REPLAY_SEED if seed is None and replaying else seed)
        self._live = not replaying
        self._sink: WorkSink | None = None
        self._early: list[tuple[Any, Any]] = []
        """Requests emitted before the receptor side started (``run`` starts them)."""
        self._opened_at: float | None = None
        self._wired = False
        """``run`` has taken the sink in this runtime."""
        self._generation = 0
        self._stranded = 0
        """Requests that waited for a receptor side that never started (this runtime)."""
        self._client: httpx.AsyncClient | None = None
        self._writer: CassetteWriter | None = None
        self._replay: ReplayTransport | None = None
        self._slots: trio.Semaphore | None = None
        self._scopes: set[trio.CancelScope] = set()
        self._gone = trio.lowlevel.ParkingLot()
        """Unparked when a stream ends (``aclose`` waits for them)."""
        self._headers = self._make_headers()
        self._endpoint = "messages" if config.api == "anthropic" else "chat/completions"
        self._requests = self._active = self._cancelled = self._retries = self._waited = 0
        self._counts: Counter[str] = Counter()
        """Events delivered, by name."""
        self._failed: Counter[str] = Counter()
        self._recorded: list[Interaction] | None = None  # read now: a bad one fails at once
        if config.cassette is not None and config.cassette.mode == "replay":
            self._recorded = load(config.cassette.path)

    def __repr__(self) -> str:
        return f"LLM({self.config!r})"

    def _make_headers(self) -> dict[str, str]:
        headers = {"accept": "text/event-stream", "accept-encoding": "identity"}
        key = self._key.reveal()
        if self.config.api == "anthropic":
            headers["anthropic-version"] = self.config.anthropic_version
            if key:
                headers["x-api-key"] = key
        elif key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def statistics(self) -> LLMStatistics:
        return LLMStatistics(
            self._requests,
            self._active,
            self._counts[MESSAGE_STOP],
            dict(self._failed),
            self._cancelled,
            self._retries,
            self._counts[TEXT_DELTA],
            self._waited,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def aopen(self) -> None:
        """Make the HTTP client (and open the cassette, when there is one)."""
        if self._client is not None:
            return
        cfg = self.config
        self._early.clear()  # (nothing of another runtime is carried into this one)
        self._opened_at = trio.current_time()
        self._wired = False
        self._generation += 1
        self._stranded = 0
        base_path = httpx.URL(cfg.url).path.rstrip("/")
        transport: httpx.AsyncBaseTransport
        if cfg.cassette is not None and cfg.cassette.mode == "replay":
            assert self._recorded is not None
            self._replay = ReplayTransport(
                self._recorded, base_path, timing=cfg.cassette.timing, name=cfg.cassette.path
            )
            transport = self._replay
        else:
            limits = httpx.Limits(
                max_connections=cfg.max_streams, max_keepalive_connections=cfg.max_streams
            )
            transport = httpx.AsyncHTTPTransport(limits=limits)
            if cfg.cassette is not None:
                self._writer = CassetteWriter(cfg.cassette.path)
                transport = RecordingTransport(transport, self._writer, base_path, self._key)
        connect = cfg.timeouts.connect
        self._client = httpx.AsyncClient(
            base_url=cfg.url,
            transport=transport,
            headers=self._headers,
            timeout=httpx.Timeout(connect=connect, read=None, write=connect, pool=None),
        )
        self._slots = trio.Semaphore(cfg.max_streams)

    async def aclose(self) -> None:
        """Cancel the streams still running, then close the client and the cassette."""
        for scope in list(self._scopes):
            scope.cancel()
        while self._scopes:  # they unwind (and a recording writes what it got)
            await self._gone.park()
        if self._client is not None:
            with trio.CancelScope(shield=True):
                await self._client.aclose()
            self._client = None
        if self._writer is not None:
            self._writer.close()
        stranded = self._stranded + len(self._early)
        self._early.clear()
        self._stranded = 0
        self._opened_at = None
        if stranded:
            raise PluginWiringError(_unwired(stranded, "were never started"))

    async def run(self, sink: Any) -> None:
        """Keep the runtime's sink while it runs (streams deliver through it)."""
        if not isinstance(sink, WorkSink):
            raise PluginWiringError(
                "engine-llm needs a runtime whose EventSink can start work (WorkSink)"
            )
        await self.aopen()
        self._sink = sink
        self._wired = True
        early, self._early = self._early, []
        for agent_id, value in early:
            self._start(agent_id, value)
        try:
            await trio.sleep_forever()
        finally:
            self._sink = None

    # -- effector ----------------------------------------------------------------------------

    def deliver(self, batch: OutputBatch) -> None:
        """Start a stream for each ``(tag, request)`` output of the batch (in the drain loop:
        a few checks per output, no I/O)."""
        tag = self.config.tag
        values, extras = batch.values, batch.extras
        for agent_id, code in zip(batch.agent_ids, batch.codes.tolist(), strict=True):
            out = values[code] if code >= 0 else extras[-code - 1]
            if type(out) is tuple and len(out) == 2 and type(out[0]) is str and out[0] == tag:
                self._start(agent_id, out[1])

    def _start(self, agent_id: Any, value: Any) -> None:
        sink = self._sink
        if sink is None:
            self._unstarted(agent_id, value)
            return
        self._requests += 1
        fallback = f"{agent_id}:{self._requests}"
        try:
            request = as_request(value)
            if request.id is None or request.model is None:
                request = attrs.evolve(
                    request, id=request.id or fallback, model=request.model or self.config.model
                )
            work = _work(self._stream, sink, agent_id, request)
        except InvalidRequest as exc:
            error = LLMError(fallback, ErrorReason.INVALID_REQUEST, str(exc), attempts=0)
            work = _work(self._refuse, sink, agent_id, error)
        try:
            sink.start_work(agent_id, work)
        except GONE as exc:
            sink.reject(ErrorRecord(sink.name, type(exc).__name__, str(exc), None,
                                    {"agent": agent_id}))  # fmt: skip

    def _unstarted(self, agent_id: Any, value: Any) -> None:
        """A request with no sink to start it: before the receptor side started, it waits
        for it (a while, and a bounded number); after that side ended, the runtime is
        shutting down and it is cancelled at once; else the wiring is wrong."""
        if self._wired:  # run() ended: shutting down (aclose would cancel it anyway)
            self._requests += 1
            self._cancelled += 1
            return
        if self._opened_at is None:
            raise PluginWiringError("engine-llm got a request before aopen: run it in a runtime")
        late = trio.current_time() - self._opened_at > WIRING_GRACE
        if late or len(self._early) >= MAX_EARLY:
            raise PluginWiringError(_unwired(1, "is refused"))
        if not self._early:
            trio.lowlevel.spawn_system_task(self._watch, self._generation, name="engine-llm wiring")
        self._early.append((agent_id, value))

    async def _watch(self, generation: int) -> None:
        """Report requests still waiting for the receptor side after ``WIRING_GRACE``."""
        await trio.sleep(WIRING_GRACE)
        if generation != self._generation or self._wired or not self._early:
            return
        self._stranded += len(self._early)
        _log.error("%s", _unwired(len(self._early), "are dropped"))
        self._early.clear()

    async def _refuse(self, sink: WorkSink, agent_id: Any, error: LLMError) -> None:
        await self._final(sink, agent_id, error, 1)

    async def _final(self, sink: WorkSink, agent_id: Any, error: LLMError, priority: int) -> None:
        """Deliver a stream's ``llm_error``: it waits for room, and a refusal (a tenant that
        rejects) is tried again until the tenant has room; it is the stream's last word."""
        self._failed[error.reason.value] += 1
        report = True
        while True:
            try:
                await self._send(sink, agent_id, LLM_ERROR, error, priority, report=report)
            except _Cancelled:
                return
            except _Refused:
                report = False  # (one rejected record, not one per try)
                await trio.sleep(REFUSED_POLL)
            else:
                return

    # -- one stream --------------------------------------------------------------------------

    async def _stream(self, sink: WorkSink, agent_id: Any, request: Request) -> None:
        """The agent's work: the completion, its events, or one ``llm_error``."""
        scope = trio.CancelScope()
        self._scopes.add(scope)
        self._active += 1
        finished = False
        try:
            with scope:
                try:
                    error = await self._complete(sink, agent_id, request)
                except _Cancelled:
                    error = None
                except Exception as exc:  # a defect: reported to the agent, not lost
                    text = f"{type(exc).__name__}: {exc}"
                    error = self._error(str(request.id), ErrorReason.INTERNAL, text)
                if error is not None:
                    await self._final(sink, agent_id, error, request.priority)
                finished = True
        finally:
            self._scopes.discard(scope)
            self._gone.unpark_all()
            self._active -= 1
            if not finished:
                self._cancelled += 1

    async def _complete(self, sink: WorkSink, agent_id: Any, request: Request) -> LLMError | None:
        cfg = self.config
        assert self._slots is not None
        payload = body(cfg.api, request, cfg.model, cfg.max_tokens)
        async with self._slots:
            end = trio.current_time() + cfg.timeouts.total
            attempt = 0
            while True:
                attempt += 1
                error, retry = await self._attempt(sink, agent_id, request, payload, end)
                if error is None:
                    return None
                if retry is None or attempt >= cfg.retry.attempts:
                    return attrs.evolve(error, attempts=attempt)
                delay = self._backoff(attempt, retry)
                if trio.current_time() + delay >= end:  # no time for another attempt
                    return attrs.evolve(error, attempts=attempt)
                self._retries += 1
                await trio.sleep(delay)

    async def _attempt(
        self, sink: WorkSink, agent_id: Any, request: Request, payload: dict[str, Any],
        end: float,
    ) -> tuple[LLMError | None, float | None]:  # fmt: skip
        """One request: ``(None, None)`` when the stream is done, else the error and, if it
        may be retried, the least delay the server asked for (0.0 when it asked none). It
        ends at ``end`` (``timeouts.total``), later by the time spent waiting for room."""
        dec = decoder(self.config.api, str(request.id), self.config.max_message)
        with trio.CancelScope(deadline=end) as total:
            return await self._exchange(sink, agent_id, request, payload, dec, total)
        if dec.done:  # complete; only the end of the body was late
            return None, None
        text = f"the completion took more than {self.config.timeouts.total} s"
        return self._error(str(request.id), ErrorReason.TOTAL_TIMEOUT, text), None

    async def _untimed(
        self, total: trio.CancelScope, sink: WorkSink, agent_id: Any, event: str, item: Any,
        priority: int,
    ) -> None:  # fmt: skip
        """``_send``, whose wait for room ``timeouts.total`` does not count."""
        saved = total.deadline
        total.deadline = math.inf
        start = trio.current_time()
        try:
            await self._send(sink, agent_id, event, item, priority)
        finally:
            total.deadline = saved + (trio.current_time() - start)

    async def _exchange(
        self, sink: WorkSink, agent_id: Any, request: Request, payload: dict[str, Any],
        dec: OpenAIDecoder | AnthropicDecoder, total: trio.CancelScope,
    ) -> tuple[LLMError | None, float | None]:  # fmt: skip
        cfg, rid = self.config, str(request.id)
        client = self._client
        if client is None:
            raise PluginWiringError("the plugin is closed")
        timeouts = cfg.timeouts
        sse = SSEDecoder(cfg.max_event)
        priority = request.priority
        deadline = trio.current_time() + timeouts.first_token
        between = timeouts.between_tokens
        responded = streamed = False
        redact = self._key.redact
        send, count = sink.send_nowait, self._counts
        try:
            with trio.CancelScope(deadline=deadline) as clock:
                try:
                    http = client.build_request("POST", self._endpoint, json=payload)
                except (TypeError, ValueError) as exc:  # (as_request checks: a safety net)
                    text = f"the request's body is not JSON: {redact(str(exc))}"
                    return self._error(rid, ErrorReason.INVALID_REQUEST, text), None
                http.stream = _Body(http.content)
                async with _sent(client, http) as response:
                    responded = True
                    if response.status_code != 200:
                        return await self._http_error(rid, response)
                    # Stopping early never leaves httpx's generators suspended (trio warns of
                    # those): a failure cancels ``stop`` and the loop goes on to the next read,
                    # where the cancellation unwinds them all; a cancellation that lands in
                    # the loop's body (waiting for room) is left to land again there.
                    failure: Exception | None = None
                    cancelled: trio.Cancelled | None = None
                    after = 0  # bytes after the message was complete
                    with trio.CancelScope() as stop:
                        async for chunk in response.aiter_bytes():
                            if failure is not None or cancelled is not None:
                                continue
                            if dec.done:  # only the end of the body should follow
                                after += len(chunk)
                                if after > cfg.max_event:
                                    stop.cancel()
                                continue
                            try:
                                events = sse.feed(chunk)
                                if events:
                                    # a read that completed just before an interrupt: its
                                    # events must not follow the agent's `interrupted`
                                    await trio.lowlevel.checkpoint_if_cancelled()
                                    progress = False
                                    for name, data in events:
                                        if name != "ping":  # (a keep-alive is no token)
                                            progress = True
                                        for event, item in dec.event(name, data):
                                            try:
                                                send(agent_id, event, item, priority)
                                            except trio.WouldBlock:  # full: wait, untimed
                                                clock.deadline = math.inf
                                                await self._untimed(
                                                    total, sink, agent_id, event, item, priority
                                                )
                                            except EngineError:  # refused: _send says how
                                                await self._untimed(
                                                    total, sink, agent_id, event, item, priority
                                                )
                                            else:
                                                count[event] += 1
                                    if progress:  # (one deadline write per chunk: they cost)
                                        streamed = True
                                        clock.deadline = trio.current_time() + between
                            except trio.Cancelled as exc:  # an interrupt while waiting for room:
                                cancelled = exc  # trio raises it again at the next read
                            except Exception as exc:
                                failure = exc
                                stop.cancel()
                    if cancelled is not None:  # the body ended before a read could raise it
                        await trio.lowlevel.checkpoint()
                        raise cancelled
                    if failure is not None:
                        raise failure
                    clock.deadline = math.inf  # the body ended: waiting for room is untimed
                    for event, item in dec.end():
                        await self._untimed(total, sink, agent_id, event, item, priority)
                    return None, None
            if dec.done:  # complete; only the end of the body was late
                return None, None
            if streamed:
                return self._error(
                    rid, ErrorReason.IDLE_TIMEOUT,
                    f"nothing streamed for {between} s in the middle of the message",
                ), None  # fmt: skip
            return self._error(
                rid, ErrorReason.FIRST_TOKEN_TIMEOUT,
                f"nothing streamed within {timeouts.first_token} s of the request",
            ), None  # fmt: skip
        except _Refused as exc:
            return self._error(rid, ErrorReason.REFUSED, redact(str(exc))), None
        except NoRecordingError as exc:
            text = f"{describe(request)}: {exc}"
            sink.reject(ErrorRecord(sink.name, "NoRecordingError", text, None, {"agent": agent_id}))
            return self._error(rid, ErrorReason.NO_RECORDING, text), None
        except MalformedChunk as exc:
            return self._error(rid, ErrorReason.MALFORMED_CHUNK, exc.text(redact)), None
        except MalformedStream as exc:
            return self._error(rid, ErrorReason.MALFORMED_CHUNK, redact(str(exc))), None
        except (EventTooLarge, MessageTooLarge) as exc:
            return self._error(rid, ErrorReason.TOO_LARGE, str(exc)), None
        except ApiError as exc:
            return self._error(rid, ErrorReason.API_ERROR, exc.text(redact)), None
        except StreamCut as exc:
            return self._error(rid, ErrorReason.STREAM_CUT, str(exc)), None
        except httpx.ConnectTimeout:
            text = f"no connection to {cfg.url} within {timeouts.connect} s"
            return self._error(rid, ErrorReason.CONNECT_TIMEOUT, text), 0.0
        except httpx.ConnectError as exc:
            text = f"cannot connect to {cfg.url}: {redact(str(exc))}"
            return self._error(rid, ErrorReason.CONNECT_ERROR, text), 0.0
        except httpx.DecodingError as exc:
            if dec.done:  # message_stop was delivered: what broke after it is no news
                return None, None
            return self._error(rid, ErrorReason.MALFORMED_CHUNK, redact(str(exc))), None
        except httpx.LocalProtocolError as exc:  # the client's own request is not HTTP
            if dec.done:
                return None, None
            text = f"the request could not be sent (LocalProtocolError: {redact(str(exc))})"
            return self._error(rid, ErrorReason.INVALID_REQUEST, text), None
        except httpx.TransportError as exc:
            if dec.done:  # message_stop was delivered: what broke after it is no news
                return None, None
            what = type(exc).__name__
            if not responded:  # the server closed before answering: worth another try
                text = f"no response from {cfg.url} ({what}: {redact(str(exc))})"
                return self._error(rid, ErrorReason.CONNECT_ERROR, text), 0.0
            return self._error(
                rid, ErrorReason.STREAM_CUT,
                f"the connection broke {'in the middle of' if streamed else 'before'} the "
                f"message ({what}: {redact(str(exc))})",
            ), None  # fmt: skip

    def _error(
        self, rid: str, reason: ErrorReason, text: str, status: int | None = None
    ) -> LLMError:
        """The ``llm_error`` of ``text`` (redacted again, then cut)."""
        return LLMError(rid, reason, self._key.cut(text, MESSAGE_LIMIT), status)

    async def _http_error(
        self, rid: str, response: httpx.Response
    ) -> tuple[LLMError, float | None]:
        status = response.status_code
        data = bytearray()
        cut = ""
        try:
            with trio.CancelScope() as stop:  # (see _attempt: the generators unwind on a read)
                async for chunk in response.aiter_bytes():
                    if len(data) <= self.config.max_event:
                        data += chunk
                    else:
                        stop.cancel()
        except (httpx.TransportError, httpx.DecodingError) as exc:  # the status still holds
            cut = f" (its body was cut: {type(exc).__name__})"
        detail = _error_detail(bytes(data[: self.config.max_event]), self._key.redact)
        text = f"HTTP {status} from the server{cut}: {detail}" if detail else f"HTTP {status}{cut}"
        if status == 429 or status >= 500:
            reason = ErrorReason.RATE_LIMITED if status == 429 else ErrorReason.SERVER_ERROR
            headers = response.headers
            after = retry_after(headers.get("retry-after"), headers.get("date"), live=self._live)
            if after is not None and after > self.config.retry.max_retry_after:
                text += f" (Retry-After {after:g} s is over {self.config.retry.max_retry_after} s)"
                return self._error(rid, reason, text, status), None
            return self._error(rid, reason, text, status), after or 0.0
        return self._error(rid, ErrorReason.HTTP_ERROR, text, status), None

    def _backoff(self, retry: int, after: float) -> float:
        """Seconds before retry number ``retry`` (from 1): exponential with jitter, and at
        least ``after`` (the server's ``Retry-After``)."""
        r = self.config.retry
        d = min(r.backoff * r.factor ** (retry - 1), r.max_delay)
        return max(d / 2 + self._rng.random() * d / 2, after)

    async def _send(
        self, sink: WorkSink, agent_id: Any, event: str, item: Any, priority: int,
        report: bool = True,
    ) -> None:  # fmt: skip
        """Deliver one event in order, waiting for room in a full mailbox. Raises
        ``_Cancelled`` when the agent is gone and ``_Refused`` when its mailbox refused the
        event (each reported as a rejected record)."""
        await trio.lowlevel.checkpoint_if_cancelled()  # never an event after an interrupt
        try:
            try:
                sink.send_nowait(agent_id, event, item, priority)
            except trio.WouldBlock:
                self._waited += 1
                await sink.send(agent_id, event, item, priority)
        except GONE as exc:
            sink.reject(ErrorRecord(sink.name, type(exc).__name__, str(exc), None,
                                    {"agent": agent_id, "event": event}))  # fmt: skip
            raise _Cancelled from None
        except UnknownEventError as exc:  # the machine lacks this event: told, not fatal
            sink.reject(ErrorRecord(sink.name, type(exc).__name__, str(exc), None,
                                    {"agent": agent_id, "event": event}))  # fmt: skip
            return
        except EngineError as exc:  # refused (TenantLimitError with overflow "reject")
            if report:
                sink.reject(ErrorRecord(sink.name, type(exc).__name__, str(exc), None,
                                        {"agent": agent_id, "event": event}))  # fmt: skip
            raise _Refused(f"the agent's mailbox refused {event}: {exc}") from None
        self._counts[event] += 1


@final
class _Body(httpx.AsyncByteStream):
    """A request body httpx reads without an async generator: httpx's own is one, and a
    cancellation while the body is being sent left it suspended (a ResourceWarning under
    trio, seen when an agent was terminated just after asking)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Once(self._data)


@final
class _Once:
    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        data, self._data = self._data, None
        if data is None:
            raise StopAsyncIteration
        return data


@asynccontextmanager
async def _sent(client: httpx.AsyncClient, request: httpx.Request) -> AsyncIterator[httpx.Response]:
    """``client.stream`` for a request built beforehand."""
    response = await client.send(request, stream=True)
    try:
        yield response
    finally:
        await response.aclose()


def _unwired(n: int, fate: str) -> str:
    return (
        f"engine-llm is wired as an effector only: its receptor side, which starts the "
        f"streams, never started, so {n} request(s) {fate}. Wire the same LLM object as a "
        f"receptor too: open_runtime(receptors=[llm], effectors=[llm])"
    )


def _work(fn: Callable[..., Awaitable[None]], *args: Any) -> Work:
    """An agent's ``Work`` running ``fn(*args)``; its result and failure go nowhere (``fn``
    reports to the agent itself, and a defect is a dead letter)."""
    return Work(fn, args)


def _error_detail(data: bytes, redact: Callable[[str], str]) -> str:
    """The message of an error body (either API's JSON shape), or the start of its text;
    redacted before it is cut (a key the cut went through would leave its start)."""
    text = data.decode("utf-8", "replace").strip()
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        error = obj["error"]
        kind, message = error.get("type"), error.get("message")
        text = f"{kind}: {message}" if kind else str(message)
    return redact(text)[:MESSAGE_LIMIT]


def retry_after(value: str | None, date: str | None = None, live: bool = True) -> float | None:
    """A ``Retry-After`` header in seconds (delta-seconds or an HTTP date), None if absent or
    not understood. An HTTP date counts from the response's ``Date`` header when it has one
    (recorded with it: a replay waits as long as the recording did), else from the wall
    clock when live; replaying a response without ``Date``, the date is not understood."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        when = _http_date(value)
        if when is None:
            return None
        now = _http_date(date) if date else None
        if now is None:
            if not live:
                return None
            now = time.time()
        seconds = when - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _http_date(value: str) -> float | None:
    """An HTTP date as a POSIX timestamp (None if it is not one, or has no zone)."""
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    return None if when.tzinfo is None else when.timestamp()
