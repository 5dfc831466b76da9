// cmd/memory.c: `qlora memory`, the prediction of memory.h printed as a table or JSON.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "ds.h"
#include "json.h"
#include "memory.h"

typedef struct {
    const char *model_dir, *preset, *format;
    const char *targets;  // comma-separated LoRA targets, read against the model's linears
    long batch, seq, lora_r, blocksize;
    bool gradient_checkpointing;
    double params;  // 0: not asked
} MemoryArgs;

// targets[] = the linears of s that the comma-separated list names (PEFT's names for s's
// architecture, or all-linear); exits with a usage error naming what is there otherwise.
static void parse_targets(const char *value, const ModelShape *s, bool targets[LORA_N_TARGETS]) {
    char list[512];
    snprintf(list, sizeof list, "%s", value);
    memset(targets, 0, LORA_N_TARGETS * sizeof(bool));
    Error e = {0};
    const LoraShapes shapes = model_lora_shapes(&s->cfg);
    int n = 0;
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ","), n++)
        if (!lora_parse_target(&shapes, tok, targets, &e)) cli_usage_error("memory", "--targets: %s", e.msg);
    if (n == 0) cli_usage_error("memory", "--targets needs at least one linear, got '%s'", value);
}

static const char *const FORMAT_CHOICES[] = {"text", "json", NULL};

static const CliOption MEMORY_OPTIONS[] = {
    {"--model", CLI_STR(MemoryArgs, model_dir), "DIR", "a model folder (its config.json)"},
    {"--preset", CLI_STR(MemoryArgs, preset), "NAME",
     "gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny, bench-tiny, smollm2-135m, smollm2-360m, qwen2.5-0.5b, "
     "tinyllama-1.1b, llama-tiny, or the LLaMA-1 shapes llama-7b, llama-13b, llama-33b, llama-65b"},
    {"--batch", CLI_INT(MemoryArgs, batch), "B", "examples per step", .lo = 1, .hi = 1 << 20},
    {"--seq", CLI_INT(MemoryArgs, seq), "T", "tokens per example", .lo = 1, .hi = 1 << 22},
    {"--lora-r", CLI_INT(MemoryArgs, lora_r), "R", "LoRA rank", .lo = 1, .hi = 65536},
    {"--targets", CLI_STR(MemoryArgs, targets), "LIST",
     "comma-separated linears with adapters, by the model's names: GPT-2 c_attn, c_proj, attn.c_proj, "
     "mlp.c_proj, c_fc; the LLaMA family q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; "
     "or all-linear"},
    {"--gradient-checkpointing", CLI_FLAG(MemoryArgs, gradient_checkpointing), NULL,
     "keep one layer's activations at a time"},
    {"--blocksize", CLI_INT(MemoryArgs, blocksize), "N", "values per quantization block", .lo = QUANT_MIN_BLOCK,
     .hi = QUANT_MAX_BLOCK},
    {"--params", CLI_FLOAT(MemoryArgs, params), "N", "also print what N parameters take in each number format",
     .lo = 0, .hi = INFINITY, .flags = CLI_LO_OPEN},
    {"--format", CLI_CHOICE(MemoryArgs, format), NULL, "a table, or one JSON object", .choices = FORMAT_CHOICES},
    CLI_END};

static const CliCommand MEMORY = {
    .name = "memory",
    .about =
    "Predicts the memory of fine-tuning the model with each method: full fp32 AdamW, full\n"
    "16-bit mixed precision, LoRA on an fp32 or 16-bit base, QLoRA with an int8, fp4, nf4\n"
    "and nf4 + double-quant base. Give --model DIR, --preset NAME or --params N.\n",
    .options = MEMORY_OPTIONS};

// " %9.2f" of bytes in GiB, a column of the text table.
static void print_gib(double bytes) { printf(" %9.2f", bytes / 1073741824.0); }

// The prediction as one JSON object (qlora memory --format json); label names the model.
static void print_rows_json(const char *label, const ModelShape *sp, const MemJob *jp,
                            const MemRow rows[MEM_N_METHODS]) {
    const ModelShape s = *sp;
    const MemJob j = *jp;
    const double n_all = shape_params(&s), n_lora = shape_lora_params(&s, j.lora_r, j.targets);
    char *name = NULL;  // a folder's path may hold '"' or '\\'
    json_append_string(&name, label);
    printf("{\"model\": %.*s, \"params\": %.0f, \"linear_params\": %.0f, \"lora_params\": %.0f, "
           "\"batch\": %zu, \"seq\": %zu, \"lora_r\": %d, \"gradient_checkpointing\": %s, "
           "\"nf4_bits\": %.4f, \"nf4_dq_bits\": %.4f, \"methods\": [",
           (int)arrlen(name), name, n_all, shape_linear_params(&s), n_lora, j.B, j.T, j.lora_r,
           j.gradient_checkpointing ? "true" : "false", nf4_bits(j.quant_blocksize, false),
           nf4_bits(j.quant_blocksize, true));
    arrfree(name);
    for (int m = 0; m < MEM_N_METHODS; m++) {
        const MemRow *r = &rows[m];
        printf("%s{\"name\": \"%s\", \"weights_bytes\": %.0f, \"quant_constants_bytes\": %.0f, "
               "\"trainable_bytes\": %.0f, \"gradients_bytes\": %.0f, \"optimizer_bytes\": %.0f, "
               "\"activations_bytes\": %.0f, \"total_bytes\": %.0f, \"bytes_per_param\": \"%s\"}",
               m ? ", " : "", r->name, r->weights, r->quant_constants, r->trainable, r->gradients,
               r->optimizer, r->activations, r->total, r->bytes_per_param);
    }
    printf("]}\n");
}

// The prediction as a text table with the per-parameter accounting; label names the model.
static void print_rows_text(const char *label, const ModelShape *sp, const MemJob *jp,
                            const MemRow rows[MEM_N_METHODS]) {
    const ModelShape s = *sp;
    const MemJob j = *jp;
    const double n_all = shape_params(&s), n_lora = shape_lora_params(&s, j.lora_r, j.targets);
    printf("%s: %.4g parameters (%.4g in block linears), LoRA r=%d: %.4g trainable (%.3f%%)\n",
           label, n_all, shape_linear_params(&s), j.lora_r, n_lora, 100 * n_lora / n_all);
    printf("batch %zu x %zu tokens%s; NF4: %.3f bits/param with fp32 scales, %.3f with double quant\n\n",
           j.B, j.T, j.gradient_checkpointing ? ", gradient checkpointing" : "",
           nf4_bits(j.quant_blocksize, false), nf4_bits(j.quant_blocksize, true));
    printf("%-17s %9s %9s %9s %9s %9s %9s %9s   (GiB)\n", "method", "weights", "qconsts", "trainable",
           "grads", "optimizer", "activ.", "total");
    for (int m = 0; m < MEM_N_METHODS; m++) {
        const MemRow *r = &rows[m];
        printf("%-17s", r->name);
        print_gib(r->weights);
        print_gib(r->quant_constants);
        print_gib(r->trainable);
        print_gib(r->gradients);
        print_gib(r->optimizer);
        print_gib(r->activations);
        print_gib(r->total);
        printf("\n");
    }
    printf("\nper-parameter accounting:\n");
    for (int m = 0; m < MEM_N_METHODS; m++) printf("  %-17s %s\n", rows[m].name, rows[m].bytes_per_param);
    printf("activations: qlora's own fp32 buffers for this batch (halved for 16-bit methods); "
           "GiB = 2^30 bytes\n");
}

// What n parameters take in each number format (--params), as a list or one JSON object.
static void print_formats(double n, size_t blocksize, bool json) {
    static const struct { const char *name; double bits; } FORMATS[] = {
        {"fp32", 32}, {"fp16", 16}, {"bf16", 16}, {"int8", 8}, {"int4", 4}};
    const size_t n_formats = sizeof FORMATS / sizeof FORMATS[0];
    const double nf4 = nf4_bits(blocksize, false), nf4_dq = nf4_bits(blocksize, true), gib = 1073741824.0;
    if (json) {
        printf("{\"params\": %.0f, \"formats\": {", n);
        for (size_t k = 0; k < n_formats; k++)
            printf("%s\"%s\": %.0f", k ? ", " : "", FORMATS[k].name, n * FORMATS[k].bits / 8);
        printf(", \"nf4\": %.0f, \"nf4_dq\": %.0f}}\n", n * nf4 / 8, n * nf4_dq / 8);
        return;
    }
    printf("%.4g parameters in each number format (GiB = 2^30 bytes):\n", n);
    for (size_t k = 0; k < n_formats; k++)
        printf("  %-5s %6.2f GiB\n", FORMATS[k].name, n * FORMATS[k].bits / 8 / gib);
    printf("  nf4   %6.2f GiB with fp32 block scales (%.3f bits), %.2f GiB with double quant (%.3f bits)\n",
           n * nf4 / 8 / gib, nf4, n * nf4_dq / 8 / gib, nf4_dq);
}

// The shape --preset or --model names; false when neither was given. Exits on a bad one.
static bool memory_shape(const MemoryArgs *a, ModelShape *s) {
    if (a->preset) {
        if (!shape_preset(a->preset, s)) cli_usage_error("memory", "unknown preset '%s'", a->preset);
        return true;
    }
    if (!a->model_dir) return false;
    GPT2Config c;
    Error err = {0};
    if (!model_read_config(&c, a->model_dir, &err)) die_error(&err);
    *s = shape_from_config(&c);  // named by the folder's whole path where printed
    return true;
}

int cmd_memory(int argc, char **argv) {
    MemoryArgs a = {.format = "text", .targets = "all-linear", .batch = 1, .seq = 512, .lora_r = 8,
                    .blocksize = QUANT_DEFAULT_BLOCK};
    int rc = cli_parse(&MEMORY, &a, argc, argv);
    if (rc != CLI_RUN) return rc;
    ModelShape s;
    const bool have_model = memory_shape(&a, &s);
    if (!have_model && !a.params) cli_usage_error("memory", "give --model DIR, --preset NAME or --params N");
    const bool json = strcmp(a.format, "json") == 0;
    // JSON is one object: the formats of --params only when no model was asked for
    if (a.params && (!json || !have_model)) print_formats(a.params, (size_t)a.blocksize, json);
    if (!have_model) return 0;
    MemJob j = {.B = (size_t)a.batch, .T = (size_t)a.seq, .lora_r = (int)a.lora_r,
                .gradient_checkpointing = a.gradient_checkpointing, .quant_blocksize = (size_t)a.blocksize};
    parse_targets(a.targets, &s, j.targets);
    MemRow rows[MEM_N_METHODS];
    memory_predict(&s, &j, rows);
    const char *label = a.model_dir && !a.preset ? a.model_dir : s.name;
    if (json) print_rows_json(label, &s, &j, rows);
    else print_rows_text(label, &s, &j, rows);
    return 0;
}
