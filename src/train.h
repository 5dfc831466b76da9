// train.h: `qlora train JOB.yaml`: the training loop (batches, forward/backward, clipping,
// AdamW, schedule, evaluation, logging, checkpoints, resume) for methods qlora, lora and
// full. See config.h for the job keys and docs/training.md for the semantics.
#ifndef QLORA_TRAIN_H
#define QLORA_TRAIN_H

int cmd_train(int argc, char **argv);
int cmd_merge(int argc, char **argv);

#endif
