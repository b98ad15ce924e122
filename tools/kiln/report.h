/* tools/kiln/report.h — what `kiln report` knows of a compare folder's runs,
 * shared by its tables (tools/kiln/cmd_report.c) and its scatter plot
 * (tools/kiln/report_svg.c). Rows are sorted by arch, then strategy in the order
 * the compare asked for them, then trial; every field a run did not record
 * holds its "unknown" value (named at the field). */
#ifndef KILN_REPORT_H
#define KILN_REPORT_H

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

/* Write scatter.svg's text for rows rs to f (tools/kiln/report_svg.c). */
void report_svg(FILE *f, const Rows *rs);

#endif
