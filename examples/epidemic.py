"""An agent-based SIR epidemic on a random contact graph, on virtual time (`make demo`).

Every person is an agent of the ``person`` machine:

    S --infect--> I --recover--> R          S --vaccinate--> V

An infected person wakes once a day (a named ``Timer``) and passes the infection to each of its
contacts with probability ``--beta`` (a ``Send`` of ``infect``); the illness ends after a
per-person number of days (a ``StateTimeout`` armed when it starts). From day ``--campaign``
a health authority agent vaccinates a share of the population every day, sending
``vaccinate`` at HIGH priority, so it overtakes infections already queued for the same person.
Infections, recoveries and vaccinations reach anyone; only a susceptible person changes.

The runtime runs under trio on ``trio.testing.MockClock`` (one virtual second is one day), so a
run takes as long as its messages do. The handlers write an event log (day, what, who, by
whom) in processing order; its BLAKE2b hash is printed at the end: the same seed gives the
same hash on the compiled hot path and on the pure-Python twin, and another seed another one.

    python examples/epidemic.py --agents 100000 --seed 1 --plot epidemic.png
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import attrs
import numpy as np
import numpy.typing as npt
import trio
import trio.testing
from tqdm import tqdm

import engine
from engine import Priority, Send, StateTimeout, Step, Timer

DAY = 1.0
"""Virtual seconds per simulated day."""
S, I, R, V = range(4)  # noqa: E741 (the compartments' usual names)
KIND_NAMES = ("susceptible", "infected", "recovered", "vaccinated")
NOBODY = 0xFFFFFF
"""``by`` field of log entries with no other person (seed infections, recoveries, vaccines)."""
MAX_AGENTS = 1 << 24
"""Log entries pack a person into 24 bits."""


@attrs.frozen
class Params:
    """What a run simulates."""

    agents: int = 100_000
    seed: int = 1
    contacts: int = 8
    """Contacts per person (a random directed graph: each person picks its own)."""
    beta: float = 0.045
    """Chance a day that an infected person infects a given contact."""
    illness: tuple[int, int] = (5, 9)
    """Illness length in days, uniform in this closed range."""
    initial: int = 10
    """People infected on day 0."""
    campaign: int = 30
    """Day the vaccination campaign starts."""
    vaccinate: float = 0.01
    """Share of the population the authority vaccinates a day."""
    coverage: float = 0.7
    """Share of the population the campaign reaches before it ends."""
    days: int = 200
    """Longest run (the simulation stops earlier when nobody is infected)."""
    implementation: str | None = None
    """Hot path: "native", "python" or ``None`` (the compiled one when loaded)."""

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.agents <= MAX_AGENTS - 1:
            raise engine.InvalidArgumentError(f"agents must be in [1, {MAX_AGENTS - 1}]")
        if not 1 <= self.contacts < self.agents or not 0 <= self.beta <= 1:
            raise engine.InvalidArgumentError("need 1 <= contacts < agents and 0 <= beta <= 1")
        if not 1 <= self.illness[0] <= self.illness[1] or not 0 <= self.initial <= self.agents:
            raise engine.InvalidArgumentError("bad illness range or initial infections")
        if not 0 < self.days < 4096 or self.campaign < 0:
            raise engine.InvalidArgumentError("days must be in [1, 4095], campaign >= 0")


DEFAULT = Params()


@attrs.frozen
class Result:
    """What a run did."""

    params: Params
    implementation: str
    curve: npt.NDArray[np.int64]
    """People in S, I, R, V at the end of each day: shape (days + 1, 4), row 0 is day 0."""
    log: array[int]
    """Event log in processing order: ``day << 50 | kind << 48 | person << 24 | by``."""
    engine_counts: dict[str, int]
    """People per state as the engine counts them at the end."""
    messages: int
    wall: float
    """Seconds of wall time the simulated days took (setup excluded)."""
    step_latency: engine.LatencySummary | None
    dead_letters: int

    @property
    def digest(self) -> str:
        """BLAKE2b of the event log: equal logs, equal digests."""
        return hashlib.blake2b(self.log.tobytes(), digest_size=16).hexdigest()

    def entries(self) -> npt.NDArray[np.int64]:
        """The log decoded: columns day, kind, person, by (``NOBODY`` for none)."""
        raw = np.frombuffer(self.log, dtype=np.int64)
        return np.stack([raw >> 50, (raw >> 48) & 3, (raw >> 24) & NOBODY, raw & NOBODY], axis=1)


def person_machine(
    p: Params,
    rng: random.Random,
    contacts: npt.NDArray[np.int32],
    illness: list[int],
    log: Callable[[int, int, int], None],
) -> engine.Machine:
    """The ``person`` machine with its handlers, closed over the run's graph and random
    numbers. The handlers run in the engine's processing order, which is deterministic, so
    the draws from ``rng`` are too."""
    person = engine.Machine(
        "person",
        states=["S", "I", "R", "V"],
        initial="S",
        transitions=[("S", "infect", "I"), ("I", "recover", "R"), ("S", "vaccinate", "V")],
        events=["infect", "tick", "recover", "vaccinate"],
        unhandled="ignore",  # infections of the immune, vaccines for the ill, ...
    )
    beta = p.beta
    chance = rng.random
    # Actions and steps are immutable values: the handlers reuse these instead of building
    # new ones on every step (about 1 us each).
    tick = Timer("tick", DAY, "tick")
    just_tick = Step(actions=[tick])
    falls_ill = {
        days: Step(actions=[StateTimeout(days * DAY, "recover"), tick])
        for days in range(p.illness[0], p.illness[1] + 1)
    }
    stop_ticking = Step(actions=[engine.CancelTimer("tick")])

    @person.handler("S", "infect")
    def fall_ill(agent: engine.AgentContext, event: engine.Event) -> Step:
        me = agent.agent_id
        log(I, me, event.payload)
        return falls_ill[illness[me]]

    @person.handler("I", "tick")
    def meet(agent: engine.AgentContext, event: engine.Event) -> Step:
        me = agent.agent_id
        sends = [Send(other, "infect", me) for other in contacts[me].tolist() if chance() < beta]
        return Step(actions=[tick, *sends]) if sends else just_tick

    @person.handler("I", "recover")
    def recover(agent: engine.AgentContext, event: engine.Event) -> Step:
        log(R, agent.agent_id, NOBODY)
        return stop_ticking

    @person.handler("S", "vaccinate")
    def vaccinated(agent: engine.AgentContext, event: engine.Event) -> None:
        log(V, agent.agent_id, NOBODY)

    return person


def authority_machine(p: Params, order: list[int]) -> engine.Machine:
    """The health authority: waits for the campaign day, then vaccinates ``order`` in daily
    batches at HIGH priority until the coverage is reached."""
    authority = engine.Machine(
        "authority",
        states=["waiting", "campaign", "done"],
        initial="waiting",
        transitions=[("waiting", "start", "campaign"), ("campaign", "finish", "done")],
        events=["arm", "start", "day", "finish"],
        unhandled="ignore",
    )
    per_day = max(1, round(p.vaccinate * p.agents))
    end = min(len(order), round(p.coverage * p.agents))
    cursor = [0]

    @authority.handler("waiting", "arm")
    def arm(agent: engine.AgentContext, event: engine.Event) -> Step:
        return Step(actions=[Timer("start", p.campaign * DAY, "start")])

    @authority.handler("waiting", "start")
    @authority.handler("campaign", "day")
    def vaccinate_today(agent: engine.AgentContext, event: engine.Event) -> Step:
        lo = cursor[0]
        hi = cursor[0] = min(end, lo + per_day)
        actions: list[Any] = [Send(who, "vaccinate", None, Priority.HIGH) for who in order[lo:hi]]
        if hi < end:
            actions.append(Timer("day", DAY, "day"))
            return Step(state="campaign", actions=actions)
        return Step(state="done", actions=actions)

    return authority


def progress_bar(p: Params, out: TextIO, *, disable: bool | None = None) -> tqdm[Any]:
    """A tqdm bar over ``p.days`` on ``out``, with the compartments after it. By default it
    is drawn only when ``out`` is a terminal; ``disable=True`` never draws it."""
    return tqdm(total=p.days, desc="days", unit="day", file=out, disable=disable)


def world(p: Params) -> tuple[npt.NDArray[np.int32], list[int], list[int], list[int]]:
    """What the seed decides before day 0: each person's contacts (a row of ``p.contacts``
    others), illness length in days, the people infected on day 0, and the order the
    authority vaccinates in. Cheap and deterministic: examples/epidemic_sharded.py makes it
    again on every shard."""
    gen = np.random.default_rng(p.seed)
    contacts = gen.integers(0, p.agents - 1, size=(p.agents, p.contacts), dtype=np.int32)
    contacts += contacts >= np.arange(p.agents, dtype=np.int32)[:, None]  # nobody meets itself
    illness = gen.integers(p.illness[0], p.illness[1] + 1, size=p.agents).tolist()
    patients_zero = gen.choice(p.agents, size=p.initial, replace=False).tolist()
    order = gen.permutation(p.agents).tolist()
    return contacts, illness, patients_zero, order


def simulate(p: Params, *, bar: tqdm[Any] | None = None) -> Result:
    """Run the epidemic of ``p`` to its end (nobody infected) or ``p.days``, moving ``bar``
    (see ``progress_bar``) one day at a time and closing it at the end."""
    contacts, illness, patients_zero, order = world(p)
    rng = random.Random(p.seed)

    log_entries: array[int] = array("q")
    counts = [p.agents, 0, 0, 0]
    append = log_entries.append
    clock = trio.current_time

    def log(kind: int, who: int, by: int) -> None:
        append(int(clock() // DAY) << 50 | kind << 48 | who << 24 | by)
        counts[S if kind != R else I] -= 1
        counts[kind] += 1

    person = person_machine(p, rng, contacts, illness, log)
    authority = authority_machine(p, order)
    curve = np.zeros((p.days + 1, 4), dtype=np.int64)

    async def main() -> tuple[engine.Runtime, int, float]:
        async with engine.open_runtime(
            implementation=p.implementation, sample_every=64, dead_letter_limit=1000
        ) as rt:
            for i in range(p.agents):
                rt.spawn(person, i)
            rt.spawn(authority, "authority")
            started = time.perf_counter()
            rt.send_nowait("authority", "arm")
            for who in patients_zero:
                rt.send_nowait(who, "infect", NOBODY)
            day = 0
            while True:
                await trio.sleep_until((day + 0.5) * DAY)  # all of `day`'s events are done
                curve[day] = counts
                if bar is not None:
                    bar.set_postfix_str(
                        f"S {counts[S]:,}  I {counts[I]:,}  R {counts[R]:,}  V {counts[V]:,}",
                        refresh=False,
                    )
                    bar.update(day - bar.n)
                if counts[I] == 0 or day == p.days:
                    break
                day += 1
            wall = time.perf_counter() - started
        return rt, day, wall

    rt, last_day, wall = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    if bar is not None:
        bar.close()
    (stats,) = [m for m in rt.machine_statistics() if m.machine == "person"]
    return Result(
        params=p,
        implementation=rt.implementation,
        curve=curve[: last_day + 1],
        log=log_entries,
        engine_counts=stats.states,
        messages=rt.statistics().processed,
        wall=wall,
        step_latency=rt.step_latency.summary(),
        dead_letters=len(rt.dead_letters()),
    )


def summary(r: Result) -> str:
    """The table printed at the end of a run."""
    final = r.curve[-1]
    ill = int(final[R] + final[I])
    peak_day = int(np.argmax(r.curve[:, I]))
    lat = r.step_latency
    rows = [
        ("hot path", r.implementation),
        ("agents", f"{r.params.agents:,} people + 1 health authority"),
        ("contacts per person", f"{r.params.contacts}"),
        ("days simulated", f"{len(r.curve) - 1} (campaign from day {r.params.campaign})"),
        ("messages processed", f"{r.messages:,}"),
        ("wall time", f"{r.wall:.2f} s"),
        ("messages / s", f"{r.messages / r.wall:,.0f}" if r.wall > 0 else "-"),
        (
            "step latency (sampled)",
            "-"
            if lat is None
            else f"p50 {lat.p50:.2f} us  p90 {lat.p90:.2f} us  "
            f"p99 {lat.p99:.2f} us  max {lat.max:.1f} us  ({lat.total:,} samples)",
        ),
        ("peak infected", f"{int(r.curve[peak_day, I]):,} on day {peak_day}"),
        (
            "final S / I / R / V",
            " / ".join(f"{int(final[k]):,}" for k in (S, I, R, V)),
        ),
        ("ever infected", f"{ill:,} ({ill / r.params.agents:.1%})"),
        ("dead letters", f"{r.dead_letters:,}"),
        ("event log", f"{len(r.log):,} entries, blake2b {r.digest}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def plot(r: Result, path: str) -> None:
    """Write the S/I/R/V curves to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    days = np.arange(len(r.curve))
    for k, color in ((S, "tab:blue"), (I, "tab:red"), (R, "tab:green"), (V, "tab:purple")):
        ax.plot(days, r.curve[:, k], label=KIND_NAMES[k], color=color, linewidth=2)
    ax.axvline(r.params.campaign, color="grey", linestyle=":", label="vaccination starts")
    ax.set_xlabel("day")
    ax.set_ylabel("people")
    ax.set_title(
        f"SIR + vaccination: {r.params.agents:,} agents, seed {r.params.seed} "
        f"({r.implementation} hot path, {r.messages:,} messages)"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def unwritable(path: str) -> str | None:
    """Why ``plot`` could not write ``path``, found before the run rather than after it."""
    folder = Path(path).parent
    if not folder.is_dir():
        return f"directory {folder} does not exist"
    if not os.access(folder, os.W_OK):
        return f"directory {folder} is not writable"
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return "needs matplotlib (pip install matplotlib), or --plot ''"
    suffix = Path(path).suffix
    if suffix and suffix[1:].lower() not in FigureCanvasBase.get_supported_filetypes():
        return f"matplotlib cannot write {suffix!r} files"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=DEFAULT.agents)
    parser.add_argument("--seed", type=int, default=DEFAULT.seed)
    parser.add_argument("--contacts", type=int, default=DEFAULT.contacts)
    parser.add_argument("--beta", type=float, default=DEFAULT.beta)
    parser.add_argument("--campaign", type=int, default=DEFAULT.campaign, help="first day")
    parser.add_argument("--days", type=int, default=DEFAULT.days, help="longest run")
    parser.add_argument(
        "--implementation", choices=["native", "python"], default=None, help="hot path"
    )
    parser.add_argument("--plot", default="epidemic.png", help="PNG path ('' for none)")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar (there is none unless on a terminal)"
    )
    args = parser.parse_args(argv)
    if args.plot:
        problem = unwritable(args.plot)
        if problem:
            parser.error(f"argument --plot: {problem}")
    try:
        params = Params(
            agents=args.agents,
            seed=args.seed,
            contacts=args.contacts,
            beta=args.beta,
            campaign=args.campaign,
            days=args.days,
            implementation=args.implementation,
        )
    except engine.InvalidArgumentError as exc:
        parser.error(str(exc))
    print(
        f"SIR epidemic: {params.agents:,} agents, seed {params.seed}, "
        f"compiled module loaded: {engine.USE_EXTENSIONS}",
        flush=True,
    )
    bar = progress_bar(params, sys.stderr, disable=True if args.quiet else None)
    result = simulate(params, bar=bar)
    print(summary(result))
    if args.plot:
        plot(result, args.plot)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
