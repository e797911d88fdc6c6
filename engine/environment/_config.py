"""Configuration: attrs classes structured from dicts (TOML) by one strict cattrs converter.

Theory of operation: ``converter`` coerces nothing. cattrs' defaults call ``bool(value)`` and
``int(value)``, so ``"no"`` became True and ``64.9`` became 64; here a bool is a bool, an int
an int (never a bool), a float an int or a float that is finite (``FloatOrInfinity`` also
takes infinities), a string a string, a list a list (never a string), and a ``Literal`` one of
its values, of the same type.

cattrs reports every field that fails to structure, but runs no attrs validator once one
field of a class is bad, and attrs stops at the first failing validator: the hook for attrs
classes runs the validators of every other field too, and attaches each failure to its field
with cattrs' ``AttributeValidationNote``. ``structure()`` turns cattrs' tree of errors into
lines, each with its path (``cattrs.transform_error``), and raises them as one ``ConfigError``.
No message of cattrs' is parsed: problems are described from the exceptions' types.

``AppConfig`` is the schema of ``python -m engine run app.toml``::

    [runtime]                       # Runtime keyword arguments, all optional
    implementation = "native"
    capacity = 0
    policy = "reject"               # or "drop_oldest"
    metrics_history = 1.0           # seconds between readings of a metrics history (kept
    metrics_history_size = 3600     #   in the [store], for `engine metrics-plot`)

    [machines.light]                # a name -> an engine.Machine by import path
    path = "myapp.machines:LIGHT"

    [tenants.acme]                  # optional: a tenant, its weight and engine.Limits
    weight = 2.0                    #   (0 = no limit; [tenants.default] sets the default
    max_queued = 1000               #   tenant's)
    rate = 50.0
    per = "second"

    [[agents]]                      # ids = [...], or count = N (int ids 0..N-1, or
    machine = "light"               #   prefix + number with prefix = "...")
    count = 100
    tenant = "acme"                 # a tenant of [tenants], or "default" (the default)

    [[plugins]]                     # an entry point of engine.receptors / engine.effectors
    name = "tcp"
    role = "both"                   # default: every group the plugin is registered in
    restart = { policy = "restart", backoff = 0.5 }
    [plugins.config]                # the plugin's own Config
    port = 7000

    [metrics]                       # optional: serve Prometheus' /metrics while it runs
    port = 9100                     #   (0: any free port, printed)
    host = "127.0.0.1"              #   (the default: loopback only)
    dashboard = true                #   and the live dashboard at /dashboard; the token
                                    #   is never in the file: ENGINE_METRICS_TOKEN

    [store]                         # optional: keep the agents across runs
    kind = "sqlite"                 # or "memory", or "postgres" with dsn = "..."
    path = "agents.db"
    durability = "snapshot"         # or "log": every change, in group commits
    snapshot_every = 60.0           # seconds; without it, one snapshot at exit
    commit_interval = 0.0           # "log": seconds a commit round gathers changes
    hibernate_after = 600.0         # "log": hibernate agents idle that long (max_resident,
                                    # expire_after too)

``load_app()`` checks what the file alone can tell (its schema, and that agents name machines
of ``[machines]`` and tenants of ``[tenants]``); importing the machines and building the
plugins is the command line's job (``engine.cli``), which checks the entries of
``valid_entries()`` in the same run.
"""

from __future__ import annotations

import math
import reprlib
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, final

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.errors import AttributeValidationNote, ClassValidationError, ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn
from cattrs.strategies import configure_union_passthrough
from cattrs.v import format_exception

from ..core._exceptions import ConfigError, InvalidArgumentError, brief
from ..observe._series import check_interval, check_size
from ..runtime._supervision import Supervision
from ..runtime._tenants import DEFAULT, Limits, Tenant

T = TypeVar("T")


class Mistyped(TypeError):
    """A value of the wrong type, which the converter does not coerce."""

    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(f"expected {expected}, got {reprlib.repr(value)}")
        self.expected = expected
        self.value = value


class Invalid(ValueError):
    """A well-typed value that a validator or a check across fields refused; the message is
    theirs (the original exception is the ``__cause__``)."""


converter = cattrs.Converter(forbid_extra_keys=True)
"""The engine's one converter (plugins' ``Config`` classes are structured with it too)."""


def _bool(value: Any, _: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise Mistyped("true or false", value)


def _int(value: Any, type_: type[int]) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if type_ is int else type_(value)
    raise Mistyped("an integer", value)


def _float(value: Any, _: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise Mistyped("a number", value)
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        raise Mistyped("a finite number", value) from None
    if not math.isfinite(number):  # durations, backoffs, rates: nan and inf mean nothing
        raise Mistyped("a finite number", value)
    return number


_INFINITY_ALLOWED = "inf allowed"

FloatOrInfinity = Annotated[float, _INFINITY_ALLOWED]
"""A float field that also takes ``inf`` and ``-inf`` (say ``idle_timeout = inf``: never);
a plain ``float`` field takes finite numbers only. NaN is never a value."""


def _allows_infinity(type_: Any) -> bool:
    return _INFINITY_ALLOWED in getattr(type_, "__metadata__", ())


def _float_or_infinity(value: Any, _: Any) -> float:
    if isinstance(value, float) and math.isinf(value):
        return value
    try:
        return _float(value, float)
    except Mistyped:
        raise Mistyped("a number or inf", value) from None


def _str(value: Any, _: Any) -> str:
    if isinstance(value, str):
        return value
    raise Mistyped("a string", value)


for _type, _hook in ((bool, _bool), (int, _int), (float, _float), (str, _str)):
    converter.register_structure_hook(_type, _hook)
converter.register_structure_hook_func(_allows_infinity, _float_or_infinity)

# Unions with these members (``str | int``): a value passes when its exact class is one of them
# (True is not an int; bool is left out, or cattrs would let it in as a subclass of int);
# other members (float, bool, classes) go through their own hooks above.
configure_union_passthrough(str | int | None, converter)


def _is_literal(type_: Any) -> bool:
    return getattr(type_, "__origin__", None) is Literal


def _literal_hook(type_: Any) -> Callable[[Any, Any], Any]:
    # cattrs' own compares with ==, so 1 matches Literal[True], and says "x not in literal
    # typing.Literal[...]"; this compares value and type, and names the choices.
    choices = [((v.value if isinstance(v, Enum) else v), v) for v in type_.__args__]
    expected = "one of " + ", ".join(repr(raw) for raw, _ in choices)

    def structure_literal(value: Any, _: Any) -> Any:
        for raw, choice in choices:
            if type(value) is type(raw) and value == raw:
                return choice
        raise Mistyped(expected, value)

    return structure_literal


converter.register_structure_hook_factory(_is_literal, _literal_hook)


def _is_list(type_: Any) -> bool:
    return getattr(type_, "__origin__", None) is list


def _list_hook(type_: Any) -> Callable[[Any, Any], list[Any]]:
    base = list_structure_factory(type_, converter)  # cattrs' own, with per-item paths

    def structure_list(value: Any, _: Any) -> list[Any]:
        # cattrs would take any iterable: "l1" as ["l", "1"], a table as its keys
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise Mistyped("an array", value)
        return base(value, type_)  # type: ignore[no-any-return]

    return structure_list


converter.register_structure_hook_factory(_is_list, _list_hook)


def _attrs_hook(cls: Any) -> Callable[[Any, Any], Any]:
    base = make_dict_structure_fn(cls, converter)  # cattrs' own, detailed
    validated = [f for f in attrs.fields(cls) if f.init and f.validator is not None]

    def structure_attrs(data: Any, _: Any) -> Any:
        if not isinstance(data, Mapping):
            raise Mistyped("a table", data)
        try:
            return base(data, cls)
        except ClassValidationError as exc:
            error = exc
        noted, others = error.group_exceptions()
        failed = {note.name for _, note in noted}
        refused = [
            problem
            for field in validated
            if field.name in data and field.name not in failed
            if (problem := _validate(cls, field, data[field.name])) is not None
        ]
        extra = [e for e in others if isinstance(e, ForbiddenExtraKeysError)]
        errors: list[Exception]
        if noted or extra:  # cattrs stopped before __init__: add the validators' findings
            errors = [*(e for e, _ in noted), *extra, *refused]
        elif refused:  # __init__ raised at the first validator that failed: all of them
            errors = list(refused)
        else:  # every field is fine on its own: a check across fields (__attrs_post_init__)
            errors = [_invalid(e) for e in others]
        raise ClassValidationError(error.message, errors, cls)

    return structure_attrs


def _validate(cls: type, field: attrs.Attribute[Any], raw: Any) -> Invalid | None:
    """Run one field's validator on its structured value alone (the instance is None)."""
    convert: Any = field.converter  # typed as attrs.Converter, but usually a plain callable
    if field.validator is None or isinstance(convert, attrs.Converter):
        return None  # a converter taking the instance cannot run alone
    try:
        value = converter.structure(raw, Any if field.type is None else field.type)
        if convert is not None:
            value = convert(value)
        field.validator(None, field, value)
    except (cattrs.BaseValidationError, Mistyped):
        return None  # not a validator's finding: cattrs reported it already
    except Exception as exc:
        invalid = _invalid(exc)
        invalid.add_note(
            AttributeValidationNote(
                f"Validating class {cls.__qualname__} @ attribute {field.name}",
                field.name,
                field.type,
            )
        )
        return invalid
    return None


def _invalid(exc: Exception) -> Invalid:
    # attrs' validators raise ValueError(message) or TypeError(message, attribute, ...)
    message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    invalid = Invalid(message or type(exc).__name__)
    invalid.__cause__ = exc
    return invalid


converter.register_structure_hook_factory(attrs.has, _attrs_hook)


def _describe(exc: BaseException, type_: Any) -> str:
    """One problem, for ``cattrs.transform_error`` (which adds `` @ path``)."""
    if isinstance(exc, Mistyped | Invalid):
        return str(exc)  # written to be read
    return format_exception(exc, type_)  # missing and extra fields, cattrs' own hooks


def structure(data: Any, cls: type[T], where: str, *, path: str = "$") -> T:
    """Structure ``data`` into ``cls``, or raise ``ConfigError`` listing every problem, each
    as ``description @ path`` (``path`` is the root's).

    Raises:
        ConfigError: Every bad field, missing field and extra field.
    """
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, Mistyped, Invalid) as exc:
        raise ConfigError(where, cattrs.transform_error(exc, path, _describe)) from None


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


def _history_check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # the history's own checks (``open_runtime`` makes the same)
    if attribute.name == "metrics_history":
        check_interval(attribute.name, value)
    else:
        check_size(attribute.name, value)


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
    metrics_history: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_history_check)
    )
    """Seconds between readings of an ``engine.observe.MetricsHistory`` (None: none), saved
    to the ``[store]`` when there is one."""
    metrics_history_size: int = attrs.field(default=3600, validator=_history_check)


def _host(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise ValueError("expected a host name or address, got ''")


@final
@attrs.frozen
class MetricsConfig:
    """``[metrics]``: serve Prometheus' ``/metrics`` while the app runs and, with
    ``dashboard``, the live web dashboard (``engine.observe.serve_metrics``). The token is not
    a setting of the file, which sits next to the app's code: ``run`` and ``top`` take it from
    the ``ENGINE_METRICS_TOKEN`` environment variable (or ``--token``)."""

    port: int = attrs.field(validator=[attrs.validators.ge(0), attrs.validators.le(65535)])
    """Port to listen on; 0: any free one (``run`` prints the one it got)."""
    host: str = attrs.field(default="127.0.0.1", validator=_host)
    """Address to listen on: loopback unless the file says otherwise."""
    dashboard: bool = False
    """Also serve the dashboard at ``/dashboard``."""


def _import_path(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    # the rest of the syntax is pkgutil.resolve_name's, which the command line reports
    module, colon, name = value.partition(":")
    if not (module and colon and name):
        raise ValueError(f"expected 'package.module:attribute', got {value!r}")


@final
@attrs.frozen
class MachineConfig:
    """Where a machine lives: ``path = "package.module:ATTRIBUTE"`` (dots allowed after the
    colon, for a class attribute)."""

    path: str = attrs.field(validator=_import_path)


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
    capacity: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    policy: Literal["reject", "drop_oldest"] | None = None
    supervision: Supervision | None = None
    tenant: str | None = None
    """A tenant of ``[tenants]``, or ``"default"`` (the default)."""

    def __attrs_post_init__(self) -> None:
        if (self.ids is None) == (self.count is None):
            raise ValueError("needs exactly one of ids or count")
        if self.prefix is not None and self.count is None:
            raise ValueError("prefix applies to count, not to ids")

    def agent_ids(self) -> list[Any]:
        if self.ids is not None:
            return list(self.ids)
        count = self.count or 0
        return [f"{self.prefix}{n}" for n in range(count)] if self.prefix else list(range(count))


def _tenant_check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # the runtime's own checks, so that a file can hold nothing ``Tenant`` would refuse
    if attribute.name == "weight":
        Tenant(DEFAULT, weight=value)
    else:
        Limits(**{attribute.name: value})


@final
@attrs.frozen
class TenantConfig:
    """A tenant, ``[tenants.NAME]``: its ``weight`` and its ``engine.Limits`` (0: no limit).
    Every field is checked by ``Tenant`` and ``Limits`` themselves."""

    weight: float = attrs.field(default=1.0, validator=_tenant_check)
    max_agents: int = attrs.field(default=0, validator=_tenant_check)
    max_queued: int = attrs.field(default=0, validator=_tenant_check)
    overflow: Literal["reject", "wait"] = "reject"
    rate: float = attrs.field(default=0.0, validator=_tenant_check)
    per: Literal["second", "minute"] = "second"
    burst: int = attrs.field(default=0, validator=_tenant_check)
    turn_deadline: float = attrs.field(default=0.0, validator=_tenant_check)
    on_deadline: Literal["report", "fail", "stop"] = "report"
    max_memory: int = attrs.field(default=0, validator=_tenant_check)

    def tenant(self, name: str) -> Tenant:
        """The ``engine.Tenant`` named ``name`` that this entry describes."""
        limits = attrs.asdict(self)
        weight = limits.pop("weight")
        return Tenant(name, weight, Limits(**limits))


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
class StoreConfig:
    """Where ``run`` keeps the agents: it restores them from the store at start, then keeps
    them at the ``durability`` level: ``"snapshot"`` (every ``snapshot_every`` seconds if set,
    and once more at exit) or ``"log"`` (every change, in group commits)."""

    kind: Literal["sqlite", "memory", "postgres"] = "sqlite"
    path: str | None = None
    """The SQLite file (needed for ``kind = "sqlite"``)."""
    dsn: str | None = None
    """The PostgreSQL connection string (needed for ``kind = "postgres"``)."""
    durability: Literal["snapshot", "log"] = "snapshot"
    snapshot_every: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    commit_interval: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    """Seconds a commit round gathers changes (durability "log")."""
    hibernate_after: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    """Hibernate agents idle this many seconds (durability "log")."""
    max_resident: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    """Keep at most this many agents in memory (durability "log")."""
    expire_after: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    """Remove agents hibernated this many seconds (durability "log")."""

    def __attrs_post_init__(self) -> None:
        if self.kind == "sqlite" and not self.path:
            raise ValueError('kind = "sqlite" needs a path')
        if self.kind == "postgres" and not self.dsn:
            raise ValueError('kind = "postgres" needs a dsn')
        if not math.isfinite(self.commit_interval):
            raise ValueError("commit_interval must be finite")
        sleep = (self.hibernate_after, self.max_resident, self.expire_after)
        if self.durability != "log" and sleep != (None, None, None):
            raise ValueError(
                'hibernate_after, max_resident and expire_after need durability = "log"'
            )
        for value in (self.hibernate_after, self.expire_after):
            if value is not None and not math.isfinite(value):
                raise ValueError("hibernation times must be finite")


@final
@attrs.frozen
class AppConfig:
    """The schema of an app file (see the module docstring)."""

    runtime: RuntimeConfig = attrs.Factory(RuntimeConfig)
    machines: dict[str, MachineConfig] = attrs.Factory(dict)
    agents: list[AgentsConfig] = attrs.Factory(list)
    plugins: list[PluginConfig] = attrs.Factory(list)
    store: StoreConfig | None = None
    tenants: dict[str, TenantConfig] = attrs.Factory(dict)
    metrics: MetricsConfig | None = None

    def tenant_list(self) -> list[Tenant]:
        """The ``[tenants]`` as ``engine.Tenant`` values, for ``open_runtime(tenants=...)``."""
        return [config.tenant(name) for name, config in self.tenants.items()]


def read_app(path: str | Path) -> dict[str, Any]:
    """The TOML table of an app file.

    Raises:
        ConfigError: The file cannot be read, is not UTF-8 or not TOML (one problem: nothing
            else can be checked).
    """
    try:
        text = Path(path).read_bytes().decode()
        return tomllib.loads(text)
    except OSError as exc:
        problem = f"cannot read it: {type(exc).__name__}: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text: {exc}"
    except tomllib.TOMLDecodeError as exc:
        problem = f"not valid TOML: {exc}"
    raise ConfigError(str(path), [problem])


def check_app(data: Mapping[str, Any], where: str) -> AppConfig:
    """Structure an app file's table and check that its agents name machines and tenants it
    defines.

    Raises:
        ConfigError: Every problem found, each with its path.
    """
    problems: list[str] = []
    app = None
    try:
        app = structure(data, AppConfig, where)
    except ConfigError as exc:
        problems += exc.problems
    # on the raw table, so that it is checked however broken the rest is
    machines = data.get("machines", {})
    tenants = data.get("tenants", {})
    agents = data.get("agents")
    if isinstance(tenants, Mapping):
        for key in tenants:
            try:
                Tenant(key)
            except InvalidArgumentError as exc:
                problems.append(f"{exc} @ $.tenants[{brief(key)}]")
    if isinstance(agents, list):
        for i, group in enumerate(agents):
            if not isinstance(group, Mapping):
                continue
            name = group.get("machine")
            if isinstance(machines, Mapping) and isinstance(name, str) and name not in machines:
                problems.append(f"{name!r} is not a machine of [machines] @ $.agents[{i}].machine")
            name = group.get("tenant")
            known = tenants if isinstance(tenants, Mapping) else {}
            if isinstance(name, str) and name != DEFAULT and name not in known:
                problems.append(
                    f"{brief(name)} is not a tenant of [tenants] (nor {DEFAULT!r}) "
                    f"@ $.agents[{i}].tenant"
                )
    if problems or app is None:
        raise ConfigError(where, problems)
    return app


def load_app(path: str | Path) -> AppConfig:
    """Read and check an app file; ``ConfigError`` lists every problem found.

    Raises:
        ConfigError: An unreadable file, bad TOML, bad fields, or agents of undefined machines.
    """
    return check_app(read_app(path), str(path))


def valid_entries(data: Mapping[str, Any], section: str, cls: type[T]) -> dict[Any, T]:
    """The entries of ``section`` (a table of tables, or an array of tables) that structure
    into ``cls`` on their own, by name or by index; the others are left out (``check_app``
    reports them). What needs these (imports, plugins) is then checked in the same run."""
    raw = data.get(section)
    if isinstance(raw, Mapping):
        items: Iterable[tuple[Any, Any]] = raw.items()
    elif isinstance(raw, list):
        items = enumerate(raw)
    else:
        return {}
    out = {}
    for key, entry in items:
        try:
            out[key] = converter.structure(entry, cls)
        except (cattrs.BaseValidationError, Mistyped, Invalid):
            continue
    return out
