// cmd/init.c: `qlora init`, a randomly initialised GPT-2 model folder (Hugging Face layout).
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd/model_args.h"
#include "json.h"

typedef struct {
    const char *preset, *out, *tokenizer;
    long seed, n_layer, n_embd, n_head, n_positions, vocab_size;  // 0: the preset's
    bool force;
} InitArgs;

#define SHAPE_OPTION(name, f, help) {name, CLI_INT(InitArgs, f), "N", help, .lo = 1, .hi = 1 << 24}
static const CliOption INIT_OPTIONS[] = {
    {"--preset", CLI_STR(InitArgs, preset), "NAME", "gpt2, gpt2-medium, gpt2-large, gpt2-xl or tiny",
     .flags = CLI_REQUIRED},
    {"--out", CLI_STR(InitArgs, out), "DIR", "the folder to write", .flags = CLI_REQUIRED},
    {"--seed", CLI_INT(InitArgs, seed), "S", "seed of the random weights", .lo = 0, .hi = (double)(1L << 62)},
    {"--tokenizer", CLI_STR(InitArgs, tokenizer), "DIR", "copy vocab.json and merges.txt from DIR"},
    SHAPE_OPTION("--n-layer", n_layer, "layers instead of the preset's"),
    SHAPE_OPTION("--n-embd", n_embd, "width instead of the preset's (the MLP is 4 times as wide)"),
    SHAPE_OPTION("--n-head", n_head, "attention heads instead of the preset's"),
    SHAPE_OPTION("--n-positions", n_positions, "context length instead of the preset's"),
    SHAPE_OPTION("--vocab-size", vocab_size, "vocabulary size instead of the preset's"),
    {"--force", CLI_FLAG(InitArgs, force), NULL, "overwrite a model already in DIR"},
    CLI_END};
#undef SHAPE_OPTION

static const CliCommand INIT = {
    .name = "init",
    .about =
    "Writes a randomly initialised GPT-2 in the Hugging Face layout (config.json,\n"
    "model.safetensors, vocab.json, merges.txt): weights N(0, 0.02), residual projections\n"
    "N(0, 0.02/sqrt(2*n_layer)), biases 0, layer norms 1. The tokenizer files are copied from\n"
    "--tokenizer DIR, or else a byte-level vocabulary (256 bytes + <|endoftext|>, no merges)\n"
    "is written. The --n-* and --vocab-size options override the preset's shape.\n",
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
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    bool ok = write_file_atomic(path, text, strlen(text), err);
    cJSON_free(text);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    return ok && write_file_atomic(path, "#version: 0.2\n", 14, err);
}

// The preset's config with the shape options applied. Exits on a bad preset or shape.
static GPT2Config init_config(const InitArgs *a) {
    GPT2Config cfg;
    if (!model_preset(a->preset, &cfg))
        cli_usage_error("init", "unknown preset '%s' (gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny)", a->preset);
    if (a->n_layer) cfg.n_layer = (int)a->n_layer;
    if (a->n_embd) cfg.n_embd = (int)a->n_embd, cfg.n_inner = 4 * (int)a->n_embd;
    if (a->n_head) cfg.n_head = (int)a->n_head;
    if (a->n_positions) cfg.n_positions = (int)a->n_positions;
    if (a->vocab_size) cfg.vocab_size = (int)a->vocab_size;
    if (cfg.n_embd % cfg.n_head)
        cli_usage_error("init", "n_embd %d is not a multiple of n_head %d", cfg.n_embd, cfg.n_head);
    return cfg;
}

// Create a->out (refusing to overwrite a model there without --force) and write the
// tokenizer files into it: copied from --tokenizer, or the byte-level vocabulary. Checks
// that they fit vocab_size. Exits on failure.
static void init_folder(const InitArgs *a, int vocab_size) {
    if (mkdir(a->out, 0755) != 0 && errno != EEXIST)
        die(EXIT_RUNTIME, "%s: cannot create folder: %s", a->out, strerror(errno));
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", a->out);
    struct stat st;
    if (!a->force && stat(path, &st) == 0)
        die(EXIT_BAD_INPUT, "%s already exists; refusing to overwrite a model (use --force)", path);
    Error err = {0};
    bool ok = true;
    for (int k = 0; a->tokenizer && ok && k < 2; k++) {
        static const char *const FILES[2] = {"vocab.json", "merges.txt"};
        char from[4096];
        snprintf(from, sizeof from, "%s/%s", a->tokenizer, FILES[k]);
        snprintf(path, sizeof path, "%s/%s", a->out, FILES[k]);
        ok = copy_file_atomic(from, path, &err);
    }
    if (!a->tokenizer) ok = write_byte_vocab(a->out, &err);
    if (!ok) die_error(&err);
    Tokenizer *t = cmd_load_tokenizer(a->out, 0);
    const int n = tok_vocab_size(t);
    tok_free(t);
    if (n > vocab_size)
        die(EXIT_BAD_INPUT, "the tokenizer has %d tokens but the model's vocab_size is %d", n, vocab_size);
}

int cmd_init(int argc, char **argv) {
    InitArgs a = {.seed = 42};
    int rc = cli_parse(&INIT, &a, argc, argv);
    if (rc != CLI_RUN) return rc;
    GPT2Config cfg = init_config(&a);
    init_folder(&a, cfg.vocab_size);
    double t0 = time_now();
    Error err = {0};
    if (!model_write_random(&cfg, a.out, (uint64_t)a.seed, &err)) die_error(&err);
    double params = (double)cfg.vocab_size * cfg.n_embd + (double)cfg.n_positions * cfg.n_embd +
                    cfg.n_layer * (12.0 * cfg.n_embd * cfg.n_embd + 13.0 * cfg.n_embd) + 2.0 * cfg.n_embd;
    printf("wrote %s: %s-shaped GPT-2, %d layers, n_embd %d, %d heads, vocab %d, %.0f parameters "
           "(%.1f s)\n", a.out, a.preset, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size, params,
           time_now() - t0);
    return 0;
}
