"""Argument checks shared by the layers: finite numbers, bounded integers, short reprs.

Every public entry point checks its arguments once, at the call, with these, so that the same
bad value gets the same ``InvalidArgumentError`` on both hot paths and nothing per message
pays for it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from ._exceptions import InvalidArgumentError, brief

__all__ = ["brief", "flag", "integer", "number"]


def number(name: str, value: Any, *, minimum: float | None = None) -> float:
    """``value`` as a finite float (bools, NaN, infinities and non-numbers refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{name} must be a number, got {brief(value)}")
    try:
        out = float(value)
    except OverflowError:  # an int too large for a float
        raise InvalidArgumentError(f"{name} is out of range: {brief(value)}") from None
    if not math.isfinite(out):
        raise InvalidArgumentError(f"{name} must be finite, got {value!r}")
    if minimum is not None and out < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum:g}, got {brief(value)}")
    return out


def integer(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in ``low..high`` (bools and floats refused: no silent truncation)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{name} must be an integer, got {brief(value)}")
    out = int(value)
    if not low <= out <= high:
        raise InvalidArgumentError(f"{name} must be in {low}..{high}, got {brief(value)}")
    return out


def flag(name: str, value: Any) -> bool:
    """``value`` if it is a real bool (``"no"`` or ``1`` are refused, never coerced)."""
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be True or False, got {brief(value)}")
    return value
