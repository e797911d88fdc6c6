# C structs shared by the pieces of engine._native (see _native.pyx for the layout).

cdef enum:
    CHUNK = 8             # messages per chunk: 8 x 16 bytes = two cache lines
    STAMPED = 0x40000000  # set in Msg.event when its request field indexes ChunkPool.st_*
    AHEAD = 16            # how many messages (or ready agents) ahead loops prefetch
    CACHE = 64            # entries of send_many's identity cache of event names
    RELEASE = 256         # payload references dropped in one batch (Dispatcher._release_later)
    RELEASE_AHEAD = 32    # and how far ahead that batch prefetches them


cdef struct Msg:
    int32_t event         # event code of the agent's machine (| STAMPED, see ChunkPool)
    int32_t request       # request id (Runtime.request), 0 = none
    PyObject* payload     # owned reference, or NULL for None


cdef struct Chunk:
    # A run of one lane's messages. Lanes are lists of chunks, so a drain reads memory in
    # order and a mailbox costs nothing until it holds mail.
    Msg m[CHUNK]


cdef struct ChunkPool:
    # Free items are kept on a stack of indexes, not linked through their own memory: a pop
    # then reads a contiguous array instead of chasing a cold pointer per message.
    Chunk* chunks
    # Messages sampled for their wait (every Nth sent): a small pool of stamps, indexed by
    # the message's request field while STAMPED is set (its own request is kept here).
    # Outstanding stamps are few (queued / N) and reused last-in first-out, so they stay in
    # cache, where a stamp per message slot beside the chunks cost two misses a sample.
    int64_t* st_time      # enqueue time (ns)
    int32_t* st_req       # the message's own request id
    int32_t* st_free      # stack of free stamp indexes
    int32_t st_nfree
    int32_t st_cap
    int32_t* next         # next chunk of a lane; -1 = none
    int32_t* free         # stack of free chunk indexes
    int32_t nfree
    int32_t cap


cdef struct Box:
    # The four lanes of one agent's mailbox; taken from a pool while it holds mail.
    int32_t head[4]       # chunk holding the lane's oldest message; -1 = lane empty
    int32_t tail[4]       # chunk receiving the lane's next message
    uint8_t hpos[4]       # read position in head[lane]
    uint8_t tpos[4]       # write position in tail[lane]
    int32_t count         # messages in all lanes


cdef struct BoxPool:
    Box* boxes
    int32_t* free         # stack of free box indexes
    int32_t nfree
    int32_t cap


cdef struct Agent:
    # The hot part of one agent slot: what sending to it and stepping it touch, 32 bytes, so
    # two share a cache line and none straddles two. The layout is AGENT_DTYPE's (a numpy
    # structured array holds the records, so counters are numpy-visible).
    int32_t state         # state index; links free slots while unused
    uint16_t mach         # machine index in the dispatcher
    uint16_t flags        # F_* bits (dispatch.pxi)
    int32_t box           # mailbox index, -1 = no mail
    uint32_t epoch        # state changes (a state timeout armed at epoch e dies after it)
    double since          # Dispatcher.now when the status last changed
    int64_t processed


cdef struct AgentCold:
    # The rest of a slot (AGENT_COLD_DTYPE), read on rarer paths: bounded mailboxes (their
    # flags say so), references, failures.
    int32_t cap           # mailbox capacity, 0 = unbounded
    uint32_t gen          # bumped on terminate, so stale AgentRefs are detected
    int64_t failed


cdef struct Metric:
    # Per-agent counters kept with metrics=True; the layout is engine._metrics.METRICS_DTYPE.
    int64_t busy_ns       # time spent in this agent's turns
    int32_t high_water    # largest mailbox depth seen
    int32_t postponed
    int32_t restarts
    int32_t _pad


cdef struct Ring:
    # A LatencyRing's buffers, for appending without a Python call.
    int64_t* buf
    int64_t* n            # samples ever appended
    int64_t cap


cdef struct MachTab:
    # One registered machine, as the drain loop reads it (pointers into numpy tables).
    const int32_t* next
    const int32_t* out    # output codes remapped to the dispatcher's interned values
    const int32_t* handler
    int32_t n_states
    int32_t n_events
    bint ignore
    PyObject* machine     # borrowed: Dispatcher._keep holds them
    PyObject* handlers
    PyObject* event_index
    PyObject* events
    PyObject* states


cdef struct IdTable:
    # Open addressing over int32 cells holding agent slots (-1 empty, -2 deleted); the key of
    # a cell is Dispatcher._ids[slot], so a table cell costs 4 bytes and no Python object.
    # The low 32 bits of each id's hash are kept per slot (4 bytes an agent): growing the
    # table never calls an id's __hash__ (which could raise, or have changed), and a probe
    # compares hashes before calling __eq__.
    int32_t* cells
    size_t mask
    Py_ssize_t used       # live + deleted cells
    Py_ssize_t live
    uint32_t* hashes      # per slot: the id's hash, as probed
    size_t hcap           # slots the hashes array holds


cdef struct TenantRec:
    # One tenant as the drain loop reads it (the twin's _Tenant; TENANT_DTYPE's counters).
    # Its ready agents are a FIFO linked through Dispatcher._rnext.
    int32_t head          # first ready slot, -1 = none
    int32_t tail
    int64_t nready
    int64_t quantum       # messages per scheduling round (weight x budget)
    int64_t deficit       # messages it may still take in this round
    int64_t queued        # messages in its agents' lanes plus those its rate holds back
    int64_t max_queued    # 0 = no limit
    int64_t agents
    int64_t ndelayed      # messages its rate holds back now
    int64_t delayed
    int64_t rejected
    int64_t overruns
    int64_t retired_processed
    int64_t retired_failed
    int64_t served
    int64_t deadline_ns   # 0 = none
    double rate           # tokens per second, 0 = no limit
    double burst
    double tokens
    double last           # clock reading of the last refill
    int32_t policy        # DEADLINE_REPORT / _FAIL / _STOP
    uint8_t live
    uint8_t active        # on the active queue, or being served
    uint8_t dropped       # removed; kept while dead agents of it are queued
    uint8_t wait          # overflow policy "wait"
    uint8_t counting      # queued is kept up to date (the tenant has max_queued)


cdef struct Rec:
    # One transition record (RECORD_DTYPE): written by the drain loop into the record ring.
    int32_t slot
    int32_t mach
    int32_t event
    int32_t source
    int32_t target
    int32_t output
    int32_t priority
    int32_t flags
    double time
