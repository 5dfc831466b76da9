// json.h: thin helpers over cJSON (Debian's libcjson-dev) that turn parse failures into an
// Error naming the file and byte offset, and a writer-side string escaper.
// Not here: the meaning of any document (safetensors.c, model.c, tokenizer.c do that).
#ifndef QLORA_JSON_H
#define QLORA_JSON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"  // sb_appendf, which JSON writers use with json_append_string
#include "util.h"

// Parse text[0..len) (need not be NUL-terminated; a NUL byte inside is an error) as one
// JSON value; only JSON whitespace may follow it. `what` names the document in errors (usually the file path); byte
// offsets in messages are reported as base + offset in text (base = where the text starts
// in its file). The caller owns the result (cJSON_Delete). NULL and err filled on failure.
// A key that appears twice in one object (at any depth) is an error: parsers disagree on
// which copy wins (cJSON the first, Python and Hugging Face the last), so qlora refuses.
cJSON *json_parse(const char *text, size_t len, size_t base, const char *what, Error *err);

// Read a whole file and parse it (json_parse with the path as `what`).
cJSON *json_parse_file(const char *path, Error *err);

// A JSON number that is an integer in [0, 2^53] (exactly representable in a double).
bool json_as_u64(const cJSON *item, uint64_t *out);

// Append s to the stb_ds char array *sb as a quoted, escaped JSON string (no NUL added).
void json_append_string(char **sb, const char *s);

// Write js formatted (cJSON_Print) plus a final newline to path, atomically.
bool json_write_file(const char *path, const cJSON *js, Error *err);

#endif
