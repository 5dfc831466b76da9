// cmd/cli.c: see cmd/cli.h.
#include "cmd/cli.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"

// ---- print and exit --------------------------------------------------------------------------

void die(int status, const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fputs("qlora: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(status);
}

void die_error(const Error *err) {
    die(err->status ? err->status : EXIT_RUNTIME, "%s", err->msg);
}

// Print cmd's one-line usage error; returns EXIT_BAD_INPUT.
static int usage_vprint(const char *cmd, const char *fmt, va_list ap) {
    fflush(stdout);
    fprintf(stderr, "qlora: error: %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'qlora %s --help')\n", cmd);
    return EXIT_BAD_INPUT;
}

// usage_vprint with printf arguments.
static int usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = usage_vprint(cmd, fmt, ap);
    va_end(ap);
    return rc;
}

void cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    usage_vprint(cmd, fmt, ap);
    va_end(ap);
    exit(EXIT_BAD_INPUT);
}

// ---- walking a table -------------------------------------------------------------------------

// The CLI_END entry (a group has no name either).
static bool is_end(const CliOption *o) { return !o->name && o->type != CLI_T_GROUP; }
// A positional entry: its name does not start with '-'.
static bool is_positional(const CliOption *o) { return o->name && o->name[0] != '-'; }

// An entry of a table with groups flattened: the option and the address of its field.
typedef struct {
    const CliOption *opt;
    char *field;
} CliEntry;

// Append every entry of table t (fields relative to base), groups expanded in place, to
// *out (stb_ds).
static void flatten(const CliOption *t, char *base, CliEntry **out) {
    for (; !is_end(t); t++) {
        if (t->type == CLI_T_GROUP) flatten(t->group, base + t->offset, out);
        else arrput(*out, ((CliEntry){t, base + t->offset}));
    }
}

// ---- values ----------------------------------------------------------------------------------

// The words of NULL-terminated w joined into buf: "a, b or c" with sep ", " and last " or ".
static const char *join_words(const char *const *w, const char *sep, const char *last, char *buf, size_t cap) {
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; w[i] && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", i == 0 ? "" : w[i + 1] ? sep : last, w[i]);
    return buf;
}

// The range of a numeric option in words: "an integer in [2, 1048576]", "a number in (0, 1]",
// "a positive number".
static const char *range_words(const CliOption *o, char *buf, size_t cap) {
    const bool open = o->flags & CLI_LO_OPEN;
    if (o->type == CLI_T_INT)
        snprintf(buf, cap, "an integer in [%.0f, %.0f]", o->lo, o->hi);
    else if (isinf(o->hi))
        snprintf(buf, cap, open && o->lo == 0 ? "a positive number" : open ? "a number > %g" : "a number >= %g",
                 o->lo);
    else
        snprintf(buf, cap, "a number in %c%g, %g]", open ? '(' : '[', o->lo, o->hi);
    return buf;
}

// Store value into e's field, or fill err with what was expected.
static bool set_value(const CliEntry *e, const char *value, Error *err) {
    const CliOption *o = e->opt;
    char words[128];
    switch (o->type) {
    case CLI_T_STR: *(const char **)e->field = value; return true;
    case CLI_T_LIST: arrput(*(const char ***)e->field, value); return true;
    case CLI_T_CALL: return o->call(o->name, value, e->field, err);
    case CLI_T_INT: {
        long v;
        if (!parse_long(value, (long)o->lo, (long)o->hi, &v))
            return error_set(err, "%s must be %s, got '%s'", o->name, range_words(o, words, sizeof words), value);
        *(long *)e->field = v;
        return true;
    }
    case CLI_T_FLOAT: {
        double v;
        if (!parse_double(value, &v) || !(v >= o->lo && v <= o->hi) || (o->flags & CLI_LO_OPEN && v == o->lo))
            return error_set(err, "%s must be %s, got '%s'", o->name, range_words(o, words, sizeof words), value);
        *(double *)e->field = v;
        return true;
    }
    case CLI_T_CHOICE:
        for (const char *const *c = o->choices; *c; c++)
            if (strcmp(*c, value) == 0) {
                *(const char **)e->field = *c;
                return true;
            }
        return error_set(err, "%s must be %s, got '%s'", o->name, join_words(o->choices, ", ", " or ", words, sizeof words),
                         value);
    default: CHECK(!"a flag or group has no value");
    }
    return false;
}

// ---- parsing ---------------------------------------------------------------------------------

// The state of one cli_parse call.
typedef struct {
    const CliCommand *cmd;
    void *args;
    CliEntry *entries;        // stb_ds, the table flattened
    const CliOption **given;  // stb_ds, every option seen
    size_t n_positional;      // positionals filled so far
} Parse;

// The option entry named name[0..len), or NULL.
static const CliEntry *find_option(const Parse *p, const char *name, size_t len) {
    for (size_t i = 0; i < arrlenu(p->entries); i++) {
        const char *n = p->entries[i].opt->name;
        if (!is_positional(p->entries[i].opt) && strlen(n) == len && strncmp(n, name, len) == 0)
            return &p->entries[i];
    }
    return NULL;
}

// One option argument argv[*i] ("--name", "--name=value"): store it, advancing *i past a
// separate value. Returns CLI_RUN, 0 (help printed) or EXIT_BAD_INPUT (reported).
static int parse_option(Parse *p, int argc, char **argv, int *i) {
    const char *a = argv[*i], *eq = strchr(a, '=');
    const char *cmd = p->cmd->name;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
        cli_print_help(p->cmd, p->args, stdout);
        return 0;
    }
    const CliEntry *e = find_option(p, a, eq ? (size_t)(eq - a) : strlen(a));
    Error err = {0};
    if (!e) {
        int took = p->cmd->extra ? p->cmd->extra(p->args, argc, argv, *i, &err) : 0;
        if (took < 0) return usage(cmd, "%s", err.msg);
        if (took == 0) return usage(cmd, "unknown option '%.*s'", eq ? (int)(eq - a) : (int)strlen(a), a);
        *i += took - 1;
        return CLI_RUN;
    }
    arrput(p->given, e->opt);
    const bool takes_value = e->opt->metavar || e->opt->type == CLI_T_CHOICE;
    if (!takes_value) {
        if (eq) return usage(cmd, "option %s takes no value, got '%s'", e->opt->name, a);
        if (e->opt->type == CLI_T_FLAG) *(bool *)e->field = true;
        else if (!e->opt->call(e->opt->name, NULL, e->field, &err)) return usage(cmd, "%s", err.msg);
        return CLI_RUN;
    }
    const char *value = eq ? eq + 1 : NULL;
    if (!value) {
        if (*i + 1 >= argc) return usage(cmd, "option %s needs a value", e->opt->name);
        value = argv[++*i];
    }
    if (!set_value(e, value, &err)) return usage(cmd, "%s", err.msg);
    return CLI_RUN;
}

// The next positional argument a: into the next positional entry (a list keeps taking).
static int parse_positional(Parse *p, const char *a) {
    size_t k = 0;
    for (size_t i = 0; i < arrlenu(p->entries); i++) {
        const CliEntry *e = &p->entries[i];
        if (!is_positional(e->opt)) continue;
        if (e->opt->type == CLI_T_LIST || k++ == p->n_positional) {
            arrput(p->given, e->opt);
            p->n_positional++;
            Error err = {0};
            return set_value(e, a, &err) ? CLI_RUN : usage(p->cmd->name, "%s", err.msg);
        }
    }
    return usage(p->cmd->name, "unexpected argument '%s'", a);
}

// Whether o was on the command line.
static bool was_given(const Parse *p, const CliOption *o) {
    for (size_t i = 0; i < arrlenu(p->given); i++)
        if (p->given[i] == o) return true;
    return false;
}

// After the last argument: every CLI_REQUIRED entry given, or the usage error naming it
// (a missing positional names all required positionals: "expected IN and OUT").
static int check_required(const Parse *p) {
    const char *names[16];
    size_t n = 0;
    bool missing = false;
    for (size_t i = 0; i < arrlenu(p->entries); i++) {
        const CliOption *o = p->entries[i].opt;
        if (!(o->flags & CLI_REQUIRED)) continue;
        if (is_positional(o)) {
            missing |= !was_given(p, o);
            if (n + 1 < sizeof names / sizeof names[0]) names[n++] = o->name;
        } else if (!was_given(p, o)) {
            return usage(p->cmd->name, "%s%s%s is required", o->name, o->metavar ? " " : "",
                         o->metavar ? o->metavar : "");
        }
    }
    names[n] = NULL;
    char words[512];
    return missing ? usage(p->cmd->name, "expected %s", join_words(names, ", ", " and ", words, sizeof words))
                   : CLI_RUN;
}

int cli_parse(const CliCommand *cmd, void *args, int argc, char **argv) {
    Parse p = {cmd, args, NULL, NULL, 0};
    flatten(cmd->options, args, &p.entries);
    int rc = CLI_RUN;
    bool options_done = false;
    for (int i = 1; i < argc && rc == CLI_RUN; i++) {
        const char *a = argv[i];
        if (!options_done && strcmp(a, "--") == 0) options_done = true;
        else if (!options_done && (strncmp(a, "--", 2) == 0 || strcmp(a, "-h") == 0))
            rc = parse_option(&p, argc, argv, &i);
        else rc = parse_positional(&p, a);
    }
    if (rc == CLI_RUN) rc = check_required(&p);
    arrfree(p.entries);
    arrfree(p.given);
    return rc;
}

// ---- --help ----------------------------------------------------------------------------------

#define HELP_WIDTH 92  // columns of --help, as the hand-wrapped texts before it
#define HELP_COL 26    // where an option's help starts

// Print word[0..n) (unbroken, spaces included) at column *col: on a new line indented by
// indent if it would reach HELP_WIDTH, else after one space (none at the line's start).
static void print_word(FILE *fp, const char *word, size_t n, size_t *col, size_t indent) {
    if (*col > indent && *col + 1 + n > HELP_WIDTH) {
        fprintf(fp, "\n%*s", (int)indent, "");
        *col = indent;
    } else if (*col > indent) {
        fputc(' ', fp);
        (*col)++;
    }
    fprintf(fp, "%.*s", (int)n, word);
    *col += n;
}

// Print the space-separated words of text from column *col, wrapped as print_word does.
static void print_wrapped(FILE *fp, const char *text, size_t *col, size_t indent) {
    for (;;) {
        while (*text == ' ') text++;
        const size_t n = strcspn(text, " ");
        if (n == 0) return;
        print_word(fp, text, n, col, indent);
        text += n;
    }
}

// "--name META", "--quant none|nf4|fp4", "--force", or a positional's name ("FILE..." for a
// list), into buf.
static const char *option_words(const CliOption *o, char *buf, size_t cap) {
    char choices[256];
    const char *meta = o->metavar;
    if (!meta && o->type == CLI_T_CHOICE) meta = join_words(o->choices, "|", "|", choices, sizeof choices);
    if (is_positional(o)) snprintf(buf, cap, "%s%s", o->name, o->type == CLI_T_LIST ? "..." : "");
    else snprintf(buf, cap, "%s%s%s", o->name, meta ? " " : "", meta ? meta : "");
    return buf;
}

// The usage line: options (required ones bare, the rest in brackets), the extras, then the
// positionals; continuation lines aligned after "usage: qlora CMD".
static void print_usage_line(FILE *fp, const CliCommand *cmd, const CliEntry *entries) {
    size_t col = (size_t)fprintf(fp, "usage: qlora %s", cmd->name);
    const size_t indent = col + 1;
    col = indent;  // the first word follows after one space, not on a new line
    fputc(' ', fp);
    for (int positional = 0; positional < 2; positional++) {
        if (positional && cmd->extra_usage) print_word(fp, cmd->extra_usage, strlen(cmd->extra_usage), &col, indent);
        for (size_t i = 0; i < arrlenu(entries); i++) {
            const CliOption *o = entries[i].opt;
            if (is_positional(o) != positional) continue;
            char words[300], tok[320];
            const bool bare = o->flags & CLI_REQUIRED;
            int n = snprintf(tok, sizeof tok, "%s%s%s", bare ? "" : "[", option_words(o, words, sizeof words),
                             bare ? "" : "]");
            print_word(fp, tok, (size_t)n, &col, indent);
        }
    }
    fputc('\n', fp);
}

// " (default X)" for an option whose field holds a value other than 0/NULL, into buf ("" if
// none or if the type cannot say).
static const char *default_words(const CliEntry *e, char *buf, size_t cap) {
    buf[0] = '\0';
    switch (e->opt->type) {
    case CLI_T_INT:
        if (*(const long *)e->field) snprintf(buf, cap, " (default %ld)", *(const long *)e->field);
        break;
    case CLI_T_FLOAT:
        if (*(const double *)e->field) snprintf(buf, cap, " (default %g)", *(const double *)e->field);
        break;
    case CLI_T_STR:
    case CLI_T_CHOICE:
        if (*(const char *const *)e->field) snprintf(buf, cap, " (default %s)", *(const char *const *)e->field);
        break;
    default: break;
    }
    return buf;
}

// One entry's line(s): its words in a column of HELP_COL, then the help and default, wrapped.
static void print_entry(FILE *fp, const CliEntry *e) {
    char words[300], dflt[300];
    size_t col = (size_t)fprintf(fp, "  %s", option_words(e->opt, words, sizeof words));
    if (col + 2 > HELP_COL) {
        fputc('\n', fp);
        col = 0;
    }
    fprintf(fp, "%*s", (int)(HELP_COL - col), "");
    col = HELP_COL;
    print_wrapped(fp, e->opt->help ? e->opt->help : "", &col, HELP_COL);
    print_wrapped(fp, default_words(e, dflt, sizeof dflt), &col, HELP_COL);
    fputc('\n', fp);
}

void cli_print_help(const CliCommand *cmd, const void *args, FILE *fp) {
    CliEntry *entries = NULL;
    flatten(cmd->options, (char *)args, &entries);  // read only: the defaults
    print_usage_line(fp, cmd, entries);
    if (cmd->about) fprintf(fp, "\n%s", cmd->about);
    bool any_positional = false;
    for (size_t i = 0; i < arrlenu(entries); i++) any_positional |= is_positional(entries[i].opt);
    if (any_positional) fprintf(fp, "\narguments:\n");
    for (size_t i = 0; i < arrlenu(entries); i++)
        if (is_positional(entries[i].opt)) print_entry(fp, &entries[i]);
    fprintf(fp, "\noptions:\n");
    for (size_t i = 0; i < arrlenu(entries); i++)
        if (!is_positional(entries[i].opt)) print_entry(fp, &entries[i]);
    fprintf(fp, "  %-*s%s\n", HELP_COL - 2, "-h, --help", "print this help and exit");
    arrfree(entries);
}
