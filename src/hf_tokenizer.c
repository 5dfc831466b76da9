// hf_tokenizer.c: loading and validating tokenizer.json (+ tokenizer_config.json); see
// hf_tokenizer.h. Encoding and decoding are in hf_tokenizer_run.c.
//
// Every value read from the file is checked for type and range before use; a message names the
// file and the JSON path of the field ("tok.json: model.merges[12]: ..."). Known keys are listed
// per component and an unknown key is an error: a field tokenizers would read and qlora would not
// could change the tokenization.
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "hf_tokenizer_impl.h"
#include "json.h"
#include "gpt2_tokenizer.h"

// Limits on untrusted files: beyond them a file is refused with the limit in the message.
#define HF_MAX_FILE_BYTES ((size_t)256 << 20)  // real tokenizer.json files are 2-35 MB
#define HF_MAX_VOCAB (1 << 24)
#define HF_MAX_TOKEN_BYTES 4096                // the longest real tokens are a few hundred bytes
#define HF_MAX_PATTERN_BYTES 4096
#define HF_MAX_DEPTH 8                         // Sequence inside Sequence
#define PATH_CAP 160

// What the tokenizers library's ByteLevel pre-tokenizer splits with (byte_level.rs), in
// Oniguruma syntax: hf_regex translates it like a pattern from the file.
static const char BYTE_LEVEL_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
// Rust regex's Unicode \w (single_word): Alphabetic, marks, decimal digits, connector
// punctuation, Join_Control; in PCRE2's own syntax.
static const char WORD_CHAR_PATTERN[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]";

// Loading state: the tokenizer being filled, the file name for messages, what the Metaspace
// rule below needs to know about earlier steps.
typedef struct {
    HfTokenizer *t;
    const char *file;
    Error *err;
    bool pre_seen, pre_inserts;  // a pre-tokenizer ran before this one / may insert characters
    bool any_normalized_added;   // an added token has normalized: true
    int n_added_new;             // added tokens outside the model's vocabulary
} Ld;

__attribute__((format(printf, 3, 4))) static bool fail(Ld *ld, const char *path, const char *fmt, ...) {
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return error_set(ld->err, "%s: %s: %s", ld->file, path, msg);
}

static const char *type_name(const cJSON *v) {
    if (!v) return "nothing";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    return "an object";
}

// "path.key" into buf (PATH_CAP bytes), for messages.
static const char *join(char *buf, const char *path, const char *key) {
    if (snprintf(buf, PATH_CAP, "%s.%s", path, key) >= PATH_CAP) strcpy(buf + PATH_CAP - 4, "...");  // cut
    return buf;
}

static bool valid_utf8(const char *s) {
    const size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq_len((const uint8_t *)s + i, n - i);
        if (!k) return false;
        i += k;
    }
    return true;
}

// Number of characters of valid UTF-8 s; *cp gets the first one's code point.
static size_t utf8_chars(const char *s, uint32_t *cp) {
    size_t n = 0;
    const size_t len = strlen(s);
    for (size_t i = 0; i < len; n++) {
        size_t k = utf8_seq_len((const uint8_t *)s + i, len - i);
        if (n == 0) {
            uint32_t c = (uint8_t)s[i] & (k == 1 ? 0x7F : k == 2 ? 0x1F : k == 3 ? 0x0F : 0x07);
            for (size_t j = 1; j < k; j++) c = c << 6 | ((uint8_t)s[i + j] & 0x3F);
            *cp = c;
        }
        i += k;
    }
    return n;
}

static bool check_keys(Ld *ld, const cJSON *obj, const char *path, const char *const *known) {
    for (const cJSON *kv = obj->child; kv; kv = kv->next) {
        bool ok = false;
        for (size_t k = 0; known[k]; k++) ok |= strcmp(kv->string, known[k]) == 0;
        if (!ok) {
            char list[300] = "";
            for (size_t k = 0; known[k]; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "", known[k]);
            return fail(ld, path, "unknown key '%.60s' (known: %s)", kv->string, list);
        }
    }
    return true;
}

// A string field: *out is NULL when it is absent or null and not required.
static bool get_string(Ld *ld, const cJSON *obj, const char *path, const char *key, bool required,
                       const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    char sub[PATH_CAP];
    *out = NULL;
    if ((!v || cJSON_IsNull(v)) && !required) return true;
    if (!cJSON_IsString(v))
        return fail(ld, join(sub, path, key), "expected a string, found %s", type_name(v));
    if (!valid_utf8(v->valuestring)) return fail(ld, join(sub, path, key), "the string is not valid UTF-8");
    if (strlen(v->valuestring) > HF_MAX_TOKEN_BYTES)
        return fail(ld, join(sub, path, key), "a string of %zu bytes (the limit is %d)", strlen(v->valuestring),
                    HF_MAX_TOKEN_BYTES);
    *out = v->valuestring;
    return true;
}

// A boolean field; absent or null gives dflt unless required.
static bool get_bool(Ld *ld, const cJSON *obj, const char *path, const char *key, bool required, bool dflt,
                     bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    char sub[PATH_CAP];
    *out = dflt;
    if ((!v || cJSON_IsNull(v)) && !required) return true;
    if (!cJSON_IsBool(v)) return fail(ld, join(sub, path, key), "expected true or false, found %s", type_name(v));
    *out = cJSON_IsTrue(v);
    return true;
}

// A string naming one character (Metaspace's replacement, Strip's content).
static bool get_char(Ld *ld, const cJSON *obj, const char *path, const char *key, uint32_t *out) {
    const char *s;
    if (!get_string(ld, obj, path, key, true, &s)) return false;
    char sub[PATH_CAP];
    if (utf8_chars(s, out) != 1) return fail(ld, join(sub, path, key), "expected one character, found '%.40s'", s);
    return true;
}

static bool get_type(Ld *ld, const cJSON *obj, const char *path, const char **type) {
    if (!cJSON_IsObject(obj)) return fail(ld, path, "expected an object, found %s", type_name(obj));
    return get_string(ld, obj, path, "type", true, type);
}

static bool unsupported(Ld *ld, const char *path, const char *type, const char *supported) {
    char sub[PATH_CAP];
    return fail(ld, join(sub, path, "type"), "unsupported '%.60s' (supported: %s)", type, supported);
}

// pattern: {"String": s} or {"Regex": r}, compiled into *re.
static bool load_pattern(Ld *ld, const cJSON *obj, const char *path, HfRegex **re) {
    char sub[PATH_CAP], kp[PATH_CAP], why[300];
    snprintf(sub, sizeof sub, "%s.pattern", path);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(obj, "pattern");
    if (!cJSON_IsObject(p) || cJSON_GetArraySize(p) != 1 ||
        (strcmp(p->child->string, "String") && strcmp(p->child->string, "Regex")))
        return fail(ld, sub, "expected {\"String\": ...} or {\"Regex\": ...}, found %s", type_name(p));
    const bool literal = !strcmp(p->child->string, "String");
    const cJSON *v = p->child;
    if (!cJSON_IsString(v) || !valid_utf8(v->valuestring))
        return fail(ld, join(kp, sub, v->string), "expected a UTF-8 string, found %s", type_name(v));
    if (strlen(v->valuestring) > HF_MAX_PATTERN_BYTES)
        return fail(ld, sub, "a pattern of %zu bytes (the limit is %d)", strlen(v->valuestring), HF_MAX_PATTERN_BYTES);
    if (!hf_regex_compile(re, v->valuestring, literal, why, sizeof why))
        return fail(ld, join(kp, sub, v->string), "%s", why);
    return true;
}

static bool load_vocab(Ld *ld, const cJSON *vocab) {
    HfTokenizer *t = ld->t;
    if (!cJSON_IsObject(vocab)) return fail(ld, "model.vocab", "expected an object, found %s", type_name(vocab));
    const int n = cJSON_GetArraySize(vocab);
    if (n <= 0 || n > HF_MAX_VOCAB) return fail(ld, "model.vocab", "%d tokens (expected 1 to %d)", n, HF_MAX_VOCAB);
    t->n_model = n;
    t->vocab = xcalloc((size_t)n, sizeof(char *));
    for (const cJSON *kv = vocab->child; kv; kv = kv->next) {
        uint64_t id;
        if (!json_as_u64(kv, &id) || id >= (uint64_t)n)
            return fail(ld, "model.vocab", "token '%.40s': id must be an integer in [0, %d] (ids are 0..n-1)",
                        kv->string, n - 1);
        if (t->vocab[id])
            return fail(ld, "model.vocab", "id %d is used by both '%.40s' and '%.40s'", (int)id, t->vocab[id],
                        kv->string);
        if (!valid_utf8(kv->string) || strlen(kv->string) > HF_MAX_TOKEN_BYTES)
            return fail(ld, "model.vocab", "token with id %d: not valid UTF-8 or longer than %d bytes", (int)id,
                        HF_MAX_TOKEN_BYTES);
        t->vocab[id] = xstrdup(kv->string);
        shput(t->model_map, kv->string, (int)id);
    }
    return true;
}

// One merge: merges[i] as "a b" or ["a", "b"] (the form of merges[0]); fills the ids.
static bool merge_parts(Ld *ld, const cJSON *m, size_t i, bool pairs, int ids[3]) {
    char path[PATH_CAP], a[HF_MAX_TOKEN_BYTES + 1], b[HF_MAX_TOKEN_BYTES + 1];
    snprintf(path, sizeof path, "model.merges[%zu]", i);
    if (pairs) {
        if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) != 2 || !cJSON_IsString(m->child) ||
            !cJSON_IsString(m->child->next))
            return fail(ld, path, "expected a pair [\"a\", \"b\"] like merges[0], found %s", type_name(m));
        if (strlen(m->child->valuestring) > HF_MAX_TOKEN_BYTES || strlen(m->child->next->valuestring) > HF_MAX_TOKEN_BYTES)
            return fail(ld, path, "a part longer than %d bytes", HF_MAX_TOKEN_BYTES);
        strcpy(a, m->child->valuestring);
        strcpy(b, m->child->next->valuestring);
    } else {
        if (!cJSON_IsString(m)) return fail(ld, path, "expected a string \"a b\" like merges[0], found %s", type_name(m));
        const char *s = m->valuestring, *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return fail(ld, path, "'%.60s': expected two parts separated by one space", s);
        if ((size_t)(sp - s) > HF_MAX_TOKEN_BYTES || strlen(sp + 1) > HF_MAX_TOKEN_BYTES)
            return fail(ld, path, "a part longer than %d bytes", HF_MAX_TOKEN_BYTES);
        memcpy(a, s, (size_t)(sp - s));
        a[sp - s] = '\0';
        strcpy(b, sp + 1);
    }
    char ab[2 * HF_MAX_TOKEN_BYTES + 1];
    snprintf(ab, sizeof ab, "%s%s", a, b);
    const char *parts[3] = {a, b, ab};
    for (int k = 0; k < 3; k++) {
        ptrdiff_t at = shgeti(ld->t->model_map, parts[k]);
        if (at < 0)
            return fail(ld, path, "'%.40s' + '%.40s': '%.80s' is not in model.vocab", a, b, parts[k]);
        ids[k] = ld->t->model_map[at].value;
    }
    return true;
}

static bool load_merges(Ld *ld, const cJSON *merges) {
    if (!cJSON_IsArray(merges)) return fail(ld, "model.merges", "expected an array, found %s", type_name(merges));
    const int n = cJSON_GetArraySize(merges);
    if (n > HF_MAX_VOCAB) return fail(ld, "model.merges", "%d merges (the limit is %d)", n, HF_MAX_VOCAB);
    const bool pairs = n > 0 && cJSON_IsArray(merges->child);
    size_t i = 0;
    bool ok = true;
    for (const cJSON *m = merges->child; ok && m; m = m->next, i++) {
        int ids[3];
        ok = merge_parts(ld, m, i, pairs, ids);
        if (ok && !bpe_merges_add(ld->t->merges, ids[0], ids[1], ids[2], (int)i)) {
            char path[PATH_CAP];
            snprintf(path, sizeof path, "model.merges[%zu]", i);
            ok = fail(ld, path, "the pair ('%.40s', '%.40s') appears twice (tokenizers would keep the last rank)",
                      ld->t->vocab[ids[0]], ld->t->vocab[ids[1]]);
        }
    }
    return ok;
}

// The BPE options that change nothing when null/0 and are refused otherwise.
static bool check_model_options(Ld *ld, const cJSON *m) {
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (d && !cJSON_IsNull(d)) {
        if (!cJSON_IsNumber(d) || !(d->valuedouble >= 0 && d->valuedouble <= 1))
            return fail(ld, "model.dropout", "expected null or a number in [0, 1], found %s", type_name(d));
        if (d->valuedouble != 0)
            return fail(ld, "model.dropout", "unsupported %g (BPE dropout samples merges at random; "
                                             "supported: null or 0)", d->valuedouble);
    }
    // Qwen2's files say "" (transformers' converter): an empty affix changes nothing either
    static const char *const AFFIXES[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, AFFIXES[k]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !v->valuestring[0])) {
            char path[PATH_CAP];
            snprintf(path, sizeof path, "model.%s", AFFIXES[k]);
            return fail(ld, path, "unsupported value, %s%s%.20s%s (supported: null or \"\")", type_name(v),
                        cJSON_IsString(v) ? " '" : "", cJSON_IsString(v) ? v->valuestring : "", cJSON_IsString(v) ? "'" : "");
        }
    }
    return true;
}

static bool load_model(Ld *ld, const cJSON *m) {
    static const char *const KEYS[] = {"type", "dropout", "unk_token", "continuing_subword_prefix",
                                       "end_of_word_suffix", "fuse_unk", "byte_fallback", "ignore_merges",
                                       "vocab", "merges", NULL};
    HfTokenizer *t = ld->t;
    if (!cJSON_IsObject(m)) return fail(ld, "model", "expected an object, found %s", type_name(m));
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(m, "type");
    if (type && (!cJSON_IsString(type) || strcmp(type->valuestring, "BPE")))
        return unsupported(ld, "model", cJSON_IsString(type) ? type->valuestring : type_name(type), "BPE");
    if (!type && !cJSON_GetObjectItemCaseSensitive(m, "merges"))
        return fail(ld, "model", "no \"type\" and no \"merges\" (only BPE models are supported)");
    if (!check_keys(ld, m, "model", KEYS) || !check_model_options(ld, m) ||
        !get_bool(ld, m, "model", "fuse_unk", false, false, &t->fuse_unk) ||
        !get_bool(ld, m, "model", "byte_fallback", false, false, &t->byte_fallback) ||
        !get_bool(ld, m, "model", "ignore_merges", false, false, &t->ignore_merges) ||
        !load_vocab(ld, cJSON_GetObjectItemCaseSensitive(m, "vocab")))
        return false;
    const char *unk;
    if (!get_string(ld, m, "model", "unk_token", false, &unk)) return false;
    t->model_unk = -1;
    if (unk) {
        if (shgeti(t->model_map, unk) < 0)
            return fail(ld, "model.unk_token", "'%.40s' is not in model.vocab", unk);
        t->model_unk = shget(t->model_map, unk);
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_token[b] = shgeti(t->model_map, name) >= 0 ? shget(t->model_map, name) : -1;
    }
    return load_merges(ld, cJSON_GetObjectItemCaseSensitive(m, "merges"));
}

// A loader of one component at a path, recursing through Sequence at depth + 1.
typedef bool (*LoadFn)(Ld *ld, const cJSON *v, const char *path, int depth);

// A Sequence {type, <key>: [...]}: each member loaded by fn, in order (flattened).
static bool load_sequence(Ld *ld, const cJSON *v, const char *path, const char *key, int depth, LoadFn fn) {
    const char *const keys[] = {"type", key, NULL};
    char kp[PATH_CAP];
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(v, key);
    if (depth >= HF_MAX_DEPTH) return fail(ld, path, "Sequences nested deeper than %d", HF_MAX_DEPTH);
    if (!check_keys(ld, v, path, keys)) return false;
    if (!cJSON_IsArray(list)) return fail(ld, join(kp, path, key), "expected an array, found %s", type_name(list));
    int i = 0;
    for (const cJSON *c = list->child; c; c = c->next, i++) {
        char sub[PATH_CAP];
        snprintf(sub, sizeof sub, "%s.%s[%d]", path, key, i);
        if (!fn(ld, c, sub, depth + 1)) return false;
    }
    return true;
}

// One normalizer (recursing into Sequence), appended to t->norm.
static bool load_normalizer(Ld *ld, const cJSON *v, const char *path, int depth) {
    static const char *const K_NFC[] = {"type", NULL}, *const K_PREPEND[] = {"type", "prepend", NULL},
                             *const K_REPLACE[] = {"type", "pattern", "content", NULL};
    const char *type, *s;
    if (!get_type(ld, v, path, &type)) return false;
    HfNormStep st = {0};
    if (!strcmp(type, "NFC")) {
        if (!check_keys(ld, v, path, K_NFC)) return false;
        st.kind = HF_NORM_NFC;
    } else if (!strcmp(type, "Prepend")) {
        if (!check_keys(ld, v, path, K_PREPEND) || !get_string(ld, v, path, "prepend", true, &s)) return false;
        st = (HfNormStep){HF_NORM_PREPEND, xstrdup(s), NULL};
    } else if (!strcmp(type, "Replace")) {
        if (!check_keys(ld, v, path, K_REPLACE) || !get_string(ld, v, path, "content", true, &s) ||
            !load_pattern(ld, v, path, &st.re))
            return false;
        st.kind = HF_NORM_REPLACE;
        st.text = xstrdup(s);
    } else if (!strcmp(type, "Sequence")) {
        return load_sequence(ld, v, path, "normalizers", depth, load_normalizer);
    } else {
        return unsupported(ld, path, type, "NFC, Prepend, Replace, Sequence");
    }
    arrput(ld->t->norm, st);
    return true;
}

// Metaspace's fields, as a pre-tokenizer and as a decoder (metaspace.rs).
static bool load_metaspace(Ld *ld, const cJSON *v, const char *path, uint32_t *repl, HfPrependScheme *scheme,
                           bool *split) {
    static const char *const KEYS[] = {"type", "replacement", "prepend_scheme", "split", "add_prefix_space",
                                       "str_rep", NULL};
    const char *s, *str_rep;
    char kp[PATH_CAP];
    bool aps;
    if (!check_keys(ld, v, path, KEYS) || !get_char(ld, v, path, "replacement", repl) ||
        !get_string(ld, v, path, "prepend_scheme", false, &s) || !get_bool(ld, v, path, "split", false, true, split) ||
        !get_bool(ld, v, path, "add_prefix_space", false, true, &aps) ||
        !get_string(ld, v, path, "str_rep", false, &str_rep))
        return false;
    *scheme = HF_PREPEND_ALWAYS;  // tokenizers' default when the field is absent
    if (s && !strcmp(s, "first")) *scheme = HF_PREPEND_FIRST;
    else if (s && !strcmp(s, "never")) *scheme = HF_PREPEND_NEVER;
    else if (s && strcmp(s, "always"))
        return fail(ld, join(kp, path, "prepend_scheme"), "unsupported '%.40s' (supported: always, first, never)", s);
    if (!aps && *scheme != HF_PREPEND_NEVER)  // tokenizers refuses the same contradiction
        return fail(ld, join(kp, path, "add_prefix_space"), "false contradicts prepend_scheme '%s' (tokenizers "
                    "refuses it too)", s ? s : "always, the default when it is absent");
    return true;
}

// Metaspace with prepend_scheme "first" prepends only to the piece that starts at byte 0 of the
// input. qlora knows that exactly while no character was inserted before a split: refuse the
// layouts where an earlier step could have (docs/formats.md, "tokenizer.json").
static bool check_metaspace_first(Ld *ld, const char *path) {
    const bool has_norm = arrlenu(ld->t->norm) > 0;
    if (ld->pre_inserts || (has_norm && (ld->pre_seen || ld->any_normalized_added)))
        return fail(ld, path, "prepend_scheme 'first' after a %s: unsupported (qlora tracks the "
                              "original offset only through steps that insert no characters)",
                    ld->pre_inserts ? "pre-tokenizer that inserts characters" : "normalizer and a split");
    return true;
}

static bool load_split(Ld *ld, const cJSON *v, const char *path, HfPreStep *st) {
    static const char *const KEYS[] = {"type", "pattern", "behavior", "invert", NULL};
    static const char *const BEHAVIORS[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                            "Contiguous"};
    const char *b;
    char kp[PATH_CAP];
    if (!check_keys(ld, v, path, KEYS) || !get_string(ld, v, path, "behavior", true, &b) ||
        !get_bool(ld, v, path, "invert", true, false, &st->invert))
        return false;
    int k = 0;
    while (k < 5 && strcmp(b, BEHAVIORS[k])) k++;
    if (k == 5)
        return fail(ld, join(kp, path, "behavior"), "unsupported '%.40s' (supported: Removed, Isolated, "
                    "MergedWithPrevious, MergedWithNext, Contiguous)", b);
    st->kind = HF_PRE_SPLIT;
    st->behavior = (HfSplitBehavior)k;  // BEHAVIORS is in the enum's order
    return load_pattern(ld, v, path, &st->re);
}

// One pre-tokenizer (recursing into Sequence), appended to t->pre.
static bool load_pre_tokenizer(Ld *ld, const cJSON *v, const char *path, int depth) {
    static const char *const K_DIGITS[] = {"type", "individual_digits", NULL},
                             *const K_BYTE[] = {"type", "add_prefix_space", "trim_offsets", "use_regex", NULL};
    const char *type;
    bool trim;
    if (!get_type(ld, v, path, &type)) return false;
    HfPreStep st = {0};
    if (!strcmp(type, "Sequence")) return load_sequence(ld, v, path, "pretokenizers", depth, load_pre_tokenizer);
    if (!strcmp(type, "Split")) {
        if (!load_split(ld, v, path, &st)) return false;
    } else if (!strcmp(type, "Digits")) {
        if (!check_keys(ld, v, path, K_DIGITS) ||
            !get_bool(ld, v, path, "individual_digits", false, false, &st.individual_digits))
            return false;
        st.kind = HF_PRE_DIGITS;
    } else if (!strcmp(type, "ByteLevel")) {
        if (!check_keys(ld, v, path, K_BYTE) || !get_bool(ld, v, path, "add_prefix_space", true, false, &st.add_prefix_space) ||
            !get_bool(ld, v, path, "trim_offsets", false, true, &trim) ||  // offsets only: no effect on ids
            !get_bool(ld, v, path, "use_regex", false, true, &st.use_regex))
            return false;
        st.kind = HF_PRE_BYTE_LEVEL;
    } else if (!strcmp(type, "Metaspace")) {
        if (!load_metaspace(ld, v, path, &st.repl, &st.scheme, &st.split)) return false;
        if (st.scheme == HF_PREPEND_FIRST && !check_metaspace_first(ld, path)) return false;
        st.kind = HF_PRE_METASPACE;
    } else {
        return unsupported(ld, path, type, "Sequence, Split, Digits, ByteLevel, Metaspace");
    }
    ld->pre_seen = true;
    // ByteLevel turns one multi-byte character into several, all at the same original offset
    ld->pre_inserts |= st.kind == HF_PRE_BYTE_LEVEL || (st.kind == HF_PRE_METASPACE && st.scheme != HF_PREPEND_NEVER);
    arrput(ld->t->pre, st);
    return true;
}

// TemplateProcessing's special_tokens entry `name`: its ids appended to *items.
static bool template_special(Ld *ld, const cJSON *specials, const char *name, const char *path, int **items) {
    const cJSON *e = cJSON_IsObject(specials) ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
    const cJSON *ids = e ? cJSON_GetObjectItemCaseSensitive(e, "ids") : NULL;
    char ip[PATH_CAP];
    snprintf(ip, sizeof ip, "post_processor.special_tokens.%.40s.ids", name);
    if (!e) return fail(ld, path, "special token '%.40s' is not in post_processor.special_tokens", name);
    if (!cJSON_IsArray(ids)) return fail(ld, ip, "expected an array, found %s", type_name(ids));
    for (const cJSON *c = ids->child; c; c = c->next) {
        uint64_t id;
        if (!json_as_u64(c, &id) || id >= (uint64_t)ld->t->n_total)
            return fail(ld, ip, "expected ids in [0, %d]", ld->t->n_total - 1);
        arrput(*items, (int)id);
    }
    return true;
}

// TemplateProcessing: the "single" template ($A and special tokens); "pair" is not used by qlora.
static bool load_template(Ld *ld, const cJSON *v, const char *path) {
    char kp[PATH_CAP];  // "path.key" for messages
    static const char *const KEYS[] = {"type", "single", "pair", "special_tokens", NULL};
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(v, "single"),
                *specials = cJSON_GetObjectItemCaseSensitive(v, "special_tokens");
    if (!check_keys(ld, v, path, KEYS)) return false;
    if (!cJSON_IsArray(single)) return fail(ld, join(kp, path, "single"), "expected an array, found %s", type_name(single));
    if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(v, "pair")))
        return fail(ld, join(kp, path, "pair"), "expected an array");
    HfTemplate tp = {0};
    int i = 0;
    for (const cJSON *it = single->child; it; it = it->next, i++) {
        char sub[PATH_CAP];
        snprintf(sub, sizeof sub, "%s.single[%d]", path, i);
        const cJSON *body = cJSON_IsObject(it) && cJSON_GetArraySize(it) == 1 ? it->child : NULL;
        const cJSON *id = body ? cJSON_GetObjectItemCaseSensitive(body, "id") : NULL;
        bool ok = body && cJSON_IsString(id);
        if (ok && !strcmp(body->string, "Sequence")) {
            if (strcmp(id->valuestring, "A")) {
                arrfree(tp.items);
                return fail(ld, sub, "Sequence '%.10s' in the single template (only A exists there)", id->valuestring);
            }
            arrput(tp.items, HF_TEMPLATE_SEQ);
        } else if (ok && !strcmp(body->string, "SpecialToken")) {
            ok = template_special(ld, specials, id->valuestring, sub, &tp.items);
            if (!ok) {
                arrfree(tp.items);
                return false;
            }
        } else {
            arrfree(tp.items);
            return fail(ld, sub, "expected {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": {\"id\": \"A\"}}");
        }
    }
    arrput(ld->t->post, tp);
    return true;
}

// One post-processor (recursing into Sequence), appended to t->post when it changes ids.
static bool load_post(Ld *ld, const cJSON *v, const char *path, int depth) {
    static const char *const K_BYTE[] = {"type", "add_prefix_space", "trim_offsets", "use_regex", NULL};
    const char *type;
    if (!get_type(ld, v, path, &type)) return false;
    if (!strcmp(type, "TemplateProcessing")) {
        if (arrlenu(ld->t->post))  // the tokenizers library aborts on it
            return fail(ld, path, "a second TemplateProcessing: unsupported (one per post-processor)");
        return load_template(ld, v, path);
    }
    if (!strcmp(type, "ByteLevel")) return check_keys(ld, v, path, K_BYTE);  // offsets only: no ids change
    if (!strcmp(type, "Sequence")) return load_sequence(ld, v, path, "processors", depth, load_post);
    return unsupported(ld, path, type, "TemplateProcessing, ByteLevel, Sequence");
}

// Strip {content, start, stop}.
static bool load_strip(Ld *ld, const cJSON *v, const char *path, HfDecStep *st) {
    static const char *const KEYS[] = {"type", "content", "start", "stop", NULL};
    if (!check_keys(ld, v, path, KEYS) || !get_char(ld, v, path, "content", &st->ch)) return false;
    uint64_t n[2];
    char sub[PATH_CAP];
    static const char *const ENDS[] = {"start", "stop"};
    for (int k = 0; k < 2; k++)
        if (!json_as_u64(cJSON_GetObjectItemCaseSensitive(v, ENDS[k]), &n[k]) || n[k] > HF_MAX_TOKEN_BYTES)
            return fail(ld, join(sub, path, ENDS[k]), "expected an integer in [0, %d]", HF_MAX_TOKEN_BYTES);
    st->kind = HF_DEC_STRIP;
    st->start = n[0];
    st->stop = n[1];
    return true;
}

// One decoder (recursing into Sequence), appended to t->dec.
static bool load_decoder(Ld *ld, const cJSON *v, const char *path, int depth) {
    static const char *const K_TYPE[] = {"type", NULL},
                             *const K_BYTE[] = {"type", "add_prefix_space", "trim_offsets", "use_regex", NULL},
                             *const K_REPLACE[] = {"type", "pattern", "content", NULL};
    const char *type, *s;
    bool split;
    if (!get_type(ld, v, path, &type)) return false;
    HfDecStep st = {0};
    if (!strcmp(type, "Sequence")) return load_sequence(ld, v, path, "decoders", depth, load_decoder);
    if (!strcmp(type, "ByteLevel")) {
        if (!check_keys(ld, v, path, K_BYTE)) return false;  // its options concern offsets only
        st.kind = HF_DEC_BYTE_LEVEL;
    } else if (!strcmp(type, "Replace")) {
        if (!check_keys(ld, v, path, K_REPLACE) || !get_string(ld, v, path, "content", true, &s) ||
            !load_pattern(ld, v, path, &st.re))
            return false;
        st.kind = HF_DEC_REPLACE;
        st.content = xstrdup(s);
    } else if (!strcmp(type, "ByteFallback") || !strcmp(type, "Fuse")) {
        if (!check_keys(ld, v, path, K_TYPE)) return false;
        st.kind = !strcmp(type, "Fuse") ? HF_DEC_FUSE : HF_DEC_BYTE_FALLBACK;
    } else if (!strcmp(type, "Strip")) {
        if (!load_strip(ld, v, path, &st)) return false;
    } else if (!strcmp(type, "Metaspace")) {
        if (!load_metaspace(ld, v, path, &st.ch, &st.scheme, &split)) return false;
        st.kind = HF_DEC_METASPACE;
    } else {
        return unsupported(ld, path, type, "ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence");
    }
    arrput(ld->t->dec, st);
    return true;
}

// One entry of added_tokens, as read (before the matcher sets are built).
typedef struct {
    const char *content;
    int id;
    bool single_word, lstrip, rstrip, normalized, special;
} AddedRec;

// added_tokens[i]: its fields, and the id tokenizers gives it (serialization.rs + add_tokens in
// added_vocabulary.rs: the id of the same string in the model's vocabulary, else the next one
// after it), which the file must state.
static bool load_added_one(Ld *ld, const cJSON *e, int i, AddedRec *r) {
    char kp[PATH_CAP];  // "path.key" for messages
    static const char *const KEYS[] = {"id", "content", "single_word", "lstrip", "rstrip", "normalized",
                                       "special", NULL};
    HfTokenizer *t = ld->t;
    char path[PATH_CAP];
    snprintf(path, sizeof path, "added_tokens[%d]", i);
    if (!cJSON_IsObject(e)) return fail(ld, path, "expected an object, found %s", type_name(e));
    uint64_t id;
    if (!check_keys(ld, e, path, KEYS) || !get_string(ld, e, path, "content", true, &r->content) ||
        !get_bool(ld, e, path, "single_word", true, false, &r->single_word) ||
        !get_bool(ld, e, path, "lstrip", true, false, &r->lstrip) ||
        !get_bool(ld, e, path, "rstrip", true, false, &r->rstrip) ||
        !get_bool(ld, e, path, "normalized", true, false, &r->normalized) ||
        !get_bool(ld, e, path, "special", true, false, &r->special))
        return false;
    if (!json_as_u64(cJSON_GetObjectItemCaseSensitive(e, "id"), &id))
        return fail(ld, join(kp, path, "id"), "expected a non-negative integer");
    if (!r->content[0]) return fail(ld, join(kp, path, "content"), "is empty");
    if (shgeti(t->added_map, r->content) >= 0)
        return fail(ld, path, "'%.40s' appears twice in added_tokens", r->content);
    const bool in_model = shgeti(t->model_map, r->content) >= 0;
    const int expect = in_model ? shget(t->model_map, r->content) : t->n_model + ld->n_added_new;
    if (id != (uint64_t)expect)
        return fail(ld, join(kp, path, "id"), "'%.40s' has id %llu, but tokenizers gives it %d (%s)", r->content,
                    (unsigned long long)id, expect,
                    in_model ? "its id in model.vocab" : "the next id after model.vocab and the added tokens before it");
    r->id = expect;
    if (!in_model) {
        arrput(t->added_content, xstrdup(r->content));
        ld->n_added_new++;
    }
    shput(t->added_map, r->content, expect);
    ld->any_normalized_added |= r->normalized;
    return true;
}

static int added_cmp(const void *pa, const void *pb) {
    const HfAdded *a = pa, *b = pb;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;  // longest first
    return memcmp(a->pattern, b->pattern, a->len);
}

// Bucket the set's tokens by first byte, longest first; two tokens matching the same text
// are refused (tokenizers' matcher refuses to build then).
static bool finish_added_set(Ld *ld, HfAddedSet *set) {
    for (int b = 0; b < 256; b++) {
        HfAdded *v = set->by_byte[b];
        if (!v) continue;  // qsort(NULL, 0, ...) is undefined
        qsort(v, arrlenu(v), sizeof *v, added_cmp);
        for (size_t k = 1; k < arrlenu(v); k++)
            if (v[k].len == v[k - 1].len && !memcmp(v[k].pattern, v[k - 1].pattern, v[k].len))
                return fail(ld, "added_tokens", "ids %d and %d match the same text '%.40s' after normalization",
                            v[k - 1].id, v[k].id, v[k].pattern);
    }
    return true;
}

// Token strings of every id, the special flags and the matcher sets, from the records.
static bool index_added(Ld *ld, const AddedRec *recs, size_t n) {
    HfTokenizer *t = ld->t;
    char why[300];
    t->n_total = t->n_model + ld->n_added_new;
    t->token_str = xcalloc((size_t)t->n_total, sizeof(char *));
    t->is_special = xcalloc((size_t)t->n_total, sizeof(bool));
    t->skip_special = xcalloc((size_t)t->n_total, sizeof(bool));
    for (int i = 0; i < t->n_model; i++) t->token_str[i] = t->vocab[i];
    for (int i = t->n_model; i < t->n_total; i++) t->token_str[i] = t->added_content[i - t->n_model];
    for (size_t k = 0; k < n; k++) {
        const AddedRec *r = &recs[k];
        const char *pattern = t->token_str[r->id];
        if (r->normalized && arrlenu(t->norm)) {  // matched, and decoded, in normalized form
            char *norm = NULL;
            if (!hf_normalize(t, r->content, strlen(r->content), &norm, why, sizeof why)) {
                arrfree(norm);
                return fail(ld, "added_tokens", "normalizing '%.40s': %s", r->content, why);
            }
            arrput(norm, '\0');
            if (!norm[0] || strlen(norm) != arrlenu(norm) - 1) {
                arrfree(norm);
                return fail(ld, "added_tokens", "'%.40s' normalizes to an empty string", r->content);
            }
            arrput(t->normalized_str, norm);
            pattern = t->token_str[r->id] = norm;
        }
        HfAdded a = {pattern, strlen(pattern), r->id, r->single_word, r->lstrip, r->rstrip};
        HfAddedSet *set = r->normalized ? &t->norm_set : &t->raw_set;
        arrput(set->by_byte[(uint8_t)pattern[0]], a);
        set->n++;
        t->is_special[r->id] = r->special;
    }
    // skip_special drops every id whose token string is the content of a special added token
    // (tokenizers checks the string: a model token spelled like one is dropped too)
    HfStrInt *specials = NULL;
    sh_new_arena(specials);
    for (size_t k = 0; k < n; k++)
        if (recs[k].special) shput(specials, recs[k].content, 1);
    for (int i = 0; i < t->n_total; i++) t->skip_special[i] = shgeti(specials, t->token_str[i]) >= 0;
    shfree(specials);
    return finish_added_set(ld, &t->raw_set) && finish_added_set(ld, &t->norm_set);
}

static bool load_added(Ld *ld, const cJSON *list) {
    if (!list || cJSON_IsNull(list)) return index_added(ld, NULL, 0);
    if (!cJSON_IsArray(list)) return fail(ld, "added_tokens", "expected an array, found %s", type_name(list));
    const int n = cJSON_GetArraySize(list);
    if (n > HF_MAX_VOCAB) return fail(ld, "added_tokens", "%d entries (the limit is %d)", n, HF_MAX_VOCAB);
    AddedRec *recs = xcalloc((size_t)n + 1, sizeof *recs);
    int i = 0;
    bool ok = true;
    for (const cJSON *e = list->child; ok && e; e = e->next, i++) ok = load_added_one(ld, e, i, &recs[i]);
    ok = ok && index_added(ld, recs, (size_t)n);
    free(recs);
    return ok;
}

int hf_tok_token_to_id(const HfTokenizer *t, const char *token) {
    HfTokenizer *m = (HfTokenizer *)t;  // stb_ds lookups do not modify the maps
    if (shgeti(m->added_map, token) >= 0) return shget(m->added_map, token);
    return shgeti(m->model_map, token) >= 0 ? shget(m->model_map, token) : -1;
}

// tokenizer_config.json's <key> ("bos_token", ...): absent or null leaves *id; a string, or an
// object with a "content" string (transformers' AddedToken form), must be a token.
static bool config_token(Ld *ld, const cJSON *cfg, const char *key, int *id) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v)) return true;
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v))
        return fail(ld, key, "expected a string or {\"content\": string}, found %s", type_name(v));
    const int found = hf_tok_token_to_id(ld->t, v->valuestring);
    if (found < 0) return fail(ld, key, "'%.60s' is not a token of the tokenizer", v->valuestring);
    *id = found;
    return true;
}

static bool load_config(Ld *ld, const char *text, size_t len) {
    HfTokenizer *t = ld->t;
    cJSON *cfg = json_parse(text, len, 0, ld->file, ld->err);
    if (!cfg) return false;
    bool ok = cJSON_IsObject(cfg) || error_set(ld->err, "%s: expected a JSON object", ld->file);
    ok = ok && config_token(ld, cfg, "bos_token", &t->bos) && config_token(ld, cfg, "eos_token", &t->eos) &&
         config_token(ld, cfg, "unk_token", &t->unk) && config_token(ld, cfg, "pad_token", &t->pad);
    const cJSON *ct = ok ? cJSON_GetObjectItemCaseSensitive(cfg, "chat_template") : NULL;
    if (cJSON_IsString(ct)) t->chat_template = xstrdup(ct->valuestring);
    cJSON_Delete(cfg);
    return ok;
}

// The top level: every component in the order its checks need (added tokens use the
// normalizer; the Metaspace rule and the template's ids use the added tokens).
static bool load_top(Ld *ld, const cJSON *root) {
    static const char *const KEYS[] = {"version", "truncation", "padding", "added_tokens", "normalizer",
                                       "pre_tokenizer", "post_processor", "decoder", "model", NULL};
    if (!cJSON_IsObject(root)) return fail(ld, "(top level)", "expected an object, found %s", type_name(root));
    if (!check_keys(ld, root, "(top level)", KEYS)) return false;
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
    if (ver && (!cJSON_IsString(ver) || strcmp(ver->valuestring, "1.0")))
        return fail(ld, "version", "unsupported %s (supported: \"1.0\")", cJSON_IsString(ver) ? ver->valuestring : type_name(ver));
    static const char *const OFF[] = {"truncation", "padding"};
    for (int k = 0; k < 2; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, OFF[k]);
        if (v && !cJSON_IsNull(v))
            return fail(ld, OFF[k], "unsupported value, %s (supported: null; qlora cuts and pads batches itself)",
                        type_name(v));
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!model) return fail(ld, "model", "missing");
    if (!load_model(ld, model)) return false;
    const cJSON *parts[4];
    static const char *const NAMES[] = {"normalizer", "pre_tokenizer", "post_processor", "decoder"};
    for (int k = 0; k < 4; k++) {
        parts[k] = cJSON_GetObjectItemCaseSensitive(root, NAMES[k]);
        if (parts[k] && cJSON_IsNull(parts[k])) parts[k] = NULL;
    }
    ld->t->has_decoder = parts[3] != NULL;
    return (!parts[0] || load_normalizer(ld, parts[0], "normalizer", 0)) &&
           load_added(ld, cJSON_GetObjectItemCaseSensitive(root, "added_tokens")) &&
           (!parts[1] || load_pre_tokenizer(ld, parts[1], "pre_tokenizer", 0)) &&
           (!parts[2] || load_post(ld, parts[2], "post_processor", 0)) &&
           (!parts[3] || load_decoder(ld, parts[3], "decoder", 0));
}

// Without tokenizer_config.json: bos is what the first template puts before the text.
static void guess_bos(HfTokenizer *t) {
    if (!arrlenu(t->post)) return;
    const int *items = t->post[0].items;
    if (arrlenu(items) >= 2 && items[0] != HF_TEMPLATE_SEQ && items[1] == HF_TEMPLATE_SEQ) t->bos = items[0];
}

static bool check_file_size(size_t len, const char *name, Error *err) {
    if (len <= HF_MAX_FILE_BYTES) return true;
    return error_set(err, "%s: %zu bytes; the largest tokenizer file accepted is %zu MiB", name, len,
                     HF_MAX_FILE_BYTES >> 20);
}

bool hf_tok_load_memory(HfTokenizer **out, const char *json, size_t json_len, const char *json_name,
                        const char *config, size_t config_len, const char *config_name, Error *err) {
    *out = NULL;
    if (!check_file_size(json_len, json_name, err) || (config && !check_file_size(config_len, config_name, err)))
        return false;
    HfTokenizer *t = xcalloc(1, sizeof *t);
    sh_new_arena(t->model_map);
    sh_new_arena(t->added_map);
    sh_new_arena(t->cache);
    t->merges = bpe_merges_create();
    t->bos = t->eos = t->pad = -1;
    Ld ld = {.t = t, .file = json_name, .err = err};
    cJSON *root = json_parse(json, json_len, 0, json_name, err);
    bool ok = root && load_top(&ld, root);
    cJSON_Delete(root);
    if (ok) {
        t->unk = t->model_unk;
        guess_bos(t);
        for (int k = 0; k < 256; k++) t->char_byte[k] = -1;
        for (int k = 256; k < 324; k++) t->char_byte[k] = -1;
        for (int b = 0; b < 256; b++) {  // GPT-2's bytes_to_unicode (gpt2_tokenizer.h) and its inverse
            uint32_t cp;
            t->byte_sym_len[b] = (uint8_t)tok_byte_symbol(b, t->byte_sym[b]);
            utf8_chars(t->byte_sym[b], &cp);
            t->char_byte[cp] = (int16_t)b;
        }
        t->word_char = hf_regex_compile_native(WORD_CHAR_PATTERN);
        char why[300];
        CHECK(hf_regex_compile(&t->byte_level_re, BYTE_LEVEL_PATTERN, false, why, sizeof why));
    }
    if (ok && config) {
        Ld lc = {.t = t, .file = config_name, .err = err};
        t->bos = t->eos = t->pad = -1;  // the config, when given, is the authority
        ok = load_config(&lc, config, config_len);
    }
    if (!ok) {
        hf_tok_free(t);
        return false;
    }
    *out = t;
    return true;
}

bool hf_tok_load(HfTokenizer **out, const char *json_path, const char *config_path, Error *err) {
    char *json = NULL, *config = NULL;
    size_t jlen = 0, clen = 0;
    *out = NULL;
    if (!file_read_all(json_path, &json, &jlen, err)) return false;
    if (config_path && !file_read_all(config_path, &config, &clen, err)) {
        free(json);
        return false;
    }
    bool ok = hf_tok_load_memory(out, json, jlen, json_path, config, clen, config_path, err);
    free(json);
    free(config);
    return ok;
}

void hf_tok_free(HfTokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_model && t->vocab; i++) free(t->vocab[i]);
    free(t->vocab);
    for (size_t i = 0; i < arrlenu(t->added_content); i++) free(t->added_content[i]);
    arrfree(t->added_content);
    for (size_t i = 0; i < arrlenu(t->normalized_str); i++) arrfree(t->normalized_str[i]);
    arrfree(t->normalized_str);
    free(t->token_str);
    free(t->is_special);
    free(t->skip_special);
    shfree(t->model_map);
    shfree(t->added_map);
    bpe_merges_free(t->merges);
    for (int b = 0; b < 256; b++) {
        arrfree(t->raw_set.by_byte[b]);
        arrfree(t->norm_set.by_byte[b]);
    }
    for (size_t i = 0; i < arrlenu(t->norm); i++) {
        free(t->norm[i].text);
        hf_regex_free(t->norm[i].re);
    }
    arrfree(t->norm);
    for (size_t i = 0; i < arrlenu(t->pre); i++) hf_regex_free(t->pre[i].re);
    arrfree(t->pre);
    for (size_t i = 0; i < arrlenu(t->dec); i++) {
        free(t->dec[i].content);
        hf_regex_free(t->dec[i].re);
    }
    arrfree(t->dec);
    for (size_t i = 0; i < arrlenu(t->post); i++) arrfree(t->post[i].items);
    arrfree(t->post);
    hf_regex_free(t->byte_level_re);
    hf_regex_free(t->word_char);
    for (ptrdiff_t i = 0; i < shlen(t->cache); i++) arrfree(t->cache[i].value);
    shfree(t->cache);
    free(t->chat_template);
    free(t);
}

void hf_tok_special_counts(const HfTokenizer *t, size_t *before, size_t *after) {
    *before = *after = 0;
    if (!arrlenu(t->post)) return;  // one template at most (load_post)
    const int *items = t->post[0].items;
    const size_t n = arrlenu(items);
    size_t first = n, last = n;
    for (size_t i = 0; i < n; i++)
        if (items[i] == HF_TEMPLATE_SEQ) {
            if (first == n) first = i;
            last = i;
        }
    if (first == n) {  // no $A: the text is dropped and every id is a special one
        *before = n;
        return;
    }
    *before = first;
    *after = n - 1 - last;
}

int hf_tok_vocab_size(const HfTokenizer *t) { return t->n_total; }
const char *hf_tok_id_to_token(const HfTokenizer *t, int id) {
    return id >= 0 && id < t->n_total ? t->token_str[id] : NULL;
}
bool hf_tok_is_special(const HfTokenizer *t, int id) { return id >= 0 && id < t->n_total && t->is_special[id]; }
int hf_tok_bos(const HfTokenizer *t) { return t->bos; }
int hf_tok_eos(const HfTokenizer *t) { return t->eos; }
int hf_tok_unk(const HfTokenizer *t) { return t->unk; }
int hf_tok_pad(const HfTokenizer *t) { return t->pad; }
const char *hf_tok_chat_template(const HfTokenizer *t) { return t->chat_template; }
