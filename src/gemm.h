// gemm.h: row-major single-precision matrix products, the only place that calls BLAS.
//
// Transpose convention, written once: the suffix names how A and B are used.
//   matmul_nt: C[M,N] = alpha * A[M,K] . B[N,K]^T + beta * C   (y = x W^T, W stored [out,in])
//   matmul_nn: C[M,N] = alpha * A[M,K] . B[K,N]   + beta * C   (dx = dy W)
//   matmul_tn: C[M,N] = alpha * A[K,M]^T . B[K,N] + beta * C   (dW = dy^T x)
//   matmul_tt: C[M,N] = alpha * A[K,M]^T . B[N,K]^T + beta * C (LoRA's transposed hidden)
// lda/ldb/ldc are row strides in floats (>= the row length), so sub-matrices such as one
// head's columns of a fused QKV buffer are used in place. beta = 0 overwrites C, beta = 1
// accumulates. Never call these from inside an OpenMP parallel region: both engines thread
// themselves. Each has a naive _ref twin for tests.
#ifndef QLORA_GEMM_H
#define QLORA_GEMM_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

// Which code computes the products. qlora's own AVX-512 kernel (sgemm.h) wherever the CPU
// has AVX-512: it decodes NF4/FP4 weights straight into its packed panels, where OpenBLAS
// needs a dequantized fp32 tile per call (on a 2-core Zen 4 with Debian's OpenBLAS running
// its AVX-512 kernels, a GPT-2 small QLoRA step: native 317-341 tokens/s, OpenBLAS 248-326;
// docs/performance.md), and Debian 12's OpenBLAS runs generic SSE3 kernels on CPUs it does
// not know. OpenBLAS everywhere else, and for matrix-vector work. Both give the same
// products to float rounding; the choice never changes a file format or a test's expected
// values.
typedef enum { GEMM_OPENBLAS, GEMM_NATIVE } GemmEngine;
// name: "auto" (or NULL/empty), "openblas" or "native"; false + err on anything else or
// on "native" without AVX-512 (err may be NULL).
bool gemm_engine_set(const char *name, Error *err);
// gemm_engine_set(the environment variable QLORA_GEMM); its message starts "QLORA_GEMM: ".
bool gemm_engine_from_env(Error *err);
// The engine in use. When nobody set it, the first call reads QLORA_GEMM as
// gemm_engine_from_env does, falling back to auto if that fails (never exits).
GemmEngine gemm_engine(void);
// Products of at most this many rows (a token at a time in generation) are matrix-vector
// work, bound by reading B once: the native kernel would repack all of B for one row, so
// they always go to OpenBLAS. gemm_native_for_rows(M) says whether an M-row product uses
// the native engine.
#define GEMM_GEMV_ROWS 2
bool gemm_native_for_rows(size_t M);

void matmul_nt(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
               float alpha, float beta, size_t lda, size_t ldb, size_t ldc);
void matmul_nn(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
               float alpha, float beta, size_t lda, size_t ldb, size_t ldc);
void matmul_tn(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
               float alpha, float beta, size_t lda, size_t ldb, size_t ldc);

// count products of one shape, item i reading A[i], B[i] and writing C[i]; op is "nt", "nn",
// "tn" or "tt" as above. The native engine runs the items in parallel, one per thread; OpenBLAS
// runs them one after another, each threaded.
void matmul_batch(const char *op, size_t count, float *const *C, const float *const *A,
                  const float *const *B, size_t M, size_t N, size_t K, float alpha, float beta,
                  size_t lda, size_t ldb, size_t ldc);

void matmul_tt(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
               float alpha, float beta, size_t lda, size_t ldb, size_t ldc);

void matmul_nt_ref(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
                   float alpha, float beta, size_t lda, size_t ldb, size_t ldc);
void matmul_nn_ref(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
                   float alpha, float beta, size_t lda, size_t ldb, size_t ldc);
void matmul_tn_ref(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
                   float alpha, float beta, size_t lda, size_t ldb, size_t ldc);
void matmul_tt_ref(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
                   float alpha, float beta, size_t lda, size_t ldb, size_t ldc);

// A product whose B exists only as packed panels (sgemm.h's SgemmPanelSource: qlinear's
// NF4/FP4 weights), on the native engine; callers check gemm_native_for_rows first.
struct SgemmPanelSource;
void matmul_panels(size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                   const struct SgemmPanelSource *B, float beta, float *C, size_t ldc);

// bf16 products of frozen weights (bgemm.h: A and op(B) rounded to bf16, fp32 sums), timed
// like the others. matmul_bf16: op(B) = tb ? B^T : B, an fp32 matrix; matmul_bf16_panels:
// op(B) from a panel source. Callers check bgemm_available() and that M > GEMM_GEMV_ROWS.
struct BgemmPanelSource;
void matmul_bf16(bool tb, float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
                 float alpha, float beta, size_t lda, size_t ldb, size_t ldc);
void matmul_bf16_panels(size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                        const struct BgemmPanelSource *B, float beta, float *C, size_t ldc);
// matmul_batch's products in bf16 (bgemm_batch: op(A) and op(B) rounded to bf16, fp32 sums,
// one whole product per thread), for attention when the model runs in bf16. Callers check
// bgemm_available().
void matmul_batch_bf16(const char *op, size_t count, float *const *C, const float *const *A,
                       const float *const *B, size_t M, size_t N, size_t K, float alpha, float beta,
                       size_t lda, size_t ldb, size_t ldc);

// Wall time spent inside matrix products (every matmul_* call), summed while enabled; for
// qlora bench's "products vs everything else" split. gemm_timing(true) resets the sum.
void gemm_timing(bool on);
double gemm_seconds(void);

// The same time split by shape: one entry per distinct (kind, ta, tb, M, N, K, batch) seen
// while timing was on, kind being "fp32", "fp32 panels" (B from a panel source), "bf16" or
// "bf16 panels" (a static string, compared by address). batch > 1: matmul_batch's count.
typedef struct {
    const char *kind;
    bool ta, tb;
    size_t M, N, K, batch;
    long calls;
    double seconds;
} GemmShapeTime;
// The table, valid until the next gemm_timing call or timed product; *n entries.
const GemmShapeTime *gemm_shape_times(size_t *n);

// Set the thread count of both OpenMP and OpenBLAS (the one `threads` setting).
void threads_set(int n);
// A one-line description of the BLAS build and thread count (for startup logs).
const char *blas_describe(char *buf, size_t cap);
// NULL, or a one-line hint when OpenBLAS runs its generic kernels on a CPU that has AVX2 or
// AVX-512 (OpenBLAS 0.3.21 does not recognise some newer CPUs and falls back to
// "Prescott" unless OPENBLAS_CORETYPE says otherwise).
const char *blas_kernel_hint(void);

#endif
