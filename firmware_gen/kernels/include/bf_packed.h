/*
 * bf_packed.h — kernels of dense compressed weight formats: packed low-bit integers ("packed",
 * method quant) and packed codebook indices ("codebook", method kmeans).
 *
 * The general contract of bf_kernels.h applies.  In addition:
 *  - Bit packing: element e of a packed stream occupies bits [e*bits, (e+1)*bits) of the byte
 *    array, least significant bit first (bit k of the stream is bit k%8 of byte k/8).  Elements
 *    may straddle byte boundaries when bits is not a power of two.  The element order is the
 *    op's own weight layout: FC [units][depth], conv OHWI, depthwise 1HW(C_out).
 *  - "packed": an element is a bits-bit two's-complement integer (1 <= bits <= 8).
 *    "codebook": an element is an unsigned bits-bit index into an int8 codebook; output channel
 *    o uses codebook + o * codebook_stride (codebook_stride = 0: one codebook for the layer).
 *  - Arithmetic is TFLite Micro's: acc = bias[o] + sum w * (x + input_offset) in int32, then
 *    out = clamp(MultiplyByQuantizedMultiplier(acc, multiplier[o], shift[o]) + output_offset,
 *    act_min, act_max).  No double precision; weights have no zero point.
 *  - Geometry fields mean what they mean for bf_conv2d_s8 / bf_depthwise_conv2d_s8 /
 *    bf_fully_connected_s8.  bias, multiplier and shift always hold one entry per output channel.
 *  - No scratch: weights are decoded on the fly.
 */
#ifndef BF_PACKED_H
#define BF_PACKED_H

#include <stdint.h>

#include "bf_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* BF_CDEF_BEGIN (the test harness feeds the text up to BF_CDEF_END to cffi) */

typedef struct {
    int32_t batches;           /* >= 1 */
    int32_t depth;             /* >= 1 */
    int32_t units;             /* >= 1 */
    int32_t bits;              /* 1 … 8 */
    int32_t input_offset;      /* -input zero point */
    int32_t output_offset;     /* output zero point */
    int32_t act_min, act_max;
    const uint8_t *weights;    /* ceil(units * depth * bits / 8) bytes */
    const int32_t *bias;       /* [units] */
    const int32_t *multiplier; /* [units] Q31 */
    const int32_t *shift;      /* [units] */
} bf_fully_connected_packed_s8_params;

void bf_fully_connected_packed_s8(const bf_fully_connected_packed_s8_params *params,
                                  const int8_t *input, int8_t *output);

typedef struct {
    bf_dims4 input;            /* N, H, W, C_in */
    bf_dims4 filter;           /* C_out, KH, KW, C_in / groups */
    bf_dims4 output;           /* N, OH, OW, C_out */
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t bits;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    const uint8_t *weights;    /* C_out * KH * KW * C_f elements */
    const int32_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_conv2d_packed_s8_params;

void bf_conv2d_packed_s8(const bf_conv2d_packed_s8_params *params, const int8_t *input,
                         int8_t *output);

typedef struct {
    bf_dims4 input;            /* N, H, W, C_in */
    bf_dims4 filter;           /* 1, KH, KW, C_out */
    bf_dims4 output;           /* N, OH, OW, C_out = C_in * depth_multiplier */
    int32_t depth_multiplier;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t bits;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    const uint8_t *weights;    /* KH * KW * C_out elements */
    const int32_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_depthwise_conv2d_packed_s8_params;

void bf_depthwise_conv2d_packed_s8(const bf_depthwise_conv2d_packed_s8_params *params,
                                   const int8_t *input, int8_t *output);

typedef struct {
    int32_t batches;
    int32_t depth;
    int32_t units;
    int32_t bits;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    const uint8_t *indices;    /* ceil(units * depth * bits / 8) bytes */
    const int8_t *codebook;    /* 2^bits entries, times units when codebook_stride != 0 */
    int32_t codebook_stride;   /* 0 or 2^bits */
    const int32_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_fully_connected_codebook_s8_params;

void bf_fully_connected_codebook_s8(const bf_fully_connected_codebook_s8_params *params,
                                    const int8_t *input, int8_t *output);

typedef struct {
    bf_dims4 input;
    bf_dims4 filter;
    bf_dims4 output;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t bits;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    const uint8_t *indices;
    const int8_t *codebook;
    int32_t codebook_stride;
    const int32_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_conv2d_codebook_s8_params;

void bf_conv2d_codebook_s8(const bf_conv2d_codebook_s8_params *params, const int8_t *input,
                           int8_t *output);

typedef struct {
    bf_dims4 input;
    bf_dims4 filter;
    bf_dims4 output;
    int32_t depth_multiplier;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t bits;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    const uint8_t *indices;
    const int8_t *codebook;
    int32_t codebook_stride;
    const int32_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_depthwise_conv2d_codebook_s8_params;

void bf_depthwise_conv2d_codebook_s8(const bf_depthwise_conv2d_codebook_s8_params *params,
                                     const int8_t *input, int8_t *output);

/* BF_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* BF_PACKED_H */
