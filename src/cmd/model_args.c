// cmd/model_args.c: see cmd/model_args.h.
#include "cmd/model_args.h"

#include <stdlib.h>
#include <string.h>

#include "bgemm.h"
#include "gemm.h"

bool cli_parse_blocksize(const char *opt, const char *value, void *field, Error *err) {
    long b;
    if (!parse_long(value, 1, 1L << 20, &b) || !quant_blocksize_ok((size_t)b))
        return error_set(err, "%s must be a power of two in [%d, %d], got '%s'", opt, QUANT_MIN_BLOCK,
                         QUANT_MAX_BLOCK, value);
    *(size_t *)field = (size_t)b;
    return true;
}

// CliCallFn for the flag --bf16: on, or an error on a CPU without bf16 instructions.
static bool parse_bf16(const char *opt, const char *value, void *field, Error *err) {
    (void)value;
    Error e = {0};
    if (bgemm_mode("true", (bool *)field, &e)) return true;
    return error_set(err, "%s: %s", opt, e.msg);
}

static const char *const QUANT_CHOICES[] = {"none", "nf4", "fp4", "int8", NULL};

const CliOption MODEL_OPTIONS[] = {
    {"--model", CLI_STR(ModelArgs, model_dir), "DIR",
     "model folder in the Hugging Face layout (config.json, model.safetensors, tokenizer.json or "
     "vocab.json + merges.txt)",
     .flags = CLI_REQUIRED},
    {"--adapter", CLI_STR(ModelArgs, adapter_dir), "DIR", "a PEFT LoRA adapter folder to apply"},
    {"--quant", CLI_CHOICE(ModelArgs, quant), NULL, "storage of the frozen linear weights",
     .choices = QUANT_CHOICES},
    {"--blocksize", CLI_CALL(ModelArgs, blocksize), "N",
     "values per quantization block, a power of two in [32, 4096] (default 64)", .call = cli_parse_blocksize},
    {"--no-double-quant", CLI_FLAG(ModelArgs, no_double_quant), NULL, "keep the NF4/FP4 block scales in fp32"},
    {"--threads", CLI_INT(ModelArgs, threads), "N", "threads (default: OMP_NUM_THREADS or all cores)", .lo = 1,
     .hi = 1024},
    {"--bf16", CLI_CALL(ModelArgs, bf16), NULL,
     "multiply the frozen weights in bf16 with fp32 sums (an error on a CPU without AVX512-BF16 or AMX-BF16)",
     .call = parse_bf16},
    CLI_END};

ModelArgs model_args_default(void) {
    return (ModelArgs){.quant = "nf4", .blocksize = QUANT_DEFAULT_BLOCK};
}

QuantConfig model_args_quant(const ModelArgs *a) {
    QuantConfig q = {QUANT_NF4, a->blocksize, !a->no_double_quant};
    CHECK(quant_parse(a->quant, &q.type));  // one of QUANT_CHOICES
    return q;
}

Tokenizer *cmd_load_tokenizer(const char *dir, const GPT2Config *cfg) {
    Tokenizer *t;
    Error err = {0};
    if (!tok_load_dir(&t, dir, &err)) die_error(&err);
    if (!cfg) return t;
    const int n = tok_vocab_size(t);
    if (n > cfg->vocab_size) {
        char *path = xstrdup(tok_path(t));
        tok_free(t);
        die(EXIT_BAD_INPUT, "%s: %d tokens, but %s/config.json has vocab_size %d (tokenizer and model do not "
                            "belong together)", path, n, dir, cfg->vocab_size);
    }
    tok_set_missing_specials(t, cfg->bos_id, cfg->eos_id);
    return t;
}

// The two lines on stderr that say what was loaded, from where, in what form.
static void print_loaded(const ModelArgs *a, const Model *m, bool has_lora, double secs) {
    const QuantConfig q = model_args_quant(a);
    char blas[256], b1[32], b2[32], b3[32], b4[32];
    ModelBytes mb = model_bytes(m);
    fprintf(stderr,
            "model: %s (%d layers, %d heads, n_embd %d, vocab %d), loaded in %.1f s\n"
            "weights: %s linears (%s%s), %s quantization constants, %s embeddings, %s norms "
            "and biases\n%s%s%s",
            a->model_dir, m->cfg.n_layer, m->cfg.n_head, m->cfg.n_embd, m->cfg.vocab_size, secs,
            fmt_bytes((double)mb.linear_weights, b1, sizeof b1), quant_name(q.type),
            (q.type == QUANT_NF4 || q.type == QUANT_FP4) && q.double_quant ? " + double quant" : "",
            fmt_bytes((double)mb.quant_constants, b2, sizeof b2), fmt_bytes((double)mb.embeddings, b3, sizeof b3),
            fmt_bytes((double)mb.norms_and_biases, b4, sizeof b4), has_lora ? "adapter: " : "",
            has_lora ? a->adapter_dir : "", has_lora ? "\n" : "");
    fprintf(stderr, "blas: %s; frozen weights in %s\n", blas_describe(blas, sizeof blas),
            a->bf16 ? bgemm_isa_name(bgemm_isa()) : "fp32");
}

void cmd_load_model(const ModelArgs *a, Model *m, LoraSet *lora, bool *has_lora) {
    if (a->threads) threads_set((int)a->threads);
    const QuantConfig q = model_args_quant(a);
    Error err = {0};
    double t0 = time_now();
    if (!model_load(m, a->model_dir, &q, &err)) die_error(&err);
    model_set_bf16(m, a->bf16);
    *has_lora = false;
    if (a->adapter_dir) {
        LoraShapes shapes = model_lora_shapes(&m->cfg);
        if (!lora_load_peft(lora, a->adapter_dir, m->cfg.n_layer, &shapes, &err)) {
            model_free(m);
            die_error(&err);
        }
        *has_lora = true;
    }
    print_loaded(a, m, *has_lora, time_now() - t0);
}

char *cmd_read_text(const char *path, size_t *len) {
    char *text;
    Error err = {0};
    if (!file_read_all(path, &text, len, &err)) die_error(&err);
    return text;
}
