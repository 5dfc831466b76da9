// chat_template_eval.c: rendering a parsed chat template: scopes as jinja2 keeps them, the
// statements, the expressions, and the public render functions (see chat_template.h).
//
// Scopes (checked against jinja2 3.1): the template's variables and its top-level `set`s share
// one scope; every iteration of a for loop (and its else block) runs in a fresh scope over the
// enclosing one, so a `set` inside a loop is gone at the next iteration and after the loop
// (templates carry values out of loops with namespace()); if blocks open no scope.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template_impl.h"

// ---- failure, memory, limits ---------------------------------------------------------------
void ct_fail(Render *r, const Node *at, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (at)
        error_set(r->err, "%s:%d: %s", r->t->name, at->line, msg);
    else
        error_set(r->err, "%s: %s", r->t->name, msg);
    longjmp(r->jb, 1);
}

void *ct_alloc(Render *r, const Node *at, size_t bytes) {
    void *p = ct_pool_try_alloc(&r->pool, bytes);
    if (!p) ct_fail(r, at, "the rendering needs more than %u MiB", CT_MAX_POOL_BYTES >> 20);
    return p;
}

Str ct_str_dup(Render *r, const Node *at, const char *s, size_t n) {
    char *c = ct_alloc(r, at, n + 1);
    if (n) memcpy(c, s, n);
    return (Str){c, n};
}

void ct_step(Render *r, const Node *at) {
    if (++r->steps > CT_MAX_STEPS) ct_fail(r, at, "the rendering takes more than %llu steps", CT_MAX_STEPS);
}

void ct_enter(Render *r, const Node *at) {
    if (++r->depth > CT_MAX_VALUE_DEPTH) ct_fail(r, at, "values nest deeper than %d", CT_MAX_VALUE_DEPTH);
}

void ct_work(Render *r, const Node *at, size_t units) {
    r->steps += units / 64;
    ct_step(r, at);
}

// ---- scopes --------------------------------------------------------------------------------
static Scope *scope_new(Render *r, const Node *at, Scope *parent) {
    Scope *s = ct_alloc(r, at, sizeof *s);
    s->parent = parent;
    return s;
}

// Set name in scope s (not its parents), as {% set %} does.
static void scope_set(Render *r, const Node *at, Scope *s, Str name, Value v) { ct_dict_set(r, at, &s->vars, name, v); }

// The globals of transformers' environment; names jinja2 defines that qlora does not run are
// functions that fail when called (so `is defined` still answers as jinja2 does).
static Value lookup_global(Str name) {
    static Func G[] = {{F_RAISE, {"raise_exception", 15}, {0}},
                       {F_STRFTIME, {"strftime_now", 12}, {0}},
                       {F_NAMESPACE, {"namespace", 9}, {0}},
                       {F_RANGE, {"range", 5}, {0}},
                       {F_DICT, {"dict", 4}, {0}},
                       {F_UNSUPPORTED, {"lipsum", 6}, {0}},
                       {F_UNSUPPORTED, {"cycler", 6}, {0}},
                       {F_UNSUPPORTED, {"joiner", 6}, {0}}};
    for (size_t i = 0; i < sizeof G / sizeof G[0]; i++)
        if (ct_str_same(G[i].name, name)) {
            Value v = {.kind = V_FUNC};
            v.u.fn = &G[i];
            return v;
        }
    return ct_undef(name);
}

// A name's value: the innermost scope that has it, then the globals, else undefined.
static Value lookup(Render *r, const Node *at, const Scope *s, Str name) {
    for (; s; s = s->parent) {
        const Value *v = ct_dict_get(r, at, &s->vars, name);
        if (v) return *v;
    }
    return lookup_global(name);
}

// ---- expressions ---------------------------------------------------------------------------
static Value eval(Render *r, Scope *s, const Node *n);

// The arguments of a call, filter or test (first_pos, if any, goes first); keywords once each.
static Args eval_args(Render *r, Scope *s, const Node *n, const Value *first_pos) {
    Args a = {0};
    const size_t extra = first_pos != NULL;
    a.n_pos = n->n_items + extra;
    a.pos = a.n_pos ? ct_alloc(r, n, a.n_pos * sizeof *a.pos) : NULL;
    if (first_pos) a.pos[0] = *first_pos;
    for (size_t i = 0; i < n->n_items; i++) a.pos[extra + i] = eval(r, s, n->items[i]);
    a.n_kw = n->n_items2;
    a.kw_names = a.n_kw ? ct_alloc(r, n, a.n_kw * sizeof *a.kw_names) : NULL;
    a.kw_vals = a.n_kw ? ct_alloc(r, n, a.n_kw * sizeof *a.kw_vals) : NULL;
    for (size_t i = 0; i < a.n_kw; i++) {
        a.kw_names[i] = n->items2[i]->s;
        a.kw_vals[i] = eval(r, s, n->items2[i]->a);
        for (size_t j = 0; j < i; j++)
            if (ct_str_same(a.kw_names[j], a.kw_names[i]))
                ct_fail(r, n, "the keyword argument '%.*s' is given twice", (int)a.kw_names[i].n, a.kw_names[i].s);
    }
    return a;
}

// [a, b], (a, b) or {k: v} (string keys only).
static Value eval_literal(Render *r, Scope *s, const Node *n) {
    if (n->kind != E_DICT) {
        Value out = ct_list(r, n, n->n_items, n->kind == E_TUPLE ? L_TUPLE : L_LIST);
        for (size_t i = 0; i < n->n_items; i++) out.u.l->items[i] = eval(r, s, n->items[i]);
        return out;
    }
    Value out = {.kind = V_DICT};
    out.u.d = ct_dict_new(r, n);
    for (size_t i = 0; i + 1 < n->n_items; i += 2) {
        const Value k = eval(r, s, n->items[i]);
        if (k.kind != V_STR)
            ct_fail(r, n->items[i], "dict keys other than strings are not supported (found a %s)", ct_type_name(k));
        ct_dict_set(r, n, out.u.d, k.u.s, eval(r, s, n->items[i + 1]));
    }
    return out;
}

// Python's chained comparison: a < b < c is (a < b) and (b < c), b evaluated once.
static Value eval_compare(Render *r, Scope *s, const Node *n) {
    Value left = eval(r, s, n->a);
    for (size_t i = 0; i < n->n_items; i++) {
        const Value right = eval(r, s, n->items[i]);
        bool ok;
        switch (n->ops[i]) {
        case OP_EQ: ok = ct_equal(r, n, left, right); break;
        case OP_NE: ok = !ct_equal(r, n, left, right); break;
        case OP_LT: ok = ct_compare(r, n, left, right) < 0; break;
        case OP_LE: ok = ct_compare(r, n, left, right) <= 0; break;
        case OP_GT: ok = ct_compare(r, n, left, right) > 0; break;
        case OP_GE: ok = ct_compare(r, n, left, right) >= 0; break;
        case OP_IN: ok = ct_contains(r, n, left, right); break;
        default: ok = !ct_contains(r, n, left, right); break;
        }
        if (!ok) return ct_bool(false);
        left = right;
    }
    return ct_bool(true);
}

// x[a:b:c].
static Value eval_slice(Render *r, Scope *s, const Node *n) {
    const Value obj = eval(r, s, n->a);
    Value v[3];
    const Node *parts[3] = {n->b, n->c, n->d};
    for (int k = 0; k < 3; k++)
        if (parts[k]) v[k] = eval(r, s, parts[k]);
    return ct_slice(r, n, obj, n->b ? &v[0] : NULL, n->c ? &v[1] : NULL, n->d ? &v[2] : NULL);
}

// not, -x, +x; and / or (short-circuit, giving an operand as Python does); arithmetic.
static Value eval_operator(Render *r, Scope *s, const Node *n) {
    if (n->kind == E_UNARY) {
        const Value a = eval(r, s, n->a);
        return n->op == OP_NOT ? ct_bool(!ct_truthy(r, n, a)) : ct_unary(r, n, n->op, a);
    }
    const Value a = eval(r, s, n->a);
    if (n->op == OP_AND) return ct_truthy(r, n, a) ? eval(r, s, n->b) : a; // Python's and/or give an operand
    if (n->op == OP_OR) return ct_truthy(r, n, a) ? a : eval(r, s, n->b);
    return ct_binary(r, n, n->op, a, eval(r, s, n->b));
}

// The value of expression n in scope s.
static Value eval(Render *r, Scope *s, const Node *n) {
    ct_step(r, n);
    switch (n->kind) {
    case E_CONST: return n->value;
    case E_NAME: return lookup(r, n, s, n->s);
    case E_LIST:
    case E_TUPLE:
    case E_DICT: return eval_literal(r, s, n);
    case E_GETATTR: return ct_getattr(r, n, eval(r, s, n->a), n->s);
    case E_GETITEM: {
        const Value obj = eval(r, s, n->a);
        return ct_getitem(r, n, obj, eval(r, s, n->b));
    }
    case E_SLICE: return eval_slice(r, s, n);
    case E_CALL: {
        const Value fn = eval(r, s, n->a);
        const Args a = eval_args(r, s, n, NULL);
        return ct_call(r, n, fn, &a);
    }
    case E_FILTER:
    case E_TEST: {
        const Value v = eval(r, s, n->a);
        const Args a = eval_args(r, s, n, NULL);
        if (!n->fn) ct_fail(r, n, CT_UNSUPPORTED_NAME, n->kind == E_FILTER ? "filter" : "test", (int)n->s.n, n->s.s);
        if (n->kind == E_FILTER) return ((const FilterDef *)n->fn)->fn(r, n, v, &a);
        const TestDef *t = n->fn;
        return ct_bool(t->fn(r, n, t, v, &a));
    }
    case E_UNARY:
    case E_BINARY: return eval_operator(r, s, n);
    case E_CONCAT: {
        Buf b = {0};
        for (size_t i = 0; i < n->n_items; i++) ct_append_str(r, n, &b, eval(r, s, n->items[i]));
        return ct_str((Str){b.p ? b.p : "", b.n});
    }
    case E_COMPARE: return eval_compare(r, s, n);
    case E_COND:
        if (ct_truthy(r, n, eval(r, s, n->a))) return eval(r, s, n->b);
        return n->c ? eval(r, s, n->c) : ct_undef((Str){0});
    default: ct_fail(r, n, "internal: node %d is not an expression", n->kind);
    }
}

// ---- statements ----------------------------------------------------------------------------
typedef enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE } Flow;

static Flow exec_body(Render *r, Scope *s, Node *const *body, size_t n);

// A block's scope starts with the names jinja2 starts undefined in it (chat_template_scope.c).
static void bind_undefined(Render *r, const Node *at, Scope *s, const Str *names, size_t n) {
    for (size_t i = 0; i < n; i++) scope_set(r, at, s, names[i], ct_undef(names[i]));
}

// Bind a loop item to the loop's names: one name takes it whole, several unpack it.
static void bind_targets(Render *r, const Node *at, Scope *s, const Node *targets, Value item) {
    if (targets->n_items == 1) return scope_set(r, at, s, targets->items[0]->s, item);
    size_t n;
    const Value *parts = ct_iterate(r, at, item, &n);
    if (n != targets->n_items) ct_fail(r, at, "cannot unpack %zu values into %zu loop variables", n, targets->n_items);
    for (size_t i = 0; i < n; i++) scope_set(r, at, s, targets->items[i]->s, parts[i]);
}

// A for loop: the items (filtered by its if), one scope per iteration with loop, else if none.
static Flow exec_for(Render *r, Scope *s, const Node *n) {
    size_t count;
    const Value *items = ct_iterate(r, n, eval(r, s, n->a), &count);
    if (n->b) { // for x in xs if cond: loop.index and loop.length count the kept items only
        Value *kept = count ? ct_alloc(r, n, count * sizeof *kept) : NULL;
        size_t k = 0;
        Scope *fs = scope_new(r, n, s);
        for (size_t i = 0; i < count; i++) {
            ct_step(r, n);
            fs->vars.n = 0; // nothing can hold on to a scope (there are no macros), so it is reused
            bind_targets(r, n, fs, n->c, items[i]);
            if (ct_truthy(r, n->b, eval(r, fs, n->b))) kept[k++] = items[i];
        }
        items = kept, count = k;
    }
    Loop *loop = ct_alloc(r, n, sizeof *loop);
    loop->items = items;
    loop->n = count;
    Value lv = {.kind = V_LOOP};
    lv.u.loop = loop;
    Scope *is = scope_new(r, n, s);
    for (size_t i = 0; i < count; i++) {
        ct_step(r, n); // an empty body costs steps too
        loop->index0 = i;
        is->vars.n = 0; // a fresh scope for every iteration, in the same memory
        scope_set(r, n, is, ct_cstr("loop"), lv);
        bind_targets(r, n, is, n->c, items[i]);
        bind_undefined(r, n, is, n->undef, n->n_undef);
        if (exec_body(r, is, n->items, n->n_items) == FLOW_BREAK) break;
    }
    if (!count && n->n_items2) {
        Scope *es = scope_new(r, n, s);
        bind_undefined(r, n, es, n->undef2, n->n_undef2);
        exec_body(r, es, n->items2, n->n_items2);
    }
    return FLOW_NEXT;
}

// Run statement n: output goes to r->out.
static Flow exec(Render *r, Scope *s, const Node *n) {
    ct_step(r, n);
    switch (n->kind) {
    case N_TEXT: ct_buf_put(r, n, r->out, n->s.s, n->s.n); return FLOW_NEXT;
    case N_OUTPUT: ct_append_str(r, n, r->out, eval(r, s, n->a)); return FLOW_NEXT;
    case N_IF:
        if (ct_truthy(r, n, eval(r, s, n->a))) return exec_body(r, s, n->items, n->n_items);
        return exec_body(r, s, n->items2, n->n_items2);
    case N_FOR: return exec_for(r, s, n);
    case N_SET: {
        const Value v = eval(r, s, n->a);
        if (!n->flag) return scope_set(r, n, s, n->s, v), FLOW_NEXT;
        const Value ns = lookup(r, n, s, n->s);
        if (ns.kind != V_NS)
            ct_fail(r, n, "cannot set an attribute of '%.*s', a %s: only a namespace() takes one", (int)n->s.n, n->s.s,
                    ct_type_name(ns));
        ct_dict_set(r, n, ns.u.d, n->name, v);
        return FLOW_NEXT;
    }
    case N_SET_BLOCK: { // its body is a block of its own: what it sets stays inside
        Buf b = {0}, *saved = r->out;
        r->out = &b;
        Scope *inner = scope_new(r, n, s);
        bind_undefined(r, n, inner, n->undef, n->n_undef);
        const Flow f = exec_body(r, inner, n->items, n->n_items);
        r->out = saved;
        scope_set(r, n, s, n->s, ct_str((Str){b.p ? b.p : "", b.n}));
        return f;
    }
    case N_BREAK: return FLOW_BREAK;
    case N_CONTINUE: return FLOW_CONTINUE;
    case N_BLOCK: { // {% generation %}: a block of its own too
        Scope *inner = scope_new(r, n, s);
        bind_undefined(r, n, inner, n->undef, n->n_undef);
        return exec_body(r, inner, n->items, n->n_items);
    }
    default: ct_fail(r, n, "internal: node %d is not a statement", n->kind);
    }
}

// Run statements until one breaks or continues a loop.
static Flow exec_body(Render *r, Scope *s, Node *const *body, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const Flow f = exec(r, s, body[i]);
        if (f != FLOW_NEXT) return f;
    }
    return FLOW_NEXT;
}

// ---- variables from C and from JSON --------------------------------------------------------
static Str checked_str(Render *r, const char *s, const char *what, size_t index) {
    const Str v = ct_cstr(s);
    if (!ct_utf8_valid(v.s, v.n)) ct_fail(r, NULL, "%s %zu is not valid UTF-8", what, index);
    return v;
}

// A JSON value as Python's json.loads would give it (strings checked as UTF-8).
static Value from_json(Render *r, const cJSON *j, int depth) {
    if (depth > 1000) ct_fail(r, NULL, "the variables nest deeper than 1000");
    ct_step(r, NULL);
    if (cJSON_IsNull(j)) return ct_none();
    if (cJSON_IsBool(j)) return ct_bool(cJSON_IsTrue(j));
    if (cJSON_IsString(j)) return ct_str(checked_str(r, j->valuestring, "a string of the variables, number", 0));
    if (cJSON_IsNumber(j)) {
        const double d = j->valuedouble;
        if (isfinite(d) && d == floor(d) && fabs(d) <= 9007199254740992.0) return ct_int((int64_t)d);
        if (isfinite(d) && d == floor(d))
            ct_fail(r, NULL, "the number %.17g in the variables is an integer beyond 2^53: not supported", d);
        return ct_float(d);
    }
    if (cJSON_IsArray(j)) {
        Value out = ct_list(r, NULL, (size_t)cJSON_GetArraySize(j), L_LIST);
        size_t i = 0;
        for (const cJSON *c = j->child; c; c = c->next) out.u.l->items[i++] = from_json(r, c, depth + 1);
        return out;
    }
    if (cJSON_IsObject(j)) {
        Value out = {.kind = V_DICT};
        out.u.d = ct_dict_new(r, NULL);
        for (const cJSON *c = j->child; c; c = c->next)
            ct_dict_set(r, NULL, out.u.d, checked_str(r, c->string, "a key of the variables, number", 0),
                        from_json(r, c, depth + 1));
        return out;
    }
    ct_fail(r, NULL, "a JSON value of an unknown kind in the variables");
}

typedef struct {
    const ChatRenderArgs *args;
    const cJSON *json;
} Vars;

// The template's variables in the root scope: transformers' defaults, then the caller's.
static void bind_vars(Render *r, Scope *root, const Vars *v) {
    scope_set(r, NULL, root, ct_cstr("tools"), ct_none());
    scope_set(r, NULL, root, ct_cstr("documents"), ct_none());
    scope_set(r, NULL, root, ct_cstr("add_generation_prompt"), ct_bool(false));
    if (v->json) {
        if (!cJSON_IsObject(v->json)) ct_fail(r, NULL, "the variables must be a JSON object");
        if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(v->json, "messages")))
            ct_fail(r, NULL, "the variables need \"messages\", an array");
        const Value d = from_json(r, v->json, 0);
        for (size_t i = 0; i < d.u.d->n; i++) scope_set(r, NULL, root, d.u.d->keys[i], d.u.d->vals[i]);
        return;
    }
    const ChatRenderArgs *a = v->args;
    Value msgs = ct_list(r, NULL, a->n_messages, L_LIST);
    for (size_t i = 0; i < a->n_messages; i++) {
        Value m = {.kind = V_DICT};
        m.u.d = ct_dict_new(r, NULL);
        ct_dict_set(r, NULL, m.u.d, ct_cstr("role"),
                    ct_str(checked_str(r, a->messages[i].role, "the role of message", i)));
        ct_dict_set(r, NULL, m.u.d, ct_cstr("content"),
                    ct_str(checked_str(r, a->messages[i].content, "the content of message", i)));
        msgs.u.l->items[i] = m;
    }
    scope_set(r, NULL, root, ct_cstr("messages"), msgs);
    if (a->bos_token)
        scope_set(r, NULL, root, ct_cstr("bos_token"), ct_str(checked_str(r, a->bos_token, "bos_token", 0)));
    if (a->eos_token)
        scope_set(r, NULL, root, ct_cstr("eos_token"), ct_str(checked_str(r, a->eos_token, "eos_token", 0)));
    scope_set(r, NULL, root, ct_cstr("add_generation_prompt"), ct_bool(a->add_generation_prompt));
}

// Render t over v into *out; the only setjmp of a render (see chat_template_impl.h).
static bool render(const ChatTemplate *t, const Vars *v, char **out, size_t *out_len, Error *err) {
    *out = NULL;
    if (out_len) *out_len = 0;
    Render *r = xcalloc(1, sizeof *r);
    r->t = t;
    r->err = err;
    ct_pool_init(&r->pool, CT_MAX_POOL_BYTES);
    bool ok = false;
    if (!setjmp(r->jb)) {
        Buf b = {0};
        r->out = &b;
        Scope *root = scope_new(r, NULL, NULL);
        bind_vars(r, root, v);
        bind_undefined(r, NULL, root, t->root->undef, t->root->n_undef);
        exec_body(r, root, t->root->items, t->root->n_items);
        *out = xmalloc(b.n + 1);
        if (b.n) memcpy(*out, b.p, b.n);
        (*out)[b.n] = '\0';
        if (out_len) *out_len = b.n;
        ok = true;
    }
    ct_pool_free(&r->pool);
    free(r);
    return ok;
}

bool chat_template_render(const ChatTemplate *t, const ChatRenderArgs *args, char **out, size_t *out_len, Error *err) {
    const Vars v = {args, NULL};
    return render(t, &v, out, out_len, err);
}

bool chat_template_render_json(const ChatTemplate *t, const cJSON *vars, char **out, size_t *out_len, Error *err) {
    const Vars v = {NULL, vars};
    return render(t, &v, out, out_len, err);
}
