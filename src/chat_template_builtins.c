// chat_template_builtins.c: what chat templates call: the globals transformers and jinja2 give
// (raise_exception, strftime_now, namespace, range, dict), the methods of str, dict and loop
// that qlora runs, jinja2's filters and tests of the subset, and tojson as transformers
// defines it (json.dumps with ensure_ascii=False). Everything else a template can name is an
// error, at parse time for filters and tests, at run time for methods.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_template_impl.h"

// ---- arguments -----------------------------------------------------------------------------
// Refuse more than max_pos positional arguments or a keyword not in kw (NULL-terminated).
static void check_args(Render *r, const Node *at, const Args *a, const char *what, size_t max_pos,
                       const char *const *kw) {
    if (a->n_pos > max_pos)
        ct_fail(r, at, "%s takes at most %zu positional arguments, %zu given", what, max_pos, a->n_pos);
    for (size_t i = 0; i < a->n_kw; i++) {
        bool ok = false;
        for (size_t k = 0; kw && kw[k]; k++) {
            if (!ct_str_eq(a->kw_names[i], kw[k])) continue;
            ok = true;
            if (k < a->n_pos) ct_fail(r, at, "%s got '%s' twice", what, kw[k]);
        }
        if (!ok)
            ct_fail(r, at, "%s has no argument '%.*s'", what, (int)(a->kw_names[i].n > 40 ? 40 : a->kw_names[i].n),
                    a->kw_names[i].s);
    }
}

// Argument `pos` (positional) or `name` (keyword), or NULL.
static const Value *arg(const Args *a, size_t pos, const char *name) {
    if (pos < a->n_pos) return &a->pos[pos];
    for (size_t i = 0; name && i < a->n_kw; i++)
        if (ct_str_eq(a->kw_names[i], name)) return &a->kw_vals[i];
    return NULL;
}

// The argument as a string / an integer (a bool counts), or fail naming what it is for.
static Str want_str(Render *r, const Node *at, const Value *v, const char *what) {
    if (v->kind != V_STR) ct_fail(r, at, "%s must be a string, not a %s", what, ct_type_name(*v));
    return v->u.s;
}

static int64_t want_int(Render *r, const Node *at, const Value *v, const char *what) {
    if (v->kind != V_INT && v->kind != V_BOOL)
        ct_fail(r, at, "%s must be an integer, not a %s", what, ct_type_name(*v));
    return v->kind == V_INT ? v->u.i : v->u.b;
}

// A copy of s[0..n) as a string value.
static Value mk_str(Render *r, const Node *at, const char *s, size_t n) { return ct_str(ct_str_dup(r, at, s, n)); }

// ---- text helpers (Python's str methods; case mapping only for ASCII) ----------------------
static void need_ascii(Render *r, const Node *at, Str s, const char *what) {
    for (size_t i = 0; i < s.n; i++)
        if ((unsigned char)s.s[i] >= 0x80)
            ct_fail(r, at,
                    "%s of non-ASCII text is not supported (Python maps such letters by rules "
                    "qlora does not carry)",
                    what);
}

// ASCII case mapping and letters.
static char up(char c) { return c >= 'a' && c <= 'z' ? (char)(c - 32) : c; }
static char low(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }
static bool letter(char c) { return (c | 32) >= 'a' && (c | 32) <= 'z'; }

// mode: 'u' upper, 'l' lower, 't' str.title(), 'c' str.capitalize(), 'j' jinja2's title filter
static Value case_map(Render *r, const Node *at, Str s, char mode, const char *what) {
    need_ascii(r, at, s, what);
    char *o = ct_alloc(r, at, s.n + 1);
    bool prev = false; // title: the previous character was a letter (or, for 'j', not a separator)
    for (size_t i = 0; i < s.n; i++) {
        const char c = s.s[i];
        switch (mode) {
        case 'u': o[i] = up(c); break;
        case 'l': o[i] = low(c); break;
        case 'c': o[i] = i ? low(c) : up(c); break;
        case 't': o[i] = prev ? low(c) : up(c), prev = letter(c); break;
        default: {
            const bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || c == ' ' ||
                             (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x1F);
            o[i] = sep ? c : prev ? low(c) : up(c);
            prev = !sep;
        }
        }
    }
    return ct_str((Str){o, s.n});
}

// Is code point text s[i..] (one character) in the set `chars`?
static size_t char_len(Str s, size_t i) {
    const unsigned char c = (unsigned char)s.s[i];
    size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    return i + k > s.n ? s.n - i : k;
}

// Is the character s[i..i+k) in chars (a set of characters), or whitespace if chars is NULL?
static bool in_set(Str s, size_t i, size_t k, const Str *chars) {
    if (!chars) return ct_space_len(s.s + i, k) == k;
    for (size_t j = 0; j < chars->n; j += char_len(*chars, j))
        if (char_len(*chars, j) == k && memcmp(chars->s + j, s.s + i, k) == 0) return true;
    return false;
}

// str.strip / lstrip / rstrip (left, right) with chars (NULL: whitespace).
static Str strip(Render *r, const Node *at, Str s, const Str *chars, bool left, bool right) {
    ct_work(r, at, (s.n + 1) * (chars ? chars->n + 1 : 1));
    size_t b = 0, e = s.n;
    while (left && b < e && in_set(s, b, char_len(s, b), chars)) b += char_len(s, b);
    while (right && e > b) {
        size_t p = e - 1;
        while (p > b && ((unsigned char)s.s[p] & 0xC0) == 0x80) p--;
        if (!in_set(s, p, e - p, chars)) break;
        e = p;
    }
    return (Str){s.s + b, e - b};
}

// str.replace(old, new, count): count < 0 replaces all; an empty old matches around every character.
static Value str_replace(Render *r, const Node *at, Str s, Str old, Str neu, int64_t count) {
    Buf b = {0};
    size_t i = 0;
    for (int64_t done = 0; count < 0 || done < count; done++) {
        if (!old.n) { // "" matches before every character and at the end
            ct_buf_put(r, at, &b, neu.s, neu.n);
            if (i >= s.n) {
                i = s.n + 1;
                break;
            }
            const size_t k = char_len(s, i);
            ct_buf_put(r, at, &b, s.s + i, k);
            i += k;
            continue;
        }
        const char *hit = memmem(s.s + i, s.n - i, old.s, old.n);
        ct_work(r, at, (size_t)((hit ? hit : s.s + s.n) - (s.s + i)));
        if (!hit) break;
        ct_buf_put(r, at, &b, s.s + i, (size_t)(hit - s.s) - i);
        ct_buf_put(r, at, &b, neu.s, neu.n);
        i = (size_t)(hit - s.s) + old.n;
    }
    if (i < s.n) ct_buf_put(r, at, &b, s.s + i, s.n - i);
    return ct_str((Str){b.p ? b.p : "", b.n});
}

// str.split(sep=None, maxsplit=-1): a list (CPython's split and split_whitespace).
static Value str_split(Render *r, const Node *at, Str s, const Str *sep, int64_t maxsplit) {
    Str *parts = NULL;
    size_t n = 0, cap = 0, i = 0;
    for (;;) {
        size_t j = i, next;
        bool rest = maxsplit >= 0 && (int64_t)n >= maxsplit;
        if (!sep) {
            while (i < s.n && ct_space_len(s.s + i, s.n - i)) i += ct_space_len(s.s + i, s.n - i);
            if (i >= s.n) break;
            for (j = i; !rest && j < s.n && !ct_space_len(s.s + j, s.n - j);) j += char_len(s, j);
            ct_work(r, at, j - i);
            next = j;
        } else {
            const char *hit = rest ? NULL : memmem(s.s + i, s.n - i, sep->s, sep->n);
            ct_work(r, at, (size_t)((hit ? hit : s.s + s.n) - (s.s + i)));
            rest = rest || !hit;
            j = hit ? (size_t)(hit - s.s) : s.n;
            next = j + sep->n;
        }
        if (rest) j = s.n;
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            Str *p = ct_alloc(r, at, cap * sizeof *p);
            if (n) memcpy(p, parts, n * sizeof *p);
            parts = p;
        }
        parts[n++] = (Str){s.s + i, j - i};
        if (rest || (!sep && j >= s.n)) break;
        i = next;
    }
    Value out = ct_list(r, at, n, L_LIST);
    for (size_t k = 0; k < n; k++) out.u.l->items[k] = ct_str(parts[k]);
    return out;
}

// ---- json.dumps ----------------------------------------------------------------------------
typedef struct {
    bool ensure_ascii, sort_keys, indent;
    Str indent_str;
} JsonOpts;

// A JSON string as json.dumps writes it: \n \r \t \b \f, other controls as \u00XX; with
// ensure_ascii, everything past 0x7E too (astral characters as surrogate pairs).
static void json_string(Render *r, const Node *at, Buf *b, Str s, bool ensure_ascii) {
    ct_buf_put(r, at, b, "\"", 1);
    for (size_t i = 0; i < s.n;) {
        const unsigned char c = (unsigned char)s.s[i];
        char esc[16];
        const size_t k = char_len(s, i);
        if (ct_short_escape(c, '"', esc) || c == '\b' || c == '\f') {
            if (c == '\b' || c == '\f') snprintf(esc, sizeof esc, "\\%c", c == '\b' ? 'b' : 'f');
        } else if (c < 0x20 || (ensure_ascii && c == 0x7F))
            snprintf(esc, sizeof esc, "\\u%04x", c);
        else if (ensure_ascii && c >= 0x80) {
            uint32_t cp = c & (k == 2 ? 0x1F : k == 3 ? 0x0F : 0x07);
            for (size_t j = 1; j < k; j++) cp = cp << 6 | ((unsigned char)s.s[i + j] & 63);
            if (cp < 0x10000)
                snprintf(esc, sizeof esc, "\\u%04x", cp);
            else
                snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xD800 + ((cp - 0x10000) >> 10),
                         0xDC00 + ((cp - 0x10000) & 0x3FF));
        } else {
            ct_buf_put(r, at, b, s.s + i, k);
            i += k;
            continue;
        }
        ct_buf_put(r, at, b, esc, strlen(esc));
        i += k;
    }
    ct_buf_put(r, at, b, "\"", 1);
}

// A newline and level indents (json.dumps with indent).
static void json_newline(Render *r, const Node *at, Buf *b, const JsonOpts *o, int level) {
    ct_buf_put(r, at, b, "\n", 1);
    for (int k = 0; k < level; k++) ct_buf_put(r, at, b, o->indent_str.s, o->indent_str.n);
}

// qsort order of dict keys: by code point, as sort_keys sorts them.
static int cmp_entry(const void *x, const void *y) {
    const Str *a = x, *b = y;
    const size_t n = a->n < b->n ? a->n : b->n;
    const int c = n ? memcmp(a->s, b->s, n) : 0;
    return c ? c : (a->n > b->n) - (a->n < b->n);
}

// json.dumps of v: lists, tuples, dicts with string keys, scalars; anything else is an error.
static void json_dump(Render *r, const Node *at, Buf *b, Value v, const JsonOpts *o, int level) {
    ct_step(r, at);
    if (v.kind == V_NONE) return ct_buf_put(r, at, b, "null", 4);
    if (v.kind == V_BOOL) return ct_buf_put(r, at, b, v.u.b ? "true" : "false", v.u.b ? 4 : 5);
    if (v.kind == V_FLOAT && !isfinite(v.u.f)) {
        const char *t = isnan(v.u.f) ? "NaN" : v.u.f > 0 ? "Infinity" : "-Infinity";
        return ct_buf_put(r, at, b, t, strlen(t));
    }
    if (v.kind == V_INT || v.kind == V_FLOAT) return ct_append_str(r, at, b, v);
    if (v.kind == V_STR) return json_string(r, at, b, v.u.s, o->ensure_ascii);
    const bool list = v.kind == V_LIST && (v.u.l->lkind == L_LIST || v.u.l->lkind == L_TUPLE);
    if (!list && v.kind != V_DICT) ct_fail(r, at, "tojson: a %s is not JSON serializable", ct_type_name(v));
    const size_t n = list ? v.u.l->n : v.u.d->n;
    if (!n) return ct_buf_put(r, at, b, list ? "[]" : "{}", 2);
    Str *keys = NULL;
    if (!list) { // key order: as inserted, or sorted (sort_keys); values follow their keys
        keys = ct_alloc(r, at, n * sizeof *keys);
        memcpy(keys, v.u.d->keys, n * sizeof *keys);
        if (o->sort_keys) qsort(keys, n, sizeof *keys, cmp_entry);
    }
    ct_enter(r, at);
    ct_buf_put(r, at, b, list ? "[" : "{", 1);
    for (size_t i = 0; i < n; i++) {
        if (i) ct_buf_put(r, at, b, o->indent ? "," : ", ", o->indent ? 1 : 2);
        if (o->indent) json_newline(r, at, b, o, level + 1);
        if (list) {
            json_dump(r, at, b, v.u.l->items[i], o, level + 1);
            continue;
        }
        json_string(r, at, b, keys[i], o->ensure_ascii);
        ct_buf_put(r, at, b, ": ", 2);
        json_dump(r, at, b, *ct_dict_get(r, at, v.u.d, keys[i]), o, level + 1);
    }
    if (o->indent) json_newline(r, at, b, o, level);
    ct_buf_put(r, at, b, list ? "]" : "}", 1);
    ct_leave(r);
}

// transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
static Value f_tojson(Render *r, const Node *at, Value v, const Args *a) {
    static const char *const KW[] = {"ensure_ascii", "indent", "separators", "sort_keys", NULL};
    check_args(r, at, a, "tojson", 4, KW);
    const Value *ea = arg(a, 0, "ensure_ascii"), *ind = arg(a, 1, "indent"), *sep = arg(a, 2, "separators"),
                *sk = arg(a, 3, "sort_keys");
    if (sep && sep->kind != V_NONE) ct_fail(r, at, "tojson's separators argument is not supported");
    JsonOpts o = {ea && ct_truthy(r, at, *ea), sk && ct_truthy(r, at, *sk), ind && ind->kind != V_NONE, {"", 0}};
    if (o.indent && ind->kind == V_STR) {
        o.indent_str = ind->u.s;
    } else if (o.indent) {
        const int64_t k = want_int(r, at, ind, "tojson's indent");
        char *sp = ct_alloc(r, at, k > 0 && k < 64 ? (size_t)k + 1 : 1);
        if (k >= 64) ct_fail(r, at, "tojson's indent %lld is too large", (long long)k);
        for (int64_t i = 0; i < k; i++) sp[i] = ' ';
        o.indent_str = (Str){sp, k > 0 ? (size_t)k : 0};
    }
    Buf b = {0};
    json_dump(r, at, &b, v, &o, 0);
    return ct_str((Str){b.p ? b.p : "", b.n});
}

// ---- globals and methods -------------------------------------------------------------------
// raise_exception(message): the template's own error, one line.
static Value g_raise(Render *r, const Node *at, const Args *a) {
    check_args(r, at, a, "raise_exception", 1, NULL);
    const Str m = a->n_pos ? ct_to_str(r, at, a->pos[0]) : (Str){"", 0};
    char line[600];
    size_t k = 0;
    for (size_t i = 0; i < m.n && k < sizeof line - 4; i++) line[k++] = (unsigned char)m.s[i] < 0x20 ? ' ' : m.s[i];
    if (k < m.n) { // cut on a character boundary
        while (k > 0 && ((unsigned char)m.s[k] & 0xC0) == 0x80) k--;
        line[k++] = '.', line[k++] = '.', line[k++] = '.';
    }
    line[k] = '\0';
    ct_fail(r, at, "raise_exception: %s", line);
}

// strftime_now(format): the local time, as datetime.now().strftime(format) gives it.
static Value g_strftime(Render *r, const Node *at, const Args *a) {
    check_args(r, at, a, "strftime_now", 1, NULL);
    if (!a->n_pos) ct_fail(r, at, "strftime_now needs a format");
    const Str f = want_str(r, at, &a->pos[0], "strftime_now's format");
    char fmt[128], out[512];
    if (f.n >= sizeof fmt) ct_fail(r, at, "strftime_now's format is too long");
    memcpy(fmt, f.s, f.n);
    fmt[f.n] = '\0';
    for (size_t i = 0; i + 1 < f.n; i++)
        if (fmt[i] == '%' && (fmt[i + 1] == 'f' || fmt[i + 1] == 'z' || fmt[i + 1] == 'Z' || fmt[i + 1] == ':'))
            ct_fail(r, at, "strftime_now: %%%c is not supported", fmt[i + 1]);
    const time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral" // the template's format, as Python passes it on
    const size_t n = strftime(out, sizeof out, fmt, &tm);
#pragma GCC diagnostic pop
    if (!n && f.n) ct_fail(r, at, "strftime_now: the format gives no text or too much");
    return mk_str(r, at, out, n);
}

// namespace([dict], **kw) (ns) or dict(**kw).
static Value g_namespace(Render *r, const Node *at, const Args *a, bool ns) {
    if (a->n_pos > (ns ? 1u : 0u))
        ct_fail(r, at, "%s takes keyword arguments%s", ns ? "namespace" : "dict", ns ? " and one dict" : "");
    Dict *d = ct_dict_new(r, at);
    if (a->n_pos) {
        if (a->pos[0].kind != V_DICT) ct_fail(r, at, "namespace's positional argument must be a dict");
        for (size_t i = 0; i < a->pos[0].u.d->n; i++)
            ct_dict_set(r, at, d, a->pos[0].u.d->keys[i], a->pos[0].u.d->vals[i]);
    }
    for (size_t i = 0; i < a->n_kw; i++) ct_dict_set(r, at, d, a->kw_names[i], a->kw_vals[i]);
    Value v = {.kind = ns ? V_NS : V_DICT};
    v.u.d = d;
    return v;
}

// range(stop), range(start, stop[, step]) as a list, at most CT_MAX_RANGE long.
static Value g_range(Render *r, const Node *at, const Args *a) {
    check_args(r, at, a, "range", 3, NULL);
    if (!a->n_pos) ct_fail(r, at, "range needs at least one argument");
    int64_t v[3] = {0, 0, 1};
    for (size_t i = 0; i < a->n_pos; i++) v[a->n_pos == 1 ? 1 : i] = want_int(r, at, &a->pos[i], "a range argument");
    if (v[2] == 0) ct_fail(r, at, "range's step cannot be zero");
    const double count = v[2] > 0 ? ceil(((double)v[1] - (double)v[0]) / (double)v[2])
                                  : ceil(((double)v[0] - (double)v[1]) / (double)-v[2]);
    if (count > CT_MAX_RANGE) ct_fail(r, at, "range of more than %d items (the sandbox's limit too)", CT_MAX_RANGE);
    Value out = ct_list(r, at, count > 0 ? (size_t)count : 0, L_LIST);
    for (size_t i = 0; i < out.u.l->n; i++) out.u.l->items[i] = ct_int(v[0] + (int64_t)i * v[2]);
    return out;
}

// The str methods qlora runs: strip family, startswith/endswith, split, replace, join, case maps.
static Value str_method(Render *r, const Node *at, Str name, Str s, const Args *a) {
    if (ct_str_eq(name, "strip") || ct_str_eq(name, "lstrip") || ct_str_eq(name, "rstrip")) {
        check_args(r, at, a, "str.strip", 1, NULL);
        const Str *chars = a->n_pos && a->pos[0].kind != V_NONE ? &a->pos[0].u.s : NULL;
        if (chars) want_str(r, at, &a->pos[0], "strip's characters");
        return ct_str(strip(r, at, s, chars, name.s[0] != 'r', name.s[0] != 'l'));
    }
    if (ct_str_eq(name, "startswith") || ct_str_eq(name, "endswith")) {
        check_args(r, at, a, "str.startswith", 1, NULL);
        if (!a->n_pos) ct_fail(r, at, "%.*s needs an argument", (int)name.n, name.s);
        const Value p = a->pos[0];
        const Value *alts = p.kind == V_LIST && p.u.l->lkind == L_TUPLE ? p.u.l->items : &p;
        const size_t n = p.kind == V_LIST && p.u.l->lkind == L_TUPLE ? p.u.l->n : 1;
        for (size_t i = 0; i < n; i++) {
            const Str x = want_str(r, at, &alts[i], "a prefix or suffix");
            if (x.n <= s.n && memcmp(name.s[0] == 's' ? s.s : s.s + s.n - x.n, x.s, x.n) == 0) return ct_bool(true);
        }
        return ct_bool(false);
    }
    if (ct_str_eq(name, "split")) {
        static const char *const KW[] = {"sep", "maxsplit", NULL};
        check_args(r, at, a, "str.split", 2, KW);
        const Value *sep = arg(a, 0, "sep"), *max = arg(a, 1, "maxsplit");
        const Str *sp = sep && sep->kind != V_NONE ? &sep->u.s : NULL;
        if (sp && want_str(r, at, sep, "split's separator").n == 0) ct_fail(r, at, "split: empty separator");
        return str_split(r, at, s, sp, max ? want_int(r, at, max, "split's maxsplit") : -1);
    }
    if (ct_str_eq(name, "replace")) {
        check_args(r, at, a, "str.replace", 3, NULL);
        if (a->n_pos < 2) ct_fail(r, at, "replace needs two arguments");
        return str_replace(r, at, s, want_str(r, at, &a->pos[0], "replace's old"),
                           want_str(r, at, &a->pos[1], "replace's new"),
                           a->n_pos > 2 ? want_int(r, at, &a->pos[2], "replace's count") : -1);
    }
    if (ct_str_eq(name, "join")) {
        check_args(r, at, a, "str.join", 1, NULL);
        if (!a->n_pos) ct_fail(r, at, "join needs an argument");
        size_t n;
        const Value *items = ct_iterate(r, at, a->pos[0], &n);
        Buf b = {0};
        for (size_t i = 0; i < n; i++) {
            if (i) ct_buf_put(r, at, &b, s.s, s.n);
            const Str x = want_str(r, at, &items[i], "an item joined by str.join");
            ct_buf_put(r, at, &b, x.s, x.n);
        }
        return ct_str((Str){b.p ? b.p : "", b.n});
    }
    check_args(r, at, a, "this str method", 0, NULL);
    const char mode = ct_str_eq(name, "upper")   ? 'u'
                      : ct_str_eq(name, "lower") ? 'l'
                      : ct_str_eq(name, "title") ? 't'
                                                 : 'c';
    return case_map(r, at, s, mode, "a case method");
}

// dict.get(key[, default]) and the views items() / keys() / values().
static Value dict_method(Render *r, const Node *at, Str name, const Dict *d, const Args *a) {
    if (ct_str_eq(name, "get")) {
        check_args(r, at, a, "dict.get", 2, NULL);
        if (!a->n_pos) ct_fail(r, at, "get needs a key");
        const Value *v = a->pos[0].kind == V_STR ? ct_dict_get(r, at, d, a->pos[0].u.s) : NULL;
        return v ? *v : a->n_pos > 1 ? a->pos[1] : ct_none();
    }
    check_args(r, at, a, "this dict method", 0, NULL);
    Value out = ct_list(r, at, d->n, L_VIEW);
    for (size_t i = 0; i < d->n; i++) {
        if (ct_str_eq(name, "keys"))
            out.u.l->items[i] = ct_str(d->keys[i]);
        else if (ct_str_eq(name, "values"))
            out.u.l->items[i] = d->vals[i];
        else {
            Value pair = ct_list(r, at, 2, L_TUPLE);
            pair.u.l->items[0] = ct_str(d->keys[i]);
            pair.u.l->items[1] = d->vals[i];
            out.u.l->items[i] = pair;
        }
    }
    return out;
}

Value ct_call(Render *r, const Node *at, Value fn, const Args *a) {
    if (fn.kind == V_UNDEF) {
        if (fn.u.s.n)
            ct_fail(r, at, "'%.*s' is undefined (called as a function)", (int)(fn.u.s.n > 60 ? 60 : fn.u.s.n),
                    fn.u.s.s);
        ct_fail(r, at, "an undefined value is called as a function");
    }
    if (fn.kind != V_FUNC) ct_fail(r, at, "a %s is not callable", ct_type_name(fn));
    const Func *f = fn.u.fn;
    switch (f->kind) {
    case F_RAISE: return g_raise(r, at, a);
    case F_STRFTIME: return g_strftime(r, at, a);
    case F_NAMESPACE: return g_namespace(r, at, a, true);
    case F_DICT: return g_namespace(r, at, a, false);
    case F_RANGE: return g_range(r, at, a);
    case F_METHOD:
        if (f->self.kind == V_STR) return str_method(r, at, f->name, f->self.u.s, a);
        if (f->self.kind == V_DICT) return dict_method(r, at, f->name, f->self.u.d, a);
        check_args(r, at, a, "loop.cycle", (size_t)-1, NULL); // loop.cycle(a, b, ...)
        if (!a->n_pos) ct_fail(r, at, "loop.cycle needs at least one argument");
        return a->pos[f->self.u.loop->index0 % a->n_pos];
    default:
        if (f->self.kind != V_UNDEF)
            ct_fail(r, at, "the method '%.*s' of a %s is not supported by qlora's chat templates", (int)f->name.n,
                    f->name.s, ct_type_name(f->self));
        ct_fail(r, at, "the function '%.*s' is not supported by qlora's chat templates", (int)f->name.n, f->name.s);
    }
}

// ---- filters -------------------------------------------------------------------------------
static Value filter_str(Render *r, const Node *at, Value v, const Args *a, const char *what, char mode) {
    check_args(r, at, a, what, 0, NULL);
    const Str s = ct_to_str(r, at, v);
    return mode ? case_map(r, at, s, mode, what) : ct_str(s);
}
// lower, upper, capitalize, title (jinja2's word rule), string: of str(value).
static Value f_lower(Render *r, const Node *at, Value v, const Args *a) {
    return filter_str(r, at, v, a, "lower", 'l');
}
static Value f_upper(Render *r, const Node *at, Value v, const Args *a) {
    return filter_str(r, at, v, a, "upper", 'u');
}
static Value f_capitalize(Render *r, const Node *at, Value v, const Args *a) {
    return filter_str(r, at, v, a, "capitalize", 'c');
}
static Value f_title(Render *r, const Node *at, Value v, const Args *a) {
    return filter_str(r, at, v, a, "title", 'j');
}
static Value f_string(Render *r, const Node *at, Value v, const Args *a) {
    return filter_str(r, at, v, a, "string", 0);
}

// trim(chars=None): str(value) stripped.
static Value f_trim(Render *r, const Node *at, Value v, const Args *a) {
    static const char *const KW[] = {"chars", NULL};
    check_args(r, at, a, "trim", 1, KW);
    const Value *c = arg(a, 0, "chars");
    const Str *chars = c && c->kind != V_NONE ? &c->u.s : NULL;
    if (chars) want_str(r, at, c, "trim's chars");
    return ct_str(strip(r, at, ct_to_str(r, at, v), chars, true, true));
}

// length / count: characters of a string, items of a list or dict; 0 for undefined.
static Value f_length(Render *r, const Node *at, Value v, const Args *a) {
    check_args(r, at, a, "length", 0, NULL);
    if (v.kind == V_UNDEF) return ct_int(0);
    if (v.kind == V_STR) return ct_work(r, at, v.u.s.n), ct_int((int64_t)ct_utf8_count(v.u.s));
    if (v.kind == V_DICT) return ct_int((int64_t)v.u.d->n);
    if (v.kind == V_LIST && v.u.l->lkind != L_GEN) return ct_int((int64_t)v.u.l->n);
    if (v.kind == V_LOOP) return ct_int((int64_t)v.u.loop->n);
    ct_fail(r, at, "a %s has no length", ct_type_name(v));
}

// default(value='', boolean=false) / d: the value unless undefined (or false, with boolean).
static Value f_default(Render *r, const Node *at, Value v, const Args *a) {
    static const char *const KW[] = {"default_value", "boolean", NULL};
    check_args(r, at, a, "default", 2, KW);
    const Value *d = arg(a, 0, "default_value"), *b = arg(a, 1, "boolean");
    const bool use = v.kind == V_UNDEF || (b && ct_truthy(r, at, *b) && !ct_truthy(r, at, v));
    return use ? (d ? *d : ct_str((Str){"", 0})) : v;
}

// first / last: the first or last item (or character, or key); undefined when empty.
static Value f_first(Render *r, const Node *at, Value v, const Args *a) {
    check_args(r, at, a, "first", 0, NULL);
    size_t n;
    const Value *items = ct_iterate(r, at, v, &n);
    return n ? items[0] : ct_undef(ct_cstr("first item"));
}

static Value f_last(Render *r, const Node *at, Value v, const Args *a) {
    check_args(r, at, a, "last", 0, NULL);
    if (v.kind == V_LIST && v.u.l->lkind == L_GEN)
        ct_fail(r, at, "last of a generator is not supported (it is not reversible)");
    size_t n;
    const Value *items = ct_iterate(r, at, v, &n);
    return n ? items[n - 1] : ct_undef(ct_cstr("last item"));
}

// make_attrgetter: "a.b.0" looks up a, then b, then item 0 of each item, as jinja2 does.
static Value attr_path(Render *r, const Node *at, Value item, Value attr) {
    if (attr.kind != V_STR) return ct_getitem(r, at, item, attr);
    for (size_t i = 0; i <= attr.u.s.n;) {
        size_t e = i;
        while (e < attr.u.s.n && attr.u.s.s[e] != '.') e++;
        const Str part = {attr.u.s.s + i, e - i};
        bool digits = part.n > 0;
        int64_t k = 0;
        for (size_t j = 0; j < part.n && digits; j++)
            digits = part.s[j] >= '0' && part.s[j] <= '9', k = k * 10 + (part.s[j] - '0');
        if (digits && part.n > 18) ct_fail(r, at, "an attribute index this long is not supported");
        item = ct_getitem(r, at, item, digits ? ct_int(k) : ct_str(part));
        i = e + 1;
    }
    return item;
}

// join(d='', attribute=None): str() of each item (or of its attribute) joined by d.
static Value f_join(Render *r, const Node *at, Value v, const Args *a) {
    static const char *const KW[] = {"d", "attribute", NULL};
    check_args(r, at, a, "join", 2, KW);
    const Value *d = arg(a, 0, "d"), *attr = arg(a, 1, "attribute");
    const Str sep = d ? ct_to_str(r, at, *d) : (Str){"", 0};
    size_t n;
    const Value *items = ct_iterate(r, at, v, &n);
    Buf b = {0};
    for (size_t i = 0; i < n; i++) {
        if (i) ct_buf_put(r, at, &b, sep.s, sep.n);
        ct_append_str(r, at, &b, attr && attr->kind != V_NONE ? attr_path(r, at, items[i], *attr) : items[i]);
    }
    return ct_str((Str){b.p ? b.p : "", b.n});
}

// list: the items as a new list.
static Value f_list(Render *r, const Node *at, Value v, const Args *a) {
    check_args(r, at, a, "list", 0, NULL);
    size_t n;
    const Value *items = ct_iterate(r, at, v, &n);
    Value out = ct_list(r, at, n, L_LIST);
    if (n) memcpy(out.u.l->items, items, n * sizeof(Value));
    return out;
}

// items: (key, value) pairs of a mapping, as a generator; none for undefined.
static Value f_items(Render *r, const Node *at, Value v, const Args *a) {
    check_args(r, at, a, "items", 0, NULL);
    if (v.kind == V_UNDEF) return ct_list(r, at, 0, L_GEN);
    if (v.kind != V_DICT) ct_fail(r, at, "items: can only get item pairs from a mapping, not a %s", ct_type_name(v));
    Value out = ct_list(r, at, v.u.d->n, L_GEN);
    for (size_t i = 0; i < v.u.d->n; i++) {
        Value pair = ct_list(r, at, 2, L_TUPLE);
        pair.u.l->items[0] = ct_str(v.u.d->keys[i]);
        pair.u.l->items[1] = v.u.d->vals[i];
        out.u.l->items[i] = pair;
    }
    return out;
}

// reverse: a string reversed, or the items in reverse (a generator, as reversed() is).
static Value f_reverse(Render *r, const Node *at, Value v, const Args *a) {
    check_args(r, at, a, "reverse", 0, NULL);
    if (v.kind == V_STR) {
        size_t n;
        const Value *chars = ct_iterate(r, at, v, &n);
        Buf b = {0};
        for (size_t i = n; i-- > 0;) ct_buf_put(r, at, &b, chars[i].u.s.s, chars[i].u.s.n);
        return ct_str((Str){b.p ? b.p : "", b.n});
    }
    const bool gen = v.kind == V_LIST && v.u.l->lkind == L_GEN; // reversed() fails; jinja2 makes a list
    size_t n;
    const Value *items = ct_iterate(r, at, v, &n);
    Value out = ct_list(r, at, n, gen ? L_LIST : L_GEN);
    for (size_t i = 0; i < n; i++) out.u.l->items[i] = items[n - 1 - i];
    return out;
}

// replace(old, new, count=None) on str(value).
static Value f_replace(Render *r, const Node *at, Value v, const Args *a) {
    static const char *const KW[] = {"old", "new", "count", NULL};
    check_args(r, at, a, "replace", 3, KW);
    const Value *o = arg(a, 0, "old"), *n = arg(a, 1, "new"), *c = arg(a, 2, "count");
    if (!o || !n) ct_fail(r, at, "replace needs old and new");
    return str_replace(r, at, ct_to_str(r, at, v), ct_to_str(r, at, *o), ct_to_str(r, at, *n),
                       c && c->kind != V_NONE ? want_int(r, at, c, "replace's count") : -1);
}

// abs of a number.
static Value f_abs(Render *r, const Node *at, Value v, const Args *a) {
    check_args(r, at, a, "abs", 0, NULL);
    if (v.kind == V_FLOAT) return ct_float(fabs(v.u.f));
    const Value zero = ct_int(0);
    if ((v.kind == V_INT || v.kind == V_BOOL) && ct_compare(r, at, v, zero) < 0) return ct_unary(r, at, OP_NEG, v);
    if (v.kind == V_INT || v.kind == V_BOOL) return ct_unary(r, at, OP_POS, v);
    ct_fail(r, at, "abs of a %s is not supported", ct_type_name(v));
}

// int(value, default=0, base=10) for the forms whose Python reading is plain.
static Value f_int(Render *r, const Node *at, Value v, const Args *a) {
    static const char *const KW[] = {"default", "base", NULL};
    check_args(r, at, a, "int", 2, KW);
    const Value *d = arg(a, 0, "default"), *base = arg(a, 1, "base");
    const Value dflt = d ? *d : ct_int(0);
    if (base && !(base->kind == V_INT && base->u.i == 10)) ct_fail(r, at, "int's base other than 10 is not supported");
    if (v.kind == V_INT) return v;
    if (v.kind == V_BOOL) return ct_int(v.u.b);
    if (v.kind == V_UNDEF) ct_fail(r, at, "int of an undefined value");
    if (v.kind == V_FLOAT) {
        if (isnan(v.u.f)) return dflt;
        if (!(fabs(v.u.f) < 9.2e18)) ct_fail(r, at, "int of %g is beyond 64 bits", v.u.f);
        return ct_int((int64_t)v.u.f);
    }
    if (v.kind != V_STR) return dflt;
    const Str s = strip(r, at, v.u.s, NULL, true, true);
    char buf[64];
    if (s.n >= sizeof buf) ct_fail(r, at, "int of a string this long is not supported");
    memcpy(buf, s.s, s.n);
    buf[s.n] = '\0';
    for (size_t i = 0; i < s.n; i++)
        if ((unsigned char)buf[i] >= 0x80 || strchr("_iInN", buf[i]))
            ct_fail(r, at, "int of '%.40s' is not supported (Python's reading of it is not plain)", buf);
    char *end;
    const long long x = strtoll(buf, &end, 10);
    if (s.n && !*end && (buf[0] != '+' || s.n > 1)) return ct_int(x);
    const double f = strtod(buf, &end);
    const bool plain = s.n && !*end && strspn(buf, "+-0123456789.eE") == s.n;
    return plain ? ct_int((int64_t)f) : dflt;
}

// safe: str(value) (without autoescape, Markup prints as the text itself).
static Value f_safe(Render *r, const Node *at, Value v, const Args *a) { return filter_str(r, at, v, a, "safe", 0); }

// select / reject / selectattr / rejectattr: the items whose test (or truth) is `keep`.
static Value select_items(Render *r, const Node *at, Value v, const Args *a, bool attr, bool keep) {
    Value out = ct_list(r, at, 0, L_GEN);
    if (!ct_truthy(r, at, v.kind == V_LIST && v.u.l->lkind == L_GEN ? ct_bool(true) : v)) return out;
    const size_t off = attr ? 1 : 0;
    if (attr && !a->n_pos) ct_fail(r, at, "selectattr/rejectattr need an attribute name");
    const TestDef *t = NULL;
    if (a->n_pos > off) {
        const Str name = want_str(r, at, &a->pos[off], "a test name");
        if (!(t = ct_find_test(name.s, name.n)))
            ct_fail(r, at, "the test '%.*s' is not supported by qlora's chat templates", (int)name.n, name.s);
    }
    Args rest = {a->pos + off + (t != NULL), a->n_pos > off + 1 ? a->n_pos - off - 1 : 0, a->kw_names, a->kw_vals,
                 a->n_kw};
    size_t n;
    const Value *items = ct_iterate(r, at, v, &n);
    out = ct_list(r, at, n, L_GEN);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const Value x = attr ? attr_path(r, at, items[i], a->pos[0]) : items[i];
        if ((t ? t->fn(r, at, t, x, &rest) : ct_truthy(r, at, x)) == keep) out.u.l->items[k++] = items[i];
    }
    out.u.l->n = k;
    return out;
}
// The four select filters.
static Value f_select(Render *r, const Node *at, Value v, const Args *a) {
    return select_items(r, at, v, a, false, true);
}
static Value f_reject(Render *r, const Node *at, Value v, const Args *a) {
    return select_items(r, at, v, a, false, false);
}
static Value f_selectattr(Render *r, const Node *at, Value v, const Args *a) {
    return select_items(r, at, v, a, true, true);
}
static Value f_rejectattr(Render *r, const Node *at, Value v, const Args *a) {
    return select_items(r, at, v, a, true, false);
}

// map(attribute=..., default=...) or map('filter', args...).
static Value f_map(Render *r, const Node *at, Value v, const Args *a) {
    if (!ct_truthy(r, at, v.kind == V_LIST && v.u.l->lkind == L_GEN ? ct_bool(true) : v))
        return ct_list(r, at, 0, L_GEN);
    const Value *attr = a->n_pos ? NULL : arg(a, (size_t)-1, "attribute");
    const FilterDef *f = NULL;
    Args rest = {0};
    if (attr) {
        static const char *const KW[] = {"attribute", "default", NULL};
        check_args(r, at, a, "map", 0, KW);
    } else {
        if (!a->n_pos) ct_fail(r, at, "map needs a filter name or attribute=");
        const Str name = want_str(r, at, &a->pos[0], "map's filter name");
        if (!(f = ct_find_filter(name.s, name.n)))
            ct_fail(r, at, "the filter '%.*s' is not supported by qlora's chat templates", (int)name.n, name.s);
        rest = (Args){a->pos + 1, a->n_pos - 1, a->kw_names, a->kw_vals, a->n_kw};
    }
    const Value *dflt = attr ? arg(a, (size_t)-1, "default") : NULL;
    size_t n;
    const Value *items = ct_iterate(r, at, v, &n);
    Value out = ct_list(r, at, n, L_GEN);
    for (size_t i = 0; i < n; i++) {
        Value x = attr ? attr_path(r, at, items[i], *attr) : f->fn(r, at, items[i], &rest);
        if (attr && dflt && dflt->kind != V_NONE && x.kind == V_UNDEF) x = *dflt;
        out.u.l->items[i] = x;
    }
    return out;
}

static const FilterDef FILTERS[] = {
    {"abs", f_abs},
    {"capitalize", f_capitalize},
    {"count", f_length},
    {"d", f_default},
    {"default", f_default},
    {"first", f_first},
    {"int", f_int},
    {"items", f_items},
    {"join", f_join},
    {"last", f_last},
    {"length", f_length},
    {"list", f_list},
    {"lower", f_lower},
    {"map", f_map},
    {"reject", f_reject},
    {"rejectattr", f_rejectattr},
    {"replace", f_replace},
    {"reverse", f_reverse},
    {"safe", f_safe},
    {"select", f_select},
    {"selectattr", f_selectattr},
    {"string", f_string},
    {"title", f_title},
    {"tojson", f_tojson},
    {"trim", f_trim},
    {"upper", f_upper},
};

// The entry called name in a table of count entries of `size` bytes that each begin with their
// name, or NULL.
static const void *find_named(const void *table, size_t count, size_t size, const char *name, size_t n) {
    for (size_t i = 0; i < count; i++) {
        const char *entry = *(const char *const *)((const char *)table + i * size);
        if (strlen(entry) == n && memcmp(entry, name, n) == 0) return (const char *)table + i * size;
    }
    return NULL;
}

const FilterDef *ct_find_filter(const char *name, size_t n) {
    return find_named(FILTERS, sizeof FILTERS / sizeof FILTERS[0], sizeof FILTERS[0], name, n);
}

// ---- tests ---------------------------------------------------------------------------------
// A test's argument count checked: none, or exactly one (returned).
static const Value *test_args(Render *r, const Node *at, const TestDef *t, const Args *a, bool one) {
    check_args(r, at, a, t->name, one, NULL);
    if (one && !a->n_pos) ct_fail(r, at, "the test '%s' needs an argument", t->name);
    return one ? &a->pos[0] : NULL;
}

enum { TY_DEFINED, TY_UNDEFINED, TY_NONE, TY_BOOLEAN, TY_TRUE, TY_FALSE, TY_INTEGER, TY_FLOAT, TY_NUMBER, TY_STRING,
       TY_MAPPING, TY_ITERABLE, TY_SEQUENCE, TY_CALLABLE };

// The type and value tests: jinja2's, with Python's types (a bool is a number, not an integer).
// iterable: iter() works (on Undefined and loop objects too); sequence: len() and [] exist.
static bool t_type(Render *r, const Node *at, const TestDef *t, Value v, const Args *a) {
    test_args(r, at, t, a, false);
    const bool seq = v.kind == V_LIST && (v.u.l->lkind == L_LIST || v.u.l->lkind == L_TUPLE);
    switch (t->code) {
    case TY_DEFINED: return v.kind != V_UNDEF;
    case TY_UNDEFINED: return v.kind == V_UNDEF;
    case TY_NONE: return v.kind == V_NONE;
    case TY_BOOLEAN: return v.kind == V_BOOL;
    case TY_TRUE: return v.kind == V_BOOL && v.u.b;
    case TY_FALSE: return v.kind == V_BOOL && !v.u.b;
    case TY_INTEGER: return v.kind == V_INT;
    case TY_FLOAT: return v.kind == V_FLOAT;
    case TY_NUMBER: return v.kind == V_INT || v.kind == V_FLOAT || v.kind == V_BOOL;
    case TY_STRING: return v.kind == V_STR;
    case TY_MAPPING: return v.kind == V_DICT;
    case TY_ITERABLE: return v.kind == V_STR || v.kind == V_LIST || v.kind == V_DICT || v.kind == V_UNDEF || v.kind == V_LOOP;
    case TY_SEQUENCE: return v.kind == V_STR || v.kind == V_DICT || v.kind == V_UNDEF || seq;
    default: return v.kind == V_FUNC || v.kind == V_UNDEF || v.kind == V_LOOP;
    }
}

// Comparison tests and in (code: the operator).
static bool t_compare(Render *r, const Node *at, const TestDef *t, Value v, const Args *a) {
    const Value o = *test_args(r, at, t, a, true);
    switch (t->code) {
    case OP_EQ: return ct_equal(r, at, v, o);
    case OP_NE: return !ct_equal(r, at, v, o);
    case OP_LT: return ct_compare(r, at, v, o) < 0;
    case OP_LE: return ct_compare(r, at, v, o) <= 0;
    case OP_GT: return ct_compare(r, at, v, o) > 0;
    case OP_GE: return ct_compare(r, at, v, o) >= 0;
    default: return ct_contains(r, at, v, o);
    }
}

// Python's `is`: only decidable here when one side is None, True or False.
static bool t_sameas(Render *r, const Node *at, const TestDef *t, Value v, const Args *a) {
    const Value o = *test_args(r, at, t, a, true);
    if (v.kind == V_NONE || v.kind == V_BOOL || o.kind == V_NONE || o.kind == V_BOOL)
        return v.kind == o.kind && (v.kind == V_NONE || v.u.b == o.u.b);
    ct_fail(r, at, "'sameas' is supported only against none, true and false");
}

// odd (code 1), even (0), divisibleby(n) (-1): value % n == remainder, with Python's modulo.
static bool t_divisible(Render *r, const Node *at, const TestDef *t, Value v, const Args *a) {
    const Value *by = test_args(r, at, t, a, t->code < 0);
    const Value m = ct_binary(r, at, OP_MOD, v, by ? *by : ct_int(2));
    return ct_equal(r, at, m, ct_int(t->code < 0 ? 0 : t->code));
}

// lower (code 1) / upper (0): str(value).islower() / isupper(): a cased letter, none of the other case.
static bool t_case(Render *r, const Node *at, const TestDef *t, Value v, const Args *a) {
    test_args(r, at, t, a, false);
    const Str s = ct_to_str(r, at, v);
    need_ascii(r, at, s, t->code ? "the test lower" : "the test upper");
    bool cased = false;
    for (size_t i = 0; i < s.n; i++) {
        if (!letter(s.s[i])) continue;
        if ((s.s[i] >= 'a') != (t->code == 1)) return false;
        cased = true;
    }
    return cased;
}

static const TestDef TESTS[] = {
    {"defined", t_type, TY_DEFINED},     {"undefined", t_type, TY_UNDEFINED}, {"none", t_type, TY_NONE},
    {"boolean", t_type, TY_BOOLEAN},     {"true", t_type, TY_TRUE},           {"false", t_type, TY_FALSE},
    {"integer", t_type, TY_INTEGER},     {"float", t_type, TY_FLOAT},         {"number", t_type, TY_NUMBER},
    {"string", t_type, TY_STRING},       {"mapping", t_type, TY_MAPPING},     {"iterable", t_type, TY_ITERABLE},
    {"sequence", t_type, TY_SEQUENCE},   {"callable", t_type, TY_CALLABLE},   {"sameas", t_sameas, 0},
    {"eq", t_compare, OP_EQ},            {"equalto", t_compare, OP_EQ},       {"==", t_compare, OP_EQ},
    {"ne", t_compare, OP_NE},            {"!=", t_compare, OP_NE},            {"lt", t_compare, OP_LT},
    {"lessthan", t_compare, OP_LT},      {"<", t_compare, OP_LT},             {"le", t_compare, OP_LE},
    {"<=", t_compare, OP_LE},            {"gt", t_compare, OP_GT},            {"greaterthan", t_compare, OP_GT},
    {">", t_compare, OP_GT},             {"ge", t_compare, OP_GE},            {">=", t_compare, OP_GE},
    {"in", t_compare, OP_IN},            {"odd", t_divisible, 1},             {"even", t_divisible, 0},
    {"divisibleby", t_divisible, -1},    {"lower", t_case, 1},                {"upper", t_case, 0},
};

const TestDef *ct_find_test(const char *name, size_t n) {
    return find_named(TESTS, sizeof TESTS / sizeof TESTS[0], sizeof TESTS[0], name, n);
}
