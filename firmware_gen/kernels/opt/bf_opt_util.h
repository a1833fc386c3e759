/*
 * bf_opt_util.h — helpers shared by the optimized kernel variants (neon/, armv7em/, armv6m/,
 * x86/).  Private to the kernel library: not part of the bf_kernels.h contract.
 *
 * Layout of a variant source.  A variant's <family>.c replaces ref/<family>.c in a build (the
 * harness and the project generator pick one file per family).  It includes the reference file
 * by relative path with the optimized symbols renamed to bf_ref_*, so that
 *   - the kernels it does not optimize (float32 twins, …) are ref's own code, unchanged;
 *   - an optimized kernel can hand an unusual geometry back to the reference code
 *     (bf_ref_<kernel>), which is what "falls back to ref" means inside a variant;
 *   - ref's static helpers (geometry, requantization) are shared, not copied.
 * The project generator copies every file a chosen source includes by a relative path and
 * compiles only the chosen family sources (firmware_gen/project.py).
 *
 * Requantization.  Every optimized int8 kernel ends in exactly the reference arithmetic; the
 * per-output steps live here so that a change of the reference arithmetic (e.g. FULLY_CONNECTED
 * moving from LiteRT's double-precision scale to TFLite Micro's fixed-point multiplier) is one
 * edit in this file, not one per variant.
 */
#ifndef BF_OPT_UTIL_H
#define BF_OPT_UTIL_H

#include <stdint.h>
#include <string.h>

#include "bf_kernels.h"
#include "../ref/bf_fixedpoint.h"

/* Per-channel requantization of CONV_2D / DEPTHWISE_CONV_2D (reference_integer_ops). */
static inline int8_t bf_opt_requant(int32_t acc, int32_t multiplier, int32_t shift,
                                    int32_t output_offset, int32_t act_min, int32_t act_max) {
    int32_t q = bf_mbqm(acc, multiplier, shift) + output_offset;
    return (int8_t)bf_clamp_i32(q, act_min, act_max);
}

/* FULLY_CONNECTED requantization of unit u: whatever bf_fully_connected_s8_params holds, done
 * exactly as ref/fully_connected.c does it (TFLM's fixed-point multiplier and shift per unit).
 * acc already includes the bias. */
static inline int8_t bf_opt_fc_requant(const bf_fully_connected_s8_params *p, int32_t u,
                                       int32_t acc) {
    int32_t q = bf_mbqm(acc, p->multiplier[u], p->shift[u]);
    q = bf_wrap_add(q, p->output_offset);
    return (int8_t)bf_clamp_i32(q, p->act_min, p->act_max);
}

/* Unaligned little-endian loads (compile to one load where the ISA allows it). */
static inline uint32_t bf_opt_load_u32(const void *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint64_t bf_opt_load_u64(const void *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline int32_t bf_opt_round_up(int32_t n, int32_t a) {
    return (n + a - 1) / a * a;
}

/* The window of one output position: valid kernel rows [ky0, ky1) and columns [kx0, kx1) for
 * dilation d (taps outside the input are skipped, as the reference kernels skip them). */
static inline void bf_opt_tap_range(int32_t origin, int32_t dilation, int32_t taps, int32_t size,
                                    int32_t *first, int32_t *last) {
    int32_t k0 = 0, k1 = taps;
    while (k0 < k1 && origin + k0 * dilation < 0) {
        ++k0;
    }
    while (k1 > k0 && origin + (k1 - 1) * dilation >= size) {
        --k1;
    }
    *first = k0;
    *last = k1;
}

#endif /* BF_OPT_UTIL_H */
