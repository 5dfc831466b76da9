// test_quant.c: NF4/FP4 code tables, tie rules, packing, double quantization, the worked
// values of docs/formats.md ("Worked values"), error bounds, and the fast kernels vs their _ref.
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "bgemm.h"
#include "quant.h"
#include "test.h"

// The NF4 decision thresholds as bitsandbytes' CUDA decision tree has them (typed in,
// not computed), so the code's midpoints are checked against an independent source.
static const float REF_THRESHOLDS[15] = {
    -0.8480963706970215f, -0.6106328964233398f, -0.4599952697753906f, -0.33967941999435425f,
    -0.23460739850997925f, -0.13791173696517944f, -0.045525018125772476f, 0.03979014977812767f,
    0.120255246758461f, 0.2035212516784668f, 0.2920137643814087f, 0.3893125355243683f,
    0.5016634464263916f, 0.6427869200706482f, 0.8614784479141235f,
};

// Standard normal quantile in double: a rational first guess refined by Newton steps on
// 0.5*erfc(-x/sqrt(2)), which converges to full double precision.
static double norm_ppf(double p) {
    double x = sqrt(-2.0 * log(p < 0.5 ? p : 1.0 - p));
    x = x - (2.515517 + 0.802853 * x + 0.010328 * x * x) /
                (1.0 + 1.432788 * x + 0.189269 * x * x + 0.001308 * x * x * x);
    if (p < 0.5) x = -x;
    for (int i = 0; i < 8; i++) {
        double err = 0.5 * erfc(-x / sqrt(2.0)) - p;
        x -= err / (exp(-0.5 * x * x) / sqrt(2.0 * M_PI));
    }
    return x;
}

// torch.linspace in f32: step in f32, first half from the start, second half from the end.
static void linspace_f32(float a, float b, int n, float *out) {
    float step = (b - a) / (float)(n - 1);
    for (int i = 0; i < n; i++)
        out[i] = i < n / 2 ? a + step * (float)i : b - step * (float)(n - 1 - i);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void test_nf4_table(void) {
    // bnb create_normal_map(offset=0.9677083, use_extra_value=True), docs/formats.md
    const float offset = 0.9677083f;
    float v1[9], v3[8], table[16];
    linspace_f32(offset, 0.5f, 9, v1);
    linspace_f32(offset, 0.5f, 8, v3);
    int k = 0;
    for (int i = 0; i < 8; i++) table[k++] = (float)norm_ppf(v1[i]);
    table[k++] = 0.0f;
    for (int i = 0; i < 7; i++) table[k++] = (float)-norm_ppf(v3[i]);
    qsort(table, 16, sizeof(float), cmp_float);
    float mx = table[15];
    int same = 0;
    for (int i = 0; i < 16; i++) same += (table[i] / mx == NF4_CODE[i]);
    EXPECT(same == 16, "NF4 table regenerated from the normal quantiles matches bit for bit "
                       "(%d of 16)", same);
    int thr_ok = 0;
    for (int i = 0; i < 15; i++) thr_ok += nf4_threshold(i) == REF_THRESHOLDS[i];
    EXPECT(thr_ok == 15, "NF4 f32 midpoints equal bnb's thresholds (%d of 15)", thr_ok);
    // Tie rule: a value exactly on a threshold takes the lower code; the next f32 up the higher.
    int ties = 0;
    for (int i = 0; i < 15; i++)
        ties += nf4_encode(REF_THRESHOLDS[i]) == i &&
                nf4_encode(nextafterf(REF_THRESHOLDS[i], 2.0f)) == i + 1;
    EXPECT(ties == 15, "ties go to the lower code at all 15 thresholds (%d)", ties);
    EXPECT(nf4_encode(-0.0f) == 7 && nf4_encode(-1.0f) == 0 && nf4_encode(1.0f) == 15,
           "-0.0 -> 7, -1 -> 0, +1 -> 15");
}

// One block of 64 holding x[0..8) and zeros; returns a quantized tensor (no double quant).
static void quantize_tv(Q4Tensor *q, const float *x8, float *deq) {
    float x[64] = {0};
    for (int i = 0; i < 8; i++) x[i] = x8[i];
    Error err = {0};
    CHECK(q4_quantize(q, x, 64, QUANT_NF4, 64, false, "tv", &err));
    q4_dequantize_ref(q, 0, 64, deq);
}

static void test_worked_vectors(void) {
    // TV1
    const float x1[8] = {0.12f, -0.5f, 0.9f, -1.6f, 0.0f, 0.33f, -0.07f, 1.1f};
    const uint8_t bytes1[4] = {0x84, 0xD0, 0x7A, 0x7E};
    const float deq1[8] = {0.12732849f, -0.45510623f, 0.90018719f, -1.6f, 0.0f, 0.39377970f,
                           0.0f, 1.15673101f};
    Q4Tensor q;
    float deq[64];
    quantize_tv(&q, x1, deq);
    EXPECT(q.absmax[0] == 1.6f, "TV1 absmax is f32(1.6)");
    EXPECT(memcmp(q.codes, bytes1, 4) == 0, "TV1 packed bytes 84 D0 7A 7E (got %02X %02X %02X %02X)",
           q.codes[0], q.codes[1], q.codes[2], q.codes[3]);
    // The reference prints 8-9 significant digits: 1e-7 relative is below that precision.
    EXPECT_CLOSE("TV1 dequantized", deq, deq1, 8, 0.0, 1e-7);
    int zero_rest = 1;
    for (int i = 8; i < 64; i++) zero_rest &= q.codes[i / 2] == 0x77;
    EXPECT(zero_rest, "TV1 zeros of the block are code 7");
    q4_free(&q);

    // TV2: ties and edges with absmax 1
    const float x2[8] = {1.0f, 0.03979014977812767f, -0.045525018125772476f, 0.8614784479141235f,
                         0.8614785075187683f, -0.9f, 0.5016634464263916f, -0.0f};
    const uint8_t bytes2[4] = {0xF7, 0x6E, 0xF0, 0xC7};
    const float deq2[8] = {1.0f, 0.0f, -0.09105004f, 0.72295684f, 1.0f, -1.0f, 0.44070983f, 0.0f};
    quantize_tv(&q, x2, deq);
    EXPECT(memcmp(q.codes, bytes2, 4) == 0, "TV2 packed bytes F7 6E F0 C7 (got %02X %02X %02X %02X)",
           q.codes[0], q.codes[1], q.codes[2], q.codes[3]);
    EXPECT_CLOSE("TV2 dequantized", deq, deq2, 8, 0.0, 1e-7);
    q4_free(&q);

    // TV3: all-zero block -> 0x77 bytes, absmax 0, zeros (no NaN), also with double quant
    float zeros[64] = {0};
    for (int dq = 0; dq < 2; dq++) {
        Error err = {0};
        CHECK(q4_quantize(&q, zeros, 64, QUANT_NF4, 64, dq, "tv3", &err));
        int all77 = 1;
        for (int i = 0; i < 32; i++) all77 &= q.codes[i] == 0x77;
        q4_dequantize(&q, 0, 64, deq);
        int all0 = 1;
        for (int i = 0; i < 64; i++) all0 &= deq[i] == 0.0f;
        EXPECT(all77 && all0 && q4_block_scale(&q, 0) == 0.0f,
               "TV3 zero block (double_quant=%d): codes 0x77, scale 0, dequantized zeros", dq);
        q4_free(&q);
    }
}

static void test_double_quant_tv4(void) {
    // TV4: five blocks whose absmax values are [0.5, 0.25, 0.125, 1.0, 0.75]
    const float am[5] = {0.5f, 0.25f, 0.125f, 1.0f, 0.75f};
    float x[5 * 64] = {0};
    for (int b = 0; b < 5; b++) {
        x[b * 64 + 3] = am[b];
        x[b * 64 + 10] = -am[b] * 0.5f;
    }
    Q4Tensor q;
    Error err = {0};
    CHECK(q4_quantize(&q, x, 5 * 64, QUANT_NF4, 64, true, "tv4", &err));
    EXPECT(q.offset == 0.5249999761581421f, "TV4 offset = f32(0.525) (got %.10g)", q.offset);
    EXPECT(q.absmax2[0] == 0.4750000238418579f, "TV4 absmax2 = 0.4750000238 (got %.10g)",
           q.absmax2[0]);
    const uint8_t idx[5] = {80, 29, 11, 255, 217};
    EXPECT(memcmp(q.absmax_q, idx, 5) == 0, "TV4 dynamic-map indices 80 29 11 255 217 "
           "(got %d %d %d %d %d)", q.absmax_q[0], q.absmax_q[1], q.absmax_q[2], q.absmax_q[3],
           q.absmax_q[4]);
    const float rebuilt_ref[5] = {0.49954295f, 0.24705073f, 0.12681636f, 1.0f, 0.74951172f};
    float rebuilt[5];
    for (int b = 0; b < 5; b++) rebuilt[b] = q4_block_scale(&q, (size_t)b);
    // TV4's printed values were computed with a dynamic map 1 ulp away from ours at some
    // indices (e.g. 11: -0.83828127 there, -0.838281214 here; docs/formats.md explains the
    // map's last bit depends on the torch build). 1 ulp of 0.84 times absmax2 0.475 is
    // 2.8e-8 absolute, hence atol 3e-8 on top of the 1e-7 print precision.
    EXPECT_CLOSE("TV4 rebuilt absmax", rebuilt, rebuilt_ref, 5, 3e-8, 1e-7);
    q4_free(&q);

    // The dynamic map's shape (docs/formats.md, "Double quantization")
    int mirror = 1;
    for (int k = 0; k < 127; k++) mirror &= DQ_MAP[k] == -DQ_MAP[254 - k];
    int ascending = 1;
    for (int k = 0; k < 255; k++) ascending &= DQ_MAP[k] < DQ_MAP[k + 1];
    EXPECT(mirror && ascending && DQ_MAP[127] == 0.0f && DQ_MAP[255] == 1.0f &&
           DQ_MAP[0] == -0.99296875f, "DQ map: ascending, mirrored, 0 at 127, +1 at 255, no -1");
}

static void fill_normal(float *x, size_t n, float std, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(&r);
}

static void test_bits_and_bounds(void) {
    const size_t n = 768 * 768;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    fill_normal(x, n, 0.02f, 1);
    Q4Tensor q;
    Error err = {0};
    CHECK(q4_quantize(&q, x, n, QUANT_NF4, 64, true, "768x768", &err));
    double bpp = q4_bits_per_param(&q);
    EXPECT(fabs(bpp - 4.127) < 0.0005, "768x768 NF4+DQ: %.5f bits/param, docs/formats.md says 4.127", bpp);

    // FMA guard: each rebuilt scale must equal the product rounded to f32, then the sum
    // rounded to f32 (double arithmetic of two floats' product is exact).
    size_t fused = 0;
    for (size_t b = 0; b < q.n_blocks; b++) {
        float prod = (float)((double)q.dq_map[q.absmax_q[b]] * (double)q.absmax2[b / 256]);
        float want = (float)((double)prod + (double)q.offset);
        fused += q4_block_scale(&q, b) != want;
    }
    EXPECT(fused == 0, "block scales use two f32 roundings, no FMA (%zu of %zu differ)", fused,
           q.n_blocks);

    // Error bound (derived): with a = the block's true absmax, a' = the rebuilt one,
    // s = x/a and c the chosen code value, |x - c a'| <= |s - c| a + |c| |a - a'|.
    // |s - c| <= G/2 with G = the widest NF4 gap (-1 to -0.6961928: G/2 = 0.1519036), and
    // |a - a'| <= D/2 * absmax2 with D/2 = 0.00703125, the widest half-gap of the dynamic
    // map (including -1 -> -0.99296875). Plus 4 ulp of a for f32 rounding.
    q4_dequantize(&q, 0, n, y);
    size_t viol_elem = 0, viol_scale = 0;
    for (size_t b = 0; b < q.n_blocks; b++) {
        float a = 0;
        for (size_t i = 0; i < 64; i++) a = fmaxf(a, fabsf(x[b * 64 + i]));
        float a2 = q4_block_scale(&q, b);
        double da = fabs((double)a - a2);
        double slack = 4.0 * (double)a * FLT_EPSILON;
        if (da > 0.00703125 * q.absmax2[b / 256] + slack) viol_scale++;
        for (size_t i = 0; i < 64; i++) {
            double e = fabs((double)x[b * 64 + i] - y[b * 64 + i]);
            if (e > 0.1519036 * a + da + slack) viol_elem++;
        }
    }
    EXPECT(viol_scale == 0, "rebuilt absmax within 0.00703125*absmax2 of the true one (%zu over)", viol_scale);
    EXPECT(viol_elem == 0, "every element within 0.1519036*a + |a-a'| (%zu over)", viol_elem);
    q4_free(&q);

    CHECK(q4_quantize(&q, x, n, QUANT_NF4, 64, false, "768x768", &err));
    EXPECT(fabs(q4_bits_per_param(&q) - 4.5) < 1e-9, "NF4 without DQ: 4.5 bits/param");
    // Requantizing dequantized values returns the same codes (idempotence).
    q4_dequantize(&q, 0, n, y);
    Q4Tensor q2;
    CHECK(q4_quantize(&q2, y, n, QUANT_NF4, 64, false, "requant", &err));
    EXPECT(memcmp(q.codes, q2.codes, n / 2) == 0, "quantize(dequantize(q)) == q");
    q4_free(&q2);
    q4_free(&q);
    free(x);
    free(y);
}

static void test_fast_vs_ref(void) {
    const size_t rows = 96, cols = 768, n = rows * cols;
    float *x = malloc(n * sizeof(float)), *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    fill_normal(x, n, 1.0f, 7);
    for (int t = 0; t < 2; t++)
        for (int dq = 0; dq < 2; dq++)
            for (size_t bs = 32; bs <= 256; bs *= 2) {
                Q4Tensor q;
                Error err = {0};
                QuantType type = t ? QUANT_FP4 : QUANT_NF4;
                CHECK(q4_quantize(&q, x, n, type, bs, dq, "fast", &err));
                q4_dequantize(&q, 0, n, a);
                q4_dequantize_ref(&q, 0, n, b);
                int same = memcmp(a, b, n * sizeof(float)) == 0;
                // a row range in the middle, as the model dequantizes tiles
                q4_dequantize(&q, 10 * cols, 7 * cols, a);
                q4_dequantize_ref(&q, 10 * cols, 7 * cols, b);
                same &= memcmp(a, b, 7 * cols * sizeof(float)) == 0;
                // spans at any start and length (odd, inside one block, across blocks), as
                // the fused sgemm packing dequantizes them
                static const size_t spans[][2] = {{0, 32}, {32, 32}, {1, 5}, {31, 97}, {640, 256}, {77, 1000}, {3, 64}};
                for (size_t s = 0; s < sizeof spans / sizeof spans[0]; s++) {
                    q4_dequantize_span(&q, spans[s][0], spans[s][1], a);
                    q4_dequantize_ref(&q, spans[s][0], spans[s][1], b);
                    same &= memcmp(a, b, spans[s][1] * sizeof(float)) == 0;
                }
                EXPECT(same, "%s dq=%d bs=%zu: fast and span dequantize == reference, bit for bit",
                       quant_name(type), dq, bs);
                q4_free(&q);
            }
    free(x);
    free(a);
    free(b);
}

// The two-step panels the fused ones must equal: q4_dequantize_span into fp32, then bgemm's
// packing rounds to bf16 (what qlinear.c's panel sources did before the fused path).
static void two_step_panel_t(const Q4Tensor *q, size_t L, size_t r0, size_t n, size_t p0,
                             size_t kc, float *tmp, uint16_t *dst) {
    for (size_t j = 0; j < n; j++) q4_dequantize_span(q, (r0 + j) * L + p0, kc, tmp + j * kc);
    bgemm_pack_transposed(tmp, kc, n, kc, dst);
}

static void two_step_panel(const Q4Tensor *q, size_t L, size_t p0, size_t kc, size_t j0,
                           size_t n, float *tmp, uint16_t *dst) {
    for (size_t k = 0; k < kc; k++) q4_dequantize_span(q, (p0 + k) * L + j0, n, tmp + k * BGEMM_NR);
    bgemm_pack_rows(tmp, BGEMM_NR, n, kc, dst);
}

// One fused panel against the two-step one: true when the fused path ran exactly when it
// should (even row length and column offset) and wrote the same bits, or declined and left
// dst untouched.
static bool panel_case(const Q4Tensor *q, bool fwd, size_t L, size_t r, size_t n, size_t c,
                       size_t kc, float *tmp, uint16_t *ref, uint16_t *got) {
    const size_t len = (kc + BGEMM_KSTEP - 1) / BGEMM_KSTEP * BGEMM_KSTEP * BGEMM_NR;
    memset(got, 0xA5, len * sizeof(uint16_t));
    bool ran;
    if (fwd) {
        two_step_panel_t(q, L, r, n, c, kc, tmp, ref);
        ran = q4_pack_bf16_rows_t(q, L, r, n, c, kc, got);
    } else {
        two_step_panel(q, L, r, kc, c, n, tmp, ref);
        ran = q4_pack_bf16_rows(q, L, r, kc, c, n, got);
    }
    if (ran != (L % 2 == 0 && c % 2 == 0)) return false;
    if (!ran) {
        for (size_t i = 0; i < len; i++)
            if (got[i] != 0xA5A5) return false;
        return true;
    }
    return memcmp(ref, got, len * sizeof(uint16_t)) == 0;
}

// Every panel of the grid below, on W = q as rows of L values (R rows): forward panels
// (rows r0.. of W, n of them, columns p0..p0+kc) and backward panels (rows p0..p0+kc,
// columns j0..j0+n). Offsets: block boundaries, inside blocks, odd (the fused path
// declines), and -1 for "ending at the row's / tensor's last value". Adds to cases / bad.
static void panel_grid(const Q4Tensor *q, size_t L, size_t R, float *tmp, uint16_t *ref,
                       uint16_t *got, size_t cases[2], size_t bad[2]) {
    static const size_t ns[] = {32, 31, 17, 16, 3, 1}, kcs[] = {512, 100, 17, 32, 1};
    static const size_t cols[] = {0, 2, 32, 64, 96, 128, 1, (size_t)-1};
    static const size_t rows[] = {0, 5, 32, (size_t)-1};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof kcs / sizeof kcs[0]; b++)
            for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++)
                for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
                    const size_t n = ns[a], kc = kcs[b], last = (size_t)-1;
                    size_t p0 = cols[c] == last ? L - kc : cols[c], r0 = rows[r] == last ? R - n : rows[r];
                    if (p0 + kc <= L) {
                        cases[0]++;
                        bad[0] += !panel_case(q, true, L, r0, n, p0, kc, tmp, ref, got);
                    }
                    size_t j0 = cols[c] == last ? L - n : cols[c];
                    p0 = rows[r] == last ? R - kc : rows[r];
                    if (j0 + n <= L && p0 + kc <= R) {
                        cases[1]++;
                        bad[1] += !panel_case(q, false, L, p0, n, j0, kc, tmp, ref, got);
                    }
                }
}

// Fused bf16 panels == two-step panels bit for bit: NF4/FP4, with and without double
// quantization, blocksizes 64 and 128, rows of 640 values (blocks aligned to rows, as in
// qlinear) and of 650 (32-value runs crossing blocks), ragged n, kc not a multiple of 32.
static void test_fused_bf16_panels(void) {
    if (bgemm_isa() == BGEMM_NONE) {
        SKIP(16, "fused bf16 panels: no AVX512-BF16 or AMX on this CPU/build");
        return;
    }
    const size_t R = 544, Ls[2] = {640, 650};
    float *x = malloc(R * 650 * sizeof(float));
    float *tmp = xmalloc_aligned(BGEMM_NR * BGEMM_KC * sizeof(float));
    uint16_t *ref = xmalloc_aligned(BGEMM_NR * BGEMM_KC * sizeof(uint16_t));
    uint16_t *got = xmalloc_aligned(BGEMM_NR * BGEMM_KC * sizeof(uint16_t));
    fill_normal(x, R * 650, 0.05f, 11);
    for (int t = 0; t < 2; t++)
        for (int dq = 0; dq < 2; dq++)
            for (size_t bs = 64; bs <= 128; bs *= 2) {
                size_t cases[2] = {0, 0}, bad[2] = {0, 0};
                for (size_t g = 0; g < 2; g++) {
                    Q4Tensor q;
                    Error err = {0};
                    CHECK(q4_quantize(&q, x, R * Ls[g], t ? QUANT_FP4 : QUANT_NF4, bs, dq, "panels", &err));
                    panel_grid(&q, Ls[g], R, tmp, ref, got, cases, bad);
                    q4_free(&q);
                }
                for (int d = 0; d < 2; d++)
                    EXPECT(bad[d] == 0, "%s dq=%d bs=%zu: fused bf16 %s panels == two-step panels, "
                           "bit for bit (%zu of %zu cases differ)", t ? "fp4" : "nf4", dq, bs,
                           d ? "backward (W)" : "forward (W^T)", bad[d], cases[d]);
            }
    free(x);
    free(tmp);
    free(ref);
    free(got);
}

static void test_edges(void) {
    Error err = {0};
    Q4Tensor q;
    // odd count with a partial last block: 101 values, blocks of 64 -> 64 + 37
    float x[101], y[101];
    fill_normal(x, 101, 1.0f, 3);
    CHECK(q4_quantize(&q, x, 101, QUANT_NF4, 64, false, "odd", &err));
    EXPECT(q.n_blocks == 2 && q4_code_bytes(&q) == 51, "101 values: 2 blocks, 51 bytes");
    EXPECT((q.codes[50] & 0x0F) == 7, "odd count pads the last low nibble with code 7");
    float amax = 0;
    for (int i = 64; i < 101; i++) amax = fmaxf(amax, fabsf(x[i]));
    EXPECT(q.absmax[1] == amax, "partial block has its own absmax");
    q4_dequantize(&q, 0, 101, y);
    float y2[101];
    q4_dequantize_ref(&q, 0, 101, y2);
    EXPECT(memcmp(y, y2, sizeof y) == 0, "partial block: fast == reference");
    q4_free(&q);

    // An all-zero final partial block stores the clamped 1e-38 (bnb default backend)
    float zx[100] = {0};
    zx[0] = 1.0f;
    CHECK(q4_quantize(&q, zx, 100, QUANT_NF4, 64, false, "zero-tail", &err));
    EXPECT(q.absmax[1] == 1e-38f && q.codes[40] == 0x77, "all-zero partial block: absmax 1e-38, code 7");
    q4_free(&q);

    // Huge outliers: one 3e38 in a block of small values; the outlier survives exactly,
    // the rest collapse to 0, nothing overflows.
    float h[64];
    for (int i = 0; i < 64; i++) h[i] = 0.01f * (float)(i - 32);
    h[5] = 3e38f;
    h[6] = -3e38f;
    CHECK(q4_quantize(&q, h, 64, QUANT_NF4, 64, true, "outlier", &err));
    float hd[64];
    q4_dequantize(&q, 0, 64, hd);
    int finite = 1;
    for (int i = 0; i < 64; i++) finite &= isfinite(hd[i]);
    EXPECT(finite && fabsf(hd[5] - 3e38f) < 3e38f * 0.01f && fabsf(hd[6] + 3e38f) < 3e38f * 0.01f &&
           hd[0] == 0.0f, "outliers near FLT_MAX survive (%g, %g), small values become 0", hd[5], hd[6]);
    q4_free(&q);

    // NaN and Inf are rejected, naming the label and the index
    float bad[70] = {0};
    bad[42] = NAN;
    EXPECT(!q4_quantize(&q, bad, 70, QUANT_NF4, 64, true, "w.weight", &err) &&
           strstr(err.msg, "w.weight") && strstr(err.msg, "element 42 is NaN") &&
           err.status == EXIT_BAD_INPUT, "NaN rejected: %s", err.msg);
    bad[42] = 0;
    bad[69] = -INFINITY;
    EXPECT(!q4_quantize(&q, bad, 70, QUANT_FP4, 64, false, "w.weight", &err) &&
           strstr(err.msg, "element 69 is Inf"), "Inf rejected: %s", err.msg);
    EXPECT(!q4_quantize(&q, h, 64, QUANT_NF4, 48, false, "w", &err) && strstr(err.msg, "blocksize 48"),
           "blocksize 48 rejected: %s", err.msg);
    EXPECT(!q4_quantize(&q, h, 64, QUANT_NF4, 8192, false, "w", &err), "blocksize 8192 rejected");
}

static void test_fp4(void) {
    // magnitudes and their midpoints; ties to the smaller magnitude; sign from s < 0
    EXPECT(fp4_encode(1.0f) == 3 && fp4_encode(-1.0f) == 11 && fp4_encode(0.0f) == 0 &&
           fp4_encode(-0.0f) == 0, "FP4: +1 -> 3, -1 -> 11, 0 and -0 -> 0");
    EXPECT(fp4_encode(0.5f) == 5 && fp4_encode(-0.25f) == 15 && fp4_encode(0.17f) == 6 &&
           fp4_encode(0.0859375f) == 1 && fp4_encode(0.086f) == 6 && fp4_encode(-0.001f) == 8,
           "FP4 codes for 0.5, -0.25, 0.17, the 0.0859375 tie, 0.086, -0.001");
    int round = 1;
    for (int c = 0; c < 16; c++)
        if (c != 8) round &= fp4_encode(FP4_CODE[c]) == c;  // -0.0 encodes as +0 (code 0)
    EXPECT(round, "every FP4 code value encodes to itself");
}

static void test_blocksize_tradeoff(void) {
    const size_t n = 1 << 16;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    fill_normal(x, n, 1.0f, 11);
    double prev_err = 0, prev_bits = 1e9;
    int mono = 1;
    for (size_t bs = 32; bs <= 4096; bs *= 2) {
        Q4Tensor q;
        Error err = {0};
        CHECK(q4_quantize(&q, x, n, QUANT_NF4, bs, false, "bs", &err));
        q4_dequantize(&q, 0, n, y);
        double e = 0;
        for (size_t i = 0; i < n; i++) e += fabs((double)x[i] - y[i]);
        e /= (double)n;
        double bits = q4_bits_per_param(&q);
        mono &= e > prev_err && bits < prev_bits;
        prev_err = e;
        prev_bits = bits;
        q4_free(&q);
    }
    EXPECT(mono, "larger blocks: fewer bits per parameter, larger error (32..4096)");
    free(x);
    free(y);
}

static void test_int(void) {
    Error err = {0};
    QIntTensor q;
    float x[64], y[64];
    for (int i = 0; i < 64; i++) x[i] = (float)(i - 20) * 0.1f;  // [-2.0, 4.3]
    CHECK(qint_quantize(&q, x, 64, QUANT_INT8, 64, "int8", &err));
    qint_dequantize(&q, 0, 64, y);
    int ok = (int8_t)q.q[63] == 127 && (int8_t)q.q[20] == 0 && (int8_t)q.q[0] == (int8_t)nearbyintf(-2.0f * 127 / 4.3f);
    double maxe = 0;
    for (int i = 0; i < 64; i++) maxe = fmax(maxe, fabs((double)x[i] - y[i]));
    EXPECT(ok && maxe <= q.scale[0] * 0.5 * (1 + 1e-5), "INT8 absmax: 4.3 -> 127, 0 -> 0, error <= scale/2 (%.3g)", maxe);
    qint_free(&q);

    CHECK(qint_quantize(&q, x, 64, QUANT_INT8_ASYM, 64, "asym", &err));
    qint_dequantize(&q, 0, 64, y);
    maxe = 0;
    for (int i = 0; i < 64; i++) maxe = fmax(maxe, fabs((double)x[i] - y[i]));
    // scale = 6.3/255, zero-point = round(2.0/scale) = 81
    EXPECT(q.zero[0] == 81 && q.q[0] == 0 && q.q[63] == 255 && maxe <= q.scale[0] * 0.5 * (1 + 1e-5),
           "INT8 asym: zero-point 81 (got %d), min -> 0, max -> 255, error <= scale/2 (%.3g)", q.zero[0], maxe);
    qint_free(&q);

    CHECK(qint_quantize(&q, x, 64, QUANT_INT4, 64, "int4", &err));
    qint_dequantize(&q, 0, 64, y);
    maxe = 0;
    for (int i = 0; i < 64; i++) maxe = fmax(maxe, fabs((double)x[i] - y[i]));
    EXPECT(qint_code_bytes(&q) == 32 && (q.q[31] & 0x0F) == 15 && maxe <= q.scale[0] * 0.5 * (1 + 1e-5),
           "INT4: 32 bytes, 4.3 -> +7 (nibble 15), error <= scale/2 (%.3g)", maxe);
    qint_free(&q);

    float z[64] = {0};
    CHECK(qint_quantize(&q, z, 64, QUANT_INT8_ASYM, 64, "zero", &err));
    qint_dequantize(&q, 0, 64, y);
    int zero_ok = 1;
    for (int i = 0; i < 64; i++) zero_ok &= y[i] == 0.0f;
    EXPECT(zero_ok, "INT8 asym all-zero block dequantizes to zeros");
    qint_free(&q);
}

int main(void) {
    test_nf4_table();
    test_worked_vectors();
    test_double_quant_tv4();
    test_bits_and_bounds();
    test_fast_vs_ref();
    test_fused_bf16_panels();
    test_edges();
    test_fp4();
    test_blocksize_tradeoff();
    test_int();
    return test_summary("test_quant");
}
