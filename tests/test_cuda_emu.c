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
 *    and the largest batch that fits.
 * KILN_EMU_CC (the C compiler), KILN_EMU_CFLAGS (the sanitizers of a
 * sanitized build) and KILN_EMU_INCLUDE (this folder) come from
 * tests/CMakeLists.txt. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/emit.h"
#include "datasets/dataset.h"
#include "emu_device.h"
#include "runtime/backend.h"
#include "runtime/cuda/exec.h"
#include "runtime/params.h"
#include "runtime/strategy.h"

#define BATCH 4
#define ERRLEN 65536

static Graph g;
static Dataset ds;
static Preproc pp;

static void load_tiny(void)
{
    const char *src = getenv("KILN_SOURCE_DIR");
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/archs/tiny.arch", src ? src : ".");
    ck_assert_msg(graph_load(&g, path, err, sizeof err) == 0, "%s", err);
    const InputAttr *in = &g.layers[0].a.input;
    DataOptions o = {in->h, in->w, in->c, 0, 1};
    ck_assert_msg(dataset_open(&ds, "synthetic:n=64,noise=0.5", &o, err, sizeof err) == 0, "%s", err);
    pp = (Preproc){in->scale, {in->mean[0], in->mean[1], in->mean[2]}, {in->std[0], in->std[1], in->std[2]}};
}

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
    EmitOptions eo = {0, 0};
    int rc = emit_program(pr, p, &eo, err, ERRLEN);
    ck_assert_msg(rc == 0, "emit: %s", err);
    DevOps ops;
    if (emu_device_open(&ops, pr, KILN_EMU_CC, KILN_EMU_CFLAGS, KILN_EMU_INCLUDE, err, ERRLEN)) {
        fprintf(stderr, "%s\n", err);   /* the whole compiler output */
        ck_abort_msg("%.4000s", err);
    }
    *dev = ops.ctx;
    if (mem_limit) emu_device_set_limit(ops.ctx, mem_limit);
    Backend *be = gpu_backend_create(p, pr, &ops, graphs, err, ERRLEN);
    if (!be && !fail_msg) ck_abort_msg("gpu_backend_create: %s", err);
    if (!be) snprintf(fail_msg, 1024, "%s", err);
    free(err);
    return be;
}

/* Parameters from seed 3 with non-trivial BN values (as test_train), and a
 * non-zero momentum, written to both backends. */
static void init_state(Pair *r)
{
    float *params = calloc(r->p.param_floats + 1, sizeof(float));
    params_init(&r->p, params, 3, 0, g.n_layers - 1);
    for (int i = 0; i < g.n_params; i++) {
        Param *pa = &g.params[i];
        float *v = params + r->p.param_off[i];
        for (size_t k = 0; k < pa->numel; k++) {
            float u = (float)((k * 7919 + (size_t)i * 104729) % 1000) / 1000.0f;
            if (pa->role == ROLE_GAMMA) v[k] = 0.5f + u;
            if (pa->role == ROLE_BETA) v[k] = u - 0.5f;
            if (pa->role == ROLE_MEAN) v[k] = 0.2f * (u - 0.5f);
            if (pa->role == ROLE_VAR) v[k] = 0.5f + u;
        }
    }
    float *mom = calloc(r->p.opt_floats + 1, sizeof(float));
    for (size_t k = 0; k < r->p.opt_floats; k++) mom[k] = 0.01f * (float)((k * 2654435761u) % 200) / 100.0f - 0.01f;
    r->cpu->write_params(r->cpu, params);
    r->gpu->write_params(r->gpu, params);
    r->cpu->write_momentum(r->cpu, mom);
    r->gpu->write_momentum(r->gpu, mom);
    free(params); free(mom);
}

static void pair_open(Pair *r, int fuse, int graphs)
{
    char err[512];
    PlanOptions po = {.batch = BATCH, .fuse = fuse, .fold = 1};
    ck_assert_msg(plan_build(&r->p, &g, &po, err, sizeof err) == 0, "%s", err);
    r->cpu = cpu_backend_create(&r->p, err, sizeof err);
    ck_assert_msg(r->cpu != NULL, "%s", err);
    r->gpu = gpu_open(&r->p, &r->pr, graphs, &r->dev, 0, NULL);
    init_state(r);
}

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
    ck_assert_msg(st->replays == 2, "%s: %ld graph replays, expected 2", flags, st->replays);
    ck_assert_int_gt(st->fiber_launches, 0);   /* block-cooperative kernels ran as fibers */
    snprintf(when, sizeof when, "%s, %s, short batch", flags, fuse ? "fused" : "unfused");
    compare_step(&r, BATCH - 1, 20, &sc, when);
    ck_assert_int_eq(st->replays, 2);   /* a short batch runs without the graph */
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

/* A NaN weight: the loss is not finite, train_step returns 1 on both
 * backends, and the GPU's trainable parameters and momentum are untouched. */
START_TEST(non_finite_loss_skips_update)
{
    load_tiny();
    graph_flags_all(&g, 1, BN_FROZEN);
    Pair r;
    pair_open(&r, 1, 1);
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
    ck_assert_int_eq(emu_device_stats(r.dev)->replays, 2);
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
    float *params = malloc(sizeof(float) * r.p.param_floats);
    float *mom = malloc(sizeof(float) * (r.p.opt_floats + 1));
    r.gpu->read_params(r.gpu, params);
    r.gpu->read_momentum(r.gpu, mom);
    direct->write_params(direct, params);
    direct->write_momentum(direct, mom);
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
    }
    float *p2 = malloc(sizeof(float) * r.p.param_floats);
    r.gpu->read_params(r.gpu, params);
    direct->read_params(direct, p2);
    ck_assert(memcmp(params, p2, sizeof(float) * r.p.param_floats) == 0);
    ck_assert_int_eq(emu_device_stats(r.dev)->replays, 3);
    ck_assert_int_eq(emu_device_stats(dev2)->replays, 0);
    ck_assert_int_eq(emu_device_stats(dev2)->recorded, 0);
    free(params); free(mom); free(p2);
    direct->destroy(direct);
    pair_close(&r);
    unload();
}
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
    ck_assert_int_eq(emu_device_stats(r.dev)->replays, 2);
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

int main(void)
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
    tcase_add_test(tc, non_finite_loss_skips_update);
    tcase_add_test(tc, graph_replay_matches_direct_launches);
    tcase_add_test(tc, cached_features_match_cpu);
    tcase_add_test(tc, out_of_memory_names_the_fitting_batch);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
