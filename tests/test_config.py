"""Configuration: the engine's one cattrs converter is strict (nothing is coerced), and an app
file's problems are all reported at once, each with its path."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest

import engine
from engine.environment._config import (
    AppConfig,
    FloatOrInfinity,
    MetricsConfig,
    load_app,
    structure,
)

README = Path(__file__).resolve().parent.parent / "README.md"


@attrs.frozen
class Sample:
    flag: bool = False
    count: int = 0
    ratio: float = 0.5
    name: str = "x"
    ids: list[str | int] = attrs.Factory(list)
    mode: Literal["fast", "slow"] = "fast"
    delay: float | None = None


def problems(data: Any, cls: type = Sample) -> list[str]:
    with pytest.raises(engine.ConfigError) as info:
        structure(data, cls, "test")
    return list(info.value.problems)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("flag", "no", "expected true or false, got 'no' @ $.flag"),
        ("flag", 1, "expected true or false, got 1 @ $.flag"),
        ("count", 64.9, "expected an integer, got 64.9 @ $.count"),
        ("count", True, "expected an integer, got True @ $.count"),
        ("count", "3", "expected an integer, got '3' @ $.count"),
        ("ratio", "0.5", "expected a number, got '0.5' @ $.ratio"),
        ("ratio", False, "expected a number, got False @ $.ratio"),
        ("ratio", math.nan, "expected a finite number, got nan @ $.ratio"),
        ("ratio", math.inf, "expected a finite number, got inf @ $.ratio"),
        ("delay", -math.inf, "expected a finite number, got -inf @ $.delay"),
        ("name", 5, "expected a string, got 5 @ $.name"),
        ("ids", "l1", "expected an array, got 'l1' @ $.ids"),
        ("mode", "sideways", "expected one of 'fast', 'slow', got 'sideways' @ $.mode"),
    ],
)
def test_the_converter_coerces_nothing(field: str, value: Any, expected: str) -> None:
    assert problems({field: value}) == [expected]


def test_well_typed_values_pass_and_ints_widen_to_floats() -> None:
    s = structure(
        {"flag": True, "count": 3, "ratio": 1, "ids": ["a", 2], "mode": "slow", "delay": 2},
        Sample,
        "test",
    )
    assert s == Sample(True, 3, 1.0, "x", ["a", 2], "slow", 2.0)
    assert type(s.ratio) is float
    assert type(s.delay) is float
    assert problems({"ids": ["a", True, 1.5]}) == [
        "invalid value for type, expected str | int @ $.ids[1]",
        "invalid value for type, expected str | int @ $.ids[2]",
    ]


def test_problems_are_described_from_exceptions_not_message_strings() -> None:
    # a Literal mismatch used to read "unknown error (x not in literal ...)", trimmed by hand
    for text in problems({"mode": 1, "name": None, "flag": None, "colour": 1}):
        assert "unknown error" not in text
        assert "typing." not in text


@attrs.frozen
class Limits:
    low: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    high: int = attrs.field(default=10, validator=attrs.validators.le(100))
    name: str = ""
    step: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))

    def __attrs_post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low must not exceed high")


def test_type_errors_and_every_validator_of_a_class_in_one_report() -> None:
    # attrs stops at the first failing validator and cattrs runs none once a field is
    # mistyped: the converter still reports every field
    assert sorted(problems({"low": -1, "high": 101, "name": 3, "step": 0}, Limits)) == sorted(
        [
            "'low' must be >= 0: -1 @ $.low",
            "'high' must be <= 100: 101 @ $.high",
            "expected a string, got 3 @ $.name",
            "'step' must be > 0: 0.0 @ $.step",
        ]
    )
    assert problems({"low": 5, "high": 4}, Limits) == ["low must not exceed high @ $"]
    assert problems({"low": 5, "colour": 1}, Limits) == ["extra fields found (colour) @ $"]
    assert problems(["low"], Limits) == ["expected a table, got ['low'] @ $"]


BAD_APP = """
[runtime]
record = "no"
budget = 64.9
capacity = -1
policy = "sometimes"
supervision = { policy = "restart", backoff = nan }

[machines.m]
path = "x:y"
[machines.nopath]
[machines.nocolon]
path = "just.a.module"

[[agents]]
machine = "ghost"
ids = [1]
[[agents]]
machine = "m"
ids = [1]
count = 2
[[agents]]
machine = "m"
count = 2.5

[[plugins]]
role = "spectator"
[[plugins]]
name = "jsonl"
restart = { backoff = inf }
"""


def test_an_app_file_reports_every_bad_field_of_every_section_at_once(tmp_path: Path) -> None:
    app = tmp_path / "app.toml"
    app.write_text(BAD_APP)
    with pytest.raises(engine.ConfigError) as info:
        load_app(app)
    assert info.value.where == str(app)
    assert sorted(info.value.problems) == sorted(
        [
            "expected true or false, got 'no' @ $.runtime.record",
            "expected an integer, got 64.9 @ $.runtime.budget",
            "'capacity' must be >= 0: -1 @ $.runtime.capacity",
            "expected one of 'reject', 'drop_oldest', got 'sometimes' @ $.runtime.policy",
            "expected a finite number, got nan @ $.runtime.supervision.backoff",
            "required field missing @ $.machines['nopath'].path",
            "expected 'package.module:attribute', got 'just.a.module' @ $.machines['nocolon'].path",
            "'ghost' is not a machine of [machines] @ $.agents[0].machine",
            "needs exactly one of ids or count @ $.agents[1]",
            "expected an integer, got 2.5 @ $.agents[2].count",
            "required field missing @ $.plugins[0].name",
            "expected one of 'receptor', 'effector', 'both', got 'spectator' @ $.plugins[0].role",
            "expected a finite number, got inf @ $.plugins[1].restart.backoff",
        ]
    )


def test_unreadable_app_files_are_one_problem_each(tmp_path: Path) -> None:
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[runtime]\n")
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("[runtime\n")
    for path, fragment in (
        (binary, "not UTF-8 text: 'utf-8' codec can't decode byte 0xff in position 0"),
        (syntax, "not valid TOML: Expected ']' at the end of a table declaration (at line 1"),
        (tmp_path / "missing.toml", "cannot read it: FileNotFoundError"),
        (tmp_path, "cannot read it: IsADirectoryError"),
    ):
        with pytest.raises(engine.ConfigError) as info:
            load_app(path)
        (problem,) = info.value.problems
        assert problem.startswith(fragment), problem


def test_the_readme_app_file_is_valid(tmp_path: Path) -> None:
    section = README.read_text().split("## Plugins: receptors and effectors")[1].split("\n## ")[0]
    (toml,) = [
        b for b in re.findall(r"```toml\n(.*?)```", section, flags=re.S) if "[[agents]]" in b
    ]
    app = tmp_path / "app.toml"
    app.write_text(toml)
    config = load_app(app)
    assert config.agents[0].agent_ids() == list(range(1000))
    assert [p.name for p in config.plugins] == ["tcp", "jsonl"]
    assert structure({}, AppConfig, "x") == AppConfig()


@attrs.frozen
class Timeouts:
    idle: FloatOrInfinity | None = 300.0
    send: FloatOrInfinity = 10.0


def test_a_field_may_take_infinity_when_its_type_says_so() -> None:
    assert structure({"idle": math.inf, "send": 2}, Timeouts, "t") == Timeouts(math.inf, 2.0)
    assert problems({"idle": math.nan, "send": "10"}, Timeouts) == [
        "expected a number or inf, got nan @ $.idle",
        "expected a number or inf, got '10' @ $.send",
    ]


def test_agents_of_a_file_without_machines_are_reported(tmp_path: Path) -> None:
    app = tmp_path / "app.toml"
    app.write_text('[[agents]]\nmachine = "light"\ncount = 1\nprefix = "l"\n')
    with pytest.raises(engine.ConfigError) as info:
        load_app(app)
    assert info.value.problems == ("'light' is not a machine of [machines] @ $.agents[0].machine",)
    app.write_text(
        '[machines.light]\npath = "m:L"\n[[agents]]\nmachine = "light"\nids = [1]\nprefix = "l"\n'
    )
    with pytest.raises(engine.ConfigError) as info:
        load_app(app)
    assert info.value.problems == ("prefix applies to count, not to ids @ $.agents[0]",)


def test_the_metrics_table_is_checked_and_holds_no_token(tmp_path: Path) -> None:
    app = tmp_path / "app.toml"
    app.write_text('[metrics]\nport = 70000\nhost = ""\ndashboard = "yes"\ntoken = "s3cret"\n')
    with pytest.raises(engine.ConfigError) as info:
        load_app(app)
    assert sorted(info.value.problems) == sorted(
        [
            "'port' must be <= 65535: 70000 @ $.metrics.port",
            "expected a host name or address, got '' @ $.metrics.host",
            "expected true or false, got 'yes' @ $.metrics.dashboard",
            "extra fields found (token) @ $.metrics",
        ]
    )
    app.write_text("[metrics]\ndashboard = true\n")
    with pytest.raises(engine.ConfigError) as info:
        load_app(app)
    assert info.value.problems == ("required field missing @ $.metrics.port",)
    app.write_text("[metrics]\nport = 0\n")
    metrics = load_app(app).metrics
    assert metrics is not None
    assert (metrics.port, metrics.host, metrics.dashboard) == (0, "127.0.0.1", False)
    assert structure({}, AppConfig, "x").metrics is None
    # the README's [metrics] example is a valid app file
    (toml,) = [
        b for b in re.findall(r"```toml\n(.*?)```", README.read_text(), re.S) if "[metrics]" in b
    ]
    app.write_text(toml)
    assert load_app(app).metrics == MetricsConfig(9100, "127.0.0.1", dashboard=True)
