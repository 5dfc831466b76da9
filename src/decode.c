// decode.c: see model.h and arch.h. Incremental decoding with a KV cache (batch 1): the cache,
// attention of new rows over it, and model_step, which runs the architecture's embedding,
// block steps, final norm and output layer.
// C = n_embd, NH heads, NKV key/value heads, HS = head_dim, CKV = NKV*HS, F = n_inner, V vocab,
// L layers, P = n_positions, R = LoRA rank.
#include "model.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "arch.h"

KVCache *kv_create(const Model *m, const LoraSet *lora, int max_len) {
    const GPT2Config *c = &m->cfg;
    const ArchOps *ops = arch_ops(c);
    const size_t L = (size_t)c->n_layer, C = (size_t)c->n_embd, F = (size_t)c->n_inner;
    const size_t CQ = (size_t)c->n_head * (size_t)c->head_dim, CKV = (size_t)c->n_kv_head * (size_t)c->head_dim;
    const size_t P = max_len > 0 && max_len < c->n_positions ? (size_t)max_len : (size_t)c->n_positions;
    const size_t R = lora ? (size_t)lora->r : 1;
    KVCache *kv = xcalloc(1, sizeof *kv);
    kv->P = (int)P;
    kv->max_threads = omp_get_max_threads();
    kv->k = xmalloc_aligned(L * P * CKV * sizeof(float));
    kv->v = xmalloc_aligned(L * P * CKV * sizeof(float));
    kv->x = xmalloc_aligned(P * C * sizeof(float));
    kv->ln = xmalloc_aligned(P * C * sizeof(float));
    kv->qkv = xmalloc_aligned(P * (CQ + 2 * CKV) * sizeof(float));
    kv->atty = xmalloc_aligned(P * CQ * sizeof(float));
    kv->tmp = xmalloc_aligned(P * C * sizeof(float));
    kv->fch = xmalloc_aligned(P * F * sizeof(float));
    kv->fch_gelu = xmalloc_aligned(P * F * sizeof(float));
    kv->fch_up = ops->kv_mlp_bufs > 2 ? xmalloc_aligned(P * F * sizeof(float)) : NULL;
    kv->lora_h = xmalloc_aligned(P * R * sizeof(float));
    kv->tile = xmalloc_aligned(QLINEAR_TILE_FLOATS * sizeof(float));
    kv->scores = xmalloc_aligned((size_t)kv->max_threads * P * sizeof(float));
    return kv;
}

void kv_free(KVCache *kv) {
    if (!kv) return;
    float *bufs[] = {kv->k, kv->v, kv->x, kv->ln, kv->qkv, kv->atty, kv->tmp, kv->fch,
                     kv->fch_gelu, kv->fch_up, kv->lora_h, kv->tile, kv->scores};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(kv);
}

int kv_len(const KVCache *kv) { return kv->len; }

int kv_capacity(const KVCache *kv) { return kv->P; }

void kv_attend(KVCache *kv, int l, float *out, const float *q, size_t q_stride, size_t N,
               size_t pos0, size_t NH, size_t NKV, size_t HS, size_t window) {
    const size_t P = (size_t)kv->P, CKV = NKV * HS, G = NH / NKV;
    const float *K = kv->k + (size_t)l * P * CKV, *Vc = kv->v + (size_t)l * P * CKV;
    const float scale = 1.0f / sqrtf((float)HS);
    // one (head, query) per task; a softmax over keys j0..t (the window's), as the training kernels'
    #pragma omp parallel for schedule(static)
    for (size_t task = 0; task < NH * N; task++) {
        const size_t h = task / N, i = task % N, t = pos0 + i, g = h / G;
        const size_t j0 = window && t + 1 > window ? t + 1 - window : 0;
        float *s = kv->scores + (size_t)omp_get_thread_num() * P;
        const float *qi = q + i * q_stride + h * HS;
        float mx = -INFINITY;
        for (size_t j = j0; j <= t; j++) {
            const float *kj = K + j * CKV + g * HS;
            float d = 0;
            for (size_t d_ = 0; d_ < HS; d_++) d += qi[d_] * kj[d_];
            s[j] = d * scale;
            mx = fmaxf(mx, s[j]);
        }
        double sum = 0;
        for (size_t j = j0; j <= t; j++) {
            s[j] = expf(s[j] - mx);
            sum += s[j];
        }
        const float inv = (float)(1.0 / sum);
        float *o = out + i * NH * HS + h * HS;
        for (size_t d_ = 0; d_ < HS; d_++) o[d_] = 0;
        for (size_t j = j0; j <= t; j++) {
            const float pj = s[j] * inv, *vj = Vc + j * CKV + g * HS;
            for (size_t d_ = 0; d_ < HS; d_++) o[d_] += pj * vj[d_];
        }
    }
}

void model_step(const Model *m, const LoraSet *lora, KVCache *kv, const int *tokens, int n,
                float *logits) {
    const ArchOps *ops = arch_ops(&m->cfg);
    const size_t C = (size_t)m->cfg.n_embd, N = (size_t)n, pos0 = (size_t)kv->len;
    CHECK(n > 0 && pos0 + N <= (size_t)kv->P);
    ops->embed_forward(m, kv->x, tokens, 1, N, pos0, NULL);
    for (int l = 0; l < m->cfg.n_layer; l++) ops->block_step(m, lora, kv, l, N, pos0);
    ops->norm_forward(m, kv->ln, NULL, NULL, kv->x + (N - 1) * C, 1);
    head_forward(m, logits, kv->ln, 1);
    kv->len += n;
}
