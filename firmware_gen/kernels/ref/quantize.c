/*
 * QUANTIZE and DEQUANTIZE reference kernels (TFLite reference_ops::AffineQuantize, Requantize,
 * Dequantize and the float16 dequantization of fp16-weight models).
 */
#include <math.h>
#include <string.h>

#include "bf_kernels.h"
#include "bf_fixedpoint.h"
#include "bf_ref_util.h"

/* (int32)roundf(x / scale) + zero_point with the int32 conversion x86 performs (cvttss2si):
 * a quotient outside the int32 range, an infinity or NaN becomes INT32_MIN; the zero point is
 * then added with wrap-around.  This is what the TFLite interpreter we are checked against
 * computes (the C++ conversion is undefined there). */
static int32_t quantize_one(const bf_quantize_params *p, float x) {
    const float r = roundf(x / p->scale);
    const int32_t q = (r >= -2147483648.0f && r < 2147483648.0f) ? (int32_t)r : BF_INT32_MIN;
    return bf_wrap_add(q, p->zero_point);
}

void bf_quantize_f32_s8(const bf_quantize_f32_s8_params *p, const float *input, int8_t *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        output[i] = (int8_t)bf_clamp_i32(quantize_one(p, input[i]), -128, 127);
    }
}

void bf_quantize_f32_u8(const bf_quantize_f32_u8_params *p, const float *input, uint8_t *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        output[i] = (uint8_t)bf_clamp_i32(quantize_one(p, input[i]), 0, 255);
    }
}

#define BF_REQUANTIZE(NAME, TIN, TOUT, LO, HI)                                              \
    void NAME(const NAME##_params *p, const TIN *input, TOUT *output) {                     \
        int32_t i;                                                                          \
        for (i = 0; i < p->count; ++i) {                                                    \
            const int32_t v =                                                               \
                bf_mbqm((int32_t)input[i] + p->input_offset, p->multiplier, p->shift) +     \
                p->output_offset;                                                           \
            output[i] = (TOUT)bf_clamp_i32(v, (LO), (HI));                                  \
        }                                                                                   \
    }

BF_REQUANTIZE(bf_requantize_s8_s8, int8_t, int8_t, -128, 127)
BF_REQUANTIZE(bf_requantize_s8_u8, int8_t, uint8_t, 0, 255)
BF_REQUANTIZE(bf_requantize_u8_s8, uint8_t, int8_t, -128, 127)
BF_REQUANTIZE(bf_requantize_u8_u8, uint8_t, uint8_t, 0, 255)

#undef BF_REQUANTIZE

void bf_dequantize_s8_f32(const bf_dequantize_s8_f32_params *p, const int8_t *input, float *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        output[i] = p->scale * (float)((int32_t)input[i] - p->zero_point);
    }
}

void bf_dequantize_u8_f32(const bf_dequantize_u8_f32_params *p, const uint8_t *input, float *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        output[i] = p->scale * (float)((int32_t)input[i] - p->zero_point);
    }
}

static float half_to_float(uint16_t h) {
    const uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    const uint32_t exponent = ((uint32_t)h >> 10) & 0x1Fu;
    uint32_t mantissa = (uint32_t)h & 0x3FFu;
    uint32_t bits;
    float f;
    if (exponent == 0x1Fu) {
        bits = sign | 0x7F800000u | (mantissa << 13); /* infinity or NaN (payload kept) */
    } else if (exponent != 0u) {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    } else if (mantissa == 0u) {
        bits = sign; /* signed zero */
    } else {
        /* Subnormal half: normalise into a float32 normal number. */
        uint32_t e = 113u;
        while ((mantissa & 0x400u) == 0u) {
            mantissa <<= 1;
            --e;
        }
        bits = sign | (e << 23) | ((mantissa & 0x3FFu) << 13);
    }
    memcpy(&f, &bits, sizeof f);
    return f;
}

void bf_dequantize_f16_f32(const bf_dequantize_f16_f32_params *p, const uint16_t *input,
                           float *output) {
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        output[i] = half_to_float(input[i]);
    }
}
