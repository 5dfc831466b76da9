// optim.c: see optim.h.
#include "optim.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "util.h"

void adamw_step(float *p, const float *g, float *m, float *v, size_t n, const AdamWConfig *cfg,
                long t, bool decay) {
    const float b1 = cfg->beta1, b2 = cfg->beta2, lr = cfg->lr, eps = cfg->eps;
    const float wd = decay ? cfg->weight_decay : 0.0f;
    // bias corrections in double, as torch computes them from Python floats
    const double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float pi = p[i] * (1.0f - lr * wd);  // decoupled weight decay, before the update
        m[i] = m[i] + (1.0f - b1) * (g[i] - m[i]);  // torch's lerp form of b1*m + (1-b1)*g
        v[i] = v[i] * b2 + (1.0f - b2) * g[i] * g[i];
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] = pi - step_size * m[i] / denom;
    }
}

void adamw_step_ref(float *p, const float *g, float *m, float *v, size_t n,
                    const AdamWConfig *cfg, long t, bool decay) {
    const double wd = decay ? cfg->weight_decay : 0.0;
    for (size_t i = 0; i < n; i++) {
        double pi = (double)p[i] * (1.0 - (double)cfg->lr * wd);
        double mi = cfg->beta1 * (double)m[i] + (1.0 - cfg->beta1) * g[i];
        double vi = cfg->beta2 * (double)v[i] + (1.0 - cfg->beta2) * (double)g[i] * g[i];
        double mhat = mi / (1.0 - pow(cfg->beta1, (double)t));
        double vhat = vi / (1.0 - pow(cfg->beta2, (double)t));
        p[i] = (float)(pi - cfg->lr * mhat / (sqrt(vhat) + cfg->eps));
        m[i] = (float)mi;
        v[i] = (float)vi;
    }
}

double grad_sq_sum(const float *g, size_t n) {
    enum { MAX_PARTS = 256 };
    double parts[MAX_PARTS] = {0};
    int n_parts = 1;
    #pragma omp parallel
    {
        #pragma omp single
        n_parts = omp_get_num_threads();
        const int tid = omp_get_thread_num();
        double s = 0;
        #pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
        if (tid < MAX_PARTS) parts[tid] = s;
    }
    CHECK(n_parts <= MAX_PARTS);
    double total = 0;
    for (int i = 0; i < n_parts; i++) total += parts[i];  // fixed order: reproducible
    return total;
}

float clip_factor(double total_norm, float max_norm) {
    if (max_norm <= 0) return 1.0f;
    double c = max_norm / (total_norm + 1e-6);
    return c < 1.0 ? (float)c : 1.0f;
}

void scale_inplace(float *g, size_t n, float factor) {
    if (factor == 1.0f) return;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) g[i] *= factor;
}

bool lr_schedule_parse(const char *name, LrSchedule *out) {
    if (strcmp(name, "constant") == 0) *out = LR_CONSTANT;
    else if (strcmp(name, "linear") == 0) *out = LR_LINEAR;
    else if (strcmp(name, "cosine") == 0) *out = LR_COSINE;
    else return false;
    return true;
}

const char *lr_schedule_name(LrSchedule s) {
    return s == LR_CONSTANT ? "constant" : s == LR_LINEAR ? "linear" : "cosine";
}

double lr_factor(LrSchedule s, long step, long warmup, long total) {
    if (step < warmup) return (double)step / (double)(warmup > 1 ? warmup : 1);
    if (s == LR_CONSTANT) return 1.0;
    const double span = (double)(total - warmup > 1 ? total - warmup : 1);
    if (s == LR_LINEAR) {
        double f = (double)(total - step) / span;
        return f > 0 ? f : 0;
    }
    const double q = (double)(step - warmup) / span;
    double f = 0.5 * (1.0 + cos(M_PI * q));
    return f > 0 ? f : 0;
}
