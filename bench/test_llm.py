"""engine-llm: what a streamed token costs on the engine's side, replayed from a cassette.

The cassette is written here: one OpenAI-compatible stream of BENCH_LLM_TOKENS (default 200)
text deltas, one per chunk, 10 ms apart (as a live server sends them), served to every agent
(replay serves one recording to every identical request). The agent's machine is a table
only (no Python handler): ``idle --go--> waiting`` emitting the request, ``message_start``,
``text_delta`` (stays), ``message_stop``; so what is measured is the plugin and the engine,
not user code.

* group ``llm-token``: the synchronous core of one token, no trio: the chunk through the SSE
  decoder and the format decoder, its event into the agent's mailbox (``send_nowait``), and
  the agent's step (a drain every 64 chunks). ``per_token_us`` in ``extra_info``; the
  README's target is 5 µs.
* group ``llm-replay``: the whole path under trio on ``MockClock``: BENCH_LLM_AGENTS (default
  1000) agents stream at once through the plugin (a ``Work`` task each, httpx's response
  machinery over the replay transport, backpressure checks, the dispatch task), on virtual
  time, so the wall time is the engine's and the plugin's CPU. ``tokens_per_s`` in
  ``extra_info``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from engine_llm import LLM, Cassette, LLMConfig, Message, OpenAIDecoder, Request, SSEDecoder

import engine

TOKENS = int(os.environ.get("BENCH_LLM_TOKENS", "200"))
AGENTS = int(os.environ.get("BENCH_LLM_AGENTS", "1000"))
REQUEST = Request([Message("user", "tell me everything")])


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    return "data: " + json.dumps({**body, "choices": [choice]}, separators=(",", ":")) + "\n\n"


def stream_chunks(tokens: int) -> list[str]:
    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": f"tok{i} "}) for i in range(tokens)]
    out += [chunk({}, "stop"), "data: [DONE]\n\n"]
    return out


def write_cassette(path: Path, tokens: int) -> None:
    from engine_llm._request import body

    lines: list[dict[str, Any]] = [{"format": "engine-llm-cassette", "version": 1}]
    lines.append(
        {
            "n": 0,
            "type": "request",
            "method": "POST",
            "endpoint": "chat/completions",
            "body": body("openai", REQUEST, "m", 1024),
        }
    )
    lines.append({"n": 0, "type": "response", "t": 0.05, "status": 200, "headers": {}})
    chunks = stream_chunks(tokens)
    for i, data in enumerate(chunks):
        lines.append({"n": 0, "type": "chunk", "t": 0.1 + 0.01 * i, "data": data})
    lines.append({"n": 0, "type": "end", "t": 0.1 + 0.01 * len(chunks), "outcome": "complete"})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def streamer() -> engine.Machine:
    return engine.Machine(
        "streamer",
        ["idle", "waiting", "streaming"],
        "idle",
        [
            ("idle", "go", "waiting", ("llm", REQUEST)),
            ("waiting", "message_start", "streaming"),
            ("streaming", "text_delta", "streaming"),
            ("streaming", "message_stop", "idle"),
            ("*", "llm_error", "idle"),
        ],
        events=["go", "message_start", "text_delta", "tool_call", "message_stop", "llm_error",
                "interrupted"],
        unhandled="ignore",
    )  # fmt: skip


@pytest.mark.benchmark(group="llm-token")
def test_llm_token_core(benchmark: Any, impl: str) -> None:
    chunks = [c.encode() for c in stream_chunks(TOKENS)]
    machine = streamer()
    rt = engine.Runtime(implementation=impl)
    rt.spawn(machine, "a")
    send = rt.send_nowait

    def one_stream() -> None:
        rt.send_nowait("a", "go")
        rt.run_until_idle()
        sse, dec = SSEDecoder(), OpenAIDecoder("a:1")
        for i, data in enumerate(chunks):
            for name, text in sse.feed(data):
                for event, payload in dec.event(name, text):
                    send("a", event, payload, 1)
            if i % 64 == 63:
                rt.run_until_idle()
        rt.run_until_idle()
        assert rt.state("a") == "idle"

    benchmark.pedantic(one_stream, rounds=100 if impl == "native" else 40, warmup_rounds=2)
    stats = benchmark.stats.stats if benchmark.stats is not None else None
    per_token = (stats.min if stats is not None else _time(one_stream)) / TOKENS * 1e6
    benchmark.extra_info.update(tokens=TOKENS, per_token_us=round(per_token, 3), system=impl)


def _time(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


@pytest.mark.benchmark(group="llm-replay")
def test_llm_replay_many_agents(benchmark: Any, impl: str, tmp_path: Path) -> None:
    path = tmp_path / "bench.jsonl"
    write_cassette(path, TOKENS)
    machine = streamer()
    agents = list(range(AGENTS))

    def replay() -> None:
        plugin = LLM(LLMConfig(model="m", max_streams=AGENTS, cassette=Cassette(str(path))))

        async def main() -> None:
            async with engine.open_runtime(
                implementation=impl, receptors=[plugin], effectors=[plugin]
            ) as rt:
                for agent in agents:
                    rt.spawn(machine, agent)
                    rt.send_nowait(agent, "go")
                while plugin.statistics().completed < AGENTS:
                    await trio.sleep(0.1)

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        s = plugin.statistics()
        assert (s.completed, s.deltas, s.failed) == (AGENTS, AGENTS * TOKENS, {})

    benchmark.pedantic(replay, rounds=3 if impl == "native" else 1, iterations=1)
    stats = benchmark.stats.stats if benchmark.stats is not None else None
    seconds = stats.min if stats is not None else _time(replay)
    benchmark.extra_info.update(
        agents=AGENTS,
        tokens=AGENTS * TOKENS,
        tokens_per_s=round(AGENTS * TOKENS / seconds),
        per_token_us=round(seconds / (AGENTS * TOKENS) * 1e6, 3),
        system=impl,
    )
