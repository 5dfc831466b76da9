// hf_regex.c: see hf_regex.h.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "hf_regex.h"

#include <ctype.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"

struct HfRegex {
    pcre2_code *code;
    pcre2_match_data *match;
};

// Oniguruma's Unicode \s (doc/RE, "Character types"): U+0009..U+000D, U+0085 and the
// separators Zs, Zl, Zp.
static const char ONIG_SPACE[] = "\\t-\\r\\x{85}\\p{Z}";

// General categories: the \p{..} names that PCRE2 and Oniguruma read alike.
static const char *const GENERAL_CATEGORIES[] = {
    "L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No",
    "P", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "S", "Sm", "Sc", "Sk", "So",
    "Z", "Zs", "Zl", "Zp", "C", "Cc", "Cf", "Cs", "Co", "Cn"};

#define MAX_GROUP_DEPTH 64

// The translator's state while it walks one pattern.
typedef struct {
    const char *p;          // the Oniguruma pattern
    size_t i;               // current byte
    char *out;              // stb_ds: the PCRE2 pattern being written (NUL added at the end)
    bool in_class;          // inside [...]
    size_t class_body;      // offset of the first byte of the class body (after [ or [^)
    bool caseless[MAX_GROUP_DEPTH + 1];  // per open group: under (?i:
    int depth;
    int prev_letter;        // the ASCII letter just written outside a class, or 0
    char *why;
    size_t why_cap;
} Tr;

__attribute__((format(printf, 2, 3))) static bool tr_fail(Tr *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(t->why, t->why_cap, "unsupported regex at byte %zu: ", t->i);
    if (n >= 0 && (size_t)n < t->why_cap) vsnprintf(t->why + n, t->why_cap - (size_t)n, fmt, ap);
    va_end(ap);
    return false;
}

static void put(Tr *t, const char *s) {
    for (; *s; s++) arrput(t->out, *s);
}

// \p{Name} or \P{Name} (optionally \p{^Name}) at t->i (the backslash); copies it if Name is
// a general category.
static bool tr_property(Tr *t) {
    const char *s = t->p + t->i;
    if (s[2] != '{') return tr_fail(t, "\\%c without braces (write \\%c{Name})", s[1], s[1]);
    size_t k = 3 + (s[3] == '^');
    size_t name = k;
    while (isalpha((unsigned char)s[k])) k++;
    if (s[k] != '}') return tr_fail(t, "\\%c{...}: expected a general category name and '}'", s[1]);
    bool known = false;
    for (size_t g = 0; g < sizeof GENERAL_CATEGORIES / sizeof *GENERAL_CATEGORIES; g++)
        known |= strlen(GENERAL_CATEGORIES[g]) == k - name && !memcmp(GENERAL_CATEGORIES[g], s + name, k - name);
    if (!known)
        return tr_fail(t, "\\%c{%.*s}: only general categories (L, Lu, N, Nd, P, S, Z, ...) are supported; "
                          "scripts and binary properties differ between Oniguruma and PCRE2", s[1],
                       (int)(k - name), s + name);
    for (size_t j = 0; j <= k; j++) arrput(t->out, s[j]);
    t->i += k + 1;
    return true;
}

// \xHH or \x{H...} at t->i; copied (same meaning in both).
static bool tr_hex(Tr *t) {
    const char *s = t->p + t->i;
    size_t k = 2, digits = 0;
    if (s[2] == '{') {
        for (k = 3; isxdigit((unsigned char)s[k]); k++) digits++;
        if (s[k] != '}' || digits == 0 || digits > 8) return tr_fail(t, "\\x{...}: expected 1 to 8 hex digits");
        k++;
    } else {
        while (digits < 2 && isxdigit((unsigned char)s[k])) k++, digits++;
        if (digits == 0) return tr_fail(t, "\\x: expected hex digits");
    }
    for (size_t j = 0; j < k; j++) arrput(t->out, s[j]);
    t->i += k;
    return true;
}

// One escape sequence at t->i (the backslash).
static bool tr_escape(Tr *t) {
    const char c = t->p[t->i + 1];
    char buf[16];
    switch (c) {
    case '\0': return tr_fail(t, "a backslash ends the pattern");
    case 's':
        put(t, t->in_class ? "" : "[");
        put(t, ONIG_SPACE);
        put(t, t->in_class ? "" : "]");
        t->i += 2;
        return true;
    case 'S':
        if (t->in_class) return tr_fail(t, "\\S inside a character class");
        put(t, "[^");
        put(t, ONIG_SPACE);
        put(t, "]");
        t->i += 2;
        return true;
    case 'p': case 'P': return tr_property(t);
    case 'x': case 'u':
        if (t->caseless[t->depth]) return tr_fail(t, "\\%c under (?i: (write the character itself)", c);
        if (c == 'x') return tr_hex(t);
        break;
    case 'n': case 'r': case 't': case 'f':
        snprintf(buf, sizeof buf, "\\%c", c);
        put(t, buf);
        t->i += 2;
        return true;
    case 'v':
        put(t, "\\x{0b}");
        t->i += 2;
        return true;
    default: break;
    }
    if (c == 'u') {
        for (int k = 2; k < 6; k++)
            if (!isxdigit((unsigned char)t->p[t->i + k])) return tr_fail(t, "\\u: expected 4 hex digits");
        snprintf(buf, sizeof buf, "\\x{%.4s}", t->p + t->i + 2);
        put(t, buf);
        t->i += 6;
        return true;
    }
    if ((unsigned char)c >= 0x80 || isalnum((unsigned char)c))
        return tr_fail(t, "the escape \\%c means something else (or nothing) in Oniguruma and PCRE2", c);
    arrput(t->out, '\\');  // escaped punctuation is the literal character in both
    arrput(t->out, c);
    t->i += 2;
    return true;
}

// '(' at t->i: a plain group or one of the (?...) forms both engines read alike.
static bool tr_group(Tr *t) {
    static const char *const FORMS[] = {"(?:", "(?=", "(?!", "(?<=", "(?<!", "(?>", "(?i:"};
    const char *s = t->p + t->i;
    size_t len = 1;
    if (s[1] == '?') {
        len = 0;
        for (size_t f = 0; f < sizeof FORMS / sizeof *FORMS; f++)
            if (!strncmp(s, FORMS[f], strlen(FORMS[f]))) len = strlen(FORMS[f]);
        if (!len) return tr_fail(t, "the group '%.4s...': only (?: (?= (?! (?<= (?<! (?> (?i: are supported", s);
    }
    if (t->depth >= MAX_GROUP_DEPTH) return tr_fail(t, "groups nested deeper than %d", MAX_GROUP_DEPTH);
    t->depth++;
    t->caseless[t->depth] = t->caseless[t->depth - 1] || !strncmp(s, "(?i:", 4);
    for (size_t j = 0; j < len; j++) arrput(t->out, s[j]);
    t->i += len;
    return true;
}

// One byte (or escape) inside [...].
static bool tr_class_byte(Tr *t) {
    const char c = t->p[t->i];
    if (c == '\\') return tr_escape(t);
    if (c == '[') return tr_fail(t, "'[' inside a character class (a nested class in Oniguruma)");
    if (c == '&' && t->p[t->i + 1] == '&') return tr_fail(t, "'&&' (class intersection) inside a character class");
    if (c == ']' && arrlenu(t->out) == t->class_body) return tr_fail(t, "a character class that starts with ']'");
    if ((unsigned char)c >= 0x80 && t->caseless[t->depth])
        return tr_fail(t, "a non-ASCII character under (?i: (case folding differs)");
    if (c == ']') t->in_class = false;
    arrput(t->out, c);
    t->i++;
    return true;
}

// One ASCII letter or other literal byte outside a class; refuses what folds differently.
static bool tr_literal(Tr *t) {
    const unsigned char c = (unsigned char)t->p[t->i];
    if (t->caseless[t->depth]) {
        if (c >= 0x80) return tr_fail(t, "a non-ASCII character under (?i: (case folding differs)");
        static const char *const MULTI_FOLD[] = {"ss", "st", "ff", "fi", "fl"};
        char pair[3] = {(char)tolower(t->prev_letter), (char)tolower(c), 0};
        for (size_t k = 0; k < sizeof MULTI_FOLD / sizeof *MULTI_FOLD; k++)
            if (!strcmp(pair, MULTI_FOLD[k]))
                return tr_fail(t, "'%c%c' under (?i: (Oniguruma folds it to one character)", t->prev_letter, c);
    }
    arrput(t->out, (char)c);
    t->i++;
    t->prev_letter = isalpha(c) ? c : 0;
    return true;
}

// One step outside a class.
static bool tr_step(Tr *t) {
    const char c = t->p[t->i];
    const int letter = t->prev_letter;
    t->prev_letter = 0;
    switch (c) {
    case '\\': return tr_escape(t);
    case '(': return tr_group(t);
    case ')':
        if (t->depth > 0) t->depth--;  // an unbalanced ')' is left to PCRE2 to report
        arrput(t->out, c);
        t->i++;
        return true;
    case '[':
        t->in_class = true;
        arrput(t->out, c);
        t->i++;
        if (t->p[t->i] == '^') arrput(t->out, t->p[t->i++]);
        t->class_body = arrlenu(t->out);
        return true;
    case '{':
        if (t->p[t->i + 1] == ',') return tr_fail(t, "the quantifier {,n} (a literal in PCRE2)");
        arrput(t->out, c);
        t->i++;
        return true;
    default:
        t->prev_letter = letter;
        return tr_literal(t);
    }
}

// Rewrite an Oniguruma pattern as a PCRE2 one (see hf_regex.h); returns the stb_ds string (NUL
// terminated) or NULL with why filled.
static char *translate(const char *pattern, char *why, size_t why_cap) {
    Tr t = {.p = pattern, .why = why, .why_cap = why_cap};
    bool ok = true;
    while (ok && pattern[t.i]) ok = t.in_class ? tr_class_byte(&t) : tr_step(&t);
    if (ok && t.in_class) ok = tr_fail(&t, "a character class is not closed");
    if (!ok) {
        arrfree(t.out);
        return NULL;
    }
    arrput(t.out, '\0');
    return t.out;
}

static HfRegex *compile_pcre2(const char *pattern, uint32_t options, char *why, size_t why_cap) {
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);  // Oniguruma's only line end
    int code;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, options | PCRE2_UTF, &code, &at, cc);
    pcre2_compile_context_free(cc);
    if (!re) {
        PCRE2_UCHAR msg[200];
        pcre2_get_error_message(code, msg, sizeof msg);
        snprintf(why, why_cap, "regex does not compile at byte %zu: %s", (size_t)at, (const char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  // optional speed-up; the interpreter runs if absent
    HfRegex *r = xcalloc(1, sizeof *r);
    r->code = re;
    r->match = pcre2_match_data_create_from_pattern(re, NULL);
    return r;
}

bool hf_regex_compile(HfRegex **out, const char *pattern, bool literal, char *why, size_t why_cap) {
    *out = NULL;
    if (literal) {
        *out = compile_pcre2(pattern, PCRE2_LITERAL, why, why_cap);
        return *out != NULL;
    }
    char *pcre = translate(pattern, why, why_cap);
    if (!pcre) return false;
    *out = compile_pcre2(pcre, PCRE2_UCP | PCRE2_MULTILINE, why, why_cap);
    arrfree(pcre);
    return *out != NULL;
}

HfRegex *hf_regex_compile_native(const char *pattern) {
    char why[300];
    HfRegex *re = compile_pcre2(pattern, PCRE2_UCP, why, sizeof why);
    CHECK(re != NULL);
    return re;
}

void hf_regex_free(HfRegex *re) {
    if (!re) return;
    pcre2_match_data_free(re->match);
    pcre2_code_free(re->code);
    free(re);
}

// pcre2_match with the JIT when it can; a JIT stack overflow (a long subject) is retried by the
// interpreter, whose memory is bounded by PCRE2's heap limit instead.
static int match_at(HfRegex *re, const char *s, size_t len, size_t from, uint32_t options) {
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, from, options | PCRE2_NO_UTF_CHECK, re->match, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, from, options | PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                         re->match, NULL);
    return rc;
}

bool hf_regex_find_all(HfRegex *re, const char *s, size_t len, size_t **spans, char *why, size_t why_cap) {
    size_t last_end = 0;
    bool skip_next_empty = false;
    while (last_end <= len) {
        int rc = match_at(re, s ? s : "", len, last_end, 0);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[200];
            pcre2_get_error_message(rc, msg, sizeof msg);
            snprintf(why, why_cap, "regex matching failed at byte %zu: %s", last_end, (const char *)msg);
            return false;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(re->match);
        const size_t ms = ov[0], me = ov[1];
        last_end = me;
        if (me == ms) {  // as the onig crate: step over one character, maybe drop the match
            const size_t step = me < len ? utf8_seq_len((const uint8_t *)s + me, len - me) : 1;
            last_end += step ? step : 1;
            if (skip_next_empty) {
                skip_next_empty = false;
                continue;
            }
        } else {
            skip_next_empty = true;
        }
        arrput(*spans, ms);
        arrput(*spans, me);
    }
    return true;
}

bool hf_regex_matches_at(HfRegex *re, const char *s, size_t len, size_t pos) {
    return match_at(re, s, len, pos, PCRE2_ANCHORED) >= 0;
}
