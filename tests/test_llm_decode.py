"""engine-llm's sans-IO layers: the SSE decoder and the two format decoders, fed with bytes
from the real test model server (tests/llm_server.py) cut at every kind of boundary, and with
hand-made hostile input. No trio, no runtime."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from engine_llm import (
    AnthropicDecoder,
    ErrorReason,
    EventTooLarge,
    LLMError,
    MalformedStream,
    MessageStart,
    MessageStop,
    OpenAIDecoder,
    SSEDecoder,
    TextDelta,
    ToolCall,
    Usage,
)
from engine_llm._decode import ApiError, MalformedChunk, StreamCut
from engine_llm._request import Message, Request, Tool, as_request, body
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import EngineError

ENDPOINT = {"openai": "chat/completions", "anthropic": "messages"}


def fetch(url: str, api: str, text: str, switches: str = "", **extra: Any) -> bytes:
    """A whole streamed response body from the test server."""
    prefix = f"/s/{switches}" if switches else ""
    request = Request([Message("user", text)], model="m", **extra)
    payload = body(api, request, "m", 100)
    response = httpx.post(f"{url}{prefix}/v1/{ENDPOINT[api]}", json=payload, timeout=10)
    assert response.status_code == 200, response.text
    return response.content


def decode(api: str, chunks: list[bytes]) -> list[tuple[str, Any]]:
    sse = SSEDecoder()
    dec = OpenAIDecoder("r1") if api == "openai" else AnthropicDecoder("r1")
    out: list[tuple[str, Any]] = []
    for chunk in chunks:
        for name, data in sse.feed(chunk):
            out += dec.event(name, data)
    out += dec.end()
    return out


@pytest.fixture(scope="module")
def streams(llm_server: str) -> dict[tuple[str, str], bytes]:
    return {
        (api, kind): fetch(llm_server, api, "hello big world", "tool=search" if kind else "")
        for api in ("openai", "anthropic")
        for kind in ("", "tool")
    }


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_text_stream_becomes_the_vocabulary(api: str, streams: dict[Any, bytes]) -> None:
    events = decode(api, [streams[api, ""]])
    names = [name for name, _ in events]
    assert names == ["message_start", *["text_delta"] * 4, "message_stop"]
    start = events[0][1]
    assert start == MessageStart("r1", "m", "chatcmpl-1" if api == "openai" else "msg_1")
    deltas = [payload for name, payload in events if name == "text_delta"]
    assert deltas == [
        TextDelta("r1", t, i) for i, t in enumerate(["echo: ", "hello ", "big ", "world"])
    ]
    stop = events[-1][1]
    assert isinstance(stop, MessageStop)
    assert stop.stop_reason == "end_turn"
    assert stop.raw_stop_reason == ("stop" if api == "openai" else "end_turn")
    assert stop.text == "echo: hello big world"
    assert stop.usage.output_tokens == 4
    assert stop.usage.input_tokens is not None
    assert stop.usage.input_tokens > 0
    assert stop.tool_calls == ()


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_tool_call_arguments_are_joined_and_parsed(api: str, streams: dict[Any, bytes]) -> None:
    events = decode(api, [streams[api, "tool"]])
    names = [name for name, _ in events]
    assert names == ["message_start", *["text_delta"] * 4, "tool_call", "message_stop"]
    call = events[-2][1]
    ident = "call_1" if api == "openai" else "toolu_1"
    assert call == ToolCall("r1", ident, "search", {"query": "hello big world"})
    stop = events[-1][1]
    assert stop.stop_reason == "tool_use"
    assert stop.tool_calls == (call,)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_any_split_of_the_bytes_gives_the_same_events(
    api: str, cuts: list[int], streams: dict[Any, bytes]
) -> None:
    data = streams[api, "tool"]
    whole = decode(api, [data])
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert decode(api, chunks) == whole


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_crlf_and_cr_line_ends_and_one_byte_chunks(api: str, streams: dict[Any, bytes]) -> None:
    data = streams[api, "tool"]
    whole = decode(api, [data])
    for ending in (b"\r\n", b"\r"):
        other = data.replace(b"\n", ending)
        assert decode(api, [other]) == whole
        assert decode(api, [other[i : i + 1] for i in range(len(other))]) == whole


def test_sse_fields_comments_and_multiline_data() -> None:
    sse = SSEDecoder()
    stream = b": keep-alive\nevent: a\ndata: 1\ndata:2\nid: 7\nretry: 10\n\ndata\n\nevent: x\n\n"
    # an event without data is not dispatched; "data" with no colon is an empty line of data
    assert sse.feed(stream) == [("a", "1\n2"), ("", "")]
    assert not sse.pending


def test_sse_bounds_hostile_input() -> None:
    sse = SSEDecoder(max_event=1024)
    with pytest.raises(EventTooLarge):
        sse.feed(b"data: " + b"x" * 2000)  # one unfinished line
    sse = SSEDecoder(max_event=1024)
    for _ in range(256):  # a line in tiny pieces: kept in pieces, still bounded
        sse.feed(b"xxxx")
    with pytest.raises(EventTooLarge):
        sse.feed(b"xxxx")
    sse = SSEDecoder(max_event=1024)
    with pytest.raises(EventTooLarge):
        sse.feed(b"data: 1234567890\n" * 200)  # many data lines, never a blank one
    with pytest.raises(MalformedStream):
        SSEDecoder().feed(b"data: \xff\xfe\n\n")
    assert issubclass(EventTooLarge, EngineError)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ('{"choices": [{"delta": {"content": "oops"', MalformedChunk),
        ("[1, 2]", MalformedChunk),
        ('{"choices": {"0": 1}}', MalformedChunk),
        ('{"choices": [{"delta": {"content": 5}}]}', MalformedChunk),
        ('{"choices": [{"delta": "x"}]}', MalformedChunk),
        ('{"choices": [{"delta": {"tool_calls": [{"index": "a"}]}}]}', MalformedChunk),
        ('{"choices": [{"delta": {}, "finish_reason": 3}]}', MalformedChunk),
        ('{"error": {"message": "Overloaded", "type": "overloaded"}}', ApiError),
        ("NaN" * 10, MalformedChunk),
        ('{"choices": []} and more', MalformedChunk),
        ("  ", MalformedChunk),
        ("[" * 100_000, MalformedChunk),  # nested too deeply for the parser
    ],
)
def test_openai_refuses_malformed_chunks(data: str, error: type[Exception]) -> None:
    dec = OpenAIDecoder("r")
    with pytest.raises(error):
        dec.event("", data)


def test_json_with_surrounding_whitespace_is_json() -> None:
    ((name, start),) = OpenAIDecoder("r").event("", '  {"id": "x", "choices": []}  ')
    assert (name, start.message_id) == ("message_start", "x")


def test_openai_tool_arguments_that_are_not_json() -> None:
    dec = OpenAIDecoder("r")
    call = {"index": 0, "id": "c", "type": "function", "function": {"name": "f"}}
    dec.event("", json.dumps({"choices": [{"delta": {"tool_calls": [call]}}]}))
    piece = {"index": 0, "function": {"arguments": "{not json"}}
    dec.event("", json.dumps({"choices": [{"delta": {"tool_calls": [piece]}}]}))
    with pytest.raises(MalformedChunk, match="arguments of tool call 'f'"):
        dec.event("", json.dumps({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}))


def test_openai_end_without_done_after_finish_is_complete_and_before_it_is_cut() -> None:
    dec = OpenAIDecoder("r")
    dec.event("", json.dumps({"choices": [{"delta": {"content": "hi"}}]}))
    with pytest.raises(StreamCut, match="after 1 text deltas"):
        dec.end()
    dec = OpenAIDecoder("r")
    dec.event("", json.dumps({"choices": [{"delta": {"content": "hi"}, "finish_reason": "x"}]}))
    ((name, stop),) = dec.end()
    assert name == "message_stop"
    assert (stop.stop_reason, stop.raw_stop_reason, stop.text) == ("other", "x", "hi")
    assert stop.usage == Usage()
    assert OpenAIDecoder("r").event("", "[DONE]")[-1][1].stop_reason == "end_turn"
    with pytest.raises(StreamCut, match="before the message started"):
        OpenAIDecoder("r").end()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ('{"type": "content_block_delta", "delta": 3}', MalformedChunk),
        ('{"type": "content_block_delta", "delta": {"type": "text_delta", "text": 1}}',
         MalformedChunk),
        ('{"type": "content_block_delta", "index": 4, '
         '"delta": {"type": "input_json_delta", "partial_json": "{"}}', MalformedChunk),
        ('{"type": "message_start", "message": []}', MalformedChunk),
        ('{"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use"}}',
         MalformedChunk),
        ('{"type": "message_delta", "delta": {"stop_reason": 5}}', MalformedChunk),
        ('{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
         ApiError),
        ('{"no": "type"}', MalformedChunk),
        ("not json", MalformedChunk),
    ],
)  # fmt: skip
def test_anthropic_refuses_malformed_events(data: str, error: type[Exception]) -> None:
    dec = AnthropicDecoder("r")
    if '"content_block' in data or '"message_delta"' in data:  # (after a start: the shape)
        dec.event("message_start", START)
    with pytest.raises(error):
        dec.event("", data)


def test_anthropic_skips_unknown_events_and_cut_streams_raise() -> None:
    dec = AnthropicDecoder("r")
    start = {"type": "message_start", "message": {"id": "m", "model": "x", "usage": {}}}
    assert dec.event("message_start", json.dumps(start))[0][0] == "message_start"
    assert dec.event("future", '{"type": "thinking_budget", "x": 1}') == []
    assert dec.event("ping", '{"type": "ping"}') == []
    with pytest.raises(StreamCut, match="middle of the message"):
        dec.end()


def test_requests_become_each_apis_body() -> None:
    call = ToolCall("r", "c1", "search", {"q": "x"})
    request = as_request(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "find x"},
                Message("assistant", "looking", tool_calls=[call]),
                Message("tool", "found", tool_call_id="c1"),
                Message("tool", "more", tool_call_id="c2"),
            ],
            "tools": [Tool("search", "finds", {"type": "object"})],
            "temperature": 0.5,
            "extra": {"top_p": 0.9},
        }
    )
    openai = body("openai", request, "m", 64)
    assert openai["messages"][0] == {"role": "system", "content": "be brief"}
    assert openai["messages"][2]["tool_calls"][0]["function"] == {
        "name": "search",
        "arguments": '{"q": "x"}',
    }
    assert openai["messages"][3] == {"role": "tool", "content": "found", "tool_call_id": "c1"}
    assert openai["tools"][0]["function"]["name"] == "search"
    assert (openai["model"], openai["max_tokens"], openai["stream"]) == ("m", 64, True)
    assert (openai["temperature"], openai["top_p"]) == (0.5, 0.9)
    anthropic = body("anthropic", request, "m", 64)
    assert anthropic["system"] == "be brief"
    assert anthropic["messages"][1]["content"][1] == {
        "type": "tool_use",
        "id": "c1",
        "name": "search",
        "input": {"q": "x"},
    }
    results = anthropic["messages"][2]
    assert results["role"] == "user"
    assert [b["tool_use_id"] for b in results["content"]] == ["c1", "c2"]
    assert anthropic["tools"][0]["input_schema"] == {"type": "object"}


@pytest.mark.parametrize(
    "value",
    [
        42,
        "hi",
        {"messages": "hi"},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": [], "priority": 7},
        {"messages": [], "max_tokens": 0},
        {"messages": [], "nonsense": 1},
        {"messages": [3]},
        Request([Message("user", "x")], temperature=float("nan")),
        {"messages": [], "temperature": "hot"},
        {"messages": [], "temperature": True},
        Request([Message("user", "x")], extra={"seed": object()}),
        Request([Message("user", "x")], extra={"top_p": float("inf")}),
        Request([Message("assistant", "", tool_calls=[ToolCall("r", "c", "f", {1, 2})])]),
        Request([Message("user", "x")], tools=[Tool("f", "", {"default": float("nan")})]),
        Request([Message("user", "x")], model=5),  # type: ignore[arg-type]
        Request([Message("user", "x")], id=["a"]),  # type: ignore[arg-type]
    ],
)
def test_invalid_requests_are_refused_with_a_reason(value: Any) -> None:
    from engine_llm._request import InvalidRequest

    with pytest.raises(InvalidRequest):
        as_request(value)


def test_the_vocabulary_is_frozen_values() -> None:
    error = LLMError("r", ErrorReason.STREAM_CUT, "cut")
    with pytest.raises(AttributeError):
        error.reason = ErrorReason.API_ERROR  # type: ignore[misc]
    assert ErrorReason("stream_cut") is ErrorReason.STREAM_CUT


# -- event names across chunk boundaries (SSE) and a strict Anthropic decoder ----------------

NAMED = (
    b"event: message_start\ndata: 1\n\n"
    b": a comment\n\n"
    b"event: foo\ndata: x\n\n"
    b"data: plain\n\n"
    b"event: multi\ndata: a\ndata: b\n\n"
    b"event: ping\ndata: {}\n\n"
    b"data: after\n\n"
)


def sse_pairs(chunks: list[bytes]) -> list[tuple[str, str]]:
    sse = SSEDecoder()
    return [pair for chunk in chunks for pair in sse.feed(chunk)]


def test_an_event_name_left_from_the_last_chunk_names_the_next_data() -> None:
    sse = SSEDecoder()
    assert sse.feed(b"event: foo\n") == []
    assert sse.feed(b"data: x\n\n") == [("foo", "x")]
    assert sse.feed(b"data: y\n\n") == [("", "y")]  # the name was for that event only


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(NAMED)), max_size=12))
def test_any_split_of_named_events_gives_the_same_pairs(cuts: list[int]) -> None:
    whole = sse_pairs([NAMED])
    assert whole == [("message_start", "1"), ("foo", "x"), ("", "plain"), ("multi", "a\nb"),
                     ("ping", "{}"), ("", "after")]  # fmt: skip
    points = sorted(set(cuts))
    chunks = [NAMED[a:b] for a, b in zip([0, *points], [*points, len(NAMED)], strict=True)]
    assert sse_pairs(chunks) == whole


START = json.dumps({"type": "message_start", "message": {"id": "m", "model": "x", "usage": {}}})
TEXT = json.dumps(
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}
)
TOOL = json.dumps(
    {"type": "content_block_start", "index": 1,
     "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}}
)  # fmt: skip


@pytest.mark.parametrize(
    ("events", "match"),
    [
        ([TEXT], "before message_start"),
        ([json.dumps({"type": "message_delta", "delta": {"stop_reason": "end_turn"}})],
         "before message_start"),
        ([json.dumps({"type": "message_stop"})], "before message_start"),
        ([TOOL], "before message_start"),
        ([START, START], "second message_start"),
        ([START, TOOL, json.dumps({"type": "message_stop"})], "never closed"),
        ([START, json.dumps({"type": "content_block_start", "index": [1],
                             "content_block": {"type": "tool_use", "id": "t", "name": "f"}})],
         "'index'"),
        ([START, json.dumps({"type": "content_block_stop", "index": {"a": 1}})], "'index'"),
        ([START, TOOL, json.dumps({"type": "content_block_delta", "index": [1],
                                   "delta": {"type": "input_json_delta", "partial_json": "{"}})],
         "'index'"),
    ],
)  # fmt: skip
def test_anthropic_refuses_events_out_of_order(events: list[str], match: str) -> None:
    dec = AnthropicDecoder("r")
    for data in events[:-1]:
        dec.event("", data)
    with pytest.raises(MalformedChunk, match=match):
        dec.event("", events[-1])


# -- hostile servers: bounded tool calls and message size ------------------------------------


def test_tool_calls_per_message_are_bounded() -> None:
    from engine_llm._decode import MAX_TOOL_CALLS

    dec = OpenAIDecoder("r")
    calls = [{"index": i, "id": f"c{i}", "function": {"name": "f"}} for i in range(MAX_TOOL_CALLS)]
    dec.event("", json.dumps({"choices": [{"delta": {"tool_calls": calls}}]}))
    huge = [{"index": 10**18, "id": "x", "function": {"name": "f"}}]
    with pytest.raises(MalformedChunk, match="more than 128 tool calls"):
        dec.event("", json.dumps({"choices": [{"delta": {"tool_calls": huge}}]}))
    dec = AnthropicDecoder("r")
    dec.event("", START)
    for i in range(MAX_TOOL_CALLS):
        block = {"type": "tool_use", "id": f"t{i}", "name": "f", "input": {}}
        dec.event(
            "", json.dumps({"type": "content_block_start", "index": i, "content_block": block})
        )
        dec.event("", json.dumps({"type": "content_block_stop", "index": i}))
    block = {"type": "tool_use", "id": "t", "name": "f", "input": {}}
    with pytest.raises(MalformedChunk, match="more than 128 tool calls"):
        dec.event(
            "", json.dumps({"type": "content_block_start", "index": 999, "content_block": block})
        )


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_message_has_a_size(api: str) -> None:
    """Text and tool-call arguments together are bounded (``max_message`` characters)."""
    from engine_llm._decode import MessageTooLarge

    if api == "openai":
        dec: Any = OpenAIDecoder("r", max_message=100)
        text = json.dumps({"choices": [{"delta": {"content": "x" * 60}}]})
        call = {"index": 0, "id": "c", "function": {"name": "f", "arguments": "[" * 50}}
        tool = json.dumps({"choices": [{"delta": {"tool_calls": [call]}}]})
    else:
        dec = AnthropicDecoder("r", max_message=100)
        dec.event("", START)
        text = json.dumps({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": "x" * 60}})  # fmt: skip
        block = {"type": "tool_use", "id": "t", "name": "f", "input": {}}
        dec.event(
            "", json.dumps({"type": "content_block_start", "index": 1, "content_block": block})
        )
        piece = {"type": "input_json_delta", "partial_json": "[" * 50}
        tool = json.dumps({"type": "content_block_delta", "index": 1, "delta": piece})
    dec.event("", text)
    with pytest.raises(MessageTooLarge, match="more than 100 characters"):
        dec.event("", tool)
