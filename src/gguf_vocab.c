// gguf_vocab.c: a folder's tokenizer as tokenizer.ggml.* keys for llama.cpp (gguf_vocab.h; the
// facts are in docs/gguf.md, "Tokenizer").
#include "gguf_vocab.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ds.h"
#include "json.h"
#include "path.h"
#include "tokenizer.h"

typedef struct {
    char *key;
    int value;
} StrInt;  // an stb_ds string map's entry

// The tokenizer as llama.cpp reads it: tokens in id order with their types, and either merges in
// rank order (BPE) or a score per token (SentencePiece-style).
typedef struct {
    char **tokens;    // stb_ds array of malloc'ed strings
    int32_t *types;   // stb_ds array
    char **merges;    // stb_ds array of malloc'ed strings
    float *scores;    // stb_ds array, SentencePiece-style only
    StrInt *ids;      // token -> id (stb_ds string map), tokenizer.json only
} GgufVocab;

// Free v's arrays and zero it.
static void vocab_free(GgufVocab *v) {
    gguf_free_strs(v->tokens);
    gguf_free_strs(v->merges);
    arrfree(v->types);
    arrfree(v->scores);
    shfree(v->ids);
    memset(v, 0, sizeof *v);
}

// The offset of the first byte of s[0..n) that does not start a valid UTF-8 sequence, or n.
static size_t utf8_bad_at(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        const size_t k = utf8_seq_len((const uint8_t *)s + i, n - i);
        if (!k) return i;
        i += k;
    }
    return n;
}

// Refuse a token llama.cpp cannot hold as written (status 2): an empty one (it renames those)
// or one that is not UTF-8 (its tokenizer reads tokens as UTF-8 text).
static bool token_expressible(const char *tok, int id, const char *path, Error *err) {
    const size_t n = strlen(tok), i = utf8_bad_at(tok, n);
    if (n == 0)
        return error_set(err, "%s: token %d: expected a non-empty token, found \"\" (llama.cpp renames empty tokens)",
                         path, id);
    if (i < n)
        return error_set(err, "%s: token %d: expected UTF-8 text, found byte 0x%02x at %zu (llama.cpp reads "
                              "tokens as UTF-8)", path, id, (unsigned char)tok[i], i);
    return true;
}

// vocab.json's tokens in id order (tokenizer.c has checked ids 0..n-1 each used once), padded
// to vocab_size with "[PAD<id>]" tokens of type UNUSED as llama.cpp's converter pads; eot is
// CONTROL (as the converter marks GPT-2's special tokens), the others NORMAL.
static bool read_vocab(const char *path, int vocab_size, int eot, GgufVocab *v, Error *err) {
    cJSON *root = json_parse_file(path, err);
    if (!root) return false;
    const int n = cJSON_GetArraySize(root);
    bool ok = n <= vocab_size ||
              error_set(err, "%s: expected at most config.json's vocab_size %d tokens (one embedding row each), "
                             "found %d", path, vocab_size, n);
    if (ok) {
        arrsetlen(v->tokens, vocab_size);
        arrsetlen(v->types, vocab_size);
        memset(v->tokens, 0, (size_t)vocab_size * sizeof(char *));
    }
    for (const cJSON *kv = ok ? root->child : NULL; kv; kv = kv->next) {
        uint64_t id;
        CHECK(json_as_u64(kv, &id) && id < (uint64_t)n);  // tok_load has checked the ids
        v->tokens[id] = xstrdup(kv->string);
    }
    cJSON_Delete(root);
    for (int i = 0; ok && i < vocab_size; i++) {
        if (!v->tokens[i]) {
            v->tokens[i] = path_fmt("[PAD%d]", i);
            v->types[i] = GGUF_TOKEN_UNUSED;
        } else {
            v->types[i] = i == eot ? GGUF_TOKEN_CONTROL : GGUF_TOKEN_NORMAL;
            ok = token_expressible(v->tokens[i], i, path, err);
        }
    }
    return ok;
}

// merges.txt's merges in rank order, read as tokenizer.c reads them (an optional "#version"
// first line, blank lines skipped, "\r\n" line ends); tokenizer.c has checked each line.
static bool read_merges(const char *path, GgufVocab *v, Error *err) {
    char *text;
    size_t len;
    if (!file_read_all(path, &text, &len, err)) return false;
    int line_no = 0;
    for (char *p = text, *end = text + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p)), *line_end = nl ? nl : end;
        line_no++;
        if (line_end > p && line_end[-1] == '\r') line_end[-1] = '\0';
        *line_end = '\0';
        if (p[0] != '\0' && !(line_no == 1 && strncmp(p, "#version", 8) == 0)) arrput(v->merges, xstrdup(p));
        p = line_end + 1;
    }
    free(text);
    return true;
}

// dir's vocab.json + merges.txt (read by tok, which has checked them) as tokenizer.ggml.* keys.
static bool add_gpt2_files(GgufWriter *w, const char *dir, const Tokenizer *tok, const GPT2Config *c,
                           GgufVocabInfo *info, Error *err) {
    char *vocab_path = path_join(dir, "vocab.json"), *merges_path = path_join(dir, "merges.txt");
    GgufVocab v = {0};
    const int eot = tok_eot(tok);
    const bool ok = read_vocab(vocab_path, c->vocab_size, eot, &v, err) && read_merges(merges_path, &v, err);
    if (ok) {
        gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
        gguf_set_str(w, "tokenizer.ggml.pre", "gpt-2");
        gguf_set_str_array(w, "tokenizer.ggml.tokens", (const char *const *)v.tokens, arrlenu(v.tokens));
        gguf_set_i32_array(w, "tokenizer.ggml.token_type", v.types, arrlenu(v.types));
        gguf_set_str_array(w, "tokenizer.ggml.merges", (const char *const *)v.merges, arrlenu(v.merges));
        // config.json's ids; GPT-2's end-of-text token where it names none (llama.cpp would
        // otherwise take id 11)
        const int bos = c->bos_id >= 0 ? c->bos_id : eot, eos = c->eos_id >= 0 ? c->eos_id : eot;
        if (bos >= 0 && bos < c->vocab_size) gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
        if (eos >= 0 && eos < c->vocab_size) gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
        *info = (GgufVocabInfo){"gpt2", "gpt-2", (int)arrlenu(v.tokens), (int)arrlenu(v.merges), false, false};
    }
    vocab_free(&v);
    free(vocab_path);
    free(merges_path);
    return ok;
}

// ---- tokenizer.json ----------------------------------------------------------------------------

#define SPIECE "\xe2\x96\x81"  // U+2581, SentencePiece's word marker
// Qwen2's pre-tokenizer regex as tokenizer.json spells it (docs/llama.md 5.4); llama.cpp's qwen2
// pre-tokenizer splits with the same expression (its contractions spelt case by case).
static const char QWEN2_REGEX[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
                                  " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// The tokenizer.json layouts llama.cpp has a tokenizer for, and the tokenizer.ggml.pre of each.
typedef enum { LAYOUT_GPT2, LAYOUT_SMOLLM, LAYOUT_QWEN2, LAYOUT_SPM } HfLayout;
static const char *const LAYOUT_PRE[] = {"gpt-2", "smollm", "qwen2", "default"};

static const cJSON *item(const cJSON *o, const char *key) { return cJSON_GetObjectItemCaseSensitive(o, key); }

// True when o is an object whose "type" is type.
static bool is_type(const cJSON *o, const char *type) {
    const cJSON *t = item(o, "type");
    return cJSON_IsObject(o) && cJSON_IsString(t) && strcmp(t->valuestring, type) == 0;
}

// o's boolean field key; dflt when absent (hf_tokenizer.c has checked the types).
static bool flag(const cJSON *o, const char *key, bool dflt) {
    const cJSON *v = item(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

// True when o's field key is the string want.
static bool str_is(const cJSON *o, const char *key, const char *want) {
    const cJSON *v = item(o, key);
    return cJSON_IsString(v) && strcmp(v->valuestring, want) == 0;
}

static bool absent(const cJSON *o) { return !o || cJSON_IsNull(o); }

// A ByteLevel pre-tokenizer without a prefix space (llama.cpp adds none), with or without its
// GPT-2 regex.
static bool byte_level(const cJSON *o, bool regex) {
    return is_type(o, "ByteLevel") && !flag(o, "add_prefix_space", true) && flag(o, "use_regex", true) == regex;
}

// If pre is Sequence[X, ByteLevel(no prefix space, use_regex = regex)], X; else NULL.
static const cJSON *then_byte_level(const cJSON *pre, bool regex) {
    const cJSON *list = is_type(pre, "Sequence") ? item(pre, "pretokenizers") : NULL;
    if (cJSON_GetArraySize(list) != 2 || !byte_level(list->child->next, regex)) return NULL;
    return list->child;
}

// Llama 2's normalizer: Sequence[Prepend("▁"), Replace(" " -> "▁")] (docs/llama.md 5.8).
static bool spm_normalizer(const cJSON *norm) {
    const cJSON *list = is_type(norm, "Sequence") ? item(norm, "normalizers") : NULL;
    if (cJSON_GetArraySize(list) != 2) return false;
    const cJSON *prepend = list->child, *replace = list->child->next;
    return is_type(prepend, "Prepend") && str_is(prepend, "prepend", SPIECE) && is_type(replace, "Replace") &&
           str_is(item(replace, "pattern"), "String", " ") && str_is(replace, "content", SPIECE);
}

// Which layout of LAYOUT_PRE the file's normalizer, pre-tokenizer and BPE options are; false
// (status 2) naming what llama.cpp would split differently.
static bool hf_layout(const cJSON *root, const char *path, HfLayout *out, Error *err) {
    const cJSON *norm = item(root, "normalizer"), *pre = item(root, "pre_tokenizer"), *model = item(root, "model");
    const cJSON *first;
    if (absent(norm) && byte_level(pre, true)) {
        *out = LAYOUT_GPT2;
    } else if (absent(norm) && (first = then_byte_level(pre, true)) && is_type(first, "Digits") &&
               flag(first, "individual_digits", false)) {
        *out = LAYOUT_SMOLLM;
    } else if ((absent(norm) || is_type(norm, "NFC")) && (first = then_byte_level(pre, false)) &&
               is_type(first, "Split") && str_is(item(first, "pattern"), "Regex", QWEN2_REGEX) &&
               str_is(first, "behavior", "Isolated") && !flag(first, "invert", false)) {
        *out = LAYOUT_QWEN2;  // llama.cpp does not normalize: NFC matters only for text not in NFC
    } else if (absent(pre) && spm_normalizer(norm)) {
        *out = LAYOUT_SPM;
    } else if (is_type(pre, "Metaspace")) {
        return error_set(err, "%s: pre_tokenizer: Metaspace prepends " SPIECE " only to a text that does not start "
                              "with one, llama.cpp's SentencePiece tokenizer to every text: a text that starts with "
                              "a space would split differently (Llama 2's normalizer Prepend + Replace exports)", path);
    } else {
        return error_set(err, "%s: normalizer and pre_tokenizer: a layout llama.cpp has no pre-tokenizer for "
                              "(export-gguf writes the byte-level layouts of GPT-2, SmolLM2 and Qwen2 and Llama 2's "
                              "SentencePiece-style one; docs/gguf.md)", path);
    }
    const bool spm = *out == LAYOUT_SPM;
    if (flag(model, "byte_fallback", false) != spm)
        return error_set(err, "%s: model.byte_fallback: expected %s with this pre-tokenizer, found %s (llama.cpp's %s "
                              "tokenizer %s)", path, spm ? "true" : "false", spm ? "false" : "true",
                         spm ? "SentencePiece-style" : "byte-level", spm ? "always falls back to byte tokens"
                                                                           : "has no byte fallback");
    if (flag(model, "ignore_merges", false))
        return error_set(err, "%s: model.ignore_merges: expected false, found true (llama.cpp's %s tokenizer merges "
                              "every word)", path, LAYOUT_PRE[*out]);
    return true;
}

// Record token tok as id in v (tokens, the map), refusing what llama.cpp cannot hold: a token
// that is empty, not UTF-8, or there twice (llama.cpp keeps one id per text).
static bool put_token(GgufVocab *v, int id, const char *tok, int32_t type, const char *path, Error *err) {
    if (!token_expressible(tok, id, path, err)) return false;
    const ptrdiff_t at = shgeti(v->ids, tok);
    if (at >= 0 && v->ids[at].value != id)
        return error_set(err, "%s: token %d: '%.60s' is token %d already (llama.cpp keeps one id per token text)",
                         path, id, tok, v->ids[at].value);
    free(v->tokens[id]);
    v->tokens[id] = xstrdup(tok);
    v->types[id] = type;
    shput(v->ids, v->tokens[id], id);
    return true;
}

// A SentencePiece byte token "<0xXX>" (two uppercase hex digits, as byte_fallback spells them).
static bool is_byte_token(const char *t) {
    return strlen(t) == 6 && strncmp(t, "<0x", 3) == 0 && strchr("0123456789ABCDEF", t[3]) &&
           strchr("0123456789ABCDEF", t[4]) && t[5] == '>';
}

// added_tokens into v: special ones CONTROL (unk UNKNOWN), the others USER_DEFINED, which
// llama.cpp finds in any text as tokenizers does, but without single_word, lstrip or rstrip
// (refused) and, in a SentencePiece-style vocabulary, before the spaces become ▁ (refused
// where that matters).
static bool hf_added(const cJSON *root, const char *path, bool spm, int unk, GgufVocab *v, Error *err) {
    int i = 0;
    for (const cJSON *a = item(root, "added_tokens")->child; a; a = a->next, i++) {
        uint64_t id;
        CHECK(json_as_u64(item(a, "id"), &id) && id < arrlenu(v->tokens));  // hf_tokenizer.c has checked it
        const char *content = item(a, "content")->valuestring;
        const bool special = flag(a, "special", false);
        if (!special && (flag(a, "single_word", false) || flag(a, "lstrip", false) || flag(a, "rstrip", false)))
            return error_set(err, "%s: added_tokens[%d]: '%.40s' has single_word, lstrip or rstrip: llama.cpp finds "
                                  "it in any text, without those rules", path, i, content);
        if (!special && spm && (strchr(content, ' ') || strstr(content, SPIECE)))
            return error_set(err, "%s: added_tokens[%d]: '%.40s' holds a space or " SPIECE ": llama.cpp matches it "
                                  "before the spaces become " SPIECE, path, i, content);
        const int32_t type = !special ? GGUF_TOKEN_USER_DEFINED : spm && (int)id == unk ? GGUF_TOKEN_UNKNOWN
                                                                                       : GGUF_TOKEN_CONTROL;
        if (!put_token(v, (int)id, content, type, path, err)) return false;
    }
    return true;
}

// The file's n tokens (ids 0..n-1: model.vocab, then the added tokens after it; hf_tokenizer.c
// has checked that) into v, padded to vocab_size with unused "[PAD<id>]" tokens.
static bool hf_tokens(const cJSON *root, const char *path, int n, int vocab_size, bool spm, GgufVocab *v,
                      Error *err) {
    if (n > vocab_size)
        return error_set(err, "%s: expected at most config.json's vocab_size %d tokens (one embedding row each), "
                              "found %d", path, vocab_size, n);
    arrsetlen(v->tokens, vocab_size);
    arrsetlen(v->types, vocab_size);
    memset(v->tokens, 0, (size_t)vocab_size * sizeof(char *));
    sh_new_arena(v->ids);
    const cJSON *model = item(root, "model"), *unk_name = item(model, "unk_token");
    int unk = -1;
    for (const cJSON *kv = item(model, "vocab")->child; kv; kv = kv->next) {
        uint64_t id;
        CHECK(json_as_u64(kv, &id) && id < (uint64_t)n);
        if (cJSON_IsString(unk_name) && strcmp(kv->string, unk_name->valuestring) == 0) unk = (int)id;
        const int32_t type = !spm ? GGUF_TOKEN_NORMAL : (int)id == unk ? GGUF_TOKEN_UNKNOWN
                                                      : is_byte_token(kv->string) ? GGUF_TOKEN_BYTE : GGUF_TOKEN_NORMAL;
        if (!put_token(v, (int)id, kv->string, type, path, err)) return false;
    }
    if (!hf_added(root, path, spm, unk, v, err)) return false;
    for (int i = 0; i < vocab_size; i++) {
        if (i < n) {
            CHECK(v->tokens[i] != NULL);
            continue;
        }
        char *pad = path_fmt("[PAD%d]", i);
        const bool ok = put_token(v, i, pad, GGUF_TOKEN_UNUSED, path, err);
        free(pad);
        if (!ok) return false;
    }
    return true;
}

// Merge i of the file as its two parts a and b (each at most 4096 bytes: hf_tokenizer.c's limit).
static void merge_parts(const cJSON *m, char *a, char *b, size_t cap) {
    if (cJSON_IsArray(m)) {
        snprintf(a, cap, "%s", m->child->valuestring);
        snprintf(b, cap, "%s", m->child->next->valuestring);
    } else {
        const char *sp = strchr(m->valuestring, ' ');
        snprintf(a, cap, "%.*s", (int)(sp - m->valuestring), m->valuestring);
        snprintf(b, cap, "%s", sp + 1);
    }
}

#define PART_CAP 4100
// model.merges as llama.cpp's "A B" strings; a part holding a space would split elsewhere there.
static bool hf_merges(const cJSON *root, const char *path, GgufVocab *v, Error *err) {
    char a[PART_CAP], b[PART_CAP];
    int i = 0;
    for (const cJSON *m = item(item(root, "model"), "merges")->child; m; m = m->next, i++) {
        merge_parts(m, a, b, sizeof a);
        if (strchr(a, ' ') || strchr(b, ' '))
            return error_set(err, "%s: model.merges[%d]: a part holds a space: llama.cpp reads a merge as \"A B\"",
                             path, i);
        arrput(v->merges, path_fmt("%s %s", a, b));
    }
    return true;
}

// The merges of a SentencePiece-style file as llama.cpp's scores: its tokenizer joins, at each
// step, the two adjacent pieces whose concatenation is the token with the highest score (the
// leftmost on a tie), where tokenizers joins the adjacent pair with the lowest merge rank. With
// score(z) = -(1 + the rank of z's first merge) both pick the same pair provided that each
// token's merges are consecutive ranks (checked here) and that any two pieces that make a token
// form one of its merges (merge_pairs_complete). Tokens no merge makes keep score 0 (llama.cpp
// never compares them). The pair keys "a\xffb" (0xFF is never in UTF-8) go to *pairs.
static bool spm_scores(const cJSON *root, const char *path, GgufVocab *v, StrInt **pairs,
                       Error *err) {
    const size_t V = arrlenu(v->tokens);
    sh_new_arena(*pairs);
    arrsetlen(v->scores, V);
    int *first = xmalloc(V * sizeof(int));
    for (size_t i = 0; i < V; i++) v->scores[i] = 0, first[i] = -1;
    char a[PART_CAP], b[PART_CAP], key[2 * PART_CAP];
    int rank = 0, prev = -1;
    bool ok = true;
    for (const cJSON *m = item(item(root, "model"), "merges")->child; ok && m; m = m->next, rank++) {
        merge_parts(m, a, b, sizeof a);
        snprintf(key, sizeof key, "%s%s", a, b);
        const ptrdiff_t at = shgeti(v->ids, key);
        CHECK(at >= 0);  // hf_tokenizer.c has checked that a + b is a token
        const int z = v->ids[at].value;
        if (first[z] >= 0 && prev != z)
            ok = error_set(err, "%s: model.merges[%d]: '%.40s' + '%.40s' makes '%.80s' again, after other merges "
                                "(first at merges[%d]): llama.cpp ranks a token's merges by one score, so they must "
                                "be consecutive", path, rank, a, b, key, first[z]);
        if (first[z] < 0) first[z] = rank, v->scores[z] = -(float)(rank + 1);
        prev = z;
        snprintf(key, sizeof key, "%s\xff%s", a, b);
        shput(*pairs, key, rank);
    }
    free(first);
    return ok;
}

// True when t is a token of v or a single character (a piece llama.cpp's SentencePiece-style
// tokenizer may hold: the text's characters, and what joining them made).
static bool spm_piece(GgufVocab *v, const char *t, size_t n) {
    return shgeti(v->ids, t) >= 0 || utf8_seq_len((const uint8_t *)t, n) == n;
}

// Refuse (status 2) a token z = x + y where x and y are pieces but (x, y) is not a merge:
// llama.cpp joins x and y where tokenizers would not. tokenizer.json files converted from a
// SentencePiece model (Llama 2, TinyLlama) list every such pair, as SentencePiece joins any two
// pieces that make a token; a vocabulary trained as BPE by tokenizers itself usually does not.
// Also refuse a missing byte token: llama.cpp spells an unknown character with <0x00>..<0xFF>.
static bool spm_pairs_complete(GgufVocab *v, const char *path, StrInt *pairs,
                               Error *err) {
    for (int c = 0; c < 256; c++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", c);
        if (shgeti(v->ids, name) < 0)
            return error_set(err, "%s: model.vocab: no byte token %s: llama.cpp's SentencePiece-style tokenizer "
                                  "spells an unknown character with the 256 byte tokens", path, name);
    }
    char x[PART_CAP], key[2 * PART_CAP];
    for (size_t id = 0; id < arrlenu(v->tokens); id++) {
        const char *z = v->tokens[id];
        const size_t n = strlen(z);
        // every split of z between two characters (put_token has checked that z is UTF-8)
        for (size_t k = utf8_seq_len((const uint8_t *)z, n), step; k > 0 && k < n && n < PART_CAP; k += step) {
            step = utf8_seq_len((const uint8_t *)z + k, n - k);
            CHECK(step > 0);
            snprintf(x, sizeof x, "%.*s", (int)k, z);
            if (!spm_piece(v, x, k) || !spm_piece(v, z + k, n - k)) continue;
            snprintf(key, sizeof key, "%s\xff%s", x, z + k);
            if (shgeti(pairs, key) < 0)
                return error_set(err, "%s: model.merges: token %zu '%.40s' can also be made of '%.40s' + '%.40s', "
                                      "which is not a merge: llama.cpp's SentencePiece-style tokenizer would join "
                                      "them where tokenizers does not (docs/gguf.md)", path, id, z, x, z + k);
        }
    }
    return true;
}

// The special ids: those the post-processor puts around a text become llama.cpp's
// add_bos_token / add_eos_token with their ids (at most one each: llama.cpp adds no more);
// otherwise tokenizer_config.json's bos / eos, else config.json's (tok_set_missing_specials).
static bool hf_specials(GgufWriter *w, Tokenizer *tok, const GPT2Config *c, bool *add_bos, Error *err) {
    tok_set_missing_specials(tok, c->bos_id, c->eos_id);
    int *ids = NULL;
    bool ok = tok_encode_text(tok, "an empty text", "", 0, true, &ids, err);
    const size_t nb = tok_special_before(tok), na = tok_special_after(tok);
    CHECK(!ok || arrlenu(ids) == nb + na);
    int bos = nb == 1 ? ids[0] : tok_bos(tok), eos = na == 1 ? ids[nb] : tok_eos(tok);
    if (ok && (nb > 1 || na > 1))
        ok = error_set(err, "%s: post_processor: puts %zu tokens before a text and %zu after it; llama.cpp adds at "
                            "most a BOS before and an EOS after", tok_path(tok), nb, na);
    else if (ok && ((nb && tok_bos(tok) >= 0 && bos != tok_bos(tok)) || (na && tok_eos(tok) >= 0 && eos != tok_eos(tok))))
        ok = error_set(err, "%s: post_processor: puts id %d %s a text, but the tokenizer's %s token is id %d; "
                            "llama.cpp adds that one", tok_path(tok), nb ? bos : eos, nb ? "before" : "after",
                       nb ? "bos" : "eos", nb ? tok_bos(tok) : tok_eos(tok));
    arrfree(ids);
    if (!ok) return false;
    if (bos >= 0) gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0) gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    gguf_set_bool(w, "tokenizer.ggml.add_bos_token", nb == 1);
    gguf_set_bool(w, "tokenizer.ggml.add_eos_token", na == 1);
    *add_bos = nb == 1;
    return true;
}

// The chat template as transformers reads it, tokenizer_config.json's chat_template, else the
// folder's chat_template.jinja, into *out (a new string), or NULL when there is none.
static bool read_chat_template(const char *dir, char **out, Error *err) {
    char *config = path_join(dir, "tokenizer_config.json"), *jinja = path_join(dir, "chat_template.jinja");
    bool ok = true;
    *out = NULL;
    if (access(config, F_OK) == 0) {
        cJSON *root = json_parse_file(config, err);
        const cJSON *t = root ? item(root, "chat_template") : NULL;
        ok = root && (absent(t) || cJSON_IsString(t) ||
                      error_set(err, "%s: chat_template: expected a string (named templates are not supported)",
                                config));
        if (ok && cJSON_IsString(t)) *out = xstrdup(t->valuestring);
        cJSON_Delete(root);
    }
    size_t len;
    if (ok && !*out && access(jinja, F_OK) == 0) {
        ok = file_read_all(jinja, out, &len, err);
        if (ok && (memchr(*out, '\0', len) || utf8_bad_at(*out, len) < len)) {
            ok = error_set(err, "%s: byte %zu: expected UTF-8 text", jinja,
                           memchr(*out, '\0', len) ? (size_t)((char *)memchr(*out, '\0', len) - *out)
                                                   : utf8_bad_at(*out, len));
            free(*out);
            *out = NULL;
        }
    }
    free(config);
    free(jinja);
    return ok;
}

// dir's tokenizer.json (read and checked by tok) as tokenizer.ggml.* keys: a byte-level BPE as
// llama.cpp's "gpt2" tokenizer with merges, a SentencePiece-style BPE as its "llama" tokenizer
// with scores.
static bool add_hf_json(GgufWriter *w, const char *dir, Tokenizer *tok, const GPT2Config *c, GgufVocabInfo *info,
                        Error *err) {
    const char *path = tok_path(tok);
    cJSON *root = json_parse_file(path, err);
    if (!root) return false;
    GgufVocab v = {0};
    StrInt *pairs = NULL;
    HfLayout layout = LAYOUT_GPT2;
    char *chat = NULL;
    bool ok = hf_layout(root, path, &layout, err), add_bos = false;
    const bool spm = layout == LAYOUT_SPM;
    ok = ok && hf_tokens(root, path, tok_vocab_size(tok), c->vocab_size, spm, &v, err) &&
         (spm ? spm_scores(root, path, &v, &pairs, err) && spm_pairs_complete(&v, path, pairs, err)
              : hf_merges(root, path, &v, err)) &&
         read_chat_template(dir, &chat, err);
    if (ok) {
        gguf_set_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
        gguf_set_str(w, "tokenizer.ggml.pre", LAYOUT_PRE[layout]);
        gguf_set_str_array(w, "tokenizer.ggml.tokens", (const char *const *)v.tokens, arrlenu(v.tokens));
        gguf_set_i32_array(w, "tokenizer.ggml.token_type", v.types, arrlenu(v.types));
        if (spm) {
            gguf_set_f32_array(w, "tokenizer.ggml.scores", v.scores, arrlenu(v.scores));
            gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", true);  // Llama 2's Prepend("▁")
            const cJSON *unk = item(item(root, "model"), "unk_token");
            if (cJSON_IsString(unk))
                gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)shget(v.ids, unk->valuestring));
        } else {
            gguf_set_str_array(w, "tokenizer.ggml.merges", (const char *const *)v.merges, arrlenu(v.merges));
        }
        ok = hf_specials(w, tok, c, &add_bos, err);
    }
    if (ok && chat) gguf_set_str(w, "tokenizer.chat_template", chat);
    if (ok)
        *info = (GgufVocabInfo){spm ? "llama" : "gpt2", LAYOUT_PRE[layout], (int)arrlenu(v.tokens),
                                (int)arrlenu(v.merges), add_bos, chat != NULL};
    free(chat);
    shfree(pairs);
    vocab_free(&v);
    cJSON_Delete(root);
    return ok;
}

bool gguf_vocab_add(GgufWriter *w, const char *dir, const GPT2Config *c, GgufVocabInfo *info, Error *err) {
    Tokenizer *tok;
    if (!tok_load_dir(&tok, dir, err)) return false;
    const bool ok = tok_is_json(tok) ? add_hf_json(w, dir, tok, c, info, err) : add_gpt2_files(w, dir, tok, c, info, err);
    tok_free(tok);
    return ok;
}
