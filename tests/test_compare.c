/* tests/test_compare.c — evaluation and the strategy comparison:
 *  - confusion_matrix on a stub backend whose predictions are known (ties
 *    go to the first class, a short last batch, a label outside the head);
 *  - on archs/tiny.arch trained briefly by run_train: the matrix of its best
 *    weights (inference plan, BN folded) sums to the test split and its
 *    trace / total is the accuracy run_train reported; `kiln eval` prints the
 *    same, and refuses weights whose head does not fit the data (exit 2,
 *    naming the file);
 *  - `kiln compare` of 2 strategies x 2 trials (trial 1 at lr 1e6, where
 *    naive diverges) and its report: results.csv rows and values, both tables
 *    of report.md with both strategies, scatter.svg well-formed with one
 *    marker per trial, the diverged one hollow in the strip below the plot,
 *    and a legend; a second run keeps the finished trials; `--trial 1` runs
 *    only trial 1 and `kiln report` merges it; text from a run folder
 *    reaches report.md escaped.
 * The commands run as the built binary (KILN_BIN, set by ctest); the suite
 * runs without fork (see main). */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/evaluate.h"
#include "runtime/params.h"
#include "runtime/run.h"
#include "runtime/weights.h"

#define DATA "synthetic:n=200,noise=1"

static char tmp[256];          /* the test's scratch folder */
static char arch[1024];        /* archs/tiny.arch */
static RunResult pre;          /* the pretraining run (weights: tmp/pre/best.safetensors) */

/* ---- helpers ----------------------------------------------------------------------- */

/* The whole of a file (NUL-terminated), or NULL. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) { free(s); s = NULL; }
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

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
    const char *bin = getenv("KILN_BIN");
    ck_assert_msg(bin != NULL, "KILN_BIN is not set (ctest sets it to the built kiln)");
    char args[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s/out.txt' 2>'%s/err.txt'", bin, args, tmp, tmp);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* tmp/NAME's contents (asserted to exist). */
static char *tmp_file(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    char *s = slurp(path);
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

/* Unchecked fixture: tiny.arch, naive, 3 epochs from random weights into tmp/pre. */
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
    char out[512], err[1024];
    snprintf(out, sizeof out, "%s/pre", tmp);
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
        strcmp(line, "arch,strategy,trial,lr,batch,test_acc,train_seconds,epochs,diverged,run\n")) {
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
    ck_assert(strstr(t1, "| Strategy | Trials | Diverged | Mean test accuracy | SD | Mean train time (s) |"));
    ck_assert(strstr(t2, "| Strategy | Best test accuracy | Its train time (s) | Trial | LR | Batch | Epochs |"));
    ck_assert_int_eq(count(md, "| naive |"), 2);
    ck_assert_int_eq(count(md, "| frozen |"), 2);
    ck_assert_msg(strstr(t1, "| naive | 2 | 1 | "), "naive's row does not count 2 trials, 1 diverged:\n%s", md);
    char want[96], bold[96];                              /* the best naive trial is trial 0, the only one left */
    snprintf(want, sizeof want, "| naive | %.2f%% | ", 100 * r[0].acc);
    snprintf(bold, sizeof bold, "| naive | **%.2f%%** | ", 100 * r[0].acc);
    ck_assert_msg(strstr(t2, want) || strstr(t2, bold), "no '%s' in:\n%s", want, t2);
    free(md);

    /* scatter.svg: well-formed, one marker per trial, diverged apart, a legend */
    char *svg = tmp_file("cmp/scatter.svg");
    const char *why = xml_check(svg);
    ck_assert_msg(why == NULL, "scatter.svg is not well-formed XML: %s", why);
    ck_assert_int_eq(count(svg, "<g class=\"marker\""), 4 - ndiv);
    ck_assert_int_eq(count(svg, "<g class=\"marker diverged\""), ndiv);
    ck_assert(strstr(svg, "<g class=\"legend\">"));
    ck_assert_int_eq(count(svg, "class=\"legend-marker\""), 3);        /* naive, frozen, the diverged sample */
    ck_assert(strstr(svg, ">naive (2, 1 diverged)</text>") && strstr(svg, ">frozen (2"));
    ck_assert(strstr(svg, "class=\"pareto\"") && strstr(svg, "test accuracy (%)") && strstr(svg, "train time (s"));
    const char *strip = strstr(svg, "class=\"strip\"");
    ck_assert(strip != NULL);
    const char *rect = strip;
    while (rect > svg && *rect != '<') rect--;
    const char *sy = strstr(rect, " y=\"");
    ck_assert(sy != NULL && sy < strip);
    double strip_top = atof(sy + 4);
    for (const char *m = svg; (m = strstr(m, "<g class=\"marker")); m++) {
        int div = !strncmp(m, "<g class=\"marker diverged\"", 26);
        double y = marker_y(m);
        ck_assert_msg(div ? y > strip_top : y < strip_top, "%s marker at y %.1f, the strip starts at %.1f",
                      div ? "a diverged" : "a trained", y, strip_top);
    }
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
    suite_add_tcase(s, unit);
    TCase *runs = tcase_create("runs");
    tcase_add_unchecked_fixture(runs, pretrain, cleanup);
    tcase_add_test(runs, confusion_matches_training);
    tcase_add_test(runs, compare_and_report);
    tcase_add_test(runs, report_escapes_run_text);
    suite_add_tcase(s, runs);
    return s;
}

/* Exit status: failure when any check failed. */
int main(void)
{
    SRunner *sr = srunner_create(compare_suite());
    /* in-process: the fixture trains with OpenMP in this process, and
     * libgomp's thread pool does not survive a fork (a forked test would hang) */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
