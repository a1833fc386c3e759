/*
 * Timing harness of bench/host_latency.py (not part of any generated project).
 *
 * Linked into one shared library with a generated model's model.c and kernels and called through
 * cffi, so the loop that is timed runs entirely in C: Python's call overhead is paid once per
 * batch, not once per inference.
 *
 *   bf_bench_run(inputs, bytes, iterations) copies every input i (bytes[i] bytes from inputs[i])
 *   into bf_model_input(i) and calls bf_model_invoke(), `iterations` times, and returns the
 *   elapsed CLOCK_MONOTONIC time in nanoseconds (-1 if an invoke fails).
 *
 * The inputs are copied on every iteration because the arena planner may place an input where a
 * later layer writes (in-place execution): re-invoking on a clobbered input would time other
 * data.  The copy is part of the measured time, as set_tensor() is for the interpreters.
 * Streaming models keep their state from one iteration to the next, as on the device.
 */
#define _POSIX_C_SOURCE 199309L

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "model.h"

int64_t bf_bench_run(const void *const *inputs, const uint32_t *bytes, uint32_t iterations);

static int64_t bf_bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + (int64_t)ts.tv_nsec;
}

int64_t bf_bench_run(const void *const *inputs, const uint32_t *bytes, uint32_t iterations) {
    uint32_t it;
    uint32_t i;
    int64_t start = bf_bench_now_ns();
    for (it = 0; it < iterations; ++it) {
        for (i = 0; i < BF_MODEL_NUM_INPUTS; ++i) {
            memcpy(bf_model_input(i), inputs[i], bytes[i]);
        }
        if (bf_model_invoke() != 0) {
            return -1;
        }
    }
    return bf_bench_now_ns() - start;
}
