// bgemm.h: bf16 matrix products with fp32 accumulation, for the frozen weights of a model
// and (bgemm_batch) attention's products when the model runs in bf16.
//
// QLoRA computes with its frozen base in a 16-bit compute type: the 4-bit codes are
// dequantized to bf16 and multiplied with the activations rounded to bf16, accumulating in
// fp32. This module does that on the CPU's bf16 instructions, chosen at run time:
//   AMX  (TDPBF16PS on 16 x 32 tiles; Intel Sapphire Rapids and later), else
//   AVX512-BF16 (VDPBF16PS on zmm registers; Cooper Lake, Zen 4 and later).
// Without either, bgemm_available() is false and callers stay on the fp32 path.
//
// Contract, row-major, as sgemm.h's apart from the rounding, with A never transposed
// (the activations or output gradients, rows = tokens; bgemm_batch below also takes A^T):
//   C[M,N] = alpha * bf16(A)[M,K] . bf16(op(B))[K,N] + beta * C,   A[i][k] = A[i*lda + k]
//   op(B)[k][j] = tb ? B[j*ldb + k] : B[k*ldb + j]
// bf16(x) rounds an fp32 value to the nearest bf16 (ties to even), as the CPU's
// VCVTNE2PS2BF16 does; the products of bf16 values are exact in fp32, so the only error
// beyond the inputs' rounding is fp32 summation. beta == 0 overwrites C. One OpenMP
// region per call, work split over output tiles and never over K: results do not depend
// on the thread count. Never call it inside a parallel region.
#ifndef QLORA_BGEMM_H
#define QLORA_BGEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef enum { BGEMM_NONE, BGEMM_AVX512BF16, BGEMM_AMX } BgemmIsa;

// The best bf16 instruction set this build and CPU offer (for AMX, after the Linux kernel
// granted the tile state; asked once), or the lower one the environment variable
// QLORA_BF16_ISA names (avx512bf16; for comparisons). bgemm_isa_force lets tests and
// benchmarks pick a lower one (never a higher one: false if the CPU lacks it).
BgemmIsa bgemm_isa(void);
bool bgemm_isa_force(BgemmIsa isa);
const char *bgemm_isa_name(BgemmIsa isa);
static inline bool bgemm_available(void) { return bgemm_isa() != BGEMM_NONE; }

// The `bf16` setting of a job or command: "true" (bf16 products, an error without bf16
// instructions), "false", or "auto" (bf16 where the CPU has it). *on receives the choice.
// false + err for "true" on a CPU without bf16 instructions or an unknown word.
bool bgemm_mode(const char *mode, bool *on, Error *err);

// x rounded to the nearest bf16, ties to even, returned as fp32 (NaN stays NaN). Plain C:
// the reference the kernels' conversions are tested against (the CPU's conversion also
// flushes subnormals to zero; values that small never reach a product here).
float bf16_round(float x);

// Packed-panel geometry a panel source fills: BGEMM_NR columns and at most BGEMM_KC rows
// of op(B) per call, kc rounded up to BGEMM_KSTEP with zero rows.
#define BGEMM_NR 32
#define BGEMM_KC 512
#define BGEMM_KSTEP 32

// op(B) that exists only in compressed form (NF4/FP4 weights): fill writes the bf16 bits of
// op(B)[p0 + k][j0 + j] for k < kc, j < n (n <= BGEMM_NR) in pair-interleaved order,
//   dst[((k / 2) * BGEMM_NR + j) * 2 + k % 2],
// and zeros for j >= n and for kc <= k < round_up(kc, BGEMM_KSTEP). Called from several
// threads at once for different panels: no OpenMP inside. dst is 64-byte aligned.
typedef struct BgemmPanelSource {
    void (*fill)(const void *ctx, size_t p0, size_t kc, size_t j0, size_t n, uint16_t *dst);
    const void *ctx;
} BgemmPanelSource;

// For panel sources: n fp32 values per k-row, row k at src[k * lds], rounded into the
// pair-interleaved layout above (zeros as described). Overwrites dst.
void bgemm_pack_rows(const float *src, size_t lds, size_t n, size_t kc, uint16_t *dst);
// The same for a source stored transposed: value (k, j) at src[j * lds + k].
void bgemm_pack_transposed(const float *src, size_t lds, size_t n, size_t kc, uint16_t *dst);

// C = alpha * bf16(A) bf16(op(B)) + beta * C with op(B) an fp32 matrix. Requires
// bgemm_available().
void bgemm(bool tb, size_t M, size_t N, size_t K, float alpha, const float *A,
           size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc);
// The same with op(B) from a panel source.
void bgemm_b(size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
             const BgemmPanelSource *B, float beta, float *C, size_t ldc);

// count independent products of one shape with shared strides (attention's one product per
// (sequence, head)), item i
//   C[i] = alpha * bf16(op(A[i]))[M,K] . bf16(op(B[i]))[K,N] + beta * C[i],
//   op(A)[r][k] = ta ? A[k*lda + r] : A[r*lda + k],   op(B) as above,
// as sgemm_native_batch (sgemm.h) does in fp32. The items are spread over the OpenMP threads,
// each product whole on one thread (never split, over K or otherwise), so results do not
// depend on the thread count. beta == 0 overwrites C[i] (never read: NaN there is harmless);
// beta == 1 accumulates. The C[i] must not overlap each other or the inputs. Packing buffers
// are per thread, kept across calls (no allocation once they have grown). Requires
// bgemm_available(); never inside a parallel region.
void bgemm_batch(bool ta, bool tb, size_t count, size_t M, size_t N, size_t K, float alpha,
                 const float *const *A, size_t lda, const float *const *B, size_t ldb, float beta,
                 float *const *C, size_t ldc);

// Plain references: the same rounding of op(A) and op(B), products summed in double. For tests.
void bgemm_ref(bool tb, size_t M, size_t N, size_t K, float alpha, const float *A,
               size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc);
void bgemm_batch_ref(bool ta, bool tb, size_t count, size_t M, size_t N, size_t K, float alpha,
                     const float *const *A, size_t lda, const float *const *B, size_t ldb,
                     float beta, float *const *C, size_t ldc);

// For tests: rows [0, m) and columns [0, kc) of op(A) (m <= 4032, kc <= BGEMM_KC) packed as the
// kernel of isa reads them, every row panel of the block (round_up(m, 12) x kcp bf16 for
// AVX512-BF16, round_up(m, 32) x kcp for AMX; kcp = round_up(kc, 32)), zeros past m and kc.
// The packing uses AVX512-BF16 instructions only, so the AMX layout (transposed A included)
// can be checked on CPUs without AMX. dst 64-byte aligned. Requires bgemm_available().
void bgemm_pack_a(BgemmIsa isa, bool ta, const float *A, size_t lda, size_t m, size_t kc,
                  uint16_t *dst);

#endif
