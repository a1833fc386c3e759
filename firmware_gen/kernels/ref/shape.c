/*
 * Data-movement reference kernels: RESHAPE (and SQUEEZE, EXPAND_DIMS), TRANSPOSE,
 * STRIDED_SLICE, PAD, CONCATENATION, SPLIT / SPLIT_V.  Element type agnostic.
 */
#include <string.h>

#include "bf_kernels.h"
#include "bf_ref_util.h"

void bf_reshape_any(const bf_reshape_any_params *p, const void *input, void *output) {
    if (output != input) {
        memmove(output, input, (size_t)p->bytes);
    }
}

/* Copies `n` elements of `size` bytes from src (element stride `stride`, may be <= 0) to the
 * dense dst.  Fixed sizes let the compiler turn memcpy into one load and store. */
static void copy_strided(unsigned char *dst, const unsigned char *src, int32_t n, int32_t stride,
                         int32_t size) {
    const int64_t step = (int64_t)stride * size;
    int32_t i;
    if (stride == 1) {
        memcpy(dst, src, (size_t)n * (size_t)size);
        return;
    }
    switch (size) {
    case 1:
        for (i = 0; i < n; ++i) dst[i] = src[i * step];
        break;
    case 2:
        for (i = 0; i < n; ++i) memcpy(dst + 2 * i, src + i * step, 2);
        break;
    case 4:
        for (i = 0; i < n; ++i) memcpy(dst + 4 * i, src + i * step, 4);
        break;
    default:
        for (i = 0; i < n; ++i) memcpy(dst + (int64_t)size * i, src + i * step, (size_t)size);
        break;
    }
}

static void gather(const bf_gather_params *p, const void *input, void *output) {
    const int32_t rank = p->rank;
    const int32_t inner = p->shape[rank - 1];
    const int32_t size = p->elem_size;
    const unsigned char *in = (const unsigned char *)input;
    unsigned char *out = (unsigned char *)output;
    int32_t rows = 1;
    int32_t row, k;
    for (k = 0; k + 1 < rank; ++k) {
        rows *= p->shape[k];
    }
    for (row = 0; row < rows; ++row) {
        int64_t off = p->in_offset;
        int32_t rest = row;
        for (k = rank - 2; k >= 0; --k) {
            off += (int64_t)(rest % p->shape[k]) * p->in_stride[k];
            rest /= p->shape[k];
        }
        copy_strided(out + (int64_t)row * inner * size, in + off * size, inner,
                     p->in_stride[rank - 1], size);
    }
}

void bf_transpose_any(const bf_transpose_any_params *p, const void *input, void *output) {
    gather(p, input, output);
}

void bf_strided_slice_any(const bf_strided_slice_any_params *p, const void *input, void *output) {
    gather(p, input, output);
}

void bf_pad_any(const bf_pad_any_params *p, const void *input, void *output) {
    const int32_t rank = p->rank;
    const int32_t size = p->elem_size;
    const int32_t out_inner = p->out_shape[rank - 1] * size;
    const int32_t in_inner = p->in_shape[rank - 1] * size;
    const int32_t before = p->pad_before[rank - 1] * size;
    const int32_t after = out_inner - in_inner - before;
    const unsigned char *in = (const unsigned char *)input;
    unsigned char *out = (unsigned char *)output;
    int32_t rows = 1;
    int32_t row, k;
    for (k = 0; k + 1 < rank; ++k) {
        rows *= p->out_shape[k];
    }
    for (row = 0; row < rows; ++row) {
        unsigned char *dst = out + (int64_t)row * out_inner;
        int64_t in_row = 0;
        int64_t in_rows_stride = 1;
        int32_t rest = row;
        int inside = 1;
        for (k = rank - 2; k >= 0; --k) {
            const int32_t i = rest % p->out_shape[k] - p->pad_before[k];
            rest /= p->out_shape[k];
            if (i < 0 || i >= p->in_shape[k]) {
                inside = 0;
                break;
            }
            in_row += (int64_t)i * in_rows_stride;
            in_rows_stride *= p->in_shape[k];
        }
        if (!inside) {
            memset(dst, p->fill_byte, (size_t)out_inner);
            continue;
        }
        memset(dst, p->fill_byte, (size_t)before);
        memcpy(dst + before, in + in_row * in_inner, (size_t)in_inner);
        memset(dst + before + in_inner, p->fill_byte, (size_t)after);
    }
}

void bf_concat_any(const bf_concat_any_params *p, const void *const *inputs, void *output) {
    unsigned char *out = (unsigned char *)output;
    int32_t row, k;
    for (row = 0; row < p->outer; ++row) {
        for (k = 0; k < p->count; ++k) {
            const unsigned char *in = (const unsigned char *)inputs[k];
            memcpy(out, in + (int64_t)row * p->row_bytes[k], (size_t)p->row_bytes[k]);
            out += p->row_bytes[k];
        }
    }
}

void bf_split_any(const bf_split_any_params *p, const void *input, void *const *outputs) {
    const unsigned char *in = (const unsigned char *)input;
    int32_t row, k;
    for (row = 0; row < p->outer; ++row) {
        for (k = 0; k < p->count; ++k) {
            unsigned char *out = (unsigned char *)outputs[k];
            memcpy(out + (int64_t)row * p->row_bytes[k], in, (size_t)p->row_bytes[k]);
            in += p->row_bytes[k];
        }
    }
}
