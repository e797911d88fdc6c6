"""engine.services.conversations: the layer's cost per message against the engine call doing
the same step (issue 17: target at most 2x).

One turn without a model: an image's agent takes a user message (``idle -> waiting``, the
user message joins its history, the output ``("llm", request)``), and a stand-in for the LLM
plugin answers each request at once with ``message_stop`` naming the request's id
(``waiting -> idle``, the assistant's text joins the history). Both sides run the same
machine (``CONVERSATION``) and the same stand-in, each on its own runtime opened the same
way (``open_runtime`` over a ``MemoryStore``, restoring the machine, the stand-in as
receptor and effector; the layer's adds its effector), both open at once on trio's real
clock; the history is cleared before each message on both sides, so building the request
does not grow with the run.

- ``raw``: ``await rt.request(image_id, "user", (content, request_id, None))``, the engine
  call (its payload built in the timed loop, as the layer builds it).
- ``layer``: ``await crt.request("message_send", {"image_id": ..., "content": ...})``: the
  checks of its data, the image lookup, the correlation id and timeout, the ``Response``, the
  bus events (``user_message``, ``message_stop``, ``assistant_message``; one subscriber each)
  and (``save-turns``, the default) the snapshot of the image written to a ``MemoryStore``
  when its turn ends; ``no-save`` leaves that to the stop (``save_turns=False``).

Each round runs the raw side, then the layer, BENCH_CONVERSATION_MESSAGES (default 5000)
messages each; reported per test is the median over BENCH_CONVERSATION_ROUNDS (default 5,
1 on the Python hot path) rounds of (layer time / raw time) as ``ratio`` and each side's µs
per message.
"""

from __future__ import annotations

import os
import time
from typing import Any

import attrs
import numpy as np
import pytest
import trio

import engine
import engine.store
from engine.services.conversations import CONVERSATION, ConversationRuntime, open_conversations
from engine.services.conversations._machine import new_image

MESSAGES = int(os.environ.get("BENCH_CONVERSATION_MESSAGES", "5000"))
ROUNDS = int(os.environ.get("BENCH_CONVERSATION_ROUNDS", "5"))


@attrs.frozen
class Stop:
    """What ``message_stop`` carries (read by attribute, like the plugin's ``MessageStop``)."""

    request_id: str
    text: str = "done"
    stop_reason: str = "end_turn"


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
                self.sink.send_nowait(agent_id, "message_stop", Stop(output[1]["id"]))


@pytest.mark.parametrize("save_turns", [True, False], ids=["save-turns", "no-save"])
@pytest.mark.benchmark(group="services-conversations")
def test_message_send_against_the_raw_request(benchmark: Any, impl: str, save_turns: bool) -> None:
    rounds = ROUNDS if impl == "native" else 1
    times: dict[str, list[float]] = {"raw": [], "layer": []}

    async def main() -> None:
        raw_llm, layer_llm = InstantLLM(), InstantLLM()
        async with (
            engine.open_runtime(
                receptors=[raw_llm],
                effectors=[raw_llm],
                store=engine.store.MemoryStore(),
                restore=[CONVERSATION],
                implementation=impl,
            ) as rt,
            open_conversations(llm=layer_llm, save_turns=save_turns, implementation=impl) as crt,
        ):
            await raw_llm.ready.wait()
            await layer_llm.ready.wait()
            data = new_image("main", "ses_1", "bench", "", "You are a benchmark.")
            data["run"] = 1
            rt.spawn(CONVERSATION, "img_bench", data=data)
            raw_history = rt.data("img_bench")["messages"]
            image_id = await setup(crt)
            layer_history = crt.engine.data(image_id)["messages"]

            async def raw() -> None:
                for i in range(MESSAGES):
                    raw_history.clear()
                    await rt.request("img_bench", "user", ("hello", f"req-{i}", None))

            async def layer() -> None:
                for _ in range(MESSAGES):
                    layer_history.clear()
                    await crt.request("message_send", {"image_id": image_id, "content": "hello"})

            for _ in range(rounds):
                for side, body in (("raw", raw), ("layer", layer)):
                    start = time.perf_counter()
                    await body()
                    times[side].append(time.perf_counter() - start)
            await rt.wait_until_idle()
            await crt.engine.wait_until_idle()
            assert rt.state("img_bench") == crt.engine.state(image_id) == "idle"
            assert rt.statistics("img_bench").processed == 2 * MESSAGES * rounds
            assert crt.statistics().delivered == 3 * MESSAGES * rounds

    benchmark.pedantic(lambda: trio.run(main), rounds=1, iterations=1)
    ratio = np.median(np.array(times["layer"]) / np.array(times["raw"]))
    benchmark.extra_info.update(
        ratio=round(float(ratio), 3),
        raw_us_per_message=round(float(np.median(times["raw"])) / MESSAGES * 1e6, 3),
        layer_us_per_message=round(float(np.median(times["layer"])) / MESSAGES * 1e6, 3),
        messages=MESSAGES,
        rounds=rounds,
        system=impl,
        save_turns=save_turns,
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
