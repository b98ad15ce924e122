/* runtime/report/runs.c — a compare folder's runs read into report rows
 * (runtime/report/report.h report_read): every run folder below it (its
 * summary.json, config.json and compare's trial.json), or a published
 * results.csv; then each row's strategy kind and order, collapse mark and
 * trial number. Nothing is written here.
 *
 * Invariants: the walk follows no symbolic link and goes at most 8 folders
 * deep; a run whose summary lacks a field the report needs is skipped with a
 * warning (rs->skipped); results.csv is read strictly, the first bad line
 * refused naming the file, the line and the column.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/numbers.h"
#include "runtime/report/report.h"
#include "runtime/strategy.h"

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
    const char *v[CSV_COLS];
    for (int k = 0; k < CSV_COLS; k++) v[k] = col[k] >= 0 && col[k] < nf ? f[col[k]] : "";
    Row *r = new_row(rs);
    if (!r) return -1;
    snprintf(r->arch, sizeof r->arch, "%s", v[CSV_ARCH]);
    snprintf(r->strategy, sizeof r->strategy, "%s", v[CSV_STRATEGY]);
    snprintf(r->run, sizeof r->run, "%s", v[CSV_RUN]);
    snprintf(r->data, sizeof r->data, "%s", v[CSV_DATA]);
    if (col[CSV_OPTIONS] >= 0) snprintf(r->options, sizeof r->options, "%s", v[CSV_OPTIONS]);
    int k = CSV_ARCH;
    if (!r->arch[0] || (k = CSV_STRATEGY, !r->strategy[0]) || (k = CSV_TRIAL, csv_int(v[k], -1, &r->trial)) ||
        (k = CSV_LR, *v[k] && csv_num(v[k], &r->lr)) || (k = CSV_BATCH, csv_int(v[k], 0, &r->batch)) ||
        (k = CSV_ACC, csv_num(v[k], &r->acc) || r->acc < 0 || r->acc > 1) ||
        (k = CSV_SECS, csv_num(v[k], &r->secs) || r->secs < 0) || (k = CSV_EPOCHS, csv_int(v[k], 0, &r->epochs)) ||
        (k = CSV_DIVERGED, strcmp(v[k], "true") && strcmp(v[k], "false")) ||
        (k = CSV_INPUT, *v[k] && parse_hw_arg(v[k], &r->input_h, &r->input_w)) ||
        (k = CSV_MAX_EPOCHS, csv_int(v[k], 0, &r->max_epochs)) || (k = CSV_PATIENCE, csv_int(v[k], -1, &r->patience)) ||
        (k = CSV_PER_CLASS, csv_int(v[k], -1, &r->per_class)) || (k = CSV_TRAIN, csv_int(v[k], 0, &r->n_train)) ||
        (k = CSV_VAL, csv_int(v[k], 0, &r->n_val)) || (k = CSV_TEST, csv_int(v[k], 0, &r->n_test)) ||
        (k = CSV_CLASSES, csv_int(v[k], 0, &r->classes))) {
        *bad_col = k;
        return -1;
    }
    r->diverged = !strcmp(v[CSV_DIVERGED], "true");
    snprintf(r->epochs_text, sizeof r->epochs_text, "%s", *v[CSV_PHASES] ? v[CSV_PHASES] : v[CSV_EPOCHS]);
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
    int col[CSV_COLS], nf, lineno = 1, rc = 0;
    if (!fgets(line, sizeof line, in)) line[0] = 0;
    line[strcspn(line, "\r\n")] = 0;
    nf = csv_split(line, f, 64);
    for (int k = 0; k < CSV_COLS; k++) {
        col[k] = -1;
        for (int j = 0; j < nf; j++)
            if (!strcmp(f[j], report_csv_columns[k])) col[k] = j;
    }
    if (col[CSV_ARCH] < 0 || col[CSV_STRATEGY] < 0 || col[CSV_ACC] < 0 || col[CSV_SECS] < 0 || col[CSV_DIVERGED] < 0) {
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
                fprintf(stderr, "kiln report: %s line %d: bad value for %s\n", path, lineno, report_csv_columns[bad]);
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

/* ---- the rows of a folder ------------------------------------------------------ */

int report_read(Rows *rs, const char *dir, int *from_csv)
{
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "kiln report: %s: not a folder\n", dir);
        return 2;
    }
    memset(rs, 0, sizeof *rs);
    walk(rs, dir, "", 0);
    *from_csv = 0;
    char csv[1200];
    snprintf(csv, sizeof csv, "%s/results.csv", dir);
    if (!rs->n && !rs->skipped && stat(csv, &st) == 0) {
        *from_csv = 1;
        int rc = read_csv(rs, dir);
        if (rc) { free(rs->rows); return rc; }
    }
    if (!rs->n) {
        fprintf(stderr, "kiln report: %s: no run folders (summary.json) below it%s\n", dir,
                rs->skipped ? " that parse" : *from_csv ? ", and no rows in its results.csv" : "");
        free(rs->rows);
        return 2;
    }
    set_order(rs, dir, *from_csv);
    mark_collapsed(rs);
    qsort(rs->rows, (size_t)rs->n, sizeof(Row), row_cmp);
    number_trials(rs);
    return 0;
}
