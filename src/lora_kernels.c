// lora_kernels.c: see lora_kernels.h. Two vector primitives do all the work:
//   dots:  out[q] = sum_i M[q][i] v[i]     (r dot products sharing one activation row)
//   axpys: y[i] += sum_q c[q] M[q][i]       (a row of y updated from r rows of M)
// Both walk i in 16-float vectors (AVX-512 where the build has it, plain C otherwise).
// The reference for both functions is lora.c's lora_forward_ref / lora_backward_ref
// (general matrix products); tests/test_lora_kernels.c holds them together.
#include "lora_kernels.h"

#include <omp.h>
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

void lora_kernel_forward(const float *A, const float *B, size_t r, size_t in, size_t out,
                         float scaling, const float *x, size_t N, float *h, float *y) {
    float *Bt = scratch(r * out);
    transpose_b(B, r, out, Bt);
    #pragma omp parallel for schedule(static) if (N > 1)
    for (size_t n = 0; n < N; n++) {
        float hn[256], c[256];  // r <= 256 per pass (larger ranks: in chunks below)
        for (size_t q0 = 0; q0 < r; q0 += 256) {
            const size_t rb = r - q0 < 256 ? r - q0 : 256;
            dots(A + q0 * in, in, rb, x + n * in, in, hn);
            for (size_t q = 0; q < rb; q++) {
                h[(q0 + q) * N + n] = hn[q];
                c[q] = scaling * hn[q];
            }
            axpys(Bt + q0 * out, out, rb, c, out, y + n * out);
        }
    }
}

// One block of tokens [n0, n1) of the backward: dh, dx, and this block's partial sums
// pA (r,in) = sum_n dh[:,n] x[n,:] and pB (r,out) = sum_n h[:,n] dy[n,:] (overwritten), each
// row of them one axpys over the block's rows of x or dy.
static void backward_block(const float *A, const float *Bt, size_t r, size_t in, size_t out,
                           float scaling, const float *x, const float *dy, const float *h,
                           size_t N, size_t n0, size_t n1, float *dh, float *dx, float *pA,
                           float *pB) {
    float t[256];
    for (size_t n = n0; n < n1; n++)
        for (size_t q0 = 0; q0 < r; q0 += 256) {
            const size_t rb = r - q0 < 256 ? r - q0 : 256;
            dots(Bt + q0 * out, out, rb, dy + n * out, out, t);
            for (size_t q = 0; q < rb; q++) t[q] *= scaling;
            for (size_t q = 0; q < rb; q++) dh[(q0 + q) * N + n] = t[q];
            if (dx) axpys(A + q0 * in, in, rb, t, in, dx + n * in);
        }
    memset(pA, 0, r * in * sizeof(float));
    memset(pB, 0, r * out * sizeof(float));
    for (size_t q = 0; q < r; q++) {  // h and dh rows are contiguous in n
        axpys(x + n0 * in, in, n1 - n0, dh + q * N + n0, in, pA + q * in);
        axpys(dy + n0 * out, out, n1 - n0, h + q * N + n0, out, pB + q * out);
    }
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
