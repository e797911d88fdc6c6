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
copy's name and version identify it). A rollback is ``rt.rollback_upgrade()`` when the
organization's deployment is the runtime's last upgrade, and otherwise an upgrade back to the
previous version with the inverse state mapping (the same default ``rollback_upgrade`` uses).
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
    """The registered package versions: name -> version -> template machine."""

    def __init__(self) -> None:
        self._by_name: dict[str, dict[int, Machine]] = {}

    def register(self, machine: Machine) -> None:
        if not isinstance(machine, Machine):
            raise InvalidArgumentError(f"a package is an engine.Machine, got {brief(machine)}")
        versions = self._by_name.setdefault(machine.name, {})
        if machine.version in versions:
            raise PackageExistsError(machine.name, machine.version)
        versions[machine.version] = machine

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
    mgr._last_upgrade = (org.name, template.name, rt.upgrades)
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
    try:
        stack = org.deployed[package]
    except (KeyError, TypeError):
        raise PackageNotFoundError(package, None, org.name) from None
    if len(stack) < 2:
        raise UpgradeError(
            f"package {brief(package)} of organization {org.name!r}: no deployment to roll back"
        )
    (previous, _), (current, mapping) = stack[-2:]
    rt = mgr.runtime
    if mgr._last_upgrade == (org.name, package, rt.upgrades):  # the runtime's last upgrade
        report = rt.rollback_upgrade(states=states, migrate=migrate)
    else:
        if states is None:  # the inverse of the deployment's mapping, as rollback_upgrade's
            inverse: dict[str, str] = {}
            for source, target in mapping.items():
                inverse.setdefault(target, source)
            states = {
                t: inverse.get(t, t) for t in current.states if inverse.get(t, t) in previous.states
            }
        report = rt.upgrade(current, previous, states=states, migrate=migrate)
    stack.pop()
    mgr._last_upgrade = None
    return Deployment(
        org.name, package, previous.version, current.version, report.agents,
        report.dead_letters, report.timers_dropped, dict(report.states), undo=True,
    )  # fmt: skip
