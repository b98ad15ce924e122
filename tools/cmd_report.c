/* tools/cmd_report.c — `kiln report DIR`: merge the runs of a compare folder
 * (every summary.json below DIR, with its config.json and, for compare's trials,
 * trial.json) into
 *
 *   DIR/results.csv  one row per run: arch, strategy, trial, lr, batch,
 *                    test_acc, train_seconds, epochs, diverged, run (folder)
 *   DIR/report.md    per architecture the reference article's two tables:
 *                    mean test accuracy and mean train time per strategy
 *                    (over trials that did not diverge; diverged counted),
 *                    and the best trial's accuracy with its train time
 *   DIR/scatter.svg  one panel per architecture: test accuracy against train
 *                    time (log scale when the times span more than 10x), one
 *                    marker shape and colour per strategy, a legend, diverged
 *                    trials as hollow markers in a strip of their own below
 *                    the plot, and the Pareto front (the best accuracy reached
 *                    within each time) as a step line
 *
 * Every file is written atomically (temporary file, fsync, rename), so a
 * report being rewritten by another machine's `compare --trial` is never
 * half read. Runs whose files do not parse are skipped with a warning naming
 * the file. Strategies keep kiln's order (random first, auto last).
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "datasets/dataset.h"
#include "runtime/strategy.h"
#include "tools/cmds.h"

typedef struct {
    char arch[KILN_NAME_MAX];
    char strategy[32];
    int order;                  /* strategy's enum value, STRAT_COUNT if unknown */
    int trial;                  /* -1 until known */
    double lr;
    int batch;
    double acc, secs;
    int epochs;
    char epochs_text[24];       /* "12", or "12+8" for two phases */
    int diverged;
    char run[512];              /* folder relative to DIR */
    char data[512];
} Row;

typedef struct {
    Row *rows;
    int n, cap;
    int skipped;
} Rows;

/* ---- reading the runs ---------------------------------------------------------- */

/* A JSON file, or NULL. */
static json_t *load_json(const char *dir, const char *name)
{
    char path[1200];
    json_error_t je;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return json_load_file(path, 0, &je);
}

/* Read one run folder into a new row; 0, or -1 (warned) when its summary
 * does not parse or lacks a field the report needs. */
static int read_run(Rows *rs, const char *dir, const char *rel)
{
    json_t *s = load_json(dir, "summary.json");
    json_t *c = load_json(dir, "config.json"), *t = load_json(dir, "trial.json");
    json_t *arch = json_object_get(s, "arch"), *strat = json_object_get(s, "strategy");
    json_t *acc = json_object_get(s, "test_acc"), *secs = json_object_get(s, "train_seconds");
    int rc = -1;
    if (!json_is_string(arch) || !json_is_string(strat) || !json_is_number(acc) || !json_is_number(secs)) {
        fprintf(stderr, "kiln report: %s/summary.json: not a kiln run summary (needs arch, strategy, test_acc, "
                "train_seconds); skipped\n", dir);
        rs->skipped++;
        goto out;
    }
    if (rs->n == rs->cap) {
        int cap = rs->cap ? 2 * rs->cap : 64;
        Row *r = realloc(rs->rows, sizeof(Row) * (size_t)cap);
        if (!r) goto out;
        rs->rows = r;
        rs->cap = cap;
    }
    Row *r = &rs->rows[rs->n];
    memset(r, 0, sizeof *r);
    snprintf(r->arch, sizeof r->arch, "%s", json_string_value(arch));
    snprintf(r->strategy, sizeof r->strategy, "%s", json_string_value(strat));
    int k = strategy_parse(r->strategy);
    r->order = k < 0 ? STRAT_COUNT : k;
    r->acc = json_number_value(acc);
    r->secs = json_number_value(secs);
    json_t *lr = json_object_get(s, "lr"), *b = json_object_get(s, "batch");
    /* the grid's LR where compare recorded one (run_train's summary holds the
     * last phase's: a tenth of it for freeze-finetune), else the summary's */
    json_t *tlr = json_object_get(t, "lr");
    r->lr = json_is_number(tlr) ? json_number_value(tlr)
          : json_is_number(lr) ? json_number_value(lr) : json_number_value(json_object_get(c, "lr"));
    r->batch = (int)(json_is_integer(b) ? json_integer_value(b) : json_integer_value(json_object_get(c, "batch")));
    r->diverged = json_is_true(json_object_get(s, "diverged"));
    json_t *ph = json_object_get(s, "phases");
    size_t np = json_array_size(ph);
    for (size_t i = 0; i < np; i++) {
        int e = (int)json_integer_value(json_object_get(json_array_get(ph, i), "epochs"));
        size_t len = strlen(r->epochs_text);
        snprintf(r->epochs_text + len, sizeof r->epochs_text - len, "%s%d", i ? "+" : "", e);
        r->epochs += e;
    }
    if (!np) snprintf(r->epochs_text, sizeof r->epochs_text, "?");
    json_t *d = json_object_get(s, "data");
    snprintf(r->data, sizeof r->data, "%s", json_is_string(d) ? json_string_value(d) : "?");
    snprintf(r->run, sizeof r->run, "%s", rel[0] ? rel : ".");
    r->trial = -1;
    json_t *tk = json_object_get(t, "trial");
    const char *leaf = strrchr(rel, '/');
    leaf = leaf ? leaf + 1 : rel;
    if (json_is_integer(tk)) r->trial = (int)json_integer_value(tk);
    else if (sscanf(leaf, "trial-%d", &r->trial) != 1) r->trial = -1;
    rs->n++;
    rc = 0;
out:
    json_decref(s);
    json_decref(c);
    json_decref(t);
    return rc;
}

/* Walk dir (rel: its path below DIR) for run folders; symbolic links are
 * not followed, depth is bounded. */
static void walk(Rows *rs, const char *dir, const char *rel, int depth)
{
    char path[1200];
    struct stat st;
    if (snprintf(path, sizeof path, "%s/summary.json", dir) >= (int)sizeof path) return;   /* too deep a path */
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) read_run(rs, dir, rel);
    if (depth >= 8) return;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char **names = NULL;
    int n = 0, cap = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) continue;
        if (lstat(path, &st) || !S_ISDIR(st.st_mode)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(names, sizeof(char *) * (size_t)cap);
            if (!nn) break;
            names = nn;
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        char sub[1200], subrel[600];
        if (snprintf(sub, sizeof sub, "%s/%s", dir, names[i]) < (int)sizeof sub &&
            snprintf(subrel, sizeof subrel, "%s%s%s", rel, rel[0] ? "/" : "", names[i]) < (int)sizeof subrel)
            walk(rs, sub, subrel, depth + 1);
        free(names[i]);
    }
    free(names);
}

/* Order: arch, strategy (kiln's order, then by name), trial, folder. */
static int row_cmp(const void *pa, const void *pb)
{
    const Row *a = pa, *b = pb;
    int c = strcmp(a->arch, b->arch);
    if (c) return c;
    if (a->order != b->order) return a->order - b->order;
    if ((c = strcmp(a->strategy, b->strategy))) return c;
    if (a->trial != b->trial) return a->trial - b->trial;
    return strcmp(a->run, b->run);
}

/* Runs without a trial number (not made by compare) get the next free one in
 * their (arch, strategy); rows must be sorted, and are sorted again. */
static void number_trials(Rows *rs)
{
    for (int i = 0; i < rs->n; i++) {
        if (rs->rows[i].trial >= 0) continue;
        int next = 0;
        for (int j = 0; j < rs->n; j++)
            if (!strcmp(rs->rows[j].arch, rs->rows[i].arch) && !strcmp(rs->rows[j].strategy, rs->rows[i].strategy) &&
                rs->rows[j].trial >= next)
                next = rs->rows[j].trial + 1;
        rs->rows[i].trial = next;
    }
    qsort(rs->rows, (size_t)rs->n, sizeof(Row), row_cmp);
}

/* ---- atomic files -------------------------------------------------------------- */

typedef struct { FILE *f; char path[1200], tmp[1300]; } OutFile;

/* Open DIR/NAME's temporary twin for writing; 0, or -1 (message printed). */
static int out_open(OutFile *o, const char *dir, const char *name)
{
    snprintf(o->path, sizeof o->path, "%s/%s", dir, name);
    snprintf(o->tmp, sizeof o->tmp, "%s.tmp.%ld", o->path, (long)getpid());
    if (!(o->f = fopen(o->tmp, "w"))) {
        fprintf(stderr, "kiln report: %s: %s\n", o->tmp, strerror(errno));
        return -1;
    }
    return 0;
}

/* Flush, fsync and rename into place; 0, or -1 (message printed, temp removed). */
static int out_commit(OutFile *o)
{
    int bad = ferror(o->f) || fflush(o->f) != 0 || fsync(fileno(o->f)) != 0;
    bad |= fclose(o->f) != 0;
    if (bad || rename(o->tmp, o->path)) {
        fprintf(stderr, "kiln report: cannot write %s: %s\n", o->path, strerror(errno));
        unlink(o->tmp);
        return -1;
    }
    return 0;
}

/* ---- results.csv ----------------------------------------------------------------- */

/* A CSV field, quoted when it holds a comma, quote or line break. */
static void csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) { fputs(s, f); return; }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* Write DIR/results.csv; 0 or -1. */
static int write_csv(const char *dir, const Rows *rs)
{
    OutFile o;
    if (out_open(&o, dir, "results.csv")) return -1;
    fprintf(o.f, "arch,strategy,trial,lr,batch,test_acc,train_seconds,epochs,diverged,run\n");
    for (int i = 0; i < rs->n; i++) {
        const Row *r = &rs->rows[i];
        csv_field(o.f, r->arch);
        fputc(',', o.f);
        csv_field(o.f, r->strategy);
        fprintf(o.f, ",%d,%.7g,%d,%.6f,%.3f,%d,%s,", r->trial, r->lr, r->batch, r->acc, r->secs, r->epochs,
                r->diverged ? "true" : "false");
        csv_field(o.f, r->run);
        fputc('\n', o.f);
    }
    return out_commit(&o);
}

/* ---- per-architecture statistics ------------------------------------------------- */

typedef struct {
    const char *name;
    int order;
    int n, n_div;               /* trials, of which diverged */
    double mean_acc, sd_acc, mean_secs;
    int best;                   /* row index of the best non-diverged trial, or -1 */
} StratStats;

/* Statistics of the strategies of rows [a, b) (one arch, sorted); returns
 * how many strategies, at most max. */
static int strat_stats(const Rows *rs, int a, int b, StratStats *out, int max)
{
    int ns = 0;
    for (int i = a; i < b;) {
        int j = i;
        while (j < b && !strcmp(rs->rows[j].strategy, rs->rows[i].strategy)) j++;
        if (ns == max) break;
        StratStats *s = &out[ns++];
        memset(s, 0, sizeof *s);
        s->name = rs->rows[i].strategy;
        s->order = rs->rows[i].order;
        s->best = -1;
        int m = 0;
        double sa = 0, ss = 0;
        for (int k = i; k < j; k++) {
            const Row *r = &rs->rows[k];
            s->n++;
            if (r->diverged) { s->n_div++; continue; }
            m++;
            sa += r->acc;
            ss += r->secs;
            if (s->best < 0 || r->acc > rs->rows[s->best].acc ||
                (r->acc == rs->rows[s->best].acc && r->secs < rs->rows[s->best].secs))
                s->best = k;
        }
        if (m) {
            s->mean_acc = sa / m;
            s->mean_secs = ss / m;
            double v = 0;
            for (int k = i; k < j; k++)
                if (!rs->rows[k].diverged) v += (rs->rows[k].acc - s->mean_acc) * (rs->rows[k].acc - s->mean_acc);
            s->sd_acc = m > 1 ? sqrt(v / (m - 1)) : 0;
        }
        i = j;
    }
    return ns;
}

/* The Pareto front of rows [a, b): non-diverged runs that no other run beats
 * on accuracy without taking longer. Fills idx in increasing time (and
 * accuracy); returns the count. */
static int pareto(const Rows *rs, int a, int b, int *idx)
{
    int n = 0;
    for (int i = a; i < b; i++)
        if (!rs->rows[i].diverged) idx[n++] = i;
    for (int i = 1; i < n; i++)                   /* insertion sort by time, then accuracy descending */
        for (int j = i; j > 0; j--) {
            const Row *x = &rs->rows[idx[j - 1]], *y = &rs->rows[idx[j]];
            if (x->secs < y->secs || (x->secs == y->secs && x->acc >= y->acc)) break;
            int t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t;
        }
    int m = 0;
    double best = -1;
    for (int i = 0; i < n; i++)
        if (rs->rows[idx[i]].acc > best) { best = rs->rows[idx[i]].acc; idx[m++] = idx[i]; }
    return m;
}

/* ---- report.md -------------------------------------------------------------------- */

/* A table cell or code span of text from the runs (paths, data specs):
 * control bytes and invalid UTF-8 escaped (dataset_escape), '|' escaped. */
static void md_cell(FILE *f, const char *s)
{
    char esc[4096];
    dataset_escape(esc, sizeof esc, s, strlen(s));
    for (const char *p = esc; *p; p++) {
        if (*p == '|') fputc('\\', f);
        fputc(*p, f);
    }
}

/* Seconds as the tables show them. */
static void fmt_secs(char *buf, size_t n, double s)
{
    if (s < 10) snprintf(buf, n, "%.2f", s);
    else if (s < 1000) snprintf(buf, n, "%.1f", s);
    else snprintf(buf, n, "%.0f", s);
}

/* Write DIR/report.md; 0 or -1. */
static int write_md(const char *dir, const Rows *rs)
{
    OutFile o;
    if (out_open(&o, dir, "report.md")) return -1;
    FILE *f = o.f;
    int ndiv = 0, narch = 0;
    for (int i = 0; i < rs->n; i++) {
        ndiv += rs->rows[i].diverged;
        narch += !i || strcmp(rs->rows[i].arch, rs->rows[i - 1].arch);
    }
    fprintf(f, "# Transfer strategies compared\n\n");
    fprintf(f, "%d run%s (%d diverged) of %d architecture%s, merged by `kiln report` from `", rs->n,
            rs->n == 1 ? "" : "s", ndiv, narch, narch == 1 ? "" : "s");
    md_cell(f, dir);
    fprintf(f, "`.\nData:");
    for (int i = 0; i < rs->n; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = !strcmp(rs->rows[j].data, rs->rows[i].data);
        if (seen) continue;
        fprintf(f, " `");
        md_cell(f, rs->rows[i].data);
        fprintf(f, "`");
    }
    fprintf(f, ".\n\nTest accuracy is measured once per run, on the held-out test split (the source's own test set where it has one, else a stratified 10%%), "
               "with the weights of the best validation epoch. Train time is the training loop's wall clock "
               "(validation and feature caching included; loading and planning apart). Means and the best "
               "trial count only runs that did not diverge; diverged runs are counted in their own column "
               "and listed in `results.csv`.\n\n![test accuracy against train time](scatter.svg)\n");

    StratStats st[64];
    int front[4096];
    for (int a = 0; a < rs->n;) {
        int b = a;
        while (b < rs->n && !strcmp(rs->rows[b].arch, rs->rows[a].arch)) b++;
        int ns = strat_stats(rs, a, b, st, 64);
        double top_mean = -1, top_best = -1;
        for (int k = 0; k < ns; k++) {
            if (st[k].n > st[k].n_div && st[k].mean_acc > top_mean) top_mean = st[k].mean_acc;
            if (st[k].best >= 0 && rs->rows[st[k].best].acc > top_best) top_best = rs->rows[st[k].best].acc;
        }
        fprintf(f, "\n## ");
        md_cell(f, rs->rows[a].arch);
        fprintf(f, "\n\n### Mean over trials\n\n"
                   "| Strategy | Trials | Diverged | Mean test accuracy | SD | Mean train time (s) |\n"
                   "|---|---:|---:|---:|---:|---:|\n");
        char t1[32], t2[32];
        for (int k = 0; k < ns; k++) {
            fprintf(f, "| ");
            md_cell(f, st[k].name);
            fprintf(f, " | %d | %d | ", st[k].n, st[k].n_div);
            if (st[k].n == st[k].n_div) {
                fprintf(f, "— (all diverged) | — | — |\n");
                continue;
            }
            int top = st[k].mean_acc == top_mean;
            fmt_secs(t1, sizeof t1, st[k].mean_secs);
            fprintf(f, "%s%.2f%%%s | ", top ? "**" : "", 100 * st[k].mean_acc, top ? "**" : "");
            if (st[k].n - st[k].n_div > 1) fprintf(f, "%.2f | %s |\n", 100 * st[k].sd_acc, t1);
            else fprintf(f, "— | %s |\n", t1);
        }
        fprintf(f, "\n### Best trial\n\n"
                   "| Strategy | Best test accuracy | Its train time (s) | Trial | LR | Batch | Epochs |\n"
                   "|---|---:|---:|---:|---:|---:|---:|\n");
        for (int k = 0; k < ns; k++) {
            fprintf(f, "| ");
            md_cell(f, st[k].name);
            if (st[k].best < 0) {
                fprintf(f, " | — (all %d diverged) | — | — | — | — | — |\n", st[k].n);
                continue;
            }
            const Row *r = &rs->rows[st[k].best];
            int top = r->acc == top_best;
            fmt_secs(t1, sizeof t1, r->secs);
            fprintf(f, " | %s%.2f%%%s | %s | %d | %g | %d | %s |\n", top ? "**" : "", 100 * r->acc, top ? "**" : "",
                    t1, r->trial, r->lr, r->batch, r->epochs_text);
        }
        int nf = b - a <= 4096 ? pareto(rs, a, b, front) : 0;
        if (nf) {
            fprintf(f, "\nPareto front (no other run is both faster and more accurate): ");
            for (int k = 0; k < nf; k++) {
                const Row *r = &rs->rows[front[k]];
                fmt_secs(t2, sizeof t2, r->secs);
                fprintf(f, "%s", k ? " → " : "");
                md_cell(f, r->strategy);
                fprintf(f, " trial %d (%.2f%%, %s s)", r->trial, 100 * r->acc, t2);
            }
            fprintf(f, ".\n");
        }
        a = b;
    }
    return out_commit(&o);
}

/* ---- scatter.svg ------------------------------------------------------------------- */

/* Colour and marker of strategy `order` (kiln's enum order; unknown ones
 * share the last entry). Colours: the Okabe-Ito palette, distinguishable
 * with the common colour-vision deficiencies, plus grey for `random`. */
static const char *const COLOURS[STRAT_COUNT + 1] = {
    "#7f7f7f", "#e69f00", "#56b4e9", "#009e73", "#cc79a7", "#d55e00", "#0072b2", "#000000", "#999933"};
typedef enum { MK_CIRCLE, MK_SQUARE, MK_TRIANGLE, MK_DIAMOND, MK_TRIANGLE_DOWN, MK_HEXAGON, MK_STAR, MK_PLUS } Marker;
static const Marker MARKERS[STRAT_COUNT + 1] = {
    MK_CIRCLE, MK_SQUARE, MK_TRIANGLE, MK_DIAMOND, MK_TRIANGLE_DOWN, MK_HEXAGON, MK_STAR, MK_PLUS, MK_CIRCLE};

/* XML text with &, <, >, " and ' escaped. */
static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
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

#define PANEL_W 860
#define PANEL_H 410
#define PL 72                    /* plot area: left, right, top, bottom edges within a panel */
#define PR (PANEL_W - 260)
#define PT 52
#define PB (PANEL_H - 92)
#define STRIP_H 26               /* the diverged strip below the plot area */

/* One architecture's panel, its top at y = top. Rows [a, b). */
static void svg_panel(FILE *f, const Rows *rs, int a, int b, double top)
{
    StratStats st[64];
    int ns = strat_stats(rs, a, b, st, 64), ndiv = 0;
    double tmin = INFINITY, tmax = 0, amin = INFINITY, amax = -INFINITY;
    for (int i = a; i < b; i++) {
        const Row *r = &rs->rows[i];
        if (r->secs > 0) { tmin = fmin(tmin, r->secs); tmax = fmax(tmax, r->secs); }
        if (r->diverged) { ndiv++; continue; }
        amin = fmin(amin, 100 * r->acc);
        amax = fmax(amax, 100 * r->acc);
    }
    if (!isfinite(tmin)) { tmin = 0.1; tmax = 1; }
    if (!isfinite(amin)) { amin = 0; amax = 100; }

    /* x: seconds, log10 when the range spans more than 10x */
    Axis x = {0, 0, tmax / tmin > 10, PL, PR};
    if (x.log) {
        double l0 = log10(tmin), l1 = log10(tmax), pad = 0.06 * (l1 - l0);
        x.lo = pow(10, l0 - pad);
        x.hi = pow(10, l1 + pad);
    } else {
        double span = tmax - tmin, pad = span > 0 ? 0.08 * span : 0.25 * tmax;
        double step = nice_step(span + 2 * pad, 5);
        x.lo = fmax(0, floor((tmin - pad) / step) * step);
        x.hi = ceil((tmax + pad) / step) * step;
        if (x.hi <= x.lo) x.hi = x.lo + step;
    }
    /* y: accuracy in percent, padded, on nice ticks, within [0, 100] */
    double span = amax - amin;
    if (span < 2) {
        amin -= (2 - span) / 2;
        amax += (2 - span) / 2;
        if (amax > 100) { amin -= amax - 100; amax = 100; }
        span = 2;
    }
    double ystep = nice_step(span * 1.16, 5);
    Axis y = {fmax(0, floor((amin - 0.08 * span) / ystep) * ystep), fmin(100, ceil((amax + 0.08 * span) / ystep) * ystep),
              0, PB, PT + 10};   /* the top tick sits below the frame: markers at 100% stay inside */
    if (y.hi <= y.lo) y.hi = y.lo + ystep;

    fprintf(f, "<g class=\"panel\" transform=\"translate(0,%.0f)\">\n", top);
    fprintf(f, "<text x=\"%d\" y=\"30\" class=\"title\">", PL);
    xml_text(f, rs->rows[a].arch);
    fprintf(f, ": test accuracy against train time (%d run%s)</text>\n", b - a, b - a == 1 ? "" : "s");
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"plot\"/>\n", PL, PT, PR - PL, PB - PT);

    /* y grid, ticks, labels */
    char lab[32];
    for (double v = y.lo; v <= y.hi + ystep * 1e-6; v += ystep) {
        double py = ax_map(&y, v);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"grid\"/>", PL, py, PR, py);
        tick_label(lab, sizeof lab, v, ystep);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"axis\"/>", PL - 5, py, PL, py);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" class=\"ytick\">%s</text>\n", PL - 8, py + 4, lab);
    }
    /* x grid, ticks, labels (below the diverged strip) */
    double xb = PB + STRIP_H;
    if (x.log) {
        int d0 = (int)floor(log10(x.lo)), d1 = (int)ceil(log10(x.hi)), many = d1 - d0 > 3;
        for (int d = d0; d <= d1; d++)
            for (int m = 1; m <= 9; m++) {
                double v = m * pow(10, d);
                if (v < x.lo || v > x.hi) continue;
                double px = ax_map(&x, v);
                int major = m == 1, labelled = major || (!many && (m == 2 || m == 5));
                fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"%s\"/>", px, PT, px, PB,
                        major ? "grid" : "grid minor");
                fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" class=\"axis\"/>", px, xb, px,
                        xb + (labelled ? 5 : 3));
                if (labelled) {
                    snprintf(lab, sizeof lab, "%g", v);
                    fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" class=\"xtick\">%s</text>", px, xb + 18, lab);
                }
                fputc('\n', f);
            }
    } else {
        double step = nice_step(x.hi - x.lo, 5);
        for (double v = ceil(x.lo / step - 1e-9) * step; v <= x.hi + step * 1e-6; v += step) {
            double px = ax_map(&x, v);
            tick_label(lab, sizeof lab, v, step);
            fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"grid\"/>", px, PT, px, PB);
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" class=\"axis\"/>", px, xb, px, xb + 5);
            fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" class=\"xtick\">%s</text>\n", px, xb + 18, lab);
        }
    }
    /* the diverged strip, framed with the plot's axes */
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"strip\"/>\n", PL, PB, PR - PL, STRIP_H);
    fprintf(f, "<text x=\"%d\" y=\"%.1f\" class=\"ytick strip-label\">diverged</text>\n", PL - 8,
            PB + STRIP_H / 2.0 + 4);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%.0f\" class=\"axis\"/>", PL, PT, PL, xb);
    fprintf(f, "<line x1=\"%d\" y1=\"%.0f\" x2=\"%d\" y2=\"%.0f\" class=\"axis\"/>\n", PL, xb, PR, xb);
    fprintf(f, "<text x=\"%d\" y=\"%.0f\" class=\"label\">train time (s%s)</text>\n", (PL + PR) / 2, xb + 42,
            x.log ? ", log scale" : "");
    fprintf(f, "<text transform=\"translate(%d,%d) rotate(-90)\" class=\"label\">test accuracy (%%)</text>\n", 20,
            (PT + PB) / 2);

    /* the Pareto front: a step line, flat to the right edge after the last point */
    int front[4096], nf = b - a <= 4096 ? pareto(rs, a, b, front) : 0;
    if (nf) {
        fprintf(f, "<path class=\"pareto\" d=\"");
        for (int k = 0; k < nf; k++) {
            const Row *r = &rs->rows[front[k]];
            double px = ax_map(&x, fmax(r->secs, x.lo)), py = ax_map(&y, 100 * r->acc);
            if (k) fprintf(f, "H%.1f", px);
            fprintf(f, "%c%.1f,%.1f", k ? 'L' : 'M', px, py);
        }
        fprintf(f, "H%d\"/>\n", PR);
    }

    /* the runs: diverged ones hollow in the strip, the others by accuracy */
    for (int i = a; i < b; i++) {
        const Row *r = &rs->rows[i];
        int o = r->order > STRAT_COUNT ? STRAT_COUNT : r->order;
        double px = ax_map(&x, r->secs > 0 ? fmax(r->secs, x.lo) : x.lo);
        double py = r->diverged ? PB + STRIP_H / 2.0 : ax_map(&y, 100 * r->acc);
        fprintf(f, "<g class=\"marker%s\" data-strategy=\"", r->diverged ? " diverged" : "");
        xml_text(f, r->strategy);
        fprintf(f, "\" data-trial=\"%d\"><title>", r->trial);
        xml_text(f, r->strategy);
        fprintf(f, " trial %d: lr %g, batch %d, %s%.2f%%, %.2f s, %d epochs</title><path d=\"", r->trial, r->lr,
                r->batch, r->diverged ? "DIVERGED (last good weights) " : "", 100 * r->acc, r->secs, r->epochs);
        marker_path(f, MARKERS[o], px, py, 5.5);
        if (r->diverged)
            fprintf(f, "\" fill=\"#ffffff\" stroke=\"%s\" stroke-width=\"1.6\"/></g>\n", COLOURS[o]);
        else
            fprintf(f, "\" fill=\"%s\" fill-opacity=\"0.85\" stroke=\"#ffffff\" stroke-width=\"0.8\"/></g>\n",
                    COLOURS[o]);
    }

    /* the legend */
    double lx = PR + 22, ly = PT + 8;
    fprintf(f, "<g class=\"legend\">\n<text x=\"%.0f\" y=\"%.0f\" class=\"legend-title\">strategy (runs)</text>\n",
            lx, ly);
    ly += 20;
    for (int k = 0; k < ns; k++, ly += 20) {
        int o = st[k].order > STRAT_COUNT ? STRAT_COUNT : st[k].order;
        fprintf(f, "<path class=\"legend-marker\" d=\"");
        marker_path(f, MARKERS[o], lx + 6, ly - 4, 5.5);
        fprintf(f, "\" fill=\"%s\" stroke=\"#ffffff\" stroke-width=\"0.8\"/>", COLOURS[o]);
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" class=\"legend-text\">", lx + 18, ly);
        xml_text(f, st[k].name);
        if (st[k].n_div) fprintf(f, " (%d, %d diverged)</text>\n", st[k].n, st[k].n_div);
        else fprintf(f, " (%d)</text>\n", st[k].n);
    }
    ly += 6;
    fprintf(f, "<path class=\"pareto\" d=\"M%.0f,%.0fH%.0f\"/><text x=\"%.0f\" y=\"%.0f\" class=\"legend-text\">Pareto front</text>\n",
            lx - 2, ly - 4, lx + 14, lx + 18, ly);
    ly += 20;
    fprintf(f, "<path class=\"legend-marker\" d=\"");
    marker_path(f, MK_CIRCLE, lx + 6, ly - 4, 5.5);
    fprintf(f, "\" fill=\"#ffffff\" stroke=\"#555555\" stroke-width=\"1.6\"/><text x=\"%.0f\" y=\"%.0f\" class=\"legend-text\">diverged (%d), hollow,</text>\n",
            lx + 18, ly, ndiv);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" class=\"legend-text\">in the strip below</text>\n</g>\n</g>\n", lx + 18,
            ly + 15);
}

/* Write DIR/scatter.svg: one panel per architecture, stacked; 0 or -1. */
static int write_svg(const char *dir, const Rows *rs)
{
    int narch = 0;
    for (int i = 0; i < rs->n; i++) narch += !i || strcmp(rs->rows[i].arch, rs->rows[i - 1].arch);
    OutFile o;
    if (out_open(&o, dir, "scatter.svg")) return -1;
    FILE *f = o.f;
    int h = narch * PANEL_H;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"Helvetica, Arial, sans-serif\">\n", PANEL_W, h, PANEL_W, h);
    fprintf(f, "<title>kiln compare: test accuracy against train time</title>\n"
               "<style>\n"
               "  .title { font-size: 15px; font-weight: bold; fill: #222222; }\n"
               "  .label { font-size: 13px; fill: #222222; text-anchor: middle; }\n"
               "  .xtick { font-size: 11px; fill: #444444; text-anchor: middle; }\n"
               "  .ytick { font-size: 11px; fill: #444444; text-anchor: end; }\n"
               "  .strip-label { font-style: italic; }\n"
               "  .legend-title { font-size: 12px; font-weight: bold; fill: #222222; }\n"
               "  .legend-text { font-size: 12px; fill: #222222; }\n"
               "  .plot { fill: #ffffff; stroke: none; }\n"
               "  .strip { fill: #f2f2f2; stroke: #bbbbbb; stroke-width: 0.8; stroke-dasharray: 3 3; }\n"
               "  .grid { stroke: #e3e3e3; stroke-width: 1; }\n"
               "  .minor { stroke: #f0f0f0; }\n"
               "  .axis { stroke: #444444; stroke-width: 1; }\n"
               "  .pareto { fill: none; stroke: #555555; stroke-width: 1.4; stroke-dasharray: 5 3; }\n"
               "</style>\n<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n");
    int p = 0;
    for (int a = 0; a < rs->n; p++) {
        int b = a;
        while (b < rs->n && !strcmp(rs->rows[b].arch, rs->rows[a].arch)) b++;
        svg_panel(f, rs, a, b, (double)p * PANEL_H);
        a = b;
    }
    fprintf(f, "</svg>\n");
    return out_commit(&o);
}

/* ---- the command ------------------------------------------------------------------- */

/* Read every run below dir and write the three files (see the file comment). */
int report_build(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "kiln report: %s: not a folder\n", dir);
        return 2;
    }
    Rows rs = {0};
    walk(&rs, dir, "", 0);
    if (!rs.n) {
        fprintf(stderr, "kiln report: %s: no run folders (summary.json) below it%s\n", dir,
                rs.skipped ? " that parse" : "");
        free(rs.rows);
        return 2;
    }
    qsort(rs.rows, (size_t)rs.n, sizeof(Row), row_cmp);
    number_trials(&rs);
    int bad = write_csv(dir, &rs) | write_md(dir, &rs) | write_svg(dir, &rs);
    if (!bad) {
        int ndiv = 0;
        for (int i = 0; i < rs.n; i++) ndiv += rs.rows[i].diverged;
        printf("report: %d run%s (%d diverged, %d skipped) -> %s/results.csv, %s/report.md, %s/scatter.svg\n",
               rs.n, rs.n == 1 ? "" : "s", ndiv, rs.skipped, dir, dir, dir);
    }
    free(rs.rows);
    return bad ? 1 : 0;
}

/* `kiln report DIR`. */
int cmd_report(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: kiln report DIR\n  merge DIR/**/summary.json into DIR/results.csv, DIR/report.md and "
               "DIR/scatter.svg\n");
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: kiln report DIR\n");
        return 2;
    }
    return report_build(argv[1]);
}
