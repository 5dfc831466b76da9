// hf_tokenizer_impl.h: the HfTokenizer structure, shared by its loader (hf_tokenizer.c) and its
// encoder/decoder (hf_tokenizer_run.c). Nothing else includes this file.
//
// Sequences in the file (of normalizers, pre-tokenizers, post-processors, decoders) are
// flattened at load: tokenizers applies a Sequence's members in order, each to the output of
// the one before, which is what one flat list does.
#ifndef QLORA_HF_TOKENIZER_IMPL_H
#define QLORA_HF_TOKENIZER_IMPL_H

#include <stdint.h>

#include "bpe.h"
#include "hf_regex.h"
#include "hf_tokenizer.h"

typedef enum { HF_SPLIT_REMOVED, HF_SPLIT_ISOLATED, HF_SPLIT_MERGED_PREV, HF_SPLIT_MERGED_NEXT,
               HF_SPLIT_CONTIGUOUS } HfSplitBehavior;
typedef enum { HF_PREPEND_ALWAYS, HF_PREPEND_FIRST, HF_PREPEND_NEVER } HfPrependScheme;

typedef enum { HF_NORM_NFC, HF_NORM_PREPEND, HF_NORM_REPLACE } HfNormKind;
typedef struct {
    HfNormKind kind;
    char *text;   // Prepend: the prefix; Replace: the content (owned)
    HfRegex *re;  // Replace: the pattern
} HfNormStep;

typedef enum { HF_PRE_SPLIT, HF_PRE_DIGITS, HF_PRE_BYTE_LEVEL, HF_PRE_METASPACE } HfPreKind;
typedef struct {
    HfPreKind kind;
    HfRegex *re;                       // Split
    HfSplitBehavior behavior;          // Split
    bool invert;                       // Split
    bool individual_digits;            // Digits
    bool add_prefix_space, use_regex;  // ByteLevel
    uint32_t repl;                     // Metaspace: the replacement character
    HfPrependScheme scheme;            // Metaspace
    bool split;                        // Metaspace
} HfPreStep;

typedef enum { HF_DEC_BYTE_LEVEL, HF_DEC_REPLACE, HF_DEC_BYTE_FALLBACK, HF_DEC_FUSE, HF_DEC_STRIP,
               HF_DEC_METASPACE } HfDecKind;
typedef struct {
    HfDecKind kind;
    HfRegex *re;             // Replace
    char *content;           // Replace (owned)
    uint32_t ch;             // Strip: the character; Metaspace: the replacement
    size_t start, stop;      // Strip
    HfPrependScheme scheme;  // Metaspace
} HfDecStep;

// One TemplateProcessing "single" template: ids to add, HF_TEMPLATE_SEQ where the text goes.
#define HF_TEMPLATE_SEQ (-1)
typedef struct {
    int *items;  // stb_ds
} HfTemplate;

// An added token as the matcher sees it.
typedef struct {
    const char *pattern;  // what is searched for: content, or content normalized (borrowed)
    size_t len;
    int id;
    bool single_word, lstrip, rstrip;
} HfAdded;

// Added tokens matched in one pass (raw text, or normalized pieces): bucketed by first byte,
// longest first, so the first hit at a position is the leftmost-longest match.
typedef struct {
    HfAdded *by_byte[256];  // stb_ds arrays
    size_t n;
} HfAddedSet;

typedef struct { char *key; int value; } HfStrInt;
typedef struct { char *key; int *value; } HfStrIds;

struct HfTokenizer {
    // BPE model
    char **vocab;          // [n_model] token strings (owned)
    int n_model;
    HfStrInt *model_map;   // stb_ds string map: token -> id
    BpeMerges *merges;
    int model_unk;         // the model's unk_token id, or -1
    bool fuse_unk, byte_fallback, ignore_merges;
    int byte_token[256];   // id of "<0xNN>", or -1
    // every id 0..n_total-1
    int n_total;
    char **added_content;  // [n_total - n_model] contents of the added tokens after the model (owned)
    const char **token_str;  // [n_total] what decoding starts from (borrowed from vocab / added)
    char **normalized_str;   // stb_ds of owned normalized contents (decoding strings of some added tokens)
    bool *is_special;      // [n_total] an added token marked special
    bool *skip_special;    // [n_total] dropped by skip_special: the token string is a special's content
    HfStrInt *added_map;   // content -> id
    HfAddedSet raw_set, norm_set;
    // pipeline
    HfNormStep *norm;      // stb_ds
    HfPreStep *pre;        // stb_ds
    bool has_decoder;
    HfDecStep *dec;        // stb_ds
    HfTemplate *post;      // stb_ds
    HfRegex *byte_level_re;  // the GPT-2 pattern of ByteLevel(use_regex), compiled when used
    HfRegex *word_char;      // Rust regex's \w, for single_word
    char byte_sym[256][3];   // GPT-2 byte character of byte b, NUL-terminated UTF-8 (tok_byte_symbol)
    uint8_t byte_sym_len[256];
    int16_t char_byte[324];  // GPT-2 byte character (code point) -> byte, -1 if none
    HfStrIds *cache;       // word -> ids
    // special ids and config
    int bos, eos, unk, pad;
    char *chat_template;
};

// Run the normalizer steps on s[0..len) (valid UTF-8); the result replaces the stb_ds *out.
// Shared by encoding and by the loader (added tokens with normalized: true). False with a
// reason in why if a Replace regex gives up on this text.
bool hf_normalize(const HfTokenizer *t, const char *s, size_t len, char **out, char *why, size_t why_cap);

#endif
