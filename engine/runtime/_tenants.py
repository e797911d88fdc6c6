"""Tenants: isolation with enforced limits, and weighted fair shares of the dispatcher.

Theory of operation: the dispatcher knows tenants by index (0 is the default tenant) and
does what is per message: it keeps each tenant's own ready queue and serves them by deficit
round robin (``Dispatcher._run_fair``), counts each tenant's queued messages and refuses a
send past ``max_queued``, holds messages past the tenant's rate back in order
(``release_delayed``), and times handler steps against ``turn_deadline``. This module owns the
rest: names, checked ``Limits``, the limits that are per call (``max_agents`` and
``max_memory`` at spawn, making room by hibernating the tenant's least recently used agents
when the runtime has a store), the timers that release rate-delayed mail, and the statistics.

Fair shares are counted in messages, not in measured step time: counting costs nothing per
message (no clock read), is exact and deterministic (so tests and simulations on MockClock
reproduce it), and ``turn_deadline`` bounds what one expensive message can take.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import numpy as np

from ..core._exceptions import (
    InvalidArgumentError,
    RuntimeBusyError,
    TenantBusyError,
    TenantExistsError,
    TenantLimitError,
    TenantNotFoundError,
)
from ..core._validate import brief, integer, number
from ..hotpath._metrics import LatencySummary

if TYPE_CHECKING:
    from ._runtime import Runtime

DEFAULT: Final = "default"
"""The tenant of agents spawned without one."""
TENANTS: Final = -2
"""The timer owner of rate-delayed mail releases (keys ``("release", tenant index)``)."""
AGENT_BYTES: Final = 105
"""Resident bytes per idle agent, as ``bench/test_memory.py`` measures them (slot record,
id-table cell, id, data reference): what ``max_memory`` counts per agent."""
MESSAGE_BYTES: Final = 16
"""Bytes per queued message (its mailbox entry; the payload is the sizer's to count)."""
_MAX_WEIGHT = 1_000_000.0
_OVERFLOW = ("reject", "wait")
_ON_DEADLINE = ("report", "fail", "stop")
_PER = {"second": 1.0, "minute": 60.0}
_SIZE_EVERY = 1.0
"""Seconds a tenant's summed data size (its ``sizer``) is reused before it is summed anew."""


def _bounded(name: str, value: Any, high: float) -> float:
    """``value`` as a finite float in 0..high."""
    out = number(name, value, minimum=0.0)
    if out > high:
        raise InvalidArgumentError(f"{name} must be in 0..{high:g}, got {brief(value)}")
    return out


def _choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(allowed)}: {brief(value)}")
    return str(value)


@final
@attrs.frozen
class Limits:
    """What one tenant may use; 0 means no limit. Every limit is enforced at the call that
    would exceed it, and none loses a message silently.

    Args:
        max_agents: Agents of the tenant in memory. A spawn past it makes room by
            hibernating the tenant's least recently used idle agents (when the runtime has
            a store), else raises ``TenantLimitError``. Waking a hibernated agent is never
            refused (its mail must not be lost).
        max_queued: Messages queued across the tenant's agents (rate-delayed ones
            included). A send past it raises ``TenantLimitError``; with ``overflow="wait"``
            ``await send`` waits for room instead.
        overflow: ``"reject"`` or ``"wait"`` (see ``max_queued``).
        rate: Messages accepted per ``per`` for the tenant's agents (a token bucket of
            ``burst`` tokens); the excess is delayed in order, never dropped.
        per: ``"second"`` or ``"minute"``.
        burst: Tokens the bucket holds (default: ``rate``, at least 1).
        turn_deadline: Seconds a handler step or a ``Work`` task may take. ``Work`` is
            cancelled at the deadline (its failure event gets ``TurnDeadlineError``); a
            handler step cannot be interrupted, so an overrun is counted and
            ``on_deadline`` applies.
        on_deadline: ``"report"`` (count it, keep the step), ``"fail"`` (discard the step's
            transition, outputs and actions; the message fails with ``TurnDeadlineError``
            as its cause and supervision decides) or ``"stop"`` (fail it and stop the agent).
        max_memory: Estimated resident bytes: ``AGENT_BYTES`` per agent, ``MESSAGE_BYTES``
            per queued message, plus the tenant's ``sizer`` over its agents' data. A spawn
            past it makes room by hibernation or raises ``TenantLimitError``.
    """

    max_agents: int = 0
    max_queued: int = 0
    overflow: str = "reject"
    rate: float = 0.0
    per: str = "second"
    burst: int = 0
    turn_deadline: float = 0.0
    on_deadline: str = "report"
    max_memory: int = 0

    def __attrs_post_init__(self) -> None:
        for name in ("max_agents", "max_queued", "burst", "max_memory"):  # (0 = no limit)
            object.__setattr__(self, name, integer(name, getattr(self, name), 0, 2**62))
        _choice("overflow", self.overflow, _OVERFLOW)
        _choice("per", self.per, _PER)
        _choice("on_deadline", self.on_deadline, _ON_DEADLINE)
        # numbers are kept as floats (an int rate of 5 reads back as 5.0)
        object.__setattr__(self, "rate", _bounded("rate", self.rate, 1e9))
        object.__setattr__(
            self, "turn_deadline", _bounded("turn_deadline", self.turn_deadline, 86_400.0)
        )

    @property
    def per_second(self) -> float:
        """``rate`` in messages per second."""
        return self.rate / _PER[self.per]


def _name(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        raise InvalidArgumentError(f"a tenant name is a str of 1..200 characters: {brief(value)}")
    try:
        value.encode()  # exporters write it as a label: a lone surrogate cannot be
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"a tenant name must be valid UTF-8: {brief(value)}") from None
    return value


def _limits(value: Any) -> Limits:
    if not isinstance(value, Limits):
        raise InvalidArgumentError(f"limits must be an engine.Limits, got {brief(value)}")
    return value


def _sizer(value: Any) -> Callable[[Any], int] | None:
    if value is not None and not callable(value):
        raise InvalidArgumentError(f"sizer must be callable or None, got {brief(value)}")
    return value  # type: ignore[no-any-return]


def _weight(value: Any) -> float:
    weight = number("weight", value)
    if not 0.0 < weight <= _MAX_WEIGHT:
        raise InvalidArgumentError(f"weight must be in (0, {_MAX_WEIGHT:g}], got {brief(value)}")
    return weight


@final
@attrs.frozen
class Tenant:
    """A tenant: its name, weight (share of the dispatcher when several are backlogged),
    limits and optional ``sizer`` (bytes of one agent's data, for ``max_memory``)."""

    name: str = attrs.field(converter=_name)
    weight: float = attrs.field(default=1.0, converter=_weight)
    limits: Limits = attrs.field(factory=Limits, converter=_limits)
    sizer: Callable[[Any], int] | None = attrs.field(default=None, converter=_sizer)


@final
@attrs.frozen
class TenantStatistics:
    """Counters of one tenant (``Runtime.tenant_statistics``, ``statistics().tenants``)."""

    name: str
    weight: float
    agents: int
    """Its agents in memory."""
    processed: int
    """Messages its agents processed (terminated agents included)."""
    failed: int
    queued: int
    """Messages queued for its agents now (rate-delayed ones included)."""
    delayed_now: int
    """Messages its rate holds back now."""
    rejected: int
    """Sends refused at ``max_queued``."""
    delayed: int
    """Messages its rate ever held back."""
    overruns: int
    """Handler steps and ``Work`` tasks past ``turn_deadline``."""
    memory: int
    """Estimated resident bytes (see ``Limits.max_memory``)."""
    hibernated: int = 0
    """Its agents hibernated by ``max_agents`` or ``max_memory`` to make room."""
    step: LatencySummary | None = None
    """Sampled step durations, µs (``sample_every`` > 0)."""
    wait: LatencySummary | None = None
    """Sampled time in mailbox, µs (``sample_every`` > 0)."""


@final
class Tenants:
    """A runtime's tenants by name (private: ``Runtime`` delegates to it)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.by_name: dict[str, int] = {DEFAULT: 0}
        self.info: dict[int, Tenant] = {0: Tenant(DEFAULT)}
        self.made_room: dict[int, int] = {}
        self._sized: dict[int, tuple[float, int]] = {}  # index -> (when, data bytes)
        self.enabled = False  # the dispatcher has tenants (set_tenant was called)

    # -- changing them -----------------------------------------------------------------

    def add(self, tenant: Tenant) -> None:
        if not isinstance(tenant, Tenant):
            raise InvalidArgumentError(f"expected an engine.Tenant, got {brief(tenant)}")
        name = tenant.name
        if name in self.by_name:
            raise TenantExistsError(name)
        index = self.rt._d.free_tenant_index()
        self._apply(index, tenant)
        self.by_name[name] = index

    def change(self, name: str, weight: Any = None, limits: Any = None, sizer: Any = ...) -> None:
        index = self.index(name)
        old = self.info[index]
        new = attrs.evolve(
            old,
            weight=old.weight if weight is None else weight,
            limits=old.limits if limits is None else limits,
            sizer=old.sizer if sizer is ... else sizer,
        )
        self._apply(index, new)

    def _apply(self, index: int, tenant: Tenant) -> None:
        d = self.rt._d
        limits = tenant.limits
        rate = limits.per_second
        burst = float(limits.burst or max(1.0, limits.rate)) if rate else 0.0
        d.set_tenant(
            index,
            tenant.name,
            quantum=max(1, round(tenant.weight * self.rt._budget)),
            max_queued=limits.max_queued,
            wait=limits.overflow == "wait",
            rate=rate,
            burst=burst,
            deadline_ns=round(limits.turn_deadline * 1e9),
            policy=_ON_DEADLINE.index(limits.on_deadline),
            count=bool(limits.max_agents or limits.max_memory),  # read at every spawn
        )
        self.enabled = True
        self.info[index] = tenant
        self._sized.pop(index, None)

    def remove(self, name: str, terminate: bool) -> int:
        index = self.index(name)
        if index == 0:
            raise TenantBusyError(name, "is the default tenant: it cannot be removed")
        rt = self.rt
        d = rt._d
        if d.running:
            raise RuntimeBusyError("remove_tenant() called from inside a run (from a handler?)")
        mine = self.agents_of(index)
        sleeper = rt._sleeper
        if sleeper is not None:  # hibernated ones too: terminate wakes them first
            mine += [a for a, tenant in sleeper.tenant_of.items() if tenant == name]
        if mine and not terminate:
            raise TenantBusyError(
                name, f"still has {len(mine)} agents (terminate=True terminates them)"
            )
        dead = 0
        for agent_id in mine:
            dead += rt.terminate(agent_id)
        rt._timers.cancel(TENANTS, ("release", index))
        dead += d.drop_tenant(index)
        if sleeper is not None:  # counts of its agents that expired asleep: in the totals
            sleeper.tenant_counts.pop(name, None)
        del self.by_name[name]
        del self.info[index]
        self.made_room.pop(index, None)
        self._sized.pop(index, None)
        return dead

    # -- reading them ------------------------------------------------------------------

    def index(self, name: Any) -> int:
        try:
            return self.by_name[name]
        except (KeyError, TypeError):
            raise TenantNotFoundError(name) from None

    def name_of(self, index: int) -> str:
        return self.info[index].name

    def agents_of(self, index: int) -> list[Any]:
        d = self.rt._d
        if not self.enabled:
            return list(d.agent_ids()) if index == 0 else []
        return list(d.tenant_agents(index))

    def memory(self, index: int, fresh: bool = False, load: tuple[int, int] | None = None) -> int:
        """The tenant's estimated resident bytes (``load``: its agents and queued messages,
        when the caller has them)."""
        d = self.rt._d
        if load is None:
            load = d.tenant_load(index) if self.enabled else (len(d), 0)
        agents, queued = load
        return agents * AGENT_BYTES + queued * MESSAGE_BYTES + self._data_bytes(index, fresh)

    def _data_bytes(self, index: int, fresh: bool) -> int:
        sizer = self.info[index].sizer
        if sizer is None:
            return 0
        now = self.rt._clock()
        cached = self._sized.get(index)
        if cached is not None and not fresh and now - cached[0] < _SIZE_EVERY:
            return cached[1]
        d = self.rt._d
        total = 0
        for agent_id in self.agents_of(index):
            total += _size(sizer, d.data(agent_id))
        self._sized[index] = (now, total)
        return total

    # -- limits at spawn ---------------------------------------------------------------

    def admit(self, index: int, data: Any) -> None:
        """Check ``max_agents`` and ``max_memory`` for one more agent of tenant ``index``,
        hibernating the tenant's least recently used idle agents to make room when the
        runtime can; raise ``TenantLimitError`` when it cannot."""
        tenant = self.info[index]
        limits = tenant.limits
        if not (limits.max_agents or limits.max_memory):
            return
        extra = AGENT_BYTES + (0 if tenant.sizer is None else _size(tenant.sizer, data))
        d = self.rt._d
        agents = d.tenant_load(index)[0]
        if limits.max_agents and agents + 1 > limits.max_agents:
            self._make_room(index, agents + 1 - limits.max_agents, 0)
            agents = d.tenant_load(index)[0]
            if agents + 1 > limits.max_agents:
                raise TenantLimitError(
                    tenant.name, "max_agents", limits.max_agents, "spawn refused"
                )
        if limits.max_memory:
            over = self.memory(index) + extra - limits.max_memory
            if over > 0:
                self._make_room(index, 0, over)
                if self.memory(index, fresh=True) + extra > limits.max_memory:
                    raise TenantLimitError(
                        tenant.name, "max_memory", limits.max_memory, "spawn refused"
                    )
            if tenant.sizer is not None:  # count the newcomer's data until the next sum
                when, total = self._sized.get(index, (self.rt._clock(), 0))
                self._sized[index] = (when, total + extra - AGENT_BYTES)

    def _make_room(self, index: int, agents: int, nbytes: int) -> None:
        """Hibernate the tenant's least recently used idle agents: ``agents`` of them, or
        as many as free ``nbytes`` (estimated). Does nothing without a store, or in a run."""
        rt = self.rt
        sleeper = rt._sleeper
        d = rt._d
        if sleeper is None or d.running:
            return
        slots, since = d.idle_since()
        if not len(slots):
            return
        mine = d.tenant_indexes()[slots] == index
        slots, since = slots[mine], since[mine]
        order = np.argsort(since, kind="stable")
        sizer = self.info[index].sizer
        chosen: list[Any] = []
        freed = 0
        for k in order.tolist():
            if len(chosen) >= agents and freed >= nbytes:
                break
            agent_id = d.agent_at(int(slots[k]))
            chosen.append(agent_id)
            freed += AGENT_BYTES + (0 if sizer is None else _size(sizer, d.data(agent_id)))
        if chosen:
            done = sleeper._hibernate(chosen, False)
            self.made_room[index] = self.made_room.get(index, 0) + done
            self._sized.pop(index, None)

    # -- statistics --------------------------------------------------------------------

    def statistics(self) -> list[TenantStatistics]:
        rt = self.rt
        d = rt._d
        table = d.tenant_table() if self.enabled else None
        if table is not None:
            tof = d.tenant_indexes()
            n = len(table)
            processed = np.bincount(tof, weights=d.processed, minlength=n)
            failed = np.bincount(tof, weights=d.failed, minlength=n)
        asleep = {} if rt._sleeper is None else rt._sleeper.tenant_counts
        out = []
        for index, tenant in sorted(self.info.items()):
            rings = d.tenant_rings(index) if table is not None else None
            if table is None:  # no tenants set: the default one is the runtime
                processed_all = int(d.processed.sum()) + d.retired[0]
                failed_all = int(d.failed.sum()) + d.retired[1]
                row = (len(d), processed_all, failed_all, int(d.depths().sum()), 0, 0, 0, 0)
                step, wait = d.step_ring.summary(), d.wait_ring.summary()
            else:
                r = table[index]
                slept = asleep.get(tenant.name, (0, 0))
                row = (
                    int(r["agents"]),
                    int(processed[index]) + int(r["retired_processed"]) + slept[0],
                    int(failed[index]) + int(r["retired_failed"]) + slept[1],
                    int(r["queued"]),
                    int(r["delayed_now"]),
                    int(r["rejected"]),
                    int(r["delayed"]),
                    int(r["overruns"]),
                )
                step = None if rings is None else rings[0].summary()
                wait = None if rings is None else rings[1].summary()
            out.append(
                TenantStatistics(
                    tenant.name,
                    tenant.weight,
                    *row,
                    self.memory(index, load=(row[0], row[3])),  # (agents, queued)
                    self.made_room.get(index, 0),
                    step,
                    wait,
                )
            )
        return out


def _size(sizer: Callable[[Any], int], data: Any) -> int:
    """``sizer(data)``, checked: a sizer that raises or returns nonsense counts as 0 bytes
    and never breaks the call that asked."""
    try:
        value = sizer(data)
    except Exception:
        return 0
    if type(value) is not int or value < 0:
        return 0
    return min(value, 2**62)
