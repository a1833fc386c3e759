/*
 * bf_runtime.h -- the device's command loop (bf_runtime_main.c).
 *
 * Build: bf_runtime_main.c + bf_protocol.c + the generated model + one platform port.
 * Options (compile both the runtime and model.c with the same ones):
 *   BF_MODEL_DEBUG          GET_TENSOR / intermediate TENSOR_INFO (model provides bf_model_tensor)
 *   BF_PROFILE_LAYERS       GET_LAYER_CYCLES (model calls BF_LAYER_HOOK(i) after layer i)
 *   BF_RUNTIME_MAX_LAYERS   layers profiled (default 128; later layers are not recorded)
 *   BF_RUNTIME_IDLE_MS      a partial frame is discarded after this much silence (default 2000)
 *   BF_PROTO_MAX_PAYLOAD    see bf_protocol.h (default 512; RAM use is about 2x this)
 */
#ifndef BF_RUNTIME_H
#define BF_RUNTIME_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Initialises the platform, resets the model and serves requests until the link closes
 * (hosted platforms: returns 0) -- on a board it never returns. */
int bf_runtime_run(void);

/* The pieces of bf_runtime_run(), for test drivers that supply bytes themselves:
 * bf_runtime_init() forgets every protocol state (session, cached reply, partial frame);
 * bf_runtime_feed() takes one received byte and answers through bf_uart_write() when it
 * completes a frame. */
void bf_runtime_init(void);
void bf_runtime_feed(uint8_t byte);

#ifdef __cplusplus
}
#endif

#endif /* BF_RUNTIME_H */
