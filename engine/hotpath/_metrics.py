"""Metrics: latency samples in fixed-size numpy rings, percentiles computed on read.

Theory of operation: a ``LatencyRing`` is a numpy int64 buffer plus a one-element numpy
counter of samples ever appended; the compiled dispatcher writes both through raw pointers
(no Python call per sample), the twin through ``append``. It speaks deque's language
(``append``, ``maxlen``, ``len``, iteration) and numpy's (``__array__``, oldest first). Nothing
is sorted or summarised when a sample is written: ``summary()`` computes p50/p90/p99/max over
the retained window when someone asks. Values are nanoseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, final

import attrs
import numpy as np
import numpy.typing as npt

METRICS_DTYPE = np.dtype(
    [
        ("busy_ns", np.int64),
        ("high_water", np.int32),
        ("postponed", np.int32),
        ("restarts", np.int32),
        ("_pad", np.int32),
    ],
    align=True,
)
"""Per-agent counters kept when a runtime has ``metrics=True`` (one record per slot)."""

TENANT_DTYPE = np.dtype(
    [
        ("agents", np.int64),  # live agents
        ("queued", np.int64),  # messages in its agents' lanes, plus those delayed by its rate
        ("delayed_now", np.int64),  # messages its rate holds back now
        ("delayed", np.int64),  # messages its rate ever held back
        ("rejected", np.int64),  # sends refused at max_queued
        ("overruns", np.int64),  # handler steps and Work past turn_deadline
        ("retired_processed", np.int64),  # processed and failed counts of terminated agents
        ("retired_failed", np.int64),
        ("ready", np.int64),  # agents on its ready queue
        ("quantum", np.int64),  # messages per scheduling round (weight x budget)
        ("deficit", np.int64),  # messages it may still take in this round
        ("served", np.int64),  # messages its agents took from the dispatcher, ever
    ]
)
"""Per-tenant counters, as ``Dispatcher.tenant_table()`` returns them (one row per tenant
index; a removed tenant's row is zero)."""

RECORD_DTYPE = np.dtype(
    [
        ("slot", np.int32),  # the agent's slot (its id is resolved when the record is read)
        ("machine", np.int32),  # index of its machine in Dispatcher.machines
        ("event", np.int32),  # event code of that machine
        ("source", np.int32),  # state code before the step
        ("target", np.int32),  # state code after it
        ("output", np.int32),  # output value index (>= 0), -1: none, -2: a handler's outputs
        ("priority", np.int32),  # the message's lane, 0 (LOW) .. 3 (URGENT)
        ("flags", np.int32),  # RECORD_FRONT: the step took a message from the front queue
        ("time", np.float64),  # the dispatcher's clock reading (``now``) for the step
    ]
)
"""One transition record as the dispatcher keeps it in its record ring (``read_records``):
ints and a time, 40 bytes; the payload and a handler's outputs are object references kept
beside it."""

RECORD_FRONT = 1
"""``RECORD_DTYPE['flags']``: the message came from the agent's front queue (a ``NextEvent``
or a postponed message replayed), not from its mailbox."""


@final
@attrs.frozen
class LatencySummary:
    """Percentiles of a ring's retained samples, in microseconds."""

    count: int
    """Samples retained (at most the ring's ``maxlen``)."""
    total: int
    """Samples ever taken."""
    p50: float
    p90: float
    p99: float
    max: float
    mean: float


@final
class LatencyRing:
    """The last ``maxlen`` latency samples (nanoseconds), deque-like and numpy-viewable."""

    __slots__ = ("_buf", "_n", "maxlen")

    def __init__(self, maxlen: int = 65_536) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be positive")
        self.maxlen = maxlen
        self._buf: npt.NDArray[np.int64] = np.zeros(maxlen, dtype=np.int64)
        self._n: npt.NDArray[np.int64] = np.zeros(1, dtype=np.int64)

    def append(self, value_ns: int) -> None:
        n = int(self._n[0])
        self._buf[n % self.maxlen] = value_ns
        self._n[0] = n + 1

    @property
    def total(self) -> int:
        """Samples ever appended."""
        return int(self._n[0])

    def __len__(self) -> int:
        return min(self.total, self.maxlen)

    def values(self) -> npt.NDArray[np.int64]:
        """The retained samples, oldest first (a copy)."""
        n, cap = self.total, self.maxlen
        if n <= cap:
            return self._buf[:n].copy()
        start = n % cap
        return np.concatenate([self._buf[start:], self._buf[:start]])

    def __array__(self, dtype: Any = None, copy: Any = None) -> npt.NDArray[Any]:
        out = self.values()
        return out if dtype is None else out.astype(dtype)

    def __iter__(self) -> Iterator[int]:
        return iter(self.values().tolist())

    def clear(self) -> None:
        self._n[0] = 0

    def summary(self) -> LatencySummary | None:
        """p50/p90/p99/max/mean of the retained samples in µs, or None if there are none."""
        values = self.values()
        if not len(values):
            return None
        p50, p90, p99 = np.percentile(values, [50, 90, 99]) / 1000.0
        return LatencySummary(
            len(values),
            self.total,
            float(p50),
            float(p90),
            float(p99),
            float(values.max()) / 1000.0,
            float(values.mean()) / 1000.0,
        )

    def buffers(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(buffer, counter) for the compiled dispatcher to write into."""
        return self._buf, self._n

    def __repr__(self) -> str:
        return f"LatencyRing(maxlen={self.maxlen}, total={self.total})"
