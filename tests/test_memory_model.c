// test_memory_model.c: the analytic memory model (memory.h) against what the model layer
// really allocates. For GPT-2 and LLaMA-family models (random presets built in memory, and the
// fixtures of tests/ref/llama: grouped-query and tied, multi-query with attention_bias and
// untied, qwen2's q/k/v biases, mistral's head_dim 24), the predicted frozen weights,
// quantization constants, trainable parameters and activations must equal model_bytes(),
// model_param_count(), the LoRA set's size and acts_bytes() to the byte: for full fine-tuning,
// LoRA on an fp32 base, QLoRA NF4 and FP4 with and without double quantization, INT8, with and
// without gradient checkpointing, on batch shapes whose buffers are not multiples of 64 bytes.
// The formulas are written from the shapes (memory.c), the allocations from the model layer's
// own tables (acts.c, gpt2.c, llama.c), so an equality here ties two independent accounts.
#include <stdlib.h>
#include <string.h>

#include "memory.h"
#include "model.h"
#include "test.h"

// A stored base and the row of memory_predict that describes it.
typedef struct {
    const char *name;
    QuantType q;
    bool dq;
} Base;

static const Base BASES[] = {
    {"fp32", QUANT_NONE, false}, {"nf4+dq", QUANT_NF4, true}, {"nf4", QUANT_NF4, false},
    {"fp4", QUANT_FP4, false},   {"fp4+dq", QUANT_FP4, true}, {"int8", QUANT_INT8, false},
};

// (B, T, R): one shape whose per-row buffers (N, N*R, the scores) are not multiples of 16
// floats, so acts.c's 64-byte rounding shows, and one that is.
static const struct { size_t B, T; int R; } BATCHES[] = {{3, 7, 5}, {2, 16, 8}};

// m from a fixture folder (src starting "tests/") or a model_preset name built in memory.
static bool get_model(Model *m, const char *src, const Base *b, size_t blocksize) {
    const QuantConfig q = {b->q, blocksize, b->dq};
    Error err = {0};
    GPT2Config c;
    bool ok = strncmp(src, "tests/", 6) == 0 ? model_load(m, src, &q, &err)
                                               : model_preset(src, &c) && model_init_random(m, &c, &q, 7, &err);
    EXPECT(ok, "%s loads with a %s base (%s)", src, b->name, err.msg);
    return ok;
}

// Predicted frozen weights and constants (method lora/qlora on base b, or full) against
// model_bytes, and the parameter count against the model layer's.
static void check_weights(const char *src, const Model *m, const Base *b) {
    const ModelShape s = shape_from_config(&m->cfg);
    const ModelBytes mb = model_bytes(m);
    const double frozen = (double)(mb.linear_weights + mb.embeddings + mb.norms_and_biases);
    MemJob j = {.B = 1, .T = 1, .lora_r = 1, .quant_blocksize = m->quant.blocksize,
                .fp4_double_quant = b->q == QUANT_FP4 && b->dq};
    MemRow rows[MEM_N_METHODS];
    memory_predict(&s, &j, rows);
    const MemRow *p = &rows[memory_method(false, b->q, b->dq)];
    EXPECT(p->weights == frozen && p->quant_constants == (double)mb.quant_constants,
           "%s %s: predicted weights %.0f + constants %.0f = model_bytes %.0f + %zu", src, p->name, p->weights,
           p->quant_constants, frozen, mb.quant_constants);
    if (b->q != QUANT_NONE) return;
    const double n = model_param_count(&m->cfg);
    const MemRow *f = &rows[memory_method(true, QUANT_NONE, false)];
    EXPECT(shape_params(&s) == n && f->trainable == frozen && f->gradients == 4 * n,
           "%s full: %.0f parameters (model layer %.0f), %.0f bytes trained = model_bytes %.0f", src,
           shape_params(&s), n, f->trainable, frozen);
}

// Predicted activations against acts_bytes for every batch shape, with and without gradient
// checkpointing, for full fine-tuning (no adapters) and for LoRA on `targets` (whose
// trainable count is checked too).
static void check_acts(const char *src, const Model *m, const char *targets) {
    const ModelShape s = shape_from_config(&m->cfg);
    const LoraShapes shapes = model_lora_shapes(&m->cfg);
    for (size_t k = 0; k < sizeof BATCHES / sizeof BATCHES[0]; k++)
        for (int ckpt = 0; ckpt < 2; ckpt++)
            for (int with_lora = 0; with_lora < 2; with_lora++) {
                MemJob j = {.B = BATCHES[k].B, .T = BATCHES[k].T, .lora_r = BATCHES[k].R,
                            .gradient_checkpointing = ckpt, .quant_blocksize = 64};
                Error err = {0};
                CHECK(lora_parse_target(&shapes, targets, j.targets, &err));
                LoraSet lora;
                Rng rng;
                rng_seed(&rng, 1);
                if (with_lora) lora_create(&lora, m->cfg.n_layer, &shapes, j.lora_r, 16, 0, false, j.targets, &rng);
                Acts *a = acts_create(m, with_lora ? &lora : NULL, j.B, j.T, ckpt ? ACTS_CHECKPOINT : ACTS_TRAIN);
                const double pred = memory_activations_fp32(&s, &j, with_lora);
                EXPECT(pred == (double)acts_bytes(a), "%s %s, B=%zu T=%zu R=%d%s: activations %.0f = acts_bytes %zu",
                       src, with_lora ? "LoRA" : "full", j.B, j.T, j.lora_r, ckpt ? ", checkpointing" : "", pred,
                       acts_bytes(a));
                if (with_lora)
                    EXPECT(shape_lora_params(&s, j.lora_r, j.targets) == (double)lora.n_params,
                           "%s LoRA r=%d on %s: %.0f trainable = the LoRA set's %zu", src, j.lora_r, targets,
                           shape_lora_params(&s, j.lora_r, j.targets), lora.n_params);
                acts_free(a);
                if (with_lora) lora_free(&lora);
            }
}

int main(void) {
    // model, quantization blocksize (the fixtures' F = 96 and mistral's CQ = 96 take 32), and
    // a LoRA target besides all-linear. Block counts per linear that are not multiples of the
    // 256 sharing a second-level NF4 scale (tiny's c_attn: 192; the fixtures' q_proj: 128)
    // check that constants round up per tensor.
    static const struct { const char *src; size_t blocksize; const char *target; } MODELS[] = {
        {"tiny", 64, "c_attn"},
        {"llama-tiny", 64, "v_proj"},
        {"tests/ref/llama/llama_tied", 32, "o_proj"},    // GQA 4/2, tied
        {"tests/ref/llama/llama_untied", 32, "k_proj"},  // MQA 4/1, attention_bias, untied, sharded
        {"tests/ref/llama/qwen2", 32, "q_proj"},         // q/k/v biases, untied
        {"tests/ref/llama/mistral", 32, "down_proj"},    // head_dim 24 != 64/4, window
    };
    for (size_t i = 0; i < sizeof MODELS / sizeof MODELS[0]; i++)
        for (size_t b = 0; b < sizeof BASES / sizeof BASES[0]; b++) {
            Model m;
            if (!get_model(&m, MODELS[i].src, &BASES[b], MODELS[i].blocksize)) continue;
            check_weights(MODELS[i].src, &m, &BASES[b]);
            if (b <= 1) {  // activations do not depend on the base; fp32 and NF4 + DQ suffice
                check_acts(MODELS[i].src, &m, "all-linear");
                check_acts(MODELS[i].src, &m, MODELS[i].target);
            }
            model_free(&m);
        }
    // every preset's parameter count (the published totals are checked in test_memory.sh)
    static const char *const PRESETS[] = {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "tiny", "bench-tiny",
                                          "smollm2-135m", "smollm2-360m", "qwen2.5-0.5b", "tinyllama-1.1b",
                                          "llama-tiny"};
    for (size_t i = 0; i < sizeof PRESETS / sizeof PRESETS[0]; i++) {
        GPT2Config c;
        ModelShape s;
        CHECK(model_preset(PRESETS[i], &c) && shape_preset(PRESETS[i], &s));
        EXPECT(shape_params(&s) == model_param_count(&c), "preset %s: %.0f parameters (model layer %.0f)",
               PRESETS[i], shape_params(&s), model_param_count(&c));
    }
    return test_summary("test_memory_model");
}
