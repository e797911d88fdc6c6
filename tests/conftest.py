"""Shared fixtures: every hot-path test runs against the compiled module and the twin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import engine
from engine import hotpath as _hotpath

pytest_plugins = ["pytester"]  # tests/test_testing_plugin.py runs pytest sessions

IMPLEMENTATIONS = ["native", "python"]


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> str:
    """Name of a hot-path implementation. ``native`` fails (not skips) when it is missing,
    unless the build was made pure on purpose with ``ENGINE_NO_EXTENSIONS=1``."""
    name: str = request.param
    if name == "native" and _hotpath.NO_EXTENSIONS:
        pytest.skip("ENGINE_NO_EXTENSIONS=1: the compiled module is disabled on purpose")
    _hotpath.implementation(name)  # raises ImportError if the extension is missing
    return name


@pytest.fixture
def make_runtime(impl: str) -> Callable[..., engine.Runtime]:
    """Factory for runtimes on the implementation under test."""

    def make(**kwargs: Any) -> engine.Runtime:
        return engine.Runtime(implementation=impl, **kwargs)

    return make


@pytest.fixture
def light() -> engine.Machine:
    """The traffic light from the README."""
    return engine.Machine(
        "light",
        states=["red", "green", "yellow"],
        initial="red",
        transitions=[
            ("red", "tick", "green", "go"),
            ("green", "tick", "yellow", "slow"),
            ("yellow", "tick", "red", "stop"),
            ("*", "fault", "red", "stop"),
        ],
    )
