"""What the layer keeps per organization and per agent: names, packages and counters (the
agents themselves, their memory and mail are the engine's)."""

from __future__ import annotations

from typing import Any

import attrs

from ... import AgentNotFoundError, InvalidArgumentError, Machine
from ._errors import brief
from ._line import Line
from ._values import ResourceLimits


def check_name(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 200 or "/" in value:
        raise InvalidArgumentError(f"{kind} name must be a str of 1..200 characters without '/'")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"{kind} name must be valid UTF-8: {brief(value)}") from None
    return value


@attrs.define(eq=False, slots=True)
class Agent:
    """An agent of an organization: its package and whether its memory is stored (its
    memory itself is the engine's: the layer keeps no copy of it)."""

    package: str
    long_running: bool


@attrs.define(eq=False)
class Org:
    """An organization: its limits, its packages' machine copies and the versions deployed
    (each with the state mapping that led to it), its agents, its line and counters."""

    name: str
    limits: ResourceLimits
    created_at: float
    machines: dict[tuple[str, int], Machine] = attrs.Factory(dict)
    deployed: dict[str, list[tuple[Machine, dict[str, str]]]] = attrs.Factory(dict)
    agents: dict[str, Agent] = attrs.Factory(dict)
    line: Line = attrs.field(
        init=False,
        default=attrs.Factory(lambda self: Line(self.limits.max_queue_size), takes_self=True),
    )
    retrying: int = 0
    """Executions refused by the engine although the layer counted room (its queue was
    filled around the layer), waiting to try again."""
    executions: int = 0
    failures: int = 0
    queued: int = 0
    total_time: float = 0.0

    def agent(self, agent: Any) -> Agent:
        try:
            return self.agents[agent]
        except (KeyError, TypeError):
            raise AgentNotFoundError(agent) from None
