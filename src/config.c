// config.c: see config.h. One table describes every key; parsing, defaults, range checks,
// did-you-mean and the printed reference all read it.
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "lora.h"
#include "model.h"
#include "path.h"

// K_ENUM: a string field limited to `choices`; K_CHOICE: an enum field (int), the value
// values[i] (or i without values) for the i-th spelling of `choices`.
typedef enum { K_STR, K_ENUM, K_CHOICE, K_INT, K_FLOAT, K_BOOL, K_LIST } KeyType;

// K_LIST: an array of item_size-byte strings at the key's offset, its length an int at
// count_offset, at most max items, each checked by check (false with the reason in err).
typedef struct {
    size_t count_offset, item_size;
    int max;
    bool (*check)(const char *v, Error *err);
} ListSpec;

typedef struct {
    const char *name;
    KeyType type;
    size_t offset, size;   // into TrainConfig; size for K_ENUM's char arrays (K_STR: a char *)
    const int *values;     // K_CHOICE: the enum value of each choice; NULL = its index
    const ListSpec *list;  // K_LIST
    double lo, hi;         // numeric range (inclusive)
    const char *choices;   // K_ENUM, K_CHOICE: "a|b|c"
    const char *dflt;      // default, as YAML text
    const char *doc;
} KeySpec;

_Static_assert(sizeof(TrainMethod) == sizeof(int) && sizeof(QuantType) == sizeof(int) &&
                   sizeof(LrSchedule) == sizeof(int) && sizeof(Bf16Mode) == sizeof(int) && sizeof(ChatEos) == sizeof(int),
               "K_CHOICE fields are stored as int");

// A lora_target_modules entry: a PEFT module name qlora knows.
static bool check_target(const char *v, Error *err) { return model_lora_target_known(v, err); }

// A roles_to_train entry: a message role.
static bool check_role(const char *v, Error *err) {
    return chat_role_known(v) || error_set(err, "expected system, user, assistant or tool, found '%.40s'", v);
}

static const ListSpec TARGETS_LIST = {offsetof(TrainConfig, n_lora_target_modules), 32, CFG_MAX_TARGETS, check_target};
static const ListSpec ROLES_LIST = {offsetof(TrainConfig, n_roles_to_train), 16, CFG_MAX_ROLES, check_role};
static const int QUANT_VALUES[] = {QUANT_NF4, QUANT_FP4, QUANT_INT8, QUANT_NONE};
static const int LR_VALUES[] = {LR_CONSTANT, LR_LINEAR, LR_COSINE};

#define STR(f) K_STR, offsetof(TrainConfig, f), 0, NULL, NULL
#define ENUM(f) K_ENUM, offsetof(TrainConfig, f), sizeof(((TrainConfig *)0)->f), NULL, NULL
#define CHOICE(f, values) K_CHOICE, offsetof(TrainConfig, f), 0, values, NULL
#define NUM(t, f) t, offsetof(TrainConfig, f), 0, NULL, NULL
#define LIST(f, spec) K_LIST, offsetof(TrainConfig, f), 0, NULL, &spec
static const KeySpec KEYS[] = {
    {"base_model", STR(base_model), 0, 0, NULL, "", "model folder (HF layout: config.json, model.safetensors or shards, and tokenizer.json or vocab.json + merges.txt); required"},
    {"dataset", STR(dataset), 0, 0, NULL, "", "training data file; required"},
    {"dataset_format", ENUM(dataset_format), 0, 0, "text|jsonl|chat_template|alpaca", "", "text: plain text cut into sequence_len windows; jsonl: one example per line ({\"text\"}, {\"prompt\",\"completion\"} or {\"input_ids\"}); chat_template: one conversation per line ({\"messages\": [{\"role\",\"content\"}]} or ShareGPT {\"conversations\": [{\"from\",\"value\"}]}) rendered with chat_template; alpaca: {\"instruction\",\"input\",\"output\"} in the Alpaca prompt; empty: .jsonl files are jsonl, others text"},
    {"chat_template", ENUM(chat_template), 0, 0, "tokenizer_default|chatml|llama3|mistral|zephyr|alpaca", "tokenizer_default", "chat_template data: the model folder's own template (chat_template.jinja or tokenizer_config.json) or a named one"},
    {"roles_to_train", LIST(roles_to_train, ROLES_LIST), 0, 0, NULL, "[assistant]", "chat_template data: the roles (system, user, assistant, tool) whose message contents are trained"},
    {"train_on_eos", CHOICE(train_on_eos, NULL), 0, 0, "turn|all|none|last", "turn", "chat_template data: train the end-of-turn token (ChatML's im_end, Llama 3's eot_id, else the EOS) after each trained turn, after every turn, never, or after the last trained turn only"},
    {"drop_long", NUM(K_BOOL, drop_long), 0, 0, NULL, "false", "leave out jsonl examples longer than sequence_len (counted) instead of truncating them"},
    {"val_set_size", NUM(K_FLOAT, val_set_size), 0, 1e9, NULL, "0", "held-out part of dataset: a fraction (< 1) or a number of examples (>= 1); 0 = none"},
    {"val_dataset", STR(val_dataset), 0, 0, NULL, "", "separate validation file (same format as dataset); overrides val_set_size"},
    {"output_dir", STR(output_dir), 0, 0, NULL, "out", "where the adapter, checkpoints, metrics.jsonl and report.html go"},
    {"method", CHOICE(method, NULL), 0, 0, "qlora|lora|full", "qlora", "qlora: LoRA on a quantized frozen base; lora: LoRA on an fp32 frozen base; full: train every weight in fp32"},
    {"quant", CHOICE(quant, QUANT_VALUES), 0, 0, "nf4|fp4|int8|none", "nf4", "storage of the frozen linear weights with method qlora (lora and full use fp32)"},
    {"double_quant", NUM(K_BOOL, double_quant), 0, 0, NULL, "true", "double-quantize the NF4/FP4 block scales (8-bit, blocks of 256)"},
    {"quant_blocksize", NUM(K_INT, quant_blocksize), 32, 4096, NULL, "64", "values per quantization block (a power of two)"},
    {"lora_r", NUM(K_INT, lora_r), 1, 4096, NULL, "8", "LoRA rank r"},
    {"lora_alpha", NUM(K_FLOAT, lora_alpha), 1e-6, 1e6, NULL, "16", "LoRA alpha; the update is scaled by lora_alpha / lora_r"},
    {"lora_dropout", NUM(K_FLOAT, lora_dropout), 0, 0.99, NULL, "0.05", "dropout on the LoRA branch's input (the base model's own dropouts are not applied)"},
    {"lora_target_modules", LIST(lora_target_modules, TARGETS_LIST), 0, 0, NULL, "[all-linear]", "linears that get adapters, by PEFT name: GPT-2 c_attn, c_proj (both), attn.c_proj, mlp.c_proj, c_fc; LLaMA family q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; or all-linear"},
    {"lora_target_linear", NUM(K_BOOL, lora_target_linear), 0, 0, NULL, "false", "axolotl's switch: true = adapters on all linear layers"},
    {"use_rslora", NUM(K_BOOL, use_rslora), 0, 0, NULL, "false", "scale by lora_alpha / sqrt(lora_r) (rsLoRA)"},
    {"lora_model_dir", STR(lora_model_dir), 0, 0, NULL, "", "start from this PEFT adapter folder instead of a fresh one"},
    {"sequence_len", NUM(K_INT, sequence_len), 0, 1 << 20, NULL, "0", "tokens per example (longer jsonl examples are truncated; at most n_positions); 0 = the model's n_positions, at most 512"},
    {"micro_batch_size", NUM(K_INT, micro_batch_size), 1, 65536, NULL, "1", "examples per forward/backward pass"},
    {"gradient_accumulation_steps", NUM(K_INT, gradient_accumulation_steps), 1, 65536, NULL, "1", "micro-batches per optimizer step"},
    {"num_epochs", NUM(K_INT, num_epochs), 1, 1000000, NULL, "1", "passes over the training data (unless max_steps ends it first)"},
    {"max_steps", NUM(K_INT, max_steps), 0, 1e12, NULL, "0", "optimizer steps to run; 0 = num_epochs worth"},
    {"learning_rate", NUM(K_FLOAT, learning_rate), 0, 10, NULL, "0.0002", "peak learning rate"},
    {"lr_scheduler", CHOICE(lr_scheduler, LR_VALUES), 0, 0, "constant|linear|cosine", "cosine", "schedule after warm-up (transformers' semantics)"},
    {"warmup_steps", NUM(K_INT, warmup_steps), 0, 1e12, NULL, "0", "linear warm-up steps from 0 to learning_rate"},
    {"warmup_ratio", NUM(K_FLOAT, warmup_ratio), 0, 1, NULL, "0", "warm-up as a fraction of all steps (used when warmup_steps is 0)"},
    {"weight_decay", NUM(K_FLOAT, weight_decay), 0, 10, NULL, "0", "AdamW decoupled weight decay (full: not on biases and LayerNorm weights)"},
    {"adam_beta1", NUM(K_FLOAT, adam_beta1), 0, 0.999999, NULL, "0.9", "AdamW beta1"},
    {"adam_beta2", NUM(K_FLOAT, adam_beta2), 0, 0.999999999, NULL, "0.999", "AdamW beta2"},
    {"adam_epsilon", NUM(K_FLOAT, adam_epsilon), 1e-30, 1, NULL, "1e-08", "AdamW epsilon (> 0: with 0, a weight whose gradient is 0 gets 0/0)"},
    {"max_grad_norm", NUM(K_FLOAT, max_grad_norm), 0, 1e9, NULL, "1.0", "clip the global gradient norm to this; 0 = off"},
    {"train_on_inputs", NUM(K_BOOL, train_on_inputs), 0, 0, NULL, "false", "jsonl prompt/completion and alpaca: also train on the prompt tokens; chat_template: on every message's content"},
    {"sample_packing", NUM(K_BOOL, sample_packing), 0, 0, NULL, "false", "pack several examples into each sequence_len row (first-fit decreasing), each attending only to itself with positions from 0; fewer, fuller rows per epoch"},
    {"shuffle", NUM(K_BOOL, shuffle), 0, 0, NULL, "true", "shuffle the training examples every epoch (seeded)"},
    {"seed", NUM(K_INT, seed), 0, 1e15, NULL, "42", "seed for LoRA init, shuffling, dropout and the validation split"},
    {"logging_steps", NUM(K_INT, logging_steps), 1, 1e12, NULL, "1", "log (metrics.jsonl, terminal) every this many steps"},
    {"eval_steps", NUM(K_INT, eval_steps), 0, 1e12, NULL, "0", "evaluate on the validation set every this many steps; 0 = at the start and end only"},
    {"save_steps", NUM(K_INT, save_steps), 0, 1e12, NULL, "0", "write output_dir/checkpoint-N every this many steps; 0 = at the end only"},
    {"resume_from_checkpoint", STR(resume_from_checkpoint), 0, 0, NULL, "", "checkpoint folder to continue from, or 'latest' for the newest in output_dir"},
    {"threads", NUM(K_INT, threads), 0, 1024, NULL, "0", "threads for OpenMP and OpenBLAS (and qlora's own sgemm); 0 = OMP_NUM_THREADS or all cores"},
    {"bf16", CHOICE(bf16, NULL), 0, 0, "auto|true|false", "false", "multiply the frozen weights (quantized linears, output layer) in bf16 with fp32 sums, as QLoRA's compute dtype; auto = where the CPU has AVX512-BF16 or AMX; true on a CPU without them is an error; not with method full"},
    {"gradient_checkpointing", NUM(K_BOOL, gradient_checkpointing), 0, 0, NULL, "false", "keep only block inputs; recompute activations in backward (less memory, ~30% slower)"},
};
#undef STR
#undef ENUM
#undef CHOICE
#undef NUM
#undef LIST
#define N_KEYS (sizeof KEYS / sizeof KEYS[0])

static size_t levenshtein(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b), prev[64], cur[64];
    if (la >= 63 || lb >= 63) return 99;
    for (size_t j = 0; j <= lb; j++) prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof prev);
    }
    return prev[lb];
}

static const KeySpec *find_key(const char *name) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(KEYS[i].name, name) == 0) return &KEYS[i];
    return NULL;
}

static bool unknown_key(const char *where, const char *name, Error *err) {
    const char *best = NULL;
    size_t best_d = 4;  // suggest only close matches
    for (size_t i = 0; i < N_KEYS; i++) {
        size_t d = levenshtein(name, KEYS[i].name);
        if (d < best_d) {
            best_d = d;
            best = KEYS[i].name;
        }
    }
    if (best) return error_set(err, "%s: unknown key '%s' (did you mean '%s'?)", where, name, best);
    return error_set(err, "%s: unknown key '%s' (see 'qlora train --list-keys')", where, name);
}

// Position of v among the '|'-separated spellings of choices, or -1.
static int choice_index(const char *choices, const char *v) {
    const size_t n = strlen(v);
    int i = 0;
    for (const char *p = choices; p; i++) {
        const char *bar = strchr(p, '|');
        const size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0) return i;
        p = bar ? bar + 1 : NULL;
    }
    return -1;
}

// The spelling of enum value `value` of choice key k into out (cap bytes; "?" if none).
static void choice_name(const KeySpec *k, int value, char *out, size_t cap) {
    snprintf(out, cap, "?");
    int i = 0;
    for (const char *p = k->choices; p; i++) {
        const char *bar = strchr(p, '|');
        const int len = bar ? (int)(bar - p) : (int)strlen(p);
        if ((k->values ? k->values[i] : i) == value) {
            snprintf(out, cap, "%.*s", len, p);
            return;
        }
        p = bar ? bar + 1 : NULL;
    }
}

const char *train_method_name(TrainMethod m) {
    return m == METHOD_QLORA ? "qlora" : m == METHOD_LORA ? "lora" : "full";
}

const char *bf16_mode_name(Bf16Mode b) { return b == BF16_AUTO ? "auto" : b == BF16_TRUE ? "true" : "false"; }

// Store one scalar value into the key's field. `where` is "FILE:LINE" for messages.
static bool set_scalar(TrainConfig *c, const KeySpec *k, const char *v, const char *where,
                       Error *err) {
    char *field = (char *)c + k->offset;
    char *end;
    switch (k->type) {
    case K_STR:
        config_set_path((char **)field, v);
        return true;
    case K_ENUM:
    case K_CHOICE: {
        const int i = choice_index(k->choices, v);
        if (i < 0) return error_set(err, "%s: %s: expected one of %s, found '%s'", where, k->name, k->choices, v);
        if (k->type == K_ENUM) strcpy(field, v);
        else *(int *)field = k->values ? k->values[i] : i;
        return true;
    }
    case K_INT: {
        errno = 0;
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno)
            return error_set(err, "%s: %s: expected an integer, found '%s'", where, k->name, v);
        if (x < k->lo || x > k->hi)
            return error_set(err, "%s: %s: %ld is out of range [%.0f, %.0f]", where, k->name, x, k->lo, k->hi);
        *(long *)field = x;
        return true;
    }
    case K_FLOAT: {
        errno = 0;
        double x = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(x))
            return error_set(err, "%s: %s: expected a number, found '%s'", where, k->name, v);
        if (x < k->lo || x > k->hi)
            return error_set(err, "%s: %s: %g is out of range [%g, %g]", where, k->name, x, k->lo, k->hi);
        *(double *)field = x;
        return true;
    }
    case K_BOOL: {
        static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
        for (int i = 0; i < 3; i++) {
            if (strcasecmp(v, yes[i]) == 0) return *(bool *)field = true, true;
            if (strcasecmp(v, no[i]) == 0) return *(bool *)field = false, true;
        }
        return error_set(err, "%s: %s: expected true or false, found '%s'", where, k->name, v);
    }
    case K_LIST:
        break;
    }
    return false;
}

// The item count of list key k in c.
static int *list_count(TrainConfig *c, const KeySpec *k) { return (int *)((char *)c + k->list->count_offset); }

// Append v to list key k, checked.
static bool add_item(TrainConfig *c, const KeySpec *k, const char *v, const char *where, Error *err) {
    const ListSpec *l = k->list;
    Error e2 = {0};
    int *n = list_count(c, k);
    if (strlen(v) >= l->item_size)
        return error_set(err, "%s: %s: '%.40s...' is longer than %zu bytes", where, k->name, v, l->item_size - 1);
    if (!l->check(v, &e2)) return error_set(err, "%s: %s: %s", where, k->name, e2.msg);
    if (*n >= l->max) return error_set(err, "%s: %s: more than %d entries", where, k->name, l->max);
    snprintf((char *)c + k->offset + (size_t)(*n)++ * l->item_size, l->item_size, "%s", v);
    return true;
}

static bool is_null(const char *v) {
    return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
           strcmp(v, "NULL") == 0;
}

// Parse a YAML document (text of len bytes) whose top level is a flat mapping, applying each
// key. `origin` names the source in messages ("FILE" -> "FILE:LINE").
static bool parse_yaml(TrainConfig *c, const char *text, size_t len, const char *origin,
                       bool line_numbers, Error *err) {
    yaml_parser_t p;
    yaml_event_t ev;
    CHECK(yaml_parser_initialize(&p));
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    bool ok = true, done = false;
    int depth = 0;  // 1 inside the top-level mapping
    char key[128] = "", *where = NULL;  // where: "FILE:LINE" of the event, any length
    size_t seen_line[N_KEYS] = {0};
    const KeySpec *cur = NULL;
    bool in_list = false;
    while (ok && !done) {
        if (!yaml_parser_parse(&p, &ev)) {
            size_t bad_line = p.problem_mark.line + 1;
            if (p.error == YAML_READER_ERROR) {  // bad bytes: libyaml gives a byte offset, not a mark
                bad_line = 1;
                for (size_t i = 0; i < p.problem_offset && i < len; i++) bad_line += text[i] == '\n';
            }
            ok = error_set(err, "%s:%zu: invalid YAML: %s", origin, bad_line,
                           p.problem ? p.problem : "parse error");
            break;
        }
        size_t line = ev.start_mark.line + 1;
        free(where);
        where = line_numbers ? path_fmt("%s:%zu", origin, line) : xstrdup(origin);
        switch (ev.type) {
        case YAML_STREAM_END_EVENT: done = true; break;
        case YAML_MAPPING_START_EVENT:
            if (depth == 0) depth = 1;
            else ok = error_set(err, "%s: %s: expected a value, found a nested mapping (job files are flat)", where, key);
            break;
        case YAML_MAPPING_END_EVENT: depth = 0; break;
        case YAML_SEQUENCE_START_EVENT:
            if (!cur || cur->type != K_LIST || in_list)
                ok = error_set(err, "%s: %s: expected a single value, found a list", where,
                               depth ? key : "document");
            else {
                in_list = true;
                *list_count(c, cur) = 0;
            }
            break;
        case YAML_SEQUENCE_END_EVENT:
            in_list = false;
            cur = NULL;
            break;
        case YAML_SCALAR_EVENT: {
            const char *v = (const char *)ev.data.scalar.value;
            if (depth == 0) {
                if (!is_null(v)) ok = error_set(err, "%s: expected 'key: value' lines, found '%.40s'", where, v);
            } else if (in_list) {
                ok = add_item(c, cur, v, where, err);
            } else if (!cur) {  // a key
                snprintf(key, sizeof key, "%s", v);
                cur = find_key(v);
                if (!cur) {
                    ok = unknown_key(where, v, err);
                } else {
                    size_t idx = (size_t)(cur - KEYS);
                    if (seen_line[idx] && line_numbers)
                        ok = error_set(err, "%s: key '%s' given twice (first on line %zu)", where, v, seen_line[idx]);
                    seen_line[idx] = line;
                }
            } else {  // its value
                if (cur->type == K_LIST) {
                    *list_count(c, cur) = 0;
                    ok = is_null(v) || add_item(c, cur, v, where, err);
                } else if (is_null(v) && cur->type == K_STR) {
                    config_set_path((char **)((char *)c + cur->offset), "");
                } else if (is_null(v) && cur->type == K_ENUM && !cur->dflt[0]) {
                    ((char *)c + cur->offset)[0] = '\0';
                } else {
                    ok = set_scalar(c, cur, v, where, err);
                }
                cur = NULL;
            }
            break;
        }
        case YAML_ALIAS_EVENT:
            ok = error_set(err, "%s: YAML aliases are not supported in job files", where);
            break;
        default: break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    free(where);
    return ok;
}

void config_defaults(TrainConfig *c) {
    memset(c, 0, sizeof *c);
    Error err = {0};
    char line[512];
    for (size_t i = 0; i < N_KEYS; i++) {
        snprintf(line, sizeof line, "%s: %s\n", KEYS[i].name, KEYS[i].dflt);
        CHECK(parse_yaml(c, line, strlen(line), "defaults", false, &err));
    }
}

void config_free(TrainConfig *c) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (KEYS[i].type == K_STR) free(*(char **)((char *)c + KEYS[i].offset));
    memset(c, 0, sizeof *c);
}

void config_set_path(char **field, const char *value) {
    char *copy = xstrdup(value);  // value may be *field itself
    free(*field);
    *field = copy;
}

bool config_load(TrainConfig *c, const char *path, Error *err) {
    char *text;
    size_t len;
    if (!file_read_all(path, &text, &len, err)) return false;
    bool ok = parse_yaml(c, text, len, path, true, err);
    free(text);
    return ok;
}

bool config_load_text(TrainConfig *c, const char *text, size_t len, const char *origin, Error *err) {
    return parse_yaml(c, text, len, origin, true, err);
}

bool config_set(TrainConfig *c, const char *assignment, Error *err) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return error_set(err, "--set %s: expected key=value", assignment);
    // one key, one line: the assignment becomes a YAML line, so a line break in the value
    // or a ':' or '#' in the key could otherwise add keys the user never named
    size_t bad_key = strspn(assignment, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
    if (assignment + bad_key != eq)
        return error_set(err, "--set %.*s: expected a key of letters, digits and '_', found '%c'",
                         (int)(eq - assignment), assignment, assignment[bad_key]);
    if (strpbrk(eq + 1, "\n\r"))
        return error_set(err, "--set %.*s: expected a one-line value, found a line break", (int)(eq - assignment),
                         assignment);
    char *doc = NULL;
    size_t klen = (size_t)(eq - assignment), vlen = strlen(eq + 1);
    doc = xmalloc(klen + vlen + 8);
    memcpy(doc, assignment, klen);
    memcpy(doc + klen, ": ", 2);
    memcpy(doc + klen + 2, eq + 1, vlen);
    doc[klen + 2 + vlen] = '\n';
    char origin[300];
    snprintf(origin, sizeof origin, "--set %.*s", (int)(klen < 200 ? klen : 200), assignment);
    bool ok = parse_yaml(c, doc, klen + vlen + 3, origin, false, err);
    free(doc);
    return ok;
}

bool config_validate(const TrainConfig *c, Error *err) {
    if (!c->base_model[0]) return error_set(err, "the job sets no base_model (a model folder)");
    if (!c->dataset[0]) return error_set(err, "the job sets no dataset (a data file)");
    if (!c->output_dir[0]) return error_set(err, "output_dir must not be empty");
    if (c->method != METHOD_FULL && c->n_lora_target_modules == 0 && !c->lora_target_linear)
        return error_set(err, "lora_target_modules is empty: no layer would be trained");
    if (c->method == METHOD_FULL && c->bf16 == BF16_TRUE)
        return error_set(err, "bf16: true computes the frozen weights in bf16, and method full trains "
                              "every weight (use bf16: false or auto)");
    if (c->quant_blocksize & (c->quant_blocksize - 1))
        return error_set(err, "quant_blocksize %ld is not a power of two", c->quant_blocksize);
    if (c->sequence_len == 1)
        return error_set(err, "sequence_len: expected 0 (the model's length) or at least 2, found 1");
    if (strcmp(c->dataset_format, "chat_template") == 0 && c->n_roles_to_train == 0 && !c->train_on_inputs)
        return error_set(err, "roles_to_train is empty: no message of the conversations would be trained (add "
                              "assistant, or set train_on_inputs: true)");
    return true;
}

static const char *type_name(KeyType t) {
    switch (t) {
    case K_STR: return "string";
    case K_ENUM:
    case K_CHOICE: return "choice";
    case K_INT: return "integer";
    case K_FLOAT: return "number";
    case K_BOOL: return "bool";
    case K_LIST: return "list";
    }
    return "?";
}

void config_print_keys(FILE *fp) {
    fprintf(fp, "| key | type | default | range | meaning |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        const KeySpec *k = &KEYS[i];
        char range[64] = "";
        if (k->type == K_INT) snprintf(range, sizeof range, "%.0f .. %.0f", k->lo, k->hi);
        else if (k->type == K_FLOAT) snprintf(range, sizeof range, "%g .. %g", k->lo, k->hi);
        else if (k->type == K_ENUM || k->type == K_CHOICE) snprintf(range, sizeof range, "%s", k->choices);
        fprintf(fp, "| `%s` | %s | `%s` | %s | %s |\n", k->name, type_name(k->type),
                k->dflt[0] ? k->dflt : "\"\"", range, k->doc);
    }
}

void config_write_yaml(const TrainConfig *c, FILE *fp) {
    for (size_t i = 0; i < N_KEYS; i++) {
        const KeySpec *k = &KEYS[i];
        const char *field = (const char *)c + k->offset;
        fprintf(fp, "%s: ", k->name);
        char name[32];
        switch (k->type) {
        case K_CHOICE:
            choice_name(k, *(const int *)field, name, sizeof name);
            fprintf(fp, "\"%s\"\n", name);
            break;
        case K_STR:
        case K_ENUM:
            fputc('"', fp);
            for (const char *ch = k->type == K_STR ? *(char *const *)field : field; *ch; ch++) {
                if (*ch == '"' || *ch == '\\') fputc('\\', fp);
                fputc(*ch, fp);
            }
            fputs("\"\n", fp);
            break;
        case K_INT: fprintf(fp, "%ld\n", *(const long *)field); break;
        case K_FLOAT: fprintf(fp, "%.17g\n", *(const double *)field); break;
        case K_BOOL: fprintf(fp, "%s\n", *(const bool *)field ? "true" : "false"); break;
        case K_LIST:
            fprintf(fp, "[");
            for (int j = 0; j < *list_count((TrainConfig *)c, k); j++)
                fprintf(fp, "%s%s", j ? ", " : "", field + (size_t)j * k->list->item_size);
            fprintf(fp, "]\n");
            break;
        }
    }
}
