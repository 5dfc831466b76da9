// cmd/cli.h: the subcommands main.c dispatches to, small argv helpers they share, and the
// print-and-exit helpers that only commands (src/cmd/, src/main.c) may call.
// Each command returns an exit status (0 ok); bad input and usage errors go through
// Error / die with status 2, run-time failures with status 1.
#ifndef QLORA_CLI_H
#define QLORA_CLI_H

#include <stdbool.h>

#include "util.h"

int cmd_quantize(int argc, char **argv);
int cmd_dequantize(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_explain(int argc, char **argv);
int cmd_memory(int argc, char **argv);
int cmd_bench(int argc, char **argv);

// If argv[1..] contains --help or -h, print help to stdout and return true (the command
// then returns 0).
bool cli_help(int argc, char **argv, const char *help);
// For option argv[*i] that takes a value: return argv[*i + 1] and advance *i, or die with
// a usage error naming the option.
const char *cli_value(int argc, char **argv, int *i);
// Parse an integer option value in [lo, hi] or die with a usage error naming the option.
long cli_long(const char *opt, const char *value, long lo, long hi);
// Print "qlora: error: MSG" to stderr and exit(status). Commands only: library code
// returns an Error instead, which a command reports with die_error.
void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
// die with err's message and status (EXIT_RUNTIME if unset).
void die_error(const Error *err) __attribute__((noreturn));

// Die with a usage error: "qlora CMD: MSG (see 'qlora CMD --help')".
void cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

#endif
