"""``execute_agent``: the old design's ``executeAgent`` flow, stage by stage, on the engine.

1. Get the organization's runtime: its tenant (``OrganizationNotFoundError``), the agent,
   and the event checked against the deployed machine (``UnknownEventError``): bad input
   fails before anything is woken or sent.
2. Check limits. ``max_queue_size`` is counted by the layer (``_line``: its executions sent
   and not answered, no call into the engine): ``"queue"`` waits in the organization's line
   (by priority, in order, at most ``max_waiting`` callers), ``"refuse"`` sends and lets the
   engine refuse (``OrganizationLimitError``). Past the rate, the engine itself holds the
   message back, in order, on its clock. The engine still has the last word at the send:
   an execution refused although the layer counted room (its queue was filled around the
   layer) keeps its place and looks at the tenant's queue again, without sending, backing off
   from ``POLL`` to ``POLL_MAX`` seconds, until there is room or its ``timeout``.
3. Restore the agent's memory: wake it from hibernation (``rt.wake``); an agent whose memory
   expired (``expire_after`` removed it) starts again on the deployed version, from its
   initial state and the version's starting memory. Checked after any wait: an agent removed
   (or an organization destroyed) meanwhile fails with ``AgentNotFoundError``
   (``OrganizationNotFoundError``) and never comes back.
4. Execute: ``rt.request(agent, event, input)``, the agent's answer. Refused there (policy
   ``"refuse"``), an agent it woke is stored again.
5. Store its memory: ``rt.hibernate`` for a long-running agent (an agent with other mail
   queued stays in memory; the execution that empties its mailbox stores it). A failed
   store does not fail the execution: ``stored=False`` and ``store_error``. An execution
   given up (cancelled, timed out) after its message was queued leaves a task behind that
   stores the agent once its mailbox is empty.
6. Collect metrics: the engine counts the tenant's messages in its drain loop and
   ``MetricsHistory`` reads them on its clock; the layer counts executions and their time
   (failures at any stage included).

``timeout`` bounds the whole execution: its wait in the line and for the answer.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

import trio

from ... import (
    AgentBusyError,
    AgentNotFoundError,
    AgentStatus,
    EngineError,
    InvalidArgumentError,
    TenantLimitError,
    UnknownEventError,
)
from . import _agents
from ._errors import ExecutionFailedError, OrganizationLimitError, OrganizationNotFoundError
from ._values import ExecutionResult

if TYPE_CHECKING:
    from ... import Runtime
    from ._manager import Organizations
    from ._records import Agent, Org

POLL = 0.05
"""First wait, in seconds, of an execution refused by the engine although the layer counted
room (its queue was filled around the layer) before it looks at the queue again."""
POLL_MAX = 2.0
"""Longest wait between two looks (the wait doubles each time)."""
STORE_MAX = 30.0
"""Longest wait between two tries of the task that stores an agent whose execution was
given up (it starts at ``POLL`` and doubles)."""


def _check(timeout: Any, priority: Any, event: Any) -> None:
    if not isinstance(event, str):
        raise InvalidArgumentError(f"event must be a str, got {type(event).__name__}")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (math.isfinite(timeout) and timeout > 0)
    ):
        raise InvalidArgumentError(f"timeout must be a finite number > 0 or None: {timeout!r}")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 3:
        raise InvalidArgumentError(f"priority must be an engine.Priority (0..3): {priority!r}")


def _still(mgr: Organizations, name: str, org: Org, agent: str, entry: Agent) -> None:
    """After a wait: the organization and the agent must be the very ones the call began
    with (destroyed, or removed and added again, they are others)."""
    if mgr._orgs.get(name) is not org or org.line.closed:
        raise OrganizationNotFoundError(name)
    if org.agents.get(agent) is not entry:
        raise AgentNotFoundError((name, agent))


async def _room_again(rt: Runtime, org: Org, deadline: float) -> None:
    """Wait until the tenant's queue has room (read without sending: nothing is refused or
    counted), backing off; ``trio.TooSlowError`` at ``deadline``."""
    limit = org.limits.max_queue_size
    pause = POLL
    with trio.fail_at(deadline):
        while True:
            await trio.sleep(pause)
            if org.line.closed or not limit or rt.tenant_statistics(org.name).queued < limit:
                return
            pause = min(pause * 2, POLL_MAX)


async def _store_later(
    mgr: Organizations, name: str, org: Org, agent: str, entry: Agent, *, task_status: Any
) -> None:
    """Store an agent whose execution was given up, once its mail is processed."""
    task_status.started()
    rt, eid = mgr.runtime, (name, agent)
    pause = POLL
    while mgr._orgs.get(name) is org and org.agents.get(agent) is entry:
        try:
            if rt.status(eid) is not AgentStatus.HIBERNATED:
                rt.hibernate(eid)
            return
        except AgentBusyError:  # its message is still queued (or held by the rate)
            pass
        except EngineError:  # gone, or cannot be stored: nothing more to do
            return
        await trio.sleep(pause)
        pause = min(pause * 2, STORE_MAX)


async def execute(
    mgr: Organizations,
    name: Any,
    agent: Any,
    payload: Any,
    event: Any,
    timeout: Any,
    priority: Any,
) -> ExecutionResult:
    """See ``Organizations.execute_agent``."""
    org = mgr._org(name)
    entry = org.agent(agent)
    _check(timeout, priority, event)
    machine = org.deployed[entry.package][-1][0]
    if event not in machine.events:  # (before anything is woken or sent)
        raise UnknownEventError(machine.name, event)
    rt = mgr.runtime
    clock = trio.current_time
    start = clock()
    deadline = math.inf if timeout is None else start + timeout
    line = org.line
    queue = org.limits.overflow == "queue"
    queued = False
    # -- 2. the organization's line (the layer's count of its queue) -------------------------
    if queue and not line.take():
        if org.limits.max_waiting and len(line) >= org.limits.max_waiting:
            cause = TenantLimitError(name, "max_waiting", org.limits.max_waiting, "line full")
            raise OrganizationLimitError(name, cause)
        queued = True
        try:
            with trio.fail_at(deadline):
                token = await line.wait(priority)
                while line.blocked and not line.closed:  # one ahead looks again: behind it
                    line.back(token)
                    token = await line.wait(priority, head=True)
        except trio.TooSlowError as exc:
            org.failures += 1
            org.executions += 1
            raise ExecutionFailedError(name, agent, "line", exc) from exc
        try:
            _still(mgr, name, org, agent, entry)
        except EngineError:
            line.sent(token)
            line.free()
            raise
    else:
        token = None
        if not queue:
            line.taken += 1
    waited = clock() - start
    placed = True  # a place in the line's count is ours until freed
    sent = False
    eid = (name, agent)
    memory = "resident"
    asleep = False  # to be stored again if the execution fails: woken by it, or it failed
    try:
        # -- 3. restore --------------------------------------------------------------------
        t_restore = clock()
        try:
            if rt.status(eid) is AgentStatus.HIBERNATED:
                rt.wake(eid)
                memory = "restored"
                asleep = True
        except AgentNotFoundError:  # expired asleep (checked: still ours): afresh
            memory = "expired"
            asleep = True
            try:
                _agents.respawn(mgr, org, agent, entry)
            except TenantLimitError as exc:
                raise OrganizationLimitError(name, exc) from exc
            except Exception as exc:  # the spawn, or the package's starting-memory factory
                org.failures += 1
                org.executions += 1
                raise ExecutionFailedError(name, agent, "restore", exc) from exc
        except EngineError as exc:
            org.failures += 1
            org.executions += 1
            raise ExecutionFailedError(name, agent, "restore", exc) from exc
        # -- 4. execute (the engine's limits at the send) -----------------------------------
        t_execute = clock()
        restored = t_execute - t_restore
        while True:
            try:
                left = None if deadline == math.inf else max(deadline - clock(), 1e-9)
                sent = True
                line.sent(token)  # (the next caller runs after the message is queued)
                output = await rt.request(eid, event, payload, priority=priority, timeout=left)
            except TenantLimitError as exc:  # refused at the send: nothing was queued
                sent = False
                if not queue:  # (an agent it woke goes back to sleep: see finally)
                    raise OrganizationLimitError(name, exc) from exc
                queued = True  # filled around the layer: look again, without sending
                org.retrying += 1
                line.block()
                try:
                    await _room_again(rt, org, deadline)
                except trio.TooSlowError as slow:
                    org.failures += 1
                    org.executions += 1
                    raise ExecutionFailedError(name, agent, "line", slow) from slow
                finally:
                    org.retrying -= 1
                    line.unblock()
                _still(mgr, name, org, agent, entry)
                waited += clock() - t_execute
                t_execute = clock()
                continue
            except (EngineError, trio.TooSlowError) as exc:
                sent = isinstance(exc, trio.TooSlowError)  # (its message may still be queued)
                asleep = True  # (a long-running agent is stored after a failure too)
                org.failures += 1
                org.executions += 1
                raise ExecutionFailedError(name, agent, "execute", exc) from exc
            break
        sent = False  # answered: nothing left behind
        placed = False
        line.free()
    finally:
        if placed:
            line.sent(token)
            line.free()
            if entry.long_running:
                if sent:  # given up with its message queued: store the agent once processed
                    with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                        await rt.start(_store_later, mgr, name, org, agent, entry)  # (closing:
                        # not running, or its nursery closed: the agent stays in memory)
                elif asleep:
                    with contextlib.suppress(EngineError):
                        rt.hibernate(eid)
    # -- 5. store --------------------------------------------------------------------------
    t_store = clock()
    stored = False
    store_error = None
    if entry.long_running:
        try:
            rt.hibernate(eid)
            stored = True
        except (AgentBusyError, AgentNotFoundError):
            pass  # more mail queued for it (the last execution stores it), or terminated
        except EngineError as exc:  # the answer stands; the agent stays in memory
            store_error = exc
    # -- 6. metrics ----------------------------------------------------------------------
    end = clock()
    org.executions += 1
    org.queued += queued
    org.total_time += end - start
    version = org.deployed[entry.package][-1][0].version
    return ExecutionResult(
        name, agent, output, entry.package, version, memory, stored, queued,
        waited, restored, t_store - t_execute, end - t_store, end - start, store_error,
    )  # fmt: skip
