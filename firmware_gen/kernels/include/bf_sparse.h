/*
 * bf_sparse.h — sparse-table kernels (Deep Compression's packed sparse format, optionally
 * Huffman-coded) and N:M semi-structured sparse kernels.  Included at the end of bf_kernels.h;
 * the general contract written there applies (requantization, offsets, layouts, scratch).
 *
 * The packed sparse table (toolkit/compress/sparse_format.py documents it byte for byte):
 * `rows` rows of `row_length` positions — FULLY_CONNECTED: weights[unit][depth];
 * CONV_2D: output channel o, positions (ky, kx, ci) of its KH*KW*C_in/groups weights (OHWI);
 * DEPTHWISE_CONV_2D: channel o, positions (ky, kx).  The stream is LSB-first bits; per row a
 * `count_bits`-bit entry count, then `count` entries of (index_bits + value_bits) bits each: the
 * gap (zeros skipped since the previous entry, the first counting from the row start) in the low
 * index_bits, the value code above it.  value = codebook[code] (int8), or, when codebook is
 * NULL, the code itself as an int8 (two's complement; value_bits == 8).  Filler entries carry a
 * code whose value is 0.
 *
 * Arithmetic: acc = bias[r] * 2^bias_shift + sum over entries of value * (x[position] +
 * input_offset) in int32 (int8 values, as the dense int8 kernels);
 * out = clamp(MultiplyByQuantizedMultiplier(acc, multiplier[c], shift[c]) + output_offset,
 * act_min, act_max) with c = r if per_channel else 0 — TFLite Micro's fixed-point
 * requantization (no double), the same as toolkit/compress/sparse_layer.py's numpy forward.
 *
 * Convolutions gather, for every output pixel, the input window into scratch (the "patch", int8,
 * taps outside the input hold the input zero point so that they contribute 0), then run every
 * row over it: CONV_2D group g's rows read patch[g*row_length ...]; DEPTHWISE channel o reads
 * patch[(o / depth_multiplier) * KH*KW ...].
 *
 * Huffman-coded tables (toolkit/compress/huffman.py): `code_lengths` holds 2^k gap then 2^b
 * value code lengths (nibbles, low first), `stream` per row the raw count then per entry the
 * canonical gap code and value code (each written MSB first).  Two ways to run them:
 *  - *_huff_s8 ("layer"): every call decodes `block_rows` rows at a time into scratch and runs
 *    them.  Scratch = decoder tables with lookup tables (576 + 2^k + 2^b bytes) + block_bytes
 *    (+ patch).
 *  - *_hboot_s8 ("boot"): the first call decodes the whole table into the scratch buffer, later
 *    calls reuse it.  **Their scratch is persistent**: a buffer owned by this call alone for the
 *    program's lifetime (not arena-shared), of *_hboot_s8_scratch_bytes() bytes =
 *    8 (tag) + decoder tables without lookup tables (64 + 2^k + 2^b) + table_bytes (+ patch).  The first 4 bytes hold a tag derived
 *    from the params; any other content (e.g. uninitialised RAM) triggers a decode.
 * Streams must be the encoder's: the kernels do not re-validate positions or codes.
 */
#ifndef BF_SPARSE_H
#define BF_SPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "bf_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* BF_CDEF_BEGIN (the same cffi cdef convention as bf_kernels.h) */

typedef struct {
    int32_t index_bits;        /* k, 2 … 8 */
    int32_t value_bits;        /* b, 2 … 8 */
    int32_t count_bits;        /* 1 … 24 */
    const int8_t *codebook;    /* [1 << value_bits], or NULL (raw int8 codes, value_bits == 8) */
} bf_sparse_layout;

typedef struct {
    const uint8_t *code_lengths;  /* ceil((2^k + 2^b) / 2) bytes */
    const uint8_t *stream;
    int32_t stream_bytes;      /* bytes of stream (the decoder never reads past them) */
    int32_t block_rows;        /* rows decoded per block (layer mode), >= 1 */
    int32_t block_bytes;       /* plain bytes of the largest block (layer mode) */
    int32_t table_bytes;       /* plain bytes of the whole table (boot mode) */
} bf_sparse_huffman;

/* Every kernel: per_channel = 1: multiplier/shift hold one entry per output channel; 0: one
 * entry for the layer (a shared codebook has one scale).  bias: one int16 per output channel,
 * worth bias[r] * 2^bias_shift accumulator units (bias_shift 0 … 15). */

/* FULLY_CONNECTED: input [batches][depth] -> output [batches][units]; rows = units,
 * row_length = depth. */
typedef struct {
    int32_t batches, depth, units;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    bf_sparse_layout layout;
    const uint8_t *stream;
    int32_t per_channel;
    int32_t bias_shift;
    const int16_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_fully_connected_sparse_s8_params;

void bf_fully_connected_sparse_s8(const bf_fully_connected_sparse_s8_params *params,
                                  const int8_t *input, int8_t *output);

typedef struct {
    int32_t batches, depth, units;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    bf_sparse_layout layout;
    bf_sparse_huffman huffman;
    int32_t per_channel;
    int32_t bias_shift;
    const int16_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_fully_connected_sparse_huff_s8_params;
typedef bf_fully_connected_sparse_huff_s8_params bf_fully_connected_sparse_hboot_s8_params;

void bf_fully_connected_sparse_huff_s8(const bf_fully_connected_sparse_huff_s8_params *params,
                                       const int8_t *input, int8_t *output, void *scratch);
size_t bf_fully_connected_sparse_huff_s8_scratch_bytes(
    const bf_fully_connected_sparse_huff_s8_params *params);
void bf_fully_connected_sparse_hboot_s8(const bf_fully_connected_sparse_hboot_s8_params *params,
                                        const int8_t *input, int8_t *output, void *scratch);
size_t bf_fully_connected_sparse_hboot_s8_scratch_bytes(
    const bf_fully_connected_sparse_hboot_s8_params *params);

/* CONV_2D: geometry as bf_conv2d_s8_params; rows = C_out, row_length = KH * KW * C_in / groups. */
typedef struct {
    bf_dims4 input;
    bf_dims4 filter;
    bf_dims4 output;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    bf_sparse_layout layout;
    const uint8_t *stream;
    int32_t per_channel;
    int32_t bias_shift;
    const int16_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_conv2d_sparse_s8_params;

void bf_conv2d_sparse_s8(const bf_conv2d_sparse_s8_params *params, const int8_t *input,
                         int8_t *output, void *scratch);
size_t bf_conv2d_sparse_s8_scratch_bytes(const bf_conv2d_sparse_s8_params *params);

typedef struct {
    bf_dims4 input;
    bf_dims4 filter;
    bf_dims4 output;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    bf_sparse_layout layout;
    bf_sparse_huffman huffman;
    int32_t per_channel;
    int32_t bias_shift;
    const int16_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_conv2d_sparse_huff_s8_params;
typedef bf_conv2d_sparse_huff_s8_params bf_conv2d_sparse_hboot_s8_params;

void bf_conv2d_sparse_huff_s8(const bf_conv2d_sparse_huff_s8_params *params, const int8_t *input,
                              int8_t *output, void *scratch);
size_t bf_conv2d_sparse_huff_s8_scratch_bytes(const bf_conv2d_sparse_huff_s8_params *params);
void bf_conv2d_sparse_hboot_s8(const bf_conv2d_sparse_hboot_s8_params *params,
                               const int8_t *input, int8_t *output, void *scratch);
size_t bf_conv2d_sparse_hboot_s8_scratch_bytes(const bf_conv2d_sparse_hboot_s8_params *params);

/* DEPTHWISE_CONV_2D: geometry as bf_depthwise_conv2d_s8_params; rows = C_out,
 * row_length = KH * KW. */
typedef struct {
    bf_dims4 input;
    bf_dims4 filter;
    bf_dims4 output;
    int32_t depth_multiplier;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    bf_sparse_layout layout;
    const uint8_t *stream;
    int32_t per_channel;
    int32_t bias_shift;
    const int16_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_depthwise_conv2d_sparse_s8_params;

void bf_depthwise_conv2d_sparse_s8(const bf_depthwise_conv2d_sparse_s8_params *params,
                                   const int8_t *input, int8_t *output, void *scratch);
size_t bf_depthwise_conv2d_sparse_s8_scratch_bytes(
    const bf_depthwise_conv2d_sparse_s8_params *params);

typedef struct {
    bf_dims4 input;
    bf_dims4 filter;
    bf_dims4 output;
    int32_t depth_multiplier;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    bf_sparse_layout layout;
    bf_sparse_huffman huffman;
    int32_t per_channel;
    int32_t bias_shift;
    const int16_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_depthwise_conv2d_sparse_huff_s8_params;
typedef bf_depthwise_conv2d_sparse_huff_s8_params bf_depthwise_conv2d_sparse_hboot_s8_params;

void bf_depthwise_conv2d_sparse_huff_s8(const bf_depthwise_conv2d_sparse_huff_s8_params *params,
                                        const int8_t *input, int8_t *output, void *scratch);
size_t bf_depthwise_conv2d_sparse_huff_s8_scratch_bytes(
    const bf_depthwise_conv2d_sparse_huff_s8_params *params);
void bf_depthwise_conv2d_sparse_hboot_s8(
    const bf_depthwise_conv2d_sparse_hboot_s8_params *params, const int8_t *input,
    int8_t *output, void *scratch);
size_t bf_depthwise_conv2d_sparse_hboot_s8_scratch_bytes(
    const bf_depthwise_conv2d_sparse_hboot_s8_params *params);

/* N:M semi-structured sparsity (method prune_structured).  Each row (as above) is cut into
 * groups = ceil(row_length / m) groups of m consecutive positions (the last may be shorter);
 * every group keeps exactly n weights: `values` holds rows * groups * n int8 weights, row after
 * row, group after group, and `indices` the position of each inside its group in index_bits
 * bits (LSB-first, the same order).  acc = bias + sum values[e] * (x[g*m + index[e]] +
 * input_offset); requantization as above.  Padding entries of short groups have value 0. */
typedef struct {
    int32_t batches, depth, units;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    int32_t n, m, index_bits;
    const int8_t *values;
    const uint8_t *indices;
    int32_t per_channel;
    int32_t bias_shift;
    const int16_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_fully_connected_nm_s8_params;

void bf_fully_connected_nm_s8(const bf_fully_connected_nm_s8_params *params, const int8_t *input,
                              int8_t *output);

typedef struct {
    bf_dims4 input;
    bf_dims4 filter;
    bf_dims4 output;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    int32_t n, m, index_bits;
    const int8_t *values;
    const uint8_t *indices;
    int32_t per_channel;
    int32_t bias_shift;
    const int16_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_conv2d_nm_s8_params;

void bf_conv2d_nm_s8(const bf_conv2d_nm_s8_params *params, const int8_t *input, int8_t *output,
                     void *scratch);
size_t bf_conv2d_nm_s8_scratch_bytes(const bf_conv2d_nm_s8_params *params);

typedef struct {
    bf_dims4 input;
    bf_dims4 filter;
    bf_dims4 output;
    int32_t depth_multiplier;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    int32_t n, m, index_bits;
    const int8_t *values;
    const uint8_t *indices;
    int32_t per_channel;
    int32_t bias_shift;
    const int16_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_depthwise_conv2d_nm_s8_params;

void bf_depthwise_conv2d_nm_s8(const bf_depthwise_conv2d_nm_s8_params *params,
                               const int8_t *input, int8_t *output, void *scratch);
size_t bf_depthwise_conv2d_nm_s8_scratch_bytes(const bf_depthwise_conv2d_nm_s8_params *params);

/* The whole Huffman-coded table of `rows` rows decoded into its plain stream
 * (huffman.table_bytes bytes at `table`); what the hboot kernels do on their first call.
 * Scratch: 64 + 2^k + 2^b bytes. */
void bf_sparse_huffman_decode(const bf_sparse_layout *layout, const bf_sparse_huffman *huffman,
                              int32_t rows, uint8_t *table, void *scratch);
size_t bf_sparse_huffman_decode_scratch_bytes(const bf_sparse_layout *layout);

/* BF_CDEF_END */

/* Library-internal helpers shared by ref/sparse.c and ref/huffman.c (not kernels). */

/* An LSB-first bit reader that refills one byte at a time (never reads a byte it does not
 * need, so it never runs past the end of a stream). */
typedef struct {
    const uint8_t *next;
    uint32_t bits;
    int32_t count;
} bf_bitreader;

static inline void bf_bitreader_init(bf_bitreader *r, const uint8_t *data) {
    r->next = data;
    r->bits = 0u;
    r->count = 0;
}

/* The next `width` bits (1 … 24) as an LSB-first field. */
static inline uint32_t bf_bitreader_get(bf_bitreader *r, int32_t width) {
    uint32_t v;
    while (r->count < width) {
        r->bits |= (uint32_t)(*r->next++) << r->count;
        r->count += 8;
    }
    v = r->bits & ((1u << width) - 1u);
    r->bits >>= width;
    r->count -= width;
    return v;
}

/* The Huffman input: an LSB-first reader that knows where the stream ends.  Bytes past the end
 * read as zeros: a valid stream never consumes them, the table decoder only peeks at them. */
typedef struct {
    const uint8_t *next;
    const uint8_t *end;
    uint32_t bits;
    int32_t count;
} bf_huffreader;

static inline void bf_huffreader_init(bf_huffreader *r, const uint8_t *data, int32_t bytes) {
    r->next = data;
    r->end = data + bytes;
    r->bits = 0u;
    r->count = 0;
}

/* Decoder tables: uint16_t count[16] per alphabet (count[0] unused); with a lookup table, two
 * uint16_t lut[1 << BF_HUFF_LUT_BITS] (entry = length << 8 | symbol for every code of at most
 * BF_HUFF_LUT_BITS bits, indexed by the next stream bits; 0: longer code, decoded bit by bit);
 * then the used symbols sorted by (length, symbol) as uint8_t, gap alphabet first.  Per-block
 * decoding (the layer kernels) uses the lookup tables; whole-table decoding (boot) does
 * without. */
#define BF_HUFF_LUT_BITS 7
static inline size_t bf_huffman_tables_bytes(const bf_sparse_layout *layout, int with_lut) {
    return (size_t)64 + (with_lut ? (size_t)4 << BF_HUFF_LUT_BITS : 0u) +
           ((size_t)1 << layout->index_bits) + ((size_t)1 << layout->value_bits);
}

/* Build the decoder tables (8-byte aligned `tables`) from the packed code lengths. */
void bf_huffman_tables_init(const bf_sparse_layout *layout, const uint8_t *code_lengths,
                            uint8_t *tables, int with_lut);

/* Decode the next `rows` rows from `in` into a plain stream at `out` (at most out_bytes bytes,
 * zero-padded to a byte). */
void bf_huffman_decode_rows(const bf_sparse_layout *layout, const uint8_t *tables, int with_lut,
                            bf_huffreader *in, int32_t rows, uint8_t *out, int32_t out_bytes);

/* The requantization of a sparse kernel, gathered from its params. */
typedef struct {
    int32_t input_offset, output_offset;
    int32_t act_min, act_max;
    int32_t per_channel;
    int32_t bias_shift;
    const int16_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
} bf_sparse_requant;

#ifdef __cplusplus
}
#endif

#endif /* BF_SPARSE_H */
