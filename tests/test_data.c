// test_data.c: datasets (data.h) with both tokenizer kinds: where BOS and EOS go in text files,
// jsonl "text" lines and prompt/completion lines (docs/training.md, "Datasets"), and the labels.
// The text parts' ids are the `tokenizers` library's (tests/ref/llama/tokenizer_cases.json), so
// each expected example is that reference plus the documented placement of BOS and EOS:
//   text                 ids_with_special_tokens(text) + [eos]
//   prompt, completion   ids_with_special_tokens(prompt) + ids_with_special_tokens(completion)
//                        less the post-processor's leading ids + [eos]; labels -1 on the prompt
// GPT-2 folders keep what they always did: text + <|endoftext|>. Errors name FILE:LINE and field.
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "ds.h"
#include "json.h"
#include "test.h"
#include "test_ids.h"
#include "tokenizer.h"

#define REF "tests/ref/llama"
#define PROMPT "Hello world"
#define COMPLETION "The quick brown fox jumps over the lazy dog."

static cJSON *cases_root;

// The fixture's ids of text (one of its cases) for tokenizer name (an stb_ds array).
static int *ref_ids(const char *name, const char *text, bool special) {
    const cJSON *e = cJSON_GetObjectItem(cJSON_GetObjectItem(cases_root, "tokenizers"), name);
    for (const cJSON *c = cJSON_GetObjectItem(e, "cases")->child; c; c = c->next) {
        if (strcmp(cJSON_GetObjectItem(c, "text")->valuestring, text)) continue;
        return ids_from_json(cJSON_GetObjectItem(c, special ? "ids_with_special_tokens" : "ids"));
    }
    CHECK(!"text not among the fixture's cases");
    return NULL;
}

// Load text[0..) as format into *d with tok (sequence_len 256); prints the error if any.
static bool load(Dataset *d, Tokenizer *tok, const char *format, const char *text, bool train_on_inputs) {
    DataOptions o = {.format = format, .seq_len = 256, .train_on_inputs = train_on_inputs, .vocab_size = tok_vocab_size(tok)};
    Error err = {0};
    const bool ok = data_load_text(d, text, strlen(text), format[0] == 'j' ? "data.jsonl" : "data.txt", tok, &o, &err);
    if (!ok) printf("    %s\n", err.msg);
    return ok;
}

// The one example of d has ids want[0..n) and labels -1 for the first n_masked, ids after.
static bool example_is(const Dataset *d, const int *want, size_t n, size_t n_masked) {
    if (arrlenu(d->ex) != 1) return false;
    const Example *e = &d->ex[0];
    bool ok = ids_equal(e->ids, e->len, want, n);
    for (size_t i = 0; ok && i < n; i++) ok = e->labels[i] == (i < n_masked ? -1 : want[i]);
    if (!ok) {
        ids_print("got ", e->ids, e->len);
        ids_print("want", want, n);
        ids_print("labels", e->labels, e->len);
    }
    return ok;
}

// The three kinds of example with one tokenizer.json layout, given the reference ids of PROMPT and
// COMPLETION with special tokens, the EOS id expected and whether the post-processor ends with it.
static void check_layout(Tokenizer *t, const char *name, const int *text, const int *comp, int eos,
                         bool eos_in_template) {
    const size_t before = tok_special_before(t);
    int *want = NULL;
    memcpy(arraddnptr(want, arrlenu(text)), text, arrlenu(text) * sizeof(int));
    if (!eos_in_template) arrput(want, eos);
    Dataset d;
    const char *line = "{\"text\": \"" PROMPT "\"}\n";
    EXPECT(load(&d, t, "jsonl", line, false) && example_is(&d, want, arrlenu(want), 0),
           "%s: a jsonl text is the post-processor's output + EOS %d, once (%zu ids)", name, eos, arrlenu(want));
    data_free(&d);
    EXPECT(load(&d, t, "text", PROMPT, false) && example_is(&d, want, arrlenu(want), 0),
           "%s: a text file is the post-processor's output + EOS", name);
    data_free(&d);
    // the prompt as the tokenizer gives it + the completion less the leading special ids + EOS
    arrsetlen(want, arrlenu(text));
    memcpy(arraddnptr(want, arrlenu(comp) - before), comp + before, (arrlenu(comp) - before) * sizeof(int));
    if (!eos_in_template) arrput(want, eos);
    line = "{\"prompt\": \"" PROMPT "\", \"completion\": \"" COMPLETION "\"}";
    EXPECT(load(&d, t, "jsonl", line, false) && example_is(&d, want, arrlenu(want), arrlenu(text)),
           "%s: prompt/completion: prompt with BOS (labels -1), completion without BOS + EOS (labels)", name);
    data_free(&d);
    EXPECT(load(&d, t, "jsonl", line, true) && example_is(&d, want, arrlenu(want), 0),
           "%s: with train_on_inputs every token is a label", name);
    data_free(&d);
    arrfree(want);
}

static Tokenizer *load_dir(const char *folder) {
    char dir[200];
    snprintf(dir, sizeof dir, REF "/%s", folder);
    Tokenizer *t = NULL;
    Error err = {0};
    if (!tok_load_dir(&t, dir, &err)) printf("%s\n", err.msg);
    return t;
}

// Llama 2's tokenizer.json with the template "<s> $A </s>" (an add_eos_token tokenizer).
static Tokenizer *with_eos_template(void) {
    Error err = {0};
    cJSON *js = json_parse_file(REF "/tok_llama2/tokenizer.json", &err);
    CHECK(js != NULL);
    cJSON *post = cJSON_GetObjectItem(js, "post_processor");
    cJSON_AddItemToArray(cJSON_GetObjectItem(post, "single"),
                         cJSON_Parse("{\"SpecialToken\": {\"id\": \"</s>\", \"type_id\": 0}}"));
    cJSON_AddItemToObject(cJSON_GetObjectItem(post, "special_tokens"), "</s>",
                          cJSON_Parse("{\"id\": \"</s>\", \"ids\": [2], \"tokens\": [\"</s>\"]}"));
    char *json = cJSON_PrintUnformatted(js);
    char *config = NULL;
    size_t clen;
    CHECK(file_read_all(REF "/tok_llama2/tokenizer_config.json", &config, &clen, &err));
    Tokenizer *t = NULL;
    if (!tok_load_json_memory(&t, json, strlen(json), "tokenizer.json", config, clen, "tokenizer_config.json", &err))
        printf("%s\n", err.msg);
    free(json);
    free(config);
    cJSON_Delete(js);
    return t;
}

static void test_layouts(void) {
    static const struct { const char *name, *folder; int eos; } V[] = {
        {"llama2", "tok_llama2", 2}, {"llama2_metaspace", "tok_llama2_metaspace", 2},
        {"smollm2", "tok_smollm2", 0}, {"qwen2", "tok_qwen2", 500}};
    for (size_t i = 0; i < sizeof V / sizeof V[0]; i++) {
        Tokenizer *t = load_dir(V[i].folder);
        EXPECT(t != NULL, "%s loads", V[i].folder);
        int *text = ref_ids(V[i].name, PROMPT, true), *comp = ref_ids(V[i].name, COMPLETION, true);
        if (t) check_layout(t, V[i].name, text, comp, V[i].eos, false);
        arrfree(text);
        arrfree(comp);
        tok_free(t);
    }
    // an add_eos_token tokenizer: the reference is the fixture's Llama 2 ids, which its template ends with </s>
    Tokenizer *t = with_eos_template();
    int *text = ref_ids("llama2", PROMPT, true), *comp = ref_ids("llama2", COMPLETION, true), *got = NULL;
    arrput(text, 2);
    arrput(comp, 2);
    Error err = {0};
    EXPECT(t && tok_special_before(t) == 1 && tok_special_after(t) == 1 &&
               tok_encode_text(t, "text", PROMPT, strlen(PROMPT), true, &got, &err) &&
               ids_equal(got, arrlenu(got), text, arrlenu(text)),
           "the \"<s> $A </s>\" template: 1 id before, 1 after: the fixture's ids, then </s>");
    if (t) check_layout(t, "llama2 + </s> template", text, comp, 2, true);
    arrfree(got);
    arrfree(text);
    arrfree(comp);
    tok_free(t);
}

// GPT-2's kind: text + <|endoftext|>, prompt + completion + <|endoftext|>, nothing before.
static void test_gpt2(void) {
    Tokenizer *t = NULL;
    Error err = {0};
    CHECK(tok_load_dir(&t, "tests/ref/tiny", &err));
    int *p = NULL, *want = NULL;
    tok_encode(t, PROMPT, strlen(PROMPT), &p);
    memcpy(arraddnptr(want, arrlenu(p)), p, arrlenu(p) * sizeof(int));
    arrput(want, 256);
    Dataset d;
    EXPECT(load(&d, t, "jsonl", "{\"text\": \"" PROMPT "\"}", false) && example_is(&d, want, arrlenu(want), 0),
           "GPT-2: a jsonl text + <|endoftext|> (256)");
    data_free(&d);
    arrsetlen(want, arrlenu(p));
    tok_encode(t, COMPLETION, strlen(COMPLETION), &want);
    arrput(want, 256);
    EXPECT(load(&d, t, "jsonl", "{\"prompt\": \"" PROMPT "\", \"completion\": \"" COMPLETION "\"}", false) &&
               example_is(&d, want, arrlenu(want), arrlenu(p)),
           "GPT-2: prompt (labels -1) + completion + <|endoftext|>");
    data_free(&d);
    EXPECT(load(&d, t, "text", "ab\xff", false) && d.ex[0].len == 4 && d.ex[0].ids[2] == 255 && d.ex[0].ids[3] == 256,
           "GPT-2: a text file with invalid UTF-8 is bytes, as before");
    data_free(&d);
    arrfree(p);
    arrfree(want);
    tok_free(t);
}

// Text a tokenizer.json tokenizer refuses: one message naming the file (and line and field).
static void test_errors(void) {
    Tokenizer *t = load_dir("tok_llama2");
    Dataset d;
    DataOptions o = {.format = "text", .seq_len = 256, .vocab_size = tok_vocab_size(t)};
    Error err = {0};
    EXPECT(!data_load_text(&d, "abc\xff", 4, "notes.txt", t, &o, &err) && err.status == EXIT_BAD_INPUT &&
               strstr(err.msg, "notes.txt: byte 3 is not valid UTF-8"),
           "a text file with invalid UTF-8: %s", err.msg);
    o.format = "jsonl";
    const char *line = "{\"text\": \"x\"}\n{\"prompt\": \"a\", \"completion\": \"b\xff\"}\n";
    err = (Error){0};
    EXPECT(!data_load_text(&d, line, strlen(line), "pairs.jsonl", t, &o, &err) && err.status == EXIT_BAD_INPUT &&
               strstr(err.msg, "pairs.jsonl:2") && strstr(err.msg, "\"completion\": byte 1 is not valid UTF-8"),
           "a jsonl line with invalid UTF-8 names the file, line and field: %s", err.msg);
    tok_free(t);
}

int main(void) {
    Error err = {0};
    cases_root = json_parse_file(REF "/tokenizer_cases.json", &err);
    CHECK(cases_root != NULL);
    test_layouts();
    test_gpt2();
    test_errors();
    cJSON_Delete(cases_root);
    return test_summary("test_data");
}
