// doc.h: a document written once and rendered twice, as plain text for a terminal and as a
// self-contained HTML page (qlora explain's lesson). A document is a list of numbered sections,
// each a run of blocks: paragraphs, sub-headings, formulas, tables, figures and preformatted
// lines.
//   terminal  paragraphs wrapped at DOC_WIDTH columns; a formula as its plain-text form; a table
//             as padded columns; a figure as one line naming it ("figure 3: caption").
//   HTML      <p>, MathML (<math display="block">) for formulas, real <table>s with a caption,
//             inline <svg> figures with a <title>, an aria-label and a <figcaption>, <pre>
//             lines cut at DOC_PRE_WIDTH characters; a table of contents of the sections; one
//             small inline stylesheet that lays the page out for any window from a phone's
//             width up; no scripts, fonts or anything else from elsewhere. The page is
//             well-formed XML (XHTML syntax), so `xmllint --noout` checks it strictly.
// Text may hold any bytes: invalid UTF-8 becomes U+FFFD and control characters are dropped;
// `backticks` in a paragraph or a cell mark code. Everything is built in memory (stb_ds char
// arrays); nothing is printed except by doc_flush_text, to the stream the caller names.
// Not here: what the lesson says (src/cmd/explain*.c), charts (svg.h).
#ifndef QLORA_DOC_H
#define QLORA_DOC_H

#include <stdbool.h>
#include <stdio.h>

#include "svg.h"
#include "util.h"

enum { DOC_WIDTH = 88, DOC_PRE_WIDTH = 100 };

typedef struct {
    char *text;      // terminal rendering not yet flushed (stb_ds)
    char *body;      // the HTML body so far (stb_ds)
    char *toc;       // the table of contents' <li> entries (stb_ds)
    size_t toc_at;   // where in body the contents go (before the first section)
    int n_sections, n_figures, n_tables;
    bool in_section;
} Doc;

// An empty document; doc_free releases it.
void doc_init(Doc *d);
void doc_free(Doc *d);

// Start section n+1 (numbered by the document; HTML id "sN"): the terminal gets "== N. title ==".
void doc_section(Doc *d, const char *title);
// A sub-heading inside the current section.
void doc_subhead(Doc *d, const char *title);
// A paragraph from printf-style text (up to 8 KiB once formatted).
void doc_para(Doc *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// A display formula: plain is the terminal's one-line form, mathml the content of a <math>
// element (MathML elements such as <mi>, <mo>, <mn>, <mfrac>, <msup>; the caller writes them).
void doc_formula(Doc *d, const char *plain, const char *mathml);
// Preformatted lines (printf-style, '\n' separated): indented by two spaces in the terminal,
// a <pre> in HTML with every line cut to DOC_PRE_WIDTH characters.
void doc_pre(Doc *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// A table built row by row, then added with doc_table_end. Cells are tab-separated; align
// holds one letter per column, 'l' or 'r'. The first row given is the header.
typedef struct {
    char **cells;  // stb_ds array of owned strings, row-major
    int n_cols;
    char align[32];
} DocTable;
void doc_table_begin(DocTable *t, const char *align, const char *header);
void doc_row(DocTable *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Add t to the document under its caption and free t's cells.
void doc_table_end(Doc *d, DocTable *t, const char *caption);

// Add the chart s (finished and freed here) as a numbered figure with caption, which is also
// its alt text; the chart's own title (svg_begin) is its <title>.
void doc_figure(Doc *d, Svg *s, const char *caption);

// Write the terminal text added since the last call to fp.
void doc_flush_text(Doc *d, FILE *fp);
// The whole page (NUL-terminated, caller frees): title as <title> and <h1>, the blocks added
// before the first section, the table of contents, the sections.
char *doc_html(const Doc *d, const char *title);

#endif
