# Agent id -> slot: open addressing with CPython's perturbed probing over int32 cells.

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


cdef inline int32_t idt_lookup(IdTable* t, list ids, object key) except -2:
    """Slot of ``key``, or -1; hashing or comparing may raise."""
    cdef Py_hash_t h = hash(key)
    cdef size_t perturb = <size_t>h
    cdef size_t i = <size_t>h & t.mask
    cdef int32_t c
    cdef PyObject* k
    while True:
        c = t.cells[i]
        if c == CELL_EMPTY:
            return -1
        if c >= 0:
            k = PyList_GET_ITEM(ids, c)
            if k == <PyObject*>key or PyObject_RichCompareBool(<object>k, key, Py_EQ):
                return c
        perturb >>= 5
        i = (i * 5 + perturb + 1) & t.mask


cdef int _idt_place(IdTable* t, Py_hash_t h, int32_t slot) noexcept:
    cdef size_t perturb = <size_t>h
    cdef size_t i = <size_t>h & t.mask
    while t.cells[i] >= 0:
        perturb >>= 5
        i = (i * 5 + perturb + 1) & t.mask
    if t.cells[i] == CELL_EMPTY:
        t.used += 1
    t.cells[i] = slot
    t.live += 1
    return 0


cdef int idt_insert(IdTable* t, list ids, object key, int32_t slot) except -1:
    """Add ``key`` (known to be absent, ``ids[slot]`` already set) -> ``slot``."""
    cdef Py_hash_t h = hash(key)
    cdef size_t cap, n
    cdef int32_t* old
    cdef size_t old_cap, i
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
                _idt_place(t, hash(<object>PyList_GET_ITEM(ids, old[i])), old[i])
        big_free(old, old_cap * sizeof(int32_t))
    _idt_place(t, h, slot)
    return 0


cdef int idt_remove(IdTable* t, list ids, object key) except -1:
    """Remove ``key`` (known to be present)."""
    cdef Py_hash_t h = hash(key)
    cdef size_t perturb = <size_t>h
    cdef size_t i = <size_t>h & t.mask
    cdef int32_t c
    while True:
        c = t.cells[i]
        if c >= 0 and (PyList_GET_ITEM(ids, c) == <PyObject*>key
                       or PyObject_RichCompareBool(<object>PyList_GET_ITEM(ids, c), key, Py_EQ)):
            t.cells[i] = CELL_DELETED
            t.live -= 1
            return 0
        if c == CELL_EMPTY:
            raise KeyError(key)
        perturb >>= 5
        i = (i * 5 + perturb + 1) & t.mask
