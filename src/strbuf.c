// strbuf.c: see strbuf.h.
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>

#include "ds.h"
#include "util.h"

void sb_appendf(char **sb, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    CHECK(n >= 0);
    size_t old = arrlenu(*sb);
    arrsetlen(*sb, old + (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(*sb + old, (size_t)n + 1, fmt, ap);
    va_end(ap);
    arrsetlen(*sb, old + (size_t)n);  // drop the NUL; capacity keeps room for one
}

void sb_append_xml(char **sb, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': sb_appendf(sb, "&amp;"); break;
        case '<': sb_appendf(sb, "&lt;"); break;
        case '>': sb_appendf(sb, "&gt;"); break;
        case '"': sb_appendf(sb, "&quot;"); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\n' || *s == '\t') arrput(*sb, *s);
        }
    }
}
