// test_llama_ops.c: the LLaMA-family kernels of ops.h (docs/llama.md, section 3) against
// independent double-precision loops written here from the doc: RMSNorm, RoPE (tables,
// rotate-half rotation on the fused-qkv layout, its invariants and its transpose), SwiGLU and
// grouped-query attention; then two blocks of the llama_tied fixture built from these
// kernels against transformers' hidden states (tests/ref/llama/llama_tied_ref.safetensors).
// Every backward is checked twice: against the closed form in double, and against central
// finite differences of the double forward (h = 1e-5 on inputs of order 1: truncation error
// ~h^2 = 1e-10, rounding ~1e-16/h = 1e-11, both far below the fp32 kernels' ~1e-7).
#include <stdint.h>
#include <stdlib.h>

#include "ops.h"
#include "safetensors.h"
#include "test.h"
#include "util.h"

// fp32 kernels vs the same math in double: a handful of roundings per output (RMSNorm's rstd,
// x*rstd, *w; SwiGLU's exp to 2 ulp, divide, multiply), i.e. a few 1e-7 relative. 2e-6 is
// ~10x that and O(1) below any real bug; the absolute floor covers values that round to ~0.
#define TOL_FWD_RTOL 2e-6
#define TOL_FWD_ATOL 1e-7
// fp32 backward vs double: the row reductions of RMSNorm (C = 131 terms) cancel, so the
// absolute error scales with the terms, not the result; 1e-5 + 1e-6 absolute is ~10x the
// largest error seen and far below a wrong sign or a missing term (O(1) relative).
#define TOL_BWD_RTOL 1e-5
#define TOL_BWD_ATOL 1e-6
#define FD_H 1e-5
#define FD_MAX_COORDS 200

static void fill(float *x, size_t n, float scale, float offset, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = offset + scale * rng_normal(&r);
}

static double *to_double(const float *x, size_t n) {
    double *d = xmalloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

// A scalar loss of the double parameters p (the kernel's inputs, concatenated).
typedef double (*LossFn)(const double *p, const void *ctx);

// Central differences of f at p on up to FD_MAX_COORDS coordinates of p[off..off+n) (all of
// them when n is small, else random ones), compared with the analytic gradient got[0..n).
static void fd_check(const char *name, LossFn f, const void *ctx, double *p, size_t off, size_t n,
                     const float *got, uint64_t seed) {
    const size_t m = n < FD_MAX_COORDS ? n : FD_MAX_COORDS;
    float *fd = xmalloc(m * sizeof *fd), *an = xmalloc(m * sizeof *an);
    Rng r;
    rng_seed(&r, seed);
    for (size_t k = 0; k < m; k++) {
        const size_t i = n <= FD_MAX_COORDS ? k : (size_t)(rng_u64(&r) % n);
        double *pi = p + off + i;
        const double p0 = *pi;
        *pi = p0 + FD_H;
        const double lp = f(p, ctx);
        *pi = p0 - FD_H;
        const double lm = f(p, ctx);
        *pi = p0;
        fd[k] = (float)((lp - lm) / (2 * FD_H));
        an[k] = got[i];
    }
    char what[200];
    snprintf(what, sizeof what, "%s vs central differences in double (%zu coords)", name, m);
    EXPECT_CLOSE(what, an, fd, m, TOL_BWD_ATOL, TOL_BWD_RTOL);
    free(fd);
    free(an);
}

// ---- RMSNorm

typedef struct {
    size_t N, C;
    double eps;
    const double *dout;  // the loss is sum(dout * y)
} RmsCtx;

// y = w * x / sqrt(mean(x^2) + eps) in double; p = x (N*C) then w (C). Returns sum(dout * y)
// and writes y when y is non-NULL.
static double rms_ref(const double *p, const RmsCtx *c, double *y) {
    const double *x = p, *w = p + c->N * c->C;
    double loss = 0;
    for (size_t r = 0; r < c->N; r++) {
        double ss = 0;
        for (size_t i = 0; i < c->C; i++) ss += x[r * c->C + i] * x[r * c->C + i];
        const double inv = 1.0 / sqrt(ss / (double)c->C + c->eps);
        for (size_t i = 0; i < c->C; i++) {
            const double v = w[i] * x[r * c->C + i] * inv;
            if (y) y[r * c->C + i] = v;
            if (c->dout) loss += c->dout[r * c->C + i] * v;
        }
    }
    return loss;
}

static double rms_loss(const double *p, const void *ctx) { return rms_ref(p, ctx, NULL); }

static void test_rmsnorm_forward(void) {
    const size_t N = 7, C = 131;  // C spans three 64-column blocks of the dw reduction
    const float eps = 1e-5f;
    float *x = xmalloc((N * C + C) * sizeof(float)), *w = x + N * C;
    fill(x, N * C, 2.0f, 0.5f, 1);  // a non-zero mean: RMSNorm must not subtract it
    fill(w, C, 0.1f, 1.0f, 2);
    double *p = to_double(x, N * C + C), *y = xmalloc(N * C * sizeof *y);
    RmsCtx c = {N, C, eps, NULL};
    rms_ref(p, &c, y);
    float *ref = xmalloc(N * C * sizeof(float)), *out = xmalloc(N * C * sizeof(float));
    float *rstd = xmalloc(N * sizeof(float)), *rstd_ref = xmalloc(N * sizeof(float));
    for (size_t i = 0; i < N * C; i++) ref[i] = (float)y[i];
    for (size_t r = 0; r < N; r++) {
        double ss = 0;
        for (size_t i = 0; i < C; i++) ss += p[r * C + i] * p[r * C + i];
        rstd_ref[r] = (float)(1.0 / sqrt(ss / (double)C + eps));
    }
    rmsnorm_forward(out, rstd, x, w, N, C, eps);
    EXPECT_CLOSE("rmsnorm_forward vs double", out, ref, N * C, TOL_FWD_ATOL, TOL_FWD_RTOL);
    EXPECT_CLOSE("rmsnorm_forward rstd vs double", rstd, rstd_ref, N, 0, 1e-7);  // one rounding
    rmsnorm_forward_ref(out, NULL, x, w, N, C, eps);
    EXPECT_CLOSE("rmsnorm_forward_ref vs double", out, ref, N * C, TOL_FWD_ATOL, TOL_FWD_RTOL);
    // in place (out == x) is allowed: each row reads its rstd before writing
    float *xx = xmalloc(N * C * sizeof(float));
    memcpy(xx, x, N * C * sizeof(float));
    rmsnorm_forward(xx, NULL, xx, w, N, C, eps);
    rmsnorm_forward(out, NULL, x, w, N, C, eps);
    EXPECT(memcmp(xx, out, N * C * sizeof(float)) == 0, "rmsnorm_forward in place == out of place");
    // a zero row gives zeros (rstd = 1/sqrt(eps)), not NaN
    float z[8] = {0}, wz[8] = {1, 1, 1, 1, 1, 1, 1, 1}, oz[8], rz;
    rmsnorm_forward(oz, &rz, z, wz, 1, 8, eps);
    EXPECT(oz[0] == 0 && oz[7] == 0 && isfinite(rz), "rmsnorm of a zero row is zero (rstd %g)", rz);
    free(x); free(p); free(y); free(ref); free(out); free(rstd); free(rstd_ref); free(xx);
}

static void test_rmsnorm_backward(void) {
    const size_t N = 5, C = 131;
    const float eps = 1e-6f;
    float *x = xmalloc((N * C + C) * sizeof(float)), *w = x + N * C;
    float *dout = xmalloc(N * C * sizeof(float)), *rstd = xmalloc(N * sizeof(float));
    fill(x, N * C, 1.0f, 0.3f, 3);
    fill(w, C, 0.2f, 1.0f, 4);
    fill(dout, N * C, 1.0f, 0.0f, 5);
    float *y = xmalloc(N * C * sizeof(float));
    rmsnorm_forward(y, rstd, x, w, N, C, eps);
    float *g = xcalloc(N * C + C, sizeof(float)), *dw = g + N * C;  // dx then dw, like p
    rmsnorm_backward(g, dw, dout, x, w, rstd, N, C);
    // closed form (docs/llama.md 3.2) in double: dx = (gw - n mean(gw n)) / r, dw = sum dout n
    float *ref = xcalloc(N * C + C, sizeof(float));
    double *dwr = xcalloc(C, sizeof(double));
    for (size_t r = 0; r < N; r++) {
        const float *xr = x + r * C, *d = dout + r * C;
        double ss = 0, gn = 0;
        for (size_t i = 0; i < C; i++) ss += (double)xr[i] * xr[i];
        const double rr = sqrt(ss / (double)C + eps);
        for (size_t i = 0; i < C; i++) gn += (double)w[i] * d[i] * xr[i] / rr;
        for (size_t i = 0; i < C; i++) {
            ref[r * C + i] = (float)(((double)w[i] * d[i] - xr[i] / rr * gn / (double)C) / rr);
            dwr[i] += (double)d[i] * xr[i] / rr;
        }
    }
    for (size_t i = 0; i < C; i++) ref[N * C + i] = (float)dwr[i];
    EXPECT_CLOSE("rmsnorm_backward dx vs closed form", g, ref, N * C, TOL_BWD_ATOL, TOL_BWD_RTOL);
    EXPECT_CLOSE("rmsnorm_backward dw vs closed form", dw, ref + N * C, C, TOL_BWD_ATOL, TOL_BWD_RTOL);
    double *p = to_double(x, N * C + C), *dd = to_double(dout, N * C);
    RmsCtx c = {N, C, eps, dd};
    fd_check("rmsnorm_backward dx", rms_loss, &c, p, 0, N * C, g, 6);
    fd_check("rmsnorm_backward dw", rms_loss, &c, p, N * C, C, dw, 7);
    // both gradients accumulate: a second call adds the same values again (x + x is exact)
    float *g2 = xmalloc((N * C + C) * sizeof(float));
    memcpy(g2, g, (N * C + C) * sizeof(float));
    rmsnorm_backward(g, dw, dout, x, w, rstd, N, C);
    int ok = 1;
    for (size_t i = 0; i < N * C + C; i++) ok &= g[i] == 2 * g2[i];
    EXPECT(ok, "rmsnorm_backward accumulates into dx and dw");
    free(x); free(dout); free(rstd); free(y); free(g); free(ref); free(dwr); free(p); free(dd);
    free(g2);
}

// ---- RoPE

// Sizes of the fused-qkv case: q | k | v columns of (B, T, 3C), C = NH * HS.
enum { RB = 2, RT = 64, RNH = 3, RHS = 16, RC = RNH * RHS, RHALF = RHS / 2 };

typedef struct {
    const float *ct, *st;  // (RT, RHALF) tables from rope_tables
    const double *dout;      // the loss is sum(dout * rope(x)) over a plain (B,T,NH,HS) x
} RopeCtx;

// transformers' form, written independently of ops.c: out = v * cos_full + rotate_half(v) *
// sin_full with full-length tables (the half repeated) and rotate_half(v) = [-v2, v1].
static void rope_ref(double *out, const double *x, const float *ct, const float *st) {
    for (size_t bt = 0; bt < (size_t)RB * RT; bt++)
        for (size_t h = 0; h < RNH; h++) {
            const double *v = x + (bt * RNH + h) * RHS;
            double *o = out + (bt * RNH + h) * RHS;
            for (size_t j = 0; j < RHS; j++) {
                const size_t t = bt % RT, f = t * RHALF + j % RHALF;
                const double rot = j < RHALF ? -v[j + RHALF] : v[j - RHALF];
                o[j] = v[j] * ct[f] + rot * st[f];
            }
        }
}

static double rope_loss(const double *p, const void *ctx) {
    const RopeCtx *c = ctx;
    const size_t n = (size_t)RB * RT * RC;
    double *o = xmalloc(n * sizeof *o), loss = 0;
    rope_ref(o, p, c->ct, c->st);
    for (size_t i = 0; i < n; i++) loss += c->dout[i] * o[i];
    free(o);
    return loss;
}

static void test_rope_tables(float *ct, float *st) {
    rope_tables(ct, st, RT, RHS, 10000.0f);
    // vs cos/sin of the exact angle t * theta^(-2i/hd): the fp32 angle (powf, one divide, one
    // product: <= 3 ulp of an angle below RT = 64 rad, ~1.2e-5) dominates; cosf/sinf add 1 ulp
    double worst = 0;
    for (size_t t = 0; t < RT; t++)
        for (size_t i = 0; i < RHALF; i++) {
            const double a = (double)t * pow(10000.0, -2.0 * (double)i / RHS);
            worst = fmax(worst, fabs(ct[t * RHALF + i] - cos(a)));
            worst = fmax(worst, fabs(st[t * RHALF + i] - sin(a)));
        }
    EXPECT(worst < 2e-5, "rope_tables within 2e-5 of the exact angle at t < %d (max err %.2e)", RT, worst);
    EXPECT(ct[0] == 1 && st[0] == 0 && ct[RHALF - 1] == 1 && st[RHALF - 1] == 0,
           "rope_tables: position 0 is cos 1, sin 0 exactly");
    // inv_freq[0] = 1: row t, column 0 is the angle t itself
    EXPECT(fabs(ct[5 * RHALF] - cos(5.0)) < 1e-7 && fabs(st[5 * RHALF] - sin(5.0)) < 1e-7,
           "rope_tables: dim 0 rotates by t radians");
}

static void test_rope(void) {
    float ct[RT * RHALF], st[RT * RHALF];
    test_rope_tables(ct, st);
    const size_t n = (size_t)RB * RT * RC, n3 = 3 * n;
    float *qkv = xmalloc(n3 * sizeof(float)), *orig = xmalloc(n3 * sizeof(float));
    float *q = xmalloc(n * sizeof(float)), *ref = xmalloc(n * sizeof(float));
    fill(qkv, n3, 1.0f, 0.0f, 11);
    memcpy(orig, qkv, n3 * sizeof(float));
    for (size_t bt = 0; bt < (size_t)RB * RT; bt++)
        memcpy(q + bt * RC, qkv + bt * 3 * RC, RC * sizeof(float));
    double *qd = to_double(q, n), *od = xmalloc(n * sizeof *od);
    rope_ref(od, qd, ct, st);
    for (size_t i = 0; i < n; i++) ref[i] = (float)od[i];
    // plain (B,T,NH,HS) layout vs the double reference: two products and a sum per value
    rope_forward(q, ct, st, RB, RT, RNH, RHS, RC, NULL);
    EXPECT_CLOSE("rope_forward vs rotate_half in double", q, ref, n, TOL_FWD_ATOL, TOL_FWD_RTOL);
    // fused qkv: q and k columns rotate in place with row stride 3C; v is untouched
    rope_forward(qkv, ct, st, RB, RT, RNH, RHS, 3 * RC, NULL);
    rope_forward(qkv + RC, ct, st, RB, RT, RNH, RHS, 3 * RC, NULL);
    int same_q = 1, v_kept = 1, t0_kept = 1;
    double worst_norm = 0;
    for (size_t bt = 0; bt < (size_t)RB * RT; bt++) {
        const float *row = qkv + bt * 3 * RC, *o = orig + bt * 3 * RC;
        same_q &= memcmp(row, q + bt * RC, RC * sizeof(float)) == 0;
        v_kept &= memcmp(row + 2 * RC, o + 2 * RC, RC * sizeof(float)) == 0;
        if (bt % RT == 0) t0_kept &= memcmp(row, o, 2 * RC * sizeof(float)) == 0;
        for (size_t h = 0; h < 2 * RNH; h++)  // q and k heads: every (d, d + HS/2) pair
            for (size_t d = 0; d < RHALF; d++) {
                const size_t a = h * RHS + d, b = a + RHALF;
                const double n0 = hypot(o[a], o[b]), n1 = hypot(row[a], row[b]);
                worst_norm = fmax(worst_norm, fabs(n1 - n0) / (n0 + 1e-30));
            }
    }
    EXPECT(same_q, "rope_forward on the q columns of qkv (stride 3C) == on a plain q");
    EXPECT(v_kept, "rope_forward on q and k leaves the v columns untouched");
    EXPECT(t0_kept, "rope_forward: position 0 is the identity (bitwise)");
    // cos^2 + sin^2 = 1 to 1 ulp in fp32, plus the rounding of the rotation
    EXPECT(worst_norm < 1e-6, "rope_forward preserves every pair norm (max rel change %.2e)", worst_norm);
    // rope_backward is the inverse rotation: backward(forward(x)) = x
    rope_backward(qkv, ct, st, RB, RT, RNH, RHS, 3 * RC, NULL);
    rope_backward(qkv + RC, ct, st, RB, RT, RNH, RHS, 3 * RC, NULL);
    EXPECT_CLOSE("rope_backward(rope_forward(x)) == x", qkv, orig, n3, 1e-6, 1e-6);
    // gradient: rope_backward(dout) vs the transposed rotation in double and central
    // differences of sum(dout * rope(x)) through the double reference
    float *g = xmalloc(n * sizeof(float)), *gref = xmalloc(n * sizeof(float));
    fill(g, n, 1.0f, 0.0f, 12);
    double *dd = to_double(g, n);
    for (size_t bt = 0; bt < (size_t)RB * RT; bt++)
        for (size_t h = 0; h < RNH; h++)
            for (size_t d = 0; d < RHALF; d++) {
                const size_t a = (bt * RNH + h) * RHS + d, b = a + RHALF, f = (bt % RT) * RHALF + d;
                gref[a] = (float)(dd[a] * ct[f] + dd[b] * st[f]);
                gref[b] = (float)(dd[b] * ct[f] - dd[a] * st[f]);
            }
    rope_backward(g, ct, st, RB, RT, RNH, RHS, RC, NULL);
    EXPECT_CLOSE("rope_backward vs the transposed rotation in double", g, gref, n, TOL_FWD_ATOL,
                 TOL_FWD_RTOL);
    RopeCtx c = {ct, st, dd};
    fd_check("rope_backward", rope_loss, &c, qd, 0, n, g, 13);
    free(qkv); free(orig); free(q); free(ref); free(qd); free(od); free(g); free(gref); free(dd);
}

// ---- SwiGLU

typedef struct {
    size_t n;
    const double *dout;
} SwiCtx;

static double silu_d(double z) { return z / (1 + exp(-z)); }

// p = gate (n) then up (n); loss = sum(dout * silu(gate) * up)
static double swiglu_loss(const double *p, const void *ctx) {
    const SwiCtx *c = ctx;
    double loss = 0;
    for (size_t i = 0; i < c->n; i++) loss += c->dout[i] * silu_d(p[i]) * p[c->n + i];
    return loss;
}

static void test_swiglu(void) {
    const size_t n = 4099;
    float *gu = xmalloc(2 * n * sizeof(float)), *gate = gu, *up = gu + n;
    fill(gate, n, 3.0f, 0.0f, 21);
    fill(up, n, 1.0f, 0.0f, 22);
    // tails: exp's clamp at -87/88 must give ~0 and z, never inf or NaN
    const float tails[6] = {-100.0f, -88.5f, -20.0f, 0.0f, 20.0f, 100.0f};
    memcpy(gate, tails, sizeof tails);
    float *out = xmalloc(n * sizeof(float)), *ref = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) ref[i] = (float)(silu_d(gate[i]) * up[i]);
    swiglu_forward(out, gate, up, n);
    EXPECT_CLOSE("swiglu_forward vs double", out, ref, n, 1e-12, TOL_FWD_RTOL);
    swiglu_forward_ref(out, gate, up, n);
    EXPECT_CLOSE("swiglu_forward_ref vs double", out, ref, n, 1e-12, TOL_FWD_RTOL);
    float *dout = xmalloc(n * sizeof(float)), *g = xcalloc(2 * n, sizeof(float));
    float *gref = xmalloc(2 * n * sizeof(float));
    fill(dout, n, 1.0f, 0.0f, 23);
    swiglu_backward(g, g + n, dout, gate, up, n);
    // closed form (docs/llama.md 3.6): silu'(z) = s (1 + z (1 - s)); exp(-z) for 1 - s
    for (size_t i = 0; i < n; i++) {
        const double z = gate[i], e = exp(-z), s = 1 / (1 + e);
        gref[i] = (float)((double)dout[i] * up[i] * s * (1 + z * e * s));
        gref[n + i] = (float)((double)dout[i] * silu_d(z));
    }
    // silu' crosses zero at z ~ -1.28, where 1 + z (1 - s) cancels: there the error is
    // absolute (~ulp of |dout up s|), hence the backward tolerance with its absolute floor
    EXPECT_CLOSE("swiglu_backward dgate vs closed form", g, gref, n, TOL_BWD_ATOL, TOL_BWD_RTOL);
    EXPECT_CLOSE("swiglu_backward dup vs closed form", g + n, gref + n, n, 1e-12, TOL_FWD_RTOL);
    double *p = to_double(gu, 2 * n), *dd = to_double(dout, n);
    SwiCtx c = {n, dd};
    fd_check("swiglu_backward dgate", swiglu_loss, &c, p, 0, n, g, 24);
    fd_check("swiglu_backward dup", swiglu_loss, &c, p, n, n, g + n, 25);
    // accumulate, and NULL means "not needed"
    float *g2 = xmalloc(2 * n * sizeof(float));
    memcpy(g2, g, 2 * n * sizeof(float));
    swiglu_backward(g, NULL, dout, gate, up, n);
    swiglu_backward(NULL, g + n, dout, gate, up, n);
    int ok = 1;
    for (size_t i = 0; i < 2 * n; i++) ok &= g[i] == 2 * g2[i];
    EXPECT(ok, "swiglu_backward accumulates; a NULL gradient is skipped");
    free(gu); free(out); free(ref); free(dout); free(g); free(gref); free(p); free(dd); free(g2);
}

// ---- Grouped-query attention

typedef struct {
    size_t B, T, NH, NKV, HS;
    const double *dout;  // the loss is sum(dout * out)
} GqaCtx;

// docs/llama.md 3.4 in double: query head h reads kv head h / (NH/NKV), causal softmax of
// q.k / sqrt(HS), then p.v; out (B,T,NH*HS).
static void gqa_ref(double *out, const double *qkv, const GqaCtx *c) {
    const size_t G = c->NH / c->NKV, QKV = (c->NH + 2 * c->NKV) * c->HS, CQ = c->NH * c->HS;
    double *s = xmalloc(c->T * sizeof *s);
    for (size_t b = 0; b < c->B; b++)
        for (size_t h = 0; h < c->NH; h++)
            for (size_t t = 0; t < c->T; t++) {
                const double *q = qkv + (b * c->T + t) * QKV + h * c->HS;
                double mx = -INFINITY, sum = 0;
                for (size_t j = 0; j <= t; j++) {
                    const double *k = qkv + (b * c->T + j) * QKV + CQ + (h / G) * c->HS;
                    double d = 0;
                    for (size_t i = 0; i < c->HS; i++) d += q[i] * k[i];
                    s[j] = d / sqrt((double)c->HS);
                    mx = fmax(mx, s[j]);
                }
                for (size_t j = 0; j <= t; j++) sum += s[j] = exp(s[j] - mx);
                double *o = out + (b * c->T + t) * CQ + h * c->HS;
                for (size_t i = 0; i < c->HS; i++) o[i] = 0;
                for (size_t j = 0; j <= t; j++) {
                    const double *v = qkv + (b * c->T + j) * QKV + CQ + (c->NKV + h / G) * c->HS;
                    for (size_t i = 0; i < c->HS; i++) o[i] += s[j] / sum * v[i];
                }
            }
    free(s);
}

static double gqa_loss(const double *p, const void *ctx) {
    const GqaCtx *c = ctx;
    const size_t n = c->B * c->T * c->NH * c->HS;
    double *o = xmalloc(n * sizeof *o), loss = 0;
    gqa_ref(o, p, c);
    for (size_t i = 0; i < n; i++) loss += c->dout[i] * o[i];
    free(o);
    return loss;
}

// The kernels on a fused qkv (B,T,(NH+2*NKV)*HS): q, k, v are column ranges of one row.
static void gqa_fused_forward(float *out, float *att, const float *qkv, size_t B, size_t T,
                              size_t NH, size_t NKV, size_t HS) {
    const size_t QKV = (NH + 2 * NKV) * HS, CQ = NH * HS, CKV = NKV * HS;
    attention_gqa_forward(out, att, qkv, qkv + CQ, qkv + CQ + CKV, QKV, QKV, B, T, NH, NKV, HS, 0, NULL,
                          false);
}

static void gqa_fused_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                               const float *att, size_t B, size_t T, size_t NH, size_t NKV,
                               size_t HS) {
    const size_t QKV = (NH + 2 * NKV) * HS, CQ = NH * HS, CKV = NKV * HS;
    attention_gqa_backward(dqkv, dqkv + CQ, dqkv + CQ + CKV, datt, dout, qkv, qkv + CQ,
                           qkv + CQ + CKV, att, QKV, QKV, B, T, NH, NKV, HS, false);
}

// T > 512 runs the kernels' causal blocks of 64 rows (a partial last one at T = 550).
static void test_gqa_case(size_t NH, size_t NKV, size_t T, size_t B, size_t HS) {
    const size_t CQ = NH * HS, QKV = (NH + 2 * NKV) * HS;
    const size_t nqkv = B * T * QKV, nout = B * T * CQ, natt = B * NH * T * T;
    float *qkv = xmalloc(nqkv * sizeof(float)), *out = xmalloc(nout * sizeof(float));
    float *att = xmalloc(natt * sizeof(float)), *datt = xmalloc(natt * sizeof(float));
    float *dout = xmalloc(nout * sizeof(float)), *dqkv = xcalloc(nqkv, sizeof(float));
    float *ref = xmalloc(nout * sizeof(float));
    fill(qkv, nqkv, 1.0f, 0.0f, 31 + NKV);
    fill(dout, nout, 1.0f, 0.0f, 41 + NKV);
    double *p = to_double(qkv, nqkv), *dd = to_double(dout, nout), *od = xmalloc(nout * sizeof *od);
    GqaCtx c = {B, T, NH, NKV, HS, dd};
    gqa_ref(od, p, &c);
    for (size_t i = 0; i < nout; i++) ref[i] = (float)od[i];
    gqa_fused_forward(out, att, qkv, B, T, NH, NKV, HS);
    char what[100];
    // the tolerance of test_ops.c's attention check: fp32 products over HS and T terms
    snprintf(what, sizeof what, "attention_gqa_forward NH %zu NKV %zu T %zu vs double", NH, NKV, T);
    EXPECT_CLOSE(what, out, ref, nout, 1e-6, 1e-5);
    gqa_fused_backward(dqkv, datt, dout, qkv, att, B, T, NH, NKV, HS);
    snprintf(what, sizeof what, "attention_gqa_backward NH %zu NKV %zu T %zu", NH, NKV, T);
    fd_check(what, gqa_loss, &c, p, 0, nqkv, dqkv, 51 + NKV);
    // every kv column gets gradient (a wrong group mapping leaves some at zero)
    const size_t kv0 = (B * T - 1) * QKV + CQ;  // last row, first k column
    snprintf(what, sizeof what, "attention_gqa_backward NH %zu NKV %zu: last kv head has gradient", NH, NKV);
    EXPECT(dqkv[kv0 + (NKV - 1) * HS] != 0 || dqkv[kv0 + (2 * NKV - 1) * HS] != 0, "%s", what);
    free(qkv); free(out); free(att); free(datt); free(dout); free(dqkv); free(ref); free(p);
    free(dd); free(od);
}

static void test_gqa(void) {
    test_gqa_case(4, 2, 7, 2, 8);  // llama_tied, qwen2, mistral fixtures
    test_gqa_case(4, 1, 7, 2, 8);  // multi-query (llama_untied)
    test_gqa_case(6, 3, 7, 2, 8);
    test_gqa_case(2, 1, 550, 1, 4);  // causal blocks of 64 rows, the last one partial
    // packing: one row holding two sequences (positions restart) == each sequence alone
    enum { L1 = 4, L2 = 5, T = L1 + L2 };
    const size_t NH = 4, NKV = 2, HS = 8, QKV = (NH + 2 * NKV) * HS, CQ = NH * HS;
    const int pos[T] = {0, 1, 2, 3, 0, 1, 2, 3, 4};
    float *qkv = xmalloc(T * QKV * sizeof(float)), *dout = xmalloc(T * CQ * sizeof(float));
    float *o1 = xmalloc(T * CQ * sizeof(float)), *o2 = xmalloc(T * CQ * sizeof(float));
    float *a1 = xmalloc(NH * T * T * sizeof(float)), *s1 = xmalloc(NH * T * T * sizeof(float));
    float *d1 = xcalloc(T * QKV, sizeof(float)), *d2 = xcalloc(T * QKV, sizeof(float));
    fill(qkv, T * QKV, 1.0f, 0.0f, 61);
    fill(dout, T * CQ, 1.0f, 0.0f, 62);
    const size_t CKV = NKV * HS;
    attention_gqa_forward(o1, a1, qkv, qkv + CQ, qkv + CQ + CKV, QKV, QKV, 1, T, NH, NKV, HS, 0, pos, false);
    attention_gqa_backward(d1, d1 + CQ, d1 + CQ + CKV, s1, dout, qkv, qkv + CQ, qkv + CQ + CKV, a1, QKV, QKV,
                           1, T, NH, NKV, HS, false);
    for (size_t part = 0; part < 2; part++) {  // each sequence on its own, written in place
        const size_t r0 = part ? L1 : 0, len = part ? L2 : L1;
        const float *x = qkv + r0 * QKV;
        float *d = d2 + r0 * QKV;
        gqa_fused_forward(o2 + r0 * CQ, a1, x, 1, len, NH, NKV, HS);
        gqa_fused_backward(d, s1, dout + r0 * CQ, x, a1, 1, len, NH, NKV, HS);
    }
    // the same dot products and sums, the packed ones preceded by exact zeros: equal but for
    // the order of sgemm's tiles; 1e-6 is ~10 ulp of these O(1) values
    EXPECT_CLOSE("attention_gqa_forward, two packed sequences == each alone", o1, o2, T * CQ, 1e-6, 1e-6);
    EXPECT_CLOSE("attention_gqa_backward, two packed sequences == each alone", d1, d2, T * QKV, 1e-6, 1e-6);
    // no probability crosses from one sequence to the other (a1 was reused above: again)
    attention_gqa_forward(o1, a1, qkv, qkv + CQ, qkv + CQ + CKV, QKV, QKV, 1, T, NH, NKV, HS, 0, pos, false);
    bool blocked = true;
    for (size_t h = 0; h < NH; h++)
        for (size_t t = L1; t < T; t++)
            for (size_t j = 0; j < L1; j++) blocked &= a1[(h * T + t) * T + j] == 0.0f;
    EXPECT(blocked, "packed attention: the second sequence gives the first one's keys probability 0");
    free(qkv); free(dout); free(o1); free(o2); free(a1); free(s1); free(d1); free(d2);
}

// ---- End to end: two LLaMA blocks of tests/ref/llama/llama_tied built from these kernels

// llama_tied/config.json: H 64, I 96, nh 4, nkv 2, hd 16, eps 1e-5, theta 10000, L 2.
enum { EH = 64, EI = 96, ENH = 4, ENKV = 2, EHS = 16, EL = 2, EQKV = (ENH + 2 * ENKV) * EHS };

static float *load_f32(const SafeTensors *st, const char *name, size_t n) {
    const StTensor *t = st_find(st, name);
    CHECK(t && t->n_elements == n);
    float *x = xmalloc(n * sizeof(float));
    Error err = {0};
    CHECK(st_read_f32(st, t, x, &err));
    return x;
}

// out (N, ld) columns [0, OC) = x (N, K) W^T with W (OC, K), accumulated in double.
static void linear(float *out, size_t ld, const float *x, const float *W, size_t N, size_t K, size_t OC) {
    for (size_t r = 0; r < N; r++)
        for (size_t o = 0; o < OC; o++) {
            double acc = 0;
            for (size_t i = 0; i < K; i++) acc += (double)x[r * K + i] * W[o * K + i];
            out[r * ld + o] = (float)acc;
        }
}

// x (B,T,H) += one decoder layer (docs/llama.md 3.1), with the ops under test
static void llama_block(float *x, const SafeTensors *st, int l, size_t B, size_t T, const float *ct,
                        const float *st_) {
    const size_t N = B * T;
    char key[120];
    float *a = xmalloc(N * EH * sizeof(float)), *qkv = xmalloc(N * EQKV * sizeof(float));
    float *att = xmalloc(B * ENH * T * T * sizeof(float)), *o = xmalloc(N * EH * sizeof(float));
    float *gate = xmalloc(N * EI * sizeof(float)), *up = xmalloc(N * EI * sizeof(float));
    static const char *const PROJ[3] = {"q_proj", "k_proj", "v_proj"};
    static const size_t COL[3] = {0, ENH * EHS, (ENH + ENKV) * EHS};
    static const size_t ROWS[3] = {ENH * EHS, ENKV * EHS, ENKV * EHS};
    snprintf(key, sizeof key, "model.layers.%d.input_layernorm.weight", l);
    float *w = load_f32(st, key, EH);
    rmsnorm_forward(a, NULL, x, w, N, EH, 1e-5f);
    free(w);
    for (int p = 0; p < 3; p++) {
        snprintf(key, sizeof key, "model.layers.%d.self_attn.%s.weight", l, PROJ[p]);
        w = load_f32(st, key, ROWS[p] * EH);
        linear(qkv + COL[p], EQKV, a, w, N, EH, ROWS[p]);
        free(w);
    }
    rope_forward(qkv, ct, st_, B, T, ENH, EHS, EQKV, NULL);
    rope_forward(qkv + ENH * EHS, ct, st_, B, T, ENKV, EHS, EQKV, NULL);
    gqa_fused_forward(a, att, qkv, B, T, ENH, ENKV, EHS);
    snprintf(key, sizeof key, "model.layers.%d.self_attn.o_proj.weight", l);
    w = load_f32(st, key, EH * ENH * EHS);
    linear(o, EH, a, w, N, ENH * EHS, EH);
    free(w);
    add_inplace(x, o, N * EH);
    snprintf(key, sizeof key, "model.layers.%d.post_attention_layernorm.weight", l);
    w = load_f32(st, key, EH);
    rmsnorm_forward(a, NULL, x, w, N, EH, 1e-5f);
    free(w);
    snprintf(key, sizeof key, "model.layers.%d.mlp.gate_proj.weight", l);
    w = load_f32(st, key, EI * EH);
    linear(gate, EI, a, w, N, EH, EI);
    free(w);
    snprintf(key, sizeof key, "model.layers.%d.mlp.up_proj.weight", l);
    w = load_f32(st, key, EI * EH);
    linear(up, EI, a, w, N, EH, EI);
    free(w);
    swiglu_forward(gate, gate, up, N * EI);
    snprintf(key, sizeof key, "model.layers.%d.mlp.down_proj.weight", l);
    w = load_f32(st, key, EH * EI);
    linear(o, EH, gate, w, N, EI, EH);
    free(w);
    add_inplace(x, o, N * EH);
    free(a); free(qkv); free(att); free(o); free(gate); free(up);
}

static void test_llama_tied_blocks(void) {
    SafeTensors model, ref;
    Error err = {0};
    if (!st_open(&model, "tests/ref/llama/llama_tied/model.safetensors", &err) ||
        !st_open(&ref, "tests/ref/llama/llama_tied_ref.safetensors", &err)) {
        EXPECT(0, "open the llama_tied fixtures: %s", err.msg);
        return;
    }
    const StTensor *h0 = st_find(&ref, "hidden_states.0");
    CHECK(h0 && h0->ndim == 3 && h0->shape[2] == EH);
    const size_t B = h0->shape[0], T = h0->shape[1], n = B * T * EH;
    float *x = load_f32(&ref, "hidden_states.0", n), *ct = xmalloc(T * EHS / 2 * sizeof(float));
    float *st_ = xmalloc(T * EHS / 2 * sizeof(float));
    rope_tables(ct, st_, T, EHS, 10000.0f);
    // fp32 blocks vs transformers' fp32 blocks: same math, different summation orders (our
    // linears sum in double). Measured max abs err 2.1e-6 on values of order 1; 1e-5 +
    // 1e-4 relative leaves ~5x headroom, while theta 20000 instead of 10000 gives 0.25 and
    // eps 1e-3 instead of 1e-5 gives 0.03 (both tried), so a wrong pair, group or norm fails
    for (int l = 0; l < EL; l++) {
        llama_block(x, &model, l, B, T, ct, st_);
        char key[40], what[120];
        if (l == EL - 1) {  // hidden_states.L is taken after the final norm
            float *w = load_f32(&model, "model.norm.weight", EH);
            rmsnorm_forward(x, NULL, x, w, B * T, EH, 1e-5f);
            free(w);
        }
        snprintf(key, sizeof key, "hidden_states.%d", l + 1);
        float *want = load_f32(&ref, key, n);
        snprintf(what, sizeof what, "llama_tied layer %d from these kernels vs transformers' %s", l, key);
        EXPECT_CLOSE(what, x, want, n, 1e-5, 1e-4);
        free(want);
    }
    free(x); free(ct); free(st_);
    st_close(&model);
    st_close(&ref);
}

int main(void) {
    test_rmsnorm_forward();
    test_rmsnorm_backward();
    test_rope();
    test_swiglu();
    test_gqa();
    test_llama_tied_blocks();
    return test_summary("test_llama_ops");
}
