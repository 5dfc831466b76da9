// bench_bf16.c: GFLOP/s of bf16 matrix products (bf16 inputs, fp32 accumulation and output)
// on GPT-2 small's frozen-weight shapes of one training step (batch 4 x 256 = 1024 rows:
// the four linears' forward (nt) and input gradient (nn), and the tied output layer in
// 512-row chunks), at each thread count given, one line per (shape, engine, threads), then
// one "step mix" line per engine (the shapes weighted by how often a step runs them).
// Engines, each where this build and CPU have it (all shapes here have A untransposed, as
// bgemm requires):
//   qlora-bgemm-amx / qlora-bgemm-avx512bf16  src/bgemm.h, each ISA forced in turn (needs
//                          -DHAVE_BGEMM and src/bgemm.c in libqlora.a); fp32 inputs, rounded
//                          to bf16 inside the call (that rounding is timed)
//   qlora-sgemm-fp32       qlora's AVX-512 fp32 sgemm_native, for reference
//   openblas-sbgemm        cblas_sbgemm, if the linked OpenBLAS has it (Debian 12's 0.3.21
//                          does not: "not in this OpenBLAS build"); -DHAVE_SBGEMM links it
//                          statically, otherwise it is looked up with dlsym
//   onednn-bf16 / onednn-fp32  dnnl_gemm_bf16bf16f32 / dnnl_sgemm (build with -DHAVE_DNNL
//                          and -ldnnl; Debian 12: libdnnl-dev 2.6)
// The non-qlora bf16 engines get inputs already rounded to bf16 (not timed). "err" is
// max |C - C_fp32| / max |C_fp32| against the fp32 result of the same product (bf16 inputs
// give ~1e-3..1e-2; a wrong result gives ~1). Best of --reps timed calls after one warm-up.
//
// Build without make, from the repo root, after `make` (build/libqlora.a), as one line:
//   cc -O2 -march=native -fopenmp -std=c11 -D_GNU_SOURCE -Isrc $(pkg-config --cflags openblas)
//      [-DHAVE_BGEMM] [-DHAVE_DNNL] bench/bench_bf16.c build/libqlora.a -o build/bench/bench_bf16
//      $(pkg-config --libs openblas) -lcjson -lyaml -lpcre2-8 -lm -ldl [-ldnnl]
// (scripts/device-bundle.sh builds it statically for the 16-core machine.)
// Usage: bench_bf16 [--reps N] [--quick] [THREADS...]   default threads: 1 2
//   --quick: only the c_fc forward shape and the logits (a fast check)
#include <cblas.h>
#include <dlfcn.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "sgemm.h"
#include "util.h"
#ifdef HAVE_BGEMM
#include "bgemm.h"
#endif
#ifdef HAVE_DNNL
#include <dnnl.h>
// Exported by libdnnl 2.x but not declared in its public header there; row-major like
// dnnl_sgemm.
dnnl_status_t dnnl_gemm_bf16bf16f32(char transa, char transb, dnnl_dim_t M, dnnl_dim_t N, dnnl_dim_t K,
                                    float alpha, const uint16_t *A, dnnl_dim_t lda, const uint16_t *B,
                                    dnnl_dim_t ldb, float beta, float *C, dnnl_dim_t ldc);
#endif

typedef void (*SbgemmFn)(int order, int transa, int transb, int M, int N, int K, float alpha,
                         const uint16_t *A, int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc);

typedef struct {
    const char *what;
    bool ta, tb;
    size_t M, N, K;
    double per_step;  // calls per GPT-2 small training step (12 layers; logits in 2 chunks)
    bool quick;
} Shape;

static const Shape SHAPES[] = {
    {"c_attn fwd 1024x2304x768 (nt)", false, true, 1024, 2304, 768, 12, false},
    {"attn c_proj fwd 1024x768x768 (nt)", false, true, 1024, 768, 768, 12, false},
    {"c_fc fwd 1024x3072x768 (nt)", false, true, 1024, 3072, 768, 12, true},
    {"mlp c_proj fwd 1024x768x3072 (nt)", false, true, 1024, 768, 3072, 12, false},
    {"c_attn dx 1024x768x2304 (nn)", false, false, 1024, 768, 2304, 11, false},
    {"attn c_proj dx 1024x768x768 (nn)", false, false, 1024, 768, 768, 12, false},
    {"c_fc dx 1024x768x3072 (nn)", false, false, 1024, 768, 3072, 12, false},
    {"mlp c_proj dx 1024x3072x768 (nn)", false, false, 1024, 3072, 768, 12, false},
    {"logits 512x50257x768 (nt)", false, true, 512, 50257, 768, 2, true},
    {"logits dx 512x768x50257 (nn)", false, false, 512, 768, 50257, 2, true},
};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

enum { E_BGEMM_AMX, E_BGEMM_AVX, E_SGEMM, E_SBGEMM, E_DNNL_BF16, E_DNNL_F32, N_ENGINES };
static const char *ENGINE_NAME[N_ENGINES] = {"qlora-bgemm-amx", "qlora-bgemm-avx512bf16", "qlora-sgemm-fp32",
                                             "openblas-sbgemm", "onednn-bf16", "onednn-fp32"};
static bool engine_on[N_ENGINES];
static SbgemmFn sbgemm_fn;

static uint16_t to_bf16(float x) {  // nearest, ties to even (inputs here are finite)
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// One product on engine e. Ab/Bb: the same data as A/B rounded to bf16.
static void run_one(int e, const Shape *s, const float *A, const float *B, const uint16_t *Ab,
                    const uint16_t *Bb, float *C) {
    const size_t lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    switch (e) {
#ifdef HAVE_BGEMM
    case E_BGEMM_AMX:
    case E_BGEMM_AVX:
        bgemm(s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, 0.0f, C, s->N);
        break;
#endif
    case E_SGEMM:
        if (sgemm_native_available())
            sgemm_native(s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, 0.0f, C, s->N);
        else
            cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans,
                        (int)s->M, (int)s->N, (int)s->K, 1.0f, A, (int)lda, B, (int)ldb, 0.0f, C, (int)s->N);
        break;
    case E_SBGEMM:
        sbgemm_fn(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, (int)s->M,
                  (int)s->N, (int)s->K, 1.0f, Ab, (int)lda, Bb, (int)ldb, 0.0f, C, (int)s->N);
        break;
#ifdef HAVE_DNNL
    case E_DNNL_BF16:
        dnnl_gemm_bf16bf16f32(s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', (dnnl_dim_t)s->M, (dnnl_dim_t)s->N,
                              (dnnl_dim_t)s->K, 1.0f, Ab, (dnnl_dim_t)lda, Bb, (dnnl_dim_t)ldb, 0.0f, C,
                              (dnnl_dim_t)s->N);
        break;
    case E_DNNL_F32:
        dnnl_sgemm(s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', (dnnl_dim_t)s->M, (dnnl_dim_t)s->N, (dnnl_dim_t)s->K,
                   1.0f, A, (dnnl_dim_t)lda, B, (dnnl_dim_t)ldb, 0.0f, C, (dnnl_dim_t)s->N);
        break;
#endif
    default:
        (void)A, (void)B, (void)Ab, (void)Bb, (void)C;
        break;
    }
}

static bool select_isa(int e) {
#ifdef HAVE_BGEMM
    if (e == E_BGEMM_AMX) return bgemm_isa_force(BGEMM_AMX);
    if (e == E_BGEMM_AVX) return bgemm_isa_force(BGEMM_AVX512BF16);
#endif
    (void)e;
    return true;
}

static double best_seconds(int e, const Shape *s, int reps, const float *A, const float *B, const uint16_t *Ab,
                           const uint16_t *Bb, float *C) {
    double best = 1e30;
    for (int rep = 0; rep <= reps; rep++) {  // rep 0: warm-up
        const double t0 = time_now();
        run_one(e, s, A, B, Ab, Bb, C);
        const double dt = time_now() - t0;
        if (rep > 0 && dt < best) best = dt;
    }
    return best;
}

static double rel_err(const float *C, const float *R, size_t n) {
    double maxd = 0, maxr = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = C[i] > R[i] ? (double)C[i] - R[i] : (double)R[i] - C[i];
        const double r = R[i] > 0 ? R[i] : -R[i];
        if (d > maxd || d != d) maxd = d != d ? 1e30 : d;
        if (r > maxr) maxr = r;
    }
    return maxr > 0 ? maxd / maxr : maxd;
}

static void describe(void) {
    printf("bench_bf16: OpenBLAS %s (core %s)\n", openblas_get_config(), openblas_get_corename());
#ifdef HAVE_BGEMM
    printf("qlora bgemm: best ISA %s", bgemm_isa_name(bgemm_isa()));
    const bool amx = bgemm_isa() == BGEMM_AMX;
    engine_on[E_BGEMM_AMX] = amx;
    engine_on[E_BGEMM_AVX] = bgemm_isa() != BGEMM_NONE;  // forcing a lower ISA than the best works
    printf("%s\n", engine_on[E_BGEMM_AVX] ? "" : " (no bf16 instructions here: bgemm rows skipped)");
#else
    printf("qlora bgemm: not in this build (built without -DHAVE_BGEMM: src/bgemm.c was not in libqlora.a)\n");
#endif
    engine_on[E_SGEMM] = true;
    printf("qlora sgemm fp32: %s\n", sgemm_native_available() ? "AVX-512 sgemm_native" : "no AVX-512: OpenBLAS cblas_sgemm");
#ifdef HAVE_SBGEMM
    sbgemm_fn = (SbgemmFn)(void (*)(void))cblas_sbgemm;
#else
    void *p = dlsym(RTLD_DEFAULT, "cblas_sbgemm");
    memcpy(&sbgemm_fn, &p, sizeof p);
#endif
    engine_on[E_SBGEMM] = sbgemm_fn != NULL;
    printf("openblas-sbgemm: %s\n", sbgemm_fn ? "cblas_sbgemm found" : "not in this OpenBLAS build");
#ifdef HAVE_DNNL
    const dnnl_version_t *v = dnnl_version();
    const char *isa = "?";
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_avx512_core_amx: isa = "avx512_core_amx"; break;
    case dnnl_cpu_isa_avx512_core_bf16: isa = "avx512_core_bf16"; break;
    case dnnl_cpu_isa_avx512_core_vnni: isa = "avx512_core_vnni"; break;
    case dnnl_cpu_isa_avx512_core: isa = "avx512_core"; break;
    case dnnl_cpu_isa_avx2: isa = "avx2"; break;
    default: break;
    }
    printf("oneDNN %d.%d.%d (%s), effective ISA %s (ONEDNN_MAX_CPU_ISA caps it)\n", v->major, v->minor, v->patch,
           v->hash, isa);
    engine_on[E_DNNL_BF16] = engine_on[E_DNNL_F32] = true;
#else
    printf("oneDNN: not in this build (build with -DHAVE_DNNL ... -ldnnl)\n");
#endif
}

int main(int argc, char **argv) {
    int threads[16] = {1, 2}, n_threads = 0, reps = 3;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]) > 0 ? atoi(argv[i]) : 1;
        else if (strcmp(argv[i], "--quick") == 0) quick = true;
        else if (n_threads < 16) threads[n_threads++] = atoi(argv[i]) > 0 ? atoi(argv[i]) : 1;
    }
    if (n_threads == 0) n_threads = 2;
    describe();
    size_t maxa = 0, maxb = 0, maxc = 0;
    for (size_t i = 0; i < N_SHAPES; i++) {
        const Shape *s = &SHAPES[i];
        maxa = s->M * s->K > maxa ? s->M * s->K : maxa;
        maxb = s->N * s->K > maxb ? s->N * s->K : maxb;
        maxc = s->M * s->N > maxc ? s->M * s->N : maxc;
    }
    float *A = xmalloc_aligned(maxa * 4), *B = xmalloc_aligned(maxb * 4);
    float *C = xmalloc_aligned(maxc * 4), *R = xmalloc_aligned(maxc * 4);
    uint16_t *Ab = xmalloc_aligned(maxa * 2), *Bb = xmalloc_aligned(maxb * 2);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < maxa + maxb; i++) {  // uniform in [-1, 1), a fixed sequence
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        const float v = (float)((double)(x >> 40) / (double)(1ull << 23)) - 1.0f;
        if (i < maxa) A[i] = v;
        else B[i - maxa] = v;
    }
    for (size_t i = 0; i < maxa; i++) Ab[i] = to_bf16(A[i]);
    for (size_t i = 0; i < maxb; i++) Bb[i] = to_bf16(B[i]);
    printf("%-36s %-24s %7s %10s %10s %8s\n", "product", "engine", "threads", "GFLOP/s", "ms", "err");
    for (int t = 0; t < n_threads; t++) {
        threads_set(threads[t]);
        double step_s[N_ENGINES] = {0}, step_flops = 0;
        for (size_t i = 0; i < N_SHAPES; i++) {
            const Shape *s = &SHAPES[i];
            if (quick && !s->quick) continue;
            const double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K;
            step_flops += flops * s->per_step;
            // the fp32 engine first: its result is the reference for the others' err
            static const int order[N_ENGINES] = {E_SGEMM, E_BGEMM_AMX, E_BGEMM_AVX, E_SBGEMM, E_DNNL_BF16, E_DNNL_F32};
            for (int k = 0; k < N_ENGINES; k++) {
                const int e = order[k];
                if (!engine_on[e]) continue;
                if (!select_isa(e)) {
                    printf("%-36s %-24s %7d %10s\n", s->what, ENGINE_NAME[e], threads[t], "n/a (bgemm_isa_force refused)");
                    continue;
                }
                const double sec = best_seconds(e, s, reps, A, B, Ab, Bb, C);
                double err = 0;
                if (e == E_SGEMM) memcpy(R, C, s->M * s->N * 4);
                else err = rel_err(C, R, s->M * s->N);
                step_s[e] += sec * s->per_step;
                printf("%-36s %-24s %7d %10.1f %10.3f %8.1e\n", s->what, ENGINE_NAME[e], threads[t], flops / sec / 1e9,
                       1e3 * sec, err);
                fflush(stdout);
            }
        }
        for (int e = 0; e < N_ENGINES; e++)
            if (step_s[e] > 0)
                printf("%-36s %-24s %7d %10.1f %10.3f\n", quick ? "step mix (quick subset)" : "step mix (GPT-2 small, 1 step)",
                       ENGINE_NAME[e], threads[t], step_flops / step_s[e] / 1e9, 1e3 * step_s[e]);
    }
    free(A);
    free(B);
    free(C);
    free(R);
    free(Ab);
    free(Bb);
    return 0;
}
