/*
 * bf_xnor_tiled.h — the XNOR-popcount convolution / fully-connected driver every optimized
 * variant shares (bf_conv2d_xnor_s8, bf_fully_connected_xnor_s8 of bf_binary.h).  Private.
 *
 * Include it after ref/binary.c (it uses ref's geometry/tables types and requantization) and
 * after defining the ISA hooks:
 *
 *   BF_XT_TILE_WORDS   capacity of the stack tile in uint32 words (a compile-time constant);
 *   BF_XT_ROW_ALIGN    tile rows are padded with zero words to a multiple of this;
 *   bf_xt_dot(w, L, rows, stride, nrows, xors, ones)
 *                      *ones = sum_{i<L} popcount(w[i]);
 *                      xors[r] = sum_{i<L} popcount(w[i] ^ rows[r * stride + i]), r < nrows.
 *                      May read rows[r * stride + i] for i < stride (zero padding), never w[i]
 *                      for i >= L (weights end where the array ends).
 *   bf_xt_ge_mask(x, n, t)
 *                      bit i (i < n <= 32) set when x[i] >= t; bits >= n clear.
 *   bf_xt_pop32(x)     popcount of one word.
 * and optionally (BF_XT_HAVE_REQUANT_LANES)
 *   bf_xt_requant_lanes(t, o, acc, np, out)
 *                      out[q][o] = bf_bin_requantize(t, o, acc[q]) for q < np (all positions of
 *                      a tile share channel o's multiplier and shift: one vector per 8 lanes).
 *
 * Algorithm.  The reference kernel walks taps per output channel and pixel and recounts
 * popcount(w) for every pixel.  Here a tile of P output positions is im2col'ed into the stack
 * tile: per position and activation plane j, the packed activation words of every tap in
 * weight order (taps * words = L words, the exact layout of one weight plane), taps in the
 * padding filled with zero words.  Then each weight plane (o, k) is streamed once per tile:
 *     ones      = popcount over all L words of w            (once per tile, not per pixel)
 *     xors[p,j] = popcount(w ^ row[p,j])                     (contiguous, SIMD-friendly)
 * A zero activation word makes popcount(w ^ 0) = popcount(w), so for a position with padded
 * taps the reference's valid-tap sums are
 *     ones_valid = ones - pad,   xors_valid[j] = xors[p,j] - pad,
 *     pad = popcount of w over the padded taps (border positions only)
 * and the accumulation is then term for term the reference's (bf_binary.h): exact int32.
 * A layer whose rows do not fit the tile runs the reference kernel (bf_ref_*).
 */
#ifndef BF_XNOR_TILED_H
#define BF_XNOR_TILED_H

#include <stdint.h>
#include <string.h>

#ifndef BF_XT_MAX_POS
#define BF_XT_MAX_POS 16
#endif

#if defined(__GNUC__)
#define BF_XT_ALIGNED __attribute__((aligned(64)))
#else
#define BF_XT_ALIGNED
#endif

/* The part of the tile one output position uses: act_planes rows of `stride` words. */
typedef struct {
    int32_t taps;      /* KH * KW */
    int32_t L;         /* taps * words: words of one weight plane */
    int32_t stride;    /* L rounded up to BF_XT_ROW_ALIGN */
    int32_t A;         /* activation planes */
    int32_t P;         /* positions per tile */
} bf_xt_shape;

static int bf_xt_shape_for(const bf_bin_geom *g, int32_t act_planes, bf_xt_shape *s) {
    int64_t per_pos;
    s->taps = g->f_h * g->f_w;
    s->L = s->taps * g->words;
    s->stride = (s->L + BF_XT_ROW_ALIGN - 1) / BF_XT_ROW_ALIGN * BF_XT_ROW_ALIGN;
    s->A = act_planes;
    per_pos = (int64_t)s->stride * act_planes;
    if (act_planes < 1 || act_planes > BF_BIN_MAX_ACT_PLANES || per_pos > BF_XT_TILE_WORDS) {
        return 0;
    }
    s->P = (int32_t)(BF_XT_TILE_WORDS / per_pos);
    if (s->P > BF_XT_MAX_POS) {
        s->P = BF_XT_MAX_POS;
    }
    return 1;
}

/* Binarize `channels` int8 values into act_planes planes of `words` words each, plane j at
 * dst + j * plane_stride (the residual tree of bf_binary.h, one 32-channel word at a time). */
static void bf_xt_pack(const int8_t *src, int32_t channels, int32_t words, int32_t act_planes,
                       const int32_t *thr, uint32_t *dst, int32_t plane_stride) {
    int32_t wd;
    for (wd = 0; wd < words; ++wd) {
        const int32_t c0 = 32 * wd;
        const int32_t n = channels - c0 < 32 ? channels - c0 : 32;
        const int8_t *x = src + c0;
        const uint32_t valid = n == 32 ? 0xFFFFFFFFu : (((uint32_t)1u << n) - 1u);
        const uint32_t b0 = bf_xt_ge_mask(x, n, thr[0]);
        dst[wd] = b0;
        if (act_planes >= 2) {
            /* node 1 (a0 = -1) or 2 (a0 = +1) */
            const uint32_t b1 = (b0 & bf_xt_ge_mask(x, n, thr[2])) |
                                (~b0 & bf_xt_ge_mask(x, n, thr[1]) & valid);
            dst[plane_stride + wd] = b1;
            if (act_planes >= 3) {
                /* node 3 + 2 * a0_bit + a1_bit */
                const uint32_t g3 = bf_xt_ge_mask(x, n, thr[3]), g4 = bf_xt_ge_mask(x, n, thr[4]);
                const uint32_t g5 = bf_xt_ge_mask(x, n, thr[5]), g6 = bf_xt_ge_mask(x, n, thr[6]);
                dst[2 * plane_stride + wd] = (b0 & b1 & g6) | (b0 & ~b1 & g5) |
                                             (~b0 & b1 & g4) | (~b0 & ~b1 & g3 & valid);
            }
        }
    }
}

/* popcount of plane words over the taps of position (oy, ox) that lie in the padding. */
static int32_t bf_xt_padded_ones(const bf_bin_geom *g, const uint32_t *plane, int32_t oy,
                                 int32_t ox) {
    int32_t pad = 0, ky, kx, i;
    for (ky = 0; ky < g->f_h; ++ky) {
        const int row_ok = bf_bin_tap_row(g, oy, ky) >= 0;
        for (kx = 0; kx < g->f_w; ++kx) {
            if (row_ok && bf_bin_tap_col(g, ox, kx) >= 0) {
                continue;
            }
            for (i = 0; i < g->words; ++i) {
                pad += bf_xt_pop32(plane[((int64_t)ky * g->f_w + kx) * g->words + i]);
            }
        }
    }
    return pad;
}

/* im2col of one output position into `dst` (A rows of s->stride words); returns its number of
 * valid taps and sets *padmask (bit t: tap t lies in the padding; taps < 64). */
static int32_t bf_xt_gather(const bf_bin_geom *g, const bf_xt_shape *s, const uint32_t *packed,
                            int32_t oy, int32_t ox, uint32_t *dst, uint64_t *padmask) {
    const int32_t words = g->words;
    int32_t valid = 0, ky, kx, j, i;
    uint64_t mask = 0u;
    for (ky = 0; ky < g->f_h; ++ky) {
        const int32_t y = bf_bin_tap_row(g, oy, ky);
        for (kx = 0; kx < g->f_w; ++kx) {
            const int32_t tap = ky * g->f_w + kx;
            const int32_t x = y < 0 ? -1 : bf_bin_tap_col(g, ox, kx);
            const uint32_t *src = x < 0 ? packed : packed + ((int64_t)y * g->in_w + x) * s->A * words;
            if (x >= 0) {
                ++valid;
            } else if (tap < 64) {
                mask |= (uint64_t)1u << tap;
            }
            for (j = 0; j < s->A; ++j) {
                uint32_t *d = dst + (int64_t)j * s->stride + (int64_t)tap * words;
                for (i = 0; i < words; ++i) {
                    d[i] = x < 0 ? 0u : src[(int64_t)j * words + i];
                }
            }
        }
    }
    for (j = 0; j < s->A; ++j) {
        for (i = s->L; i < s->stride; ++i) {
            dst[(int64_t)j * s->stride + i] = 0u;
        }
    }
    *padmask = mask;
    return valid;
}

/* popcount of each tap's words of one weight plane (taps < 64). */
static void bf_xt_tap_ones(const bf_bin_geom *g, const uint32_t *plane, int32_t taps, int32_t *out) {
    int32_t t, i;
    for (t = 0; t < taps; ++t) {
        int32_t n = 0;
        for (i = 0; i < g->words; ++i) {
            n += bf_xt_pop32(plane[(int64_t)t * g->words + i]);
        }
        out[t] = n;
    }
}

/* Counts of np positions of the tile -> outputs.  pos_y/pos_x: the positions (for padding
 * corrections), valid: their valid taps, out[q]: where position q's C_out outputs go. */
static void bf_xt_tile(const bf_bin_geom *g, const bf_bin_tables *t, const bf_xt_shape *s,
                       const uint32_t *tile, int32_t np, const int32_t *pos_y, const int32_t *pos_x,
                       const int32_t *valid, const uint64_t *padmask, int8_t *const *out) {
    const int32_t terms = 1 + s->A;
    int32_t xors[BF_XT_MAX_POS * BF_BIN_MAX_ACT_PLANES];
    int32_t acc[BF_XT_MAX_POS];
    int32_t tap_ones[64];
    int padded = 0;
    int32_t o, k, q, j;
    for (q = 0; q < np; ++q) {
        padded |= valid[q] < s->taps;
    }
    for (o = 0; o < g->out_c; ++o) {
        for (q = 0; q < np; ++q) {
            acc[q] = t->bias[o];
        }
        for (k = 0; k < g->planes; ++k) {
            const uint32_t *plane = t->weights + ((int64_t)o * g->planes + k) * s->L;
            const int16_t *coef = t->coef + ((int64_t)o * g->planes + k) * terms;
            int32_t ones, full, csum = 0;
            const int32_t n_full = g->in_c * s->taps;
            bf_xt_dot(plane, s->L, tile, s->stride, np * s->A, xors, &ones);
            if (padded && s->taps <= 64) {
                bf_xt_tap_ones(g, plane, s->taps, tap_ones);
            }
            for (j = 0; j < s->A; ++j) {
                csum += coef[1 + j];
            }
            /* the terms that do not depend on the activations, for a window without padding */
            full = (int32_t)coef[0] * (2 * ones - n_full) + csum * n_full;
            for (q = 0; q < np; ++q) {
                const int32_t *x = xors + q * s->A;
                int32_t a;
                if (valid[q] == s->taps) {
                    a = acc[q] + full;
                    for (j = 0; j < s->A; ++j) {
                        a -= 2 * (int32_t)coef[1 + j] * x[j];
                    }
                } else {
                    int32_t pad = 0, tp;
                    if (s->taps <= 64) {
                        /* the set bits only, 32 at a time (no 64-bit shifts on 32-bit cores) */
                        uint32_t lo = (uint32_t)padmask[q], hi = (uint32_t)(padmask[q] >> 32);
                        for (tp = 0; lo != 0u; ++tp, lo >>= 1) {
                            pad += (lo & 1u) ? tap_ones[tp] : 0;
                        }
                        for (tp = 32; hi != 0u; ++tp, hi >>= 1) {
                            pad += (hi & 1u) ? tap_ones[tp] : 0;
                        }
                    } else {
                        pad = bf_xt_padded_ones(g, plane, pos_y[q], pos_x[q]);
                    }
                    const int32_t n = g->in_c * valid[q];
                    a = acc[q] + (int32_t)coef[0] * (2 * (ones - pad) - n);
                    for (j = 0; j < s->A; ++j) {
                        a += (int32_t)coef[1 + j] * (n - 2 * (x[j] - pad));
                    }
                }
                acc[q] = a;
            }
        }
#if defined(BF_XT_HAVE_REQUANT_LANES)
        bf_xt_requant_lanes(t, o, acc, np, out);
#else
        for (q = 0; q < np; ++q) {
            out[q][o] = bf_bin_requantize(t, o, acc[q]);
        }
#endif
    }
}

/* Convolution: pack each image into `packed` (the kernel's scratch, ref layout), then tiles of
 * output positions in raster order. */
static void bf_xt_conv(const bf_bin_geom *g, const bf_bin_tables *t, const bf_xt_shape *s,
                       const int32_t *thr, const int8_t *input, int8_t *output, uint32_t *packed) {
    uint32_t tile[BF_XT_TILE_WORDS] BF_XT_ALIGNED;
    int32_t pos_y[BF_XT_MAX_POS], pos_x[BF_XT_MAX_POS], valid[BF_XT_MAX_POS];
    uint64_t padmask[BF_XT_MAX_POS];
    int8_t *out[BF_XT_MAX_POS];
    const int64_t pixels = (int64_t)g->in_h * g->in_w;
    const int32_t total = g->out_h * g->out_w;
    const int32_t per_pix = s->A * g->words;
    int32_t b, p0, q;
    int64_t px;
    for (b = 0; b < g->batches; ++b) {
        const int8_t *image = input + (int64_t)b * pixels * g->in_c;
        for (px = 0; px < pixels; ++px) {
            bf_xt_pack(image + px * g->in_c, g->in_c, g->words, s->A, thr, packed + px * per_pix,
                       g->words);
        }
        for (p0 = 0; p0 < total; p0 += s->P) {
            const int32_t np = total - p0 < s->P ? total - p0 : s->P;
            for (q = 0; q < np; ++q) {
                pos_y[q] = (p0 + q) / g->out_w;
                pos_x[q] = (p0 + q) % g->out_w;
                valid[q] = bf_xt_gather(g, s, packed, pos_y[q], pos_x[q],
                                        tile + (int64_t)q * s->A * s->stride, &padmask[q]);
                out[q] = output + ((int64_t)b * total + p0 + q) * g->out_c;
            }
            bf_xt_tile(g, t, s, tile, np, pos_y, pos_x, valid, padmask, out);
        }
    }
}

/* Fully connected: tiles of batch rows, each row packed straight into the tile (no padding). */
static void bf_xt_fc(const bf_bin_geom *g, const bf_bin_tables *t, const bf_xt_shape *s,
                     const int32_t *thr, const int8_t *input, int8_t *output) {
    uint32_t tile[BF_XT_TILE_WORDS] BF_XT_ALIGNED;
    int32_t pos[BF_XT_MAX_POS], valid[BF_XT_MAX_POS];
    uint64_t padmask[BF_XT_MAX_POS];
    int8_t *out[BF_XT_MAX_POS];
    int32_t b0, q;
    for (b0 = 0; b0 < g->batches; b0 += s->P) {
        const int32_t np = g->batches - b0 < s->P ? g->batches - b0 : s->P;
        for (q = 0; q < np; ++q) {
            uint32_t *row = tile + (int64_t)q * s->A * s->stride;
            memset(row, 0, (size_t)s->A * (size_t)s->stride * sizeof(uint32_t));
            bf_xt_pack(input + (int64_t)(b0 + q) * g->in_c, g->in_c, g->words, s->A, thr, row,
                       s->stride);
            pos[q] = 0;
            valid[q] = 1;
            padmask[q] = 0u;
            out[q] = output + (int64_t)(b0 + q) * g->out_c;
        }
        bf_xt_tile(g, t, s, tile, np, pos, pos, valid, padmask, out);
    }
}

#endif /* BF_XNOR_TILED_H */
