/* runtime/report/report_svg.c — scatter.svg of a report (report.h): per
 * architecture, test accuracy against train time.
 *
 *   - The combined plot: every run, one marker shape and colour per strategy
 *     (Okabe-Ito), the Pareto front as a step line, each strategy's best run
 *     ringed and labelled (name, accuracy, LR) in a column beside the plot
 *     with a leader line, so that labels never overlap however close the
 *     points are. The accuracy axis spans only runs that neither diverged nor
 *     collapsed (report_collapse_limit): collapsed runs sit in a strip of
 *     their own below the plot, diverged ones (hollow) in a second strip,
 *     both at their train time.
 *   - Below it, one small plot per strategy on the same axes: its runs in its
 *     colour over every other run in light grey, each labelled with its LR
 *     in a column beside the plot; its collapsed and diverged runs listed
 *     under it with their LRs.
 *   - The title names the arch and the data set; the line under it the input
 *     size, the split's images and the run counts.
 * Every marker carries a <title> (strategy, trial, LR, batch, accuracy,
 * time, epochs) for hover text. The output is plain SVG 1.1 with one <style>
 * block: browsers and rsvg-convert draw it alike.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/dataset.h"
#include "runtime/strategy.h"
#include "runtime/report/report.h"

/* Colour and marker of strategy `kind` (kiln's enum order; unknown ones
 * share the last entry). Colours: the Okabe-Ito palette, distinguishable
 * with the common colour-vision deficiencies, plus grey for `random`. */
static const char *const COLOURS[STRAT_COUNT + 1] = {
    "#7f7f7f", "#e69f00", "#56b4e9", "#009e73", "#cc79a7", "#d55e00", "#0072b2", "#000000", "#999933"};
typedef enum { MK_CIRCLE, MK_SQUARE, MK_TRIANGLE, MK_DIAMOND, MK_TRIANGLE_DOWN, MK_HEXAGON, MK_STAR, MK_PLUS } Marker;
static const Marker MARKERS[STRAT_COUNT + 1] = {
    MK_CIRCLE, MK_SQUARE, MK_TRIANGLE, MK_DIAMOND, MK_TRIANGLE_DOWN, MK_HEXAGON, MK_STAR, MK_PLUS, MK_CIRCLE};

/* XML text with &, <, >, " and ' escaped, after dataset_escape (the file is
 * UTF-8: bytes that are not valid UTF-8 are written as \xNN). */
static void xml_text(FILE *f, const char *text)
{
    char buf[1024];
    for (const char *s = dataset_escape(buf, sizeof buf, text, strlen(text)); *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, f);
        }
    }
}

/* The path data of marker m centred at (x, y), radius about r. */
static void marker_path(FILE *f, Marker m, double x, double y, double r)
{
    switch (m) {
    case MK_CIRCLE:
        fprintf(f, "M%.1f,%.1fa%.1f,%.1f 0 1,0 %.1f,0a%.1f,%.1f 0 1,0 %.1f,0Z", x - r, y, r, r, 2 * r, r, r, -2 * r);
        return;
    case MK_SQUARE: r *= 0.88;
        fprintf(f, "M%.1f,%.1fh%.1fv%.1fh%.1fZ", x - r, y - r, 2 * r, 2 * r, -2 * r);
        return;
    case MK_PLUS: {
        double a = r * 0.38;
        fprintf(f, "M%.1f,%.1fh%.1fv%.1fh%.1fv%.1fh%.1fv%.1fh%.1fv%.1fh%.1fv%.1fh%.1fZ", x - a, y - r, 2 * a,
                r - a, r - a, 2 * a, -(r - a), r - a, -2 * a, -(r - a), -(r - a), -2 * a, r - a);
        return;
    }
    default: break;
    }
    /* polygons: vertices on a circle (the star alternates two radii) */
    int nv = m == MK_TRIANGLE || m == MK_TRIANGLE_DOWN ? 3 : m == MK_DIAMOND ? 4 : m == MK_HEXAGON ? 6 : 10;
    double rot = m == MK_TRIANGLE_DOWN ? M_PI / 2 : -M_PI / 2, scale = m == MK_DIAMOND ? 1.2 : m == MK_STAR ? 1.3 : 1.1;
    if (m == MK_HEXAGON) rot = 0;
    for (int i = 0; i < nv; i++) {
        double rr = r * scale * (m == MK_STAR && i % 2 ? 0.45 : 1), ang = rot + 2 * M_PI * i / nv;
        double py = y + rr * sin(ang) + (m == MK_TRIANGLE ? r * 0.2 : m == MK_TRIANGLE_DOWN ? -r * 0.2 : 0);
        fprintf(f, "%c%.1f,%.1f", i ? 'L' : 'M', x + rr * cos(ang), py);
    }
    fputc('Z', f);
}

/* A "nice" tick step (1, 2, 2.5 or 5 times a power of ten) for about `want`
 * ticks over `range`. */
static double nice_step(double range, int want)
{
    double raw = range / want, mag = pow(10, floor(log10(raw))), norm = raw / mag;
    return (norm < 1.5 ? 1 : norm < 2.25 ? 2 : norm < 3.5 ? 2.5 : norm < 7.5 ? 5 : 10) * mag;
}

/* An axis: data range to pixels, linear or log10. */
typedef struct { double lo, hi; int log; double p0, p1; } Axis;

/* Pixel coordinate of data value v on axis a. */
static double ax_map(const Axis *a, double v)
{
    double t = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo)) : (v - a->lo) / (a->hi - a->lo);
    return a->p0 + t * (a->p1 - a->p0);
}

/* Tick label text for a value of step `step` on a linear axis. */
static void tick_label(char *buf, size_t n, double v, double step)
{
    if (fabs(v) < step * 1e-6) v = 0;                                        /* no "-0.0" */
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (fabs(step * pow(10, dec) - round(step * pow(10, dec))) > 1e-6) dec++;   /* 2.5 */
    snprintf(buf, n, "%.*f", dec, v);
}

#define SVG_W 960
#define PL 72                    /* combined plot area: left, right, top, bottom */
#define PR 505
#define PT 62
#define PB 362
#define STRIP_H 24               /* each strip below it: collapsed, then diverged */
#define XB (PB + 2 * STRIP_H)    /* the x axis line */
#define COMB_H (XB + 52)         /* the combined block's height */
#define LEGEND_X 740
#define COLS 4                   /* small plots a row */
#define CELL_W 235
#define CELL_H 178
#define SL 36                    /* a small plot's area within its cell */
#define SW 146
#define ST 30
#define SH 104
#define SMALL_TOP (COMB_H + 26)  /* first row of small plots */

/* Height of the panel of an architecture with ns strategies. */
static int panel_height(int ns) { return SMALL_TOP + (ns + COLS - 1) / COLS * CELL_H + 8; }

/* Spread n label baselines (y, any order) at least gap apart within
 * [lo, hi], each as near its wish as the others allow. */
static void spread_labels(double *y, int n, double gap, double lo, double hi)
{
    int idx[64];
    if (n > 64) n = 64;
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && y[idx[j - 1]] > y[idx[j]]; j--) { int t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t; }
    for (int k = 0; k < n; k++) {
        if (y[idx[k]] < lo) y[idx[k]] = lo;
        if (k && y[idx[k]] < y[idx[k - 1]] + gap) y[idx[k]] = y[idx[k - 1]] + gap;
    }
    for (int k = n - 1; k >= 0; k--) {
        double cap = k == n - 1 ? hi : y[idx[k + 1]] - gap;
        if (y[idx[k]] > cap) y[idx[k]] = cap;
    }
}

/* A run's marker: shape and colour of its strategy at (px, py), radius r;
 * hollow for a diverged run, `opacity` for the fill otherwise. */
static void svg_marker(FILE *f, const Row *r, double px, double py, double rad, double opacity)
{
    int o = r->kind > STRAT_COUNT ? STRAT_COUNT : r->kind;
    fprintf(f, "<g class=\"marker%s%s\" data-strategy=\"", r->diverged ? " diverged" : "",
            r->collapsed ? " collapsed" : "");
    xml_text(f, r->strategy);
    fprintf(f, "\" data-trial=\"%d\"><title>", r->trial);
    xml_text(f, r->strategy);
    fprintf(f, " trial %d: lr %g, batch %d, %s%.2f%%, %.2f s, %d epochs</title><path d=\"", r->trial, r->lr,
            r->batch, r->diverged ? "DIVERGED (last good weights) " : r->collapsed ? "COLLAPSED " : "",
            100 * r->acc, r->secs, r->epochs);
    marker_path(f, MARKERS[o], px, py, rad);
    if (r->diverged)
        fprintf(f, "\" fill=\"#ffffff\" stroke=\"%s\" stroke-width=\"1.6\"/></g>\n", COLOURS[o]);
    else
        fprintf(f, "\" fill=\"%s\" fill-opacity=\"%.2f\" stroke=\"#ffffff\" stroke-width=\"0.8\"/></g>\n",
                COLOURS[o], opacity);
}

/* The axes of one architecture: x train seconds over every run (log10 when
 * they span more than 10x), y accuracy (%) over the runs that neither
 * diverged nor collapsed, on nice ticks; ystep the y tick step. */
static void make_axes(const Rows *rs, int a, int b, Axis *x, Axis *y, double *ystep)
{
    double tmin = INFINITY, tmax = 0, amin = INFINITY, amax = -INFINITY;
    for (int i = a; i < b; i++) {
        const Row *r = &rs->rows[i];
        if (r->secs > 0) { tmin = fmin(tmin, r->secs); tmax = fmax(tmax, r->secs); }
        if (r->diverged || r->collapsed) continue;
        amin = fmin(amin, 100 * r->acc);
        amax = fmax(amax, 100 * r->acc);
    }
    if (!isfinite(tmin)) { tmin = 0.1; tmax = 1; }
    if (!isfinite(amin)) { amin = 0; amax = 100; }
    *x = (Axis){0, 0, tmax / tmin > 10, PL, PR};
    if (x->log) {
        double l0 = log10(tmin), l1 = log10(tmax), pad = 0.06 * (l1 - l0);
        x->lo = pow(10, l0 - pad);
        x->hi = pow(10, l1 + pad);
    } else {
        double span = tmax - tmin, pad = span > 0 ? 0.08 * span : 0.25 * tmax;
        double step = nice_step(span + 2 * pad, 5);
        x->lo = fmax(0, floor((tmin - pad) / step) * step);
        x->hi = ceil((tmax + pad) / step) * step;
        if (x->hi <= x->lo) x->hi = x->lo + step;
    }
    double span = amax - amin;
    if (span < 2) {
        amin -= (2 - span) / 2;
        amax += (2 - span) / 2;
        if (amax > 100) { amin -= amax - 100; amax = 100; }
        span = 2;
    }
    *ystep = nice_step(span * 1.16, 5);
    *y = (Axis){fmax(0, floor((amin - 0.08 * span) / *ystep) * *ystep),
                fmin(100, ceil((amax + 0.08 * span) / *ystep) * *ystep), 0, PB, PT + 10};
    if (y->hi <= y->lo) y->hi = y->lo + *ystep;   /* the top tick sits below the frame: 100% stays inside */
}

/* The x ticks of axis x between pixel rows top and bottom (grid), with tick
 * marks and labels below `base`; `small`: majors labelled only. */
static void x_ticks(FILE *f, const Axis *x, double top, double bottom, double base, int small)
{
    char lab[32];
    const char *cls = small ? "xtick small" : "xtick";
    if (x->log) {
        int d0 = (int)floor(log10(x->lo)), d1 = (int)ceil(log10(x->hi)), many = small || d1 - d0 > 3;
        for (int d = d0; d <= d1; d++)
            for (int m = 1; m <= 9; m++) {
                double v = m * pow(10, d);
                if (v < x->lo || v > x->hi) continue;
                double px = ax_map(x, v);
                int major = m == 1, labelled = major || (!many && (m == 2 || m == 5));
                fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" class=\"%s\"/>", px, top, px, bottom,
                        major ? "grid" : "grid minor");
                fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" class=\"axis\"/>", px, base, px,
                        base + (labelled ? 4 : 2));
                if (labelled) {
                    snprintf(lab, sizeof lab, "%g", v);
                    fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" class=\"%s\">%s</text>", px, base + (small ? 13 : 17),
                            cls, lab);
                }
                fputc('\n', f);
            }
        return;
    }
    double step = nice_step(x->hi - x->lo, small ? 3 : 5);
    for (double v = ceil(x->lo / step - 1e-9) * step; v <= x->hi + step * 1e-6; v += step) {
        double px = ax_map(x, v);
        tick_label(lab, sizeof lab, v, step);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" class=\"grid\"/>", px, top, px, bottom);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" class=\"axis\"/>", px, base, px, base + 4);
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" class=\"%s\">%s</text>\n", px, base + (small ? 13 : 17), cls, lab);
    }
}

/* The y grid and labelled ticks of axis y between pixel columns left and right. */
static void y_ticks(FILE *f, const Axis *y, double ystep, double left, double right, int small)
{
    char lab[32];
    for (double v = y->lo; v <= y->hi + ystep * 1e-6; v += ystep) {
        double py = ax_map(y, v);
        tick_label(lab, sizeof lab, v, ystep);
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" class=\"grid\"/>", left, py, right, py);
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" class=\"axis\"/>", left - 4, py, left, py);
        fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" class=\"ytick%s\">%s</text>\n", left - 6, py + (small ? 3 : 4),
                small ? " small" : "", lab);
    }
}

/* The title and the line under it: arch, data, input size, split, counts. */
static void svg_title(FILE *f, const Rows *rs, int a, int b)
{
    char data[256], input[32], split[96];
    int ncol = 0, ndiv = 0, same_in = 1, same_split = 1;
    report_data_name(data, sizeof data, rs->rows[a].data);
    report_input_text(input, sizeof input, &rs->rows[a]);
    report_split_text(split, sizeof split, &rs->rows[a]);
    for (int i = a; i < b; i++) {
        char t[96];
        ncol += rs->rows[i].collapsed;
        ndiv += rs->rows[i].diverged;
        report_input_text(t, sizeof t, &rs->rows[i]);
        same_in &= !strcmp(t, input);
        report_split_text(t, sizeof t, &rs->rows[i]);
        same_split &= !strcmp(t, split);
    }
    fprintf(f, "<text x=\"%d\" y=\"24\" class=\"title\">", PL);
    xml_text(f, rs->rows[a].arch);
    fprintf(f, " on ");
    xml_text(f, data);
    fprintf(f, ": test accuracy against train time</text>\n<text x=\"%d\" y=\"43\" class=\"subtitle\">input %s%s, ",
            PL, input, same_in ? "" : " (not all runs)");
    xml_text(f, split);
    fprintf(f, " images%s; %d run%s, %d collapsed (below %.0f%%), %d diverged</text>\n",
            same_split ? "" : " (not all runs)", b - a, b - a == 1 ? "" : "s", ncol,
            100 * report_collapse_limit(rs->rows[a].classes), ndiv);
}

/* The combined plot of rows [a, b) with axes x, y. */
static void svg_combined(FILE *f, const Rows *rs, int a, int b, const StratStats *st, int ns, const Axis *x,
                         const Axis *y, double ystep)
{
    fprintf(f, "<g class=\"combined\">\n");
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"plot\"/>\n", PL, PT, PR - PL, PB - PT);
    y_ticks(f, y, ystep, PL, PR, 0);
    x_ticks(f, x, PT, PB, XB, 0);
    const char *strip[2] = {"collapsed", "diverged"};
    for (int k = 0; k < 2; k++) {
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"strip\"/>", PL, PB + k * STRIP_H,
                PR - PL, STRIP_H);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" class=\"ytick strip-label\">%s</text>\n", PL - 6,
                PB + (k + 0.5) * STRIP_H + 4, strip[k]);
    }
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"axis\"/>", PL, PT, PL, XB);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"axis\"/>\n", PL, XB, PR, XB);
    fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"label\">train time (s%s)</text>\n", (PL + PR) / 2, XB + 38,
            x->log ? ", log scale" : "");
    fprintf(f, "<text transform=\"translate(%d,%d) rotate(-90)\" class=\"label\">test accuracy (%%)</text>\n", 20,
            (PT + PB) / 2);

    int *front = malloc(sizeof(int) * (size_t)(b - a)), nf = front ? report_pareto(rs, a, b, front) : 0;
    if (nf) {
        fprintf(f, "<path class=\"pareto\" d=\"");
        for (int k = 0; k < nf; k++) {
            const Row *r = &rs->rows[front[k]];
            double px = ax_map(x, fmax(r->secs, x->lo)), py = ax_map(y, 100 * r->acc);
            if (k) fprintf(f, "H%.1f", px);
            fprintf(f, "%c%.1f,%.1f", k ? 'L' : 'M', px, py);
        }
        fprintf(f, "H%d\"/>\n", PR);
    }
    free(front);

    /* every run; each strategy's best last, opaque and ringed */
    for (int i = a; i < b; i++) {
        const Row *r = &rs->rows[i];
        double px = ax_map(x, r->secs > 0 ? fmax(r->secs, x->lo) : x->lo);
        double py = r->diverged ? PB + 1.5 * STRIP_H : r->collapsed ? PB + 0.5 * STRIP_H : ax_map(y, 100 * r->acc);
        int best = 0;
        for (int k = 0; k < ns; k++) best |= st[k].best == i && !r->collapsed;
        if (!best) svg_marker(f, r, px, py, 5, 0.6);
    }
    double lab[64], bx[64], by[64];
    int nl = 0, who[64];
    for (int k = 0; k < ns && nl < 64; k++) {
        const Row *r = st[k].best >= 0 ? &rs->rows[st[k].best] : NULL;
        if (!r || r->collapsed) continue;
        bx[nl] = ax_map(x, fmax(r->secs, x->lo));
        by[nl] = ax_map(y, 100 * r->acc);
        lab[nl] = by[nl] + 4;
        who[nl++] = k;
    }
    spread_labels(lab, nl, 14, PT + 12, PB - 4);
    for (int l = 0; l < nl; l++) {
        const Row *r = &rs->rows[st[who[l]].best];
        int o = r->kind > STRAT_COUNT ? STRAT_COUNT : r->kind;
        svg_marker(f, r, bx[l], by[l], 5.5, 1);
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"9\" class=\"ring\" stroke=\"%s\"/>", bx[l], by[l], COLOURS[o]);
        fprintf(f, "<path class=\"leader\" d=\"M%.1f,%.1fL%d,%.1fH%d\"/>", bx[l] + 9, by[l], PR + 4, lab[l] - 4, PR + 8);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" class=\"best-label\" fill=\"%s\">", PR + 11, lab[l], COLOURS[o]);
        xml_text(f, r->strategy);
        fprintf(f, " %.1f%% (lr %g)</text>\n", 100 * r->acc, r->lr);
    }
    fprintf(f, "</g>\n");
}

/* The legend beside the combined plot. */
static void svg_legend(FILE *f, const StratStats *st, int ns)
{
    double lx = LEGEND_X, ly = PT + 8;
    fprintf(f, "<g class=\"legend\">\n<text x=\"%.0f\" y=\"%.0f\" class=\"legend-title\">strategy (runs)</text>\n",
            lx, ly);
    ly += 20;
    for (int k = 0; k < ns; k++, ly += 19) {
        int o = st[k].kind > STRAT_COUNT ? STRAT_COUNT : st[k].kind;
        fprintf(f, "<path class=\"legend-marker\" d=\"");
        marker_path(f, MARKERS[o], lx + 6, ly - 4, 5.5);
        fprintf(f, "\" fill=\"%s\" stroke=\"#ffffff\" stroke-width=\"0.8\"/>", COLOURS[o]);
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" class=\"legend-text\">", lx + 18, ly);
        xml_text(f, st[k].name);
        fprintf(f, " (%d", st[k].n);
        if (st[k].n_col) fprintf(f, ", %d collapsed", st[k].n_col);
        if (st[k].n_div) fprintf(f, ", %d diverged", st[k].n_div);
        fprintf(f, ")</text>\n");
    }
    ly += 8;
    fprintf(f, "<path class=\"pareto\" d=\"M%.0f,%.0fH%.0f\"/><text x=\"%.0f\" y=\"%.0f\" class=\"legend-text\">"
               "Pareto front</text>\n", lx - 2, ly - 4, lx + 14, lx + 18, ly);
    ly += 19;
    fprintf(f, "<circle cx=\"%.0f\" cy=\"%.0f\" r=\"7\" class=\"ring\" stroke=\"#555555\"/><text x=\"%.0f\" "
               "y=\"%.0f\" class=\"legend-text\">each strategy's best</text>\n", lx + 6, ly - 4, lx + 18, ly);
    ly += 19;
    fprintf(f, "<path class=\"legend-marker\" d=\"");
    marker_path(f, MK_CIRCLE, lx + 6, ly - 4, 5.5);
    fprintf(f, "\" fill=\"#ffffff\" stroke=\"#555555\" stroke-width=\"1.6\"/><text x=\"%.0f\" y=\"%.0f\" "
               "class=\"legend-text\">diverged: hollow</text>\n", lx + 18, ly);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" class=\"legend-text\">collapsed and diverged runs</text>\n", lx, ly + 22);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" class=\"legend-text\">in the strips below the plot</text>\n</g>\n", lx,
            ly + 37);
}

/* Strategy s's small plot in its cell at (cx, cy), on the combined axes. */
static void svg_small(FILE *f, const Rows *rs, int a, int b, const StratStats *s, const Axis *cx_axis,
                      const Axis *cy_axis, double ystep, double cx, double cy)
{
    int o = s->kind > STRAT_COUNT ? STRAT_COUNT : s->kind;
    double l = cx + SL, r = l + SW, t = cy + ST, bot = t + SH;
    Axis x = *cx_axis, y = *cy_axis;
    x.p0 = l;
    x.p1 = r;
    y.p0 = bot;
    y.p1 = t + 6;
    fprintf(f, "<g class=\"small\" data-strategy=\"");
    xml_text(f, s->name);
    fprintf(f, "\" data-x=\"%.0f\" data-y=\"%.0f\" data-w=\"%d\" data-h=\"%d\">\n", cx, cy, CELL_W, CELL_H);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" class=\"small-title\" fill=\"%s\">", l - SL + 4, cy + 11, COLOURS[o]);
    xml_text(f, s->name);
    fprintf(f, "</text>\n");
    if (s->best >= 0 && !rs->rows[s->best].collapsed)
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" class=\"small-note\">best %.1f%% at lr %g, mean %.1f%% of %d</text>\n",
                l - SL + 4, cy + 23, 100 * rs->rows[s->best].acc, rs->rows[s->best].lr, 100 * s->mean_acc,
                s->n - s->n_div);
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%d\" height=\"%d\" class=\"plot\"/>\n", l, t, SW, SH);
    y_ticks(f, &y, ystep, l, r, 1);
    x_ticks(f, &x, t, bot, bot, 1);
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%d\" height=\"%d\" class=\"frame\"/>\n", l, t, SW, SH);
    for (int i = a; i < b; i++) {     /* the other strategies' runs, for context */
        const Row *q = &rs->rows[i];
        if (i >= s->first && i < s->end) continue;
        if (q->diverged || q->collapsed) continue;
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.2\" class=\"context\"/>", ax_map(&x, fmax(q->secs, x.lo)),
                ax_map(&y, 100 * q->acc));
    }
    fputc('\n', f);
    double lab[64], px[64], py[64];
    int n = 0, idx[64];
    for (int i = s->first; i < s->end && n < 64; i++) {
        const Row *q = &rs->rows[i];
        if (q->diverged || q->collapsed) continue;
        px[n] = ax_map(&x, fmax(q->secs, x.lo));
        py[n] = ax_map(&y, 100 * q->acc);
        lab[n] = py[n] + 3;
        idx[n++] = i;
    }
    spread_labels(lab, n, 10, t + 8, bot);
    for (int k = 0; k < n; k++) {
        const Row *q = &rs->rows[idx[k]];
        svg_marker(f, q, px[k], py[k], 4.2, 1);
        fprintf(f, "<path class=\"leader\" d=\"M%.1f,%.1fL%.0f,%.1fH%.0f\"/>", px[k] + 5, py[k], r + 3, lab[k] - 3,
                r + 6);
        fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" class=\"lr-label\">%.3g</text>\n", r + 8, lab[k], q->lr);
    }
    /* the runs kept out of the plot, with their LRs */
    double ly = bot + 27;
    for (int kind = 0; kind < 2; kind++) {
        char line[512];
        size_t len = 0;
        for (int i = s->first; i < s->end && len < sizeof line; i++) {
            const Row *q = &rs->rows[i];
            if (kind ? !q->diverged : !q->collapsed) continue;
            len += (size_t)snprintf(line + len, sizeof line - len, "%slr %g (%.1f%%)", len ? ", " : "", q->lr,
                                    100 * q->acc);
        }
        if (!len) continue;
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" class=\"small-note\">%s: %s</text>\n", l - SL + 4, ly,
                kind ? "diverged" : "collapsed", line);
        ly += 12;
    }
    fprintf(f, "</g>\n");
}

/* One architecture's panel (rows [a, b)), its top at y = top. */
static void svg_panel(FILE *f, const Rows *rs, int a, int b, double top)
{
    StratStats st[64];
    int ns = report_strat_stats(rs, a, b, st, 64);
    Axis x, y;
    double ystep;
    make_axes(rs, a, b, &x, &y, &ystep);
    fprintf(f, "<g class=\"panel\" transform=\"translate(0,%.0f)\">\n", top);
    svg_title(f, rs, a, b);
    svg_combined(f, rs, a, b, st, ns, &x, &y, ystep);
    svg_legend(f, st, ns);
    fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"label-left\">Each strategy alone, on the same axes (its runs "
               "labelled with their learning rate; the others' in grey)</text>\n", PL, SMALL_TOP - 8);
    for (int k = 0; k < ns; k++)
        svg_small(f, rs, a, b, &st[k], &x, &y, ystep, 8 + (k % COLS) * CELL_W, SMALL_TOP + (k / COLS) * CELL_H);
    fprintf(f, "</g>\n");
}

void report_svg(FILE *f, const Rows *rs)
{
    int h = 0;
    for (int a = 0; a < rs->n;) {
        int b = a;
        while (b < rs->n && !strcmp(rs->rows[b].arch, rs->rows[a].arch)) b++;
        StratStats st[64];
        h += panel_height(report_strat_stats(rs, a, b, st, 64));
        a = b;
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"Helvetica, Arial, sans-serif\">\n", SVG_W, h, SVG_W, h);
    fprintf(f, "<title>kiln compare: test accuracy against train time</title>\n"
               "<style>\n"
               "  .title { font-size: 15px; font-weight: bold; fill: #222222; }\n"
               "  .subtitle { font-size: 12px; fill: #444444; }\n"
               "  .label { font-size: 13px; fill: #222222; text-anchor: middle; }\n"
               "  .label-left { font-size: 12px; font-weight: bold; fill: #222222; }\n"
               "  .xtick { font-size: 11px; fill: #444444; text-anchor: middle; }\n"
               "  .ytick { font-size: 11px; fill: #444444; text-anchor: end; }\n"
               "  .xtick.small, .ytick.small { font-size: 9px; }\n"
               "  .strip-label { font-style: italic; }\n"
               "  .legend-title { font-size: 12px; font-weight: bold; fill: #222222; }\n"
               "  .legend-text { font-size: 12px; fill: #222222; }\n"
               "  .best-label { font-size: 11px; font-weight: bold; }\n"
               "  .small-title { font-size: 11px; font-weight: bold; }\n"
               "  .small-note { font-size: 9px; fill: #444444; }\n"
               "  .lr-label { font-size: 9px; fill: #222222; }\n"
               "  .plot { fill: #ffffff; stroke: none; }\n"
               "  .frame { fill: none; stroke: #bbbbbb; stroke-width: 0.8; }\n"
               "  .strip { fill: #f2f2f2; stroke: #bbbbbb; stroke-width: 0.8; stroke-dasharray: 3 3; }\n"
               "  .grid { stroke: #e3e3e3; stroke-width: 1; }\n"
               "  .minor { stroke: #f0f0f0; }\n"
               "  .axis { stroke: #444444; stroke-width: 1; }\n"
               "  .pareto { fill: none; stroke: #555555; stroke-width: 1.4; stroke-dasharray: 5 3; }\n"
               "  .ring { fill: none; stroke-width: 1.5; }\n"
               "  .leader { fill: none; stroke: #999999; stroke-width: 0.7; }\n"
               "  .context { fill: #d9d9d9; }\n"
               "</style>\n<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n");
    double top = 0;
    for (int a = 0; a < rs->n;) {
        int b = a;
        while (b < rs->n && !strcmp(rs->rows[b].arch, rs->rows[a].arch)) b++;
        StratStats st[64];
        int ns = report_strat_stats(rs, a, b, st, 64);
        svg_panel(f, rs, a, b, top);
        top += panel_height(ns);
        a = b;
    }
    fprintf(f, "</svg>\n");
}
