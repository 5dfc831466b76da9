// explain.c: see explain.h.
#include "explain.h"

#include <math.h>
#include <string.h>

const FloatFormat EXPLAIN_FP32 = {"FP32", 8, 23}, EXPLAIN_FP16 = {"FP16", 5, 10}, EXPLAIN_BF16 = {"BF16", 8, 7};

double explain_round(float x, const FloatFormat *f, uint32_t *bits) {
    const int bias = (1 << (f->exp_bits - 1)) - 1;
    const double maxv = (2.0 - ldexp(1.0, -f->man_bits)) * ldexp(1.0, bias);
    const double minnorm = ldexp(1.0, 1 - bias);
    double a = fabs((double)x);
    uint32_t sign = x < 0 || (x == 0 && signbit(x)) ? 1u : 0u, e, m;
    double v;
    if (a == 0) {
        e = 0, m = 0, v = 0;
    } else if (a >= minnorm) {
        int ex = (int)floor(log2(a));
        double mant = a / ldexp(1.0, ex) - 1.0;  // [0, 1)
        double scaled = nearbyint(mant * ldexp(1.0, f->man_bits));
        if (scaled >= ldexp(1.0, f->man_bits)) scaled = 0, ex++;
        v = (1.0 + scaled / ldexp(1.0, f->man_bits)) * ldexp(1.0, ex);
        if (v > maxv) v = INFINITY;
        e = (uint32_t)(ex + bias), m = (uint32_t)scaled;
    } else {  // subnormal
        double scaled = nearbyint(a / minnorm * ldexp(1.0, f->man_bits));
        v = scaled / ldexp(1.0, f->man_bits) * minnorm;
        e = 0, m = (uint32_t)scaled;
    }
    if (bits) *bits = sign << (f->exp_bits + f->man_bits) | e << f->man_bits | m;
    return sign ? -v : v;
}

void explain_bit_string(uint32_t bits, const FloatFormat *f, char *out) {
    int n = 1 + f->exp_bits + f->man_bits, k = 0;
    for (int i = n - 1; i >= 0; i--) {
        out[k++] = (bits >> i) & 1 ? '1' : '0';
        if (i == n - 1 || i == f->man_bits) out[k++] = ' ';
    }
    out[k] = '\0';
}

double explain_mean_abs_err(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs((double)a[i] - b[i]);
    return s / (double)n;
}

bool explain_quant_stats(QuantStats *st, const float *x, size_t n, QuantType t, size_t bs, bool dq, float *y,
                         const char *label, Error *err) {
    *st = (QuantStats){0};
    if (t == QUANT_INT4) {
        QIntTensor q;
        if (!qint_quantize(&q, x, n, QUANT_INT4, bs, label, err)) return false;
        qint_dequantize(&q, 0, n, y);
        st->bits = 8.0 * (double)(qint_code_bytes(&q) + qint_constant_bytes(&q)) / (double)n;
        qint_free(&q);
    } else {
        Q4Tensor q;
        if (!q4_quantize(&q, x, n, t, bs, dq, label, err)) return false;
        q4_dequantize(&q, 0, n, y);
        st->bits = q4_bits_per_param(&q);
        q4_free(&q);
    }
    double s2 = 0;
    for (size_t i = 0; i < n; i++) s2 += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
    st->mae = explain_mean_abs_err(x, y, n);
    st->rms = sqrt(s2 / (double)n);
    return true;
}

void explain_err_stats(const float *a, const float *b, size_t n, double *mean, double *max) {
    double s = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)a[i] - b[i]);
        s += e;
        m = e > m ? e : m;
    }
    *mean = n ? s / (double)n : 0;
    *max = m;
}

double explain_normal_quantile(double p) {
    double lo = -40, hi = 40;  // Phi(-40) and 1 - Phi(40) are far below any double p in (0, 1)
    for (;;) {
        const double mid = lo + (hi - lo) / 2;
        if (mid <= lo || mid >= hi) break;  // lo and hi are adjacent doubles
        if (0.5 * erfc(-mid / sqrt(2.0)) < p) lo = mid;
        else hi = mid;
    }
    return hi;
}

void explain_nf4_levels(Nf4Levels *out) {
    const double delta = 0.5 * ((1 - 1.0 / 30) + (1 - 1.0 / 32)), top = explain_normal_quantile(delta);
    out->delta = delta;
    int k = 0;
    for (int j = 7; j >= 1; j--, k++) {  // negative side, most negative first
        out->p[k] = 0.5 - j / 7.0 * (delta - 0.5);
        out->q[k] = explain_normal_quantile(out->p[k]);
    }
    out->p[k] = 0.5;
    out->q[k++] = 0;
    for (int i = 1; i <= 8; i++, k++) {
        out->p[k] = 0.5 + i / 8.0 * (delta - 0.5);
        out->q[k] = explain_normal_quantile(out->p[k]);
    }
    for (k = 0; k < 16; k++) out->level[k] = out->q[k] / top;
}

// A code outside [0, 255] as an unsigned byte keeps it: modulo 256.
static float wrap_byte(float v) {
    long i = (long)v % 256;
    return (float)(i < 0 ? i + 256 : i);
}

void explain_int8_block(const float *x, size_t n, bool round_zero, float *scale, float *zero) {
    float mn = 0.0f, mx = 0.0f;  // the range includes 0, as quant.c's
    for (size_t i = 0; i < n; i++) {
        mn = fminf(mn, x[i]);
        mx = fmaxf(mx, x[i]);
    }
    *scale = (mx - mn) / 255.0f;
    const float zf = *scale > 0.0f ? -mn / *scale : 0.0f;
    *zero = fminf(255.0f, fmaxf(0.0f, round_zero ? nearbyintf(zf) : truncf(zf)));
}

void explain_int8_zero_point(const float *x, size_t n, size_t bs, bool round_zero, bool clamp, float *y,
                             uint8_t *codes, Int8Errors *e) {
    memset(e, 0, sizeof *e);
    double sum = 0;
    for (size_t start = 0; start < n; start += bs) {
        const size_t len = n - start < bs ? n - start : bs;
        const float *xb = x + start;
        float scale, z;
        explain_int8_block(xb, len, round_zero, &scale, &z);
        for (size_t i = 0; i < len; i++) {
            float v = scale > 0.0f ? nearbyintf(xb[i] / scale) + z : z;
            if (v < 0.0f || v > 255.0f) {
                if (clamp) e->n_clamped++;
                else e->n_wrapped++;
                v = clamp ? fminf(255.0f, fmaxf(0.0f, v)) : wrap_byte(v);
            }
            if (codes) codes[start + i] = (uint8_t)v;
            y[start + i] = (v - z) * scale;
            const double err = fabs((double)xb[i] - y[start + i]);
            sum += err;
            if (err > e->max_err) e->max_err = err;
            if (scale > 0.0f && err / scale > e->max_steps) e->max_steps = err / scale;
        }
    }
    e->mae = n ? sum / (double)n : 0;
}

void explain_histogram(const float *x, size_t n, double lo, double hi, int bins, double *counts) {
    memset(counts, 0, (size_t)bins * sizeof *counts);
    for (size_t i = 0; i < n; i++) {
        const double f = floor(((double)x[i] - lo) / (hi - lo) * bins);
        const int b = f < 0 ? 0 : f >= bins ? bins - 1 : (int)f;
        counts[b] += 1;
    }
}

void explain_code_counts(const Q4Tensor *q, size_t counts[16]) {
    memset(counts, 0, 16 * sizeof *counts);
    for (size_t i = 0; i < q->n; i++) {
        const uint8_t b = q->codes[i / 2];
        counts[i % 2 == 0 ? b >> 4 : b & 0x0F]++;
    }
}
