// test_ops.c: the layer kernels against their plain references and the worked vectors of
// docs/formats.md ("Worked values": gelu_new, LayerNorm): the vectorised exp, GELU forward/backward,
// LayerNorm, cross-entropy, attention, and the four matmul wrappers with strides on both
// matrix-product engines.
#include <stdint.h>
#include <stdlib.h>

#include "gemm.h"
#include "ops.h"
#include "test.h"
#include "util.h"

static void fill(float *x, size_t n, float scale, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(&r);
}

static void test_exp(void) {
    // ops_exp replaces expf in the hot loops: within 2 ulp (2.4e-7 relative) of libm over
    // the whole range the kernels use, and exact limits
    double worst = 0;
    for (float x = -87.0f; x <= 88.0f; x += 0.00731f) {
        double ref = exp((double)x), got = ops_exp(x);
        worst = fmax(worst, fabs(got - ref) / ref);
    }
    EXPECT(worst < 2.4e-7, "ops_exp within 2 ulp of exp on [-87, 88] (max rel err %.2e)", worst);
    EXPECT(ops_exp(0.0f) == 1.0f && ops_exp(-1000.0f) < 1e-37f && isfinite(ops_exp(1000.0f)),
           "ops_exp(0) = 1, clamps far outside the range");
    // NaN propagates (the NaN guard of training relies on it) without undefined behaviour:
    // a NaN once reached a left shift of a negative value (UBSan, make test SANITIZE=1)
    EXPECT(isnan(ops_exp(NAN)) && isnan(ops_exp(-NAN)), "ops_exp(NaN) is NaN");
}

static void test_gelu(void) {
    // gelu_new worked values (docs/formats.md) and its derivative, printed to 10 digits
    const float x[7] = {-3, -1, -0.5f, 0, 0.5f, 1, 2};
    const float y[7] = {-0.0036373921f, -0.1588080094f, -0.1542859902f, 0.0f, 0.3457140098f, 0.8411919906f, 1.9545976941f};
    const float d[7] = {-0.0115841666f, -0.0829640838f, 0.1326300965f, 0.5f, 0.8673699035f, 1.0829640838f, 1.0860992566f};
    float got[7], dgot[7] = {0}, ones[7] = {1, 1, 1, 1, 1, 1, 1};
    gelu_forward(got, x, 7);
    gelu_backward(dgot, x, ones, 7);
    // TV5 is printed to 10 significant digits; f32 evaluation adds a few ulp
    EXPECT_CLOSE("gelu_new vs TV5", got, y, 7, 1e-9, 1e-6);
    EXPECT_CLOSE("gelu_new' vs TV5", dgot, d, 7, 1e-9, 1e-6);
    // against gelu_new and its derivative in double on 4096 values of N(0, 9): a few f32
    // ulp relative, with an absolute floor for values that round to ~0
    const size_t n = 4096;
    float *a = malloc(n * 4), *b = malloc(n * 4), *r = malloc(n * 4), *db = calloc(n, 4), *dr = malloc(n * 4);
    float *one = malloc(n * 4);
    fill(a, n, 3.0f, 1);
    for (size_t i = 0; i < n; i++) {
        double xv = a[i], u = 0.7978845608028654 * (xv + 0.044715 * xv * xv * xv), t = tanh(u);
        r[i] = (float)(0.5 * xv * (1 + t));
        dr[i] = (float)(0.5 * (1 + t) + 0.5 * xv * (1 - t * t) * 0.7978845608028654 * (1 + 3 * 0.044715 * xv * xv));
        one[i] = 1.0f;
    }
    gelu_forward(b, a, n);
    gelu_backward(db, a, one, n);
    EXPECT_CLOSE("gelu_forward vs double", b, r, n, 1e-12, 2e-6);
    EXPECT_CLOSE("gelu_backward vs double", db, dr, n, 1e-7, 2e-6);
    free(a);
    free(b);
    free(r);
    free(db);
    free(dr);
    free(one);
}

static void test_layernorm(void) {
    const float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 1, 1}, bias[4] = {0};
    const float want[4] = {-1.34163542f, -0.447211807f, 0.447211807f, 1.34163542f};  // TV6
    float y[4], mean, rstd;
    layernorm_forward(y, &mean, &rstd, x, w, bias, 1, 4, 1e-5f);
    EXPECT_CLOSE("LayerNorm vs TV6", y, want, 4, 0, 1e-6);
    EXPECT(mean == 2.5f, "LayerNorm mean 2.5");
    const size_t N = 37, C = 96;
    float *in = malloc(N * C * 4), *g = malloc(C * 4), *bb = malloc(C * 4), *o1 = malloc(N * C * 4), *o2 = malloc(N * C * 4);
    fill(in, N * C, 2.0f, 2);
    fill(g, C, 1.0f, 3);
    fill(bb, C, 1.0f, 4);
    for (size_t i = 0; i < N * C; i++) in[i] += 50.0f;  // a large mean: variance in double matters
    layernorm_forward(o1, NULL, NULL, in, g, bb, N, C, 1e-5f);
    layernorm_forward_ref(o2, NULL, NULL, in, g, bb, N, C, 1e-5f);
    // x - mean in f32 at |x| ~ 50 loses ~5 bits: |x| eps rstd |w| ~ 50 * 6e-8 * 0.5 * 3 ~ 5e-6
    EXPECT_CLOSE("layernorm_forward vs _ref (double)", o1, o2, N * C, 1e-5, 1e-5);
    free(in);
    free(g);
    free(bb);
    free(o1);
    free(o2);
}

static void test_xent(void) {
    const size_t n = 5, V = 1000;
    float *l = malloc(n * V * 4), *l2 = malloc(n * V * 4);
    fill(l, n * V, 4.0f, 5);
    memcpy(l2, l, n * V * 4);
    int tgt[5] = {3, -1, 999, 0, 500};
    double ref = 0;
    for (size_t r = 0; r < n; r++) {
        if (tgt[r] < 0) continue;
        double mx = -1e30, s = 0;
        for (size_t j = 0; j < V; j++) mx = fmax(mx, l[r * V + j]);
        for (size_t j = 0; j < V; j++) s += exp(l[r * V + j] - mx);
        ref += mx + log(s) - l[r * V + tgt[r]];
    }
    size_t count = 0;
    // the kernel sums the 1000 exponentials of a row in f32 lanes and uses a 2-ulp exp:
    // ~1e-6 relative on the row's log-sum-exp, so 1e-5 on the total
    double got = softmax_xent(l, tgt, n, V, 0.25f, &count);
    EXPECT(count == 4 && fabs(got - ref) <= 1e-5 * ref, "cross-entropy %.7f vs double reference %.7f", got, ref);
    double sum_grad = 0, g_tgt = l[0 * V + 3];
    for (size_t j = 0; j < V; j++) sum_grad += l[j];
    int zero_row = 1;
    for (size_t j = 0; j < V; j++) zero_row &= l[1 * V + j] == 0.0f;
    // d/dlogits of 0.25 * loss: 0.25 * (softmax - onehot): rows sum to 0 (up to f32 rounding
    // of 1000 terms of size <= 0.25: 1e-6), target entry < 0
    EXPECT(fabs(sum_grad) < 1e-6 && g_tgt < 0 && zero_row, "dlogits rows sum to 0 (%.2e), ignored row is zero", sum_grad);
    free(l);
    free(l2);
}

// The four wrappers against their double references, on both engines (OpenBLAS, and the
// native kernel where the CPU has AVX-512).
static void test_gemm(void) {
    const size_t M = 33, N = 47, K = 70, ld = 80;
    float *A = malloc(ld * ld * 4), *B = malloc(ld * ld * 4), *C1 = malloc(ld * ld * 4), *C2 = malloc(ld * ld * 4);
    fill(A, ld * ld, 1, 6);
    fill(B, ld * ld, 1, 7);
    fill(C1, ld * ld, 1, 8);
    memcpy(C2, C1, ld * ld * 4);
    typedef void (*Matmul)(float *, const float *, const float *, size_t, size_t, size_t, float,
                           float, size_t, size_t, size_t);
    static const struct {
        const char *name;
        Matmul fn, ref;
        float alpha, beta;  // accumulating and overwriting calls, alpha 1 and not
    } ops[] = {
        {"matmul_nt (strided, accumulate)", matmul_nt, matmul_nt_ref, 0.5f, 1.0f},
        {"matmul_nn", matmul_nn, matmul_nn_ref, 1.0f, 0.0f},
        {"matmul_tn", matmul_tn, matmul_tn_ref, 1.0f, 1.0f},
        {"matmul_tt", matmul_tt, matmul_tt_ref, 0.5f, 1.0f},
    };
    static const char *const engines[] = {"openblas", "native"};
    for (int e = 0; e < 2; e++) {
        Error err;
        if (!gemm_engine_set(engines[e], &err)) continue;  // no AVX-512 here
        for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
            char name[80];
            snprintf(name, sizeof name, "%s %s", engines[e], ops[o].name);
            // a float sum of 70 products of N(0,1) values (|C| up to ~25) against the exact
            // double sum: typically sqrt(K) u |C| ~ 1e-5 apart; 1e-5 + 1e-4 |ref| leaves room
            // for the worst of 6,400 values, while a wrong index or transpose is off by O(1)
            ops[o].fn(C1, A, B, M, N, K, ops[o].alpha, ops[o].beta, ld, ld, ld);
            ops[o].ref(C2, A, B, M, N, K, ops[o].alpha, ops[o].beta, ld, ld, ld);
            EXPECT_CLOSE(name, C1, C2, ld * ld, 1e-5, 1e-4);
        }
    }
    Error err;
    gemm_engine_set("auto", &err);
    free(A);
    free(B);
    free(C1);
    free(C2);
}

static void test_attention(void) {
    const size_t B = 2, T = 9, C = 16, NH = 2, HS = C / NH;
    float *qkv = malloc(B * T * 3 * C * 4), *out = malloc(B * T * C * 4), *att = malloc(B * NH * T * T * 4);
    float *ref = malloc(B * T * C * 4);
    fill(qkv, B * T * 3 * C, 1, 9);
    attention_forward(out, att, qkv, B, T, C, NH, NULL, false);
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < NH; h++)
            for (size_t t = 0; t < T; t++) {
                double s[9], mx = -1e30, z = 0;
                const float *q = qkv + (b * T + t) * 3 * C + h * HS;
                for (size_t j = 0; j <= t; j++) {
                    const float *k = qkv + (b * T + j) * 3 * C + C + h * HS;
                    s[j] = 0;
                    for (size_t d = 0; d < HS; d++) s[j] += (double)q[d] * k[d];
                    s[j] /= sqrt((double)HS);
                    mx = fmax(mx, s[j]);
                }
                for (size_t j = 0; j <= t; j++) z += exp(s[j] - mx);
                for (size_t d = 0; d < HS; d++) {
                    double o = 0;
                    for (size_t j = 0; j <= t; j++) o += exp(s[j] - mx) / z * qkv[(b * T + j) * 3 * C + 2 * C + h * HS + d];
                    ref[(b * T + t) * C + h * HS + d] = (float)o;
                }
            }
    EXPECT_CLOSE("causal attention vs a double-precision loop", out, ref, B * T * C, 1e-6, 1e-5);
    int causal = 1;
    for (size_t r = 0; r < B * NH * T; r++)
        for (size_t j = r % T + 1; j < T; j++) causal &= att[r * T + j] == 0.0f;
    EXPECT(causal, "probabilities above the diagonal are exactly 0");
    free(qkv);
    free(out);
    free(att);
    free(ref);
}

int main(void) {
    test_exp();
    test_gelu();
    test_layernorm();
    test_xent();
    test_gemm();
    test_attention();
    return test_summary("test_ops");
}
