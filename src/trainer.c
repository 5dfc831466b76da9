// trainer.c: see trainer.h.
#include "trainer.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ds.h"
#include "quant.h"

// ---- the trainable table -----------------------------------------------------------------------

// Floats a slice of n takes in a block: n rounded up to 16 (64 bytes), so every slice of
// an aligned block is aligned.
static size_t padded(size_t n) { return (n + 15) & ~(size_t)15; }

// Append a tensor to s (g set later for method full). Names longer than 159 bytes are cut.
static void set_add(TrainableSet *s, const char *name, float *p, float *g, size_t n, bool decay) {
    s->t = xrealloc(s->t, (s->n_tensors + 1) * sizeof *s->t);
    Trainable *e = &s->t[s->n_tensors++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->p = p;
    e->g = g;
    e->n = n;
    e->decay = decay;
    s->n_params += n;
}

// The adapter's A and B of every adapted linear, in the order of its contiguous arrays.
static void set_from_lora(TrainableSet *s, LoraSet *lora) {
    lora_alloc_grads(lora);
    const size_t R = (size_t)lora->r;
    for (int i = 0; i < lora->n_layer * LORA_N_TARGETS; i++) {
        LoraLinear *l = &lora->lin[i];
        if (!l->A) continue;
        const int layer = i / LORA_N_TARGETS, t = i % LORA_N_TARGETS;
        char name[160];
        lora_key(&lora->shapes, layer, t, false, name, sizeof name);
        set_add(s, name, l->A, l->dA, R * l->in, true);
        lora_key(&lora->shapes, layer, t, true, name, sizeof name);
        set_add(s, name, l->B, l->dB, R * l->out, true);
    }
    s->grads = lora->grads;
    s->grads_len = lora->n_params;
}

// The model's own parameters (method full), their gradients carved from one block.
static void set_from_model(TrainableSet *s, Model *m) {
    ModelParam *params = NULL;
    model_params(m, &params);
    size_t total = 0;
    for (size_t i = 0; i < arrlenu(params); i++) {
        set_add(s, params[i].name, params[i].p, NULL, params[i].n, params[i].decay);
        total += padded(params[i].n);
    }
    arrfree(params);
    s->own_grads = xmalloc_aligned((total ? total : 1) * sizeof(float));
    s->grads = s->own_grads;
    s->grads_len = total;
    size_t off = 0;
    for (size_t i = 0; i < s->n_tensors; i++, off += padded(s->t[i - 1].n)) s->t[i].g = s->own_grads + off;
}

// Build the table and its AdamW moments (zero). The moment blocks are laid out like the
// gradient block (tensor i's m and v at g's offset in it), so an elementwise update can run
// over the whole block at once (set_flat).
static void set_init(TrainableSet *s, Model *m, LoraSet *lora) {
    memset(s, 0, sizeof *s);
    if (lora) set_from_lora(s, lora);
    else set_from_model(s, m);
    const size_t total = s->grads_len;
    s->moments = xmalloc_aligned((total ? 2 * total : 1) * sizeof(float));
    memset(s->moments, 0, 2 * total * sizeof(float));
    s->grad_ptrs = xmalloc((s->n_tensors ? s->n_tensors : 1) * sizeof(float *));
    s->flat = lora != NULL;
    for (size_t i = 0; i < s->n_tensors; i++) {
        const size_t off = (size_t)(s->t[i].g - s->grads);
        s->t[i].m = s->moments + off;
        s->t[i].v = s->moments + total + off;
        s->grad_ptrs[i] = s->t[i].g;
        s->flat = s->flat && s->t[i].p == lora->params + off && s->t[i].decay == s->t[0].decay;
    }
    s->params = s->flat ? lora->params : NULL;
}

static void set_free(TrainableSet *s) {
    free(s->t);
    free(s->moments);
    free(s->own_grads);
    free(s->grad_ptrs);
    memset(s, 0, sizeof *s);
}

// ---- set-up ------------------------------------------------------------------------------------

void trainer_options(const TrainConfig *c, const Dataset *train, TrainerOptions *o) {
    memset(o, 0, sizeof *o);
    o->micro_batch = (size_t)c->micro_batch_size;
    o->accumulation = (size_t)c->gradient_accumulation_steps;
    o->seq_len = (size_t)c->sequence_len;
    o->acts_mode = c->gradient_checkpointing ? ACTS_CHECKPOINT : ACTS_TRAIN;
    o->shuffle = c->shuffle;
    o->pack = c->sample_packing;
    o->seed = (uint64_t)c->seed;
    o->lora_dropout = c->method == METHOD_FULL ? 0.0f : (float)c->lora_dropout;
    o->max_grad_norm = (float)c->max_grad_norm;
    o->adamw = (AdamWConfig){(float)c->learning_rate, (float)c->adam_beta1, (float)c->adam_beta2,
                             (float)c->adam_epsilon, (float)c->weight_decay};
    o->learning_rate = c->learning_rate;
    o->schedule = c->lr_scheduler;
    // an epoch is counted in one rank's steps (data parallel runs cover it sooner)
    DataPlan plan;
    data_plan(&plan, train, o->pack, o->seq_len, false, 0, 0);  // the same number of rows every epoch
    const size_t per_step = o->micro_batch * o->accumulation, n_rows = plan.n_rows;
    data_plan_free(&plan);
    const long steps_per_epoch = (long)((n_rows + per_step - 1) / per_step);
    o->total_steps = c->max_steps > 0 ? c->max_steps : steps_per_epoch * c->num_epochs;
    o->warmup = c->warmup_steps > 0 ? c->warmup_steps : (long)ceil(c->warmup_ratio * (double)o->total_steps);
}

void trainer_init(Trainer *t, Model *model, LoraSet *lora, const Dataset *data, Dist dist,
                  const TrainerOptions *o) {
    memset(t, 0, sizeof *t);
    t->model = model;
    t->lora = lora;
    t->data = data;
    t->dist = dist;
    t->opt = *o;
    set_init(&t->set, model, lora);
    const size_t per_step = o->accumulation * (size_t)dist.size;
    data_plan(&t->plan, data, o->pack, o->seq_len, o->shuffle, o->seed, 0);
    t->acts = acts_create(model, lora, o->micro_batch, o->seq_len, o->acts_mode);
    t->tokens = xmalloc(o->micro_batch * o->seq_len * sizeof(int));
    t->targets = xmalloc(o->micro_batch * o->seq_len * sizeof(int));
    t->pos = xmalloc(o->micro_batch * o->seq_len * sizeof(int));
    t->mb_first = xmalloc(per_step * sizeof(size_t));
    t->mb_size = xmalloc(per_step * sizeof(size_t));
}

void trainer_free(Trainer *t) {
    set_free(&t->set);
    acts_free(t->acts);
    data_plan_free(&t->plan);
    free(t->tokens);
    free(t->targets);
    free(t->pos);
    free(t->mb_first);
    free(t->mb_size);
    memset(t, 0, sizeof *t);
}

void trainer_set_position(Trainer *t, long step, size_t epoch, size_t cursor) {
    t->step = step;
    t->epoch = epoch;
    t->cursor = cursor;
    data_plan_free(&t->plan);
    data_plan(&t->plan, t->data, t->opt.pack, t->opt.seq_len, t->opt.shuffle, t->opt.seed, epoch);
}

// ---- the step ----------------------------------------------------------------------------------

// Plan the step's micro-batches (rows of the epoch's plan) from the data position (cut short at
// the end of an epoch) into mb_first/mb_size and advance the cursor; returns their number and sets
// *pred to the step's predicted tokens and *tokens to its tokens (all ranks).
static size_t plan_micro_batches(Trainer *t, size_t *pred, size_t *tokens) {
    const Dataset *d = t->data;
    const DataPlan *p = &t->plan;
    const size_t n_rows = p->n_rows, B = t->opt.micro_batch;
    const size_t per_step = t->opt.accumulation * (size_t)t->dist.size;
    size_t n_mb = 0;
    *pred = *tokens = 0;
    for (size_t k = 0; k < per_step && t->cursor < n_rows; k++) {
        const size_t b = n_rows - t->cursor < B ? n_rows - t->cursor : B;
        t->mb_first[n_mb] = t->cursor;
        t->mb_size[n_mb++] = b;
        for (size_t j = p->first[t->cursor]; j < p->first[t->cursor + b]; j++) {
            *pred += d->ex[p->ex[j]].n_predicted;
            *tokens += d->ex[p->ex[j]].len;
        }
        t->cursor += b;
    }
    return n_mb;
}

// Zero the gradients, then forward and backward of this rank's micro-batches (k = rank,
// rank + size, ...) of the next step, the gradients and losses summed over the ranks;
// advances the data position (and the epoch). Returns the mean loss per predicted token.
static double step_gradients(Trainer *t, StepResult *out) {
    memset(t->set.grads, 0, t->set.grads_len * sizeof(float));
    size_t total_pred;
    const size_t n_mb = plan_micro_batches(t, &total_pred, &out->tokens);
    double loss_sum = 0;
    size_t count = 0;
    for (size_t k = (size_t)t->dist.rank; k < n_mb; k += (size_t)t->dist.size) {
        size_t pred = 0;
        const size_t T = data_batch_rows(t->data, &t->plan, t->mb_first[k], t->mb_size[k], t->tokens, t->targets,
                                         t->pos, &pred);
        acts_set_positions(t->acts, t->opt.pack ? t->pos : NULL);  // without packing: position t, as before
        TrainCtx tc = {.lora_dropout = t->opt.lora_dropout,
                       .dropout_seed = t->opt.seed * 0x9E3779B97F4A7C15ull + (uint64_t)t->step * 1000 + k,
                       .full_grads = t->lora ? NULL : t->set.grad_ptrs};
        loss_sum += model_forward_backward(t->model, t->lora, t->acts, t->tokens, t->targets, t->mb_size[k], T,
                                           1.0f / (float)total_pred, &tc, &count);
    }
    if (t->cursor >= t->plan.n_rows) {  // next epoch
        t->epoch++;
        t->cursor = 0;
        data_plan_free(&t->plan);
        data_plan(&t->plan, t->data, t->opt.pack, t->opt.seq_len, t->opt.shuffle, t->opt.seed, t->epoch);
    }
    if (t->dist.size > 1) {  // sum gradients and losses over the ranks
        const double t0 = time_now();
        dist_sum_floats(t->set.grads, t->set.grads_len);
        loss_sum = dist_sum_double(loss_sum);
        out->comm_time = time_now() - t0;
    }
    return loss_sum / (double)total_pred;
}

// True if x[0..n) holds no NaN or Inf (a parallel, branch-free scan of the exponent bits).
static bool all_finite(const float *x, size_t n) {
    size_t bad = 0;
    #pragma omp parallel for schedule(static) reduction(+ : bad) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        bad += (u & 0x7f800000u) == 0x7f800000u;
    }
    return bad == 0;
}

bool trainer_first_bad_state(const Trainer *t, char *out, size_t cap) {
    const TrainableSet *s = &t->set;
    if (all_finite(s->moments, 2 * s->grads_len) && (s->flat ? all_finite(s->params, s->grads_len) : true)) {
        if (s->flat) return false;
        bool params_ok = true;  // method full: the model's own arrays, one by one
        for (size_t i = 0; params_ok && i < s->n_tensors; i++) params_ok = all_finite(s->t[i].p, s->t[i].n);
        if (params_ok) return false;
    }
    for (size_t i = 0; i < s->n_tensors; i++) {  // something is not finite: name the first
        const Trainable *e = &s->t[i];
        const char *kind = quant_find_nonfinite(e->p, e->n) < e->n   ? ""
                           : quant_find_nonfinite(e->m, e->n) < e->n ? "exp_avg."
                           : quant_find_nonfinite(e->v, e->n) < e->n ? "exp_avg_sq."
                                                                     : NULL;
        if (kind) return snprintf(out, cap, "%s%s", kind, e->name), true;
    }
    return false;
}

// The name of the first tensor holding a NaN/Inf gradient into out ("" if none).
static void first_bad_gradient(const Trainer *t, char *out, size_t cap) {
    out[0] = '\0';
    for (size_t i = 0; i < t->set.n_tensors; i++)
        if (quant_find_nonfinite(t->set.t[i].g, t->set.t[i].n) < t->set.t[i].n) {
            snprintf(out, cap, "%s", t->set.t[i].name);
            return;
        }
}

// Clip the gradients to max_grad_norm, then AdamW at this step's learning rate; the
// non-finite guards before (loss, gradient norm) and after (parameters, moments). The
// norm is summed per tensor (its rounding is the reference tests'); the elementwise work
// runs over whole blocks where the set is flat, which gives the same bits with one
// parallel region instead of one per tensor.
static StepStatus step_update(Trainer *t, StepResult *out) {
    const TrainableSet *s = &t->set;
    double sq = 0;
    for (size_t i = 0; i < s->n_tensors; i++) sq += grad_sq_sum(s->t[i].g, s->t[i].n);
    out->grad_norm = sqrt(sq);
    if (!isfinite(out->loss) || !isfinite(out->grad_norm)) {
        first_bad_gradient(t, out->bad, sizeof out->bad);
        return STEP_NONFINITE_GRADIENT;
    }
    const float clip = clip_factor(out->grad_norm, t->opt.max_grad_norm);
    scale_inplace(s->grads, s->grads_len, clip);  // padding between tensors is zero
    out->lr = t->opt.learning_rate * lr_factor(t->opt.schedule, t->step, t->opt.warmup, t->opt.total_steps);
    AdamWConfig ac = t->opt.adamw;
    ac.lr = (float)out->lr;
    t->step++;
    if (s->flat)
        adamw_step(s->params, s->grads, s->moments, s->moments + s->grads_len, s->grads_len, &ac, t->step,
                   s->n_tensors ? s->t[0].decay : true);
    else
        for (size_t i = 0; i < s->n_tensors; i++)
            adamw_step(s->t[i].p, s->t[i].g, s->t[i].m, s->t[i].v, s->t[i].n, &ac, t->step, s->t[i].decay);
    return trainer_first_bad_state(t, out->bad, sizeof out->bad) ? STEP_NONFINITE_STATE : STEP_OK;
}

StepStatus train_step(Trainer *t, StepResult *out) {
    memset(out, 0, sizeof *out);
    const double t0 = time_now();
    out->loss = step_gradients(t, out);
    const double t1 = time_now();
    out->status = step_update(t, out);
    out->t_gradients = t1 - t0;
    out->t_update = time_now() - t1;
    return out->status;
}

double trainer_eval_loss(Trainer *t, const Dataset *val) {
    const size_t B = t->opt.micro_batch;
    if (arrlenu(val->ex) == 0) return NAN;
    DataPlan plan;
    data_plan(&plan, val, t->opt.pack, t->opt.seq_len, false, 0, 0);
    double total = 0;
    size_t count = 0;
    for (size_t i = 0; i < plan.n_rows; i += B) {
        size_t b = plan.n_rows - i < B ? plan.n_rows - i : B, pred = 0;
        size_t T = data_batch_rows(val, &plan, i, b, t->tokens, t->targets, t->pos, &pred);
        acts_set_positions(t->acts, t->opt.pack ? t->pos : NULL);
        total += model_forward(t->model, t->lora, t->acts, t->tokens, t->targets, b, T, &count, NULL);
    }
    acts_set_positions(t->acts, NULL);
    data_plan_free(&plan);
    return count ? total / (double)count : NAN;
}
