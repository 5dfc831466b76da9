// bgemm.c: see bgemm.h.
//
// The blocking and the three schedules are sgemm.c's (packed panels per KC-deep block; output
// tiles split over the team, or each thread its own columns for wide products, or one whole
// product per thread for a batch; never K), with bf16 panels: values are rounded to bf16
// while they are packed, and a pair of consecutive k values sits side by side, the layout
// both instruction sets read.
//   B panel (both ISAs): BGEMM_NR = 32 columns; pair-row q holds (k = 2q, 2q+1) of each
//     column: 64 bf16 (128 bytes) per pair-row, kcp / 2 pair-rows (kcp = kc rounded up to 32).
//   A panel, AVX512-BF16: 12 rows; per pair-row q the 12 rows' pairs (48 bytes), broadcast
//     one at a time by the 12 x 32 kernel (VDPBF16PS: 16 lanes, each a dot of one pair).
//   A panel, AMX: 32 rows as two 16-row tiles per 32-deep step: 16 rows x 32 bf16 (1 KiB)
//     each, the layout TDPBF16PS reads from A; the 32 x 32 kernel keeps 4 C tiles.
// A batch's transposed A (attention's P^T, dS^T) is packed into the same A panels from A^T.
// Each tile product is summed in fp32 per KC block; later blocks accumulate through C.
//
// References: bgemm_ref below (double sums of the same rounded inputs) and
// tests/test_bgemm.c, which holds every path to it within the fp32 summation bound.
#include "bgemm.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "sgemm.h"
#include "team.h"
#include "util.h"

float bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) {
        u |= 0x00400000u;  // NaN stays NaN (quietened)
    } else if ((u & 0x7F800000u) == 0) {
        u &= 0x80000000u;  // subnormals flush to signed zero, as the CPU's conversion does
    } else {
        u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest, ties to even
    }
    u &= 0xFFFF0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

// One product of the references: op(A), op(B) rounded to bf16, summed in double.
static void ref_one(bool ta, bool tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                    size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            double s = 0.0;
            for (size_t k = 0; k < K; k++)
                s += (double)bf16_round(ta ? A[k * lda + i] : A[i * lda + k]) *
                     (double)bf16_round(tb ? B[j * ldb + k] : B[k * ldb + j]);
            const double old = beta == 0.0f ? 0.0 : (double)beta * C[i * ldc + j];
            C[i * ldc + j] = (float)((double)alpha * s + old);
        }
}

void bgemm_ref(bool tb, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
               const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    ref_one(false, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void bgemm_batch_ref(bool ta, bool tb, size_t count, size_t M, size_t N, size_t K, float alpha,
                     const float *const *A, size_t lda, const float *const *B, size_t ldb,
                     float beta, float *const *C, size_t ldc) {
    for (size_t i = 0; i < count; i++) ref_one(ta, tb, M, N, K, alpha, A[i], lda, B[i], ldb, beta, C[i], ldc);
}

bool bgemm_mode(const char *mode, bool *on, Error *err) {
    if (strcmp(mode, "false") == 0) {
        *on = false;
    } else if (strcmp(mode, "auto") == 0) {
        *on = bgemm_available();
    } else if (strcmp(mode, "true") == 0) {
        if (!bgemm_available())
            return error_set(err, "bf16: true needs a CPU with AVX512-BF16 or AMX-BF16 instructions; this "
                                  "one has neither (use bf16: auto or false)");
        *on = true;
    } else {
        return error_set(err, "bf16: expected auto, true or false, found '%s'", mode);
    }
    return true;
}

const char *bgemm_isa_name(BgemmIsa isa) {
    switch (isa) {
    case BGEMM_AMX: return "AMX-BF16";
    case BGEMM_AVX512BF16: return "AVX512-BF16";
    default: return "none";
    }
}

#if defined(__AVX512F__) && defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "simd.h"

#define TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define TARGET_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))

enum {
    NR = BGEMM_NR,
    KC = BGEMM_KC,
    KSTEP = BGEMM_KSTEP,
    MR_VEC = 12,   // rows per AVX512-BF16 micro-tile
    MR_AMX = 32,   // rows per AMX micro-tile (two 16-row tiles)
    MC = 4032,     // rows of A packed per block: a multiple of both, 4 MiB of bf16 at KC
    NC = 1024,     // columns of B per block: 1 MiB of bf16 at KC, in L2
};

// ---- instruction-set choice ---------------------------------------------------------------

// XCR0: which register states the OS saves (bits 5-7 AVX-512, 17-18 AMX tiles).
static uint64_t xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

// Ask Linux for the AMX tile-data state (it is off until a process requests it).
static bool amx_permission(void) {
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

static BgemmIsa detect(void) {
    unsigned a, b, c, d, a1 = 0, b1, c1, d1;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return BGEMM_NONE;  // OSXSAVE
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return BGEMM_NONE;
    const bool avx512 = (b & (1u << 16)) && (b & (1u << 30)) && (b & (1u << 31));  // F, BW, VL
    const bool amx = (d & (1u << 22)) && (d & (1u << 24));                            // BF16, TILE
    __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
    const bool bf16 = a1 & (1u << 5);
    const uint64_t x = xcr0();
    if (!avx512 || !bf16 || (x & 0xE6) != 0xE6) return BGEMM_NONE;
    if (amx && (x & (3u << 17)) == (3u << 17) && amx_permission()) return BGEMM_AMX;
    return BGEMM_AVX512BF16;
}

static int detected = -1, chosen = -1;

BgemmIsa bgemm_isa(void) {
    if (detected < 0) {
        detected = chosen = (int)detect();
        const char *env = getenv("QLORA_BF16_ISA");
        if (env && strcmp(env, "avx512bf16") == 0 && detected >= BGEMM_AVX512BF16)
            chosen = BGEMM_AVX512BF16;
    }
    return (BgemmIsa)chosen;
}

bool bgemm_isa_force(BgemmIsa isa) {
    bgemm_isa();
    if ((int)isa > detected) return false;
    chosen = (int)isa;
    return true;
}

// ---- rounding and packing -------------------------------------------------------------------

// 16 pairs (lo[i], hi[i]) rounded to bf16: the 32-bit lane i holds lo[i] in its low half.
TARGET_BF16 static inline __m512i round_pairs(__m512 lo, __m512 hi) {
    static const short order[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                    8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);  // lo -> halves 0..15
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(order), both);
}

// 32 consecutive values of one row rounded to bf16 (n <= 32 of them, zeros after): the 32-bit
// lane q holds the pair (2q, 2q+1).
TARGET_BF16 static inline __m512i round_run(const float *s, size_t n) {
    const __mmask16 m0 = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
    const __mmask16 m1 = n >= 32 ? 0xFFFF : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, s + 16),
                                        _mm512_maskz_loadu_ps(m0, s));
}

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }
static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

// Pair-interleaved panel from rows(k) = src + k * lds (n <= 32 values each); see bgemm.h.
TARGET_BF16 void bgemm_pack_rows(const float *src, size_t lds, size_t n, size_t kc, uint16_t *dst) {
    const __mmask16 m0 = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
    const __mmask16 m1 = n >= 32 ? 0xFFFF : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
    const size_t kcp = round_up(kc, KSTEP);
    for (size_t k = 0; k < kcp; k += 2) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
        if (k < kc) {
            a0 = _mm512_maskz_loadu_ps(m0, src + k * lds);
            a1 = _mm512_maskz_loadu_ps(m1, src + k * lds + 16);
        }
        if (k + 1 < kc) {
            b0 = _mm512_maskz_loadu_ps(m0, src + (k + 1) * lds);
            b1 = _mm512_maskz_loadu_ps(m1, src + (k + 1) * lds + 16);
        }
        _mm512_store_si512(dst + k * NR, round_pairs(a0, b0));
        _mm512_store_si512(dst + k * NR + 32, round_pairs(a1, b1));
    }
}

// The same from a transposed source, value (k, j) at src[j * lds + k]: each column's run of
// k is rounded into pairs, then 16 x 16 blocks of pairs are transposed.
TARGET_BF16 void bgemm_pack_transposed(const float *src, size_t lds, size_t n, size_t kc,
                                       uint16_t *dst) {
    const size_t kcp = round_up(kc, KSTEP);
    for (size_t k = 0; k < kcp; k += 32)  // 16 pair-rows at a time
        for (size_t h = 0; h < NR; h += 16) {
            __m512i r[16];
            for (size_t j = 0; j < 16; j++)
                r[j] = h + j < n && k < kc ? round_run(src + (h + j) * lds + k, min_sz(32, kc - k))
                                           : _mm512_setzero_si512();
            simd_transpose16x32(r);
            for (size_t q = 0; q < 16; q++) _mm512_store_si512(dst + (k + 2 * q) * NR + 2 * h, r[q]);
        }
}

// Row panel ip of A's block (rows i0 + ip*MR_VEC.., columns p0..p0+kc) for the AVX512-BF16
// kernel: per pair-row q, the 12 rows' pairs. Rows past m and columns past kc are zero.
TARGET_BF16 static void pack_a_vec(const float *A, size_t lda, size_t i0, size_t m, size_t p0,
                                   size_t kc, size_t ip, uint16_t *dst) {
    const size_t kcp = round_up(kc, KSTEP), r0 = ip * MR_VEC, rows = min_sz(MR_VEC, m - r0);
    uint32_t *d = (uint32_t *)(dst + ip * MR_VEC * kcp);
    for (size_t k = 0; k < kcp; k += 32) {
        __m512i r[16];
        for (size_t i = 0; i < 16; i++)
            r[i] = i < rows && k < kc ? round_run(A + (i0 + r0 + i) * lda + p0 + k, min_sz(32, kc - k))
                                      : _mm512_setzero_si512();
        simd_transpose16x32(r);
        for (size_t q = 0; q < 16; q++) _mm512_mask_storeu_epi32(d + (k / 2 + q) * MR_VEC, 0x0FFF, r[q]);
    }
}

// Row panel ip for the AMX kernel: per 32-deep step, rows 0-15 then rows 16-31, each row 32
// bf16 (one tile row). Rows past m and columns past kc are zero.
TARGET_BF16 static void pack_a_amx(const float *A, size_t lda, size_t i0, size_t m, size_t p0,
                                   size_t kc, size_t ip, uint16_t *dst) {
    const size_t kcp = round_up(kc, KSTEP), r0 = ip * MR_AMX, rows = min_sz(MR_AMX, m - r0);
    uint16_t *d = dst + ip * MR_AMX * kcp;
    for (size_t k = 0; k < kcp; k += KSTEP)
        for (size_t i = 0; i < MR_AMX; i++) {
            const __m512i v = i < rows && k < kc
                                  ? round_run(A + (i0 + r0 + i) * lda + p0 + k, min_sz(32, kc - k))
                                  : _mm512_setzero_si512();
            _mm512_store_si512(d + (k / KSTEP) * MR_AMX * KSTEP + i * KSTEP, v);
        }
}

// pack_a_vec's panel from a transposed A, op(A)[i][k] = A[k * lda + i]: memory rows k and
// k + 1 hold the panel's rows side by side, so one rounding of the pair gives pair-row k / 2.
TARGET_BF16 static void pack_a_vec_t(const float *A, size_t lda, size_t i0, size_t m, size_t p0,
                                     size_t kc, size_t ip, uint16_t *dst) {
    const size_t kcp = round_up(kc, KSTEP), r0 = ip * MR_VEC, rows = min_sz(MR_VEC, m - r0);
    const __mmask16 mask = (__mmask16)((1u << rows) - 1);
    const float *s = A + p0 * lda + i0 + r0;
    uint32_t *d = (uint32_t *)(dst + ip * MR_VEC * kcp);
    for (size_t k = 0; k < kcp; k += 2) {
        const __m512 lo = k < kc ? _mm512_maskz_loadu_ps(mask, s + k * lda) : _mm512_setzero_ps();
        const __m512 hi = k + 1 < kc ? _mm512_maskz_loadu_ps(mask, s + (k + 1) * lda) : _mm512_setzero_ps();
        _mm512_mask_storeu_epi32(d + (k / 2) * MR_VEC, 0x0FFF, round_pairs(lo, hi));
    }
}

// pack_a_amx's panel from a transposed A: per 32-deep step and 16 rows, the 16 pair-rows are
// rounded (lane i: row i's pair) and the 16 x 16 block of pairs transposed into tile rows.
TARGET_BF16 static void pack_a_amx_t(const float *A, size_t lda, size_t i0, size_t m, size_t p0,
                                     size_t kc, size_t ip, uint16_t *dst) {
    const size_t kcp = round_up(kc, KSTEP), r0 = ip * MR_AMX, rows = min_sz(MR_AMX, m - r0);
    const float *s = A + p0 * lda + i0 + r0;
    uint16_t *d = dst + ip * MR_AMX * kcp;
    for (size_t k = 0; k < kcp; k += KSTEP)
        for (size_t h = 0; h < MR_AMX; h += 16) {
            const size_t n = rows > h ? min_sz(16, rows - h) : 0;
            const __mmask16 mask = (__mmask16)((1u << n) - 1);
            __m512i r[16];
            for (size_t q = 0; q < 16; q++) {
                const size_t k0 = k + 2 * q;
                const __m512 lo = k0 < kc ? _mm512_maskz_loadu_ps(mask, s + k0 * lda + h) : _mm512_setzero_ps();
                const __m512 hi = k0 + 1 < kc ? _mm512_maskz_loadu_ps(mask, s + (k0 + 1) * lda + h)
                                              : _mm512_setzero_ps();
                r[q] = round_pairs(lo, hi);
            }
            simd_transpose16x32(r);  // r[i]: row h + i's 16 pairs, one tile row
            for (size_t i = 0; i < 16; i++)
                _mm512_store_si512(d + (k / KSTEP) * MR_AMX * KSTEP + (h + i) * KSTEP, r[i]);
        }
}

// Row panel ip of op(A)'s block (rows i0.., m of them; columns p0..p0+kc) in the layout of the
// AMX or the AVX512-BF16 kernel, from A as stored (ta) or not.
static void pack_a(bool amx, bool ta, const float *A, size_t lda, size_t i0, size_t m, size_t p0,
                   size_t kc, size_t ip, uint16_t *dst) {
    if (amx)
        (ta ? pack_a_amx_t : pack_a_amx)(A, lda, i0, m, p0, kc, ip, dst);
    else
        (ta ? pack_a_vec_t : pack_a_vec)(A, lda, i0, m, p0, kc, ip, dst);
}

// ---- micro-kernels --------------------------------------------------------------------------

// C[0..m, 0..n) = alpha * acc + beta * C for a tile held in memory (acc: rows of NR floats).
TARGET_BF16 static void store_tile(const float *acc, float *C, size_t ldc, size_t m, size_t n,
                                   float alpha, float beta) {
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const __mmask16 m0 = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
    const __mmask16 m1 = n >= 32 ? 0xFFFF : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
    for (size_t r = 0; r < m; r++) {
        float *c = C + r * ldc;
        __m512 x0 = _mm512_mul_ps(va, _mm512_load_ps(acc + r * NR));
        __m512 x1 = _mm512_mul_ps(va, _mm512_load_ps(acc + r * NR + 16));
        if (beta != 0.0f) {
            x0 = _mm512_add_ps(x0, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m0, c)));
            x1 = _mm512_add_ps(x1, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m1, c + 16)));
        }
        _mm512_mask_storeu_ps(c, m0, x0);
        _mm512_mask_storeu_ps(c + 16, m1, x1);
    }
}

// One 12 x 32 tile with VDPBF16PS: 24 accumulators, per pair-row two B vectors and 12
// broadcast A pairs. Ap, Bp: packed panels of kcp/2 pair-rows. Writes as store_tile.
TARGET_BF16 static void kernel_vec(size_t kcp, const uint16_t *Ap, const uint16_t *Bp, float *C,
                                   size_t ldc, size_t m, size_t n, float alpha, float beta) {
    // 24 named accumulators (an array would be kept in memory by the compiler)
#define ZERO2(r) __m512 c##r##a = _mm512_setzero_ps(), c##r##b = _mm512_setzero_ps()
    ZERO2(0); ZERO2(1); ZERO2(2); ZERO2(3); ZERO2(4); ZERO2(5);
    ZERO2(6); ZERO2(7); ZERO2(8); ZERO2(9); ZERO2(10); ZERO2(11);
#undef ZERO2
    const int32_t *a = (const int32_t *)Ap;
    for (size_t q = 0; q < kcp / 2; q++, a += MR_VEC, Bp += 2 * NR) {
        const __m512bh b0 = (__m512bh)_mm512_load_si512(Bp), b1 = (__m512bh)_mm512_load_si512(Bp + 32);
#define DOT2(r)                                              \
    do {                                                     \
        const __m512bh ar = (__m512bh)_mm512_set1_epi32(a[r]); \
        c##r##a = _mm512_dpbf16_ps(c##r##a, ar, b0);         \
        c##r##b = _mm512_dpbf16_ps(c##r##b, ar, b1);         \
    } while (0)
        DOT2(0); DOT2(1); DOT2(2); DOT2(3); DOT2(4); DOT2(5);
        DOT2(6); DOT2(7); DOT2(8); DOT2(9); DOT2(10); DOT2(11);
#undef DOT2
    }
    float tile[MR_VEC * NR] __attribute__((aligned(64)));
    const __m512 acc[MR_VEC][2] = {{c0a, c0b}, {c1a, c1b}, {c2a, c2b}, {c3a, c3b},
                                   {c4a, c4b}, {c5a, c5b}, {c6a, c6b}, {c7a, c7b},
                                   {c8a, c8b}, {c9a, c9b}, {c10a, c10b}, {c11a, c11b}};
    for (size_t r = 0; r < m; r++) {
        _mm512_store_ps(tile + r * NR, acc[r][0]);
        _mm512_store_ps(tile + r * NR + 16, acc[r][1]);
    }
    store_tile(tile, C, ldc, m, n, alpha, beta);
}

// The AMX tile configuration: tiles 0-3 the 2 x 2 C tiles (16 rows x 16 fp32), 4-5 the A
// tiles (16 rows x 32 bf16), 6-7 the B tiles (16 pair-rows x 16 columns x 2 bf16).
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileConfig;

// Load the configuration into this thread's tile registers (per thread, per region).
TARGET_AMX static void amx_begin(void) {
    TileConfig cfg __attribute__((aligned(64)));
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    // inline asm with the whole struct as an input: gcc 12's _tile_loadconfig builtin does not
    // tell the compiler that it reads cfg, and the stores above were dropped
    __asm__ volatile("ldtilecfg %0" : : "m"(cfg));
}

TARGET_AMX static void amx_end(void) { _tile_release(); }

// One 32 x 32 tile with TDPBF16PS, per 32-deep step two A tiles, two B tiles, four products.
// Ap: the AMX A panel; Bp: the B panel. Writes as store_tile. A whole tile with alpha 1 and
// beta 0 or 1 (every product of a training step) never passes through memory of its own:
// the C tiles start from C (beta 1) or zero and are stored straight back into C, which saves
// a 4 KiB round trip per K block (at AMX speed, a fifth of a 512-deep tile's time).
TARGET_AMX static void kernel_amx(size_t kcp, const uint16_t *Ap, const uint16_t *Bp, float *C,
                                  size_t ldc, size_t m, size_t n, float alpha, float beta) {
    const bool direct = m == MR_AMX && n == NR && alpha == 1.0f && (beta == 0.0f || beta == 1.0f);
    if (direct && beta == 1.0f) {
        _tile_loadd(0, C, ldc * sizeof(float));
        _tile_loadd(1, C + 16, ldc * sizeof(float));
        _tile_loadd(2, C + 16 * ldc, ldc * sizeof(float));
        _tile_loadd(3, C + 16 * ldc + 16, ldc * sizeof(float));
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (size_t s = 0; s < kcp / KSTEP; s++) {
        const uint16_t *a = Ap + s * MR_AMX * KSTEP, *b = Bp + s * KSTEP * NR;
        _tile_loadd(4, a, 64);
        _tile_loadd(5, a + 16 * KSTEP, 64);
        _tile_loadd(6, b, 2 * NR * 2);
        _tile_loadd(7, b + 32, 2 * NR * 2);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    if (direct) {
        _tile_stored(0, C, ldc * sizeof(float));
        _tile_stored(1, C + 16, ldc * sizeof(float));
        _tile_stored(2, C + 16 * ldc, ldc * sizeof(float));
        _tile_stored(3, C + 16 * ldc + 16, ldc * sizeof(float));
        return;
    }
    float tile[MR_AMX * NR] __attribute__((aligned(64)));
    _tile_stored(0, tile, NR * 4);
    _tile_stored(1, tile + 16, NR * 4);
    _tile_stored(2, tile + 16 * NR, NR * 4);
    _tile_stored(3, tile + 16 * NR + 16, NR * 4);
    store_tile(tile, C, ldc, m, n, alpha, beta);
}

// ---- the driver -----------------------------------------------------------------------------

// op(B) as the driver sees it: an fp32 matrix (src == NULL) or a panel source.
typedef struct {
    bool tb;
    const float *B;
    size_t ldb;
    const BgemmPanelSource *src;
} BOperand;

// Rows [k0, k0 + kn) of panel jp of op(B)'s block (rows p0..p0+kc, columns j0..j0+nc) into
// their place in the packed block dst (k0 a multiple of KSTEP; the rows up to
// round_up(kn, KSTEP) past k0 are written, zeros past kc).
static void pack_b(const BOperand *b, size_t j0, size_t nc, size_t p0, size_t kc, size_t jp,
                   size_t k0, size_t kn, uint16_t *dst) {
    const size_t c0 = j0 + jp * NR, n = min_sz(NR, nc - jp * NR);
    uint16_t *d = dst + jp * NR * round_up(kc, KSTEP) + k0 * NR;
    if (b->src)
        b->src->fill(b->src->ctx, p0 + k0, kn, c0, n, d);
    else if (b->tb)
        bgemm_pack_transposed(b->B + c0 * b->ldb + p0 + k0, b->ldb, n, kn, d);
    else
        bgemm_pack_rows(b->B + (p0 + k0) * b->ldb + c0, b->ldb, n, kn, d);
}

// Rows of packed B a thread fills at a time (sgemm.c's reason: enough equal pieces).
enum { KCHUNK = 64 };

// Thread tid's share of packing op(B)'s block into pb, in pieces of one panel by KCHUNK rows.
static void pack_b_share(const BOperand *b, size_t j0, size_t nc, size_t p0, size_t kc, uint16_t *pb,
                         size_t nth, size_t tid) {
    const size_t npanels = (nc + NR - 1) / NR, chunks = (kc + KCHUNK - 1) / KCHUNK;
    const size_t pieces = npanels * chunks;
    for (size_t q = pieces * tid / nth; q < pieces * (tid + 1) / nth; q++) {
        const size_t jp = q / chunks, k0 = q % chunks * KCHUNK;
        pack_b(b, j0, nc, p0, kc, jp, k0, min_sz(KCHUNK, kc - k0), pb);
    }
}

// Threads worth using: below ~8 MFLOP per thread the fork and barriers cost more.
static int threads_for(size_t M, size_t N, size_t K) {
    const double flops = 2.0 * (double)M * (double)N * (double)K;
    int useful = (int)(flops / 8e6), t = omp_get_max_threads() < TEAM_MAX ? omp_get_max_threads() : TEAM_MAX;
    if (useful < 1) useful = 1;
    return t < useful ? t : useful;
}

// Columns of B per block: with one or two threads, a core walks all of A's block (up to
// 4 MiB) against the B block, so B is kept to 256 KiB to stay in L2 beside the A panel in
// use; with more, each core reads a share of A and the larger block saves barriers.
static size_t b_block_cols(size_t nth) { return nth <= 2 ? NC / 4 : NC; }

// Packing buffers of one product, two of each, alternated between blocks as in sgemm.c (a
// single thread may pass the same buffer twice).
typedef struct {
    uint16_t *a[2], *b[2];
} Packs;

// One block of C's micro-tiles (as sgemm.c's Block), for the kernel of the chosen ISA.
typedef struct {
    bool amx;
    const uint16_t *pa, *pb;
    size_t kcp, mr, mc, nc, npanels;
    float *C;  // the block's top-left element
    size_t ldc;
    float alpha, beta;
} Block;

// Micro-tile t of the block (bk: a Block), row panel major: t = ip * npanels + jp.
static void block_tile(const void *ctx, size_t t) {
    const Block *bk = ctx;
    const size_t ip = t / bk->npanels, jp = t % bk->npanels, r = ip * bk->mr, c = jp * NR;
    (bk->amx ? kernel_amx : kernel_vec)(bk->kcp, bk->pa + ip * bk->mr * bk->kcp, bk->pb + jp * NR * bk->kcp,
                                        bk->C + r * bk->ldc + c, bk->ldc, min_sz(bk->mr, bk->mc - r),
                                        min_sz(NR, bk->nc - c), bk->alpha, bk->beta);
}

// The blocked product, run by thread tid of nth, as sgemm.c's product(): inside the driver's
// parallel region (shares packed, one barrier per block, tiles claimed with work stealing,
// buffers alternating), or with nth == 1 one whole product by one thread (bgemm_batch; no
// synchronisation). op(A) = ta ? A^T : A.
static void product(bool amx, bool ta, size_t M, size_t N, size_t K, float alpha, const float *A,
                    size_t lda, const BOperand *b, float beta, float *C, size_t ldc, const Packs *pk,
                    size_t nth, size_t tid) {
    const size_t ncb = b_block_cols(nth), mr = amx ? MR_AMX : MR_VEC;
    size_t ablocks = 0, blocks = 0;
    for (size_t i0 = 0; i0 < M; i0 += MC) {
        const size_t mc = min_sz(MC, M - i0), mpanels = (mc + mr - 1) / mr;
        for (size_t p0 = 0; p0 < K; p0 += KC) {
            const size_t kc = min_sz(KC, K - p0);
            uint16_t *pa = pk->a[ablocks++ & 1];
            for (size_t ip = mpanels * tid / nth; ip < mpanels * (tid + 1) / nth; ip++)
                pack_a(amx, ta, A, lda, i0, mc, p0, kc, ip, pa);
            for (size_t j0 = 0; j0 < N; j0 += ncb) {
                const size_t nc = min_sz(ncb, N - j0), npanels = (nc + NR - 1) / NR;
                const size_t set = blocks++ & 1, tiles = mpanels * npanels;
                const Block bk = {amx, pa, pk->b[set], round_up(kc, KSTEP), mr, mc, nc, npanels,
                                  C + i0 * ldc + j0, ldc, alpha, p0 == 0 ? beta : 1.0f};
                pack_b_share(b, j0, nc, p0, kc, pk->b[set], nth, tid);
                team_run(set, tiles, nth, tid, block_tile, &bk);
            }
        }
    }
}

// Columns of B packed and computed as one unit in the column-split schedule (KC x NCS bf16 =
// 256 KiB, in a thread's own L2).
enum { NCS = 256 };

// One K block of the column-split schedule (as sgemm.c's ColumnUnits).
typedef struct {
    bool amx;
    const BOperand *b;
    size_t p0, kc, M, N;
    const uint16_t *pa;
    uint16_t *pb_own;
    float *C;
    size_t ldc;
    float alpha, beta;
} ColumnUnits;

// Unit u of a ColumnUnits block: columns [u * NCS, +NCS) of B packed into pb_own, then every
// row of C for them (an A panel in L1, the unit's B panels streamed from L2).
static void column_unit(const void *ctx, size_t u) {
    const ColumnUnits *cu = ctx;
    const size_t mr = cu->amx ? MR_AMX : MR_VEC, j0 = u * NCS, nc = min_sz(NCS, cu->N - j0);
    const size_t npanels = (nc + NR - 1) / NR;
    for (size_t jp = 0; jp < npanels; jp++) pack_b(cu->b, j0, nc, cu->p0, cu->kc, jp, 0, cu->kc, cu->pb_own);
    const Block bk = {cu->amx, cu->pa, cu->pb_own, round_up(cu->kc, KSTEP), mr, cu->M, nc, npanels,
                      cu->C + j0, cu->ldc, cu->alpha, cu->beta};
    for (size_t t = 0; t < (cu->M + mr - 1) / mr * npanels; t++) block_tile(&bk, t);
}

// The column-split schedule for very wide products (the output layer), as sgemm.c's: A's
// block packed once by the team, B's columns units of NCS claimed with work stealing, each
// packed into the claiming thread's private buffer pb_own; one barrier per K block. Same
// contract as product(); requires M <= MC.
static void product_colsplit(bool amx, size_t M, size_t N, size_t K, float alpha, const float *A,
                             size_t lda, const BOperand *b, float beta, float *C, size_t ldc,
                             const Packs *pk, uint16_t *pb_own, size_t nth, size_t tid) {
    const size_t mr = amx ? MR_AMX : MR_VEC, mpanels = (M + mr - 1) / mr, units = (N + NCS - 1) / NCS;
    size_t blocks = 0;
    for (size_t p0 = 0; p0 < K; p0 += KC) {
        const size_t kc = min_sz(KC, K - p0), set = blocks++ & 1;
        uint16_t *pa = pk->a[set];
        for (size_t ip = mpanels * tid / nth; ip < mpanels * (tid + 1) / nth; ip++)
            pack_a(amx, false, A, lda, 0, M, p0, kc, ip, pa);
        const ColumnUnits cu = {amx, b, p0, kc, M, N, pa, pb_own, C, ldc, alpha, p0 == 0 ? beta : 1.0f};
        team_run(set, units, nth, tid, column_unit, &cu);
    }
}

// C = beta * C (K == 0 or alpha == 0); beta == 0 never reads C.
static void scale_c(size_t M, size_t N, float beta, float *C, size_t ldc) {
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

// Packing buffers (two of each, alternated), allocated once at their largest and kept
// (callers are single-threaded); colsplit_buf holds one NCS x KC buffer per thread, grown on
// demand.
static uint16_t *packed_a, *packed_b, *colsplit_buf;
static size_t colsplit_threads;

// Very deep products with a small output (the logits' input gradient, 512 x 768 x 50257) are
// split over K as sgemm.c splits them: KSPLIT slices fixed by the shape alone, each in up to
// 4 parts of rows, every (slice, rows) unit a whole product on whichever thread claims it,
// into its part of the slice's partial C; the partials are added in slice order, so the
// result is the same for every thread count and within the usual K-term summation bound.
enum { KSPLIT = SGEMM_KSPLIT };

// True when the K-split schedule runs (matrix operands only: slices offset the pointers).
static bool use_ksplit(size_t M, size_t N, size_t K, const BOperand *b) {
    return !b->src && sgemm_ksplit_shape(M, N, K);
}

// Partial sums and per-thread packing buffers of the K-split schedule, grown and kept.
static float *ksplit_part;
static uint16_t *ksplit_pack;
static size_t ksplit_part_elems, ksplit_pack_elems;

// C = alpha * sum over slices of bf16(A)[:, slice] bf16(op(B))[slice, :] + beta * C.
static void driver_ksplit(bool amx, size_t M, size_t N, size_t K, float alpha, const float *A,
                          size_t lda, const BOperand *b, float beta, float *C, size_t ldc) {
    const size_t len = (K + KSPLIT - 1) / KSPLIT, mn = M * N, mr = amx ? MR_AMX : MR_VEC;
    const size_t parts = M >= 4 * 128 ? 4 : M >= 2 * 128 ? 2 : 1;  // >= 128 rows each
    const size_t ea = round_up(min_sz(MC, M), mr) * KC, per = ea + round_up(min_sz(b_block_cols(1), N), NR) * KC;
    const size_t nth = (size_t)omp_get_max_threads();
    if (ksplit_part_elems < KSPLIT * mn) {
        free(ksplit_part);
        ksplit_part = xmalloc_aligned(KSPLIT * mn * sizeof(float));
        ksplit_part_elems = KSPLIT * mn;
    }
    if (ksplit_pack_elems < per * nth) {
        free(ksplit_pack);
        ksplit_pack = xmalloc_aligned(per * nth * sizeof(uint16_t));
        ksplit_pack_elems = per * nth;
    }
    #pragma omp parallel
    {
        uint16_t *pa = ksplit_pack + (size_t)omp_get_thread_num() * per;
        const Packs pk = {{pa, pa}, {pa + ea, pa + ea}};
        if (amx) amx_begin();
        #pragma omp for schedule(dynamic, 1)
        for (size_t u = 0; u < KSPLIT * parts; u++) {
            const size_t sl = u / parts, r0 = M * (u % parts) / parts, r1 = M * (u % parts + 1) / parts;
            const size_t p0 = sl * len, kl = p0 < K ? min_sz(len, K - p0) : 0;
            float *ps = ksplit_part + sl * mn + r0 * N;
            if (kl == 0) {
                scale_c(r1 - r0, N, 0.0f, ps, N);
                continue;
            }
            const BOperand bs = {b->tb, b->tb ? b->B + p0 : b->B + p0 * b->ldb, b->ldb, NULL};
            product(amx, false, r1 - r0, N, kl, 1.0f, A + r0 * lda + p0, lda, &bs, 0.0f, ps, N, &pk, 1, 0);
        }
        if (amx) amx_end();
        #pragma omp for schedule(static)
        for (size_t i = 0; i < M; i++) sgemm_ksplit_row(ksplit_part, M, N, i, alpha, beta, C, ldc);
    }
}

static void driver(size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                   const BOperand *b, float beta, float *C, size_t ldc) {
    CHECK(bgemm_available());
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    if (!packed_a) {
        packed_a = xmalloc_aligned(2 * (size_t)MC * KC * sizeof(uint16_t));
        packed_b = xmalloc_aligned(2 * (size_t)NC * KC * sizeof(uint16_t));
    }
    const Packs pk = {{packed_a, packed_a + (size_t)MC * KC}, {packed_b, packed_b + (size_t)NC * KC}};
    const bool amx = bgemm_isa() == BGEMM_AMX;
    if (use_ksplit(M, N, K, b)) return driver_ksplit(amx, M, N, K, alpha, A, lda, b, beta, C, ldc);
    const int nth = threads_for(M, N, K);
    // as sgemm.c: very wide products whose A block is small, at least 16 panels per thread
    const bool colsplit = nth > 1 && M <= 1024 && N >= 2 * M && (N + NR - 1) / NR >= 16 * (size_t)nth;
    if (colsplit && colsplit_threads < (size_t)nth) {
        free(colsplit_buf);
        colsplit_buf = xmalloc_aligned((size_t)nth * NCS * KC * sizeof(uint16_t));
        colsplit_threads = (size_t)nth;
    }
    #pragma omp parallel num_threads(nth)
    {
        const size_t n = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
        if (amx) amx_begin();
        if (colsplit)
            product_colsplit(amx, M, N, K, alpha, A, lda, b, beta, C, ldc, &pk,
                             colsplit_buf + t * NCS * KC, n, t);
        else
            product(amx, false, M, N, K, alpha, A, lda, b, beta, C, ldc, &pk, n, t);
        if (amx) amx_end();
    }
}

void bgemm(bool tb, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
           const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    const BOperand b = {tb, B, ldb, NULL};
    driver(M, N, K, alpha, A, lda, &b, beta, C, ldc);
}

void bgemm_b(size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
             const BgemmPanelSource *B, float beta, float *C, size_t ldc) {
    const BOperand b = {false, NULL, 0, B};
    driver(M, N, K, alpha, A, lda, &b, beta, C, ldc);
}

// Per-thread packing buffers of bgemm_batch, grown on demand and kept (as packed_a/packed_b),
// so that a training step's hundreds of batches allocate nothing.
static uint16_t *batch_buf;
static size_t batch_buf_elems;

void bgemm_batch(bool ta, bool tb, size_t count, size_t M, size_t N, size_t K, float alpha,
                 const float *const *A, size_t lda, const float *const *B, size_t ldb, float beta,
                 float *const *C, size_t ldc) {
    CHECK(bgemm_available());
    if (count == 0 || M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {
        for (size_t i = 0; i < count; i++) scale_c(M, N, beta, C[i], ldc);
        return;
    }
    const bool amx = bgemm_isa() == BGEMM_AMX;
    const size_t mr = amx ? MR_AMX : MR_VEC, kcp = round_up(min_sz(KC, K), KSTEP);
    // what product() packs with one thread: an A block of whole panels and one B block (both
    // multiples of 32 elements, so every buffer stays 64-byte aligned)
    const size_t ea = round_up(min_sz(MC, M), mr) * kcp, eb = round_up(min_sz(b_block_cols(1), N), NR) * kcp;
    const size_t max_th = (size_t)omp_get_max_threads(), nth = count < max_th ? count : max_th;
    if (batch_buf_elems < (ea + eb) * nth) {
        free(batch_buf);
        batch_buf = xmalloc_aligned((ea + eb) * nth * sizeof(uint16_t));
        batch_buf_elems = (ea + eb) * nth;
    }
    #pragma omp parallel num_threads((int)nth)
    {
        uint16_t *pa = batch_buf + (size_t)omp_get_thread_num() * (ea + eb), *pb = pa + ea;
        const Packs pk = {{pa, pa}, {pb, pb}};
        if (amx) amx_begin();
        #pragma omp for schedule(dynamic, 1)
        for (size_t i = 0; i < count; i++) {
            const BOperand b = {tb, B[i], ldb, NULL};
            product(amx, ta, M, N, K, alpha, A[i], lda, &b, beta, C[i], ldc, &pk, 1, 0);
        }
        if (amx) amx_end();
    }
}

void bgemm_pack_a(BgemmIsa isa, bool ta, const float *A, size_t lda, size_t m, size_t kc,
                  uint16_t *dst) {
    CHECK(isa != BGEMM_NONE && bgemm_available() && m <= MC && kc <= KC);
    const size_t mr = isa == BGEMM_AMX ? MR_AMX : MR_VEC;
    for (size_t ip = 0; ip < (m + mr - 1) / mr; ip++) pack_a(isa == BGEMM_AMX, ta, A, lda, 0, m, 0, kc, ip, dst);
}

#else  // not an x86-64 build with AVX-512: no bf16 kernels, callers stay on fp32

BgemmIsa bgemm_isa(void) { return BGEMM_NONE; }
bool bgemm_isa_force(BgemmIsa isa) { return isa == BGEMM_NONE; }

void bgemm_pack_rows(const float *src, size_t lds, size_t n, size_t kc, uint16_t *dst) {
    (void)src, (void)lds, (void)n, (void)kc, (void)dst;
    CHECK(!"bgemm_pack_rows called in a build without bf16 kernels");
}

void bgemm_pack_transposed(const float *src, size_t lds, size_t n, size_t kc, uint16_t *dst) {
    (void)src, (void)lds, (void)n, (void)kc, (void)dst;
    CHECK(!"bgemm_pack_transposed called in a build without bf16 kernels");
}

void bgemm(bool tb, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
           const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    (void)tb, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B, (void)ldb;
    (void)beta, (void)C, (void)ldc;
    CHECK(!"bgemm called in a build without bf16 kernels");
}

void bgemm_b(size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
             const BgemmPanelSource *B, float beta, float *C, size_t ldc) {
    (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B, (void)beta, (void)C;
    (void)ldc;
    CHECK(!"bgemm_b called in a build without bf16 kernels");
}

void bgemm_batch(bool ta, bool tb, size_t count, size_t M, size_t N, size_t K, float alpha,
                 const float *const *A, size_t lda, const float *const *B, size_t ldb, float beta,
                 float *const *C, size_t ldc) {
    (void)ta, (void)tb, (void)count, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda;
    (void)B, (void)ldb, (void)beta, (void)C, (void)ldc;
    CHECK(!"bgemm_batch called in a build without bf16 kernels");
}

void bgemm_pack_a(BgemmIsa isa, bool ta, const float *A, size_t lda, size_t m, size_t kc,
                  uint16_t *dst) {
    (void)isa, (void)ta, (void)A, (void)lda, (void)m, (void)kc, (void)dst;
    CHECK(!"bgemm_pack_a called in a build without bf16 kernels");
}

#endif
