/* tools/kiln/cmd_report.c — `kiln report DIR`: merge the runs of a compare folder
 * (every summary.json below DIR, with its config.json and, for compare's trials,
 * trial.json) into
 *
 *   DIR/results.csv  one row per run: arch, strategy, trial, lr, batch,
 *                    test_acc, train_seconds, epochs, diverged, run (folder),
 *                    then the settings: phase_epochs, input_size, max_epochs,
 *                    patience, per_class, options, train/val/test_images,
 *                    classes, data (empty where a run did not record one)
 *   DIR/report.md    per architecture the reference article's two tables:
 *                    mean test accuracy and mean train time per strategy
 *                    (over trials that did not diverge; diverged and
 *                    collapsed counted), the best trial's accuracy with its
 *                    train time, and the settings of each strategy's runs
 *   DIR/scatter.svg  drawn by tools/report_svg.c
 *
 * A folder without run folders but with a results.csv (a published result)
 * is reported from that file, so its report.md and scatter.svg can be drawn
 * again. Strategies come in the order the compare asked for them
 * (DIR/compare.json, or the order of results.csv), else in kiln's order. A
 * run is collapsed when it did not diverge and its test accuracy is near
 * chance (report_collapse_limit).
 *
 * Every file is written atomically (temporary file, fsync, rename), so a
 * report being rewritten by another machine's `compare --trial` is never
 * half read. Runs whose files do not parse are skipped with a warning naming
 * the file; a results.csv that does not parse is refused naming its line.
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
#include "runtime/files.h"
#include "runtime/strategy.h"
#include "tools/kiln/cmds.h"
#include "tools/kiln/report.h"

/* ---- reading the runs ---------------------------------------------------------- */

/* A JSON file, or NULL. */
static json_t *load_json(const char *dir, const char *name)
{
    char path[1200];
    json_error_t je;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return json_load_file(path, 0, &je);
}

/* A new zeroed row with every setting unknown, or NULL when out of memory. */
static Row *new_row(Rows *rs)
{
    if (rs->n == rs->cap) {
        int cap = rs->cap ? 2 * rs->cap : 64;
        Row *r = realloc(rs->rows, sizeof(Row) * (size_t)cap);
        if (!r) return NULL;
        rs->rows = r;
        rs->cap = cap;
    }
    Row *r = &rs->rows[rs->n];
    memset(r, 0, sizeof *r);
    r->trial = -1;
    r->patience = -1;
    r->per_class = -1;
    snprintf(r->options, sizeof r->options, "?");
    return r;
}

/* The settings of a run from its config.json (c), summary.json (s) and
 * compare's trial.json (t), each possibly NULL. */
static void read_settings(Row *r, json_t *c, json_t *s, json_t *t)
{
    json_t *in = json_object_get(c, "input_size"), *im = json_object_get(s, "images");
    if (json_array_size(in) == 2) {
        r->input_h = (int)json_integer_value(json_array_get(in, 0));
        r->input_w = (int)json_integer_value(json_array_get(in, 1));
    }
    if (json_is_integer(json_object_get(c, "max_epochs"))) r->max_epochs = (int)json_integer_value(json_object_get(c, "max_epochs"));
    if (json_is_integer(json_object_get(c, "patience"))) r->patience = (int)json_integer_value(json_object_get(c, "patience"));
    if (json_is_integer(json_object_get(c, "per_class"))) r->per_class = (int)json_integer_value(json_object_get(c, "per_class"));
    r->n_train = (int)json_integer_value(json_object_get(im, "train"));
    r->n_val = (int)json_integer_value(json_object_get(im, "val"));
    r->n_test = (int)json_integer_value(json_object_get(im, "test"));
    r->classes = (int)json_integer_value(json_object_get(s, "num_classes"));
    json_t *opts = json_object_get(t, "options");
    if (json_is_array(opts)) {
        size_t len = 0;
        r->options[0] = 0;
        for (size_t i = 0; i < json_array_size(opts) && len < sizeof r->options; i++)
            len += (size_t)snprintf(r->options + len, sizeof r->options - len, "%s%s", i ? " " : "",
                                    json_string_value(json_array_get(opts, i)));
    }
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
    Row *r;
    if (!json_is_string(arch) || !json_is_string(strat) || !json_is_number(acc) || !json_is_number(secs)) {
        fprintf(stderr, "kiln report: %s/summary.json: not a kiln run summary (needs arch, strategy, test_acc, "
                "train_seconds); skipped\n", dir);
        rs->skipped++;
        goto out;
    }
    if (!(r = new_row(rs))) goto out;
    snprintf(r->arch, sizeof r->arch, "%s", json_string_value(arch));
    snprintf(r->strategy, sizeof r->strategy, "%s", json_string_value(strat));
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
    snprintf(r->data, sizeof r->data, "%s", json_is_string(d) ? json_string_value(d) : "");
    snprintf(r->run, sizeof r->run, "%s", rel[0] ? rel : ".");
    read_settings(r, c, s, t);
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

/* ---- a published results.csv ---------------------------------------------------- */

/* results.csv's columns, in the order written; reading finds them by name, so
 * files with fewer columns (older reports) read with those settings unknown. */
enum { C_ARCH, C_STRATEGY, C_TRIAL, C_LR, C_BATCH, C_ACC, C_SECS, C_EPOCHS, C_DIVERGED, C_RUN, C_PHASES,
       C_INPUT, C_MAX_EPOCHS, C_PATIENCE, C_PER_CLASS, C_OPTIONS, C_TRAIN, C_VAL, C_TEST, C_CLASSES, C_DATA,
       C_COLS };
static const char *const CSV_COLUMNS[C_COLS] = {
    "arch", "strategy", "trial", "lr", "batch", "test_acc", "train_seconds", "epochs", "diverged", "run",
    "phase_epochs", "input_size", "max_epochs", "patience", "per_class", "options", "train_images",
    "val_images", "test_images", "classes", "data"};

/* Split one CSV line (no line break inside a field) into at most max fields,
 * unquoting in place; returns the count, or -1 for a bad quote or too many. */
static int csv_split(char *p, char **f, int max)
{
    for (int n = 0;; ) {
        if (n == max) return -1;
        if (*p != '"') {
            f[n++] = p;
            char *c = strchr(p, ',');
            if (!c) return n;
            *c = 0;
            p = c + 1;
            continue;
        }
        char *w = ++p;
        f[n++] = w;
        for (;; p++) {
            if (!*p) return -1;
            if (*p == '"' && p[1] != '"') break;
            *w++ = *p;
            p += *p == '"';
        }
        *w = 0;
        p++;
        if (!*p) return n;
        if (*p++ != ',') return -1;
    }
}

/* A whole-string integer (empty: `unknown`); 0, or -1. */
static int csv_int(const char *s, int unknown, int *v)
{
    char *end;
    if (!*s) { *v = unknown; return 0; }
    long x = strtol(s, &end, 10);
    if (*end || x < -1 || x > 1000000000) return -1;
    *v = (int)x;
    return 0;
}

/* A whole-string finite number; 0, or -1. */
static int csv_num(const char *s, double *v)
{
    char *end;
    *v = strtod(s, &end);
    return *s && !*end && isfinite(*v) ? 0 : -1;
}

/* One data line of results.csv (fields f, col[k]: the field of column k or
 * -1) into a new row; 0, or the column whose value is bad. */
static int csv_row(Rows *rs, char **f, int nf, const int *col, int *bad_col)
{
    const char *v[C_COLS];
    for (int k = 0; k < C_COLS; k++) v[k] = col[k] >= 0 && col[k] < nf ? f[col[k]] : "";
    Row *r = new_row(rs);
    if (!r) return -1;
    snprintf(r->arch, sizeof r->arch, "%s", v[C_ARCH]);
    snprintf(r->strategy, sizeof r->strategy, "%s", v[C_STRATEGY]);
    snprintf(r->run, sizeof r->run, "%s", v[C_RUN]);
    snprintf(r->data, sizeof r->data, "%s", v[C_DATA]);
    if (col[C_OPTIONS] >= 0) snprintf(r->options, sizeof r->options, "%s", v[C_OPTIONS]);
    int k = C_ARCH;
    if (!r->arch[0] || (k = C_STRATEGY, !r->strategy[0]) || (k = C_TRIAL, csv_int(v[k], -1, &r->trial)) ||
        (k = C_LR, *v[k] && csv_num(v[k], &r->lr)) || (k = C_BATCH, csv_int(v[k], 0, &r->batch)) ||
        (k = C_ACC, csv_num(v[k], &r->acc) || r->acc < 0 || r->acc > 1) ||
        (k = C_SECS, csv_num(v[k], &r->secs) || r->secs < 0) || (k = C_EPOCHS, csv_int(v[k], 0, &r->epochs)) ||
        (k = C_DIVERGED, strcmp(v[k], "true") && strcmp(v[k], "false")) ||
        (k = C_INPUT, *v[k] && parse_hw_arg(v[k], &r->input_h, &r->input_w)) ||
        (k = C_MAX_EPOCHS, csv_int(v[k], 0, &r->max_epochs)) || (k = C_PATIENCE, csv_int(v[k], -1, &r->patience)) ||
        (k = C_PER_CLASS, csv_int(v[k], -1, &r->per_class)) || (k = C_TRAIN, csv_int(v[k], 0, &r->n_train)) ||
        (k = C_VAL, csv_int(v[k], 0, &r->n_val)) || (k = C_TEST, csv_int(v[k], 0, &r->n_test)) ||
        (k = C_CLASSES, csv_int(v[k], 0, &r->classes))) {
        *bad_col = k;
        return -1;
    }
    r->diverged = !strcmp(v[C_DIVERGED], "true");
    snprintf(r->epochs_text, sizeof r->epochs_text, "%s", *v[C_PHASES] ? v[C_PHASES] : v[C_EPOCHS]);
    rs->n++;
    return 0;
}

/* Read DIR/results.csv into rows, each strategy ordered by its first row;
 * 0, 2 (message names the file and line) or 1 (the file cannot be read). */
static int read_csv(Rows *rs, const char *dir)
{
    char path[1200], line[4096], *f[64];
    snprintf(path, sizeof path, "%s/results.csv", dir);
    FILE *in = fopen(path, "r");
    if (!in) {
        fprintf(stderr, "kiln report: %s: cannot read: %s\n", path, strerror(errno));
        return 1;
    }
    int col[C_COLS], nf, lineno = 1, rc = 0;
    if (!fgets(line, sizeof line, in)) line[0] = 0;
    line[strcspn(line, "\r\n")] = 0;
    nf = csv_split(line, f, 64);
    for (int k = 0; k < C_COLS; k++) {
        col[k] = -1;
        for (int j = 0; j < nf; j++)
            if (!strcmp(f[j], CSV_COLUMNS[k])) col[k] = j;
    }
    if (col[C_ARCH] < 0 || col[C_STRATEGY] < 0 || col[C_ACC] < 0 || col[C_SECS] < 0 || col[C_DIVERGED] < 0) {
        fprintf(stderr, "kiln report: %s line 1: not a kiln results.csv header (needs arch, strategy, test_acc, "
                "train_seconds, diverged)\n", path);
        fclose(in);
        return 2;
    }
    while (fgets(line, sizeof line, in)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(in)) {
            fprintf(stderr, "kiln report: %s line %d: longer than %zu bytes\n", path, lineno, sizeof line - 1);
            rc = 2;
            break;
        }
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        int bad = -1;
        if ((nf = csv_split(line, f, 64)) < 0 || csv_row(rs, f, nf, col, &bad)) {
            if (bad >= 0)
                fprintf(stderr, "kiln report: %s line %d: bad value for %s\n", path, lineno, CSV_COLUMNS[bad]);
            else
                fprintf(stderr, "kiln report: %s line %d: not a row of comma-separated fields\n", path, lineno);
            rc = 2;
            break;
        }
        Row *r = &rs->rows[rs->n - 1];
        r->order = rs->n - 1;
        for (int i = 0; i < rs->n - 1; i++)
            if (!strcmp(rs->rows[i].strategy, r->strategy)) { r->order = rs->rows[i].order; break; }
    }
    fclose(in);
    return rc;
}

/* ---- order --------------------------------------------------------------------- */

/* Each row's kind and, for rows read from run folders, its order: the
 * position in DIR/compare.json's strategies, else after them in kiln's order. */
static void set_order(Rows *rs, const char *dir, int from_csv)
{
    json_t *cmp = load_json(dir, "compare.json"), *asked = json_object_get(cmp, "strategies");
    for (int i = 0; i < rs->n; i++) {
        Row *r = &rs->rows[i];
        int k = strategy_parse(r->strategy);
        r->kind = k < 0 ? STRAT_COUNT : k;
        if (from_csv) continue;
        r->order = 1000 + r->kind;
        for (size_t j = 0; j < json_array_size(asked); j++) {
            const char *name = json_string_value(json_array_get(asked, j));
            if (name && !strcmp(name, r->strategy)) { r->order = (int)j; break; }
        }
    }
    json_decref(cmp);
}

/* Mark the runs that collapsed (see report_collapse_limit). */
static void mark_collapsed(Rows *rs)
{
    for (int i = 0; i < rs->n; i++) {
        Row *r = &rs->rows[i];
        r->collapsed = !r->diverged && r->acc < report_collapse_limit(r->classes);
    }
}

double report_collapse_limit(int classes)
{
    if (classes < 2) return 0;
    double chance = 1.0 / classes;
    return chance + 0.1 * (1 - chance);
}

/* Order: arch, strategy (asked order, then kiln's, then by name), trial, folder. */
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
    for (int k = 0; k < C_COLS; k++) fprintf(f, "%s%s", k ? "," : "", CSV_COLUMNS[k]);
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

/* ---- the command ------------------------------------------------------------------- */

/* Read every run below dir (or, without any, dir/results.csv) and write the
 * three files (see the file comment). */
int report_build(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "kiln report: %s: not a folder\n", dir);
        return 2;
    }
    Rows rs = {0};
    walk(&rs, dir, "", 0);
    int from_csv = 0;
    char csv[1200];
    snprintf(csv, sizeof csv, "%s/results.csv", dir);
    if (!rs.n && !rs.skipped && stat(csv, &st) == 0) {
        from_csv = 1;
        int rc = read_csv(&rs, dir);
        if (rc) { free(rs.rows); return rc; }
    }
    if (!rs.n) {
        fprintf(stderr, "kiln report: %s: no run folders (summary.json) below it%s\n", dir,
                rs.skipped ? " that parse" : from_csv ? ", and no rows in its results.csv" : "");
        free(rs.rows);
        return 2;
    }
    set_order(&rs, dir, from_csv);
    mark_collapsed(&rs);
    qsort(rs.rows, (size_t)rs.n, sizeof(Row), row_cmp);
    number_trials(&rs);
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

/* `kiln report DIR`. */
int cmd_report(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: kiln report DIR\n  merge DIR/**/summary.json into DIR/results.csv, DIR/report.md and "
               "DIR/scatter.svg\n  (a folder with no runs but a results.csv: report.md and scatter.svg drawn "
               "again from it)\n");
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: kiln report DIR\n");
        return 2;
    }
    return report_build(argv[1]);
}
