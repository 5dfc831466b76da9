// data.c: see data.h.
#include "data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "json.h"
#include "path.h"

static void add_example(Dataset *d, const int *ids, const int *labels, size_t len, size_t seq_len) {
    if (len > seq_len) {
        len = seq_len;
        d->n_truncated++;
    }
    Example e = {.ids = xmalloc(len * sizeof(int)), .labels = xmalloc(len * sizeof(int)), .len = len};
    memcpy(e.ids, ids, len * sizeof(int));
    memcpy(e.labels, labels, len * sizeof(int));
    for (size_t i = 1; i < len; i++) e.n_predicted += labels[i] >= 0;
    d->n_tokens += len;
    arrput(d->ex, e);
}

// Append the ids of one text of an example to *ids, as transformers + axolotl tokenize it: the
// tokenizer's post-processor runs (Llama 2 puts <s> before the text; lead false drops what it puts
// before, as axolotl strips BOS from a completion), then with tail the EOS id, unless there is
// none or the post-processor already ended the text with it. what names the text in messages.
static bool encode_part(Tokenizer *tok, const char *what, const char *text, size_t len, bool lead, bool tail,
                        int **ids, Error *err) {
    const size_t start = arrlenu(*ids), before = tok_special_before(tok), after = tok_special_after(tok);
    if (!tok_encode_text(tok, what, text, len, true, ids, err)) return false;
    if (!lead && before) {
        const size_t n = arrlenu(*ids) - start;  // >= before: the template's ids are always there
        memmove(*ids + start, *ids + start + before, (n - before) * sizeof(int));
        arrsetlen(*ids, start + n - before);
    }
    const int eos = tok_eos(tok);
    const bool ends_with_eos = after > 0 && arrlenu(*ids) > start && (*ids)[arrlenu(*ids) - 1] == eos;
    if (tail && eos >= 0 && !ends_with_eos) arrput(*ids, eos);
    return true;
}

static bool load_text(Dataset *d, const char *text, size_t len, const char *path, Tokenizer *tok,
                      const DataOptions *o, Error *err) {
    int *ids = NULL;
    if (!encode_part(tok, path, text, len, true, true, &ids, err)) {
        arrfree(ids);
        return false;
    }
    const size_t n = arrlenu(ids);
    for (size_t s = 0; s < n; s += o->seq_len) {
        size_t l = n - s < o->seq_len ? n - s : o->seq_len;
        if (l >= 2) add_example(d, ids + s, ids + s, l, o->seq_len);  // every token a label
    }
    arrfree(ids);
    if (arrlenu(d->ex) == 0)
        return error_set(err, "%s: %zu tokens; a text dataset needs at least 2", path, n);
    return true;
}

// Integers of a JSON array into *out (stb_ds); each in [lo, hi).
static bool json_int_array(const cJSON *arr, int lo, int hi, int **out) {
    for (const cJSON *x = arr->child; x; x = x->next) {
        if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) ||
            x->valuedouble < lo || x->valuedouble >= hi)
            return false;
        arrput(*out, (int)x->valuedouble);
    }
    return true;
}

// A pre-tokenized line: input_ids (and labels, -100 = ignored) into *ids / *labels.
static bool pretokenized(const cJSON *input_ids, const cJSON *lab, const char *where, const DataOptions *o, int **ids,
                         int **labels, Error *err) {
    if (!cJSON_IsArray(input_ids) || !json_int_array(input_ids, 0, o->vocab_size, ids))
        return error_set(err, "%s: \"input_ids\" must be an array of token ids in [0, %d)", where, o->vocab_size);
    if (!lab) {
        for (size_t i = 0; i < arrlenu(*ids); i++) arrput(*labels, (*ids)[i]);
        return true;
    }
    if (!cJSON_IsArray(lab) || !json_int_array(lab, -100, o->vocab_size, labels) || arrlenu(*labels) != arrlenu(*ids))
        return error_set(err, "%s: \"labels\" must be an array of ids (or -100) as long as \"input_ids\"", where);
    for (size_t i = 0; i < arrlenu(*labels); i++) {
        if ((*labels)[i] < 0 && (*labels)[i] != -100)
            return error_set(err, "%s: \"labels\"[%zu] is %d; use -100 to ignore a token", where, i, (*labels)[i]);
        if ((*labels)[i] < 0) (*labels)[i] = -1;
    }
    return true;
}

// A prompt and its completion, as axolotl tokenizes them: BOS + prompt (no EOS, labels -1 unless
// train_on_inputs), then the completion without BOS + EOS (labels). field names the completion
// in messages ("completion", "output").
static bool prompt_pair(Tokenizer *tok, const char *where, const char *prompt, size_t plen, const char *comp,
                        const char *field, bool train_on_inputs, int **ids, int **labels, Error *err) {
    char *what = path_fmt("%s: \"%s\"", where, field[0] == 'c' ? "prompt" : "instruction");
    bool ok = encode_part(tok, what, prompt, plen, true, false, ids, err);
    const size_t np = arrlenu(*ids);
    free(what);
    what = path_fmt("%s: \"%s\"", where, field);
    ok = ok && encode_part(tok, what, comp, strlen(comp), false, true, ids, err);
    free(what);
    for (size_t i = 0; ok && i < arrlenu(*ids); i++) arrput(*labels, (i < np && !train_on_inputs) ? -1 : (*ids)[i]);
    return ok;
}

// A line of dataset_format jsonl: text, prompt/completion or pre-tokenized ids.
static bool jsonl_fields(const cJSON *js, const char *where, Tokenizer *tok, const DataOptions *o, int **ids,
                         int **labels, Error *err) {
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(js, "text");
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(js, "prompt");
    const cJSON *completion = cJSON_GetObjectItemCaseSensitive(js, "completion");
    const cJSON *input_ids = cJSON_GetObjectItemCaseSensitive(js, "input_ids");
    if (!cJSON_IsObject(js)) return error_set(err, "%s: expected a JSON object", where);
    if (input_ids) return pretokenized(input_ids, cJSON_GetObjectItemCaseSensitive(js, "labels"), where, o, ids, labels, err);
    if (prompt || completion) {
        if (!cJSON_IsString(prompt) || !cJSON_IsString(completion))
            return error_set(err, "%s: \"prompt\" and \"completion\" must both be strings", where);
        return prompt_pair(tok, where, prompt->valuestring, strlen(prompt->valuestring), completion->valuestring,
                           "completion", o->train_on_inputs, ids, labels, err);
    }
    if (text) {
        if (!cJSON_IsString(text)) return error_set(err, "%s: \"text\" must be a string", where);
        char *what = path_fmt("%s: \"text\"", where);
        const bool ok = encode_part(tok, what, text->valuestring, strlen(text->valuestring), true, true, ids, err);
        free(what);
        if (!ok) return false;
        for (size_t i = 0; i < arrlenu(*ids); i++) arrput(*labels, (*ids)[i]);
        return true;
    }
    if (cJSON_GetObjectItemCaseSensitive(js, "messages") || cJSON_GetObjectItemCaseSensitive(js, "conversations"))
        return error_set(err, "%s: a conversation; set dataset_format: chat_template to train on it", where);
    return error_set(err, "%s: expected a \"text\", \"prompt\"/\"completion\" or \"input_ids\" field", where);
}

// The ids and labels of one line js in o->format.
static bool line_example(const cJSON *js, const char *where, Tokenizer *tok, const DataOptions *o, int **ids,
                         int **labels, Error *err) {
    if (strcmp(o->format, "chat_template") == 0) {
        if (!o->chat) return error_set(err, "%s: dataset_format chat_template needs a chat template", where);
        return chat_example(js, where, tok, o->chat, ids, labels, err);
    }
    if (strcmp(o->format, "alpaca") == 0) {
        char *prompt = NULL;
        const char *output;
        bool ok = chat_alpaca_prompt(js, where, &prompt, &output, err) &&
                  prompt_pair(tok, where, prompt ? prompt : "", arrlenu(prompt), output, "output", o->train_on_inputs,
                              ids, labels, err);
        arrfree(prompt);
        return ok;
    }
    return jsonl_fields(js, where, tok, o, ids, labels, err);
}

// Keep the example ids/labels of line line_no: left out if longer than seq_len with drop_long,
// else cut to seq_len; an error if nothing in what is kept is predicted.
static bool keep_example(Dataset *d, const int *ids, const int *labels, size_t line_no, const char *where,
                         const DataOptions *o, Error *err) {
    const size_t n = arrlenu(ids);
    if (n > o->seq_len && o->drop_long) {
        d->n_dropped++;
        return true;
    }
    size_t pred = 0, pred_all = 0;  // labels within sequence_len, and anywhere
    for (size_t i = 1; i < n; i++) {
        pred += i < o->seq_len && labels[i] >= 0;
        pred_all += labels[i] >= 0;
    }
    if (pred == 0 && pred_all > 0)
        return error_set(err, "%s: the prompt fills all %zu tokens of sequence_len, leaving no token to predict "
                              "(raise sequence_len, shorten the prompt, or set drop_long: true)", where, o->seq_len);
    if (n < 2 || pred == 0) return error_set(err, "%s: the example has no token to predict (%zu tokens)", where, n);
    add_example(d, ids, labels, n, o->seq_len);
    d->ex[arrlenu(d->ex) - 1].line = line_no;
    return true;
}

static bool jsonl_line(Dataset *d, const char *line, size_t len, const char *where, size_t line_no, Tokenizer *tok,
                       const DataOptions *o, Error *err) {
    cJSON *js = json_parse(line, len, 0, where, err);
    if (!js) return false;
    int *ids = NULL, *labels = NULL;
    bool ok = line_example(js, where, tok, o, &ids, &labels, err) && keep_example(d, ids, labels, line_no, where, o, err);
    arrfree(ids);
    arrfree(labels);
    cJSON_Delete(js);
    return ok;
}

static bool load_jsonl(Dataset *d, const char *text, size_t len, const char *path, Tokenizer *tok,
                       const DataOptions *o, Error *err) {
    bool ok = true;
    size_t line_no = 0;
    for (const char *p = text; ok && p < text + len;) {
        const char *nl = memchr(p, '\n', (size_t)(text + len - p));
        const char *end = nl ? nl : text + len;
        line_no++;
        size_t n = (size_t)(end - p);
        bool blank = true;
        for (size_t i = 0; i < n; i++) blank &= p[i] == ' ' || p[i] == '\t' || p[i] == '\r';
        if (!blank) {
            char *where = path_fmt("%s:%zu", path, line_no);
            ok = jsonl_line(d, p, n, where, line_no, tok, o, err);
            free(where);
        }
        p = end + 1;
    }
    if (ok && arrlenu(d->ex) == 0 && d->n_dropped)
        ok = error_set(err, "%s: no examples: all %zu are longer than sequence_len %zu (drop_long)", path, d->n_dropped,
                       o->seq_len);
    else if (ok && arrlenu(d->ex) == 0)
        ok = error_set(err, "%s: no examples", path);
    return ok;
}

bool data_load(Dataset *d, const char *path, Tokenizer *tok, const DataOptions *o, Error *err) {
    memset(d, 0, sizeof *d);
    const char *fmt = o->format;
    if (!fmt || !*fmt) {
        size_t n = strlen(path);
        fmt = n > 6 && strcmp(path + n - 6, ".jsonl") == 0 ? "jsonl" : "text";
    }
    char *text;
    size_t len;
    if (!file_read_all(path, &text, &len, err)) return false;
    DataOptions o2 = *o;
    o2.format = fmt;
    bool ok = data_load_text(d, text, len, path, tok, &o2, err);
    free(text);
    return ok;
}

bool data_load_text(Dataset *d, const char *text, size_t len, const char *name, Tokenizer *tok,
                    const DataOptions *o, Error *err) {
    memset(d, 0, sizeof *d);
    bool ok = strcmp(o->format, "text") != 0 ? load_jsonl(d, text, len, name, tok, o, err)
                                             : load_text(d, text, len, name, tok, o, err);
    if (!ok) data_free(d);
    return ok;
}

void data_free(Dataset *d) {
    for (size_t i = 0; i < arrlenu(d->ex); i++) {
        free(d->ex[i].ids);
        free(d->ex[i].labels);
    }
    arrfree(d->ex);
    memset(d, 0, sizeof *d);
}

void data_epoch_order(size_t n, bool shuffle, uint64_t seed, size_t epoch, size_t *order) {
    for (size_t i = 0; i < n; i++) order[i] = i;
    if (!shuffle) return;
    Rng r;
    rng_seed(&r, seed * 1000003u + epoch);
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng_u64(&r) % i);
        size_t t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
}

bool data_split(Dataset *train, Dataset *val, double size, uint64_t seed, Error *err) {
    memset(val, 0, sizeof *val);
    const size_t n = arrlenu(train->ex);
    size_t n_val = size < 1.0 ? (size_t)llround(size * (double)n) : (size_t)size;
    if (size > 0 && n_val == 0) n_val = 1;
    if (n_val == 0) return true;
    if (n_val >= n)
        return error_set(err, "val_set_size %g takes %zu of the %zu examples; nothing would be left to train on",
                         size, n_val, n);
    size_t *order = xmalloc(n * sizeof(size_t));
    data_epoch_order(n, true, seed ^ 0x5EEDu, 0, order);
    bool *is_val = xcalloc(n, sizeof(bool));
    for (size_t i = 0; i < n_val; i++) is_val[order[i]] = true;
    Example *keep = NULL;
    for (size_t i = 0; i < n; i++) {
        if (is_val[i]) arrput(val->ex, train->ex[i]);
        else arrput(keep, train->ex[i]);
    }
    arrfree(train->ex);
    train->ex = keep;
    train->n_tokens = val->n_tokens = 0;
    for (size_t i = 0; i < arrlenu(train->ex); i++) train->n_tokens += train->ex[i].len;
    for (size_t i = 0; i < arrlenu(val->ex); i++) val->n_tokens += val->ex[i].len;
    free(order);
    free(is_val);
    return true;
}

size_t data_batch(const Dataset *d, const size_t *order, size_t first, size_t B, int *tokens,
                  int *targets, size_t *n_predicted) {
    size_t T = 0;
    for (size_t b = 0; b < B; b++) {
        size_t l = d->ex[order[first + b]].len;
        if (l > T) T = l;
    }
    for (size_t b = 0; b < B; b++) {
        const Example *e = &d->ex[order[first + b]];
        for (size_t t = 0; t < T; t++) {
            tokens[b * T + t] = t < e->len ? e->ids[t] : 0;
            targets[b * T + t] = t + 1 < e->len ? e->labels[t + 1] : -1;
        }
        *n_predicted += e->n_predicted;
    }
    return T;
}

// ---- rows and sample packing ---------------------------------------------------------------------

// The leftmost of n slots whose free space is >= need, found in a max segment tree (tree[1] is
// the root, leaves at [size, 2 size)); SIZE_MAX if none.
static size_t tree_first_fit(const size_t *tree, size_t size, size_t need) {
    if (tree[1] < need) return SIZE_MAX;
    size_t i = 1;
    while (i < size) i = tree[2 * i] >= need ? 2 * i : 2 * i + 1;
    return i - size;
}

static void tree_set(size_t *tree, size_t size, size_t slot, size_t value) {
    size_t i = slot + size;
    tree[i] = value;
    for (i /= 2; i >= 1; i /= 2) tree[i] = tree[2 * i] > tree[2 * i + 1] ? tree[2 * i] : tree[2 * i + 1];
}

// qsort's comparison of (length, position) pairs: longer first, then earlier first.
static int by_length_desc(const void *a, const void *b) {
    const size_t *x = a, *y = b;
    if (x[0] != y[0]) return x[0] > y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

// First-fit decreasing of the n examples order[0..n) into rows of capacity cap: row[k] receives
// the row of example order[k]; returns the number of rows. A max tree over n candidate rows (all
// free at first) finds the leftmost one with room, which is a new row when no open one has room.
static size_t pack_rows(const Dataset *d, const size_t *order, size_t n, size_t cap, size_t *row) {
    size_t *key = xmalloc(2 * (n ? n : 1) * sizeof(size_t)), size = 1, n_rows = 0;
    for (size_t k = 0; k < n; k++) key[2 * k] = d->ex[order[k]].len, key[2 * k + 1] = k;
    qsort(key, n, 2 * sizeof(size_t), by_length_desc);
    while (size < n) size *= 2;
    size_t *tree = xcalloc(2 * size, sizeof(size_t));
    for (size_t i = 0; i < n; i++) tree[size + i] = cap;
    for (size_t i = size - 1; i >= 1; i--) tree[i] = tree[2 * i] > tree[2 * i + 1] ? tree[2 * i] : tree[2 * i + 1];
    for (size_t j = 0; j < n; j++) {
        const size_t len = key[2 * j], k = key[2 * j + 1], r = tree_first_fit(tree, size, len);
        CHECK(len <= cap && r < n);  // examples are cut to seq_len at load
        row[k] = r;
        tree_set(tree, size, r, tree[size + r] - len);
        if (r + 1 > n_rows) n_rows = r + 1;
    }
    free(tree);
    free(key);
    return n_rows;
}

void data_plan(DataPlan *p, const Dataset *d, bool pack, size_t seq_len, bool shuffle, uint64_t seed, size_t epoch) {
    const size_t n = arrlenu(d->ex);
    size_t *order = xmalloc((n ? n : 1) * sizeof(size_t));
    data_epoch_order(n, shuffle, seed, epoch, order);
    p->ex = xmalloc((n ? n : 1) * sizeof(size_t));
    if (!pack) {
        p->n_rows = n;
        p->first = xmalloc((n + 1) * sizeof(size_t));
        for (size_t k = 0; k <= n; k++) p->first[k] = k;
        memcpy(p->ex, order, n * sizeof(size_t));
        free(order);
        return;
    }
    size_t *row = xmalloc((n ? n : 1) * sizeof(size_t));
    p->n_rows = pack_rows(d, order, n, seq_len, row);
    // the rows' order: shuffled with the epoch's seed (another stream than the examples' order)
    size_t *rank = xmalloc((p->n_rows ? p->n_rows : 1) * sizeof(size_t));
    data_epoch_order(p->n_rows, shuffle, seed ^ 0x9ACCu, epoch, rank);  // rank[j] = the row placed j-th
    size_t *place = xmalloc((p->n_rows ? p->n_rows : 1) * sizeof(size_t));
    for (size_t j = 0; j < p->n_rows; j++) place[rank[j]] = j;
    p->first = xcalloc(p->n_rows + 1, sizeof(size_t));
    for (size_t k = 0; k < n; k++) p->first[place[row[k]] + 1]++;
    for (size_t j = 0; j < p->n_rows; j++) p->first[j + 1] += p->first[j];
    size_t *fill = xmalloc((p->n_rows ? p->n_rows : 1) * sizeof(size_t));
    memcpy(fill, p->first, p->n_rows * sizeof(size_t));
    for (size_t k = 0; k < n; k++) p->ex[fill[place[row[k]]]++] = order[k];  // a row keeps the epoch's order
    free(fill);
    free(place);
    free(rank);
    free(row);
    free(order);
}

void data_plan_free(DataPlan *p) {
    free(p->ex);
    free(p->first);
    memset(p, 0, sizeof *p);
}

size_t data_batch_rows(const Dataset *d, const DataPlan *p, size_t first, size_t B, int *tokens, int *targets,
                       int *pos, size_t *n_predicted) {
    size_t T = 0;
    for (size_t b = 0; b < B; b++) {
        size_t l = 0;
        for (size_t k = p->first[first + b]; k < p->first[first + b + 1]; k++) l += d->ex[p->ex[k]].len;
        if (l > T) T = l;
    }
    for (size_t b = 0; b < B; b++) {
        size_t t = 0;
        int *tk = tokens + b * T, *tg = targets + b * T, *ps = pos + b * T;
        for (size_t k = p->first[first + b]; k < p->first[first + b + 1]; k++) {
            const Example *e = &d->ex[p->ex[k]];
            for (size_t i = 0; i < e->len; i++, t++) {
                tk[t] = e->ids[i];
                tg[t] = i + 1 < e->len ? e->labels[i + 1] : -1;
                ps[t] = (int)i;
            }
            *n_predicted += e->n_predicted;
        }
        for (size_t i = 0; t < T; i++, t++) tk[t] = 0, tg[t] = -1, ps[t] = (int)i;
    }
    return T;
}

// ---- preview -------------------------------------------------------------------------------------

void data_example_text(const Tokenizer *tok, const Example *e, char **out) {
    TokStream st;
    tok_stream_start(&st, tok, NULL, 0);
    bool open = false;
    for (size_t i = 0; i < e->len; i++) {
        const bool trained = i > 0 && e->labels[i] >= 0;  // the first token is never predicted
        if (trained != open) {
            const char *m = trained ? DATA_MARK_OPEN : DATA_MARK_CLOSE;
            memcpy(arraddnptr(*out, strlen(m)), m, strlen(m));
            open = trained;
        }
        tok_stream_push(&st, tok, e->ids[i], out);
    }
    tok_stream_finish(&st, out);
    if (open) memcpy(arraddnptr(*out, strlen(DATA_MARK_CLOSE)), DATA_MARK_CLOSE, strlen(DATA_MARK_CLOSE));
}
