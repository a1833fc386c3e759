/*
 * Canonical Huffman decoding of sparse tables (toolkit/compress/huffman.py is the encoder).
 *
 * Codes are canonical (DEFLATE's assignment), at most 15 bits, written MSB first into the
 * LSB-first stream.  A symbol is decoded either
 *  - by table: the next BF_HUFF_LUT_BITS stream bits index a lookup table holding, for every
 *    code of at most that many bits, its symbol and length (zlib inflate's first-level table);
 *  - or bit by bit with zlib puff's count-per-length method (codes longer than the table, and
 *    whole-table decoding at boot, which keeps its tables small).
 * The tables are built from the packed code lengths at the start of every decode.
 */
#include "bf_sparse.h"

#define BF_HUFF_MAX_BITS 15
#define BF_HUFF_LUT_SIZE (1 << BF_HUFF_LUT_BITS)

static uint32_t bf_nibble(const uint8_t *packed, int32_t i) {
    const uint32_t byte = packed[i >> 1];
    return (i & 1) ? (byte >> 4) : (byte & 15u);
}

/* count[], the sorted symbols and (lut != NULL) the lookup table of one alphabet whose lengths
 * start at nibble `first`. */
static void bf_huffman_alphabet(const uint8_t *lengths, int32_t first, int32_t size, uint16_t *count,
                                uint8_t *symbol, uint16_t *lut) {
    int32_t len, s, n = 0;
    uint32_t code = 0u;
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
    if (lut == NULL) {
        return;
    }
    for (s = 0; s < BF_HUFF_LUT_SIZE; ++s) {
        lut[s] = 0;
    }
    /* Canonical codes in (length, symbol) order = the order of symbol[]. */
    n = 0;
    for (len = 1; len <= BF_HUFF_MAX_BITS; ++len) {
        int32_t i;
        for (i = 0; i < (int32_t)count[len]; ++i, ++n, ++code) {
            if (len <= BF_HUFF_LUT_BITS) {
                /* The stream holds the code MSB first: the table index is the code reversed. */
                uint32_t rev = 0u;
                int32_t b, fill;
                for (b = 0; b < len; ++b) {
                    rev |= ((code >> b) & 1u) << (len - 1 - b);
                }
                for (fill = 0; fill < (1 << (BF_HUFF_LUT_BITS - len)); ++fill) {
                    lut[rev | ((uint32_t)fill << len)] = (uint16_t)((len << 8) | symbol[n]);
                }
            }
        }
        code <<= 1;
    }
}

/* Offsets in the tables: count[16] × 2, then (with_lut) lut[LUT_SIZE] × 2, then the symbols. */
#define BF_HUFF_SYMBOLS(with_lut) (64 + ((with_lut) ? 4 * BF_HUFF_LUT_SIZE : 0))

void bf_huffman_tables_init(const bf_sparse_layout *layout, const uint8_t *code_lengths,
                            uint8_t *tables, int with_lut) {
    const int32_t gaps = (int32_t)1 << layout->index_bits;
    const int32_t values = (int32_t)1 << layout->value_bits;
    uint16_t *count = (uint16_t *)(void *)tables;
    uint16_t *lut = with_lut ? count + 32 : NULL;
    uint8_t *symbols = tables + BF_HUFF_SYMBOLS(with_lut);
    bf_huffman_alphabet(code_lengths, 0, gaps, count, symbols, lut);
    bf_huffman_alphabet(code_lengths, gaps, values, count + 16, symbols + gaps,
                        with_lut ? lut + BF_HUFF_LUT_SIZE : NULL);
}

/* At least `n` (<= 24) bits in the buffer; past the end of the stream, zeros. */
static void bf_huff_fill(bf_huffreader *in, int32_t n) {
    while (in->count < n) {
        const uint32_t byte = in->next < in->end ? *in->next++ : 0u;
        in->bits |= byte << in->count;
        in->count += 8;
    }
}

static uint32_t bf_huff_take(bf_huffreader *in, int32_t n) {
    uint32_t v;
    bf_huff_fill(in, n);
    v = in->bits & ((1u << n) - 1u);
    in->bits >>= n;
    in->count -= n;
    return v;
}

/* One symbol, bit by bit (puff.c's decode()); -1 for a bit pattern that is no code. */
static int32_t bf_huffman_symbol(bf_huffreader *in, const uint16_t *count, const uint8_t *symbol) {
    int32_t code = 0, first = 0, index = 0, len;
    for (len = 1; len <= BF_HUFF_MAX_BITS; ++len) {
        const int32_t n = (int32_t)count[len];
        code |= (int32_t)bf_huff_take(in, 1);
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

/* The reader's state in locals (registers) for the hot loop; synced to a bf_huffreader around
 * the rare bit-by-bit decodes. */
#define BF_HUFF_LOAD(st) (next = (st).next, bits = (st).bits, avail = (st).count)
#define BF_HUFF_STORE(st) ((st).next = next, (st).bits = bits, (st).count = avail)
#define BF_HUFF_FILL(n)                                                                      \
    while (avail < (n)) {                                                                    \
        bits |= (uint32_t)(next < end ? *next++ : 0u) << avail;                              \
        avail += 8;                                                                          \
    }

/* One symbol: a table lookup when its code is short enough (the common case), else bit by
 * bit. */
#define BF_HUFF_SYMBOL(sym, cnt, syms, table)                                                \
    do {                                                                                     \
        uint32_t e_;                                                                         \
        BF_HUFF_FILL(BF_HUFF_LUT_BITS)                                                       \
        e_ = (table)[bits & (BF_HUFF_LUT_SIZE - 1u)];                                        \
        if (e_ != 0u) {                                                                      \
            bits >>= e_ >> 8;                                                                \
            avail -= (int32_t)(e_ >> 8);                                                     \
            (sym) = (int32_t)(e_ & 0xFFu);                                                   \
        } else {                                                                             \
            BF_HUFF_STORE(*in);                                                              \
            (sym) = bf_huffman_symbol(in, (cnt), (syms));                                    \
            BF_HUFF_LOAD(*in);                                                               \
        }                                                                                    \
    } while (0)

/* Per-block decoding with the lookup tables. */
static void bf_huffman_decode_fast(const bf_sparse_layout *layout, const uint8_t *tables,
                                   bf_huffreader *in, int32_t rows, uint8_t *out,
                                   int32_t out_bytes) {
    const int32_t k = layout->index_bits;
    const int32_t width = k + layout->value_bits;
    const int32_t cbits = layout->count_bits;
    const uint16_t *count = (const uint16_t *)(const void *)tables;
    const uint16_t *glut = count + 32;
    const uint16_t *vlut = glut + BF_HUFF_LUT_SIZE;
    const uint8_t *gsym = tables + BF_HUFF_SYMBOLS(1);
    const uint8_t *vsym = gsym + ((int32_t)1 << k);
    const uint8_t *end = in->end;
    uint8_t *o = out;
    uint8_t *const o_end = out + out_bytes;
    uint32_t obits = 0u;
    int32_t ocount = 0;
    const uint8_t *next;
    uint32_t bits;
    int32_t avail;
    int32_t row;
    BF_HUFF_LOAD(*in);
    for (row = 0; row < rows; ++row) {
        uint32_t n, e;
        BF_HUFF_FILL(cbits)
        n = bits & ((1u << cbits) - 1u);
        bits >>= cbits;
        avail -= cbits;
        obits |= n << ocount;
        ocount += cbits;
        for (e = 0;; ++e) {
            int32_t gap, code;
            while (ocount >= 8) {
                if (o < o_end) {
                    *o++ = (uint8_t)obits;
                }
                obits >>= 8;
                ocount -= 8;
            }
            if (e == n) {
                break;
            }
            BF_HUFF_SYMBOL(gap, count, gsym, glut);
            BF_HUFF_SYMBOL(code, count + 16, vsym, vlut);
            obits |= ((uint32_t)(gap < 0 ? 0 : gap) | ((uint32_t)(code < 0 ? 0 : code) << k)) << ocount;
            ocount += width;
        }
    }
    if (ocount > 0 && o < o_end) {
        *o = (uint8_t)obits;
    }
    BF_HUFF_STORE(*in);
}

void bf_huffman_decode_rows(const bf_sparse_layout *layout, const uint8_t *tables, int with_lut,
                            bf_huffreader *in, int32_t rows, uint8_t *out, int32_t out_bytes) {
    const int32_t k = layout->index_bits;
    const int32_t gaps = (int32_t)1 << k;
    const uint16_t *count = (const uint16_t *)(const void *)tables;
    const uint8_t *symbols = tables + BF_HUFF_SYMBOLS(0);
    bf_bitwriter w;
    int32_t row;
    if (with_lut) {
        bf_huffman_decode_fast(layout, tables, in, rows, out, out_bytes);
        return;
    }
    w.next = out;
    w.end = out + out_bytes;
    w.bits = 0u;
    w.count = 0;
    for (row = 0; row < rows; ++row) {
        const uint32_t n = bf_huff_take(in, layout->count_bits);
        uint32_t e;
        bf_bitwriter_put(&w, n, layout->count_bits);
        for (e = 0; e < n; ++e) {
            const int32_t gap = bf_huffman_symbol(in, count, symbols);
            const int32_t code = bf_huffman_symbol(in, count + 16, symbols + gaps);
            bf_bitwriter_put(&w, (uint32_t)(gap < 0 ? 0 : gap) | ((uint32_t)(code < 0 ? 0 : code) << k),
                             k + layout->value_bits);
        }
    }
    if (w.count > 0 && w.next < w.end) {
        *w.next++ = (uint8_t)w.bits;
    }
}

size_t bf_sparse_huffman_decode_scratch_bytes(const bf_sparse_layout *layout) {
    return bf_huffman_tables_bytes(layout, 0);
}

void bf_sparse_huffman_decode(const bf_sparse_layout *layout, const bf_sparse_huffman *huffman,
                              int32_t rows, uint8_t *table, void *scratch) {
    bf_huffreader in;
    bf_huffman_tables_init(layout, huffman->code_lengths, (uint8_t *)scratch, 0);
    bf_huffreader_init(&in, huffman->stream, huffman->stream_bytes);
    bf_huffman_decode_rows(layout, (const uint8_t *)scratch, 0, &in, rows, table,
                           huffman->table_bytes);
}
