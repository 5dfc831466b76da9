// test_bgemm.c: the bf16 products (src/bgemm.c) on every instruction set the CPU has
// (AVX512-BF16, AMX; each one missing is a counted skip):
// - bf16_round against hand-worked cases, and the kernels' own rounding (the packing's
//   VCVTNE2PS2BF16) bit for bit against it;
// - products against a double-precision sum of the same bf16-rounded inputs, within the
//   fp32 summation bound, on sizes crossing every blocking boundary (MR 12 / 32, NR 32,
//   KSTEP 32, KC 512, NC 1024 (256 on 1-2 threads), MC 4032), both layouts of B, strides, alpha, beta;
// - the same products against the fp32 product of the unrounded inputs, within the
//   bound that bf16's input rounding allows (derived below);
// - beta = 0 over NaN, panel sources equal to the matrix form, thread-count invariance (the
//   K-split schedule of very deep products too), and every schedule under oversubscription
//   (2 to 13 threads, where the work stealing and the alternating packing buffers are raced);
// - bgemm_batch on every op combination (A and B transposed or not), ragged shapes, beta 0
//   over NaN and 1, one item and more items than threads: both bounds against
//   bgemm_batch_ref, 1 and 2 threads bit-identical;
// - both kernels' A panels (from A and from A^T) element by element, the AMX one included
//   on CPUs without AMX (the packing needs AVX512-BF16 only);
// - qlinear's bf16 forward and input gradient for every storage type (fp32, NF4, FP4, INT8).
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bgemm.h"
#include "qlinear.h"
#include "test.h"
#include "test_stress.h"
#include "util.h"

static void fill(float *x, size_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&r);
}

static uint32_t bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static void test_round(void) {
    // 1 + 2^-8 is half way between the bf16 neighbours 1 and 1 + 2^-7: ties go to the even
    // one (1); 1 + 3 * 2^-8 is half way between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6
    const float in[] = {1.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f,
                        -2.5f, 3.4028235e38f, 1e-40f, -1e-40f};
    const float want[] = {1.0f, 1.0f, 1.0f + 0x1p-6f, 1.0f + 0x1p-7f, -2.5f, INFINITY, 0.0f, -0.0f};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        EXPECT(bits(bf16_round(in[i])) == bits(want[i]), "bf16_round(%.9g) = %.9g, want %.9g",
               (double)in[i], (double)bf16_round(in[i]), (double)want[i]);
    EXPECT(isnan(bf16_round(NAN)), "bf16_round(NaN) is NaN");
}

// The packing's conversion (the CPU's instruction) equals bf16_round on every value of a
// random row with special values mixed in.
static void test_pack_rounding(void) {
    enum { KC = 64 };
    float src[KC * 32];
    Rng r;
    rng_seed(&r, 7);
    for (size_t i = 0; i < KC * 32; i++) src[i] = rng_normal(&r) * ldexpf(1.0f, (int)(i % 40) - 20);
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, 1e-40f, 3.4028235e38f, 1.0f + 0x1p-8f};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) src[i * 37] = special[i];
    uint16_t *p = xmalloc_aligned(KC * 32 * sizeof(uint16_t));
    bgemm_pack_rows(src, 32, 32, KC, p);
    size_t bad = 0;
    for (size_t k = 0; k < KC; k++)
        for (size_t j = 0; j < 32; j++) {
            const uint16_t got = p[((k / 2) * 32 + j) * 2 + k % 2];
            bad += got != (uint16_t)(bits(bf16_round(src[k * 32 + j])) >> 16);
        }
    EXPECT(bad == 0, "packing rounds %d values (specials included) exactly as bf16_round: %zu differ",
           KC * 32, bad);
    free(p);
}

// Errors of one computed product C (M x N, from C0 before it) against (a) the reference R
// (bgemm_ref / bgemm_batch_ref: the double sum of the bf16-rounded inputs, rounded to fp32)
// and (b) the double sum of the unrounded inputs, as multiples of their bounds:
// (a) Products of two bf16 values are exact in fp32 (8 + 8 significant bits), so the only
//     error is the fp32 summation: |err| <= gamma (|alpha| sum |a~ b~| + |beta c|), gamma =
//     (K + 3) u, u = 2^-24, as for sgemm (Higham 3.1; +3 for alpha, beta and the K-block
//     accumulation through C), plus u |R| for R's own rounding to fp32.
// (b) a~ = a (1 + d), |d| <= 2^-8 (bf16 keeps 8 significant bits), so
//     |a~ b~ - a b| <= (2^-7 + 2^-16) |a b|, and |sum a~ b~| <= (1 + 2^-7 + 2^-16) sum |a b|:
//     |err| <= |alpha| (2^-7 + 2^-16 + gamma (1 + 2^-7 + 2^-16)) sum |a b| + gamma |beta c|.
// Counts elements outside each bound, the worst ratio of each, and padding columns of C
// (j in [N, ldc)) that changed.
typedef struct {
    size_t bad_a, bad_b, pad_changed;
    double worst_a, worst_b;
} Errs;
static void measure(Errs *e, bool ta, bool tb, size_t M, size_t N, size_t K, float alpha, float beta,
                    const float *A, size_t lda, const float *B, size_t ldb, const float *C0, const float *C,
                    const float *R, size_t ldc) {
    const double u = ldexp(1.0, -24), gamma = (double)(K + 3) * u, rb = ldexp(1.0, -7) + ldexp(1.0, -16);
    for (size_t i = 0; i < M; i++) {
        for (size_t j = 0; j < N; j++) {
            double sa = 0, x = 0, xa = 0;
            for (size_t k = 0; k < K; k++) {
                const float a = ta ? A[k * lda + i] : A[i * lda + k], b = tb ? B[j * ldb + k] : B[k * ldb + j];
                const double p = (double)bf16_round(a) * (double)bf16_round(b), q = (double)a * b;
                sa += fabs(p), x += q, xa += fabs(q);
            }
            const double c0 = beta == 0.0f ? 0.0 : (double)beta * C0[i * ldc + j], c = C[i * ldc + j];
            const double r = R[i * ldc + j];
            const double bound_a = gamma * (fabs(alpha) * sa + fabs(c0)) + u * fabs(r) + 1e-30;
            const double bound_b = fabs(alpha) * (rb + gamma * (1 + rb)) * xa + gamma * fabs(c0) + 1e-30;
            const double ea = fabs(c - r) / bound_a, eb = fabs(c - (alpha * x + c0)) / bound_b;
            e->worst_a = ea > e->worst_a ? ea : e->worst_a;
            e->worst_b = eb > e->worst_b ? eb : e->worst_b;
            e->bad_a += !(ea <= 1.0);
            e->bad_b += !(eb <= 1.0);
        }
        for (size_t j = N; j < ldc; j++)
            e->pad_changed += memcmp(&C[i * ldc + j], &C0[i * ldc + j], sizeof(float)) != 0;  // NaN too
    }
}

// The A panels of both kernels, from A and from A^T (bgemm_batch's ta), element by element
// against bf16_round: AVX512-BF16 puts (i, k) at panel i / 12, pair-row k / 2, row i % 12,
// half k % 2; AMX at panel i / 32, 32-deep step k / 32, tile row i % 32, column k % 32; zeros
// past m and kc, every element written. The packing needs AVX512-BF16 only, so this checks
// the AMX layout (the transposed packing is new for it) on CPUs without AMX too.
static void test_pack_a(void) {
    static const size_t shapes[][2] = {{1, 1}, {13, 17}, {32, 32}, {45, 70}, {12, 33}, {70, 100}};
    for (int amx = 0; amx < 2; amx++)
        for (int ta = 0; ta < 2; ta++) {
            const size_t mr = amx ? 32 : 12;
            size_t bad = 0, n_el = 0;
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
                const size_t m = shapes[s][0], kc = shapes[s][1], kcp = (kc + 31) / 32 * 32;
                const size_t mp = (m + mr - 1) / mr * mr, lda = (ta ? m : kc) + 3;
                float *A = malloc((ta ? kc : m) * lda * 4);
                uint16_t *p = xmalloc_aligned(mp * kcp * 2);
                fill(A, (ta ? kc : m) * lda, 900 + s);
                memset(p, 0xFF, mp * kcp * 2);  // NaN bits: an element never written shows
                bgemm_pack_a(amx ? BGEMM_AMX : BGEMM_AVX512BF16, ta, A, lda, m, kc, p);
                for (size_t i = 0; i < mp; i++)
                    for (size_t k = 0; k < kcp; k++) {
                        const size_t at = amx ? (i / 32) * 32 * kcp + (k / 32) * 32 * 32 + (i % 32) * 32 + k % 32
                                              : (i / 12) * 12 * kcp + (k / 2) * 24 + (i % 12) * 2 + k % 2;
                        const float x = i < m && k < kc ? bf16_round(ta ? A[k * lda + i] : A[i * lda + k]) : 0.0f;
                        bad += p[at] != (uint16_t)(bits(x) >> 16);
                        n_el++;
                    }
                free(A), free(p);
            }
            EXPECT(bad == 0, "%s A panels from %s: %zu of %zu packed elements wrong",
                   amx ? "AMX" : "AVX512-BF16", ta ? "A^T" : "A", bad, n_el);
        }
}

// Checks bgemm on one shape against both bounds of measure().
static void check_one(const char *isa, bool tb, size_t M, size_t N, size_t K, float alpha,
                      float beta, int pad, uint64_t seed) {
    const size_t lda = K + (size_t)pad, ldb = (tb ? K : N) + (size_t)pad, ldc = N + (size_t)pad;
    const size_t na = M * lda, nb = (tb ? N : K) * ldb, nc = M * ldc;
    float *A = malloc((na + 1) * 4), *B = malloc((nb + 1) * 4), *C = malloc(nc * 4), *C0 = malloc(nc * 4);
    float *R = malloc(nc * 4);
    fill(A, na, seed);
    fill(B, nb, seed + 1);
    fill(C0, nc, seed + 2);
    memcpy(C, C0, nc * 4);
    memcpy(R, C0, nc * 4);
    bgemm(tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    bgemm_ref(tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
    Errs e = {0};
    measure(&e, false, tb, M, N, K, alpha, beta, A, lda, B, ldb, C0, C, R, ldc);
    EXPECT(e.bad_a == 0 && e.pad_changed == 0,
           "%s tb=%d %zux%zux%zu alpha %g beta %g pad %d vs rounded inputs: %zu outside the bound "
           "(worst %.2f of it), %zu padding values changed", isa, tb, M, N, K, alpha, beta, pad,
           e.bad_a, e.worst_a, e.pad_changed);
    EXPECT(e.bad_b == 0, "%s tb=%d %zux%zux%zu vs the fp32 inputs: %zu outside the bf16 bound (worst %.2f of it)",
           isa, tb, M, N, K, e.bad_b, e.worst_b);
    free(A), free(B), free(C), free(C0), free(R);
}

// bgemm_batch on one shape: count items with their own inputs and outputs (one allocation
// each, items `stride` floats apart, strides padded by pad), checked item by item against
// bgemm_batch_ref with both bounds of measure(); C starts as NaN when beta == 0 (never read),
// padding columns keep their value; 1 and 2 threads give the same bits.
static void check_batch(const char *isa, bool ta, bool tb, size_t count, size_t M, size_t N, size_t K,
                        float alpha, float beta, int pad, uint64_t seed) {
    const size_t lda = (ta ? M : K) + (size_t)pad, ldb = (tb ? K : N) + (size_t)pad, ldc = N + (size_t)pad;
    const size_t sa = (ta ? K : M) * lda, sb = (tb ? N : K) * ldb, sc = M * ldc;
    float *A = malloc(count * sa * 4), *B = malloc(count * sb * 4), *C0 = malloc(count * sc * 4);
    float *C = malloc(count * sc * 4), *C1 = malloc(count * sc * 4), *R = malloc(count * sc * 4);
    fill(A, count * sa, seed);
    fill(B, count * sb, seed + 1);
    fill(C0, count * sc, seed + 2);
    if (beta == 0.0f)
        for (size_t i = 0; i < count * sc; i++) C0[i] = NAN;
    const float **pa = malloc(3 * count * sizeof *pa), **pb = pa + count;
    float **pc = malloc(3 * count * sizeof *pc), **pc1 = pc + count, **pr = pc + 2 * count;
    for (size_t i = 0; i < count; i++)
        pa[i] = A + i * sa, pb[i] = B + i * sb, pc[i] = C + i * sc, pc1[i] = C1 + i * sc, pr[i] = R + i * sc;
    memcpy(C, C0, count * sc * 4);
    memcpy(C1, C0, count * sc * 4);
    memcpy(R, C0, count * sc * 4);
    const int nt = omp_get_max_threads();
    omp_set_num_threads(2);
    bgemm_batch(ta, tb, count, M, N, K, alpha, pa, lda, pb, ldb, beta, pc, ldc);
    omp_set_num_threads(1);
    bgemm_batch(ta, tb, count, M, N, K, alpha, pa, lda, pb, ldb, beta, pc1, ldc);
    omp_set_num_threads(nt);
    bgemm_batch_ref(ta, tb, count, M, N, K, alpha, pa, lda, pb, ldb, beta, pr, ldc);
    Errs e = {0};
    for (size_t i = 0; i < count; i++)
        measure(&e, ta, tb, M, N, K, alpha, beta, pa[i], lda, pb[i], ldb, C0 + i * sc, pc[i], pr[i], ldc);
    const char *op = ta ? (tb ? "tt" : "tn") : (tb ? "nt" : "nn");
    EXPECT(e.bad_a == 0 && e.bad_b == 0 && e.pad_changed == 0,
           "%s batch %s %zu x %zux%zux%zu alpha %g beta %g pad %d: %zu outside the bound vs bgemm_batch_ref "
           "(worst %.2f of it), %zu outside the bf16 bound vs fp32 inputs (worst %.2f), %zu padding values "
           "changed", isa, op, count, M, N, K, alpha, beta, pad, e.bad_a, e.worst_a, e.bad_b, e.worst_b,
           e.pad_changed);
    EXPECT(memcmp(C, C1, count * sc * 4) == 0, "%s batch %s %zu x %zux%zux%zu: 1 and 2 threads bit-identical",
           isa, op, count, M, N, K);
    free(A), free(B), free(C0), free(C), free(C1), free(R), free(pa), free(pc);
}

// Every op combination of bgemm_batch on ragged shapes: M, N, K off the tile sizes (12 / 32
// rows, 32 columns, 32-deep steps), K < 32, odd K (a half pair), K across KC (512: the second
// block accumulates through C), N across the 1-thread B block (256), attention's own shapes;
// beta 0 (over NaN) and 1, alpha 1 and not; one item, and more items than threads.
static void test_batch(const char *isa) {
    static const size_t shapes[][4] = {  // {count, M, N, K}
        {1, 1, 1, 1},   {5, 13, 33, 17}, {3, 37, 45, 70},  {7, 33, 65, 31},
        {1, 64, 64, 64}, {3, 5, 70, 600}, {2, 45, 300, 33}, {9, 100, 64, 100},
    };
    uint64_t seed = 500;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int op = 0; op < 4; op++)
            check_batch(isa, op & 2, op & 1, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3],
                        (s + (size_t)op) % 2 ? 0.125f : 1.0f, (s + (size_t)op / 2) % 2 ? 1.0f : 0.0f,
                        (int)(s % 3) * 3, seed += 10);
}

static void test_shapes(const char *isa) {
    // {M, N, K}: one tile, ragged edges, K across KSTEP and KC (odd K: a half pair), N
    // across NC, M across MC and both micro-tile heights, GPT-2 small's shapes cut down
    static const size_t shapes[][3] = {
        {1, 1, 1},     {12, 32, 32},   {13, 33, 17},  {31, 31, 33},   {33, 65, 511},
        {5, 70, 1100}, {40, 1100, 24}, {4100, 20, 9}, {64, 96, 768},  {100, 2000, 300},
        {600, 300, 100},  // tiles split over the team, N across the 1-2 thread B block (256)
    };
    uint64_t seed = 100;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int tb = 0; tb < 2; tb++)
            check_one(isa, tb, shapes[s][0], shapes[s][1], shapes[s][2], s % 2 ? 0.7f : 1.0f,
                      s % 3 ? 0.5f : 0.0f, (int)(s % 3) * 5, seed += 10);
    // alpha 1 with beta 1 or 0, whole 32 x 32 tiles, K over several blocks: what a training
    // step runs, where AMX keeps C in its tiles (loaded from and stored to C, odd ldc too)
    check_one(isa, false, 96, 64, 1100, 1.0f, 1.0f, 0, 900);
    check_one(isa, true, 64, 96, 1100, 1.0f, 1.0f, 3, 901);
    check_one(isa, true, 64, 96, 600, 1.0f, 0.0f, 3, 902);
    // deep with a small output: the K-split schedule (16 slices, the last one ragged)
    check_one(isa, false, 20, 30, 20000, 1.0f, 0.0f, 0, 903);
    check_one(isa, true, 33, 40, 16401, 0.7f, 0.5f, 5, 904);
    check_one(isa, false, 260, 24, 16400, 1.0f, 0.0f, 0, 905);  // units of 2 row parts each
}

// beta = 0 never reads C: NaN there must not leak into the result.
static void test_beta_zero(const char *isa) {
    const size_t M = 37, N = 45, K = 70;
    float *A = malloc(M * K * 4), *B = malloc(K * N * 4), *C = malloc(M * N * 4), *R = malloc(M * N * 4);
    fill(A, M * K, 1);
    fill(B, K * N, 2);
    for (size_t i = 0; i < M * N; i++) C[i] = NAN;
    bgemm(false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
    bgemm_ref(false, M, N, K, 1.0f, A, K, B, N, 0.0f, R, N);
    EXPECT_CLOSE(isa, C, R, M * N, 1e-4, 1e-5);
    free(A), free(B), free(C), free(R);
}

// A panel source that reads a [N][K] float matrix (op(B) = W^T) through the public packing.
typedef struct {
    const float *w;
    size_t K;
} Source;
static void fill_source(const void *ctx, size_t p0, size_t kc, size_t j0, size_t n, uint16_t *dst) {
    const Source *s = ctx;
    bgemm_pack_transposed(s->w + j0 * s->K + p0, s->K, n, kc, dst);
}

// The panel-source form equals the matrix form bit for bit, and the result is the same for
// 1 thread and for all of them.
static void test_source_and_threads(const char *isa) {
    const size_t M = 300, N = 1200, K = 700;
    float *A = malloc(M * K * 4), *W = malloc(N * K * 4), *C1 = malloc(M * N * 4);
    float *C2 = malloc(M * N * 4), *C3 = malloc(M * N * 4);
    fill(A, M * K, 3);
    fill(W, N * K, 4);
    const Source src = {W, K};
    const BgemmPanelSource ps = {fill_source, &src};
    bgemm(true, M, N, K, 1.0f, A, K, W, K, 0.0f, C1, N);
    bgemm_b(M, N, K, 1.0f, A, K, &ps, 0.0f, C2, N);
    const int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    bgemm(true, M, N, K, 1.0f, A, K, W, K, 0.0f, C3, N);
    omp_set_num_threads(nt);
    EXPECT(memcmp(C1, C2, M * N * 4) == 0, "%s: panel source equals the matrix form bit for bit", isa);
    EXPECT(memcmp(C1, C3, M * N * 4) == 0, "%s: 1 thread and %d threads give identical results", isa, nt);
    free(A), free(W), free(C1), free(C2), free(C3);
    // the K-split schedule: its slices (and 4 parts of rows) are fixed by the shape,
    // whichever thread runs them
    const size_t m = 520, n = 16, k = 20000;
    A = malloc(m * k * 4), W = malloc(k * n * 4), C1 = malloc(m * n * 4), C3 = malloc(m * n * 4);
    fill(A, m * k, 5);
    fill(W, k * n, 6);
    bgemm(false, m, n, k, 1.0f, A, k, W, n, 0.0f, C1, n);
    omp_set_num_threads(1);
    bgemm(false, m, n, k, 1.0f, A, k, W, n, 0.0f, C3, n);
    omp_set_num_threads(nt);
    EXPECT(memcmp(C1, C3, m * n * 4) == 0, "%s: %zu x %zu x %zu (K split): 1 and %d threads give identical results",
           isa, m, n, k, nt);
    free(A), free(W), free(C1), free(C3);
}

// The product under test of the stress checks (test_stress.h): bgemm, or bgemm_b from a
// panel source; bgemm's A is never transposed (ta is false in every case).
static void stress_product(const StressCase *c, const float *A, const float *B, float *C) {
    if (c->source) {
        const Source src = {B, c->K};
        const BgemmPanelSource ps = {fill_source, &src};
        bgemm_b(c->M, c->N, c->K, c->alpha, A, c->K, &ps, c->beta, C, c->N);
    } else {
        bgemm(c->tb, c->M, c->N, c->K, c->alpha, A, c->K, B, c->tb ? c->K : c->N, c->beta, C, c->N);
    }
}

// Every schedule under oversubscription (the work stealing of bgemm.c and team.h): the tile
// split over several i0 blocks (M > MC = 4032; the last one of 68 rows has 12 tiles or fewer
// for up to 13 threads), over many K blocks (KC = 512) of one j0 block each (N <= 256, the B
// block of 1-2 threads), where a thread packs the next block's A and B while a descheduled one
// still computes this block's last tiles, and over several j0 blocks (N > 256 on 2 threads,
// > NC = 1024 on more), so that both A and both B buffers and both counter sets are reused; the
// column split (M <= 1024, N >= 2M and at least 16 panels per thread: 6,700 columns for 13
// threads; 2,100 columns switch from it on 2-3 threads to the tile split on 7-13); the K split
// with 4 and 2 row parts; the batch. Alpha 1 with beta 0 or 1 keeps AMX's whole C tiles in C.
// (Checked against seeded faults on a 2-core machine with AVX512-BF16: product()'s A or B
// buffers or the counter sets made single, product_colsplit()'s A buffers made single, or the
// counters reset after the barrier, each failed checks here in every run, 2 or 3 of them.)
static void test_stress(const char *isa) {
    static const StressCase cases[] = {
        {"tiles, 2 i0 x 3 K blocks", false, false, false, 4100, 100, 1100, 0.7f, 0.5f},
        {"tiles, 2 i0 x 2 K blocks", false, true, false, 4100, 40, 600, 1.0f, 0.0f},
        {"tiles, 5 K blocks", false, true, false, 1100, 250, 2100, 1.0f, 1.0f},
        {"tiles, 2 i0 x 2-5 j0 x 2 K blocks", false, true, false, 4100, 1100, 520, 1.0f, 1.0f},
        {"column split on 2-3 threads, tiles on 7-13", false, false, true, 600, 2100, 600, 1.0f, 1.0f},
        {"column split, 3 K blocks", false, true, false, 64, 6700, 1100, 0.7f, 0.5f},
        {"column split, 3 K blocks", false, false, true, 40, 6700, 1100, 1.0f, 0.0f},
        {"K split, 4 row parts", false, false, false, 520, 16, 20000, 1.0f, 0.0f},
        {"K split, 2 row parts", false, true, false, 260, 40, 16400, 0.7f, 0.5f},
    };
    uint64_t seed = 3000;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) stress_one(isa, stress_product, &cases[i], seed += 10);
    stress_batch(isa, bgemm_batch, false, true, 48, 256, 64, 256, 1.0f, 1.0f, seed += 10);  // attention's shape
    stress_batch(isa, bgemm_batch, true, false, 5, 300, 130, 1100, 1.0f, 1.0f, seed += 10);
}

// A frozen linear layer in bf16 (qlinear.c), every storage type: the forward and the input
// gradient against bgemm_ref on the layer's own fp32 weights (for NF4/FP4/INT8, the
// dequantized ones), within the fp32 summation bound of check_one plus the bias's rounding.
static void test_qlinear(const char *isa) {
    const size_t N = 37, in = 192, out = 80;
    const QuantType types[] = {QUANT_NONE, QUANT_NF4, QUANT_FP4, QUANT_INT8};
    float *w = malloc(in * out * 4), *bias = malloc(out * 4), *x = malloc(N * in * 4), *dy = malloc(N * out * 4);
    fill(w, in * out, 5);
    fill(bias, out, 6);
    fill(x, N * in, 7);
    fill(dy, N * out, 8);
    float *y = malloc(N * out * 4), *yr = malloc(N * out * 4), *dx = malloc(N * in * 4), *dxr = malloc(N * in * 4);
    float *wt = malloc(in * out * 4), *scratch = xmalloc_aligned(QLINEAR_TILE_FLOATS * 4);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        QLinear l;
        Error err = {0};
        CHECK(qlinear_init(&l, w, bias, in, out, types[t], 64, true, "w", &err));
        l.bf16 = true;
        qlinear_rows(&l, 0, out, wt);  // the layer's weights as fp32, [out, in]
        qlinear_forward(&l, y, x, N, scratch, NULL);
        bgemm_ref(true, N, out, in, 1.0f, x, in, wt, in, 0.0f, yr, out);
        for (size_t i = 0; i < N * out; i++) yr[i] += bias[i % out];
        for (size_t i = 0; i < N * in; i++) dx[i] = dxr[i] = 0.5f;
        qlinear_backward_input(&l, dx, dy, N, scratch, NULL);
        bgemm_ref(false, N, in, out, 1.0f, dy, out, wt, in, 1.0f, dxr, in);
        // per element |err| <= (K + 3) u sum_k |a b| (+ 2 u |bias| for the bias's add), as in
        // check_one; leaving out the rounding of either operand breaks it (2^-8 relative)
        const double u = ldexp(1.0, -24);
        size_t bad_f = 0, bad_b = 0;
        for (size_t n = 0; n < N; n++) {
            for (size_t o = 0; o < out; o++) {
                double sa = 0;
                for (size_t k = 0; k < in; k++)
                    sa += fabs((double)bf16_round(x[n * in + k]) * bf16_round(wt[o * in + k]));
                const double bound = (double)(in + 3) * u * sa + 2 * u * fabs(bias[o]) + 1e-30;
                bad_f += !(fabs((double)y[n * out + o] - yr[n * out + o]) <= bound);
            }
            for (size_t i = 0; i < in; i++) {
                double sa = 0;
                for (size_t o = 0; o < out; o++)
                    sa += fabs((double)bf16_round(dy[n * out + o]) * bf16_round(wt[o * in + i]));
                const double bound = (double)(out + 3) * u * (sa + 0.5) + 1e-30;
                bad_b += !(fabs((double)dx[n * in + i] - dxr[n * in + i]) <= bound);
            }
        }
        EXPECT(bad_f == 0, "%s qlinear %s forward: %zu of %zu outside the fp32 summation bound", isa,
               quant_name(types[t]), bad_f, N * out);
        EXPECT(bad_b == 0, "%s qlinear %s input gradient: %zu of %zu outside the bound", isa,
               quant_name(types[t]), bad_b, N * in);
        qlinear_free(&l);
    }
    free(w), free(bias), free(x), free(dy), free(y), free(yr), free(dx), free(dxr), free(wt), free(scratch);
}

// The checks of one instruction set, or as many counted skips as the other set ran (checks
// per set: n_per_isa, 0 before any set ran).
static int run_isa(BgemmIsa isa, int n_per_isa) {
    const char *name = bgemm_isa_name(isa);
    if (!bgemm_isa_force(isa)) {
        SKIP(n_per_isa, "%s: this CPU (or kernel) lacks it, its kernel is never used here", name);
        return n_per_isa;
    }
    const int before = test_passed + test_failed;
    printf("%s kernel:\n", name);
    test_shapes(name);
    test_batch(name);
    test_beta_zero(name);
    test_source_and_threads(name);
    test_stress(name);
    test_qlinear(name);
    return test_passed + test_failed - before;
}

int main(void) {
    test_round();
    if (!bgemm_available()) {
        SKIP(291, "no bf16 instructions (AVX512-BF16 or AMX): bf16 products are refused here");
        return test_summary("test_bgemm");
    }
    test_pack_rounding();
    test_pack_a();
    // every CPU with AMX-BF16 has AVX512-BF16 too, so the first set always runs
    const int n_per_isa = run_isa(BGEMM_AVX512BF16, 0);
    run_isa(BGEMM_AMX, n_per_isa);
    return test_summary("test_bgemm");
}
