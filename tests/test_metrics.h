// test_metrics.h: reading a training run's metrics.jsonl and comparing its per-step values
// with a PyTorch reference trajectory (a train_ref.json's "losses" / "grad_norms"), for the
// end-to-end training tests. Arrays are stb_ds arrays.
#ifndef QLORA_TEST_METRICS_H
#define QLORA_TEST_METRICS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "json.h"
#include "test.h"

// Values of `key` from the lines of dir/metrics.jsonl that have it, in file order (NULL, *n =
// 0 when the file cannot be read).
__attribute__((unused)) static double *metric_values(const char *dir, const char *key, size_t *n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    char *text;
    size_t len;
    Error err = {0};
    double *out = NULL;
    *n = 0;
    if (!file_read_all(path, &text, &len, &err)) return NULL;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *js = cJSON_Parse(line);
        const cJSON *v = js ? cJSON_GetObjectItem(js, key) : NULL;
        if (v && cJSON_IsNumber(v)) arrput(out, v->valuedouble);
        cJSON_Delete(js);
    }
    free(text);
    *n = arrlenu(out);
    return out;
}

// The numbers of ref_path's object `which`, array `key` (e.g. "lora", "losses").
__attribute__((unused)) static double *ref_values(const char *ref_path, const char *which, const char *key,
                                                  size_t *n) {
    Error err = {0};
    cJSON *js = json_parse_file(ref_path, &err);
    CHECK(js);
    double *out = NULL;
    const cJSON *arr = cJSON_GetObjectItem(cJSON_GetObjectItem(js, which), key);
    for (const cJSON *x = arr ? arr->child : NULL; x; x = x->next) arrput(out, x->valuedouble);
    cJSON_Delete(js);
    *n = arrlenu(out);
    return out;
}

// EXPECT that dir's per-step `key` values equal ref's which.ref_key, step for step, within
// rtol relative, with as many steps as the reference (at least min_steps).
__attribute__((unused)) static void expect_trajectory(const char *name, const char *dir, const char *key,
                                                      const char *ref_path, const char *which,
                                                      const char *ref_key, size_t min_steps, double rtol) {
    size_t n_got, n_ref;
    double *got = metric_values(dir, key, &n_got), *ref = ref_values(ref_path, which, ref_key, &n_ref);
    double worst = 0;
    for (size_t i = 0; i < n_got && i < n_ref; i++) worst = fmax(worst, fabs(got[i] - ref[i]) / fabs(ref[i]));
    EXPECT(n_got == n_ref && n_ref >= min_steps && worst <= rtol,
           "%s: %zu per-step values of %s vs PyTorch (%zu), max rel diff %.2e", name, n_got, key, n_ref, worst);
    arrfree(got);
    arrfree(ref);
}

#endif
