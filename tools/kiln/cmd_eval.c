/* tools/kiln/cmd_eval.c — `kiln eval`: accuracy, per-class accuracy and the
 * confusion matrix of a weights file on a data source.
 *
 * Which images: on the data the run trained on (config.json beside the
 * weights names it), the run's own test split by default: the same seeded
 * stratified 80/10/10 (dataset_split) of the same images (--per-class picks
 * from the seed too), with the seed and per-class count from config.json.
 * On any other source, the whole source by default. --split chooses either
 * way, and the split used and its image count are always printed. The input
 * size defaults to the one the weights were trained at (kiln.input).
 *
 * Which class is which: the weights' class names (kiln.classes, in output
 * order) decide. The data's classes are mapped to them by name
 * (runtime/classes.h: equal up to case and separators, plus --class-map
 * lines), and the results are reported in the weights' order under their
 * names; sets that differ are refused (exit 2, both lists). A source without
 * names takes the weights'. Weights without names (written before kiln
 * stored them) are matched by index, and the output says so.
 *
 * The network is planned inference-only (nothing trainable, every BN frozen,
 * so BN folds into the convs). Its head must match the class count: weights
 * whose head does not fit are an error (exit 2), never silently replaced by
 * a fresh head as training would.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/classes.h"
#include "runtime/device.h"
#include "runtime/evaluate.h"
#include "runtime/params.h"
#include "runtime/safetensors.h"
#include "runtime/weights.h"
#include "tools/kiln/cmds.h"

/* The options, on f. */
static void eval_usage(FILE *f)
{
    fprintf(f,
        "usage: kiln eval --arch FILE --weights FILE --data SPEC [options]\n"
        "  --split test|val|train|all  which images, split as training splits them (default: test on the\n"
        "                      data the run trained on, all on any other source)\n"
        "  --class-map FILE    'data name = weights name' lines for classes whose names differ\n"
        "  --seed N            split seed (default: the run's, from config.json beside the weights; else %d)\n"
        "  --per-class N       keep at most N images a class (default: the run's on its own data, else all)\n"
        "  --batch N           images per forward pass (default 32)\n"
        "  --input-size HxW    input size (default: the weights' kiln.input, else the arch's)\n"
        "  --device cpu|cuda|auto  where it runs (default $KILN_DEVICE or auto)\n",
        KILN_DEFAULT_SEED);
}

/* ---- what the weights' run folder and file say ---------------------------------------- */

typedef struct {
    char path[1100];       /* config.json beside the weights */
    int found;
    int seed, got_seed, per_class, got_pc;
    char data[1024];       /* the data spec the run trained on ("" when unknown) */
} RunInfo;

/* The config.json of the run whose folder holds `weights`, where one exists. */
static void run_info(const char *weights, RunInfo *ri)
{
    memset(ri, 0, sizeof *ri);
    const char *slash = strrchr(weights, '/');
    if (slash) snprintf(ri->path, sizeof ri->path, "%.*s/config.json", (int)(slash - weights), weights);
    else snprintf(ri->path, sizeof ri->path, "config.json");
    json_error_t je;
    json_t *o = json_load_file(ri->path, 0, &je);
    if (!o) return;
    ri->found = 1;
    json_t *s = json_object_get(o, "seed"), *pc = json_object_get(o, "per_class"), *d = json_object_get(o, "data");
    if (json_is_integer(s)) { ri->seed = (int)json_integer_value(s); ri->got_seed = 1; }
    if (json_is_integer(pc)) { ri->per_class = (int)json_integer_value(pc); ri->got_pc = 1; }
    if (json_is_string(d)) snprintf(ri->data, sizeof ri->data, "%s", json_string_value(d));
    json_decref(o);
}

/* Do two data specs name the same source? Equal text, or the same kind of
 * file source (zip:, dir:, fashion-mnist:) at the same real path. */
static int same_source(const char *a, const char *b)
{
    if (!strcmp(a, b)) return 1;
    static const char *const kinds[] = {"zip:", "dir:", "fashion-mnist:"};
    for (int k = 0; k < 3; k++) {
        size_t n = strlen(kinds[k]);
        if (strncmp(a, kinds[k], n) || strncmp(b, kinds[k], n)) continue;
        char ra[PATH_MAX], rb[PATH_MAX];
        return realpath(a + n, ra) && realpath(b + n, rb) && !strcmp(ra, rb);
    }
    return 0;
}

/* The input H x W the weights were saved with (kiln.input "HxWxC"; *h = 0
 * when absent) and their class names (kiln.classes; *n = 0 when absent).
 * A file that does not load is left to weights_load to report. Returns 0,
 * or 2/1 with a message for a bad kiln.classes. */
static int weights_meta(const char *path, int *h, int *w, char ***names, int *n, char *err, size_t errlen)
{
    *h = *w = *n = 0;
    *names = NULL;
    StFile f;
    char lerr[256];
    if (st_load(path, &f, lerr, sizeof lerr)) return 0;
    const char *v = st_meta(&f, "kiln.input");
    int c;
    if (!v || sscanf(v, "%dx%dx%d", h, w, &c) != 3 || *h < 1 || *w < 1) *h = *w = 0;
    const char *cl = st_meta(&f, KILN_CLASSES_KEY);
    int rc = cl ? classes_parse(path, cl, names, n, err, errlen) : 0;
    st_free(&f);
    return rc;
}

/* ---- classes ------------------------------------------------------------------------ */

/* Decide which output of the weights each data class is (map, nd entries)
 * and print how; *K is the class count of the results. Returns 0 or an exit
 * code after printing the error. */
static int match_classes(const Dataset *ds, const char *data, char **wn, int nw, const char *weights,
                         const char *class_map, int *map, int *K)
{
    int nd = ds->num_classes, named = ds->class_names != NULL;
    for (int k = 0; named && k < nd; k++) named = ds->class_names[k] != NULL;
    for (int d = 0; d < nd; d++) map[d] = d;
    *K = nw ? nw : nd;
    if (!nw) {
        if (class_map) {
            fprintf(stderr, "kiln eval: %s: --class-map needs the class names of the weights, and this file has none "
                    "(written before kiln stored them)\n", weights);
            return 2;
        }
        printf("classes: %s stores no class names (written before kiln stored them): data class k is taken as "
               "output k, by index, unchecked\n", weights);
        return 0;
    }
    if (!named) {
        if (nd != nw) {
            fprintf(stderr, "kiln eval: %s has %d unnamed classes, the weights %s have %d\n", data, nd, weights, nw);
            return 2;
        }
        printf("classes: the data's have no names: the weights' names are used (class k is output k)\n");
        return 0;
    }
    char err[8192], dwhat[600], wwhat[600];
    snprintf(dwhat, sizeof dwhat, "data %s", data);
    snprintf(wwhat, sizeof wwhat, "weights %s", weights);
    int rc = classes_map(ds->class_names, nd, dwhat, wn, nw, wwhat, class_map, map, err, sizeof err);
    if (rc) {
        fprintf(stderr, "kiln eval: %s\n", err);
        return rc;
    }
    int same = nd == nw;
    for (int d = 0; d < nd && same; d++) same = map[d] == d && !strcmp(ds->class_names[d], wn[d]);
    if (same) {
        printf("classes: the data's %d class names are the weights', in the same order\n", nd);
        return 0;
    }
    printf("classes: the data's %d classes mapped to the weights' %d by name%s%s; results in the weights' order:\n",
           nd, nw, class_map ? " and " : "", class_map ? class_map : "");
    char e1[160], e2[160];
    for (int d = 0; d < nd; d++)
        printf("  data %3d '%s' -> weights %3d '%s'\n", d, dataset_escape(e1, sizeof e1, ds->class_names[d],
               strlen(ds->class_names[d])), map[d], dataset_escape(e2, sizeof e2, wn[map[d]], strlen(wn[map[d]])));
    if (nd < nw) printf("  (%d of the weights' classes have no images in this data)\n", nw - nd);
    return 0;
}

/* ---- results ------------------------------------------------------------------------ */

/* Print the per-class table and the confusion matrix (rows true, columns
 * predicted). Class names are escaped: they come from the data or the
 * weights and are never trusted. */
static void print_results(char *const *names, const long *cm, int K)
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
        const char *name = names && names[t] ? names[t] : "";
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

/* `kiln eval`: parse, load, match the classes, plan inference-only, load the
 * weights, count. */
int cmd_eval(int argc, char **argv)
{
    const char *arch = NULL, *weights = NULL, *data = NULL, *split = NULL, *device = device_default();
    const char *class_map = NULL;
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
        else if (!strcmp(a, "--class-map")) class_map = v;
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

    /* which images: the run's test split on its own data, else the whole source */
    RunInfo ri;
    run_info(weights, &ri);
    int own = ri.data[0] && same_source(data, ri.data);
    char why[1200];
    if (split) snprintf(why, sizeof why, "as asked");
    else if (own) snprintf(why, sizeof why, "the run's own test split: %s trained on this data", ri.path);
    else if (ri.data[0]) snprintf(why, sizeof why, "the whole source: the run trained on other data (%s)", ri.data);
    else snprintf(why, sizeof why, "the whole source: no config.json beside the weights says what they trained on");
    if (!split) split = own ? "test" : "all";
    if (seed < 0) {
        seed = ri.got_seed ? ri.seed : KILN_DEFAULT_SEED;
        if (ri.got_seed && strcmp(split, "all")) printf("split seed %d, from %s\n", seed, ri.path);
    }
    if (per_class < 0) {
        per_class = own && ri.got_pc ? ri.per_class : 0;
        if (per_class > 0) printf("per-class %d, from %s\n", per_class, ri.path);
    }

    char err[1024];
    Graph g;
    int rc = graph_load(&g, arch, err, sizeof err);
    if (rc) { fprintf(stderr, "kiln eval: %s\n", err); return rc; }
    const InputAttr *in = &g.layers[0].a.input;
    char **wnames = NULL;
    int nw = 0, wh, ww;
    if ((rc = weights_meta(weights, &wh, &ww, &wnames, &nw, err, sizeof err))) {
        fprintf(stderr, "kiln eval: %s\n", err);
        graph_free(&g);
        return rc;
    }
    if (!ih && wh && (wh != in->h || ww != in->w)) {
        printf("input %dx%d, as the weights were trained (the arch says %dx%d)\n", wh, ww, in->h, in->w);
        ih = wh;
        iw = ww;
    }
    if (ih && (rc = graph_set_input_size(&g, ih, iw, err, sizeof err))) {
        fprintf(stderr, "kiln eval: %s\n", err);
        classes_free(wnames, nw);
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
    int *all = NULL, *map = NULL;
    DataOptions dopt = {in->h, in->w, in->c, per_class, (uint64_t)seed};
    if ((rc = dataset_open(&ds, data, &dopt, err, sizeof err))) {
        fprintf(stderr, "kiln eval: %s\n", err);
        classes_free(wnames, nw);
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
    printf("split %s, %d of %d images: %s\n", split, n, ds.n, why);
    warn_coarse_split(stdout, split, n);

    /* the data's labels become the weights' outputs (after the split, which
     * is made on the source's own labels) */
    int K;
    if (!(map = malloc(sizeof(int) * ((size_t)ds.num_classes + 1)))) { fprintf(stderr, "kiln eval: out of memory\n"); goto out; }
    if ((rc = match_classes(&ds, data, wnames, nw, weights, class_map, map, &K))) goto out;
    for (int i = 0; i < ds.n; i++) ds.labels[i] = map[ds.labels[i]];

    /* the network: head sized to the classes, inference only */
    int h = graph_head(&g);
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
        if (wr.head_from > 0 && nw)
            fprintf(stderr, "kiln eval: %s: its head '%s' has %d outputs, its %s names %d classes\n", weights,
                    g.layers[h].name, wr.head_from, KILN_CLASSES_KEY, nw);
        else if (wr.head_from > 0)
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
           ds.source, ds.n, ds.h, ds.w, ds.c, ds.num_classes, split, seed, n, secs, secs > 0 ? n / secs : 0.0);
    print_results(nw ? wnames : ds.class_names, cm, K);
    rc = 0;
out:
    free(cm);
    free(all);
    free(map);
    free(params);
    if (be) be->destroy(be);
    if (planned) plan_free(&p);
    split_free(&sp);
    dataset_free(&ds);
    classes_free(wnames, nw);
    graph_free(&g);
    return rc;
}
