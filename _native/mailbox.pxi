# Mailboxes: a pool of four-lane boxes and a pool of message chunks, free lists over
# realloc-grown C arrays, linked by index (indexes survive a realloc, pointers do not).

cdef int _grow_chunks(ChunkPool* p) except -1:
    cdef int32_t old = p.cap
    cdef int32_t new = old * 2 if old else 256
    cdef int32_t i
    if new <= old:
        raise MemoryError("message pool is full")
    _grow(<void**>&p.chunks, old, new, sizeof(Chunk))
    _grow(<void**>&p.next, old, new, sizeof(int32_t))
    _grow(<void**>&p.free, old, new, sizeof(int32_t))
    for i in range(new - old):  # lowest index on top
        p.free[p.nfree + i] = new - 1 - i
    p.nfree += new - old
    p.cap = new
    return 0


cdef bint _grow_stamps(ChunkPool* p) noexcept:
    """Double the stamp pool; False (nothing changed) when memory is short."""
    cdef int32_t old = p.st_cap
    cdef int32_t new = old * 2 if old else 256
    cdef int32_t i
    cdef void* q
    if new <= old:
        return False
    q = big_grow(p.st_time, old * sizeof(int64_t), new * sizeof(int64_t))
    if q == NULL:
        return False
    p.st_time = <int64_t*>q
    q = big_grow(p.st_req, old * sizeof(int32_t), new * sizeof(int32_t))
    if q == NULL:
        return False
    p.st_req = <int32_t*>q
    q = big_grow(p.st_free, old * sizeof(int32_t), new * sizeof(int32_t))
    if q == NULL:
        return False
    p.st_free = <int32_t*>q
    for i in range(new - old):  # lowest index on top
        p.st_free[p.st_nfree + i] = new - 1 - i
    p.st_nfree += new - old
    p.st_cap = new
    return True


cdef inline int64_t unstamp(ChunkPool* p, Msg* m) noexcept nogil:
    """Clear a STAMPED message's stamp (its request field is its own again); return its
    enqueue time."""
    cdef int32_t i = m.request
    m.request = p.st_req[i]
    m.event ^= STAMPED
    p.st_free[p.st_nfree] = i
    p.st_nfree += 1
    return p.st_time[i]


cdef inline void chunk_free(ChunkPool* p, int32_t c) noexcept nogil:
    p.free[p.nfree] = c
    p.nfree += 1


cdef int _grow_boxes(BoxPool* p) except -1:
    cdef int32_t old = p.cap
    cdef int32_t new = old * 2 if old else 256
    cdef int32_t i
    if new <= old:
        raise MemoryError("mailbox pool is full")
    _grow(<void**>&p.boxes, old, new, sizeof(Box))
    _grow(<void**>&p.free, old, new, sizeof(int32_t))
    for i in range(new - old):
        p.free[p.nfree + i] = new - 1 - i
    p.nfree += new - old
    p.cap = new
    return 0


cdef inline int32_t box_alloc(BoxPool* p) except -1:
    cdef int32_t b
    cdef Box* box
    if p.nfree == 0:
        _grow_boxes(p)
    p.nfree -= 1
    b = p.free[p.nfree]
    box = &p.boxes[b]
    box.head[0] = box.head[1] = box.head[2] = box.head[3] = -1
    box.count = 0
    return b


cdef inline void box_free(BoxPool* p, int32_t b) noexcept nogil:
    p.free[p.nfree] = b
    p.nfree += 1


cdef inline int32_t chunk_take(ChunkPool* p) noexcept nogil:
    """Pop a free chunk; the caller made sure one is free (``nfree > 0``)."""
    p.nfree -= 1
    return p.free[p.nfree]


cdef inline void lane_push(Box* box, ChunkPool* pool, int lane, int32_t event,
                           PyObject* payload, int32_t request) noexcept nogil:
    """Append a message (taking over the payload reference) to a lane; needs at most one
    free chunk, which the caller guarantees (so this cannot fail halfway)."""
    cdef int32_t c = box.tail[lane]
    cdef int32_t n
    cdef Msg* m
    if box.head[lane] < 0:
        c = chunk_take(pool)
        box.head[lane] = box.tail[lane] = c
        box.hpos[lane] = box.tpos[lane] = 0
    elif box.tpos[lane] == CHUNK:
        n = chunk_take(pool)
        pool.next[c] = n
        box.tail[lane] = c = n
        box.tpos[lane] = 0
    m = &pool.chunks[c].m[box.tpos[lane]]
    m.event = event
    m.payload = payload
    m.request = request
    box.tpos[lane] += 1
    box.count += 1


cdef inline Msg lane_pop(Box* box, ChunkPool* pool, int lane) noexcept nogil:
    """Remove the lane's oldest message; the caller owns its payload reference."""
    cdef int32_t c = box.head[lane]
    cdef Msg m = pool.chunks[c].m[box.hpos[lane]]
    box.hpos[lane] += 1
    box.count -= 1
    if c == box.tail[lane] and box.hpos[lane] == box.tpos[lane]:
        chunk_free(pool, c)
        box.head[lane] = -1
    elif box.hpos[lane] == CHUNK:
        box.head[lane] = pool.next[c]
        box.hpos[lane] = 0
        chunk_free(pool, c)
    return m


cdef inline int top_lane(Box* box) noexcept nogil:
    if box.head[3] >= 0:
        return 3
    if box.head[2] >= 0:
        return 2
    if box.head[1] >= 0:
        return 1
    return 0


cdef inline object take(PyObject* p):
    """Turn an owned payload reference into a Python object (None when NULL)."""
    cdef object obj
    if p == NULL:
        return None
    obj = <object>p
    Py_DECREF(obj)
    return obj


cdef int lane_items(Box* box, ChunkPool* pool, int lane, list out, tuple events,
                    object priority) except -1:
    """Append ``(priority, event name, payload)`` for each message of a lane, oldest first."""
    cdef int32_t c = box.head[lane]
    cdef int pos = box.hpos[lane]
    cdef int end
    cdef Msg* m
    while c >= 0:
        end = box.tpos[lane] if c == box.tail[lane] else CHUNK
        while pos < end:
            m = &pool.chunks[c].m[pos]
            out.append((priority, events[m.event & ~STAMPED],
                        None if m.payload == NULL else <object>m.payload))
            pos += 1
        c = -1 if c == box.tail[lane] else pool.next[c]
        pos = 0
    return 0
