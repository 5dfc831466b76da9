// chat_template.c: the pool, the lexer and the parser of chat templates (see chat_template.h;
// docs/chat.md says which of jinja2's rules each part follows).
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template_impl.h"

// ---- pool ----------------------------------------------------------------------------------
struct PoolBlock {
    PoolBlock *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

void ct_pool_init(Pool *p, size_t cap_bytes) {
    p->head = NULL;
    p->used_bytes = 0;
    p->cap_bytes = cap_bytes;
}

void ct_pool_free(Pool *p) {
    for (PoolBlock *b = p->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    p->head = NULL;
    p->used_bytes = 0;
}

void *ct_pool_try_alloc(Pool *p, size_t bytes) {
    if (bytes > p->cap_bytes) return NULL;
    bytes = (bytes + 15) & ~(size_t)15;
    PoolBlock *b = p->head;
    if (!b || b->cap - b->used < bytes) {
        const size_t cap = bytes > (64u << 10) ? bytes : (64u << 10);
        if (p->used_bytes + cap > p->cap_bytes) return NULL;
        b = xmalloc(sizeof *b + cap);
        b->cap = cap;
        b->used = 0;
        b->next = p->head;
        p->head = b;
        p->used_bytes += cap;
    }
    void *r = b->data + b->used;
    b->used += bytes;
    memset(r, 0, bytes);
    return r;
}

// ---- parser state (the lexer fills toks, the parser walks them) ---------------------------
typedef struct {
    ChatTemplate *t;
    Pool tmp; // tokens and the normalized source: freed when parsing ends
    jmp_buf jb;
    Error *err;
    const char *src;
    size_t n, pos;
    int line;
    bool line_starting; // the last thing lexed ended a line (jinja2's lstrip_blocks rule)
    char balance[CT_MAX_NEST];
    int n_balance;
    Token *toks;
    size_t n_toks, cap_toks, tok;
    int depth, loop_depth;
} Parser;

// Fail the parse with "NAME:LINE: message" and unwind to chat_template_parse.
__attribute__((format(printf, 3, 4), noreturn)) static void parse_fail(Parser *P, int line, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    error_set(P->err, "%s:%d: %s", P->t->name, line, msg);
    longjmp(P->jb, 1);
}

// Memory of the template (kept) or of the parse (tmp); a limit breach fails the parse.
static void *palloc(Parser *P, Pool *pool, size_t bytes) {
    void *p = ct_pool_try_alloc(pool, bytes);
    if (!p) parse_fail(P, P->line, "the template needs more than %u MiB to parse", CT_MAX_POOL_BYTES >> 20);
    return p;
}

// A copy of s[0..n) in the template's pool (NUL-terminated, for messages).
static Str keep_str(Parser *P, const char *s, size_t n) {
    char *c = palloc(P, &P->t->pool, n + 1);
    if (n) memcpy(c, s, n);
    return (Str){c, n};
}

// ---- lexer ---------------------------------------------------------------------------------
static Token *emit(Parser *P, TokType type, int line) {
    if (P->n_toks == P->cap_toks) {
        const size_t cap = P->cap_toks ? 2 * P->cap_toks : 256;
        Token *t = palloc(P, &P->tmp, cap * sizeof *t);
        if (P->n_toks) memcpy(t, P->toks, P->n_toks * sizeof *t);
        P->toks = t;
        P->cap_toks = cap;
    }
    Token *t = &P->toks[P->n_toks++];
    memset(t, 0, sizeof *t);
    t->type = (uint8_t)type;
    t->line = line;
    return t;
}

// How many \n in s[0..n).
static int count_newlines(const char *s, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    return k;
}

// jinja2 reads "\r\n" and "\r" as "\n" and drops one final newline (keep_trailing_newline
// is off); lines are counted on the result.
static void normalize(Parser *P, const char *text, size_t len) {
    char *s = palloc(P, &P->tmp, len + 1);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\r') {
            s[k++] = '\n';
            if (i + 1 < len && text[i + 1] == '\n') i++;
        } else {
            s[k++] = text[i];
        }
    }
    if (k && s[k - 1] == '\n') k--;
    P->src = s;
    P->n = k;
    P->line = 1;
}

// Does the source continue with lit at P->pos?
static bool at(const Parser *P, const char *lit) {
    const size_t n = strlen(lit);
    return P->n - P->pos >= n && memcmp(P->src + P->pos, lit, n) == 0;
}

// Skip Python whitespace (jinja2's \s) from P->pos, counting lines.
static void skip_space(Parser *P) {
    size_t k;
    while (P->pos < P->n && (k = ct_space_len(P->src + P->pos, P->n - P->pos)) > 0) {
        P->line += P->src[P->pos] == '\n';
        P->pos += k;
    }
}

// The text before a tag at `tag`, as lstrip_blocks and "-" leave it; emitted as T_DATA.
static void lex_text(Parser *P, size_t tag, char kind, char sign) {
    const char *text = P->src + P->pos;
    size_t n = tag - P->pos;
    const int line = P->line;
    P->line += count_newlines(text, n);
    if (sign == '-') {
        n = ct_rstrip_len(text, n);
    } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: a block or comment tag preceded on its line only by whitespace takes
        // that whitespace away (at the very start, or after a tag that ended a line, too)
        size_t l = n;
        while (l > 0 && text[l - 1] != '\n') l--;
        if (l > 0 || P->line_starting) {
            size_t i = l, k = 0;
            while (i < n && (k = ct_space_len(text + i, n - i)) > 0) i += k;
            if (i == n && n > l) n = l;
        }
    }
    if (n) emit(P, T_DATA, line)->s = keep_str(P, text, n);
}

// {# ... #}: skipped; "-#}" eats the whitespace after it, "#}" one newline (trim_blocks).
static void lex_comment(Parser *P, int open_line) {
    for (; P->pos < P->n; P->pos++) {
        if (at(P, "+#}")) {
            P->pos += 3;
        } else if (at(P, "-#}")) {
            P->pos += 3;
            skip_space(P);
        } else if (at(P, "#}")) {
            P->pos += 2;
            if (P->pos < P->n && P->src[P->pos] == '\n') P->pos++, P->line++;
        } else {
            P->line += P->src[P->pos] == '\n';
            continue;
        }
        P->line_starting = P->src[P->pos - 1] == '\n';
        return;
    }
    parse_fail(P, open_line, "the comment opened here is never closed with #}");
}

// The value of hex digit c, -1 if it is none.
static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Write code point cp as UTF-8 at o; its length.
static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 63)), 2;
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | ((cp >> 6) & 63)), o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)), o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

// One escape of a string literal at s[*i] (just after the backslash), decoded as Python's
// unicode-escape codec decodes jinja2's ascii-backslashreplaced literal; appends to o.
static size_t lex_escape(Parser *P, int line, const char *s, size_t n, size_t *i, char *o) {
    const unsigned char e = (unsigned char)s[*i];
    static const char simple[] = "\\\\''\"\"a\ab\bf\fn\nr\rt\tv\v";
    for (const char *p = simple; *p; p += 2)
        if (e == (unsigned char)p[0]) return (*i)++, o[0] = p[1], 1;
    if (e == '\n') return (*i)++, 0; // a backslash-newline continues the line
    if (e >= 0x80) {                 // backslashreplace turned the character into \xNN, \uNNNN or \UNNNNNNNN
        size_t k = utf8_seq_len((const uint8_t *)s + *i, n - *i);
        uint32_t cp = e & (k == 2 ? 0x1F : k == 3 ? 0x0F : 0x07);
        for (size_t j = 1; j < k; j++) cp = cp << 6 | ((unsigned char)s[*i + j] & 63);
        *i += k;
        return (size_t)sprintf(o, "\\%s%0*x",
                               cp <= 0xFF     ? "x"
                               : cp <= 0xFFFF ? "u"
                                              : "U",
                               cp <= 0xFF     ? 2
                               : cp <= 0xFFFF ? 4
                                              : 8,
                               (unsigned)cp);
    }
    uint32_t cp = 0;
    if (e >= '0' && e <= '7') {
        for (int k = 0; k < 3 && *i < n && s[*i] >= '0' && s[*i] <= '7'; k++) cp = cp * 8 + (uint32_t)(s[(*i)++] - '0');
    } else if (e == 'x' || e == 'u' || e == 'U') {
        const int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        (*i)++;
        for (int k = 0; k < digits; k++, (*i)++) {
            const int h = *i < n ? hex_value(s[*i]) : -1;
            if (h < 0) parse_fail(P, line, "a \\%c escape in a string needs %d hex digits", e, digits);
            cp = cp * 16 + (uint32_t)h;
        }
    } else if (e == 'N') {
        parse_fail(P, line, "\\N{...} escapes in strings are not supported by qlora's chat templates");
    } else {
        return o[0] = '\\', 1; // Python keeps an unknown escape as it is
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        parse_fail(P, line, "the escape \\%c... in a string is not a Unicode scalar value", e);
    if (cp == 0) parse_fail(P, line, "a NUL character in a string literal is not supported");
    return put_utf8(o, cp);
}

// A quoted string at P->pos: one T_STRING with the escapes decoded.
static void lex_string(Parser *P) {
    const char q = P->src[P->pos];
    const int line = P->line;
    const size_t start = ++P->pos;
    while (P->pos < P->n && P->src[P->pos] != q) {
        if (P->src[P->pos] == '\\') P->pos++;
        if (P->pos < P->n) P->line += P->src[P->pos] == '\n', P->pos++;
    }
    if (P->pos >= P->n) parse_fail(P, line, "the string opened here is never closed");
    const char *s = P->src + start;
    const size_t n = P->pos++ - start;
    char *o = palloc(P, &P->t->pool, 4 * n + 1); // "\é" grows to "\xe9"
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\')
            o[k++] = s[i++];
        else
            i++, k += lex_escape(P, line, s, n, &i, o + k);
    }
    emit(P, T_STRING, line)->s = (Str){o, k};
}

// Digits in jinja2's form (\d+_)*\d+ at s[*i]; false if there is no digit.
static bool lex_digits(const char *s, size_t n, size_t *i) {
    if (*i >= n || s[*i] < '0' || s[*i] > '9') return false;
    while (*i < n && s[*i] >= '0' && s[*i] <= '9') {
        (*i)++;
        if (*i + 1 < n && s[*i] == '_' && s[*i + 1] >= '0' && s[*i + 1] <= '9') (*i)++;
    }
    return true;
}

// A float ((?<!\.) digits (.digits)? e[+-]digits, or digits.digits) or a decimal integer.
static void lex_number(Parser *P) {
    const char *s = P->src;
    const size_t n = P->n, start = P->pos;
    size_t i = start;
    lex_digits(s, n, &i);
    size_t j = i;
    bool is_float = false;
    if (start == 0 || s[start - 1] != '.') {
        if (j + 1 < n && s[j] == '.' && s[j + 1] >= '0' && s[j + 1] <= '9') j++, lex_digits(s, n, &j), is_float = true;
        size_t e = j;
        if (e < n && (s[e] == 'e' || s[e] == 'E')) {
            e++;
            if (e < n && (s[e] == '+' || s[e] == '-')) e++;
            if (lex_digits(s, n, &e)) j = e, is_float = true;
        }
    }
    if (!is_float && s[start] == '0' && start + 1 < n && s[start + 1] && strchr("bBoOxX", s[start + 1]))
        parse_fail(P, P->line, "binary, octal and hex literals are not supported by qlora's chat templates");
    if (!is_float && s[start] == '0') { // jinja2's 0(_?0)*: "007" is 00 then 7
        i = start + 1;
        while (i < n && (s[i] == '0' || (s[i] == '_' && i + 1 < n && s[i + 1] == '0'))) i++;
    }
    const size_t end = is_float ? j : i;
    char buf[64];
    size_t k = 0;
    for (size_t p = start; p < end; p++)
        if (s[p] != '_') {
            if (k + 1 >= sizeof buf) parse_fail(P, P->line, "a number literal this long is not supported");
            buf[k++] = s[p];
        }
    buf[k] = '\0';
    Token *t = emit(P, is_float ? T_FLOAT : T_INT, P->line);
    errno = 0;
    if (is_float)
        t->f = strtod(buf, NULL);
    else
        t->i = strtoll(buf, NULL, 10);
    if (!is_float && errno == ERANGE)
        parse_fail(P, P->line, "the integer %s is larger than qlora's 64-bit integers", buf);
    P->pos = end;
}

// An operator at P->pos (the longest that fits), keeping brackets balanced.
static void lex_op(Parser *P) {
    static const struct {
        const char *s;
        Op op;
    } OPS[] = {{"//", OP_FLOORDIV}, {"**", OP_POW},   {"==", OP_EQ},      {"!=", OP_NE},      {">=", OP_GE},
               {"<=", OP_LE},       {"+", OP_ADD},    {"-", OP_SUB},      {"/", OP_DIV},      {"*", OP_MUL},
               {"%", OP_MOD},       {"~", OP_TILDE},  {"[", OP_LBRACKET}, {"]", OP_RBRACKET}, {"(", OP_LPAREN},
               {")", OP_RPAREN},    {"{", OP_LBRACE}, {"}", OP_RBRACE},   {">", OP_GT},       {"<", OP_LT},
               {"=", OP_ASSIGN},    {".", OP_DOT},    {":", OP_COLON},    {"|", OP_PIPE},     {",", OP_COMMA},
               {";", OP_SEMICOLON}};
    for (size_t k = 0; k < sizeof OPS / sizeof OPS[0]; k++) {
        if (!at(P, OPS[k].s)) continue;
        const char c = OPS[k].s[0];
        if (c == '(' || c == '[' || c == '{') {
            if (P->n_balance == CT_MAX_NEST) parse_fail(P, P->line, "brackets nest deeper than %d", CT_MAX_NEST);
            P->balance[P->n_balance++] = c == '(' ? ')' : c == '[' ? ']' : '}';
        } else if (c == ')' || c == ']' || c == '}') {
            if (!P->n_balance) parse_fail(P, P->line, "unexpected '%c'", c);
            if (P->balance[P->n_balance - 1] != c)
                parse_fail(P, P->line, "unexpected '%c', expected '%c'", c, P->balance[P->n_balance - 1]);
            P->n_balance--;
        }
        emit(P, T_OP, P->line)->op = (uint8_t)OPS[k].op;
        P->pos += strlen(OPS[k].s);
        return;
    }
    const unsigned char c = (unsigned char)P->src[P->pos];
    if (c >= 0x20 && c < 0x7F) parse_fail(P, P->line, "unexpected character '%c' in a tag", c);
    parse_fail(P, P->line, "unexpected byte 0x%02x in a tag (names are ASCII here)", c);
}

// The end of a tag if it is at P->pos (only outside brackets, as in jinja2); true if it was.
static bool lex_tag_end(Parser *P, char kind) {
    if (P->n_balance) return false;
    if (kind == '%' && at(P, "+%}")) {
        P->pos += 3;
    } else if (at(P, kind == '%' ? "-%}" : "-}}")) {
        P->pos += 3;
        skip_space(P);
    } else if (at(P, kind == '%' ? "%}" : "}}")) {
        P->pos += 2;
        if (kind == '%' && P->pos < P->n && P->src[P->pos] == '\n') P->pos++, P->line++; // trim_blocks
    } else {
        return false;
    }
    P->line_starting = P->src[P->pos - 1] == '\n';
    emit(P, kind == '%' ? T_BLOCK_END : T_VAR_END, P->line);
    return true;
}

// The tokens of a {{ }} or {% %} tag, from just after its opening.
static void lex_tag(Parser *P, char kind, int open_line) {
    emit(P, kind == '%' ? T_BLOCK_BEGIN : T_VAR_BEGIN, open_line);
    for (;;) {
        if (P->pos >= P->n)
            parse_fail(P, open_line, "the tag opened here is never closed with %s", kind == '%' ? "%}" : "}}");
        if (lex_tag_end(P, kind)) return;
        const char c = P->src[P->pos];
        if (ct_space_len(P->src + P->pos, P->n - P->pos)) {
            skip_space(P);
        } else if (c >= '0' && c <= '9') {
            lex_number(P);
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
            const size_t s = P->pos;
            while (P->pos < P->n && (P->src[P->pos] == '_' || (P->src[P->pos] >= '0' && P->src[P->pos] <= '9') ||
                                     ((P->src[P->pos] | 32) >= 'a' && (P->src[P->pos] | 32) <= 'z')))
                P->pos++;
            emit(P, T_NAME, P->line)->s = keep_str(P, P->src + s, P->pos - s);
        } else if (c == '\'' || c == '"') {
            lex_string(P);
        } else {
            lex_op(P);
        }
    }
}

// The whole template into P->toks, ending with T_EOF.
static void lex(Parser *P) {
    P->line_starting = true;
    while (P->pos < P->n) {
        const char *p = P->src + P->pos, *end = P->src + P->n, *tag = NULL;
        for (const char *q = memchr(p, '{', (size_t)(end - p)); q && q + 1 < end;
             q = memchr(q + 1, '{', (size_t)(end - q - 1)))
            if (q[1] == '{' || q[1] == '%' || q[1] == '#') {
                tag = q;
                break;
            }
        if (!tag) {
            emit(P, T_DATA, P->line)->s = keep_str(P, p, (size_t)(end - p));
            P->line += count_newlines(p, (size_t)(end - p));
            break;
        }
        const size_t t = (size_t)(tag - P->src);
        const char kind = tag[1], sign = t + 2 < P->n && (tag[2] == '-' || tag[2] == '+') ? tag[2] : 0;
        lex_text(P, t, kind, sign);
        P->pos = t + 2 + (sign != 0);
        P->line_starting = false;
        if (kind == '#')
            lex_comment(P, P->line);
        else
            lex_tag(P, kind, P->line);
    }
    emit(P, T_EOF, P->line);
}

// ---- parser: tokens ------------------------------------------------------------------------
static Token *cur(Parser *P) { return &P->toks[P->tok]; }
// The current token, the one after it, and moving on (never past T_EOF).
static Token *peek(Parser *P) { return &P->toks[P->tok + (P->toks[P->tok].type != T_EOF)]; }
static Token *advance(Parser *P) {
    Token *t = cur(P);
    if (t->type != T_EOF) P->tok++;
    return t;
}
// Token tests, and skipping a token that passes one.
static bool tok_name(const Token *t, const char *name) { return t->type == T_NAME && ct_str_eq(t->s, name); }
static bool tok_op(const Token *t, Op op) { return t->type == T_OP && t->op == op; }
static bool skip_name(Parser *P, const char *name) { return tok_name(cur(P), name) ? (advance(P), true) : false; }
static bool skip_op(Parser *P, Op op) { return tok_op(cur(P), op) ? (advance(P), true) : false; }

// The token as a message names it: 'x', a string, the end of the template.
static const char *describe(const Token *t, char *buf, size_t cap) {
    static const char *const OPS[] = {"+", "-",  "/",  "//", "*",  "%", "**", "~", "[", "]", "(", ")", "{",
                                      "}", "==", "!=", ">",  ">=", "<", "<=", "=", ".", ":", "|", ",", ";"};
    switch (t->type) {
    case T_DATA: return "template text";
    case T_VAR_BEGIN: return "'{{'";
    case T_VAR_END: return "'}}'";
    case T_BLOCK_BEGIN: return "'{%'";
    case T_BLOCK_END: return "'%}'";
    case T_STRING: return "a string";
    case T_INT:
    case T_FLOAT: return "a number";
    case T_EOF: return "the end of the template";
    case T_NAME: snprintf(buf, cap, "'%.*s'", (int)(t->s.n > 40 ? 40 : t->s.n), t->s.s); return buf;
    default: snprintf(buf, cap, "'%s'", t->op < sizeof OPS / sizeof OPS[0] ? OPS[t->op] : "?"); return buf;
    }
}

__attribute__((noreturn)) static void fail_at(Parser *P, const char *expected) {
    char buf[64];
    parse_fail(P, cur(P)->line, "expected %s, found %s", expected, describe(cur(P), buf, sizeof buf));
}

// Consume the operator, the name or the tag end that must come next, or fail naming it.
static void expect_op(Parser *P, Op op, const char *what) {
    if (!skip_op(P, op)) fail_at(P, what);
}

static Str expect_name(Parser *P, const char *what) {
    if (cur(P)->type != T_NAME) fail_at(P, what);
    return advance(P)->s;
}

static void expect_block_end(Parser *P) {
    if (cur(P)->type != T_BLOCK_END) fail_at(P, "the end of the tag, %}");
    advance(P);
}

// ---- parser: nodes -------------------------------------------------------------------------
static Node *new_node(Parser *P, NodeKind kind, int line) {
    Node *n = palloc(P, &P->t->pool, sizeof *n);
    n->kind = (uint8_t)kind;
    n->line = line;
    return n;
}

typedef struct {
    Node **p;
    size_t n, cap;
} NodeVec;

// Append x, growing the array inside the template's pool.
static void vec_push(Parser *P, NodeVec *v, Node *x) {
    if (v->n == v->cap) {
        const size_t cap = v->cap ? 2 * v->cap : 4;
        Node **p = palloc(P, &P->t->pool, cap * sizeof *p);
        if (v->n) memcpy(p, v->p, v->n * sizeof *p);
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = x;
}

// Count one level of nesting (the caller decrements P->depth when done); fail past the limit.
static void enter(Parser *P) {
    if (++P->depth > CT_MAX_NEST) parse_fail(P, cur(P)->line, "expressions or blocks nest deeper than %d", CT_MAX_NEST);
}

static Node *parse_expression(Parser *P, bool with_condexpr);
static Node *parse_unary(Parser *P, bool with_filter);
static Node *parse_primary(Parser *P);
static Node *parse_postfix(Parser *P, Node *node);

// jinja2's parse_call_args: positional arguments, then name=value ones; a trailing comma is fine.
static void parse_call_args(Parser *P, Node *call) {
    NodeVec pos = {0}, kw = {0};
    expect_op(P, OP_LPAREN, "'('");
    while (!tok_op(cur(P), OP_RPAREN)) {
        if (pos.n + kw.n) {
            expect_op(P, OP_COMMA, "',' or ')'");
            if (tok_op(cur(P), OP_RPAREN)) break;
        }
        if (tok_op(cur(P), OP_MUL) || tok_op(cur(P), OP_POW))
            parse_fail(P, cur(P)->line, "*args and **kwargs in calls are not supported by qlora's chat templates");
        if (cur(P)->type == T_NAME && tok_op(peek(P), OP_ASSIGN)) {
            Node *k = new_node(P, E_KWARG, cur(P)->line);
            k->s = advance(P)->s;
            advance(P);
            k->a = parse_expression(P, true);
            vec_push(P, &kw, k);
        } else {
            if (kw.n) parse_fail(P, cur(P)->line, "a positional argument follows a keyword argument");
            vec_push(P, &pos, parse_expression(P, true));
        }
    }
    advance(P);
    call->items = pos.p, call->n_items = pos.n;
    call->items2 = kw.p, call->n_items2 = kw.n;
}

// A filter or test name, dotted ones ("ext.f", which no filter of qlora's has) joined.
static Str parse_callable_name(Parser *P, const char *what) {
    Str name = expect_name(P, what);
    while (skip_op(P, OP_DOT)) {
        const Str more = expect_name(P, what);
        char *c = palloc(P, &P->t->pool, name.n + more.n + 2);
        memcpy(c, name.s, name.n);
        c[name.n] = '.';
        memcpy(c + name.n + 1, more.s, more.n);
        name = (Str){c, name.n + more.n + 1};
    }
    return name;
}

// x | name(args). The filter is looked up now; one qlora lacks (fn NULL) is refused by
// check_names, or fails where it runs.
static Node *parse_filter(Parser *P, Node *node) {
    const int line = cur(P)->line;
    advance(P); // |
    Node *f = new_node(P, E_FILTER, line);
    f->a = node;
    f->s = parse_callable_name(P, "a filter name");
    f->fn = ct_find_filter(f->s.s, f->s.n);
    if (tok_op(cur(P), OP_LPAREN)) parse_call_args(P, f);
    return f;
}

// jinja2's parse_test: "is [not] name", with arguments in parentheses or one bare argument.
static Node *parse_test(Parser *P, Node *node) {
    const int line = cur(P)->line;
    advance(P); // is
    const bool negated = skip_name(P, "not");
    Node *t = new_node(P, E_TEST, line);
    t->a = node;
    t->s = parse_callable_name(P, "a test name");
    t->fn = ct_find_test(t->s.s, t->s.n); // NULL: as for filters
    const Token *c = cur(P);
    if (tok_op(c, OP_LPAREN)) {
        parse_call_args(P, t);
    } else if ((c->type == T_NAME && !tok_name(c, "else") && !tok_name(c, "or") && !tok_name(c, "and")) ||
               c->type == T_STRING || c->type == T_INT || c->type == T_FLOAT || tok_op(c, OP_LBRACKET) ||
               tok_op(c, OP_LBRACE)) {
        if (tok_name(c, "is")) parse_fail(P, c->line, "tests cannot be chained with 'is'");
        t->items = palloc(P, &P->t->pool, sizeof *t->items);
        t->items[0] = parse_postfix(P, parse_primary(P));
        t->n_items = 1;
    }
    if (!negated) return t;
    Node *n = new_node(P, E_UNARY, line);
    n->op = OP_NOT;
    n->a = t;
    return n;
}

// One subscript inside [ ]: an expression or a slice a:b:c (each part optional).
static Node *parse_subscribed(Parser *P, Node *obj) {
    const int line = cur(P)->line;
    Node *first = NULL;
    if (!tok_op(cur(P), OP_COLON)) {
        first = parse_expression(P, true);
        if (!tok_op(cur(P), OP_COLON)) {
            Node *g = new_node(P, E_GETITEM, line);
            g->a = obj;
            g->b = first;
            return g;
        }
    }
    advance(P); // :
    Node *s = new_node(P, E_SLICE, line);
    s->a = obj;
    s->b = first;
    if (!tok_op(cur(P), OP_COLON) && !tok_op(cur(P), OP_RBRACKET) && !tok_op(cur(P), OP_COMMA))
        s->c = parse_expression(P, true);
    if (skip_op(P, OP_COLON) && !tok_op(cur(P), OP_RBRACKET) && !tok_op(cur(P), OP_COMMA))
        s->d = parse_expression(P, true);
    return s;
}

// .name, .0 or [subscript] after an expression.
static Node *parse_subscript(Parser *P, Node *node) {
    const Token *t = advance(P);
    if (t->type == T_OP && t->op == OP_DOT) {
        const Token *a = cur(P);
        if (a->type == T_NAME) {
            Node *g = new_node(P, E_GETATTR, t->line);
            g->a = node;
            g->s = advance(P)->s;
            return g;
        }
        if (a->type != T_INT) fail_at(P, "a name or number after '.'");
        Node *k = new_node(P, E_CONST, a->line), *g = new_node(P, E_GETITEM, t->line);
        k->value = ct_int(advance(P)->i);
        g->a = node;
        g->b = k;
        return g;
    }
    Node *g = parse_subscribed(P, node);
    if (tok_op(cur(P), OP_COMMA)) parse_fail(P, cur(P)->line, "tuple subscripts (x[a, b]) are not supported");
    expect_op(P, OP_RBRACKET, "']'");
    return g;
}

// callee(args).
static Node *parse_call(Parser *P, Node *callee) {
    Node *c = new_node(P, E_CALL, cur(P)->line);
    c->a = callee;
    parse_call_args(P, c);
    return c;
}

// Attribute, item and call suffixes, as many as follow.
static Node *parse_postfix(Parser *P, Node *node) {
    for (const int base = P->depth;; enter(P)) {
        if (tok_op(cur(P), OP_DOT) || tok_op(cur(P), OP_LBRACKET)) {
            node = parse_subscript(P, node);
        } else if (tok_op(cur(P), OP_LPAREN)) {
            node = parse_call(P, node);
        } else {
            P->depth = base;
            return node;
        }
    }
}

// Filters, tests and calls after a unary expression (jinja2's parse_filter_expr).
static Node *parse_filter_expr(Parser *P, Node *node) {
    for (const int base = P->depth;; enter(P)) {
        if (tok_op(cur(P), OP_PIPE)) {
            node = parse_filter(P, node);
        } else if (tok_name(cur(P), "is")) {
            node = parse_test(P, node);
        } else if (tok_op(cur(P), OP_LPAREN)) {
            node = parse_call(P, node);
        } else {
            P->depth = base;
            return node;
        }
    }
}

// [a, b], {k: v, ...} or ( ... ): the literals with brackets.
static Node *parse_bracketed(Parser *P, Op open) {
    const int line = advance(P)->line;
    const Op close = open == OP_LBRACKET ? OP_RBRACKET : open == OP_LBRACE ? OP_RBRACE : OP_RPAREN;
    Node *n = new_node(P, open == OP_LBRACKET ? E_LIST : open == OP_LBRACE ? E_DICT : E_TUPLE, line);
    NodeVec v = {0};
    bool comma = false;
    while (!tok_op(cur(P), close)) {
        if (v.n) {
            expect_op(P, OP_COMMA, "',' or a closing bracket");
            comma = true;
            if (tok_op(cur(P), close)) break;
        }
        vec_push(P, &v, parse_expression(P, true));
        if (open == OP_LBRACE) {
            expect_op(P, OP_COLON, "':' in a dict literal");
            vec_push(P, &v, parse_expression(P, true));
        }
    }
    advance(P);
    if (open == OP_LPAREN && v.n == 1 && !comma) return v.p[0]; // (a) is a, (a,) a tuple
    n->items = v.p;
    n->n_items = v.n;
    return n;
}

// A name, constant, string (adjacent ones joined), number or bracketed literal.
static Node *parse_primary(Parser *P) {
    enter(P);
    const Token *t = cur(P);
    Node *n;
    if (t->type == T_NAME) {
        n = new_node(P, E_CONST, t->line);
        if (tok_name(t, "true") || tok_name(t, "True"))
            n->value = ct_bool(true);
        else if (tok_name(t, "false") || tok_name(t, "False"))
            n->value = ct_bool(false);
        else if (tok_name(t, "none") || tok_name(t, "None"))
            n->value = ct_none();
        else
            n->kind = E_NAME, n->s = t->s;
        advance(P);
    } else if (t->type == T_STRING) {
        n = new_node(P, E_CONST, t->line);
        Str s = advance(P)->s;
        if (cur(P)->type == T_STRING) { // 'a' 'b' is 'ab': one copy of them all
            size_t total = s.n, k = P->tok;
            while (P->toks[k].type == T_STRING) total += P->toks[k++].s.n;
            char *c = palloc(P, &P->t->pool, total + 1);
            memcpy(c, s.s, s.n);
            for (size_t off = s.n; cur(P)->type == T_STRING;) {
                const Str more = advance(P)->s;
                memcpy(c + off, more.s, more.n);
                off += more.n;
            }
            s = (Str){c, total};
        }
        n->value = ct_str(s);
    } else if (t->type == T_INT || t->type == T_FLOAT) {
        n = new_node(P, E_CONST, t->line);
        n->value = t->type == T_INT ? ct_int(t->i) : ct_float(t->f);
        advance(P);
    } else if (tok_op(t, OP_LPAREN) || tok_op(t, OP_LBRACKET) || tok_op(t, OP_LBRACE)) {
        n = parse_bracketed(P, (Op)t->op);
    } else {
        fail_at(P, "an expression");
    }
    P->depth--;
    return n;
}

// -x, +x, then suffixes; with_filter: then filters and tests too.
static Node *parse_unary(Parser *P, bool with_filter) {
    enter(P);
    Node *n;
    if (tok_op(cur(P), OP_SUB) || tok_op(cur(P), OP_ADD)) {
        n = new_node(P, E_UNARY, cur(P)->line);
        n->op = advance(P)->op == OP_SUB ? OP_NEG : OP_POS;
        n->a = parse_unary(P, false);
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    if (with_filter) n = parse_filter_expr(P, n);
    P->depth--;
    return n;
}

// A binary operator node.
static Node *binary(Parser *P, int line, Op op, Node *a, Node *b) {
    Node *n = new_node(P, E_BINARY, line);
    n->op = (uint8_t)op;
    n->a = a;
    n->b = b;
    return n;
}

// The binary operator of a precedence level at token t, or -1: or, and, + -, * / // %, **.
static int op_or(const Token *t) { return tok_name(t, "or") ? OP_OR : -1; }
static int op_and(const Token *t) { return tok_name(t, "and") ? OP_AND : -1; }
static int op_add(const Token *t) { return tok_op(t, OP_ADD) || tok_op(t, OP_SUB) ? t->op : -1; }
static int op_mul(const Token *t) {
    return tok_op(t, OP_MUL) || tok_op(t, OP_DIV) || tok_op(t, OP_FLOORDIV) || tok_op(t, OP_MOD) ? t->op : -1;
}
static int op_pow(const Token *t) { return tok_op(t, OP_POW) ? OP_POW : -1; }

// operand (op operand)*, left to right (jinja2 groups ** that way too). Every operator nests the
// tree one level deeper (a + b + c is (a + b) + c), so each counts against CT_MAX_NEST like a
// bracket: the evaluator recurses as deep as the tree.
static Node *parse_chain(Parser *P, Node *(*operand)(Parser *), int (*op_at)(const Token *)) {
    const int base = P->depth;
    Node *left = operand(P);
    for (int op; (op = op_at(cur(P))) >= 0;) {
        enter(P);
        const int line = advance(P)->line; // before the operand: argument order is unspecified
        left = binary(P, line, (Op)op, left, operand(P));
    }
    P->depth = base;
    return left;
}

static Node *parse_filtered_unary(Parser *P) { return parse_unary(P, true); }
static Node *parse_pow(Parser *P) { return parse_chain(P, parse_filtered_unary, op_pow); }
static Node *parse_math2(Parser *P) { return parse_chain(P, parse_pow, op_mul); }

static Node *parse_concat(Parser *P) {
    Node *first = parse_math2(P);
    if (!tok_op(cur(P), OP_TILDE)) return first;
    Node *c = new_node(P, E_CONCAT, cur(P)->line);
    NodeVec v = {0};
    vec_push(P, &v, first);
    while (skip_op(P, OP_TILDE)) vec_push(P, &v, parse_math2(P));
    c->items = v.p;
    c->n_items = v.n;
    return c;
}

static Node *parse_math1(Parser *P) { return parse_chain(P, parse_concat, op_add); }

// a == b < c in d not in e: Python's chained comparison.
static Node *parse_compare(Parser *P) {
    const int line = cur(P)->line;
    Node *first = parse_math1(P);
    NodeVec v = {0};
    uint8_t ops[CT_MAX_NEST];
    for (;;) {
        const Token *t = cur(P);
        Op op;
        if (t->type == T_OP && t->op >= OP_EQ && t->op <= OP_LE)
            op = (Op)t->op, advance(P);
        else if (tok_name(t, "in"))
            op = OP_IN, advance(P);
        else if (tok_name(t, "not") && tok_name(peek(P), "in"))
            op = OP_NOTIN, advance(P), advance(P);
        else
            break;
        if (v.n == CT_MAX_NEST) parse_fail(P, t->line, "more than %d chained comparisons", CT_MAX_NEST);
        ops[v.n] = (uint8_t)op;
        vec_push(P, &v, parse_math1(P));
    }
    if (!v.n) return first;
    Node *c = new_node(P, E_COMPARE, line);
    c->a = first;
    c->items = v.p;
    c->n_items = v.n;
    c->ops = palloc(P, &P->t->pool, v.n);
    memcpy(c->ops, ops, v.n);
    return c;
}

// not, and, or.
static Node *parse_not(Parser *P) {
    if (!tok_name(cur(P), "not")) return parse_compare(P);
    enter(P);
    Node *n = new_node(P, E_UNARY, advance(P)->line);
    n->op = OP_NOT;
    n->a = parse_not(P);
    P->depth--;
    return n;
}

static Node *parse_and(Parser *P) { return parse_chain(P, parse_not, op_and); }
static Node *parse_or(Parser *P) { return parse_chain(P, parse_and, op_or); }

// a [if b [else c]]; without with_condexpr (if / for headers) only the `or` level.
static Node *parse_expression(Parser *P, bool with_condexpr) {
    enter(P);
    const int base = P->depth;
    Node *e = parse_or(P);
    while (with_condexpr && tok_name(cur(P), "if")) {
        enter(P);
        Node *c = new_node(P, E_COND, advance(P)->line);
        c->a = parse_or(P);
        c->b = e;
        if (skip_name(P, "else")) c->c = parse_expression(P, true);
        e = c;
    }
    P->depth = base - 1;
    return e;
}

// An expression where jinja2 would also take a tuple (a, b): that form is refused.
static Node *parse_single(Parser *P, bool with_condexpr) {
    Node *e = parse_expression(P, with_condexpr);
    if (tok_op(cur(P), OP_COMMA)) parse_fail(P, cur(P)->line, "tuples without parentheses are not supported here");
    return e;
}

// ---- parser: statements --------------------------------------------------------------------
static int parse_body(Parser *P, NodeVec *body, const char *const *ends, int open_line, const char *open);

static const char *const END_IF[] = {"elif", "else", "endif", NULL};
static const char *const END_FOR[] = {"else", "endfor", NULL};
static const char *const END_FOR_ELSE[] = {"endfor", NULL};
static const char *const END_SET[] = {"endset", NULL};
static const char *const END_GENERATION[] = {"endgeneration", NULL};

// {% if %} ... {% elif %} ... {% else %} ... {% endif %}, after "if".
static Node *parse_if(Parser *P, int line) {
    Node *top = new_node(P, N_IF, line), *n = top;
    for (;;) {
        n->a = parse_single(P, false);
        expect_block_end(P);
        NodeVec body = {0};
        const int end = parse_body(P, &body, END_IF, line, "if");
        n->items = body.p, n->n_items = body.n;
        if (end == 0) { // elif: an if alone in the else branch
            Node *e = new_node(P, N_IF, cur(P)->line);
            e->flag = true;
            n->items2 = palloc(P, &P->t->pool, sizeof(Node *));
            n->items2[0] = e;
            n->n_items2 = 1;
            n = e;
            continue;
        }
        if (end == 1) {
            expect_block_end(P);
            NodeVec other = {0};
            parse_body(P, &other, END_IF + 2, line, "if");
            n->items2 = other.p, n->n_items2 = other.n;
        }
        expect_block_end(P);
        return top;
    }
}

// {% for a[, b] in xs [if cond] %} ... [{% else %} ...] {% endfor %}, after "for".
static Node *parse_for(Parser *P, int line) {
    Node *n = new_node(P, N_FOR, line);
    NodeVec targets = {0};
    const bool paren = skip_op(P, OP_LPAREN);
    do {
        Node *t = new_node(P, E_NAME, cur(P)->line);
        t->s = expect_name(P, "a loop variable name");
        vec_push(P, &targets, t);
    } while (skip_op(P, OP_COMMA) && cur(P)->type == T_NAME);
    if (paren) expect_op(P, OP_RPAREN, "')'");
    n->c = new_node(P, E_TUPLE, line);
    n->c->items = targets.p, n->c->n_items = targets.n;
    if (!skip_name(P, "in")) fail_at(P, "'in'");
    n->a = parse_single(P, false);
    if (skip_name(P, "if")) n->b = parse_single(P, true);
    if (tok_name(cur(P), "recursive"))
        parse_fail(P, cur(P)->line, "recursive loops are not supported by qlora's chat templates");
    expect_block_end(P);
    NodeVec body = {0}, other = {0};
    P->loop_depth++;
    const int end = parse_body(P, &body, END_FOR, line, "for");
    P->loop_depth--;
    if (end == 0) {
        expect_block_end(P);
        parse_body(P, &other, END_FOR_ELSE, line, "for");
    }
    expect_block_end(P);
    n->items = body.p, n->n_items = body.n;
    n->items2 = other.p, n->n_items2 = other.n;
    return n;
}

// {% set x = e %}, {% set ns.x = e %} or {% set x %}...{% endset %}, after "set".
static Node *parse_set(Parser *P, int line) {
    Node *n = new_node(P, N_SET, line);
    n->s = expect_name(P, "a variable name");
    if (skip_op(P, OP_DOT)) {
        n->flag = true;
        n->name = expect_name(P, "an attribute name");
    }
    if (tok_op(cur(P), OP_COMMA)) parse_fail(P, line, "assigning several variables in one set is not supported");
    if (skip_op(P, OP_ASSIGN)) {
        n->a = parse_single(P, true);
        expect_block_end(P);
        return n;
    }
    if (n->flag || cur(P)->type != T_BLOCK_END)
        parse_fail(P, line, "expected '=' in this set (filtered {%% set %%} blocks are not supported)");
    advance(P);
    NodeVec body = {0};
    parse_body(P, &body, END_SET, line, "set");
    expect_block_end(P);
    n->kind = N_SET_BLOCK;
    n->items = body.p, n->n_items = body.n;
    return n;
}

// {% name ... %} after its name: one statement.
static Node *parse_statement(Parser *P, Str name, int line) {
    static const char *const UNSUPPORTED[] = {"macro",   "call",  "filter", "raw",        "include", "import", "from",
                                              "extends", "block", "with",   "autoescape", "do",      "trans",  NULL};
    enter(P);
    Node *n = NULL;
    if (ct_str_eq(name, "if")) {
        n = parse_if(P, line);
    } else if (ct_str_eq(name, "for")) {
        n = parse_for(P, line);
    } else if (ct_str_eq(name, "set")) {
        n = parse_set(P, line);
    } else if (ct_str_eq(name, "break") || ct_str_eq(name, "continue")) {
        if (!P->loop_depth) parse_fail(P, line, "'%.*s' outside a for loop", (int)name.n, name.s);
        n = new_node(P, name.s[0] == 'b' ? N_BREAK : N_CONTINUE, line);
        expect_block_end(P);
    } else if (ct_str_eq(name, "generation")) {
        expect_block_end(P);
        NodeVec body = {0};
        parse_body(P, &body, END_GENERATION, line, "generation");
        expect_block_end(P);
        n = new_node(P, N_BLOCK, line);
        n->items = body.p, n->n_items = body.n;
    } else {
        for (const char *const *u = UNSUPPORTED; *u; u++)
            if (ct_str_eq(name, *u)) parse_fail(P, line, "the tag '%s' is not supported by qlora's chat templates", *u);
        parse_fail(P, line, "unexpected tag '%.*s'", (int)(name.n > 40 ? 40 : name.n), name.s);
    }
    P->depth--;
    return n;
}

// Statements until a {% tag %} named in ends (NULL-terminated; its name is consumed and its
// index returned) or the end of the template (-1; an error inside a block: open names it).
static int parse_body(Parser *P, NodeVec *body, const char *const *ends, int open_line, const char *open) {
    for (;;) {
        Token *t = advance(P);
        if (t->type == T_DATA) {
            Node *n = new_node(P, N_TEXT, t->line);
            n->s = t->s;
            vec_push(P, body, n);
        } else if (t->type == T_VAR_BEGIN) {
            Node *n = new_node(P, N_OUTPUT, t->line);
            n->a = parse_single(P, true);
            if (cur(P)->type != T_VAR_END) fail_at(P, "the end of the tag, }}");
            advance(P);
            vec_push(P, body, n);
        } else if (t->type == T_BLOCK_BEGIN) {
            const Token *name = cur(P);
            if (name->type != T_NAME) fail_at(P, "a tag name");
            advance(P);
            for (int k = 0; ends && ends[k]; k++)
                if (ct_str_eq(name->s, ends[k])) return k;
            vec_push(P, body, parse_statement(P, name->s, name->line));
        } else if (t->type == T_EOF) {
            if (!open) return -1;
            const char *close = ends[0];
            for (int k = 1; ends[k]; k++) close = ends[k];
            parse_fail(P, open_line, "the '%s' opened here is never closed with {%% %s %%}", open, close);
        } else {
            char buf[64];
            parse_fail(P, t->line, "unexpected %s", describe(t, buf, sizeof buf));
        }
    }
}

// ---- names qlora lacks ---------------------------------------------------------------------
// jinja2 refuses a filter or test it lacks when it compiles the template, except inside an if
// (condition and branches) or a conditional expression, where it fails only if that part runs
// (a for loop, {% set %} block or {% generation %} inside them is strict again). qlora refuses the
// filters and tests it lacks by the same rule, so such a template fails when it is loaded.
static void check_names(Parser *P, const Node *n, bool soft);

static void check_list(Parser *P, Node *const *items, size_t count, bool soft) {
    for (size_t i = 0; i < count; i++) check_names(P, items[i], soft);
}

static void check_names(Parser *P, const Node *n, bool soft) {
    if (!n) return;
    if ((n->kind == E_FILTER || n->kind == E_TEST) && !n->fn && !soft)
        parse_fail(P, n->line, CT_UNSUPPORTED_NAME, n->kind == E_FILTER ? "filter" : "test", (int)n->s.n, n->s.s);
    const bool cond = n->kind == N_IF || n->kind == E_COND;
    const bool strict = n->kind == N_FOR || n->kind == N_SET_BLOCK || n->kind == N_BLOCK;
    check_names(P, n->a, cond || soft);
    check_names(P, n->b, n->kind == E_COND || soft);
    check_names(P, n->c, n->kind == E_COND || soft);
    check_names(P, n->d, soft);
    check_list(P, n->items, n->n_items, cond || (soft && !strict));
    check_list(P, n->items2, n->n_items2, cond || (soft && !strict));
}

// ---- public --------------------------------------------------------------------------------
ChatTemplate *chat_template_parse(const char *text, size_t len, const char *name, Error *err) {
    if (len > CT_MAX_TEMPLATE_BYTES) {
        error_set(err, "%s: the template has %zu bytes; qlora takes at most %u", name, len, CT_MAX_TEMPLATE_BYTES);
        return NULL;
    }
    for (size_t i = 0, k; i < len; i += k)
        if (!(k = utf8_seq_len((const uint8_t *)text + i, len - i)) || text[i] == '\0') {
            error_set(err, "%s: byte %zu is %s; expected UTF-8 text", name, i,
                      text[i] ? "not valid UTF-8" : "a NUL byte");
            return NULL;
        }
    Parser *P = xcalloc(1, sizeof *P);
    P->t = xcalloc(1, sizeof *P->t);
    P->t->name = xstrdup(name);
    P->err = err;
    ct_pool_init(&P->t->pool, CT_MAX_POOL_BYTES);
    ct_pool_init(&P->tmp, CT_MAX_POOL_BYTES);
    ChatTemplate *t = NULL;
    if (!setjmp(P->jb)) {
        normalize(P, text, len);
        lex(P);
        NodeVec body = {0};
        parse_body(P, &body, NULL, 1, NULL);
        P->t->root = new_node(P, N_BLOCK, 1);
        P->t->root->items = body.p;
        P->t->root->n_items = body.n;
        check_list(P, body.p, body.n, false);
        char msg[200];
        if (!ct_scope_analyze(P->t, &P->tmp, msg, sizeof msg)) parse_fail(P, 1, "%s", msg);
        t = P->t;
    } else {
        chat_template_free(P->t);
    }
    ct_pool_free(&P->tmp);
    free(P);
    return t;
}

void chat_template_free(ChatTemplate *t) {
    if (!t) return;
    ct_pool_free(&t->pool);
    free(t->name);
    free(t);
}

const char *chat_template_name(const ChatTemplate *t) { return t->name; }
