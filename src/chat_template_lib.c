// chat_template_lib.c: the values of chat templates behaving as Python's objects behave under
// jinja2's sandbox: truth, ==, <, in, iteration, attribute and item lookup (jinja2's getattr /
// getitem order), slices, arithmetic, str() and repr(). Filters, tests and calls are in
// chat_template_builtins.c. Where Python's answer depends on things qlora does not model
// (object identity, the Unicode database of the Python version), the answer is an error.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template_impl.h"

// ---- UTF-8 and Python whitespace -----------------------------------------------------------
bool ct_utf8_valid(const char *s, size_t n) {
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = utf8_seq_len((const uint8_t *)s + i, n - i))) return false;
    return true;
}

size_t ct_utf8_count(Str s) {
    size_t k = 0;
    for (size_t i = 0; i < s.n; i++) k += ((unsigned char)s.s[i] & 0xC0) != 0x80;
    return k;
}

// The code point at s (valid UTF-8, n >= 1 bytes); *len its bytes.
static uint32_t decode(const char *s, size_t n, size_t *len) {
    const unsigned char c = (unsigned char)s[0];
    size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (k > n) k = n;
    uint32_t cp = k == 1 ? c : c & (k == 2 ? 0x1F : k == 3 ? 0x0F : 0x07);
    for (size_t j = 1; j < k; j++) cp = cp << 6 | ((unsigned char)s[j] & 63);
    *len = k;
    return cp;
}

// Python's str.isspace() (and the regular expression \s on str): the same table.
static bool py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

size_t ct_space_len(const char *s, size_t n) {
    if (!n) return 0;
    size_t k;
    const uint32_t c = decode(s, n, &k);
    return py_space(c) ? k : 0;
}

size_t ct_rstrip_len(const char *s, size_t n) {
    while (n > 0) {
        size_t b = n - 1;
        while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
        if (!ct_space_len(s + b, n - b)) break;
        n = b;
    }
    return n;
}

// ---- buffers, lists, dicts -----------------------------------------------------------------
void ct_buf_put(Render *r, const Node *at, Buf *b, const char *s, size_t n) {
    if (!n) return;
    if (b->n + n > CT_MAX_OUTPUT_BYTES) ct_fail(r, at, "the text grows past %u MiB", CT_MAX_OUTPUT_BYTES >> 20);
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        char *p = ct_alloc(r, at, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

// Append a C string.
static void buf_puts(Render *r, const Node *at, Buf *b, const char *s) { ct_buf_put(r, at, b, s, strlen(s)); }

Value ct_list(Render *r, const Node *at, size_t n, uint8_t lkind) {
    List *l = ct_alloc(r, at, sizeof *l);
    if (n > CT_MAX_POOL_BYTES / sizeof(Value)) ct_fail(r, at, "a list of %zu items is too long", n);
    l->items = n ? ct_alloc(r, at, n * sizeof(Value)) : NULL;
    l->n = n;
    l->lkind = lkind;
    Value v = {.kind = V_LIST};
    v.u.l = l;
    return v;
}

Dict *ct_dict_new(Render *r, const Node *at) { return ct_alloc(r, at, sizeof(Dict)); }

const Value *ct_dict_get(Render *r, const Node *at, const Dict *d, Str key) {
    ct_work(r, at, d->n);
    for (size_t i = 0; i < d->n; i++)
        if (ct_str_same(d->keys[i], key)) return &d->vals[i];
    return NULL;
}

void ct_dict_set(Render *r, const Node *at, Dict *d, Str key, Value v) {
    ct_work(r, at, d->n);
    for (size_t i = 0; i < d->n; i++)
        if (ct_str_same(d->keys[i], key)) {
            d->vals[i] = v;
            return;
        }
    if (d->n == d->cap) {
        const size_t cap = d->cap ? 2 * d->cap : 4;
        Str *k = ct_alloc(r, at, cap * sizeof *k);
        Value *x = ct_alloc(r, at, cap * sizeof *x);
        if (d->n) memcpy(k, d->keys, d->n * sizeof *k), memcpy(x, d->vals, d->n * sizeof *x);
        d->keys = k, d->vals = x, d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n++] = v;
}

const char *ct_type_name(Value v) {
    switch (v.kind) {
    case V_UNDEF: return "Undefined";
    case V_NONE: return "NoneType";
    case V_BOOL: return "bool";
    case V_INT: return "int";
    case V_FLOAT: return "float";
    case V_STR: return "str";
    case V_LIST:
        return v.u.l->lkind == L_TUPLE  ? "tuple"
               : v.u.l->lkind == L_VIEW ? "dict view"
               : v.u.l->lkind == L_GEN  ? "generator"
                                        : "list";
    case V_DICT: return "dict";
    case V_NS: return "Namespace";
    case V_LOOP: return "LoopContext";
    default: return "function";
    }
}

// Numbers as Python sees them: bool is an int.
static bool is_num(Value v) { return v.kind == V_BOOL || v.kind == V_INT || v.kind == V_FLOAT; }
static double num_f(Value v) { return v.kind == V_FLOAT ? v.u.f : v.kind == V_INT ? (double)v.u.i : v.u.b; }
static int64_t num_i(Value v) { return v.kind == V_INT ? v.u.i : v.u.b; }

// ---- truth, equality, order, membership ----------------------------------------------------
bool ct_truthy(Render *r, const Node *at, Value v) {
    switch (v.kind) {
    case V_UNDEF:
    case V_NONE: return false;
    case V_BOOL: return v.u.b;
    case V_INT: return v.u.i != 0;
    case V_FLOAT: return v.u.f != 0;
    case V_STR: return v.u.s.n != 0;
    case V_LIST:
        if (v.u.l->lkind == L_GEN)
            ct_fail(r, at, "the truth of a generator (from select, map, reverse or items) is not supported; add |list");
        return v.u.l->n != 0;
    case V_DICT: return v.u.d->n != 0;
    case V_LOOP: return v.u.loop->n != 0;
    default: return true;
    }
}

// Python's comparison of an int and a float, exactly.
static int cmp_num(Value a, Value b) {
    if (a.kind != V_FLOAT && b.kind != V_FLOAT) {
        const int64_t x = num_i(a), y = num_i(b);
        return (x > y) - (x < y);
    }
    const double x = num_f(a), y = num_f(b);
    if (isnan(x) || isnan(y)) return 2; // unordered: neither <, == nor >
    if (a.kind != V_FLOAT && fabs(y) < 9.2e18 && y == floor(y)) {
        const int64_t x2 = num_i(a), y2 = (int64_t)y;
        return (x2 > y2) - (x2 < y2);
    }
    if (b.kind != V_FLOAT && fabs(x) < 9.2e18 && x == floor(x)) {
        const int64_t x2 = (int64_t)x, y2 = num_i(b);
        return (x2 > y2) - (x2 < y2);
    }
    return (x > y) - (x < y);
}

static int cmp_str(Str a, Str b) { // UTF-8 byte order is code point order
    const size_t n = a.n < b.n ? a.n : b.n;
    const int c = n ? memcmp(a.s, b.s, n) : 0;
    if (c) return c < 0 ? -1 : 1;
    return (a.n > b.n) - (a.n < b.n);
}

// A list or tuple (not a view or generator).
static bool is_seq(Value v) { return v.kind == V_LIST && (v.u.l->lkind == L_LIST || v.u.l->lkind == L_TUPLE); }

// == of two lists (or tuples) / dicts (same keys, equal values, in any order).
static bool lists_equal(Render *r, const Node *at, const List *a, const List *b) {
    if (a->lkind != b->lkind || a->n != b->n) return false;
    ct_work(r, at, a->n);
    for (size_t i = 0; i < a->n; i++)
        if (!ct_equal(r, at, a->items[i], b->items[i])) return false;
    return true;
}

static bool dicts_equal(Render *r, const Node *at, const Dict *a, const Dict *b) {
    if (a->n != b->n) return false;
    for (size_t i = 0; i < a->n; i++) {
        const Value *o = ct_dict_get(r, at, b, a->keys[i]);
        if (!o || !ct_equal(r, at, a->vals[i], *o)) return false;
    }
    return true;
}

bool ct_equal(Render *r, const Node *at, Value a, Value b) {
    if (is_num(a) && is_num(b)) return cmp_num(a, b) == 0;
    if ((a.kind == V_LIST && !is_seq(a)) || (b.kind == V_LIST && !is_seq(b)))
        ct_fail(r, at, "comparing a %s with == is not supported", ct_type_name(a.kind == V_LIST && !is_seq(a) ? a : b));
    if (a.kind != b.kind) return false;
    switch (a.kind) {
    case V_UNDEF:
    case V_NONE: return true;
    case V_STR: return ct_work(r, at, a.u.s.n), ct_str_same(a.u.s, b.u.s);
    case V_LIST:
    case V_DICT: {
        ct_enter(r, at);
        const bool same = a.kind == V_LIST ? lists_equal(r, at, a.u.l, b.u.l) : dicts_equal(r, at, a.u.d, b.u.d);
        ct_leave(r);
        return same;
    }
    case V_NS: return a.u.d == b.u.d;
    case V_LOOP: return a.u.loop == b.u.loop;
    default: ct_fail(r, at, "comparing functions with == is not supported");
    }
}

int ct_compare(Render *r, const Node *at, Value a, Value b) {
    if (is_num(a) && is_num(b)) {
        const int c = cmp_num(a, b);
        if (c == 2) ct_fail(r, at, "ordering NaN is not supported");
        return c;
    }
    if (a.kind == V_STR && b.kind == V_STR) return ct_work(r, at, a.u.s.n), cmp_str(a.u.s, b.u.s);
    if (is_seq(a) && is_seq(b) && a.u.l->lkind == b.u.l->lkind) {
        const List *x = a.u.l, *y = b.u.l;
        int c = (x->n > y->n) - (x->n < y->n);
        ct_enter(r, at);
        for (size_t i = 0; i < x->n && i < y->n; i++)
            if (!ct_equal(r, at, x->items[i], y->items[i])) {
                c = ct_compare(r, at, x->items[i], y->items[i]);
                break;
            }
        ct_leave(r);
        return c;
    }
    ct_fail(r, at, "'<' is not supported between a %s and a %s", ct_type_name(a), ct_type_name(b));
}

bool ct_contains(Render *r, const Node *at, Value item, Value seq) {
    if (seq.kind == V_STR) {
        if (item.kind != V_STR)
            ct_fail(r, at, "'in <string>' needs a string on the left, not a %s", ct_type_name(item));
        ct_work(r, at, seq.u.s.n + item.u.s.n);
        return !item.u.s.n || memmem(seq.u.s.s, seq.u.s.n, item.u.s.s, item.u.s.n) != NULL;
    }
    if (seq.kind == V_DICT) {
        if (item.kind == V_LIST || item.kind == V_DICT || item.kind == V_NS)
            ct_fail(r, at, "a %s cannot be a key of a dict (unhashable)", ct_type_name(item));
        return item.kind == V_STR && ct_dict_get(r, at, seq.u.d, item.u.s);
    }
    if (seq.kind == V_UNDEF) return false;
    if (seq.kind == V_LIST && seq.u.l->lkind != L_GEN) {
        ct_work(r, at, seq.u.l->n);
        for (size_t i = 0; i < seq.u.l->n; i++)
            if (ct_equal(r, at, item, seq.u.l->items[i])) return true;
        return false;
    }
    ct_fail(r, at, "'in' a %s is not supported", ct_type_name(seq));
}

// ---- iteration -----------------------------------------------------------------------------
const Value *ct_iterate(Render *r, const Node *at, Value v, size_t *n) {
    switch (v.kind) {
    case V_UNDEF: *n = 0; return NULL;
    case V_LIST:
        if (v.u.l->lkind == L_GEN) {
            if (v.u.l->consumed)
                ct_fail(r, at,
                        "a generator (from select, map, reverse or items) is used a second time; "
                        "add |list where it is made");
            v.u.l->consumed = true;
        }
        *n = v.u.l->n;
        return v.u.l->items;
    case V_DICT: {
        Value *items = v.u.d->n ? ct_alloc(r, at, v.u.d->n * sizeof *items) : NULL;
        for (size_t i = 0; i < v.u.d->n; i++) items[i] = ct_str(v.u.d->keys[i]);
        *n = v.u.d->n;
        return items;
    }
    case V_STR: {
        const size_t count = ct_utf8_count(v.u.s);
        Value *items = count ? ct_alloc(r, at, count * sizeof *items) : NULL;
        size_t k = 0;
        for (size_t i = 0, len; i < v.u.s.n; i += len) {
            decode(v.u.s.s + i, v.u.s.n - i, &len);
            items[k++] = ct_str((Str){v.u.s.s + i, len});
        }
        *n = count;
        return items;
    }
    default: ct_fail(r, at, "a %s is not iterable", ct_type_name(v));
    }
}

// ---- attributes and items (jinja2's sandboxed getattr / getitem) ---------------------------
static bool in_list(Str name, const char *const *names) {
    for (; *names; names++)
        if (ct_str_eq(name, *names)) return true;
    return false;
}

static const char *const STR_METHODS[] = {"strip", "lstrip", "rstrip",     "startswith", "endswith", "split", "upper",
                                          "lower", "title",  "capitalize", "replace",    "join",     NULL};
static const char *const STR_OTHER[] = {
    "casefold",     "center",       "count",   "encode",  "expandtabs", "find",       "format",       "format_map",
    "index",        "isalnum",      "isalpha", "isascii", "isdecimal",  "isdigit",    "isidentifier", "islower",
    "isnumeric",    "isprintable",  "isspace", "istitle", "isupper",    "ljust",      "maketrans",    "partition",
    "removeprefix", "removesuffix", "rfind",   "rindex",  "rjust",      "rpartition", "rsplit",       "splitlines",
    "swapcase",     "translate",    "zfill",   NULL};
static const char *const DICT_METHODS[] = {"get", "items", "keys", "values", NULL};
static const char *const DICT_OTHER[] = {"clear", "copy", "fromkeys", "pop", "popitem", "setdefault", "update", NULL};
static const char *const LIST_OTHER[] = {"append", "clear", "copy",       "count",   "extend", "index",
                                         "insert", "pop",   "remove",     "reverse", "sort",   "send",
                                         "throw",  "close", "isdisjoint", "mapping", NULL};
static const char *const NUM_OTHER[] = {"real",       "imag",       "conjugate",        "bit_length", "bit_count",
                                        "to_bytes",   "from_bytes", "as_integer_ratio", "numerator",  "denominator",
                                        "is_integer", "hex",        "fromhex",          NULL};

// A bound method of self; an unsupported one fails only when called.
static Value method(Render *r, const Node *at, Value self, Str name, bool supported) {
    Func *f = ct_alloc(r, at, sizeof *f);
    f->kind = supported ? F_METHOD : F_UNSUPPORTED;
    f->name = name;
    f->self = self;
    Value v = {.kind = V_FUNC};
    v.u.fn = f;
    return v;
}

// loop.index0 ... loop.cycle: the attributes of the loop object.
static Value loop_attr(Render *r, const Node *at, Value v, Str name) {
    const Loop *l = v.u.loop;
    const int64_t i = (int64_t)l->index0, n = (int64_t)l->n;
    if (ct_str_eq(name, "index0")) return ct_int(i);
    if (ct_str_eq(name, "index")) return ct_int(i + 1);
    if (ct_str_eq(name, "revindex")) return ct_int(n - i);
    if (ct_str_eq(name, "revindex0")) return ct_int(n - i - 1);
    if (ct_str_eq(name, "first")) return ct_bool(i == 0);
    if (ct_str_eq(name, "last")) return ct_bool(i == n - 1);
    if (ct_str_eq(name, "length")) return ct_int(n);
    if (ct_str_eq(name, "depth")) return ct_int(1);
    if (ct_str_eq(name, "depth0")) return ct_int(0);
    if (ct_str_eq(name, "previtem")) return i > 0 ? l->items[i - 1] : ct_undef(name);
    if (ct_str_eq(name, "nextitem")) return i + 1 < n ? l->items[i + 1] : ct_undef(name);
    if (ct_str_eq(name, "cycle")) return method(r, at, v, name, true);
    if (ct_str_eq(name, "changed")) return method(r, at, v, name, false);
    return ct_undef(name);
}

// What getattr(obj, name) finds before any item lookup: a method, a loop attribute, or
// nothing (*found false). Python attributes qlora does not run are errors.
static Value python_attr(Render *r, const Node *at, Value obj, Str name, bool *found) {
    *found = true;
    if (obj.kind == V_STR && in_list(name, STR_METHODS)) return method(r, at, obj, name, true);
    if (obj.kind == V_DICT && in_list(name, DICT_METHODS)) return method(r, at, obj, name, true);
    if (obj.kind == V_LOOP) return loop_attr(r, at, obj, name);
    if ((obj.kind == V_STR && in_list(name, STR_OTHER)) || (obj.kind == V_DICT && in_list(name, DICT_OTHER)) ||
        (obj.kind == V_LIST && in_list(name, LIST_OTHER)) || (is_num(obj) && in_list(name, NUM_OTHER)))
        return method(r, at, obj, name, false);
    *found = false;
    return ct_undef(name);
}

// Refuse __dunder__ names: the sandbox hides them and qlora models none.
static void check_attr_name(Render *r, const Node *at, Str name) {
    if (name.n >= 2 && name.s[0] == '_' && name.s[1] == '_')
        ct_fail(r, at, "the attribute '%.*s' is not supported (the sandbox hides Python internals)",
                (int)(name.n > 40 ? 40 : name.n), name.s);
}

__attribute__((noreturn)) static void fail_undefined(Render *r, const Node *at, Value v, const char *doing) {
    if (v.u.s.n) ct_fail(r, at, "'%.*s' is undefined (%s)", (int)(v.u.s.n > 60 ? 60 : v.u.s.n), v.u.s.s, doing);
    ct_fail(r, at, "an undefined value is used (%s)", doing);
}

Value ct_getattr(Render *r, const Node *at, Value obj, Str name) {
    check_attr_name(r, at, name);
    if (obj.kind == V_UNDEF) fail_undefined(r, at, obj, "reading an attribute of it");
    bool found;
    const Value a = python_attr(r, at, obj, name, &found);
    if (found) return a;
    if (obj.kind == V_DICT || obj.kind == V_NS) {
        const Value *v = ct_dict_get(r, at, obj.u.d, name);
        if (v) return *v;
    }
    return ct_undef(name);
}

// Python's index i into a sequence of n: a negative i counts from the end; false if outside.
static bool seq_index(Value key, size_t n, size_t *out) {
    int64_t i = num_i(key);
    if (i < 0) i += (int64_t)n;
    if (i < 0 || (uint64_t)i >= n) return false;
    *out = (size_t)i;
    return true;
}

// Byte offset of code point k of s (k <= count).
static size_t cp_offset(Str s, size_t k) {
    size_t i = 0;
    for (size_t len; k > 0 && i < s.n; k--) decode(s.s + i, s.n - i, &len), i += len;
    return i;
}

Value ct_getitem(Render *r, const Node *at, Value obj, Value key) {
    if (obj.kind == V_UNDEF) fail_undefined(r, at, obj, "taking an item of it");
    const bool int_key = key.kind == V_INT || key.kind == V_BOOL;
    size_t i;
    if (is_seq(obj) && int_key) return seq_index(key, obj.u.l->n, &i) ? obj.u.l->items[i] : ct_undef((Str){0});
    if (obj.kind == V_STR && int_key) {
        ct_work(r, at, obj.u.s.n);
        if (!seq_index(key, ct_utf8_count(obj.u.s), &i)) return ct_undef((Str){0});
        const size_t off = cp_offset(obj.u.s, i), end = cp_offset((Str){obj.u.s.s + off, obj.u.s.n - off}, 1);
        return ct_str((Str){obj.u.s.s + off, end});
    }
    if (obj.kind == V_DICT && key.kind == V_STR) {
        const Value *v = ct_dict_get(r, at, obj.u.d, key.u.s);
        if (v) return *v;
    }
    if (key.kind != V_STR) return ct_undef((Str){0});
    // not an item: jinja2 tries the attribute of that name
    check_attr_name(r, at, key.u.s);
    bool found;
    const Value a = python_attr(r, at, obj, key.u.s, &found);
    if (found) return a;
    if (obj.kind == V_NS) {
        const Value *v = ct_dict_get(r, at, obj.u.d, key.u.s);
        if (v) return *v;
    }
    return ct_undef(key.u.s);
}

// Python's slice.indices(n) for [start:stop:step] (each may be NULL).
static void slice_indices(Render *r, const Node *at, const Value *b, const Value *e, const Value *st, int64_t n,
                          int64_t *start, int64_t *stop, int64_t *step) {
    const Value *parts[3] = {b, e, st};
    for (int k = 0; k < 3; k++)
        if (parts[k] && parts[k]->kind != V_NONE && parts[k]->kind != V_INT && parts[k]->kind != V_BOOL)
            ct_fail(r, at, "slice indices must be integers or none, not a %s", ct_type_name(*parts[k]));
    *step = st && st->kind != V_NONE ? num_i(*st) : 1;
    if (*step == 0) ct_fail(r, at, "a slice step cannot be zero");
    const int64_t lo = *step < 0 ? -1 : 0, hi = *step < 0 ? n - 1 : n;
    int64_t *out[2] = {start, stop};
    const Value *in[2] = {b, e};
    for (int k = 0; k < 2; k++) {
        if (!in[k] || in[k]->kind == V_NONE) {
            *out[k] = (*step < 0) == (k == 0) ? hi : lo;
            continue;
        }
        int64_t x = num_i(*in[k]);
        if (x < 0)
            x = x + n < lo ? lo : x + n;
        else if (x > hi)
            x = hi;
        *out[k] = x;
    }
}

Value ct_slice(Render *r, const Node *at, Value obj, const Value *b, const Value *e, const Value *st) {
    if (obj.kind == V_UNDEF) fail_undefined(r, at, obj, "slicing it");
    if (!is_seq(obj) && obj.kind != V_STR) // jinja2 slices with Python's [], not its lenient getitem
        ct_fail(r, at, "a %s cannot be sliced", ct_type_name(obj));
    ct_work(r, at, obj.kind == V_STR ? obj.u.s.n : obj.u.l->n);
    const int64_t n = obj.kind == V_STR ? (int64_t)ct_utf8_count(obj.u.s) : (int64_t)obj.u.l->n;
    int64_t start, stop, step;
    slice_indices(r, at, b, e, st, n, &start, &stop, &step);
    size_t count = 0;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) count++;
    if (obj.kind != V_STR) {
        Value out = ct_list(r, at, count, obj.u.l->lkind);
        size_t k = 0;
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.u.l->items[k++] = obj.u.l->items[i];
        return out;
    }
    size_t *offs = ct_alloc(r, at, ((size_t)n + 1) * sizeof *offs), off = 0, len;
    for (size_t k = 0; k < (size_t)n; k++, off += len) offs[k] = off, decode(obj.u.s.s + off, obj.u.s.n - off, &len);
    offs[n] = off;
    Buf out = {0};
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
        ct_buf_put(r, at, &out, obj.u.s.s + offs[i], offs[i + 1] - offs[i]);
    return ct_str((Str){out.p ? out.p : "", out.n});
}

// ---- str() and repr() ----------------------------------------------------------------------
// Python's repr(float): the shortest digits that read back to the same double, in fixed
// notation for exponents -4 .. 15, else d.ddde+XX.
static void float_repr(double d, char out[48]) {
    if (isnan(d)) return (void)strcpy(out, "nan");
    if (isinf(d)) return (void)strcpy(out, d < 0 ? "-inf" : "inf");
    char tmp[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, d);
        if (strtod(tmp, NULL) == d) break;
    }
    char digits[24];
    size_t nd = 0;
    const char *p = tmp + (tmp[0] == '-');
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';
    const int decpt = atoi(p + 1) + 1;
    const char *sign = tmp[0] == '-' ? "-" : "";
    if (decpt > -4 && decpt <= 0)
        snprintf(out, 48, "%s0.%.*s%s", sign, -decpt, "000", digits);
    else if (decpt > 0 && decpt <= 16 && (size_t)decpt >= nd)
        snprintf(out, 48, "%s%s%.*s.0", sign, digits, decpt - (int)nd, "0000000000000000");
    else if (decpt > 0 && decpt <= 16)
        snprintf(out, 48, "%s%.*s.%s", sign, decpt, digits, digits + decpt);
    else
        snprintf(out, 48, "%s%c%s%se%c%02d", sign, digits[0], nd > 1 ? "." : "", digits + 1, decpt - 1 < 0 ? '-' : '+',
                 abs(decpt - 1));
}

// Python's repr of an ASCII string (quotes chosen as Python chooses them).
bool ct_short_escape(unsigned char c, char q, char out[4]) {
    static const char FROM[] = "\\\n\r\t", TO[] = "\\nrt";
    const char *hit = c ? strchr(FROM, c) : NULL;
    if (c != (unsigned char)q && !hit) return false;
    out[0] = '\\';
    out[1] = c == (unsigned char)q ? q : TO[hit - FROM];
    out[2] = '\0';
    return true;
}

static void repr_str(Render *r, const Node *at, Buf *b, Str s) {
    const bool single = memchr(s.s, '\'', s.n) && !memchr(s.s, '"', s.n);
    const char q = single ? '"' : '\'';
    ct_buf_put(r, at, b, &q, 1);
    for (size_t i = 0; i < s.n; i++) {
        const unsigned char c = (unsigned char)s.s[i];
        char esc[8];
        if (c >= 0x80)
            ct_fail(r, at,
                    "printing a list or dict that holds non-ASCII text is not supported "
                    "(Python's repr of it depends on the Python version)");
        if (!ct_short_escape(c, q, esc)) {
            if (c < 0x20 || c == 0x7F)
                snprintf(esc, sizeof esc, "\\x%02x", c);
            else
                esc[0] = (char)c, esc[1] = '\0';
        }
        buf_puts(r, at, b, esc);
    }
    ct_buf_put(r, at, b, &q, 1);
}

// str(v), or repr(v) inside a list or dict.
static void append_value(Render *r, const Node *at, Buf *b, Value v, bool repr);

// repr of a list [a, b] or tuple (a,) / (a, b).
static void repr_list(Render *r, const Node *at, Buf *b, const List *l) {
    if (l->lkind == L_VIEW || l->lkind == L_GEN)
        ct_fail(r, at, "printing a %s is not supported", l->lkind == L_GEN ? "generator" : "dict view");
    buf_puts(r, at, b, l->lkind == L_TUPLE ? "(" : "[");
    for (size_t i = 0; i < l->n; i++) {
        if (i) buf_puts(r, at, b, ", ");
        append_value(r, at, b, l->items[i], true);
    }
    buf_puts(r, at, b, l->lkind == L_TUPLE ? (l->n == 1 ? ",)" : ")") : "]");
}

static void append_value(Render *r, const Node *at, Buf *b, Value v, bool repr) {
    char num[48];
    ct_step(r, at);
    switch (v.kind) {
    case V_UNDEF:
        if (repr) buf_puts(r, at, b, "Undefined");
        return;
    case V_NONE: buf_puts(r, at, b, "None"); return;
    case V_BOOL: buf_puts(r, at, b, v.u.b ? "True" : "False"); return;
    case V_INT:
        snprintf(num, sizeof num, "%lld", (long long)v.u.i);
        buf_puts(r, at, b, num);
        return;
    case V_FLOAT:
        float_repr(v.u.f, num);
        buf_puts(r, at, b, num);
        return;
    case V_STR:
        if (repr)
            repr_str(r, at, b, v.u.s);
        else
            ct_buf_put(r, at, b, v.u.s.s, v.u.s.n);
        return;
    case V_LIST: ct_enter(r, at), repr_list(r, at, b, v.u.l), ct_leave(r); return;
    case V_DICT:
        ct_enter(r, at);
        buf_puts(r, at, b, "{");
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) buf_puts(r, at, b, ", ");
            repr_str(r, at, b, v.u.d->keys[i]);
            buf_puts(r, at, b, ": ");
            append_value(r, at, b, v.u.d->vals[i], true);
        }
        buf_puts(r, at, b, "}");
        ct_leave(r);
        return;
    default: ct_fail(r, at, "printing a %s is not supported", ct_type_name(v));
    }
}

void ct_append_str(Render *r, const Node *at, Buf *b, Value v) { append_value(r, at, b, v, false); }

Str ct_to_str(Render *r, const Node *at, Value v) {
    if (v.kind == V_STR) return v.u.s;
    Buf b = {0};
    append_value(r, at, &b, v, false);
    return (Str){b.p ? b.p : "", b.n};
}

// ---- arithmetic ----------------------------------------------------------------------------
static Value concat_seq(Render *r, const Node *at, Value a, Value b) {
    Value out = ct_list(r, at, a.u.l->n + b.u.l->n, a.u.l->lkind);
    if (a.u.l->n) memcpy(out.u.l->items, a.u.l->items, a.u.l->n * sizeof(Value));
    if (b.u.l->n) memcpy(out.u.l->items + a.u.l->n, b.u.l->items, b.u.l->n * sizeof(Value));
    return out;
}

// seq * times for a string, list or tuple.
static Value repeat(Render *r, const Node *at, Value seq, int64_t times) {
    if (times < 0) times = 0;
    const size_t unit = seq.kind == V_STR ? seq.u.s.n : seq.u.l->n;
    if (unit && (uint64_t)times > CT_MAX_OUTPUT_BYTES / unit)
        ct_fail(r, at, "repeating %lld times is too long", (long long)times);
    if (seq.kind == V_STR) {
        char *p = ct_alloc(r, at, unit * (size_t)times + 1);
        for (int64_t k = 0; k < times; k++) memcpy(p + (size_t)k * unit, seq.u.s.s, unit);
        return ct_str((Str){p, unit * (size_t)times});
    }
    Value out = ct_list(r, at, unit * (size_t)times, seq.u.l->lkind);
    for (int64_t k = 0; k < times; k++) memcpy(out.u.l->items + (size_t)k * unit, seq.u.l->items, unit * sizeof(Value));
    return out;
}

// Integer arithmetic as Python's, failing where Python would grow past 64 bits.
static Value int_op(Render *r, const Node *at, int op, int64_t x, int64_t y) {
    int64_t z = 0;
    bool over = false;
    switch (op) {
    case OP_ADD: over = __builtin_add_overflow(x, y, &z); break;
    case OP_SUB: over = __builtin_sub_overflow(x, y, &z); break;
    case OP_MUL: over = __builtin_mul_overflow(x, y, &z); break;
    case OP_FLOORDIV:
    case OP_MOD:
        if (y == 0) ct_fail(r, at, "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1)
            over = true;
        else {
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) q--, m += y; // Python rounds toward -infinity
            z = op == OP_MOD ? m : q;
        }
        break;
    case OP_POW:
        if (y < 0) {
            if (x == 0) ct_fail(r, at, "0 cannot be raised to a negative power");
            return ct_float(pow((double)x, (double)y));
        }
        z = 1;
        for (int64_t base = x, e = y; e && !over; e >>= 1) {       // squaring: |base| >= 2 overflows only
            if (e & 1) over = __builtin_mul_overflow(z, base, &z); // where the result would too
            if (e > 1 && !over) over = __builtin_mul_overflow(base, base, &base);
        }
        break;
    default: break;
    }
    if (over) ct_fail(r, at, "an integer result beyond 64 bits is not supported");
    return ct_int(z);
}

// Float arithmetic as Python's (floor division and modulo by CPython's rules).
static Value float_op(Render *r, const Node *at, int op, double x, double y) {
    switch (op) {
    case OP_ADD: return ct_float(x + y);
    case OP_SUB: return ct_float(x - y);
    case OP_MUL: return ct_float(x * y);
    case OP_DIV:
        if (y == 0) ct_fail(r, at, "division by zero");
        return ct_float(x / y);
    case OP_FLOORDIV:
    case OP_MOD: { // CPython's float_divmod
        if (y == 0) ct_fail(r, at, "float division or modulo by zero");
        double mod = fmod(x, y), div = (x - mod) / y;
        if (mod != 0) {
            if ((y < 0) != (mod < 0)) mod += y, div -= 1.0;
        } else {
            mod = copysign(0.0, y);
        }
        if (op == OP_MOD) return ct_float(mod);
        if (div == 0) return ct_float(copysign(0.0, x / y));
        const double fl = floor(div);
        return ct_float(div - fl > 0.5 ? fl + 1.0 : fl);
    }
    default: {
        if (x == 0 && y < 0) ct_fail(r, at, "0.0 cannot be raised to a negative power");
        if (x < 0 && y != floor(y) && isfinite(y)) ct_fail(r, at, "a negative number to a fractional power is complex");
        const double z = pow(x, y);
        if (isinf(z) && isfinite(x) && isfinite(y)) ct_fail(r, at, "a float power overflows");
        return ct_float(z);
    }
    }
}

Value ct_binary(Render *r, const Node *at, int op, Value a, Value b) {
    if (a.kind == V_UNDEF || b.kind == V_UNDEF) fail_undefined(r, at, a.kind == V_UNDEF ? a : b, "in arithmetic");
    if (is_num(a) && is_num(b)) {
        if (op == OP_DIV) return float_op(r, at, op, num_f(a), num_f(b));
        if (a.kind != V_FLOAT && b.kind != V_FLOAT) return int_op(r, at, op, num_i(a), num_i(b));
        return float_op(r, at, op, num_f(a), num_f(b));
    }
    if (op == OP_ADD && a.kind == V_STR && b.kind == V_STR) {
        char *p = ct_alloc(r, at, a.u.s.n + b.u.s.n + 1);
        memcpy(p, a.u.s.s, a.u.s.n);
        memcpy(p + a.u.s.n, b.u.s.s, b.u.s.n);
        return ct_str((Str){p, a.u.s.n + b.u.s.n});
    }
    if (op == OP_ADD && is_seq(a) && is_seq(b) && a.u.l->lkind == b.u.l->lkind) return concat_seq(r, at, a, b);
    if (op == OP_MUL && (a.kind == V_STR || is_seq(a)) && (b.kind == V_INT || b.kind == V_BOOL))
        return repeat(r, at, a, num_i(b));
    if (op == OP_MUL && (b.kind == V_STR || is_seq(b)) && (a.kind == V_INT || a.kind == V_BOOL))
        return repeat(r, at, b, num_i(a));
    static const char *const SYM[] = {"+", "-", "/", "//", "*", "%", "**"};
    ct_fail(r, at, "'%s' between a %s and a %s is not supported", op <= OP_POW ? SYM[op] : "?", ct_type_name(a),
            ct_type_name(b));
}

Value ct_unary(Render *r, const Node *at, int op, Value a) {
    if (a.kind == V_UNDEF) fail_undefined(r, at, a, "in arithmetic");
    if (!is_num(a)) ct_fail(r, at, "unary '%s' on a %s is not supported", op == OP_NEG ? "-" : "+", ct_type_name(a));
    if (op == OP_POS) return a.kind == V_BOOL ? ct_int(a.u.b) : a;
    if (a.kind == V_FLOAT) return ct_float(-a.u.f);
    if (num_i(a) == INT64_MIN) ct_fail(r, at, "an integer result beyond 64 bits is not supported");
    return ct_int(-num_i(a));
}
