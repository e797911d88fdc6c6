"""Re-entrant calls from handlers and instruments, on both hot paths.

Handlers and instruments are Python code running in the middle of the drain loop: they may
spawn (registering new machines), terminate (themselves or others), send, pause and resume.
None of it may crash the runtime, corrupt its records, lose a message or misattribute an
output. The last test throws all of it at the runtime at random and checks that every message
is accounted for.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import subprocess
import sys
import weakref
from collections.abc import Callable
from typing import Any

import pytest

import engine
from engine import AgentStatus, DeadLetterReason, Machine, OverflowPolicy, Runtime, Step

MakeRuntime = Callable[..., Runtime]


def echo(name: str = "echo") -> Machine:
    return Machine(name, ["s"], "s", [("s", "ping", None, name)], events=["ping", "spawn"])


# -- machine tables --------------------------------------------------------------------------


def test_handlers_register_new_machines_in_the_middle_of_their_step(
    make_runtime: MakeRuntime,
) -> None:
    """Each step spawns an agent of a machine the runtime has never seen, so the machine
    table grows (and moved, freeing the old one) under the step that was reading it."""
    outputs: list[tuple[Any, Any]] = []
    rt = make_runtime(on_output=outputs.extend)
    m = Machine(
        "spawner",
        ["a", "b"],
        "a",
        [("a", "go", "b", "went"), ("b", "go", "a", "back"), ("*", "again", None)],
    )
    made = []

    @m.handler("*", "go")
    def go(agent: engine.AgentContext, event: engine.Event) -> Step:
        new = echo(f"m{len(made)}")
        made.append(new)
        rt.spawn(new, f"child{len(made)}")
        # a state and actions: the step reads its machine's table after the handler
        return Step(None, actions=[engine.NextEvent("again")])

    rt.spawn(m, "p")
    for _ in range(300):
        rt.send_nowait("p", "go")
    assert rt.run_until_idle() == 600
    assert len(rt.machine_statistics()) == 301
    assert rt.state("p") == "a"
    assert [o for a, o in outputs if a == "p"] == ["went", "back"] * 150
    for i in range(1, 301):
        rt.send_nowait(f"child{i}", "ping")
    rt.run_until_idle()
    assert [o for a, o in outputs if a != "p"] == [f"m{i}" for i in range(300)]


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's MALLOC_PERTURB_")
def test_machine_table_growth_under_a_step_with_freed_memory_poisoned(impl: str) -> None:
    """The same in a process whose malloc overwrites freed memory: a step that read a freed
    machine table would follow a garbage pointer and crash."""
    code = f"""
import engine
rt = engine.Runtime(implementation={impl!r}, on_output=lambda b: None)
m = engine.Machine("spawner", ["a"], "a", [("a", "go", "a", "out"), ("a", "x", "a")])
n = [0]

@m.handler("a", "go")
def go(agent, event):
    for _ in range(8):
        n[0] += 1
        rt.spawn(engine.Machine(f"m{{n[0]}}", ["s"], "s", [("s", "x", None, n[0])]), n[0])
    return engine.Step("a", actions=[engine.NextEvent("x")])  # read the table after this

rt.spawn(m, "p")
for _ in range(200):
    rt.send_nowait("p", "go")
assert rt.run_until_idle() == 400
assert rt.statistics("p").processed == 400
print("ok", len(rt))
"""
    env = dict(os.environ, MALLOC_PERTURB_="165", MALLOC_CHECK_="3")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "1601"]


# -- outputs ---------------------------------------------------------------------------------


def test_outputs_keep_their_agent_when_it_is_terminated_later_in_the_run(
    make_runtime: MakeRuntime,
) -> None:
    batches: list[engine.OutputBatch] = []
    rt = make_runtime(on_output=batches.append)
    light = Machine("l", ["r", "g"], "r", [("r", "tick", "g", "go"), ("g", "tick", "r", "stop")])
    reaper = Machine("reaper", ["s"], "s", [("s", "reap", None, "reaped")])

    @reaper.handler("s", "reap")
    def reap(agent: engine.AgentContext, event: engine.Event) -> None:
        rt.terminate(event.payload)  # emitted already, in this same run
        rt.spawn(light, f"new-{event.payload}")  # reuses the freed slot
        rt.send_nowait(f"new-{event.payload}", "tick")

    for i in range(3):
        rt.spawn(light, f"l{i}")
    rt.spawn(reaper, "reaper")
    for i in range(3):
        rt.send_nowait(f"l{i}", "tick")
    for i in range(3):
        rt.send_nowait("reaper", "reap", f"l{i}")
    rt.run_until_idle()
    pairs = [pair for batch in batches for pair in batch]
    for agent in ("l0", "l1", "l2"):
        assert (agent, "go") in pairs
    assert [a for a, o in pairs if o == "go"].count("new-l0") == 1
    assert all(a is not None for a, _ in pairs)
    assert sorted(a for a, o in pairs if o == "go") == sorted(
        ["l0", "l1", "l2", "new-l0", "new-l1", "new-l2"]
    )


def test_a_slot_reused_twice_within_one_batch(make_runtime: MakeRuntime) -> None:
    batches: list[engine.OutputBatch] = []
    rt = make_runtime(on_output=batches.append, budget=1)
    light = Machine("l", ["r", "g"], "r", [("r", "tick", "g", "go"), ("g", "tick", "r", "stop")])
    ids = iter(["b", "c"])
    boss = Machine("boss", ["s"], "s", [("s", "swap", None)])

    @boss.handler("s", "swap")
    def swap(agent: engine.AgentContext, event: engine.Event) -> None:
        rt.terminate(event.payload)
        new = next(ids)
        rt.spawn(light, new)
        rt.send_nowait(new, "tick")
        rt.send_nowait("boss", "swap", new) if new == "b" else None

    rt.spawn(boss, "boss")
    rt.spawn(light, "a")
    rt.send_nowait("a", "tick")
    rt.send_nowait("boss", "swap", "a")
    rt.run_until_idle()
    pairs = [pair for batch in batches for pair in batch]
    assert pairs == [("a", "go"), ("b", "go"), ("c", "go")]


def test_outputs_equal_across_types_stay_distinct(make_runtime: MakeRuntime) -> None:
    batches: list[engine.OutputBatch] = []
    rt = make_runtime(on_output=batches.append)
    a = Machine("a", ["s"], "s", [("s", "x", None, True), ("s", "y", None, 1)])
    b = Machine("b", ["s"], "s", [("s", "x", None, 1.0), ("s", "y", None, False)])
    c = Machine("c", ["s"], "s", [("s", "x", None, 0), ("s", "y", None, 0.0)])
    for m in (a, b, c):
        rt.spawn(m, m.name)
        rt.send_nowait(m.name, "x")
        rt.send_nowait(m.name, "y")
    rt.run_until_idle()
    got = [(agent, out, type(out)) for batch in batches for agent, out in batch]
    assert got == [
        ("a", True, bool),
        ("a", 1, int),
        ("b", 1.0, float),
        ("b", False, bool),
        ("c", 0, int),
        ("c", 0.0, float),
    ]


# -- instruments that terminate ------------------------------------------------------------


class Terminator(engine.Instrument):
    def __init__(self, rt: Runtime, hook: str) -> None:
        self.rt = rt
        self.hook = hook
        self.done: list[Any] = []

    def _kill(self, agent_id: Any) -> None:
        if agent_id in self.rt:
            self.done.append(agent_id)
            self.rt.terminate(agent_id)


class KillOnOverflow(Terminator):
    def on_overflow(self, agent_id: Any, event: str, payload: Any, policy: str) -> None:
        self._kill(agent_id)


class KillBeforeStep(Terminator):
    def before_step(self, agent_id: Any, state: str, event: str) -> None:
        if event == "fault":
            self._kill(agent_id)


class KillOnDeadLetter(Terminator):
    def on_dead_letter(self, letter: engine.DeadLetter) -> None:
        self._kill(letter.agent_id)
        # and send to it while it is being terminated: refused, never queued in a freed slot
        with contextlib.suppress(engine.EngineError):
            self.rt.send_nowait(letter.agent_id, "tick", object())


class Payload:
    pass


@pytest.mark.parametrize("policy", [OverflowPolicy.DROP_OLDEST, OverflowPolicy.REJECT])
def test_an_overflow_instrument_that_terminates_the_agent(
    make_runtime: MakeRuntime, light: Machine, policy: OverflowPolicy
) -> None:
    rt = make_runtime()
    rt.add_instrument(KillOnOverflow(rt, "on_overflow"))
    rt.spawn(light, "x", capacity=1, policy=policy)
    rt.send_nowait("x", "tick", Payload())
    last = Payload()
    gone = weakref.ref(last)
    with pytest.raises((engine.AgentStoppedError, engine.MailboxFullError)):
        rt.send_nowait("x", "tick", last)  # the agent is terminated during this send
    del last
    gc.collect()
    assert gone() is None  # the compiled path leaked it
    assert "x" not in rt
    # DROP_OLDEST: the queued message was dropped to make room, then the agent was terminated
    # (with an empty mailbox); REJECT: the queued message was dead-lettered by the termination
    reasons = [d.reason.value for d in rt.dead_letters()]
    assert reasons == (["dropped"] if policy is OverflowPolicy.DROP_OLDEST else ["terminated"])
    # the slot is free and sound
    for i in range(100):
        rt.spawn(light, i)
        rt.send_nowait(i, "tick")
    assert rt.run_until_idle() == 100


def test_a_before_step_instrument_that_terminates_the_agent(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    rt = make_runtime()
    killer = KillBeforeStep(rt, "before_step")
    rt.add_instrument(killer)
    for i in range(10):
        rt.spawn(light, i)
        rt.send_nowait(i, "tick")
        rt.send_nowait(i, "fault" if i % 2 else "tick", "p")
        rt.send_nowait(i, "tick")
    rt.run_until_idle()
    assert killer.done == [1, 3, 5, 7, 9]
    letters = rt.dead_letters()
    # the message being stepped and the one behind it, for each agent terminated
    assert sorted((d.agent_id, d.event) for d in letters) == sorted(
        [(i, "fault") for i in (1, 3, 5, 7, 9)] + [(i, "tick") for i in (1, 3, 5, 7, 9)]
    )
    assert {d.reason for d in letters} == {DeadLetterReason.TERMINATED}
    stats = rt.statistics()
    assert (stats.agents, stats.processed) == (5, 5 * 3 + 5)
    for i in range(100, 200):  # the free list survived
        rt.spawn(light, i)
    assert len(rt) == 105


def test_a_dead_letter_instrument_that_terminates_and_sends(
    make_runtime: MakeRuntime, light: Machine
) -> None:
    rt = make_runtime()
    rt.add_instrument(KillOnDeadLetter(rt, "on_dead_letter"))
    failing = Machine("f", ["s"], "s", [], events=["boom", "tick"])  # every event fails
    for i in range(5):
        rt.spawn(failing, i)
        rt.send_nowait(i, "boom")
        rt.send_nowait(i, "tick")
    rt.run_until_idle()
    assert len(rt) == 0
    reasons = [d.reason for d in rt.dead_letters()]
    assert reasons.count(DeadLetterReason.INVALID_TRANSITION) == 5
    assert reasons.count(DeadLetterReason.TERMINATED) == 5
    assert rt.statistics().failed == 5


def test_a_handler_that_terminates_its_own_agent_counts_its_message(
    make_runtime: MakeRuntime,
) -> None:
    rt = make_runtime()
    m = Machine("m", ["s"], "s", [("s", "quit", None), ("s", "tick", None)])
    m.handler("s", "quit")(lambda agent, event: rt.terminate(agent.agent_id) and None)
    rt.spawn(m, "a")
    rt.send_nowait("a", "tick")
    rt.send_nowait("a", "quit")
    rt.send_nowait("a", "tick")
    rt.run_until_idle()
    stats = rt.statistics()
    assert (stats.processed, stats.failed, stats.dead_letters) == (2, 0, 1)


# -- ids ---------------------------------------------------------------------------------------


class Fickle:
    """An id whose hash can be made to raise, after it was spawned."""

    broken = False

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        if Fickle.broken:
            raise RuntimeError("no hash today")
        return hash(self.n)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fickle) and other.n == self.n


def test_id_table_growth_never_rehashes_ids(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    fickle = [Fickle(i) for i in range(5)]
    refs = [rt.spawn(light, f) for f in fickle]
    Fickle.broken = True
    try:
        for i in range(10_000):  # the id table grows several times
            rt.spawn(light, i)
        for i in range(10_000):
            rt.send_nowait(i, "tick")
        with pytest.raises(engine.AgentNotFoundError) as info:
            rt.send_nowait(fickle[0], "tick")  # its hash raises: not found, with the cause
        assert isinstance(info.value.__cause__, RuntimeError)
        assert fickle[0] not in rt
        for ref in refs:
            ref.send_nowait("tick")  # a ref needs no hash
    finally:
        Fickle.broken = False
    assert rt.run_until_idle() == 10_005
    for f in fickle:
        assert rt.state(f) == "green"
        rt.terminate(f)
    assert len(rt) == 10_000


def test_hostile_ids(make_runtime: MakeRuntime, light: Machine) -> None:
    rt = make_runtime()
    with pytest.raises(engine.InvalidArgumentError):
        rt.spawn(light, [1, 2])
    with pytest.raises(engine.InvalidArgumentError):
        rt.spawn(light, None)
    huge = 10**5000
    with pytest.raises(engine.AgentNotFoundError) as info:
        rt.send_nowait(huge, "tick")
    assert len(str(info.value)) < 100  # printable, and short
    rt.spawn(light, huge)
    rt.send_nowait(huge, "tick")
    rt.run_until_idle()
    assert rt.state(huge) == "green"


# -- everything at once --------------------------------------------------------------------


class Chaos(engine.Instrument):
    """Does something random to a random agent from every hook."""

    def __init__(self, rt: Runtime, rng: random.Random, spawn: Callable[[], None]) -> None:
        self.rt, self.rng, self.spawn = rt, rng, spawn

    def _act(self) -> None:
        rt, rng = self.rt, self.rng
        roll = rng.random()
        ids = rt.agent_ids()
        if roll < 0.05:
            self.spawn()
        elif ids and roll < 0.08:
            rt.terminate(rng.choice(ids))
        elif ids and roll < 0.12:
            victim = rng.choice(ids)
            rt.pause(victim) if rng.random() < 0.5 else rt.resume(victim)

    def before_step(self, agent_id: Any, state: str, event: str) -> None:
        self._act()

    def after_transition(self, *args: Any) -> None:
        self._act()

    def on_overflow(self, *args: Any) -> None:
        self._act()

    def on_dead_letter(self, letter: engine.DeadLetter) -> None:
        self._act()


@pytest.mark.parametrize("seed", range(8))
def test_random_reentrant_calls_lose_nothing(make_runtime: MakeRuntime, seed: int) -> None:
    rng = random.Random(seed)
    outputs: list[tuple[Any, Any]] = []
    rt = make_runtime(on_output=outputs.extend, budget=3)
    accepted = 0
    counter = [0]
    machines: list[Machine] = []

    def new_machine(name: str) -> Machine:
        m = echo(name)
        m.handler("s", "ping")(handler)
        machines.append(m)
        return m

    def spawn() -> None:
        counter[0] += 1
        if not machines or rng.random() < 0.2:  # a machine the runtime has not seen yet
            new_machine(f"echo{counter[0]}")
        bounded = rng.random() < 0.3
        rt.spawn(
            rng.choice(machines),
            counter[0],
            capacity=rng.randint(1, 3) if bounded else 0,
            policy=rng.choice(list(OverflowPolicy)),
        )

    def handler(agent: engine.AgentContext, event: engine.Event) -> Step | None:
        nonlocal accepted
        roll = rng.random()
        ids = rt.agent_ids()
        if roll < 0.1:
            spawn()
        elif roll < 0.15 and ids:
            rt.terminate(rng.choice(ids))
        elif roll < 0.45 and ids:
            try:
                rt.send_nowait(rng.choice(ids), "ping", object(), rng.randint(0, 3))
                accepted += 1
            except engine.EngineError:
                pass
        elif roll < 0.5:
            raise ValueError("a failing step")
        return None

    chaos = Chaos(rt, rng, spawn)
    rt.add_instrument(chaos)
    for _ in range(20):
        spawn()
    for _ in range(40):
        for _ in range(10):
            ids = rt.agent_ids()
            if not ids:
                spawn()
                continue
            try:
                rt.send_nowait(rng.choice(ids), "ping", object(), rng.randint(0, 3))
                accepted += 1
            except engine.EngineError:
                pass
        rt.run(rng.randint(1, 50))
    rt.remove_instrument(chaos)  # (or it would pause agents again)
    for agent_id in rt.agent_ids():
        rt.resume(agent_id)
    rt.run_until_idle()
    stats = rt.statistics()
    letters = rt.dead_letters()
    failed_letters = sum(
        d.reason in (DeadLetterReason.HANDLER_FAILED, DeadLetterReason.INVALID_TRANSITION)
        for d in letters
    )
    lost_letters = sum(
        d.reason in (DeadLetterReason.DROPPED, DeadLetterReason.TERMINATED) for d in letters
    )
    assert failed_letters == stats.failed
    assert accepted == stats.processed + stats.failed + lost_letters
    assert all(agent is not None for agent, _ in outputs)
    assert all(rt.status(a) in (AgentStatus.IDLE, AgentStatus.ERROR) for a in rt.agent_ids())
    assert all(not rt.queued(a) for a in rt.agent_ids())
