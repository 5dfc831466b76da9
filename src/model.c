// model.c: see model.h. B batch, T time, C = n_embd, NH heads, HS = C/NH, F = n_inner,
// V vocab, L layers, P = n_positions, N = B*T.
#include "model.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ds.h"
#include "gemm.h"
#include "json.h"
#include "ops.h"
#include "safetensors.h"


// ---- config.json -----------------------------------------------------------------------

// Integer field `key` (or its alias) in [lo, hi]; absent -> *out = dflt (or error if
// dflt < 0, meaning required).
static bool cfg_int(const cJSON *js, const char *key, const char *alias, long dflt, long lo,
                    long hi, int *out, const char *path, Error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(js, key);
    if (!v && alias) v = cJSON_GetObjectItemCaseSensitive(js, alias);
    if (!v || cJSON_IsNull(v)) {
        if (dflt < 0) return error_set(err, "%s: missing \"%s\"", path, key);
        *out = (int)dflt;
        return true;
    }
    uint64_t u;
    if (!json_as_u64(v, &u) || (long)u < lo || (long)u > hi)
        return error_set(err, "%s: \"%s\" must be an integer in [%ld, %ld]", path, key, lo, hi);
    *out = (int)u;
    return true;
}

bool model_read_config(GPT2Config *cfg, const char *dir, Error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text;
    size_t len;
    memset(cfg, 0, sizeof *cfg);
    if (!file_read_all(path, &text, &len, err)) return false;
    bool ok = model_parse_config(cfg, text, len, path, err);
    free(text);
    return ok;
}

bool model_parse_config(GPT2Config *cfg, const char *text, size_t len, const char *path, Error *err) {
    memset(cfg, 0, sizeof *cfg);
    cJSON *js = json_parse(text, len, 0, path, err);
    if (!js) return false;
    bool ok = false;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(js, "model_type");
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(js, "activation_function");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(js, "layer_norm_epsilon");
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(js, "tie_word_embeddings");
    const cJSON *scale = cJSON_GetObjectItemCaseSensitive(js, "scale_attn_weights");
    const cJSON *inv = cJSON_GetObjectItemCaseSensitive(js, "scale_attn_by_inverse_layer_idx");
    if (!cJSON_IsObject(js)) {
        error_set(err, "%s: expected a JSON object", path);
    } else if (!cJSON_IsString(mt) || strcmp(mt->valuestring, "gpt2") != 0) {
        error_set(err, "%s: \"model_type\" is %s%s%s, only \"gpt2\" models are supported", path,
                  cJSON_IsString(mt) ? "\"" : "", cJSON_IsString(mt) ? mt->valuestring : "missing",
                  cJSON_IsString(mt) ? "\"" : "");
    } else if (act && (!cJSON_IsString(act) || (strcmp(act->valuestring, "gelu_new") != 0 &&
                                                 strcmp(act->valuestring, "gelu_pytorch_tanh") != 0))) {
        error_set(err, "%s: \"activation_function\" %s is not supported (GPT-2 uses \"gelu_new\")",
                  path, cJSON_IsString(act) ? act->valuestring : "(not a string)");
    } else if (scale && cJSON_IsFalse(scale)) {
        error_set(err, "%s: \"scale_attn_weights\": false is not supported", path);
    } else if (cJSON_IsTrue(inv)) {
        error_set(err, "%s: \"scale_attn_by_inverse_layer_idx\": true is not supported", path);
    } else if (eps && (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0) || eps->valuedouble > 1)) {
        error_set(err, "%s: \"layer_norm_epsilon\" must be a number in (0, 1]", path);
    } else if (cfg_int(js, "n_layer", "num_hidden_layers", -1, 1, 1000, &cfg->n_layer, path, err) &&
               cfg_int(js, "n_head", "num_attention_heads", -1, 1, 1024, &cfg->n_head, path, err) &&
               cfg_int(js, "n_embd", "hidden_size", -1, 1, 65536, &cfg->n_embd, path, err) &&
               cfg_int(js, "n_positions", "max_position_embeddings", -1, 1, 1 << 20,
                       &cfg->n_positions, path, err) &&
               cfg_int(js, "vocab_size", NULL, -1, 1, 1 << 24, &cfg->vocab_size, path, err) &&
               cfg_int(js, "n_inner", NULL, 0, 1, 1 << 20, &cfg->n_inner, path, err)) {
        if (cfg->n_inner == 0) cfg->n_inner = 4 * cfg->n_embd;
        cfg->eps = eps ? (float)eps->valuedouble : 1e-5f;
        cfg->tied = !cJSON_IsFalse(tie);
        if (cfg->n_embd % cfg->n_head != 0)
            error_set(err, "%s: n_embd %d is not a multiple of n_head %d", path, cfg->n_embd,
                      cfg->n_head);
        else
            ok = true;
    }
    cJSON_Delete(js);
    return ok;
}

LoraShapes model_lora_shapes(const GPT2Config *cfg) {
    const size_t C = (size_t)cfg->n_embd, F = (size_t)cfg->n_inner;
    LoraShapes s = {.in = {C, C, C, F}, .out = {3 * C, C, F, C}};
    return s;
}

// ---- checkpoint files (single or sharded) --------------------------------------------------

typedef struct {
    SafeTensors *shards;  // stb_ds array
    const char *prefix;   // "" (hub) or "transformer." (save_pretrained)
} Checkpoint;

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

#define MAX_SHARDS 4096  // far above any published checkpoint (a few hundred), bounds the work

static bool ckpt_open(Checkpoint *ck, const char *dir, Error *err) {
    memset(ck, 0, sizeof *ck);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (file_exists(path)) {
        SafeTensors st;
        if (!st_open(&st, path, err)) return false;
        arrput(ck->shards, st);
        return true;
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (!file_exists(path)) {
        char bin[4096];
        snprintf(bin, sizeof bin, "%s/pytorch_model.bin", dir);
        return error_set(err, "%s: no model.safetensors (or sharded index) found%s", dir,
                         file_exists(bin) ? "; pytorch_model.bin is not supported, save the "
                                            "model with safe_serialization=True" : "");
    }
    cJSON *js = json_parse_file(path, err);
    if (!js) return false;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(js, "weight_map");
    bool ok = cJSON_IsObject(map) || error_set(err, "%s: missing \"weight_map\" object", path);
    char **files = NULL;
    struct { char *key; int value; } *seen = NULL;  // distinct shard names: linear, not quadratic
    sh_new_arena(seen);
    for (const cJSON *kv = ok ? map->child : NULL; ok && kv; kv = kv->next) {
        if (!cJSON_IsString(kv) || strchr(kv->valuestring, '/')) {
            ok = error_set(err, "%s: weight_map entry '%s' must name a file in the folder",
                           path, kv->string);
            break;
        }
        if (shgeti(seen, kv->valuestring) >= 0) continue;
        shput(seen, kv->valuestring, 1);
        arrput(files, kv->valuestring);
        if (arrlenu(files) > MAX_SHARDS)
            ok = error_set(err, "%s: weight_map names more than %d shard files (expected at most %d)", path,
                           MAX_SHARDS, MAX_SHARDS);
    }
    shfree(seen);
    for (size_t i = 0; ok && i < arrlenu(files); i++) {
        char shard[4096];
        snprintf(shard, sizeof shard, "%s/%s", dir, files[i]);
        SafeTensors st;
        if (!(ok = st_open(&st, shard, err))) break;
        arrput(ck->shards, st);
    }
    arrfree(files);
    cJSON_Delete(js);
    return ok;
}

static void ckpt_close(Checkpoint *ck) {
    for (size_t i = 0; i < arrlenu(ck->shards); i++) st_close(&ck->shards[i]);
    arrfree(ck->shards);
}

static const StTensor *ckpt_find(const Checkpoint *ck, const char *name, const SafeTensors **in) {
    for (size_t i = 0; i < arrlenu(ck->shards); i++) {
        const StTensor *t = st_find(&ck->shards[i], name);
        if (t) {
            *in = &ck->shards[i];
            return t;
        }
    }
    return NULL;
}

static const char *ckpt_path(const Checkpoint *ck) { return ck->shards[0].path; }

// The tensor prefix+name (in shard *st) if it exists with exactly shape [d0] or [d0, d1];
// else NULL and err names it with the shape found and the one config.json implies. Called
// before anything of that size is allocated, so config.json's sizes are trusted only once
// the file's tensors agree with them.
static const StTensor *find_shaped(const Checkpoint *ck, const char *name, bool prefixed, size_t d0,
                                   size_t d1, const SafeTensors **st, Error *err) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefixed ? ck->prefix : "", name);
    const StTensor *t = ckpt_find(ck, full, st);
    char want[64];
    if (d1) snprintf(want, sizeof want, "[%zu, %zu]", d0, d1);
    else snprintf(want, sizeof want, "[%zu]", d0);
    if (!t) return error_set(err, "%s: missing tensor '%s' (expected shape %s)", ckpt_path(ck), full, want), NULL;
    bool shape_ok = d1 ? (t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1)
                       : (t->ndim == 1 && t->shape[0] == d0);
    if (!shape_ok) {
        char found[128] = "[";
        for (int d = 0; d < t->ndim; d++)
            snprintf(found + strlen(found), sizeof found - strlen(found), "%s%llu", d ? ", " : "",
                     (unsigned long long)t->shape[d]);
        strncat(found, "]", sizeof found - strlen(found) - 1);
        return error_set(err, "%s: tensor '%s': shape %s, config.json expects %s", (*st)->path, full,
                         found, want), NULL;
    }
    return t;
}

// Read tensor prefix+name of exactly shape [d0] or [d0, d1] into dst (f32), rejecting
// missing tensors, wrong shapes, non-float dtypes and NaN/Inf; then release its pages.
static bool read_tensor(const Checkpoint *ck, const char *name, bool prefixed, size_t d0,
                        size_t d1, float *dst, Error *err) {
    const SafeTensors *st = NULL;
    const StTensor *t = find_shaped(ck, name, prefixed, d0, d1, &st, err);
    if (!t) return false;
    if (!st_read_f32(st, t, dst, err)) return false;
    st_release(st, t);
    size_t n = d1 ? d0 * d1 : d0;
    size_t bad = quant_find_nonfinite(dst, n);
    if (bad < n)
        return error_set(err, "%s: tensor '%s': element %zu is %s", st->path, t->name, bad,
                         isnan(dst[bad]) ? "NaN" : "Inf");
    return true;
}

static float *read_new(const Checkpoint *ck, const char *name, size_t d0, size_t d1, Error *err) {
    float *p = xmalloc_aligned((d1 ? d0 * d1 : d0) * sizeof(float));
    if (!read_tensor(ck, name, true, d0, d1, p, err)) {
        free(p);
        return NULL;
    }
    return p;
}

// The tensors whose sizes config.json's fields set (vocab_size, n_embd, n_positions,
// n_inner: wte, wpe, lm_head, layer 0's linears) have the shapes it implies. Checked before
// anything is allocated from those fields, so a config.json claiming terabytes is refused
// by name instead of failing as out of memory.
static bool check_sizes(const Checkpoint *ck, const GPT2Config *c, Error *err) {
    static const char *const LIN[LORA_N_TARGETS] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
    static const char *const LIN_FIELDS[LORA_N_TARGETS] = {"n_embd", "n_embd", "n_embd, n_inner", "n_inner, n_embd"};
    const size_t C = (size_t)c->n_embd, V = (size_t)c->vocab_size, P = (size_t)c->n_positions;
    const LoraShapes shapes = model_lora_shapes(c);
    const SafeTensors *st;
    const char *fields = "vocab_size, n_embd";
    bool ok = find_shaped(ck, "wte.weight", true, V, C, &st, err) &&
              (fields = "n_positions, n_embd", find_shaped(ck, "wpe.weight", true, P, C, &st, err)) &&
              (fields = "vocab_size, n_embd", c->tied || find_shaped(ck, "lm_head.weight", false, V, C, &st, err));
    for (int t = 0; ok && t < LORA_N_TARGETS; t++) {
        char name[64];
        snprintf(name, sizeof name, "h.0.%s.weight", LIN[t]);
        fields = LIN_FIELDS[t];
        ok = find_shaped(ck, name, true, shapes.in[t], shapes.out[t], &st, err) != NULL;
    }
    if (!ok && err) {  // say which config.json fields set the expected shape
        const size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, " (from its fields %s)", fields);
    }
    return ok;
}

bool model_check_sizes(const char *dir, const GPT2Config *cfg, Error *err) {
    Checkpoint ck;
    if (!ckpt_open(&ck, dir, err)) return false;
    const SafeTensors *dummy;
    ck.prefix = ckpt_find(&ck, "transformer.wte.weight", &dummy) ? "transformer." : "";
    bool ok = check_sizes(&ck, cfg, err);
    ckpt_close(&ck);
    return ok;
}

bool model_load(Model *m, const char *dir, const QuantConfig *q, Error *err) {
    memset(m, 0, sizeof *m);
    m->quant = *q;
    if (!model_read_config(&m->cfg, dir, err)) return false;
    const GPT2Config *c = &m->cfg;
    const size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, V = (size_t)c->vocab_size;
    const size_t P = (size_t)c->n_positions, L = (size_t)c->n_layer;
    if (q->type != QUANT_NONE && (C % q->blocksize || F % q->blocksize))
        return error_set(err, "%s/config.json: n_embd %zu and n_inner %zu must be multiples of "
                              "the quantization blocksize %zu (use a smaller blocksize or "
                              "--quant none)", dir, C, F, q->blocksize);
    Checkpoint ck;
    if (!ckpt_open(&ck, dir, err)) return false;
    const SafeTensors *dummy;
    ck.prefix = ckpt_find(&ck, "transformer.wte.weight", &dummy) ? "transformer." : "";
    bool ok = check_sizes(&ck, c, err) && (m->wte = read_new(&ck, "wte.weight", V, C, err)) &&
              (m->wpe = read_new(&ck, "wpe.weight", P, C, err)) &&
              (m->lnf_w = read_new(&ck, "ln_f.weight", C, 0, err)) &&
              (m->lnf_b = read_new(&ck, "ln_f.bias", C, 0, err));
    if (ok && !c->tied) {
        m->lm_head = xmalloc_aligned(V * C * sizeof(float));
        ok = read_tensor(&ck, "lm_head.weight", false, V, C, m->lm_head, err);
    } else {
        m->lm_head = m->wte;
    }
    m->blocks = xcalloc(L, sizeof(GPT2Block));
    const LoraShapes shapes = model_lora_shapes(c);
    static const char *const LIN_NAME[LORA_N_TARGETS] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                         "mlp.c_proj"};
    float *w = !ok ? NULL : xmalloc_aligned(F * C * 4 > 3 * C * C ? F * C * sizeof(float) : 3 * C * C * sizeof(float));
    float *b = !ok ? NULL : xmalloc_aligned((F > 3 * C ? F : 3 * C) * sizeof(float));
    for (size_t l = 0; ok && l < L; l++) {
        GPT2Block *blk = &m->blocks[l];
        char name[128];
#define BLOCK_VEC(field, what)                                                     \
        snprintf(name, sizeof name, "h.%zu.%s", l, what);                          \
        ok = ok && (blk->field = read_new(&ck, name, C, 0, err)) != NULL;
        BLOCK_VEC(ln1_w, "ln_1.weight")
        BLOCK_VEC(ln1_b, "ln_1.bias")
        BLOCK_VEC(ln2_w, "ln_2.weight")
        BLOCK_VEC(ln2_b, "ln_2.bias")
#undef BLOCK_VEC
        for (int t = 0; ok && t < LORA_N_TARGETS; t++) {
            const size_t in = shapes.in[t], out = shapes.out[t];
            snprintf(name, sizeof name, "h.%zu.%s.weight", l, LIN_NAME[t]);
            ok = read_tensor(&ck, name, true, in, out, w, err);  // Conv1D: [in, out]
            char label[300];
            snprintf(label, sizeof label, "%s: tensor '%s%s'", ckpt_path(&ck), ck.prefix, name);
            snprintf(name, sizeof name, "h.%zu.%s.bias", l, LIN_NAME[t]);
            ok = ok && read_tensor(&ck, name, true, out, 0, b, err) &&
                 qlinear_init(&blk->lin[t], w, b, in, out, q->type, q->blocksize,
                              q->double_quant, label, err);
        }
    }
    free(w);
    free(b);
    ckpt_close(&ck);
    if (!ok) model_free(m);
    return ok;
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

void model_free(Model *m) {
    if (m->blocks) {
        for (int l = 0; l < m->cfg.n_layer; l++) {
            GPT2Block *blk = &m->blocks[l];
            free(blk->ln1_w);
            free(blk->ln1_b);
            free(blk->ln2_w);
            free(blk->ln2_b);
            for (int t = 0; t < LORA_N_TARGETS; t++) qlinear_free(&blk->lin[t]);
        }
        free(m->blocks);
    }
    if (m->lm_head != m->wte) free(m->lm_head);
    free(m->wte);
    free(m->wpe);
    free(m->lnf_w);
    free(m->lnf_b);
    memset(m, 0, sizeof *m);
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

// ---- saving ----------------------------------------------------------------------------------

typedef struct {
    const Model *m;
    WeightDelta delta;
    void *ctx;
} SaveCtx;

static const char *const HF_LIN[LORA_N_TARGETS] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};

static void save_fill(void *vctx, const StEntry *e, void *buf) {
    const SaveCtx *sc = vctx;
    const Model *m = sc->m;
    float *out = buf;
    const size_t C = (size_t)m->cfg.n_embd;
    int l = -1, consumed = 0;
    if (sscanf(e->name, "h.%d.%n", &l, &consumed) == 1 && consumed > 0) {
        const GPT2Block *blk = &m->blocks[l];
        const char *rest = e->name + consumed;
        if (strcmp(rest, "ln_1.weight") == 0) memcpy(out, blk->ln1_w, C * 4);
        else if (strcmp(rest, "ln_1.bias") == 0) memcpy(out, blk->ln1_b, C * 4);
        else if (strcmp(rest, "ln_2.weight") == 0) memcpy(out, blk->ln2_w, C * 4);
        else if (strcmp(rest, "ln_2.bias") == 0) memcpy(out, blk->ln2_b, C * 4);
        else {
            for (int t = 0; t < LORA_N_TARGETS; t++) {
                const QLinear *q = &blk->lin[t];
                size_t n = strlen(HF_LIN[t]);
                if (strncmp(rest, HF_LIN[t], n) != 0) continue;
                if (strcmp(rest + n, ".bias") == 0) {
                    memcpy(out, q->bias, q->out * 4);
                } else {
                    float *w = xmalloc_aligned(q->in * q->out * sizeof(float));
                    qlinear_rows(q, 0, q->out, w);
                    if (sc->delta) sc->delta(sc->ctx, l, t, w);
                    #pragma omp parallel for schedule(static)
                    for (size_t i = 0; i < q->in; i++)  // [out, in] -> Conv1D [in, out]
                        for (size_t o = 0; o < q->out; o++) out[i * q->out + o] = w[o * q->in + i];
                    free(w);
                }
                return;
            }
            CHECK(0 && "unknown block tensor");
        }
        return;
    }
    const size_t n = e->bytes / 4;
    if (strcmp(e->name, "wte.weight") == 0) memcpy(out, m->wte, n * 4);
    else if (strcmp(e->name, "wpe.weight") == 0) memcpy(out, m->wpe, n * 4);
    else if (strcmp(e->name, "ln_f.weight") == 0) memcpy(out, m->lnf_w, n * 4);
    else if (strcmp(e->name, "ln_f.bias") == 0) memcpy(out, m->lnf_b, n * 4);
    else if (strcmp(e->name, "lm_head.weight") == 0) memcpy(out, m->lm_head, n * 4);
    else CHECK(0 && "unknown tensor");
}

bool model_save_hf(const Model *m, const char *src_dir, const char *out_dir, WeightDelta delta,
                   void *ctx, Error *err) {
    const GPT2Config *c = &m->cfg;
    const uint64_t C = (uint64_t)c->n_embd;
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    uint64_t s2[2], s1[1];
    s2[0] = (uint64_t)c->vocab_size, s2[1] = C;
    st_writer_add(&w, "wte.weight", ST_F32, 2, s2, NULL);
    if (!c->tied) st_writer_add(&w, "lm_head.weight", ST_F32, 2, s2, NULL);
    s2[0] = (uint64_t)c->n_positions;
    st_writer_add(&w, "wpe.weight", ST_F32, 2, s2, NULL);
    s1[0] = C;
    st_writer_add(&w, "ln_f.weight", ST_F32, 1, s1, NULL);
    st_writer_add(&w, "ln_f.bias", ST_F32, 1, s1, NULL);
    for (int l = 0; l < c->n_layer; l++) {
        char n[128];
        const char *ln[4] = {"ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias"};
        for (int k = 0; k < 4; k++) {
            snprintf(n, sizeof n, "h.%d.%s", l, ln[k]);
            st_writer_add(&w, n, ST_F32, 1, s1, NULL);
        }
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const QLinear *q = &m->blocks[l].lin[t];
            uint64_t ws[2] = {q->in, q->out}, bs[1] = {q->out};
            snprintf(n, sizeof n, "h.%d.%s.weight", l, HF_LIN[t]);
            st_writer_add(&w, n, ST_F32, 2, ws, NULL);
            snprintf(n, sizeof n, "h.%d.%s.bias", l, HF_LIN[t]);
            st_writer_add(&w, n, ST_F32, 1, bs, NULL);
        }
    }
    SaveCtx sc = {m, delta, ctx};
    char path[4096], from[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    bool ok = st_writer_write_fill(&w, path, save_fill, &sc, err);
    st_writer_free(&w);
    static const char *const FILES[3] = {"config.json", "vocab.json", "merges.txt"};
    for (int i = 0; ok && i < 3; i++) {
        snprintf(from, sizeof from, "%s/%s", src_dir, FILES[i]);
        snprintf(path, sizeof path, "%s/%s", out_dir, FILES[i]);
        if (strcmp(from, path) != 0) ok = copy_file_atomic(from, path, err);
    }
    return ok;
}

// ---- presets and random init -----------------------------------------------------------------

bool model_preset(const char *name, GPT2Config *cfg) {
    static const struct { const char *name; int L, C, NH, P, V; } presets[] = {
        {"gpt2", 12, 768, 12, 1024, 50257},       {"gpt2-medium", 24, 1024, 16, 1024, 50257},
        {"gpt2-large", 36, 1280, 20, 1024, 50257}, {"gpt2-xl", 48, 1600, 25, 1024, 50257},
        {"tiny", 2, 64, 4, 128, 257},
        {"bench-tiny", 4, 128, 4, 256, 256},  // the small size of docs/performance.md
    };
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(name, presets[i].name) == 0) {
            *cfg = (GPT2Config){.n_layer = presets[i].L, .n_head = presets[i].NH,
                                .n_embd = presets[i].C, .n_positions = presets[i].P,
                                .vocab_size = presets[i].V, .n_inner = 4 * presets[i].C,
                                .eps = 1e-5f, .tied = true};
            return true;
        }
    return false;
}

typedef struct {
    uint64_t seed;
    float resid_std;
} InitCtx;

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static void init_fill(void *ctx, const StEntry *e, void *buf) {
    const InitCtx *ic = ctx;
    float *x = buf;
    const size_t n = e->bytes / sizeof(float);
    const char *name = e->name;
    const size_t len = strlen(name);
#define ENDS_WITH(s) (len >= strlen(s) && strcmp(name + len - strlen(s), s) == 0)
    if (ENDS_WITH(".bias")) {
        memset(x, 0, e->bytes);
    } else if (strstr(name, "ln_")) {
        for (size_t i = 0; i < n; i++) x[i] = 1.0f;
    } else {
        // N(0, 0.02); residual projections scaled by 1/sqrt(2L) as in GPT-2's paper
        const float std = ENDS_WITH("c_proj.weight") ? ic->resid_std : 0.02f;
        Rng r;
        rng_seed(&r, ic->seed ^ name_hash(name));  // per tensor: order-independent
        for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(&r);
    }
#undef ENDS_WITH
}

bool model_write_random(const GPT2Config *cfg, const char *dir, uint64_t seed, Error *err) {
    const uint64_t C = (uint64_t)cfg->n_embd, F = (uint64_t)cfg->n_inner;
    const uint64_t V = (uint64_t)cfg->vocab_size, P = (uint64_t)cfg->n_positions;
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    uint64_t s2[2], s1[1];
#define ADD2(name, a, b) (s2[0] = (a), s2[1] = (b), st_writer_add(&w, name, ST_F32, 2, s2, NULL))
#define ADD1(name, a) (s1[0] = (a), st_writer_add(&w, name, ST_F32, 1, s1, NULL))
    ADD2("wte.weight", V, C);
    ADD2("wpe.weight", P, C);
    ADD1("ln_f.weight", C);
    ADD1("ln_f.bias", C);
    for (int l = 0; l < cfg->n_layer; l++) {
        char n[128];
        const struct { const char *name; uint64_t in, out; } lin[4] = {
            {"attn.c_attn", C, 3 * C}, {"attn.c_proj", C, C}, {"mlp.c_fc", C, F}, {"mlp.c_proj", F, C}};
        for (int t = 0; t < 4; t++) {
            snprintf(n, sizeof n, "h.%d.%s.weight", l, lin[t].name);
            ADD2(n, lin[t].in, lin[t].out);
            snprintf(n, sizeof n, "h.%d.%s.bias", l, lin[t].name);
            ADD1(n, lin[t].out);
        }
        const char *ln[4] = {"ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias"};
        for (int k = 0; k < 4; k++) {
            snprintf(n, sizeof n, "h.%d.%s", l, ln[k]);
            ADD1(n, C);
        }
    }
#undef ADD1
#undef ADD2
    InitCtx ic = {seed, 0.02f / sqrtf(2.0f * (float)cfg->n_layer)};
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    bool ok = st_writer_write_fill(&w, path, init_fill, &ic, err);
    st_writer_free(&w);
    if (!ok) return false;

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
    snprintf(path, sizeof path, "%s/config.json", dir);
    ok = json_write_file(path, js, err);
    cJSON_Delete(js);
    return ok;
}

static float *random_tensor(const char *name, size_t n, const InitCtx *ic) {
    float *x = xmalloc_aligned(n * sizeof(float));
    StEntry e = {.name = (char *)name, .dtype = ST_F32, .bytes = n * sizeof(float)};
    init_fill((void *)ic, &e, x);
    return x;
}

bool model_init_random(Model *m, const GPT2Config *cfg, const QuantConfig *q, uint64_t seed,
                       Error *err) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->quant = *q;
    const size_t C = (size_t)cfg->n_embd, F = (size_t)cfg->n_inner;
    if (q->type != QUANT_NONE && (C % q->blocksize || F % q->blocksize))
        return error_set(err, "n_embd %zu and n_inner %zu must be multiples of the blocksize %zu", C, F, q->blocksize);
    InitCtx ic = {seed, 0.02f / sqrtf(2.0f * (float)cfg->n_layer)};
    m->wte = random_tensor("wte.weight", (size_t)cfg->vocab_size * C, &ic);
    m->wpe = random_tensor("wpe.weight", (size_t)cfg->n_positions * C, &ic);
    m->lnf_w = random_tensor("ln_f.weight", C, &ic);
    m->lnf_b = random_tensor("ln_f.bias", C, &ic);
    m->lm_head = m->wte;
    m->blocks = xcalloc((size_t)cfg->n_layer, sizeof(GPT2Block));
    const LoraShapes shapes = model_lora_shapes(cfg);
    for (int l = 0; l < cfg->n_layer; l++) {
        GPT2Block *blk = &m->blocks[l];
        char name[128];
        snprintf(name, sizeof name, "h.%d.ln_1.weight", l); blk->ln1_w = random_tensor(name, C, &ic);
        snprintf(name, sizeof name, "h.%d.ln_1.bias", l);   blk->ln1_b = random_tensor(name, C, &ic);
        snprintf(name, sizeof name, "h.%d.ln_2.weight", l); blk->ln2_w = random_tensor(name, C, &ic);
        snprintf(name, sizeof name, "h.%d.ln_2.bias", l);   blk->ln2_b = random_tensor(name, C, &ic);
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            snprintf(name, sizeof name, "h.%d.%s.weight", l, HF_LIN[t]);
            float *w = random_tensor(name, shapes.in[t] * shapes.out[t], &ic);
            snprintf(name, sizeof name, "h.%d.%s.bias", l, HF_LIN[t]);
            float *b = random_tensor(name, shapes.out[t], &ic);
            bool ok = qlinear_init(&blk->lin[t], w, b, shapes.in[t], shapes.out[t], q->type, q->blocksize,
                                   q->double_quant, name, err);
            free(w);
            free(b);
            if (!ok) {
                model_free(m);
                return false;
            }
        }
    }
    return true;
}
