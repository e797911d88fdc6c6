"""engine-llm's stream loop on virtual time: hand-made cassettes replayed on ``MockClock``, so
the moments that matter (a full mailbox when the body ends, an interrupt at the very time a
chunk arrives, a connection dropped after the message was complete, a retry's jitter) happen
exactly, run after run. The invariant checked throughout: a request ends with exactly one
final event (``message_stop`` or ``llm_error``), or with ``interrupted`` and nothing after."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from engine_llm import EVENTS, LLM, Cassette, LLMConfig, Message, Request, Retry, Timeouts
from engine_llm._request import body
from test_plugin_llm import assert_one_final

import engine

REQUEST = Request([Message("user", "hi")])


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return f"data: {json.dumps({'id': 'c', 'model': 'm', 'choices': [choice]})}\n\n"


def write_cassette(path: Path, *interactions: dict[str, Any]) -> None:
    """A cassette of OpenAI-compatible interactions of ``REQUEST``; each a dict with
    ``chunks`` ([(t, text)]), and optionally ``status``, ``headers``, ``t_response``,
    ``end`` (the outcome), ``t_end`` and ``message``."""
    lines: list[Any] = [{"format": "engine-llm-cassette", "version": 1}]
    for n, it in enumerate(interactions):
        chunks = it["chunks"]
        request = body("openai", REQUEST, "default", 1024)
        lines.append(
            {"n": n, "type": "request", "method": "POST", "endpoint": "chat/completions",
             "body": request}
        )  # fmt: skip
        lines.append(
            {"n": n, "type": "response", "t": it.get("t_response", 0.0),
             "status": it.get("status", 200), "headers": it.get("headers", {})}
        )  # fmt: skip
        lines += [{"n": n, "type": "chunk", "t": t, "data": c} for t, c in chunks]
        t_end = it.get("t_end", chunks[-1][0] if chunks else 0.0)
        end = {"n": n, "type": "end", "t": t_end, "outcome": it.get("end", "complete")}
        if "message" in it:
            end["message"] = it["message"]
        lines.append(end)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def machine() -> engine.Machine:
    """Logs every stream event with the time it arrived (``data["log"]``)."""
    m = engine.Machine("log", ["s"], "s", [], events=["ask", *EVENTS], unhandled="ignore")
    m.handler("s", "ask")(lambda agent, event: engine.Step(outputs=[("llm", REQUEST)]))
    for name in EVENTS:

        def log(agent: engine.AgentContext, event: engine.Event, name: str = name) -> None:
            agent.data["log"].append((name, event.payload, trio.current_time()))

        m.handler("*", name)(log)
    return m


MACHINE = machine()


def on_mock_clock(main: Callable[[], Any]) -> Any:
    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def names(rt: engine.Runtime, agent: Any) -> list[str]:
    return [n for n, _, _ in rt.data(agent)["log"]]


async def replay(
    path: Path, *, capacity: int = 0, pause: float | None = None, resume: float = 2.0,
    until: float = 5.0, **config: Any,
) -> tuple[list[tuple[str, Any, float]], LLM]:  # fmt: skip
    """One agent asks ``REQUEST`` of a replayed cassette; its log and the plugin."""
    plugin = LLM(LLMConfig(cassette=Cassette(str(path)), **config))
    async with engine.open_runtime(receptors=[plugin], effectors=[plugin]) as rt:
        spawn = {"capacity": capacity} if capacity else {}
        rt.spawn(MACHINE, "a", data={"log": []}, **spawn)
        t0 = trio.current_time()
        await rt.send("a", "ask")
        if pause is not None:
            await trio.sleep_until(t0 + pause)
            rt.pause("a")
            await trio.sleep_until(t0 + resume)
            rt.resume("a")
        await trio.sleep_until(t0 + until)
        entries = [(n, p, t - t0) for n, p, t in rt.data("a")["log"]]
        return entries, plugin


# -- finding: message_stop lost under backpressure when the body ends without [DONE] -------


def test_the_end_of_a_body_without_done_waits_for_room_untimed(tmp_path: Path) -> None:
    """The ``message_stop`` a body's end completes (no ``[DONE]``) waits for room in a full
    mailbox like any other event: longer than ``between_tokens`` is not a timeout, and it is
    delivered once the agent reads again."""
    path = tmp_path / "no-done.jsonl"
    chunks = [(0.1, chunk({"role": "assistant"})), (0.2, chunk({"content": "x"})),
              (0.3, chunk({}, "stop"))]  # fmt: skip
    write_cassette(path, {"chunks": chunks, "t_end": 0.3})

    async def main() -> None:
        entries, plugin = await replay(
            path, capacity=2, pause=0.05, resume=2.0, timeouts=Timeouts(between_tokens=0.5)
        )
        assert [n for n, _, _ in entries] == ["message_start", "text_delta", "message_stop"]
        assert entries[-1][2] >= 2.0  # after the resume
        assert_one_final([(n, p) for n, p, _ in entries])
        s = plugin.statistics()
        assert (s.completed, s.failed, s.waited) == (1, {}, 1)

    on_mock_clock(main)


# -- finding: a connection dropped after the message was complete --------------------------


@pytest.mark.parametrize("outcome", ["RemoteProtocolError", "ReadError", "ReadTimeout"])
def test_a_connection_broken_after_the_message_is_complete_is_no_error(
    outcome: str, tmp_path: Path
) -> None:
    path = tmp_path / "after-done.jsonl"
    chunks = [(0.1, chunk({"role": "assistant"})), (0.2, chunk({"content": "x"})),
              (0.3, chunk({}, "stop")), (0.3, "data: [DONE]\n\n")]  # fmt: skip
    write_cassette(path, {"chunks": chunks, "end": outcome, "t_end": 0.4, "message": "gone"})

    async def main() -> None:
        entries, plugin = await replay(path)
        assert [n for n, _, _ in entries] == ["message_start", "text_delta", "message_stop"]
        assert_one_final([(n, p) for n, p, _ in entries])
        s = plugin.statistics()
        assert (s.completed, s.failed) == (1, {})

    on_mock_clock(main)


# -- finding: events delivered after rt.interrupt returned ---------------------------------


@pytest.mark.parametrize("run", range(20))
def test_no_event_after_interrupted_even_at_a_chunks_very_time(run: int, tmp_path: Path) -> None:
    """The interrupt lands at the very time a chunk is read (the read completes, then the
    interrupt cancels the stream before the stream runs again): that chunk's events are not
    delivered. Twenty runs, at different chunks (and trio's scheduling order varies)."""
    path = tmp_path / "late.jsonl"
    chunks = [(0.0, chunk({"role": "assistant"}))]
    chunks += [(0.1 * i, chunk({"content": f"t{i} "})) for i in range(1, 30)]
    chunks += [(3.0, chunk({}, "stop")), (3.0, "data: [DONE]\n\n")]
    write_cassette(path, {"chunks": chunks})
    at = 0.1 * (5 + run % 10)

    async def main() -> None:
        plugin = LLM(LLMConfig(cassette=Cassette(str(path))))
        async with engine.open_runtime(receptors=[plugin], effectors=[plugin]) as rt:
            rt.spawn(MACHINE, "a", data={"log": []})
            t0 = trio.current_time()
            await rt.send("a", "ask")
            await trio.sleep_until(t0 + at)
            before = plugin.statistics().deltas
            assert rt.interrupt("a") == 1
            await trio.sleep(1.0)
            assert plugin.statistics().deltas == before
            got = names(rt, "a")
            assert got[-1] == "interrupted", got
            assert got.count("text_delta") == before
            assert "message_stop" not in got

    on_mock_clock(main)


# -- finding: an unrelated output whose first item compares oddly --------------------------


def test_an_output_whose_first_item_is_an_array_is_left_alone(tmp_path: Path) -> None:
    """``(np.array([1, 2]), x) == "llm"`` is an array, whose truth raises: the batch's
    requests must start all the same."""
    import numpy as np

    path = tmp_path / "plain.jsonl"
    chunks = [(0.1, chunk({"role": "assistant"})), (0.2, chunk({}, "stop"))]
    write_cassette(path, {"chunks": [*chunks, (0.2, "data: [DONE]\n\n")]})
    m = engine.Machine("odd", ["s"], "s", [], events=["ask", *EVENTS], unhandled="ignore")
    m.handler("s", "ask")(
        lambda agent, event: engine.Step(outputs=[(np.array([1, 2]), "x"), ("llm", REQUEST)])
    )
    for name in EVENTS:
        m.handler("*", name)(
            lambda agent, event, name=name: agent.data["log"].append((name, event.payload))
        )

    async def main() -> None:
        plugin = LLM(LLMConfig(cassette=Cassette(str(path))))
        async with engine.open_runtime(receptors=[plugin], effectors=[plugin]) as rt:
            rt.spawn(m, "a", data={"log": []})
            await rt.send("a", "ask")
            await trio.sleep(1)
            assert [n for n, _ in rt.data("a")["log"]] == ["message_start", "message_stop"]
            assert rt.effector_failures() == []

    on_mock_clock(main)


# -- finding: misclassified errors ---------------------------------------------------------


def test_a_request_that_is_not_json_is_an_invalid_request(tmp_path: Path) -> None:
    path = tmp_path / "none.jsonl"
    write_cassette(path, {"chunks": [(0.1, chunk({"role": "assistant"}))]})
    m = engine.Machine("raw", ["s"], "s", [], events=["go", *EVENTS], unhandled="ignore")
    m.handler("s", "go")(lambda agent, event: engine.Step(outputs=[("llm", event.payload)]))
    m.handler("*", "llm_error")(lambda agent, event: agent.data["log"].append(event.payload))

    async def main() -> None:
        plugin = LLM(LLMConfig(cassette=Cassette(str(path))))
        async with engine.open_runtime(receptors=[plugin], effectors=[plugin]) as rt:
            rt.spawn(m, "a", data={"log": []})
            await rt.send("a", "go", Request([Message("user", "x")], temperature=float("nan")))
            await rt.send("a", "go", Request([Message("user", "x")], extra={"x": object()}))
            await trio.sleep(1)
            errors = rt.data("a")["log"]
            assert [e.reason for e in errors] == ["invalid_request"] * 2
            assert "temperature" in " ".join(e.message for e in errors)
            assert plugin.statistics().failed == {"invalid_request": 2}

    on_mock_clock(main)


def test_a_tenant_that_refuses_an_event_ends_the_stream_with_one_llm_error(
    tmp_path: Path,
) -> None:
    """The agent's tenant is at ``max_queued`` with overflow ``reject``: the stream cannot
    drop the refused delta, so it stops there (the refusal is a rejected record) and its
    ``llm_error`` (``refused``) waits for room (it was a TenantLimitError reported as
    ``internal``, and itself refused: the agent got no final event)."""
    path = tmp_path / "many.jsonl"
    chunks = [(0.1, chunk({"role": "assistant"}))]
    chunks += [(0.1 + 0.01 * i, chunk({"content": f"t{i} "})) for i in range(1, 8)]
    chunks += [(0.2, chunk({}, "stop")), (0.2, "data: [DONE]\n\n")]
    write_cassette(path, {"chunks": chunks})
    tenant = engine.Tenant("small", limits=engine.Limits(max_queued=3))

    async def main() -> None:
        plugin = LLM(LLMConfig(cassette=Cassette(str(path))))
        async with engine.open_runtime(
            receptors=[plugin], effectors=[plugin], tenants=[tenant]
        ) as rt:
            rt.spawn(MACHINE, "a", data={"log": []}, tenant="small")
            t0 = trio.current_time()
            await rt.send("a", "ask")
            await trio.sleep_until(t0 + 0.05)
            rt.pause("a")
            await trio.sleep_until(t0 + 2)
            rt.resume("a")
            await trio.sleep_until(t0 + 4)
            got = names(rt, "a")
            assert got == ["message_start", "text_delta", "text_delta", "llm_error"], got
            error = rt.data("a")["log"][-1][1]
            assert error.reason == "refused"
            assert "max_queued" in error.message
            assert {r.error for r in rt.rejected()} == {"TenantLimitError"}
            assert_one_final([(n, p) for n, p, _ in rt.data("a")["log"]])
            assert plugin.statistics().failed == {"refused": 1}
            assert rt.dead_letters() == []

    on_mock_clock(main)


# -- finding: replay not deterministic -------------------------------------------------------

RETRIED = [
    {"status": 429, "t_response": 0.01, "headers": {"content-type": "application/json"},
     "chunks": [(0.01, "{}")]},
    {"t_response": 0.01, "chunks": [(0.02, chunk({"role": "assistant"})),
                                    (0.03, chunk({"content": "x"})),
                                    (0.04, chunk({}, "stop") + "data: [DONE]\n\n")]},
]  # fmt: skip


def test_a_replayed_retry_runs_at_the_same_times_every_run(tmp_path: Path) -> None:
    """With no ``retry.seed``, replay seeds the jitter itself: a retried request replays at
    the same virtual times, run after run (they differed by the OS's random jitter)."""
    path = tmp_path / "retried.jsonl"
    write_cassette(path, *RETRIED)

    async def main() -> list[tuple[str, float]]:
        entries, plugin = await replay(path)
        assert plugin.statistics().retries == 1
        return [(n, t) for n, _, t in entries]

    runs = [on_mock_clock(main) for _ in range(5)]
    assert [n for n, _ in runs[0]] == ["message_start", "text_delta", "message_stop"]
    assert all(r == runs[0] for r in runs)


def test_a_retry_after_date_counts_from_the_responses_date(tmp_path: Path) -> None:
    """An HTTP-date ``Retry-After`` is a delay from the response's ``Date`` (recorded with
    it), never from the wall clock of the replay."""
    path = tmp_path / "dated.jsonl"
    dated = dict(RETRIED[0])
    dated["headers"] = {
        "content-type": "application/json",
        "date": "Wed, 21 Oct 2015 07:28:00 GMT",
        "retry-after": "Wed, 21 Oct 2015 07:28:03 GMT",
    }
    write_cassette(path, dated, RETRIED[1])

    async def main() -> list[tuple[str, float]]:
        entries, _ = await replay(path, retry=Retry(backoff=0.01, max_delay=0.01))
        return [(n, t) for n, _, t in entries]

    got = on_mock_clock(main)
    assert got[0][0] == "message_start"
    assert got[0][1] == pytest.approx(0.01 + 3.0 + 0.02)  # the 429, 3 s, the first chunk


def test_retry_after_dates() -> None:
    from engine_llm._plugin import retry_after

    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert retry_after("Wed, 21 Oct 2015 07:28:05 GMT", date) == 5.0
    assert retry_after("Wed, 21 Oct 2015 07:27:00 GMT", date) == 0.0
    assert retry_after("Wed, 21 Oct 2015 07:28:05 GMT", None, live=False) is None
    assert (retry_after("Fri, 31 Dec 2100 23:59:59 GMT") or 0) > 0  # live: the wall clock
    assert retry_after("7", date, live=False) == 7.0


# -- finding: the plugin wired as an effector only -------------------------------------------


def test_wired_as_an_effector_only_is_a_wiring_error_not_silence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without its receptor side the plugin has no sink to start streams with: the requests
    of the first moments wait for it (the receptor may start after the first batch), then
    they are reported (a log error, and a ``PluginWiringError`` when the plugin closes),
    later ones are refused at once (an effector failure naming the fix), and none is ever
    carried into the next runtime. (They waited in a list forever, silently.)"""
    from engine_llm import PluginWiringError

    path = tmp_path / "none.jsonl"
    write_cassette(path, {"chunks": [(0.1, chunk({"role": "assistant"}))]})
    plugin = LLM(LLMConfig(cassette=Cassette(str(path))))

    async def main() -> None:
        async with engine.open_runtime(effectors=[plugin]) as rt:
            rt.spawn(MACHINE, "a", data={"log": []})
            await rt.send("a", "ask")
            await trio.sleep(5)
            assert "receptor" in caplog.text
            await rt.send("a", "ask")
            await trio.sleep(1)
            (failure,) = rt.effector_failures()
            assert isinstance(failure.error, PluginWiringError)
            assert "receptor" in str(failure.error)
        errors = [f.error for f in rt.effector_failures()]
        assert len(errors) == 2
        assert all(isinstance(e, PluginWiringError) for e in errors)
        # wired properly now: nothing of the last runtime starts
        async with engine.open_runtime(receptors=[plugin], effectors=[plugin]) as rt2:
            rt2.spawn(MACHINE, "b", data={"log": []})
            await trio.sleep(5)
            assert plugin.statistics().requests == 0
            assert rt2.data("b")["log"] == []

    on_mock_clock(main)
