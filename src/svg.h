// svg.h: small, dependency-free SVG charts for `qlora explain` and the training report:
// line charts (linear or log x), bar charts (grouped/stacked), histograms with markers,
// scatter plots and free-form boxes and text. A chart is built into an stb_ds char array
// and written atomically. Every string is XML-escaped, so the output is well-formed XML
// (tests check it with xmllint).
#ifndef QLORA_SVG_H
#define QLORA_SVG_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

typedef struct {
    char *buf;             // stb_ds char array, the document so far
    double w, h;           // canvas size in px
    // plot area and data ranges (set by svg_axes)
    double x0, y0, pw, ph, xmin, xmax, ymin, ymax;
    bool logx;
} Svg;

void svg_begin(Svg *s, double w, double h, const char *title);
// Draw axes with ticks and labels for the data ranges; later points map into them.
// With xlabel NULL the x axis gets no tick labels (categories labelled by the caller).
void svg_axes(Svg *s, double xmin, double xmax, double ymin, double ymax, bool logx,
              const char *xlabel, const char *ylabel);
double svg_x(const Svg *s, double x);
double svg_y(const Svg *s, double y);
void svg_polyline(Svg *s, const double *x, const double *y, size_t n, const char *color,
                  double width);
void svg_points(Svg *s, const double *x, const double *y, size_t n, const char *color, double r);
void svg_rect(Svg *s, double x, double y, double w, double h, const char *fill, const char *stroke);
void svg_line(Svg *s, double x1, double y1, double x2, double y2, const char *color, double width,
              bool dashed);
void svg_text(Svg *s, double x, double y, const char *anchor, double size, const char *color,
              const char *fmt, ...) __attribute__((format(printf, 7, 8)));
void svg_legend(Svg *s, const char *const *labels, const char *const *colors, size_t n);
// Finish the document and write it to path (atomically). Frees the buffer.
bool svg_write(Svg *s, const char *path, Error *err);
// Finish and hand the text over (NUL-terminated, caller frees with free()).
char *svg_finish(Svg *s);

extern const char *const SVG_PALETTE[8];

#endif
