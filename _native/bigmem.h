/* Large arrays of the dispatcher, each in a mapping of its own.
 *
 * glibc serves a large malloc with mmap only until the first such block is freed; then it
 * raises its threshold and later blocks come from the heap, where a freed one stays resident.
 * Arrays that grow by doubling would keep their old copies in RSS. A private mapping is
 * returned to the system on release, and mremap grows it without a copy. Elsewhere than
 * Linux, plain malloc/realloc/free.
 */
#ifndef ENGINE_BIGMEM_H
#define ENGINE_BIGMEM_H

#include <stddef.h>
#include <stdlib.h>

#ifdef __linux__
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sys/mman.h>

static void *big_grow(void *p, size_t old_size, size_t new_size) {
    void *q;
    if (p == NULL || old_size == 0) {
        q = mmap(NULL, new_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    } else {
        q = mremap(p, old_size, new_size, MREMAP_MAYMOVE);
    }
    return q == MAP_FAILED ? NULL : q;
}

static void big_free(void *p, size_t size) {
    if (p != NULL && size != 0) munmap(p, size);
}
#else
static void *big_grow(void *p, size_t old_size, size_t new_size) {
    (void)old_size;
    return realloc(p, new_size);
}

static void big_free(void *p, size_t size) {
    (void)size;
    free(p);
}
#endif

/* A hint that *p will be written soon (no-op where the compiler lacks the builtin). The
 * drain loop and send_many_slots issue it a few messages ahead, so the cache misses of
 * random agents at large populations overlap instead of queueing one after another. */
#if defined(__GNUC__) || defined(__clang__)
#define prefetch_w(p) __builtin_prefetch((p), 1, 3)
#else
#define prefetch_w(p) ((void)(p))
#endif

#endif
