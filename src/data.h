// data.h: datasets for training and evaluation. A file becomes a list of examples, each a
// token array with a label per token (-1 = not predicted):
//   text   the whole file tokenized as one text (below), cut into sequence_len windows;
//          every token is a label;
//   jsonl  one JSON object per line: {"text": s}, {"prompt": p, "completion": c} (labels on
//          the completion and its EOS only, unless train_on_inputs), or {"input_ids": [...]}
//          (pre-tokenized, optional "labels" with -100 = ignored);
//   chat_template  one conversation per line, rendered with a chat template and labelled on
//          the trained roles' contents and end-of-turn text (chat_data.h);
//   alpaca  one {"instruction", "input", "output"} per line in axolotl's Alpaca prompt, as a
//          prompt/completion pair (chat_data.h, chat_alpaca_prompt).
// Longer examples are truncated to sequence_len, or with drop_long left out (both counted). A
// bad line is an error naming FILE:LINE; blank lines are the only lines skipped.
// A text is tokenized as transformers + axolotl do it (docs/training.md, "Datasets"): the
// tokenizer's post-processor (Llama 2's BOS before the text; nothing for GPT-2, SmolLM2, Qwen2),
// the text, then the tokenizer's EOS (tok_eos; GPT-2's <|endoftext|>). A prompt gets the
// post-processor's BOS and no EOS; its completion no BOS and the EOS.
// Batches take examples in a per-epoch order (seeded shuffle or file order), pad to the
// longest example of the batch, and set targets[t] = label of token t+1.
// Not here: tokenization (tokenizer.h), the model (model.c).
#ifndef QLORA_DATA_H
#define QLORA_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat_data.h"
#include "tokenizer.h"
#include "util.h"

typedef struct {
    int *ids;     // [len], owned
    int *labels;  // [len], -1 where not predicted, owned
    size_t len;
    size_t n_predicted;  // labels at positions >= 1 that are not -1 (what the loss counts)
    size_t line;         // the jsonl line it came from (0: a text file's window)
} Example;

typedef struct {
    Example *ex;  // stb_ds array
    size_t n_truncated;
    size_t n_dropped;  // longer than sequence_len, left out (drop_long)
    size_t n_tokens;
} Dataset;

typedef struct {
    const char *format;    // "text", "jsonl", "chat_template", "alpaca" or "" (by extension)
    size_t seq_len;
    bool train_on_inputs;
    int vocab_size;        // pre-tokenized ids must be below this
    bool drop_long;        // leave out examples longer than seq_len instead of cutting them
    const ChatOptions *chat;  // chat_template: the template, roles and end-of-turn labels (borrowed)
} DataOptions;

bool data_load(Dataset *d, const char *path, Tokenizer *tok, const DataOptions *o, Error *err);
// The same from text[0..len) (o->format must say "text" or "jsonl"); name stands for the
// path in FILE:LINE messages.
bool data_load_text(Dataset *d, const char *text, size_t len, const char *name, Tokenizer *tok,
                    const DataOptions *o, Error *err);
void data_free(Dataset *d);
// Move a seeded random subset of train into val: n_val = size < 1 ? round(size * n) : size.
// Errors if that leaves train empty.
bool data_split(Dataset *train, Dataset *val, double size, uint64_t seed, Error *err);

// The order of examples in `epoch`: a seeded Fisher-Yates permutation, or 0..n-1.
void data_epoch_order(size_t n, bool shuffle, uint64_t seed, size_t epoch, size_t *order);

// Build a batch from examples order[first .. first+B) (B may be cut short by the caller):
// tokens/targets are (B, T_batch) with T_batch = the longest example; padding has token
// 0 and target -1. Returns T_batch and adds the predicted-token count to *n_predicted.
size_t data_batch(const Dataset *d, const size_t *order, size_t first, size_t B, int *tokens,
                  int *targets, size_t *n_predicted);

// The text of example e as tok decodes it, with every run of trained tokens (a label at position
// >= 1) between DATA_MARK_OPEN and DATA_MARK_CLOSE, appended to the stb_ds *out (no NUL): what
// `qlora train --preview` prints. The text is decoded as one list (tok_stream), so a marker sits
// between two tokens' text, except that a character split across tokens comes out whole after
// the later one.
#define DATA_MARK_OPEN "[["
#define DATA_MARK_CLOSE "]]"
void data_example_text(const Tokenizer *tok, const Example *e, char **out);

// An epoch's rows: row r holds the examples ex[first[r] .. first[r+1]) (indices into Dataset.ex)
// back to back. Without packing every row is one example, in data_epoch_order's order. With
// sample packing (docs/training.md, "Sample packing") the epoch's examples, in that order, are
// placed first-fit decreasing into rows of capacity seq_len: longest first (equal lengths in epoch
// order), each into the first row it fits, a new row when none does; then the rows are shuffled
// with the epoch's seed (or kept in that order without shuffle). The number of rows depends only on
// the examples' lengths, so it is the same every epoch.
typedef struct {
    size_t *ex;     // [n examples] row after row, owned
    size_t *first;  // [n_rows + 1], owned
    size_t n_rows;
} DataPlan;

// The plan of `epoch` for d (every example at most seq_len tokens with pack: CHECKed).
void data_plan(DataPlan *p, const Dataset *d, bool pack, size_t seq_len, bool shuffle, uint64_t seed, size_t epoch);
void data_plan_free(DataPlan *p);

// Build a batch from rows [first, first + B) of p: tokens, targets and positions are (B, T_batch)
// with T_batch = the longest row. In a row each example's tokens follow the previous one's, its
// positions restart at 0 (what acts_set_positions takes) and its targets are its own next tokens'
// labels (its last token's -1: no target crosses into the next example); padding after a row's
// examples has token 0, target -1 and positions 0, 1, ... of its own. Returns T_batch and adds the
// predicted tokens to *n_predicted.
size_t data_batch_rows(const Dataset *d, const DataPlan *p, size_t first, size_t B, int *tokens, int *targets,
                       int *pos, size_t *n_predicted);

#endif
