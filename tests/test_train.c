/* tests/test_train.c — the CPU executor end to end on archs/tiny.arch:
 *  - the fused plan matches its unfused twin over two SGD steps: loss and
 *    inference logits to 1e-5 relative, every gradient and updated weight to
 *    1e-4 (float rounding of a different but equivalent operation order,
 *    carried through momentum; the single fused block is held to 1e-5 in
 *    test_kernels);
 *  - BN folded into a frozen conv matches the unfolded pair to 1e-5;
 *  - the whole network's gradient matches central finite differences
 *    (catches wiring mistakes: accumulation flags, residual gradients);
 *  - tiny.arch trains on the synthetic set to >= 95% training accuracy. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/dataset.h"
#include "runtime/backend.h"
#include "runtime/params.h"
#include "runtime/train.h"
#include "tiny_fixture.h"
#include "tests/suite_main.h"

static Graph g;
static Dataset ds;
static Preproc pp;

static void load_tiny(void) { tiny_load(&g, &ds, &pp, "synthetic:n=400,noise=0.5"); }

static void unload(void)
{
    dataset_free(&ds);
    graph_free(&g);
}

/* A backend for the current flags, parameters initialized from seed 3. */
typedef struct { Plan p; Backend *be; float *params; } Run;

static void run_open(Run *r, int batch, int fuse, int fold)
{
    char err[256];
    PlanOptions po = {.batch = batch, .fuse = fuse, .fold = fold};
    ck_assert_msg(plan_build(&r->p, &g, &po, err, sizeof err) == 0, "%s", err);
    r->be = cpu_backend_create(&r->p, err, sizeof err);
    ck_assert_msg(r->be != NULL, "%s", err);
    r->params = calloc(r->p.param_floats, sizeof(float));
    params_nontrivial(&g, &r->p, r->params);
    r->be->write_params(r->be, r->params);
}

static void run_close(Run *r)
{
    r->be->destroy(r->be);
    plan_free(&r->p);
    free(r->params);
}

static void upload_batch(Backend *be, int n, int offset)
{
    size_t img = (size_t)ds.h * ds.w * ds.c;
    float *x = malloc(sizeof(float) * img * (size_t)n);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    int *idx = malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) idx[i] = offset + i;
    dataset_batch(x, y, &ds, idx, n, &pp);
    be->upload(be, x, y, n);
    free(x); free(y); free(idx);
}

/* max |a-b| / (atol + |b|) over n values */
static double worst(const float *a, const float *b, size_t n, double atol)
{
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (atol + fabs((double)b[i]));
        if (e > w || e != e) w = e != e ? INFINITY : e;
    }
    return w;
}

/* Compare two runs' parameters by name (their arenas are ordered differently
 * when trainability differs; here they agree, but go by name anyway). */
static double worst_params(Run *a, Run *b, float *pa, float *pb, const char **which)
{
    double w = 0;
    for (int i = 0; i < g.n_params; i++) {
        double e = worst(pa + a->p.param_off[i], pb + b->p.param_off[i], g.params[i].numel, 1e-5);
        if (e > w) { w = e; *which = g.params[i].name; }
    }
    return w;
}

/* Two SGD steps of the fused and the unfused plan of the current graph g
 * and flags, then inference logits: loss and logits to 1e-5, gradients and
 * weights to 1e-4. Returns how many nodes of the fused plan absorbed an add. */
static int compare_fused_unfused(void)
{
    Run f, u;
    run_open(&f, 16, 1, 1);
    run_open(&u, 16, 0, 1);
    int adds = 0;
    for (int i = 0; i < f.p.n_nodes; i++) adds += f.p.nodes[i].add >= 0;
    float lr = 0.05f;
    StepConfig sc = {&lr, 1, 0.9f, 1e-4f};
    for (int step = 0; step < 2; step++) {
        double lf, lu;
        int cf, cu;
        upload_batch(f.be, 16, 16 * step);
        upload_batch(u.be, 16, 16 * step);
        ck_assert_int_eq(f.be->train_step(f.be, 16, &sc, &lf, &cf), 0);
        ck_assert_int_eq(u.be->train_step(u.be, 16, &sc, &lu, &cu), 0);
        ck_assert_msg(fabs(lf - lu) <= 1e-5 * fabs(lu), "loss fused %.9g unfused %.9g", lf, lu);
        float *gf = malloc(sizeof(float) * (f.p.grad_floats + 1)), *gu = malloc(sizeof(float) * (u.p.grad_floats + 1));
        f.be->read_grads(f.be, gf);
        u.be->read_grads(u.be, gu);
        ck_assert_int_eq((int)f.p.grad_floats, (int)u.p.grad_floats);
        double wg = 0;
        for (int i = 0; i < g.n_params; i++)
            if (f.p.grad_off[i] != KILN_NONE) {
                double e = worst(gf + f.p.grad_off[i], gu + u.p.grad_off[i], g.params[i].numel, 1e-4);
                ck_assert_msg(e <= 1e-4, "gradient of %s differs by %g (step %d)", g.params[i].name, e, step);
                if (e > wg) wg = e;
            }
        free(gf); free(gu);
    }
    /* inference-mode forward pass on the updated weights: the logits */
    double lf, lu;
    int cf, cu, K = g.layers[g.n_layers - 1].out.c;
    upload_batch(f.be, 16, 64);
    upload_batch(u.be, 16, 64);
    f.be->evaluate(f.be, 16, &lf, &cf);
    u.be->evaluate(u.be, 16, &lu, &cu);
    double wl = worst(f.be->logits(f.be), u.be->logits(u.be), 16 * (size_t)K, 1e-5);
    ck_assert_msg(wl <= 1e-5, "logits differ by %g", wl);
    float *pf = malloc(sizeof(float) * f.p.param_floats), *pu = malloc(sizeof(float) * u.p.param_floats);
    f.be->read_params(f.be, pf);
    u.be->read_params(u.be, pu);
    const char *which = "";
    double wp = worst_params(&f, &u, pf, pu, &which);
    ck_assert_msg(wp <= 1e-4, "updated weights differ by %g (%s)", wp, which);
    free(pf); free(pu);
    run_close(&f); run_close(&u);
    return adds;
}

static void fused_vs_unfused(const char *freeze, BnMode mode)
{
    load_tiny();
    graph_flags_all(&g, 1, mode);
    if (freeze) graph_freeze_until(&g, freeze);
    ck_assert_int_eq(compare_fused_unfused(), 1);   /* b1_proj absorbs b1_add */
    unload();
}

/* Two conv chains into one add (a projection shortcut, as in the first
 * block of a ResNetV2 stack): only one of them may absorb the add. */
START_TEST(fused_matches_unfused_projection_shortcut)
{
    load_tiny();
    graph_free(&g);
    const char *txt =
        "input in size=16x16x3 scale=1/255 mean=0.5 std=0.25\n"
        "conv a filters=8 kernel=3 padding=same bias=false\nbn a_bn\nrelu a_act\n"
        "conv b filters=8 kernel=1 from=in\nbn b_bn\n"
        "add sum from=a_act,b_bn\nrelu sum_act\ngap gap\ndense head units=4\nsoftmax_ce loss\n";
    char err[512];
    ck_assert_msg(graph_parse(&g, txt, strlen(txt), "shortcut.arch", err, sizeof err) == 0, "%s", err);
    graph_flags_all(&g, 1, BN_TRAIN);
    ck_assert_int_eq(compare_fused_unfused(), 1);
    unload();
}
END_TEST

START_TEST(fused_matches_unfused_bn_train) { fused_vs_unfused(NULL, BN_TRAIN); }
END_TEST
START_TEST(fused_matches_unfused_bn_infer) { fused_vs_unfused(NULL, BN_INFER); }
END_TEST
START_TEST(fused_matches_unfused_bn_frozen) { fused_vs_unfused(NULL, BN_FROZEN); }
END_TEST
START_TEST(fused_matches_unfused_half_frozen) { fused_vs_unfused("b1_add", BN_TRAIN); }
END_TEST

START_TEST(folded_matches_unfolded)
{
    load_tiny();
    graph_flags_all(&g, 1, BN_TRAIN);
    graph_freeze_until(&g, "b2_act");   /* every conv+BN pair frozen */
    for (int fuse = 0; fuse < 2; fuse++) {
        Run a, b;
        run_open(&a, 16, fuse, 1);
        run_open(&b, 16, fuse, 0);
        int folds = 0;
        for (int i = 0; i < a.p.n_nodes; i++) folds += a.p.nodes[i].fold;
        ck_assert_int_eq(folds, 4);
        upload_batch(a.be, 16, 0);
        upload_batch(b.be, 16, 0);
        double la, lb;
        int ca, cb;
        a.be->evaluate(a.be, 16, &la, &ca);
        b.be->evaluate(b.be, 16, &lb, &cb);
        int K = g.layers[g.n_layers - 1].out.c;
        double w = worst(a.be->logits(a.be), b.be->logits(b.be), 16 * (size_t)K, 1e-5);
        ck_assert_msg(w <= 1e-5, "folded logits differ by %g (fuse %d)", w, fuse);
        run_close(&a); run_close(&b);
    }
    unload();
}
END_TEST

/* Features extracted at a frozen cut and fed back in give the logits of the
 * whole forward pass, also when frozen folded layers follow the cut. */
START_TEST(cached_features_match_full_forward)
{
    load_tiny();
    graph_flags_all(&g, 1, BN_TRAIN);
    graph_freeze_until(&g, "b2_act");
    Run r;
    run_open(&r, 16, 1, 1);
    int cut = graph_find(&g, "b1_add");
    ck_assert_int_ge(r.p.layer_tensor[cut], 0);
    int K = g.layers[g.n_layers - 1].out.c;
    size_t f = plan_layer_floats(&r.p, cut);
    float *feat = malloc(sizeof(float) * f * 16), *full = malloc(sizeof(float) * 16 * (size_t)K);
    double l;
    int c;
    upload_batch(r.be, 16, 0);
    r.be->evaluate(r.be, 16, &l, &c);
    memcpy(full, r.be->logits(r.be), sizeof(float) * 16 * (size_t)K);
    /* a fresh backend, so nothing computed by the full pass is left over */
    Run q;
    run_open(&q, 16, 1, 1);
    upload_batch(q.be, 16, 0);
    q.be->extract(q.be, 16, cut, feat);
    q.be->set_entry(q.be, cut);
    int32_t y[16];
    for (int i = 0; i < 16; i++) y[i] = ds.labels[i];
    q.be->upload(q.be, feat, y, 16);
    q.be->evaluate(q.be, 16, &l, &c);
    double w = worst(q.be->logits(q.be), full, 16 * (size_t)K, 1e-6);
    ck_assert_msg(w <= 1e-6, "logits through cached features differ by %g", w);
    free(feat); free(full);
    run_close(&r); run_close(&q);
    unload();
}
END_TEST

/* Whole-network gradient against central differences of the training loss
 * (float arithmetic, so a loose 5% bound on gradients that stand out of the
 * noise: a wiring mistake is off by 100% or more). Dropout is disabled by
 * freezing nothing and using BN train mode; dropout's own gradient is checked
 * at the kernel level. */
START_TEST(network_gradient_matches_finite_differences)
{
    load_tiny();
    int drop = graph_find(&g, "drop");
    g.layers[drop].a.dropout.rate = 0;
    graph_flags_all(&g, 1, BN_TRAIN);
    Run r;
    run_open(&r, 8, 1, 1);
    float zero = 0;
    StepConfig sc = {&zero, 1, 0.0f, 0.0f};
    double l0;
    int c;
    upload_batch(r.be, 8, 0);
    ck_assert_int_eq(r.be->train_step(r.be, 8, &sc, &l0, &c), 0);
    float *gr = malloc(sizeof(float) * r.p.grad_floats);
    r.be->read_grads(r.be, gr);
    float *p = malloc(sizeof(float) * r.p.param_floats);
    r.be->read_params(r.be, p);
    int checked = 0;
    for (int i = 0; i < g.n_params; i++) {
        if (r.p.grad_off[i] == KILN_NONE) continue;
        /* the largest-gradient element of each trainable tensor */
        size_t best = 0;
        for (size_t k = 0; k < g.params[i].numel; k++)
            if (fabsf(gr[r.p.grad_off[i] + k]) > fabsf(gr[r.p.grad_off[i] + best])) best = k;
        double an = gr[r.p.grad_off[i] + best];
        if (fabs(an) < 1e-3) continue;
        float *w = p + r.p.param_off[i] + best, keep = *w;
        double eps = 1e-2 * (fabs(keep) > 1 ? fabs(keep) : 1), lp, lm;
        *w = (float)(keep + eps);
        r.be->write_params(r.be, p);
        upload_batch(r.be, 8, 0);
        r.be->train_step(r.be, 8, &sc, &lp, &c);
        *w = (float)(keep - eps);
        r.be->write_params(r.be, p);
        upload_batch(r.be, 8, 0);
        r.be->train_step(r.be, 8, &sc, &lm, &c);
        *w = keep;
        double fd = (lp - lm) / (2 * eps);
        ck_assert_msg(fabs(fd - an) <= 0.05 * fabs(an) + 1e-4, "%s[%zu]: analytic %g, finite difference %g",
                      g.params[i].name, best, an, fd);
        checked++;
    }
    ck_assert_int_ge(checked, 10);
    free(gr); free(p);
    run_close(&r);
    unload();
}
END_TEST

START_TEST(tiny_trains_to_95_percent)
{
    const char *src = getenv("KILN_SOURCE_DIR");
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/archs/tiny.arch", src ? src : ".");
    ck_assert_msg(graph_load(&g, path, err, sizeof err) == 0, "%s", err);
    const InputAttr *in = &g.layers[0].a.input;
    DataOptions o = {in->h, in->w, in->c, 0, 1};
    ck_assert_msg(dataset_open(&ds, "synthetic:n=1200,noise=0.5", &o, err, sizeof err) == 0, "%s", err);
    pp = (Preproc){in->scale, {in->mean[0], in->mean[1], in->mean[2]}, {in->std[0], in->std[1], in->std[2]}};
    Split sp;
    ck_assert_int_eq(dataset_split(&ds, 1, &sp), 0);
    Run r;
    run_open(&r, 32, 1, 1);
    params_init(&r.p, r.params, 1, 0, g.n_layers - 1);
    r.be->write_params(r.be, r.params);
    DataView dv = {&ds, &sp, pp, NULL};
    PhaseConfig pc = {.max_epochs = 4, .momentum = 0.9f, .seed = 1};
    LoopState ls;
    memset(&ls, 0, sizeof ls);
    schedule_init(&ls.sched, 0.05f, 0, 0, 8, 0.1f, 1e-6f, 20);
    PhaseResult res;
    ck_assert_int_eq(train_phase(r.be, &dv, &pc, &ls, NULL, &res), 0);
    ck_assert_int_eq(res.diverged, 0);
    ck_assert_msg(res.train_acc >= 0.95, "training accuracy %.3f < 0.95", res.train_acc);
    double test = evaluate_set(r.be, &dv, sp.test, sp.n_test, NULL);
    ck_assert_msg(test >= 0.9, "test accuracy %.3f < 0.9", test);
    /* chance is 0.25: a first-epoch model is far below these */
    split_free(&sp);
    run_close(&r);
    unload();
}
END_TEST

Suite *test_suite(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("train");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, fused_matches_unfused_bn_train);
    tcase_add_test(tc, fused_matches_unfused_bn_infer);
    tcase_add_test(tc, fused_matches_unfused_bn_frozen);
    tcase_add_test(tc, fused_matches_unfused_half_frozen);
    tcase_add_test(tc, fused_matches_unfused_projection_shortcut);
    tcase_add_test(tc, folded_matches_unfolded);
    tcase_add_test(tc, cached_features_match_full_forward);
    tcase_add_test(tc, network_gradient_matches_finite_differences);
    tcase_add_test(tc, tiny_trains_to_95_percent);
    suite_add_tcase(s, tc);
    return s;
}
