/* tools/cmd_eval.c — `kiln eval`: accuracy, per-class accuracy and the
 * confusion matrix of a weights file on one split of a data set.
 *
 * The split is the training run's: the same seeded stratified 80/10/10
 * (dataset_split) of the same images (--per-class picks from the seed too),
 * so `kiln eval --weights runs/NAME/best.safetensors` scores the run's own
 * test set. When the weights sit in a run folder, the seed and per-class
 * count default to that run's (config.json), and the input size to the one
 * the weights were trained at (their kiln.input metadata).
 *
 * The network is planned inference-only (nothing trainable, every BN frozen,
 * so BN folds into the convs). Its head must match the data set's class
 * count: weights whose head does not fit are an error (exit 2), never
 * silently replaced by a fresh head as training would.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/device.h"
#include "runtime/evaluate.h"
#include "runtime/params.h"
#include "runtime/safetensors.h"
#include "runtime/weights.h"
#include "tools/cmds.h"

/* The options, on f. */
static void eval_usage(FILE *f)
{
    fprintf(f,
        "usage: kiln eval --arch FILE --weights FILE --data SPEC [options]\n"
        "  --split test|val|train|all  which images (default test), split as training splits them\n"
        "  --seed N            split seed (default: the run's, from config.json beside the weights; else 1)\n"
        "  --per-class N       keep at most N images a class, as training did (default: the run's)\n"
        "  --batch N           images per forward pass (default 32)\n"
        "  --input-size HxW    input size (default: the weights' kiln.input, else the arch's)\n"
        "  --device cpu|cuda|auto  where it runs (default $KILN_DEVICE or auto)\n");
}

/* Seed and per-class count of the run whose folder holds `weights` (its
 * config.json), where one exists: *seed / *per_class are set, and their
 * flags raised, only for the values the file has. Returns 1 when read. */
static int run_defaults(const char *weights, int *seed, int *got_seed, int *per_class, int *got_pc,
                        char *cfg, size_t cfglen)
{
    const char *slash = strrchr(weights, '/');
    if (slash) snprintf(cfg, cfglen, "%.*s/config.json", (int)(slash - weights), weights);
    else snprintf(cfg, cfglen, "config.json");
    json_error_t je;
    json_t *o = json_load_file(cfg, 0, &je);
    if (!o) return 0;
    json_t *s = json_object_get(o, "seed"), *pc = json_object_get(o, "per_class");
    if (json_is_integer(s)) { *seed = (int)json_integer_value(s); *got_seed = 1; }
    if (json_is_integer(pc)) { *per_class = (int)json_integer_value(pc); *got_pc = 1; }
    json_decref(o);
    return 1;
}

/* The input H x W the weights were saved with (kiln.input "HxWxC"), or 0. */
static int weights_input_size(const char *path, int *h, int *w)
{
    StFile f;
    char err[256];
    if (st_load(path, &f, err, sizeof err)) return 0;
    const char *v = st_meta(&f, "kiln.input");
    int c, ok = v && sscanf(v, "%dx%dx%d", h, w, &c) == 3 && *h > 0 && *w > 0;
    st_free(&f);
    return ok;
}

/* Print the per-class table and the confusion matrix (rows true, columns
 * predicted). Class names are escaped: they come from the data and are
 * never trusted. */
static void print_results(const Dataset *ds, const long *cm, int K)
{
    long total = 0, diag = 0, maxv = 0;
    for (int t = 0; t < K; t++)
        for (int p = 0; p < K; p++) {
            long v = cm[(size_t)t * K + p];
            total += v;
            if (t == p) diag += v;
            if (v > maxv) maxv = v;
        }
    printf("accuracy %.4f (%ld/%ld)\n\n", confusion_accuracy(cm, K), diag, total);

    char esc[160];
    printf("per-class accuracy:\n  %5s  %-28s %8s %8s %9s\n", "class", "name", "images", "correct", "accuracy");
    for (int t = 0; t < K; t++) {
        long n = 0;
        for (int p = 0; p < K; p++) n += cm[(size_t)t * K + p];
        const char *name = ds->class_names && ds->class_names[t] ? ds->class_names[t] : "";
        dataset_escape(esc, sizeof esc, name, strlen(name));
        if (n)
            printf("  %5d  %-28s %8ld %8ld %9.4f\n", t, esc, n, cm[(size_t)t * K + t], (double)cm[(size_t)t * K + t] / n);
        else
            printf("  %5d  %-28s %8ld %8ld %9s\n", t, esc, n, 0L, "-");
    }

    int w = 1;
    for (long v = maxv; v >= 10; v /= 10) w++;
    for (long v = K - 1; v >= 10 && w < 3; v /= 10) w++;
    if (w < 3) w = 3;
    printf("\nconfusion matrix (rows: true class, columns: predicted class):\n  %6s", "true\\pred");
    for (int p = 0; p < K; p++) printf(" %*d", w, p);
    printf("\n");
    for (int t = 0; t < K; t++) {
        printf("  %9d", t);
        for (int p = 0; p < K; p++) printf(" %*ld", w, cm[(size_t)t * K + p]);
        printf("\n");
    }
}

/* `kiln eval`: parse, load, plan inference-only, load the weights, count. */
int cmd_eval(int argc, char **argv)
{
    const char *arch = NULL, *weights = NULL, *data = NULL, *split = "test", *device = device_default();
    int seed = -1, per_class = -1, batch = 32, ih = 0, iw = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { eval_usage(stdout); return 0; }
        /* a missing value is told only once the option is known */
        int missing = !v;
        if (missing) v = "";
        if (!strcmp(a, "--arch")) arch = v;
        else if (!strcmp(a, "--weights")) weights = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--split")) {
            split = v;
            bad = strcmp(v, "test") && strcmp(v, "val") && strcmp(v, "train") && strcmp(v, "all");
        }
        else if (!strcmp(a, "--seed")) bad = parse_int_arg(v, &seed) || seed < 0;
        else if (!strcmp(a, "--per-class")) bad = parse_int_arg(v, &per_class) || per_class < 1;
        else if (!strcmp(a, "--batch")) bad = parse_int_arg(v, &batch) || batch < 1 || batch > 65536;
        else if (!strcmp(a, "--input-size")) bad = parse_hw_arg(v, &ih, &iw);
        else if (!strcmp(a, "--device")) bad = !device_valid(device = v);
        else {
            fprintf(stderr, "kiln eval: unknown option '%s'\n", a);
            eval_usage(stderr);
            return 2;
        }
        if (missing) { fprintf(stderr, "kiln eval: %s needs a value\n", a); return 2; }
        if (bad) { fprintf(stderr, "kiln eval: bad value '%s' for %s\n", v, a); return 2; }
        i++;
    }
    if (!arch || !weights || !data) {
        fprintf(stderr, "kiln eval: --arch FILE, --weights FILE and --data SPEC are required\n");
        eval_usage(stderr);
        return 2;
    }
    char derr[512];
    if (device_resolve(device, stdout, &device, derr, sizeof derr)) {
        fprintf(stderr, "kiln eval: %s\n", derr);
        return 2;
    }

    /* the run's split settings, where the weights come from a run folder */
    char cfg[1100];
    int run_seed = 1, run_pc = 0, got_seed = 0, got_pc = 0;
    if (seed < 0 || per_class < 0)
        run_defaults(weights, &run_seed, &got_seed, &run_pc, &got_pc, cfg, sizeof cfg);
    if (seed < 0) {
        seed = run_seed;
        if (got_seed) printf("split seed %d, from %s\n", seed, cfg);
    }
    if (per_class < 0) {
        per_class = run_pc;
        if (got_pc && per_class > 0) printf("per-class %d, from %s\n", per_class, cfg);
    }

    char err[1024];
    Graph g;
    int rc = graph_load(&g, arch, err, sizeof err);
    if (rc) { fprintf(stderr, "kiln eval: %s\n", err); return rc; }
    const InputAttr *in = &g.layers[0].a.input;
    if (!ih) {
        int wh, ww;
        if (weights_input_size(weights, &wh, &ww) && (wh != in->h || ww != in->w)) {
            printf("input %dx%d, as the weights were trained (the arch says %dx%d)\n", wh, ww, in->h, in->w);
            ih = wh;
            iw = ww;
        }
    }
    if (ih && (rc = graph_set_input_size(&g, ih, iw, err, sizeof err))) {
        fprintf(stderr, "kiln eval: %s\n", err);
        graph_free(&g);
        return rc;
    }
    in = &g.layers[0].a.input;

    Dataset ds;
    Split sp = {0};
    Plan p;
    int planned = 0;
    Backend *be = NULL;
    float *params = NULL;
    long *cm = NULL;
    int *all = NULL;
    DataOptions dopt = {in->h, in->w, in->c, per_class, (uint64_t)seed};
    if ((rc = dataset_open(&ds, data, &dopt, err, sizeof err))) {
        fprintf(stderr, "kiln eval: %s\n", err);
        graph_free(&g);
        return rc;
    }
    rc = 1;
    if (dataset_split(&ds, (uint64_t)seed, &sp)) { fprintf(stderr, "kiln eval: out of memory\n"); goto out; }
    const int *idx = sp.test;
    int n = sp.n_test;
    if (!strcmp(split, "val")) { idx = sp.val; n = sp.n_val; }
    else if (!strcmp(split, "train")) { idx = sp.train; n = sp.n_train; }
    else if (!strcmp(split, "all")) {
        if (!(all = malloc(sizeof(int) * (size_t)ds.n + 1))) { fprintf(stderr, "kiln eval: out of memory\n"); goto out; }
        for (int i = 0; i < ds.n; i++) all[i] = i;
        idx = all;
        n = ds.n;
    }
    if (n < 1) {
        fprintf(stderr, "kiln eval: %s: the %s split is empty (%d images in all)\n", data, split, ds.n);
        rc = 2;
        goto out;
    }

    /* the network: head sized to the data, inference only */
    int K = ds.num_classes, h = graph_head(&g);
    if (h >= 0 && g.layers[h].out.c != K && (rc = graph_set_num_classes(&g, K, err, sizeof err))) {
        fprintf(stderr, "kiln eval: %s\n", err);
        goto out;
    }
    graph_flags_all(&g, 0, BN_FROZEN);
    PlanOptions po = {.batch = batch, .fuse = 1, .fold = 1};
    if (plan_build(&p, &g, &po, err, sizeof err)) { fprintf(stderr, "kiln eval: %s\n", err); rc = 1; goto out; }
    planned = 1;
    if (!(params = malloc(sizeof(float) * (p.param_floats + 1)))) { fprintf(stderr, "kiln eval: out of memory\n"); rc = 1; goto out; }
    params_init(&p, params, (uint64_t)seed, 0, g.n_layers - 1);
    WeightsReport wr;
    if ((rc = weights_load(&p, params, weights, &wr, stderr, err, sizeof err))) {
        fprintf(stderr, "kiln eval: %s\n", err);
        goto out;
    }
    if (wr.head_replaced) {
        if (wr.head_from > 0)
            fprintf(stderr, "kiln eval: %s: its head '%s' has %d classes, the data set %s has %d: "
                    "these weights were not trained on this data set\n", weights, g.layers[h].name, wr.head_from,
                    data, K);
        else
            fprintf(stderr, "kiln eval: %s: no weights for the head '%s' (a notop export?): nothing to evaluate\n",
                    weights, h >= 0 ? g.layers[h].name : "?");
        rc = 2;
        goto out;
    }
    if (!(be = backend_create(device, &p, NULL, err, sizeof err))) { fprintf(stderr, "kiln eval: %s\n", err); rc = 1; goto out; }
    be->write_params(be, params);

    Preproc pp = {in->scale, {in->mean[0], in->mean[1], in->mean[2], in->mean[3]},
                  {in->std[0], in->std[1], in->std[2], in->std[3]}};
    DataView dv = {&ds, &sp, pp, NULL};
    if (!(cm = calloc((size_t)K * (size_t)K, sizeof(long)))) { fprintf(stderr, "kiln eval: out of memory\n"); rc = 1; goto out; }
    double t0 = kiln_now();
    if ((rc = confusion_matrix(be, &dv, idx, n, K, cm))) {
        fprintf(stderr, "kiln eval: %s\n", rc == 2 ? "a label outside the head's classes" : "out of memory");
        goto out;
    }
    double secs = kiln_now() - t0;
    printf("eval %s (%s) with %s\n", g.name, arch, weights);
    printf("data %s: %d images %dx%dx%d, %d classes; split %s (seed %d): %d images, %.2fs (%.0f img/s)\n",
           ds.source, ds.n, ds.h, ds.w, ds.c, K, split, seed, n, secs, secs > 0 ? n / secs : 0.0);
    print_results(&ds, cm, K);
    rc = 0;
out:
    free(cm);
    free(all);
    free(params);
    if (be) be->destroy(be);
    if (planned) plan_free(&p);
    split_free(&sp);
    dataset_free(&ds);
    graph_free(&g);
    return rc;
}
