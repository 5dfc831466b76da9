// hf_regex.h: the regular expressions of tokenizer.json, run by libpcre2 the way Hugging Face
// tokenizers runs them with Oniguruma (docs/llama.md, "tokenizer.json" and section 5.4).
//
// tokenizers compiles a {"Regex": ...} pattern with Oniguruma's Ruby syntax and a {"String": ...}
// pattern as an escaped literal. PCRE2 (PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, LF newlines) reads
// most of that syntax the same way; the rest is rewritten or refused, never passed through with
// another meaning:
//   \s          Oniguruma's Unicode \s, spelled [\t-\r\x{85}\p{Z}] (PCRE2's own \s differs at U+180E)
//   \S          its complement; refused inside a character class (no way to spell it there)
//   \v          the vertical tab U+000B (\v is a class of vertical spaces in PCRE2)
//   \uHHHH      \x{HHHH}
//   kept        \n \r \t \f, \xHH, \x{H..}, \p{..} / \P{..} of a general category (L, Lu, N, Nd, Z, ...),
//               escaped punctuation, (?: (?= (?! (?<= (?<! (?> (?i: and plain groups, [...] classes,
//               quantifiers ? * + {n} {n,} {n,m} and their lazy/possessive forms, . ^ $ |
//   refused     \d \w \b \h (and capitals), other letters, digits (back-references, octal),
//               \p{..} of a script or binary property, inline flags other than (?i:, named groups,
//               {,n}, nested classes and && inside [...], a class starting with ], and under (?i:
//               any non-ASCII literal or an adjacent ss/st/ff/fi/fl (Oniguruma folds them to one
//               character: (?i:ss) matches "ß" there, not in PCRE2)
// Matching follows the onig crate's find_iter: leftmost matches, each search starting where the
// last match ended; an empty match moves the start one character on, and an empty match found
// right after a non-empty one is dropped.
// Not here: what a match means (split, replace: hf_tokenizer.c).
#ifndef QLORA_HF_REGEX_H
#define QLORA_HF_REGEX_H

#include <stdbool.h>
#include <stddef.h>

typedef struct HfRegex HfRegex;

// Compile a tokenizer.json pattern: Oniguruma syntax, or a literal string when literal is true.
// On failure returns false and writes a one-line reason (without file or field) into why.
bool hf_regex_compile(HfRegex **out, const char *pattern, bool literal, char *why, size_t why_cap);

// Compile a pattern written for PCRE2 itself (qlora's own constants); a failure is a bug.
HfRegex *hf_regex_compile_native(const char *pattern);

void hf_regex_free(HfRegex *re);

// Append the [start, end) byte offsets of every match in s[0..len) to the stb_ds array *spans
// (two entries per match, empty matches included), in the onig crate's find_iter order. s must
// be valid UTF-8 (not checked again). Returns false with a reason in why if PCRE2 gives up
// (match or memory limit: a pattern that backtracks catastrophically on this text).
// Not thread-safe: the regex owns its match data.
bool hf_regex_find_all(HfRegex *re, const char *s, size_t len, size_t **spans, char *why, size_t why_cap);

// Whether the pattern matches starting exactly at byte pos of s[0..len) (valid UTF-8).
bool hf_regex_matches_at(HfRegex *re, const char *s, size_t len, size_t pos);

#endif
