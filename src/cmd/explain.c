// cmd/explain.c: `qlora explain`, a lesson on QLoRA from how a number is stored to a live
// fine-tuning run, every number computed by qlora's own code while it is written. This file
// holds the options, the loading of the real model, the job and its data, the helpers the
// sections share and the page; the sections are in explain_quant.c, explain_model.c and
// explain_run.c (cmd/lesson.h).
#include "cmd/lesson.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bgemm.h"
#include "cmd/cli.h"
#include "cmd/model_args.h"
#include "ds.h"
#include "path.h"
#include "util.h"

static const CliOption EXPLAIN_OPTIONS[] = {
    {"--out", CLI_STR(ExplainArgs, out), "DIR", "also write the lesson as DIR/index.html, figures inline"},
    {"--model", CLI_STR(ExplainArgs, model), "DIR",
     "the real model that sections 4-8 quantize, trace and fine-tune (a Hugging Face folder)"},
    {"--job", CLI_STR(ExplainArgs, job), "JOB.yaml",
     "the QLoRA job the training sections follow: its data, LoRA and optimizer settings"},
    {"--steps", CLI_INT(ExplainArgs, steps), "N", "steps of the live mini-run (section 8)", .lo = 1, .hi = 100000},
    {"--blocksize", CLI_CALL(ExplainArgs, blocksize), "N",
     "quantization block size of sections 3-8 (a power of two, 32..4096)", .call = cli_parse_blocksize},
    {"--number", CLI_FLOAT(ExplainArgs, number), "X", "the number section 1 stores in FP32, FP16 and BF16",
     .lo = -FLT_MAX, .hi = FLT_MAX},
    {"--params", CLI_FLOAT(ExplainArgs, params), "N", "the parameter count of section 2's table", .lo = 1,
     .hi = 1e15},
    CLI_END};

static const CliCommand EXPLAIN = {
    .name = "explain",
    .about =
    "A lesson on QLoRA in nine sections: how a number is stored; what a model costs in memory;\n"
    "INT8 absmax and zero-point quantization (and the truncated zero-point mistake); NF4 and\n"
    "double quantization; quantizing a real model; LoRA; one QLoRA training step traced through\n"
    "qlora's code; a live fine-tuning run of a few dozen steps; the QLoRA paper's claims\n"
    "reproduced. Every number is computed by qlora's own code as the lesson is written. Run it\n"
    "from the qlora folder (it reads the demo's model and job); `make explain` writes the page\n"
    "to out/explain/index.html.\n",
    .options = EXPLAIN_OPTIONS};

// ---- helpers the sections share ----------------------------------------------------------------

void explain_predict(const char *preset, int r, size_t T, size_t bs, Prediction *p) {
    ModelShape s;
    CHECK(shape_preset(preset, &s));
    MemJob j = {.B = 1, .T = T, .lora_r = r, .gradient_checkpointing = true, .quant_blocksize = bs};
    for (int t = 0; t < LORA_N_TARGETS; t++) j.targets[t] = true;  // every linear the shape has
    p->params = shape_params(&s);
    p->linear_params = shape_linear_params(&s);
    p->lora_params = shape_lora_params(&s, r, j.targets);
    memory_predict(&s, &j, p->rows);
}

const float *explain_matrix(const Lesson *l, int t, size_t *out, size_t *in) {
    const QLinear *q = &l->fp32.blocks[0].lin[t];
    *out = q->out;
    *in = q->in;
    return q->w;
}

double explain_eval(const Model *m, const LoraSet *lora, const Dataset *data, size_t n_max, size_t B,
                    size_t *tokens) {
    const size_t n = arrlenu(data->ex) < n_max ? arrlenu(data->ex) : n_max;
    size_t T = 1;
    for (size_t i = 0; i < n; i++) T = data->ex[i].len > T ? data->ex[i].len : T;
    Acts *a = acts_create(m, lora, B, T, ACTS_INFER);
    size_t *order = xmalloc((n ? n : 1) * sizeof(size_t));
    int *tok = xmalloc(B * T * sizeof(int)), *tgt = xmalloc(B * T * sizeof(int));
    data_epoch_order(n, false, 0, 0, order);
    double total = 0;
    size_t count = 0;
    for (size_t i = 0; i < n; i += B) {
        const size_t b = n - i < B ? n - i : B;
        size_t pred = 0;
        const size_t Tb = data_batch(data, order, i, b, tok, tgt, &pred);
        total += model_forward(m, lora, a, tok, tgt, b, Tb, &count, NULL);
    }
    free(order);
    free(tok);
    free(tgt);
    acts_free(a);
    *tokens = count;
    return count ? total / (double)count : 0;
}

// The job's targets on model m's linears.
static void job_targets(const Lesson *l, const Model *m, bool targets[LORA_N_TARGETS]) {
    const LoraShapes shapes = model_lora_shapes(&m->cfg);
    Error err = {0};
    memset(targets, 0, LORA_N_TARGETS * sizeof *targets);
    for (int i = 0; i < l->job.n_lora_target_modules; i++)
        if (!lora_parse_target(&shapes, l->job.lora_target_modules[i], targets, &err))
            die(EXIT_BAD_INPUT, "%s: lora_target_modules: %s (model %s)", l->a.job, err.msg, l->a.model);
    if (l->job.lora_target_linear) CHECK(lora_parse_target(&shapes, "all-linear", targets, &err));
}

void explain_make_adapter(const Lesson *l, const Model *m, LoraSet *lora) {
    const LoraShapes shapes = model_lora_shapes(&m->cfg);
    bool targets[LORA_N_TARGETS];
    job_targets(l, m, targets);
    Rng rng;
    rng_seed(&rng, (uint64_t)l->job.seed);  // as qlora train seeds it: the same adapter
    lora_create(lora, m->cfg.n_layer, &shapes, (int)l->job.lora_r, (float)l->job.lora_alpha,
                (float)l->job.lora_dropout, l->job.use_rslora, targets, &rng);
}

const char *explain_count(double n, char *buf, size_t cap) {
    if (n >= 1e9) snprintf(buf, cap, "%.4g billion", n / 1e9);
    else if (n >= 1e6) snprintf(buf, cap, "%.4g million", n / 1e6);
    else if (n >= 1e3) snprintf(buf, cap, "%.0f,%03.0f", floor(n / 1e3), fmod(n, 1e3));
    else snprintf(buf, cap, "%.0f", n);
    return buf;
}

void explain_targets(const Lesson *l, char *buf, size_t cap) {
    const LoraShapes shapes = model_lora_shapes(&l->q.cfg);
    bool targets[LORA_N_TARGETS];
    job_targets(l, &l->q, targets);
    buf[0] = '\0';
    for (int t = 0; t < shapes.n; t++)
        if (targets[t]) snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", buf[0] ? ", " : "", shapes.path[t]);
}

// ---- setting up --------------------------------------------------------------------------------

// The job file with the options applied: the model, the block size, the steps. The lesson is
// about QLoRA: a job of another method is refused.
static void load_job(Lesson *l) {
    const ExplainArgs *a = &l->a;
    Error err = {0};
    if (access(a->job, R_OK) != 0)
        die(EXIT_BAD_INPUT, "%s: cannot read the job file: %s (qlora explain follows the demo: run it from the "
                            "qlora folder, or pass --job and --model)", a->job, strerror(errno));
    config_defaults(&l->job);
    if (!config_load(&l->job, a->job, &err)) die_error(&err);
    if (l->job.method != METHOD_QLORA)
        die(EXIT_BAD_INPUT, "%s: method %s, but the lesson traces QLoRA: give --job a job with method: qlora",
            a->job, train_method_name(l->job.method));
    l->job_steps = l->job.max_steps;
    config_set_path(&l->job.base_model, a->model);
    l->job.quant_blocksize = (long)a->blocksize;
    l->job.max_steps = a->steps;
    if (!config_validate(&l->job, &err)) die(EXIT_BAD_INPUT, "%s: %s", a->job, err.msg);
}

// The model twice (fp32 linears, and as the job stores them), its tokenizer and the job's data.
static void load_model_and_data(Lesson *l) {
    TrainConfig *c = &l->job;
    Error err = {0};
    const QuantConfig none = {QUANT_NONE, l->a.blocksize, false};
    const QuantConfig q = {c->quant, l->a.blocksize, c->double_quant};
    if (!model_load(&l->fp32, l->a.model, &none, &err) || !model_load(&l->q, l->a.model, &q, &err)) die_error(&err);
    bool bf16 = false;
    if (!bgemm_mode(bf16_mode_name(c->bf16), &bf16, &err)) die(EXIT_BAD_INPUT, "%s: %s", l->a.job, err.msg);
    model_set_bf16(&l->q, bf16);
    const GPT2Config *mc = &l->q.cfg;
    if (c->sequence_len == 0) c->sequence_len = mc->n_positions < 512 ? mc->n_positions : 512;
    if (c->sequence_len > mc->n_positions)
        die(EXIT_BAD_INPUT, "%s: sequence_len %ld exceeds the model's n_positions %d", l->a.job, c->sequence_len,
            mc->n_positions);
    l->tok = cmd_load_tokenizer(l->a.model, mc);
    if (strcmp(c->dataset_format, "chat_template") == 0)
        die(EXIT_BAD_INPUT, "%s: dataset_format chat_template: the lesson reads text, jsonl or alpaca datasets "
                            "(train the chat job with qlora train)", l->a.job);
    DataOptions o = {.format = c->dataset_format, .seq_len = (size_t)c->sequence_len,
                     .train_on_inputs = c->train_on_inputs, .vocab_size = mc->vocab_size, .drop_long = c->drop_long};
    if (!data_load(&l->train, c->dataset, l->tok, &o, &err)) die_error(&err);
    if (c->val_dataset[0]) {
        if (!data_load(&l->val, c->val_dataset, l->tok, &o, &err)) die_error(&err);
    } else if (!data_split(&l->train, &l->val, c->val_set_size, (uint64_t)c->seed, &err)) {
        die_error(&err);
    }
    const LoraShapes shapes = model_lora_shapes(mc);
    size_t best = 0;  // section 4's matrix: block 0's largest linear
    for (int t = 0; t < shapes.n; t++)
        if (shapes.in[t] * shapes.out[t] > best) best = shapes.in[t] * shapes.out[t], l->matrix_t = t;
    snprintf(l->matrix_name, sizeof l->matrix_name, "%s0.%s",
             shapes.alt_block_prefix ? shapes.alt_block_prefix : shapes.block_prefix, shapes.path[l->matrix_t]);
}

// The page's opening: what it is, and the inputs every number depends on.
static void intro(Lesson *l) {
    const ExplainArgs *a = &l->a;
    Doc *d = &l->doc;
    doc_para(d, "This lesson follows QLoRA (a frozen base model stored in 4-bit NormalFloat, plus small trained "
                "LoRA adapters) from the way one number is stored to a real fine-tuning run, in nine steps. "
                "Nothing on it is typed in by hand: every number, table and chart was computed by qlora's own "
                "code (the quantizers in `quant.c`, the memory model in `memory.c`, the model loader, `lora.c` "
                "and the trainer) while the lesson was being written, from the inputs below. Run `qlora "
                "explain` with other inputs, say `--blocksize 32`, and the numbers follow.");
    char n1[48];
    DocTable t;
    doc_table_begin(&t, "lll", "input\tvalue\tused in sections");
    doc_row(&t, "`--number`\t%.9g\t1", a->number);
    doc_row(&t, "`--params`\t%s\t2", explain_count(a->params, n1, sizeof n1));
    doc_row(&t, "`--blocksize`\t%zu\t3, 4, 5, 7, 8", a->blocksize);
    doc_row(&t, "`--model`\t`%s` (%d layers, width %d, vocabulary %d)\t4-8", a->model, l->q.cfg.n_layer,
            l->q.cfg.n_embd, l->q.cfg.vocab_size);
    doc_row(&t, "`--job`\t`%s` (data `%s`)\t5-8", a->job, l->job.dataset);
    doc_row(&t, "`--steps`\t%ld\t8", a->steps);
    doc_row(&t, "machine\t%d threads; frozen weights multiplied in %s\t7, 8", omp_get_max_threads(),
            l->q.bf16 ? "bf16 with fp32 sums" : "fp32");
    doc_table_end(d, &t, "The inputs of this lesson");
}

// DIR/index.html, written whole or not at all.
static void write_page(const Lesson *l) {
    char *page = doc_html(&l->doc, "QLoRA from the bits up: a lesson computed by qlora");
    char *path = path_join(l->a.out, "index.html");
    Error err = {0};
    if (!write_file_atomic(path, page, strlen(page), &err)) die_error(&err);
    printf("\nwrote %s (%d sections, %d tables, %d figures)\n", path, l->doc.n_sections, l->doc.n_tables,
           l->doc.n_figures);
    free(path);
    free(page);
}

int cmd_explain(int argc, char **argv) {
    ExplainArgs a = {.model = "data/base-model", .job = "configs/demo.yaml", .steps = 60,
                     .blocksize = QUANT_DEFAULT_BLOCK, .number = 0.3457, .params = 7e9};
    int rc = cli_parse(&EXPLAIN, &a, argc, argv);
    if (rc != CLI_RUN) return rc;
    Error err = {0};
    if (a.out && !path_mkdir_p(a.out, &err)) die_error(&err);
    Lesson *l = xcalloc(1, sizeof *l);
    l->a = a;
    doc_init(&l->doc);
    load_job(l);
    load_model_and_data(l);
    printf("qlora explain: QLoRA from the bits up, computed by qlora's own code\n");
    intro(l);
    void (*const sections[])(Lesson *) = {explain_numbers, explain_memory, explain_int8,
                                          explain_nf4,     explain_real_model, explain_lora,
                                          explain_step,    explain_run,        explain_paper};
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        sections[i](l);
        doc_flush_text(&l->doc, stdout);
    }
    if (a.out) write_page(l);
    doc_free(&l->doc);
    data_free(&l->train);
    data_free(&l->val);
    tok_free(l->tok);
    model_free(&l->q);
    model_free(&l->fp32);
    config_free(&l->job);
    free(l);
    return 0;
}
