// gpt2_tokenizer.h: GPT-2 byte-level BPE (docs/formats.md, "GPT-2 tokenizer") from vocab.json + merges.txt.
//
// Encoding: split the text at every "<|endoftext|>" (a special token when the vocabulary
// has it), pre-tokenize each piece with GPT-2's regex (run by PCRE2 with Unicode
// properties), map each pre-token's UTF-8 bytes through bytes_to_unicode, merge adjacent
// symbols by merge rank (lowest first, every occurrence left to right) and look the
// symbols up in the vocabulary. Decoding concatenates token strings and maps the characters
// back to bytes, so decode(encode(s)) == s for any byte string, valid UTF-8 or not.
// Invalid UTF-8 bytes are split as one-byte characters that are neither letter, number
// nor space (they join runs of punctuation), which GPT-2's own Python code never sees.
// Works with any vocabulary that contains the 256 byte symbols, e.g. a byte-level vocab
// with an empty merges list.
// Not here: finding the files of a model folder and the interface the commands use
// (tokenizer.h), tokenizer.json (hf_tokenizer.h), datasets (data.c).
#ifndef QLORA_GPT2_TOKENIZER_H
#define QLORA_GPT2_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef struct Gpt2Tokenizer Gpt2Tokenizer;

// GPT-2's bytes_to_unicode: the NUL-terminated UTF-8 of the character that stands for byte
// b in vocab.json and merges.txt (printable bytes stand for themselves, the other 68 for
// U+0100 upwards in byte order). Returns the length (1 or 2).
int tok_byte_symbol(int b, char out[3]);

// Load a vocabulary (JSON object token -> id, ids 0..n-1 each used once) and merges (optional
// "#version" line, then "A B" per line; rank = order) from texts in memory; the names stand for
// the files in messages. Checks that the 256 byte symbols exist and that every merge's parts
// and result are in the vocabulary.
bool gpt2_tok_load_memory(Gpt2Tokenizer **out, const char *vocab, size_t vocab_len, const char *vocab_name,
                          const char *merges, size_t merges_len, const char *merges_name, Error *err);
void gpt2_tok_free(Gpt2Tokenizer *t);

int gpt2_tok_vocab_size(const Gpt2Tokenizer *t);
int gpt2_tok_eot(const Gpt2Tokenizer *t);  // id of "<|endoftext|>", or -1 if the vocab has none

// Append the ids of text[0..len) to the stb_ds int array *ids.
void gpt2_tok_encode(Gpt2Tokenizer *t, const char *text, size_t len, int **ids);

// Append the bytes of token id to the stb_ds char array *out (no NUL). id must be valid.
void gpt2_tok_decode_append(const Gpt2Tokenizer *t, int id, char **out);

// Split text[0..len) with the pre-tokenization regex; append each piece's [start, end)
// byte offsets to the stb_ds array *spans (pairs). For tests and teaching.
void gpt2_tok_pretokenize(Gpt2Tokenizer *t, const char *text, size_t len, size_t **spans);

#endif
