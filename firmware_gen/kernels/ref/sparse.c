/*
 * Sparse-table kernels: FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D over Deep Compression's
 * packed sparse table, plain or Huffman-coded (contract: include/bf_sparse.h).
 *
 * One inner routine runs a range of rows of a plain stream over one input vector; the FC
 * kernels call it per batch row, the convolutions per output pixel on the gathered patch.  The
 * Huffman variants first decode rows into scratch (per block, or once for the boot variants) and
 * then run the same routine on the decoded rows.
 */
#include "bf_sparse.h"

#include "bf_fixedpoint.h"
#include "bf_ref_util.h"

/* Shape of the table: rows and positions per row, and which input segment a row reads. */
typedef struct {
    int32_t rows;
    int32_t row_length;
    int32_t rows_per_segment;  /* row r reads x + (r / rows_per_segment) * row_length */
} bf_sparse_shape;

#define BF_REQUANT_OF(p)                                                                     \
    { (p)->input_offset, (p)->output_offset, (p)->act_min, (p)->act_max, (p)->per_channel,   \
      (p)->bias_shift, (p)->bias, (p)->multiplier, (p)->shift }

/* ---------------------------------------------------------------------------------------- */
/* The row routine.                                                                          */

static int8_t bf_sparse_out(const bf_sparse_requant *q, int32_t r, int32_t acc) {
    const int32_t c = q->per_channel ? r : 0;
    const int32_t bias = (int32_t)q->bias[r] * ((int32_t)1 << q->bias_shift);
    int32_t v = bf_mbqm(bf_wrap_add(acc, bias), q->multiplier[c], q->shift[c]);
    v = bf_wrap_add(v, q->output_offset);
    return (int8_t)bf_clamp_i32(v, q->act_min, q->act_max);
}

/* Refill the bit buffer so that it holds at least `width` (<= 16) bits: at most two bytes,
 * never one that the stream does not need. */
#define BF_REFILL(next, bits, avail, width)                                                  \
    do {                                                                                     \
        if ((avail) < (width)) {                                                             \
            (bits) |= (uint32_t)(*(next)++) << (avail);                                      \
            (avail) += 8;                                                                    \
            if ((avail) < (width)) {                                                         \
                (bits) |= (uint32_t)(*(next)++) << (avail);                                  \
                (avail) += 8;                                                                \
            }                                                                                \
        }                                                                                    \
    } while (0)

/* One row's dot product: `count` entries from the reader over xr.  xp points one past the
 * previous entry (xr at the row start), so an entry's gap is added before it is read. */
static int32_t bf_sparse_dot(bf_bitreader *br, int32_t count, const bf_sparse_layout *L,
                             const int8_t *xr, int32_t in_off) {
    const int32_t k = L->index_bits;
    const int32_t width = L->index_bits + L->value_bits;
    const uint32_t kmask = (1u << k) - 1u;
    const uint32_t bmask = (1u << L->value_bits) - 1u;
    const int8_t *cb = L->codebook;
    const uint8_t *next = br->next;
    const int8_t *xp = xr;
    uint32_t bits = br->bits;
    int32_t avail = br->count;
    int32_t acc = 0;
    int32_t e;
    if (cb != NULL) {
        for (e = count; e > 0; --e) {
            uint32_t f;
            BF_REFILL(next, bits, avail, width);
            f = bits;
            bits >>= width;
            avail -= width;
            xp += f & kmask;
            acc += (int32_t)cb[(f >> k) & bmask] * ((int32_t)*xp++ + in_off);
        }
    } else {
        for (e = count; e > 0; --e) {
            uint32_t f;
            BF_REFILL(next, bits, avail, width);
            f = bits;
            bits >>= width;
            avail -= width;
            xp += f & kmask;
            /* The code is the weight in 8-bit two's complement. */
            acc += ((int32_t)(((f >> k) & 0xFFu) ^ 0x80u) - 128) * ((int32_t)*xp++ + in_off);
        }
    }
    br->next = next;
    br->bits = bits;
    br->count = avail;
    return acc;
}

/* Rows [r0, r1) of the plain stream `stream` (which starts at row r0) over input `x`; output
 * row r goes to out[r]. */
static void bf_sparse_rows(const bf_sparse_layout *L, const bf_sparse_shape *S,
                           const bf_sparse_requant *q, const uint8_t *stream, int32_t r0,
                           int32_t r1, const int8_t *x, int8_t *out) {
    bf_bitreader br;
    int32_t r;
    bf_bitreader_init(&br, stream);
    for (r = r0; r < r1; ++r) {
        const int8_t *xr = x + (int64_t)(r / S->rows_per_segment) * S->row_length;
        const int32_t count = (int32_t)bf_bitreader_get(&br, L->count_bits);
        out[r] = bf_sparse_out(q, r, bf_sparse_dot(&br, count, L, xr, q->input_offset));
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Scratch of the Huffman variants.                                                          */

#define BF_HBOOT_TAG_BYTES 8
#define BF_HBOOT_MAGIC 0x5B0F7AB1u

static size_t bf_huff_scratch(const bf_sparse_layout *L, const bf_sparse_huffman *h) {
    return bf_huffman_tables_bytes(L, 1) + (size_t)h->block_bytes;
}

static size_t bf_hboot_scratch(const bf_sparse_layout *L, const bf_sparse_huffman *h) {
    return BF_HBOOT_TAG_BYTES + bf_huffman_tables_bytes(L, 0) + (size_t)h->table_bytes;
}

/* The decoded table of a boot variant: decoded on the first call (or whenever the tag does not
 * match these params, e.g. uninitialised RAM), then reused. */
static const uint8_t *bf_hboot_table(const bf_sparse_layout *L, const bf_sparse_huffman *h,
                                     int32_t rows, uint8_t *scratch) {
    const uint32_t tag = BF_HBOOT_MAGIC ^ (uint32_t)(uintptr_t)h->stream ^ (uint32_t)h->table_bytes;
    uint32_t *stored = (uint32_t *)(void *)scratch;
    uint8_t *tables = scratch + BF_HBOOT_TAG_BYTES;
    uint8_t *table = tables + bf_huffman_tables_bytes(L, 0);
    if (*stored != tag) {
        bf_huffreader in;
        bf_huffman_tables_init(L, h->code_lengths, tables, 0);
        bf_huffreader_init(&in, h->stream, h->stream_bytes);
        bf_huffman_decode_rows(L, tables, 0, &in, rows, table, h->table_bytes);
        *stored = tag;
    }
    return table;
}

/* ---------------------------------------------------------------------------------------- */
/* FULLY_CONNECTED                                                                           */

static void bf_fc_sparse_run(int32_t batches, const bf_sparse_layout *L, const bf_sparse_shape *S,
                             const bf_sparse_requant *q, const uint8_t *stream, int32_t r0,
                             int32_t r1, const int8_t *input, int8_t *output) {
    int32_t b;
    for (b = 0; b < batches; ++b) {
        bf_sparse_rows(L, S, q, stream, r0, r1, input + (int64_t)b * S->row_length,
                       output + (int64_t)b * S->rows);
    }
}

void bf_fully_connected_sparse_s8(const bf_fully_connected_sparse_s8_params *p,
                                  const int8_t *input, int8_t *output) {
    const bf_sparse_shape S = {p->units, p->depth, p->units};
    const bf_sparse_requant q = BF_REQUANT_OF(p);
    bf_fc_sparse_run(p->batches, &p->layout, &S, &q, p->stream, 0, p->units, input, output);
}

size_t bf_fully_connected_sparse_huff_s8_scratch_bytes(
    const bf_fully_connected_sparse_huff_s8_params *p) {
    return bf_huff_scratch(&p->layout, &p->huffman);
}

void bf_fully_connected_sparse_huff_s8(const bf_fully_connected_sparse_huff_s8_params *p,
                                       const int8_t *input, int8_t *output, void *scratch) {
    const bf_sparse_shape S = {p->units, p->depth, p->units};
    const bf_sparse_requant q = BF_REQUANT_OF(p);
    const bf_sparse_layout *L = &p->layout;
    uint8_t *tables = (uint8_t *)scratch;
    uint8_t *block = tables + bf_huffman_tables_bytes(L, 1);
    bf_huffreader in;
    int32_t r0;
    bf_huffman_tables_init(L, p->huffman.code_lengths, tables, 1);
    bf_huffreader_init(&in, p->huffman.stream, p->huffman.stream_bytes);
    for (r0 = 0; r0 < S.rows; r0 += p->huffman.block_rows) {
        const int32_t r1 = bf_min_i32(r0 + p->huffman.block_rows, S.rows);
        bf_huffman_decode_rows(L, tables, 1, &in, r1 - r0, block, p->huffman.block_bytes);
        bf_fc_sparse_run(p->batches, L, &S, &q, block, r0, r1, input, output);
    }
}

size_t bf_fully_connected_sparse_hboot_s8_scratch_bytes(
    const bf_fully_connected_sparse_hboot_s8_params *p) {
    return bf_hboot_scratch(&p->layout, &p->huffman);
}

void bf_fully_connected_sparse_hboot_s8(const bf_fully_connected_sparse_hboot_s8_params *p,
                                        const int8_t *input, int8_t *output, void *scratch) {
    const bf_sparse_shape S = {p->units, p->depth, p->units};
    const bf_sparse_requant q = BF_REQUANT_OF(p);
    const uint8_t *table = bf_hboot_table(&p->layout, &p->huffman, S.rows, (uint8_t *)scratch);
    bf_fc_sparse_run(p->batches, &p->layout, &S, &q, table, 0, S.rows, input, output);
}

/* ---------------------------------------------------------------------------------------- */
/* CONV_2D and DEPTHWISE_CONV_2D                                                             */

typedef struct {
    const bf_dims4 *input;
    const bf_dims4 *filter;
    const bf_dims4 *output;
    int32_t stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
    int32_t depthwise;  /* patch layout: 0 [group][ky][kx][ci], 1 [c][ky][kx] */
} bf_window;

#define BF_WINDOW_OF(p, dw)                                                                  \
    { &(p)->input, &(p)->filter, &(p)->output, (p)->stride_h, (p)->stride_w, (p)->dilation_h, \
      (p)->dilation_w, (p)->pad_top, (p)->pad_left, (dw) }

static size_t bf_patch_bytes(const bf_dims4 *input, const bf_dims4 *filter) {
    return (size_t)filter->h * (size_t)filter->w * (size_t)input->c;
}

static bf_sparse_shape bf_conv_shape(const bf_dims4 *input, const bf_dims4 *filter,
                                     const bf_dims4 *output) {
    bf_sparse_shape s;
    s.rows = output->c;
    s.row_length = filter->h * filter->w * filter->c;
    s.rows_per_segment = output->c / (input->c / filter->c);
    return s;
}

static bf_sparse_shape bf_dw_shape(const bf_dims4 *filter, const bf_dims4 *output,
                                   int32_t depth_multiplier) {
    bf_sparse_shape s;
    s.rows = output->c;
    s.row_length = filter->h * filter->w;
    s.rows_per_segment = depth_multiplier;
    return s;
}

/* Gather the input window of output pixel (b, oy, ox); taps outside the input get the input
 * zero point (-input_offset), which contributes 0 to every product. */
static void bf_gather_patch(const bf_window *w, int32_t input_offset, const int8_t *input,
                            int32_t b, int32_t oy, int32_t ox, int8_t *patch) {
    const int32_t in_h = w->input->h, in_w = w->input->w, in_c = w->input->c;
    const int32_t f_h = w->filter->h, f_w = w->filter->w;
    const int32_t taps = f_h * f_w;
    const int32_t cg = w->depthwise ? 1 : w->filter->c;
    const int32_t groups = in_c / cg;
    const int8_t zero = (int8_t)(-input_offset);
    int32_t ky, kx, g, c;
    for (ky = 0; ky < f_h; ++ky) {
        const int32_t y = oy * w->stride_h - w->pad_top + ky * w->dilation_h;
        for (kx = 0; kx < f_w; ++kx) {
            const int32_t x = ox * w->stride_w - w->pad_left + kx * w->dilation_w;
            const int32_t tap = ky * f_w + kx;
            const int inside = y >= 0 && y < in_h && x >= 0 && x < in_w;
            const int8_t *src = inside ? input + (((int64_t)b * in_h + y) * in_w + x) * in_c : NULL;
            for (g = 0; g < groups; ++g) {
                for (c = 0; c < cg; ++c) {
                    const int8_t v = inside ? src[g * cg + c] : zero;
                    if (w->depthwise) {
                        patch[(int64_t)g * taps + tap] = v;
                    } else {
                        patch[((int64_t)g * taps + tap) * cg + c] = v;
                    }
                }
            }
        }
    }
}

static void bf_conv_sparse_run(const bf_window *w, const bf_sparse_layout *L,
                               const bf_sparse_shape *S, const bf_sparse_requant *q,
                               const uint8_t *stream, int32_t r0, int32_t r1,
                               const int8_t *input, int8_t *output, int8_t *patch) {
    const int32_t out_h = w->output->h, out_w = w->output->w, out_c = w->output->c;
    int32_t b, oy, ox;
    for (b = 0; b < w->output->n; ++b) {
        for (oy = 0; oy < out_h; ++oy) {
            for (ox = 0; ox < out_w; ++ox) {
                int8_t *out = output + (((int64_t)b * out_h + oy) * out_w + ox) * out_c;
                bf_gather_patch(w, q->input_offset, input, b, oy, ox, patch);
                bf_sparse_rows(L, S, q, stream, r0, r1, patch, out);
            }
        }
    }
}

/* Layer mode: decode block after block into scratch, each block run over every pixel. */
static void bf_conv_sparse_huff_run(const bf_window *w, const bf_sparse_layout *L,
                                    const bf_sparse_shape *S, const bf_sparse_huffman *h,
                                    const bf_sparse_requant *q, const int8_t *input,
                                    int8_t *output, uint8_t *scratch) {
    uint8_t *tables = scratch;
    uint8_t *block = tables + bf_huffman_tables_bytes(L, 1);
    int8_t *patch = (int8_t *)(block + h->block_bytes);
    bf_huffreader in;
    int32_t r0;
    bf_huffman_tables_init(L, h->code_lengths, tables, 1);
    bf_huffreader_init(&in, h->stream, h->stream_bytes);
    for (r0 = 0; r0 < S->rows; r0 += h->block_rows) {
        const int32_t r1 = bf_min_i32(r0 + h->block_rows, S->rows);
        bf_huffman_decode_rows(L, tables, 1, &in, r1 - r0, block, h->block_bytes);
        bf_conv_sparse_run(w, L, S, q, block, r0, r1, input, output, patch);
    }
}

static void bf_conv_sparse_hboot_run(const bf_window *w, const bf_sparse_layout *L,
                                     const bf_sparse_shape *S, const bf_sparse_huffman *h,
                                     const bf_sparse_requant *q, const int8_t *input,
                                     int8_t *output, uint8_t *scratch) {
    const uint8_t *table = bf_hboot_table(L, h, S->rows, scratch);
    int8_t *patch = (int8_t *)(scratch + bf_hboot_scratch(L, h));
    bf_conv_sparse_run(w, L, S, q, table, 0, S->rows, input, output, patch);
}

size_t bf_conv2d_sparse_s8_scratch_bytes(const bf_conv2d_sparse_s8_params *p) {
    return bf_patch_bytes(&p->input, &p->filter);
}

void bf_conv2d_sparse_s8(const bf_conv2d_sparse_s8_params *p, const int8_t *input,
                         int8_t *output, void *scratch) {
    const bf_window w = BF_WINDOW_OF(p, 0);
    const bf_sparse_shape S = bf_conv_shape(&p->input, &p->filter, &p->output);
    const bf_sparse_requant q = BF_REQUANT_OF(p);
    bf_conv_sparse_run(&w, &p->layout, &S, &q, p->stream, 0, S.rows, input, output,
                       (int8_t *)scratch);
}

size_t bf_conv2d_sparse_huff_s8_scratch_bytes(const bf_conv2d_sparse_huff_s8_params *p) {
    return bf_huff_scratch(&p->layout, &p->huffman) + bf_patch_bytes(&p->input, &p->filter);
}

void bf_conv2d_sparse_huff_s8(const bf_conv2d_sparse_huff_s8_params *p, const int8_t *input,
                              int8_t *output, void *scratch) {
    const bf_window w = BF_WINDOW_OF(p, 0);
    const bf_sparse_shape S = bf_conv_shape(&p->input, &p->filter, &p->output);
    const bf_sparse_requant q = BF_REQUANT_OF(p);
    bf_conv_sparse_huff_run(&w, &p->layout, &S, &p->huffman, &q, input, output, (uint8_t *)scratch);
}

size_t bf_conv2d_sparse_hboot_s8_scratch_bytes(const bf_conv2d_sparse_hboot_s8_params *p) {
    return bf_hboot_scratch(&p->layout, &p->huffman) + bf_patch_bytes(&p->input, &p->filter);
}

void bf_conv2d_sparse_hboot_s8(const bf_conv2d_sparse_hboot_s8_params *p, const int8_t *input,
                               int8_t *output, void *scratch) {
    const bf_window w = BF_WINDOW_OF(p, 0);
    const bf_sparse_shape S = bf_conv_shape(&p->input, &p->filter, &p->output);
    const bf_sparse_requant q = BF_REQUANT_OF(p);
    bf_conv_sparse_hboot_run(&w, &p->layout, &S, &p->huffman, &q, input, output, (uint8_t *)scratch);
}

size_t bf_depthwise_conv2d_sparse_s8_scratch_bytes(const bf_depthwise_conv2d_sparse_s8_params *p) {
    return bf_patch_bytes(&p->input, &p->filter);
}

void bf_depthwise_conv2d_sparse_s8(const bf_depthwise_conv2d_sparse_s8_params *p,
                                   const int8_t *input, int8_t *output, void *scratch) {
    const bf_window w = BF_WINDOW_OF(p, 1);
    const bf_sparse_shape S = bf_dw_shape(&p->filter, &p->output, p->depth_multiplier);
    const bf_sparse_requant q = BF_REQUANT_OF(p);
    bf_conv_sparse_run(&w, &p->layout, &S, &q, p->stream, 0, S.rows, input, output,
                       (int8_t *)scratch);
}

size_t bf_depthwise_conv2d_sparse_huff_s8_scratch_bytes(
    const bf_depthwise_conv2d_sparse_huff_s8_params *p) {
    return bf_huff_scratch(&p->layout, &p->huffman) + bf_patch_bytes(&p->input, &p->filter);
}

void bf_depthwise_conv2d_sparse_huff_s8(const bf_depthwise_conv2d_sparse_huff_s8_params *p,
                                        const int8_t *input, int8_t *output, void *scratch) {
    const bf_window w = BF_WINDOW_OF(p, 1);
    const bf_sparse_shape S = bf_dw_shape(&p->filter, &p->output, p->depth_multiplier);
    const bf_sparse_requant q = BF_REQUANT_OF(p);
    bf_conv_sparse_huff_run(&w, &p->layout, &S, &p->huffman, &q, input, output, (uint8_t *)scratch);
}

size_t bf_depthwise_conv2d_sparse_hboot_s8_scratch_bytes(
    const bf_depthwise_conv2d_sparse_hboot_s8_params *p) {
    return bf_hboot_scratch(&p->layout, &p->huffman) + bf_patch_bytes(&p->input, &p->filter);
}

void bf_depthwise_conv2d_sparse_hboot_s8(const bf_depthwise_conv2d_sparse_hboot_s8_params *p,
                                         const int8_t *input, int8_t *output, void *scratch) {
    const bf_window w = BF_WINDOW_OF(p, 1);
    const bf_sparse_shape S = bf_dw_shape(&p->filter, &p->output, p->depth_multiplier);
    const bf_sparse_requant q = BF_REQUANT_OF(p);
    bf_conv_sparse_hboot_run(&w, &p->layout, &S, &p->huffman, &q, input, output, (uint8_t *)scratch);
}

/* ---------------------------------------------------------------------------------------- */
/* N:M semi-structured kernels                                                               */

typedef struct {
    int32_t n, m, index_bits;
    const int8_t *values;
    const uint8_t *indices;
} bf_nm_table;

#define BF_NM_OF(p) {(p)->n, (p)->m, (p)->index_bits, (p)->values, (p)->indices}

/* Every row over x (row r reads x + (r / rows_per_segment) * row_length) into out[r]. */
static void bf_nm_rows(const bf_nm_table *t, const bf_sparse_shape *S, const bf_sparse_requant *q,
                       const int8_t *x, int8_t *out) {
    const int32_t groups = (S->row_length + t->m - 1) / t->m;
    const int32_t in_off = q->input_offset;
    const int8_t *v = t->values;
    bf_bitreader br;
    int32_t r, g, j;
    bf_bitreader_init(&br, t->indices);
    for (r = 0; r < S->rows; ++r) {
        const int8_t *xg = x + (int64_t)(r / S->rows_per_segment) * S->row_length;
        int32_t acc = 0;
        for (g = 0; g < groups; ++g, xg += t->m) {
            for (j = 0; j < t->n; ++j) {
                const int32_t idx = (int32_t)bf_bitreader_get(&br, t->index_bits);
                acc += (int32_t)(*v++) * ((int32_t)xg[idx] + in_off);
            }
        }
        out[r] = bf_sparse_out(q, r, acc);
    }
}

void bf_fully_connected_nm_s8(const bf_fully_connected_nm_s8_params *p, const int8_t *input,
                              int8_t *output) {
    const bf_sparse_shape S = {p->units, p->depth, p->units};
    const bf_sparse_requant q = BF_REQUANT_OF(p);
    const bf_nm_table t = BF_NM_OF(p);
    int32_t b;
    for (b = 0; b < p->batches; ++b) {
        bf_nm_rows(&t, &S, &q, input + (int64_t)b * p->depth, output + (int64_t)b * p->units);
    }
}

static void bf_conv_nm_run(const bf_window *w, const bf_nm_table *t, const bf_sparse_shape *S,
                           const bf_sparse_requant *q, const int8_t *input, int8_t *output,
                           int8_t *patch) {
    const int32_t out_h = w->output->h, out_w = w->output->w, out_c = w->output->c;
    int32_t b, oy, ox;
    for (b = 0; b < w->output->n; ++b) {
        for (oy = 0; oy < out_h; ++oy) {
            for (ox = 0; ox < out_w; ++ox) {
                int8_t *out = output + (((int64_t)b * out_h + oy) * out_w + ox) * out_c;
                bf_gather_patch(w, q->input_offset, input, b, oy, ox, patch);
                bf_nm_rows(t, S, q, patch, out);
            }
        }
    }
}

size_t bf_conv2d_nm_s8_scratch_bytes(const bf_conv2d_nm_s8_params *p) {
    return bf_patch_bytes(&p->input, &p->filter);
}

void bf_conv2d_nm_s8(const bf_conv2d_nm_s8_params *p, const int8_t *input, int8_t *output,
                     void *scratch) {
    const bf_window w = BF_WINDOW_OF(p, 0);
    const bf_sparse_shape S = bf_conv_shape(&p->input, &p->filter, &p->output);
    const bf_sparse_requant q = BF_REQUANT_OF(p);
    const bf_nm_table t = BF_NM_OF(p);
    bf_conv_nm_run(&w, &t, &S, &q, input, output, (int8_t *)scratch);
}

size_t bf_depthwise_conv2d_nm_s8_scratch_bytes(const bf_depthwise_conv2d_nm_s8_params *p) {
    return bf_patch_bytes(&p->input, &p->filter);
}

void bf_depthwise_conv2d_nm_s8(const bf_depthwise_conv2d_nm_s8_params *p, const int8_t *input,
                               int8_t *output, void *scratch) {
    const bf_window w = BF_WINDOW_OF(p, 1);
    const bf_sparse_shape S = bf_dw_shape(&p->filter, &p->output, p->depth_multiplier);
    const bf_sparse_requant q = BF_REQUANT_OF(p);
    const bf_nm_table t = BF_NM_OF(p);
    bf_conv_nm_run(&w, &t, &S, &q, input, output, (int8_t *)scratch);
}
