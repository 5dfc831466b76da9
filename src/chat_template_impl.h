// chat_template_impl.h: what chat_template.c (lexer, parser), chat_template_eval.c (statements,
// expressions, scopes) and chat_template_lib.c (values' Python behaviour: filters, tests,
// methods, str(), repr(), json.dumps) share. Not a public interface: see chat_template.h.
//
// Errors unwind with longjmp. The evaluator is a deep recursion over ~100 small functions, and
// an Error threaded through each of them would double the code for nothing a caller could use:
// every allocation of a parse or a render lives in one Pool that the entry point frees, so a
// jump back to chat_template_parse / chat_template_render (the only setjmp sites) leaks nothing.
// No jump ever leaves this module.
#ifndef QLORA_CHAT_TEMPLATE_IMPL_H
#define QLORA_CHAT_TEMPLATE_IMPL_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"

// ---- limits (every input is untrusted) ----------------------------------------------------
#define CT_MAX_TEMPLATE_BYTES (4u << 20) // the largest real templates are ~30 KB
#define CT_MAX_NEST 128                  // nesting: blocks, brackets, operators of a chain
#define CT_MAX_POOL_BYTES (256u << 20)   // everything one render allocates
#define CT_MAX_OUTPUT_BYTES (64u << 20)  // one rendering
#define CT_MAX_STEPS 5000000ull          // steps of one render: nodes, and 64 bytes or items scanned
#define CT_MAX_VALUE_DEPTH 1000          // lists and dicts inside each other (JSON, or built)
#define CT_MAX_RANGE 100000              // jinja2's sandbox refuses longer range()s too

// ---- memory: a bump allocator freed all at once --------------------------------------------
typedef struct PoolBlock PoolBlock;
typedef struct {
    PoolBlock *head;
    size_t used_bytes; // over every block, checked against cap_bytes
    size_t cap_bytes;
} Pool;

// ---- values: Python's objects as jinja2 sees them -----------------------------------------
typedef struct {
    const char *s; // UTF-8, not NUL-terminated
    size_t n;      // bytes
} Str;

typedef enum {
    V_UNDEF, // jinja2's Undefined; u.s holds the name that was looked up (for messages)
    V_NONE,
    V_BOOL,
    V_INT, // int64; overflow is an error, where Python would grow
    V_FLOAT,
    V_STR,
    V_LIST, // list, tuple, dict view or generator: see ListKind
    V_DICT, // a mapping with string keys, in insertion order
    V_NS,   // namespace(): a Dict whose attributes `set` may change
    V_LOOP, // the `loop` object of a for loop
    V_FUNC, // a global function or a bound method
} VKind;

typedef enum {
    L_LIST,
    L_TUPLE, // prints as (a, b); never equal to a list
    L_VIEW,  // dict.items()/keys()/values(): iterable and sized, not printable or comparable
    L_GEN,   // a generator (select, map, reverse, |items): iterated once, then empty
} ListKind;

struct List;
struct Dict;
struct Loop;
struct Func;

typedef struct Value {
    uint8_t kind; // VKind
    union {
        bool b;
        int64_t i;
        double f;
        Str s; // V_STR; V_UNDEF's name
        struct List *l;
        struct Dict *d; // V_DICT and V_NS
        struct Loop *loop;
        struct Func *fn;
    } u;
} Value;

typedef struct List {
    Value *items;
    size_t n;
    uint8_t lkind; // ListKind
    bool consumed; // L_GEN only: a second pass sees nothing (refused: see ct_iterate)
} List;

typedef struct Dict {
    Str *keys;
    Value *vals;
    size_t n, cap;
} Dict;

typedef struct Loop {
    const Value *items;
    size_t n, index0;
} Loop;

typedef enum {
    F_RAISE,       // raise_exception(msg)
    F_STRFTIME,    // strftime_now(format)
    F_NAMESPACE,   // namespace(**kw)
    F_RANGE,       // range(stop) / range(start, stop[, step])
    F_DICT,        // dict(**kw)
    F_METHOD,      // a method of a str, dict or loop: name + self
    F_UNSUPPORTED, // a global or method qlora does not run: an error when called
} FuncKind;

typedef struct Func {
    uint8_t kind; // FuncKind
    Str name;     // method or global name, for messages and dispatch
    Value self;   // F_METHOD's object
} Func;

// ---- tokens --------------------------------------------------------------------------------
typedef enum {
    T_DATA,
    T_VAR_BEGIN,
    T_VAR_END,
    T_BLOCK_BEGIN,
    T_BLOCK_END,
    T_NAME,
    T_STRING,
    T_INT,
    T_FLOAT,
    T_OP,
    T_EOF,
} TokType;

typedef enum {
    OP_ADD,
    OP_SUB,
    OP_DIV,
    OP_FLOORDIV,
    OP_MUL,
    OP_MOD,
    OP_POW,
    OP_TILDE,
    OP_LBRACKET,
    OP_RBRACKET,
    OP_LPAREN,
    OP_RPAREN,
    OP_LBRACE,
    OP_RBRACE,
    OP_EQ,
    OP_NE,
    OP_GT,
    OP_GE,
    OP_LT,
    OP_LE,
    OP_ASSIGN,
    OP_DOT,
    OP_COLON,
    OP_PIPE,
    OP_COMMA,
    OP_SEMICOLON,
    // not tokens: the other operators of the tree
    OP_AND,
    OP_OR,
    OP_NOT,
    OP_NEG,
    OP_POS,
    OP_IN,
    OP_NOTIN,
} Op;

typedef struct {
    uint8_t type; // TokType
    uint8_t op;   // Op, for T_OP
    int line;
    Str s; // T_DATA text, T_NAME, T_STRING (decoded)
    int64_t i;
    double f;
} Token;

// ---- the tree ------------------------------------------------------------------------------
typedef enum {
    // statements
    N_TEXT,      // s
    N_OUTPUT,    // {{ a }}
    N_IF,        // if a: body else body2 (elif is an N_IF alone in body2)
    N_FOR,       // for targets(items) in a [if b]: body else body2
    N_SET,       // set s = a; set s.name = a (name set)
    N_SET_BLOCK, // set s: body
    N_BREAK,
    N_CONTINUE,
    N_BLOCK, // {% generation %}: body, rendered as it is
    // expressions
    E_CONST,   // value
    E_NAME,    // s
    E_LIST,    // items
    E_TUPLE,   // items
    E_DICT,    // items: key, value, key, value, ...
    E_GETATTR, // a.s
    E_GETITEM, // a[b]
    E_SLICE,   // a[b:c:d], each optional
    E_CALL,    // a(items, kwargs)
    E_FILTER,  // a | s(items, kwargs)
    E_TEST,    // a is s(items, kwargs)
    E_UNARY,   // op a
    E_BINARY,  // a op b
    E_CONCAT,  // items joined by ~
    E_COMPARE, // a (ops[k] items[k])...
    E_COND,    // b if a else c (c NULL: undefined)
    E_KWARG,   // s=a, only in kwargs
} NodeKind;

typedef struct Node Node;
struct Node {
    uint8_t kind; // NodeKind
    uint8_t op;   // Op for E_UNARY / E_BINARY
    bool flag;    // N_SET: target is an attribute (ns.name); N_IF: an elif
    int line;
    Str s;
    Str name; // N_SET's attribute name
    Value value;
    Node *a, *b, *c, *d;
    Node **items;  // body, arguments, elements (in the template's pool)
    Node **items2; // else body / keyword arguments
    size_t n_items, n_items2;
    uint8_t *ops;   // E_COMPARE: one Op per item
    const void *fn; // E_FILTER / E_TEST: the library entry, resolved at parse time
    // A block with a scope of its own (the root N_BLOCK, an N_FOR's body and else, an N_SET_BLOCK,
    // a {% generation %} N_BLOCK): the names that start undefined in it (chat_template_scope.c).
    Str *undef, *undef2; // undef2: an N_FOR's else block
    size_t n_undef, n_undef2;
};

// ---- a parsed template ---------------------------------------------------------------------
struct ChatTemplate {
    char *name;
    Pool pool;  // nodes, strings
    Node *root; // an N_BLOCK holding the template's body
};

// ---- a render ------------------------------------------------------------------------------
typedef struct Scope Scope;
struct Scope {
    Scope *parent;
    Dict vars; // names and values, in the render's pool
};

typedef struct {
    char *p;
    size_t n, cap;
} Buf; // grows inside the render's pool

typedef struct {
    const ChatTemplate *t;
    Pool pool;
    jmp_buf jb;
    Error *err;
    uint64_t steps;
    int depth; // of the value being walked (printed, compared, dumped): at most CT_MAX_VALUE_DEPTH
    Buf *out;  // where output goes now ({% set x %} blocks swap it)
} Render;

typedef struct {
    Value *pos;
    size_t n_pos;
    Str *kw_names;
    Value *kw_vals;
    size_t n_kw;
} Args;

typedef Value (*FilterFn)(Render *r, const Node *at, Value v, const Args *a);
typedef struct TestDef TestDef;
typedef bool (*TestFn)(Render *r, const Node *at, const TestDef *t, Value v, const Args *a);
typedef struct {
    const char *name;
    FilterFn fn;
} FilterDef;
struct TestDef {
    const char *name;
    TestFn fn;
    int code; // which test of fn's family (a type, an operator, ...)
};

// ---- pool (chat_template.c) ----
void ct_pool_init(Pool *p, size_t cap_bytes);
void ct_pool_free(Pool *p);
// Zeroed, 16-byte aligned; NULL once cap_bytes would be passed.
void *ct_pool_try_alloc(Pool *p, size_t bytes);

// The message of a filter or test qlora lacks: printf with "filter" or "test", then the name.
#define CT_UNSUPPORTED_NAME                                                                                            \
    "the %s '%.*s' is not supported by qlora's chat templates (docs/chat.md lists those that are)"

// ---- scopes (chat_template_scope.c) ----
// Fill the undef lists of t's blocks by jinja2's rules for names a block assigns; temporary
// memory from tmp. False with msg filled if the template is too large to analyse.
bool ct_scope_analyze(ChatTemplate *t, Pool *tmp, char *msg, size_t cap);

// ---- filters and tests by name, NULL if qlora has none (chat_template_builtins.c) ----
const FilterDef *ct_find_filter(const char *name, size_t n);
const TestDef *ct_find_test(const char *name, size_t n);

// ---- render support (chat_template_eval.c): errors, memory and the step budget ----
// Fail the render: "NAME:LINE: message" (line of `at`, 0 if NULL), then longjmp.
void ct_fail(Render *r, const Node *at, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));
void *ct_alloc(Render *r, const Node *at, size_t bytes);
Str ct_str_dup(Render *r, const Node *at, const char *s, size_t n);
void ct_step(Render *r, const Node *at);
// Walk one level into a list or dict (fails past CT_MAX_VALUE_DEPTH: a loop can nest a value in
// itself as often as it runs); ct_leave walks back out.
void ct_enter(Render *r, const Node *at);
static inline void ct_leave(Render *r) { r->depth--; }
// Charge a step for every 64 units (bytes or items) of a linear scan, so no input runs long.
void ct_work(Render *r, const Node *at, size_t units);

// ---- values (chat_template_lib.c) ----
// clang-format off
static inline Value ct_undef(Str name) { return (Value){.kind = V_UNDEF, .u = {.s = name}}; }
static inline Value ct_none(void) { return (Value){.kind = V_NONE}; }
static inline Value ct_bool(bool b) { return (Value){.kind = V_BOOL, .u = {.b = b}}; }
static inline Value ct_int(int64_t i) { return (Value){.kind = V_INT, .u = {.i = i}}; }
static inline Value ct_float(double f) { return (Value){.kind = V_FLOAT, .u = {.f = f}}; }
static inline Value ct_str(Str s) { return (Value){.kind = V_STR, .u = {.s = s}}; }
// clang-format on
static inline Str ct_cstr(const char *s) {
    Str r = {s, strlen(s)};
    return r;
}
static inline bool ct_str_eq(Str a, const char *b) { return a.n == strlen(b) && memcmp(a.s, b, a.n) == 0; }
static inline bool ct_str_same(Str a, Str b) { return a.n == b.n && (a.n == 0 || memcmp(a.s, b.s, a.n) == 0); }

Value ct_list(Render *r, const Node *at, size_t n, uint8_t lkind); // n undefined items to fill
Dict *ct_dict_new(Render *r, const Node *at);
void ct_dict_set(Render *r, const Node *at, Dict *d, Str key, Value v);
const Value *ct_dict_get(Render *r, const Node *at, const Dict *d, Str key); // NULL if absent
const char *ct_type_name(Value v);
bool ct_truthy(Render *r, const Node *at, Value v);
bool ct_equal(Render *r, const Node *at, Value a, Value b);
int ct_compare(Render *r, const Node *at, Value a, Value b); // <0, 0, >0; error if unordered
bool ct_contains(Render *r, const Node *at, Value item, Value seq);
// The items a for loop or a filter walks: str -> characters, dict -> keys, undefined -> none.
// A generator is marked consumed; walking it twice is refused (Python would see it empty).
const Value *ct_iterate(Render *r, const Node *at, Value v, size_t *n);
Value ct_getattr(Render *r, const Node *at, Value obj, Str name);
Value ct_getitem(Render *r, const Node *at, Value obj, Value key);
Value ct_slice(Render *r, const Node *at, Value obj, const Value *start, const Value *stop, const Value *step);
Value ct_call(Render *r, const Node *at, Value fn, const Args *a);
Value ct_binary(Render *r, const Node *at, int op, Value a, Value b);
Value ct_unary(Render *r, const Node *at, int op, Value a);
// Python's str(v) appended to b ("" for undefined, "None", "True", repr of lists).
void ct_append_str(Render *r, const Node *at, Buf *b, Value v);
Str ct_to_str(Render *r, const Node *at, Value v);
void ct_buf_put(Render *r, const Node *at, Buf *b, const char *s, size_t n);
size_t ct_utf8_count(Str s); // code points of valid UTF-8
bool ct_utf8_valid(const char *s, size_t n);
// The two-character escape Python's repr and json.dumps share for c (the quote q, backslash,
// \n, \r, \t) into out (NUL-terminated); false if c has none.
bool ct_short_escape(unsigned char c, char q, char out[4]);
size_t ct_space_len(const char *s, size_t n);  // bytes of one Python-whitespace character at s, 0 if none
size_t ct_rstrip_len(const char *s, size_t n); // length of s without trailing Python whitespace

#endif
