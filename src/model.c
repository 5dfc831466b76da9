// model.c: see model.h. B batch, T time, C = n_embd, NH heads, HS = C/NH, F = n_inner,
// V vocab, L layers, P = n_positions, N = B*T.
#include "model.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "gemm.h"
#include "ops.h"

LoraShapes model_lora_shapes(const GPT2Config *cfg) {
    const size_t C = (size_t)cfg->n_embd, F = (size_t)cfg->n_inner;
    LoraShapes s = {.in = {C, C, C, F}, .out = {3 * C, C, F, C}};
    return s;
}

void model_set_bf16(Model *m, bool on) {
    m->bf16 = on;
    for (int l = 0; l < m->cfg.n_layer; l++)
        for (int t = 0; t < LORA_N_TARGETS; t++) m->blocks[l].lin[t].bf16 = on;
}

// logits (n,V) = x (n,C) lm_head^T, in bf16 when the model computes its frozen weights so
// (products of a row or two stay fp32, as in qlinear.c). Overwrites logits.
static void head_forward(const Model *m, float *logits, const float *x, size_t n) {
    const size_t C = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.vocab_size;
    if (m->bf16 && n > GEMM_GEMV_ROWS)
        matmul_bf16(true, logits, x, m->lm_head, n, V, C, 1.0f, 0.0f, C, C, V);
    else
        matmul_nt(logits, x, m->lm_head, n, V, C, 1.0f, 0.0f, C, C, V);
}

// dx (n,C) = dlogits (n,V) lm_head, the same precision rule. Overwrites dx.
static void head_backward_input(const Model *m, float *dx, const float *dlogits, size_t n) {
    const size_t C = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.vocab_size;
    if (m->bf16 && n > GEMM_GEMV_ROWS)
        matmul_bf16(false, dx, dlogits, m->lm_head, n, C, V, 1.0f, 0.0f, V, C, C);
    else
        matmul_nn(dx, dlogits, m->lm_head, n, C, V, 1.0f, 0.0f, V, C, C);
}

ModelBytes model_bytes(const Model *m) {
    ModelBytes r = {0};
    const size_t C = (size_t)m->cfg.n_embd;
    r.embeddings = ((size_t)m->cfg.vocab_size + (size_t)m->cfg.n_positions) * C * sizeof(float);
    if (m->lm_head != m->wte) r.embeddings += (size_t)m->cfg.vocab_size * C * sizeof(float);
    r.norms_and_biases = 2 * C * sizeof(float);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        r.norms_and_biases += 4 * C * sizeof(float);
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const QLinear *q = &m->blocks[l].lin[t];
            r.linear_weights += qlinear_weight_bytes(q);
            r.quant_constants += qlinear_constant_bytes(q);
            r.norms_and_biases += q->out * sizeof(float);
        }
    }
    return r;
}

// ---- activations -----------------------------------------------------------------------------

struct Acts {
    size_t B, T;
    ActsMode mode;
    int L;
    float *mem;
    size_t n_floats;
    // per layer ([L], or [L+1] for resid); shared between layers unless ACTS_TRAIN
    float **resid, **resid_mid, **ln1, **ln1_mean, **ln1_rstd, **qkv, **att, **atty;
    float **ln2, **ln2_mean, **ln2_rstd, **fch, **fch_gelu;
    float **lora_h;  // [L * LORA_N_TARGETS], (r, N) (lora.h); unused without adapters
    float *lnf, *lnf_mean, *lnf_rstd, *tmp, *tile, *logits;
    // training only: gradients of one layer at a time and dropout scratch
    float *dresid, *dln, *datty, *dqkv, *datt, *dfch_gelu, *dfch, *dh, *xd, *dxd;
    Profile *prof;  // optional phase timing
};

void acts_set_profile(Acts *a, Profile *p) { a->prof = p; }

// The single list of activation buffers: counting and carving both walk it, so the
// allocation and the pointers (and acts_bytes) cannot disagree.
typedef struct {
    float **slot;   // `count` pointers to set
    size_t count;
    size_t floats;  // size of each buffer
    bool shared;    // pointer k uses buffer k % period instead of its own
    size_t period;  // distinct buffers when shared (0 means 1): the LoRA hiddens of one
                    // block's four linears must not share
} PlanItem;

// Returns the floats needed; with base, also sets every pointer.
static size_t plan_walk(const PlanItem *items, size_t n_items, float *base) {
    size_t off = 0;
    for (size_t i = 0; i < n_items; i++) {
        const PlanItem *it = &items[i];
        const size_t stride = (it->floats + 15) & ~(size_t)15;  // 64-byte aligned buffers
        const size_t period = it->period ? it->period : 1;
        const size_t n_bufs = !it->shared ? it->count : it->count < period ? it->count : period;
        for (size_t k = 0; k < it->count; k++)
            if (base) it->slot[k] = base + off + (it->shared ? k % period : k) * stride;
        off += n_bufs * stride;
    }
    return off;
}

size_t model_logit_rows(ActsMode mode) { return mode == ACTS_TRAIN ? 512 : 256; }

Acts *acts_create(const Model *m, const LoraSet *lora, size_t B, size_t T, ActsMode mode) {
    Acts *a = xcalloc(1, sizeof *a);
    const size_t L = (size_t)m->cfg.n_layer, C = (size_t)m->cfg.n_embd, F = (size_t)m->cfg.n_inner;
    const size_t NH = (size_t)m->cfg.n_head, V = (size_t)m->cfg.vocab_size, N = B * T;
    const size_t R = lora ? (size_t)lora->r : 0;
    a->B = B;
    a->T = T;
    a->mode = mode;
    a->L = (int)L;
    float ***lists[] = {&a->resid, &a->resid_mid, &a->ln1, &a->ln1_mean, &a->ln1_rstd, &a->qkv,
                        &a->att, &a->atty, &a->ln2, &a->ln2_mean, &a->ln2_rstd, &a->fch,
                        &a->fch_gelu, &a->lora_h};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        *lists[i] = xcalloc(L * LORA_N_TARGETS + 1, sizeof(float *));
    const bool sh = mode != ACTS_TRAIN;             // per-layer buffers shared?
    const bool keep_resid = mode != ACTS_INFER;     // block inputs kept per layer?
    const size_t g = mode == ACTS_INFER ? 0 : 1;    // gradient buffers present?
    PlanItem items[] = {
        {a->resid, L + 1, N * C, !keep_resid, 0}, {a->resid_mid, L, N * C, sh, 0},
        {a->ln1, L, N * C, sh, 0},            {a->ln1_mean, L, N, sh, 0},
        {a->ln1_rstd, L, N, sh, 0},           {a->qkv, L, N * 3 * C, sh, 0},
        {a->att, L, B * NH * T * T, sh, 0},   {a->atty, L, N * C, sh, 0},
        {a->ln2, L, N * C, sh, 0},            {a->ln2_mean, L, N, sh, 0},
        {a->ln2_rstd, L, N, sh, 0},           {a->fch, L, N * F, sh, 0},
        {a->fch_gelu, L, N * F, sh, 0},
        {a->lora_h, lora ? L * LORA_N_TARGETS : 0, N * R, sh, LORA_N_TARGETS},
        {&a->lnf, 1, N * C, false, 0},        {&a->lnf_mean, 1, N, false, 0},
        {&a->lnf_rstd, 1, N, false, 0},       {&a->tmp, 1, N * C, false, 0},
        {&a->tile, 1, QLINEAR_TILE_FLOATS, false, 0},
        {&a->logits, 1, model_logit_rows(mode) * V, false, 0},
        {&a->dresid, g, N * C, false, 0},     {&a->dln, g, N * C, false, 0},
        {&a->datty, g, N * C, false, 0},      {&a->dqkv, g, N * 3 * C, false, 0},
        {&a->datt, g, B * NH * T * T, false, 0},
        {&a->dfch_gelu, g, N * F, false, 0},  {&a->dfch, g, N * F, false, 0},
        {&a->dh, g && lora ? 1 : 0, N * R, false, 0},
        {&a->xd, g && lora ? 1 : 0, N * F, false, 0},
        {&a->dxd, g && lora ? 1 : 0, N * F, false, 0},
    };
    const size_t n_items = sizeof items / sizeof items[0];
    a->n_floats = plan_walk(items, n_items, NULL);
    a->mem = xmalloc_aligned(a->n_floats * sizeof(float));
    plan_walk(items, n_items, a->mem);
    return a;
}

void acts_free(Acts *a) {
    if (!a) return;
    float **lists[] = {a->resid, a->resid_mid, a->ln1, a->ln1_mean, a->ln1_rstd, a->qkv,
                       a->att, a->atty, a->ln2, a->ln2_mean, a->ln2_rstd, a->fch,
                       a->fch_gelu, a->lora_h};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) free(lists[i]);
    free(a->mem);
    free(a);
}

size_t acts_bytes(const Acts *a) { return a->n_floats * sizeof(float); }

// ---- forward ---------------------------------------------------------------------------------

// Dropout on the LoRA branch input: out[i] = keep(i) ? x[i] / (1 - p) : 0, with keep(i) a
// pure function of (seed, i) so the backward regenerates the same mask without storing it.
static inline bool dropout_keep(uint64_t seed, size_t i, float p) {
    uint64_t z = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f) >= p;
}

static void dropout_apply(float *out, const float *x, size_t n, float p, uint64_t seed, bool accumulate) {
    const float scale = 1.0f / (1.0f - p);
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float v = dropout_keep(seed, i, p) ? x[i] * scale : 0.0f;
        out[i] = accumulate ? out[i] + v : v;
    }
}

static uint64_t dropout_seed(const TrainCtx *tc, int layer, LoraTarget t) {
    return tc->dropout_seed ^ ((uint64_t)(layer * LORA_N_TARGETS + (int)t + 1) * 0xD1B54A32D192ED03ull);
}

static bool use_dropout(const TrainCtx *tc) { return tc && tc->lora_dropout > 0.0f; }

// y (N,out) = base(x) [+ LoRA(dropout(x))]; h receives the LoRA hidden (N,r) when adapted.
// tile: QLINEAR_TILE_FLOATS scratch; xd: (N,in) scratch, needed only with dropout.
static void linear_forward(const Model *m, const LoraSet *lora, int layer, LoraTarget t,
                           float *y, const float *x, size_t N, float *h, float *tile, float *xd,
                           const TrainCtx *tc, Profile *prof) {
    const QLinear *q = &m->blocks[layer].lin[t];
    double t0 = prof ? time_now() : 0, deq0 = prof ? prof->dequant : 0;
    qlinear_forward(q, y, x, N, tile, prof ? &prof->dequant : NULL);
    if (prof) prof->matmul_fwd += time_now() - t0 - (prof->dequant - deq0);
    const LoraLinear *ll = lora_get(lora, layer, t);
    if (!ll) return;
    const float *in = x;
    if (use_dropout(tc)) {
        dropout_apply(xd, x, N * q->in, tc->lora_dropout, dropout_seed(tc, layer, t), false);
        in = xd;
    }
    t0 = prof ? time_now() : 0;
    lora_forward(ll, lora->r, lora->scaling, y, h, in, N);
    if (prof) prof->matmul_fwd += time_now() - t0;
}

// out[i] = a[i] + b[i]; out may alias a.
static void residual_forward(float *out, const float *a, const float *b, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// Block l: resid[l] -> resid[l+1], filling the layer's activations.
static void block_forward(const Model *m, const LoraSet *lora, Acts *a, int l, size_t B, size_t T,
                          const TrainCtx *tc) {
    const GPT2Config *c = &m->cfg;
    const size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, NH = (size_t)c->n_head, N = B * T;
    const GPT2Block *blk = &m->blocks[l];
    float **h = &a->lora_h[l * LORA_N_TARGETS];
    layernorm_forward(a->ln1[l], a->ln1_mean[l], a->ln1_rstd[l], a->resid[l], blk->ln1_w,
                      blk->ln1_b, N, C, c->eps);
    linear_forward(m, lora, l, LORA_QKV, a->qkv[l], a->ln1[l], N, h[LORA_QKV], a->tile, a->xd, tc, a->prof);
    double t_att = a->prof ? time_now() : 0;
    attention_forward(a->atty[l], a->att[l], a->qkv[l], B, T, C, NH);
    if (a->prof) a->prof->attention_fwd += time_now() - t_att;
    linear_forward(m, lora, l, LORA_ATTN_PROJ, a->tmp, a->atty[l], N, h[LORA_ATTN_PROJ], a->tile, a->xd, tc, a->prof);
    residual_forward(a->resid_mid[l], a->resid[l], a->tmp, N * C);
    layernorm_forward(a->ln2[l], a->ln2_mean[l], a->ln2_rstd[l], a->resid_mid[l], blk->ln2_w,
                      blk->ln2_b, N, C, c->eps);
    linear_forward(m, lora, l, LORA_FC, a->fch[l], a->ln2[l], N, h[LORA_FC], a->tile, a->xd, tc, a->prof);
    gelu_forward(a->fch_gelu[l], a->fch[l], N * F);
    linear_forward(m, lora, l, LORA_MLP_PROJ, a->tmp, a->fch_gelu[l], N, h[LORA_MLP_PROJ], a->tile, a->xd, tc, a->prof);
    residual_forward(a->resid[l + 1], a->resid_mid[l], a->tmp, N * C);
}

static void forward_body(const Model *m, const LoraSet *lora, Acts *a, const int *tokens,
                         size_t B, size_t T, const TrainCtx *tc) {
    const GPT2Config *c = &m->cfg;
    const size_t C = (size_t)c->n_embd, N = B * T;
    CHECK(B <= a->B && T <= a->T && T <= (size_t)c->n_positions);
    Profile *p = a->prof;
    double t0 = p ? time_now() : 0, before = p ? p->dequant + p->matmul_fwd + p->attention_fwd : 0;
    embedding_forward(a->resid[0], tokens, m->wte, m->wpe, B, T, C);
    for (int l = 0; l < c->n_layer; l++) block_forward(m, lora, a, l, B, T, tc);
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, a->resid[c->n_layer], m->lnf_w, m->lnf_b,
                      N, C, c->eps);
    if (p) p->other_fwd += time_now() - t0 - (p->dequant + p->matmul_fwd + p->attention_fwd - before);
}

double model_forward(const Model *m, const LoraSet *lora, Acts *a, const int *tokens,
                     const int *targets, size_t B, size_t T, size_t *n_valid, float *logits_out) {
    forward_body(m, lora, a, tokens, B, T, NULL);
    if (!targets && !logits_out) return 0.0;
    const size_t C = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.vocab_size, N = B * T;
    double loss = 0.0;
    const size_t rows = model_logit_rows(a->mode);
    for (size_t r0 = 0; r0 < N; r0 += rows) {
        const size_t n = N - r0 < rows ? N - r0 : rows;
        head_forward(m, a->logits, a->lnf + r0 * C, n);
        if (logits_out) memcpy(logits_out + r0 * V, a->logits, n * V * sizeof(float));
        if (targets) loss += softmax_xent(a->logits, targets + r0, n, V, 0.0f, n_valid);
    }
    return loss;
}

// ---- backward --------------------------------------------------------------------------------

// Indices into model_params / full_grads.
enum { P_WTE, P_WPE, P_LNF_W, P_LNF_B, P_BLOCK0 };
enum { PB_LN1_W, PB_LN1_B, PB_LN2_W, PB_LN2_B, PB_W0, PB_B0 = PB_W0 + LORA_N_TARGETS, PB_COUNT = PB_B0 + LORA_N_TARGETS };
static float *grad_of(const TrainCtx *tc, int layer, int k) {
    if (!tc || !tc->full_grads) return NULL;
    return layer < 0 ? tc->full_grads[k] : tc->full_grads[P_BLOCK0 + layer * PB_COUNT + k];
}

void model_params(const Model *m, ModelParam **params) {
    const size_t C = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.vocab_size, P = (size_t)m->cfg.n_positions;
    CHECK(m->quant.type == QUANT_NONE && m->cfg.tied);
#define ADD(nm, ptr, count, dec)                                            \
    do {                                                                    \
        ModelParam mp_ = {.p = (ptr), .n = (count), .decay = (dec)};        \
        snprintf(mp_.name, sizeof mp_.name, "%s", nm);                      \
        arrput(*params, mp_);                                               \
    } while (0)
    ADD("wte.weight", m->wte, V * C, true);
    ADD("wpe.weight", m->wpe, P * C, true);
    ADD("ln_f.weight", m->lnf_w, C, false);
    ADD("ln_f.bias", m->lnf_b, C, false);
    static const char *const LIN[LORA_N_TARGETS] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const GPT2Block *blk = &m->blocks[l];
        char nm[64];
        snprintf(nm, sizeof nm, "h.%d.ln_1.weight", l); ADD(nm, blk->ln1_w, C, false);
        snprintf(nm, sizeof nm, "h.%d.ln_1.bias", l);   ADD(nm, blk->ln1_b, C, false);
        snprintf(nm, sizeof nm, "h.%d.ln_2.weight", l); ADD(nm, blk->ln2_w, C, false);
        snprintf(nm, sizeof nm, "h.%d.ln_2.bias", l);   ADD(nm, blk->ln2_b, C, false);
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            snprintf(nm, sizeof nm, "h.%d.%s.weight", l, LIN[t]);
            ADD(nm, blk->lin[t].w, blk->lin[t].in * blk->lin[t].out, true);
        }
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            snprintf(nm, sizeof nm, "h.%d.%s.bias", l, LIN[t]);
            ADD(nm, blk->lin[t].bias, blk->lin[t].out, false);
        }
    }
#undef ADD
}

// Backward of y = base(x) + LoRA(dropout(x)) given dy: dx += dy W + LoRA's input gradient
// (dx may be NULL when nothing upstream needs it); LoRA and (full) W, b gradients accumulate.
static void linear_backward(const Model *m, LoraSet *lora, Acts *a, int layer, LoraTarget t,
                            float *dx, const float *dy, const float *x, size_t N, const TrainCtx *tc) {
    const QLinear *q = &m->blocks[layer].lin[t];
    if (dx) qlinear_backward_input(q, dx, dy, N, a->tile, a->prof ? &a->prof->dequant : NULL);
    float *dW = grad_of(tc, layer, PB_W0 + t), *db = grad_of(tc, layer, PB_B0 + t);
    if (dW) matmul_tn(dW, dy, x, q->out, q->in, N, 1.0f, 1.0f, q->out, q->in, q->in);
    if (db) bias_backward(db, dy, N, q->out);
    LoraLinear *ll = lora ? &lora->lin[layer * LORA_N_TARGETS + t] : NULL;
    if (!ll || !ll->A) return;
    const float *h = a->lora_h[layer * LORA_N_TARGETS + t];
    if (!use_dropout(tc)) {
        lora_backward(ll, lora->r, lora->scaling, dx, a->dh, dy, h, x, N);
        return;
    }
    const uint64_t seed = dropout_seed(tc, layer, t);
    dropout_apply(a->xd, x, N * q->in, tc->lora_dropout, seed, false);
    if (dx) zero_floats(a->dxd, N * q->in);
    lora_backward(ll, lora->r, lora->scaling, dx ? a->dxd : NULL, a->dh, dy, h, a->xd, N);
    if (dx) dropout_apply(dx, a->dxd, N * q->in, tc->lora_dropout, seed, true);
}

// Block l backward: a->dresid holds d resid[l+1] on entry and d resid[l] on exit.
static void block_backward(const Model *m, LoraSet *lora, Acts *a, int l, size_t B, size_t T,
                           const TrainCtx *tc, bool need_dinput) {
    const GPT2Config *c = &m->cfg;
    const size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, NH = (size_t)c->n_head, N = B * T;
    const GPT2Block *blk = &m->blocks[l];
    // MLP: resid[l+1] = resid_mid + mlp_proj(gelu(fc(ln2(resid_mid))))
    zero_floats(a->dfch_gelu, N * F);
    linear_backward(m, lora, a, l, LORA_MLP_PROJ, a->dfch_gelu, a->dresid, a->fch_gelu[l], N, tc);
    zero_floats(a->dfch, N * F);
    gelu_backward(a->dfch, a->fch[l], a->dfch_gelu, N * F);
    zero_floats(a->dln, N * C);
    linear_backward(m, lora, a, l, LORA_FC, a->dln, a->dfch, a->ln2[l], N, tc);
    layernorm_backward(a->dresid, grad_of(tc, l, PB_LN2_W), grad_of(tc, l, PB_LN2_B), a->dln,
                       a->resid_mid[l], blk->ln2_w, a->ln2_mean[l], a->ln2_rstd[l], N, C);
    // attention: resid_mid = resid[l] + attn_proj(attention(qkv(ln1(resid[l]))))
    zero_floats(a->datty, N * C);
    linear_backward(m, lora, a, l, LORA_ATTN_PROJ, a->datty, a->dresid, a->atty[l], N, tc);
    zero_floats(a->dqkv, N * 3 * C);
    attention_backward(a->dqkv, a->datt, a->datty, a->qkv[l], a->att[l], B, T, C, NH);
    if (need_dinput) zero_floats(a->dln, N * C);
    linear_backward(m, lora, a, l, LORA_QKV, need_dinput ? a->dln : NULL, a->dqkv, a->ln1[l], N, tc);
    if (need_dinput)
        layernorm_backward(a->dresid, grad_of(tc, l, PB_LN1_W), grad_of(tc, l, PB_LN1_B), a->dln,
                           a->resid[l], blk->ln1_w, a->ln1_mean[l], a->ln1_rstd[l], N, C);
}

double model_forward_backward(const Model *m, LoraSet *lora, Acts *a, const int *tokens,
                              const int *targets, size_t B, size_t T, float loss_scale,
                              const TrainCtx *tc, size_t *n_valid) {
    CHECK(a->mode != ACTS_INFER && loss_scale > 0.0f);
    CHECK(!lora || lora->grads);
    const GPT2Config *c = &m->cfg;
    const size_t C = (size_t)c->n_embd, V = (size_t)c->vocab_size, N = B * T;
    const int L = c->n_layer;
    forward_body(m, lora, a, tokens, B, T, tc);
    Profile *prof = a->prof;
    a->prof = NULL;  // the backward's recomputation and dequantization count as backward
    const double t_back = prof ? time_now() : 0;
    // head: logits a chunk of rows at a time, turned into dlogits in place, then
    // dlnf = dlogits lm_head and (full) d lm_head += dlogits^T lnf
    float *dlnf = a->dln, *dwte = grad_of(tc, -1, P_WTE);
    double loss = 0.0;
    const size_t rows = model_logit_rows(a->mode);
    for (size_t r0 = 0; r0 < N; r0 += rows) {
        const size_t n = N - r0 < rows ? N - r0 : rows;
        head_forward(m, a->logits, a->lnf + r0 * C, n);
        loss += softmax_xent(a->logits, targets + r0, n, V, loss_scale, n_valid);
        head_backward_input(m, dlnf + r0 * C, a->logits, n);
        if (dwte) matmul_tn(dwte, a->logits, a->lnf + r0 * C, V, C, n, 1.0f, 1.0f, V, C, C);
    }
    zero_floats(a->dresid, N * C);
    layernorm_backward(a->dresid, grad_of(tc, -1, P_LNF_W), grad_of(tc, -1, P_LNF_B), dlnf,
                       a->resid[L], m->lnf_w, a->lnf_mean, a->lnf_rstd, N, C);
    const bool full = tc && tc->full_grads;
    for (int l = L - 1; l >= 0; l--) {
        // recompute the block's activations; the last block's are still there from the forward
        if (a->mode == ACTS_CHECKPOINT && l < L - 1) block_forward(m, lora, a, l, B, T, tc);
        // block 0's input gradient only feeds the embeddings, which only `full` trains
        block_backward(m, lora, a, l, B, T, tc, l > 0 || full);
    }
    if (full)
        embedding_backward(dwte, grad_of(tc, -1, P_WPE), a->dresid, tokens, B, T, C);
    if (prof) prof->backward += time_now() - t_back;
    a->prof = prof;
    return loss;
}

// ---- KV-cache decoding -----------------------------------------------------------------------

struct KVCache {
    int len, P, max_threads;
    float *k, *v;                          // [L, P, C] each
    float *x, *ln, *qkv, *atty, *tmp, *fch, *fch_gelu, *lora_h, *tile, *scores;
};

KVCache *kv_create(const Model *m, const LoraSet *lora) {
    const size_t L = (size_t)m->cfg.n_layer, C = (size_t)m->cfg.n_embd, F = (size_t)m->cfg.n_inner;
    const size_t P = (size_t)m->cfg.n_positions, R = lora ? (size_t)lora->r : 1;
    KVCache *kv = xcalloc(1, sizeof *kv);
    kv->P = (int)P;
    kv->max_threads = omp_get_max_threads();
    kv->k = xmalloc_aligned(L * P * C * sizeof(float));
    kv->v = xmalloc_aligned(L * P * C * sizeof(float));
    kv->x = xmalloc_aligned(P * C * sizeof(float));
    kv->ln = xmalloc_aligned(P * C * sizeof(float));
    kv->qkv = xmalloc_aligned(P * 3 * C * sizeof(float));
    kv->atty = xmalloc_aligned(P * C * sizeof(float));
    kv->tmp = xmalloc_aligned(P * C * sizeof(float));
    kv->fch = xmalloc_aligned(P * F * sizeof(float));
    kv->fch_gelu = xmalloc_aligned(P * F * sizeof(float));
    kv->lora_h = xmalloc_aligned(P * R * sizeof(float));
    kv->tile = xmalloc_aligned(QLINEAR_TILE_FLOATS * sizeof(float));
    kv->scores = xmalloc_aligned((size_t)kv->max_threads * P * sizeof(float));
    return kv;
}

void kv_free(KVCache *kv) {
    if (!kv) return;
    float *bufs[] = {kv->k, kv->v, kv->x, kv->ln, kv->qkv, kv->atty, kv->tmp, kv->fch,
                     kv->fch_gelu, kv->lora_h, kv->tile, kv->scores};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(kv);
}

int kv_len(const KVCache *kv) { return kv->len; }

void model_step(const Model *m, const LoraSet *lora, KVCache *kv, const int *tokens, int n,
                float *logits) {
    const GPT2Config *c = &m->cfg;
    const size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, NH = (size_t)c->n_head;
    const size_t HS = C / NH, P = (size_t)kv->P, N = (size_t)n;
    const size_t pos0 = (size_t)kv->len;
    CHECK(n > 0 && pos0 + N <= P);
    for (size_t i = 0; i < N; i++) {
        const float *e = m->wte + (size_t)tokens[i] * C, *p = m->wpe + (pos0 + i) * C;
        for (size_t j = 0; j < C; j++) kv->x[i * C + j] = e[j] + p[j];
    }
    const float scale = 1.0f / sqrtf((float)HS);
    for (int l = 0; l < c->n_layer; l++) {
        const GPT2Block *blk = &m->blocks[l];
        float *K = kv->k + (size_t)l * P * C, *Vc = kv->v + (size_t)l * P * C;
        layernorm_forward(kv->ln, NULL, NULL, kv->x, blk->ln1_w, blk->ln1_b, N, C, c->eps);
        linear_forward(m, lora, l, LORA_QKV, kv->qkv, kv->ln, N, kv->lora_h, kv->tile, NULL, NULL, NULL);
        for (size_t i = 0; i < N; i++) {
            memcpy(K + (pos0 + i) * C, kv->qkv + i * 3 * C + C, C * sizeof(float));
            memcpy(Vc + (pos0 + i) * C, kv->qkv + i * 3 * C + 2 * C, C * sizeof(float));
        }
        // causal attention of the new queries over the cache; one (head, query) per task
        #pragma omp parallel for schedule(static)
        for (size_t task = 0; task < NH * N; task++) {
            const size_t h = task / N, i = task % N, t = pos0 + i;
            float *s = kv->scores + (size_t)omp_get_thread_num() * P;
            const float *q = kv->qkv + i * 3 * C + h * HS;
            float mx = -INFINITY;
            for (size_t j = 0; j <= t; j++) {
                const float *kj = K + j * C + h * HS;
                float d = 0;
                for (size_t d_ = 0; d_ < HS; d_++) d += q[d_] * kj[d_];
                s[j] = d * scale;
                mx = fmaxf(mx, s[j]);
            }
            double sum = 0;
            for (size_t j = 0; j <= t; j++) {
                s[j] = expf(s[j] - mx);
                sum += s[j];
            }
            const float inv = (float)(1.0 / sum);
            float *o = kv->atty + i * C + h * HS;
            for (size_t d_ = 0; d_ < HS; d_++) o[d_] = 0;
            for (size_t j = 0; j <= t; j++) {
                const float pj = s[j] * inv, *vj = Vc + j * C + h * HS;
                for (size_t d_ = 0; d_ < HS; d_++) o[d_] += pj * vj[d_];
            }
        }
        linear_forward(m, lora, l, LORA_ATTN_PROJ, kv->tmp, kv->atty, N, kv->lora_h, kv->tile, NULL, NULL, NULL);
        add_inplace(kv->x, kv->tmp, N * C);
        layernorm_forward(kv->ln, NULL, NULL, kv->x, blk->ln2_w, blk->ln2_b, N, C, c->eps);
        linear_forward(m, lora, l, LORA_FC, kv->fch, kv->ln, N, kv->lora_h, kv->tile, NULL, NULL, NULL);
        gelu_forward(kv->fch_gelu, kv->fch, N * F);
        linear_forward(m, lora, l, LORA_MLP_PROJ, kv->tmp, kv->fch_gelu, N, kv->lora_h, kv->tile, NULL, NULL, NULL);
        add_inplace(kv->x, kv->tmp, N * C);
    }
    const float *last = kv->x + (N - 1) * C;
    layernorm_forward(kv->ln, NULL, NULL, last, m->lnf_w, m->lnf_b, 1, C, c->eps);
    head_forward(m, logits, kv->ln, 1);
    kv->len += n;
}
