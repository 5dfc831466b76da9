// cmd/train.c: `qlora train JOB.yaml`: read the job, set up (model, adapter, data, the
// trainer, a resumed checkpoint), loop over train_step with evaluation, logging and
// checkpoints, then write the weights, the memory account and the report.
// The step itself: trainer.c; checkpoints: checkpoint.c; the report: report.c.
#include "train.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bgemm.h"
#include "checkpoint.h"
#include "cli.h"
#include "config.h"
#include "data.h"
#include "dist.h"
#include "ds.h"
#include "gemm.h"
#include "memory.h"
#include "model_args.h"
#include "model.h"
#include "path.h"
#include "report.h"
#include "tokenizer.h"
#include "trainer.h"

static volatile sig_atomic_t g_stop_signal = 0;  // set by SIGINT/SIGTERM; checked per step

static void on_signal(int sig) { g_stop_signal = sig; }

// Everything one run holds: the job, its inputs, the trainer and the outputs' state.
typedef struct {
    TrainConfig cfg;
    bool full;       // method full: the model's own parameters are trained, no adapter
    Model model;
    LoraSet lora;    // unused with full
    Tokenizer *tok;
    ChatSetup chat;            // dataset_format chat_template: the template (else unused)
    ChatOptions chat_opts;     // what DataOptions.chat points to
    const char *roles[CFG_MAX_ROLES];
    Dataset train, val;
    Trainer trainer;
    FILE *metrics;   // rank 0 only
    char *last_ckpt;  // newest checkpoint this run saved or resumed from (malloc'ed; "none" before one)
    Dist dist;       // this process's rank among size data-parallel ranks (1 without MPI)
} Run;

// ---- evaluation and logging --------------------------------------------------------------------

// Human-friendly duration ("1h02m", "3m05s", "42s") into buf.
static void fmt_duration(double s, char *buf, size_t cap) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, cap, "%lds", t);
}

// Keep only metrics lines with step <= keep_step (resume), then append from there. The
// kept lines are written to a temporary file that replaces metrics.jsonl by a rename, so a
// kill at any moment leaves either the old history or the new one, never a truncated file.
static FILE *open_metrics(const char *dir, long keep_step, Error *err) {
    char *path = path_join(dir, "metrics.jsonl"), *old = NULL;
    size_t len = 0;
    Error ignore = {0};
    if (keep_step > 0 && !file_read_all(path, &old, &len, &ignore)) old = NULL;
    AtomicFile af;
    if (!atomic_open(&af, path, err)) {
        free(old);
        free(path);
        return NULL;
    }
    bool ok = true;
    for (char *line = old; ok && line && *line;) {
        char *nl = strchr(line, '\n');
        if (!nl) break;  // a line cut short by a crash: dropped
        long step = -1;
        if (sscanf(line, "{\"step\": %ld", &step) == 1 && step <= keep_step)
            ok = atomic_write(&af, line, (size_t)(nl - line + 1), err);
        line = nl + 1;
    }
    free(old);
    FILE *fp = NULL;
    if (!ok) atomic_abort(&af);
    else if (atomic_commit(&af, err) && !(fp = fopen(path, "a")))
        error_runtime(err, "%s: cannot open for appending: %s", path, strerror(errno));
    free(path);
    return fp;
}

// ---- the job ---------------------------------------------------------------------------------

// What the command line says.
typedef struct {
    const char *job;   // JOB.yaml
    const char **sets; // "key=value" overrides (stb_ds array), applied after the file in order
    bool check, list_keys;
    long preview;      // examples to show (0: train)
} TrainArgs;

static const CliOption TRAIN_OPTIONS[] = {
    {"JOB.yaml", CLI_STR(TrainArgs, job), NULL, "the job file"},
    {"--set", CLI_LIST(TrainArgs, sets), "KEY=VALUE", "override one job key (repeatable; YAML value)"},
    {"--check", CLI_FLAG(TrainArgs, check), NULL, "read and validate the job, print every key's value, and stop"},
    {"--list-keys", CLI_FLAG(TrainArgs, list_keys), NULL, "print every job key with its default and range"},
    {"--preview", CLI_INT(TrainArgs, preview), "N",
     "print the first N training examples as the model sees them (trained tokens between [[ and ]]) with their "
     "token and label counts, and stop", .lo = 1, .hi = 1000000},
    CLI_END};

static const CliCommand TRAIN = {
    .name = "train",
    .about =
    "Fine-tunes a GPT-2 model as the job file says: method qlora (LoRA on a 4-bit NF4 base,\n"
    "the default), lora (fp32 base) or full. Writes output_dir/adapter_model.safetensors +\n"
    "adapter_config.json (PEFT format; full: a model folder), checkpoint-N/ folders and\n"
    "metrics.jsonl. SIGINT/SIGTERM finish the step, save a checkpoint and exit 130/143.\n",
    .options = TRAIN_OPTIONS};

// MemAvailable from /proc/meminfo in bytes, or 0 if unknown.
static double available_memory(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    double kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kib) == 1) break;
    fclose(f);
    return kib * 1024.0;
}

// How the job stores the frozen base: `quant` for method qlora, fp32 for lora and full.
static QuantConfig job_quant(const TrainConfig *c) {
    QuantConfig q = {QUANT_NONE, (size_t)c->quant_blocksize, c->double_quant};
    if (c->method == METHOD_QLORA) q.type = c->quant;
    return q;
}

// Refuse a job whose predicted memory exceeds what the machine has free, before loading
// anything (the kernel would otherwise kill it part-way).
static void check_memory(const TrainConfig *c, const GPT2Config *mc) {
    const ModelShape s = shape_from_config(mc);
    const QuantConfig q = job_quant(c);
    MemJob j = {.B = (size_t)c->micro_batch_size, .T = (size_t)c->sequence_len, .lora_r = (int)c->lora_r,
                .gradient_checkpointing = c->gradient_checkpointing, .quant_blocksize = (size_t)c->quant_blocksize,
                .fp4_double_quant = q.type == QUANT_FP4 && q.double_quant};
    const LoraShapes shapes = model_lora_shapes(mc);
    for (int i = 0; i < c->n_lora_target_modules; i++)
        lora_parse_target(&shapes, c->lora_target_modules[i], j.targets, &(Error){0});
    if (c->lora_target_linear) lora_parse_target(&shapes, "all-linear", j.targets, &(Error){0});
    MemRow rows[MEM_N_METHODS];
    memory_predict(&s, &j, rows);
    const MemRow *p = &rows[memory_method(c->method == METHOD_FULL, q.type, q.double_quant)];
    const double avail = available_memory();
    if (avail > 0 && p->total > avail)
        die(EXIT_RUNTIME, "this job needs about %.2f GiB (%s: %.2f GiB activations; see 'qlora memory --model %s "
                          "--batch %ld --seq %ld') but only %.2f GiB is available; lower micro_batch_size or "
                          "sequence_len, or set gradient_checkpointing: true",
            p->total / 1073741824.0, p->name, p->activations / 1073741824.0, c->base_model, c->micro_batch_size,
            c->sequence_len, avail / 1073741824.0);
}

// Refuse an output_dir that is, contains or is inside one of the job's inputs.
static bool check_output_dir(const TrainConfig *c, Error *err) {
    const char *what[] = {"base_model", "lora_model_dir", "dataset", "val_dataset"};
    const char *in[] = {c->base_model, c->lora_model_dir, c->dataset, c->val_dataset};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        if (!path_check_apart("output_dir", c->output_dir, what[i], in[i], err)) return false;
    return true;
}

// The most bytes a run appends to output_dir in a path it writes: "/checkpoint-STEP.tmp-PID/"
// + the longest file name ("special_tokens_map.json" ... at most 32 bytes) + an atomic write's
// ".tmp.PID", with STEP and PID of at most 19 and 10 digits.
#define OUTPUT_DIR_ROOM (sizeof "/checkpoint-.tmp-/.tmp." - 1 + 19 + 10 + 32 + 10)

// Refuse an output_dir so long that the files a run writes in it would pass the system's limit
// on a path (PATH_MAX): found now, not at the first checkpoint after hours of training.
static bool check_output_room(const TrainConfig *c, Error *err) {
    const size_t n = strlen(c->output_dir);
    if (n + OUTPUT_DIR_ROOM < PATH_MAX) return true;
    return error_set(err, "output_dir '%s': expected at most %zu bytes, found %zu: the files a run writes there "
                          "(checkpoint-STEP.tmp-PID/adapter_model.safetensors.tmp.PID, up to %zu bytes more) must "
                          "stay within the system's limit of %d bytes per path (PATH_MAX); choose a shorter output_dir "
                          "(a relative one counts from the current folder)",
                     c->output_dir, (size_t)PATH_MAX - 1 - OUTPUT_DIR_ROOM, n, OUTPUT_DIR_ROOM, PATH_MAX);
}

// The output folder (refused if it overlaps an input or is too long; created, locked, cleaned
// of a killed run's leftovers) and the thread count.
static void setup_output(Run *r) {
    const TrainConfig *c = &r->cfg;
    Error err = {0};
    if (c->threads) threads_set((int)c->threads);
    if (!check_output_room(c, &err) || !check_output_dir(c, &err) || !path_mkdir_p(c->output_dir, &err))
        die_error(&err);
    if (r->dist.rank == 0 && !dir_lock(c->output_dir, &err)) die_error(&err);
    if (r->dist.rank == 0) checkpoint_clean_stale(c->output_dir);
}

// The base model's config into mc (sequence_len defaulted and checked against it), the tokenizer
// and how the datasets are read into dopt.
static void setup_reading(Run *r, GPT2Config *mc, DataOptions *dopt) {
    TrainConfig *c = &r->cfg;
    Error err = {0};
    if (!model_read_config(mc, c->base_model, &err) || !model_check_sizes(c->base_model, mc, &err)) die_error(&err);
    if (c->sequence_len == 0) c->sequence_len = mc->n_positions < 512 ? mc->n_positions : 512;  // printed in the summary
    if (c->sequence_len > mc->n_positions)  // a model limit, before any memory prediction uses it
        die(EXIT_BAD_INPUT, "sequence_len %ld exceeds the model's n_positions %d", c->sequence_len, mc->n_positions);
    r->tok = cmd_load_tokenizer(c->base_model, mc);  // tokenizer.json, or vocab.json + merges.txt
    *dopt = (DataOptions){.format = c->dataset_format, .seq_len = (size_t)c->sequence_len,
                          .train_on_inputs = c->train_on_inputs, .vocab_size = mc->vocab_size, .drop_long = c->drop_long};
    if (strcmp(c->dataset_format, "chat_template") != 0) return;
    if (!chat_setup(&r->chat, c->chat_template, c->base_model, r->tok, &err)) die_error(&err);
    for (int i = 0; i < c->n_roles_to_train; i++) r->roles[i] = c->roles_to_train[i];
    r->chat_opts = (ChatOptions){&r->chat.renderer, r->roles, (size_t)c->n_roles_to_train, c->train_on_inputs,
                                 c->train_on_eos};
    dopt->chat = &r->chat_opts;
}

// The base model's config (sequence_len defaulted and checked against it, the memory
// prediction checked against the machine), the tokenizer and the datasets.
static void setup_data(Run *r) {
    TrainConfig *c = &r->cfg;
    Error err = {0};
    GPT2Config mc;
    DataOptions dopt;
    setup_reading(r, &mc, &dopt);
    check_memory(c, &mc);
    if (!data_load(&r->train, c->dataset, r->tok, &dopt, &err)) die_error(&err);
    if (c->val_dataset[0]) {
        if (!data_load(&r->val, c->val_dataset, r->tok, &dopt, &err)) die_error(&err);
    } else if (!data_split(&r->train, &r->val, c->val_set_size, (uint64_t)c->seed, &err)) {
        die_error(&err);
    }
}

// The checkpoint to resume from as a new string (NULL for a fresh run), checked against the job.
static char *resume_path(const TrainConfig *c) {
    Error err = {0};
    if (!c->resume_from_checkpoint[0]) return NULL;
    char *resume = strcmp(c->resume_from_checkpoint, "latest") != 0 ? xstrdup(c->resume_from_checkpoint)
                                                                   : checkpoint_latest(c->output_dir);
    if (!resume) die(EXIT_BAD_INPUT, "resume_from_checkpoint: latest: no checkpoint-N folder in %s", c->output_dir);
    if (!checkpoint_check_job(resume, c, &err)) die_error(&err);
    return resume;
}

// The model (a resumed full run continues from its checkpoint's weights), the bf16 choice,
// and the adapter: loaded (lora_model_dir, or the resumed checkpoint: resume, NULL if none) or
// created.
static void setup_model(Run *r, const char *resume) {
    const TrainConfig *c = &r->cfg;
    Error err = {0};
    const QuantConfig q = job_quant(c);
    if (!model_load(&r->model, r->full && resume ? resume : c->base_model, &q, &err)) die_error(&err);
    bool bf16 = false;  // method full has no frozen weights: bf16 auto means fp32 there
    if (!r->full && !bgemm_mode(bf16_mode_name(c->bf16), &bf16, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    model_set_bf16(&r->model, bf16);
    if (r->full) return;
    LoraShapes shapes = model_lora_shapes(&r->model.cfg);
    const char *adapter = resume ? resume : c->lora_model_dir;
    if (adapter[0]) {
        if (!lora_load_peft(&r->lora, adapter, r->model.cfg.n_layer, &shapes, &err)) die_error(&err);
        r->lora.dropout = (float)c->lora_dropout;  // the job's dropout applies in training
    } else {
        bool targets[LORA_N_TARGETS] = {0};
        for (int i = 0; i < c->n_lora_target_modules; i++)
            if (!lora_parse_target(&shapes, c->lora_target_modules[i], targets, &err))
                die(EXIT_BAD_INPUT, "lora_target_modules: %s (base_model %s)", err.msg, c->base_model);
        if (c->lora_target_linear) CHECK(lora_parse_target(&shapes, "all-linear", targets, &err));
        Rng rng;
        rng_seed(&rng, (uint64_t)c->seed);
        lora_create(&r->lora, r->model.cfg.n_layer, &shapes, (int)c->lora_r, (float)c->lora_alpha,
                    (float)c->lora_dropout, c->use_rslora, targets, &rng);
    }
    free(r->lora.base_model);  // the one a loaded adapter names: this run's base replaces it
    r->lora.base_model = xstrdup(c->base_model);
}

// Everything before the first step: outputs, data, model, adapter, the trainer (resumed
// from a checkpoint when the job says so) and the metrics file.
static void setup(Run *r) {
    TrainConfig *c = &r->cfg;
    Error err = {0};
    r->full = c->method == METHOD_FULL;
    setup_output(r);
    setup_data(r);
    char *resume = resume_path(c);
    setup_model(r, resume);
    TrainerOptions o;
    trainer_options(c, &r->train, &o);
    trainer_init(&r->trainer, &r->model, r->full ? NULL : &r->lora, &r->train, r->dist, &o);
    if (resume && !checkpoint_load_state(resume, &r->trainer, &err)) die_error(&err);
    if (r->dist.rank == 0) {
        r->metrics = open_metrics(c->output_dir, r->trainer.step, &err);
        if (!r->metrics) die_error(&err);
    }
    test_delay("setup");
    if (resume) printf("resuming from %s at step %ld (epoch %zu)\n", resume, r->trainer.step, r->trainer.epoch);
    r->last_ckpt = resume ? resume : xstrdup("none");
}

// The start-up summary: the matrix-product engine, the job, and the memory it holds.
static void print_summary(const Run *r) {
    const Trainer *t = &r->trainer;
    char b1[32], b2[32], b3[32], b4[32];
    const char *hint = blas_kernel_hint();
    if (hint) printf("%s\n", hint);
    char blas[256];
    printf("matrix products: %s; frozen weights %s\n", blas_describe(blas, sizeof blas),
           r->model.bf16 ? "in bf16 with fp32 sums" : "in fp32");
    if (r->model.bf16) printf("bf16 products: %s\n", bgemm_isa_name(bgemm_isa()));
    else if (r->cfg.bf16 == BF16_AUTO)
        printf("bf16: auto: fp32 here (%s)\n", r->full ? "method full trains every weight"
                                                       : "this CPU has no AVX512-BF16 or AMX-BF16");
    ModelBytes mb = model_bytes(&r->model);
    char dropped[64] = "";
    if (r->cfg.drop_long)
        snprintf(dropped, sizeof dropped, ", %zu longer ones dropped", r->train.n_dropped + r->val.n_dropped);
    printf("job: method %s, %zu train / %zu val examples (%zu truncated to %ld tokens%s), %ld steps "
           "(micro batch %ld x %ld accumulation), lr %g %s, warm-up %ld\n",
           train_method_name(r->cfg.method), arrlenu(r->train.ex), arrlenu(r->val.ex), r->train.n_truncated,
           r->cfg.sequence_len, dropped, t->opt.total_steps, r->cfg.micro_batch_size,
           r->cfg.gradient_accumulation_steps, r->cfg.learning_rate, lr_schedule_name(r->cfg.lr_scheduler), t->opt.warmup);
    if (r->chat.tmpl) {
        printf("chat: template %s, end of turn %s, roles_to_train [", r->chat.origin, r->chat.eot ? r->chat.eot : "(none)");
        for (int i = 0; i < r->cfg.n_roles_to_train; i++) printf("%s%s", i ? ", " : "", r->cfg.roles_to_train[i]);
        static const char *const EOS[] = {"turn", "all", "none", "last"};
        printf("]%s, train_on_eos %s\n", r->cfg.train_on_inputs ? " (train_on_inputs: every role)" : "",
               EOS[r->cfg.train_on_eos]);
    }
    if (t->opt.pack) {  // tokens over the rows' capacity: the share of each forward pass that is real
        const double eff = (double)r->train.n_tokens / ((double)t->plan.n_rows * (double)r->cfg.sequence_len);
        printf("sample packing: %zu examples (%zu tokens) in %zu rows of %ld tokens, packing efficiency %.1f%%\n",
               arrlenu(r->train.ex), r->train.n_tokens, t->plan.n_rows, r->cfg.sequence_len, 100.0 * eff);
    }
    printf("memory: base linears %s (%s), quant constants %s, embeddings+norms %s, activations %s\n",
           fmt_bytes((double)mb.linear_weights, b1, sizeof b1), quant_name(r->model.quant.type),
           fmt_bytes((double)mb.quant_constants, b2, sizeof b2),
           fmt_bytes((double)(mb.embeddings + mb.norms_and_biases), b3, sizeof b3),
           fmt_bytes((double)acts_bytes(t->acts), b4, sizeof b4));
    const double n = (double)t->set.n_params;
    printf("trainable: %zu parameters (%s), gradients %s, AdamW state %s\n", t->set.n_params,
           fmt_bytes(4.0 * n, b1, sizeof b1), fmt_bytes(4.0 * n, b2, sizeof b2), fmt_bytes(8.0 * n, b3, sizeof b3));
    fflush(stdout);
}

// Print s single-quoted for a POSIX shell.
static void print_quoted(const char *s) {
    putchar('\'');
    for (; *s; s++) {
        if (*s == '\'') fputs("'\\''", stdout);
        else putchar(*s);
    }
    putchar('\'');
}

// The command that resumes this run: the job, every --set of this invocation except
// resume_from_checkpoint (so the resumed run writes to the same output_dir with the same
// settings), then the checkpoint.
static void print_resume_hint(const TrainArgs *a, const char *ckpt) {
    printf("  qlora train ");
    print_quoted(a->job);
    for (size_t i = 0; i < arrlenu(a->sets); i++) {
        if (strncmp(a->sets[i], "resume_from_checkpoint=", 23) == 0) continue;
        printf(" --set ");
        print_quoted(a->sets[i]);
    }
    char *last = path_fmt("resume_from_checkpoint=%s", ckpt);
    printf(" --set ");
    print_quoted(last);
    printf("\n");
    free(last);
}

// --preview N: the first n examples of the training file as the model gets them (trained tokens
// marked), their counts, and the dataset's; nothing is written. Returns the exit status.
static int preview(Run *r, long n) {
    const TrainConfig *c = &r->cfg;
    Error err = {0};
    GPT2Config mc;
    DataOptions dopt;
    setup_reading(r, &mc, &dopt);
    if (!data_load(&r->train, c->dataset, r->tok, &dopt, &err)) die_error(&err);
    const size_t shown = arrlenu(r->train.ex) < (size_t)n ? arrlenu(r->train.ex) : (size_t)n;
    if (r->chat.tmpl) printf("--- chat template %s, end of turn %s\n", r->chat.origin, r->chat.eot ? r->chat.eot : "(none)");
    char *text = NULL;
    for (size_t i = 0; i < shown; i++) {
        const Example *e = &r->train.ex[i];
        size_t labels = 0;
        for (size_t k = 1; k < e->len; k++) labels += e->labels[k] >= 0;
        if (e->line) printf("--- example %zu (%s:%zu): %zu tokens, %zu trained\n", i + 1, c->dataset, e->line, e->len, labels);
        else printf("--- example %zu (%s, window %zu): %zu tokens, %zu trained\n", i + 1, c->dataset, i + 1, e->len, labels);
        arrsetlen(text, 0);
        data_example_text(r->tok, e, &text);
        fwrite(text, 1, arrlenu(text), stdout);
        printf("\n");
    }
    printf("--- %zu of %zu examples shown (%zu tokens, %zu truncated to %ld tokens, %zu longer ones dropped); trained "
           "tokens are between " DATA_MARK_OPEN " and " DATA_MARK_CLOSE "\n",
           shown, arrlenu(r->train.ex), r->train.n_tokens, r->train.n_truncated, c->sequence_len, r->train.n_dropped);
    arrfree(text);
    data_free(&r->train);
    chat_setup_free(&r->chat);
    tok_free(r->tok);
    config_free(&r->cfg);
    return 0;
}

// Read the job file and the --set overrides into r->cfg and validate them.
static void read_job(Run *r, const TrainArgs *a) {
    Error err = {0};
    config_defaults(&r->cfg);
    if (!config_load(&r->cfg, a->job, &err)) die_error(&err);
    for (size_t i = 0; i < arrlenu(a->sets); i++)
        if (!config_set(&r->cfg, a->sets[i], &err)) die_error(&err);
    if (!config_validate(&r->cfg, &err))  // the values may come from --set, not the file
        die(EXIT_BAD_INPUT, "%s%s: %s", a->job, arrlenu(a->sets) ? " with its --set overrides" : "", err.msg);
}

// Running totals of the loop, for logging and the final line.
typedef struct {
    double t_start, log_loss, eval_start, last_eval;
    long log_count, first_step;
    size_t tokens_seen;
} TrainLog;

// One metrics.jsonl line and one terminal line for the step just done (eval_loss NaN when
// there was no evaluation); resets the running loss. A failed metrics write stops the run.
static void log_step(Run *r, TrainLog *log, const StepResult *s, double eval_loss, bool tty) {
    const TrainConfig *c = &r->cfg;
    const Trainer *t = &r->trainer;
    const double elapsed = time_now() - log->t_start, tps = (double)log->tokens_seen / elapsed;
    const double epoch_f = (double)t->epoch + (double)t->cursor / (double)t->plan.n_rows;
    const double mean = log->log_loss / (double)log->log_count, dt = s->t_gradients + s->t_update;
    fprintf(r->metrics, "{\"step\": %ld, \"epoch\": %.4f, \"loss\": %.6f, \"lr\": %.6g, "
                        "\"grad_norm\": %.6f, \"tokens_per_s\": %.1f, \"step_time_s\": %.4f",
            t->step, epoch_f, mean, s->lr, s->grad_norm, tps, dt);
    if (r->dist.size > 1) fprintf(r->metrics, ", \"ranks\": %d, \"allreduce_s\": %.5f", r->dist.size, s->comm_time);
    if (!isnan(eval_loss)) fprintf(r->metrics, ", \"eval_loss\": %.6f", eval_loss);
    fprintf(r->metrics, "}\n");
    if (fflush(r->metrics) != 0 || ferror(r->metrics))  // disk full: stop rather than lose history
        die(EXIT_RUNTIME, "%s/metrics.jsonl: write failed at step %ld: %s", c->output_dir, t->step, strerror(errno));
    char eta[32];
    fmt_duration(elapsed / (double)(t->step - log->first_step) * (double)(t->opt.total_steps - t->step), eta, sizeof eta);
    if (tty)
        printf("\rstep %ld/%ld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s%s   ", t->step, t->opt.total_steps, mean,
               s->lr, tps, eta, isnan(eval_loss) ? "" : " | eval ");
    else
        printf("step %ld/%ld loss=%.4f lr=%.3e grad_norm=%.4f tokens/s=%.0f eta=%s\n", t->step, t->opt.total_steps,
               mean, s->lr, s->grad_norm, tps, eta);
    if (!isnan(eval_loss)) printf("%seval_loss=%.4f at step %ld\n", tty ? "\n" : "", eval_loss, t->step);
    fflush(stdout);
    log->log_loss = 0;
    log->log_count = 0;
}

// The message of a step stopped by a non-finite loss, gradient or updated state.
static void report_bad_step(const Run *r, const StepResult *s) {
    if (s->status == STEP_NONFINITE_GRADIENT)
        fprintf(stderr, "qlora: error: step %ld: loss %g, gradient norm %g; first non-finite gradient in "
                        "'%s'. Stopped without saving this step; last good checkpoint: %s (try a lower "
                        "learning_rate or max_grad_norm)\n",
                r->trainer.step + 1, s->loss, s->grad_norm, s->bad[0] ? s->bad : "(the loss itself)", r->last_ckpt);
    else
        fprintf(stderr, "qlora: error: step %ld: the AdamW update made '%s' non-finite (loss %g and gradient "
                        "norm %g were finite). Stopped without saving this step; last good checkpoint: %s "
                        "(lower learning_rate or weight_decay, or raise adam_epsilon)\n",
                r->trainer.step, s->bad, s->loss, s->grad_norm, r->last_ckpt);
}

// The outputs of a finished run (rank 0): weights, memory account, report, the last lines.
static void finish_run(Run *r, const TrainLog *log) {
    Error err = {0};
    const TrainConfig *c = &r->cfg;
    if (!checkpoint_save_weights(c, &r->trainer, c->output_dir, &err)) die_error(&err);
    report_print_memory(c, &r->trainer);
    if (!report_write_html(c, &r->trainer, &err)) die_error(&err);
    const double secs = time_now() - log->t_start;
    char evals[96] = "no validation set";
    if (!isnan(log->last_eval))
        snprintf(evals, sizeof evals, "final eval_loss %.4f (was %.4f)", log->last_eval, log->eval_start);
    printf("done: %ld steps in %.1f s (%.0f tokens/s), %s, peak RSS %.1f MiB\n", r->trainer.step - log->first_step,
           secs, secs > 0 ? (double)log->tokens_seen / secs : 0.0, evals, (double)peak_rss_bytes() / (1 << 20));
    printf("wrote %s/%s, %s/metrics.jsonl and %s/report.html\n", c->output_dir,
           r->full ? "model.safetensors (+ config, tokenizer)" : "adapter_model.safetensors + adapter_config.json",
           c->output_dir, c->output_dir);
}

// Release everything r holds (and leave MPI).
static void run_free(Run *r) {
    if (r->metrics) fclose(r->metrics);
    trainer_free(&r->trainer);
    if (!r->full) lora_free(&r->lora);
    model_free(&r->model);
    data_free(&r->train);
    data_free(&r->val);
    chat_setup_free(&r->chat);
    tok_free(r->tok);
    config_free(&r->cfg);
    free(r->last_ckpt);
    dist_finalize();
}

// After step: evaluate, log and checkpoint as the job says. Returns true when a stop
// signal has arrived (on any rank); the checkpoint is then saved already.
static bool after_step(Run *r, TrainLog *log, const StepResult *s, bool tty) {
    const TrainConfig *c = &r->cfg;
    const long step = r->trainer.step, total = r->trainer.opt.total_steps;
    log->tokens_seen += s->tokens;
    log->log_loss += s->loss;
    log->log_count++;
    const bool do_eval = (c->eval_steps > 0 && step % c->eval_steps == 0) || step == total;
    const double eval_loss = do_eval ? trainer_eval_loss(&r->trainer, &r->val) : NAN;
    if (do_eval && !isnan(eval_loss)) log->last_eval = eval_loss;
    if ((step % c->logging_steps == 0 || step == total || do_eval) && r->metrics) log_step(r, log, s, eval_loss, tty);
    const bool stop = r->dist.size > 1 ? dist_any(g_stop_signal != 0) : g_stop_signal != 0;
    if (((c->save_steps > 0 && step % c->save_steps == 0) || step == total || stop) && r->dist.rank == 0) {
        Error err = {0};
        if (!checkpoint_save(c, &r->trainer, &r->last_ckpt, &err)) die_error(&err);
    }
    return stop;
}

// The training loop: steps until total_steps, a stop signal or a non-finite state.
// Returns the exit status (0, EXIT_RUNTIME, or 128 + signal).
static int train_loop(Run *r, TrainLog *log, const TrainArgs *a) {
    const bool tty = isatty(STDOUT_FILENO);
    int exit_status = 0;
    while (r->trainer.step < r->trainer.opt.total_steps) {
        StepResult s;
        if (train_step(&r->trainer, &s) != STEP_OK) {
            report_bad_step(r, &s);
            exit_status = EXIT_RUNTIME;
            break;
        }
        if (after_step(r, log, &s, tty)) {
            printf("%sinterrupted by signal %d after step %ld; checkpoint saved. Resume with:\n", tty ? "\n" : "",
                   (int)g_stop_signal, r->trainer.step);
            print_resume_hint(a, r->last_ckpt);
            exit_status = 128 + (g_stop_signal ? (int)g_stop_signal : SIGTERM);
            break;
        }
    }
    if (tty) printf("\n");
    return exit_status;
}

// The command's arguments (defaults, then argv); exits with the parser's status on --help
// or a usage error, and after printing the key list for --list-keys.
static void parse_args(int argc, char **argv, TrainArgs *a) {
    *a = (TrainArgs){0};
    const int rc = cli_parse(&TRAIN, a, argc, argv);
    if (rc != CLI_RUN) exit(rc);
    if (a->list_keys) {
        config_print_keys(stdout);
        exit(0);
    }
    if (!a->job) cli_usage_error("train", "expected a job file (JOB.yaml)");
}

int cmd_train(int argc, char **argv) {
    TrainArgs args;
    parse_args(argc, argv, &args);
    Run r;
    memset(&r, 0, sizeof r);
    Error err = {0};
    dist_init(&r.dist, &argc, &argv);
    if (!dist_check_launcher(&err)) die_error(&err);
    if (r.dist.rank != 0 && !freopen("/dev/null", "w", stdout)) die(EXIT_RUNTIME, "cannot silence rank %d", r.dist.rank);
    read_job(&r, &args);
    if (args.check) {
        config_write_yaml(&r.cfg, stdout);
        config_free(&r.cfg);
        arrfree(args.sets);
        return 0;
    }
    if (args.preview) {
        const int rc = preview(&r, args.preview);
        arrfree(args.sets);
        dist_finalize();
        return rc;
    }
    double t_setup = time_now();
    signal(SIGINT, on_signal);  // already during set-up: a stop then comes after the first step
    signal(SIGTERM, on_signal);
    setup(&r);
    print_summary(&r);
    if (r.dist.size > 1)
        printf("data parallel: %d ranks, each with %ld threads; a step takes %ld micro-batches (accumulation x ranks)\n",
               r.dist.size, r.cfg.threads ? r.cfg.threads : (long)omp_get_max_threads(),
               r.cfg.gradient_accumulation_steps * r.dist.size);
    TrainLog log = {0};
    log.eval_start = trainer_eval_loss(&r.trainer, &r.val);
    if (!isnan(log.eval_start)) {
        printf("eval_loss before training: %.4f (step %ld)\n", log.eval_start, r.trainer.step);
        if (r.trainer.step == 0 && r.metrics) fprintf(r.metrics, "{\"step\": 0, \"eval_loss\": %.6f}\n", log.eval_start);
    }
    printf("setup %.1f s; training\n", time_now() - t_setup);
    log.t_start = time_now();
    log.last_eval = log.eval_start;
    log.first_step = r.trainer.step;
    const int exit_status = train_loop(&r, &log, &args);
    if (exit_status == 0 && r.dist.rank == 0) finish_run(&r, &log);
    run_free(&r);
    arrfree(args.sets);
    return exit_status;
}
