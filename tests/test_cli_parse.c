// test_cli_parse.c: the shared option parser of cmd/cli.h on a made-up command that uses
// every option type: values (separate and "--x=v"), flags, ranges, choices, lists, call
// parsers, a group at an offset, positionals, the extra-options hook, "--", and the exact
// one-line usage errors (stderr captured); and --help written from the table.
#include <unistd.h>

#include "cmd/cli.h"
#include "ds.h"
#include "test.h"

typedef struct {
    const char *dir;
    long n;
} Inner;

typedef struct {
    Inner in;  // at a non-zero offset: the group's fields are relative to it
    const char *name, *mode, *src, *dst;
    long count;
    double ratio;
    bool force;
    const char **tags;
    int parity;  // set by the call parser
    const char *extra_key, *extra_value;
} Args;

// CliCallFn: "even" or "odd" into an int.
static bool parse_parity(const char *opt, const char *value, void *field, Error *err) {
    if (strcmp(value, "even") && strcmp(value, "odd")) return error_set(err, "%s must be even or odd, got '%s'", opt, value);
    *(int *)field = value[0] == 'e' ? 2 : 1;
    return true;
}

// The extra hook: "--key-NAME VALUE" takes two arguments; "--bad-..." is an error.
static int extra(void *args, int argc, char **argv, int i, Error *err) {
    Args *a = args;
    if (strncmp(argv[i], "--bad-", 6) == 0) return error_set(err, "%s: refused by the hook", argv[i]), -1;
    if (strncmp(argv[i], "--key-", 6) != 0 || i + 1 >= argc) return 0;
    a->extra_key = argv[i] + 6;
    a->extra_value = argv[i + 1];
    return 2;
}

static const CliOption INNER[] = {
    {"--dir", CLI_STR(Inner, dir), "DIR", "a folder", .flags = CLI_REQUIRED},
    {"--n", CLI_INT(Inner, n), "N", "a small number", .lo = -3, .hi = 3},
    CLI_END};

static const char *const MODES[] = {"fast", "slow", "exact", NULL};

static const CliOption OPTIONS[] = {
    CLI_GROUP(Args, in, INNER),
    {"SRC", CLI_STR(Args, src), NULL, "where from", .flags = CLI_REQUIRED},
    {"DST", CLI_STR(Args, dst), NULL, "where to", .flags = CLI_REQUIRED},
    {"--name", CLI_STR(Args, name), "NAME", "a name"},
    {"--mode", CLI_CHOICE(Args, mode), NULL, "how", .choices = MODES},
    {"--count", CLI_INT(Args, count), "N", "how many", .lo = 1, .hi = 100},
    {"--ratio", CLI_FLOAT(Args, ratio), "R", "a share", .lo = 0, .hi = 1, .flags = CLI_LO_OPEN},
    {"--force", CLI_FLAG(Args, force), NULL, "overwrite"},
    {"--tag", CLI_LIST(Args, tags), "T", "a tag; give it again for more"},
    {"--parity", CLI_CALL(Args, parity), "P", "even or odd", .call = parse_parity},
    CLI_END};

static const CliCommand CMD = {.name = "demo",
                               .about = "A made-up command.\n",
                               .options = OPTIONS,
                               .extra = extra,
                               .extra_usage = "[--key-NAME VALUE ...]"};

static char errbuf[4096];

// cli_parse on the words of line (split at spaces) with stderr captured into errbuf. The
// fields of *a point into a buffer that the next call reuses.
static int parse(Args *a, const char *line) {
    static char copy[512];
    char *argv[32];
    int argc = 0;
    snprintf(copy, sizeof copy, "demo %s", line);
    for (char *t = strtok(copy, " "); t && argc < 31; t = strtok(NULL, " ")) argv[argc++] = t;
    argv[argc] = NULL;
    *a = (Args){.mode = "fast", .count = 7, .ratio = 0.5};
    fflush(stderr);
    FILE *cap = tmpfile();
    int saved = dup(2);
    dup2(fileno(cap), 2);
    int rc = cli_parse(&CMD, a, argc, argv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(cap);
    size_t n = fread(errbuf, 1, sizeof errbuf - 1, cap);
    errbuf[n] = '\0';
    fclose(cap);
    return rc;
}

// The one-line usage error of parse(a, line): status 2, stderr exactly the expected line.
static void expect_usage(const char *line, const char *msg) {
    Args a;
    int rc = parse(&a, line);
    char want[600];
    snprintf(want, sizeof want, "qlora: error: demo: %s (see 'qlora demo --help')\n", msg);
    EXPECT(rc == EXIT_BAD_INPUT && strcmp(errbuf, want) == 0, "'%s' -> status %d, stderr '%.600s' (want '%.600s')", line, rc,
           errbuf, want);
    arrfree(a.tags);
}

static void test_values(void) {
    Args a;
    int rc = parse(&a, "--dir d s t");
    EXPECT(rc == CLI_RUN && !errbuf[0] && strcmp(a.in.dir, "d") == 0 && strcmp(a.src, "s") == 0 &&
           strcmp(a.dst, "t") == 0, "required group option and two positionals");
    EXPECT(a.count == 7 && a.ratio == 0.5 && strcmp(a.mode, "fast") == 0 && !a.force && !a.name && !a.tags,
           "options not given keep their defaults");
    rc = parse(&a, "s --count=12 --dir=d --n -3 --mode exact --ratio 1 --force --name=a=b t --parity odd");
    EXPECT(rc == CLI_RUN && a.count == 12 && a.in.n == -3 && strcmp(a.mode, "exact") == 0 && a.ratio == 1 && a.force &&
           strcmp(a.name, "a=b") == 0 && a.parity == 1 && strcmp(a.dst, "t") == 0,
           "--x=v and --x v, negative values, choices, flags, a call parser, options between positionals");
    rc = parse(&a, "--dir d --tag x --tag y s t --tag x");
    EXPECT(rc == CLI_RUN && arrlenu(a.tags) == 3 && strcmp(a.tags[0], "x") == 0 && strcmp(a.tags[1], "y") == 0,
           "a list collects every occurrence (%zu)", arrlenu(a.tags));
    arrfree(a.tags);
    rc = parse(&a, "--dir d --count 3 --count 4 s t");
    EXPECT(rc == CLI_RUN && a.count == 4, "an option given twice keeps the last value");
    rc = parse(&a, "--dir d -- --force -");
    EXPECT(rc == CLI_RUN && !a.force && strcmp(a.src, "--force") == 0 && strcmp(a.dst, "-") == 0,
           "after --, and \"-\" itself, arguments are positionals");
    rc = parse(&a, "--dir d -5 -x");
    EXPECT(rc == CLI_RUN && strcmp(a.src, "-5") == 0 && strcmp(a.dst, "-x") == 0,
           "an argument with one leading '-' (other than -h) is a positional");
    rc = parse(&a, "--dir d s --key-lr 0.5 t");
    EXPECT(rc == CLI_RUN && strcmp(a.extra_key, "lr") == 0 && strcmp(a.extra_value, "0.5") == 0 &&
           strcmp(a.dst, "t") == 0, "the extra hook takes the arguments it says");
    rc = parse(&a, "--bogus --help");
    EXPECT(rc == EXIT_BAD_INPUT, "arguments are read in order: an error before --help is reported");
}

static void test_errors(void) {
    expect_usage("--dir d s t --bogus", "unknown option '--bogus'");
    expect_usage("--dir d s t --bogus=1", "unknown option '--bogus'");
    expect_usage("--dir d s t u", "unexpected argument 'u'");
    expect_usage("s t", "--dir DIR is required");
    expect_usage("--dir d s", "expected SRC and DST");
    expect_usage("--dir d s t --count", "option --count needs a value");
    expect_usage("--dir d s t --force=yes", "option --force takes no value, got '--force=yes'");
    expect_usage("--dir d s t --count 0", "--count must be an integer in [1, 100], got '0'");
    expect_usage("--dir d s t --count 5x", "--count must be an integer in [1, 100], got '5x'");
    expect_usage("--dir d s t --n 4", "--n must be an integer in [-3, 3], got '4'");
    expect_usage("--dir d s t --ratio 0", "--ratio must be a number in (0, 1], got '0'");
    expect_usage("--dir d s t --ratio nan", "--ratio must be a number in (0, 1], got 'nan'");
    expect_usage("--dir d s t --mode quick", "--mode must be fast, slow or exact, got 'quick'");
    expect_usage("--dir d s t --parity 3", "--parity must be even or odd, got '3'");
    expect_usage("--dir d s t --bad-x", "--bad-x: refused by the hook");
}

static void test_help(void) {
    Args a;
    int saved = dup(1);
    FILE *cap = tmpfile();
    fflush(stdout);
    dup2(fileno(cap), 1);
    int rc = parse(&a, "--count 9 -h --bogus");
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    rewind(cap);
    char out[8192];
    size_t n = fread(out, 1, sizeof out - 1, cap);
    out[n] = '\0';
    fclose(cap);
    EXPECT(rc == 0 && !errbuf[0], "-h prints the help and returns 0, before reading further arguments");
    const char *head = "usage: qlora demo --dir DIR [--n N] [--name NAME] [--mode fast|slow|exact] [--count N]\n"
                       "                  [--ratio R] [--force] [--tag T] [--parity P] [--key-NAME VALUE ...] SRC\n"
                       "                  DST\n\nA made-up command.\n";
    EXPECT(strncmp(out, head, strlen(head)) == 0,
           "usage line: required bare, optional in brackets, wrapped and aligned; then about:\n%.1500s", out);
    EXPECT(strstr(out, "\narguments:\n  SRC                     where from\n") != NULL, "positionals listed");
    EXPECT(strstr(out, "  --count N               how many (default 9)\n") != NULL,
           "an option's line shows the value its field holds (the default) as the default");
    EXPECT(strstr(out, "  --mode fast|slow|exact  how (default fast)\n") && strstr(out, "  -h, --help "),
           "choices as the metavar; -h listed");
    size_t longest = 0;
    for (const char *p = out; *p;) {
        size_t len = strcspn(p, "\n");
        if (len > longest) longest = len;
        p += len + (p[len] == '\n');
    }
    EXPECT(longest <= 92, "no help line is longer than 92 columns (%zu)", longest);
}

int main(void) {
    test_values();
    test_errors();
    test_help();
    return test_summary("test_cli_parse");
}
