"""The checks of a command's data: each raises ``InvalidArgumentError`` (or the not-found
error of what the data names) before the command changes anything."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

import engine

from ._values import MAX_TEXT, _brief

if TYPE_CHECKING:
    from ._runtime import ConversationRuntime

IMAGE_FIELDS = ("name", "description", "system_prompt")


def fields(
    data: object, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``data`` as a dict, checked to hold every required key and no unknown one."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise engine.InvalidArgumentError(f"a command's data is a mapping, not {_brief(data)}")
    try:
        given = dict(data)
    except Exception as exc:  # a hostile mapping
        raise engine.InvalidArgumentError(
            f"a command's data cannot be read: {_brief(exc)}"
        ) from exc
    unknown = [k for k in given if k not in required and k not in optional]
    if unknown:
        raise engine.InvalidArgumentError(f"unknown fields {_brief(unknown)}")
    missing = [k for k in required if k not in given]
    if missing:
        raise engine.InvalidArgumentError(f"missing fields {', '.join(missing)}")
    return given


def text(value: object, name: str, *, empty: bool = False, limit: int = MAX_TEXT) -> str:
    if type(value) is not str:
        raise engine.InvalidArgumentError(f"{name} is a str, not {_brief(value)}")
    if not empty and not value:
        raise engine.InvalidArgumentError(f"{name} is empty")
    if len(value) > limit:
        raise engine.InvalidArgumentError(f"{name} is longer than {limit} characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise engine.InvalidArgumentError(f"{name} is not valid UTF-8") from None
    return value


def image_config(value: object, *, partial: bool) -> dict[str, str]:
    """A checked image definition (``config``), or the changes of one (``updates``)."""
    given = fields(value, (), IMAGE_FIELDS)
    if not partial:
        given.setdefault("name", "Assistant")
    return {key: text(v, key, empty=key != "name") for key, v in given.items()}


def container_id(crt: ConversationRuntime, value: object, *, exists: bool = True) -> str:
    cid = text(value, "container_id", limit=200)
    if cid == "default":
        raise engine.InvalidArgumentError("'default' is the engine's own tenant, not a container")
    if exists and cid not in crt.container_ids():
        raise engine.TenantNotFoundError(cid)
    return cid


def image_of(crt: ConversationRuntime, given: dict[str, Any]) -> str:
    """The image named by ``image_id`` or, failing that, by ``agent_id``."""
    if "image_id" in given:
        image_id = given["image_id"]
        crt.images.data(image_id)  # ImageNotFoundError
        assert isinstance(image_id, str)
        return image_id
    if "agent_id" in given:
        return crt.images.agent(given["agent_id"])[0]
    raise engine.InvalidArgumentError("give image_id or agent_id")


def check_timeout(timeout: object) -> float:
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise engine.InvalidArgumentError(f"timeout is a number of seconds, not {_brief(timeout)}")
    if math.isnan(timeout) or timeout <= 0:
        raise engine.InvalidArgumentError(f"timeout must be positive, not {_brief(timeout)}")
    return float(timeout)


def deadline() -> float | None:
    """The calling command's deadline on trio's clock (None: none), which its messages
    carry so that an agent drops them once it has passed."""
    at = trio.current_effective_deadline()
    return None if at == math.inf else at
