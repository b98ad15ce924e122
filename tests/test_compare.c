/* tests/test_compare.c — evaluation and the strategy comparison:
 *  - confusion_matrix on a stub backend whose predictions are known (ties
 *    go to the first class, a short last batch, a label outside the head);
 *  - on archs/tiny.arch trained briefly by run_train: the matrix of its best
 *    weights (inference plan, BN folded) sums to the test split and its
 *    trace / total is the accuracy run_train reported; `kiln eval` prints the
 *    same on the run's own test split, and refuses weights whose head does
 *    not fit the data (exit 2, naming the file);
 *  - class names: the run's weights files, config.json and summary.json hold
 *    them (kiln.classes round-trips quotes, backslashes and bytes that are
 *    not UTF-8); names match up to case and separators (Fashion-MNIST's
 *    against its folder spellings); `kiln eval` on an ImageFolder zip of the
 *    same images with the folders renamed (another byte order) prints the
 *    mapping and the very results of the zip with the weights' own names,
 *    on the whole source; a different set is refused with both lists (exit
 *    2); --class-map pairs the rest, and a bad map line is refused with
 *    file:line; weights without names are matched by index, saying so;
 *  - `kiln compare` of 2 strategies x 2 trials (trial 1 at lr 1e6, where
 *    naive diverges) and its report: results.csv rows and values, both tables
 *    of report.md with both strategies, scatter.svg well-formed with one
 *    marker per trial, the diverged one hollow in the strip below the plot,
 *    and a legend; a second run keeps the finished trials; `--trial 1` runs
 *    only trial 1 and `kiln report` merges it; text from a run folder
 *    reaches report.md escaped;
 *  - a compare of frozen, warmup and naive-bn-frozen with --warmup-epochs:
 *    only warmup warms up (naive-bn-frozen's losses differ from warmup's),
 *    report.md's tables follow the order asked with each strategy's
 *    settings, and an option no asked strategy uses is refused (exit 2);
 *  - a published results.csv drawn again: the scatter plot's accuracy axis
 *    leaves collapsed runs out, its title names arch, data, input and split,
 *    every LR is written, and rendered to PNG by rsvg-convert (skipped,
 *    saying so, where it is missing) every strategy's colour shows in the
 *    combined plot and in its own.
 * The commands run as the built binary (KILN_BIN, set by ctest); the suite
 * runs without fork (see main). */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "runtime/classes.h"
#include "runtime/evaluate.h"
#include "runtime/params.h"
#include "runtime/run.h"
#include "runtime/safetensors.h"
#include "runtime/weights.h"
#include "zip_fixture.h"
#include "tests/file_fixture.h"
#include "tests/kiln_cli.h"
#include "tests/suite_main.h"

#define DATA "synthetic:n=200,noise=1"

static char tmp[256];          /* the test's scratch folder */
static char arch[1024];        /* archs/tiny.arch */
static RunResult pre;          /* the pretraining run (weights: tmp/pre/best.safetensors) */

/* ---- helpers ----------------------------------------------------------------------- */

/* Occurrences of needle in s. */
static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* Run `$KILN_BIN ARGS` with stdout to tmp/out.txt and stderr to tmp/err.txt;
 * returns the exit status. */
static int kiln(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int kiln(const char *fmt, ...)
{
    char out[600], err[600];
    snprintf(out, sizeof out, "%s/out.txt", tmp);
    snprintf(err, sizeof err, "%s/err.txt", tmp);
    va_list ap;
    va_start(ap, fmt);
    int rc = kiln_vcmd(0, out, err, fmt, ap);
    va_end(ap);
    return rc;
}

/* tmp/NAME's contents (asserted to exist). */
static char *tmp_file(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    char *s = slurp(path, NULL);
    ck_assert_msg(s != NULL, "%s was not written", path);
    return s;
}

/* Is s well-formed XML: one root element, every tag closed in order,
 * attribute values quoted, '&' only in entities, no stray '<'? Returns NULL
 * or what is wrong. */
static const char *xml_check(const char *s)
{
    static char why[160];
    char stack[64][48];
    int depth = 0, roots = 0;
    for (const char *p = s; *p;) {
        if (*p == '&') {
            const char *e = strchr(p, ';');
            if (!e || e - p > 8 || (strncmp(p, "&amp;", 5) && strncmp(p, "&lt;", 4) && strncmp(p, "&gt;", 4) &&
                                    strncmp(p, "&quot;", 6) && strncmp(p, "&apos;", 6) && p[1] != '#'))
                return "a bare '&'";
            p = e + 1;
            continue;
        }
        if (*p != '<') { p++; continue; }
        if (!strncmp(p, "<?", 2)) { p = strstr(p, "?>"); if (!p) return "unclosed <?"; p += 2; continue; }
        if (!strncmp(p, "<!--", 4)) { p = strstr(p, "-->"); if (!p) return "unclosed comment"; p += 3; continue; }
        int closing = p[1] == '/';
        const char *n = p + 1 + closing;
        size_t len = strcspn(n, " \t\r\n/>");
        if (!len || len >= sizeof stack[0]) return "a bad tag name";
        const char *q = n + len;
        char quote = 0;
        for (; *q && (quote || *q != '>'); q++) {
            if (quote) { if (*q == quote) quote = 0; if (*q == '<') return "'<' inside an attribute"; }
            else if (*q == '"' || *q == '\'') quote = *q;
            else if (*q == '=' && q[1] != '"' && q[1] != '\'') return "an unquoted attribute value";
        }
        if (!*q) return "an unterminated tag";
        int self = q[-1] == '/';
        if (closing) {
            if (!depth || strncmp(stack[depth - 1], n, len) || stack[depth - 1][len]) {
                snprintf(why, sizeof why, "</%.*s> closes <%s>", (int)len, n, depth ? stack[depth - 1] : "nothing");
                return why;
            }
            depth--;
        } else if (!self) {
            if (depth == 0) roots++;
            if (depth == 64) return "too deep";
            snprintf(stack[depth++], sizeof stack[0], "%.*s", (int)len, n);
        } else if (depth == 0) {
            roots++;
        }
        p = q + 1;
    }
    if (depth) { snprintf(why, sizeof why, "<%s> never closed", stack[depth - 1]); return why; }
    return roots == 1 ? NULL : "not exactly one root element";
}

/* ---- fixture: tiny.arch trained briefly, once --------------------------------------- */

/* Unchecked fixture: tiny.arch, naive, 3 epochs from random weights into
 * tmp/pre, the final weights also to tmp/pre-final.safetensors. */
static void pretrain(void)
{
    const char *src = getenv("KILN_SOURCE_DIR");
    snprintf(arch, sizeof arch, "%s/archs/tiny.arch", src ? src : ".");
    snprintf(tmp, sizeof tmp, "/tmp/kiln-test-compare-XXXXXX");
    if (!mkdtemp(tmp)) { perror("mkdtemp"); abort(); }
    RunConfig c;
    run_config_default(&c);
    strategy_defaults(&c.spec, STRAT_NAIVE);
    c.spec.lr = 0.05f;
    c.spec.batch = 16;
    c.spec.max_epochs = 3;
    char out[512], save[512], err[1024];
    snprintf(out, sizeof out, "%s/pre", tmp);
    snprintf(save, sizeof save, "%s/pre-final.safetensors", tmp);
    c.save = save;
    c.arch = arch;
    c.data = DATA;
    c.out = out;
    c.progress = 0;
    c.log = fopen("/dev/null", "w");
    int rc = run_train(&c, NULL, &pre, err, sizeof err);
    fclose(c.log);
    if (rc || pre.diverged) { fprintf(stderr, "pretraining failed (%d): %s\n", rc, err); abort(); }
}

/* Remove the scratch folder. */
static void cleanup(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (tmp[0] && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
}

/* ---- a stub backend with known predictions ------------------------------------------ */

/* Image i's single pixel is its predicted class (255: every logit equal). */
typedef struct { float x[8]; int n; float logits[8 * 3]; } Stub;

/* Keep the batch: its pixels say what to predict. */
static void stub_upload(Backend *b, const float *x, const int32_t *y, int n)
{
    Stub *s = b->impl;
    (void)y;
    memcpy(s->x, x, sizeof(float) * (size_t)n);
    s->n = n;
}

/* Logits that put the maximum on the pixel's class (all equal for 255). */
static void stub_evaluate(Backend *b, int n, double *loss, int *correct)
{
    Stub *s = b->impl;
    ck_assert_int_eq(n, s->n);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++)
            s->logits[i * 3 + k] = s->x[i] == 255 ? 0.5f : (k == (int)s->x[i] ? 2.0f : -1.0f);
    *loss = 0;
    *correct = 0;
}

/* The logits of the last evaluate. */
static const float *stub_logits(Backend *b) { return ((Stub *)b->impl)->logits; }

/* Known predictions through a stub backend give exactly the expected matrix. */
START_TEST(confusion_known_predictions)
{
    /* 10 images, 3 classes, batches of 4 (4 + 4 + 2) */
    static const int32_t label[10] = {0, 0, 0, 1, 1, 1, 2, 2, 2, 2};
    static const uint8_t pred[10] = {0, 0, 2, 1, 255, 0, 2, 2, 1, 255};   /* 255: a tie, goes to class 0 */
    static const long want[9] = {2, 0, 1,
                                 2, 1, 0,
                                 1, 1, 2};
    Dataset ds;
    memset(&ds, 0, sizeof ds);
    ck_assert_int_eq(dataset_alloc(&ds, 10, 1, 1, 1, 3), 0);
    for (int i = 0; i < 10; i++) { ds.labels[i] = label[i]; ds.pixels[i] = pred[i]; }
    Plan plan;
    memset(&plan, 0, sizeof plan);
    plan.opt.batch = 4;
    Stub stub;
    memset(&stub, 0, sizeof stub);
    Backend be;
    memset(&be, 0, sizeof be);
    be.plan = &plan;
    be.impl = &stub;
    be.upload = stub_upload;
    be.evaluate = stub_evaluate;
    be.logits = stub_logits;
    DataView dv = {&ds, NULL, {1.0f, {0}, {1, 1, 1, 1}}, NULL};
    int idx[10];
    for (int i = 0; i < 10; i++) idx[i] = 9 - i;      /* any order: the matrix is the same */
    long cm[9];
    memset(cm, 0x55, sizeof cm);                       /* must be zeroed by the call */
    ck_assert_int_eq(confusion_matrix(&be, &dv, idx, 10, 3, cm), 0);
    for (int k = 0; k < 9; k++) ck_assert_msg(cm[k] == want[k], "cm[%d][%d] = %ld, want %ld", k / 3, k % 3, cm[k], want[k]);
    ck_assert_double_eq_tol(confusion_accuracy(cm, 3), 5.0 / 10.0, 1e-12);
    /* a subset: images 0..2 only */
    ck_assert_int_eq(confusion_matrix(&be, &dv, (int[]){0, 1, 2}, 3, 3, cm), 0);
    ck_assert(cm[0] == 2 && cm[2] == 1 && cm[4] == 0);
    /* a label the head cannot predict: refused */
    ds.labels[3] = 3;
    ck_assert_int_eq(confusion_matrix(&be, &dv, idx, 10, 3, cm), 2);
    dataset_free(&ds);
}
END_TEST

/* ---- the trained tiny network ------------------------------------------------------ */

/* The matrix of real weights agrees with run_train's accuracy and with `kiln eval`. */
START_TEST(confusion_matches_training)
{
    char err[1024], wpath[512];
    snprintf(wpath, sizeof wpath, "%s/pre/best.safetensors", tmp);
    Graph g;
    ck_assert_msg(graph_load(&g, arch, err, sizeof err) == 0, "%s", err);
    const InputAttr *in = &g.layers[0].a.input;
    Dataset ds;
    DataOptions o = {in->h, in->w, in->c, 0, 1};
    ck_assert_msg(dataset_open(&ds, DATA, &o, err, sizeof err) == 0, "%s", err);
    Split sp;
    ck_assert_int_eq(dataset_split(&ds, 1, &sp), 0);
    graph_flags_all(&g, 0, BN_FROZEN);
    Plan p;
    PlanOptions po = {.batch = 7, .fuse = 1, .fold = 1};       /* a batch that does not divide the split */
    ck_assert_msg(plan_build(&p, &g, &po, err, sizeof err) == 0, "%s", err);
    float *params = calloc(p.param_floats, sizeof(float));
    WeightsReport wr;
    ck_assert_msg(weights_load(&p, params, wpath, &wr, NULL, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(wr.head_replaced, 0);
    Backend *be = cpu_backend_create(&p, err, sizeof err);
    ck_assert_msg(be != NULL, "%s", err);
    be->write_params(be, params);
    Preproc pp = {in->scale, {in->mean[0], in->mean[1], in->mean[2]}, {in->std[0], in->std[1], in->std[2]}};
    DataView dv = {&ds, &sp, pp, NULL};
    int K = ds.num_classes;
    long cm[16], total = 0, diag = 0;
    ck_assert_int_eq(K, 4);
    ck_assert_int_eq(confusion_matrix(be, &dv, sp.test, sp.n_test, K, cm), 0);
    for (int t = 0; t < K; t++) {
        long row = 0, want = 0;
        for (int q = 0; q < K; q++) row += cm[t * K + q];
        for (int i = 0; i < sp.n_test; i++) want += ds.labels[sp.test[i]] == t;
        ck_assert_msg(row == want, "row %d sums to %ld, the split has %ld of class %d", t, row, want, t);
        total += row;
        diag += cm[t * K + t];
    }
    ck_assert_int_eq(total, sp.n_test);
    ck_assert_double_eq_tol((double)diag / total, pre.test_acc, 1e-12);
    ck_assert_double_eq_tol(confusion_accuracy(cm, K), evaluate_set(be, &dv, sp.test, sp.n_test, NULL), 1e-12);
    be->destroy(be);
    free(params);
    plan_free(&p);
    split_free(&sp);
    dataset_free(&ds);
    graph_free(&g);

    /* the command prints the same accuracy over the same images */
    ck_assert_int_eq(kiln("eval --arch '%s' --weights '%s' --data %s", arch, wpath, DATA), 0);
    char *out = tmp_file("out.txt");
    const char *a = strstr(out, "\naccuracy ");
    double acc;
    long hit, n;
    ck_assert_msg(a && sscanf(a, "\naccuracy %lf (%ld/%ld)", &acc, &hit, &n) == 3, "no accuracy line in:\n%s", out);
    ck_assert_int_eq(n, total);
    ck_assert_int_eq(hit, diag);
    ck_assert_msg(strstr(out, "split test, ") && strstr(out, "the run's own test split"), "%s", out);
    ck_assert(strstr(out, "confusion matrix (rows: true class, columns: predicted class)"));
    ck_assert(strstr(out, "grating3"));
    free(out);

    /* weights of a 4-class head on 3-class data: refused, naming the file */
    ck_assert_int_eq(kiln("eval --arch '%s' --weights '%s' --data synthetic:n=90,classes=3", arch, wpath), 2);
    char *e = tmp_file("err.txt");
    ck_assert_msg(strstr(e, wpath) && strstr(e, "4 classes"), "unexpected message: %s", e);
    free(e);
}
END_TEST

/* ---- class names ------------------------------------------------------------------------ */

/* Fashion-MNIST's names against its folder spellings, and what must not match. */
START_TEST(class_names_by_name)
{
    ck_assert(class_name_match("T-shirt/top", "t_shirt_top"));
    ck_assert(class_name_match("T-shirt/top", "T-shirt top"));
    ck_assert(class_name_match("Ankle boot", "ANKLE-BOOT"));
    ck_assert(!class_name_match("Shirt", "T-shirt"));
    ck_assert(!class_name_match("Bag", "Bags"));
    char *fm[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
    char *folders[10] = {"ankle_boot", "bag", "coat", "dress", "pullover",
                         "sandal", "shirt", "sneaker", "t_shirt_top", "trouser"};
    const int want[10] = {9, 8, 4, 3, 2, 5, 6, 7, 0, 1};
    int map[10];
    char err[4096];
    ck_assert_msg(classes_map(folders, 10, "data", fm, 10, "weights", NULL, map, err, sizeof err) == 0, "%s", err);
    for (int k = 0; k < 10; k++) ck_assert_int_eq(map[k], want[k]);
    /* two folders for one class: refused, both named */
    folders[1] = "T-SHIRT TOP";
    ck_assert_int_eq(classes_map(folders, 10, "data", fm, 10, "weights", NULL, map, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "'T-SHIRT TOP'") && strstr(err, "'t_shirt_top'") && strstr(err, "data, 10 classes:"),
                  "%s", err);
}
END_TEST

/* metadata key KILN_CLASSES_KEY of a weights file (asserted present). */
static char *classes_of(const char *path)
{
    StFile f;
    char err[512];
    ck_assert_msg(st_load(path, &f, err, sizeof err) == 0, "%s", err);
    const char *v = st_meta(&f, KILN_CLASSES_KEY);
    ck_assert_msg(v != NULL, "%s has no %s", path, KILN_CLASSES_KEY);
    char *s = strdup(v);
    st_free(&f);
    return s;
}

/* The "classes" array of tmp/pre/NAME as compact JSON. */
static char *classes_in_json(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/pre/%s", tmp, name);
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    ck_assert_msg(o != NULL, "%s: %s", path, je.text);
    char *s = json_dumps(json_object_get(o, "classes"), JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(o);
    return s;
}

/* tiny's plan at 4 classes with He-initialized parameters (seed 5). */
static void tiny_plan(Graph *g, Plan *p, float **params)
{
    char err[512];
    ck_assert_msg(graph_load(g, arch, err, sizeof err) == 0, "%s", err);
    PlanOptions po = {.batch = 4, .fuse = 1, .fold = 1};
    ck_assert_msg(plan_build(p, g, &po, err, sizeof err) == 0, "%s", err);
    *params = calloc(p->param_floats, sizeof(float));
    params_init(p, *params, 5, 0, g->n_layers - 1);
}

/* Every weights file of the run, config.json and summary.json name the
 * classes in label order; awkward names survive the metadata. */
START_TEST(class_names_stored)
{
    const char *want = "[\"grating0\",\"grating1\",\"grating2\",\"grating3\"]";
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/pre/best.safetensors", tmp);
    char *v = classes_of(path);
    ck_assert_str_eq(v, want);
    free(v);
    snprintf(path, sizeof path, "%s/pre-final.safetensors", tmp);
    v = classes_of(path);
    ck_assert_str_eq(v, want);
    free(v);
    v = classes_in_json("config.json");
    ck_assert_str_eq(v, want);
    free(v);
    v = classes_in_json("summary.json");
    ck_assert_str_eq(v, want);
    free(v);

    Graph g;
    Plan p;
    float *params;
    tiny_plan(&g, &p, &params);
    char *names[4] = {"T-shirt/top", "say \"hi\" \\o/", "caf\xc3\xa9", "bad\xff"};
    snprintf(path, sizeof path, "%s/awkward.safetensors", tmp);
    ck_assert_msg(weights_save(&p, params, path, names, 4, err, sizeof err) == 0, "%s", err);
    v = classes_of(path);
    char **back;
    int n;
    ck_assert_msg(classes_parse(path, v, &back, &n, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(n, 4);
    for (int k = 0; k < 3; k++) ck_assert_str_eq(back[k], names[k]);
    ck_assert_str_eq(back[3], "bad\\xff");      /* not UTF-8: its escaped text */
    classes_free(back, n);
    free(v);
    /* names that do not fit the head, and a value that is not a list of names */
    ck_assert_int_eq(weights_save(&p, params, path, names, 3, err, sizeof err), 2);
    ck_assert_int_eq(classes_parse(path, "{\"a\": 1}", &back, &n, err, sizeof err), 2);
    ck_assert_msg(strstr(err, path) && strstr(err, KILN_CLASSES_KEY), "%s", err);
    free(params);
    plan_free(&p);
    graph_free(&g);
}
END_TEST

/* DATA's images as JPEGs in an ImageFolder zip tmp/NAME, class k in the
 * folder folders[k]. */
static void data_zip(const char *name, const char *const folders[4])
{
    char err[512], path[512];
    Graph g;
    ck_assert_msg(graph_load(&g, arch, err, sizeof err) == 0, "%s", err);
    const InputAttr *in = &g.layers[0].a.input;
    Dataset ds;
    DataOptions o = {in->h, in->w, in->c, 0, 1};
    ck_assert_msg(dataset_open(&ds, DATA, &o, err, sizeof err) == 0, "%s", err);
    ZEntry *e = calloc((size_t)ds.n, sizeof *e);
    char (*names)[64] = calloc((size_t)ds.n, sizeof *names);
    uint8_t **jpg = calloc((size_t)ds.n, sizeof *jpg);
    for (int i = 0; i < ds.n; i++) {
        snprintf(names[i], sizeof names[i], "%s/img%03d.jpg", folders[ds.labels[i]], i);
        jpg[i] = jpeg_encode(ds.pixels + (size_t)i * ds.h * ds.w * ds.c, ds.w, ds.h, ds.c, 100, &e[i].len);
        e[i].name = names[i];
        e[i].data = jpg[i];
    }
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    write_zip(path, e, ds.n);
    for (int i = 0; i < ds.n; i++) free(jpg[i]);
    free(jpg);
    free(names);
    free(e);
    dataset_free(&ds);
    graph_free(&g);
}

/* The results part of an eval's output (accuracy, per-class table, matrix). */
static const char *results_of(const char *out)
{
    const char *r = strstr(out, "\naccuracy ");
    ck_assert_msg(r != NULL, "no accuracy line in:\n%s", out);
    return r;
}

/* Write text to tmp/map.txt. */
static void write_map(const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/map.txt", tmp);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

/* `kiln eval` on renamed folders: mapped by name, the same results; other
 * sets refused; --class-map; weights without names. */
START_TEST(eval_maps_classes_by_name)
{
    static const char *const same[4] = {"grating0", "grating1", "grating2", "grating3"};
    /* byte order sorts these 2, 1, 3, 0 */
    static const char *const renamed[4] = {"grating_0", "Grating-1", "GRATING 2", "grating3"};
    static const char *const other[4] = {"grating0", "grating1", "grating2", "stripes"};
    data_zip("same.zip", same);
    data_zip("renamed.zip", renamed);
    data_zip("other.zip", other);
    char wpath[512];
    snprintf(wpath, sizeof wpath, "%s/pre/best.safetensors", tmp);

    /* not the run's data: the whole source */
    ck_assert_int_eq(kiln("eval --arch '%s' --weights '%s' --data 'zip:%s/same.zip'", arch, wpath, tmp), 0);
    char *a = tmp_file("out.txt");
    ck_assert_msg(strstr(a, "split all, 200 of 200 images: the whole source") &&
                  strstr(a, "class names are the weights', in the same order"), "%s", a);
    ck_assert_int_eq(kiln("eval --arch '%s' --weights '%s' --data 'zip:%s/renamed.zip'", arch, wpath, tmp), 0);
    char *b = tmp_file("out.txt");
    ck_assert_msg(strstr(b, "split all, 200 of 200 images") && strstr(b, "mapped to the weights' 4 by name") &&
                  strstr(b, "data   0 'GRATING 2' -> weights   2 'grating2'") &&
                  strstr(b, "data   1 'Grating-1' -> weights   1 'grating1'") &&
                  strstr(b, "data   2 'grating3' -> weights   3 'grating3'") &&
                  strstr(b, "data   3 'grating_0' -> weights   0 'grating0'"), "%s", b);
    ck_assert_str_eq(results_of(b), results_of(a));
    free(b);

    /* another set of classes: refused, both lists */
    ck_assert_int_eq(kiln("eval --arch '%s' --weights '%s' --data 'zip:%s/other.zip'", arch, wpath, tmp), 2);
    char *e = tmp_file("err.txt"), want[700];
    snprintf(want, sizeof want, "data zip:%s/other.zip, 4 classes: 'grating0', 'grating1', 'grating2', 'stripes'", tmp);
    ck_assert_msg(strstr(e, want), "%s", e);
    snprintf(want, sizeof want, "weights %s, 4 classes: 'grating0', 'grating1', 'grating2', 'grating3'", wpath);
    ck_assert_msg(strstr(e, want) && strstr(e, "'stripes' matches no class"), "%s", e);
    free(e);

    /* a class map pairs what the names cannot */
    write_map("# the folder of grating3\n\nstripes = grating3\n");
    ck_assert_int_eq(kiln("eval --arch '%s' --weights '%s' --data 'zip:%s/other.zip' --class-map '%s/map.txt'",
                          arch, wpath, tmp, tmp), 0);
    b = tmp_file("out.txt");
    ck_assert_msg(strstr(b, "data   3 'stripes' -> weights   3 'grating3'"), "%s", b);
    ck_assert_str_eq(results_of(b), results_of(a));
    free(b);
    char mp[600];
    snprintf(mp, sizeof mp, "%s/map.txt:2: expected 'data name = weights name'", tmp);
    write_map("# a line without '='\nstripes grating3\n");
    ck_assert_int_eq(kiln("eval --arch '%s' --weights '%s' --data 'zip:%s/other.zip' --class-map '%s/map.txt'",
                          arch, wpath, tmp, tmp), 2);
    e = tmp_file("err.txt");
    ck_assert_msg(strstr(e, mp), "%s", e);
    free(e);
    snprintf(mp, sizeof mp, "%s/map.txt:1: 'zebra' is none of the weights' classes", tmp);
    write_map("stripes = zebra\n");
    ck_assert_int_eq(kiln("eval --arch '%s' --weights '%s' --data 'zip:%s/other.zip' --class-map '%s/map.txt'",
                          arch, wpath, tmp, tmp), 2);
    e = tmp_file("err.txt");
    ck_assert_msg(strstr(e, mp), "%s", e);
    free(e);

    /* weights written without names: by index, saying so; no class map */
    Graph g;
    Plan p;
    float *params;
    char err[512], old[512];
    tiny_plan(&g, &p, &params);
    snprintf(old, sizeof old, "%s/old.safetensors", tmp);
    ck_assert_msg(weights_save(&p, params, old, NULL, 0, err, sizeof err) == 0, "%s", err);
    free(params);
    plan_free(&p);
    graph_free(&g);
    ck_assert_int_eq(kiln("eval --arch '%s' --weights '%s' --data 'zip:%s/renamed.zip'", arch, old, tmp), 0);
    b = tmp_file("out.txt");
    ck_assert_msg(strstr(b, "stores no class names") && strstr(b, "by index, unchecked") &&
                  strstr(b, "GRATING 2"), "%s", b);
    free(b);
    ck_assert_int_eq(kiln("eval --arch '%s' --weights '%s' --data 'zip:%s/other.zip' --class-map '%s/map.txt'",
                          arch, old, tmp, tmp), 2);
    free(a);
}
END_TEST

/* ---- compare and report -------------------------------------------------------------- */

typedef struct { char strategy[32]; int trial; double lr; int batch; double acc, secs; int epochs; char div[8]; } CsvRow;

/* Parse results.csv of dir into rows (at most max); returns the count, or -1
 * when the header is not the expected one. */
static int read_results(const char *dir, CsvRow *rows, int max)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s/results.csv", tmp, dir);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s missing", path);
    char line[1024];
    int n = 0;
    if (!fgets(line, sizeof line, f) ||
        strcmp(line, "arch,strategy,trial,lr,batch,test_acc,train_seconds,epochs,diverged,run,phase_epochs,input_size,"
                     "max_epochs,patience,per_class,options,train_images,val_images,test_images,classes,data\n")) {
        fclose(f);
        return -1;
    }
    while (n < max && fgets(line, sizeof line, f)) {
        CsvRow *r = &rows[n];
        char archname[64];
        ck_assert_msg(sscanf(line, "%63[^,],%31[^,],%d,%lf,%d,%lf,%lf,%d,%7[^,],", archname, r->strategy, &r->trial,
                             &r->lr, &r->batch, &r->acc, &r->secs, &r->epochs, r->div) == 9, "bad row: %s", line);
        ck_assert_str_eq(archname, "tiny");
        n++;
    }
    fclose(f);
    return n;
}

/* First y coordinate of the path of the marker element starting at p. */
static double marker_y(const char *p)
{
    const char *d = strstr(p, " d=\"M");
    ck_assert(d != NULL);
    double x, y;
    ck_assert(sscanf(d + 5, "%lf,%lf", &x, &y) == 2);
    return y;
}

/* A mini sweep end to end: compare, its report files, rerun, --trial and merge. */
START_TEST(compare_and_report)
{
    const char *common = "--strategies naive,frozen --trials 2 --lrs 0.05,1e6 --batches 16 --epochs 2";
    char wpath[512];
    snprintf(wpath, sizeof wpath, "%s/pre/best.safetensors", tmp);
    int rc = kiln("compare --arch '%s' --data %s %s --weights '%s' --out '%s/cmp'", arch, DATA, common, wpath, tmp);
    char *out = tmp_file("out.txt"), *err = tmp_file("err.txt");
    ck_assert_msg(rc == 0, "compare exited %d:\n%s\n%s", rc, out, err);
    ck_assert_int_eq(count(out, "report: 4 runs"), 1);
    free(out);
    free(err);

    /* results.csv: 4 rows, the grid as documented, naive at 1e6 diverged */
    CsvRow r[8];
    ck_assert_int_eq(read_results("cmp", r, 8), 4);
    static const char *const strat[4] = {"naive", "naive", "frozen", "frozen"};
    int ndiv = 0;
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(r[i].strategy, strat[i]);
        ck_assert_int_eq(r[i].trial, i % 2);
        ck_assert_double_eq_tol(r[i].lr, i % 2 ? 1e6 : 0.05, 1e-6 * r[i].lr);
        ck_assert_int_eq(r[i].batch, 16);
        ck_assert(r[i].acc >= 0 && r[i].acc <= 1 && r[i].secs > 0);
        ck_assert(!strcmp(r[i].div, "true") || !strcmp(r[i].div, "false"));
        ndiv += !strcmp(r[i].div, "true");
    }
    ck_assert_str_eq(r[1].div, "true");                   /* naive at lr 1e6 */
    ck_assert_str_eq(r[0].div, "false");
    ck_assert_int_eq(r[0].epochs, 2);
    ck_assert_str_eq(r[2].div, "false");
    ck_assert_int_eq(r[2].epochs, 2);

    /* report.md: both tables, both strategies in each, naive's divergence counted */
    char *md = tmp_file("cmp/report.md");
    ck_assert(strstr(md, "## tiny"));
    const char *t1 = strstr(md, "### Mean over trials"), *t2 = strstr(md, "### Best trial");
    ck_assert(t1 && t2 && t1 < t2);
    ck_assert(strstr(t1, "| Strategy | Trials | Diverged | Collapsed | Mean test accuracy | SD | Mean train time (s) |"));
    ck_assert(strstr(t2, "| Strategy | Best test accuracy | Its train time (s) | Trial | LR | Batch | Epochs |"));
    ck_assert_int_eq(count(md, "| naive |"), 3);          /* the mean, best and settings tables */
    ck_assert_int_eq(count(md, "| frozen |"), 3);
    ck_assert_msg(strstr(t1, "| naive | 2 | 1 | "), "naive's row does not count 2 trials, 1 diverged:\n%s", md);
    char want[96], bold[96];                              /* the best naive trial is trial 0, the only one left */
    snprintf(want, sizeof want, "| naive | %.2f%% | ", 100 * r[0].acc);
    snprintf(bold, sizeof bold, "| naive | **%.2f%%** | ", 100 * r[0].acc);
    ck_assert_msg(strstr(t2, want) || strstr(t2, bold), "no '%s' in:\n%s", want, t2);
    free(md);

    /* scatter.svg: well-formed, one marker per trial in the combined plot,
     * diverged apart, a legend, a small plot per strategy */
    char *svg = tmp_file("cmp/scatter.svg");
    const char *why = xml_check(svg);
    ck_assert_msg(why == NULL, "scatter.svg is not well-formed XML: %s", why);
    const char *cs = strstr(svg, "<g class=\"combined\">"), *ce = cs ? strstr(cs, "\n</g>\n") : NULL;
    ck_assert(cs && ce);
    char *comb = strndup(cs, (size_t)(ce - cs));          /* the combined plot alone, for the counts below */
    ck_assert_int_eq(count(comb, "<g class=\"marker"), 4);
    ck_assert_int_eq(count(comb, "<g class=\"marker diverged\""), ndiv);
    ck_assert_int_eq(count(ce, "<g class=\"small\" data-strategy="), 2);
    ck_assert(strstr(svg, "<g class=\"legend\">"));
    ck_assert_int_eq(count(svg, "class=\"legend-marker\""), 3);        /* naive, frozen, the diverged sample */
    ck_assert(strstr(svg, ">naive (2, 1 diverged)</text>") && strstr(svg, ">frozen (2"));
    ck_assert(strstr(svg, "class=\"pareto\"") && strstr(svg, "test accuracy (%)") && strstr(svg, "train time (s"));
    const char *strip = strstr(comb, "class=\"strip\"");
    ck_assert(strip != NULL);
    const char *rect = strip;
    while (rect > comb && *rect != '<') rect--;
    const char *sy = strstr(rect, " y=\"");
    ck_assert(sy != NULL && sy < strip);
    double strip_top = atof(sy + 4);
    for (const char *m = comb; (m = strstr(m, "<g class=\"marker")); m++) {
        int apart = !strncmp(m, "<g class=\"marker diverged\"", 26) || !strncmp(m, "<g class=\"marker collapsed\"", 27);
        double y = marker_y(m);
        ck_assert_msg(apart ? y > strip_top : y < strip_top, "%s marker at y %.1f, the strips start at %.1f",
                      apart ? "a diverged or collapsed" : "a trained", y, strip_top);
    }
    free(comb);
    free(svg);

    /* again: every trial is kept, nothing retrains */
    rc = kiln("compare --arch '%s' --data %s %s --weights '%s' --out '%s/cmp'", arch, DATA, common, wpath, tmp);
    out = tmp_file("out.txt");
    ck_assert_msg(rc == 0 && count(out, "kept from an earlier run") == 4, "rerun:\n%s", out);
    free(out);

    /* one trial of each, then the merge */
    rc = kiln("compare --arch '%s' --data %s %s --weights '%s' --out '%s/one' --trial 1", arch, DATA, common, wpath, tmp);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(kiln("report '%s/one'", tmp), 0);
    ck_assert_int_eq(read_results("one", r, 8), 2);
    ck_assert(r[0].trial == 1 && r[1].trial == 1 && !strcmp(r[0].div, "true"));
    ck_assert_int_eq(kiln("report '%s/nothing-here'", tmp), 2);
}
END_TEST

/* The per-epoch losses of tmp/DIR/metrics.csv (the column named loss) into
 * loss; returns how many epochs. */
static int read_losses(const char *dir, double *loss, int max)
{
    char path[512], line[1024];
    snprintf(path, sizeof path, "%s/%s/metrics.csv", tmp, dir);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s missing", path);
    ck_assert(fgets(line, sizeof line, f) != NULL);
    int col = -1, k = 0;
    for (char *save = NULL, *t = strtok_r(line, ",\n", &save); t; t = strtok_r(NULL, ",\n", &save), k++)
        if (!strcmp(t, "loss")) col = k;
    ck_assert_msg(col >= 0, "%s has no loss column", path);
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        char *t = line;
        for (int c = 0; c < col && t; c++) t = strchr(t, ',') ? strchr(t, ',') + 1 : NULL;
        ck_assert(t != NULL);
        loss[n++] = atof(t);
    }
    fclose(f);
    return n;
}

/* config.json of tmp/DIR: the integer after "key": (asserted present). */
static long config_int(const char *dir, const char *key)
{
    char path[200], pat[64];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *s = tmp_file(path);
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(s, pat);
    ck_assert_msg(p != NULL, "no %s in %s", key, path);
    long v = atol(p + strlen(pat));
    free(s);
    return v;
}

/* A strategy's own option reaches only that strategy; the report lists every
 * strategy's settings in the order asked; an option no asked strategy uses
 * is refused. */
START_TEST(compare_options_per_strategy)
{
    char wpath[512];
    snprintf(wpath, sizeof wpath, "%s/pre/best.safetensors", tmp);
    int rc = kiln("compare --arch '%s' --data %s --strategies frozen,warmup,naive-bn-frozen --trials 1 --lrs 0.05 "
                  "--batches 16 --epochs 3 --warmup-epochs 2 --wd 0.0001 --weights '%s' --out '%s/opt'",
                  arch, DATA, wpath, tmp);
    char *out = tmp_file("out.txt"), *err = tmp_file("err.txt");
    ck_assert_msg(rc == 0, "compare exited %d:\n%s\n%s", rc, out, err);
    ck_assert_msg(strstr(out, "--warmup-epochs 2 applies to warmup only (not to naive-bn-frozen, frozen)"),
                  "no line saying where --warmup-epochs goes:\n%s", out);
    free(out);
    free(err);
    /* only warmup warms up; the common option reaches all three */
    ck_assert_int_eq(config_int("opt/tiny/warmup/trial-0", "warmup_epochs"), 2);
    ck_assert_int_eq(config_int("opt/tiny/frozen/trial-0", "warmup_epochs"), 0);
    ck_assert_int_eq(config_int("opt/tiny/naive-bn-frozen/trial-0", "warmup_epochs"), 0);
    double lw[8], ln[8];
    int nw = read_losses("opt/tiny/warmup/trial-0", lw, 8), nn = read_losses("opt/tiny/naive-bn-frozen/trial-0", ln, 8);
    ck_assert(nw >= 2 && nn >= 2);
    for (int e = 0; e < 2; e++)
        ck_assert_msg(fabs(lw[e] - ln[e]) > 1e-6 * fabs(ln[e]),
                      "epoch %d: naive-bn-frozen's loss %.9g equals warmup's: it warmed up too", e + 1, ln[e]);
    char *trial = tmp_file("opt/tiny/frozen/trial-0/trial.json");
    ck_assert_msg(strstr(trial, "\"--wd\"") && !strstr(trial, "--warmup-epochs"), "frozen's options:\n%s", trial);
    free(trial);

    /* report.md: every table in the order asked, each row's settings */
    char *md = tmp_file("opt/report.md");
    const char *set = strstr(md, "### Settings");
    ck_assert(set != NULL);
    const char *order[3] = {"| frozen |", "| warmup |", "| naive-bn-frozen |"};
    for (const char *t = md; (t = strstr(t, "\n| Strategy |")); t++)
        ck_assert_msg(strstr(t, order[0]) < strstr(t, order[1]) && strstr(t, order[1]) < strstr(t, order[2]),
                      "a table not in the order asked:\n%s", md);
    char *sp = strstr(set, "\n\n| Strategy | Input | Max epochs a phase | Patience | Batch | LR | Options | Images |");
    ck_assert_msg(sp != NULL, "no settings table:\n%s", set);
    /* tiny.arch's input, 3 epochs, patience 20, batch 16, lr 0.05; synthetic:n=200 splits 160/20/20 */
    const char *want[3] = {
        "| frozen | 16x16 | 3 | 20 | 16 | 0.05 | --wd 0.0001 | 160 train / 20 val / 20 test |",
        "| warmup | 16x16 | 3 | 20 | 16 | 0.05 | --warmup-epochs 2 --wd 0.0001 | 160 train / 20 val / 20 test |",
        "| naive-bn-frozen | 16x16 | 3 | 20 | 16 | 0.05 | --wd 0.0001 | 160 train / 20 val / 20 test |"};
    for (int k = 0; k < 3; k++) ck_assert_msg(strstr(sp, want[k]), "no row '%s' in:\n%s", want[k], sp);
    free(md);

    /* an option none of the asked strategies uses: refused, saying whose it is */
    rc = kiln("compare --arch '%s' --data %s --strategies naive,frozen --finetune-factor 0.5 --weights '%s' --out '%s/no'",
              arch, DATA, wpath, tmp);
    err = tmp_file("err.txt");
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(err, "--finetune-factor belongs to freeze-finetune, and none of the strategies asked "
                              "(naive, frozen) uses it"), "unexpected message: %s", err);
    free(err);
}
END_TEST

/* ---- the scatter plot, rendered ------------------------------------------------------- */

/* Big-endian 32-bit value at p. */
static uint32_t be32(const unsigned char *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }

/* Decode an 8-bit RGB or RGBA non-interlaced PNG (what rsvg-convert writes)
 * into w * h RGB pixels (alpha dropped: the plot's background is opaque);
 * NULL (with why) when it is not such a PNG. */
static unsigned char *png_rgb(const char *path, int *w, int *h, const char **why)
{
    char *buf = slurp(path, NULL);
    FILE *f = fopen(path, "rb");
    long n = f && !fseek(f, 0, SEEK_END) ? ftell(f) : -1;
    if (f) fclose(f);
    const unsigned char *p = (const unsigned char *)buf, *end = p + (n > 0 ? n : 0);
    unsigned char *idat = NULL, *raw = NULL, *rgb = NULL;
    size_t ni = 0;
    int ch = 0;
    *why = "not a PNG";
    if (!buf || n < 8 || memcmp(p, "\x89PNG\r\n\x1a\n", 8)) goto out;
    for (p += 8; p + 12 <= end; ) {
        uint32_t len = be32(p);
        const unsigned char *type = p + 4, *data = p + 8;
        if (len > (size_t)(end - data) - 4) { *why = "a truncated chunk"; goto out; }
        if (!memcmp(type, "IHDR", 4)) {
            *w = (int)be32(data);
            *h = (int)be32(data + 4);
            ch = data[9] == 2 ? 3 : data[9] == 6 ? 4 : 0;
            if (data[8] != 8 || !ch || data[12]) { *why = "not 8-bit RGB(A) non-interlaced"; goto out; }
        } else if (!memcmp(type, "IDAT", 4)) {
            idat = realloc(idat, ni + len);
            memcpy(idat + ni, data, len);
            ni += len;
        } else if (!memcmp(type, "IEND", 4)) {
            break;
        }
        p = data + len + 4;
    }
    if (!ch || !ni) { *why = "no IHDR or IDAT"; goto out; }
    size_t stride = (size_t)*w * ch;
    uLongf rawlen = (uLongf)((stride + 1) * *h);
    raw = malloc(rawlen);
    if (uncompress(raw, &rawlen, idat, ni) != Z_OK || rawlen != (stride + 1) * *h) { *why = "bad image data"; goto out; }
    for (int y = 0; y < *h; y++) {       /* undo each row's filter in place */
        unsigned char *row = raw + y * (stride + 1) + 1, *up = y ? row - stride - 1 : NULL;
        for (size_t i = 0; i < stride; i++) {
            int a = i >= (size_t)ch ? row[i - ch] : 0, b = up ? up[i] : 0, c = up && i >= (size_t)ch ? up[i - ch] : 0;
            int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
            int pred = row[-1] == 1 ? a : row[-1] == 2 ? b : row[-1] == 3 ? (a + b) / 2
                     : row[-1] == 4 ? (pa <= pb && pa <= pc ? a : pb <= pc ? b : c) : 0;
            row[i] = (unsigned char)(row[i] + pred);
        }
    }
    rgb = malloc((size_t)*w * *h * 3);
    for (int y = 0; y < *h; y++)
        for (int x = 0; x < *w; x++)
            memcpy(rgb + ((size_t)y * *w + x) * 3, raw + y * (stride + 1) + 1 + (size_t)x * ch, 3);
    *why = NULL;
out:
    free(buf);
    free(idat);
    free(raw);
    return rgb;
}

/* Pixels of colour "#rrggbb" in the rectangle (x0, y0, w, h) of an RGB image of width iw. */
static int pixels_of(const unsigned char *rgb, int iw, int ih, const char *hex, int x0, int y0, int w, int h)
{
    unsigned v = (unsigned)strtoul(hex + 1, NULL, 16);
    int n = 0;
    for (int y = y0 < 0 ? 0 : y0; y < y0 + h && y < ih; y++)
        for (int x = x0 < 0 ? 0 : x0; x < x0 + w && x < iw; x++) {
            const unsigned char *q = rgb + ((size_t)y * iw + x) * 3;
            n += q[0] == (v >> 16 & 255) && q[1] == (v >> 8 & 255) && q[2] == (v & 255);
        }
    return n;
}

/* The number after `attr="` in s (asserted present). */
static double attr_num(const char *s, const char *attr)
{
    char pat[32];
    snprintf(pat, sizeof pat, " %s=\"", attr);
    const char *p = strstr(s, pat);
    ck_assert_msg(p != NULL, "no %s", pat);
    return atof(p + strlen(pat));
}

/* A published results.csv with two collapsed runs (10%, 14.5%), one diverged
 * and five strategies whose best runs lie within a few pixels: the plot's
 * accuracy axis leaves the collapsed runs out, its title names arch, data,
 * input and split, every run's LR is written, and the rendered PNG shows
 * every strategy in the combined plot and in its own. */
START_TEST(scatter_rendered)
{
    static const struct { const char *s; double lr, acc, secs; int div; } R[] = {
        {"naive", 0.01, 0.100, 74.2, 0}, {"naive", 0.005, 0.851, 196.1, 0}, {"naive", 0.003, 0.845, 185.0, 0},
        {"naive", 0.002, 0.838, 180.4, 0}, {"naive", 0.001, 0.830, 190.2, 0},
        {"frozen", 0.01, 0.753, 6.3, 0}, {"frozen", 0.005, 0.748, 2.0, 0}, {"frozen", 0.003, 0.720, 2.5, 0},
        {"frozen", 0.002, 0.719, 2.0, 0}, {"frozen", 0.001, 0.730, 2.5, 0},
        {"freeze-finetune", 0.01, 0.861, 160.1, 0}, {"freeze-finetune", 0.005, 0.857, 141.9, 0},
        {"freeze-finetune", 0.003, 0.843, 146.5, 0}, {"freeze-finetune", 0.002, 0.839, 133.4, 0},
        {"freeze-finetune", 0.001, 0.825, 129.2, 0},
        {"layerwise", 0.01, 0.145, 54.8, 0}, {"layerwise", 0.005, 0.861, 137.3, 0},
        {"layerwise", 0.003, 0.849, 108.7, 0}, {"layerwise", 0.002, 0.850, 120.0, 0},
        {"layerwise", 0.001, 0.840, 125.0, 0},
        {"warmup", 0.01, 0.100, 20.0, 1}, {"warmup", 0.005, 0.866, 138.4, 0}, {"warmup", 0.003, 0.858, 131.0, 0},
        {"warmup", 0.002, 0.850, 129.0, 0}, {"warmup", 0.001, 0.845, 140.0, 0},
    };
    const int nr = (int)(sizeof R / sizeof R[0]);
    char path[512];
    snprintf(path, sizeof path, "%s/pub", tmp);
    ck_assert_int_eq(mkdir(path, 0777), 0);
    snprintf(path, sizeof path, "%s/pub/results.csv", tmp);
    FILE *f = fopen(path, "w");
    ck_assert(f != NULL);
    fprintf(f, "arch,strategy,trial,lr,batch,test_acc,train_seconds,epochs,diverged,run,phase_epochs,input_size,"
               "max_epochs,patience,per_class,options,train_images,val_images,test_images,classes,data\n");
    for (int i = 0; i < nr; i++)
        fprintf(f, "efficientnet_lite0,%s,%d,%g,32,%.6f,%.3f,15,%s,efficientnet_lite0/%s/trial-%d,,32x32,15,5,300,,"
                   "2670,330,3000,10,fashion-mnist:/data/fashion-mnist\n", R[i].s, i % 5, R[i].lr, R[i].acc,
                R[i].secs, R[i].div ? "true" : "false", R[i].s, i % 5);
    fclose(f);
    ck_assert_int_eq(kiln("report '%s/pub'", tmp), 0);
    char *out = tmp_file("out.txt");
    ck_assert_msg(strstr(out, "report: 25 runs (1 diverged, 2 collapsed, 0 skipped) from results.csv"), "%s", out);
    free(out);

    char *svg = tmp_file("pub/scatter.svg");
    const char *why = xml_check(svg);
    ck_assert_msg(why == NULL, "scatter.svg is not well-formed XML: %s", why);
    ck_assert(strstr(svg, ">efficientnet_lite0 on fashion-mnist: test accuracy against train time</text>"));
    ck_assert(strstr(svg, ">input 32x32, 2,670 train / 330 val / 3,000 test images; 25 runs, 2 collapsed (below 19%), "
                          "1 diverged</text>"));
    /* the accuracy axis: ticks from the runs that neither collapsed nor diverged (71.9% .. 86.6%) */
    const char *cs = strstr(svg, "<g class=\"combined\">"), *ce = cs ? strstr(cs, "\n</g>\n") : NULL;
    ck_assert(cs && ce);
    double lo = 1e9, hi = -1;
    int nt = 0;
    for (const char *t = cs; (t = strstr(t, "class=\"ytick\">")) && t < ce; t++, nt++) {
        double v = atof(t + 14);
        lo = fmin(lo, v);
        hi = fmax(hi, v);
    }
    ck_assert_msg(nt >= 3 && lo > 60 && lo <= 71.9 && hi >= 86.6 && hi <= 95,
                  "accuracy ticks from %g to %g (%d ticks): not the range of the runs that did not collapse", lo, hi, nt);
    /* each strategy's own plot: its LRs written beside its runs, the collapsed one listed */
    const char *names[5] = {"naive", "frozen", "freeze-finetune", "layerwise", "warmup"};
    const int shown[5] = {4, 5, 5, 4, 4};
    double cell[5][4];
    char colour[5][8];
    for (int k = 0; k < 5; k++) {
        char pat[96];
        snprintf(pat, sizeof pat, "<g class=\"small\" data-strategy=\"%s\"", names[k]);
        const char *g = strstr(svg, pat), *ge = g ? strstr(g, "\n</g>\n") : NULL;
        ck_assert_msg(g && ge, "no small plot for %s", names[k]);
        cell[k][0] = attr_num(g, "data-x");
        cell[k][1] = attr_num(g, "data-y");
        cell[k][2] = attr_num(g, "data-w");
        cell[k][3] = attr_num(g, "data-h");
        const char *fill = strstr(g, "class=\"small-title\" fill=\"");
        ck_assert(fill && fill < ge);
        snprintf(colour[k], sizeof colour[k], "%.7s", fill + 26);
        char *one = strndup(g, (size_t)(ge - g));
        ck_assert_int_eq(count(one, "class=\"lr-label\">"), shown[k]);
        ck_assert_msg(strstr(one, "class=\"lr-label\">0.003<"), "%s: no label 0.003", names[k]);
        if (k == 0) ck_assert(strstr(one, "collapsed: lr 0.01 (10.0%)"));
        if (k == 4) ck_assert(strstr(one, "diverged: lr 0.01"));
        free(one);
    }
    double px = attr_num(cs, "x"), py = attr_num(cs, "y"), pw = attr_num(cs, "width"), ph = attr_num(cs, "height");

    /* rendered: the picture's size, and every strategy's colour in the combined plot and in its own */
    if (system("command -v rsvg-convert >/dev/null 2>&1") != 0) {
        printf("scatter_rendered: rsvg-convert not found (Debian: librsvg2-bin, installed by tools/bootstrap); "
               "the PNG checks are skipped\n");
        free(svg);
        return;
    }
    char cmd[1200], png[512];
    snprintf(png, sizeof png, "%s/pub/scatter.png", tmp);
    snprintf(cmd, sizeof cmd, "rsvg-convert -o '%s' '%s/pub/scatter.svg'", png, tmp);
    ck_assert_int_eq(system(cmd), 0);
    int w = 0, h = 0;
    unsigned char *rgb = png_rgb(png, &w, &h, &why);
    ck_assert_msg(rgb != NULL, "%s: %s", png, why);
    ck_assert_int_eq(w, (int)attr_num(svg, "width"));
    ck_assert_int_eq(h, (int)attr_num(svg, "height"));
    for (int k = 0; k < 5; k++) {
        int in_own = pixels_of(rgb, w, h, colour[k], (int)cell[k][0], (int)cell[k][1], (int)cell[k][2], (int)cell[k][3]);
        int in_comb = pixels_of(rgb, w, h, colour[k], (int)px, (int)py, (int)pw, (int)ph);
        ck_assert_msg(in_own >= 40 && in_comb >= 10, "%s (%s): %d pixels in its own plot, %d in the combined one",
                      names[k], colour[k], in_own, in_comb);
    }
    free(rgb);
    free(svg);
}
END_TEST

/* Text a run folder holds (the data spec here) reaches report.md with its
 * control bytes escaped and '|' escaped, never raw. */
START_TEST(report_escapes_run_text)
{
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/hostile/r", tmp);
    snprintf(path, sizeof path, "mkdir -p '%s'", dir);
    ck_assert_int_eq(system(path), 0);
    snprintf(path, sizeof path, "%s/summary.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"arch\": \"tiny\", \"strategy\": \"naive\", \"test_acc\": 0.5, \"train_seconds\": 1.0, "
          "\"data\": \"evil\\u001b[2J|x\\nline\", \"lr\": 0.1, \"batch\": 32}\n", f);
    fclose(f);
    ck_assert_int_eq(kiln("report '%s/hostile'", tmp), 0);
    char *md = tmp_file("hostile/report.md");
    ck_assert_msg(strstr(md, "`evil\\x1b[2J\\|x\\x0aline`") != NULL, "%s", md);
    ck_assert_ptr_null(strchr(md, '\x1b'));
    free(md);
}
END_TEST

/* Unit tests first; the runs share the pretrained weights. */
Suite *compare_suite(void)
{
    Suite *s = suite_create("compare");
    TCase *unit = tcase_create("unit");
    tcase_add_test(unit, confusion_known_predictions);
    tcase_add_test(unit, class_names_by_name);
    suite_add_tcase(s, unit);
    TCase *runs = tcase_create("runs");
    tcase_add_unchecked_fixture(runs, pretrain, cleanup);
    tcase_add_test(runs, confusion_matches_training);
    tcase_add_test(runs, class_names_stored);
    tcase_add_test(runs, eval_maps_classes_by_name);
    tcase_add_test(runs, compare_and_report);
    tcase_add_test(runs, compare_options_per_strategy);
    tcase_add_test(runs, scatter_rendered);
    tcase_add_test(runs, report_escapes_run_text);
    suite_add_tcase(s, runs);
    return s;
}

/* The suite, run by tests/suite_main.c. */
Suite *test_suite(void)
{
    /* in-process: the fixture trains with OpenMP in this process, and
     * libgomp's thread pool does not survive a fork (a forked test would hang) */
    test_no_fork();
    return compare_suite();
}
