// model.c: see model.h and arch.h. The part of the model layer every architecture shares: the
// switch over architectures, the parameter list and gradient indices (from the architecture's
// table), the adapted linear (frozen qlinear + LoRA + dropout) that blocks call, and the
// driver: embedding -> blocks -> final norm -> chunked loss head, and the backward through them.
// B batch, T time, C = n_embd, V vocab, L layers, N = B*T, R = LoRA rank.
#include "model.h"

#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "ds.h"
#include "gemm.h"
#include "ops.h"

// ---- architectures and their parameter tables -------------------------------------------------

const ArchOps *arch_ops(const GPT2Config *c) {
    switch (c->arch) {
    case ARCH_GPT2: return &GPT2_OPS;
    case ARCH_LLAMA: return &LLAMA_OPS;
    case ARCH_QWEN2: return &QWEN2_OPS;
    case ARCH_LLAMA_ATTN_BIAS: return &LLAMA_ATTN_BIAS_OPS;
    }
    CHECK(0 && "unknown architecture");
    return NULL;
}

size_t param_dim(const GPT2Config *c, ParamDim d) {
    switch (d) {
    case DIM_NONE: return 0;
    case DIM_C: return (size_t)c->n_embd;
    case DIM_V: return (size_t)c->vocab_size;
    case DIM_P: return (size_t)c->n_positions;
    }
    CHECK(0 && "unknown dimension");
    return 0;
}

size_t param_floats(const GPT2Config *c, const ParamSpec *ps) {
    CHECK(ps->kind == PARAM_ARRAY);
    return param_dim(c, ps->rows) * (ps->cols == DIM_NONE ? 1 : param_dim(c, ps->cols));
}

float **param_slot(const Model *m, int layer, const ParamSpec *ps) {
    CHECK(ps->kind == PARAM_ARRAY);
    char *base = layer < 0 ? (char *)m : (char *)&m->blocks[layer];
    return (float **)(base + ps->field);
}

void param_block_name(char *buf, size_t size, const ArchOps *ops, int l, const char *suffix) {
    snprintf(buf, size, "%s%d.%s", ops->block_prefix, l, suffix);
}

const char *param_parse_block(const ArchOps *ops, const char *name, int *layer) {
    const size_t n = strlen(ops->block_prefix);
    if (strncmp(name, ops->block_prefix, n) != 0 || name[n] < '0' || name[n] > '9') return NULL;
    char *end;
    const long l = strtol(name + n, &end, 10);
    if (*end != '.' || l > 1 << 20) return NULL;
    *layer = (int)l;
    return end + 1;
}

int param_lin_index(const ArchOps *ops, ParamKind k, int t) {
    for (int i = 0; i < ops->n_params; i++)
        if (ops->params[i].kind == k && ops->params[i].target == t) return i;
    CHECK(k == PARAM_LIN_B && "the block table lacks a linear");
    return -1;
}

bool model_lora_target_known(const char *name, Error *err) {
    static const Arch ARCHS[] = {ARCH_GPT2, ARCH_LLAMA};
    bool t[LORA_N_TARGETS];
    char names[2][200];
    for (int i = 0; i < 2; i++) {
        const GPT2Config c = {.arch = ARCHS[i]};
        const LoraShapes s = model_lora_shapes(&c);
        if (lora_parse_target(&s, name, t, &(Error){0})) return true;
        lora_module_names(&s, names[i], sizeof names[i]);
    }
    return error_set(err, "unknown LoRA target module '%s' (expected all-linear, a GPT-2 linear: %s, "
                          "or a LLaMA-family linear: %s; or a module path such as attn.c_proj)",
                     name, names[0], names[1]);
}

LoraShapes model_lora_shapes(const GPT2Config *cfg) {
    const ArchOps *ops = arch_ops(cfg);
    LoraShapes s = {.n = ops->n_lin, .path = ops->lin_paths, .block_prefix = ops->peft_prefix,
                    .alt_block_prefix = ops->peft_alt_prefix, .fan_in_fan_out = ops->conv1d,
                    .arch = ops->name};
    ops->lin_shapes(cfg, s.in, s.out);
    return s;
}

float *model_grad(const Model *m, const TrainCtx *tc, int layer, int k) {
    if (!tc || !tc->full_grads || k < 0) return NULL;
    const ArchOps *ops = arch_ops(&m->cfg);
    return tc->full_grads[layer < 0 ? k : ops->n_globals + layer * ops->n_params + k];
}

// Append one ModelParam (name, the model's own array p of n floats, decay) to *params.
static void params_add(ModelParam **params, const char *name, float *p, size_t n, bool decay) {
    ModelParam mp = {.p = p, .n = n, .decay = decay};
    snprintf(mp.name, sizeof mp.name, "%s", name);
    arrput(*params, mp);
}

void model_params(const Model *m, ModelParam **params) {
    CHECK(m->quant.type == QUANT_NONE);
    const ArchOps *ops = arch_ops(&m->cfg);
    for (int k = 0; k < ops->n_globals; k++) {
        const ParamSpec *ps = &ops->globals[k];
        params_add(params, ps->name, *param_slot(m, -1, ps), param_floats(&m->cfg, ps), ps->decay);
    }
    for (int l = 0; l < m->cfg.n_layer; l++)
        for (int k = 0; k < ops->n_params; k++) {
            const ParamSpec *ps = &ops->params[k];
            char name[64];
            param_block_name(name, sizeof name, ops, l, ps->name);
            if (ps->kind == PARAM_ARRAY) {
                params_add(params, name, *param_slot(m, l, ps), param_floats(&m->cfg, ps), ps->decay);
            } else {
                QLinear *q = &m->blocks[l].lin[ps->target];
                if (ps->kind == PARAM_LIN_W) params_add(params, name, q->w, q->in * q->out, ps->decay);
                else params_add(params, name, q->bias, q->out, ps->decay);
            }
        }
    if (!m->cfg.tied)  // an untied output layer is a weight like the others (decays)
        params_add(params, "lm_head.weight", m->lm_head, (size_t)m->cfg.vocab_size * (size_t)m->cfg.n_embd, true);
}

void model_set_bf16(Model *m, bool on) {
    m->bf16 = on;
    for (int l = 0; l < m->cfg.n_layer; l++)
        for (int t = 0; t < LORA_N_TARGETS; t++) m->blocks[l].lin[t].bf16 = on;
}

double model_param_count(const GPT2Config *c) {
    const ArchOps *ops = arch_ops(c);
    const LoraShapes s = model_lora_shapes(c);
    double n = c->tied ? 0 : (double)c->vocab_size * c->n_embd;
    for (int k = 0; k < ops->n_globals; k++) n += (double)param_floats(c, &ops->globals[k]);
    for (int k = 0; k < ops->n_params; k++) {
        const ParamSpec *ps = &ops->params[k];
        const size_t t = (size_t)ps->target;
        n += c->n_layer * (ps->kind == PARAM_ARRAY ? (double)param_floats(c, ps)
                           : ps->kind == PARAM_LIN_B ? (double)s.out[t] : (double)s.in[t] * s.out[t]);
    }
    return n;
}

ModelBytes model_bytes(const Model *m) {
    ModelBytes r = {0};
    const ArchOps *ops = arch_ops(&m->cfg);
    for (int k = 0; k < ops->n_globals; k++) {  // 2-D: embeddings; 1-D: the final norm
        const ParamSpec *ps = &ops->globals[k];
        *(ps->cols != DIM_NONE ? &r.embeddings : &r.norms_and_biases) +=
            param_floats(&m->cfg, ps) * sizeof(float);
    }
    if (m->lm_head != m->wte)
        r.embeddings += (size_t)m->cfg.vocab_size * (size_t)m->cfg.n_embd * sizeof(float);
    for (int l = 0; l < m->cfg.n_layer; l++)
        for (int k = 0; k < ops->n_params; k++) {
            const ParamSpec *ps = &ops->params[k];
            const QLinear *q = &m->blocks[l].lin[ps->target];
            if (ps->kind == PARAM_ARRAY) {
                r.norms_and_biases += param_floats(&m->cfg, ps) * sizeof(float);
            } else if (ps->kind == PARAM_LIN_B) {
                r.norms_and_biases += q->out * sizeof(float);
            } else {
                r.linear_weights += qlinear_weight_bytes(q);
                r.quant_constants += qlinear_constant_bytes(q);
            }
        }
    return r;
}

// ---- the adapted linear ----------------------------------------------------------------------

// Dropout on the LoRA branch input: out[i] = keep(i) ? x[i] / (1 - p) : 0, with keep(i) a
// pure function of (seed, i) so the backward regenerates the same mask without storing it.
static inline bool dropout_keep(uint64_t seed, size_t i, float p) {
    uint64_t z = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f) >= p;
}

// out[i] (=, or += with accumulate) dropout(x)[i] for n values; out and x must not alias.
static void dropout_apply(float *out, const float *x, size_t n, float p, uint64_t seed, bool accumulate) {
    const float scale = 1.0f / (1.0f - p);
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float v = dropout_keep(seed, i, p) ? x[i] * scale : 0.0f;
        out[i] = accumulate ? out[i] + v : v;
    }
}

// The mask seed of linear t of block `layer` (of n_lin): distinct per linear, fixed by
// tc->dropout_seed.
static uint64_t dropout_seed(const TrainCtx *tc, int n_lin, int layer, LoraTarget t) {
    return tc->dropout_seed ^ ((uint64_t)(layer * n_lin + (int)t + 1) * 0xD1B54A32D192ED03ull);
}

// True when tc asks for dropout on the LoRA branch.
static bool use_dropout(const TrainCtx *tc) { return tc && tc->lora_dropout > 0.0f; }

void block_linear_forward(const Model *m, const LoraSet *lora, int layer, LoraTarget t, float *y,
                          const float *x, size_t N, float *h, float *tile, float *xd,
                          const TrainCtx *tc, Profile *prof) {
    const QLinear *q = &m->blocks[layer].lin[t];
    PROF_PHASE(prof, matmul_fwd, qlinear_forward(q, y, x, N, tile, prof ? &prof->dequant : NULL));
    const LoraLinear *ll = lora_get(lora, layer, t);
    if (!ll) return;
    const float *in = x;
    if (use_dropout(tc)) {
        dropout_apply(xd, x, N * q->in, tc->lora_dropout,
                      dropout_seed(tc, arch_ops(&m->cfg)->n_lin, layer, t), false);
        in = xd;
    }
    PROF_PHASE(prof, matmul_fwd, lora_forward(ll, lora->r, lora->scaling, y, h, in, N));
}

void block_linear_backward(const Model *m, LoraSet *lora, Acts *a, int layer, LoraTarget t,
                           float *dx, const float *dy, const float *x, size_t N,
                           const TrainCtx *tc) {
    const QLinear *q = &m->blocks[layer].lin[t];
    if (dx) qlinear_backward_input(q, dx, dy, N, a->tile, a->prof ? &a->prof->dequant : NULL);
    if (tc && tc->full_grads) {
        const ArchOps *ops = arch_ops(&m->cfg);
        float *dW = model_grad(m, tc, layer, param_lin_index(ops, PARAM_LIN_W, t));
        float *db = model_grad(m, tc, layer, param_lin_index(ops, PARAM_LIN_B, t));
        matmul_tn(dW, dy, x, q->out, q->in, N, 1.0f, 1.0f, q->out, q->in, q->in);
        if (db) bias_backward(db, dy, N, q->out);
    }
    LoraLinear *ll = lora ? &lora->lin[layer * LORA_N_TARGETS + t] : NULL;
    if (!ll || !ll->A) return;
    const float *h = acts_lora_h(a, layer, t);
    if (!use_dropout(tc)) {
        lora_backward(ll, lora->r, lora->scaling, dx, a->dh, dy, h, x, N);
        return;
    }
    const uint64_t seed = dropout_seed(tc, a->n_lin, layer, t);
    dropout_apply(a->xd, x, N * q->in, tc->lora_dropout, seed, false);
    if (dx) zero_floats(a->dxd, N * q->in);
    lora_backward(ll, lora->r, lora->scaling, dx ? a->dxd : NULL, a->dh, dy, h, a->xd, N);
    if (dx) dropout_apply(dx, a->dxd, N * q->in, tc->lora_dropout, seed, true);
}

// ---- the loss head ---------------------------------------------------------------------------

void head_forward(const Model *m, float *logits, const float *x, size_t n) {
    const size_t C = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.vocab_size;
    if (m->bf16 && n > GEMM_GEMV_ROWS)
        matmul_bf16(true, logits, x, m->lm_head, n, V, C, 1.0f, 0.0f, C, C, V);
    else
        matmul_nt(logits, x, m->lm_head, n, V, C, 1.0f, 0.0f, C, C, V);
}

// dx (n,C) = dlogits (n,V) lm_head, with head_forward's precision rule. Overwrites dx.
static void head_backward_input(const Model *m, float *dx, const float *dlogits, size_t n) {
    const size_t C = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.vocab_size;
    if (m->bf16 && n > GEMM_GEMV_ROWS)
        matmul_bf16(false, dx, dlogits, m->lm_head, n, C, V, 1.0f, 0.0f, V, C, C);
    else
        matmul_nn(dx, dlogits, m->lm_head, n, C, V, 1.0f, 0.0f, V, C, C);
}

// Summed cross-entropy of a->lnf (N,C) against targets, a chunk of model_logit_rows rows of
// logits at a time; each chunk's logits are copied to logits_out (N,V) when non-NULL.
static double head_loss(const Model *m, Acts *a, const int *targets, size_t N, size_t *n_valid,
                        float *logits_out) {
    const size_t C = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.vocab_size;
    const size_t rows = model_logit_rows(a->mode);
    double loss = 0.0;
    for (size_t r0 = 0; r0 < N; r0 += rows) {
        const size_t n = N - r0 < rows ? N - r0 : rows;
        head_forward(m, a->logits, a->lnf + r0 * C, n);
        if (logits_out) memcpy(logits_out + r0 * V, a->logits, n * V * sizeof(float));
        if (targets) loss += softmax_xent(a->logits, targets + r0, n, V, 0.0f, n_valid);
    }
    return loss;
}

// The loss head and its backward, a chunk of rows at a time: logits, turned into
// loss_scale * dlogits in place, then dlnf (N,C) = dlogits lm_head (overwritten) and, with full
// gradients, d lm_head += dlogits^T lnf. Returns the summed (unscaled) loss.
static double head_loss_backward(const Model *m, Acts *a, const int *targets, size_t N,
                                 float loss_scale, const TrainCtx *tc, float *dlnf,
                                 size_t *n_valid) {
    const size_t C = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.vocab_size;
    const ArchOps *ops = arch_ops(&m->cfg);
    float *dhead = m->cfg.tied ? model_grad(m, tc, -1, ops->head_param)  // lm_head: model_params' last
                 : tc && tc->full_grads ? tc->full_grads[ops->n_globals + m->cfg.n_layer * ops->n_params]
                                        : NULL;
    const size_t rows = model_logit_rows(a->mode);
    double loss = 0.0;
    for (size_t r0 = 0; r0 < N; r0 += rows) {
        const size_t n = N - r0 < rows ? N - r0 : rows;
        head_forward(m, a->logits, a->lnf + r0 * C, n);
        loss += softmax_xent(a->logits, targets + r0, n, V, loss_scale, n_valid);
        head_backward_input(m, dlnf + r0 * C, a->logits, n);
        if (dhead) matmul_tn(dhead, a->logits, a->lnf + r0 * C, V, C, n, 1.0f, 1.0f, V, C, C);
    }
    return loss;
}

// ---- forward and backward over the layers ----------------------------------------------------

// True when pos (B*T) numbers each row's tokens as sequences restarting at 0: every entry is 0
// or its left neighbour's + 1 (so pos[b*T + t] <= t, and below n_positions when T is).
static bool positions_valid(const int *pos, size_t B, size_t T) {
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < T; t++) {
            const int p = pos[b * T + t];
            if (!(p == 0 || (t > 0 && p == pos[b * T + t - 1] + 1))) return false;
        }
    return true;
}

// Embedding, every block and the final norm: a->lnf receives the final hidden states (N,C).
static void forward_layers(const Model *m, const LoraSet *lora, Acts *a, const int *tokens,
                           size_t B, size_t T, const TrainCtx *tc) {
    const GPT2Config *c = &m->cfg;
    const ArchOps *ops = arch_ops(c);
    CHECK(B <= a->B && T <= a->T && T <= (size_t)c->n_positions);
    CHECK(!a->pos || positions_valid(a->pos, B, T));
    ops->embed_forward(m, a->resid[0], tokens, B, T, 0, a->pos);
    for (int l = 0; l < c->n_layer; l++) ops->block_forward(m, lora, a, l, B, T, tc);
    ops->norm_forward(m, a->lnf, a->lnf_mean, a->lnf_rstd, a->resid[c->n_layer], B * T);
}

// forward_layers, its time not spent in a nested phase counted as other_fwd.
static void forward_body(const Model *m, const LoraSet *lora, Acts *a, const int *tokens,
                         size_t B, size_t T, const TrainCtx *tc) {
    PROF_PHASE(a->prof, other_fwd, forward_layers(m, lora, a, tokens, B, T, tc));
}

double model_forward(const Model *m, const LoraSet *lora, Acts *a, const int *tokens,
                     const int *targets, size_t B, size_t T, size_t *n_valid, float *logits_out) {
    forward_body(m, lora, a, tokens, B, T, NULL);
    if (!targets && !logits_out) return 0.0;
    return head_loss(m, a, targets, B * T, n_valid, logits_out);
}

// The backward after forward_body: loss head, final norm, the blocks from last to first
// (recomputing each block's activations first under ACTS_CHECKPOINT), embeddings. Returns the
// summed loss. a->prof must be detached (recomputation is backward time).
static double backward_layers(const Model *m, LoraSet *lora, Acts *a, const int *tokens,
                              const int *targets, size_t B, size_t T, float loss_scale,
                              const TrainCtx *tc, size_t *n_valid) {
    const ArchOps *ops = arch_ops(&m->cfg);
    const size_t N = B * T;
    const int L = m->cfg.n_layer;
    float *dlnf = a->dln;
    const double loss = head_loss_backward(m, a, targets, N, loss_scale, tc, dlnf, n_valid);
    zero_floats(a->dresid, N * (size_t)m->cfg.n_embd);
    ops->norm_backward(m, tc, a->dresid, dlnf, a->resid[L], a->lnf_mean, a->lnf_rstd, N);
    const bool full = tc && tc->full_grads;
    for (int l = L - 1; l >= 0; l--) {
        // the last block's activations are still there from the forward
        if (a->mode == ACTS_CHECKPOINT && l < L - 1) ops->block_forward(m, lora, a, l, B, T, tc);
        // block 0's input gradient only feeds the embeddings, which only `full` trains
        ops->block_backward(m, lora, a, l, B, T, tc, l > 0 || full);
    }
    if (full) ops->embed_backward(m, tc, a->dresid, tokens, B, T, a->pos);
    return loss;
}

double model_forward_backward(const Model *m, LoraSet *lora, Acts *a, const int *tokens,
                              const int *targets, size_t B, size_t T, float loss_scale,
                              const TrainCtx *tc, size_t *n_valid) {
    CHECK(a->mode != ACTS_INFER && loss_scale > 0.0f);
    CHECK(!lora || lora->grads);
    forward_body(m, lora, a, tokens, B, T, tc);
    Profile *prof = a->prof;
    a->prof = NULL;  // the backward's recomputation and dequantization count as backward
    double loss = 0.0;
    PROF_PHASE(prof, backward,
               loss = backward_layers(m, lora, a, tokens, targets, B, T, loss_scale, tc, n_valid));
    a->prof = prof;
    return loss;
}
