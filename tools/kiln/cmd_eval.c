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

/* ---- the command, in its steps ------------------------------------------------------- */

/* What the command line asked (-1 / 0 / NULL: not given). */
typedef struct {
    const char *arch, *weights, *data, *split, *device, *class_map;
    int seed, per_class, batch, ih, iw;
} EvalArgs;

/* One evaluation's state; eval_free releases whatever is set. */
typedef struct {
    Graph g;
    int have_graph;
    char **wnames;                  /* the weights' class names (kiln.classes), nw of them */
    int nw;
    Dataset ds;
    int have_data;
    Split sp;
    const int *idx;                 /* the images evaluated: n indices into ds */
    int n, *all;                    /* all: the index list of --split all */
    int K, *map;                    /* classes of the head; map: data label -> head output */
    Plan p;
    int planned;
    float *params;
    Backend *be;
} Eval;

static void eval_free(Eval *e)
{
    free(e->all);
    free(e->map);
    free(e->params);
    if (e->be) e->be->destroy(e->be);
    if (e->planned) plan_free(&e->p);
    split_free(&e->sp);
    if (e->have_data) dataset_free(&e->ds);
    classes_free(e->wnames, e->nw);
    if (e->have_graph) graph_free(&e->g);
}

/* Parse argv into a (defaults filled). Returns -1 to go on, else the exit
 * code (0 after --help; 2 on bad usage, message printed). */
static int eval_args(int argc, char **argv, EvalArgs *a)
{
    *a = (EvalArgs){.device = device_default(), .seed = -1, .per_class = -1, .batch = 32};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) { eval_usage(stdout); return 0; }
        /* a missing value is told only once the option is known */
        int missing = !v;
        if (missing) v = "";
        if (!strcmp(o, "--arch")) a->arch = v;
        else if (!strcmp(o, "--weights")) a->weights = v;
        else if (!strcmp(o, "--data")) a->data = v;
        else if (!strcmp(o, "--class-map")) a->class_map = v;
        else if (!strcmp(o, "--split")) {
            a->split = v;
            bad = strcmp(v, "test") && strcmp(v, "val") && strcmp(v, "train") && strcmp(v, "all");
        }
        else if (!strcmp(o, "--seed")) bad = parse_int_arg(v, &a->seed) || a->seed < 0;
        else if (!strcmp(o, "--per-class")) bad = parse_int_arg(v, &a->per_class) || a->per_class < 1;
        else if (!strcmp(o, "--batch")) bad = parse_int_arg(v, &a->batch) || a->batch < 1 || a->batch > 65536;
        else if (!strcmp(o, "--input-size")) bad = parse_hw_arg(v, &a->ih, &a->iw);
        else if (!strcmp(o, "--device")) bad = !device_valid(a->device = v);
        else {
            fprintf(stderr, "kiln eval: unknown option '%s'\n", o);
            eval_usage(stderr);
            return 2;
        }
        if (missing) { fprintf(stderr, "kiln eval: %s needs a value\n", o); return 2; }
        if (bad) { fprintf(stderr, "kiln eval: bad value '%s' for %s\n", v, o); return 2; }
        i++;
    }
    if (!a->arch || !a->weights || !a->data) {
        fprintf(stderr, "kiln eval: --arch FILE, --weights FILE and --data SPEC are required\n");
        eval_usage(stderr);
        return 2;
    }
    char derr[512];
    if (device_resolve(a->device, stdout, &a->device, derr, sizeof derr)) {
        fprintf(stderr, "kiln eval: %s\n", derr);
        return 2;
    }
    return -1;
}

/* Which images: the run's test split on its own data, else the whole
 * source; the split, seed and per-class count not given are set (and said
 * where they come from the run), the reason into why. */
static void eval_choose(EvalArgs *a, char *why, size_t whylen)
{
    RunInfo ri;
    run_info(a->weights, &ri);
    int own = ri.data[0] && same_source(a->data, ri.data);
    if (a->split) snprintf(why, whylen, "as asked");
    else if (own) snprintf(why, whylen, "the run's own test split: %s trained on this data", ri.path);
    else if (ri.data[0]) snprintf(why, whylen, "the whole source: the run trained on other data (%s)", ri.data);
    else snprintf(why, whylen, "the whole source: no config.json beside the weights says what they trained on");
    if (!a->split) a->split = own ? "test" : "all";
    if (a->seed < 0) {
        a->seed = ri.got_seed ? ri.seed : KILN_DEFAULT_SEED;
        if (ri.got_seed && strcmp(a->split, "all")) printf("split seed %d, from %s\n", a->seed, ri.path);
    }
    if (a->per_class < 0) {
        a->per_class = own && ri.got_pc ? ri.per_class : 0;
        if (a->per_class > 0) printf("per-class %d, from %s\n", a->per_class, ri.path);
    }
}

/* The arch at the input size asked, else the weights' (kiln.input), else
 * its own; the weights' class names into e. Returns 0 or an exit code
 * (message printed). */
static int eval_graph(Eval *e, const EvalArgs *a)
{
    char err[1024];
    int rc = graph_load(&e->g, a->arch, err, sizeof err);
    if (rc) { fprintf(stderr, "kiln eval: %s\n", err); return rc; }
    e->have_graph = 1;
    const InputAttr *in = &e->g.layers[0].a.input;
    int wh, ww, ih = a->ih, iw = a->iw;
    if ((rc = weights_meta(a->weights, &wh, &ww, &e->wnames, &e->nw, err, sizeof err))) {
        fprintf(stderr, "kiln eval: %s\n", err);
        return rc;
    }
    if (!ih && wh && (wh != in->h || ww != in->w)) {
        printf("input %dx%d, as the weights were trained (the arch says %dx%d)\n", wh, ww, in->h, in->w);
        ih = wh;
        iw = ww;
    }
    if (ih && (rc = graph_set_input_size(&e->g, ih, iw, err, sizeof err))) {
        fprintf(stderr, "kiln eval: %s\n", err);
        return rc;
    }
    return 0;
}

/* Open the data at the network's input, split it, pick the images of
 * a->split (e->idx, e->n) and map its labels to the weights' classes
 * (e->K). Returns 0 or an exit code (message printed). */
static int eval_data(Eval *e, const EvalArgs *a, const char *why)
{
    const InputAttr *in = &e->g.layers[0].a.input;
    DataOptions dopt = {in->h, in->w, in->c, a->per_class, (uint64_t)a->seed};
    char err[1024];
    int rc = dataset_open(&e->ds, a->data, &dopt, err, sizeof err);
    if (rc) { fprintf(stderr, "kiln eval: %s\n", err); return rc; }
    e->have_data = 1;
    Dataset *ds = &e->ds;
    if (dataset_split(ds, (uint64_t)a->seed, &e->sp)) { fprintf(stderr, "kiln eval: out of memory\n"); return 1; }
    e->idx = e->sp.test;
    e->n = e->sp.n_test;
    if (!strcmp(a->split, "val")) { e->idx = e->sp.val; e->n = e->sp.n_val; }
    else if (!strcmp(a->split, "train")) { e->idx = e->sp.train; e->n = e->sp.n_train; }
    else if (!strcmp(a->split, "all")) {
        if (!(e->all = malloc(sizeof(int) * (size_t)ds->n + 1))) { fprintf(stderr, "kiln eval: out of memory\n"); return 1; }
        for (int i = 0; i < ds->n; i++) e->all[i] = i;
        e->idx = e->all;
        e->n = ds->n;
    }
    if (e->n < 1) {
        fprintf(stderr, "kiln eval: %s: the %s split is empty (%d images in all)\n", a->data, a->split, ds->n);
        return 2;
    }
    printf("split %s, %d of %d images: %s\n", a->split, e->n, ds->n, why);
    warn_coarse_split(stdout, a->split, e->n);

    /* the data's labels become the weights' outputs (after the split, which
     * is made on the source's own labels) */
    if (!(e->map = malloc(sizeof(int) * ((size_t)ds->num_classes + 1)))) { fprintf(stderr, "kiln eval: out of memory\n"); return 1; }
    if ((rc = match_classes(ds, a->data, e->wnames, e->nw, a->weights, a->class_map, e->map, &e->K))) return rc;
    for (int i = 0; i < ds->n; i++) ds->labels[i] = e->map[ds->labels[i]];
    return 0;
}

/* The network with its head sized to the classes, planned inference-only,
 * the weights loaded (a head they do not fill is an error), on the
 * backend. Returns 0 or an exit code (message printed). */
static int eval_network(Eval *e, const EvalArgs *a)
{
    char err[1024];
    Graph *g = &e->g;
    int rc, h = graph_head(g);
    if (h >= 0 && g->layers[h].out.c != e->K && (rc = graph_set_num_classes(g, e->K, err, sizeof err))) {
        fprintf(stderr, "kiln eval: %s\n", err);
        return rc;
    }
    graph_flags_all(g, 0, BN_FROZEN);
    PlanOptions po = {.batch = a->batch, .fuse = 1, .fold = 1};
    if (plan_build(&e->p, g, &po, err, sizeof err)) { fprintf(stderr, "kiln eval: %s\n", err); return 1; }
    e->planned = 1;
    if (!(e->params = malloc(sizeof(float) * (e->p.param_floats + 1)))) { fprintf(stderr, "kiln eval: out of memory\n"); return 1; }
    params_init(&e->p, e->params, (uint64_t)a->seed, 0, g->n_layers - 1);
    WeightsReport wr;
    if ((rc = weights_load(&e->p, e->params, a->weights, &wr, stderr, err, sizeof err))) {
        fprintf(stderr, "kiln eval: %s\n", err);
        return rc;
    }
    if (wr.head_replaced) {
        if (wr.head_from > 0 && e->nw)
            fprintf(stderr, "kiln eval: %s: its head '%s' has %d outputs, its %s names %d classes\n", a->weights,
                    g->layers[h].name, wr.head_from, KILN_CLASSES_KEY, e->nw);
        else if (wr.head_from > 0)
            fprintf(stderr, "kiln eval: %s: its head '%s' has %d classes, the data set %s has %d: "
                    "these weights were not trained on this data set\n", a->weights, g->layers[h].name, wr.head_from,
                    a->data, e->K);
        else
            fprintf(stderr, "kiln eval: %s: no weights for the head '%s' (a notop export?): nothing to evaluate\n",
                    a->weights, h >= 0 ? g->layers[h].name : "?");
        return 2;
    }
    if (!(e->be = backend_create(a->device, &e->p, NULL, err, sizeof err))) { fprintf(stderr, "kiln eval: %s\n", err); return 1; }
    e->be->write_params(e->be, e->params);
    return 0;
}

/* Count the confusion matrix over the chosen images and print it with the
 * accuracies. Returns 0 or an exit code (message printed). */
static int eval_count(Eval *e, const EvalArgs *a)
{
    const InputAttr *in = &e->g.layers[0].a.input;
    Preproc pp = {in->scale, {in->mean[0], in->mean[1], in->mean[2], in->mean[3]},
                  {in->std[0], in->std[1], in->std[2], in->std[3]}};
    DataView dv = {&e->ds, &e->sp, pp, NULL};
    int K = e->K;
    long *cm = calloc((size_t)K * (size_t)K, sizeof(long));
    if (!cm) { fprintf(stderr, "kiln eval: out of memory\n"); return 1; }
    double t0 = kiln_now();
    int rc = confusion_matrix(e->be, &dv, e->idx, e->n, K, cm);
    if (rc) {
        fprintf(stderr, "kiln eval: %s\n", rc == 2 ? "a label outside the head's classes" : "out of memory");
        free(cm);
        return rc;
    }
    double secs = kiln_now() - t0;
    const Dataset *ds = &e->ds;
    printf("eval %s (%s) with %s\n", e->g.name, a->arch, a->weights);
    printf("data %s: %d images %dx%dx%d, %d classes; split %s (seed %d): %d images, %.2fs (%.0f img/s)\n",
           ds->source, ds->n, ds->h, ds->w, ds->c, ds->num_classes, a->split, a->seed, e->n, secs,
           secs > 0 ? e->n / secs : 0.0);
    print_results(e->nw ? e->wnames : ds->class_names, cm, K);
    free(cm);
    return 0;
}

/* `kiln eval`: parse, choose the images, load the arch, open and map the
 * data, plan inference-only with the weights, count. */
int cmd_eval(int argc, char **argv)
{
    EvalArgs a;
    int rc = eval_args(argc, argv, &a);
    if (rc >= 0) return rc;
    char why[1200];
    eval_choose(&a, why, sizeof why);
    Eval e;
    memset(&e, 0, sizeof e);
    if (!(rc = eval_graph(&e, &a)) && !(rc = eval_data(&e, &a, why)) && !(rc = eval_network(&e, &a)))
        rc = eval_count(&e, &a);
    eval_free(&e);
    return rc;
}
