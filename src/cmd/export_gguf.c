// export_gguf.c: `qlora export-gguf`: a model folder (merged with an adapter, or not) or an
// adapter alone as a GGUF file for llama.cpp (gguf_export.h; docs/gguf.md).
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "gguf_export.h"

typedef struct {
    const char *model, *adapter, *out, *type;
    bool adapter_only;
} ExportArgs;

static const char *const EXPORT_TYPES[] = {"f32", "f16", "q8_0", NULL};

static const CliOption EXPORT_OPTIONS[] = {
    {"--model", CLI_STR(ExportArgs, model), "DIR", "the model folder (with --adapter-only: whose config.json the adapter fits)",
     .flags = CLI_REQUIRED},
    {"--adapter", CLI_STR(ExportArgs, adapter), "DIR", "a PEFT adapter folder: merged into the model, or written alone"},
    {"--out", CLI_STR(ExportArgs, out), "FILE.gguf", "the GGUF file to write (its name ends in .gguf)", .flags = CLI_REQUIRED},
    {"--type", CLI_CHOICE(ExportArgs, type), NULL, "the type of the weight matrices", .choices = EXPORT_TYPES},
    {"--adapter-only", CLI_FLAG(ExportArgs, adapter_only), NULL, "write the adapter as a GGUF LoRA file for llama.cpp's --lora"},
    CLI_END};

static const CliCommand EXPORT = {
    .name = "export-gguf",
    .about =
    "Writes a GGUF file that llama.cpp (and what is built on it: Ollama, LM Studio,\n"
    "node-llama-cpp) loads: the model with its tokenizer (tokenizer.json, or vocab.json +\n"
    "merges.txt) and chat template, its linear weights merged with --adapter when given\n"
    "(W + (alpha/r) B A, from the original fp32 weights, as `qlora merge`). --type sets the\n"
    "weight matrices' type (f32, f16 or q8_0); norms and biases stay f32, as llama.cpp's\n"
    "converter keeps them. With --adapter-only, the adapter alone as a GGUF LoRA file (f32 or\n"
    "f16) to apply at run time (llama-completion -m BASE.gguf --lora FILE.gguf).\n"
    "Architectures: gpt2, llama (model_type llama and mistral), qwen2. A tokenizer llama.cpp\n"
    "would split differently is refused, with the reason (docs/gguf.md). The file appears\n"
    "whole or not at all (written to a temporary name, then renamed).\n",
    .options = EXPORT_OPTIONS};

// Parse the type name (one of EXPORT_TYPES).
static GgmlType export_type(const char *name) {
    return strcmp(name, "f16") == 0 ? GGML_TYPE_F16 : strcmp(name, "q8_0") == 0 ? GGML_TYPE_Q8_0 : GGML_TYPE_F32;
}

int cmd_export_gguf(int argc, char **argv) {
    ExportArgs a = {.type = "f32"};
    const int rc = cli_parse(&EXPORT, &a, argc, argv);
    if (rc != CLI_RUN) return rc;
    if (a.adapter_only && !a.adapter) cli_usage_error("export-gguf", "--adapter-only needs --adapter DIR");
    // no input qlora reads ends so: a typo cannot replace a model's own files
    const size_t n = strlen(a.out);
    if (n < 6 || strcmp(a.out + n - 5, ".gguf") != 0)
        cli_usage_error("export-gguf", "--out must name a .gguf file, got '%s'", a.out);
    const GgmlType type = export_type(a.type);
    if (a.adapter_only && type == GGML_TYPE_Q8_0)
        cli_usage_error("export-gguf", "--adapter-only writes f32 or f16, got --type q8_0");
    Error err = {0};
    GgufExportInfo info;
    const bool ok = a.adapter_only ? gguf_export_adapter(a.model, a.adapter, type, a.out, &info, &err)
                                   : gguf_export_model(a.model, a.adapter, type, a.out, &info, &err);
    if (!ok) die_error(&err);
    char size[32];
    fmt_bytes((double)info.data_bytes, size, sizeof size);
    if (a.adapter_only) {
        printf("wrote %s: LoRA adapter for %s, %zu adapted linears (%zu tensors, %s), adapter.lora.alpha %g\n", a.out,
               info.arch, info.n_lora_pairs, info.n_tensors, a.type, (double)info.lora_alpha);
    } else {
        printf("wrote %s: %s, %zu tensors, %s of weights (%s", a.out, info.arch, info.n_tensors, size, a.type);
        if (info.n_f32_kept) printf("; %zu norms, biases and position embeddings kept in f32", info.n_f32_kept);
        if (info.n_f16_fallback) printf("; %zu in f16, their rows not whole q8_0 blocks", info.n_f16_fallback);
        printf("), tokenizer %s/%s with %d tokens", info.vocab.model, info.vocab.pre, info.vocab.n_tokens);
        if (info.vocab.n_merges) printf(" + %d merges", info.vocab.n_merges);
        if (info.vocab.chat_template) printf(" and a chat template");
        if (info.context_is_window)
            printf(", context length %d: the sliding window (llama.cpp's llama architecture has none)",
                   info.context_length);
        if (a.adapter) printf(", %s merged into %zu linears", a.adapter, info.n_lora_pairs);
        printf("\n");
    }
    return 0;
}
