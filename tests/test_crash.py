"""Crash recovery under ``durability="log"``: a child process (tests/crash_child.py) runs a
workload and is killed with SIGKILL at random moments, run after run on the same store; after
each kill the store is recovered and every acknowledged message must be accounted for.

What is checked after each kill: the store restores without a failed record; every message
the child acknowledged (it acknowledges only after the engine said the message is
committed) is, in the recovered runtime, either processed exactly once (in its agent's
``seen`` list) or still queued, never both and never twice; no message is processed twice;
each agent's state agrees with how many messages it processed. ``ENGINE_CRASH_KILLS`` sets
the number of kills (50 by default). Half the runs use the compiled hot path, half the
pure-Python twin, on the same store.
"""

from __future__ import annotations

import collections
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from crash_child import counter, open_store

import engine
import engine.store as store

KILLS = int(os.environ.get("ENGINE_CRASH_KILLS", "50"))
CHILD = Path(__file__).with_name("crash_child.py")


def _acked(path: Path) -> list[int]:
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")[:-1]  # a line cut by the kill has no newline: not acknowledged
    return [int(line) for line in lines]


def _recover(where: str, kind: str, impl: str) -> tuple[list[int], list[int]]:
    rt = engine.Runtime(implementation=impl)
    s = open_store(where, kind)
    try:
        report = store.load(rt, s, [counter])
    finally:
        s.close()
    assert not report.failed, report.failed
    processed, queued = [], []
    for agent_id in rt.agent_ids():
        seen = rt.data(agent_id)["seen"]
        assert rt.state(agent_id) == ("odd" if len(seen) % 2 else "even")
        assert rt.statistics(agent_id).processed == len(seen)
        processed += seen
        queued += [payload for _, _, payload in rt.queued(agent_id)]
    return processed, queued


def run_kills(where: str, kind: str, acks: Path, kills: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    first = 0
    totals = collections.Counter[str]()
    for run in range(kills):
        env = dict(os.environ)
        if run % 2:
            env["ENGINE_NO_EXTENSIONS"] = "1"
        child = subprocess.Popen(
            [sys.executable, str(CHILD), where, str(acks), str(first), kind],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert child.stdout is not None
        if rng.random() < 0.2:  # anywhere, restore and start-up included
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            assert child.stdout.readline() == b"ready\n", "the child did not start"
            time.sleep(rng.uniform(0.0, 0.3))
        child.kill()
        child.wait()
        child.stdout.close()
        processed, queued = _recover(where, kind, "python" if run % 2 else "native")
        acked = _acked(acks)
        counts = collections.Counter(processed + queued)
        twice = [seq for seq, n in counts.items() if n > 1]
        assert not twice, f"run {run}: processed or queued twice: {twice[:10]}"
        missing = set(acked) - set(counts)
        assert not missing, f"run {run}: acknowledged but lost: {sorted(missing)[:10]}"
        totals["kills"] += 1
        totals["acknowledged"] = len(acked)
        totals["processed"] = len(processed)
        totals["queued"] = len(queued)
        totals["committed, not yet acknowledged"] = len(set(counts) - set(acked))
        first = max([*counts, *acked, first]) + 1
    return dict(totals)


def test_no_committed_message_is_lost_across_sigkills_on_sqlite(tmp_path: Path) -> None:
    totals = run_kills(str(tmp_path / "crash.db"), "sqlite", tmp_path / "acks", KILLS, 20261130)
    print("crash test (SQLite):", totals)
    assert totals["kills"] == KILLS
    assert totals["acknowledged"] > KILLS  # the runs did real work between the kills
    assert totals["queued"] > 0  # some were recovered queued, not only processed


def test_no_committed_message_is_lost_across_sigkills_on_postgres(
    tmp_path: Path, postgres_db: str
) -> None:
    totals = run_kills(postgres_db, "postgres", tmp_path / "acks", KILLS, 20261201)
    print("crash test (PostgreSQL):", totals)
    assert totals["kills"] == KILLS
    assert totals["acknowledged"] > KILLS
    assert totals["queued"] > 0
