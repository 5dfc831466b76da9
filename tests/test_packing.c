// test_packing.c: sample packing in the model layer (acts_set_positions). Several sequences
// packed into one row, each restarting at position 0 and attending only to itself, must give
// the loss and the gradients of the same sequences run unpacked, one per row: for GPT-2
// (position embeddings looked up at the packed positions) and for LLaMA-family blocks (RoPE at
// the packed positions; Mistral's window on top), with LoRA and with full fine-tuning.
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "model.h"
#include "test.h"

// Packed and unpacked runs do the same arithmetic up to the order of sums inside the matrix
// products (other tile splits, zero terms) and of the loss over rows. The gradients are of the
// mean loss over the 13 predicted tokens, as training computes them: measured differences are
// at most ~7e-7 absolute on gradients up to ~0.3, and ~1e-7 relative on the summed loss (~80).
// 1e-5 absolute + 1e-4 relative leaves room for other BLAS builds; a position off by one, or
// one sequence seeing the other, moves the loss by 1e-2 or more (checked below by breaking
// the positions on purpose).
#define TOL_ATOL 1e-5
#define TOL_RTOL 1e-4

enum { L1 = 7, L2 = 5, L3 = 4, T_PACK = L1 + L2 + L3, N_SEQ = 3, N_PRED = L1 + L2 + L3 - N_SEQ };

static const int LEN[N_SEQ] = {L1, L2, L3};

// Token t of sequence s (fixed, arbitrary ids below vocab).
static int token(int s, int t, int vocab) { return (s * 131 + t * 37 + 11) % vocab; }

// One packed row: the three sequences back to back, each target the next token of its own
// sequence (-1 for its last), positions restarting at 0.
static void make_packed(int vocab, int *tokens, int *targets, int *pos) {
    int k = 0;
    for (int s = 0; s < N_SEQ; s++)
        for (int t = 0; t < LEN[s]; t++, k++) {
            tokens[k] = token(s, t, vocab);
            targets[k] = t + 1 < LEN[s] ? token(s, t + 1, vocab) : -1;
            pos[k] = t;
        }
}

// The same sequences one per row, padded to the longest with token 0 and target -1.
static void make_unpacked(int vocab, int *tokens, int *targets) {
    for (int s = 0; s < N_SEQ; s++)
        for (int t = 0; t < L1; t++) {
            tokens[s * L1 + t] = t < LEN[s] ? token(s, t, vocab) : 0;
            targets[s * L1 + t] = t + 1 < LEN[s] ? token(s, t + 1, vocab) : -1;
        }
}

// Summed loss and LoRA gradients (into a copy) of one run.
static double run(const Model *m, LoraSet *ls, const int *tokens, const int *targets, const int *pos,
                  size_t B, size_t T, const TrainCtx *tc, float *grads_out) {
    Acts *a = acts_create(m, ls, B, T, ACTS_TRAIN);
    acts_set_positions(a, pos);
    memset(ls->grads, 0, ls->n_params * sizeof(float));
    size_t n = 0;
    double loss = model_forward_backward(m, ls, a, tokens, targets, B, T, 1.0f / N_PRED, tc, &n);
    memcpy(grads_out, ls->grads, ls->n_params * sizeof(float));
    acts_free(a);
    return loss;
}

// Packed vs unpacked on model dir (fp32 storage), LoRA r 4 on every linear with random B so
// the adapters carry gradient everywhere.
static void check_model(const char *dir) {
    Model m;
    QuantConfig q = {QUANT_NONE, 64, true};
    Error err = {0};
    if (!model_load(&m, dir, &q, &err)) {
        EXPECT(0, "load %s: %s", dir, err.msg);
        return;
    }
    LoraShapes shapes = model_lora_shapes(&m.cfg);
    bool targets[LORA_N_TARGETS] = {0};
    lora_parse_target(&shapes, "all-linear", targets, &err);
    Rng rng;
    rng_seed(&rng, 5);
    LoraSet ls;
    lora_create(&ls, m.cfg.n_layer, &shapes, 4, 8.0f, 0.0f, false, targets, &rng);
    for (size_t i = 0; i < ls.n_params; i++) ls.params[i] += 0.05f * rng_normal(&rng);
    lora_alloc_grads(&ls);
    const int V = m.cfg.vocab_size;
    int tp[T_PACK], gp[T_PACK], pos[T_PACK], tu[N_SEQ * L1], gu[N_SEQ * L1];
    make_packed(V, tp, gp, pos);
    make_unpacked(V, tu, gu);
    float *g1 = xmalloc(ls.n_params * sizeof(float)), *g2 = xmalloc(ls.n_params * sizeof(float));
    const double lp = run(&m, &ls, tp, gp, pos, 1, T_PACK, NULL, g1);
    const double lu = run(&m, &ls, tu, gu, NULL, N_SEQ, L1, NULL, g2);
    char what[200];
    snprintf(what, sizeof what, "%s: packed loss %.6f == unpacked %.6f", dir, lp, lu);
    EXPECT(fabs(lp - lu) <= TOL_ATOL + TOL_RTOL * fabs(lu), "%s", what);
    snprintf(what, sizeof what, "%s: LoRA gradients, packed == unpacked", dir);
    EXPECT_CLOSE(what, g1, g2, ls.n_params, TOL_ATOL, TOL_RTOL);
    // the check can fail: one row of positions counted straight through (no restarts) is
    // ordinary causal attention over all three sequences, a different loss
    int straight[T_PACK];
    for (int t = 0; t < T_PACK; t++) straight[t] = t;
    const double ls_ = run(&m, &ls, tp, gp, straight, 1, T_PACK, NULL, g1);
    EXPECT(fabs(ls_ - lu) > 1e-3 * fabs(lu), "%s: unrestarted positions change the loss (%.6f vs %.6f)", dir,
           ls_, lu);
    free(g1);
    free(g2);
    lora_free(&ls);
    model_free(&m);
}

// Method full: every parameter's gradient, packed == unpacked (GPT-2: the position embedding
// rows of each sequence's positions collect from all of them).
static void check_full(const char *dir) {
    Model m;
    QuantConfig q = {QUANT_NONE, 64, true};
    Error err = {0};
    CHECK(model_load(&m, dir, &q, &err));
    ModelParam *ps = NULL;
    model_params(&m, &ps);
    const size_t n = arrlenu(ps);
    float **ga = xcalloc(n, sizeof(float *)), **gb = xcalloc(n, sizeof(float *));
    for (size_t i = 0; i < n; i++) ga[i] = xcalloc(ps[i].n, sizeof(float)), gb[i] = xcalloc(ps[i].n, sizeof(float));
    const int V = m.cfg.vocab_size;
    int tp[T_PACK], gp[T_PACK], pos[T_PACK], tu[N_SEQ * L1], gu[N_SEQ * L1];
    make_packed(V, tp, gp, pos);
    make_unpacked(V, tu, gu);
    size_t cnt = 0;
    TrainCtx tca = {.full_grads = ga}, tcb = {.full_grads = gb};
    Acts *a = acts_create(&m, NULL, 1, T_PACK, ACTS_TRAIN);
    acts_set_positions(a, pos);
    model_forward_backward(&m, NULL, a, tp, gp, 1, T_PACK, 1.0f / N_PRED, &tca, &cnt);
    acts_free(a);
    a = acts_create(&m, NULL, N_SEQ, L1, ACTS_CHECKPOINT);  // and through checkpointing
    model_forward_backward(&m, NULL, a, tu, gu, N_SEQ, L1, 1.0f / N_PRED, &tcb, &cnt);
    acts_free(a);
    bool all = true;
    double worst = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < ps[i].n; j++) {
            const double d = fabs((double)ga[i][j] - gb[i][j]);
            all &= d <= TOL_ATOL + TOL_RTOL * fabs(gb[i][j]);
            worst = d > worst ? d : worst;
        }
    EXPECT(all, "%s: method full, every parameter's gradient packed == unpacked (max abs diff %.2e)", dir, worst);
    for (size_t i = 0; i < n; i++) free(ga[i]), free(gb[i]);
    free(ga);
    free(gb);
    arrfree(ps);
    model_free(&m);
}

int main(void) {
    check_model("tests/ref/tiny");
    check_model("tests/ref/llama/llama_tied");
    check_model("tests/ref/llama/qwen2");
    check_model("tests/ref/llama/mistral");  // window 4: narrower than the sequences
    check_full("tests/ref/tiny");
    check_full("tests/ref/llama/llama_untied");
    return test_summary("test_packing");
}
