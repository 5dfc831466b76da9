// sample.h: choosing the next token from a row of logits, as Hugging Face's generate does
// with do_sample: temperature, then top-k, then top-p (nucleus), then one draw. Greedy for
// temperature 0. Deterministic for a seeded Rng and independent of thread count.
// Not here: the forward pass that produces the logits (model.c), text (tokenizer.c).
#ifndef QLORA_SAMPLE_H
#define QLORA_SAMPLE_H

#include "util.h"

typedef struct {
    float temperature;  // <= 0: greedy
    int top_k;          // keep the k most likely; 0 or >= V: all
    float top_p;        // then the smallest most-likely set whose probability reaches top_p; 1: all
} SampleParams;

// One candidate token (scratch for sample_next).
typedef struct {
    float p;
    int id;
} SampleCand;

// The next token id in [0, V) for logits[0..V). Greedy: the first maximum. Otherwise the
// candidates' weights exp((logit - max) / temperature) are sorted (ties: lower id first),
// cut by top_k and top_p, and one rng_uniform draw picks among the kept ones by weight.
// cand: V entries of scratch, overwritten. Logits must be finite (callers check).
int sample_next(const float *logits, int V, const SampleParams *p, Rng *rng, SampleCand *cand);

#endif
