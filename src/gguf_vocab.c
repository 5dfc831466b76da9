// gguf_vocab.c: a folder's tokenizer as tokenizer.ggml.* keys for llama.cpp (gguf_vocab.h; the
// facts are in docs/gguf.md, "Tokenizer").
#include "gguf_vocab.h"

#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "json.h"
#include "path.h"
#include "tokenizer.h"

// The tokenizer as llama.cpp's GPT-2 style BPE: tokens in id order with their types, merges in
// rank order, and the special ids.
typedef struct {
    char **tokens;    // stb_ds array of malloc'ed strings
    int32_t *types;   // stb_ds array
    char **merges;    // stb_ds array of malloc'ed strings
} GgufVocab;

// Free v's arrays and zero it.
static void vocab_free(GgufVocab *v) {
    gguf_free_strs(v->tokens);
    gguf_free_strs(v->merges);
    arrfree(v->types);
    memset(v, 0, sizeof *v);
}

// Refuse a token llama.cpp cannot hold as written (status 2): an empty one (it renames those)
// or one that is not UTF-8 (its tokenizer reads tokens as UTF-8 text).
static bool token_expressible(const char *tok, int id, const char *path, Error *err) {
    const size_t n = strlen(tok);
    if (n == 0)
        return error_set(err, "%s: token %d: expected a non-empty token, found \"\" (llama.cpp renames empty tokens)",
                         path, id);
    for (size_t i = 0; i < n;) {
        const size_t k = utf8_seq_len((const uint8_t *)tok + i, n - i);
        if (!k)
            return error_set(err, "%s: token %d: expected UTF-8 text, found byte 0x%02x at %zu (llama.cpp reads "
                                  "tokens as UTF-8)", path, id, (unsigned char)tok[i], i);
        i += k;
    }
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
        *info = (GgufVocabInfo){"gpt2", "gpt-2", (int)arrlenu(v.tokens), (int)arrlenu(v.merges)};
    }
    vocab_free(&v);
    free(vocab_path);
    free(merges_path);
    return ok;
}

bool gguf_vocab_add(GgufWriter *w, const char *dir, const GPT2Config *c, GgufVocabInfo *info, Error *err) {
    Tokenizer *tok;
    if (!tok_load_dir(&tok, dir, err)) return false;
    const bool ok = tok_is_json(tok) ? error_set(err, "%s: export-gguf reads vocab.json + merges.txt so far", tok_path(tok))
                                     : add_gpt2_files(w, dir, tok, c, info, err);
    tok_free(tok);
    return ok;
}
