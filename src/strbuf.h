// strbuf.h: text built in an stb_ds char array (`char *sb = NULL;` ... `arrfree(sb)`):
// printf-style appends and escaping for XML/HTML. No NUL is kept at the end; arrlenu(sb)
// is the length. Not here: JSON strings (json.h's json_append_string).
#ifndef QLORA_STRBUF_H
#define QLORA_STRBUF_H

// printf into the stb_ds char array *sb (no NUL kept at the end).
void sb_appendf(char **sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Append s to *sb escaped for XML and HTML, fit for element text and double-quoted
// attribute values alike: & < > " become &amp; &lt; &gt; &quot;; control characters other
// than tab and newline (not allowed in XML 1.0) are dropped. Other bytes (UTF-8 included)
// are copied.
void sb_append_xml(char **sb, const char *s);

#endif
