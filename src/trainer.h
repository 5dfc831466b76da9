// trainer.h: the training step, the one that `qlora train` runs and `qlora bench` times:
// the step's micro-batches (this rank's share), forward and backward, the all-reduce of the
// gradients, the non-finite guard, global-norm clipping, the learning-rate schedule and
// AdamW; and the table of trainable tensors it updates, with their gradients and AdamW
// moments carved from single allocations. The data position (epoch, cursor, per-epoch
// order) lives here too, so a step is a pure function of the trainer's state.
// Not here: the job file (config.c), checkpoints (checkpoint.c), logging and the command
// (cmd/train.c), the model's maths (model.h), AdamW itself (optim.c).
#ifndef QLORA_TRAINER_H
#define QLORA_TRAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "data.h"
#include "dist.h"
#include "lora.h"
#include "model.h"
#include "optim.h"

// One trainable tensor. p is the model's or the adapter's own array; g, m, v are slices
// of the set's gradient and moment blocks (each slice 64-byte aligned).
typedef struct {
    char name[160];  // the name checkpoints and messages use (PEFT key, or the hub's name)
    float *p, *g, *m, *v;
    size_t n;
    bool decay;      // AdamW's weight decay applies
} Trainable;

// Every trainable tensor of a run: the LoRA matrices (grads in the adapter's own
// contiguous array) or, for method full, the model's parameters in model_params() order.
typedef struct {
    Trainable *t;       // [n_tensors], owned
    size_t n_tensors;
    size_t n_params;    // sum of the tensors' n
    float *grads;       // the contiguous gradient array all g point into (zeroed per step)
    size_t grads_len;   // its length in floats (with alignment padding)
    float *moments;     // owned: [2 * grads_len], m then v, each laid out like grads
    bool flat;          // p, g, m, v of every tensor sit at the same offsets of four blocks
                        // (params, grads, and the two halves of moments) and share one decay:
                        // the LoRA set. Elementwise updates then run over whole blocks.
    float *params;      // with flat: the parameter block (the adapter's own array)
    float *own_grads;   // owned gradient block (method full); NULL when the adapter holds them
    float **grad_ptrs;  // [n_tensors] g in order: TrainCtx.full_grads for method full
} TrainableSet;

// The settings the step uses, taken from the job (trainer_options) or chosen by bench.
typedef struct {
    size_t micro_batch;     // examples per micro-batch
    size_t accumulation;    // micro-batches per step and rank
    size_t seq_len;         // the longest example a batch can hold
    ActsMode acts_mode;     // ACTS_TRAIN or ACTS_CHECKPOINT
    bool shuffle;
    bool pack;              // sample packing: rows of several examples (data.h, DataPlan)
    uint64_t seed;          // shuffling and LoRA dropout masks
    float lora_dropout;
    float max_grad_norm;
    AdamWConfig adamw;      // lr is set per step from learning_rate and the schedule
    double learning_rate;
    LrSchedule schedule;
    long total_steps, warmup;
} TrainerOptions;

typedef struct {
    Model *model;
    LoraSet *lora;          // NULL: method full, the model's own parameters are trained
    const Dataset *data;    // training examples (not owned)
    Dist dist;
    TrainerOptions opt;
    TrainableSet set;
    Acts *acts;             // owned
    long step;              // optimizer steps done
    size_t epoch, cursor;   // position of the next micro-batch: a row of this epoch's plan
    DataPlan plan;          // this epoch's rows (one example each without packing), owned
    int *tokens, *targets, *pos;  // [micro_batch * seq_len] batch buffers, owned
    size_t *mb_first, *mb_size;  // [accumulation * ranks] the step's micro-batches, owned
} Trainer;

// Why a step stopped without an update being kept.
typedef enum { STEP_OK, STEP_NONFINITE_GRADIENT, STEP_NONFINITE_STATE } StepStatus;

// What one step did.
typedef struct {
    StepStatus status;
    double loss;         // mean over the step's predicted tokens (all ranks)
    double grad_norm;    // before clipping
    double lr;           // the learning rate applied (0 if the step failed before the update)
    size_t tokens;       // tokens of the whole step (all ranks, padding excluded)
    double t_gradients;  // seconds: batches, forward/backward, all-reduce
    double t_update;     // seconds: clipping, AdamW and the non-finite checks
    double comm_time;    // seconds of the all-reduce (0 with one rank)
    // on failure: the first tensor with a non-finite gradient ("" = the loss itself), or
    // the first parameter / moment made non-finite (moments prefixed exp_avg. / exp_avg_sq.)
    char bad[200];
} StepResult;

// The step settings of job c for the training examples train: total steps from max_steps or
// num_epochs (an epoch is the rows of its plan: fewer with sample_packing), warm-up from
// warmup_steps or warmup_ratio, the schedule parsed.
void trainer_options(const TrainConfig *c, const Dataset *train, TrainerOptions *o);

// Set up a trainer over model (and lora, NULL for method full; lora's gradients are
// allocated here) on data: the trainable table, the activations, the first epoch's order.
// Everything stays borrowed except what the Trainer struct says it owns.
void trainer_init(Trainer *t, Model *model, LoraSet *lora, const Dataset *data, Dist dist,
                  const TrainerOptions *o);
void trainer_free(Trainer *t);

// Continue from a checkpoint's position: step optimizer steps done, at row `cursor` of `epoch`'s
// plan (cursor < its number of rows, checked by the caller).
void trainer_set_position(Trainer *t, long step, size_t epoch, size_t cursor);

// One optimizer step. On STEP_OK the parameters and moments are updated and t->step
// advanced; otherwise out->bad names the culprit, and the state must not be saved (the
// data position has advanced; parameters may hold the failed update).
StepStatus train_step(Trainer *t, StepResult *out);

// Mean loss over every predicted token of val (in micro-batches of rows, packed as training packs
// them; no dropout), or NaN when val has none. Uses the trainer's activations and batch buffers.
double trainer_eval_loss(Trainer *t, const Dataset *val);

// The first trainable tensor holding a NaN/Inf in its parameters or moments, its name into
// out (moments prefixed exp_avg. / exp_avg_sq.); false if none.
bool trainer_first_bad_state(const Trainer *t, char *out, size_t cap);

#endif
