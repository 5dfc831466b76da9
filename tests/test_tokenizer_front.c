// test_tokenizer_front.c: the tokenizer front (tokenizer.h) over both kinds. A model folder's
// tokenizer.json is preferred to vocab.json + merges.txt; the four tokenizer.json layouts of
// tests/ref/llama/tokenizer_cases.json (made by the `tokenizers` library) give its ids with and
// without special tokens through tok_load_dir and through `qlora tokenize` (the real binary,
// $QLORA); BOS / EOS ids and the post-processor's counts per layout and for GPT-2; config.json's
// ids fill only what the tokenizer leaves open; streaming decodes give exactly the list's text.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ds.h"
#include "json.h"
#include "test.h"
#include "test_ids.h"
#include "tokenizer.h"

#define REF "tests/ref/llama"

static const char *Q;  // the qlora binary
static char tmp[] = "/tmp/qlora-test-tokfront-XXXXXX";

static Tokenizer *load_dir(const char *dir) {
    Tokenizer *t = NULL;
    Error err = {0};
    if (!tok_load_dir(&t, dir, &err)) printf("load %s: %s\n", dir, err.msg);
    return t;
}

// Every case's ids (key "ids" without, "ids_with_special_tokens" with special tokens) through
// the front. Returns the number of cases that differ, printing the first.
static int front_differences(Tokenizer *t, const cJSON *cases, bool special) {
    int bad = 0, ci = 0;
    for (const cJSON *c = cases->child; c; c = c->next, ci++) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        int *got = NULL, *want = ids_from_json(cJSON_GetObjectItem(c, special ? "ids_with_special_tokens" : "ids"));
        Error err = {0};
        const bool ok = tok_encode_text(t, "case", text, strlen(text), special, &got, &err);
        if (!ok || !ids_equal(got, arrlenu(got), want, arrlenu(want))) {
            if (!bad++) {
                printf("  case %d (%s): %s\n", ci, special ? "special" : "plain", err.msg);
                ids_print("got", got, arrlenu(got));
                ids_print("want", want, arrlenu(want));
            }
        }
        arrfree(got);
        arrfree(want);
    }
    return bad;
}

// The ids `qlora tokenize` prints for text (through a file: the cases hold newlines and
// controls), into *ids; false if it fails.
static bool cli_ids(const char *dir, const char *text, bool special, int **ids) {
    char path[300], out[300];
    snprintf(path, sizeof path, "%s/text", tmp);
    snprintf(out, sizeof out, "%s/ids", tmp);
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    fwrite(text, 1, strlen(text), f);
    fclose(f);
    if (test_sh("%s tokenize --model %s --file %s %s > %s", Q, dir, path, special ? "" : "--no-special", out) != 0)
        return false;
    f = fopen(out, "r");
    if (!f) return false;
    int id;
    while (fscanf(f, "%d", &id) == 1) arrput(*ids, id);
    fclose(f);
    return true;
}

// The same through the binary; returns the number of cases that differ.
static int cli_differences(const char *dir, const cJSON *cases, bool special) {
    int bad = 0, ci = 0;
    for (const cJSON *c = cases->child; c; c = c->next, ci++) {
        int *got = NULL, *want = ids_from_json(cJSON_GetObjectItem(c, special ? "ids_with_special_tokens" : "ids"));
        const bool ok = cli_ids(dir, cJSON_GetObjectItem(c, "text")->valuestring, special, &got);
        if ((!ok || !ids_equal(got, arrlenu(got), want, arrlenu(want))) && !bad++) {
            printf("  qlora tokenize %s, case %d%s\n", dir, ci, ok ? "" : ": the command failed");
            ids_print("got", got, arrlenu(got));
            ids_print("want", want, arrlenu(want));
        }
        arrfree(got);
        arrfree(want);
    }
    return bad;
}

static void test_fixture_ids(void) {
    Error err = {0};
    cJSON *root = json_parse_file(REF "/tokenizer_cases.json", &err);
    EXPECT(root != NULL, "tokenizer_cases.json: %s", err.msg);
    if (!root) return;
    int n_tok = 0;
    for (const cJSON *e = cJSON_GetObjectItem(root, "tokenizers")->child; e; e = e->next, n_tok++) {
        char dir[200];
        snprintf(dir, sizeof dir, REF "/%s", cJSON_GetObjectItem(e, "folder")->valuestring);
        const cJSON *cases = cJSON_GetObjectItem(e, "cases");
        const int n = cJSON_GetArraySize(cases);
        Tokenizer *t = load_dir(dir);
        EXPECT(t && tok_is_json(t) && tok_vocab_size(t) == cJSON_GetObjectItem(e, "vocab_size_with_added")->valueint,
               "%s: tok_load_dir reads tokenizer.json (%d ids)", dir, t ? tok_vocab_size(t) : -1);
        if (!t) continue;
        int d = front_differences(t, cases, false), ds = front_differences(t, cases, true);
        EXPECT(d == 0 && ds == 0 && n == 35, "%s: front ids equal tokenizers' on %d/%d cases, with special tokens %d/%d",
               e->string, n - d, n, n - ds, n);
        d = cli_differences(dir, cases, true);
        EXPECT(d == 0, "%s: `qlora tokenize` prints ids_with_special_tokens on %d/%d cases", e->string, n - d, n);
        d = cli_differences(dir, cases, false);
        EXPECT(d == 0, "%s: `qlora tokenize --no-special` prints ids on %d/%d cases", e->string, n - d, n);
        tok_free(t);
    }
    EXPECT(n_tok == 4, "four tokenizer.json layouts (%d)", n_tok);
    cJSON_Delete(root);
}

// BOS / EOS and the post-processor's counts: from tokenizer_config.json, from the template
// without it, GPT-2's <|endoftext|>, and config.json's ids only where none is named.
static void test_specials(void) {
    static const struct { const char *folder; int bos, eos; size_t before; } V[] = {
        {"tok_llama2", 1, 2, 1},            // <s>, </s>; "<s> $A"
        {"tok_llama2_metaspace", 1, 2, 1},
        {"tok_smollm2", 0, 0, 0},           // <|endoftext|> for both; the post-processor adds nothing
        {"tok_qwen2", -1, 500, 0},          // bos_token null; <|endoftext|> is the first added id
    };
    for (size_t i = 0; i < sizeof V / sizeof V[0]; i++) {
        char dir[200];
        snprintf(dir, sizeof dir, REF "/%s", V[i].folder);
        Tokenizer *t = load_dir(dir);
        EXPECT(t && tok_bos(t) == V[i].bos && tok_eos(t) == V[i].eos && tok_special_before(t) == V[i].before &&
                   tok_special_after(t) == 0,
               "%s: bos %d eos %d, %zu special before the text (want %d %d %zu)", V[i].folder, t ? tok_bos(t) : -9,
               t ? tok_eos(t) : -9, t ? tok_special_before(t) : 99, V[i].bos, V[i].eos, V[i].before);
        tok_free(t);
    }
    Tokenizer *t = load_dir("tests/ref/tiny");
    EXPECT(t && !tok_is_json(t) && tok_bos(t) == 256 && tok_eos(t) == 256 && tok_special_before(t) == 0 &&
               strcmp(tok_path(t), "tests/ref/tiny/vocab.json") == 0,
           "GPT-2 folder: vocab.json + merges.txt, bos = eos = <|endoftext|> 256, nothing added");
    tok_set_missing_specials(t, 5, 6);
    EXPECT(t && tok_bos(t) == 256 && tok_eos(t) == 256, "config.json's ids do not replace the tokenizer's own");
    tok_free(t);

    // without tokenizer_config.json: bos is the template's <s>, eos unknown until config.json names it
    CHECK(test_sh("mkdir -p %s/noconf && cp " REF "/tok_llama2/tokenizer.json %s/noconf/", tmp, tmp) == 0);
    char dir[200];
    snprintf(dir, sizeof dir, "%s/noconf", tmp);
    t = load_dir(dir);
    EXPECT(t && tok_bos(t) == 1 && tok_eos(t) == -1, "tokenizer.json alone: bos = the template's <s> (1), no eos");
    tok_set_missing_specials(t, 7, 599);  // 599: a padded embedding row, not a token
    EXPECT(t && tok_bos(t) == 1 && tok_eos(t) == -1, "an id past the tokenizer's 561 is not taken for eos");
    tok_set_missing_specials(t, 7, 2);
    EXPECT(t && tok_bos(t) == 1 && tok_eos(t) == 2, "config.json's eos_token_id 2 fills the missing eos");
    tok_free(t);
}

// Which files tok_load_dir reads, and its errors.
static void test_load_dir(void) {
    CHECK(test_sh("mkdir -p %s/both && cp tests/ref/tiny/vocab.json tests/ref/tiny/merges.txt " REF
             "/tok_smollm2/tokenizer.json %s/both/ && mkdir -p %s/empty %s/onlyvocab && cp tests/ref/tiny/vocab.json "
             "%s/onlyvocab/",
             tmp, tmp, tmp, tmp, tmp) == 0);
    char dir[200];
    snprintf(dir, sizeof dir, "%s/both", tmp);
    Tokenizer *t = load_dir(dir);
    EXPECT(t && tok_is_json(t) && tok_vocab_size(t) == 516 && strstr(tok_path(t), "both/tokenizer.json"),
           "tokenizer.json is preferred to vocab.json + merges.txt (as transformers' fast tokenizers)");
    EXPECT(t && tok_bos(t) == -1 && tok_eos(t) == -1, "no tokenizer_config.json and no template: no bos, no eos");
    tok_free(t);
    Error err = {0};
    snprintf(dir, sizeof dir, "%s/empty", tmp);
    EXPECT(!tok_load_dir(&t, dir, &err) && err.status == EXIT_BAD_INPUT && strstr(err.msg, dir) &&
               strstr(err.msg, "no tokenizer: expected tokenizer.json, or vocab.json and merges.txt"),
           "a folder without a tokenizer: %s", err.msg);
    err = (Error){0};
    snprintf(dir, sizeof dir, "%s/onlyvocab", tmp);
    EXPECT(!tok_load_dir(&t, dir, &err) && strstr(err.msg, "onlyvocab/merges.txt"), "a missing merges.txt is named: %s",
           err.msg);
    err = (Error){0};
    t = load_dir(REF "/tok_qwen2");
    int *ids = NULL;
    EXPECT(t && !tok_encode_text(t, "notes.txt", "ab\xff", 3, true, &ids, &err) && err.status == EXIT_BAD_INPUT &&
               strstr(err.msg, "notes.txt: byte 2 is not valid UTF-8"),
           "invalid UTF-8 is refused, naming the text and the byte: %s", err.msg);
    arrfree(ids);
    tok_free(t);
}

// Streaming: the pieces handed out are the end of decode(all) that follows the prompt's text
// (all of it, or all but a character the prompt's ids leave incomplete), and none holds a
// character a later id could still change (no U+FFFD on the way to a whole emoji).
static bool stream_matches(const Tokenizer *t, const int *ids, size_t n, size_t n_prompt, bool *clean) {
    char *full = NULL, *prefix = NULL, *got = NULL, *piece = NULL;
    tok_decode(t, ids, n, false, &full);
    tok_decode(t, ids, n_prompt, false, &prefix);
    TokStream s;
    tok_stream_start(&s, t, ids, n_prompt);
    for (size_t i = n_prompt; i < n; i++) {
        arrsetlen(piece, 0);
        tok_stream_push(&s, t, ids[i], &piece);
        arrput(piece, '\0');
        if (strstr(piece, "\xEF\xBF\xBD")) *clean = false;
        sb_appendf(&got, "%s", piece);
    }
    arrsetlen(piece, 0);
    tok_stream_finish(&s, &piece);
    if (arrlenu(piece)) memcpy(arraddnptr(got, arrlenu(piece)), piece, arrlenu(piece));
    // what the stream left out: the prompt's text, less the replacement characters at its end
    // (a ByteFallback run cut short turns every byte of it into one)
    const size_t nf = arrlenu(full), np = arrlenu(prefix), ng = arrlenu(got), head = nf - ng;
    bool ok = ng <= nf && head <= np && (head == 0 || memcmp(full, prefix, head) == 0) &&
              (ng == 0 || memcmp(full + head, got, ng) == 0);
    for (size_t k = head; ok && k + 3 <= np; k += 3) ok = memcmp(prefix + k, "\xEF\xBF\xBD", 3) == 0;
    ok = ok && (np - head) % 3 == 0;
    arrfree(full);
    arrfree(prefix);
    arrfree(got);
    arrfree(piece);
    return ok;
}

static void test_stream(void) {
    Error err = {0};
    cJSON *root = json_parse_file(REF "/tokenizer_cases.json", &err);
    if (!root) return;
    for (const cJSON *e = cJSON_GetObjectItem(root, "tokenizers")->child; e; e = e->next) {
        char dir[200];
        snprintf(dir, sizeof dir, REF "/%s", cJSON_GetObjectItem(e, "folder")->valuestring);
        Tokenizer *t = load_dir(dir);
        if (!t) continue;
        int ok = 0, n = 0;
        bool clean = true;
        for (const cJSON *c = cJSON_GetObjectItem(e, "cases")->child; c; c = c->next, n++) {
            int *ids = ids_from_json(cJSON_GetObjectItem(c, "ids_with_special_tokens"));
            ok += stream_matches(t, ids, arrlenu(ids), arrlenu(ids) / 2, &clean);
            arrfree(ids);
        }
        EXPECT(ok == n, "%s: streamed text after half the ids adds up to the decode on %d/%d cases", e->string, ok, n);
        int *emoji = ids_from_json(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "decode_prefixes"), "ids"));
        clean = true;
        EXPECT(stream_matches(t, emoji, arrlenu(emoji), 0, &clean) && clean,
               "%s: '😀 👍🏽 中' streamed byte token by byte token, never a U+FFFD on the way", e->string);
        arrfree(emoji);
        tok_free(t);
    }
    cJSON_Delete(root);
    Tokenizer *t = load_dir("tests/ref/tiny");  // byte-level GPT-2: one byte per id
    const int bytes[] = {'H', 'i', ' ', 0xF0, 0x9F, 0x98, 0x80, '!'};
    bool clean = true;
    EXPECT(t && stream_matches(t, bytes, 8, 2, &clean) && clean, "GPT-2: streamed bytes hold back a partial character");
    tok_free(t);
}

// Whether spans (2 per id of ids[0..n)) are well formed for a text of len bytes: inside it,
// start <= end, starts never decreasing; with tile, back to back from 0 to len (byte-level BPE
// without a normalizer: every byte in exactly one id).
static bool spans_ok(const size_t *sp, size_t n, size_t len, bool tile) {
    for (size_t i = 0; i < n; i++) {
        if (sp[2 * i] > sp[2 * i + 1] || sp[2 * i + 1] > len || (i && sp[2 * i] < sp[2 * i - 2])) return false;
        if (tile && sp[2 * i] != (i ? sp[2 * i - 1] : 0)) return false;
    }
    return !tile || (n ? sp[2 * n - 1] : 0) == len;
}

// tok_encode_spans: the ids of tok_encode_text and well-formed spans for every fixture case, with
// and without special tokens (the comparison with the tokenizers library's offsets is in
// test_hf_tokenizer.c); a few spans by hand.
static void test_spans(void) {
    Error err = {0};
    cJSON *root = json_parse_file(REF "/tokenizer_cases.json", &err);
    CHECK(root != NULL);
    for (const cJSON *e = cJSON_GetObjectItem(root, "tokenizers")->child; e; e = e->next) {
        char dir[200];
        snprintf(dir, sizeof dir, REF "/%s", cJSON_GetObjectItem(e, "folder")->valuestring);
        Tokenizer *t = load_dir(dir);
        const bool tile = strcmp(e->string, "smollm2") == 0;  // no normalizer, byte-level
        int bad = 0, n = 0;
        for (const cJSON *c = cJSON_GetObjectItem(e, "cases")->child; c; c = c->next, n++) {
            const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
            for (int special = 0; special < 2; special++) {
                int *a = NULL, *b = NULL;
                size_t *sp = NULL;
                const bool ok = tok_encode_text(t, "case", text, strlen(text), special, &a, &err) &&
                                tok_encode_spans(t, "case", text, strlen(text), special, &b, &sp, &err) &&
                                ids_equal(a, arrlenu(a), b, arrlenu(b)) && arrlenu(sp) == 2 * arrlenu(b) &&
                                spans_ok(sp, arrlenu(b), strlen(text), tile && !special);
                if (!ok && !bad++) printf("  %s case %d (special %d) '%s'\n", e->string, n, special, text);
                arrfree(a);
                arrfree(b);
                arrfree(sp);
            }
        }
        EXPECT(t && bad == 0, "%s: tok_encode_spans gives tok_encode_text's ids and ordered spans inside the text%s "
               "on %d cases (%d bad)", e->string, tile ? ", back to back" : "", n, bad);
        tok_free(t);
    }
    cJSON_Delete(root);
    // by hand: Llama 2's Prepend attaches the first "▁" to "H", the Replace'd space belongs to
    // "▁the"; <s> gets an empty span at the start; GPT-2's ids tile the text
    Tokenizer *t = load_dir(REF "/tok_llama2");
    int *ids = NULL;
    size_t *sp = NULL;
    const char *text = "Hi there<|im_end|>";
    CHECK(tok_encode_spans(t, "x", text, strlen(text), true, &ids, &sp, &err));
    const int want_ids[] = {1, 343, 289, 313, 351, 345, 560};
    const size_t want[] = {0, 0, 0, 1, 0, 1, 1, 2, 2, 6, 6, 8, 8, 18};
    EXPECT(ids_equal(ids, arrlenu(ids), want_ids, 7) && !memcmp(sp, want, sizeof want),
           "llama2: '<s>' [0,0) '▁' [0,1) 'H' [0,1) 'i' [1,2) '▁the' [2,6) 're' [6,8) '<|im_end|>' [8,18)");
    tok_free(t);
    arrfree(ids);
    arrfree(sp);
    ids = NULL;
    sp = NULL;
    t = load_dir("tests/ref/tiny");
    text = "caf\xc3\xa9 <|endoftext|>\xff";
    CHECK(tok_encode_spans(t, "x", text, strlen(text), true, &ids, &sp, &err));
    EXPECT(spans_ok(sp, arrlenu(ids), strlen(text), true), "GPT-2: the ids' bytes tile the text, invalid UTF-8 included");
    tok_free(t);
    arrfree(ids);
    arrfree(sp);
}

int main(void) {
    Q = getenv("QLORA") ? getenv("QLORA") : "./qlora";
    CHECK(mkdtemp(tmp));
    test_fixture_ids();
    test_specials();
    test_load_dir();
    test_stream();
    test_spans();
    test_sh("rm -rf %s", tmp);
    return test_summary("test_tokenizer_front");
}
