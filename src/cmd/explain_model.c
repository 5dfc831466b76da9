// cmd/explain_model.c: the lesson's sections on the real model: quantizing every linear of it
// (5), LoRA (6) and one QLoRA training step traced through qlora's own functions (7). See
// cmd/lesson.h.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/lesson.h"
#include "ds.h"
#include "explain.h"
#include "optim.h"
#include "qlinear.h"
#include "svg.h"
#include "trainer.h"

// ---- 5. quantizing a real model ------------------------------------------------------------------

// One linear of the model, quantized as the model holds it, against its fp32 original.
typedef struct {
    size_t out, in, stored;  // stored: bytes of codes + constants as the model holds them
    double mean_w, mae;
} LinearStats;

// Linear t of block layer: its bytes as stored and its error against the fp32 weights.
static LinearStats linear_stats(const Lesson *l, int layer, int t) {
    const QLinear *f = &l->fp32.blocks[layer].lin[t], *q = &l->q.blocks[layer].lin[t];
    const size_t n = f->out * f->in;
    float *y = xmalloc(n * sizeof(float));
    qlinear_rows(q, 0, q->out, y);  // what the quantized layer multiplies with
    LinearStats s = {f->out, f->in, qlinear_weight_bytes(q) + qlinear_constant_bytes(q), 0, 0};
    double sum = 0, mx;
    for (size_t i = 0; i < n; i++) sum += fabs((double)f->w[i]);
    s.mean_w = sum / (double)n;
    explain_err_stats(f->w, y, n, &s.mae, &mx);
    free(y);
    return s;
}

// Figure: the model's bytes by part, fp32 against as stored.
static void figure_model_bytes(Doc *d, const ModelBytes *a, const ModelBytes *b, const char *stored) {
    const double mib = 1048576.0;
    const double parts[2][4] = {{a->linear_weights / mib, a->quant_constants / mib, a->embeddings / mib,
                                 a->norms_and_biases / mib},
                                {b->linear_weights / mib, b->quant_constants / mib, b->embeddings / mib,
                                 b->norms_and_biases / mib}};
    const double top = parts[0][0] + parts[0][1] + parts[0][2] + parts[0][3];
    Svg g;
    svg_begin(&g, 760, 300, "The model's bytes: fp32 against as stored for QLoRA (MiB)");
    svg_axes(&g, 0, 2, 0, top * 1.12, false, NULL, "MiB");
    const char *cols[4] = {SVG_PALETTE[0], SVG_PALETTE[3], SVG_PALETTE[2], SVG_PALETTE[4]};
    for (int m = 0; m < 2; m++) {
        double base = 0;
        const double x = svg_x(&g, m + 0.25), w = svg_x(&g, m + 0.75) - x;
        for (int k = 0; k < 4; k++) {
            svg_rect(&g, x, svg_y(&g, base + parts[m][k]), w, svg_y(&g, base) - svg_y(&g, base + parts[m][k]),
                     cols[k], NULL);
            base += parts[m][k];
        }
        svg_text(&g, x + w / 2, svg_y(&g, base) - 4, "middle", 11, "#222", "%.2f MiB", base);
        svg_text(&g, x + w / 2, g.y0 + g.ph + 16, "middle", 11, "#222", "%s", m ? stored : "fp32");
    }
    const char *labels[4] = {"linear weights", "quantization constants", "embeddings", "norms and biases"};
    svg_legend(&g, labels, cols, 4);
    doc_figure(d, &g, "Only the linears shrink; embeddings, norms and biases stay fp32, as bitsandbytes keeps them");
}

// Table: every linear of the model, bytes and error.
static void table_linears(Lesson *l, double *lin_params) {
    const LoraShapes shapes = model_lora_shapes(&l->q.cfg);
    DocTable t;
    doc_table_begin(&t, "llrrrrrr", "layer\tmodule\t[out, in]\tfp32\tstored\tmean |w|\tmean |error|\terror / "
                    "mean |w|");
    double err = 0, w = 0;
    *lin_params = 0;
    for (int layer = 0; layer < l->q.cfg.n_layer; layer++)
        for (int k = 0; k < shapes.n; k++) {
            const LinearStats s = linear_stats(l, layer, k);
            const double n = (double)(s.out * s.in);
            char b1[32], b2[32];
            doc_row(&t, "%d\t`%s`\t[%zu, %zu]\t%s\t%s\t%.4e\t%.4e\t%.2f%%", layer, shapes.path[k], s.out, s.in,
                    fmt_bytes(4 * n, b1, sizeof b1), fmt_bytes((double)s.stored, b2, sizeof b2), s.mean_w, s.mae,
                    100 * s.mae / s.mean_w);
            err += s.mae * n;
            w += s.mean_w * n;
            *lin_params += n;
        }
    char cap[256];
    snprintf(cap, sizeof cap, "Every linear of `%s`: bytes in fp32 and as stored (codes + constants), and the "
             "error of its weights; over all of them the mean error is %.2f%% of the mean |w|", l->a.model,
             100 * err / w);
    doc_table_end(&l->doc, &t, cap);
}

void explain_real_model(Lesson *l) {
    Doc *d = &l->doc;
    const char *stored = quant_name(l->q.quant.type);
    char how[96];
    snprintf(how, sizeof how, "%s%s, blocks of %zu", stored, l->q.quant.double_quant ? " + double quantization" : "",
             l->q.quant.blocksize);
    doc_section(d, "Quantizing a real model: every linear, before and after");
    double lin_params;
    const double all = model_param_count(&l->q.cfg);
    doc_para(d, "bitsandbytes, and so QLoRA, quantizes the linear layers of the transformer blocks and keeps the "
                "embeddings, norms and biases in 16 or 32 bits. qlora does the same. Here is every linear of "
                "`%s`, loaded as the job stores it (%s), against the fp32 original. A matrix of n weights in "
                "blocks of b takes n/2 bytes of 4-bit codes, one byte per block for its 8-bit scale, and with "
                "double quantization 4 bytes per %d blocks plus 4 for the mean; the error is measured against the "
                "mean size of the weights:", l->a.model, how, QUANT_DQ_BLOCK);
    char plain[200], mathml[1200];
    snprintf(plain, sizeof plain, "bytes = n/2 + n/b + 4·⌈n/(%d b)⌉ + 4,   relative error = mean|w − ŵ| / mean|w|",
             QUANT_DQ_BLOCK);
    snprintf(mathml, sizeof mathml, "<mtext>bytes</mtext><mo>=</mo><mfrac><mi>n</mi><mn>2</mn></mfrac><mo>+</mo>"
             "<mfrac><mi>n</mi><mi>b</mi></mfrac><mo>+</mo><mn>4</mn><mrow><mo>⌈</mo><mfrac><mi>n</mi><mrow><mn>%d"
             "</mn><mi>b</mi></mrow></mfrac><mo>⌉</mo></mrow><mo>+</mo><mn>4</mn><mo>,</mo><mspace width=\"1em\"/>"
             "<mtext>relative error</mtext><mo>=</mo><mfrac><mrow><mtext>mean</mtext><mo>|</mo><mi>w</mi><mo>−"
             "</mo><mover><mi>w</mi><mo>^</mo></mover><mo>|</mo></mrow><mrow><mtext>mean</mtext><mo>|</mo><mi>w"
             "</mi><mo>|</mo></mrow></mfrac>", QUANT_DQ_BLOCK);
    doc_formula(d, plain, mathml);
    table_linears(l, &lin_params);
    const ModelBytes a = model_bytes(&l->fp32), b = model_bytes(&l->q);
    DocTable t;
    doc_table_begin(&t, "lrr", "part\tfp32\tas stored");
    char b1[32], b2[32];
    const struct { const char *name; size_t x, y; } rows[5] = {
        {"linear weights", a.linear_weights, b.linear_weights}, {"quantization constants", 0, b.quant_constants},
        {"embeddings", a.embeddings, b.embeddings}, {"norms and biases", a.norms_and_biases, b.norms_and_biases},
        {"total", a.linear_weights + a.embeddings + a.norms_and_biases,
         b.linear_weights + b.quant_constants + b.embeddings + b.norms_and_biases}};
    for (int i = 0; i < 5; i++)
        doc_row(&t, "%s\t%s\t%s", rows[i].name, fmt_bytes((double)rows[i].x, b1, sizeof b1),
                fmt_bytes((double)rows[i].y, b2, sizeof b2));
    doc_table_end(d, &t, "The whole model's bytes (`model_bytes`, what the loader allocated)");
    figure_model_bytes(d, &a, &b, how);
    size_t n1, n2;
    const size_t n_eval = arrlenu(l->val.ex) < 64 ? arrlenu(l->val.ex) : 64;
    const double l1 = explain_eval(&l->fp32, NULL, &l->val, n_eval, 16, &n1);
    const double l2 = explain_eval(&l->q, NULL, &l->val, n_eval, 16, &n2);
    Prediction p;
    explain_predict("llama-7b", 8, 512, l->a.blocksize, &p);
    char c1[48];
    doc_para(d, "The linears hold %.1f%% of this model's %s parameters, so the whole model shrinks %.2f times, "
                "less than the linears' %.2f (a large model's linears hold more of it: LLaMA-7B's, %.1f%%). What "
                "matters is whether the model still predicts as well: on the first %zu held-out examples of the "
                "job (%zu predicted tokens), the mean loss is %.5f with fp32 weights and %.5f with the quantized "
                "ones (%+.2f%%).", 100 * lin_params / all, explain_count(all, c1, sizeof c1),
             (double)rows[4].x / (double)rows[4].y,
             (double)a.linear_weights / (double)(b.linear_weights + b.quant_constants),
             100 * p.linear_params / p.params, n_eval, n2, l1, l2, 100 * (l2 / l1 - 1));
}

// ---- 6. LoRA -------------------------------------------------------------------------------------

// Mean loss per predicted token of the first n examples of data, as one batch, no dropout.
static double batch_loss(const Model *m, const LoraSet *lora, const Dataset *data, size_t n) {
    size_t T = 1, *order = xmalloc(n * sizeof(size_t)), count = 0, pred = 0;
    for (size_t i = 0; i < n; i++) T = data->ex[i].len > T ? data->ex[i].len : T, order[i] = i;
    int *tok = xmalloc(n * T * sizeof(int)), *tgt = xmalloc(n * T * sizeof(int));
    Acts *a = acts_create(m, lora, n, T, ACTS_INFER);
    const size_t Tb = data_batch(data, order, 0, n, tok, tgt, &pred);
    const double loss = model_forward(m, lora, a, tok, tgt, n, Tb, &count, NULL);
    acts_free(a);
    free(order);
    free(tok);
    free(tgt);
    return count ? loss / (double)count : 0;
}

// Figure: W, A and B of one linear drawn to scale.
static void figure_lora_shapes(Doc *d, size_t out, size_t in, int r, const char *name) {
    const double big = (double)(out > in ? out : in), k = 230.0 / big;  // px per row/column
    const double wh = out * k, ww = in * k, rr = fmax(r * k, 3);
    const size_t R = (size_t)r;
    Svg s;
    svg_begin(&s, 760, 360, "LoRA's matrices to scale: W is frozen, only A and B are trained");
    const double y0 = 60, x0 = 60, bx = x0 + ww + 110, ax = bx + rr + 40;
    svg_rect(&s, x0, y0, ww, wh, "#c6dbef", "#6b8fb3");
    svg_text(&s, x0 + ww / 2, y0 + wh + 18, "middle", 13, "#222", "W [%zu × %zu]", out, in);
    svg_text(&s, x0 + ww / 2, y0 + wh + 34, "middle", 11, "#444", "frozen (NF4): %zu weights", out * in);
    svg_text(&s, (x0 + ww + bx) / 2, y0 + wh / 2, "middle", 24, "#222", "+");
    svg_rect(&s, bx, y0, rr, wh, "#fdae6b", "#d6604d");
    svg_text(&s, bx + rr / 2, y0 + wh + 18, "middle", 13, "#222", "B [%zu × %d]", out, r);
    svg_rect(&s, ax, y0, ww, rr, "#fdae6b", "#d6604d");
    svg_text(&s, ax + ww / 2, y0 + rr + 18, "middle", 13, "#222", "A [%d × %zu]", r, in);
    svg_text(&s, ax, y0 + rr + 60, "start", 12, "#444", "trained: B %zu + A %zu = %zu weights", out * R, R * in,
             R * (out + in));
    svg_text(&s, ax, y0 + rr + 80, "start", 12, "#444", "%.2f%% of W's", 100.0 * (double)(R * (out + in)) /
             (double)(out * in));
    char cap[256];
    snprintf(cap, sizeof cap, "`%s` of the model and its adapter at rank %d, drawn to scale", name, r);
    doc_figure(d, &s, cap);
}

// Trainable parameters of rank r on the job's targets of model m.
static double lora_count(const Lesson *l, int r) {
    LoraSet s;
    explain_make_adapter(l, &l->q, &s);
    double n = 0;
    for (int i = 0; i < s.n_layer * LORA_N_TARGETS; i++)
        if (s.lin[i].A) n += (double)r * (double)(s.lin[i].in + s.lin[i].out);
    lora_free(&s);
    return n;
}

// Table: LoRA on each linear of a block.
static void table_lora(Lesson *l, const LoraSet *lora) {
    const LoraShapes shapes = model_lora_shapes(&l->q.cfg);
    const int r = lora->r;
    DocTable t;
    doc_table_begin(&t, "llrrr", "module\tW [out, in]\tin × out\tr (in + out)\tshare");
    for (int k = 0; k < shapes.n; k++)
        doc_row(&t, "`%s`%s\t[%zu, %zu]\t%zu\t%zu\t%.2f%%", shapes.path[k], lora->targets[k] ? "" : " (no adapter)",
                shapes.out[k], shapes.in[k], shapes.in[k] * shapes.out[k], (size_t)r * (shapes.in[k] + shapes.out[k]),
                100.0 * r * (double)(shapes.in[k] + shapes.out[k]) / (double)(shapes.in[k] * shapes.out[k]));
    char cap[160];
    snprintf(cap, sizeof cap, "The linears of one block of the model, and LoRA's parameters for each at r = %d", r);
    doc_table_end(&l->doc, &t, cap);
}

// Table: what the rank does to the count and the scale.
static void table_ranks(Lesson *l, const LoraSet *lora) {
    const double all = model_param_count(&l->q.cfg);
    DocTable t;
    char cap[160];
    doc_table_begin(&t, "rrrrr", "r\ttrainable\tshare of the model\tα / r\tα / √r (rsLoRA)");
    for (int rr = 4; rr <= 64; rr *= 2) {
        const double n = lora_count(l, rr);
        doc_row(&t, "%d\t%.0f\t%.3f%%\t%.4g\t%.4g", rr, n, 100 * n / all, lora->alpha / rr, lora->alpha / sqrt(rr));
    }
    snprintf(cap, sizeof cap, "Rank against trainable parameters (the job's targets) and scale (α = %g)",
             (double)lora->alpha);
    doc_table_end(&l->doc, &t, cap);
}

void explain_lora(Lesson *l) {
    Doc *d = &l->doc;
    LoraSet lora;
    explain_make_adapter(l, &l->q, &lora);
    doc_section(d, "LoRA: a low-rank update on a frozen weight");
    doc_para(d, "Fine-tuning changes each weight matrix W into W + ΔW. LoRA (Hu et al., 2021) bets that the change "
                "a new task needs has low rank: ΔW = B A, with A of r × in and B of out × r for a small rank r. W "
                "stays frozen (in QLoRA, in NF4) and only A and B are trained; the layer computes");
    doc_formula(d, "y = W x + b + (α / r) · B (A x)",
                "<mi>y</mi><mo>=</mo><mi>W</mi><mi>x</mi><mo>+</mo><mi>b</mi><mo>+</mo><mfrac><mi>α</mi><mi>r"
                "</mi></mfrac><mo>·</mo><mi>B</mi><mo>(</mo><mi>A</mi><mi>x</mi><mo>)</mo>");
    doc_para(d, "computing A x first, so the product B A (as large as W) is never formed. A linear of in × out "
                "weights trains r (in + out) parameters instead of in · out:");
    table_lora(l, &lora);
    char targets[256];
    explain_targets(l, targets, sizeof targets);
    const double all = model_param_count(&l->q.cfg);
    Prediction p;
    explain_predict("llama-7b", 64, 512, l->a.blocksize, &p);
    char c1[48], c2[48], c3[48];
    doc_para(d, "With the job's settings, r = %d on %s, the adapters of the whole model hold %s parameters, "
                "%.3f%% of its %s. On LLaMA-7B, r = 64 on every linear trains %s parameters, %.2f%% of it.",
             lora.r, targets, explain_count((double)lora.n_params, c1, sizeof c1), 100 * (double)lora.n_params / all,
             explain_count(all, c2, sizeof c2), explain_count(p.lora_params, c3, sizeof c3),
             100 * p.lora_params / p.params);
    size_t out, in;
    explain_matrix(l, l->matrix_t, &out, &in);
    const char *name = l->matrix_name;
    figure_lora_shapes(d, out, in, lora.r, name);
    doc_subhead(d, "Why B starts at zero");
    const size_t nb = arrlenu(l->val.ex) < 16 ? arrlenu(l->val.ex) : 16;
    const double base = batch_loss(&l->q, NULL, &l->val, nb), fresh = batch_loss(&l->q, &lora, &l->val, nb);
    Rng rng;
    rng_seed(&rng, 1);
    for (int i = 0; i < lora.n_layer * LORA_N_TARGETS; i++) {  // B drawn like A: U(-1/sqrt(in), 1/sqrt(in))
        LoraLinear *ll = &lora.lin[i];
        for (size_t k = 0; ll->B && k < ll->out * (size_t)lora.r; k++)
            ll->B[k] = (2 * rng_uniform(&rng) - 1) / sqrtf((float)ll->in);
    }
    const double noisy = batch_loss(&l->q, &lora, &l->val, nb);
    doc_para(d, "`lora.c` draws A at random (uniform in ±1/√in, as PEFT does) and sets B = 0, so B A = 0 and the "
                "adapted model starts out computing exactly what the base model computes. Measured on the first "
                "%zu held-out examples: the loss is %.9f without the adapter and %.9f with the fresh one "
                "(difference %.3g). Fill B with random values like A's and it %s %.6f%s. A is random, not "
                "zero, because B's gradient is (α/r) dy (A x)ᵀ: were A zero too, neither matrix would ever "
                "receive a gradient. In the first step only B moves (section 7).",
             nb, base, fresh, fresh - base, noisy > base ? "rises to" : "becomes", noisy,
             noisy > base ? ": training would start from a damaged model" : "");
    doc_subhead(d, "The α / r scale");
    doc_para(d, "The update is scaled by α / r (here α = %g). With α fixed, doubling r halves the scale, which "
                "keeps the size of the update about the same across ranks, so a learning rate that works at one "
                "rank works at another (rsLoRA argues for α / √r, which the job key `use_rslora` selects).",
             (double)lora.alpha);
    table_ranks(l, &lora);
    lora_free(&lora);
}

// ---- 7. one training step, traced --------------------------------------------------------------

// FNV-1a of p[0..n) continued from h.
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

// A checksum of every frozen weight of m: the block linears as stored (codes and constants,
// or fp32 values) with their biases, and the token embedding.
static uint64_t frozen_hash(const Model *m) {
    uint64_t h = 14695981039346656037ull;
    const int n_lin = model_lora_shapes(&m->cfg).n;
    for (int layer = 0; layer < m->cfg.n_layer; layer++)
        for (int t = 0; t < n_lin; t++) {
            const QLinear *q = &m->blocks[layer].lin[t];
            const size_t n = q->out * q->in;
            if (q->type == QUANT_NONE) h = fnv(h, q->w, n * sizeof(float));
            if (q->type == QUANT_NF4 || q->type == QUANT_FP4) {
                const Q4Tensor *c = &q->q4;
                h = fnv(h, c->codes, q4_code_bytes(c));
                if (c->double_quant) {
                    h = fnv(h, c->absmax_q, c->n_blocks);
                    h = fnv(h, c->absmax2, (c->n_blocks + QUANT_DQ_BLOCK - 1) / QUANT_DQ_BLOCK * sizeof(float));
                } else {
                    h = fnv(h, c->absmax, c->n_blocks * sizeof(float));
                }
            }
            if (q->type == QUANT_INT8) h = fnv(fnv(h, q->qi.q, n), q->qi.scale, q->qi.n_blocks * sizeof(float));
            if (q->bias) h = fnv(h, q->bias, q->out * sizeof(float));
        }
    return fnv(h, m->wte, (size_t)m->cfg.vocab_size * (size_t)m->cfg.n_embd * sizeof(float));
}

// What one traced step did.
typedef struct {
    size_t B, T, pred, n_mb;     // the first micro-batch: examples, padded length, predicted tokens
    StepResult res;
    double clip, max_grad_norm;
    size_t acts;                 // activation bytes of the mode
    uint64_t hash0, hash1;       // frozen weights before and after
    double dA, dB, moved_A, moved_B;  // gradient norms; largest parameter change
    double layer_dB[64];         // gradient norm of each layer's B matrices (first 64 layers)
    float *grads;                // a copy of the (clipped) gradients, caller frees
    size_t n_params;
} StepTrace;

// Norm of the gradients of the A (or B) matrices of layer (every layer with layer < 0).
static double grad_norm(const LoraSet *s, int layer, bool b) {
    double sq = 0;
    for (int i = 0; i < s->n_layer * LORA_N_TARGETS; i++) {
        const LoraLinear *ll = &s->lin[i];
        if (!ll->A || (layer >= 0 && i / LORA_N_TARGETS != layer)) continue;
        const float *g = b ? ll->dB : ll->dA;
        const size_t n = (size_t)s->r * (b ? ll->out : ll->in);
        for (size_t k = 0; k < n; k++) sq += (double)g[k] * g[k];
    }
    return sqrt(sq);
}

// Largest |change| of the A (or B) matrices of s against the parameter copy before.
static double moved(const LoraSet *s, const float *before, bool b) {
    double mx = 0;
    for (int i = 0; i < s->n_layer * LORA_N_TARGETS; i++) {
        const LoraLinear *ll = &s->lin[i];
        if (!ll->A) continue;
        const float *p = b ? ll->B : ll->A;
        const size_t off = (size_t)(p - s->params), n = (size_t)s->r * (b ? ll->out : ll->in);
        for (size_t k = 0; k < n; k++) mx = fmax(mx, fabs((double)p[k] - before[off + k]));
    }
    return mx;
}

// One step of the job from a fresh adapter, with the activations of mode, warm-up off and a
// constant learning rate (with warm-up the first step's rate is 0), measured into *s.
static void traced_step(Lesson *l, ActsMode mode, StepTrace *s) {
    memset(s, 0, sizeof *s);
    LoraSet lora;
    explain_make_adapter(l, &l->q, &lora);
    TrainerOptions o;
    trainer_options(&l->job, &l->train, &o);
    o.warmup = 0, o.schedule = LR_CONSTANT, o.total_steps = 1, o.acts_mode = mode;
    Trainer t;
    trainer_init(&t, &l->q, &lora, &l->train, (Dist){0, 1}, &o);
    s->B = o.micro_batch < arrlenu(l->train.ex) ? o.micro_batch : arrlenu(l->train.ex);
    s->n_mb = o.accumulation;
    s->T = data_batch_rows(&l->train, &t.plan, 0, s->B, t.tokens, t.targets, t.pos, &s->pred);
    s->acts = acts_bytes(t.acts);
    s->max_grad_norm = o.max_grad_norm;
    float *before = xmalloc(lora.n_params * sizeof(float));
    memcpy(before, lora.params, lora.n_params * sizeof(float));
    s->hash0 = frozen_hash(&l->q);
    CHECK(train_step(&t, &s->res) == STEP_OK);
    s->hash1 = frozen_hash(&l->q);
    s->clip = clip_factor(s->res.grad_norm, o.max_grad_norm);
    s->dA = grad_norm(&lora, -1, false);
    s->dB = grad_norm(&lora, -1, true);
    for (int layer = 0; layer < lora.n_layer && layer < 64; layer++) s->layer_dB[layer] = grad_norm(&lora, layer, true);
    s->moved_A = moved(&lora, before, false);
    s->moved_B = moved(&lora, before, true);
    s->n_params = lora.n_params;
    s->grads = xmalloc(lora.n_params * sizeof(float));
    memcpy(s->grads, lora.grads, lora.n_params * sizeof(float));
    free(before);
    trainer_free(&t);
    lora_free(&lora);
}

// The step as a call tree (preformatted): which function calls which, with counts.
static void call_tree(Lesson *l, const StepTrace *s) {
    const GPT2Config *c = &l->q.cfg;
    const int L = c->n_layer, n = model_lora_shapes(c).n;
    const char *block = c->arch == ARCH_GPT2 ? "gpt2.c" : "llama.c";
    doc_pre(&l->doc,
            "train_step                            trainer.c  one optimizer step\n"
            "├─ data_batch                         data.c     tokens, targets [%zu, %zu]\n"
            "├─ model_forward_backward             model.c    forward, loss, backward\n"
            "│  ├─ embed_forward                   %-10s x [%zu, %d]\n"
            "│  ├─ block_forward                   %-10s each of %d blocks: %d × block_linear_forward\n"
            "│  │    ├─ qlinear_forward            qlinear.c  y = x Wᵀ + b, W decoded from NF4\n"
            "│  │    └─ lora_forward               lora.c     y += (α/r) (x Aᵀ) Bᵀ\n"
            "│  ├─ head_loss_backward              model.c    logits, loss, dlogits\n"
            "│  └─ block_backward (last first)     %-10s each of %d blocks: %d × block_linear_backward\n"
            "│       ├─ qlinear_backward_input     qlinear.c  dx += dy W   (no dW)\n"
            "│       └─ lora_backward              lora.c     dA, dB (and dx)\n"
            "├─ grad_sq_sum, clip_factor           optim.c    global norm, clipping\n"
            "└─ adamw_step                         optim.c    m, v, then the parameters",
            s->B, s->T, block, s->B * s->T, c->n_embd, block, L, n, block, L, n);
}

// Table: the step in order, with the shapes and bytes of this step's tensors.
static void table_trace(Lesson *l, const StepTrace *s, int r) {
    const GPT2Config *c = &l->q.cfg;
    const size_t N = s->B * s->T, C = (size_t)c->n_embd, V = (size_t)c->vocab_size;
    size_t out, in;
    explain_matrix(l, l->matrix_t, &out, &in);
    const QLinear *q = &l->q.blocks[0].lin[l->matrix_t];
    const size_t rows = model_logit_rows(ACTS_TRAIN), R = (size_t)r;
    const int n_lin = model_lora_shapes(c).n;
    char b[8][32];
    DocTable t;
    doc_table_begin(&t, "rllll", "#\tcode\twhat it computes\tshapes (this step)\tbytes");
    doc_row(&t, "1\t`data_batch` (data.c)\ttoken ids and next-token targets, padded to the longest example\t"
            "[%zu, %zu] each\t%s", s->B, s->T, fmt_bytes(2.0 * N * 4, b[0], 32));
    doc_row(&t, "2\tthe architecture's `embed_forward`\ttoken (and position) embeddings, the residual stream x\t"
            "[%zu, %zu]\t%s", N, C, fmt_bytes(4.0 * N * C, b[1], 32));
    doc_row(&t, "3\t`block_linear_forward` → `qlinear_forward` (qlinear.c)\ty = x Wᵀ + b for each of the %d × %d "
            "linears; W's NF4 codes are decoded inside the product, a panel at a time, never as a whole fp32 "
            "matrix\t`%s`: x [%zu, %zu], W [%zu, %zu], y [%zu, %zu]\tW: %s codes + %s constants",
            c->n_layer, n_lin, l->matrix_name, N, in, out, in, N, out,
            fmt_bytes((double)qlinear_weight_bytes(q), b[2], 32),
            fmt_bytes((double)qlinear_constant_bytes(q), b[3], 32));
    doc_row(&t, "4\t`lora_forward` (lora.c)\th = x Aᵀ (kept as [r, N]), y += (α/r) h Bᵀ\tA [%zu, %zu], h [%zu, %zu], "
            "B [%zu, %zu]\t"
            "h: %s", R, in, R, N, out, R, fmt_bytes(4.0 * R * N, b[4], 32));
    doc_row(&t, "5\t`head_loss_backward` (model.c) → `softmax_xent` (ops.c)\tlogits, cross-entropy against the "
            "targets, and its gradient, %zu rows at a time\tlogits [%zu, %zu]\t%s", rows, rows < N ? rows : N, V,
            fmt_bytes(4.0 * (double)(rows < N ? rows : N) * V, b[5], 32));
    doc_row(&t, "6\t`block_linear_backward` → `qlinear_backward_input`\tdx += dy W, last layer first: the gradient "
            "passes through the frozen weight (decoded again) to the layers below; no dW is computed or stored"
            "\tdy [%zu, %zu] → dx [%zu, %zu]\tdW: 0", N, out, N, in);
    doc_row(&t, "7\t`lora_backward` (lora.c)\tdB += (α/r) dyᵀ h; dh = (α/r) dy B; dA += dhᵀ x; dx += dh A\t"
            "dA [%zu, %zu], dB [%zu, %zu]\tall adapters: %s", R, in, out, R, fmt_bytes(4.0 * s->n_params, b[6], 32));
    doc_row(&t, "8\t`grad_sq_sum`, `clip_factor` (optim.c)\tthe gradients' global norm, clipped to %g\t"
            "%zu values\t-", s->max_grad_norm, s->n_params);
    doc_row(&t, "9\t`adamw_step` (optim.c)\tm, v updated, each parameter moved by lr · m̂ / (√v̂ + ε)\t"
            "%zu parameters\tm and v: %s", s->n_params, fmt_bytes(8.0 * s->n_params, b[7], 32));
    char cap[256];
    snprintf(cap, sizeof cap, "One QLoRA step through qlora's functions (`train_step` in trainer.c, "
             "`model_forward_backward` in model.c), with the shapes of this step's first micro-batch");
    doc_table_end(&l->doc, &t, cap);
}

// An arrow from (x1, y1) to (x2, y2) with a small head.
static void arrow(Svg *s, double x1, double y1, double x2, double y2, const char *color) {
    svg_line(s, x1, y1, x2, y2, color, 1.6, false);
    const double a = atan2(y2 - y1, x2 - x1), h = 8;
    svg_line(s, x2, y2, x2 - h * cos(a - 0.45), y2 - h * sin(a - 0.45), color, 1.6, false);
    svg_line(s, x2, y2, x2 - h * cos(a + 0.45), y2 - h * sin(a + 0.45), color, 1.6, false);
}

// A labelled box centred at (x, y).
static void box(Svg *s, double x, double y, const char *fill, const char *l1, const char *l2) {
    svg_rect(s, x - 82, y - 22, 164, 44, fill, "#777");
    svg_text(s, x, y - 3, "middle", 12, "#222", "%s", l1);
    svg_text(s, x, y + 13, "middle", 10, "#444", "%s", l2);
}

// Figure: one adapted linear's forward (top) and backward (bottom), with this step's shapes.
static void figure_step(Doc *d, const StepTrace *s, size_t in, size_t out, int r, const char *name) {
    const size_t N = s->B * s->T;
    char a[6][64];
    snprintf(a[0], 64, "[%zu × %zu]", N, in);
    snprintf(a[1], 64, "NF4 [%zu × %zu], frozen", out, in);
    snprintf(a[2], 64, "A [%d × %zu], B [%zu × %d]", r, in, out, r);
    snprintf(a[3], 64, "[%zu × %zu]", N, out);
    snprintf(a[4], 64, "dA, dB: the only gradients");
    snprintf(a[5], 64, "no dW: 0 bytes");
    Svg g;
    char title[256];
    snprintf(title, sizeof title, "One adapted linear (%s) in a QLoRA step", name);
    svg_begin(&g, 760, 330, title);
    svg_text(&g, 20, 62, "start", 12, "#1f77b4", "forward");
    svg_text(&g, 20, 232, "start", 12, "#d62728", "backward");
    const struct { double x, y; const char *fill, *l1, *l2; } boxes[8] = {
        {140, 110, "#eeeeee", "x (input)", a[0]},     {380, 80, "#c6dbef", "W: decoded in the product", a[1]},
        {380, 150, "#fdd0a2", "(α/r) B (A x)", a[2]}, {620, 110, "#eeeeee", "y = x Wᵀ + b + LoRA", a[3]},
        {620, 260, "#eeeeee", "dy (from above)", a[3]}, {380, 220, "#c6dbef", "dx += dy W", a[5]},
        {380, 290, "#fdd0a2", "LoRA backward", a[4]}, {140, 260, "#eeeeee", "dx (to the layer below)", a[0]}};
    for (int i = 0; i < 8; i++) box(&g, boxes[i].x, boxes[i].y, boxes[i].fill, boxes[i].l1, boxes[i].l2);
    // forward: x to W and to the adapter, both to y; backward: dy to both, both to dx
    const double arrows[8][4] = {{222, 104, 298, 84},  {222, 116, 298, 146}, {462, 84, 538, 104},
                                 {462, 146, 538, 116}, {538, 254, 462, 224}, {538, 266, 462, 286},
                                 {298, 224, 222, 254}, {298, 286, 222, 266}};
    for (int i = 0; i < 8; i++)
        arrow(&g, arrows[i][0], arrows[i][1], arrows[i][2], arrows[i][3], i < 4 ? "#1f77b4" : "#d62728");
    doc_figure(d, &g, "Forward, the input goes through the frozen NF4 weight and the adapter; backward, the "
                      "gradient goes through both to the input, but only A and B get gradients");
}

// Figure: the gradient norm that reached each layer's B matrices.
static void figure_layer_grads(Doc *d, const StepTrace *s, int n_layer) {
    const int L = n_layer < 64 ? n_layer : 64;
    double top = 0;
    for (int i = 0; i < L; i++) top = fmax(top, s->layer_dB[i]);
    Svg g;
    svg_begin(&g, 760, 300, "Gradient norm of each layer's B matrices after one step");
    svg_axes(&g, 0, L, 0, top * 1.15, false, NULL, "norm of dB");
    for (int i = 0; i < L; i++) {
        const double x = svg_x(&g, i + 0.2), w = svg_x(&g, i + 0.8) - x;
        svg_rect(&g, x, svg_y(&g, s->layer_dB[i]), w, svg_y(&g, 0) - svg_y(&g, s->layer_dB[i]), SVG_PALETTE[3], NULL);
        svg_text(&g, x + w / 2, svg_y(&g, s->layer_dB[i]) - 4, "middle", 10, "#222", "%.3g", s->layer_dB[i]);
        svg_text(&g, x + w / 2, g.y0 + g.ph + 16, "middle", 11, "#222", "layer %d", i);
    }
    doc_figure(d, &g, s->layer_dB[0] > 0 ? "Every layer's adapters get a gradient, layer 0's too: it reached "
                                           "them through the frozen weights of every layer above"
                                         : "The gradient that reached each layer's adapters");
}

// Section 7, the measurements: what the step did, and what gradient checkpointing trades.
static void step_results(Lesson *l, const StepTrace *s, const StepTrace *c) {
    Doc *d = &l->doc;
    DocTable t;
    doc_table_begin(&t, "lr", "measured	value");
    doc_row(&t, "loss (mean over %zu predicted tokens)	%.6f", s->pred, s->res.loss);
    doc_row(&t, "gradient norm, before clipping	%.6f", s->res.grad_norm);
    doc_row(&t, "clipping factor (max_grad_norm %g)	%.6f", s->max_grad_norm, s->clip);
    doc_row(&t, "learning rate of the step	%g", s->res.lr);
    doc_row(&t, "norm of all dA, after clipping	%.6g", s->dA);
    doc_row(&t, "norm of all dB, after clipping	%.6g", s->dB);
    doc_row(&t, "largest change of an A entry	%.6g", s->moved_A);
    doc_row(&t, "largest change of a B entry	%.6g", s->moved_B);
    doc_row(&t, "checksum of the frozen weights, before	`%016llx`", (unsigned long long)s->hash0);
    doc_row(&t, "checksum of the frozen weights, after	`%016llx`", (unsigned long long)s->hash1);
    doc_row(&t, "time: forward + backward, update	%.3f s, %.4f s", s->res.t_gradients, s->res.t_update);
    doc_table_end(d, &t, "What the traced step did (a constant learning rate, no warm-up: with the job's "
                         "warm-up the first step's rate is 0)");
    doc_para(d, "The frozen weights' checksum is %s after the step: the base model is untouched. %s And the "
                "gradient still reached the first layer's adapters (figure below): to get there it flowed back "
                "through the NF4 weights of every layer above, decoded for the product and discarded again.",
             s->hash0 == s->hash1 ? "the same" : "DIFFERENT",
             s->dA == 0 && s->moved_A == 0 ? "In this first step every dA is exactly zero, because dA is computed "
                                             "from B, which is still zero: only B moves, and A starts to move in "
                                             "the second step." : "");
    figure_layer_grads(d, s, l->q.cfg.n_layer);
    doc_subhead(d, "Gradient checkpointing");
    char b1[32], b2[32];
    doc_para(d, "The backward pass reads every layer's activations, so training keeps them all from the forward "
                "pass. Gradient checkpointing keeps only each block's input and recomputes the rest of a block, "
                "one block at a time, when the backward pass reaches it: memory for time. The same step both ways "
                "(`ACTS_TRAIN` and `ACTS_CHECKPOINT`):");
    doc_table_begin(&t, "lrrr", "mode	activation bytes	forward + backward	same gradients");
    doc_row(&t, "keep all activations	%s	%.3f s	-", fmt_bytes((double)s->acts, b1, sizeof b1), s->res.t_gradients);
    doc_row(&t, "gradient checkpointing	%s	%.3f s	%s", fmt_bytes((double)c->acts, b2, sizeof b2),
            c->res.t_gradients, memcmp(s->grads, c->grads, s->n_params * sizeof(float)) == 0 ? "yes, bit for bit"
                                                                                              : "no");
    doc_table_end(d, &t, "One step with and without gradient checkpointing (times are this run's)");
    doc_para(d, "Checkpointing saves %.1f%% of the activation memory here and costs %+.0f%% time in the forward "
                "and backward passes; the gradients are %s.", 100 * (1 - (double)c->acts / (double)s->acts),
             100 * (c->res.t_gradients / s->res.t_gradients - 1),
             memcmp(s->grads, c->grads, s->n_params * sizeof(float)) == 0 ? "the same to the bit"
                                                                          : "not the same");
}

void explain_step(Lesson *l) {
    Doc *d = &l->doc;
    StepTrace s, c;
    traced_step(l, ACTS_TRAIN, &s);
    traced_step(l, ACTS_CHECKPOINT, &c);
    doc_section(d, "One QLoRA training step, traced through qlora's code");
    char mb[96] = "";
    if (s.n_mb > 1) snprintf(mb, sizeof mb, " (the first of the step's %zu micro-batches)", s.n_mb);
    doc_para(d, "What happens in one training step, followed through qlora's own functions on the job's first "
                "batch%s: %zu examples padded to %zu tokens, of which %zu are predicted (where the examples have "
                "prompts, only their completions are trained on). The model's %d blocks each run %d adapted "
                "linears; the table follows one of them, `%s`, and the figure after it shows the same linear "
                "as a picture.", mb, s.B, s.T, s.pred, l->q.cfg.n_layer, model_lora_shapes(&l->q.cfg).n,
             l->matrix_name);
    LoraSet shape;
    explain_make_adapter(l, &l->q, &shape);
    doc_para(d, "The backward pass is the chain rule applied to y = x Wᵀ + b + s h Bᵀ with h = x Aᵀ and s = α/r, "
                "for a batch of rows x. Of its "
                "four results qlora computes three: the gradient for the layer below, and the two for the "
                "adapter. The fourth, dW, is the one full fine-tuning would need; QLoRA never forms it:");
    doc_formula(d, "dx = dy W + s (dy B) A,   dB = s dyᵀ h,   dA = s (dy B)ᵀ x,   (no dW)",
                "<mi>d</mi><mi>x</mi><mo>=</mo><mi>d</mi><mi>y</mi><mspace width=\"0.2em\"/><mi>W</mi><mo>+</mo>"
                "<mi>s</mi><mo>(</mo><mi>d</mi><mi>y</mi><mspace width=\"0.2em\"/><mi>B</mi><mo>)</mo><mi>A</mi>"
                "<mo>,</mo><mspace width=\"1em\"/><mi>d</mi><mi>B</mi><mo>=</mo><mi>s</mi><mspace width=\"0.2em\"/>"
                "<mi>d</mi><msup><mi>y</mi><mo>⊤</mo></msup><mi>h</mi><mo>,</mo><mspace "
                "width=\"1em\"/><mi>d</mi><mi>A</mi><mo>=</mo><mi>s</mi><msup><mrow><mo>(</mo><mi>d</mi><mi>y</mi>"
                "<mspace width=\"0.2em\"/><mi>B</mi><mo>)</mo></mrow><mo>⊤</mo></msup><mi>x</mi><mo>,</mo><mspace "
                "width=\"1em\"/><mtext>(no </mtext><mi>d</mi><mi>W</mi><mtext>)</mtext>");
    doc_para(d, "AdamW then moves each adapter parameter p with gradient g (t the step, λ the weight decay):");
    doc_formula(d, "m ← β1 m + (1 − β1) g,  v ← β2 v + (1 − β2) g²,  p ← p − lr (m̂ / (√v̂ + ε) + λ p),  "
                   "m̂ = m / (1 − β1^t),  v̂ = v / (1 − β2^t)",
                "<mi>m</mi><mo>←</mo><msub><mi>β</mi><mn>1</mn></msub><mi>m</mi><mo>+</mo><mo>(</mo><mn>1</mn>"
                "<mo>−</mo><msub><mi>β</mi><mn>1</mn></msub><mo>)</mo><mi>g</mi><mo>,</mo><mspace width=\"1em\"/>"
                "<mi>v</mi><mo>←</mo><msub><mi>β</mi><mn>2</mn></msub><mi>v</mi><mo>+</mo><mo>(</mo><mn>1</mn><mo>−"
                "</mo><msub><mi>β</mi><mn>2</mn></msub><mo>)</mo><msup><mi>g</mi><mn>2</mn></msup><mo>,</mo><mspace "
                "width=\"1em\"/><mi>p</mi><mo>←</mo><mi>p</mi><mo>−</mo><mi>lr</mi><mrow><mo>(</mo><mfrac><mover>"
                "<mi>m</mi><mo>^</mo></mover><mrow><msqrt><mover><mi>v</mi><mo>^</mo></mover></msqrt><mo>+</mo><mi>ε"
                "</mi></mrow></mfrac><mo>+</mo><mi>λ</mi><mi>p</mi><mo>)</mo></mrow>");
    call_tree(l, &s);
    table_trace(l, &s, shape.r);
    size_t out, in;
    explain_matrix(l, l->matrix_t, &out, &in);
    const char *name = l->matrix_name;
    figure_step(d, &s, in, out, shape.r, name);
    lora_free(&shape);
    step_results(l, &s, &c);
    free(s.grads);
    free(c.grads);
}
