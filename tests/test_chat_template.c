// test_chat_template.c: chat templates against the real jinja2 (tests/ref/chat/cases.json, made by
// tests/make_chat_fixtures.py with Debian's python3-jinja2 in transformers' environment): every
// rendering byte for byte, every failure at jinja2's line (with its message for
// raise_exception); the C-struct API against the JSON one; the named templates against their
// copies in tests/ref/chat/named/; unsupported constructs, syntax errors, run-time errors and
// limits with their one-line messages; the folder loader on hand-made folders.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chat_template.h"
#include "json.h"
#include "path.h"
#include "test.h"

// Print where two texts first differ, with a little escaped context.
static void show_diff(const char *got, size_t got_n, const char *want, size_t want_n) {
    size_t i = 0;
    while (i < got_n && i < want_n && got[i] == want[i]) i++;
    printf("  first difference at byte %zu (got %zu bytes, want %zu)\n", i, got_n, want_n);
    const char *label[2] = {"got ", "want"};
    const char *text[2] = {got, want};
    const size_t len[2] = {got_n, want_n};
    for (int k = 0; k < 2; k++) {
        printf("  %s: ...", label[k]);
        for (size_t j = i > 20 ? i - 20 : 0; j < len[k] && j < i + 40; j++) {
            const unsigned char c = (unsigned char)text[k][j];
            if (c == '\n')
                printf("\\n");
            else if (c < 0x20 || c == 0x7F)
                printf("\\x%02x", c);
            else
                putchar(c);
        }
        printf("...\n");
    }
}

static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

// ---- fixtures ------------------------------------------------------------------------------
typedef struct {
    const char *name;
    ChatTemplate *t;
} Parsed;

static ChatTemplate *parsed(Parsed *cache, size_t *n, const cJSON *templates, const char *name) {
    for (size_t i = 0; i < *n; i++)
        if (strcmp(cache[i].name, name) == 0) return cache[i].t;
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(templates, name);
    Error err = {0};
    ChatTemplate *t =
        cJSON_IsString(text) ? chat_template_parse(text->valuestring, strlen(text->valuestring), name, &err) : NULL;
    EXPECT(t != NULL, "template %s parses (%s)", name, err.msg);
    cache[*n].name = name;
    cache[*n].t = t;
    (*n)++;
    return t;
}

// The conversation as ChatMessage structs, if it has only string roles and contents (and
// string or absent tokens): then the C API must give what the JSON one gives.
static bool as_structs(const cJSON *conv, ChatMessage *msgs, size_t cap, ChatRenderArgs *a) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(conv, "messages");
    size_t n = 0;
    for (const cJSON *e = m->child; e; e = e->next, n++) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(e, "role"),
                    *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (n == cap || cJSON_GetArraySize(e) != 2 || !cJSON_IsString(role) || !cJSON_IsString(content)) return false;
        msgs[n] = (ChatMessage){role->valuestring, content->valuestring};
    }
    for (const cJSON *k = conv->child; k; k = k->next)
        if (strcmp(k->string, "messages") && strcmp(k->string, "bos_token") && strcmp(k->string, "eos_token"))
            return false;
    const cJSON *bos = cJSON_GetObjectItemCaseSensitive(conv, "bos_token"),
                *eos = cJSON_GetObjectItemCaseSensitive(conv, "eos_token");
    *a = (ChatRenderArgs){msgs, n, bos ? bos->valuestring : NULL, eos ? eos->valuestring : NULL, false};
    return true;
}

static void check_case(const cJSON *c, ChatTemplate *t, const cJSON *conv, const char *what) {
    const bool agp = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "add_generation_prompt"));
    cJSON *vars = cJSON_Duplicate(conv, true);
    cJSON_AddBoolToObject(vars, "add_generation_prompt", agp);
    char *out = NULL;
    size_t n = 0;
    Error err = {0};
    const bool ok = t && chat_template_render_json(t, vars, &out, &n, &err);
    const cJSON *expected = cJSON_GetObjectItemCaseSensitive(c, "expected");
    if (cJSON_IsString(expected)) {
        const bool same = ok && n == strlen(expected->valuestring) && memcmp(out, expected->valuestring, n) == 0;
        EXPECT(same, "%s renders as jinja2 does%s%s", what, ok ? "" : ": ", ok ? "" : err.msg);
        if (ok && !same) show_diff(out, n, expected->valuestring, strlen(expected->valuestring));
    } else {
        const char *type = cJSON_GetObjectItemCaseSensitive(c, "error_type")->valuestring;
        const char *msg = cJSON_GetObjectItemCaseSensitive(c, "error")->valuestring;
        char prefix[160], raised[700];
        snprintf(prefix, sizeof prefix, "%s:%d: ", chat_template_name(t),
                 (int)cJSON_GetObjectItemCaseSensitive(c, "error_line")->valuedouble);
        snprintf(raised, sizeof raised, "%sraise_exception: %s", prefix, msg);
        const bool right =
            !ok && (strcmp(type, "TemplateError") ? starts_with(err.msg, prefix) : strcmp(err.msg, raised) == 0);
        EXPECT(right, "%s fails as jinja2 does (%s at line %s: %s); qlora: %s", what, type, prefix, msg,
               ok ? "rendered" : err.msg);
    }
    ChatMessage msgs[32];
    ChatRenderArgs a;
    if (t && as_structs(conv, msgs, 32, &a)) {
        a.add_generation_prompt = agp;
        char *out2 = NULL;
        size_t n2 = 0;
        Error err2 = {0};
        const bool ok2 = chat_template_render(t, &a, &out2, &n2, &err2);
        EXPECT(ok2 == ok && (ok ? n2 == n && memcmp(out, out2, n) == 0 : strcmp(err.msg, err2.msg) == 0),
               "%s: the ChatMessage API gives what the JSON API gives", what);
        free(out2);
    }
    free(out);
    cJSON_Delete(vars);
}

static void test_fixtures(const cJSON *fx) {
    const cJSON *templates = cJSON_GetObjectItemCaseSensitive(fx, "templates");
    const cJSON *convs = cJSON_GetObjectItemCaseSensitive(fx, "conversations");
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(fx, "cases");
    Parsed cache[64];
    size_t n_cache = 0;
    int n = 0;
    for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next, n++) {
        const char *tname = cJSON_GetObjectItemCaseSensitive(c, "template")->valuestring;
        const char *cname = cJSON_GetObjectItemCaseSensitive(c, "conversation")->valuestring;
        char what[160];
        snprintf(what, sizeof what, "%s x %s%s", tname, cname,
                 cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "add_generation_prompt")) ? " + generation prompt"
                                                                                            : "");
        if (n_cache == 64) break;
        check_case(c, parsed(cache, &n_cache, templates, tname), cJSON_GetObjectItemCaseSensitive(convs, cname), what);
    }
    EXPECT(n >= 200, "the fixture has the cases it should (%d)", n);
    for (size_t i = 0; i < n_cache; i++) chat_template_free(cache[i].t);
    // qlora's named templates are the text the fixture rendered
    for (int i = 0; CHAT_TEMPLATE_NAMES[i]; i++) {
        char key[64];
        snprintf(key, sizeof key, "named/%s", CHAT_TEMPLATE_NAMES[i]);
        const cJSON *copy = cJSON_GetObjectItemCaseSensitive(templates, key);
        EXPECT(cJSON_IsString(copy) && strcmp(copy->valuestring, chat_template_builtin(CHAT_TEMPLATE_NAMES[i])) == 0,
               "named template %s is tests/ref/chat/named/%s.jinja", CHAT_TEMPLATE_NAMES[i], CHAT_TEMPLATE_NAMES[i]);
    }
    EXPECT(chat_template_builtin("chatgpt") == NULL && chat_template_builtin(NULL) == NULL,
           "unknown named templates are NULL");
}

// ---- errors with their messages ------------------------------------------------------------
// Parse text; if that works, render it over vars (JSON); the error must contain want.
static void expect_error(const char *text, const char *vars, const char *want) {
    Error err = {0};
    ChatTemplate *t = chat_template_parse(text, strlen(text), "t.jinja", &err);
    char *out = NULL;
    if (t) {
        cJSON *v = json_parse(vars, strlen(vars), 0, "vars", &err);
        if (v && chat_template_render_json(t, v, &out, NULL, &err))
            snprintf(err.msg, sizeof err.msg, "rendered '%.200s'", out);
        cJSON_Delete(v);
    }
    EXPECT(strstr(err.msg, want) && !strchr(err.msg, '\n') && (!out || !t), "%.60s: error has '%s' (got: %s)", text,
           want, err.msg);
    free(out);
    chat_template_free(t);
}

// Parse and render text over vars (JSON): the output must be want.
static void expect_render(const char *text, const char *vars, const char *want) {
    Error err = {0};
    ChatTemplate *t = chat_template_parse(text, strlen(text), "t.jinja", &err);
    cJSON *v = json_parse(vars, strlen(vars), 0, "vars", &err);
    char *out = NULL;
    const bool ok = t && v && chat_template_render_json(t, v, &out, NULL, &err);
    EXPECT(ok && strcmp(out, want) == 0, "%.60s renders '%s' (got: %s)", text, want, ok ? out : err.msg);
    free(out);
    cJSON_Delete(v);
    chat_template_free(t);
}

static void test_unsupported(void) {
    // like jinja2, a filter or test qlora lacks inside an if or a conditional expression fails only
    // where it runs; elsewhere (also in a loop or set block inside an if) the template is refused
    expect_render(
        "{% if false %}{{ x | wordcount }}{% elif false and x is escaped %}{% endif %}{{ x | nope if false }}ok",
        "{\"messages\": []}", "ok");
    expect_error("{% if true %}\n{{ x | wordcount }}{% endif %}", "{\"messages\": []}",
                 "t.jinja:2: the filter 'wordcount' is not supported");
    expect_error("{% if false %}{% for a in [] %}\n{{ a is escaped }}{% endfor %}{% endif %}", "{\"messages\": []}",
                 "t.jinja:2: the test 'escaped' is not supported");
    expect_error("{% if false %}{% set b %}{{ a | nope }}{% endset %}{% endif %}", "{\"messages\": []}",
                 "t.jinja:1: the filter 'nope' is not supported");
    expect_error("{% for a in [] if a | nope %}{% endfor %}", "{\"messages\": []}",
                 "the filter 'nope' is not supported");
    static const char *const CASES[][2] = {
        {"{% macro m() %}x{% endmacro %}", "t.jinja:1: the tag 'macro' is not supported"},
        {"a\n{% raw %}{{ x }}{% endraw %}", "t.jinja:2: the tag 'raw' is not supported"},
        {"{% include 'x' %}", "the tag 'include' is not supported"},
        {"{% filter upper %}x{% endfilter %}", "the tag 'filter' is not supported"},
        {"\n\n{{ x | wordcount }}", "t.jinja:3: the filter 'wordcount' is not supported"},
        {"{{ x | indent(2) }}", "the filter 'indent' is not supported"},
        {"{% if x is escaped %}{% endif %}", "the test 'escaped' is not supported"},
        {"{{ x | ext.f }}", "t.jinja:1: the filter 'ext.f' is not supported"},
        {"{% for x in xs recursive %}{% endfor %}", "recursive loops are not supported"},
        {"{% set a, b = 1, 2 %}", "assigning several variables in one set is not supported"},
        {"{{ a, b }}", "tuples without parentheses are not supported"},
        {"{{ f(*args) }}", "*args and **kwargs in calls are not supported"},
        {"{{ 0x1F }}", "hex literals are not supported"},
        {"{{ '\\N{BULLET}' }}", "\\N{...} escapes in strings are not supported"},
        {"{{ '\\x00' }}", "a NUL character in a string literal is not supported"},
        {"{% set x | upper %}a{% endset %}", "filtered {% set %} blocks are not supported"},
        {"{{ x[1, 2] }}", "tuple subscripts (x[a, b]) are not supported"},
        {"{{ né }}", "t.jinja:1: unexpected byte 0xc3 in a tag"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        expect_error(CASES[i][0], "{\"messages\": []}", CASES[i][1]);
    static const char *const RUNTIME[][3] = {
        {"{{ 'a'.zfill(3) }}", "{\"messages\": []}", "t.jinja:1: the method 'zfill' of a str is not supported"},
        {"{{ m.pop('a') }}", "{\"messages\": [], \"m\": {\"a\": 1}}", "the method 'pop' of a dict is not supported"},
        {"{{ xs.append(1) }}", "{\"messages\": [], \"xs\": []}", "the method 'append' of a list is not supported"},
        {"{{ lipsum() }}", "{\"messages\": []}", "the function 'lipsum' is not supported"},
        {"{% for m in messages %}{{ loop.changed(1) }}{% endfor %}", "{\"messages\": [1]}",
         "the method 'changed' of a LoopContext is not supported"},
        {"{{ 'É' | lower }}", "{\"messages\": []}", "lower of non-ASCII text is not supported"},
        {"{{ ['é'] }}", "{\"messages\": []}", "printing a list or dict that holds non-ASCII text is not supported"},
        {"{% set g = [1, 2] | select %}{{ g | list }}{{ g | list }}", "{\"messages\": []}",
         "a generator (from select, map, reverse or items) is used a second time"},
        {"{% if [1] | select %}{% endif %}", "{\"messages\": []}", "the truth of a generator"},
        {"{{ x.__class__ }}", "{\"messages\": [], \"x\": 1}", "the attribute '__class__' is not supported"},
        {"{{ 'é😀' | tojson(separators=(',', ':')) }}", "{\"messages\": []}",
         "tojson's separators argument is not supported"},
        {"{{ x is sameas 1 }}", "{\"messages\": [], \"x\": 1}",
         "'sameas' is supported only against none, true and false"},
        {"{{ 'nan' | int }}", "{\"messages\": []}", "int of 'nan' is not supported"},
        {"{{ strftime_now('%f') }}", "{\"messages\": []}", "strftime_now: %f is not supported"},
        {"{{ {1: 2} }}", "{\"messages\": []}", "dict keys other than strings are not supported"},
        {"{{ big }}", "{\"messages\": [], \"big\": 1e300}", "is an integer beyond 2^53: not supported"},
    };
    for (size_t i = 0; i < sizeof RUNTIME / sizeof RUNTIME[0]; i++)
        expect_error(RUNTIME[i][0], RUNTIME[i][1], RUNTIME[i][2]);
}

static void test_syntax_errors(void) {
    static const char *const CASES[][2] = {
        {"{% if x %}\nno end", "t.jinja:1: the 'if' opened here is never closed with {% endif %}"},
        {"{% for m in messages %}\n{% if m %}\n{% endfor %}", "t.jinja:3: unexpected tag 'endfor'"},
        {"text\n{% endif %}", "t.jinja:2: unexpected tag 'endif'"},
        {"{{ 'abc }}", "t.jinja:1: the string opened here is never closed"},
        {"a\n{# never closed", "t.jinja:2: the comment opened here is never closed with #}"},
        {"{{ x ", "t.jinja:1: the tag opened here is never closed with }}"},
        {"{{ x ! y }}", "unexpected character '!' in a tag"},
        {"{{ (x ]}}", "unexpected ']', expected ')'"},
        {"{{ x) }}", "unexpected ')'"},
        {"{{ '\\x4' }}", "a \\x escape in a string needs 2 hex digits"},
        {"{{ '\\udc00' }}", "is not a Unicode scalar value"},
        {"{% break %}", "'break' outside a for loop"},
        {"{{ }}", "expected an expression, found '}}'"},
        {"{% if %}{% endif %}", "expected an expression, found '%}'"},
        {"{% for in x %}{% endfor %}", "expected 'in', found 'x'"},
        {"{% for 1 in x %}{% endfor %}", "expected a loop variable name, found a number"},
        {"{% for a b %}{% endfor %}", "expected 'in', found 'b'"},
        {"{% unknown %}", "unexpected tag 'unknown'"},
        {"{% %}", "expected a tag name, found '%}'"},
        {"{{ x is defined is none }}", "tests cannot be chained with 'is'"},
        {"{{ f(a=1, 2) }}", "a positional argument follows a keyword argument"},
        {"{{ 99999999999999999999 }}", "larger than qlora's 64-bit integers"},
        {"{{ x.(1) }}", "expected a name or number after '.', found '('"},
        {"{{ {'a' 1} }}", "expected ':' in a dict literal, found a number"},
        {"{% set x %}never ended", "the 'set' opened here is never closed with {% endset %}"},
        {"{% else %}", "unexpected tag 'else'"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        expect_error(CASES[i][0], "{\"messages\": []}", CASES[i][1]);
    Error err = {0};
    EXPECT(!chat_template_parse("a\xff", 2, "bad.jinja", &err) &&
               strstr(err.msg, "bad.jinja: byte 1 is not valid UTF-8"),
           "invalid UTF-8 is refused with its offset (%s)", err.msg);
    EXPECT(!chat_template_parse("a\0b", 3, "nul.jinja", &err) && strstr(err.msg, "byte 1 is a NUL byte"),
           "a NUL byte is refused (%s)", err.msg);
}

static void test_runtime_errors(void) {
    static const char *const CASES[][3] = {
        {"{{ x.y.z }}", "{\"messages\": [], \"x\": {}}", "t.jinja:1: 'y' is undefined (reading an attribute of it)"},
        {"\n{{ messages[0]['role'] }}", "{\"messages\": []}",
         "t.jinja:2: an undefined value is used (taking an item of it)"},
        {"{{ nope() }}", "{\"messages\": []}", "'nope' is undefined (called as a function)"},
        {"{{ 'a' + 1 }}", "{\"messages\": []}", "'+' between a str and a int is not supported"},
        {"{{ 1 + u }}", "{\"messages\": []}", "'u' is undefined (in arithmetic)"},
        {"{{ 1 < 'a' }}", "{\"messages\": []}", "'<' is not supported between a int and a str"},
        {"{{ 1 // 0 }}", "{\"messages\": []}", "integer division or modulo by zero"},
        {"{{ 1 / 0 }}", "{\"messages\": []}", "division by zero"},
        {"{{ 9223372036854775807 + 1 }}", "{\"messages\": []}", "an integer result beyond 64 bits is not supported"},
        {"{{ 3 ** 50 }}", "{\"messages\": []}", "an integer result beyond 64 bits is not supported"},
        {"{{ 5 | length }}", "{\"messages\": []}", "a int has no length"},
        {"{% for x in 5 %}{% endfor %}", "{\"messages\": []}", "a int is not iterable"},
        {"{% for a, b in [[1, 2, 3]] %}{% endfor %}", "{\"messages\": []}",
         "cannot unpack 3 values into 2 loop variables"},
        {"{% set x = 1 %}{% set x.y = 2 %}", "{\"messages\": []}", "cannot set an attribute of 'x', a int"},
        {"{{ 1 in 2 }}", "{\"messages\": []}", "'in' a int is not supported"},
        {"{{ 1 in 'abc' }}", "{\"messages\": []}", "'in <string>' needs a string on the left"},
        {"{{ 'abc'[::0] }}", "{\"messages\": []}", "a slice step cannot be zero"},
        {"{{ 5 | items }}", "{\"messages\": []}", "items: can only get item pairs from a mapping"},
        {"{{ range(200000) | length }}", "{\"messages\": []}", "range of more than 100000 items"},
        {"{{ raise_exception('two\\nlines') }}", "{\"messages\": []}", "t.jinja:1: raise_exception: two lines"},
        {"{{ raise_exception(x) }}", "{\"messages\": [], \"x\": 42}", "t.jinja:1: raise_exception: 42"},
        {"{{ x }}", "{\"messages\": [], \"x\": \"\\u00e9\\udc00\"}", "invalid JSON"},
        {"{{ messages }}", "{\"messages\": 3}", "t.jinja: the variables need \"messages\", an array"},
        {"{{ x | tojson }}", "{\"messages\": []}", "tojson: a Undefined is not JSON serializable"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) expect_error(CASES[i][0], CASES[i][1], CASES[i][2]);
    // limits: time, output size, nesting, template size
    expect_error(
        "{% set r = range(1000) %}{% for a in r %}{% for b in r %}{% for c in r %}{% endfor %}{% endfor %}{% endfor %}",
        "{\"messages\": []}", "the rendering takes more than 5000000 steps");
    expect_error(
        "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{\"messages\": []}", "MiB");
    expect_error("{{ 'x' * 100000000 }}", "{\"messages\": []}", "repeating 100000000 times is too long");
    char deep[400];
    memset(deep, '(', 200);
    strcpy(deep + 200, "1");
    memset(deep + 201, ')', 130);
    deep[331] = '\0';
    char text[420];
    snprintf(text, sizeof text, "{{ %s }}", deep);
    expect_error(text, "{\"messages\": []}", "brackets nest deeper than 128");
    char nots[700] = "{{ ";
    for (int i = 0; i < 150; i++) strcat(nots, "not ");
    strcat(nots, "x }}");
    expect_error(nots, "{\"messages\": []}", "expressions or blocks nest deeper than 128");
    char *chain = malloc(100000);
    strcpy(chain, "{{ 1");
    for (int i = 0; i < 20000; i++) strcat(chain + 4 + 4 * i, " + 1");
    strcat(chain, " }}");
    expect_error(chain, "{\"messages\": []}", "expressions or blocks nest deeper than 128");
    free(chain);
    expect_error(
        "{% set ns = namespace(x=[]) %}{% for i in range(2000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
        "{\"messages\": []}", "values nest deeper than 1000");
    expect_error(
        "{% set ns = namespace(x=[]) %}{% for i in range(2000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x == ns.x }}",
        "{\"messages\": []}", "values nest deeper than 1000");
    expect_error(
        "{% set ns = namespace(x=[]) %}{% for i in range(2000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x | tojson }}",
        "{\"messages\": []}", "values nest deeper than 1000");
    const size_t big = (4u << 20) + 1;
    char *huge = malloc(big);
    memset(huge, 'a', big);
    Error err = {0};
    EXPECT(!chat_template_parse(huge, big, "huge.jinja", &err) && strstr(err.msg, "qlora takes at most 4194304"),
           "a template over 4 MiB is refused (%s)", err.msg);
    free(huge);
}

// strftime_now uses the clock, so it is checked here rather than against a fixture.
static void test_strftime(void) {
    const char *text = "{{ strftime_now('%Y') }}|{{ strftime_now is defined }}";
    Error err = {0};
    ChatTemplate *t = chat_template_parse(text, strlen(text), "time", &err);
    const ChatRenderArgs a = {NULL, 0, NULL, NULL, false};
    char *out = NULL, want[32];
    const time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    snprintf(want, sizeof want, "%d|True", tm.tm_year + 1900);
    EXPECT(t && chat_template_render(t, &a, &out, NULL, &err) && strcmp(out, want) == 0,
           "strftime_now('%%Y') is this year (%s)", out ? out : err.msg);
    free(out);
    chat_template_free(t);
}

// ---- the folder loader ---------------------------------------------------------------------
static void put(const char *dir, const char *name, const char *text) {
    char *p = path_join(dir, name);
    FILE *f = fopen(p, "wb");
    if (f) fputs(text, f), fclose(f);
    free(p);
}

static void drop(const char *dir, const char *name) {
    char *p = path_join(dir, name);
    unlink(p);
    free(p);
}

static void expect_read(const char *dir, bool ok, const char *want_text, const char *want_bos, const char *want_eos,
                        const char *want, const char *what) {
    ChatTemplateSource src;
    Error err = {0};
    const bool got = chat_template_read_dir(dir, &src, &err);
    bool right = got == ok;
    if (ok && got) {
        right = right &&
                (want_text ? src.text && strcmp(src.text, want_text) == 0 && src.len == strlen(want_text) : !src.text);
        right = right && (want_bos ? src.bos_token && strcmp(src.bos_token, want_bos) == 0 : !src.bos_token);
        right = right && (want_eos ? src.eos_token && strcmp(src.eos_token, want_eos) == 0 : !src.eos_token);
        right = right && (!want || (src.origin && strstr(src.origin, want)));
    } else if (!ok) {
        right = right && strstr(err.msg, want) && strstr(err.msg, dir);
    }
    EXPECT(right, "loader: %s (%s)", what, got ? (src.origin ? src.origin : "no template") : err.msg);
    if (got) chat_template_source_free(&src);
}

static void test_loader(void) {
    char dir[] = "/tmp/qlora_chat_XXXXXX";
    if (!mkdtemp(dir)) {
        SKIP(1, "no temporary folder");
        return;
    }
    expect_read(dir, true, NULL, NULL, NULL, NULL, "an empty folder has no template and no tokens");
    put(dir, "tokenizer_config.json",
        "{\"bos_token\": \"<s>\", \"eos_token\": {\"__type\": \"AddedToken\", \"content\": \"</s>\"},"
        " \"chat_template\": \"{{ bos_token }}{{ messages[0].content }}\"}");
    expect_read(dir, true, "{{ bos_token }}{{ messages[0].content }}", "<s>", "</s>",
                "tokenizer_config.json's chat_template",
                "a string chat_template, tokens as a string and as an AddedToken");
    put(dir, "tokenizer_config.json",
        "{\"bos_token\": null, \"eos_token\": \"<|im_end|>\", \"chat_template\": ["
        "{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", \"template\": \"D\"}]}");
    expect_read(dir, true, "D", NULL, "<|im_end|>", NULL, "the list form takes \"default\"; a null bos_token is unset");
    put(dir, "chat_template.jinja", "from the file\n");
    expect_read(dir, true, "from the file\n", NULL, "<|im_end|>", "chat_template.jinja",
                "chat_template.jinja wins over the config");
    drop(dir, "chat_template.jinja");
    put(dir, "tokenizer_config.json",
        "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"rag\", \"template\": \"R\"}]}");
    expect_read(dir, false, NULL, NULL, NULL, "the named templates (tool_use, rag) include none named \"default\"",
                "a list without default");
    put(dir, "tokenizer_config.json", "{\"chat_template\": 7}");
    expect_read(dir, false, NULL, NULL, NULL,
                "chat_template: expected a string or a list of {\"name\", \"template\"}, found a number",
                "a chat_template of the wrong type");
    put(dir, "tokenizer_config.json", "{\"chat_template\": [{\"name\": \"default\"}]}");
    expect_read(dir, false, NULL, NULL, NULL, "expected a list of {\"name\": string, \"template\": string}",
                "a list entry without its template");
    put(dir, "tokenizer_config.json", "{\"bos_token\": 1}");
    expect_read(dir, false, NULL, NULL, NULL,
                "tokenizer_config.json: bos_token: expected a string or {\"content\": string}, found a number",
                "a bos_token of the wrong type");
    put(dir, "tokenizer_config.json", "{\"eos_token\": {\"id\": 2}}");
    expect_read(dir, false, NULL, NULL, NULL,
                "eos_token: expected a string or {\"content\": string}, found an object without a \"content\" string",
                "an AddedToken without content");
    put(dir, "tokenizer_config.json", "{\"chat_template\": \"x\",}");
    expect_read(dir, false, NULL, NULL, NULL, "tokenizer_config.json: invalid JSON at byte",
                "broken JSON names the file and byte");
    put(dir, "tokenizer_config.json", "[1]");
    expect_read(dir, false, NULL, NULL, NULL, "tokenizer_config.json: expected a JSON object",
                "a config that is not an object");
    put(dir, "tokenizer_config.json", "{\"eos_token\": \"</s>\"}");
    put(dir, "special_tokens_map.json", "{\"bos_token\": {\"content\": \"<s>\"}, \"eos_token\": \"</s>\"}");
    expect_read(dir, true, NULL, "<s>", "</s>", NULL, "special_tokens_map.json fills a token the config leaves out");
    put(dir, "special_tokens_map.json", "{\"eos_token\": \"<|endoftext|>\"}");
    expect_read(dir, false, NULL, NULL, NULL, "eos_token is '</s>' but",
                "tokens that differ between the two files are refused");
    drop(dir, "special_tokens_map.json");
    // chat_template_load: the folder's own template, a named one, unknown names, unsupported templates
    ChatTemplateSource src;
    Error err = {0};
    put(dir, "tokenizer_config.json",
        "{\"eos_token\": \"</s>\", \"chat_template\": \"{% for m in messages %}{% macro f() %}{% endmacro %}{% endfor %}\"}");
    ChatTemplate *t = chat_template_load("tokenizer_default", dir, &src, &err);
    EXPECT(!t && strstr(err.msg, "tokenizer_config.json's chat_template:1: the tag 'macro' is not supported") &&
               strstr(err.msg, "set chat_template to one of chatml, llama3, mistral, zephyr, alpaca instead"),
           "an unsupported model template names the file, the line and the named templates (%s)", err.msg);
    t = chat_template_load("zephyr", dir, &src, &err);
    const ChatMessage m[] = {{"user", "Hi"}};
    const ChatRenderArgs a = {m, 1, src.bos_token, src.eos_token, true};
    char *out = NULL;
    EXPECT(t && src.eos_token && chat_template_render(t, &a, &out, NULL, &err) &&
               strcmp(out, "<|user|>\nHi</s>\n<|assistant|>\n") == 0,
           "a named template with the folder's eos_token (%s)", out ? out : err.msg);
    free(out);
    chat_template_free(t);
    chat_template_source_free(&src);
    t = chat_template_load("chatgpt", dir, &src, &err);
    EXPECT(!t && strstr(err.msg, "unknown template 'chatgpt'; expected tokenizer_default or one of chatml"),
           "an unknown name (%s)", err.msg);
    put(dir, "tokenizer_config.json", "{\"eos_token\": \"</s>\"}");
    t = chat_template_load("tokenizer_default", dir, &src, &err);
    EXPECT(!t && strstr(err.msg,
                        "no chat template (neither chat_template.jinja nor tokenizer_config.json's chat_template)"),
           "a folder without a template (%s)", err.msg);
    put(dir, "tokenizer_config.json", "{\"chat_template\": \"{{ messages | length }}\"}");
    t = chat_template_load(NULL, dir, &src, &err);
    EXPECT(t && strstr(chat_template_name(t), "tokenizer_config.json's chat_template"),
           "the folder's own template loads (%s)", err.msg);
    chat_template_free(t);
    chat_template_source_free(&src);
    drop(dir, "tokenizer_config.json");
    rmdir(dir);
}

int main(void) {
    Error err = {0};
    cJSON *fx = json_parse_file("tests/ref/chat/cases.json", &err);
    EXPECT(fx != NULL, "tests/ref/chat/cases.json loads (%s)", err.msg);
    if (fx) test_fixtures(fx);
    cJSON_Delete(fx);
    test_unsupported();
    test_syntax_errors();
    test_runtime_errors();
    test_strftime();
    test_loader();
    return test_summary("test_chat_template");
}
