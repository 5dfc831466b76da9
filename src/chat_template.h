// chat_template.h: chat templates (issue 16): a model's own Jinja template, as Hugging Face
// transformers renders it with `apply_chat_template`, and qlora's named templates (chatml,
// llama3, mistral, zephyr, alpaca), turned into the text a model is trained on.
//
// A template is parsed once by a small interpreter of the Jinja subset that chat templates use
// (docs/chat.md lists it) in the environment transformers builds: jinja2's sandbox with
// trim_blocks and lstrip_blocks, the loopcontrols extension ({% break %}, {% continue %}),
// transformers' {% generation %} block (rendered as its body), the globals raise_exception,
// strftime_now, namespace, range and dict, and a json.dumps-style tojson filter. Rendering
// gives the bytes jinja2 gives for the same variables. What the subset lacks (macros, most
// filters, Python methods beyond a few) is an error naming the construct and the template's
// line (when the template is parsed, or, inside an if, when that part runs, as jinja2 does for
// filters and tests it lacks): never a different text.
//
// Every input is untrusted: templates over 4 MiB, nesting deeper than 128, renders that
// allocate over 256 MiB, print over 64 MiB or take over 5 million steps (a node, or 64 bytes
// scanned) are refused with
// an error; nothing here exits or aborts on any input.
// Not here: tokenizing the text, labels, data set formats (the data-set side builds on this).
#ifndef QLORA_CHAT_TEMPLATE_H
#define QLORA_CHAT_TEMPLATE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "util.h"

typedef struct ChatTemplate ChatTemplate;

// One message of a conversation: both strings UTF-8 and NUL-terminated (neither NULL).
typedef struct {
    const char *role;
    const char *content;
} ChatMessage;

// The variables transformers gives a template. A NULL token is left undefined, as
// transformers leaves a token the tokenizer does not set (Qwen2.5 has no bos_token): the
// template then prints "" for it. tools and documents are None, as without tools=...
typedef struct {
    const ChatMessage *messages;
    size_t n_messages;
    const char *bos_token;
    const char *eos_token;
    bool add_generation_prompt;
} ChatRenderArgs;

// Parse text[0..len) (UTF-8; \r\n and \r read as \n, one final newline dropped, as jinja2
// does). name labels errors ("DIR/tokenizer_config.json", "chatml"); it is copied.
// NULL with err filled (status 2) for a syntax error, an unsupported construct, a limit.
ChatTemplate *chat_template_parse(const char *text, size_t len, const char *name, Error *err);
void chat_template_free(ChatTemplate *t); // NULL is fine
const char *chat_template_name(const ChatTemplate *t);

// Render the conversation into *out (malloc'ed, NUL-terminated; *out_len bytes without the
// NUL, which the text itself never contains). False with err ("NAME:LINE: what", status 2)
// and *out NULL if the template fails: raise_exception(msg) gives "NAME:LINE:
// raise_exception: msg" (msg on one line), as do undefined values used in ways jinja2 refuses,
// type errors and the limits above. Each call is independent; a template may be rendered
// from several threads at once.
bool chat_template_render(const ChatTemplate *t, const ChatRenderArgs *args, char **out, size_t *out_len, Error *err);

// The same with every variable given as one JSON object: "messages" (an array, required), and
// any others ("bos_token", "add_generation_prompt", "tools", "date_string", ...). Absent
// "tools" and "documents" are None, an absent "add_generation_prompt" is false, like
// transformers. JSON numbers with no fraction read as Python ints (cJSON keeps no text, so
// 2.0 in the JSON reads as 2: qlora's own values never take that form).
bool chat_template_render_json(const ChatTemplate *t, const cJSON *vars, char **out, size_t *out_len, Error *err);

// ---- named templates ----
// The Jinja text of qlora's named template `name` (chatml, llama3, mistral, zephyr, alpaca),
// or NULL. CHAT_TEMPLATE_NAMES lists them, NULL-terminated; chat_template_names_list is the
// same as one "chatml, llama3, ..." string for messages.
extern const char *const CHAT_TEMPLATE_NAMES[];
const char *chat_template_builtin(const char *name);
const char *chat_template_names_list(void);

// ---- a model folder's template and tokens ----
typedef struct {
    char *text; // the template's Jinja text (NULL if the folder has none)
    size_t len;
    char *origin;    // where it came from: "DIR/chat_template.jinja" or "DIR/tokenizer_config.json"
    char *bos_token; // tokenizer_config.json's (or special_tokens_map.json's) token, NULL if unset
    char *eos_token;
} ChatTemplateSource;

// Read folder dir as transformers (4.47 and later) does: chat_template.jinja if the folder has
// one, else tokenizer_config.json's "chat_template" (a string, or a list of {"name",
// "template"} of which "default" is taken). bos_token / eos_token: a string or an AddedToken
// object {"content": ...} in tokenizer_config.json; special_tokens_map.json fills a token
// tokenizer_config.json leaves out, and a token the two files set differently is refused (which
// one transformers uses has changed between versions). A folder without either file gives an
// empty source. False (status 2) naming the file and field for anything malformed.
bool chat_template_read_dir(const char *dir, ChatTemplateSource *src, Error *err);
void chat_template_source_free(ChatTemplateSource *src);

// The template a job names: "tokenizer_default" (the folder's own, which must exist and parse;
// an error names the file and the named templates to use instead) or a named one. src receives
// the folder's tokens either way (dir may be NULL for a named template: no tokens).
ChatTemplate *chat_template_load(const char *which, const char *dir, ChatTemplateSource *src, Error *err);

#endif
