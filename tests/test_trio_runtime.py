"""The runtime under trio: dispatch task, async sends, requests, timers on trio's clock,
subscriptions, supervision, work and interrupts. Every test runs on both hot paths and on
``trio.testing.MockClock(autojump_threshold=0)``, so time is virtual and exact."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import engine
from engine import (
    AgentStatus,
    DeadLetterReason,
    Machine,
    Priority,
    Reply,
    Send,
    StateTimeout,
    Step,
    Supervision,
    Timer,
    Work,
    open_runtime,
)


def run(fn: Callable[[], Awaitable[None]]) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def counter_machine() -> Machine:
    m = Machine(
        "counter",
        ["zero", "some"],
        "zero",
        [("zero", "add", "some", "first"), ("some", "add", None, "more")],
        events=["add", "get", "boom", "spin"],
        unhandled="ignore",
    )

    @m.handler("*", "get")
    def get(ctx: Any, ev: Any) -> Step:
        return Step(actions=[Reply((ctx.state, ev.payload))])

    @m.handler("*", "boom")
    def boom(ctx: Any, ev: Any) -> None:
        raise ValueError("boom")

    @m.handler("*", "spin")
    def spin(ctx: Any, ev: Any) -> Step:  # keeps its agent busy forever
        return Step(actions=[Send(ctx.agent_id, "spin")])

    return m


def test_dispatch_wakes_on_any_lane_and_parks(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.spawn(counter_machine(), "c")
            for p in Priority:
                rt.send_nowait("c", "add", priority=p)
                await rt.wait_until_idle()
                assert rt.statistics("c").processed == p + 1
            t0 = trio.current_time()
            await trio.sleep(100)  # parked: nothing to do, the clock jumps
            assert trio.current_time() - t0 == 100
            assert rt.state("c") == "some"

    run(main)


def test_busy_runtime_does_not_starve_the_host(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl, batch=256) as rt:
            rt.spawn(counter_machine(), "busy")
            rt.send_nowait("busy", "spin")
            for _ in range(50):  # each checkpoint lets one dispatch batch run
                await trio.lowlevel.checkpoint()
            assert rt.statistics("busy").processed > 256
            rt.terminate("busy")

    run(main)


def test_send_waits_for_room(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.spawn(counter_machine(), "c", capacity=1)
            rt.pause("c")
            rt.send_nowait("c", "add")
            with pytest.raises(trio.WouldBlock):
                rt.send_nowait("c", "add")
            done = trio.Event()

            async def sender() -> None:
                await rt.send("c", "add", "waited")
                done.set()

            async with trio.open_nursery() as n:
                n.start_soon(sender)
                await trio.sleep(10)
                assert not done.is_set()
                rt.resume("c")
                await done.wait()
            await rt.wait_until_idle()
            assert rt.statistics("c").processed == 2

    run(main)


def test_request_and_reply(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            m = counter_machine()
            rt.spawn(m, "c")
            assert await rt.request("c", "get", 7) == ("zero", 7)
            assert await rt.request("c", "add") == ("first",)  # no Reply: the outputs
            assert await rt.request("c", "add", priority=Priority.HIGH) == ("more",)
            with pytest.raises(engine.HandlerError) as info:
                await rt.request("c", "boom")
            assert isinstance(info.value.__cause__, ValueError)
            with pytest.raises(engine.AgentNotFoundError):
                await rt.request("nobody", "get")
            rt.pause("c")
            t0 = trio.current_time()
            with pytest.raises(trio.TooSlowError):
                await rt.request("c", "get", timeout=2.5)
            assert trio.current_time() - t0 == 2.5

            async def ask(results: list[Any]) -> None:
                try:
                    await rt.request("c", "get")
                except engine.AgentStoppedError as exc:
                    results.append(exc)

            results: list[Any] = []
            async with trio.open_nursery() as n:
                n.start_soon(ask, results)
                await trio.sleep(1)
                assert rt.statistics().pending_requests == 1
                rt.terminate("c")
            assert len(results) == 1
            assert rt.statistics().pending_requests == 0

    run(main)


def test_state_timeout_on_trio_clock_and_cancelled_by_a_state_change(impl: str) -> None:
    m = Machine(
        "job",
        ["idle", "running"],
        "idle",
        [
            ("idle", "start", "running"),
            ("running", "finish", "idle"),
            ("running", "expire", "idle", "expired"),
        ],
        events=["start", "finish", "expire"],
    )
    m.handler("idle", "start")(lambda ctx, ev: Step(actions=[StateTimeout(5, "expire")]))
    expired: list[float] = []
    m.handler("running", "expire")(lambda ctx, ev: expired.append(trio.current_time()))

    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.spawn(m, "j")
            t0 = trio.current_time()
            rt.send_nowait("j", "start")
            await trio.sleep(10)
            assert [t - t0 for t in expired] == [5]
            assert rt.state("j") == "idle"
            rt.send_nowait("j", "start")
            await trio.sleep(3)
            rt.send_nowait("j", "finish")  # the state change cancels the timeout
            await trio.sleep(10)
            assert len(expired) == 1
            assert rt.dead_letters() == []
            assert rt.statistics().timers == 0

    run(main)


def test_many_timers_fire_in_deadline_order(impl: str) -> None:
    n = 100_000
    m = Machine("t", ["s"], "s", [], events=["arm", "ring"], unhandled="ignore")
    m.handler("s", "arm")(
        lambda ctx, ev: Step(actions=[Timer("t", ev.payload, "ring", ev.payload)])
    )
    rang: list[Any] = []
    m.handler("s", "ring")(lambda ctx, ev: rang.append((trio.current_time(), ev.payload)))

    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rng = __import__("random").Random(5)
            delays = [rng.randrange(1, 1000) / 10 for _ in range(n)]
            for i, delay in enumerate(delays):
                rt.spawn(m, i)
                rt.send_nowait(i, "arm", delay)
            await rt.wait_until_idle()
            t0 = trio.current_time()
            assert rt.statistics().timers == n
            await trio.sleep(200)
            assert len(rang) == n
            assert [p for _, p in rang] == sorted(delays)
            assert all(abs(t - t0 - p) < 1e-9 for t, p in rang)

    run(main)


def test_subscriptions_never_take_mail(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl, retention=8) as rt:
            m = counter_machine()
            rt.spawn(m, "a")
            rt.spawn(m, "b")
            rt.send_nowait("a", "add")
            await rt.wait_until_idle()
            assert rt.transitions() == []  # nobody subscribed: nothing recorded
            async with rt.subscribe() as everything, rt.subscribe("b") as only_b:
                rt.send_nowait("a", "add")
                rt.send_nowait("b", "add")
                first = await everything.__anext__()
                assert isinstance(first, engine.Transition)
                assert (first.agent_id, first.source, first.event, first.target, first.outputs) == (
                    "a",
                    "some",
                    "add",
                    "some",
                    ("more",),
                )
                second = await everything.__anext__()
                assert (second.seq, second.agent_id) == (first.seq + 1, "b")
                b = await only_b.__anext__()
                assert b == second
                for _ in range(20):  # only_b falls 20 records behind with retention 8
                    rt.send_nowait("b", "add")
                await rt.wait_until_idle()
                gap = await only_b.__anext__()
                assert isinstance(gap, engine.Gap)
                assert gap.missed == 12
                rest = [await only_b.__anext__() for _ in range(8)]
                # every step has a number, recorded or not: "a"'s first step, before anyone
                # subscribed, was record 0
                assert first.seq == 1
                assert [r.seq for r in rest] == list(range(15, 23))
            assert rt.statistics("b").processed == 21  # mail was all processed, none taken
        assert rt.statistics("a").processed == 2

    run(main)


def test_dead_letter_stream(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.spawn(counter_machine(), "c")
            async with rt.watch_dead_letters() as letters:
                rt.send_nowait("c", "boom", 1)
                letter = await letters.__anext__()
                assert (letter.agent_id, letter.payload, letter.reason) == (
                    "c",
                    1,
                    DeadLetterReason.HANDLER_FAILED,
                )

    run(main)


def test_supervised_restart_waits_for_the_backoff(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.spawn(counter_machine(), "c", supervision=Supervision("restart", backoff=4.0))
            rt.send_nowait("c", "add")
            rt.send_nowait("c", "boom")
            t0 = trio.current_time()
            await rt.wait_until_idle()
            assert rt.timers("c") == [("restart",)]
            assert rt.status("c") is engine.AgentStatus.ERROR
            await trio.sleep(3.9)
            assert rt.state("c") == "some"
            await trio.sleep(0.2)
            assert (rt.state("c"), rt.status("c"), rt.timers("c")) == (
                "zero",
                engine.AgentStatus.IDLE,
                [],
            )
            assert rt.statistics("c").restarts == 1
            assert trio.current_time() - t0 == pytest.approx(4.1)

    run(main)


def test_work_done_failed_and_interrupt(impl: str) -> None:
    m = Machine(
        "w",
        ["idle", "working"],
        "idle",
        [],
        events=["go", "done", "failed", "interrupted", "slow"],
        unhandled="ignore",
    )
    log: list[Any] = []

    async def compute(x: int) -> int:
        await trio.sleep(1)
        return x * 2

    async def explode() -> None:
        await trio.sleep(1)
        raise KeyError("lost")

    async def forever() -> None:
        await trio.sleep_forever()

    m.handler("idle", "go")(
        lambda ctx, ev: Step(
            "working",
            actions=[Work(compute, (ev.payload,), done="done"), Work(explode, failed="failed")],
        )
    )
    m.handler("idle", "slow")(lambda ctx, ev: Step("working", actions=[Work(forever)]))
    for name in ("done", "failed", "interrupted"):

        def record(ctx: Any, ev: Any, name: str = name) -> Step:
            log.append((trio.current_time(), name, ev.payload))
            return Step("idle")

        m.handler("*", name)(record)

    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.spawn(m, "w")
            t0 = trio.current_time()
            rt.send_nowait("w", "go", 21)
            await trio.sleep(2)
            # both finish at t0 + 1; trio may run them in either order
            results = {name: (t - t0, payload) for t, name, payload in log}
            assert results["done"] == (1, 42)
            assert results["failed"][0] == 1
            assert isinstance(results["failed"][1], KeyError)
            rt.send_nowait("w", "slow")
            await trio.sleep(5)
            assert rt.interrupt("w") == 1
            await rt.wait_until_idle()
            assert log[-1][1:] == ("interrupted", None)
            assert rt.interrupt("w") == 0  # nothing left to cancel; the event still goes
            with pytest.raises(engine.UnknownEventError):
                rt.interrupt("w", "no-such-event")

    run(main)


def test_start_work_from_a_plugin(impl: str) -> None:
    """``Runtime.start_work`` / ``WorkSink.start_work``: work started from outside a handler
    belongs to the agent as if its handler had returned it (done delivered, interrupt and
    terminate cancel it)."""
    from engine.plugin_spec import WorkSink

    m = Machine(
        "w", ["idle"], "idle", [], events=["done", "interrupted", "stop"], unhandled="ignore"
    )
    log: list[Any] = []
    for name in ("done", "interrupted"):
        m.handler("*", name)(lambda ctx, ev, name=name: log.append((name, ev.payload)))
    m.handler("*", "stop")(lambda ctx, ev: 1 / 0)
    cancelled: list[str] = []

    async def forever(tag: str) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(tag)

    async def compute() -> int:
        await trio.sleep(1)
        return 7

    sinks: list[Any] = []

    class Grab:
        async def run(self, sink: Any) -> None:
            sinks.append(sink)
            await trio.sleep_forever()

    async def main() -> None:
        async with open_runtime(
            implementation=impl, receptors=[Grab()], supervision=Supervision("stop")
        ) as rt:
            rt.spawn(m, "a")
            rt.spawn(m, "b")
            await trio.sleep(0.1)
            (sink,) = sinks
            assert isinstance(sink, WorkSink)
            sink.start_work("a", Work(compute, done="done"))
            sink.start_work("a", Work(forever, ("a",)))
            rt.start_work("b", Work(forever, ("b",)))
            await trio.sleep(2)
            assert log == [("done", 7)]
            assert rt.interrupt("a") == 1  # only the one still running
            await rt.wait_until_idle()
            await trio.sleep(1)  # (virtual) the cancelled task unwinds
            assert cancelled == ["a"]
            assert log[-1] == ("interrupted", None)
            rt.terminate("b")
            await trio.sleep(1)  # (virtual) the cancelled task unwinds
            assert cancelled == ["a", "b"]
            with pytest.raises(engine.AgentNotFoundError):
                sink.start_work("b", Work(compute))
            with pytest.raises(engine.InvalidArgumentError):
                rt.start_work("a", compute)  # type: ignore[arg-type]
            rt.send_nowait("a", "stop")  # fails: supervision stops it
            await rt.wait_until_idle()
            with pytest.raises(engine.AgentStoppedError):
                rt.start_work("a", Work(compute))

    run(main)
    rt = engine.Runtime()
    rt.spawn(m, "a")
    with pytest.raises(engine.RuntimeNotRunningError):
        rt.start_work("a", Work(compute))


def test_runtime_owed_messages_wait_for_room(impl: str) -> None:
    """``interrupted`` and a work's ``done`` owed to an agent whose bounded mailbox is full
    wait for room (after what was queued) instead of raising or dead-lettering;
    the work is cancelled at once either way."""
    m = Machine(
        "w", ["idle"], "idle", [], events=["x", "done", "interrupted"], unhandled="ignore"
    )
    log: list[Any] = []
    for name in ("x", "done", "interrupted"):
        m.handler("*", name)(lambda ctx, ev, name=name: log.append(name))
    cancelled: list[str] = []

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append("forever")

    async def quick() -> int:
        await trio.sleep(1)
        return 1

    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.spawn(m, "a", capacity=2)
            rt.pause("a")
            rt.send_nowait("a", "x")
            rt.send_nowait("a", "x")
            rt.start_work("a", Work(forever))
            rt.start_work("a", Work(quick, done="done"))
            await trio.sleep(2)  # quick is done; its `done` waits for room
            assert rt.interrupt("a") == 1  # cancels forever; `interrupted` waits for room
            await trio.sleep(1)
            assert cancelled == ["forever"]
            assert rt.statistics("a").depth == 2
            assert rt.dead_letters() == []
            rt.resume("a")
            await rt.wait_until_idle()
            await trio.sleep(1)
            await rt.wait_until_idle()
            # after what was queued; then by lane: `interrupted` is HIGH, `done` NORMAL
            assert log == ["x", "x", "interrupted", "done"]
            assert rt.dead_letters() == []
            # the agent gone while its message waits: a dead letter, never an error
            rt.pause("a")
            rt.send_nowait("a", "x")
            rt.send_nowait("a", "x")
            rt.start_work("a", Work(forever))
            rt.interrupt("a")
            rt.terminate("a")
            rt.spawn(m, "other")
            rt.send_nowait("other", "x")  # progress: the waiter looks again
            await rt.wait_until_idle()
            letters = [(d.event, d.reason) for d in rt.dead_letters()]
            assert ("interrupted", engine.DeadLetterReason.UNDELIVERABLE) in letters

    run(main)


def test_timers_of_an_agent_restored_into_a_running_runtime_fire(impl: str) -> None:
    """Restoring (or importing) an agent with a timer into a runtime whose dispatch task is
    parked with no deadline wakes that task, so the timer fires on time (it never fired)."""
    from engine.store import capture, restore

    m = Machine("t", ["idle", "rang"], "idle", [("idle", "ring", "rang")], events=["arm", "ring"])
    m.handler("idle", "arm")(lambda ctx, ev: Step(actions=[Timer("bell", 1.0, "ring")]))
    source = engine.Runtime(implementation=impl)
    source.spawn(m, "a")
    source.send_nowait("a", "arm")
    source.run_until_idle()
    (snapshot,) = capture(source, ["a"])

    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            await trio.sleep(5)  # parked, nothing due
            restore(rt, [snapshot], [m])
            await trio.sleep(2)
            assert rt.state("a") == "rang"

    run(main)


def test_portal_from_another_thread(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            rt.spawn(counter_machine(), "c")
            portal = rt.portal()

            def host_thread() -> Any:
                portal.send_nowait("c", "add")
                portal.send("c", "add")
                return portal.request("c", "get", threading.current_thread().name)

            answer = await trio.to_thread.run_sync(host_thread)
            assert answer[0] == "some"
            assert answer[1] != threading.current_thread().name

    trio.run(main)  # a real clock: the other thread runs in real time


def test_runtime_errors_propagate(impl: str, light: Machine) -> None:
    def sink(batch: engine.OutputBatch) -> None:
        raise RuntimeError("effector down")

    async def main() -> None:
        async with open_runtime(implementation=impl, on_output=sink) as rt:
            rt.spawn(light, 1)
            rt.send_nowait(1, "tick")
            await trio.sleep_forever()

    with pytest.raises(RuntimeError, match="effector down"):
        run(main)


def test_async_api_needs_open_runtime(light: Machine) -> None:
    rt = engine.Runtime()
    rt.spawn(light, 1)
    with pytest.raises(engine.RuntimeNotRunningError):
        trio.run(rt.request, 1, "tick")
    with pytest.raises(engine.RuntimeNotRunningError):
        rt.interrupt(1)


def test_fault_every_tenth_message_loses_nothing(impl: str) -> None:
    n = 100_000
    m = Machine("f", ["s"], "s", [("s", "msg", None, "ok")], unhandled="error")

    @m.handler("s", "msg")
    def maybe_fail(ctx: Any, ev: Any) -> None:
        if ev.payload % 10 == 9:
            raise ValueError(ev.payload)

    async def main() -> None:
        outputs: list[Any] = []
        async with open_runtime(implementation=impl, on_output=outputs.extend) as rt:
            for a in range(100):
                rt.spawn(m, a)
            rt.send_many([i % 100 for i in range(n)], ["msg"] * n, payloads=list(range(n)))
            await rt.wait_until_idle()
            dead = rt.dead_letters()
            stats = rt.statistics()
        assert stats.processed == len(outputs) == n - n // 10
        assert stats.failed == len(dead) == n // 10
        assert all(isinstance(d.error, engine.HandlerError) for d in dead)
        assert sorted(d.payload for d in dead) == list(range(9, n, 10))

    run(main)


def test_status_stamps_use_trio_time(impl: str) -> None:
    async def main() -> None:
        async with open_runtime(implementation=impl) as rt:
            await trio.sleep(5)
            rt.spawn(counter_machine(), "c")
            assert rt.status_since("c") == 5
            await trio.sleep(5)
            rt.send_nowait("c", "boom")
            await rt.wait_until_idle()
            assert (rt.status("c"), rt.status_since("c")) == (AgentStatus.ERROR, 10)

    run(main)
