/*
 * bf_model_api.h -- what the serial runtime needs from a generated model.
 *
 * The code generator implements everything below in the generated model.c, which must
 * #include "bf_model_api.h" (after model.h) so that the compiler checks these declarations
 * against the definitions.  Nothing here allocates: every object is static.
 *
 * Required (every build):
 *   bf_model_num_inputs, bf_model_num_outputs      counts (may be 0)
 *   bf_model_input_specs[], bf_model_output_specs[] one bf_tensor_spec per input / output
 *   bf_model_hash[32], bf_plan_hash[32]            raw SHA-256 bytes (not hex); the plan hash
 *                                                   is 32 zero bytes when no plan was applied
 *   bf_model_arena_bytes                            bytes of the static activation arena
 *   bf_model_num_layers                             every BF_LAYER_HOOK(i) has i < this
 *   bf_model_input(i), bf_model_output(i)           buffers of spec[i].bytes bytes, NULL when
 *                                                   i is out of range
 *   bf_model_invoke(), bf_model_reset()
 *
 * Required only when the model is compiled with BF_MODEL_DEBUG (and then the runtime must be
 * compiled with BF_MODEL_DEBUG too, or the link fails -- on purpose):
 *   bf_model_num_tensors, bf_model_tensor(id, &data, &spec)
 *
 * Layer profiling is provided by the runtime, not the model: a model compiled with
 * BF_PROFILE_LAYERS gets BF_LAYER_HOOK(i) defined below and must call it once after layer i
 * (0 <= i < bf_model_num_layers) inside bf_model_invoke().
 */
#ifndef BF_MODEL_API_H
#define BF_MODEL_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element type codes: identical to firmware_gen/program.py DTYPE_CODES (and model.h). */
#ifndef BF_DTYPE_FLOAT32
#define BF_DTYPE_FLOAT32 1
#define BF_DTYPE_INT8 2
#define BF_DTYPE_UINT8 3
#define BF_DTYPE_INT16 4
#define BF_DTYPE_INT32 5
#define BF_DTYPE_INT64 6
#define BF_DTYPE_FLOAT16 7
#define BF_DTYPE_BOOL 8
#endif

#define BF_MAX_RANK 6

/* One tensor as the host sees it.  Quantized tensors mean real = scale * (q - zero_point);
 * unquantized tensors have scale 0 and zero_point 0.  dims[k] for k >= rank are 0. */
typedef struct bf_tensor_spec {
    const char *name;          /* NUL-terminated, "" when the model has none */
    int32_t graph_index;       /* the IR / TFLite subgraph-0 tensor index, -1 if none */
    uint32_t bytes;            /* exact byte size of the tensor's data */
    int32_t dims[BF_MAX_RANK]; /* shape, outermost first */
    float scale;
    int32_t zero_point;
    uint8_t dtype; /* BF_DTYPE_* */
    uint8_t rank;  /* 0..BF_MAX_RANK */
} bf_tensor_spec;

extern const uint32_t bf_model_num_inputs;
extern const uint32_t bf_model_num_outputs;
extern const bf_tensor_spec bf_model_input_specs[];
extern const bf_tensor_spec bf_model_output_specs[];
extern const uint8_t bf_model_hash[32];
extern const uint8_t bf_plan_hash[32];
extern const uint32_t bf_model_arena_bytes;
extern const uint32_t bf_model_num_layers;

/* Input buffer `index` (bf_model_input_specs[index].bytes bytes), writable at any time between
 * invocations; its content is undefined after bf_model_invoke().  NULL if index is out of range. */
void *bf_model_input(uint32_t index);

/* Output buffer `index`, valid from a successful bf_model_invoke() until the next write to an
 * input buffer, bf_model_invoke() or bf_model_reset().  NULL if index is out of range. */
const void *bf_model_output(uint32_t index);

/* Runs the model once on the current inputs.  0 on success, anything else is a model-defined
 * failure code that the runtime reports to the host unchanged. */
int bf_model_invoke(void);

/* Restores the initial state (streaming models); the runtime calls it once before the first
 * bf_model_invoke() and on the host's RESET command. */
void bf_model_reset(void);

#ifdef BF_MODEL_DEBUG
/* Number of intermediate tensors that bf_model_tensor() can return (ids 0..n-1). */
extern const uint32_t bf_model_num_tensors;

/* Intermediate tensor `id` as computed by the last bf_model_invoke(): sets *data (spec->bytes
 * bytes, valid until the next input write, invoke or reset) and *spec, returns 0; returns -1
 * and touches nothing when id >= bf_model_num_tensors.  A debug build must therefore keep
 * every listed tensor intact after the invocation (e.g. an arena plan without reuse). */
int bf_model_tensor(uint32_t id, const void **data, bf_tensor_spec *spec);
#endif

/* Layer profiling: implemented by the runtime (bf_runtime_main.c).  Records the counter ticks
 * since the previous hook call (or the start of bf_model_invoke) against `layer`. */
void bf_runtime_layer_hook(uint32_t layer);

#if defined(BF_PROFILE_LAYERS) && !defined(BF_LAYER_HOOK)
#define BF_LAYER_HOOK(index) bf_runtime_layer_hook((uint32_t)(index))
#endif

#ifdef __cplusplus
}
#endif

#endif /* BF_MODEL_API_H */
