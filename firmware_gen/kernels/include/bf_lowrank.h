/*
 * bf_lowrank.h — low-rank (factorized) convolution and fully-connected kernels.
 *
 * Written by toolkit/compress/lowrank.py (method "lowrank"); its numpy forward is the twin of
 * these kernels, bit for bit.  The general contract of bf_kernels.h applies.
 *
 * A factorized layer is two int8 convolutions run back to back through an int8 intermediate
 * tensor `mid` that lives in the caller's scratch (one image of it at a time):
 *   - fully connected, W ~ U V (truncated SVD): first = V as a 1x1 conv depth -> rank,
 *     second = U as a 1x1 conv rank -> units;
 *   - conv, Jaderberg et al. scheme 2 ("separable"): first = KHx1 vertical filters to R
 *     channels (the layer's stride_h, dilation_h, pad_top; horizontal stride 1, every input
 *     column kept), second = 1xKW horizontal filters to C_out (stride_w, dilation_w, pad_left);
 *   - conv, 1x1 basis ("basis"): first = KHxKW conv to R channels with the layer's window,
 *     second = a 1x1 conv R -> C_out.
 * Each stage is exactly the int8 CONV_2D of bf_kernels.h (bf_conv2d_s8: taps outside the input
 * skipped, i.e. padding contributes the real value 0; int32 accumulation; per-channel
 * MultiplyByQuantizedMultiplier; + output_offset; clamp).  The first stage has no bias and
 * writes `mid` quantized per tensor (output_offset = its zero point, clamp -128 … 127); the
 * second reads it with input_offset = -that zero point, adds `bias` and applies the layer's
 * fused activation clamp.  Because both stages skip out-of-range taps, the separable scheme's
 * padding is exactly the original layer's.
 */
#ifndef BF_LOWRANK_H
#define BF_LOWRANK_H

#include <stddef.h>
#include <stdint.h>

#include "bf_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* BF_CDEF_BEGIN (types from bf_kernels.h's section are used, not repeated) */

/* One stage: an int8 convolution with symmetric per-channel int8 weights. */
typedef struct {
    bf_dims4 filter;                 /* C_out, KH, KW, C_in of this stage */
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t input_offset;            /* -zero point of what the stage reads */
    int32_t output_offset;           /* zero point of what it writes */
    int32_t act_min, act_max;
    const int8_t *weights;           /* OHWI */
    const int32_t *multiplier;       /* [C_out] Q31 */
    const int32_t *shift;            /* [C_out] */
} bf_lowrank_stage;

typedef struct {
    bf_dims4 input;                  /* N, H, W, C_in */
    bf_dims4 mid;                    /* N, MH, MW, R */
    bf_dims4 output;                 /* N, OH, OW, C_out */
    bf_lowrank_stage first;          /* input -> mid */
    bf_lowrank_stage second;         /* mid -> output */
    const int32_t *bias;             /* [C_out], added in the second stage */
} bf_conv2d_lowrank_s8_params;

void bf_conv2d_lowrank_s8(const bf_conv2d_lowrank_s8_params *params, const int8_t *input,
                          int8_t *output, void *scratch);
/* mid.h * mid.w * mid.c bytes (one image of the intermediate). */
size_t bf_conv2d_lowrank_s8_scratch_bytes(const bf_conv2d_lowrank_s8_params *params);

/* input [batches][depth] -> output [batches][units]; first.filter = {rank, 1, 1, depth},
 * second.filter = {units, 1, 1, rank}, strides and dilations 1, pads 0. */
typedef struct {
    int32_t batches;
    int32_t depth;
    int32_t rank;
    int32_t units;
    bf_lowrank_stage first;
    bf_lowrank_stage second;
    const int32_t *bias;             /* [units] */
} bf_fully_connected_lowrank_s8_params;

void bf_fully_connected_lowrank_s8(const bf_fully_connected_lowrank_s8_params *params,
                                   const int8_t *input, int8_t *output, void *scratch);
/* rank bytes (one row of the intermediate). */
size_t bf_fully_connected_lowrank_s8_scratch_bytes(
    const bf_fully_connected_lowrank_s8_params *params);

/* BF_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* BF_LOWRANK_H */
