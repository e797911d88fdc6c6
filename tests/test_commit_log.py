"""The commit log (durability "log"): what a commit holds, what recovery brings back, the
output step numbers effectors deduplicate on, and the trio task behind ``open_runtime``.
Every test runs on both hot paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import engine
import engine.store as store

counter = engine.Machine(
    "counter",
    ["even", "odd"],
    "even",
    [("even", "inc", "odd", "now odd"), ("odd", "inc", "even", "now even")],
    events=["inc", "tick"],
    unhandled="ignore",
)


@counter.handler("*", "inc")
def _inc(agent: engine.AgentContext, event: engine.Event) -> None:
    agent.data["seen"].append(event.payload)


def _fresh(impl: str, s: store.Store) -> engine.Runtime:
    rt = engine.Runtime(implementation=impl)
    report = store.load(rt, s, [counter])
    assert not report.failed
    return rt


def _seen(rt: engine.Runtime) -> dict[Any, tuple[str, list[Any], list[Any]]]:
    return {
        a: (rt.state(a), list(rt.data(a)["seen"]), [p for _, _, p in rt.queued(a)])
        for a in sorted(rt.agent_ids())
    }


def test_a_commit_holds_every_changed_agent_and_recovery_brings_them_back(impl: str) -> None:
    s = store.MemoryStore()
    rt = engine.Runtime(implementation=impl)
    log = store.CommitLog(rt, s)
    for i in range(4):
        rt.spawn(counter, i, {"seen": []})
    assert log.commit() == 4  # spawned agents are changes
    assert log.commit() == 0  # nothing changed since
    rt.send_nowait(1, "inc", "a")
    rt.run_until_idle()
    rt.pause(2)
    rt.send_nowait(2, "inc", "b")  # queued (paused)
    assert log.commit() == 2  # agents 1 and 2 only
    assert log.durable == log.captured == 2  # (an empty commit is not one)
    assert _seen(_fresh(impl, s)) == _seen(rt)
    again = _fresh(impl, s)
    assert again.paused(2)
    assert again.queued(2) == [(engine.Priority.NORMAL, "inc", "b")]


def test_terminated_agents_are_tombstoned_and_compaction_drops_them(impl: str) -> None:
    s = store.MemoryStore()
    rt = engine.Runtime(implementation=impl)
    log = store.CommitLog(rt, s, compact_every=2)
    for i in range(3):
        rt.spawn(counter, i, {"seen": []})
    log.commit()
    rt.terminate(1)
    rt.send_nowait(0, "inc", 1)
    rt.run_until_idle()
    log.commit()  # the second commit: compaction runs after it
    assert sorted(_fresh(impl, s).agent_ids()) == [0, 2]
    assert s.history(store.agent_key(1)) == []  # compacted away with its tombstone
    assert len(s.history(store.agent_key(0))) == 1
    rt.spawn(counter, 1, {"seen": ["reborn"]})  # the id comes back
    log.commit()
    assert _fresh(impl, s).data(1) == {"seen": ["reborn"]}


def test_a_value_that_cannot_be_encoded_fails_the_commit_and_keeps_the_changes(
    impl: str,
) -> None:
    s = store.MemoryStore()
    rt = engine.Runtime(implementation=impl)
    log = store.CommitLog(rt, s)
    rt.spawn(counter, "ok", {"seen": []})
    rt.spawn(counter, "bad", {"seen": [object()]})
    with pytest.raises(store.CodecError, match="bad"):
        log.commit()
    assert s.latest() == []  # nothing half-written
    rt.data("bad")["seen"].clear()
    assert log.commit() == 2  # the marks were kept: both are written now
    assert sorted(_fresh(impl, s).agent_ids()) == ["bad", "ok"]


def test_commits_are_written_in_order(impl: str) -> None:
    rt = engine.Runtime(implementation=impl)
    log = store.CommitLog(rt, store.MemoryStore())
    rt.spawn(counter, 0, {"seen": []})
    first = log.capture()
    rt.send_nowait(0, "inc", 1)
    second = log.capture()
    assert first is not None
    assert second is not None
    with pytest.raises(engine.InvalidArgumentError, match="out of order"):
        log.write(second)
    log.write(first)
    log.write(second)
    assert log.durable == 2
    with pytest.raises(engine.InvalidArgumentError, match="already has a commit log"):
        store.CommitLog(rt, store.MemoryStore())
    with pytest.raises(engine.InvalidArgumentError):
        store.CommitLog(engine.Runtime(), store.MemoryStore(), compact_every=-1)


def test_steps_taken_again_after_recovery_emit_the_same_output_keys(impl: str) -> None:
    """The at-least-once window: steps after the last commit are lost with the process and
    taken again after recovery; their outputs carry the same (agent, step, k) keys."""
    first: list[tuple[Any, int, int, Any]] = []
    rt = engine.Runtime(implementation=impl, on_output=lambda b: first.extend(b.sequence()))
    s = store.MemoryStore()
    log = store.CommitLog(rt, s)
    for i in range(3):
        rt.spawn(counter, i, {"seen": []})
    rt.send_many([0, 1, 0], ["inc"] * 3, payloads=[1, 2, 3])
    rt.run_until_idle()
    log.commit()
    committed = len(first)
    rt.send_many([0, 2, 2], ["inc"] * 3, payloads=[4, 5, 6])
    log.commit()  # accepted and committed, not yet processed
    rt.run_until_idle()  # ... processed, then the process "dies" before the next commit
    again: list[tuple[Any, int, int, Any]] = []
    recovered = engine.Runtime(implementation=impl, on_output=lambda b: again.extend(b.sequence()))
    store.load(recovered, s, [counter])
    recovered.run_until_idle()
    assert again == first[committed:]  # the same keys, the same outputs
    assert [key[:3] for key in first] == [  # an agent's turn takes both of its messages
        (0, 1, 0), (0, 2, 0), (1, 1, 0), (0, 3, 0), (2, 1, 0), (2, 2, 0)
    ]
    assert _seen(recovered) == _seen(rt)


def test_output_steps_count_each_agents_steps_and_outputs_within_one(impl: str) -> None:
    multi = engine.Machine("multi", ["s"], "s", [("s", "go", "s")])

    @multi.handler("s", "go")
    def go(agent: engine.AgentContext, event: engine.Event) -> engine.Step:
        return engine.Step(outputs=["x", "y"])

    batches: list[engine.OutputBatch] = []
    rt = engine.Runtime(implementation=impl, on_output=batches.append)
    rt.spawn(multi, "m")
    rt.send_many(["m", "m"], ["go", "go"])
    rt.run_until_idle()
    (batch,) = batches
    assert batch.steps.tolist() == [1, 1, 2, 2]
    assert list(batch.sequence()) == [("m", 1, 0, "x"), ("m", 1, 1, "y"), ("m", 2, 0, "x"),
                                      ("m", 2, 1, "y")]


# -- under trio ----------------------------------------------------------------------------


def test_an_awaited_send_returns_once_committed(impl: str, tmp_path: Path) -> None:
    s = store.SQLiteStore(tmp_path / "log.db")

    async def main() -> None:
        async with engine.open_runtime(store=s, durability="log", implementation=impl) as rt:
            rt.spawn(counter, "a", {"seen": []})
            rt.pause("a")
            await rt.send("a", "inc", 1)
            assert _fresh(impl, s).queued("a") == [(engine.Priority.NORMAL, "inc", 1)]
            rt.send_nowait("a", "inc", 2)
            rt.terminate("a")
            rt.spawn(counter, "b", {"seen": []})
            rt.send_many(["b", "b"], ["inc", "inc"], payloads=[3, 4])
            await rt.flush()
            ((who, (_, done, queued)),) = _seen(_fresh(impl, s)).items()
            assert who == "b"
            assert done + queued == [3, 4]  # each processed or still queued at the commit
            rt.send_nowait("b", "inc", 5)
        # the last round ran at exit, after the dispatch task stopped (with 5 still queued)
        assert _seen(_fresh(impl, s)) == _seen(rt) == {"b": ("even", [3, 4], [5])}

    trio.run(main)
    s.close()


def test_open_runtime_restores_from_its_store_and_keeps_committing(
    impl: str, tmp_path: Path
) -> None:
    path = tmp_path / "log.db"

    async def first() -> None:
        async with engine.open_runtime(
            store=store.SQLiteStore(path), durability="log", implementation=impl
        ) as rt:
            for i in range(3):
                rt.spawn(counter, i, {"seen": []})
            rt.pause(2)
            for i in range(3):
                await rt.send(i, "inc", f"m{i}")

    async def second() -> None:
        s = store.SQLiteStore(path)
        async with engine.open_runtime(
            store=s, durability="log", restore=[counter], implementation=impl
        ) as rt:
            assert rt.recovery.restored == [0, 1, 2]
            assert rt.recovery.failed == []
            assert rt.queued(2) == [(engine.Priority.NORMAL, "inc", "m2")]
            records_before = len(s.history(store.agent_key(0)))
            rt.resume(2)
            await rt.wait_until_idle()
            await rt.flush()
            assert len(s.history(store.agent_key(0))) == records_before  # not rewritten
            assert _fresh(impl, s).data(2) == {"seen": ["m2"]}

    trio.run(first)
    trio.run(second)


def test_commit_rounds_gather_for_the_interval_unless_someone_waits(impl: str) -> None:
    s = store.MemoryStore()

    def records() -> int:
        return len(s.history(store.agent_key("a")))

    async def main() -> None:  # on the real clock: commits are written in worker threads
        async with engine.open_runtime(
            store=s, durability="log", commit_interval=0.5, implementation=impl
        ) as rt:
            rt.spawn(counter, "a", {"seen": []})
            await rt.flush()  # a waiter: the round starts at once
            assert records() == 1
            start = trio.current_time()
            rt.send_nowait("a", "inc", 1)  # nobody waits: the next round gathers
            await trio.sleep(0.1)
            assert records() == 1
            with trio.fail_after(5):
                while records() == 1:
                    await trio.sleep(0.01)
            assert trio.current_time() - start >= 0.4
            start = trio.current_time()
            await rt.send("a", "inc", 2)  # returns without waiting out the interval
            assert records() == 3
            assert trio.current_time() - start < 0.4

    trio.run(main)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"durability": "always"}, "durability must be one of"),
        ({"durability": "log"}, "need a store"),
        ({"restore": [counter]}, "need a store"),
        ({"store": "agents.db"}, "must be an engine.store.Store"),
        ({"store": store.MemoryStore(), "durability": "log", "commit_interval": -1}, ">= 0"),
        ({"store": store.MemoryStore(), "durability": "log", "commit_interval": float("nan")},
         "finite"),
    ],
)
def test_bad_durability_settings_are_typed_errors(kwargs: dict[str, Any], match: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(**kwargs):
            pass

    with pytest.raises(engine.InvalidArgumentError, match=match):
        trio.run(main)


def test_a_commit_that_cannot_be_encoded_fails_the_runtime(impl: str) -> None:
    async def main() -> None:
        async with engine.open_runtime(
            store=store.MemoryStore(), durability="log", implementation=impl
        ) as rt:
            rt.spawn(counter, "bad", {"seen": []})
            await rt.send("bad", "inc", object())

    with pytest.raises(store.CodecError, match="bad"):
        trio.run(main)
