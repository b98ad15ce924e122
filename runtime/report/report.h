/* runtime/report/report.h — the report of a compare folder (what `kiln
 * report` and `kiln compare` write): its runs read into rows
 * (runtime/report/runs.c), the tables and results.csv
 * (runtime/report/report.c) and the scatter plot (runtime/report/report_svg.c).
 *
 * report_build(DIR) merges the runs of DIR (every summary.json below it,
 * with its config.json and, for compare's trials, trial.json) into
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
 *   DIR/scatter.svg  test accuracy against train time (report_svg.c)
 *
 * A folder without run folders but with a results.csv (a published result)
 * is reported from that file, so its report.md and scatter.svg can be drawn
 * again. Strategies come in the order the compare asked for them
 * (DIR/compare.json, or the order of results.csv), else in kiln's order. A
 * run is collapsed when it did not diverge and its test accuracy is near
 * chance (report_collapse_limit).
 *
 * Every file is written atomically (runtime/files.h), so a report being
 * rewritten by another machine's `compare --trial` is never half read. Runs
 * whose files do not parse are skipped with a warning naming the file; a
 * results.csv that does not parse is refused naming its line. Messages go to
 * stderr, prefixed "kiln report:".
 *
 * Rows are sorted by arch, then strategy in the order the compare asked for
 * them, then trial; every field a run did not record holds its "unknown"
 * value (named at the field). */
#ifndef KILN_REPORT_REPORT_H
#define KILN_REPORT_REPORT_H

#include <stdio.h>

#include "codegen/graph.h"

typedef struct {
    char arch[KILN_NAME_MAX];
    char strategy[32];
    int kind;                   /* the Strategy enum value (colour, marker); STRAT_COUNT if unknown */
    int order;                  /* sort position of the strategy within its arch (asked order first) */
    int trial;                  /* -1 until known */
    double lr;
    int batch;
    double acc, secs;
    int epochs;
    char epochs_text[24];       /* "12", or "12+8" for two phases */
    int diverged;
    int collapsed;              /* not diverged, test accuracy near chance (report_collapse_limit) */
    char run[512];              /* folder relative to DIR */
    char data[512];             /* "" unknown */
    int input_h, input_w;       /* 0: unknown */
    int max_epochs;             /* 0: unknown */
    int patience;               /* -1: unknown */
    int per_class;              /* 0: every image, -1: unknown */
    char options[256];          /* training options applied to the run, space-separated; "?" unknown */
    int n_train, n_val, n_test; /* the split's images; 0: unknown */
    int classes;                /* 0: unknown */
} Row;

typedef struct {
    Row *rows;
    int n, cap;
    int skipped;
} Rows;

/* Per strategy of one architecture. */
typedef struct {
    const char *name;
    int kind;
    int n, n_div, n_col;        /* trials, of which diverged, collapsed */
    double mean_acc, sd_acc, mean_secs;
    int best;                   /* row index of the best non-diverged trial, or -1 */
    int first, end;             /* its rows [first, end) */
} StratStats;

/* results.csv's columns, in the order written (report.c); reading finds
 * them by name (runs.c), so files with fewer columns (older reports) read
 * with those settings unknown. */
enum { CSV_ARCH, CSV_STRATEGY, CSV_TRIAL, CSV_LR, CSV_BATCH, CSV_ACC, CSV_SECS, CSV_EPOCHS, CSV_DIVERGED, CSV_RUN,
       CSV_PHASES, CSV_INPUT, CSV_MAX_EPOCHS, CSV_PATIENCE, CSV_PER_CLASS, CSV_OPTIONS, CSV_TRAIN, CSV_VAL, CSV_TEST,
       CSV_CLASSES, CSV_DATA, CSV_COLS };
extern const char *const report_csv_columns[CSV_COLS];

/* Write results.csv, report.md and scatter.svg of the compare folder dir
 * (see above) and say so on stdout. Returns an exit code: 0; 1 when a file
 * cannot be read or written; 2 when dir is not a folder, holds no runs or
 * its results.csv does not parse. */
int report_build(const char *dir);

/* The rows of dir (runs.c): its runs, or without any its results.csv
 * (*from_csv set), kinds, orders, collapse marks and trial numbers set and
 * sorted. Returns 0 (free rs->rows after), or report_build's exit code with
 * the message printed and nothing to free. */
int report_read(Rows *rs, const char *dir, int *from_csv);

/* Statistics of the strategies of rows [a, b) (one arch, sorted); returns
 * how many strategies, at most max. Means count every run that did not
 * diverge, collapsed ones included. */
int report_strat_stats(const Rows *rs, int a, int b, StratStats *out, int max);

/* The Pareto front of rows [a, b): runs that neither diverged nor collapsed
 * and that no other such run beats on accuracy without taking longer. Fills
 * idx (room for b - a) in increasing time; returns the count. */
int report_pareto(const Rows *rs, int a, int b, int *idx);

/* Accuracy below which a run of `classes` classes counts as collapsed:
 * chance plus a tenth of the way from chance to perfect (19% for 10
 * classes); 0 when classes is unknown. */
double report_collapse_limit(int classes);

/* "32x32" or "?" into buf. */
void report_input_text(char *buf, size_t n, const Row *r);

/* "2,670 train / 330 val / 3,000 test" or "?" into buf. */
void report_split_text(char *buf, size_t n, const Row *r);

/* The data set's short name: "fashion-mnist" for "fashion-mnist:/usr/...",
 * the file's name without extension for a path. */
void report_data_name(char *buf, size_t n, const char *data);

/* Write scatter.svg's text for rows rs to f (report_svg.c). */
void report_svg(FILE *f, const Rows *rs);

#endif
