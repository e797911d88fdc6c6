"""Hibernation: idle agents written to the store and out of memory, brought back on demand.

Theory of operation: ``hibernate`` takes an idle agent's record (the same record a snapshot
takes), writes it, and removes the agent from the dispatcher without dead letters (it has no
mail). What stays in memory is one dictionary entry (id -> the clock reading it went to sleep
at) and, if it had timers, one wake-up timer at its earliest deadline. The dispatcher calls
``wake`` (its ``on_missing`` hook) whenever an id it does not hold is named: by a send, a
request, a ``Send`` action, ``state``/``data`` and the other calls that take an id. ``wake``
reads the record back (a point read, on the caller's thread), restores the agent exactly as
it was, and the call goes on as if it had never left: mail is queued in arrival order, so a
woken agent processes it in the order an awake one would have. A wake-up timer that comes due
wakes the agent the same way, and restoring re-arms its own timers (overdue ones fire at once).

Under the commit log the record is not written by ``hibernate``: it joins the log's next
round, after every round captured before it, so an older record can never overwrite it; until
that round is written, ``wake`` reads the record from memory. Counters of hibernated agents
stay in the runtime's totals.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, final

import numpy as np

from ..core._exceptions import (
    AgentBusyError,
    AgentExistsError,
    InvalidArgumentError,
    RuntimeBusyError,
)
from ..core._machine import Machine
from ..runtime._runtime import SLEEPERS
from ..runtime._tenants import DEFAULT
from . import _history
from ._codec import Codec, CorruptRecordError
from ._log import CommitLog
from ._snapshot import decode_saved, encode_slots
from ._stores import TOMBSTONE, Store, agent_key

if TYPE_CHECKING:
    import numpy.typing as npt

    from ..runtime._runtime import Runtime


_BATCH = 10_000
"""Agents a sweep hibernates per store write."""


@final
class Hibernation:
    """Lets ``rt.hibernate`` write agents to ``store`` and brings them back on demand.

    Args:
        rt: The runtime (one hibernation each).
        store: Where hibernated agents are kept (the commit log's store, when there is one).
        codec: Encodes their data and payloads.
        log: The runtime's commit log, if it has one: hibernation records then go through
            its rounds, in order.
    """

    def __init__(
        self,
        rt: Runtime,
        store: Store,
        codec: Codec | None = None,
        log: CommitLog | None = None,
    ) -> None:
        if rt._sleeper is not None:
            raise InvalidArgumentError("this runtime already has a hibernation")
        if log is not None and log.store is not store:
            raise InvalidArgumentError("hibernate into the commit log's own store")
        self.rt = rt
        self.store = store
        self.codec = codec
        self.log: CommitLog | None = None
        self._since: dict[Any, float] = {}
        self._offsets: dict[Any, float] = {}  # clock - wall time when one with timers slept
        self._pending: dict[Any, bytes] = {}  # records waiting for the log's next round
        self._lock = threading.Lock()  # _pending: the log writes from a worker thread
        self._machines: dict[str, Machine] = {}
        self._waking: set[Any] = set()  # (a migrate that names the agent waking: refused)
        self.counts = [0, 0, 0]
        self.tenant_counts: dict[str, list[int]] = {}
        """Processed and failed counts of the sleeping agents, per tenant name."""
        self.tenant_of: dict[Any, str] = {}
        """The tenant of each sleeping agent not in the default tenant."""
        """Processed, failed and dropped messages of the agents asleep now."""
        self.hibernations = 0
        self.woken = 0
        self.expired = 0
        self.expired_ids: deque[Any] = deque(maxlen=10_000)
        """The last 10 000 agents removed by ``expire`` (all are counted in ``expired``)."""
        if log is not None:
            self.attach_log(log)
        rt._sleeper = self
        rt._d.on_missing = self.wake

    def attach_log(self, log: CommitLog) -> None:
        """From now on, hibernation records go through ``log``'s rounds."""
        if log.store is not self.store or self.log is not None:
            raise InvalidArgumentError("hibernate into the commit log's own store, one log")
        self.log = log
        log.on_written.append(self._written)

    def close(self) -> None:
        """Detach from the runtime (hibernated agents stay in the store)."""
        self.rt._sleeper = None
        self.rt._d.on_missing = None
        if self.log is not None and self._written in self.log.on_written:
            self.log.on_written.remove(self._written)

    def __len__(self) -> int:
        return len(self._since)

    def hibernated(self, agent_id: Any) -> float | None:
        """The clock reading when ``agent_id`` went to sleep, or None if it is not asleep."""
        try:
            return self._since.get(agent_id)
        except Exception:  # unhashable, or a hostile __hash__/__eq__: no agent's id
            return None

    def ids(self) -> list[Any]:
        return list(self._since)

    def hibernate(self, agent_id: Any) -> None:
        """See ``Runtime.hibernate``."""
        if self.hibernated(agent_id) is None:
            self._hibernate([agent_id], strict=True)

    def _hibernate(self, agent_ids: list[Any], strict: bool) -> int:
        """Hibernate ``agent_ids`` (resident ones) with one store write; an agent that cannot
        go raises (``strict``, before anything changes) or stays awake."""
        rt = self.rt
        d = rt._d
        if d.running:
            raise RuntimeBusyError("hibernate() called from inside a run (from a handler?)")
        work = rt._host._work if rt._host is not None else {}
        held = d.held_slots() if rt._tenants.enabled else ()
        refs = []
        for agent_id in agent_ids:
            ref = d.ref(agent_id)  # AgentNotFoundError
            agent_id = d.agent_at(ref.slot)  # the stored id (the argument only compares equal)
            busy = ""
            if strict and (d.depth(agent_id) or d.postponed(agent_id)):  # (sweep: never)
                busy = "has mail queued or postponed: hibernate it idle"
            elif work and work.get(ref):
                busy = "has Work running"
            elif held and ref.slot in held:  # (in memory only until its tenant lets it go)
                busy = "has mail its tenant's rate holds back"
            if busy and strict:
                raise AgentBusyError(agent_id, busy)
            if not busy:
                refs.append((agent_id, ref))
        if not refs:
            return 0
        deadlines = {}
        now = rt._clock()
        timed = [a for a, ref in refs if rt._timers and rt._timers.armed(rt._owner(ref))]
        for saved in rt._export(timed) if timed else ():
            live = [remaining for _, remaining, _, _, _, _, ok, _ in saved["timers"] if ok]
            if live:
                deadlines[saved["id"]] = now + min(live)
        slots = np.array([ref.slot for _, ref in refs], dtype=np.int32)
        records = encode_slots(rt, slots, self.codec, hibernated=True)
        if self.log is not None:
            by_key = {agent_key(a, self.codec): a for a, _ in refs}
            items = [(by_key[key], key, at, record) for key, at, record in records]
            with self._lock:
                for agent_id, _, _, record in items:
                    self._pending[agent_id] = record
            self.log.include(items)
        else:
            self.store.write(records)
        wall = records[0][1]
        for i, column in enumerate((d.processed, d.failed, d.dropped)):
            n = int(column[slots].sum())  # their counts stay in the runtime's totals
            d.retired[i] -= n
            self.counts[i] += n
        moved = self._tenant_counts_out(slots, refs) if rt._tenants.enabled else []
        self._machines.update((m.name, m) for m in map(d.machine, (a for a, _ in refs)))
        forget, terminate, since = rt._forget, d.terminate, self._since
        for agent_id, ref in refs:
            forget(ref)
            terminate(agent_id)  # no mail: nothing is dead-lettered
            since[agent_id] = now  # (one float object for the whole batch)
            deadline = deadlines.get(agent_id)
            if deadline is not None:  # its timers come back on this clock, not the wall's
                self._offsets[agent_id] = now - wall
                rt._timers.arm(deadline, SLEEPERS, ("wake", agent_id))
        for index, processed, failed in moved:  # (terminate retired them into the tenant)
            d.tenant_retire(index, -processed, -failed)
        self.hibernations += len(refs)
        return len(refs)

    def _tenant_counts_out(
        self, slots: npt.NDArray[np.int32], refs: list[tuple[Any, Any]]
    ) -> list[tuple[int, int, int]]:
        """Move the counts of agents going to sleep from their tenants to
        ``tenant_counts`` (their tenants keep showing them); note who is in which tenant.
        Returns ``(tenant index, processed, failed)`` to take out after they terminate."""
        rt = self.rt
        d = rt._d
        tenants = d.tenant_indexes()[slots]
        processed, failed = d.processed[slots], d.failed[slots]
        moved = []
        for index in np.unique(tenants).tolist():
            mine = tenants == index
            name = rt._tenants.name_of(index)
            p, f = int(processed[mine].sum()), int(failed[mine].sum())
            counts = self.tenant_counts.setdefault(name, [0, 0])
            counts[0] += p
            counts[1] += f
            moved.append((index, p, f))
            if index:
                for k in np.flatnonzero(mine).tolist():
                    self.tenant_of[refs[k][0]] = name
        return moved

    def adopt(
        self,
        agent_id: Any,
        machine: Machine,
        counts: list[int],
        due: float | None,
        tenant: str = DEFAULT,
    ) -> None:
        """Take an agent that is asleep in the store as one of this runtime's hibernated
        agents, without restoring it (``load`` does this with the records ``hibernate``
        wrote): ``due`` is the wall-clock time its first timer fires, if any; ``tenant`` the
        name of its tenant, which it will wake into.

        Raises:
            AgentExistsError: The id is taken (awake or asleep).
            TenantNotFoundError: The runtime has no tenant of that name (nothing changes).
        """
        rt = self.rt
        if agent_id in rt._d or self.hibernated(agent_id) is not None:
            raise AgentExistsError(agent_id)
        rt._tenants.index(tenant)  # checked now: it could never wake
        self._machines[machine.name] = machine
        now = rt._clock()
        self._since[agent_id] = now
        for i, n in enumerate(counts):
            self.counts[i] += n
        tenant_counts = self.tenant_counts.setdefault(tenant, [0, 0])
        tenant_counts[0] += counts[0]
        tenant_counts[1] += counts[1]
        if tenant != DEFAULT:
            self.tenant_of[agent_id] = tenant
        if due is not None:  # from now on, on this runtime's clock
            wall = time.time()
            self._offsets[agent_id] = now - wall
            rt._timers.arm(now + (due - wall), SLEEPERS, ("wake", agent_id))

    def wake(self, agent_id: Any) -> bool:
        """Bring ``agent_id`` back if it is asleep (the dispatcher's ``on_missing``), into
        the tenant it was in; False if it is not asleep.

        Raises:
            CorruptRecordError, StoreError: Its record cannot be read back.
            TenantNotFoundError: The runtime no longer has its tenant (it was removed while
                the agent slept). The agent stays asleep: add the tenant again and it wakes.
        """
        since = self.hibernated(agent_id)
        if since is None or agent_id in self._waking:
            return False
        self._waking.add(agent_id)
        try:
            return self._wake(agent_id, since)
        finally:
            self._waking.discard(agent_id)

    def _wake(self, agent_id: Any, since: float) -> bool:
        rt = self.rt
        with self._lock:
            record = self._pending.get(agent_id)
        if record is None:
            found = self.store.latest([agent_key(agent_id, self.codec)])
            if not found or found[0].record == TOMBSTONE:
                raise CorruptRecordError("its hibernation record is not in the store", agent_id)
            record = found[0].record
        now = rt._clock()
        offset = self._offsets.get(agent_id)
        wall = time.time() if offset is None else now - offset
        _, saved = decode_saved(
            record, self._machines, wall, now, self.codec, agent_id, rt._upgrades
        )
        del self._since[agent_id]
        self._offsets.pop(agent_id, None)
        try:
            ref = rt._import(saved, wake=False)
        except BaseException:
            self._since[agent_id] = since
            if offset is not None:
                self._offsets[agent_id] = offset
            raise
        rt._finish_import([(ref, saved)])
        for i, key in enumerate(("processed", "failed", "dropped")):
            self.counts[i] -= saved[key]
        tenant_counts = self.tenant_counts.get(saved.get("tenant") or DEFAULT)
        if tenant_counts is not None:
            tenant_counts[0] -= saved["processed"]
            tenant_counts[1] -= saved["failed"]
        self.tenant_of.pop(agent_id, None)
        rt._timers.cancel(SLEEPERS, ("wake", agent_id))
        self.woken += 1
        return True

    def sweep(self, idle_for: float | None = None, max_resident: int | None = None) -> int:
        """Hibernate the agents idle for ``idle_for`` seconds or more, and then, while more
        than ``max_resident`` agents are in memory, the ones idle the longest (least recently
        used first); return how many went to sleep. Agents with mail are left alone."""
        rt = self.rt
        d = rt._d
        if d.running:
            return 0
        slots, since = d.idle_since()
        chosen = np.zeros(len(slots), dtype=bool)
        if idle_for is not None:
            chosen |= since <= rt._clock() - idle_for
        if max_resident is not None:
            excess = len(d) - max_resident - int(chosen.sum())
            if excess > 0:
                order = np.argsort(np.where(chosen, np.inf, since), kind="stable")
                chosen[order[:excess]] = True
        chosen_slots = slots[chosen].tolist()
        done = 0
        for k in range(0, len(chosen_slots), _BATCH):  # bounded records in memory at once
            done += self._hibernate([d.agent_at(s) for s in chosen_slots[k : k + _BATCH]], False)
        return done

    # -- history: what Runtime.snapshot, snapshots, rollback and fork call ----------------

    def snapshot(self, agent_id: Any, keep: int | None = None) -> int:
        return _history.snapshot(self.rt, self.store, agent_id, self.codec, keep)

    def snapshots(self, agent_id: Any) -> list[_history.SnapshotInfo]:
        return _history.snapshots(self.store, agent_id, self.codec)

    def rollback(self, agent_id: Any, to: int, mail: Any = "keep") -> None:
        _history.rollback(self.rt, self.store, agent_id, to, mail=mail, codec=self.codec)

    def fork(self, agent_id: Any, new_id: Any, at: int | None = None) -> Any:
        return _history.fork(self.rt, self.store, agent_id, new_id, at, codec=self.codec)

    def expire(self, idle_for: float) -> list[Any]:
        """Remove the agents hibernated ``idle_for`` seconds or more: a tombstone in the
        store (through the commit log's next round, when there is one), their wake-up timers
        cancelled; they are gone as if terminated, their counts kept in the totals. Returns
        their ids (also kept in ``expired_ids``, and counted in ``statistics().expired``)."""
        rt = self.rt
        cutoff = rt._clock() - idle_for
        gone = [agent_id for agent_id, since in self._since.items() if since <= cutoff]
        if not gone:
            return []
        wall = time.time()
        tombstones = [(agent_key(a, self.codec), wall, TOMBSTONE) for a in gone]
        if self.log is not None:
            with self._lock:
                for agent_id in gone:
                    self._pending.pop(agent_id, None)
            self.log.include([(a, *t) for a, t in zip(gone, tombstones, strict=True)])
        else:
            self.store.write(tombstones)
        for agent_id in gone:
            del self._since[agent_id]
            self._offsets.pop(agent_id, None)
            self.tenant_of.pop(agent_id, None)
            rt._timers.cancel(SLEEPERS, ("wake", agent_id))
        self.expired += len(gone)
        self.expired_ids.extend(gone)
        return gone

    def _written(self, written: list[tuple[Any, bytes]]) -> None:
        """The log wrote these hibernation records: they need no memory copy any more."""
        with self._lock:
            for agent_id, record in written:
                if self._pending.get(agent_id) is record:
                    del self._pending[agent_id]
