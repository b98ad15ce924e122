/* tests/test_timm.c — tools/import-timm against timm's own forward.
 *
 * For tf_efficientnet_lite0 and tf_efficientnet_b0: the timm-layout weights
 * of tests/fixtures/make-timm-fixtures' formula (regenerated with numpy by
 * its --weights mode, from the tensor names and shapes in the committed
 * fixture) are imported by tools/import-timm; weights_load takes every
 * parameter of the kiln arch from the result, and the plan at 64 px, batch
 * 2, every BN on its running statistics, unfused and fused, gives the logits
 * timm computed for the same two images to 1e-4 relative plus 1e-5 of the
 * largest logit (tests/fixtures/timm_*_logits.safetensors). Models whose
 * network differs from kiln's arch (efficientnet_b0, resnetv2_50) and
 * weights of another model are refused with exit 2.
 * Needs python3 with numpy (as tools/import-keras' tests); without it the
 * suite says so and skips. Runs the tools of $KILN_SOURCE_DIR with the kiln
 * of $KILN_BIN (both set by ctest).
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
#include "tests/reference_input.h"

#define SIZE 64

static void path_of(char *buf, size_t len, const char *rel)
{
    const char *src = getenv("KILN_SOURCE_DIR");
    snprintf(buf, len, "%s/%s", src ? src : ".", rel);
}

/* Run a shell command; its exit code (-1 if it did not exit). */
static int run(const char *cmd)
{
    int rc = system(cmd);
    return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int have_numpy(void)
{
    return run("python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

/* Regenerate MODEL's timm weights into dir/timm.safetensors and import them
 * into dir/kiln.safetensors; the importer's exit code. */
static int import_model(const char *dir, const char *model, const char *as_model)
{
    char maker[1024], tool[1024], cmd[4096];
    path_of(maker, sizeof maker, "tests/fixtures/make-timm-fixtures");
    path_of(tool, sizeof tool, "tools/import-timm");
    snprintf(cmd, sizeof cmd, "python3 '%s' --weights %s '%s/timm.safetensors'", maker, model, dir);
    ck_assert_msg(run(cmd) == 0, "%s failed", cmd);
    snprintf(cmd, sizeof cmd, "python3 '%s' --quiet --model %s '%s/timm.safetensors' '%s/kiln.safetensors'", tool,
             as_model, dir, dir);
    return run(cmd);
}

/* The logits of the plan (fused or not) with the imported weights, against
 * timm's; returns the largest |kiln - timm|. */
static double forward_matches(Graph *g, const char *weights, const StFile *ref, const char *what, int fuse)
{
    const int n = 2;
    char err[512];
    graph_flags_all(g, 0, BN_FROZEN);
    Plan p;
    PlanOptions po = {.batch = n, .fuse = fuse, .fold = 1};
    ck_assert_msg(plan_build(&p, g, &po, err, sizeof err) == 0, "%s", err);
    float *arena = calloc(p.param_floats, sizeof(float));
    WeightsReport rep;
    ck_assert_msg(weights_load(&p, arena, weights, &rep, stderr, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(rep.loaded, g->n_params);
    ck_assert_int_eq(rep.head_replaced, 0);
    ck_assert_int_eq(rep.extra, 0);
    Backend *be = cpu_backend_create(&p, err, sizeof err);
    ck_assert_msg(be != NULL, "%s", err);
    be->write_params(be, arena);
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
    double amax = 0, worst = 0, worst_abs = 0;
    for (size_t i = 0; i < t->numel; i++) amax = fmax(amax, fabs(t->data[i]));
    size_t at = 0;
    for (size_t i = 0; i < t->numel; i++) {
        double d = fabs((double)z[i] - t->data[i]), r = d / (1e-4 * fabs(t->data[i]) + 1e-5 * amax);
        if (!(r <= worst)) { worst = r; at = i; }
        if (d > worst_abs) worst_abs = d;
    }
    printf("%s, %s: logits |max| %.4g; max |kiln - timm| %.3g (%.3g of the bound 1e-4*|ref| + %.2g)\n", what,
           fuse ? "fused" : "unfused", amax, worst_abs, worst, 1e-5 * amax);
    fflush(stdout);
    ck_assert_msg(worst <= 1.0, "%s: logit [%zu, %zu] is %.7g, timm %.7g (%.3g of the bound)", what,
                  at / (size_t)K, at % (size_t)K, z[at], t->data[at], worst);
    free(x);
    free(arena);
    be->destroy(be);
    plan_free(&p);
    return worst_abs;
}

static void model_matches(const char *model, const char *arch)
{
    if (!have_numpy()) {
        printf("SKIP %s: python3 cannot import numpy (pip install numpy to run it)\n", model);
        return;
    }
    char dir[] = "/tmp/kiln-test-timm-XXXXXX", path[1024], fixture[1024], weights[1100], err[512];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(import_model(dir, model, model), 0);
    snprintf(weights, sizeof weights, "%s/kiln.safetensors", dir);
    char rel[256];
    snprintf(rel, sizeof rel, "tests/fixtures/timm_%s_logits.safetensors", model);
    path_of(fixture, sizeof fixture, rel);
    StFile ref;
    ck_assert_msg(st_load(fixture, &ref, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(st_meta(&ref, "timm.model"), model);
    ck_assert_int_eq(atoi(st_meta(&ref, "input.size")), SIZE);
    Graph g;
    path_of(path, sizeof path, arch);
    ck_assert_msg(graph_load(&g, path, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(graph_set_input_size(&g, SIZE, SIZE, err, sizeof err), 0);
    forward_matches(&g, weights, &ref, model, 0);
    forward_matches(&g, weights, &ref, model, 1);
    graph_free(&g);
    st_free(&ref);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(run(cmd), 0);
}

START_TEST(tf_efficientnet_lite0_matches_timm)
{
    model_matches("tf_efficientnet_lite0", "archs/efficientnet_lite0.arch");
}
END_TEST

START_TEST(tf_efficientnet_b0_matches_timm)
{
    model_matches("tf_efficientnet_b0", "archs/efficientnet_b0.arch");
}
END_TEST

/* Networks that differ from kiln's arch, and weights of another model. */
START_TEST(other_networks_refused)
{
    if (!have_numpy()) {
        printf("SKIP other_networks_refused: python3 cannot import numpy\n");
        return;
    }
    char dir[] = "/tmp/kiln-test-timm-XXXXXX", cmd[1200];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(import_model(dir, "tf_efficientnet_b0", "efficientnet_b0"), 2);
    ck_assert_int_eq(import_model(dir, "tf_efficientnet_b0", "resnetv2_50"), 2);
    ck_assert_int_eq(import_model(dir, "tf_efficientnet_b0", "tf_efficientnet_lite0"), 2);
    ck_assert_int_eq(import_model(dir, "tf_efficientnet_b0", "no_such_model"), 2);
    snprintf(cmd, sizeof cmd, "test ! -e '%s/kiln.safetensors'", dir);
    ck_assert_int_eq(run(cmd), 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(run(cmd), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("timm");
    TCase *t = tcase_create("import_timm");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, tf_efficientnet_lite0_matches_timm);
    tcase_add_test(t, tf_efficientnet_b0_matches_timm);
    tcase_add_test(t, other_networks_refused);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
