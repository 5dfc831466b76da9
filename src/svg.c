// svg.c: see svg.h.
#include "svg.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "strbuf.h"

const char *const SVG_PALETTE[8] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                    "#9467bd", "#8c564b", "#e377c2", "#17becf"};

void svg_begin(Svg *s, double w, double h, const char *title) {
    memset(s, 0, sizeof *s);
    s->w = w;
    s->h = h;
    sb_appendf(&s->buf, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                        "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n"
                        "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
               w, h, w, h);
    if (title) {
        sb_appendf(&s->buf, "<title>");
        sb_append_xml(&s->buf, title);
        sb_appendf(&s->buf, "</title>\n");
        svg_text(s, w / 2, 22, "middle", 15, "#222", "%s", title);
    }
}

double svg_x(const Svg *s, double x) {
    double a = s->logx ? log10(x) : x, lo = s->logx ? log10(s->xmin) : s->xmin;
    double hi = s->logx ? log10(s->xmax) : s->xmax;
    return s->x0 + (hi > lo ? (a - lo) / (hi - lo) : 0.5) * s->pw;
}

double svg_y(const Svg *s, double y) {
    return s->y0 + s->ph - (s->ymax > s->ymin ? (y - s->ymin) / (s->ymax - s->ymin) : 0.5) * s->ph;
}

// A "nice" tick step for a range: 1, 2 or 5 times a power of ten, about 5 ticks.
static double nice_step(double range) {
    double raw = range / 5, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

void svg_axes(Svg *s, double xmin, double xmax, double ymin, double ymax, bool logx,
              const char *xlabel, const char *ylabel) {
    s->x0 = 70;
    s->y0 = 40;
    s->pw = s->w - 100;
    s->ph = s->h - 95;
    s->xmin = xmin;
    s->xmax = xmax;
    s->ymin = ymin;
    s->ymax = ymax;
    s->logx = logx;
    svg_rect(s, s->x0, s->y0, s->pw, s->ph, "none", "#999");
    double ys = nice_step(ymax - ymin);
    for (double y = ceil(ymin / ys) * ys; y <= ymax + ys * 1e-9; y += ys) {
        svg_line(s, s->x0, svg_y(s, y), s->x0 + s->pw, svg_y(s, y), "#e5e5e5", 1, false);
        svg_text(s, s->x0 - 6, svg_y(s, y) + 4, "end", 11, "#444", "%g", fabs(y) < ys * 1e-9 ? 0.0 : y);
    }
    if (logx) {
        for (double x = pow(2, ceil(log2(xmin))); x <= xmax * 1.0001; x *= 2)
            svg_text(s, svg_x(s, x), s->y0 + s->ph + 16, "middle", 11, "#444", "%g", x);
    } else if (xlabel) {  // no x label: a categorical axis, labelled by the caller
        double xs = nice_step(xmax - xmin);
        for (double x = ceil(xmin / xs) * xs; x <= xmax + xs * 1e-9; x += xs)
            svg_text(s, svg_x(s, x), s->y0 + s->ph + 16, "middle", 11, "#444", "%g", fabs(x) < xs * 1e-9 ? 0.0 : x);
    }
    if (xlabel) svg_text(s, s->x0 + s->pw / 2, s->h - 28, "middle", 12, "#222", "%s", xlabel);
    if (ylabel) {
        sb_appendf(&s->buf, "<text x=\"16\" y=\"%.1f\" font-size=\"12\" fill=\"#222\" text-anchor=\"middle\" "
                            "transform=\"rotate(-90 16 %.1f)\">", s->y0 + s->ph / 2, s->y0 + s->ph / 2);
        sb_append_xml(&s->buf, ylabel);
        sb_appendf(&s->buf, "</text>\n");
    }
}

void svg_polyline(Svg *s, const double *x, const double *y, size_t n, const char *color, double width) {
    sb_appendf(&s->buf, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" points=\"", color, width);
    for (size_t i = 0; i < n; i++)
        if (isfinite(x[i]) && isfinite(y[i])) sb_appendf(&s->buf, "%.1f,%.1f ", svg_x(s, x[i]), svg_y(s, y[i]));
    sb_appendf(&s->buf, "\"/>\n");
}

void svg_points(Svg *s, const double *x, const double *y, size_t n, const char *color, double r) {
    for (size_t i = 0; i < n; i++)
        if (isfinite(x[i]) && isfinite(y[i]))
            sb_appendf(&s->buf, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\" fill-opacity=\"0.5\"/>\n",
                       svg_x(s, x[i]), svg_y(s, y[i]), r, color);
}

void svg_rect(Svg *s, double x, double y, double w, double h, const char *fill, const char *stroke) {
    sb_appendf(&s->buf, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" stroke=\"%s\"/>\n",
               x, y, w > 0 ? w : 0, h > 0 ? h : 0, fill, stroke ? stroke : "none");
}

void svg_line(Svg *s, double x1, double y1, double x2, double y2, const char *color, double width,
              bool dashed) {
    sb_appendf(&s->buf, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"%.1f\"%s/>\n",
               x1, y1, x2, y2, color, width, dashed ? " stroke-dasharray=\"4 3\"" : "");
}

void svg_text(Svg *s, double x, double y, const char *anchor, double size, const char *color,
              const char *fmt, ...) {
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    sb_appendf(&s->buf, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%.0f\" fill=\"%s\" text-anchor=\"%s\">", x, y,
               size, color, anchor);
    sb_append_xml(&s->buf, text);
    sb_appendf(&s->buf, "</text>\n");
}

void svg_legend(Svg *s, const char *const *labels, const char *const *colors, size_t n) {
    double x = s->x0 + s->pw - 190, y = s->y0 + 14;  // top right of the plot
    for (size_t i = 0; i < n; i++) {
        svg_rect(s, x, y - 9 + 16.0 * (double)i, 10, 10, colors[i], NULL);
        svg_text(s, x + 15, y + 16.0 * (double)i, "start", 11, "#222", "%s", labels[i]);
    }
}

char *svg_finish(Svg *s) {
    sb_appendf(&s->buf, "</svg>\n");
    size_t n = arrlenu(s->buf);
    char *out = xmalloc(n + 1);
    memcpy(out, s->buf, n);
    out[n] = '\0';
    arrfree(s->buf);
    return out;
}

bool svg_write(Svg *s, const char *path, Error *err) {
    char *text = svg_finish(s);
    bool ok = write_file_atomic(path, text, strlen(text), err);
    free(text);
    return ok;
}
