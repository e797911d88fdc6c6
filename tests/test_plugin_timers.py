"""The engine-timers distribution (plugins/engine-timers), found through its entry point and run
under ``open_runtime`` on trio's MockClock: periodic and one-shot ticks at the right virtual
times, payload and priority, refused agents and events, backpressure, config validation."""

from __future__ import annotations

import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import engine
from engine.cli import _main as _cli
from engine.environment import _discovery as _plugins
from engine.environment._config import load_app
from engine.plugin_spec import EFFECTORS, RECEPTORS, ErrorRecord, Receptor


def timers_factory() -> Any:
    found = [ep for ep in entry_points(group=RECEPTORS) if ep.name == "timers"]
    assert len(found) == 1, f"{found}: install it with pip install -e plugins/engine-timers"
    return found[0].load()


def make_timers(config: dict[str, Any]) -> Any:
    """What the engine does with a ``[plugins.config]`` table: structure it, call the factory."""
    return _plugins.create("timers", timers_factory(), config)


def beat_machine() -> engine.Machine:
    """Records (time, event, payload, priority) of every tick in the agent's data."""
    beat = engine.Machine(
        "beat", ["on"], "on", [("on", "tick", None, "t")], events=["tick"], unhandled="ignore"
    )

    @beat.handler("on", "tick")
    def tick(agent: engine.AgentContext, event: engine.Event) -> None:
        agent.data.append((trio.current_time(), event.name, event.payload, event.priority))

    return beat


BEAT = beat_machine()


class Collect:
    """A synchronous effector: outputs with the virtual time they were delivered, and reports."""

    def __init__(self) -> None:
        self.outputs: list[tuple[float, Any, Any]] = []
        self.reports: list[ErrorRecord] = []

    def deliver(self, batch: engine.OutputBatch) -> None:
        now = trio.current_time()
        self.outputs += [(now, agent, out) for agent, out in batch]

    def report(self, record: ErrorRecord) -> None:
        self.reports.append(record)


def simulate(
    config: dict[str, Any],
    agents: list[str],
    seconds: float,
    collect: Collect | None = None,
    **spawn: Any,
) -> engine.Runtime:
    """Run the timers for ``seconds`` of virtual time with ``BEAT`` agents; the runtime."""
    timers = make_timers(config)
    holder: list[engine.Runtime] = []

    async def main() -> None:
        async with engine.open_runtime(
            receptors=[engine.Plugin(timers, "timers")], effectors=[collect] if collect else []
        ) as rt:
            holder.append(rt)
            for agent in agents:
                rt.spawn(BEAT, agent, data=[], **spawn)
            await trio.sleep(seconds)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return holder[0]


def ticks(rt: engine.Runtime, agent: str) -> list[float]:
    return [t for t, *_ in rt.data(agent)]


def test_found_through_its_entry_point_as_a_receptor_only() -> None:
    factory = timers_factory()
    assert "timers" not in {ep.name for ep in entry_points(group=EFFECTORS)}
    timers = make_timers({"timers": [{"agents": ["a"], "event": "tick", "every": 1}]})
    assert type(timers) is factory
    assert isinstance(timers, Receptor)


def test_periodic_ticks_on_the_mock_clock_then_it_finishes() -> None:
    collect = Collect()
    rt = simulate(
        {"timers": [{"agents": ["a", "b"], "event": "tick", "every": 10, "count": 3}]},
        ["a", "b"],
        100,
        collect,
    )
    assert ticks(rt, "a") == ticks(rt, "b") == [10.0, 20.0, 30.0]
    assert collect.outputs == [(t, agent, "t") for t in (10.0, 20.0, 30.0) for agent in "ab"]
    assert rt.receptor_failures() == []  # it finished: three ticks, then run() returned
    assert rt.rejected() == []


def test_an_endless_periodic_timer_does_not_drift() -> None:
    rt = simulate({"timers": [{"agents": ["a"], "event": "tick", "every": 0.1}]}, ["a"], 100.05)
    times = ticks(rt, "a")
    assert len(times) == 1000
    assert times[-1] == pytest.approx(100.0)  # k * period from the start, not summed sleeps


def test_start_sets_the_first_tick() -> None:
    rt = simulate(
        {
            "timers": [
                {"agents": ["now"], "event": "tick", "every": 5, "start": 0, "count": 3},
                {"agents": ["later"], "event": "tick", "every": 5, "start": 2.5, "count": 2},
            ]
        },
        ["now", "later"],
        60,
    )
    assert ticks(rt, "now") == [0.0, 5.0, 10.0]
    assert ticks(rt, "later") == [2.5, 7.5]


def test_one_shot_timer_fires_once() -> None:
    rt = simulate({"timers": [{"agents": ["a"], "event": "tick", "after": 7}]}, ["a"], 60)
    assert ticks(rt, "a") == [7.0]


def test_payload_and_priority_reach_the_agents_as_separate_copies() -> None:
    payload = {"n": [1, 2]}
    rt = simulate(
        {
            "timers": [
                {
                    "agents": ["a", "b"],
                    "event": "tick",
                    "after": 1,
                    "payload": payload,
                    "priority": 3,
                }
            ]
        },
        ["a", "b"],
        5,
    )
    ((_, event, got_a, prio),) = rt.data("a")
    ((_, _, got_b, _),) = rt.data("b")
    assert (event, got_a, prio) == ("tick", payload, engine.Priority.CRITICAL)
    assert got_b == payload
    assert got_a is not got_b  # a handler mutating its payload cannot reach another agent's


def test_unknown_agents_and_events_are_reported_and_the_others_keep_ticking() -> None:
    collect = Collect()
    rt = simulate(
        {
            "timers": [
                {"agents": ["a", "ghost", "b"], "event": "tick", "every": 1, "count": 3},
                {"name": "bad", "agents": ["a"], "event": "nope", "after": 2},
            ]
        },
        ["a", "b"],
        10,
        collect,
    )
    assert ticks(rt, "a") == ticks(rt, "b") == [1.0, 2.0, 3.0]
    ghosts = [r for r in rt.rejected() if r.error == "AgentNotFoundError"]
    assert [r.context for r in ghosts] == [
        {"timer": 0, "agent": "ghost", "tick": n} for n in (1, 2, 3)
    ]
    assert all(r.source == "timers" and "ghost" in r.message for r in ghosts)
    (unknown,) = [r for r in rt.rejected() if r.error == "UnknownEventError"]
    assert unknown.context == {"timer": "bad", "agent": "a", "tick": 1}
    assert collect.reports == list(rt.rejected())  # every effector's report got them
    assert rt.receptor_failures() == []


def test_a_full_mailbox_delays_ticks_and_missed_ones_are_skipped() -> None:
    timers = make_timers(
        {"timers": [{"agents": ["a"], "event": "tick", "every": 1, "start": 0, "count": 3}]}
    )

    async def main() -> engine.Runtime:
        async with engine.open_runtime(receptors=[timers]) as rt:
            rt.spawn(BEAT, "a", data=[], capacity=1)
            rt.pause("a")  # takes mail, is not stepped: the mailbox stays full
            await trio.sleep(9.5)
            assert len(rt.queued("a")) == 1  # tick 1 queued, tick 2 waiting for room
            assert rt.statistics("a").dropped == 0
            assert rt.rejected() == []  # waiting is not refusing
            rt.resume("a")
            await trio.sleep(20)
            return rt

    rt = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    # ticks 1 and 2 processed when the agent resumed at t=9.5; tick 3 is the first due time
    # after that (t=10), not a burst of the seven missed ones
    assert ticks(rt, "a") == [9.5, 9.5, 10.0]
    assert rt.statistics("a").processed == 3
    assert rt.dead_letters() == []


def test_config_is_validated_and_every_problem_reported() -> None:
    factory = timers_factory()
    bad = {
        "timers": [
            {"agents": ["a"], "event": "tick", "every": 1, "after": 2},
            {"agents": ["a"], "event": "tick"},
            {"agents": ["a"], "event": "tick", "every": -1, "priority": 7, "count": 0},
            {"agents": [], "event": "tick", "every": 1},
            {"agents": ["a"], "event": "tick", "after": 1, "count": 2},
            {"agents": ["a"], "event": "tick", "every": 1, "colour": "red"},
        ]
    }
    with pytest.raises(engine.ConfigError) as info:
        _plugins.create("timers", factory, bad)
    problems = "\n".join(info.value.problems)
    assert "exactly one of 'every' (periodic) or 'after' @ $.timers[0]" in problems
    assert "exactly one of 'every' (periodic) or 'after' @ $.timers[1]" in problems
    assert "'every' must be > 0: -1.0 @ $.timers[2].every" in problems
    assert "'priority' must be <= 3: 7 @ $.timers[2].priority" in problems
    assert "'count' must be >= 1: 0 @ $.timers[2].count" in problems
    assert "$.timers[3].agents" in problems
    assert "'count' and 'start' apply to periodic timers ('every') @ $.timers[4]" in problems
    assert "extra fields found (colour) @ $.timers[5]" in problems
    assert make_timers({}).config.timers == []  # no timers: a receptor that ends at once


def test_an_app_file_wires_it_by_entry_point_name(tmp_path: Path) -> None:
    app_file = tmp_path / "app.toml"
    app_file.write_text(
        textwrap.dedent("""
        [[plugins]]
        name = "timers"
        [[plugins.config.timers]]
        agents = ["a"]
        event = "tick"
        every = 2.0
        count = 2
        payload = { from = "toml" }
    """)
    )
    app = load_app(app_file)
    receptors, effectors = _cli.build_plugins(app, str(app_file))
    assert [p.name for p in receptors] == ["timers"]
    assert effectors == []

    async def main() -> engine.Runtime:
        async with engine.open_runtime(receptors=receptors) as rt:
            rt.spawn(BEAT, "a", data=[])
            await trio.sleep(10)
            return rt

    rt = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert rt.data("a") == [(2.0, "tick", {"from": "toml"}, 1), (4.0, "tick", {"from": "toml"}, 1)]
