// chat_template_load.c: qlora's named chat templates and reading a model folder's own template
// and special tokens (see chat_template.h; docs/chat.md describes the formats).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_template.h"
#include "json.h"
#include "path.h"

// ---- named templates -----------------------------------------------------------------------
// Each is Jinja run by the same interpreter as a model's own template, so tests/ref/chat
// checks them against jinja2 too (tests/ref/chat/named/ holds copies the test compares).
// bos_token appears where the family's own templates put it (llama3, mistral); a tokenizer must
// then add no special tokens of its own, as transformers' apply_chat_template does.

// ChatML (SmolLM2, Qwen2.5): <|im_start|>role\ncontent<|im_end|>\n per message.
static const char CHATML[] =
    "{#- qlora's chatml: <|im_start|>ROLE\\nCONTENT<|im_end|>\\n for every message -#}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n";

// Llama 3 Instruct: bos, then <|start_header_id|>role<|end_header_id|>\n\ncontent (trimmed)<|eot_id|>.
static const char LLAMA3[] =
    "{#- qlora's llama3: BOS, then <|start_header_id|>ROLE<|end_header_id|>\\n\\nCONTENT<|eot_id|> per message,\n"
    "    the content trimmed of surrounding whitespace as Llama 3's own template does -#}\n"
    "{%- for message in messages %}\n"
    "    {%- if loop.first %}\n"
    "        {{- bos_token }}\n"
    "    {%- endif %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}\n"
    "    {{- message['content'] | trim }}\n"
    "    {{- '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n";

// Mistral Instruct (v0.1): bos [INST] user [/INST]assistant</s>[INST] ...; roles alternate.
static const char MISTRAL[] =
    "{#- qlora's mistral: BOS[INST] USER [/INST]ASSISTANT EOS[INST] USER [/INST]... (Mistral-7B-Instruct-v0.1's\n"
    "    format). A leading system message goes before the first user message, a blank line between;\n"
    "    the other roles must alternate user, assistant, user, ... -#}\n"
    "{%- if messages and messages[0]['role'] == 'system' %}\n"
    "    {%- set system = messages[0]['content'] %}\n"
    "    {%- set turns = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set turns = messages %}\n"
    "{%- endif %}\n"
    "{{- bos_token }}\n"
    "{%- for message in turns %}\n"
    "    {%- if message['role'] not in ['user', 'assistant'] %}\n"
    "        {{- raise_exception('mistral: roles must be user or assistant after an optional first system message, '\n"
    "                            'found ' + message['role']) }}\n"
    "    {%- elif (message['role'] == 'user') != loop.index0 is even %}\n"
    "        {{- raise_exception('mistral: roles must alternate user, assistant, user, ... '\n"
    "                            'after an optional system message') }}\n"
    "    {%- elif message['role'] == 'user' %}\n"
    "        {{- '[INST] ' }}\n"
    "        {%- if loop.first and system is defined %}\n"
    "            {{- system + '\\n\\n' }}\n"
    "        {%- endif %}\n"
    "        {{- message['content'] + ' [/INST]' }}\n"
    "    {%- else %}\n"
    "        {{- message['content'] + eos_token }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";

// Zephyr (and TinyLlama-Chat): <|role|>\ncontent</s>\n per message.
static const char ZEPHYR[] =
    "{#- qlora's zephyr: <|ROLE|>\\nCONTENT EOS\\n per message, roles system, user and assistant -#}\n"
    "{%- for message in messages %}\n"
    "    {%- if message['role'] not in ('system', 'user', 'assistant') %}\n"
    "        {{- raise_exception('zephyr: roles must be system, user or assistant, found ' + message['role']) }}\n"
    "    {%- endif %}\n"
    "    {{- '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|assistant|>\\n' }}\n"
    "{%- endif %}\n";

// Alpaca: preamble, then ### Instruction: / ### Response: sections a blank line apart.
static const char ALPACA[] =
    "{#- qlora's alpaca: a preamble (a first system message, or Alpaca's own sentence), then\n"
    "    \\n\\n### Instruction:\\nUSER and \\n\\n### Response:\\nASSISTANT EOS for the turns -#}\n"
    "{%- if messages and messages[0]['role'] == 'system' %}\n"
    "    {%- set preamble = messages[0]['content'] %}\n"
    "    {%- set turns = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set preamble = 'Below is an instruction that describes a task. '\n"
    "                       'Write a response that appropriately completes the request.' %}\n"
    "    {%- set turns = messages %}\n"
    "{%- endif %}\n"
    "{{- preamble }}\n"
    "{%- for message in turns %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {{- '\\n\\n### Instruction:\\n' + message['content'] }}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- '\\n\\n### Response:\\n' + message['content'] + eos_token }}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('alpaca: roles must be user or assistant after an optional first system message, '\n"
    "                            'found ' + message['role']) }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '\\n\\n### Response:\\n' }}\n"
    "{%- endif %}\n";

const char *const CHAT_TEMPLATE_NAMES[] = {"chatml", "llama3", "mistral", "zephyr", "alpaca", NULL};
static const char *const TEXTS[] = {CHATML, LLAMA3, MISTRAL, ZEPHYR, ALPACA};

const char *chat_template_builtin(const char *name) {
    for (size_t i = 0; name && CHAT_TEMPLATE_NAMES[i]; i++)
        if (strcmp(name, CHAT_TEMPLATE_NAMES[i]) == 0) return TEXTS[i];
    return NULL;
}

const char *chat_template_names_list(void) { return "chatml, llama3, mistral, zephyr, alpaca"; }

// ---- a model folder ------------------------------------------------------------------------
static const char *json_kind(const cJSON *v) {
    return cJSON_IsString(v)   ? "a string"
           : cJSON_IsNumber(v) ? "a number"
           : cJSON_IsBool(v)   ? "a boolean"
           : cJSON_IsArray(v)  ? "an array"
           : cJSON_IsObject(v) ? "an object"
                               : "null";
}

// The token string of key in a tokenizer_config.json / special_tokens_map.json object: a
// string, or an AddedToken object's "content"; *out NULL when absent or null.
static bool read_token(const cJSON *cfg, const char *key, const char *file, const char **out, Error *err) {
    *out = NULL;
    const cJSON *v = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, key) : NULL;
    if (!v || cJSON_IsNull(v)) return true;
    const cJSON *s = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "content") : v;
    if (!cJSON_IsString(s))
        return error_set(err, "%s: %s: expected a string or {\"content\": string}, found %s", file, key,
                         cJSON_IsObject(v) ? "an object without a \"content\" string" : json_kind(v));
    *out = s->valuestring;
    return true;
}

// bos_token and eos_token of the folder: tokenizer_config.json's, else special_tokens_map.json's.
static bool read_tokens(const cJSON *cfg, const char *cfg_path, const char *dir, ChatTemplateSource *src, Error *err) {
    char *map_path = path_join(dir, "special_tokens_map.json");
    cJSON *map = access(map_path, F_OK) == 0 ? json_parse_file(map_path, err) : NULL;
    bool ok = access(map_path, F_OK) != 0 || map;
    if (ok && map && !cJSON_IsObject(map)) ok = error_set(err, "%s: expected a JSON object", map_path);
    static const char *const KEYS[] = {"bos_token", "eos_token"};
    for (int k = 0; ok && k < 2; k++) {
        const char *a, *b;
        ok = read_token(cfg, KEYS[k], cfg_path, &a, err) && read_token(map, KEYS[k], map_path, &b, err);
        if (ok && a && b && strcmp(a, b) != 0)
            ok = error_set(err,
                           "%s: %s is '%.60s' but %s says '%.60s'; qlora refuses to guess which one transformers uses",
                           cfg_path, KEYS[k], a, map_path, b);
        const char *use = a ? a : b;
        if (ok && use) *(k ? &src->eos_token : &src->bos_token) = xstrdup(use);
    }
    cJSON_Delete(map);
    free(map_path);
    return ok;
}

// tokenizer_config.json's "chat_template": a string, or [{"name", "template"}, ...] of which
// "default" is the one transformers applies without chat_template=NAME.
static bool config_template(const cJSON *cfg, const char *cfg_path, ChatTemplateSource *src, Error *err) {
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    if (!ct || cJSON_IsNull(ct)) return true;
    if (cJSON_IsArray(ct)) {
        char names[300] = "";
        const cJSON *found = NULL;
        for (const cJSON *e = ct->child; e; e = e->next) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (!cJSON_IsString(name) || !cJSON_IsString(text))
                return error_set(err, "%s: chat_template: expected a list of {\"name\": string, \"template\": string}",
                                 cfg_path);
            if (strcmp(name->valuestring, "default") == 0) found = text;
            if (strlen(names) + strlen(name->valuestring) + 3 < sizeof names)
                strcat(strcat(names, names[0] ? ", " : ""), name->valuestring);
        }
        if (!found)
            return error_set(err,
                             "%s: chat_template: the named templates (%s) include none named \"default\"; "
                             "set chat_template to one of %s",
                             cfg_path, names, chat_template_names_list());
        ct = found;
    } else if (!cJSON_IsString(ct)) {
        return error_set(err, "%s: chat_template: expected a string or a list of {\"name\", \"template\"}, found %s",
                         cfg_path, json_kind(ct));
    }
    src->len = strlen(ct->valuestring);
    src->text = xstrdup(ct->valuestring);
    src->origin = path_fmt("%s's chat_template", cfg_path);
    return true;
}

// The folder's tokens, and its template if want_template; src is freed on failure.
static bool read_folder(const char *dir, ChatTemplateSource *src, bool want_template, Error *err) {
    memset(src, 0, sizeof *src);
    char *cfg_path = path_join(dir, "tokenizer_config.json"), *jinja_path = path_join(dir, "chat_template.jinja");
    cJSON *cfg = access(cfg_path, F_OK) == 0 ? json_parse_file(cfg_path, err) : NULL;
    bool ok = access(cfg_path, F_OK) != 0 || cfg;
    if (ok && cfg && !cJSON_IsObject(cfg)) ok = error_set(err, "%s: expected a JSON object", cfg_path);
    ok = ok && read_tokens(cfg, cfg_path, dir, src, err);
    if (ok && want_template && access(jinja_path, F_OK) == 0) { // transformers >= 4.47: the file wins
        ok = file_read_all(jinja_path, &src->text, &src->len, err);
        if (ok) src->origin = xstrdup(jinja_path);
    } else if (ok && want_template && cfg) {
        ok = config_template(cfg, cfg_path, src, err);
    }
    cJSON_Delete(cfg);
    free(cfg_path);
    free(jinja_path);
    if (!ok) chat_template_source_free(src);
    return ok;
}

bool chat_template_read_dir(const char *dir, ChatTemplateSource *src, Error *err) {
    return read_folder(dir, src, true, err);
}

void chat_template_source_free(ChatTemplateSource *src) {
    free(src->text);
    free(src->origin);
    free(src->bos_token);
    free(src->eos_token);
    memset(src, 0, sizeof *src);
}

ChatTemplate *chat_template_load(const char *which, const char *dir, ChatTemplateSource *src, Error *err) {
    memset(src, 0, sizeof *src);
    const bool own = !which || strcmp(which, "tokenizer_default") == 0;
    const char *text = own ? NULL : chat_template_builtin(which);
    if (!own && !text) {
        error_set(err, "chat_template: unknown template '%.60s'; expected tokenizer_default or one of %s", which,
                  chat_template_names_list());
        return NULL;
    }
    if (!own) {
        if (dir && !read_folder(dir, src, false, err)) return NULL;
        ChatTemplate *t = chat_template_parse(text, strlen(text), which, err);
        if (!t) chat_template_source_free(src);
        return t;
    }
    if (!dir) {
        error_set(err, "chat_template: tokenizer_default needs the model folder");
        return NULL;
    }
    if (!read_folder(dir, src, true, err)) return NULL;
    if (!src->text) {
        error_set(err,
                  "%s: no chat template (neither chat_template.jinja nor tokenizer_config.json's chat_template); "
                  "set chat_template to one of %s",
                  dir, chat_template_names_list());
        chat_template_source_free(src);
        return NULL;
    }
    ChatTemplate *t = chat_template_parse(src->text, src->len, src->origin, err);
    if (!t) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        error_set(err, "%.800s; set chat_template to one of %s instead", msg, chat_template_names_list());
        chat_template_source_free(src);
    }
    return t;
}
