// gpt2.c: the GPT-2 block (docs/formats.md, "GPT-2 layer math"), the first architecture of the
// model layer (arch.h): its parameter and activation tables, token + position embedding, the
// pre-LN block forward / backward / KV-cache step, and the final LayerNorm.
// B batch, T time, C = n_embd, NH heads, HS = C/NH, F = n_inner, V vocab, P = n_positions,
// N = B*T rows.
#include "model.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "json.h"
#include "ops.h"

// ---- parameters ------------------------------------------------------------------------------

#define TOP(f, r, c) .kind = PARAM_ARRAY, .field = offsetof(Model, f), .rows = r, .cols = c
#define VEC(f) .kind = PARAM_ARRAY, .field = offsetof(GPT2Block, f), .rows = DIM_C
#define LIN(k, t) .kind = k, .target = t

// Model-wide parameters in model_params order: X(id, hub name, where, weight decay).
#define GPT2_GLOBALS(X)                                           \
    X(WTE, "wte.weight", TOP(wte, DIM_V, DIM_C), true)            \
    X(WPE, "wpe.weight", TOP(wpe, DIM_P, DIM_C), true)            \
    X(LNF_W, "ln_f.weight", TOP(lnf_w, DIM_C, DIM_NONE), false)   \
    X(LNF_B, "ln_f.bias", TOP(lnf_b, DIM_C, DIM_NONE), false)

// One block's parameters after "h.{l}.", in model_params order. Linear weights decay; biases
// and LayerNorm weights do not (as Hugging Face's Trainer). Weights are [out, in] in memory,
// Conv1D [in, out] in files.
#define GPT2_PARAMS(X)                                                               \
    X(LN1_W, "ln_1.weight", VEC(ln1_w), false)                                       \
    X(LN1_B, "ln_1.bias", VEC(ln1_b), false)                                         \
    X(LN2_W, "ln_2.weight", VEC(ln2_w), false)                                       \
    X(LN2_B, "ln_2.bias", VEC(ln2_b), false)                                         \
    X(W_QKV, "attn.c_attn.weight", LIN(PARAM_LIN_W, LORA_QKV), true)                 \
    X(W_ATTN_PROJ, "attn.c_proj.weight", LIN(PARAM_LIN_W, LORA_ATTN_PROJ), true)     \
    X(W_FC, "mlp.c_fc.weight", LIN(PARAM_LIN_W, LORA_FC), true)                      \
    X(W_MLP_PROJ, "mlp.c_proj.weight", LIN(PARAM_LIN_W, LORA_MLP_PROJ), true)        \
    X(B_QKV, "attn.c_attn.bias", LIN(PARAM_LIN_B, LORA_QKV), false)                  \
    X(B_ATTN_PROJ, "attn.c_proj.bias", LIN(PARAM_LIN_B, LORA_ATTN_PROJ), false)      \
    X(B_FC, "mlp.c_fc.bias", LIN(PARAM_LIN_B, LORA_FC), false)                       \
    X(B_MLP_PROJ, "mlp.c_proj.bias", LIN(PARAM_LIN_B, LORA_MLP_PROJ), false)

// Indices of the rows above, in TrainCtx.full_grads (through model_grad) and ArchOps.
#define GLOBAL_ID(id, name, where, decay) G_##id,
#define PARAM_ID(id, name, where, decay) P_##id,
enum { GPT2_GLOBALS(GLOBAL_ID) N_GLOBALS };
enum { GPT2_PARAMS(PARAM_ID) N_PARAMS };
#undef GLOBAL_ID
#undef PARAM_ID
#define PARAM_ROW(id, nm, where, dec) {.name = nm, where, .decay = dec},
static const ParamSpec GLOBALS[N_GLOBALS] = {GPT2_GLOBALS(PARAM_ROW)};
static const ParamSpec PARAMS[N_PARAMS] = {GPT2_PARAMS(PARAM_ROW)};
#undef PARAM_ROW
#undef TOP
#undef VEC
#undef LIN

// in[t], out[t] of GPT-2's four linears: c_attn [C -> 3C], attn.c_proj [C -> C],
// c_fc [C -> F], mlp.c_proj [F -> C].
static void lin_shapes(const GPT2Config *cfg, size_t *in, size_t *out) {
    const size_t C = (size_t)cfg->n_embd, F = (size_t)cfg->n_inner;
    const size_t i[4] = {C, C, C, F}, o[4] = {3 * C, C, F, C};
    memcpy(in, i, sizeof i);
    memcpy(out, o, sizeof o);
}

static const char *const LIN_PATHS[4] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
static const char *const LIN_FIELDS[4] = {"n_embd", "n_embd", "n_embd, n_inner", "n_inner, n_embd"};

// ---- activations -----------------------------------------------------------------------------

// The block's buffers beyond the shared ones (arch.h): X(name, ActKind, floats), with the
// sizes in terms of B, T, N, C, F, NH. The plan (acts.c), the Gpt2Acts view and the block
// code all come from this one list.
#define GPT2_ACTS(X)                        \
    X(resid_mid, ACT_LAYER, N * C)          \
    X(ln1, ACT_LAYER, N * C)                \
    X(ln1_mean, ACT_LAYER, N)               \
    X(ln1_rstd, ACT_LAYER, N)               \
    X(qkv, ACT_LAYER, N * 3 * C)            \
    X(att, ACT_LAYER, B * NH * T * T)       \
    X(atty, ACT_LAYER, N * C)               \
    X(ln2, ACT_LAYER, N * C)                \
    X(ln2_mean, ACT_LAYER, N)               \
    X(ln2_rstd, ACT_LAYER, N)               \
    X(fch, ACT_LAYER, N * F)                \
    X(fch_gelu, ACT_LAYER, N * F)           \
    X(datty, ACT_GRAD, N * C)               \
    X(dqkv, ACT_GRAD, N * 3 * C)            \
    X(datt, ACT_GRAD, B * NH * T * T)       \
    X(dfch_gelu, ACT_GRAD, N * F)           \
    X(dfch, ACT_GRAD, N * F)

#define ACT_ID(name, kind, floats) A_##name,
enum { GPT2_ACTS(ACT_ID) N_ACTS };
#undef ACT_ID

// Layer l's buffers by name.
typedef struct {
#define ACT_FIELD(name, kind, floats) float *name;
    GPT2_ACTS(ACT_FIELD)
#undef ACT_FIELD
} Gpt2Acts;

// Fill out[N_ACTS] for batches of B x T.
static void act_plan(const GPT2Config *c, size_t B, size_t T, ActSpec *out) {
    const size_t N = B * T, C = (size_t)c->n_embd, F = (size_t)c->n_inner, NH = (size_t)c->n_head;
#define ACT_SPEC(nm, kd, fl) out[A_##nm] = (ActSpec){.name = #nm, .kind = kd, .floats = fl};
    GPT2_ACTS(ACT_SPEC)
#undef ACT_SPEC
}

// Layer l's view of a's block buffers (borrowed pointers).
static Gpt2Acts layer_acts(const Acts *a, int l) {
    Gpt2Acts x;
#define ACT_GET(name, kind, floats) x.name = acts_block(a, A_##name, l);
    GPT2_ACTS(ACT_GET)
#undef ACT_GET
    return x;
}

// ---- embedding and final norm ----------------------------------------------------------------

// x (B*T, C) = wte[tokens] + wpe[pos0 + t]. Overwrites x.
static void embed_forward(const Model *m, float *x, const int *tokens, size_t B, size_t T,
                          size_t pos0, const int *pos) {
    const size_t C = (size_t)m->cfg.n_embd;
    embedding_forward(x, tokens, m->wte, m->wpe + pos0 * C, B, T, C, pos);
}

// d wte, d wpe (full gradients) += the embedding's backward of dx (B*T, C).
static void embed_backward(const Model *m, const TrainCtx *tc, const float *dx, const int *tokens,
                           size_t B, size_t T, const int *pos) {
    embedding_backward(model_grad(m, tc, -1, G_WTE), model_grad(m, tc, -1, G_WPE), dx, tokens, B, T,
                       (size_t)m->cfg.n_embd, pos);
}

// out (N,C) = ln_f(x); mean, rstd (N) written when non-NULL.
static void norm_forward(const Model *m, float *out, float *mean, float *rstd, const float *x,
                         size_t N) {
    layernorm_forward(out, mean, rstd, x, m->lnf_w, m->lnf_b, N, (size_t)m->cfg.n_embd, m->cfg.eps);
}

// dx (N,C) += ln_f's input gradient of dout; d ln_f.weight, d ln_f.bias accumulate (full).
static void norm_backward(const Model *m, const TrainCtx *tc, float *dx, const float *dout,
                          const float *x, const float *mean, const float *rstd, size_t N) {
    layernorm_backward(dx, model_grad(m, tc, -1, G_LNF_W), model_grad(m, tc, -1, G_LNF_B), dout, x,
                       m->lnf_w, mean, rstd, N, (size_t)m->cfg.n_embd);
}

// ---- the block -------------------------------------------------------------------------------

// out[i] = a[i] + b[i]; out may alias a.
static void residual_forward(float *out, const float *a, const float *b, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// Block l: resid[l+1] = resid_mid + mlp_proj(gelu(fc(ln2(resid_mid)))), with
// resid_mid = resid[l] + attn_proj(attention(qkv(ln1(resid[l])))); fills the layer's buffers.
static void block_forward(const Model *m, const LoraSet *lora, Acts *a, int l, size_t B, size_t T,
                          const TrainCtx *tc) {
    const GPT2Config *c = &m->cfg;
    const size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, NH = (size_t)c->n_head, N = B * T;
    const GPT2Block *blk = &m->blocks[l];
    const Gpt2Acts x = layer_acts(a, l);
    float **h = &a->lora_h[(size_t)l * (size_t)a->n_lin];
    layernorm_forward(x.ln1, x.ln1_mean, x.ln1_rstd, a->resid[l], blk->ln1_w, blk->ln1_b, N, C, c->eps);
    block_linear_forward(m, lora, l, LORA_QKV, x.qkv, x.ln1, N, h[LORA_QKV], a->tile, a->xd, tc, a->prof);
    PROF_PHASE(a->prof, attention_fwd, attention_forward(x.atty, x.att, x.qkv, B, T, C, NH, a->pos, m->bf16));
    block_linear_forward(m, lora, l, LORA_ATTN_PROJ, a->tmp, x.atty, N, h[LORA_ATTN_PROJ], a->tile,
                         a->xd, tc, a->prof);
    residual_forward(x.resid_mid, a->resid[l], a->tmp, N * C);
    layernorm_forward(x.ln2, x.ln2_mean, x.ln2_rstd, x.resid_mid, blk->ln2_w, blk->ln2_b, N, C, c->eps);
    block_linear_forward(m, lora, l, LORA_FC, x.fch, x.ln2, N, h[LORA_FC], a->tile, a->xd, tc, a->prof);
    gelu_forward(x.fch_gelu, x.fch, N * F);
    block_linear_forward(m, lora, l, LORA_MLP_PROJ, a->tmp, x.fch_gelu, N, h[LORA_MLP_PROJ], a->tile,
                         a->xd, tc, a->prof);
    residual_forward(a->resid[l + 1], x.resid_mid, a->tmp, N * C);
}

// Block l backward: a->dresid holds d resid[l+1] on entry and d resid[l] on exit (left
// unchanged without need_dinput). Overwrites the ACT_GRAD buffers and a->dln.
static void block_backward(const Model *m, LoraSet *lora, Acts *a, int l, size_t B, size_t T,
                           const TrainCtx *tc, bool need_dinput) {
    const GPT2Config *c = &m->cfg;
    const size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, NH = (size_t)c->n_head, N = B * T;
    const GPT2Block *blk = &m->blocks[l];
    const Gpt2Acts x = layer_acts(a, l);
    // MLP: resid[l+1] = resid_mid + mlp_proj(gelu(fc(ln2(resid_mid))))
    zero_floats(x.dfch_gelu, N * F);
    block_linear_backward(m, lora, a, l, LORA_MLP_PROJ, x.dfch_gelu, a->dresid, x.fch_gelu, N, tc);
    zero_floats(x.dfch, N * F);
    gelu_backward(x.dfch, x.fch, x.dfch_gelu, N * F);
    zero_floats(a->dln, N * C);
    block_linear_backward(m, lora, a, l, LORA_FC, a->dln, x.dfch, x.ln2, N, tc);
    layernorm_backward(a->dresid, model_grad(m, tc, l, P_LN2_W), model_grad(m, tc, l, P_LN2_B), a->dln,
                       x.resid_mid, blk->ln2_w, x.ln2_mean, x.ln2_rstd, N, C);
    // attention: resid_mid = resid[l] + attn_proj(attention(qkv(ln1(resid[l]))))
    zero_floats(x.datty, N * C);
    block_linear_backward(m, lora, a, l, LORA_ATTN_PROJ, x.datty, a->dresid, x.atty, N, tc);
    zero_floats(x.dqkv, N * 3 * C);
    attention_backward(x.dqkv, x.datt, x.datty, x.qkv, x.att, B, T, C, NH, m->bf16);
    if (need_dinput) zero_floats(a->dln, N * C);
    block_linear_backward(m, lora, a, l, LORA_QKV, need_dinput ? a->dln : NULL, x.dqkv, x.ln1, N, tc);
    if (need_dinput)
        layernorm_backward(a->dresid, model_grad(m, tc, l, P_LN1_W), model_grad(m, tc, l, P_LN1_B),
                           a->dln, a->resid[l], blk->ln1_w, x.ln1_mean, x.ln1_rstd, N, C);
}

// Block l on the N new rows of kv->x (positions pos0..): their keys and values join layer l's
// cache, and kv->x becomes the block's output. Uses the cache's scratch.
static void block_step(const Model *m, const LoraSet *lora, KVCache *kv, int l, size_t N,
                       size_t pos0) {
    const GPT2Config *c = &m->cfg;
    const size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, NH = (size_t)c->n_head;
    const size_t P = (size_t)kv->P;
    const GPT2Block *blk = &m->blocks[l];
    float *K = kv->k + (size_t)l * P * C, *Vc = kv->v + (size_t)l * P * C;
    layernorm_forward(kv->ln, NULL, NULL, kv->x, blk->ln1_w, blk->ln1_b, N, C, c->eps);
    block_linear_forward(m, lora, l, LORA_QKV, kv->qkv, kv->ln, N, kv->lora_h, kv->tile, NULL, NULL, NULL);
    for (size_t i = 0; i < N; i++) {
        memcpy(K + (pos0 + i) * C, kv->qkv + i * 3 * C + C, C * sizeof(float));
        memcpy(Vc + (pos0 + i) * C, kv->qkv + i * 3 * C + 2 * C, C * sizeof(float));
    }
    kv_attend(kv, l, kv->atty, kv->qkv, 3 * C, N, pos0, NH, NH, C / NH, 0);
    block_linear_forward(m, lora, l, LORA_ATTN_PROJ, kv->tmp, kv->atty, N, kv->lora_h, kv->tile, NULL,
                         NULL, NULL);
    add_inplace(kv->x, kv->tmp, N * C);
    layernorm_forward(kv->ln, NULL, NULL, kv->x, blk->ln2_w, blk->ln2_b, N, C, c->eps);
    block_linear_forward(m, lora, l, LORA_FC, kv->fch, kv->ln, N, kv->lora_h, kv->tile, NULL, NULL, NULL);
    gelu_forward(kv->fch_gelu, kv->fch, N * F);
    block_linear_forward(m, lora, l, LORA_MLP_PROJ, kv->tmp, kv->fch_gelu, N, kv->lora_h, kv->tile, NULL,
                         NULL, NULL);
    add_inplace(kv->x, kv->tmp, N * C);
}

// Write cfg as dir/config.json in the hub's GPT-2 form (ArchOps.write_config).
static bool gpt2_write_config(const GPT2Config *cfg, const char *dir, Error *err) {
    cJSON *js = cJSON_CreateObject();
    cJSON_AddStringToObject(js, "model_type", "gpt2");
    cJSON *arch = cJSON_AddArrayToObject(js, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("GPT2LMHeadModel"));
    cJSON_AddStringToObject(js, "activation_function", "gelu_new");
    cJSON_AddNumberToObject(js, "n_layer", cfg->n_layer);
    cJSON_AddNumberToObject(js, "n_head", cfg->n_head);
    cJSON_AddNumberToObject(js, "n_embd", cfg->n_embd);
    cJSON_AddNumberToObject(js, "n_positions", cfg->n_positions);
    cJSON_AddNumberToObject(js, "n_ctx", cfg->n_positions);
    cJSON_AddNumberToObject(js, "vocab_size", cfg->vocab_size);
    if (cfg->n_inner != 4 * cfg->n_embd) cJSON_AddNumberToObject(js, "n_inner", cfg->n_inner);
    else cJSON_AddNullToObject(js, "n_inner");
    cJSON_AddNumberToObject(js, "layer_norm_epsilon", cfg->eps);
    cJSON_AddNumberToObject(js, "initializer_range", 0.02);
    cJSON_AddNumberToObject(js, "bos_token_id", cfg->vocab_size - 1);
    cJSON_AddNumberToObject(js, "eos_token_id", cfg->vocab_size - 1);
    cJSON_AddNumberToObject(js, "attn_pdrop", 0.1);
    cJSON_AddNumberToObject(js, "embd_pdrop", 0.1);
    cJSON_AddNumberToObject(js, "resid_pdrop", 0.1);
    cJSON_AddBoolToObject(js, "scale_attn_weights", true);
    cJSON_AddBoolToObject(js, "tie_word_embeddings", cfg->tied);
    cJSON_AddStringToObject(js, "torch_dtype", "float32");
    return config_write(js, dir, err);
}

const ArchOps GPT2_OPS = {
    .name = "gpt2",
    .model_type = "gpt2",
    .block_prefix = "h.",
    .saved_prefix = "transformer.",
    .n_lin = 4,
    .lin_paths = LIN_PATHS,
    .lin_fields = LIN_FIELDS,
    .conv1d = true,
    .peft_prefix = "transformer.h.",
    .peft_alt_prefix = "h.",
    .lin_shapes = lin_shapes,
    .kv_mlp_bufs = 2,
    .derive = NULL,
    .write_config = gpt2_write_config,
    .globals = GLOBALS,
    .n_globals = N_GLOBALS,
    .params = PARAMS,
    .n_params = N_PARAMS,
    .head_param = G_WTE,
    .n_acts = N_ACTS,
    .act_plan = act_plan,
    .embed_forward = embed_forward,
    .embed_backward = embed_backward,
    .block_forward = block_forward,
    .block_backward = block_backward,
    .block_step = block_step,
    .norm_forward = norm_forward,
    .norm_backward = norm_backward,
};
