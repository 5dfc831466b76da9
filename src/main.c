// main.c: argv to subcommand. With the commands (src/cmd/), the only code that turns an
// Error into a message and an exit status: 0 ok, 1 run-time failure, 2 bad input or usage.
#include <stdio.h>
#include <string.h>

#include "cmd/cli.h"
#include "gemm.h"
#include "cmd/train.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

static const Command COMMANDS[] = {
    {"train", cmd_train, "fine-tune a model as a YAML job file says (QLoRA, LoRA or full)"},
    {"merge", cmd_merge, "merge a LoRA adapter into the base weights (HF model folder)"},
    {"export-gguf", cmd_export_gguf, "write the model (+ adapter) or the adapter as GGUF for llama.cpp"},
    {"eval", cmd_eval, "mean next-token loss and perplexity of a text"},
    {"generate", cmd_generate, "stream a continuation of a prompt (KV cache, sampling)"},
    {"memory", cmd_memory, "predict fine-tuning memory: full vs LoRA vs QLoRA, any GPT-2 or LLaMA size"},
    {"bench", cmd_bench, "time training steps of any size and method (a benchmark)"},
    {"explain", cmd_explain, "walk through quantization for fine-tuning, with figures (--out DIR)"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"init", cmd_init, "write a randomly initialised GPT-2 model folder"},
    {"quantize", cmd_quantize, "quantize every floating tensor of a safetensors file (NF4/FP4)"},
    {"dequantize", cmd_dequantize, "turn a quantized safetensors file back into F32 tensors"},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void print_usage(FILE *fp) {
    fprintf(fp, "usage: qlora COMMAND [ARGS...]\n\nQLoRA fine-tuning of GPT-2 models on the CPU.\n\n"
                "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(fp, "  %-12s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(fp, "\n'qlora COMMAND --help' describes one command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_usage(stderr);
        return EXIT_BAD_INPUT;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        print_usage(stdout);
        return 0;
    }
    Error err = {0};
    if (!gemm_engine_from_env(&err)) die_error(&err);  // refused before any work starts
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(argv[1], COMMANDS[i].name) == 0) return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "qlora: error: unknown command '%s' (see 'qlora --help')\n", argv[1]);
    return EXIT_BAD_INPUT;
}
