// cmd/model_args.h: what eval and generate share: the options that name a model folder and
// how to hold its weights (one option group, MODEL_OPTIONS), the option parsers for
// --blocksize and --bf16 (quantize uses the first), and loading what the options name with
// the two lines on stderr that say what was loaded. Commands only: the loaders report bad
// input themselves and exit (die_error).
#ifndef QLORA_CMD_MODEL_ARGS_H
#define QLORA_CMD_MODEL_ARGS_H

#include "cmd/cli.h"
#include "lora.h"
#include "model.h"
#include "tokenizer.h"

typedef struct {
    const char *model_dir, *adapter_dir;
    const char *quant;       // none | nf4 | fp4 | int8
    size_t blocksize;
    bool no_double_quant;
    long threads;            // 0 = leave the default (OMP_NUM_THREADS or all cores)
    bool bf16;               // the frozen weights' products in bf16 (bgemm.h)
} ModelArgs;

// --model (required), --adapter, --quant, --blocksize, --no-double-quant, --threads, --bf16:
// a CLI_GROUP table for a ModelArgs member.
extern const CliOption MODEL_OPTIONS[];
// The defaults: nf4, blocks of QUANT_DEFAULT_BLOCK, double quantization, fp32 products.
ModelArgs model_args_default(void);
// The QuantConfig the options describe.
QuantConfig model_args_quant(const ModelArgs *a);

// CliCallFn for --blocksize into a size_t: a power of two in [QUANT_MIN_BLOCK, QUANT_MAX_BLOCK].
bool cli_parse_blocksize(const char *opt, const char *value, void *field, Error *err);

// Load model folder dir's tokenizer (tokenizer.json, else vocab.json + merges.txt: tok_load_dir).
// With the folder's config cfg (NULL: no checks): refuse a tokenizer larger than cfg->vocab_size,
// and where the tokenizer's files name no BOS / EOS, take config.json's bos_token_id /
// eos_token_id (tok_set_missing_specials). Exits on bad input.
Tokenizer *cmd_load_tokenizer(const char *dir, const GPT2Config *cfg);
// Load the model (and the adapter, if any; *has_lora says) as a says, set the thread count,
// and print what was loaded to stderr. Exits on bad input.
void cmd_load_model(const ModelArgs *a, Model *m, LoraSet *lora, bool *has_lora);
// The whole file at path, NUL-terminated (free() it); *len excludes the NUL. Exits on failure.
char *cmd_read_text(const char *path, size_t *len);

#endif
