// train.c: see train.h.
#include "train.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "data.h"
#include "dist.h"
#include "ds.h"
#include "bgemm.h"
#include "gemm.h"
#include "json.h"
#include "memory.h"
#include "model.h"
#include "optim.h"
#include "safetensors.h"
#include "svg.h"
#include "tokenizer.h"

static volatile sig_atomic_t g_stop_signal = 0;  // set by SIGINT/SIGTERM; checked per step

static void on_signal(int sig) { g_stop_signal = sig; }

// Everything one run holds. Trainable state is either the LoRA set (qlora, lora) or the
// model's own fp32 parameters (full); `params`/`grads`/`m`/`v` list them uniformly as
// tensors so clipping, AdamW, checkpoints and NaN checks are one loop.
typedef struct {
    TrainConfig cfg;
    bool full;
    Model model;
    LoraSet lora;
    Tokenizer *tok;
    Dataset train, val;
    Acts *acts;
    // trainable tensors
    size_t n_tensors;
    char (*names)[160];
    float **p, **g, **m, **v;
    size_t *n;
    bool *decay;
    size_t n_trainable;
    // schedule and position
    long total_steps, warmup, step;  // step = optimizer steps done
    size_t epoch, cursor;            // position of the next micro-batch
    size_t *order;
    int *tokens, *targets;
    FILE *metrics;  // rank 0 only
    char last_ckpt[4096];  // newest checkpoint this run saved or resumed from ("none")
    Dist dist;      // this process's rank among size data-parallel ranks (1 without MPI)
} Run;

// ---- trainable tensors -------------------------------------------------------------------------

static void add_tensor(Run *r, const char *name, float *p, float *g, size_t n, bool decay) {
    size_t i = r->n_tensors++;
    r->names = xrealloc(r->names, r->n_tensors * sizeof *r->names);
    r->p = xrealloc(r->p, r->n_tensors * sizeof(float *));
    r->g = xrealloc(r->g, r->n_tensors * sizeof(float *));
    r->m = xrealloc(r->m, r->n_tensors * sizeof(float *));
    r->v = xrealloc(r->v, r->n_tensors * sizeof(float *));
    r->n = xrealloc(r->n, r->n_tensors * sizeof(size_t));
    r->decay = xrealloc(r->decay, r->n_tensors * sizeof(bool));
    snprintf(r->names[i], sizeof r->names[i], "%s", name);
    r->p[i] = p;
    r->g[i] = g;
    r->n[i] = n;
    r->decay[i] = decay;
    r->m[i] = xcalloc(n ? n : 1, sizeof(float));
    r->v[i] = xcalloc(n ? n : 1, sizeof(float));
    r->n_trainable += n;
}

static void list_trainable(Run *r) {
    if (r->full) {
        ModelParam *params = NULL;
        model_params(&r->model, &params);
        for (size_t i = 0; i < arrlenu(params); i++) {
            float *g = xmalloc_aligned(params[i].n * sizeof(float));
            add_tensor(r, params[i].name, params[i].p, g, params[i].n, params[i].decay);
        }
        arrfree(params);
        return;
    }
    lora_alloc_grads(&r->lora);
    for (int i = 0; i < r->lora.n_layer * LORA_N_TARGETS; i++) {
        LoraLinear *l = &r->lora.lin[i];
        if (!l->A) continue;
        char name[160];
        const size_t R = (size_t)r->lora.r;
        snprintf(name, sizeof name, "base_model.model.transformer.h.%d.%s.lora_A.weight",
                 i / LORA_N_TARGETS, lora_target_path((LoraTarget)(i % LORA_N_TARGETS)));
        add_tensor(r, name, l->A, l->dA, R * l->in, true);
        snprintf(name, sizeof name, "base_model.model.transformer.h.%d.%s.lora_B.weight",
                 i / LORA_N_TARGETS, lora_target_path((LoraTarget)(i % LORA_N_TARGETS)));
        add_tensor(r, name, l->B, l->dB, R * l->out, true);
    }
}

static void zero_grads(Run *r) {
    for (size_t i = 0; i < r->n_tensors; i++) memset(r->g[i], 0, r->n[i] * sizeof(float));
}

// ---- checkpoints -----------------------------------------------------------------------------

static bool mkdir_p(const char *path, Error *err) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return error_runtime(err, "%s: cannot create folder: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return error_runtime(err, "%s: cannot create folder: %s", tmp, strerror(errno));
    return true;
}

static bool remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) return unlink(path) == 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        remove_tree(sub);
    }
    closedir(d);
    return rmdir(path) == 0;
}

// The model or adapter (what a user loads) into dir.
static bool save_weights(const Run *r, const char *dir, Error *err) {
    if (r->full) return model_save_hf(&r->model, r->cfg.base_model, dir, NULL, NULL, err);
    return lora_save_peft(&r->lora, dir, err);
}

// What a checkpoint depends on, one string per key: resuming with any of them changed would
// silently continue a different run (another base model, method, quantization, adapter
// shape, seed or dataset). Filled from the job; base_model and dataset are resolved paths,
// the base model also identified by the size of its weights file.
#define N_DEPENDS 6
static const char *const DEPENDS[N_DEPENDS] = {"base_model", "method", "quant", "lora", "seed", "dataset"};
static void job_depends(const TrainConfig *c, char out[N_DEPENDS][4400]) {
    char path[4200], weights[4300];
    struct stat st;
    if (!path_resolve(c->base_model, path, sizeof path)) snprintf(path, sizeof path, "%s", c->base_model);
    snprintf(weights, sizeof weights, "%s/model.safetensors", path);
    snprintf(out[0], 4400, "%s (model.safetensors: %lld bytes)", path, stat(weights, &st) == 0 ? (long long)st.st_size : -1LL);
    snprintf(out[1], 4400, "%s", c->method);
    if (strcmp(c->method, "qlora") == 0)
        snprintf(out[2], 4400, "%s blocksize %ld%s", c->quant, c->quant_blocksize, c->double_quant ? " double_quant" : "");
    else
        snprintf(out[2], 4400, "none");
    snprintf(out[3], 4400, "none");
    if (strcmp(c->method, "full") != 0) {
        int n = snprintf(out[3], 4400, "r %ld alpha %g%s targets", c->lora_r, c->lora_alpha, c->use_rslora ? " rslora" : "");
        for (int i = 0; i < c->n_lora_target_modules && n < 4000; i++)
            n += snprintf(out[3] + n, 4400 - (size_t)n, " %s", c->lora_target_modules[i]);
        if (c->lora_target_linear) snprintf(out[3] + n, 4400 - (size_t)n, " all-linear");
    }
    snprintf(out[4], 4400, "%ld", c->seed);
    if (!path_resolve(c->dataset, out[5], 4400)) snprintf(out[5], 4400, "%s", c->dataset);
}

// job_depends as a compact JSON object (malloc'ed) for trainer_state.json.
static char *job_depends_json(const TrainConfig *c) {
    char(*dep)[4400] = xmalloc(N_DEPENDS * sizeof *dep);
    job_depends(c, dep);
    cJSON *js = cJSON_CreateObject();
    for (int i = 0; i < N_DEPENDS; i++) cJSON_AddStringToObject(js, DEPENDS[i], dep[i]);
    char *text = cJSON_PrintUnformatted(js);
    cJSON_Delete(js);
    free(dep);
    return text;
}

static bool save_checkpoint(Run *r, Error *err) {
    char final[4096], tmp[4200], path[4400];
    snprintf(final, sizeof final, "%s/checkpoint-%ld", r->cfg.output_dir, r->step);
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", final, (long)getpid());
    remove_tree(tmp);
    if (!mkdir_p(tmp, err) || !save_weights(r, tmp, err)) return false;
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    for (size_t i = 0; i < r->n_tensors; i++) {
        char name[200];
        uint64_t n = r->n[i];
        snprintf(name, sizeof name, "exp_avg.%s", r->names[i]);
        st_writer_add(&w, name, ST_F32, 1, &n, r->m[i]);
        snprintf(name, sizeof name, "exp_avg_sq.%s", r->names[i]);
        st_writer_add(&w, name, ST_F32, 1, &n, r->v[i]);
    }
    snprintf(path, sizeof path, "%s/optimizer.safetensors", tmp);
    bool ok = st_writer_write(&w, path, err);
    st_writer_free(&w);
    if (!ok) return false;
    char *depends = job_depends_json(&r->cfg);
    char state[32768];
    snprintf(state, sizeof state,
             "{\n  \"global_step\": %ld,\n  \"max_steps\": %ld,\n  \"warmup_steps\": %ld,\n"
             "  \"epoch\": %zu,\n  \"cursor\": %zu,\n  \"n_train_examples\": %zu,\n"
             "  \"seed\": %ld,\n  \"method\": \"%s\",\n  \"depends_on\": %s\n}\n",
             r->step, r->total_steps, r->warmup, r->epoch, r->cursor, arrlenu(r->train.ex),
             r->cfg.seed, r->cfg.method, depends);
    free(depends);
    snprintf(path, sizeof path, "%s/trainer_state.json", tmp);
    if (!write_file_atomic(path, state, strlen(state), err)) return false;
    snprintf(path, sizeof path, "%s/job.yaml", tmp);
    FILE *fp = fopen(path, "w");
    if (!fp) return error_runtime(err, "%s: cannot create: %s", path, strerror(errno));
    config_write_yaml(&r->cfg, fp);
    if ((fflush(fp) != 0 || ferror(fp)) | (fclose(fp) != 0))  // disk full: the checkpoint is not complete
        return error_runtime(err, "%s: write failed: %s", path, strerror(errno));
    // the new checkpoint appears whole or not at all: rename the finished folder. An older
    // checkpoint-N is moved aside and deleted only once the new one is in place; a kill
    // between the two renames leaves a complete .old-PID that the next start renames back.
    char old[4300] = "";
    if (access(final, F_OK) == 0) {
        snprintf(old, sizeof old, "%s.old-%ld", final, (long)getpid());
        if (rename(final, old) != 0)
            return error_runtime(err, "%s: cannot replace: %s", final, strerror(errno));
        test_delay("replace");
    }
    if (rename(tmp, final) != 0)
        return error_runtime(err, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
    if (old[0]) remove_tree(old);
    snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", final);
    return true;
}

// Newest complete checkpoint-N in dir, or false: N all digits (within long), a folder holding
// a trainer_state.json; out gets the folder's own name, so checkpoint-0006 is found as such,
// and a stray file or empty folder with a larger number does not hide the real one.
static bool latest_checkpoint(const char *dir, char *out, size_t cap) {
    DIR *d = opendir(dir);
    if (!d) return false;
    long best = -1;
    char best_name[256] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *num = e->d_name + 11;
        if (strncmp(e->d_name, "checkpoint-", 11) != 0 || !*num || num[strspn(num, "0123456789")]) continue;
        errno = 0;
        long n = strtol(num, NULL, 10);
        char state[4400];
        struct stat st;
        snprintf(state, sizeof state, "%s/%s/trainer_state.json", dir, e->d_name);
        if (errno == ERANGE || n <= best || stat(state, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        best = n;
        snprintf(best_name, sizeof best_name, "%s", e->d_name);
    }
    closedir(d);
    if (best < 0) return false;
    snprintf(out, cap, "%s/%s", dir, best_name);
    return true;
}

// Before anything loads from checkpoint ckpt: it was made with this job's method (a LoRA
// checkpoint holds no model, a full one no adapter, so a mismatch would fail obscurely) and
// everything else it depends on (job_depends) is unchanged; the first difference is named.
// Keys a checkpoint does not record (older versions) are not compared.
static bool check_resume_job(const char *ckpt, const TrainConfig *c, Error *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/trainer_state.json", ckpt);
    cJSON *js = json_parse_file(path, err);
    if (!js) return false;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(js, "method");
    const cJSON *dep = cJSON_GetObjectItemCaseSensitive(js, "depends_on");
    bool ok = !cJSON_IsString(m) || strcmp(m->valuestring, c->method) == 0 ||
              error_set(err, "%s: the checkpoint was made with method %s, this job has method %s (resume with "
                             "the method it was made with)", path, m->valuestring, c->method);
    char(*now)[4400] = xmalloc(N_DEPENDS * sizeof *now);
    job_depends(c, now);
    for (int i = 0; ok && i < N_DEPENDS; i++) {
        const cJSON *was = cJSON_GetObjectItemCaseSensitive(dep, DEPENDS[i]);
        if (cJSON_IsString(was) && strcmp(was->valuestring, now[i]) != 0)
            ok = error_set(err, "%s: %s: the checkpoint was made with '%s', this job has '%s' (resume with the "
                                "same settings, or use a new output_dir)", path, DEPENDS[i], was->valuestring, now[i]);
    }
    free(now);
    cJSON_Delete(js);
    return ok;
}

static bool load_state(Run *r, const char *ckpt, Error *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/trainer_state.json", ckpt);
    cJSON *js = json_parse_file(path, err);
    if (!js) return false;
    uint64_t step = 0, epoch = 0, cursor = 0, n_train = 0;
    bool ok = json_as_u64(cJSON_GetObjectItem(js, "global_step"), &step) &&
              json_as_u64(cJSON_GetObjectItem(js, "epoch"), &epoch) &&
              json_as_u64(cJSON_GetObjectItem(js, "cursor"), &cursor) &&
              json_as_u64(cJSON_GetObjectItem(js, "n_train_examples"), &n_train);
    cJSON_Delete(js);
    if (!ok) return error_set(err, "%s: expected global_step, epoch, cursor and n_train_examples", path);
    if (n_train != arrlenu(r->train.ex) || cursor >= n_train)
        return error_set(err, "%s: the checkpoint was made with %llu training examples, this job has %zu "
                              "(same dataset, val_set_size and sequence_len are needed to resume)",
                         path, (unsigned long long)n_train, arrlenu(r->train.ex));
    r->step = (long)step;
    r->epoch = (size_t)epoch;
    r->cursor = (size_t)cursor;
    SafeTensors st;
    snprintf(path, sizeof path, "%s/optimizer.safetensors", ckpt);
    if (!st_open(&st, path, err)) return false;
    for (size_t i = 0; ok && i < r->n_tensors; i++) {
        for (int k = 0; ok && k < 2; k++) {
            char name[200];
            snprintf(name, sizeof name, "%s.%s", k ? "exp_avg_sq" : "exp_avg", r->names[i]);
            const StTensor *t = st_find(&st, name);
            if (!t || t->dtype != ST_F32 || t->n_elements != r->n[i])
                ok = error_set(err, "%s: missing or mis-sized '%s' (expected F32 [%zu])", path, name, r->n[i]);
            else
                ok = st_read_f32(&st, t, k ? r->v[i] : r->m[i], err);
        }
    }
    st_close(&st);
    return ok;
}

// ---- evaluation and logging --------------------------------------------------------------------

static double evaluate(Run *r) {
    const size_t n = arrlenu(r->val.ex), B = (size_t)r->cfg.micro_batch_size;
    if (n == 0) return NAN;
    size_t *order = xmalloc(n * sizeof(size_t));
    data_epoch_order(n, false, 0, 0, order);
    double total = 0;
    size_t count = 0;
    for (size_t i = 0; i < n; i += B) {
        size_t b = n - i < B ? n - i : B, pred = 0;
        size_t T = data_batch(&r->val, order, i, b, r->tokens, r->targets, &pred);
        total += model_forward(&r->model, r->full ? NULL : &r->lora, r->acts, r->tokens,
                               r->targets, b, T, &count, NULL);
    }
    free(order);
    return count ? total / (double)count : NAN;
}

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
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    char *old = NULL;
    size_t len = 0;
    Error ignore = {0};
    if (keep_step > 0 && !file_read_all(path, &old, &len, &ignore)) old = NULL;
    AtomicFile af;
    if (!atomic_open(&af, path, err)) {
        free(old);
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
    if (!ok) {
        atomic_abort(&af);
        return NULL;
    }
    if (!atomic_commit(&af, err)) return NULL;
    FILE *fp = fopen(path, "a");
    if (!fp) error_runtime(err, "%s: cannot open for appending: %s", path, strerror(errno));
    return fp;
}

// ---- the job ---------------------------------------------------------------------------------

static const char *TRAIN_HELP =
    "usage: qlora train JOB.yaml [--set key=value ...] [--check]\n"
    "       qlora train --list-keys\n\n"
    "Fine-tunes a GPT-2 model as the job file says: method qlora (LoRA on a 4-bit NF4 base,\n"
    "the default), lora (fp32 base) or full. Writes output_dir/adapter_model.safetensors +\n"
    "adapter_config.json (PEFT format; full: a model folder), checkpoint-N/ folders and\n"
    "metrics.jsonl. SIGINT/SIGTERM finish the step, save a checkpoint and exit 130/143.\n"
    "--list-keys prints every job key with its default and range; --check reads and\n"
    "validates the job, prints every key's value, and stops.\n";

static void die_run(Error *err) { die_error(err); }

// Clean up after a killed run: checkpoint-N.tmp-* folders (possibly half-written) are
// removed; a checkpoint-N.old-* folder (complete: it was checkpoint-N until a replacement
// began) becomes checkpoint-N again if that is missing, and is removed otherwise.
static void remove_stale_checkpoints(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "checkpoint-", 11) != 0) continue;
        const char *tmp = strstr(e->d_name, ".tmp-"), *old = strstr(e->d_name, ".old-");
        if (!tmp && !old) continue;
        char path[4400], final[4400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        snprintf(final, sizeof final, "%s/%.*s", dir, (int)(old ? old - e->d_name : 0), e->d_name);
        if (old && access(final, F_OK) != 0 && rename(path, final) == 0)
            printf("recovered %s (a run was killed while replacing it)\n", final);
        else
            remove_tree(path);
    }
    closedir(d);
}

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
    if (strcmp(c->method, "qlora") == 0 && !quant_parse(c->quant, &q.type)) q.type = QUANT_NF4;
    return q;
}

// Refuse a job whose predicted memory exceeds what the machine has free, before loading
// anything (the kernel would otherwise kill it part-way).
static void check_memory(const TrainConfig *c, const GPT2Config *mc) {
    const ModelShape s = shape_from_config(mc);
    const QuantConfig q = job_quant(c);
    MemJob j = {.B = (size_t)c->micro_batch_size, .T = (size_t)c->sequence_len, .lora_r = (int)c->lora_r,
                .gradient_checkpointing = c->gradient_checkpointing, .quant_blocksize = (size_t)c->quant_blocksize};
    for (int i = 0; i < c->n_lora_target_modules; i++) lora_parse_target(c->lora_target_modules[i], j.targets, &(Error){0});
    if (c->lora_target_linear) lora_parse_target("all-linear", j.targets, &(Error){0});
    MemRow rows[MEM_N_METHODS];
    memory_predict(&s, &j, rows);
    const MemRow *p = &rows[memory_method(strcmp(c->method, "full") == 0, q.type, q.double_quant)];
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

static void setup(Run *r, Error *err) {
    TrainConfig *c = &r->cfg;
    r->full = strcmp(c->method, "full") == 0;
    if (c->threads) threads_set((int)c->threads);
    if (!check_output_dir(c, err)) die_run(err);
    if (!mkdir_p(c->output_dir, err)) die_run(err);
    if (r->dist.rank == 0 && !dir_lock(c->output_dir, err)) die_run(err);
    if (r->dist.rank == 0) remove_stale_checkpoints(c->output_dir);
    GPT2Config mc;
    if (!model_read_config(&mc, c->base_model, err) || !model_check_sizes(c->base_model, &mc, err)) die_run(err);
    if (c->sequence_len == 0) c->sequence_len = mc.n_positions < 512 ? mc.n_positions : 512;  // printed in the summary
    if (c->sequence_len > mc.n_positions)  // a model limit, before any memory prediction uses it
        die(EXIT_BAD_INPUT, "sequence_len %ld exceeds the model's n_positions %d", c->sequence_len, mc.n_positions);
    check_memory(c, &mc);
    char vocab[4096], merges[4096];
    snprintf(vocab, sizeof vocab, "%s/vocab.json", c->base_model);
    snprintf(merges, sizeof merges, "%s/merges.txt", c->base_model);
    if (!tok_load(&r->tok, vocab, merges, err)) die_run(err);
    DataOptions dopt = {c->dataset_format, (size_t)c->sequence_len, c->train_on_inputs, mc.vocab_size};
    if (!data_load(&r->train, c->dataset, r->tok, &dopt, err)) die_run(err);
    if (c->val_dataset[0]) {
        if (!data_load(&r->val, c->val_dataset, r->tok, &dopt, err)) die_run(err);
    } else if (!data_split(&r->train, &r->val, c->val_set_size, (uint64_t)c->seed, err)) {
        die_run(err);
    }
    // the resumed full model continues from its checkpoint's weights
    char resume[4096] = "";
    if (c->resume_from_checkpoint[0]) {
        if (strcmp(c->resume_from_checkpoint, "latest") == 0) {
            if (!latest_checkpoint(c->output_dir, resume, sizeof resume))
                die(EXIT_BAD_INPUT, "resume_from_checkpoint: latest: no checkpoint-N folder in %s", c->output_dir);
        } else {
            snprintf(resume, sizeof resume, "%s", c->resume_from_checkpoint);
        }
    }
    if (resume[0] && !check_resume_job(resume, c, err)) die_run(err);
    const QuantConfig q = job_quant(c);
    const char *model_dir = r->full && resume[0] ? resume : c->base_model;
    if (!model_load(&r->model, model_dir, &q, err)) die_run(err);
    if (r->full && !r->model.cfg.tied)
        die(EXIT_BAD_INPUT, "%s: method full needs tied embeddings (tie_word_embeddings)", c->base_model);
    bool bf16 = false;  // method full has no frozen weights: bf16 auto means fp32 there
    if (!r->full && !bgemm_mode(c->bf16, &bf16, err)) die(EXIT_BAD_INPUT, "%s", err->msg);
    model_set_bf16(&r->model, bf16);
    LoraShapes shapes = model_lora_shapes(&r->model.cfg);
    if (!r->full) {
        const char *adapter = resume[0] ? resume : c->lora_model_dir;
        if (adapter[0]) {
            if (!lora_load_peft(&r->lora, adapter, r->model.cfg.n_layer, &shapes, err)) die_run(err);
            r->lora.dropout = (float)c->lora_dropout;  // the job's dropout applies in training
        } else {
            bool targets[LORA_N_TARGETS] = {0};
            for (int i = 0; i < c->n_lora_target_modules; i++) CHECK(lora_parse_target(c->lora_target_modules[i], targets, err));
            if (c->lora_target_linear) CHECK(lora_parse_target("all-linear", targets, err));
            Rng rng;
            rng_seed(&rng, (uint64_t)c->seed);
            lora_create(&r->lora, r->model.cfg.n_layer, &shapes, (int)c->lora_r, (float)c->lora_alpha,
                        (float)c->lora_dropout, c->use_rslora, targets, &rng);
        }
        snprintf(r->lora.base_model, sizeof r->lora.base_model, "%.511s", c->base_model);
    }
    list_trainable(r);
    const size_t n_train = arrlenu(r->train.ex), B = (size_t)c->micro_batch_size;
    const size_t per_step = B * (size_t)c->gradient_accumulation_steps;
    const long steps_per_epoch = (long)((n_train + per_step - 1) / per_step);
    r->total_steps = c->max_steps > 0 ? c->max_steps : steps_per_epoch * c->num_epochs;
    r->warmup = c->warmup_steps > 0 ? c->warmup_steps : (long)ceil(c->warmup_ratio * (double)r->total_steps);
    r->order = xmalloc(n_train * sizeof(size_t));
    if (resume[0] && !load_state(r, resume, err)) die_run(err);
    data_epoch_order(n_train, c->shuffle, (uint64_t)c->seed, r->epoch, r->order);
    ActsMode mode = c->gradient_checkpointing ? ACTS_CHECKPOINT : ACTS_TRAIN;
    r->acts = acts_create(&r->model, r->full ? NULL : &r->lora, B, (size_t)c->sequence_len, mode);
    r->tokens = xmalloc(B * (size_t)c->sequence_len * sizeof(int));
    r->targets = xmalloc(B * (size_t)c->sequence_len * sizeof(int));
    if (r->dist.rank == 0) {
        r->metrics = open_metrics(c->output_dir, r->step, err);
        if (!r->metrics) die_run(err);
    }
    test_delay("setup");
    snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", resume[0] ? resume : "none");
    if (resume[0]) printf("resuming from %s at step %ld (epoch %zu)\n", resume, r->step, r->epoch);
}

// After an update: the first trainable tensor whose weights or AdamW moments hold a NaN or
// Inf, its name (moments prefixed exp_avg. / exp_avg_sq.) written into out; false if none.
// Checked every step so that no checkpoint or adapter is ever written from such a state.
static bool first_bad_state(const Run *r, char *out, size_t cap) {
    for (size_t i = 0; i < r->n_tensors; i++) {
        const char *kind = quant_find_nonfinite(r->p[i], r->n[i]) < r->n[i]   ? ""
                           : quant_find_nonfinite(r->m[i], r->n[i]) < r->n[i] ? "exp_avg."
                           : quant_find_nonfinite(r->v[i], r->n[i]) < r->n[i] ? "exp_avg_sq."
                                                                              : NULL;
        if (kind) return snprintf(out, cap, "%s%s", kind, r->names[i]), true;
    }
    return false;
}

// First trainable tensor holding a NaN/Inf gradient, or NULL.
static const char *first_bad_tensor(const Run *r) {
    for (size_t i = 0; i < r->n_tensors; i++)
        if (quant_find_nonfinite(r->g[i], r->n[i]) < r->n[i]) return r->names[i];
    return NULL;
}

typedef struct {
    const char *method;
    double measured[6], predicted[6];
} MemAccount;
static const char *const MEM_CAT[6] = {"frozen weights", "quant constants", "trainable", "gradients",
                                       "optimizer", "activations"};

// The trainer's own allocations by category next to `qlora memory`'s prediction for the
// same job (tests hold them within 5% of each other).
static MemAccount memory_account(const Run *r) {
    const TrainConfig *c = &r->cfg;
    const GPT2Config *mc = &r->model.cfg;
    const ModelShape s = shape_from_config(mc);
    MemJob j = {.B = (size_t)c->micro_batch_size, .T = (size_t)c->sequence_len, .lora_r = r->full ? 0 : r->lora.r,
                .gradient_checkpointing = c->gradient_checkpointing, .quant_blocksize = r->model.quant.blocksize};
    if (!r->full) memcpy(j.targets, r->lora.targets, sizeof j.targets);
    MemRow rows[MEM_N_METHODS];
    memory_predict(&s, &j, rows);
    const MemRow *p = &rows[memory_method(r->full, r->model.quant.type, r->model.quant.double_quant)];
    ModelBytes mb = model_bytes(&r->model);
    const double frozen = (double)(mb.linear_weights + mb.embeddings + mb.norms_and_biases);
    MemAccount a = {p->name,
                    {r->full ? 0 : frozen, (double)mb.quant_constants,
                     r->full ? frozen : 4.0 * (double)r->n_trainable, 4.0 * (double)r->n_trainable,
                     8.0 * (double)r->n_trainable, (double)acts_bytes(r->acts)},
                    {p->weights, p->quant_constants, p->trainable, p->gradients, p->optimizer, p->activations}};
    return a;
}

static void print_memory_account(const Run *r) {
    MemAccount a = memory_account(r);
    double tm = 0, tp = 0;
    printf("memory account (%s): %-16s %12s %12s\n", a.method, "category", "allocated", "predicted");
    for (int k = 0; k < 6; k++) {
        printf("memory account (%s): %-16s %12.0f %12.0f\n", a.method, MEM_CAT[k], a.measured[k], a.predicted[k]);
        tm += a.measured[k];
        tp += a.predicted[k];
    }
    printf("memory account (%s): %-16s %12.0f %12.0f  (%+.2f%%); peak RSS %.1f MiB\n", a.method, "total", tm, tp,
           100.0 * (tm - tp) / tp, (double)peak_rss_bytes() / (1 << 20));
}

// ---- the HTML report ---------------------------------------------------------------------------

// A line chart of (x, y) series as inline SVG text appended to *page.
static void report_chart(char **page, const char *title, const char *ylabel, double *const *xs,
                         double *const *ys, const size_t *ns, const char *const *names, size_t n_series) {
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (size_t k = 0; k < n_series; k++)
        for (size_t i = 0; i < ns[k]; i++) {
            xmin = fmin(xmin, xs[k][i]);
            xmax = fmax(xmax, xs[k][i]);
            ymin = fmin(ymin, ys[k][i]);
            ymax = fmax(ymax, ys[k][i]);
        }
    if (!isfinite(xmin)) return;
    if (xmax <= xmin) xmax = xmin + 1;
    if (ymax <= ymin) ymax = ymin + 1;
    const double pad = (ymax - ymin) * 0.05;
    Svg s;
    svg_begin(&s, 720, 320, title);
    svg_axes(&s, xmin, xmax, ymin - pad, ymax + pad, false, "step", ylabel);
    const char *colors[4] = {SVG_PALETTE[0], SVG_PALETTE[1], SVG_PALETTE[2], SVG_PALETTE[3]};
    for (size_t k = 0; k < n_series; k++) {
        svg_polyline(&s, xs[k], ys[k], ns[k], colors[k], 2);
        if (ns[k] < 30) svg_points(&s, xs[k], ys[k], ns[k], colors[k], 3);
    }
    if (n_series > 1) svg_legend(&s, names, colors, n_series);
    char *text = svg_finish(&s);
    const char *body = strstr(text, "<svg");  // drop the XML declaration inside HTML
    sb_appendf(page, "<figure>%s</figure>\n", body ? body : text);
    free(text);
}

static void html_escape(char **page, const char *t) {
    for (; *t; t++) {
        if (*t == '<') sb_appendf(page, "&lt;");
        else if (*t == '>') sb_appendf(page, "&gt;");
        else if (*t == '&') sb_appendf(page, "&amp;");
        else arrput(*page, *t);
    }
}

// output_dir/report.html: loss and eval-loss curves, learning rate, speed, the memory
// account and the job's settings, from metrics.jsonl (so a resumed run shows its history).
static bool write_report(const Run *r, Error *err) {
    const TrainConfig *c = &r->cfg;
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", c->output_dir);
    char *text;
    size_t len;
    if (!file_read_all(path, &text, &len, err)) return false;
    double *st = NULL, *loss = NULL, *lr = NULL, *tps = NULL, *est = NULL, *ev = NULL;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *js = cJSON_Parse(line);
        const cJSON *step = js ? cJSON_GetObjectItem(js, "step") : NULL;
        if (step && cJSON_IsNumber(step)) {
            const cJSON *l = cJSON_GetObjectItem(js, "loss"), *e = cJSON_GetObjectItem(js, "eval_loss");
            if (cJSON_IsNumber(l)) {
                arrput(st, step->valuedouble);
                arrput(loss, l->valuedouble);
                arrput(lr, cJSON_GetObjectItem(js, "lr")->valuedouble);
                arrput(tps, cJSON_GetObjectItem(js, "tokens_per_s")->valuedouble);
            }
            if (cJSON_IsNumber(e)) {
                arrput(est, step->valuedouble);
                arrput(ev, e->valuedouble);
            }
        }
        cJSON_Delete(js);
    }
    free(text);
    char *page = NULL;
    sb_appendf(&page, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>qlora training report</title>"
                      "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em}"
                      "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
                      "pre{background:#f6f6f6;padding:1em}</style></head><body>\n<h1>Training report: ");
    html_escape(&page, c->output_dir);
    sb_appendf(&page, "</h1>\n<p>method <b>%s</b>, base model <code>", c->method);
    html_escape(&page, c->base_model);
    sb_appendf(&page, "</code>, dataset <code>");
    html_escape(&page, c->dataset);
    sb_appendf(&page, "</code>; %ld steps; %zu trainable parameters.", r->step, r->n_trainable);
    if (arrlenu(ev) > 0)
        sb_appendf(&page, " eval_loss %.4f at step %.0f, %.4f at step %.0f.", ev[0], est[0], arrlast(ev), arrlast(est));
    if (arrlenu(tps) > 0) sb_appendf(&page, " %.0f tokens/s (last logged).", arrlast(tps));
    sb_appendf(&page, "</p>\n");
    double *xs[2] = {st, est}, *ys[2] = {loss, ev};
    size_t ns[2] = {arrlenu(st), arrlenu(est)};
    const char *names[2] = {"training loss", "eval loss"};
    report_chart(&page, "Loss", "loss (nats per token)", xs, ys, ns, names, arrlenu(est) ? 2 : 1);
    report_chart(&page, "Learning rate", "learning rate", &st, &lr, ns, names, 1);
    report_chart(&page, "Speed", "tokens per second", &st, &tps, ns, names, 1);
    MemAccount a = memory_account(r);
    sb_appendf(&page, "<h2>Memory account (%s)</h2>\n<table><tr><th>category</th><th>allocated (MiB)</th>"
                      "<th>predicted by qlora memory (MiB)</th></tr>\n", a.method);
    double tm = 0, tp = 0;
    for (int k = 0; k < 6; k++) {
        sb_appendf(&page, "<tr><td style=\"text-align:left\">%s</td><td>%.3f</td><td>%.3f</td></tr>\n", MEM_CAT[k],
                   a.measured[k] / 1048576.0, a.predicted[k] / 1048576.0);
        tm += a.measured[k];
        tp += a.predicted[k];
    }
    sb_appendf(&page, "<tr><th style=\"text-align:left\">total</th><th>%.3f</th><th>%.3f</th></tr></table>\n"
                      "<p>peak resident set size of the process: %.1f MiB</p>\n<h2>Job settings</h2>\n<pre>",
               tm / 1048576.0, tp / 1048576.0, (double)peak_rss_bytes() / 1048576.0);
    char *yaml = NULL;
    size_t ylen = 0;
    FILE *mem = open_memstream(&yaml, &ylen);
    if (mem) {
        config_write_yaml(c, mem);
        fclose(mem);
        html_escape(&page, yaml);
        free(yaml);
    }
    sb_appendf(&page, "</pre>\n</body></html>\n");
    snprintf(path, sizeof path, "%s/report.html", c->output_dir);
    bool ok = write_file_atomic(path, page, arrlenu(page), err);
    arrfree(page);
    arrfree(st);
    arrfree(loss);
    arrfree(lr);
    arrfree(tps);
    arrfree(est);
    arrfree(ev);
    return ok;
}

static void print_summary(const Run *r) {
    char b1[32], b2[32], b3[32], b4[32];
    const char *hint = blas_kernel_hint();
    if (hint) printf("%s\n", hint);
    char blas[256];
    printf("matrix products: %s; frozen weights %s\n", blas_describe(blas, sizeof blas),
           r->model.bf16 ? "in bf16 with fp32 sums" : "in fp32");
    if (r->model.bf16) printf("bf16 products: %s\n", bgemm_isa_name(bgemm_isa()));
    else if (strcmp(r->cfg.bf16, "auto") == 0)
        printf("bf16: auto: fp32 here (%s)\n", r->full ? "method full trains every weight"
                                                       : "this CPU has no AVX512-BF16 or AMX-BF16");
    ModelBytes mb = model_bytes(&r->model);
    printf("job: method %s, %zu train / %zu val examples (%zu truncated to %ld tokens), %ld steps "
           "(micro batch %ld x %ld accumulation), lr %g %s, warm-up %ld\n",
           r->cfg.method, arrlenu(r->train.ex), arrlenu(r->val.ex), r->train.n_truncated,
           r->cfg.sequence_len, r->total_steps, r->cfg.micro_batch_size,
           r->cfg.gradient_accumulation_steps, r->cfg.learning_rate, r->cfg.lr_scheduler, r->warmup);
    printf("memory: base linears %s (%s), quant constants %s, embeddings+norms %s, activations %s\n",
           fmt_bytes((double)mb.linear_weights, b1, sizeof b1), quant_name(r->model.quant.type),
           fmt_bytes((double)mb.quant_constants, b2, sizeof b2),
           fmt_bytes((double)(mb.embeddings + mb.norms_and_biases), b3, sizeof b3),
           fmt_bytes((double)acts_bytes(r->acts), b4, sizeof b4));
    printf("trainable: %zu parameters (%s), gradients %s, AdamW state %s\n", r->n_trainable,
           fmt_bytes(4.0 * (double)r->n_trainable, b1, sizeof b1),
           fmt_bytes(4.0 * (double)r->n_trainable, b2, sizeof b2),
           fmt_bytes(8.0 * (double)r->n_trainable, b3, sizeof b3));
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
static void print_resume_hint(int argc, char **argv, const char *job, const char *ckpt) {
    printf("  qlora train ");
    print_quoted(job);
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--set") != 0) continue;
        const char *kv = argv[++i];
        if (strncmp(kv, "resume_from_checkpoint=", 23) == 0) continue;
        printf(" --set ");
        print_quoted(kv);
    }
    char last[4200];
    snprintf(last, sizeof last, "resume_from_checkpoint=%s", ckpt);
    printf(" --set ");
    print_quoted(last);
    printf("\n");
}

// Read the job file and the --set overrides of argv into r->cfg and validate them; *job
// receives the file's path. True when --check asked only for the resolved job.
static bool read_job(Run *r, int argc, char **argv, const char **job) {
    Error err = {0};
    config_defaults(&r->cfg);
    bool check_only = false, any_set = false;
    *job = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--check") == 0) {
            check_only = true;
            continue;
        }
        if (strcmp(argv[i], "--set") == 0) continue;  // applied after the file
        if (i > 1 && strcmp(argv[i - 1], "--set") == 0) continue;
        if (argv[i][0] == '-') cli_usage_error("train", "unknown option '%s'", argv[i]);
        if (*job) cli_usage_error("train", "unexpected argument '%s'", argv[i]);
        *job = argv[i];
    }
    if (!*job) cli_usage_error("train", "expected a job file (JOB.yaml)");
    if (!config_load(&r->cfg, *job, &err)) die_run(&err);
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--set") == 0) {
            const char *kv = cli_value(argc, argv, &i);
            if (!config_set(&r->cfg, kv, &err)) die_run(&err);
            any_set = true;
        }
    if (!config_validate(&r->cfg, &err))  // the values may come from --set, not the file
        die(EXIT_BAD_INPUT, "%s%s: %s", *job, any_set ? " with its --set overrides" : "", err.msg);
    return check_only;
}

// Running totals of the loop, for logging and the final line.
typedef struct {
    double t_start, log_loss, eval_start, last_eval, comm_time;
    long log_count, first_step;
    size_t tokens_seen;
} TrainLog;

// Forward and backward of every micro-batch of the next step (this rank's share), the
// gradients and losses summed over the ranks; advances the data position (and the epoch).
// mb_first/mb_size: scratch of per_step entries. Returns the mean loss over the step's
// predicted tokens; *step_tokens receives the step's tokens (all ranks).
static double step_gradients(Run *r, size_t per_step, size_t *mb_first, size_t *mb_size,
                             size_t *step_tokens, TrainLog *log) {
    const TrainConfig *c = &r->cfg;
    const size_t n_train = arrlenu(r->train.ex), B = (size_t)c->micro_batch_size;
    zero_grads(r);
    // the micro-batches of this step (cut short at the end of an epoch)
    size_t n_mb = 0, total_pred = 0;
    for (size_t k = 0; k < per_step && r->cursor < n_train; k++) {
        size_t b = n_train - r->cursor < B ? n_train - r->cursor : B;
        mb_first[n_mb] = r->cursor;
        mb_size[n_mb++] = b;
        for (size_t j = 0; j < b; j++) total_pred += r->train.ex[r->order[r->cursor + j]].n_predicted;
        r->cursor += b;
    }
    double loss_sum = 0;
    size_t count = 0;
    for (size_t k = (size_t)r->dist.rank; k < n_mb; k += (size_t)r->dist.size) {
        size_t pred = 0;
        size_t T = data_batch(&r->train, r->order, mb_first[k], mb_size[k], r->tokens, r->targets, &pred);
        TrainCtx tc = {.lora_dropout = r->full ? 0.0f : (float)c->lora_dropout,
                       .dropout_seed = (uint64_t)c->seed * 0x9E3779B97F4A7C15ull + (uint64_t)r->step * 1000 + k,
                       .full_grads = r->full ? r->g : NULL};
        loss_sum += model_forward_backward(&r->model, r->full ? NULL : &r->lora, r->acts, r->tokens,
                                           r->targets, mb_size[k], T, 1.0f / (float)total_pred, &tc, &count);
    }
    *step_tokens = 0;
    for (size_t k = 0; k < n_mb; k++)  // tokens of the whole (global) step
        for (size_t j = 0; j < mb_size[k]; j++) *step_tokens += r->train.ex[r->order[mb_first[k] + j]].len;
    if (r->cursor >= n_train) {  // next epoch
        r->epoch++;
        r->cursor = 0;
        data_epoch_order(n_train, c->shuffle, (uint64_t)c->seed, r->epoch, r->order);
    }
    if (r->dist.size > 1) {  // sum gradients and losses over the ranks
        double tc0 = time_now();
        if (r->full)
            for (size_t i = 0; i < r->n_tensors; i++) dist_sum_floats(r->g[i], r->n[i]);
        else
            dist_sum_floats(r->lora.grads, r->lora.n_params);
        loss_sum = dist_sum_double(loss_sum);
        log->comm_time = time_now() - tc0;
    }
    return loss_sum / (double)total_pred;
}

// One metrics.jsonl line and one terminal line for the step just done (eval_loss NaN when
// there was no evaluation); resets the running loss. A failed metrics write stops the run.
static void log_step(Run *r, TrainLog *log, double lr, double grad_norm, double dt, double eval_loss, bool tty) {
    const TrainConfig *c = &r->cfg;
    const double elapsed = time_now() - log->t_start, tps = (double)log->tokens_seen / elapsed;
    const double epoch_f = (double)r->epoch + (double)r->cursor / (double)arrlenu(r->train.ex);
    const double mean = log->log_loss / (double)log->log_count;
    fprintf(r->metrics, "{\"step\": %ld, \"epoch\": %.4f, \"loss\": %.6f, \"lr\": %.6g, "
                        "\"grad_norm\": %.6f, \"tokens_per_s\": %.1f, \"step_time_s\": %.4f",
            r->step, epoch_f, mean, lr, grad_norm, tps, dt);
    if (r->dist.size > 1) fprintf(r->metrics, ", \"ranks\": %d, \"allreduce_s\": %.5f", r->dist.size, log->comm_time);
    if (!isnan(eval_loss)) fprintf(r->metrics, ", \"eval_loss\": %.6f", eval_loss);
    fprintf(r->metrics, "}\n");
    if (fflush(r->metrics) != 0 || ferror(r->metrics)) {  // disk full: stop rather than lose history
        Error err = {0};
        error_runtime(&err, "%s/metrics.jsonl: write failed at step %ld: %s", c->output_dir, r->step,
                      strerror(errno));
        die_run(&err);
    }
    char eta[32];
    fmt_duration(elapsed / (double)(r->step - log->first_step) * (double)(r->total_steps - r->step), eta, sizeof eta);
    if (tty)
        printf("\rstep %ld/%ld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s%s   ", r->step, r->total_steps, mean, lr,
               tps, eta, isnan(eval_loss) ? "" : " | eval ");
    else
        printf("step %ld/%ld loss=%.4f lr=%.3e grad_norm=%.4f tokens/s=%.0f eta=%s\n", r->step, r->total_steps,
               mean, lr, grad_norm, tps, eta);
    if (!isnan(eval_loss)) printf("%seval_loss=%.4f at step %ld\n", tty ? "\n" : "", eval_loss, r->step);
    fflush(stdout);
    log->log_loss = 0;
    log->log_count = 0;
}

// Clip and apply AdamW for the step's gradients; false (message printed, nothing saved)
// when the loss, the gradients or the updated state are not finite.
static bool update_step(Run *r, AdamWConfig *ac, LrSchedule sched, double loss, double *grad_norm, double *lr) {
    const TrainConfig *c = &r->cfg;
    double sq = 0;
    for (size_t i = 0; i < r->n_tensors; i++) sq += grad_sq_sum(r->g[i], r->n[i]);
    *grad_norm = sqrt(sq);
    if (!isfinite(loss) || !isfinite(*grad_norm)) {
        const char *bad = first_bad_tensor(r);
        fprintf(stderr, "qlora: error: step %ld: loss %g, gradient norm %g; first non-finite gradient in "
                        "'%s'. Stopped without saving this step; last good checkpoint: %s (try a lower "
                        "learning_rate or max_grad_norm)\n",
                r->step + 1, loss, *grad_norm, bad ? bad : "(the loss itself)", r->last_ckpt);
        return false;
    }
    const float clip = clip_factor(*grad_norm, (float)c->max_grad_norm);
    for (size_t i = 0; i < r->n_tensors; i++) scale_inplace(r->g[i], r->n[i], clip);
    *lr = c->learning_rate * lr_factor(sched, r->step, r->warmup, r->total_steps);
    ac->lr = (float)*lr;
    r->step++;
    for (size_t i = 0; i < r->n_tensors; i++)
        adamw_step(r->p[i], r->g[i], r->m[i], r->v[i], r->n[i], ac, r->step, r->decay[i]);
    char bad_state[200];
    if (first_bad_state(r, bad_state, sizeof bad_state)) {
        fprintf(stderr, "qlora: error: step %ld: the AdamW update made '%s' non-finite (loss %g and gradient "
                        "norm %g were finite). Stopped without saving this step; last good checkpoint: %s "
                        "(lower learning_rate or weight_decay, or raise adam_epsilon)\n",
                r->step, bad_state, loss, *grad_norm, r->last_ckpt);
        return false;
    }
    return true;
}

// The outputs of a finished run (rank 0): weights, memory account, report, the last lines.
static void finish_run(Run *r, const TrainLog *log) {
    Error err = {0};
    const TrainConfig *c = &r->cfg;
    if (!save_weights(r, c->output_dir, &err)) die_run(&err);
    print_memory_account(r);
    if (!write_report(r, &err)) die_run(&err);
    const double secs = time_now() - log->t_start;
    char evals[96] = "no validation set";
    if (!isnan(log->last_eval))
        snprintf(evals, sizeof evals, "final eval_loss %.4f (was %.4f)", log->last_eval, log->eval_start);
    printf("done: %ld steps in %.1f s (%.0f tokens/s), %s, peak RSS %.1f MiB\n", r->step - log->first_step, secs,
           secs > 0 ? (double)log->tokens_seen / secs : 0.0, evals, (double)peak_rss_bytes() / (1 << 20));
    printf("wrote %s/%s, %s/metrics.jsonl and %s/report.html\n", c->output_dir,
           r->full ? "model.safetensors (+ config, tokenizer)" : "adapter_model.safetensors + adapter_config.json",
           c->output_dir, c->output_dir);
}

// Release everything r holds (and leave MPI).
static void run_free(Run *r) {
    if (r->metrics) fclose(r->metrics);
    for (size_t i = 0; i < r->n_tensors; i++) {
        free(r->m[i]);
        free(r->v[i]);
        if (r->full) free(r->g[i]);
    }
    free(r->names);
    free(r->p);
    free(r->g);
    free(r->m);
    free(r->v);
    free(r->n);
    free(r->decay);
    free(r->order);
    free(r->tokens);
    free(r->targets);
    acts_free(r->acts);
    if (!r->full) lora_free(&r->lora);
    model_free(&r->model);
    data_free(&r->train);
    data_free(&r->val);
    tok_free(r->tok);
    dist_finalize();
}

// The training loop: steps until total_steps, a stop signal or a non-finite state.
// Returns the exit status (0, EXIT_RUNTIME, or 128 + signal).
static int train_loop(Run *r, TrainLog *log, int argc, char **argv, const char *job) {
    const TrainConfig *c = &r->cfg;
    const bool tty = isatty(STDOUT_FILENO);
    AdamWConfig ac = {(float)c->learning_rate, (float)c->adam_beta1, (float)c->adam_beta2,
                      (float)c->adam_epsilon, (float)c->weight_decay};
    LrSchedule sched;
    CHECK(lr_schedule_parse(c->lr_scheduler, &sched));
    // a step takes gradient_accumulation_steps micro-batches per rank; rank k computes
    // micro-batches k, k + size, ... of the step, and the gradients are summed
    const size_t per_step = (size_t)c->gradient_accumulation_steps * (size_t)r->dist.size;
    size_t *mb_first = xmalloc(per_step * sizeof(size_t)), *mb_size = xmalloc(per_step * sizeof(size_t));
    int exit_status = 0;
    while (r->step < r->total_steps) {
        const double t0 = time_now();
        size_t step_tokens;
        const double loss = step_gradients(r, per_step, mb_first, mb_size, &step_tokens, log);
        double grad_norm, lr = 0;
        if (!update_step(r, &ac, sched, loss, &grad_norm, &lr)) {
            exit_status = EXIT_RUNTIME;
            break;
        }
        const double dt = time_now() - t0;
        log->tokens_seen += step_tokens;
        log->log_loss += loss;
        log->log_count++;
        const bool do_eval = (c->eval_steps > 0 && r->step % c->eval_steps == 0) || r->step == r->total_steps;
        const double eval_loss = do_eval ? evaluate(r) : NAN;
        if (do_eval && !isnan(eval_loss)) log->last_eval = eval_loss;
        if ((r->step % c->logging_steps == 0 || r->step == r->total_steps || do_eval) && r->metrics)
            log_step(r, log, lr, grad_norm, dt, eval_loss, tty);
        const bool stop = r->dist.size > 1 ? dist_any(g_stop_signal != 0) : g_stop_signal != 0;
        if (((c->save_steps > 0 && r->step % c->save_steps == 0) || r->step == r->total_steps || stop) &&
            r->dist.rank == 0) {
            Error err = {0};
            if (!save_checkpoint(r, &err)) die_run(&err);
        }
        if (stop) {
            printf("%sinterrupted by signal %d after step %ld; checkpoint saved. Resume with:\n",
                   tty ? "\n" : "", (int)g_stop_signal, r->step);
            print_resume_hint(argc, argv, job, r->last_ckpt);
            exit_status = 128 + (g_stop_signal ? (int)g_stop_signal : SIGTERM);
            break;
        }
    }
    free(mb_first);
    free(mb_size);
    if (tty) printf("\n");
    return exit_status;
}

int cmd_train(int argc, char **argv) {
    if (cli_help(argc, argv, TRAIN_HELP)) return 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list-keys") == 0) {
            config_print_keys(stdout);
            return 0;
        }
    }
    Run r;
    memset(&r, 0, sizeof r);
    Error err = {0};
    dist_init(&r.dist, &argc, &argv);
    if (!dist_check_launcher(&err)) die_run(&err);
    if (r.dist.rank != 0 && !freopen("/dev/null", "w", stdout)) die(EXIT_RUNTIME, "cannot silence rank %d", r.dist.rank);
    const char *job;
    if (read_job(&r, argc, argv, &job)) {
        config_write_yaml(&r.cfg, stdout);
        return 0;
    }
    double t_setup = time_now();
    signal(SIGINT, on_signal);  // already during set-up: a stop then comes after the first step
    signal(SIGTERM, on_signal);
    setup(&r, &err);
    print_summary(&r);
    if (r.dist.size > 1)
        printf("data parallel: %d ranks, each with %ld threads; a step takes %ld micro-batches (accumulation x ranks)\n",
               r.dist.size, r.cfg.threads ? r.cfg.threads : (long)omp_get_max_threads(),
               r.cfg.gradient_accumulation_steps * r.dist.size);
    TrainLog log = {0};
    log.eval_start = evaluate(&r);
    if (!isnan(log.eval_start)) {
        printf("eval_loss before training: %.4f (step %ld)\n", log.eval_start, r.step);
        if (r.step == 0 && r.metrics) fprintf(r.metrics, "{\"step\": 0, \"eval_loss\": %.6f}\n", log.eval_start);
    }
    printf("setup %.1f s; training\n", time_now() - t_setup);
    log.t_start = time_now();
    log.last_eval = log.eval_start;
    log.first_step = r.step;
    const int exit_status = train_loop(&r, &log, argc, argv, job);
    if (exit_status == 0 && r.dist.rank == 0) finish_run(&r, &log);
    run_free(&r);
    return exit_status;
}

// ---- merge -----------------------------------------------------------------------------------

static const char *MERGE_HELP =
    "usage: qlora merge --model DIR --adapter DIR --out DIR [--dequantized]\n"
    "                   [--quant nf4|fp4|int8] [--blocksize N] [--no-double-quant]\n\n"
    "Writes a full Hugging Face model folder with the LoRA adapter merged in:\n"
    "W' = W + (alpha/r) B A (transposed into GPT-2's Conv1D layout). By default W is the\n"
    "original fp32 weight; with --dequantized it is the weight the adapter was trained\n"
    "against in QLoRA: the base quantized (nf4 + double quant unless --quant etc. say\n"
    "otherwise) and dequantized. Prints, per layer, the relative size of the change.\n";

typedef struct {
    const LoraSet *lora;
    double *delta_sq, *w_sq;  // per layer sums
} MergeCtx;

static void merge_delta(void *vctx, int layer, int target, float *w) {
    MergeCtx *mc = vctx;
    const LoraLinear *l = lora_get(mc->lora, layer, (LoraTarget)target);
    double ws = 0, ds = 0;
    if (l) {
        const size_t R = (size_t)mc->lora->r;
        float *delta = xmalloc(l->in * l->out * sizeof(float));
        // delta [out, in] = scaling * B [out, r] . A [r, in]
        matmul_nn(delta, l->B, l->A, l->out, l->in, R, mc->lora->scaling, 0.0f, R, l->in, l->in);
        for (size_t i = 0; i < l->in * l->out; i++) {
            ws += (double)w[i] * w[i];
            ds += (double)delta[i] * delta[i];
            w[i] += delta[i];
        }
        free(delta);
    }
    mc->w_sq[layer] += ws;
    mc->delta_sq[layer] += ds;
}

int cmd_merge(int argc, char **argv) {
    if (cli_help(argc, argv, MERGE_HELP)) return 0;
    const char *model_dir = NULL, *adapter = NULL, *out = NULL;
    bool dequantized = false;
    QuantConfig q = {QUANT_NF4, QUANT_DEFAULT_BLOCK, true};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--model") == 0) model_dir = cli_value(argc, argv, &i);
        else if (strcmp(a, "--adapter") == 0) adapter = cli_value(argc, argv, &i);
        else if (strcmp(a, "--out") == 0) out = cli_value(argc, argv, &i);
        else if (strcmp(a, "--dequantized") == 0) dequantized = true;
        else if (strcmp(a, "--no-double-quant") == 0) q.double_quant = false;
        else if (strcmp(a, "--quant") == 0) {
            const char *v = cli_value(argc, argv, &i);
            if (!quant_parse(v, &q.type) || (q.type != QUANT_NF4 && q.type != QUANT_FP4 && q.type != QUANT_INT8))
                cli_usage_error("merge", "--quant must be nf4, fp4 or int8, got '%s'", v);
        } else if (strcmp(a, "--blocksize") == 0) {
            q.blocksize = (size_t)cli_long(a, cli_value(argc, argv, &i), QUANT_MIN_BLOCK, QUANT_MAX_BLOCK);
        } else cli_usage_error("merge", "unknown argument '%s'", a);
    }
    if (!model_dir || !adapter || !out) cli_usage_error("merge", "--model, --adapter and --out are required");
    if (!dequantized) q.type = QUANT_NONE;
    Error err = {0};
    if (!path_check_apart("--out", out, "--model", model_dir, &err) ||
        !path_check_apart("--out", out, "--adapter", adapter, &err))
        die_error(&err);
    Model m;
    LoraSet lora;
    if (!model_load(&m, model_dir, &q, &err)) die_error(&err);
    LoraShapes shapes = model_lora_shapes(&m.cfg);
    if (!lora_load_peft(&lora, adapter, m.cfg.n_layer, &shapes, &err)) die_error(&err);
    if (!mkdir_p(out, &err)) die_error(&err);
    MergeCtx mc = {&lora, xcalloc((size_t)m.cfg.n_layer, sizeof(double)), xcalloc((size_t)m.cfg.n_layer, sizeof(double))};
    if (!model_save_hf(&m, model_dir, out, merge_delta, &mc, &err)) die_error(&err);
    printf("merged %s into %s weights of %s (scaling %g); per layer ||delta W|| / ||W||:\n", adapter,
           dequantized ? "the dequantized" : "the original fp32", model_dir, (double)lora.scaling);
    for (int l = 0; l < m.cfg.n_layer; l++)
        printf("  layer %2d: %.3e\n", l, mc.w_sq[l] > 0 ? sqrt(mc.delta_sq[l] / mc.w_sq[l]) : 0.0);
    printf("wrote %s (model.safetensors, config.json, vocab.json, merges.txt)\n", out);
    free(mc.delta_sq);
    free(mc.w_sq);
    lora_free(&lora);
    model_free(&m);
    return 0;
}
