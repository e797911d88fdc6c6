"""A store for tests whose writes fail on demand, as a database that went away does."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from engine import store
from engine.core._exceptions import StoreError


class FlakyStore:
    """A MemoryStore whose writes fail with StoreError while ``down`` (or ``fail`` more
    times)."""

    def __init__(self, fail: int = 0, *, down: bool = False) -> None:
        self.inner = store.MemoryStore()
        self.fail = fail
        self.down = down
        self.attempts = 0

    def write(self, records: Sequence[tuple[str, float, bytes]]) -> list[int]:
        self.attempts += 1
        if self.down or self.fail > 0:
            self.fail -= 1
            raise StoreError("FlakyStore", OSError("the disk is gone"))
        return self.inner.write(records)

    def latest(self, agents: Iterable[str] | None = None) -> list[store.StoredRecord]:
        return self.inner.latest(agents)

    def history(self, agent: str) -> list[store.StoredRecord]:
        return self.inner.history(agent)

    def read(self, record_id: int) -> store.StoredRecord:
        return self.inner.read(record_id)

    def forget(self, agent: str, keep: int = 0) -> int:
        return self.inner.forget(agent, keep)

    def compact(self, keep: int = 1) -> int:
        return self.inner.compact(keep)

    def close(self) -> None:
        pass
