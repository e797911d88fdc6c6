"""engine.services.conversations: the review's findings (issue 17), one test each: closing
never hangs, a failing store never ends the runtime, a timed-out message is withdrawn, a
stale stream never finishes a newer turn, one run per image, updates and stops that time
out leave nothing half done, store writes come before memory, and stray outputs are refused.
Every test runs on both hot paths on ``MockClock``."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing

import engine
import engine.store
from engine import Priority
from engine.services.conversations import (
    ConversationRuntime,
    RequestTimeoutError,
    open_conversations,
)


@attrs.frozen
class Payload:
    request_id: str | None
    text: str = ""
    stop_reason: str = "end_turn"


class ManualLLM:
    """Keeps each request; the test sends the stream events itself (``event``)."""

    def __init__(self) -> None:
        self.sink: Any = None
        self.ready = trio.Event()
        self.asked: list[tuple[Any, dict[str, Any]]] = []

    async def run(self, sink: Any) -> None:
        self.sink = sink
        self.ready.set()
        await trio.sleep_forever()

    def deliver(self, batch: Any) -> None:
        for agent_id, out in batch:
            if type(out) is tuple and out[0] == "llm":
                self.asked.append((agent_id, out[1]))

    def event(self, agent_id: str, kind: str, request: Any, text: str = "", **kw: Any) -> None:
        self.sink.send_nowait(agent_id, kind, Payload(request, text), **kw)

    def finish(self, agent_id: str, request: Any, text: str) -> None:
        self.event(agent_id, "message_start", request)
        self.event(agent_id, "text_delta", request, text)
        self.event(agent_id, "message_stop", request, text)


class EchoLLM(ManualLLM):
    """Answers every request at once with ``echo: <last message>``."""

    def deliver(self, batch: Any) -> None:
        for agent_id, out in batch:
            if type(out) is tuple and out[0] == "llm":
                self.asked.append((agent_id, out[1]))
                text = "echo: " + out[1]["messages"][-1]["content"]
                self.finish(agent_id, out[1].get("id"), text)


class FlakyStore(engine.store.MemoryStore):
    fail = False

    def write(self, rows: Any, *args: Any, **kwargs: Any) -> Any:
        if self.fail:
            raise engine.StoreError("write", OSError(28, "No space left on device"))
        return super().write(rows, *args, **kwargs)


def run(impl: str, body: Any, llm: ManualLLM | None = None, **kwargs: Any) -> None:
    async def main() -> None:
        async with open_conversations(implementation=impl, llm=llm, **kwargs) as rt:
            if llm is not None:
                await llm.ready.wait()
            await body(rt)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def image(rt: ConversationRuntime, container: str = "main") -> str:
    await rt.request("container_create", {"container_id": container})
    answer = await rt.request("image_create", {"container_id": container, "config": {}})
    image_id: str = answer.unwrap()["record"].image_id
    return image_id


async def history(rt: ConversationRuntime, image_id: str) -> list[tuple[str, str]]:
    answer = (await rt.request("image_messages", {"image_id": image_id})).unwrap()
    return [(m["role"], m["content"]) for m in answer["messages"]]


# -- 1. closing never hangs --------------------------------------------------------------


# (deadlines are set once inside: entering reads the store in a thread, and MockClock's
# autojump would reach a deadline set before that at once)


@pytest.mark.parametrize("paused", [False, True])
def test_an_outer_cancel_ends_open_conversations_promptly(impl: str, paused: bool) -> None:
    async def main() -> None:
        with trio.CancelScope() as watchdog, trio.CancelScope() as outer:
            async with open_conversations(implementation=impl, shutdown_timeout=5) as rt:
                watchdog.deadline = trio.current_time() + 30  # a hang would reach it
                outer.deadline = trio.current_time() + 1
                image_id = await image(rt)
                await rt.request("image_run", {"image_id": image_id})
                if paused:
                    rt.engine.pause(image_id)
                await trio.sleep_forever()
        assert not watchdog.cancelled_caught
        assert outer.cancelled_caught
        assert trio.current_time() < 1.5

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_closing_with_an_image_that_cannot_answer_takes_at_most_the_shutdown_timeout(
    impl: str,
) -> None:
    async def main() -> None:
        with trio.CancelScope() as watchdog:
            async with open_conversations(implementation=impl, shutdown_timeout=2) as rt:
                watchdog.deadline = trio.current_time() + 30
                image_id = await image(rt)
                await rt.request("image_run", {"image_id": image_id})
                rt.engine.pause(image_id)
                start = trio.current_time()
        assert not watchdog.cancelled_caught
        assert trio.current_time() - start <= 2.5

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# -- 2. a failing store never ends the runtime --------------------------------------------


def test_a_store_error_in_the_saver_is_recorded_and_retried(impl: str) -> None:
    store = FlakyStore()

    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        store.fail = True
        sent = await rt.request("message_send", {"image_id": image_id, "content": "x"})
        assert sent.ok
        await trio.sleep(1)  # the saver ran and failed: the runtime still runs
        failures = rt.save_failures()
        assert failures
        assert isinstance(failures[0].error, engine.StoreError)
        assert failures[0].image_id == image_id
        assert rt.saves_failed >= 1
        store.fail = False
        await rt.request("message_send", {"image_id": image_id, "content": "y"})
        await trio.sleep(1)
        (record,) = store.latest([engine.store.agent_key(image_id)])
        data = engine.store.decode(record.record, None, agent=image_id).data
        assert [m["content"] for m in data["messages"]] == ["x", "echo: x", "y", "echo: y"]

    run(impl, body, EchoLLM(), store=store)


# -- 3. a timed-out message is withdrawn ---------------------------------------------------


def test_a_timed_out_message_is_withdrawn_not_delivered_later(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        await rt.request("message_send", {"image_id": image_id, "content": "first"})
        for n in range(3):
            answer = await rt.request(
                "message_send", {"image_id": image_id, "content": f"retry {n}"}, timeout=1
            )
            assert isinstance(answer.error, RequestTimeoutError)
        await rt.request("agent_interrupt", {"image_id": image_id})
        await trio.sleep(1)
        assert await history(rt, image_id) == [("user", "first")]
        assert rt.engine.state(image_id) == "idle"

    run(impl, body)


def test_messages_waiting_for_a_turn_are_bounded(impl: str) -> None:
    from engine.services.conversations import MAX_WAITING

    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        await rt.request("message_send", {"image_id": image_id, "content": "first"})
        answers: list[Any] = []

        async def send(n: int) -> None:
            answers.append(
                await rt.request("message_send", {"image_id": image_id, "content": f"m{n}"})
            )

        with trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                for n in range(MAX_WAITING + 3):
                    nursery.start_soon(send, n)
        busy = [a for a in answers if isinstance(a.error, engine.AgentBusyError)]
        assert len(busy) == 3
        assert len(rt.engine.postponed(image_id)) <= MAX_WAITING

    run(impl, body, timeout=60.0)


# -- 4. a stale stream never finishes a newer turn ----------------------------------------


def test_leftover_events_of_an_interrupted_stream_are_ignored(impl: str) -> None:
    llm = ManualLLM()

    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        await rt.request("message_send", {"image_id": image_id, "content": "A"})
        await rt.engine.wait_until_idle()
        first = llm.asked[0][1]["id"]
        assert first == f"{image_id}:1"
        llm.event(image_id, "message_start", first)
        await rt.engine.wait_until_idle()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rt.request, "message_send", {"image_id": image_id, "content": "B"})
            await rt.engine.wait_until_idle()  # B waits for A's turn
            rt.engine.pause(image_id)  # the drain loop is behind: A's end is queued ...
            llm.event(image_id, "text_delta", first, "x")
            llm.event(image_id, "message_stop", first, "answer to A")
            await rt.request("agent_interrupt", {"image_id": image_id})  # ... as A is interrupted
            rt.engine.resume(image_id)
        await rt.engine.wait_until_idle()
        assert [a[1]["messages"][-1]["content"] for a in llm.asked] == ["A", "B"]
        assert rt.engine.state(image_id) == "waiting"  # B's turn goes on
        assert await history(rt, image_id) == [("user", "A"), ("user", "B")]
        second = llm.asked[1][1]["id"]
        assert second == f"{image_id}:2"
        llm.finish(image_id, second, "answer to B")
        await rt.engine.wait_until_idle()
        assert (await history(rt, image_id))[-1] == ("assistant", "answer to B")

    run(impl, body, llm)


def test_a_late_interrupt_does_not_end_a_newer_turn(impl: str) -> None:
    llm = ManualLLM()

    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        await rt.request("message_send", {"image_id": image_id, "content": "A"})
        await rt.engine.wait_until_idle()
        first = llm.asked[0][1]["id"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rt.request, "message_send", {"image_id": image_id, "content": "B"})
            await rt.engine.wait_until_idle()
            rt.engine.pause(image_id)
            # A's end overtakes the interrupt (a stream at CRITICAL priority): B starts first
            llm.event(image_id, "message_stop", first, "answer to A", priority=Priority.CRITICAL)
            await rt.request("agent_interrupt", {"image_id": image_id})
            rt.engine.resume(image_id)
        await rt.engine.wait_until_idle()
        assert await history(rt, image_id) == [
            ("user", "A"),
            ("assistant", "answer to A"),
            ("user", "B"),
        ]
        assert rt.engine.state(image_id) == "waiting"  # the interrupt of A left B alone

    run(impl, body, llm)


# -- 5. one run at a time -----------------------------------------------------------------


def test_two_runs_at_once_make_one_agent(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        registered: list[str] = []
        rt.on("agent_registered", lambda e: registered.append(e.data["agent_id"]))
        answers: list[Any] = []

        async def go() -> None:
            answers.append(await rt.request("image_run", {"image_id": image_id}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(go)
            nursery.start_soon(go)
        assert sorted((a.data["agent_id"], a.data["reused"]) for a in answers) == [
            (f"{image_id}#1", False),
            (f"{image_id}#1", True),
        ]
        assert registered == [f"{image_id}#1"]

    run(impl, body)


# -- 6. and 7. timeouts leave nothing half done ------------------------------------------


def test_a_timed_out_update_changes_nothing(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        seen: list[Any] = []
        rt.on("image_updated", seen.append)
        rt.engine.wake(image_id)  # woken, not run: offline
        rt.engine.pause(image_id)  # it cannot take the update in time
        answer = await rt.request(
            "image_update", {"image_id": image_id, "updates": {"name": "new"}}, timeout=1
        )
        assert isinstance(answer.error, RequestTimeoutError)
        rt.engine.resume(image_id)
        await rt.engine.wait_until_idle()
        record = (await rt.request("image_get", {"image_id": image_id})).unwrap()["record"]
        assert (record.name, record.online, record.agent_id, seen) == ("Assistant", False, None, [])
        assert (await rt.request("agent_list")).data["agents"] == []

    run(impl, body)


def test_image_stop_honours_its_timeout_and_stops_nothing_half(impl: str) -> None:
    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        await rt.request("image_run", {"image_id": image_id})
        rt.engine.pause(image_id)
        answer = await rt.request("image_stop", {"image_id": image_id}, timeout=0.5)
        assert isinstance(answer.error, RequestTimeoutError)
        assert trio.current_time() < 1.0
        rt.engine.resume(image_id)
        await rt.engine.wait_until_idle()
        record = (await rt.request("image_get", {"image_id": image_id})).unwrap()["record"]
        assert (record.online, record.agent_id) == (True, f"{image_id}#1")
        sent = await rt.request("message_send", {"image_id": image_id, "content": "hi"})
        assert sent.ok
        assert sent.data["agent_id"] == f"{image_id}#1"
        assert (await rt.request("image_stop", {"image_id": image_id})).data["stopped"]

    run(impl, body)


# -- 13. the store first, then memory ----------------------------------------------------


def test_failed_store_writes_change_nothing(impl: str) -> None:
    store = FlakyStore()

    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        store.fail = True
        created = await rt.request("container_create", {"container_id": "other"})
        assert isinstance(created.error, engine.StoreError)
        assert rt.container_ids() == ["main"]
        made = await rt.request("image_create", {"container_id": "main", "config": {}})
        assert isinstance(made.error, engine.StoreError)
        assert [r.image_id for r in (await rt.request("image_list")).data["records"]] == [image_id]
        deleted = await rt.request("image_delete", {"image_id": image_id})
        assert isinstance(deleted.error, engine.StoreError)
        store.fail = False
        record = (await rt.request("image_get", {"image_id": image_id})).unwrap()["record"]
        assert record.name == "Assistant"
        assert (await rt.request("image_delete", {"image_id": image_id})).ok
        assert (await rt.request("image_list")).data["records"] == []

    run(impl, body, store=store)

    async def reopen(rt: ConversationRuntime) -> None:
        assert rt.container_ids() == ["main"]

    run(impl, reopen, store=store)


# -- 15. stray outputs --------------------------------------------------------------------


def test_outputs_in_the_layers_shape_from_other_agents_are_refused(impl: str) -> None:
    stray = engine.Machine("stray", ["s"], "s", [], events=["go"])

    @stray.handler("s", "go")
    def go(agent: Any, event: Any) -> engine.Step:
        return engine.Step(
            outputs=[("conversations", "junk"), ("conversations:save", "img_nope"), ("x", 1)]
        )

    async def body(rt: ConversationRuntime) -> None:
        image_id = await image(rt)
        rt.engine.spawn(stray, "stray")
        rt.engine.send_nowait("stray", "go")
        await rt.engine.wait_until_idle()
        assert len(rt.rejected()) == 2
        assert (await rt.request("message_send", {"image_id": image_id, "content": "hi"})).ok

    run(impl, body)


def test_an_image_that_cannot_be_written_at_exit_is_reported_after_the_others_stop(
    impl: str,
) -> None:
    store = FlakyStore()
    kept: list[ConversationRuntime] = []

    async def body(rt: ConversationRuntime) -> None:
        kept.append(rt)
        for _ in range(2):
            image_id = await image(rt)
            await rt.request("image_run", {"image_id": image_id})
        store.fail = True

    with pytest.raises(engine.StoreError):
        run(impl, body, store=store)
    assert len(kept[0].save_failures()) == 2  # both were tried
