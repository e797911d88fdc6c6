"""A model server for the engine-llm tests: a real HTTP server (an ASGI app served by hypercorn
on trio, in its own process on 127.0.0.1) that streams completions in both formats the plugin
speaks, with switches for the failures it must survive.

Theory of operation: ``POST /v1/chat/completions`` answers in the OpenAI-compatible
chat-completions streaming format and ``POST /v1/messages`` in the Anthropic messages
streaming format (both Server-Sent Events). The reply is a pure function of the request: the
text ``"echo: <the last user message>"`` cut into one token per word, so every test knows what
its agents must receive. Switches ride in the URL, before ``/v1``, as
``/s/<name>=<value>,<name>=<value>``, so one server process serves every test and each plugin
instance picks its behaviour with its ``base_url``:

==============  ==========================================================================
``delay``       seconds between streamed events (default 0)
``first``       seconds before the response starts (headers and all)
``stall``       after this many tokens, stall for ``stall_for`` seconds (default 3600)
``status``      answer with this HTTP status instead of a stream (``fail`` times, or always)
``fail``        only the first ``fail`` requests of a conversation get ``status`` (429
                when ``status`` is not given); the next ones stream
``retry_after`` the ``Retry-After`` header (seconds) of those failures
``cut``         after this many tokens, abort the connection mid-message
``bad``         after this many tokens, send a chunk that is not JSON
``tool``        after the text, call the tool of this name with ``{"query": <message>}``
                (unless the conversation ends with a tool result: that is echoed instead)
``tool_if``     call the tool only when the user's message contains this word
``key``         the first 16 hex digits of the SHA-256 of the API key the server requires
                (so the key is not in the URL); a wrong key gets 401 with the presented key
                echoed in the body (a careless server; the client must not repeat it)
``error``       after this many tokens, an error event inside the stream (overloaded)
``no_done``     (OpenAI-compatible) the body ends after the finish reason, with no ``[DONE]``
``pings``       after the head, keep-alives forever (an SSE comment, or Anthropic's ``ping``
                event) every ``delay`` seconds (default 0.02), and never a token
``endless``     text tokens forever (100 characters each), every ``delay`` seconds
``pad``         this many characters before the presented key in an echo of it
``echo_key``    after this many tokens, an error event inside the stream that echoes the
                presented key (after ``pad``), sent in two body chunks cut inside the key
``tool_args``   the tool's arguments: ``city`` gives ``{"city": <message>}``, ``list`` gives
                ``[<message>]`` (a live model may call a tool with other arguments)
``cut_body``    with ``status``: the error body is cut (the connection aborted inside it)
==============  ==========================================================================

A conversation is the switches plus the last user message, so ``fail`` counts per agent when
agents say different things. ``GET /stats`` returns the counters (requests, disconnects seen
while streaming, streams active now and at most, at most by switches (``max_active_by``, so
a test measures its own streams), attempts and disconnects per conversation). The process
prints ``listening <url>`` on stdout once bound (port 0: any free port), and serves until
killed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from typing import Any

import trio

Scope = dict[str, Any]


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.disconnects = 0
        self.active = 0
        self.attempts: Counter[str] = Counter()
        self.disconnected: Counter[str] = Counter()
        self.max_active = 0
        self.active_by: Counter[str] = Counter()
        self.max_active_by: Counter[str] = Counter()

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "disconnects": self.disconnects,
            "active": self.active,
            "max_active": self.max_active,
            "max_active_by": dict(self.max_active_by),
            "attempts": dict(self.attempts),
            "disconnected": dict(self.disconnected),
        }


STATS = Stats()


def parse_switches(path: str) -> tuple[dict[str, str], str, str]:
    """``(switches, their raw text, the rest of the path)``."""
    if path.startswith("/s/"):
        raw, _, rest = path[3:].partition("/")
        switches = dict(item.partition("=")[::2] for item in raw.split(",") if item)
        return switches, raw, "/" + rest
    return {}, "", path


def last_user_text(messages: list[Any]) -> str:
    """What the reply echoes: the last user message, or the last tool result when the
    conversation ends with one (``"result: <content>"``)."""
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if last.get("role") == "tool":  # OpenAI-compatible tool result
        return f"result: {last.get('content')}"
    content = last.get("content")
    if last.get("role") == "user" and isinstance(content, list):  # Anthropic content blocks
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            return f"result: {results[-1].get('content')}"
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # content blocks: the text ones
                texts = [b.get("text", "") for b in content if isinstance(b, dict)]
                return " ".join(t for t in texts if t)
    return ""


def count_words(messages: list[Any], system: Any = None) -> int:
    text = json.dumps(messages) + json.dumps(system)
    return len(text.split())


async def read_body(receive: Any) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Abort("the client left before sending its request")
        body += message.get("body", b"")
        if not message.get("more_body"):
            return bytes(body)


async def respond_json(
    send: Any, status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(obj).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": data})


class Abort(Exception):
    """Raised by the app to make hypercorn drop the connection mid-body (a cut stream)."""


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    switches, raw, path = parse_switches(scope["path"])
    if scope["method"] == "GET" and path == "/stats":
        await respond_json(send, 200, STATS.to_json())
        return
    if scope["method"] != "POST" or path not in ("/v1/chat/completions", "/v1/messages"):
        await respond_json(send, 404, {"error": {"message": f"no route {path}"}})
        return
    anthropic = path == "/v1/messages"
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    body = json.loads(await read_body(receive))
    STATS.requests += 1
    text = last_user_text(body.get("messages", []))
    conversation = f"{raw}|{text}"
    STATS.attempts[conversation] += 1
    attempt = STATS.attempts[conversation]

    if "first" in switches:
        await trio.sleep(float(switches["first"]))
    if "key" in switches:
        presented = (
            headers.get("x-api-key", "")
            if anthropic
            else headers.get("authorization", "").removeprefix("Bearer ")
        )
        if hashlib.sha256(presented.encode()).hexdigest()[:16] != switches["key"]:
            pad = "y" * int(switches.get("pad", 0))
            await respond_json(
                send,
                401,
                error_body(anthropic, "authentication_error", f"bad key {pad}{presented}"),
            )
            return
    status = int(switches.get("status", 429 if "fail" in switches else 0))
    if status and ("fail" not in switches or attempt <= int(switches["fail"])):
        extra = []
        if "retry_after" in switches:
            extra.append((b"retry-after", switches["retry_after"].encode()))
        if "cut_body" in switches:
            data = json.dumps(error_body(anthropic, "server_error", "try later " * 20)).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json"), *extra],
                }
            )
            await send({"type": "http.response.body", "body": data[:40], "more_body": True})
            raise Abort("cut inside the error body")
        await respond_json(send, status, error_body(anthropic, "server_error", "try later"), extra)
        return

    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    events = (anthropic_events if anthropic else openai_events)(body, text, switches)
    if "echo_key" in switches:
        presented = headers.get("x-api-key", "") or headers.get("authorization", "")
        switches["_key"] = "y" * int(switches.get("pad", 0)) + presented.removeprefix("Bearer ")
    STATS.active += 1
    STATS.max_active = max(STATS.max_active, STATS.active)
    STATS.active_by[raw] += 1
    STATS.max_active_by[raw] = max(STATS.max_active_by[raw], STATS.active_by[raw])
    try:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:  # the client closing the connection cancels the stream
                while (await receive())["type"] != "http.disconnect":
                    pass
                STATS.disconnects += 1
                STATS.disconnected[conversation] += 1
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await stream(send, events, switches, anthropic)
            nursery.cancel_scope.cancel()
    finally:
        STATS.active -= 1
        STATS.active_by[raw] -= 1


BAD = b'data: {"choices": [{"delta": {"content": "oops"\n\n'
"""A chunk that is not JSON (the ``bad`` switch)."""
ERROR = {
    False: b'data: {"error": {"message": "Overloaded", "type": "overloaded"}}\n\n',
    True: b"event: error\ndata: "
    b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n',
}
"""An error event inside a stream (the ``error`` switch), by format (Anthropic's: True)."""


def key_echo(anthropic: bool, key: str) -> tuple[bytes, bytes]:
    """An error event inside the stream that echoes ``key``, in two pieces cut inside it."""
    if anthropic:
        event = {"type": "error", "error": {"type": "invalid_request_error", "message": key}}
        data = sse(event, "error")
    else:
        data = sse({"error": {"message": f"you sent {key}", "type": "invalid_request_error"}})
    cut = data.index(key.encode()) + len(key) // 2
    return data[:cut], data[cut:]


async def forever(send: Any, switches: dict[str, str], anthropic: bool) -> None:
    """The ``pings`` and ``endless`` switches: a stream that never ends."""
    delay = float(switches.get("delay", 0.02))
    if "pings" in switches:
        ping = sse({"type": "ping"}, "ping") if anthropic else b": ping\n\n"
    elif anthropic:  # (a hundred characters a token)
        delta = {"type": "content_block_delta", "index": 0}
        ping = sse({**delta, "delta": {"type": "text_delta", "text": "word " * 20}}, delta["type"])
    else:
        choice = {"index": 0, "delta": {"content": "word " * 20}, "finish_reason": None}
        ping = sse({"id": "chatcmpl-1", "model": "m", "choices": [choice]})
    while True:
        await send({"type": "http.response.body", "body": ping, "more_body": True})
        await trio.sleep(delay)


async def stream(
    send: Any, events: list[tuple[str, bytes]], switches: dict[str, str], anthropic: bool
) -> None:
    delay = float(switches.get("delay", 0))
    tokens = 0
    for kind, chunk in events:
        if kind == "token" and ("pings" in switches or "endless" in switches):
            await forever(send, switches, anthropic)
        if kind == "token":
            if "echo_key" in switches and tokens == int(switches["echo_key"]):
                for piece in key_echo(anthropic, switches["_key"]):
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                    await trio.sleep(0.05)  # (read apart: two chunks for the client)
                break
            if "cut" in switches and tokens == int(switches["cut"]):
                raise Abort("cut")
            if "stall" in switches and tokens == int(switches["stall"]):
                await trio.sleep(float(switches.get("stall_for", 3600)))
            if "bad" in switches and tokens == int(switches["bad"]):
                chunk = BAD
            if "error" in switches and tokens == int(switches["error"]):
                chunk = ERROR[anthropic]
            tokens += 1
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if delay:
            await trio.sleep(delay)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def error_body(anthropic: bool, kind: str, message: str) -> dict[str, Any]:
    if anthropic:
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "code": None}}


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {text}\n\n".encode()


def reply_tokens(text: str, limit: int | None) -> tuple[list[str], bool]:
    words = f"echo: {text}".split(" ")
    tokens = [w + " " for w in words[:-1]] + words[-1:]
    if limit is not None and len(tokens) > limit:
        return tokens[:limit], True
    return tokens, False


def argument_pieces(text: str, switches: dict[str, str] | None = None) -> list[str]:
    shape = (switches or {}).get("tool_args")
    value: Any = {"city": text} if shape == "city" else [text] if shape == "list" else None
    arguments = json.dumps({"query": text} if value is None else value)
    return [arguments[i : i + 7] for i in range(0, len(arguments), 7)]


def wants_tool(text: str, switches: dict[str, str]) -> str | None:
    """The tool to call: the ``tool`` switch, unless the conversation ends with a tool result
    or (with ``tool_if``) the message lacks that word."""
    if text.startswith("result: ") or ("tool_if" in switches and switches["tool_if"] not in text):
        return None
    return switches.get("tool")


def openai_events(body: dict[str, Any], text: str, switches: dict[str, str]) -> list[Any]:
    model = body.get("model", "test-model")
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    tokens, truncated = reply_tokens(text, limit)
    tool = wants_tool(text, switches)

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return sse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [choice],
            }
        )

    out: list[Any] = [("head", chunk({"role": "assistant", "content": ""}))]
    out += [("token", chunk({"content": t})) for t in tokens]
    finish = "length" if truncated else "stop"
    if tool and not truncated:
        finish = "tool_calls"
        call = {"index": 0, "id": "call_1", "type": "function"}
        out.append(("tool", chunk({"tool_calls": [{**call, "function": {"name": tool}}]})))
        for piece in argument_pieces(text, switches):
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            out.append(("tool", chunk(delta)))
    out.append(("tail", chunk({}, finish)))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {
            "prompt_tokens": count_words(body.get("messages", [])),
            "completion_tokens": len(tokens),
            "total_tokens": 0,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        tail = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0}
        out.append(("tail", sse({**tail, "model": model, "choices": [], "usage": usage})))
    if "no_done" not in switches:
        out.append(("tail", sse("[DONE]")))
    return out


def anthropic_events(body: dict[str, Any], text: str, switches: dict[str, str]) -> list[Any]:
    model = body.get("model", "test-model")
    tokens, truncated = reply_tokens(text, body.get("max_tokens"))
    tool = wants_tool(text, switches)
    prompt = count_words(body.get("messages", []), body.get("system"))
    start = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": prompt, "output_tokens": 1},
    }
    out: list[Any] = [("head", sse({"type": "message_start", "message": start}, "message_start"))]
    block = {"type": "content_block_start", "index": 0}
    out.append(
        ("head", sse({**block, "content_block": {"type": "text", "text": ""}}, block["type"]))
    )
    out.append(("head", sse({"type": "ping"}, "ping")))
    for t in tokens:
        delta = {"type": "content_block_delta", "index": 0}
        out.append(
            ("token", sse({**delta, "delta": {"type": "text_delta", "text": t}}, delta["type"]))
        )
    out.append(("tail", sse({"type": "content_block_stop", "index": 0}, "content_block_stop")))
    reason = "max_tokens" if truncated else "end_turn"
    if tool and not truncated:
        reason = "tool_use"
        use = {"type": "tool_use", "id": "toolu_1", "name": tool, "input": {}}
        out.append(
            (
                "tool",
                sse(
                    {"type": "content_block_start", "index": 1, "content_block": use},
                    "content_block_start",
                ),
            )
        )
        for piece in argument_pieces(text, switches):
            delta = {"type": "input_json_delta", "partial_json": piece}
            out.append(
                (
                    "tool",
                    sse(
                        {"type": "content_block_delta", "index": 1, "delta": delta},
                        "content_block_delta",
                    ),
                )
            )
        out.append(("tool", sse({"type": "content_block_stop", "index": 1}, "content_block_stop")))
    stop = {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None}}
    out.append(("tail", sse({**stop, "usage": {"output_tokens": len(tokens)}}, "message_delta")))
    out.append(("tail", sse({"type": "message_stop"}, "message_stop")))
    return out


async def main() -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None  # the Abort of a cut stream is not news
    config.keep_alive_timeout = 30
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)
        print("listening", binds[0], flush=True)


if __name__ == "__main__":
    trio.run(main)
    sys.exit(0)
