// fuzz_jsonl.c: libFuzzer harness for jsonl dataset lines (and plain text), tokenized with
// a byte-level vocabulary built in memory, then batched as training batches them.
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "ds.h"
#include "json.h"

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
    for (int f = 0; f < 2; f++) {
        DataOptions o = {f ? "text" : "jsonl", 64, size % 2 == 0, 257};
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
