// fuzz_chat_template.c: libFuzzer harness for chat templates: the input is a template, optionally
// followed by a NUL byte and a JSON object of variables. The template is parsed and rendered over
// a fixed conversation with hard content (C API) and over the variables (JSON API), if they parse.
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const ChatMessage MSGS[] = {{"system", " \u00a0sys\n"},
                                       {"user", "Hi {{ x }} {% if %} \xc3\xa9\xf0\x9f\x98\x80\r\n\t'\"\\"},
                                       {"assistant", ""},
                                       {"user", "again"},
                                       {"tool", "{\"a\": [1, 2.5, null]}"}};
    const char *text = (const char *)data;
    const char *nul = memchr(text, '\0', size);
    const size_t text_len = nul ? (size_t)(nul - text) : size;
    Error err = {0};
    ChatTemplate *t = chat_template_parse(text, text_len, "fuzz.jinja", &err);
    if (!t) return 0;
    char *out = NULL;
    const bool agp = size % 2; // one render per API keeps the slowest input (the step limit) quick
    const ChatRenderArgs a = {MSGS, sizeof MSGS / sizeof MSGS[0], agp ? NULL : "<s>", "</s>", agp};
    if (chat_template_render(t, &a, &out, NULL, &err)) free(out);
    if (nul) {
        cJSON *vars = json_parse(nul + 1, size - text_len - 1, 0, "vars", &err);
        if (vars && chat_template_render_json(t, vars, &out, NULL, &err)) free(out);
        cJSON_Delete(vars);
    }
    chat_template_free(t);
    return 0;
}
