// explain.c: see explain.h.
#include "explain.h"

#include <math.h>

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
