// cmd/tokenize.c: `qlora tokenize`, the token ids of a text with a model's tokenizer.
#include <stdlib.h>
#include <string.h>

#include "cmd/model_args.h"
#include "ds.h"

typedef struct {
    const char *model_dir, *file, *text;
} TokenizeArgs;

static const CliOption TOKENIZE_OPTIONS[] = {
    {"TEXT", CLI_STR(TokenizeArgs, text), NULL, "the text (quote it); or give --file"},
    {"--model", CLI_STR(TokenizeArgs, model_dir), "DIR", "model folder with vocab.json and merges.txt",
     .flags = CLI_REQUIRED},
    {"--file", CLI_STR(TokenizeArgs, file), "F", "read the text from file F"},
    CLI_END};

static const CliCommand TOKENIZE = {
    .name = "tokenize",
    .about =
    "Prints the token ids of TEXT (or of file F) with the model's vocab.json + merges.txt,\n"
    "space-separated, on one line. <|endoftext|> is the special end-of-text token.\n",
    .options = TOKENIZE_OPTIONS};

int cmd_tokenize(int argc, char **argv) {
    TokenizeArgs a = {0};
    int rc = cli_parse(&TOKENIZE, &a, argc, argv);
    if (rc != CLI_RUN) return rc;
    if (!a.file == !a.text) cli_usage_error("tokenize", "give either --file F or TEXT");
    Tokenizer *t = cmd_load_tokenizer(a.model_dir, 0);
    size_t len;
    char *buf = a.file ? cmd_read_text(a.file, &len) : NULL;
    int *ids = NULL;
    tok_encode(t, a.file ? buf : a.text, a.file ? len : strlen(a.text), &ids);
    for (size_t i = 0; i < arrlenu(ids); i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    arrfree(ids);
    free(buf);
    tok_free(t);
    return 0;
}
