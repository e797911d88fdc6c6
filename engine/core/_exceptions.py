"""The one exception tree of the engine: everything it raises on purpose is an ``EngineError``.

Mailbox flow control reuses trio's exceptions: ``MailboxFullError`` *is* a ``trio.WouldBlock``,
so code written against trio's channels handles it unchanged.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from typing import Any

import trio

_brief = reprlib.Repr()
_brief.maxstring = 60
_brief.maxlong = 40
_brief.maxother = 60


def brief(value: object) -> str:
    """A repr of ``value`` short enough for an error message (hostile input can be huge:
    an int of more than 4 300 digits cannot even be turned into a string)."""
    try:
        return _brief.repr(value)
    except Exception:  # a repr that raises, or Python's int-to-string limit
        if isinstance(value, int):
            return f"<int of {value.bit_length()} bits>"
        return f"<{type(value).__name__} object>"


def _text(error: BaseException) -> str:
    """``str(error)``, at most 200 characters, even if its ``__str__`` raises."""
    try:
        text = str(error)
    except Exception:
        return f"<{type(error).__name__} whose str() raised>"
    return text if len(text) <= 200 else text[:197] + "..."


def _count(problems: tuple[str, ...]) -> str:
    return "1 problem" if len(problems) == 1 else f"{len(problems)} problems"


class EngineError(Exception):
    """Raised for every error the engine reports on purpose: the base of the tree.

    Every one pickles and unpickles as itself, with its message and attributes (whatever
    its constructor takes), so errors cross process boundaries: Ray shards, worker pools.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[EngineError], args: tuple[Any, ...], state: dict[str, Any]) -> EngineError:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class AgentNotFoundError(EngineError, KeyError):
    """Raised when an agent id (or an ``AgentRef``) names no live agent."""

    def __init__(self, agent_id: object) -> None:
        super().__init__(agent_id)
        self.agent_id = agent_id

    def __str__(self) -> str:
        return f"no agent with id {brief(self.agent_id)}"


class AgentExistsError(EngineError):
    """Raised when ``spawn`` is given an id that a live agent already has."""

    def __init__(self, agent_id: object) -> None:
        super().__init__(f"an agent with id {brief(agent_id)} already exists")
        self.agent_id = agent_id


class AgentStoppedError(EngineError):
    """Raised when an operation targets an agent that was terminated or stopped."""

    def __init__(self, agent_id: object, detail: str = "was terminated") -> None:
        super().__init__(f"agent {brief(agent_id)} {detail}")
        self.agent_id = agent_id


class AgentBusyError(EngineError):
    """Raised when an agent cannot do what was asked now: ``hibernate`` of an agent with mail
    queued, postponed events or ``Work`` running."""

    def __init__(self, agent_id: object, detail: str) -> None:
        super().__init__(f"agent {brief(agent_id)} {detail}")
        self.agent_id = agent_id


class UnknownEventError(EngineError, KeyError):
    """Raised when an event name (or code) is not an event of the agent's machine."""

    def __init__(self, machine: str, event: object) -> None:
        super().__init__(machine, event)
        self.machine = machine
        self.event = event

    def __str__(self) -> str:
        return f"machine {self.machine!r} has no event {brief(self.event)}"


class InvalidTransitionError(EngineError):
    """Raised when a (state, event) pair has no transition; the state is left unchanged."""

    def __init__(self, machine: str, state: str, event: str, detail: str = "") -> None:
        msg = f"machine {machine!r}: no transition for event {brief(event)} in state {brief(state)}"
        super().__init__(f"{msg}: {detail}" if detail else msg)
        self.machine = machine
        self.state = state
        self.event = event


class MachineDefinitionError(EngineError):
    """Raised when a machine definition is invalid; ``problems`` lists every fault found."""

    def __init__(self, name: str, problems: Sequence[str]) -> None:
        self.name = name
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"machine {name!r} is invalid ({_count(self.problems)}):\n{lines}")


class HandlerError(EngineError):
    """Raised (and recorded as a dead letter's error) when a handler raises or misbehaves.

    The original exception is ``__cause__``.
    """

    def __init__(self, agent_id: object, state: str, event: str, cause: BaseException) -> None:
        super().__init__(
            f"handler for agent {brief(agent_id)} in state {brief(state)} on event "
            f"{brief(event)} failed: {type(cause).__name__}: {_text(cause)}"
        )
        self.agent_id = agent_id
        self.state = state
        self.event = event
        self.__cause__ = cause


class MailboxFullError(EngineError, trio.WouldBlock):
    """Raised by ``send_nowait`` when a bounded mailbox with the REJECT policy is full.

    It is a ``trio.WouldBlock``, so trio-style code can catch that instead.
    """

    def __init__(self, agent_id: object, capacity: int) -> None:
        super().__init__(f"mailbox of agent {brief(agent_id)} is full ({capacity} messages)")
        self.agent_id = agent_id
        self.capacity = capacity


class TenantNotFoundError(EngineError, KeyError):
    """Raised when a tenant name is not a tenant of the runtime."""

    def __init__(self, tenant: object) -> None:
        super().__init__(tenant)
        self.tenant = tenant

    def __str__(self) -> str:
        return f"no tenant named {brief(self.tenant)}"


class TenantExistsError(EngineError):
    """Raised by ``add_tenant`` when the name is taken."""

    def __init__(self, tenant: object) -> None:
        super().__init__(f"a tenant named {brief(tenant)} already exists")
        self.tenant = tenant


class TenantBusyError(EngineError):
    """Raised by ``remove_tenant`` while the tenant still has agents (pass
    ``terminate=True`` to terminate them), and for the default tenant, which stays."""

    def __init__(self, tenant: object, detail: str) -> None:
        super().__init__(f"tenant {brief(tenant)} {detail}")
        self.tenant = tenant


class TenantLimitError(EngineError, trio.WouldBlock):
    """Raised when a call would take a tenant past one of its limits: a spawn past
    ``max_agents`` or ``max_memory``, a send past ``max_queued``. ``limit`` names the limit,
    ``value`` is its setting. Nothing was done: no agent created, no message queued.

    It is a ``trio.WouldBlock`` like ``MailboxFullError``: ``await send`` waits for room when
    the tenant's overflow policy is ``"wait"``.
    """

    def __init__(
        self, tenant: object, limit: str, value: float, detail: str = "", wait: bool = False
    ) -> None:
        text = f"tenant {brief(tenant)} is at its {limit} limit ({value:g})"
        super().__init__(f"{text}: {detail}" if detail else text)
        self.tenant = tenant
        self.limit = limit
        self.value = value
        self.wait = wait
        """The tenant's overflow policy is ``"wait"``: ``await send`` waits for room."""


class TurnDeadlineError(EngineError):
    """Raised (as the cause of a ``HandlerError``, or into a ``Work`` task's failure event)
    when a handler step or a ``Work`` task took longer than its tenant's ``turn_deadline``
    and the tenant's policy fails the message."""

    def __init__(self, agent_id: object, seconds: float, deadline: float) -> None:
        super().__init__(
            f"agent {brief(agent_id)} took {seconds:.6f} s, past its turn deadline of "
            f"{deadline:g} s"
        )
        self.agent_id = agent_id
        self.seconds = seconds
        self.deadline = deadline


class UnknownStateError(EngineError, KeyError):
    """Raised when a state name is not a state of the machine."""

    def __init__(self, machine: str, state: object) -> None:
        super().__init__(machine, state)
        self.machine = machine
        self.state = state

    def __str__(self) -> str:
        return f"machine {self.machine!r} has no state {brief(self.state)}"


class InvalidArgumentError(EngineError, ValueError):
    """Raised when an argument has a bad value or type: an unhashable agent id, a priority
    outside 0..3, a negative capacity, arrays of different lengths."""


class RuntimeNotRunningError(EngineError):
    """Raised when an operation needs the runtime to run under ``open_runtime`` (async
    sends, requests, subscriptions, ``Work`` actions, interrupts, portals) and it does not."""


class RuntimeBusyError(EngineError):
    """Raised when an operation that needs a quiescent dispatcher is called from inside a run."""


class ConfigError(EngineError):
    """Raised when a configuration (an app file, a plugin's config table) is invalid;
    ``problems`` lists every fault found, each with its path."""

    def __init__(self, where: str, problems: Sequence[str]) -> None:
        self.where = where
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{where} is invalid ({_count(self.problems)}):\n{lines}")


class StoreError(EngineError):
    """Raised when a store cannot do what was asked of it: its database cannot be reached (a
    bad DSN, a server that is down or refuses the login, a lost connection) or fails the
    operation; names the store, and the driver's exception is ``__cause__``."""

    def __init__(self, store: str, cause: BaseException) -> None:
        super().__init__(f"{store}: {type(cause).__name__}: {_text(cause).rstrip()}")
        self.store = store
        self.__cause__ = cause


class RecordingNotFoundError(EngineError, KeyError):
    """Raised when a store holds no recording of that name (``engine.store.load_recording``)."""

    def __init__(self, name: object) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"no recording named {brief(self.name)} in the store"


class PluginLoadError(EngineError):
    """Raised when a plugin's entry point cannot be imported or its factory fails; names the
    plugin, and the cause is ``__cause__``."""

    def __init__(self, name: str, cause: BaseException) -> None:
        super().__init__(f"plugin {name!r} failed to load: {type(cause).__name__}: {_text(cause)}")
        self.name = name
        self.__cause__ = cause


class PluginValidationError(EngineError):
    """Raised when a plugin does not satisfy the contract of its role; names the plugin."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"plugin {name!r} is invalid: {problem}")
        self.name = name
        self.problem = problem


class PluginFailedError(EngineError):
    """Raised out of ``open_runtime`` when a receptor fails and its policy says stop (or it
    failed too often); names the plugin, and the cause is ``__cause__``."""

    def __init__(self, name: str, cause: BaseException, detail: str = "") -> None:
        msg = f"plugin {name!r} failed: {type(cause).__name__}: {_text(cause)}"
        super().__init__(f"{msg} ({detail})" if detail else msg)
        self.name = name
        self.__cause__ = cause
