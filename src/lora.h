// lora.h: LoRA adapters on the four linears of every GPT-2 block, with PEFT's semantics
// (docs/training.md, "LoRA"): y = base(x) + scaling * B(A(dropout(x))), A [r, in], B [out, r],
// scaling = alpha / r (alpha / sqrt(r) with rslora), A ~ kaiming-uniform(a=sqrt(5)) =
// U(-1/sqrt(in), 1/sqrt(in)), B = 0. Dropout touches only the LoRA branch's input.
// All A and B matrices live in one contiguous array (params) so AdamW is one loop; grads
// use the same layout. Loading and saving use the PEFT file format (adapter_config.json +
// adapter_model.safetensors with base_model.model.transformer.h.{i}.{module}.lora_A.weight for
// GPT-2, base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight for LLaMA).
// Not here: the base layer (qlinear.c), the optimizer (optim.c).
#ifndef QLORA_LORA_H
#define QLORA_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

// A block's linears are numbered 0..n-1 by its architecture (GPT-2: the four below; the
// LLaMA family: q, k, v, o, gate, up, down); an adapter slot is (layer, linear), at
// layer * LORA_N_TARGETS + linear in LoraSet.lin whatever the architecture.
typedef int LoraTarget;
enum { LORA_N_TARGETS = 7 };  // the most linears a block has
enum { LORA_QKV = 0, LORA_ATTN_PROJ, LORA_FC, LORA_MLP_PROJ };  // GPT-2's

// What LoRA needs to know of a model's blocks (model_lora_shapes fills it from the
// architecture): their linears' sizes and the names PEFT gives them.
typedef struct {
    int n;                                        // linears per block
    size_t in[LORA_N_TARGETS], out[LORA_N_TARGETS];
    const char *const *path;                      // [n] module path inside a block: "attn.c_attn"
    const char *block_prefix;                     // PEFT key part before the layer index,
                                                  // "transformer.h." or "model.layers."
    const char *alt_block_prefix;                 // also read ("h."), or NULL
    bool fan_in_fan_out;                          // adapter_config.json's flag (Conv1D weights)
    const char *arch;                             // "gpt2", "llama": for messages
} LoraShapes;

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
    LoraShapes shapes;              // the model's blocks (names, sizes)
    LoraLinear *lin;                // [n_layer * LORA_N_TARGETS]
    float *params, *grads;          // contiguous A/B of all adapters; grads NULL if not allocated
    size_t n_params;
    char *base_model;               // base_model_name_or_path (malloc'ed; NULL: none known)
} LoraSet;

// Shapes of the four linears of a block: in and out features.
// Parse one PEFT target_modules entry against the block's linears (PEFT's rule: a name
// matches a module whose path equals it or ends with "." + it, so "c_proj" is both of
// GPT-2's projections), or "all-linear": sets targets[] of the matches. false + err (the
// block's module names) when nothing matches.
bool lora_parse_target(const LoraShapes *s, const char *name, bool targets[LORA_N_TARGETS],
                       Error *err);

// buf = the short names of the block's linears, each once ("c_attn, c_proj, c_fc").
void lora_module_names(const LoraShapes *s, char *buf, size_t size);

// buf = the PEFT key of slot (layer, t)'s A (is_b false) or B matrix, as lora_save_peft writes
// it: "base_model.model.transformer.h.3.attn.c_attn.lora_A.weight". Truncated to size.
void lora_key(const LoraShapes *s, int layer, LoraTarget t, bool is_b, char *buf, size_t size);

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
