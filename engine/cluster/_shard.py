"""One shard: a runtime under trio in a thread of a Ray actor, and its part of the routing.

Theory of operation: the actor's ``__init__`` starts a thread that runs ``open_runtime``
(with the shard's own store and the commit log when the cluster has stores: a restarted
shard recovers its agents there) and waits until it runs. Every actor method runs on one of
Ray's threads and does its work on the trio thread (``trio.from_thread``), so the runtime and
the routing state are only ever touched by that thread and nothing needs a lock (the cache
of peers' actor handles, filled from worker threads too, is a plain dict under the GIL).

Mail between shards: the runtime's ``route_sends`` gives the shard every ``Send`` action for
an agent that is not resident; the shard files it in its ``Outbox`` under the agent's shard,
and a task per peer writes what is queued for it as one numbered batch (``_channel``) on a
TCP connection of its own (``_wire``): one batch per wake-up of that task, bigger while
the connection is busy.
Received batches are applied in order per sender; an item that fails is reported (dead
letter or ``failures``), never raised into the runtime. With virtual time every batch
carries its sender's clock, and the receiver's clock moves up to it before applying it.

A live move of agent X from shard A to shard B keeps every sender's order:
1. ``expect``: B notes that X is coming from A and which senders it must hear from.
2. ``move_out``: A exports X (state, data, mail, timers as seconds from now), removes it
   (requests waiting on it fail with ``AgentMovedError``: they were not processed, ask
   again), forwards everything for X to B from now on, and sends ``arrive`` on its channel.
3. Every other sender (each shard, and the driver) switches its route for X to B and sends a
   ``switch`` marker to A, which forwards it to B after whatever that sender had sent A for
   X. Mail a sender sends B directly before its marker has come is held at B.
4. When B has X and every marker, it imports X, then queues what A forwarded, then what each
   sender sent directly, in order; and tells A (``settled``), which stops forwarding.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import trio
import trio.testing

from ..core._exceptions import EngineError, InvalidArgumentError
from ..core._machine import Machine
from ..core._types import DeadLetter, DeadLetterReason, Priority
from ..environment._open import open_runtime
from ..runtime._runtime import Runtime
from ..store._stores import Store
from . import _wire
from ._channel import Inbox, Item, Outbox, messages
from ._routing import Routes

DRIVER = -1
"""The sender number of the driver process."""
KEPT = 1000
"""Undeliverable messages and failures each shard keeps (the newest)."""
STRANGERS = 64
"""Connections a shard keeps open at once before they presented the cluster's key."""
HELLO_WITHIN = 10.0
"""Seconds a connection has to present the key (on the shard's clock)."""
REACH = 60.0
"""Seconds a shard keeps trying to reach a peer (one that restarts) before its mail for it
becomes undeliverable."""


class AgentMovedError(EngineError):
    """The agent moved to another shard while this request waited in its mailbox: the
    request was not processed (the driver asks again where the agent is now)."""

    def __init__(self, agent_id: Any) -> None:
        super().__init__(f"agent {agent_id!r} moved to another shard before it took this")
        self.agent_id = agent_id


class ShardGoneError(EngineError):
    """Mail for a shard that no longer exists (removed) or cannot be reached."""


class ShardHost:
    """The body of a shard actor (``_actors.Shard`` exposes it to Ray)."""

    def __init__(
        self,
        name: str,
        index: int,
        layout: tuple[list[int], dict[Any, int], dict[int, str]],
        setup: Callable[[], Iterable[Machine]],
        store: Callable[[int], Store] | None,
        runtime_options: dict[str, Any],
        namespace: str | None,
        virtual_time: bool = False,
        key: bytes = b"",
        bind: str = "127.0.0.1",
    ) -> None:
        shards, directory, incarnations = layout
        self.name = name
        self.index = index
        self.incarnation = uuid.uuid4().hex
        self.clock = trio.testing.MockClock() if virtual_time else None
        self._namespace = namespace
        self.machines = {m.name: m for m in setup()}
        self.routes = Routes(shards or [index], directory)
        self.outbox = Outbox(incarnations)
        self.inbox = Inbox(incarnations)
        self._peers: dict[int, Any] = {}
        self.undeliverable: deque[DeadLetter] = deque(maxlen=KEPT)
        self.failures: deque[tuple[str, Any, BaseException]] = deque(maxlen=KEPT)
        """``(what, about, error)`` of things that went wrong with no caller to tell."""
        # moves: agents that left (-> their shard), and agents on their way in
        self.forward: dict[Any, int] = {}
        self._coming: dict[Any, _Arrival] = {}
        self.failed_moves: dict[Any, BaseException] = {}
        self._store = store(index) if store is not None else None
        self._options = runtime_options
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stop: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        if type(key) is not bytes or len(key) != 32:  # (no default key anyone could present)
            raise InvalidArgumentError("a shard needs the cluster's 32-byte key")
        self.key = key
        self._bind = bind
        self.address: tuple[str, int] | None = None
        """Where this shard's data plane listens (``_wire``)."""
        self._links: dict[int, _Link] = {}
        self._strangers = 0
        self._nursery: trio.Nursery | None = None
        self.rt: Runtime | None = None
        self._thread = threading.Thread(target=self._host, name=f"shard-{index}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    # -- the trio thread ----------------------------------------------------------------

    def _host(self) -> None:
        try:
            trio.run(_run, self, clock=self.clock)
        except BaseException as exc:  # reported to whoever waits
            if self._ready.is_set() and self._stop is not None and not self._stop.is_set():
                # the runtime died under a running shard: end the process, so that Ray
                # restarts it and it recovers from its store (a live actor with a dead
                # runtime would fail every call and never come back)
                import traceback

                traceback.print_exception(exc)
                os._exit(70)
            self._failure = exc
            self._ready.set()

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

    def fail(self, what: str, about: Any, error: BaseException) -> None:
        self.failures.append((what, about, error))

    # -- routing (trio thread) ------------------------------------------------------------

    def _route(self, send: Any) -> bool:
        """The runtime's router, called in the drain loop: a Send action for an agent not
        resident here. Never raises (the drain loop must go on)."""
        try:
            return self.offer(
                send.agent_id, send.event, send.payload, int(send.priority), self.index, None
            )
        except Exception as exc:  # a bug here must not end the shard: report the message
            self.dead_letter(send.agent_id, send.event, send.payload, 1, exc)
            return True

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
        try:
            hash(agent_id)
        except TypeError:
            return False  # no agent has it: the runtime dead-letters it
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
        if self.outbox.put(dest, item):
            link = self._links.get(dest)
            if link is None:
                link = self._links[dest] = _Link()
                assert self._nursery is not None
                self._nursery.start_soon(_write, self, dest, link)
            link.wake.set()

    def _frame(
        self, dest: int, incarnation: str, seq: int, items: list[Item], stamp: float
    ) -> tuple[list[bytes], list[Item]]:
        """The pieces of one batch on the wire, and the items it carries. An item that
        cannot cross processes (or is larger than a part may be) stays behind as
        undeliverable, and the batch still goes with its number, so that no gap is left."""
        kept = items
        try:
            parts = [_dumps(items)]
            whole = len(parts[0]) <= _wire.MAX_PART
        except Exception:
            whole = False
        if not whole:
            parts, kept = [], []
            for item in items:
                try:
                    blob = _dumps(item)
                    if len(blob) > _wire.MAX_PART:
                        raise InvalidArgumentError(
                            f"a cross-shard message of {len(blob)} bytes pickled "
                            f"(at most {_wire.MAX_PART})"
                        )
                except Exception as exc:
                    self._undeliverable(dest, incarnation, [item], exc)
                else:
                    parts.append(blob)
                    kept.append(item)
        header = (self.index, self.incarnation, incarnation, seq, stamp, messages(kept), whole)
        return _wire.frame((*header, [len(p) for p in parts]), parts), kept

    def _address_of(self, dest: int) -> tuple[str, int]:
        """Where ``dest`` listens (on one of Ray's threads: it waits for a restarting
        shard). ``ShardGoneError`` when no such shard exists any more."""
        import ray

        try:
            handle = self.peer(dest)
        except ValueError as exc:  # removed: no actor has the name
            raise ShardGoneError(f"shard {dest} is gone ({exc})") from None
        address: tuple[str, int] = ray.get(handle.where.remote(), timeout=REACH)
        return address

    def _undeliverable(
        self, dest: int, incarnation: str, items: list[Item], error: BaseException
    ) -> None:
        """Items that never left: dead letters (messages) or failures, and not counted as
        sent (so that the pair still balances)."""
        key = (dest, incarnation)
        self.outbox.sent[key] = self.outbox.sent.get(key, 0) - messages(items)
        for item in items:
            if item[0] == "m":
                self.dead_letter(item[1], item[2], item[3], item[4], error)
            else:
                self.fail(f"could not send {item[0]!r}", item[1], error)

    def peer(self, index: int) -> Any:
        handle = self._peers.get(index)
        if handle is None:
            import ray

            handle = ray.get_actor(shard_name(self.name, index), namespace=self._namespace)
            self._peers[index] = handle
        return handle

    def receive(
        self,
        sender: int,
        incarnation: str,
        to: str,
        seq: int,
        blob: bytes | list[bytes],
        stamp: float,
        sent: int,
    ) -> None:
        if self.clock is not None:  # virtual time: never behind the sender's instant
            self.advance_to(stamp)
        items = self._unpickle(sender, blob)
        current = to == self.incarnation
        batches = self.inbox.accept(sender, incarnation, current, seq, items, sent)
        self.apply_all(sender, batches)

    def _unpickle(self, sender: int, blob: bytes | list[bytes]) -> list[Item]:
        """The items of a batch; what cannot be unpickled here is reported and skipped."""
        if isinstance(blob, bytes):
            try:
                return list(_loads(blob))
            except Exception as exc:
                self.fail(f"a batch from shard {sender} could not be read", None, exc)
                return []
        items = []
        for one in blob:
            try:
                items.append(_loads(one))
            except Exception as exc:
                self.fail(f"an item from shard {sender} could not be read", None, exc)
        return items

    def apply_all(self, via: int, batches: list[list[Item]]) -> None:
        for batch in batches:
            for item in batch:
                try:
                    self._apply(via, item)
                except Exception as exc:  # reported; the rest of the batch goes on
                    self.fail(f"applying {item[0]!r}", item[1], exc)

    def sender_restarted(self, index: int, incarnation: str) -> None:
        self.outbox.restarted(index, incarnation)
        self.apply_all(index, self.inbox.restarted(index, incarnation))
        for agent_id, coming in list(self._coming.items()):
            if coming.source == index and coming.saved is None:  # its export died with it
                del self._coming[agent_id]
                self.failed_moves[agent_id] = ShardGoneError(
                    f"shard {index} restarted while agent {agent_id!r} was leaving it"
                )
                lost = self.failed_moves[agent_id]
                for _, event, payload, priority, _sender in coming.mail():
                    self.dead_letter(agent_id, event, payload, priority, lost)
            elif index in coming.waiting:  # a restarted sender routes by the new layout
                coming.switched(index)
                self._settle(agent_id)

    def _apply(self, via: int, item: Item) -> None:
        kind = item[0]
        if kind == "m":
            _, agent_id, event, payload, priority, sender = item
            if not self.offer(agent_id, event, payload, priority, sender, via):
                self.queue(agent_id, event, payload, priority)
        elif kind == "arrive":
            _, agent_id, saved = item
            coming = self._coming.get(agent_id)
            if coming is None:  # not expected: take it in anyway rather than lose it
                coming = self._coming[agent_id] = _Arrival(via, set())
            coming.saved = saved
            self._settle(agent_id)
        elif kind == "switch":
            _, agent_id, sender = item
            self.switch(agent_id, sender)
        else:  # "settled": the agent is in at its new home, which has every marker
            agent_id = item[1]
            if self.forward.get(agent_id) == via:
                del self.forward[agent_id]

    def queue(self, agent_id: Any, event: Any, payload: Any, priority: int) -> None:
        """Queue mail for an agent of this shard; what cannot be queued is a dead letter."""
        assert self.rt is not None
        try:
            self.rt.send_nowait(agent_id, event, payload, priority)
        except EngineError as exc:
            self.dead_letter(agent_id, event, payload, priority, exc)

    def dead_letter(
        self, agent_id: Any, event: Any, payload: Any, priority: Any, exc: BaseException
    ) -> None:
        lane = priority if type(priority) is int and 0 <= priority <= 3 else 1
        try:
            name = str(event)
        except Exception:  # a hostile event object
            name = f"<{type(event).__name__}>"
        self.undeliverable.append(
            DeadLetter(
                agent_id,
                name,
                payload,
                Priority(lane),
                DeadLetterReason.UNDELIVERABLE,
                exc,
            )
        )

    # -- moves (trio thread) --------------------------------------------------------------

    def expect(self, agent_id: Any, source: int, senders: list[int]) -> None:
        self.forward.pop(agent_id, None)
        self.failed_moves.pop(agent_id, None)
        self._coming[agent_id] = _Arrival(source, set(senders))

    def cancel_expect(self, agent_id: Any) -> None:
        self._coming.pop(agent_id, None)

    def move_out(self, agent_id: Any, dest: int) -> None:
        rt = self.rt
        assert rt is not None
        rt.wake(agent_id)  # AgentNotFoundError when it is not here at all
        (saved,) = rt._export([agent_id])
        saved["machine"] = saved["machine"].name
        try:  # everything it holds must cross processes, checked before anything changes
            _dumps(saved)
        except Exception as exc:
            raise InvalidArgumentError(
                f"agent {agent_id!r} cannot move: what it holds cannot be pickled ({exc})"
            ) from None
        taken = rt._d.take_mail(agent_id)  # it moves with the export: no dead letters
        now = trio.current_time()
        saved["since"] = now - saved["since"]  # an age: the clocks of two processes differ
        # requests waiting in its mail fail here (not processed: asked again where it goes)
        n_front, n_post = len(saved["front"]), len(saved["postponed"])
        cut = len(taken) - n_post
        parts = (taken[:n_front], taken[n_front:cut], taken[cut:])
        for key, part in zip(("front", "mail", "postponed"), parts, strict=True):
            saved[key] = [(e, p, lane) for e, p, lane, request in part if not request]
            for _, _, _, request in part:
                if request:
                    rt._on_request(request, False, AgentMovedError(agent_id))
        record = _dumps(saved)  # a subset of what pickled above
        rt.terminate(agent_id)
        self.forward[agent_id] = dest
        self.routes.directory[agent_id] = dest
        self._put(dest, ("arrive", agent_id, record))

    def set_route(self, agent_id: Any, dest: int, source: int) -> None:
        """Send ``agent_id``'s mail to ``dest`` from now on, and tell ``source`` (where it
        was) with a marker that follows everything sent there before."""
        self.routes.directory[agent_id] = dest
        # a forward entry left from an earlier move (its "settled" not here yet) would send
        # this shard's own later mail the long way, behind the marker below
        self.forward.pop(agent_id, None)
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
        if coming.saved is None or coming.waiting:
            return
        del self._coming[agent_id]
        rt = self.rt
        assert rt is not None
        try:
            saved = _loads(coming.saved)
            saved["machine"] = self.machines[saved["machine"]]
            saved["since"] = trio.current_time() - saved["since"]
            rt._import(saved)
        except Exception as exc:  # kept for the driver's move to report; its mail too
            self.failed_moves[agent_id] = exc
            for _, event, payload, priority, _sender in coming.mail():
                self.dead_letter(agent_id, event, payload, priority, exc)
            return
        for _, event, payload, priority, _sender in coming.mail():
            self.queue(agent_id, event, payload, priority)
        self._put(coming.source, ("settled", agent_id))

    def settled(self, agent_id: Any) -> bool:
        """Whether the move of ``agent_id`` here is over (raises what made it fail)."""
        error = self.failed_moves.get(agent_id)
        if error is not None:
            raise error
        return agent_id not in self._coming

    # -- reading (trio thread) -------------------------------------------------------------

    def quiescence(self) -> tuple[bool, str, dict[tuple[int, str], int], dict[int, int]]:
        """``(idle, incarnation, sent per (receiver, incarnation), received per sender)``:
        idle when no agent has mail, no timer is overdue, no batch is held for a gap or
        waiting to be sent, and no move is under way."""
        assert self.rt is not None
        due = self.rt.next_deadline()
        idle = (
            self.rt.statistics().ready == 0
            and (due is None or due > trio.current_time())
            and not self.outbox.pending
            and not self.inbox.waiting()
            and not self._coming
        )
        return idle, self.incarnation, dict(self.outbox.sent), dict(self.inbox.received)

    def advance_to(self, when: float) -> None:
        """Virtual time: move this shard's clock to ``when`` (timers due fire)."""
        assert self.clock is not None
        now = trio.current_time()
        if when > now:
            self.clock.jump(when - now)

    def start_following(self) -> None:
        """Keep transition records while a driver follows them (a subscription task)."""
        assert self.rt is not None
        assert self._nursery is not None
        self._nursery.start_soon(_follow, self.rt)


# The shard's coroutines are functions, not methods: Ray makes an actor whose class has a
# coroutine method an asyncio actor, whose methods all run on one event loop thread, and a
# call blocked there (a request waiting for its answer) would stall every other.


async def _run(host: ShardHost) -> None:
    """The trio thread's main: the runtime, its router, and the batch sender."""
    durable = host._store is not None
    async with open_runtime(
        store=host._store,
        durability="log" if durable else "none",
        restore=list(host.machines.values()) if durable else None,
        **host._options,
    ) as rt:
        host.rt = rt
        host._token = trio.lowlevel.current_trio_token()
        host._stop = trio.Event()
        rt.route_sends(host._route)
        async with trio.open_nursery() as nursery:
            host._nursery = nursery
            serve = partial(trio.serve_tcp, partial(_serve, host), 0, host=host._bind)
            listeners = await nursery.start(serve)
            host.address = (host._bind, listeners[0].socket.getsockname()[1])
            host._ready.set()
            await host._stop.wait()
            nursery.cancel_scope.cancel()


async def _serve(host: ShardHost, stream: trio.SocketStream) -> None:
    """One peer's connection: its batches, applied as they come. Whatever goes wrong
    ends this connection only (the peer connects again for its next batch)."""
    reader = _wire.Reader(stream)
    sender: int | None = None
    try:
        if host._strangers >= STRANGERS:  # a flood of connections that never say who
            raise _wire.WireError(f"over {STRANGERS} connections have not presented the key")
        host._strangers += 1
        try:
            with trio.move_on_after(HELLO_WITHIN):
                sender = await reader.hello(host.key)
        finally:
            host._strangers -= 1
        if sender is None:
            raise _wire.WireError(f"a connection did not present the key in {HELLO_WITHIN} s")
        while True:
            header, blob = await reader.batch()
            _, incarnation, to, seq, stamp, sent, _, _ = header
            try:
                host.receive(sender, incarnation, to, seq, blob, stamp, sent)
            except Exception as exc:  # a bug here must not end the shard
                host.fail(f"a batch from shard {sender}", seq, exc)
    except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # the peer closed, died or restarted
    except Exception as exc:  # a broken protocol: this connection ends
        host.fail("a connection from a peer", None, exc)
    finally:
        await trio.aclose_forcefully(stream)


async def _connect(host: ShardHost, dest: int) -> trio.SocketStream:
    ip, port = await trio.to_thread.run_sync(host._address_of, dest, abandon_on_cancel=True)
    stream = await trio.open_tcp_stream(ip, port)
    try:
        await stream.send_all(_wire.hello(host.key, host.index))
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def _write(host: ShardHost, dest: int, link: _Link) -> None:
    """The connection to ``dest``: everything queued for it since the last write goes as
    the next batch (so a busy connection gathers bigger batches)."""
    stream: trio.SocketStream | None = None
    opened_for = ""  # the receiver's incarnation as known when the stream was opened
    try:
        while True:
            await link.wake.wait()
            link.wake = trio.Event()
            taken = host.outbox.take(dest)
            if taken is None:
                continue
            incarnation, seq, items = taken
            if stream is not None and incarnation != opened_for:
                # the receiver restarted: its old connection may still take a write (the
                # kernel's buffer) that nobody reads; a new incarnation gets a new one
                await trio.aclose_forcefully(stream)
                stream = None
            opened_for = incarnation
            try:
                pieces, kept = host._frame(dest, incarnation, seq, items, trio.current_time())
            except Exception as exc:  # a bug: the batch is reported, its number still goes
                host._undeliverable(dest, incarnation, items, exc)
                pieces, kept = host._frame(dest, incarnation, seq, [], trio.current_time())
            stream = await _transmit(host, dest, stream, pieces)
            if stream is None:  # never reached it: what the batch held is undeliverable
                gone = ShardGoneError(f"shard {dest} cannot be reached")
                host._undeliverable(dest, incarnation, kept, gone)
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)


async def _transmit(
    host: ShardHost, dest: int, stream: trio.SocketStream | None, pieces: list[bytes]
) -> trio.SocketStream | None:
    """Write one batch, connecting (again) when needed: a peer that restarted is reached
    at its new address, trying for about ``REACH`` seconds. None when it was not reached
    (the shard is gone, or did not come back)."""
    deadline = time.monotonic() + REACH
    pause = 0.01
    while True:
        try:
            if stream is None:
                stream = await _connect(host, dest)
            for piece in pieces:
                await stream.send_all(piece)
            return stream
        except ShardGoneError:
            return None
        except Exception:  # a broken connection, a refused one, a shard restarting
            if stream is not None:
                await trio.aclose_forcefully(stream)
                stream = None
            if time.monotonic() > deadline or dest not in host.routes.shards:
                return None  # (a shard removed from the layout will not come back)
            # real time: a virtual clock would never get there
            await trio.to_thread.run_sync(time.sleep, pause, abandon_on_cancel=True)
            pause = min(pause * 2, 1.0)


async def _follow(rt: Runtime) -> None:
    async with rt.subscribe():
        await trio.sleep_forever()


class _Arrival:
    """An agent on its way in: its export, and mail held until every sender switched."""

    __slots__ = ("_direct", "_forwarded", "saved", "source", "waiting")

    def __init__(self, source: int, waiting: set[int]) -> None:
        self.source = source
        self.waiting = waiting
        self.saved: bytes | None = None
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


class _Link:
    """The state of one peer's connection task: set ``wake`` when mail is queued for it."""

    __slots__ = ("wake",)

    def __init__(self) -> None:
        self.wake = trio.Event()


def _dumps(value: Any) -> bytes:
    import ray.cloudpickle

    return ray.cloudpickle.dumps(value)  # type: ignore[no-any-return,no-untyped-call]


def _loads(blob: bytes) -> Any:
    import ray.cloudpickle

    return ray.cloudpickle.loads(blob)


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
