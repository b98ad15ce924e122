/* tests/test_cuda_faults.c — the GPU executor (runtime/cuda/exec.c) when the
 * device misbehaves, on the emulated device (tests/emu_device.c), with
 * archs/tiny.arch (every op, BN on batch statistics, graphs on):
 *  - a kernel launch or a GEMM refused while the training step is captured
 *    into a graph, whether the refusal invalidates the whole capture (its
 *    end fails) or drops only that operation (its end succeeds with a graph
 *    that lacks it): the step runs directly, with the bits of a backend
 *    without graphs, and no graph is ever replayed;
 *  - the poison mode (KILN_CUDA_POISON=1; "uninit" and "0" read as the
 *    other modes): every allocation is NaN-filled
 *    (an activation read before any step is NaN), the state arenas still
 *    start at zero as on the CPU, and training steps (direct, recorded,
 *    replayed, a short batch) and inference match the CPU backend: no
 *    kernel reads scratch memory before writing it.
 * KILN_EMU_CC, KILN_EMU_CFLAGS and KILN_EMU_INCLUDE come from
 * tests/CMakeLists.txt, as for test_cuda_emu. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emu_device.h"
#include "runtime/backend.h"
#include "runtime/cuda/exec.h"
#include "tiny_fixture.h"
#include "tests/suite_main.h"

#define BATCH 4
#define ERRLEN 65536

static Graph g;
static Dataset ds;
static Preproc pp;

/* tiny, BN on batch statistics everywhere, and a plan of it at BATCH into p. */
static void tiny_plan(Plan *p)
{
    char err[512];
    tiny_load(&g, &ds, &pp, "synthetic:n=64,noise=0.5");
    graph_flags_all(&g, 1, BN_TRAIN);
    PlanOptions po = {.batch = BATCH, .fuse = 1, .fold = 1};
    ck_assert_msg(plan_build(p, &g, &po, err, sizeof err) == 0, "%s", err);
}

static void tiny_free(Plan *p)
{
    plan_free(p);
    dataset_free(&ds);
    graph_free(&g);
}

/* The GPU executor over an emulated device running p's program. */
static Backend *emu_open(const Plan *p, int graphs, void **dev)
{
    char *err = malloc(ERRLEN);
    Program pr;
    Backend *be = emu_backend_create(p, &pr, graphs, 0, dev, err, ERRLEN);
    if (!be) fprintf(stderr, "%s\n", err);
    ck_assert_msg(be != NULL, "%.4000s", err);
    free(err);
    return be;
}

/* The batch of images offset .. offset + n - 1 (wrapping) to be. */
static void upload(Backend *be, int n, int offset)
{
    size_t img = (size_t)ds.h * ds.w * ds.c;
    float *x = malloc(sizeof(float) * img * (size_t)n);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    int idx[BATCH];
    ck_assert(x && y && n <= BATCH);
    for (int i = 0; i < n; i++) idx[i] = (offset + i) % ds.n;
    dataset_batch(x, y, &ds, idx, n, &pp);
    be->upload(be, x, y, n);
    free(x); free(y);
}

/* Both backends get the same non-trivial parameters. */
static void same_params(const Plan *p, Backend *a, Backend *b)
{
    float *params = calloc(p->param_floats + 1, sizeof(float));
    ck_assert(params != NULL);
    params_nontrivial(&g, p, params);
    a->write_params(a, params);
    b->write_params(b, params);
    free(params);
}

/* ---- graph capture refused ------------------------------------------------------------ */

static void capture_refused(int what, int invalidates)
{
    const char *name = what == EMU_REFUSE_LAUNCH ? "launch" : "GEMM";
    Plan p;
    tiny_plan(&p);
    void *dev_direct, *dev;
    Backend *direct = emu_open(&p, 0, &dev_direct);
    Backend *graphed = emu_open(&p, 1, &dev);
    same_params(&p, direct, graphed);
    emu_device_refuse_in_capture(dev, what, invalidates);
    float lr = 0.05f;
    StepConfig sc = {&lr, 1, 0.9f, 1e-4f};
    for (int step = 0; step < 4; step++) {   /* 1 direct, 2 the capture, 3 and 4 after it */
        double la, lb;
        int ca, cb;
        upload(direct, BATCH, BATCH * step);
        upload(graphed, BATCH, BATCH * step);
        ck_assert_int_eq(direct->train_step(direct, BATCH, &sc, &la, &ca), 0);
        ck_assert_int_eq(graphed->train_step(graphed, BATCH, &sc, &lb, &cb), 0);
        ck_assert_msg(la == lb && ca == cb, "%s refused (%s): step %d: loss %.17g vs %.17g without graphs",
                      name, invalidates ? "capture invalidated" : "only it dropped", step + 1, lb, la);
    }
    const EmuStats *st = emu_device_stats(dev);
    ck_assert_int_eq(st->replays, 0);
    ck_assert_int_eq(st->refused, 1);   /* the executor issues nothing more of that recording */
    float *a = malloc(sizeof(float) * p.param_floats), *b = malloc(sizeof(float) * p.param_floats);
    ck_assert(a && b);
    direct->read_params(direct, a);
    graphed->read_params(graphed, b);
    ck_assert_msg(memcmp(a, b, sizeof(float) * p.param_floats) == 0, "%s refused: parameters differ", name);
    free(a); free(b);
    direct->destroy(direct);
    graphed->destroy(graphed);
    tiny_free(&p);
}

START_TEST(capture_launch_refused_invalidating) { capture_refused(EMU_REFUSE_LAUNCH, 1); }
END_TEST

START_TEST(capture_launch_refused_alone) { capture_refused(EMU_REFUSE_LAUNCH, 0); }
END_TEST

START_TEST(capture_gemm_refused_invalidating) { capture_refused(EMU_REFUSE_GEMM, 1); }
END_TEST

START_TEST(capture_gemm_refused_alone) { capture_refused(EMU_REFUSE_GEMM, 0); }
END_TEST

/* ---- poison mode ------------------------------------------------------------------------ */

/* max|a-b| / max(1, max|b|); infinite when either holds a NaN. */
static double normwise(const float *a, const float *b, size_t n)
{
    double d = 0, m = 1;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        if (fabs((double)a[i] - b[i]) > d) d = fabs((double)a[i] - b[i]);
        if (fabs((double)b[i]) > m) m = fabs((double)b[i]);
    }
    return d / m;
}

/* Arena `floats` long read by rg (GPU) and rc (CPU) to tol. */
static void same_arena(Backend *gpu, Backend *cpu, void (*rg)(Backend *, float *), void (*rc)(Backend *, float *),
                       size_t floats, double tol, const char *what)
{
    float *a = malloc(sizeof(float) * (floats + 1)), *b = malloc(sizeof(float) * (floats + 1));
    ck_assert(a && b);
    rg(gpu, a);
    rc(cpu, b);
    double e = normwise(a, b, floats);
    ck_assert_msg(e <= tol, "poisoned device: %s differs by %g (bound %g)", what, e, tol);
    free(a); free(b);
}

START_TEST(poison_fills_and_steps_match)
{
    ck_assert_int_eq(setenv("KILN_CUDA_POISON", "uninit", 1), 0);
    ck_assert_int_eq(gpu_poison_mode(), 2);
    ck_assert_int_eq(setenv("KILN_CUDA_POISON", "0", 1), 0);
    ck_assert_int_eq(gpu_poison_mode(), 0);
    ck_assert_int_eq(setenv("KILN_CUDA_POISON", "1", 1), 0);
    ck_assert_int_eq(gpu_poison_mode(), 1);
    Plan p;
    tiny_plan(&p);
    char err[512];
    Backend *cpu = cpu_backend_create(&p, err, sizeof err);
    ck_assert_msg(cpu != NULL, "%s", err);
    void *dev;
    Backend *gpu = emu_open(&p, 1, &dev);
    ck_assert_int_gt(emu_device_stats(dev)->poisoned, 0);
    /* the fill happened: an activation nothing has written yet is NaN */
    int last = g.n_layers - 1, out = last;
    while (out > 0 && p.layer_tensor[out] < 0) out--;
    ck_assert_int_gt(out, 0);
    const float *act = gpu->layer_output(gpu, out);
    ck_assert(act != NULL);
    size_t nact = plan_layer_floats(&p, out) * BATCH;
    for (size_t i = 0; i < nact; i++) ck_assert_msg(isnan(act[i]), "activation %zu is %g, not NaN", i, act[i]);
    /* the state starts at zero, as on the CPU */
    same_arena(gpu, cpu, gpu->read_momentum, cpu->read_momentum, p.opt_floats, 0, "initial momentum");
    same_arena(gpu, cpu, gpu->read_grads, cpu->read_grads, p.grad_floats, 0, "initial gradients");
    same_params(&p, cpu, gpu);
    float lr = 0.05f;
    StepConfig sc = {&lr, 1, 0.9f, 1e-4f};
    const int n[4] = {BATCH, BATCH, BATCH, BATCH - 1};
    for (int step = 0; step < 4; step++) {   /* direct, recorded, replayed, short (direct) */
        double lc, lg;
        int cc, cg;
        char what[64];
        upload(cpu, n[step], BATCH * step);
        upload(gpu, n[step], BATCH * step);
        ck_assert_int_eq(cpu->train_step(cpu, n[step], &sc, &lc, &cc), 0);
        ck_assert_int_eq(gpu->train_step(gpu, n[step], &sc, &lg, &cg), 0);
        ck_assert_msg(fabs(lg - lc) <= 1e-5 * fmax(1, fabs(lc)), "poisoned step %d: loss gpu %.9g cpu %.9g",
                      step + 1, lg, lc);
        ck_assert_int_eq(cg, cc);
        snprintf(what, sizeof what, "gradients after step %d", step + 1);
        same_arena(gpu, cpu, gpu->read_grads, cpu->read_grads, p.grad_floats, 1e-4, what);
        snprintf(what, sizeof what, "parameters after step %d", step + 1);
        same_arena(gpu, cpu, gpu->read_params, cpu->read_params, p.param_floats, 1e-4, what);
        snprintf(what, sizeof what, "momentum after step %d", step + 1);
        same_arena(gpu, cpu, gpu->read_momentum, cpu->read_momentum, p.opt_floats, 1e-4, what);
    }
    ck_assert_int_eq(emu_device_stats(dev)->replays, 2);
    double lc, lg;
    int cc, cg, K = g.layers[last].out.c;
    upload(cpu, BATCH, 40);
    upload(gpu, BATCH, 40);
    cpu->evaluate(cpu, BATCH, &lc, &cc);
    gpu->evaluate(gpu, BATCH, &lg, &cg);
    double e = normwise(gpu->logits(gpu), cpu->logits(cpu), (size_t)BATCH * (size_t)K);
    ck_assert_msg(e <= 1e-5, "poisoned device: inference logits differ by %g", e);
    ck_assert_int_eq(cg, cc);
    cpu->destroy(cpu);
    gpu->destroy(gpu);
    tiny_free(&p);
    ck_assert_int_eq(unsetenv("KILN_CUDA_POISON"), 0);
}
END_TEST

Suite *test_suite(void)
{
    Suite *s = suite_create("cuda_faults");
    TCase *tc = tcase_create("cuda_faults");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, capture_launch_refused_invalidating);
    tcase_add_test(tc, capture_launch_refused_alone);
    tcase_add_test(tc, capture_gemm_refused_invalidating);
    tcase_add_test(tc, capture_gemm_refused_alone);
    tcase_add_test(tc, poison_fills_and_steps_match);
    suite_add_tcase(s, tc);
    return s;
}
