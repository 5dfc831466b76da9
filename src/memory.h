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

typedef struct {
    char name[32];
    bool llama;             // LLaMA block (q,k,v,o + SwiGLU gate/up/down, untied head)
    double L, C, F, V, P, NH;
} ModelShape;

// Parameter counts of a shape: all, the block linears, and the rest.
double shape_params(const ModelShape *s);
double shape_linear_params(const ModelShape *s);
// Trainable LoRA parameters for rank r on the chosen modules (LLaMA: every linear).
double shape_lora_params(const ModelShape *s, int r, const bool targets[LORA_N_TARGETS]);

// The GPT-2 presets of model_preset ("gpt2" ... "gpt2-xl", "tiny") and "llama-7b",
// "llama-13b", "llama-33b", "llama-65b"; false if unknown.
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
    bool targets[LORA_N_TARGETS];
    bool gradient_checkpointing;
    size_t quant_blocksize;
} MemJob;

// The shape of a GPT-2 config (name left empty).
ModelShape shape_from_config(const GPT2Config *c);
// The row of memory_predict that describes qlora's own trainer for a method: full
// fine-tuning, or LoRA on a base stored as q (QUANT_NONE = the fp32 base of method lora).
MemMethod memory_method(bool full, QuantType q, bool double_quant);

// Predict all methods for shape s and job j into rows[MEM_N_METHODS].
void memory_predict(const ModelShape *s, const MemJob *j, MemRow rows[MEM_N_METHODS]);

// Activation bytes of qlora's own trainer (fp32) for this job: what acts_create allocates.
double memory_activations_fp32(const ModelShape *s, const MemJob *j, bool with_lora);

// Bits per parameter of NF4 with fp32 block scales and with double quantization.
double nf4_bits(size_t blocksize, bool double_quant);

#endif
