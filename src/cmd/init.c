// cmd/init.c: `qlora init`, a randomly initialised model folder (Hugging Face layout) of a GPT-2
// or LLaMA-family preset.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd/model_args.h"
#include "json.h"
#include "path.h"

#define PRESET_NAMES "gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny, smollm2-135m, smollm2-360m, " \
                     "qwen2.5-0.5b, tinyllama-1.1b or llama-tiny"

typedef struct {
    const char *preset, *out, *tokenizer;
    long seed, n_layer, n_embd, n_head, n_positions, vocab_size;  // 0: the preset's
    bool force;
} InitArgs;

#define SHAPE_OPTION(name, f, help) {name, CLI_INT(InitArgs, f), "N", help, .lo = 1, .hi = 1 << 24}
static const CliOption INIT_OPTIONS[] = {
    {"--preset", CLI_STR(InitArgs, preset), "NAME", PRESET_NAMES, .flags = CLI_REQUIRED},
    {"--out", CLI_STR(InitArgs, out), "DIR", "the folder to write", .flags = CLI_REQUIRED},
    {"--seed", CLI_INT(InitArgs, seed), "S", "seed of the random weights", .lo = 0, .hi = (double)(1L << 62)},
    {"--tokenizer", CLI_STR(InitArgs, tokenizer), "DIR",
     "copy the tokenizer's files from DIR (vocab.json + merges.txt, or tokenizer.json)"},
    SHAPE_OPTION("--n-layer", n_layer, "layers instead of the preset's"),
    SHAPE_OPTION("--n-embd", n_embd, "width instead of the preset's (the MLP keeps the preset's ratio)"),
    SHAPE_OPTION("--n-head", n_head, "attention heads instead of the preset's"),
    SHAPE_OPTION("--n-positions", n_positions, "context length instead of the preset's"),
    SHAPE_OPTION("--vocab-size", vocab_size, "vocabulary size instead of the preset's"),
    {"--force", CLI_FLAG(InitArgs, force), NULL, "overwrite a model already in DIR"},
    CLI_END};
#undef SHAPE_OPTION

static const CliCommand INIT = {
    .name = "init",
    .about =
    "Writes a randomly initialised model in the Hugging Face layout (config.json,\n"
    "model.safetensors and the tokenizer's files): a GPT-2 (gpt2 ... tiny) or a LLaMA-family\n"
    "shape (smollm2-135m, smollm2-360m, qwen2.5-0.5b, tinyllama-1.1b, llama-tiny). Weights\n"
    "N(0, 0.02), GPT-2's residual projections N(0, 0.02/sqrt(2*n_layer)), biases 0, norms 1.\n"
    "The tokenizer files are copied from --tokenizer DIR, or else a byte-level vocabulary (256\n"
    "bytes + <|endoftext|>, no merges) is written. The --n-* and --vocab-size options override\n"
    "the preset's shape.\n",
    .options = INIT_OPTIONS};

// A byte-level vocabulary: the 256 byte symbols (ids = byte values) and <|endoftext|> = 256.
static bool write_byte_vocab(const char *dir, Error *err) {
    cJSON *js = cJSON_CreateObject();
    for (int b = 0; b < 256; b++) {
        char sym[3];
        tok_byte_symbol(b, sym);
        cJSON_AddNumberToObject(js, sym, b);
    }
    cJSON_AddNumberToObject(js, "<|endoftext|>", 256);
    char *text = cJSON_PrintUnformatted(js);
    cJSON_Delete(js);
    char *path = path_join(dir, "vocab.json");
    bool ok = write_file_atomic(path, text, strlen(text), err);
    cJSON_free(text);
    free(path);
    path = path_join(dir, "merges.txt");
    ok = ok && write_file_atomic(path, "#version: 0.2\n", 14, err);
    free(path);
    return ok;
}

// The preset's config with the shape options applied. Exits on a bad preset or shape.
static GPT2Config init_config(const InitArgs *a) {
    GPT2Config cfg;
    if (!model_preset(a->preset, &cfg))
        cli_usage_error("init", "unknown preset '%s' (%s)", a->preset, PRESET_NAMES);
    if (a->n_layer) cfg.n_layer = (int)a->n_layer;
    if (a->n_embd) {  // the MLP keeps its ratio, rounded up to a multiple of 64
        const double ratio = (double)cfg.n_inner / cfg.n_embd;
        cfg.n_embd = (int)a->n_embd;
        cfg.n_inner = ((int)(ratio * cfg.n_embd + 0.5) + 63) / 64 * 64;
    }
    if (a->n_head) cfg.n_head = (int)a->n_head;
    if (cfg.arch == ARCH_GPT2) cfg.n_kv_head = cfg.n_head;
    if (a->n_positions) cfg.n_positions = (int)a->n_positions;
    if (a->vocab_size) cfg.vocab_size = (int)a->vocab_size;
    if (cfg.n_embd % cfg.n_head)
        cli_usage_error("init", "n_embd %d is not a multiple of n_head %d", cfg.n_embd, cfg.n_head);
    if (cfg.n_head % cfg.n_kv_head)
        cli_usage_error("init", "n_head %d is not a multiple of the preset's %d key/value heads", cfg.n_head,
                        cfg.n_kv_head);
    cfg.head_dim = cfg.n_embd / cfg.n_head;
    if (cfg.arch != ARCH_GPT2 && cfg.head_dim % 2)
        cli_usage_error("init", "head_dim n_embd / n_head = %d must be even (rotary pairs)", cfg.head_dim);
    return cfg;
}

// Create a->out (refusing to overwrite a model there without --force) and write the
// tokenizer files into it: copied from --tokenizer, or the byte-level vocabulary. Checks
// that they fit cfg's vocab_size and takes cfg's bos/eos ids from the tokenizer (-1 where it
// has none). Exits on failure.
static void init_folder(const InitArgs *a, GPT2Config *cfg) {
    if (mkdir(a->out, 0755) != 0 && errno != EEXIST)
        die(EXIT_RUNTIME, "%s: cannot create folder: %s", a->out, strerror(errno));
    char *path = path_join(a->out, "config.json");
    struct stat st;
    if (!a->force && stat(path, &st) == 0)
        die(EXIT_BAD_INPUT, "%s already exists; refusing to overwrite a model (use --force)", path);
    free(path);
    Error err = {0};
    bool ok = true;
    static const char *const FILES[] = {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                                        "special_tokens_map.json"};
    int copied = 0;
    for (size_t k = 0; a->tokenizer && ok && k < sizeof FILES / sizeof FILES[0]; k++) {
        char *from = path_join(a->tokenizer, FILES[k]), *to = path_join(a->out, FILES[k]);
        if (stat(from, &st) == 0) {
            ok = copy_file_atomic(from, to, &err);
            copied++;
        }
        free(from);
        free(to);
    }
    if (a->tokenizer && ok && copied == 0)
        die(EXIT_BAD_INPUT, "%s: no tokenizer files (vocab.json + merges.txt, or tokenizer.json)", a->tokenizer);
    if (!a->tokenizer) ok = write_byte_vocab(a->out, &err);
    if (!ok) die_error(&err);
    Tokenizer *t = cmd_load_tokenizer(a->out, NULL);
    const int n = tok_vocab_size(t);
    cfg->bos_id = tok_bos(t);
    cfg->eos_id = tok_eos(t);
    tok_free(t);
    if (n > cfg->vocab_size)
        die(EXIT_BAD_INPUT, "the tokenizer has %d tokens but the model's vocab_size is %d", n, cfg->vocab_size);
}

int cmd_init(int argc, char **argv) {
    InitArgs a = {.seed = 42};
    int rc = cli_parse(&INIT, &a, argc, argv);
    if (rc != CLI_RUN) return rc;
    GPT2Config cfg = init_config(&a);
    init_folder(&a, &cfg);
    double t0 = time_now();
    Error err = {0};
    if (!model_write_random(&cfg, a.out, (uint64_t)a.seed, &err)) die_error(&err);
    printf("wrote %s: %s-shaped %s, %d layers, n_embd %d, %d heads, vocab %d, %.0f parameters "
           "(%.1f s)\n", a.out, a.preset, cfg.arch == ARCH_GPT2 ? "GPT-2" : "LLaMA-family model", cfg.n_layer,
           cfg.n_embd, cfg.n_head, cfg.vocab_size, model_param_count(&cfg), time_now() - t0);
    return 0;
}
