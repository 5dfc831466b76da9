// checkpoint.c: see checkpoint.h.
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ds.h"
#include "json.h"
#include "path.h"
#include "safetensors.h"

bool checkpoint_save_weights(const TrainConfig *c, const Trainer *t, const char *dir, Error *err) {
    if (!t->lora) return model_save_hf(t->model, c->base_model, dir, NULL, NULL, err);
    return lora_save_peft(t->lora, dir, err);
}

// ---- what a checkpoint depends on --------------------------------------------------------------

// Resuming with any of these changed would silently continue a different run (another base
// model, method, quantization, adapter shape, seed or dataset). base_model and dataset are
// resolved paths, the base model also identified by the size of its weights file.
#define N_DEPENDS 7
static const char *const DEPENDS[N_DEPENDS] = {"base_model", "method", "quant", "lora", "seed", "dataset", "data"};

// The resolved form of path as a new string (the path itself if it cannot be resolved).
static char *resolved(const char *path) {
    char *r = path_resolve(path);
    return r ? r : xstrdup(path);
}

// The adapter's shape as recorded: "r R alpha A[ rslora] targets T..." or "none".
static char *lora_shape(const TrainConfig *c) {
    if (c->method == METHOD_FULL) return xstrdup("none");
    char *s = path_fmt("r %ld alpha %g%s targets", c->lora_r, c->lora_alpha, c->use_rslora ? " rslora" : "");
    for (int i = 0; i < c->n_lora_target_modules; i++) {
        char *next = path_fmt("%s %s", s, c->lora_target_modules[i]);
        free(s);
        s = next;
    }
    if (c->lora_target_linear) {
        char *next = path_fmt("%s all-linear", s);
        free(s);
        s = next;
    }
    return s;
}

// How the job turns its dataset into examples and rows (a new string): what the examples' labels
// and a checkpoint's cursor depend on beyond the file itself.
static char *data_settings(const TrainConfig *c) {
    static const char *const EOS[] = {"turn", "all", "none", "last"};
    char roles[CFG_MAX_ROLES * 17 + 1] = "";
    for (int i = 0; i < c->n_roles_to_train; i++)
        snprintf(roles + strlen(roles), sizeof roles - strlen(roles), "%s%s", i ? "," : "", c->roles_to_train[i]);
    const bool chat = strcmp(c->dataset_format, "chat_template") == 0;
    return path_fmt("format %s%s%s%s%s%s%s, train_on_inputs %d, drop_long %d, sample_packing %d",
                    c->dataset_format[0] ? c->dataset_format : "(by extension)", chat ? ", template " : "",
                    chat ? c->chat_template : "", chat ? ", roles " : "", chat ? roles : "",
                    chat ? ", train_on_eos " : "", chat ? EOS[c->train_on_eos] : "", c->train_on_inputs, c->drop_long,
                    c->sample_packing);
}

// One new string per DEPENDS key for job c (free each).
static void job_depends(const TrainConfig *c, char *out[N_DEPENDS]) {
    char *base = resolved(c->base_model), *weights = path_join(base, "model.safetensors");
    struct stat st;
    out[0] = path_fmt("%s (model.safetensors: %lld bytes)", base, stat(weights, &st) == 0 ? (long long)st.st_size : -1LL);
    free(base);
    free(weights);
    out[1] = xstrdup(train_method_name(c->method));
    out[2] = c->method == METHOD_QLORA
                 ? path_fmt("%s blocksize %ld%s", quant_name(c->quant), c->quant_blocksize, c->double_quant ? " double_quant" : "")
                 : xstrdup("none");
    out[3] = lora_shape(c);
    out[4] = path_fmt("%ld", c->seed);
    out[5] = resolved(c->dataset);
    out[6] = data_settings(c);
}

static void depends_free(char *d[N_DEPENDS]) {
    for (int i = 0; i < N_DEPENDS; i++) free(d[i]);
}

// job_depends as a compact JSON object (malloc'ed) for trainer_state.json.
static char *job_depends_json(const TrainConfig *c) {
    char *dep[N_DEPENDS];
    job_depends(c, dep);
    cJSON *js = cJSON_CreateObject();
    for (int i = 0; i < N_DEPENDS; i++) cJSON_AddStringToObject(js, DEPENDS[i], dep[i]);
    char *text = cJSON_PrintUnformatted(js);
    cJSON_Delete(js);
    depends_free(dep);
    return text;
}

bool checkpoint_check_job(const char *ckpt, const TrainConfig *c, Error *err) {
    char *path = path_join(ckpt, "trainer_state.json");
    cJSON *js = json_parse_file(path, err);
    if (!js) return free(path), false;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(js, "method");
    const cJSON *dep = cJSON_GetObjectItemCaseSensitive(js, "depends_on");
    const char *method = train_method_name(c->method);
    bool ok = !cJSON_IsString(m) || strcmp(m->valuestring, method) == 0 ||
              error_set(err, "%s: the checkpoint was made with method %s, this job has method %s (resume with "
                             "the method it was made with)", path, m->valuestring, method);
    char *now[N_DEPENDS];
    job_depends(c, now);
    for (int i = 0; ok && i < N_DEPENDS; i++) {
        const cJSON *was = cJSON_GetObjectItemCaseSensitive(dep, DEPENDS[i]);
        if (cJSON_IsString(was) && strcmp(was->valuestring, now[i]) != 0)
            ok = error_set(err, "%s: %s: the checkpoint was made with '%s', this job has '%s' (resume with the "
                                "same settings, or use a new output_dir)", path, DEPENDS[i], was->valuestring, now[i]);
    }
    depends_free(now);
    cJSON_Delete(js);
    free(path);
    return ok;
}

// ---- writing -----------------------------------------------------------------------------------

// dir/optimizer.safetensors: exp_avg.NAME and exp_avg_sq.NAME of every trainable tensor.
static bool save_moments(const Trainer *t, const char *dir, Error *err) {
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    for (size_t i = 0; i < t->set.n_tensors; i++) {
        const Trainable *e = &t->set.t[i];
        char name[200];
        uint64_t n = e->n;
        snprintf(name, sizeof name, "exp_avg.%s", e->name);
        st_writer_add(&w, name, ST_F32, 1, &n, e->m);
        snprintf(name, sizeof name, "exp_avg_sq.%s", e->name);
        st_writer_add(&w, name, ST_F32, 1, &n, e->v);
    }
    char *path = path_join(dir, "optimizer.safetensors");
    const bool ok = st_writer_write(&w, path, err);
    st_writer_free(&w);
    free(path);
    return ok;
}

// dir/trainer_state.json and dir/job.yaml.
static bool save_state(const TrainConfig *c, const Trainer *t, const char *dir, Error *err) {
    char *depends = job_depends_json(c);
    char *state = path_fmt("{\n  \"global_step\": %ld,\n  \"max_steps\": %ld,\n  \"warmup_steps\": %ld,\n"
                           "  \"epoch\": %zu,\n  \"cursor\": %zu,\n  \"n_train_examples\": %zu,\n"
                           "  \"seed\": %ld,\n  \"method\": \"%s\",\n  \"depends_on\": %s\n}\n",
                           t->step, t->opt.total_steps, t->opt.warmup, t->epoch, t->cursor,
                           arrlenu(t->data->ex), c->seed, train_method_name(c->method), depends);
    free(depends);
    char *path = path_join(dir, "trainer_state.json");
    bool ok = write_file_atomic(path, state, strlen(state), err);
    free(state);
    free(path);
    if (!ok) return false;
    path = path_join(dir, "job.yaml");
    FILE *fp = fopen(path, "w");
    if (!fp) ok = error_runtime(err, "%s: cannot create: %s", path, strerror(errno));
    else {
        config_write_yaml(c, fp);
        if ((fflush(fp) != 0 || ferror(fp)) | (fclose(fp) != 0))  // disk full: the checkpoint is not complete
            ok = error_runtime(err, "%s: write failed: %s", path, strerror(errno));
    }
    free(path);
    return ok;
}

// Move the finished folder tmp to final. An older final is moved aside and deleted only
// once the new one is in place; a kill between the two renames leaves a complete .old-PID
// that the next start renames back (checkpoint_clean_stale).
static bool replace_folder(const char *tmp, const char *final, Error *err) {
    char *old = NULL;
    if (access(final, F_OK) == 0) {
        old = path_fmt("%s.old-%ld", final, (long)getpid());
        if (rename(final, old) != 0) {
            free(old);
            return error_runtime(err, "%s: cannot replace: %s", final, strerror(errno));
        }
        test_delay("replace");
    }
    if (rename(tmp, final) != 0) {
        free(old);
        return error_runtime(err, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
    }
    if (old) path_remove_tree(old);
    free(old);
    return true;
}

bool checkpoint_save(const TrainConfig *c, const Trainer *t, char **saved, Error *err) {
    char *final = path_fmt("%s/checkpoint-%ld", c->output_dir, t->step);
    char *tmp = path_fmt("%s.tmp-%ld", final, (long)getpid());
    path_remove_tree(tmp);
    const bool ok = path_mkdir_p(tmp, err) && checkpoint_save_weights(c, t, tmp, err) &&
                    save_moments(t, tmp, err) && save_state(c, t, tmp, err) && replace_folder(tmp, final, err);
    if (ok) {
        free(*saved);
        *saved = final;
    } else {
        free(final);
    }
    free(tmp);
    return ok;
}

// ---- reading -----------------------------------------------------------------------------------

char *checkpoint_latest(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return NULL;
    long best = -1;
    char *best_path = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *num = e->d_name + 11;
        if (strncmp(e->d_name, "checkpoint-", 11) != 0 || !*num || num[strspn(num, "0123456789")]) continue;
        errno = 0;
        long n = strtol(num, NULL, 10);
        char *path = path_join(dir, e->d_name), *state = path_join(path, "trainer_state.json");
        struct stat st;
        const bool complete = stat(state, &st) == 0 && S_ISREG(st.st_mode);
        free(state);
        if (errno == ERANGE || n <= best || !complete) {
            free(path);
            continue;
        }
        best = n;
        free(best_path);
        best_path = path;
    }
    closedir(d);
    return best_path;
}

// The exp_avg / exp_avg_sq of every trainable tensor from ckpt/optimizer.safetensors.
static bool load_moments(const char *ckpt, Trainer *t, Error *err) {
    SafeTensors st;
    char *path = path_join(ckpt, "optimizer.safetensors");
    if (!st_open(&st, path, err)) return free(path), false;
    bool ok = true;
    for (size_t i = 0; ok && i < t->set.n_tensors; i++) {
        Trainable *e = &t->set.t[i];
        for (int k = 0; ok && k < 2; k++) {
            char name[200];
            snprintf(name, sizeof name, "%s.%s", k ? "exp_avg_sq" : "exp_avg", e->name);
            const StTensor *s = st_find(&st, name);
            if (!s || s->dtype != ST_F32 || s->n_elements != e->n)
                ok = error_set(err, "%s: missing or mis-sized '%s' (expected F32 [%zu])", path, name, e->n);
            else
                ok = st_read_f32(&st, s, k ? e->v : e->m, err);
        }
    }
    st_close(&st);
    free(path);
    return ok;
}

bool checkpoint_load_state(const char *ckpt, Trainer *t, Error *err) {
    char *path = path_join(ckpt, "trainer_state.json");
    cJSON *js = json_parse_file(path, err);
    if (!js) return free(path), false;
    uint64_t step = 0, epoch = 0, cursor = 0, n_train = 0;
    bool ok = json_as_u64(cJSON_GetObjectItem(js, "global_step"), &step) &&
              json_as_u64(cJSON_GetObjectItem(js, "epoch"), &epoch) &&
              json_as_u64(cJSON_GetObjectItem(js, "cursor"), &cursor) &&
              json_as_u64(cJSON_GetObjectItem(js, "n_train_examples"), &n_train);
    cJSON_Delete(js);
    const size_t have = arrlenu(t->data->ex);
    if (!ok) ok = error_set(err, "%s: expected global_step, epoch, cursor and n_train_examples", path);
    else if (n_train != have || cursor >= t->plan.n_rows)  // the cursor counts rows of the epoch's plan
        ok = error_set(err, "%s: the checkpoint was made with %llu training examples (at row %llu of the epoch), "
                            "this job has %zu in %zu rows (same dataset, val_set_size, sequence_len and "
                            "sample_packing are needed to resume)",
                       path, (unsigned long long)n_train, (unsigned long long)cursor, have, t->plan.n_rows);
    free(path);
    if (!ok || !load_moments(ckpt, t, err)) return false;
    trainer_set_position(t, (long)step, (size_t)epoch, (size_t)cursor);
    return true;
}

void checkpoint_clean_stale(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "checkpoint-", 11) != 0) continue;
        const char *tmp = strstr(e->d_name, ".tmp-"), *old = strstr(e->d_name, ".old-");
        if (!tmp && !old) continue;
        char *path = path_join(dir, e->d_name);
        char *final = path_fmt("%s/%.*s", dir, (int)(old ? old - e->d_name : 0), e->d_name);
        if (old && access(final, F_OK) != 0 && rename(path, final) == 0)
            printf("recovered %s (a run was killed while replacing it)\n", final);
        else
            path_remove_tree(path);
        free(path);
        free(final);
    }
    closedir(d);
}
