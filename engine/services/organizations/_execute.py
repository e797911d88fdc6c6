"""``execute_agent``: the old design's ``executeAgent`` flow, stage by stage, on the engine.

1. Get the organization's runtime: its tenant (``OrganizationNotFoundError``) and the agent.
2. Check limits: the engine checks them at the send (step 4). Past ``max_queue_size`` the
   send is refused with ``TenantLimitError``: ``"refuse"`` raises ``OrganizationLimitError``,
   ``"queue"`` waits in the organization's line (``_line``) and sends again in its turn. Past
   the rate, the engine itself holds the message back, in order, on its clock. (With none
   of the organization's executions in flight, the head of the line tries again every
   ``POLL`` seconds: its queue was filled around the layer.)
3. Restore the agent's memory: wake it from hibernation (``rt.wake``); an agent whose memory
   expired (``expire_after`` removed it) starts again from its package's initial state.
4. Execute: ``rt.request(agent, event, input)``, the agent's answer.
5. Store its memory: ``rt.hibernate`` for a long-running agent (an agent with other mail
   queued stays in memory; the execution that empties its mailbox stores it).
6. Collect metrics: the engine counts the tenant's messages in its drain loop and
   ``MetricsHistory`` reads them on its clock; the layer counts executions and their time.
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
)
from . import _agents
from ._errors import ExecutionFailedError, OrganizationLimitError, OrganizationNotFoundError
from ._values import ExecutionResult

if TYPE_CHECKING:
    from ._manager import Organizations
    from ._records import Org

_ALL = 1 << 62
POLL = 0.05
"""Seconds between tries of an execution refused while none of its organization's is in
flight (its queue was filled around the layer): the engine has no public wait for room in a
tenant's queue that a request could use."""


def _room(rt: Any, org: Org) -> int:
    """Messages the organization's queue can still take."""
    limit = org.limits.max_queue_size
    return _ALL if not limit else limit - rt.tenant_statistics(org.name).queued


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
    rt = mgr.runtime
    clock = trio.current_time
    start = clock()
    line = org.line
    queued = turn = False
    if line.busy:  # others wait: behind them
        queued = True
        await line.wait()
        turn = True
    waited = clock() - start
    try:
        if line.closed:
            raise OrganizationNotFoundError(name)
        # -- 3. restore ----------------------------------------------------------------
        t_restore = clock()
        eid = (name, agent)
        try:
            if rt.status(eid) is AgentStatus.HIBERNATED:
                rt.wake(eid)
                memory = "restored"
            else:
                memory = "resident"
        except AgentNotFoundError:  # expired asleep: afresh, on the deployed version
            memory = "expired"
            try:
                _agents.respawn(rt, org, agent, entry)
            except TenantLimitError as exc:
                raise OrganizationLimitError(name, exc) from exc
        except EngineError as exc:
            raise ExecutionFailedError(name, agent, "restore", exc) from exc
        # -- 2 and 4. limits, execute --------------------------------------------------
        t_execute = clock()
        restored = t_execute - t_restore
        while True:
            if turn:
                if line.closed:
                    raise OrganizationNotFoundError(name)
                if len(line) and _room(rt, org) >= 2:
                    line.give_next()  # it can only send after we have
                line.used()
                turn = False
            org.in_flight += 1
            try:
                output = await rt.request(eid, event, payload, priority=priority, timeout=timeout)
            except TenantLimitError as exc:  # refused at the send: nothing was queued
                org.in_flight -= 1
                if org.limits.overflow == "refuse":
                    raise OrganizationLimitError(name, exc) from exc
                queued = True
                if org.in_flight:  # one of ours finishing gives the turn
                    await line.wait(head=True)
                else:  # none will finish to give a turn: keep the head, look again soon
                    line.hold()
                    turn = True
                    await trio.sleep(POLL)
                turn = True
                waited += clock() - t_execute
                t_execute = clock()
                continue
            except (EngineError, trio.TooSlowError) as exc:
                org.in_flight -= 1
                org.failures += 1
                org.executions += 1
                line.give()
                if entry.long_running:  # the agent stays in memory if this fails too
                    with contextlib.suppress(EngineError):
                        rt.hibernate(eid)
                raise ExecutionFailedError(name, agent, "execute", exc) from exc
            except BaseException:  # cancelled while waiting for the answer
                org.in_flight -= 1
                line.give()
                raise
            break
        org.in_flight -= 1
        line.give()
    except BaseException:
        if turn:  # a turn held and not used: hand it on
            line.used()
            line.give()
        raise
    # -- 5. store --------------------------------------------------------------------------
    t_store = clock()
    stored = False
    if entry.long_running:
        try:
            rt.hibernate(eid)
            stored = True
        except (AgentBusyError, AgentNotFoundError):
            pass  # more mail queued for it (the last execution stores it), or terminated
        except EngineError as exc:
            org.failures += 1
            org.executions += 1
            raise ExecutionFailedError(name, agent, "store", exc) from exc
    # -- 6. metrics ----------------------------------------------------------------------
    end = clock()
    org.executions += 1
    org.queued += queued
    org.total_time += end - start
    version = org.deployed[entry.package][-1][0].version
    return ExecutionResult(
        name, agent, output, entry.package, version, memory, stored, queued,
        waited, restored, t_store - t_execute, end - t_store, end - start,
    )  # fmt: skip
