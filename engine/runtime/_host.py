"""The runtime under trio: the task that drives the dispatcher, agent work, async sends.

Theory of operation: one nursery owns everything. Its dispatch task loops: read trio's clock,
deliver due timers, and if any agent is ready, run one batch of the compiled dispatcher
(synchronously: no task switch inside a batch, so agent-to-agent ``Send`` costs no
scheduling), wake whoever waits on progress (blocked senders, subscribers, idle waiters),
then yield with a checkpoint so host tasks are never starved. With nothing ready it parks
until the dispatcher's ``on_wake`` hook (the ready queue went from empty to non-empty) or the
next timer deadline. Agent ``Work`` runs as tasks of the same nursery, each in a cancel scope
filed under its agent. Errors of the runtime itself (a sink that raises, say) end the
dispatch task and so propagate through the nursery to the ``async with``.

``open_runtime`` (``engine.environment``) creates the host: this module knows nothing of
plugins or stores. Outputs leave through an *outlet* (the environment's ``Wiring``), which the
dispatch task flushes between batches when it has something pending. A *durability* (the
commit log's task, when there is one) is told after each batch that agents changed, and
``send`` waits on it until what it queued is committed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sized
from functools import partial
from typing import Any, Protocol, final

import trio

from ..core._actions import Work
from ..core._exceptions import (
    EngineError,
    MailboxFullError,
    TenantLimitError,
    TurnDeadlineError,
)
from ..core._types import DeadLetter, DeadLetterReason, Priority
from ._records import same
from ._ring import Gap, Ring
from ._runtime import _ALL, Runtime


class Outlet(Protocol):
    """Where the dispatch task hands outputs that async consumers still have to take."""

    @property
    def pending(self) -> Sized:
        """Non-empty when something waits to be flushed."""
        ...

    async def flush(self) -> None:
        """Hand what is pending to its consumers (waits while they are full)."""
        ...


class Durability(Protocol):
    """What makes accepted mail durable (the environment's commit task)."""

    def drained(self) -> None:
        """Agents changed (a batch ran, mail was queued): commit soon."""
        ...

    async def wait_durable(self) -> None:
        """Return once everything accepted before the call is committed."""
        ...


@final
class Host:
    """What ``open_runtime`` attaches to a ``Runtime`` (private)."""

    def __init__(self, rt: Runtime, nursery: trio.Nursery, wiring: Outlet) -> None:
        self.rt = rt
        self.nursery = nursery
        self.wiring = wiring
        self.token = trio.lowlevel.current_trio_token()
        self._parked: trio.lowlevel.Task | None = None
        self._stopping = False
        self.stopped = trio.Event()
        self._progress = trio.lowlevel.ParkingLot()
        self._idle = trio.lowlevel.ParkingLot()
        self._work: dict[Any, set[trio.CancelScope]] = {}
        self.durability: Durability | None = None
        rt._d.on_wake = self._on_wake

    def _on_wake(self) -> None:
        task, self._parked = self._parked, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def _abort(self, raise_cancel: Any) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    def poke(self) -> None:
        """Make a parked dispatch task look again (a timer was armed from outside it)."""
        self._on_wake()

    def detach(self) -> None:
        self.rt._d.on_wake = None

    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Ask the dispatch task to hand its queued outputs to the effectors and return."""
        self._stopping = True
        self._on_wake()

    async def dispatch_loop(self) -> None:
        try:
            await self._loop()
            await self.wiring.flush()  # the only flusher: nothing can race it
        finally:
            self.stopped.set()

    async def _loop(self) -> None:
        rt = self.rt
        d = rt._d
        timers = rt._timers
        batch = rt._batch
        progress = self._progress
        wiring = self.wiring
        while not self.stopping():
            now = trio.current_time()
            d.now = now
            if timers:
                for due in timers.pop_due(now):
                    rt._fire(due)
            if d.has_ready:
                d.run(batch)
                if self.durability is not None:
                    self.durability.drained()
                if wiring.pending:  # async effectors: wait for room (backpressure)
                    await wiring.flush()
                if progress:
                    progress.unpark_all()
                if d.has_ready:  # more to do: let other tasks run first
                    await trio.lowlevel.checkpoint()
                    continue
            elif progress:
                progress.unpark_all()
            if wiring.pending:  # outputs made outside the loop (a synchronous run, say)
                await wiring.flush()
            if self._idle:
                self._idle.unpark_all()
            if self.stopping():
                return
            # nothing ready: park until on_wake or the next deadline (a checkpoint too)
            self._parked = trio.lowlevel.current_task()
            deadline = timers.next_deadline() if timers else None
            if deadline is None:
                await trio.lowlevel.wait_task_rescheduled(self._abort)
            else:
                with trio.move_on_at(deadline):
                    await trio.lowlevel.wait_task_rescheduled(self._abort)

    async def send(self, agent_id: Any, event: Any, payload: Any, priority: int) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        d = self.rt._d
        held = self.durability is not None and self.rt._tenants.enabled
        while True:
            try:
                if held:  # how many messages its tenant's rate has held back so far
                    tenant = d.tenant_of(agent_id)
                    before = d.tenant_held(tenant)[0]
                d.send_nowait(agent_id, event, payload, priority)
            except MailboxFullError:
                await self._progress.park()
            except TenantLimitError as exc:
                if not exc.wait:  # the tenant's overflow policy rejects
                    raise
                await self._progress.park()
            else:
                if self.durability is not None:  # queued: now wait for its commit
                    if held:
                        await self._released(tenant, before)
                    await self.durability.wait_durable()
                else:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return

    async def _released(self, tenant: int, before: int) -> None:
        """If the message just sent was held back by its tenant's rate, wait until the rate
        lets it go (held mail is in memory only: no commit covers it before)."""
        d = self.rt._d
        try:
            seq = d.tenant_held(tenant)[0]
            if seq == before:  # not held back
                return
            while True:  # ours is the seq-th message it held back; they leave in order
                total, now = d.tenant_held(tenant)
                if total - now >= seq:
                    return
                await self._progress.park()
        except EngineError:  # the tenant was removed: its held mail was dead-lettered
            return

    async def flush(self) -> None:
        if self.durability is not None:
            await self.durability.wait_durable()
        else:
            await trio.lowlevel.checkpoint()

    async def wait_until_idle(self) -> None:
        if self.rt._d.has_ready or self._parked is None:
            await self._idle.park()  # woken when the dispatch task finds nothing ready
        else:
            await trio.lowlevel.checkpoint()

    def portal(self) -> RuntimePortal:
        return RuntimePortal(self.rt, self.token)

    @property
    def progress(self) -> trio.lowlevel.ParkingLot:
        """Unparked after every dispatch batch (and when idle): readers wait on it."""
        return self._progress

    def follow(self, ring: Ring[Any], agent_id: Any, from_seq: int | None) -> Subscription:
        return Subscription(
            self._progress, ring, agent_id, ring.total if from_seq is None else from_seq
        )

    # -- work ------------------------------------------------------------------------------

    def start_work(self, ref: Any, work: Work, turn: bool = True) -> None:
        """Run an agent's work in a scope filed under it; ``turn=False`` (work a plugin
        started) is not held to its tenant's turn deadline."""
        scope = trio.CancelScope()
        self._work.setdefault(ref, set()).add(scope)
        self.nursery.start_soon(self._run_work, ref, work, scope, turn)

    async def _run_work(self, ref: Any, work: Work, scope: trio.CancelScope, turn: bool) -> None:
        tenant, deadline = self.rt._work_deadline(ref) if turn else (0, 0.0)
        try:
            with scope:
                try:
                    if deadline:
                        start = trio.current_time()
                        with trio.move_on_after(deadline) as limit:
                            result = await work.fn(*work.args)
                        if limit.cancelled_caught:  # its tenant's turn deadline
                            self.rt._d.tenant_overrun(tenant)
                            took = trio.current_time() - start
                            raise TurnDeadlineError(_agent(ref), took, deadline)
                    else:
                        result = await work.fn(*work.args)
                except Exception as exc:  # the agent's failure, reported to the agent
                    self._deliver(ref, work, work.failed, exc)
                else:
                    if work.done is not None:
                        self._deliver(ref, work, work.done, result)
        finally:
            scopes = self._work.get(ref)
            if scopes is not None:
                scopes.discard(scope)
                if not scopes:
                    del self._work[ref]

    def _deliver(self, ref: Any, work: Work, event: str | None, payload: Any) -> None:
        rt = self.rt
        name = getattr(work.fn, "__name__", repr(work.fn))
        if event is None:  # a failure with nowhere to go
            rt._d.dead_letters.append(
                DeadLetter(
                    _agent(ref),
                    f"<work {name}>",
                    payload,
                    Priority.NORMAL,
                    DeadLetterReason.HANDLER_FAILED,
                    payload,
                )
            )
            rt._d.dead_letter_count += 1
            return
        self.deliver_event(ref, event, payload, Priority.NORMAL)

    def deliver_event(self, ref: Any, event: str, payload: Any, priority: int) -> None:
        """Queue a message the runtime itself owes an agent (its work's ``done`` or
        ``failed``, ``interrupted``): at once when its mailbox has room, else by a task that
        waits for room as ``send`` does, so a full bounded mailbox delays it and never loses
        it. An agent gone or stopped meanwhile gets a dead letter instead."""
        try:
            ref.send_nowait(event, payload, priority)
        except (MailboxFullError, TenantLimitError) as exc:
            if isinstance(exc, TenantLimitError) and not exc.wait:
                self._undeliverable(ref, event, payload, priority, exc)
            else:  # no room, or its tenant holds it back under the "wait" policy
                self.nursery.start_soon(self._deliver_when_room, ref, event, payload, priority)
        except Exception as exc:
            self._undeliverable(ref, event, payload, priority, exc)

    async def _deliver_when_room(self, ref: Any, event: str, payload: Any, priority: int) -> None:
        while True:  # no checkpoint between a refusal and the park: no wake-up is missed
            try:
                ref.send_nowait(event, payload, priority)
            except (MailboxFullError, TenantLimitError) as exc:
                if isinstance(exc, TenantLimitError) and not exc.wait:
                    self._undeliverable(ref, event, payload, priority, exc)
                    return
                await self._progress.park()
                continue
            except Exception as exc:
                self._undeliverable(ref, event, payload, priority, exc)
            return

    def _undeliverable(
        self, ref: Any, event: str, payload: Any, priority: int, exc: Exception
    ) -> None:
        d = self.rt._d
        d.dead_letters.append(
            DeadLetter(
                _agent(ref), event, payload, Priority(priority), DeadLetterReason.UNDELIVERABLE, exc
            )
        )
        d.dead_letter_count += 1

    def cancel_work(self, ref: Any) -> int:
        scopes = self._work.get(ref, ())
        for scope in scopes:
            scope.cancel()
        return len(scopes)


def _agent(ref: Any) -> Any:
    return ref.id if ref.alive else "(terminated)"


@final
class Subscription:
    """An async iterator over a ring (dead letters), filtered to one agent or all; yields a
    ``Gap`` where it fell behind the retention. A read cancelled while it waits takes
    nothing: it only waits with nothing taken, and hands an item out past its last
    cancellation point."""

    def __init__(
        self, progress: trio.lowlevel.ParkingLot, ring: Ring[Any], agent_id: Any, seq: int
    ) -> None:
        self._progress = progress
        self._ring = ring
        self._agent = agent_id
        self._cursor = seq
        self._buf: deque[tuple[int, Any]] = deque()  # (seq, item) read, not yet handed out

    @property
    def seq(self) -> int:
        """Sequence number of the next item this reader will get."""
        return self._buf[0][0] if self._buf else self._cursor

    def _fill(self) -> None:
        missed, items = self._ring.since(self._cursor)
        if missed:
            self._buf.append((self._cursor, Gap(self._cursor, missed)))
        first = self._cursor + missed
        mine = self._agent
        self._buf.extend(
            (first + i, r) for i, r in enumerate(items) if mine is _ALL or same(r.agent_id, mine)
        )
        self._cursor = first + len(items)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._buf:
            self._fill()
            if not self._buf:
                await self._progress.park()
        _, item = self._buf.popleft()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return item


@final
class RuntimePortal:
    """Reach a runtime from threads that are not trio's (``trio.from_thread``)."""

    def __init__(self, rt: Runtime, token: trio.lowlevel.TrioToken) -> None:
        self._rt = rt
        self._token = token

    def send_nowait(
        self, agent_id: Any, event: Any, payload: Any = None, priority: int = Priority.NORMAL
    ) -> None:
        """``Runtime.send_nowait`` from another thread."""
        trio.from_thread.run_sync(
            self._rt.send_nowait, agent_id, event, payload, priority, trio_token=self._token
        )

    def send(
        self, agent_id: Any, event: Any, payload: Any = None, priority: int = Priority.NORMAL
    ) -> None:
        """``Runtime.send`` from another thread: blocks while the mailbox is full."""
        trio.from_thread.run(
            self._rt.send, agent_id, event, payload, priority, trio_token=self._token
        )

    def request(
        self,
        agent_id: Any,
        event: Any,
        payload: Any = None,
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
    ) -> Any:
        """``Runtime.request`` from another thread: blocks until the answer."""
        call = partial(
            self._rt.request, agent_id, event, payload, priority=priority, timeout=timeout
        )
        return trio.from_thread.run(call, trio_token=self._token)
