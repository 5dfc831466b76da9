// acts.c: see model.h and arch.h. The activation plan: the buffers every architecture needs
// (block inputs, LoRA hiddens, final norm, loss-head chunk, gradient scratch of the shared
// code) followed by the architecture's own table, all carved from one allocation.
// B batch, T time, C = n_embd, V vocab, L layers, N = B*T, R = LoRA rank.
#include "model.h"

#include <stdlib.h>

#include "arch.h"
#include "ds.h"

// One entry of the plan: counting and carving both walk the same list of entries, so the
// allocation, the pointers and acts_bytes cannot disagree.
typedef struct {
    float **slot;   // `count` pointers to set
    size_t count;
    size_t floats;  // size of each buffer
    bool shared;    // pointer k uses buffer k % period instead of its own
    size_t period;  // distinct buffers when shared (0 means 1): the LoRA hiddens of one
                    // block's linears must not share
} PlanItem;

// Returns the floats needed; with base, also sets every pointer.
static size_t plan_walk(const PlanItem *items, size_t n_items, float *base) {
    size_t off = 0;
    for (size_t i = 0; i < n_items; i++) {
        const PlanItem *it = &items[i];
        const size_t stride = (it->floats + 15) & ~(size_t)15;  // 64-byte aligned buffers
        const size_t period = it->period ? it->period : 1;
        const size_t n_bufs = !it->shared ? it->count : it->count < period ? it->count : period;
        for (size_t k = 0; k < it->count; k++)
            if (base) it->slot[k] = base + off + (it->shared ? k % period : k) * stride;
        off += n_bufs * stride;
    }
    return off;
}

size_t model_logit_rows(ActsMode mode) { return mode == ACTS_TRAIN ? 512 : 256; }

void acts_set_profile(Acts *a, Profile *p) { a->prof = p; }

void acts_set_positions(Acts *a, const int *pos) { a->pos = pos; }

// Append to *items the buffers the shared code uses: the block inputs, the LoRA hiddens, the
// final norm, the loss head's chunk of logits and the training scratch of the adapted linear.
static void plan_shared(PlanItem **items, Acts *a, const Model *m, const LoraSet *lora) {
    const size_t L = (size_t)m->cfg.n_layer, C = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.vocab_size;
    const size_t N = a->B * a->T, R = lora ? (size_t)lora->r : 0;
    const LoraShapes shapes = model_lora_shapes(&m->cfg);
    size_t in_max = 0;  // the widest linear input: dropout's scratch holds one
    for (int t = 0; t < shapes.n; t++) in_max = shapes.in[t] > in_max ? shapes.in[t] : in_max;
    const bool sh = a->mode != ACTS_TRAIN;          // per-layer buffers shared?
    const bool keep_resid = a->mode != ACTS_INFER;  // block inputs kept per layer?
    const size_t g = a->mode == ACTS_INFER ? 0 : 1;  // gradient buffers present?
    const size_t gl = g && lora ? 1 : 0;            // ... and those of the LoRA branch?
    const PlanItem shared[] = {
        {a->resid, L + 1, N * C, !keep_resid, 0},
        {a->lora_h, lora ? L * (size_t)shapes.n : 0, N * R, sh, (size_t)shapes.n},
        {&a->lnf, 1, N * C, false, 0},        {&a->lnf_mean, 1, N, false, 0},
        {&a->lnf_rstd, 1, N, false, 0},       {&a->tmp, 1, N * C, false, 0},
        {&a->tile, 1, QLINEAR_TILE_FLOATS, false, 0},
        {&a->logits, 1, model_logit_rows(a->mode) * V, false, 0},
        {&a->dresid, g, N * C, false, 0},     {&a->dln, g, N * C, false, 0},
        {&a->dh, gl, N * R, false, 0},        {&a->xd, gl, N * in_max, false, 0},
        {&a->dxd, gl, N * in_max, false, 0},
    };
    for (size_t i = 0; i < sizeof shared / sizeof shared[0]; i++) arrput(*items, shared[i]);
}

Acts *acts_create(const Model *m, const LoraSet *lora, size_t B, size_t T, ActsMode mode) {
    const ArchOps *ops = arch_ops(&m->cfg);
    const size_t L = (size_t)m->cfg.n_layer;
    Acts *a = xcalloc(1, sizeof *a);
    a->B = B;
    a->T = T;
    a->mode = mode;
    a->L = (int)L;
    a->n_blk = ops->n_acts;
    a->resid = xcalloc(L + 1, sizeof(float *));
    a->n_lin = ops->n_lin;
    a->lora_h = xcalloc(L * (size_t)ops->n_lin, sizeof(float *));
    a->blk = xcalloc((size_t)ops->n_acts * L, sizeof(float *));
    PlanItem *items = NULL;
    plan_shared(&items, a, m, lora);
    ActSpec *spec = xcalloc((size_t)ops->n_acts, sizeof *spec);
    ops->act_plan(&m->cfg, B, T, spec);
    for (int s = 0; s < ops->n_acts; s++) {  // ACT_GRAD: one buffer behind all L pointers
        const bool grad = spec[s].kind == ACT_GRAD;
        PlanItem it = {&a->blk[(size_t)s * L], grad && mode == ACTS_INFER ? 0 : L, spec[s].floats,
                       grad || mode != ACTS_TRAIN, 0};
        arrput(items, it);
    }
    free(spec);
    a->n_floats = plan_walk(items, arrlenu(items), NULL);
    a->mem = xmalloc_aligned(a->n_floats * sizeof(float));
    plan_walk(items, arrlenu(items), a->mem);
    arrfree(items);
    return a;
}

void acts_free(Acts *a) {
    if (!a) return;
    free(a->resid);
    free(a->lora_h);
    free(a->blk);
    free(a->mem);
    free(a);
}

size_t acts_bytes(const Acts *a) { return a->n_floats * sizeof(float); }
