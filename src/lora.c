// lora.c: see lora.h.
#include "lora.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "gemm.h"
#include "json.h"
#include "lora_kernels.h"
#include "path.h"
#include "safetensors.h"

// True when module path `path` matches target_modules entry `name` (PEFT's suffix rule).
static bool path_matches(const char *path, const char *name) {
    const size_t lp = strlen(path), ln = strlen(name);
    if (lp == ln) return strcmp(path, name) == 0;
    return lp > ln && path[lp - ln - 1] == '.' && strcmp(path + lp - ln, name) == 0;
}

// The last component of a module path ("c_proj" of "attn.c_proj").
static const char *short_name(const char *path) {
    const char *dot = strrchr(path, '.');
    return dot ? dot + 1 : path;
}

void lora_module_names(const LoraShapes *s, char *buf, size_t size) {
    buf[0] = 0;
    for (int t = 0; t < s->n; t++) {
        bool seen = false;
        for (int u = 0; u < t; u++) seen |= strcmp(short_name(s->path[u]), short_name(s->path[t])) == 0;
        const size_t n = strlen(buf);
        if (!seen && n < size) snprintf(buf + n, size - n, "%s%s", n ? ", " : "", short_name(s->path[t]));
    }
}

bool lora_parse_target(const LoraShapes *s, const char *name, bool targets[LORA_N_TARGETS],
                       Error *err) {
    const bool all = strcmp(name, "all-linear") == 0;
    bool any = false;
    for (int t = 0; t < s->n; t++)
        if (all || path_matches(s->path[t], name)) targets[t] = any = true;
    if (any) return true;
    char names[256];
    lora_module_names(s, names, sizeof names);
    return error_set(err, "unknown LoRA target module '%s' for a %s model (expected %s, all-linear, "
                          "or a module path such as %s)", name, s->arch, names, s->path[s->n - 1]);
}

void lora_key(const LoraShapes *s, int layer, LoraTarget t, bool is_b, char *buf, size_t size) {
    snprintf(buf, size, "base_model.model.%s%d.%s.lora_%c.weight", s->block_prefix, layer, s->path[t],
             is_b ? 'B' : 'A');
}

static float scaling_of(float alpha, int r, bool rslora) {
    return rslora ? alpha / sqrtf((float)r) : alpha / (float)r;
}

// Lay out A/B of every (layer, target) with present[] set in one array.
static void layout(LoraSet *ls, int n_layer, const LoraShapes *shapes, const bool *present) {
    const size_t r = (size_t)ls->r;
    ls->n_layer = n_layer;
    ls->shapes = *shapes;
    ls->lin = xcalloc((size_t)n_layer * LORA_N_TARGETS, sizeof(LoraLinear));
    size_t total = 0;
    for (int i = 0; i < n_layer * LORA_N_TARGETS; i++)
        if (present[i]) total += r * (shapes->in[i % LORA_N_TARGETS] + shapes->out[i % LORA_N_TARGETS]);
    ls->n_params = total;
    ls->params = xmalloc_aligned((total ? total : 1) * sizeof(float));
    memset(ls->params, 0, (total ? total : 1) * sizeof(float));
    size_t off = 0;
    for (int i = 0; i < n_layer * LORA_N_TARGETS; i++) {
        LoraLinear *l = &ls->lin[i];
        l->in = shapes->in[i % LORA_N_TARGETS];
        l->out = shapes->out[i % LORA_N_TARGETS];
        if (!present[i]) continue;
        l->A = ls->params + off;
        off += r * l->in;
        l->B = ls->params + off;
        off += r * l->out;
    }
}

void lora_create(LoraSet *ls, int n_layer, const LoraShapes *shapes, int r, float alpha,
                 float dropout, bool use_rslora, const bool targets[LORA_N_TARGETS], Rng *rng) {
    memset(ls, 0, sizeof *ls);
    ls->r = r;
    ls->alpha = alpha;
    ls->dropout = dropout;
    ls->use_rslora = use_rslora;
    ls->scaling = scaling_of(alpha, r, use_rslora);
    memcpy(ls->targets, targets, sizeof ls->targets);
    bool *present = xcalloc((size_t)n_layer * LORA_N_TARGETS, sizeof(bool));
    for (int i = 0; i < n_layer * LORA_N_TARGETS; i++)
        present[i] = i % LORA_N_TARGETS < shapes->n && targets[i % LORA_N_TARGETS];
    layout(ls, n_layer, shapes, present);
    free(present);
    // A ~ U(-1/sqrt(in), 1/sqrt(in)): kaiming_uniform_(a=sqrt(5)) on an [r, in] weight.
    // B stays 0, so the adapted model starts identical to the base.
    for (int i = 0; i < n_layer * LORA_N_TARGETS; i++) {
        LoraLinear *l = &ls->lin[i];
        if (!l->A) continue;
        const float bound = 1.0f / sqrtf((float)l->in);
        for (size_t k = 0; k < (size_t)r * l->in; k++)
            l->A[k] = bound * (2.0f * rng_uniform(rng) - 1.0f);
    }
}

void lora_alloc_grads(LoraSet *ls) {
    if (ls->grads) return;
    const size_t n = ls->n_params ? ls->n_params : 1;
    ls->grads = xmalloc_aligned(n * sizeof(float));
    memset(ls->grads, 0, n * sizeof(float));
    for (int i = 0; i < ls->n_layer * LORA_N_TARGETS; i++) {
        LoraLinear *l = &ls->lin[i];
        if (!l->A) continue;
        l->dA = ls->grads + (l->A - ls->params);
        l->dB = ls->grads + (l->B - ls->params);
    }
}

void lora_free(LoraSet *ls) {
    free(ls->base_model);
    free(ls->lin);
    free(ls->params);
    free(ls->grads);
    memset(ls, 0, sizeof *ls);
}

void lora_forward(const LoraLinear *l, int r, float scaling, float *y, float *h,
                  const float *xd, size_t N) {
    lora_kernel_forward(l->A, l->B, (size_t)r, l->in, l->out, scaling, xd, N, h, y);
}

void lora_backward(LoraLinear *l, int r, float scaling, float *dxd, float *dh, const float *dy,
                   const float *h, const float *xd, size_t N) {
    lora_kernel_backward(l->A, l->B, (size_t)r, l->in, l->out, scaling, xd, dy, h, N, dh, dxd,
                         l->dA, l->dB);
}

void lora_forward_ref(const LoraLinear *l, int r, float scaling, float *y, float *h,
                      const float *xd, size_t N) {
    const size_t R = (size_t)r;
    // h (R,N) = A xd^T ; y += scaling h^T B^T
    matmul_nt(h, l->A, xd, R, N, l->in, 1.0f, 0.0f, l->in, l->in, N);
    matmul_tt(y, h, l->B, N, l->out, R, scaling, 1.0f, N, R, l->out);
}

void lora_backward_ref(LoraLinear *l, int r, float scaling, float *dxd, float *dh, const float *dy,
                       const float *h, const float *xd, size_t N) {
    const size_t R = (size_t)r;
    // dB += scaling dy^T h^T ; dh (R,N) = scaling B^T dy^T ; dA += dh xd ; dxd += dh^T A
    matmul_tt(l->dB, dy, h, l->out, R, N, scaling, 1.0f, l->out, N, R);
    matmul_tt(dh, l->B, dy, R, N, l->out, scaling, 0.0f, R, l->out, N);
    matmul_nn(l->dA, dh, xd, R, l->in, N, 1.0f, 1.0f, N, l->in, l->in);
    if (dxd) matmul_tn(dxd, dh, l->A, N, l->in, R, 1.0f, 1.0f, N, l->in, l->in);
}

// ---- PEFT files --------------------------------------------------------------------------

// p advanced past `prefix` if it starts with it, else NULL.
static const char *skip_prefix(const char *p, const char *prefix) {
    return prefix && strncmp(p, prefix, strlen(prefix)) == 0 ? p + strlen(prefix) : NULL;
}

// Parse a PEFT tensor key into (layer, target, is_B). Accepts
// base_model.model.{block prefix}{i}.{module path}.lora_{A,B}[.{adapter}].weight, the block
// prefix being the model's (transformer.h. or model.layers.) or its alternative (h.).
static bool parse_key(const LoraShapes *s, const char *key, int n_layer, int *layer,
                      LoraTarget *target, bool *is_b) {
    const char *p = skip_prefix(key, "base_model.model.");
    if (!p) return false;
    const char *q = skip_prefix(p, s->block_prefix);
    if (!q) q = skip_prefix(p, s->alt_block_prefix);
    if (!q || *q < '0' || *q > '9') return false;
    char *end;
    long i = strtol(q, &end, 10);
    if (*end != '.' || i < 0 || i >= n_layer) return false;
    p = end + 1;
    for (int t = 0; t < s->n; t++) {
        size_t n = strlen(s->path[t]);
        if (strncmp(p, s->path[t], n) != 0 || p[n] != '.') continue;
        const char *r = p + n + 1;
        if (strncmp(r, "lora_A.", 7) != 0 && strncmp(r, "lora_B.", 7) != 0) return false;
        *is_b = r[5] == 'B';
        r += 7;
        const char *w = strstr(r, "weight");
        if (!w || strcmp(w, "weight") != 0) return false;
        *layer = (int)i;
        *target = t;
        return true;
    }
    return false;
}

static bool read_config(LoraSet *ls, const char *text, size_t len, const char *path, Error *err) {
    cJSON *js = json_parse(text, len, 0, path, err);
    if (!js) return false;
    bool ok = false;
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(js, "peft_type");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(js, "r");
    const cJSON *alpha = cJSON_GetObjectItemCaseSensitive(js, "lora_alpha");
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(js, "lora_dropout");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(js, "use_rslora");
    const cJSON *bias = cJSON_GetObjectItemCaseSensitive(js, "bias");
    const cJSON *dora = cJSON_GetObjectItemCaseSensitive(js, "use_dora");
    const cJSON *base = cJSON_GetObjectItemCaseSensitive(js, "base_model_name_or_path");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(js, "rank_pattern");
    const cJSON *ap = cJSON_GetObjectItemCaseSensitive(js, "alpha_pattern");
    uint64_t rv = 0;
    if (!cJSON_IsObject(js)) error_set(err, "%s: expected a JSON object", path);
    else if (!cJSON_IsString(pt) || strcmp(pt->valuestring, "LORA") != 0)
        error_set(err, "%s: \"peft_type\" must be \"LORA\"", path);
    else if (!json_as_u64(r, &rv) || rv < 1 || rv > 4096)
        error_set(err, "%s: \"r\" must be an integer in [1, 4096]", path);
    else if (alpha && (!cJSON_IsNumber(alpha) || !(fabs(alpha->valuedouble) <= 1e6)))
        error_set(err, "%s: \"lora_alpha\" must be a number in [-1e6, 1e6] (a larger scale overflows float)", path);
    else if (drop && (!cJSON_IsNumber(drop) || drop->valuedouble < 0 || drop->valuedouble >= 1))
        error_set(err, "%s: \"lora_dropout\" must be a number in [0, 1)", path);
    else if (bias && !cJSON_IsNull(bias) && !(cJSON_IsString(bias) && strcmp(bias->valuestring, "none") == 0))
        error_set(err, "%s: \"bias\" other than \"none\" is not supported", path);
    else if (cJSON_IsTrue(dora))
        error_set(err, "%s: DoRA adapters (\"use_dora\": true) are not supported", path);
    else if ((rp && cJSON_GetArraySize(rp) > 0) || (ap && cJSON_GetArraySize(ap) > 0))
        error_set(err, "%s: per-module \"rank_pattern\"/\"alpha_pattern\" are not supported", path);
    else {
        ls->r = (int)rv;
        ls->alpha = alpha ? (float)alpha->valuedouble : 8.0f;  // PEFT's default lora_alpha
        ls->dropout = drop ? (float)drop->valuedouble : 0.0f;
        ls->use_rslora = cJSON_IsTrue(rs);
        ls->scaling = scaling_of(ls->alpha, ls->r, ls->use_rslora);
        if (cJSON_IsString(base)) {
            free(ls->base_model);
            ls->base_model = xstrdup(base->valuestring);
        }
        ok = true;
    }
    cJSON_Delete(js);
    return ok;
}

// adapter_config.json's scope agrees with the weights, as PEFT would apply it: every module
// with weights is listed in target_modules (names as lora_parse_target reads them; a regular
// expression is refused), every layer with weights is in layers_to_transform (when given),
// and modules_to_save (fully trained extra modules) is empty. present[] marks (layer, target).
static bool check_scope(const cJSON *js, const LoraShapes *sh, const bool *present, int n_layer,
                        const char *path, Error *err) {
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(js, "target_modules");
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(js, "layers_to_transform");
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(js, "modules_to_save");
    if (ms && !cJSON_IsNull(ms) && !(cJSON_IsArray(ms) && cJSON_GetArraySize(ms) == 0))
        return error_set(err, "%s: \"modules_to_save\" is not supported (expected null or [])", path);
    bool listed[LORA_N_TARGETS] = {0}, layer_ok[4096] = {0};
    CHECK(n_layer <= 4096);  // config.json allows at most 1000
    if (cJSON_IsString(tm) && strcmp(tm->valuestring, "all-linear") != 0)
        return error_set(err, "%s: \"target_modules\" as a regular expression ('%.80s') is not supported", path,
                         tm->valuestring);
    if (!tm || cJSON_IsNull(tm) || cJSON_IsString(tm)) lora_parse_target(sh, "all-linear", listed, err);
    else if (!cJSON_IsArray(tm)) return error_set(err, "%s: \"target_modules\" must be a list of names", path);
    for (const cJSON *m = cJSON_IsArray(tm) ? tm->child : NULL; m; m = m->next) {
        Error e2 = {0};
        if (!cJSON_IsString(m) || !lora_parse_target(sh, m->valuestring, listed, &e2))
            return error_set(err, "%s: target_modules: %s", path, cJSON_IsString(m) ? e2.msg : "expected strings");
    }
    const bool all_layers = !lt || cJSON_IsNull(lt);
    if (cJSON_IsNumber(lt) && lt->valuedouble >= 0 && lt->valuedouble < n_layer) layer_ok[lt->valueint] = true;
    for (const cJSON *l = cJSON_IsArray(lt) ? lt->child : NULL; l; l = l->next)
        if (cJSON_IsNumber(l) && l->valuedouble >= 0 && l->valuedouble < n_layer) layer_ok[l->valueint] = true;
    for (int s = 0; s < n_layer * LORA_N_TARGETS; s++) {
        if (!present[s]) continue;
        if (!listed[s % LORA_N_TARGETS])
            return error_set(err, "%s: the weights adapt %s, which target_modules does not list", path,
                             sh->path[s % LORA_N_TARGETS]);
        if (!all_layers && !layer_ok[s / LORA_N_TARGETS])
            return error_set(err, "%s: the weights adapt layer %d, which layers_to_transform does not list", path,
                             s / LORA_N_TARGETS);
    }
    return true;
}

bool lora_load_peft(LoraSet *ls, const char *dir, int n_layer, const LoraShapes *shapes,
                    Error *err) {
    memset(ls, 0, sizeof *ls);
    char *cfg_path = path_join(dir, "adapter_config.json"), *st_path = path_join(dir, "adapter_model.safetensors");
    char *cfg = NULL;
    size_t cfg_len;
    MappedFile f;
    bool ok = file_read_all(cfg_path, &cfg, &cfg_len, err) && file_map(&f, st_path, err);
    if (ok) {
        ok = lora_load_peft_memory(ls, cfg, cfg_len, cfg_path, f.data, f.size, st_path, n_layer, shapes, err);
        file_unmap(&f);
    }
    free(cfg);
    free(cfg_path);
    free(st_path);
    return ok;
}

bool lora_load_peft_memory(LoraSet *ls, const char *config, size_t config_len, const char *cfg_path,
                           const uint8_t *weights, size_t weights_len, const char *st_path,
                           int n_layer, const LoraShapes *shapes, Error *err) {
    memset(ls, 0, sizeof *ls);
    if (!read_config(ls, config, config_len, cfg_path, err)) return false;
    SafeTensors st;
    if (!st_open_memory(&st, weights, weights_len, st_path, err)) {
        lora_free(ls);  // read_config's base_model
        return false;
    }
    const size_t r = (size_t)ls->r;
    const size_t n_slots = (size_t)n_layer * LORA_N_TARGETS;
    const StTensor **ta = xcalloc(n_slots, sizeof(*ta)), **tb = xcalloc(n_slots, sizeof(*tb));
    bool ok = true;
    for (size_t i = 0; ok && i < st.n_tensors; i++) {
        const StTensor *t = &st.tensors[i];
        int layer;
        LoraTarget target;
        bool is_b;
        if (!parse_key(shapes, t->name, n_layer, &layer, &target, &is_b)) {
            ok = error_set(err, "%s: tensor '%s' is not a LoRA A/B weight of a %s block "
                                "linear (layers 0..%d)", st_path, t->name, shapes->arch, n_layer - 1);
            break;
        }
        size_t slot = (size_t)layer * LORA_N_TARGETS + target;
        uint64_t want0 = is_b ? shapes->out[target] : r, want1 = is_b ? r : shapes->in[target];
        if (t->ndim != 2 || t->shape[0] != want0 || t->shape[1] != want1) {
            char found[ST_MAX_DIMS * 22 + 4] = "[";  // every dimension, as many as there are
            for (int d = 0; d < t->ndim; d++)
                snprintf(found + strlen(found), sizeof found - strlen(found), "%s%llu", d ? ", " : "",
                         (unsigned long long)t->shape[d]);
            strcat(found, "]");
            ok = error_set(err, "%s: tensor '%s': expected shape [%llu, %llu] (r=%zu), found %s", st_path,
                           t->name, (unsigned long long)want0, (unsigned long long)want1, r, found);
        } else if ((is_b ? tb : ta)[slot])
            ok = error_set(err, "%s: tensor '%s' duplicates another key", st_path, t->name);
        else
            (is_b ? tb : ta)[slot] = t;
    }
    bool *present = xcalloc(n_slots, sizeof(bool));
    size_t n_present = 0;
    for (size_t s = 0; ok && s < n_slots; s++) {
        if (!ta[s] != !tb[s]) {
            ok = error_set(err, "%s: layer %zu %s has lora_%s but no lora_%s", st_path,
                           s / LORA_N_TARGETS, shapes->path[s % LORA_N_TARGETS], ta[s] ? "A" : "B",
                           ta[s] ? "B" : "A");
            break;
        }
        present[s] = ta[s] != NULL;
        n_present += present[s];
        if (present[s]) ls->targets[s % LORA_N_TARGETS] = true;
    }
    if (ok && n_present == 0) ok = error_set(err, "%s: no LoRA weights found", st_path);
    if (ok) {
        cJSON *js = json_parse(config, config_len, 0, cfg_path, err);  // read_config parsed it once already
        ok = js && check_scope(js, shapes, present, n_layer, cfg_path, err);
        cJSON_Delete(js);
    }
    if (ok) {
        layout(ls, n_layer, shapes, present);
        for (size_t s = 0; ok && s < n_slots; s++) {
            if (!present[s]) continue;
            ok = st_read_f32(&st, ta[s], ls->lin[s].A, err) &&
                 st_read_f32(&st, tb[s], ls->lin[s].B, err);
        }
        for (size_t k = 0; ok && k < ls->n_params; k++)
            if (!isfinite(ls->params[k]))
                ok = error_set(err, "%s: adapter weights contain NaN or Inf", st_path);
    }
    free(present);
    free(ta);
    free(tb);
    st_close(&st);
    if (!ok) lora_free(ls);
    return ok;
}

// target_modules as PEFT users write them: each adapted linear by its last path component,
// once, when every linear with that name is adapted (GPT-2's "c_proj": both projections),
// else by its full path ("attn.c_proj").
static void add_target_modules(cJSON *tm, const LoraSet *ls) {
    const LoraShapes *s = &ls->shapes;
    for (int t = 0; t < s->n; t++) {
        if (!ls->targets[t]) continue;
        const char *last = short_name(s->path[t]);
        bool all_same = true, written = false;
        for (int u = 0; u < s->n; u++) {
            if (u == t || strcmp(short_name(s->path[u]), last) != 0) continue;
            all_same &= ls->targets[u];
            written |= u < t && ls->targets[u];
        }
        if (!all_same) cJSON_AddItemToArray(tm, cJSON_CreateString(s->path[t]));
        else if (!written) cJSON_AddItemToArray(tm, cJSON_CreateString(last));
    }
}

bool lora_save_peft(const LoraSet *ls, const char *dir, Error *err) {
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    for (int i = 0; i < ls->n_layer * LORA_N_TARGETS; i++) {
        const LoraLinear *l = &ls->lin[i];
        if (!l->A) continue;
        char name[256];
        uint64_t sa[2] = {(uint64_t)ls->r, l->in}, sb[2] = {l->out, (uint64_t)ls->r};
        lora_key(&ls->shapes, i / LORA_N_TARGETS, i % LORA_N_TARGETS, false, name, sizeof name);
        st_writer_add(&w, name, ST_F32, 2, sa, l->A);
        lora_key(&ls->shapes, i / LORA_N_TARGETS, i % LORA_N_TARGETS, true, name, sizeof name);
        st_writer_add(&w, name, ST_F32, 2, sb, l->B);
    }
    char *path = path_join(dir, "adapter_model.safetensors");
    bool ok = st_writer_write(&w, path, err);
    free(path);
    st_writer_free(&w);
    if (!ok) return false;

    cJSON *js = cJSON_CreateObject();
    cJSON_AddStringToObject(js, "peft_type", "LORA");
    cJSON_AddStringToObject(js, "task_type", "CAUSAL_LM");
    cJSON_AddStringToObject(js, "base_model_name_or_path", ls->base_model ? ls->base_model : "");
    cJSON_AddNumberToObject(js, "r", ls->r);
    cJSON_AddNumberToObject(js, "lora_alpha", ls->alpha);
    cJSON_AddNumberToObject(js, "lora_dropout", ls->dropout);
    add_target_modules(cJSON_AddArrayToObject(js, "target_modules"), ls);
    cJSON_AddBoolToObject(js, "fan_in_fan_out", ls->shapes.fan_in_fan_out);
    cJSON_AddStringToObject(js, "bias", "none");
    cJSON_AddBoolToObject(js, "use_rslora", ls->use_rslora);
    cJSON_AddBoolToObject(js, "use_dora", false);
    cJSON_AddBoolToObject(js, "init_lora_weights", true);
    cJSON_AddBoolToObject(js, "inference_mode", true);
    cJSON_AddNullToObject(js, "modules_to_save");
    cJSON_AddNullToObject(js, "layers_to_transform");
    cJSON_AddNullToObject(js, "layers_pattern");
    cJSON_AddObjectToObject(js, "rank_pattern");
    cJSON_AddObjectToObject(js, "alpha_pattern");
    cJSON_AddNullToObject(js, "revision");
    path = path_join(dir, "adapter_config.json");
    ok = json_write_file(path, js, err);
    free(path);
    cJSON_Delete(js);
    return ok;
}
