/* tests/test_convnext.c — ConvNeXt (channel LayerNorm, GELU, layer scale)
 * against timm (tests/fixtures/make-convnext-fixture made the fixtures):
 *  - archs/convnext_tiny.arch has timm's convnext_tiny counts: 28,589,128
 *    learnable parameters, its conv and Linear multiply-adds at 224 px, and
 *    its layer-norm elements, which with fvcore's 5 per element give the
 *    4.47 GMACs timm's tables quote;
 *  - the narrow ConvNeXt (tests/fixtures/convnext_narrow.arch) with the
 *    fixture's random weights, on its 4 fixed, already preprocessed inputs,
 *    gives timm's logits, unfused and fused (conv + GELU in one epilogue);
 *  - one training step (SGD with momentum 0.9, weight decay 0, from zero
 *    momentum: the first step is plain SGD) gives timm's loss and timm's
 *    parameters after its plain SGD step, unfused and fused, and the step
 *    itself (after - before) matches timm's to 1e-3 normwise per tensor, so
 *    the comparison is not carried by the unchanged part of the weights;
 *  - tools/import-timm turns timm's state dict of the narrow net into the
 *    very weights those tests load, bit for bit (where python3 has numpy;
 *    otherwise that test says so and skips).
 * Values compare as |got - ref| <= ATOL + RTOL*|ref| with ATOL = RTOL = 1e-4.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/backend.h"
#include "runtime/safetensors.h"
#include "runtime/weights.h"
#include "tests/file_fixture.h"
#include "suite_main.h"

#define BATCH 4
#define CLASSES 10
#define RTOL 1e-4
#define ATOL 1e-4


static void load_graph(Graph *g, const char *rel)
{
    char path[1200], err[512];
    snprintf(path, sizeof path, "%s/%s", source_dir(), rel);
    ck_assert_msg(graph_load(g, path, err, sizeof err) == 0, "%s", err);
}

static void load_reference(StFile *fx)
{
    char path[1200], err[512];
    snprintf(path, sizeof path, "%s/tests/fixtures/convnext_narrow_reference.safetensors", source_dir());
    ck_assert_msg(st_load(path, fx, err, sizeof err) == 0, "%s", err);
}

static const StTensor *ref_tensor(const StFile *fx, const char *name, size_t numel)
{
    const StTensor *t = st_find(fx, name);
    ck_assert_msg(t != NULL, "reference has no tensor %s", name);
    ck_assert_msg(t->numel == numel, "reference %s has %zu values, kiln %zu", name, t->numel, numel);
    return t;
}

static long long meta_ll(const StFile *fx, const char *key)
{
    const char *v = st_meta(fx, key);
    ck_assert_msg(v != NULL, "reference has no metadata %s", key);
    return atoll(v);
}

/* Worst |got - ref| / (ATOL + RTOL*|ref|) over n values; asserts <= 1. */
static void expect_close(const char *what, const float *got, const float *ref, size_t n)
{
    double worst = 0, wabs = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]), r = d / (ATOL + RTOL * fabs((double)ref[i]));
        if (!(r <= worst)) { worst = r; at = i; }
        if (d > wabs) wabs = d;
    }
    printf("convnext: %-40s n=%6zu worst/tol %.3f max |d| %.2e\n", what, n, worst, wabs);
    ck_assert_msg(worst <= 1, "%s: value %zu is %g, timm %g (beyond %g + %g*|ref|)", what, at,
                  (double)got[at], (double)ref[at], ATOL, RTOL);
}

/* ==== counts ================================================================= */

/* Multiply-adds of the convs, depthwise convs and dense layers (no bias), and
 * the elements the layer norms normalize. */
static void graph_macs(const Graph *g, long long *macs, long long *ln)
{
    *macs = *ln = 0;
    for (int i = 0; i < g->n_layers; i++) {
        const Layer *l = &g->layers[i];
        Shape o = l->out, x = l->n_in ? g->layers[l->in[0]].out : (Shape){0, 0, 0};
        if (l->op == OP_CONV) *macs += (long long)o.h * o.w * o.c * l->a.conv.kh * l->a.conv.kw * x.c;
        if (l->op == OP_DWCONV) *macs += (long long)o.h * o.w * o.c * l->a.conv.kh * l->a.conv.kw;
        if (l->op == OP_DENSE) *macs += (long long)x.h * x.w * x.c * o.c;
        if (l->op == OP_LAYERNORM) *ln += (long long)o.h * o.w * o.c;
    }
}

START_TEST(tiny_counts)
{
    Graph g;
    StFile fx;
    load_graph(&g, "archs/convnext_tiny.arch");
    load_reference(&fx);
    long long macs, ln;
    graph_macs(&g, &macs, &ln);
    printf("convnext_tiny: %zu parameters, %lld MACs, %lld layer-norm elements: %.4g GMACs (fvcore)\n",
           graph_learnable(&g), macs, ln, (double)(macs + 5 * ln) / 1e9);
    ck_assert_uint_eq(graph_learnable(&g), 28589128);
    ck_assert_uint_eq(graph_learnable(&g), (size_t)meta_ll(&fx, "kiln.fixture.convnext_tiny.params"));
    ck_assert_uint_eq(graph_bn_stats(&g), 0);
    ck_assert_int_eq(macs, meta_ll(&fx, "kiln.fixture.convnext_tiny.macs"));
    ck_assert_int_eq(ln, meta_ll(&fx, "kiln.fixture.convnext_tiny.layernorm_elems"));
    ck_assert_int_eq((macs + 5 * ln + 5000000) / 10000000, 447);   /* 4.47 G */
    ck_assert_int_eq(g.layers[graph_head(&g)].out.c, 1000);
    st_free(&fx);
    graph_free(&g);
}
END_TEST

/* ==== the narrow net ========================================================= */

typedef struct { Plan p; Backend *be; float *arena; } Net;

/* The narrow net, everything trainable, at batch 4, fused or not, with the
 * fixture's weights loaded (arena keeps them). */
static void net_open(Net *net, Graph *g, int fuse)
{
    char path[1200], err[1024];
    load_graph(g, "tests/fixtures/convnext_narrow.arch");
    graph_flags_all(g, 1, BN_TRAIN);
    PlanOptions po = {.batch = BATCH, .fuse = fuse, .fold = 1};
    ck_assert_msg(plan_build(&net->p, g, &po, err, sizeof err) == 0, "%s", err);
    net->be = cpu_backend_create(&net->p, err, sizeof err);
    ck_assert_msg(net->be != NULL, "%s", err);
    net->arena = calloc(net->p.param_floats, sizeof(float));
    ck_assert_ptr_nonnull(net->arena);
    snprintf(path, sizeof path, "%s/tests/fixtures/convnext_narrow.safetensors", source_dir());
    WeightsReport rep;
    ck_assert_msg(weights_load(&net->p, net->arena, path, &rep, NULL, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(rep.loaded, g->n_params);
    ck_assert_int_eq(rep.head_replaced, 0);
    ck_assert_int_eq(rep.extra, 0);
    net->be->write_params(net->be, net->arena);
}

static void net_close(Net *net, Graph *g)
{
    net->be->destroy(net->be);
    plan_free(&net->p);
    free(net->arena);
    graph_free(g);
}

/* The fixture's labels (kiln.fixture.labels). */
static void labels(const StFile *fx, int32_t *y)
{
    const char *s = st_meta(fx, "kiln.fixture.labels");
    ck_assert_ptr_nonnull(s);
    for (int i = 0; i < BATCH; i++) {
        char *end;
        y[i] = (int32_t)strtol(s, &end, 10);
        ck_assert_msg(end != s && y[i] >= 0 && y[i] < CLASSES, "bad kiln.fixture.labels %s", s);
        s = *end == ',' ? end + 1 : end;
    }
}

START_TEST(narrow_forward)
{
    int fuse = _i;
    Graph g;
    Net net;
    StFile fx;
    int32_t y[BATCH];
    load_reference(&fx);
    labels(&fx, y);
    net_open(&net, &g, fuse);
    ck_assert_uint_eq(graph_learnable(&g), 20794);
    const StTensor *x = ref_tensor(&fx, "input", (size_t)BATCH * 32 * 32 * 3);
    const StTensor *lg = ref_tensor(&fx, "logits", (size_t)BATCH * CLASSES);
    double loss;
    int correct;
    net.be->upload(net.be, x->data, y, BATCH);
    net.be->evaluate(net.be, BATCH, &loss, &correct);
    expect_close(fuse ? "logits, fused" : "logits, unfused", net.be->logits(net.be), lg->data,
                 lg->numel);
    const StTensor *lref = ref_tensor(&fx, "loss", 1);
    ck_assert_msg(fabs(loss - lref->data[0]) <= ATOL + RTOL * fabs(lref->data[0]),
                  "loss %.7f, timm %.7f", loss, (double)lref->data[0]);
    net_close(&net, &g);
    st_free(&fx);
}
END_TEST

START_TEST(narrow_sgd_step)
{
    int fuse = _i;
    Graph g;
    Net net;
    StFile fx;
    int32_t y[BATCH];
    load_reference(&fx);
    labels(&fx, y);
    net_open(&net, &g, fuse);
    const char *lr_s = st_meta(&fx, "kiln.fixture.lr");
    ck_assert_ptr_nonnull(lr_s);
    float lr = strtof(lr_s, NULL);
    ck_assert_msg(lr > 0, "bad kiln.fixture.lr %s", lr_s);
    const StTensor *x = ref_tensor(&fx, "input", (size_t)BATCH * 32 * 32 * 3);
    StepConfig cfg = {.group_lr = &lr, .n_groups = 1, .momentum = 0.9f, .weight_decay = 0};
    double loss;
    int correct;
    net.be->upload(net.be, x->data, y, BATCH);
    ck_assert_int_eq(net.be->train_step(net.be, BATCH, &cfg, &loss, &correct), 0);
    const StTensor *lref = ref_tensor(&fx, "loss", 1);
    printf("convnext: step loss %.7f, timm %.7f (%s)\n", loss, (double)lref->data[0],
           fuse ? "fused" : "unfused");
    ck_assert_msg(fabs(loss - lref->data[0]) <= ATOL + RTOL * fabs(lref->data[0]),
                  "loss %.7f, timm %.7f", loss, (double)lref->data[0]);

    float *after = calloc(net.p.param_floats, sizeof(float));
    ck_assert_ptr_nonnull(after);
    net.be->read_params(net.be, after);
    for (int i = 0; i < g.n_params; i++) {
        const Param *pa = &g.params[i];
        char key[160], what[200];
        snprintf(key, sizeof key, "step.%s", pa->name);
        const StTensor *r = ref_tensor(&fx, key, pa->numel);
        const float *got = after + net.p.param_off[i], *before = net.arena + net.p.param_off[i];
        snprintf(what, sizeof what, "%s after the step%s", pa->name, fuse ? ", fused" : "");
        expect_close(what, got, r->data, pa->numel);
        /* the step itself, normwise: ||d_kiln - d_timm|| <= 1e-3 ||d_timm|| */
        double num = 0, den = 0;
        for (size_t k = 0; k < pa->numel; k++) {
            double dk = (double)got[k] - before[k], dt = (double)r->data[k] - before[k];
            num += (dk - dt) * (dk - dt);
            den += dt * dt;
        }
        ck_assert_msg(den > 0, "%s: timm's step leaves it unchanged (test is vacuous)", pa->name);
        ck_assert_msg(sqrt(num) <= 1e-3 * sqrt(den), "%s: the step differs from timm's by %.3g relative",
                      pa->name, sqrt(num / den));
    }
    free(after);
    net_close(&net, &g);
    st_free(&fx);
}
END_TEST

/* ==== tools/import-timm ======================================================= */

/* Run a shell command; its exit code (-1 if it did not exit). */
static int run_cmd(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* tools/import-timm turns timm's state dict of the narrow net
 * (convnext_narrow_timm.safetensors) into exactly the kiln-named weights the
 * other tests load (convnext_narrow.safetensors, written by the fixture
 * maker's own mapping): every tensor, bit for bit, with kiln's metadata so
 * that weights_load checks the preprocessing. Needs python3 with numpy;
 * without it the test says so and skips. */
START_TEST(import_timm_matches)
{
    if (run_cmd("python3 -c 'import numpy' >/dev/null 2>&1") != 0) {
        printf("SKIP import_timm_matches: python3 cannot import numpy (pip install numpy to run it)\n");
        return;
    }
    char dir[] = "/tmp/kiln-convnext.XXXXXX", cmd[8192], tool[1200], arch[1200], in[1200], want[1200];
    char out[1100], err[1024];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(tool, sizeof tool, "%s/tools/import-timm", source_dir());
    snprintf(arch, sizeof arch, "%s/tests/fixtures/convnext_narrow.arch", source_dir());
    snprintf(in, sizeof in, "%s/tests/fixtures/convnext_narrow_timm.safetensors", source_dir());
    snprintf(want, sizeof want, "%s/tests/fixtures/convnext_narrow.safetensors", source_dir());
    snprintf(out, sizeof out, "%s/kiln.safetensors", dir);
    snprintf(cmd, sizeof cmd, "python3 '%s' --quiet --model convnext_tiny --arch '%s' '%s' '%s'", tool, arch,
             in, out);
    ck_assert_msg(run_cmd(cmd) == 0, "failed: %s", cmd);
    StFile a, b;
    ck_assert_msg(st_load(out, &a, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(st_load(want, &b, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(a.n, b.n);
    for (int i = 0; i < b.n; i++) {
        const StTensor *t = st_find(&a, b.tensors[i].name);
        ck_assert_msg(t != NULL, "import-timm wrote no %s", b.tensors[i].name);
        ck_assert_msg(t->numel == b.tensors[i].numel &&
                      memcmp(t->data, b.tensors[i].data, sizeof(float) * t->numel) == 0,
                      "%s: import-timm's values differ from the fixture's", t->name);
    }
    ck_assert_str_eq(st_meta(&a, "kiln.arch"), "convnext_narrow");
    printf("convnext: tools/import-timm gives the fixture's %d tensors bit for bit\n", b.n);
    /* and weights_load takes the file, preprocessing checked */
    Graph g;
    Plan p;
    load_graph(&g, "tests/fixtures/convnext_narrow.arch");
    PlanOptions po = {.batch = 1, .fuse = 1, .fold = 1};
    ck_assert_msg(plan_build(&p, &g, &po, err, sizeof err) == 0, "%s", err);
    float *arena = calloc(p.param_floats, sizeof(float));
    WeightsReport rep;
    ck_assert_msg(weights_load(&p, arena, out, &rep, NULL, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(rep.loaded, g.n_params);
    free(arena);
    plan_free(&p);
    graph_free(&g);
    st_free(&a);
    st_free(&b);
    unlink(out);
    rmdir(dir);
}
END_TEST

Suite *test_suite(void)
{
    Suite *s = suite_create("convnext");
    TCase *tc = tcase_create("timm");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, tiny_counts);
    tcase_add_loop_test(tc, narrow_forward, 0, 2);
    tcase_add_loop_test(tc, narrow_sgd_step, 0, 2);
    tcase_add_test(tc, import_timm_matches);
    suite_add_tcase(s, tc);
    return s;
}
