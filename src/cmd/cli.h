// cmd/cli.h: the commands main.c dispatches to, the one option parser they share, and the
// print-and-exit helpers that only commands (src/cmd/, src/main.c) may call.
//
// Each command declares its options once, in a table, and hands argv to cli_parse, which
// also writes `--help` from that table (as config.c's one key table drives the job file).
// Every option writes one field of the command's own argument struct, found by offset; the
// CLI_<TYPE>(Struct, field) macros below check the field's type at compile time:
//
//   typedef struct { const char *model; long seq; bool force; } EvalArgs;
//   static const CliOption EVAL_OPTIONS[] = {
//       {"--model", CLI_STR(EvalArgs, model), "DIR", "model folder", .flags = CLI_REQUIRED},
//       {"--seq", CLI_INT(EvalArgs, seq), "T", "tokens per window", .lo = 2, .hi = 1 << 20},
//       {"--force", CLI_FLAG(EvalArgs, force), NULL, "overwrite"},
//       CLI_END};
//   static const CliCommand EVAL = {.name = "eval", .about = "Scores a text.\n", .options = EVAL_OPTIONS};
//   EvalArgs a = {.seq = 512};                       // defaults, shown by --help
//   int rc = cli_parse(&EVAL, &a, argc, argv);
//   if (rc != CLI_RUN) return rc;                    // --help printed (0) or a usage error (2)
//
// Contract of cli_parse(cmd, args, argc, argv):
//   - argv[0] is the command's name; argv[1..] are read left to right, once.
//   - "--help" or "-h" where an option may stand prints the help to stdout and returns 0.
//   - Options are long ("--name"); there are no short ones besides -h.
//   - An option with a metavar, or a choice, takes a value: "--name VALUE" (VALUE is the
//     next argument, whatever it starts with) or "--name=VALUE". A flag takes none.
//   - Every other argument that does not start with "--" ("-5 degrees", "-" included), and
//     every argument after "--", fills the positional entries (names without a leading
//     '-') in table order.
//   - An option given twice keeps the last value, except CLI_LIST, which collects them all.
//   - Fields of options not given keep the value they had: set defaults before the call.
//   - A usage error prints one line on stderr, "qlora: error: CMD: MESSAGE (see 'qlora CMD
//     --help')", and returns EXIT_BAD_INPUT (2). MESSAGE names the option and what was
//     expected: "unknown option '--x'", "option --seq needs a value", "option --force takes
//     no value", "--seq must be an integer in [2, 1048576], got 'x'", "--top-p must be a
//     number in (0, 1], got '0'", "--type must be nf4 or fp4, got 'int3'", "--model DIR is
//     required", "expected IN and OUT" (missing positionals), "unexpected argument 'x'", or
//     a CLI_CALL parser's own message.
//   - Otherwise it returns CLI_RUN and the command runs. cli_parse never exits; args may
//     point into argv. A CLI_LIST field is an stb_ds array the command frees (arrfree).
#ifndef QLORA_CMD_CLI_H
#define QLORA_CMD_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

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
int cmd_export_gguf(int argc, char **argv);

typedef enum {
    CLI_T_FLAG,    // bool; no value; set to true
    CLI_T_STR,     // const char *; the value as given
    CLI_T_INT,     // long; an integer in [lo, hi]
    CLI_T_FLOAT,   // double; a number in [lo, hi] ((lo, hi] with CLI_LO_OPEN; hi may be INFINITY)
    CLI_T_CHOICE,  // const char *; one of choices (which --help shows when metavar is NULL)
    CLI_T_LIST,    // const char ** (stb_ds array); every occurrence appended; a positional
                   // list takes all remaining positionals
    CLI_T_CALL,    // any field; call(opt, value, field, err) parses it (value NULL if no metavar)
    CLI_T_GROUP,   // no option itself: the entries of group, their fields relative to offset
} CliType;

enum {
    CLI_REQUIRED = 1,  // an error when not given (options: "--x V is required"; positionals:
                       // "expected A and B", naming every required positional)
    CLI_LO_OPEN = 2,   // CLI_T_FLOAT: lo itself is out of range
};

// A CLI_T_CALL parser: store what value means into field, or return false with err naming
// opt ("--quant must be ..."); the message is reported as the usage error.
typedef bool (*CliCallFn)(const char *opt, const char *value, void *field, Error *err);

typedef struct CliOption {
    const char *name;     // "--model"; a positional's name has no '-' ("IN.safetensors")
    CliType type;
    size_t offset;        // of the field in the command's argument struct
    const char *metavar;  // "DIR", "N"; NULL for flags (and for choices: shown as a|b|c)
    const char *help;     // one sentence for --help (wrapped there)
    double lo, hi;        // CLI_T_INT / CLI_T_FLOAT range, inclusive unless CLI_LO_OPEN
    const char *const *choices;  // CLI_T_CHOICE: NULL-terminated
    CliCallFn call;              // CLI_T_CALL
    const struct CliOption *group;  // CLI_T_GROUP: a table ended by CLI_END
    unsigned flags;       // CLI_REQUIRED, CLI_LO_OPEN
} CliOption;

// The field of struct S named f, checked to have type T (a compile error otherwise).
#define CLI_FIELD(S, f, T) _Generic(((S *)0)->f, T: offsetof(S, f))
#define CLI_FLAG(S, f) .type = CLI_T_FLAG, .offset = CLI_FIELD(S, f, bool)
#define CLI_STR(S, f) .type = CLI_T_STR, .offset = CLI_FIELD(S, f, const char *)
#define CLI_INT(S, f) .type = CLI_T_INT, .offset = CLI_FIELD(S, f, long)
#define CLI_FLOAT(S, f) .type = CLI_T_FLOAT, .offset = CLI_FIELD(S, f, double)
#define CLI_CHOICE(S, f) .type = CLI_T_CHOICE, .offset = CLI_FIELD(S, f, const char *)
#define CLI_LIST(S, f) .type = CLI_T_LIST, .offset = CLI_FIELD(S, f, const char **)
#define CLI_CALL(S, f) .type = CLI_T_CALL, .offset = offsetof(S, f)
// The entries of table G, for the struct member S.f that they describe.
#define CLI_GROUP(S, f, G) {.type = CLI_T_GROUP, .offset = offsetof(S, f), .group = (G)}
#define CLI_END {.name = NULL, .type = CLI_T_FLAG}

typedef struct {
    const char *name;            // "eval": in messages and the usage line
    const char *about;           // --help's text after the usage line and before the options
    const CliOption *options;    // ended by CLI_END
    // Options no entry names ("--lora_r 16" for any job key): called with argv[i] before
    // that is an unknown option; returns how many arguments it took (>= 1), 0 to leave it
    // unknown, or -1 with err set (reported as the usage error).
    int (*extra)(void *args, int argc, char **argv, int i, Error *err);
    const char *extra_usage;     // how the usage line shows them, e.g. "[--KEY VALUE ...]"
} CliCommand;

#define CLI_RUN (-1)

// Parse argv into args as cmd's table says (contract above). Returns CLI_RUN, 0 (help
// printed) or EXIT_BAD_INPUT (usage error printed).
int cli_parse(const CliCommand *cmd, void *args, int argc, char **argv);
// Write cmd's help (usage line, about, one line per option with its default from args).
void cli_print_help(const CliCommand *cmd, const void *args, FILE *fp);

// Print "qlora: error: CMD: MSG (see 'qlora CMD --help')" and exit(EXIT_BAD_INPUT): a
// usage error the table cannot express (two options that exclude each other).
void cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

// Print "qlora: error: MSG" to stderr and exit(status). Commands only: library code
// returns an Error instead, which a command reports with die_error.
void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
// die with err's message and status (EXIT_RUNTIME if unset).
void die_error(const Error *err) __attribute__((noreturn));

#endif
