"""Where an agent lives: rendezvous hashing of its id over the shards, and a directory of the
agents that were moved away from where the hash puts them.

Rendezvous (highest random weight) hashing gives each (agent, shard) pair a score and puts the
agent on the shard with the highest one. It is stable across processes and Python runs (the
score is a CRC-32 of the id's store key, never ``hash()``, which is salted per process), and
adding or removing a shard moves only the agents whose best shard was added or removed:
about 1/n of them, never a reshuffle of all.
"""

from __future__ import annotations

import zlib
from typing import Any, final

from ..store._stores import agent_key

_CACHE = 1 << 16
"""Ids whose home is remembered (the cache is emptied when full: scores are cheap)."""


@final
class Routes:
    """The shard of every agent id: the directory's entry, else the rendezvous winner."""

    __slots__ = ("_cache", "_seeds", "directory", "shards")

    def __init__(self, shards: list[int], directory: dict[Any, int] | None = None) -> None:
        self.shards: list[int] = []
        self.directory: dict[Any, int] = dict(directory or {})
        """Agents placed by hand (moved), by id."""
        self._cache: dict[Any, int] = {}
        self._seeds: list[tuple[int, int]] = []
        self.set_shards(shards)

    def set_shards(self, shards: list[int]) -> None:
        self.shards = sorted(shards)
        self._seeds = [(zlib.crc32(f"shard:{s}".encode()), s) for s in self.shards]
        self._cache.clear()

    def home(self, agent_id: Any) -> int:
        """The shard the hash gives the id (the directory aside)."""
        try:
            return self._cache[agent_id]
        except KeyError:
            pass
        except TypeError:  # an unhashable id: no agent has it; any shard will say so
            return self.shards[0]
        key = agent_key(agent_id).encode()
        best, home = -1, self.shards[0]
        for seed, shard in self._seeds:
            score = zlib.crc32(key, seed)
            if score > best:
                best, home = score, shard
        if len(self._cache) >= _CACHE:
            self._cache.clear()
        self._cache[agent_id] = home
        return home

    def __call__(self, agent_id: Any) -> int:
        """The shard the agent lives on."""
        try:
            return self.directory[agent_id]
        except (KeyError, TypeError):
            return self.home(agent_id)
