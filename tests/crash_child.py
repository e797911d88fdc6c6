"""The workload of tests/test_crash.py, run as a child process that the test kills with
SIGKILL: agents under ``durability="log"`` on a store (paused, resumed and hibernated at
random), fed messages numbered from
``first``; every message is acknowledged (a line in the ack file) only after the engine
said it is committed (``await rt.send`` returned, or ``await rt.flush()`` after
``send_many``). Usage: ``python crash_child.py STORE ACKS FIRST [sqlite|postgres]``.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from typing import Any

import trio

import engine
import engine.store as store

AGENTS = 8

counter = engine.Machine(
    "counter", ["even", "odd"], "even", [("even", "inc", "odd"), ("odd", "inc", "even")]
)


@counter.handler("*", "inc")
def inc(agent: engine.AgentContext, event: engine.Event) -> None:
    agent.data["seen"].append(event.payload)  # what this agent processed, in order


def open_store(where: str, kind: str) -> Any:
    return store.SQLiteStore(where) if kind == "sqlite" else store.PostgresStore(where)


async def main(where: str, acks_path: str, first: int, kind: str) -> None:
    rng = random.Random(first)
    s = open_store(where, kind)
    acks = open(acks_path, "a", buffering=1)  # noqa: SIM115 (killed, never closed)
    async with engine.open_runtime(store=s, durability="log", restore=[counter]) as rt:
        for i in range(AGENTS):
            if i not in rt:
                rt.spawn(counter, i, {"seen": []})
        await rt.flush()
        print("ready", flush=True)
        seq = first
        while True:
            if rng.random() < 0.05:  # some mail waits in paused agents' mailboxes
                who = rng.randrange(AGENTS)
                (rt.resume if rt.paused(who) else rt.pause)(who)
            if rng.random() < 0.1:  # and some agents sleep in the store until mail comes
                with contextlib.suppress(engine.AgentBusyError):
                    rt.hibernate(rng.randrange(AGENTS))
            if rng.random() < 0.5:
                await rt.send(rng.randrange(AGENTS), "inc", seq)
                acks.write(f"{seq}\n")
                seq += 1
            else:
                n = rng.randrange(1, 40)
                rt.send_many([rng.randrange(AGENTS) for _ in range(n)], ["inc"] * n,
                             payloads=list(range(seq, seq + n)))
                await rt.flush()
                acks.write("".join(f"{k}\n" for k in range(seq, seq + n)))
                seq += n


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]),
             sys.argv[4] if len(sys.argv) > 4 else "sqlite")
