// gpt2_tokenizer.c: see gpt2_tokenizer.h.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "gpt2_tokenizer.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "ds.h"
#include "json.h"

#define TOK_CACHE_MAX (1 << 18)  // pre-tokens remembered; beyond this, encode uncached
static const char EOT_TEXT[] = "<|endoftext|>";

// GPT-2's pre-tokenization pattern (docs/formats.md, "GPT-2 tokenizer"). Python's \s also matches U+001C..U+001F,
// which PCRE2's \s does not, so whitespace is spelled out as [\s\x{1c}-\x{1f}].
static const char PRETOKEN_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\x{1c}-\\x{1f}\\p{L}\\p{N}]+"
    "|[\\s\\x{1c}-\\x{1f}]+(?![^\\s\\x{1c}-\\x{1f}])|[\\s\\x{1c}-\\x{1f}]+";

struct Gpt2Tokenizer {
    char **id_to_token;                                  // [n_vocab], owned
    int n_vocab;
    struct { char *key; int value; } *token_to_id;       // stb_ds string map
    BpeMerges *merges;                                   // (id A, id B) -> rank, id of AB
    struct { char *key; int *value; } *cache;            // mapped pre-token -> ids
    int eot_id;
    int byte_id[256];         // id of the token for byte b's symbol (checked at load)
    char byte_char[256][3];   // NUL-terminated UTF-8 of bytes_to_unicode(b), 1 or 2 bytes
    uint8_t byte_char_len[256];
    int16_t char_byte[324];   // inverse: code point -> byte, -1 if none
    pcre2_code *re;
    pcre2_match_data *match;
};

// Code point standing for byte b: itself if printable, else 256 + its rank among the
// 68 non-printable bytes.
static int byte_code_point(int b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    if (printable) return b;
    int rank = 0;
    for (int c = 0; c < b; c++) rank += !((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174);
    return 256 + rank;
}

int tok_byte_symbol(int b, char out[3]) {
    const int cp = byte_code_point(b);
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = '\0';
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));  // every code point here is < 0x800: two bytes
    out[1] = (char)(0x80 | (cp & 0x3F));
    out[2] = '\0';
    return 2;
}

static void build_byte_map(Gpt2Tokenizer *t) {
    for (int cp = 0; cp < 324; cp++) t->char_byte[cp] = -1;
    for (int b = 0; b < 256; b++) {
        t->char_byte[byte_code_point(b)] = (int16_t)b;
        t->byte_char_len[b] = (uint8_t)tok_byte_symbol(b, t->byte_char[b]);
    }
}

static bool load_vocab(Gpt2Tokenizer *t, const char *text, size_t len, const char *path, Error *err) {
    cJSON *root = json_parse(text, len, 0, path, err);
    if (!root) return false;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return error_set(err, "%s: expected a JSON object mapping tokens to ids", path);
    }
    int n = cJSON_GetArraySize(root);
    t->n_vocab = n;
    t->id_to_token = xcalloc((size_t)(n ? n : 1), sizeof(char *));
    bool ok = n > 0 || error_set(err, "%s: the vocabulary is empty", path);
    for (const cJSON *kv = root->child; ok && kv; kv = kv->next) {
        uint64_t id;
        if (!json_as_u64(kv, &id) || id >= (uint64_t)n)
            ok = error_set(err, "%s: token '%.40s': id must be an integer in [0, %d]", path,
                           kv->string, n - 1);
        else if (t->id_to_token[id])
            ok = error_set(err, "%s: id %llu is used by both '%.40s' and '%.40s'", path,
                           (unsigned long long)id, t->id_to_token[id], kv->string);
        else if (shgeti(t->token_to_id, kv->string) >= 0)
            ok = error_set(err, "%s: token '%.40s' appears twice", path, kv->string);
        else {
            t->id_to_token[id] = xstrdup(kv->string);
            shput(t->token_to_id, kv->string, (int)id);
        }
    }
    cJSON_Delete(root);
    if (!ok) return false;
    for (int b = 0; b < 256; b++) {
        const char *sym = t->byte_char[b];
        if (shgeti(t->token_to_id, sym) < 0)
            return error_set(err, "%s: no token for byte %d ('%s'); a byte-level BPE vocabulary "
                                  "needs all 256 byte symbols", path, b, sym);
        t->byte_id[b] = shget(t->token_to_id, sym);
    }
    t->eot_id = shgeti(t->token_to_id, EOT_TEXT) >= 0 ? shget(t->token_to_id, EOT_TEXT) : -1;
    return true;
}

static bool load_merges(Gpt2Tokenizer *t, const char *merges, size_t len, const char *path,
                        const char *vocab_path, Error *err) {
    char *text = xmalloc(len + 1);  // a private copy: lines are cut in place
    memcpy(text, merges, len);
    text[len] = '\0';
    bool ok = true;
    int rank = 0, line_no = 0;
    char *p = text, *end = text + len;
    char *joined = NULL;  // stb_ds scratch for "AB"
    while (ok && p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *line_end = nl ? nl : end;
        line_no++;
        if (line_end > p && line_end[-1] == '\r') line_end[-1] = '\0';
        *line_end = '\0';
        char *line = p;
        p = line_end + 1;
        if (line[0] == '\0' || (line_no == 1 && strncmp(line, "#version", 8) == 0)) continue;
        char *sp = strchr(line, ' ');
        if (!sp || sp == line || sp[1] == '\0' || strchr(sp + 1, ' ')) {
            ok = error_set(err, "%s:%d: expected two symbols separated by one space, found '%.60s'",
                           path, line_no, line);
            break;
        }
        *sp = '\0';
        const char *a = line, *b = sp + 1;
        size_t la = strlen(a), lb = strlen(b);
        arrsetlen(joined, la + lb + 1);
        memcpy(joined, a, la);
        memcpy(joined + la, b, lb + 1);
        if (shgeti(t->token_to_id, a) < 0 || shgeti(t->token_to_id, b) < 0 ||
            shgeti(t->token_to_id, joined) < 0) {
            const char *missing = shgeti(t->token_to_id, a) < 0 ? a
                                  : shgeti(t->token_to_id, b) < 0 ? b : joined;
            ok = error_set(err, "%s:%d: merge '%s %s' needs '%s', which is not in %s (the "
                                "vocabulary and merges files do not belong together)",
                           path, line_no, a, b, missing, vocab_path);
            break;
        }
        // a repeated pair keeps its first rank
        bpe_merges_add(t->merges, shget(t->token_to_id, a), shget(t->token_to_id, b),
                       shget(t->token_to_id, joined), rank);
        rank++;
    }
    arrfree(joined);
    free(text);
    return ok;
}

bool gpt2_tok_load_memory(Gpt2Tokenizer **out, const char *vocab, size_t vocab_len, const char *vocab_name,
                          const char *merges, size_t merges_len, const char *merges_name, Error *err) {
    Gpt2Tokenizer *t = xcalloc(1, sizeof *t);
    *out = NULL;
    sh_new_arena(t->token_to_id);
    t->merges = bpe_merges_create();
    sh_new_arena(t->cache);
    build_byte_map(t);
    if (!load_vocab(t, vocab, vocab_len, vocab_name, err) ||
        !load_merges(t, merges, merges_len, merges_name, vocab_name, err)) {
        gpt2_tok_free(t);
        return false;
    }
    int code;
    PCRE2_SIZE at;
    t->re = pcre2_compile((PCRE2_SPTR)PRETOKEN_PATTERN, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
    CHECK(t->re != NULL);  // a constant pattern: failure is a bug, not bad input
    pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE);  // optional speed-up; falls back if absent
    t->match = pcre2_match_data_create_from_pattern(t->re, NULL);
    *out = t;
    return true;
}

void gpt2_tok_free(Gpt2Tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_vocab; i++) free(t->id_to_token[i]);
    free(t->id_to_token);
    shfree(t->token_to_id);
    bpe_merges_free(t->merges);
    for (ptrdiff_t i = 0; i < shlen(t->cache); i++) arrfree(t->cache[i].value);
    shfree(t->cache);
    if (t->match) pcre2_match_data_free(t->match);
    if (t->re) pcre2_code_free(t->re);
    free(t);
}

int gpt2_tok_vocab_size(const Gpt2Tokenizer *t) { return t->n_vocab; }
int gpt2_tok_eot(const Gpt2Tokenizer *t) { return t->eot_id; }

void gpt2_tok_pretokenize(Gpt2Tokenizer *t, const char *text, size_t len, size_t **spans) {
    // PCRE2 needs valid UTF-8: each invalid byte becomes U+FFFD (a symbol, so neither letter,
    // number nor space) in a sanitized copy, and orig[] maps offsets back to the input.
    char *clean = NULL;
    size_t *orig = NULL;
    const uint8_t *u = (const uint8_t *)text;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq_len(u + i, len - i);
        if (n == 0) {
            static const char repl[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
            for (int k = 0; k < 3; k++) {
                arrput(clean, repl[k]);
                arrput(orig, i);
            }
            i++;
        } else {
            for (size_t k = 0; k < n; k++) {
                arrput(clean, text[i + k]);
                arrput(orig, i);
            }
            i += n;
        }
    }
    arrput(orig, len);
    const size_t clen = arrlenu(clean);
    size_t pos = 0;
    while (pos < clen) {
        // the copy is valid UTF-8 by construction: skip PCRE2's check, which would rescan
        // the whole subject at every call (quadratic in the text length)
        int rc = pcre2_match(t->re, (PCRE2_SPTR)(clean ? clean : ""), clen, pos, PCRE2_NO_UTF_CHECK,
                             t->match, NULL);
        size_t s = clen, e = clen;
        if (rc > 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->match);
            s = ov[0];
            e = ov[1];
        }
        if (s > pos) {  // unmatched gap (the pattern covers everything; kept for safety)
            arrput(*spans, orig[pos]);
            arrput(*spans, orig[s]);
        }
        if (e <= s) break;  // no match or empty match: nothing more to cut
        arrput(*spans, orig[s]);
        arrput(*spans, orig[e]);
        pos = e;
    }
    arrfree(clean);
    arrfree(orig);
}

static void encode_piece(Gpt2Tokenizer *t, const char *text, size_t len, int **ids) {
    size_t *spans = NULL;
    char *mapped = NULL;
    gpt2_tok_pretokenize(t, text, len, &spans);
    for (size_t s = 0; s < arrlenu(spans); s += 2) {
        arrsetlen(mapped, 0);
        for (size_t i = spans[s]; i < spans[s + 1]; i++) {
            uint8_t b = (uint8_t)text[i];
            for (int k = 0; k < t->byte_char_len[b]; k++) arrput(mapped, t->byte_char[b][k]);
        }
        arrput(mapped, '\0');
        ptrdiff_t c = shgeti(t->cache, mapped);
        if (c >= 0) {
            for (size_t k = 0; k < arrlenu(t->cache[c].value); k++) arrput(*ids, t->cache[c].value[k]);
            continue;
        }
        // one symbol per byte, then BPE (bpe.h)
        int *word_ids = NULL;
        for (size_t i = spans[s]; i < spans[s + 1]; i++) arrput(word_ids, t->byte_id[(uint8_t)text[i]]);
        const size_t n_left = bpe_merge(t->merges, word_ids, arrlenu(word_ids));
        arrsetlen(word_ids, n_left);  // a macro that evaluates its argument twice
        for (size_t k = 0; k < arrlenu(word_ids); k++) arrput(*ids, word_ids[k]);
        if (shlen(t->cache) < TOK_CACHE_MAX) shput(t->cache, mapped, word_ids);
        else arrfree(word_ids);
    }
    arrfree(mapped);
    arrfree(spans);
}

void gpt2_tok_encode(Gpt2Tokenizer *t, const char *text, size_t len, int **ids) {
    const size_t eot_len = sizeof EOT_TEXT - 1;
    size_t start = 0;
    if (t->eot_id >= 0) {
        for (size_t i = 0; i + eot_len <= len;) {
            if (text[i] == '<' && memcmp(text + i, EOT_TEXT, eot_len) == 0) {
                encode_piece(t, text + start, i - start, ids);
                arrput(*ids, t->eot_id);
                i += eot_len;
                start = i;
            } else {
                i++;
            }
        }
    }
    encode_piece(t, text + start, len - start, ids);
}

void gpt2_tok_decode_append(const Gpt2Tokenizer *t, int id, char **out) {
    CHECK(id >= 0 && id < t->n_vocab && t->id_to_token[id]);
    const uint8_t *s = (const uint8_t *)t->id_to_token[id];
    size_t n = strlen((const char *)s);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq_len(s + i, n - i);
        uint32_t cp = 0x110000;
        if (k == 1) cp = s[i];
        else if (k == 2) cp = (uint32_t)(s[i] & 0x1F) << 6 | (s[i + 1] & 0x3F);
        if (cp < 324 && t->char_byte[cp] >= 0) {
            arrput(*out, (char)t->char_byte[cp]);
            i += k;
        } else {  // a character outside the byte map: emit its own bytes unchanged
            size_t m = k ? k : 1;
            for (size_t j = 0; j < m; j++) arrput(*out, (char)s[i + j]);
            i += m;
        }
    }
}
