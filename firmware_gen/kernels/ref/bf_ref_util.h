/*
 * bf_ref_util.h — small helpers shared by the portable reference kernels (not part of the
 * public contract).
 */
#ifndef BF_REF_UTIL_H
#define BF_REF_UTIL_H

#include <stdint.h>

#include "bf_kernels.h"

static inline int32_t bf_min_i32(int32_t a, int32_t b) { return a < b ? a : b; }
static inline int32_t bf_max_i32(int32_t a, int32_t b) { return a > b ? a : b; }

static inline float bf_clamp_f32(float x, float lo, float hi) {
    /* std::min(std::max(x, lo), hi) of ActivationFunctionWithMinMax. */
    const float y = x < lo ? lo : x;
    return hi < y ? hi : y;
}

/* Number of innermost rows of a broadcast (product of all but the last dimension). */
static inline int32_t bf_bcast_rows(const bf_bcast *b) {
    int32_t rows = 1;
    int32_t k;
    for (k = 0; k + 1 < b->rank; ++k) {
        rows *= b->shape[k];
    }
    return rows;
}

/* Element offsets of both inputs at the start of innermost row `row`. */
static inline void bf_bcast_row(const bf_bcast *b, int32_t row, int32_t *off1, int32_t *off2) {
    int32_t o1 = 0;
    int32_t o2 = 0;
    int32_t k;
    for (k = b->rank - 2; k >= 0; --k) {
        const int32_t i = row % b->shape[k];
        row /= b->shape[k];
        o1 += i * b->in1_stride[k];
        o2 += i * b->in2_stride[k];
    }
    *off1 = o1;
    *off2 = o2;
}

/* out[e] = FN(in1[…], in2[…]) for every output element e of broadcast `bc`, row by row.
 * FN is a function-like macro or function of two elements.  Elements are read before the
 * output element is written, so in-place use on a dense input is safe. */
#define BF_BCAST_APPLY(bc, in1, in2, out, FN)                                                \
    do {                                                                                     \
        const int32_t bf_inner_ = (bc)->shape[(bc)->rank - 1];                               \
        const int32_t bf_s1_ = (bc)->in1_stride[(bc)->rank - 1];                             \
        const int32_t bf_s2_ = (bc)->in2_stride[(bc)->rank - 1];                             \
        const int32_t bf_rows_ = bf_bcast_rows(bc);                                          \
        int32_t bf_row_, bf_i_;                                                              \
        for (bf_row_ = 0; bf_row_ < bf_rows_; ++bf_row_) {                                   \
            int32_t bf_o1_, bf_o2_;                                                          \
            bf_bcast_row((bc), bf_row_, &bf_o1_, &bf_o2_);                                   \
            for (bf_i_ = 0; bf_i_ < bf_inner_; ++bf_i_) {                                    \
                (out)[bf_row_ * bf_inner_ + bf_i_] =                                         \
                    FN((in1)[bf_o1_ + bf_i_ * bf_s1_], (in2)[bf_o2_ + bf_i_ * bf_s2_]);      \
            }                                                                                \
        }                                                                                    \
    } while (0)

#endif /* BF_REF_UTIL_H */
