// lora_kernels.c: see lora_kernels.h. Two vector primitives do all the work:
//   dots:  out[q] = sum_i M[q][i] v[i]     (r dot products sharing one activation row)
//   axpys: y[i] += sum_q c[q] M[q][i]       (a row of y updated from r rows of M)
// Both walk i in 16-float vectors (AVX-512 where the build has it, plain C otherwise).
// The reference for both functions is lora.c's lora_forward_ref / lora_backward_ref
// (general matrix products); tests/test_lora_kernels.c holds them together.
#include "lora_kernels.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

enum {
    TB = 64,  // tokens per backward block: the partial sums of dA and dB are per block
    RB = 8,   // rows of M per pass of dots (8 accumulators)
};

// out[q] = sum_i M[q * ldm + i] v[i] for q < r, i < n. Overwrites out.
static void dots(const float *M, size_t ldm, size_t r, const float *v, size_t n, float *out) {
    for (size_t q0 = 0; q0 < r; q0 += RB) {
        const size_t rb = r - q0 < RB ? r - q0 : RB;
#if defined(__AVX512F__)
        __m512 acc[RB];
        for (size_t q = 0; q < rb; q++) acc[q] = _mm512_setzero_ps();
        for (size_t i = 0; i < n; i += 16) {
            const __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
            const __m512 x = _mm512_maskz_loadu_ps(m, v + i);
            for (size_t q = 0; q < rb; q++)
                acc[q] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, M + (q0 + q) * ldm + i), x, acc[q]);
        }
        for (size_t q = 0; q < rb; q++) out[q0 + q] = _mm512_reduce_add_ps(acc[q]);
#else
        for (size_t q = 0; q < rb; q++) {
            float s = 0.0f;
            for (size_t i = 0; i < n; i++) s += M[(q0 + q) * ldm + i] * v[i];
            out[q0 + q] = s;
        }
#endif
    }
}

// y[i] += sum_q c[q] M[q * ldm + i] for i < n, q < r (q in order). Accumulates into y.
static void axpys(const float *M, size_t ldm, size_t r, const float *c, size_t n, float *y) {
#if defined(__AVX512F__)
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 acc = _mm512_maskz_loadu_ps(m, y + i);
        for (size_t q = 0; q < r; q++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(c[q]), _mm512_maskz_loadu_ps(m, M + q * ldm + i), acc);
        _mm512_mask_storeu_ps(y + i, m, acc);
    }
#else
    for (size_t i = 0; i < n; i++) {
        float s = y[i];
        for (size_t q = 0; q < r; q++) s += c[q] * M[q * ldm + i];
        y[i] = s;
    }
#endif
}

#if defined(__AVX512F__)
// dots for 4 activation rows at once: out[t * r + q] = sum_i M[q][i] v[t * ldv + i], t < 4.
// Each M vector loaded serves 4 rows and each activation vector 4 rows of M (16 named
// accumulators), instead of one load per multiply-add. Per (t, q) the same operations in the
// same order as dots, so both give the same bits.
static void dots4(const float *M, size_t ldm, size_t r, const float *v, size_t ldv, size_t n, float *out) {
    for (size_t q0 = 0; q0 < r; q0 += 4) {
        const size_t rb = r - q0 < 4 ? r - q0 : 4;
        const float *m0 = M + q0 * ldm, *m1 = rb > 1 ? m0 + ldm : m0, *m2 = rb > 2 ? m0 + 2 * ldm : m0;
        const float *m3 = rb > 3 ? m0 + 3 * ldm : m0;
#define Z4(t) __m512 a##t##0 = _mm512_setzero_ps(), a##t##1 = a##t##0, a##t##2 = a##t##0, a##t##3 = a##t##0
        Z4(0); Z4(1); Z4(2); Z4(3);
#undef Z4
        for (size_t i = 0; i < n; i += 16) {
            const __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
            const __m512 w0 = _mm512_maskz_loadu_ps(k, m0 + i), w1 = _mm512_maskz_loadu_ps(k, m1 + i);
            const __m512 w2 = _mm512_maskz_loadu_ps(k, m2 + i), w3 = _mm512_maskz_loadu_ps(k, m3 + i);
#define ROW(t)                                                       \
    do {                                                             \
        const __m512 x = _mm512_maskz_loadu_ps(k, v + (t) * ldv + i); \
        a##t##0 = _mm512_fmadd_ps(w0, x, a##t##0);                   \
        a##t##1 = _mm512_fmadd_ps(w1, x, a##t##1);                   \
        a##t##2 = _mm512_fmadd_ps(w2, x, a##t##2);                   \
        a##t##3 = _mm512_fmadd_ps(w3, x, a##t##3);                   \
    } while (0)
            ROW(0); ROW(1); ROW(2); ROW(3);
#undef ROW
        }
        const __m512 acc[4][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13},
                                  {a20, a21, a22, a23}, {a30, a31, a32, a33}};
        for (size_t t = 0; t < 4; t++)
            for (size_t q = 0; q < rb; q++) out[t * r + q0 + q] = _mm512_reduce_add_ps(acc[t][q]);
    }
}

// axpys for 4 rows of y at once: y[t * ldy + i] += sum_q c[t * ldc + q] M[q][i], t < 4; the
// same operations per row as axpys.
static void axpys4(const float *M, size_t ldm, size_t r, const float *c, size_t ldc, size_t n,
                   float *y, size_t ldy) {
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 y0 = _mm512_maskz_loadu_ps(k, y + i), y1 = _mm512_maskz_loadu_ps(k, y + ldy + i);
        __m512 y2 = _mm512_maskz_loadu_ps(k, y + 2 * ldy + i), y3 = _mm512_maskz_loadu_ps(k, y + 3 * ldy + i);
        for (size_t q = 0; q < r; q++) {
            const __m512 w = _mm512_maskz_loadu_ps(k, M + q * ldm + i);
            y0 = _mm512_fmadd_ps(_mm512_set1_ps(c[q]), w, y0);
            y1 = _mm512_fmadd_ps(_mm512_set1_ps(c[ldc + q]), w, y1);
            y2 = _mm512_fmadd_ps(_mm512_set1_ps(c[2 * ldc + q]), w, y2);
            y3 = _mm512_fmadd_ps(_mm512_set1_ps(c[3 * ldc + q]), w, y3);
        }
        _mm512_mask_storeu_ps(y + i, k, y0);
        _mm512_mask_storeu_ps(y + ldy + i, k, y1);
        _mm512_mask_storeu_ps(y + 2 * ldy + i, k, y2);
        _mm512_mask_storeu_ps(y + 3 * ldy + i, k, y3);
    }
}
#endif

// Bt (r,out) = B^T, so that axpys and dots read B's columns as rows. Overwrites Bt.
static void transpose_b(const float *B, size_t r, size_t out, float *Bt) {
    for (size_t o = 0; o < out; o++)
        for (size_t q = 0; q < r; q++) Bt[q * out + o] = B[o * r + q];
}

// Grow-only scratch kept for the process (callers are single-threaded by contract).
static float *scratch_buf;
static size_t scratch_floats;
static float *scratch(size_t floats) {
    if (scratch_floats < floats) {
        free(scratch_buf);
        scratch_buf = xmalloc_aligned(floats * sizeof(float));
        scratch_floats = floats;
    }
    return scratch_buf;
}

// Tokens [n0, n1) of the forward (n1 - n0 <= 4; 4 at a time where the build has AVX-512).
// r <= 256 (the caller splits larger ranks).
static void forward_tokens(const float *A, const float *Bt, size_t r, size_t in, size_t out,
                           float scaling, const float *x, size_t N, size_t n0, size_t n1,
                           float *h, float *y) {
    float hn[4 * 256], c[4 * 256];
#if defined(__AVX512F__)
    if (n1 - n0 == 4) {
        dots4(A, in, r, x + n0 * in, in, in, hn);
        for (size_t t = 0; t < 4; t++)
            for (size_t q = 0; q < r; q++) {
                h[q * N + n0 + t] = hn[t * r + q];
                c[t * r + q] = scaling * hn[t * r + q];
            }
        axpys4(Bt, out, r, c, r, out, y + n0 * out, out);
        return;
    }
#endif
    for (size_t n = n0; n < n1; n++) {
        dots(A, in, r, x + n * in, in, hn);
        for (size_t q = 0; q < r; q++) {
            h[q * N + n] = hn[q];
            c[q] = scaling * hn[q];
        }
        axpys(Bt, out, r, c, out, y + n * out);
    }
}

void lora_kernel_forward(const float *A, const float *B, size_t r, size_t in, size_t out,
                         float scaling, const float *x, size_t N, float *h, float *y) {
    float *Bt = scratch(r * out);
    transpose_b(B, r, out, Bt);
    for (size_t q0 = 0; q0 < r; q0 += 256) {  // ranks above 256 in chunks (h rows q0..)
        const size_t rb = r - q0 < 256 ? r - q0 : 256;
        #pragma omp parallel for schedule(static) if (N > 4)
        for (size_t n0 = 0; n0 < N; n0 += 4)
            forward_tokens(A + q0 * in, Bt + q0 * out, rb, in, out, scaling, x, N, n0,
                           n0 + 4 < N ? n0 + 4 : N, h + q0 * N, y);
    }
}

// dh and dx for tokens [n0, n1), 4 at a time where the build has AVX-512 (r <= 256).
static void backward_tokens(const float *A, const float *Bt, size_t r, size_t in, size_t out,
                            float scaling, const float *dy, size_t N, size_t n0, size_t n1,
                            float *dh, float *dx) {
    float t[4 * 256];
    size_t n = n0;
#if defined(__AVX512F__)
    for (; n + 4 <= n1; n += 4) {
        dots4(Bt, out, r, dy + n * out, out, out, t);
        for (size_t e = 0; e < 4 * r; e++) t[e] *= scaling;
        for (size_t k = 0; k < 4; k++)
            for (size_t q = 0; q < r; q++) dh[q * N + n + k] = t[k * r + q];
        if (dx) axpys4(A, in, r, t, r, in, dx + n * in, in);
    }
#endif
    for (; n < n1; n++) {
        dots(Bt, out, r, dy + n * out, out, t);
        for (size_t q = 0; q < r; q++) t[q] *= scaling;
        for (size_t q = 0; q < r; q++) dh[q * N + n] = t[q];
        if (dx) axpys(A, in, r, t, in, dx + n * in);
    }
}

// pS (r, m) = sum over tokens [n0, n1) of c[q][n] v[n][:] (overwritten), c rows of stride N:
// each row of pS one pass over the block's rows of v, 4 rows at a time where possible.
static void partial_sums(const float *c, size_t N, size_t r, const float *v, size_t m, size_t n0,
                         size_t n1, float *pS) {
    memset(pS, 0, r * m * sizeof(float));
    size_t q = 0;
#if defined(__AVX512F__)
    for (; q + 4 <= r; q += 4) axpys4(v + n0 * m, m, n1 - n0, c + q * N + n0, N, m, pS + q * m, m);
#endif
    for (; q < r; q++) axpys(v + n0 * m, m, n1 - n0, c + q * N + n0, m, pS + q * m);
}

// One block of tokens [n0, n1) of the backward: dh, dx, and this block's partial sums
// pA (r,in) = sum_n dh[:,n] x[n,:] and pB (r,out) = sum_n h[:,n] dy[n,:] (overwritten).
static void backward_block(const float *A, const float *Bt, size_t r, size_t in, size_t out,
                           float scaling, const float *x, const float *dy, const float *h,
                           size_t N, size_t n0, size_t n1, float *dh, float *dx, float *pA,
                           float *pB) {
    for (size_t q0 = 0; q0 < r; q0 += 256)
        backward_tokens(A + q0 * in, Bt + q0 * out, r - q0 < 256 ? r - q0 : 256, in, out, scaling,
                        dy, N, n0, n1, dh + q0 * N, dx);
    partial_sums(dh, N, r, x, in, n0, n1, pA);
    partial_sums(h, N, r, dy, out, n0, n1, pB);
}

// Partial sums per block, grown on demand and kept.
static float *partial_buf;
static size_t partial_floats;

void lora_kernel_backward(const float *A, const float *B, size_t r, size_t in, size_t out,
                          float scaling, const float *x, const float *dy, const float *h,
                          size_t N, float *dh, float *dx, float *dA, float *dB) {
    const size_t nblk = (N + TB - 1) / TB, per = r * (in + out);
    if (partial_floats < nblk * per) {
        free(partial_buf);
        partial_buf = xmalloc_aligned(nblk * per * sizeof(float));
        partial_floats = nblk * per;
    }
    float *Bt = scratch(r * out), *part = partial_buf;
    transpose_b(B, r, out, Bt);
    #pragma omp parallel
    {
        #pragma omp for schedule(static)
        for (size_t b = 0; b < nblk; b++) {
            const size_t n0 = b * TB, n1 = n0 + TB < N ? n0 + TB : N;
            backward_block(A, Bt, r, in, out, scaling, x, dy, h, N, n0, n1, dh, dx,
                           part + b * per, part + b * per + r * in);
        }
        // dA[q][i] += sum over blocks in order; dB[o][q] += scaling * the same for pB
        #pragma omp for schedule(static)
        for (size_t e = 0; e < r * in; e++) {
            float s = 0.0f;
            for (size_t b = 0; b < nblk; b++) s += part[b * per + e];
            dA[e] += s;
        }
        #pragma omp for schedule(static)
        for (size_t e = 0; e < r * out; e++) {  // e = q * out + o
            float s = 0.0f;
            for (size_t b = 0; b < nblk; b++) s += part[b * per + r * in + e];
            dB[(e % out) * r + e / out] += scaling * s;
        }
    }
}
