"""Plugin discovery, loading and validation (the contract is ``engine.environment._spec``).

Three steps, each failing on its own: ``discover()`` reads entry-point metadata and imports
nothing; ``load()`` imports one entry point, wrapping any failure in ``PluginLoadError``
naming it; ``create()`` structures the plugin's config with the engine's converter and calls
its factory; ``check_role()`` raises ``PluginValidationError`` when the object cannot play its
role. ``inventory()`` runs the first two for every plugin and keeps going past broken ones.
``ENGINE_DISABLE_PLUGIN_AUTOLOAD=1`` makes discovery return nothing.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any, Literal, final

import attrs

from ..core._exceptions import ConfigError, PluginLoadError, PluginValidationError
from ._config import structure
from ._spec import EFFECTORS, RECEPTORS

Role = Literal["receptor", "effector"]
GROUPS: dict[str, Role] = {RECEPTORS: "receptor", EFFECTORS: "effector"}


@final
@attrs.frozen(order=True)
class PluginInfo:
    """One entry point of a plugin group, as discovered (nothing imported)."""

    name: str
    group: str
    value: str
    """``module:attribute`` of the factory."""
    distribution: str | None = None
    version: str | None = None

    @property
    def role(self) -> Role:
        return GROUPS[self.group]


@final
@attrs.frozen
class PluginStatus:
    """What ``inventory()`` found for one plugin: loaded, or the error that stopped it."""

    info: PluginInfo
    error: str | None = None


def autoload_disabled() -> bool:
    return os.environ.get("ENGINE_DISABLE_PLUGIN_AUTOLOAD", "") not in ("", "0")


def discover(groups: Iterable[str] = (RECEPTORS, EFFECTORS)) -> tuple[PluginInfo, ...]:
    """Sorted, immutable records of the plugins installed in ``groups`` (imports nothing)."""
    if autoload_disabled():
        return ()
    found = set()
    for group in groups:
        for ep in metadata.entry_points(group=group):
            dist = ep.dist
            found.add(
                PluginInfo(
                    ep.name,
                    group,
                    ep.value,
                    dist.name if dist else None,
                    dist.version if dist else None,
                )
            )
    return tuple(sorted(found))


def load(info: PluginInfo) -> Any:
    """Import a plugin's factory.

    Raises:
        PluginLoadError: Naming the plugin, with the import error as its cause.
    """
    try:
        return metadata.EntryPoint(info.name, info.value, info.group).load()
    except Exception as exc:
        raise PluginLoadError(info.name, exc) from exc


def create(
    name: str, factory: Any, config: Mapping[str, Any] | None = None, *, path: str = "$"
) -> Any:
    """Structure ``config`` into ``factory.Config`` and build the plugin.

    Args:
        name: The plugin's name, for errors.
        factory: What its entry point names.
        config: Its config table (``None``: all defaults).
        path: Where ``config`` sits in its file, for the problems' paths.

    Raises:
        PluginValidationError: The factory is not callable or has no attrs ``Config``.
        ConfigError: The config does not fit ``Config`` (every problem listed).
        PluginLoadError: The factory raised.
    """
    cfg_cls = getattr(factory, "Config", None)
    if not callable(factory) or cfg_cls is None or not attrs.has(cfg_cls):
        raise PluginValidationError(name, "its factory must be callable with an attrs Config")
    cfg = structure(dict(config or {}), cfg_cls, f"config of plugin {name!r}", path=path)
    try:
        return factory(cfg)
    except (ConfigError, PluginValidationError):
        raise
    except Exception as exc:
        raise PluginLoadError(name, exc) from exc


def check_role(name: str, obj: Any, role: Role) -> None:
    """Raise ``PluginValidationError`` unless ``obj`` can play ``role``."""
    if role == "receptor":
        run = getattr(obj, "run", None)
        if run is None or not inspect.iscoroutinefunction(run):
            raise PluginValidationError(name, "a receptor needs `async def run(self, sink)`")
        return
    deliver = getattr(obj, "deliver", None)
    if deliver is None or not callable(deliver):
        raise PluginValidationError(name, "an effector needs `deliver(self, batch)`")
    for hook in ("aopen", "aclose"):
        method = getattr(obj, hook, None)
        if method is not None and not inspect.iscoroutinefunction(method):
            raise PluginValidationError(name, f"{hook} must be `async def`")


def find(name: str, role: Role | None = None) -> list[PluginInfo]:
    """The discovered entry points called ``name`` (in one role, or all)."""
    return [i for i in discover() if i.name == name and (role is None or i.role == role)]


def inventory() -> list[PluginStatus]:
    """Discover and load every plugin; a broken one is reported, never fatal."""
    out = []
    for info in discover():
        try:
            factory = load(info)
            if getattr(factory, "Config", None) is None or not attrs.has(factory.Config):
                raise PluginValidationError(info.name, "its factory has no attrs Config")
        except (PluginLoadError, PluginValidationError) as exc:
            out.append(PluginStatus(info, str(exc)))
        else:
            out.append(PluginStatus(info))
    return out
