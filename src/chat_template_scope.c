// chat_template_scope.c: which names start undefined in a block, by jinja2's rules.
//
// jinja2 decides scoping when it compiles a template (jinja2/idtracking.py, 3.1): every block
// with a scope of its own (the template, a for loop's body and its else, a {% set %} block, a
// {% generation %} block) gets a symbol for each name it assigns, and the symbol's first value
// is the enclosing block's (when an enclosing block uses the name at all), the context's (when
// the block reads the name before assigning it), or *undefined*. The last case is the one a
// dynamic lookup gets wrong: a loop nested in the block that reads the name before the block
// assigns it sees undefined, not the context's value. This file repeats jinja2's analysis over
// qlora's tree, including its rules for assignments inside if / elif / else branches, and records
// the names that start undefined; the renderer binds them so when the block starts.
#include <stdio.h>
#include <string.h>

#include "chat_template_impl.h"

enum { LOAD_NONE, LOAD_RESOLVE, LOAD_ALIAS, LOAD_UNDEF, LOAD_PARAM };

#define SCOPE_MAX_WORK 200000000ull // names compared: far beyond any real template

typedef struct {
    Str name;
    bool ref, store;
    uint8_t load;
} Sym;

typedef struct Syms Syms;
struct Syms {
    const Syms *parent;
    Sym *v;
    size_t n, cap;
};

typedef struct {
    Pool *pool;
    uint64_t work;
    bool failed; // out of memory or work: the caller reports it
    jmp_buf jb;
} Ana;

// Memory for the analysis, or unwind to ct_scope_analyze.
static void *ana_alloc(Ana *A, size_t bytes) {
    void *p = ct_pool_try_alloc(A->pool, bytes);
    if (!p) A->failed = true, longjmp(A->jb, 1);
    return p;
}

// Index of name in S (not its parents), or -1; every comparison counts as work.
static long sym_find(Ana *A, const Syms *S, Str name) {
    A->work += S->n;
    if (A->work > SCOPE_MAX_WORK) A->failed = true, longjmp(A->jb, 1);
    for (size_t i = 0; i < S->n; i++)
        if (ct_str_same(S->v[i].name, name)) return (long)i;
    return -1;
}

// Does S or a block around it have a symbol for name (jinja2's find_ref)?
static bool has_ref(Ana *A, const Syms *S, Str name) {
    for (; S; S = S->parent) {
        const long i = sym_find(A, S, name);
        if (i >= 0 && S->v[i].ref) return true;
    }
    return false;
}

// name's entry in S, added if missing.
static Sym *sym_get(Ana *A, Syms *S, Str name) {
    const long i = sym_find(A, S, name);
    if (i >= 0) return &S->v[i];
    if (S->n == S->cap) {
        const size_t cap = S->cap ? 2 * S->cap : 8;
        Sym *v = ana_alloc(A, cap * sizeof *v);
        if (S->n) memcpy(v, S->v, S->n * sizeof *v);
        S->v = v, S->cap = cap;
    }
    S->v[S->n] = (Sym){name, false, false, LOAD_NONE};
    return &S->v[S->n++];
}

// jinja2's Symbols.load: a name no block knows yet is read from the context.
static void sym_load(Ana *A, Syms *S, Str name) {
    if (!has_ref(A, S, name)) *sym_get(A, S, name) = (Sym){name, true, false, LOAD_RESOLVE};
}

// jinja2's Symbols.store: a first assignment aliases the enclosing block's symbol, or starts undefined.
static void sym_store(Ana *A, Syms *S, Str name) {
    Sym *s = sym_get(A, S, name);
    s->store = true;
    if (!s->ref) s->ref = true, s->load = S->parent && has_ref(A, S->parent, name) ? LOAD_ALIAS : LOAD_UNDEF;
}

static Syms *syms_copy(Ana *A, const Syms *S) {
    Syms *c = ana_alloc(A, sizeof *c);
    *c = *S;
    c->cap = S->n;
    c->v = S->n ? ana_alloc(A, S->n * sizeof *c->v) : NULL;
    if (S->n) memcpy(c->v, S->v, S->n * sizeof *c->v);
    return c;
}

// jinja2's Symbols.branch_update after an if: merge the three branches (body, elifs, else) in
// that order; a name assigned in some branches but not all reads the enclosing block's or the
// context's value where no branch assigned it.
static void branch_update(Ana *A, Syms *S, Syms *const B[3]) {
    Syms counts = {0};
    for (int b = 0; b < 3; b++)
        for (size_t i = 0; i < B[b]->n; i++) {
            if (!B[b]->v[i].store) continue;
            const long j = sym_find(A, S, B[b]->v[i].name);
            if (j >= 0 && S->v[j].store) continue;
            sym_get(A, &counts, B[b]->v[i].name)->load++; // load counts branches here
        }
    for (int b = 0; b < 3; b++)
        for (size_t i = 0; i < B[b]->n; i++) {
            Sym *s = sym_get(A, S, B[b]->v[i].name);
            if (B[b]->v[i].ref) s->ref = true, s->load = B[b]->v[i].load;
            if (B[b]->v[i].store) s->store = true;
        }
    for (size_t i = 0; i < counts.n; i++)
        if (counts.v[i].load != 3)
            sym_get(A, S, counts.v[i].name)->load =
                S->parent && has_ref(A, S->parent, counts.v[i].name) ? LOAD_ALIAS : LOAD_RESOLVE;
}

static void visit_stmt(Ana *A, Syms *S, const Node *n);

// The names an expression reads.
static void visit_expr(Ana *A, Syms *S, const Node *n) {
    if (!n) return;
    if (n->kind == E_NAME) sym_load(A, S, n->s);
    visit_expr(A, S, n->a);
    visit_expr(A, S, n->b);
    visit_expr(A, S, n->c);
    visit_expr(A, S, n->d);
    for (size_t i = 0; i < n->n_items; i++) visit_expr(A, S, n->items[i]);
    for (size_t i = 0; i < n->n_items2; i++) visit_expr(A, S, n->items2[i]);
}

static void visit_list(Ana *A, Syms *S, Node *const *items, size_t count) {
    for (size_t i = 0; i < count; i++) visit_stmt(A, S, items[i]);
}

// The else part of an if: its statements, after any elifs (elif nodes are N_IF with flag set).
static const Node *else_of(const Node *n) {
    while (n->n_items2 == 1 && n->items2[0]->kind == N_IF && n->items2[0]->flag) n = n->items2[0];
    return n;
}

// jinja2's visit_If: the test, then each branch in a copy of the symbols, then branch_update.
// An elif is an if of its own (test and body) inside the elif branch; elifs=false visits n alone.
static void visit_if(Ana *A, Syms *S, const Node *n, bool elifs) {
    visit_expr(A, S, n->a);
    Syms *B[3] = {syms_copy(A, S), syms_copy(A, S), syms_copy(A, S)};
    visit_list(A, B[0], n->items, n->n_items);
    if (elifs) {
        for (const Node *e = n; e->n_items2 == 1 && e->items2[0]->kind == N_IF && e->items2[0]->flag;)
            e = e->items2[0], visit_if(A, B[1], e, false);
        const Node *last = else_of(n);
        visit_list(A, B[2], last->items2, last->n_items2);
    }
    branch_update(A, S, B);
}

// What one statement of a block reads and assigns (blocks nested in it are analysed on their own).
static void visit_stmt(Ana *A, Syms *S, const Node *n) {
    switch (n->kind) {
    case N_OUTPUT: visit_expr(A, S, n->a); break;
    case N_SET:
        visit_expr(A, S, n->a);
        if (n->flag) sym_load(A, S, n->s); // ns.attr = ...: reads ns
        else sym_store(A, S, n->s);
        break;
    case N_SET_BLOCK: sym_store(A, S, n->s); break;
    case N_FOR: visit_expr(A, S, n->a); break; // the iterable; the rest is the loop's block
    case N_IF: visit_if(A, S, n, true); break;
    default: break;
    }
}

// The names that start undefined in a block, kept in the template's pool.
static void record(Ana *A, Pool *keep, const Syms *S, Str **out, size_t *n_out) {
    size_t k = 0;
    for (size_t i = 0; i < S->n; i++) k += S->v[i].ref && S->v[i].load == LOAD_UNDEF;
    if (!k) return;
    *out = ct_pool_try_alloc(keep, k * sizeof **out);
    if (!*out) A->failed = true, longjmp(A->jb, 1);
    for (size_t i = 0; i < S->n; i++)
        if (S->v[i].ref && S->v[i].load == LOAD_UNDEF) (*out)[(*n_out)++] = S->v[i].name;
}

static void analyze_nested(Ana *A, Pool *keep, const Syms *S, Node *const *items, size_t count);

// One block: its statements (with targets as a loop's parameters), then the blocks inside it.
static void analyze_block(Ana *A, Pool *keep, const Syms *parent, Node *const *items, size_t count, const Node *targets,
                          Str **out, size_t *n_out) {
    Syms *S = ana_alloc(A, sizeof *S);
    S->parent = parent;
    for (size_t i = 0; targets && i < targets->n_items; i++) {
        Sym *s = sym_get(A, S, targets->items[i]->s);
        *s = (Sym){s->name, true, true, LOAD_PARAM};
    }
    visit_list(A, S, items, count);
    record(A, keep, S, out, n_out);
    analyze_nested(A, keep, S, items, count);
}

// The blocks with scopes of their own among items (inside if branches too).
static void analyze_nested(Ana *A, Pool *keep, const Syms *S, Node *const *items, size_t count) {
    for (size_t i = 0; i < count; i++) {
        Node *n = items[i];
        if (n->kind == N_IF) {
            analyze_nested(A, keep, S, n->items, n->n_items);
            analyze_nested(A, keep, S, n->items2, n->n_items2);
        } else if (n->kind == N_FOR) {
            analyze_block(A, keep, S, n->items, n->n_items, n->c, &n->undef, &n->n_undef);
            analyze_block(A, keep, S, n->items2, n->n_items2, NULL, &n->undef2, &n->n_undef2);
        } else if (n->kind == N_SET_BLOCK || n->kind == N_BLOCK) {
            analyze_block(A, keep, S, n->items, n->n_items, NULL, &n->undef, &n->n_undef);
        }
    }
}

bool ct_scope_analyze(ChatTemplate *t, Pool *tmp, char *msg, size_t cap) {
    Ana *A = ct_pool_try_alloc(tmp, sizeof *A);
    if (!A) return snprintf(msg, cap, "the template needs too much memory to analyse"), false;
    A->pool = tmp;
    if (setjmp(A->jb)) {
        snprintf(msg, cap, "the template's blocks are too large to analyse (names or branches)");
        return false;
    }
    Node *root = t->root;
    analyze_block(A, &t->pool, NULL, root->items, root->n_items, NULL, &root->undef, &root->n_undef);
    return true;
}
