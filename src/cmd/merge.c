// merge.c: `qlora merge`: a Hugging Face model folder with a LoRA adapter folded into the
// base weights (W' = W + scaling B A), from the original fp32 weights or from the
// quantized-then-dequantized ones the adapter was trained against.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lora.h"
#include "lora_merge.h"
#include "model.h"
#include "path.h"
#include "quant.h"

typedef struct {
    const char *model, *adapter, *out, *quant;
    long blocksize;
    bool dequantized, no_double_quant;
} MergeArgs;

static const char *const MERGE_QUANTS[] = {"nf4", "fp4", "int8", NULL};

static const CliOption MERGE_OPTIONS[] = {
    {"--model", CLI_STR(MergeArgs, model), "DIR", "the base model folder", .flags = CLI_REQUIRED},
    {"--adapter", CLI_STR(MergeArgs, adapter), "DIR", "the PEFT adapter folder", .flags = CLI_REQUIRED},
    {"--out", CLI_STR(MergeArgs, out), "DIR", "the merged model folder to write", .flags = CLI_REQUIRED},
    {"--dequantized", CLI_FLAG(MergeArgs, dequantized), NULL, "merge into the quantized-then-dequantized base"},
    {"--quant", CLI_CHOICE(MergeArgs, quant), NULL, "the quantization of --dequantized", .choices = MERGE_QUANTS},
    {"--blocksize", CLI_INT(MergeArgs, blocksize), "N", "values per quantization block of --dequantized",
     .lo = QUANT_MIN_BLOCK, .hi = QUANT_MAX_BLOCK},
    {"--no-double-quant", CLI_FLAG(MergeArgs, no_double_quant), NULL, "--dequantized without double quantization"},
    CLI_END};

static const CliCommand MERGE = {
    .name = "merge",
    .about =
    "Writes a full Hugging Face model folder with the LoRA adapter merged in:\n"
    "W' = W + (alpha/r) B A (stored in the file's layout: GPT-2's Conv1D [in, out], the\n"
    "LLaMA family's [out, in]); the tokenizer's files are copied along. By default W is the\n"
    "original fp32 weight; with --dequantized it is the weight the adapter was trained\n"
    "against in QLoRA: the base quantized (nf4 + double quant unless --quant etc. say\n"
    "otherwise) and dequantized. Prints, per layer, the relative size of the change.\n",
    .options = MERGE_OPTIONS};

typedef struct {
    const LoraSet *lora;
    double *delta_sq, *w_sq;  // per layer sums
} MergeCtx;

// model_save_hf's WeightDelta: adds the adapter's scaling B A to w [out, in] of (layer,
// target) in place (nothing when that linear has no adapter) and sums the squares of w and
// of the change per layer into the MergeCtx.
static void merge_delta(void *vctx, int layer, int target, float *w) {
    MergeCtx *mc = vctx;
    lora_merge_into(mc->lora, layer, (LoraTarget)target, w, &mc->w_sq[layer], &mc->delta_sq[layer]);
}

int cmd_merge(int argc, char **argv) {
    MergeArgs a = {.quant = "nf4", .blocksize = QUANT_DEFAULT_BLOCK};
    const int rc = cli_parse(&MERGE, &a, argc, argv);
    if (rc != CLI_RUN) return rc;
    const char *model_dir = a.model, *adapter = a.adapter, *out = a.out;
    QuantConfig q = {QUANT_NONE, (size_t)a.blocksize, !a.no_double_quant};
    if (a.dequantized) CHECK(quant_parse(a.quant, &q.type));
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
           a.dequantized ? "the dequantized" : "the original fp32", model_dir, (double)lora.scaling);
    for (int l = 0; l < m.cfg.n_layer; l++)
        printf("  layer %2d: %.3e\n", l, mc.w_sq[l] > 0 ? sqrt(mc.delta_sq[l] / mc.w_sq[l]) : 0.0);
    printf("wrote %s (model.safetensors, config.json and the base folder's tokenizer files)\n", out);
    free(mc.delta_sq);
    free(mc.w_sq);
    lora_free(&lora);
    model_free(&m);
    return 0;
}
