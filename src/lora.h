// lora.h: LoRA adapters on the four linears of every GPT-2 block, with PEFT's semantics
// (docs/training.md, "LoRA"): y = base(x) + scaling * B(A(dropout(x))), A [r, in], B [out, r],
// scaling = alpha / r (alpha / sqrt(r) with rslora), A ~ kaiming-uniform(a=sqrt(5)) =
// U(-1/sqrt(in), 1/sqrt(in)), B = 0. Dropout touches only the LoRA branch's input.
// All A and B matrices live in one contiguous array (params) so AdamW is one loop; grads
// use the same layout. Loading and saving use the PEFT file format (adapter_config.json +
// adapter_model.safetensors with base_model.model.transformer.h.{i}.{module}.lora_A.weight).
// Not here: the base layer (qlinear.c), the optimizer (optim.c).
#ifndef QLORA_LORA_H
#define QLORA_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef enum { LORA_QKV = 0, LORA_ATTN_PROJ, LORA_FC, LORA_MLP_PROJ, LORA_N_TARGETS } LoraTarget;

// PEFT module path of target t inside block i: "attn.c_attn", "attn.c_proj", "mlp.c_fc",
// "mlp.c_proj".
const char *lora_target_path(LoraTarget t);

typedef struct {
    size_t in, out;
    float *A, *B;    // [r, in], [out, r]; NULL when this linear has no adapter
    float *dA, *dB;  // gradients, same layout; NULL until lora_alloc_grads
} LoraLinear;

typedef struct {
    int r;
    float alpha;
    float dropout;
    bool use_rslora;
    float scaling;                  // alpha / r, or alpha / sqrt(r) with rslora
    bool targets[LORA_N_TARGETS];   // which module kinds carry adapters
    int n_layer;
    LoraLinear *lin;                // [n_layer * LORA_N_TARGETS]
    float *params, *grads;          // contiguous A/B of all adapters; grads NULL if not allocated
    size_t n_params;
    char base_model[512];           // base_model_name_or_path
} LoraSet;

// Shapes of the four linears of a block: in and out features.
typedef struct {
    size_t in[LORA_N_TARGETS], out[LORA_N_TARGETS];
} LoraShapes;

// Parse PEFT-style target_modules entries: "c_attn", "c_proj" (both projections),
// "attn.c_proj", "mlp.c_proj", "c_fc", "all-linear". false + err for anything else.
bool lora_parse_target(const char *name, bool targets[LORA_N_TARGETS], Error *err);

// Create adapters (A kaiming-uniform from rng, B = 0) for every targeted linear.
void lora_create(LoraSet *ls, int n_layer, const LoraShapes *shapes, int r, float alpha,
                 float dropout, bool use_rslora, const bool targets[LORA_N_TARGETS], Rng *rng);
void lora_alloc_grads(LoraSet *ls);
void lora_free(LoraSet *ls);

static inline const LoraLinear *lora_get(const LoraSet *ls, int layer, LoraTarget t) {
    return ls && ls->lin[layer * LORA_N_TARGETS + t].A ? &ls->lin[layer * LORA_N_TARGETS + t] : NULL;
}

// Forward of the LoRA branch: h (N,r) = xd A^T, y (N,out) += scaling * h B^T, where xd is
// x (N,in) with dropout applied (xd == x when the caller passes the undropped input).
// h is stored transposed, (r,N): the products then have r (8, 16, ...) rows and N columns
// instead of r columns, which suits the matrix kernels' wide tiles. Overwrites h,
// accumulates into y.
void lora_forward(const LoraLinear *l, int r, float scaling, float *y, float *h,
                  const float *xd, size_t N);
// Backward: dB += scaling dy^T h; dh = scaling dy B (into dh scratch, stored (r,N) like h);
// dA += dh^T xd; dxd (N,in) += dh A (dxd may be NULL). Dropout's mask is the caller's.
void lora_backward(LoraLinear *l, int r, float scaling, float *dxd, float *dh, const float *dy,
                   const float *h, const float *xd, size_t N);
// The two above run the fused per-token kernels of lora_kernels.h; these _ref twins compute
// the same as six general matrix products (gemm.h), the reference the tests hold them to.
void lora_forward_ref(const LoraLinear *l, int r, float scaling, float *y, float *h,
                      const float *xd, size_t N);
void lora_backward_ref(LoraLinear *l, int r, float scaling, float *dxd, float *dh, const float *dy,
                       const float *h, const float *xd, size_t N);

// Load a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) for a model
// of n_layer blocks with the given shapes. Accepts files written by Hugging Face PEFT
// (keys with or without ".default", with or without the "transformer." level).
bool lora_load_peft(LoraSet *ls, const char *dir, int n_layer, const LoraShapes *shapes,
                    Error *err);
// The same from the two files' bytes in memory (names stand for them in messages).
bool lora_load_peft_memory(LoraSet *ls, const char *config, size_t config_len, const char *config_name,
                           const uint8_t *weights, size_t weights_len, const char *weights_name,
                           int n_layer, const LoraShapes *shapes, Error *err);
// Write dir/adapter_config.json and dir/adapter_model.safetensors (atomically). dir must exist.
bool lora_save_peft(const LoraSet *ls, const char *dir, Error *err);

#endif
