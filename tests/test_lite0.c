/* tests/test_lite0.c — EfficientNet-Lite0 with its published ImageNet weights
 * against the original PyTorch model (tests/fixtures/lite0_reference.safetensors,
 * made by tests/fixtures/make-lite0-fixture):
 *  - the arch has exactly the reference's 4,652,008 learnable parameters and
 *    42,016 BN statistics;
 *  - on two fixed, already preprocessed inputs (the formula below, the same
 *    as the fixture script's) kiln's CPU forward pass in inference mode
 *    matches the reference's intermediate activations (unfused plans, one per
 *    kept layer) and its logits (unfused, and fused with every BN folded),
 *    each value within atol + rtol*|ref|, rtol = atol = 1e-4.
 * The weights are weights/efficientnet_lite0.safetensors under
 * $KILN_SOURCE_DIR, which tools/bootstrap imports; without them the test
 * fails, saying so.
 *
 * With KILN_LITE0_PHOTOS=DIR (an ImageFolder directory, one photo per class
 * folder, as tools/lite0-classify lays out) a further case classifies those
 * photos through kiln's own JPEG loader and preprocessing and prints one line
 * per photo: "photo NAME top5 I:P I:P I:P I:P I:P" (ImageNet index:
 * probability); tools/lite0-classify names the classes. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/dataset.h"
#include "runtime/backend.h"
#include "runtime/safetensors.h"
#include "runtime/weights.h"
#include "tests/file_fixture.h"
#include "tests/suite_main.h"

#define BATCH 2
#define SIDE 224
#define RTOL 1e-4
#define ATOL 1e-4


static void load_arch(Graph *g)
{
    char path[1200], err[512];
    snprintf(path, sizeof path, "%s/archs/efficientnet_lite0.arch", source_dir());
    ck_assert_msg(graph_load(g, path, err, sizeof err) == 0, "%s", err);
}

/* The two inputs, NHWC, after preprocessing (tests/fixtures/make-lite0-fixture):
 * k = (x*(3+n) + y*(5+2n) + 37c + ((x*y) >> 5)*(n+1)) mod 256, value k/128 - 1. */
static float *make_inputs(void)
{
    float *x = malloc(sizeof(float) * BATCH * SIDE * SIDE * 3);
    ck_assert_ptr_nonnull(x);
    size_t i = 0;
    for (int n = 0; n < BATCH; n++)
        for (int y = 0; y < SIDE; y++)
            for (int xx = 0; xx < SIDE; xx++)
                for (int c = 0; c < 3; c++) {
                    int k = (xx * (3 + n) + y * (5 + 2 * n) + 37 * c + ((xx * y) >> 5) * (n + 1)) % 256;
                    x[i++] = (float)k / 128.0f - 1.0f;
                }
    return x;
}

/* A plan of the graph with its weights loaded, ready to evaluate. */
typedef struct { Plan p; Backend *be; } Net;

static void net_open(Net *net, const Graph *g, int fuse, int fold, int keep)
{
    char path[1200], err[1024];
    PlanOptions po = {.batch = BATCH, .fuse = fuse, .fold = fold, .keep = keep};
    ck_assert_msg(plan_build(&net->p, g, &po, err, sizeof err) == 0, "%s", err);
    net->be = cpu_backend_create(&net->p, err, sizeof err);
    ck_assert_msg(net->be != NULL, "%s", err);
    snprintf(path, sizeof path, "%s/weights/efficientnet_lite0.safetensors", source_dir());
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s is missing: run tools/bootstrap (it imports the published "
                  "EfficientNet-Lite0 weights)", path);
    fclose(f);
    float *arena = calloc(net->p.param_floats, sizeof(float));
    ck_assert_ptr_nonnull(arena);
    WeightsReport rep;
    int rc = weights_load(&net->p, arena, path, &rep, stderr, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(rep.head_replaced, 0);
    ck_assert_int_eq(rep.extra, 0);
    net->be->write_params(net->be, arena);
    free(arena);
}

static void net_close(Net *net)
{
    net->be->destroy(net->be);
    plan_free(&net->p);
}

static void net_forward(Net *net, const float *x)
{
    int32_t y[BATCH] = {0};
    double loss;
    int correct;
    net->be->upload(net->be, x, y, BATCH);
    net->be->evaluate(net->be, BATCH, &loss, &correct);
}

/* The reference tensor and its subsampling step (kiln.fixture.step.NAME). */
static const StTensor *fixture_tensor(const StFile *fx, const char *name, int *step)
{
    char key[128];
    const StTensor *t = st_find(fx, name);
    ck_assert_msg(t != NULL, "fixture has no tensor %s", name);
    snprintf(key, sizeof key, "kiln.fixture.step.%s", name);
    const char *s = st_meta(fx, key);
    *step = s ? atoi(s) : 1;
    ck_assert_int_ge(*step, 1);
    return t;
}

/* Worst |got-ref| / (ATOL + RTOL*|ref|) over the fixture's values, with the
 * kiln output `got` (BATCH, h, w, c) read at every step-th row and column;
 * also the worst absolute and relative error, for the report. */
typedef struct { double ratio, abs, rel; size_t at; } Err;

static Err compare(const float *got, Shape s, const StTensor *ref, int step)
{
    int oh = (s.h + step - 1) / step, ow = (s.w + step - 1) / step;
    ck_assert_msg(ref->numel == (size_t)BATCH * oh * ow * s.c, "fixture %s has %zu values, expected %d",
                  ref->name, ref->numel, BATCH * oh * ow * s.c);
    Err e = {0, 0, 0, 0};
    size_t i = 0;
    for (int n = 0; n < BATCH; n++)
        for (int y = 0; y < s.h; y += step)
            for (int x = 0; x < s.w; x += step)
                for (int c = 0; c < s.c; c++, i++) {
                    double g = got[(((size_t)n * s.h + y) * s.w + x) * s.c + c], r = ref->data[i];
                    double d = fabs(g - r), ratio = d / (ATOL + RTOL * fabs(r));
                    if (!(ratio <= e.ratio)) { e.ratio = ratio; e.at = i; }
                    if (d > e.abs) e.abs = d;
                    if (fabs(r) > 1e-2 && d / fabs(r) > e.rel) e.rel = d / fabs(r);
                }
    return e;
}

static void check_err(const char *what, Err e, const StTensor *ref)
{
    printf("lite0: %-28s worst |d|/(atol+rtol|ref|) %.3g, max |d| %.3g, max rel %.3g (|ref|>1e-2)\n",
           what, e.ratio, e.abs, e.rel);
    ck_assert_msg(e.ratio <= 1.0, "%s: value %zu is %g off (ref %g): beyond atol %g + rtol %g*|ref|",
                  what, e.at, e.abs, (double)ref->data[e.at], ATOL, RTOL);
}

static void load_fixture(StFile *fx)
{
    char path[1200], err[512];
    snprintf(path, sizeof path, "%s/tests/fixtures/lite0_reference.safetensors", source_dir());
    ck_assert_msg(st_load(path, fx, err, sizeof err) == 0, "%s", err);
}

/* ==== tests ================================================================== */

START_TEST(param_counts)
{
    Graph g;
    load_arch(&g);
    ck_assert_uint_eq(graph_learnable(&g), 4652008);
    ck_assert_uint_eq(graph_bn_stats(&g), 42016);
    ck_assert_int_eq(g.layers[0].out.h, 224);
    ck_assert_int_eq(g.layers[graph_head(&g)].out.c, 1000);
    graph_free(&g);
}
END_TEST

/* Each intermediate the fixture holds, from an unfused plan that keeps it. */
START_TEST(intermediates_match_pytorch)
{
    Graph g;
    StFile fx;
    load_arch(&g);
    graph_flags_all(&g, 0, BN_FROZEN);
    load_fixture(&fx);
    const char *layers = st_meta(&fx, "kiln.fixture.layers");
    ck_assert_ptr_nonnull(layers);
    float *x = make_inputs();
    char list[512];
    snprintf(list, sizeof list, "%s", layers);
    int checked = 0;
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        int l = graph_find(&g, name);
        ck_assert_msg(l >= 0, "fixture layer %s is not in the arch", name);
        if (l == graph_head(&g)) continue;          /* the logits: next test */
        int step;
        const StTensor *ref = fixture_tensor(&fx, name, &step);
        Net net;
        net_open(&net, &g, 0, 0, l);
        net_forward(&net, x);
        Err e = compare(net.be->layer_output(net.be, l), g.layers[l].out, ref, step);
        char what[96];
        snprintf(what, sizeof what, "%s (step %d)", name, step);
        check_err(what, e, ref);
        net_close(&net);
        checked++;
    }
    ck_assert_int_ge(checked, 4);
    free(x);
    st_free(&fx);
    graph_free(&g);
}
END_TEST

/* The logits, unfused and fused with every BN folded into its conv. */
START_TEST(logits_match_pytorch)
{
    Graph g;
    StFile fx;
    load_arch(&g);
    graph_flags_all(&g, 0, BN_FROZEN);
    load_fixture(&fx);
    int step, head = graph_head(&g);
    const StTensor *ref = fixture_tensor(&fx, g.layers[head].name, &step);
    ck_assert_int_eq(step, 1);
    float *x = make_inputs();
    for (int fused = 0; fused <= 1; fused++) {
        Net net;
        net_open(&net, &g, fused, fused, 0);
        net_forward(&net, x);
        Err e = compare(net.be->logits(net.be), g.layers[head].out, ref, 1);
        check_err(fused ? "logits (fused, BN folded)" : "logits (unfused)", e, ref);
        /* the same top class for both images */
        const float *lg = net.be->logits(net.be);
        for (int n = 0; n < BATCH; n++) {
            int a = 0, b = 0;
            for (int k = 1; k < 1000; k++) {
                if (lg[n * 1000 + k] > lg[n * 1000 + a]) a = k;
                if (ref->data[n * 1000 + k] > ref->data[n * 1000 + b]) b = k;
            }
            ck_assert_int_eq(a, b);
        }
        net_close(&net);
    }
    free(x);
    st_free(&fx);
    graph_free(&g);
}
END_TEST

/* tools/lite0-classify's photos: top-5 of each, printed. */
START_TEST(classify_photos)
{
    const char *dir = getenv("KILN_LITE0_PHOTOS");
    Graph g;
    load_arch(&g);
    graph_flags_all(&g, 0, BN_FROZEN);
    const InputAttr *in = &g.layers[0].a.input;
    char spec[1100], err[512];
    snprintf(spec, sizeof spec, "dir:%s", dir);
    Dataset ds;
    DataOptions o = {in->h, in->w, in->c, 0, 1};
    ck_assert_msg(dataset_open(&ds, spec, &o, err, sizeof err) == 0, "%s", err);
    ck_assert_int_ge(ds.n, 1);
    Preproc pp = {in->scale, {in->mean[0], in->mean[1], in->mean[2]}, {in->std[0], in->std[1], in->std[2]}};
    size_t img = (size_t)in->h * in->w * in->c;
    float *xb = malloc(sizeof(float) * img * BATCH);
    ck_assert_ptr_nonnull(xb);
    for (int first = 0; first < ds.n; first += BATCH) {
        int n = ds.n - first < BATCH ? ds.n - first : BATCH, idx[BATCH];
        int32_t y[BATCH];
        for (int i = 0; i < n; i++) idx[i] = first + i;
        dataset_batch(xb, y, &ds, idx, n, &pp);
        Net net;
        net_open(&net, &g, 1, 1, 0);
        double loss;
        int correct;
        net.be->upload(net.be, xb, y, n);
        net.be->evaluate(net.be, n, &loss, &correct);
        const float *lg = net.be->logits(net.be);
        for (int i = 0; i < n; i++) {
            const float *z = lg + (size_t)i * 1000;
            double mx = z[0], sum = 0;
            for (int k = 1; k < 1000; k++) if (z[k] > mx) mx = z[k];
            for (int k = 0; k < 1000; k++) sum += exp(z[k] - mx);
            int top[5];
            for (int t = 0; t < 5; t++) {
                int best = -1;
                for (int k = 0; k < 1000; k++) {
                    int taken = 0;
                    for (int u = 0; u < t; u++) taken |= top[u] == k;
                    if (!taken && (best < 0 || z[k] > z[best])) best = k;
                }
                top[t] = best;
            }
            printf("photo %s top5", ds.class_names[y[i]]);
            for (int t = 0; t < 5; t++) printf(" %d:%.4f", top[t], exp(z[top[t]] - mx) / sum);
            printf("\n");
        }
        net_close(&net);
    }
    fflush(stdout);
    free(xb);
    dataset_free(&ds);
    graph_free(&g);
}
END_TEST

Suite *test_suite(void)
{
    Suite *s = suite_create("lite0");
    TCase *tc = tcase_create("reference");
    tcase_set_timeout(tc, 600);
    if (getenv("KILN_LITE0_PHOTOS")) {
        tcase_add_test(tc, classify_photos);
    } else {
        tcase_add_test(tc, param_counts);
        tcase_add_test(tc, intermediates_match_pytorch);
        tcase_add_test(tc, logits_match_pytorch);
    }
    suite_add_tcase(s, tc);
    test_no_fork();
    return s;
}
