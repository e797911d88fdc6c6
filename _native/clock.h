/* The clock of latency samples, busy time and turn deadlines: durations in nanoseconds.
 *
 * Where the CPU's time-stamp counter is invariant (x86-64 reporting a constant, non-stop TSC
 * in CPUID leaf 0x80000007), a reading is one rdtsc scaled by a factor calibrated against
 * CLOCK_MONOTONIC when the module loads (2 ms): about 13 ns here against about 30 ns for
 * clock_gettime, which a sample takes two or three of. Elsewhere, clock_gettime.
 */
#ifndef ENGINE_CLOCK_H
#define ENGINE_CLOCK_H

#include <stdint.h>
#include <time.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <x86intrin.h>
#define ENGINE_HAVE_TSC 1
#endif

static double engine_tsc_scale = 0.0; /* ns per tick; 0: the counter is not used */
static uint64_t engine_tsc_ticks0;
static int64_t engine_tsc_ns0;

static int64_t engine_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Calibrate the counter against CLOCK_MONOTONIC; returns 1 if it is used from now on. */
static int engine_clock_init(void) {
#ifdef ENGINE_HAVE_TSC
    unsigned a, b, c, d;
    int64_t n0, n1;
    uint64_t t0, t1;
    if (!__get_cpuid(0x80000007, &a, &b, &c, &d) || !(d & (1u << 8))) return 0;
    n0 = engine_mono_ns();
    t0 = __rdtsc();
    do {
        n1 = engine_mono_ns();
        t1 = __rdtsc();
    } while (n1 - n0 < 2000000);
    if (t1 <= t0) return 0;
    engine_tsc_ticks0 = t1;
    engine_tsc_ns0 = n1;
    engine_tsc_scale = (double)(n1 - n0) / (double)(t1 - t0);
    return 1;
#else
    return 0;
#endif
}

static inline int64_t engine_now_ns(void) {
#ifdef ENGINE_HAVE_TSC
    if (engine_tsc_scale > 0.0)
        return engine_tsc_ns0 +
               (int64_t)((double)(int64_t)(__rdtsc() - engine_tsc_ticks0) * engine_tsc_scale);
#endif
    return engine_mono_ns();
}

#endif
