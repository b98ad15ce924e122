/* tools/kiln/cmd_data.c — `kiln data SPEC`: load a data set the way training
 * would and describe it: source, classes with counts, image size, the split,
 * decode time and rate, and what was skipped.
 *
 * Exit codes: 0 loaded, 2 bad usage or bad input (the loader's message names
 * the file and the entry), 1 anything else. Class names are printed escaped
 * (dataset_escape): they come from the archive and are never trusted.
 */
#include "tools/kiln/cmds.h"
#include "datasets/dataset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void data_usage(FILE *f)
{
    fprintf(f,
            "usage: kiln data SPEC [--per-class N] [--seed S] [--size HxW[xC]]\n"
            "  SPEC: fashion-mnist[:DIR] | zip:PATH | dir:PATH | synthetic[:key=value,...]\n"
            "  --per-class N  keep at most N images a class (chosen from the seed)\n"
            "  --seed S       seed for --per-class and the split (default %d, as train and eval)\n"
            "  --size HxW     resize every image once to H x W (N: N x N; xC: and to C channels)\n",
            KILN_DEFAULT_SEED);
}

int cmd_data(int argc, char **argv)
{
    const char *spec = NULL;
    DataOptions opt;
    memset(&opt, 0, sizeof opt);
    opt.seed = KILN_DEFAULT_SEED;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            data_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--per-class") || !strcmp(a, "--seed") || !strcmp(a, "--size")) {
            if (!v) {
                fprintf(stderr, "kiln data: %s needs a value\n", a);
                return 2;
            }
            i++;
            if (!strcmp(a, "--per-class")) {
                if (parse_int_arg(v, &opt.per_class) || opt.per_class < 1) {
                    fprintf(stderr, "kiln data: --per-class takes a positive integer, not '%s'\n", v);
                    return 2;
                }
            } else if (!strcmp(a, "--seed")) {
                char *end;
                errno = 0;
                unsigned long long s = strtoull(v, &end, 10);
                if (!*v || *end || errno || v[0] == '-') {
                    fprintf(stderr, "kiln data: --seed takes a non-negative integer, not '%s'\n", v);
                    return 2;
                }
                opt.seed = s;
            } else if (parse_hwc_arg(v, &opt.h, &opt.w, &opt.c)) {
                fprintf(stderr, "kiln data: --size takes HxW, N or HxWxC (H, W 1..4096; C 1..4), not '%s'\n", v);
                return 2;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "kiln data: unknown option '%s'\n", a);
            data_usage(stderr);
            return 2;
        } else if (spec) {
            fprintf(stderr, "kiln data: one SPEC only ('%s' and '%s')\n", spec, a);
            return 2;
        } else {
            spec = a;
        }
    }
    if (!spec) {
        data_usage(stderr);
        return 2;
    }

    Dataset ds;
    char err[2048];
    int rc = dataset_open(&ds, spec, &opt, err, sizeof err);
    if (rc) {
        fprintf(stderr, "kiln data: %s\n", err);
        return rc == 2 ? 2 : 1;
    }

    printf("source:   %s\n", ds.source);
    printf("images:   %d of %dx%dx%d (uint8, %.1f MB in memory)\n", ds.n, ds.h, ds.w, ds.c,
           (double)ds.n * ds.h * ds.w * ds.c / 1e6);
    int *count = calloc((size_t)ds.num_classes + 1, 2 * sizeof(int));
    if (!count) {
        fprintf(stderr, "kiln data: out of memory\n");
        dataset_free(&ds);
        return 1;
    }
    const int split_at = ds.n - ds.n_fixed_test;
    for (int i = 0; i < ds.n; i++)
        count[2 * ds.labels[i] + (i >= split_at)]++;
    printf("classes:  %d%s\n", ds.num_classes,
           ds.n_fixed_test > 0 ? " (images = train part + the source's own test part)" : "");
    for (int k = 0; k < ds.num_classes; k++) {
        char esc[256];
        const char *name = ds.class_names[k] ? ds.class_names[k] : "";
        dataset_escape(esc, sizeof esc, name, strlen(name));
        if (ds.n_fixed_test > 0)
            printf("  %4d  %-24s %7d = %d + %d\n", k, esc, count[2 * k] + count[2 * k + 1],
                   count[2 * k], count[2 * k + 1]);
        else
            printf("  %4d  %-24s %7d\n", k, esc, count[2 * k]);
    }
    free(count);

    Split sp;
    if (dataset_split(&ds, opt.seed, &sp) == 0) {
        printf("split:    seed %llu: train %d, val %d, test %d (%s)\n",
               (unsigned long long)opt.seed, sp.n_train, sp.n_val, sp.n_test,
               ds.n_fixed_test > 0 ? "test = the source's own test set" : "stratified 80/10/10");
        split_free(&sp);
    } else {
        printf("split:    (could not be made: out of memory)\n");
    }
    printf("decode:   %.3f s, %.0f images/s\n", ds.decode_seconds,
           ds.decode_seconds > 0 ? ds.n / ds.decode_seconds : 0.0);
    printf("skipped:  %ld non-image entries, %ld corrupt images\n", ds.skipped_nonimage,
           ds.skipped_corrupt);
    dataset_free(&ds);
    return 0;
}
