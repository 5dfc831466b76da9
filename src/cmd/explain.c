// cmd/explain.c: `qlora explain`, a guided walk through quantization for fine-tuning, every
// number computed by the project's own quantizers and memory model. With --out DIR it
// also writes SVG figures and an index.html that shows them with the numbers.
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd/cli.h"
#include "ds.h"
#include "explain.h"
#include "strbuf.h"
#include "memory.h"
#include "model.h"
#include "quant.h"
#include "svg.h"

// ---- report text: printed and kept for index.html ----------------------------------------------

// One run of the walkthrough: where figures go (NULL: none) and the HTML body built
// alongside the terminal output (stb_ds).
typedef struct {
    const char *out;
    char *html;
} Explain;

// printf to stdout, and the same text, escaped, into the page.
static void say(Explain *ex, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(Explain *ex, const char *fmt, ...) {
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fputs(line, stdout);
    sb_append_xml(&ex->html, line);
}

// A section heading, on the terminal and in the page.
static void section(Explain *ex, const char *title) {
    printf("\n== %s ==\n", title);
    sb_appendf(&ex->html, "</pre>\n<h2>");
    sb_append_xml(&ex->html, title);
    sb_appendf(&ex->html, "</h2>\n<pre>");
}

// Show figure file (written beside index.html) in the page, with its caption.
static void figure(Explain *ex, const char *file, const char *caption) {
    if (!ex->out) return;
    sb_appendf(&ex->html, "</pre>\n<figure><img src=\"");
    sb_append_xml(&ex->html, file);
    sb_appendf(&ex->html, "\" alt=\"");
    sb_append_xml(&ex->html, caption);
    sb_appendf(&ex->html, "\"/><figcaption>");
    sb_append_xml(&ex->html, caption);
    sb_appendf(&ex->html, "</figcaption></figure>\n<pre>");
}

// Write s as ex->out/name, and show it in the page with caption. Exits on failure.
static void write_figure(Explain *ex, Svg *s, const char *name, const char *caption) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", ex->out, name);
    Error err = {0};
    if (!svg_write(s, path, &err)) die_error(&err);
    figure(ex, name, caption);
}

// ---- the sections ----------------------------------------------------------------------------

// Section 1: one weight in FP32, FP16 and BF16, bit by bit; the formats' ranges; NF4's levels.
static void explain_formats(Explain *ex) {
    section(ex, "1. How one weight is stored: FP32, FP16, BF16");
    const float w = 0.3457f;
    const FloatFormat *fmts[3] = {&EXPLAIN_FP32, &EXPLAIN_FP16, &EXPLAIN_BF16};
    say(ex, "the weight 0.3457, rounded to nearest (ties to even) in each format:\n");
    say(ex, "%-5s %-40s %-22s %s\n", "", "sign | exponent | mantissa", "stored value", "rounding error");
    for (int k = 0; k < 3; k++) {
        uint32_t bits;
        double v = explain_round(w, fmts[k], &bits);
        char b[64];
        explain_bit_string(bits, fmts[k], b);
        say(ex, "%-5s %-40s %-22.12g %+.3e\n", fmts[k]->name, b, v, v - 0.3457);
    }
    say(ex, "\nrange and precision:\n");
    say(ex, "%-6s %14s %14s %12s %s\n", "format", "largest", "smallest>0", "step at 1", "levels");
    for (int k = 0; k < 3; k++) {
        const FloatFormat *f = fmts[k];
        int bias = (1 << (f->exp_bits - 1)) - 1;
        say(ex, "%-6s %14.6g %14.6g %12.3g %s\n", f->name, (2.0 - ldexp(1.0, -f->man_bits)) * ldexp(1.0, bias),
            ldexp(1.0, 1 - bias - f->man_bits), ldexp(1.0, -f->man_bits), "floating point");
    }
    say(ex, "%-6s %14s %14s %12s %s\n", "INT8", "127 x scale", "1 x scale", "scale", "256 evenly spaced");
    say(ex, "%-6s %14s %14s %12s %s\n", "INT4", "7 x scale", "1 x scale", "scale", "16 evenly spaced");
    say(ex, "%-6s %14s %14s %12s %s\n", "NF4", "absmax", "0.0796 x absmax", "varies", "16 normal quantiles");
    say(ex, "NF4 levels (x block absmax):");
    for (int i = 0; i < 16; i++) say(ex, "%s%.4f", i ? " " : " ", (double)NF4_CODE[i]);
    say(ex, "\n");
    if (!ex->out) return;
    Svg s;
    svg_begin(&s, 760, 250, "How 0.3457 is stored: sign, exponent and mantissa bits");
    const char *colors[3] = {"#d62728", "#1f77b4", "#2ca02c"};
    for (int k = 0; k < 3; k++) {
        const FloatFormat *f = fmts[k];
        uint32_t bits;
        double v = explain_round(w, f, &bits);
        int n = 1 + f->exp_bits + f->man_bits;
        double y = 55 + 62.0 * k, cw = 18;
        svg_text(&s, 10, y + 15, "start", 13, "#222", "%s", f->name);
        for (int i = 0; i < n; i++) {
            int bit = (bits >> (n - 1 - i)) & 1, part = i == 0 ? 0 : i <= f->exp_bits ? 1 : 2;
            svg_rect(&s, 60 + cw * i, y, cw - 2, 22, colors[part], NULL);
            svg_text(&s, 60 + cw * i + 8, y + 16, "middle", 12, "white", "%d", bit);
        }
        svg_text(&s, 60, y + 38, "start", 11, "#444", "stored %.10g (error %+.2e)", v, v - 0.3457);
    }
    const char *labels[3] = {"sign", "exponent", "mantissa"};
    Svg *sp = &s;
    for (int i = 0; i < 3; i++) {
        svg_rect(sp, 640, 50 + 18.0 * i, 12, 12, colors[i], NULL);
        svg_text(sp, 658, 60 + 18.0 * i, "start", 12, "#222", "%s", labels[i]);
    }
    write_figure(ex, &s, "bit_layouts.svg", "Bit layouts of 0.3457 in FP32, FP16 and BF16");
}

// Section 2: a 7B model's bytes in each format, and each fine-tuning method's total (memory.h).
static void explain_memory_7b(Explain *ex) {
    section(ex, "2. Memory of a 7B-parameter model");
    const double n = 7e9, gib = 1073741824.0;
    say(ex, "7e9 parameters in each format (GiB = 2^30 bytes):\n");
    say(ex, "  FP32 %6.2f GiB   FP16/BF16 %6.2f GiB   INT8 %6.2f GiB   INT4 %6.2f GiB\n", n * 4 / gib, n * 2 / gib,
        n / gib, n / 2 / gib);
    say(ex, "  NF4 with fp32 block scales %.2f GiB (%.3f bits); with double quantization %.2f GiB (%.3f bits)\n",
        n * nf4_bits(64, false) / 8 / gib, nf4_bits(64, false), n * nf4_bits(64, true) / 8 / gib, nf4_bits(64, true));
    ModelShape s;
    shape_preset("llama-7b", &s);
    MemJob j = {.B = 1, .T = 512, .lora_r = 8, .gradient_checkpointing = true, .quant_blocksize = 64};
    for (int t = 0; t < LORA_N_TARGETS; t++) j.targets[t] = true;  // every linear
    MemRow rows[MEM_N_METHODS];
    memory_predict(&s, &j, rows);
    say(ex, "\nwhat training adds (LLaMA-7B, %.3g parameters; batch 1 x 512, gradient checkpointing, LoRA r=8 on all "
        "linears: %.3g trainable):\n", shape_params(&s), shape_lora_params(&s, 8, j.targets));
    say(ex, "%-17s %9s %9s %9s %9s %9s   (GiB)\n", "method", "weights", "grads", "optimizer", "activ.", "total");
    for (int m = 0; m < MEM_N_METHODS; m++) {
        const MemRow *r = &rows[m];
        say(ex, "%-17s %9.2f %9.2f %9.2f %9.2f %9.2f\n", r->name, (r->weights + r->quant_constants + r->trainable) / gib,
            r->gradients / gib, r->optimizer / gib, r->activations / gib, r->total / gib);
    }
    say(ex, "full fine-tuning needs 16 B per parameter in fp32 (weights, gradients, two Adam moments), 12 B in 16-bit "
        "mixed precision; LoRA and QLoRA pay that only for the adapters.\n");
    if (!ex->out) return;
    Svg g;
    svg_begin(&g, 760, 380, "LLaMA-7B fine-tuning memory by method (GiB)");
    double top = 0;
    for (int m = 0; m < MEM_N_METHODS; m++) top = fmax(top, rows[m].total / gib);
    svg_axes(&g, 0, MEM_N_METHODS, 0, top * 1.05, false, NULL, "GiB");
    const char *cols[4] = {SVG_PALETTE[0], SVG_PALETTE[3], SVG_PALETTE[2], SVG_PALETTE[4]};
    for (int m = 0; m < MEM_N_METHODS; m++) {
        const MemRow *r = &rows[m];
        double parts[4] = {(r->weights + r->quant_constants) / gib, r->trainable / gib,
                           (r->gradients + r->optimizer) / gib, r->activations / gib};
        double base = 0, x = svg_x(&g, m + 0.15), w = svg_x(&g, m + 0.85) - x;
        for (int k = 0; k < 4; k++) {
            svg_rect(&g, x, svg_y(&g, base + parts[k]), w, svg_y(&g, base) - svg_y(&g, base + parts[k]), cols[k], NULL);
            base += parts[k];
        }
        svg_text(&g, x + w / 2, svg_y(&g, base) - 4, "middle", 10, "#222", "%.1f", base);
        svg_text(&g, x + w / 2, g.y0 + g.ph + 30, "middle", 9, "#222", "%s", r->name);
    }
    const char *labels[4] = {"frozen weights + constants", "trainable weights", "gradients + AdamW", "activations"};
    svg_legend(&g, labels + 0, cols, 4);
    g.x0 += 0;
    write_figure(ex, &g, "memory.svg", "Memory of fine-tuning LLaMA-7B with each method (predicted by qlora memory)");
}

// Section 3: symmetric vs asymmetric INT8 on normal weights, errors against scale/4.
static void explain_int8(Explain *ex) {
    section(ex, "3. INT8: symmetric (absmax) vs asymmetric (zero-point)");
    const size_t n = 10000;
    float *x = xmalloc(n * sizeof(float)), *y = xmalloc(n * sizeof(float));
    Rng r;
    rng_seed(&r, 1);
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * rng_normal(&r);
    float mn = x[0], mx = x[0], amax = 0;
    for (size_t i = 0; i < n; i++) {
        mn = fminf(mn, x[i]);
        mx = fmaxf(mx, x[i]);
        amax = fmaxf(amax, fabsf(x[i]));
    }
    say(ex, "10,000 weights drawn from N(0, 0.5): min %.4f, max %.4f, absmax %.4f\n", mn, mx, amax);
    QIntTensor q;
    Error err = {0};
    CHECK(qint_quantize(&q, x, n, QUANT_INT8, n + (n % 2), "int8", &err));
    qint_dequantize(&q, 0, n, y);
    double e_sym = explain_mean_abs_err(x, y, n);
    say(ex, "symmetric:  scale = absmax / 127 = %.6f; q = round(x / scale) in [-127, 127]\n", q.scale[0]);
    say(ex, "            mean absolute error %.6f (uniform rounding predicts scale/4 = %.6f)\n", e_sym, q.scale[0] / 4);
    qint_free(&q);
    CHECK(qint_quantize(&q, x, n, QUANT_INT8_ASYM, n + (n % 2), "int8", &err));
    qint_dequantize(&q, 0, n, y);
    double e_asym = explain_mean_abs_err(x, y, n);
    say(ex, "asymmetric: scale = (max - min) / 255 = %.6f; zero-point z = round(-min / scale) = %d (clamped to "
        "[0, 255]);\n            q = clamp(round(x / scale) + z, 0, 255)\n", q.scale[0], q.zero[0]);
    say(ex, "            mean absolute error %.6f (scale/4 = %.6f)\n", e_asym, q.scale[0] / 4);
    say(ex, "done correctly, both are about scale/4: the zero-point must be rounded to an integer and q clamped to "
        "the code range, or the error grows. Asymmetric wins only when the data are lopsided; weights are "
        "centred on 0, so symmetric is as good and simpler.\n");
    qint_free(&q);
    free(x);
    free(y);
}

// explain_quant_stats, or exit with its error (a real model's weights may hold NaN).
static QuantStats stats(const float *x, size_t n, QuantType t, size_t bs, bool dq, float *y, const char *label) {
    QuantStats st;
    Error err = {0};
    if (!explain_quant_stats(&st, x, n, t, bs, dq, y, label, &err)) die_error(&err);
    return st;
}

// Figure: x's values divided by their block-of-64 absmax, histogram, with the 16 NF4 levels.
static void figure_nf4_histogram(Explain *ex, const float *x, size_t n) {
    Svg s;
    enum { BINS = 80 };
    double hx[BINS], hy[BINS] = {0};
    for (size_t b = 0; b < n / 64; b++) {
        float amax = 0;
        for (int i = 0; i < 64; i++) amax = fmaxf(amax, fabsf(x[b * 64 + i]));
        for (int i = 0; i < 64; i++) {
            int bin = (int)((x[b * 64 + i] / amax + 1.0f) / 2.0f * BINS);
            hy[bin < 0 ? 0 : bin >= BINS ? BINS - 1 : bin] += 1;
        }
    }
    double hmax = 0;
    for (int i = 0; i < BINS; i++) {
        hx[i] = -1 + (i + 0.5) * 2.0 / BINS;
        hmax = fmax(hmax, hy[i]);
    }
    svg_begin(&s, 760, 380, "Weights divided by their block's absmax, and the 16 NF4 levels");
    svg_axes(&s, -1, 1, 0, hmax * 1.1, false, "x / absmax of its block of 64", "count");
    for (int i = 0; i < BINS; i++)
        svg_rect(&s, svg_x(&s, hx[i] - 1.0 / BINS), svg_y(&s, hy[i]), svg_x(&s, 2.0 / BINS) - svg_x(&s, 0) - 1,
                 svg_y(&s, 0) - svg_y(&s, hy[i]), "#9ecae1", NULL);
    for (int i = 0; i < 16; i++)
        svg_line(&s, svg_x(&s, NF4_CODE[i]), s.y0, svg_x(&s, NF4_CODE[i]), s.y0 + s.ph, "#d62728", 1.2, true);
    write_figure(ex, &s, "nf4_histogram.svg", "Block-normalised weights (blue) and the NF4 levels (red): the levels are "
                                     "denser where weights are common");
}

// Figure: 1,500 of x's weights against their NF4 + double-quant reconstruction y.
static void figure_dequant_scatter(Explain *ex, const float *x, const float *y, size_t n) {
    Svg s;
    enum { PTS = 1500 };
    double px[PTS], py[PTS], lim = 0;
    for (int i = 0; i < PTS; i++) {
        size_t idx = (size_t)i * (n / PTS);
        px[i] = x[idx];
        py[i] = y[idx];
        lim = fmax(lim, fabs(px[i]));
    }
    svg_begin(&s, 520, 520, "Original vs NF4 + double quant (1,500 of 589,824 weights)");
    svg_axes(&s, -lim, lim, -lim, lim, false, "original weight", "dequantized weight");
    double d[2] = {-lim, lim};
    svg_polyline(&s, d, d, 2, "#bbb", 1);
    svg_points(&s, px, py, PTS, SVG_PALETTE[0], 1.6);
    write_figure(ex, &s, "dequant_scatter.svg", "Each weight snaps to one of 16 levels scaled by its block's absmax");
}

// Section 4: NF4 with and without double quantization, NF4 vs FP4 vs INT4, and the
// block-size trade-off, on a GPT-2-like random matrix.
static void explain_nf4(Explain *ex) {
    section(ex, "4. NF4 with blocks of 64, double quantization, and the block-size trade-off");
    const size_t n = 768 * 768;
    float *x = xmalloc(n * sizeof(float)), *y = xmalloc(n * sizeof(float));
    Rng r;
    rng_seed(&r, 2);
    for (size_t i = 0; i < n; i++) x[i] = 0.02f * rng_normal(&r);  // a GPT-2-like 768x768 weight
    QuantStats nf = stats(x, n, QUANT_NF4, 64, false, y, "weights"), nfdq = stats(x, n, QUANT_NF4, 64, true, y, "weights");
    say(ex, "a 768 x 768 matrix of N(0, 0.02) weights (as GPT-2 initialises them), blocks of 64:\n");
    say(ex, "  NF4, fp32 absmax:      %.3f bits/param, %.2fx smaller than FP32, mean abs error %.3e, RMS %.3e\n",
        nf.bits, 32 / nf.bits, nf.mae, nf.rms);
    say(ex, "  NF4 + double quant:    %.3f bits/param, %.2fx smaller than FP32, mean abs error %.3e, RMS %.3e\n",
        nfdq.bits, 32 / nfdq.bits, nfdq.mae, nfdq.rms);
    say(ex, "  double quantization stores each block's absmax as an 8-bit code (blocks of 256 codes share an fp32\n"
        "  scale, after subtracting the mean): 0.5 -> %.3f bits of constants per weight, for %.1f%% more error.\n",
        nfdq.bits - 4, 100 * (nfdq.mae / nf.mae - 1));
    QuantStats fp = stats(x, n, QUANT_FP4, 64, true, y, "weights"), i4 = stats(x, n, QUANT_INT4, 64, false, y, "weights");
    say(ex, "\nsame bits, different 4-bit code books (blocks of 64; NF4/FP4 with double quant):\n");
    say(ex, "  NF4  mean abs error %.3e  (%.3f bits)\n  FP4  mean abs error %.3e  (%.3f bits)\n"
        "  INT4 mean abs error %.3e  (%.3f bits, fp32 scales)\n", nfdq.mae, nfdq.bits, fp.mae, fp.bits, i4.mae, i4.bits);
    say(ex, "  NF4's levels follow the normal distribution of weights, so it wastes fewer codes on rare values.\n");
    say(ex, "\nblock size: bits per weight vs error (NF4 with fp32 absmax, and with double quant):\n");
    say(ex, "  %6s %10s %12s %10s %12s\n", "block", "bits", "mean abs err", "bits (dq)", "mean abs err");
    double e1[8], e2[8], ei4[8], efp[8], xs[8];
    int k = 0;
    for (size_t bs = 32; bs <= 4096; bs *= 2, k++) {
        QuantStats a = stats(x, n, QUANT_NF4, bs, false, y, "weights"), b = stats(x, n, QUANT_NF4, bs, true, y, "weights");
        xs[k] = (double)bs;
        e1[k] = a.mae * 1e3;
        e2[k] = b.mae * 1e3;
        efp[k] = stats(x, n, QUANT_FP4, bs, false, y, "weights").mae * 1e3;
        ei4[k] = stats(x, n, QUANT_INT4, bs, false, y, "weights").mae * 1e3;
        say(ex, "  %6zu %10.3f %12.3e %10.3f %12.3e\n", bs, a.bits, a.mae, b.bits, b.mae);
    }
    say(ex, "  smaller blocks track local ranges (less error) but cost more scale bits; 64 is QLoRA's choice.\n");
    if (ex->out) {
        Svg s;
        svg_begin(&s, 760, 400, "Mean absolute error vs block size (768x768, N(0, 0.02))");
        double top = 0;
        for (int i = 0; i < k; i++) top = fmax(top, fmax(ei4[i], efp[i]));
        svg_axes(&s, 32, 4096, 0, top * 1.1, true, "block size (values per scale)", "mean abs error (x 1e-3)");
        svg_polyline(&s, xs, e1, (size_t)k, SVG_PALETTE[0], 2);
        svg_polyline(&s, xs, e2, (size_t)k, SVG_PALETTE[2], 2);
        svg_polyline(&s, xs, efp, (size_t)k, SVG_PALETTE[3], 2);
        svg_polyline(&s, xs, ei4, (size_t)k, SVG_PALETTE[1], 2);
        const char *labels[4] = {"NF4 (fp32 absmax)", "NF4 + double quant", "FP4", "INT4"};
        const char *colors[4] = {SVG_PALETTE[0], SVG_PALETTE[2], SVG_PALETTE[3], SVG_PALETTE[1]};
        svg_legend(&s, labels, colors, 4);
        write_figure(ex, &s, "blocksize.svg", "Error vs block size for NF4, NF4 + double quant, FP4 and INT4");

        figure_nf4_histogram(ex, x, n);
        (void)stats(x, n, QUANT_NF4, 64, true, y, "weights");  // y: the NF4 + DQ reconstruction
        figure_dequant_scatter(ex, x, y, n);
    }
    free(x);
    free(y);
}

// Section 5 (--model): NF4 + double quant error of each linear of the model in dir.
static void explain_model(Explain *ex, const char *dir) {
    section(ex, "5. The same statistics on a real model's weights");
    Model m;
    QuantConfig qc = {QUANT_NONE, 64, true};
    Error err = {0};
    if (!model_load(&m, dir, &qc, &err)) die_error(&err);
    say(ex, "%s: NF4 + double quant, blocks of 64, per linear ([out, in] as bitsandbytes stores it)\n", dir);
    say(ex, "%-6s %-12s %12s %12s %12s %10s\n", "layer", "module", "weights", "mean |w|", "mean abs err", "rel. err");
    static const char *const MOD[LORA_N_TARGETS] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
    double tot_err = 0, tot_w = 0;
    for (int l = 0; l < m.cfg.n_layer; l++)
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const QLinear *q = &m.blocks[l].lin[t];
            size_t n = q->in * q->out;
            if (q->in % 64) continue;
            float *y = xmalloc(n * sizeof(float));
            char label[600];
            snprintf(label, sizeof label, "%s: h.%d.%s", dir, l, MOD[t]);
            QuantStats st = stats(q->w, n, QUANT_NF4, 64, true, y, label);
            double mw = 0;
            for (size_t i = 0; i < n; i++) mw += fabs((double)q->w[i]);
            mw /= (double)n;
            say(ex, "%-6d %-12s %12zu %12.4e %12.4e %9.2f%%\n", l, MOD[t], n, mw, st.mae, 100 * st.mae / mw);
            tot_err += st.mae * (double)n;
            tot_w += mw * (double)n;
            free(y);
        }
    if (tot_w > 0) say(ex, "overall: mean abs error is %.2f%% of the mean |w|\n", 100 * tot_err / tot_w);
    model_free(&m);
}

// Section 6: LoRA's trainable parameters for GPT-2's linears and for LLaMA-7B.
static void explain_lora(Explain *ex) {
    section(ex, "6. LoRA: how few parameters are trained");
    say(ex, "a linear W [out, in] is frozen; LoRA learns A [r, in] and B [out, r] and adds (alpha/r) B A x:\n"
        "r x (in + out) trainable parameters instead of in x out.\n");
    struct { const char *name; size_t in, out; } lin[4] = {
        {"c_attn (768 -> 2304)", 768, 2304}, {"attn.c_proj (768 -> 768)", 768, 768},
        {"c_fc (768 -> 3072)", 768, 3072}, {"mlp.c_proj (3072 -> 768)", 3072, 768}};
    for (int i = 0; i < 4; i++)
        say(ex, "  GPT-2 small %-26s full %9zu, r=8: %6zu (%.2f%%)\n", lin[i].name, lin[i].in * lin[i].out,
            8 * (lin[i].in + lin[i].out), 100.0 * 8 * (lin[i].in + lin[i].out) / (double)(lin[i].in * lin[i].out));
    ModelShape s;
    bool all[LORA_N_TARGETS], attn[LORA_N_TARGETS] = {true, false, false, false};
    for (int t = 0; t < LORA_N_TARGETS; t++) all[t] = true;
    shape_preset("gpt2", &s);
    say(ex, "GPT-2 small (%.0f parameters): r=8 on all linears %.0f trainable, on c_attn only %.0f\n", shape_params(&s),
        shape_lora_params(&s, 8, all), shape_lora_params(&s, 8, attn));
    shape_preset("llama-7b", &s);
    say(ex, "LLaMA-7B: r=64 on all linears %.4g trainable (%.2f%%): its fp32 weights, gradients and AdamW moments\n"
        "take %.2f GiB, next to %.2f GiB for the NF4 + double quant base.\n", shape_lora_params(&s, 64, all),
        100 * shape_lora_params(&s, 64, all) / shape_params(&s), 16 * shape_lora_params(&s, 64, all) / 1073741824.0,
        (shape_linear_params(&s) * nf4_bits(64, true) / 8 + 4 * (shape_params(&s) - shape_linear_params(&s))) / 1073741824.0);
}

typedef struct {
    const char *out, *model;
} ExplainArgs;

static const CliOption EXPLAIN_OPTIONS[] = {
    {"--out", CLI_STR(ExplainArgs, out), "DIR", "also write SVG figures and an index.html showing them into DIR"},
    {"--model", CLI_STR(ExplainArgs, model), "DIR", "add the statistics of a real model's weights"},
    CLI_END};

static const CliCommand EXPLAIN = {
    .name = "explain",
    .about =
    "A guided walkthrough of quantization for fine-tuning: how FP32/FP16/BF16 store a weight,\n"
    "what a 7B model needs in each format, symmetric vs asymmetric INT8, NF4 with double\n"
    "quantization and the block-size trade-off, NF4 vs FP4 vs INT4, and LoRA's parameter\n"
    "count. Every number comes from qlora's own quantizers.\n",
    .options = EXPLAIN_OPTIONS};

// ex->out/index.html: the walkthrough's text with the figures in place. Exits on failure.
static void write_page(const Explain *ex) {
    char path[4096];
    snprintf(path, sizeof path, "%s/index.html", ex->out);
    char *page = NULL;
    sb_appendf(&page, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>"
                      "<title>qlora explain</title><style>body{font-family:sans-serif;max-width:980px;"
                      "margin:2em auto;padding:0 1em}pre{background:#f6f6f6;padding:1em;overflow-x:auto}"
                      "img{max-width:100%%;border:1px solid #ddd}</style></head><body>\n"
                      "<h1>QLoRA, computed: quantization for fine-tuning</h1>\n<pre>");
    for (size_t i = 0; i < arrlenu(ex->html); i++) arrput(page, ex->html[i]);
    sb_appendf(&page, "</pre>\n</body></html>\n");
    Error err = {0};
    if (!write_file_atomic(path, page, arrlenu(page), &err)) die_error(&err);
    arrfree(page);
    printf("\nwrote %s/index.html and the SVG figures beside it\n", ex->out);
}

int cmd_explain(int argc, char **argv) {
    ExplainArgs a = {0};
    int rc = cli_parse(&EXPLAIN, &a, argc, argv);
    if (rc != CLI_RUN) return rc;
    if (a.out && mkdir(a.out, 0755) != 0 && errno != EEXIST)
        die(EXIT_RUNTIME, "%s: cannot create folder: %s", a.out, strerror(errno));
    Explain ex = {a.out, NULL};
    say(&ex, "qlora explain: quantization for fine-tuning, computed by qlora's own code\n");
    explain_formats(&ex);
    explain_memory_7b(&ex);
    explain_int8(&ex);
    explain_nf4(&ex);
    if (a.model) explain_model(&ex, a.model);
    explain_lora(&ex);
    if (a.out) write_page(&ex);
    arrfree(ex.html);
    return 0;
}
