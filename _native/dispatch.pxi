# The Dispatcher: agent slots, four-lane mailboxes, the ready queue and the drain loop.
# Behaviour is defined by the twin (engine/_hotpath_py.py); keep the two in step.

cdef enum:
    F_LIVE = 1
    F_QUEUED = 2
    F_DEAD = 4          # terminated while on the ready queue; released when popped
    F_ERROR = 8
    F_DROP_OLDEST = 16
    F_REJECT = 32       # bounded with the REJECT policy


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
    """

    # configuration and records
    cdef object _sink
    cdef bint _has_sink
    cdef public object dead_letters
    cdef public Py_ssize_t dead_letter_count
    cdef public list retired
    cdef int32_t _budget
    cdef Py_ssize_t _out_limit
    cdef bint _running
    # machines
    cdef dict _machine_index
    cdef list _machines
    cdef list _keep
    cdef list _values
    cdef dict _value_codes
    cdef MachTab* _mt
    cdef int32_t _n_mach
    cdef int32_t _mt_cap
    # agent slots: one Agent record each (in a numpy array), flags apart (a byte each, so
    # batch validation scans a compact array)
    cdef int32_t _n_slots
    cdef int32_t _slot_cap
    cdef int32_t _free_slot
    cdef object _agents
    cdef Agent* _ag
    cdef object _dropped_arr  # created with the first bounded mailbox
    cdef int64_t* _dropped
    cdef uint8_t* _flags
    cdef list _ids
    cdef list _data
    cdef IdTable _tab
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
    cdef Py_ssize_t _olen
    cdef Py_ssize_t _ocap
    cdef list _extras

    def __cinit__(self):
        self._free_slot = -1
        idt_init(&self._tab, 8)

    def __init__(self, *, sink=None, dead_letters=None, int budget=64,
                 Py_ssize_t output_buffer=65536):
        if budget < 1 or output_buffer < 1:
            raise InvalidArgumentError("budget and output_buffer must be positive")
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
        self._value_codes = {}
        self._ids = []
        self._data = []
        self._extras = []
        self._agents = np.zeros(0, dtype=AGENT_DTYPE)

    def __dealloc__(self):
        cdef int32_t slot, b
        cdef Box* box
        cdef Msg m
        for slot in range(self._n_slots):  # release payloads still queued
            b = self._ag[slot].box
            if b < 0 or not (self._flags[slot] & F_LIVE):
                continue
            box = &self._pool.boxes[b]
            while box.count:
                m = lane_pop(box, &self._chunks, top_lane(box))
                Py_XDECREF(m.payload)
        big_free(self._chunks.chunks, self._chunks.cap * sizeof(Chunk))
        big_free(self._chunks.next, self._chunks.cap * sizeof(int32_t))
        big_free(self._chunks.free, self._chunks.cap * sizeof(int32_t))
        big_free(self._pool.boxes, self._pool.cap * sizeof(Box))
        big_free(self._pool.free, self._pool.cap * sizeof(int32_t))
        big_free(self._tab.cells, (self._tab.mask + 1) * sizeof(int32_t))
        big_free(self._flags, self._slot_cap * sizeof(uint8_t))
        big_free(self._ready, self._slot_cap * sizeof(int32_t))
        big_free(self._oslot, self._ocap * sizeof(int32_t))
        big_free(self._ocode, self._ocap * sizeof(int32_t))
        free(self._mt)

    # -- machines ------------------------------------------------------------------------

    def register(self, machine):
        """Register ``machine`` (once) and return its index in this dispatcher."""
        cdef MachTab* mt
        idx = self._machine_index.get(id(machine))
        if idx is not None:
            return idx
        if not isinstance(machine, Machine):
            raise TypeError(f"expected an engine.Machine, got {type(machine)!r}")
        codes = [self._intern(v) for v in machine.outputs]
        out = np.array([codes[c] if c >= 0 else -1 for c in machine.output_table.tolist()],
                       dtype=np.int32)
        if self._n_mach == self._mt_cap:
            mt = <MachTab*>realloc(self._mt, (self._mt_cap * 2 + 4) * sizeof(MachTab))
            if mt == NULL:
                raise MemoryError()
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
        self._machines.append(machine)
        self._keep.append((out, machine.next_table, machine.handler_table, machine.handlers,
                           machine.event_index, machine.events, machine.states))
        idx = self._n_mach
        self._machine_index[id(machine)] = idx
        self._n_mach += 1
        return idx

    def _intern(self, value):
        code = self._value_codes.get(value)
        if code is None:
            code = self._value_codes[value] = len(self._values)
            self._values.append(value)
        return code

    @property
    def output_values(self):
        """Interned machine outputs, indexed by non-negative output codes."""
        return self._values

    # -- agents --------------------------------------------------------------------------

    cdef int _grow_slots(self) except -1:
        cdef int32_t old = self._slot_cap
        cdef int32_t new = old * 2 if old else 64
        cdef int32_t* ring = NULL
        cdef Py_ssize_t i
        cdef uint8_t[::1] raw
        cdef int64_t[::1] counts
        _grow(<void**>&self._flags, old, new, sizeof(uint8_t))
        memset(&self._flags[old], 0, new - old)
        # the ready ring is laid out again in order, starting at 0
        _grow(<void**>&ring, 0, new, sizeof(int32_t))
        for i in range(self._rlen):
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
        if self._dropped_arr is not None:
            self._dropped_arr = np.concatenate([self._dropped_arr, np.zeros(new - old, np.int64)])
            counts = self._dropped_arr
            self._dropped = &counts[0]
        self._slot_cap = new
        return 0

    cdef int _count_drops(self) except -1:
        """Create the dropped counters (when the first bounded mailbox appears)."""
        cdef int64_t[::1] counts
        if self._dropped_arr is None:
            self._dropped_arr = np.zeros(self._slot_cap, dtype=np.int64)
            counts = self._dropped_arr
            self._dropped = &counts[0]
        return 0

    def spawn(self, machine, agent_id, data=None, *, capacity=0, policy=0, state=None):
        """Create an agent in ``state`` (default: the machine's initial state)."""
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
        try:
            hash(agent_id)
        except TypeError:
            raise InvalidArgumentError(f"agent id {agent_id!r} is not hashable") from None
        if idt_lookup(&self._tab, self._ids, agent_id) >= 0:
            raise AgentExistsError(agent_id)
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
        ag.cap = capacity
        ag.processed = ag.failed = 0
        if capacity:
            self._count_drops()
            self._dropped[slot] = 0
        self._flags[slot] = F_LIVE | (
            (F_DROP_OLDEST if policy == OverflowPolicy.DROP_OLDEST else F_REJECT) if capacity else 0)
        idt_insert(&self._tab, self._ids, agent_id, slot)
        return _make_ref(self, slot)

    def terminate(self, agent_id):
        """Remove an agent; its queued mail becomes TERMINATED dead letters (returns how many)."""
        cdef int32_t slot = self._slot_of(agent_id)
        cdef Agent* ag = &self._ag[slot]
        cdef MachTab* mt = &self._mt[ag.mach]
        cdef Box* box
        cdef Msg m
        cdef int lane
        cdef Py_ssize_t n = 0
        while self._ag[slot].box >= 0:
            box = &self._pool.boxes[self._ag[slot].box]
            lane = top_lane(box)
            m = lane_pop(box, &self._chunks, lane)
            if box.count == 0:
                box_free(&self._pool, self._ag[slot].box)
                self._ag[slot].box = -1
            payload = take(m.payload)
            self._dead_letter(agent_id, mt, m.event, payload, lane, _TERMINATED, None, None)
            n += 1
        idt_remove(&self._tab, self._ids, agent_id)
        ag = &self._ag[slot]
        self.retired[0] += ag.processed
        self.retired[1] += ag.failed
        ag.processed = ag.failed = 0
        if self._dropped != NULL:
            self.retired[2] += self._dropped[slot]
            self._dropped[slot] = 0
        ag.gen += 1
        self._ids[slot] = None
        self._data[slot] = None
        if self._flags[slot] & F_QUEUED:
            self._flags[slot] = F_DEAD | F_QUEUED
        else:
            self._release(slot)
        return n

    cdef void _release(self, int32_t slot) noexcept:
        self._flags[slot] = 0
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
        except TypeError:
            return False

    def agent_ids(self):
        """Ids of live agents, in slot order."""
        cdef int32_t slot
        return [self._ids[slot] for slot in range(self._n_slots) if self._flags[slot] & F_LIVE]

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

    # -- sending -------------------------------------------------------------------------

    def send_nowait(self, agent_id, event, payload=None, priority=1):
        """Queue ``event`` for ``agent_id`` at ``priority``; see ``Runtime.send_nowait``."""
        cdef int32_t slot = self._slot_of(agent_id)
        self._enqueue(slot, self._event_code(slot, event), payload, _lane(priority))

    def send_many_slots(self, slots, events, priorities=1, payloads=None):
        """Queue many messages at once; all are validated before any is queued."""
        sl, ev, pr = batch_arrays(slots, events, priorities)
        cdef const int32_t[::1] s_mv = sl
        cdef const int32_t[::1] e_mv = ev
        cdef const int32_t[::1] p_mv = pr
        cdef Py_ssize_t i, n = s_mv.shape[0]
        cdef int32_t slot, e, p, min_events = 0x7FFFFFFF
        cdef uint8_t f
        cdef list pl = None
        cdef dict bounded = None
        cdef Box* box
        if payloads is not None:
            pl = list(payloads)
            if len(pl) != n:
                raise InvalidArgumentError(f"payloads has {len(pl)} items for {n} messages")
        for i in range(self._n_mach):
            min_events = min(min_events, self._mt[i].n_events)
        for i in range(n):  # validate: touches the flag bytes, agent records only if needed
            slot, e, p = s_mv[i], e_mv[i], p_mv[i]
            if slot < 0 or slot >= self._n_slots:
                raise AgentNotFoundError(f"<slot {slot}>")
            f = self._flags[slot]
            if (f & (F_LIVE | F_DEAD)) != F_LIVE:
                raise AgentNotFoundError(f"<slot {slot}>")
            if (e < 0 or e >= min_events) and (e < 0 or e >= self._mt[self._ag[slot].mach].n_events):
                raise UnknownEventError((<object>self._mt[self._ag[slot].mach].machine).name, e)
            if p < 0 or p > 3:
                raise InvalidArgumentError(f"priority must be 0..3, got {p}")
            if f & F_REJECT:
                if bounded is None:
                    bounded = {}
                bounded[slot] = bounded.get(slot, 0) + 1
        if bounded is not None:
            for key, k in bounded.items():
                slot = key
                depth = self._pool.boxes[self._ag[slot].box].count if self._ag[slot].box >= 0 else 0
                if depth + k > self._ag[slot].cap:
                    raise MailboxFullError(self._ids[slot], self._ag[slot].cap)
        if pl is None:
            for i in range(n):
                self._enqueue(s_mv[i], e_mv[i], None, p_mv[i])
        else:
            for i in range(n):
                self._enqueue(s_mv[i], e_mv[i], pl[i], p_mv[i])

    cdef int32_t _slot_of(self, object agent_id) except -1:
        cdef int32_t slot
        try:
            slot = idt_lookup(&self._tab, self._ids, agent_id)
        except TypeError:
            slot = -1
        if slot < 0:
            raise AgentNotFoundError(agent_id)
        return slot

    cdef int32_t _check(self, int32_t slot, uint32_t gen) except -1:
        if self._ag[slot].gen != gen or not (self._flags[slot] & F_LIVE):
            raise AgentStoppedError("(stale reference)", "was terminated")
        return slot

    cdef int32_t _event_code(self, int32_t slot, object event) except -1:
        cdef MachTab* mt = &self._mt[self._ag[slot].mach]
        cdef PyObject* code
        cdef long v
        if type(event) is str:
            code = PyDict_GetItem(<object>mt.event_index, event)
            if code != NULL:
                return <int32_t>PyLong_AsLong(<object>code)
        elif isinstance(event, int):
            try:
                v = event
            except OverflowError:
                v = -1
            if 0 <= v < mt.n_events:
                return <int32_t>v
        raise UnknownEventError((<object>mt.machine).name, event)

    cdef int _enqueue(self, int32_t slot, int32_t ev, object payload, int lane) except -1:
        cdef Agent* ag = &self._ag[slot]
        cdef int32_t b = ag.box
        cdef PyObject* ref = NULL
        if ag.cap and b >= 0 and self._pool.boxes[b].count >= ag.cap:
            if not (self._flags[slot] & F_DROP_OLDEST):
                raise MailboxFullError(self._ids[slot], ag.cap)
            if self._drop_for(slot, ev, payload, lane):
                return 0  # the newcomer itself was dropped
            ag = &self._ag[slot]
            b = ag.box
        if b < 0:
            b = box_alloc(&self._pool)
            ag.box = b
        if payload is not None:
            ref = <PyObject*>payload
            Py_INCREF(payload)
        try:
            lane_push(&self._pool.boxes[b], &self._chunks, lane, ev, ref)
        except MemoryError:
            Py_XDECREF(ref)
            if self._pool.boxes[b].count == 0:
                box_free(&self._pool, b)
                ag.box = -1
            raise
        if not (self._flags[slot] & F_QUEUED):
            self._flags[slot] |= F_QUEUED
            self._ready_push(slot)
        return 0

    cdef int _drop_for(self, int32_t slot, int32_t ev, object payload, int lane) except -1:
        """Make room in a full DROP_OLDEST mailbox; return 1 if the newcomer is dropped."""
        cdef Agent* ag = &self._ag[slot]
        cdef Box* box = &self._pool.boxes[ag.box]
        cdef MachTab* mt = &self._mt[ag.mach]
        cdef int victim = -1
        cdef int lo
        cdef Msg m
        for lo in range(lane + 1):
            if box.head[lo] >= 0:
                victim = lo
                break
        self._dropped[slot] += 1
        if victim < 0:
            self._dead_letter(self._ids[slot], mt, ev, payload, lane, _DROPPED, None, None)
            return 1
        m = lane_pop(box, &self._chunks, victim)
        if box.count == 0:
            box_free(&self._pool, ag.box)
            ag.box = -1
        old_payload = take(m.payload)
        self._dead_letter(self._ids[slot], mt, m.event, old_payload, victim, _DROPPED, None, None)
        return 0

    cdef inline void _ready_push(self, int32_t slot) noexcept:
        self._ready[(self._rhead + self._rlen) % self._slot_cap] = slot
        self._rlen += 1

    # -- running -------------------------------------------------------------------------

    def run(self, Py_ssize_t limit=-1):
        """Process up to ``limit`` messages (all, if negative); return how many were taken.

        Raises:
            RuntimeBusyError: If called from inside a run (a handler).
        """
        cdef Py_ssize_t done = 0
        cdef Py_ssize_t budget
        cdef int32_t slot
        if self._running:
            raise RuntimeBusyError("run() called from inside a run (from a handler?)")
        self._running = True
        try:
            while self._rlen > 0 and (limit < 0 or done < limit):
                slot = self._ready[self._rhead]
                self._rhead = (self._rhead + 1) % self._slot_cap
                self._rlen -= 1
                if self._flags[slot] & F_DEAD:
                    self._release(slot)
                    continue
                budget = self._budget if limit < 0 else min(self._budget, limit - done)
                try:
                    done += self._turn(slot, budget)
                finally:
                    if self._flags[slot] & F_DEAD:
                        self._release(slot)
                    elif self._ag[slot].box >= 0:
                        self._ready_push(slot)
                    else:
                        self._flags[slot] &= ~F_QUEUED
                if self._olen >= self._out_limit:
                    self._flush()
        finally:
            self._running = False
        self._flush()
        return done

    cdef Py_ssize_t _turn(self, int32_t slot, Py_ssize_t budget) except -1:
        cdef Py_ssize_t k = 0
        cdef int32_t b
        cdef int lane
        cdef Box* box
        cdef Msg m
        while k < budget:
            b = self._ag[slot].box
            if b < 0:
                break
            box = &self._pool.boxes[b]
            lane = top_lane(box)
            m = lane_pop(box, &self._chunks, lane)
            if box.count == 0:
                box_free(&self._pool, b)
                self._ag[slot].box = -1
            k += 1
            if m.payload == NULL and self._mt[self._ag[slot].mach].handler[
                    self._ag[slot].state * self._mt[self._ag[slot].mach].n_events + m.event] < 0:
                self._step_table(slot, m.event, lane)  # the common case: no Python at all
            else:
                self._step(slot, m.event, take(m.payload), lane)
            if self._flags[slot] & F_DEAD:
                break
        return k

    cdef inline int _step_table(self, int32_t slot, int32_t ev, int lane) except -1:
        """A step with no handler and no payload: table lookups and counters only."""
        cdef Agent* ag = &self._ag[slot]
        cdef MachTab* mt = &self._mt[ag.mach]
        cdef int32_t cell = ag.state * mt.n_events + ev
        cdef int32_t nxt = mt.next[cell]
        cdef int32_t code
        if nxt < 0:
            return self._step(slot, ev, None, lane)
        ag.state = nxt
        code = mt.out[cell]
        if code >= 0 and self._has_sink:
            self._out_push(slot, code)
        ag.processed += 1
        self._flags[slot] &= ~F_ERROR
        return 0

    cdef int _step(self, int32_t slot, int32_t ev, object payload, int lane) except -1:
        cdef Agent* ag = &self._ag[slot]
        cdef MachTab* mt = &self._mt[ag.mach]
        cdef int32_t s = ag.state
        cdef int32_t cell = s * mt.n_events + ev
        cdef int32_t h = mt.handler[cell]
        cdef int32_t nxt
        cdef int32_t code
        if h >= 0:
            return self._step_handler(slot, ev, payload, lane, cell, h)
        nxt = mt.next[cell]
        if nxt < 0:
            if mt.ignore:
                ag.processed += 1
                self._flags[slot] &= ~F_ERROR
                return 0
            err = InvalidTransitionError((<object>mt.machine).name,
                                         (<tuple>mt.states)[s], (<tuple>mt.events)[ev])
            return self._fail(slot, self._ids[slot], s, ev, payload, lane, _INVALID, err)
        ag.state = nxt
        code = mt.out[cell]
        if code >= 0 and self._has_sink:
            self._out_push(slot, code)
        ag.processed += 1
        self._flags[slot] &= ~F_ERROR
        return 0

    cdef int _step_handler(self, int32_t slot, int32_t ev, object payload, int lane,
                           int32_t cell, int32_t h) except -1:
        cdef MachTab* mt = &self._mt[self._ag[slot].mach]
        cdef int32_t s = self._ag[slot].state
        cdef int32_t nxt = mt.next[cell]
        cdef int32_t code = mt.out[cell]
        cdef uint32_t gen = self._ag[slot].gen
        cdef AgentContext ctx = AgentContext.__new__(AgentContext)
        cdef Event event = Event.__new__(Event)
        cdef tuple extras = None
        agent_id = self._ids[slot]
        ctx._d = self
        ctx._slot = slot
        ctx._gen = gen
        event.name = (<tuple>mt.events)[ev]
        event.payload = payload
        event._lane = lane
        try:
            result = (<list>mt.handlers)[h](ctx, event)
            if self._ag[slot].gen != gen:  # the handler terminated its own agent
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
        except Exception as exc:
            err = HandlerError(agent_id, (<tuple>mt.states)[s], event.name, exc)
            return self._fail(slot, agent_id, s, ev, payload, lane, _HANDLER_FAILED, err)
        except BaseException as exc:  # KeyboardInterrupt and friends: record, then propagate
            self._fail(slot, agent_id, s, ev, payload, lane, _HANDLER_FAILED, exc)
            raise
        self._ag[slot].state = nxt
        if self._has_sink:
            if extras is None:
                if code >= 0:
                    self._out_push(slot, code)
            else:
                for value in extras:
                    self._extras.append(value)
                    self._out_push(slot, -<int32_t>len(self._extras))
        self._ag[slot].processed += 1
        self._flags[slot] &= ~F_ERROR
        return 0

    cdef inline int _out_push(self, int32_t slot, int32_t code) except -1:
        cdef Py_ssize_t cap
        if self._olen == self._ocap:
            cap = self._ocap * 2 if self._ocap else 1024
            _grow(<void**>&self._oslot, self._ocap, cap, sizeof(int32_t))
            _grow(<void**>&self._ocode, self._ocap, cap, sizeof(int32_t))
            self._ocap = cap
        self._oslot[self._olen] = slot
        self._ocode[self._olen] = code
        self._olen += 1
        return 0

    cdef int _fail(self, int32_t slot, object agent_id, int32_t state, int32_t ev,
                   object payload, int lane, object reason, object error) except -1:
        """Record a failed message: count it, flag ERROR (if still alive), dead-letter it."""
        cdef MachTab* mt = &self._mt[self._ag[slot].mach]
        self._ag[slot].failed += 1
        if self._ids[slot] is agent_id:
            self._flags[slot] |= F_ERROR
        return self._dead_letter(agent_id, mt, ev, payload, lane, reason, error,
                                 (<tuple>mt.states)[state])

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
        if n == 0:
            return 0
        slots = np.empty(n, dtype=np.int32)
        codes = np.empty(n, dtype=np.int32)
        s_mv = slots
        c_mv = codes
        memcpy(&s_mv[0], self._oslot, n * sizeof(int32_t))
        memcpy(&c_mv[0], self._ocode, n * sizeof(int32_t))
        ids = [self._ids[self._oslot[i]] for i in range(n)]
        batch = OutputBatch(ids, slots, codes, self._values, self._extras)
        self._olen = 0
        self._extras = []
        self._sink(batch)
        return 0

    # -- inspection ----------------------------------------------------------------------

    @property
    def ready(self):
        """Agents on the ready queue (with mail and not yet drained)."""
        cdef Py_ssize_t i, n = 0
        for i in range(self._rlen):
            if not (self._flags[self._ready[(self._rhead + i) % self._slot_cap]] & F_DEAD):
                n += 1
        return n

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
        return self._agents["failed"][:self._n_slots]

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
        if self._flags[slot] & F_ERROR:
            return _STATUS_ERROR
        return _STATUS_PROCESSING if self._ag[slot].box >= 0 else _STATUS_IDLE

    def machine(self, agent_id):
        """The machine of ``agent_id``."""
        return <object>self._mt[self._ag[self._slot_of(agent_id)].mach].machine

    def data(self, agent_id):
        """The data object of ``agent_id``."""
        return self._data[self._slot_of(agent_id)]

    def depth(self, agent_id):
        """Messages queued for ``agent_id``."""
        cdef int32_t b = self._ag[self._slot_of(agent_id)].box
        return self._pool.boxes[b].count if b >= 0 else 0

    def queued(self, agent_id):
        """Queued messages of ``agent_id`` as ``(priority, event, payload)``, in process order."""
        cdef int32_t slot = self._slot_of(agent_id)
        cdef int32_t b = self._ag[slot].box
        cdef int lane
        cdef list out = []
        if b >= 0:
            for lane in range(3, -1, -1):
                if self._pool.boxes[b].head[lane] >= 0:
                    lane_items(&self._pool.boxes[b], &self._chunks, lane, out,
                               <tuple>self._mt[self._ag[slot].mach].events, _PRIORITIES[lane])
        return out
