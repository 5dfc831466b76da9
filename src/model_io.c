// model_io.c: see model.h. Everything between a model and its files: config.json, single or
// sharded safetensors checkpoints (with their size checks), loading, saving as a Hugging Face
// folder, presets and random initialisation.
// C = n_embd, F = n_inner, V vocab, L layers, P = n_positions.
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arch.h"
#include "ds.h"
#include "json.h"
#include "path.h"
#include "safetensors.h"


// ---- config.json -----------------------------------------------------------------------

bool config_int(const cJSON *js, const char *key, const char *alias, long dflt, long lo,
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
    char *path = path_join(dir, "config.json"), *text;
    size_t len;
    memset(cfg, 0, sizeof *cfg);
    bool ok = file_read_all(path, &text, &len, err);
    if (ok) {
        ok = model_parse_config(cfg, text, len, path, err);
        free(text);
    }
    free(path);
    return ok;
}

// GPT-2's config.json fields (js is an object whose model_type is "gpt2").
bool gpt2_parse_config(GPT2Config *cfg, const cJSON *js, const char *path, Error *err) {
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(js, "activation_function");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(js, "layer_norm_epsilon");
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(js, "tie_word_embeddings");
    const cJSON *scale = cJSON_GetObjectItemCaseSensitive(js, "scale_attn_weights");
    const cJSON *inv = cJSON_GetObjectItemCaseSensitive(js, "scale_attn_by_inverse_layer_idx");
    if (act && (!cJSON_IsString(act) || (strcmp(act->valuestring, "gelu_new") != 0 &&
                                         strcmp(act->valuestring, "gelu_pytorch_tanh") != 0)))
        return error_set(err, "%s: \"activation_function\" %s is not supported (GPT-2 uses \"gelu_new\")",
                         path, cJSON_IsString(act) ? act->valuestring : "(not a string)");
    if (scale && cJSON_IsFalse(scale))
        return error_set(err, "%s: \"scale_attn_weights\": false is not supported", path);
    if (cJSON_IsTrue(inv))
        return error_set(err, "%s: \"scale_attn_by_inverse_layer_idx\": true is not supported", path);
    if (eps && (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0) || eps->valuedouble > 1))
        return error_set(err, "%s: \"layer_norm_epsilon\" must be a number in (0, 1]", path);
    if (!(config_int(js, "n_layer", "num_hidden_layers", -1, 1, 1000, &cfg->n_layer, path, err) &&
          config_int(js, "n_head", "num_attention_heads", -1, 1, 1024, &cfg->n_head, path, err) &&
          config_int(js, "n_embd", "hidden_size", -1, 1, 65536, &cfg->n_embd, path, err) &&
          config_int(js, "n_positions", "max_position_embeddings", -1, 1, 1 << 20, &cfg->n_positions,
                     path, err) &&
          config_int(js, "vocab_size", NULL, -1, 1, 1 << 24, &cfg->vocab_size, path, err) &&
          config_int(js, "n_inner", NULL, 0, 1, 1 << 20, &cfg->n_inner, path, err)))
        return false;
    if (cfg->n_inner == 0) cfg->n_inner = 4 * cfg->n_embd;
    cfg->eps = eps ? (float)eps->valuedouble : 1e-5f;
    cfg->tied = !cJSON_IsFalse(tie);
    if (cfg->n_embd % cfg->n_head != 0)
        return error_set(err, "%s: n_embd %d is not a multiple of n_head %d", path, cfg->n_embd,
                         cfg->n_head);
    cfg->arch = ARCH_GPT2;
    cfg->n_kv_head = cfg->n_head;
    cfg->head_dim = cfg->n_embd / cfg->n_head;
    return true;
}

bool config_write(cJSON *js, const char *dir, Error *err) {
    char *path = path_join(dir, "config.json");
    bool ok = json_write_file(path, js, err);
    free(path);
    cJSON_Delete(js);
    return ok;
}

// *id = config.json's special token id `key`: an integer, or the first of a list (eos may be
// several); absent or null -> -1.
static bool token_id(const cJSON *js, const char *key, int *id, const char *path, Error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(js, key);
    if (cJSON_IsArray(v)) v = v->child;
    *id = -1;
    if (!v || cJSON_IsNull(v)) return true;
    uint64_t u;
    if (!json_as_u64(v, &u) || u > (1u << 24))
        return error_set(err, "%s: \"%s\" must be a token id (an integer, or a list of them)", path, key);
    *id = (int)u;
    return true;
}

bool model_parse_config(GPT2Config *cfg, const char *text, size_t len, const char *path, Error *err) {
    static const struct {
        const char *type;
        bool (*parse)(GPT2Config *, const cJSON *, const char *, Error *);
    } TYPES[] = {{"gpt2", gpt2_parse_config}, {"llama", llama_parse_config},
                 {"mistral", llama_parse_config}, {"qwen2", llama_parse_config}};
    memset(cfg, 0, sizeof *cfg);
    cJSON *js = json_parse(text, len, 0, path, err);
    if (!js) return false;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(js, "model_type");
    bool ok = false, known = false;
    if (!cJSON_IsObject(js)) {
        error_set(err, "%s: expected a JSON object", path);
        known = true;
    }
    for (size_t i = 0; !known && cJSON_IsString(mt) && i < sizeof TYPES / sizeof TYPES[0]; i++)
        if (strcmp(mt->valuestring, TYPES[i].type) == 0) {
            known = true;
            ok = TYPES[i].parse(cfg, js, path, err) &&
                 token_id(js, "bos_token_id", &cfg->bos_id, path, err) &&
                 token_id(js, "eos_token_id", &cfg->eos_id, path, err);
        }
    if (!known)
        error_set(err, "%s: \"model_type\" is %s%s%s, expected gpt2, llama, mistral or qwen2", path,
                  cJSON_IsString(mt) ? "\"" : "", cJSON_IsString(mt) ? mt->valuestring : "missing",
                  cJSON_IsString(mt) ? "\"" : "");
    cJSON_Delete(js);
    return ok;
}

// ---- checkpoint files (single or sharded) --------------------------------------------------

typedef struct {
    SafeTensors *shards;  // stb_ds array
    const char *prefix;   // "" (hub) or "transformer." (save_pretrained)
} Checkpoint;

// True when path names an existing file (or folder).
static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// Close every shard of ck.
static void ckpt_close(Checkpoint *ck) {
    for (size_t i = 0; i < arrlenu(ck->shards); i++) st_close(&ck->shards[i]);
    arrfree(ck->shards);
}

#define MAX_SHARDS 4096  // far above any published checkpoint (a few hundred), bounds the work

// Open dir/model.safetensors, or every shard its model.safetensors.index.json names (each
// validated by st_open). The caller closes ck; on failure nothing is left open.
static bool ckpt_open(Checkpoint *ck, const char *dir, Error *err) {
    memset(ck, 0, sizeof *ck);
    char *single = path_join(dir, "model.safetensors");
    if (file_exists(single)) {
        SafeTensors st;
        const bool ok = st_open(&st, single, err);
        free(single);
        if (ok) arrput(ck->shards, st);
        return ok;
    }
    free(single);
    char *path = path_join(dir, "model.safetensors.index.json");
    if (!file_exists(path)) {
        char *bin = path_join(dir, "pytorch_model.bin");
        error_set(err, "%s: no model.safetensors (or sharded index) found%s", dir,
                  file_exists(bin) ? "; pytorch_model.bin is not supported, save the "
                                     "model with safe_serialization=True" : "");
        free(bin);
        free(path);
        return false;
    }
    cJSON *js = json_parse_file(path, err);
    if (!js) return free(path), false;
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
    if (ok && arrlenu(files) == 0) ok = error_set(err, "%s: \"weight_map\" names no shard file", path);
    for (size_t i = 0; ok && i < arrlenu(files); i++) {
        char *shard = path_join(dir, files[i]);
        SafeTensors st;
        ok = st_open(&st, shard, err);
        free(shard);
        if (!ok) break;
        arrput(ck->shards, st);
    }
    arrfree(files);
    cJSON_Delete(js);
    free(path);
    if (!ok) ckpt_close(ck);
    return ok;
}

// Tensor `name` (exact, prefix included) in the first shard holding it, with *in set to that
// shard; NULL if no shard has it.
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

// The path of ck's first file, for messages.
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

// A fresh aligned array holding tensor prefix+name of shape [d0] or [d0, d1] (d1 == 0), as
// read_tensor checks it; NULL and err on failure. The caller owns it.
static float *read_new(const Checkpoint *ck, const char *name, size_t d0, size_t d1, Error *err) {
    float *p = xmalloc_aligned((d1 ? d0 * d1 : d0) * sizeof(float));
    if (!read_tensor(ck, name, true, d0, d1, p, err)) {
        free(p);
        return NULL;
    }
    return p;
}

// Open dir's checkpoint and find which names it uses: the hub's or save_pretrained's, which put
// ops->saved_prefix before them. The caller closes it.
static bool ckpt_open_model(Checkpoint *ck, const char *dir, const ArchOps *ops, Error *err) {
    if (!ckpt_open(ck, dir, err)) return false;
    char saved[128];
    snprintf(saved, sizeof saved, "%s%s", ops->saved_prefix, ops->globals[0].name);
    const SafeTensors *dummy;
    ck->prefix = ckpt_find(ck, saved, &dummy) ? ops->saved_prefix : "";
    return true;
}

// The block table's row of kind k (PARAM_LIN_W or _B) for linear t.
static const ParamSpec *lin_row(const ArchOps *ops, ParamKind k, int t) {
    return &ops->params[param_lin_index(ops, k, t)];
}

// The tensors whose sizes config.json's fields set (vocab_size, n_embd, n_positions,
// n_inner: wte, wpe, lm_head, layer 0's linears) have the shapes it implies. Checked before
// anything is allocated from those fields, so a config.json claiming terabytes is refused
// by name instead of failing as out of memory.
static bool check_sizes(const Checkpoint *ck, const GPT2Config *c, Error *err) {
    static const char *const DIM_FIELD[] = {[DIM_C] = "n_embd", [DIM_V] = "vocab_size", [DIM_P] = "n_positions"};
    const ArchOps *ops = arch_ops(c);
    const size_t C = (size_t)c->n_embd, V = (size_t)c->vocab_size;
    const LoraShapes shapes = model_lora_shapes(c);
    const SafeTensors *st;
    char fields[64] = "";
    bool ok = true;
    for (int k = 0; ok && k < ops->n_globals; k++) {  // the embeddings: the 2-D rows
        const ParamSpec *ps = &ops->globals[k];
        if (ps->cols == DIM_NONE) continue;
        snprintf(fields, sizeof fields, "%s, %s", DIM_FIELD[ps->rows], DIM_FIELD[ps->cols]);
        ok = find_shaped(ck, ps->name, true, param_dim(c, ps->rows), param_dim(c, ps->cols), &st, err);
    }
    if (ok && !c->tied) {
        snprintf(fields, sizeof fields, "vocab_size, n_embd");
        ok = find_shaped(ck, "lm_head.weight", false, V, C, &st, err) != NULL;
    }
    for (int t = 0; ok && t < shapes.n; t++) {
        char name[64];
        param_block_name(name, sizeof name, ops, 0, lin_row(ops, PARAM_LIN_W, t)->name);
        snprintf(fields, sizeof fields, "%s", ops->lin_fields[t]);
        const size_t d0 = ops->conv1d ? shapes.in[t] : shapes.out[t];
        const size_t d1 = ops->conv1d ? shapes.out[t] : shapes.in[t];
        ok = find_shaped(ck, name, true, d0, d1, &st, err) != NULL;
    }
    if (!ok && err) {  // say which config.json fields set the expected shape
        const size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, " (from its fields %s)", fields);
    }
    return ok;
}

bool model_check_sizes(const char *dir, const GPT2Config *cfg, Error *err) {
    Checkpoint ck;
    if (!ckpt_open_model(&ck, dir, arch_ops(cfg), err)) return false;
    bool ok = check_sizes(&ck, cfg, err);
    ckpt_close(&ck);
    return ok;
}

// Read the model-wide parameter arrays and, unless tied, lm_head.weight into fresh arrays.
static bool load_globals(const Checkpoint *ck, Model *m, Error *err) {
    const GPT2Config *c = &m->cfg;
    const ArchOps *ops = arch_ops(c);
    for (int k = 0; k < ops->n_globals; k++) {
        const ParamSpec *ps = &ops->globals[k];
        float *p = read_new(ck, ps->name, param_dim(c, ps->rows), param_dim(c, ps->cols), err);
        if (!p) return false;
        *param_slot(m, -1, ps) = p;
    }
    if (c->tied) {
        m->lm_head = m->wte;
        return true;
    }
    const size_t V = (size_t)c->vocab_size, C = (size_t)c->n_embd;
    m->lm_head = xmalloc_aligned(V * C * sizeof(float));
    return read_tensor(ck, "lm_head.weight", false, V, C, m->lm_head, err);
}

// Read block l: its arrays, then each linear's weight and bias (through the scratch w, b,
// big enough for any of them) stored per q.
static bool load_block(const Checkpoint *ck, Model *m, int l, const QuantConfig *q, float *w,
                       float *b, Error *err) {
    const GPT2Config *c = &m->cfg;
    const ArchOps *ops = arch_ops(c);
    const LoraShapes shapes = model_lora_shapes(c);
    char name[128];
    for (int k = 0; k < ops->n_params; k++) {
        const ParamSpec *ps = &ops->params[k];
        if (ps->kind != PARAM_ARRAY) continue;
        param_block_name(name, sizeof name, ops, l, ps->name);
        float *p = read_new(ck, name, param_dim(c, ps->rows), param_dim(c, ps->cols), err);
        if (!p) return false;
        *param_slot(m, l, ps) = p;
    }
    for (int t = 0; t < shapes.n; t++) {
        const size_t in = shapes.in[t], out = shapes.out[t];
        param_block_name(name, sizeof name, ops, l, lin_row(ops, PARAM_LIN_W, t)->name);
        if (!read_tensor(ck, name, true, ops->conv1d ? in : out, ops->conv1d ? out : in, w, err))
            return false;
        char *label = path_fmt("%s: tensor '%s%s'", ckpt_path(ck), ck->prefix, name);
        const int bi = param_lin_index(ops, PARAM_LIN_B, t);
        bool ok = true;
        if (bi >= 0) {
            param_block_name(name, sizeof name, ops, l, ops->params[bi].name);
            ok = read_tensor(ck, name, true, out, 0, b, err);
        }
        bool (*init)(QLinear *, const float *, const float *, size_t, size_t, QuantType, size_t, bool,
                     const char *, Error *) = ops->conv1d ? qlinear_init : qlinear_init_rows;
        ok = ok && init(&m->blocks[l].lin[t], w, bi >= 0 ? b : NULL, in, out, q->type, q->blocksize,
                        q->double_quant, label, err);
        free(label);
        if (!ok) return false;
    }
    return true;
}

// NULL when every linear's input width of c is a multiple of q's blocksize (or q does not
// quantize), else the config.json field that is not.
static const char *blocksize_misfit(const GPT2Config *c, const QuantConfig *q) {
    const LoraShapes shapes = model_lora_shapes(c);
    const ArchOps *ops = arch_ops(c);
    for (int t = 0; q->type != QUANT_NONE && t < shapes.n; t++)
        if (shapes.in[t] % q->blocksize) return ops->lin_fields[t];
    return NULL;
}

bool model_load(Model *m, const char *dir, const QuantConfig *q, Error *err) {
    memset(m, 0, sizeof *m);
    m->quant = *q;
    if (!model_read_config(&m->cfg, dir, err)) return false;
    const GPT2Config *c = &m->cfg;
    const char *misfit = blocksize_misfit(c, q);
    if (misfit)
        return error_set(err, "%s/config.json: the linears' input widths (%s) must be multiples "
                              "of the quantization blocksize %zu (use a smaller blocksize or "
                              "--quant none)", dir, misfit, q->blocksize);
    Checkpoint ck;
    if (!ckpt_open_model(&ck, dir, arch_ops(c), err)) return false;
    bool ok = check_sizes(&ck, c, err) && load_globals(&ck, m, err);
    m->blocks = xcalloc((size_t)c->n_layer, sizeof(GPT2Block));
    const LoraShapes shapes = model_lora_shapes(c);
    size_t w_max = 0, b_max = 0;  // the largest linear
    for (int t = 0; t < shapes.n; t++) {
        w_max = shapes.in[t] * shapes.out[t] > w_max ? shapes.in[t] * shapes.out[t] : w_max;
        b_max = shapes.out[t] > b_max ? shapes.out[t] : b_max;
    }
    float *w = !ok ? NULL : xmalloc_aligned(w_max * sizeof(float));
    float *b = !ok ? NULL : xmalloc_aligned(b_max * sizeof(float));
    for (int l = 0; ok && l < c->n_layer; l++) ok = load_block(&ck, m, l, q, w, b, err);
    free(w);
    free(b);
    ckpt_close(&ck);
    if (ok && arch_ops(c)->derive) arch_ops(c)->derive(m);
    if (!ok) model_free(m);
    return ok;
}

void model_free(Model *m) {
    const ArchOps *ops = arch_ops(&m->cfg);
    for (int l = 0; m->blocks && l < m->cfg.n_layer; l++) {
        for (int k = 0; k < ops->n_params; k++)
            if (ops->params[k].kind == PARAM_ARRAY) free(*param_slot(m, l, &ops->params[k]));
        for (int t = 0; t < LORA_N_TARGETS; t++) qlinear_free(&m->blocks[l].lin[t]);
    }
    free(m->blocks);
    if (m->lm_head != m->wte) free(m->lm_head);
    for (int k = 0; k < ops->n_globals; k++) free(*param_slot(m, -1, &ops->globals[k]));
    free(m->rope_cos);
    free(m->rope_sin);
    memset(m, 0, sizeof *m);
}

// ---- the tensors of a Hugging Face folder ----------------------------------------------------

// Add every tensor of c's model to w in the hub's names and layouts (linear weights Conv1D
// [in, out]), lm_head.weight when with_head, all F32 with no data (a fill callback writes it).
static void add_tensors(StWriter *w, const GPT2Config *c, bool with_head) {
    const ArchOps *ops = arch_ops(c);
    const LoraShapes shapes = model_lora_shapes(c);
    for (int k = 0; k < ops->n_globals; k++) {
        const ParamSpec *ps = &ops->globals[k];
        uint64_t s[2] = {param_dim(c, ps->rows), param_dim(c, ps->cols)};
        st_writer_add(w, ps->name, ST_F32, ps->cols == DIM_NONE ? 1 : 2, s, NULL);
    }
    if (with_head) {
        uint64_t s[2] = {(uint64_t)c->vocab_size, (uint64_t)c->n_embd};
        st_writer_add(w, "lm_head.weight", ST_F32, 2, s, NULL);
    }
    for (int l = 0; l < c->n_layer; l++)
        for (int k = 0; k < ops->n_params; k++) {
            const ParamSpec *ps = &ops->params[k];
            char name[128];
            param_block_name(name, sizeof name, ops, l, ps->name);
            uint64_t s[2] = {param_dim(c, ps->rows), param_dim(c, ps->cols)};
            int ndim = ps->cols == DIM_NONE ? 1 : 2;
            if (ps->kind == PARAM_LIN_W) {  // the file's layout
                s[0] = ops->conv1d ? shapes.in[ps->target] : shapes.out[ps->target];
                s[1] = ops->conv1d ? shapes.out[ps->target] : shapes.in[ps->target];
                ndim = 2;
            } else if (ps->kind == PARAM_LIN_B) {
                s[0] = shapes.out[ps->target];
                ndim = 1;
            }
            st_writer_add(w, name, ST_F32, ndim, s, NULL);
        }
}

// ---- saving ----------------------------------------------------------------------------------

typedef struct {
    const Model *m;
    WeightDelta delta;
    void *ctx;
} SaveCtx;

// out (the file's layout) = linear t of block l: dequantized, plus the caller's delta, and
// transposed to Conv1D [in, out] for architectures that store it so.
static void save_linear(const SaveCtx *sc, int l, int t, float *out) {
    const QLinear *q = &sc->m->blocks[l].lin[t];
    if (!arch_ops(&sc->m->cfg)->conv1d) {
        qlinear_rows(q, 0, q->out, out);
        if (sc->delta) sc->delta(sc->ctx, l, t, out);
        return;
    }
    float *w = xmalloc_aligned(q->in * q->out * sizeof(float));
    qlinear_rows(q, 0, q->out, w);
    if (sc->delta) sc->delta(sc->ctx, l, t, w);
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < q->in; i++)  // [out, in] -> Conv1D [in, out]
        for (size_t o = 0; o < q->out; o++) out[i * q->out + o] = w[o * q->in + i];
    free(w);
}

// StFill for model_save_hf: write tensor e's data (named as add_tensors names it) into buf.
static void save_fill(void *vctx, const StEntry *e, void *buf) {
    const SaveCtx *sc = vctx;
    const Model *m = sc->m;
    const ArchOps *ops = arch_ops(&m->cfg);
    int l = -1;
    const char *rest = param_parse_block(ops, e->name, &l);
    if (rest) {
        for (int k = 0; k < ops->n_params; k++) {
            const ParamSpec *ps = &ops->params[k];
            const QLinear *q = &m->blocks[l].lin[ps->target];
            if (strcmp(rest, ps->name) != 0) continue;
            if (ps->kind == PARAM_ARRAY) memcpy(buf, *param_slot(m, l, ps), e->bytes);
            else if (ps->kind == PARAM_LIN_B) memcpy(buf, q->bias, q->out * sizeof(float));
            else save_linear(sc, l, ps->target, buf);
            return;
        }
        CHECK(0 && "unknown block tensor");
    }
    for (int k = 0; k < ops->n_globals; k++)
        if (strcmp(e->name, ops->globals[k].name) == 0) {
            memcpy(buf, *param_slot(m, -1, &ops->globals[k]), e->bytes);
            return;
        }
    CHECK(strcmp(e->name, "lm_head.weight") == 0);
    memcpy(buf, m->lm_head, e->bytes);
}

bool model_save_hf(const Model *m, const char *src_dir, const char *out_dir, WeightDelta delta,
                   void *ctx, Error *err) {
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    add_tensors(&w, &m->cfg, !m->cfg.tied);
    SaveCtx sc = {m, delta, ctx};
    char *st_path = path_join(out_dir, "model.safetensors");
    bool ok = st_writer_write_fill(&w, st_path, save_fill, &sc, err);
    free(st_path);
    st_writer_free(&w);
    // config.json always; the tokenizer's and generation's files when the source has them
    static const char *const FILES[] = {"config.json", "vocab.json", "merges.txt", "tokenizer.json",
                                        "tokenizer_config.json", "special_tokens_map.json",
                                        "generation_config.json", "chat_template.jinja"};
    for (size_t i = 0; ok && i < sizeof FILES / sizeof FILES[0]; i++) {
        char *from = path_join(src_dir, FILES[i]), *to = path_join(out_dir, FILES[i]);
        if (strcmp(from, to) != 0 && (i == 0 || file_exists(from))) ok = copy_file_atomic(from, to, err);
        free(from);
        free(to);
    }
    return ok;
}

// ---- presets and random init -----------------------------------------------------------------

bool model_preset(const char *name, GPT2Config *cfg) {
    // GPT-2 sizes, and the LLaMA-family shapes of the public checkpoints (docs/llama.md 1)
    static const struct {
        const char *name;
        Arch arch;
        int L, C, NH, NKV, F, P, V;
        bool tied;
        float eps, theta;
    } presets[] = {
        {"gpt2", ARCH_GPT2, 12, 768, 12, 12, 3072, 1024, 50257, true, 1e-5f, 0},
        {"gpt2-medium", ARCH_GPT2, 24, 1024, 16, 16, 4096, 1024, 50257, true, 1e-5f, 0},
        {"gpt2-large", ARCH_GPT2, 36, 1280, 20, 20, 5120, 1024, 50257, true, 1e-5f, 0},
        {"gpt2-xl", ARCH_GPT2, 48, 1600, 25, 25, 6400, 1024, 50257, true, 1e-5f, 0},
        {"tiny", ARCH_GPT2, 2, 64, 4, 4, 256, 128, 257, true, 1e-5f, 0},
        {"bench-tiny", ARCH_GPT2, 4, 128, 4, 4, 512, 256, 256, true, 1e-5f, 0},  // docs/performance.md
        {"smollm2-135m", ARCH_LLAMA, 30, 576, 9, 3, 1536, 8192, 49152, true, 1e-5f, 100000},
        {"smollm2-360m", ARCH_LLAMA, 32, 960, 15, 5, 2560, 8192, 49152, true, 1e-5f, 100000},
        {"qwen2.5-0.5b", ARCH_QWEN2, 24, 896, 14, 2, 4864, 32768, 151936, true, 1e-6f, 1000000},
        {"tinyllama-1.1b", ARCH_LLAMA, 22, 2048, 32, 4, 5632, 2048, 32000, false, 1e-5f, 10000},
        {"llama-tiny", ARCH_LLAMA, 2, 64, 4, 2, 128, 128, 320, true, 1e-5f, 10000},
    };
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(name, presets[i].name) == 0) {
            *cfg = (GPT2Config){.n_layer = presets[i].L, .n_head = presets[i].NH,
                                .n_kv_head = presets[i].NKV, .head_dim = presets[i].C / presets[i].NH,
                                .n_embd = presets[i].C, .n_positions = presets[i].P,
                                .vocab_size = presets[i].V, .n_inner = presets[i].F,
                                .eps = presets[i].eps, .rope_theta = presets[i].theta,
                                .tied = presets[i].tied, .arch = presets[i].arch,
                                .bos_id = presets[i].V - 1, .eos_id = presets[i].V - 1};
            return true;
        }
    return false;
}

typedef struct {
    uint64_t seed;
    float resid_std;
} InitCtx;

// FNV-1a of s: a tensor's own random stream, whatever the order tensors are made in.
static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

// StFill of GPT-2's init, a pure function of (seed, tensor name): biases 0, norm weights 1
// (GPT-2's ln_*, the LLaMA family's *norm*), the rest N(0, 0.02) with GPT-2's residual
// projections N(0, 0.02/sqrt(2L)) (LLaMA initialises every linear N(0, 0.02)). Overwrites buf.
static void init_fill(void *ctx, const StEntry *e, void *buf) {
    const InitCtx *ic = ctx;
    float *x = buf;
    const size_t n = e->bytes / sizeof(float);
    const char *name = e->name;
    const size_t len = strlen(name);
#define ENDS_WITH(s) (len >= strlen(s) && strcmp(name + len - strlen(s), s) == 0)
    if (ENDS_WITH(".bias")) {
        memset(x, 0, e->bytes);
    } else if (strstr(name, "ln_") || strstr(name, "norm")) {
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

// The init of every model of cfg made with seed.
static InitCtx init_ctx(const GPT2Config *cfg, uint64_t seed) {
    return (InitCtx){seed, 0.02f / sqrtf(2.0f * (float)cfg->n_layer)};
}

bool model_write_random(const GPT2Config *cfg, const char *dir, uint64_t seed, Error *err) {
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    add_tensors(&w, cfg, !cfg->tied);
    InitCtx ic = init_ctx(cfg, seed);
    char *path = path_join(dir, "model.safetensors");
    bool ok = st_writer_write_fill(&w, path, init_fill, &ic, err);
    free(path);
    st_writer_free(&w);
    return ok && arch_ops(cfg)->write_config(cfg, dir, err);
}

// A fresh array of n floats: tensor `name` as model_write_random would write it. Caller owns.
static float *random_tensor(const char *name, size_t n, const InitCtx *ic) {
    float *x = xmalloc_aligned(n * sizeof(float));
    StEntry e = {.name = (char *)name, .dtype = ST_F32, .bytes = n * sizeof(float)};
    init_fill((void *)ic, &e, x);
    return x;
}

// Block l of m, initialised as model_write_random would write it and stored per q.
static bool init_block(Model *m, int l, const QuantConfig *q, const InitCtx *ic, Error *err) {
    const GPT2Config *c = &m->cfg;
    const ArchOps *ops = arch_ops(c);
    const LoraShapes shapes = model_lora_shapes(c);
    char name[128], bname[128];
    for (int k = 0; k < ops->n_params; k++) {
        const ParamSpec *ps = &ops->params[k];
        if (ps->kind != PARAM_ARRAY) continue;
        param_block_name(name, sizeof name, ops, l, ps->name);
        *param_slot(m, l, ps) = random_tensor(name, param_floats(c, ps), ic);
    }
    for (int t = 0; t < shapes.n; t++) {
        param_block_name(name, sizeof name, ops, l, lin_row(ops, PARAM_LIN_W, t)->name);
        const int bi = param_lin_index(ops, PARAM_LIN_B, t);
        if (bi >= 0) param_block_name(bname, sizeof bname, ops, l, ops->params[bi].name);
        float *w = random_tensor(name, shapes.in[t] * shapes.out[t], ic);  // the file's layout
        float *b = bi >= 0 ? random_tensor(bname, shapes.out[t], ic) : NULL;
        bool ok = (ops->conv1d ? qlinear_init : qlinear_init_rows)(
            &m->blocks[l].lin[t], w, b, shapes.in[t], shapes.out[t], q->type, q->blocksize,
            q->double_quant, name, err);
        free(w);
        free(b);
        if (!ok) return false;
    }
    return true;
}

bool model_init_random(Model *m, const GPT2Config *cfg, const QuantConfig *q, uint64_t seed,
                       Error *err) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->quant = *q;
    const char *misfit = blocksize_misfit(cfg, q);
    if (misfit)
        return error_set(err, "the linears' input widths (%s) must be multiples of the blocksize %zu",
                         misfit, q->blocksize);
    const ArchOps *ops = arch_ops(cfg);
    const InitCtx ic = init_ctx(cfg, seed);
    for (int k = 0; k < ops->n_globals; k++) {
        const ParamSpec *ps = &ops->globals[k];
        *param_slot(m, -1, ps) = random_tensor(ps->name, param_floats(cfg, ps), &ic);
    }
    m->lm_head = cfg->tied ? m->wte
                           : random_tensor("lm_head.weight", (size_t)cfg->vocab_size * (size_t)cfg->n_embd, &ic);
    m->blocks = xcalloc((size_t)cfg->n_layer, sizeof(GPT2Block));
    for (int l = 0; l < cfg->n_layer; l++)
        if (!init_block(m, l, q, &ic, err)) {
            model_free(m);
            return false;
        }
    if (ops->derive) ops->derive(m);
    return true;
}
