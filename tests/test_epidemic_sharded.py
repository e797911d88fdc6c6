"""examples/epidemic_sharded.py on a real local Ray: the same seed gives the same per-day
S/I/R/V curve and the same final state of every person on 1, 2 and 3 shards and on both
hot paths, run after run; another seed gives another epidemic."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine
from engine import hotpath

pytestmark = pytest.mark.cluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import epidemic  # noqa: E402
import epidemic_sharded as sharded  # noqa: E402

AGENTS, DAYS = 2_000, 60
HOT = "python" if hotpath.NO_EXTENSIONS else "native"
"""The compiled hot path, unless the build is pure on purpose (ENGINE_NO_EXTENSIONS=1)."""
Run = Callable[..., Any]


@pytest.fixture(scope="module")
def run(ray_local: Any) -> Run:
    """``run(shards, implementation, seed)``: a sharded simulation, computed once per module."""
    cache: dict[tuple[int, str, int], Any] = {}

    def get(shards: int, implementation: str, seed: int = 1) -> Any:
        key = (shards, implementation, seed)
        if key not in cache:
            p = sharded.Params(agents=AGENTS, seed=seed, days=DAYS, implementation=implementation)
            cache[key] = sharded.simulate(p, shards)
        return cache[key]

    return get


def same(a: Any, b: Any) -> None:
    assert np.array_equal(a.curve, b.curve)
    assert np.array_equal(a.states, b.states)
    assert a.digest == b.digest
    assert a.messages == b.messages  # the same infections, ticks and vaccines


def test_the_shards_run_this_engine(ray_local: Any) -> None:
    """Not whichever checkout the editable install points at (see the ray_local fixture)."""
    p = sharded.Params(agents=10, contacts=2, initial=1)
    sharded.ship()
    c = sharded.Cluster(functools.partial(sharded.setup, p), shards=1, virtual_time=True)
    try:
        assert c.on_each_shard(lambda rt: engine.__file__) == [engine.__file__]
    finally:
        c.close()


def test_a_real_epidemic(run: Run) -> None:
    r = run(2, HOT)
    assert r.implementation == HOT
    assert r.shards == 2
    assert (r.curve.sum(axis=1) == AGENTS).all()
    assert (np.diff(r.curve[:, sharded.S]) <= 0).all()  # nobody becomes susceptible again
    assert r.curve[:, sharded.I].max() > AGENTS // 10
    assert r.curve[-1, sharded.R] > AGENTS // 3
    assert r.curve[-1, sharded.V] > 0
    campaign = r.params.campaign  # vaccines from half past its start (in its row)
    assert (r.curve[:campaign, sharded.V] == 0).all()
    assert r.curve[campaign, sharded.V] > 0
    # the last row of the curve is what every person ends in
    assert r.curve[-1].tolist() == np.bincount(r.states, minlength=4).tolist()
    assert r.dead_letters == 0


def test_same_seed_same_outcome_on_any_number_of_shards(run: Run) -> None:
    one = run(1, HOT)
    same(run(2, HOT), one)
    same(run(3, HOT), one)


@pytest.mark.skipif(hotpath.NO_EXTENSIONS, reason="ENGINE_NO_EXTENSIONS=1: one hot path")
def test_same_seed_same_outcome_on_the_pure_python_hot_path(run: Run) -> None:
    twin = run(3, "python")
    assert twin.implementation == "python"
    same(twin, run(1, HOT))


def test_a_rerun_gives_the_same_outcome(run: Run) -> None:
    """Another cluster, other timings of the batches between shards: the same outcome."""
    first = run(3, HOT)
    p = sharded.Params(agents=AGENTS, seed=1, days=DAYS, implementation=HOT)
    same(sharded.simulate(p, 3), first)


def test_another_seed_gives_another_epidemic(run: Run) -> None:
    other = run(2, HOT, 2)
    assert not np.array_equal(other.curve, run(2, HOT).curve)
    assert other.digest != run(2, HOT).digest


def test_draws_are_keyed_not_sequential() -> None:
    draws = [
        sharded.uniform(1, person, day, k)
        for person in range(50)
        for day in range(4)
        for k in range(8)
    ]
    assert all(0 <= u < 1 for u in draws)
    assert len(set(draws)) == len(draws)
    assert abs(np.mean(draws) - 0.5) < 0.03
    assert sharded.uniform(1, 7, 3, 2) == sharded.uniform(1, 7, 3, 2)
    assert sharded.uniform(2, 7, 3, 2) != sharded.uniform(1, 7, 3, 2)


def test_the_single_process_demo_depends_on_processing_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Why the sharded model needed keyed draws: in examples/epidemic.py the shared random
    stream follows the processing order, so merely infecting the same patients zero in
    another order changes the epidemic."""
    p = epidemic.Params(agents=AGENTS, seed=1, days=DAYS, implementation=HOT)
    before = epidemic.simulate(p)
    world = epidemic.world

    def reversed_world(p: Any) -> Any:
        contacts, illness, patients_zero, order = world(p)
        return contacts, illness, patients_zero[::-1], order

    monkeypatch.setattr(epidemic, "world", reversed_world)
    after = epidemic.simulate(p)
    assert not np.array_equal(before.curve, after.curve)


def test_script_prints_the_outcome_and_writes_png(
    ray_local: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "curves.png"
    sharded.main(["--agents", "300", "--days", "15", "--shards", "2", "--plot", str(png)])
    out = capsys.readouterr().out
    for label in ("shards               2", "final S / I / R / V", "blake2b"):
        assert label in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args", [["--shards", "0"], ["--agents", "0"], ["--days", "0"]])
def test_script_refuses_bad_arguments(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        sharded.main([*args, "--plot", ""])
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err
