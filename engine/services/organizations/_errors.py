"""The organization layer's errors, each a subclass in the engine's exception tree.

An organization is a tenant, so its not-found, exists and limit errors are the tenant errors
(code that catches ``TenantNotFoundError`` or ``TenantLimitError`` catches them too); package
errors and a failed execution are new ``EngineError`` subclasses.
"""

from __future__ import annotations

import reprlib
from typing import Any

from ... import (
    EngineError,
    TenantExistsError,
    TenantLimitError,
    TenantNotFoundError,
)

_brief = reprlib.Repr()
_brief.maxstring = 60
_brief.maxother = 60


def brief(value: object) -> str:
    """A repr of ``value`` short enough for a message (hostile input can be huge)."""
    try:
        return _brief.repr(value)
    except Exception:  # a repr that raises, or Python's int-to-string limit
        return f"<{type(value).__name__} object>"


class OrganizationNotFoundError(TenantNotFoundError):
    """Raised when a name is not an organization of the manager (never created, or
    destroyed)."""

    @property
    def organization(self) -> object:
        return self.tenant

    def __str__(self) -> str:
        return f"no organization named {brief(self.tenant)}"


class OrganizationExistsError(TenantExistsError):
    """Raised by ``create`` when the name is taken (by an organization or another tenant)."""

    def __init__(self, organization: object) -> None:
        super().__init__(organization)
        self.args = (f"an organization named {brief(organization)} already exists",)
        self.organization = organization


class PackageNotFoundError(EngineError, KeyError):
    """Raised when a package (or one version of it) is not registered, or is not deployed in
    the organization named."""

    def __init__(
        self, package: object, version: int | None = None, organization: str | None = None
    ) -> None:
        super().__init__(package, version, organization)
        self.package = package
        self.version = version
        self.organization = organization

    def __str__(self) -> str:
        what = f"package {brief(self.package)}"
        if self.version is not None:
            what += f" version {self.version}"
        if self.organization is not None:
            return f"{what} is not deployed in organization {brief(self.organization)}"
        return f"{what} is not registered"


class PackageExistsError(EngineError):
    """Raised by ``register_package`` when that name and version are registered already."""

    def __init__(self, package: str, version: int) -> None:
        super().__init__(f"package {brief(package)} version {version} is registered already")
        self.package = package
        self.version = version


class OrganizationLimitError(TenantLimitError):
    """Raised when an organization whose overflow policy is ``"refuse"`` is at one of its
    limits: nothing was queued or created. The engine's ``TenantLimitError`` is the cause."""

    def __init__(self, organization: str, cause: TenantLimitError) -> None:
        super().__init__(organization, cause.limit, cause.value, wait=False)
        self.args = (
            f"organization {brief(organization)} is at its {cause.limit} limit "
            f"({cause.value:g}): refused",
        )
        self.organization = organization
        self.__cause__ = cause


class ExecutionFailedError(EngineError):
    """Raised by ``execute_agent`` when a stage of the execution failed: ``"line"`` (its
    ``timeout`` passed while it waited for room: nothing was sent), ``"restore"`` (the
    agent's memory could not be read back, or an expired agent could not start again) or
    ``"execute"`` (the handler failed, the agent was stopped, the answer timed out). The
    error is ``__cause__``. A failed store does not fail the execution: its result says
    ``stored=False`` with the ``store_error``."""

    def __init__(self, organization: str, agent: Any, stage: str, cause: BaseException) -> None:
        try:
            text = str(cause)
        except Exception:
            text = "<str() raised>"
        text = text if len(text) <= 200 else text[:197] + "..."
        super().__init__(
            f"execution of agent {brief(agent)} of organization {brief(organization)} failed "
            f"at {stage}: {type(cause).__name__}: {text}"
        )
        self.organization = organization
        self.agent = agent
        self.stage = stage
        self.__cause__ = cause
