// test_chat_data.c: conversation and Alpaca datasets (chat_data.h through data.h) with renderers
// written here (ChatML, and a Llama 2-style one that trims contents), so the labels can be
// predicted independently: with ChatML and SmolLM2's byte-level tokenizer every content and
// every <|im_end|> is a run of whole tokens of its own (the special tokens are cut out first, and
// the pre-tokenizer splits the "\n" before a content off), so the example must be the
// concatenation of the pieces' own ids with labels exactly on the contents' ids and the trained
// turns' <|im_end|>. Also: train_on_eos turn/all/none/last, roles_to_train, train_on_inputs,
// ShareGPT == messages, a Metaspace token straddling the template and the content, truncation
// and drop_long, the Alpaca prompt, every bad line (exit status 2, FILE:LINE, what was
// expected), what `qlora train --preview` prints, chat_setup's ends of turn and tokens, and the
// stop at an end-of-turn text in generation. (The real chat templates and
// transformers' ids: tests/test_chat_fixtures.c.)
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"
#include "ds.h"
#include "strbuf.h"
#include "test.h"
#include "test_chatml.h"
#include "test_ids.h"
#include "tokenizer.h"

#define REF "tests/ref/llama"

// ---- renderers ----------------------------------------------------------------------------------

// Llama 2 style: <s>[INST] USER [/INST] ASSISTANT </s>..., contents trimmed (as `| trim` does).
static bool render_llama2(const void *ctx, const char *const *roles, const char *const *contents, size_t n, bool gen,
                          char **out, size_t *len, Error *err) {
    (void)ctx;
    (void)gen;
    char *sb = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *c = contents[i];
        size_t a = 0, b = strlen(c);
        while (a < b && isspace((unsigned char)c[a])) a++;
        while (b > a && isspace((unsigned char)c[b - 1])) b--;
        if (strcmp(roles[i], "user") == 0) sb_appendf(&sb, "<s>[INST] %.*s [/INST]", (int)(b - a), c + a);
        else if (strcmp(roles[i], "assistant") == 0) sb_appendf(&sb, " %.*s </s>", (int)(b - a), c + a);
        else {
            arrfree(sb);
            return error_set(err, "llama2:1: raise_exception: only user and assistant roles are supported");
        }
    }
    *len = arrlenu(sb);
    *out = xmalloc(*len + 1);
    if (*len) memcpy(*out, sb, *len);
    (*out)[*len] = '\0';
    arrfree(sb);
    return true;
}

// ChatML with every "x" of the contents made "X": a template qlora cannot align.
static bool render_shouting(const void *ctx, const char *const *roles, const char *const *contents, size_t n,
                            bool gen, char **out, size_t *len, Error *err) {
    char **loud = xmalloc(n * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        loud[i] = xstrdup(contents[i]);
        for (char *c = loud[i]; *c; c++) *c = *c == 'x' ? 'X' : *c;
    }
    bool ok = render_chatml(ctx, roles, (const char *const *)loud, n, gen, out, len, err);
    for (size_t i = 0; i < n; i++) free(loud[i]);
    free(loud);
    return ok;
}

static const ChatRenderer CHATML = {render_chatml, NULL, "<|im_end|>"};
static const ChatRenderer LLAMA2 = {render_llama2, NULL, "</s>"};
static const ChatRenderer SHOUTING = {render_shouting, NULL, "<|im_end|>"};
static const char *const ASSISTANT[] = {"assistant"};
static const char *const USER_ASSISTANT[] = {"user", "assistant"};

static Tokenizer *load_dir(const char *dir) {
    Tokenizer *t = NULL;
    Error err = {0};
    if (!tok_load_dir(&t, dir, &err)) printf("%s\n", err.msg);
    return t;
}

// Load text as format with chat options (sequence_len seq); prints the error if any.
static bool load(Dataset *d, Tokenizer *tok, const char *format, const ChatOptions *co, size_t seq, bool drop_long,
                 const char *text, Error *err) {
    DataOptions o = {.format = format, .seq_len = seq, .vocab_size = tok_vocab_size(tok), .drop_long = drop_long,
                     .chat = co};
    *err = (Error){0};
    const bool ok = data_load_text(d, text, strlen(text), "chat.jsonl", tok, &o, err);
    if (!ok && getenv("TEST_VERBOSE")) printf("    %s\n", err->msg);
    return ok;
}

// ---- ChatML with SmolLM2's tokenizer ------------------------------------------------------------

static const char *const ROLES[] = {"system", "user", "assistant", "user", "assistant"};
static const char *const TEXTS[] = {"Be brief.", "How will Monday be in Cairo?", "Sunny, 31 C.",
                                    "Do I need an umbrella?", "No, it should stay dry."};
#define CONV "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": " \
             "\"How will Monday be in Cairo?\"}, {\"role\": \"assistant\", \"content\": \"Sunny, 31 C.\"}, {\"role\": " \
             "\"user\", \"content\": \"Do I need an umbrella?\"}, {\"role\": \"assistant\", \"content\": \"No, it " \
             "should stay dry.\"}]}"

// The expected example: each piece's own ids; labels on the trained roles' contents and, per eos,
// on the <|im_end|> after them (turn), after all (all), after the last trained one (last).
static void expected(Tokenizer *t, const char *const *trained, size_t n_trained, ChatEos eos, int **ids, int **labels) {
    Error err = {0};
    int last_eot = -1;
    for (int m = 0; m < 5; m++) {
        bool tr = false;
        for (size_t k = 0; k < n_trained; k++) tr |= strcmp(ROLES[m], trained[k]) == 0;
        char head[64];
        snprintf(head, sizeof head, "<|im_start|>%s\n", ROLES[m]);
        const char *pieces[3] = {head, TEXTS[m], "<|im_end|>"};
        for (int p = 0; p < 3; p++) {
            const size_t from = arrlenu(*ids);
            CHECK(tok_encode_text(t, "piece", pieces[p], strlen(pieces[p]), false, ids, &err));
            const bool lab = (p == 1 && tr) || (p == 2 && (eos == CHAT_EOS_ALL || (eos == CHAT_EOS_TURN && tr)));
            for (size_t i = from; i < arrlenu(*ids); i++) arrput(*labels, lab ? (*ids)[i] : -1);
            if (p == 2 && tr) last_eot = (int)from;
        }
        CHECK(tok_encode_text(t, "nl", "\n", 1, false, ids, &err));
        arrput(*labels, -1);
    }
    if (eos == CHAT_EOS_LAST && last_eot >= 0) (*labels)[last_eot] = (*ids)[last_eot];
}

static bool example_is(const Dataset *d, const int *ids, const int *labels) {
    if (arrlenu(d->ex) != 1) return false;
    const Example *e = &d->ex[0];
    const bool ok = ids_equal(e->ids, e->len, ids, arrlenu(ids)) && !memcmp(e->labels, labels, e->len * sizeof(int));
    if (!ok) {
        ids_print("got ids   ", e->ids, e->len);
        ids_print("want ids  ", ids, arrlenu(ids));
        ids_print("got labels", e->labels, e->len);
        ids_print("want      ", labels, arrlenu(labels));
    }
    return ok;
}

static void test_chatml(void) {
    Tokenizer *t = load_dir(REF "/tok_smollm2");
    static const struct { ChatEos eos; const char *name; const char *const *roles; size_t n; bool inputs; } V[] = {
        {CHAT_EOS_TURN, "turn", ASSISTANT, 1, false}, {CHAT_EOS_ALL, "all", ASSISTANT, 1, false},
        {CHAT_EOS_NONE, "none", ASSISTANT, 1, false}, {CHAT_EOS_LAST, "last", ASSISTANT, 1, false},
        {CHAT_EOS_TURN, "turn, roles user+assistant", USER_ASSISTANT, 2, false},
        {CHAT_EOS_TURN, "turn, train_on_inputs", USER_ASSISTANT, 2, true}};
    for (size_t v = 0; v < sizeof V / sizeof V[0]; v++) {
        ChatOptions co = {&CHATML, V[v].roles, V[v].n, V[v].inputs, V[v].eos};
        static const char *const ALL[] = {"system", "user", "assistant"};
        int *ids = NULL, *labels = NULL;
        expected(t, V[v].inputs ? ALL : V[v].roles, V[v].inputs ? 3 : V[v].n, V[v].eos, &ids, &labels);
        Dataset d;
        Error err;
        EXPECT(load(&d, t, "chat_template", &co, 512, false, CONV "\n", &err) && example_is(&d, ids, labels),
               "ChatML, SmolLM2: the pieces' own ids, labels on the trained contents (train_on_eos %s)", V[v].name);
        data_free(&d);
        arrfree(ids);
        arrfree(labels);
    }
    // what --preview prints: the text with the trained runs marked
    {
        ChatOptions co = {&CHATML, ASSISTANT, 1, false, CHAT_EOS_TURN};
        Dataset d;
        Error err;
        char *text = NULL;
        if (load(&d, t, "chat_template", &co, 512, false, CONV, &err)) data_example_text(t, &d.ex[0], &text);
        arrput(text, '\0');
        EXPECT(!strcmp(text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHow will Monday be in Cairo?"
                             "<|im_end|>\n<|im_start|>assistant\n[[Sunny, 31 C.<|im_end|>]]\n<|im_start|>user\nDo I need "
                             "an umbrella?<|im_end|>\n<|im_start|>assistant\n[[No, it should stay dry.<|im_end|>]]\n"),
               "data_example_text: the rendered conversation with [[trained]] runs: %s", text);
        arrfree(text);
        data_free(&d);
    }
    // ShareGPT's names give the same example
    ChatOptions co = {&CHATML, ASSISTANT, 1, false, CHAT_EOS_TURN};
    const char *sharegpt = "{\"conversations\": [{\"from\": \"system\", \"value\": \"Be brief.\"}, {\"from\": \"human\", "
                           "\"value\": \"How will Monday be in Cairo?\"}, {\"from\": \"gpt\", \"value\": \"Sunny, 31 C.\"}, "
                           "{\"from\": \"human\", \"value\": \"Do I need an umbrella?\"}, {\"from\": \"gpt\", \"value\": "
                           "\"No, it should stay dry.\"}]}";
    int *ids = NULL, *labels = NULL;
    expected(t, ASSISTANT, 1, CHAT_EOS_TURN, &ids, &labels);
    Dataset d;
    Error err;
    EXPECT(load(&d, t, "chat_template", &co, 512, false, sharegpt, &err) && example_is(&d, ids, labels) &&
               d.ex[0].line == 1,
           "ShareGPT conversations (human, gpt, system) == the messages example");
    data_free(&d);
    // truncation and drop_long: a second, long conversation
    char *two = NULL;
    sb_appendf(&two, "%s\n\n%s\n", CONV, CONV);
    arrput(two, '\0');
    const size_t n = arrlenu(ids);
    bool ok = load(&d, t, "chat_template", &co, n - 1, false, two, &err) && arrlenu(d.ex) == 2 &&
              d.n_truncated == 2 && d.ex[0].len == n - 1 && d.ex[1].line == 3;
    EXPECT(ok, "longer than sequence_len: cut to %zu and counted, lines kept", n - 1);
    data_free(&d);
    ok = !load(&d, t, "chat_template", &co, n - 1, true, two, &err) && strstr(err.msg, "all 2 are longer") &&
         err.status == EXIT_BAD_INPUT;
    EXPECT(ok, "drop_long: both left out, and no example is left: %s", err.msg);
    arrsetlen(two, arrlenu(two) - 1);  // the NUL
    sb_appendf(&two, "{\"messages\": [{\"role\": \"assistant\", \"content\": \"Yes.\"}]}\n");
    arrput(two, '\0');
    ok = load(&d, t, "chat_template", &co, n - 1, true, two, &err) && arrlenu(d.ex) == 1 && d.n_dropped == 2 &&
         d.ex[0].line == 4;
    EXPECT(ok, "drop_long: the short conversation kept, the two long ones counted as dropped");
    data_free(&d);
    arrfree(two);
    arrfree(ids);
    arrfree(labels);
    tok_free(t);
}

// ---- a Metaspace tokenizer and a trimming template --------------------------------------------

static void test_llama2(void) {
    Tokenizer *t = load_dir(REF "/tok_llama2");
    ChatOptions co = {&LLAMA2, ASSISTANT, 1, false, CHAT_EOS_TURN};
    Dataset d;
    Error err;
    const char *line = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": "
                       "\"  the rest \"}]}";
    // "<s>[INST] Hi [/INST] the rest </s>": "▁the" holds the space the template puts before the
    // trimmed content, so it is content; "▁" before </s> is the template's; </s> is the turn's end
    bool ok = load(&d, t, "chat_template", &co, 512, false, line, &err);
    EXPECT(ok, "Llama 2 style conversation loads: %s", err.msg);
    if (ok) {
        const Example *e = &d.ex[0];
        int *run = NULL;
        char *text = NULL;
        size_t n_lab = 0;
        for (size_t i = 0; i < e->len; i++)
            if (e->labels[i] >= 0 && e->ids[i] != 2) arrput(run, e->ids[i]);
        for (size_t i = 0; i < e->len; i++) n_lab += e->labels[i] >= 0;
        tok_decode(t, run, arrlenu(run), false, &text);
        arrput(text, '\0');
        EXPECT(!strcmp(text, "the rest") && e->labels[e->len - 1] == 2 && e->ids[e->len - 2] != 2 &&
                   e->labels[e->len - 2] == -1 && n_lab == arrlenu(run) + 1,
               "Metaspace: the labelled run decodes to '%s' (want 'the rest'), then only </s>", text);
        arrfree(run);
        arrfree(text);
    }
    data_free(&d);
    tok_free(t);
}

// ---- Alpaca ------------------------------------------------------------------------------------

static void test_alpaca(void) {
    Tokenizer *t = load_dir(REF "/tok_llama2");
    static const char *const PROMPT[2] = {
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nName a color.\n\n### Response:\n",
        "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
        "response that appropriately completes the request.\n\n### Instruction:\nName a color.\n\n### Input:\nof the sky\n\n"
        "### Response:\n"};
    static const char *const LINE[2] = {
        "{\"instruction\": \"Name a color.\", \"input\": \"\", \"output\": \"Blue.\"}",
        "{\"instruction\": \"Name a color.\", \"input\": \"of the sky\", \"output\": \"Blue.\"}"};
    for (int k = 0; k < 2; k++) {
        char *pair = NULL;  // the same example as a prompt/completion line
        sb_appendf(&pair, "{\"prompt\": ");
        json_append_string(&pair, PROMPT[k]);
        sb_appendf(&pair, ", \"completion\": \"Blue.\"}");
        arrput(pair, '\0');
        Dataset a, b;
        Error err;
        const bool ok = load(&a, t, "alpaca", NULL, 512, false, LINE[k], &err) && load(&b, t, "jsonl", NULL, 512, false, pair, &err);
        EXPECT(ok && a.ex[0].len == b.ex[0].len && !memcmp(a.ex[0].ids, b.ex[0].ids, a.ex[0].len * sizeof(int)) &&
                   !memcmp(a.ex[0].labels, b.ex[0].labels, a.ex[0].len * sizeof(int)),
               "alpaca %s: axolotl's prompt as a prompt/completion pair (BOS, labels on the output + EOS)",
               k ? "with input" : "without input");
        data_free(&a);
        data_free(&b);
        arrfree(pair);
    }
    tok_free(t);
}

// ---- bad lines ---------------------------------------------------------------------------------

static void test_errors(void) {
    Tokenizer *t = load_dir(REF "/tok_smollm2");
    ChatOptions co = {&CHATML, ASSISTANT, 1, false, CHAT_EOS_TURN}, shout = {&SHOUTING, ASSISTANT, 1, false, CHAT_EOS_TURN},
                llama = {&LLAMA2, ASSISTANT, 1, false, CHAT_EOS_TURN};
    const struct { const char *format, *line, *want; const ChatOptions *co; } BAD[] = {
        {"chat_template", "{\"messages\": [{\"role\": \"user\"}]}", "chat.jsonl:2: messages[0]: no \"content\" (expected a string)", NULL},
        {"chat_template", "{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}", "chat.jsonl:2: messages[0]: unknown role 'bot' (expected system, user, assistant or tool)", NULL},
        {"chat_template", "{\"messages\": []}", "chat.jsonl:2: \"messages\" is empty", NULL},
        {"chat_template", "{\"messages\": {\"role\": \"user\"}}", "chat.jsonl:2: \"messages\" must be an array", NULL},
        {"chat_template", "{\"messages\": [{\"role\": \"user\", \"content\": [\"x\"]}]}", "chat.jsonl:2: messages[0]: \"content\" must be a string", NULL},
        {"chat_template", "{\"messages\": [{\"role\": 3, \"content\": \"x\"}]}", "chat.jsonl:2: messages[0]: \"role\" must be a string", NULL},
        {"chat_template", "{\"messages\": [\"hi\"]}", "chat.jsonl:2: messages[0]: expected an object", NULL},
        {"chat_template", "{\"conversations\": [{\"from\": \"bing\", \"value\": \"x\"}]}", "chat.jsonl:2: conversations[0]: unknown \"from\" 'bing' (expected human, gpt or system)", NULL},
        {"chat_template", "{\"conversations\": [{\"from\": \"human\"}]}", "chat.jsonl:2: conversations[0]: no \"value\"", NULL},
        {"chat_template", "{\"messages\": [], \"conversations\": []}", "chat.jsonl:2: both \"messages\" and \"conversations\"", NULL},
        {"chat_template", "{\"text\": \"x\"}", "chat.jsonl:2: expected a \"messages\" array", NULL},
        {"chat_template", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "chat.jsonl:2: the example has no token to predict", NULL},
        {"chat_template", "{\"messages\": [{\"role\": \"system\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}", "chat.jsonl:2: llama2:1: raise_exception: only user and assistant", &llama},
        {"chat_template", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}", "chat.jsonl:2: the chat template changes the content of message 0", &shout},
        {"chat_template", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\\u00ff\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}", NULL, NULL},
        {"jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "chat.jsonl:2: a conversation; set dataset_format: chat_template", NULL},
        {"alpaca", "{\"instruction\": \"x\"}", "chat.jsonl:2: expected \"instruction\" and \"output\" strings", NULL},
        {"alpaca", "{\"instruction\": \"x\", \"input\": 3, \"output\": \"y\"}", "chat.jsonl:2: \"input\" must be a string", NULL},
    };
    for (size_t k = 0; k < sizeof BAD / sizeof BAD[0]; k++) {
        char *text = NULL;
        sb_appendf(&text, "%s\n%s\n", "{\"messages\": [{\"role\": \"user\", \"content\": \"ok\"}, {\"role\": \"assistant\", "
                                      "\"content\": \"fine\"}]}", BAD[k].line);
        if (BAD[k].format[0] != 'c') {
            arrsetlen(text, 0);
            sb_appendf(&text, "{\"text\": \"ok\"}\n%s\n", BAD[k].line);
            if (BAD[k].format[0] == 'a') {
                arrsetlen(text, 0);
                sb_appendf(&text, "{\"instruction\": \"ok\", \"output\": \"fine\"}\n%s\n", BAD[k].line);
            }
        }
        arrput(text, '\0');
        Dataset d;
        Error err;
        const bool ok = load(&d, t, BAD[k].format, BAD[k].co ? BAD[k].co : &co, 512, false, text, &err);
        if (!BAD[k].want) {  // a valid line: \u00ff is a character, not a bad byte
            EXPECT(ok && arrlenu(d.ex) == 2, "line %zu loads: %s", k, err.msg);
        } else {
            EXPECT(!ok && err.status == EXIT_BAD_INPUT && strstr(err.msg, BAD[k].want) && !strchr(err.msg, '\n'),
                   "%s line %s -> exit 2, one line with '%s' (got '%s')", BAD[k].format, BAD[k].line, BAD[k].want, err.msg);
        }
        if (ok) data_free(&d);
        arrfree(text);
    }
    tok_free(t);
}

// `qlora train JOB --preview N`: the first N examples with their counts, exit 0, nothing written.
static void test_preview_cli(void) {
    const char *Q = getenv("QLORA") ? getenv("QLORA") : "./qlora";
    char out[200];
    snprintf(out, sizeof out, "/tmp/qlora-test-preview-%d", (int)getpid());
    const int rc = test_sh("%s train configs/demo.yaml --set output_dir=%s/never --preview 3 > %s.txt 2>&1", Q, out, out);
    EXPECT(rc == 0 && test_sh("test $(grep -c '^--- example' %s.txt) -eq 3 && grep -q '^--- example 2 (data/demo/train.jsonl:2): "
                              "[0-9]* tokens, [0-9]* trained$' %s.txt && grep -qF ':[[ ' %s.txt && grep -q '^--- 3 of 2000 "
                              "examples shown' %s.txt && test ! -e %s/never", out, out, out, out, out) == 0,
           "qlora train --preview 3: three marked examples with counts, a summary, exit 0 (%d), no output_dir", rc);
    test_sh("rm -rf %s %s.txt", out, out);
}

// chat_setup: which end of turn and which bos / eos each template and folder gets.
static void test_setup(void) {
    static const struct { const char *which, *dir, *eot, *bos; } V[] = {
        {"chatml", "tests/ref/tiny", "<|im_end|>", "<|endoftext|>"},     // GPT-2 folder: GPT2Tokenizer's tokens
        {"llama3", REF "/tok_llama2", "<|eot_id|>", "<s>"},
        {"mistral", REF "/tok_llama2", "</s>", "<s>"},
        {"zephyr", "tests/ref/tiny", "<|endoftext|>", "<|endoftext|>"},
        {"alpaca", REF "/tok_qwen2", "<|endoftext|>", NULL},               // Qwen2: bos_token null stays undefined
    };
    for (size_t k = 0; k < sizeof V / sizeof V[0]; k++) {
        Tokenizer *t = load_dir(V[k].dir);
        ChatSetup cs;
        Error err = {0};
        const bool ok = chat_setup(&cs, V[k].which, V[k].dir, t, &err);
        EXPECT(ok && cs.eot && !strcmp(cs.eot, V[k].eot) && (V[k].bos ? cs.bos && !strcmp(cs.bos, V[k].bos) : !cs.bos),
               "chat_setup %s on %s: end of turn %s, bos %s (%s)", V[k].which, V[k].dir, V[k].eot,
               V[k].bos ? V[k].bos : "undefined", err.msg);
        if (ok) chat_setup_free(&cs);
        tok_free(t);
    }
    Tokenizer *t = load_dir("tests/ref/tiny");
    ChatSetup cs;
    Error err = {0};
    EXPECT(!chat_setup(&cs, "tokenizer_default", "tests/ref/tiny", t, &err) && err.status == EXIT_BAD_INPUT &&
               strstr(err.msg, "tests/ref/tiny") && strstr(err.msg, "chatml"),
           "tokenizer_default without a template: exit 2 naming the folder and the named templates: %s", err.msg);
    tok_free(t);
}

// chat_reply_final: generation that stops at an end-of-turn text.
static void test_reply_final(void) {
    static const struct { const char *text; size_t printed; bool end; size_t want; bool stopped; } V[] = {
        {"Hello<|im", 0, false, 5, false},        // a tail that may begin the stop is held back
        {"Hello<|im", 0, true, 9, false},         // ... until the end
        {"Hello<|im_end|> more", 5, false, 5, true},
        {"a<b", 0, false, 3, false},              // "<b" begins no stop
        {"x<|im_end", 1, false, 1, false},
        {"<|im_end|>", 0, false, 0, true},
    };
    for (size_t k = 0; k < sizeof V / sizeof V[0]; k++) {
        bool stopped = false;
        const size_t got = chat_reply_final(V[k].text, strlen(V[k].text), V[k].printed, "<|im_end|>", V[k].end, &stopped);
        EXPECT(got == V[k].want && stopped == V[k].stopped, "chat_reply_final('%s', printed %zu%s) = %zu%s (want %zu%s)",
               V[k].text, V[k].printed, V[k].end ? ", end" : "", got, stopped ? ", stopped" : "", V[k].want,
               V[k].stopped ? ", stopped" : "");
    }
    bool stopped = false;
    EXPECT(chat_reply_final("abc", 3, 1, NULL, false, &stopped) == 3 && !stopped, "without a stop text all is final");
}

int main(void) {
    test_setup();
    test_reply_final();
    test_preview_cli();
    test_chatml();
    test_llama2();
    test_alpaca();
    test_errors();
    return test_summary("test_chat_data");
}
