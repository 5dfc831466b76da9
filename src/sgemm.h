// sgemm.h: qlora's own single-precision matrix product for CPUs with AVX-512.
//
// Why it exists: the OpenBLAS that Debian 12 ships (0.3.21) does not recognise recent Xeon
// and Zen CPUs and falls back to its generic SSE3 ("Prescott") kernels there, which reach
// about a fifth of what the hardware does (docs/performance.md). This is a plain
// Goto-style blocked product (packed panels, one 12 x 32 AVX-512 micro-kernel) that gemm.c
// uses instead of OpenBLAS when OpenBLAS runs narrower kernels than the CPU has; OpenBLAS
// stays the engine everywhere else and is the reference the tests hold this one to.
//
// Contract, row-major, one routine for all transposes:
//   C[M,N] = alpha * op(A)[M,K] . op(B)[K,N] + beta * C
//   op(A)[i][k] = ta ? A[k*lda + i] : A[i*lda + k]
//   op(B)[k][j] = tb ? B[j*ldb + k] : B[k*ldb + j]
// beta == 0 overwrites C (its old contents, NaN included, are never read). Threads: one
// OpenMP parallel region per call, work split over output tiles (threads steal tiles from
// each other's shares, team.h), or for a very deep product with a small output (K >= 16384
// and K >= 16 max(M, N)) over 16 slices of K fixed by the shape alone; whoever computes a
// tile sums it the same way, so the result is bit-identical for every thread count. Never
// call it inside a parallel region.
#ifndef QLORA_SGEMM_H
#define QLORA_SGEMM_H

#include <stdbool.h>
#include <stddef.h>

// True when this build has the AVX-512 kernel and the CPU running it supports AVX-512F.
bool sgemm_native_available(void);

void sgemm_native(bool ta, bool tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                  size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc);

// count independent products of one shape, C[i] = alpha * op(A[i]) op(B[i]) + beta * C[i]
// (strides shared), spread over the threads one product each: for many small products,
// such as attention's one per (sequence, head).
void sgemm_native_batch(bool ta, bool tb, size_t count, size_t M, size_t N, size_t K, float alpha,
                        const float *const *A, size_t lda, const float *const *B, size_t ldb,
                        float beta, float *const *C, size_t ldc);

// The packed-panel geometry a panel source must fill: SGEMM_NR columns, at most SGEMM_KC
// rows of op(B) at a time.
#define SGEMM_NR 32
#define SGEMM_KC 256

// A B operand that exists only in compressed form (qlinear's NF4 weights): it is turned into
// packed panels on demand, so no fp32 copy of the whole matrix is ever made. fill writes
//   dst[k * SGEMM_NR + j] = op(B)[p0 + k][j0 + j]  for k < kc <= SGEMM_KC, j < SGEMM_NR,
// with zeros for j >= n (n <= SGEMM_NR). It is called from several threads at once, for
// different panels, inside sgemm's parallel region: no OpenMP inside. dst is 64-byte aligned.
typedef struct SgemmPanelSource {
    void (*fill)(const void *ctx, size_t p0, size_t kc, size_t j0, size_t n, float *dst);
    const void *ctx;
} SgemmPanelSource;

// sgemm_native with op(B) supplied by a panel source instead of a float matrix.
void sgemm_native_b(bool ta, size_t M, size_t N, size_t K, float alpha, const float *A,
                    size_t lda, const SgemmPanelSource *B, float beta, float *C, size_t ldc);

// The K-split schedule of very deep products with a small output (sgemm.c, bgemm.c):
// SGEMM_KSPLIT slices of K, fixed by the shape, each a whole product into its own partial
// [M][N] block of part. True when a product of this shape takes it.
#define SGEMM_KSPLIT 16
bool sgemm_ksplit_shape(size_t M, size_t N, size_t K);
// Row i of C = alpha * (sum of the SGEMM_KSPLIT partials' row i, added in slice order) +
// beta * C (beta == 0 overwrites). Slice 0's row is the accumulator (overwritten). Plain C,
// no OpenMP: callers run rows in parallel.
void sgemm_ksplit_row(float *part, size_t M, size_t N, size_t i, float alpha, float beta, float *C,
                      size_t ldc);

// For panel sources: the panel of a row-major [n][kc] matrix read transposed,
// dst[k * SGEMM_NR + j] = src[j * lds + k] (zeros for j >= n). Overwrites dst.
void sgemm_pack_transposed(const float *src, size_t lds, size_t n, size_t kc, float *dst);

#endif
