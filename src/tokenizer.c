// tokenizer.c: see tokenizer.h.
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ds.h"
#include "hf_tokenizer.h"
#include "path.h"

struct Tokenizer {
    Gpt2Tokenizer *gpt2;  // exactly one of the two is set
    HfTokenizer *hf;
    char *path;           // tokenizer.json or vocab.json, as named at load (owned)
    int bos, eos;         // -1: none
};

// A new front around one of the two kinds, with its own special ids (tokenizer.h).
static Tokenizer *wrap(Gpt2Tokenizer *gpt2, HfTokenizer *hf, const char *path) {
    Tokenizer *t = xcalloc(1, sizeof *t);
    t->gpt2 = gpt2;
    t->hf = hf;
    t->path = xstrdup(path);
    if (gpt2) {
        t->bos = t->eos = gpt2_tok_eot(gpt2);  // transformers' GPT2Tokenizer: both <|endoftext|>
    } else {
        t->bos = hf_tok_bos(hf);
        t->eos = hf_tok_eos(hf);
    }
    return t;
}

bool tok_load_memory(Tokenizer **out, const char *vocab, size_t vocab_len, const char *vocab_name,
                     const char *merges, size_t merges_len, const char *merges_name, Error *err) {
    Gpt2Tokenizer *g;
    *out = NULL;
    if (!gpt2_tok_load_memory(&g, vocab, vocab_len, vocab_name, merges, merges_len, merges_name, err)) return false;
    *out = wrap(g, NULL, vocab_name);
    return true;
}

bool tok_load(Tokenizer **out, const char *vocab_path, const char *merges_path, Error *err) {
    char *vocab, *merges;
    size_t vlen, mlen;
    *out = NULL;
    if (!file_read_all(vocab_path, &vocab, &vlen, err)) return false;
    if (!file_read_all(merges_path, &merges, &mlen, err)) {
        free(vocab);
        return false;
    }
    bool ok = tok_load_memory(out, vocab, vlen, vocab_path, merges, mlen, merges_path, err);
    free(vocab);
    free(merges);
    return ok;
}

bool tok_load_json_memory(Tokenizer **out, const char *json, size_t json_len, const char *json_name,
                          const char *config, size_t config_len, const char *config_name, Error *err) {
    HfTokenizer *h;
    *out = NULL;
    if (!hf_tok_load_memory(&h, json, json_len, json_name, config, config_len, config_name, err)) return false;
    *out = wrap(NULL, h, json_name);
    return true;
}

// Whether something is at path (a file, or anything the loaders will then refuse by name).
static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

bool tok_load_dir(Tokenizer **out, const char *dir, Error *err) {
    *out = NULL;
    char *json = path_join(dir, "tokenizer.json"), *config = path_join(dir, "tokenizer_config.json");
    char *vocab = path_join(dir, "vocab.json"), *merges = path_join(dir, "merges.txt");
    bool ok;
    if (exists(json)) {
        HfTokenizer *h;
        ok = hf_tok_load(&h, json, exists(config) ? config : NULL, err);
        if (ok) *out = wrap(NULL, h, json);
    } else if (exists(vocab) || exists(merges)) {
        ok = tok_load(out, vocab, merges, err);  // a missing one of the two is named by its reader
    } else {
        ok = error_set(err, "%s: no tokenizer: expected tokenizer.json, or vocab.json and merges.txt", dir);
    }
    free(json);
    free(config);
    free(vocab);
    free(merges);
    return ok;
}

void tok_free(Tokenizer *t) {
    if (!t) return;
    gpt2_tok_free(t->gpt2);
    hf_tok_free(t->hf);
    free(t->path);
    free(t);
}

const char *tok_path(const Tokenizer *t) { return t->path; }
bool tok_is_json(const Tokenizer *t) { return t->hf != NULL; }
int tok_vocab_size(const Tokenizer *t) { return t->gpt2 ? gpt2_tok_vocab_size(t->gpt2) : hf_tok_vocab_size(t->hf); }
int tok_eot(const Tokenizer *t) {
    return t->gpt2 ? gpt2_tok_eot(t->gpt2) : hf_tok_token_to_id(t->hf, "<|endoftext|>");
}
int tok_bos(const Tokenizer *t) { return t->bos; }
int tok_eos(const Tokenizer *t) { return t->eos; }

size_t tok_special_before(const Tokenizer *t) {
    size_t before = 0, after = 0;
    if (t->hf) hf_tok_special_counts(t->hf, &before, &after);
    return before;
}

size_t tok_special_after(const Tokenizer *t) {
    size_t before = 0, after = 0;
    if (t->hf) hf_tok_special_counts(t->hf, &before, &after);
    return after;
}

void tok_set_missing_specials(Tokenizer *t, int bos, int eos) {
    const int V = tok_vocab_size(t);
    if (t->bos < 0 && bos >= 0 && bos < V) t->bos = bos;
    if (t->eos < 0 && eos >= 0 && eos < V) t->eos = eos;
}

bool tok_encode_text(Tokenizer *t, const char *what, const char *text, size_t len, bool add_special, int **ids,
                     Error *err) {
    if (t->gpt2) {  // GPT-2's post-processor adds nothing
        gpt2_tok_encode(t->gpt2, text, len, ids);
        return true;
    }
    Error e = {0};
    if (hf_tok_encode(t->hf, text, len, add_special, ids, &e)) return true;
    return error_set(err, "%s: %s", what, e.msg);
}

bool tok_encode_spans(Tokenizer *t, const char *what, const char *text, size_t len, bool add_special, int **ids,
                      size_t **spans, Error *err) {
    if (t->hf) {
        Error e = {0};
        if (hf_tok_encode_spans(t->hf, text, len, add_special, ids, spans, &e)) return true;
        return error_set(err, "%s: %s", what, e.msg);
    }
    const size_t from = arrlenu(*ids);
    gpt2_tok_encode(t->gpt2, text, len, ids);
    char *bytes = NULL;
    size_t at = 0;  // each id's bytes, back to back, are the text
    for (size_t i = from; i < arrlenu(*ids); i++) {
        arrsetlen(bytes, 0);
        gpt2_tok_decode_append(t->gpt2, (*ids)[i], &bytes);
        arrput(*spans, at);
        at += arrlenu(bytes);
        arrput(*spans, at);
    }
    CHECK(at == len);
    arrfree(bytes);
    return true;
}

void tok_encode(Tokenizer *t, const char *text, size_t len, int **ids) {
    CHECK(t->gpt2 != NULL);  // tokenizer.json encoding can fail: tok_encode_text
    gpt2_tok_encode(t->gpt2, text, len, ids);
}

void tok_decode(const Tokenizer *t, const int *ids, size_t n, bool skip_special, char **out) {
    if (t->hf) {
        hf_tok_decode(t->hf, ids, n, skip_special, out);
        return;
    }
    const int V = gpt2_tok_vocab_size(t->gpt2), eot = gpt2_tok_eot(t->gpt2);
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < V && !(skip_special && ids[i] == eot)) gpt2_tok_decode_append(t->gpt2, ids[i], out);
}

void tok_decode_append(const Tokenizer *t, int id, char **out) {
    CHECK(id >= 0 && id < tok_vocab_size(t));
    tok_decode(t, &id, 1, false, out);
}

void tok_pretokenize(Tokenizer *t, const char *text, size_t len, size_t **spans) {
    CHECK(t->gpt2 != NULL);
    gpt2_tok_pretokenize(t->gpt2, text, len, spans);
}

// ---- streaming ----------------------------------------------------------------------------

// Length of s[0..n) less a tail that a later id may still change: an incomplete UTF-8 sequence
// (GPT-2's bytes) or replacement characters U+FFFD (what a tokenizer.json decoder makes of one).
static size_t stable_length(const char *s, size_t n) {
    static const char FFFD[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    while (n >= 3 && memcmp(s + n - 3, FFFD, 3) == 0) n -= 3;
    // an incomplete sequence: a lead byte within the last 3 bytes whose sequence runs past the end
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        const unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
        const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? n - back : n;
    }
    return n;
}

// Decode the whole list into s->text (GPT-2's decode is a concatenation: just add the last id).
static void stream_decode(TokStream *s, const Tokenizer *t, bool only_last) {
    if (t->gpt2 && only_last) {
        tok_decode(t, &s->ids[arrlenu(s->ids) - 1], 1, false, &s->text);
        return;
    }
    arrsetlen(s->text, 0);
    tok_decode(t, s->ids, arrlenu(s->ids), false, &s->text);
}

void tok_stream_start(TokStream *s, const Tokenizer *t, const int *ids, size_t n) {
    memset(s, 0, sizeof *s);
    if (n) memcpy(arraddnptr(s->ids, n), ids, n * sizeof(int));
    stream_decode(s, t, false);
    s->given = stable_length(s->text, arrlenu(s->text));  // a prompt cut inside a character gets it whole
}

void tok_stream_push(TokStream *s, const Tokenizer *t, int id, char **out) {
    arrput(s->ids, id);
    stream_decode(s, t, true);
    const size_t stable = stable_length(s->text, arrlenu(s->text));
    if (stable <= s->given) return;
    memcpy(arraddnptr(*out, stable - s->given), s->text + s->given, stable - s->given);
    s->given = stable;
}

void tok_stream_finish(TokStream *s, char **out) {
    const size_t n = arrlenu(s->text);
    if (n > s->given) memcpy(arraddnptr(*out, n - s->given), s->text + s->given, n - s->given);
    arrfree(s->ids);
    arrfree(s->text);
    memset(s, 0, sizeof *s);
}
