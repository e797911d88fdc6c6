"""The hot path: agent slots, four-lane mailboxes, the ready queue and the drain loop.

Theory of operation: a ``Dispatcher`` is a plain synchronous object (no trio, no storage) that
holds every agent of a runtime as a slot, queues messages in per-agent four-lane mailboxes,
and drains ready agents in FIFO turns of at most ``budget`` messages, stepping each through its
machine's int32 tables and calling Python only where a slot has a handler or a hook is set.
It exists twice with one behaviour: compiled (``engine._native``, built from ``_native/``) and
the pure-Python twin (``_python``), whose docstring defines the semantics; every hot-path test
runs against both. ``_metrics`` holds the latency rings the dispatcher writes into, and
``_batch`` the array checks both share.

This module selects the implementation: the compiled ``engine._native`` or the Python twin.
``ENGINE_NO_EXTENSIONS=1`` forces the twin. Otherwise the compiled module is used when it
imports; ``USE_EXTENSIONS`` says which one is live, and the test suite fails if it is False
while the extension was expected (a silent fallback is a defect).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import TYPE_CHECKING, Final

from . import _python as _hotpath_py

NO_EXTENSIONS: Final = os.environ.get("ENGINE_NO_EXTENSIONS", "") not in ("", "0")

_native: ModuleType | None
if NO_EXTENSIONS:
    _native = None
else:
    try:
        from .. import _native  # type: ignore[attr-defined,no-redef,unused-ignore]
    except ImportError:  # not built: the twin is live, and tests say so loudly
        _native = None

USE_EXTENSIONS: Final[bool] = _native is not None
"""True when the compiled ``engine._native`` is the live implementation."""

impl: ModuleType = _native if _native is not None else _hotpath_py
"""The live implementation module (``engine._native`` or ``engine.hotpath._python``)."""

if TYPE_CHECKING:  # both implementations have the twin's surface (engine/_native.pyi)
    from ._python import AgentContext as AgentContext
    from ._python import AgentRef as AgentRef
    from ._python import Dispatcher as Dispatcher
    from ._python import Event as Event
else:
    Dispatcher = impl.Dispatcher
    AgentRef = impl.AgentRef
    AgentContext = impl.AgentContext
    Event = impl.Event


def implementation(name: str | None = None) -> ModuleType:
    """Return the hot-path module by name: ``"native"``, ``"python"``, or ``None`` (live).

    Raises:
        ImportError: ``"native"`` was asked for and the extension is not built.
    """
    if name is None:
        return impl
    if name == "python":
        return _hotpath_py
    if name == "native":
        if _native is None:
            from .. import _native as native  # type: ignore[attr-defined,unused-ignore]

            return native  # type: ignore[no-any-return,unused-ignore]
        return _native
    raise ValueError(f"unknown hot-path implementation {name!r} (expected 'native' or 'python')")
