"""Configuration: attrs classes structured from dicts (TOML) by one cattrs converter.

``structure(data, cls, where)`` reports every bad field at once as a ``ConfigError`` (cattrs'
detailed validation, flattened into readable lines with their paths). ``AppConfig`` is the
schema of ``python -m engine run app.toml``::

    [runtime]                       # Runtime keyword arguments, all optional
    implementation = "native"
    capacity = 0
    policy = "reject"               # or "drop_oldest"

    [machines.light]                # a name -> an engine.Machine by import path
    path = "myapp.machines:LIGHT"

    [[agents]]                      # ids = [...], or count = N (int ids 0..N-1, or
    machine = "light"               #   prefix + number with prefix = "...")
    count = 100

    [[plugins]]                     # an entry point of engine.receptors / engine.effectors
    name = "tcp"
    role = "both"                   # default: every group the plugin is registered in
    restart = { policy = "restart", backoff = 0.5 }
    [plugins.config]                # the plugin's own Config
    port = 7000
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar, final

import attrs
import cattrs
from cattrs.cols import list_structure_factory

from ..core._exceptions import ConfigError
from ..runtime._supervision import Supervision

T = TypeVar("T")

converter = cattrs.Converter(forbid_extra_keys=True)
"""The engine's one converter (plugins' ``Config`` classes are structured with it too)."""


def _str_or_int(value: Any, _: Any) -> str | int:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return value
    raise TypeError(f"expected a string or an integer, got {value!r}")


converter.register_structure_hook(str | int, _str_or_int)


def _is_list(type_: Any) -> bool:
    return getattr(type_, "__origin__", None) is list


def _list_hook(type_: Any) -> Any:
    base = list_structure_factory(type_, converter)  # cattrs' own, with per-item paths

    def structure_list(value: Any, _: Any) -> list[Any]:
        if isinstance(value, str | bytes):  # "l1" is not ["l", "1"]
            raise TypeError(f"expected a list, got the string {value!r}")
        return base(value, type_)  # type: ignore[no-any-return]

    return structure_list


converter.register_structure_hook_factory(_is_list, _list_hook)


def structure(data: Any, cls: type[T], where: str) -> T:
    """Structure ``data`` into ``cls``, or raise ``ConfigError`` listing every problem: type
    errors found by cattrs and the attrs validators of every field that has the right type
    (cattrs alone stops before validators when any field is malformed)."""
    try:
        return converter.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        problems = cattrs.transform_error(exc, path="$", format_exception=_describe)
    except (TypeError, ValueError) as exc:
        problems = [f"{type(exc).__name__}: {exc}"]
    problems += [p for p in _validator_problems(data, cls, "$") if p not in problems]
    raise ConfigError(where, problems)


def _describe(exc: BaseException, type_: Any) -> str:
    if type_ is None and isinstance(exc, ValueError) and str(exc):
        return str(exc)  # a check across fields (__attrs_post_init__) says what is wrong
    text = cattrs.v.format_exception(exc, type_)
    if text.startswith("unknown error (") and text.endswith(")"):
        text = text[len("unknown error (") : -1]  # e.g. "x not in literal typing.Literal[...]"
    return text


def _validator_problems(data: Any, cls: Any, path: str) -> list[str]:
    """Run each attrs field's validator on its value alone, recursing into nested classes."""
    if not (attrs.has(cls) and isinstance(data, dict)):
        return []
    out = []
    for field in attrs.fields(cls):
        if field.name not in data:
            continue
        raw, where = data[field.name], f"{path}.{field.name}"
        if attrs.has(field.type):
            out += _validator_problems(raw, field.type, where)
            continue
        items: tuple[Any, ...] = getattr(field.type, "__args__", ())
        if isinstance(raw, list) and len(items) == 1 and attrs.has(items[0]):
            for i, item in enumerate(raw):
                out += _validator_problems(item, items[0], f"{where}[{i}]")
            continue
        if isinstance(raw, dict) and len(items) == 2 and attrs.has(items[1]):
            for key, item in raw.items():
                out += _validator_problems(item, items[1], f"{where}.{key}")
            continue
        if field.validator is None:
            continue
        try:
            value = converter.structure(raw, field.type)
            field.validator(None, field, value)
        except Exception as exc:  # a type error is cattrs' report; a validator's is ours
            if not isinstance(exc, cattrs.BaseValidationError | TypeError):
                out.append(f"{exc} @ {where}")
    return out


@final
@attrs.frozen
class RestartPolicy:
    """What happens when a receptor raises: restart it after a backoff, or stop the runtime.
    More than ``max_restarts`` failures within ``within`` seconds also stop the runtime."""

    policy: Literal["restart", "stop"] = "restart"
    backoff: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    """Delay before the first restart in the window; doubled for each further one."""
    backoff_max: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    max_restarts: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    within: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))


@final
@attrs.frozen
class RuntimeConfig:
    """``Runtime`` keyword arguments an app file may set."""

    implementation: Literal["native", "python"] | None = None
    capacity: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    policy: Literal["reject", "drop_oldest"] = "reject"
    budget: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    batch: int = attrs.field(default=4096, validator=attrs.validators.ge(1))
    dead_letter_limit: int = attrs.field(default=100_000, validator=attrs.validators.ge(1))
    retention: int = attrs.field(default=65_536, validator=attrs.validators.ge(1))
    record: bool = False
    supervision: Supervision | None = None
    metrics: bool = False
    sample_every: int = attrs.field(default=0, validator=attrs.validators.ge(0))


@final
@attrs.frozen
class MachineConfig:
    """Where a machine lives: ``path = "package.module:ATTRIBUTE"``."""

    path: str


@final
@attrs.frozen
class AgentsConfig:
    """A group of agents of one machine: explicit ``ids``, or ``count`` (ids ``0..count-1``,
    or ``f"{prefix}{n}"`` with a ``prefix``)."""

    machine: str
    ids: list[str | int] | None = None
    count: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    prefix: str | None = None
    capacity: int | None = None
    policy: Literal["reject", "drop_oldest"] | None = None
    supervision: Supervision | None = None

    def agent_ids(self) -> list[Any]:
        if self.ids is not None:
            return list(self.ids)
        count = self.count or 0
        return [f"{self.prefix}{n}" for n in range(count)] if self.prefix else list(range(count))


@final
@attrs.frozen
class PluginConfig:
    """One plugin instance: the entry-point ``name``, its ``role`` and its ``config``."""

    name: str
    role: Literal["receptor", "effector", "both"] | None = None
    config: dict[str, Any] = attrs.Factory(dict)
    restart: RestartPolicy = attrs.Factory(RestartPolicy)


@final
@attrs.frozen
class AppConfig:
    """The schema of an app file (see the module docstring)."""

    runtime: RuntimeConfig = attrs.Factory(RuntimeConfig)
    machines: dict[str, MachineConfig] = attrs.Factory(dict)
    agents: list[AgentsConfig] = attrs.Factory(list)
    plugins: list[PluginConfig] = attrs.Factory(list)


def load_app(path: str | Path) -> AppConfig:
    """Read and check an app file; ``ConfigError`` lists every problem found.

    Raises:
        ConfigError: Unreadable TOML, bad fields, or references to undefined machines.
    """
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(where, [f"{type(exc).__name__}: {exc}"]) from None
    app = structure(data, AppConfig, where)
    problems = []
    for i, group in enumerate(app.agents):
        if group.machine not in app.machines:
            problems.append(f"agents[{i}].machine {group.machine!r} is not in [machines]")
        if (group.ids is None) == (group.count is None):
            problems.append(f"agents[{i}] needs exactly one of ids or count")
    if problems:
        raise ConfigError(where, problems)
    return app
