"""The driver's side: a ``Cluster`` of shard actors, offering the runtime's API by agent id."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, final

import attrs

from ..core._exceptions import EngineError, InvalidArgumentError
from ..core._machine import Machine
from ..core._types import Priority
from ..store._stores import Store
from ._actors import Coordinator, Shard, _Elsewhere
from ._routing import Routes
from ._shard import DRIVER, AgentMovedError, check_id, shard_name


class ShardFailedError(EngineError):
    """A shard's process died while serving a call. Ray restarts it and it recovers its
    agents from its store (with stores); the call itself may or may not have taken effect
    (a send may have been queued, a request processed): it is not retried."""

    def __init__(self, shard: int, detail: str) -> None:
        super().__init__(f"shard {shard} failed: {detail}")
        self.shard = shard


@final
@attrs.frozen
class ClusterStatistics:
    """The cluster's figures: per shard, and totals."""

    shards: tuple[Any, ...]
    """Each shard's ``RuntimeStatistics``, in shard order."""
    agents: int
    processed: int
    failed: int
    dead_letters: int


_RETRIES = 50


@final
class Cluster:
    """Shard actors on Ray, each hosting a runtime with the compiled dispatcher; agents placed
    by a stable hash of their id (with a directory for moved ones). Methods block until
    their shard answers (from trio, run them with ``trio.to_thread.run_sync``)."""

    def __init__(
        self,
        setup: Callable[[], Iterable[Machine]],
        *,
        shards: int = 2,
        store: Callable[[int], Store] | None = None,
        runtime_options: dict[str, Any] | None = None,
        num_cpus: float = 0,
        name: str | None = None,
        namespace: str | None = None,
        virtual_time: bool = False,
    ) -> None:
        import ray

        if type(shards) is not int or not 1 <= shards <= 1024:
            raise InvalidArgumentError(f"shards must be an int in [1, 1024], got {shards!r}")
        if not callable(setup):
            raise InvalidArgumentError("setup must be a callable returning the machines")
        if not ray.is_initialized():
            raise InvalidArgumentError("call ray.init() first (or use open_cluster)")
        self._ray = ray
        self.name = name or uuid.uuid4().hex[:12]
        self._namespace = namespace
        self._setup = setup
        self._store = store
        self._options = dict(runtime_options or {})
        self._num_cpus = num_cpus
        self.virtual_time = bool(virtual_time)
        self._key = secrets.token_bytes(32)  # what shards present to each other (_wire)
        self._next_index = itertools.count(shards)
        indexes = list(range(shards))
        self.routes = Routes(indexes)
        self._coordinator: Any = (
            ray.remote(Coordinator)
            .options(name=f"engine-cluster:{self.name}:coordinator", namespace=namespace)
            .remote(indexes)
        )
        self._handles: dict[int, Any] = {}
        for index in indexes:
            self._handles[index] = self._start(index)
        self._introduce()

    def _introduce(self) -> None:
        """Tell every shard every other's incarnation (a shard started before another
        could not learn it at its start)."""
        order = self.shards
        pings = self._wait([self._handles[s].ping.remote() for s in order], order)
        self._wait(
            [
                self._handles[s].peer_restarted.remote(index, incarnation)
                for s in order
                for index, incarnation in pings
                if index != s
            ]
        )

    def _start(self, index: int) -> Any:
        return (
            self._ray.remote(Shard)
            .options(
                name=shard_name(self.name, index),
                namespace=self._namespace,
                max_restarts=-1,
                max_task_retries=0,
                max_concurrency=32,
                num_cpus=self._num_cpus,
            )
            .remote(
                self.name,
                index,
                self._setup,
                self._store,
                self._options,
                self._namespace,
                self._coordinator,
                self.virtual_time,
                self._key,
            )
        )

    # -- calls ----------------------------------------------------------------------------

    def _wait(self, refs: Any, shards: int | list[int] = -1) -> Any:
        """``ray.get``, with a shard's failure as ``ShardFailedError`` naming it (``shards``:
        the shard of ``refs``, or of each of them) and an engine error as itself."""
        ray = self._ray
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            shard = shards if isinstance(shards, int) else -1
            if isinstance(shards, list):
                for ref, index in zip(refs, shards, strict=True):
                    try:
                        ray.get(ref)
                    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                        shard = index
                        break
                    except Exception:
                        continue
            raise ShardFailedError(shard, type(exc).__name__) from None

    def _remote(self, shard: int, method: str, *args: Any) -> Any:
        """Start ``method`` on a shard; arguments that cannot cross processes are refused."""
        try:
            return getattr(self._handles[shard], method).remote(*args)
        except TypeError as exc:  # Ray could not serialise an argument
            raise InvalidArgumentError(
                f"{method}: an argument cannot be sent to a shard ({str(exc).splitlines()[0]})"
            ) from None

    def _on(self, agent_id: Any, method: str, *args: Any) -> Any:
        """Call ``method`` on the agent's shard; again where it moved if it was not there."""
        check_id(agent_id)
        for _ in range(_RETRIES):
            shard = self.routes(agent_id)
            try:
                return self._wait(self._remote(shard, method, *args), shard)
            except (_Elsewhere, AgentMovedError):
                time.sleep(0.01)  # a move is under way, or was: ask where it is now
        raise EngineError(f"agent {agent_id!r} kept moving")

    @property
    def shards(self) -> list[int]:
        """The shard numbers."""
        return sorted(self._handles)

    def shard_of(self, agent_id: Any) -> int:
        """The shard the agent lives on (or would, for an id not spawned)."""
        check_id(agent_id)
        return self.routes(agent_id)

    def spawn(
        self, machine: str | Machine, agent_id: Any, data: Any = None, **options: Any
    ) -> None:
        """Spawn an agent of the machine of that name (from ``setup``) on its shard."""
        name = machine.name if isinstance(machine, Machine) else machine
        self._on(agent_id, "spawn", name, agent_id, data, options)

    def send(
        self, agent_id: Any, event: Any, payload: Any = None, priority: int = Priority.NORMAL
    ) -> None:
        """Queue a message (returns once its shard took it; waits while a bounded mailbox is
        full). Raises the errors of ``Runtime.send_nowait``."""
        check_id(agent_id)
        shard = self.routes(agent_id)
        self._wait(self._remote(shard, "send", agent_id, event, payload, int(priority)), shard)

    def send_many(
        self,
        agent_ids: Sequence[Any],
        events: Sequence[Any],
        priorities: int | Sequence[int] = Priority.NORMAL,
        payloads: Sequence[Any] | None = None,
    ) -> None:
        """Queue many messages: one call per shard, all shards at once. A shard checks its
        part before queuing any of it (as ``Runtime.send_many``); another shard's part may
        have been queued when one refuses."""
        ids = list(agent_ids)
        evs = list(events)
        if len(evs) != len(ids):
            raise InvalidArgumentError(f"{len(evs)} events for {len(ids)} agents")
        pl = None if payloads is None else list(payloads)
        if pl is not None and len(pl) != len(ids):
            raise InvalidArgumentError(f"{len(pl)} payloads for {len(ids)} agents")
        pr = None if isinstance(priorities, int) else [int(p) for p in priorities]
        if pr is not None and len(pr) != len(ids):
            raise InvalidArgumentError(f"{len(pr)} priorities for {len(ids)} agents")
        parts: dict[int, list[int]] = {}
        for i, agent_id in enumerate(ids):
            check_id(agent_id)
            parts.setdefault(self.routes(agent_id), []).append(i)
        refs = []
        for shard, idx in parts.items():
            refs.append(
                self._remote(
                    shard,
                    "send_many",
                    [ids[i] for i in idx],
                    [evs[i] for i in idx],
                    priorities if pr is None else [pr[i] for i in idx],
                    None if pl is None else [pl[i] for i in idx],
                )
            )
        self._wait(refs)

    def request(
        self,
        agent_id: Any,
        event: Any,
        payload: Any = None,
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
    ) -> Any:
        """``Runtime.request`` on the agent's shard: its handler's ``Reply``."""
        return self._on(agent_id, "request", agent_id, event, payload, int(priority), timeout)

    def state(self, agent_id: Any) -> str:
        return str(self._on(agent_id, "read", "state", agent_id))

    def data(self, agent_id: Any) -> Any:
        return self._on(agent_id, "read", "data", agent_id)

    def status(self, agent_id: Any) -> Any:
        return self._on(agent_id, "read", "status", agent_id)

    def terminate(self, agent_id: Any) -> int:
        """Terminate an agent; how many queued messages went with it."""
        return int(self._on(agent_id, "read", "terminate", agent_id))

    def statistics(self, agent_id: Any = DRIVER) -> Any:
        """One agent's ``AgentStatistics``, or with no id the ``ClusterStatistics``."""
        if agent_id is not DRIVER:
            return self._on(agent_id, "read", "statistics", agent_id)
        order = self.shards
        stats = self._wait([self._handles[s].statistics.remote() for s in order], order)
        return ClusterStatistics(
            tuple(stats),
            sum(s.agents for s in stats),
            sum(s.processed for s in stats),
            sum(s.failed for s in stats),
            sum(s.dead_letters for s in stats),
        )

    def routing(self) -> list[tuple[int, int, int, int]]:
        """Per shard: agents it still forwards to their new shard (a move not yet settled),
        agents on their way in, batches held for a gap, and failures it kept (mail or
        moves that went wrong with no caller to tell)."""
        order = self.shards
        return list(self._wait([self._handles[s].routing.remote() for s in order], order))

    def agent_ids(self) -> list[Any]:
        """Every agent of every shard (resident or hibernated)."""
        order = self.shards
        lists = self._wait([self._handles[s].agent_ids.remote() for s in order], order)
        return [a for part in lists for a in part]

    def dead_letters(self) -> list[Any]:
        """Dead letters of every shard, with mail that reached no agent between shards."""
        order = self.shards
        lists = self._wait([self._handles[s].dead_letters.remote() for s in order], order)
        return [d for part in lists for d in part]

    def wait_until_idle(self, timeout: float = 60.0, poll: float = 0.002) -> None:
        """Block until no shard has mail, nothing is between shards and no move is under
        way, seen twice in a row with the same counts (so nothing was in flight between
        the two looks)."""
        for name, value in (("timeout", timeout), ("poll", poll)):
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise InvalidArgumentError(f"{name} must be a positive finite number")
        deadline = time.monotonic() + timeout
        last = None
        while True:
            order = self.shards
            answers = self._wait([self._handles[s].quiet.remote() for s in order], order)
            looks = dict(zip(order, answers, strict=True))
            idle = all(look[0] for look in looks.values())
            # per pair of live shards: what one sent the other's current incarnation, and
            # what that one received from the first's current incarnation
            pairs = {
                (a, b): (looks[a][2].get((b, looks[b][1]), 0), looks[b][3].get(a, 0))
                for a in order
                for b in order
                if a != b
            }
            balanced = all(sent == got for sent, got in pairs.values())
            if idle and balanced and pairs == last:
                return
            last = pairs if idle and balanced else None
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster did not settle in {timeout} s")
            time.sleep(poll)

    def on_each_shard(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """``fn(rt, *args)`` on every shard's runtime, on its own thread (it must not
        block); the results in shard order. ``fn`` and its results cross processes."""
        order = self.shards
        return list(self._wait([self._handles[s].run_fn.remote(fn, args) for s in order]))

    # -- virtual time ---------------------------------------------------------------------

    def now(self) -> float:
        """The shards' clock (virtual time: all shards agree between calls)."""
        times = self._wait([h.time.remote() for h in self._handles.values()])
        return float(max(t for t, _ in times))

    def run_until(self, when: float) -> None:
        """Virtual time, in lock-step: let the cluster settle, move every shard's clock to
        the earliest timer due anywhere, settle again, and so on up to ``when``. Every
        message sent at an instant is processed at that instant, on every shard, before
        any clock moves on (what makes a sharded simulation deterministic: see the
        README)."""
        if not self.virtual_time:
            raise InvalidArgumentError("run_until needs Cluster(virtual_time=True)")
        if not isinstance(when, (int, float)) or not math.isfinite(when):
            raise InvalidArgumentError(f"run_until takes a finite time, got {when!r}")
        while True:
            self.wait_until_idle()
            times = self._wait([self._handles[s].time.remote() for s in self.shards])
            due = [d for _, d in times if d is not None]
            step = min(due) if due else None
            if step is None or step > when:
                self._wait([h.advance.remote(when) for h in self._handles.values()])
                self.wait_until_idle()
                return
            self._wait([h.advance.remote(step) for h in self._handles.values()])

    # -- subscriptions ----------------------------------------------------------------------

    def subscribe(self, agent_id: Any = DRIVER) -> ClusterSubscription:
        """Follow transition records of every shard (or of one agent, wherever it lives):
        records are kept on each shard from now on; ``poll`` reads what came since."""
        self._wait([self._handles[s].follow.remote() for s in self.shards])
        return ClusterSubscription(self, agent_id)

    # -- moves ----------------------------------------------------------------------------

    def move(self, agent_id: Any, shard: int) -> None:
        """Move a live agent to ``shard`` via a snapshot: same id, no message lost or
        reordered (per sender), mail arriving meanwhile forwarded. Its running ``Work`` is
        cancelled (it gets ``failed``/nothing as on terminate)."""
        check_id(agent_id)
        if shard not in self._handles:
            raise InvalidArgumentError(f"no shard {shard!r}")
        source = self.routes(agent_id)
        if source == shard:
            return
        senders = [s for s in self.shards if s != source] + [DRIVER]
        self._wait(self._handles[shard].expect_agent.remote(agent_id, source, senders), shard)
        try:
            self._wait(self._handles[source].move_agent_out.remote(agent_id, shard), source)
        except BaseException:  # nothing moved: the new home forgets it
            with contextlib.suppress(Exception):
                self._wait(self._handles[shard].unexpect_agent.remote(agent_id), shard)
            raise
        self._wait(self._coordinator.place.remote(agent_id, shard))
        self.routes.directory[agent_id] = shard
        self._wait(
            [
                self._handles[s].route.remote(agent_id, shard, source)
                for s in self.shards
                if s != source
            ]
        )
        self._wait(self._handles[source].driver_switched.remote(agent_id), source)
        for _ in range(5000):
            if self._wait(self._handles[shard].is_settled.remote(agent_id), shard):
                return
            time.sleep(0.002)
        raise EngineError(f"agent {agent_id!r} did not settle on shard {shard}")

    def add_shard(self) -> int:
        """Start one more shard and move to it, live, the agents whose rendezvous hash now
        picks it (about 1/n of them; agents placed by ``move`` stay put); its number."""
        index = next(self._next_index)
        shards = [*self.shards, index]
        self._handles[index] = self._start(index)
        self._introduce()
        self._relayout(shards)
        return index

    def remove_shard(self, shard: int) -> None:
        """Move every agent of ``shard`` to where the hash puts it among the others, live,
        then stop it once nothing is in flight to it."""
        if shard not in self._handles:
            raise InvalidArgumentError(f"no shard {shard!r}")
        if len(self._handles) == 1:
            raise InvalidArgumentError("cannot remove the last shard")
        self._relayout([s for s in self.shards if s != shard])
        self.wait_until_idle()
        handle = self._handles.pop(shard)
        with contextlib.suppress(Exception):
            self._ray.get(handle.shutdown.remote(), timeout=30)
        self._ray.kill(handle, no_restart=True)

    def _relayout(self, shards: list[int]) -> None:
        """Move the agents whose home changes under ``shards``, then route by it."""
        after = Routes(shards)
        pinned = self.routes.directory
        moved = []
        for shard in self.shards:
            for agent_id in self._wait(self._handles[shard].agent_ids.remote(), shard):
                home = after.home(agent_id)
                stays = agent_id in pinned and pinned[agent_id] in shards
                if not stays and home != shard:
                    self.move(agent_id, home)
                    moved.append(agent_id)
        directory = {a: s for a, s in self.routes.directory.items() if after.home(a) != s}
        self._wait(self._coordinator.set_shards.remote(shards))
        for agent_id in moved:
            self._wait(self._coordinator.place.remote(agent_id, directory.get(agent_id)))
        self._wait([h.set_shards.remote(shards, directory) for h in self._handles.values()])
        self.routes.set_shards(shards)
        self.routes.directory = directory

    def close(self) -> None:
        """Stop every shard (their runtimes exit as ``open_runtime`` does) and the actors."""
        ray = self._ray
        for handle in self._handles.values():
            with suppress(Exception):
                ray.get(handle.shutdown.remote(), timeout=30)
            ray.kill(handle, no_restart=True)
        ray.kill(self._coordinator, no_restart=True)
        self._handles.clear()

    def kill_shard(self, shard: int) -> None:
        """Kill a shard's process as a crash would (Ray restarts it; it recovers from its
        store). For tests and drills."""
        self._ray.kill(self._handles[shard], no_restart=False)

    def handle(self, shard: int) -> Any:
        """The shard's Ray actor handle."""
        return self._handles[shard]


@final
class ClusterSubscription:
    """Transition records of a cluster, read shard by shard (``poll``)."""

    def __init__(self, cluster: Cluster, agent_id: Any) -> None:
        self._cluster = cluster
        self._agent = agent_id
        self._cursor: dict[int, int | None] = dict.fromkeys(cluster.shards)
        self.gaps: list[tuple[int, Any]] = []
        """``(shard, Gap)`` wherever records were missed."""

    def poll(self, limit: int = 10_000) -> list[tuple[int, Any]]:
        """``(shard, Transition)`` recorded since the last poll, in each shard's order."""
        c = self._cluster
        order = [s for s in c.shards if s in self._cursor]
        answers = c._wait([c.handle(s).records.remote(self._cursor[s], limit) for s in order])
        out = []
        for shard, (gap, items, after) in zip(order, answers, strict=True):
            self._cursor[shard] = after
            if gap is not None:
                self.gaps.append((shard, gap))
            for t in items:
                if self._agent is DRIVER or t.agent_id == self._agent:
                    out.append((shard, t))
        return out

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        """Every record from now on, polling every 10 ms (stops when the cluster closes)."""
        while True:
            items = self.poll()
            yield from items
            if not items:
                time.sleep(0.01)


@contextmanager
def open_cluster(
    setup: Callable[[], Iterable[Machine]], *, shards: int = 2, **options: Any
) -> Iterator[Cluster]:
    """A ``Cluster`` for the body of a ``with`` (``ray.init`` first when Ray is not running,
    locally with no dashboard; it is left running)."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    cluster = Cluster(setup, shards=shards, **options)
    try:
        yield cluster
    finally:
        cluster.close()
