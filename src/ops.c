// ops.c: see ops.h. B batch, T time, C channels, NH heads, HS head size, V vocab, N = B*T.
#include "ops.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bgemm.h"
#include "gemm.h"
#include "util.h"

#include <omp.h>

#define GELU_SCALE 0.7978845608028654f  // sqrt(2/pi)

// exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 split in two parts so
// the reduction is exact), exp(r) = 1 + r + r^2 P(r) on |r| <= ln2/2 (Cephes expf).
// Rounding uses the 1.5 * 2^23 trick instead of rintf so the function inlines into SIMD.
static inline float exp_kernel(float x) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    const float shift = 12582912.0f;  // 1.5 * 2^23
    float n = (x * 1.44269504088896341f + shift) - shift;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    // NaN input: p is already NaN; n is replaced by 0 so that the float->int conversion and
    // the shift below stay defined (a NaN n would give INT_MIN, and a negative left shift)
    n = n == n ? n : 0.0f;
    uint32_t e = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, sizeof scale);
    return p * scale;
}

float ops_exp(float x) { return exp_kernel(x); }


void embedding_forward(float *out, const int *tokens, const float *wte, const float *wpe,
                       size_t B, size_t T, size_t C, const int *pos) {
    #pragma omp parallel for schedule(static)
    for (size_t bt = 0; bt < B * T; bt++) {
        const size_t p = pos ? (size_t)pos[bt] : bt % T;
        const float *e = wte + (size_t)tokens[bt] * C, *pe = wpe + p * C;
        float *o = out + bt * C;
        for (size_t i = 0; i < C; i++) o[i] = e[i] + pe[i];
    }
}

void embedding_backward(float *dwte, float *dwpe, const float *dout, const int *tokens,
                        size_t B, size_t T, size_t C, const int *pos) {
    // One writer per element: each thread owns a block of 64 channels and streams the rows
    // in a fixed order (deterministic even when the same token repeats).
    const size_t n_blocks = (C + 63) / 64;
    #pragma omp parallel for schedule(static)
    for (size_t cb = 0; cb < n_blocks; cb++) {
        const size_t i0 = cb * 64, i1 = i0 + 64 < C ? i0 + 64 : C;
        for (size_t bt = 0; bt < B * T; bt++) {
            const float *g = dout + bt * C;
            if (dwte) {
                float *w = dwte + (size_t)tokens[bt] * C;
                for (size_t i = i0; i < i1; i++) w[i] += g[i];
            }
            if (dwpe) {
                float *p = dwpe + (pos ? (size_t)pos[bt] : bt % T) * C;
                for (size_t i = i0; i < i1; i++) p[i] += g[i];
            }
        }
    }
}

// Row statistics in double: variance of activations with large means loses digits in f32.
static void row_stats(const float *x, size_t C, float eps, float *mean_out, float *rstd_out) {
    double s = 0, ss = 0;
    for (size_t i = 0; i < C; i++) s += x[i];
    double m = s / (double)C;
    for (size_t i = 0; i < C; i++) {
        double d = x[i] - m;
        ss += d * d;
    }
    *mean_out = (float)m;
    *rstd_out = (float)(1.0 / sqrt(ss / (double)C + eps));
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *w, const float *b, size_t N, size_t C, float eps) {
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < N; r++) {
        const float *x = inp + r * C;
        float *o = out + r * C;
        float m, s;
        row_stats(x, C, eps, &m, &s);
        for (size_t i = 0; i < C; i++) o[i] = (x[i] - m) * s * w[i] + b[i];
        if (mean) mean[r] = m;
        if (rstd) rstd[r] = s;
    }
}

void layernorm_forward_ref(float *out, float *mean, float *rstd, const float *inp,
                           const float *w, const float *b, size_t N, size_t C, float eps) {
    for (size_t r = 0; r < N; r++) {
        double s = 0, ss = 0;
        for (size_t i = 0; i < C; i++) s += inp[r * C + i];
        double m = s / (double)C;
        for (size_t i = 0; i < C; i++) ss += (inp[r * C + i] - m) * (inp[r * C + i] - m);
        double rs = 1.0 / sqrt(ss / (double)C + eps);
        for (size_t i = 0; i < C; i++)
            out[r * C + i] = (float)((inp[r * C + i] - m) * rs * w[i] + b[i]);
        if (mean) mean[r] = (float)m;
        if (rstd) rstd[r] = (float)rs;
    }
}

// Column sums of a row-major (N, OC) matrix added into out (OC): each thread owns a block
// of 64 columns and streams the rows (contiguous reads, one writer per element, a fixed
// summation order). Used for bias and LayerNorm parameter gradients.
#define COLSUM_BLOCK 64
static void colsum_accumulate(float *out, const float *x, size_t N, size_t OC) {
    const size_t n_blocks = (OC + COLSUM_BLOCK - 1) / COLSUM_BLOCK;
    #pragma omp parallel for schedule(static)
    for (size_t cb = 0; cb < n_blocks; cb++) {
        const size_t j0 = cb * COLSUM_BLOCK, j1 = j0 + COLSUM_BLOCK < OC ? j0 + COLSUM_BLOCK : OC;
        double acc[COLSUM_BLOCK] = {0};
        for (size_t r = 0; r < N; r++) {
            const float *row = x + r * OC;
            for (size_t j = j0; j < j1; j++) acc[j - j0] += row[j];
        }
        for (size_t j = j0; j < j1; j++) out[j] += (float)acc[j - j0];
    }
}

void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, size_t N, size_t C) {
    // dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout * w
    if (dinp) {
        #pragma omp parallel for schedule(static)
        for (size_t r = 0; r < N; r++) {
            const float *x = inp + r * C, *g = dout + r * C;
            const float m = mean[r], s = rstd[r];
            double sum_d = 0, sum_dx = 0;
            for (size_t i = 0; i < C; i++) {
                float xhat = (x[i] - m) * s, d = g[i] * w[i];
                sum_d += d;
                sum_dx += (double)d * xhat;
            }
            const float mean_d = (float)(sum_d / (double)C), mean_dx = (float)(sum_dx / (double)C);
            float *dx = dinp + r * C;
            for (size_t i = 0; i < C; i++) {
                float xhat = (x[i] - m) * s;
                dx[i] += s * (g[i] * w[i] - mean_d - xhat * mean_dx);
            }
        }
    }
    if (dw || db) {  // column sums of dout * xhat and dout, streamed row by row
        const size_t n_blocks = (C + COLSUM_BLOCK - 1) / COLSUM_BLOCK;
        #pragma omp parallel for schedule(static)
        for (size_t cb = 0; cb < n_blocks; cb++) {
            const size_t j0 = cb * COLSUM_BLOCK, j1 = j0 + COLSUM_BLOCK < C ? j0 + COLSUM_BLOCK : C;
            double gw[COLSUM_BLOCK] = {0}, gb[COLSUM_BLOCK] = {0};
            for (size_t r = 0; r < N; r++) {
                const float *x = inp + r * C, *g = dout + r * C;
                for (size_t i = j0; i < j1; i++) {
                    gw[i - j0] += (double)g[i] * ((x[i] - mean[r]) * rstd[r]);
                    gb[i - j0] += g[i];
                }
            }
            for (size_t i = j0; i < j1; i++) {
                if (dw) dw[i] += (float)gw[i - j0];
                if (db) db[i] += (float)gb[i - j0];
            }
        }
    }
}

// gelu_new through the logistic function: 0.5 (1 + tanh u) = s = 1 / (1 + exp(-2u)), so
// gelu(x) = x s with no cancellation in either tail (0.5 x (1 + tanhf(u)) loses digits for
// x << 0), and 1 - tanh^2 = 4 s (1 - s) with 1 - s = s exp(-2u).
void gelu_forward(float *out, const float *inp, size_t n) {
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float x = inp[i], u = GELU_SCALE * (x + 0.044715f * x * x * x);
        out[i] = x / (1.0f + exp_kernel(-2.0f * u));
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float x = inp[i], u = GELU_SCALE * (x + 0.044715f * x * x * x);
        const float e = exp_kernel(-2.0f * u), s = 1.0f / (1.0f + e);
        // d/dx [x s(2u)] = s + x * 2 s (1 - s) * du/dx, du/dx = GELU_SCALE (1 + 3 * 0.044715 x^2)
        const float g = s + 2.0f * x * s * (e * s) * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += g * dout[i];
    }
}

void zero_floats(float *x, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i += 4096) memset(x + i, 0, (n - i < 4096 ? n - i : 4096) * sizeof(float));
}

void add_inplace(float *out, const float *a, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] += a[i];
}

void bias_add(float *out, const float *bias, size_t N, size_t OC) {
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < N; r++)
        for (size_t j = 0; j < OC; j++) out[r * OC + j] += bias[j];
}

void bias_backward(float *dbias, const float *dout, size_t N, size_t OC) {
    colsum_accumulate(dbias, dout, N, OC);
}

// Pointers to each (sequence b, head h) item of a batched product: base + b*sb + h*sh.
static void head_ptrs(const float **out, const float *base, size_t B, size_t NH, size_t sb, size_t sh) {
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < NH; h++) out[b * NH + h] = base + b * sb + h * sh;
}

void attention_forward(float *out, float *att, const float *qkv, size_t B, size_t T, size_t C,
                       size_t NH, const int *pos, bool bf16) {
    attention_gqa_forward(out, att, qkv, qkv + C, qkv + 2 * C, 3 * C, 3 * C, B, T, NH, NH, C / NH, 0, pos,
                          bf16);
}

void attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                        const float *att, size_t B, size_t T, size_t C, size_t NH, bool bf16) {
    attention_gqa_backward(dqkv, dqkv + C, dqkv + 2 * C, datt, dout, qkv, qkv + C, qkv + 2 * C, att, 3 * C,
                           3 * C, B, T, NH, NH, C / NH, bf16);
}

double softmax_xent(float *logits, const int *targets, size_t n, size_t V, float dlogits_scale,
                    size_t *n_valid) {
    // Per-thread partial sums added in thread order: with a static schedule the result is
    // bitwise reproducible for a given thread count (an OpenMP float reduction is not).
    enum { MAX_PARTS = 256 };
    double part_loss[MAX_PARTS] = {0};
    size_t part_count[MAX_PARTS] = {0};
    int n_parts = 1;
    #pragma omp parallel
    {
        const int tid = omp_get_thread_num();
        #pragma omp single
        n_parts = omp_get_num_threads();
        #pragma omp for schedule(static)
        for (size_t r = 0; r < n; r++) {
            float *l = logits + r * V;
            const int tgt = targets[r];
            if (tgt < 0) {
                if (dlogits_scale != 0.0f) memset(l, 0, V * sizeof(float));
                continue;
            }
            float mx = -INFINITY;
            #pragma omp simd reduction(max : mx)
            for (size_t j = 0; j < V; j++) mx = l[j] > mx ? l[j] : mx;  // not fmaxf: a libm call here
            const float l_tgt = l[tgt];
            float sum = 0;  // one float accumulator per SIMD lane, then combined
            if (dlogits_scale != 0.0f) {
                // keep exp(l - max) in place: the gradient is then one multiply away
                #pragma omp simd reduction(+ : sum)
                for (size_t j = 0; j < V; j++) {
                    l[j] = exp_kernel(l[j] - mx);
                    sum += l[j];
                }
                const float f = dlogits_scale / sum;  // softmax = exp(l - max) / sum
                #pragma omp simd
                for (size_t j = 0; j < V; j++) l[j] *= f;
                l[tgt] -= dlogits_scale;
            } else {
                #pragma omp simd reduction(+ : sum)
                for (size_t j = 0; j < V; j++) sum += exp_kernel(l[j] - mx);
            }
            const double lse = mx + log((double)sum);
            if (tid < MAX_PARTS) {
                part_loss[tid] += lse - l_tgt;
                part_count[tid]++;
            }
        }
    }
    CHECK(n_parts <= MAX_PARTS);
    double total = 0;
    for (int i = 0; i < n_parts; i++) {
        total += part_loss[i];
        *n_valid += part_count[i];
    }
    return total;
}

// ---- LLaMA-family kernels (docs/llama.md, section 3) ----

// 1/sqrt(mean(x^2) + eps) of one row, the sum of squares in double (a long f32 sum of
// squares loses digits; transformers' f32 mean agrees to about 1 ulp).
static float rms_rstd(const float *x, size_t C, float eps) {
    double ss = 0;
    for (size_t i = 0; i < C; i++) ss += (double)x[i] * x[i];
    return (float)(1.0 / sqrt(ss / (double)C + eps));
}

void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, size_t N, size_t C,
                     float eps) {
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < N; r++) {
        const float *xr = x + r * C;
        float *o = out + r * C;
        const float s = rms_rstd(xr, C, eps);
        // w * (x * rstd), in that order: transformers rounds the normalized value before the
        // weight multiply (a no-op cast in fp32, but the same two roundings)
        #pragma omp simd
        for (size_t i = 0; i < C; i++) o[i] = w[i] * (xr[i] * s);
        if (rstd) rstd[r] = s;
    }
}

void rmsnorm_forward_ref(float *out, float *rstd, const float *x, const float *w, size_t N,
                         size_t C, float eps) {
    for (size_t r = 0; r < N; r++) {
        double ss = 0;
        for (size_t i = 0; i < C; i++) ss += (double)x[r * C + i] * x[r * C + i];
        const double s = 1.0 / sqrt(ss / (double)C + eps);
        for (size_t i = 0; i < C; i++) out[r * C + i] = (float)(w[i] * (x[r * C + i] * s));
        if (rstd) rstd[r] = (float)s;
    }
}

void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, size_t N, size_t C) {
    // dx = rstd * (g - n * mean(g n)), g = w dout, n = x rstd (the mean of g n in double)
    if (dx) {
        #pragma omp parallel for schedule(static)
        for (size_t r = 0; r < N; r++) {
            const float *xr = x + r * C, *g = dout + r * C;
            const float s = rstd[r];
            double sum_gn = 0;
            for (size_t i = 0; i < C; i++) sum_gn += (double)(g[i] * w[i]) * (xr[i] * s);
            const float mean_gn = (float)(sum_gn / (double)C);
            float *d = dx + r * C;
            for (size_t i = 0; i < C; i++) d[i] += s * (g[i] * w[i] - xr[i] * s * mean_gn);
        }
    }
    if (dw) {  // column sums of dout * n: each thread owns a block of columns (one writer)
        const size_t n_blocks = (C + COLSUM_BLOCK - 1) / COLSUM_BLOCK;
        #pragma omp parallel for schedule(static)
        for (size_t cb = 0; cb < n_blocks; cb++) {
            const size_t j0 = cb * COLSUM_BLOCK, j1 = j0 + COLSUM_BLOCK < C ? j0 + COLSUM_BLOCK : C;
            double acc[COLSUM_BLOCK] = {0};
            for (size_t r = 0; r < N; r++) {
                const float *xr = x + r * C, *g = dout + r * C;
                for (size_t i = j0; i < j1; i++) acc[i - j0] += (double)g[i] * (xr[i] * rstd[r]);
            }
            for (size_t i = j0; i < j1; i++) dw[i] += (float)acc[i - j0];
        }
    }
}

void rope_tables(float *cos_tab, float *sin_tab, size_t T, size_t HS, float theta) {
    CHECK(HS % 2 == 0);
    const size_t half = HS / 2;
    for (size_t i = 0; i < half; i++) {
        // transformers: 1.0 / theta ** (arange(0, hd, 2).float() / hd), each step in fp32
        const float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)HS);
        for (size_t t = 0; t < T; t++) {
            const float angle = (float)t * inv_freq;  // one fp32 product, as transformers
            cos_tab[t * half + i] = cosf(angle);
            sin_tab[t * half + i] = sinf(angle);
        }
    }
}

// Rotates every head vector of x by +angle (sign = 1) or -angle (sign = -1).
static void rope_rotate(float *x, const float *cos_tab, const float *sin_tab, size_t B, size_t T,
                        size_t NH, size_t HS, size_t row_stride, const int *pos, float sign) {
    const size_t half = HS / 2;
    #pragma omp parallel for schedule(static)
    for (size_t bt = 0; bt < B * T; bt++) {
        const size_t p = pos ? (size_t)pos[bt] : bt % T;
        const float *c = cos_tab + p * half, *s = sin_tab + p * half;
        for (size_t h = 0; h < NH; h++) {
            float *v = x + bt * row_stride + h * HS;
            #pragma omp simd
            for (size_t i = 0; i < half; i++) {
                const float a = v[i], b = v[i + half], si = sign * s[i];
                v[i] = a * c[i] - b * si;
                v[i + half] = b * c[i] + a * si;
            }
        }
    }
}

void rope_forward(float *x, const float *cos_tab, const float *sin_tab, size_t B, size_t T,
                  size_t NH, size_t HS, size_t row_stride, const int *pos) {
    rope_rotate(x, cos_tab, sin_tab, B, T, NH, HS, row_stride, pos, 1.0f);
}

void rope_backward(float *dx, const float *cos_tab, const float *sin_tab, size_t B, size_t T,
                   size_t NH, size_t HS, size_t row_stride, const int *pos) {
    // the Jacobian of a rotation is the rotation; its transpose rotates by -angle
    rope_rotate(dx, cos_tab, sin_tab, B, T, NH, HS, row_stride, pos, -1.0f);
}

// silu(z) = z * sigmoid(z) = z / (1 + exp(-z)): no cancellation in either tail; exp_kernel's
// clamp gives exp(-z) <= exp(87) for z << 0, so silu -> z * 1.6e-38 ~ 0, never inf/inf.
void swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float z = gate[i];
        out[i] = z / (1.0f + exp_kernel(-z)) * up[i];
    }
}

void swiglu_forward_ref(float *out, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n) {
    if (dgate) {
        #pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < n; i++) {
            // 1 - s = e s with e = exp(-z): no cancellation when s rounds to 1 (z >> 0)
            const float z = gate[i], e = exp_kernel(-z), s = 1.0f / (1.0f + e);
            dgate[i] += dout[i] * up[i] * (s * (1.0f + z * (e * s)));
        }
    }
    if (dup) {
        #pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < n; i++) {
            const float z = gate[i];
            dup[i] += dout[i] * (z / (1.0f + exp_kernel(-z)));
        }
    }
}

// Item (b, h) of a grouped batch, h over the NH query heads: base + b*sb + (h/G)*HS, the kv
// head that query head h reads.
static void kv_head_ptrs(const float **out, const float *base, size_t B, size_t NH, size_t G,
                         size_t sb, size_t HS) {
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < NH; h++) out[b * NH + h] = base + b * sb + (h / G) * HS;
}

// Item (b, g), g over the NKV kv heads: base + b*sb + (g*G + j)*sh, query head j of group g.
static void group_slot_ptrs(const float **out, const float *base, size_t B, size_t NKV, size_t G,
                            size_t j, size_t sb, size_t sh) {
    for (size_t b = 0; b < B; b++)
        for (size_t g = 0; g < NKV; g++) out[b * NKV + g] = base + b * sb + (g * G + j) * sh;
}

// The first key row `row` of a (B, NH, T, T) score array may see: the oldest key inside the
// window (W > 0), and with pos the first token of the row's packed sequence (t - pos[b*T + t]).
static size_t first_key(size_t row, size_t T, size_t NH, size_t window, const int *pos) {
    const size_t t = row % T;
    size_t j0 = window && t + 1 > window ? t + 1 - window : 0;
    if (pos) {
        const size_t start = t - (size_t)pos[row / (NH * T) * T + t];
        j0 = start > j0 ? start : j0;
    }
    return j0;
}

// Causal softmax of every row of att (B*NH rows of T per (b, h), row r at position r % T), in
// place, over keys first_key..t; the same steps as the reference's, every other entry set to an
// exact zero.
static void causal_softmax_rows(float *att, size_t B, size_t NH, size_t T, size_t window, const int *pos) {
    #pragma omp parallel for schedule(static)
    for (size_t row = 0; row < B * NH * T; row++) {
        const size_t t = row % T, j0 = first_key(row, T, NH, window, pos);
        float *r = att + row * T;
        float mx = -INFINITY;
        for (size_t j = j0; j <= t; j++) mx = r[j] > mx ? r[j] : mx;  // not fmaxf: a libm call here
        #pragma omp simd
        for (size_t j = j0; j <= t; j++) r[j] = exp_kernel(r[j] - mx);
        double sum = 0;
        for (size_t j = j0; j <= t; j++) sum += r[j];
        const float inv = (float)(1.0 / sum);
        for (size_t j = j0; j <= t; j++) r[j] *= inv;
        for (size_t j = 0; j < j0; j++) r[j] = 0.0f;
        for (size_t j = t + 1; j < T; j++) r[j] = 0.0f;
    }
}

// Long sequences run causal attention's products in blocks of ATT_BLOCK query rows (or key
// columns): the scores of rows [r0, r1) need keys [0, r1) only, the rest of the row being
// masked, so the products skip the upper triangle's blocks (about half the work). Measured on
// the lent 16-core machine (docs/performance.md): GPT-2 at T = 1024 1.46x faster per step in
// bf16, at T = 256 slower (the blocks' smaller products repack the keys once per block), so
// sequences up to ATT_BLOCK_MIN_T run unblocked, as one block.
#define ATT_BLOCK 64
#define ATT_BLOCK_MIN_T 512

// Rows per causal block for sequences of T.
static size_t att_block(size_t T) { return T > ATT_BLOCK_MIN_T ? ATT_BLOCK : T; }

// out[i] = in[i] + off for the n items of a batch: the same block of every item.
static void shift_ptrs(const float **out, const float *const *in, size_t n, size_t off) {
    for (size_t i = 0; i < n; i++) out[i] = in[i] + off;
}

// One of attention's batched products, C[i] = alpha op(A[i]) op(B[i]) + beta C[i] over n
// items (op: "nt", "nn" or "tn", as matmul_batch), whose M = T output rows are cut into causal
// blocks [r0, r1) (att_block); the keys it runs over shrink with the block:
typedef enum {
    ATT_COLS_UPTO,  // N = r1 columns (keys [0, r1): scores, dP; the rest of the row is masked)
    ATT_SUM_UPTO,   // K = r1 (keys [0, r1): P v, dS k; later keys have probability 0)
    ATT_SUM_FROM,   // K = T - r0 from row r0 of op(B) (queries t >= r0: P^T dO, dS^T q; earlier
                    // queries have zeros in these keys' columns)
} AttCut;
typedef struct {
    const char *op;
    AttCut cut;
    size_t n, dim;  // items; the size that is not cut (HS: K for ATT_COLS_UPTO, else N)
    const float *const *C, *const *A, *const *B;  // the items' whole (T-row) operands
    size_t ldc, lda, ldb;
    float alpha, beta;
} AttProduct;

// Runs p block by block, in bf16 (matmul_batch_bf16: inputs rounded, fp32 sums) or fp32
// (matmul_batch); sp: scratch for 3 n item pointers.
static void att_product(const AttProduct *p, size_t T, bool bf16, const float **sp) {
    const bool ta = p->op[0] == 't', tb = p->op[1] == 't';
    const size_t n = p->n, blk = att_block(T);
    const float **c = sp, **a = sp + n, **b = sp + 2 * n;
    for (size_t r0 = 0; r0 < T; r0 += blk) {
        const size_t r1 = r0 + blk < T ? r0 + blk : T, k0 = p->cut == ATT_SUM_FROM ? r0 : 0;
        const size_t N = p->cut == ATT_COLS_UPTO ? r1 : p->dim;
        const size_t K = p->cut == ATT_COLS_UPTO ? p->dim : p->cut == ATT_SUM_UPTO ? r1 : T - r0;
        shift_ptrs(c, p->C, n, r0 * p->ldc);                                   // rows r0..
        shift_ptrs(a, p->A, n, ta ? r0 + k0 * p->lda : r0 * p->lda + k0);     // op(A) rows r0.., k0..
        shift_ptrs(b, p->B, n, tb ? k0 : k0 * p->ldb);                         // op(B) rows k0..
        (bf16 ? matmul_batch_bf16 : matmul_batch)(p->op, n, (float *const *)c, a, b, r1 - r0, N, K, p->alpha,
                                                  p->beta, p->lda, p->ldb, p->ldc);
    }
}

void attention_gqa_forward(float *out, float *att, const float *q, const float *k, const float *v,
                           size_t ldq, size_t ldkv, size_t B, size_t T, size_t NH, size_t NKV,
                           size_t HS, size_t window, const int *pos, bool bf16) {
    CHECK(NKV > 0 && NH % NKV == 0);
    const size_t G = NH / NKV, CQ = NH * HS, n = B * NH;
    const float scale = 1.0f / sqrtf((float)HS);
    const bool b16 = bf16 && bgemm_available();
    const float **qp = xmalloc(8 * n * sizeof *qp), **kp = qp + n, **vp = qp + 2 * n, **a = qp + 3 * n;
    const float **o = qp + 4 * n, **sp = qp + 5 * n;  // sp: 3n, a block's operands
    head_ptrs(qp, q, B, NH, T * ldq, HS);
    kv_head_ptrs(kp, k, B, NH, G, T * ldkv, HS);
    kv_head_ptrs(vp, v, B, NH, G, T * ldkv, HS);
    head_ptrs(a, att, B, NH, NH * T * T, T * T);
    head_ptrs(o, out, B, NH, T * CQ, HS);
    // scores = scale * q_h k_{h/G}^T; several items read one k (reads only). Columns past a
    // block's keys are left as they are: the softmax zeroes them.
    att_product(&(AttProduct){"nt", ATT_COLS_UPTO, n, HS, a, qp, kp, T, ldq, ldkv, scale, 0.0f}, T, b16, sp);
    causal_softmax_rows(att, B, NH, T, window, pos);
    // out_h = P_h v_{h/G}
    att_product(&(AttProduct){"nn", ATT_SUM_UPTO, n, HS, o, a, vp, CQ, T, ldkv, 1.0f, 0.0f}, T, b16, sp);
    free(qp);
}

// softmax backward in place on datt: dS = P * (dP - sum_j P dP) * scale, zeros above the diagonal
static void causal_softmax_backward_rows(float *datt, const float *att, size_t n_rows, size_t T,
                                         float scale) {
    #pragma omp parallel for schedule(static)
    for (size_t row = 0; row < n_rows; row++) {
        const size_t t = row % T;
        const float *pr = att + row * T;
        float *d = datt + row * T;
        double dot = 0;
        for (size_t j = 0; j <= t; j++) dot += (double)pr[j] * d[j];
        for (size_t j = 0; j <= t; j++) d[j] = pr[j] * (d[j] - (float)dot) * scale;
        for (size_t j = t + 1; j < T; j++) d[j] = 0.0f;
    }
}

// dkv (one kv head per item) += sum over the group slots j of P_h^T D_h, P the probabilities
// (or score gradients) att and D = dsrc (row stride ld_src) of the slot's query heads, summing
// in each key block rows t >= the block's first key only (earlier rows have zeros in those
// columns). sA, sB: m item pointers each; sp: 3m.
static void gqa_key_grads(const float *const *dkv, const float **sA, const float **sB, const float **sp,
                          const float *att, const float *dsrc, size_t ld_src, size_t sb_src, size_t ldkv,
                          size_t B, size_t T, size_t NH, size_t NKV, size_t HS, bool bf16) {
    const size_t G = NH / NKV, m = B * NKV;
    for (size_t j = 0; j < G; j++) {  // items of one call write distinct kv heads
        group_slot_ptrs(sA, att, B, NKV, G, j, NH * T * T, T * T);
        group_slot_ptrs(sB, dsrc, B, NKV, G, j, sb_src, HS);
        att_product(&(AttProduct){"tn", ATT_SUM_FROM, m, HS, dkv, sA, sB, ldkv, T, ld_src, 1.0f, 1.0f}, T,
                    bf16, sp);
    }
}

void attention_gqa_backward(float *dq, float *dk, float *dv, float *datt, const float *dout,
                            const float *q, const float *k, const float *v, const float *att,
                            size_t ldq, size_t ldkv, size_t B, size_t T, size_t NH, size_t NKV,
                            size_t HS, bool bf16) {
    CHECK(NKV > 0 && NH % NKV == 0);
    const size_t G = NH / NKV, CQ = NH * HS, n = B * NH, m = B * NKV;
    const float scale = 1.0f / sqrtf((float)HS);
    const bool b16 = bf16 && bgemm_available();
    const float **p = xmalloc((8 * n + 3 * m) * sizeof *p);
    const float **kp = p, **vp = p + n, **dA = p + 2 * n, **dO = p + 3 * n, **dqp = p + 4 * n;
    const float **sp = p + 5 * n;  // 3n: a block's operands
    const float **dkv = p + 8 * n, **sA = dkv + m, **sB = sA + m;
    kv_head_ptrs(kp, k, B, NH, G, T * ldkv, HS);
    kv_head_ptrs(vp, v, B, NH, G, T * ldkv, HS);
    head_ptrs(dA, datt, B, NH, NH * T * T, T * T);
    head_ptrs(dO, dout, B, NH, T * CQ, HS);
    head_ptrs(dqp, dq, B, NH, T * ldq, HS);
    // dP = dout_h v_{h/G}^T (masked past each row's keys)
    att_product(&(AttProduct){"nt", ATT_COLS_UPTO, n, HS, dA, dO, vp, T, CQ, ldkv, 1.0f, 0.0f}, T, b16, sp);
    // dv_g += sum over the group's query heads of P_h^T dout_h
    head_ptrs(dkv, dv, B, NKV, T * ldkv, HS);
    gqa_key_grads(dkv, sA, sB, sp, att, dout, CQ, T * CQ, ldkv, B, T, NH, NKV, HS, b16);
    causal_softmax_backward_rows(datt, att, B * NH * T, T, scale);
    // dq_h += dS_h k_{h/G}
    att_product(&(AttProduct){"nn", ATT_SUM_UPTO, n, HS, dqp, dA, kp, ldq, T, ldkv, 1.0f, 1.0f}, T, b16, sp);
    // dk_g += sum over slots of dS_h^T q_h
    head_ptrs(dkv, dk, B, NKV, T * ldkv, HS);
    gqa_key_grads(dkv, sA, sB, sp, datt, q, ldq, T * ldq, ldkv, B, T, NH, NKV, HS, b16);
    free(p);
}
