// cmd/cli.c: see cmd/cli.h.
#include "cmd/cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

bool cli_help(int argc, char **argv, const char *help) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(help, stdout);
            return true;
        }
    return false;
}

const char *cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) cli_usage_error(argv[0], "option %s needs a value", argv[*i]);
    *i += 1;
    return argv[*i];
}

long cli_long(const char *opt, const char *value, long lo, long hi) {
    long v;
    if (!parse_long(value, lo, hi, &v))
        die(EXIT_BAD_INPUT, "option %s: expected an integer in [%ld, %ld], got '%s'", opt, lo, hi,
            value);
    return v;
}

void cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "qlora: error: %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'qlora %s --help')\n", cmd);
    exit(EXIT_BAD_INPUT);
}
