"""An organization's agents and their long-running memory.

Theory of operation: an agent ``a`` of organization ``o`` is the engine agent ``(o, a)`` in
tenant ``o``, on the organization's copy of its package's deployed version. Its memory is its
data: ``rt.hibernate`` stores it (the record goes to the runtime's store, the agent out of
memory), anything naming the agent restores it (``rt.wake``, a request, ``rt.data``), and the
runtime's ``expire_after`` removes it once it has slept that long. The layer keeps a copy of
the data the agent was added with, so that an agent whose memory expired starts again from
it: that is the agent's definition, not its state.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from ... import AgentExistsError, AgentStatus, InvalidArgumentError, TenantLimitError
from ._errors import OrganizationLimitError, brief
from ._records import Agent, Org, check_name

if TYPE_CHECKING:
    from ... import Runtime


def add(
    rt: Runtime, org: Org, agent: Any, package: Any, data: Any, long_running: Any, machine: Any
) -> None:
    """See ``Organizations.add_agent`` (``machine``: the package's deployed copy)."""
    check_name("an agent", agent)
    if type(long_running) is not bool:
        raise InvalidArgumentError(f"long_running must be a bool, got {brief(long_running)}")
    if agent in org.agents:
        raise AgentExistsError((org.name, agent))
    try:
        entry = Agent(package, long_running, copy.deepcopy(data))
    except Exception as exc:
        raise InvalidArgumentError(f"data cannot be copied: {type(exc).__name__}") from exc
    try:
        rt.spawn(machine, (org.name, agent), data, tenant=org.name)
    except TenantLimitError as exc:
        raise OrganizationLimitError(org.name, exc) from exc
    org.agents[agent] = entry


def respawn(rt: Runtime, org: Org, agent: str, entry: Agent) -> None:
    """Start an agent whose memory expired again, from the data it was added with, on the
    version deployed now."""
    machine = org.deployed[entry.package][-1][0]
    rt.spawn(machine, (org.name, agent), copy.deepcopy(entry.data), tenant=org.name)


def remove(rt: Runtime, org: Org, agent: Any) -> int:
    """See ``Organizations.remove_agent``."""
    org.agent(agent)
    eid = (org.name, agent)
    dead = rt.terminate(eid) if eid in rt else 0
    del org.agents[agent]
    return dead


def memory(rt: Runtime, org: Org, agent: Any) -> Any:
    """See ``Organizations.memory``."""
    org.agent(agent)
    eid = (org.name, agent)
    if eid not in rt:
        return None
    asleep = rt.status(eid) is AgentStatus.HIBERNATED
    data = rt.data(eid)  # (wakes it)
    if asleep:
        rt.hibernate(eid)
    return data


def store(rt: Runtime, org: Org, agent: Any) -> None:
    """See ``Organizations.store_memory``."""
    org.agent(agent)
    if rt.status((org.name, agent)) is not AgentStatus.HIBERNATED:
        rt.hibernate((org.name, agent))
