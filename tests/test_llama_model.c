// test_llama_model.c: the LLaMA-family model layer against the transformers 5.17 + PEFT 0.21
// fixtures in tests/ref/llama/ (made by tests/make_llama_fixtures.py on the lent machine):
// llama_tied (GQA, tied head), llama_untied (multi-query, attention_bias, three shards), qwen2
// (q/k/v biases, untied; also as a BF16 file), mistral (head_dim 24 != 64/4, F16, sliding
// window 4 < T). For each: logits and loss, a PEFT-written adapter's logits and loss, LoRA
// gradients against torch autograd (ACTS_TRAIN and gradient checkpointing), the KV-cache path
// and greedy continuations against transformers' generate (and the KV cache with the adapter),
// an adapter saved and reloaded (every PEFT key, shape and config field), a merged folder
// against base + adapter, NF4 storage close to fp32; full-fine-tuning gradients of llama_tied
// (the tied embedding gets both of its uses), the same with gradient checkpointing (tied and
// untied); transformers 4.x-style config.json files (top-level rope_theta) load alike.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "json.h"
#include "lora_merge.h"
#include "model.h"
#include "safetensors.h"
#include "test.h"
#include "test_models.h"

// fp32 vs transformers' fp32: the same math with other summation orders. Measured max abs
// differences 1.7e-6 .. 6.2e-6 on logits up to ~9; the bound is 1e-4 relative, plus
// 1e-5 absolute for logits near zero. A wrong RoPE pair, group or norm epsilon moves logits
// by 1e-2 or more (test_llama_ops shows it on two blocks).
#define TOL_LOGITS_ATOL 1e-5
#define TOL_LOGITS_RTOL 1e-4
// Mean losses (17 scored positions, losses 5.7-8.0): measured within 1.5e-7 relative of
// transformers / PEFT; 1e-5 leaves room for other BLAS builds, while the adapter
// moves the loss by 0.6-2% and a wrong ignore-index or shift by far more.
#define TOL_LOSS_RTOL 1e-5
// Gradients of the mean loss: measured max abs differences 1.5e-7 .. 7.4e-7 on values up to
// 0.7; 2e-6 absolute + 1e-4 relative leaves room for other BLAS builds.
#define TOL_GRAD_ATOL 2e-6
#define TOL_GRAD_RTOL 1e-4
// Gradient checkpointing recomputes each block's forward with the same kernels on the same
// inputs, so its gradients should equal ACTS_TRAIN's (measured: bit for bit); the bound only
// allows a future kernel to reorder a sum. A stale or missed recomputation (a buffer of the
// wrong layer) changes gradients by their own size, 1e-3 .. 1e-1.
#define TOL_RECOMPUTE_ATOL 1e-8
#define TOL_RECOMPUTE_RTOL 1e-6
// NF4 + double quant (blocks of 32: these models are 64 wide). The products with NF4 weights
// must equal fp32 products with the same weights dequantized (only summation order differs:
// the NF4 path decodes into the products' panels); against the original fp32 weights the loss
// moves by the quantization error itself, up to 4.0% on these tiny random models
// (largest on llama_tied, whose logits reach 9); 10% is a sanity bound.
#define TOL_NF4_SANITY_REL 0.10

typedef struct {
    const char *model, *ref;  // folder name and the prefix of its _ref/_lora files
} Fixture;

static const Fixture FIXTURES[] = {
    {"llama_tied", "llama_tied"}, {"llama_untied", "llama_untied"}, {"qwen2", "qwen2"},
    {"qwen2_bf16", "qwen2"},      {"mistral", "mistral"},
};

// The fixture's inputs: ids and next-token targets (labels shifted; -100 -> -1).
typedef struct {
    size_t B, T;
    int *ids, *targets;
    size_t n_pred;
} Batch;

static Batch read_batch(const SafeTensors *st) {
    const StTensor *ti = st_find(st, "input_ids"), *tl = st_find(st, "labels");
    CHECK(ti && tl && ti->dtype == ST_I32 && ti->ndim == 2);
    Batch b = {ti->shape[0], ti->shape[1], NULL, NULL, 0};
    const size_t n = b.B * b.T;
    int *labels = xmalloc(n * sizeof(int));
    b.ids = xmalloc(n * sizeof(int));
    b.targets = xmalloc(n * sizeof(int));
    memcpy(b.ids, ti->data, n * sizeof(int));
    memcpy(labels, tl->data, n * sizeof(int));
    for (size_t r = 0; r < b.B; r++)
        for (size_t t = 0; t < b.T; t++) {
            const int v = t + 1 < b.T ? labels[r * b.T + t + 1] : -100;
            b.targets[r * b.T + t] = v < 0 ? -1 : v;
            b.n_pred += v >= 0;
        }
    free(labels);
    return b;
}

// A fresh copy of f32 tensor `name` of st (n elements).
static float *read_f32(const SafeTensors *st, const char *name, size_t *n) {
    const StTensor *t = st_find(st, name);
    CHECK(t);
    float *x = xmalloc(t->n_elements * sizeof(float));
    Error err = {0};
    CHECK(st_read_f32(st, t, x, &err));
    *n = t->n_elements;
    return x;
}

static Model load(const char *dir, QuantType q, size_t blocksize) {
    Model m;
    QuantConfig qc = {q, blocksize, true};
    Error err = {0};
    if (!model_load(&m, dir, &qc, &err)) {
        printf("FAIL load %s: %s\n", dir, err.msg);
        exit(1);
    }
    return m;
}

// logits (B*T, V) and the mean loss of m (+ lora) on b.
static double forward(const Model *m, const LoraSet *lora, const Batch *b, float *logits) {
    Acts *a = acts_create(m, lora, b->B, b->T, ACTS_INFER);
    size_t n = 0;
    const double loss = model_forward(m, lora, a, b->ids, b->targets, b->B, b->T, &n, logits);
    acts_free(a);
    return loss / (double)n;
}

// The fixture's LoRA gradients against m + lora's, in mode (ACTS_TRAIN or ACTS_CHECKPOINT).
static void check_lora_grads(const Model *m, LoraSet *lora, const Batch *b, const char *grads_path,
                             ActsMode mode, const char *label) {
    SafeTensors gs;
    Error err = {0};
    CHECK(st_open(&gs, grads_path, &err));
    lora_alloc_grads(lora);
    memset(lora->grads, 0, lora->n_params * sizeof(float));
    Acts *a = acts_create(m, lora, b->B, b->T, mode);
    size_t n = 0;
    model_forward_backward(m, lora, a, b->ids, b->targets, b->B, b->T, 1.0f / (float)b->n_pred, NULL, &n);
    acts_free(a);
    float *want = xmalloc(lora->n_params * sizeof(float));
    size_t covered = 0;
    for (int i = 0; i < lora->n_layer * LORA_N_TARGETS; i++) {
        const LoraLinear *l = &lora->lin[i];
        for (int is_b = 0; l->A && is_b < 2; is_b++) {
            char key[256];
            lora_key(&lora->shapes, i / LORA_N_TARGETS, i % LORA_N_TARGETS, is_b, key, sizeof key);
            const StTensor *t = st_find(&gs, key);
            const float *p = is_b ? l->B : l->A;
            if (t) CHECK(st_read_f32(&gs, t, want + (p - lora->params), &err));
            covered += t ? t->n_elements : 0;
        }
    }
    EXPECT(covered == lora->n_params, "%s: torch gradients cover all %zu adapter values (%zu)", label,
           lora->n_params, covered);
    EXPECT_CLOSE(label, lora->grads, want, lora->n_params, TOL_GRAD_ATOL, TOL_GRAD_RTOL);
    free(want);
    st_close(&gs);
}

// Greedy continuation with the KV cache against ref.json's (transformers' generate).
static void check_greedy(const Model *m, const char *name) {
    Error err = {0};
    cJSON *js = json_parse_file("tests/ref/llama/ref.json", &err);
    CHECK(js);
    const cJSON *r = cJSON_GetObjectItem(js, name);
    const cJSON *pr = cJSON_GetObjectItem(r, "greedy_prompt"), *gi = cJSON_GetObjectItem(r, "greedy_ids");
    CHECK(cJSON_IsArray(pr) && cJSON_IsArray(gi));
    const int np = cJSON_GetArraySize(pr), ng = cJSON_GetArraySize(gi);
    int toks[64];
    CHECK(ng <= 64 && np < ng);
    for (int i = 0; i < np; i++) toks[i] = cJSON_GetArrayItem(pr, i)->valueint;
    KVCache *kv = kv_create(m, NULL, ng);
    float *logits = xmalloc((size_t)m->cfg.vocab_size * sizeof(float));
    model_step(m, NULL, kv, toks, np, logits);
    bool same = true;
    for (int n = np; n < ng; n++) {
        int best = 0;
        for (int v = 1; v < m->cfg.vocab_size; v++) best = logits[v] > logits[best] ? v : best;
        toks[n] = best;
        same &= best == cJSON_GetArrayItem(gi, n)->valueint;
        if (n + 1 < ng) model_step(m, NULL, kv, &best, 1, logits);
    }
    EXPECT(same, "%s: greedy continuation of %d tokens with the KV cache == transformers' generate", name, ng - np);
    free(logits);
    kv_free(kv);
    cJSON_Delete(js);
}

// The last position's logits of each sequence of b through the KV cache (whole prompt, then
// token by token) with lora (may be NULL) == the full forward's (logits, from m + lora).
static void check_kv_cache(const Model *m, const LoraSet *lora, const Batch *b, const float *logits,
                           const char *name) {
    const size_t V = (size_t)m->cfg.vocab_size;
    float *step = xmalloc(V * sizeof(float));
    double worst = 0;
    bool ok = true;
    for (size_t r = 0; r < b->B; r++) {
        KVCache *kv = kv_create(m, lora, (int)b->T);
        model_step(m, lora, kv, b->ids + r * b->T, 3, step);
        for (size_t t = 3; t < b->T; t++) model_step(m, lora, kv, b->ids + r * b->T + t, 1, step);
        const float *want = logits + (r * b->T + b->T - 1) * V;
        for (size_t j = 0; j < V; j++) {
            const double e = fabs((double)step[j] - want[j]);
            worst = fmax(worst, e);
            ok &= e <= TOL_LOGITS_ATOL + TOL_LOGITS_RTOL * fabs(want[j]);
        }
        kv_free(kv);
    }
    EXPECT(ok, "%s: KV-cache logits%s == full forward (max abs diff %.2e)", name, lora ? " with the adapter" : "",
           worst);
    free(step);
}

// The seven LLaMA target names, in slot order (docs/llama.md section 4).
static const char *const LLAMA_TARGETS[7] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};

// dir/adapter_model.safetensors holds exactly PEFT's keys for every (layer, target) with
// lora's shapes (A [r, in], B [out, r]) and values.
static void check_adapter_keys(const LoraSet *lora, const char *dir, const char *name) {
    char path[400], key[256];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    SafeTensors st;
    Error err = {0};
    CHECK(st_open(&st, path, &err));
    bool keys = st.n_tensors == (size_t)lora->n_layer * 7 * 2, values = true;
    for (int l = 0; l < lora->n_layer; l++)
        for (int t = 0; t < 7; t++)
            for (int is_b = 0; is_b < 2; is_b++) {
                snprintf(key, sizeof key, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", l,
                         t < 4 ? "self_attn" : "mlp", LLAMA_TARGETS[t], is_b ? 'B' : 'A');
                const LoraLinear *ll = &lora->lin[l * LORA_N_TARGETS + t];
                const StTensor *x = st_find(&st, key);
                const size_t rows = is_b ? ll->out : (size_t)lora->r, cols = is_b ? (size_t)lora->r : ll->in;
                keys &= x && x->ndim == 2 && x->shape[0] == rows && x->shape[1] == cols;
                if (!x || x->n_elements != rows * cols || !ll->A) continue;
                float *v = xmalloc(rows * cols * sizeof(float));
                values &= st_read_f32(&st, x, v, &err) && memcmp(v, is_b ? ll->B : ll->A, rows * cols * 4) == 0;
                free(v);
            }
    EXPECT(keys, "%s: adapter_model.safetensors has exactly PEFT's %d keys "
           "(base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight ...) with [r, in] / [out, r]",
           name, lora->n_layer * 14);
    EXPECT(values, "%s: the saved tensors hold the adapter's values", name);
    st_close(&st);
}

// js[key] is the string want.
static bool json_str_is(const cJSON *js, const char *key, const char *want) {
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(js, key));
    return v && strcmp(v, want) == 0;
}

// dir/adapter_config.json has PEFT's fields for lora: the seven target names (any order),
// fan_in_fan_out false (nn.Linear, not Conv1D), r, lora_alpha, peft_type, task_type.
static void check_adapter_config(const LoraSet *lora, const char *dir, const char *name) {
    char path[400];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    Error err = {0};
    cJSON *js = json_parse_file(path, &err);
    const cJSON *tm = js ? cJSON_GetObjectItem(js, "target_modules") : NULL;
    bool names = cJSON_GetArraySize(tm) == 7;
    for (int t = 0; t < 7 && names; t++) {
        bool found = false;
        for (int i = 0; i < 7; i++) {
            const char *v = cJSON_GetStringValue(cJSON_GetArrayItem(tm, i));
            found |= v && strcmp(v, LLAMA_TARGETS[t]) == 0;
        }
        names &= found;
    }
    EXPECT(js && names && cJSON_IsFalse(cJSON_GetObjectItem(js, "fan_in_fan_out")),
           "%s: adapter_config.json: fan_in_fan_out false and the seven target names", name);
    EXPECT(js && cJSON_GetNumberValue(cJSON_GetObjectItem(js, "r")) == lora->r &&
               cJSON_GetNumberValue(cJSON_GetObjectItem(js, "lora_alpha")) == lora->alpha &&
               json_str_is(js, "peft_type", "LORA") && json_str_is(js, "task_type", "CAUSAL_LM"),
           "%s: adapter_config.json: r %d, lora_alpha %g, peft_type LORA, task_type CAUSAL_LM", name, lora->r,
           (double)lora->alpha);
    cJSON_Delete(js);
}

// WeightDelta for model_save_hf: folds the adapter ctx into every linear (what qlora merge does).
static void merge_delta(void *ctx, int layer, int target, float *w) {
    lora_merge_into(ctx, layer, (LoraTarget)target, w, NULL, NULL);
}

// Save the adapter, reload it: the same values bit for bit, PEFT's key and config format; write
// a merged folder and reload it: its logits are base + adapter's.
static void check_save_and_merge(const Model *m, const LoraSet *lora, const Batch *b, const float *lora_logits,
                                 const char *dir, const char *name) {
    char tmp[] = "/tmp/qlora-test-llama-XXXXXX";
    CHECK(mkdtemp(tmp));
    Error err = {0};
    EXPECT(lora_save_peft(lora, tmp, &err), "%s: save adapter (%s)", name, err.msg);
    LoraSet back;
    LoraShapes shapes = model_lora_shapes(&m->cfg);
    const bool loaded = lora_load_peft(&back, tmp, m->cfg.n_layer, &shapes, &err);
    EXPECT(loaded && back.n_params == lora->n_params &&
               memcmp(back.params, lora->params, lora->n_params * sizeof(float)) == 0 && back.r == lora->r &&
               back.alpha == lora->alpha,
           "%s: a saved adapter reloads bit for bit (%s)", name, err.msg);
    if (loaded) lora_free(&back);
    check_adapter_keys(lora, tmp, name);
    check_adapter_config(lora, tmp, name);
    EXPECT(model_save_hf(m, dir, tmp, merge_delta, (void *)lora, &err), "%s: merged folder (%s)", name, err.msg);
    Model merged = load(tmp, QUANT_NONE, 64);
    const size_t n = b->B * b->T * (size_t)m->cfg.vocab_size;
    float *logits = xmalloc(n * sizeof(float));
    forward(&merged, NULL, b, logits);
    // W + scaling B A in fp32 vs the two-branch sum: rounding of the merged weight only
    char what[200];
    snprintf(what, sizeof what, "%s: merged model's logits == base + adapter", name);
    EXPECT_CLOSE(what, logits, lora_logits, n, TOL_LOGITS_ATOL, TOL_LOGITS_RTOL);
    free(logits);
    model_free(&merged);
    char cmd[500];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    CHECK(system(cmd) == 0);
}

// Every check on one fixture folder.
static void check_fixture(const Fixture *f) {
    char dir[300], ref[300], adapter[300], grads[300], what[300];
    snprintf(dir, sizeof dir, "tests/ref/llama/%s", f->model);
    snprintf(ref, sizeof ref, "tests/ref/llama/%s_ref.safetensors", f->ref);
    snprintf(adapter, sizeof adapter, "tests/ref/llama/%s_lora", f->ref);
    snprintf(grads, sizeof grads, "tests/ref/llama/%s_lora_grads.safetensors", f->ref);
    SafeTensors st;
    Error err = {0};
    CHECK(st_open(&st, ref, &err));
    Batch b = read_batch(&st);
    size_t n, n1;
    float *want = read_f32(&st, "logits", &n), *want_loss = read_f32(&st, "loss", &n1);
    float *peft = read_f32(&st, "peft_logits", &n1), *peft_loss = read_f32(&st, "peft_loss", &n1);
    Model m = load(dir, QUANT_NONE, 64);
    float *got = xmalloc(n * sizeof(float));
    const double loss = forward(&m, NULL, &b, got);
    snprintf(what, sizeof what, "%s: logits vs transformers", f->model);
    EXPECT_CLOSE(what, got, want, n, TOL_LOGITS_ATOL, TOL_LOGITS_RTOL);
    EXPECT(fabs(loss - want_loss[0]) <= TOL_LOSS_RTOL * want_loss[0], "%s: loss %.7f vs transformers %.7f",
           f->model, loss, (double)want_loss[0]);
    check_kv_cache(&m, NULL, &b, got, f->model);
    LoraSet lora;
    LoraShapes shapes = model_lora_shapes(&m.cfg);
    const bool loaded = lora_load_peft(&lora, adapter, m.cfg.n_layer, &shapes, &err);
    EXPECT(loaded && lora.n_layer == m.cfg.n_layer, "%s: PEFT's adapter loads (%s)", f->model, err.msg);
    if (loaded) {
        const double lora_loss = forward(&m, &lora, &b, got);
        snprintf(what, sizeof what, "%s: logits with PEFT's adapter vs PEFT", f->model);
        EXPECT_CLOSE(what, got, peft, n, TOL_LOGITS_ATOL, TOL_LOGITS_RTOL);
        EXPECT(fabs(lora_loss - peft_loss[0]) <= TOL_LOSS_RTOL * peft_loss[0],
               "%s: loss with the adapter %.7f vs PEFT %.7f", f->model, lora_loss, (double)peft_loss[0]);
        snprintf(what, sizeof what, "%s: LoRA gradients vs torch autograd", f->model);
        check_lora_grads(&m, &lora, &b, grads, ACTS_TRAIN, what);
        snprintf(what, sizeof what, "%s: LoRA gradients with gradient checkpointing vs torch", f->model);
        check_lora_grads(&m, &lora, &b, grads, ACTS_CHECKPOINT, what);
        check_kv_cache(&m, &lora, &b, got, f->model);
        check_save_and_merge(&m, &lora, &b, got, dir, f->model);
        lora_free(&lora);
    }
    model_free(&m);
    Model mq = load(dir, QUANT_NF4, 32);
    const double loss_q = forward(&mq, NULL, &b, want);  // want: reused for the NF4 logits
    EXPECT(fabs(loss_q - loss) <= TOL_NF4_SANITY_REL * loss, "%s: NF4 + double quant loss %.5f within 10%% of "
           "fp32 %.5f (%.2f%%)", f->model, loss_q, loss, 100 * fabs(loss_q - loss) / loss);
    dequantize_in_place(&mq);
    forward(&mq, NULL, &b, got);
    snprintf(what, sizeof what, "%s: NF4 logits == fp32 logits of the dequantized weights", f->model);
    EXPECT_CLOSE(what, want, got, n, TOL_LOGITS_ATOL, TOL_LOGITS_RTOL);
    model_free(&mq);
    free(got); free(want); free(want_loss); free(peft); free(peft_loss);
    free(b.ids); free(b.targets);
    st_close(&st);
}

// Gradients of every model parameter (method full) of m on b in mode; *ps gets the table
// (stb_ds array, caller frees with arrfree), the result one array per entry (free_grads).
static float **full_grads(const Model *m, const Batch *b, ActsMode mode, ModelParam **ps) {
    *ps = NULL;
    model_params(m, ps);
    const size_t np = arrlenu(*ps);
    float **g = xcalloc(np, sizeof(float *));
    for (size_t i = 0; i < np; i++) g[i] = xcalloc((*ps)[i].n, sizeof(float));
    TrainCtx tc = {.full_grads = g};
    Acts *a = acts_create(m, NULL, b->B, b->T, mode);
    size_t cnt = 0;
    model_forward_backward(m, NULL, a, b->ids, b->targets, b->B, b->T, 1.0f / (float)b->n_pred, &tc, &cnt);
    acts_free(a);
    return g;
}

// Free full_grads' arrays.
static void free_grads(float **g, size_t np) {
    for (size_t i = 0; i < np; i++) free(g[i]);
    free(g);
}

// Method full on llama_tied: every parameter's gradient against torch (the embedding is also
// the output layer, and gets the gradient of both uses).
static void check_full_grads(void) {
    Model m = load("tests/ref/llama/llama_tied", QUANT_NONE, 64);
    SafeTensors st, gs;
    Error err = {0};
    CHECK(st_open(&st, "tests/ref/llama/llama_tied_ref.safetensors", &err));
    CHECK(st_open(&gs, "tests/ref/llama/llama_tied_full_grads.safetensors", &err));
    Batch b = read_batch(&st);
    ModelParam *ps;
    float **g = full_grads(&m, &b, ACTS_TRAIN, &ps);
    const size_t np = arrlenu(ps);
    EXPECT(np == gs.n_tensors, "full: %zu parameters, torch has %zu gradients", np, gs.n_tensors);
    for (size_t i = 0; i < np; i++) {
        size_t n = 0;
        const StTensor *t = st_find(&gs, ps[i].name);
        EXPECT(t && t->n_elements == ps[i].n, "full: torch has a gradient for %s", ps[i].name);
        if (!t || t->n_elements != ps[i].n) continue;
        float *want = read_f32(&gs, ps[i].name, &n);
        char what[200];
        snprintf(what, sizeof what, "full: gradient of %s vs torch", ps[i].name);
        EXPECT_CLOSE(what, g[i], want, n, TOL_GRAD_ATOL, TOL_GRAD_RTOL);
        free(want);
    }
    free_grads(g, np);
    arrfree(ps);
    free(b.ids); free(b.targets);
    st_close(&st);
    st_close(&gs);
    model_free(&m);
}

// Method full with gradient checkpointing == without, for every parameter, on a tied and an
// untied fixture (the untied head's lm_head.weight is the last parameter).
static void check_full_checkpoint(const char *model, const char *ref) {
    char dir[200], path[200];
    snprintf(dir, sizeof dir, "tests/ref/llama/%s", model);
    snprintf(path, sizeof path, "tests/ref/llama/%s_ref.safetensors", ref);
    Model m = load(dir, QUANT_NONE, 64);
    SafeTensors st;
    Error err = {0};
    CHECK(st_open(&st, path, &err));
    Batch b = read_batch(&st);
    ModelParam *ps, *ps2;
    float **g = full_grads(&m, &b, ACTS_TRAIN, &ps), **gc = full_grads(&m, &b, ACTS_CHECKPOINT, &ps2);
    const size_t np = arrlenu(ps);
    size_t n = 0;
    for (size_t i = 0; i < np; i++) n += ps[i].n;
    float *all = xmalloc(n * sizeof(float)), *allc = xmalloc(n * sizeof(float));
    for (size_t i = 0, o = 0; i < np; o += ps[i].n, i++) {
        memcpy(all + o, g[i], ps[i].n * sizeof(float));
        memcpy(allc + o, gc[i], ps[i].n * sizeof(float));
    }
    char what[200];
    snprintf(what, sizeof what, "%s: full gradients (%zu tensors) with gradient checkpointing == without", model, np);
    EXPECT_CLOSE(what, allc, all, n, TOL_RECOMPUTE_ATOL, TOL_RECOMPUTE_RTOL);
    free(all); free(allc);
    free_grads(g, np); free_grads(gc, np);
    arrfree(ps); arrfree(ps2);
    free(b.ids); free(b.targets);
    st_close(&st);
    model_free(&m);
}

// A config.json in transformers 4.x's form (top-level rope_theta, "rope_scaling": null, no
// rope_parameters) loads as the 5.x form: tests/ref/llama/llama_tied/config_v4style.json
// (which 5.17 reads as theta 10000, ref.json's config_v4style_loads_as) and llama_untied's
// config rewritten that way (theta 500000, so a top-level theta read as the default 10000 would
// show): logits bit for bit those of the fixture's own config.json.
static void check_v4_config(const char *model, const char *v4_file) {
    char tmp[] = "/tmp/qlora-test-llama-v4-XXXXXX", path[300];
    CHECK(mkdtemp(tmp));
    CHECK(test_sh("cp tests/ref/llama/%s/* %s/", model, tmp) == 0);
    snprintf(path, sizeof path, "%s/config.json", tmp);
    Error err = {0};
    if (v4_file) {
        CHECK(test_sh("cp tests/ref/llama/%s/%s %s", model, v4_file, path) == 0);
    } else {
        cJSON *js = json_parse_file(path, &err);
        CHECK(js);
        const double theta = cJSON_GetNumberValue(
            cJSON_GetObjectItem(cJSON_GetObjectItem(js, "rope_parameters"), "rope_theta"));
        cJSON_DeleteItemFromObject(js, "rope_parameters");
        cJSON_AddNumberToObject(js, "rope_theta", theta);
        cJSON_AddNullToObject(js, "rope_scaling");
        CHECK(json_write_file(path, js, &err));
        cJSON_Delete(js);
    }
    char dir[200], ref[200];
    snprintf(dir, sizeof dir, "tests/ref/llama/%s", model);
    snprintf(ref, sizeof ref, "tests/ref/llama/%s_ref.safetensors", model);
    SafeTensors st;
    CHECK(st_open(&st, ref, &err));
    Batch b = read_batch(&st);
    Model m = load(dir, QUANT_NONE, 64), m4 = load(tmp, QUANT_NONE, 64);
    const size_t n = b.B * b.T * (size_t)m.cfg.vocab_size;
    float *want = xmalloc(n * sizeof(float)), *got = xmalloc(n * sizeof(float));
    forward(&m, NULL, &b, want);
    forward(&m4, NULL, &b, got);
    EXPECT(m4.cfg.rope_theta == m.cfg.rope_theta && memcmp(got, want, n * sizeof(float)) == 0,
           "%s: a transformers 4.x-style config.json (%s) loads with rope theta %g (%g) and the same logits",
           model, v4_file ? v4_file : "rewritten", (double)m.cfg.rope_theta, (double)m4.cfg.rope_theta);
    free(want); free(got);
    free(b.ids); free(b.targets);
    model_free(&m); model_free(&m4);
    st_close(&st);
    test_sh("rm -rf %s", tmp);
}

int main(void) {
    for (size_t i = 0; i < sizeof FIXTURES / sizeof FIXTURES[0]; i++) check_fixture(&FIXTURES[i]);
    static const char *const GREEDY[] = {"llama_tied", "llama_untied", "qwen2", "mistral"};
    for (int i = 0; i < 4; i++) {
        char dir[200];
        snprintf(dir, sizeof dir, "tests/ref/llama/%s", GREEDY[i]);
        Model g = load(dir, QUANT_NONE, 64);
        check_greedy(&g, GREEDY[i]);
        model_free(&g);
    }
    check_full_grads();
    check_full_checkpoint("llama_tied", "llama_tied");
    check_full_checkpoint("llama_untied", "llama_untied");
    check_v4_config("llama_tied", "config_v4style.json");
    check_v4_config("llama_untied", NULL);
    return test_summary("test_llama_model");
}
