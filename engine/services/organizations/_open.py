"""``open_organizations``: an engine runtime opened for organizations, and its manager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ... import open_runtime
from ...store import MemoryStore, Store
from ._manager import Organizations


@asynccontextmanager
async def open_organizations(
    *,
    store: Store | None = None,
    memory_ttl: float | None = None,
    metrics_interval: float | None = 1.0,
    **kwargs: Any,
) -> AsyncIterator[Organizations]:
    """Open an engine runtime for organizations under trio and yield its manager.

    Args:
        store: Where agents' memory is kept (default: a ``MemoryStore``).
        memory_ttl: Seconds a hibernated agent's memory is kept (``expire_after``); None:
            for ever. One for the runtime: the engine expires by age, not per tenant.
        metrics_interval: Seconds between readings of the metrics history (None: none).
        **kwargs: ``engine.open_runtime``'s other arguments (``implementation``,
            ``sample_every``, ``durability``, ...).
    """
    store = MemoryStore() if store is None else store
    async with open_runtime(
        store=store, expire_after=memory_ttl, metrics_history=metrics_interval, **kwargs
    ) as rt:
        yield Organizations(
            rt,
            store=store,
            codec=kwargs.get("codec"),
            log=kwargs.get("durability", "none") == "log",
        )
