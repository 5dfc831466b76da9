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
// OpenMP parallel region per call, work split over output tiles and never over K, so the
// result is bit-identical for every thread count. Never call it inside a parallel region.
#ifndef QLORA_SGEMM_H
#define QLORA_SGEMM_H

#include <stdbool.h>
#include <stddef.h>

// True when this build has the AVX-512 kernel and the CPU running it supports AVX-512F.
bool sgemm_native_available(void);

void sgemm_native(bool ta, bool tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                  size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc);

#endif
