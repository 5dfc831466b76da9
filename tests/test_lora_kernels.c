// test_lora_kernels.c: the fused LoRA kernels (src/lora_kernels.c, behind lora_forward and
// lora_backward) against lora.c's _ref versions (six general matrix products) on ranks that
// cross the kernels' blocking (8 rows per pass of dots, 256 per chunk, 64 tokens per
// backward block), sizes that are not multiples of 16, one token (generation) and many; plus
// identical results for 1 thread and for all of them.
//
// Tolerance: both sides sum the same products in fp32 in different orders. Each output is
// a chain of at most K = in + out + r + N terms, so each side is within (K + 3) u S of the
// exact value, S the sum of the chain's absolute products (computed in double here), u =
// 2^-24; the two sides differ by at most twice that. The check uses 2 (K + 3) u S.
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "lora.h"
#include "test.h"
#include "util.h"

static float *randn(size_t n, Rng *r, float scale) {
    float *x = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(r);
    return x;
}

static float *copy(const float *x, size_t n) {
    float *y = xmalloc(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

// |got - want| <= 2 (K + 3) u S elementwise, S[i] the absolute sum of element i's chain.
static void expect_bound(const char *what, const float *got, const float *want, const double *S,
                         size_t n, size_t K) {
    const double u = ldexp(1.0, -24);
    size_t bad = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)got[i] - want[i]), b = 2.0 * (double)(K + 3) * u * S[i] + 1e-30;
        worst = e / b > worst ? e / b : worst;
        bad += !(e <= b);
    }
    EXPECT(bad == 0, "%s: %zu of %zu outside 2 (K+3) u S (worst %.3f of it)", what, bad, n, worst);
}

static void check_case(size_t r, size_t in, size_t out, size_t N, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    LoraLinear l = {in, out, randn(r * in, &rng, 0.1f), randn(out * r, &rng, 0.1f), NULL, NULL};
    float *x = randn(N * in, &rng, 1.0f), *dy = randn(N * out, &rng, 1.0f), *y0 = randn(N * out, &rng, 1.0f);
    float *dx0 = randn(N * in, &rng, 1.0f), *dA0 = randn(r * in, &rng, 0.1f), *dB0 = randn(out * r, &rng, 0.1f);
    const float s = 1.5f;
    char what[160];
    // forward: h and y, kernel vs reference
    float *y1 = copy(y0, N * out), *y2 = copy(y0, N * out), *h1 = xmalloc(r * N * 4), *h2 = xmalloc(r * N * 4);
    lora_forward(&l, (int)r, s, y1, h1, x, N);
    lora_forward_ref(&l, (int)r, s, y2, h2, x, N);
    double *S = xcalloc((N * (in > out ? in : out) + r * (in > out ? in : out) + 1) * 2, sizeof(double));
    for (size_t q = 0; q < r; q++)  // h[q][n]: sum_i |A x|
        for (size_t n = 0; n < N; n++)
            for (size_t i = 0; i < in; i++) S[q * N + n] += fabs((double)l.A[q * in + i] * x[n * in + i]);
    snprintf(what, sizeof what, "r %zu in %zu out %zu N %zu: h", r, in, out, N);
    expect_bound(what, h1, h2, S, r * N, in);
    for (size_t n = 0; n < N; n++)  // y[n][o]: |y0| + s sum_q |B| sum_i |A x|
        for (size_t o = 0; o < out; o++) {
            double t = fabs((double)y0[n * out + o]);
            for (size_t q = 0; q < r; q++) t += s * fabs((double)l.B[o * r + q]) * S[q * N + n];
            S[r * N + n * out + o] = t;
        }
    snprintf(what, sizeof what, "r %zu in %zu out %zu N %zu: y", r, in, out, N);
    expect_bound(what, y1, y2, S + r * N, N * out, in + r);
    // backward: dh, dx, dA, dB
    float *dh1 = xmalloc(r * N * 4), *dh2 = xmalloc(r * N * 4), *dx1 = copy(dx0, N * in), *dx2 = copy(dx0, N * in);
    float *gA1 = copy(dA0, r * in), *gA2 = copy(dA0, r * in), *gB1 = copy(dB0, out * r), *gB2 = copy(dB0, out * r);
    l.dA = gA1, l.dB = gB1;
    lora_backward(&l, (int)r, s, dx1, dh1, dy, h2, x, N);
    l.dA = gA2, l.dB = gB2;
    lora_backward_ref(&l, (int)r, s, dx2, dh2, dy, h2, x, N);
    // absolute sums: dh[q][n] = s sum_o |B dy|; dx, dA, dB bounded by the same products
    // through |dh| (a chain of out + r or N terms); a common S per output kind is enough
    double *Sdh = xcalloc(r * N, sizeof(double));
    double mdh = 0, mx = 0, mdy = 0, mA = 0, mh = 0;
    for (size_t q = 0; q < r; q++)
        for (size_t n = 0; n < N; n++) {
            for (size_t o = 0; o < out; o++) Sdh[q * N + n] += s * fabs((double)l.B[o * r + q] * dy[n * out + o]);
            mdh = Sdh[q * N + n] > mdh ? Sdh[q * N + n] : mdh;
            mh = fabs(h2[q * N + n]) > mh ? fabs(h2[q * N + n]) : mh;
        }
    for (size_t i = 0; i < N * in; i++) mx = fabs(x[i]) > mx ? fabs(x[i]) : mx;
    for (size_t i = 0; i < N * out; i++) mdy = fabs(dy[i]) > mdy ? fabs(dy[i]) : mdy;
    for (size_t i = 0; i < r * in; i++) mA = fabs(l.A[i]) > mA ? fabs(l.A[i]) : mA;
    snprintf(what, sizeof what, "r %zu in %zu out %zu N %zu: dh", r, in, out, N);
    expect_bound(what, dh1, dh2, Sdh, r * N, out);
    double *Sx = xmalloc(N * in * sizeof(double)), *SA = xmalloc(r * in * sizeof(double)), *SB = xmalloc(out * r * sizeof(double));
    for (size_t i = 0; i < N * in; i++) Sx[i] = fabs(dx0[i]) + (double)r * mdh * mA;
    for (size_t i = 0; i < r * in; i++) SA[i] = fabs(dA0[i]) + (double)N * mdh * mx;
    for (size_t i = 0; i < out * r; i++) SB[i] = fabs(dB0[i]) + s * (double)N * mdy * mh;
    snprintf(what, sizeof what, "r %zu in %zu out %zu N %zu: dx", r, in, out, N);
    expect_bound(what, dx1, dx2, Sx, N * in, out + r);
    snprintf(what, sizeof what, "r %zu in %zu out %zu N %zu: dA", r, in, out, N);
    expect_bound(what, gA1, gA2, SA, r * in, out + N);
    snprintf(what, sizeof what, "r %zu in %zu out %zu N %zu: dB", r, in, out, N);
    expect_bound(what, gB1, gB2, SB, out * r, N);
    free(l.A), free(l.B), free(x), free(dy), free(y0), free(dx0), free(dA0), free(dB0), free(y1), free(y2);
    free(h1), free(h2), free(S), free(dh1), free(dh2), free(dx1), free(dx2), free(gA1), free(gA2);
    free(gB1), free(gB2), free(Sdh), free(Sx), free(SA), free(SB);
}

// The kernels give the same bits on 1 thread and on all of them (fixed token blocks,
// partial sums reduced in block order).
static void check_threads(void) {
    const size_t r = 8, in = 200, out = 300, N = 333;
    Rng rng;
    rng_seed(&rng, 77);
    LoraLinear l = {in, out, randn(r * in, &rng, 0.1f), randn(out * r, &rng, 0.1f), NULL, NULL};
    float *x = randn(N * in, &rng, 1.0f), *dy = randn(N * out, &rng, 1.0f);
    float *res[2];
    for (int pass = 0; pass < 2; pass++) {
        const int nt = omp_get_max_threads();
        if (pass == 1) omp_set_num_threads(1);
        float *o = xcalloc(N * out + r * N * 2 + N * in + r * in + out * r, sizeof(float));
        float *y = o, *h = y + N * out, *dh = h + r * N, *dx = dh + r * N, *dA = dx + N * in, *dB = dA + r * in;
        l.dA = dA, l.dB = dB;
        lora_forward(&l, (int)r, 2.0f, y, h, x, N);
        lora_backward(&l, (int)r, 2.0f, dx, dh, dy, h, x, N);
        res[pass] = o;
        omp_set_num_threads(nt);
    }
    const size_t total = N * out + r * N * 2 + N * in + r * in + out * r;
    EXPECT(memcmp(res[0], res[1], total * sizeof(float)) == 0,
           "LoRA kernels: %d threads and 1 thread give identical results", omp_get_max_threads());
    free(res[0]), free(res[1]), free(l.A), free(l.B), free(x), free(dy);
}

int main(void) {
    static const size_t cases[][4] = {  // r, in, out, N
        {8, 64, 64, 1},   {8, 768, 2304, 130}, {16, 3072, 768, 64}, {1, 17, 33, 5},
        {13, 100, 50, 200}, {300, 40, 24, 70},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(cases[i][0], cases[i][1], cases[i][2], cases[i][3], 10 + i);
    check_threads();
    return test_summary("test_lora_kernels");
}
