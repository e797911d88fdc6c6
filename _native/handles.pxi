# Objects Python code sees: Event and AgentContext (handler arguments), AgentRef (handle).


@cython.final
@cython.freelist(64)
cdef class Event:
    """An event as a handler sees it: ``name``, ``payload`` and ``priority``."""

    cdef readonly str name
    cdef readonly object payload
    cdef int _lane

    def __init__(self, str name, object payload=None, object priority=1):
        self.name = name
        self.payload = payload
        self._lane = _lane(priority)

    @property
    def priority(self):
        """The lane the event was queued in."""
        return _PRIORITIES[self._lane]

    def __repr__(self):
        return f"Event({self.name!r}, payload={self.payload!r}, priority={self.priority.name})"


@cython.final
@cython.freelist(64)
cdef class AgentContext:
    """What a handler knows about its agent: id, current state, data, machine."""

    cdef Dispatcher _d
    cdef int32_t _slot
    cdef uint32_t _gen

    def __init__(self):
        raise TypeError("AgentContext is created by the dispatcher")

    @property
    def agent_id(self):
        """The agent's id."""
        return self._d._ids[self._d._check(self._slot, self._gen)]

    @property
    def state(self):
        """The agent's state (during a handler: the state the event arrived in)."""
        cdef int32_t slot = self._d._check(self._slot, self._gen)
        return (<tuple>self._d._mt[self._d._ag[slot].mach].states)[self._d._ag[slot].state]

    @property
    def data(self):
        """The agent's data object (settable)."""
        return self._d._data[self._d._check(self._slot, self._gen)]

    @data.setter
    def data(self, value):
        self._d._data[self._d._check(self._slot, self._gen)] = value

    @property
    def machine(self):
        """The agent's machine definition."""
        cdef int32_t slot = self._d._check(self._slot, self._gen)
        return <object>self._d._mt[self._d._ag[slot].mach].machine


@cython.final
@cython.freelist(16)
cdef class AgentRef:
    """A fast handle on one agent: sends skip the id lookup. Stale once the agent is gone."""

    cdef Dispatcher _d
    cdef int32_t _slot
    cdef uint32_t _gen

    def __init__(self):
        raise TypeError("AgentRef is returned by spawn() or ref()")

    def send_nowait(self, event, payload=None, priority=1):
        """Queue ``event`` for this agent (see ``Runtime.send_nowait``)."""
        cdef Dispatcher d = self._d
        cdef int32_t slot = d._check(self._slot, self._gen)
        if d._ag[slot].flags & F_STOPPED:
            raise AgentStoppedError(d._ids[slot], "is stopped")
        d._enqueue(slot, d._event_code(slot, event), payload, _lane(priority), 0)

    @property
    def id(self):
        """The agent's id."""
        return self._d._ids[self._d._check(self._slot, self._gen)]

    @property
    def slot(self):
        """The dispatcher slot (what ``send_many_slots`` takes)."""
        return self._d._check(self._slot, self._gen)

    @property
    def alive(self):
        """False once the agent was terminated."""
        return self._d._cold[self._slot].gen == self._gen and (self._d._ag[self._slot].flags & F_LIVE) != 0

    @property
    def state(self):
        """The agent's current state name."""
        cdef int32_t slot = self._d._check(self._slot, self._gen)
        return (<tuple>self._d._mt[self._d._ag[slot].mach].states)[self._d._ag[slot].state]

    @property
    def status(self):
        """The agent's status; ``STOPPED`` once it was terminated."""
        if not self.alive:
            return _STATUS_STOPPED
        return self._d._status(self._slot)

    @property
    def data(self):
        """The agent's data object (settable)."""
        return self._d._data[self._d._check(self._slot, self._gen)]

    @data.setter
    def data(self, value):
        self._d._data[self._d._check(self._slot, self._gen)] = value

    def __eq__(self, other):
        if not isinstance(other, AgentRef):
            return NotImplemented
        cdef AgentRef o = <AgentRef>other
        return self._d is o._d and self._slot == o._slot and self._gen == o._gen

    def __hash__(self):
        return hash((id(self._d), self._slot, self._gen))

    def __repr__(self):
        if not self.alive:
            return f"<AgentRef slot={self._slot} (terminated)>"
        return f"<AgentRef {self.id!r} state={self.state!r}>"


cdef inline AgentRef _make_ref(Dispatcher d, int32_t slot):
    cdef AgentRef ref = AgentRef.__new__(AgentRef)
    ref._d = d
    ref._slot = slot
    ref._gen = d._cold[slot].gen
    return ref


cdef PyObject* _LANE_OBJECTS[8]  # Priority.LOW .. CRITICAL, then the ints 0 .. 3
for _i in range(4):
    _LANE_OBJECTS[_i] = <PyObject*>_PRIORITIES[_i]
    _LANE_OBJECTS[4 + _i] = <PyObject*>(<object>_SMALL_INTS[_i])


cdef inline int _lane(object priority) except -1:
    """A priority as a lane: anything integral (Priority, int, numpy integer) in 0..3."""
    cdef Py_ssize_t v = -1
    cdef int i
    for i in range(8):  # the usual objects, by identity: no number protocol
        if _LANE_OBJECTS[i] == <PyObject*>priority:
            return i & 3
    if PyIndex_Check(priority) and not PyBool_Check(priority):
        v = PyNumber_AsSsize_t(priority, NULL)  # clamps instead of raising on overflow
    if 0 <= v <= 3:
        return <int>v
    raise InvalidArgumentError(f"priority must be 0..3 (a Priority), got {priority!r}")
