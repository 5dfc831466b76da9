// cmd/memory.c: `qlora memory`, the prediction of memory.h printed as a table or JSON.
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "memory.h"

static const char *MEMORY_HELP =
    "usage: qlora memory (--model DIR | --preset NAME) [--batch B] [--seq T] [--lora-r R]\n"
    "                    [--targets LIST] [--gradient-checkpointing] [--blocksize N]\n"
    "                    [--params N] [--format text|json]\n\n"
    "Predicts the memory of fine-tuning the model with each method: full fp32 AdamW, full\n"
    "16-bit mixed precision, LoRA on an fp32 or 16-bit base, QLoRA with an int8, fp4, nf4\n"
    "and nf4 + double-quant base. Presets: gpt2, gpt2-medium, gpt2-large, gpt2-xl, llama-7b,\n"
    "llama-13b, llama-33b, llama-65b. Defaults: batch 1, seq 512, r 8, all linears.\n"
    "--params N also prints what N parameters take in each number format.\n";

static void print_gib(double bytes) { printf(" %9.2f", bytes / 1073741824.0); }

// The prediction as one JSON object (qlora memory --format json).
static void print_rows_json(const ModelShape *sp, const MemJob *jp, const MemRow rows[MEM_N_METHODS]) {
    const ModelShape s = *sp;
    const MemJob j = *jp;
    const double n_all = shape_params(&s), n_lora = shape_lora_params(&s, j.lora_r, j.targets);
    printf("{\"model\": \"%s\", \"params\": %.0f, \"linear_params\": %.0f, \"lora_params\": %.0f, "
           "\"batch\": %zu, \"seq\": %zu, \"lora_r\": %d, \"gradient_checkpointing\": %s, "
           "\"nf4_bits\": %.4f, \"nf4_dq_bits\": %.4f, \"methods\": [",
           s.name, n_all, shape_linear_params(&s), n_lora, j.B, j.T, j.lora_r,
           j.gradient_checkpointing ? "true" : "false", nf4_bits(j.quant_blocksize, false),
           nf4_bits(j.quant_blocksize, true));
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

// The prediction as a text table with the per-parameter accounting.
static void print_rows_text(const ModelShape *sp, const MemJob *jp, const MemRow rows[MEM_N_METHODS]) {
    const ModelShape s = *sp;
    const MemJob j = *jp;
    const double n_all = shape_params(&s), n_lora = shape_lora_params(&s, j.lora_r, j.targets);
    printf("%s: %.4g parameters (%.4g in block linears), LoRA r=%d: %.4g trainable (%.3f%%)\n",
           s.name, n_all, shape_linear_params(&s), j.lora_r, n_lora, 100 * n_lora / n_all);
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

int cmd_memory(int argc, char **argv) {
    if (cli_help(argc, argv, MEMORY_HELP)) return 0;
    const char *model_dir = NULL, *preset = NULL, *format = "text";
    MemJob j = {.B = 1, .T = 512, .lora_r = 8, .quant_blocksize = QUANT_DEFAULT_BLOCK};
    bool targets_set = false;
    double raw_params = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--model") == 0) model_dir = cli_value(argc, argv, &i);
        else if (strcmp(a, "--preset") == 0) preset = cli_value(argc, argv, &i);
        else if (strcmp(a, "--batch") == 0) j.B = (size_t)cli_long(a, cli_value(argc, argv, &i), 1, 1 << 20);
        else if (strcmp(a, "--seq") == 0) j.T = (size_t)cli_long(a, cli_value(argc, argv, &i), 1, 1 << 22);
        else if (strcmp(a, "--lora-r") == 0) j.lora_r = (int)cli_long(a, cli_value(argc, argv, &i), 1, 65536);
        else if (strcmp(a, "--blocksize") == 0) j.quant_blocksize = (size_t)cli_long(a, cli_value(argc, argv, &i), QUANT_MIN_BLOCK, QUANT_MAX_BLOCK);
        else if (strcmp(a, "--gradient-checkpointing") == 0) j.gradient_checkpointing = true;
        else if (strcmp(a, "--format") == 0) {
            format = cli_value(argc, argv, &i);
            if (strcmp(format, "text") != 0 && strcmp(format, "json") != 0)
                cli_usage_error("memory", "--format must be text or json, got '%s'", format);
        } else if (strcmp(a, "--params") == 0) {
            const char *v = cli_value(argc, argv, &i);
            if (!parse_double(v, &raw_params) || raw_params <= 0)
                cli_usage_error("memory", "--params must be a positive number, got '%s'", v);
        } else if (strcmp(a, "--targets") == 0) {
            char list[512];
            snprintf(list, sizeof list, "%s", cli_value(argc, argv, &i));
            Error err = {0};
            for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ","))
                if (!lora_parse_target(tok, j.targets, &err)) die(EXIT_BAD_INPUT, "--targets: %s", err.msg);
            targets_set = true;
        } else cli_usage_error("memory", "unknown argument '%s'", a);
    }
    if (!targets_set) lora_parse_target("all-linear", j.targets, &(Error){0});
    ModelShape s;
    if (preset) {
        if (!shape_preset(preset, &s)) cli_usage_error("memory", "unknown preset '%s'", preset);
    } else if (model_dir) {
        GPT2Config c;
        Error err = {0};
        if (!model_read_config(&c, model_dir, &err)) die_error(&err);
        s = shape_from_config(&c);
        snprintf(s.name, sizeof s.name, "%.31s", model_dir);
    } else if (!raw_params) {
        cli_usage_error("memory", "give --model DIR, --preset NAME or --params N");
    }
    const bool json = strcmp(format, "json") == 0;
    static const struct { const char *name; double bits; } FORMATS[] = {
        {"fp32", 32}, {"fp16", 16}, {"bf16", 16}, {"int8", 8}, {"int4", 4}};
    if (raw_params && !json) {
        printf("%.4g parameters in each number format (GiB = 2^30 bytes):\n", raw_params);
        for (size_t k = 0; k < sizeof FORMATS / sizeof FORMATS[0]; k++)
            printf("  %-5s %6.2f GiB\n", FORMATS[k].name, raw_params * FORMATS[k].bits / 8 / 1073741824.0);
        printf("  nf4   %6.2f GiB with fp32 block scales (%.3f bits), %.2f GiB with double quant (%.3f bits)\n",
               raw_params * nf4_bits(j.quant_blocksize, false) / 8 / 1073741824.0, nf4_bits(j.quant_blocksize, false),
               raw_params * nf4_bits(j.quant_blocksize, true) / 8 / 1073741824.0, nf4_bits(j.quant_blocksize, true));
    }
    if (!preset && !model_dir) {
        if (json) {
            printf("{\"params\": %.0f, \"formats\": {", raw_params);
            for (size_t k = 0; k < sizeof FORMATS / sizeof FORMATS[0]; k++)
                printf("%s\"%s\": %.0f", k ? ", " : "", FORMATS[k].name, raw_params * FORMATS[k].bits / 8);
            printf(", \"nf4\": %.0f, \"nf4_dq\": %.0f}}\n", raw_params * nf4_bits(j.quant_blocksize, false) / 8,
                   raw_params * nf4_bits(j.quant_blocksize, true) / 8);
        }
        return 0;
    }
    MemRow rows[MEM_N_METHODS];
    memory_predict(&s, &j, rows);
    if (json) print_rows_json(&s, &j, rows);
    else print_rows_text(&s, &j, rows);
    return 0;
}
