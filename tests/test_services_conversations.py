"""engine.services.conversations: the older container/image/agent runtime's quick start,
translated from its documents (create a container, create an image with a system prompt,
subscribe to text deltas, send a message; stop; the image keeps its messages; run again),
replayed from a cassette recorded from the tests' model server; then every command, every
error case, and the bus. Every test runs on both hot paths on ``MockClock``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from engine_llm import LLM, Cassette, LLMConfig

import engine
from engine.services import conversations
from engine.services.conversations import (
    ConversationEvent,
    ConversationRuntime,
    ImageNotFoundError,
    RequestTimeoutError,
    UnknownCommandError,
    open_conversations,
)

CASSETTE = Path(__file__).parent / "fixtures" / "conversations.cassette.jsonl"
PROMPT = "You are a helpful assistant."

Body = Callable[[ConversationRuntime], Awaitable[None]]


def run(impl: str, body: Body, **kwargs: Any) -> None:
    async def main() -> None:
        async with open_conversations(implementation=impl, **kwargs) as rt:
            await body(rt)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def replay(timing: bool = True) -> LLM:
    return LLM(LLMConfig(cassette=Cassette(str(CASSETTE), "replay", timing=timing)))


async def image(rt: ConversationRuntime, container: str = "main", **config: Any) -> str:
    await rt.request("container_create", {"container_id": container})
    config.setdefault("system_prompt", PROMPT)
    answer = await rt.request("image_create", {"container_id": container, "config": config})
    image_id: str = answer.unwrap()["record"].image_id
    return image_id


def test_the_quick_start_streams_text_deltas_from_a_replayed_cassette(impl: str) -> None:
    printed: list[str] = []
    types: list[str] = []

    async def body(rt: ConversationRuntime) -> None:
        rt.on("text_delta", lambda e: printed.append(e.data.text))
        rt.on_any(lambda e: types.append(e.type))
        done = trio.Event()
        rt.on("message_stop", lambda e: done.set())
        created = await rt.request("container_create", {"container_id": "main"})
        assert created.ok
        assert created.data == {"container_id": "main", "created": True}
        answer = await rt.request(
            "image_create",
            {"container_id": "main", "config": {"name": "My Assistant", "system_prompt": PROMPT}},
        )
        record = answer.data["record"]
        assert (record.name, record.system_prompt, record.online) == ("My Assistant", PROMPT, False)
        sent = await rt.request(
            "message_send", {"image_id": record.image_id, "content": "Hello! Who are you?"}
        )
        assert sent.ok
        assert sent.data["agent_id"] == f"{record.image_id}#1"
        await done.wait()
        assert "".join(printed) == "echo: Hello! Who are you?"
        assert printed == ["echo: ", "Hello! ", "Who ", "are ", "you?"]  # as streamed
        stopped = await rt.request("image_stop", {"image_id": record.image_id})
        assert stopped.data == {"image_id": record.image_id, "stopped": True}
        kept = (await rt.request("image_messages", {"image_id": record.image_id})).unwrap()
        assert [(m["role"], m["content"]) for m in kept["messages"]] == [
            ("user", "Hello! Who are you?"),
            ("assistant", "echo: Hello! Who are you?"),
        ]
        got = (await rt.request("image_get", {"image_id": record.image_id})).unwrap()["record"]
        assert (got.online, got.agent_id, got.messages) == (False, None, 2)
        # run it again: a new agent, the same conversation (the recorded request had it all)
        printed.clear()
        done = trio.Event()
        rt.on("message_stop", lambda e: done.set())
        again = await rt.request(
            "message_send", {"image_id": record.image_id, "content": "Do you remember me?"}
        )
        assert again.data["agent_id"] == f"{record.image_id}#2"
        await done.wait()
        assert "".join(printed) == "echo: Do you remember me?"
        kept = (await rt.request("image_messages", {"image_id": record.image_id})).unwrap()
        assert len(kept["messages"]) == 4

    run(impl, body, llm=replay())
    first = types[: types.index("message_stop") + 1]
    assert first == [
        "container_created",
        "image_created",
        "session_created",
        "agent_registered",
        "user_message",
        "message_start",
        *["text_delta"] * 5,
        "message_stop",
    ]
    assert types.count("agent_registered") == 2
    assert types.count("agent_unregistered") == 2


def test_stream_events_carry_their_context_and_correlation_id(impl: str) -> None:
    events: list[ConversationEvent] = []

    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        done = trio.Event()
        rt.on(["text_delta", "message_stop", "assistant_message"], events.append)
        rt.on("message_stop", lambda e: done.set())
        await rt.request(
            "message_send",
            {"image_id": image_id, "content": "Hello! Who are you?"},
            request_id="turn-1",
        )
        await done.wait()
        for event in events:
            c = event.context
            assert (c.container_id, c.image_id, c.agent_id) == ("main", image_id, f"{image_id}#1")
            assert c.correlation_id == "turn-1"
            assert c.session_id.startswith("ses_")
        assert events[-1].type == "assistant_message"
        assert events[-1].data["content"] == "echo: Hello! Who are you?"
        assert events[-2].data.stop_reason == "end_turn"

    run(impl, body, llm=replay(timing=False))


def test_a_message_sent_mid_turn_waits_for_the_turn_to_end(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        stops: list[str] = []
        rt.on("assistant_message", lambda e: stops.append(e.data["content"]))
        await rt.request("message_send", {"image_id": image_id, "content": "Hello! Who are you?"})
        # the second is postponed while the first streams, then taken: its request is the
        # recorded second one only if the history holds the first answer by then
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                rt.request, "message_send", {"image_id": image_id, "content": "Do you remember me?"}
            )
        while len(stops) < 2:
            await trio.sleep(0.1)
        assert stops == ["echo: Hello! Who are you?", "echo: Do you remember me?"]

    run(impl, body, llm=replay())


def test_interrupt_cancels_the_stream_and_ends_the_turn(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        seen: list[str] = []
        rt.on(["text_delta", "interrupted", "message_stop"], lambda e: seen.append(e.type))
        sent = await rt.request(
            "message_send", {"image_id": image_id, "content": "Hello! Who are you?"}
        )
        while "text_delta" not in seen:
            await trio.sleep(0.01)
        answer = await rt.request("agent_interrupt", {"agent_id": sent.data["agent_id"]})
        assert answer.data["interrupted"] is True
        await trio.sleep(5)
        assert seen[-1] == "interrupted"
        assert "message_stop" not in seen
        assert rt.engine.state(image_id) == "idle"
        idle = await rt.request("agent_interrupt", {"image_id": image_id})
        assert idle.data["interrupted"] is False
        messages = (await rt.request("image_messages", {"image_id": image_id})).unwrap()
        assert [m["role"] for m in messages["messages"]] == ["user"]

    run(impl, body, llm=replay())


def test_stopping_mid_stream_interrupts_it_and_keeps_the_history(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        deltas: list[str] = []
        rt.on("text_delta", lambda e: deltas.append(e.data.text))
        await rt.request("message_send", {"image_id": image_id, "content": "Hello! Who are you?"})
        while not deltas:
            await trio.sleep(0.01)
        stopped = await rt.request("image_stop", {"image_id": image_id})
        assert stopped.data["stopped"] is True
        assert rt.engine.status(image_id) is engine.AgentStatus.HIBERNATED
        again = await rt.request("image_stop", {"image_id": image_id})
        assert again.data["stopped"] is False
        record = (await rt.request("image_get", {"image_id": image_id})).unwrap()["record"]
        assert record.messages == 1
        assert not record.online

    run(impl, body, llm=replay())


def test_every_container_and_image_command(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        assert (await rt.request("container_list")).data == {"container_ids": []}
        a = await image(rt, "a", name="First")
        b = await image(rt, "b", name="Second", description="two")
        again = await rt.request("container_create", {"container_id": "a"})
        assert again.data == {"container_id": "a", "created": False}
        assert (await rt.request("container_list", {})).data["container_ids"] == ["a", "b"]
        assert (await rt.request("container_get", {"container_id": "b"})).data["exists"]
        assert not (await rt.request("container_get", {"container_id": "z"})).data["exists"]
        listed = (await rt.request("image_list")).data["records"]
        assert sorted(r.name for r in listed) == ["First", "Second"]
        only_b = (await rt.request("image_list", {"container_id": "b"})).data["records"]
        assert [r.image_id for r in only_b] == [b]
        ran = (await rt.request("image_run", {"image_id": a})).unwrap()
        assert ran == {"image_id": a, "agent_id": f"{a}#1", "reused": False}
        assert (await rt.request("image_run", {"image_id": a})).data["reused"] is True
        assert rt.engine.tenant_of(a) == "a"  # a container is a tenant
        online = {r.image_id: r.online for r in (await rt.request("image_list")).data["records"]}
        assert online == {a: True, b: False}
        updated = await rt.request(
            "image_update", {"image_id": b, "updates": {"name": "Renamed", "system_prompt": "x"}}
        )
        assert (updated.data["record"].name, updated.data["record"].system_prompt) == (
            "Renamed",
            "x",
        )
        assert not updated.data["record"].online  # updated in the store, still offline
        live = await rt.request("image_update", {"image_id": a, "updates": {"description": "d"}})
        assert live.data["record"].description == "d"
        assert live.data["record"].online
        assert (await rt.request("image_messages", {"image_id": a})).data["messages"] == []
        deleted = await rt.request("image_delete", {"image_id": a})
        assert deleted.data == {"image_id": a}
        assert a not in rt.engine
        gone = await rt.request("image_get", {"image_id": a})
        assert isinstance(gone.error, ImageNotFoundError)
        assert [r.image_id for r in (await rt.request("image_list")).data["records"]] == [b]

    run(impl, body)


def test_every_agent_command(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        a = await image(rt, "a")
        b = await image(rt, "a")
        c = await image(rt, "c")
        for image_id in (a, b, c):
            await rt.request("image_run", {"image_id": image_id})
        agents = (await rt.request("agent_list", {"container_id": "a"})).data["agents"]
        assert sorted(x["image_id"] for x in agents) == sorted([a, b])
        assert len((await rt.request("agent_list")).data["agents"]) == 3
        got = (await rt.request("agent_get", {"agent_id": f"{c}#1"})).unwrap()
        assert (got["image_id"], got["container_id"], got["state"]) == (c, "c", "idle")
        destroyed = await rt.request("agent_destroy", {"agent_id": f"{c}#1"})
        assert destroyed.data == {"agent_id": f"{c}#1", "image_id": c, "success": True}
        stale = await rt.request("agent_get", {"agent_id": f"{c}#1"})
        assert isinstance(stale.error, engine.AgentNotFoundError)
        all_a = await rt.request("agent_destroy_all", {"container_id": "a"})
        assert all_a.data == {"container_id": "a", "destroyed": 2}
        assert (await rt.request("agent_list")).data["agents"] == []
        ran = await rt.request("image_run", {"image_id": c})
        assert ran.data["agent_id"] == f"{c}#2"  # a new agent of the same image
        assert (await rt.request("agent_destroy_all")).data["destroyed"] == 1

    run(impl, body)


ERRORS: list[tuple[str, Any, type[engine.EngineError]]] = [
    ("nope", {}, UnknownCommandError),
    (42, {}, UnknownCommandError),
    ("container_create", {}, engine.InvalidArgumentError),
    ("container_create", {"container_id": ""}, engine.InvalidArgumentError),
    ("container_create", {"container_id": "default"}, engine.InvalidArgumentError),
    ("container_create", {"container_id": 7}, engine.InvalidArgumentError),
    ("container_create", {"container_id": "x" * 201}, engine.InvalidArgumentError),
    ("container_create", {"container_id": "\ud800"}, engine.InvalidArgumentError),
    ("container_create", {"container_id": "a", "extra": 1}, engine.InvalidArgumentError),
    ("container_create", ["container_id"], engine.InvalidArgumentError),
    ("container_list", {"x": 1}, engine.InvalidArgumentError),
    ("image_create", {"container_id": "ghost"}, engine.TenantNotFoundError),
    ("image_create", {"container_id": "main", "config": {"name": ""}}, engine.InvalidArgumentError),
    (
        "image_create",
        {"container_id": "main", "config": {"colour": "red"}},
        engine.InvalidArgumentError,
    ),
    (
        "image_create",
        {"container_id": "main", "config": {"system_prompt": float("nan")}},
        engine.InvalidArgumentError,
    ),
    (
        "image_create",
        {"container_id": "main", "config": {"system_prompt": "x" * (2 << 20)}},
        engine.InvalidArgumentError,
    ),
    ("image_list", {"container_id": "ghost"}, engine.TenantNotFoundError),
    ("image_get", {"image_id": "img_nothere"}, ImageNotFoundError),
    ("image_get", {"image_id": None}, ImageNotFoundError),
    ("image_get", {"image_id": ["img_x"]}, ImageNotFoundError),
    ("image_run", {"image_id": "img_nothere"}, ImageNotFoundError),
    ("image_stop", {"image_id": "img_nothere"}, ImageNotFoundError),
    ("image_delete", {"image_id": "img_nothere"}, ImageNotFoundError),
    ("image_messages", {"image_id": "img_nothere"}, ImageNotFoundError),
    ("image_update", {"image_id": "img_nothere", "updates": {}}, ImageNotFoundError),
    ("message_send", {"image_id": "img_nothere", "content": "hi"}, ImageNotFoundError),
    ("message_send", {"content": "hi"}, engine.InvalidArgumentError),
    ("message_send", {"agent_id": "img_x#1", "content": "hi"}, engine.AgentNotFoundError),
    ("message_send", {"agent_id": 3, "content": "hi"}, engine.AgentNotFoundError),
    ("agent_get", {"agent_id": "nobody"}, engine.AgentNotFoundError),
    ("agent_interrupt", {"agent_id": "img_x#9"}, engine.AgentNotFoundError),
    ("agent_destroy", {"agent_id": "img_x#9"}, engine.AgentNotFoundError),
    ("agent_list", {"container_id": "ghost"}, engine.TenantNotFoundError),
    ("agent_destroy_all", {"container_id": "ghost"}, engine.TenantNotFoundError),
]


@pytest.mark.parametrize(("command", "data", "error"), ERRORS)
def test_bad_commands_get_typed_error_responses_and_change_nothing(
    impl: str, command: Any, data: Any, error: type[engine.EngineError]
) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        before = (await rt.request("image_list")).data, rt.engine.tenants()
        answer = await rt.request(command, data, request_id="r-1")
        assert isinstance(answer.error, error), answer
        assert not answer.ok
        assert answer.request_id == "r-1"
        assert answer.data == {}
        assert str(answer.error)  # a message
        with pytest.raises(error):
            answer.unwrap()
        assert ((await rt.request("image_list")).data, rt.engine.tenants()) == before
        assert (await rt.request("image_messages", {"image_id": image_id})).data["messages"] == []

    run(impl, body)


def test_message_errors_on_a_known_image(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        for content in ("", None, 12, "x" * (2 << 20), "\udfff"):
            answer = await rt.request("message_send", {"image_id": image_id, "content": content})
            assert isinstance(answer.error, engine.InvalidArgumentError)
        assert not (await rt.request("image_get", {"image_id": image_id})).data["record"].online
        bad = await rt.request("image_update", {"image_id": image_id, "updates": {"name": ""}})
        assert isinstance(bad.error, engine.InvalidArgumentError)
        for timeout in (0, -1, float("nan"), "1", True):
            answer = await rt.request("container_list", timeout=timeout)
            assert isinstance(answer.error, engine.InvalidArgumentError)
        for rid in ("", 5, "x" * 300):
            answer = await rt.request("container_list", request_id=rid)
            assert isinstance(answer.error, engine.InvalidArgumentError)

    run(impl, body)


def test_a_command_past_its_timeout_is_a_typed_error(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        await rt.request("message_send", {"image_id": image_id, "content": "first"})
        # no LLM: the first turn never ends, so the second message waits (postponed)
        answer = await rt.request(
            "message_send", {"image_id": image_id, "content": "second"}, timeout=2.5
        )
        assert isinstance(answer.error, RequestTimeoutError)
        assert answer.error.timeout == 2.5
        assert "message_send" in str(answer.error)
        assert isinstance(answer.error, TimeoutError)
        # stopping refuses what was postponed and ends the turn
        assert (await rt.request("image_stop", {"image_id": image_id})).data["stopped"]
        record = (await rt.request("image_get", {"image_id": image_id})).data["record"]
        assert record.messages == 1

    run(impl, body, timeout=30.0)


def test_the_bus_on_lists_on_any_and_unsubscribe(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        one: list[str] = []
        many: list[str] = []
        every: list[str] = []
        off_one = rt.on("container_created", lambda e: one.append(e.data["container_id"]))
        off_many = rt.on(["image_created", "session_created"], lambda e: many.append(e.type))
        off_every = rt.on_any(lambda e: every.append(e.type))
        await image(rt, "a")
        assert one == ["a"]
        assert many == ["image_created", "session_created"]
        assert every == ["container_created", "image_created", "session_created"]
        off_one()
        off_one()  # twice: nothing
        off_many()
        off_every()
        await image(rt, "b")
        assert one == ["a"]
        assert len(many) == 2
        assert len(every) == 3
        stats = rt.statistics()
        assert stats.handlers == 0
        assert stats.emitted == 6
        assert stats.delivered == 6
        for bad in ("no_such_event", ["text_delta", "nope"], [], 5, [5]):
            with pytest.raises(engine.InvalidArgumentError):
                rt.on(bad, print)
        with pytest.raises(engine.InvalidArgumentError):
            rt.on("text_delta", "not callable")  # type: ignore[arg-type]
        with pytest.raises(engine.InvalidArgumentError):
            rt.on_any(None)  # type: ignore[arg-type]
        assert rt.statistics().handlers == 0

    run(impl, body)


def test_a_raising_handler_breaks_neither_the_runtime_nor_other_handlers(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        after: list[str] = []

        def broken(event: ConversationEvent) -> None:
            raise RuntimeError(f"handler broke on {event.type}")

        rt.on("text_delta", broken)
        rt.on_any(broken)
        rt.on("text_delta", lambda e: after.append(e.data.text))
        image_id = await image(rt)
        done = trio.Event()
        rt.on("message_stop", lambda e: done.set())
        await rt.request("message_send", {"image_id": image_id, "content": "Hello! Who are you?"})
        await done.wait()
        assert "".join(after) == "echo: Hello! Who are you?"
        failures = rt.failures()
        assert len(failures) == rt.statistics().failed > 4
        assert all(isinstance(f.error, RuntimeError) for f in failures)
        assert failures[0].event.type == "container_created"
        assert rt.engine.statistics().effector_failures == 0
        messages = (await rt.request("image_messages", {"image_id": image_id})).data["messages"]
        assert len(messages) == 2

    run(impl, body, llm=replay(timing=False))


def test_handlers_may_subscribe_and_unsubscribe_while_an_event_is_delivered(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        seen: list[str] = []
        offs: list[Callable[[], None]] = []

        def once(event: ConversationEvent) -> None:
            seen.append("once:" + event.type)
            offs[0]()  # itself
            rt.on("image_created", lambda e: seen.append("late:" + e.type))

        offs.append(rt.on_any(once))
        await image(rt)
        await image(rt, "other")
        assert seen == ["once:container_created", "late:image_created", "late:image_created"]

    run(impl, body)


def test_the_public_names_are_exported_once_and_classes_are_final() -> None:
    names = conversations.__all__
    assert len(names) == len(set(names))
    public = [n for n in vars(conversations) if n.isidentifier() and not n.startswith("_")]
    public = [
        n for n in public if n != "annotations" and not inspect.ismodule(getattr(conversations, n))
    ]
    assert sorted(public) == sorted(names)
    for name in names:
        value = getattr(conversations, name)
        if isinstance(value, type) and not issubclass(value, BaseException):
            assert getattr(value, "__final__", False), name
    assert set(conversations.COMMANDS) == {
        "container_create",
        "container_get",
        "container_list",
        "image_create",
        "image_run",
        "image_stop",
        "image_update",
        "image_list",
        "image_get",
        "image_delete",
        "image_messages",
        "message_send",
        "agent_interrupt",
        "agent_get",
        "agent_list",
        "agent_destroy",
        "agent_destroy_all",
    }
    assert issubclass(ImageNotFoundError, engine.AgentNotFoundError)
    assert issubclass(RequestTimeoutError, engine.EngineError)
    assert issubclass(UnknownCommandError, engine.EngineError)


class Hostile(dict):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise RuntimeError("no")

    def keys(self) -> Any:
        raise RuntimeError("no")


def test_hostile_data_is_a_typed_error(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        answer = await rt.request("container_create", Hostile(container_id="x"))
        assert isinstance(answer.error, engine.InvalidArgumentError)
        assert (await rt.request("container_list")).data["container_ids"] == []

    run(impl, body)


def test_a_handler_may_stop_the_image_whose_stream_it_is_watching(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        answers: list[Any] = []
        deltas: list[str] = []
        async with trio.open_nursery() as nursery:

            def stop_now(event: ConversationEvent) -> None:  # inside the drain loop
                deltas.append(event.data.text)
                if len(deltas) == 2:
                    request = rt.request("image_stop", {"image_id": event.context.image_id})
                    nursery.start_soon(lambda: _keep(answers, request))

            rt.on("text_delta", stop_now)
            await rt.request(
                "message_send", {"image_id": image_id, "content": "Hello! Who are you?"}
            )
            while not answers:
                await trio.sleep(0.01)
        assert answers[0].data == {"image_id": image_id, "stopped": True}
        assert deltas == ["echo: ", "Hello! "]  # nothing after the stop
        record = (await rt.request("image_get", {"image_id": image_id})).data["record"]
        assert (record.online, record.messages) == (False, 1)

    run(impl, body, llm=replay())


async def _keep(out: list[Any], request: Any) -> None:
    out.append(await request)


def test_two_stops_at_once_stop_once(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        await rt.request("message_send", {"image_id": image_id, "content": "Hello! Who are you?"})
        unregistered: list[str] = []
        rt.on("agent_unregistered", lambda e: unregistered.append(e.data["image_id"]))
        answers: list[Any] = []
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                request = rt.request("image_stop", {"image_id": image_id})
                nursery.start_soon(_keep, answers, request)
        assert sorted(a.data["stopped"] for a in answers) == [False, True]
        assert rt.engine.status(image_id) is engine.AgentStatus.HIBERNATED
        assert unregistered == [image_id]  # once
        again = await rt.request(
            "message_send", {"image_id": image_id, "content": "Do you remember me?"}
        )
        assert again.ok

    run(impl, body, llm=replay())


def test_an_llm_error_ends_the_turn_and_reaches_the_bus(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        errors: list[ConversationEvent] = []
        failed = trio.Event()
        rt.on("llm_error", errors.append)
        rt.on("llm_error", lambda e: failed.set())
        sent = await rt.request("message_send", {"image_id": image_id, "content": "Unrecorded?"})
        await failed.wait()
        (error,) = errors
        assert error.data.reason == "no_recording"
        assert "Unrecorded?" in error.data.message
        assert error.context.correlation_id == sent.request_id
        assert rt.engine.state(image_id) == "idle"
        messages = (await rt.request("image_messages", {"image_id": image_id})).data["messages"]
        assert [m["content"] for m in messages] == ["Unrecorded?"]

    run(impl, body, llm=replay(timing=False))


def test_an_image_woken_by_another_call_is_run_by_its_next_message(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        await rt.request("image_run", {"image_id": image_id})
        await rt.request("image_stop", {"image_id": image_id})
        assert rt.engine.data(image_id)["stopping"]  # a read of the engine wakes it
        record = (await rt.request("image_get", {"image_id": image_id})).data["record"]
        assert (record.online, record.agent_id) == (False, None)  # woken is not run
        assert (await rt.request("agent_list")).data["agents"] == []
        again = await rt.request("image_run", {"image_id": image_id})
        assert again.data == {"image_id": image_id, "agent_id": f"{image_id}#2", "reused": False}
        sent = await rt.request("message_send", {"image_id": image_id, "content": "hi"})
        assert sent.ok
        assert sent.data["agent_id"] == f"{image_id}#2"

    run(impl, body)


def test_a_message_to_an_image_being_stopped_is_refused(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        await rt.request("message_send", {"image_id": image_id, "content": "Hello! Who are you?"})
        answers: list[Any] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_keep, answers, rt.request("image_stop", {"image_id": image_id}))
            await trio.sleep(0)
            late = await rt.request("message_send", {"image_id": image_id, "content": "late"})
        assert isinstance(late.error, engine.AgentStoppedError)
        assert answers[0].data["stopped"] is True
        record = (await rt.request("image_get", {"image_id": image_id})).data["record"]
        assert (record.online, record.messages) == (False, 1)

    run(impl, body, llm=replay())
