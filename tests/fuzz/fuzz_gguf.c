// fuzz_gguf.c: libFuzzer harness for the GGUF reader (src/gguf.h): header, key-value pairs,
// tensor infos and data offsets, the typed getters and the F32/F16/Q8_0 readers.
#include <stdlib.h>

#include "ds.h"
#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    GgufFile f;
    Error err = {0};
    if (!gguf_open_memory(&f, data, size, "fuzz.gguf", &err)) return 0;
    for (size_t i = 0; i < f.n_kv; i++) {
        const GgufKv *kv = &f.kv[i];
        char *s = NULL, **strs = NULL;
        int32_t *ints = NULL;
        uint32_t u;
        float x;
        bool b;
        if (gguf_get_str(&f, kv->key, &s, &err)) free(s);
        if (gguf_get_str_array(&f, kv->key, &strs, &err)) gguf_free_strs(strs);
        if (gguf_get_i32_array(&f, kv->key, &ints, &err)) arrfree(ints);
        gguf_get_u32(&f, kv->key, &u, &err);
        gguf_get_f32(&f, kv->key, &x, &err);
        gguf_get_bool(&f, kv->key, &b, &err);
    }
    for (size_t i = 0; i < f.n_tensors; i++) {
        const GgufTensor *t = &f.tensors[i];
        if (t->n_elements <= (1u << 20)) {
            float *buf = malloc((t->n_elements ? t->n_elements : 1) * sizeof(float));
            gguf_tensor_to_f32(t, buf);
            free(buf);
        }
    }
    gguf_close(&f);
    return 0;
}
