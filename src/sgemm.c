// sgemm.c: see sgemm.h.
//
// The classic blocking (Goto and van de Geijn, "Anatomy of high-performance matrix
// multiplication", 2008): for each block of KC along K, the block of op(A) (up to MC rows)
// and of op(B) (up to NC columns) are copied into "packed" panels, laid out in exactly the
// order the micro-kernel reads them. The micro-kernel keeps a 12 x 32 tile of C in 24 zmm
// registers and, per k, loads 32 floats of B (two vectors) and broadcasts 12 of A: 24 fused
// multiply-adds per 14 loads. One A micro-panel (12 x KC floats, 12 KiB) stays in L1 while
// a thread walks the B panels of the block (KC x NC floats, 1 MiB) from its L2.
//
// Four schedules share the packing and the kernel: product() splits each block's tiles
// over the team (B block shared); product_colsplit() gives each thread whole groups of
// columns of a very wide product (B never shared); driver_ksplit() cuts a very deep product
// with a small output into 16 slices of K, fixed by the shape, each in parts of rows; and
// sgemm_native_batch() runs whole small products one per thread. Teams steal work from each
// other's shares inside a block (team.h) and meet at one barrier per block. None lets the
// thread count or the stealing decide how K is summed, so results do not depend on them.
//
// References: tests/test_sgemm.c holds every schedule to a double-precision product within
// the float-summation error bound, and test_ops.c/test_sgemm.c compare it with OpenBLAS.
#include "sgemm.h"

#include <omp.h>
#include <stdlib.h>

#include "team.h"
#include "util.h"

bool sgemm_ksplit_shape(size_t M, size_t N, size_t K) {
    return K >= 16384 && K >= SGEMM_KSPLIT * (M > N ? M : N);
}

void sgemm_ksplit_row(float *part, size_t M, size_t N, size_t i, float alpha, float beta, float *C,
                      size_t ldc) {
    float *acc = part + i * N, *c = C + i * ldc;
    for (size_t sl = 1; sl < SGEMM_KSPLIT; sl++) {
        const float *ps = part + sl * M * N + i * N;
        for (size_t j = 0; j < N; j++) acc[j] += ps[j];
    }
    for (size_t j = 0; j < N; j++) c[j] = beta == 0.0f ? alpha * acc[j] : alpha * acc[j] + beta * c[j];
}

#if defined(__AVX512F__)
#include <immintrin.h>

#include "simd.h"

enum {
    MR = 12,     // rows of C per micro-tile (broadcast from packed A)
    NR = SGEMM_NR,  // columns of C per micro-tile (two zmm vectors of packed B)
    KC = SGEMM_KC,  // depth of one packed block
    MC = 4092,   // rows of A packed per block (a multiple of MR): 4 MiB, usually all of A
    NC = 1024,   // columns of B packed per block: KC x NC floats = 1 MiB, fits L2
};

// Packed buffers, allocated once at their largest size and reused by every call (a product
// runs hundreds of times per step; allocating ~5 MiB each time would cost page faults).
// Callers are single-threaded by contract, so one static pair is enough.
static float *packed_a, *packed_b;
static size_t packed_a_floats, packed_b_floats;

// Copy op(A)[i0 + ip*MR + r][p0 + k] for r < MR, k < kc into panel ip of dst: the panel is
// kc groups of MR floats (k-major), rows past m are zero. Overwrites dst's panel.
static void pack_a_panel(bool ta, const float *A, size_t lda, size_t i0, size_t m, size_t p0,
                         size_t kc, size_t ip, float *dst) {
    float *d = dst + ip * MR * kc;
    const size_t r0 = ip * MR, rows = m - r0 < MR ? m - r0 : MR;
    if (ta) {  // op(A)[i][k] = A[k*lda + i]: each k holds the panel's rows contiguously
        const __mmask16 mask = (__mmask16)((1u << rows) - 1);
        for (size_t k = 0; k < kc; k++) {  // 12 lanes: the rows, zeros past m
            const __m512 v = _mm512_maskz_loadu_ps(mask, A + (p0 + k) * lda + i0 + r0);
            _mm512_mask_storeu_ps(d + k * MR, 0x0FFF, v);
        }
        return;
    }
    // op(A)[i][k] = A[i*lda + k]: a transpose, 16 k at a time (rows MR..15 of the 16 x 16
    // block are zero and not stored), the last kc % 16 one by one
    const float *s = A + (i0 + r0) * lda + p0;
    size_t k = 0;
    for (; k + 16 <= kc; k += 16) {
        __m512i r[16];
        for (size_t i = 0; i < 16; i++)
            r[i] = i < rows ? _mm512_loadu_si512(s + i * lda + k) : _mm512_setzero_si512();
        simd_transpose16x32(r);
        for (size_t i = 0; i < 16; i++) _mm512_mask_storeu_epi32(d + (k + i) * MR, 0x0FFF, r[i]);
    }
    for (; k < kc; k++)
        for (size_t i = 0; i < MR; i++) d[k * MR + i] = i < rows ? s[i * lda + k] : 0.0f;
}

// Copy op(B)[p0 + k][c0 + j] for k < kc, j < NR into the panel d: kc groups of NR floats,
// columns j >= cols (cols <= NR) are zero. Overwrites the panel.
static void pack_b_panel(bool tb, const float *B, size_t ldb, size_t c0, size_t cols, size_t p0,
                         size_t kc, float *d) {
    if (!tb) {  // op(B)[k][j] = B[k*ldb + j]: rows of the panel are contiguous runs
        const __mmask16 m0 = cols >= 16 ? 0xFFFF : (__mmask16)((1u << cols) - 1);
        const __mmask16 m1 = cols >= 32 ? 0xFFFF : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
        for (size_t k = 0; k < kc; k++) {
            const float *s = B + (p0 + k) * ldb + c0;
            _mm512_store_ps(d + k * NR, _mm512_maskz_loadu_ps(m0, s));
            _mm512_store_ps(d + k * NR + 16, _mm512_maskz_loadu_ps(m1, s + 16));
        }
        return;
    }
    // op(B)[k][j] = B[j*ldb + k]: a transpose, in 16 x 16 blocks where the block is whole
    size_t k = 0;
    if (cols == NR)
        for (; k + 16 <= kc; k += 16)
            for (size_t h = 0; h < NR; h += 16) {
                __m512i r[16];
                const float *s = B + (c0 + h) * ldb + p0 + k;
                for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_si512(s + i * ldb);
                simd_transpose16x32(r);
                for (int i = 0; i < 16; i++) _mm512_store_si512(d + (k + i) * NR + h, r[i]);
            }
    for (size_t j = 0; j < NR; j++) {
        if (j < cols) {
            const float *s = B + (c0 + j) * ldb + p0;
            for (size_t kk = k; kk < kc; kk++) d[kk * NR + j] = s[kk];
        } else {
            for (size_t kk = k; kk < kc; kk++) d[kk * NR + j] = 0.0f;
        }
    }
}

// C[0..m, 0..n) = alpha * (Ap . Bp) + beta * C for one micro-tile, m <= MR, n <= NR.
// Ap: kc x MR packed, Bp: kc x NR packed (64-byte aligned). beta == 0 never reads C.
static void kernel_12x32(size_t kc, const float *Ap, const float *Bp, float *C, size_t ldc,
                         size_t m, size_t n, float alpha, float beta) {
#define ZERO2(r) __m512 c##r##a = _mm512_setzero_ps(), c##r##b = _mm512_setzero_ps()
    ZERO2(0); ZERO2(1); ZERO2(2); ZERO2(3); ZERO2(4); ZERO2(5);
    ZERO2(6); ZERO2(7); ZERO2(8); ZERO2(9); ZERO2(10); ZERO2(11);
#undef ZERO2
    for (size_t k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(Bp), b1 = _mm512_load_ps(Bp + 16);
#define FMA2(r)                                    \
    do {                                           \
        const __m512 a = _mm512_set1_ps(Ap[r]);    \
        c##r##a = _mm512_fmadd_ps(a, b0, c##r##a); \
        c##r##b = _mm512_fmadd_ps(a, b1, c##r##b); \
    } while (0)
        FMA2(0); FMA2(1); FMA2(2); FMA2(3); FMA2(4); FMA2(5);
        FMA2(6); FMA2(7); FMA2(8); FMA2(9); FMA2(10); FMA2(11);
#undef FMA2
        Ap += MR;
        Bp += NR;
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const __mmask16 m0 = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
    const __mmask16 m1 = n >= 32 ? 0xFFFF : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
    const __m512 acc[MR][2] = {{c0a, c0b}, {c1a, c1b}, {c2a, c2b}, {c3a, c3b},
                               {c4a, c4b}, {c5a, c5b}, {c6a, c6b}, {c7a, c7b},
                               {c8a, c8b}, {c9a, c9b}, {c10a, c10b}, {c11a, c11b}};
    for (size_t r = 0; r < m; r++) {
        float *c = C + r * ldc;
        __m512 x0 = _mm512_mul_ps(va, acc[r][0]), x1 = _mm512_mul_ps(va, acc[r][1]);
        if (beta != 0.0f) {
            x0 = _mm512_add_ps(x0, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m0, c)));
            x1 = _mm512_add_ps(x1, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m1, c + 16)));
        }
        _mm512_mask_storeu_ps(c, m0, x0);
        _mm512_mask_storeu_ps(c + 16, m1, x1);
    }
}

bool sgemm_native_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

// Threads worth using for a product of this size: below ~4 MFLOP per thread the fork and
// barriers cost more than they save.
static int threads_for(size_t M, size_t N, size_t K) {
    const double flops = 2.0 * (double)M * (double)N * (double)K;
    int t = omp_get_max_threads() < TEAM_MAX ? omp_get_max_threads() : TEAM_MAX;
    int useful = (int)(flops / 4e6);
    if (useful < 1) useful = 1;
    return t < useful ? t : useful;
}

// op(B) as the driver sees it: a float matrix (src == NULL) or a panel source.
typedef struct {
    bool tb;
    const float *B;
    size_t ldb;
    const SgemmPanelSource *src;
} BOperand;

// Rows [k0, k0 + kn) of panel jp of op(B)'s block (rows p0..p0+kc, columns j0..j0+nc) into
// their place in the packed block dst, from the matrix or the panel source, whichever b holds.
static void pack_b(const BOperand *b, size_t j0, size_t nc, size_t p0, size_t kc, size_t jp,
                   size_t k0, size_t kn, float *dst) {
    float *d = dst + jp * NR * kc + k0 * NR;
    const size_t c0 = j0 + jp * NR, cols = min_sz(NR, nc - jp * NR);
    if (b->src)
        b->src->fill(b->src->ctx, p0 + k0, kn, c0, cols, d);
    else
        pack_b_panel(b->tb, b->B, b->ldb, c0, cols, p0 + k0, kn, d);
}

// Grow-only 64-byte aligned scratch: *buf holds at least `floats` floats afterwards (the old
// contents are not kept). Used for the per-thread buffers, which live for the process.
static float *scratch(float **buf, size_t *cap, size_t floats) {
    if (*cap < floats) {
        free(*buf);
        *buf = xmalloc_aligned(floats * sizeof(float));
        *cap = floats;
    }
    return *buf;
}

// C = beta * C (K == 0 or alpha == 0).
static void scale_c(size_t M, size_t N, float beta, float *C, size_t ldc) {
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

// Packing buffers of one product, two of each: a team alternates them between blocks, so that
// a thread may pack block b + 1 while others still compute block b (one barrier per block).
// A single thread (nth == 1) may pass the same buffer twice.
typedef struct {
    float *a[2], *b[2];
} Packs;

// Rows of packed B a thread fills at a time: splitting panels by rows too gives a team
// enough equal pieces (24 panels of a 768-column block would leave 16 threads uneven).
enum { KCHUNK = 64 };

// Thread tid's share of packing op(B)'s block (rows p0..p0+kc, columns j0..j0+nc) into pb,
// in pieces of one panel by KCHUNK rows.
static void pack_b_share(const BOperand *b, size_t j0, size_t nc, size_t p0, size_t kc, float *pb,
                         size_t nth, size_t tid) {
    const size_t npanels = (nc + NR - 1) / NR, chunks = (kc + KCHUNK - 1) / KCHUNK;
    const size_t pieces = npanels * chunks;
    for (size_t q = pieces * tid / nth; q < pieces * (tid + 1) / nth; q++) {
        const size_t jp = q / chunks, k0 = q % chunks * KCHUNK;
        pack_b(b, j0, nc, p0, kc, jp, k0, min_sz(KCHUNK, kc - k0), pb);
    }
}

// One block of C's micro-tiles: packed A (mc rows) and B (nc columns), kc deep.
typedef struct {
    const float *pa, *pb;
    size_t kc, mc, nc, npanels;
    float *C;  // the block's top-left element
    size_t ldc;
    float alpha, beta;
} Block;

// Micro-tile t of the block (bk: a Block), row panel major: t = ip * npanels + jp.
static void block_tile(const void *ctx, size_t t) {
    const Block *bk = ctx;
    const size_t ip = t / bk->npanels, jp = t % bk->npanels, r = ip * MR, c = jp * NR;
    kernel_12x32(bk->kc, bk->pa + ip * MR * bk->kc, bk->pb + jp * NR * bk->kc,
                 bk->C + r * bk->ldc + c, bk->ldc, min_sz(MR, bk->mc - r), min_sz(NR, bk->nc - c),
                 bk->alpha, bk->beta);
}

// The blocked product, run by thread tid of nth: the same body serves one product over a
// whole team (nth > 1, called inside `omp parallel`) and one product per thread (nth == 1,
// no synchronisation). Per block the team packs A (when a new K block starts) and B in
// shares, meets at one barrier, and computes the block's tiles with work stealing; the
// buffers alternate between blocks, so there is no barrier after the tiles.
static void product(bool ta, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                    const BOperand *b, float beta, float *C, size_t ldc, const Packs *pk,
                    size_t nth, size_t tid) {
    size_t ablocks = 0, blocks = 0;
    for (size_t i0 = 0; i0 < M; i0 += MC) {
        const size_t mc = min_sz(MC, M - i0), mpanels = (mc + MR - 1) / MR;
        for (size_t p0 = 0; p0 < K; p0 += KC) {
            const size_t kc = min_sz(KC, K - p0);
            float *pa = pk->a[ablocks++ & 1];
            for (size_t ip = mpanels * tid / nth; ip < mpanels * (tid + 1) / nth; ip++)
                pack_a_panel(ta, A, lda, i0, mc, p0, kc, ip, pa);
            for (size_t j0 = 0; j0 < N; j0 += NC) {
                const size_t nc = min_sz(NC, N - j0), npanels = (nc + NR - 1) / NR;
                const size_t set = blocks++ & 1, tiles = mpanels * npanels;
                const Block bk = {pa, pk->b[set], kc, mc, nc, npanels, C + i0 * ldc + j0, ldc,
                                  alpha, p0 == 0 ? beta : 1.0f};  // later K blocks accumulate
                pack_b_share(b, j0, nc, p0, kc, pk->b[set], nth, tid);
                team_run(set, tiles, nth, tid, block_tile, &bk);
            }
        }
    }
}

// Columns of B packed and computed as one unit in the column-split schedule (KC x NCS floats =
// 256 KiB, beside the shared A block in a thread's L2).
enum { NCS = 256 };

// The column-split schedule, for products with very many columns (the output layer): A's
// block is packed once by the team and shared; B's columns are units of NCS, each packed
// into the private buffer pb_own of the thread that claims it, which computes every row of C
// for them. B is never shared between cores. One barrier per K block (A's buffers and the
// counters alternate). Same contract as product(); requires M <= MC.
// One K block of the column-split schedule: the block's packed A, op(B), the thread's own B
// buffer and C with the block's alpha and beta.
typedef struct {
    const BOperand *b;
    size_t p0, kc, M, N;
    const float *pa;
    float *pb_own, *C;
    size_t ldc;
    float alpha, beta;
} ColumnUnits;

// Unit u of a ColumnUnits block: columns [u * NCS, +NCS) of B packed into pb_own, then every
// row of C for them (an A micro-panel in L1, the unit's B panels streamed from L2).
static void column_unit(const void *ctx, size_t u) {
    const ColumnUnits *cu = ctx;
    const size_t j0 = u * NCS, nc = min_sz(NCS, cu->N - j0), npanels = (nc + NR - 1) / NR;
    for (size_t jp = 0; jp < npanels; jp++) pack_b(cu->b, j0, nc, cu->p0, cu->kc, jp, 0, cu->kc, cu->pb_own);
    const Block bk = {cu->pa, cu->pb_own, cu->kc, cu->M, nc, npanels, cu->C + j0, cu->ldc, cu->alpha, cu->beta};
    for (size_t t = 0; t < (cu->M + MR - 1) / MR * npanels; t++) block_tile(&bk, t);
}

static void product_colsplit(bool ta, size_t M, size_t N, size_t K, float alpha, const float *A,
                             size_t lda, const BOperand *b, float beta, float *C, size_t ldc,
                             const Packs *pk, float *pb_own, size_t nth, size_t tid) {
    const size_t mpanels = (M + MR - 1) / MR, units = (N + NCS - 1) / NCS;
    size_t blocks = 0;
    for (size_t p0 = 0; p0 < K; p0 += KC) {
        const size_t kc = min_sz(KC, K - p0), set = blocks++ & 1;
        float *pa = pk->a[set];
        for (size_t ip = mpanels * tid / nth; ip < mpanels * (tid + 1) / nth; ip++)
            pack_a_panel(ta, A, lda, 0, M, p0, kc, ip, pa);
        const ColumnUnits cu = {b, p0, kc, M, N, pa, pb_own, C, ldc, alpha, p0 == 0 ? beta : 1.0f};
        team_run(set, units, nth, tid, column_unit, &cu);
    }
}

// Private B buffers of the column-split schedule, one per thread, kept like packed_a.
static float *colsplit_buf;
static size_t colsplit_floats;

// Products whose depth dwarfs their output (the logits' input gradient, 512 x 768 x 50257)
// leave each of 16 threads a few tiles per K block. They are split over K instead, into
// KSPLIT slices fixed by the shape alone, and each slice into up to 4 parts of rows: every
// (slice, rows) unit is a whole product of its own on one thread, into its part of the
// slice's partial C, the units dealt out dynamically, and the partials are added in slice
// order. Results are therefore the same for every thread count. Error: a slice's sum has at
// most ceil(K / KSPLIT) terms and the final sum KSPLIT more, so the usual bound for a K-term
// float sum still holds.
enum { KSPLIT = SGEMM_KSPLIT };

// True when the K-split schedule runs (matrix operands only: slices offset the pointers).
static bool use_ksplit(size_t M, size_t N, size_t K, const BOperand *b) {
    return !b->src && sgemm_ksplit_shape(M, N, K);
}

// Partial sums and per-thread packing buffers of the K-split schedule, kept like packed_a.
static float *ksplit_buf, *ksplit_pack;
static size_t ksplit_floats, ksplit_pack_floats;

// C = alpha * sum over slices of op(A)[:, slice] op(B)[slice, :] + beta * C (see KSPLIT).
static void driver_ksplit(bool ta, size_t M, size_t N, size_t K, float alpha, const float *A,
                          size_t lda, const BOperand *b, float beta, float *C, size_t ldc) {
    const size_t len = (K + KSPLIT - 1) / KSPLIT, mn = M * N;
    const size_t parts = M >= 4 * 128 ? 4 : M >= 2 * 128 ? 2 : 1;  // >= 128 rows each
    const size_t fa = ((min_sz(MC, M) + MR - 1) / MR * MR * KC + 15) / 16 * 16;
    const size_t per_thread = fa + (min_sz(NC, N) + NR - 1) / NR * NR * KC;
    const size_t nth = (size_t)omp_get_max_threads();
    float *part = scratch(&ksplit_buf, &ksplit_floats, KSPLIT * mn);
    float *pack = scratch(&ksplit_pack, &ksplit_pack_floats, per_thread * nth);
    #pragma omp parallel for schedule(dynamic, 1)
    for (size_t u = 0; u < KSPLIT * parts; u++) {
        const size_t sl = u / parts, r0 = M * (u % parts) / parts, r1 = M * (u % parts + 1) / parts;
        const size_t p0 = sl * len, kl = p0 < K ? min_sz(len, K - p0) : 0;
        float *ps = part + sl * mn + r0 * N, *pa = pack + (size_t)omp_get_thread_num() * per_thread;
        if (kl == 0) {
            scale_c(r1 - r0, N, 0.0f, ps, N);
            continue;
        }
        const float *as = ta ? A + p0 * lda + r0 : A + r0 * lda + p0;
        const BOperand bs = {b->tb, b->tb ? b->B + p0 : b->B + p0 * b->ldb, b->ldb, NULL};
        const Packs pk = {{pa, pa}, {pa + fa, pa + fa}};
        product(ta, r1 - r0, N, kl, 1.0f, as, lda, &bs, 0.0f, ps, N, &pk, 1, 0);
    }
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < M; i++) sgemm_ksplit_row(part, M, N, i, alpha, beta, C, ldc);
}

static void driver(bool ta, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                   const BOperand *b, float beta, float *C, size_t ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) return scale_c(M, N, beta, C, ldc);
    if (use_ksplit(M, N, K, b)) return driver_ksplit(ta, M, N, K, alpha, A, lda, b, beta, C, ldc);
    const int nth = threads_for(M, N, K);
    // column split for wide products whose A block fits L2 beside a thread's B block, when
    // every thread gets at least 16 panels (512 columns) of B: on the 2-core machine 1.05-1.1x
    // on the output layer and wide linears; on 16 cores the linears (2,304 and 3,072 columns)
    // ran their kernel 25% slower in it than in product() (each A panel, fetched from
    // another core, served too few tiles), so there only the output layer takes it
    const bool colsplit = nth > 1 && M <= 1024 && N >= 2 * M && (N + NR - 1) / NR >= 16 * (size_t)nth;
    float *pa = scratch(&packed_a, &packed_a_floats, 2 * (size_t)MC * KC);
    float *pb = scratch(&packed_b, &packed_b_floats, 2 * (size_t)NC * KC);
    const Packs pk = {{pa, pa + (size_t)MC * KC}, {pb, pb + (size_t)NC * KC}};
    float *pown = colsplit ? scratch(&colsplit_buf, &colsplit_floats, (size_t)nth * NCS * KC) : NULL;
    #pragma omp parallel num_threads(nth)
    {
        const size_t n = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
        if (colsplit)
            product_colsplit(ta, M, N, K, alpha, A, lda, b, beta, C, ldc, &pk, pown + t * NCS * KC, n, t);
        else
            product(ta, M, N, K, alpha, A, lda, b, beta, C, ldc, &pk, n, t);
    }
}

// Per-thread packing buffers of sgemm_native_batch, grown on demand and kept (like
// packed_a/packed_b) so that a step's hundreds of batches allocate nothing.
static float *batch_buf;
static size_t batch_buf_floats;

void sgemm_native_batch(bool ta, bool tb, size_t count, size_t M, size_t N, size_t K, float alpha,
                        const float *const *A, size_t lda, const float *const *B, size_t ldb,
                        float beta, float *const *C, size_t ldc) {
    if (count == 0 || M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {
        for (size_t i = 0; i < count; i++) scale_c(M, N, beta, C[i], ldc);
        return;
    }
    const size_t kc = min_sz(KC, K);
    // floats of each packed buffer, rounded up to 16 so that every buffer is 64-byte aligned
    const size_t fa = ((min_sz(MC, M) + MR - 1) / MR * MR * kc + 15) / 16 * 16;
    const size_t fb = (min_sz(NC, N) + NR - 1) / NR * NR * kc;
    const size_t per_thread = (fa + fb + 15) / 16 * 16, nth = (size_t)omp_get_max_threads();
    float *buf = scratch(&batch_buf, &batch_buf_floats, per_thread * nth);
    #pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < count; i++) {
        float *pa = buf + (size_t)omp_get_thread_num() * per_thread, *pb = pa + fa;
        const BOperand b = {tb, B[i], ldb, NULL};
        const Packs pk = {{pa, pa}, {pb, pb}};
        product(ta, M, N, K, alpha, A[i], lda, &b, beta, C[i], ldc, &pk, 1, 0);
    }
}

void sgemm_native(bool ta, bool tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                  size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    const BOperand b = {tb, B, ldb, NULL};
    driver(ta, M, N, K, alpha, A, lda, &b, beta, C, ldc);
}

void sgemm_native_b(bool ta, size_t M, size_t N, size_t K, float alpha, const float *A,
                    size_t lda, const SgemmPanelSource *B, float beta, float *C, size_t ldc) {
    const BOperand b = {false, NULL, 0, B};
    driver(ta, M, N, K, alpha, A, lda, &b, beta, C, ldc);
}

void sgemm_pack_transposed(const float *src, size_t lds, size_t n, size_t kc, float *dst) {
    pack_b_panel(true, src, lds, 0, n, 0, kc, dst);
}

#else  // no AVX-512 in this build: gemm.c always uses OpenBLAS

bool sgemm_native_available(void) { return false; }

void sgemm_native(bool ta, bool tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                  size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B;
    (void)ldb, (void)beta, (void)C, (void)ldc;
    CHECK(!"sgemm_native called in a build without AVX-512");
}

void sgemm_native_batch(bool ta, bool tb, size_t count, size_t M, size_t N, size_t K, float alpha,
                        const float *const *A, size_t lda, const float *const *B, size_t ldb,
                        float beta, float *const *C, size_t ldc) {
    (void)ta, (void)tb, (void)count, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda;
    (void)B, (void)ldb, (void)beta, (void)C, (void)ldc;
    CHECK(!"sgemm_native_batch called in a build without AVX-512");
}

void sgemm_native_b(bool ta, size_t M, size_t N, size_t K, float alpha, const float *A,
                    size_t lda, const SgemmPanelSource *B, float beta, float *C, size_t ldc) {
    (void)ta, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B, (void)beta;
    (void)C, (void)ldc;
    CHECK(!"sgemm_native_b called in a build without AVX-512");
}

void sgemm_pack_transposed(const float *src, size_t lds, size_t n, size_t kc, float *dst) {
    (void)src, (void)lds, (void)n, (void)kc, (void)dst;
    CHECK(!"sgemm_pack_transposed called in a build without AVX-512");
}

#endif
