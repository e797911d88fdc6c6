"""The Ray actors: a shard (``ShardHost`` with its methods exposed) and the coordinator.

The coordinator is a small actor holding the layout every shard routes by (the shard
numbers, the directory of moved agents, each shard's incarnation). A shard restarted by Ray
asks it for the layout and tells its peers its new incarnation, so routing heals without
the driver; the driver writes every change there first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import attrs
import trio

from ..core._exceptions import AgentNotFoundError, EngineError
from ..core._machine import Machine
from ..store._snapshot import MachineNotFoundError
from ..store._stores import Store
from ._shard import DRIVER, ShardHost, shard_name


class Coordinator:
    """The layout: shards, directory, incarnations."""

    def __init__(self, shards: list[int]) -> None:
        self.shards = list(shards)
        self.directory: dict[Any, int] = {}
        self.incarnations: dict[int, str] = {}

    def layout(self) -> tuple[list[int], dict[Any, int], dict[int, str]]:
        return self.shards, self.directory, self.incarnations

    def register(self, index: int, incarnation: str) -> None:
        self.incarnations[index] = incarnation

    def place(self, agent_id: Any, shard: int | None) -> None:
        if shard is None:
            self.directory.pop(agent_id, None)
        else:
            self.directory[agent_id] = shard

    def set_shards(self, shards: list[int]) -> None:
        self.shards = list(shards)
        for index in list(self.incarnations):
            if index not in shards:
                del self.incarnations[index]


class Shard(ShardHost):
    """A shard actor: each method runs its work on the runtime's trio thread."""

    def __init__(
        self,
        name: str,
        index: int,
        setup: Callable[[], Iterable[Machine]],
        store: Callable[[int], Store] | None,
        runtime_options: dict[str, Any],
        namespace: str | None,
        coordinator: Any,
        virtual_time: bool,
        key: bytes,
    ) -> None:
        import ray

        # the layout first: a restarted shard routes what its recovery sends the right way
        layout = ray.get(coordinator.layout.remote())
        super().__init__(
            name,
            index,
            layout,
            setup,
            store,
            runtime_options,
            namespace,
            virtual_time,
            key=key,
            bind=ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
        )
        ray.get(coordinator.register.remote(index, self.incarnation))
        for peer in layout[0]:  # a restarted shard: its peers number their batches from 0
            if peer != index:
                with contextlib.suppress(ValueError):  # not created yet (the cluster starts)
                    self.peer(peer).peer_restarted.remote(index, self.incarnation)

    def ping(self) -> tuple[int, str]:
        return self.index, self.incarnation

    def peer_restarted(self, index: int, incarnation: str) -> None:
        self.call(self.sender_restarted, index, incarnation)

    def where(self) -> tuple[str, int]:
        """The address of this shard's data plane (its peers connect there)."""
        assert self.address is not None
        return self.address

    # -- the runtime's API, for the driver -------------------------------------------------

    def spawn(self, machine: str, agent_id: Any, data: Any, options: dict[str, Any]) -> None:
        def run() -> None:
            assert self.rt is not None
            try:
                m = self.machines[machine]
            except KeyError:
                raise MachineNotFoundError(agent_id, machine) from None
            if agent_id in self.forward or agent_id in self._coming:
                from ..core._exceptions import AgentExistsError

                raise AgentExistsError(agent_id)
            self.rt.spawn(m, agent_id, data=data, **options)

        self.call(run)

    def send(self, agent_id: Any, event: Any, payload: Any, priority: int) -> None:
        if not self.call(self.offer, agent_id, event, payload, priority, DRIVER, DRIVER):
            assert self.rt is not None
            self.call_async(self.rt.send, agent_id, event, payload, priority)

    def send_many(self, ids: list[Any], events: Any, priorities: Any, payloads: Any) -> None:
        def run() -> None:
            assert self.rt is not None
            if not self.forward and not self._coming:
                self.rt.send_many(ids, events, priorities, payloads)
                return
            for i, agent_id in enumerate(ids):
                p = priorities if isinstance(priorities, int) else int(priorities[i])
                pl = None if payloads is None else payloads[i]
                if not self.offer(agent_id, events[i], pl, p, DRIVER, DRIVER):
                    self.rt.send_nowait(agent_id, events[i], pl, p)

        self.call(run)

    def request(
        self, agent_id: Any, event: Any, payload: Any, priority: int, timeout: float | None
    ) -> Any:
        assert self.rt is not None
        if not self.call(self._here, agent_id):
            raise _Elsewhere(agent_id)
        return self.call_async(
            partial(self.rt.request, agent_id, event, payload, priority=priority, timeout=timeout)
        )

    def _here(self, agent_id: Any) -> bool:
        assert self.rt is not None
        if agent_id in self._coming or agent_id in self.forward:
            return False
        return self.routes(agent_id) == self.index

    def read(self, what: str, agent_id: Any) -> Any:
        def run() -> Any:
            rt = self.rt
            assert rt is not None
            if what == "state":
                return rt.state(agent_id)
            if what == "data":
                return rt.data(agent_id)
            if what == "status":
                return rt.status(agent_id)
            if what == "statistics":
                return rt.statistics(agent_id)
            if what == "terminate":
                return rt.terminate(agent_id)
            raise ValueError(what)

        try:
            return self.call(run)
        except AgentNotFoundError:
            if not self.call(self._here, agent_id):
                raise _Elsewhere(agent_id) from None
            raise

    def run_fn(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        assert self.rt is not None
        return self.call(fn, self.rt, *args)

    def time(self) -> Any:
        """``(now, next timer deadline)`` on this shard's clock."""

        def run() -> tuple[float, float | None]:
            assert self.rt is not None
            return trio.current_time(), self.rt.next_deadline()

        return self.call(run)

    def advance(self, when: float) -> None:
        self.call(self.advance_to, when)

    def routing(self) -> Any:
        """``(agents forwarded elsewhere, agents on their way in, batches held for a gap,
        failures)`` of this shard's routing."""

        def run() -> tuple[int, int, int, int]:
            return len(self.forward), len(self._coming), self.inbox.waiting(), len(self.failures)

        return self.call(run)

    def statistics(self) -> Any:
        assert self.rt is not None
        return self.call(self.rt.statistics)

    def agent_ids(self) -> Any:
        def run() -> list[Any]:
            assert self.rt is not None
            return [*self.rt.agent_ids(), *self.rt.hibernated_ids()]

        return self.call(run)

    def dead_letters(self) -> Any:
        def run() -> list[Any]:
            assert self.rt is not None
            return [portable(d) for d in (*self.rt.dead_letters(), *self.undeliverable)]

        return self.call(run)

    def quiet(self) -> Any:
        return self.call(self.quiescence)

    def follow(self) -> None:
        self.call(self.start_following)

    def records(self, from_seq: int | None, limit: int) -> Any:
        def run() -> tuple[Any, list[Any], int]:
            assert self.rt is not None
            batch = self.rt.records(from_seq, limit)
            items = batch.transitions()
            gap = batch.gap
            if items:
                after = items[-1].seq + 1
            elif gap is not None:
                after = gap.seq + gap.missed
            else:
                after = self.rt._d.record_seq if from_seq is None else from_seq
            return gap, items, after

        return self.call(run)

    # -- moves --------------------------------------------------------------------------

    def expect_agent(self, agent_id: Any, source: int, senders: list[int]) -> None:
        self.call(self.expect, agent_id, source, senders)

    def unexpect_agent(self, agent_id: Any) -> None:
        self.call(self.cancel_expect, agent_id)

    def move_agent_out(self, agent_id: Any, dest: int) -> None:
        self.call(self.move_out, agent_id, dest)

    def route(self, agent_id: Any, dest: int, source: int) -> None:
        self.call(self.set_route, agent_id, dest, source)

    def driver_switched(self, agent_id: Any) -> None:
        self.call(self.switch, agent_id, DRIVER)

    def is_settled(self, agent_id: Any) -> bool:
        return bool(self.call(self.settled, agent_id))

    def set_shards(self, shards: list[int], directory: dict[Any, int]) -> None:
        self.call(self._adopt_all, shards, directory)

    def _adopt_all(self, shards: list[int], directory: dict[Any, int]) -> None:
        self.routes.set_shards(shards)
        self.routes.directory = dict(directory)

    def shutdown(self) -> None:
        self.close()


def portable(letter: Any) -> Any:
    """A dead letter that can cross to the driver: a payload or error that cannot be
    pickled is replaced by its description."""
    import ray.cloudpickle

    try:
        ray.cloudpickle.dumps(letter)  # type: ignore[no-untyped-call]
    except Exception:
        return attrs.evolve(
            letter,
            payload=f"<{type(letter.payload).__name__}: cannot leave its shard>",
            error=EngineError(repr(letter.error)),
        )
    return letter


class _Elsewhere(EngineError):
    """The agent is not on this shard (moved, or moving): the driver routes again."""


__all__ = ["Coordinator", "Shard", "shard_name"]
