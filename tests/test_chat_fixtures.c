// test_chat_fixtures.c: chat data against transformers itself (issue 16's must-hold checks), on
// tests/ref/chat_data/ made by tests/make_chat_fixtures_device.py on a machine with transformers.
// Six fixture folders (SmolLM2-, Qwen2.5-, Llama-2-chat-, Mistral-, zephyr- and Llama-3-style
// templates over the four fixture tokenizer layouts) and seven conversations each:
//   - the template renders the conversation to apply_chat_template's text, and its generation
//     prompt to the same ids (what generate --chat feeds the model);
//   - the example's ids are apply_chat_template(tokenize=True)'s, and its labels are exactly the
//     assistant contents' tokens plus the end-of-turn tokens as transformers' {% generation %}
//     masks give them, for train_on_eos turn, all, last and none;
//   - for the cases with a tiny Llama model, `qlora train` reports as its first step's loss the
//     loss LlamaForCausalLM gives over those labels (within 1e-4).
// Without the fixtures every check is counted as skipped, with the command that makes them.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat_data.h"
#include "data.h"
#include "ds.h"
#include "json.h"
#include "test.h"
#include "test_ids.h"
#include "test_metrics.h"
#include "tokenizer.h"

#define DIR "tests/ref/chat_data"
// Both sides compute the loss in fp32 over the same tokens (summation orders differ): measured
// differences are ~1e-6; a label off by one token moves it by 1e-2 or more. The bound.
#define TOL_LOSS_ATOL 1e-4

static const char *Q;
static char tmp[] = "/tmp/qlora-test-chat-fixtures-XXXXXX";
static const char *const ASSISTANT[] = {"assistant"};
static const char *const MODES[] = {"turn", "all", "none", "last"};  // ChatEos order

// The fixture's integer array as an stb_ds array, -100 read as -1 (labels).
static int *ints(const cJSON *arr) {
    int *out = NULL;
    for (const cJSON *x = arr ? arr->child : NULL; x; x = x->next) arrput(out, x->valueint == -100 ? -1 : x->valueint);
    return out;
}

// The conversation's jsonl line (a NUL-terminated malloc'ed string).
static char *line_of(const cJSON *messages) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemReferenceToObject(o, "messages", (cJSON *)messages);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

// The example of line with train_on_eos mode equals the fixture's ids and labels.
static bool example_matches(Tokenizer *tok, const ChatSetup *cs, const char *line, ChatEos mode, const cJSON *conv,
                            const char *what) {
    const ChatOptions co = {&cs->renderer, ASSISTANT, 1, false, mode};
    DataOptions o = {.format = "chat_template", .seq_len = 1 << 16, .vocab_size = tok_vocab_size(tok), .chat = &co};
    Dataset d;
    Error err = {0};
    int *ids = ints(cJSON_GetObjectItem(conv, "input_ids"));
    int *labels = ints(cJSON_GetObjectItem(cJSON_GetObjectItem(conv, "labels"), MODES[mode]));
    bool ok = data_load_text(&d, line, strlen(line), what, tok, &o, &err);
    if (!ok) printf("  %s: %s\n", what, err.msg);
    ok = ok && arrlenu(d.ex) == 1 && ids_equal(d.ex[0].ids, d.ex[0].len, ids, arrlenu(ids)) &&
         arrlenu(labels) == d.ex[0].len && !memcmp(d.ex[0].labels, labels, d.ex[0].len * sizeof(int));
    if (!ok && arrlenu(d.ex) == 1) {
        printf("  %s (train_on_eos %s):\n", what, MODES[mode]);
        ids_print("    ids      ", d.ex[0].ids, d.ex[0].len);
        ids_print("    want     ", ids, arrlenu(ids));
        ids_print("    labels   ", d.ex[0].labels, d.ex[0].len);
        ids_print("    want     ", labels, arrlenu(labels));
    }
    if (arrlenu(d.ex)) data_free(&d);
    arrfree(ids);
    arrfree(labels);
    return ok;
}

// The rendering of the conversation and of its generation prompt (text and ids).
static bool rendering_matches(Tokenizer *tok, const ChatSetup *cs, const cJSON *conv, const char *what) {
    const char **roles = NULL, **contents = NULL;
    char *text = NULL;
    size_t len = 0;
    int *ids = NULL, *want = ints(cJSON_GetObjectItem(conv, "prompt_ids"));
    Error err = {0};
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemReferenceToObject(o, "messages", cJSON_GetObjectItem(conv, "messages"));
    bool ok = chat_parse(o, what, &roles, &contents, &err) &&
              cs->renderer.render(cs->renderer.ctx, roles, contents, arrlenu(roles), false, &text, &len, &err) &&
              strcmp(text, cJSON_GetObjectItem(conv, "rendered")->valuestring) == 0;
    arrsetlen(roles, 0);
    arrsetlen(contents, 0);
    cJSON_DeleteItemFromObject(o, "messages");
    cJSON_AddItemReferenceToObject(o, "messages", cJSON_GetObjectItem(conv, "prompt_messages"));
    ok = ok && chat_parse(o, what, &roles, &contents, &err) &&
         chat_prompt_ids(cs, tok, roles, contents, arrlenu(roles), what, &ids, &err) &&
         ids_equal(ids, arrlenu(ids), want, arrlenu(want));
    if (!ok) printf("  %s: rendering differs %s\n    got  %s\n    want %s\n", what, err.msg, text ? text : "",
                    cJSON_GetObjectItem(conv, "rendered")->valuestring);
    free(text);
    arrfree(roles);
    arrfree(contents);
    arrfree(ids);
    arrfree(want);
    cJSON_Delete(o);
    return ok;
}

// `qlora train` one step (method lora: the adapter starts at B = 0, so the first loss is the base
// model's) on the one conversation line; its logged loss, or NAN.
static double first_step_loss(const char *model, const char *line, int k) {
    char path[700], out[700];
    snprintf(path, sizeof path, "%s/conv%d.jsonl", tmp, k);
    snprintf(out, sizeof out, "%s/run%d", tmp, k);
    FILE *f = fopen(path, "w");
    CHECK(f);
    fprintf(f, "%s\n", line);
    fclose(f);
    const int rc = test_sh("%s train %s/empty.yaml --set base_model=%s/%s --set dataset=%s --set dataset_format=chat_template "
                           "--set method=lora --set lora_r=4 --set lora_dropout=0 --set max_steps=1 --set micro_batch_size=1 "
                           "--set sequence_len=512 --set learning_rate=0.001 --set bf16=false --set output_dir=%s "
                           "> %s.log 2>&1", Q, tmp, DIR, model, path, out, out);
    size_t n = 0;
    double *l = rc == 0 ? metric_values(out, "loss", &n) : NULL;
    const double loss = n ? l[0] : NAN;
    if (rc) test_sh("tail -n 3 %s.log", out);
    arrfree(l);
    return loss;
}

static void check_case(const cJSON *c) {
    const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
    const cJSON *model = cJSON_GetObjectItem(c, "model");
    char dir[300];
    snprintf(dir, sizeof dir, DIR "/%s", cJSON_GetObjectItem(c, "tokenizer")->valuestring);
    Tokenizer *tok = NULL;
    ChatSetup cs;
    Error err = {0};
    if (!tok_load_dir(&tok, dir, &err) || !chat_setup(&cs, "tokenizer_default", dir, tok, &err)) {
        EXPECT(0, "%s: loads (%s)", name, err.msg);
        tok_free(tok);
        return;
    }
    const cJSON *eos = cJSON_GetObjectItem(c, "eos_token");
    EXPECT(cs.eot && !strcmp(cs.eot, eos->valuestring), "%s: the end of a turn is the eos_token %s", name, eos->valuestring);
    int n = 0, bad_render = 0, bad[4] = {0};
    for (const cJSON *conv = cJSON_GetObjectItem(c, "conversations")->child; conv; conv = conv->next, n++) {
        char what[400];
        snprintf(what, sizeof what, "%s conversation %d", name, n);
        bad_render += !rendering_matches(tok, &cs, conv, what);
        char *line = line_of(cJSON_GetObjectItem(conv, "messages"));
        for (int m = 0; m < 4; m++) bad[m] += !example_matches(tok, &cs, line, (ChatEos)m, conv, what);
        const cJSON *want = cJSON_GetObjectItem(conv, "loss_turn");
        if (cJSON_IsString(model) && cJSON_IsNumber(want)) {
            const double got = first_step_loss(model->valuestring, line, n);
            EXPECT(fabs(got - want->valuedouble) <= TOL_LOSS_ATOL, "%s: qlora train's step-1 loss %.6f == "
                   "LlamaForCausalLM's %.6f over the same labels", what, got, want->valuedouble);
        }
        free(line);
    }
    EXPECT(n > 0 && bad_render == 0, "%s: %d conversations and their generation prompts render to apply_chat_template's "
           "text and ids (%d differ)", name, n, bad_render);
    for (int m = 0; m < 4; m++)
        EXPECT(bad[m] == 0, "%s: ids == apply_chat_template's, labels == the assistant contents + end-of-turn tokens "
               "of transformers' generation masks, train_on_eos %s (%d of %d differ)", name, MODES[m], bad[m], n);
    chat_setup_free(&cs);
    tok_free(tok);
}

int main(void) {
    Q = getenv("QLORA") ? getenv("QLORA") : "./qlora";
    struct stat st;
    if (stat(DIR "/chat_cases.json", &st) != 0) {
        SKIP(6 * 7, DIR "/chat_cases.json not found: make it where transformers is installed with "
                    "'python3 tests/make_chat_fixtures_device.py " DIR "'");
        return test_summary("test_chat_fixtures");
    }
    CHECK(mkdtemp(tmp));
    test_sh("touch %s/empty.yaml", tmp);  // every key of the runs comes from --set
    Error err = {0};
    cJSON *root = json_parse_file(DIR "/chat_cases.json", &err);
    EXPECT(root != NULL, "%s", err.msg);
    int n = 0;
    for (const cJSON *c = root ? cJSON_GetObjectItem(root, "cases")->child : NULL; c; c = c->next, n++) check_case(c);
    EXPECT(n == 6, "six cases (%d)", n);
    cJSON_Delete(root);
    test_sh("rm -rf %s", tmp);
    return test_summary("test_chat_fixtures");
}
