# The Dispatcher: agent slots, four-lane mailboxes, the ready queue and the drain loop.
# Behaviour is defined by the twin (engine/_hotpath_py.py), whose docstring explains it; keep
# the two in step. The common step (no handler, no payload, no request, nobody recording) runs
# without touching a Python object; everything else takes the general path.

cdef enum:
    F_LIVE = 1
    F_QUEUED = 2
    F_DEAD = 4          # terminated while on the ready queue; released when popped
    F_ERROR = 8
    F_DROP_OLDEST = 16
    F_REJECT = 32       # bounded with the REJECT policy
    F_PAUSED = 64
    F_STOPPED = 128
    F_FRONT = 256       # has a front queue: self._front[slot]
    F_POSTPONED = 512   # has postponed messages: self._postponed[slot]
    F_BACKOFF = 1024    # waiting out a restart backoff (supervision): not stepped
    F_DIRTY = 2048      # changed since the last take_dirty() (the commit log reads it)
    F_HOLD = 64 | 128 | 1024   # paused, stopped or in backoff: not stepped
    F_STATUS_HELD = 8 | 64 | 128 | 256  # status shown is ERROR, PAUSED or STOPPED, or a front
                        # queue keeps it PROCESSING: mail arriving or leaving changes nothing


cdef inline double _monotonic() noexcept nogil:
    """``time.monotonic()`` without the Python call (the same clock on Linux)."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef inline int64_t _now_ns() noexcept nogil:
    """Nanoseconds for durations (see clock.h: the time-stamp counter where it is usable)."""
    return engine_now_ns()


cdef inline void _ring_push(Ring* r, int64_t value) noexcept nogil:
    r.buf[r.n[0] % r.cap] = value
    r.n[0] += 1


cdef int _bind_ring(Ring* r, object ring) except -1:
    cdef int64_t[::1] buf
    cdef int64_t[::1] n
    b, c = ring.buffers()
    buf = b
    n = c
    r.buf = &buf[0]
    r.n = &n[0]
    r.cap = buf.shape[0]
    return 0


cdef int _grow(void** p, size_t old_n, size_t new_n, size_t size) except -1:
    """Grow an array of ``old_n`` items to ``new_n`` (see bigmem.h); new items are undefined."""
    cdef void* q = big_grow(p[0], old_n * size, new_n * size)
    if q == NULL:
        raise MemoryError()
    p[0] = q
    return 0


@cython.final
@cython.no_gc_clear  # __dealloc__ reads the agent records, which live in self._agents
cdef class Dispatcher:
    """Agent slots, four-lane mailboxes, the ready queue and the drain loop.

    Args:
        sink: Called with one ``OutputBatch`` per drain; ``None`` discards outputs.
        dead_letters: Where dead letters are appended (a bounded deque is typical).
        budget: Messages one agent may process per turn before the next ready agent runs.
        output_buffer: Outputs buffered before a batch is flushed mid-run (between turns).
        metrics: Keep per-agent busy time, mailbox high-water mark, postponed and restart
            counts (``metrics``); without it the drain loop does none of that work.
        sample_every: Time every Nth step (``step_ring``) and every Nth message's wait in
            its mailbox (``wait_ring``); 0 turns sampling off.
        ring_size: Samples each latency ring keeps.
    """

    # metrics
    cdef readonly bint metrics_enabled
    cdef readonly int32_t sample_every
    cdef readonly object step_ring
    cdef readonly object wait_ring
    cdef Ring _step_r
    cdef Ring _wait_r
    cdef int32_t _enq_left
    cdef int32_t _step_left
    cdef Py_ssize_t _ring_size
    cdef object _mx_arr
    cdef Metric* _mx
    cdef dict _last_error
    cdef dict _tracked
    cdef dict _tracked_machines
    # configuration, records and hooks
    cdef object _sink
    cdef bint _has_sink
    cdef public object dead_letters
    cdef public Py_ssize_t dead_letter_count
    cdef public list retired
    cdef public double now
    cdef object _clock        # the runtime's clock, read when a status changes outside a run
    cdef bint _mono           # the clock is time.monotonic: read it in C
    cdef bint _now_fresh      # self.now was read for this call (send_many_slots)
    cdef public bint work_enabled  # a host runs Work actions (open_runtime); else they fail
    cdef public bint deliver_sends  # False: Send actions go nowhere (a replay feeds them)
    cdef public object router       # route(send) -> bool for Send actions not kept here
    cdef public bint route_all      # every Send action goes to router first (else: unknown ids)
    cdef list _out_retired    # (output count, slot, agent id) for agents terminated while
                              # their outputs wait in the buffer
    cdef list _mt_retired     # machine tables replaced by a larger copy (see register)
    cdef PyObject* _rel[RELEASE]  # payload references to drop (_release_later)
    cdef int _nrel
    cdef public object on_wake
    cdef public object on_missing  # an id not resident: wake it from a store (hibernation)
    cdef public object on_request
    cdef public object on_actions
    cdef public object on_failure
    cdef object _on_record
    cdef object _on_step
    cdef public object on_overflow
    cdef bint _hooked         # on_record or on_step set: every step takes the general path
    cdef int32_t _budget
    cdef Py_ssize_t _out_limit
    cdef bint _running
    # machines
    cdef dict _machine_index
    cdef list _machines
    cdef list _keep
    cdef list _values
    cdef MachTab* _mt
    cdef int32_t _n_mach
    cdef int32_t _mt_cap
    # agent slots: one Agent record each (in a numpy array), its flags included, so sending
    # to an agent and stepping it touch the one record
    cdef int32_t _n_slots
    cdef int32_t _slot_cap
    cdef int32_t _free_slot
    cdef object _agents
    cdef Agent* _ag
    cdef object _colds
    cdef AgentCold* _cold
    cdef object _dropped_arr  # created with the first bounded mailbox
    cdef int64_t* _dropped
    cdef list _ids
    cdef list _data
    cdef IdTable _tab
    cdef dict _front       # slot -> deque of (event, payload, lane, request)
    cdef dict _postponed   # slot -> list of the same
    # mailboxes
    cdef ChunkPool _chunks
    cdef BoxPool _pool
    # ready queue: a ring with room for every slot (a slot is on it at most once)
    cdef int32_t* _ready
    cdef Py_ssize_t _rhead
    cdef Py_ssize_t _rlen
    # output buffer
    cdef int32_t* _oslot
    cdef int32_t* _ocode
    cdef int64_t* _ostep      # the agent's step (processed count after it) of each output
    cdef Py_ssize_t _olen
    cdef Py_ssize_t _ocap
    cdef list _extras
    # tenants (engine.runtime names them; here they are indexes, 0 the default)
    cdef readonly bint tenanted   # set by the first set_tenant: run() schedules fairly
    cdef TenantRec* _tn
    cdef int32_t _n_tn
    cdef int32_t _tn_cap
    cdef list _tn_names
    cdef list _tn_delayed         # per tenant: deque of held-back messages, or None
    cdef list _tn_rings           # per tenant: (step ring, wait ring), or None
    cdef int32_t* _act            # ring of tenants with ready agents, in round order
    cdef int32_t _ahead
    cdef int32_t _alen
    cdef int32_t _cur             # the tenant being served (a run may end inside its turn)
    cdef object _tof_arr          # tenant index per slot (uint16), once tenanted
    cdef uint16_t* _tof
    cdef int32_t* _rnext          # next slot on its tenant's ready queue
    cdef public object on_delay   # on_delay(tenant, due): call release_delayed at due
    cdef bint _releasing          # release_delayed is queueing: the tenant's limits passed
    cdef int32_t _n_capped        # tenants with max_queued
    cdef int32_t _turn_slot       # the slot taking a turn (-1: none)
    cdef int32_t _tq              # its tenant, if that tenant keeps a queued count, else -1
    cdef int32_t _step_tenant     # the tenant of the agent whose handler runs
    # transition records: a ring of Rec (a numpy array) with the payload and a handler's
    # outputs beside each; off (no ring) until record(capacity)
    cdef int64_t _rseq            # records ever made (steps committed), kept or not
    cdef int64_t _rstart          # the oldest record this ring was ever given
    cdef Py_ssize_t _rcap         # records the ring keeps, 0 = not recording
    cdef Py_ssize_t _rpos         # where record _rseq goes
    cdef object _rec_arr
    cdef Rec* _rec
    cdef PyObject** _rpay         # payload per record (owned; NULL = None)
    cdef PyObject** _rext         # a handler's outputs (a tuple, owned) per record, or NULL
    cdef Py_ssize_t _rrefs        # references _rpay and _rext hold (0: both are all NULL)
    cdef object _rgone            # deque of (seq, slot, id): agents terminated while recording
    cdef int32_t _rflags          # RECORD_FRONT while a front-queue message is stepped

    def __cinit__(self):
        self.deliver_sends = True
        self._free_slot = -1
        self._cur = -1
        self._turn_slot = -1
        self._tq = -1
        idt_init(&self._tab, 8)

    def __init__(self, *, sink=None, dead_letters=None, int budget=64,
                 Py_ssize_t output_buffer=65536, bint metrics=False, int32_t sample_every=0,
                 Py_ssize_t ring_size=65536):
        if budget < 1 or output_buffer < 1:
            raise InvalidArgumentError("budget and output_buffer must be positive")
        if sample_every < 0 or ring_size < 1:
            raise InvalidArgumentError("sample_every must be >= 0 and ring_size positive")
        self.metrics_enabled = metrics
        self.sample_every = sample_every
        self._enq_left = self._step_left = sample_every
        self._ring_size = ring_size
        self.step_ring = LatencyRing(ring_size)
        self.wait_ring = LatencyRing(ring_size)
        _bind_ring(&self._step_r, self.step_ring)
        _bind_ring(&self._wait_r, self.wait_ring)
        self._mx_arr = np.zeros(0, dtype=METRICS_DTYPE)
        self._last_error = {}
        self._tracked = {}
        self._tracked_machines = {}
        self._sink = sink
        self._has_sink = sink is not None
        self.dead_letters = deque() if dead_letters is None else dead_letters
        self.dead_letter_count = 0
        self.retired = [0, 0, 0]
        self._budget = budget
        self._out_limit = output_buffer
        self._machine_index = {}
        self._machines = []
        self._keep = []
        self._values = []
        self._out_retired = []
        self._mt_retired = []
        self._ids = []
        self._data = []
        self._extras = []
        self._front = {}
        self._postponed = {}
        self._agents = np.zeros(0, dtype=AGENT_DTYPE)
        self._colds = np.zeros(0, dtype=AGENT_COLD_DTYPE)
        self._tn_names = []
        self._tn_delayed = []
        self._tn_rings = []
        self._rgone = deque()

    def __dealloc__(self):
        cdef int32_t slot, b
        cdef Box* box
        cdef Msg m
        for slot in range(self._n_slots):  # release payloads still queued
            b = self._ag[slot].box
            if b < 0 or not (self._ag[slot].flags & F_LIVE):
                continue
            box = &self._pool.boxes[b]
            while box.count:
                m = lane_pop(box, &self._chunks, top_lane(box))
                Py_XDECREF(m.payload)
        big_free(self._chunks.chunks, self._chunks.cap * sizeof(Chunk))
        big_free(self._chunks.st_time, self._chunks.st_cap * sizeof(int64_t))
        big_free(self._chunks.st_req, self._chunks.st_cap * sizeof(int32_t))
        big_free(self._chunks.st_free, self._chunks.st_cap * sizeof(int32_t))
        big_free(self._chunks.next, self._chunks.cap * sizeof(int32_t))
        big_free(self._chunks.free, self._chunks.cap * sizeof(int32_t))
        big_free(self._pool.boxes, self._pool.cap * sizeof(Box))
        big_free(self._pool.free, self._pool.cap * sizeof(int32_t))
        big_free(self._tab.cells, (self._tab.mask + 1) * sizeof(int32_t))
        big_free(self._tab.hashes, self._tab.hcap * sizeof(uint32_t))
        big_free(self._ready, self._slot_cap * sizeof(int32_t))
        big_free(self._oslot, self._ocap * sizeof(int32_t))
        big_free(self._ocode, self._ocap * sizeof(int32_t))
        big_free(self._ostep, self._ocap * sizeof(int64_t))
        free(self._mt)
        big_free(self._tn, self._tn_cap * sizeof(TenantRec))
        big_free(self._act, self._tn_cap * sizeof(int32_t))
        big_free(self._rnext, self._slot_cap * sizeof(int32_t))
        for old in self._mt_retired:
            free(<void*><size_t>old)
        self._drop_records()

    @property
    def clock(self):
        """The clock (seconds) read when a status changes outside a run; None: ``now`` only."""
        return self._clock

    @clock.setter
    def clock(self, clock):
        self._clock = clock
        self._mono = clock is time.monotonic

    cdef inline double _status_time(self) except? -1.0:
        """The time to stamp on a status change: ``now`` inside a run (fresh to one batch)
        or a send_many call, else a clock reading (a send may come after a long idle)."""
        if self._running or self._now_fresh or self._clock is None:
            return self.now
        return self._read_clock()

    cdef double _read_clock(self) except? -1.0:
        self.now = _monotonic() if self._mono else float(self._clock())
        return self.now

    @property
    def on_record(self):
        """Called as ``(agent_id, from_state, event, to_state, outputs)`` after every step."""
        return self._on_record

    @on_record.setter
    def on_record(self, hook):
        self._on_record = hook
        self._hooked = self._on_record is not None or self._on_step is not None

    @property
    def on_step(self):
        """Called as ``(agent_id, state, event)`` before every step."""
        return self._on_step

    @on_step.setter
    def on_step(self, hook):
        self._on_step = hook
        self._hooked = self._on_record is not None or self._on_step is not None

    # -- machines ------------------------------------------------------------------------

    def register(self, machine):
        """Register ``machine`` (once) and return its index in this dispatcher."""
        cdef MachTab* mt
        idx = self._machine_index.get(id(machine))
        if idx is not None:
            return idx
        if not isinstance(machine, Machine):
            raise TypeError(f"expected an engine.Machine, got {type(machine)!r}")
        # each machine's outputs get codes of their own: values equal across types (True, 1,
        # 1.0) or across machines stay distinct objects
        base = len(self._values)
        out = np.array([base + c if c >= 0 else -1 for c in machine.output_table.tolist()],
                       dtype=np.int32)
        if self._n_mach == 0xFFFF:  # Agent.mach is 16 bits
            raise InvalidArgumentError("a runtime holds at most 65535 machines")
        if self._n_mach == self._mt_cap:
            # A handler or instrument may register a machine in the middle of a step whose
            # frame holds a MachTab pointer: the old table is copied, never freed before the
            # dispatcher (entries never change once written, so a stale copy stays right).
            mt = <MachTab*>malloc((self._mt_cap * 2 + 4) * sizeof(MachTab))
            if mt == NULL:
                raise MemoryError()
            if self._mt != NULL:
                memcpy(mt, self._mt, self._n_mach * sizeof(MachTab))
                self._mt_retired.append(<size_t>self._mt)
            self._mt = mt
            self._mt_cap = self._mt_cap * 2 + 4
        cdef const int32_t[::1] nxt = machine.next_table
        cdef const int32_t[::1] outv = out
        cdef const int32_t[::1] hnd = machine.handler_table
        mt = &self._mt[self._n_mach]
        mt.n_states = len(machine.states)
        mt.n_events = len(machine.events)
        mt.next = &nxt[0] if len(nxt) else NULL
        mt.out = &outv[0] if len(outv) else NULL
        mt.handler = &hnd[0] if len(hnd) else NULL
        mt.ignore = machine.unhandled == "ignore"
        mt.machine = <PyObject*>machine
        mt.handlers = <PyObject*>machine.handlers
        mt.event_index = <PyObject*>machine.event_index
        mt.events = <PyObject*>machine.events
        mt.states = <PyObject*>machine.states
        self._values.extend(machine.outputs)
        self._machines.append(machine)
        self._keep.append((out, machine.next_table, machine.handler_table, machine.handlers,
                           machine.event_index, machine.events, machine.states))
        idx = self._n_mach
        self._machine_index[id(machine)] = idx
        self._n_mach += 1
        return idx

    @property
    def output_values(self):
        """Machine outputs, indexed by non-negative output codes (each machine's own, in
        registration order; equal values of different machines or types stay apart)."""
        return self._values

    # -- agents --------------------------------------------------------------------------

    cdef int _grow_slots(self) except -1:
        cdef int32_t old = self._slot_cap
        cdef int32_t new = old * 2 if old else 64  # a power of two: the ready ring masks
        cdef int32_t* ring = NULL
        cdef Py_ssize_t i
        cdef uint8_t[::1] raw
        cdef int64_t[::1] counts
        # the ready ring is laid out again in order, starting at 0
        _grow(<void**>&ring, 0, new, sizeof(int32_t))
        for i in range(0 if self.tenanted else self._rlen):
            ring[i] = self._ready[(self._rhead + i) % old]
        big_free(self._ready, old * sizeof(int32_t))
        self._ready = ring
        self._rhead = 0
        # records live in an anonymous mapping of their own, which numpy views keep alive
        grown = np.frombuffer(mmap.mmap(-1, new * sizeof(Agent)), dtype=AGENT_DTYPE)
        grown[:old] = self._agents
        raw = grown.view(np.uint8)
        self._agents = grown
        self._ag = <Agent*>&raw[0]
        grown = np.frombuffer(mmap.mmap(-1, new * sizeof(AgentCold)), dtype=AGENT_COLD_DTYPE)
        grown[:old] = self._colds
        raw = grown.view(np.uint8)
        self._colds = grown
        self._cold = <AgentCold*>&raw[0]
        if self._dropped_arr is not None:
            self._dropped_arr = np.concatenate([self._dropped_arr, np.zeros(new - old, np.int64)])
            counts = self._dropped_arr
            self._dropped = &counts[0]
        if self.metrics_enabled:
            grown = np.zeros(new, dtype=METRICS_DTYPE)
            grown[:old] = self._mx_arr
            raw = grown.view(np.uint8)
            self._mx_arr = grown
            self._mx = <Metric*>&raw[0]
        if self.tenanted:
            self._grow_tenant_slots(old, new)
        self._slot_cap = new
        return 0

    cdef int _grow_tenant_slots(self, int32_t old, int32_t new) except -1:
        cdef uint16_t[::1] tof
        if new == 0:  # (no slots yet: _grow_slots calls again)
            return 0
        _grow(<void**>&self._rnext, old, new, sizeof(int32_t))
        grown = np.zeros(new, dtype=np.uint16)
        if old:
            grown[:old] = self._tof_arr
        tof = grown
        self._tof_arr = grown
        self._tof = &tof[0]
        return 0

    cdef int _count_drops(self) except -1:
        """Create the dropped counters (when the first bounded mailbox appears)."""
        cdef int64_t[::1] counts
        if self._dropped_arr is None:
            self._dropped_arr = np.zeros(self._slot_cap, dtype=np.int64)
            counts = self._dropped_arr
            self._dropped = &counts[0]
        return 0

    def spawn(self, machine, agent_id, data=None, *, capacity=0, policy=0, state=None,
              tenant=0):
        """Create an agent in ``state`` (default: the machine's initial state), in tenant
        ``tenant`` (an index given to ``set_tenant``; 0 is the default tenant)."""
        cdef int32_t m = self.register(machine)
        cdef int32_t s = machine.state_code(machine.initial if state is None else state)
        cdef int32_t slot
        cdef Agent* ag
        if not isinstance(capacity, int) or capacity < 0 or capacity > 0x7FFFFFFF:
            raise InvalidArgumentError(
                f"capacity must be an int >= 0 (0 = unbounded): {capacity!r}")
        try:
            policy = OverflowPolicy(policy)
        except ValueError:
            raise InvalidArgumentError(f"unknown overflow policy {policy!r}") from None
        cdef uint32_t h
        if agent_id is None:
            raise InvalidArgumentError(
                "None is not an agent id (subscribe(None) and statistics() mean every agent)")
        try:
            h = idt_hash(agent_id)
        except Exception as exc:
            raise InvalidArgumentError(f"agent id {brief(agent_id)} is not hashable: {exc!r}"
                                       ) from exc
        try:
            found = idt_find(&self._tab, self._ids, agent_id, h)
        except Exception as exc:
            raise InvalidArgumentError(f"agent id {brief(agent_id)} cannot be compared: {exc!r}"
                                       ) from exc
        if found >= 0:
            raise AgentExistsError(agent_id)
        # (checked after the id's __hash__ and __eq__ ran: they could have removed it)
        if tenant and not (type(tenant) is int and 0 < tenant < self._n_tn
                           and self._tn[<int32_t>tenant].live
                           and not self._tn[<int32_t>tenant].dropped):
            raise InvalidArgumentError(f"no tenant with index {brief(tenant)}")
        if self._free_slot >= 0:
            slot = self._free_slot
            self._free_slot = self._ag[slot].state
            self._ids[slot] = agent_id
            self._data[slot] = data
        else:
            if self._n_slots == self._slot_cap:
                self._grow_slots()
            slot = self._n_slots
            self._ids.append(agent_id)
            self._data.append(data)
            self._n_slots += 1
        ag = &self._ag[slot]
        ag.state = s
        ag.mach = m
        ag.box = -1
        self._cold[slot].cap = capacity
        ag.epoch = 0
        ag.since = self.now
        ag.processed = self._cold[slot].failed = 0
        if self.metrics_enabled:
            memset(&self._mx[slot], 0, sizeof(Metric))
        if capacity:
            self._count_drops()
            self._dropped[slot] = 0
        self._ag[slot].flags = F_LIVE | F_DIRTY | (
            (F_DROP_OLDEST if policy == OverflowPolicy.DROP_OLDEST else F_REJECT) if capacity else 0)
        idt_insert(&self._tab, h, slot)
        if self.tenanted:
            self._tof[slot] = <uint16_t>tenant
            self._tn[<int32_t>tenant].agents += 1
        return _make_ref(self, slot)

    def terminate(self, agent_id):
        """Remove an agent; its queued and postponed mail becomes TERMINATED dead letters.

        Returns:
            How many messages were dead-lettered.
        """
        cdef int32_t slot = self._slot_of(agent_id)
        cdef Agent* ag
        cdef uint16_t queued = self._ag[slot].flags & F_QUEUED
        cdef bint counted = self.tenanted  # in its tenant's agents (tenancy may start below)
        agent_id = self._ids[slot]  # the stored id (the argument only compares equal)
        # unreachable first: the dead letters below run instruments, which may send to it
        idt_remove(&self._tab, slot)
        self._cold[slot].gen += 1
        self._ag[slot].flags = (self._ag[slot].flags & (F_FRONT | F_POSTPONED)) | F_DEAD
        if self._olen:  # its outputs still in the buffer keep its id
            self._out_retired.append((self._olen, slot, agent_id))
        n = self._evict(slot, _TERMINATED)
        ag = &self._ag[slot]
        self.retired[0] += ag.processed
        self.retired[1] += self._cold[slot].failed
        if self.tenanted:
            if counted:
                self._tn[self._tof[slot]].agents -= 1
            self._tn[self._tof[slot]].retired_processed += ag.processed
            self._tn[self._tof[slot]].retired_failed += self._cold[slot].failed
        ag.processed = self._cold[slot].failed = 0
        if self._dropped != NULL:
            self.retired[2] += self._dropped[slot]
            self._dropped[slot] = 0
        self._last_error.pop(slot, None)
        self._tracked.pop(slot, None)
        if self._rcap:  # its records keep its id
            self._forget_records(self._rgone)
            self._rgone.append((self._rseq, slot, agent_id))
        self._ids[slot] = None
        self._data[slot] = None
        if queued:  # on the ready queue: released when run() pops it
            self._ag[slot].flags = F_DEAD | F_QUEUED
        else:
            self._release(slot)
        return n

    def requeue(self, agent_id, entries):
        """Queue ``(event code, payload, lane, request)`` entries for ``agent_id`` as
        ``take_mail`` returned them (a rollback keeping its mail): past its tenant's limits,
        which admitted them once already."""
        cdef int32_t slot = self._slot_of(agent_id)
        for ev, payload, lane, request in entries:
            self._releasing = True
            try:
                self._enqueue(slot, ev, payload, lane, request)
            finally:
                self._releasing = False

    def take_mail(self, agent_id):
        """Remove and return everything queued or postponed for ``agent_id``, in processing
        order (front queue, lanes from the highest, postponed), as ``(event code, payload,
        lane, request)``: nothing is dead-lettered (a rollback moves it)."""
        cdef int32_t slot = self._slot_of(agent_id)
        self._ag[slot].flags |= F_DIRTY
        return self._take(slot)

    cdef list _take(self, int32_t slot):
        cdef Box* box
        cdef Msg m
        cdef int lane
        cdef list taken = list(self._front.pop(slot, ()))
        while self._ag[slot].box >= 0:  # (nothing can be queued meanwhile: no Python runs)
            box = &self._pool.boxes[self._ag[slot].box]
            lane = top_lane(box)
            m = lane_pop(box, &self._chunks, lane)
            if m.event & STAMPED:
                unstamp(&self._chunks, &m)
            if self.tenanted and self._tn[self._tof[slot]].counting:
                self._tn[self._tof[slot]].queued -= 1
            if box.count == 0:
                box_free(&self._pool, self._ag[slot].box)
                self._ag[slot].box = -1
            taken.append((m.event, take(m.payload), lane, m.request))
        taken += self._postponed.pop(slot, [])
        self._ag[slot].flags &= ~(F_FRONT | F_POSTPONED)
        return taken

    cdef Py_ssize_t _evict(self, int32_t slot, object reason) except -1:
        """Dead-letter everything queued or postponed for ``slot``, in processing order."""
        cdef MachTab* mt = &self._mt[self._ag[slot].mach]
        agent_id = self._ids[slot]
        cdef list evicted = self._take(slot)
        error = AgentStoppedError(agent_id, "was " + reason.value) if evicted else None
        for ev, payload, lane, request in evicted:
            self._dead_letter(agent_id, mt, ev, payload, lane, reason, None, None)
            if request:
                self._answer(request, False, error)
        return len(evicted)

    cdef void _release(self, int32_t slot) noexcept:
        self._ag[slot].flags = 0
        self._ag[slot].state = self._free_slot
        self._free_slot = slot

    def ref(self, agent_id):
        """Return an ``AgentRef`` for a live agent."""
        return _make_ref(self, self._slot_of(agent_id))

    def __len__(self):
        return self._tab.live

    def __contains__(self, agent_id):
        try:
            return idt_lookup(&self._tab, self._ids, agent_id) >= 0
        except Exception:
            return False

    def agent_at(self, int32_t slot):
        """The id of the agent in ``slot``.

        Raises:
            AgentNotFoundError: The slot holds no live agent.
        """
        if slot < 0 or slot >= self._n_slots or not (self._ag[slot].flags & F_LIVE):
            raise AgentNotFoundError(f"<slot {slot}>")
        return self._ids[slot]

    def agent_ids(self):
        """Ids of live agents, in slot order."""
        cdef int32_t slot
        return [self._ids[slot] for slot in range(self._n_slots) if self._ag[slot].flags & F_LIVE]

    def slots(self, agent_ids):
        """Return the slots of ``agent_ids`` as an int32 array (for ``send_many_slots``)."""
        cdef Py_ssize_t i, n = len(agent_ids)
        out = np.empty(n, dtype=np.int32)
        cdef int32_t[::1] mv = out
        if isinstance(agent_ids, np.ndarray):
            agent_ids = agent_ids.tolist()
        for i in range(n):
            mv[i] = self._slot_of(agent_ids[i])
        return out

    # -- lifecycle controls (used by the runtime: pause/resume, supervision) -------------

    def pause(self, agent_id):
        """Stop stepping an agent (status PAUSED); it keeps receiving mail."""
        cdef int32_t slot = self._slot_of(agent_id)
        cdef uint16_t f = self._ag[slot].flags
        if not (f & (F_PAUSED | F_ERROR | F_STOPPED)):  # the status shown changes
            self._ag[slot].since = self._status_time()
        self._ag[slot].flags = f | F_PAUSED | F_DIRTY

    def resume(self, agent_id):
        """Step a paused agent again (an agent in a restart backoff still waits it out)."""
        cdef int32_t slot = self._slot_of(agent_id)
        cdef uint16_t f = self._ag[slot].flags
        if f & F_PAUSED and not (f & (F_ERROR | F_STOPPED)):
            self._ag[slot].since = self._status_time()
        self._ag[slot].flags = (f & ~F_PAUSED) | F_DIRTY
        self._wake(slot)

    def paused(self, agent_id):
        """True while the agent is paused (by ``pause``; a restart backoff is not a pause)."""
        return (self._ag[self._slot_of(agent_id)].flags & F_PAUSED) != 0

    def backoff(self, agent_id):
        """Hold an agent until ``restart`` (supervision's backoff); ``pause``/``resume``
        during it are kept apart from it."""
        self._ag[self._slot_of(agent_id)].flags |= F_BACKOFF | F_DIRTY

    def stop(self, agent_id):
        """Stop an agent for good: its mail becomes STOPPED dead letters and it takes no more
        (sends raise ``AgentStoppedError``); it stays registered until terminated."""
        cdef int32_t slot = self._slot_of(agent_id)
        self._ag[slot].flags = (self._ag[slot].flags | F_STOPPED | F_DIRTY) & ~(F_ERROR | F_BACKOFF)
        self._ag[slot].since = self._status_time()
        return self._evict(slot, _STOPPED_REASON)

    def restart(self, agent_id, state=None):
        """Put an agent back in ``state`` (default: initial), clearing ERROR; its mail stays
        and its postponed events are replayed first."""
        cdef int32_t slot = self._slot_of(agent_id)
        if self._ag[slot].flags & F_STOPPED:
            raise AgentStoppedError(agent_id, "is stopped")
        machine = <object>self._mt[self._ag[slot].mach].machine
        self._ag[slot].state = machine.state_code(machine.initial if state is None else state)
        self._ag[slot].epoch += 1
        if self.metrics_enabled:
            self._mx[slot].restarts += 1
        self._ag[slot].flags = (self._ag[slot].flags & ~(F_ERROR | F_BACKOFF)) | F_DIRTY
        self._ag[slot].since = self._status_time()
        self._replay(slot, None, True)
        self._wake(slot)

    cdef int _wake(self, int32_t slot) except -1:
        """Put ``slot`` on the ready queue if it has mail and may run."""
        cdef uint16_t f = self._ag[slot].flags
        if (self._ag[slot].box >= 0 or f & F_FRONT) and not (f & (F_QUEUED | F_HOLD)):
            self._ag[slot].flags = f | F_QUEUED
            self._push_ready(slot)
            if self._rlen == 1 and self.on_wake is not None:
                self.on_wake()
        return 0

    cdef inline void _push_ready(self, int32_t slot) noexcept:
        """Append ``slot`` to the ready queue: the ring, or under tenancy its tenant's."""
        if self.tenanted:
            self._tpush(slot)
        else:
            self._ready[(self._rhead + self._rlen) & (self._slot_cap - 1)] = slot
        self._rlen += 1

    cdef void _tpush(self, int32_t slot) noexcept:
        cdef int32_t t = self._tof[slot]
        cdef TenantRec* tn = &self._tn[t]
        self._rnext[slot] = -1
        if tn.tail >= 0:
            self._rnext[tn.tail] = slot
        else:
            tn.head = slot
        tn.tail = slot
        tn.nready += 1
        if not tn.active:
            tn.active = 1
            self._act[(self._ahead + self._alen) % self._tn_cap] = t
            self._alen += 1

    # -- sending -------------------------------------------------------------------------

    def send_nowait(self, agent_id, event, payload=None, priority=1):
        """Queue ``event`` for ``agent_id`` at ``priority``; see ``Runtime.send_nowait``."""
        cdef int32_t slot = self._slot_of(agent_id)
        if self._ag[slot].flags & F_STOPPED:
            raise AgentStoppedError(agent_id, "is stopped")
        self._enqueue(slot, self._event_code(slot, event), payload, _lane(priority), 0)

    def send_request(self, agent_id, event, payload, priority, int32_t request):
        """``send_nowait`` with a request id: ``on_request`` reports the message's answer."""
        cdef int32_t slot = self._slot_of(agent_id)
        if self._ag[slot].flags & F_STOPPED:
            raise AgentStoppedError(agent_id, "is stopped")
        self._enqueue(slot, self._event_code(slot, event), payload, _lane(priority), request)

    @cython.boundscheck(False)  # every index is below n, the length of each array
    @cython.wraparound(False)
    def send_many(self, agent_ids, events, priorities=1, payloads=None):
        """Queue many messages by agent id; see ``Runtime.send_many``.

        Ids, names, priorities and payloads are converted in one pass (ids through the id
        table, names through each agent's machine) and every message is checked before any
        is queued.
        """
        # private copies of the lists: an id's __hash__ or __eq__ (any Python) could change
        # the caller's lists while this loop reads them (payloads, too many to copy, are read
        # with a size check in _enqueue_many)
        cdef list ids = list(_as_list(agent_ids))
        cdef Py_ssize_t i, n = len(ids)
        cdef list names = None
        cdef list lanes_in = None
        cdef list pl = _payloads(payloads, n)
        cdef int32_t slot, code, lane = -1
        cdef const int32_t[::1] codes_in
        cdef const int32_t[::1] prios_in
        cdef bint coded = isinstance(events, np.ndarray) and events.dtype.kind in "iu"
        cdef bint prioritized = isinstance(priorities, np.ndarray) and priorities.ndim == 1
        cdef MachTab* mt
        # names are few distinct objects repeated: an identity cache (of this call's own copy
        # of the list, so every object stays alive) skips their lookups
        cdef PyObject* obj
        cdef size_t h
        cdef bint bounded_seen = False
        cdef PyObject* seen_name[CACHE]
        cdef int32_t seen_mach[CACHE]
        cdef int32_t seen_code[CACHE]
        memset(seen_name, 0, sizeof(seen_name))
        out = np.empty((3, n), dtype=np.int32)
        cdef int32_t[:, ::1] o = out
        if coded:
            codes_in = as_int32("events", events)
            if codes_in.shape[0] != n:
                raise InvalidArgumentError(f"{codes_in.shape[0]} events for {n} agents")
        else:
            names = list(_as_list(events))
            if len(names) != n:
                raise InvalidArgumentError(f"{len(names)} events for {n} agents")
        if prioritized:
            prios_in = as_int32("priorities", priorities)
            if prios_in.shape[0] != n:
                raise InvalidArgumentError(f"{prios_in.shape[0]} priorities for {n} agents")
        elif isinstance(priorities, (list, tuple)):
            lanes_in = list(priorities)
            if len(lanes_in) != n:
                raise InvalidArgumentError(f"{len(lanes_in)} priorities for {n} agents")
        else:
            lane = _lane(priorities)
        for i in range(n):
            slot = self._slot_of(<object>PyList_GET_ITEM(ids, i))
            if self._ag[slot].flags & (F_STOPPED | F_REJECT):
                if self._ag[slot].flags & F_STOPPED:
                    raise AgentStoppedError(self._ids[slot], "is stopped")
                bounded_seen = True
            if coded:
                code = codes_in[i]
                mt = &self._mt[self._ag[slot].mach]
                if code < 0 or code >= mt.n_events:
                    raise UnknownEventError((<object>mt.machine).name, code)
            else:
                obj = PyList_GET_ITEM(names, i)
                h = ((<size_t>obj >> 4) ^ self._ag[slot].mach) & (CACHE - 1)
                if seen_name[h] == obj and seen_mach[h] == self._ag[slot].mach:
                    code = seen_code[h]
                else:
                    code = self._event_code(slot, <object>obj)
                    seen_name[h], seen_mach[h], seen_code[h] = obj, self._ag[slot].mach, code
            if prioritized:
                lane = prios_in[i]
                if lane < 0 or lane > 3:
                    raise InvalidArgumentError(f"priority must be 0..3, got {lane}")
            elif lanes_in is not None:
                lane = _lane(<object>PyList_GET_ITEM(lanes_in, i))
            o[0, i] = slot
            o[1, i] = code
            o[2, i] = lane
        self._queue_checked(o[0], o[1], o[2], pl, bounded_seen)

    @cython.boundscheck(False)  # every index is below n, the length of each array
    @cython.wraparound(False)
    def send_many_slots(self, slots, events, priorities=1, payloads=None):
        """Queue many messages at once; all are validated before any is queued."""
        sl, ev, pr = batch_arrays(slots, events, priorities)
        cdef const int32_t[::1] s_mv = sl
        cdef const int32_t[::1] e_mv = ev
        cdef const int32_t[::1] p_mv = pr
        cdef Py_ssize_t i, n = s_mv.shape[0]
        cdef int32_t slot, e, p, min_events = 0x7FFFFFFF
        cdef uint16_t f
        cdef list pl = _payloads(payloads, n)
        for i in range(self._n_mach):
            min_events = min(min_events, self._mt[i].n_events)
        for i in range(n):  # validate: touches the flag array, agent records only if needed
            if i + AHEAD < n:
                self._prefetch_agent(s_mv[i + AHEAD])
            slot, e, p = s_mv[i], e_mv[i], p_mv[i]
            if slot < 0 or slot >= self._n_slots:
                raise AgentNotFoundError(f"<slot {slot}>")
            f = self._ag[slot].flags
            if (f & (F_LIVE | F_DEAD)) != F_LIVE:
                raise AgentNotFoundError(f"<slot {slot}>")
            if f & F_STOPPED:
                raise AgentStoppedError(self._ids[slot], "is stopped")
            if (e < 0 or e >= min_events) and (e < 0 or e >= self._mt[self._ag[slot].mach].n_events):
                raise UnknownEventError((<object>self._mt[self._ag[slot].mach].machine).name, e)
            if p < 0 or p > 3:
                raise InvalidArgumentError(f"priority must be 0..3, got {p}")
        self._queue_checked(s_mv, e_mv, p_mv, pl, True)

    @cython.boundscheck(False)  # every index is below n, the length of each array
    @cython.wraparound(False)
    cdef int _queue_checked(self, const int32_t[::1] s_mv, const int32_t[::1] e_mv,
                            const int32_t[::1] p_mv, list pl, bint bounded_seen) except -1:
        """Queue valid messages, unless one would overflow a REJECT mailbox (then none);
        ``bounded_seen``: the caller met a REJECT mailbox among them (else none is counted)."""
        cdef Py_ssize_t i, n = s_mv.shape[0] if bounded_seen else 0
        cdef int32_t slot
        cdef dict bounded = None
        for i in range(n):
            slot = s_mv[i]
            if self._ag[slot].flags & F_REJECT:
                if bounded is None:
                    bounded = {}
                bounded[slot] = bounded.get(slot, 0) + 1
        if bounded is not None:
            for key, k in bounded.items():
                slot = key
                depth = self._pool.boxes[self._ag[slot].box].count if self._ag[slot].box >= 0 else 0
                if depth + k > self._cold[slot].cap:
                    for i in range(n):
                        if s_mv[i] == slot:
                            self._overflowed(slot, e_mv[i], _payload_at(pl, i),
                                             "reject")
                            break
                    raise MailboxFullError(self._ids[slot], self._cold[slot].cap)
        if self._n_capped:  # some tenant has max_queued
            self._check_tenant_room(s_mv)
        self._status_time()  # one clock reading stamps every agent this batch wakes
        self._now_fresh = True
        try:
            self._enqueue_many(s_mv, e_mv, p_mv, pl)
        finally:
            self._now_fresh = False

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int _check_tenant_room(self, const int32_t[::1] s_mv) except -1:
        """Refuse a batch that would take a tenant past ``max_queued`` (before any is
        queued)."""
        cdef Py_ssize_t i, n = s_mv.shape[0]
        cdef int32_t t
        cdef int64_t k
        counts = np.zeros(self._n_tn, dtype=np.int64)
        cdef int64_t[::1] c = counts
        for i in range(n):
            c[self._tof[s_mv[i]]] += 1
        for t in range(self._n_tn):
            k = c[t]
            if k and self._tn[t].max_queued and self._tn[t].queued + k > self._tn[t].max_queued:
                self._tn[t].rejected += k
                raise TenantLimitError(self._tn_names[t], "max_queued", self._tn[t].max_queued,
                                       f"a batch of {k} refused", bool(self._tn[t].wait))
        return 0

    @cython.boundscheck(False)  # every index is below n, the length of each array
    @cython.wraparound(False)
    cdef int _enqueue_many(self, const int32_t[::1] s_mv, const int32_t[::1] e_mv,
                           const int32_t[::1] p_mv, list pl) except -1:
        cdef Py_ssize_t i, n = s_mv.shape[0]
        cdef int32_t slot
        for i in range(n):
            if i + AHEAD < n:  # overlap the cache misses of random agents (again: a long
                self._prefetch_agent(s_mv[i + AHEAD])  # batch evicts what validation loaded)
            if i + AHEAD // 2 < n:
                slot = s_mv[i + AHEAD // 2]
                if self._ag[slot].box >= 0:
                    prefetch_w(&self._pool.boxes[self._ag[slot].box])
            # the box and chunk the next allocations will pop (the pools are stacks)
            if self._pool.nfree > 4:
                prefetch_w(&self._pool.boxes[self._pool.free[self._pool.nfree - 4]])
            if self._chunks.nfree > 4:
                prefetch_w(&self._chunks.chunks[self._chunks.free[self._chunks.nfree - 4]])
            if pl is not None and i + AHEAD < PyList_GET_SIZE(pl):  # its count will change
                prefetch_w(PyList_GET_ITEM(pl, i + AHEAD))
            self._enqueue(s_mv[i], e_mv[i], _payload_at(pl, i), p_mv[i], 0)
        return 0

    cdef inline void _prefetch_agent(self, int32_t slot) noexcept:
        """Start loading the hot record of ``slot`` (32 bytes: one cache line)."""
        prefetch_w(&self._ag[slot])

    cdef inline int32_t _slot_of(self, object agent_id) except -1:
        cdef int32_t slot = idt_lookup_raw(&self._tab, self._ids, <PyObject*>agent_id)
        if slot >= 0:
            return slot
        if slot == -3:  # unhashable, or a hostile __hash__/__eq__: again, to chain the error
            PyErr_Clear()
            return self._slot_of_checked(agent_id)
        if self.on_missing is not None:
            return self._slot_of_missing(agent_id)
        raise AgentNotFoundError(agent_id)

    cdef int32_t _slot_of_missing(self, object agent_id) except -1:
        """``on_missing(agent_id)`` makes a hibernated agent resident again (True) or says it
        is none of its (False): then the id is looked up once more, or not found."""
        cdef int32_t slot
        if self.on_missing(agent_id):
            slot = idt_lookup_raw(&self._tab, self._ids, <PyObject*>agent_id)
            if slot >= 0:
                return slot
        raise AgentNotFoundError(agent_id)

    cdef int32_t _slot_of_checked(self, object agent_id) except -1:
        cdef int32_t slot
        try:
            slot = idt_lookup(&self._tab, self._ids, agent_id)
        except Exception as exc:
            raise AgentNotFoundError(agent_id) from exc
        if slot < 0:
            raise AgentNotFoundError(agent_id)
        return slot

    cdef int32_t _check(self, int32_t slot, uint32_t gen) except -1:
        if self._cold[slot].gen != gen or not (self._ag[slot].flags & F_LIVE):
            raise AgentStoppedError("(stale reference)", "was terminated")
        return slot

    cdef int32_t _event_code(self, int32_t slot, object event) except -1:
        cdef MachTab* mt = &self._mt[self._ag[slot].mach]
        cdef PyObject* code
        cdef Py_ssize_t v
        cdef int32_t i
        if isinstance(event, str):  # a name (a StrEnum member too)
            if mt.n_events <= 16:  # the machine's own name objects (literals are interned)
                for i in range(mt.n_events):
                    if PyTuple_GET_ITEM(<tuple>mt.events, i) == <PyObject*>event:
                        return i
            # (PyDict_GetItem saves and restores the error state on every call: 4x slower)
            code = PyDict_GetItemWithError_raw(mt.event_index, <PyObject*>event)
            if code != NULL:
                return <int32_t>PyLong_AsLong(<object>code)
            if PyErr_Occurred() != NULL:  # a str subclass whose __eq__ or __hash__ raised
                PyErr_Clear()
        elif PyIndex_Check(event) and not PyBool_Check(event):  # ints, IntEnums, numpy ints
            v = PyNumber_AsSsize_t(event, NULL)  # clamps instead of raising on overflow
            if 0 <= v < mt.n_events:
                return <int32_t>v
        raise UnknownEventError((<object>mt.machine).name, event)

    cdef int _enqueue(self, int32_t slot, int32_t ev, object payload, int lane,
                      int32_t request) except -1:
        cdef Agent* ag = &self._ag[slot]
        cdef int32_t b = ag.box
        cdef PyObject* ref = NULL
        cdef uint32_t gen
        cdef TenantRec* tn
        cdef double since = 0.0
        ag.flags |= F_DIRTY  # (even if nothing is queued in the end: a spare record at worst)
        if self.tenanted:  # the tenant's limits first, then the mailbox's
            if self._releasing:  # (for this message only: sends made below are checked)
                self._releasing = False
            else:
                tn = &self._tn[self._tof[slot]]
                if tn.max_queued and tn.queued >= tn.max_queued:
                    tn.rejected += 1
                    raise TenantLimitError(self._tn_names[self._tof[slot]], "max_queued",
                                           tn.max_queued, "send refused", bool(tn.wait))
                if tn.rate > 0 and (
                        tn.ndelayed or not self._token(self._tof[slot], self._stamp_time(slot))):
                    return self._delay(slot, ev, payload, lane, request)
                ag = &self._ag[slot]  # (a Python clock may have run: fetched again)
                b = ag.box
        if (ag.flags & (F_REJECT | F_DROP_OLDEST) and b >= 0
                and self._pool.boxes[b].count >= self._cold[slot].cap):  # bounded, and full
            agent_id = self._ids[slot]
            cap = self._cold[slot].cap
            if self._ag[slot].flags & F_REJECT:
                self._overflowed(slot, ev, payload, "reject")
                raise MailboxFullError(agent_id, cap)
            gen = self._cold[slot].gen
            if self._drop_for(slot, ev, payload, lane, request):
                return 0  # the newcomer itself was dropped
            if self._cold[slot].gen != gen or self._ag[slot].flags & F_STOPPED:
                # an on_overflow instrument terminated or stopped it: nothing is queued
                raise AgentStoppedError(agent_id, "was terminated or stopped while sending")
            ag = &self._ag[slot]
            b = ag.box
        if self._chunks.nfree == 0:  # grow first: a MemoryError leaves everything as it was
            _grow_chunks(&self._chunks)
        if b < 0:
            if not (ag.flags & F_STATUS_HELD):  # IDLE -> PROCESSING: read the time first,
                since = self._stamp_time(slot)  # it may run a Python clock
                ag = &self._ag[slot]
            b = box_alloc(&self._pool)
            ag.box = b
            if not (ag.flags & F_STATUS_HELD):
                ag.since = since
        if payload is not None:
            ref = <PyObject*>payload
            Py_INCREF(payload)
        lane_push(&self._pool.boxes[b], &self._chunks, lane, ev, ref, request)  # a chunk is free
        if self.tenanted and self._tn[self._tof[slot]].counting:
            self._tn[self._tof[slot]].queued += 1
        if self.sample_every:
            self._stamp(&self._pool.boxes[b], lane)
        if self.metrics_enabled and self._pool.boxes[b].count > self._mx[slot].high_water:
            self._mx[slot].high_water = self._pool.boxes[b].count
        if not (self._ag[slot].flags & (F_QUEUED | F_HOLD)):
            self._ag[slot].flags |= F_QUEUED
            self._push_ready(slot)
            if self._rlen == 1 and self.on_wake is not None:
                self.on_wake()
        return 0

    cdef int _delay(self, int32_t slot, int32_t ev, object payload, int lane,
                    int32_t request) except -1:
        """Hold a message back behind its tenant's rate, in order (``release_delayed``)."""
        cdef int32_t t = self._tof[slot]
        q = self._tn_delayed[t]
        if q is None:
            q = self._tn_delayed[t] = deque()
        q.append((slot, self._cold[slot].gen, self._ids[slot], self._ag[slot].mach, ev, payload,
                  lane, request))
        self._tn[t].ndelayed += 1
        self._tn[t].queued += self._tn[t].counting
        self._tn[t].delayed += 1
        if self._tn[t].ndelayed == 1 and self.on_delay is not None:
            self.on_delay(t, self._due(t))
        return 0

    cdef double _stamp_time(self, int32_t slot) except? -1.0:
        """``_status_time()`` while sending to ``slot``: when it runs a Python clock, which
        can do anything, the agent must still be there, live and not stopped, after it."""
        cdef uint32_t gen
        cdef double now
        if self._running or self._now_fresh or self._clock is None or self._mono:
            return self._status_time()  # (no Python runs)
        agent_id = self._ids[slot]
        gen = self._cold[slot].gen
        now = self._status_time()
        if self._cold[slot].gen != gen or (self._ag[slot].flags & (F_LIVE | F_STOPPED)) != F_LIVE:
            raise AgentStoppedError(agent_id, "was terminated or stopped while sending (by the "
                                    "clock)")
        return now

    cdef bint _token(self, int32_t t, double now) except -1:
        """Take one token from the tenant's bucket, refilled for the time since the last."""
        cdef TenantRec* tn = &self._tn[t]
        if now > tn.last:
            tn.tokens = min(tn.burst, tn.tokens + (now - tn.last) * tn.rate)
            tn.last = now
        if tn.tokens >= 1.0 - 1e-9:  # (a refill at the due time may fall short by an ulp)
            tn.tokens = max(0.0, tn.tokens - 1.0)
            return True
        return False

    cdef double _due(self, int32_t t) noexcept:
        """When the tenant's bucket will hold a whole token."""
        return self._tn[t].last + max(0.0, 1.0 - self._tn[t].tokens) / self._tn[t].rate

    cdef inline void _stamp(self, Box* box, int lane) noexcept:
        """Every Nth message enqueued gets a stamp (its enqueue time) and the STAMPED bit
        (none if the stamp pool cannot grow: a sample is lost, never a message)."""
        cdef Py_ssize_t at
        cdef Msg* m
        cdef int32_t i
        cdef ChunkPool* p = &self._chunks
        self._enq_left -= 1
        if self._enq_left == 0:
            self._enq_left = self.sample_every
            if p.st_nfree == 0 and not _grow_stamps(p):
                return
            at = <Py_ssize_t>box.tail[lane] * CHUNK + box.tpos[lane] - 1
            m = &p.chunks[at // CHUNK].m[at % CHUNK]
            p.st_nfree -= 1
            i = p.st_free[p.st_nfree]
            p.st_time[i] = _now_ns()
            p.st_req[i] = m.request
            m.request = i
            m.event |= STAMPED

    cdef int _sample(self, int32_t slot, int which, int64_t ns) except -1:
        """One latency sample (0: step, 1: wait) into the runtime's ring, and into the rings
        of the agent or its machine if they are tracked."""
        _ring_push(&self._step_r if which == 0 else &self._wait_r, ns)
        if self.tenanted:
            rings = self._tn_rings[self._tof[slot]]
            if rings is not None:
                rings[which].append(ns)
        if self._tracked:
            rings = self._tracked.get(slot)
            if rings is not None:
                rings[which].append(ns)
        if self._tracked_machines:
            rings = self._tracked_machines.get(self._ag[slot].mach)
            if rings is not None:
                rings[which].append(ns)
        return 0

    cdef int _drop_for(self, int32_t slot, int32_t ev, object payload, int lane,
                       int32_t request) except -1:
        """Make room in a full DROP_OLDEST mailbox; return 1 if the newcomer is dropped."""
        cdef Agent* ag = &self._ag[slot]
        cdef Box* box = &self._pool.boxes[ag.box]
        cdef int victim = -1
        cdef int lo
        cdef Msg m
        for lo in range(lane + 1):
            if box.head[lo] >= 0:
                victim = lo
                break
        self._dropped[slot] += 1
        if victim < 0:
            self._drop(slot, ev, payload, lane, request)
            return 1
        m = lane_pop(box, &self._chunks, victim)
        if m.event & STAMPED:
            unstamp(&self._chunks, &m)
        if self.tenanted and self._tn[self._tof[slot]].counting:
            self._tn[self._tof[slot]].queued -= 1
        if box.count == 0:
            box_free(&self._pool, ag.box)
            ag.box = -1
        self._drop(slot, m.event & ~STAMPED, take(m.payload), victim, m.request)
        return 0

    cdef int _overflowed(self, int32_t slot, int32_t ev, object payload,
                         object policy) except -1:
        if self.on_overflow is not None:
            self.on_overflow(self._ids[slot], (<tuple>self._mt[self._ag[slot].mach].events)[ev],
                             payload, policy)
        return 0

    cdef int _drop(self, int32_t slot, int32_t ev, object payload, int lane,
                   int32_t request) except -1:
        agent_id = self._ids[slot]
        self._overflowed(slot, ev, payload, "drop_oldest")
        self._dead_letter(agent_id, &self._mt[self._ag[slot].mach], ev, payload, lane, _DROPPED,
                          None, None)
        if request:
            self._answer(request, False, MailboxFullError(agent_id, self._cold[slot].cap))
        return 0

    # -- running -------------------------------------------------------------------------

    def run(self, Py_ssize_t limit=-1):
        """Process up to ``limit`` messages (all, if negative); return how many were taken.

        Raises:
            RuntimeBusyError: If called from inside a run (a handler).
        """
        cdef Py_ssize_t done = 0
        cdef Py_ssize_t budget
        cdef int32_t slot
        cdef uint16_t f
        cdef int64_t t0
        cdef int32_t b
        cdef int lane
        cdef Box* box
        if self._running:
            raise RuntimeBusyError("run() called from inside a run (from a handler?)")
        self._running = True
        try:
            if self.tenanted:
                done = self._run_fair(limit)
            while self._rlen > 0 and (limit < 0 or done < limit) and not self.tenanted:
                if self._rlen > AHEAD:  # overlap the cache misses of the agents ahead, in
                    # stages: the record, then (loaded by now) its box, then the next message
                    self._prefetch_agent(self._ready[(self._rhead + AHEAD) & (self._slot_cap - 1)])
                    slot = self._ready[(self._rhead + AHEAD // 2) & (self._slot_cap - 1)]
                    b = self._ag[slot].box
                    if b >= 0:
                        prefetch_w(&self._pool.boxes[b])
                    slot = self._ready[(self._rhead + AHEAD // 4) & (self._slot_cap - 1)]
                    b = self._ag[slot].box
                    if b >= 0:
                        box = &self._pool.boxes[b]
                        lane = top_lane(box)
                        prefetch_w(&self._chunks.chunks[box.head[lane]].m[box.hpos[lane]])
                slot = self._ready[self._rhead]
                self._rhead = (self._rhead + 1) & (self._slot_cap - 1)
                self._rlen -= 1
                f = self._ag[slot].flags
                if f & F_DEAD:
                    self._release(slot)
                    continue
                if f & F_HOLD:
                    self._ag[slot].flags = f & ~F_QUEUED
                    continue
                budget = self._budget if limit < 0 else min(self._budget, limit - done)
                t0 = _now_ns() if self.metrics_enabled else 0
                try:
                    done += self._turn(slot, budget)
                finally:
                    if self.metrics_enabled:
                        self._mx[slot].busy_ns += _now_ns() - t0
                    f = self._ag[slot].flags | F_DIRTY
                    self._ag[slot].flags = f
                    if f & F_DEAD:
                        self._release(slot)
                    elif (self._ag[slot].box >= 0 or f & F_FRONT) and not (f & F_HOLD):
                        self._push_ready(slot)  # (a handler may have turned tenancy on)
                    else:
                        self._ag[slot].flags = f & ~F_QUEUED
                        if self._ag[slot].box < 0 and not (f & F_STATUS_HELD):
                            self._ag[slot].since = self.now  # PROCESSING -> IDLE
                if self._olen >= self._out_limit:
                    self._flush()
        finally:
            try:
                self._release_now()
            finally:
                self._running = False
        self._flush()
        return done

    cdef Py_ssize_t _run_fair(self, Py_ssize_t limit) except -1:
        """``run`` under tenancy: deficit round robin over the tenants with ready agents
        (the twin's ``_run_fair`` explains it)."""
        cdef Py_ssize_t done = 0
        cdef Py_ssize_t budget, k
        cdef int32_t t, slot
        cdef uint16_t f
        cdef int64_t t0
        cdef TenantRec* tn
        cdef int32_t b
        while self._rlen > 0 and (limit < 0 or done < limit):
            t = self._cur
            if t < 0:
                if self._alen == 0:  # (cannot happen while agents are ready)
                    break
                t = self._act[self._ahead]
                self._ahead = (self._ahead + 1) % self._tn_cap
                self._alen -= 1
                self._cur = t
                self._tn[t].deficit += self._tn[t].quantum
            tn = &self._tn[t]
            if tn.head < 0:
                self._idle_tenant(t)
                continue
            if tn.deficit <= 0:  # its turn in this round is over
                self._cur = -1
                self._act[(self._ahead + self._alen) % self._tn_cap] = t
                self._alen += 1
                continue
            slot = tn.head
            tn.head = self._rnext[slot]
            if tn.head < 0:
                tn.tail = -1
            else:  # overlap the next agents' cache misses with this turn, in stages: the
                # record three ahead, the box two ahead, the next message one ahead (each
                # prefetched one turn before it is read)
                self._prefetch_fair(tn.head)
            tn.nready -= 1
            self._rlen -= 1
            f = self._ag[slot].flags
            if f & (F_DEAD | F_HOLD):
                if f & F_DEAD:
                    self._release(slot)
                else:
                    self._ag[slot].flags = f & ~F_QUEUED
                if tn.head < 0:  # none left: out of the round now, as after a turn (or it
                    self._idle_tenant(t)  # would stay current, ahead of tenants ready since)
                continue
            budget = min(<int64_t>self._budget, tn.deficit)
            if limit >= 0:
                budget = min(budget, limit - done)
            t0 = _now_ns() if self.metrics_enabled else 0
            k = 0
            try:
                k = self._turn(slot, budget)
            finally:
                if self.metrics_enabled:
                    self._mx[slot].busy_ns += _now_ns() - t0
                done += k
                self._tn[t].deficit -= k  # (the table may have moved: a handler added one)
                self._tn[t].served += k
                f = self._ag[slot].flags | F_DIRTY
                self._ag[slot].flags = f
                if f & F_DEAD:
                    self._release(slot)
                elif (self._ag[slot].box >= 0 or f & F_FRONT) and not (f & F_HOLD):
                    self._push_ready(slot)
                else:
                    self._ag[slot].flags = f & ~F_QUEUED
                    if self._ag[slot].box < 0 and not (f & F_STATUS_HELD):
                        self._ag[slot].since = self.now  # PROCESSING -> IDLE
            if self._tn[t].head < 0:  # drained: its turn ends now, its deficit with it
                self._idle_tenant(t)
            if self._olen >= self._out_limit:
                self._flush()
        return done

    cdef inline void _prefetch_fair(self, int32_t h1) noexcept:
        cdef int32_t h2 = self._rnext[h1]
        cdef int32_t b = self._ag[h1].box
        cdef Box* box
        cdef int lane
        if b >= 0:
            box = &self._pool.boxes[b]
            lane = top_lane(box)
            if box.head[lane] >= 0:
                prefetch_w(&self._chunks.chunks[box.head[lane]].m[box.hpos[lane]])
        if h2 >= 0:
            b = self._ag[h2].box
            if b >= 0:
                prefetch_w(&self._pool.boxes[b])
            h2 = self._rnext[h2]
            if h2 >= 0:
                self._prefetch_agent(h2)

    cdef void _idle_tenant(self, int32_t t) noexcept:
        """End the turn of a tenant left with no ready agent: it leaves the round, and its
        unused deficit is forgotten (it joins the end of a round when mail comes)."""
        self._cur = -1
        self._tn[t].active = 0
        self._tn[t].deficit = 0
        if self._tn[t].dropped:  # its last dead agents are released
            self._forget_tenant(t)

    cdef Py_ssize_t _turn(self, int32_t slot, Py_ssize_t budget) except -1:
        cdef Py_ssize_t k = 0
        cdef int32_t b
        cdef int lane
        cdef Box* box
        cdef Msg m
        cdef Agent* ag
        cdef uint16_t f
        cdef int64_t t0
        # the message of this turn to time next (1-based; never reached when not sampling):
        # a compare with the turn's own count, no countdown per message
        cdef Py_ssize_t timed = self._step_left if self.sample_every else PY_SSIZE_T_MAX
        self._turn_slot = slot
        self._tq = -1  # the tenant whose queued count this turn's pops lower (set_tenant
        if self.tenanted and self._tn[self._tof[slot]].counting:  # may change it mid-turn)
            self._tq = self._tof[slot]
        try:
            while k < budget:
                f = self._ag[slot].flags
                if f & F_FRONT:
                    k += 1
                    if k == timed:
                        timed += self.sample_every
                        t0 = _now_ns()
                        self._step_front(slot)
                        self._sample(slot, 0, _now_ns() - t0)
                    else:
                        self._step_front(slot)
                else:
                    ag = &self._ag[slot]
                    b = ag.box
                    if b < 0:
                        break
                    box = &self._pool.boxes[b]
                    lane = top_lane(box)
                    m = lane_pop(box, &self._chunks, lane)
                    t0 = 0
                    if m.event & STAMPED:  # (set only while sampling)
                        t0 = unstamp(&self._chunks, &m)
                    if self._tq >= 0:
                        self._tn[self._tq].queued -= 1
                    if box.count == 0:
                        box_free(&self._pool, b)
                        ag.box = -1
                    k += 1
                    if t0:
                        self._sample(slot, 1, _now_ns() - t0)
                    if k == timed:
                        timed += self.sample_every
                        t0 = _now_ns()
                        self._step_msg(slot, ag, &m, lane, f)
                        self._sample(slot, 0, _now_ns() - t0)
                    else:
                        self._step_msg(slot, ag, &m, lane, f)
                if self._ag[slot].flags & (F_DEAD | F_HOLD):
                    break
        finally:
            if self.sample_every:
                self._step_left = <int32_t>(timed - k)
            self._turn_slot = -1
        return k

    cdef inline int _step_msg(self, int32_t slot, Agent* ag, Msg* m, int lane,
                              uint16_t f) except -1:
        """Step a message just taken from a lane: the table alone when it can."""
        if (m.request == 0 and not self._hooked and not (f & F_POSTPONED)
                and self._mt[ag.mach].handler[ag.state * self._mt[ag.mach].n_events
                                              + m.event] < 0):
            # the common case: no Python at all (a payload only rides along); a separate
            # copy of the step while recording (a branch to the record inside the plain
            # step cost it 20 %: it changed how the compiler laid out the drain loop)
            if self._rcap:
                return self._step_table(slot, m.event, lane, m.payload, True)
            return self._step_table(slot, m.event, lane, m.payload, False)
        return self._step(slot, m.event, take(m.payload), lane, m.request)

    cdef int _step_front(self, int32_t slot) except -1:
        """Step the first message of the front queue."""
        front = self._front[slot]
        ev, payload, lane, request = front.popleft()
        if not front:
            del self._front[slot]
            self._ag[slot].flags &= ~F_FRONT
        self._rflags = RECORD_FRONT
        try:
            return self._step(slot, ev, payload, lane, request)
        finally:
            self._rflags = 0

    cdef inline int _step_table(self, int32_t slot, int32_t ev, int lane,
                                PyObject* payload, bint record) except -1:
        """A table step with no handler, request or postponed mail; takes over the payload
        reference (released after the step, or kept by its record when ``record``: the
        ring is on)."""
        cdef Agent* ag = &self._ag[slot]
        cdef MachTab* mt = &self._mt[ag.mach]
        cdef int32_t s = ag.state
        cdef int32_t cell = s * mt.n_events + ev
        cdef int32_t nxt = mt.next[cell]
        cdef int32_t code
        if nxt < 0:
            return self._step(slot, ev, take(payload), lane, 0)
        if nxt != s:
            ag.state = nxt
            ag.epoch += 1
        code = mt.out[cell]
        if code >= 0 and self._has_sink:
            self._out_push(slot, code)
        ag.processed += 1
        if self._ag[slot].flags & F_ERROR:
            self._ag[slot].flags &= ~F_ERROR
            ag.since = self.now
        if record:  # the record takes the payload reference
            return self._record(slot, ag.mach, ev, s, nxt, code, lane, payload, NULL)
        self._rseq += 1
        if payload != NULL:
            self._release_later(payload)  # last: a __del__ may run any code
        return 0

    cdef inline int _record(self, int32_t slot, int32_t mach, int32_t ev, int32_t s,
                            int32_t nxt, int32_t code, int lane, PyObject* payload,
                            PyObject* extra) except -1:
        """Write record ``_rseq`` (taking over the ``payload`` and ``extra`` references); the
        references of the record it overwrites are dropped last (a __del__ may run any code).
        While the ring holds no reference at all, records without one touch only ``_rec``."""
        # every field of self is read before the record is written: extensions are built
        # with -fno-strict-aliasing, so each store to the record would make them be read again
        cdef Py_ssize_t i = self._rpos
        cdef Rec* r = &self._rec[i]
        cdef int32_t flags = self._rflags
        cdef double now = self.now
        cdef PyObject* old_payload = NULL
        cdef PyObject* old_extra = NULL
        cdef Py_ssize_t held = self._rrefs  # (0: every slot is NULL already)
        self._rpos = i + 1 if i + 1 < self._rcap else 0
        self._rseq += 1
        if held:
            old_payload = self._rpay[i]
            old_extra = self._rext[i]
            self._rrefs -= (old_payload != NULL) + (old_extra != NULL)
        if held or payload != NULL or extra != NULL:
            self._rpay[i] = payload
            self._rext[i] = extra
            self._rrefs += (payload != NULL) + (extra != NULL)
        r.slot = slot
        r.mach = mach
        r.event = ev
        r.source = s
        r.target = nxt
        r.output = code
        r.priority = lane
        r.flags = flags
        r.time = now
        if old_extra != NULL:
            Py_DECREF(<object>old_extra)
        if old_payload != NULL:
            if self._running:
                self._release_later(old_payload)
            else:
                Py_DECREF(<object>old_payload)
        return 0

    cdef inline int _release_later(self, PyObject* payload) except -1:
        """Drop a payload reference, in batches: the reference counts of payloads taken in
        a random order are cache misses, and a run of independent decrements overlaps them
        (one decrement per step stalls the step instead). Released when RELEASE are waiting
        and at the end of every ``run`` (and only in a run, so counts are exact outside)."""
        self._rel[self._nrel] = payload
        self._nrel += 1
        if self._nrel == RELEASE:
            self._release_now()
        return 0

    cdef int _release_now(self) except -1:
        cdef int i, n = self._nrel
        self._nrel = 0  # (a __del__ cannot add to it: only a run's table steps do)
        for i in range(min(n, RELEASE_AHEAD)):
            prefetch_w(self._rel[i])
        for i in range(n):
            if i + RELEASE_AHEAD < n:
                prefetch_w(self._rel[i + RELEASE_AHEAD])
            Py_XDECREF(self._rel[i])
        return 0

    cdef int _step(self, int32_t slot, int32_t ev, object payload, int lane,
                   int32_t request) except -1:
        cdef MachTab* mt = &self._mt[self._ag[slot].mach]
        cdef int32_t s = self._ag[slot].state
        cdef int32_t cell = s * mt.n_events + ev
        cdef int32_t h = mt.handler[cell]
        cdef int32_t nxt = mt.next[cell]
        cdef int32_t code = mt.out[cell]
        cdef uint32_t gen = self._cold[slot].gen
        agent_id = self._ids[slot]
        if self._on_step is not None:
            self._on_step(agent_id, (<tuple>mt.states)[s], (<tuple>mt.events)[ev])
            if self._cold[slot].gen != gen or self._ag[slot].flags & F_STOPPED:
                # a before_step instrument terminated or stopped it: the message is not lost
                self._dead_letter(agent_id, mt, ev, payload, lane,
                                  _STOPPED_REASON if self._cold[slot].gen == gen
                                  else _TERMINATED, None, None)
                if request:
                    self._answer(request, False, AgentStoppedError(agent_id, "was stopped"))
                return 0
        if h >= 0:
            return self._step_handler(slot, agent_id, ev, payload, lane, request, cell, h)
        if nxt < 0:
            if mt.ignore:
                return self._commit(slot, agent_id, s, s, ev, payload, lane, request, -1,
                                    None, None)
            err = InvalidTransitionError((<object>mt.machine).name,
                                         (<tuple>mt.states)[s], (<tuple>mt.events)[ev])
            return self._fail(slot, agent_id, s, ev, payload, lane, request, _INVALID, err)
        return self._commit(slot, agent_id, s, nxt, ev, payload, lane, request, code, None, None)

    cdef int _step_handler(self, int32_t slot, object agent_id, int32_t ev, object payload,
                           int lane, int32_t request, int32_t cell, int32_t h) except -1:
        cdef MachTab* mt = &self._mt[self._ag[slot].mach]
        cdef int32_t s = self._ag[slot].state
        cdef int32_t nxt = mt.next[cell]
        cdef int32_t code = mt.out[cell]
        cdef uint32_t gen = self._cold[slot].gen
        cdef AgentContext ctx = AgentContext.__new__(AgentContext)
        cdef Event event = Event.__new__(Event)
        cdef tuple extras = None
        cdef _Prep prepared = None
        cdef int32_t t = self._tof[slot] if self.tenanted else 0
        cdef int64_t deadline = self._tn[t].deadline_ns if self.tenanted else 0
        cdef int64_t t0 = _now_ns() if deadline else 0
        cdef int32_t policy = -1  # the tenant's deadline policy, once this step overran it
        self._step_tenant = t
        ctx._d = self
        ctx._slot = slot
        ctx._gen = gen
        event.name = (<tuple>mt.events)[ev]
        event.payload = payload
        event._lane = lane
        try:
            result = (<list>mt.handlers)[h](ctx, event)
            if deadline and _now_ns() - t0 > deadline:
                policy = self._tn[t].policy
                self._overran(t, agent_id, deadline, t0)
            if self._cold[slot].gen != gen:  # the handler terminated its own agent
                self.retired[0] += 1  # processed, by an agent that is gone
                if self.tenanted:
                    self._tn[t].retired_processed += 1
                if request:
                    self._answer(request, False, AgentStoppedError(agent_id, "was terminated"))
                return 0
            if nxt < 0:
                nxt = s
            if result is not None:
                if type(result) is not Step:
                    raise TypeError(f"handler returned {result!r}; expected Step or None")
                if (<object>result).state is not None:
                    nxt = (<object>mt.machine).state_code((<object>result).state)
                if (<object>result).outputs is not None:
                    extras = tuple((<object>result).outputs)
                if (<object>result).actions:
                    prepared = _prepare(mt, (<object>result).actions)
                    if prepared.runtime is not None and self.on_actions is None:
                        raise TypeError("timer and work actions need a Runtime")
                    if prepared.work and not self.work_enabled:
                        raise RuntimeNotRunningError(
                            "Work actions need the runtime to run under open_runtime")
        except Exception as exc:
            err = HandlerError(agent_id, (<tuple>mt.states)[s], event.name, exc)
            self._fail(slot, agent_id, s, ev, payload, lane, request, _HANDLER_FAILED, err)
            if (policy == DEADLINE_STOP and self._cold[slot].gen == gen
                    and not (self._ag[slot].flags & F_STOPPED)):
                self.stop(agent_id)
            return 0
        except BaseException as exc:  # KeyboardInterrupt and friends: record, then propagate
            self._fail(slot, agent_id, s, ev, payload, lane, request, _HANDLER_FAILED, exc)
            raise
        return self._commit(slot, agent_id, s, nxt, ev, payload, lane, request, code, extras,
                            prepared)

    cdef int _overran(self, int32_t t, object agent_id, int64_t deadline,
                      int64_t t0) except -1:
        """Count a handler step that overran its tenant's turn deadline; unless the tenant
        only reports overruns, fail its message (raise)."""
        cdef int64_t took = _now_ns() - t0
        self._tn[t].overruns += 1
        if self._tn[t].policy != DEADLINE_REPORT:
            raise TurnDeadlineError(agent_id, took / 1e9, deadline / 1e9)
        return 0

    cdef int _commit(self, int32_t slot, object agent_id, int32_t s, int32_t nxt, int32_t ev,
                     object payload, int lane, int32_t request, int32_t code, tuple extras,
                     _Prep prepared) except -1:
        """Apply a successful step: state, mailbox actions, outputs, counters, then the
        answer to a request, records, sends and runtime actions (which may re-enter)."""
        cdef Agent* ag = &self._ag[slot]
        cdef bint postpone = prepared is not None and prepared.postpone
        cdef uint32_t gen = self._cold[slot].gen
        cdef list postponed
        if postpone:
            postponed = self._postponed.get(slot)
            if postponed is None:
                postponed = self._postponed[slot] = []
                self._ag[slot].flags |= F_POSTPONED
            postponed.append((ev, payload, lane, request))
            if self.metrics_enabled:
                self._mx[slot].postponed += 1
        ag.state = nxt
        if nxt != s:
            ag.epoch += 1
        if ((prepared is not None and prepared.front is not None)
                or (nxt != s and self._ag[slot].flags & F_POSTPONED)):
            self._replay(slot, None if prepared is None else prepared.front, nxt != s)
            ag = &self._ag[slot]
        if self._has_sink:
            if extras is None:
                if code >= 0:
                    self._out_push(slot, code)
            else:
                for value in extras:
                    self._extras.append(value)
                    self._out_push(slot, -<int32_t>len(self._extras))
        ag.processed += 1
        if self._ag[slot].flags & F_ERROR:
            self._ag[slot].flags &= ~F_ERROR
            ag.since = self.now
        if self._rcap:
            if payload is not None:
                Py_INCREF(payload)
            if extras is not None:
                Py_INCREF(extras)
            self._record(slot, ag.mach, ev, s, nxt, -2 if extras is not None else code, lane,
                         NULL if payload is None else <PyObject*>payload,
                         NULL if extras is None else <PyObject*>extras)
        else:
            self._rseq += 1
        if request == 0 and self._on_record is None and prepared is None:
            return 0
        outputs = extras if extras is not None else (() if code < 0 else (self._values[code],))
        if request and not postpone:
            if prepared is not None and prepared.reply is not None:
                self._answer(request, prepared.reply[0], prepared.reply[1])
            else:
                self._answer(request, True, outputs)
        if self._on_record is not None:
            states = <tuple>self._mt[self._ag[slot].mach].states
            self._on_record(agent_id, states[s],
                            (<tuple>self._mt[self._ag[slot].mach].events)[ev], states[nxt],
                            outputs)
        if prepared is not None:  # a Reply with no request to answer goes nowhere
            if prepared.send1 is not None:
                self._deliver(prepared.send1)
                if prepared.sends is not None:
                    for send in prepared.sends:
                        self._deliver(send)
            # instruments and sends above may have terminated it: then its timers die with it
            if prepared.runtime is not None and self._cold[slot].gen == gen:
                self.on_actions(agent_id, slot, gen, prepared.runtime)
        return 0

    cdef int _replay(self, int32_t slot, list inserted, bint replay) except -1:
        """Front queue := inserted NextEvents, then postponed events (if ``replay``), then
        what was already in front."""
        cdef list items = [] if inserted is None else [(e, p, l, 0) for e, p, l in inserted]
        if replay and self._ag[slot].flags & F_POSTPONED:
            items += self._postponed.pop(slot)
            self._ag[slot].flags &= ~F_POSTPONED
        if not items:
            return 0
        if self._ag[slot].flags & F_FRONT:
            (<object>self._front[slot]).extendleft(reversed(items))
        else:
            if self._ag[slot].box < 0 and not (self._ag[slot].flags & F_STATUS_HELD):
                self._ag[slot].since = self._status_time()
            self._front[slot] = deque(items)
            self._ag[slot].flags |= F_FRONT
        return 0

    cdef int _deliver(self, object send) except -1:
        """A ``Send`` action: queue it, or dead-letter it as UNDELIVERABLE."""
        cdef int32_t slot
        if not self.deliver_sends:
            return 0
        try:
            if self.route_all and self.router(send):
                return 0
            if self.router is not None and not self.route_all and send.agent_id not in self:
                if self.router(send):
                    return 0
            slot = self._slot_of(send.agent_id)
            if self._ag[slot].flags & F_STOPPED:
                raise AgentStoppedError(send.agent_id, "is stopped")
            self._enqueue(slot, self._event_code(slot, send.event), send.payload,
                          _lane(send.priority), 0)
        except EngineError as exc:
            self.dead_letters.append(DeadLetter(send.agent_id, str(send.event), send.payload,
                                                as_priority(send.priority), _UNDELIVERABLE, exc))
            self.dead_letter_count += 1
        return 0

    cdef int _answer(self, int32_t request, bint ok, object value) except -1:
        if self.on_request is not None:
            self.on_request(request, ok, value)
        return 0

    cdef inline int _out_push(self, int32_t slot, int32_t code) except -1:
        cdef Py_ssize_t cap
        if self._olen == self._ocap:
            cap = self._ocap * 2 if self._ocap else 1024
            _grow(<void**>&self._oslot, self._ocap, cap, sizeof(int32_t))
            _grow(<void**>&self._ocode, self._ocap, cap, sizeof(int32_t))
            _grow(<void**>&self._ostep, self._ocap, cap, sizeof(int64_t))
            self._ocap = cap
        self._oslot[self._olen] = slot
        self._ocode[self._olen] = code
        self._ostep[self._olen] = self._ag[slot].processed + 1  # pushed before the count
        self._olen += 1
        return 0

    cdef int _fail(self, int32_t slot, object agent_id, int32_t state, int32_t ev,
                   object payload, int lane, int32_t request, object reason,
                   object error) except -1:
        """Record a failed message: count it, flag ERROR (if still alive), dead-letter it,
        fail its request, and tell supervision."""
        cdef MachTab* mt = &self._mt[self._ag[slot].mach]
        cdef uint32_t gen = self._cold[slot].gen
        cdef bint alive = self._ids[slot] is agent_id and self._ag[slot].flags & F_LIVE
        if alive:
            self._cold[slot].failed += 1
            self._last_error[slot] = error
            if not (self._ag[slot].flags & F_ERROR):
                self._ag[slot].flags |= F_ERROR
                self._ag[slot].since = self.now
        else:  # terminated during its own step: counted with the retired agents
            self.retired[1] += 1
            if self.tenanted:  # (only a handler step can lose its agent: _step_handler's)
                self._tn[self._step_tenant].retired_failed += 1
        self._dead_letter(agent_id, mt, ev, payload, lane, reason, error,
                          (<tuple>mt.states)[state])
        if request:
            self._answer(request, False, error)
        # a dead-letter instrument may have terminated it meanwhile
        if alive and self._cold[slot].gen == gen and self.on_failure is not None:
            self.on_failure(agent_id, slot, error)
        return 0

    cdef int _dead_letter(self, object agent_id, MachTab* mt, int32_t ev, object payload,
                          int lane, object reason, object error, object state) except -1:
        self.dead_letters.append(DeadLetter(agent_id, (<tuple>mt.events)[ev], payload,
                                            _PRIORITIES[lane], reason, error, state))
        self.dead_letter_count += 1
        return 0

    cdef int _flush(self) except -1:
        cdef Py_ssize_t i, n = self._olen
        cdef int32_t[::1] s_mv
        cdef int32_t[::1] c_mv
        cdef int64_t[::1] t_mv
        if n == 0:
            return 0
        slots = np.empty(n, dtype=np.int32)
        codes = np.empty(n, dtype=np.int32)
        steps = np.empty(n, dtype=np.int64)
        s_mv = slots
        c_mv = codes
        t_mv = steps
        memcpy(&s_mv[0], self._oslot, n * sizeof(int32_t))
        memcpy(&c_mv[0], self._ocode, n * sizeof(int32_t))
        memcpy(&t_mv[0], self._ostep, n * sizeof(int64_t))
        ids = [self._ids[self._oslot[i]] for i in range(n)]
        if self._out_retired:
            restore_ids(ids, slots, self._out_retired)
            self._out_retired = []
        batch = OutputBatch(ids, slots, codes, self._values, self._extras, steps)
        self._olen = 0
        self._extras = []
        self._sink(batch)
        return 0

    # -- inspection ----------------------------------------------------------------------

    @property
    def ready(self):
        """Agents on the ready queue (with mail and not yet drained)."""
        cdef Py_ssize_t n = 0
        cdef int32_t slot
        for slot in self._ready_slots():
            if not (self._ag[slot].flags & (F_DEAD | F_HOLD)):
                n += 1
        return n

    cdef list _ready_slots(self):
        """The ready queue's slots in the order they will run (under tenancy: the tenant
        being served, then the others in round order; each tenant's own queue in order)."""
        cdef Py_ssize_t i
        cdef int32_t slot
        cdef list out = []
        if not self.tenanted:
            for i in range(self._rlen):
                out.append(self._ready[(self._rhead + i) & (self._slot_cap - 1)])
            return out
        order = [self._cur] if self._cur >= 0 else []
        for i in range(self._alen):
            order.append(self._act[(self._ahead + i) % self._tn_cap])
        for t in order:
            slot = self._tn[<int32_t>t].head
            while slot >= 0:
                out.append(slot)
                slot = self._rnext[slot]
        return out

    @property
    def has_ready(self):
        """True if the ready queue is not empty (it may hold only agents that will turn out
        paused or terminated: ``run()`` then discards them). O(1), unlike ``ready``."""
        return self._rlen > 0

    @property
    def running(self):
        """True while ``run()`` is on the stack."""
        return self._running

    @property
    def slot_count(self):
        """Slots in use or free (the length of the counter arrays)."""
        return self._n_slots

    @property
    def agents(self):
        """The agent records (a numpy structured array of ``AGENT_DTYPE``), one per slot."""
        return self._agents[:self._n_slots]

    @property
    def processed(self):
        """Messages processed per slot (a view; index with ``AgentRef.slot``)."""
        return self._agents["processed"][:self._n_slots]

    @property
    def failed(self):
        """Messages failed per slot (handler raised, or no transition)."""
        return self._colds["failed"][:self._n_slots]

    @property
    def dropped(self):
        """Messages dropped per slot by a ``DROP_OLDEST`` mailbox."""
        if self._dropped_arr is None:
            return np.zeros(self._n_slots, dtype=np.int64)
        return self._dropped_arr[:self._n_slots]

    def state(self, agent_id):
        """Current state name of ``agent_id``."""
        cdef int32_t slot = self._slot_of(agent_id)
        return (<tuple>self._mt[self._ag[slot].mach].states)[self._ag[slot].state]

    def status(self, agent_id):
        """Current status of ``agent_id``."""
        return self._status(self._slot_of(agent_id))

    cdef object _status(self, int32_t slot):
        cdef uint16_t f = self._ag[slot].flags
        if f & F_STOPPED:
            return _STATUS_STOPPED
        if f & F_ERROR:
            return _STATUS_ERROR
        if f & F_PAUSED:
            return _STATUS_PAUSED
        return _STATUS_PROCESSING if self._ag[slot].box >= 0 or f & F_FRONT else _STATUS_IDLE

    def status_since(self, agent_id):
        """The ``now`` reading when the agent's status last changed."""
        return self._ag[self._slot_of(agent_id)].since

    @property
    def metrics(self):
        """Per-slot ``METRICS_DTYPE`` records (busy_ns, high_water, postponed, restarts);
        empty unless the dispatcher was made with ``metrics=True``."""
        return self._mx_arr[:self._n_slots] if self.metrics_enabled else self._mx_arr[:0]

    def depths(self):
        """Messages queued per slot now (front queue and lanes)."""
        cdef int32_t slot, b
        out = np.zeros(self._n_slots, dtype=np.int32)
        cdef int32_t[::1] mv = out
        for slot in range(self._n_slots):
            b = self._ag[slot].box
            if b >= 0 and self._ag[slot].flags & F_LIVE:
                mv[slot] = self._pool.boxes[b].count
        for slot, front in self._front.items():
            mv[slot] += len(front)
        return out

    def states(self):
        """State index per slot (meaningful for live slots; see ``machine_indexes``)."""
        return self._agents["state"][:self._n_slots].copy()

    def machine_indexes(self):
        """Machine index per slot, -1 for free slots."""
        cdef int32_t slot
        out = self._agents["machine"][:self._n_slots].astype(np.int32)
        cdef int32_t[::1] mv = out
        for slot in range(self._n_slots):
            if not (self._ag[slot].flags & F_LIVE):
                mv[slot] = -1
        return out

    def statuses(self):
        """``AgentStatus`` value per slot now (as ``status``), -1 for free slots."""
        cdef int32_t slot
        cdef uint16_t f
        out = np.empty(self._n_slots, dtype=np.int8)
        cdef int8_t[::1] mv = out
        for slot in range(self._n_slots):
            f = self._ag[slot].flags
            if not (f & F_LIVE):
                mv[slot] = -1
            elif f & F_STOPPED:
                mv[slot] = 3   # the order of _status: STOPPED, ERROR, PAUSED, PROCESSING, IDLE
            elif f & F_ERROR:
                mv[slot] = 2
            elif f & F_PAUSED:
                mv[slot] = 4
            else:
                mv[slot] = 1 if self._ag[slot].box >= 0 or f & F_FRONT else 0
        return out

    @property
    def machines(self):
        """Registered machines, by machine index."""
        return list(self._machines)

    def last_error(self, agent_id):
        """The error of the agent's last failed message (kept until it is terminated)."""
        return self._last_error.get(self._slot_of(agent_id))

    def track(self, agent_id):
        """Also keep this agent's sampled (step, wait) latencies in rings of its own."""
        slot = self._slot_of(agent_id)
        rings = self._tracked.get(slot)
        if rings is None:
            rings = self._tracked[slot] = (LatencyRing(self._ring_size),
                                           LatencyRing(self._ring_size))
        return rings

    def track_machine(self, machine):
        """Also keep the sampled (step, wait) latencies of this machine's agents apart."""
        m = self.register(machine)
        rings = self._tracked_machines.get(m)
        if rings is None:
            rings = self._tracked_machines[m] = (LatencyRing(self._ring_size),
                                                 LatencyRing(self._ring_size))
        return rings

    def fire(self, int32_t slot, uint32_t gen, int guard, int64_t guard_value, int32_t event,
             payload, int lane):
        """Deliver a timer's ``event`` (a valid code) to ``slot`` if it still holds generation
        ``gen`` and the guard holds (1: state changes, 2: events taken, equal to
        ``guard_value``); return 1 if queued, 0 if the timer is stale.

        Raises:
            AgentStoppedError: The agent is stopped.
            MailboxFullError: Its bounded mailbox rejects the message.
        """
        cdef Agent* ag
        if slot < 0 or slot >= self._n_slots:
            return 0
        ag = &self._ag[slot]
        if self._cold[slot].gen != gen or not (ag.flags & F_LIVE):
            return 0
        ag.flags |= F_DIRTY  # the timer is gone, whatever happens next
        if guard == 1 and guard_value != ag.epoch:
            return 0
        if guard == 2 and guard_value != ag.processed + self._cold[slot].failed:
            return 0
        if ag.flags & F_STOPPED:
            raise AgentStoppedError(self._ids[slot], "is stopped")
        self._enqueue(slot, event, payload, lane, 0)
        return 1

    def timer_guard(self, int32_t slot):
        """(generation, state changes, events taken) of a slot: what a timer checks at firing."""
        if slot < 0 or slot >= self._n_slots:
            raise InvalidArgumentError(f"no slot {slot}")
        return (self._cold[slot].gen, self._ag[slot].epoch,
                self._ag[slot].processed + self._cold[slot].failed)

    def machine(self, agent_id):
        """The machine of ``agent_id``."""
        return <object>self._mt[self._ag[self._slot_of(agent_id)].mach].machine

    def data(self, agent_id):
        """The data object of ``agent_id``."""
        return self._data[self._slot_of(agent_id)]

    def depth(self, agent_id):
        """Messages queued for ``agent_id`` (front queue and lanes; not postponed ones)."""
        cdef int32_t slot = self._slot_of(agent_id)
        cdef int32_t b = self._ag[slot].box
        n = len(self._front[slot]) if self._ag[slot].flags & F_FRONT else 0
        return n + (self._pool.boxes[b].count if b >= 0 else 0)

    def queued(self, agent_id):
        """Queued messages of ``agent_id`` as ``(priority, event, payload)``, in process order."""
        cdef int32_t slot = self._slot_of(agent_id)
        cdef int32_t b = self._ag[slot].box
        cdef int lane
        cdef tuple events = <tuple>self._mt[self._ag[slot].mach].events
        cdef list out = []
        if self._ag[slot].flags & F_FRONT:
            out += [(_PRIORITIES[l], events[e], p) for e, p, l, _ in self._front[slot]]
        if b >= 0:
            for lane in range(3, -1, -1):
                if self._pool.boxes[b].head[lane] >= 0:
                    lane_items(&self._pool.boxes[b], &self._chunks, lane, out, events,
                               _PRIORITIES[lane])
        return out

    def postponed(self, agent_id):
        """Postponed messages of ``agent_id``, oldest first."""
        cdef int32_t slot = self._slot_of(agent_id)
        cdef tuple events = <tuple>self._mt[self._ag[slot].mach].events
        return [(_PRIORITIES[l], events[e], p) for e, p, l, _ in self._postponed.get(slot, ())]

    # -- export and load (snapshots: engine.store) --------------------------------------

    def export(self, agent_id):
        """Everything the dispatcher holds for ``agent_id``, as plain data: see the twin."""
        cdef int32_t slot = self._slot_of(agent_id)
        cdef Agent* ag = &self._ag[slot]
        cdef uint16_t f = ag.flags
        cdef int lane
        cdef list mail = []
        if ag.box >= 0:
            for lane in range(3, -1, -1):
                if self._pool.boxes[ag.box].head[lane] >= 0:
                    lane_raw(&self._pool.boxes[ag.box], &self._chunks, lane, mail)
        return {
            "id": self._ids[slot],
            "machine": <object>self._mt[ag.mach].machine,
            "data": self._data[slot],
            "state": ag.state,
            "epoch": ag.epoch,
            "since": ag.since,
            "processed": ag.processed,
            "failed": self._cold[slot].failed,
            "dropped": self._dropped[slot] if self._dropped != NULL else 0,
            "capacity": self._cold[slot].cap,
            "policy": _POLICY_DROP_OLDEST if f & F_DROP_OLDEST else _POLICY_REJECT,
            "paused": (f & F_PAUSED) != 0,
            "stopped": (f & F_STOPPED) != 0,
            "error": (f & F_ERROR) != 0,
            "backoff": (f & F_BACKOFF) != 0,
            "front": ([(e, p, l) for e, p, l, _ in self._front[slot]]
                      if f & F_FRONT else []),
            "mail": mail,
            "postponed": ([(e, p, l) for e, p, l, _ in self._postponed[slot]]
                          if f & F_POSTPONED else []),
        }

    def ready_order(self):
        """Ids of the agents on the ready queue, in the order they will run."""
        cdef int32_t slot
        out = []
        for slot in self._ready_slots():
            if self._ag[slot].flags & F_LIVE:
                out.append(self._ids[slot])
        return out

    def wake(self, agent_id):
        """Put an agent with mail on the ready queue (if it may run and is not on it)."""
        self._wake(self._slot_of(agent_id))

    def touch(self, agent_id):
        """Mark an agent changed (for ``take_dirty``): for changes made outside the
        dispatcher, such as its timers."""
        self._ag[self._slot_of(agent_id)].flags |= F_DIRTY

    @cython.boundscheck(False)
    @cython.wraparound(False)
    # -- transition records --------------------------------------------------------------

    def record(self, Py_ssize_t capacity):
        """Keep the last ``capacity`` transition records (0: keep none, and drop the ring).

        Records are numbered by ``record_seq`` whether they are kept or not, so a reader can
        always tell what it missed. A new capacity starts an empty ring.
        """
        if capacity < 0:
            raise InvalidArgumentError("capacity must be >= 0")
        if capacity == self._rcap:
            return
        self._drop_records()
        if capacity == 0:
            return
        arr = np.empty(capacity, dtype=RECORD_DTYPE)
        arr.fill(0)  # touched now: a fresh page costs a fault on first write (microseconds on
        cdef Rec[::1] view = arr  # a VM), which would otherwise land in the drain loop
        cdef PyObject** pay = <PyObject**>calloc(capacity, sizeof(PyObject*))
        cdef PyObject** ext = <PyObject**>calloc(capacity, sizeof(PyObject*))
        if pay == NULL or ext == NULL:
            free(pay)
            free(ext)
            raise MemoryError()
        memset(pay, 0, capacity * sizeof(PyObject*))  # (calloc's pages are touched lazily)
        memset(ext, 0, capacity * sizeof(PyObject*))
        self._rec_arr = arr
        self._rec = &view[0]
        self._rpay = pay
        self._rext = ext
        self._rpos = 0
        self._rstart = self._rseq
        self._rcap = capacity

    cdef void _drop_records(self) noexcept:
        """Forget the ring; its references are dropped after it is detached."""
        cdef Py_ssize_t i, n = self._rcap
        cdef PyObject** pay = self._rpay
        cdef PyObject** ext = self._rext
        self._rcap = self._rrefs = 0
        self._rpay = self._rext = NULL
        self._rec = NULL
        self._rec_arr = None
        if self._rgone is not None:
            self._rgone.clear()
        for i in range(n):
            Py_XDECREF(pay[i])
            Py_XDECREF(ext[i])
        free(pay)
        free(ext)

    @property
    def recording(self):
        """Records the ring keeps (0: not recording)."""
        return self._rcap

    @property
    def record_seq(self):
        """Records ever made: the sequence number of the next one."""
        return self._rseq

    @property
    def record_floor(self):
        """Sequence number of the oldest record kept (``record_seq`` when none is)."""
        return max(self._rstart, self._rseq - self._rcap) if self._rcap else self._rseq

    cdef int _forget_records(self, object gone) except -1:
        """Drop terminations older than every record kept: no record needs their ids. Past
        ``retention`` of them (agents hibernated and woken while few steps are made), also
        those of slots no record kept names."""
        cdef int64_t floor = self.record_floor
        while gone and gone[0][0] <= floor:
            gone.popleft()
        if len(gone) > max(1024, self._rcap):
            kept = set(self._rec_arr["slot"][:min(self._rcap, self._rseq - self._rstart)].tolist())
            live = [entry for entry in gone if entry[1] in kept]
            gone.clear()
            gone.extend(live)
        return 0

    @property
    def record_gone(self):
        """Terminations the records kept still need (ids of agents gone since): while there
        are none, a record's agent is its slot's agent now."""
        self._forget_records(self._rgone)
        return len(self._rgone)

    def read_records(self, int64_t seq, Py_ssize_t limit):
        """Records from ``seq`` on, at most ``limit``: ``(first, rows, payloads, extras, ids)``.

        ``first`` is the sequence number of ``rows[0]`` (above ``seq`` when records from
        ``seq`` were not kept: the reader missed ``first - seq``); ``rows`` is a copy
        (``RECORD_DTYPE``); ``payloads``, ``extras`` (a handler's outputs or None) and ``ids``
        (the agent of each record, also of agents terminated since) are lists (``payloads``
        and ``extras`` are None when the ring holds no payload and no handler's outputs).
        """
        cdef int64_t floor = self.record_floor
        cdef int64_t first = max(seq, floor)
        cdef Py_ssize_t n = <Py_ssize_t>max(<int64_t>0, min(<int64_t>limit, self._rseq - first))
        cdef Py_ssize_t i, at, head
        cdef uint8_t[::1] raw
        cdef Rec* out
        cdef PyObject* p
        cdef list payloads, extras, ids
        rows = np.empty(n, dtype=RECORD_DTYPE)
        if n == 0:
            return first, rows, [], [], []
        raw = rows.view(np.uint8)  # (a memoryview of the record dtype itself would parse
        out = <Rec*>&raw[0]        # its buffer format on every read: microseconds)
        at = self._rpos - <Py_ssize_t>(self._rseq - first)
        if at < 0:
            at += self._rcap
        head = min(n, self._rcap - at)
        memcpy(out, &self._rec[at], head * sizeof(Rec))
        if head < n:
            memcpy(&out[head], &self._rec[0], (n - head) * sizeof(Rec))
        payloads = extras = None  # none kept: the batch makes lists of None if asked
        if self._rrefs:
            payloads = [None] * n
            extras = [None] * n
            for i in range(n):
                p = self._rpay[(at + i) % self._rcap]
                if p != NULL:
                    payloads[i] = <object>p
                p = self._rext[(at + i) % self._rcap]
                if p != NULL:
                    extras[i] = <object>p
        ids = PyList_New(n)
        for i in range(n):  # (the idiom for a new list: each item set once, its reference
            agent_id = <object>PyList_GET_ITEM(self._ids, out[i].slot)  # given to it)
            Py_INCREF(agent_id)
            PyList_SET_ITEM(ids, i, agent_id)
        self._forget_records(self._rgone)
        if self._rgone:
            resolve_gone(ids, rows["slot"], first, self._rgone)
        return first, rows, payloads, extras, ids

    def take_dirty(self):
        """Slots (an int32 array, ascending) of the live agents changed since the last call:
        spawned, sent to (even if refused), stepped, paused, resumed, stopped, restarted, a
        timer fired, or ``touch``ed. Clears the marks: one pass over the slots."""
        cdef int32_t slot, k = 0
        cdef uint16_t f
        out = np.empty(self._n_slots, dtype=np.int32)
        cdef int32_t[::1] mv = out
        for slot in range(self._n_slots):
            f = self._ag[slot].flags
            if f & F_DIRTY:
                self._ag[slot].flags = f & ~F_DIRTY
                if f & F_LIVE and not (f & F_DEAD):
                    mv[k] = slot
                    k += 1
        return out[:k]

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def idle_since(self):
        """``(slots, since)``: the live agents with nothing queued, front or postponed, nor
        held back by their tenant's rate (what may hibernate), and the ``now`` reading when
        each last changed status: int32 and float64 arrays, in slot order."""
        cdef int32_t slot, k = 0
        cdef uint16_t f
        slots = np.empty(self._n_slots, dtype=np.int32)
        since = np.empty(self._n_slots, dtype=np.float64)
        cdef int32_t[::1] s_mv = slots
        cdef double[::1] t_mv = since
        for slot in range(self._n_slots):
            f = self._ag[slot].flags
            if (f & F_LIVE and not (f & (F_DEAD | F_QUEUED | F_FRONT | F_POSTPONED))
                    and self._ag[slot].box < 0):
                s_mv[k] = slot
                t_mv[k] = self._ag[slot].since
                k += 1
        slots, since = slots[:k], since[:k]
        held = self.held_slots()
        if held:
            keep = ~np.isin(slots, np.fromiter(held, dtype=np.int32, count=len(held)))
            slots, since = slots[keep], since[keep]
        return slots, since

    def held_slots(self):
        """Slots of the live agents that have messages held back by their tenant's rate."""
        cdef int32_t t
        held = set()
        for t in range(self._n_tn):
            q = self._tn_delayed[t]
            if q:
                for slot, gen, *_ in q:
                    if self._cold[<int32_t>slot].gen == <uint32_t>gen:
                        held.add(slot)
        return held

    def tenant_held(self, index):
        """``(messages its rate ever held back, held back now)`` for tenant ``index``."""
        cdef int32_t t = self._tenant(index)
        return self._tn[t].delayed, self._tn[t].ndelayed

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def export_plain(self, slots):
        """For the live agents in ``slots`` (an int32 array) that hold nothing but counters
        (no mail, front or postponed queue; not paused, stopped, in error or backoff; nothing
        dropped), what ``export`` would say, as columns: ``(positions, ids, machines, data,
        states, epochs, processed, failed, capacities, drop_oldest)``, lists indexed alike;
        ``positions`` are their places in ``slots``. Others are left to ``export``."""
        cdef const int32_t[::1] mv = np.ascontiguousarray(slots, dtype=np.int32)
        cdef Py_ssize_t i, n = mv.shape[0]
        cdef int32_t slot
        cdef uint16_t f
        cdef list pos = [], ids = [], machs = [], data = [], states = [], epochs = []
        cdef list processed = [], failed = [], caps = [], drop = []
        for i in range(n):
            slot = mv[i]
            if slot < 0 or slot >= self._n_slots:
                continue
            f = self._ag[slot].flags
            if (not (f & F_LIVE) or f & (F_DEAD | F_FRONT | F_POSTPONED | F_HOLD | F_ERROR)
                    or self._ag[slot].box >= 0
                    or (self._dropped != NULL and self._dropped[slot])):
                continue
            pos.append(i)
            ids.append(self._ids[slot])
            machs.append(<object>self._mt[self._ag[slot].mach].machine)
            data.append(self._data[slot])
            states.append(self._ag[slot].state)
            epochs.append(self._ag[slot].epoch)
            processed.append(self._ag[slot].processed)
            failed.append(self._cold[slot].failed)
            caps.append(self._cold[slot].cap)
            drop.append((f & F_DROP_OLDEST) != 0)
        return pos, ids, machs, data, states, epochs, processed, failed, caps, drop

    # -- tenants -------------------------------------------------------------------------

    def set_tenant(self, index, name, *, quantum, max_queued=0, wait=False, rate=0.0,
                   burst=0.0, deadline_ns=0, policy=DEADLINE_REPORT, count=False):
        """Create tenant ``index`` or change it (the runtime checks the values and keeps the
        names). The first call turns fair scheduling on for good: every agent so far is in
        tenant 0. A new quantum counts from the tenant's next round; limits from the next
        message. ``count``: keep its queued count as mail comes and goes (it is read at every
        spawn: ``max_agents``, ``max_memory``), as ``max_queued`` does."""
        cdef int32_t t
        cdef TenantRec* tn
        cdef double now
        cdef bint counting
        # every argument becomes a checked C value before any pointer into the table is
        # taken (converting one can run Python, which can add a tenant and move the table)
        if not (type(index) is int and 0 <= index < MAX_TENANTS):
            raise InvalidArgumentError(f"tenant index must be 0..{MAX_TENANTS - 1}: {index!r}")
        cdef int64_t c_quantum = quantum
        cdef int64_t c_max_queued = max_queued
        cdef bint c_wait = wait
        cdef double c_rate = rate
        cdef double c_burst = burst
        cdef int64_t c_deadline = deadline_ns
        cdef int32_t c_policy = policy
        if (c_quantum < 1 or c_max_queued < 0 or not (0.0 <= c_rate < INFINITY)
                or not (0.0 <= c_burst < INFINITY) or c_deadline < 0
                or not DEADLINE_REPORT <= c_policy <= DEADLINE_STOP):
            raise InvalidArgumentError("bad tenant settings (see engine.Limits)")
        t = index
        if not self.tenanted:
            self._enable_tenants()
        while self._n_tn <= t:
            self._add_tenant_row()
        if self._tn[t].dropped:
            raise InvalidArgumentError(f"tenant index {index} is still in use")
        now = self._status_time()  # (may run the clock: before the pointer is taken)
        self._tn_names[t] = name
        if self.sample_every and self._tn_rings[t] is None:
            self._tn_rings[t] = (LatencyRing(self._ring_size), LatencyRing(self._ring_size))
        tn = &self._tn[t]  # from here on, nothing runs Python until on_delay
        if not tn.live:
            memset(tn, 0, sizeof(TenantRec))
            tn.head = tn.tail = -1
            tn.live = 1
            tn.last = now
            self._tn_delayed[t] = None
        tn.quantum = c_quantum
        self._n_capped += (c_max_queued > 0) - (tn.max_queued > 0)
        tn.max_queued = c_max_queued
        counting = c_max_queued > 0 or bool(count)
        if counting != tn.counting:  # from now on, counted as it changes
            tn.queued = self._count_queued(t) if counting else 0
            tn.counting = counting
            if self._running and self._turn_slot >= 0 and self._tof[self._turn_slot] == t:
                self._tq = t if counting else -1  # the turn going on counts from now
        tn.wait = c_wait
        if c_rate != tn.rate or c_burst != tn.burst:
            tn.rate = c_rate
            tn.burst = c_burst
            tn.tokens = c_burst  # a changed bucket starts full
            tn.last = now
        tn.deadline_ns = c_deadline
        tn.policy = c_policy
        if tn.rate > 0 and tn.ndelayed and self.on_delay is not None:
            self.on_delay(t, self._due(t))  # the new rate may release them sooner

    cdef int _add_tenant_row(self) except -1:
        """One more (not live) row; the table and the active ring grow by doubling."""
        cdef int32_t new, i
        cdef int32_t* ring = NULL
        if self._n_tn == self._tn_cap:
            new = self._tn_cap * 2 if self._tn_cap else 8
            _grow(<void**>&self._tn, self._tn_cap, new, sizeof(TenantRec))
            _grow(<void**>&ring, 0, new, sizeof(int32_t))
            for i in range(self._alen):  # laid out again in order, starting at 0
                ring[i] = self._act[(self._ahead + i) % self._tn_cap]
            big_free(self._act, self._tn_cap * sizeof(int32_t))
            self._act = ring
            self._ahead = 0
            self._tn_cap = new
        memset(&self._tn[self._n_tn], 0, sizeof(TenantRec))
        self._tn[self._n_tn].head = self._tn[self._n_tn].tail = -1
        self._tn_names.append(None)
        self._tn_delayed.append(None)
        self._tn_rings.append(None)
        self._n_tn += 1
        return 0

    cdef int _enable_tenants(self) except -1:
        cdef int32_t i, n = self._rlen
        self._grow_tenant_slots(0, self._slot_cap)
        self._add_tenant_row()
        self._tn[0].live = 1
        self._tn_names[0] = "default"
        if self.sample_every:
            self._tn_rings[0] = (LatencyRing(self._ring_size), LatencyRing(self._ring_size))
        self._tn[0].quantum = self._budget
        self._tn[0].agents = len(self)
        self._tn[0].retired_processed = self.retired[0]  # everything so far was tenant 0's
        self._tn[0].retired_failed = self.retired[1]
        self.tenanted = True
        self._rlen = 0
        for i in range(n):  # the ring's agents, in order, become tenant 0's ready queue
            self._push_ready(self._ready[(self._rhead + i) & (self._slot_cap - 1)])
        self._rhead = 0
        return 0

    def free_tenant_index(self):
        """The lowest index ``set_tenant`` may create a tenant at (a removed tenant's index
        stays taken while dead agents of it wait on its ready queue)."""
        cdef int32_t i
        for i in range(1, self._n_tn):
            if not self._tn[i].live:
                return i
        return max(1, self._n_tn)

    def drop_tenant(self, index):
        """Remove a tenant that has no live agents (the runtime terminates them first); the
        messages its rate still holds back are dead-lettered. Returns how many."""
        cdef int32_t t = self._tenant(index)
        cdef Py_ssize_t n = 0
        if t == 0:
            raise InvalidArgumentError("the default tenant cannot be removed")
        if self._tn[t].agents:
            raise InvalidArgumentError(f"tenant {brief(self._tn_names[t])} still has agents")
        q = self._tn_delayed[t]
        while q:
            n += 1
            _, _, agent_id, mach, ev, payload, lane, request = q.popleft()
            self._tn[t].queued -= self._tn[t].counting
            self._tn[t].ndelayed -= 1
            error = AgentStoppedError(agent_id, "was terminated with its tenant")
            self._dead_letter(agent_id, &self._mt[<int32_t>mach], ev, payload, lane, _TERMINATED,
                              error, None)
            if request:
                self._answer(request, False, error)
        if self._tn[t].agents:  # a dead-letter hook spawned one meanwhile
            raise InvalidArgumentError(f"tenant {brief(self._tn_names[t])} still has agents")
        if self._tn[t].active:  # dead slots of it are still queued: keep the index until then
            self._tn[t].dropped = 1
        else:
            self._forget_tenant(t)
        return n

    cdef void _forget_tenant(self, int32_t t) noexcept:
        self._tn[t].live = 0
        self._tn[t].dropped = 0
        self._tn[t].counting = 0
        if self._tn[t].max_queued:
            self._tn[t].max_queued = 0
            self._n_capped -= 1

    cdef int32_t _tenant(self, index) except -1:
        if not (type(index) is int and 0 <= index < self._n_tn and self._tn[<int32_t>index].live
                and not self._tn[<int32_t>index].dropped):
            raise InvalidArgumentError(f"no tenant with index {brief(index)}")
        return index

    def tenant_of(self, agent_id):
        """The tenant index of a live agent."""
        cdef int32_t slot = self._slot_of(agent_id)
        return self._tof[slot] if self.tenanted else 0

    def tenant_agents(self, index):
        """Ids of the live agents of tenant ``index``, in slot order."""
        cdef int32_t slot
        cdef uint16_t t = index
        out = []
        for slot in range(self._n_slots):
            if ((self._ag[slot].flags & (F_LIVE | F_DEAD)) == F_LIVE
                    and (self._tof[slot] if self.tenanted else 0) == t):
                out.append(self._ids[slot])
        return out

    def tenant_indexes(self):
        """The tenant index per slot (zeros until tenants are set; stale for free slots)."""
        if not self.tenanted or self._tof_arr is None:
            return np.zeros(self._n_slots, dtype=np.uint16)
        return self._tof_arr[:self._n_slots].copy()

    def tenant_table(self):
        """One ``TENANT_DTYPE`` row per tenant index (empty until tenants are set)."""
        cdef int32_t t
        cdef TenantRec* tn
        out = np.zeros(self._n_tn, dtype=TENANT_DTYPE)
        queued = self._count_all_queued()
        for t in range(self._n_tn):
            tn = &self._tn[t]
            if not tn.live or tn.dropped:
                continue
            out[t] = (tn.agents, tn.queued if tn.counting else queued[t], tn.ndelayed, tn.delayed, tn.rejected, tn.overruns,
                      tn.retired_processed, tn.retired_failed, tn.nready, tn.quantum,
                      tn.deficit, tn.served)
        return out

    def tenant_load(self, index):
        """``(live agents, queued messages)`` of tenant ``index``."""
        cdef int32_t t = self._tenant(index)
        return self._tn[t].agents, self._queued(t)

    cdef int64_t _queued(self, int32_t t) except -1:
        """Messages queued for tenant ``t``'s agents, rate-delayed ones included: kept as
        mail comes and goes while the tenant has ``max_queued`` (which needs it at every
        send), else counted now (so that a tenant without the limit does not pay a shared
        counter on every message: one counter that all sends and pops update is a chain of
        dependent writes the CPU cannot overlap)."""
        if self._tn[t].counting:
            return self._tn[t].queued
        return self._count_queued(t)

    cdef list _count_all_queued(self):
        """Every tenant's queued count, summed in one pass over the slots."""
        cdef int32_t slot, t
        cdef list out = [0] * self._n_tn
        for t in range(self._n_tn):
            out[t] = self._tn[t].ndelayed
        if self._tof == NULL:
            return out
        counts = np.zeros(self._n_tn, dtype=np.int64)
        cdef int64_t[::1] c = counts
        for slot in range(self._n_slots):
            if self._ag[slot].box >= 0 and (self._ag[slot].flags & (F_LIVE | F_DEAD)) == F_LIVE:
                c[self._tof[slot]] += self._pool.boxes[self._ag[slot].box].count
        for t in range(self._n_tn):
            out[t] += c[t]
        return out

    cdef int64_t _count_queued(self, int32_t t) except -1:
        cdef int32_t slot
        cdef int64_t n = self._tn[t].ndelayed
        for slot in range(self._n_slots):
            if (self._tof[slot] == t and self._ag[slot].box >= 0
                    and (self._ag[slot].flags & (F_LIVE | F_DEAD)) == F_LIVE):
                n += self._pool.boxes[self._ag[slot].box].count
        return n

    def tenant_retire(self, index, int64_t processed, int64_t failed):
        """Add to the tenant's counts of terminated agents (negative: take away; hibernation
        moves a sleeping agent's counts out, and they come back with it)."""
        cdef int32_t t = self._tenant(index)
        self._tn[t].retired_processed += processed
        self._tn[t].retired_failed += failed

    def tenant_rings(self, index):
        """The tenant's (step, wait) latency rings, if sampling is on."""
        return self._tn_rings[self._tenant(index)]

    def tenant_overrun(self, index):
        """Count an overrun the runtime saw (a ``Work`` task past the deadline)."""
        self._tn[self._tenant(index)].overruns += 1

    def release_delayed(self, index):
        """Queue the messages a tenant's rate held back, in order, as far as its tokens
        allow; return when the next is due (clock seconds), or -1.0 when none is left.
        A message whose agent is gone or stopped meanwhile is dead-lettered, and one its
        agent's full mailbox refuses too (with the error)."""
        cdef int32_t t = self._tenant(index)
        cdef int32_t slot
        q = self._tn_delayed[t]
        while q:
            if self._tn[t].rate > 0 and not self._token(t, self._status_time()):
                return self._due(t)
            slot, gen, agent_id, mach, ev, payload, lane, request = q.popleft()
            self._tn[t].queued -= self._tn[t].counting
            self._tn[t].ndelayed -= 1
            error = None
            if self._cold[slot].gen != <uint32_t>gen or not (self._ag[slot].flags & F_LIVE):
                error = AgentStoppedError(agent_id, "was terminated")
            elif self._ag[slot].flags & F_STOPPED:
                error = AgentStoppedError(agent_id, "is stopped")
            else:
                self._releasing = True  # past the tenant's limits: it was counted
                try:
                    self._enqueue(slot, ev, payload, lane, request)
                except (MailboxFullError, AgentStoppedError) as exc:
                    error = exc
                finally:
                    self._releasing = False
            if error is not None:
                self._tn[t].tokens += 1.0  # its token goes to the next one
                self._dead_letter(agent_id, &self._mt[<int32_t>mach], ev, payload, lane,
                                  _UNDELIVERABLE, error, None)
                if request:
                    self._answer(request, False, error)
        return -1.0

    def load(self, agent_id, saved, wake=True):
        """Give a just-spawned agent what ``export`` returned (its mail bypasses capacity);
        everything is checked before anything changes. ``wake=False`` leaves it off the
        ready queue (``wake`` it later, to restore the queue's order)."""
        cdef int32_t slot = self._slot_of(agent_id)
        cdef MachTab* mt = &self._mt[self._ag[slot].mach]
        cdef Agent* ag
        cdef int32_t b
        if self._ag[slot].box >= 0 or self._ag[slot].flags & (F_FRONT | F_POSTPONED):
            raise InvalidArgumentError(f"agent {brief(agent_id)} already has mail")
        state = saved["state"]
        if not 0 <= state < mt.n_states:
            raise InvalidArgumentError(f"state {state!r} is not a state of this machine")
        for part in ("front", "mail", "postponed"):
            for ev, _, lane in saved[part]:
                if not (0 <= ev < mt.n_events and 0 <= lane <= 3):
                    raise InvalidArgumentError(f"bad message ({ev!r}, lane {lane!r}) in {part}")
        ag = &self._ag[slot]
        ag.state = state
        ag.epoch = saved["epoch"]
        ag.since = saved["since"]
        ag.processed = saved["processed"]
        self._cold[slot].failed = saved["failed"]
        if saved["dropped"]:
            self._count_drops()
            self._dropped[slot] = saved["dropped"]
        for ev, payload, lane in saved["mail"]:
            if self._chunks.nfree == 0:
                _grow_chunks(&self._chunks)
            if self._ag[slot].box < 0:
                b = box_alloc(&self._pool)
                self._ag[slot].box = b
            if payload is not None:
                Py_INCREF(payload)
            lane_push(&self._pool.boxes[self._ag[slot].box], &self._chunks, lane, ev,
                      NULL if payload is None else <PyObject*>payload, 0)
            if self.tenanted and self._tn[self._tof[slot]].counting:
                self._tn[self._tof[slot]].queued += 1
        if saved["front"]:
            self._front[slot] = deque((e, p, l, 0) for e, p, l in saved["front"])
            self._ag[slot].flags |= F_FRONT
        if saved["postponed"]:
            self._postponed[slot] = [(e, p, l, 0) for e, p, l in saved["postponed"]]
            self._ag[slot].flags |= F_POSTPONED
        self._ag[slot].flags |= ((F_PAUSED if saved["paused"] else 0)
                                 | (F_STOPPED if saved["stopped"] else 0)
                                 | (F_ERROR if saved["error"] else 0)
                                 | (F_BACKOFF if saved["backoff"] else 0))
        if wake:
            self._wake(slot)



cdef object _POLICY_REJECT = OverflowPolicy.REJECT
cdef object _POLICY_DROP_OLDEST = OverflowPolicy.DROP_OLDEST


cdef list _as_list(object items):
    """``items`` as a list without copying a list (numpy arrays through ``tolist``)."""
    if type(items) is list:
        return <list>items
    if isinstance(items, np.ndarray):
        if items.ndim != 1:
            raise InvalidArgumentError(f"expected a 1-d array, got shape {items.shape}")
        return items.tolist()
    if isinstance(items, (str, bytes)):
        raise InvalidArgumentError(f"expected a sequence, got {brief(items)}")
    return list(items)


cdef list _payloads(object payloads, Py_ssize_t n):
    cdef list pl
    if payloads is None:
        return None
    pl = _as_list(payloads)
    if len(pl) != n:
        raise InvalidArgumentError(f"payloads has {len(pl)} items for {n} messages")
    return pl


cdef inline object _payload_at(list payloads, Py_ssize_t i):
    """``payloads[i]`` (a new reference), None without payloads; the caller's list, so its
    size is checked: an instrument run by a send may have changed it."""
    if payloads is None:
        return None
    if i >= PyList_GET_SIZE(payloads):
        raise InvalidArgumentError("payloads changed size while they were being queued")
    return <object>PyList_GET_ITEM(payloads, i)


cdef int lane_raw(Box* box, ChunkPool* pool, int lane, list out) except -1:
    """Append ``(event code, payload, lane)`` for each message of a lane, oldest first."""
    cdef int32_t c = box.head[lane]
    cdef int pos = box.hpos[lane]
    cdef int end
    cdef Msg* m
    while c >= 0:
        end = box.tpos[lane] if c == box.tail[lane] else CHUNK
        while pos < end:
            m = &pool.chunks[c].m[pos]
            out.append((m.event & ~STAMPED, None if m.payload == NULL else <object>m.payload,
                        lane))
            pos += 1
        c = -1 if c == box.tail[lane] else pool.next[c]
        pos = 0
    return 0
