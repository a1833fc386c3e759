/*
 * Canonical Huffman decoding of sparse tables (toolkit/compress/huffman.py is the encoder).
 *
 * Codes are canonical (DEFLATE's assignment) and at most 15 bits; a symbol is decoded one bit at
 * a time with the count-per-length method of zlib's puff.c: the code read so far is compared
 * with the first code of each length.  The tables are count[16] per alphabet and the used
 * symbols sorted by (length, symbol): 64 + 2^k + 2^b bytes, built from the packed lengths at
 * the start of every decode (a few hundred operations).
 */
#include "bf_sparse.h"

#define BF_HUFF_MAX_BITS 15

static uint32_t bf_nibble(const uint8_t *packed, int32_t i) {
    const uint32_t byte = packed[i >> 1];
    return (i & 1) ? (byte >> 4) : (byte & 15u);
}

/* count[] and the sorted symbols of one alphabet whose lengths start at nibble `first`. */
static void bf_huffman_alphabet(const uint8_t *lengths, int32_t first, int32_t size, uint16_t *count,
                                uint8_t *symbol) {
    int32_t len, s, n = 0;
    for (len = 0; len <= BF_HUFF_MAX_BITS; ++len) {
        count[len] = 0;
    }
    for (s = 0; s < size; ++s) {
        count[bf_nibble(lengths, first + s)]++;
    }
    count[0] = 0;
    for (len = 1; len <= BF_HUFF_MAX_BITS; ++len) {
        for (s = 0; s < size; ++s) {
            if ((int32_t)bf_nibble(lengths, first + s) == len) {
                symbol[n++] = (uint8_t)s;
            }
        }
    }
}

void bf_huffman_tables_init(const bf_sparse_layout *layout, const uint8_t *code_lengths,
                            uint8_t *tables) {
    const int32_t gaps = (int32_t)1 << layout->index_bits;
    const int32_t values = (int32_t)1 << layout->value_bits;
    uint16_t *count = (uint16_t *)(void *)tables;
    uint8_t *symbols = tables + 64;
    bf_huffman_alphabet(code_lengths, 0, gaps, count, symbols);
    bf_huffman_alphabet(code_lengths, gaps, values, count + 16, symbols + gaps);
}

/* One symbol (puff.c's decode()); -1 for a bit pattern that is no code. */
static int32_t bf_huffman_symbol(bf_bitreader *in, const uint16_t *count, const uint8_t *symbol) {
    int32_t code = 0, first = 0, index = 0, len;
    for (len = 1; len <= BF_HUFF_MAX_BITS; ++len) {
        const int32_t n = (int32_t)count[len];
        code |= (int32_t)bf_bitreader_get(in, 1);
        if (code - first < n) {
            return symbol[index + (code - first)];
        }
        index += n;
        first = (first + n) << 1;
        code <<= 1;
    }
    return -1;
}

typedef struct {
    uint8_t *next;
    uint8_t *end;
    uint32_t bits;
    int32_t count;
} bf_bitwriter;

/* Append `width` (<= 24) bits LSB-first; bytes past `end` are dropped (never written). */
static void bf_bitwriter_put(bf_bitwriter *w, uint32_t value, int32_t width) {
    w->bits |= value << w->count;
    w->count += width;
    while (w->count >= 8) {
        if (w->next < w->end) {
            *w->next++ = (uint8_t)w->bits;
        }
        w->bits >>= 8;
        w->count -= 8;
    }
}

void bf_huffman_decode_rows(const bf_sparse_layout *layout, const uint8_t *tables,
                            bf_bitreader *in, int32_t rows, uint8_t *out, int32_t out_bytes) {
    const int32_t k = layout->index_bits;
    const int32_t gaps = (int32_t)1 << k;
    const uint16_t *count = (const uint16_t *)(const void *)tables;
    const uint8_t *symbols = tables + 64;
    bf_bitwriter w;
    int32_t r;
    w.next = out;
    w.end = out + out_bytes;
    w.bits = 0u;
    w.count = 0;
    for (r = 0; r < rows; ++r) {
        const uint32_t n = bf_bitreader_get(in, layout->count_bits);
        uint32_t e;
        bf_bitwriter_put(&w, n, layout->count_bits);
        for (e = 0; e < n; ++e) {
            const int32_t gap = bf_huffman_symbol(in, count, symbols);
            const int32_t code = bf_huffman_symbol(in, count + 16, symbols + gaps);
            const uint32_t field = (uint32_t)(gap < 0 ? 0 : gap) | ((uint32_t)(code < 0 ? 0 : code) << k);
            bf_bitwriter_put(&w, field, k + layout->value_bits);
        }
    }
    if (w.count > 0 && w.next < w.end) {
        *w.next++ = (uint8_t)w.bits;
    }
}

size_t bf_sparse_huffman_decode_scratch_bytes(const bf_sparse_layout *layout) {
    return bf_huffman_tables_bytes(layout);
}

void bf_sparse_huffman_decode(const bf_sparse_layout *layout, const bf_sparse_huffman *huffman,
                              int32_t rows, uint8_t *table, void *scratch) {
    bf_bitreader in;
    bf_huffman_tables_init(layout, huffman->code_lengths, (uint8_t *)scratch);
    bf_bitreader_init(&in, huffman->stream);
    bf_huffman_decode_rows(layout, (const uint8_t *)scratch, &in, rows, table,
                           huffman->table_bytes);
}
