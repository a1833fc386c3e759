/*
 * Activation reference kernels: table lookup, RELU family, LEAKY_RELU, PRELU, ABS, SOFTMAX
 * (int8) and the float32 unary functions.  Every kernel here may run in place.
 */
#include <math.h>

#include "bf_kernels.h"
#include "bf_fixedpoint.h"
#include "bf_ref_util.h"

/* ---------------------------------------------------------------------------------------- */
/* int8                                                                                      */

void bf_lut_s8(const bf_lut_s8_params *p, const int8_t *input, int8_t *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        output[i] = p->table[(int32_t)input[i] + 128];
    }
}

void bf_relu_s8(const bf_relu_s8_params *p, const int8_t *input, int8_t *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        const int32_t v = p->output_offset +
                          bf_mbqm((int32_t)input[i] + p->input_offset, p->multiplier, p->shift);
        output[i] = (int8_t)bf_clamp_i32(v, p->act_min, p->act_max);
    }
}

void bf_leaky_relu_s8(const bf_leaky_relu_s8_params *p, const int8_t *input, int8_t *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        const int32_t v = (int32_t)input[i] + p->input_offset;
        const int32_t r = v >= 0 ? bf_mbqm(v, p->identity_multiplier, p->identity_shift)
                                 : bf_mbqm(v, p->alpha_multiplier, p->alpha_shift);
        output[i] = (int8_t)bf_clamp_i32(p->output_offset + r, -128, 127);
    }
}

static int8_t prelu_s8(const bf_prelu_s8_params *p, int8_t x, int8_t alpha) {
    const int32_t v = (int32_t)x + p->input_offset;
    int32_t r;
    if (v >= 0) {
        r = bf_mbqm(v, p->multiplier_pos, p->shift_pos);
    } else {
        r = bf_mbqm(v * ((int32_t)alpha + p->alpha_offset), p->multiplier_neg, p->shift_neg);
    }
    return (int8_t)bf_clamp_i32(r + p->output_offset, -128, 127);
}

void bf_prelu_s8(const bf_prelu_s8_params *p, const int8_t *input, const int8_t *alpha,
                 int8_t *output) {
#define BF_PRELU_S8(x, a) prelu_s8(p, (x), (a))
    BF_BCAST_APPLY(&p->bcast, input, alpha, output, BF_PRELU_S8);
#undef BF_PRELU_S8
}

void bf_abs_s8(const bf_abs_s8_params *p, const int8_t *input, int8_t *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        const int32_t d = (int32_t)input[i] + p->input_offset;
        const int32_t v = d < 0 ? -d : d;
        const int32_t r = p->rescale ? bf_mbqm(v, p->multiplier, p->shift) : v;
        output[i] = (int8_t)bf_clamp_i32(r + p->output_offset, -128, 127);
    }
}

/* exp((x - max) * beta) in Q0.31 for one element, or -1 when the difference is below diff_min
 * (the element then contributes nothing and its output is -128). */
static int32_t softmax_exp(const bf_softmax_s8_params *p, int32_t diff) {
    if (diff < p->diff_min) {
        return -1;
    }
    return bf_exp_on_negative_values(
        bf_mbqm_greater_than_one(diff, p->input_multiplier, p->input_left_shift), 5);
}

void bf_softmax_s8(const bf_softmax_s8_params *p, const int8_t *input, int8_t *output) {
    int32_t r, c;
    for (r = 0; r < p->rows; ++r) {
        const int8_t *in = input + (int64_t)r * p->depth;
        int8_t *out = output + (int64_t)r * p->depth;
        int32_t max_in_row = -128;
        int32_t sum_of_exps = 0; /* FixedPoint<int32, 12> */
        int32_t shifted_scale;
        int num_bits_over_unit;
        for (c = 0; c < p->depth; ++c) {
            max_in_row = in[c] > max_in_row ? in[c] : max_in_row;
        }
        for (c = 0; c < p->depth; ++c) {
            const int32_t e = softmax_exp(p, (int32_t)in[c] - max_in_row);
            if (e >= 0) {
                sum_of_exps = bf_wrap_add(sum_of_exps, bf_fp_rescale(e, 0, 12));
            }
        }
        shifted_scale = bf_get_reciprocal(sum_of_exps, 12, &num_bits_over_unit);
        for (c = 0; c < p->depth; ++c) {
            const int32_t e = softmax_exp(p, (int32_t)in[c] - max_in_row);
            if (e >= 0) {
                /* RoundingDivideByPOT(raw, num_bits_over_unit + 31 - 8); the exponent exceeds
                 * 31 only for rows whose exponentials sum to 2^9 or more (depth >= 512), where
                 * TFLite's int32 shift is undefined; the int64 form keeps the exact quotient. */
                const int64_t unsat =
                    bf_rdbpot64((int64_t)bf_srdhm(shifted_scale, e), num_bits_over_unit + 23);
                const int64_t shifted = unsat - 128;
                out[c] = (int8_t)(shifted > 127 ? 127 : (shifted < -128 ? -128 : shifted));
            } else {
                out[c] = -128;
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* float32                                                                                   */

void bf_softmax_f32(const bf_softmax_f32_params *p, const float *input, float *output) {
    int32_t r, c;
    for (r = 0; r < p->rows; ++r) {
        const float *in = input + (int64_t)r * p->depth;
        float *out = output + (int64_t)r * p->depth;
        float max = -3.40282347e+38f;
        float sum = 0.0f;
        for (c = 0; c < p->depth; ++c) {
            max = in[c] > max ? in[c] : max;
        }
        for (c = 0; c < p->depth; ++c) {
            const float e = expf((in[c] - max) * p->beta);
            out[c] = e;
            sum += e;
        }
        for (c = 0; c < p->depth; ++c) {
            out[c] = out[c] / sum;
        }
    }
}

void bf_relu_f32(const bf_relu_f32_params *p, const float *input, float *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        output[i] = bf_clamp_f32(input[i], p->lo, p->hi);
    }
}

void bf_leaky_relu_f32(const bf_leaky_relu_f32_params *p, const float *input, float *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        const float x = input[i];
        output[i] = x > 0.0f ? x : x * p->alpha;
    }
}

static float prelu_f32(float x, float alpha) { return x >= 0.0f ? x : x * alpha; }

void bf_prelu_f32(const bf_prelu_f32_params *p, const float *input, const float *alpha,
                  float *output) {
    BF_BCAST_APPLY(&p->bcast, input, alpha, output, prelu_f32);
}

void bf_abs_f32(const bf_abs_f32_params *p, const float *input, float *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        output[i] = fabsf(input[i]);
    }
}

void bf_logistic_f32(const bf_logistic_f32_params *p, const float *input, float *output) {
    /* reference_ops::Logistic: saturate above, exp(x) below, where 1/(1+exp(-x)) would lose
     * precision or overflow. */
    const float cutoff_upper = 16.619047164916992188f;
    const float cutoff_lower = -9.0f;
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        const float x = input[i];
        float r;
        if (x > cutoff_upper) {
            r = 1.0f;
        } else if (x < cutoff_lower) {
            r = expf(x);
        } else {
            r = 1.0f / (1.0f + expf(-x));
        }
        output[i] = r;
    }
}

void bf_tanh_f32(const bf_tanh_f32_params *p, const float *input, float *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        output[i] = tanhf(input[i]);
    }
}

void bf_hard_swish_f32(const bf_hard_swish_f32_params *p, const float *input, float *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        const float x = input[i];
        const float r = x + 3.0f;
        const float relu6 = r < 0.0f ? 0.0f : (r > 6.0f ? 6.0f : r);
        output[i] = x * relu6 / 6.0f;
    }
}

void bf_rsqrt_f32(const bf_rsqrt_f32_params *p, const float *input, float *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        output[i] = 1.0f / sqrtf(input[i]);
    }
}

void bf_sqrt_f32(const bf_sqrt_f32_params *p, const float *input, float *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        output[i] = sqrtf(input[i]);
    }
}
