// memory.h: the analytic memory model behind `qlora memory` and the account `qlora train`
// prints. Given a model's shapes, a batch and a LoRA setting, it predicts the bytes of
// frozen weights, quantization constants, trainable parameters, gradients, optimizer
// state and activations for each fine-tuning method (docs/memory.md). The formulas
// are written from the shapes here, independently of the allocator, so that a test can
// hold the trainer's real allocations to them.
// Not here: allocation itself (model.c, train.c).
#ifndef QLORA_MEMORY_H
#define QLORA_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "lora.h"
#include "model.h"
#include "quant.h"

// A model's shapes, as the formulas read them (docs/memory.md). GPT-2: LayerNorms, learned
// positions, the four linears c_attn [C -> 3C], attn.c_proj, c_fc [C -> F], mlp.c_proj, all with
// biases, tied head. The LLaMA family: RMSNorms, RoPE (no position parameters), the seven linears
// q [C -> CQ], k, v [C -> CKV], o [CQ -> C], gate, up [C -> F], down [F -> C] with biases on
// q, k, v (qwen2) or q, k, v, o (llama with attention_bias), tied head or not.
typedef struct {
    char name[32];
    GPT2Config cfg;  // the config the shape describes (for the linears' names: --targets)
    bool llama;      // a LLaMA-family block, else GPT-2's
    bool tied;       // the output layer is the token embedding
    // L layers, C width, F MLP width, V vocabulary, P positions, NH query heads, NKV key/value
    // heads, HS head dim: CQ = NH*HS, CKV = NKV*HS (GPT-2: NKV = NH, HS = C/NH)
    double L, C, F, V, P, NH, NKV, HS;
    int n_lin;  // linears per block, in LoraTarget order: GPT-2's 4 or the LLaMA family's 7
    double lin_in[LORA_N_TARGETS], lin_out[LORA_N_TARGETS];
    bool lin_bias[LORA_N_TARGETS];
} ModelShape;

// Parameter counts of a shape: all, the block linears' weights, and the rest (embeddings,
// an untied head, positions, norms, biases).
double shape_params(const ModelShape *s);
double shape_linear_params(const ModelShape *s);
// Trainable LoRA parameters for rank r on the linears whose slots targets[0..n_lin) are set
// (the architecture's LoraTarget numbering: GPT-2's LORA_QKV.., the LLaMA family's q..down).
double shape_lora_params(const ModelShape *s, int r, const bool targets[LORA_N_TARGETS]);

// Every preset of model_preset (GPT-2 sizes, "tiny", "bench-tiny", the LLaMA-family
// "smollm2-135m", "smollm2-360m", "qwen2.5-0.5b", "tinyllama-1.1b", "llama-tiny") and the
// LLaMA-1 teaching shapes "llama-7b", "llama-13b", "llama-33b", "llama-65b"; false if unknown.
bool shape_preset(const char *name, ModelShape *s);

typedef enum {
    MEM_FULL_FP32, MEM_FULL_MIXED16, MEM_LORA_FP32, MEM_LORA_16, MEM_QLORA_INT8, MEM_QLORA_FP4,
    MEM_QLORA_NF4, MEM_QLORA_NF4_DQ, MEM_N_METHODS
} MemMethod;

typedef struct {
    const char *name;
    double weights, quant_constants, trainable, gradients, optimizer, activations, total;
    const char *bytes_per_param;  // the per-parameter accounting used, in words
} MemRow;

typedef struct {
    size_t B, T;
    int lora_r;
    bool targets[LORA_N_TARGETS];  // adapted linears, in the shape's LoraTarget slots
    bool gradient_checkpointing;
    size_t quant_blocksize;
    // The fp4 row with double-quantized block scales, as a job storing fp4 + double quant
    // runs; false gives the comparison table's plain fp4 (the QLoRA paper's).
    bool fp4_double_quant;
} MemJob;

// The shape of a config of any architecture (name left empty).
ModelShape shape_from_config(const GPT2Config *c);
// The row of memory_predict that describes qlora's own trainer for a method: full
// fine-tuning, or LoRA on a base stored as q (QUANT_NONE = the fp32 base of method lora).
// For fp4 with double quant the row is right when the job had fp4_double_quant set.
MemMethod memory_method(bool full, QuantType q, bool double_quant);

// Predict all methods for shape s and job j into rows[MEM_N_METHODS].
void memory_predict(const ModelShape *s, const MemJob *j, MemRow rows[MEM_N_METHODS]);

// Activation bytes of qlora's own trainer (fp32) for this job: exactly what acts_create
// allocates for ACTS_TRAIN (ACTS_CHECKPOINT with j->gradient_checkpointing), with LoRA
// hiddens of rank j->lora_r when with_lora.
double memory_activations_fp32(const ModelShape *s, const MemJob *j, bool with_lora);

// Bits per parameter of NF4 with fp32 block scales and with double quantization.
double nf4_bits(size_t blocksize, bool double_quant);

#endif
