// memory.c: see memory.h. B batch, T time, C width, F MLP width, V vocab, P positions,
// NH query heads, NKV key/value heads, HS head dim, CQ = NH*HS, CKV = NKV*HS, L layers,
// N = B*T, R = LoRA rank.
#include "memory.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "qlinear.h"
#include "quant.h"

// Whether linear t (LoraTarget order) of architecture a has a bias (docs/llama.md 1, "Biases
// by family"): all four of GPT-2's; qwen2's q, k, v; llama with attention_bias q, k, v, o.
static bool lin_has_bias(Arch a, int t) {
    switch (a) {
    case ARCH_GPT2: return true;
    case ARCH_QWEN2: return t <= 2;
    case ARCH_LLAMA_ATTN_BIAS: return t <= 3;
    default: return false;
    }
}

ModelShape shape_from_config(const GPT2Config *c) {
    const LoraShapes ls = model_lora_shapes(c);  // the linears' [in, out], as the model has them
    ModelShape s = {.cfg = *c, .llama = c->arch != ARCH_GPT2, .tied = c->tied, .L = c->n_layer,
                    .C = c->n_embd, .F = c->n_inner, .V = c->vocab_size, .P = c->n_positions,
                    .NH = c->n_head, .NKV = c->n_kv_head, .HS = c->head_dim, .n_lin = ls.n};
    for (int t = 0; t < ls.n; t++) {
        s.lin_in[t] = (double)ls.in[t];
        s.lin_out[t] = (double)ls.out[t];
        s.lin_bias[t] = lin_has_bias(c->arch, t);
    }
    return s;
}

double shape_linear_params(const ModelShape *s) {
    double per = 0;
    for (int t = 0; t < s->n_lin; t++) per += s->lin_in[t] * s->lin_out[t];
    return s->L * per;
}

double shape_params(const ModelShape *s) {
    // per block: norm weights (GPT-2's LayerNorms also have biases) and the linears' biases
    double per = s->llama ? 2 * s->C : 4 * s->C;
    for (int t = 0; t < s->n_lin; t++) per += s->lin_bias[t] ? s->lin_out[t] : 0;
    // token embedding, an untied head, GPT-2's position embedding, the final norm
    const double embed = s->V * s->C * (s->tied ? 1 : 2) + (s->llama ? 0 : s->P * s->C);
    return shape_linear_params(s) + s->L * per + embed + (s->llama ? s->C : 2 * s->C);
}

double shape_lora_params(const ModelShape *s, int r, const bool t[LORA_N_TARGETS]) {
    double per = 0;  // A [r, in] + B [out, r] on each adapted linear
    for (int k = 0; k < s->n_lin; k++) per += t[k] ? s->lin_in[k] + s->lin_out[k] : 0;
    return s->L * r * per;
}

bool shape_preset(const char *name, ModelShape *s) {
    GPT2Config c;
    if (!model_preset(name, &c)) {  // the real models' sizes live once, in model_io.c
        // LLaMA-1 shapes as published (Touvron et al. 2023, table 2): d_model, layers, heads;
        // SwiGLU width 2/3 * 4d rounded to a multiple of 256; vocab 32000; multi-head
        // attention, untied head, no biases
        static const struct { const char *name; int L, C, F, NH; } LLAMA[] = {
            {"llama-7b", 32, 4096, 11008, 32},
            {"llama-13b", 40, 5120, 13824, 40},
            {"llama-33b", 60, 6656, 17920, 52},
            {"llama-65b", 80, 8192, 22016, 64},
        };
        const size_t n = sizeof LLAMA / sizeof LLAMA[0];
        size_t i = 0;
        while (i < n && strcmp(name, LLAMA[i].name) != 0) i++;
        if (i == n) return false;
        c = (GPT2Config){.arch = ARCH_LLAMA, .n_layer = LLAMA[i].L, .n_embd = LLAMA[i].C,
                         .n_inner = LLAMA[i].F, .n_head = LLAMA[i].NH, .n_kv_head = LLAMA[i].NH,
                         .head_dim = LLAMA[i].C / LLAMA[i].NH, .vocab_size = 32000,
                         .n_positions = 2048, .eps = 1e-6f, .rope_theta = 10000, .tied = false,
                         .bos_id = 1, .eos_id = 2};
    }
    *s = shape_from_config(&c);
    snprintf(s->name, sizeof s->name, "%s", name);
    return true;
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

// Bytes of the block linears stored in a quantized format of `bits` per code (8 or 4) in
// blocks of bs values: *codes, and *consts the quantization constants (an f32 scale per
// block, or with dq an 8-bit code per block + an f32 per 256 blocks + one f32 offset). Each
// linear is one tensor of in*out values, so its counts round up on their own (quant.c).
static void quantized_bytes(const ModelShape *s, int bits, double bs, bool dq, double *codes, double *consts) {
    *codes = *consts = 0;
    for (int t = 0; t < s->n_lin; t++) {
        const double n = s->lin_in[t] * s->lin_out[t], blocks = ceil(n / bs);
        *codes += ceil(n * bits / 8);
        *consts += dq ? blocks + 4 * ceil(blocks / QUANT_DQ_BLOCK) + 4 : 4 * blocks;
    }
    *codes *= s->L;
    *consts *= s->L;
}

// Floats of one buffer of n floats in the activation allocation: acts.c starts every buffer
// on a 64-byte boundary, i.e. rounds each up to a multiple of 16 floats.
static double buf(double n) { return ceil(n / 16) * 16; }

// Floats of the block's own buffers for N = B*T rows (docs/memory.md): *layer those a layer's
// forward keeps for its backward, *grad the gradient scratch of the block being differentiated.
static void block_buffers(const ModelShape *s, double B, double T, double *layer, double *grad) {
    const double N = B * T, C = s->C, F = s->F, att = buf(B * s->NH * T * T);
    if (!s->llama) {
        // resid_mid, ln1, atty, ln2; two LayerNorms' mean and rstd; qkv; scores; fc before
        // and after GELU
        *layer = 4 * buf(N * C) + 4 * buf(N) + buf(N * 3 * C) + att + 2 * buf(N * F);
        // datty, dqkv, dscores, d fc after and before GELU
        *grad = buf(N * C) + buf(N * 3 * C) + att + 2 * buf(N * F);
        return;
    }
    const double CQ = s->NH * s->HS, CKV = s->NKV * s->HS;
    // ln1, resid_mid, ln2; two RMSNorm rstd; q, atty; k, v; scores; gate, up, silu(gate)*up
    *layer = 3 * buf(N * C) + 2 * buf(N) + 2 * buf(N * CQ) + 2 * buf(N * CKV) + att + 3 * buf(N * F);
    // datty, dq; dk, dv; dscores; dact, dgate, dup
    *grad = 2 * buf(N * CQ) + 2 * buf(N * CKV) + att + 3 * buf(N * F);
}

// qlora's fp32 activation and gradient buffers for one (B, T), from the shapes: the L + 1
// block inputs, per layer the block's saved tensors and LoRA hiddens (those of one layer
// with gradient checkpointing), the final norm, the dequantization tile, a chunk of logits,
// and the backward's one-layer scratch.
double memory_activations_fp32(const ModelShape *s, const MemJob *j, bool with_lora) {
    const double B = (double)j->B, T = (double)j->T, N = B * T, C = s->C, L = s->L;
    const double R = with_lora ? j->lora_r : 0;
    double layer, grad, in_max = 0;  // in_max: the widest linear input (LoRA dropout's scratch)
    block_buffers(s, B, T, &layer, &grad);
    for (int t = 0; t < s->n_lin; t++) in_max = fmax(in_max, s->lin_in[t]);
    const double lora_h = with_lora ? s->n_lin * buf(N * R) : 0;  // every linear's, targeted or not
    const double saved = (L + 1) * buf(N * C) + (j->gradient_checkpointing ? 1 : L) * (layer + lora_h);
    const double rows = (double)model_logit_rows(j->gradient_checkpointing ? ACTS_CHECKPOINT : ACTS_TRAIN);
    // final norm's output and statistics, a sublayer's output, the tile, the logits
    const double head = 2 * buf(N * C) + 2 * buf(N) + buf(QLINEAR_TILE_FLOATS) + buf(rows * s->V);
    // d resid, d norm output; with adapters LoRA's dh and dropout's input and its gradient
    const double grads = 2 * buf(N * C) + grad + (with_lora ? buf(N * R) + 2 * buf(N * in_max) : 0);
    return 4.0 * (saved + head + grads);
}

void memory_predict(const ModelShape *s, const MemJob *j, MemRow rows[MEM_N_METHODS]) {
    const double n_all = shape_params(s), n_lin = shape_linear_params(s), n_other = n_all - n_lin;
    const double n_lora = shape_lora_params(s, j->lora_r, j->targets), bs = (double)j->quant_blocksize;
    const double act32_full = memory_activations_fp32(s, j, false);
    const double act32_lora = memory_activations_fp32(s, j, true);
    // quantized bases: linears quantized, everything else kept in fp32 (as qlora does)
    typedef struct { const char *name; int bits; bool dq; const char *bpp; } QuantRow;
    const QuantRow fp4 = {"qlora fp4", 4, false, "base linears 0.5 B + one f32 scale per block; rest 4 B"};
    const QuantRow fp4_dq = {"qlora fp4+dq", 4, true,
                             "base linears 0.5 B + 8-bit scale per block + f32 per 256 blocks; rest 4 B"};
    const QuantRow q[4] = {
        {"qlora int8", 8, false, "base linears 1 B + one f32 scale per block; rest 4 B"},
        j->fp4_double_quant ? fp4_dq : fp4,
        {"qlora nf4", 4, false, "base linears 0.5 B + one f32 absmax per block (4.5 bits); rest 4 B"},
        {"qlora nf4+dq", 4, true, "base linears 0.5 B + 8-bit absmax per block + f32 per 256 blocks (4.127 bits); rest 4 B"},
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
    for (int k = 0; k < 4; k++) {
        double codes, consts;
        quantized_bytes(s, q[k].bits, bs, q[k].dq, &codes, &consts);
        rows[MEM_QLORA_INT8 + k] = (MemRow){q[k].name, codes + 4 * n_other, consts, 4 * n_lora,
                                            4 * n_lora, 8 * n_lora, act32_lora, 0, q[k].bpp};
    }
    for (int m = 0; m < MEM_N_METHODS; m++) {
        MemRow *r = &rows[m];
        r->total = r->weights + r->quant_constants + r->trainable + r->gradients + r->optimizer + r->activations;
    }
}
