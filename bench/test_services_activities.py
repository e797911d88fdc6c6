"""engine.services.activities: what the service layer costs per activity over the raw engine.

Group ``services-activities`` (target: the layer <= 2x the raw engine): BENCH_ACTIVITIES
(default 100 000, or BENCH_MESSAGES if fewer) STATE_CHANGE activities go to one agent, sent
and processed, timed from the first send to the agent idle again, in two ways on the same
runtime (``open_runtime`` with ``metrics=True``, as ``open_activity_service`` opens its own):

* ``engine``: the raw engine doing the same work: an agent of a one-state machine with one
  event, ``STATE_CHANGE``, whose Python handler stores the payload's ``"payload"`` as the
  agent's data; each message's payload is built in the timed loop, the same plain mapping
  ``{"id", "type", "payload"}`` the service side sends, with ``rt.send``.
* ``service``: ``service.send(agent_id, {"id", "type", "payload"})``, a plain mapping built
  in the timed loop as the design's users write activities, so the layer's own per-message
  work is timed: it checks the mapping and makes the ``Activity``, checks its type and the
  agent, notes the status stamp, queues it through the agent's ref; processed by the
  service's handler (notes the stamp, applies the type, the workflow if any, stores the
  state).

Each round runs both in turn on warm agents; reported per test is the median over rounds of
(service time / engine time) as ``ratio`` and each mode's µs per activity. Two tests: the
awaited ``send`` (a trio checkpoint per activity, as a user's task does) and ``send_nowait``
in a loop with one ``wait_until_idle`` (the per-activity work without the checkpoint).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest
import trio

import engine
from engine.services.activities import Activity, ActivityType, open_activity_service

NORMAL = Activity("x", "STATE_CHANGE").priority  # an activity's default lane

ACTIVITIES = int(
    os.environ.get(
        "BENCH_ACTIVITIES", min(100_000, int(os.environ.get("BENCH_MESSAGES", "1000000")))
    )
)
ROUNDS = int(os.environ.get("BENCH_ACTIVITY_ROUNDS", "9"))


def raw_machine() -> engine.Machine:
    machine = engine.Machine(
        "raw", ["active"], "active", [("active", ActivityType.STATE_CHANGE.value, None)]
    )

    @machine.handler("active", ActivityType.STATE_CHANGE.value)
    def apply(agent: Any, event: Any) -> None:
        agent.data = event.payload["payload"]

    return machine


def measure(benchmark: Any, impl: str, awaited: bool) -> None:
    n = ACTIVITIES
    rounds = ROUNDS if impl == "native" else 1
    kind = ActivityType.STATE_CHANGE.value
    times: dict[str, list[float]] = {"engine": [], "service": []}

    async def main() -> None:
        async with engine.open_runtime(implementation=impl, metrics=True) as rt:
            rt.spawn(raw_machine(), "raw")
            async with open_activity_service(rt) as service:
                await service.create("svc", None)

                async def engine_mode() -> None:
                    if awaited:
                        for i in range(n):
                            payload = {"id": f"a{i}", "type": kind, "payload": i}
                            await rt.send("raw", kind, payload, NORMAL)
                    else:
                        for i in range(n):
                            payload = {"id": f"a{i}", "type": kind, "payload": i}
                            rt.send_nowait("raw", kind, payload, NORMAL)

                async def service_mode() -> None:
                    if awaited:
                        for i in range(n):
                            await service.send("svc", {"id": f"a{i}", "type": kind, "payload": i})
                    else:
                        for i in range(n):
                            service.send_nowait("svc", {"id": f"a{i}", "type": kind, "payload": i})

                for _ in range(rounds):
                    for mode, body in (("engine", engine_mode), ("service", service_mode)):
                        t0 = time.perf_counter()
                        await body()
                        await rt.wait_until_idle()
                        times[mode].append(time.perf_counter() - t0)
                assert rt.data("raw") == rt.data("svc") == n - 1
                assert rt.statistics("svc").processed == rt.statistics("raw").processed

    def run() -> None:
        trio.run(main)

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = np.median(np.array(times["service"]) / np.array(times["engine"]))
    benchmark.extra_info.update(
        ratio=round(float(ratio), 3),
        engine_us_per_activity=round(float(np.median(times["engine"])) / n * 1e6, 3),
        service_us_per_activity=round(float(np.median(times["service"])) / n * 1e6, 3),
        activities=n,
        rounds=rounds,
        system=impl,
    )


@pytest.mark.benchmark(group="services-activities")
def test_send_and_process(benchmark: Any, impl: str) -> None:
    measure(benchmark, impl, awaited=True)


@pytest.mark.benchmark(group="services-activities")
def test_send_nowait_and_process(benchmark: Any, impl: str) -> None:
    measure(benchmark, impl, awaited=False)
