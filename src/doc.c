// doc.c: see doc.h.
#include "doc.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "strbuf.h"

// The page's whole stylesheet: a readable column, tables and formulas that scroll inside their
// own box when a phone is narrower than they are (the page itself never scrolls sideways),
// figures that shrink to the window.
static const char DOC_CSS[] =
    "body{font:17px/1.55 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d1d1d;"
    "max-width:46em;margin:0 auto;padding:0 1em 3em}"
    "h1{font-size:1.8em;line-height:1.2;margin:1em 0 .4em}"
    "h2{font-size:1.35em;margin:2.2em 0 .6em;padding-bottom:.2em;border-bottom:1px solid #ddd}"
    "h3{font-size:1.08em;margin:1.5em 0 .4em}"
    "p,li,td,th,figcaption,caption{overflow-wrap:break-word}"
    "code{font:.88em ui-monospace,monospace;background:#f2f2f2;padding:0 .2em}"
    "pre{font:.82em/1.4 ui-monospace,monospace;background:#f6f6f6;padding:.7em;overflow-x:auto}"
    ".tw,.math{overflow-x:auto;margin:.8em 0}"
    "table{border-collapse:collapse;font-size:.88em}"
    "caption{text-align:left;font-weight:600;padding:.2em 0 .4em}"
    "th,td{padding:.25em .55em;border-bottom:1px solid #e3e3e3;text-align:left;vertical-align:top}"
    "th{border-bottom:2px solid #bbb}"
    ".r{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
    "math{font-size:1.12em}"
    "figure{margin:1.4em 0}"
    "figure svg{display:block;width:100%;max-width:760px;height:auto}"
    "figcaption{font-size:.9em;color:#555;margin-top:.3em}"
    "nav ol{columns:2;column-gap:2em;padding-left:1.4em}"
    ".intro{color:#444}"
    "@media (max-width:600px){body{font-size:16px;padding:0 .7em 2em}nav ol{columns:1}"
    "table{font-size:.8em}th,td{padding:.2em .35em}}";

// The printf-style arguments that follow fmt, formatted into the array buf (cut to its size).
#define FORMAT_ARGS(buf, fmt)                   \
    do {                                        \
        va_list ap_;                            \
        va_start(ap_, fmt);                     \
        vsnprintf(buf, sizeof buf, fmt, ap_);   \
        va_end(ap_);                            \
    } while (0)

void doc_init(Doc *d) { memset(d, 0, sizeof *d); }

void doc_free(Doc *d) {
    arrfree(d->text);
    arrfree(d->body);
    arrfree(d->toc);
    memset(d, 0, sizeof *d);
}

// Append s as it is.
static void put(char **sb, const char *s) {
    for (; *s; s++) arrput(*sb, *s);
}

// Append s[0..n) to *sb as clean UTF-8: invalid sequences become U+FFFD, control characters
// other than '\n' and '\t' are dropped, and with xml set & < > " are escaped.
static void put_clean(char **sb, const char *s, size_t n, bool xml) {
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x80) {
            const char c = (char)u[i++];
            if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) continue;
            if (xml && c == '&') put(sb, "&amp;");
            else if (xml && c == '<') put(sb, "&lt;");
            else if (xml && c == '>') put(sb, "&gt;");
            else if (xml && c == '"') put(sb, "&quot;");
            else arrput(*sb, c);
            continue;
        }
        const size_t len = utf8_seq_len(u + i, n - i);
        if (len == 0) {
            put(sb, "\xEF\xBF\xBD");
            i++;
        } else {
            for (size_t k = 0; k < len; k++) arrput(*sb, (char)u[i + k]);
            i += len;
        }
    }
}

// Characters (code points) in s[0..n), counting a byte that would become U+FFFD as one.
static size_t text_width(const char *s, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) w += ((uint8_t)s[i] & 0xC0) != 0x80;
    return w;
}

// Inline text for HTML: `code` spans become <code>, the rest is escaped.
static void put_inline_html(char **sb, const char *s) {
    bool code = false;
    for (const char *p = s; *p;) {
        const char *tick = strchr(p, '`');
        const size_t n = tick ? (size_t)(tick - p) : strlen(p);
        put_clean(sb, p, n, true);
        if (!tick) break;
        put(sb, code ? "</code>" : "<code>");
        code = !code;
        p = tick + 1;
    }
    if (code) put(sb, "</code>");
}

// Inline text for the terminal with the backticks removed (table cells, captions).
static void put_plain(char **sb, const char *s) {
    for (const char *p = s; *p;) {
        const size_t n = strcspn(p, "`");
        put_clean(sb, p, n, false);
        p += n;
        if (*p == '`') p++;
    }
}

// Word-wrap s into *sb at DOC_WIDTH columns, each line starting with indent.
static void put_wrapped(char **sb, const char *s, const char *indent) {
    size_t col = 0;
    const char *p = s;
    while (*p) {
        while (*p == ' ') p++;
        if (!*p) break;
        const size_t n = strcspn(p, " "), w = text_width(p, n);
        if (col > 0 && col + 1 + w > DOC_WIDTH) {
            arrput(*sb, '\n');
            col = 0;
        }
        if (col == 0) {
            put(sb, indent);
            col = strlen(indent);
        } else {
            arrput(*sb, ' ');
            col++;
        }
        put_clean(sb, p, n, false);
        col += w;
        p += n;
    }
    arrput(*sb, '\n');
}

void doc_section(Doc *d, const char *title) {
    if (d->n_sections == 0) d->toc_at = arrlenu(d->body);
    if (d->in_section) put(&d->body, "</section>\n");
    const int n = ++d->n_sections;
    d->in_section = true;
    sb_appendf(&d->text, "\n== %d. ", n);
    put_clean(&d->text, title, strlen(title), false);
    put(&d->text, " ==\n");
    sb_appendf(&d->body, "<section id=\"s%d\">\n<h2>%d. ", n, n);
    put_inline_html(&d->body, title);
    put(&d->body, "</h2>\n");
    sb_appendf(&d->toc, "<li><a href=\"#s%d\">", n);
    put_inline_html(&d->toc, title);
    put(&d->toc, "</a></li>\n");
}

void doc_subhead(Doc *d, const char *title) {
    put(&d->text, "\n-- ");
    put_plain(&d->text, title);
    put(&d->text, " --\n");
    put(&d->body, "<h3>");
    put_inline_html(&d->body, title);
    put(&d->body, "</h3>\n");
}

// A paragraph from its text.
static void para(Doc *d, const char *text) {
    arrput(d->text, '\n');
    put_wrapped(&d->text, text, "");
    put(&d->body, d->n_sections ? "<p>" : "<p class=\"intro\">");
    put_inline_html(&d->body, text);
    put(&d->body, "</p>\n");
}

void doc_para(Doc *d, const char *fmt, ...) {
    char buf[8192];
    FORMAT_ARGS(buf, fmt);
    para(d, buf);
}

void doc_formula(Doc *d, const char *plain, const char *mathml) {
    put(&d->text, "\n    ");
    put_clean(&d->text, plain, strlen(plain), false);
    arrput(d->text, '\n');
    put(&d->body, "<div class=\"math\"><math xmlns=\"http://www.w3.org/1998/Math/MathML\" display=\"block\">");
    put(&d->body, mathml);
    put(&d->body, "</math></div>\n");
}

// Preformatted lines from their text.
static void pre(Doc *d, const char *text) {
    arrput(d->text, '\n');
    put(&d->body, "<pre>");
    for (const char *line = text; *line;) {
        const size_t n = strcspn(line, "\n");
        put(&d->text, "  ");
        put_clean(&d->text, line, n, false);
        arrput(d->text, '\n');
        // the page cuts long lines into pieces of DOC_PRE_WIDTH characters
        size_t start = 0, w = 0;
        for (size_t i = 0; i <= n; i++) {
            if (i == n || (((uint8_t)line[i] & 0xC0) != 0x80 && w == DOC_PRE_WIDTH)) {
                put_clean(&d->body, line + start, i - start, true);
                if (i < n) arrput(d->body, '\n');
                start = i;
                w = 0;
            }
            if (i < n && ((uint8_t)line[i] & 0xC0) != 0x80) w++;
        }
        arrput(d->body, '\n');
        line += n;
        if (*line == '\n') line++;
    }
    put(&d->body, "</pre>\n");
}

void doc_pre(Doc *d, const char *fmt, ...) {
    char buf[8192];
    FORMAT_ARGS(buf, fmt);
    pre(d, buf);
}

void doc_table_begin(DocTable *t, const char *align, const char *header) {
    memset(t, 0, sizeof *t);
    snprintf(t->align, sizeof t->align, "%s", align);
    t->n_cols = (int)strlen(t->align);
    CHECK(t->n_cols >= 1 && t->n_cols < 32);
    doc_row(t, "%s", header);
}

void doc_row(DocTable *t, const char *fmt, ...) {
    char buf[4096];
    FORMAT_ARGS(buf, fmt);
    const char *p = buf;
    for (int c = 0; c < t->n_cols; c++) {  // missing cells are empty, extra ones dropped
        const size_t n = strcspn(p, "\t");
        char *cell = xmalloc(n + 1);
        memcpy(cell, p, n);
        cell[n] = '\0';
        arrput(t->cells, cell);
        p += n;
        if (*p == '\t') p++;
    }
}

// Byte length of the longest prefix of s[0..n) that is at most w characters wide and ends
// between words (or is cut at w characters when a single word is wider).
static size_t fit_prefix(const char *s, size_t n, size_t w) {
    size_t chars = 0, last_space = 0, i = 0;
    for (; i < n; i++) {
        if (((uint8_t)s[i] & 0xC0) != 0x80) {
            if (chars == w) break;
            chars++;
        }
        if (s[i] == ' ') last_space = i;
    }
    if (i == n) return n;
    return last_space > 0 ? last_space : i;
}

// Widths of t's columns for the terminal: each column's widest cell; where a row would be wider
// than DOC_TABLE_WIDTH, first headers wider than their column's cells wrap (down to their longest
// word), then the widest text (left-aligned) columns narrow, down to DOC_CELL_MIN.
enum { DOC_TABLE_WIDTH = 100, DOC_CELL_MIN = 14 };
static void column_widths(const DocTable *t, size_t *width) {
    size_t body[32] = {0}, word[32] = {0};
    char *plain = NULL;
    for (size_t i = 0; i < arrlenu(t->cells); i++) {
        arrsetlen(plain, 0);
        put_plain(&plain, t->cells[i]);
        const size_t w = text_width(plain, arrlenu(plain)), c = i % (size_t)t->n_cols;
        if (w > width[c]) width[c] = w;
        if (i >= (size_t)t->n_cols && w > body[c]) body[c] = w;
        for (size_t k = 0; i < (size_t)t->n_cols && k < arrlenu(plain);) {  // the header's longest word
            size_t n = 0;  // plain has no NUL: the word ends at a space or at the end
            while (k + n < arrlenu(plain) && plain[k + n] != ' ') n++;
            const size_t ww = text_width(plain + k, n);
            if (ww > word[c]) word[c] = ww;
            k += n + 1;
        }
    }
    arrfree(plain);
    const size_t budget = DOC_TABLE_WIDTH - 2 - 2 * (size_t)(t->n_cols - 1);
    size_t total = 0;
    for (int c = 0; c < t->n_cols; c++) total += width[c];
    while (total > budget) {  // one column at a time, one character at a time
        size_t most = 0, widest = 0;
        int at = -1;
        for (int c = 0; c < t->n_cols; c++) {  // the header that overhangs its cells the most
            const size_t floor_w = body[c] > word[c] ? body[c] : word[c];
            if (width[c] > floor_w && width[c] - floor_w > most) most = width[c] - floor_w, at = c;
        }
        for (int c = 0; at < 0 && c < t->n_cols; c++)  // else the widest text column
            if (t->align[c] != 'r' && width[c] > DOC_CELL_MIN && width[c] > widest) widest = width[c];
        for (int c = 0; at < 0 && widest && c < t->n_cols; c++)
            if (t->align[c] != 'r' && width[c] == widest) at = c;
        if (at < 0) break;
        width[at]--;
        total--;
    }
}

// One table row in the terminal: every cell word-wrapped to its column's width, the row as
// tall as its tallest cell.
static void row_text(Doc *d, const DocTable *t, size_t r, const size_t *width) {
    char *plain[32];
    size_t pos[32];
    bool more = true;
    for (int c = 0; c < t->n_cols; c++) {
        plain[c] = NULL;
        put_plain(&plain[c], t->cells[r * (size_t)t->n_cols + (size_t)c]);
        pos[c] = 0;
    }
    while (more) {
        more = false;
        put(&d->text, "  ");
        for (int c = 0; c < t->n_cols; c++) {
            const size_t len = arrlenu(plain[c]);
            while (pos[c] < len && plain[c][pos[c]] == ' ') pos[c]++;
            const size_t n = fit_prefix(plain[c] + pos[c], len - pos[c], width[c]);
            const size_t w = text_width(plain[c] + pos[c], n), pad = width[c] > w ? width[c] - w : 0;
            const bool right = t->align[c] == 'r', last = c == t->n_cols - 1;
            for (size_t k = 0; right && k < pad; k++) arrput(d->text, ' ');
            for (size_t k = 0; k < n; k++) arrput(d->text, plain[c][pos[c] + k]);
            for (size_t k = 0; !right && !last && k < pad; k++) arrput(d->text, ' ');
            if (!last) put(&d->text, "  ");
            pos[c] += n;
            more = more || pos[c] < len;
        }
        while (arrlenu(d->text) && d->text[arrlenu(d->text) - 1] == ' ') arrsetlen(d->text, arrlenu(d->text) - 1);
        arrput(d->text, '\n');
    }
    for (int c = 0; c < t->n_cols; c++) arrfree(plain[c]);
}

// The terminal form of table t: caption, header, a rule, rows; columns padded to their
// widest cell (text columns wrapped when the row would be too wide), right-aligned where
// t->align says 'r'.
static void table_text(Doc *d, const DocTable *t, const char *caption) {
    const size_t n_rows = arrlenu(t->cells) / (size_t)t->n_cols;
    size_t width[32] = {0};
    column_widths(t, width);
    char *head = NULL;
    sb_appendf(&head, "table %d: ", d->n_tables);
    put_plain(&head, caption);
    arrput(head, '\0');
    arrput(d->text, '\n');
    put_wrapped(&d->text, head, "");
    arrfree(head);
    for (size_t r = 0; r < n_rows; r++) {
        row_text(d, t, r, width);
        if (r == 0) {
            size_t total = 0;
            for (int c = 0; c < t->n_cols; c++) total += width[c] + (c ? 2 : 0);
            put(&d->text, "  ");
            for (size_t k = 0; k < total; k++) arrput(d->text, '-');
            arrput(d->text, '\n');
        }
    }
}

// The HTML form of table t.
static void table_html(Doc *d, const DocTable *t, const char *caption) {
    const size_t n_rows = arrlenu(t->cells) / (size_t)t->n_cols;
    sb_appendf(&d->body, "<div class=\"tw\"><table>\n<caption>Table %d. ", d->n_tables);
    put_inline_html(&d->body, caption);
    put(&d->body, "</caption>\n");
    for (size_t r = 0; r < n_rows; r++) {
        put(&d->body, r == 0 ? "<thead><tr>" : "<tr>");
        for (int c = 0; c < t->n_cols; c++) {
            const char *tag = r == 0 ? "th" : "td";
            sb_appendf(&d->body, "<%s%s>", tag, t->align[c] == 'r' ? " class=\"r\"" : "");
            put_inline_html(&d->body, t->cells[r * (size_t)t->n_cols + (size_t)c]);
            sb_appendf(&d->body, "</%s>", tag);
        }
        put(&d->body, r == 0 ? "</tr></thead>\n<tbody>\n" : "</tr>\n");
    }
    if (n_rows <= 1) put(&d->body, "<tr><td></td></tr>\n");  // a tbody may not be empty
    put(&d->body, "</tbody></table></div>\n");
}

void doc_table_end(Doc *d, DocTable *t, const char *caption) {
    d->n_tables++;
    table_text(d, t, caption);
    table_html(d, t, caption);
    for (size_t i = 0; i < arrlenu(t->cells); i++) free(t->cells[i]);
    arrfree(t->cells);
    memset(t, 0, sizeof *t);
}

void doc_figure(Doc *d, Svg *s, const char *caption) {
    const int n = ++d->n_figures;
    char *svg = svg_finish(s);
    const char *open = strstr(svg, "<svg");  // inline: no XML declaration
    CHECK(open != NULL);
    sb_appendf(&d->text, "\n[figure %d: ", n);
    put_plain(&d->text, caption);
    put(&d->text, " (in the HTML page)]\n");
    sb_appendf(&d->body, "<figure id=\"f%d\">\n<svg role=\"img\" aria-label=\"", n);
    put_clean(&d->body, caption, strlen(caption), true);
    arrput(d->body, '"');
    put(&d->body, open + 4);
    sb_appendf(&d->body, "<figcaption>Figure %d. ", n);
    put_inline_html(&d->body, caption);
    put(&d->body, "</figcaption></figure>\n");
    free(svg);
}

void doc_flush_text(Doc *d, FILE *fp) {
    fwrite(d->text, 1, arrlenu(d->text), fp);
    fflush(fp);
    arrsetlen(d->text, 0);
}

char *doc_html(const Doc *d, const char *title) {
    char *page = NULL;
    put(&page, "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n"
               "<meta charset=\"utf-8\"/>\n"
               "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n<title>");
    put_clean(&page, title, strlen(title), true);
    put(&page, "</title>\n<style>");
    put(&page, DOC_CSS);
    put(&page, "</style>\n</head>\n<body>\n<h1>");
    put_inline_html(&page, title);
    put(&page, "</h1>\n");
    const size_t at = d->n_sections ? d->toc_at : arrlenu(d->body);
    for (size_t i = 0; i < at; i++) arrput(page, d->body[i]);
    if (d->n_sections) {
        put(&page, "<nav aria-label=\"Contents\">\n<p><strong>Contents</strong></p>\n<ol>\n");
        for (size_t i = 0; i < arrlenu(d->toc); i++) arrput(page, d->toc[i]);
        put(&page, "</ol>\n</nav>\n");
    }
    for (size_t i = at; i < arrlenu(d->body); i++) arrput(page, d->body[i]);
    if (d->in_section) put(&page, "</section>\n");
    put(&page, "</body>\n</html>\n");
    const size_t n = arrlenu(page);
    char *out = xmalloc(n + 1);
    memcpy(out, page, n);
    out[n] = '\0';
    arrfree(page);
    return out;
}
