"""engine.services.activities: the review's findings (issue 17), one test each: the service
touches only its own agents (at exit, and when an id is re-used behind its back), a blocked
send never reaches a newer agent of the same id, ``process``'s timeout is a typed error, and
a subscription ends when its agent is terminated. Both hot paths, on ``MockClock``."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import engine
import engine.store
from engine.services.activities import (
    Activity,
    ActivityAgentNotFoundError,
    ActivityError,
    ActivityTimeoutError,
    open_activity_service,
)

OTHER = engine.Machine("other", ["s"], "s", [("s", "e", "s")])


def run(fn: Any) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def test_closing_leaves_an_agent_the_host_spawned_on_a_reused_id(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            async with open_activity_service(rt, name="svc") as svc:
                await svc.create("x", 1)
                rt.terminate("x")  # behind the service's back
                rt.spawn(OTHER, "x", "host data")  # the host's own agent
            assert "x" in rt
            assert rt.data("x") == "host data"

    run(main)


def test_an_agent_spawned_on_the_services_machine_behind_its_back_is_not_adopted(
    impl: str,
) -> None:
    async def main() -> None:
        async with engine.open_runtime(implementation=impl) as rt:
            async with open_activity_service(rt, name="svc") as svc:
                await svc.create("x", 1)
                rt.terminate("x")
                rt.spawn(svc.machine, "x", "host data")
                with pytest.raises(ActivityAgentNotFoundError):
                    await svc.get_state("x")
                assert svc.agent_ids() == []
            assert rt.data("x") == "host data"  # not the service's: left alone

    run(main)


def test_hibernated_and_upgraded_agents_stay_the_services(impl: str) -> None:
    async def main() -> None:
        async with open_activity_service(
            implementation=impl, store=engine.store.MemoryStore()
        ) as svc:
            await svc.create("a", 1)
            svc.register_type("t", lambda state, activity: None)  # an upgrade
            assert (await svc.get_state("a")).state == 1
            svc.runtime.hibernate("a")
            assert (await svc.get_state("a")).state == 1
            assert await svc.terminate("a") == 0
            assert "a" not in svc.runtime

    run(main)


def test_a_blocked_send_never_reaches_a_newer_agent_of_the_same_id(impl: str) -> None:
    async def main() -> None:
        async with open_activity_service(implementation=impl, capacity=1) as svc:
            await svc.create("a", "old")
            svc.runtime.pause("a")
            svc.send_nowait("a", Activity("fill", "STATE_CHANGE", "x"))
            errors: list[BaseException] = []

            async def late() -> None:
                try:
                    await svc.send("a", Activity("late", "STATE_CHANGE", "for the old agent"))
                except ActivityError as exc:
                    errors.append(exc)

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(late)
                    await trio.sleep(0.1)
                    await svc.terminate("a")
                    await svc.create("a", "new agent")
            await svc.runtime.wait_until_idle()
            assert (await svc.get_state("a")).state == "new agent"
            assert len(errors) == 1
            assert isinstance(errors[0], ActivityAgentNotFoundError)

    run(main)


def test_a_blocked_send_goes_through_once_there_is_room(impl: str) -> None:
    async def main() -> None:
        async with open_activity_service(implementation=impl, capacity=1) as svc:
            await svc.create("a", 0)
            svc.runtime.pause("a")
            svc.send_nowait("a", Activity("1", "STATE_CHANGE", 1))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(svc.send, "a", Activity("2", "STATE_CHANGE", 2))
                await trio.sleep(0.5)
                svc.runtime.resume("a")
            await svc.runtime.wait_until_idle()
            assert (await svc.get_state("a")).state == 2

    run(main)


def test_process_past_its_timeout_is_a_typed_error(impl: str) -> None:
    async def main() -> None:
        async with open_activity_service(implementation=impl) as svc:
            await svc.create("a", 0)
            svc.runtime.pause("a")
            with pytest.raises(ActivityTimeoutError) as caught:
                await svc.process("a", Activity("p", "STATE_CHANGE", 5), timeout=1)
            assert isinstance(caught.value, ActivityError)
            assert isinstance(caught.value, TimeoutError)
            assert isinstance(caught.value, trio.TooSlowError)  # as before
            svc.runtime.resume("a")
            await svc.runtime.wait_until_idle()
            assert (await svc.get_state("a")).state == 5  # queued: processed later, as documented

    run(main)


@pytest.mark.parametrize("behind_its_back", [False, True])
def test_a_subscription_ends_when_its_agent_is_terminated(impl: str, behind_its_back: bool) -> None:
    async def main() -> None:
        async with open_activity_service(implementation=impl) as svc:
            await svc.create("a", 0)
            async with svc.subscribe("a") as stream:
                await svc.process("a", Activity("1", "STATE_CHANGE", 1))
                first = await stream.__anext__()
                assert not isinstance(first, engine.Gap)
                assert first.activity.id == "1"
                if behind_its_back:
                    svc.runtime.terminate("a")
                else:
                    await svc.terminate("a")
                got = []
                with trio.fail_after(10):
                    async for record in stream:
                        got.append(record)
                assert got == []
                assert behind_its_back or trio.current_time() == 0  # at once

    run(main)
