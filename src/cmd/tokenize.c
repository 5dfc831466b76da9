// cmd/tokenize.c: `qlora tokenize`, the token ids of a text with a model's tokenizer.
#include <stdlib.h>
#include <string.h>

#include "cmd/model_args.h"
#include "ds.h"

typedef struct {
    const char *model_dir, *file, *text;
    bool no_special;
} TokenizeArgs;

static const CliOption TOKENIZE_OPTIONS[] = {
    {"TEXT", CLI_STR(TokenizeArgs, text), NULL, "the text (quote it); or give --file"},
    {"--model", CLI_STR(TokenizeArgs, model_dir), "DIR",
     "model folder with tokenizer.json, or vocab.json and merges.txt", .flags = CLI_REQUIRED},
    {"--file", CLI_STR(TokenizeArgs, file), "F", "read the text from file F"},
    {"--no-special", CLI_FLAG(TokenizeArgs, no_special), NULL,
     "without the special tokens the tokenizer adds (Llama 2's BOS): add_special_tokens=False"},
    CLI_END};

static const CliCommand TOKENIZE = {
    .name = "tokenize",
    .about =
    "Prints the token ids of TEXT (or of file F) with the model's tokenizer, space-separated, on\n"
    "one line: DIR/tokenizer.json (with tokenizer_config.json) when it exists, else DIR/vocab.json\n"
    "+ merges.txt. The ids are transformers' tokenizer(TEXT).input_ids: with the special tokens\n"
    "the tokenizer's post-processor adds (Llama 2's BOS; none for GPT-2, SmolLM2 or Qwen2) unless\n"
    "--no-special. Added tokens written in the text (<|endoftext|>, <|im_start|>) are their ids.\n",
    .options = TOKENIZE_OPTIONS};

int cmd_tokenize(int argc, char **argv) {
    TokenizeArgs a = {0};
    int rc = cli_parse(&TOKENIZE, &a, argc, argv);
    if (rc != CLI_RUN) return rc;
    if (!a.file == !a.text) cli_usage_error("tokenize", "give either --file F or TEXT");
    Tokenizer *t = cmd_load_tokenizer(a.model_dir, NULL);
    size_t len;
    char *buf = a.file ? cmd_read_text(a.file, &len) : NULL;
    int *ids = NULL;
    Error err = {0};
    if (!tok_encode_text(t, a.file ? a.file : "TEXT", a.file ? buf : a.text, a.file ? len : strlen(a.text),
                         !a.no_special, &ids, &err))
        die_error(&err);
    for (size_t i = 0; i < arrlenu(ids); i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    arrfree(ids);
    free(buf);
    tok_free(t);
    return 0;
}
