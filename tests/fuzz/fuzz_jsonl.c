// fuzz_jsonl.c: libFuzzer harness for jsonl dataset lines (jsonl, alpaca, chat_template with a
// ChatML renderer) and plain text, tokenized with a byte-level vocabulary built in memory, then
// batched as training batches them.
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "ds.h"
#include "json.h"
#include "../test_chatml.h"

static Tokenizer *byte_tokenizer(void) {
    char *v = NULL;
    sb_appendf(&v, "{");
    for (int b = 0; b < 256; b++) {
        char u[3];
        tok_byte_symbol(b, u);
        if (b) arrput(v, ',');
        json_append_string(&v, u);
        sb_appendf(&v, ":%d", b);
    }
    sb_appendf(&v, ",\"<|endoftext|>\":256}");
    Tokenizer *t;
    Error err = {0};
    if (!tok_load_memory(&t, v, arrlenu(v), "vocab.json", "", 0, "merges.txt", &err)) abort();
    arrfree(v);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static Tokenizer *tok;
    if (!tok) tok = byte_tokenizer();
    static const char *const FORMATS[] = {"jsonl", "text", "alpaca", "chat_template"};
    for (int f = 0; f < 4; f++) {
        DataOptions o = {.format = FORMATS[f], .seq_len = 64, .train_on_inputs = size % 2 == 0, .vocab_size = 257,
                         .drop_long = size % 3 == 0};
        static const ChatRenderer chatml = {render_chatml, NULL, "<|im_end|>"};
        static const char *const roles[] = {"assistant"};
        const ChatOptions co = {&chatml, roles, 1, size % 2 == 0, (ChatEos)(size % 4)};
        o.chat = &co;
        Dataset d;
        Error err = {0};
        if (!data_load_text(&d, (const char *)data, size, "fuzz.jsonl", tok, &o, &err)) continue;
        size_t n = arrlenu(d.ex), order[4] = {0}, pred = 0;
        int tokens[4 * 64], targets[4 * 64];
        size_t b = n < 4 ? n : 4;
        for (size_t i = 0; i < b; i++) order[i] = i;
        if (b) data_batch(&d, order, 0, b, tokens, targets, &pred);
        data_free(&d);
    }
    return 0;
}
