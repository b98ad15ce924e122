/* runtime/report/report.c — a compare folder's report written
 * (runtime/report/report.h report_build): results.csv, report.md with its
 * per-architecture tables and statistics, and scatter.svg (drawn by
 * report_svg.c), each atomically, from the rows runs.c reads.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/dataset.h"
#include "runtime/files.h"
#include "runtime/report/report.h"

const char *const report_csv_columns[CSV_COLS] = {
    "arch", "strategy", "trial", "lr", "batch", "test_acc", "train_seconds", "epochs", "diverged", "run",
    "phase_epochs", "input_size", "max_epochs", "patience", "per_class", "options", "train_images",
    "val_images", "test_images", "classes", "data"};

/* ---- atomic files -------------------------------------------------------------- */

/* Write DIR/NAME atomically (kiln_write_atomic) with fill; 0, or -1 with the
 * message printed. */
static int write_file(const char *dir, const char *name, int (*fill)(FILE *f, void *ctx), void *ctx)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (kiln_write_atomic(path, fill, ctx)) {
        fprintf(stderr, "kiln report: cannot write %s: %s\n", path, strerror(errno));
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

/* results.csv's text for the rows ctx (const Rows *). */
static int fill_csv(FILE *f, void *ctx)
{
    const Rows *rs = ctx;
    for (int k = 0; k < CSV_COLS; k++) fprintf(f, "%s%s", k ? "," : "", report_csv_columns[k]);
    fputc('\n', f);
    for (int i = 0; i < rs->n; i++) {
        const Row *r = &rs->rows[i];
        csv_field(f, r->arch);
        fputc(',', f);
        csv_field(f, r->strategy);
        fprintf(f, ",%d,%.7g,%d,%.6f,%.3f,%d,%s,", r->trial, r->lr, r->batch, r->acc, r->secs, r->epochs,
                r->diverged ? "true" : "false");
        csv_field(f, r->run);
        fputc(',', f);
        if (strchr(r->epochs_text, '+')) fputs(r->epochs_text, f);
        fputc(',', f);
        if (r->input_h) fprintf(f, "%dx%d", r->input_h, r->input_w);
        fputc(',', f);
        if (r->max_epochs) fprintf(f, "%d", r->max_epochs);
        fputc(',', f);
        if (r->patience >= 0) fprintf(f, "%d", r->patience);
        fputc(',', f);
        if (r->per_class >= 0) fprintf(f, "%d", r->per_class);
        fputc(',', f);
        csv_field(f, r->options);
        const int counts[4] = {r->n_train, r->n_val, r->n_test, r->classes};
        for (int k = 0; k < 4; k++) {
            fputc(',', f);
            if (counts[k]) fprintf(f, "%d", counts[k]);
        }
        fputc(',', f);
        csv_field(f, r->data);
        fputc('\n', f);
    }
    return 0;
}

/* ---- per-architecture statistics ------------------------------------------------- */

int report_strat_stats(const Rows *rs, int a, int b, StratStats *out, int max)
{
    int ns = 0;
    for (int i = a; i < b;) {
        int j = i;
        while (j < b && !strcmp(rs->rows[j].strategy, rs->rows[i].strategy)) j++;
        if (ns == max) break;
        StratStats *s = &out[ns++];
        memset(s, 0, sizeof *s);
        s->name = rs->rows[i].strategy;
        s->kind = rs->rows[i].kind;
        s->best = -1;
        s->first = i;
        s->end = j;
        int m = 0;
        double sa = 0, ss = 0;
        for (int k = i; k < j; k++) {
            const Row *r = &rs->rows[k];
            s->n++;
            if (r->diverged) { s->n_div++; continue; }
            s->n_col += r->collapsed;
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

int report_pareto(const Rows *rs, int a, int b, int *idx)
{
    int n = 0;
    for (int i = a; i < b; i++)
        if (!rs->rows[i].diverged && !rs->rows[i].collapsed) idx[n++] = i;
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

/* n with thousands separated by commas ("2,670"). */
static void fmt_count(char *buf, size_t n, int v)
{
    if (v >= 1000000) snprintf(buf, n, "%d,%03d,%03d", v / 1000000, v / 1000 % 1000, v % 1000);
    else if (v >= 1000) snprintf(buf, n, "%d,%03d", v / 1000, v % 1000);
    else snprintf(buf, n, "%d", v);
}

void report_input_text(char *buf, size_t n, const Row *r)
{
    if (r->input_h) snprintf(buf, n, "%dx%d", r->input_h, r->input_w);
    else snprintf(buf, n, "?");
}

void report_split_text(char *buf, size_t n, const Row *r)
{
    char a[16], b[16], c[16];
    if (!r->n_test) { snprintf(buf, n, "?"); return; }
    fmt_count(a, sizeof a, r->n_train);
    fmt_count(b, sizeof b, r->n_val);
    fmt_count(c, sizeof c, r->n_test);
    snprintf(buf, n, "%s train / %s val / %s test", a, b, c);
}

void report_data_name(char *buf, size_t n, const char *data)
{
    const char *colon = strchr(data, ':'), *slash = strrchr(data, '/');
    if (!data[0]) snprintf(buf, n, "?");
    else if (colon && (!slash || colon < slash)) snprintf(buf, n, "%.*s", (int)(colon - data), data);
    else {
        const char *base = slash ? slash + 1 : data;
        snprintf(buf, n, "%.*s", (int)strcspn(base, "."), base);
    }
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

/* One setting of a row as text (which: 0 input, 1 epochs, 2 patience, 3
 * batch, 4 LR, 5 options, 6 split). */
static void setting_text(char *buf, size_t n, const Row *r, int which)
{
    switch (which) {
    case 0: report_input_text(buf, n, r); break;
    case 1: if (r->max_epochs) snprintf(buf, n, "%d", r->max_epochs); else snprintf(buf, n, "?"); break;
    case 2: if (r->patience >= 0) snprintf(buf, n, "%d", r->patience); else snprintf(buf, n, "?"); break;
    case 3: snprintf(buf, n, "%d", r->batch); break;
    case 4: snprintf(buf, n, "%g", r->lr); break;
    case 5: snprintf(buf, n, "%s", r->options[0] ? r->options : "—"); break;
    default: report_split_text(buf, n, r); break;
    }
}

/* The distinct values of one setting over rows [a, b), in first-seen order,
 * comma-separated, as a table cell. */
static void settings_cell(FILE *f, const Rows *rs, int a, int b, int which)
{
    char seen[1024] = "", v[300];
    size_t len = 0;
    for (int i = a; i < b; i++) {
        setting_text(v, sizeof v, &rs->rows[i], which);
        int dup = 0;
        for (int j = a; j < i && !dup; j++) {
            char w[300];
            setting_text(w, sizeof w, &rs->rows[j], which);
            dup = !strcmp(v, w);
        }
        if (!dup && len < sizeof seen) len += (size_t)snprintf(seen + len, sizeof seen - len, "%s%s", len ? ", " : "", v);
    }
    fputc(' ', f);
    md_cell(f, seen);
    fputs(" |", f);
}

/* The two result tables, the settings table and the Pareto line of one
 * architecture (rows [a, b)). */
static void md_arch(FILE *f, const Rows *rs, int a, int b)
{
    StratStats st[64];
    int *front = malloc(sizeof(int) * (size_t)(b - a));
    int ns = report_strat_stats(rs, a, b, st, 64);
    double top_mean = -1, top_best = -1;
    for (int k = 0; k < ns; k++) {
        if (st[k].n > st[k].n_div && st[k].mean_acc > top_mean) top_mean = st[k].mean_acc;
        if (st[k].best >= 0 && rs->rows[st[k].best].acc > top_best) top_best = rs->rows[st[k].best].acc;
    }
    fprintf(f, "\n## ");
    md_cell(f, rs->rows[a].arch);
    fprintf(f, "\n\n### Mean over trials\n\n"
               "| Strategy | Trials | Diverged | Collapsed | Mean test accuracy | SD | Mean train time (s) |\n"
               "|---|---:|---:|---:|---:|---:|---:|\n");
    char t1[32], t2[32];
    for (int k = 0; k < ns; k++) {
        fprintf(f, "| ");
        md_cell(f, st[k].name);
        fprintf(f, " | %d | %d | %d | ", st[k].n, st[k].n_div, st[k].n_col);
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
    fprintf(f, "\n### Settings\n\n"
               "The values each strategy's runs used (each value once, in trial order). Options: the training "
               "options given to the compare that apply to the strategy (`?` where a run did not record them).\n\n"
               "| Strategy | Input | Max epochs a phase | Patience | Batch | LR | Options | Images |\n"
               "|---|---|---:|---:|---|---|---|---|\n");
    for (int k = 0; k < ns; k++) {
        fprintf(f, "| ");
        md_cell(f, st[k].name);
        fprintf(f, " |");
        for (int w = 0; w < 7; w++) settings_cell(f, rs, st[k].first, st[k].end, w);
        fputc('\n', f);
    }
    int nf = front ? report_pareto(rs, a, b, front) : 0;
    if (nf) {
        fprintf(f, "\nPareto front (no other run is both faster and more accurate; collapsed runs left out): ");
        for (int k = 0; k < nf; k++) {
            const Row *r = &rs->rows[front[k]];
            fmt_secs(t2, sizeof t2, r->secs);
            fprintf(f, "%s", k ? " → " : "");
            md_cell(f, r->strategy);
            fprintf(f, " trial %d (%.2f%%, %s s)", r->trial, 100 * r->acc, t2);
        }
        fprintf(f, ".\n");
    }
    free(front);
}

/* What report.md is drawn from. */
typedef struct { const char *dir; const Rows *rs; int from_csv; } MdInput;

/* report.md's text for ctx (const MdInput *). */
static int fill_md(FILE *f, void *ctx)
{
    const MdInput *in = ctx;
    const char *dir = in->dir;
    const Rows *rs = in->rs;
    int from_csv = in->from_csv;
    int ndiv = 0, ncol = 0, narch = 0;
    for (int i = 0; i < rs->n; i++) {
        ndiv += rs->rows[i].diverged;
        ncol += rs->rows[i].collapsed;
        narch += !i || strcmp(rs->rows[i].arch, rs->rows[i - 1].arch);
    }
    fprintf(f, "# Transfer strategies compared\n\n");
    fprintf(f, "%d run%s (%d diverged, %d collapsed) of %d architecture%s, %s by `kiln report` from `", rs->n,
            rs->n == 1 ? "" : "s", ndiv, ncol, narch, narch == 1 ? "" : "s", from_csv ? "drawn" : "merged");
    md_cell(f, dir);
    fprintf(f, "%s`.\nData:", from_csv ? "/results.csv" : "");
    for (int i = 0; i < rs->n; i++) {
        int seen = !rs->rows[i].data[0];
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
               "and listed in `results.csv`. A run that did not diverge but ended near chance (below chance "
               "plus a tenth of the way to 100%%: 19%% for 10 classes) is counted as collapsed; it is in the "
               "means, but not on the Pareto front, and the plot shows it apart.\n\n"
               "![test accuracy against train time](scatter.svg)\n");
    for (int a = 0; a < rs->n;) {
        int b = a;
        while (b < rs->n && !strcmp(rs->rows[b].arch, rs->rows[a].arch)) b++;
        md_arch(f, rs, a, b);
        a = b;
    }
    return 0;
}

/* scatter.svg's text for the rows ctx (const Rows *): report_svg.c. */
static int fill_svg(FILE *f, void *ctx)
{
    report_svg(f, ctx);
    return 0;
}

/* ---- the report ------------------------------------------------------------------- */

int report_build(const char *dir)
{
    Rows rs;
    int from_csv;
    int rc = report_read(&rs, dir, &from_csv);
    if (rc) return rc;
    MdInput md = {dir, &rs, from_csv};
    int bad = write_file(dir, "results.csv", fill_csv, &rs) | write_file(dir, "report.md", fill_md, &md) |
              write_file(dir, "scatter.svg", fill_svg, &rs);
    if (!bad) {
        int ndiv = 0, ncol = 0;
        for (int i = 0; i < rs.n; i++) {
            ndiv += rs.rows[i].diverged;
            ncol += rs.rows[i].collapsed;
        }
        printf("report: %d run%s (%d diverged, %d collapsed, %d skipped)%s -> %s/results.csv, %s/report.md, "
               "%s/scatter.svg\n", rs.n, rs.n == 1 ? "" : "s", ndiv, ncol, rs.skipped,
               from_csv ? " from results.csv" : "", dir, dir, dir);
    }
    free(rs.rows);
    return bad ? 1 : 0;
}
