// merge.c: `qlora merge`: a Hugging Face model folder with a LoRA adapter folded into the
// base weights (W' = W + scaling B A), from the original fp32 weights or from the
// quantized-then-dequantized ones the adapter was trained against.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "gemm.h"
#include "lora.h"
#include "model.h"
#include "path.h"
#include "quant.h"

static const char *MERGE_HELP =
    "usage: qlora merge --model DIR --adapter DIR --out DIR [--dequantized]\n"
    "                   [--quant nf4|fp4|int8] [--blocksize N] [--no-double-quant]\n\n"
    "Writes a full Hugging Face model folder with the LoRA adapter merged in:\n"
    "W' = W + (alpha/r) B A (transposed into GPT-2's Conv1D layout). By default W is the\n"
    "original fp32 weight; with --dequantized it is the weight the adapter was trained\n"
    "against in QLoRA: the base quantized (nf4 + double quant unless --quant etc. say\n"
    "otherwise) and dequantized. Prints, per layer, the relative size of the change.\n";

typedef struct {
    const LoraSet *lora;
    double *delta_sq, *w_sq;  // per layer sums
} MergeCtx;

// model_save_hf's WeightDelta: adds the adapter's scaling B A to w [out, in] of (layer,
// target) in place (nothing when that linear has no adapter) and sums the squares of w and
// of the change per layer into the MergeCtx.
static void merge_delta(void *vctx, int layer, int target, float *w) {
    MergeCtx *mc = vctx;
    const LoraLinear *l = lora_get(mc->lora, layer, (LoraTarget)target);
    double ws = 0, ds = 0;
    if (l) {
        const size_t R = (size_t)mc->lora->r;
        float *delta = xmalloc(l->in * l->out * sizeof(float));
        // delta [out, in] = scaling * B [out, r] . A [r, in]
        matmul_nn(delta, l->B, l->A, l->out, l->in, R, mc->lora->scaling, 0.0f, R, l->in, l->in);
        for (size_t i = 0; i < l->in * l->out; i++) {
            ws += (double)w[i] * w[i];
            ds += (double)delta[i] * delta[i];
            w[i] += delta[i];
        }
        free(delta);
    }
    mc->w_sq[layer] += ws;
    mc->delta_sq[layer] += ds;
}

int cmd_merge(int argc, char **argv) {
    if (cli_help(argc, argv, MERGE_HELP)) return 0;
    const char *model_dir = NULL, *adapter = NULL, *out = NULL;
    bool dequantized = false;
    QuantConfig q = {QUANT_NF4, QUANT_DEFAULT_BLOCK, true};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--model") == 0) model_dir = cli_value(argc, argv, &i);
        else if (strcmp(a, "--adapter") == 0) adapter = cli_value(argc, argv, &i);
        else if (strcmp(a, "--out") == 0) out = cli_value(argc, argv, &i);
        else if (strcmp(a, "--dequantized") == 0) dequantized = true;
        else if (strcmp(a, "--no-double-quant") == 0) q.double_quant = false;
        else if (strcmp(a, "--quant") == 0) {
            const char *v = cli_value(argc, argv, &i);
            if (!quant_parse(v, &q.type) || (q.type != QUANT_NF4 && q.type != QUANT_FP4 && q.type != QUANT_INT8))
                cli_usage_error("merge", "--quant must be nf4, fp4 or int8, got '%s'", v);
        } else if (strcmp(a, "--blocksize") == 0) {
            q.blocksize = (size_t)cli_long(a, cli_value(argc, argv, &i), QUANT_MIN_BLOCK, QUANT_MAX_BLOCK);
        } else cli_usage_error("merge", "unknown argument '%s'", a);
    }
    if (!model_dir || !adapter || !out) cli_usage_error("merge", "--model, --adapter and --out are required");
    if (!dequantized) q.type = QUANT_NONE;
    Error err = {0};
    if (!path_check_apart("--out", out, "--model", model_dir, &err) ||
        !path_check_apart("--out", out, "--adapter", adapter, &err))
        die_error(&err);
    Model m;
    LoraSet lora;
    if (!model_load(&m, model_dir, &q, &err)) die_error(&err);
    LoraShapes shapes = model_lora_shapes(&m.cfg);
    if (!lora_load_peft(&lora, adapter, m.cfg.n_layer, &shapes, &err)) die_error(&err);
    if (!path_mkdir_p(out, &err)) die_error(&err);
    MergeCtx mc = {&lora, xcalloc((size_t)m.cfg.n_layer, sizeof(double)), xcalloc((size_t)m.cfg.n_layer, sizeof(double))};
    if (!model_save_hf(&m, model_dir, out, merge_delta, &mc, &err)) die_error(&err);
    printf("merged %s into %s weights of %s (scaling %g); per layer ||delta W|| / ||W||:\n", adapter,
           dequantized ? "the dequantized" : "the original fp32", model_dir, (double)lora.scaling);
    for (int l = 0; l < m.cfg.n_layer; l++)
        printf("  layer %2d: %.3e\n", l, mc.w_sq[l] > 0 ? sqrt(mc.delta_sq[l] / mc.w_sq[l]) : 0.0);
    printf("wrote %s (model.safetensors, config.json, vocab.json, merges.txt)\n", out);
    free(mc.delta_sq);
    free(mc.w_sq);
    lora_free(&lora);
    model_free(&m);
    return 0;
}
