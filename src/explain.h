// explain.h: the computations behind `qlora explain` (src/cmd/explain.c prints them):
// rounding a float to a narrower IEEE-style format, and the error a quantizer makes on an
// array. Everything is computed by qlora's own code (quant.h), never looked up.
// Not here: printing, figures and the page (cmd/explain.c), the memory model (memory.h).
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

#endif
