// chat_data.h: training examples from conversations and instructions (issue 16), the data side
// of chat fine-tuning (docs/training.md, "Conversations"). A jsonl line is
//   dataset_format chat_template: {"messages": [{"role", "content"}, ...]} (roles system, user,
//       assistant, tool) or ShareGPT's {"conversations": [{"from", "value"}, ...]} (human ->
//       user, gpt -> assistant, system -> system);
//   dataset_format alpaca: {"instruction", "input" (optional), "output"}, put into axolotl's
//       Alpaca prompt (chat_alpaca_prompt) and trained like a prompt/completion pair (data.c).
// A conversation is rendered once with the chat template (a ChatRenderer: chat_template.h's
// renderer, or any other in tests) and the whole text tokenized once, without the tokenizer's
// own special tokens (the template writes BOS), which is what transformers'
// apply_chat_template(messages, tokenize=True) gives. Labels are the tokens whose text overlaps
// the content of a trained message (roles_to_train, or every message with train_on_inputs), plus,
// per train_on_eos, the tokens of the end-of-turn text that follows a turn's content
// (ChatRenderer.eot: "<|im_end|>", "<|eot_id|>", the EOS token's text): turn = after each trained
// turn, all = after every turn, last = after the last trained turn only, none = never.
// Where a content lands in the rendered text: the template renders the same conversation with
// each content replaced by a marker; the text between markers is the template's own, and the
// real text must be that text with each content (as is, or stripped of surrounding whitespace
// as the trim filter does) in the marker's place, else the example is refused (a template that
// rewrites contents otherwise cannot be labelled exactly). Token spans come from
// tok_encode_spans, so a token that holds the end of the template's text and the start of a
// content (Llama 2's "▁Hello" after "[/INST]") counts as content.
// Not here: parsing or running templates (chat_template.h), truncation, packing and batching
// (data.c).
#ifndef QLORA_CHAT_DATA_H
#define QLORA_CHAT_DATA_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "chat_template.h"
#include "tokenizer.h"
#include "util.h"

// Renders a conversation: roles[i] and contents[i] for i < n (UTF-8, NUL-terminated), with the
// generation prompt if asked, into *out (malloc'ed, NUL-terminated, *out_len bytes); false with
// err (status 2) if the template fails on it. eot is the end-of-turn text (NULL: none).
typedef struct {
    bool (*render)(const void *ctx, const char *const *roles, const char *const *contents, size_t n,
                   bool add_generation_prompt, char **out, size_t *out_len, Error *err);
    const void *ctx;
    const char *eot;
} ChatRenderer;

typedef enum { CHAT_EOS_TURN, CHAT_EOS_ALL, CHAT_EOS_NONE, CHAT_EOS_LAST } ChatEos;  // turn | all | none | last

typedef struct {
    const ChatRenderer *renderer;
    const char *const *roles_to_train;  // NULL with n_roles 0: nothing but train_on_inputs / EOT
    size_t n_roles;
    bool train_on_inputs;  // every message's content is trained
    ChatEos train_on_eos;
} ChatOptions;

// The roles a message may have, and ShareGPT's "from" values with the role each stands for.
extern const char *const CHAT_ROLES[];  // NULL-terminated: system, user, assistant, tool
bool chat_role_known(const char *role);

// The example of one conversation line js (where = "FILE:LINE" for messages): the rendered
// text's ids and labels (label = id where trained, else -1) appended to the stb_ds arrays *ids and
// *labels. False (status 2) with "WHERE: ..." for a line that is not a conversation, a message
// without a string role/content (from/value), an unknown role, an empty conversation, a template
// that fails on it or whose rendering cannot be aligned with the contents, and text the
// tokenizer refuses.
bool chat_example(const cJSON *js, const char *where, Tokenizer *tok, const ChatOptions *o, int **ids, int **labels,
                  Error *err);

// The same for a conversation given as arrays (roles known), rendered by o->renderer: also the
// rendered text (*text, malloc'ed; NULL to skip).
bool chat_example_messages(const char *const *roles, const char *const *contents, size_t n, const char *where,
                           Tokenizer *tok, const ChatOptions *o, int **ids, int **labels, char **text, Error *err);

// The roles and contents of conversation line js (pointers into js, valid while it lives), into
// stb_ds arrays *roles and *contents (ShareGPT's names mapped). False with "WHERE: ..." as above.
bool chat_parse(const cJSON *js, const char *where, const char ***roles, const char ***contents, Error *err);

// A chat template ready to render for a model folder (what train, its --preview and generate
// --chat use): the parsed template, the bos / eos strings it is given, the end-of-turn text, and
// a ChatRenderer over them. The renderer points into the struct: do not copy it.
typedef struct {
    ChatTemplate *tmpl;
    char *bos, *eos;        // owned; NULL: left undefined, as transformers leaves an unset token
    char *eot;              // the end-of-turn text (owned; NULL: none)
    char *origin;           // where the template came from, for messages ("DIR/tokenizer_config.json", "chatml"; owned)
    ChatRenderer renderer;  // ctx = this struct
} ChatSetup;

// Load template `which` (tokenizer_default: the folder's own; or chatml, llama3, mistral, zephyr,
// alpaca) for model folder dir, whose tokenizer is tok. bos / eos: the folder's
// tokenizer_config.json (or special_tokens_map.json) tokens, as transformers gives them to the
// template; a folder with neither file (GPT-2's vocab.json + merges.txt) gets the tokenizer's
// (GPT2Tokenizer's <|endoftext|>). The end of a turn: <|im_end|> for chatml, <|eot_id|> for
// llama3, the eos string for the others and the folder's own. False (status 2) naming the file
// when the template is missing, malformed or unsupported.
bool chat_setup(ChatSetup *s, const char *which, const char *dir, const Tokenizer *tok, Error *err);
void chat_setup_free(ChatSetup *s);

// The ids of the conversation rendered with its generation prompt, appended to *ids: what
// transformers' apply_chat_template(messages, add_generation_prompt=True, tokenize=True) gives
// (no special tokens added: the template writes BOS). where names the conversation in messages.
bool chat_prompt_ids(const ChatSetup *s, Tokenizer *tok, const char *const *roles, const char *const *contents,
                     size_t n, const char *where, int **ids, Error *err);

// Generation that stops at a text (an end of turn that is no single token): of the reply
// text[0..n), printed[0..printed) already out, how much may be printed now. Up to the first stop
// (then *stopped is set); otherwise all of it at the end, else all but a tail that may begin a
// stop. stop NULL or "": all of it.
size_t chat_reply_final(const char *text, size_t n, size_t printed, const char *stop, bool end, bool *stopped);

// axolotl's Alpaca prompt (prompters.py, AlpacaPrompter, instruct style) for an
// {"instruction", "input", "output"} line: the prompt text into the stb_ds *prompt (no NUL) and
// the output string into *output (a pointer into js). An empty or absent input gives the
// no-input prompt. False with "WHERE: ..." if instruction or output is not a string, or input
// is neither a string nor absent / null.
bool chat_alpaca_prompt(const cJSON *js, const char *where, char **prompt, const char **output, Error *err);

#endif
