# C structs shared by the pieces of engine._native (see _native.pyx for the layout).


cdef struct Node:
    # One queued message. Nodes live in one arena and are linked by index, so a mailbox
    # costs nothing until it holds mail and memory follows the mail, not the agents.
    int32_t next          # next node in the lane (or in the free list); -1 = none
    int32_t event         # event code of the agent's machine
    PyObject* payload     # owned reference, or NULL for None


cdef struct Box:
    # The four lanes of one agent's mailbox; allocated from a pool while it holds mail.
    int32_t head[4]       # first node per lane (head[0] links free boxes); -1 = empty
    int32_t tail[4]
    int32_t count


cdef struct MachTab:
    # One registered machine, as the drain loop reads it (pointers into numpy tables).
    const int32_t* next
    const int32_t* out    # output codes remapped to the dispatcher's interned values
    const int32_t* handler
    int32_t n_states
    int32_t n_events
    bint ignore
    PyObject* machine     # borrowed: Dispatcher._machines keeps them alive
    PyObject* handlers
    PyObject* event_index
    PyObject* events
    PyObject* states


cdef struct NodeArena:
    Node* nodes
    int32_t cap
    int32_t free          # head of the free list; -1 = arena full


cdef struct BoxPool:
    Box* boxes
    int32_t cap
    int32_t free


cdef struct IdTable:
    # Open addressing over int32 cells holding agent slots (-1 empty, -2 deleted); the key of
    # a cell is Dispatcher._ids[slot], so a table cell costs 4 bytes and no Python object.
    int32_t* cells
    size_t mask
    Py_ssize_t used       # live + deleted cells
    Py_ssize_t live
