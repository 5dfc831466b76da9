// fuzz_hf_tokenizer.c: libFuzzer harness for tokenizer.json (hf_tokenizer.h). The input is the
// file up to the first 0xFF byte (JSON text never needs one); what follows is text to encode,
// with and without special tokens (also with spans: the same ids, each span inside the text), and
// to decode back. Every id must be in range.
#include <string.h>

#include "ds.h"
#include "hf_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *sep = memchr(data, 0xFF, size);
    const size_t jlen = sep ? (size_t)(sep - data) : size;
    HfTokenizer *t;
    Error err = {0};
    if (!hf_tok_load_memory(&t, (const char *)data, jlen, "tokenizer.json", NULL, 0, NULL, &err)) return 0;
    const char *text = sep ? (const char *)sep + 1 : "Hello world's  end\n 123 <|im_start|>";
    const size_t tlen = sep ? size - jlen - 1 : strlen(text);
    for (int special = 0; special < 2; special++) {
        int *ids = NULL;
        char *out = NULL;
        err = (Error){0};
        if (hf_tok_encode(t, text, tlen, special, &ids, &err)) {
            for (size_t i = 0; i < arrlenu(ids); i++) CHECK(ids[i] >= 0 && ids[i] < hf_tok_vocab_size(t));
            hf_tok_decode(t, ids, arrlenu(ids), special, &out);
            // the same ids with spans, each inside the text
            int *ids2 = NULL;
            size_t *sp = NULL;
            CHECK(hf_tok_encode_spans(t, text, tlen, special, &ids2, &sp, &err));
            CHECK(arrlenu(ids2) == arrlenu(ids) && arrlenu(sp) == 2 * arrlenu(ids));
            for (size_t i = 0; i < arrlenu(ids); i++)
                CHECK(ids2[i] == ids[i] && sp[2 * i] <= sp[2 * i + 1] && sp[2 * i + 1] <= tlen);
            arrfree(ids2);
            arrfree(sp);
        }
        arrfree(ids);
        arrfree(out);
    }
    hf_tok_free(t);
    return 0;
}
