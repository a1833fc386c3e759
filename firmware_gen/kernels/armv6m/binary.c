/*
 * Cortex-M0/M0+ (armv6-m) variant of the XNOR-popcount kernels of bf_binary.h.
 *
 * The shared tiled driver (opt/bf_xnor_tiled.h: popcount(w) once per tile instead of once per
 * output position, contiguous im2col bit rows, padding corrections only at the borders) with
 * the SWAR hooks of opt/bf_xnor_scalar32.h: byte counts of up to 31 words are summed before
 * they are reduced. Without DSP the byte counts are added with shifts and masks.  The im2col tile lives on the stack:
 * 128 words (512 bytes); a layer whose window (taps × words × activation planes) does not fit
 * runs the reference kernel.  BWN kernels (binary weights, int8 activations) are the reference
 * kernels.
 */
#include "bf_binary.h"

#define bf_conv2d_xnor_s8 bf_ref_conv2d_xnor_s8
#define bf_fully_connected_xnor_s8 bf_ref_fully_connected_xnor_s8
#include "../ref/binary.c"
#undef bf_conv2d_xnor_s8
#undef bf_fully_connected_xnor_s8

#define BF_XT_TILE_WORDS 128
#define BF_XT_ROW_ALIGN 1
#include "../opt/bf_xnor_scalar32.h"
#include "../opt/bf_xnor_tiled.h"

void bf_conv2d_xnor_s8(const bf_conv2d_xnor_s8_params *p, const int8_t *input, int8_t *output,
                       void *scratch) {
    const bf_bin_geom g = bf_bin_conv_geom(&p->input, &p->filter, &p->output, p->stride_h,
                                           p->stride_w, p->dilation_h, p->dilation_w, p->pad_top,
                                           p->pad_left, p->words, p->planes);
    const bf_bin_tables t = {p->weights, p->coef, p->bias, p->multiplier, p->shift,
                             p->output_offset, p->act_min, p->act_max};
    bf_xt_shape s;
    if (!bf_xt_shape_for(&g, p->act_planes, &s)) {
        bf_ref_conv2d_xnor_s8(p, input, output, scratch);
        return;
    }
    bf_xt_conv(&g, &t, &s, p->act_threshold, input, output, (uint32_t *)scratch);
}

void bf_fully_connected_xnor_s8(const bf_fully_connected_xnor_s8_params *p, const int8_t *input,
                                int8_t *output, void *scratch) {
    const bf_bin_geom g = bf_bin_fc_geom(p->batches, p->depth, p->units, p->words, p->planes);
    const bf_bin_tables t = {p->weights, p->coef, p->bias, p->multiplier, p->shift,
                             p->output_offset, p->act_min, p->act_max};
    bf_xt_shape s;
    if (!bf_xt_shape_for(&g, p->act_planes, &s)) {
        bf_ref_fully_connected_xnor_s8(p, input, output, scratch);
        return;
    }
    bf_xt_fc(&g, &t, &s, p->act_threshold, input, output);
}
