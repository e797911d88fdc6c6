"""``Organizations``: organization runtimes as tenants of one engine runtime.

Theory of operation: the manager holds what the engine does not know: which tenants are
organizations (with the limits they were given in the old design's terms), which packages are
registered and which version each organization runs (its machine copies, ``_packages``), its
agents' names with their package, and the executions' line and counters (``_execute``).
Everything else is the engine's: the agents, their memory (their data, hibernated into the
runtime's store between executions and expired by ``expire_after``), the limits, the
scheduling and the metrics. An agent of organization ``o`` named ``a`` is the engine agent
``(o, a)`` in tenant ``o``. The manager knows the runtime's store (and codec, and whether
the engine's commit log writes it) when ``open_organizations`` made it, or when told: then it
reads hibernated agents' memory without waking them and removes removed agents' records.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any, final

import numpy as np

from ... import (
    AgentNotFoundError,
    InvalidArgumentError,
    Machine,
    Priority,
    Runtime,
)
from ...store import Codec, Store
from . import _agents, _execute, _metrics, _packages
from ._errors import (
    OrganizationExistsError,
    OrganizationNotFoundError,
    PackageNotFoundError,
    brief,
)
from ._records import Org, check_name
from ._values import (
    Deployment,
    ExecutionResult,
    Organization,
    OrganizationMetrics,
    ResourceLimits,
)


@final
class Organizations:
    """Organization runtimes on one engine runtime: one tenant per organization.

    Args:
        rt: The runtime, with a store to keep agents' memory in (``open_organizations``
            opens one); ``execute_agent`` needs it to run under ``engine.open_runtime``.
        store: That store (the runtime does not say which it is): with it, ``memory``
            reads a hibernated agent without waking it, and removed agents' records are
            removed from it. Without it, ``memory`` wakes and re-hibernates (restarting the
            agent's expiry) and removed agents' records stay in the store.
        codec: The runtime's codec (``open_runtime(codec=)``), to find its records.
        log: The runtime writes the store through its commit log (``durability="log"``):
            records are then read and removed through the engine only (its tombstones).

    Raises:
        InvalidArgumentError: The runtime has no store to hibernate into, or a bad
            ``store``, ``codec`` or ``log``.
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        store: Store | None = None,
        codec: Codec | None = None,
        log: bool = False,
    ) -> None:
        if not isinstance(rt, Runtime):
            raise InvalidArgumentError(f"Organizations takes an engine.Runtime: {brief(rt)}")
        if store is not None and not isinstance(store, Store):
            raise InvalidArgumentError(f"store must be an engine.store.Store: {brief(store)}")
        if codec is not None and not isinstance(codec, Codec):
            raise InvalidArgumentError(f"codec must be an engine.store.Codec: {brief(codec)}")
        if type(log) is not bool:
            raise InvalidArgumentError(f"log must be a bool, got {brief(log)}")
        with contextlib.suppress(AgentNotFoundError):  # a probe: without a store, it is
            rt.hibernate(object())  # InvalidArgumentError; with one, no agent has that id
        self.runtime = rt
        self._store = store
        self._codec = codec
        self._log = log
        self._registry = _packages.Packages()
        self._orgs: dict[str, Org] = {}

    # -- organizations ---------------------------------------------------------------

    def create(self, name: str, limits: ResourceLimits | None = None) -> Organization:
        """Create an organization runtime: a tenant with ``limits``' engine limits and weight.

        Raises:
            OrganizationExistsError: The name is taken (by a tenant of the runtime too).
            InvalidArgumentError: A bad name (not 1..200 characters, a ``/``) or limits.
        """
        check_name("an organization", name)
        limits = ResourceLimits() if limits is None else limits
        if not isinstance(limits, ResourceLimits):
            raise InvalidArgumentError(f"limits must be a ResourceLimits, got {brief(limits)}")
        if name in self._orgs or any(t.name == name for t in self.runtime.tenants()):
            raise OrganizationExistsError(name)
        self.runtime.add_tenant(name, weight=limits.weight, limits=limits.to_limits())
        self._orgs[name] = Org(name, limits, time.time())
        return self.get(name)

    def get(self, name: str) -> Organization:
        """The organization as it is now.

        Raises:
            OrganizationNotFoundError: No such organization.
        """
        org = self._org(name)
        packages = {p: stack[-1][0].version for p, stack in org.deployed.items()}
        return Organization(org.name, org.limits, org.created_at, packages, tuple(org.agents))

    def names(self) -> list[str]:
        """The organizations, in the order they were created."""
        return list(self._orgs)

    def destroy(self, name: str) -> int:
        """Remove an organization: its agents are terminated (hibernated ones too; their
        queued executions fail) and their records removed from the store, its tenant
        removed, and executions waiting in its line fail with ``OrganizationNotFoundError``.
        Returns the messages dead-lettered. Its deployments stay on the runtime's upgrade
        stack (with the machine copies they name): no rollback ever undoes them.

        Raises:
            OrganizationNotFoundError: No such organization.
            RuntimeBusyError: Called from a handler (nothing changes).
        """
        org = self._org(name)
        dead = self.runtime.remove_tenant(name, terminate=True)
        del self._orgs[name]
        org.line.close()
        for agent in org.agents:
            _agents.forget(self, name, agent)
        return dead

    def _org(self, name: Any) -> Org:
        try:
            return self._orgs[name]
        except (KeyError, TypeError):
            raise OrganizationNotFoundError(name) from None

    # -- packages ----------------------------------------------------------------------

    def register_package(self, machine: Machine, *, data: Callable[[], Any] | None = None) -> None:
        """Register a package version: ``machine.name`` is the package, ``machine.version``
        the version. Bind its handlers before deploying it (each organization runs a copy).
        ``data`` makes an agent's starting memory on this version: an agent added without
        data starts with it, and so does an agent whose memory expired (None without it).

        Raises:
            PackageExistsError: That name and version are registered.
            InvalidArgumentError: Not an ``engine.Machine``, or ``data`` not callable.
        """
        self._registry.register(machine, data)

    def packages(self) -> dict[str, tuple[int, ...]]:
        """The registered packages and their versions, lowest first."""
        return self._registry.versions()

    def deploy(
        self,
        name: str,
        package: str,
        version: int | None = None,
        *,
        states: Mapping[str, str] | None = None,
        migrate: Callable[[str, Any], Any] | None = None,
        check: Callable[..., object] | None = None,
        canary: int | None = None,
    ) -> Deployment:
        """Deploy ``version`` of a package (None: the highest registered) in an organization:
        the first time it installs it; after that it is ``rt.upgrade`` of the organization's
        agents of the package (``states``, ``migrate``, ``check``, ``canary`` as there),
        between two steps; no other organization's agents move.

        Raises:
            OrganizationNotFoundError, PackageNotFoundError: No such organization, package
                or version.
            UpgradeError: Refused (nothing changed), or its check failed (all put back).
            RuntimeBusyError: Called from a handler.
        """
        org = self._org(name)
        return _packages.deploy(self, org, package, version, states, migrate, check, canary)

    def rollback(
        self,
        name: str,
        package: str,
        *,
        states: Mapping[str, str] | None = None,
        migrate: Callable[[str, Any], Any] | None = None,
    ) -> Deployment:
        """Put the organization's agents of ``package`` back on the version deployed before
        the current one (the inverse state mapping unless ``states``; ``migrate`` converts
        their data back).

        Raises:
            OrganizationNotFoundError, PackageNotFoundError: Not deployed there.
            UpgradeError: Nothing to roll back, or the roll back is refused.
        """
        return _packages.rollback(self, self._org(name), package, states, migrate)

    def machine(self, name: str, package: str) -> Machine:
        """The organization's machine of a package now (for ``rt.supervise``, diagrams)."""
        org = self._org(name)
        try:
            return org.deployed[package][-1][0]
        except (KeyError, TypeError):
            raise PackageNotFoundError(package, None, name) from None

    # -- agents and memory -------------------------------------------------------------

    def add_agent(
        self, name: str, agent: str, package: str, *, data: Any = None, long_running: bool = True
    ) -> None:
        """Add an agent running the organization's deployed version of ``package``, with
        ``data`` as its memory (None: the version's starting memory, ``register_package(
        data=)``). ``data`` is handed to the engine as ``rt.spawn`` takes it (not copied; the
        layer keeps no reference). A long-running agent's memory is written to the store
        after each execution and read back by the next (until it expires; then it starts
        again from the deployed version's starting memory).

        Raises:
            OrganizationNotFoundError, PackageNotFoundError: Not deployed there.
            AgentExistsError: The organization has an agent of that name.
            OrganizationLimitError: At ``max_concurrent_agents`` or ``max_memory_mb`` with no
                agent to hibernate (and nothing was added).
            InvalidArgumentError: A bad name or ``long_running``.
        """
        org = self._org(name)
        machine = self.machine(name, package)
        _agents.add(self, org, agent, package, data, long_running, machine)

    def remove_agent(self, name: str, agent: str) -> int:
        """Terminate an agent (its queued executions fail, and executions of it waiting in
        the line fail with ``AgentNotFoundError``), remove its records from the store and
        forget it; returns the messages dead-lettered."""
        return _agents.remove(self, self._org(name), agent)

    def memory(self, name: str, agent: str) -> Any:
        """The agent's memory (its data), or None once it expired. A resident agent's is its
        data object itself (treat it as read-only). A hibernated agent's is decoded from its
        record in the store, a copy, without waking it: its expiry does not move. Two cases
        wake it and store it again, which restarts its expiry: its record is of an older
        version than the one deployed (waking runs the migrations), or the manager does not
        know the store or the engine's commit log writes it (see ``Organizations``).

        Raises:
            OrganizationNotFoundError, AgentNotFoundError: No such organization or agent.
        """
        return _agents.memory(self, self._org(name), agent)

    def store_memory(self, name: str, agent: str) -> None:
        """Write an idle agent's memory to the store now (``rt.hibernate``).

        Raises:
            AgentBusyError: It has executions queued.
        """
        _agents.store(self, self._org(name), agent)

    # -- execution and metrics ---------------------------------------------------------

    async def execute_agent(
        self,
        name: str,
        agent: str,
        input: Any = None,
        *,
        event: str = "execute",
        timeout: float | None = None,
        priority: int = Priority.NORMAL,
    ) -> ExecutionResult:
        """Run one execution: the organization's runtime, its limits (waiting in its line
        for room, or refused), the agent's memory restored, ``rt.request(agent, event,
        input, priority=, timeout=)``, its memory stored, the metrics counted (see
        ``_execute``). ``priority`` is the mailbox lane (the design's low / normal / high)
        and the order of the line (higher first); ``timeout`` bounds the whole execution,
        its wait in the line included.

        Raises:
            OrganizationNotFoundError, AgentNotFoundError: No such organization or agent
                (also when it was destroyed or removed while the execution waited).
            OrganizationLimitError: At ``max_queue_size`` and the policy is ``"refuse"``, or
                the line is at ``max_waiting``.
            ExecutionFailedError: A stage failed (``"line"``: timed out waiting in it,
                nothing sent); the cause is ``__cause__``.
            UnknownEventError: ``event`` is not an event of the deployed version (nothing
                was woken or sent).
            InvalidArgumentError: A bad event, timeout or priority.
        """
        return await _execute.execute(self, name, agent, input, event, timeout, priority)

    def metrics(self, name: str) -> OrganizationMetrics:
        """The organization's figures now."""
        return _metrics.metrics(self.runtime, self._org(name))

    def history(self, name: str, *, last: int | None = None) -> dict[str, np.ndarray]:
        """The organization's readings in the runtime's metrics history: ``time``, the
        tenant columns (``engine.observe.TENANT_COLUMNS``) and ``waiting`` (its line's length
        at each reading), oldest first; NaN in readings taken before it was created (also
        those of an earlier organization of that name).

        Raises:
            InvalidArgumentError: The runtime keeps no metrics history.
        """
        return _metrics.history(self.runtime, self._org(name), last)
