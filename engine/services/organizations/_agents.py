"""An organization's agents and their long-running memory.

Theory of operation: an agent ``a`` of organization ``o`` is the engine agent ``(o, a)`` in
tenant ``o``, on the organization's copy of its package's deployed version. Its memory is its
data: ``rt.hibernate`` stores it (the record goes to the runtime's store, the agent out of
memory), anything naming the agent restores it (``rt.wake``, a request, ``rt.data``), and the
runtime's ``expire_after`` removes it once it has slept that long. The layer keeps no copy of
any agent's data: an agent whose memory expired starts again from the starting memory of the
version deployed now (``register_package(data=)``, a factory; None without one), so what it
starts with always fits that version. Reading a hibernated agent's memory reads its record in
the store (``engine.store.decode``) without waking it, so its expiry does not move. Removing
an agent (or destroying its organization) removes its records from the store
(``Store.forget``; under ``durability="log"`` the engine's tombstone, which ``compact``
drops, except that the engine writes a commit round's tombstones before its hibernation
records: an agent hibernated and removed in one round keeps its hibernation record).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ... import (
    AgentExistsError,
    AgentNotFoundError,
    AgentStatus,
    InvalidArgumentError,
    TenantLimitError,
)
from ...store import TOMBSTONE, agent_key, decode
from ._errors import OrganizationLimitError, brief
from ._records import Agent, Org, check_name

if TYPE_CHECKING:
    from ._manager import Organizations


def add(
    mgr: Organizations, org: Org, agent: Any, package: Any, data: Any, long_running: Any,
    machine: Any,
) -> None:  # fmt: skip
    """See ``Organizations.add_agent`` (``machine``: the package's deployed copy)."""
    check_name("an agent", agent)
    if type(long_running) is not bool:
        raise InvalidArgumentError(f"long_running must be a bool, got {brief(long_running)}")
    if agent in org.agents:
        raise AgentExistsError((org.name, agent))
    if data is None:
        data = mgr._registry.starting_memory(package, machine.version)
    try:
        mgr.runtime.spawn(machine, (org.name, agent), data, tenant=org.name)
    except TenantLimitError as exc:
        raise OrganizationLimitError(org.name, exc) from exc
    org.agents[agent] = Agent(package, long_running)


def respawn(mgr: Organizations, org: Org, agent: str, entry: Agent) -> None:
    """Start an agent whose memory expired again, on the version deployed now, from that
    version's starting memory."""
    machine = org.deployed[entry.package][-1][0]
    data = mgr._registry.starting_memory(entry.package, machine.version)
    mgr.runtime.spawn(machine, (org.name, agent), data, tenant=org.name)


def forget(mgr: Organizations, org_name: str, agent: str) -> None:
    """Remove a removed agent's records from the store (the engine's log writes its own
    tombstone: then nothing is done here)."""
    if mgr._store is not None and not mgr._log:
        mgr._store.forget(agent_key((org_name, agent), mgr._codec))


def remove(mgr: Organizations, org: Org, agent: Any) -> int:
    """See ``Organizations.remove_agent``."""
    org.agent(agent)
    rt = mgr.runtime
    eid = (org.name, agent)
    dead = rt.terminate(eid) if eid in rt else 0  # (a hibernated one is read back first)
    del org.agents[agent]
    forget(mgr, org.name, agent)
    return dead


def memory(mgr: Organizations, org: Org, agent: Any) -> Any:
    """See ``Organizations.memory``."""
    entry = org.agent(agent)
    rt = mgr.runtime
    eid = (org.name, agent)
    try:
        status = rt.status(eid)
    except AgentNotFoundError:
        return None  # expired
    if status is not AgentStatus.HIBERNATED:
        return rt.data(eid)
    store = mgr._store
    if store is not None and not mgr._log:  # (under the log, the newest may not be written)
        found = store.latest([agent_key(eid, mgr._codec)])
        if found and found[0].record != TOMBSTONE:
            snapshot = decode(found[0].record, mgr._codec, eid)
            machine = org.deployed[entry.package][-1][0]
            if (snapshot.machine, snapshot.version) == (machine.name, machine.version):
                return snapshot.data
    # on an older version (its migrations run as it wakes), or no store to read: wake it
    # and store it again (this restarts its expiry)
    data = rt.data(eid)
    rt.hibernate(eid)
    return data


def store(mgr: Organizations, org: Org, agent: Any) -> None:
    """See ``Organizations.store_memory``."""
    org.agent(agent)
    rt = mgr.runtime
    if rt.status((org.name, agent)) is not AgentStatus.HIBERNATED:
        rt.hibernate((org.name, agent))
