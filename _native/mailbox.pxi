# Message arena and mailbox pool: free lists over realloc-grown C arrays, linked by index.

cdef int _grow_nodes(NodeArena* a) except -1:
    cdef int32_t old = a.cap
    cdef int32_t new = old * 2 if old else 1024
    cdef Node* p
    cdef int32_t i
    if new <= old:
        raise MemoryError("message arena is full (2**31 queued messages)")
    p = <Node*>realloc(a.nodes, <size_t>new * sizeof(Node))
    if p == NULL:
        raise MemoryError()
    a.nodes = p
    for i in range(old, new - 1):
        p[i].next = i + 1
    p[new - 1].next = a.free
    a.free = old
    a.cap = new
    return 0


cdef inline int32_t node_alloc(NodeArena* a) except -1:
    cdef int32_t n
    if a.free < 0:
        _grow_nodes(a)
    n = a.free
    a.free = a.nodes[n].next
    return n


cdef inline void node_free(NodeArena* a, int32_t n) noexcept nogil:
    a.nodes[n].next = a.free
    a.free = n


cdef int _grow_boxes(BoxPool* p) except -1:
    cdef int32_t old = p.cap
    cdef int32_t new = old * 2 if old else 256
    cdef Box* b
    cdef int32_t i
    if new <= old:
        raise MemoryError("mailbox pool is full")
    b = <Box*>realloc(p.boxes, <size_t>new * sizeof(Box))
    if b == NULL:
        raise MemoryError()
    p.boxes = b
    for i in range(old, new - 1):
        b[i].head[0] = i + 1
    b[new - 1].head[0] = p.free
    p.free = old
    p.cap = new
    return 0


cdef inline int32_t box_alloc(BoxPool* p) except -1:
    cdef int32_t b
    cdef Box* box
    if p.free < 0:
        _grow_boxes(p)
    b = p.free
    box = &p.boxes[b]
    p.free = box.head[0]
    box.head[0] = box.head[1] = box.head[2] = box.head[3] = -1
    box.tail[0] = box.tail[1] = box.tail[2] = box.tail[3] = -1
    box.count = 0
    return b


cdef inline void box_free(BoxPool* p, int32_t b) noexcept nogil:
    p.boxes[b].head[0] = p.free
    p.free = b


cdef inline void lane_push(Box* box, Node* nodes, int32_t n, int lane) noexcept nogil:
    nodes[n].next = -1
    if box.tail[lane] >= 0:
        nodes[box.tail[lane]].next = n
    else:
        box.head[lane] = n
    box.tail[lane] = n
    box.count += 1


cdef inline int32_t lane_pop(Box* box, Node* nodes, int lane) noexcept nogil:
    cdef int32_t n = box.head[lane]
    box.head[lane] = nodes[n].next
    if box.head[lane] < 0:
        box.tail[lane] = -1
    box.count -= 1
    return n


cdef inline int top_lane(Box* box) noexcept nogil:
    if box.head[3] >= 0:
        return 3
    if box.head[2] >= 0:
        return 2
    if box.head[1] >= 0:
        return 1
    return 0


cdef inline object take_payload(Node* node):
    """Move the node's payload reference into a Python object (None when NULL)."""
    cdef PyObject* p = node.payload
    cdef object obj
    node.payload = NULL
    if p == NULL:
        return None
    obj = <object>p
    Py_DECREF(obj)
    return obj
