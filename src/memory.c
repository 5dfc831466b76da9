// memory.c: see memory.h. B batch, T time, C width, F MLP width, V vocab, P positions,
// NH heads, L layers, N = B*T, R = LoRA rank.
#include "memory.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "qlinear.h"
#include "quant.h"


double shape_linear_params(const ModelShape *s) {
    if (s->llama) return s->L * (4 * s->C * s->C + 3 * s->C * s->F);
    return s->L * (4 * s->C * s->C + 2 * s->C * s->F);
}

double shape_params(const ModelShape *s) {
    if (s->llama)  // embed + untied head + RMSNorm weights
        return shape_linear_params(s) + 2 * s->V * s->C + s->L * 2 * s->C + s->C;
    // wte (tied head) + wpe + per block 2 LayerNorms and 4 biases + final LayerNorm
    return shape_linear_params(s) + s->V * s->C + s->P * s->C +
           s->L * (4 * s->C + 3 * s->C + s->C + s->F + s->C) + 2 * s->C;
}

double shape_lora_params(const ModelShape *s, int r, const bool t[LORA_N_TARGETS]) {
    const double C = s->C, F = s->F;
    if (s->llama) return s->L * r * (4 * (C + C) + 2 * (C + F) + (F + C));
    double per = 0;
    if (t[LORA_QKV]) per += C + 3 * C;
    if (t[LORA_ATTN_PROJ]) per += C + C;
    if (t[LORA_FC]) per += C + F;
    if (t[LORA_MLP_PROJ]) per += F + C;
    return s->L * r * per;
}

bool shape_preset(const char *name, ModelShape *s) {
    GPT2Config c;
    if (model_preset(name, &c)) {  // the GPT-2 sizes live once, in model.c
        *s = shape_from_config(&c);
        snprintf(s->name, sizeof s->name, "%s", name);
        return true;
    }
    // LLaMA-1 shapes as published (Touvron et al. 2023, table 2): d_model, layers, heads;
    // SwiGLU width 2/3 * 4d rounded to a multiple of 256; vocab 32000
    static const struct { const char *name; double L, C, F, V, P, NH; } LLAMA[] = {
        {"llama-7b", 32, 4096, 11008, 32000, 2048, 32},
        {"llama-13b", 40, 5120, 13824, 32000, 2048, 40},
        {"llama-33b", 60, 6656, 17920, 32000, 2048, 52},
        {"llama-65b", 80, 8192, 22016, 32000, 2048, 64},
    };
    for (size_t i = 0; i < sizeof LLAMA / sizeof LLAMA[0]; i++)
        if (strcmp(name, LLAMA[i].name) == 0) {
            *s = (ModelShape){.llama = true, .L = LLAMA[i].L, .C = LLAMA[i].C, .F = LLAMA[i].F, .V = LLAMA[i].V,
                              .P = LLAMA[i].P, .NH = LLAMA[i].NH};
            snprintf(s->name, sizeof s->name, "%s", name);
            return true;
        }
    return false;
}

ModelShape shape_from_config(const GPT2Config *c) {
    return (ModelShape){.L = c->n_layer, .C = c->n_embd, .F = c->n_inner, .V = c->vocab_size,
                        .P = c->n_positions, .NH = c->n_head};
}

MemMethod memory_method(bool full, QuantType q, bool double_quant) {
    if (full) return MEM_FULL_FP32;
    switch (q) {
    case QUANT_NONE: return MEM_LORA_FP32;
    case QUANT_INT8: return MEM_QLORA_INT8;
    case QUANT_FP4: return MEM_QLORA_FP4;
    default: return double_quant ? MEM_QLORA_NF4_DQ : MEM_QLORA_NF4;
    }
}

double nf4_bits(size_t blocksize, bool dq) {
    const double bs = (double)blocksize;
    return dq ? 4.0 + 8.0 / bs + 32.0 / (bs * QUANT_DQ_BLOCK) : 4.0 + 32.0 / bs;
}

// qlora's fp32 activation and gradient buffers for one (B, T), from the shapes: per layer
// the block's saved tensors (or only the block input with gradient checkpointing), plus
// one layer's backward buffers, the dequantization tile and a chunk of logits.
double memory_activations_fp32(const ModelShape *s, const MemJob *j, bool with_lora) {
    const double B = (double)j->B, T = (double)j->T, N = B * T, C = s->C, F = s->F;
    const double L = s->L, att = B * s->NH * T * T, R = with_lora ? j->lora_r : 0;
    // resid_mid, ln1, atty, ln2 (4NC) + qkv (3NC) + 2 LayerNorm stats pairs (4N) +
    // scores (att) + fc pre/post GELU (2NF) + four LoRA hiddens (4NR)
    const double layer = 7 * N * C + 4 * N + att + 2 * N * F + 4 * N * R;
    // block inputs (L + 1 residual streams) are always kept; the rest per layer, or for one
    // layer at a time with gradient checkpointing
    const double saved = (L + 1) * N * C + (j->gradient_checkpointing ? layer : L * layer);
    const double rows = (double)model_logit_rows(j->gradient_checkpointing ? ACTS_CHECKPOINT : ACTS_TRAIN);
    const double head = N * C + 2 * N + N * C + (double)QLINEAR_TILE_FLOATS + rows * s->V;  // ln_f, tmp
    const double grads = 6 * N * C + att + 2 * N * F + (with_lora ? N * R + 2 * N * F : 0);
    return 4.0 * (saved + head + grads);
}

void memory_predict(const ModelShape *s, const MemJob *j, MemRow rows[MEM_N_METHODS]) {
    const double n_all = shape_params(s), n_lin = shape_linear_params(s), n_other = n_all - n_lin;
    const double n_lora = shape_lora_params(s, j->lora_r, j->targets);
    const double bs = (double)j->quant_blocksize, n_blocks = n_lin / bs;
    const double act32_full = memory_activations_fp32(s, j, false);
    const double act32_lora = memory_activations_fp32(s, j, true);
    // quantized bases: linears quantized, everything else kept in fp32 (as qlora does)
    struct { const char *name; double lin_bytes, consts; const char *bpp; } q[4] = {
        {"qlora int8", n_lin, n_blocks * 4, "base linears 1 B + one f32 scale per block; rest 4 B"},
        {"qlora fp4", n_lin / 2, n_blocks * 4, "base linears 0.5 B + one f32 scale per block; rest 4 B"},
        {"qlora nf4", n_lin / 2, n_blocks * 4, "base linears 0.5 B + one f32 absmax per block (4.5 bits); rest 4 B"},
        {"qlora nf4+dq", n_lin / 2, n_blocks + n_blocks / QUANT_DQ_BLOCK * 4 + s->L * (s->llama ? 7 : 4) * 4,
         "base linears 0.5 B + 8-bit absmax per block + f32 per 256 blocks (4.127 bits); rest 4 B"},
    };
    rows[MEM_FULL_FP32] = (MemRow){"full fp32", 0, 0, 4 * n_all, 4 * n_all, 8 * n_all, act32_full, 0,
                                   "4 B weights + 4 B gradients + 8 B AdamW moments = 16 B per parameter"};
    rows[MEM_FULL_MIXED16] = (MemRow){"full 16-bit", 0, 0, 2 * n_all, 2 * n_all, 8 * n_all, act32_full / 2, 0,
                                      "2 B weights + 2 B gradients + 8 B fp32 AdamW moments = 12 B per parameter "
                                      "(no fp32 master copy; 16-bit activations)"};
    rows[MEM_LORA_FP32] = (MemRow){"lora fp32 base", 4 * n_all, 0, 4 * n_lora, 4 * n_lora, 8 * n_lora, act32_lora, 0,
                                   "frozen 4 B per parameter; LoRA 4 + 4 + 8 B per trainable"};
    rows[MEM_LORA_16] = (MemRow){"lora 16-bit base", 2 * n_all, 0, 4 * n_lora, 4 * n_lora, 8 * n_lora, act32_lora / 2, 0,
                                 "frozen 2 B per parameter; LoRA 4 + 4 + 8 B per trainable; 16-bit activations"};
    for (int k = 0; k < 4; k++)
        rows[MEM_QLORA_INT8 + k] = (MemRow){q[k].name, q[k].lin_bytes + 4 * n_other, q[k].consts, 4 * n_lora,
                                            4 * n_lora, 8 * n_lora, act32_lora, 0, q[k].bpp};
    for (int m = 0; m < MEM_N_METHODS; m++) {
        MemRow *r = &rows[m];
        r->total = r->weights + r->quant_constants + r->trainable + r->gradients + r->optimizer + r->activations;
    }
}
