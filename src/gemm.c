// gemm.c: see gemm.h. The only file that includes cblas.h.
#include "gemm.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bgemm.h"
#include "sgemm.h"

// The engine behind matmul_*: -1 = not chosen yet (auto on first use).
static int engine = -1;

// Time inside products (gemm_timing), in total and per shape; t_start returns 0 when timing
// is off. The per-shape table is a short list searched linearly (a step has a few dozen
// shapes); it is only touched while timing is on.
static bool timing_on;
static double timing_sum;
static GemmShapeTime *shape_times;
static size_t n_shape_times, cap_shape_times;

static double t_start(void) { return timing_on ? time_now() : 0.0; }

// Add the time since t0 to the total and to the entry of this shape (made on first sight).
static void t_stop(double t0, const char *kind, bool ta, bool tb, size_t M, size_t N, size_t K,
                   size_t batch) {
    if (!timing_on) return;
    const double dt = time_now() - t0;
    timing_sum += dt;
    GemmShapeTime key = {kind, ta, tb, M, N, K, batch, 0, 0.0};
    size_t i = 0;
    while (i < n_shape_times && !(shape_times[i].kind == kind && shape_times[i].ta == ta &&
                                  shape_times[i].tb == tb && shape_times[i].M == M && shape_times[i].N == N &&
                                  shape_times[i].K == K && shape_times[i].batch == batch))
        i++;
    if (i == n_shape_times) {
        if (n_shape_times == cap_shape_times) {
            cap_shape_times = cap_shape_times ? 2 * cap_shape_times : 64;
            shape_times = xrealloc(shape_times, cap_shape_times * sizeof *shape_times);
        }
        shape_times[n_shape_times++] = key;
    }
    shape_times[i].calls++;
    shape_times[i].seconds += dt;
}

void gemm_timing(bool on) {
    timing_on = on;
    if (on) timing_sum = 0.0, n_shape_times = 0;
}
double gemm_seconds(void) { return timing_sum; }

const GemmShapeTime *gemm_shape_times(size_t *n) {
    *n = n_shape_times;
    return shape_times;
}

bool gemm_engine_set(const char *name, Error *err) {
    if (!name || !*name || strcmp(name, "auto") == 0) {
        engine = sgemm_native_available() ? GEMM_NATIVE : GEMM_OPENBLAS;
    } else if (strcmp(name, "openblas") == 0) {
        engine = GEMM_OPENBLAS;
    } else if (strcmp(name, "native") == 0) {
        if (!sgemm_native_available())
            return error_set(err, "matrix-product engine 'native': this build or CPU has no "
                                  "AVX-512 (use auto or openblas)");
        engine = GEMM_NATIVE;
    } else {
        return error_set(err, "matrix-product engine: expected auto, openblas or native, found '%s'",
                         name);
    }
    return true;
}

bool gemm_native_for_rows(size_t M) { return gemm_engine() == GEMM_NATIVE && M > GEMM_GEMV_ROWS; }

bool gemm_engine_from_env(Error *err) {
    if (gemm_engine_set(getenv("QLORA_GEMM"), err)) return true;
    if (!err) return false;
    char msg[sizeof err->msg];
    memcpy(msg, err->msg, sizeof msg);
    return error_set(err, "QLORA_GEMM: %.1000s", msg);
}

GemmEngine gemm_engine(void) {
    // A program that did not call gemm_engine_from_env gets auto for a bad QLORA_GEMM
    // rather than an exit from deep inside a product (qlora's main() refuses it up front).
    if (engine < 0 && !gemm_engine_from_env(NULL)) gemm_engine_set("auto", NULL);
    return (GemmEngine)engine;
}

// One product on the chosen engine (native for more than GEMM_GEMV_ROWS rows, else
// OpenBLAS), timed when gemm_timing is on. Every public product goes through here.
static void product(bool ta, bool tb, float *C, const float *A, const float *B, size_t M,
                    size_t N, size_t K, float alpha, float beta, size_t lda, size_t ldb, size_t ldc) {
    if (M == 0 || N == 0) return;
    const double t0 = t_start();
    if (gemm_native_for_rows(M))
        sgemm_native(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
    t_stop(t0, "fp32", ta, tb, M, N, K, 1);
}

void matmul_nt(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
               float alpha, float beta, size_t lda, size_t ldb, size_t ldc) {
    product(false, true, C, A, B, M, N, K, alpha, beta, lda, ldb, ldc);
}
void matmul_nn(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
               float alpha, float beta, size_t lda, size_t ldb, size_t ldc) {
    product(false, false, C, A, B, M, N, K, alpha, beta, lda, ldb, ldc);
}
void matmul_tn(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
               float alpha, float beta, size_t lda, size_t ldb, size_t ldc) {
    product(true, false, C, A, B, M, N, K, alpha, beta, lda, ldb, ldc);
}
void matmul_tt(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
               float alpha, float beta, size_t lda, size_t ldb, size_t ldc) {
    product(true, true, C, A, B, M, N, K, alpha, beta, lda, ldb, ldc);
}

void matmul_batch(const char *op, size_t count, float *const *C, const float *const *A,
                  const float *const *B, size_t M, size_t N, size_t K, float alpha, float beta,
                  size_t lda, size_t ldb, size_t ldc) {
    const bool ta = op[0] == 't', tb = op[1] == 't';
    CHECK(strlen(op) == 2 && (op[0] == 'n' || op[0] == 't') && (op[1] == 'n' || op[1] == 't'));
    if (!gemm_native_for_rows(M)) {  // OpenBLAS: one threaded call per item, each timed
        for (size_t i = 0; i < count; i++)
            product(ta, tb, C[i], A[i], B[i], M, N, K, alpha, beta, lda, ldb, ldc);
        return;
    }
    const double t0 = t_start();
    sgemm_native_batch(ta, tb, count, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    t_stop(t0, "fp32", ta, tb, M, N, K, count);
}

void matmul_panels(size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                   const struct SgemmPanelSource *B, float beta, float *C, size_t ldc) {
    CHECK(gemm_native_for_rows(M));
    const double t0 = t_start();
    sgemm_native_b(false, M, N, K, alpha, A, lda, B, beta, C, ldc);
    t_stop(t0, "fp32 panels", false, false, M, N, K, 1);
}

void matmul_bf16(bool tb, float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
                 float alpha, float beta, size_t lda, size_t ldb, size_t ldc) {
    const double t0 = t_start();
    bgemm(tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    t_stop(t0, "bf16", false, tb, M, N, K, 1);
}

void matmul_bf16_panels(size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                        const struct BgemmPanelSource *B, float beta, float *C, size_t ldc) {
    const double t0 = t_start();
    bgemm_b(M, N, K, alpha, A, lda, B, beta, C, ldc);
    t_stop(t0, "bf16 panels", false, false, M, N, K, 1);
}

// The references accumulate in double so that they are a stricter standard than BLAS.
static void ref_generic(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
                        float alpha, float beta, size_t lda, size_t ldb, size_t ldc, int ta,
                        int tb) {
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            double s = 0;
            for (size_t k = 0; k < K; k++) {
                float a = ta ? A[k * lda + i] : A[i * lda + k];
                float b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += (double)a * b;
            }
            float prev = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];  // beta 0 ignores NaN in C
            C[i * ldc + j] = (float)(alpha * s + prev);
        }
}

void matmul_nt_ref(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
                   float alpha, float beta, size_t lda, size_t ldb, size_t ldc) {
    ref_generic(C, A, B, M, N, K, alpha, beta, lda, ldb, ldc, 0, 1);
}
void matmul_nn_ref(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
                   float alpha, float beta, size_t lda, size_t ldb, size_t ldc) {
    ref_generic(C, A, B, M, N, K, alpha, beta, lda, ldb, ldc, 0, 0);
}
void matmul_tn_ref(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
                   float alpha, float beta, size_t lda, size_t ldb, size_t ldc) {
    ref_generic(C, A, B, M, N, K, alpha, beta, lda, ldb, ldc, 1, 0);
}
void matmul_tt_ref(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
                   float alpha, float beta, size_t lda, size_t ldb, size_t ldc) {
    ref_generic(C, A, B, M, N, K, alpha, beta, lda, ldb, ldc, 1, 1);
}

void threads_set(int n) {
    if (n < 1) n = 1;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

const char *blas_describe(char *buf, size_t cap) {
    if (gemm_engine() == GEMM_NATIVE)
        snprintf(buf, cap, "qlora's AVX-512 sgemm (OpenBLAS here: %s); %d threads",
                 openblas_get_config(), omp_get_max_threads());
    else
        snprintf(buf, cap, "%s; %d threads", openblas_get_config(), omp_get_max_threads());
    return buf;
}

const char *blas_kernel_hint(void) {
    const char *core = openblas_get_corename();
    if (gemm_engine() == GEMM_NATIVE) return NULL;
    if (!core || strcmp(core, "Prescott") != 0 || getenv("OPENBLAS_CORETYPE")) return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return "note: OpenBLAS uses its generic Prescott kernels on this CPU; qlora's own AVX-512 products "
               "(QLORA_GEMM=auto, the default) or OPENBLAS_CORETYPE=SkylakeX are about 4x faster";
    if (__builtin_cpu_supports("avx2"))
        return "note: OpenBLAS uses its generic Prescott kernels on this CPU; try OPENBLAS_CORETYPE=Haswell "
               "for faster matrix products";
    return NULL;
}

// matmul_batch in bf16 (bgemm_batch), timed as "bf16" with the batch count.
void matmul_batch_bf16(const char *op, size_t count, float *const *C, const float *const *A,
                       const float *const *B, size_t M, size_t N, size_t K, float alpha, float beta,
                       size_t lda, size_t ldb, size_t ldc) {
    CHECK(strlen(op) == 2 && (op[0] == 'n' || op[0] == 't') && (op[1] == 'n' || op[1] == 't'));
    const double t0 = t_start();
    bgemm_batch(op[0] == 't', op[1] == 't', count, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    t_stop(t0, "bf16", op[0] == 't', op[1] == 't', M, N, K, count);
}
