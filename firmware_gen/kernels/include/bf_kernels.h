/*
 * bf_kernels.h — contracts of boardfit's kernel library.
 *
 * One prototype per kernel; every ISA variant (ref/, armv7em/, neon/, x86/ …) implements the
 * same symbols with the same results, bit for bit on integer kernels.  ref/ is the portable C99
 * twin every variant must have.
 *
 * Naming: bf_<op>[_<format>]_<dtype>.  Conversion kernels name both types (<from>_<to>).  Kernels
 * that only move bytes take the element size as a parameter and end in _any.
 *
 * General contract (applies to every kernel unless its comment says otherwise):
 *  - Numerics follow TensorFlow Lite's reference kernels (the interpreter's BUILTIN_REF
 *    resolver), built without TFLITE_SINGLE_ROUNDING ("double rounding").  Quantized values mean
 *    real = scale * (q - zero_point).  Multipliers are Q31 int32 values with a power-of-two
 *    `shift` in TFLite's convention: shift > 0 is a left shift, shift < 0 a right shift;
 *    multiplier == 0 means "the real multiplier is zero".  Every arithmetic parameter is computed
 *    on the host by firmware_gen/lower.py, never on the device.
 *  - Offsets are *added*: input_offset = -input_zero_point, output_offset = +output_zero_point.
 *  - Layouts are row-major; activations NHWC, conv filters OHWI, depthwise filters 1HW(C*M),
 *    fully-connected weights [units][depth].
 *  - Pointers: inputs and weights are `const` and owned by the caller (weights usually in
 *    flash); outputs are caller-owned and fully written.  A kernel never reads its output
 *    before writing it, keeps no state between calls, allocates nothing and touches no globals.
 *  - Aliasing: outputs must not overlap inputs, except where a kernel says "may run in place":
 *    then output == input (the same address, never a partial overlap) is allowed.
 *  - Scratch: kernels with a `scratch` argument get a caller-owned buffer of at least
 *    bf_<kernel>_scratch_bytes(params) bytes, aligned to 8 bytes, whose contents are undefined on
 *    entry and on return.  When that function returns 0, scratch may be NULL.
 *  - Sizes and counts are int32_t element counts (not bytes) unless named *_bytes; every shape
 *    entry is >= 1.  Parameter structs are plain data so that generated code can emit them as
 *    `static const` initialisers.
 */
#ifndef BF_KERNELS_H
#define BF_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* BF_CDEF_BEGIN (the test harness feeds the text up to BF_CDEF_END to cffi) */

#define BF_KERNELS_ABI_VERSION 1
#define BF_MAX_DIMS 6

/* ---------------------------------------------------------------------------------------- */
/* Shared parameter pieces                                                                   */

/* A 4-D shape.  Activations: n=batch, h=height, w=width, c=channels.  Conv filters (OHWI):
 * n=output channels, h=kernel height, w=kernel width, c=input channels per group. */
typedef struct {
    int32_t n;
    int32_t h;
    int32_t w;
    int32_t c;
} bf_dims4;

/* Element-wise broadcasting of two inputs into a dense row-major output.
 * Output element at coordinates (i_0 … i_{rank-1}) reads input 1 at
 * sum_k i_k * in1_stride[k] and input 2 at sum_k i_k * in2_stride[k] (element units).
 * A stride of 0 repeats the input along that dimension.  lower.py merges dimensions so that the
 * innermost one is as long as possible; a same-shape operation is rank 1 with strides {1}, {1}.
 * Entries at index >= rank are ignored. */
typedef struct {
    int32_t rank;                   /* 1 … BF_MAX_DIMS */
    int32_t shape[BF_MAX_DIMS];     /* output shape, outermost first */
    int32_t in1_stride[BF_MAX_DIMS];
    int32_t in2_stride[BF_MAX_DIMS];
} bf_bcast;

/* ---------------------------------------------------------------------------------------- */
/* CONV_2D                                                                                   */

/* Output (b, y, x, o) = act(requant(bias[o] + sum over ky, kx, i of
 *   filter[o][ky][kx][i] * (input[b][y*stride_h - pad_top + ky*dilation_h]
 *                                   [x*stride_w - pad_left + kx*dilation_w][g*C_f + i] + input_offset)))
 * where C_f = filter.c, g = o / (output.c / (input.c / C_f)) (grouped convolution) and taps
 * outside the input are skipped (zero padding in the real domain).
 * s8: reference_integer_ops::ConvPerChannel: int32 accumulator, requantized per output channel
 * with MultiplyByQuantizedMultiplier(acc, multiplier[o], shift[o]); the filter zero point must
 * be 0 (symmetric int8 weights).  Result = clamp(that + output_offset, act_min, act_max). */
typedef struct {
    bf_dims4 input;            /* N, H, W, C_in */
    bf_dims4 filter;           /* C_out, KH, KW, C_in / groups */
    bf_dims4 output;           /* N, OH, OW, C_out */
    int32_t stride_h, stride_w;      /* >= 1 */
    int32_t dilation_h, dilation_w;  /* >= 1 */
    int32_t pad_top, pad_left;       /* >= 0, TFLite's padding_values.height / .width */
    int32_t input_offset;            /* -input zero point, [-127, 128] */
    int32_t output_offset;           /* output zero point, [-128, 127] */
    int32_t act_min, act_max;        /* fused activation clamp, -128 <= act_min <= act_max <= 127 */
    const int32_t *multiplier;       /* [C_out] Q31 */
    const int32_t *shift;            /* [C_out] */
} bf_conv2d_s8_params;

/* bias: [C_out] int32 (scale input_scale * filter_scale[o]) or NULL. */
void bf_conv2d_s8(const bf_conv2d_s8_params *params, const int8_t *input, const int8_t *filter,
                  const int32_t *bias, int8_t *output, void *scratch);
size_t bf_conv2d_s8_scratch_bytes(const bf_conv2d_s8_params *params);

/* float32: reference_ops::Conv.  Sum accumulated in float32 in the order ky, kx, i, then
 * bias added, then clamped to [act_min, act_max] (-FLT_MAX/FLT_MAX when no activation). */
typedef struct {
    bf_dims4 input;
    bf_dims4 filter;
    bf_dims4 output;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    float act_min, act_max;
} bf_conv2d_f32_params;

void bf_conv2d_f32(const bf_conv2d_f32_params *params, const float *input, const float *filter,
                   const float *bias, float *output, void *scratch);
size_t bf_conv2d_f32_scratch_bytes(const bf_conv2d_f32_params *params);

/* ---------------------------------------------------------------------------------------- */
/* DEPTHWISE_CONV_2D                                                                         */

/* Output channel o = i * depth_multiplier + m reads input channel i only:
 * acc = sum over ky, kx of filter[0][ky][kx][o] * (input[…][i] + input_offset), taps outside
 * the input skipped; then as CONV_2D (per-channel requantization, output_offset, clamp).
 * s8: reference_integer_ops::DepthwiseConvPerChannel. */
typedef struct {
    bf_dims4 input;            /* N, H, W, C_in */
    bf_dims4 filter;           /* 1, KH, KW, C_out */
    bf_dims4 output;           /* N, OH, OW, C_out = C_in * depth_multiplier */
    int32_t depth_multiplier;        /* >= 1 */
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t input_offset;
    int32_t output_offset;
    int32_t act_min, act_max;
    const int32_t *multiplier;       /* [C_out] */
    const int32_t *shift;            /* [C_out] */
} bf_depthwise_conv2d_s8_params;

void bf_depthwise_conv2d_s8(const bf_depthwise_conv2d_s8_params *params, const int8_t *input,
                            const int8_t *filter, const int32_t *bias, int8_t *output,
                            void *scratch);
size_t bf_depthwise_conv2d_s8_scratch_bytes(const bf_depthwise_conv2d_s8_params *params);

/* float32: reference_ops::DepthwiseConv (float32 sum over ky, kx; + bias; clamp). */
typedef struct {
    bf_dims4 input;
    bf_dims4 filter;
    bf_dims4 output;
    int32_t depth_multiplier;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    float act_min, act_max;
} bf_depthwise_conv2d_f32_params;

void bf_depthwise_conv2d_f32(const bf_depthwise_conv2d_f32_params *params, const float *input,
                             const float *filter, const float *bias, float *output,
                             void *scratch);
size_t bf_depthwise_conv2d_f32_scratch_bytes(const bf_depthwise_conv2d_f32_params *params);

/* ---------------------------------------------------------------------------------------- */
/* FULLY_CONNECTED                                                                           */

/* input [batches][depth], weights [units][depth], output [batches][units].
 * acc = sum_d (weights[u][d] + filter_offset) * (input[b][d] + input_offset) + bias[u]  (int32)
 * s8: TensorFlow Lite Micro's FullyConnected / FullyConnectedPerChannel: integer-only
 * requantization, out = MultiplyByQuantizedMultiplier(acc, multiplier[u], shift[u]) (double
 * rounding; shift > 0 is a left shift; a per-tensor filter repeats one pair), then
 * clamp(out + output_offset, act_min, act_max).  (LiteRT's desktop reference rounds
 * acc * scale in double instead; boardfit devices follow TFLM: no double at run time.)
 * filter_offset is -filter zero point for per-tensor filters and 0 for per-channel ones. */
typedef struct {
    int32_t batches;           /* >= 1 */
    int32_t depth;             /* accumulation depth, >= 1 */
    int32_t units;             /* output depth, >= 1 */
    int32_t input_offset;      /* -input zero point */
    int32_t filter_offset;     /* -filter zero point (0 for per-channel filters) */
    int32_t output_offset;     /* output zero point */
    int32_t act_min, act_max;
    const int32_t *multiplier; /* [units] Q31 multipliers */
    const int32_t *shift;      /* [units] power-of-two exponents */
} bf_fully_connected_s8_params;

/* bias: [units] int32 or NULL. */
void bf_fully_connected_s8(const bf_fully_connected_s8_params *params, const int8_t *input,
                           const int8_t *weights, const int32_t *bias, int8_t *output,
                           void *scratch);
size_t bf_fully_connected_s8_scratch_bytes(const bf_fully_connected_s8_params *params);

/* float32: reference_ops::FullyConnected (float32 sum over d; + bias; clamp). */
typedef struct {
    int32_t batches;
    int32_t depth;
    int32_t units;
    float act_min, act_max;
} bf_fully_connected_f32_params;

void bf_fully_connected_f32(const bf_fully_connected_f32_params *params, const float *input,
                            const float *weights, const float *bias, float *output,
                            void *scratch);
size_t bf_fully_connected_f32_scratch_bytes(const bf_fully_connected_f32_params *params);

/* ---------------------------------------------------------------------------------------- */
/* AVERAGE_POOL_2D, MAX_POOL_2D                                                              */

/* Window of filter_h x filter_w at (y*stride_h - pad_top, x*stride_w - pad_left), restricted to
 * the input (padding is never counted).  Input and output share scale and zero point.
 * avgpool s8: int32 sum / count rounded half away from zero, then clamp.
 * maxpool s8: maximum (starting from -128), then clamp. */
typedef struct {
    bf_dims4 input;            /* N, H, W, C */
    bf_dims4 output;           /* N, OH, OW, C */
    int32_t filter_h, filter_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left;
    int32_t act_min, act_max;
} bf_pool_s8_params;
typedef bf_pool_s8_params bf_avgpool_s8_params;
typedef bf_pool_s8_params bf_maxpool_s8_params;

void bf_avgpool_s8(const bf_avgpool_s8_params *params, const int8_t *input, int8_t *output);
void bf_maxpool_s8(const bf_maxpool_s8_params *params, const int8_t *input, int8_t *output);

/* float32: average = float32 sum / (float)count; max starts from -FLT_MAX; then clamp. */
typedef struct {
    bf_dims4 input;
    bf_dims4 output;
    int32_t filter_h, filter_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left;
    float act_min, act_max;
} bf_pool_f32_params;
typedef bf_pool_f32_params bf_avgpool_f32_params;
typedef bf_pool_f32_params bf_maxpool_f32_params;

void bf_avgpool_f32(const bf_avgpool_f32_params *params, const float *input, float *output);
void bf_maxpool_f32(const bf_maxpool_f32_params *params, const float *input, float *output);

/* ---------------------------------------------------------------------------------------- */
/* ADD, SUB, MUL, MAXIMUM, MINIMUM (broadcasting)                                            */
/* All may run in place on either input when that input has the output's shape (its strides
 * are the dense row-major strides of the output), e.g. output == input1 for a same-shape add. */

/* s8 ADD/SUB: reference_integer_ops::Add (and its Sub twin), general rescaling:
 * a_k = MultiplyByQuantizedMultiplierSmallerThanOneExp((x_k + input_k_offset) << left_shift,
 *                                                      input_k_multiplier, input_k_shift)
 * raw = a_1 + a_2 (ADD) or a_1 - a_2 (SUB)
 * out = clamp(MultiplyByQuantizedMultiplierSmallerThanOneExp(raw, output_multiplier,
 *                                                            output_shift) + output_offset)
 * All shifts <= 0, left_shift = 20 for 8-bit types. */
typedef struct {
    bf_bcast bcast;
    int32_t left_shift;
    int32_t input1_offset, input1_multiplier, input1_shift;
    int32_t input2_offset, input2_multiplier, input2_shift;
    int32_t output_offset, output_multiplier, output_shift;
    int32_t act_min, act_max;
} bf_add_s8_params;
typedef bf_add_s8_params bf_sub_s8_params;

void bf_add_s8(const bf_add_s8_params *params, const int8_t *input1, const int8_t *input2,
               int8_t *output);
void bf_sub_s8(const bf_sub_s8_params *params, const int8_t *input1, const int8_t *input2,
               int8_t *output);

/* s8 MUL: out = clamp(MultiplyByQuantizedMultiplier((x1 + input1_offset) * (x2 + input2_offset),
 *                     output_multiplier, output_shift) + output_offset). */
typedef struct {
    bf_bcast bcast;
    int32_t input1_offset, input2_offset;
    int32_t output_offset, output_multiplier, output_shift;
    int32_t act_min, act_max;
} bf_mul_s8_params;

void bf_mul_s8(const bf_mul_s8_params *params, const int8_t *input1, const int8_t *input2,
               int8_t *output);

/* MAXIMUM / MINIMUM compare raw values (TFLite requires equal quantization): x1 > x2 ? x1 : x2
 * (and x1 < x2 ? x1 : x2).  The same struct serves s8 and f32. */
typedef struct {
    bf_bcast bcast;
} bf_minmax_params;
typedef bf_minmax_params bf_maximum_s8_params;
typedef bf_minmax_params bf_minimum_s8_params;
typedef bf_minmax_params bf_maximum_f32_params;
typedef bf_minmax_params bf_minimum_f32_params;

void bf_maximum_s8(const bf_maximum_s8_params *params, const int8_t *input1, const int8_t *input2,
                   int8_t *output);
void bf_minimum_s8(const bf_minimum_s8_params *params, const int8_t *input1, const int8_t *input2,
                   int8_t *output);
void bf_maximum_f32(const bf_maximum_f32_params *params, const float *input1, const float *input2,
                    float *output);
void bf_minimum_f32(const bf_minimum_f32_params *params, const float *input1, const float *input2,
                    float *output);

/* float32 ADD/SUB/MUL: clamp(x1 op x2, act_min, act_max) in float32. */
typedef struct {
    bf_bcast bcast;
    float act_min, act_max;
} bf_arith_f32_params;
typedef bf_arith_f32_params bf_add_f32_params;
typedef bf_arith_f32_params bf_sub_f32_params;
typedef bf_arith_f32_params bf_mul_f32_params;

void bf_add_f32(const bf_add_f32_params *params, const float *input1, const float *input2,
                float *output);
void bf_sub_f32(const bf_sub_f32_params *params, const float *input1, const float *input2,
                float *output);
void bf_mul_f32(const bf_mul_f32_params *params, const float *input1, const float *input2,
                float *output);

/* ---------------------------------------------------------------------------------------- */
/* Activations                                                                               */
/* Every kernel in this section may run in place (output == input), PRELU on its input 1. */

/* Any int8 -> int8 function of one element: output[i] = table[input[i] + 128].
 * lower.py fills the 256-entry table by running the oracle (which is bit-exact with TFLite) on
 * all 256 input values, so the result is TFLite's by construction.  Used for LOGISTIC, TANH,
 * HARD_SWISH, RSQRT and SQRT on int8. */
typedef struct {
    int32_t count;             /* elements */
    const int8_t *table;       /* [256], index = input value + 128 */
} bf_lut_s8_params;

void bf_lut_s8(const bf_lut_s8_params *params, const int8_t *input, int8_t *output);

/* RELU / RELU6 / RELU_N1_TO_1 on s8 (TFLite ReluX: rescales input to output quantization):
 * out = clamp(output_offset + MultiplyByQuantizedMultiplier(x + input_offset, multiplier, shift),
 *             act_min, act_max). */
typedef struct {
    int32_t count;
    int32_t input_offset, output_offset;
    int32_t multiplier, shift;
    int32_t act_min, act_max;
} bf_relu_s8_params;

void bf_relu_s8(const bf_relu_s8_params *params, const int8_t *input, int8_t *output);

/* LEAKY_RELU s8: v = x + input_offset;
 * out = clamp(output_offset + MultiplyByQuantizedMultiplier(v, v >= 0 ? identity : alpha), -128, 127). */
typedef struct {
    int32_t count;
    int32_t input_offset, output_offset;
    int32_t identity_multiplier, identity_shift;
    int32_t alpha_multiplier, alpha_shift;
} bf_leaky_relu_s8_params;

void bf_leaky_relu_s8(const bf_leaky_relu_s8_params *params, const int8_t *input, int8_t *output);

/* PRELU s8 (alpha broadcast as input 2): v = x + input_offset;
 * v >= 0: r = MultiplyByQuantizedMultiplier(v, multiplier_pos, shift_pos)
 * v <  0: r = MultiplyByQuantizedMultiplier(v * (alpha + alpha_offset), multiplier_neg, shift_neg)
 * out = clamp(r + output_offset, -128, 127). */
typedef struct {
    bf_bcast bcast;
    int32_t input_offset, alpha_offset, output_offset;
    int32_t multiplier_pos, shift_pos;
    int32_t multiplier_neg, shift_neg;
} bf_prelu_s8_params;

void bf_prelu_s8(const bf_prelu_s8_params *params, const int8_t *input, const int8_t *alpha,
                 int8_t *output);

/* ABS s8 (elementwise.cc AbsEvalQuantized): v = |x + input_offset|;
 * out = clamp((rescale ? MultiplyByQuantizedMultiplier(v, multiplier, shift) : v)
 *             + output_offset, -128, 127). */
typedef struct {
    int32_t count;
    int32_t input_offset, output_offset;
    int32_t rescale;           /* 0: input and output scales are equal */
    int32_t multiplier, shift;
} bf_abs_s8_params;

void bf_abs_s8(const bf_abs_s8_params *params, const int8_t *input, int8_t *output);

/* SOFTMAX s8 over the innermost dimension (reference_ops::Softmax, gemmlowp fixed point):
 * for each row: d = x - max(row); terms with d < diff_min contribute 0 and output -128; else
 * e = exp_on_negative_values<5 integer bits>(MultiplyByQuantizedMultiplierGreaterThanOne(d,
 * input_multiplier, input_left_shift)), summed in Q12.19; output = e / sum scaled to 1/256 with
 * zero point -128.  May run in place. */
typedef struct {
    int32_t rows;              /* product of all but the last dimension */
    int32_t depth;             /* last dimension */
    int32_t input_multiplier;  /* from PreprocessSoftmaxScaling(beta, input_scale, 5) */
    int32_t input_left_shift;  /* >= 0 */
    int32_t diff_min;          /* <= 0, -CalculateInputRadius(5, input_left_shift) */
} bf_softmax_s8_params;

void bf_softmax_s8(const bf_softmax_s8_params *params, const int8_t *input, int8_t *output);

/* SOFTMAX f32 (reference_ops::Softmax): e_c = expf((x_c - max) * beta); out_c = e_c / sum e.
 * May run in place. */
typedef struct {
    int32_t rows;
    int32_t depth;
    float beta;
} bf_softmax_f32_params;

void bf_softmax_f32(const bf_softmax_f32_params *params, const float *input, float *output);

/* Unary float32 kernels, element by element (may run in place):
 *  relu:       clamp(x, lo, hi)          (RELU: [0, FLT_MAX], RELU6: [0, 6], RELU_N1_TO_1: [-1, 1])
 *  leaky_relu: x > 0 ? x : x * alpha
 *  abs:        fabsf(x)
 *  logistic:   TFLite's cut-offs: x > 16.619047 -> 1, x < -9 -> expf(x), else 1 / (1 + expf(-x))
 *  tanh:       tanhf(x)
 *  hard_swish: x * min(6, max(0, x + 3)) / 6
 *  rsqrt:      1 / sqrtf(x)
 *  sqrt:       sqrtf(x) */
typedef struct {
    int32_t count;
} bf_unary_f32_params;

typedef struct {
    int32_t count;
    float lo, hi;
} bf_relu_f32_params;

typedef struct {
    int32_t count;
    float alpha;
} bf_leaky_relu_f32_params;

typedef bf_unary_f32_params bf_abs_f32_params;
typedef bf_unary_f32_params bf_logistic_f32_params;
typedef bf_unary_f32_params bf_tanh_f32_params;
typedef bf_unary_f32_params bf_hard_swish_f32_params;
typedef bf_unary_f32_params bf_rsqrt_f32_params;
typedef bf_unary_f32_params bf_sqrt_f32_params;

void bf_relu_f32(const bf_relu_f32_params *params, const float *input, float *output);
void bf_leaky_relu_f32(const bf_leaky_relu_f32_params *params, const float *input, float *output);
void bf_abs_f32(const bf_abs_f32_params *params, const float *input, float *output);
void bf_logistic_f32(const bf_logistic_f32_params *params, const float *input, float *output);
void bf_tanh_f32(const bf_tanh_f32_params *params, const float *input, float *output);
void bf_hard_swish_f32(const bf_hard_swish_f32_params *params, const float *input, float *output);
void bf_rsqrt_f32(const bf_rsqrt_f32_params *params, const float *input, float *output);
void bf_sqrt_f32(const bf_sqrt_f32_params *params, const float *input, float *output);

/* PRELU f32 (alpha broadcast as input 2): x >= 0 ? x : x * alpha. */
typedef struct {
    bf_bcast bcast;
} bf_prelu_f32_params;

void bf_prelu_f32(const bf_prelu_f32_params *params, const float *input, const float *alpha,
                  float *output);

/* ---------------------------------------------------------------------------------------- */
/* QUANTIZE, DEQUANTIZE                                                                      */

/* float32 -> int8/uint8 (reference_ops::AffineQuantize):
 * q = clamp((int32)roundf(x / scale) + zero_point, type range), the division in float32,
 * roundf rounding half away from zero.  A quotient outside the int32 range (or NaN) converts to
 * INT32_MIN before the zero point is added with wrap-around, as TFLite does on x86. */
typedef struct {
    int32_t count;
    float scale;               /* > 0, the output tensor's float32 scale */
    int32_t zero_point;
} bf_quantize_params;
typedef bf_quantize_params bf_quantize_f32_s8_params;
typedef bf_quantize_params bf_quantize_f32_u8_params;

void bf_quantize_f32_s8(const bf_quantize_f32_s8_params *params, const float *input, int8_t *output);
void bf_quantize_f32_u8(const bf_quantize_f32_u8_params *params, const float *input, uint8_t *output);

/* 8-bit -> 8-bit requantization (reference_ops::Requantize):
 * q = clamp(MultiplyByQuantizedMultiplier(x + input_offset, multiplier, shift) + output_offset,
 *           output type range).  May run in place (same element size). */
typedef struct {
    int32_t count;
    int32_t input_offset;      /* -input zero point */
    int32_t output_offset;     /* output zero point */
    int32_t multiplier, shift; /* QuantizeMultiplier(input_scale / output_scale) */
} bf_requantize_params;
typedef bf_requantize_params bf_requantize_s8_s8_params;
typedef bf_requantize_params bf_requantize_s8_u8_params;
typedef bf_requantize_params bf_requantize_u8_s8_params;
typedef bf_requantize_params bf_requantize_u8_u8_params;

void bf_requantize_s8_s8(const bf_requantize_s8_s8_params *params, const int8_t *input, int8_t *output);
void bf_requantize_s8_u8(const bf_requantize_s8_u8_params *params, const int8_t *input, uint8_t *output);
void bf_requantize_u8_s8(const bf_requantize_u8_s8_params *params, const uint8_t *input, int8_t *output);
void bf_requantize_u8_u8(const bf_requantize_u8_u8_params *params, const uint8_t *input, uint8_t *output);

/* int8/uint8 -> float32 (reference_ops::Dequantize): scale * (float)(q - zero_point) with one
 * float32 multiply.  TFLite multiplies in double and rounds to float; the results are identical
 * because both factors are exact in float32 and their exact product (at most 33 significant
 * bits) is rounded to float32 exactly once either way. */
typedef struct {
    int32_t count;
    float scale;
    int32_t zero_point;
} bf_dequantize_params;
typedef bf_dequantize_params bf_dequantize_s8_f32_params;
typedef bf_dequantize_params bf_dequantize_u8_f32_params;

void bf_dequantize_s8_f32(const bf_dequantize_s8_f32_params *params, const int8_t *input, float *output);
void bf_dequantize_u8_f32(const bf_dequantize_u8_f32_params *params, const uint8_t *input, float *output);

/* IEEE half (raw uint16 bits) -> float32, exact (subnormals, infinities and NaN included). */
typedef struct {
    int32_t count;
} bf_dequantize_f16_f32_params;

void bf_dequantize_f16_f32(const bf_dequantize_f16_f32_params *params, const uint16_t *input,
                           float *output);

/* ---------------------------------------------------------------------------------------- */
/* Data movement (any element type; elem_size in bytes: 1, 2, 4 or 8)                        */

/* RESHAPE, SQUEEZE, EXPAND_DIMS: copy `bytes` bytes; nothing to do when output == input
 * (the usual case: the memory planner runs these in place). */
typedef struct {
    int32_t bytes;
} bf_reshape_any_params;

void bf_reshape_any(const bf_reshape_any_params *params, const void *input, void *output);

/* Strided gather into a dense row-major output:
 * output[i_0 … i_{rank-1}] = input[in_offset + sum_k i_k * in_stride[k]] (element units;
 * strides may be negative or 0).  TRANSPOSE: in_offset 0, strides = permuted input strides;
 * STRIDED_SLICE: in_offset = first element, strides = slice strides × input strides. */
typedef struct {
    int32_t rank;              /* 1 … BF_MAX_DIMS */
    int32_t elem_size;
    int32_t shape[BF_MAX_DIMS];     /* output shape */
    int32_t in_offset;
    int32_t in_stride[BF_MAX_DIMS];
} bf_gather_params;
typedef bf_gather_params bf_transpose_any_params;
typedef bf_gather_params bf_strided_slice_any_params;

void bf_transpose_any(const bf_transpose_any_params *params, const void *input, void *output);
void bf_strided_slice_any(const bf_strided_slice_any_params *params, const void *input,
                          void *output);

/* PAD: output = input embedded at pad_before[k] in each dimension, every other byte set to
 * fill_byte.  Every pad value TFLite's PAD uses is one repeated byte: 0 for float/int32 and the
 * zero point for 8-bit types. */
typedef struct {
    int32_t rank;
    int32_t elem_size;
    int32_t in_shape[BF_MAX_DIMS];
    int32_t out_shape[BF_MAX_DIMS];
    int32_t pad_before[BF_MAX_DIMS];
    int32_t fill_byte;         /* 0 … 255 */
} bf_pad_any_params;

void bf_pad_any(const bf_pad_any_params *params, const void *input, void *output);

/* CONCATENATION / SPLIT / SPLIT_V along one axis, seen as `outer` rows: each row of the
 * output is the concatenation of the rows of every input, input k contributing row_bytes[k]
 * bytes (its axis size × inner size × elem_size).  TFLite concatenates 8-bit tensors only with
 * equal quantization, so no rescaling happens here. */
typedef struct {
    int32_t count;             /* number of inputs (concat) or outputs (split), >= 1 */
    int32_t outer;             /* product of the dimensions before the axis */
    const int32_t *row_bytes;  /* [count] */
} bf_concat_any_params;
typedef bf_concat_any_params bf_split_any_params;

void bf_concat_any(const bf_concat_any_params *params, const void *const *inputs, void *output);
void bf_split_any(const bf_split_any_params *params, const void *input, void *const *outputs);

/* ---------------------------------------------------------------------------------------- */
/* MEAN                                                                                      */

/* Reduce the dimensions with reduce[k] != 0; the output holds the remaining dimensions in
 * order (keep_dims only changes the shape, not the layout).  count = number of elements summed
 * per output.
 * s8 (reference_ops::QuantizedMeanOrSum): s = int32 sum of the raw values + sum_offset
 * (= -input_zero_point * count); out = clamp(MultiplyByQuantizedMultiplier(s, multiplier, shift)
 * + output_offset, -128, 127), multiplier and shift already folding 1/count as TFLite does. */
typedef struct {
    int32_t rank;
    int32_t shape[BF_MAX_DIMS];     /* input shape */
    int32_t reduce[BF_MAX_DIMS];
    int32_t sum_offset;
    int32_t multiplier, shift;
    int32_t output_offset;
} bf_mean_s8_params;

void bf_mean_s8(const bf_mean_s8_params *params, const int8_t *input, int8_t *output);

/* f32 (reference_ops::Mean): float32 sum in row-major order of the reduced elements, divided
 * by (float)count. */
typedef struct {
    int32_t rank;
    int32_t shape[BF_MAX_DIMS];
    int32_t reduce[BF_MAX_DIMS];
    int32_t count;
} bf_mean_f32_params;

void bf_mean_f32(const bf_mean_f32_params *params, const float *input, float *output);

/* BF_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* BF_KERNELS_H */
#include "bf_binary.h"
#include "bf_lowrank.h"
#include "bf_packed.h"
#include "bf_sparse.h"
