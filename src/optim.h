// optim.h: AdamW exactly as torch.optim.AdamW, global-norm gradient clipping as
// torch.nn.utils.clip_grad_norm_, and the learning-rate schedules of Hugging Face
// transformers (docs/formats.md, "AdamW and LR schedules"). Works on flat float arrays.
// Not here: which parameters exist (lora.c, train.c).
#ifndef QLORA_OPTIM_H
#define QLORA_OPTIM_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} AdamWConfig;

// One AdamW step (t >= 1 is this step's number) on n parameters: decoupled decay
// p *= 1 - lr*wd, then m, v updated and p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
// Updates p, m, v in place; g is read only. weight_decay is taken from cfg unless
// decay == false.
void adamw_step(float *p, const float *g, float *m, float *v, size_t n, const AdamWConfig *cfg,
                long t, bool decay);
// Scalar reference in double, for tests.
void adamw_step_ref(float *p, const float *g, float *m, float *v, size_t n,
                    const AdamWConfig *cfg, long t, bool decay);

// Sum of squares of g[0..n) in double (deterministic for a given thread count).
double grad_sq_sum(const float *g, size_t n);
// torch clip_grad_norm_: given total_norm, scale g by max_norm/(total_norm + 1e-6) when
// that is < 1. Returns the factor applied (1 if none).
float clip_factor(double total_norm, float max_norm);
void scale_inplace(float *g, size_t n, float factor);

typedef enum { LR_CONSTANT, LR_LINEAR, LR_COSINE } LrSchedule;
bool lr_schedule_parse(const char *name, LrSchedule *out);
const char *lr_schedule_name(LrSchedule s);
// Learning rate multiplier after `step` optimizer steps (0 for the first update), with
// `warmup` warm-up steps and `total` steps (transformers' get_*_schedule_with_warmup;
// constant ignores warm-up unless warmup > 0, as constant_with_warmup).
double lr_factor(LrSchedule s, long step, long warmup, long total);

#endif
