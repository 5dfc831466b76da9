// config.h: the training job file. A flat YAML mapping (libyaml) with axolotl's key names,
// plus `--set key=value` overrides parsed the same way. Every key has a type, a default
// and a range, all in one table (config.c) that also produces the key reference
// (`qlora train --list-keys`, configs/README.md). Unknown keys, wrong types and
// out-of-range values are errors naming FILE:LINE and, for a typo, the closest key.
// Not here: running the job (cmd/train.c, trainer.c).
#ifndef QLORA_CONFIG_H
#define QLORA_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "chat_data.h"
#include "optim.h"
#include "quant.h"
#include "util.h"

#define CFG_MAX_TARGETS 8
#define CFG_MAX_ROLES 4

// The choice-valued keys are enums, decided once when the job is read; the spellings of
// their values (the order of each list below) are the job file's.
typedef enum { METHOD_QLORA, METHOD_LORA, METHOD_FULL } TrainMethod;  // qlora | lora | full
typedef enum { BF16_AUTO, BF16_TRUE, BF16_FALSE } Bf16Mode;          // auto | true | false
// train_on_eos (chat_data.h's ChatEos): turn | all | none | last
const char *train_method_name(TrainMethod m);
const char *bf16_mode_name(Bf16Mode b);

// The six path keys (base_model, dataset, val_dataset, output_dir, lora_model_dir,
// resume_from_checkpoint) are malloc'ed strings of any length, "" when unset, never NULL after
// config_defaults; config_free releases them. A TrainConfig has one owner: copy none.
typedef struct {
    char *base_model;
    char *dataset;
    char dataset_format[16];      // "text" | "jsonl" | "chat_template" | "alpaca" | "" (by file extension)
    char chat_template[32];       // tokenizer_default | chatml | llama3 | mistral | zephyr | alpaca
    char roles_to_train[CFG_MAX_ROLES][16];  // chat_template: the roles whose contents are trained
    int n_roles_to_train;
    ChatEos train_on_eos;         // chat_template: which end-of-turn texts are trained
    bool drop_long;               // leave out examples longer than sequence_len (else cut them)
    double val_set_size;          // < 1: fraction of the training examples; >= 1: a count
    char *val_dataset;
    char *output_dir;
    TrainMethod method;
    QuantType quant;              // nf4 | fp4 | int8 | none (qlora only)
    bool double_quant;
    long quant_blocksize;
    long lora_r;
    double lora_alpha;
    double lora_dropout;
    char lora_target_modules[CFG_MAX_TARGETS][32];
    int n_lora_target_modules;
    bool lora_target_linear;      // axolotl's switch for all linear layers
    bool use_rslora;
    char *lora_model_dir;
    long sequence_len;
    long micro_batch_size;
    long gradient_accumulation_steps;
    long num_epochs;
    long max_steps;
    double learning_rate;
    LrSchedule lr_scheduler;      // constant | linear | cosine
    long warmup_steps;
    double warmup_ratio;
    double weight_decay;
    double adam_beta1, adam_beta2, adam_epsilon;
    double max_grad_norm;
    bool train_on_inputs;
    bool sample_packing;          // several examples per sequence_len row (data.h, DataPlan)
    bool shuffle;
    long seed;
    long logging_steps;
    long eval_steps;
    long save_steps;
    char *resume_from_checkpoint;
    long threads;
    bool gradient_checkpointing;
    Bf16Mode bf16;                // frozen weights' products in bf16
} TrainConfig;

// Every key's default into c (whose earlier contents are not freed: call config_free first).
void config_defaults(TrainConfig *c);
// Release what c holds (its path strings); c is then all zero.
void config_free(TrainConfig *c);
// Set path key field (&c->output_dir, ...) to a copy of value.
void config_set_path(char **field, const char *value);
// Read path (YAML) into c (on top of its current values).
bool config_load(TrainConfig *c, const char *path, Error *err);
// The same from text[0..len); origin names it ("FILE") in FILE:LINE messages.
bool config_load_text(TrainConfig *c, const char *text, size_t len, const char *origin, Error *err);
// Apply one "key=value" override (value is YAML: a scalar or a [flow, list]).
bool config_set(TrainConfig *c, const char *assignment, Error *err);
// Cross-key checks after everything is applied (e.g. required keys, method vs quant).
bool config_validate(const TrainConfig *c, Error *err);
// Print the key reference (name, type, default, range, meaning) as a Markdown table.
void config_print_keys(FILE *fp);
// Write c as YAML (every key), for checkpoints and reports.
void config_write_yaml(const TrainConfig *c, FILE *fp);

#endif
