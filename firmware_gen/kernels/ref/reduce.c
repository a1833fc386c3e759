/*
 * MEAN reference kernels (TFLite reference_ops::QuantizedMeanOrSum and reference_ops::Mean).
 * Each output element sums its reduced elements in row-major order, which is the order in which
 * TFLite's ReduceSumImpl adds them into that element's accumulator.
 */
#include "bf_kernels.h"
#include "bf_fixedpoint.h"
#include "bf_ref_util.h"

/* Splits the dimensions into kept (output) and reduced ones, with element strides. */
typedef struct {
    int32_t n_keep, n_red;
    int32_t keep_shape[BF_MAX_DIMS], keep_stride[BF_MAX_DIMS];
    int32_t red_shape[BF_MAX_DIMS], red_stride[BF_MAX_DIMS];
    int32_t outputs, per_output;
} reduce_plan;

static void make_plan(int32_t rank, const int32_t *shape, const int32_t *reduce, reduce_plan *r) {
    int32_t stride = 1;
    int32_t k;
    r->n_keep = 0;
    r->n_red = 0;
    r->outputs = 1;
    r->per_output = 1;
    /* Walk from the innermost dimension to know strides, then store outermost first. */
    for (k = rank - 1; k >= 0; --k) {
        if (reduce[k]) {
            r->red_shape[r->n_red] = shape[k];
            r->red_stride[r->n_red] = stride;
            r->per_output *= shape[k];
            ++r->n_red;
        } else {
            r->keep_shape[r->n_keep] = shape[k];
            r->keep_stride[r->n_keep] = stride;
            r->outputs *= shape[k];
            ++r->n_keep;
        }
        stride *= shape[k];
    }
}

/* Offset of the o-th output's first element; dims are stored innermost first. */
static int64_t base_offset(const reduce_plan *r, int32_t o) {
    int64_t off = 0;
    int32_t k;
    for (k = 0; k < r->n_keep; ++k) {
        off += (int64_t)(o % r->keep_shape[k]) * r->keep_stride[k];
        o /= r->keep_shape[k];
    }
    return off;
}

/* Offset of the j-th reduced element (row-major over the reduced dims) relative to the base. */
static int64_t reduced_offset(const reduce_plan *r, int32_t j) {
    int64_t off = 0;
    int32_t k;
    for (k = 0; k < r->n_red; ++k) {
        off += (int64_t)(j % r->red_shape[k]) * r->red_stride[k];
        j /= r->red_shape[k];
    }
    return off;
}

void bf_mean_s8(const bf_mean_s8_params *p, const int8_t *input, int8_t *output) {
    reduce_plan r;
    int32_t o, j;
    make_plan(p->rank, p->shape, p->reduce, &r);
    for (o = 0; o < r.outputs; ++o) {
        const int8_t *base = input + base_offset(&r, o);
        int32_t sum = 0;
        int32_t v;
        for (j = 0; j < r.per_output; ++j) {
            sum += base[reduced_offset(&r, j)];
        }
        v = bf_mbqm(bf_wrap_add(sum, p->sum_offset), p->multiplier, p->shift) + p->output_offset;
        output[o] = (int8_t)bf_clamp_i32(v, -128, 127);
    }
}

void bf_mean_f32(const bf_mean_f32_params *p, const float *input, float *output) {
    reduce_plan r;
    int32_t o, j;
    make_plan(p->rank, p->shape, p->reduce, &r);
    for (o = 0; o < r.outputs; ++o) {
        const float *base = input + base_offset(&r, o);
        float sum = 0.0f;
        for (j = 0; j < r.per_output; ++j) {
            sum += base[reduced_offset(&r, j)];
        }
        output[o] = sum / (float)p->count;
    }
}
