// chat_data.c: see chat_data.h.
#include "chat_data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include "ds.h"
#include "path.h"
#include "strbuf.h"

const char *const CHAT_ROLES[] = {"system", "user", "assistant", "tool", NULL};

bool chat_role_known(const char *role) {
    for (int i = 0; CHAT_ROLES[i]; i++)
        if (strcmp(role, CHAT_ROLES[i]) == 0) return true;
    return false;
}

// ---- parsing ---------------------------------------------------------------------------------

// ShareGPT's "from" as a role, or NULL.
static const char *sharegpt_role(const char *from) {
    return strcmp(from, "human") == 0 ? "user" : strcmp(from, "gpt") == 0 ? "assistant"
                                               : strcmp(from, "system") == 0 ? "system" : NULL;
}

// One message m (index i of the array named field): its role and content appended, or an error.
static bool parse_message(const cJSON *m, bool sharegpt, const char *field, int i, const char *where,
                          const char ***roles, const char ***contents, Error *err) {
    const char *rk = sharegpt ? "from" : "role", *ck = sharegpt ? "value" : "content";
    if (!cJSON_IsObject(m)) return error_set(err, "%s: %s[%d]: expected an object with \"%s\" and \"%s\"", where, field, i, rk, ck);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(m, rk), *c = cJSON_GetObjectItemCaseSensitive(m, ck);
    if (!r) return error_set(err, "%s: %s[%d]: no \"%s\" (expected a string)", where, field, i, rk);
    if (!cJSON_IsString(r)) return error_set(err, "%s: %s[%d]: \"%s\" must be a string", where, field, i, rk);
    if (!c) return error_set(err, "%s: %s[%d]: no \"%s\" (expected a string)", where, field, i, ck);
    if (!cJSON_IsString(c))
        return error_set(err, "%s: %s[%d]: \"%s\" must be a string (lists of parts are not supported)", where, field,
                         i, ck);
    const char *role = r->valuestring;
    if (sharegpt) {
        role = sharegpt_role(r->valuestring);
        if (!role)
            return error_set(err, "%s: %s[%d]: unknown \"from\" '%.40s' (expected human, gpt or system)", where,
                             field, i, r->valuestring);
    } else if (!chat_role_known(role)) {
        return error_set(err, "%s: %s[%d]: unknown role '%.40s' (expected system, user, assistant or tool)", where,
                         field, i, role);
    }
    arrput(*roles, role);
    arrput(*contents, c->valuestring);
    return true;
}

bool chat_parse(const cJSON *js, const char *where, const char ***roles, const char ***contents, Error *err) {
    if (!cJSON_IsObject(js)) return error_set(err, "%s: expected a JSON object", where);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(js, "messages");
    const cJSON *conv = cJSON_GetObjectItemCaseSensitive(js, "conversations");
    if (msgs && conv) return error_set(err, "%s: both \"messages\" and \"conversations\"; expected one", where);
    if (!msgs && !conv)
        return error_set(err, "%s: expected a \"messages\" array of {\"role\", \"content\"} (or ShareGPT's "
                              "\"conversations\" of {\"from\", \"value\"}) for dataset_format chat_template", where);
    const bool sharegpt = msgs == NULL;
    const char *field = sharegpt ? "conversations" : "messages";
    const cJSON *arr = sharegpt ? conv : msgs;
    if (!cJSON_IsArray(arr)) return error_set(err, "%s: \"%s\" must be an array", where, field);
    if (!arr->child) return error_set(err, "%s: \"%s\" is empty: a conversation needs at least one message", where, field);
    int i = 0;
    for (const cJSON *m = arr->child; m; m = m->next, i++)
        if (!parse_message(m, sharegpt, field, i, where, roles, contents, err)) return false;
    return true;
}

bool chat_alpaca_prompt(const cJSON *js, const char *where, char **prompt, const char **output, Error *err) {
    if (!cJSON_IsObject(js)) return error_set(err, "%s: expected a JSON object", where);
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(js, "instruction");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(js, "input");
    const cJSON *out = cJSON_GetObjectItemCaseSensitive(js, "output");
    if (!cJSON_IsString(ins) || !cJSON_IsString(out))
        return error_set(err, "%s: expected \"instruction\" and \"output\" strings (and an optional \"input\") for "
                              "dataset_format alpaca", where);
    if (in && !cJSON_IsString(in) && !cJSON_IsNull(in))
        return error_set(err, "%s: \"input\" must be a string (or absent)", where);
    const bool has_input = cJSON_IsString(in) && in->valuestring[0];
    // axolotl's AlpacaPrompter (instruct style), with and without an input
    if (has_input)
        sb_appendf(prompt, "Below is an instruction that describes a task, paired with an input that provides "
                           "further context. Write a response that appropriately completes the request.\n\n"
                           "### Instruction:\n%s\n\n### Input:\n%s\n\n### Response:\n", ins->valuestring, in->valuestring);
    else
        sb_appendf(prompt, "Below is an instruction that describes a task. Write a response that appropriately "
                           "completes the request.\n\n### Instruction:\n%s\n\n### Response:\n", ins->valuestring);
    *output = out->valuestring;
    return true;
}

// ---- where the contents land ------------------------------------------------------------------

// Where message msg's content is in the rendered text: bytes [start, end).
typedef struct {
    size_t msg, start, end;
} Landing;

#define MARK_HEAD "\x01qlora-message-"  // then the message's index and \x02: no template trims or
                                        // escapes these characters, and no text has them

// Length of the Unicode whitespace (Python's str.isspace, what the trim filter strips) at s.
static size_t py_space(const char *s, size_t n) {
    const unsigned char c = (unsigned char)s[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return 1;
    if (n >= 2 && c == 0xC2 && ((unsigned char)s[1] == 0x85 || (unsigned char)s[1] == 0xA0)) return 2;
    if (n < 3) return 0;
    const unsigned u = (unsigned)c << 16 | (unsigned)(unsigned char)s[1] << 8 | (unsigned char)s[2];
    const bool sp = u == 0xE19A80 || (u >= 0xE28080 && u <= 0xE2808A) || u == 0xE280A8 || u == 0xE280A9 ||
                    u == 0xE280AF || u == 0xE2819F || u == 0xE38080;  // U+1680, 2000-200A, 2028, 2029, 202F, 205F, 3000
    return sp ? 3 : 0;
}

// s[0..n) less leading and trailing whitespace, as [*a, *b).
static void py_strip(const char *s, size_t n, size_t *a, size_t *b) {
    size_t i = 0, j = n, k;
    while (i < n && (k = py_space(s + i, n - i)) > 0) i += k;
    for (bool more = true; more && j > i;) {  // the last character, whatever its length
        size_t c = j - 1;
        while (c > i && ((unsigned char)s[c] & 0xC0) == 0x80) c--;
        more = py_space(s + c, j - c) == j - c;
        if (more) j = c;
    }
    *a = i;
    *b = j;
}

// Whether text[at..) starts with s[0..n).
static bool has_at(const char *text, size_t len, size_t at, const char *s, size_t n) {
    return at <= len && n <= len - at && memcmp(text + at, s, n) == 0;
}

// In marked (the rendering with markers), the next marker at or after *i: its message index into
// *msg, its start into *at and its end into *end; false when there is none (*at = m).
static bool next_marker(const char *marked, size_t m, size_t from, size_t n_msg, size_t *at, size_t *end, size_t *msg) {
    const size_t hl = strlen(MARK_HEAD);
    for (const char *p = marked + from; (p = memmem(p, m - (size_t)(p - marked), MARK_HEAD, hl)) != NULL; p++) {
        char *e;
        const unsigned long k = strtoul(p + hl, &e, 10);
        if (*e != '\x02' || k >= n_msg) continue;
        *at = (size_t)(p - marked);
        *end = (size_t)(e + 1 - marked);
        *msg = k;
        return true;
    }
    *at = m;
    return false;
}

// Align text (the real rendering) with marked: the template's own text must match, and each
// marker stands for its content as is or stripped. Appends each content's landing to *out.
static bool align(const char *text, size_t len, const char *marked, size_t m, const char *const *contents, size_t n,
                  const char *where, Landing **out, Error *err) {
    size_t i = 0, j = 0;  // positions in marked and in text
    for (;;) {
        size_t at, end, msg;
        const bool more = next_marker(marked, m, i, n, &at, &end, &msg);
        if (!has_at(text, len, j, marked + i, at - i))
            return error_set(err, "%s: the chat template's text around the messages depends on their contents "
                                  "(byte %zu of the rendered text); qlora cannot tell where each content lands", where, j);
        j += at - i;
        if (!more) break;
        size_t next, next_end, next_msg;  // the template's text after this content
        next_marker(marked, m, end, n, &next, &next_end, &next_msg);
        const char *c = contents[msg];
        size_t a = 0, b = strlen(c), sa, sb;
        py_strip(c, b, &sa, &sb);
        const bool as_is = has_at(text, len, j, c, b) && has_at(text, len, j + b, marked + end, next - end);
        if (!as_is) {
            if (!(has_at(text, len, j, c + sa, sb - sa) && has_at(text, len, j + sb - sa, marked + end, next - end)))
                return error_set(err, "%s: the chat template changes the content of message %zu (not as is, nor "
                                      "stripped of surrounding whitespace); qlora cannot label it exactly", where, msg);
            a = sa;
            b = sb;
        }
        arrput(*out, ((Landing){msg, j, j + (b - a)}));
        j += b - a;
        i = end;
    }
    if (j != len) return error_set(err, "%s: the chat template's rendering with and without its contents differ", where);
    return true;
}

// Render the conversation, and again with markers for the contents, and find each content's
// landing in the first (*text, malloc'ed, *len bytes).
static bool render_and_locate(const ChatRenderer *r, const char *const *roles, const char *const *contents, size_t n,
                              const char *where, char **text, size_t *len, Landing **out, Error *err) {
    Error e = {0};
    if (!r->render(r->ctx, roles, contents, n, false, text, len, &e))
        return error_set(err, "%s: %s", where, e.msg);
    char **marks = xmalloc(n * sizeof(char *));
    for (size_t k = 0; k < n; k++) {
        marks[k] = xmalloc(strlen(MARK_HEAD) + 24);
        sprintf(marks[k], MARK_HEAD "%zu\x02", k);
    }
    char *marked = NULL;
    size_t m = 0;
    bool ok = r->render(r->ctx, roles, (const char *const *)marks, n, false, &marked, &m, &e) ||
              error_set(err, "%s: %s (rendering the conversation with placeholders for its contents)", where, e.msg);
    ok = ok && align(*text, *len, marked, m, contents, n, where, out, err);
    for (size_t k = 0; k < n; k++) free(marks[k]);
    free(marks);
    free(marked);
    return ok;
}

// ---- labels ------------------------------------------------------------------------------------

// Label every token whose span overlaps text bytes [a, b) (spans: 2 per token).
static void label_range(const int *ids, const size_t *spans, size_t n_tok, size_t a, size_t b, int *labels) {
    for (size_t t = 0; t < n_tok; t++)
        if (spans[2 * t] < b && spans[2 * t + 1] > a) labels[t] = ids[t];
}

static bool role_trained(const ChatOptions *o, const char *role) {
    if (o->train_on_inputs) return true;
    for (size_t i = 0; i < o->n_roles; i++)
        if (strcmp(o->roles_to_train[i], role) == 0) return true;
    return false;
}

// The contents of trained messages, and per train_on_eos the end-of-turn text after a turn's
// content (the first one before the next content, or the end).
static void set_labels(const ChatOptions *o, const char *const *roles, const Landing *land, const char *text,
                       size_t len, const int *ids, const size_t *spans, size_t n_tok, int *labels) {
    const char *eot = o->renderer->eot;
    const size_t el = eot ? strlen(eot) : 0;
    size_t last_a = 0, last_b = 0;  // the last trained turn's end-of-turn text
    for (size_t t = 0; t < n_tok; t++) labels[t] = -1;
    for (size_t k = 0; k < arrlenu(land); k++) {
        const bool trained = role_trained(o, roles[land[k].msg]);
        if (trained) label_range(ids, spans, n_tok, land[k].start, land[k].end, labels);
        const size_t stop = k + 1 < arrlenu(land) ? land[k + 1].start : len;
        const char *at = el && stop > land[k].end ? memmem(text + land[k].end, stop - land[k].end, eot, el) : NULL;
        if (!at || (size_t)(at - text) + el > stop) continue;
        const size_t a = (size_t)(at - text);
        if (o->train_on_eos == CHAT_EOS_ALL || (o->train_on_eos == CHAT_EOS_TURN && trained))
            label_range(ids, spans, n_tok, a, a + el, labels);
        if (trained) last_a = a, last_b = a + el;
    }
    if (o->train_on_eos == CHAT_EOS_LAST && last_b > last_a) label_range(ids, spans, n_tok, last_a, last_b, labels);
}

bool chat_example_messages(const char *const *roles, const char *const *contents, size_t n, const char *where,
                           Tokenizer *tok, const ChatOptions *o, int **ids, int **labels, char **text_out,
                           Error *err) {
    char *text = NULL;
    size_t len = 0, *spans = NULL;
    Landing *land = NULL;
    int *own = NULL;
    char *what = path_fmt("%s: the rendered conversation", where);
    bool ok = render_and_locate(o->renderer, roles, contents, n, where, &text, &len, &land, err) &&
              tok_encode_spans(tok, what, text, len, false, &own, &spans, err);
    if (ok) {
        const size_t n_tok = arrlenu(own);
        int *lab = arraddnptr(*labels, n_tok);
        set_labels(o, roles, land, text, len, own, spans, n_tok, lab);
        if (n_tok) memcpy(arraddnptr(*ids, n_tok), own, n_tok * sizeof(int));
    }
    if (ok && text_out) *text_out = text;
    else free(text);
    arrfree(spans);
    arrfree(land);
    arrfree(own);
    free(what);
    return ok;
}

bool chat_example(const cJSON *js, const char *where, Tokenizer *tok, const ChatOptions *o, int **ids, int **labels,
                  Error *err) {
    const char **roles = NULL, **contents = NULL;
    bool ok = chat_parse(js, where, &roles, &contents, err) &&
              chat_example_messages(roles, contents, arrlenu(roles), where, tok, o, ids, labels, NULL, err);
    arrfree(roles);
    arrfree(contents);
    return ok;
}

// ---- a model folder's template -------------------------------------------------------------------

// The renderer over a ChatSetup (chat_template_render with its tokens).
static bool render_setup(const void *ctx, const char *const *roles, const char *const *contents, size_t n,
                         bool add_generation_prompt, char **out, size_t *out_len, Error *err) {
    const ChatSetup *s = ctx;
    ChatMessage *m = xmalloc((n ? n : 1) * sizeof(ChatMessage));
    for (size_t i = 0; i < n; i++) m[i] = (ChatMessage){roles[i], contents[i]};
    const ChatRenderArgs a = {m, n, s->bos, s->eos, add_generation_prompt};
    const bool ok = chat_template_render(s->tmpl, &a, out, out_len, err);
    free(m);
    return ok;
}

// Whether dir has file name.
static bool has_file(const char *dir, const char *name) {
    char *p = path_join(dir, name);
    struct stat st;
    const bool yes = stat(p, &st) == 0;
    free(p);
    return yes;
}

// The text of token id (a copy), or NULL for -1.
static char *token_text(const Tokenizer *tok, int id) {
    if (id < 0) return NULL;
    char *t = NULL;
    tok_decode(tok, &id, 1, false, &t);
    char *s = xmalloc(arrlenu(t) + 1);
    if (arrlenu(t)) memcpy(s, t, arrlenu(t));
    s[arrlenu(t)] = '\0';
    arrfree(t);
    return s;
}

bool chat_setup(ChatSetup *s, const char *which, const char *dir, const Tokenizer *tok, Error *err) {
    memset(s, 0, sizeof *s);
    ChatTemplateSource src = {0};
    s->tmpl = chat_template_load(which, dir, &src, err);
    if (!s->tmpl) {
        chat_template_source_free(&src);
        return false;
    }
    s->origin = xstrdup(strcmp(which, "tokenizer_default") == 0 && src.origin ? src.origin : which);
    if (has_file(dir, "tokenizer_config.json") || has_file(dir, "special_tokens_map.json")) {
        s->bos = src.bos_token ? xstrdup(src.bos_token) : NULL;
        s->eos = src.eos_token ? xstrdup(src.eos_token) : NULL;
    } else {  // no file names them: the tokenizer's own (GPT-2: <|endoftext|>, as GPT2Tokenizer)
        s->bos = token_text(tok, tok_bos(tok));
        s->eos = token_text(tok, tok_eos(tok));
    }
    chat_template_source_free(&src);
    const char *eot = strcmp(which, "chatml") == 0 ? "<|im_end|>" : strcmp(which, "llama3") == 0 ? "<|eot_id|>" : s->eos;
    s->eot = eot ? xstrdup(eot) : NULL;
    s->renderer = (ChatRenderer){render_setup, s, s->eot};
    return true;
}

void chat_setup_free(ChatSetup *s) {
    chat_template_free(s->tmpl);
    free(s->bos);
    free(s->eos);
    free(s->eot);
    free(s->origin);
    memset(s, 0, sizeof *s);
}

bool chat_prompt_ids(const ChatSetup *s, Tokenizer *tok, const char *const *roles, const char *const *contents,
                     size_t n, const char *where, int **ids, Error *err) {
    char *text = NULL;
    size_t len = 0;
    Error e = {0};
    if (!s->renderer.render(s->renderer.ctx, roles, contents, n, true, &text, &len, &e))
        return error_set(err, "%s: %s", where, e.msg);
    char *what = path_fmt("%s: the rendered conversation", where);
    const bool ok = tok_encode_text(tok, what, text, len, false, ids, err);
    free(what);
    free(text);
    return ok;
}

size_t chat_reply_final(const char *text, size_t n, size_t printed, const char *stop, bool end, bool *stopped) {
    const size_t sl = stop ? strlen(stop) : 0;
    if (!sl || n <= printed) return n > printed ? n : printed;
    const char *hit = memmem(text + printed, n - printed, stop, sl);
    if (hit) {
        *stopped = true;
        return (size_t)(hit - text);
    }
    if (end) return n;
    for (size_t k = sl - 1 < n - printed ? sl - 1 : n - printed; k > 0; k--)  // the longest tail that begins a stop
        if (memcmp(text + n - k, stop, k) == 0) return n - k;
    return n;
}
