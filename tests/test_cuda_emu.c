/* tests/test_cuda_emu.c — the GPU backend without a GPU: the kernels emitted
 * for archs/tiny.arch (every op) compiled by the host C compiler under
 * tests/cuda_emu.h and run by the GPU executor (runtime/cuda/exec.c) through
 * the emulated device (tests/emu_device.c), against the CPU backend:
 *  - fused and unfused plans, under several strategies' flags (BN on batch
 *    statistics, BN frozen, BN in inference mode but trainable, the encoder
 *    frozen to a middle layer so BNs fold, only the head training, layer-wise
 *    LR groups): two training steps from identical parameters and momentum
 *    (the second exercises momentum and replays the captured graph), a short
 *    batch, then an inference pass. Loss to 1e-5 relative, gradients, updated
 *    parameters (BN statistics included) and momentum to 1e-4, logits to
 *    1e-5, each normwise per tensor: max|a-b| <= tol * max(1, max|b|);
 *  - a non-finite loss makes train_step return 1 and leaves the trainable
 *    parameters and the momentum unchanged;
 *  - graph replay gives the same bits as direct launches;
 *  - features extracted at a frozen cut and fed back in train as on the CPU;
 *  - an arena that does not fit names the bytes asked for, the bytes free
 *    and the largest batch that fits;
 *  - the whole training loop (runtime/run.c run_train: every strategy, the
 *    feature cache, both phases of freeze-finetune, warm-up, the auto LR
 *    range test, early stopping, checkpoints and best weights in a run
 *    folder, the test pass) on the emulated device through
 *    RunConfig.make_backend, against the same run on the CPU backend:
 *    epochs, divergence (stopped, rolled back), chosen LR, validation and
 *    test accuracy, and the final weights to 1e-4 normwise per tensor; a
 *    GPU run stopped in its second phase and resumed from its checkpoint
 *    ends bit-identical to the uninterrupted one.
 * KILN_EMU_CC (the C compiler), KILN_EMU_CFLAGS (the sanitizers of a
 * sanitized build) and KILN_EMU_INCLUDE (this folder) come from
 * tests/CMakeLists.txt. */
#include <check.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codegen/emit.h"
#include "datasets/dataset.h"
#include "emu_device.h"
#include "runtime/backend.h"
#include "runtime/cuda/exec.h"
#include "runtime/params.h"
#include "runtime/run.h"
#include "runtime/safetensors.h"
#include "runtime/strategy.h"
#include "tiny_fixture.h"
#include "tests/suite_main.h"

#define BATCH 4
#define ERRLEN 65536

static Graph g;
static Dataset ds;
static Preproc pp;

static void load_tiny(void) { tiny_load(&g, &ds, &pp, "synthetic:n=64,noise=0.5"); }

static void unload(void)
{
    dataset_free(&ds);
    graph_free(&g);
}

/* ---- flags ------------------------------------------------------------------------ */

typedef enum { F_BN_TRAIN, F_BN_FROZEN, F_BN_INFER, F_HALF_FROZEN, F_HEAD_ONLY, F_LAYERWISE } Flags;

static const char *const FLAG_NAMES[] = {"BN train", "BN frozen", "BN infer", "frozen to b1_add",
                                         "head only", "layer-wise LRs"};

/* Set g's flags; the LR of each group into lr[], their count into *n_lr. */
static void apply_flags(Flags f, float *lr, int *n_lr)
{
    *n_lr = 1;
    lr[0] = 0.05f;
    TrainSpec t;
    LrGroups gr;
    char err[256];
    switch (f) {
    case F_BN_TRAIN: graph_flags_all(&g, 1, BN_TRAIN); break;
    case F_BN_FROZEN: graph_flags_all(&g, 1, BN_FROZEN); break;
    case F_BN_INFER: graph_flags_all(&g, 1, BN_INFER); break;
    case F_HALF_FROZEN:
        graph_flags_all(&g, 1, BN_TRAIN);
        ck_assert_int_eq(graph_freeze_until(&g, "b1_add"), 0);
        break;
    case F_HEAD_ONLY: case F_LAYERWISE:
        strategy_defaults(&t, f == F_HEAD_ONLY ? STRAT_FROZEN : STRAT_LAYERWISE);
        t.lr = 0.05f;
        ck_assert_msg(strategy_apply(&t, 0, &g, &gr, err, sizeof err) == 0, "%s", err);
        *n_lr = gr.n;
        for (int k = 0; k < gr.n; k++) lr[k] = t.lr * gr.scale[k];
        break;
    }
}

/* ---- a CPU backend and an emulated GPU backend on one plan ---------------------------- */

typedef struct {
    Plan p;
    Program pr;
    Backend *cpu, *gpu;
    void *dev;
} Pair;

/* Emit p's program and make the emulated GPU backend over it (memory
 * limited to mem_limit bytes when nonzero). A failure to create it fails the
 * test, unless fail_msg is given: then the message goes there. */
static Backend *gpu_open(const Plan *p, Program *pr, int graphs, void **dev, size_t mem_limit,
                         char *fail_msg)
{
    char *err = malloc(ERRLEN);
    Backend *be = emu_backend_create(p, pr, graphs, mem_limit, dev, err, ERRLEN);
    if (!be && !fail_msg) {
        fprintf(stderr, "%s\n", err);   /* the whole compiler output, if that was it */
        ck_abort_msg("%.4000s", err);
    }
    if (!be) snprintf(fail_msg, 1024, "%s", err);
    free(err);
    return be;
}

/* Parameters from seed 3 with non-trivial BN values (as test_train), and a
 * non-zero momentum, written to both backends. */
static void init_state(Pair *r)
{
    float *params = calloc(r->p.param_floats + 1, sizeof(float));
    params_nontrivial(&g, &r->p, params);
    float *mom = calloc(r->p.opt_floats + 1, sizeof(float));
    for (size_t k = 0; k < r->p.opt_floats; k++) mom[k] = 0.01f * (float)((k * 2654435761u) % 200) / 100.0f - 0.01f;
    r->cpu->write_params(r->cpu, params);
    r->gpu->write_params(r->gpu, params);
    r->cpu->write_momentum(r->cpu, mom);
    r->gpu->write_momentum(r->gpu, mom);
    free(params); free(mom);
}

static void pair_open_batch(Pair *r, int fuse, int graphs, int batch)
{
    char err[512];
    PlanOptions po = {.batch = batch, .fuse = fuse, .fold = 1};
    ck_assert_msg(plan_build(&r->p, &g, &po, err, sizeof err) == 0, "%s", err);
    r->cpu = cpu_backend_create(&r->p, err, sizeof err);
    ck_assert_msg(r->cpu != NULL, "%s", err);
    r->gpu = gpu_open(&r->p, &r->pr, graphs, &r->dev, 0, NULL);
    init_state(r);
}

static void pair_open(Pair *r, int fuse, int graphs) { pair_open_batch(r, fuse, graphs, BATCH); }

static void pair_close(Pair *r)
{
    r->cpu->destroy(r->cpu);
    r->gpu->destroy(r->gpu);
    plan_free(&r->p);
}

static void upload_batch(Backend *be, int n, int offset)
{
    size_t img = (size_t)ds.h * ds.w * ds.c;
    float *x = malloc(sizeof(float) * img * (size_t)n);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    int idx[64];
    for (int i = 0; i < n; i++) idx[i] = (offset + i) % ds.n;
    dataset_batch(x, y, &ds, idx, n, &pp);
    be->upload(be, x, y, n);
    free(x); free(y);
}

/* ---- comparisons ------------------------------------------------------------------------ */

/* max|a-b| / max(1, max|b|); infinite when a NaN appears on one side only. */
static double normwise(const float *a, const float *b, size_t n)
{
    double d = 0, m = 1;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) != isnan(b[i])) return INFINITY;
        if (isnan(a[i])) continue;
        double e = fabs((double)a[i] - b[i]);
        if (e > d) d = e;
        if (fabs((double)b[i]) > m) m = fabs((double)b[i]);
    }
    return d / m;
}

/* The worst error of each kind over a plan's sequence, relative to its
 * bound, printed after it (how much margin the emulation leaves). */
static double worst_loss, worst_logits, worst_arena[3];

static void note(double *w, double e, double tol)
{
    if (e / tol > *w) *w = e / tol;
}

typedef enum { A_PARAMS, A_GRADS, A_MOM } ArenaKind;
static const char *const ARENA_KIND[] = {"parameter", "gradient", "momentum"};

/* Every tensor of an arena, GPU against CPU, to tol; names the first that fails. */
static void compare_arena(Pair *r, ArenaKind k, double tol, const char *when)
{
    size_t floats = k == A_PARAMS ? r->p.param_floats : k == A_GRADS ? r->p.grad_floats : r->p.opt_floats;
    float *a = malloc(sizeof(float) * (floats + 1)), *b = malloc(sizeof(float) * (floats + 1));
    void (*rd[3])(Backend *, float *) = {r->gpu->read_params, r->gpu->read_grads, r->gpu->read_momentum};
    void (*rc[3])(Backend *, float *) = {r->cpu->read_params, r->cpu->read_grads, r->cpu->read_momentum};
    rd[k](r->gpu, a);
    rc[k](r->cpu, b);
    for (int i = 0; i < g.n_params; i++) {
        size_t off = k == A_PARAMS ? r->p.param_off[i] : r->p.grad_off[i];
        if (off == KILN_NONE) continue;
        double e = normwise(a + off, b + off, g.params[i].numel);
        note(&worst_arena[k], e, tol);
        ck_assert_msg(e <= tol, "%s: %s of %s differs by %g (bound %g)", when, ARENA_KIND[k],
                      g.params[i].name, e, tol);
    }
    free(a); free(b);
}

static void compare_step(Pair *r, int n, int offset, const StepConfig *sc, const char *when)
{
    double lc, lg;
    int cc, cg;
    upload_batch(r->cpu, n, offset);
    upload_batch(r->gpu, n, offset);
    int rcpu = r->cpu->train_step(r->cpu, n, sc, &lc, &cc);
    int rgpu = r->gpu->train_step(r->gpu, n, sc, &lg, &cg);
    ck_assert_msg(rcpu == 0 && rgpu == 0, "%s: train_step returned cpu %d, gpu %d (loss %g / %g)",
                  when, rcpu, rgpu, lc, lg);
    note(&worst_loss, fabs(lg - lc) / fmax(1, fabs(lc)), 1e-5);
    ck_assert_msg(fabs(lg - lc) <= 1e-5 * fmax(1, fabs(lc)), "%s: loss gpu %.9g cpu %.9g", when, lg, lc);
    ck_assert_msg(cg == cc, "%s: correct gpu %d cpu %d", when, cg, cc);
    compare_arena(r, A_GRADS, 1e-4, when);
    compare_arena(r, A_PARAMS, 1e-4, when);
    compare_arena(r, A_MOM, 1e-4, when);
}

static void compare_eval(Pair *r, int n, int offset, const char *when)
{
    double lc, lg;
    int cc, cg, K = g.layers[g.n_layers - 1].out.c;
    upload_batch(r->cpu, n, offset);
    upload_batch(r->gpu, n, offset);
    r->cpu->evaluate(r->cpu, n, &lc, &cc);
    r->gpu->evaluate(r->gpu, n, &lg, &cg);
    double e = normwise(r->gpu->logits(r->gpu), r->cpu->logits(r->cpu), (size_t)n * K);
    note(&worst_logits, e, 1e-5);
    ck_assert_msg(e <= 1e-5, "%s: logits differ by %g", when, e);
    ck_assert_msg(fabs(lg - lc) <= 1e-5 * fmax(1, fabs(lc)), "%s: loss gpu %.9g cpu %.9g", when, lg, lc);
    ck_assert_msg(cg == cc, "%s: correct gpu %d cpu %d", when, cg, cc);
}

static int n_sync(const Program *pr)
{
    int k = 0;
    for (int i = 0; i < pr->n_kernels; i++) k += pr->kernels[i].uses_sync != 0;
    return k;
}

/* The whole sequence for one plan of the current flags. */
static void compare_plan(int fuse, const float *lr, int n_lr, const char *flags)
{
    Pair r;
    pair_open(&r, fuse, 1);
    worst_loss = worst_logits = worst_arena[0] = worst_arena[1] = worst_arena[2] = 0;
    StepConfig sc = {lr, n_lr, 0.9f, 1e-4f};
    char when[160];
    /* an inference pass first: BN in inference mode and folded constants */
    snprintf(when, sizeof when, "%s, %s, evaluate before training", flags, fuse ? "fused" : "unfused");
    compare_eval(&r, BATCH, 40, when);
    for (int step = 0; step < 2; step++) {
        snprintf(when, sizeof when, "%s, %s, step %d", flags, fuse ? "fused" : "unfused", step + 1);
        compare_step(&r, BATCH, BATCH * step, &sc, when);
    }
    const EmuStats *st = emu_device_stats(r.dev);
    /* step 1 runs directly (warm-up), step 2 is recorded and replayed */
    ck_assert_msg(st->replays == 1, "%s: %ld graph replays, expected 1", flags, st->replays);
    ck_assert_int_gt(st->fiber_launches, 0);   /* block-cooperative kernels ran as fibers */
    snprintf(when, sizeof when, "%s, %s, short batch", flags, fuse ? "fused" : "unfused");
    compare_step(&r, BATCH - 1, 20, &sc, when);
    ck_assert_int_eq(st->replays, 1);   /* a short batch runs without the graph */
    snprintf(when, sizeof when, "%s, %s, evaluate", flags, fuse ? "fused" : "unfused");
    compare_eval(&r, BATCH, 32, when);
    compare_eval(&r, 2, 36, when);
    printf("tiny, %s, %s: %d kernels (%d cooperative); worst error / bound: loss %.2g, logits %.2g, "
           "gradients %.2g, parameters %.2g, momentum %.2g\n", flags, fuse ? "fused" : "unfused",
           r.pr.n_kernels, n_sync(&r.pr), worst_loss, worst_logits, worst_arena[A_GRADS],
           worst_arena[A_PARAMS], worst_arena[A_MOM]);
    printf("  device: %ld launches (%ld cooperative, %ld blocks, %ld barrier rounds), %ld GEMMs\n",
           st->launches, st->fiber_launches, st->fiber_blocks, st->fiber_rounds, st->gemms);
    fflush(stdout);
    pair_close(&r);
}

static void matches_cpu(Flags f)
{
    load_tiny();
    float lr[KILN_MAX_GROUPS];
    int n_lr;
    apply_flags(f, lr, &n_lr);
    if (f == F_LAYERWISE) ck_assert_int_gt(n_lr, 1);
    for (int fuse = 1; fuse >= 0; fuse--) compare_plan(fuse, lr, n_lr, FLAG_NAMES[f]);
    unload();
}

START_TEST(matches_cpu_bn_train) { matches_cpu(F_BN_TRAIN); }
END_TEST
START_TEST(matches_cpu_bn_frozen) { matches_cpu(F_BN_FROZEN); }
END_TEST
START_TEST(matches_cpu_bn_infer) { matches_cpu(F_BN_INFER); }
END_TEST
START_TEST(matches_cpu_half_frozen) { matches_cpu(F_HALF_FROZEN); }
END_TEST
START_TEST(matches_cpu_head_only) { matches_cpu(F_HEAD_ONLY); }
END_TEST
START_TEST(matches_cpu_layerwise) { matches_cpu(F_LAYERWISE); }
END_TEST

/* At batch 32 the reductions over rows are split across blocks (BN
 * statistics, dbias, the depthwise dW); at batch 4 they are too short to
 * split. Two steps and an evaluation, fused and unfused, against the CPU. */
START_TEST(matches_cpu_split_reductions)
{
    load_tiny();
    graph_flags_all(&g, 1, BN_TRAIN);
    float lr = 0.05f;
    StepConfig sc = {&lr, 1, 0.9f, 1e-4f};
    for (int fuse = 1; fuse >= 0; fuse--) {
        Pair r;
        pair_open_batch(&r, fuse, 1, 32);
        int split_dw = 0, split_cols = 0;
        for (int k = 0; k < r.pr.n_kernels; k++) {
            split_dw += strncmp(r.pr.kernels[k].name, "dwconv_dw_part_", 15) == 0;
            split_cols += strncmp(r.pr.kernels[k].name, "col_part_", 9) == 0;
        }
        ck_assert_msg(split_dw > 0 && split_cols > 0, "%s: %d split dW, %d split column sums",
                      fuse ? "fused" : "unfused", split_dw, split_cols);
        char when[64];
        for (int step = 0; step < 2; step++) {
            snprintf(when, sizeof when, "batch 32, %s, step %d", fuse ? "fused" : "unfused", step + 1);
            compare_step(&r, 32, 32 * step, &sc, when);
        }
        snprintf(when, sizeof when, "batch 32, %s, short batch", fuse ? "fused" : "unfused");
        compare_step(&r, 27, 5, &sc, when);
        compare_eval(&r, 32, 3, "batch 32, evaluate");
        pair_close(&r);
    }
    unload();
}
END_TEST

/* The kernels' results do not depend on the order blocks and threads run
 * in (on a GPU, any order): the emulated device run forwards and run in
 * reverse (blocks, threads, barrier rounds) give the same bits for every
 * loss, gradient, parameter, momentum and logit, at batch 32 so the split
 * reductions are in it, fused and unfused, with BN training and frozen to
 * b1_add (folded). */
static void order_free(Flags f)
{
    load_tiny();
    float lr[KILN_MAX_GROUPS];
    int n_lr;
    apply_flags(f, lr, &n_lr);
    StepConfig sc = {lr, n_lr, 0.9f, 1e-4f};
    for (int fuse = 1; fuse >= 0; fuse--) {
        Pair r;
        pair_open_batch(&r, fuse, 1, 32);
        Program pr2;
        void *dev2;
        Backend *rev = gpu_open(&r.p, &pr2, 1, &dev2, 0, NULL);
        emu_device_set_reverse(dev2, 1);
        size_t P = r.p.param_floats, G = r.p.grad_floats, O = r.p.opt_floats;
        float *a = malloc(sizeof(float) * (P + G + O + 3)), *b = malloc(sizeof(float) * (P + G + O + 3));
        r.gpu->read_params(r.gpu, a);
        rev->write_params(rev, a);
        r.gpu->read_momentum(r.gpu, a);
        rev->write_momentum(rev, a);
        const int n[3] = {32, 32, 27};
        for (int k = 0; k < 3; k++) {
            double la, lb;
            int ca, cb;
            upload_batch(r.gpu, n[k], 7 * k);
            upload_batch(rev, n[k], 7 * k);
            ck_assert_int_eq(r.gpu->train_step(r.gpu, n[k], &sc, &la, &ca), 0);
            ck_assert_int_eq(rev->train_step(rev, n[k], &sc, &lb, &cb), 0);
            ck_assert_msg(la == lb && ca == cb, "%s, %s, step %d: loss %.17g / %.17g, correct %d / %d", FLAG_NAMES[f],
                          fuse ? "fused" : "unfused", k + 1, la, lb, ca, cb);
            r.gpu->read_params(r.gpu, a);
            r.gpu->read_grads(r.gpu, a + P + 1);
            r.gpu->read_momentum(r.gpu, a + P + G + 2);
            rev->read_params(rev, b);
            rev->read_grads(rev, b + P + 1);
            rev->read_momentum(rev, b + P + G + 2);
            ck_assert_msg(memcmp(a, b, sizeof(float) * P) == 0 && memcmp(a + P + 1, b + P + 1, sizeof(float) * G) == 0 &&
                          memcmp(a + P + G + 2, b + P + G + 2, sizeof(float) * O) == 0,
                          "%s, %s, step %d: parameters, gradients or momentum depend on the order", FLAG_NAMES[f],
                          fuse ? "fused" : "unfused", k + 1);
        }
        double la, lb;
        int ca, cb, K = g.layers[g.n_layers - 1].out.c;
        upload_batch(r.gpu, 32, 3);
        upload_batch(rev, 32, 3);
        r.gpu->evaluate(r.gpu, 32, &la, &ca);
        rev->evaluate(rev, 32, &lb, &cb);
        ck_assert(la == lb && ca == cb);
        ck_assert(memcmp(r.gpu->logits(r.gpu), rev->logits(rev), sizeof(float) * 32 * (size_t)K) == 0);
        free(a); free(b);
        rev->destroy(rev);
        pair_close(&r);
    }
    unload();
}

START_TEST(order_free_bn_train) { order_free(F_BN_TRAIN); }
END_TEST

START_TEST(order_free_half_frozen) { order_free(F_HALF_FROZEN); }
END_TEST

/* A NaN weight: the loss is not finite, train_step returns 1 on both
 * backends, and the GPU's trainable parameters and momentum are untouched. */
START_TEST(non_finite_loss_skips_update)
{
    load_tiny();
    graph_flags_all(&g, 1, BN_FROZEN);
    Pair r;
    pair_open(&r, 1, 1);
    /* a first step, so that the NaN step runs from the captured graph (the
     * first full step runs directly) */
    float lr0 = 0.05f;
    StepConfig sc0 = {&lr0, 1, 0.9f, 1e-4f};
    double l0;
    int c0;
    upload_batch(r.gpu, BATCH, 8);
    ck_assert_int_eq(r.gpu->train_step(r.gpu, BATCH, &sc0, &l0, &c0), 0);
    ck_assert_int_eq(emu_device_stats(r.dev)->replays, 0);
    size_t P = r.p.param_floats, O = r.p.opt_floats;
    float *p0 = malloc(sizeof(float) * P), *p1 = malloc(sizeof(float) * P);
    float *m0 = malloc(sizeof(float) * (O + 1)), *m1 = malloc(sizeof(float) * (O + 1));
    r.gpu->read_params(r.gpu, p0);
    int head = graph_find(&g, "head");
    p0[r.p.param_off[g.layers[head].first_param]] = NAN;
    r.gpu->write_params(r.gpu, p0);
    r.cpu->write_params(r.cpu, p0);
    r.gpu->read_momentum(r.gpu, m0);
    float lr = 0.05f;
    StepConfig sc = {&lr, 1, 0.9f, 1e-4f};
    double lc, lg;
    int cc, cg;
    upload_batch(r.cpu, BATCH, 0);
    upload_batch(r.gpu, BATCH, 0);
    ck_assert_int_eq(r.cpu->train_step(r.cpu, BATCH, &sc, &lc, &cc), 1);
    ck_assert_int_eq(r.gpu->train_step(r.gpu, BATCH, &sc, &lg, &cg), 1);
    ck_assert_msg(!isfinite(lg), "loss %g", lg);
    r.gpu->read_params(r.gpu, p1);
    r.gpu->read_momentum(r.gpu, m1);
    ck_assert_msg(memcmp(p0, p1, sizeof(float) * r.p.trainable_floats) == 0, "parameters changed");
    ck_assert_msg(memcmp(m0, m1, sizeof(float) * O) == 0, "momentum changed");
    /* the flag is per step: finite weights train again (the graph replays) */
    r.gpu->read_params(r.gpu, p0);
    p0[r.p.param_off[g.layers[head].first_param]] = 0.01f;
    r.gpu->write_params(r.gpu, p0);
    upload_batch(r.gpu, BATCH, 0);
    ck_assert_int_eq(r.gpu->train_step(r.gpu, BATCH, &sc, &lg, &cg), 0);
    ck_assert(isfinite(lg));
    ck_assert_int_eq(emu_device_stats(r.dev)->replays, 2);   /* the NaN step and this one */
    free(p0); free(p1); free(m0); free(m1);
    pair_close(&r);
    unload();
}
END_TEST

/* Replaying the captured step gives the bits of the direct launches. */
START_TEST(graph_replay_matches_direct_launches)
{
    load_tiny();
    graph_flags_all(&g, 1, BN_TRAIN);
    Pair r;
    pair_open(&r, 1, 1);
    Program pr2;
    void *dev2;
    Backend *direct = gpu_open(&r.p, &pr2, 0, &dev2, 0, NULL);
    /* and one whose graph capture fails: it must run that step directly */
    Program pr3;
    void *dev3;
    Backend *failed = gpu_open(&r.p, &pr3, 1, &dev3, 0, NULL);
    emu_device_fail_captures(dev3, 1);
    float *params = malloc(sizeof(float) * r.p.param_floats);
    float *mom = malloc(sizeof(float) * (r.p.opt_floats + 1));
    r.gpu->read_params(r.gpu, params);
    r.gpu->read_momentum(r.gpu, mom);
    direct->write_params(direct, params);
    direct->write_momentum(direct, mom);
    failed->write_params(failed, params);
    failed->write_momentum(failed, mom);
    float lr = 0.05f;
    StepConfig sc = {&lr, 1, 0.9f, 1e-4f};
    for (int step = 0; step < 3; step++) {
        double la, lb;
        int ca, cb;
        upload_batch(r.gpu, BATCH, BATCH * step);
        upload_batch(direct, BATCH, BATCH * step);
        ck_assert_int_eq(r.gpu->train_step(r.gpu, BATCH, &sc, &la, &ca), 0);
        ck_assert_int_eq(direct->train_step(direct, BATCH, &sc, &lb, &cb), 0);
        ck_assert_msg(la == lb, "step %d: loss %.17g vs %.17g", step, la, lb);
        double lf;
        int cf;
        upload_batch(failed, BATCH, BATCH * step);
        ck_assert_int_eq(failed->train_step(failed, BATCH, &sc, &lf, &cf), 0);
        ck_assert_msg(lf == lb, "step %d, failed capture: loss %.17g vs %.17g", step, lf, lb);
    }
    ck_assert_int_eq(emu_device_stats(dev3)->replays, 0);
    /* it tried once, as the graph backend recorded once */
    ck_assert_int_eq(emu_device_stats(dev3)->recorded, emu_device_stats(r.dev)->recorded);
    float *p3 = malloc(sizeof(float) * r.p.param_floats);
    failed->read_params(failed, p3);
    float *p2 = malloc(sizeof(float) * r.p.param_floats);
    r.gpu->read_params(r.gpu, params);
    direct->read_params(direct, p2);
    ck_assert(memcmp(params, p2, sizeof(float) * r.p.param_floats) == 0);
    ck_assert(memcmp(p3, p2, sizeof(float) * r.p.param_floats) == 0);
    ck_assert_int_eq(emu_device_stats(r.dev)->replays, 2);   /* steps 2 (recorded) and 3 */
    ck_assert_int_eq(emu_device_stats(dev2)->replays, 0);
    ck_assert_int_eq(emu_device_stats(dev2)->recorded, 0);
    free(params); free(mom); free(p2); free(p3);
    direct->destroy(direct);
    failed->destroy(failed);
    pair_close(&r);
    unload();
}
END_TEST

/* The training loop's pattern: step k launched, batch k+1 uploaded while it
 * runs (on the copy stream), step k waited for. The steps match the CPU's
 * run one after the other (each step keeps the batch it was launched with),
 * the second upload was queued with compute work in flight, and the
 * emulated device saw no race (it aborts on one). */
START_TEST(upload_overlaps_step)
{
    load_tiny();
    graph_flags_all(&g, 1, BN_TRAIN);
    Pair r;
    pair_open(&r, 1, 1);
    float lr = 0.05f;
    StepConfig sc = {&lr, 1, 0.9f, 1e-4f};
    const int n[3] = {BATCH, BATCH, BATCH - 1}, off[3] = {0, 9, 20};
    upload_batch(r.gpu, n[0], off[0]);
    for (int k = 0; k < 3; k++) {
        double lc, lg;
        int cc, cg;
        r.gpu->train_launch(r.gpu, n[k], &sc);
        if (k + 1 < 3) upload_batch(r.gpu, n[k + 1], off[k + 1]);
        int bg = r.gpu->train_wait(r.gpu, &lg, &cg);
        upload_batch(r.cpu, n[k], off[k]);
        int bc = r.cpu->train_step(r.cpu, n[k], &sc, &lc, &cc);
        ck_assert_int_eq(bg, 0);
        ck_assert_int_eq(bc, 0);
        ck_assert_msg(fabs(lg - lc) <= 1e-5 * fmax(1, fabs(lc)), "step %d: loss gpu %.9g cpu %.9g", k + 1, lg, lc);
        ck_assert_int_eq(cg, cc);
        char when[64];
        snprintf(when, sizeof when, "overlapped step %d", k + 1);
        compare_arena(&r, A_PARAMS, 1e-4, when);
    }
    const EmuStats *st = emu_device_stats(r.dev);
    ck_assert_int_eq(st->async_copies, 3);
    ck_assert_int_eq(st->overlapped, 2);
    ck_assert_int_eq(st->replays, 1);   /* step 1 direct, 2 recorded and replayed; 3 is short */
    /* evaluation after it reads its own upload */
    compare_eval(&r, BATCH, 32, "evaluate after overlapped steps");
    pair_close(&r);
    unload();
}
END_TEST

/* The emulated copy stream's hazard checks, each of which must abort:
 * reading a copy's destination without a fence, changing a queued copy's
 * host source, copying into memory queued compute work still uses. */
typedef enum { HZ_NO_FENCE, HZ_SOURCE_CHANGED, HZ_INTO_INFLIGHT } Hazard;

static void hazard(Hazard h)
{
    load_tiny();
    char err[512];
    PlanOptions po = {.batch = BATCH, .fuse = 1, .fold = 1};
    Plan p;
    Program pr;
    ck_assert_msg(plan_build(&p, &g, &po, err, sizeof err) == 0, "%s", err);
    EmitOptions eo = {0, 0};
    ck_assert_msg(emit_program(&pr, &p, &eo, err, sizeof err) == 0, "%s", err);
    DevOps o;
    ck_assert_msg(emu_device_open(&o, &pr, KILN_EMU_CC, KILN_EMU_CFLAGS, KILN_EMU_INCLUDE, err, sizeof err) == 0,
                  "%s", err);
    float *a = o.alloc(o.ctx, 4096), *b = o.alloc(o.ctx, 4096), w;
    float *host = o.host_alloc(o.ctx, 4096);
    memset(host, 1, 4096);
    o.d2h(o.ctx, &w, a, sizeof w);                /* the allocations' zero fill done */
    o.h2d_async(o.ctx, a, host, 4096);
    switch (h) {
    case HZ_NO_FENCE:
        o.d2d(o.ctx, b, a, 4096);                  /* aborts */
        break;
    case HZ_SOURCE_CHANGED:
        host[7] = 2;
        o.copy_fence(o.ctx);                       /* aborts */
        break;
    case HZ_INTO_INFLIGHT:
        o.copy_fence(o.ctx);
        o.d2d(o.ctx, b, a, 4096);                  /* fine: fenced */
        o.h2d_async(o.ctx, a, host, 4096);         /* aborts: the d2d may not have run yet */
        break;
    }
    ck_abort_msg("the emulated device did not see the race");
}

START_TEST(hazard_read_without_fence) { hazard(HZ_NO_FENCE); }
END_TEST
START_TEST(hazard_source_changed) { hazard(HZ_SOURCE_CHANGED); }
END_TEST
START_TEST(hazard_copy_into_inflight) { hazard(HZ_INTO_INFLIGHT); }
END_TEST

/* Features extracted at a frozen cut and fed back in: the GPU's features,
 * training steps (a graph keyed by the entry) and logits match the CPU's. */
START_TEST(cached_features_match_cpu)
{
    load_tiny();
    graph_flags_all(&g, 1, BN_TRAIN);
    ck_assert_int_eq(graph_freeze_until(&g, "b1_add"), 0);
    Pair r;
    pair_open(&r, 1, 1);
    int cut = plan_find_cut(&r.p, (size_t)-1);
    ck_assert_int_gt(cut, 0);
    size_t f = plan_layer_floats(&r.p, cut) * BATCH;
    float *fc = malloc(sizeof(float) * f), *fg = malloc(sizeof(float) * f);
    upload_batch(r.cpu, BATCH, 0);
    upload_batch(r.gpu, BATCH, 0);
    r.cpu->extract(r.cpu, BATCH, cut, fc);
    r.gpu->extract(r.gpu, BATCH, cut, fg);
    double e = normwise(fg, fc, f);
    ck_assert_msg(e <= 1e-5, "features at %s differ by %g", g.layers[cut].name, e);
    r.cpu->set_entry(r.cpu, cut);
    r.gpu->set_entry(r.gpu, cut);
    int32_t y[BATCH];
    for (int i = 0; i < BATCH; i++) y[i] = ds.labels[i];
    float lr = 0.05f;
    StepConfig sc = {&lr, 1, 0.9f, 1e-4f};
    for (int step = 0; step < 2; step++) {
        double lc, lg;
        int cc, cg;
        r.cpu->upload(r.cpu, fc, y, BATCH);
        r.gpu->upload(r.gpu, fc, y, BATCH);
        ck_assert_int_eq(r.cpu->train_step(r.cpu, BATCH, &sc, &lc, &cc), 0);
        ck_assert_int_eq(r.gpu->train_step(r.gpu, BATCH, &sc, &lg, &cg), 0);
        ck_assert_msg(fabs(lg - lc) <= 1e-5 * fmax(1, fabs(lc)), "loss gpu %.9g cpu %.9g", lg, lc);
        compare_arena(&r, A_PARAMS, 1e-4, "cached features");
    }
    ck_assert_int_eq(emu_device_stats(r.dev)->replays, 1);   /* step 1 direct, step 2 from the graph */
    r.cpu->upload(r.cpu, fc, y, BATCH);
    r.gpu->upload(r.gpu, fc, y, BATCH);
    double lc, lg;
    int cc, cg, K = g.layers[g.n_layers - 1].out.c;
    r.cpu->evaluate(r.cpu, BATCH, &lc, &cc);
    r.gpu->evaluate(r.gpu, BATCH, &lg, &cg);
    e = normwise(r.gpu->logits(r.gpu), r.cpu->logits(r.cpu), (size_t)BATCH * K);
    ck_assert_msg(e <= 1e-5, "logits through cached features differ by %g", e);
    /* the layer output the backend exposes: the logits' input */
    int last = g.layers[g.n_layers - 1].in[0];
    const float *og = r.gpu->layer_output(r.gpu, last), *oc = r.cpu->layer_output(r.cpu, last);
    ck_assert_ptr_nonnull(og);
    ck_assert(normwise(og, oc, (size_t)BATCH * K) <= 1e-5);
    free(fc); free(fg);
    pair_close(&r);
    unload();
}
END_TEST

/* Arenas that do not fit: the message names the bytes asked for, the bytes
 * free and the largest batch that fits. */
START_TEST(out_of_memory_names_the_fitting_batch)
{
    load_tiny();
    graph_flags_all(&g, 1, BN_TRAIN);
    Plan p;
    char err[512];
    PlanOptions po = {.batch = 64, .fuse = 1, .fold = 1};
    ck_assert_msg(plan_build(&p, &g, &po, err, sizeof err) == 0, "%s", err);
    size_t a[6];
    plan_arena_bytes(&p, a);
    size_t fixed = a[0] + a[1] + a[2] + a[4] + 4 * CTRL_WORDS, per = (a[3] + a[5]) / 64;
    Program pr;
    void *dev;
    char msg[1024];
    Backend *be = gpu_open(&p, &pr, 1, &dev, fixed + 20 * per, msg);   /* room for ~20 images */
    ck_assert_ptr_null(be);
    char asked[64];
    ck_assert_msg(strstr(msg, "out of device memory") && strstr(msg, "bytes free of") &&
                  strstr(msg, "largest batch that fits is about"), "%s", msg);
    int fit = atoi(strstr(msg, "fits is about ") + strlen("fits is about "));
    ck_assert_msg(fit >= 17 && fit <= 20, "%s", msg);   /* allocation rounding */
    snprintf(asked, sizeof asked, "cannot allocate %zu bytes", a[3]);   /* activations fail */
    ck_assert_msg(strstr(msg, asked), "%s", msg);
    plan_free(&p);
    unload();
}
END_TEST

/* ---- whole trainings ------------------------------------------------------------------- */

/* The make_backend context of an emulated run: how many backends run_train
 * made, and the device counters summed over them (taken when each is
 * destroyed, through a wrapper of its destroy). */
typedef struct {
    int made;
    struct { Backend *be; void *dev; void (*destroy)(Backend *); void (*launch)(Backend *, int, const StepConfig *); } live[2];
    EmuStats total;
    long launched;           /* train_launch calls */
} EmuRun;

static EmuRun *emu_run;   /* the run in progress (the wrappers have only the Backend) */

static void emu_run_launch(Backend *be, int n, const StepConfig *sc)
{
    emu_run->launched++;
    for (int k = 0; k < 2; k++)
        if (emu_run->live[k].be == be) {
            emu_run->live[k].launch(be, n, sc);
            return;
        }
    ck_abort_msg("train_launch of a backend the run did not make");
}

static void emu_run_destroy(Backend *be)
{
    for (int k = 0; k < 2; k++) {
        if (emu_run->live[k].be != be) continue;
        const EmuStats *st = emu_device_stats(emu_run->live[k].dev);
        emu_run->total.launches += st->launches;
        emu_run->total.gemms += st->gemms;
        emu_run->total.replays += st->replays;
        emu_run->total.async_copies += st->async_copies;
        emu_run->total.overlapped += st->overlapped;
        void (*destroy)(Backend *) = emu_run->live[k].destroy;
        emu_run->live[k].be = NULL;
        destroy(be);
        return;
    }
    ck_abort_msg("destroy of a backend the run did not make");
}

/* RunConfig.make_backend: the GPU executor over the emulated device, with
 * graphs, as cuda_backend_create makes it over the real one. */
static Backend *make_emu_backend(const Plan *p, void *ctx, char *err, size_t errlen)
{
    EmuRun *r = ctx;
    Program pr;
    void *dev;
    Backend *be = emu_backend_create(p, &pr, 1, 0, &dev, err, errlen);
    if (!be) return NULL;
    int k = r->live[0].be ? 1 : 0;
    ck_assert_ptr_null(r->live[k].be);   /* at most two at a time: phase 1 hands over to phase 2 */
    r->live[k].be = be;
    r->live[k].dev = dev;
    r->live[k].destroy = be->destroy;
    r->live[k].launch = be->train_launch;
    be->destroy = emu_run_destroy;
    be->train_launch = emu_run_launch;
    r->made++;
    return be;
}

static char run_dir[256];
static FILE *quiet;

/* A run of tiny on the synthetic set: max 3 epochs, lr 0.05, a one-epoch
 * warm-up where the strategy has one, plateau and early stopping after one
 * epoch without improvement; a run folder (checkpoints, best weights) and
 * the final weights saved under name. */
static void train_cfg(RunConfig *c, Strategy s, const char *weights, const char *name, char *out,
                      char *save)
{
    const char *src = getenv("KILN_SOURCE_DIR");
    static char arch[1024];
    snprintf(arch, sizeof arch, "%s/archs/tiny.arch", src ? src : ".");
    run_config_default(c);
    strategy_defaults(&c->spec, s);
    c->arch = arch;
    c->data = "synthetic:noise=0.5,n=400";   /* 320 training images: 10 steps of 32 an epoch */
    c->weights = s == STRAT_RANDOM ? NULL : weights;
    c->progress = 0;
    c->log = quiet;
    c->spec.max_epochs = 3;
    c->spec.lr = 0.05f;
    c->spec.patience = 1;
    c->spec.plateau_patience = 1;
    if (c->spec.warmup_epochs) c->spec.warmup_epochs = 1;
    c->spec.seed = 5;
    snprintf(out, 600, "%s/%s", run_dir, name);
    snprintf(save, 600, "%s/%s.safetensors", run_dir, name);
    c->out = out;
    c->save = save;
}

/* The worst per-tensor normwise difference of two weight files (and the
 * largest absolute one into *abs_max); every tensor of b must be in a. */
static double weights_diff(const char *pa, const char *pb, double *abs_max)
{
    StFile a, b;
    char err[512];
    ck_assert_msg(st_load(pa, &a, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(st_load(pb, &b, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(a.n, b.n);
    double worst = 0;
    *abs_max = 0;
    for (int i = 0; i < b.n; i++) {
        const StTensor *t = st_find(&a, b.tensors[i].name);
        ck_assert_msg(t && t->numel == b.tensors[i].numel, "tensor %s", b.tensors[i].name);
        worst = fmax(worst, normwise(t->data, b.tensors[i].data, t->numel));
        for (size_t k = 0; k < t->numel; k++) *abs_max = fmax(*abs_max, fabs((double)t->data[k] - b.tensors[i].data[k]));
    }
    st_free(&a);
    st_free(&b);
    return worst;
}

/* Bytes of tiny's plan under auto's flags at batch 32: as auto's memory
 * budget it makes auto pick batch 32 (a batch-256 range test would take
 * most of the case's time). */
static size_t auto_budget_for_batch_32(const char *arch)
{
    Graph ga;
    Plan p;
    TrainSpec t;
    LrGroups gr;
    char err[512];
    ck_assert_msg(graph_load(&ga, arch, err, sizeof err) == 0, "%s", err);
    strategy_defaults(&t, STRAT_AUTO);
    ck_assert_msg(strategy_apply(&t, 0, &ga, &gr, err, sizeof err) == 0, "%s", err);
    PlanOptions po = {.batch = 32, .fuse = 1, .fold = 1};
    ck_assert_msg(plan_build(&p, &ga, &po, err, sizeof err) == 0, "%s", err);
    size_t b = plan_bytes(&p);
    plan_free(&p);
    graph_free(&ga);
    return b;
}

/* A GPU run of strategy s stopped mid-epoch in its second phase (step 35:
 * phase 1 runs 3 epochs of 10 steps) and resumed from its checkpoint, also
 * on the GPU, ends with the weights of the uninterrupted GPU run (in
 * full_save), bit for bit. */
static void gpu_resume_matches(Strategy s, const char *pre, size_t budget, const char *full_save, char *err)
{
    RunConfig c;
    RunResult r;
    EmuRun er;
    char out[600], save[600], unused[600];
    memset(&er, 0, sizeof er);
    emu_run = &er;
    train_cfg(&c, s, pre, "resumed", out, save);
    c.memory_budget = budget;
    c.make_backend = make_emu_backend;
    c.make_backend_ctx = &er;
    c.save = NULL;
    c.stop_after_steps = 35;
    ck_assert_int_eq(run_train(&c, NULL, &r, err, ERRLEN), 130);
    ck_assert_int_eq(r.interrupted, 1);
    train_cfg(&c, s, pre, "resumed", unused, save);
    c.memory_budget = budget;
    c.make_backend = make_emu_backend;
    c.make_backend_ctx = &er;
    c.out = NULL;
    c.resume = out;
    int code = run_train(&c, NULL, &r, err, ERRLEN);
    ck_assert_msg(code == 0, "resumed on the emulated GPU: %.4000s", err);
    emu_run = NULL;
    /* phases 1 and 2 stopped; resumed, phase 1's backend again (the
     * parameters pass through it) before phase 2 */
    ck_assert_int_eq(er.made, 4);
    double wabs, w = weights_diff(save, full_save, &wabs);
    printf("%s on the emulated GPU, stopped at step 35 and resumed: final weights differ by %g (abs %g) "
           "from the uninterrupted run's\n", strategy_name(s), w, wabs);
    ck_assert_msg(wabs == 0, "the resumed GPU run's weights differ by %g", wabs);
}

/* The runs of the training case: every strategy, and two that diverge. */
static const struct {
    Strategy s;
    float lr;          /* 0: train_cfg's */
    int rollback;      /* on_diverge rollback (max 2) instead of the strategy's */
    const char *label;
} TRAIN_CASES[] = {
    {STRAT_RANDOM, 0, 0, "random"},
    {STRAT_NAIVE, 0, 0, "naive"},
    {STRAT_NAIVE_BN_FROZEN, 0, 0, "naive-bn-frozen"},
    {STRAT_FROZEN, 0, 0, "frozen"},
    {STRAT_FREEZE_FINETUNE, 0, 0, "freeze-finetune"},
    {STRAT_LAYERWISE, 0, 0, "layerwise"},
    {STRAT_WARMUP, 0, 0, "warmup"},
    {STRAT_AUTO, 0, 0, "auto"},
    {STRAT_NAIVE, 1e4f, 0, "naive lr 1e4, stop"},
    {STRAT_NAIVE_BN_FROZEN, 1e4f, 1, "bn-frozen lr 1e4, rollback"},
};

/* Every strategy trained twice from the same weights, seed and
 * configuration: on the CPU backend and on the GPU executor over the
 * emulated device; and two runs at an LR that diverges (stopped, and rolled
 * back until the rollbacks run out). Also a freeze-finetune GPU run stopped
 * and resumed from its checkpoint (gpu_resume_matches). The two agree on epochs, best epochs,
 * divergence (epoch, step), rollbacks, the LR (auto's comes from its range
 * test), the feature cache's cut; validation and test accuracy to 1e-6; the
 * final weights to 1e-4 normwise per tensor. */
START_TEST(training_runs_match_cpu)
{
    char *err = malloc(ERRLEN);
    strcpy(run_dir, "/tmp/kiln-emu-runs-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(run_dir));
    quiet = fopen("/dev/null", "w");
    /* pretrained weights: a short CPU run on another draw of the task */
    RunConfig c;
    RunResult rc, rg;
    char out[600], pre[600];
    train_cfg(&c, STRAT_NAIVE, NULL, "pretrain", out, pre);
    c.data = "synthetic:noise=0.5,n=400,seed=7";
    c.spec.max_epochs = 2;
    ck_assert_msg(run_train(&c, NULL, &rc, err, ERRLEN) == 0, "%s", err);
    size_t budget = auto_budget_for_batch_32(c.arch);
    int n_div = 0;
    double worst_w = 0;
    for (size_t k = 0; k < sizeof TRAIN_CASES / sizeof TRAIN_CASES[0]; k++) {
        const char *sn = TRAIN_CASES[k].label;
        char name[64], save_c[600], save_g[600], out_g[600];
        RunResult *res[2] = {&rc, &rg};
        EmuRun er;
        memset(&er, 0, sizeof er);
        double t[3];
        t[0] = kiln_now();
        for (int gpu = 0; gpu < 2; gpu++) {
            snprintf(name, sizeof name, "run%zu-%s", k, gpu ? "gpu" : "cpu");
            train_cfg(&c, TRAIN_CASES[k].s, pre, name, gpu ? out_g : out, gpu ? save_g : save_c);
            c.memory_budget = budget;
            if (TRAIN_CASES[k].lr > 0) c.spec.lr = TRAIN_CASES[k].lr;
            if (TRAIN_CASES[k].rollback) { c.spec.on_diverge = DIVERGE_ROLLBACK; c.spec.max_rollbacks = 2; }
            if (gpu) {
                emu_run = &er;
                c.make_backend = make_emu_backend;
                c.make_backend_ctx = &er;
            }
            int code = run_train(&c, NULL, res[gpu], err, ERRLEN);
            if (code) fprintf(stderr, "%s\n", err);
            ck_assert_msg(code == 0, "%s on the %s: %.4000s", sn, gpu ? "emulated GPU" : "CPU", err);
            emu_run = NULL;
            t[gpu + 1] = kiln_now();
        }
        ck_assert_int_eq(er.made, rg.phases);
        ck_assert_msg(er.live[0].be == NULL && er.live[1].be == NULL, "%s: a backend was not destroyed", sn);
        double wabs, w = weights_diff(save_g, save_c, &wabs);
        worst_w = fmax(worst_w, w);
        printf("%-26s epochs %d+%d (best %d+%d), batch %d, cut %d, lr %.4g, diverged %d (epoch %d step %d), "
               "rollbacks %d; val %.4f/%.4f, test %.4f/%.4f (cpu/gpu); weights: worst %.3g normwise, %.3g abs; "
               "%ld launches, %ld GEMMs, %ld replays, %ld steps, %ld of %ld uploads overlapped a step; "
               "%.1fs cpu, %.1fs gpu\n",
               sn, rc.epochs[0], rc.phases > 1 ? rc.epochs[1] : 0, rc.best_epoch[0],
               rc.phases > 1 ? rc.best_epoch[1] : 0, rc.batch, rc.cached_layer, rc.lr, rc.diverged,
               rc.div_epoch, rc.div_step, rc.rollbacks, rc.val_acc, rg.val_acc, rc.test_acc, rg.test_acc, w,
               wabs, er.total.launches, er.total.gemms, er.total.replays, er.launched, er.total.overlapped,
               er.total.async_copies, t[1] - t[0], t[2] - t[1]);
        fflush(stdout);
        ck_assert_int_eq(rg.phases, rc.phases);
        for (int ph = 0; ph < rc.phases; ph++) {
            ck_assert_msg(rg.epochs[ph] == rc.epochs[ph], "%s phase %d: %d epochs on the GPU, %d on the CPU", sn,
                          ph + 1, rg.epochs[ph], rc.epochs[ph]);
            ck_assert_int_eq(rg.best_epoch[ph], rc.best_epoch[ph]);
        }
        ck_assert_int_eq(rg.diverged, rc.diverged);
        ck_assert_int_eq(rg.div_epoch, rc.div_epoch);
        ck_assert_int_eq(rg.div_step, rc.div_step);
        ck_assert_int_eq(rg.rollbacks, rc.rollbacks);
        ck_assert_int_eq(rg.cached_layer, rc.cached_layer);
        ck_assert_int_eq(rg.batch, rc.batch);
        ck_assert_msg(rg.lr == rc.lr, "%s: lr %.9g on the GPU, %.9g on the CPU", sn, rg.lr, rc.lr);
        ck_assert_msg(fabs(rg.val_acc - rc.val_acc) <= 1e-6, "%s: val_acc %.9g vs %.9g", sn, rg.val_acc, rc.val_acc);
        ck_assert_msg(fabs(rg.test_acc - rc.test_acc) <= 1e-6, "%s: test_acc %.9g vs %.9g", sn, rg.test_acc,
                      rc.test_acc);
        ck_assert_msg(w <= 1e-4, "%s: final weights differ by %g normwise", sn, w);
        n_div += rc.diverged;
        if (TRAIN_CASES[k].lr > 0) {
            ck_assert_msg(rc.diverged, "%s: did not diverge", sn);
            if (TRAIN_CASES[k].rollback) ck_assert_int_eq(rc.rollbacks, 2);
            continue;
        }
        ck_assert_int_eq(rc.diverged, 0);
        /* every step's batch but an epoch's first was uploaded while the
         * step before it ran */
        ck_assert_int_gt(er.launched, 0);
        ck_assert_msg(er.total.overlapped == er.launched - (rg.epochs[0] + (rg.phases > 1 ? rg.epochs[1] : 0)),
                      "%s: %ld uploads overlapped a step, for %ld steps in %d+%d epochs", sn, er.total.overlapped,
                      er.launched, rg.epochs[0], rg.phases > 1 ? rg.epochs[1] : 0);
        if (TRAIN_CASES[k].s == STRAT_FREEZE_FINETUNE) gpu_resume_matches(TRAIN_CASES[k].s, pre, budget, save_g, err);
        ck_assert_int_gt(er.total.replays, 0);   /* the steps replayed the captured graph */
        if (TRAIN_CASES[k].s == STRAT_AUTO) ck_assert_int_eq(rc.batch, 32);
        /* the GPU run's folder: checkpoint and best weights written */
        char path[700];
        snprintf(path, sizeof path, "%s/last.ckpt", out_g);
        ck_assert_msg(access(path, R_OK) == 0, "%s: no checkpoint", sn);
        snprintf(path, sizeof path, "%s/best.safetensors", out_g);
        ck_assert_msg(access(path, R_OK) == 0, "%s: no best weights", sn);
    }
    ck_assert_int_eq(n_div, 2);
    printf("training runs: worst final-weight difference GPU (emulated) vs CPU %.3g normwise\n", worst_w);
    fclose(quiet);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", run_dir);
    ck_assert_int_eq(system(cmd), 0);
    free(err);
}
END_TEST

Suite *test_suite(void)
{
    Suite *s = suite_create("cuda_emu");
    TCase *tc = tcase_create("cuda_emu");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, matches_cpu_bn_train);
    tcase_add_test(tc, matches_cpu_bn_frozen);
    tcase_add_test(tc, matches_cpu_bn_infer);
    tcase_add_test(tc, matches_cpu_half_frozen);
    tcase_add_test(tc, matches_cpu_head_only);
    tcase_add_test(tc, matches_cpu_layerwise);
    tcase_add_test(tc, matches_cpu_split_reductions);
    tcase_add_test(tc, order_free_bn_train);
    tcase_add_test(tc, order_free_half_frozen);
    tcase_add_test(tc, non_finite_loss_skips_update);
    tcase_add_test(tc, graph_replay_matches_direct_launches);
    tcase_add_test(tc, cached_features_match_cpu);
    tcase_add_test(tc, out_of_memory_names_the_fitting_batch);
    tcase_add_test(tc, upload_overlaps_step);
    tcase_add_test_raise_signal(tc, hazard_read_without_fence, SIGABRT);
    tcase_add_test_raise_signal(tc, hazard_source_changed, SIGABRT);
    tcase_add_test_raise_signal(tc, hazard_copy_into_inflight, SIGABRT);
    suite_add_tcase(s, tc);
    TCase *tr = tcase_create("training");
    tcase_set_timeout(tr, 300);
    tcase_add_test(tr, training_runs_match_cpu);
    suite_add_tcase(s, tr);
    return s;
}
