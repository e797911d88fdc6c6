# cython: language_level=3
"""Compiled hot path of the engine: the dispatcher, its mailboxes and the drain loop.

Layout: this module ``include``s small pieces (``decl.pxi``: the C structs;
``mailbox.pxi``: mailbox and message-chunk pools; ``idtable.pxi``: id -> slot table;
``handles.pxi``: Event, AgentContext, AgentRef; ``actions.pxi``: handler actions;
``dispatch.pxi``: the Dispatcher).
The pure-Python twin ``engine/_hotpath_py.py`` defines the behaviour; both run the same tests.
"""

cimport cython
from cpython.bool cimport PyBool_Check
from cpython.dict cimport PyDict_GetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.long cimport PyLong_AsLong
from cpython.number cimport PyIndex_Check
from cpython.object cimport PyObject, PyObject_RichCompareBool, Py_EQ
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_XDECREF
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.stdlib cimport calloc, malloc, realloc, free
from libc.string cimport memset, memcpy
from libc.math cimport INFINITY
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC


cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
    # with exc=NULL an out-of-range integer is clamped instead of raising
    Py_ssize_t PyNumber_AsSsize_t(object o, PyObject* exc) except? -1
    # the plain C API, errors as return codes (the caller checks them)
    Py_hash_t PyObject_Hash_raw "PyObject_Hash"(PyObject* o) noexcept
    int PyObject_RichCompareBool_raw "PyObject_RichCompareBool"(PyObject* a, PyObject* b,
                                                                int op) noexcept
    void PyErr_Clear() noexcept
    PyObject* PyErr_Occurred() noexcept
    PyObject* PyDict_GetItemWithError_raw "PyDict_GetItemWithError"(PyObject* d,
                                                                   PyObject* key) noexcept


cdef extern from "clock.h" nogil:
    int engine_clock_init()
    int64_t engine_now_ns()

cdef extern from "bigmem.h" nogil:
    void* big_grow(void* p, size_t old_size, size_t new_size)
    void big_free(void* p, size_t size)
    void prefetch_w(const void* p)

import mmap
import time
from collections import deque

import numpy as np

from engine.core._actions import (
    CancelTimer,
    EventTimeout,
    NextEvent,
    Postpone,
    Reply,
    Send,
    StateTimeout,
    Timer,
    Work,
)
from engine.hotpath._batch import as_int32, batch_arrays, resolve_gone, restore_ids
from engine.core._exceptions import (
    AgentExistsError,
    AgentNotFoundError,
    AgentStoppedError,
    EngineError,
    HandlerError,
    InvalidArgumentError,
    InvalidTransitionError,
    MailboxFullError,
    RuntimeBusyError,
    RuntimeNotRunningError,
    TenantLimitError,
    TurnDeadlineError,
    UnknownEventError,
)
from engine.core._machine import Machine
from engine.core._validate import brief
from engine.hotpath._metrics import (
    METRICS_DTYPE, RECORD_DTYPE, RECORD_FRONT, TENANT_DTYPE, LatencyRing,
)
from engine.core._types import (
    AgentStatus,
    as_priority,
    DeadLetter,
    DeadLetterReason,
    OutputBatch,
    OverflowPolicy,
    Priority,
    Step,
)

IMPLEMENTATION = "native"
CLOCK = "tsc" if engine_clock_init() else "clock_gettime"
"""What times latency samples, busy time and turn deadlines (see ``_native/clock.h``)."""
MAX_TENANTS = 0xFFFF
"""Tenants one runtime can hold at once (the index is kept in 16 bits per agent)."""
DEADLINE_REPORT = 0
DEADLINE_FAIL = 1
DEADLINE_STOP = 2

AGENT_DTYPE = np.dtype([
    ("state", np.int32), ("machine", np.uint16), ("flags", np.uint16), ("box", np.int32),
    ("epoch", np.uint32), ("since", np.float64), ("processed", np.int64),
], align=True)
"""Layout of the hot part of an agent record (the C struct ``Agent``): ``Dispatcher.agents``."""

AGENT_COLD_DTYPE = np.dtype([
    ("capacity", np.int32), ("generation", np.uint32), ("failed", np.int64),
], align=True)
"""Layout of the cold part of an agent record (the C struct ``AgentCold``)."""

cdef tuple _PRIORITIES = tuple(Priority)
cdef tuple _SMALL_INTS = (0, 1, 2, 3)  # CPython's cached small ints: one object each
cdef object _STATUS_IDLE = AgentStatus.IDLE
cdef object _STATUS_PROCESSING = AgentStatus.PROCESSING
cdef object _STATUS_ERROR = AgentStatus.ERROR
cdef object _STATUS_PAUSED = AgentStatus.PAUSED
cdef object _STATUS_STOPPED = AgentStatus.STOPPED
cdef object _HANDLER_FAILED = DeadLetterReason.HANDLER_FAILED
cdef object _INVALID = DeadLetterReason.INVALID_TRANSITION
cdef object _DROPPED = DeadLetterReason.DROPPED
cdef object _TERMINATED = DeadLetterReason.TERMINATED
cdef object _STOPPED_REASON = DeadLetterReason.STOPPED
cdef object _UNDELIVERABLE = DeadLetterReason.UNDELIVERABLE

include "decl.pxi"
include "mailbox.pxi"
include "idtable.pxi"
include "handles.pxi"
include "actions.pxi"
include "dispatch.pxi"

if AGENT_DTYPE.itemsize != sizeof(Agent):  # the numpy view and the C struct must agree
    raise ImportError(f"AGENT_DTYPE is {AGENT_DTYPE.itemsize} bytes, Agent is {sizeof(Agent)}")
if AGENT_COLD_DTYPE.itemsize != sizeof(AgentCold):
    raise ImportError(f"AGENT_COLD_DTYPE is {AGENT_COLD_DTYPE.itemsize} bytes, "
                      f"AgentCold is {sizeof(AgentCold)}")
if METRICS_DTYPE.itemsize != sizeof(Metric):
    raise ImportError(f"METRICS_DTYPE is {METRICS_DTYPE.itemsize} bytes, Metric is {sizeof(Metric)}")
if RECORD_DTYPE.itemsize != sizeof(Rec):
    raise ImportError(f"RECORD_DTYPE is {RECORD_DTYPE.itemsize} bytes, Rec is {sizeof(Rec)}")
