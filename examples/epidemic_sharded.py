"""The epidemic of examples/epidemic.py sharded over Ray (``engine.cluster``) on virtual time.

Same model (SIR on a random contact graph plus a vaccination campaign), same parameters and
same seeded graph, illness lengths, patients zero and vaccination order (``epidemic.world``,
made again on every shard), but the people live on N shards and infections cross them.

Determinism across shards. With ``virtual_time=True`` the cluster runs in lock-step instants:
``run_until`` lets every shard process everything (the mail shards send each other
included) until nothing is queued, in flight or due, then moves every shard's clock to the
earliest timer due anywhere. So every message sent at an instant is processed at that
instant, nothing is lost, and the messages one agent sends another arrive in the order they
were sent. What the engine does not fix is how messages from different senders interleave
at a receiver within one instant: that depends on when Ray delivers each shard's batches.
So a sharded simulation is deterministic (the same seed gives the same result on any number
of shards, on either hot path, run after run) when its outcome at each instant does not
depend on the order in which that instant's messages are processed.

This model is order-independent within an instant:
(a) every random draw comes from a counter-based stream keyed by (seed, person, day,
    contact), a splitmix64 hash mapped to [0, 1), never from a shared generator whose
    draws would follow the processing order (as in examples/epidemic.py);
(b) the authority vaccinates at half-day instants (day + 0.5), so a vaccine never races an
    infection (infections and recoveries happen at whole days);
(c) an infection of someone no longer susceptible is ignored, so several infections of one
    person at one instant give the same result in any order. (An ill person recovers on
    its own tick: no second timer due at the same instant.)
What stays order-dependent is not part of the result: which of several infectors reaching
someone at one instant came first. The result is the per-day S/I/R/V curve and every
person's final state; ``digest`` hashes both.

    python examples/epidemic_sharded.py --agents 100000 --seed 1 --shards 2 --plot ''
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import sys
import time
from pathlib import Path

import attrs
import numpy as np
import numpy.typing as npt
from trio import current_time  # (handlers use this: trio < 0.25's module cannot be pickled)

import engine
from engine import Send, Step, Timer
from engine.cluster import Cluster

try:
    import epidemic
except ImportError:  # imported from elsewhere than examples/ (not on the path then)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import epidemic
from epidemic import DAY, DEFAULT, NOBODY, Params, authority_machine, world

S, I, R, V = epidemic.S, epidemic.I, epidemic.R, epidemic.V  # noqa: E741
STATES = "SIRV"
"""The person machine's states, in compartment order."""
MASK = (1 << 64) - 1


def mix(x: int) -> int:
    """splitmix64's finaliser: a bijection of 64-bit integers that scatters every bit."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def uniform(seed: int, person: int, day: int, contact: int) -> float:
    """The draw keyed by (seed, person, day, contact), uniform in [0, 1): the same wherever
    and whenever it is computed."""
    return (mix(mix(mix(mix(seed) ^ person) ^ day) ^ contact) >> 11) * 2.0**-53


def person_machine(
    p: Params, contacts: npt.NDArray[np.int32], illness: list[int]
) -> engine.Machine:
    """``person``: S -infect-> I -(illness over, on a tick)-> R, S -vaccinate-> V. An ill
    person ticks every day and infects each contact k when ``uniform(seed, me, day, k) <
    beta``; its data is the day it fell ill."""
    person = engine.Machine(
        "person",
        states=list(STATES),
        initial="S",
        transitions=[("S", "infect", "I"), ("S", "vaccinate", "V")],  # I -> R: see meet
        events=["infect", "tick", "vaccinate"],
        unhandled="ignore",  # infections of the immune, vaccines for the ill, ...
    )
    beta, seed = p.beta, mix(p.seed)
    tick = Timer("tick", DAY, "tick")
    just_tick = Step(actions=[tick])
    recovers = Step(state="R")  # no tick armed: the last one

    def today() -> int:
        return round(current_time() / DAY)

    @person.handler("S", "infect")
    def fall_ill(agent: engine.AgentContext, event: engine.Event) -> Step:
        agent.data = today()
        return just_tick

    @person.handler("I", "tick")
    def meet(agent: engine.AgentContext, event: engine.Event) -> Step:
        me, day = agent.agent_id, today()
        if day - agent.data >= illness[me]:
            return recovers
        key = mix(mix(seed ^ me) ^ day)  # uniform(p.seed, me, day, k), the common part once
        sends = [
            Send(other, "infect", me)
            for k, other in enumerate(contacts[me].tolist())
            if (mix(key ^ k) >> 11) * 2.0**-53 < beta
        ]
        return Step(actions=[tick, *sends]) if sends else just_tick

    return person


def setup(p: Params) -> list[engine.Machine]:
    """The machines of every shard (called there; the world is made from the seed)."""
    contacts, illness, _, order = world(p)
    return [person_machine(p, contacts, illness), authority_machine(p, order)]


@attrs.frozen
class Result:
    """What a sharded run did."""

    params: Params
    shards: int
    implementation: str
    curve: npt.NDArray[np.int64]
    """People in S, I, R, V at the end of each day: shape (days + 1, 4), row 0 is day 0."""
    states: npt.NDArray[np.uint8]
    """Each person's final state (index into ``STATES``), by person."""
    messages: int
    wall: float
    """Seconds of wall time the simulated days took (setup excluded)."""
    dead_letters: int

    @property
    def digest(self) -> str:
        """BLAKE2b of the curve and the final states: the run's outcome."""
        data = self.curve.astype("<i8").tobytes() + self.states.tobytes()
        return hashlib.blake2b(data, digest_size=16).hexdigest()


def _spawn_share(rt: engine.Runtime, shares: list[tuple[int, list[int]]]) -> None:
    """On a shard: spawn the people of the share whose first person (spawned by the driver,
    so the shard knows the machine) lives here."""
    here = set(rt.agent_ids())
    for first, rest in shares:
        if first in here:
            person = rt.machine(first)
            for who in rest:
                rt.spawn(person, who)


def _count(rt: engine.Runtime) -> list[int]:
    (stats,) = [m for m in rt.machine_statistics() if m.machine == "person"]
    return [stats.states[s] for s in STATES]


def _final_states(rt: engine.Runtime) -> tuple[list[int], list[int]]:
    people = [a for a in rt.agent_ids() if type(a) is int]
    return people, [STATES.index(rt.state(a)) for a in people]


def populate(cluster: Cluster, p: Params) -> None:
    """Spawn every person on its shard with one call per shard, not one per person."""
    homes: dict[int, list[int]] = {}
    for who in range(p.agents):
        homes.setdefault(cluster.shard_of(who), []).append(who)
    for people in homes.values():
        cluster.spawn("person", people[0])
    cluster.on_each_shard(_spawn_share, [(ids[0], ids[1:]) for ids in homes.values()])
    cluster.spawn("authority", "authority")


def simulate(p: Params, shards: int = 2) -> Result:
    """Run the epidemic of ``p`` on ``shards`` shards (Ray must be running) to its end (nobody
    infected) or ``p.days``."""
    ship()
    cluster = Cluster(
        functools.partial(setup, p),
        shards=shards,
        virtual_time=True,
        runtime_options={"implementation": p.implementation},
    )
    try:
        populate(cluster, p)
        _, _, patients_zero, _ = world(p)
        curve = np.zeros((p.days + 1, 4), dtype=np.int64)
        started = time.perf_counter()
        n = len(patients_zero)
        cluster.send_many(patients_zero, ["infect"] * n, payloads=[NOBODY] * n)
        # the authority's timers are relative: armed at 0.5, they fire at campaign + 0.5, ...
        cluster.run_until(0.5 * DAY)
        cluster.send("authority", "arm")
        day = 0
        while True:
            cluster.run_until((day + 0.75) * DAY)  # all of `day`, vaccines included
            curve[day] = np.sum(cluster.on_each_shard(_count), axis=0)
            if curve[day, I] == 0 or day == p.days:
                break
            day += 1
        wall = time.perf_counter() - started
        states = np.zeros(p.agents, dtype=np.uint8)
        for people, codes in cluster.on_each_shard(_final_states):
            states[people] = codes
        stats = cluster.statistics()
        return Result(
            params=p,
            shards=shards,
            implementation=stats.shards[0].implementation,
            curve=curve[: day + 1],
            states=states,
            messages=stats.processed,
            wall=wall,
            dead_letters=stats.dead_letters,
        )
    finally:
        cluster.close()


def ship() -> None:
    """Have Ray ship this module and examples/epidemic.py to the shards by value (they are
    not importable there)."""
    import ray.cloudpickle

    for module in (epidemic, sys.modules[__name__]):
        if module.__name__ != "__main__":
            ray.cloudpickle.register_pickle_by_value(module)


def summary(r: Result) -> str:
    """The table printed at the end of a run."""
    final = r.curve[-1]
    ill = int(final[R] + final[I])
    peak_day = int(np.argmax(r.curve[:, I]))
    rows = [
        ("hot path", r.implementation),
        ("shards", f"{r.shards}"),
        ("agents", f"{r.params.agents:,} people + 1 health authority"),
        ("days simulated", f"{len(r.curve) - 1} (campaign from day {r.params.campaign})"),
        ("messages processed", f"{r.messages:,}"),
        ("wall time", f"{r.wall:.2f} s"),
        ("peak infected", f"{int(r.curve[peak_day, I]):,} on day {peak_day}"),
        ("final S / I / R / V", " / ".join(f"{int(final[k]):,}" for k in (S, I, R, V))),
        ("ever infected", f"{ill:,} ({ill / r.params.agents:.1%})"),
        ("dead letters", f"{r.dead_letters:,}"),
        ("outcome", f"blake2b {r.digest} (curve and final states)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=DEFAULT.agents)
    parser.add_argument("--seed", type=int, default=DEFAULT.seed)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--days", type=int, default=DEFAULT.days, help="longest run")
    parser.add_argument(
        "--implementation", choices=["native", "python"], default=None, help="hot path"
    )
    parser.add_argument("--plot", default="epidemic-sharded.png", help="PNG path ('' for none)")
    args = parser.parse_args(argv)
    if args.plot and (problem := epidemic.unwritable(args.plot)):
        parser.error(f"argument --plot: {problem}")
    if not 1 <= args.shards <= 64:
        parser.error("argument --shards: must be in [1, 64]")
    try:
        params = Params(args.agents, args.seed, days=args.days, implementation=args.implementation)
    except engine.InvalidArgumentError as exc:
        parser.error(str(exc))
    import ray

    if not ray.is_initialized():
        # the shards import the engine this process imported (PYTHONPATH before site-packages)
        here = {"PYTHONPATH": str(Path(engine.__file__).resolve().parent.parent)}
        quiet = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
        ray.init(num_cpus=max(2, args.shards), runtime_env={"env_vars": here}, **quiet)
    print(f"SIR epidemic: {params.agents:,} agents, seed {params.seed}, {args.shards} shards")
    result = simulate(params, args.shards)
    print(summary(result))
    if args.plot:
        epidemic.plot(result, args.plot)  # type: ignore[arg-type]  # reads the same fields
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
