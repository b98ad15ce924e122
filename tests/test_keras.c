/* tests/test_keras.c — kiln's EfficientNetB0 and ResNet50V2 against Keras 3.
 *
 *  - archs/efficientnet_b0.arch and archs/resnet50v2.arch have exactly the
 *    Keras parameter counts (learnable and BN statistics), and the
 *    multiply-adds of their convs and dense layers equal those Keras's layer
 *    shapes give (recorded in the fixtures) at 224 and at 64 px;
 *  - with every parameter set by tests/fixtures/make-keras-fixtures' formula (below, in
 *    C: the same name hash, flat index and rounding), the plan at batch 2
 *    with every BN frozen (so frozen BNs fold into their convs), unfused and
 *    fused, gives the logits Keras computed for the same two images to 1e-4
 *    relative plus 1e-5 of the largest logit
 *    (tests/fixtures/keras_*_logits.safetensors);
 *  - a small model with every weighted layer kind does the same, and, where
 *    python3 can import h5py and numpy, tools/import-keras turns its Keras 3
 *    (.weights.h5) and Keras 2 (.h5) files into safetensors that
 *    weights_load takes and that hold the formula's values bit for bit.
 *    Without h5py that part says so and is skipped.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/backend.h"
#include "runtime/safetensors.h"
#include "runtime/weights.h"
#include "tests/reference_input.h"
#include "tests/suite_main.h"

/* ==== the formula (tests/fixtures/make-keras-fixtures says it in words) ============== */

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* Uniform in [-1, 1) from the name's hash and the flat index. */
static double unit(uint32_t h, size_t i)
{
    uint32_t x = h + (uint32_t)i * 2654435761u;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return (double)x / 4294967296.0 * 2.0 - 1.0;
}

/* Parameter pa's value at flat index i (kiln's layout). */
static float formula(const Param *pa, uint32_t h, size_t i, double gain)
{
    double u = unit(h, i);
    switch (pa->role) {
    case ROLE_KERNEL: case ROLE_DWKERNEL: {
        /* fan-in: R*S*C (conv), R*S (depthwise), F (dense) */
        size_t fan = 1;
        int nfan = pa->role == ROLE_DWKERNEL ? 2 : pa->ndim - 1;
        for (int d = 0; d < nfan; d++) fan *= (size_t)pa->dims[d];
        return (float)(u * sqrt(3.0 * gain / (double)fan));
    }
    case ROLE_BIAS: case ROLE_BETA: case ROLE_MEAN: return (float)(0.1 * u);
    case ROLE_GAMMA: return (float)(1.0 + 0.25 * u);
    case ROLE_VAR: return (float)(1.0 + 0.5 * u);
    }
    return 0;
}

static void fill_formula(const Plan *p, float *arena, double gain)
{
    const Graph *g = p->g;
    for (int k = 0; k < g->n_params; k++) {
        const Param *pa = &g->params[k];
        uint32_t h = fnv1a(pa->name);
        for (size_t i = 0; i < pa->numel; i++) arena[p->param_off[k] + i] = formula(pa, h, i, gain);
    }
}

/* ==== helpers ================================================================= */

static void path_of(char *buf, size_t len, const char *rel)
{
    const char *src = getenv("KILN_SOURCE_DIR");
    snprintf(buf, len, "%s/%s", src ? src : ".", rel);
}

static void load_arch(Graph *g, const char *rel)
{
    char path[1024], err[512];
    path_of(path, sizeof path, rel);
    ck_assert_msg(graph_load(g, path, err, sizeof err) == 0, "%s", err);
}

static void load_fixture(StFile *f, const char *rel)
{
    char path[1024], err[512];
    path_of(path, sizeof path, rel);
    ck_assert_msg(st_load(path, f, err, sizeof err) == 0, "%s", err);
}

static long long meta_ll(const StFile *f, const char *key)
{
    const char *v = st_meta(f, key);
    ck_assert_msg(v != NULL, "fixture metadata %s missing", key);
    return atoll(v);
}

/* Multiply-adds of the convs, depthwise convs and dense layers (no bias):
 * what Keras's layer shapes give. */
static long long graph_macs(const Graph *g)
{
    long long m = 0;
    for (int i = 0; i < g->n_layers; i++) {
        const Layer *l = &g->layers[i];
        Shape o = l->out, x = l->n_in ? g->layers[l->in[0]].out : (Shape){0, 0, 0};
        if (l->op == OP_CONV) m += (long long)o.h * o.w * o.c * l->a.conv.kh * l->a.conv.kw * x.c;
        if (l->op == OP_DWCONV) m += (long long)o.h * o.w * o.c * l->a.conv.kh * l->a.conv.kw;
        if (l->op == OP_DENSE) m += (long long)x.h * x.w * x.c * o.c;
    }
    return m;
}

/* A plan at batch n with every layer frozen and every BN frozen, fused or
 * not, parameters from `arena` (NULL: the formula with `gain`), evaluated on
 * the two images; the logits (n, K) are compared with the fixture's. */
static void forward_matches(Graph *g, const float *arena, double gain, const StFile *ref, const char *name,
                            int fuse)
{
    const int n = 2;
    char err[512], what[300];
    snprintf(what, sizeof what, "%s, %s", name, fuse ? "fused" : "unfused");
    graph_flags_all(g, 0, BN_FROZEN);
    Plan p;
    PlanOptions po = {.batch = n, .fuse = fuse, .fold = 1};
    ck_assert_msg(plan_build(&p, g, &po, err, sizeof err) == 0, "%s", err);
    int folds = 0, bns = 0;
    for (int i = 0; i < p.n_nodes; i++) folds += p.nodes[i].fold;
    for (int i = 0; i < g->n_layers; i++) bns += g->layers[i].op == OP_BN;
    Backend *be = cpu_backend_create(&p, err, sizeof err);
    ck_assert_msg(be != NULL, "%s", err);
    float *params = calloc(p.param_floats, sizeof(float));
    if (arena) memcpy(params, arena, sizeof(float) * p.param_floats);
    else fill_formula(&p, params, gain);
    be->write_params(be, params);
    float *x = reference_input(g, n);
    ck_assert(x != NULL);
    int32_t y[2] = {0, 0};
    be->upload(be, x, y, n);
    double loss;
    int correct;
    be->evaluate(be, n, &loss, &correct);
    const float *z = be->logits(be);
    const StTensor *t = st_find(ref, "logits");
    int K = g->layers[g->n_layers - 1].out.c;
    ck_assert_msg(t && t->numel == (size_t)n * K, "%s: fixture logits missing or not (%d, %d)", what, n, K);
    double amax = 0;
    for (size_t i = 0; i < t->numel; i++) amax = fmax(amax, fabs(t->data[i]));
    /* 1e-4 relative, plus 1e-5 of the largest logit for values near zero */
    double atol = 1e-5 * amax, worst = 0, worst_abs = 0;
    size_t at = 0;
    for (size_t i = 0; i < t->numel; i++) {
        double d = fabs((double)z[i] - t->data[i]), r = d / (1e-4 * fabs(t->data[i]) + atol);
        if (!(r <= worst)) { worst = r; at = i; }
        if (d > worst_abs) worst_abs = d;
    }
    printf("%s: %d BN layers, %d folded into convs; logits |max| %.4g; worst |kiln - keras| %.3g "
           "(%.3g of the bound 1e-4*|ref| + %.2g, at [%zu, %zu]: %.7g vs %.7g)\n", what, bns, folds, amax,
           worst_abs, worst, atol, at / (size_t)K, at % (size_t)K, z[at], t->data[at]);
    fflush(stdout);
    ck_assert_msg(worst <= 1.0, "%s: logit [%zu, %zu] is %.7g, Keras %.7g (%.3g of the bound)", what,
                  at / (size_t)K, at % (size_t)K, z[at], t->data[at], worst);
    ck_assert_msg(folds > 0, "%s: no BN was folded", what);
    free(x);
    free(params);
    be->destroy(be);
    plan_free(&p);
}

/* ==== the two networks ========================================================= */

static void network(const char *arch, const char *fixture, size_t learnable, size_t stats,
                    double gmac_lo, double gmac_hi)
{
    Graph g;
    StFile ref;
    char err[512];
    load_arch(&g, arch);
    load_fixture(&ref, fixture);
    ck_assert_msg(graph_learnable(&g) == learnable, "%s: %zu learnable parameters, Keras %zu", arch,
                  graph_learnable(&g), learnable);
    ck_assert_msg(graph_bn_stats(&g) == stats, "%s: %zu BN statistics, Keras %zu", arch, graph_bn_stats(&g),
                  stats);
    ck_assert_int_eq((long long)learnable, meta_ll(&ref, "keras.learnable"));
    ck_assert_int_eq((long long)stats, meta_ll(&ref, "keras.bn_statistics"));
    /* cost at 224 and 64 px */
    long long m224 = graph_macs(&g), f224 = graph_flops(&g);
    ck_assert_msg(m224 == meta_ll(&ref, "keras.macs.224"), "%s: %lld multiply-adds at 224 px, Keras %lld",
                  arch, m224, meta_ll(&ref, "keras.macs.224"));
    ck_assert_msg(m224 >= gmac_lo * 1e9 && m224 <= gmac_hi * 1e9, "%s: %.4g GMAC at 224 px", arch, m224 / 1e9);
    ck_assert_msg(f224 >= 2 * m224 && f224 <= 2.2 * m224, "%s: %lld FLOPs for %lld MACs", arch, f224, m224);
    ck_assert_int_eq(graph_set_input_size(&g, 64, 64, err, sizeof err), 0);
    long long m64 = graph_macs(&g), f64 = graph_flops(&g);
    ck_assert_msg(m64 == meta_ll(&ref, "keras.macs.64"), "%s: %lld multiply-adds at 64 px, Keras %lld", arch,
                  m64, meta_ll(&ref, "keras.macs.64"));
    printf("%s: %zu learnable + %zu BN statistics; 224 px: %.4g GMAC (%.4g GFLOPs as kiln counts, "
           "elementwise included); 64 px: %.4g GMAC (%.4g GFLOPs)\n", arch, learnable, stats, m224 / 1e9,
           f224 / 1e9, m64 / 1e9, f64 / 1e9);
    fflush(stdout);
    ck_assert_int_eq(graph_set_input_size(&g, 224, 224, err, sizeof err), 0);
    const char *gain = st_meta(&ref, "formula.gain");
    ck_assert_msg(gain != NULL, "%s: no formula.gain in the fixture", fixture);
    forward_matches(&g, NULL, atof(gain), &ref, arch, 0);
    forward_matches(&g, NULL, atof(gain), &ref, arch, 1);
    st_free(&ref);
    graph_free(&g);
}

START_TEST(efficientnet_b0_matches_keras)
{
    network("archs/efficientnet_b0.arch", "tests/fixtures/keras_efficientnet_b0_logits.safetensors",
            5288548, 42016, 0.38, 0.40);
}
END_TEST

/* (REFERENCE.md's 4.1 GMAC is ResNet-50 v1; Keras's ResNet50V2 strides in the
 * last block of a stack, which costs 3.48 GMAC.) */
START_TEST(resnet50v2_matches_keras)
{
    network("archs/resnet50v2.arch", "tests/fixtures/keras_resnet50v2_logits.safetensors",
            25568360, 45440, 3.4, 3.6);
}
END_TEST

/* ==== the small model and the importer ========================================= */

START_TEST(small_model_matches_keras)
{
    Graph g;
    StFile ref;
    load_arch(&g, "tests/fixtures/keras_small.arch");
    load_fixture(&ref, "tests/fixtures/keras_small_logits.safetensors");
    forward_matches(&g, NULL, 1.0, &ref, "keras_small (formula weights)", 0);
    forward_matches(&g, NULL, 1.0, &ref, "keras_small (formula weights)", 1);
    st_free(&ref);
    graph_free(&g);
}
END_TEST

static int have_h5py(void)
{
    return system("python3 -c 'import h5py, numpy' >/dev/null 2>&1") == 0;
}

/* Import `file` with tools/import-keras, load it with weights_load, check
 * every value against the formula and the logits against Keras's. */
static void import_and_run(const char *file)
{
    char dir[] = "/tmp/kiln-test-keras-XXXXXX", src[1024], arch[1024], out[1200], cmd[5200], err[512];
    ck_assert(mkdtemp(dir) != NULL);
    path_of(src, sizeof src, file);
    path_of(arch, sizeof arch, "tests/fixtures/keras_small.arch");
    snprintf(out, sizeof out, "%s/small.safetensors", dir);
    char tool[1024];
    path_of(tool, sizeof tool, "tools/import-keras");
    snprintf(cmd, sizeof cmd, "python3 '%s' --arch '%s' '%s' '%s'", tool, arch, src, out);
    int rc = system(cmd);
    ck_assert_msg(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "%s: exit %d", cmd,
                  WIFEXITED(rc) ? WEXITSTATUS(rc) : -1);

    Graph g;
    StFile ref;
    load_arch(&g, "tests/fixtures/keras_small.arch");
    load_fixture(&ref, "tests/fixtures/keras_small_logits.safetensors");
    graph_flags_all(&g, 0, BN_FROZEN);
    Plan p;
    PlanOptions po = {.batch = 2, .fuse = 1, .fold = 1};
    ck_assert_msg(plan_build(&p, &g, &po, err, sizeof err) == 0, "%s", err);
    float *arena = calloc(p.param_floats, sizeof(float));
    WeightsReport rep;
    ck_assert_msg(weights_load(&p, arena, out, &rep, stderr, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(rep.loaded, g.n_params);
    ck_assert_int_eq(rep.head_replaced, 0);
    ck_assert_int_eq(rep.extra, 0);
    for (int k = 0; k < g.n_params; k++) {
        const Param *pa = &g.params[k];
        uint32_t h = fnv1a(pa->name);
        for (size_t i = 0; i < pa->numel; i++) {
            float want = formula(pa, h, i, 1.0), got = arena[p.param_off[k] + i];
            ck_assert_msg(memcmp(&want, &got, sizeof want) == 0, "%s: %s[%zu] is %.9g, the formula %.9g",
                          file, pa->name, i, got, want);
        }
    }
    char what[256];
    snprintf(what, sizeof what, "keras_small imported from %s", file);
    forward_matches(&g, arena, 0, &ref, what, 1);
    free(arena);
    plan_free(&p);
    st_free(&ref);
    graph_free(&g);
    unlink(out);
    rmdir(dir);
}

START_TEST(import_keras3_weights_h5)
{
    if (!have_h5py()) {
        printf("SKIP import_keras3_weights_h5: python3 cannot import h5py and numpy "
               "(pip install h5py numpy to run it)\n");
        return;
    }
    import_and_run("tests/fixtures/keras_small.weights.h5");
}
END_TEST

START_TEST(import_keras2_h5)
{
    if (!have_h5py()) {
        printf("SKIP import_keras2_h5: python3 cannot import h5py and numpy "
               "(pip install h5py numpy to run it)\n");
        return;
    }
    import_and_run("tests/fixtures/keras_small_k2.h5");
}
END_TEST

Suite *test_suite(void)
{
    Suite *s = suite_create("keras");
    TCase *tc = tcase_create("keras");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, small_model_matches_keras);
    tcase_add_test(tc, import_keras3_weights_h5);
    tcase_add_test(tc, import_keras2_h5);
    tcase_add_test(tc, efficientnet_b0_matches_keras);
    tcase_add_test(tc, resnet50v2_matches_keras);
    suite_add_tcase(s, tc);
    return s;
}
