// hf_tokenizer.h: Hugging Face tokenizer.json (the `tokenizers` library's format, as 0.23 reads
// it) for BPE models: SmolLM2, Qwen2 / Qwen2.5, Llama 2 / TinyLlama (docs/llama.md, section 5,
// and docs/formats.md, "tokenizer.json").
//
// Encoding runs the file's pipeline: (1) added tokens with normalized: false are cut out of the
// raw text (leftmost-longest; single_word / lstrip / rstrip), (2) every other piece is normalized
// and the added tokens with normalized: true are cut out of it, (3) the pre-tokenizer splits the
// pieces into words, (4) BPE turns each word into ids, (5) the post-processor's template places
// the ids (once, as a rule) and, with add_special, its own (the BOS of Llama 2). Decoding maps ids
// to token strings (an added token gives its
// content), drops special added tokens if asked, runs the decoder and joins the result.
//
// Supported (anything else in the file is refused by name, never ignored):
//   model           BPE: merges as "a b" strings or ["a", "b"] pairs, unk_token, fuse_unk,
//                   byte_fallback (<0xNN> tokens), ignore_merges; dropout null or 0
//   normalizer      NFC (libutf8proc), Prepend, Replace, Sequence, null
//   pre_tokenizer   Sequence, Split (String or Regex pattern, all five behaviors, invert),
//                   Digits, ByteLevel (add_prefix_space, use_regex), Metaspace, null
//   post_processor  TemplateProcessing (its single template; one per file), ByteLevel, Sequence, null
//   decoder         ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence, null
// Regexes are Oniguruma's, run by libpcre2 (hf_regex.h says what is rewritten and refused).
//
// Ids: the model's vocabulary is 0..n-1, added tokens that are not in it follow from n (the ids
// tokenizers assigns; a file that says otherwise is refused), so ids are 0..vocab_size-1.
// A tokenizer is not thread-safe, decoding included (encoding fills a word cache, each regex owns
// its match data): use one per thread.
// Not here: chat templates, datasets (data.c), GPT-2's vocab.json + merges.txt (gpt2_tokenizer.c),
// choosing between the two (tokenizer.c).
#ifndef QLORA_HF_TOKENIZER_H
#define QLORA_HF_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

typedef struct HfTokenizer HfTokenizer;

// Load tokenizer.json from json_path and, if config_path is not NULL, the bos_token, eos_token,
// unk_token, pad_token and chat_template of tokenizer_config.json. Every file is untrusted: on
// any problem returns false with a one-line message naming the file and the JSON field
// (status 2), and *out stays NULL.
bool hf_tok_load(HfTokenizer **out, const char *json_path, const char *config_path, Error *err);
// The same from texts in memory (config may be NULL); the names stand for the files in messages.
bool hf_tok_load_memory(HfTokenizer **out, const char *json, size_t json_len, const char *json_name,
                        const char *config, size_t config_len, const char *config_name, Error *err);
void hf_tok_free(HfTokenizer *t);

// Append the ids of text[0..len) to the stb_ds int array *ids; with add_special the
// post-processor's special tokens too (tokenizers' add_special_tokens). False (status 2) if the
// text is not valid UTF-8, naming the byte, or if a regex of the file gives up on this text; the
// message does not name the text (the caller puts that in front); *ids may then hold a partial
// result.
bool hf_tok_encode(HfTokenizer *t, const char *text, size_t len, bool add_special, int **ids, Error *err);
// The same, also appending to the stb_ds array *spans two offsets per id: the bytes [start, end) of
// text the id came from. Through the pipeline every byte remembers its source bytes: a normalizer
// or pre-tokenizer that inserts text (Prepend, ByteLevel's prefix space, Metaspace's prepended
// replacement) gives it the span of the character it attaches to, a Replace match's replacement
// the span of the last character it replaces, NFC's output characters the span of the input
// character they come from (as the tokenizers library aligns them); an id's span is the
// union of its bytes' (an added token: its match, lstrip / rstrip whitespace included; a
// byte-fallback id: its byte; unk: the characters it stands for). Ids the
// post-processor adds get an empty span at the start (before the text) or the end (after it).
bool hf_tok_encode_spans(HfTokenizer *t, const char *text, size_t len, bool add_special, int **ids, size_t **spans,
                         Error *err);

// Append the decoded text of ids[0..n) to the stb_ds char array *out (UTF-8, no NUL added).
// Ids with no token (outside 0..vocab_size-1) are skipped, as tokenizers does; with
// skip_special, so are the added tokens marked special.
void hf_tok_decode(const HfTokenizer *t, const int *ids, size_t n, bool skip_special, char **out);

// The ids the post-processor's template puts before the (first) text and after the (last) one
// when add_special is set: Llama 2's "<s> $A" gives 1 and 0; no template, 0 and 0.
void hf_tok_special_counts(const HfTokenizer *t, size_t *before, size_t *after);

// Number of ids: the model's vocabulary plus the added tokens outside it.
int hf_tok_vocab_size(const HfTokenizer *t);
// The token string of id (what decoding starts from), or NULL if id has none.
const char *hf_tok_id_to_token(const HfTokenizer *t, int id);
// The id of a token string (added tokens first, then the model's vocabulary), or -1.
int hf_tok_token_to_id(const HfTokenizer *t, const char *token);
// Whether id is an added token marked special (what skip_special drops).
bool hf_tok_is_special(const HfTokenizer *t, int id);

// Special ids, -1 when not known. bos/eos/pad come from tokenizer_config.json; without one, bos
// is the token the post-processor puts before the text (Llama 2's <s>), eos and pad unknown.
// unk is the config's unk_token, else the model's.
int hf_tok_bos(const HfTokenizer *t);
int hf_tok_eos(const HfTokenizer *t);
int hf_tok_unk(const HfTokenizer *t);
int hf_tok_pad(const HfTokenizer *t);
// tokenizer_config.json's chat_template when it is a string, else NULL (not used yet).
const char *hf_tok_chat_template(const HfTokenizer *t);

#endif
