"""The service's machine: activity types as events, their handlers bound at build time.

Theory of operation: every agent of a service runs one engine ``Machine`` with a single
state, ``"active"``, and one event per registered activity type. Each event's slot has a
handler, bound when the machine is built (never looked up by name per message), that:

1. notes the engine status and its stamp for the status times (see ``_service``);
2. computes ``(state, results)`` from the type: STATE_CHANGE takes the payload, COMMAND
   calls the command handler named in the payload, a custom type calls its own handler
   (both return an ``Outcome`` or None);
3. passes that state through the agent's workflow ``(state, activity) -> new_state``, if it
   has one, so a workflow sees every activity after its type has been applied;
4. only then stores the new state as the agent's data and emits the results as the step's
   outputs. Anything raised on the way is re-raised as a ``ProcessingError`` (cause kept):
   the engine fails the message, the data was never touched, the agent shows ERROR.

Registering a custom type builds the next version of the machine; agents already running
are moved onto it by ``rt.upgrade`` (mail and timers carry over).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ... import AgentStatus, Machine, Step
from ._errors import InvalidActivityError, ProcessingError, brief
from ._values import KEEP, Activity, Outcome

if TYPE_CHECKING:
    from ._service import ActivityService

STATE = "active"
Handler = Callable[[Any, Activity], "Outcome | None"]
"""A command handler or a custom type's handler: ``(state, activity) -> Outcome | None``."""
Kind = Callable[[Any, Activity], tuple[Any, tuple[Any, ...]]]
"""What a type does: ``(state, activity) -> (new_state, results)``."""

_ERROR = AgentStatus.ERROR
_IDLE = AgentStatus.IDLE
_PROCESSING = AgentStatus.PROCESSING


def outcome(value: Any, state: Any) -> tuple[Any, tuple[Any, ...]]:
    """A handler's return value as ``(new_state, results)``."""
    if value is None:
        return state, ()
    if type(value) is not Outcome:
        raise TypeError(f"a handler must return an Outcome or None, got {brief(value)}")
    return (state if value.state is KEEP else value.state), value.results


def state_change(state: Any, activity: Activity) -> tuple[Any, tuple[Any, ...]]:
    """STATE_CHANGE: the payload becomes the new state."""
    return activity.payload, ()


def command_name(payload: Any) -> str:
    """The command a COMMAND payload names (checked at ``send``)."""
    if not isinstance(payload, Mapping):
        raise InvalidActivityError(
            f'a COMMAND payload must be a mapping with a "command" key, got {brief(payload)}'
        )
    name = payload.get("command")
    if not isinstance(name, str):
        raise InvalidActivityError(
            f'a COMMAND payload\'s "command" must be a str, got {brief(name)}'
        )
    return name


def command(commands: dict[str, Handler]) -> Kind:
    """COMMAND: dispatch to the handler the payload names."""

    def run(state: Any, activity: Activity) -> tuple[Any, tuple[Any, ...]]:
        return outcome(commands[command_name(activity.payload)](state, activity), state)

    return run


def custom(handler: Handler) -> Kind:
    """A custom type: its own handler."""

    def run(state: Any, activity: Activity) -> tuple[Any, tuple[Any, ...]]:
        return outcome(handler(state, activity), state)

    return run


def build(name: str, version: int, kinds: Mapping[str, Kind], service: ActivityService) -> Machine:
    """The machine of ``kinds`` (type name -> what it does), with a handler per type."""
    machine = Machine(
        name,
        [STATE],
        STATE,
        [(STATE, event, None) for event in kinds],
        version=version,
    )
    for event, kind in kinds.items():
        machine.handler(STATE, event)(_step(kind, service))
    return machine


def _step(kind: Kind, service: ActivityService) -> Callable[[Any, Any], Step | None]:
    rt = service.runtime
    status_since = rt.status_since
    agents = service.entries

    def step(agent: Any, event: Any) -> Step | None:
        activity = event.payload
        agent_id = agent.agent_id
        if type(activity) is not Activity:  # sent past the service, straight to the engine
            raise InvalidActivityError(
                f"agent {brief(agent_id)} got {brief(activity)} as {event.name!r}: "
                "activities go through the service"
            )
        entry = agents.get(agent_id)
        workflow = None
        if entry is not None:
            workflow = entry.workflow
            ref = entry.ref
            if not ref.alive:  # moved onto a new machine version by an upgrade
                ref = entry.ref = rt.ref(agent_id)
            now = ref.status  # during a step the stamp is when this status began
            if now is _ERROR:
                entry.error = status_since(agent_id)
            elif now is _PROCESSING or now is _IDLE:  # IDLE: this is its last message
                entry.processing = status_since(agent_id)
        state = agent.data
        try:
            new, results = kind(state, activity)
            if workflow is not None:
                new = workflow(new, activity)
        except Exception as err:
            raise ProcessingError(agent_id, activity, err) from err
        agent.data = new
        return Step(outputs=results) if results else None

    return step
