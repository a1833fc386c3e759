/*
 * FULLY_CONNECTED reference kernels (TFLite reference_integer_ops::FullyConnected /
 * FullyConnectedPerChannel and reference_ops::FullyConnected).  No scratch.
 *
 * int8 requantizes as TensorFlow Lite Micro does: MultiplyByQuantizedMultiplier with the
 * per-unit multiplier and shift (integer only; no double arithmetic on the device).
 */
#include "bf_kernels.h"
#include "bf_fixedpoint.h"
#include "bf_ref_util.h"

size_t bf_fully_connected_s8_scratch_bytes(const bf_fully_connected_s8_params *params) {
    (void)params;
    return 0;
}

size_t bf_fully_connected_f32_scratch_bytes(const bf_fully_connected_f32_params *params) {
    (void)params;
    return 0;
}

void bf_fully_connected_s8(const bf_fully_connected_s8_params *p, const int8_t *input,
                           const int8_t *weights, const int32_t *bias, int8_t *output,
                           void *scratch) {
    int32_t b, u, d;
    (void)scratch;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in = input + (int64_t)b * p->depth;
        int8_t *out = output + (int64_t)b * p->units;
        for (u = 0; u < p->units; ++u) {
            const int8_t *w = weights + (int64_t)u * p->depth;
            int32_t acc = 0;
            int32_t q;
            for (d = 0; d < p->depth; ++d) {
                acc += ((int32_t)w[d] + p->filter_offset) * ((int32_t)in[d] + p->input_offset);
            }
            if (bias != NULL) {
                acc += bias[u];
            }
            q = bf_mbqm(acc, p->multiplier[u], p->shift[u]);
            q = bf_wrap_add(q, p->output_offset);
            out[u] = (int8_t)bf_clamp_i32(q, p->act_min, p->act_max);
        }
    }
}

void bf_fully_connected_f32(const bf_fully_connected_f32_params *p, const float *input,
                            const float *weights, const float *bias, float *output,
                            void *scratch) {
    int32_t b, u, d;
    (void)scratch;
    for (b = 0; b < p->batches; ++b) {
        const float *in = input + (int64_t)b * p->depth;
        float *out = output + (int64_t)b * p->units;
        for (u = 0; u < p->units; ++u) {
            const float *w = weights + (int64_t)u * p->depth;
            float total = 0.0f;
            for (d = 0; d < p->depth; ++d) {
                total += in[d] * w[d];
            }
            out[u] = bf_clamp_f32(total + (bias != NULL ? bias[u] : 0.0f), p->act_min, p->act_max);
        }
    }
}
