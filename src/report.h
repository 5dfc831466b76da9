// report.h: what a finished training run reports about itself: the memory account (the
// trainer's own allocations by category next to `qlora memory`'s prediction for the same
// job) and OUTPUT_DIR/report.html (loss, eval-loss, learning-rate and speed curves from
// metrics.jsonl, the memory account, the job's settings).
// Not here: the per-step log lines (cmd/train.c), the SVG primitives (svg.c).
#ifndef QLORA_REPORT_H
#define QLORA_REPORT_H

#include <stdbool.h>

#include "config.h"
#include "trainer.h"
#include "util.h"

// The memory account of trainer t running job c: per category (REPORT_MEM_CATEGORY), the bytes
// the trainer allocated next to `qlora memory`'s prediction for the same job (memory.h).
enum { REPORT_MEM_N = 6 };
extern const char *const REPORT_MEM_CATEGORY[REPORT_MEM_N];
typedef struct {
    const char *method;  // the prediction's row: "qlora nf4+dq", "lora fp32 base", ...
    double measured[REPORT_MEM_N], predicted[REPORT_MEM_N];
} MemAccount;
MemAccount report_memory_account(const TrainConfig *c, const Trainer *t);

// Print the memory account of trainer t running job c, one line per category.
void report_print_memory(const TrainConfig *c, const Trainer *t);

// Write c->output_dir/report.html (atomically) from c->output_dir/metrics.jsonl and t.
bool report_write_html(const TrainConfig *c, const Trainer *t, Error *err);

#endif
