"""One shard: a runtime under trio in a thread of a Ray actor, and its part of the routing.

Theory of operation: the actor's ``__init__`` starts a thread that runs ``open_runtime``
(with the shard's own store and the commit log when the cluster has stores: a restarted
shard recovers its agents there) and waits until it runs. Every actor method runs on one of
Ray's threads and does its work on the trio thread (``trio.from_thread``), so the runtime is
only ever touched by its own thread and nothing needs a lock.

Mail between shards: the runtime's ``route_sends`` gives the shard every ``Send`` action for
an agent that is not here; the shard files it in its ``Outbox`` under the agent's shard and,
once per drain (a callback the trio loop runs after the current step), sends each other
shard one numbered batch (``_channel``). Received batches are applied in order per sender.

A live move of agent X from shard A to shard B keeps every sender's order:
1. ``expect``: B notes that X is coming from A and which senders it must hear from.
2. ``move_out``: A captures X (its mail, timers and data), terminates it, forwards
   everything for X to B from now on, and sends ``arrive`` with the record on its channel
   to B.
3. Every other sender (each shard, and the driver) switches its route for X to B and sends a
   ``switch`` marker to A, which forwards it to B after whatever that sender had sent A for
   X. Mail a sender sends B directly after switching is held at B until its marker comes.
4. When B has the record and every marker, it restores X, then queues what A forwarded, then
   what each sender sent directly, in order.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import trio
import trio.testing

from ..core._exceptions import EngineError, InvalidArgumentError
from ..core._machine import Machine
from ..core._types import DeadLetter, DeadLetterReason, Priority
from ..environment._open import open_runtime
from ..runtime._runtime import Runtime
from ..store._snapshot import capture, decode, encode, restore
from ..store._stores import Store
from ._channel import Inbox, Item, Outbox
from ._routing import Routes

DRIVER = -1
"""The sender number of the driver process."""
UNDELIVERABLE_KEPT = 1000


class ShardHost:
    """The body of a shard actor (``ray.remote`` is applied by ``engine.cluster``)."""

    def __init__(
        self,
        name: str,
        index: int,
        shards: list[int],
        setup: Callable[[], Iterable[Machine]],
        store: Callable[[int], Store] | None,
        runtime_options: dict[str, Any],
        namespace: str | None,
        virtual_time: bool = False,
    ) -> None:
        self.name = name
        self.clock = trio.testing.MockClock() if virtual_time else None
        self.index = index
        self.incarnation = uuid.uuid4().hex
        self._namespace = namespace
        self.machines = {m.name: m for m in setup()}
        self.routes = Routes(shards)
        self.outbox = Outbox()
        self.inbox = Inbox()
        self._peers: dict[int, Any] = {}
        self._flushing = False
        self.undeliverable: deque[DeadLetter] = deque(maxlen=UNDELIVERABLE_KEPT)
        self.undeliverable_count = 0
        # moves: agents that left (-> their shard), and agents on their way in
        self.forward: dict[Any, int] = {}
        self._coming: dict[Any, _Arrival] = {}
        self._store = store(index) if store is not None else None
        self._options = runtime_options
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stop: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self.rt: Runtime | None = None
        self._thread = threading.Thread(target=self._host, name=f"shard-{index}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    # -- the trio thread ----------------------------------------------------------------

    def _host(self) -> None:
        try:
            trio.run(self._main, clock=self.clock)
        except BaseException as exc:
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        durable = self._store is not None
        async with open_runtime(
            store=self._store,
            durability="log" if durable else "none",
            restore=list(self.machines.values()) if durable else None,
            **self._options,
        ) as rt:
            self.rt = rt
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            rt.route_sends(self._route)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the trio thread (from one of Ray's)."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def call_async(self, fn: Callable[..., Any], *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def close(self) -> None:
        if self._token is not None and self._stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(timeout=30)

    # -- routing (trio thread) ------------------------------------------------------------

    def _route(self, send: Any) -> bool:
        """The runtime's router: a Send action for an agent not resident here."""
        return self.offer(
            send.agent_id, send.event, send.payload, int(send.priority), self.index, None
        )

    def offer(
        self,
        agent_id: Any,
        event: Any,
        payload: Any,
        priority: int,
        sender: int,
        via: int | None,
    ) -> bool:
        """Place one message for ``agent_id`` (from ``sender``, arrived over ``via``'s
        channel, None when made here): held for a move, forwarded, or sent on. False when it
        is for this shard (the runtime queues it, waking a hibernated agent, or dead-letters
        an unknown id)."""
        coming = self._coming.get(agent_id)
        if coming is not None:
            coming.offer((agent_id, event, payload, priority, sender), via)
            return True
        dest = self.forward.get(agent_id)
        if dest is None:
            dest = self.routes(agent_id)
        if dest == self.index:
            return False
        self._put(dest, ("m", agent_id, event, payload, priority, sender))
        return True

    def _put(self, dest: int, item: Item) -> None:
        if self.outbox.put(dest, item) and not self._flushing:
            self._flushing = True
            assert self._token is not None
            self._token.run_sync_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        for dest, incarnation, seq, items in self.outbox.take():
            self.peer(dest).deliver.remote(self.index, self.incarnation, incarnation, seq, items)

    def peer(self, index: int) -> Any:
        handle = self._peers.get(index)
        if handle is None:
            import ray

            handle = ray.get_actor(shard_name(self.name, index), namespace=self._namespace)
            self._peers[index] = handle
        return handle

    def receive(self, sender: int, incarnation: str, to: str, seq: int, items: list[Item]) -> None:
        current = to in ("", self.incarnation)
        for batch in self.inbox.accept(sender, incarnation, current, seq, items):
            for item in batch:
                self._apply(sender, item)

    def _apply(self, via: int, item: Item) -> None:
        kind = item[0]
        if kind == "m":
            _, agent_id, event, payload, priority, sender = item
            if not self.offer(agent_id, event, payload, priority, sender, via):
                self.queue(agent_id, event, payload, priority)
        elif kind == "arrive":
            _, agent_id, record = item
            coming = self._coming.get(agent_id)
            if coming is None:  # not expected: restore it anyway rather than lose it
                coming = self._coming[agent_id] = _Arrival(via, set())
            coming.record = record
            self._settle(agent_id)
        else:  # "switch"
            _, agent_id, sender = item
            self.switch(agent_id, sender)

    def queue(self, agent_id: Any, event: Any, payload: Any, priority: int) -> None:
        """Queue mail for an agent of this shard; what cannot be queued is a dead letter."""
        assert self.rt is not None
        try:
            self.rt.send_nowait(agent_id, event, payload, priority)
        except EngineError as exc:
            self.dead_letter(agent_id, event, payload, priority, exc)

    def dead_letter(
        self, agent_id: Any, event: Any, payload: Any, priority: int, exc: EngineError
    ) -> None:
        self.undeliverable.append(
            DeadLetter(
                agent_id,
                str(event),
                payload,
                Priority(max(0, min(3, priority))),
                DeadLetterReason.UNDELIVERABLE,
                exc,
            )
        )
        self.undeliverable_count += 1

    # -- moves (trio thread) --------------------------------------------------------------

    def expect(self, agent_id: Any, source: int, senders: list[int]) -> None:
        self.forward.pop(agent_id, None)
        self._coming[agent_id] = _Arrival(source, set(senders))

    def move_out(self, agent_id: Any, dest: int) -> None:
        rt = self.rt
        assert rt is not None
        if agent_id not in rt.agent_ids():
            rt.wake(agent_id)  # AgentNotFoundError when it is not here at all
        (snapshot,) = capture(rt, [agent_id])
        record = encode(snapshot)
        rt._d.take_mail(agent_id)  # it moves with the record: no TERMINATED dead letters
        rt.terminate(agent_id)  # (its pending requests fail: the driver asks again)
        self.forward[agent_id] = dest
        self.routes.directory[agent_id] = dest
        self._put(dest, ("arrive", agent_id, record))

    def set_route(self, agent_id: Any, dest: int, source: int) -> None:
        """Send ``agent_id``'s mail to ``dest`` from now on, and tell ``source`` (where it
        was) with a marker that follows everything sent there before."""
        self.routes.directory[agent_id] = dest
        if source != self.index:
            self._put(source, ("switch", agent_id, self.index))

    def switch(self, agent_id: Any, sender: int) -> None:
        dest = self.forward.get(agent_id)
        if dest is not None:  # the old home: pass the marker on, after what came before it
            self._put(dest, ("switch", agent_id, sender))
            return
        coming = self._coming.get(agent_id)
        if coming is not None:
            coming.switched(sender)
            self._settle(agent_id)

    def _settle(self, agent_id: Any) -> None:
        coming = self._coming[agent_id]
        if coming.record is None or coming.waiting:
            return
        del self._coming[agent_id]
        assert self.rt is not None
        try:
            restore(self.rt, [decode(coming.record)], self.machines)
        except EngineError as exc:
            for _, event, payload, priority, _sender in coming.mail():
                self.dead_letter(agent_id, event, payload, priority, exc)
            raise
        for _, event, payload, priority, _sender in coming.mail():
            self.queue(agent_id, event, payload, priority)

    def settled(self, agent_id: Any) -> bool:
        return agent_id not in self._coming

    # -- reading (trio thread) -------------------------------------------------------------

    def quiescence(self) -> tuple[bool, dict[int, int], dict[int, int]]:
        """``(idle, sent per receiver, received per sender)``: idle when no agent has mail,
        no batch is held for a gap or waiting to be sent, and no move is under way."""
        assert self.rt is not None
        due = self.rt.next_deadline()
        idle = (
            self.rt.statistics().ready == 0
            and (due is None or due > trio.current_time())  # no timer waits to fire
            and not self.outbox.pending
            and not self.inbox.waiting()
            and not self._coming
        )
        return idle, dict(self.outbox.sent), dict(self.inbox.received)

    def advance_to(self, when: float) -> None:
        """Virtual time: move this shard's clock to ``when`` (timers due fire)."""
        assert self.clock is not None
        now = trio.current_time()
        if when > now:
            self.clock.jump(when - now)

    def start_following(self) -> None:
        """Keep transition records while a driver follows them (a subscription task)."""
        assert self.rt is not None
        rt = self.rt

        async def hold() -> None:
            async with rt.subscribe():
                await trio.sleep_forever()

        self._nursery.start_soon(hold)


class _Arrival:
    """An agent on its way in: its record, and mail held until every sender switched."""

    __slots__ = ("_direct", "_forwarded", "record", "source", "waiting")

    def __init__(self, source: int, waiting: set[int]) -> None:
        self.source = source
        self.waiting = waiting
        self.record: bytes | None = None
        self._forwarded: list[tuple[Any, ...]] = []  # from the old home, in its order
        self._direct: dict[int, list[tuple[Any, ...]]] = {}  # per sender not yet switched

    def offer(self, message: tuple[Any, ...], via: int | None) -> None:
        sender = message[4]
        if via == self.source or sender not in self.waiting:
            self._forwarded.append(message)
        else:
            self._direct.setdefault(sender, []).append(message)

    def switched(self, sender: int) -> None:
        self.waiting.discard(sender)
        self._forwarded.extend(self._direct.pop(sender, ()))

    def mail(self) -> list[tuple[Any, ...]]:
        return self._forwarded


def shard_name(cluster: str, index: int) -> str:
    return f"engine-cluster:{cluster}:shard:{index}"


def check_id(agent_id: Any) -> None:
    """Ids must be hashable (the directory and the runtime file them by hash)."""
    try:
        hash(agent_id)
    except TypeError:
        raise InvalidArgumentError(
            f"agent ids must be hashable, got {type(agent_id).__name__}"
        ) from None



