// cmd/model.c: the commands that use a GPT-2 model folder: `init`, `tokenize`, `eval`,
// `generate`.
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bgemm.h"
#include "cmd/cli.h"
#include "data.h"
#include "ds.h"
#include "gemm.h"
#include "json.h"
#include "model.h"
#include "quant.h"
#include "sample.h"
#include "tokenizer.h"

// ---- shared option handling ------------------------------------------------------------------

typedef struct {
    const char *model_dir, *adapter_dir;
    QuantConfig quant;
    int threads;  // 0 = leave the default (OMP_NUM_THREADS or all cores)
    bool bf16;    // --bf16: the frozen weights' products in bf16 (bgemm.h)
} ModelOpts;

static void model_opts_default(ModelOpts *o) {
    memset(o, 0, sizeof *o);
    o->quant = (QuantConfig){QUANT_NF4, QUANT_DEFAULT_BLOCK, true};
}

// Consume argv[*i] if it is one of the shared options; true if it was.
static bool model_opt(const char *cmd, ModelOpts *o, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (strcmp(a, "--model") == 0) {
        o->model_dir = cli_value(argc, argv, i);
    } else if (strcmp(a, "--adapter") == 0) {
        o->adapter_dir = cli_value(argc, argv, i);
    } else if (strcmp(a, "--quant") == 0) {
        const char *v = cli_value(argc, argv, i);
        if (!quant_parse(v, &o->quant.type) || o->quant.type == QUANT_INT8_ASYM ||
            o->quant.type == QUANT_INT4)
            cli_usage_error(cmd, "--quant must be none, nf4, fp4 or int8, got '%s'", v);
    } else if (strcmp(a, "--blocksize") == 0) {
        o->quant.blocksize = (size_t)cli_long(a, cli_value(argc, argv, i), 1, 1 << 20);
        if (!quant_blocksize_ok(o->quant.blocksize))
            cli_usage_error(cmd, "--blocksize must be a power of two in [%d, %d]", QUANT_MIN_BLOCK,
                            QUANT_MAX_BLOCK);
    } else if (strcmp(a, "--no-double-quant") == 0) {
        o->quant.double_quant = false;
    } else if (strcmp(a, "--threads") == 0) {
        o->threads = (int)cli_long(a, cli_value(argc, argv, i), 1, 1024);
    } else if (strcmp(a, "--bf16") == 0) {
        Error err = {0};
        if (!bgemm_mode("true", &o->bf16, &err)) cli_usage_error(cmd, "--bf16: %s", err.msg);
    } else {
        return false;
    }
    return true;
}

static Tokenizer *load_tokenizer(const char *dir, int model_vocab) {
    char vocab[4096], merges[4096];
    snprintf(vocab, sizeof vocab, "%s/vocab.json", dir);
    snprintf(merges, sizeof merges, "%s/merges.txt", dir);
    Tokenizer *t;
    Error err = {0};
    if (!tok_load(&t, vocab, merges, &err)) die_error(&err);
    if (model_vocab > 0 && tok_vocab_size(t) > model_vocab) {
        int n = tok_vocab_size(t);
        tok_free(t);
        die(EXIT_BAD_INPUT, "%s: %d tokens, but %s/config.json has vocab_size %d (tokenizer "
                            "and model do not belong together)", vocab, n, dir, model_vocab);
    }
    return t;
}

static void load_model(const ModelOpts *o, const char *cmd, Model *m, LoraSet *lora,
                       bool *has_lora) {
    if (!o->model_dir) cli_usage_error(cmd, "--model DIR is required");
    if (o->threads) threads_set(o->threads);
    Error err = {0};
    double t0 = time_now();
    if (!model_load(m, o->model_dir, &o->quant, &err)) die_error(&err);
    model_set_bf16(m, o->bf16);
    *has_lora = false;
    if (o->adapter_dir) {
        LoraShapes shapes = model_lora_shapes(&m->cfg);
        if (!lora_load_peft(lora, o->adapter_dir, m->cfg.n_layer, &shapes, &err)) {
            model_free(m);
            die_error(&err);
        }
        *has_lora = true;
    }
    char blas[256], b1[32], b2[32], b3[32], b4[32];
    ModelBytes mb = model_bytes(m);
    fprintf(stderr,
            "model: %s (%d layers, %d heads, n_embd %d, vocab %d), loaded in %.1f s\n"
            "weights: %s linears (%s%s), %s quantization constants, %s embeddings, %s norms "
            "and biases\n%s%s%s",
            o->model_dir, m->cfg.n_layer, m->cfg.n_head, m->cfg.n_embd, m->cfg.vocab_size,
            time_now() - t0, fmt_bytes((double)mb.linear_weights, b1, sizeof b1),
            quant_name(o->quant.type),
            (o->quant.type == QUANT_NF4 || o->quant.type == QUANT_FP4) && o->quant.double_quant
                ? " + double quant" : "",
            fmt_bytes((double)mb.quant_constants, b2, sizeof b2),
            fmt_bytes((double)mb.embeddings, b3, sizeof b3),
            fmt_bytes((double)mb.norms_and_biases, b4, sizeof b4),
            *has_lora ? "adapter: " : "", *has_lora ? o->adapter_dir : "", *has_lora ? "\n" : "");
    fprintf(stderr, "blas: %s; frozen weights in %s\n", blas_describe(blas, sizeof blas),
            o->bf16 ? bgemm_isa_name(bgemm_isa()) : "fp32");
}

static char *read_text_file(const char *path, size_t *len) {
    char *text;
    Error err = {0};
    if (!file_read_all(path, &text, len, &err)) die_error(&err);
    return text;
}

// ---- init ------------------------------------------------------------------------------------

static const char *INIT_HELP =
    "usage: qlora init --preset gpt2|gpt2-medium|gpt2-large|gpt2-xl|tiny --out DIR [--seed S]\n"
    "                  [--tokenizer DIR] [--n-layer N] [--n-embd N] [--n-head N]\n"
    "                  [--n-positions N] [--vocab-size N] [--force]\n\n"
    "Writes a randomly initialised GPT-2 in the Hugging Face layout (config.json,\n"
    "model.safetensors, vocab.json, merges.txt): weights N(0, 0.02), residual projections\n"
    "N(0, 0.02/sqrt(2*n_layer)), biases 0, layer norms 1. The tokenizer files are copied from\n"
    "--tokenizer DIR, or else a byte-level vocabulary (256 bytes + <|endoftext|>, no merges)\n"
    "is written. The --n-* options override the preset's shape.\n";

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

int cmd_init(int argc, char **argv) {
    if (cli_help(argc, argv, INIT_HELP)) return 0;
    const char *preset = NULL, *out = NULL, *tok_dir = NULL;
    long seed = 42, over[5] = {0, 0, 0, 0, 0};
    static const char *const OVER[5] = {"--n-layer", "--n-embd", "--n-head", "--n-positions",
                                        "--vocab-size"};
    bool force = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int k = -1;
        for (int j = 0; j < 5; j++)
            if (strcmp(a, OVER[j]) == 0) k = j;
        if (k >= 0) over[k] = cli_long(a, cli_value(argc, argv, &i), 1, 1 << 24);
        else if (strcmp(a, "--preset") == 0) preset = cli_value(argc, argv, &i);
        else if (strcmp(a, "--out") == 0) out = cli_value(argc, argv, &i);
        else if (strcmp(a, "--tokenizer") == 0) tok_dir = cli_value(argc, argv, &i);
        else if (strcmp(a, "--seed") == 0) seed = cli_long(a, cli_value(argc, argv, &i), 0, 1L << 62);
        else if (strcmp(a, "--force") == 0) force = true;
        else cli_usage_error("init", "unknown argument '%s'", a);
    }
    if (!preset || !out) cli_usage_error("init", "--preset and --out are required");
    GPT2Config cfg;
    if (!model_preset(preset, &cfg))
        cli_usage_error("init", "unknown preset '%s' (gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny)", preset);
    if (over[0]) cfg.n_layer = (int)over[0];
    if (over[1]) cfg.n_embd = (int)over[1], cfg.n_inner = 4 * (int)over[1];
    if (over[2]) cfg.n_head = (int)over[2];
    if (over[3]) cfg.n_positions = (int)over[3];
    if (over[4]) cfg.vocab_size = (int)over[4];
    if (cfg.n_embd % cfg.n_head)
        cli_usage_error("init", "n_embd %d is not a multiple of n_head %d", cfg.n_embd, cfg.n_head);
    if (mkdir(out, 0755) != 0 && errno != EEXIST)
        die(EXIT_RUNTIME, "%s: cannot create folder: %s", out, strerror(errno));
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", out);
    struct stat st;
    if (!force && stat(path, &st) == 0)
        die(EXIT_BAD_INPUT, "%s already exists; refusing to overwrite a model (use --force)", path);
    Error err = {0};
    bool ok;
    if (tok_dir) {
        char from[4096];
        snprintf(from, sizeof from, "%s/vocab.json", tok_dir);
        snprintf(path, sizeof path, "%s/vocab.json", out);
        ok = copy_file_atomic(from, path, &err);
        snprintf(from, sizeof from, "%s/merges.txt", tok_dir);
        snprintf(path, sizeof path, "%s/merges.txt", out);
        ok = ok && copy_file_atomic(from, path, &err);
    } else {
        ok = write_byte_vocab(out, &err);
    }
    if (!ok) die_error(&err);
    Tokenizer *t = load_tokenizer(out, 0);
    if (tok_vocab_size(t) > cfg.vocab_size) {
        int n = tok_vocab_size(t);
        tok_free(t);
        die(EXIT_BAD_INPUT, "the tokenizer has %d tokens but the model's vocab_size is %d", n,
            cfg.vocab_size);
    }
    tok_free(t);
    double t0 = time_now();
    if (!model_write_random(&cfg, out, (uint64_t)seed, &err)) die_error(&err);
    double params = (double)cfg.vocab_size * cfg.n_embd + (double)cfg.n_positions * cfg.n_embd +
                    cfg.n_layer * (12.0 * cfg.n_embd * cfg.n_embd + 13.0 * cfg.n_embd) + 2.0 * cfg.n_embd;
    printf("wrote %s: %s-shaped GPT-2, %d layers, n_embd %d, %d heads, vocab %d, %.0f parameters "
           "(%.1f s)\n", out, preset, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size, params,
           time_now() - t0);
    return 0;
}

// ---- tokenize --------------------------------------------------------------------------------

static const char *TOKENIZE_HELP =
    "usage: qlora tokenize --model DIR [--file F | TEXT]\n\n"
    "Prints the token ids of TEXT (or of file F) with the model's vocab.json + merges.txt,\n"
    "space-separated, on one line. <|endoftext|> is the special end-of-text token.\n";

int cmd_tokenize(int argc, char **argv) {
    if (cli_help(argc, argv, TOKENIZE_HELP)) return 0;
    const char *dir = NULL, *file = NULL, *text = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0) dir = cli_value(argc, argv, &i);
        else if (strcmp(argv[i], "--file") == 0) file = cli_value(argc, argv, &i);
        else if (argv[i][0] == '-' && argv[i][1] == '-') cli_usage_error("tokenize", "unknown option '%s'", argv[i]);
        else if (!text) text = argv[i];
        else cli_usage_error("tokenize", "unexpected argument '%s' (quote the text)", argv[i]);
    }
    if (!dir) cli_usage_error("tokenize", "--model DIR is required");
    if (!file == !text) cli_usage_error("tokenize", "give either --file F or TEXT");
    Tokenizer *t = load_tokenizer(dir, 0);
    size_t len;
    char *buf = file ? read_text_file(file, &len) : NULL;
    int *ids = NULL;
    tok_encode(t, file ? buf : text, file ? len : strlen(text), &ids);
    for (size_t i = 0; i < arrlenu(ids); i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    arrfree(ids);
    free(buf);
    tok_free(t);
    return 0;
}

// ---- eval ------------------------------------------------------------------------------------

static const char *EVAL_HELP =
    "usage: qlora eval --model DIR [--adapter DIR] [--quant none|nf4|fp4|int8] [--blocksize N]\n"
    "                  [--no-double-quant] [--seq T] [--threads N] [--bf16]\n"
    "                  (--text FILE | --data FILE)\n\n"
    "Mean next-token loss and perplexity. --text FILE: a plain text; one longer than the\n"
    "window (n_positions, or --seq) is scored in windows that advance by half a window, each\n"
    "token scored once with at least half a window of context. --data FILE: a training\n"
    "dataset (.jsonl examples as `qlora train` reads them, scored on their labels; other\n"
    "files as text cut into windows). Last line: loss=<float> ppl=<float> tokens=<n>.\n"
    "--bf16 multiplies the frozen weights in bf16 with fp32 sums, as training with bf16: true\n"
    "does (an error on a CPU without AVX512-BF16 or AMX-BF16).\n";

// Print eval's last line, or stop with exit 1 if the mean loss is not finite (NaN or Inf
// logits somewhere: a loss of nan is an error, not a result).
static void print_loss(double total, size_t count, bool has_lora) {
    const double loss = total / (double)count;
    if (!isfinite(loss))
        die(EXIT_RUNTIME, "eval: the mean loss over %zu tokens is %g: the model%s gives non-finite values", count,
            loss, has_lora ? " with this adapter" : "");
    printf("loss=%.6f ppl=%.4f tokens=%zu\n", loss, exp(loss), count);
}

// eval --data: the examples of a dataset file, batched as training batches them.
static int eval_dataset(const ModelOpts *o, const char *path, long seq) {
    GPT2Config cfg;
    Error err = {0};
    if (!model_read_config(&cfg, o->model_dir, &err)) die_error(&err);
    Tokenizer *tok = load_tokenizer(o->model_dir, cfg.vocab_size);
    const size_t T = seq && seq < cfg.n_positions ? (size_t)seq : (size_t)cfg.n_positions;
    DataOptions dopt = {"", T, false, cfg.vocab_size};
    Dataset d;
    if (!data_load(&d, path, tok, &dopt, &err)) die_error(&err);
    Model m;
    LoraSet lora;
    bool has_lora;
    load_model(o, "eval", &m, &lora, &has_lora);
    const size_t n = arrlenu(d.ex), B = 8;
    size_t *order = xmalloc(n * sizeof(size_t));
    data_epoch_order(n, false, 0, 0, order);
    Acts *a = acts_create(&m, has_lora ? &lora : NULL, B, T, ACTS_INFER);
    int *tokens = xmalloc(B * T * sizeof(int)), *targets = xmalloc(B * T * sizeof(int));
    double total = 0, t0 = time_now();
    size_t count = 0;
    for (size_t i = 0; i < n; i += B) {
        size_t b = n - i < B ? n - i : B, pred = 0;
        size_t Tb = data_batch(&d, order, i, b, tokens, targets, &pred);
        total += model_forward(&m, has_lora ? &lora : NULL, a, tokens, targets, b, Tb, &count, NULL);
    }
    fprintf(stderr, "scored %zu tokens of %zu examples (%zu truncated to %zu tokens) in %.2f s\n", count, n,
            d.n_truncated, T, time_now() - t0);
    print_loss(total, count, has_lora);
    free(tokens);
    free(targets);
    free(order);
    acts_free(a);
    data_free(&d);
    if (has_lora) lora_free(&lora);
    model_free(&m);
    tok_free(tok);
    return 0;
}

int cmd_eval(int argc, char **argv) {
    if (cli_help(argc, argv, EVAL_HELP)) return 0;
    ModelOpts o;
    model_opts_default(&o);
    const char *text_path = NULL, *data_path = NULL;
    long seq = 0;
    for (int i = 1; i < argc; i++) {
        if (model_opt("eval", &o, argc, argv, &i)) continue;
        if (strcmp(argv[i], "--text") == 0) text_path = cli_value(argc, argv, &i);
        else if (strcmp(argv[i], "--data") == 0) data_path = cli_value(argc, argv, &i);
        else if (strcmp(argv[i], "--seq") == 0) seq = cli_long("--seq", cli_value(argc, argv, &i), 2, 1 << 20);
        else cli_usage_error("eval", "unknown argument '%s'", argv[i]);
    }
    if (!text_path == !data_path) cli_usage_error("eval", "give either --text FILE or --data FILE");
    if (!o.model_dir) cli_usage_error("eval", "--model DIR is required");
    if (data_path) return eval_dataset(&o, data_path, seq);
    Model m;
    LoraSet lora;
    bool has_lora;
    Tokenizer *tok = NULL;
    {
        GPT2Config cfg;
        Error err = {0};
        if (!model_read_config(&cfg, o.model_dir, &err)) die_error(&err);
        tok = load_tokenizer(o.model_dir, cfg.vocab_size);  // cheap checks before the big load
    }
    size_t len;
    char *text = read_text_file(text_path, &len);
    int *ids = NULL;
    tok_encode(tok, text, len, &ids);
    free(text);
    const size_t n = arrlenu(ids);
    if (n < 2) die(EXIT_BAD_INPUT, "%s: %zu tokens; at least 2 are needed to score one", text_path, n);
    load_model(&o, "eval", &m, &lora, &has_lora);
    const size_t W = seq && (size_t)seq < (size_t)m.cfg.n_positions ? (size_t)seq : (size_t)m.cfg.n_positions;
    const size_t S = W / 2 ? W / 2 : 1;
    Acts *a = acts_create(&m, has_lora ? &lora : NULL, 1, W, ACTS_INFER);
    int *targets = xmalloc(W * sizeof(int));
    double total = 0, t0 = time_now();
    size_t count = 0, scored_upto = 1;  // token index k is scored when k >= scored_upto
    for (size_t b = 0;; b += S) {
        const size_t end = b + W < n ? b + W : n, T = end - b;
        for (size_t i = 0; i < T; i++) {
            const size_t k = b + i + 1;  // the token position i predicts
            targets[i] = (k < end && k >= scored_upto) ? ids[k] : -1;
        }
        total += model_forward(&m, has_lora ? &lora : NULL, a, ids + b, targets, 1, T, &count, NULL);
        scored_upto = end;
        if (end == n) break;
    }
    const double secs = time_now() - t0;
    fprintf(stderr, "scored %zu tokens in %.2f s (%.0f tokens/s), window %zu, peak RSS %.1f MiB\n",
            count, secs, (double)count / secs, W, (double)peak_rss_bytes() / (1 << 20));
    print_loss(total, count, has_lora);
    free(targets);
    acts_free(a);
    arrfree(ids);
    if (has_lora) lora_free(&lora);
    model_free(&m);
    tok_free(tok);
    return 0;
}

// ---- generate --------------------------------------------------------------------------------

static const char *GENERATE_HELP =
    "usage: qlora generate --model DIR [--adapter DIR] --prompt TEXT [--max-new-tokens N]\n"
    "                      [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
    "                      [--quant none|nf4|fp4|int8] [--threads N] [--bf16]\n\n"
    "Streams a continuation of TEXT, stopping at <|endoftext|> or after N new tokens (default\n"
    "100), with a KV cache (each new token costs one position). Sampling: temperature 1.0,\n"
    "top-k 50, top-p 1.0 by default (Hugging Face's sampling defaults); --temperature 0 is\n"
    "greedy. The same seed gives the same text. --bf16: the prompt's products with the frozen\n"
    "weights in bf16 (each new token's one-row products stay fp32).\n";

int cmd_generate(int argc, char **argv) {
    if (cli_help(argc, argv, GENERATE_HELP)) return 0;
    ModelOpts o;
    model_opts_default(&o);
    const char *prompt = NULL;
    long max_new = 100, top_k = 50, seed = 42;
    double temperature = 1.0, top_p = 1.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (model_opt("generate", &o, argc, argv, &i)) continue;
        if (strcmp(a, "--prompt") == 0) prompt = cli_value(argc, argv, &i);
        else if (strcmp(a, "--max-new-tokens") == 0) max_new = cli_long(a, cli_value(argc, argv, &i), 0, 1 << 20);
        else if (strcmp(a, "--top-k") == 0) top_k = cli_long(a, cli_value(argc, argv, &i), 0, 1 << 24);
        else if (strcmp(a, "--seed") == 0) seed = cli_long(a, cli_value(argc, argv, &i), 0, 1L << 62);
        else if (strcmp(a, "--temperature") == 0 || strcmp(a, "--top-p") == 0) {
            const char *v = cli_value(argc, argv, &i);
            double d;
            bool is_t = a[2] == 't' && a[3] == 'e';
            if (!parse_double(v, &d) || d < 0 || (is_t ? d > 100 : (d <= 0 || d > 1)))
                cli_usage_error("generate", "%s must be %s, got '%s'", a,
                                is_t ? "a number in [0, 100]" : "a number in (0, 1]", v);
            if (is_t) temperature = d;
            else top_p = d;
        } else cli_usage_error("generate", "unknown argument '%s'", a);
    }
    if (!prompt) cli_usage_error("generate", "--prompt TEXT is required");
    if (!o.model_dir) cli_usage_error("generate", "--model DIR is required");
    GPT2Config cfg;
    Error err = {0};
    if (!model_read_config(&cfg, o.model_dir, &err)) die_error(&err);
    Tokenizer *tok = load_tokenizer(o.model_dir, cfg.vocab_size);
    int *ids = NULL;
    tok_encode(tok, prompt, strlen(prompt), &ids);
    if (arrlenu(ids) == 0) {
        if (tok_eot(tok) < 0) die(EXIT_BAD_INPUT, "empty prompt and no <|endoftext|> token to start from");
        arrput(ids, tok_eot(tok));
    }
    if (arrlenu(ids) >= (size_t)cfg.n_positions)
        die(EXIT_BAD_INPUT, "the prompt is %zu tokens; the model's context is %d", arrlenu(ids),
            cfg.n_positions);
    Model m;
    LoraSet lora;
    bool has_lora;
    load_model(&o, "generate", &m, &lora, &has_lora);
    KVCache *kv = kv_create(&m, has_lora ? &lora : NULL);
    float *logits = xmalloc((size_t)m.cfg.vocab_size * sizeof(float));
    const int Vt = tok_vocab_size(tok);  // ids past the tokenizer (padding) are never sampled
    SampleCand *cand = xmalloc((size_t)Vt * sizeof(SampleCand));
    const SampleParams sp = {(float)temperature, (int)top_k, (float)top_p};
    Rng rng;
    rng_seed(&rng, (uint64_t)seed);
    fputs(prompt, stdout);
    fflush(stdout);
    double t0 = time_now();
    model_step(&m, has_lora ? &lora : NULL, kv, ids, (int)arrlenu(ids), logits);
    double t_prompt = time_now() - t0;
    long made = 0;
    char *bytes = NULL;
    t0 = time_now();
    char failure[300] = "";  // set when the logits turn non-finite; reported after freeing
    while (made < max_new) {
        const size_t bad = quant_find_nonfinite(logits, (size_t)Vt);
        if (bad < (size_t)Vt) {
            snprintf(failure, sizeof failure, "generate: after %ld generated tokens the logit of token %zu "
                     "is %s: the model%s gives non-finite values", made, bad,
                     isnan(logits[bad]) ? "NaN" : "Inf", has_lora ? " with this adapter" : "");
            break;
        }
        int next = sample_next(logits, Vt, &sp, &rng, cand);
        if (next == tok_eot(tok)) break;
        arrsetlen(bytes, 0);
        tok_decode_append(tok, next, &bytes);
        fwrite(bytes, 1, arrlenu(bytes), stdout);
        fflush(stdout);
        made++;
        if (kv_len(kv) >= m.cfg.n_positions) break;  // context full
        model_step(&m, has_lora ? &lora : NULL, kv, &next, 1, logits);
    }
    double t_gen = time_now() - t0;
    printf("\n");
    if (!failure[0])
        fprintf(stderr, "prompt %zu tokens in %.2f s; generated %ld tokens in %.2f s (%.1f tokens/s)\n",
                arrlenu(ids), t_prompt, made, t_gen, made ? (double)made / t_gen : 0.0);
    arrfree(bytes);
    free(cand);
    free(logits);
    kv_free(kv);
    arrfree(ids);
    if (has_lora) lora_free(&lora);
    model_free(&m);
    tok_free(tok);
    if (failure[0]) die(EXIT_RUNTIME, "%s", failure);
    return 0;
}
