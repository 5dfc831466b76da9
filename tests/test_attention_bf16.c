// test_attention_bf16.c: causal attention with its products in bf16 (ops.h, bf16 = true: the
// scores q k^T, P v and the backward's dP = dO v^T, dV += P^T dO, dQ += dS k, dK += dS^T q
// through bgemm_batch) against the fp32 attention on the same random inputs, every element
// within a bound derived from bf16's input rounding (below); that the bf16 path is really
// taken (somewhere the difference exceeds what fp32 summation alone could explain); and that
// its results do not depend on the thread count. Grouped heads (NKV < NH), GPT-2's fused
// wrappers (NKV == NH) and T > 512 (causal blocks of 64 rows) are covered. Without bf16
// instructions every check is a counted skip.
//
// The bounds, u = 2^-24, rb = 2^-7 + 2^-16, g(K) = (K + 3) u (Higham 3.1, as test_bgemm.c):
// - one product over K terms: the bf16 one is within (rb + g(K)(1 + rb)) sum |a b| of the exact
//   product of the fp32 inputs (each input rounded by at most 2^-8 relative, products exact in
//   fp32, fp32 sums: test_bgemm.c's bound (b)), the fp32 one within g(K) sum |a b|, so the two
//   differ by at most e(K) sum |a b|, e(K) = rb + g(K)(2 + rb).
// - forward: the scores of a row differ by at most d = scale e(HS) max_j sum_c |q_c k_jc|; a
//   softmax moves by a factor within exp(+-2d) when every score moves by at most d, and each
//   path's fp32 softmax is within r = 16 u of its exact value (exp to 2 ulp, the sum in double,
//   a division and a product), so |P' - P| <= p P with p = exp(2d)(1 + r)^2 - 1. Then
//   |out' - out| <= (p + (rb + g(T)(1 + rb))(1 + p) + g(T)) sum_j P_j |v_j|.
// - backward, given the same P (att) on both paths: dP within E1 = e(HS) sum_c |dO_c v_jc|;
//   the softmax backward dS = scale P (dP - sum_l P_l dP_l) within
//   ES = scale P (E1 + sum_l P_l E1_l) + 2 * 8 u scale P (|dP| + sum_l P_l |dP_l|) (its own
//   fp32 roundings on each path; the dot in double); dV (same P and dO on both paths) within
//   e(G T) sum |P dO| (a kv head sums G query heads' products: G T terms); dQ within
//   sum_j ES_j |k_j| (1 + rb) + e(T) sum_j (|dS_j| + ES_j) |k_j|, dK the same over G T terms.
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#include "bgemm.h"
#include "ops.h"
#include "test.h"
#include "util.h"

#define U 0x1p-24
#define RB (0x1p-7 + 0x1p-16)

static double gam(size_t K) { return (double)(K + 3) * U; }
static double e_prod(size_t K) { return RB + gam(K) * (2 + RB); }

typedef struct {
    size_t B, T, NH, NKV, HS;
} Shape;

// One run of attention on a fused qkv (B,T,(NH+2NKV)HS): out, att, and the gradient dqkv of
// sum(dout * out) (given att from the forward, or from `att_in` when not NULL).
typedef struct {
    float *out, *att, *datt, *dqkv;
} Run;

static void run_attention(Run *r, const Shape *s, const float *qkv, const float *dout, const float *att_in,
                          bool bf16) {
    const size_t CQ = s->NH * s->HS, CKV = s->NKV * s->HS, QKV = CQ + 2 * CKV;
    const size_t B = s->B, T = s->T;
    memset(r->dqkv, 0, B * T * QKV * sizeof(float));
    if (s->NKV == s->NH) {  // GPT-2's wrappers
        attention_forward(r->out, r->att, qkv, B, T, CQ, s->NH, NULL, bf16);
        attention_backward(r->dqkv, r->datt, dout, qkv, att_in ? att_in : r->att, B, T, CQ, s->NH, bf16);
    } else {
        attention_gqa_forward(r->out, r->att, qkv, qkv + CQ, qkv + CQ + CKV, QKV, QKV, B, T, s->NH, s->NKV,
                              s->HS, 0, NULL, bf16);
        attention_gqa_backward(r->dqkv, r->dqkv + CQ, r->dqkv + CQ + CKV, r->datt, dout, qkv, qkv + CQ,
                               qkv + CQ + CKV, att_in ? att_in : r->att, QKV, QKV, B, T, s->NH, s->NKV, s->HS,
                               bf16);
    }
}

static void run_alloc(Run *r, const Shape *s) {
    const size_t N = s->B * s->T, QKV = (s->NH + 2 * s->NKV) * s->HS, natt = s->B * s->NH * s->T * s->T;
    r->out = xmalloc(N * s->NH * s->HS * sizeof(float));
    r->att = xmalloc(natt * sizeof(float));
    r->datt = xmalloc(natt * sizeof(float));
    r->dqkv = xmalloc(N * QKV * sizeof(float));
}

static void run_free(Run *r) { free(r->out), free(r->att), free(r->datt), free(r->dqkv); }

// Element tallies: how many lie outside their bound, the worst ratio to the bound, and the
// largest ratio of the difference to the fp32-only bound (> 1: bf16 rounding at work).
typedef struct {
    size_t bad, n;
    double worst, beyond_fp32;
} Tally;

static void tally(Tally *t, double got, double want, double bound, double fp32_bound) {
    const double d = fabs(got - want), q = d / (bound + 1e-30), f = d / (fp32_bound + 1e-30);
    t->bad += !(q <= 1.0);
    t->n++;
    t->worst = q > t->worst ? q : t->worst;
    t->beyond_fp32 = f > t->beyond_fp32 ? f : t->beyond_fp32;
}

// Element accessors of the fused layout.
typedef struct {
    const Shape *s;
    size_t G, CQ, CKV, QKV;
} Lay;
static size_t qi(const Lay *l, size_t b, size_t t, size_t h, size_t c) { return (b * l->s->T + t) * l->QKV + h * l->s->HS + c; }
static size_t ki(const Lay *l, size_t b, size_t t, size_t g, size_t c) { return qi(l, b, t, 0, c) + l->CQ + g * l->s->HS; }
static size_t vi(const Lay *l, size_t b, size_t t, size_t g, size_t c) { return ki(l, b, t, g, c) + l->CKV; }
static size_t ai(const Lay *l, size_t b, size_t h, size_t i, size_t j) { return ((b * l->s->NH + h) * l->s->T + i) * l->s->T + j; }

// Forward: att and out of the bf16 run (x) against the fp32 run (f), as derived above.
static void check_forward(const Shape *s, const float *qkv, const Run *x, const Run *f, Tally *ta, Tally *to) {
    const Lay l = {s, s->NH / s->NKV, s->NH * s->HS, s->NKV * s->HS, (s->NH + 2 * s->NKV) * s->HS};
    const double scale = 1.0 / sqrt((double)s->HS), r = 16 * U;
    for (size_t b = 0; b < s->B; b++)
        for (size_t h = 0; h < s->NH; h++)
            for (size_t i = 0; i < s->T; i++) {
                const size_t g = h / l.G;
                double m = 0;
                for (size_t j = 0; j <= i; j++) {
                    double sa = 0;
                    for (size_t c = 0; c < s->HS; c++) sa += fabs((double)qkv[qi(&l, b, i, h, c)] * qkv[ki(&l, b, j, g, c)]);
                    m = sa > m ? sa : m;
                }
                const double d = scale * e_prod(s->HS) * m, p = exp(2 * d) * (1 + r) * (1 + r) - 1;
                for (size_t j = 0; j <= i; j++) {
                    const double P = f->att[ai(&l, b, h, i, j)];
                    tally(ta, x->att[ai(&l, b, h, i, j)], P, p * P, 2 * r * P);
                }
                for (size_t c = 0; c < s->HS; c++) {
                    double pv = 0;
                    for (size_t j = 0; j <= i; j++) pv += f->att[ai(&l, b, h, i, j)] * fabs(qkv[vi(&l, b, j, g, c)]);
                    const double bound = (p + (RB + gam(s->T) * (1 + RB)) * (1 + p) + gam(s->T)) * pv;
                    const size_t o = (b * s->T + i) * l.CQ + h * s->HS + c;
                    tally(to, x->out[o], f->out[o], bound, (2 * gam(s->T) + 2 * r) * pv);
                }
            }
}

// Per (b, h, i, j): dP's bound E1, |dP|, dS and ES (the backward's bounds above), in double
// from the fp32 inputs and P. Arrays of att's size.
static void score_grad_bounds(const Lay *l, const float *qkv, const float *dout, const float *att, double *E1,
                              double *adP, double *dS, double *ES) {
    const Shape *s = l->s;
    const double scale = 1.0 / sqrt((double)s->HS);
    for (size_t b = 0; b < s->B; b++)
        for (size_t h = 0; h < s->NH; h++)
            for (size_t i = 0; i < s->T; i++) {
                double dot = 0, pe = 0, pa = 0;
                for (size_t j = 0; j <= i; j++) {
                    double dp = 0, sa = 0;
                    for (size_t c = 0; c < s->HS; c++) {
                        const double t = (double)dout[(b * s->T + i) * l->CQ + h * s->HS + c] * qkv[vi(l, b, j, h / l->G, c)];
                        dp += t, sa += fabs(t);
                    }
                    const size_t a = ai(l, b, h, i, j);
                    E1[a] = e_prod(s->HS) * sa, adP[a] = fabs(dp), dS[a] = dp;
                    dot += att[a] * dp, pe += att[a] * E1[a], pa += att[a] * fabs(dp);
                }
                for (size_t j = 0; j <= i; j++) {
                    const size_t a = ai(l, b, h, i, j);
                    dS[a] = scale * att[a] * (dS[a] - dot);
                    ES[a] = scale * att[a] * (E1[a] + pe) + 16 * U * scale * att[a] * (adP[a] + pa);
                }
            }
}

// Backward, both runs given the fp32 run's att: every element of dqkv (x: bf16, f: fp32).
static void check_backward(const Shape *s, const float *qkv, const float *dout, const float *att, const Run *x,
                           const Run *f, Tally *t) {
    const Lay l = {s, s->NH / s->NKV, s->NH * s->HS, s->NKV * s->HS, (s->NH + 2 * s->NKV) * s->HS};
    const size_t natt = s->B * s->NH * s->T * s->T, T = s->T, GT = l.G * T;
    double *E1 = xcalloc(natt, sizeof *E1), *adP = xcalloc(natt, sizeof *adP);
    double *dS = xcalloc(natt, sizeof *dS), *ES = xcalloc(natt, sizeof *ES);
    score_grad_bounds(&l, qkv, dout, att, E1, adP, dS, ES);
    for (size_t b = 0; b < s->B; b++)
        for (size_t c = 0; c < s->HS; c++) {
            for (size_t h = 0; h < s->NH; h++)  // dq_h row i: sum over keys j <= i
                for (size_t i = 0; i < T; i++) {
                    double se = 0, sd = 0;
                    for (size_t j = 0; j <= i; j++) {
                        const double k = fabs(qkv[ki(&l, b, j, h / l.G, c)]);
                        se += ES[ai(&l, b, h, i, j)] * k, sd += fabs(dS[ai(&l, b, h, i, j)]) * k;
                    }
                    const size_t o = qi(&l, b, i, h, c);
                    tally(t, x->dqkv[o], f->dqkv[o], se * (1 + RB) + e_prod(T) * (sd + se), 2 * gam(T) * sd);
                }
            for (size_t g = 0; g < s->NKV; g++)  // dk_g, dv_g row j: the group's heads, queries i >= j
                for (size_t j = 0; j < T; j++) {
                    double se = 0, sd = 0, spv = 0;
                    for (size_t h = g * l.G; h < (g + 1) * l.G; h++)
                        for (size_t i = j; i < T; i++) {
                            const size_t a = ai(&l, b, h, i, j);
                            const double q = fabs(qkv[qi(&l, b, i, h, c)]);
                            se += ES[a] * q, sd += fabs(dS[a]) * q;
                            spv += att[a] * fabs(dout[(b * T + i) * l.CQ + h * s->HS + c]);
                        }
                    const size_t ok = ki(&l, b, j, g, c), ov = vi(&l, b, j, g, c);
                    tally(t, x->dqkv[ok], f->dqkv[ok], se * (1 + RB) + e_prod(GT) * (sd + se), 2 * gam(GT) * sd);
                    tally(t, x->dqkv[ov], f->dqkv[ov], e_prod(GT) * spv, 2 * gam(GT) * spv);
                }
        }
    free(E1), free(adP), free(dS), free(ES);
}

static void fill(float *x, size_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&r);
}

static void test_case(const Shape *s, uint64_t seed) {
    const size_t N = s->B * s->T, QKV = (s->NH + 2 * s->NKV) * s->HS, CQ = s->NH * s->HS;
    const size_t natt = s->B * s->NH * s->T * s->T;
    float *qkv = xmalloc(N * QKV * sizeof(float)), *dout = xmalloc(N * CQ * sizeof(float));
    fill(qkv, N * QKV, seed);
    fill(dout, N * CQ, seed + 1);
    Run f, x, x1;
    run_alloc(&f, s), run_alloc(&x, s), run_alloc(&x1, s);
    run_attention(&f, s, qkv, dout, NULL, false);
    run_attention(&x, s, qkv, dout, NULL, true);  // its forward; its backward is redone below
    Tally ta = {0}, to = {0}, td = {0};
    check_forward(s, qkv, &x, &f, &ta, &to);
    run_attention(&x, s, qkv, dout, f.att, true);  // backward from the fp32 probabilities
    check_backward(s, qkv, dout, f.att, &x, &f, &td);
    char what[160];
    snprintf(what, sizeof what, "NH %zu NKV %zu HS %zu T %zu B %zu%s", s->NH, s->NKV, s->HS, s->T, s->B,
             s->NH == s->NKV ? " (GPT-2's wrappers)" : "");
    EXPECT(ta.bad == 0 && to.bad == 0, "bf16 attention forward, %s: att %zu of %zu, out %zu of %zu outside the "
           "bound (worst %.3f, %.3f of it)", what, ta.bad, ta.n, to.bad, to.n, ta.worst, to.worst);
    EXPECT(td.bad == 0, "bf16 attention backward, %s: dqkv %zu of %zu outside the bound (worst %.3f of it)",
           what, td.bad, td.n, td.worst);
    EXPECT(to.beyond_fp32 > 1 && td.beyond_fp32 > 1, "bf16 attention, %s, takes the bf16 path: out and dqkv "
           "differ from fp32 by up to %.1f and %.1f times fp32's own summation bound", what, to.beyond_fp32,
           td.beyond_fp32);
    // the same with one thread: bit for bit (each product whole on one thread)
    const int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    run_attention(&x1, s, qkv, dout, f.att, true);
    omp_set_num_threads(nt);
    EXPECT(memcmp(x.dqkv, x1.dqkv, N * QKV * sizeof(float)) == 0 && memcmp(x.att, x1.att, natt * sizeof(float)) == 0 &&
               memcmp(x.out, x1.out, N * CQ * sizeof(float)) == 0,
           "bf16 attention, %s: 1 and %d threads bit-identical", what, nt);
    run_free(&f), run_free(&x), run_free(&x1);
    free(qkv), free(dout);
}

int main(void) {
    static const Shape shapes[] = {
        {2, 70, 4, 2, 16},  // grouped heads, T off every tile size
        {3, 33, 3, 3, 64},  // GPT-2's head size, its fused wrappers
        {1, 550, 2, 1, 8},  // multi-query, causal blocks of 64 rows (the last one partial)
    };
    const size_t n = sizeof shapes / sizeof shapes[0];
    if (!bgemm_available()) {
        SKIP(4 * (int)n, "no bf16 instructions (AVX512-BF16 or AMX): attention stays fp32 here");
        return test_summary("test_attention_bf16");
    }
    printf("bf16 products: %s\n", bgemm_isa_name(bgemm_isa()));
    for (size_t i = 0; i < n; i++) test_case(&shapes[i], 10 + 10 * i);
    return test_summary("test_attention_bf16");
}
