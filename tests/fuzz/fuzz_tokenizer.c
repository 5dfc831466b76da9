// fuzz_tokenizer.c: libFuzzer harness for vocab.json + merges.txt (split at the first
// 0xFF byte; the rest after a second 0xFF is text to encode and decode).
#include <string.h>

#include "ds.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *sep = memchr(data, 0xFF, size);
    if (!sep) return 0;
    const char *vocab = (const char *)data, *merges = (const char *)sep + 1;
    size_t vlen = (size_t)(sep - data), rest = size - vlen - 1;
    const uint8_t *sep2 = memchr(merges, 0xFF, rest);
    size_t mlen = sep2 ? (size_t)(sep2 - (const uint8_t *)merges) : rest;
    Tokenizer *t;
    Error err = {0};
    if (!tok_load_memory(&t, vocab, vlen, "vocab.json", merges, mlen, "merges.txt", &err)) return 0;
    const char *text = sep2 ? (const char *)sep2 + 1 : "Hello world's  end\n";
    size_t tlen = sep2 ? rest - mlen - 1 : strlen(text);
    int *ids = NULL;
    char *out = NULL;
    tok_encode(t, text, tlen, &ids);
    for (size_t i = 0; i < arrlenu(ids); i++) tok_decode_append(t, ids[i], &out);
    arrfree(ids);
    arrfree(out);
    tok_free(t);
    return 0;
}
