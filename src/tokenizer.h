// tokenizer.h: the tokenizer of a model folder, whatever its kind; the one interface the commands
// and the datasets use. Two kinds sit behind it:
//   tokenizer.json (+ tokenizer_config.json)  Hugging Face's file (hf_tokenizer.h): SmolLM2, Qwen2,
//                                              Llama 2 / TinyLlama, Mistral, also GPT-2's hub folders
//   vocab.json + merges.txt                    GPT-2's byte-level BPE (gpt2_tokenizer.h)
// tok_load_dir takes tokenizer.json when the folder has one, as transformers' fast tokenizers do.
//
// Special tokens (docs/llama.md, "Tokenizer front"):
//   - encoding with add_special applies the file's post-processor, as transformers' tokenizer(text)
//     does by default: Llama 2 / TinyLlama put <s> before the text; SmolLM2, Qwen2 and GPT-2 add
//     nothing. tok_special_before / _after count the ids it puts before / after the text.
//   - tok_bos / tok_eos: tokenizer_config.json's bos_token / eos_token (null or absent: none); a
//     tokenizer.json folder without that file: bos = the token the post-processor puts before the
//     text, eos none. vocab.json + merges.txt: <|endoftext|> for both (GPT2Tokenizer's defaults).
//     tok_set_missing_specials fills the ones still missing (from config.json's ids).
// Ids are 0..tok_vocab_size-1. A tokenizer is not thread-safe (encoding fills caches): one per thread.
// Not here: reading BPE files (gpt2_tokenizer.c, hf_tokenizer.c), where BOS and EOS go in a
// training example (data.c), chat templates.
#ifndef QLORA_TOKENIZER_H
#define QLORA_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>

#include "gpt2_tokenizer.h"
#include "util.h"

typedef struct Tokenizer Tokenizer;

// The tokenizer of model folder dir: dir/tokenizer.json (with dir/tokenizer_config.json when
// that exists) if present, else dir/vocab.json + dir/merges.txt. Every file is untrusted: false
// with a one-line message naming the file (and the JSON field), status 2; *out stays NULL.
bool tok_load_dir(Tokenizer **out, const char *dir, Error *err);
// GPT-2's kind from vocab_path (JSON object token -> id) and merges_path ("A B" lines); see
// gpt2_tokenizer.h for what is checked.
bool tok_load(Tokenizer **out, const char *vocab_path, const char *merges_path, Error *err);
// The same from texts in memory; the names stand for the files in messages.
bool tok_load_memory(Tokenizer **out, const char *vocab, size_t vocab_len, const char *vocab_name,
                     const char *merges, size_t merges_len, const char *merges_name, Error *err);
// A tokenizer.json text (and a tokenizer_config.json text, or config NULL) in memory.
bool tok_load_json_memory(Tokenizer **out, const char *json, size_t json_len, const char *json_name,
                          const char *config, size_t config_len, const char *config_name, Error *err);
void tok_free(Tokenizer *t);

// The file the tokenizer was read from (tokenizer.json or vocab.json, as named at load), for messages.
const char *tok_path(const Tokenizer *t);
// Whether it came from a tokenizer.json (false: vocab.json + merges.txt).
bool tok_is_json(const Tokenizer *t);
int tok_vocab_size(const Tokenizer *t);
int tok_eot(const Tokenizer *t);  // id of "<|endoftext|>", or -1 if there is none
int tok_bos(const Tokenizer *t);  // -1: none (see the top of this file)
int tok_eos(const Tokenizer *t);  // -1: none
// Ids that encoding with add_special puts before / after the text (Llama 2: 1 and 0).
size_t tok_special_before(const Tokenizer *t);
size_t tok_special_after(const Tokenizer *t);
// Where tok_bos / tok_eos are -1, use bos / eos instead (config.json's bos_token_id /
// eos_token_id) when they are ids of the tokenizer; -1 or an id past tok_vocab_size (a padded
// embedding row, which no text encodes to) leaves them -1.
void tok_set_missing_specials(Tokenizer *t, int bos, int eos);

// Append the ids of text[0..len) to the stb_ds int array *ids; with add_special, the
// post-processor's special tokens too. A tokenizer.json tokenizer refuses text that is not valid
// UTF-8 and a text its regexes give up on: false (status 2) with "WHAT: byte N is not valid
// UTF-8 ...", what naming the text (a file, "FILE:LINE: \"prompt\""); *ids may then hold part of
// the result. GPT-2's kind encodes any bytes and never fails.
bool tok_encode_text(Tokenizer *t, const char *what, const char *text, size_t len, bool add_special, int **ids,
                     Error *err);
// tok_encode_text, also appending to the stb_ds array *spans two offsets per id appended: the bytes
// [start, end) of text the id stands for (where a label boundary falls in a rendered chat). GPT-2's
// kind: each id's bytes, back to back (decode(encode(s)) is s). tokenizer.json: hf_tokenizer.h's
// hf_tok_encode_spans (a normalizer's inserted or replaced text takes the span of what it attaches
// to or replaces; the post-processor's ids get empty spans at the start or end).
bool tok_encode_spans(Tokenizer *t, const char *what, const char *text, size_t len, bool add_special, int **ids,
                      size_t **spans, Error *err);
// GPT-2's kind only (what tok_load / tok_load_memory give; CHECKed), which cannot fail: the ids
// of text[0..len) appended to *ids, no special tokens.
void tok_encode(Tokenizer *t, const char *text, size_t len, int **ids);

// Append the text of ids[0..n) to the stb_ds char array *out (no NUL). With skip_special, special
// tokens are dropped (tokenizer.json's added tokens marked special; <|endoftext|> for GPT-2).
// Ids outside 0..tok_vocab_size-1 are skipped. A tokenizer.json decoder works on the whole list
// (Llama 2 strips the leading space once, bytes of <0xNN> tokens join into characters), so decode
// the list, not id by id; GPT-2's is the concatenation of the ids' bytes.
void tok_decode(const Tokenizer *t, const int *ids, size_t n, bool skip_special, char **out);
// Append the text of the single token id (a valid id) to *out: tok_decode of one id.
void tok_decode_append(const Tokenizer *t, int id, char **out);

// GPT-2's kind only (CHECKed): the pre-tokenization of text[0..len) as [start, end) pairs
// appended to *spans. For tests and teaching.
void tok_pretokenize(Tokenizer *t, const char *text, size_t len, size_t **spans);

// Streaming the text of a growing list of ids (generation): the list's text is decoded anew at
// each step and what it adds past what was already given out is handed out, except a trailing
// incomplete or replaced (U+FFFD) character, which a later id may still complete.
typedef struct {
    int *ids;      // stb_ds: the prompt's ids, then each pushed id
    size_t given;  // bytes of the decoded text already handed out
    char *text;    // stb_ds scratch
} TokStream;
// Start after the prompt's ids[0..n): their text counts as given out already, but for a last
// character the prompt's ids leave incomplete. Special tokens are decoded like any other (a
// generated <|im_end|> shows).
void tok_stream_start(TokStream *s, const Tokenizer *t, const int *ids, size_t n);
// Add id; append to the stb_ds *out the bytes that are now final (maybe none).
void tok_stream_push(TokStream *s, const Tokenizer *t, int id, char **out);
// Append everything not given out yet, held-back characters included, and free the stream.
void tok_stream_finish(TokStream *s, char **out);

#endif
