// gguf_vocab.h: a model folder's tokenizer as the tokenizer.ggml.* keys of a GGUF model file,
// in the form llama.cpp's own tokenizers read (docs/gguf.md, "Tokenizer"): the tokenizer qlora
// itself uses for the folder (tokenizer.h's tok_load_dir: tokenizer.json when there is one, else
// vocab.json + merges.txt), written so that llama.cpp splits a text into the same ids, or
// refused (status 2) with the reason where llama.cpp has no way to do that.
// Not here: the rest of the file (gguf_export.c), the format (gguf.c), encoding (tokenizer.c).
#ifndef QLORA_GGUF_VOCAB_H
#define QLORA_GGUF_VOCAB_H

#include <stdbool.h>

#include "gguf.h"
#include "model.h"
#include "util.h"

// What was written, for the command's report.
typedef struct {
    const char *model;   // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece-style)
    const char *pre;     // tokenizer.ggml.pre: the pre-tokenizer llama.cpp runs
    int n_tokens;        // tokens, the padding up to the embedding's rows included
    int n_merges;        // merges, in rank order ("llama" has scores instead)
    bool add_bos;        // tokenizer.ggml.add_bos_token
    bool chat_template;  // tokenizer.chat_template written
} GgufVocabInfo;

// Add dir's tokenizer to w for a model of config c (whose vocab_size rows the token list fills,
// padded with unused "[PAD<id>]" tokens as llama.cpp's converter pads, and whose bos_token_id /
// eos_token_id stand in where the tokenizer names none). Every file is untrusted: false with a
// one-line message naming the file and field, status 2; w may then hold some of the keys (the
// caller discards it). info is filled on success.
bool gguf_vocab_add(GgufWriter *w, const char *dir, const GPT2Config *c, GgufVocabInfo *info, Error *err);

#endif
