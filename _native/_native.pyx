# cython: language_level=3
"""Compiled hot path of the engine: the dispatcher, its mailboxes and the drain loop.

Layout: this module ``include``s small pieces (``decl.pxi``: the C structs;
``mailbox.pxi``: message arena and mailbox pool; ``idtable.pxi``: id -> slot table;
``handles.pxi``: Event, AgentContext, AgentRef; ``dispatch.pxi``: the Dispatcher).
The pure-Python twin ``engine/_hotpath_py.py`` defines the behaviour; both run the same tests.
"""

cimport cython
from cpython.dict cimport PyDict_GetItem
from cpython.list cimport PyList_GET_ITEM
from cpython.long cimport PyLong_AsLong
from cpython.object cimport PyObject, PyObject_RichCompareBool, Py_EQ
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_XDECREF
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memset, memcpy

from collections import deque

import numpy as np

from engine._batch import batch_arrays
from engine._exceptions import (
    AgentExistsError,
    AgentNotFoundError,
    AgentStoppedError,
    HandlerError,
    InvalidArgumentError,
    InvalidTransitionError,
    MailboxFullError,
    RuntimeBusyError,
    UnknownEventError,
)
from engine._machine import Machine
from engine._types import (
    AgentStatus,
    DeadLetter,
    DeadLetterReason,
    OutputBatch,
    OverflowPolicy,
    Priority,
    Step,
)

IMPLEMENTATION = "native"

cdef tuple _PRIORITIES = tuple(Priority)
cdef object _STATUS_IDLE = AgentStatus.IDLE
cdef object _STATUS_PROCESSING = AgentStatus.PROCESSING
cdef object _STATUS_ERROR = AgentStatus.ERROR
cdef object _STATUS_STOPPED = AgentStatus.STOPPED
cdef object _HANDLER_FAILED = DeadLetterReason.HANDLER_FAILED
cdef object _INVALID = DeadLetterReason.INVALID_TRANSITION
cdef object _DROPPED = DeadLetterReason.DROPPED
cdef object _TERMINATED = DeadLetterReason.TERMINATED

include "decl.pxi"
include "mailbox.pxi"
include "idtable.pxi"
include "handles.pxi"
include "dispatch.pxi"
