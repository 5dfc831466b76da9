// train.h: the commands `qlora train JOB.yaml` (the training run: cmd/train.c, over the
// step of trainer.h) and `qlora merge` (an adapter folded into the base weights:
// cmd/merge.c). See config.h for the job keys and docs/training.md for the semantics.
#ifndef QLORA_TRAIN_H
#define QLORA_TRAIN_H

int cmd_train(int argc, char **argv);
int cmd_merge(int argc, char **argv);

#endif
