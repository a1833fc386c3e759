/*
 * bf_runtime_main.c -- the device side of the serial protocol: one request, one reply.
 *
 * Contracts (PROTOCOL.md has the byte layouts):
 *  - The device never transmits unprompted: every frame it sends answers a frame it received.
 *  - Nothing is written past a buffer whatever arrives: frames are decoded into a fixed buffer
 *    (bf_rx), replies are built in a fixed buffer sized for the largest payload, and every
 *    index / offset / length from the host is checked before use.
 *  - A frame that is not authentic (bad CRC, broken COBS, too long) gets an error reply with
 *    seq 0xFFFF; an empty frame (two delimiters) gets nothing, so that the host can flush with
 *    delimiters.  An authentic request always gets exactly one reply echoing its seq.
 *  - The last reply is kept: a retransmitted request (same seq and CRC as the last one) is
 *    answered from it without being executed again (INVOKE runs once per request).
 *  - Stateful commands need the session the host set with OPEN.  RAM is fresh after a reboot,
 *    so the session is 0 and such commands fail with BF_ERR_SESSION: the host then knows that
 *    inputs and outputs are gone instead of reading zeros.
 */
#include <string.h>

#include "bf_model_api.h"
#include "bf_platform.h"
#include "bf_protocol.h"
#include "bf_runtime.h"

#ifndef BF_RUNTIME_MAX_LAYERS
#define BF_RUNTIME_MAX_LAYERS 128u
#endif
#ifndef BF_RUNTIME_IDLE_MS
#define BF_RUNTIME_IDLE_MS 2000u
#endif

#define BF_MAXP ((uint32_t)BF_PROTO_MAX_PAYLOAD)
#define BF_INFO_BYTES 88u
#define BF_SPEC_FIXED_BYTES 46u
#define BF_READ_HEADER_BYTES 10u  /* reply to GET_OUTPUT / GET_TENSOR before the data */
#define BF_INVOKE_FIXED_BYTES 16u
#define BF_LAYERS_HEADER_BYTES 8u

static bf_rx g_rx;
static uint8_t g_tx[BF_PROTO_MAX_FRAME];
static size_t g_tx_len;
static uint8_t g_err_tx[BF_PROTO_OVERHEAD + BF_ERR_PAYLOAD_BYTES];
static uint16_t g_last_seq;
static uint32_t g_last_crc;
static uint8_t g_have_last;
static uint8_t g_reboot_pending;
static uint32_t g_session;
static uint32_t g_invoke_id;
static uint8_t g_outputs_valid;

#ifdef BF_PROFILE_LAYERS
static uint32_t g_layer_counts[BF_RUNTIME_MAX_LAYERS];
static uint32_t g_layer_mark;
#endif

/* What a handler produces: a payload in g_tx, or an error code with a detail word. */
typedef struct bf_reply {
    uint16_t length;
    uint8_t error;
    uint32_t detail;
} bf_reply;

static uint8_t *bf_out(void) {
    return &g_tx[BF_PROTO_HEADER_BYTES];
}

static uint8_t bf_fail(bf_reply *r, uint8_t error, uint32_t detail) {
    r->error = error;
    r->detail = detail;
    return error;
}

static uint16_t bf_clamp16(uint32_t v) {
    return (uint16_t)(v > 0xFFFFu ? 0xFFFFu : v);
}

static uint32_t bf_num_layers(void) {
#ifdef BF_PROFILE_LAYERS
    return bf_model_num_layers < BF_RUNTIME_MAX_LAYERS ? bf_model_num_layers : BF_RUNTIME_MAX_LAYERS;
#else
    return bf_model_num_layers;
#endif
}

static uint32_t bf_num_tensors(void) {
#ifdef BF_MODEL_DEBUG
    return bf_model_num_tensors;
#else
    return 0;
#endif
}

void bf_runtime_layer_hook(uint32_t layer) {
#ifdef BF_PROFILE_LAYERS
    uint32_t now = bf_timer_read();
    if (layer < BF_RUNTIME_MAX_LAYERS) {
        g_layer_counts[layer] += now - g_layer_mark;
    }
    g_layer_mark = now;
#else
    (void)layer;
#endif
}

/* ---- command handlers: (request) -> payload in bf_out() or an error -------------------- */

static uint8_t bf_cmd_ping(const bf_frame *f, bf_reply *r) {
    memcpy(bf_out(), f->payload, f->length);
    r->length = f->length;
    return 0;
}

static uint8_t bf_cmd_info(const bf_frame *f, bf_reply *r) {
    uint8_t *o = bf_out();
    uint8_t flags = 0;
    if (f->length != 0) {
        return bf_fail(r, BF_ERR_BAD_PAYLOAD, 0);
    }
#ifdef BF_MODEL_DEBUG
    flags |= BF_INFO_FLAG_DEBUG;
#endif
#ifdef BF_PROFILE_LAYERS
    flags |= BF_INFO_FLAG_PROFILE;
#endif
    memset(o, 0, BF_INFO_BYTES);
    o[0] = (uint8_t)BF_PROTO_VERSION;
    o[1] = flags;
    bf_put_u16(&o[2], (uint16_t)BF_MAXP);
    memcpy(&o[4], bf_model_hash, 32);
    memcpy(&o[36], bf_plan_hash, 32);
    bf_put_u32(&o[68], bf_model_arena_bytes);
    bf_put_u16(&o[72], bf_clamp16(bf_model_num_inputs));
    bf_put_u16(&o[74], bf_clamp16(bf_model_num_outputs));
    bf_put_u16(&o[76], bf_clamp16(bf_num_tensors()));
    bf_put_u16(&o[78], bf_clamp16(bf_num_layers()));
    bf_put_u32(&o[80], bf_timer_hz());
    o[84] = bf_timer_kind();
    r->length = BF_INFO_BYTES;
    return 0;
}

static uint8_t bf_cmd_open(const bf_frame *f, bf_reply *r) {
    uint32_t session;
    if (f->length != 4) {
        return bf_fail(r, BF_ERR_BAD_PAYLOAD, 4);
    }
    session = bf_get_u32(f->payload);
    if (session == 0) {
        return bf_fail(r, BF_ERR_RANGE, 0);
    }
    g_session = session;
    g_outputs_valid = 0;
    bf_put_u32(bf_out(), session);
    r->length = 4;
    return 0;
}

/* The spec of input / output / intermediate `index`, or an error. */
static uint8_t bf_find_spec(uint8_t kind, uint32_t index, bf_tensor_spec *spec, const void **data,
                            bf_reply *r) {
    if (kind == BF_KIND_INPUT || kind == BF_KIND_OUTPUT) {
        uint32_t n = kind == BF_KIND_INPUT ? bf_model_num_inputs : bf_model_num_outputs;
        if (index >= n) {
            return bf_fail(r, BF_ERR_RANGE, n);
        }
        *spec = kind == BF_KIND_INPUT ? bf_model_input_specs[index] : bf_model_output_specs[index];
        *data = kind == BF_KIND_INPUT ? (const void *)bf_model_input(index) : bf_model_output(index);
        return *data == NULL ? bf_fail(r, BF_ERR_RANGE, n) : 0;
    }
    if (kind == BF_KIND_INTERMEDIATE) {
#ifdef BF_MODEL_DEBUG
        if (bf_model_tensor(index, data, spec) != 0 || *data == NULL) {
            return bf_fail(r, BF_ERR_RANGE, bf_model_num_tensors);
        }
        return 0;
#else
        return bf_fail(r, BF_ERR_UNSUPPORTED, 0);
#endif
    }
    return bf_fail(r, BF_ERR_RANGE, BF_KIND_INTERMEDIATE);
}

static uint8_t bf_cmd_tensor_info(const bf_frame *f, bf_reply *r) {
    bf_tensor_spec spec;
    const void *data;
    uint8_t *o = bf_out();
    uint32_t k;
    uint32_t rank;
    uint32_t name_len = 0;
    uint32_t name_cap = BF_MAXP - BF_SPEC_FIXED_BYTES;
    uint32_t scale_bits;
    if (f->length != 3) {
        return bf_fail(r, BF_ERR_BAD_PAYLOAD, 3);
    }
    if (bf_find_spec(f->payload[0], bf_get_u16(&f->payload[1]), &spec, &data, r) != 0) {
        return r->error;
    }
    rank = spec.rank > BF_MAX_RANK ? BF_MAX_RANK : spec.rank;
    o[0] = f->payload[0];
    o[1] = f->payload[1];
    o[2] = f->payload[2];
    o[3] = spec.dtype;
    o[4] = (uint8_t)rank;
    bf_put_u32(&o[5], (uint32_t)spec.graph_index);
    bf_put_u32(&o[9], spec.bytes);
    for (k = 0; k < BF_MAX_RANK; ++k) {
        bf_put_u32(&o[13 + 4 * k], k < rank ? (uint32_t)spec.dims[k] : 0u);
    }
    memcpy(&scale_bits, &spec.scale, sizeof scale_bits);
    bf_put_u32(&o[37], scale_bits);
    bf_put_u32(&o[41], (uint32_t)spec.zero_point);
    if (name_cap > 255u) {
        name_cap = 255u;
    }
    while (spec.name != NULL && name_len < name_cap && spec.name[name_len] != '\0') {
        o[BF_SPEC_FIXED_BYTES + name_len] = (uint8_t)spec.name[name_len];
        ++name_len;
    }
    o[45] = (uint8_t)name_len;
    r->length = (uint16_t)(BF_SPEC_FIXED_BYTES + name_len);
    return 0;
}

/* offset + n <= size, without overflow. */
static int bf_in_range(uint32_t offset, uint32_t n, uint32_t size) {
    return offset <= size && n <= size - offset;
}

static uint8_t bf_cmd_set_input(const bf_frame *f, bf_reply *r) {
    uint32_t index;
    uint32_t offset;
    uint32_t n;
    uint8_t *dst;
    if (f->length < 6) {
        return bf_fail(r, BF_ERR_BAD_PAYLOAD, 6);
    }
    index = bf_get_u16(f->payload);
    offset = bf_get_u32(&f->payload[2]);
    n = (uint32_t)f->length - 6u;
    if (index >= bf_model_num_inputs) {
        return bf_fail(r, BF_ERR_RANGE, bf_model_num_inputs);
    }
    dst = (uint8_t *)bf_model_input(index);
    if (dst == NULL || !bf_in_range(offset, n, bf_model_input_specs[index].bytes)) {
        return bf_fail(r, BF_ERR_RANGE, bf_model_input_specs[index].bytes);
    }
    memcpy(dst + offset, &f->payload[6], n);
    g_outputs_valid = 0; /* inputs may share arena bytes with outputs */
    memcpy(bf_out(), f->payload, 6);
    bf_put_u16(&bf_out()[6], (uint16_t)n);
    r->length = 8;
    return 0;
}

/* Optional payload: one CRC-32 per input, checked before running so that a device that lost
 * or never got part of an input refuses instead of computing on it. */
static uint8_t bf_check_inputs(const bf_frame *f, bf_reply *r) {
    uint32_t i;
    if (f->length == 0) {
        return 0;
    }
    if ((uint32_t)f->length != 4u * bf_model_num_inputs) {
        return bf_fail(r, BF_ERR_BAD_PAYLOAD, 4u * bf_model_num_inputs);
    }
    for (i = 0; i < bf_model_num_inputs; ++i) {
        const uint8_t *p = (const uint8_t *)bf_model_input(i);
        if (p == NULL || bf_crc32(0, p, bf_model_input_specs[i].bytes) != bf_get_u32(&f->payload[4 * i])) {
            return bf_fail(r, BF_ERR_INPUT_CRC, i);
        }
    }
    return 0;
}

static uint8_t bf_cmd_invoke(const bf_frame *f, bf_reply *r) {
    uint8_t *o = bf_out();
    uint32_t t0;
    uint32_t t1;
    int status;
    uint32_t i;
    uint32_t n_crc = 0;
    if (bf_check_inputs(f, r) != 0) {
        return r->error;
    }
#ifdef BF_PROFILE_LAYERS
    memset(g_layer_counts, 0, sizeof g_layer_counts);
#endif
    g_outputs_valid = 0;
    bf_timer_begin();
    t0 = bf_timer_read();
#ifdef BF_PROFILE_LAYERS
    g_layer_mark = t0;
#endif
    status = bf_model_invoke();
    t1 = bf_timer_read();
    ++g_invoke_id;
    if (status == 0) {
        g_outputs_valid = 1;
        n_crc = bf_model_num_outputs;
        if (n_crc > (BF_MAXP - BF_INVOKE_FIXED_BYTES) / 4u) {
            n_crc = (BF_MAXP - BF_INVOKE_FIXED_BYTES) / 4u;
        }
        if (n_crc > 255u) {
            n_crc = 255u;
        }
    }
    bf_put_u32(&o[0], (uint32_t)status);
    bf_put_u32(&o[4], t1 - t0);
    bf_put_u32(&o[8], g_invoke_id);
    o[12] = bf_timer_kind();
    o[13] = (uint8_t)n_crc;
    bf_put_u16(&o[14], 0);
    for (i = 0; i < n_crc; ++i) {
        const uint8_t *p = (const uint8_t *)bf_model_output(i);
        bf_put_u32(&o[BF_INVOKE_FIXED_BYTES + 4 * i],
                   p == NULL ? 0u : bf_crc32(0, p, bf_model_output_specs[i].bytes));
    }
    r->length = (uint16_t)(BF_INVOKE_FIXED_BYTES + 4u * n_crc);
    return 0;
}

/* GET_OUTPUT and GET_TENSOR: u16 index | u32 offset | u16 length. */
static uint8_t bf_cmd_read(const bf_frame *f, uint8_t kind, bf_reply *r) {
    bf_tensor_spec spec;
    const void *data;
    uint8_t *o = bf_out();
    uint32_t offset;
    uint32_t n;
    if (f->length != 8) {
        return bf_fail(r, BF_ERR_BAD_PAYLOAD, 8);
    }
#ifndef BF_MODEL_DEBUG
    if (kind == BF_KIND_INTERMEDIATE) {
        return bf_fail(r, BF_ERR_UNSUPPORTED, 0);
    }
#endif
    if (!g_outputs_valid) {
        return bf_fail(r, BF_ERR_NO_OUTPUT, g_invoke_id);
    }
    if (bf_find_spec(kind, bf_get_u16(f->payload), &spec, &data, r) != 0) {
        return r->error;
    }
    offset = bf_get_u32(&f->payload[2]);
    n = bf_get_u16(&f->payload[6]);
    if (n > BF_MAXP - BF_READ_HEADER_BYTES) {
        return bf_fail(r, BF_ERR_RANGE, BF_MAXP - BF_READ_HEADER_BYTES);
    }
    if (!bf_in_range(offset, n, spec.bytes)) {
        return bf_fail(r, BF_ERR_RANGE, spec.bytes);
    }
    bf_put_u32(&o[0], g_invoke_id);
    memcpy(&o[4], f->payload, 6);
    memcpy(&o[BF_READ_HEADER_BYTES], (const uint8_t *)data + offset, n);
    r->length = (uint16_t)(BF_READ_HEADER_BYTES + n);
    return 0;
}

static uint8_t bf_cmd_layer_cycles(const bf_frame *f, bf_reply *r) {
#ifdef BF_PROFILE_LAYERS
    uint8_t *o = bf_out();
    uint32_t first;
    uint32_t count;
    uint32_t i;
    if (f->length != 4) {
        return bf_fail(r, BF_ERR_BAD_PAYLOAD, 4);
    }
    first = bf_get_u16(f->payload);
    count = bf_get_u16(&f->payload[2]);
    if (count > (BF_MAXP - BF_LAYERS_HEADER_BYTES) / 4u) {
        return bf_fail(r, BF_ERR_RANGE, (BF_MAXP - BF_LAYERS_HEADER_BYTES) / 4u);
    }
    if (!bf_in_range(first, count, bf_num_layers())) {
        return bf_fail(r, BF_ERR_RANGE, bf_num_layers());
    }
    bf_put_u32(&o[0], g_invoke_id);
    memcpy(&o[4], f->payload, 4);
    for (i = 0; i < count; ++i) {
        bf_put_u32(&o[BF_LAYERS_HEADER_BYTES + 4 * i], g_layer_counts[first + i]);
    }
    r->length = (uint16_t)(BF_LAYERS_HEADER_BYTES + 4u * count);
    return 0;
#else
    (void)f;
    return bf_fail(r, BF_ERR_UNSUPPORTED, 0);
#endif
}

static uint8_t bf_cmd_reset(const bf_frame *f, bf_reply *r) {
    if (f->length != 1 || f->payload[0] > BF_RESET_REBOOT) {
        return bf_fail(r, BF_ERR_BAD_PAYLOAD, 1);
    }
    if (f->payload[0] == BF_RESET_REBOOT) {
        g_reboot_pending = 1;
    } else {
        bf_model_reset();
        g_outputs_valid = 0;
    }
    bf_out()[0] = f->payload[0];
    r->length = 1;
    return 0;
}

/* Commands that read or change the model's state need the host's session. */
static int bf_needs_session(const bf_frame *f) {
    switch (f->code) {
    case BF_CMD_PING:
    case BF_CMD_INFO:
    case BF_CMD_OPEN:
    case BF_CMD_TENSOR_INFO:
        return 0;
    case BF_CMD_RESET:
        return !(f->length == 1 && f->payload[0] == BF_RESET_REBOOT);
    default:
        return 1;
    }
}

static uint8_t bf_dispatch(const bf_frame *f, bf_reply *r) {
    if (bf_needs_session(f) && (g_session == 0 || f->session != g_session)) {
        return bf_fail(r, BF_ERR_SESSION, 0);
    }
    switch (f->code) {
    case BF_CMD_PING:
        return bf_cmd_ping(f, r);
    case BF_CMD_INFO:
        return bf_cmd_info(f, r);
    case BF_CMD_OPEN:
        return bf_cmd_open(f, r);
    case BF_CMD_TENSOR_INFO:
        return bf_cmd_tensor_info(f, r);
    case BF_CMD_SET_INPUT:
        return bf_cmd_set_input(f, r);
    case BF_CMD_INVOKE:
        return bf_cmd_invoke(f, r);
    case BF_CMD_GET_OUTPUT:
        return bf_cmd_read(f, BF_KIND_OUTPUT, r);
    case BF_CMD_GET_TENSOR:
        return bf_cmd_read(f, BF_KIND_INTERMEDIATE, r);
    case BF_CMD_GET_LAYER_CYCLES:
        return bf_cmd_layer_cycles(f, r);
    case BF_CMD_RESET:
        return bf_cmd_reset(f, r);
    default:
        return bf_fail(r, BF_ERR_UNKNOWN_COMMAND, 0);
    }
}

/* ---- replies ------------------------------------------------------------------------- */

static void bf_put_error(uint8_t *payload, uint8_t error, uint8_t command, uint32_t detail) {
    payload[0] = error;
    payload[1] = command;
    bf_put_u16(&payload[2], 0);
    bf_put_u32(&payload[4], detail);
}

/* An error about a frame that was never executed; not cached. */
static void bf_send_frame_error(uint16_t seq, uint8_t command, uint8_t error) {
    size_t n;
    bf_put_error(&g_err_tx[BF_PROTO_HEADER_BYTES], error, command,
                 error == BF_ERR_VERSION ? BF_PROTO_VERSION : (uint32_t)BF_PROTO_MAX_FRAME);
    n = bf_frame_build(g_err_tx, (uint8_t)BF_RSP_ERROR, seq, g_session, (uint16_t)BF_ERR_PAYLOAD_BYTES);
    bf_cobs_send(g_err_tx, n, bf_uart_write);
}

static void bf_handle(const bf_frame *f) {
    bf_reply r;
    uint8_t code;
    if (g_have_last && f->seq == g_last_seq && f->crc == g_last_crc) {
        bf_cobs_send(g_tx, g_tx_len, bf_uart_write); /* a retransmission: same answer */
        return;
    }
    r.length = 0;
    r.error = 0;
    r.detail = 0;
    code = (uint8_t)(f->code | BF_RSP_FLAG);
    if (bf_dispatch(f, &r) != 0) {
        bf_put_error(bf_out(), r.error, f->code, r.detail);
        r.length = BF_ERR_PAYLOAD_BYTES;
        code = (uint8_t)BF_RSP_ERROR;
    }
    g_tx_len = bf_frame_build(g_tx, code, f->seq, g_session, r.length);
    g_last_seq = f->seq;
    g_last_crc = f->crc;
    g_have_last = 1;
    bf_cobs_send(g_tx, g_tx_len, bf_uart_write);
    if (g_reboot_pending) {
        bf_platform_reset();
        /* Only a test platform returns: behave as after a reboot. */
        bf_runtime_init();
        bf_model_reset();
    }
}

void bf_runtime_init(void) {
    bf_rx_reset(&g_rx);
    g_tx_len = 0;
    g_have_last = 0;
    g_reboot_pending = 0;
    g_session = 0;
    g_invoke_id = 0;
    g_outputs_valid = 0;
}

void bf_runtime_feed(uint8_t byte) {
    bf_frame f;
    uint8_t error = 0;
    int result;
    memset(&f, 0, sizeof f);
    result = bf_rx_feed(&g_rx, byte, &f, &error);
    if (result == BF_RX_FRAME) {
        bf_handle(&f);
    } else if (result == BF_RX_ERROR) {
        if (error == BF_ERR_VERSION || error == BF_ERR_LENGTH) {
            bf_send_frame_error(f.seq, f.code, error); /* authentic header */
        } else {
            bf_send_frame_error((uint16_t)BF_SEQ_UNKNOWN, 0, error);
        }
    }
}

int bf_runtime_run(void) {
    bf_platform_init();
    bf_runtime_init();
    bf_model_reset();
    for (;;) {
        int c = bf_uart_getc(BF_RUNTIME_IDLE_MS);
        if (c == BF_UART_CLOSED) {
            return 0;
        }
        if (c >= 0) {
            bf_runtime_feed((uint8_t)c);
        } else if (bf_rx_pending(&g_rx)) {
            bf_rx_reset(&g_rx); /* a frame that stopped half-way: drop it silently */
        }
    }
}
