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
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, final

import trio

from ... import AgentNotFoundError, AgentStatus, HandlerError, Runtime, Supervision
from . import _machine
from ._agent import ActivityAgent, Entry, Workflow, as_activity, check_callable, hashable, unwrap
from ._errors import (
    ActivityAgentExistsError,
    ActivityAgentNotFoundError,
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
        if self.entries:
            self.runtime.upgrade(old, new)  # refused in a run: nothing changed yet
        self._kinds, self.machine = kinds, new

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
        self._entry(agent_id)
        try:
            return self.runtime.terminate(agent_id)
        except AgentNotFoundError:
            raise ActivityAgentNotFoundError(agent_id) from None
        finally:
            del self.entries[agent_id]

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
        if not entry.ref.alive:  # terminated or replaced behind the service's back, or moved
            rt = self.runtime  # (by an upgrade or a hibernation): found again, or forgotten
            if agent_id in rt and rt.machine(agent_id) is self.machine:
                entry.ref = rt.ref(agent_id)
            else:
                del self.entries[agent_id]
                raise ActivityAgentNotFoundError(agent_id)
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
        (nothing queued), except that a full mailbox is waited for."""
        _, checked = self._check(agent_id, activity)
        await self.runtime.send(agent_id, checked.type, checked, checked.priority)

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
            trio.TooSlowError: Not processed within ``timeout`` seconds.
            engine.AgentStoppedError: The agent was terminated first.
            And what ``send_nowait`` raises (nothing queued).
        """
        timeout = finite("timeout", timeout)
        _, checked = self._check(agent_id, activity)
        try:
            results = await self.runtime.request(
                agent_id, checked.type, checked, priority=checked.priority, timeout=timeout
            )
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
        takes one from the mailbox); ``from_seq`` resumes from a cursor.

        Raises:
            ActivityAgentNotFoundError: No agent of this service has that id.
        """
        self._entry(agent_id)
        async with self.runtime.subscribe(agent_id, from_seq) as records:
            yield ActivityStream(records, agent_id)
