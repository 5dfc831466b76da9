// test_hf_tokenizer.c: the tokenizer.json tokenizer (hf_tokenizer.h) against the `tokenizers`
// library. tests/ref/llama/tokenizer_cases.json (made by tests/make_llama_fixtures.py with
// tokenizers 0.23) holds 35 hard strings with the ids, tokens and decodes of four layouts
// (SmolLM2, Qwen2, Llama 2, Llama 2 with Metaspace); every id and every decode must be identical,
// for merges as pairs and as "a b" strings. Then: each split behavior and pre-tokenizer option
// on vectors from tokenizers' own unit tests, decoders, special ids, and hostile files (each a
// one-line error, status 2, naming the file and the field).
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ds.h"
#include "hf_regex.h"
#include "hf_tokenizer.h"
#include "json.h"
#include "test.h"

#define REF "tests/ref/llama"

static HfTokenizer *load_dir(const char *folder, bool with_config) {
    char json[300], cfg[300];
    snprintf(json, sizeof json, REF "/%s/tokenizer.json", folder);
    snprintf(cfg, sizeof cfg, REF "/%s/tokenizer_config.json", folder);
    HfTokenizer *t = NULL;
    Error err = {0};
    if (!hf_tok_load(&t, json, with_config ? cfg : NULL, &err)) printf("load %s: %s\n", json, err.msg);
    return t;
}

static bool same_ids(const int *got, size_t n, const cJSON *want) {
    if ((int)n != cJSON_GetArraySize(want)) return false;
    size_t k = 0;
    for (const cJSON *w = want->child; w; w = w->next, k++)
        if (got[k] != w->valueint) return false;
    return true;
}

static void print_ids(const char *what, const int *ids, size_t n) {
    printf("    %s:", what);
    for (size_t i = 0; i < n; i++) printf(" %d", ids[i]);
    printf("\n");
}

static int *json_ids(const cJSON *arr) {
    int *ids = NULL;
    for (const cJSON *w = arr->child; w; w = w->next) arrput(ids, w->valueint);
    return ids;
}

// decode(ids) equals want (a JSON string).
static bool decodes_to(const HfTokenizer *t, const int *ids, size_t n, bool skip, const cJSON *want) {
    char *out = NULL;
    hf_tok_decode(t, ids, n, skip, &out);
    arrput(out, '\0');
    const bool ok = !strcmp(out, want->valuestring);
    if (!ok) printf("    decode%s: got '%s', want '%s'\n", skip ? " (skip special)" : "", out, want->valuestring);
    arrfree(out);
    return ok;
}

// want is got with whitespace around it (an added token whose lstrip/rstrip took the spaces:
// tokenizers reports the matched text as its token).
static bool got_with_spaces(const char *got, const char *want) {
    const char *at = strstr(want, got);
    if (!at) return false;
    for (const char *p = want; *p; p++)
        if ((p < at || p >= at + strlen(got)) && !strchr(" \t\n", *p)) return false;
    return true;
}

// Token strings equal the reference's.
static bool tokens_match(const HfTokenizer *t, const int *ids, size_t n, const cJSON *tokens) {
    size_t k = 0;
    for (const cJSON *w = tokens->child; w && k < n; w = w->next, k++) {
        const char *got = hf_tok_id_to_token(t, ids[k]);
        if (!got || (strcmp(got, w->valuestring) && !got_with_spaces(got, w->valuestring))) {
            printf("    token %zu: got '%s', want '%s'\n", k, got ? got : "(none)", w->valuestring);
            return false;
        }
    }
    return k == n;
}

// One case of the fixture: ids with and without the post-processor, tokens, three decodes.
static void check_case(HfTokenizer *t, const char *name, int ci, const cJSON *c) {
    const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
    Error err = {0};
    int *ids = NULL, *ids_sp = NULL;
    bool ok = hf_tok_encode(t, text, strlen(text), false, &ids, &err) &&
              hf_tok_encode(t, text, strlen(text), true, &ids_sp, &err);
    const bool plain = ok && same_ids(ids, arrlenu(ids), cJSON_GetObjectItem(c, "ids"));
    const bool special = ok && same_ids(ids_sp, arrlenu(ids_sp), cJSON_GetObjectItem(c, "ids_with_special_tokens"));
    if (!plain || !special) {
        printf("  %s case %d: %s\n", name, ci, err.msg);
        print_ids("got", ids, arrlenu(ids));
        int *want = json_ids(cJSON_GetObjectItem(c, "ids"));
        print_ids("want", want, arrlenu(want));
        arrfree(want);
    }
    EXPECT(plain && tokens_match(t, ids, arrlenu(ids), cJSON_GetObjectItem(c, "tokens")),
           "%s case %d: ids and tokens equal tokenizers'", name, ci);
    EXPECT(special, "%s case %d: ids with special tokens equal tokenizers'", name, ci);
    int *ref = json_ids(cJSON_GetObjectItem(c, "ids")), *ref_sp = json_ids(cJSON_GetObjectItem(c, "ids_with_special_tokens"));
    EXPECT(decodes_to(t, ref, arrlenu(ref), false, cJSON_GetObjectItem(c, "decoded")) &&
               decodes_to(t, ref, arrlenu(ref), true, cJSON_GetObjectItem(c, "decoded_skip_special")) &&
               decodes_to(t, ref_sp, arrlenu(ref_sp), true, cJSON_GetObjectItem(c, "decoded_with_special_skip")),
           "%s case %d: the three decodes equal tokenizers'", name, ci);
    arrfree(ids);
    arrfree(ids_sp);
    arrfree(ref);
    arrfree(ref_sp);
}

// decode of every prefix of the ids of "😀 👍🏽 中": one U+FFFD per incomplete character
// (ByteLevel) or per byte (ByteFallback).
static void check_prefixes(HfTokenizer *t, const char *name, const cJSON *dp) {
    int *ids = json_ids(cJSON_GetObjectItem(dp, "ids"));
    int k = 1, bad = 0;
    for (const cJSON *w = cJSON_GetObjectItem(dp, "decoded")->child; w; w = w->next, k++)
        bad += !decodes_to(t, ids, (size_t)k, false, w);
    EXPECT(bad == 0 && k - 1 == (int)arrlenu(ids), "%s: decodes of all %d prefixes of an emoji string", name, k - 1);
    arrfree(ids);
}

// The same ids with merges as "a b" strings (compact JSON) as with pairs.
static void check_strmerges(HfTokenizer *t, const char *name, const char *folder, const cJSON *cases) {
    HfTokenizer *s = load_dir(folder, true);
    int same = 0, n = 0;
    for (const cJSON *c = cases->child; s && c; c = c->next, n++) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        int *a = NULL, *b = NULL;
        Error err = {0};
        hf_tok_encode(t, text, strlen(text), true, &a, &err);
        hf_tok_encode(s, text, strlen(text), true, &b, &err);
        same += arrlenu(a) == arrlenu(b) && (!arrlenu(a) || !memcmp(a, b, arrlenu(a) * sizeof(int)));
        arrfree(a);
        arrfree(b);
    }
    EXPECT(s && same == n && n == 35, "%s: %s (merges as strings) gives the same ids on %d/%d cases", name, folder, same, n);
    hf_tok_free(s);
}

// Where transformers' AutoTokenizer differs from the file (docs/llama.md, section 5.9): counted
// and printed, not failed; the reference is the tokenizers library.
static void report_auto(const char *name, const cJSON *entry) {
    int n = 0, differ = 0;
    for (const cJSON *c = cJSON_GetObjectItem(entry, "cases")->child; c; c = c->next, n++) {
        const cJSON *a = cJSON_GetObjectItem(c, "auto_ids");
        int *want = json_ids(cJSON_GetObjectItem(c, "ids_with_special_tokens"));
        differ += a && !same_ids(want, arrlenu(want), a);
        arrfree(want);
    }
    printf("  %s: AutoTokenizer (transformers 5.17) differs from tokenizer.json on %d of %d cases\n", name, differ, n);
}

static void test_fixtures(void) {
    Error err = {0};
    cJSON *root = json_parse_file(REF "/tokenizer_cases.json", &err);
    EXPECT(root != NULL, "tokenizer_cases.json: %s", err.msg);
    if (!root) return;
    const cJSON *toks = cJSON_GetObjectItem(root, "tokenizers");
    int n_tok = 0;
    for (const cJSON *e = toks->child; e; e = e->next, n_tok++) {
        const char *name = e->string, *folder = cJSON_GetObjectItem(e, "folder")->valuestring;
        HfTokenizer *t = load_dir(folder, true);
        EXPECT(t != NULL, "%s: %s loads", name, folder);
        if (!t) continue;
        const int want_size = cJSON_GetObjectItem(e, "vocab_size_with_added")->valueint;
        EXPECT(hf_tok_vocab_size(t) == want_size, "%s: %d ids (want %d)", name, hf_tok_vocab_size(t), want_size);
        int ci = 0;
        for (const cJSON *c = cJSON_GetObjectItem(e, "cases")->child; c; c = c->next, ci++) check_case(t, name, ci, c);
        check_prefixes(t, name, cJSON_GetObjectItem(e, "decode_prefixes"));
        const cJSON *sm = cJSON_GetObjectItem(e, "strmerges_folder");
        if (sm) check_strmerges(t, name, sm->valuestring, cJSON_GetObjectItem(e, "cases"));
        report_auto(name, e);
        hf_tok_free(t);
    }
    EXPECT(n_tok == 4, "four tokenizer layouts in the fixture (%d)", n_tok);
    cJSON_Delete(root);
}


// ---- hostile files -------------------------------------------------------------------------

static char *read_text(const char *path) {
    char *text = NULL;
    size_t len;
    Error err = {0};
    if (!file_read_all(path, &text, &len, &err)) printf("%s\n", err.msg);
    return text;
}

// The item at a path like "model.merges[3]" or "pre_tokenizer.pretokenizers[1].type"; with
// parent set, its parent (to replace or delete the item) and the last step in *key / *index.
static cJSON *item_at(cJSON *root, const char *path, cJSON **parent, char *key, int *index) {
    cJSON *cur = root, *up = NULL;
    char name[100];
    *index = -1;
    key[0] = '\0';
    for (const char *p = path; *p && cur;) {
        up = cur;
        if (*p == '[') {
            *index = atoi(p + 1);
            key[0] = '\0';
            cur = cJSON_GetArrayItem(cur, *index);
            p = strchr(p, ']') + 1;
        } else {
            size_t n = strcspn(p, ".[");
            snprintf(name, sizeof name, "%.*s", (int)n, p);
            strcpy(key, name);
            *index = -1;
            cur = cJSON_GetObjectItem(cur, name);
            p += n;
        }
        if (*p == '.') p++;
    }
    if (parent) *parent = up;
    return cur;
}

// json with the item at path replaced by the JSON text value (inserted if absent, appended to an
// array at index == its size; deleted if value is NULL), as new compact text.
static char *mutate(const char *json, const char *path, const char *value) {
    char key[100];
    cJSON *root = cJSON_Parse(json), *parent;
    int index;
    cJSON *old = item_at(root, path, &parent, key, &index);
    cJSON *v = value ? cJSON_Parse(value) : NULL;
    CHECK(parent && (v || !value));
    if (!value) {
        if (index >= 0) cJSON_DeleteItemFromArray(parent, index);
        else cJSON_DeleteItemFromObjectCaseSensitive(parent, key);
    } else if (index >= 0) {
        if (old) cJSON_ReplaceItemInArray(parent, index, v);
        else cJSON_AddItemToArray(parent, v);
    } else if (old) {
        cJSON_ReplaceItemInObjectCaseSensitive(parent, key, v);
    } else {
        cJSON_AddItemToObject(parent, key, v);
    }
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

// The folder's tokenizer.json with one item changed (see mutate).
static char *variant(const char *folder, const char *path, const char *value) {
    char file[300];
    snprintf(file, sizeof file, REF "/%s/tokenizer.json", folder);
    char *text = read_text(file), *out = mutate(text, path, value);
    free(text);
    return out;
}

static void expect_refused(const char *json, size_t len, const char *config, const char *phrase, const char *what) {
    HfTokenizer *t = NULL;
    Error err = {0};
    bool ok = hf_tok_load_memory(&t, json, len, "tok.json", config, config ? strlen(config) : 0, "tok_config.json", &err);
    const bool one_line = !strchr(err.msg, '\n');
    EXPECT(!ok && !t && err.status == EXIT_BAD_INPUT && strstr(err.msg, phrase) && one_line,
           "%s: refused with '%s' (got: %s)", what, phrase, ok ? "loaded" : err.msg);
    hf_tok_free(t);
}

static void test_hostile(void) {
    static const struct { const char *folder, *path, *value, *phrase; } V[] = {
        {"tok_llama2", "model.type", "\"WordPiece\"", "tok.json: model.type: unsupported 'WordPiece' (supported: BPE)"},
        {"tok_llama2", "model.type", "\"Unigram\"", "model.type: unsupported 'Unigram'"},
        {"tok_llama2", "model.dropout", "0.1", "model.dropout: unsupported 0.1"},
        {"tok_llama2", "model.dropout", "\"x\"", "model.dropout: expected null or a number"},
        {"tok_llama2", "model.continuing_subword_prefix", "\"##\"", "model.continuing_subword_prefix: unsupported"},
        {"tok_llama2", "model.end_of_word_suffix", "\"</w>\"", "model.end_of_word_suffix: unsupported"},
        {"tok_qwen2", "model.continuing_subword_prefix", "\"\"", NULL},  // Qwen2's real files say ""
        {"tok_qwen2", "model.end_of_word_suffix", "\"\"", NULL},
        {"tok_llama2", "model.cache_capacity", "10", "model: unknown key 'cache_capacity'"},
        {"tok_llama2", "model.fuse_unk", "1", "model.fuse_unk: expected true or false, found a number"},
        {"tok_llama2", "model.unk_token", "\"<nope>\"", "model.unk_token: '<nope>' is not in model.vocab"},
        {"tok_llama2", "model.vocab", "[]", "model.vocab: expected an object, found an array"},
        {"tok_llama2", "model.vocab", "{}", "model.vocab: 0 tokens"},
        {"tok_llama2", "model.vocab.<unk>", "5000", "model.vocab: token '<unk>': id must be an integer in [0, 558]"},
        {"tok_llama2", "model.vocab.<unk>", "-1", "model.vocab: token '<unk>': id must be"},
        {"tok_llama2", "model.vocab.<unk>", "1", "model.vocab: id 1 is used by both"},
        {"tok_llama2", "model.vocab.<unk>", "\"0\"", "model.vocab: token '<unk>': id must be"},
        {"tok_llama2", "model.merges", "{}", "model.merges: expected an array, found an object"},
        {"tok_llama2", "model.merges[3]", "[\"zz\", \"q\"]", "model.merges[3]: 'zz' + 'q': 'zz' is not in model.vocab"},
        {"tok_llama2", "model.merges[3]", "\"r e\"", "model.merges[3]: expected a pair"},
        {"tok_llama2", "model.merges[3]", "[\"r\"]", "model.merges[3]: expected a pair"},
        {"tok_llama2", "model.merges[3]", "[\"r\", 5]", "model.merges[3]: expected a pair"},
        {"tok_llama2", "model.merges[3]", "[\"r\", \"e\"]", "model.merges[3]: the pair ('r', 'e') appears twice"},
        {"tok_llama2", "model.merges[3]", "[\"h\", \"e\"]", "model.merges[3]: the pair ('h', 'e') appears twice"},
        {"tok_llama2", "model.merges[0]", "[\"a\", \"zz\"]", "model.merges[0]: 'a' + 'zz': 'zz' is not in model.vocab"},
        {"tok_llama2", "model", NULL, "model: missing"},
        {"tok_llama2", "version", "\"2.0\"", "version: unsupported 2.0"},
        {"tok_llama2", "truncation", "{\"max_length\": 8}", "truncation: unsupported value, an object (supported: null"},
        {"tok_llama2", "padding", "{}", "padding: unsupported"},
        {"tok_llama2", "extra", "1", "(top level): unknown key 'extra'"},
        {"tok_llama2", "normalizer.normalizers[0].type", "\"NFKC\"", "normalizer.normalizers[0].type: unsupported 'NFKC' (supported: NFC, Prepend, Replace, Sequence)"},
        {"tok_llama2", "normalizer.normalizers[1].pattern", "{\"Regex\": \"\\\\w+\"}", "normalizer.normalizers[1].pattern.Regex: unsupported regex at byte 0: the escape \\w"},
        {"tok_llama2", "normalizer.normalizers[1].pattern", "{\"Regex\": \"(\"}", "normalizer.normalizers[1].pattern.Regex: regex does not compile"},
        {"tok_llama2", "normalizer.normalizers[1].pattern", "{\"Glob\": \" \"}", "normalizer.normalizers[1].pattern: expected {\"String\": ...} or {\"Regex\": ...}"},
        {"tok_llama2", "normalizer.normalizers[1].content", "7", "normalizer.normalizers[1].content: expected a string, found a number"},
        {"tok_llama2", "normalizer.normalizers[0].prepend", NULL, "normalizer.normalizers[0].prepend: expected a string, found nothing"},
        {"tok_llama2", "normalizer.normalizers", "{}", "normalizer.normalizers: expected an array, found an object"},
        {"tok_llama2", "normalizer.normalizers[0]", "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Sequence\", \"normalizers\": []}]}]}]}]}]}]}]}", "Sequences nested deeper than 8"},
        {"tok_llama2", "normalizer.type", "42", "normalizer.type: expected a string, found a number"},
        {"tok_llama2", "normalizer", "[]", "normalizer: expected an object, found an array"},
        {"tok_smollm2", "pre_tokenizer.pretokenizers[1].type", "\"Whitespace\"", "tok.json: pre_tokenizer.pretokenizers[1].type: unsupported 'Whitespace' (supported: Sequence, Split, Digits, ByteLevel, Metaspace)"},
        {"tok_smollm2", "pre_tokenizer.pretokenizers[1].add_prefix_space", NULL, "pre_tokenizer.pretokenizers[1].add_prefix_space: expected true or false, found nothing"},
        {"tok_smollm2", "pre_tokenizer.pretokenizers[0].individual_digits", "\"yes\"", "pre_tokenizer.pretokenizers[0].individual_digits: expected true or false"},
        {"tok_qwen2", "pre_tokenizer.pretokenizers[0].behavior", "\"Split\"", "pre_tokenizer.pretokenizers[0].behavior: unsupported 'Split'"},
        {"tok_qwen2", "pre_tokenizer.pretokenizers[0].invert", NULL, "pre_tokenizer.pretokenizers[0].invert: expected true or false, found nothing"},
        {"tok_qwen2", "pre_tokenizer.pretokenizers[0].pattern", "{\"Regex\": \"\\\\d+\"}", "pre_tokenizer.pretokenizers[0].pattern.Regex: unsupported regex at byte 0: the escape \\d"},
        {"tok_qwen2", "pre_tokenizer.pretokenizers[0].pattern", "{\"Regex\": \"\\\\p{Han}+\"}", "pattern.Regex: unsupported regex at byte 0: \\p{Han}: only general categories"},
        {"tok_qwen2", "pre_tokenizer.pretokenizers[0].pattern", "{\"Regex\": \"(?i:ss)\"}", "pattern.Regex: unsupported regex at byte 5: 'ss' under (?i:"},
        {"tok_qwen2", "pre_tokenizer.pretokenizers[0].pattern", "{\"Regex\": \"[a[b]]\"}", "pattern.Regex: unsupported regex at byte 2: '[' inside a character class"},
        {"tok_qwen2", "pre_tokenizer.pretokenizers[0].pattern", "{\"Regex\": \"(?<n>a)\"}", "pattern.Regex: unsupported regex at byte 0: the group"},
        {"tok_qwen2", "pre_tokenizer.pretokenizers[0].pattern", "{\"Regex\": \"a{,3}\"}", "pattern.Regex: unsupported regex at byte 1: the quantifier {,n}"},
        {"tok_qwen2", "pre_tokenizer.pretokenizers[0].pattern", "{\"Regex\": \"(a)\\\\1\"}", "pattern.Regex: unsupported regex at byte 3: the escape \\1"},
        {"tok_qwen2", "pre_tokenizer.pretokenizers[0].pattern", "{\"Regex\": \"[\\\\S]\"}", "pattern.Regex: unsupported regex at byte 1: \\S inside a character class"},
        {"tok_qwen2", "normalizer.type", "\"Lowercase\"", "normalizer.type: unsupported 'Lowercase'"},
        {"tok_llama2_metaspace", "pre_tokenizer.prepend_scheme", "\"sometimes\"", "pre_tokenizer.prepend_scheme: unsupported 'sometimes'"},
        {"tok_llama2_metaspace", "pre_tokenizer.replacement", "\"ab\"", "pre_tokenizer.replacement: expected one character"},
        {"tok_llama2_metaspace", "pre_tokenizer.add_prefix_space", "false", "pre_tokenizer.add_prefix_space: false contradicts prepend_scheme 'first'"},
        {"tok_llama2_metaspace", "normalizer", "{\"type\": \"NFC\"}", NULL},  // loads: first piece whole
        {"tok_llama2_metaspace", "pre_tokenizer", "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": true}, {\"type\": \"Metaspace\", \"replacement\": \"x\", \"prepend_scheme\": \"first\"}]}", NULL},
        {"tok_llama2", "pre_tokenizer", "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": true}, {\"type\": \"Metaspace\", \"replacement\": \"x\", \"prepend_scheme\": \"first\"}]}", "pre_tokenizer.pretokenizers[1]: prepend_scheme 'first' after a normalizer and a split: unsupported"},
        {"tok_llama2", "post_processor.type", "\"RobertaProcessing\"", "post_processor.type: unsupported 'RobertaProcessing' (supported: TemplateProcessing, ByteLevel, Sequence)"},
        {"tok_llama2", "post_processor.single[0]", "{\"SpecialToken\": {\"id\": \"<bos>\", \"type_id\": 0}}", "post_processor.single[0]: special token '<bos>' is not in post_processor.special_tokens"},
        {"tok_llama2", "post_processor.single[1]", "{\"Sequence\": {\"id\": \"B\", \"type_id\": 0}}", "post_processor.single[1]: Sequence 'B' in the single template"},
        {"tok_llama2", "post_processor.single[1]", "{\"Other\": {}}", "post_processor.single[1]: expected {\"SpecialToken\""},
        {"tok_llama2", "post_processor.special_tokens.<s>.ids", "[99999]", "post_processor.special_tokens.<s>.ids: expected ids in [0, 560]"},
        {"tok_llama2", "post_processor.single", "7", "post_processor.single: expected an array, found a number"},
        {"tok_llama2", "decoder.decoders[3].type", "\"CTC\"", "decoder.decoders[3].type: unsupported 'CTC' (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence)"},
        {"tok_llama2", "decoder.decoders[3].content", "\"  \"", "decoder.decoders[3].content: expected one character"},
        {"tok_llama2", "decoder.decoders[3].start", "-1", "decoder.decoders[3].start: expected an integer"},
        {"tok_llama2", "decoder.decoders[3].stop", "1e9", "decoder.decoders[3].stop: expected an integer in [0, 4096]"},
        {"tok_llama2", "decoder.decoders[1].extra", "true", "decoder.decoders[1]: unknown key 'extra'"},
        {"tok_llama2", "decoder.decoders[0].pattern", "{\"Regex\": \"\\\\b\"}", "decoder.decoders[0].pattern.Regex: unsupported regex at byte 0: the escape \\b"},
        {"tok_llama2", "added_tokens", "{}", "added_tokens: expected an array, found an object"},
        {"tok_llama2", "added_tokens[3].id", "99999", "added_tokens[3].id: '<|im_start|>' has id 99999, but tokenizers gives it 559"},
        {"tok_llama2", "added_tokens[3].id", "-3", "added_tokens[3].id: expected a non-negative integer"},
        {"tok_llama2", "added_tokens[0].id", "7", "added_tokens[0].id: '<unk>' has id 7, but tokenizers gives it 0 (its id in model.vocab)"},
        {"tok_llama2", "added_tokens[3].content", "5", "added_tokens[3].content: expected a string, found a number"},
        {"tok_llama2", "added_tokens[3].content", "\"\"", "added_tokens[3].content: is empty"},
        {"tok_llama2", "added_tokens[4].content", "\"<|im_start|>\"", "added_tokens[4]: '<|im_start|>' appears twice in added_tokens"},
        {"tok_llama2", "added_tokens[3].special", NULL, "added_tokens[3].special: expected true or false, found nothing"},
        {"tok_llama2", "added_tokens[3].lstrip", "\"no\"", "added_tokens[3].lstrip: expected true or false, found a string"},
        {"tok_llama2", "added_tokens[3].color", "1", "added_tokens[3]: unknown key 'color'"},
        {"tok_llama2", "added_tokens[3]", "7", "added_tokens[3]: expected an object, found a number"},
    };
    for (size_t k = 0; k < sizeof V / sizeof *V; k++) {
        char *json = variant(V[k].folder, V[k].path, V[k].value);
        char what[160];
        snprintf(what, sizeof what, "%s with %s = %.40s", V[k].folder, V[k].path, V[k].value ? V[k].value : "(deleted)");
        if (V[k].phrase) {
            expect_refused(json, strlen(json), NULL, V[k].phrase, what);
        } else {
            HfTokenizer *t = NULL;
            Error err = {0};
            EXPECT(hf_tok_load_memory(&t, json, strlen(json), "tok.json", NULL, 0, NULL, &err), "%s: loads (%s)", what, err.msg);
            hf_tok_free(t);
        }
        free(json);
    }
}

// Broken files as a whole, the config file, and text that is not UTF-8.
static void test_hostile_files(void) {
    char *json = read_text(REF "/tok_llama2/tokenizer.json");
    const size_t len = strlen(json);
    expect_refused(json, len / 2, NULL, "tok.json: invalid JSON", "truncated to half");
    expect_refused(json, 0, NULL, "tok.json: invalid JSON", "empty file");
    expect_refused("[1, 2]", 6, NULL, "tok.json: (top level): expected an object, found an array", "an array");
    expect_refused("{\"model\": 1}\0x", 14, NULL, "tok.json: byte 12 is a NUL byte", "a NUL byte");
    expect_refused(json, (size_t)300 << 20, NULL, "tok.json: 314572800 bytes; the largest tokenizer file accepted is 256 MiB",
                   "a 300 MiB file");
    char *deep = NULL;  // 5000 nested arrays: beyond cJSON's nesting limit
    for (int i = 0; i < 5000; i++) arrput(deep, '[');
    for (int i = 0; i < 5000; i++) arrput(deep, ']');
    expect_refused(deep, arrlenu(deep), NULL, "tok.json: invalid JSON", "5000 nested arrays");
    arrfree(deep);
    char *v = variant("tok_llama2", "model.vocab.<unk>", NULL);  // re-add <unk> twice by text surgery
    char *dup = NULL;
    const char *at = strstr(v, "\"vocab\":{");
    CHECK(at);
    at += strlen("\"vocab\":{");
    memcpy(arraddnptr(dup, (size_t)(at - v)), v, (size_t)(at - v));
    const char *twice = "\"<s>\":1,";
    memcpy(arraddnptr(dup, strlen(twice)), twice, strlen(twice));
    memcpy(arraddnptr(dup, strlen(at)), at, strlen(at));
    expect_refused(dup, arrlenu(dup), NULL, "tok.json: key '<s>' appears twice in one object", "a token twice in vocab");
    arrfree(dup);
    free(v);
    char big[6000];
    memset(big, 'a', sizeof big - 3);
    big[0] = '"';
    big[sizeof big - 3] = '"';
    big[sizeof big - 2] = '\0';
    char *vb = variant("tok_llama2", "added_tokens[3].content", big);
    expect_refused(vb, strlen(vb), NULL, "added_tokens[3].content: a string of 5996 bytes (the limit is 4096)", "a 6 kB token");
    free(vb);
    char *bad_utf8 = variant("tok_llama2", "added_tokens[3].content", "\"<x\xff>\"");
    expect_refused(bad_utf8, strlen(bad_utf8), NULL, "added_tokens[3].content: the string is not valid UTF-8", "invalid UTF-8");
    free(bad_utf8);
    expect_refused(json, len, "{\"bos_token\": \"<nope>\"}", "tok_config.json: bos_token: '<nope>' is not a token", "config bos");
    expect_refused(json, len, "{\"eos_token\": 2}", "tok_config.json: eos_token: expected a string or {\"content\": string}, found a number", "config eos");
    expect_refused(json, len, "{\"pad_token\": {\"content\": 5}}", "tok_config.json: pad_token: expected a string", "config pad");
    expect_refused(json, len, "{\"bos_token\": ", "tok_config.json: invalid JSON", "truncated config");
    free(json);
    HfTokenizer *t = NULL;
    Error err = {0};
    EXPECT(!hf_tok_load(&t, REF "/missing/tokenizer.json", NULL, &err) && strstr(err.msg, REF "/missing/tokenizer.json"),
           "a missing file is named: %s", err.msg);
    t = load_dir("tok_qwen2", true);
    int *ids = NULL;
    err = (Error){0};
    EXPECT(t && !hf_tok_encode(t, "ab\xc3(", 4, false, &ids, &err) && err.status == EXIT_BAD_INPUT &&
               strstr(err.msg, "byte 2 is not valid UTF-8"),
           "text with invalid UTF-8 is refused, naming the byte: %s", err.msg);
    arrfree(ids);
    hf_tok_free(t);
}

// ---- components the fixtures do not use, on tokenizers' own unit-test vectors ----------------

// A tokenizer.json whose vocabulary is the printable ASCII characters plus words (separated by
// '|'), with ignore_merges so that a piece equal to a word is that word's id: the ids show the
// pieces. model_extra, pre, norm, dec and added are JSON text or NULL.
static HfTokenizer *synth(const char *words, const char *model_extra, const char *pre, const char *norm,
                          const char *dec, const char *added) {
    cJSON *vocab = cJSON_CreateObject();
    char tok[200];
    for (int c = 32; c < 127; c++) {
        snprintf(tok, sizeof tok, "%c", c);
        cJSON_AddNumberToObject(vocab, tok, c - 32);
    }
    for (const char *w = words; w && *w;) {
        size_t n = strcspn(w, "|");
        snprintf(tok, sizeof tok, "%.*s", (int)n, w);
        if (!cJSON_GetObjectItemCaseSensitive(vocab, tok)) cJSON_AddNumberToObject(vocab, tok, cJSON_GetArraySize(vocab));
        w += n + (w[n] == '|');
    }
    char *v = cJSON_PrintUnformatted(vocab), *json = NULL;
    cJSON_Delete(vocab);
    sb_appendf(&json, "{\"version\": \"1.0\", \"added_tokens\": %s, \"normalizer\": %s, \"pre_tokenizer\": %s, "
                      "\"post_processor\": null, \"decoder\": %s, \"model\": {\"type\": \"BPE\", \"ignore_merges\": true, "
                      "%s%s\"vocab\": %s, \"merges\": []}}",
               added ? added : "[]", norm ? norm : "null", pre ? pre : "null", dec ? dec : "null",
               model_extra ? model_extra : "", model_extra ? ", " : "", v);
    free(v);
    HfTokenizer *t = NULL;
    Error err = {0};
    if (!hf_tok_load_memory(&t, json, arrlenu(json), "synth.json", NULL, 0, NULL, &err)) printf("  synth: %s\n", err.msg);
    arrfree(json);
    return t;
}

// The token strings of text's ids joined by '|' (into buf).
static const char *pieces(HfTokenizer *t, const char *text, char *buf, size_t cap) {
    int *ids = NULL;
    Error err = {0};
    buf[0] = '\0';
    if (!t || !hf_tok_encode(t, text, strlen(text), false, &ids, &err)) {
        snprintf(buf, cap, "(error: %.200s)", t ? err.msg : "no tokenizer");
        return buf;
    }
    for (size_t i = 0; i < arrlenu(ids); i++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", i ? "|" : "", hf_tok_id_to_token(t, ids[i]));
    arrfree(ids);
    return buf;
}

static void expect_pieces(const char *words, const char *model_extra, const char *pre, const char *norm,
                          const char *text, const char *want, const char *what) {
    HfTokenizer *t = synth(words, model_extra, pre, norm, NULL, NULL);
    char got[600];
    pieces(t, text, got, sizeof got);
    EXPECT(!strcmp(got, want), "%s: '%s' -> %s (got %s)", what, text, want, got);
    hf_tok_free(t);
}

static void test_pre_tokenizers(void) {
    // split.rs "basic" (its \w+|[^\w\s]+ spelled with general categories), inverted
    static const struct { const char *behavior, *want; } SPLIT[] = {
        {"Removed", "How|are|you|doing|?"},
        {"Isolated", "How| |are| |you| |doing|?"},
        {"MergedWithPrevious", "How |are |you |doing|?"},
        {"MergedWithNext", "How| are| you| doing|?"},
        {"Contiguous", "How| |are| |you| |doing?"},
    };
    const char *words = "How|are|you|doing|How |are |you | are| you| doing|doing?";
    for (size_t k = 0; k < 5; k++) {
        char pre[300];
        snprintf(pre, sizeof pre, "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"[\\\\p{L}\\\\p{N}]+|[^\\\\p{L}\\\\p{N}\\\\s]+\"}, "
                 "\"behavior\": \"%s\", \"invert\": true}", SPLIT[k].behavior);
        expect_pieces(words, NULL, pre, NULL, "How are you doing?", SPLIT[k].want, SPLIT[k].behavior);
    }
    // normalizer.rs "split": the-final--countdown on the string "-"
    static const struct { const char *behavior, *want; } DASH[] = {
        {"Removed", "the|final|countdown"},
        {"Isolated", "the|-|final|-|-|countdown"},
        {"MergedWithPrevious", "the-|final-|-|countdown"},
        {"MergedWithNext", "the|-final|-|-countdown"},
        {"Contiguous", "the|-|final|--|countdown"},
    };
    for (size_t k = 0; k < 5; k++) {
        char pre[200];
        snprintf(pre, sizeof pre, "{\"type\": \"Split\", \"pattern\": {\"String\": \"-\"}, \"behavior\": \"%s\", "
                 "\"invert\": false}", DASH[k].behavior);
        expect_pieces("the|final|countdown|the-|final-|-final|-countdown|--", NULL, pre, NULL, "the-final--countdown",
                      DASH[k].want, DASH[k].behavior);
    }
    expect_pieces("Hello", NULL, "{\"type\": \"Split\", \"pattern\": {\"String\": \"Hello\"}, \"behavior\": \"Removed\", "
                  "\"invert\": true}", NULL, "Hello Hello Hello", "Hello|Hello|Hello", "Split invert on a String");
    expect_pieces("Hey,|man!", NULL, "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s+\"}, \"behavior\": \"Removed\", "
                  "\"invert\": false}", NULL, "Hey, man!", "Hey,|man!", "Split on \\s+");
    // digits.rs
    expect_pieces("Hey |123| friend!", NULL, "{\"type\": \"Digits\", \"individual_digits\": false}", NULL,
                  "Hey 123 friend!", "Hey |123| friend!", "Digits");
    expect_pieces("Hey | friend!", NULL, "{\"type\": \"Digits\", \"individual_digits\": true}", NULL,
                  "Hey 123 friend!", "Hey |1|2|3| friend!", "Digits individual");
    // byte_level.rs "pre_tokenization", with and without the prefix space
    const char *bl = "Hello|Ġmy|Ġfriend|,|Ġhow|Ġis|Ġyour|Ġday|Ġgoing|?|ĠHello";
    expect_pieces(bl, NULL, "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}", NULL,
                  "Hello my friend, how is your day going?", "Hello|Ġmy|Ġfriend|,|Ġhow|Ġis|Ġyour|Ġday|Ġgoing|?", "ByteLevel");
    expect_pieces(bl, NULL, "{\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true}", NULL,
                  "Hello my friend", "ĠHello|Ġmy|Ġfriend", "ByteLevel add_prefix_space");
    // metaspace.rs
    const char *ms = "▁Hey|▁friend!|▁|Hey▁|▁Hey▁my▁friend▁|<s>|how▁are▁you|▁how▁are▁you";
    expect_pieces(ms, NULL, "{\"type\": \"Metaspace\", \"replacement\": \"▁\", \"prepend_scheme\": \"always\", \"split\": true}",
                  NULL, "Hey friend!", "▁Hey|▁friend!", "Metaspace");
    expect_pieces(ms, NULL, "{\"type\": \"Metaspace\", \"replacement\": \"▁\", \"add_prefix_space\": true}", NULL,
                  "Hey   friend!", "▁Hey|▁|▁|▁friend!", "Metaspace (old add_prefix_space form), several spaces");
    expect_pieces(ms, NULL, "{\"type\": \"Metaspace\", \"replacement\": \"▁\", \"prepend_scheme\": \"never\", \"split\": false}",
                  NULL, "Hey ", "Hey▁", "Metaspace never");
    expect_pieces(ms, NULL, "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(<s>)\"}, "
                  "\"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"Metaspace\", \"replacement\": \"▁\", "
                  "\"prepend_scheme\": \"first\", \"split\": false}]}", NULL, "Hey my friend <s>how▁are you",
                  "▁Hey▁my▁friend▁|<s>|how▁are▁you", "Metaspace first after a Split");
}

static void test_model_options(void) {
    // merge_word: unknown characters become unk (fused or not) or are dropped; € is not in the vocab
    expect_pieces("<unk>", "\"unk_token\": \"<unk>\", \"fuse_unk\": true", NULL, NULL, "a€€b", "a|<unk>|b", "fuse_unk");
    expect_pieces("<unk>", "\"unk_token\": \"<unk>\", \"fuse_unk\": false", NULL, NULL, "a€€b", "a|<unk>|<unk>|b", "unk");
    expect_pieces("<unk>", NULL, NULL, NULL, "a€€b", "a|b", "no unk_token: dropped");
    expect_pieces("<0xE2>|<0x82>|<0xAC>|<unk>", "\"unk_token\": \"<unk>\", \"byte_fallback\": true", NULL, NULL, "a€",
                  "a|<0xE2>|<0x82>|<0xAC>", "byte_fallback");
    expect_pieces("<0xE2>|<unk>", "\"unk_token\": \"<unk>\", \"byte_fallback\": true", NULL, NULL, "a€",
                  "a|<unk>", "byte_fallback with a byte token missing: unk");
    expect_pieces("é", NULL, NULL, "{\"type\": \"NFC\"}", "e\xcc\x81", "é", "NFC composes e + U+0301");
    expect_pieces("▁Hey▁you", NULL, NULL, "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"▁\"}, "
                  "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"▁\"}]}", "Hey you", "▁Hey▁you",
                  "Prepend + Replace");
    expect_pieces("xxx", NULL, NULL, "{\"type\": \"Replace\", \"pattern\": {\"Regex\": \"a+\"}, \"content\": \"x\"}", "aaxaa",
                  "xxx", "Replace with a regex");
}

// decode of the given tokens (by name) with a synthetic tokenizer's decoder.
static void expect_decode(const char *dec, const char *const *tokens, const char *want, const char *what) {
    char words[300] = "";
    for (size_t k = 0; tokens[k]; k++) snprintf(words + strlen(words), sizeof words - strlen(words), "%s|", tokens[k]);
    HfTokenizer *t = synth(words, NULL, NULL, NULL, dec, NULL);
    int *ids = NULL;
    for (size_t k = 0; t && tokens[k]; k++) arrput(ids, hf_tok_token_to_id(t, tokens[k]));
    char *out = NULL;
    if (t) hf_tok_decode(t, ids, arrlenu(ids), false, &out);
    arrput(out, '\0');
    EXPECT(t && !strcmp(out, want), "%s: decodes to '%s' (got '%s')", what, want, out);
    arrfree(out);
    arrfree(ids);
    hf_tok_free(t);
}

static void test_decoders(void) {
    // byte_fallback.rs and strip.rs
    const char *bf = "{\"type\": \"ByteFallback\"}";
    expect_decode(bf, (const char *[]){"<0x61>", NULL}, "a", "ByteFallback one byte");
    expect_decode(bf, (const char *[]){"<0xE5>", NULL}, "\xEF\xBF\xBD", "ByteFallback incomplete character");
    expect_decode(bf, (const char *[]){"<0xE5>", "<0x8f>", "a", NULL}, "\xEF\xBF\xBD\xEF\xBF\xBD" "a",
                  "ByteFallback: one U+FFFD per byte of an invalid run");
    expect_decode(bf, (const char *[]){"<0xE5>", "<0x8f>", "<0xab>", "a", NULL}, "叫a", "ByteFallback whole character");
    expect_decode("{\"type\": \"Strip\", \"content\": \"H\", \"start\": 1, \"stop\": 0}",
                  (const char *[]){"Hey", " friend!", "HHH", NULL}, "ey friend!HH", "Strip start");
    expect_decode("{\"type\": \"Strip\", \"content\": \"y\", \"start\": 0, \"stop\": 1}",
                  (const char *[]){"Hey", " friend!", NULL}, "He friend!", "Strip stop");
    expect_decode("{\"type\": \"Strip\", \"content\": \"y\", \"start\": 3, \"stop\": 3}", (const char *[]){"yy", NULL}, "",
                  "Strip past the whole token (tokenizers would panic): empty");
    expect_decode(NULL, (const char *[]){"Hey", "friend", NULL}, "Hey friend", "no decoder: tokens joined by spaces");
    expect_decode("{\"type\": \"Metaspace\", \"replacement\": \"▁\", \"prepend_scheme\": \"always\"}",
                  (const char *[]){"▁Hey", "▁friend", NULL}, "Hey friend", "Metaspace decoder drops the first ▁");
    expect_decode("{\"type\": \"Metaspace\", \"replacement\": \"▁\", \"prepend_scheme\": \"never\"}",
                  (const char *[]){"▁Hey", "▁friend", NULL}, " Hey friend", "Metaspace decoder, never");
    expect_decode("{\"type\": \"ByteLevel\"}", (const char *[]){"Ġa", "<x>", "Ã", NULL}, " a<x>\xEF\xBF\xBD",
                  "ByteLevel: byte characters to bytes, other tokens as they are, lossy UTF-8");
}

static void test_special_ids(void) {
    static const struct { const char *folder; bool config; int bos, eos, unk, pad; } S[] = {
        {"tok_llama2", true, 1, 2, 0, 2},   {"tok_llama2", false, 1, -1, 0, -1},
        {"tok_smollm2", true, 0, 0, 0, -1}, {"tok_smollm2", false, -1, -1, -1, -1},
        {"tok_qwen2", true, -1, 500, -1, 500},
    };
    for (size_t k = 0; k < sizeof S / sizeof *S; k++) {
        HfTokenizer *t = load_dir(S[k].folder, S[k].config);
        EXPECT(t && hf_tok_bos(t) == S[k].bos && hf_tok_eos(t) == S[k].eos && hf_tok_unk(t) == S[k].unk &&
                   hf_tok_pad(t) == S[k].pad,
               "%s %s: bos %d eos %d unk %d pad %d", S[k].folder, S[k].config ? "with its config" : "alone", S[k].bos,
               S[k].eos, S[k].unk, S[k].pad);
        hf_tok_free(t);
    }
    HfTokenizer *t = load_dir("tok_qwen2", true);
    if (!t) return;
    EXPECT(hf_tok_token_to_id(t, "<|im_start|>") == 501 && !strcmp(hf_tok_id_to_token(t, 501), "<|im_start|>") &&
               hf_tok_is_special(t, 501) && !hf_tok_is_special(t, 503) && !hf_tok_is_special(t, 5),
           "qwen2: <|im_start|> is id 501 and special, <tool_call> (503) is not");
    EXPECT(hf_tok_token_to_id(t, "no such token") == -1 && !hf_tok_id_to_token(t, -1) && !hf_tok_id_to_token(t, 505) &&
               hf_tok_id_to_token(t, 504) && hf_tok_vocab_size(t) == 505,
           "qwen2: ids 0..504; lookups outside give -1 / NULL");
    const int ids[] = {-5, 501, 9999, 72};
    char *out = NULL;
    hf_tok_decode(t, ids, 4, false, &out);
    arrput(out, '\0');
    EXPECT(!strcmp(out, "<|im_start|>i"), "decode skips ids without a token, as tokenizers: '%s'", out);
    arrfree(out);
    EXPECT(hf_tok_chat_template(t) == NULL, "no chat_template in the fixture config");
    hf_tok_free(t);
}

// ---- hf_regex: Oniguruma's meaning through PCRE2 ------------------------------------------

// The matches of an Oniguruma pattern in s as "start-end,..." (into buf).
static const char *matches(const char *pattern, const char *s, char *buf, size_t cap) {
    HfRegex *re = NULL;
    char why[300];
    size_t *m = NULL;
    buf[0] = '\0';
    if (!hf_regex_compile(&re, pattern, false, why, sizeof why) || !hf_regex_find_all(re, s, strlen(s), &m, why, sizeof why)) {
        snprintf(buf, cap, "(%.150s)", why);
    } else {
        for (size_t k = 0; k < arrlenu(m); k += 2)
            snprintf(buf + strlen(buf), cap - strlen(buf), "%s%zu-%zu", k ? "," : "", m[k], m[k + 1]);
    }
    arrfree(m);
    hf_regex_free(re);
    return buf;
}

static void test_regex(void) {
    static const struct { const char *pattern, *subject, *want, *what; } R[] = {
        // Oniguruma's \s: U+0009..U+000D, U+0085, Zs/Zl/Zp; not U+001C..U+001F, not U+180E
        {"\\s+", "a\x1c\x1d" "b", "", "\\s does not match U+001C..U+001F"},
        {"\\s", "\xc2\x85|\xc2\xa0|\xe3\x80\x80|\xe1\xa0\x8e", "0-2,3-5,6-9", "\\s: NEL, NBSP, U+3000, not U+180E"},
        {"\\S+", "a b", "0-1,2-3", "\\S"},
        {"[^\\s\\p{L}]+", "ab, 12", "2-3,4-6", "\\s inside a class"},
        {"\\v", "\x0b\n", "0-1", "\\v is U+000B only"},
        {"\\u00e9", "caf\xc3\xa9", "3-5", "\\uHHHH"},
        {"(?i:'s|'ll)", "it'S we'LL", "2-4,7-10", "(?i: on ASCII"},
        {"^a", "a\na", "0-1,2-3", "^ at every line start (Ruby syntax)"},
        // the onig crate's find_iter: an empty match right after a match is dropped
        {"a*", "baaac", "0-0,1-4,5-5", "empty matches as the onig crate"},
        {"x*", "", "0-0", "an empty match in an empty subject"},
    };
    char got[200];
    for (size_t k = 0; k < sizeof R / sizeof *R; k++)
        EXPECT(!strcmp(matches(R[k].pattern, R[k].subject, got, sizeof got), R[k].want), "regex %s: %s (got %s)",
               R[k].pattern, R[k].what, got);
    HfRegex *re = NULL;
    char why[300];
    EXPECT(hf_regex_compile(&re, "a.b(", true, why, sizeof why) && hf_regex_matches_at(re, "xa.b(", 5, 1) &&
               !hf_regex_matches_at(re, "xaxb(", 5, 1),
           "a String pattern is a literal");
    hf_regex_free(re);
}

// ---- against the tokenizers library itself -------------------------------------------------
// Its Node binding, the same version 0.23.2 that wrote the fixtures (sh tests/hf_tokenizers_npm.sh
// installs it into build/npm-tokenizers), run by tests/hf_tokenizers_ref.js on random strings
// for every fixture layout and for variants that switch on the options the fixtures leave off.

#define NPM_TOKENIZERS "build/npm-tokenizers/node_modules/tokenizers"
#define LIB_TEXTS 400

// Pieces of the random texts: letters, digits, punctuation, every kind of space, combining and
// precomposed characters, case-folding traps, CJK, emoji sequences, Unicode digits, special-token
// spellings, contractions.
static const char *const ALPHABET[] = {
    "a", "b", "e", "h", "l", "o", "s", "t", "x", "A", "H", "S", "T", "0", "1", "2", "5", "9", ".", ",", ";",
    "!", "?", "'", "\"", "(", ")", "[", "{", "-", "_", "/", "\\\\", "@", "#", "*", "+", "=", "<", ">", "|", "~",
    " ", " ", " ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u1680", "\u2028", "\xc2\x85", "\x1c",
    "\x1f", "\u180e", "\u200b", "\u2009", "\u0301", "e\u0301", "\u00e9", "\u2126", "\ufb01", "\u00df",
    "\u017f", "\u212a", "\u0130", "\u0131", "日", "本", "中", "😀", "👍🏽", "👨\u200d👩\u200d👧", "🇳🇴",
    "\u0663", "\u00b2", "\u216b", "\uff11", "\u0958", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>",
    "<|endoftext|>", "<mask>", "<rs>", "<custom>", "xyzzy", "<tool_call>", "</tool_call>", "▁", "Ġ", "<0x41>",
    "'s", "'S", "'ll", "'LL", "'re", "'ve", "'m", "'d", "'t", "DON'T", "hello", "world", "the", " the", "tion"};

static char *random_texts_json(uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    char *json = NULL, *text = NULL;
    arrput(json, '[');
    for (int i = 0; i < LIB_TEXTS; i++) {
        arrsetlen(text, 0);
        for (uint64_t k = rng_u64(&r) % 40; k > 0; k--) {
            const char *piece = ALPHABET[rng_u64(&r) % (sizeof ALPHABET / sizeof *ALPHABET)];
            memcpy(arraddnptr(text, strlen(piece)), piece, strlen(piece));
        }
        arrput(text, '\0');
        if (i) arrput(json, ',');
        json_append_string(&json, text);
    }
    arrput(json, ']');
    arrfree(text);
    return json;
}

static void write_text(const char *path, const char *text, size_t len) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(text, 1, len, f) == len);
    fclose(f);
}

// How many of the texts qlora encodes or decodes differently from the library's answers ref.
static int count_differences(HfTokenizer *t, const cJSON *texts, const cJSON *ref, const char *name) {
    int bad = 0, i = 0;
    for (const cJSON *c = texts->child, *a = ref->child; c && a; c = c->next, a = a->next, i++) {
        const char *s = c->valuestring;
        int *ids = NULL, *ids2 = NULL;
        Error err = {0};
        const bool ok = hf_tok_encode(t, s, strlen(s), false, &ids, &err) && hf_tok_encode(t, s, strlen(s), true, &ids2, &err);
        const bool same = ok && same_ids(ids, arrlenu(ids), cJSON_GetObjectItem(a, "ids")) &&
                          same_ids(ids2, arrlenu(ids2), cJSON_GetObjectItem(a, "ids2")) &&
                          decodes_to(t, ids, arrlenu(ids), false, cJSON_GetObjectItem(a, "dec")) &&
                          decodes_to(t, ids2, arrlenu(ids2), true, cJSON_GetObjectItem(a, "dec2"));
        if (!same && bad++ < 3) {
            printf("  %s text %d differs: '%s' %s\n", name, i, s, err.msg);
            print_ids("qlora", ids, arrlenu(ids));
        }
        arrfree(ids);
        arrfree(ids2);
    }
    return bad;
}

// Byte offset s widened to the start (end: the end) of the UTF-8 character it falls in.
static size_t char_floor(const char *s, size_t at) {
    while (at > 0 && ((uint8_t)s[at] & 0xC0) == 0x80) at--;
    return at;
}
static size_t char_ceil(const char *s, size_t len, size_t at) {
    while (at < len && ((uint8_t)s[at] & 0xC0) == 0x80) at++;
    return at;
}

// How many of the texts get spans (hf_tok_encode_spans) other than the library's offsets, after
// widening each span to whole characters (the library's offsets count characters: a byte-level
// token of part of a character gets the whole character), or ids other than hf_tok_encode's.
static int count_span_differences(HfTokenizer *t, const cJSON *texts, const cJSON *ref, const char *name) {
    int bad = 0, i = 0;
    for (const cJSON *c = texts->child, *a = ref->child; c && a; c = c->next, a = a->next, i++) {
        const char *s = c->valuestring;
        const size_t len = strlen(s);
        int *ids = NULL;
        size_t *sp = NULL;
        Error err = {0};
        bool same = hf_tok_encode_spans(t, s, len, false, &ids, &sp, &err) && arrlenu(sp) == 2 * arrlenu(ids) &&
                    same_ids(ids, arrlenu(ids), cJSON_GetObjectItem(a, "ids"));
        const cJSON *offs = cJSON_GetObjectItem(a, "offs");
        same = same && (size_t)cJSON_GetArraySize(offs) == arrlenu(sp);
        size_t k = 0;
        for (const cJSON *o = offs ? offs->child : NULL; same && o; o = o->next, k++) {
            const size_t mine = k % 2 ? char_ceil(s, len, sp[k]) : char_floor(s, sp[k]);
            same = mine == (size_t)o->valuedouble;
        }
        if (!same && bad++ < 3) {
            printf("  %s text %d: '%s'\n", name, i, s);
            if (k > 0 && k <= arrlenu(sp))
                printf("    id %d (#%zu): span [%zu, %zu), the library's [%d, %d)\n", ids[(k - 1) / 2], (k - 1) / 2,
                       sp[(k - 1) / 2 * 2], sp[(k - 1) / 2 * 2 + 1], (int)cJSON_GetArrayItem(offs, (int)((k - 1) / 2 * 2))->valuedouble,
                       (int)cJSON_GetArrayItem(offs, (int)((k - 1) / 2 * 2 + 1))->valuedouble);
        }
        arrfree(ids);
        arrfree(sp);
    }
    return bad;
}

// One layout: the library's answers through node, then qlora's.
static void compare_with_library(const char *name, const char *json, const char *dir, const char *texts_path,
                                 const cJSON *texts) {
    char tok_path[300], out_path[300], cmd[1200];
    snprintf(tok_path, sizeof tok_path, "%s/%s.json", dir, name);
    snprintf(out_path, sizeof out_path, "%s/%s.out.json", dir, name);
    write_text(tok_path, json, strlen(json));
    snprintf(cmd, sizeof cmd, "node tests/hf_tokenizers_ref.js " NPM_TOKENIZERS " %s %s %s", tok_path, texts_path, out_path);
    const int rc = system(cmd);
    Error err = {0};
    cJSON *ref = rc == 0 ? json_parse_file(out_path, &err) : NULL;
    HfTokenizer *t = NULL;
    hf_tok_load_memory(&t, json, strlen(json), name, NULL, 0, NULL, &err);
    const int bad = ref && t ? count_differences(t, texts, ref, name) : -1;
    EXPECT(bad == 0, "%s: ids and decodes of %d random texts equal the tokenizers library's (%d differ; %s)", name,
           LIB_TEXTS, bad, rc ? "node failed" : err.msg);
    // no_unk drops the characters it has no token for, and the library's offsets of a word count
    // only the characters kept, so they shift after a dropped one (the ids are right): not compared
    if (strcmp(name, "no_unk") != 0) {
        const int bad_spans = ref && t ? count_span_differences(t, texts, ref, name) : -1;
        EXPECT(bad_spans == 0, "%s: the ids' spans of %d random texts are the library's offsets, widened to whole "
               "characters (%d differ)", name, LIB_TEXTS, bad_spans);
    }
    hf_tok_free(t);
    cJSON_Delete(ref);
}

static const char METASPACE_ALWAYS[] = "{\"type\": \"Metaspace\", \"replacement\": \"▁\", \"prepend_scheme\": \"always\", \"split\": true}";
static const char ADDED_LSTRIP[] = "{\"id\": 561, \"content\": \"<m1>\", \"single_word\": false, \"lstrip\": true, "
                                   "\"rstrip\": true, \"normalized\": false, \"special\": true}";
static const char ADDED_NORMALIZED[] = "{\"id\": 562, \"content\": \"<n> x\", \"single_word\": false, \"lstrip\": false, "
                                       "\"rstrip\": true, \"normalized\": true, \"special\": true}";
static const char ADDED_WORD[] = "{\"id\": 450, \"content\": \"ab\", \"single_word\": true, \"lstrip\": true, "
                                 "\"rstrip\": true, \"normalized\": true, \"special\": false}";
static const char ADDED_SPACE[] = "{\"id\": 516, \"content\": \" <sp>\", \"single_word\": false, \"lstrip\": false, "
                                  "\"rstrip\": true, \"normalized\": false, \"special\": true}";
static const char TEMPLATE_TWICE[] =
    "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, "
    "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, {\"SpecialToken\": {\"id\": \"</s>\", \"type_id\": 0}}, "
    "{\"Sequence\": {\"id\": \"A\", \"type_id\": 1}}], \"pair\": [], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", "
    "\"ids\": [1], \"tokens\": [\"<s>\"]}, \"</s>\": {\"id\": \"</s>\", \"ids\": [2], \"tokens\": [\"</s>\"]}}}";

// The layouts compared: the fixtures as they are and with one to three fields changed.
static const struct {
    const char *name, *folder, *path[3], *value[3];
} LAYOUTS[] = {
    {"smollm2", "tok_smollm2", {0}, {0}},
    {"qwen2", "tok_qwen2", {0}, {0}},
    {"llama2", "tok_llama2", {0}, {0}},
    {"llama2_metaspace", "tok_llama2_metaspace", {0}, {0}},
    {"qwen2_strmerges", "tok_qwen2_strmerges", {0}, {0}},
    {"bytelevel_prefix_space", "tok_smollm2", {"pre_tokenizer.pretokenizers[1].add_prefix_space"}, {"true"}},
    {"digits_contiguous", "tok_smollm2", {"pre_tokenizer.pretokenizers[0].individual_digits"}, {"false"}},
    {"split_removed_inverted", "tok_qwen2", {"pre_tokenizer.pretokenizers[0].behavior", "pre_tokenizer.pretokenizers[0].invert"}, {"\"Removed\"", "true"}},
    {"split_merged_previous", "tok_qwen2", {"pre_tokenizer.pretokenizers[0].behavior"}, {"\"MergedWithPrevious\""}},
    {"split_merged_next_inverted", "tok_qwen2", {"pre_tokenizer.pretokenizers[0].behavior", "pre_tokenizer.pretokenizers[0].invert"}, {"\"MergedWithNext\"", "true"}},
    {"split_contiguous", "tok_qwen2", {"pre_tokenizer.pretokenizers[0].behavior"}, {"\"Contiguous\""}},
    {"split_string", "tok_qwen2", {"pre_tokenizer.pretokenizers[0].pattern"}, {"{\"String\": \" \"}"}},
    {"split_empty_matches", "tok_qwen2", {"pre_tokenizer.pretokenizers[0].pattern"}, {"{\"Regex\": \"(?=[A-Z])|x*|\\\\s*\"}"}},
    {"ignore_merges", "tok_qwen2", {"model.ignore_merges"}, {"true"}},
    {"replace_regex", "tok_qwen2", {"normalizer"}, {"{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, {\"type\": "
                                                    "\"Replace\", \"pattern\": {\"Regex\": \"[0-9]+|(?i:ab)+\"}, \"content\": \"#\"}]}"}},
    {"metaspace_always_split", "tok_llama2", {"normalizer", "pre_tokenizer", "decoder.decoders[0]"},
     {"null", METASPACE_ALWAYS, METASPACE_ALWAYS}},
    {"metaspace_never", "tok_llama2_metaspace", {"pre_tokenizer.prepend_scheme", "decoder.decoders[0].prepend_scheme"}, {"\"never\"", "\"never\""}},
    {"metaspace_first_split", "tok_llama2_metaspace", {"pre_tokenizer.split"}, {"true"}},
    {"metaspace_first_nfc", "tok_llama2_metaspace", {"normalizer"}, {"{\"type\": \"NFC\"}"}},
    {"metaspace_first_after_digits", "tok_llama2_metaspace", {"pre_tokenizer"},
     {"{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": true}, {\"type\": \"Metaspace\", "
      "\"replacement\": \"▁\", \"prepend_scheme\": \"first\", \"split\": false}]}"}},
    {"unk_fused", "tok_llama2", {"model.byte_fallback"}, {"false"}},
    {"unk_not_fused", "tok_llama2", {"model.byte_fallback", "model.fuse_unk"}, {"false", "false"}},
    {"no_unk", "tok_llama2", {"model.byte_fallback", "model.unk_token"}, {"false", "null"}},
    {"added_strip_normalized", "tok_llama2", {"added_tokens[5]", "added_tokens[6]"}, {ADDED_LSTRIP, ADDED_NORMALIZED}},
    {"added_word_space", "tok_smollm2", {"added_tokens[7]", "added_tokens[8]"}, {ADDED_WORD, ADDED_SPACE}},
    {"no_decoder", "tok_llama2", {"decoder"}, {"null"}},
    {"template_twice", "tok_llama2", {"post_processor"}, {TEMPLATE_TWICE}},
};

static void test_against_library(void) {
    const size_t n = sizeof LAYOUTS / sizeof *LAYOUTS;
    struct stat st;
    if (system("node --version >/dev/null 2>&1") != 0) {
        SKIP((int)n, "node not found (the comparison with the tokenizers library runs its Node binding)");
        return;
    }
    if (stat(NPM_TOKENIZERS "/package.json", &st) != 0) {
        SKIP((int)n, NPM_TOKENIZERS " not found (sh tests/hf_tokenizers_npm.sh installs tokenizers 0.23.2 with npm)");
        return;
    }
    char dir[] = "/tmp/qlora-test-hf-XXXXXX", texts_path[300];
    CHECK(mkdtemp(dir));
    snprintf(texts_path, sizeof texts_path, "%s/texts.json", dir);
    char *texts_json = random_texts_json(2024);
    write_text(texts_path, texts_json, arrlenu(texts_json));
    Error err = {0};
    cJSON *texts = json_parse(texts_json, arrlenu(texts_json), 0, "texts", &err);
    CHECK(texts);
    for (size_t k = 0; k < n; k++) {
        char file[300];
        snprintf(file, sizeof file, REF "/%s/tokenizer.json", LAYOUTS[k].folder);
        char *json = read_text(file);
        for (int m = 0; m < 3 && LAYOUTS[k].path[m]; m++) {
            char *next = mutate(json, LAYOUTS[k].path[m], LAYOUTS[k].value[m]);
            free(json);
            json = next;
        }
        compare_with_library(LAYOUTS[k].name, json, dir, texts_path, texts);
        free(json);
    }
    cJSON_Delete(texts);
    arrfree(texts_json);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

int main(void) {
    test_regex();
    test_fixtures();
    test_hostile();
    test_hostile_files();
    test_pre_tokenizers();
    test_model_options();
    test_decoders();
    test_special_ids();
    test_against_library();
    return test_summary("test_hf_tokenizer");
}
