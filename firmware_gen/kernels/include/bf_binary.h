/*
 * bf_binary.h — binarized convolution and fully-connected kernels (BWN, XNOR-Net, HORQ).
 *
 * Written by toolkit/compress/binary.py (method "binary"); its numpy forward is the twin of
 * these kernels, bit for bit.  The general contract of bf_kernels.h applies (offsets added,
 * NHWC activations, caller-owned scratch, TFLite Micro's fixed-point requantization).
 *
 * Weights.  The filter of output channel o is approximated by K binary planes with their own
 * scales (HORQ, Li et al. ICCV 2017; K = 1 is BWN / XNOR-Net's binary weights):
 *     w[o][tap][c] ~ sum_k alpha[o][k] * B[o][k][tap][c],   B in {-1, +1}.
 * Bit-packed storage: `weights` holds uint32 words
 *     weights[((o * K + k) * taps + tap) * words + j],   taps = KH * KW, tap = ky * KW + kx,
 * where bit i (1u << i) of word j is the sign of channel c = 32 * j + i: 1 = +1, 0 = -1.
 * words = ceil(C_in / 32): input channels are padded to the word size and the padding bits
 * are 0.  A fully-connected layer is the 1x1 case with C_in = depth.
 *
 * Scales, bias and requantization are folded on the host into integers: per output channel a
 * few int16 coefficients, an int32 bias and one Q31 multiplier/shift, so that
 *     acc[o] = bias[o] + sum_t coef[o][t] * T_t          (exact int32, see each kernel)
 *     out    = clamp(MultiplyByQuantizedMultiplier(acc, multiplier[o], shift[o])
 *                    + output_offset, act_min, act_max)
 * The host guarantees that no partial sum leaves the int32 range for any int8 input
 * (sum_t |coef| * max|T_t| + |bias| < 2^31), so the kernels never overflow.
 *
 * Padding.  Taps outside the input are skipped, exactly as the int8 convolution of
 * bf_kernels.h skips them: a padded position contributes 0 (the real value of the input zero
 * point), in both kernels.
 *
 * Popcount.  ref/bf_popcount.h counts bits with a portable SWAR routine; building with
 * -DBF_USE_BUILTIN_POPCOUNT uses __builtin_popcount instead (GCC/Clang).  Both give the same
 * count, so results do not depend on the choice.
 */
#ifndef BF_BINARY_H
#define BF_BINARY_H

#include <stddef.h>
#include <stdint.h>

#include "bf_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* BF_CDEF_BEGIN (types from bf_kernels.h's section are used, not repeated) */

/* ---------------------------------------------------------------------------------------- */
/* Binary weights, int8 activations (BWN / HORQ weights): "binary"                           */

/* x = input + input_offset (the real input / input scale, an integer in [-255, 255]).
 * Per output position and channel o, for each plane k:
 *     S_k = sum over valid taps and channels c < C_in of B[o][k][tap][c] * x
 *         = 2 * (sum of x where the bit is 1) - (sum of all x)      (no multiplications)
 *     acc = bias[o] + sum_k coef[o * K + k] * S_k
 * then requantized as above.  No scratch. */
typedef struct {
    bf_dims4 input;            /* N, H, W, C_in */
    bf_dims4 filter;           /* C_out, KH, KW, C_in */
    bf_dims4 output;           /* N, OH, OW, C_out */
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t words;             /* ceil(C_in / 32) */
    int32_t planes;            /* K, weight planes, 1 … 3 */
    int32_t input_offset;      /* -input zero point */
    int32_t output_offset;     /* output zero point */
    int32_t act_min, act_max;
    const uint32_t *weights;   /* [C_out][K][KH*KW][words] sign bits */
    const int16_t *coef;       /* [C_out][K] */
    const int32_t *bias;       /* [C_out] */
    const int32_t *multiplier; /* [C_out] Q31 */
    const int32_t *shift;      /* [C_out] */
} bf_conv2d_binary_s8_params;

void bf_conv2d_binary_s8(const bf_conv2d_binary_s8_params *params, const int8_t *input,
                         int8_t *output);

/* input [batches][depth] -> output [batches][units]; weights [units][K][words]. */
typedef struct {
    int32_t batches;
    int32_t depth;
    int32_t units;
    int32_t words;             /* ceil(depth / 32) */
    int32_t planes;
    int32_t input_offset;
    int32_t output_offset;
    int32_t act_min, act_max;
    const uint32_t *weights;
    const int16_t *coef;       /* [units][K] */
    const int32_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_fully_connected_binary_s8_params;

void bf_fully_connected_binary_s8(const bf_fully_connected_binary_s8_params *params,
                                  const int8_t *input, int8_t *output);

/* ---------------------------------------------------------------------------------------- */
/* Binary weights and binary activations (XNOR-Net / BNN / HORQ on both): "xnor"             */

/* On-device binarization of the int8 input into A planes (1 <= A <= 3), a residual binary
 * tree with thresholds fitted on the host: for every input element q (int8),
 *     node = 0
 *     for j = 0 … A-1:  a_j = (q >= act_threshold[node]) ? +1 : -1
 *                       node = 2 * node + 1 + (a_j == +1)
 * act_threshold holds 2^A - 1 int32 values in that heap order.  (They are the HORQ levels
 * mu + sum_{l<j} beta_l * a_l rounded up to the integer grid, so the rule is an integer
 * comparison.)  The planes are packed like the weights (bit 1 = +1, padding bits 0) into
 * scratch: one image, [H][W][A][words] uint32.
 * Per output position (valid taps only, n = valid taps * C_in) and weight plane k:
 *     E_k    = sum B[o][k]            = 2 * popcount(w) - n
 *     D_k,j  = sum B[o][k] * a_j      = n - 2 * popcount(w xor a_j)
 *     acc    = bias[o] + sum_k (coef[o][k][0] * E_k + sum_j coef[o][k][1 + j] * D_k,j)
 * then requantized as above.  coef is [C_out][K][1 + A]. */
typedef struct {
    bf_dims4 input;
    bf_dims4 filter;
    bf_dims4 output;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t words;
    int32_t planes;            /* K, weight planes, 1 … 3 */
    int32_t act_planes;        /* A, activation planes, 1 … 3 */
    int32_t output_offset;
    int32_t act_min, act_max;
    const int32_t *act_threshold; /* [2^A - 1], int8 input units */
    const uint32_t *weights;
    const int16_t *coef;       /* [C_out][K][1 + A] */
    const int32_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_conv2d_xnor_s8_params;

void bf_conv2d_xnor_s8(const bf_conv2d_xnor_s8_params *params, const int8_t *input,
                       int8_t *output, void *scratch);
/* input.h * input.w * act_planes * words * 4 bytes. */
size_t bf_conv2d_xnor_s8_scratch_bytes(const bf_conv2d_xnor_s8_params *params);

typedef struct {
    int32_t batches;
    int32_t depth;
    int32_t units;
    int32_t words;
    int32_t planes;
    int32_t act_planes;
    int32_t output_offset;
    int32_t act_min, act_max;
    const int32_t *act_threshold;
    const uint32_t *weights;   /* [units][K][words] */
    const int16_t *coef;       /* [units][K][1 + A] */
    const int32_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_fully_connected_xnor_s8_params;

void bf_fully_connected_xnor_s8(const bf_fully_connected_xnor_s8_params *params,
                                const int8_t *input, int8_t *output, void *scratch);
/* act_planes * words * 4 bytes (one row of packed activations). */
size_t bf_fully_connected_xnor_s8_scratch_bytes(const bf_fully_connected_xnor_s8_params *params);

/* BF_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* BF_BINARY_H */
