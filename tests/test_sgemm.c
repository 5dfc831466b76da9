// test_sgemm.c: qlora's own AVX-512 sgemm (src/sgemm.c) against a double-precision
// reference with a rigorous error bound, on every transpose, sizes that cross each
// blocking boundary (MR = 12, NR = 32, KC = 256, NC = 1024, MC = 4092) and the K-split
// schedule of deep products, row strides, alpha and beta; plus beta = 0 over NaN, untouched padding, identical results for any thread
// count (every schedule also under oversubscription, 2 to 13 threads, where the work stealing
// and the alternating packing buffers are raced), and the engine switch (QLORA_GEMM).
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#include "gemm.h"
#include "qlinear.h"
#include "sgemm.h"
#include "test.h"
#include "test_stress.h"
#include "util.h"

static void fill(float *x, size_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&r);
}

// Checks C (from sgemm_native) against the exact product computed in double. Bound per
// element, the standard one for a float sum of K products (Higham, "Accuracy and Stability
// of Numerical Algorithms", 3.1): |err| <= gamma * (|alpha| sum_k |a_k b_k| + |beta c|)
// with gamma = (K + 3) u, u = 2^-24, the +3 covering the product, alpha and beta roundings.
// Also checks that C's padding columns (ldc > N) kept their value.
static void check_one(bool ta, bool tb, size_t M, size_t N, size_t K, float alpha, float beta,
                      int pad, uint64_t seed) {
    const size_t lda = (ta ? M : K) + (size_t)pad, ldb = (tb ? K : N) + (size_t)pad, ldc = N + (size_t)pad;
    const size_t na = (ta ? K : M) * lda, nb = (tb ? N : K) * ldb, nc = M * ldc;
    float *A = malloc((na + 1) * 4), *B = malloc((nb + 1) * 4), *C = malloc(nc * 4), *C0 = malloc(nc * 4);
    fill(A, na, seed);
    fill(B, nb, seed + 1);
    fill(C0, nc, seed + 2);
    memcpy(C, C0, nc * 4);
    sgemm_native(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    const double u = ldexp(1.0, -24), gamma = (double)(K + 3) * u;
    size_t bad = 0, pad_changed = 0;
    double worst = 0;
    for (size_t i = 0; i < M; i++) {
        for (size_t j = 0; j < N; j++) {
            double s = 0, sa = 0;
            for (size_t k = 0; k < K; k++) {
                double p = (double)(ta ? A[k * lda + i] : A[i * lda + k]) *
                           (double)(tb ? B[j * ldb + k] : B[k * ldb + j]);
                s += p;
                sa += fabs(p);
            }
            const double c0 = beta == 0.0f ? 0.0 : (double)beta * C0[i * ldc + j];
            const double ref = alpha * s + c0, bound = gamma * (fabs(alpha) * sa + fabs(c0)) + 1e-30;
            const double e = fabs(C[i * ldc + j] - ref);
            if (e / bound > worst) worst = e / bound;
            if (!(e <= bound)) bad++;
        }
        for (size_t j = N; j < ldc; j++) pad_changed += C[i * ldc + j] != C0[i * ldc + j];
    }
    EXPECT(bad == 0 && pad_changed == 0,
           "sgemm ta=%d tb=%d %zux%zux%zu alpha %g beta %g pad %d: %zu outside the bound "
           "(worst error %.2f of it), %zu padding values changed", ta, tb, M, N, K, alpha,
           beta, pad, bad, worst, pad_changed);
    free(A);
    free(B);
    free(C);
    free(C0);
}

static void test_shapes(void) {
    // {M, N, K}: one tile exactly, ragged edges of every kind, K across blocks, N across
    // NC, M across MC, the attention and LoRA shapes of GPT-2
    static const size_t shapes[][3] = {
        {1, 1, 1},    {12, 32, 16},  {13, 33, 17}, {11, 31, 257}, {5, 70, 600}, {40, 1100, 24},
        {4100, 20, 9}, {64, 64, 256}, {30, 8, 300}, {8, 100, 130},
        {100, 2000, 300},  // wide: the column-split schedule on 2 or 3 threads
        {20, 30, 20000}, {13, 40, 16400},  // deep: the K-split schedule (16 slices, ragged last)
        {260, 24, 16400},  // deep with 260 rows: K-split units of 2 row parts each
    };
    uint64_t seed = 1;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++)
            check_one(t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 0.7f, 0.5f,
                      (int)(s % 3) * 5, seed += 10);
    check_one(false, true, 50, 40, 70, 1.0f, 0.0f, 0, 99);   // overwrite
    check_one(true, false, 50, 40, 70, -2.0f, 1.0f, 3, 98);  // accumulate, negative alpha
}

// beta == 0 must not read C: a NaN there may not leak into the result.
static void test_beta_zero_ignores_nan(void) {
    const size_t M = 20, N = 40, K = 30;
    float *A = malloc(M * K * 4), *B = malloc(K * N * 4), *C = malloc(M * N * 4);
    fill(A, M * K, 5);
    fill(B, K * N, 6);
    for (size_t i = 0; i < M * N; i++) C[i] = NAN;
    sgemm_native(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
    size_t nans = 0;
    for (size_t i = 0; i < M * N; i++) nans += isnan(C[i]);
    EXPECT(nans == 0, "beta = 0 over a NaN-filled C: %zu NaN in the result", nans);
    // K == 0: C = beta * C
    for (size_t i = 0; i < M * N; i++) C[i] = 2.0f;
    sgemm_native(false, false, M, N, 0, 1.0f, A, K, B, N, 0.5f, C, N);
    EXPECT(C[0] == 1.0f && C[M * N - 1] == 1.0f, "K = 0 scales C by beta (%g)", (double)C[0]);
    free(A);
    free(B);
    free(C);
}

// Work is split over output tiles, never over K: any thread count gives the same bits.
static void test_thread_invariance(void) {
    // 300 x 500: the tile schedule; 200 x 1600: the column-split one (on 3 threads)
    const size_t M = 300, N = 1600, K = 700;
    float *A = malloc(M * K * 4), *B = malloc(N * K * 4), *C1 = malloc(M * N * 4), *C2 = malloc(M * N * 4);
    fill(A, M * K, 7);
    fill(B, N * K, 8);
    const int saved = omp_get_max_threads();
    for (int s = 0; s < 2; s++) {
        const size_t m = s ? 200 : 300, n = s ? 1600 : 500;
        omp_set_num_threads(1);
        sgemm_native(false, true, m, n, K, 1.0f, A, K, B, K, 0.0f, C1, n);
        omp_set_num_threads(3);
        sgemm_native(false, true, m, n, K, 1.0f, A, K, B, K, 0.0f, C2, n);
        EXPECT(memcmp(C1, C2, m * n * 4) == 0, "%zu x %zu: 1 and 3 threads give bit-identical products", m, n);
    }
    omp_set_num_threads(saved);
    free(A);
    free(B);
    free(C1);
    free(C2);
    // the K-split schedule: slices (and 4 parts of rows) fixed by the shape, whichever
    // thread runs them
    const size_t m = 520, n = 16, k = 20000;
    A = malloc(m * k * 4), B = malloc(k * n * 4), C1 = malloc(m * n * 4), C2 = malloc(m * n * 4);
    fill(A, m * k, 9);
    fill(B, k * n, 10);
    omp_set_num_threads(1);
    sgemm_native(false, false, m, n, k, 1.0f, A, k, B, n, 0.0f, C1, n);
    omp_set_num_threads(3);
    sgemm_native(false, false, m, n, k, 1.0f, A, k, B, n, 0.0f, C2, n);
    omp_set_num_threads(saved);
    EXPECT(memcmp(C1, C2, m * n * 4) == 0, "%zu x %zu x %zu (K split): 1 and 3 threads give bit-identical products", m, n, k);
    free(A);
    free(B);
    free(C1);
    free(C2);
}

// A panel source that reads a [N][K] float matrix (op(B) = W^T) through the public packing:
// sgemm_native_b's path, whose pieces of packed B come from fill.
typedef struct {
    const float *w;
    size_t K;
} Source;
static void fill_source(const void *ctx, size_t p0, size_t kc, size_t j0, size_t n, float *dst) {
    const Source *s = ctx;
    sgemm_pack_transposed(s->w + j0 * s->K + p0, s->K, n, kc, dst);
}

// The product under test of the stress checks (test_stress.h): sgemm_native, or
// sgemm_native_b from a panel source.
static void stress_product(const StressCase *c, const float *A, const float *B, float *C) {
    const size_t lda = c->ta ? c->M : c->K, ldb = c->tb || c->source ? c->K : c->N;
    if (c->source) {
        const Source src = {B, c->K};
        const SgemmPanelSource ps = {fill_source, &src};
        sgemm_native_b(c->ta, c->M, c->N, c->K, c->alpha, A, lda, &ps, c->beta, C, c->N);
    } else {
        sgemm_native(c->ta, c->tb, c->M, c->N, c->K, c->alpha, A, lda, B, ldb, c->beta, C, c->N);
    }
}

// Every schedule under oversubscription (the work stealing of sgemm.c and team.h): the tile
// split over several i0 blocks (M > MC = 4092; the last one of 8 rows has 7 or 2 tiles for up
// to 13 threads), over many K blocks (KC = 256) of one j0 block each, where a thread packs the
// next block's A and B while a descheduled one still computes this block's last tiles, and
// over several j0 blocks (N > NC = 1024), so that both A and both B buffers and both counter
// sets are reused; the column split (M <= 1024, N >= 2M and at least 16 panels per thread:
// 6,700 columns for 13 threads; 2,100 columns switch from it on 2-3 threads to the tile split
// on 7-13); the K split with 4 and 2 row parts; the batch. (Checked against seeded faults on
// a 2-core machine: product()'s A or B buffers or the counter sets made single,
// product_colsplit()'s A buffers made single, or the counters reset after the barrier, each
// failed checks here in 3 runs out of 3.)
static void test_stress(void) {
    static const StressCase cases[] = {
        {"tiles, 2 i0 x 3 K blocks", false, false, false, 4100, 200, 600, 0.7f, 0.5f},
        {"tiles, 2 i0 x 3 K blocks", true, true, false, 4100, 40, 600, 1.0f, 0.0f},
        {"tiles, 5 K blocks", false, true, false, 1100, 1000, 1030, 1.0f, 1.0f},
        {"tiles, 3 j0 x 3 K blocks", true, false, false, 1100, 2100, 600, 0.7f, 0.5f},
        {"tiles, 2 i0 x 2 j0 x 2 K blocks", false, true, false, 4100, 1100, 280, 1.0f, 1.0f},
        {"column split on 2-3 threads, tiles on 7-13", false, false, true, 600, 2100, 300, 1.0f, 1.0f},
        {"column split, 3 K blocks", true, false, false, 100, 6700, 600, 0.7f, 0.5f},
        {"column split, 3 K blocks", false, false, true, 64, 6700, 520, 1.0f, 0.0f},
        {"K split, 4 row parts", false, true, false, 520, 16, 20000, 1.0f, 0.0f},
        {"K split, 2 row parts", true, false, false, 260, 40, 16400, 0.7f, 0.5f},
    };
    uint64_t seed = 3000;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) stress_one("sgemm", stress_product, &cases[i], seed += 10);
    stress_batch("sgemm", sgemm_native_batch, false, true, 23, 64, 70, 300, 0.7f, 0.5f, seed += 10);
    stress_batch("sgemm", sgemm_native_batch, true, false, 5, 300, 130, 600, 0.7f, 0.5f, seed += 10);
}

static void test_engine_switch(void) {
    Error err = {0};
    EXPECT(!gemm_engine_set("fast", &err) && strstr(err.msg, "auto, openblas or native") &&
           strstr(err.msg, "'fast'"), "engine 'fast' is refused: %s", err.msg);
    EXPECT(gemm_engine_set("openblas", &err) && gemm_engine() == GEMM_OPENBLAS, "openblas selectable");
    EXPECT(gemm_engine_set("native", &err) && gemm_engine() == GEMM_NATIVE, "native selectable");
    // the wrappers route to the chosen engine and agree with each other on a GPT-2-like shape
    const size_t M = 96, N = 200, K = 768;
    float *A = malloc(M * K * 4), *B = malloc(N * K * 4), *C1 = malloc(M * N * 4), *C2 = malloc(M * N * 4);
    fill(A, M * K, 11);
    fill(B, N * K, 12);
    matmul_nt(C1, A, B, M, N, K, 1.0f, 0.0f, K, K, N);
    gemm_engine_set("openblas", &err);
    matmul_nt(C2, A, B, M, N, K, 1.0f, 0.0f, K, K, N);
    size_t differ = 0;
    for (size_t i = 0; i < M * N; i++) differ += C1[i] != C2[i];
    // both are float sums of 768 terms in different orders (|value| ~ 28, bound ~ 1e-3)
    EXPECT_CLOSE("matmul_nt native vs OpenBLAS", C1, C2, M * N, 1e-3, 0);
    EXPECT(differ > 0, "the two engines really ran (%zu of %zu values differ in the last bits)",
           differ, M * N);
    gemm_engine_set("auto", &err);
    free(A);
    free(B);
    free(C1);
    free(C2);
}

// qlinear's NF4 products with the codes dequantized straight into packed panels (native
// engine) against dequantize-a-tile-then-OpenBLAS, forward and input gradient; out = 520
// leaves a ragged last panel, in = 320 a ragged K block; both products are wide enough
// for the column-split schedule on 2+ threads.
static void test_fused_nf4(void) {
    const size_t in = 320, out = 520, N = 64;
    float *w = malloc(in * out * 4), *bias = malloc(out * 4), *x = malloc(N * in * 4), *dy = malloc(N * out * 4);
    float *y1 = malloc(N * out * 4), *y2 = malloc(N * out * 4), *dx1 = malloc(N * in * 4), *dx2 = malloc(N * in * 4);
    float *scratch = malloc(QLINEAR_TILE_FLOATS * 4);
    fill(w, in * out, 21);
    fill(bias, out, 22);
    fill(x, N * in, 23);
    fill(dy, N * out, 24);
    QLinear l;
    Error err = {0};
    CHECK(qlinear_init(&l, w, bias, in, out, QUANT_NF4, 64, true, "w", &err));
    for (size_t i = 0; i < N * in; i++) dx1[i] = dx2[i] = 0.5f;
    gemm_engine_set("native", &err);
    qlinear_forward(&l, y1, x, N, scratch, NULL);
    qlinear_backward_input(&l, dx1, dy, N, scratch, NULL);
    gemm_engine_set("openblas", &err);
    qlinear_forward(&l, y2, x, N, scratch, NULL);
    qlinear_backward_input(&l, dx2, dy, N, scratch, NULL);
    gemm_engine_set("auto", &err);
    // same dequantized values, float sums of 320 (forward) and 100 (backward) products in
    // different orders: typically sqrt(K) u |y| ~ 18 * 6e-8 * 20 = 2e-5 apart; 2e-4 is ten
    // times that, while one misplaced weight would be off by O(1)
    EXPECT_CLOSE("NF4 forward, fused panels vs tile + OpenBLAS", y1, y2, N * out, 2e-4, 1e-5);
    EXPECT_CLOSE("NF4 input gradient, fused panels vs tile + OpenBLAS", dx1, dx2, N * in, 2e-4, 1e-5);
    qlinear_free(&l);
    free(w), free(bias), free(x), free(dy), free(y1), free(y2), free(dx1), free(dx2), free(scratch);
}

int main(void) {
    if (!sgemm_native_available()) {
        SKIP(1, "this build or CPU has no AVX-512: the native sgemm is never used, nothing to test");
        return test_summary("test_sgemm");
    }
    test_shapes();
    test_beta_zero_ignores_nan();
    test_thread_invariance();
    test_stress();
    test_engine_switch();
    test_fused_nf4();
    return test_summary("test_sgemm");
}
