// checkpoint.h: training checkpoints, OUTPUT_DIR/checkpoint-N/ folders that let a stopped
// run continue exactly where it was: the weights a user loads (the PEFT adapter, or for
// method full the model folder), optimizer.safetensors (AdamW's exp_avg.NAME and
// exp_avg_sq.NAME for every trainable tensor), trainer_state.json (step, epoch, cursor,
// schedule, and what the run depends on) and job.yaml (the resolved job). A checkpoint
// appears whole or not at all (written under a temporary name, then renamed); see
// docs/training.md, "Checkpoints and resuming".
// Not here: the step and its state (trainer.c), the job keys (config.c).
#ifndef QLORA_CHECKPOINT_H
#define QLORA_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "trainer.h"
#include "util.h"

// What a user loads from dir (which must exist): the adapter (adapter_config.json +
// adapter_model.safetensors), or for method full the model folder made from c->base_model.
bool checkpoint_save_weights(const TrainConfig *c, const Trainer *t, const char *dir, Error *err);

// Write c->output_dir/checkpoint-STEP for trainer t (replacing an older one of that step
// only once the new one is complete). On success its path replaces *saved (a malloc'ed string
// or NULL, freed here); on failure *saved is left as it was.
bool checkpoint_save(const TrainConfig *c, const Trainer *t, char **saved, Error *err);

// The path of the newest complete checkpoint-N folder of dir (N all digits, holding
// trainer_state.json) as a new string; NULL if there is none.
char *checkpoint_latest(const char *dir);

// Before anything is loaded from ckpt: it was made by a job with the same method and the
// same inputs and settings it depends on (base model, quantization, adapter shape, seed,
// dataset); false + err naming the first difference.
bool checkpoint_check_job(const char *ckpt, const TrainConfig *c, Error *err);

// Restore the data position, step count and AdamW moments of ckpt into t (whose trainable
// table must match the checkpoint's: same names and sizes).
bool checkpoint_load_state(const char *ckpt, Trainer *t, Error *err);

// After a killed run: remove dir's half-written checkpoint-N.tmp-* folders and turn a
// complete checkpoint-N.old-* back into checkpoint-N when that is missing (printing so).
void checkpoint_clean_stale(const char *dir);

#endif
