// lora_merge.c: W' = W + scaling B A for one adapter slot (lora_merge.h).
#include "lora_merge.h"

#include <stdlib.h>

#include "gemm.h"

void lora_merge_into(const LoraSet *ls, int layer, LoraTarget t, float *w, double *w_sq, double *delta_sq) {
    const LoraLinear *l = lora_get(ls, layer, t);
    if (!l) return;
    const size_t R = (size_t)ls->r, n = l->in * l->out;
    float *delta = xmalloc(n * sizeof(float));
    // delta [out, in] = scaling * B [out, r] . A [r, in]
    matmul_nn(delta, l->B, l->A, l->out, l->in, R, ls->scaling, 0.0f, R, l->in, l->in);
    double ws = 0, ds = 0;
    for (size_t i = 0; i < n; i++) {
        ws += (double)w[i] * w[i];
        ds += (double)delta[i] * delta[i];
        w[i] += delta[i];
    }
    free(delta);
    if (w_sq) *w_sq += ws;
    if (delta_sq) *delta_sq += ds;
}
