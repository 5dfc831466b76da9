// test_grad.c: gradients of the mean next-token loss against PyTorch autograd (float64,
// tests/ref/tiny_grads.safetensors from make_train_ref.py) for LoRA on an fp32 base and for
// method full; gradient checkpointing identical to the plain backward; QLoRA (NF4 base)
// against an fp32 base holding the same dequantized weights; and central finite
// differences along random directions for the NF4 path, with and without LoRA dropout.
#include <stdlib.h>

#include "ds.h"
#include "model.h"
#include "safetensors.h"
#include "test.h"
#include "test_models.h"

// fp32 backward vs float64 autograd through two layers: relative errors of a few 1e-6 on
// typical entries; entries near zero need the absolute term. 1e-3 relative + 1e-6
// absolute is ~100x above what we see and far below any real bug (wrong transpose,
// missing term: O(1) relative).
#define TOL_GRAD_RTOL 1e-3
#define TOL_GRAD_ATOL 1e-6

static SafeTensors ref;
static int tokens[2 * 24], targets[2 * 24];
static size_t B, T, n_pred;

static Model load(QuantType qt) {
    Model m;
    QuantConfig q = {qt, 64, true};
    Error err = {0};
    CHECK(model_load(&m, "tests/ref/tiny", &q, &err));
    return m;
}

static LoraSet load_lora(const Model *m) {
    LoraSet ls;
    LoraShapes shapes = model_lora_shapes(&m->cfg);
    Error err = {0};
    CHECK(lora_load_peft(&ls, "tests/ref/lora_init", m->cfg.n_layer, &shapes, &err));
    lora_alloc_grads(&ls);
    return ls;
}

static double loss_and_grads(const Model *m, LoraSet *ls, ActsMode mode, const TrainCtx *tc) {
    Acts *a = acts_create(m, ls, B, T, mode);
    if (ls) memset(ls->grads, 0, ls->n_params * sizeof(float));
    size_t count = 0;
    double loss = model_forward_backward(m, ls, a, tokens, targets, B, T, 1.0f / (float)n_pred, tc, &count);
    acts_free(a);
    return loss / (double)count;
}

static void compare(const char *key, const float *got, size_t n) {
    const StTensor *t = st_find(&ref, key);
    if (!t || t->n_elements != n) {
        EXPECT(0, "fixture tensor %s with %zu elements", key, n);
        return;
    }
    float *want = malloc(n * sizeof(float));
    Error err = {0};
    CHECK(st_read_f32(&ref, t, want, &err));
    EXPECT_CLOSE(key, got, want, n, TOL_GRAD_ATOL, TOL_GRAD_RTOL);
    free(want);
}

static void test_lora_grads(void) {
    Model m = load(QUANT_NONE);
    LoraSet ls = load_lora(&m);
    loss_and_grads(&m, &ls, ACTS_TRAIN, NULL);
    static const char *const MOD[4] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
    for (int l = 0; l < m.cfg.n_layer; l++)
        for (int t = 0; t < 4; t++) {
            const LoraLinear *ll = &ls.lin[l * LORA_N_TARGETS + t];
            char key[200];
            snprintf(key, sizeof key, "lora.base_model.model.transformer.h.%d.%s.lora_A.weight", l, MOD[t]);
            compare(key, ll->dA, (size_t)ls.r * ll->in);
            snprintf(key, sizeof key, "lora.base_model.model.transformer.h.%d.%s.lora_B.weight", l, MOD[t]);
            compare(key, ll->dB, (size_t)ls.r * ll->out);
        }
    // gradient checkpointing recomputes the same activations: identical gradients
    float *g1 = malloc(ls.n_params * sizeof(float));
    memcpy(g1, ls.grads, ls.n_params * sizeof(float));
    loss_and_grads(&m, &ls, ACTS_CHECKPOINT, NULL);
    EXPECT(memcmp(g1, ls.grads, ls.n_params * sizeof(float)) == 0,
           "gradient checkpointing gives bit-identical LoRA gradients");
    free(g1);
    lora_free(&ls);
    model_free(&m);
}

static void test_full_grads(void) {
    Model m = load(QUANT_NONE);
    ModelParam *params = NULL;
    model_params(&m, &params);
    float **grads = malloc(arrlenu(params) * sizeof(float *));
    for (size_t i = 0; i < arrlenu(params); i++) grads[i] = calloc(params[i].n, sizeof(float));
    TrainCtx tc = {.full_grads = grads};
    loss_and_grads(&m, NULL, ACTS_TRAIN, &tc);
    EXPECT(arrlenu(params) == 4 + 2 * 12, "model_params lists 28 tensors (%zu)", arrlenu(params));
    for (size_t i = 0; i < arrlenu(params); i++) {
        char key[100];
        snprintf(key, sizeof key, "full.%s", params[i].name);
        compare(key, grads[i], params[i].n);
        free(grads[i]);
    }
    free(grads);
    arrfree(params);
    model_free(&m);
}

// Central difference of the mean loss along direction d (over all LoRA parameters) vs the
// analytic directional derivative g.d; returns the relative error.
static double directional_check(const Model *m, LoraSet *ls, const TrainCtx *tc, uint64_t seed) {
    const size_t n = ls->n_params;
    float *d = malloc(n * sizeof(float)), *p0 = malloc(n * sizeof(float));
    Rng r;
    rng_seed(&r, seed);
    double norm = 0;
    for (size_t i = 0; i < n; i++) {
        d[i] = rng_normal(&r);
        norm += (double)d[i] * d[i];
    }
    for (size_t i = 0; i < n; i++) d[i] /= (float)sqrt(norm);
    memcpy(p0, ls->params, n * sizeof(float));
    loss_and_grads(m, ls, ACTS_TRAIN, tc);
    double gd = 0;
    for (size_t i = 0; i < n; i++) gd += (double)ls->grads[i] * d[i];
    const float h = 1e-2f;  // |d| = 1: large enough that fp32 noise in the loss (~1e-6) is small
    for (size_t i = 0; i < n; i++) ls->params[i] = p0[i] + h * d[i];
    double lp = loss_and_grads(m, ls, ACTS_TRAIN, tc);
    for (size_t i = 0; i < n; i++) ls->params[i] = p0[i] - h * d[i];
    double lm = loss_and_grads(m, ls, ACTS_TRAIN, tc);
    memcpy(ls->params, p0, n * sizeof(float));
    free(d);
    free(p0);
    double fd = (lp - lm) / (2.0 * h);
    printf("  directional derivative: analytic %.6g, finite difference %.6g\n", gd, fd);
    return fabs(fd - gd) / (fabs(fd) + fabs(gd) + 1e-12);
}

static void test_qlora_grads(void) {
    Model mq = load(QUANT_NF4), md = load(QUANT_NF4);
    dequantize_in_place(&md);
    LoraSet a = load_lora(&mq), b = load_lora(&md);
    double la = loss_and_grads(&mq, &a, ACTS_TRAIN, NULL), lb = loss_and_grads(&md, &b, ACTS_TRAIN, NULL);
    // same math on the same weights; only sgemm tiling differs (NF4 dequantizes row tiles)
    EXPECT(fabs(la - lb) <= 1e-6 * fabs(lb), "NF4 loss == fp32-of-dequantized loss (%.8f vs %.8f)", la, lb);
    EXPECT_CLOSE("QLoRA grads vs fp32 base with the dequantized weights", a.grads, b.grads, a.n_params, 1e-7, 1e-4);
    // Symmetric relative error of a central difference with h = 1e-2 in fp32: ~1e-3
    // measured; 2e-2 (20x headroom over fp32 cancellation noise) still catches a sign or a
    // missing term.
    double e = directional_check(&mq, &a, NULL, 1);
    EXPECT(e < 2e-2, "QLoRA: finite difference agrees with the gradient (rel err %.2e)", e);
    TrainCtx drop = {.lora_dropout = 0.3f, .dropout_seed = 77};
    e = directional_check(&mq, &a, &drop, 2);
    EXPECT(e < 2e-2, "QLoRA with lora_dropout 0.3: finite difference agrees (rel err %.2e)", e);
    lora_free(&a);
    lora_free(&b);
    model_free(&mq);
    model_free(&md);
}

int main(void) {
    Error err = {0};
    CHECK(st_open(&ref, "tests/ref/tiny_grads.safetensors", &err));
    SafeTensors tr;
    CHECK(st_open(&tr, "tests/ref/tiny_ref.safetensors", &err));
    const StTensor *tt = st_find(&tr, "tokens");
    B = tt->shape[0];
    T = tt->shape[1];
    memcpy(tokens, tt->data, B * T * sizeof(int));
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < T; t++) {
            targets[b * T + t] = t + 1 < T ? tokens[b * T + t + 1] : -1;
            n_pred += t + 1 < T;
        }
    st_close(&tr);
    test_lora_grads();
    test_full_grads();
    test_qlora_grads();
    st_close(&ref);
    return test_summary("test_grad");
}
