"""The engine-llm distribution (plugins/engine-llm), found through its entry points: agents
whose outputs start streamed completions from a real model server (tests/llm_server.py, a
process of its own on 127.0.0.1, both streaming formats), their events back in the agents'
mailboxes, interrupts, backpressure, many agents at once, and every failure mode becoming an
``llm_error``. Real sockets and a real clock; every wait bounded by ``trio.fail_after``."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from engine_llm import (
    EVENTS,
    LLM,
    Cassette,
    ErrorReason,
    LLMConfig,
    LLMError,
    Message,
    MessageStop,
    Request,
    Retry,
    Timeouts,
    ToolCall,
)

import engine
from engine.environment import _discovery as _plugins
from engine.plugin_spec import EFFECTORS, RECEPTORS, Effector, Receptor

APIS = ["openai", "anthropic"]
DONE = ("message_stop", "llm_error", "interrupted")


def chat_machine(events: tuple[str, ...] = EVENTS) -> engine.Machine:
    """idle --ask--> waiting --message_start--> streaming --message_stop--> idle; every
    stream event is logged in the agent's data; an error or interrupt returns to idle. The
    request goes out tagged with the agent's ``data["tag"]`` (default ``"llm"``)."""
    m = engine.Machine(
        "chat",
        ["idle", "waiting", "streaming"],
        "idle",
        [],
        events=["ask", *events],
        unhandled="ignore",
    )

    @m.handler("idle", "ask")
    def ask(agent: engine.AgentContext, event: engine.Event) -> engine.Step:
        request = event.payload
        if isinstance(request, str):
            request = Request([Message("user", request)])
        return engine.Step("waiting", outputs=[(agent.data.get("tag", "llm"), request)])

    nxt = {"message_start": "streaming", "message_stop": "idle", "llm_error": "idle"}
    nxt["interrupted"] = "idle"
    for name in events:

        def log(agent: engine.AgentContext, event: engine.Event, name: str = name) -> engine.Step:
            agent.data["log"].append((name, event.payload))
            return engine.Step(nxt.get(name))

        m.handler("*", name)(log)
    return m


CHAT = chat_machine()


def llm_factory(group: str = RECEPTORS) -> Any:
    found = [ep for ep in entry_points(group=group) if ep.name == "llm"]
    assert len(found) == 1, f"{found}: install it with pip install -e plugins/engine-llm"
    return found[0].load()


def make_llm(url: str, switches: str = "", **config: Any) -> LLM:
    """The plugin built as an app file would build it (its config structured by the engine)."""
    base = f"{url}/s/{switches}/v1" if switches else f"{url}/v1"
    plugin = _plugins.create("llm", llm_factory(), {"url": base, **config})
    assert isinstance(plugin, LLM)
    return plugin


@asynccontextmanager
async def running(
    plugin: LLM, *agents: Any, machine: engine.Machine = CHAT, **spawn: Any
) -> AsyncIterator[engine.Runtime]:
    wired = engine.Plugin(plugin, "llm")
    async with engine.open_runtime(receptors=[wired], effectors=[wired]) as rt:
        for agent in agents:
            rt.spawn(machine, agent, data={"log": []}, **spawn)
        yield rt


def log(rt: engine.Runtime, agent: Any) -> list[tuple[str, Any]]:
    return list(rt.data(agent)["log"])


def names(rt: engine.Runtime, agent: Any) -> list[str]:
    return [name for name, _ in log(rt, agent)]


async def until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    with trio.fail_after(seconds):
        while not check():
            await trio.sleep(0.005)


async def finished(rt: engine.Runtime, *agents: Any, seconds: float = 10.0) -> None:
    """Wait until each agent logged an event that ends its turn."""
    await until(lambda: all(any(n in DONE for n in names(rt, a)) for a in agents), seconds)


def run(main: Callable[[], Any], seconds: float = 30.0) -> Any:
    async def bounded() -> Any:
        with trio.fail_after(seconds):
            return await main()

    return trio.run(bounded)


def the_error(rt: engine.Runtime, agent: Any) -> LLMError:
    (error,) = [p for n, p in log(rt, agent) if n == "llm_error"]
    assert isinstance(error, LLMError)
    return error


def assert_one_final(entries: list[tuple[str, Any]]) -> None:
    """Each request ends with exactly one ``message_stop`` or ``llm_error``, the last of its
    events (the invariant of the vocabulary), unless ``interrupted`` ended it."""
    finals: Counter[str] = Counter()
    last: dict[str, str] = {}
    for name, payload in entries:
        if name == "interrupted":
            continue
        rid = payload.request_id
        assert finals[rid] == 0, f"{name} after the final event of {rid}: {entries}"
        last[rid] = name
        if name in ("message_stop", "llm_error"):
            finals[rid] += 1
    interrupted = any(name == "interrupted" for name, _ in entries)
    for rid in last:
        assert finals[rid] == 1 or interrupted, f"{rid} has no final event: {entries}"


def stats(url: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{url}/stats", timeout=5).json()
    return result


# -- the plugin as a distribution ------------------------------------------------------------


def test_found_through_both_entry_points_as_one_factory() -> None:
    assert llm_factory(RECEPTORS) is llm_factory(EFFECTORS) is LLM
    plugin = LLM(LLMConfig())
    assert isinstance(plugin, Receptor)
    assert isinstance(plugin, Effector)


def test_config_is_structured_and_every_bad_field_reported() -> None:
    plugin = _plugins.create(
        "llm",
        LLM,
        {"api": "anthropic", "timeouts": {"first_token": 5, "between_tokens": float("inf")},
         "retry": {"attempts": 2, "seed": 3}, "cassette": {"path": "x.jsonl", "mode": "record"}},
    )  # fmt: skip
    assert plugin.config.timeouts == Timeouts(first_token=5, between_tokens=float("inf"))
    assert plugin.config.cassette == Cassette("x.jsonl", "record")
    with pytest.raises(engine.ConfigError) as caught:
        _plugins.create(
            "llm",
            LLM,
            {"api": "gopher", "url": "ftp://x", "timeouts": {"connect": -1},
             "retry": {"attempts": 0}, "max_streams": 0},
        )  # fmt: skip
    text = str(caught.value)
    for field in ("api", "url", "connect", "attempts", "max_streams"):
        assert field in text, (field, text)


# -- events ------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_an_agents_output_streams_its_events_back_in_order(api: str, llm_server: str) -> None:
    async def main() -> None:
        plugin = make_llm(llm_server, "delay=0.005", api=api, model="m1")
        async with running(plugin, "a") as rt:
            await rt.send("a", "ask", "tell me a story")
            await until(lambda: rt.state("a") == "waiting" or bool(log(rt, "a")))
            await finished(rt, "a")
            assert rt.state("a") == "idle"
            events = log(rt, "a")
            assert [n for n, _ in events] == ["message_start", *["text_delta"] * 5, "message_stop"]
            assert events[0][1].model == "m1"
            deltas = [p for n, p in events if n == "text_delta"]
            assert [d.index for d in deltas] == list(range(5))
            assert "".join(d.text for d in deltas) == "echo: tell me a story"
            stop = events[-1][1]
            assert isinstance(stop, MessageStop)
            assert (stop.stop_reason, stop.text) == ("end_turn", "echo: tell me a story")
            assert stop.usage.output_tokens == 5
            assert {p.request_id for _, p in events} == {"a:1"}
            assert_one_final(events)
            await until(lambda: plugin.statistics().active == 0)  # it reads the body's end
            s = plugin.statistics()
            assert (s.requests, s.completed, s.active, s.deltas) == (1, 1, 0, 5)
            assert s.failed == {}

    run(main)


@pytest.mark.parametrize("api", APIS)
def test_tool_calls_and_max_tokens(api: str, llm_server: str) -> None:
    async def main() -> None:
        plugin = make_llm(llm_server, "tool=lookup", api=api)
        async with running(plugin, "t", "m") as rt:
            await rt.send("t", "ask", "weather in Oslo")
            await rt.send(
                "m", "ask", Request([Message("user", "one two three four")], max_tokens=2)
            )
            await finished(rt, "t", "m")
            calls = [p for n, p in log(rt, "t") if n == "tool_call"]
            ident = "call_1" if api == "openai" else "toolu_1"
            assert calls == [ToolCall("t:1", ident, "lookup", {"query": "weather in Oslo"})]
            assert names(rt, "t")[-2:] == ["tool_call", "message_stop"]
            stop = log(rt, "t")[-1][1]
            assert stop.stop_reason == "tool_use"
            assert stop.tool_calls == tuple(calls)
            short = log(rt, "m")[-1][1]
            assert (short.stop_reason, short.text) == ("max_tokens", "echo: one ")

    run(main)


def test_events_come_at_the_priority_the_request_chooses(llm_server: str) -> None:
    async def main() -> None:
        plugin = make_llm(llm_server)
        async with running(plugin, "p") as rt, rt.subscribe("p") as records:
            await rt.send("p", "ask", Request([Message("user", "hi")], priority=3, id="q"))
            seen: list[tuple[str, int]] = []
            async for record in records:
                assert isinstance(record, engine.Transition)
                seen.append((record.event, record.priority))
                if record.event == "message_stop":
                    break
            assert seen[0] == ("ask", 1)
            assert {p for _, p in seen[1:]} == {3}
            assert {p.request_id for _, p in log(rt, "p")} == {"q"}

    run(main)


def test_a_machine_without_an_event_gets_the_others(llm_server: str) -> None:
    """An event the agent's machine does not know is reported (``sink.reject``), and the
    stream goes on."""
    machine = chat_machine(tuple(e for e in EVENTS if e != "message_start"))

    async def main() -> None:
        async with running(make_llm(llm_server), "a", machine=machine) as rt:
            await rt.send("a", "ask", "hi there")
            await finished(rt, "a")
            assert names(rt, "a") == ["text_delta", "text_delta", "text_delta", "message_stop"]
            (record,) = rt.rejected()
            assert (record.source, record.error) == ("llm", "UnknownEventError")
            assert record.context == {"agent": "a", "event": "message_start"}

    run(main)


# -- interrupt, concurrency, backpressure ------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_interrupt_cancels_the_http_stream_at_once(api: str, llm_server: str) -> None:
    words = " ".join(f"w{i}" for i in range(200))
    switches = f"delay=0.02,tag=interrupt-{api}"

    async def main() -> None:
        plugin = make_llm(llm_server, switches, api=api)
        async with running(plugin, "a", "b") as rt:
            await rt.send("a", "ask", words)
            await rt.send("b", "ask", "the other one")
            await until(lambda: names(rt, "a").count("text_delta") >= 3)
            assert rt.interrupt("a") == 1
            await until(lambda: "interrupted" in names(rt, "a"))
            assert rt.state("a") == "idle"
            conversation = f"{switches}|{words}"
            with trio.fail_after(5):  # the server saw the connection go
                while stats(llm_server)["disconnected"].get(conversation) != 1:
                    await trio.sleep(0.01)
            got = names(rt, "a").count("text_delta")
            await trio.sleep(0.2)  # ten more tokens' time: nothing more arrives
            assert names(rt, "a").count("text_delta") == got < 50
            assert "message_stop" not in names(rt, "a")
            await finished(rt, "b")  # the other agent's stream was not touched
            assert names(rt, "b")[-1] == "message_stop"
            s = plugin.statistics()
            assert (s.cancelled, s.completed, s.active) == (1, 1, 0)
            # the agent can ask again at once
            await rt.send("a", "ask", "again")
            await until(lambda: names(rt, "a")[-1:] == ["message_stop"])
            assert_one_final(log(rt, "a"))
            assert_one_final(log(rt, "b"))

    run(main)


def test_a_hundred_agents_stream_at_once(llm_server: str) -> None:
    agents = [f"agent-{i}" for i in range(100)]

    async def main() -> None:
        plugin = make_llm(llm_server, "delay=0.1,tag=hundred", max_streams=100)
        async with running(plugin, *agents) as rt:
            for agent in agents:
                await rt.send(agent, "ask", f"question from {agent} please")
            await finished(rt, *agents, seconds=20)
            for agent in agents:
                assert names(rt, agent) == ["message_start", *["text_delta"] * 5, "message_stop"]
                assert log(rt, agent)[-1][1].text == f"echo: question from {agent} please"
            assert plugin.statistics().completed == 100
            # they overlapped on the server (this test's streams: counted by their switches)
            assert stats(llm_server)["max_active_by"]["delay=0.1,tag=hundred"] >= 50

    run(main)


def test_a_full_mailbox_slows_the_stream_and_drops_nothing(llm_server: str) -> None:
    words = " ".join(f"w{i}" for i in range(300))

    async def main() -> None:
        plugin = make_llm(llm_server, "first=1,tag=backpressure", timeouts={"between_tokens": 0.5})
        async with running(plugin, "slow", capacity=4) as rt:
            await rt.send("slow", "ask", words)
            # (the answer starts a second later: a loaded machine still sees it waiting)
            await until(lambda: rt.state("slow") == "waiting")
            rt.pause("slow")  # it stops reading its mailbox: 4 events fit, then the stream waits
            await until(lambda: plugin.statistics().waited >= 1)
            await trio.sleep(1.0)  # twice between_tokens: waiting for room is not a timeout
            assert rt.statistics("slow").depth == 4
            assert plugin.statistics().active == 1
            assert log(rt, "slow") == []
            rt.resume("slow")
            await finished(rt, "slow")
            deltas = [p for n, p in log(rt, "slow") if n == "text_delta"]
            assert [d.index for d in deltas] == list(range(301))
            assert "".join(d.text for d in deltas) == f"echo: {words}"
            assert rt.statistics("slow").dropped == 0
            assert_one_final(log(rt, "slow"))

    run(main)


def test_a_body_ending_without_done_into_a_full_mailbox(llm_server: str) -> None:
    """The body ends (no ``[DONE]``: its ``message_stop`` comes from the end of the body)
    while the mailbox is full: that last event waits for room untimed too."""

    async def main() -> None:
        switches = "no_done,first=0.3,tag=backpressure-end"  # (paused before it answers)
        plugin = make_llm(llm_server, switches, timeouts={"between_tokens": 0.3})
        async with running(plugin, "slow", capacity=4) as rt:
            await rt.send("slow", "ask", "one two")  # message_start and three deltas: full
            await until(lambda: rt.state("slow") == "waiting")
            rt.pause("slow")
            await until(lambda: plugin.statistics().waited >= 1)
            await trio.sleep(0.8)  # more than between_tokens
            assert rt.statistics("slow").depth == 4
            rt.resume("slow")
            await finished(rt, "slow")
            assert names(rt, "slow") == ["message_start", *["text_delta"] * 3, "message_stop"]
            assert_one_final(log(rt, "slow"))
            assert plugin.statistics().failed == {}

    run(main)


def test_interrupt_while_the_stream_waits_for_room(llm_server: str) -> None:
    """An interrupt that lands while the stream waits for a full mailbox ends it cleanly (no
    reader of httpx's is left suspended: trio would warn, and warnings fail these tests)."""
    words = " ".join(f"w{i}" for i in range(100))

    async def main() -> None:
        plugin = make_llm(llm_server, "first=1,tag=interrupt-full")
        async with running(plugin, "full", capacity=2) as rt:
            await rt.send("full", "ask", words)
            await until(lambda: rt.state("full") == "waiting")  # (first=1: a second to see it)
            rt.pause("full")
            await until(lambda: plugin.statistics().waited >= 1)
            # the stream is cancelled at once; the runtime's own `interrupted` waits for room
            assert rt.interrupt("full") == 1
            await until(lambda: plugin.statistics().active == 0)
            assert plugin.statistics().cancelled == 1
            assert rt.statistics("full").depth == 2
            rt.resume("full")
            await until(lambda: rt.statistics("full").depth == 0)
            # what fitted, then the interrupt: nothing lost, nothing after it
            assert names(rt, "full") == ["message_start", "text_delta", "interrupted"]

    run(main)


# -- failures ----------------------------------------------------------------------------------

FAST_RETRY = {"attempts": 3, "backoff": 0.01, "max_delay": 0.05, "seed": 1}


@pytest.mark.parametrize(
    ("switches", "config", "reason", "status", "attempts", "deltas"),
    [
        ("first=1", {"timeouts": {"first_token": 0.2}}, "first_token_timeout", None, 1, 0),
        ("stall=2,stall_for=5", {"timeouts": {"between_tokens": 0.2}}, "idle_timeout", None, 1, 2),
        ("status=429", {"retry": FAST_RETRY}, "rate_limited", 429, 3, 0),
        ("status=503", {"retry": FAST_RETRY}, "server_error", 503, 3, 0),
        ("status=503,cut_body", {"retry": FAST_RETRY}, "server_error", 503, 3, 0),
        ("status=429,retry_after=1000", {"retry": FAST_RETRY}, "rate_limited", 429, 1, 0),
        ("status=400", {"retry": FAST_RETRY}, "http_error", 400, 1, 0),
        ("bad=2", {}, "malformed_chunk", None, 1, 2),
        ("cut=2", {}, "stream_cut", None, 1, 2),
        ("error=1", {}, "api_error", None, 1, 1),
        # hostile servers: keep-alives are not tokens; a message has a size and a time
        ("pings", {"timeouts": {"between_tokens": 0.3}}, "idle_timeout", None, 1, 0),
        ("endless", {"max_message": 2048}, "too_large", None, 1, 20),
        ("endless", {"timeouts": {"total": 0.5}}, "total_timeout", None, 1, -1),
    ],
)
@pytest.mark.parametrize("api", APIS)
def test_each_failure_becomes_one_llm_error_with_its_reason(
    api: str,
    switches: str,
    config: dict[str, Any],
    reason: str,
    status: int | None,
    attempts: int,
    deltas: int,
    llm_server: str,
) -> None:
    async def main() -> None:
        plugin = make_llm(llm_server, f"{switches},tag={api}", api=api, **config)
        async with running(plugin, "a") as rt:
            t0 = trio.current_time()
            await rt.send("a", "ask", "one two three four five")
            await finished(rt, "a")
            error = the_error(rt, "a")
            assert (error.reason, error.status, error.attempts) == (reason, status, attempts)
            assert error.request_id == "a:1"
            if deltas >= 0:  # (-1: as many as came in time)
                assert names(rt, "a").count("text_delta") == deltas
            assert names(rt, "a")[-1] == "llm_error"
            assert rt.state("a") == "idle"
            assert plugin.statistics().failed == {reason: 1}
            if reason == "first_token_timeout":
                assert trio.current_time() - t0 < 0.9  # not the server's 1 s
            if reason == "total_timeout":
                assert trio.current_time() - t0 < 2
            # the runtime goes on: the agent asks again (the server's switches still hold)
            await rt.send("a", "ask", "again")
            await until(lambda: len([n for n in names(rt, "a") if n in DONE]) == 2)
            assert_one_final(log(rt, "a"))  # (a late event would come within the timeouts)

    run(main)


def test_429_is_retried_honouring_retry_after(llm_server: str) -> None:
    async def main() -> None:
        retry = {"attempts": 4, "backoff": 0.001, "max_delay": 0.002}
        plugin = make_llm(llm_server, "fail=2,retry_after=0.15", retry=retry)
        async with running(plugin, "a") as rt:
            t0 = trio.current_time()
            await rt.send("a", "ask", "patience")
            await finished(rt, "a")
            assert names(rt, "a")[-1] == "message_stop"
            assert trio.current_time() - t0 >= 0.3  # two waits of Retry-After, not 2 ms
            assert plugin.statistics().retries == 2

    run(main)


def test_backoff_is_exponential_with_jitter() -> None:
    plugin = LLM(LLMConfig(retry=Retry(backoff=1, factor=2, max_delay=5, seed=7)))
    for retry, full in ((1, 1), (2, 2), (3, 4), (4, 5), (9, 5)):
        delays = {plugin._backoff(retry, 0.0) for _ in range(50)}
        assert all(full / 2 <= d <= full for d in delays)
        assert len(delays) > 1  # jittered
    assert plugin._backoff(1, 30.0) == 30.0  # Retry-After wins when longer
    from engine_llm._plugin import retry_after

    assert retry_after("2.5") == 2.5
    assert retry_after("-3") == 0.0
    assert retry_after("soon") is None
    assert retry_after("nan") is None
    assert retry_after(None) is None
    assert (retry_after("Fri, 31 Dec 2100 23:59:59 GMT") or 0) > 0
    assert retry_after("Fri, 31 Dec 1999 23:59:59 GMT") == 0.0


def test_connection_refused_and_connect_timeout(llm_server: str) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    # a listener whose accept queue is full: the next connect hangs (the SYN is dropped)
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fill = socket.create_connection(full.getsockname())
    hang_port = full.getsockname()[1]
    retry = {"attempts": 2, "backoff": 0.01, "max_delay": 0.01}

    async def main() -> None:
        refused = LLM(LLMConfig(url=f"http://127.0.0.1:{refused_port}/v1", retry=Retry(**retry)))
        hangs = LLM(
            LLMConfig(
                url=f"http://127.0.0.1:{hang_port}/v1",
                retry=Retry(**retry),
                timeouts=Timeouts(connect=0.2),
            )
        )
        async with running(refused, "r") as rt:
            await rt.send("r", "ask", "anyone?")
            await finished(rt, "r")
            error = the_error(rt, "r")
            assert (error.reason, error.attempts) == (ErrorReason.CONNECT_ERROR, 2)
            assert str(refused_port) in error.message
        async with running(hangs, "h") as rt2:
            t0 = trio.current_time()
            await rt2.send("h", "ask", "anyone?")
            await finished(rt2, "h")
            error = the_error(rt2, "h")
            assert (error.reason, error.attempts) == (ErrorReason.CONNECT_TIMEOUT, 2)
            assert 0.4 <= trio.current_time() - t0 < 2

    try:
        run(main)
    finally:
        fill.close()
        full.close()


def test_invalid_requests_and_unknown_agents_never_stop_the_runtime(llm_server: str) -> None:
    async def main() -> None:
        plugin = make_llm(llm_server, "delay=0.05")
        machine = engine.Machine("raw", ["s"], "s", [], events=["go", *EVENTS], unhandled="ignore")
        machine.handler("s", "go")(lambda agent, event: engine.Step(outputs=[event.payload]))
        for name in EVENTS:
            machine.handler("*", name)(
                lambda agent, event, name=name: agent.data["log"].append((name, event.payload))
            )
        async with running(plugin, "x", machine=machine) as rt:
            await rt.send("x", "go", ("llm", 42))
            await rt.send("x", "go", ("llm", {"messages": [{"role": "robot"}]}))
            await rt.send("x", "go", ("not-llm", 42))  # someone else's output: left alone
            await until(lambda: len(log(rt, "x")) == 2)
            reasons = [p.reason for _, p in log(rt, "x")]
            assert reasons == [ErrorReason.INVALID_REQUEST] * 2
            # (two streams of one agent are two tasks: their order is trio's)
            assert sorted(p.request_id for _, p in log(rt, "x")) == ["x:1", "x:2"]
            # an agent terminated while its stream runs: the stream stops, reported
            await rt.send("x", "go", ("llm", Request([Message("user", "bye " * 50)])))
            await until(lambda: plugin.statistics().active == 1)
            rt.terminate("x")
            await until(lambda: plugin.statistics().active == 0)
            s = plugin.statistics()
            assert (s.failed, s.cancelled) == ({"invalid_request": 2}, 1)

    run(main)


# -- the API key ---------------------------------------------------------------------------


KEY = "sk-proj-" + hashlib.sha256(b"engine-llm test key").hexdigest()[:56]
"""A long key (64 characters): a cut inside it, or a piece of it, would show."""


def leaks(text: str) -> list[str]:
    """The 8-character pieces of ``KEY`` found in ``text``."""
    return [KEY[i : i + 8] for i in range(len(KEY) - 7) if KEY[i : i + 8] in text]


@pytest.mark.parametrize("api", APIS)
def test_the_key_is_sent_and_never_written_anywhere(
    api: str, llm_server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    """The key comes from the environment (with a trailing newline: stripped), reaches the
    server (which accepts it), and no piece of it appears in any event, error, rejected
    record, log line, repr or cassette: not from a server that echoes a wrong key at the
    very place an error message is cut, nor from one that echoes it inside the stream in
    two chunks cut inside the key (recorded too)."""
    env = "ANTHROPIC_API_KEY" if api == "anthropic" else "OPENAI_API_KEY"
    monkeypatch.setenv(env, KEY + "\n")
    cassette = tmp_path / "keys.jsonl"
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        digest = hashlib.sha256(KEY.encode()).hexdigest()[:16]
        record = {"path": str(cassette), "mode": "record"}
        good = make_llm(llm_server, f"key={digest}", api=api, cassette=record)
        # the server wants another key, and echoes the one it got where the message is cut
        wrong = make_llm(llm_server, "key=other,pad=250", api=api, cassette=record)
        # the server echoes the key in an error event inside the stream, cut in two chunks
        echo = make_llm(llm_server, f"key={digest},echo_key=1,pad=150", api=api, cassette=record)
        seen: list[str] = []
        for plugin, agent in ((good, "g"), (wrong, "w"), (echo, "e")):
            async with running(plugin, agent) as rt:
                await rt.send(agent, "ask", f"secret handshake {agent}")
                await finished(rt, agent)
                await until(lambda plugin=plugin: plugin.statistics().active == 0)
                seen += [repr(log(rt, agent)), repr(rt.rejected()), repr(rt.dead_letters())]
                seen += [repr(plugin), repr(plugin.config), repr(plugin.statistics())]
                seen += [str(p) for _, p in log(rt, agent)]
                if agent == "g":
                    assert names(rt, "g")[-1] == "message_stop"
                elif agent == "w":
                    error = the_error(rt, "w")
                    assert (error.reason, error.status) == (ErrorReason.HTTP_ERROR, 401)
                    assert "bad key yyy" in error.message
                else:
                    assert the_error(rt, "e").reason == ErrorReason.API_ERROR
        text = "\n".join(seen) + cassette.read_text() + caplog.text
        assert leaks(text) == []
        assert "[redacted]" in cassette.read_text()  # the echoes were recorded, redacted
        assert "handshake g" in cassette.read_text()  # it did record the streams

    run(main)


@pytest.mark.parametrize("bad", ["sk-abc\ndef", "sk-abc\x00def", "sk-abc\rdef", "sk-\u00e9t\u00e9"])
def test_a_key_that_cannot_be_a_header_is_a_config_error_that_does_not_show_it(bad: str) -> None:
    """Whitespace around a key is dropped; a control character (or a character that is not
    ASCII) inside it cannot go in a header: a ``ConfigError`` naming where the key came
    from, never the key (it was an h11 error quoting it, retried as connect_error)."""
    with pytest.raises(engine.ConfigError) as caught:
        LLM(LLMConfig(api_key=bad))
    text = str(caught.value) + repr(caught.value)
    assert "api_key" in text
    assert bad not in text
    assert "abc" not in text
    assert "def" not in text
    assert LLM(LLMConfig(api_key="  sk-fine\r\n"))._key.reveal() == "sk-fine"


def test_a_request_the_client_cannot_send_is_not_retried(llm_server: str) -> None:
    """h11 refuses a header (here a version with a newline): ``invalid_request`` at once,
    not a ``connect_error`` retried."""

    async def main() -> None:
        plugin = make_llm(llm_server, api="anthropic", anthropic_version="2023-06-01\nx: y")
        async with running(plugin, "a") as rt:
            await rt.send("a", "ask", "hello")
            await finished(rt, "a")
            error = the_error(rt, "a")
            assert (error.reason, error.attempts) == (ErrorReason.INVALID_REQUEST, 1)
            assert "LocalProtocolError" in error.message
            assert plugin.statistics().retries == 0

    run(main)


def test_a_sink_that_cannot_start_work_is_refused() -> None:
    """``run`` needs a ``WorkSink`` (the runtime's sink); a plain ``EventSink`` could not
    make streams the agents' own work, so ``rt.interrupt`` could not cancel them."""
    from engine_llm import PluginWiringError

    class Plain:
        name = "plain"

        def send_nowait(self, *args: Any) -> None: ...

        async def send(self, *args: Any) -> None: ...

        def reject(self, record: Any) -> None: ...

    plugin = LLM(LLMConfig())
    with pytest.raises(PluginWiringError):
        trio.run(plugin.run, Plain())


def test_cassette_file_written_by_record_mode_is_json_lines(
    llm_server: str, tmp_path: Path
) -> None:
    path = tmp_path / "c.jsonl"

    async def main() -> None:
        plugin = make_llm(llm_server, cassette={"path": str(path), "mode": "record"})
        async with running(plugin, "a") as rt:
            await rt.send("a", "ask", "record me")
            await finished(rt, "a")

    run(main)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"format": "engine-llm-cassette", "version": 1}
    kinds = [line["type"] for line in lines[1:]]
    assert kinds[:2] == ["request", "response"]
    assert kinds[-1] == "end"
    assert set(kinds[2:-1]) == {"chunk"}
    assert lines[1]["endpoint"] == "chat/completions"
    assert lines[-1]["outcome"] == "complete"
    times = [line["t"] for line in lines[2:]]
    assert times == sorted(times)


def test_every_public_name_is_exported_once_and_classes_are_final() -> None:
    import inspect

    import engine_llm

    names = engine_llm.__all__
    assert len(names) == len(set(names))
    public = {
        n
        for n in dir(engine_llm)
        if not n.startswith("_") and n != "annotations"  # (the __future__ import)
    }
    assert public == set(names)
    for name in names:
        obj = getattr(engine_llm, name)
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            assert getattr(obj, "__final__", False), f"{name} is not @final"
