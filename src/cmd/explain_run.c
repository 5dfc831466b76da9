// cmd/explain_run.c: the lesson's last two sections: a live mini-run of the job on the real
// model through the trainer (8) and the QLoRA paper's headline claims reproduced with memory.c's
// arithmetic (9). See cmd/lesson.h.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "cmd/lesson.h"
#include "ds.h"
#include "report.h"
#include "sample.h"
#include "svg.h"
#include "trainer.h"

static const double GIB = 1073741824.0;

// ---- 8. a live mini-run --------------------------------------------------------------------------

// ids[0..n) decoded into *out (stb_ds, NUL-terminated) as one table cell: up to the first
// newline, tabs as spaces, backticks (doc.h's code marks) as quotes.
static void decode_cell(const Tokenizer *tok, const int *ids, size_t n, char **out) {
    arrsetlen(*out, 0);
    tok_decode(tok, ids, n, true, out);
    for (size_t i = 0; i < arrlenu(*out); i++) {
        if ((*out)[i] == '\n' || (*out)[i] == '\r') arrsetlen(*out, i);
        else if ((*out)[i] == '\t') (*out)[i] = ' ';
        else if ((*out)[i] == '`') (*out)[i] = '\'';
    }
    arrput(*out, '\0');
}

// Example ex's prompt, the tokens before its first label (its first 16 tokens if every token is
// a label), decoded into *prompt, and its greedy continuation by the model (with lora, or NULL)
// into *text: at most max_new tokens, up to the tokenizer's EOS or the model's last position.
static void sample(const Lesson *l, const LoraSet *lora, const Example *ex, int max_new, char **prompt,
                   char **text) {
    const Model *m = &l->q;
    const size_t P = (size_t)m->cfg.n_positions;
    size_t n = 0;
    while (n < ex->len && ex->labels[n] < 0) n++;
    if (n == 0 || n == ex->len) n = ex->len < 16 ? ex->len : 16;
    if (n >= P) n = P - 1;
    if ((size_t)max_new > P - n) max_new = (int)(P - n);
    const int V = m->cfg.vocab_size;
    KVCache *kv = kv_create(m, lora, (int)n + max_new);
    float *logits = xmalloc((size_t)V * sizeof(float));
    SampleCand *cand = xmalloc((size_t)V * sizeof(SampleCand));
    int *ids = NULL;
    model_step(m, lora, kv, ex->ids, (int)n, logits);
    const SampleParams greedy = {0, 0, 1};
    Rng rng;
    rng_seed(&rng, 0);
    for (int k = 0; k < max_new; k++) {
        const int next = sample_next(logits, V, &greedy, &rng, cand);
        if (next == tok_eos(l->tok)) break;
        arrput(ids, next);
        if (k + 1 < max_new) model_step(m, lora, kv, &next, 1, logits);
    }
    decode_cell(l->tok, ex->ids, n, prompt);
    decode_cell(l->tok, ids, arrlenu(ids), text);
    arrfree(ids);
    free(cand);
    free(logits);
    kv_free(kv);
}

enum { N_SAMPLES = 3, SAMPLE_TOKENS = 80 };

// Greedy continuations of the first held-out prompts (with lora, or NULL: the base model).
static void samples(Lesson *l, const LoraSet *lora, char **prompts, char **texts) {
    for (size_t i = 0; i < N_SAMPLES && i < arrlenu(l->val.ex); i++)
        sample(l, lora, &l->val.ex[i], SAMPLE_TOKENS, &prompts[i], &texts[i]);
}

// Table: the job's settings that shape the run.
static void table_job(Lesson *l, const TrainerOptions *o, const LoraSet *lora) {
    const TrainConfig *c = &l->job;
    char targets[256];
    explain_targets(l, targets, sizeof targets);
    DocTable t;
    doc_table_begin(&t, "ll", "setting\tvalue");
    doc_row(&t, "base model\t`%s`, its linears %s%s in blocks of %ld", c->base_model, quant_name(c->quant),
            c->double_quant ? " + double quantization" : "", c->quant_blocksize);
    doc_row(&t, "data\t`%s`: %zu examples; held out: %zu", c->dataset, arrlenu(l->train.ex), arrlenu(l->val.ex));
    doc_row(&t, "LoRA\tr = %d, α = %g (scale %g), dropout %g, on %s", lora->r, (double)lora->alpha,
            (double)lora->scaling, (double)lora->dropout, targets);
    doc_row(&t, "batches\t%zu examples × %zu accumulation, up to %zu tokens each", o->micro_batch, o->accumulation,
            o->seq_len);
    doc_row(&t, "optimizer\tAdamW, lr %g %s schedule, %ld warm-up steps, weight decay %g, clipping at %g",
            o->learning_rate, lr_schedule_name(o->schedule), o->warmup, (double)o->adamw.weight_decay,
            (double)o->max_grad_norm);
    doc_row(&t, "steps\t%ld (the job file says %ld)", o->total_steps, l->job_steps);
    doc_row(&t, "activations\t%s", o->acts_mode == ACTS_CHECKPOINT ? "gradient checkpointing" : "all kept");
    char cap[300];
    snprintf(cap, sizeof cap, "The job (`%s`, with `--steps` and `--blocksize` applied)", l->a.job);
    doc_table_end(&l->doc, &t, cap);
}

// Figure: the training loss of every step, with the held-out loss before and after.
static void figure_loss(Doc *d, const double *loss, long n, double before, double after) {
    double *xs = xmalloc((size_t)n * sizeof(double)), top = fmax(before, after), lo = fmin(before, after);
    for (long i = 0; i < n; i++) xs[i] = (double)(i + 1), top = fmax(top, loss[i]), lo = fmin(lo, loss[i]);
    Svg s;
    svg_begin(&s, 760, 360, "Training loss of each step, and the held-out loss before and after");
    const double pad = (top - lo) * 0.06 + 1e-9;
    svg_axes(&s, 0, (double)n, lo - pad, top + pad, false, "step", "loss (mean per predicted token)");
    svg_polyline(&s, xs, loss, (size_t)n, SVG_PALETTE[0], 2);
    if (n < 40) svg_points(&s, xs, loss, (size_t)n, SVG_PALETTE[0], 2.5);
    const double ex[2] = {0, (double)n}, ey[2] = {before, after};
    svg_points(&s, ex, ey, 2, SVG_PALETTE[1], 6);
    const char *labels[2] = {"training loss (the step's batch)", "held-out loss"};
    const char *colors[2] = {SVG_PALETTE[0], SVG_PALETTE[1]};
    svg_legend(&s, labels, colors, 2);
    doc_figure(d, &s, "The loss curve of the mini-run: each step's training batch, and the held-out set before "
                      "the first step and after the last");
    free(xs);
}

// Table: the memory account of the run against memory.c's prediction.
static void table_account(Lesson *l, const Trainer *t) {
    const MemAccount a = report_memory_account(&l->job, t);
    DocTable tab;
    doc_table_begin(&tab, "lrrr", "category\tallocated by the trainer\tpredicted by memory.c\tdifference");
    double tm = 0, tp = 0;
    for (int k = 0; k < REPORT_MEM_N; k++) {
        doc_row(&tab, "%s\t%.0f\t%.0f\t%+.0f", REPORT_MEM_CATEGORY[k], a.measured[k], a.predicted[k],
                a.measured[k] - a.predicted[k]);
        tm += a.measured[k];
        tp += a.predicted[k];
    }
    doc_row(&tab, "total\t%.0f\t%.0f\t%+.0f (%+.3f%%)", tm, tp, tm - tp, 100 * (tm - tp) / tp);
    char cap[200];
    snprintf(cap, sizeof cap, "Memory account of the run (%s), bytes: the trainer's own buffers next to the "
             "prediction of `qlora memory`; peak RSS of this whole process %.1f MiB", a.method,
             (double)peak_rss_bytes() / 1048576.0);
    doc_table_end(&l->doc, &tab, cap);
}

// Train t for its total steps, the loss of each into loss[]; exits on a non-finite step.
static void train(Trainer *t, double *loss, size_t *tokens, double *secs) {
    const double t0 = time_now();
    *tokens = 0;
    while (t->step < t->opt.total_steps) {
        StepResult r;
        if (train_step(t, &r) != STEP_OK)
            die(EXIT_RUNTIME, "explain: mini-run step %ld: non-finite loss or state ('%s')", t->step + 1, r.bad);
        loss[t->step - 1] = r.loss;
        *tokens += r.tokens;
    }
    *secs = time_now() - t0;
}

void explain_run(Lesson *l) {
    Doc *d = &l->doc;
    LoraSet lora;
    explain_make_adapter(l, &l->q, &lora);
    TrainerOptions o;
    trainer_options(&l->job, &l->train, &o);
    Trainer t;
    trainer_init(&t, &l->q, &lora, &l->train, (Dist){0, 1}, &o);
    doc_section(d, "A live mini-run: QLoRA fine-tuning, start to finish");
    doc_para(d, "Now all of it at once: the job below, cut to %ld steps, fine-tunes `%s` (%d layers, %d wide) on "
                "`%s`. With the defaults that is `make demo`'s job: the shipped base model, pretrained by qlora on "
                "the King James Bible, learns to write weather forecasts, a format it has never seen. Everything "
                "runs in this process through the trainer `qlora train` uses (`trainer.h`).", o.total_steps,
             l->a.model, l->q.cfg.n_layer, l->q.cfg.n_embd, l->job.dataset);
    table_job(l, &o, &lora);
    doc_para(d, "The loss the trainer minimises, and the held-out loss reported before and after, is the mean "
                "cross-entropy of the next token over the N predicted tokens; its exponential, the perplexity, is "
                "the number of equally likely choices the model is as unsure as:");
    doc_formula(d, "L = −(1/N) Σ log p(x_{t+1} | x_1 … x_t),   perplexity = e^L",
                "<mi>L</mi><mo>=</mo><mo>−</mo><mfrac><mn>1</mn><mi>N</mi></mfrac><munder><mo>∑</mo><mi>t</mi>"
                "</munder><mo>log</mo><mi>p</mi><mo>(</mo><msub><mi>x</mi><mrow><mi>t</mi><mo>+</mo><mn>1</mn>"
                "</mrow></msub><mo>|</mo><msub><mi>x</mi><mn>1</mn></msub><mo>…</mo><msub><mi>x</mi><mi>t</mi>"
                "</msub><mo>)</mo><mo>,</mo><mspace width=\"1em\"/><mtext>perplexity</mtext><mo>=</mo><msup><mi>e"
                "</mi><mi>L</mi></msup>");
    const double before = trainer_eval_loss(&t, &l->val);
    char *prompts[N_SAMPLES] = {0}, *base[N_SAMPLES] = {0}, *tuned[N_SAMPLES] = {0};
    samples(l, NULL, prompts, base);
    doc_subhead(d, "Before");
    doc_para(d, "Held-out loss %.4f (perplexity %.2f): the base model has never seen this data. Its greedy "
                "continuations of the first held-out prompts are in the table after the training.", before,
             exp(before));
    double *loss = xmalloc((size_t)o.total_steps * sizeof(double)), secs;
    size_t tokens;
    train(&t, loss, &tokens, &secs);
    const double after = trainer_eval_loss(&t, &l->val);
    doc_subhead(d, "Training");
    doc_para(d, "%ld steps took %.1f s (%.0f tokens a second on this machine); the training loss went from %.4f "
                "at the first step to %.4f at the last.", o.total_steps, secs, (double)tokens / secs, loss[0],
             loss[o.total_steps - 1]);
    figure_loss(d, loss, o.total_steps, before, after);
    doc_subhead(d, "After");
    doc_para(d, "Held-out loss %.4f (perplexity %.2f), %.0f%% %s than before. The first held-out prompts, "
                "continued greedily (the most likely next token each time, at most %d tokens) by the base model and "
                "by the base model with the trained adapter:", after, exp(after), 100 * fabs(before - after) / before,
             after < before ? "lower" : "higher", SAMPLE_TOKENS);
    samples(l, &lora, prompts, tuned);
    DocTable st;
    doc_table_begin(&st, "lll", "prompt\tbase model\tbase model + adapter");
    for (int i = 0; i < N_SAMPLES && prompts[i]; i++) doc_row(&st, "%s\t%s\t%s", prompts[i], base[i], tuned[i]);
    char cap[96];
    snprintf(cap, sizeof cap, "Samples before and after %ld steps", o.total_steps);
    doc_table_end(d, &st, cap);
    for (int i = 0; i < N_SAMPLES; i++) arrfree(prompts[i]), arrfree(base[i]), arrfree(tuned[i]);
    doc_subhead(d, "Memory: what was allocated, what was predicted");
    table_account(l, &t);
    doc_para(d, "These are the numbers `make demo` prints, for %ld steps instead of %ld: `qlora train %s` gives the "
                "same account. Every byte the trainer allocated is in a category that `qlora memory` predicts "
                "from the shapes alone.", o.total_steps, l->job_steps, l->a.job);
    free(loss);
    trainer_free(&t);
    lora_free(&lora);
}

// ---- 9. the QLoRA paper's claims -----------------------------------------------------------------

// Figure: LLaMA-65B's predicted memory for the four 16-bit and 4-bit LoRA-family methods and
// full 16-bit fine-tuning, against a 48 GiB card.
static void figure_65b(Doc *d, const Prediction *p, const MemMethod *ms, int n, double card) {
    Svg g;
    svg_begin(&g, 760, 400, "LLaMA-65B fine-tuning memory by method (GiB)");
    double top = card;
    for (int i = 0; i < n; i++) top = fmax(top, p->rows[ms[i]].total / GIB);
    const bool cut = top > 4 * card;  // full fine-tuning dwarfs the rest: its bar is cut, and labelled
    const double cap = cut ? 2.2 * card : top * 1.08;
    svg_axes(&g, 0, n, 0, cap, false, NULL, "GiB");
    const char *cols[4] = {SVG_PALETTE[0], SVG_PALETTE[3], SVG_PALETTE[2], SVG_PALETTE[4]};
    for (int i = 0; i < n; i++) {
        const MemRow *r = &p->rows[ms[i]];
        const double parts[4] = {(r->weights + r->quant_constants) / GIB, r->trainable / GIB,
                                 (r->gradients + r->optimizer) / GIB, r->activations / GIB};
        double base = 0;
        const double x = svg_x(&g, i + 0.2), w = svg_x(&g, i + 0.8) - x;
        for (int k = 0; k < 4; k++) {
            const double y0 = fmin(base, cap), y1 = fmin(base + parts[k], cap);
            svg_rect(&g, x, svg_y(&g, y1), w, svg_y(&g, y0) - svg_y(&g, y1), cols[k], NULL);
            base += parts[k];
        }
        svg_text(&g, x + w / 2, svg_y(&g, fmin(base, cap)) - 4, "middle", 11, "#222", "%.1f%s", base,
                 base > cap ? " (cut)" : "");
        svg_text(&g, x + w / 2, g.y0 + g.ph + 16, "middle", 10, "#222", "%s", r->name);
    }
    svg_line(&g, g.x0, svg_y(&g, card), g.x0 + g.pw, svg_y(&g, card), "#d62728", 1.5, true);
    svg_text(&g, g.x0 + 6, svg_y(&g, card) - 5, "start", 11, "#d62728", "a 48 GB card: %.0f GiB", card);
    const char *labels[4] = {"frozen weights + constants", "trainable weights", "gradients + AdamW", "activations"};
    svg_legend(&g, labels, cols, 4);
    char caption[400] = "LLaMA-65B with each method against one 48 GB card; fitting: ";
    int fits = 0;
    for (int i = 0; i < n; i++)
        if (p->rows[ms[i]].total / GIB < card)
            snprintf(caption + strlen(caption), sizeof caption - strlen(caption), "%s%s", fits++ ? ", " : "",
                     p->rows[ms[i]].name);
    if (!fits) snprintf(caption + strlen(caption), sizeof caption - strlen(caption), "none");
    doc_figure(d, &g, caption);
}

// Table and arithmetic: LLaMA-65B's memory by method; the QLoRA total added up.
static void table_65b(Doc *d, const Prediction *p, const MemMethod *ms, int n, size_t bs) {
    DocTable t;
    doc_table_begin(&t, "lrrrrrr", "method	frozen weights	constants	LoRA + gradients + AdamW	activations	"
                    "total (GiB)	total (GB)");
    for (int i = 0; i < n; i++) {
        const MemRow *r = &p->rows[ms[i]];
        doc_row(&t, "%s	%.2f	%.2f	%.2f	%.2f	%.2f	%.1f", r->name, r->weights / GIB, r->quant_constants / GIB,
                (r->trainable + r->gradients + r->optimizer) / GIB, r->activations / GIB, r->total / GIB,
                r->total / 1e9);
    }
    doc_table_end(d, &t, "LLaMA-65B fine-tuning memory by method, as memory.c predicts it (GiB = 2^30 bytes, "
                         "GB = 10^9)");
    const MemRow *q = &p->rows[MEM_QLORA_NF4_DQ];
    const double codes = p->linear_params / 2, other = q->weights - codes;
    const double lora = q->trainable + q->gradients + q->optimizer;
    char plain[400], mathml[1600];
    snprintf(plain, sizeof plain, "%.2f (NF4 codes) + %.2f (constants, blocks of %zu) + %.2f (the rest in fp32) + "
             "%.2f (LoRA, gradients, AdamW) + %.2f (activations) = %.2f GiB", codes / GIB, q->quant_constants / GIB,
             bs, other / GIB, lora / GIB, q->activations / GIB, q->total / GIB);
    snprintf(mathml, sizeof mathml, "<munder><mn>%.2f</mn><mtext>NF4 codes</mtext></munder><mo>+</mo><munder><mn>"
             "%.2f</mn><mtext>constants</mtext></munder><mo>+</mo><munder><mn>%.2f</mn><mtext>rest, fp32</mtext>"
             "</munder><mo>+</mo><munder><mn>%.2f</mn><mtext>LoRA + AdamW</mtext></munder><mo>+</mo><munder><mn>"
             "%.2f</mn><mtext>activations</mtext></munder><mo>=</mo><mn>%.2f</mn><mspace width=\"0.3em\"/><mtext>"
             "GiB</mtext>", codes / GIB, q->quant_constants / GIB, other / GIB, lora / GIB, q->activations / GIB,
             q->total / GIB);
    doc_formula(d, plain, mathml);
}

void explain_paper(Lesson *l) {
    Doc *d = &l->doc;
    const size_t bs = QUANT_DEFAULT_BLOCK;  // the paper's block size (bitsandbytes' default)
    const int r = 64;                       // the paper's LoRA rank
    const double card = 48;                 // GiB: a "48 GB" card's memory is binary-sized
    Prediction p;
    explain_predict("llama-65b", r, 512, bs, &p);
    doc_section(d, "The QLoRA paper's headline claims, reproduced");
    doc_para(d, "The QLoRA paper (Dettmers et al., 2023) reports that QLoRA fine-tunes a 65-billion-parameter LLaMA "
                "on a single 48 GB GPU, where 16-bit full fine-tuning needs more than 780 GB, and that double "
                "quantization saves about 0.37 bits per parameter, some 3 GB for a 65B model. Both claims are "
                "arithmetic, and `memory.c` can redo it.");
    doc_subhead(d, "A 65B model on one 48 GB GPU");
    char c1[48], c2[48], c3[48];
    doc_para(d, "The inputs: LLaMA-65B's published shape (%s parameters, %s of them in the linears); the "
                "paper's LoRA rank r = %d on every linear (%s trainable parameters); NF4 in blocks of %zu; a "
                "batch of 1 × 512 tokens with gradient checkpointing. `memory.c` counts activations in fp32, as "
                "qlora keeps them (a GPU run in 16 bits would need half).", explain_count(p.params, c1, sizeof c1),
             explain_count(p.linear_params, c2, sizeof c2), r, explain_count(p.lora_params, c3, sizeof c3), bs);
    const MemMethod ms[4] = {MEM_FULL_MIXED16, MEM_LORA_16, MEM_QLORA_NF4, MEM_QLORA_NF4_DQ};
    table_65b(d, &p, ms, 4, bs);
    figure_65b(d, &p, ms, 4, card);
    const MemRow *full = &p.rows[MEM_FULL_MIXED16], *q = &p.rows[MEM_QLORA_NF4_DQ], *q0 = &p.rows[MEM_QLORA_NF4];
    doc_para(d, "QLoRA with double quantization needs %.1f GiB, %s the %.0f GiB a 48 GB card holds (GPU memory is "
                "sized in binary units: %.0f GiB are %.1f × 10^9 bytes); without double quantization %.1f GiB. "
                "Full fine-tuning in 16 bits needs %.0f GiB, %.0f GB, %s the paper's \"more than 780 GB\": %.1f "
                "times as much.", q->total / GIB, q->total / GIB < card ? "under" : "over", card, card,
             card * GIB / 1e9, q0->total / GIB, full->total / GIB, full->total / 1e9,
             full->total / 1e9 > 780 ? "in line with" : "less than", full->total / q->total);
    doc_subhead(d, "Double quantization: 0.37 bits a parameter, 3 GB at 65B");
    const double saved = nf4_bits(bs, false) - nf4_bits(bs, true);
    char plain[300], mathml[1000];
    snprintf(plain, sizeof plain, "32/%zu − (8/%zu + 32/(%zu × %d)) = %.4f bits;   %.4f × %.2f × 10^9 / 8 = %.2f GB",
             bs, bs, bs, QUANT_DQ_BLOCK, saved, saved, p.linear_params / 1e9, saved * p.linear_params / 8 / 1e9);
    snprintf(mathml, sizeof mathml, "<mfrac><mn>32</mn><mn>%zu</mn></mfrac><mo>−</mo><mo>(</mo><mfrac><mn>8</mn>"
             "<mn>%zu</mn></mfrac><mo>+</mo><mfrac><mn>32</mn><mrow><mn>%zu</mn><mo>×</mo><mn>%d</mn></mrow>"
             "</mfrac><mo>)</mo><mo>=</mo><mn>%.4f</mn><mspace width=\"0.3em\"/><mtext>bits</mtext><mo>;</mo>"
             "<mspace width=\"1em\"/><mfrac><mrow><mn>%.4f</mn><mo>×</mo><mn>%.2f</mn><mo>×</mo><msup><mn>10</mn>"
             "<mn>9</mn></msup></mrow><mn>8</mn></mfrac><mo>=</mo><mn>%.2f</mn><mspace width=\"0.3em\"/><mtext>GB"
             "</mtext>", bs, bs, bs, QUANT_DQ_BLOCK, saved, saved, p.linear_params / 1e9,
             saved * p.linear_params / 8 / 1e9);
    doc_formula(d, plain, mathml);
    doc_para(d, "That is %.2f GB (%.2f GiB) over LLaMA-65B's %.2f billion linear weights; `memory.c`'s two QLoRA "
                "rows above differ by %.2f GB in their constants, the same saving.",
             saved * p.linear_params / 8 / 1e9, saved * p.linear_params / 8 / GIB, p.linear_params / 1e9,
             (q0->quant_constants - q->quant_constants) / 1e9);
    doc_subhead(d, "NF4 against FP4 and INT4");
    doc_para(d, "The paper's case for NF4 over FP4 and plain INT4 was measured on model quality; the error on the "
                "weights, which drives it, was measured in section 4 on `%s`: NF4 %.4e, FP4 %.4e (NF4 %.0f%% "
                "%s), INT4 %.4e (NF4 %.0f%% %s). Not reproduced here: the paged optimizers, which move optimizer "
                "state between GPU and CPU memory (there is no GPU here), and the quality of the paper's Guanaco "
                "chat models.", l->matrix_name, l->nf4_mae, l->fp4_mae, 100 * fabs(1 - l->nf4_mae / l->fp4_mae),
             l->nf4_mae < l->fp4_mae ? "lower" : "higher", l->int4_mae, 100 * fabs(1 - l->nf4_mae / l->int4_mae),
             l->nf4_mae < l->int4_mae ? "lower" : "higher");
}
