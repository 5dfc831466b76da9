// fuzz_safetensors.c: libFuzzer harness for the safetensors header and tensor table, the
// F16/BF16/F32 readers, and the bitsandbytes 4-bit serialization (qstore) on top of it.
#include <stdlib.h>

#include "qstore.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    SafeTensors st;
    Error err = {0};
    if (!st_open_memory(&st, data, size, "fuzz.safetensors", &err)) return 0;
    for (size_t i = 0; i < st.n_tensors; i++) {
        const StTensor *t = &st.tensors[i];
        if (t->n_elements <= (1u << 20)) {
            float *buf = malloc((t->n_elements ? t->n_elements : 1) * sizeof(float));
            st_read_f32(&st, t, buf, &err);
            free(buf);
        }
        char base[256];
        if (qstore_is_state(t->name, base, sizeof base)) {
            Q4Tensor q;
            int ndim;
            uint64_t shape[ST_MAX_DIMS];
            if (qstore_load(&st, base, &q, &ndim, shape, &err)) {
                if (q.n <= (1u << 20)) {
                    float *y = malloc((q.n ? q.n : 1) * sizeof(float));
                    if (q.n) q4_dequantize_ref(&q, 0, q.n, y);
                    free(y);
                }
                q4_free(&q);
            }
        }
    }
    st_close(&st);
    return 0;
}
