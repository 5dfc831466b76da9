// cmd/eval.c: `qlora eval`, the mean next-token loss and perplexity of a text or dataset.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chat_data.h"
#include "cmd/model_args.h"
#include "data.h"
#include "ds.h"

typedef struct {
    ModelArgs m;
    const char *text, *data;
    long seq;  // 0 = the model's n_positions
    bool pack;
    const char *format;         // --dataset-format (NULL: by extension)
    const char *chat_template;  // --chat-template (chat_template data)
} EvalArgs;

static const char *const FORMATS[] = {"text", "jsonl", "chat_template", "alpaca", NULL};
static const char *const TEMPLATES[] = {"tokenizer_default", "chatml", "llama3", "mistral", "zephyr", "alpaca", NULL};

static const CliOption EVAL_OPTIONS[] = {
    CLI_GROUP(EvalArgs, m, MODEL_OPTIONS),
    {"--text", CLI_STR(EvalArgs, text), "FILE", "a plain text to score"},
    {"--data", CLI_STR(EvalArgs, data), "FILE", "a training dataset to score"},
    {"--seq", CLI_INT(EvalArgs, seq), "T", "tokens per window (default: the model's n_positions)", .lo = 2,
     .hi = 1 << 20},
    {"--sample-packing", CLI_FLAG(EvalArgs, pack), NULL,
     "--data: pack several examples into each row of T tokens, as training with sample_packing does"},
    {"--dataset-format", CLI_CHOICE(EvalArgs, format), NULL, "--data: as the job key (default: .jsonl files jsonl, others text)",
     .choices = FORMATS},
    {"--chat-template", CLI_CHOICE(EvalArgs, chat_template), NULL,
     "--dataset-format chat_template: the template (default tokenizer_default); the loss is on the assistant's turns",
     .choices = TEMPLATES},
    CLI_END};

static const CliCommand EVAL = {
    .name = "eval",
    .about =
    "Mean next-token loss and perplexity; give either --text FILE or --data FILE. --text: a\n"
    "plain text, tokenized with the tokenizer's special tokens (Llama 2's BOS, no EOS); one longer\n"
    "than the window (n_positions, or --seq) is scored in windows that advance by half a window,\n"
    "each token scored once with at least half a window of context.\n"
    "--data: a training dataset (.jsonl examples as `qlora train` reads them, scored on their\n"
    "labels; other files as text cut into windows; --sample-packing packs them into rows of T\n"
    "tokens, each attending only to itself, which gives the same loss in fewer passes). Last line:\n"
    "loss=<float> ppl=<float> tokens=<n>. --bf16 multiplies the frozen weights in bf16 with fp32\n"
    "sums, as training with bf16: true does.\n",
    .options = EVAL_OPTIONS};

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
static int eval_dataset(const EvalArgs *a) {
    GPT2Config cfg;
    Error err = {0};
    if (!model_read_config(&cfg, a->m.model_dir, &err)) die_error(&err);
    Tokenizer *tok = cmd_load_tokenizer(a->m.model_dir, &cfg);
    const size_t T = a->seq && a->seq < cfg.n_positions ? (size_t)a->seq : (size_t)cfg.n_positions;
    DataOptions dopt = {.format = a->format ? a->format : "", .seq_len = T, .vocab_size = cfg.vocab_size};
    ChatSetup cs = {0};
    static const char *const ASSISTANT[] = {"assistant"};
    ChatOptions co = {&cs.renderer, ASSISTANT, 1, false, CHAT_EOS_TURN};
    if (a->format && strcmp(a->format, "chat_template") == 0) {  // what a job's defaults train on
        if (!chat_setup(&cs, a->chat_template ? a->chat_template : "tokenizer_default", a->m.model_dir, tok, &err))
            die_error(&err);
        dopt.chat = &co;
    }
    Dataset d;
    if (!data_load(&d, a->data, tok, &dopt, &err)) die_error(&err);
    Model m;
    LoraSet lora;
    bool has_lora;
    cmd_load_model(&a->m, &m, &lora, &has_lora);
    const size_t n = arrlenu(d.ex), B = 8;
    DataPlan plan;
    data_plan(&plan, &d, a->pack, T, false, 0, 0);
    Acts *acts = acts_create(&m, has_lora ? &lora : NULL, B, T, ACTS_INFER);
    int *tokens = xmalloc(B * T * sizeof(int)), *targets = xmalloc(B * T * sizeof(int)), *pos = xmalloc(B * T * sizeof(int));
    double total = 0, t0 = time_now();
    size_t count = 0;
    for (size_t i = 0; i < plan.n_rows; i += B) {
        size_t b = plan.n_rows - i < B ? plan.n_rows - i : B, pred = 0;
        size_t Tb = data_batch_rows(&d, &plan, i, b, tokens, targets, pos, &pred);
        acts_set_positions(acts, a->pack ? pos : NULL);
        total += model_forward(&m, has_lora ? &lora : NULL, acts, tokens, targets, b, Tb, &count, NULL);
    }
    fprintf(stderr, "scored %zu tokens of %zu examples (%zu truncated to %zu tokens) in %zu rows in %.2f s\n", count,
            n, d.n_truncated, T, plan.n_rows, time_now() - t0);
    print_loss(total, count, has_lora);
    free(tokens);
    free(targets);
    free(pos);
    data_plan_free(&plan);
    acts_free(acts);
    data_free(&d);
    chat_setup_free(&cs);
    if (has_lora) lora_free(&lora);
    model_free(&m);
    tok_free(tok);
    return 0;
}

// Score ids[0..n) in windows of W tokens that advance by half a window, each token scored
// once (the first window scores all its tokens, later ones only those past the previous
// window). Returns the summed loss; *count receives the tokens scored.
static double score_windows(const Model *m, const LoraSet *lora, const int *ids, size_t n, size_t W,
                            size_t *count) {
    const size_t S = W / 2 ? W / 2 : 1;
    Acts *acts = acts_create(m, lora, 1, W, ACTS_INFER);
    int *targets = xmalloc(W * sizeof(int));
    double total = 0;
    size_t scored_upto = 1;  // token index k is scored when k >= scored_upto
    for (size_t b = 0;; b += S) {
        const size_t end = b + W < n ? b + W : n, T = end - b;
        for (size_t i = 0; i < T; i++) {
            const size_t k = b + i + 1;  // the token position i predicts
            targets[i] = (k < end && k >= scored_upto) ? ids[k] : -1;
        }
        total += model_forward(m, lora, acts, ids + b, targets, 1, T, count, NULL);
        scored_upto = end;
        if (end == n) break;
    }
    free(targets);
    acts_free(acts);
    return total;
}

// eval --text: a plain text, in windows.
static int eval_text(const EvalArgs *a) {
    Tokenizer *tok = NULL;
    {
        GPT2Config cfg;
        Error err = {0};
        if (!model_read_config(&cfg, a->m.model_dir, &err)) die_error(&err);
        tok = cmd_load_tokenizer(a->m.model_dir, &cfg);  // cheap checks before the big load
    }
    size_t len;
    char *text = cmd_read_text(a->text, &len);
    int *ids = NULL;
    Error err = {0};
    // with the post-processor's special tokens (Llama 2's BOS), as tokenizer(text) gives them
    const bool ok = tok_encode_text(tok, a->text, text, len, true, &ids, &err);
    free(text);
    if (!ok) die_error(&err);
    const size_t n = arrlenu(ids);
    if (n < 2) die(EXIT_BAD_INPUT, "%s: %zu tokens; at least 2 are needed to score one", a->text, n);
    Model m;
    LoraSet lora;
    bool has_lora;
    cmd_load_model(&a->m, &m, &lora, &has_lora);
    const size_t P = (size_t)m.cfg.n_positions, W = a->seq && (size_t)a->seq < P ? (size_t)a->seq : P;
    size_t count = 0;
    double t0 = time_now();
    double total = score_windows(&m, has_lora ? &lora : NULL, ids, n, W, &count);
    const double secs = time_now() - t0;
    fprintf(stderr, "scored %zu tokens in %.2f s (%.0f tokens/s), window %zu, peak RSS %.1f MiB\n",
            count, secs, (double)count / secs, W, (double)peak_rss_bytes() / (1 << 20));
    print_loss(total, count, has_lora);
    arrfree(ids);
    if (has_lora) lora_free(&lora);
    model_free(&m);
    tok_free(tok);
    return 0;
}

int cmd_eval(int argc, char **argv) {
    EvalArgs a = {.m = model_args_default()};
    int rc = cli_parse(&EVAL, &a, argc, argv);
    if (rc != CLI_RUN) return rc;
    if (!a.text == !a.data) cli_usage_error("eval", "give either --text FILE or --data FILE");
    if ((a.format || a.chat_template) && !a.data) cli_usage_error("eval", "--dataset-format and --chat-template go with --data");
    if (a.chat_template && (!a.format || strcmp(a.format, "chat_template") != 0))
        cli_usage_error("eval", "--chat-template needs --dataset-format chat_template");
    return a.data ? eval_dataset(&a) : eval_text(&a);
}
