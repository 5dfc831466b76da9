// tokenizer.h: GPT-2 byte-level BPE (docs/formats.md, "GPT-2 tokenizer") from vocab.json + merges.txt.
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
// Not here: datasets (data.c), the model (model.c).
#ifndef QLORA_TOKENIZER_H
#define QLORA_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef struct Tokenizer Tokenizer;

// GPT-2's bytes_to_unicode: the NUL-terminated UTF-8 of the character that stands for byte
// b in vocab.json and merges.txt (printable bytes stand for themselves, the other 68 for
// U+0100 upwards in byte order). Returns the length (1 or 2).
int tok_byte_symbol(int b, char out[3]);

// Load vocab_path (JSON object token -> id, ids 0..n-1 each used once) and merges_path
// (optional "#version" line, then "A B" per line; rank = order). Checks that the 256 byte
// symbols exist and that every merge's parts and result are in the vocabulary.
bool tok_load(Tokenizer **out, const char *vocab_path, const char *merges_path, Error *err);
// The same from texts in memory; the names stand for the files in messages.
bool tok_load_memory(Tokenizer **out, const char *vocab, size_t vocab_len, const char *vocab_name,
                     const char *merges, size_t merges_len, const char *merges_name, Error *err);
void tok_free(Tokenizer *t);

int tok_vocab_size(const Tokenizer *t);
int tok_eot(const Tokenizer *t);  // id of "<|endoftext|>", or -1 if the vocab has none

// Append the ids of text[0..len) to the stb_ds int array *ids.
void tok_encode(Tokenizer *t, const char *text, size_t len, int **ids);

// Append the bytes of token id to the stb_ds char array *out (no NUL). id must be valid.
void tok_decode_append(const Tokenizer *t, int id, char **out);

// Split text[0..len) with the pre-tokenization regex; append each piece's [start, end)
// byte offsets to the stb_ds array *spans (pairs). For tests and teaching.
void tok_pretokenize(Tokenizer *t, const char *text, size_t len, size_t **spans);

#endif
