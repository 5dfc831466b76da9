// report.c: see report.h.
#include "report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "json.h"
#include "memory.h"
#include "path.h"
#include "strbuf.h"
#include "svg.h"

const char *const REPORT_MEM_CATEGORY[REPORT_MEM_N] = {"frozen weights", "quant constants", "trainable",
                                                      "gradients", "optimizer", "activations"};

// See report.h; tests hold the two within 5% of each other.
MemAccount report_memory_account(const TrainConfig *c, const Trainer *t) {
    const bool full = t->lora == NULL;
    const GPT2Config *mc = &t->model->cfg;
    const ModelShape s = shape_from_config(mc);
    MemJob j = {.B = (size_t)c->micro_batch_size, .T = (size_t)c->sequence_len, .lora_r = full ? 0 : t->lora->r,
                .gradient_checkpointing = c->gradient_checkpointing, .quant_blocksize = t->model->quant.blocksize,
                .fp4_double_quant = t->model->quant.type == QUANT_FP4 && t->model->quant.double_quant};
    if (!full) memcpy(j.targets, t->lora->targets, sizeof j.targets);
    MemRow rows[MEM_N_METHODS];
    memory_predict(&s, &j, rows);
    const MemRow *p = &rows[memory_method(full, t->model->quant.type, t->model->quant.double_quant)];
    ModelBytes mb = model_bytes(t->model);
    const double n = (double)t->set.n_params;
    const double frozen = (double)(mb.linear_weights + mb.embeddings + mb.norms_and_biases);
    MemAccount a = {p->name,
                    {full ? 0 : frozen, (double)mb.quant_constants, full ? frozen : 4.0 * n, 4.0 * n, 8.0 * n,
                     (double)acts_bytes(t->acts)},
                    {p->weights, p->quant_constants, p->trainable, p->gradients, p->optimizer, p->activations}};
    return a;
}

void report_print_memory(const TrainConfig *c, const Trainer *t) {
    MemAccount a = report_memory_account(c, t);
    double tm = 0, tp = 0;
    printf("memory account (%s): %-16s %12s %12s\n", a.method, "category", "allocated", "predicted");
    for (int k = 0; k < 6; k++) {
        printf("memory account (%s): %-16s %12.0f %12.0f\n", a.method, REPORT_MEM_CATEGORY[k], a.measured[k],
               a.predicted[k]);
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

// The series of metrics.jsonl: training steps (step, loss, lr, tokens/s) and evaluations
// (step, eval_loss), as stb_ds arrays; lines that are not JSON objects with a step are skipped.
typedef struct {
    double *step, *loss, *lr, *tps;  // training-step lines
    double *eval_step, *eval;        // lines with an eval_loss
} Metrics;

static bool read_metrics(const char *path, Metrics *m, Error *err) {
    memset(m, 0, sizeof *m);
    char *text;
    size_t len;
    if (!file_read_all(path, &text, &len, err)) return false;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *js = cJSON_Parse(line);
        const cJSON *step = js ? cJSON_GetObjectItem(js, "step") : NULL;
        if (step && cJSON_IsNumber(step)) {
            const cJSON *l = cJSON_GetObjectItem(js, "loss"), *e = cJSON_GetObjectItem(js, "eval_loss");
            const cJSON *r = cJSON_GetObjectItem(js, "lr"), *s = cJSON_GetObjectItem(js, "tokens_per_s");
            if (cJSON_IsNumber(l) && cJSON_IsNumber(r) && cJSON_IsNumber(s)) {  // a training step's line
                arrput(m->step, step->valuedouble);
                arrput(m->loss, l->valuedouble);
                arrput(m->lr, r->valuedouble);
                arrput(m->tps, s->valuedouble);
            }
            if (cJSON_IsNumber(e)) {
                arrput(m->eval_step, step->valuedouble);
                arrput(m->eval, e->valuedouble);
            }
        }
        cJSON_Delete(js);
    }
    free(text);
    return true;
}

static void metrics_free(Metrics *m) {
    arrfree(m->step);
    arrfree(m->loss);
    arrfree(m->lr);
    arrfree(m->tps);
    arrfree(m->eval_step);
    arrfree(m->eval);
}

// The page's title, the run's one-paragraph summary and its three charts.
static void page_head(char **page, const TrainConfig *c, const Trainer *t, const Metrics *m) {
    sb_appendf(page, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>qlora training report</title>"
                     "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em}"
                     "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
                     "pre{background:#f6f6f6;padding:1em}</style></head><body>\n<h1>Training report: ");
    sb_append_xml(page, c->output_dir);
    sb_appendf(page, "</h1>\n<p>method <b>%s</b>, base model <code>", train_method_name(c->method));
    sb_append_xml(page, c->base_model);
    sb_appendf(page, "</code>, dataset <code>");
    sb_append_xml(page, c->dataset);
    sb_appendf(page, "</code>; %ld steps; %zu trainable parameters.", t->step, t->set.n_params);
    if (arrlenu(m->eval) > 0)
        sb_appendf(page, " eval_loss %.4f at step %.0f, %.4f at step %.0f.", m->eval[0], m->eval_step[0],
                   arrlast(m->eval), arrlast(m->eval_step));
    if (arrlenu(m->tps) > 0) sb_appendf(page, " %.0f tokens/s (last logged).", arrlast(m->tps));
    sb_appendf(page, "</p>\n");
    double *xs[2] = {m->step, m->eval_step}, *ys[2] = {m->loss, m->eval};
    size_t ns[2] = {arrlenu(m->step), arrlenu(m->eval_step)};
    const char *names[2] = {"training loss", "eval loss"};
    report_chart(page, "Loss", "loss (nats per token)", xs, ys, ns, names, arrlenu(m->eval_step) ? 2 : 1);
    report_chart(page, "Learning rate", "learning rate", &xs[0], &m->lr, ns, names, 1);
    report_chart(page, "Speed", "tokens per second", &xs[0], &m->tps, ns, names, 1);
}

// The memory account as a table, the peak RSS and the job's settings as YAML.
static void page_tail(char **page, const TrainConfig *c, const Trainer *t) {
    MemAccount a = report_memory_account(c, t);
    sb_appendf(page, "<h2>Memory account (%s)</h2>\n<table><tr><th>category</th><th>allocated (MiB)</th>"
                     "<th>predicted by qlora memory (MiB)</th></tr>\n", a.method);
    double tm = 0, tp = 0;
    for (int k = 0; k < 6; k++) {
        sb_appendf(page, "<tr><td style=\"text-align:left\">%s</td><td>%.3f</td><td>%.3f</td></tr>\n",
                   REPORT_MEM_CATEGORY[k], a.measured[k] / 1048576.0, a.predicted[k] / 1048576.0);
        tm += a.measured[k];
        tp += a.predicted[k];
    }
    sb_appendf(page, "<tr><th style=\"text-align:left\">total</th><th>%.3f</th><th>%.3f</th></tr></table>\n"
                     "<p>peak resident set size of the process: %.1f MiB</p>\n<h2>Job settings</h2>\n<pre>",
               tm / 1048576.0, tp / 1048576.0, (double)peak_rss_bytes() / 1048576.0);
    char *yaml = NULL;
    size_t ylen = 0;
    FILE *mem = open_memstream(&yaml, &ylen);
    if (mem) {
        config_write_yaml(c, mem);
        fclose(mem);
        sb_append_xml(page, yaml);
        free(yaml);
    }
    sb_appendf(page, "</pre>\n</body></html>\n");
}

bool report_write_html(const TrainConfig *c, const Trainer *t, Error *err) {
    char *path = path_join(c->output_dir, "metrics.jsonl");
    Metrics m;
    bool ok = read_metrics(path, &m, err);
    free(path);
    if (!ok) return false;
    char *page = NULL;
    page_head(&page, c, t, &m);
    page_tail(&page, c, t);
    path = path_join(c->output_dir, "report.html");
    ok = write_file_atomic(path, page, arrlenu(page), err);
    free(path);
    arrfree(page);
    metrics_free(&m);
    return ok;
}
