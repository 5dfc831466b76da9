// test_explain.c: the computations behind qlora explain's lesson (explain.h) against
// independent references: the normal quantile against erfc and a published value, NF4's
// levels rebuilt from quantiles against quant.c's table (bitsandbytes'), INT8 zero-point
// quantization "done right" against quant.c's QUANT_INT8_ASYM bit for bit, and the two
// mistakes (a truncated zero-point, no clamping) on a block worked out by hand.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "explain.h"
#include "quant.h"
#include "test.h"

// Phi(Q(p)) = p to within what one ulp of Q moves Phi: in the tail Phi'/Phi is about |x|, so
// at p = 1e-9 (x = -6) one ulp (8.9e-16) is 5.3e-15 relative; 1e-14 covers it. Q(1 - p) =
// -Q(p), and Q(0.975) = 1.959963984540054 (the tabulated two-sided 95% point, 16 digits).
static void test_quantile(void) {
    const double ps[] = {1e-9, 0.01, 0.1, 0.3, 0.5001, 0.7, 0.9677083333, 0.999};
    double worst = 0;
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        const double x = explain_normal_quantile(ps[i]), back = 0.5 * erfc(-x / sqrt(2.0));
        worst = fmax(worst, fabs(back - ps[i]) / ps[i]);
    }
    EXPECT(worst < 1e-14, "Phi(Q(p)) = p within 1e-14 relative (worst %.3g)", worst);
    const double a = explain_normal_quantile(0.2), b = explain_normal_quantile(0.8);
    EXPECT(fabs(a + b) < 1e-15, "Q(0.2) = -Q(0.8): %.17g vs %.17g", a, b);
    const double q = explain_normal_quantile(0.975);
    EXPECT(fabs(q - 1.959963984540054) < 1e-14, "Q(0.975) = 1.959963984540054 (got %.16g)", q);
}

// The levels rebuilt in double are quant.c's NF4_CODE (bitsandbytes' table) to within what
// that table's float32 construction allows: it rounds delta to 0.9677083 and spaces the
// probabilities in float32 (ulp 6e-8 near 1); dQ/dp = 1/phi(Q) <= 1/phi(1.85) = 14, so Q moves
// by up to ~1e-6 and a level (Q / 1.85) by ~5e-7; TOL_NF4_LEVEL = 1e-6. They ascend from -1 to
// 1 through an exact 0 at code 7.
#define TOL_NF4_LEVEL 1e-6
static void test_nf4_levels(void) {
    Nf4Levels L;
    explain_nf4_levels(&L);
    double worst = 0;
    for (int k = 0; k < 16; k++) worst = fmax(worst, fabs(L.level[k] - NF4_CODE[k]));
    EXPECT(worst < TOL_NF4_LEVEL, "NF4 levels from normal quantiles match quant.c's table within %g (worst %.3g)",
           TOL_NF4_LEVEL, worst);
    bool ascending = true;
    for (int k = 1; k < 16; k++) ascending = ascending && L.level[k] > L.level[k - 1];
    EXPECT(ascending && fabs(L.level[0] + 1) < 1e-15 && L.level[7] == 0 && L.level[15] == 1,
           "levels ascend from -1 through 0 (code 7) to 1");
    EXPECT(fabs(L.delta - 0.96770833333333333) < 1e-15, "delta = (1 - 1/30 + 1 - 1/32) / 2 = %.17g", L.delta);
}

// Right (rounded zero-point, clamped) equals quant.c's QUANT_INT8_ASYM bit for bit on lopsided
// data in several block sizes, and its error is at most half a step.
static void test_int8_right(void) {
    enum { N = 5000 };
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float)), *ref = malloc(N * sizeof(float));
    Rng r;
    rng_seed(&r, 11);
    for (size_t i = 0; i < N; i++) x[i] = fabsf(rng_normal(&r)) * 2.0f - 0.3f;  // lopsided
    const size_t sizes[] = {8, 64, 250, N};
    for (size_t s = 0; s < 4; s++) {
        QIntTensor q;
        Error err = {0};
        EXPECT(qint_quantize(&q, x, N, QUANT_INT8_ASYM, sizes[s], "x", &err), "quantize: %s", err.msg);
        qint_dequantize(&q, 0, N, ref);
        qint_free(&q);
        Int8Errors e;
        explain_int8_zero_point(x, N, sizes[s], true, true, y, NULL, &e);
        EXPECT(memcmp(y, ref, N * sizeof(float)) == 0, "rounded + clamped == QUANT_INT8_ASYM, blocks of %zu",
               sizes[s]);
        // half a step, plus the float rounding of x / scale and (q - z) * scale
        EXPECT(e.max_steps <= 0.5 + 1e-4 && e.n_wrapped == 0, "blocks of %zu: max error %.6f steps <= 0.5",
               sizes[s], e.max_steps);
    }
    free(x);
    free(y);
    free(ref);
}

// One block worked by hand: min -1, max 1.2, so scale = 2.2/255 and -min/scale = 115.909...
// Rounded, z = 116 and -1 comes back as -116 * scale = -1.00078 (0.09 steps off). Truncated,
// z = 115: -1 / scale rounds to -116, + 115 = -1, outside [0, 255]; clamped to 0 it comes back
// as -115 * scale (0.909 steps off); unclamped it wraps to 255 and comes back as
// +140 * scale = 1.2078, 2.21 away.
static void test_int8_mistakes(void) {
    const float x[4] = {-1.0f, 1.2f, 0.3f, 0.0f};
    float y[4];
    const float scale = 2.2f / 255.0f;
    Int8Errors e;
    explain_int8_zero_point(x, 4, 4, true, true, y, NULL, &e);
    EXPECT(y[0] == -116.0f * scale && e.n_clamped == 0, "rounded: -1 -> %.6f (want -116 x scale)", y[0]);
    explain_int8_zero_point(x, 4, 4, false, true, y, NULL, &e);
    EXPECT(y[0] == -115.0f * scale && e.n_clamped == 1 && fabs(e.max_steps - 0.909) < 1e-3,
           "truncated, clamped: -1 -> %.6f, %zu clamped, %.4f steps", y[0], e.n_clamped, e.max_steps);
    EXPECT(y[3] == 0.0f, "truncated: 0 still comes back exactly (z is an integer)");
    uint8_t codes[4];
    explain_int8_zero_point(x, 4, 4, false, false, y, codes, &e);
    EXPECT(y[0] == 140.0f * scale && codes[0] == 255 && e.n_wrapped == 1 && fabs(e.max_err - 2.2078) < 1e-3,
           "truncated, not clamped: -1 is stored as code %d and comes back as %.6f (error %.4f)", codes[0], y[0],
           e.max_err);
}

// Histogram and code counts account for every value once.
static void test_counts(void) {
    enum { N = 4096 };
    float x[N];
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < N; i++) x[i] = rng_normal(&r);
    double h[10], sum = 0;
    explain_histogram(x, N, -1, 1, 10, h);
    for (int i = 0; i < 10; i++) sum += h[i];
    EXPECT(sum == N, "histogram holds all %d values (%g)", N, sum);
    Q4Tensor q;
    Error err = {0};
    EXPECT(q4_quantize(&q, x, N, QUANT_NF4, 64, true, "x", &err), "nf4: %s", err.msg);
    size_t c[16], total = 0;
    explain_code_counts(&q, c);
    for (int k = 0; k < 16; k++) total += c[k];
    EXPECT(total == N && c[0] + c[15] >= N / 64, "code counts sum to %zu; -1 or +1 (the absmax) once a block "
           "at least (%zu)", total, c[0] + c[15]);
    q4_free(&q);
}

int main(void) {
    test_quantile();
    test_nf4_levels();
    test_int8_right();
    test_int8_mistakes();
    test_counts();
    return test_summary("test_explain");
}
