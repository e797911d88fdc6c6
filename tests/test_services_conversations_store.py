"""engine.services.conversations with its persistence drivers (the engine's stores: memory,
SQLite, PostgreSQL): containers and images survive a reopen, a conversation is in the store
once its turn ends, a deleted image stays deleted; and the layer against the tests' live model
server, recorded and replayed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from engine_llm import LLM, Cassette, LLMConfig

import engine
import engine.store
from engine.services.conversations import ConversationRuntime, open_conversations

CASSETTE = Path(__file__).parent / "fixtures" / "conversations.cassette.jsonl"
PROMPT = "You are a helpful assistant."


def replay() -> LLM:
    return LLM(LLMConfig(cassette=Cassette(str(CASSETTE), "replay", timing=False)))


def run(body: Callable[[ConversationRuntime], Any], **kwargs: Any) -> Any:
    out: list[Any] = []

    async def main() -> None:
        async with open_conversations(**kwargs) as rt:
            out.append(await body(rt))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return out[0]


async def say(rt: ConversationRuntime, image_id: str, text: str) -> None:
    done = trio.Event()
    off = rt.on("message_stop", lambda e: done.set())
    (await rt.request("message_send", {"image_id": image_id, "content": text})).unwrap()
    await done.wait()
    off()


def stored_messages(store: engine.store.Store, image_id: str) -> list[str]:
    (record,) = store.latest([engine.store.agent_key(image_id)])
    data = engine.store.decode(record.record).data
    return [m["content"] for m in data["messages"]]


def round_trip(impl: str, make_store: Callable[[], engine.store.Store]) -> None:
    async def first(rt: ConversationRuntime) -> tuple[str, str]:
        await rt.request("container_create", {"container_id": "main"})
        await rt.request("container_create", {"container_id": "spare"})
        made = await rt.request(
            "image_create", {"container_id": "main", "config": {"system_prompt": PROMPT}}
        )
        image_id = made.unwrap()["record"].image_id
        doomed = await rt.request("image_create", {"container_id": "spare"})
        doomed_id = doomed.unwrap()["record"].image_id
        await say(rt, image_id, "Hello! Who are you?")
        await trio.sleep(0)  # the saver writes the image once the turn has ended
        assert stored_messages(rt.store, image_id) == [
            "Hello! Who are you?",
            "echo: Hello! Who are you?",
        ]
        assert (await rt.request("image_delete", {"image_id": doomed_id})).ok
        return image_id, doomed_id  # left online: closing stops it into the store

    store = make_store()
    image_id, doomed_id = run(first, llm=replay(), store=store, implementation=impl)
    store.close()

    async def second(rt: ConversationRuntime) -> None:
        assert (await rt.request("container_list")).data["container_ids"] == ["main", "spare"]
        records = (await rt.request("image_list")).data["records"]
        assert [(r.image_id, r.online, r.messages, r.system_prompt) for r in records] == [
            (image_id, False, 2, PROMPT)
        ]
        missing = await rt.request("image_get", {"image_id": doomed_id})
        assert isinstance(missing.error, engine.AgentNotFoundError)
        await say(rt, image_id, "Do you remember me?")  # the recording has the whole history
        kept = (await rt.request("image_messages", {"image_id": image_id})).data["messages"]
        assert [m["role"] for m in kept] == ["user", "assistant", "user", "assistant"]
        agents = (await rt.request("agent_list", {"container_id": "main"})).data["agents"]
        assert [a["agent_id"] for a in agents] == [f"{image_id}#2"]
        made = await rt.request("image_create", {"container_id": "spare"})  # its tenant is back
        assert made.ok

    store = make_store()
    run(second, llm=replay(), store=store, implementation=impl)
    store.close()


def test_memory_store_round_trip(impl: str) -> None:
    store = engine.store.MemoryStore()
    round_trip(impl, lambda: store)


def test_sqlite_store_round_trip(impl: str, tmp_path: Path) -> None:
    path = tmp_path / "conversations.db"
    round_trip(impl, lambda: engine.store.SQLiteStore(path))


def test_postgres_store_round_trip(postgres_db: str) -> None:
    round_trip("native", lambda: engine.store.PostgresStore(postgres_db))


def test_a_store_of_agents_that_are_not_images_is_left_alone(impl: str) -> None:
    store = engine.store.MemoryStore()
    other = engine.Machine("light", ["red", "green"], "red", [("red", "tick", "green")])

    async def body(rt: ConversationRuntime) -> None:
        rt.engine.spawn(other, "img_lookalike")  # not an image, whatever its id says
        rt.engine.spawn(other, "plain")
        assert (await rt.request("image_list")).data["records"] == []
        answer = await rt.request("image_get", {"image_id": "img_lookalike"})
        assert isinstance(answer.error, engine.AgentNotFoundError)
        assert rt.engine.state("plain") == "red"

    run(body, store=store, implementation=impl)


def test_live_against_the_model_server_then_replayed(
    impl: str, llm_server: str, tmp_path: Path
) -> None:
    cassette = tmp_path / "live.jsonl"

    def conversation(llm: LLM) -> list[str]:
        texts: list[str] = []

        async def body(rt: ConversationRuntime) -> list[str]:
            rt.on("text_delta", lambda e: texts.append(e.data.text))
            await rt.request("container_create", {"container_id": "main"})
            made = await rt.request(
                "image_create", {"container_id": "main", "config": {"system_prompt": PROMPT}}
            )
            image_id = made.unwrap()["record"].image_id
            await say(rt, image_id, "Hello! Who are you?")
            await rt.request("image_stop", {"image_id": image_id})
            await say(rt, image_id, "Do you remember me?")
            messages = (await rt.request("image_messages", {"image_id": image_id})).data
            return [m["content"] for m in messages["messages"]]

        async def main() -> list[str]:
            async with open_conversations(llm=llm, implementation=impl) as rt:
                return await body(rt)

        history = trio.run(main)  # a live server runs on real time
        return [*history, "".join(texts)]

    live = conversation(
        LLM(
            LLMConfig(
                url=f"{llm_server}/s/delay=0.001/v1", cassette=Cassette(str(cassette), "record")
            )
        )
    )
    assert live == [
        "Hello! Who are you?",
        "echo: Hello! Who are you?",
        "Do you remember me?",
        "echo: Do you remember me?",
        "echo: Hello! Who are you?echo: Do you remember me?",
    ]
    replayed = conversation(
        LLM(LLMConfig(cassette=Cassette(str(cassette), "replay", timing=False)))
    )
    assert replayed == live


def test_a_tool_call_of_a_live_model_reaches_the_bus(impl: str, llm_server: str) -> None:
    calls: list[Any] = []

    async def main() -> None:
        llm = LLM(LLMConfig(url=f"{llm_server}/s/tool=weather/v1"))
        async with open_conversations(llm=llm, implementation=impl) as rt:
            rt.on("tool_call", lambda e: calls.append((e.data.name, e.data.arguments)))
            await rt.request("container_create", {"container_id": "main"})
            made = await rt.request("image_create", {"container_id": "main"})
            image_id = made.unwrap()["record"].image_id
            stops: list[Any] = []
            done = trio.Event()
            rt.on("message_stop", lambda e: (stops.append(e.data.stop_reason), done.set()))
            await rt.request("message_send", {"image_id": image_id, "content": "Oslo weather"})
            with trio.fail_after(10):
                await done.wait()
            assert stops == ["tool_use"]  # the layer runs no tools: the turn ends there

    trio.run(main)
    assert calls == [("weather", {"query": "Oslo weather"})]


def test_without_saving_turns_a_conversation_reaches_the_store_when_it_stops(impl: str) -> None:
    store = engine.store.MemoryStore()

    async def body(rt: ConversationRuntime) -> None:
        await rt.request("container_create", {"container_id": "main"})
        made = await rt.request(
            "image_create", {"container_id": "main", "config": {"system_prompt": PROMPT}}
        )
        image_id = made.unwrap()["record"].image_id
        await say(rt, image_id, "Hello! Who are you?")
        await trio.sleep(1)
        assert stored_messages(store, image_id) == []  # as it was created
        await rt.request("image_stop", {"image_id": image_id})
        assert len(stored_messages(store, image_id)) == 2

    run(body, llm=replay(), store=store, save_turns=False, implementation=impl)


@pytest.mark.parametrize(
    "bad", [{"save_turns": 1}, {"timeout": 0}, {"shutdown_timeout": float("nan")}]
)
def test_bad_arguments_of_the_opener(bad: dict[str, Any]) -> None:
    with pytest.raises(engine.InvalidArgumentError):
        run(lambda rt: trio.sleep(0), **bad)
