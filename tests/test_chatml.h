// test_chatml.h: a ChatML renderer (chat_data.h's ChatRenderer: <|im_start|>ROLE\nCONTENT<|im_end|>\n
// per message, then <|im_start|>assistant\n for a generation prompt), written out so that the
// data tests and the fuzz harness can predict what a conversation renders to without the
// template interpreter.
#ifndef QLORA_TEST_CHATML_H
#define QLORA_TEST_CHATML_H

#include <string.h>

#include "chat_data.h"
#include "ds.h"
#include "strbuf.h"

// ctx is unused; never fails.
__attribute__((unused)) static bool render_chatml(const void *ctx, const char *const *roles,
                                                  const char *const *contents, size_t n, bool gen, char **out,
                                                  size_t *len, Error *err) {
    (void)ctx;
    (void)err;
    char *sb = NULL;
    for (size_t i = 0; i < n; i++) sb_appendf(&sb, "<|im_start|>%s\n%s<|im_end|>\n", roles[i], contents[i]);
    if (gen) sb_appendf(&sb, "<|im_start|>assistant\n");
    *len = arrlenu(sb);
    *out = xmalloc(*len + 1);
    if (*len) memcpy(*out, sb, *len);
    (*out)[*len] = '\0';
    arrfree(sb);
    return true;
}

#endif
