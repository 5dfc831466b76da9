// sample.c: see sample.h.
#include "sample.h"

#include <math.h>
#include <stdlib.h>

// Most likely first; equal weights in id order, so the sort's result is fully determined.
static int cmp_cand(const void *a, const void *b) {
    float x = ((const SampleCand *)a)->p, y = ((const SampleCand *)b)->p;
    if (x != y) return x < y ? 1 : -1;
    return ((const SampleCand *)a)->id - ((const SampleCand *)b)->id;
}

int sample_next(const float *logits, int V, const SampleParams *p, Rng *rng, SampleCand *cand) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (p->temperature <= 0.0f) return best;
    double sum = 0;
    for (int i = 0; i < V; i++) {
        cand[i].id = i;
        cand[i].p = expf((logits[i] - logits[best]) / p->temperature);
        sum += cand[i].p;
    }
    qsort(cand, (size_t)V, sizeof(SampleCand), cmp_cand);
    int keep = p->top_k > 0 && p->top_k < V ? p->top_k : V;
    double mass = 0, kept = 0;
    for (int i = 0; i < keep; i++) {
        mass += cand[i].p / sum;
        if (p->top_p < 1.0f && mass >= p->top_p) {
            keep = i + 1;  // the smallest set whose probability reaches top_p
            break;
        }
    }
    for (int i = 0; i < keep; i++) kept += cand[i].p;
    double u = rng_uniform(rng) * kept, acc = 0;
    for (int i = 0; i < keep; i++) {
        acc += cand[i].p;
        if (u < acc) return cand[i].id;
    }
    return cand[keep - 1].id;  // u rounded up to kept
}
