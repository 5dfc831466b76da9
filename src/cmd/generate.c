// cmd/generate.c: `qlora generate`, a prompt's continuation streamed to stdout token by
// token (KV cache; sampling in sample.h).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chat_data.h"
#include "cmd/model_args.h"
#include "ds.h"
#include "json.h"
#include "sample.h"

typedef struct {
    ModelArgs m;
    const char *prompt;
    long max_new, top_k, seed;
    double temperature, top_p;
    bool chat;
    const char *messages;       // --messages FILE.json
    const char *chat_template;  // tokenizer_default or a named template
} GenerateArgs;

static const CliOption GENERATE_OPTIONS[] = {
    CLI_GROUP(GenerateArgs, m, MODEL_OPTIONS),
    {"--prompt", CLI_STR(GenerateArgs, prompt), "TEXT", "the text to continue (with --chat: the user's message)"},
    {"--chat", CLI_FLAG(GenerateArgs, chat), NULL,
     "render a conversation with the chat template, add the generation prompt, print the reply"},
    {"--messages", CLI_STR(GenerateArgs, messages), "FILE",
     "--chat: the conversation, a JSON array of {\"role\", \"content\"} (or {\"messages\": [...]})"},
    {"--chat-template", CLI_STR(GenerateArgs, chat_template), "NAME",
     "--chat: tokenizer_default (the folder's own), chatml, llama3, mistral, zephyr or alpaca"},
    {"--max-new-tokens", CLI_INT(GenerateArgs, max_new), "N", "stop after N new tokens", .lo = 0, .hi = 1 << 20},
    {"--temperature", CLI_FLOAT(GenerateArgs, temperature), "T", "softmax temperature; 0 is greedy", .lo = 0,
     .hi = 100},
    {"--top-k", CLI_INT(GenerateArgs, top_k), "K", "sample among the K most likely tokens; 0 = all", .lo = 0,
     .hi = 1 << 24},
    {"--top-p", CLI_FLOAT(GenerateArgs, top_p), "P", "then among the most likely tokens whose probability reaches P",
     .lo = 0, .hi = 1, .flags = CLI_LO_OPEN},
    {"--seed", CLI_INT(GenerateArgs, seed), "S", "the sampler's seed; the same seed gives the same text", .lo = 0,
     .hi = (double)(1L << 62)},
    CLI_END};

static const CliCommand GENERATE = {
    .name = "generate",
    .about =
    "Streams a continuation of TEXT, stopping at the end-of-text token or after N new tokens, with\n"
    "a KV cache (each new token costs one position). TEXT is tokenized as transformers' generate\n"
    "gets it from tokenizer(TEXT): with the tokenizer's special tokens (Llama 2's BOS); an empty\n"
    "TEXT starts from the BOS token. Generation stops at the tokenizer's EOS (tokenizer_config.json's\n"
    "eos_token; GPT-2's <|endoftext|>) and at config.json's eos_token_id. Sampling defaults are\n"
    "Hugging Face's: temperature 1.0, top-k 50, top-p 1.0. --bf16: the prompt's products with the\n"
    "frozen weights in bf16 (each new token's one-row products stay fp32).\n"
    "--chat: the conversation (--prompt as one user message, or --messages FILE) is rendered with the\n"
    "chat template and its generation prompt, tokenized as apply_chat_template does (no special tokens\n"
    "added: the template writes BOS), and only the reply is printed; generation also stops at the\n"
    "end of the turn (<|im_end|>, <|eot_id|>, the EOS: the token, or its text if it is no token).\n",
    .options = GENERATE_OPTIONS};

// The prompt's token ids (stb_ds), with the tokenizer's special tokens, checked against the
// model's context: an empty prompt starts from the BOS token. Exits on bad input.
static int *prompt_ids(Tokenizer *tok, const char *prompt, int n_positions) {
    int *ids = NULL;
    Error err = {0};
    if (!tok_encode_text(tok, "--prompt", prompt, strlen(prompt), true, &ids, &err)) die_error(&err);
    if (arrlenu(ids) == 0) {
        if (tok_bos(tok) < 0)
            die(EXIT_BAD_INPUT, "empty prompt and no BOS token to start from (neither %s nor config.json names one "
                "that the tokenizer has)", tok_path(tok));
        arrput(ids, tok_bos(tok));
    }
    if (arrlenu(ids) >= (size_t)n_positions)
        die(EXIT_BAD_INPUT, "the prompt is %zu tokens; the model's context is %d", arrlenu(ids), n_positions);
    return ids;
}

// --chat: the conversation (--messages FILE, else --prompt as a user message) into the stb_ds
// arrays roles / contents; the returned JSON (NULL for --prompt) holds their strings.
static cJSON *chat_conversation(const GenerateArgs *a, const char ***roles, const char ***contents) {
    Error err = {0};
    if (!a->messages) {
        arrput(*roles, "user");
        arrput(*contents, a->prompt);
        return NULL;
    }
    cJSON *js = json_parse_file(a->messages, &err);
    if (!js) die_error(&err);
    if (cJSON_IsArray(js)) {  // a bare list of messages
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "messages", js);
        js = o;
    }
    if (!chat_parse(js, a->messages, roles, contents, &err)) die_error(&err);
    return js;
}

// --chat: the conversation's ids with the generation prompt, checked against the context.
static int *chat_ids(const GenerateArgs *a, Tokenizer *tok, const ChatSetup *cs, int n_positions) {
    const char **roles = NULL, **contents = NULL;
    cJSON *js = chat_conversation(a, &roles, &contents);
    int *ids = NULL;
    Error err = {0};
    const char *what = a->messages ? a->messages : "--prompt";
    if (!chat_prompt_ids(cs, tok, roles, contents, arrlenu(roles), what, &ids, &err)) die_error(&err);
    if (arrlenu(ids) == 0) die(EXIT_BAD_INPUT, "%s: the chat template %s renders the conversation as no text", what, cs->origin);
    if (arrlenu(ids) >= (size_t)n_positions)
        die(EXIT_BAD_INPUT, "%s: the conversation is %zu tokens; the model's context is %d", what, arrlenu(ids), n_positions);
    arrfree(roles);
    arrfree(contents);
    cJSON_Delete(js);
    return ids;
}

// Where generation stops besides the tokenizer's EOS and config.json's eos_id: an end-of-turn
// token id (-1: none), or its text when it is not one token.
typedef struct {
    int id;
    const char *text;
} Stop;

// --chat: the end of a turn as one token, else as text.
static Stop chat_stop(Tokenizer *tok, const ChatSetup *cs) {
    Stop st = {-1, NULL};
    if (!cs->eot) return st;
    int *ids = NULL;
    Error err = {0};
    if (tok_encode_text(tok, "eot", cs->eot, strlen(cs->eot), false, &ids, &err) && arrlenu(ids) == 1) st.id = ids[0];
    else st.text = cs->eot;
    arrfree(ids);
    return st;
}

// The generated text so far and how much of it is printed.
typedef struct {
    char *text;  // stb_ds
    size_t printed;
    bool stopped;
} Reply;

// Print what of r->text is final (chat_reply_final).
static void reply_flush(Reply *r, const char *stop, bool end) {
    const size_t upto = chat_reply_final(r->text, arrlenu(r->text), r->printed, stop, end, &r->stopped);
    if (upto > r->printed) fwrite(r->text + r->printed, 1, upto - r->printed, stdout);
    r->printed = upto;
    fflush(stdout);
}

// Sample and print tokens after the prompt's logits until an end-of-text id (the tokenizer's EOS,
// config.json's eos_id, stop.id) or stop.text, max_new tokens or a full context. Returns the tokens
// made; failure[0..cap) receives a message (else "") when the logits turn non-finite.
static long stream_tokens(const GenerateArgs *a, const Model *m, const LoraSet *lora, KVCache *kv,
                          const Tokenizer *tok, const int *prompt, size_t n_prompt, Stop stop, float *logits,
                          char *failure, size_t cap) {
    const int Vt = tok_vocab_size(tok);  // ids past the tokenizer (padding) are never sampled
    SampleCand *cand = xmalloc((size_t)Vt * sizeof(SampleCand));
    const SampleParams sp = {(float)a->temperature, (int)a->top_k, (float)a->top_p};
    Rng rng;
    rng_seed(&rng, (uint64_t)a->seed);
    Reply reply = {0};
    TokStream stream;  // the text of the prompt and what follows, decoded as one list
    tok_stream_start(&stream, tok, prompt, n_prompt);
    long made = 0;
    failure[0] = '\0';
    while (made < a->max_new && !reply.stopped) {
        const size_t bad = quant_find_nonfinite(logits, (size_t)Vt);
        if (bad < (size_t)Vt) {
            snprintf(failure, cap, "generate: after %ld generated tokens the logit of token %zu is %s: the model%s "
                     "gives non-finite values", made, bad, isnan(logits[bad]) ? "NaN" : "Inf",
                     lora ? " with this adapter" : "");
            break;
        }
        int next = sample_next(logits, Vt, &sp, &rng, cand);
        if (next == tok_eos(tok) || next == m->cfg.eos_id || next == stop.id) break;
        tok_stream_push(&stream, tok, next, &reply.text);
        reply_flush(&reply, stop.text, false);
        made++;
        if (reply.stopped || kv_len(kv) >= kv_capacity(kv)) break;  // the turn's end as text, or a full context
        model_step(m, lora, kv, &next, 1, logits);
    }
    tok_stream_finish(&stream, &reply.text);  // a character held back for a next token that never came
    if (!reply.stopped) reply_flush(&reply, stop.text, true);
    arrfree(reply.text);
    free(cand);
    return made;
}

int cmd_generate(int argc, char **argv) {
    GenerateArgs a = {.m = model_args_default(), .max_new = 100, .top_k = 50, .seed = 42, .temperature = 1.0,
                      .top_p = 1.0};
    int rc = cli_parse(&GENERATE, &a, argc, argv);
    if (rc != CLI_RUN) return rc;
    if (!a.chat && (a.messages || a.chat_template)) cli_usage_error("generate", "--messages and --chat-template need --chat");
    if (!a.chat && !a.prompt) cli_usage_error("generate", "--prompt TEXT is required");
    if (a.chat && !a.prompt == !a.messages) cli_usage_error("generate", "--chat takes either --prompt TEXT or --messages FILE");
    GPT2Config cfg;
    Error err = {0};
    if (!model_read_config(&cfg, a.m.model_dir, &err)) die_error(&err);
    Tokenizer *tok = cmd_load_tokenizer(a.m.model_dir, &cfg);
    ChatSetup cs = {0};
    Stop stop = {-1, NULL};
    if (a.chat && !chat_setup(&cs, a.chat_template ? a.chat_template : "tokenizer_default", a.m.model_dir, tok, &err))
        die_error(&err);
    if (a.chat) stop = chat_stop(tok, &cs);
    int *ids = a.chat ? chat_ids(&a, tok, &cs, cfg.n_positions) : prompt_ids(tok, a.prompt, cfg.n_positions);
    Model m;
    LoraSet lora;
    bool has_lora;
    cmd_load_model(&a.m, &m, &lora, &has_lora);
    // the cache holds the prompt and what may follow it, not the whole context
    KVCache *kv = kv_create(&m, has_lora ? &lora : NULL, (int)arrlenu(ids) + (int)a.max_new);
    float *logits = xmalloc((size_t)m.cfg.vocab_size * sizeof(float));
    if (!a.chat) fputs(a.prompt, stdout);  // --chat prints the reply alone
    fflush(stdout);
    double t0 = time_now();
    model_step(&m, has_lora ? &lora : NULL, kv, ids, (int)arrlenu(ids), logits);
    double t_prompt = time_now() - t0;
    char failure[300];  // reported after freeing
    t0 = time_now();
    long made = stream_tokens(&a, &m, has_lora ? &lora : NULL, kv, tok, ids, arrlenu(ids), stop, logits, failure,
                              sizeof failure);
    double t_gen = time_now() - t0;
    printf("\n");
    if (!failure[0])
        fprintf(stderr, "prompt %zu tokens in %.2f s; generated %ld tokens in %.2f s (%.1f tokens/s)\n",
                arrlenu(ids), t_prompt, made, t_gen, made ? (double)made / t_gen : 0.0);
    free(logits);
    kv_free(kv);
    arrfree(ids);
    if (has_lora) lora_free(&lora);
    model_free(&m);
    chat_setup_free(&cs);
    tok_free(tok);
    if (failure[0]) die(EXIT_RUNTIME, "%s", failure);
    return 0;
}
