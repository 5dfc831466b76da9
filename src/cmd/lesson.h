// cmd/lesson.h: what the parts of `qlora explain` share. The lesson has nine sections, each
// written by one function into one Doc (doc.h) that becomes both the terminal text and the
// HTML page:
//   explain.c        options, loading the model, the job and its data, the page; helpers
//   explain_quant.c  1 how a number is stored, 2 memory, 3 INT8, 4 NF4
//   explain_model.c  5 quantizing a real model, 6 LoRA, 7 one training step traced
//   explain_run.c    8 a live mini-run, 9 the QLoRA paper's claims
// Every number comes from qlora's own code at run time (quant.c, memory.c, the model loader,
// lora.c, the trainer); the options below are the inputs, and changing one changes the page.
#ifndef QLORA_CMD_LESSON_H
#define QLORA_CMD_LESSON_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "data.h"
#include "doc.h"
#include "lora.h"
#include "memory.h"
#include "model.h"
#include "tokenizer.h"

typedef struct {
    const char *out;    // write DIR/index.html (NULL: terminal only)
    const char *model;  // the real model of sections 4-8
    const char *job;    // the job file of the training sections (its data, LoRA and optimizer)
    long steps;         // steps of the mini-run (section 8)
    size_t blocksize;   // quantization block size (sections 3-8)
    double number;      // the value stored in section 1
    double params;      // the parameter count of section 2's table
} ExplainArgs;

typedef struct {
    ExplainArgs a;
    Doc doc;
    TrainConfig job;    // the job file, with base_model, quant_blocksize and max_steps from the options
    long job_steps;     // the job file's own max_steps (what `make demo` runs)
    Model fp32;         // the model with fp32 linears
    Model q;            // the model stored as the job says (NF4 + double quant for the demo)
    Tokenizer *tok;
    Dataset train, val;
    char matrix_name[160];    // section 4's matrix: the largest linear of block 0 ("h.0.mlp.c_fc")
    int matrix_t;             // its linear index
    double nf4_mae, fp4_mae, int4_mae;  // section 4's errors on it (for section 9)
} Lesson;

// The sections, in order.
void explain_numbers(Lesson *l);
void explain_memory(Lesson *l);
void explain_int8(Lesson *l);
void explain_nf4(Lesson *l);
void explain_real_model(Lesson *l);
void explain_lora(Lesson *l);
void explain_step(Lesson *l);
void explain_run(Lesson *l);
void explain_paper(Lesson *l);

// memory.c's prediction for a preset shape (memory.h's names) with LoRA rank r on every
// linear, batch 1 x T, gradient checkpointing and blocks of bs: the one place the lesson
// calls the memory model.
typedef struct {
    double params, linear_params, lora_params;
    MemRow rows[MEM_N_METHODS];
} Prediction;
void explain_predict(const char *preset, int r, size_t T, size_t bs, Prediction *p);

// A model's linear t of block 0 as a fp32 [out, in] matrix (the Lesson's fp32 model).
const float *explain_matrix(const Lesson *l, int t, size_t *out, size_t *in);
// Mean loss per predicted token of model m (with lora, or NULL) over the first n_max examples
// of data (all of them if fewer), in batches of B; *tokens receives the predicted tokens.
double explain_eval(const Model *m, const LoraSet *lora, const Dataset *data, size_t n_max, size_t B,
                    size_t *tokens);
// The job's LoRA adapter on model m: its rank, alpha, dropout, targets and seed.
void explain_make_adapter(const Lesson *l, const Model *m, LoraSet *lora);
// A count for prose: "1,878,336", "124.4 million", "6.738 billion". Returns buf.
const char *explain_count(double n, char *buf, size_t cap);
// The targets of the job as a list of module names ("c_attn, c_proj, c_fc") into buf.
void explain_targets(const Lesson *l, char *buf, size_t cap);

#endif
