"""engine-llm's cassettes: streams recorded from the real test model server, replayed offline
on ``MockClock`` with the recorded timing. The agents of a replay end in the same states with
the same events and outputs as the agents of the recording, failures included; a request
that was never recorded is an ``llm_error`` naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from engine_llm import (
    LLM,
    Cassette,
    CassetteError,
    ErrorReason,
    LLMConfig,
    Message,
    OpenAIDecoder,
    Request,
    SSEDecoder,
    load_cassette,
)
from test_plugin_llm import CHAT, finished, log, make_llm, names, run, until

import engine

# One conversation per agent, each a different path through the plugin.
SCRIPT = {
    # agent: (switches, what it asks, config)
    "plain": ("delay=0.01", "a plain answer please", {}),
    "tool": ("delay=0.01,tool=lookup", "look this up", {}),
    "retried": ("fail=1,retry_after=0.05", "retry me", {"retry": {"attempts": 3, "seed": 5}}),
    "cut": ("delay=0.01,cut=3", "cut me off early", {}),
    "stalled": ("stall=2,stall_for=5", "stall me", {"timeouts": {"between_tokens": 0.2}}),
    "bad": ("bad=1", "bad chunk", {}),
}


class Outputs:
    """An effector that keeps every output, by agent."""

    def __init__(self) -> None:
        self.seen: dict[Any, list[Any]] = {}

    def deliver(self, batch: engine.OutputBatch) -> None:
        for agent, output in batch:
            self.seen.setdefault(agent, []).append(output)


async def converse(plugins: dict[str, LLM]) -> dict[str, Any]:
    """Each agent asks its question through its plugin; what every agent ends with."""
    outputs = Outputs()
    wired = [engine.Plugin(p, f"llm-{name}") for name, p in plugins.items()]
    async with engine.open_runtime(receptors=wired, effectors=[*wired, outputs]) as rt:
        for agent in plugins:  # each plugin serves its own tag
            rt.spawn(CHAT, agent, data={"log": [], "tag": f"llm-{agent}"})
            await rt.send(agent, "ask", SCRIPT[agent][1])
        await finished(rt, *plugins, seconds=20)
        await until(lambda: all(p.statistics().active == 0 for p in plugins.values()))
        return {agent: (rt.state(agent), log(rt, agent), outputs.seen[agent]) for agent in plugins}


def plugins_for(
    url: str, base: Path, mode: str, api: str, tag: str, **extra: Any
) -> dict[str, LLM]:
    """One plugin per agent of ``SCRIPT`` (its switches tagged, so the conversations are new
    to the shared server), each with its own cassette file."""
    return {
        agent: make_llm(
            url,
            f"{switches},tag={tag}",
            api=api,
            tag=f"llm-{agent}",
            cassette={"path": str(base.with_suffix(f".{agent}.jsonl")), "mode": mode, **extra},
            **config,
        )
        for agent, (switches, _, config) in SCRIPT.items()
    }


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_record_then_replay_gives_identical_agents(
    api: str, llm_server: str, tmp_path: Path
) -> None:
    base = tmp_path / "chat"
    tag = f"cassette-{api}"
    live = run(lambda: converse(plugins_for(llm_server, base, "record", api, tag)))
    mock = trio.testing.MockClock(autojump_threshold=0)
    replayed = trio.run(converse, plugins_for(llm_server, base, "replay", api, tag), clock=mock)
    # a replay needs no server: another URL entirely (same path), and no timing at all
    elsewhere = trio.run(
        converse, plugins_for("http://192.0.2.1:9", base, "replay", api, tag, timing=False)
    )
    assert replayed == live
    assert elsewhere == live
    ends = {agent: log[-1][0] for agent, (_, log, _) in live.items()}
    assert ends == {
        "plain": "message_stop",
        "tool": "message_stop",
        "retried": "message_stop",
        "cut": "llm_error",
        "stalled": "llm_error",
        "bad": "llm_error",
    }
    reasons = {a: live[a][1][-1][1].reason for a in ("cut", "stalled", "bad")}
    assert reasons == {
        "cut": ErrorReason.STREAM_CUT,
        "stalled": ErrorReason.IDLE_TIMEOUT,
        "bad": ErrorReason.MALFORMED_CHUNK,
    }
    assert any(n == "tool_call" for n, _ in live["tool"][1])
    assert all(state == "idle" for state, _, _ in live.values())
    retried = load_cassette(base.with_suffix(".retried.jsonl"))
    assert [i.status for i in retried] == [429, 200]  # the retry is in the cassette too
    stalled = load_cassette(base.with_suffix(".stalled.jsonl"))
    assert stalled[0].outcome == "cancelled"  # the client gave up; the server said no more
    cut = load_cassette(base.with_suffix(".cut.jsonl"))
    assert cut[0].outcome == "RemoteProtocolError"


def test_replay_keeps_the_recorded_timing_on_mockclock(llm_server: str, tmp_path: Path) -> None:
    path = tmp_path / "timing.jsonl"

    async def record() -> None:
        plugin = make_llm(
            llm_server,
            "delay=0.02,first=0.1,tag=timing",
            cassette={"path": str(path), "mode": "record"},
        )
        async with engine.open_runtime(receptors=[plugin], effectors=[plugin]) as rt:
            rt.spawn(CHAT, "a", data={"log": []})
            await rt.send("a", "ask", "one two three four five six")
            await finished(rt, "a")

    run(record)
    (recorded,) = load_cassette(path)
    assert recorded.t_response >= 0.1

    async def replay() -> list[tuple[str, float]]:
        plugin = LLM(LLMConfig(cassette=Cassette(str(path))))
        arrivals: list[tuple[str, float]] = []

        machine = engine.Machine(
            "timed", ["s"], "s", [], events=["ask", "message_start", "text_delta", "message_stop"],
            unhandled="ignore",
        )  # fmt: skip
        machine.handler("s", "ask")(
            lambda agent, event: engine.Step(
                outputs=[("llm", Request([Message("user", event.payload)]))]
            )
        )
        for name in ("message_start", "text_delta", "message_stop"):
            machine.handler("*", name)(
                lambda agent, event, name=name: arrivals.append((name, trio.current_time()))
            )
        async with engine.open_runtime(receptors=[plugin], effectors=[plugin]) as rt:
            rt.spawn(machine, "a")
            t0 = trio.current_time()
            await rt.send("a", "ask", "one two three four five six")
            await until(lambda: bool(arrivals) and arrivals[-1][0] == "message_stop")
            return [(n, t - t0) for n, t in arrivals]

    first = trio.run(replay, clock=trio.testing.MockClock(autojump_threshold=0))
    second = trio.run(replay, clock=trio.testing.MockClock(autojump_threshold=0))
    assert first == second  # deterministic
    # each event arrives at the offset its chunk was recorded at (virtual time is exact)
    sse, dec = SSEDecoder(), OpenAIDecoder("a:1")
    want = [
        (name, t)
        for t, data in recorded.chunks
        for event, payload in sse.feed(data)
        for name, _ in dec.event(event, payload)
    ]
    assert [n for n, _ in first] == [n for n, _ in want]
    for (_, t), (_, expected) in zip(first, want, strict=True):
        assert t == pytest.approx(expected, abs=1e-9)
    got = [t for _, t in first]
    assert got[0] >= 0.1


def test_a_request_with_no_recording_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(json.dumps({"format": "engine-llm-cassette", "version": 1}) + "\n")

    async def main() -> None:
        plugin = LLM(LLMConfig(cassette=Cassette(str(path)), model="tiny"))
        async with engine.open_runtime(receptors=[plugin], effectors=[plugin]) as rt:
            rt.spawn(CHAT, "a", data={"log": []})
            await rt.send("a", "ask", "was this ever recorded?")
            await finished(rt, "a")
            (error,) = [p for n, p in log(rt, "a") if n == "llm_error"]
            assert error.reason is ErrorReason.NO_RECORDING
            for part in ("'a:1'", "'tiny'", "was this ever recorded?", str(path)):
                assert part in error.message, (part, error.message)
            (record,) = rt.rejected()
            assert record.error == "NoRecordingError"
            assert names(rt, "a") == ["llm_error"]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "cannot read cassette"),
        ("", "is empty"),
        ('{"format": "something else"}\n', "not an engine-llm cassette"),
        ('{"format": "engine-llm-cassette", "version": 9}\n', "version 9"),
        ('{"format": "engine-llm-cassette", "version": 1}\nnot json\n', "line 2"),
        ('{"format": "engine-llm-cassette", "version": 1}\n{"n": 0, "type": "chunk", "t": 0}\n',
         "line 2"),
        ('{"format": "engine-llm-cassette", "version": 1}\n'
         '{"n": 0, "type": "request", "method": "POST", "endpoint": "x", "body": {}}\n'
         '{"n": 0, "type": "chunk", "t": -1, "data": "x"}\n', "line 3"),
        ('{"format": "engine-llm-cassette", "version": 1}\n'
         '{"n": 0, "type": "request", "method": "POST", "endpoint": "x", "body": {}}\n'
         '{"n": 0, "type": "response", "t": 0, "status": 1000}\n', "line 3"),
    ],
)  # fmt: skip
def test_a_bad_cassette_fails_when_the_plugin_is_made(
    content: str | None, match: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CassetteError, match=match):
        LLM(LLMConfig(cassette=Cassette(str(path))))


def synthetic_cassette(path: Path, request: Request, tokens: int, every: float) -> None:
    """A cassette of one OpenAI-compatible stream: ``tokens`` deltas ``every`` s apart."""
    from engine_llm._request import body

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return f"data: {json.dumps({'id': 'c', 'model': 'm', 'choices': [choice]})}\n\n"

    chunks = [chunk({"role": "assistant"})] + [chunk({"content": f"t{i} "}) for i in range(tokens)]
    chunks += [chunk({}, "stop"), "data: [DONE]\n\n"]
    lines: list[Any] = [
        {"format": "engine-llm-cassette", "version": 1},
        {"n": 0, "type": "request", "method": "POST", "endpoint": "chat/completions",
         "body": body("openai", request, "default", 1024)},
        {"n": 0, "type": "response", "t": 0.0, "status": 200, "headers": {}},
    ]  # fmt: skip
    lines += [{"n": 0, "type": "chunk", "t": every * i, "data": c} for i, c in enumerate(chunks)]
    lines.append({"n": 0, "type": "end", "t": every * len(chunks), "outcome": "complete"})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_interrupt_during_a_replay_leaves_the_other_streams_on_time(tmp_path: Path) -> None:
    path = tmp_path / "slow.jsonl"
    synthetic_cassette(path, Request([Message("user", "go slowly")]), tokens=50, every=0.1)

    async def main() -> None:
        plugin = LLM(LLMConfig(cassette=Cassette(str(path))))
        async with engine.open_runtime(receptors=[plugin], effectors=[plugin]) as rt:
            for agent in ("a", "b"):
                rt.spawn(CHAT, agent, data={"log": []})
            t0 = trio.current_time()
            await rt.send("a", "ask", "go slowly")
            await rt.send("b", "ask", "go slowly")
            await trio.sleep(1.05)
            assert names(rt, "a").count("text_delta") == 10  # chunks at 0.1 .. 1.0
            rt.interrupt("a")
            await finished(rt, "a", "b")
            assert trio.current_time() - t0 == pytest.approx(5.2, abs=0.01)  # [DONE], 5.2 s
            assert names(rt, "a")[-1] == "interrupted"
            assert names(rt, "a").count("text_delta") == 10
            assert names(rt, "b").count("text_delta") == 50
            assert log(rt, "b")[-1][0] == "message_stop"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_key_split_across_two_chunks_is_redacted_in_the_recording(tmp_path: Path) -> None:
    """Recording redacts across chunk boundaries: a key cut in two by the network is still
    a key (each chunk was redacted alone, so both halves were written)."""
    import httpx
    from engine_llm._cassette import CassetteWriter
    from engine_llm._config import Secret
    from engine_llm._transports import RecordingTransport

    key = "sk-secret-0123456789abcdef0123"
    pieces = [b'data: {"echo": "' + key[:10].encode(), key[10:].encode() + b'"}\n\n']
    pieces.append(b"data: " + key[:5].encode())  # (a key's start at the very end: kept out)

    class Chunks(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            for piece in pieces:
                yield piece

    class Inner(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, stream=Chunks())

    path = tmp_path / "split.jsonl"

    async def main() -> bytes:
        writer = CassetteWriter(path)
        transport = RecordingTransport(Inner(), writer, "/v1", Secret(key))
        got = b""
        client = httpx.AsyncClient(transport=transport, base_url="http://x/v1")
        async with client, client.stream("POST", "chat/completions", json={"a": 1}) as response:
            async for data in response.aiter_bytes():
                got += data
        writer.close()
        return got

    got = trio.run(main)
    assert got == b"".join(pieces)  # the client reads what the server sent
    text = path.read_text()
    assert key[:8] not in text
    assert key[10:18] not in text
    (rec,) = load_cassette(path)
    assert b"".join(data for _, data in rec.chunks) == (
        b'data: {"echo": "[redacted]"}\n\ndata: [redacted]'
    )
