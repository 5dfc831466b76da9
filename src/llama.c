// llama.c: the LLaMA-family block (docs/llama.md, sections 1-3), the second architecture of the
// model layer (arch.h): config.json of model_type llama / mistral / qwen2, the parameter and
// activation tables, the token embedding, the pre-norm block (RMSNorm, rotate-half RoPE,
// grouped-query attention, SwiGLU MLP) forward / backward / KV-cache step, and the final RMSNorm.
// The three variants differ only in which linears carry biases: none (llama, mistral), q/k/v
// (qwen2), q/k/v/o (llama with attention_bias).
// B batch, T time, C = hidden_size, NH query heads, NKV key/value heads, HS = head_dim,
// CQ = NH*HS, CKV = NKV*HS, F = intermediate_size, V vocab, P = positions, N = B*T rows.
#include "model.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "json.h"
#include "ops.h"

// The block's linears in LoraTarget order.
enum { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, N_LIN };

static const char *const LIN_PATHS[N_LIN] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
static const char *const LIN_FIELDS[N_LIN] = {
    "num_attention_heads, head_dim, hidden_size", "num_key_value_heads, head_dim, hidden_size",
    "num_key_value_heads, head_dim, hidden_size", "hidden_size, num_attention_heads, head_dim",
    "intermediate_size, hidden_size",             "intermediate_size, hidden_size",
    "hidden_size, intermediate_size"};

// in[t], out[t] of the seven linears: q [C -> CQ], k, v [C -> CKV], o [CQ -> C],
// gate, up [C -> F], down [F -> C].
static void lin_shapes(const GPT2Config *c, size_t *in, size_t *out) {
    const size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner;
    const size_t CQ = (size_t)c->n_head * (size_t)c->head_dim;
    const size_t CKV = (size_t)c->n_kv_head * (size_t)c->head_dim;
    const size_t i[N_LIN] = {C, C, C, CQ, C, C, F}, o[N_LIN] = {CQ, CKV, CKV, C, F, F, C};
    memcpy(in, i, sizeof i);
    memcpy(out, o, sizeof o);
}

// ---- parameters ------------------------------------------------------------------------------

#define TOP(f, r, c) .kind = PARAM_ARRAY, .field = offsetof(Model, f), .rows = r, .cols = c
#define VEC(f) .kind = PARAM_ARRAY, .field = offsetof(GPT2Block, f), .rows = DIM_C
#define LIN(k, t) .kind = k, .target = t

// Model-wide parameters: X(id, hub name, where, weight decay). The embedding decays, norms do
// not (Hugging Face's Trainer leaves bias and norm parameters out of weight decay).
#define LLAMA_GLOBALS(X)                                                \
    X(EMBED, "model.embed_tokens.weight", TOP(wte, DIM_V, DIM_C), true) \
    X(NORM, "model.norm.weight", TOP(lnf_w, DIM_C, DIM_NONE), false)

// One block's parameters after "model.layers.{l}.": the two norms first (their indices are the
// same in every variant), the seven weights, then the variant's biases.
#define LLAMA_PARAMS(X)                                                       \
    X(LN1_W, "input_layernorm.weight", VEC(ln1_w), false)                     \
    X(LN2_W, "post_attention_layernorm.weight", VEC(ln2_w), false)            \
    X(W_Q, "self_attn.q_proj.weight", LIN(PARAM_LIN_W, LIN_Q), true)          \
    X(W_K, "self_attn.k_proj.weight", LIN(PARAM_LIN_W, LIN_K), true)          \
    X(W_V, "self_attn.v_proj.weight", LIN(PARAM_LIN_W, LIN_V), true)          \
    X(W_O, "self_attn.o_proj.weight", LIN(PARAM_LIN_W, LIN_O), true)          \
    X(W_GATE, "mlp.gate_proj.weight", LIN(PARAM_LIN_W, LIN_GATE), true)       \
    X(W_UP, "mlp.up_proj.weight", LIN(PARAM_LIN_W, LIN_UP), true)             \
    X(W_DOWN, "mlp.down_proj.weight", LIN(PARAM_LIN_W, LIN_DOWN), true)
#define QKV_BIASES(X)                                                         \
    X(B_Q, "self_attn.q_proj.bias", LIN(PARAM_LIN_B, LIN_Q), false)           \
    X(B_K, "self_attn.k_proj.bias", LIN(PARAM_LIN_B, LIN_K), false)           \
    X(B_V, "self_attn.v_proj.bias", LIN(PARAM_LIN_B, LIN_V), false)
#define O_BIAS(X) X(B_O, "self_attn.o_proj.bias", LIN(PARAM_LIN_B, LIN_O), false)

#define GLOBAL_ID(id, name, where, decay) G_##id,
#define PARAM_ID(id, name, where, decay) P_##id,
enum { LLAMA_GLOBALS(GLOBAL_ID) N_GLOBALS };
enum { LLAMA_PARAMS(PARAM_ID) N_PARAMS };
#undef GLOBAL_ID
#undef PARAM_ID
#define PARAM_ROW(id, nm, where, dec) {.name = nm, where, .decay = dec},
static const ParamSpec GLOBALS[] = {LLAMA_GLOBALS(PARAM_ROW)};
static const ParamSpec PARAMS[] = {LLAMA_PARAMS(PARAM_ROW)};
static const ParamSpec PARAMS_QKV_BIAS[] = {LLAMA_PARAMS(PARAM_ROW) QKV_BIASES(PARAM_ROW)};
static const ParamSpec PARAMS_ATTN_BIAS[] = {LLAMA_PARAMS(PARAM_ROW) QKV_BIASES(PARAM_ROW)
                                                 O_BIAS(PARAM_ROW)};
#undef PARAM_ROW
#undef TOP
#undef VEC
#undef LIN

// ---- config.json -----------------------------------------------------------------------------

// The rotary settings (docs/llama.md 1, "Rope theta and scaling"): theta from
// rope_parameters.rope_theta, else the top-level rope_theta, else 10000; only the default
// rope type, no scaling. Sets c->rope_theta.
static bool parse_rope(GPT2Config *c, const cJSON *js, const char *path, Error *err) {
    const cJSON *scaling = cJSON_GetObjectItemCaseSensitive(js, "rope_scaling");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(js, "rope_parameters");
    const cJSON *theta = cJSON_GetObjectItemCaseSensitive(js, "rope_theta");
    if (scaling && !cJSON_IsNull(scaling))
        return error_set(err, "%s: \"rope_scaling\" must be null (scaled rotary embeddings are not "
                              "supported)", path);
    if (params && !cJSON_IsNull(params)) {
        if (!cJSON_IsObject(params))
            return error_set(err, "%s: \"rope_parameters\" must be an object", path);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(params, "rope_type");
        if (!type) type = cJSON_GetObjectItemCaseSensitive(params, "type");
        if (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "default") == 0))
            return error_set(err, "%s: \"rope_parameters\".\"rope_type\" must be \"default\" (%s is "
                                  "not supported)", path, cJSON_IsString(type) ? type->valuestring : "a non-string");
        static const char *const ONE[] = {"factor", "partial_rotary_factor"};
        for (int i = 0; i < 2; i++) {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(params, ONE[i]);
            if (f && !cJSON_IsNull(f) && !(cJSON_IsNumber(f) && f->valuedouble == 1.0))
                return error_set(err, "%s: \"rope_parameters\".\"%s\" must be 1 (not supported)", path, ONE[i]);
        }
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(params, "rope_theta");
        if (t) theta = t;
    }
    c->rope_theta = 10000.0f;
    if (theta && !cJSON_IsNull(theta)) {
        if (!cJSON_IsNumber(theta) || !(theta->valuedouble > 1) || theta->valuedouble > 1e12)
            return error_set(err, "%s: \"rope_theta\" must be a number in (1, 1e12]", path);
        c->rope_theta = (float)theta->valuedouble;
    }
    return true;
}

// The block variant and the settings qlora does not model (biases on the MLP, windows, dropout),
// refused by name. Sets c->arch and Mistral's c->window.
static bool parse_variant(GPT2Config *c, const cJSON *js, const char *type, const char *path, Error *err) {
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(js, "hidden_act");
    const cJSON *mlp_bias = cJSON_GetObjectItemCaseSensitive(js, "mlp_bias");
    const cJSON *attn_bias = cJSON_GetObjectItemCaseSensitive(js, "attention_bias");
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(js, "attention_dropout");
    const cJSON *use_window = cJSON_GetObjectItemCaseSensitive(js, "use_sliding_window");
    const cJSON *window = cJSON_GetObjectItemCaseSensitive(js, "sliding_window");
    if (act && !(cJSON_IsString(act) && strcmp(act->valuestring, "silu") == 0))
        return error_set(err, "%s: \"hidden_act\" must be \"silu\" (found %s)", path,
                         cJSON_IsString(act) ? act->valuestring : "a non-string");
    if (cJSON_IsTrue(mlp_bias)) return error_set(err, "%s: \"mlp_bias\": true is not supported", path);
    if (drop && !(cJSON_IsNumber(drop) && drop->valuedouble == 0))
        return error_set(err, "%s: \"attention_dropout\" must be 0 (attention dropout is not supported)", path);
    if (strcmp(type, "qwen2") == 0) {
        if (cJSON_IsTrue(use_window))
            return error_set(err, "%s: \"use_sliding_window\": true is not supported", path);
        c->arch = ARCH_QWEN2;
        return true;
    }
    c->arch = cJSON_IsTrue(attn_bias) && strcmp(type, "llama") == 0 ? ARCH_LLAMA_ATTN_BIAS : ARCH_LLAMA;
    if (strcmp(type, "mistral") == 0 && window && !cJSON_IsNull(window)) {
        int w;
        if (!config_int(js, "sliding_window", NULL, 0, 1, 1 << 20, &w, path, err)) return false;
        if (w < c->n_positions) c->window = w;  // a window as wide as the context changes nothing
    }
    return true;
}

bool llama_parse_config(GPT2Config *c, const cJSON *js, const char *path, Error *err) {
    const char *type = cJSON_GetObjectItemCaseSensitive(js, "model_type")->valuestring;
    const long max_pos = strcmp(type, "llama") == 0 ? 2048 : strcmp(type, "qwen2") == 0 ? 32768 : 131072;
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(js, "rms_norm_eps");
    if (!(config_int(js, "num_hidden_layers", NULL, -1, 1, 1000, &c->n_layer, path, err) &&
          config_int(js, "num_attention_heads", NULL, -1, 1, 1024, &c->n_head, path, err) &&
          config_int(js, "num_key_value_heads", NULL, 0, 1, 1024, &c->n_kv_head, path, err) &&
          config_int(js, "hidden_size", NULL, -1, 1, 65536, &c->n_embd, path, err) &&
          config_int(js, "intermediate_size", NULL, -1, 1, 1 << 20, &c->n_inner, path, err) &&
          config_int(js, "head_dim", NULL, 0, 1, 4096, &c->head_dim, path, err) &&
          config_int(js, "max_position_embeddings", NULL, max_pos, 1, 1 << 20, &c->n_positions, path, err) &&
          config_int(js, "vocab_size", NULL, -1, 1, 1 << 24, &c->vocab_size, path, err)))
        return false;
    if (c->n_kv_head == 0) c->n_kv_head = c->n_head;
    if (c->n_head % c->n_kv_head != 0)
        return error_set(err, "%s: \"num_attention_heads\" %d is not a multiple of \"num_key_value_heads\" %d",
                         path, c->n_head, c->n_kv_head);
    if (c->head_dim == 0) {
        if (c->n_embd % c->n_head != 0)
            return error_set(err, "%s: \"hidden_size\" %d is not a multiple of \"num_attention_heads\" %d "
                                  "(and no \"head_dim\" is given)", path, c->n_embd, c->n_head);
        c->head_dim = c->n_embd / c->n_head;
    }
    if (c->head_dim % 2 != 0)
        return error_set(err, "%s: \"head_dim\" %d must be even (rotary pairs)", path, c->head_dim);
    if (eps && !cJSON_IsNull(eps) && (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0) || eps->valuedouble > 1))
        return error_set(err, "%s: \"rms_norm_eps\" must be a number in (0, 1]", path);
    c->eps = eps && cJSON_IsNumber(eps) ? (float)eps->valuedouble : 1e-6f;
    c->tied = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(js, "tie_word_embeddings"));
    return parse_rope(c, js, path, err) && parse_variant(c, js, type, path, err);
}

// Write c as dir/config.json in the form transformers 5 writes (plus the top-level rope_theta
// that 4.x reads).
static bool write_config(const GPT2Config *c, const char *dir, Error *err) {
    const bool qwen = c->arch == ARCH_QWEN2;
    cJSON *js = cJSON_CreateObject();
    cJSON_AddStringToObject(js, "model_type", qwen ? "qwen2" : "llama");
    cJSON *arch = cJSON_AddArrayToObject(js, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"));
    cJSON_AddNumberToObject(js, "hidden_size", c->n_embd);
    cJSON_AddNumberToObject(js, "intermediate_size", c->n_inner);
    cJSON_AddNumberToObject(js, "num_hidden_layers", c->n_layer);
    cJSON_AddNumberToObject(js, "num_attention_heads", c->n_head);
    cJSON_AddNumberToObject(js, "num_key_value_heads", c->n_kv_head);
    cJSON_AddNumberToObject(js, "head_dim", c->head_dim);
    cJSON_AddStringToObject(js, "hidden_act", "silu");
    cJSON_AddNumberToObject(js, "max_position_embeddings", c->n_positions);
    cJSON_AddNumberToObject(js, "rms_norm_eps", c->eps);
    cJSON_AddNumberToObject(js, "rope_theta", c->rope_theta);
    cJSON *rope = cJSON_AddObjectToObject(js, "rope_parameters");
    cJSON_AddNumberToObject(rope, "rope_theta", c->rope_theta);
    cJSON_AddStringToObject(rope, "rope_type", "default");
    if (!qwen) cJSON_AddBoolToObject(js, "attention_bias", c->arch == ARCH_LLAMA_ATTN_BIAS);
    if (!qwen) cJSON_AddBoolToObject(js, "mlp_bias", false);
    cJSON_AddBoolToObject(js, "tie_word_embeddings", c->tied);
    cJSON_AddNumberToObject(js, "vocab_size", c->vocab_size);
    if (c->bos_id >= 0) cJSON_AddNumberToObject(js, "bos_token_id", c->bos_id);
    if (c->eos_id >= 0) cJSON_AddNumberToObject(js, "eos_token_id", c->eos_id);
    cJSON_AddNumberToObject(js, "initializer_range", 0.02);
    cJSON_AddStringToObject(js, "torch_dtype", "float32");
    return config_write(js, dir, err);
}

// The RoPE tables of every position the model runs (derive).
static void derive(Model *m) {
    const size_t P = (size_t)m->cfg.n_positions, HS = (size_t)m->cfg.head_dim;
    m->rope_cos = xmalloc_aligned(P * HS / 2 * sizeof(float));
    m->rope_sin = xmalloc_aligned(P * HS / 2 * sizeof(float));
    rope_tables(m->rope_cos, m->rope_sin, P, HS, m->cfg.rope_theta);
}

// ---- activations -----------------------------------------------------------------------------

// The block's buffers beyond the shared ones (arch.h): X(name, ActKind, floats). q and k are
// kept after the rotation (what attention and its backward read).
#define LLAMA_ACTS(X)                   \
    X(ln1, ACT_LAYER, N * C)            \
    X(rstd1, ACT_LAYER, N)              \
    X(q, ACT_LAYER, N * CQ)             \
    X(k, ACT_LAYER, N * CKV)            \
    X(v, ACT_LAYER, N * CKV)            \
    X(att, ACT_LAYER, B * NH * T * T)   \
    X(atty, ACT_LAYER, N * CQ)          \
    X(resid_mid, ACT_LAYER, N * C)      \
    X(ln2, ACT_LAYER, N * C)            \
    X(rstd2, ACT_LAYER, N)              \
    X(gate, ACT_LAYER, N * F)           \
    X(up, ACT_LAYER, N * F)             \
    X(act, ACT_LAYER, N * F)            \
    X(datty, ACT_GRAD, N * CQ)          \
    X(dq, ACT_GRAD, N * CQ)             \
    X(dk, ACT_GRAD, N * CKV)            \
    X(dv, ACT_GRAD, N * CKV)            \
    X(datt, ACT_GRAD, B * NH * T * T)   \
    X(dact, ACT_GRAD, N * F)            \
    X(dgate, ACT_GRAD, N * F)           \
    X(dup, ACT_GRAD, N * F)

#define ACT_ID(name, kind, floats) A_##name,
enum { LLAMA_ACTS(ACT_ID) N_ACTS };
#undef ACT_ID

typedef struct {
#define ACT_FIELD(name, kind, floats) float *name;
    LLAMA_ACTS(ACT_FIELD)
#undef ACT_FIELD
} LlamaActs;

// Fill out[N_ACTS] for batches of B x T.
static void act_plan(const GPT2Config *c, size_t B, size_t T, ActSpec *out) {
    const size_t N = B * T, C = (size_t)c->n_embd, F = (size_t)c->n_inner, NH = (size_t)c->n_head;
    const size_t CQ = NH * (size_t)c->head_dim, CKV = (size_t)c->n_kv_head * (size_t)c->head_dim;
#define ACT_SPEC(nm, kd, fl) out[A_##nm] = (ActSpec){.name = #nm, .kind = kd, .floats = fl};
    LLAMA_ACTS(ACT_SPEC)
#undef ACT_SPEC
}

// Layer l's view of a's block buffers (borrowed pointers).
static LlamaActs layer_acts(const Acts *a, int l) {
    LlamaActs x;
#define ACT_GET(name, kind, floats) x.name = acts_block(a, A_##name, l);
    LLAMA_ACTS(ACT_GET)
#undef ACT_GET
    return x;
}

// ---- embedding and final norm ----------------------------------------------------------------

// x (B*T, C) = embed_tokens[tokens]: no position embedding (positions, pos0 and pos included,
// enter through RoPE).
static void embed_forward(const Model *m, float *x, const int *tokens, size_t B, size_t T,
                          size_t pos0, const int *pos) {
    (void)pos0;
    (void)pos;
    const size_t C = (size_t)m->cfg.n_embd;
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < B * T; r++) memcpy(x + r * C, m->wte + (size_t)tokens[r] * C, C * sizeof(float));
}

// d embed_tokens (full gradients) += the embedding's backward of dx (B*T, C).
static void embed_backward(const Model *m, const TrainCtx *tc, const float *dx, const int *tokens,
                           size_t B, size_t T, const int *pos) {
    embedding_backward(model_grad(m, tc, -1, G_EMBED), NULL, dx, tokens, B, T, (size_t)m->cfg.n_embd, pos);
}

// out (N,C) = model.norm(x); rstd (N) written when non-NULL; mean is not used (RMSNorm).
static void norm_forward(const Model *m, float *out, float *mean, float *rstd, const float *x, size_t N) {
    (void)mean;
    rmsnorm_forward(out, rstd, x, m->lnf_w, N, (size_t)m->cfg.n_embd, m->cfg.eps);
}

// dx (N,C) += model.norm's input gradient of dout; d model.norm.weight accumulates (full).
static void norm_backward(const Model *m, const TrainCtx *tc, float *dx, const float *dout,
                          const float *x, const float *mean, const float *rstd, size_t N) {
    (void)mean;
    rmsnorm_backward(dx, model_grad(m, tc, -1, G_NORM), dout, x, m->lnf_w, rstd, N, (size_t)m->cfg.n_embd);
}

// ---- the block -------------------------------------------------------------------------------

// out[i] = a[i] + b[i]; out may alias a.
static void residual_forward(float *out, const float *a, const float *b, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// y = linear t of layer l applied to x, its LoRA hidden in the layer's slot (a shorthand).
static void lin_fwd(const Model *m, const LoraSet *lora, Acts *a, int l, int t, float *y,
                    const float *x, size_t N, const TrainCtx *tc) {
    block_linear_forward(m, lora, l, t, y, x, N, acts_lora_h(a, l, t), a->tile, a->xd, tc, a->prof);
}

// Block l: resid[l+1] = resid_mid + down(silu(gate(n2)) * up(n2)), n2 = rmsnorm2(resid_mid),
// resid_mid = resid[l] + o(attention(rope(q(n1)), rope(k(n1)), v(n1))), n1 = rmsnorm1(resid[l]).
static void block_forward(const Model *m, const LoraSet *lora, Acts *a, int l, size_t B, size_t T,
                          const TrainCtx *tc) {
    const GPT2Config *c = &m->cfg;
    const size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, N = B * T, HS = (size_t)c->head_dim;
    const size_t NH = (size_t)c->n_head, NKV = (size_t)c->n_kv_head, CQ = NH * HS, CKV = NKV * HS;
    const GPT2Block *blk = &m->blocks[l];
    const LlamaActs x = layer_acts(a, l);
    rmsnorm_forward(x.ln1, x.rstd1, a->resid[l], blk->ln1_w, N, C, c->eps);
    lin_fwd(m, lora, a, l, LIN_Q, x.q, x.ln1, N, tc);
    lin_fwd(m, lora, a, l, LIN_K, x.k, x.ln1, N, tc);
    lin_fwd(m, lora, a, l, LIN_V, x.v, x.ln1, N, tc);
    PROF_PHASE(a->prof, attention_fwd,
               rope_forward(x.q, m->rope_cos, m->rope_sin, B, T, NH, HS, CQ, a->pos);
               rope_forward(x.k, m->rope_cos, m->rope_sin, B, T, NKV, HS, CKV, a->pos);
               attention_gqa_forward(x.atty, x.att, x.q, x.k, x.v, CQ, CKV, B, T, NH, NKV, HS,
                                     (size_t)c->window, a->pos, m->bf16));
    lin_fwd(m, lora, a, l, LIN_O, a->tmp, x.atty, N, tc);
    residual_forward(x.resid_mid, a->resid[l], a->tmp, N * C);
    rmsnorm_forward(x.ln2, x.rstd2, x.resid_mid, blk->ln2_w, N, C, c->eps);
    lin_fwd(m, lora, a, l, LIN_GATE, x.gate, x.ln2, N, tc);
    lin_fwd(m, lora, a, l, LIN_UP, x.up, x.ln2, N, tc);
    swiglu_forward(x.act, x.gate, x.up, N * F);
    lin_fwd(m, lora, a, l, LIN_DOWN, a->tmp, x.act, N, tc);
    residual_forward(a->resid[l + 1], x.resid_mid, a->tmp, N * C);
}

// The MLP half of block l's backward: a->dresid holds d resid[l+1] on entry and d resid_mid on
// exit.
static void mlp_backward(const Model *m, LoraSet *lora, Acts *a, int l, size_t N, const TrainCtx *tc) {
    const size_t C = (size_t)m->cfg.n_embd, F = (size_t)m->cfg.n_inner;
    const LlamaActs x = layer_acts(a, l);
    zero_floats(x.dact, N * F);
    block_linear_backward(m, lora, a, l, LIN_DOWN, x.dact, a->dresid, x.act, N, tc);
    zero_floats(x.dgate, N * F);
    zero_floats(x.dup, N * F);
    swiglu_backward(x.dgate, x.dup, x.dact, x.gate, x.up, N * F);
    zero_floats(a->dln, N * C);
    block_linear_backward(m, lora, a, l, LIN_GATE, a->dln, x.dgate, x.ln2, N, tc);
    block_linear_backward(m, lora, a, l, LIN_UP, a->dln, x.dup, x.ln2, N, tc);
    rmsnorm_backward(a->dresid, model_grad(m, tc, l, P_LN2_W), a->dln, x.resid_mid,
                     m->blocks[l].ln2_w, x.rstd2, N, C);
}

// Block l backward: a->dresid holds d resid[l+1] on entry and d resid[l] on exit (left
// unchanged without need_dinput). Overwrites the ACT_GRAD buffers and a->dln.
static void block_backward(const Model *m, LoraSet *lora, Acts *a, int l, size_t B, size_t T,
                           const TrainCtx *tc, bool need_dinput) {
    const GPT2Config *c = &m->cfg;
    const size_t C = (size_t)c->n_embd, N = B * T, HS = (size_t)c->head_dim;
    const size_t NH = (size_t)c->n_head, NKV = (size_t)c->n_kv_head, CQ = NH * HS, CKV = NKV * HS;
    const LlamaActs x = layer_acts(a, l);
    mlp_backward(m, lora, a, l, N, tc);
    // attention: resid_mid = resid[l] + o(attention(rope(q(n1)), rope(k(n1)), v(n1)))
    zero_floats(x.datty, N * CQ);
    block_linear_backward(m, lora, a, l, LIN_O, x.datty, a->dresid, x.atty, N, tc);
    zero_floats(x.dq, N * CQ);
    zero_floats(x.dk, N * CKV);
    zero_floats(x.dv, N * CKV);
    attention_gqa_backward(x.dq, x.dk, x.dv, x.datt, x.datty, x.q, x.k, x.v, x.att, CQ, CKV, B, T,
                           NH, NKV, HS, m->bf16);
    rope_backward(x.dq, m->rope_cos, m->rope_sin, B, T, NH, HS, CQ, a->pos);
    rope_backward(x.dk, m->rope_cos, m->rope_sin, B, T, NKV, HS, CKV, a->pos);
    float *dln = need_dinput ? a->dln : NULL;
    if (need_dinput) zero_floats(a->dln, N * C);
    block_linear_backward(m, lora, a, l, LIN_Q, dln, x.dq, x.ln1, N, tc);
    block_linear_backward(m, lora, a, l, LIN_K, dln, x.dk, x.ln1, N, tc);
    block_linear_backward(m, lora, a, l, LIN_V, dln, x.dv, x.ln1, N, tc);
    if (need_dinput)
        rmsnorm_backward(a->dresid, model_grad(m, tc, l, P_LN1_W), a->dln, a->resid[l],
                         m->blocks[l].ln1_w, x.rstd1, N, C);
}

// Block l on the N new rows of kv->x (positions pos0..): their rotated keys and values join
// layer l's cache, and kv->x becomes the block's output. Uses the cache's scratch.
static void block_step(const Model *m, const LoraSet *lora, KVCache *kv, int l, size_t N, size_t pos0) {
    const GPT2Config *c = &m->cfg;
    const size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, HS = (size_t)c->head_dim;
    const size_t NH = (size_t)c->n_head, NKV = (size_t)c->n_kv_head, CQ = NH * HS, CKV = NKV * HS;
    const size_t P = (size_t)kv->P;
    const GPT2Block *blk = &m->blocks[l];
    float *q = kv->qkv, *k = q + P * CQ, *v = k + P * CKV;  // planar: q, k, v of the new rows
    const float *cs = m->rope_cos + pos0 * HS / 2, *sn = m->rope_sin + pos0 * HS / 2;
#define STEP_LIN(t, y, in) block_linear_forward(m, lora, l, t, y, in, N, kv->lora_h, kv->tile, NULL, NULL, NULL)
    rmsnorm_forward(kv->ln, NULL, kv->x, blk->ln1_w, N, C, c->eps);
    STEP_LIN(LIN_Q, q, kv->ln);
    STEP_LIN(LIN_K, k, kv->ln);
    STEP_LIN(LIN_V, v, kv->ln);
    rope_forward(q, cs, sn, 1, N, NH, HS, CQ, NULL);
    rope_forward(k, cs, sn, 1, N, NKV, HS, CKV, NULL);
    memcpy(kv->k + ((size_t)l * P + pos0) * CKV, k, N * CKV * sizeof(float));
    memcpy(kv->v + ((size_t)l * P + pos0) * CKV, v, N * CKV * sizeof(float));
    kv_attend(kv, l, kv->atty, q, CQ, N, pos0, NH, NKV, HS, (size_t)c->window);
    STEP_LIN(LIN_O, kv->tmp, kv->atty);
    add_inplace(kv->x, kv->tmp, N * C);
    rmsnorm_forward(kv->ln, NULL, kv->x, blk->ln2_w, N, C, c->eps);
    STEP_LIN(LIN_GATE, kv->fch, kv->ln);
    STEP_LIN(LIN_UP, kv->fch_up, kv->ln);
    swiglu_forward(kv->fch_gelu, kv->fch, kv->fch_up, N * F);
    STEP_LIN(LIN_DOWN, kv->tmp, kv->fch_gelu);
    add_inplace(kv->x, kv->tmp, N * C);
#undef STEP_LIN
}

// The ArchOps of a variant whose block table is `params`.
#define LLAMA_ARCH(label, table)                                                            \
    {                                                                                       \
        .name = label, .model_type = label, .block_prefix = "model.layers.",                \
        .saved_prefix = "", .n_lin = N_LIN, .lin_paths = LIN_PATHS, .lin_fields = LIN_FIELDS, \
        .conv1d = false, .peft_prefix = "model.layers.", .peft_alt_prefix = NULL,           \
        .lin_shapes = lin_shapes, .kv_mlp_bufs = 3, .derive = derive,                       \
        .write_config = write_config, .globals = GLOBALS, .n_globals = N_GLOBALS,          \
        .params = table, .n_params = (int)(sizeof table / sizeof table[0]),                 \
        .head_param = G_EMBED, .n_acts = N_ACTS, .act_plan = act_plan,                      \
        .embed_forward = embed_forward, .embed_backward = embed_backward,                   \
        .block_forward = block_forward, .block_backward = block_backward,                   \
        .block_step = block_step, .norm_forward = norm_forward,                             \
        .norm_backward = norm_backward,                                                     \
    }

const ArchOps LLAMA_OPS = LLAMA_ARCH("llama", PARAMS);
const ArchOps QWEN2_OPS = LLAMA_ARCH("qwen2", PARAMS_QKV_BIAS);
const ArchOps LLAMA_ATTN_BIAS_OPS = LLAMA_ARCH("llama", PARAMS_ATTN_BIAS);
