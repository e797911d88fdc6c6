"""Agent packages: versioned machines registered per name, deployed per organization.

Theory of operation: a package version is an ``engine.Machine`` (its name is the package's,
its ``version`` the version). ``rt.upgrade(old, new)`` moves every agent of the machine object
``old``, whatever its tenant, and ``rt.rollback_upgrade()`` undoes the runtime's last upgrade,
whoever made it. So that each organization deploys on its own, it runs its own copy of each
version it deploys, named ``"<organization>/<package>"`` (organization names have no ``/``,
so the name is unambiguous): the copy has the template's states, events, table and bound
handlers, rebuilt from the machine's public tables, and is made once per organization and
version (a rollback returns the agents to the very object they left). Deploying is then
``rt.upgrade`` of the organization's copies: its agents in memory move between two steps,
and its hibernated agents move when they wake, along the runtime's chain of upgrades (the
copy's name and version identify it). A rollback is always an upgrade back to the previous
version with the inverse state mapping (the same default ``rollback_upgrade`` uses), never
``rt.rollback_upgrade()``: the runtime's stack of upgrades is shared by every organization
and any other user of the runtime, so its last entry may be anyone's. Each deployment and
each rollback stays on that stack (``rt.upgrades`` only grows), and so do the machine copies
it names, also once the organization is destroyed: the engine has no public way to drop an
upgrade from the middle of its stack.

A version may come with a starting-memory factory (``register_package(data=)``): what an
agent added without data, and an agent whose memory expired, starts with on that version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, final

import numpy as np

from ... import InvalidArgumentError, Machine, UpgradeError
from ._errors import PackageExistsError, PackageNotFoundError, brief
from ._values import Deployment

if TYPE_CHECKING:
    from ._manager import Organizations
    from ._records import Org


@final
class Packages:
    """The registered package versions: name -> version -> template machine, and the
    versions' starting-memory factories."""

    def __init__(self) -> None:
        self._by_name: dict[str, dict[int, Machine]] = {}
        self._data: dict[tuple[str, int], Callable[[], Any]] = {}

    def register(self, machine: Machine, data: Callable[[], Any] | None = None) -> None:
        if not isinstance(machine, Machine):
            raise InvalidArgumentError(f"a package is an engine.Machine, got {brief(machine)}")
        if data is not None and not callable(data):
            raise InvalidArgumentError(
                f"data must be a callable making an agent's starting memory, got {brief(data)}"
            )
        versions = self._by_name.get(machine.name, {})
        if machine.version in versions:
            raise PackageExistsError(machine.name, machine.version)
        self._by_name.setdefault(machine.name, versions)[machine.version] = machine
        if data is not None:
            self._data[(machine.name, machine.version)] = data

    def starting_memory(self, name: str, version: int) -> Any:
        """A new starting memory of ``name`` at ``version`` (None without a factory)."""
        factory = self._data.get((name, version))
        return None if factory is None else factory()

    def get(self, name: Any, version: Any = None) -> Machine:
        """The template of ``name`` at ``version`` (None: the highest registered)."""
        if version is not None and (type(version) is not int or version < 1):
            raise InvalidArgumentError(f"a version is an int >= 1, got {brief(version)}")
        try:
            versions = self._by_name[name]
        except (KeyError, TypeError):
            raise PackageNotFoundError(name) from None
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise PackageNotFoundError(name, version)
        return versions[version]

    def versions(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(sorted(v)) for name, v in self._by_name.items()}


def copy_machine(template: Machine, name: str) -> Machine:
    """A machine named ``name`` that behaves as ``template``: every cell of its table as an
    explicit row, every bound handler on the cells it serves (handlers bound to the template
    after the copy is made are not seen)."""
    states, events = template.states, template.events
    width = len(events)
    rows = []
    for cell in np.flatnonzero(template.next_table >= 0).tolist():
        s, e = divmod(cell, width)
        out = int(template.output_table[cell])
        dest = states[int(template.next_table[cell])]
        rows.append((states[s], events[e], dest, template.outputs[out] if out >= 0 else None))
    copy = Machine(
        name, states, template.initial, rows,
        events=events, unhandled=template.unhandled, version=template.version,
    )  # fmt: skip
    handlers = template.handlers
    for cell in np.flatnonzero(template.handler_table >= 0).tolist():
        s, e = divmod(cell, width)
        copy.handler(states[s], events[e])(handlers[int(template.handler_table[cell])])
    return copy


def check_upgrade_arguments(states: Any, migrate: Any, check: Any, canary: Any) -> None:
    """Typed errors for arguments of the wrong kind, before anything changes."""
    if states is not None and not (
        isinstance(states, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in states.items())
    ):
        raise InvalidArgumentError(f"states must be a mapping of str to str, got {brief(states)}")
    for label, value in (("migrate", migrate), ("check", check)):
        if value is not None and not callable(value):
            raise InvalidArgumentError(f"{label} must be callable or None, got {brief(value)}")
    if canary is not None and (type(canary) is not int or canary < 1):
        raise InvalidArgumentError(f"canary must be an int >= 1 or None, got {brief(canary)}")


def deploy(
    mgr: Organizations,
    org: Org,
    package: Any,
    version: Any,
    states: Mapping[str, str] | None,
    migrate: Callable[[str, Any], Any] | None,
    check: Callable[..., object] | None,
    canary: int | None,
) -> Deployment:
    """See ``Organizations.deploy``."""
    check_upgrade_arguments(states, migrate, check, canary)
    template = mgr._registry.get(package, version)
    stack = org.deployed.get(template.name)
    new = org.machines.get((template.name, template.version))
    if new is None:
        new = copy_machine(template, f"{org.name}/{template.name}")
    if not stack:
        if states is not None or migrate is not None or check is not None or canary is not None:
            raise InvalidArgumentError(
                "installing a package moves no agents: states, migrate, check and canary are "
                "for upgrades"
            )
        org.machines[(template.name, new.version)] = new
        org.deployed[template.name] = [(new, {})]
        return Deployment(org.name, template.name, new.version, None, 0, 0, 0, {})
    old = stack[-1][0]
    if old.version == new.version:
        raise UpgradeError(
            f"package {template.name!r} version {new.version} is deployed in organization "
            f"{org.name!r} already"
        )
    rt = mgr.runtime
    report = rt.upgrade(old, new, states=states, migrate=migrate, check=check, canary=canary)
    org.machines[(template.name, new.version)] = new
    stack.append((new, dict(report.states)))
    return Deployment(
        org.name, template.name, new.version, old.version, report.agents,
        report.dead_letters, report.timers_dropped, dict(report.states),
    )  # fmt: skip


def rollback(
    mgr: Organizations,
    org: Org,
    package: Any,
    states: Mapping[str, str] | None,
    migrate: Callable[[str, Any], Any] | None,
) -> Deployment:
    """See ``Organizations.rollback``."""
    check_upgrade_arguments(states, migrate, None, None)
    try:
        stack = org.deployed[package]
    except (KeyError, TypeError):
        raise PackageNotFoundError(package, None, org.name) from None
    if len(stack) < 2:
        raise UpgradeError(
            f"package {brief(package)} of organization {org.name!r}: no deployment to roll back"
        )
    (previous, _), (current, mapping) = stack[-2:]
    if states is None:  # the inverse of the deployment's mapping, as rollback_upgrade's
        inverse: dict[str, str] = {}
        for source, target in mapping.items():
            inverse.setdefault(target, source)
        states = {
            t: inverse.get(t, t) for t in current.states if inverse.get(t, t) in previous.states
        }
    report = mgr.runtime.upgrade(current, previous, states=states, migrate=migrate)
    stack.pop()
    return Deployment(
        org.name, package, previous.version, current.version, report.agents,
        report.dead_letters, report.timers_dropped, dict(report.states), undo=True,
    )  # fmt: skip
