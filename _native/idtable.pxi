# Agent id -> slot: open addressing with CPython's perturbed probing over int32 cells, on the
# low 32 bits of the id's hash (stored per slot, so growth re-places cells without Python).

cdef enum:
    CELL_EMPTY = -1
    CELL_DELETED = -2


cdef int idt_init(IdTable* t, size_t cap) except -1:
    """Give ``t`` ``cap`` empty cells (a power of two); the caller releases any old cells."""
    cdef int32_t* cells = <int32_t*>big_grow(NULL, 0, cap * sizeof(int32_t))
    if cells == NULL:
        raise MemoryError()
    memset(cells, 0xFF, cap * sizeof(int32_t))  # every cell CELL_EMPTY
    t.cells = cells
    t.mask = cap - 1
    t.used = 0
    t.live = 0
    return 0


cdef int idt_reserve(IdTable* t, size_t slots) except -1:
    """Make room for the hashes of ``slots`` slots."""
    cdef size_t cap
    if slots <= t.hcap:
        return 0
    cap = t.hcap * 2 if t.hcap else 64
    while cap < slots:
        cap *= 2
    _grow(<void**>&t.hashes, t.hcap, cap, sizeof(uint32_t))
    t.hcap = cap
    return 0


cdef inline uint32_t idt_hash(object key) except? 0xFFFFFFFF:
    """The probe hash of ``key`` (the low 32 bits of ``hash(key)``, which may raise)."""
    return <uint32_t><size_t>hash(key)


cdef inline int32_t idt_find(IdTable* t, list ids, object key, uint32_t h) except -2:
    """Slot of ``key`` whose probe hash is ``h``, or -1; comparing may raise."""
    cdef size_t perturb = h
    cdef size_t i = h & t.mask
    cdef int32_t c
    cdef object k
    while True:
        c = t.cells[i]
        if c == CELL_EMPTY:
            return -1
        if c >= 0 and t.hashes[c] == h:
            k = <object>PyList_GET_ITEM(ids, c)  # a new reference: __eq__ may drop the list's
            if k is key or PyObject_RichCompareBool(k, key, Py_EQ):
                return c
        perturb >>= 5
        i = (i * 5 + perturb + 1) & t.mask


cdef inline int32_t idt_lookup(IdTable* t, list ids, object key) except -2:
    """Slot of ``key``, or -1; hashing or comparing may raise."""
    return idt_find(t, ids, key, idt_hash(key))


cdef inline int32_t idt_lookup_raw(IdTable* t, list ids, PyObject* key) noexcept:
    """Slot of ``key``, -1 if absent, or -3 with a Python exception set (hashing or comparing
    raised). The per-send path: plain C-API error codes instead of a try block per call."""
    cdef Py_hash_t full = PyObject_Hash_raw(key)
    cdef uint32_t h
    cdef size_t perturb, i
    cdef int32_t c
    cdef PyObject* k
    cdef int eq
    if full == -1:
        return -3
    h = <uint32_t><size_t>full
    perturb = h
    i = h & t.mask
    while True:
        c = t.cells[i]
        if c == CELL_EMPTY:
            return -1
        if c >= 0 and t.hashes[c] == h:
            k = PyList_GET_ITEM(ids, c)
            if k == key:
                return c
            Py_INCREF(<object>k)  # __eq__ may drop the list's reference
            eq = PyObject_RichCompareBool_raw(k, key, Py_EQ)
            Py_DECREF(<object>k)
            if eq > 0:
                return c
            if eq < 0:
                return -3
        perturb >>= 5
        i = (i * 5 + perturb + 1) & t.mask


cdef int _idt_place(IdTable* t, uint32_t h, int32_t slot) noexcept:
    cdef size_t perturb = h
    cdef size_t i = h & t.mask
    while t.cells[i] >= 0:
        perturb >>= 5
        i = (i * 5 + perturb + 1) & t.mask
    if t.cells[i] == CELL_EMPTY:
        t.used += 1
    t.cells[i] = slot
    t.live += 1
    return 0


cdef int idt_insert(IdTable* t, uint32_t h, int32_t slot) except -1:
    """Add ``slot`` (its id absent from the table, its probe hash ``h``); no Python runs, so
    growth cannot fail halfway."""
    cdef size_t cap
    cdef int32_t* old
    cdef size_t old_cap, i
    idt_reserve(t, <size_t>slot + 1)
    if (t.used + 1) * 3 > <Py_ssize_t>(t.mask + 1) * 2:
        cap = 8
        while <Py_ssize_t>cap < (t.live + 1) * 2:
            cap <<= 1
        old, old_cap = t.cells, t.mask + 1
        t.cells = NULL
        try:
            idt_init(t, cap)
        except MemoryError:
            t.cells = old
            raise
        for i in range(old_cap):
            if old[i] >= 0:
                _idt_place(t, t.hashes[old[i]], old[i])
        big_free(old, old_cap * sizeof(int32_t))
    t.hashes[slot] = h
    _idt_place(t, h, slot)
    return 0


cdef int idt_remove(IdTable* t, int32_t slot) noexcept:
    """Remove ``slot`` (known to be present), found by its stored hash: no Python runs."""
    cdef uint32_t h = t.hashes[slot]
    cdef size_t perturb = h
    cdef size_t i = h & t.mask
    cdef int32_t c
    while True:
        c = t.cells[i]
        if c == slot:
            t.cells[i] = CELL_DELETED
            t.live -= 1
            return 0
        if c == CELL_EMPTY:  # cannot happen for a present slot
            return -1
        perturb >>= 5
        i = (i * 5 + perturb + 1) & t.mask
