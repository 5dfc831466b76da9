// json.c: see json.h.
#include "json.h"

#include <string.h>

#include "ds.h"

// JSON's four whitespace characters (RFC 8259).
static bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Offset of the first \u0000 escape inside a JSON string of text[0..len), or len if none.
// cJSON would decode it into a NUL byte and every C string user would stop there.
static size_t find_escaped_nul(const char *text, size_t len) {
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '"') in_string = !in_string;
        else if (in_string && text[i] == '\\') {
            if (i + 5 < len && text[i + 1] == 'u' && memcmp(text + i + 2, "0000", 4) == 0) return i;
            i++;  // the escaped character (a quote or backslash) is not structure
        }
    }
    return len;
}

// The first key that appears twice in one object anywhere under node, or NULL. Small
// objects are checked pairwise, large ones (vocab.json, safetensors headers) with a hash
// map. Recursion depth is bounded by cJSON's nesting limit.
static const char *duplicate_key(const cJSON *node) {
    size_t n = 0;
    for (const cJSON *c = node->child; c; c = c->next, n++) {
        const char *d = duplicate_key(c);
        if (d) return d;
    }
    if (!cJSON_IsObject(node) || n < 2) return NULL;
    if (n <= 16) {
        for (const cJSON *a = node->child; a; a = a->next)
            for (const cJSON *b = a->next; b; b = b->next)
                if (strcmp(a->string, b->string) == 0) return a->string;
        return NULL;
    }
    struct { char *key; int value; } *seen = NULL;
    sh_new_arena(seen);
    const char *dup = NULL;
    for (const cJSON *c = node->child; c && !dup; c = c->next) {
        if (shgeti(seen, c->string) >= 0) dup = c->string;
        else shput(seen, c->string, 1);
    }
    shfree(seen);
    return dup;
}

cJSON *json_parse(const char *text, size_t len, size_t base, const char *what, Error *err) {
    // cJSON stops at a NUL byte as at the end of the text: reject it instead of ignoring
    // whatever follows it
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        error_set(err, "%s: byte %zu is a NUL byte; expected JSON text", what, base + (size_t)(nul - text));
        return NULL;
    }
    const size_t esc_nul = find_escaped_nul(text, len);
    if (esc_nul < len) {
        error_set(err, "%s: byte %zu: \\u0000 (a NUL character) in a string; expected text without NUL "
                       "characters (it would cut the string short)", what, base + esc_nul);
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!root) {
        // cJSON leaves `end` at (or just after) the first byte it could not accept
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        char near[24];
        size_t k = 0;
        for (size_t i = off; i < len && k < sizeof near - 1 && k < 16; i++)
            near[k++] = (text[i] >= 32 && text[i] < 127) ? text[i] : '?';
        near[k] = '\0';
        if (off >= len)
            error_set(err, "%s: invalid JSON: unexpected end of text at byte %zu", what, base + off);
        else
            error_set(err, "%s: invalid JSON at byte %zu near '%s'", what, base + off, near);
        return NULL;
    }
    size_t off = (size_t)(end - text);
    while (off < len && is_json_space(text[off])) off++;
    if (off < len) {
        cJSON_Delete(root);
        error_set(err, "%s: invalid JSON: unexpected data after the value at byte %zu", what,
                  base + off);
        return NULL;
    }
    const char *dup = duplicate_key(root);
    if (dup) {
        error_set(err, "%s: key '%.200s' appears twice in one object (expected unique keys: which copy "
                       "counts is ambiguous)", what, dup);
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

cJSON *json_parse_file(const char *path, Error *err) {
    char *text;
    size_t len;
    if (!file_read_all(path, &text, &len, err)) return NULL;
    cJSON *root = json_parse(text, len, 0, path, err);
    free(text);
    return root;
}

bool json_as_u64(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return false;
    double v = item->valuedouble;
    if (!(v >= 0.0) || v > 9007199254740992.0 || v != (double)(uint64_t)v) return false;
    *out = (uint64_t)v;
    return true;
}

void json_append_string(char **sb, const char *s) {
    arrput(*sb, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            arrput(*sb, '\\');
            arrput(*sb, (char)*p);
        } else if (*p < 0x20) {
            sb_appendf(sb, "\\u%04x", *p);
        } else {
            arrput(*sb, (char)*p);
        }
    }
    arrput(*sb, '"');
}

bool json_write_file(const char *path, const cJSON *js, Error *err) {
    char *text = cJSON_Print(js);
    CHECK(text != NULL);
    size_t n = strlen(text);
    char *buf = xmalloc(n + 2);
    memcpy(buf, text, n);
    buf[n] = '\n';
    cJSON_free(text);
    bool ok = write_file_atomic(path, buf, n + 1, err);
    free(buf);
    return ok;
}
