// cmd/explain_quant.c: the lesson's first four sections: how a number is stored, what a
// model costs in memory, INT8 (absmax and zero-point, right and wrong) and NF4 (its levels,
// block-wise absmax, block size, double quantization). See cmd/lesson.h.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/lesson.h"
#include "ds.h"
#include "explain.h"
#include "ops.h"
#include "quant.h"
#include "svg.h"

static const FloatFormat *const FORMATS[3] = {&EXPLAIN_FP32, &EXPLAIN_FP16, &EXPLAIN_BF16};
static const double GIB = 1073741824.0;

// ---- 1. how a number is stored -----------------------------------------------------------------

// Largest finite value, smallest normal and smallest subnormal of format f.
static void format_limits(const FloatFormat *f, double *largest, double *normal, double *subnormal) {
    const int bias = (1 << (f->exp_bits - 1)) - 1;
    *largest = (2.0 - ldexp(1.0, -f->man_bits)) * ldexp(1.0, bias);
    *normal = ldexp(1.0, 1 - bias);
    *subnormal = ldexp(1.0, 1 - bias - f->man_bits);
}

// Figure: the bits of x in each format, coloured by field.
static void figure_bits(Doc *d, double x) {
    const float w = (float)x;
    Svg s;
    char title[128];
    snprintf(title, sizeof title, "How %.9g is stored: sign, exponent and mantissa bits", x);
    svg_begin(&s, 760, 250, title);
    const char *colors[3] = {"#d62728", "#1f77b4", "#2ca02c"};
    for (int k = 0; k < 3; k++) {
        const FloatFormat *f = FORMATS[k];
        uint32_t bits;
        const double v = explain_round(w, f, &bits);
        const int n = 1 + f->exp_bits + f->man_bits;
        const double y = 55 + 62.0 * k, cw = 18;
        svg_text(&s, 10, y + 15, "start", 13, "#222", "%s", f->name);
        for (int i = 0; i < n; i++) {
            const int bit = (bits >> (n - 1 - i)) & 1, part = i == 0 ? 0 : i <= f->exp_bits ? 1 : 2;
            svg_rect(&s, 60 + cw * i, y, cw - 2, 22, colors[part], NULL);
            svg_text(&s, 60 + cw * i + 8, y + 16, "middle", 12, "white", "%d", bit);
        }
        svg_text(&s, 60, y + 38, "start", 11, "#444", "stored %.10g (error %+.2e)", v, v - x);
    }
    const char *labels[3] = {"sign", "exponent", "mantissa"};
    for (int i = 0; i < 3; i++) {
        svg_rect(&s, 640, 50 + 18.0 * i, 12, 12, colors[i], NULL);
        svg_text(&s, 658, 60 + 18.0 * i, "start", 12, "#222", "%s", labels[i]);
    }
    char cap[512];
    snprintf(cap, sizeof cap, "The bits of %.9g in FP32, FP16 and BF16: red the sign, blue the exponent, green "
             "the mantissa", x);
    doc_figure(d, &s, cap);
}

// Table: x in each format, field by field.
static void table_bits(Doc *d, double x) {
    const float w = (float)x;
    DocTable t;
    doc_table_begin(&t, "llllrr", "format\tsign\texponent (power of two)\tmantissa\tstored value\terror");
    for (int k = 0; k < 3; k++) {
        const FloatFormat *f = FORMATS[k];
        uint32_t bits;
        const double v = explain_round(w, f, &bits);
        char b[64];
        explain_bit_string(bits, f, b);  // "s eeeee mmmm"
        b[1] = b[2 + f->exp_bits] = '\0';
        const int bias = (1 << (f->exp_bits - 1)) - 1;
        const int e = (int)((bits >> f->man_bits) & ((1u << f->exp_bits) - 1));
        doc_row(&t, "%s\t`%s`\t`%s` (2^%d)\t`%s`\t%.12g\t%+.3e", f->name, b, b + 2, e ? e - bias : 1 - bias,
                b + 3 + f->exp_bits, v, v - x);
    }
    char cap[512];
    snprintf(cap, sizeof cap, "%.9g rounded to the nearest value each format can hold (ties to even)", x);
    doc_table_end(d, &t, cap);
}

// Tables: each format's range and precision, and two numbers at FP16's edges.
static void table_ranges(Doc *d) {
    DocTable t;
    doc_table_begin(&t, "lrrrrrrr", "format\texponent bits\tmantissa bits\tlargest\tsmallest normal\t"
                    "smallest subnormal\tstep after 1\tdecimal digits");
    for (int k = 0; k < 3; k++) {
        const FloatFormat *f = FORMATS[k];
        double big, norm, sub;
        format_limits(f, &big, &norm, &sub);
        doc_row(&t, "%s\t%d\t%d\t%.5g\t%.4g\t%.4g\t%.4g\t%.1f", f->name, f->exp_bits, f->man_bits, big, norm, sub,
                ldexp(1.0, -f->man_bits), (f->man_bits + 1) * log10(2.0));
    }
    doc_table_end(d, &t, "Range (exponent bits) and precision (mantissa bits) of each format");
    double big16, norm16, sub16;
    format_limits(&EXPLAIN_FP16, &big16, &norm16, &sub16);
    const float edges[2] = {(float)(2 * big16), (float)(sub16 / 3)};
    doc_table_begin(&t, "lrrr", "number\tFP32\tFP16\tBF16");
    for (int i = 0; i < 2; i++)
        doc_row(&t, "%s\t%.6g\t%.6g\t%.6g", i ? "FP16's smallest subnormal / 3" : "twice FP16's largest",
                explain_round(edges[i], &EXPLAIN_FP32, NULL), explain_round(edges[i], &EXPLAIN_FP16, NULL),
                explain_round(edges[i], &EXPLAIN_BF16, NULL));
    doc_table_end(d, &t, "Two numbers just outside FP16's range: it overflows to infinity and underflows to 0, "
                         "where BF16 keeps about 3 digits of both");
}

void explain_numbers(Lesson *l) {
    Doc *d = &l->doc;
    const double x = l->a.number;
    doc_section(d, "How a number is stored: FP32, FP16, BF16");
    doc_para(d, "A weight is a real number, but memory holds bits. A floating-point format splits a fixed number "
                "of bits into three fields: a sign; an exponent, which picks a power of two and so sets the range "
                "(how large and how small a number can be); and a mantissa, which says where the number lies "
                "between that power of two and the next and so sets the precision (how many significant digits "
                "survive). For E exponent bits and M mantissa bits the value is");
    doc_formula(d, "value = (−1)^s × 2^(e − bias) × (1 + m / 2^M),   bias = 2^(E−1) − 1",
                "<mi>value</mi><mo>=</mo><msup><mrow><mo>(</mo><mo>−</mo><mn>1</mn><mo>)</mo></mrow><mi>s</mi>"
                "</msup><mo>×</mo><msup><mn>2</mn><mrow><mi>e</mi><mo>−</mo><mi>bias</mi></mrow></msup><mo>×"
                "</mo><mrow><mo>(</mo><mn>1</mn><mo>+</mo><mfrac><mi>m</mi><msup><mn>2</mn><mi>M</mi></msup>"
                "</mfrac><mo>)</mo></mrow><mo>,</mo><mspace width=\"1em\"/><mi>bias</mi><mo>=</mo><msup><mn>2"
                "</mn><mrow><mi>E</mi><mo>−</mo><mn>1</mn></mrow></msup><mo>−</mo><mn>1</mn>");
    doc_para(d, "where s, e and m are the three fields read as unsigned integers (an all-zero exponent field means "
                "a subnormal number, 2^(1 − bias) × m / 2^M, which fills the gap down to zero; an all-one field "
                "means infinity or NaN). Here is %.9g in the three formats used to train networks:", x);
    table_bits(d, x);
    figure_bits(d, x);
    doc_para(d, "FP16 gives its bits to the mantissa: more digits, less range. BF16 (brain float) is FP32 with the "
                "last 16 mantissa bits cut off: FP32's range with about 3 significant digits. That is why BF16 took "
                "over training: gradients and activations span many orders of magnitude, and in FP16 they overflow "
                "or underflow unless the loss is rescaled, while 3 digits are enough for most of the arithmetic.");
    table_ranges(d);
    doc_para(d, "Integers are the other way to store a number: INT8 has 256 evenly spaced levels and no exponent, "
                "so a block of numbers shares a scale that says what one step is worth (section 3). NF4 has 16 "
                "levels, placed where weights actually are (section 4).");
}

// ---- 2. what a model costs in memory -----------------------------------------------------------

// Figure: stacked bars of each method's predicted memory for p.
static void figure_memory(Doc *d, const Prediction *p, const char *title, const char *caption, double limit) {
    Svg g;
    svg_begin(&g, 760, 400, title);
    double top = limit;
    for (int m = 0; m < MEM_N_METHODS; m++) top = fmax(top, p->rows[m].total / GIB);
    svg_axes(&g, 0, MEM_N_METHODS, 0, top * 1.08, false, NULL, "GiB");
    const char *cols[4] = {SVG_PALETTE[0], SVG_PALETTE[3], SVG_PALETTE[2], SVG_PALETTE[4]};
    for (int m = 0; m < MEM_N_METHODS; m++) {
        const MemRow *r = &p->rows[m];
        const double parts[4] = {(r->weights + r->quant_constants) / GIB, r->trainable / GIB,
                                 (r->gradients + r->optimizer) / GIB, r->activations / GIB};
        double base = 0;
        const double x = svg_x(&g, m + 0.15), w = svg_x(&g, m + 0.85) - x;
        for (int k = 0; k < 4; k++) {
            svg_rect(&g, x, svg_y(&g, base + parts[k]), w, svg_y(&g, base) - svg_y(&g, base + parts[k]), cols[k], NULL);
            base += parts[k];
        }
        svg_text(&g, x + w / 2, svg_y(&g, base) - 4, "middle", 10, "#222", "%.1f", base);
        svg_text(&g, x + w / 2, g.y0 + g.ph + 16, "middle", 9, "#222", "%s", r->name);
    }
    if (limit > 0) {
        svg_line(&g, g.x0, svg_y(&g, limit), g.x0 + g.pw, svg_y(&g, limit), "#d62728", 1.5, true);
        svg_text(&g, g.x0 + 6, svg_y(&g, limit) - 5, "start", 11, "#d62728", "%.0f GiB", limit);
    }
    const char *labels[4] = {"frozen weights + constants", "trainable weights", "gradients + AdamW", "activations"};
    svg_legend(&g, labels, cols, 4);
    doc_figure(d, &g, caption);
}

// Table: N parameters in each storage format.
static void table_formats(Doc *d, double n, size_t bs) {
    DocTable t;
    doc_table_begin(&t, "lrrr", "format\tbits per parameter\tGB (10^9 bytes)\tGiB (2^30 bytes)");
    const struct { const char *name; double bits; } f[6] = {
        {"FP32", 32}, {"FP16 / BF16", 16}, {"INT8", 8}, {"INT4", 4},
        {"NF4, fp32 absmax per block", nf4_bits(bs, false)}, {"NF4 + double quantization", nf4_bits(bs, true)}};
    for (int i = 0; i < 6; i++)
        doc_row(&t, "%s\t%.3f\t%.2f\t%.2f", f[i].name, f[i].bits, n * f[i].bits / 8 / 1e9, n * f[i].bits / 8 / GIB);
    char cap[512];
    char c1[48];
    snprintf(cap, sizeof cap, "The weights of %s parameters in each format (blocks of %zu for NF4; INT8 and INT4 "
             "without their scales)", explain_count(n, c1, sizeof c1), bs);
    doc_table_end(d, &t, cap);
}

void explain_memory(Lesson *l) {
    Doc *d = &l->doc;
    const double n = l->a.params;
    doc_section(d, "What a model costs in memory");
    char c1[48], c2[48];
    doc_para(d, "The memory the weights need is the number of parameters times the bytes each one takes. For a "
                "model of %s parameters:", explain_count(n, c1, sizeof c1));
    doc_formula(d, "bytes = N × bits / 8", "<mi>bytes</mi><mo>=</mo><mi>N</mi><mo>×</mo><mfrac><mi>bits</mi>"
                "<mn>8</mn></mfrac>");
    table_formats(d, n, l->a.blocksize);
    doc_para(d, "That is enough to run the model. Training needs more, for every parameter that is trained: its "
                "gradient (one number per parameter) and AdamW's two running averages, of the gradient and of its "
                "square (two more, kept in fp32). And it needs the activations: each layer's intermediate results, "
                "kept from the forward pass because the backward pass reads them; they grow with batch size × "
                "sequence length, and gradient checkpointing trades most of them for recomputation (section 7). "
                "Full fine-tuning in fp32 therefore costs 16 bytes a parameter before activations; LoRA pays that "
                "only for its adapters:");
    doc_formula(d, "full: N × (4 + 4 + 4 + 4) + activations;   LoRA: N × bytes(w) + n_LoRA × 16 + activations",
                "<mtable columnalign=\"left\"><mtr><mtd><msub><mi>M</mi><mtext>full</mtext></msub><mo>=</mo><mi>N"
                "</mi><mo>×</mo><mo>(</mo><munder><mn>4</mn><mtext>weight</mtext></munder><mo>+</mo><munder><mn>4"
                "</mn><mtext>gradient</mtext></munder><mo>+</mo><munder><mrow><mn>4</mn><mo>+</mo><mn>4</mn></mrow>"
                "<mtext>AdamW</mtext></munder><mo>)</mo><mo>+</mo><mi>activations</mi></mtd></mtr><mtr><mtd><msub>"
                "<mi>M</mi><mtext>LoRA</mtext></msub><mo>=</mo><mi>N</mi><mo>×</mo><msub><mi>bytes</mi><mi>w</mi>"
                "</msub><mo>+</mo><msub><mi>n</mi><mtext>LoRA</mtext></msub><mo>×</mo><mn>16</mn><mo>+</mo><mi>"
                "activations</mi></mtd></mtr></mtable>");
    Prediction p;
    explain_predict("llama-7b", (int)l->job.lora_r, 512, l->a.blocksize, &p);
    DocTable t;
    doc_table_begin(&t, "lrrrrrrr", "method\tfrozen weights\tconstants\ttrainable\tgradients\tAdamW\tactivations\t"
                    "total");
    for (int m = 0; m < MEM_N_METHODS; m++) {
        const MemRow *r = &p.rows[m];
        doc_row(&t, "%s\t%.2f\t%.3f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f", r->name, r->weights / GIB,
                r->quant_constants / GIB, r->trainable / GIB, r->gradients / GIB, r->optimizer / GIB,
                r->activations / GIB, r->total / GIB);
    }
    char cap[512];
    snprintf(cap, sizeof cap, "LLaMA-7B (%s parameters) fine-tuned on batches of 1 × 512 tokens with gradient "
             "checkpointing, LoRA r = %ld on every linear (%s trainable), GiB, as `qlora memory` predicts",
             explain_count(p.params, c1, sizeof c1), l->job.lora_r, explain_count(p.lora_params, c2, sizeof c2));
    doc_table_end(d, &t, cap);
    figure_memory(d, &p, "LLaMA-7B fine-tuning memory by method (GiB)",
                  "Memory of fine-tuning LLaMA-7B with each method, as memory.c predicts it", 0);
    const MemRow *full = &p.rows[MEM_FULL_FP32], *q = &p.rows[MEM_QLORA_NF4_DQ];
    doc_para(d, "Full fine-tuning in fp32 needs %.1f GiB; QLoRA (NF4 + double quantization) %.1f GiB, %.0f times "
                "less, of which %.1f GiB are the frozen weights (4-bit linears, fp32 embeddings and norms) with "
                "their constants and %.2f GiB the adapters with their gradients and AdamW state.",
             full->total / GIB, q->total / GIB, full->total / q->total,
                (q->weights + q->quant_constants) / GIB, (q->trainable + q->gradients + q->optimizer) / GIB);
}

// ---- 3. INT8: absmax and zero-point --------------------------------------------------------------

// n lopsided values: GELU (ops.c's, as GPT-2's MLP applies it) of N(0, 1) draws, the inputs
// of every GPT-2 MLP's second linear.
static float *gelu_sample(size_t n) {
    float *z = xmalloc(n * sizeof(float)), *x = xmalloc(n * sizeof(float));
    Rng r;
    rng_seed(&r, 3);
    for (size_t i = 0; i < n; i++) z[i] = rng_normal(&r);
    gelu_forward(x, z, n);
    free(z);
    return x;
}

// Table: one block of 8 values worked through, right and wrong: the first block in x where
// truncating the zero-point changes a code.
static void table_int8_example(Doc *d, const float *x, size_t n) {
    enum { K = 8 };
    size_t at = 0;
    for (size_t s = 0; s + K <= n; s += K) {
        float y[K];
        uint8_t c[K];
        Int8Errors e;
        explain_int8_zero_point(x + s, K, K, false, false, y, c, &e);
        at = s;
        if (e.n_wrapped) break;
    }
    const float *b = x + at;
    float yr[K], yt[K], yw[K], sr, zr, st, zt;
    uint8_t cr[K], ct[K], cw[K];
    Int8Errors e;
    explain_int8_zero_point(b, K, K, true, true, yr, cr, &e);
    explain_int8_zero_point(b, K, K, false, true, yt, ct, &e);
    explain_int8_zero_point(b, K, K, false, false, yw, cw, &e);
    explain_int8_block(b, K, true, &sr, &zr);
    explain_int8_block(b, K, false, &st, &zt);
    float mn = 0;
    for (int i = 0; i < K; i++) mn = fminf(mn, b[i]);
    doc_para(d, "One block of %d of them, worked through (values %zu to %zu of the sample, the first block where "
                "truncating changes a code): the scale is %.6f either way; −min / scale = %.4f, so the zero-point "
                "is %.0f rounded and %.0f truncated.", K, at, at + K - 1, (double)sr, -(double)mn / (double)sr,
                (double)zr, (double)zt);
    DocTable t;
    doc_table_begin(&t, "rrrrrrr", "x\tcode, right\tx̂, right\tcode, truncated\tx̂, truncated + clamped\t"
                    "code, truncated, no clamp\tx̂, no clamp");
    for (int i = 0; i < K; i++)
        doc_row(&t, "%.5f\t%d\t%.5f\t%d\t%.5f\t%d\t%.5f", (double)b[i], cr[i], (double)yr[i], ct[i], (double)yt[i],
                cw[i], (double)yw[i]);
    doc_table_end(d, &t, "A block of 8 values quantized with a rounded and with a truncated zero-point");
}

// The round trip of symmetric absmax INT8 (quant.c) over blocks of bs, as Int8Errors.
static Int8Errors absmax_errors(const float *x, size_t n, size_t bs, float *y) {
    QIntTensor q;
    Error err = {0};
    CHECK(qint_quantize(&q, x, n, QUANT_INT8, bs, "sample", &err));
    qint_dequantize(&q, 0, n, y);
    Int8Errors e = {0};
    explain_err_stats(x, y, n, &e.mae, &e.max_err);
    for (size_t i = 0; i < n; i++)
        if (q.scale[i / bs] > 0) e.max_steps = fmax(e.max_steps, fabs((double)x[i] - y[i]) / q.scale[i / bs]);
    qint_free(&q);
    return e;
}

// The round trip of zero-point INT8 done right: quant.c's QUANT_INT8_ASYM.
static Int8Errors zero_point_errors(const float *x, size_t n, size_t bs, float *y) {
    QIntTensor q;
    Error err = {0};
    CHECK(qint_quantize(&q, x, n, QUANT_INT8_ASYM, bs, "sample", &err));
    qint_dequantize(&q, 0, n, y);
    qint_free(&q);
    Int8Errors e;  // the same arithmetic measured by explain.c (tests hold the two equal)
    float *y2 = xmalloc(n * sizeof(float));
    explain_int8_zero_point(x, n, bs, true, true, y2, NULL, &e);
    free(y2);
    return e;
}

// Figure: each value's error in steps of its block's scale, right and truncated; wrapped
// values, whose errors are far larger, are counted off the chart.
static void figure_int8(Doc *d, const float *x, size_t n, size_t bs) {
    float *yr = xmalloc(n * sizeof(float)), *yt = xmalloc(n * sizeof(float)), *yw = xmalloc(n * sizeof(float));
    double *px = xmalloc(3 * n * sizeof(double)), *py = px + n, *sc = px + 2 * n, lo = 0, hi = 0, worst = 0;
    Int8Errors e;
    explain_int8_zero_point(x, n, bs, true, true, yr, NULL, &e);
    explain_int8_zero_point(x, n, bs, false, true, yt, NULL, &e);
    explain_int8_zero_point(x, n, bs, false, false, yw, NULL, &e);  // e: the wrapped ones
    for (size_t b = 0; b * bs < n; b++) {
        float s, z;
        explain_int8_block(x + b * bs, n - b * bs < bs ? n - b * bs : bs, true, &s, &z);
        for (size_t i = b * bs; i < n && i < (b + 1) * bs; i++) sc[i] = s > 0 ? s : 1;
    }
    double ylo = -0.6, yhi = 0.6;
    for (size_t i = 0; i < n; i++) {
        lo = fmin(lo, x[i]);
        hi = fmax(hi, x[i]);
        worst = fmax(worst, fabs((double)yw[i] - x[i]) / sc[i]);
        const double er = ((double)yr[i] - x[i]) / sc[i], et = ((double)yt[i] - x[i]) / sc[i];
        ylo = fmin(ylo, fmin(er, et));
        yhi = fmax(yhi, fmax(er, et));
    }
    Svg s;
    svg_begin(&s, 760, 380, "INT8 zero-point: error of each value, in steps of its block's scale");
    svg_axes(&s, lo, hi, ylo - 0.35, yhi + 0.15, false, "value x", "(x̂ − x) / scale");
    for (int v = 0; v < 2; v++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (v == 1 && yt[i] == yr[i]) continue;  // the same point, drawn already
            px[k] = x[i];
            py[k++] = ((double)(v == 0 ? yr : yt)[i] - x[i]) / sc[i];
        }
        svg_points(&s, px, py, k, SVG_PALETTE[v], v == 0 ? 1.5 : 3.5);
    }
    svg_text(&s, s.x0 + 8, s.y0 + s.ph - 8, "start", 11, "#d62728", "without clamping, %zu of the truncated ones "
             "wrap around: errors up to %.0f steps, far off this chart", e.n_wrapped, worst);
    const char *labels[2] = {"rounded zero-point", "truncated (where different)"};
    const char *colors[2] = {SVG_PALETTE[0], SVG_PALETTE[1]};
    svg_legend(&s, labels, colors, 2);
    char cap[512];
    snprintf(cap, sizeof cap, "Rounded, every value comes back within half a step; truncated, a block's smallest "
             "values can come back up to a whole step off (%zu values in blocks of %zu)", n, bs);
    doc_figure(d, &s, cap);
    free(yr);
    free(yt);
    free(yw);
    free(px);
}

// Table: the five ways over the whole sample.
static void table_int8(Doc *d, const float *x, size_t n, size_t bs) {
    float *y = xmalloc(n * sizeof(float));
    const Int8Errors sym = absmax_errors(x, n, bs, y), right = zero_point_errors(x, n, bs, y);
    Int8Errors trunc_c, trunc_w, round_w;
    explain_int8_zero_point(x, n, bs, false, true, y, NULL, &trunc_c);
    explain_int8_zero_point(x, n, bs, false, false, y, NULL, &trunc_w);
    explain_int8_zero_point(x, n, bs, true, false, y, NULL, &round_w);
    free(y);
    DocTable t;
    doc_table_begin(&t, "llrrrrr", "scheme\tcode\tmean |error|\tmax |error|\tmax error in steps\tclamped\twrapped");
    doc_row(&t, "absmax (symmetric)\t`quant.c` `QUANT_INT8`\t%.3e\t%.3e\t%.3f\t-\t-", sym.mae, sym.max_err,
            sym.max_steps);
    const struct { const char *name, *code; Int8Errors e; } rows[4] = {
        {"zero-point, rounded, clamped (right)", "`quant.c` `QUANT_INT8_ASYM`", right},
        {"zero-point, truncated, clamped", "`explain.c`, the mistake", trunc_c},
        {"zero-point, truncated, not clamped", "`explain.c`, the mistake", trunc_w},
        {"zero-point, rounded, not clamped", "`explain.c`", round_w}};
    for (int i = 0; i < 4; i++)
        doc_row(&t, "%s\t%s\t%.3e\t%.3e\t%.3f\t%zu\t%zu", rows[i].name, rows[i].code, rows[i].e.mae,
                rows[i].e.max_err, rows[i].e.max_steps, rows[i].e.n_clamped, rows[i].e.n_wrapped);
    char cap[512];
    snprintf(cap, sizeof cap, "INT8 on %zu values after GELU, blocks of %zu: the error of each way", n, bs);
    doc_table_end(d, &t, cap);
    doc_para(d, "Done right, zero-point INT8 halves absmax's mean error on these lopsided values (%.3e against "
                "%.3e) and no value is ever more than half a step off (%.3f). Truncating the zero-point leaves the "
                "mean error almost unchanged (%.3e): the damage hides in each block's smallest value, which comes "
                "back up to %.3f steps off. Without clamping it is far worse: %zu values wrapped around and came "
                "back as nearly their block's largest, %.3f away.", right.mae, sym.mae, right.max_steps,
                trunc_c.mae, trunc_c.max_steps, trunc_w.n_wrapped, trunc_w.max_err);
}

// Codes absmax INT8 can use on x, on average over its blocks of bs: from round(min / s) to
// round(max / s) with s = absmax / 127.
static double absmax_codes_used(const float *x, size_t n, size_t bs) {
    double sum = 0;
    size_t nb = 0;
    for (size_t b = 0; b < n; b += bs, nb++) {
        float mn = 0, mx = 0, am = 0;
        for (size_t i = b; i < n && i < b + bs; i++) {
            mn = fminf(mn, x[i]);
            mx = fmaxf(mx, x[i]);
            am = fmaxf(am, fabsf(x[i]));
        }
        sum += am > 0 ? nearbyint(mx * 127.0 / am) - nearbyint(mn * 127.0 / am) + 1 : 1;
    }
    return nb ? sum / (double)nb : 0;
}

void explain_int8(Lesson *l) {
    Doc *d = &l->doc;
    const size_t bs = l->a.blocksize, n = 16384;
    float *x = gelu_sample(n), mn = 0, mx = 0;
    for (size_t i = 0; i < n; i++) mn = fminf(mn, x[i]), mx = fmaxf(mx, x[i]);
    doc_section(d, "INT8: absmax and zero-point quantization, done right");
    doc_para(d, "INT8 stores a number as one of 256 integers, and a block of numbers (here %zu) shares a scale: "
                "the real value of one step. There are two common ways to choose it.", bs);
    doc_subhead(d, "Absmax (symmetric)");
    doc_formula(d, "s = max|x| / 127,   q = round(x / s) ∈ [−127, 127],   x̂ = q · s",
                "<mi>s</mi><mo>=</mo><mfrac><mrow><mo>max</mo><mo>|</mo><mi>x</mi><mo>|</mo></mrow><mn>127</mn>"
                "</mfrac><mo>,</mo><mspace width=\"1em\"/><mi>q</mi><mo>=</mo><mtext>round</mtext><mo>(</mo><mi>x"
                "</mi><mo>/</mo><mi>s</mi><mo>)</mo><mo>∈</mo><mo>[</mo><mo>−</mo><mn>127</mn><mo>,</mo><mn>127"
                "</mn><mo>]</mo><mo>,</mo><mspace width=\"1em\"/><mover><mi>x</mi><mo>^</mo></mover><mo>=</mo>"
                "<mi>q</mi><mo>·</mo><mi>s</mi>");
    doc_para(d, "The largest magnitude maps to ±127 and zero to code 0, exactly, on a grid symmetric around zero. "
                "That suits weights, which are centred on zero. It wastes codes on lopsided numbers, such as the "
                "inputs of a GPT-2 MLP's second linear, which come out of a GELU: the sample used below is %zu "
                "values of GELU (`ops.c`'s) of normal draws, from %.4f to %.4f, and on them absmax can use only "
                "%.0f of its 255 codes, on average over the blocks.", n, (double)mn, (double)mx,
             absmax_codes_used(x, n, bs));
    doc_subhead(d, "Zero-point (asymmetric)");
    doc_formula(d, "s = (max − min) / 255,   z = round(−min / s),   q = clamp(round(x / s) + z, 0, 255),   "
                   "x̂ = (q − z) · s",
                "<mi>s</mi><mo>=</mo><mfrac><mrow><mo>max</mo><mo>−</mo><mo>min</mo></mrow><mn>255</mn></mfrac>"
                "<mo>,</mo><mspace width=\"1em\"/><mi>z</mi><mo>=</mo><mtext>round</mtext><mo>(</mo><mo>−</mo>"
                "<mo>min</mo><mo>/</mo><mi>s</mi><mo>)</mo><mo>,</mo><mspace width=\"1em\"/><mi>q</mi><mo>=</mo>"
                "<mtext>clamp</mtext><mo>(</mo><mtext>round</mtext><mo>(</mo><mi>x</mi><mo>/</mo><mi>s</mi><mo>)"
                "</mo><mo>+</mo><mi>z</mi><mo>,</mo><mn>0</mn><mo>,</mo><mn>255</mn><mo>)</mo><mo>,</mo><mspace "
                "width=\"1em\"/><mover><mi>x</mi><mo>^</mo></mover><mo>=</mo><mo>(</mo><mi>q</mi><mo>−</mo><mi>z"
                "</mi><mo>)</mo><mo>·</mo><mi>s</mi>");
    doc_para(d, "The block's range, from min to max (widened to include 0), is spread over all 256 codes, and the "
                "zero-point z is the code that stands for 0. Two details make it right. z is rounded to an "
                "integer, so 0 has a code of its own and comes back exactly (padding and ReLU zeros stay zero), "
                "and the ends of the range land on codes 0 and 255. And q is clamped into [0, 255], so that a "
                "value that rounds past either end stores the end code, not a number the byte cannot hold.");
    doc_subhead(d, "The mistake: truncating the zero-point");
    doc_para(d, "The notebook this project began from truncated −min / s to get the zero-point (as `int()` "
                "does) instead of rounding it. Truncation lowers z by the fraction it drops, up to a whole step, and the "
                "grid slides up by as much: a block's smallest values now round to code −1. Clamped, they come "
                "back a step off. Not clamped, code −1 stored in an unsigned byte becomes 255, and the smallest "
                "value of the block comes back as nearly its largest.");
    table_int8_example(d, x, n);
    table_int8(d, x, n, bs);
    figure_int8(d, x, n < 32 * bs ? n : 32 * bs, bs);
    size_t wo, wi;
    const float *w = explain_matrix(l, l->matrix_t, &wo, &wi);
    float *y = xmalloc(wo * wi * sizeof(float));
    const Int8Errors ws = absmax_errors(w, wo * wi, bs, y), wz = zero_point_errors(w, wo * wi, bs, y);
    free(y);
    doc_para(d, "On weights, centred on zero, the two ways come out close: on `%s` of the model (section 4), "
                "absmax's mean error is %.3e and zero-point's %.3e. That is why weights are quantized with absmax "
                "scales (NF4 too) and zero-points are kept for lopsided activations.", l->matrix_name, ws.mae,
                wz.mae);
    free(x);
}

// ---- 4. NF4 --------------------------------------------------------------------------------------

// explain_quant_stats on a finite matrix (the model loader has refused NaN and Inf already).
static QuantStats qstats(const float *x, size_t n, QuantType t, size_t bs, bool dq, float *y) {
    QuantStats st;
    Error err = {0};
    CHECK(explain_quant_stats(&st, x, n, t, bs, dq, y, "matrix", &err));
    return st;
}

// Table: each level's probability, quantile and value, against quant.c's table.
static void table_nf4_levels(Doc *d, const Nf4Levels *L) {
    DocTable t;
    doc_table_begin(&t, "rrrrrr", "code\tprobability p\tquantile Q(p)\tlevel Q(p) / Q(δ)\t`quant.c` `NF4_CODE`\t"
                    "difference");
    double worst = 0;
    for (int k = 0; k < 16; k++) {
        doc_row(&t, "%d\t%.6f\t%+.6f\t%+.8f\t%+.8f\t%+.1e", k, L->p[k], L->q[k], L->level[k], (double)NF4_CODE[k],
                L->level[k] - NF4_CODE[k]);
        worst = fmax(worst, fabs(L->level[k] - NF4_CODE[k]));
    }
    char cap[512];
    snprintf(cap, sizeof cap, "The 16 NF4 levels computed from normal quantiles, next to bitsandbytes' table "
             "(which qlora stores); they agree to %.1e", worst);
    doc_table_end(d, &t, cap);
}

// Figure: the normal bell with the 16 quantiles the levels come from.
static void figure_nf4_bell(Doc *d, const Nf4Levels *L) {
    enum { P = 200 };
    double xs[P], ys[P];
    for (int i = 0; i < P; i++) {
        xs[i] = -2.4 + 4.8 * i / (P - 1);
        ys[i] = exp(-0.5 * xs[i] * xs[i]) / sqrt(2 * M_PI);
    }
    Svg s;
    svg_begin(&s, 760, 340, "The standard normal density and the quantiles of the 16 NF4 levels");
    svg_axes(&s, -2.4, 2.4, 0, 0.42, false, "x (before dividing by Q(δ))", "density");
    for (int k = 0; k < 16; k++) {
        const double h = exp(-0.5 * L->q[k] * L->q[k]) / sqrt(2 * M_PI);
        svg_line(&s, svg_x(&s, L->q[k]), svg_y(&s, 0), svg_x(&s, L->q[k]), svg_y(&s, h), SVG_PALETTE[1], 1.5, false);
    }
    svg_polyline(&s, xs, ys, P, SVG_PALETTE[0], 2);
    char cap[512];
    snprintf(cap, sizeof cap, "Each red line is a level's quantile: neighbours enclose equal areas under the bell "
             "(%.4f between positive levels, %.4f between negative ones), so the levels crowd where weights are "
             "common", (L->delta - 0.5) / 8, (L->delta - 0.5) / 7);
    doc_figure(d, &s, cap);
}

// Figure: x divided by its blocks' absmax, as a histogram, with the 16 levels.
static void figure_nf4_hist(Doc *d, const float *x, size_t n, size_t bs, const char *name) {
    enum { BINS = 80 };
    float *u = xmalloc(n * sizeof(float));
    for (size_t b = 0; b < n; b += bs) {
        float amax = 0;
        for (size_t i = b; i < n && i < b + bs; i++) amax = fmaxf(amax, fabsf(x[i]));
        for (size_t i = b; i < n && i < b + bs; i++) u[i] = amax > 0 ? x[i] / amax : 0;
    }
    double hy[BINS], hx[BINS], hmax = 0;
    explain_histogram(u, n, -1, 1, BINS, hy);
    free(u);
    for (int i = 0; i < BINS; i++) hx[i] = -1 + (i + 0.5) * 2.0 / BINS, hmax = fmax(hmax, hy[i]);
    Svg s;
    svg_begin(&s, 760, 380, "Weights divided by their block's absmax, and the 16 NF4 levels");
    char xl[96];
    snprintf(xl, sizeof xl, "w / absmax of its block of %zu", bs);
    svg_axes(&s, -1, 1, 0, hmax * 1.1, false, xl, "count");
    for (int i = 0; i < BINS; i++)
        svg_rect(&s, svg_x(&s, hx[i] - 1.0 / BINS), svg_y(&s, hy[i]), svg_x(&s, 2.0 / BINS) - svg_x(&s, 0) - 1,
                 svg_y(&s, 0) - svg_y(&s, hy[i]), "#9ecae1", NULL);
    for (int i = 0; i < 16; i++)
        svg_line(&s, svg_x(&s, NF4_CODE[i]), s.y0, svg_x(&s, NF4_CODE[i]), s.y0 + s.ph, "#d62728", 1.2, true);
    char cap[512];
    snprintf(cap, sizeof cap, "`%s`'s weights, each divided by its block's absmax (blue), and the NF4 levels (red): "
             "the levels are densest where the weights are", name);
    doc_figure(d, &s, cap);
}

// Figure: histograms of the original weights and of their NF4 + double-quant reconstruction.
static void figure_reconstruction(Doc *d, const float *x, const float *y, size_t n, const char *name) {
    enum { BINS = 120 };
    double lim = 0, hx[BINS], h1[BINS], h2[BINS], top = 0;
    for (size_t i = 0; i < n; i++) lim = fmax(lim, fabs(x[i]));
    explain_histogram(x, n, -lim, lim, BINS, h1);
    explain_histogram(y, n, -lim, lim, BINS, h2);
    for (int i = 0; i < BINS; i++) hx[i] = -lim + (i + 0.5) * 2 * lim / BINS, top = fmax(top, fmax(h1[i], h2[i]));
    Svg s;
    svg_begin(&s, 760, 380, "A real weight matrix before and after NF4 + double quantization");
    svg_axes(&s, -lim, lim, 0, top * 1.08, false, "weight value", "count");
    for (int i = 0; i < BINS; i++)
        svg_rect(&s, svg_x(&s, hx[i] - lim / BINS), svg_y(&s, h1[i]), svg_x(&s, 2 * lim / BINS) - svg_x(&s, 0),
                 svg_y(&s, 0) - svg_y(&s, h1[i]), "#c6dbef", NULL);
    svg_polyline(&s, hx, h2, BINS, SVG_PALETTE[1], 1.5);
    const char *labels[2] = {"original (fp32)", "NF4 reconstruction"};
    const char *colors[2] = {"#9ecae1", SVG_PALETTE[1]};
    svg_legend(&s, labels, colors, 2);
    char cap[512];
    snprintf(cap, sizeof cap, "Histogram of `%s` (%zu weights) and of what NF4 gives back: the bell survives, "
             "but the weights nearest 0 collapse onto the zero level, and none come back between it and the "
             "nearest others (%+.4f and %+.4f times each block's absmax)", name, n, (double)NF4_CODE[6],
             (double)NF4_CODE[8]);
    doc_figure(d, &s, cap);
}

// Entropy in bits of the distribution counts[0..k) (sum total), and its smallest and largest share.
static double entropy(const size_t *counts, int k, size_t total, double *lo, double *hi) {
    double h = 0;
    *lo = 1;
    *hi = 0;
    for (int i = 0; i < k; i++) {
        const double p = (double)counts[i] / (double)total;
        if (p > 0) h -= p * log2(p);
        *lo = fmin(*lo, p);
        *hi = fmax(*hi, p);
    }
    return h;
}

// Table: how evenly NF4 and INT4 use their 16 codes on x.
static void table_code_use(Doc *d, const float *x, size_t n, size_t bs) {
    Q4Tensor q;
    QIntTensor qi;
    Error err = {0};
    CHECK(q4_quantize(&q, x, n, QUANT_NF4, bs, true, "matrix", &err));
    CHECK(qint_quantize(&qi, x, n, QUANT_INT4, bs, "matrix", &err));
    size_t c4[16], ci[16] = {0};
    explain_code_counts(&q, c4);
    for (size_t i = 0; i < n; i++) ci[i % 2 == 0 ? qi.q[i / 2] >> 4 : qi.q[i / 2] & 0x0F]++;
    q4_free(&q);
    qint_free(&qi);
    DocTable t;
    doc_table_begin(&t, "lrrrr", "code book\tcodes used\tleast used\tmost used\tentropy (bits of 4)");
    const struct { const char *name; const size_t *c; int k; } books[2] = {{"NF4", c4, 16}, {"INT4", ci + 1, 15}};
    for (int b = 0; b < 2; b++) {
        double lo, hi, h = entropy(books[b].c, books[b].k, n, &lo, &hi);
        int used = 0;
        for (int i = 0; i < books[b].k; i++) used += books[b].c[i] > 0;
        doc_row(&t, "%s\t%d\t%.2f%%\t%.2f%%\t%.3f", books[b].name, used, 100 * lo, 100 * hi, h);
    }
    doc_table_end(d, &t, "How evenly each 4-bit code book uses its codes on this matrix (INT4 has 15 codes, -7 to "
                         "7); evenly used codes carry more information, up to 4 bits");
}

// Table and figure: error against block size, for NF4 (with and without double quant), FP4, INT4.
static void block_sizes(Doc *d, const float *x, size_t n, float *y) {
    enum { K = 8 };
    double xs[K], e[4][K];
    DocTable t;
    doc_table_begin(&t, "rrrrrrr", "block size\tbits\tNF4 mean |error|\tbits with DQ\tNF4 + DQ\tFP4 + DQ\tINT4");
    for (int k = 0; k < K; k++) {
        const size_t bs = (size_t)QUANT_MIN_BLOCK << k;
        const QuantStats a = qstats(x, n, QUANT_NF4, bs, false, y), b = qstats(x, n, QUANT_NF4, bs, true, y);
        const QuantStats f = qstats(x, n, QUANT_FP4, bs, true, y), i4 = qstats(x, n, QUANT_INT4, bs, false, y);
        xs[k] = (double)bs;
        e[0][k] = a.mae, e[1][k] = b.mae, e[2][k] = f.mae, e[3][k] = i4.mae;
        doc_row(&t, "%zu\t%.3f\t%.4e\t%.3f\t%.4e\t%.4e\t%.4e", bs, a.bits, a.mae, b.bits, b.mae, f.mae, i4.mae);
    }
    doc_table_end(d, &t, "Bits per weight (codes and scales, measured on the quantized matrix) and mean |error| "
                         "for each block size");
    double top = 0;
    for (int s = 0; s < 4; s++)
        for (int k = 0; k < K; k++) e[s][k] *= 1e3, top = fmax(top, e[s][k]);
    Svg s;
    svg_begin(&s, 760, 400, "Mean absolute error against block size");
    svg_axes(&s, QUANT_MIN_BLOCK, QUANT_MIN_BLOCK << (K - 1), 0, top * 1.1, true, "block size (values per scale)",
             "mean |error| (× 1e-3)");
    const char *labels[4] = {"NF4, fp32 absmax", "NF4 + double quant", "FP4 + double quant", "INT4"};
    const char *colors[4] = {SVG_PALETTE[0], SVG_PALETTE[2], SVG_PALETTE[3], SVG_PALETTE[1]};
    bool nf4_best = true;
    for (int k = 0; k < K; k++) nf4_best = nf4_best && e[1][k] < e[2][k] && e[1][k] < e[3][k];
    for (int k = 0; k < 4; k++) svg_polyline(&s, xs, e[k], K, colors[k], 2);
    svg_legend(&s, labels, colors, 4);
    doc_figure(d, &s, nf4_best ? "Error against block size: small blocks follow local ranges closely but store "
                                 "more scales; NF4 + double quant stays below FP4 and INT4 at every size"
                               : "Error against block size: small blocks follow local ranges closely but store "
                                 "more scales; on this matrix NF4 is not below FP4 and INT4 at every size");
}

// Largest and mean relative error of the double-quantized block scales of x against the exact absmax.
static void dq_scale_error(const float *x, size_t n, size_t bs, double *max_rel, double *mean_rel) {
    Q4Tensor q;
    Error err = {0};
    CHECK(q4_quantize(&q, x, n, QUANT_NF4, bs, true, "matrix", &err));
    double sum = 0, mx = 0;
    for (size_t b = 0; b < q.n_blocks; b++) {
        float amax = 0;
        for (size_t i = b * bs; i < n && i < (b + 1) * bs; i++) amax = fmaxf(amax, fabsf(x[i]));
        const double r = amax > 0 ? fabs((double)q4_block_scale(&q, b) - amax) / amax : 0;
        sum += r;
        mx = fmax(mx, r);
    }
    *max_rel = mx;
    *mean_rel = q.n_blocks ? sum / (double)q.n_blocks : 0;
    q4_free(&q);
}

// Section 4, first half: where the levels come from, and block-wise absmax on the real matrix.
static void nf4_levels(Lesson *l, const float *x, size_t n, size_t rows, size_t cols) {
    Doc *d = &l->doc;
    Nf4Levels L;
    explain_nf4_levels(&L);
    doc_para(d, "Four bits give 16 codes. INT4 spaces them evenly, but the weights of a trained network are not "
                "even: they pile up near zero in a roughly normal bell. NF4, the 4-bit NormalFloat of the QLoRA "
                "paper, puts its levels at quantiles of the standard normal distribution, close together where "
                "the bell is high and far apart in its thin tails, so that on normally distributed weights every "
                "code is used equally often, the most information 4 bits can carry:");
    doc_formula(d, "level = Q(p) / Q(δ),  p = 1/2 + (i/8)(δ − 1/2) for i = 1..8,  p = 1/2 − (j/7)(δ − 1/2) for "
                   "j = 1..7,  and 0;  δ = ((1 − 1/30) + (1 − 1/32)) / 2",
                "<mi>ℓ</mi><mo>=</mo><mfrac><mrow><mi>Q</mi><mo>(</mo><mi>p</mi><mo>)</mo>"
                "</mrow><mrow><mi>Q</mi><mo>(</mo><mi>δ</mi><mo>)</mo></mrow></mfrac><mo>,</mo><mspace width=\"1em\""
                "/><mi>p</mi><mo>=</mo><mfrac><mn>1</mn><mn>2</mn></mfrac><mo>±</mo><mfrac><mi>i</mi><mi>k</mi>"
                "</mfrac><mo>(</mo><mi>δ</mi><mo>−</mo><mfrac><mn>1</mn><mn>2</mn></mfrac><mo>)</mo><mo>,</mo>"
                "<mspace width=\"1em\"/><mi>δ</mi><mo>=</mo><mfrac><mrow><mo>(</mo><mn>1</mn><mo>−</mo><mfrac><mn>1"
                "</mn><mn>30</mn></mfrac><mo>)</mo><mo>+</mo><mo>(</mo><mn>1</mn><mo>−</mo><mfrac><mn>1</mn><mn>32"
                "</mn></mfrac><mo>)</mo></mrow><mn>2</mn></mfrac>");
    doc_para(d, "Q is the normal quantile function: Q(p) is the x with probability p below it. The positive side "
                "takes k = 8 levels (i = 1..8), the negative side k = 7 (j = 1..7), and 0 is a level of its own, "
                "so that zeros stay exact and all 16 codes are used. Q(1) is infinite, so the outermost level "
                "sits at δ = %.7f, the mean of 1 − 1/30 and 1 − 1/32, and dividing by Q(δ) = %.6f makes the levels "
                "run from −1 to 1. qlora computes the quantiles itself (bisection on erfc) and gets bitsandbytes' "
                "table, which `quant.c` uses and which was computed in float32, to the last digits:",
             L.delta, L.q[15]);
    table_nf4_levels(d, &L);
    figure_nf4_bell(d, &L);
    doc_subhead(d, "Block-wise absmax");
    doc_formula(d, "s_b = max |w| over block b,   code = the nearest level to w / s_b,   ŵ = level(code) · s_b",
                "<msub><mi>s</mi><mi>b</mi></msub><mo>=</mo><munder><mo>max</mo><mrow><mi>w</mi><mo>∈</mo><mi>b"
                "</mi></mrow></munder><mo>|</mo><mi>w</mi><mo>|</mo><mo>,</mo><mspace width=\"1em\"/><mi>c</mi>"
                "<mo>=</mo><munder><mtext>argmin</mtext><mi>k</mi></munder><mo>|</mo><mfrac><mi>w</mi><msub><mi>s"
                "</mi><mi>b</mi></msub></mfrac><mo>−</mo><msub><mi>ℓ</mi><mi>k</mi></msub><mo>|</mo><mo>,</mo>"
                "<mspace width=\"1em\"/><mover><mi>w</mi><mo>^</mo></mover><mo>=</mo><msub><mi>ℓ</mi><mi>c</mi>"
                "</msub><mo>·</mo><msub><mi>s</mi><mi>b</mi></msub>");
    doc_para(d, "Each block of %zu consecutive weights keeps its own scale, its largest magnitude, so an outlier "
                "coarsens only its own block. Here is a real matrix: `%s` of the model, %zu weights ([out, in] "
                "= [%zu, %zu]), each divided by its block's absmax. The values pile up near 0, where the levels "
                "are dense:", l->a.blocksize, l->matrix_name, n, rows, cols);
    const char *name = l->matrix_name;
    figure_nf4_hist(d, x, n, l->a.blocksize, name);
    table_code_use(d, x, n, l->a.blocksize);
}

// Section 4, second half: the reconstruction, block size, double quantization, and NF4
// against FP4 and INT4 at the lesson's block size (kept in l for section 9).
static void nf4_blocks(Lesson *l, const float *x, size_t n) {
    Doc *d = &l->doc;
    const size_t bs = l->a.blocksize;
    float *y = xmalloc(n * sizeof(float));
    const QuantStats nf = qstats(x, n, QUANT_NF4, bs, false, y), fp = qstats(x, n, QUANT_FP4, bs, true, y);
    const QuantStats i4 = qstats(x, n, QUANT_INT4, bs, false, y), dq = qstats(x, n, QUANT_NF4, bs, true, y);
    const char *name = l->matrix_name;
    figure_reconstruction(d, x, y, n, name);  // y: the NF4 + double quant reconstruction
    doc_subhead(d, "Block size: bits against error");
    doc_para(d, "Smaller blocks follow the local range more closely, but every block stores a scale. On the same "
                "matrix, for every block size qlora accepts:");
    block_sizes(d, x, n, y);
    doc_subhead(d, "Double quantization: 4.5 bits become 4.127");
    doc_para(d, "With blocks of %zu, an fp32 absmax adds 32 / %zu = %.3f bits to every weight, %.3f bits in all. "
                "QLoRA's double quantization quantizes those scales too: they are all positive and alike, so after "
                "subtracting their mean they fit 8-bit codes (bitsandbytes' dynamic map), in blocks of %d scales "
                "that each keep one fp32 scale of their own:", bs, bs, 32.0 / (double)bs, nf4_bits(bs, false),
             QUANT_DQ_BLOCK);
    char plain[200], mathml[900];
    snprintf(plain, sizeof plain, "4 + 32/%zu = %.3f bits   ->   4 + 8/%zu + 32/(%zu × %d) = %.3f bits", bs,
             nf4_bits(bs, false), bs, bs, QUANT_DQ_BLOCK, nf4_bits(bs, true));
    snprintf(mathml, sizeof mathml, "<mn>4</mn><mo>+</mo><mfrac><mn>32</mn><mn>%zu</mn></mfrac><mo>=</mo><mn>%.3f"
             "</mn><mspace width=\"1em\"/><mo>→</mo><mspace width=\"1em\"/><mn>4</mn><mo>+</mo><mfrac><mn>8</mn>"
             "<mn>%zu</mn></mfrac><mo>+</mo><mfrac><mn>32</mn><mrow><mn>%zu</mn><mo>×</mo><mn>%d</mn></mrow>"
             "</mfrac><mo>=</mo><mn>%.3f</mn>", bs, nf4_bits(bs, false), bs, bs, QUANT_DQ_BLOCK,
             nf4_bits(bs, true));
    doc_formula(d, plain, mathml);
    double max_rel, mean_rel;
    dq_scale_error(x, n, bs, &max_rel, &mean_rel);
    doc_para(d, "Measured on the quantized matrix by `quant.c`: %.4f bits per weight without double quantization "
                "and %.4f with it (these counts include the fp32 mean and any last partial block). The rebuilt "
                "scales are off by %.3f%% on average and %.3f%% at most, which moves the mean weight error by "
                "%+.2f%%.", nf.bits, dq.bits, 100 * mean_rel, 100 * max_rel, 100 * (dq.mae / nf.mae - 1));
    DocTable t;
    doc_table_begin(&t, "lrrr", "code book\tbits per weight\tmean |error|\tRMS error");
    doc_row(&t, "NF4, fp32 absmax\t%.3f\t%.4e\t%.4e", nf.bits, nf.mae, nf.rms);
    doc_row(&t, "NF4 + double quant\t%.3f\t%.4e\t%.4e", dq.bits, dq.mae, dq.rms);
    doc_row(&t, "FP4 + double quant\t%.3f\t%.4e\t%.4e", fp.bits, fp.mae, fp.rms);
    doc_row(&t, "INT4, fp32 absmax\t%.3f\t%.4e\t%.4e", i4.bits, i4.mae, i4.rms);
    char cap[512];
    snprintf(cap, sizeof cap, "Four 4-bit code books on `%s`, blocks of %zu", name, bs);
    doc_table_end(d, &t, cap);
    l->nf4_mae = dq.mae, l->fp4_mae = fp.mae, l->int4_mae = i4.mae;
    free(y);
}

void explain_nf4(Lesson *l) {
    size_t rows, cols;
    const float *x = explain_matrix(l, l->matrix_t, &rows, &cols);
    doc_section(&l->doc, "NF4: 16 levels from the normal distribution, and double quantization");
    nf4_levels(l, x, rows * cols, rows, cols);
    nf4_blocks(l, x, rows * cols);
}
