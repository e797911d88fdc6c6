"""engine.services.activities: every error case and hostile input, on both hot paths.

Each rejected call raises a typed error from the engine's tree and changes nothing: no
activity queued, no state changed, no type or command registered.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import engine
from engine import AgentStatus, Priority
from engine.services.activities import (
    Activity,
    ActivityAgentExistsError,
    ActivityAgentNotFoundError,
    ActivityError,
    ActivityService,
    InvalidActivityError,
    Outcome,
    ProcessingError,
    UnknownActivityTypeError,
    UnknownCommandError,
    open_activity_service,
)


def run(fn: Callable[[], Awaitable[None]]) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


async def _maybe(value: Any) -> Any:
    return await value if isinstance(value, Awaitable) else value


def test_the_tree() -> None:
    assert issubclass(ActivityError, engine.EngineError)
    assert issubclass(ActivityAgentNotFoundError, engine.AgentNotFoundError)
    assert issubclass(ActivityAgentNotFoundError, KeyError)
    assert issubclass(ActivityAgentExistsError, engine.AgentExistsError)
    assert issubclass(ProcessingError, engine.HandlerError)
    assert issubclass(UnknownActivityTypeError, engine.UnknownEventError)
    assert issubclass(InvalidActivityError, engine.InvalidArgumentError)
    assert issubclass(UnknownCommandError, engine.InvalidArgumentError)
    for cls in (
        ActivityAgentNotFoundError,
        ActivityAgentExistsError,
        ProcessingError,
        UnknownActivityTypeError,
        InvalidActivityError,
        UnknownCommandError,
    ):
        assert issubclass(cls, ActivityError)
    assert str(ActivityAgentNotFoundError("x" * 500)).startswith("no activity agent with id 'xx")
    assert len(str(ActivityAgentNotFoundError("x" * 500))) < 100


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"id": 1, "type": "COMMAND"}, "id must be a str"),
        ({"id": "a", "type": None}, "type must be a str"),
        ({"id": "a", "type": "COMMAND", "priority": 7}, "priority"),
        ({"id": "a", "type": "COMMAND", "priority": -1}, "priority"),
        ({"id": "a", "type": "COMMAND", "priority": True}, "priority"),
        ({"id": "a", "type": "COMMAND", "priority": math.nan}, "priority"),
        ({"id": "a", "type": "COMMAND", "priority": 1.0}, "priority"),
        ({"id": "a", "type": "COMMAND", "priority": "HIGH"}, "priority"),
        ({"id": "a", "type": "COMMAND", "priority": 10**5000}, "priority"),
    ],
)
def test_a_bad_activity_never_exists(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidActivityError, match=problem):
        Activity(**fields)


def test_outcome_results_must_be_a_sequence() -> None:
    for bad in ("abc", b"x", 3, {"a": 1}.keys()):
        with pytest.raises(InvalidActivityError):
            Outcome(results=bad)


def test_unregistered_types_and_commands_queue_nothing(impl: str) -> None:
    def add(state: Any, activity: Activity) -> Outcome:
        return Outcome(state=state + 1)

    async def main() -> None:
        async with open_activity_service(implementation=impl, commands={"add": add}) as service:
            agent = await service.create("a", 0)
            service.runtime.pause("a")  # anything queued would stay visible
            bad: list[tuple[Any, type[Exception]]] = [
                (Activity("t", "NOPE"), UnknownActivityTypeError),
                (Activity("t", "state_change"), UnknownActivityTypeError),  # case matters
                (Activity("c", "COMMAND", {"command": "sub"}), UnknownCommandError),
                (Activity("c", "COMMAND", "add"), InvalidActivityError),
                (Activity("c", "COMMAND", {"command": 3}), InvalidActivityError),
                (Activity("c", "COMMAND", None), InvalidActivityError),
                (42, InvalidActivityError),
                (None, InvalidActivityError),
                ({"id": "m", "type": "STATE_CHANGE", "extra": 1}, InvalidActivityError),
                ({"type": "STATE_CHANGE"}, InvalidActivityError),
                ({"id": "m", "type": "STATE_CHANGE", "priority": 9}, InvalidActivityError),
            ]
            for activity, error in bad:
                with pytest.raises(error):
                    agent.send_nowait(activity)
                with pytest.raises(error):
                    await agent.send(activity)
                with pytest.raises(error):
                    await agent.process(activity)
            assert service.runtime.queued("a") == []
            with pytest.raises(UnknownActivityTypeError) as info:
                agent.send_nowait(Activity("t", "NOPE"))
            assert "activity type 'NOPE' is not registered" in str(info.value)
            service.runtime.resume("a")
            state = await agent.get_state()
            assert (state.state, state.processing.processed) == (0, 0)

    run(main)


def test_not_found_everywhere(impl: str) -> None:
    async def main() -> None:
        async with open_activity_service(implementation=impl) as service:
            ok = Activity("s", "STATE_CHANGE", 1)
            for agent_id in ("ghost", None, ["unhashable"], math.nan):
                with pytest.raises(ActivityAgentNotFoundError):
                    await service.get_state(agent_id)
                with pytest.raises(ActivityAgentNotFoundError):
                    service.send_nowait(agent_id, ok)
                with pytest.raises(ActivityAgentNotFoundError):
                    await service.send(agent_id, ok)
                with pytest.raises(ActivityAgentNotFoundError):
                    await service.process(agent_id, ok)
                with pytest.raises(ActivityAgentNotFoundError):
                    await service.terminate(agent_id)
                with pytest.raises(ActivityAgentNotFoundError):
                    service.agent(agent_id)
                with pytest.raises(engine.AgentNotFoundError):  # (the engine's own class)
                    async with service.subscribe(agent_id):
                        pass
            agent = await service.create("a", 0)
            assert await agent.terminate() == 0
            with pytest.raises(ActivityAgentNotFoundError):
                await agent.get_state()
            with pytest.raises(ActivityAgentNotFoundError):
                await agent.terminate()
            # terminated, or replaced by another machine's agent, behind the service's back
            for replace in (False, True):
                for call in ("send_nowait", "get_state", "terminate"):
                    await service.create("b", 0)
                    service.runtime.terminate("b")
                    if replace:  # (a stranger with the same id and the same event names)
                        other = engine.Machine("other", ["s"], "s", [("s", "STATE_CHANGE", None)])
                        service.runtime.spawn(other, "b", data="stranger")
                    calls = {
                        "send_nowait": lambda: service.send_nowait("b", ok),
                        "get_state": lambda: service.get_state("b"),
                        "terminate": lambda: service.terminate("b"),
                    }
                    with pytest.raises(ActivityAgentNotFoundError):
                        await _maybe(calls[call]())
                    assert service.agent_ids() == []
                    if replace:
                        assert service.runtime.queued("b") == []  # the stranger is untouched
                        assert service.runtime.data("b") == "stranger"
                        service.runtime.terminate("b")

    run(main)


def test_create_refuses_bad_ids_and_taken_ids(impl: str) -> None:
    async def main() -> None:
        async with open_activity_service(implementation=impl) as service:
            await service.create("a", 0)
            service.runtime.spawn(engine.Machine("other", ["s"], "s", []), "foreign")
            for taken in ("a", "foreign"):
                with pytest.raises(ActivityAgentExistsError):
                    await service.create(taken, 1)
            for bad in (None, ["x"], {"a": 1}):
                with pytest.raises(InvalidActivityError):
                    await service.create(bad, 1)
            with pytest.raises(InvalidActivityError):
                await service.create("w", 1, workflow="not callable")  # type: ignore[arg-type]
            assert service.agent_ids() == ["a"]
            assert (await service.get_state("a")).state == 0
            assert "w" not in service.runtime

    run(main)


def test_a_command_handler_that_raises(impl: str) -> None:
    def explode(state: Any, activity: Activity) -> Outcome:
        state["touched"] = False  # reads are fine; it fails before returning
        raise ZeroDivisionError("kaboom")

    async def main() -> None:
        async with open_activity_service(implementation=impl, commands={"x": explode}) as service:
            agent = await service.create("a", {"n": 1})
            before = service.runtime.data("a")
            with pytest.raises(ProcessingError) as info:
                await agent.process(Activity("act-9", "COMMAND", {"command": "x"}))
            error = info.value
            assert isinstance(error.__cause__, ZeroDivisionError)
            assert (error.activity_id, error.agent_id, error.event) == ("act-9", "a", "COMMAND")
            assert "activity 'act-9' (COMMAND) of agent 'a' failed: ZeroDivisionError" in str(error)
            state = await agent.get_state()
            assert state.status is AgentStatus.ERROR
            assert state.error is error
            assert state.state is before  # the same object: no new state was stored
            assert state.processing.failures == 1
            # the message is a dead letter, with the engine's HandlerError around ours
            (letter,) = service.runtime.dead_letters()
            assert letter.reason is engine.DeadLetterReason.HANDLER_FAILED
            assert letter.error.__cause__ is error

    run(main)


def test_handlers_and_workflows_that_misbehave(impl: str) -> None:
    def wrong(state: Any, activity: Activity) -> Any:
        return {"not": "an Outcome"}

    def picky(state: Any, activity: Activity) -> Any:
        if activity.payload == "reject":
            raise ValueError("the workflow refuses")
        return state

    async def main() -> None:
        async with open_activity_service(
            implementation=impl, types={"wrong": wrong}, workflow=picky
        ) as service:
            agent = await service.create("a", "start")
            with pytest.raises(ProcessingError) as info:
                await agent.process(Activity("w", "wrong"))
            assert isinstance(info.value.__cause__, TypeError)
            with pytest.raises(ProcessingError) as info:
                await agent.process(Activity("s", "STATE_CHANGE", "reject"))
            assert isinstance(info.value.__cause__, ValueError)
            state = await agent.get_state()
            assert (state.state, state.status, state.processing.failures) == (
                "start",
                AgentStatus.ERROR,
                2,
            )
            # an event sent past the service, straight to the engine, fails and changes nothing
            service.runtime.send_nowait("a", "STATE_CHANGE", "raw")
            await service.runtime.wait_until_idle()
            assert (await agent.get_state()).state == "start"
            assert isinstance(service.runtime.last_error("a").__cause__, InvalidActivityError)

    run(main)


def test_reentrant_calls_from_handlers(impl: str) -> None:
    service_box: list[ActivityService] = []

    def echo(state: Any, activity: Activity) -> Outcome:
        service = service_box[0]
        if activity.payload["n"] < 3:  # sends to itself, from inside the drain loop
            service.send_nowait(
                "a",
                Activity("again", "COMMAND", {"command": "echo", "n": activity.payload["n"] + 1}),
            )
        return Outcome(state=[*state, activity.payload["n"]])

    def register(state: Any, activity: Activity) -> None:
        service_box[0].register_type("late", lambda s, a: None)  # not from inside a run

    async def main() -> None:
        async with open_activity_service(
            implementation=impl, commands={"echo": echo, "register": register}
        ) as service:
            service_box.append(service)
            agent = await service.create("a", [])
            await agent.send(Activity("e", "COMMAND", {"command": "echo", "n": 0}))
            await service.runtime.wait_until_idle()
            assert (await agent.get_state()).state == [0, 1, 2, 3]
            version = service.machine.version
            with pytest.raises(ProcessingError) as info:
                await agent.process(Activity("r", "COMMAND", {"command": "register"}))
            assert isinstance(info.value.__cause__, engine.RuntimeBusyError)
            assert service.types == ("STATE_CHANGE", "COMMAND")
            assert service.machine.version == version
            assert service.runtime.machine("a") is service.machine
            assert (await agent.get_state()).state == [0, 1, 2, 3]
            service.register_type("late", lambda s, a: None)  # outside a run it works
            assert await agent.process(Activity("l", "late")) == ()

    run(main)


def test_bad_registrations_change_nothing(impl: str) -> None:
    async def main() -> None:
        async with open_activity_service(implementation=impl) as service:
            handler = lambda s, a: None  # noqa: E731
            for name in ("STATE_CHANGE", "COMMAND", "", 3, None):
                with pytest.raises(InvalidActivityError):
                    service.register_type(name, handler)  # type: ignore[arg-type]
            with pytest.raises(InvalidActivityError):
                service.register_type("t", "not callable")  # type: ignore[arg-type]
            service.register_command("c", handler)
            for name in ("c", "", 3):
                with pytest.raises(InvalidActivityError):
                    service.register_command(name, handler)  # type: ignore[arg-type]
            with pytest.raises(InvalidActivityError):
                service.register_command("d", 42)  # type: ignore[arg-type]
            assert service.types == ("STATE_CHANGE", "COMMAND")
            assert service.commands == ("c",)
            assert service.machine.version == 1

    run(main)


def test_bad_service_arguments(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            with pytest.raises(InvalidActivityError):
                async with open_activity_service(rt, metrics=True):
                    pass
            with pytest.raises(InvalidActivityError):
                async with open_activity_service(rt, types=[("t", print)]):  # type: ignore[arg-type]
                    pass
            with pytest.raises(InvalidActivityError):
                async with open_activity_service(rt, name=""):
                    pass
            with pytest.raises(InvalidActivityError):
                async with open_activity_service(rt, workflow=3):  # type: ignore[arg-type]
                    pass
            with pytest.raises(InvalidActivityError):
                async with open_activity_service("not a runtime"):  # type: ignore[arg-type]
                    pass
            async with open_activity_service(rt) as service:
                agent = await service.create("a", 0)
                for timeout in (math.nan, math.inf, "1", True):
                    with pytest.raises(InvalidActivityError):
                        await agent.process(Activity("s", "STATE_CHANGE", 1), timeout=timeout)  # type: ignore[arg-type]
                assert rt.queued("a") == []
                rt.pause("a")
                with pytest.raises(trio.TooSlowError):
                    await agent.process(Activity("s", "STATE_CHANGE", 1), timeout=1.0)

    run(main)


def test_huge_payloads_ride_along_uncopied(impl: str) -> None:
    big = bytes(50 * 2**20)
    huge_int = 10**5000

    async def main() -> None:
        async with open_activity_service(implementation=impl) as service:
            agent = await service.create("a", None)
            await agent.process(Activity("big", "STATE_CHANGE", big, Priority.HIGH))
            assert (await agent.get_state()).state is big
            await agent.process(Activity("int", "STATE_CHANGE", huge_int))
            assert (await agent.get_state()).state == huge_int
            with pytest.raises(UnknownActivityTypeError) as info:
                agent.send_nowait(Activity("x", "t" * 10**6))
            assert len(str(info.value)) < 200

    run(main)


def test_an_agent_terminated_during_its_own_step_or_while_awaited(impl: str) -> None:
    box: list[ActivityService] = []

    def die(state: Any, activity: Activity) -> Outcome:
        box[0].runtime.terminate("a")  # the engine's sync call, from inside the drain loop
        return Outcome(state="after")

    async def main() -> None:
        async with open_activity_service(implementation=impl, commands={"die": die}) as service:
            box.append(service)
            agent = await service.create("a", "before")
            await agent.send(Activity("d", "COMMAND", {"command": "die"}))
            await service.runtime.wait_until_idle()
            with pytest.raises(ActivityAgentNotFoundError):
                await agent.get_state()
            assert service.agent_ids() == []
            (letter,) = service.runtime.dead_letters()  # the step's new state went nowhere
            assert letter.reason is engine.DeadLetterReason.HANDLER_FAILED
            other = await service.create("b", 0)
            service.runtime.pause("b")

            async def terminate_soon() -> None:
                await trio.sleep(1)
                await service.terminate("b")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(terminate_soon)
                with pytest.raises(engine.AgentStoppedError):
                    await other.process(Activity("s", "STATE_CHANGE", 1))

    run(main)
