/*
 * ADD, SUB, MUL, MAXIMUM, MINIMUM reference kernels with broadcasting (TFLite
 * reference_integer_ops::Add / Sub / Mul, BroadcastAdd6DSlow … and the float twins).
 */
#include "bf_kernels.h"
#include "bf_fixedpoint.h"
#include "bf_ref_util.h"

static int8_t add_sub_s8(const bf_add_s8_params *p, int8_t x1, int8_t x2, int subtract) {
    const int32_t shifted1 = bf_wrap_shl((int32_t)x1 + p->input1_offset, (int)p->left_shift);
    const int32_t shifted2 = bf_wrap_shl((int32_t)x2 + p->input2_offset, (int)p->left_shift);
    const int32_t scaled1 = bf_mbqm_smaller_than_one(shifted1, p->input1_multiplier, p->input1_shift);
    const int32_t scaled2 = bf_mbqm_smaller_than_one(shifted2, p->input2_multiplier, p->input2_shift);
    const int32_t raw = subtract ? bf_wrap_sub(scaled1, scaled2) : bf_wrap_add(scaled1, scaled2);
    const int32_t out =
        bf_mbqm_smaller_than_one(raw, p->output_multiplier, p->output_shift) + p->output_offset;
    return (int8_t)bf_clamp_i32(out, p->act_min, p->act_max);
}

void bf_add_s8(const bf_add_s8_params *p, const int8_t *input1, const int8_t *input2,
               int8_t *output) {
#define BF_ADD_S8(a, b) add_sub_s8(p, (a), (b), 0)
    BF_BCAST_APPLY(&p->bcast, input1, input2, output, BF_ADD_S8);
#undef BF_ADD_S8
}

void bf_sub_s8(const bf_sub_s8_params *p, const int8_t *input1, const int8_t *input2,
               int8_t *output) {
#define BF_SUB_S8(a, b) add_sub_s8(p, (a), (b), 1)
    BF_BCAST_APPLY(&p->bcast, input1, input2, output, BF_SUB_S8);
#undef BF_SUB_S8
}

static int8_t mul_s8(const bf_mul_s8_params *p, int8_t x1, int8_t x2) {
    const int32_t prod = ((int32_t)x1 + p->input1_offset) * ((int32_t)x2 + p->input2_offset);
    const int32_t out = bf_mbqm(prod, p->output_multiplier, p->output_shift) + p->output_offset;
    return (int8_t)bf_clamp_i32(out, p->act_min, p->act_max);
}

void bf_mul_s8(const bf_mul_s8_params *p, const int8_t *input1, const int8_t *input2,
               int8_t *output) {
#define BF_MUL_S8(a, b) mul_s8(p, (a), (b))
    BF_BCAST_APPLY(&p->bcast, input1, input2, output, BF_MUL_S8);
#undef BF_MUL_S8
}

#define BF_MAX(a, b) ((a) > (b) ? (a) : (b))
#define BF_MIN(a, b) ((a) < (b) ? (a) : (b))

void bf_maximum_s8(const bf_maximum_s8_params *p, const int8_t *input1, const int8_t *input2,
                   int8_t *output) {
    BF_BCAST_APPLY(&p->bcast, input1, input2, output, BF_MAX);
}

void bf_minimum_s8(const bf_minimum_s8_params *p, const int8_t *input1, const int8_t *input2,
                   int8_t *output) {
    BF_BCAST_APPLY(&p->bcast, input1, input2, output, BF_MIN);
}

void bf_maximum_f32(const bf_maximum_f32_params *p, const float *input1, const float *input2,
                    float *output) {
    BF_BCAST_APPLY(&p->bcast, input1, input2, output, BF_MAX);
}

void bf_minimum_f32(const bf_minimum_f32_params *p, const float *input1, const float *input2,
                    float *output) {
    BF_BCAST_APPLY(&p->bcast, input1, input2, output, BF_MIN);
}

void bf_add_f32(const bf_add_f32_params *p, const float *input1, const float *input2,
                float *output) {
#define BF_ADD_F32(a, b) bf_clamp_f32((a) + (b), p->act_min, p->act_max)
    BF_BCAST_APPLY(&p->bcast, input1, input2, output, BF_ADD_F32);
#undef BF_ADD_F32
}

void bf_sub_f32(const bf_sub_f32_params *p, const float *input1, const float *input2,
                float *output) {
#define BF_SUB_F32(a, b) bf_clamp_f32((a) - (b), p->act_min, p->act_max)
    BF_BCAST_APPLY(&p->bcast, input1, input2, output, BF_SUB_F32);
#undef BF_SUB_F32
}

void bf_mul_f32(const bf_mul_f32_params *p, const float *input1, const float *input2,
                float *output) {
#define BF_MUL_F32(a, b) bf_clamp_f32((a) * (b), p->act_min, p->act_max)
    BF_BCAST_APPLY(&p->bcast, input1, input2, output, BF_MUL_F32);
#undef BF_MUL_F32
}
