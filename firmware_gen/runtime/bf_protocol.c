/*
 * bf_protocol.c -- CRC-32, COBS and frame checks of the serial protocol (see bf_protocol.h).
 */
#include "bf_protocol.h"

/* CRC-32/IEEE, reflected polynomial 0xEDB88320, four bits at a time. */
static const uint32_t bf_crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t bf_crc32(uint32_t crc, const uint8_t *data, size_t n) {
    size_t i;
    crc = ~crc;
    for (i = 0; i < n; ++i) {
        crc ^= data[i];
        crc = (crc >> 4) ^ bf_crc_nibble[crc & 15u];
        crc = (crc >> 4) ^ bf_crc_nibble[crc & 15u];
    }
    return ~crc;
}

void bf_put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

void bf_put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

uint16_t bf_get_u16(const uint8_t *p) {
    return (uint16_t)((uint16_t)p[0] | (uint16_t)((uint16_t)p[1] << 8));
}

uint32_t bf_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

void bf_rx_reset(bf_rx *rx) {
    rx->len = 0;
    rx->raw = 0;
    rx->block_left = 0;
    rx->block_code = 0;
    rx->overflow = 0;
}

int bf_rx_pending(const bf_rx *rx) {
    return rx->raw != 0;
}

static void bf_rx_append(bf_rx *rx, uint8_t byte) {
    if (rx->len < BF_PROTO_MAX_FRAME) {
        rx->buf[rx->len++] = byte;
    } else {
        rx->overflow = 1;
    }
}

/* Checks a complete decoded frame; see bf_rx_feed(). */
static int bf_rx_finish(const bf_rx *rx, bf_frame *frame, uint8_t *error) {
    uint32_t body;
    if (rx->raw == 0) {
        return BF_RX_NONE;
    }
    if (rx->overflow) {
        *error = BF_ERR_OVERSIZE;
        return BF_RX_ERROR;
    }
    if (rx->block_left != 0 || rx->len < BF_PROTO_OVERHEAD) {
        *error = BF_ERR_FRAMING;
        return BF_RX_ERROR;
    }
    body = rx->len - BF_PROTO_CRC_BYTES;
    frame->crc = bf_get_u32(&rx->buf[body]);
    if (bf_crc32(0, rx->buf, body) != frame->crc) {
        *error = BF_ERR_CRC;
        return BF_RX_ERROR;
    }
    /* From here on the header is authentic. */
    frame->version = rx->buf[0];
    frame->code = rx->buf[1];
    frame->seq = bf_get_u16(&rx->buf[2]);
    frame->session = bf_get_u32(&rx->buf[4]);
    frame->length = bf_get_u16(&rx->buf[8]);
    frame->payload = &rx->buf[BF_PROTO_HEADER_BYTES];
    if (frame->version != BF_PROTO_VERSION) {
        *error = BF_ERR_VERSION;
        return BF_RX_ERROR;
    }
    if ((uint32_t)frame->length != body - BF_PROTO_HEADER_BYTES) {
        *error = BF_ERR_LENGTH;
        return BF_RX_ERROR;
    }
    return BF_RX_FRAME;
}

int bf_rx_feed(bf_rx *rx, uint8_t byte, bf_frame *frame, uint8_t *error) {
    int result;
    if (byte == 0) {
        result = bf_rx_finish(rx, frame, error);
        bf_rx_reset(rx);
        return result;
    }
    if (rx->raw != UINT32_MAX) {
        rx->raw++;
    }
    if (rx->block_left == 0) {
        /* A code byte.  Every block but a full one (code 0xFF) ends in an implied zero, which
         * is only materialised when another block follows (the frame's last one is dropped). */
        if (rx->block_code != 0 && rx->block_code != 0xFFu) {
            bf_rx_append(rx, 0);
        }
        rx->block_code = byte;
        rx->block_left = (uint8_t)(byte - 1u);
    } else {
        bf_rx_append(rx, byte);
        rx->block_left--;
    }
    return BF_RX_NONE;
}

size_t bf_frame_build(uint8_t *buf, uint8_t code, uint16_t seq, uint32_t session, uint16_t length) {
    size_t body = BF_PROTO_HEADER_BYTES + (size_t)length;
    buf[0] = (uint8_t)BF_PROTO_VERSION;
    buf[1] = code;
    bf_put_u16(&buf[2], seq);
    bf_put_u32(&buf[4], session);
    bf_put_u16(&buf[8], length);
    bf_put_u32(&buf[body], bf_crc32(0, buf, body));
    return body + BF_PROTO_CRC_BYTES;
}

/* A small staging buffer so that a frame with many zero bytes is not one write per block. */
typedef struct bf_tx_stage {
    uint8_t buf[64];
    size_t n;
    bf_write_fn write;
} bf_tx_stage;

static void bf_stage_put(bf_tx_stage *s, uint8_t byte) {
    if (s->n == sizeof s->buf) {
        s->write(s->buf, s->n);
        s->n = 0;
    }
    s->buf[s->n++] = byte;
}

void bf_cobs_send(const uint8_t *frame, size_t n, bf_write_fn write) {
    bf_tx_stage stage;
    size_t i = 0;
    size_t j;
    size_t k;
    stage.n = 0;
    stage.write = write;
    bf_stage_put(&stage, 0); /* ends whatever partial frame the host may hold */
    for (;;) {
        j = i;
        while (j < n && frame[j] != 0 && j - i < 254u) {
            ++j;
        }
        bf_stage_put(&stage, (uint8_t)(j - i + 1u));
        for (k = i; k < j; ++k) {
            bf_stage_put(&stage, frame[k]);
        }
        if (j >= n) {
            break;
        }
        /* A full block (254 data bytes) implies no zero; otherwise frame[j] is a zero. */
        i = (j - i == 254u) ? j : j + 1u;
    }
    bf_stage_put(&stage, 0);
    write(stage.buf, stage.n);
}
