// cmd/bench.c: `qlora bench`, the throughput of the training step `qlora train` runs
// (trainer.h: the same train_step) for any model size and method, with a per-phase breakdown and the sgemm GFLOP/s of the step's own matrix shapes measured in
// the same run (so the ratio means something on a noisy machine). A benchmark, not a test.
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "bgemm.h"
#include "cli.h"
#include "ds.h"
#include "gemm.h"
#include "model.h"
#include "optim.h"
#include "qlinear.h"
#include "trainer.h"

typedef struct {
    char op;  // 'n' = matmul_nt, 'm' = matmul_nn, 't' = matmul_tn, 'u' = matmul_tt
    size_t M, N, K;
    double count;  // calls per step
    size_t batch;  // products per call (matmul_batch, as attention runs them); 1 = plain
    bool bf16;     // run in bf16 (matmul_bf16, or matmul_batch_bf16 for a batch)
} GemmShape;

// A batched call: `batch` products of M x N x K, `count` such calls per step, in bf16 or not.
static void add_batched(GemmShape **list, char op, size_t M, size_t N, size_t K, double count, size_t batch,
                        bool bf16) {
    GemmShape g = {op, M, N, K, count, batch, bf16};
    arrput(*list, g);
}

static void add_shape(GemmShape **list, char op, size_t M, size_t N, size_t K, double count) {
    add_batched(list, op, M, N, K, count, 1, false);
}

// A frozen weight's product: in bf16 when the step runs them so.
static void add_frozen(GemmShape **list, char op, size_t M, size_t N, size_t K, double count, bool bf16) {
    add_batched(list, op, M, N, K, count, 1, bf16);
}

// The matrix products of one training step (forward + backward), with their counts. LoRA's
// rank-r work is not among them: it runs as fused per-token kernels (lora_kernels.h).
static GemmShape *step_shapes(const GPT2Config *c, size_t B, size_t T, bool full, bool bf16) {
    GemmShape *g = NULL;
    const size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, V = (size_t)c->vocab_size;
    const size_t NH = (size_t)c->n_head, HS = C / NH, N = B * T, L = (size_t)c->n_layer;
    const size_t in[4] = {C, C, C, F}, out[4] = {3 * C, C, F, C};
    for (int t = 0; t < 4; t++) {
        add_frozen(&g, 'n', N, out[t], in[t], (double)L, bf16);                           // forward
        add_frozen(&g, 'm', N, in[t], out[t], (double)L - (t == 0 && !full ? 1 : 0), bf16);  // dx
        if (full) add_shape(&g, 't', out[t], in[t], N, (double)L);                 // dW
    }
    // attention: one batched call over the B x NH (sequence, head) pairs per product, in
    // bf16 when the model's products are
    add_batched(&g, 'n', T, T, HS, 2.0 * (double)L, B * NH, bf16);  // scores (forward), dP
    add_batched(&g, 'm', T, HS, T, 2.0 * (double)L, B * NH, bf16);  // P v (forward), dq
    add_batched(&g, 't', T, HS, T, 2.0 * (double)L, B * NH, bf16);  // dv, dk
    const size_t rows = model_logit_rows(ACTS_TRAIN) < N ? model_logit_rows(ACTS_TRAIN) : N;
    add_frozen(&g, 'n', rows, V, C, (double)N / (double)rows, bf16);  // logits, in chunks
    add_frozen(&g, 'm', rows, C, V, (double)N / (double)rows, bf16);  // dlnf
    if (full) add_shape(&g, 't', V, C, N, 1);  // d wte (tied head)
    return g;
}

// "nt", "nn", "tn" or "tt", as matmul_batch takes it.
static const char *op_name(const GemmShape *g) {
    return g->op == 'n' ? "nt" : g->op == 'm' ? "nn" : g->op == 't' ? "tn" : "tt";
}

static double call_flops(const GemmShape *g) {
    return 2.0 * (double)g->M * (double)g->N * (double)g->K * (double)g->batch;
}
static double shape_flops(const GemmShape *g) { return call_flops(g) * g->count; }

// Seconds sgemm takes for one call of shape g (best of 3 after a warm-up). a, b, c hold at
// least batch x (M K, N K, M N) floats.
static double time_sgemm(const GemmShape *g, float *a, float *b, float *c) {
    double best = 1e30;
    const size_t n = g->batch;
    const float **pa = xmalloc(3 * n * sizeof *pa), **pb = pa + n, **pc = pa + 2 * n;
    for (size_t i = 0; i < n; i++) {
        pa[i] = a + i * g->M * g->K;
        pb[i] = b + i * g->N * g->K;
        pc[i] = c + i * g->M * g->N;
    }
    for (int rep = 0; rep < 4; rep++) {
        double t0 = time_now();
        const bool ta = g->op == 't' || g->op == 'u', tb = g->op == 'n' || g->op == 'u';
        const size_t lda = ta ? g->M : g->K, ldb = tb ? g->K : g->N;
        if (g->bf16 && n > 1)
            matmul_batch_bf16(op_name(g), n, (float *const *)pc, pa, pb, g->M, g->N, g->K, 1, 0, lda, ldb, g->N);
        else if (g->bf16)
            matmul_bf16(g->op == 'n', c, a, b, g->M, g->N, g->K, 1, 0, lda, ldb, g->N);
        else if (n > 1)
            matmul_batch(op_name(g), n, (float *const *)pc, pa, pb,
                         g->M, g->N, g->K, 1, 0, lda, ldb, g->N);
        else if (g->op == 'n') matmul_nt(c, a, b, g->M, g->N, g->K, 1, 0, lda, ldb, g->N);
        else if (g->op == 'm') matmul_nn(c, a, b, g->M, g->N, g->K, 1, 0, lda, ldb, g->N);
        else if (g->op == 't') matmul_tn(c, a, b, g->M, g->N, g->K, 1, 0, lda, ldb, g->N);
        else matmul_tt(c, a, b, g->M, g->N, g->K, 1, 0, lda, ldb, g->N);
        double dt = time_now() - t0;
        if (rep > 0 && dt < best) best = dt;
    }
    free(pa);
    return best;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    const char *model_dir, *preset, *method, *quant, *gemm;
    QuantConfig q;  // from quant and no_double_quant (bench_parse)
    long B, T, r, threads, steps;
    bool ckpt, per_shape, bf16, no_double_quant;
} BenchOpts;

static const char *const METHODS[] = {"qlora", "lora", "full", NULL};
static const char *const QUANTS[] = {"nf4", "fp4", "int8", "none", NULL};
static const char *const ENGINES[] = {"auto", "openblas", "native", NULL};

static const CliOption BENCH_OPTIONS[] = {
    {"--model", CLI_STR(BenchOpts, model_dir), "DIR", "a model folder to load (instead of a preset)"},
    {"--preset", CLI_STR(BenchOpts, preset), "NAME", "gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny, smollm2-135m, smollm2-360m, qwen2.5-0.5b, tinyllama-1.1b or llama-tiny, initialised at random in memory"},
    {"--method", CLI_CHOICE(BenchOpts, method), NULL, "what is trained", .choices = METHODS},
    {"--quant", CLI_CHOICE(BenchOpts, quant), NULL, "storage of the frozen linears (method qlora; none means lora)", .choices = QUANTS},
    {"--no-double-quant", CLI_FLAG(BenchOpts, no_double_quant), NULL, "keep the NF4/FP4 block scales in fp32"},
    {"--batch", CLI_INT(BenchOpts, B), "B", "examples per step", .lo = 1, .hi = 4096},
    {"--seq", CLI_INT(BenchOpts, T), "T", "tokens per example", .lo = 2, .hi = 1 << 16},
    {"--lora-r", CLI_INT(BenchOpts, r), "R", "LoRA rank (every linear)", .lo = 1, .hi = 4096},
    {"--threads", CLI_INT(BenchOpts, threads), "N", "threads; 0 = OMP_NUM_THREADS or all cores", .lo = 0, .hi = 1024},
    {"--steps", CLI_INT(BenchOpts, steps), "N", "timed steps after one warm-up", .lo = 1, .hi = 1000},
    {"--gradient-checkpointing", CLI_FLAG(BenchOpts, ckpt), NULL, "keep only block inputs, recompute in the backward"},
    {"--gemm", CLI_CHOICE(BenchOpts, gemm), NULL, "the matrix-product engine, as QLORA_GEMM (see README)", .choices = ENGINES},
    {"--bf16", CLI_FLAG(BenchOpts, bf16), NULL,
     "multiply the frozen weights in bf16 with fp32 sums (AVX512-BF16 or AMX; an error without them; "
     "QLORA_BF16_ISA=avx512bf16 picks the former where both exist)"},
    {"--per-shape", CLI_FLAG(BenchOpts, per_shape), NULL, "list each matrix shape of the step with its time inside the step and alone"},
    CLI_END};

static const CliCommand BENCH = {
    .name = "bench",
    .about =
    "Times training steps (one warm-up, then N) of the step `qlora train` runs, on random tokens:\n"
    "ms/step, tokens/s, a per-phase breakdown, the achieved GFLOP/s next to the products' GFLOP/s\n"
    "on the same matrix shapes measured in the same run, and peak RSS. Defaults: gpt2, qlora nf4 +\n"
    "double quant, batch 4 x 256, r 8 on all linears. Last line:\n"
    "tokens_per_s=<float> ms_per_step=<float> peak_rss_mib=<float>\n",
    .options = BENCH_OPTIONS};

// Parse qlora bench's arguments into o; exits with the parser's status on --help or a
// usage error.
static void bench_parse(int argc, char **argv, BenchOpts *o) {
    *o = (BenchOpts){.preset = "gpt2", .method = "qlora", .quant = "nf4", .B = 4, .T = 256, .r = 8, .steps = 5};
    const int rc = cli_parse(&BENCH, o, argc, argv);
    if (rc != CLI_RUN) exit(rc);
    Error e;
    if (o->gemm && !gemm_engine_set(o->gemm, &e)) cli_usage_error("bench", "--gemm: %s", e.msg);
    o->q = (QuantConfig){QUANT_NF4, QUANT_DEFAULT_BLOCK, !o->no_double_quant};
    CHECK(quant_parse(o->quant, &o->q.type));
    if (strcmp(o->method, "qlora") != 0) o->q.type = QUANT_NONE;
    else if (o->q.type == QUANT_NONE) o->method = "lora";
}

// A dataset of B examples of T random tokens below vocab, every token a label: the batch
// `qlora train` would build from such a file.
static void random_dataset(Dataset *d, size_t B, size_t T, int vocab, Rng *rng) {
    memset(d, 0, sizeof *d);
    for (size_t b = 0; b < B; b++) {
        Example e = {.ids = xmalloc(T * sizeof(int)), .labels = xmalloc(T * sizeof(int)), .len = T, .n_predicted = T - 1};
        for (size_t i = 0; i < T; i++) e.ids[i] = e.labels[i] = (int)(rng_u64(rng) % (uint64_t)vocab);
        arrput(d->ex, e);
        d->n_tokens += T;
    }
}

// The trainer bench times: one micro-batch of B x T per step, clipping at 1, AdamW at a
// constant 1e-4 without weight decay; LoRA (alpha 16, no dropout, every linear) unless full.
static void bench_trainer(Trainer *t, Model *m, LoraSet *lora, const Dataset *d, const BenchOpts *o, Rng *rng) {
    const bool full = strcmp(o->method, "full") == 0;
    if (!full) {
        bool targets[LORA_N_TARGETS] = {0};
        LoraShapes shapes = model_lora_shapes(&m->cfg);
        lora_parse_target(&shapes, "all-linear", targets, &(Error){0});
        lora_create(lora, m->cfg.n_layer, &shapes, (int)o->r, 16.0f, 0.0f, false, targets, rng);
    }
    TrainerOptions opt = {.micro_batch = (size_t)o->B, .accumulation = 1, .seq_len = (size_t)o->T,
                          .acts_mode = o->ckpt ? ACTS_CHECKPOINT : ACTS_TRAIN, .seed = 3, .max_grad_norm = 1.0f,
                          .adamw = {1e-4f, 0.9f, 0.999f, 1e-8f, 0.0f}, .learning_rate = 1e-4,
                          .schedule = LR_CONSTANT, .total_steps = o->steps + 1};
    trainer_init(t, m, full ? NULL : lora, d, (Dist){0, 1}, &opt);
}

// What the timed steps measured: per-step seconds (sorted), the phase profile, the
// optimizer's and the products' seconds summed over the steps, peak RSS in MiB.
typedef struct {
    double *times;
    Profile prof;
    double t_opt, t_products, rss;
} BenchTiming;

// One warm-up step, then `steps` timed steps of train_step, the step `qlora train` runs.
static void bench_run_steps(Trainer *t, long steps, BenchTiming *out) {
    memset(out, 0, sizeof *out);
    out->times = xmalloc((size_t)steps * sizeof(double));
    for (long s = -1; s < steps; s++) {  // s = -1: warm-up, not timed
        if (s == 0) {
            acts_set_profile(t->acts, &out->prof);
            gemm_timing(true);
        }
        StepResult r;
        if (train_step(t, &r) != STEP_OK)
            die(EXIT_RUNTIME, "bench: step %ld: non-finite loss, gradient or update in '%s'", s + 2, r.bad);
        if (s >= 0) {
            out->t_opt += r.t_update;
            out->times[s] = r.t_gradients + r.t_update;
        }
    }
    acts_set_profile(t->acts, NULL);
    out->t_products = gemm_seconds();
    gemm_timing(false);
    out->rss = (double)peak_rss_bytes() / 1048576.0;
    qsort(out->times, (size_t)steps, sizeof(double), cmp_double);
}

// Each matrix shape's time inside the timed steps (gemm.h's table, read before the products
// are timed alone), per step, slowest first: where the step's products lose against the
// same shapes alone.
static void print_step_shapes(long steps) {
    size_t n;
    const GemmShapeTime *all = gemm_shape_times(&n);
    GemmShapeTime *g = xmalloc((n ? n : 1) * sizeof *g);
    memcpy(g, all, n * sizeof *g);
    for (size_t i = 1; i < n; i++)  // insertion sort by seconds, descending
        for (size_t j = i; j > 0 && g[j].seconds > g[j - 1].seconds; j--) {
            const GemmShapeTime x = g[j];
            g[j] = g[j - 1], g[j - 1] = x;
        }
    printf("products inside the step, by shape (ms/step):\n");
    for (size_t i = 0; i < n; i++) {
        const double flop = 2.0 * (double)g[i].M * (double)g[i].N * (double)g[i].K * (double)g[i].batch;
        printf("  %-11s %c%c %6zu x %6zu x %6zu  batch %3zu  x%-5.1f %7.1f GFLOP/s  %7.1f ms/step\n", g[i].kind,
               g[i].ta ? 't' : 'n', g[i].tb ? 't' : 'n', g[i].M, g[i].N, g[i].K, g[i].batch,
               (double)g[i].calls / (double)steps, flop * (double)g[i].calls / g[i].seconds / 1e9,
               1e3 * g[i].seconds / (double)steps);
    }
    free(g);
}

// The step's matrix shapes timed alone (bf16 where the step runs them so): their FLOP and
// seconds per step into *flops and *seconds; with per_shape, a line per shape.
static void time_shapes_alone(const GemmShape *shapes, bool per_shape, double *flops, double *seconds) {
    size_t maxa = 1, maxb = 1, maxc = 1;
    for (size_t i = 0; i < arrlenu(shapes); i++) {
        const GemmShape *g = &shapes[i];
        maxa = maxa > g->batch * g->M * g->K ? maxa : g->batch * g->M * g->K;
        maxb = maxb > g->batch * g->N * g->K ? maxb : g->batch * g->N * g->K;
        maxc = maxc > g->batch * g->M * g->N ? maxc : g->batch * g->M * g->N;
    }
    float *ga = xmalloc_aligned(maxa * 4), *gb = xmalloc_aligned(maxb * 4), *gc = xmalloc_aligned(maxc * 4);
    for (size_t i = 0; i < maxa; i++) ga[i] = 0.01f * (float)(i % 97);
    for (size_t i = 0; i < maxb; i++) gb[i] = 0.01f * (float)(i % 89);
    *flops = *seconds = 0;
    for (size_t i = 0; i < arrlenu(shapes); i++) {
        const GemmShape *g = &shapes[i];
        const double t = time_sgemm(g, ga, gb, gc);
        *flops += shape_flops(g);
        *seconds += t * g->count;
        if (per_shape)
            printf("  %s %s %6zu x %6zu x %6zu  batch %3zu  x%-4.0f %7.1f GFLOP/s  %7.1f ms/step\n",
                   g->bf16 ? "bf16 " : "sgemm", op_name(g), g->M, g->N, g->K, g->batch,
                   g->count, call_flops(g) / t / 1e9, 1e3 * t * g->count);
    }
    free(ga), free(gb), free(gc);
}

// The report: what ran, the step times, the phases, products vs the rest, the products
// alone (flops, t_alone) and the last machine-readable line.
static void bench_report(const BenchOpts *o, const Model *m, size_t n_train, double t_load,
                         const BenchTiming *bt, double flops, double t_alone) {
    const bool lora_on = strcmp(o->method, "full") != 0;
    const size_t N = (size_t)(o->B * o->T);
    const double med = bt->times[o->steps / 2], n = (double)o->steps;
    const QuantType qt = o->q.type;
    char blas[256];
    printf("bench: %s, method %s%s%s, %d layers x %d wide, batch %ld x %ld, LoRA r %ld, %s; %zu trainable "
           "parameters; set up in %.1f s\n", o->model_dir ? o->model_dir : o->preset, o->method, qt != QUANT_NONE ? " " : "",
           qt != QUANT_NONE ? (o->q.double_quant && qt != QUANT_INT8 ? "(nf4/fp4 + double quant)" : quant_name(qt)) : "",
           m->cfg.n_layer, m->cfg.n_embd, o->B, o->T, lora_on ? o->r : 0L,
           o->ckpt ? "gradient checkpointing" : "all activations kept", n_train, t_load);
    printf("blas: %s\n", blas_describe(blas, sizeof blas));
    printf("frozen weights' products: %s\n", o->bf16 ? bgemm_isa_name(bgemm_isa()) : "fp32");
    printf("ms/step: median %.1f, min %.1f, max %.1f over %ld steps; %.1f tokens/s\n", 1e3 * med,
           1e3 * bt->times[0], 1e3 * bt->times[o->steps - 1], o->steps, (double)N / med);
    // NF4/FP4 codes decoded inside the products' packing (native fp32 engine, or bf16) are
    // part of "matmul": there is no separate phase
    const bool fused_dq = qlinear_dequant_in_products(qt, N) || (o->bf16 && (qt == QUANT_NF4 || qt == QUANT_FP4));
    char dq[64];
    if (fused_dq) snprintf(dq, sizeof dq, "inside the products' packing");
    else snprintf(dq, sizeof dq, "%.1f", 1e3 * bt->prof.dequant / n);
    printf("phases (ms/step): dequantize %s | matmul forward %.1f | attention forward %.1f | other forward %.1f | "
           "loss head + backward %.1f | optimizer %.1f\n", dq, 1e3 * bt->prof.matmul_fwd / n,
           1e3 * bt->prof.attention_fwd / n, 1e3 * bt->prof.other_fwd / n, 1e3 * bt->prof.backward / n,
           1e3 * bt->t_opt / n);
    double t_total = 0;
    for (long i = 0; i < o->steps; i++) t_total += bt->times[i];
    printf("inside matrix products: %.1f ms/step (%.0f%% of the step); everything else %.1f ms/step\n",
           1e3 * bt->t_products / n, 100.0 * bt->t_products / t_total, 1e3 * (t_total - bt->t_products) / n);
    printf("matmul work: %.1f GFLOP/step; achieved %.1f GFLOP/s; %s alone on the same shapes %.1f GFLOP/s "
           "(%.0f%% of it; ceiling %.1f tokens/s)\n", flops / 1e9, flops / med / 1e9,
           o->bf16 ? "the products" : "sgemm", flops / t_alone / 1e9, 100.0 * t_alone / med, (double)N / t_alone);
    printf("peak RSS %.1f MiB (of the training steps, before the sgemm-alone measurement)\n", bt->rss);
    const char *hint = blas_kernel_hint();
    if (hint) printf("%s\n", hint);
    printf("tokens_per_s=%.1f ms_per_step=%.2f peak_rss_mib=%.1f\n", (double)N / med, 1e3 * med, bt->rss);
}

// Load the --model folder or build the preset in memory; seconds taken into *t_load.
static void bench_model(const BenchOpts *o, Model *m, double *t_load) {
    Error err = {0};
    const double t0 = time_now();
    if (o->model_dir) {
        if (!model_load(m, o->model_dir, &o->q, &err)) die_error(&err);
    } else {
        GPT2Config cfg;
        if (!model_preset(o->preset, &cfg)) cli_usage_error("bench", "unknown preset '%s'", o->preset);
        if (!model_init_random(m, &cfg, &o->q, 1, &err)) die_error(&err);
    }
    *t_load = time_now() - t0;
    if (o->bf16) {
        bool on;
        if (strcmp(o->method, "full") == 0)
            cli_usage_error("bench", "--bf16 applies to frozen weights; method full trains them all");
        if (!bgemm_mode("true", &on, &err)) cli_usage_error("bench", "--bf16: %s", err.msg);
        model_set_bf16(m, true);
    }
    if (o->T > m->cfg.n_positions) die(EXIT_BAD_INPUT, "--seq %ld exceeds n_positions %d", o->T, m->cfg.n_positions);
}

int cmd_bench(int argc, char **argv) {
    BenchOpts o;
    bench_parse(argc, argv, &o);
    const bool full = strcmp(o.method, "full") == 0;
    if (o.threads) threads_set((int)o.threads);
    Model m;
    double t_load;
    bench_model(&o, &m, &t_load);
    Rng rng;
    rng_seed(&rng, 3);
    LoraSet lora = {0};
    Dataset data;
    Trainer t;
    random_dataset(&data, (size_t)o.B, (size_t)o.T, m.cfg.vocab_size, &rng);
    bench_trainer(&t, &m, &lora, &data, &o, &rng);
    BenchTiming bt;
    bench_run_steps(&t, o.steps, &bt);
    if (o.per_shape) print_step_shapes(o.steps);
    GemmShape *shapes = step_shapes(&m.cfg, (size_t)o.B, (size_t)o.T, full, o.bf16);
    double flops, t_alone;
    time_shapes_alone(shapes, o.per_shape, &flops, &t_alone);
    bench_report(&o, &m, t.set.n_params, t_load, &bt, flops, t_alone);
    arrfree(shapes);
    free(bt.times);
    trainer_free(&t);
    if (!full) lora_free(&lora);
    data_free(&data);
    model_free(&m);
    return 0;
}
