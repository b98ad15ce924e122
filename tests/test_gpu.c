/* tests/test_gpu.c — the CUDA backend against the CPU backend, on a real GPU
 * (ctest label "gpu"; exit code 77 = skipped, saying why, where no CUDA
 * device can be used).
 *
 * Networks: archs/tiny.arch at its own size, EfficientNet-Lite0 and
 * ResNet50V2 at 64x64, batch 8 (tiny 16). For each strategy's flags (both
 * phases of freeze-finetune), fused and unfused: the same parameters (with
 * non-trivial BN statistics) go to both backends, then three training steps
 * on a full batch (the first runs directly, the second records the CUDA
 * graph and replays it, the third replays it) and one on a short batch (no
 * graph). The GPU runs them as the training loop does: each step launched,
 * the next batch uploaded on the copy stream while it runs, then waited
 * for. Each step compared:
 *   loss                       1e-5 relative
 *   gradients, every tensor    1e-4 relative to the tensor's largest value
 *   parameters after the step  1e-4 likewise (BN running statistics included)
 * and then inference logits to 1e-5 relative to their largest value. The
 * measure is per tensor (max |gpu - cpu| / max |cpu|): cuBLAS and the CPU
 * BLAS sum in different orders, so single near-zero elements carry no
 * meaning.
 *
 * CK_RUN_CASE=tiny runs the tiny network only (what tools/gpu-check runs
 * first, then under compute-sanitizer's memcheck, racecheck, synccheck and
 * initcheck with KILN_CUDA_POISON set, so that memory read before it is
 * written holds NaN, or is unfilled for initcheck, instead of zeros).
 *
 * Built a second time as test_gpu_emu (KILN_GPU_TEST_EMU), the GPU backend
 * is the executor over the emulated device of tests/emu_device.c and only
 * tiny runs: this file's own logic is then exercised on every machine, so
 * the first GPU it meets tests the GPU rather than the test. The tests run in this process (no fork: a CUDA
 * context does not survive one), so a failure ends its network's test only.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/backend.h"
#include "runtime/cuda/cuda.h"
#include "runtime/params.h"
#include "runtime/strategy.h"
#include "runtime/train.h"
#include "tiny_fixture.h"
#include "tests/suite_main.h"

#ifdef KILN_GPU_TEST_EMU
#include "emu_device.h"

/* The GPU executor over the emulated device, with graphs. */
static Backend *gpu_create(const Plan *p, char *err, size_t errlen)
{
    Program pr;
    void *dev;
    return emu_backend_create(p, &pr, 1, 0, &dev, err, errlen);
}
#else
static Backend *gpu_create(const Plan *p, char *err, size_t errlen)
{
    CudaOptions o;
    cuda_options_default(&o);
    o.quiet = 1;
    return cuda_backend_create(p, &o, err, errlen);
}
#endif

typedef struct {
    Plan p;
    Backend *cpu, *gpu;
    float *params;
} Pair;

static void pair_open(Pair *r, const Graph *g, int batch, int fuse, const char *what)
{
    char err[1024];
    PlanOptions po = {.batch = batch, .fuse = fuse, .fold = 1};
    ck_assert_msg(plan_build(&r->p, g, &po, err, sizeof err) == 0, "%s: %s", what, err);
    r->cpu = cpu_backend_create(&r->p, err, sizeof err);
    ck_assert_msg(r->cpu != NULL, "%s: cpu: %s", what, err);
    r->gpu = gpu_create(&r->p, err, sizeof err);
    ck_assert_msg(r->gpu != NULL, "%s: gpu: %s", what, err);
    r->params = malloc(sizeof(float) * (r->p.param_floats + 1));
    ck_assert(r->params != NULL);
    params_nontrivial(g, &r->p, r->params);
    r->cpu->write_params(r->cpu, r->params);
    r->gpu->write_params(r->gpu, r->params);
}

static void pair_close(Pair *r)
{
    r->cpu->destroy(r->cpu);
    r->gpu->destroy(r->gpu);
    plan_free(&r->p);
    free(r->params);
}

/* max |a - b| / max |b| (b the CPU's), NaN anywhere = infinite. */
static double rel_err(const float *a, const float *b, size_t n)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e != e) return INFINITY;
        if (e > d) d = e;
        if (fabs((double)b[i]) > m) m = fabs((double)b[i]);
    }
    return d == 0 ? 0 : d / (m > 0 ? m : 1e-30);
}

/* Compare per graph parameter (offsets from off[]), worst first. */
static void compare_tensors(const Graph *g, const size_t *off, const float *gpu, const float *cpu, double tol,
                            const char *kind, const char *what)
{
    for (int i = 0; i < g->n_params; i++) {
        if (off[i] == KILN_NONE) continue;
        double e = rel_err(gpu + off[i], cpu + off[i], g->params[i].numel);
        ck_assert_msg(e <= tol, "%s: %s of %s: relative error %.3g > %g", what, kind, g->params[i].name, e, tol);
    }
}

/* Step on batch (x, y, n), uploaded to the GPU before; the GPU uploads the
 * next batch (xn, yn, nn; xn NULL: none) while its step runs. */
static void step_both(Pair *r, const Graph *g, const float *x, const int32_t *y, int n, const float *xn,
                      const int32_t *yn, int nn, const StepConfig *sc, const char *what)
{
    double lc, lg;
    int cc, cg;
    r->cpu->upload(r->cpu, x, y, n);
    int bc = r->cpu->train_step(r->cpu, n, sc, &lc, &cc);
    r->gpu->train_launch(r->gpu, n, sc);
    if (xn) r->gpu->upload(r->gpu, xn, yn, nn);
    int bg = r->gpu->train_wait(r->gpu, &lg, &cg);
    ck_assert_msg(bc == bg, "%s: non-finite flag cpu %d gpu %d", what, bc, bg);
    ck_assert_msg(fabs(lg - lc) <= 1e-5 * fabs(lc), "%s: loss gpu %.9g cpu %.9g", what, lg, lc);
    ck_assert_msg(abs(cg - cc) <= 1, "%s: correct gpu %d cpu %d", what, cg, cc);
    size_t G = r->p.grad_floats, P = r->p.param_floats;
    float *gc = malloc(sizeof(float) * (G + 1)), *gg = malloc(sizeof(float) * (G + 1));
    float *pc = malloc(sizeof(float) * (P + 1)), *pg = malloc(sizeof(float) * (P + 1));
    ck_assert(gc && gg && pc && pg);
    r->cpu->read_grads(r->cpu, gc);
    r->gpu->read_grads(r->gpu, gg);
    compare_tensors(g, r->p.grad_off, gg, gc, 1e-4, "gradient", what);
    r->cpu->read_params(r->cpu, pc);
    r->gpu->read_params(r->gpu, pg);
    compare_tensors(g, r->p.param_off, pg, pc, 1e-4, "updated parameter", what);
    free(gc); free(gg); free(pc); free(pg);
}

static void check_variant(const Graph *g, const LrGroups *gr, int batch, int fuse, const char *what)
{
    Pair r;
    pair_open(&r, g, batch, fuse, what);
    const Layer *in = &g->layers[0];
    size_t img = (size_t)in->out.h * in->out.w * in->out.c;
    int K = g->layers[g->n_layers - 1].out.c;
    enum { STEPS = 4 };
    float *xs[STEPS];
    int32_t *ys[STEPS];
    int ns[STEPS];
    float lr[KILN_MAX_GROUPS];
    for (int k = 0; k < gr->n; k++) lr[k] = 0.01f * gr->scale[k];
    StepConfig sc = {lr, gr->n > 0 ? gr->n : 1, 0.9f, 1e-4f};
    if (gr->n == 0) lr[0] = 0.01f;
    uint64_t st = 11;
    char step_what[400];
    for (int s = 0; s < STEPS; s++) {
        int n = ns[s] = s < STEPS - 1 ? batch : batch - 3;
        xs[s] = malloc(sizeof(float) * img * (size_t)batch);
        ys[s] = malloc(sizeof(int32_t) * (size_t)batch);
        ck_assert(xs[s] && ys[s]);
        for (size_t i = 0; i < img * (size_t)n; i++) xs[s][i] = (float)(2 * kiln_rand_uniform(&st) - 1);
        for (int i = 0; i < n; i++) ys[s][i] = (i * 7 + s) % K;
    }
    r.gpu->upload(r.gpu, xs[0], ys[0], ns[0]);
    for (int s = 0; s < STEPS; s++) {
        int last = s == STEPS - 1;
        snprintf(step_what, sizeof step_what, "%s, step %d (n %d)", what, s + 1, ns[s]);
        step_both(&r, g, xs[s], ys[s], ns[s], last ? NULL : xs[s + 1], last ? NULL : ys[s + 1],
                  last ? 0 : ns[s + 1], &sc, step_what);
    }
    float *x = xs[STEPS - 1];
    int32_t *y = ys[STEPS - 1];
    double lc, lg;
    int cc, cg;
    r.cpu->upload(r.cpu, x, y, batch - 3);
    r.gpu->upload(r.gpu, x, y, batch - 3);
    r.cpu->evaluate(r.cpu, batch - 3, &lc, &cc);
    r.gpu->evaluate(r.gpu, batch - 3, &lg, &cg);
    ck_assert_msg(fabs(lg - lc) <= 1e-5 * fabs(lc), "%s: eval loss gpu %.9g cpu %.9g", what, lg, lc);
    double e = rel_err(r.gpu->logits(r.gpu), r.cpu->logits(r.cpu), (size_t)(batch - 3) * (size_t)K);
    ck_assert_msg(e <= 1e-5, "%s: inference logits: relative error %.3g > 1e-5", what, e);
    for (int s = 0; s < STEPS; s++) { free(xs[s]); free(ys[s]); }
    pair_close(&r);
}

static void check_arch(const char *arch, int size, int batch)
{
    Graph g;
    arch_load(&g, arch, size);
    int variants = 0;
    for (int s = 0; s < STRAT_COUNT; s++) {
        TrainSpec t;
        strategy_defaults(&t, (Strategy)s);
        for (int ph = 0; ph < strategy_phases(&t); ph++) {
            LrGroups gr;
            char err[512];
            ck_assert_msg(strategy_apply(&t, ph, &g, &gr, err, sizeof err) == 0, "%s", err);
            for (int fuse = 1; fuse >= 0; fuse--) {
                char what[256];
                snprintf(what, sizeof what, "%s, %s phase %d, %s", arch, strategy_name((Strategy)s), ph + 1,
                         fuse ? "fused" : "unfused");
                check_variant(&g, &gr, batch, fuse, what);
                variants++;
            }
        }
    }
    printf("test_gpu: %s: %d variants match the CPU\n", arch, variants);
    fflush(stdout);
    graph_free(&g);
}

START_TEST(gpu_step_tiny) { check_arch("tiny", 0, 16); }
END_TEST

START_TEST(gpu_step_efficientnet_lite0) { check_arch("efficientnet_lite0", 64, 8); }
END_TEST

START_TEST(gpu_step_resnet50v2) { check_arch("resnet50v2", 64, 8); }
END_TEST

static TCase *one_case(const char *name, const TTest *t)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, t);
    return tc;
}

Suite *test_suite(void)
{
#ifdef KILN_GPU_TEST_EMU
    Suite *s = suite_create("gpu");
    printf("test_gpu: on the emulated device (tiny only)\n");
    suite_add_tcase(s, one_case("tiny", gpu_step_tiny));
    (void)gpu_step_efficientnet_lite0;
    (void)gpu_step_resnet50v2;
#else
    char why[256];
    if (!cuda_available(why, sizeof why)) {
        printf("test_gpu: skipped: %s\n", why);
        exit(77);
    }
    Suite *s = suite_create("gpu");
    char card[256];
    cuda_device_name(card, sizeof card);
    printf("test_gpu: on %s\n", card);
    suite_add_tcase(s, one_case("tiny", gpu_step_tiny));
    suite_add_tcase(s, one_case("lite0", gpu_step_efficientnet_lite0));
    suite_add_tcase(s, one_case("resnet50v2", gpu_step_resnet50v2));
#endif
    /* no fork: CUDA, initialized above, cannot be used in a forked child */
    test_no_fork();
    return s;
}
