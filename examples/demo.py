"""`make demo`: 10^5 traffic-light agents take 10^6 messages at four priorities.

Runs the same seeded workload on the compiled hot path and on its pure-Python twin, checks
that both end in the same states with the same outputs, and prints what each one did.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

import numpy as np

import engine

LIGHT = engine.Machine(
    "light",
    states=["red", "green", "yellow"],
    initial="red",
    transitions=[
        ("red", "tick", "green", "go"),
        ("green", "tick", "yellow", "slow"),
        ("yellow", "tick", "red", "stop"),
        ("*", "fault", "red", "stop"),
    ],
    events=["tick", "fault", "inspect"],
)


@LIGHT.handler("*", "inspect")
def inspect(agent: engine.AgentContext, event: engine.Event) -> engine.Step | None:
    """A Python handler on one slot: inspections of a red light fail (dead letters)."""
    if agent.state == "red":
        raise RuntimeError("cannot inspect a red light")
    return engine.Step(outputs=[f"ok:{agent.state}"])


def run(impl: str, n_agents: int, agents: Any, events: Any, prios: Any) -> dict[str, Any]:
    outputs: Counter[Any] = Counter()

    def sink(batch: engine.OutputBatch) -> None:
        # columnar: count table outputs by code with numpy; only handler outputs are objects
        codes, counts = np.unique(batch.codes[batch.codes >= 0], return_counts=True)
        outputs.update({batch.values[c]: int(k) for c, k in zip(codes, counts, strict=True)})
        outputs.update(batch.extras)

    rt = engine.Runtime(implementation=impl, on_output=sink)
    t0 = time.perf_counter()
    for i in range(n_agents):
        rt.spawn(LIGHT, i)
    t1 = time.perf_counter()
    rt.send_many_slots(rt.slots(range(n_agents))[agents], events, prios)
    processed = rt.run_until_idle()
    t2 = time.perf_counter()
    stats = rt.statistics()
    states = Counter(rt.state(i) for i in range(n_agents))
    return {
        "impl": impl,
        "spawn_s": t1 - t0,
        "run_s": t2 - t1,
        "taken": processed,
        "failed": stats.failed,
        "outputs": outputs,
        "states": states,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    agents = rng.integers(0, args.agents, args.messages)
    events = rng.choice(3, args.messages, p=[0.90, 0.05, 0.05]).astype(np.int32)
    prios = rng.integers(0, 4, args.messages, dtype=np.int32)

    impls = ["native", "python"] if engine.USE_EXTENSIONS else ["python"]
    print(
        f"{args.agents:,} agents, {args.messages:,} messages (seed {args.seed}), "
        f"priorities LOW..CRITICAL uniform; compiled module loaded: {engine.USE_EXTENSIONS}\n"
    )
    print(
        f"{'hot path':<9} {'spawn s':>8} {'send+run s':>10} {'msg/s':>12} {'messages':>10} "
        f"{'failed':>7}"
    )
    results = [run(impl, args.agents, agents, events, prios) for impl in impls]
    for r in results:
        rate = r["taken"] / r["run_s"]
        print(
            f"{r['impl']:<9} {r['spawn_s']:>8.2f} {r['run_s']:>10.3f} {rate:>12,.0f} "
            f"{r['taken']:>10,} {r['failed']:>7,}"
        )
    if len(results) == 2:
        a, b = results
        same = a["states"] == b["states"] and a["outputs"] == b["outputs"]
        print(
            f"\ncompiled / twin speed: {b['run_s'] / a['run_s']:.0f}x; "
            f"same final states and outputs: {same}"
        )
        if not same:
            raise SystemExit("the two implementations disagree")
    final = results[0]
    print("final states:  " + ", ".join(f"{k}={v:,}" for k, v in sorted(final["states"].items())))
    print("outputs:       " + ", ".join(f"{k}={v:,}" for k, v in sorted(final["outputs"].items())))
    print(f"dead letters:  {final['failed']:,} (inspections of red lights, kept with their error)")


if __name__ == "__main__":
    main()
