// bench_sgemm.c: GFLOP/s of the two matrix-product engines (qlora's AVX-512 sgemm and
// OpenBLAS's cblas_sgemm) on GPT-2 small's largest shapes and a 2048^3 square, at each
// thread count given (default: 1 and 2). Both engines run the same products in the same
// run, so the ratio is meaningful on a noisy machine. A benchmark, not a test.
//   build/bench/bench_sgemm [THREADS...]      e.g. bench_sgemm 1 2 4 8 16
// BENCH_NATIVE_ONLY=1 skips OpenBLAS (its column then reads 1.0): where OpenBLAS runs its
// generic kernels they take most of the run. bench/torch_mm.py times PyTorch on the same shapes.
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "gemm.h"
#include "sgemm.h"
#include "util.h"

typedef struct {
    const char *what;
    bool ta, tb;
    size_t M, N, K;
} Shape;

// Best of 5 timings (after one warm-up call) of one product with the chosen engine.
static double best_seconds(const Shape *s, bool native, const float *A, const float *B, float *C) {
    const size_t lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    double best = 1e30;
    for (int rep = 0; rep < 6; rep++) {
        const double t0 = time_now();
        if (native)
            sgemm_native(s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, 0.0f, C, s->N);
        else
            cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans,
                        (int)s->M, (int)s->N, (int)s->K, 1.0f, A, (int)lda, B, (int)ldb, 0.0f, C, (int)s->N);
        const double dt = time_now() - t0;
        if (rep > 0 && dt < best) best = dt;
    }
    return best;
}

int main(int argc, char **argv) {
    static const Shape shapes[] = {
        {"square 2048^3 (nn)", false, false, 2048, 2048, 2048},
        {"c_fc forward 1024x3072x768 (nt)", false, true, 1024, 3072, 768},
        {"c_fc input grad 1024x768x3072 (nn)", false, false, 1024, 768, 3072},
        {"c_fc weight grad 3072x768x1024 (tn)", true, false, 3072, 768, 1024},
        {"logits 512x50257x768 (nt)", false, true, 512, 50257, 768},
        {"logits dx 512x768x50257 (nn)", false, false, 512, 768, 50257},
        {"logits dx 1024x768x50257 (nn)", false, false, 1024, 768, 50257},
        {"c_attn forward 1024x2304x768 (nt)", false, true, 1024, 2304, 768},
        {"attn proj 1024x768x768 (nn)", false, false, 1024, 768, 768},
    };
    int threads[16] = {1, 2}, n_threads = 2;
    if (argc > 1) {
        n_threads = 0;
        for (int i = 1; i < argc && n_threads < 16; i++) threads[n_threads++] = atoi(argv[i]) > 0 ? atoi(argv[i]) : 1;
    }
    size_t maxa = 0, maxb = 0, maxc = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const Shape *s = &shapes[i];
        maxa = s->M * s->K > maxa ? s->M * s->K : maxa;
        maxb = s->N * s->K > maxb ? s->N * s->K : maxb;
        maxc = s->M * s->N > maxc ? s->M * s->N : maxc;
    }
    float *A = xmalloc_aligned(maxa * 4), *B = xmalloc_aligned(maxb * 4), *C = xmalloc_aligned(maxc * 4);
    for (size_t i = 0; i < maxa; i++) A[i] = 0.01f * (float)(i % 97) - 0.4f;
    for (size_t i = 0; i < maxb; i++) B[i] = 0.01f * (float)(i % 89) - 0.4f;
    const bool have_native = sgemm_native_available();
    printf("OpenBLAS: %s (core %s)\n", openblas_get_config(), openblas_get_corename());
    printf("%-38s %7s %12s %12s %7s\n", "product", "threads", "native GF/s", "OpenBLAS GF/s", "ratio");
    for (int t = 0; t < n_threads; t++) {
        threads_set(threads[t]);
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            const Shape *s = &shapes[i];
            const double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K;
            const double gn = have_native ? flops / best_seconds(s, true, A, B, C) / 1e9 : 0.0;
            const double go = getenv("BENCH_NATIVE_ONLY") ? 1.0 : flops / best_seconds(s, false, A, B, C) / 1e9;
            printf("%-38s %7d %12.1f %12.1f %7.2f\n", s->what, threads[t], gn, go, gn / go);
        }
    }
    free(A);
    free(B);
    free(C);
    return 0;
}
