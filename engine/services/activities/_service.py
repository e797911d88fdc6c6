"""``ActivityService``: create / send / query / subscribe / terminate, on one engine runtime.

Theory of operation: a service agent *is* an engine agent of the service's machine
(``_machine``): its state is the agent's data (the only copy), its activities are messages
in the agent's mailbox lanes (``Activity.priority`` is the lane), its status and counters
are the engine's (``rt.status``, ``rt.statistics``), and ``subscribe`` reads the engine's
record stream. What the engine does not keep, the service keeps per agent in an ``Entry``
(``_agent``): the agent's workflow, and when it last entered each status. The engine stamps
only the current status (``rt.status_since``), so the service notes that stamp before it is
replaced: at every ``send`` (an IDLE spell ends only with a send) and at the start of every
step (a step runs during each PROCESSING spell, and the step that ends an ERROR spell runs
while ERROR still shows; during a step the stamp is when the shown status began).

The service touches only its own agents: an ``Entry``'s ref is the one agent it made. The
ref goes stale when the agent is terminated, replaced, hibernated or upgraded; the service
takes the new ref after its own upgrades (``register_type``) and when the id is hibernated
(then it is the same agent, asleep), never otherwise: an agent spawned on the id behind the
service's back, even on its machine, is not the service's. A send that waits for room goes
through the entry's ref, so it reaches the agent it was meant for or fails not-found.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, final

import trio

from ... import (
    AgentNotFoundError,
    AgentStatus,
    HandlerError,
    MailboxFullError,
    Runtime,
    Supervision,
    TenantLimitError,
)
from . import _machine
from ._agent import ActivityAgent, Entry, Workflow, as_activity, check_callable, hashable, unwrap
from ._errors import (
    ActivityAgentExistsError,
    ActivityAgentNotFoundError,
    ActivityTimeoutError,
    InvalidActivityError,
    UnknownActivityTypeError,
    UnknownCommandError,
    brief,
)
from ._stream import ActivityStream
from ._values import (
    Activity,
    ActivityAgentState,
    ActivityServiceStatistics,
    ActivityType,
    ProcessingMetrics,
    StatusTimes,
    finite,
)

_RESUME = Supervision("resume")  # a failed activity leaves the state and goes on
_ROOM_POLL = (0.001, 0.05)
"""A blocked send looks for room this often (growing from the first to the second, in
seconds); the engine has no public wait for room that names an agent's ref."""
_END_POLL = 1.0
"""A subscription looks this often whether its agent was terminated behind the service's
back (a terminate through the service ends it at once)."""


@final
class ActivityService:
    """The agent runtime service over one engine ``Runtime``; made by
    ``open_activity_service``.

    Custom types and commands may be registered at any time; a type registered while agents
    run moves them onto the machine's next version (``rt.upgrade``). Handlers run inside the
    engine's drain loop and are synchronous: from there, use ``send_nowait``.
    """

    def __init__(self, runtime: Runtime, name: str, workflow: Workflow | None) -> None:
        if not isinstance(runtime, Runtime):
            raise InvalidActivityError(f"runtime must be an engine.Runtime, got {brief(runtime)}")
        if not isinstance(name, str) or not name:
            raise InvalidActivityError(f"name must be a non-empty str, got {brief(name)}")
        check_callable("workflow", workflow, optional=True)
        self.runtime = runtime
        """The engine runtime the agents live in."""
        self.entries: dict[Any, Entry] = {}
        self._name = name
        self._workflow = workflow
        self._commands: dict[str, _machine.Handler] = {}
        self._kinds: dict[str, _machine.Kind] = {
            ActivityType.STATE_CHANGE.value: _machine.state_change,
            ActivityType.COMMAND.value: _machine.command(self._commands),
        }
        self.machine = _machine.build(name, 1, self._kinds, self)
        """The engine machine of the service's agents (its version grows with each type)."""

    # -- registration ----------------------------------------------------------------------

    @property
    def types(self) -> tuple[str, ...]:
        """Registered activity types, built-in ones first."""
        return tuple(self._kinds)

    @property
    def commands(self) -> tuple[str, ...]:
        """Registered command names."""
        return tuple(self._commands)

    def statistics(self) -> ActivityServiceStatistics:
        """Agents, registrations, machine version, and the engine's counts for its machine."""
        mine = [m for m in self.runtime.machine_statistics() if m.machine == self._name]
        return ActivityServiceStatistics(
            len(self.entries),
            self.types,
            self.commands,
            self.machine.version,
            sum(m.processed for m in mine),
            sum(m.failed for m in mine),
        )

    def register_type(self, name: str, handler: _machine.Handler) -> None:
        """Register a custom activity type handled by ``handler(state, activity) -> Outcome
        | None``. Running agents are moved onto the new machine version.

        Raises:
            InvalidActivityError: Not a non-empty str, already registered, or not callable.
            engine.RuntimeBusyError: Called from a handler (nothing registered).
        """
        if not isinstance(name, str) or not name:
            raise InvalidActivityError(f"a type name must be a non-empty str, got {brief(name)}")
        name = str.__str__(name)
        if name in self._kinds:
            raise InvalidActivityError(f"activity type {name!r} is already registered")
        check_callable("a type handler", handler)
        kinds = {**self._kinds, name: _machine.custom(handler)}
        old = self.machine
        new = _machine.build(self._name, old.version + 1, kinds, self)
        mine = [(i, e) for i, e in self.entries.items() if e.ref.alive]
        if self.entries:
            self.runtime.upgrade(old, new)  # refused in a run: nothing changed yet
        self._kinds, self.machine = kinds, new
        for agent_id, entry in mine:  # the same agents, moved onto ``new``: new refs
            if agent_id in self.runtime and self.runtime.machine(agent_id) is new:
                entry.ref = self.runtime.ref(agent_id)

    def register_command(self, name: str, handler: _machine.Handler) -> None:
        """Register ``handler(state, activity) -> Outcome | None`` for COMMAND activities
        whose payload is ``{"command": name, ...}``.

        Raises:
            InvalidActivityError: Not a non-empty str, already registered, or not callable.
        """
        if not isinstance(name, str) or not name:
            raise InvalidActivityError(f"a command name must be a non-empty str, got {brief(name)}")
        name = str.__str__(name)
        if name in self._commands:
            raise InvalidActivityError(f"command {name!r} is already registered")
        check_callable("a command handler", handler)
        self._commands[name] = handler

    # -- agents ----------------------------------------------------------------------------

    async def create(
        self, agent_id: Any, initial_state: Any = None, *, workflow: Workflow | None = None
    ) -> ActivityAgent:
        """Create an agent with ``initial_state``; ``workflow`` (default: the service's)
        runs on every activity after its type's handler.

        Raises:
            ActivityAgentExistsError: The id is taken.
            InvalidActivityError: The id is None or unhashable, or ``workflow`` is not
                callable.
        """
        await trio.lowlevel.checkpoint()
        check_callable("workflow", workflow, optional=True)
        if agent_id is None or not hashable(agent_id):
            raise InvalidActivityError(
                f"an agent id must be hashable and not None, got {brief(agent_id)}"
            )
        if agent_id in self.runtime:
            raise ActivityAgentExistsError(agent_id)
        ref = self.runtime.spawn(self.machine, agent_id, initial_state, supervision=_RESUME)
        entry = self.entries[agent_id] = Entry(
            ref, self._workflow if workflow is None else workflow
        )
        entry.note(AgentStatus.IDLE, self.runtime.status_since(agent_id))
        return ActivityAgent(self, agent_id)

    async def terminate(self, agent_id: Any) -> int:
        """Remove an agent; its queued activities become dead letters (returns how many).

        Raises:
            ActivityAgentNotFoundError: No agent of this service has that id.
        """
        await trio.lowlevel.checkpoint()
        entry = self._entry(agent_id)
        try:
            return self.runtime.terminate(agent_id)
        except AgentNotFoundError:
            raise ActivityAgentNotFoundError(agent_id) from None
        finally:
            self._forget(agent_id, entry)

    def _forget(self, agent_id: Any, entry: Entry) -> None:
        if self.entries.get(agent_id) is entry:
            del self.entries[agent_id]
        entry.end()

    def close(self) -> None:
        """Terminate the service's own agents still there (never one that took an id of
        theirs behind the service's back)."""
        for agent_id, entry in list(self.entries.items()):
            if self.owns(agent_id, entry):
                with contextlib.suppress(AgentNotFoundError):
                    self.runtime.terminate(agent_id)
            self._forget(agent_id, entry)

    def owns(self, agent_id: Any, entry: Entry) -> bool:
        """The entry's agent is still there: its ref is live, or the id is hibernated (the
        ref went stale when it was)."""
        if entry.ended:
            return False
        if entry.ref.alive:
            return True
        rt = self.runtime
        return agent_id in rt and rt.status(agent_id) is AgentStatus.HIBERNATED

    def agent(self, agent_id: Any) -> ActivityAgent:
        """The handle of an existing agent (raises ``ActivityAgentNotFoundError``)."""
        self._entry(agent_id)
        return ActivityAgent(self, agent_id)

    def agent_ids(self) -> list[Any]:
        """Ids of the service's agents."""
        return list(self.entries)

    def _entry(self, agent_id: Any) -> Entry:
        """The entry of a live agent of this service, or ``ActivityAgentNotFoundError``."""
        try:
            entry = self.entries.get(agent_id)
        except TypeError:  # unhashable
            entry = None
        if entry is None:
            raise ActivityAgentNotFoundError(agent_id)
        if not entry.ref.alive:  # hibernated (woken now, the same agent), or terminated or
            if not self.owns(agent_id, entry):  # replaced behind the service's back
                self._forget(agent_id, entry)
                raise ActivityAgentNotFoundError(agent_id)
            self.runtime.wake(agent_id)
            entry.ref = self.runtime.ref(agent_id)
        return entry

    # -- sending ---------------------------------------------------------------------------

    def _check(self, agent_id: Any, activity: Any) -> tuple[Entry, Activity]:
        checked = as_activity(activity)
        kind = checked.type
        if kind not in self._kinds:
            raise UnknownActivityTypeError(self._name, kind)
        if kind == "COMMAND":
            name = _machine.command_name(checked.payload)
            if name not in self._commands:
                raise UnknownCommandError(name)
        entry = self._entry(agent_id)
        if entry.ref.status is AgentStatus.IDLE:  # an IDLE spell ends with this send: note
            entry.idle = self.runtime.status_since(agent_id)  # when it began (steps note
        return entry, checked  # the other statuses)

    def send_nowait(self, agent_id: Any, activity: Activity | Mapping[str, Any]) -> None:
        """Queue an activity in the lane of its priority (synchronous; usable in handlers).

        Raises:
            ActivityAgentNotFoundError, UnknownActivityTypeError, UnknownCommandError,
            InvalidActivityError: Nothing was queued.
            engine.MailboxFullError: A bounded mailbox is full (a ``trio.WouldBlock``).
        """
        entry, checked = self._check(agent_id, activity)
        entry.ref.send_nowait(checked.type, checked, checked.priority)

    async def send(self, agent_id: Any, activity: Activity | Mapping[str, Any]) -> None:
        """Queue an activity (waits while a bounded mailbox is full); it is processed by the
        runtime's dispatch task, in priority order. Raises what ``send_nowait`` raises
        (nothing queued), except that a full mailbox is waited for: it goes to the agent it
        was meant for, or raises ``ActivityAgentNotFoundError`` if that agent is terminated
        while it waits (never to another agent that took the id)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        entry, checked = self._check(agent_id, activity)
        ref = entry.ref
        delay = _ROOM_POLL[0]
        while True:
            if entry.ended or not ref.alive:  # terminated (or moved) while it waited
                if not self.owns(agent_id, entry):
                    self._forget(agent_id, entry)
                raise ActivityAgentNotFoundError(agent_id)
            try:
                ref.send_nowait(checked.type, checked, checked.priority)
                break
            except MailboxFullError:
                pass
            except TenantLimitError as exc:
                if not exc.wait:
                    raise
            await entry.wait(delay)
            delay = min(delay * 2, _ROOM_POLL[1])
        # committed, under durability="log" (as rt.send; cancelled here, it stays queued)
        await self.runtime.flush()

    async def process(
        self,
        agent_id: Any,
        activity: Activity | Mapping[str, Any],
        *,
        timeout: float | None = None,
    ) -> tuple[Any, ...]:
        """Send an activity and wait until it is processed; return its results.

        Raises:
            ProcessingError: Processing failed (the cause is ``__cause__``).
            ActivityTimeoutError: Not processed within ``timeout`` seconds (also a
                ``trio.TooSlowError``). The activity stays queued: it may still be processed
                later.
            engine.AgentStoppedError: The agent was terminated first.
            And what ``send_nowait`` raises (nothing queued).
        """
        timeout = finite("timeout", timeout)
        _, checked = self._check(agent_id, activity)
        try:
            results = await self.runtime.request(
                agent_id, checked.type, checked, priority=checked.priority, timeout=timeout
            )
        except trio.TooSlowError:
            assert timeout is not None
            raise ActivityTimeoutError(agent_id, checked.id, timeout) from None
        except HandlerError as err:
            cause = unwrap(err)
            if cause is err or cause is None:
                raise
            raise cause from cause.__cause__
        return tuple(results)

    # -- reading ---------------------------------------------------------------------------

    async def get_state(self, agent_id: Any) -> ActivityAgentState:
        """The agent's state, status, status times and metrics.

        Raises:
            ActivityAgentNotFoundError: No agent of this service has that id.
        """
        await trio.lowlevel.checkpoint()
        entry = self._entry(agent_id)
        rt = self.runtime
        stats = rt.statistics(agent_id)
        entry.note(stats.status, stats.status_since)
        error = unwrap(stats.last_error)
        handled = stats.processed + stats.failed
        average = None
        if stats.busy_s is not None:
            average = stats.busy_s / handled if handled else 0.0
        return ActivityAgentState(
            agent_id,
            rt.data(agent_id),
            stats.status,
            stats.status_since,
            StatusTimes(entry.idle, entry.processing, entry.error),
            error if stats.status is AgentStatus.ERROR else None,
            ProcessingMetrics(stats.processed, stats.failed, average, error),
        )

    @asynccontextmanager
    async def subscribe(
        self, agent_id: Any, from_seq: int | None = None
    ) -> AsyncIterator[ActivityStream]:
        """Follow the activities the agent processes (the engine's record stream: it never
        takes one from the mailbox); ``from_seq`` resumes from a cursor. The stream ends
        (``StopAsyncIteration``) once the agent is terminated: at once through the service,
        within a second behind its back.

        Raises:
            ActivityAgentNotFoundError: No agent of this service has that id.
        """
        entry = self._entry(agent_id)
        async with self.runtime.subscribe(agent_id, from_seq) as records:
            yield ActivityStream(records, agent_id, lambda: self.owns(agent_id, entry), entry)
