// explain.h: the numeric computations behind `qlora explain`'s lesson (src/cmd/explain*.c
// writes them up): rounding a float to a narrower IEEE-style format; the error a quantizer
// makes on an array; the normal quantiles NF4's 16 levels come from; INT8 zero-point
// quantization done right and done wrong (a truncated zero-point, no clamping), to show what
// each mistake costs; histograms and code counts. The quantizers themselves are quant.c's;
// what is here only measures them, or (the deliberate mistakes) shows what they avoid.
// Not here: the text, figures and page (cmd/explain*.c, doc.h), the memory model (memory.h).
#ifndef QLORA_EXPLAIN_H
#define QLORA_EXPLAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quant.h"
#include "util.h"

// An IEEE-754-style binary format: 1 sign bit, exp_bits exponent bits, man_bits mantissa bits.
typedef struct {
    const char *name;
    int exp_bits, man_bits;
} FloatFormat;

extern const FloatFormat EXPLAIN_FP32, EXPLAIN_FP16, EXPLAIN_BF16;

// x rounded to format f (to nearest, ties to even; subnormals kept; overflow to infinity),
// as a double; *bits (if not NULL) receives its pattern, sign | exponent | mantissa.
double explain_round(float x, const FloatFormat *f, uint32_t *bits);
// bits as '0'/'1' characters, "s eeeee mmmm": out needs exp_bits + man_bits + 4 bytes.
void explain_bit_string(uint32_t bits, const FloatFormat *f, char *out);

// Mean of |a[i] - b[i]| over n > 0 values, summed in double.
double explain_mean_abs_err(const float *a, const float *b, size_t n);

typedef struct {
    double mae, rms, bits;  // mean absolute and RMS error; storage bits per value
} QuantStats;

// Quantize x[0..n) with type t (QUANT_NF4, QUANT_FP4 or QUANT_INT4) in blocks of bs (double
// quantized scales with dq; not for INT4), dequantize into y[0..n) (overwritten) and
// measure the round trip into *st. False with err (naming label) when the quantizer
// refuses x (NaN or Inf values, a bad block size).
bool explain_quant_stats(QuantStats *st, const float *x, size_t n, QuantType t, size_t bs, bool dq, float *y,
                         const char *label, Error *err);

// Largest and mean |a[i] - b[i]| over n > 0 values (mean summed in double).
void explain_err_stats(const float *a, const float *b, size_t n, double *mean, double *max);

// The standard normal quantile: x with Phi(x) = p, for 0 < p < 1, by bisection on
// Phi(x) = erfc(-x / sqrt(2)) / 2 down to adjacent doubles.
double explain_normal_quantile(double p);

// NF4's levels rebuilt from normal quantiles, in ascending order (index = 4-bit code): 8
// positive levels at probabilities 1/2 + (i/8)(delta - 1/2), i = 1..8, 7 negative ones at
// the mirrored 1/2 - (j/7)(delta - 1/2), j = 1..7, and an exact 0; each quantile divided by
// Q(delta), so the outermost levels are -1 and 1. delta keeps Q finite: the mean of 1 - 1/30
// and 1 - 1/32 (bitsandbytes' table, quant.c's NF4_CODE, was built the same way).
typedef struct {
    double delta;
    double p[16];      // cumulative probability of each level (0.5 for the zero level)
    double q[16];      // the normal quantile at p
    double level[16];  // q / Q(delta)
} Nf4Levels;
void explain_nf4_levels(Nf4Levels *out);

// What INT8 zero-point quantization of an array did, against the original values.
typedef struct {
    double mae, max_err;    // mean and largest |x - x_hat|
    double max_steps;       // largest |x - x_hat| in steps of that value's block scale
    size_t n_clamped;       // codes outside [0, 255] that clamping pulled back
    size_t n_wrapped;       // codes outside [0, 255] stored without clamping (wrapped mod 256)
} Int8Errors;

// Zero-point INT8 over blocks of bs values, as quant.c's QUANT_INT8_ASYM does it (the block's
// range widened to include 0; scale = (max - min) / 255), except for the two choices under
// test: the zero-point z = round(-min / scale) (round_zero) or truncated toward zero (the
// mistake); q = round(x / scale) + z then clamped to [0, 255] (clamp) or, without clamping,
// wrapped modulo 256 as storing it in an unsigned byte does. x_hat = (q - z) * scale into
// y[0..n) (overwritten) and, unless NULL, the stored codes into codes[0..n); *e measures the
// round trip. With round_zero and clamp this is QUANT_INT8_ASYM bit for bit
// (tests/test_explain.c holds them equal). x must be finite.
void explain_int8_zero_point(const float *x, size_t n, size_t bs, bool round_zero, bool clamp, float *y,
                             uint8_t *codes, Int8Errors *e);
// The scale and zero-point explain_int8_zero_point uses for the block x[0..n).
void explain_int8_block(const float *x, size_t n, bool round_zero, float *scale, float *zero);

// counts[0..bins) = how many of x[0..n) fall in each of bins equal bins over [lo, hi)
// (values outside go to the first or last bin). Overwrites counts.
void explain_histogram(const float *x, size_t n, double lo, double hi, int bins, double *counts);

// counts[c] = how many of q's values have 4-bit code c. Overwrites counts[0..16).
void explain_code_counts(const Q4Tensor *q, size_t counts[16]);

#endif
