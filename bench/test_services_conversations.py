"""engine.services.conversations: the layer's cost per message against the engine call doing
the same step (issue 17: target at most 2x).

One turn without a model: an image's agent takes a user message (``idle -> waiting``, the
user message joins its history, the output ``("llm", request)``), and a stand-in for the LLM
plugin answers each request at once with ``message_stop`` (``waiting -> idle``, the
assistant's text joins the history). Both sides run the same machine (``CONVERSATION``) and
the same stand-in under ``open_runtime`` on trio's real clock; the history is cleared before
each message on both sides, so building the request does not grow with the run.

- ``raw``: ``await rt.request(image_id, "user", (content, request_id))``, the engine call.
- ``layer``: ``await crt.request("message_send", {"image_id": ..., "content": ...})``: the
  checks of its data, the image lookup, the correlation id and timeout, the ``Response``, the
  bus events (``user_message``, ``message_stop``, ``assistant_message``; one subscriber each)
  and (``save-turns``, the default) the snapshot of the image written to a ``MemoryStore``
  when its turn ends; ``no-save`` leaves that to the stop (``save_turns=False``).

Size: BENCH_CONVERSATION_MESSAGES (default 5000) per round.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import trio

import engine
from engine.services.conversations import CONVERSATION, ConversationRuntime, open_conversations
from engine.services.conversations._machine import new_image

MESSAGES = int(os.environ.get("BENCH_CONVERSATION_MESSAGES", "5000"))


class Stop:
    """What ``message_stop`` carries (read by attribute, like the plugin's ``MessageStop``)."""

    text = "done"
    stop_reason = "end_turn"


STOP = Stop()


class InstantLLM:
    """A receptor and effector in the LLM plugin's place: every ``("llm", request)`` output
    is answered at once, inside the same drain batch, with ``message_stop``."""

    def __init__(self) -> None:
        self.sink: Any = None
        self.ready = trio.Event()

    async def run(self, sink: Any) -> None:
        self.sink = sink
        self.ready.set()
        await trio.sleep_forever()

    def deliver(self, batch: Any) -> None:
        for agent_id, output in batch:
            if type(output) is tuple and output[0] == "llm":
                self.sink.send_nowait(agent_id, "message_stop", STOP)


def per_message(start: int, n: int) -> float:
    return round((time.perf_counter_ns() - start) / n / 1000.0, 3)


@pytest.mark.benchmark(group="services-conversations")
def test_raw_engine_request(benchmark: Any, impl: str) -> None:
    result: dict[str, float] = {}

    def run() -> None:
        async def main() -> None:
            llm = InstantLLM()
            async with engine.open_runtime(
                receptors=[llm], effectors=[llm], implementation=impl
            ) as rt:
                await llm.ready.wait()
                data = new_image("main", "ses_1", "bench", "", "You are a benchmark.")
                data["run"] = 1
                rt.spawn(CONVERSATION, "img_bench", data=data)
                history = rt.data("img_bench")["messages"]
                start = time.perf_counter_ns()
                for i in range(MESSAGES):
                    history.clear()
                    await rt.request("img_bench", "user", ("hello", f"req-{i}"))
                result["us_per_message"] = per_message(start, MESSAGES)
                await rt.wait_until_idle()
                assert rt.state("img_bench") == "idle"
                assert rt.statistics("img_bench").processed == 2 * MESSAGES

        trio.run(main)

    benchmark.pedantic(run, rounds=3 if impl == "native" else 1, iterations=1)
    benchmark.extra_info.update(result, messages=MESSAGES, system=impl, side="raw")


@pytest.mark.parametrize("save_turns", [True, False], ids=["save-turns", "no-save"])
@pytest.mark.benchmark(group="services-conversations")
def test_layer_message_send(benchmark: Any, impl: str, save_turns: bool) -> None:
    result: dict[str, float] = {}

    def run() -> None:
        async def main() -> None:
            llm = InstantLLM()
            async with open_conversations(
                llm=llm, save_turns=save_turns, implementation=impl
            ) as crt:
                await llm.ready.wait()
                image_id = await setup(crt)
                history = crt.engine.data(image_id)["messages"]
                start = time.perf_counter_ns()
                for _ in range(MESSAGES):
                    history.clear()
                    await crt.request("message_send", {"image_id": image_id, "content": "hello"})
                result["us_per_message"] = per_message(start, MESSAGES)
                await crt.engine.wait_until_idle()
                assert crt.statistics().delivered == 3 * MESSAGES
                assert crt.engine.state(image_id) == "idle"

        trio.run(main)

    benchmark.pedantic(run, rounds=3 if impl == "native" else 1, iterations=1)
    benchmark.extra_info.update(
        result, messages=MESSAGES, system=impl, side="layer", save_turns=save_turns
    )


async def setup(crt: ConversationRuntime) -> str:
    """A container and an image with an agent running it, and one subscriber per event the
    turn emits."""
    (await crt.request("container_create", {"container_id": "main"})).unwrap()
    made = await crt.request("image_create", {"container_id": "main", "config": {"name": "bench"}})
    image_id: str = made.unwrap()["record"].image_id
    (await crt.request("image_run", {"image_id": image_id})).unwrap()
    seen = [0]

    def count(event: Any) -> None:
        seen[0] += 1

    crt.on(["user_message", "message_stop", "assistant_message"], count)
    return image_id
