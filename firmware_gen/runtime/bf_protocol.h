/*
 * bf_protocol.h -- framing of the boardfit serial protocol, version 1 (device side).
 *
 * Wire format (full specification: PROTOCOL.md next to this file):
 *   0x00  COBS(frame)  0x00
 * frame (little-endian):
 *   u8 version | u8 code | u16 seq | u32 session | u16 length | payload[length] | u32 crc
 * crc = CRC-32/IEEE (zlib's crc32) of every preceding byte of the frame.
 *
 * This module is pure: no platform calls, no global state.  The receiver decodes COBS byte by
 * byte straight into a fixed buffer, so the encoded frame is never stored and nothing can be
 * written past BF_PROTO_MAX_FRAME bytes whatever arrives.
 */
#ifndef BF_PROTOCOL_H
#define BF_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BF_PROTO_VERSION 1u

/* Largest payload the device accepts or sends.  The host learns it from INFO and sizes its
 * chunks to it.  At least 128 so that INFO and TENSOR_INFO replies always fit. */
#ifndef BF_PROTO_MAX_PAYLOAD
#define BF_PROTO_MAX_PAYLOAD 512u
#endif

#define BF_PROTO_HEADER_BYTES 10u
#define BF_PROTO_CRC_BYTES 4u
#define BF_PROTO_OVERHEAD (BF_PROTO_HEADER_BYTES + BF_PROTO_CRC_BYTES)
#define BF_PROTO_MAX_FRAME (BF_PROTO_MAX_PAYLOAD + BF_PROTO_OVERHEAD)

#if BF_PROTO_MAX_PAYLOAD < 128 || BF_PROTO_MAX_PAYLOAD > 65535
#error "BF_PROTO_MAX_PAYLOAD must be in 128..65535"
#endif

/* Commands (host -> device).  A reply has code (command | BF_RSP_FLAG) or BF_RSP_ERROR. */
#define BF_CMD_PING 0x01u
#define BF_CMD_INFO 0x02u
#define BF_CMD_OPEN 0x03u
#define BF_CMD_TENSOR_INFO 0x04u
#define BF_CMD_SET_INPUT 0x10u
#define BF_CMD_INVOKE 0x11u
#define BF_CMD_GET_OUTPUT 0x12u
#define BF_CMD_GET_TENSOR 0x13u
#define BF_CMD_GET_LAYER_CYCLES 0x14u
#define BF_CMD_RESET 0x20u

#define BF_RSP_FLAG 0x80u
#define BF_RSP_ERROR 0xFFu

/* Error reply payload: u8 error | u8 command (0 if unknown) | u16 zero | u32 detail. */
#define BF_ERR_PAYLOAD_BYTES 8u
/* Frame-level errors: the frame was not authentic, its seq is unknown; reply seq 0xFFFF. */
#define BF_ERR_CRC 1u
#define BF_ERR_FRAMING 2u
#define BF_ERR_OVERSIZE 3u
/* Authentic (CRC-valid) frames that cannot be served; reply echoes seq. */
#define BF_ERR_VERSION 4u
#define BF_ERR_LENGTH 5u
#define BF_ERR_UNKNOWN_COMMAND 6u
#define BF_ERR_BAD_PAYLOAD 7u
#define BF_ERR_RANGE 8u
#define BF_ERR_UNSUPPORTED 9u
#define BF_ERR_SESSION 10u
#define BF_ERR_INPUT_CRC 11u
#define BF_ERR_NO_OUTPUT 12u

#define BF_SEQ_UNKNOWN 0xFFFFu

/* TENSOR_INFO kinds. */
#define BF_KIND_INPUT 0u
#define BF_KIND_OUTPUT 1u
#define BF_KIND_INTERMEDIATE 2u

/* RESET modes. */
#define BF_RESET_MODEL 0u
#define BF_RESET_REBOOT 1u

/* INFO flags. */
#define BF_INFO_FLAG_DEBUG 0x01u   /* GET_TENSOR and intermediate TENSOR_INFO are available */
#define BF_INFO_FLAG_PROFILE 0x02u /* GET_LAYER_CYCLES is available */

/* CRC-32/IEEE with zlib's chaining convention: crc = bf_crc32(0, a, n); crc = bf_crc32(crc,
 * b, m) equals the CRC of a||b.  16-entry table (64 bytes of flash). */
uint32_t bf_crc32(uint32_t crc, const uint8_t *data, size_t n);

/* Little-endian field access. */
void bf_put_u16(uint8_t *p, uint16_t v);
void bf_put_u32(uint8_t *p, uint32_t v);
uint16_t bf_get_u16(const uint8_t *p);
uint32_t bf_get_u32(const uint8_t *p);

/* A decoded, authenticated request.  payload points into the receiver's buffer and is valid
 * until the next bf_rx_feed() call. */
typedef struct bf_frame {
    uint8_t version;
    uint8_t code;
    uint16_t seq;
    uint32_t session;
    uint32_t crc;
    const uint8_t *payload;
    uint16_t length;
} bf_frame;

/* Streaming receiver state; zero-initialise or bf_rx_reset() before use. */
typedef struct bf_rx {
    uint8_t buf[BF_PROTO_MAX_FRAME];
    uint32_t len;       /* decoded bytes stored so far */
    uint32_t raw;       /* encoded bytes seen since the last delimiter */
    uint8_t block_left; /* data bytes still expected in the current COBS block */
    uint8_t block_code; /* code byte of the current block; 0 before the first */
    uint8_t overflow;   /* more than BF_PROTO_MAX_FRAME decoded bytes: frame is dropped */
} bf_rx;

/* bf_rx_feed() results. */
#define BF_RX_NONE 0  /* nothing complete yet, or an empty frame (0x00 0x00): stay silent */
#define BF_RX_FRAME 1 /* *frame holds an authentic request */
#define BF_RX_ERROR 2 /* *error holds BF_ERR_*; *frame's seq/code are set when authentic */

void bf_rx_reset(bf_rx *rx);

/* Takes one received byte.  Returns BF_RX_* and fills *frame / *error on a delimiter. */
int bf_rx_feed(bf_rx *rx, uint8_t byte, bf_frame *frame, uint8_t *error);

/* True when bytes of an unfinished frame are pending (for the idle timeout). */
int bf_rx_pending(const bf_rx *rx);

/* Writes header and CRC around a payload already placed at buf + BF_PROTO_HEADER_BYTES.
 * Returns the frame length (length + BF_PROTO_OVERHEAD); buf must hold that many bytes. */
size_t bf_frame_build(uint8_t *buf, uint8_t code, uint16_t seq, uint32_t session, uint16_t length);

/* Sends 0x00 COBS(frame) 0x00 through `write`, in pieces of at most 64 bytes. */
typedef void (*bf_write_fn)(const uint8_t *data, size_t n);
void bf_cobs_send(const uint8_t *frame, size_t n, bf_write_fn write);

#ifdef __cplusplus
}
#endif

#endif /* BF_PROTOCOL_H */
