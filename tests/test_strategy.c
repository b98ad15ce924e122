/* tests/test_strategy.c — strategies, the schedule and the loop's promises:
 *  - each strategy's flags in the plan (what trains, BN modes, LR groups);
 *  - LR schedule values at chosen steps (warm-up ramp, plateau, early stop);
 *  - warm-up rescues a learning rate that diverges without it;
 *  - a NaN is caught before the update, the run is marked diverged, and
 *    rollback recovers;
 *  - resume after a stop mid-epoch gives bit-identical final weights;
 *  - a corrupted checkpoint is refused; an unwritable run folder and a
 *    class-count mismatch fail before training;
 *  - option values out of range (inf, nan) are refused with exit 2. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/checkpoint.h"
#include "runtime/run.h"
#include "runtime/safetensors.h"
#include "tests/file_fixture.h"
#include "tests/suite_main.h"

static char tiny[1024], tmpdir[256];

static void setup(void) { test_dirs_make(tiny, sizeof tiny, tmpdir, sizeof tmpdir, "strategy"); }

static void teardown(void) { test_dir_remove(tmpdir); }

static Graph g;

static void load_graph(const char *path)
{
    char err[512];
    ck_assert_msg(graph_load(&g, path, err, sizeof err) == 0, "%s", err);
}

/* ---- flags ----------------------------------------------------------------------- */

/* Count trainable learnable parameters and BN layers per mode. */
static size_t trainable_of(int *bn_train, int *bn_infer, int *bn_frozen)
{
    size_t n = 0;
    *bn_train = *bn_infer = *bn_frozen = 0;
    for (int i = 0; i < g.n_params; i++) n += param_trainable(&g, i) ? g.params[i].numel : 0;
    for (int i = 0; i < g.n_layers; i++)
        if (g.layers[i].op == OP_BN) {
            *bn_train += g.layers[i].bn_mode == BN_TRAIN;
            *bn_infer += g.layers[i].bn_mode == BN_INFER;
            *bn_frozen += g.layers[i].bn_mode == BN_FROZEN;
        }
    return n;
}

START_TEST(strategy_flags)
{
    load_graph(tiny);
    struct { Strategy s; int phase; size_t trainable; int bn_train, bn_frozen; } want[] = {
        {STRAT_RANDOM, 0, 5880, 4, 0},
        {STRAT_NAIVE, 0, 5880, 4, 0},
        {STRAT_NAIVE_BN_FROZEN, 0, 5880 - 160, 0, 4},   /* gamma/beta of 4 BNs frozen */
        {STRAT_FROZEN, 0, 132, 0, 4},                    /* only the dense head */
        {STRAT_FREEZE_FINETUNE, 0, 132, 0, 4},
        {STRAT_FREEZE_FINETUNE, 1, 5880 - 160, 0, 4},
        {STRAT_LAYERWISE, 0, 5880 - 160, 0, 4},
        {STRAT_WARMUP, 0, 5880 - 160, 0, 4},
        {STRAT_AUTO, 0, 5880 - 160, 0, 4},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        TrainSpec t;
        LrGroups gr;
        char err[256];
        strategy_defaults(&t, want[k].s);
        ck_assert_int_eq(strategy_apply(&t, want[k].phase, &g, &gr, err, sizeof err), 0);
        int bt, bi, bf;
        size_t n = trainable_of(&bt, &bi, &bf);
        ck_assert_msg(n == want[k].trainable, "%s phase %d: %zu trainable, want %zu", strategy_name(want[k].s),
                      want[k].phase, n, want[k].trainable);
        ck_assert_int_eq(bt, want[k].bn_train);
        ck_assert_int_eq(bf, want[k].bn_frozen);
        ck_assert_int_eq(strategy_phases(&t), want[k].s == STRAT_FREEZE_FINETUNE ? 2 : 1);
        ck_assert_int_eq(t.pretrained, want[k].s != STRAT_RANDOM);
        ck_assert_int_eq(t.warmup_epochs, want[k].s == STRAT_WARMUP || want[k].s == STRAT_AUTO ? 5 : 0);
        ck_assert_int_eq(t.on_diverge, want[k].s == STRAT_AUTO ? DIVERGE_ROLLBACK : DIVERGE_STOP);
        /* frozen: the plan is forward-only up to the head, and caches after the gap */
        if (want[k].s == STRAT_FROZEN) {
            Plan p;
            PlanOptions po = {.batch = 4, .fuse = 1, .fold = 1};
            ck_assert_int_eq(plan_build(&p, &g, &po, err, sizeof err), 0);
            int cut = plan_find_cut(&p, KILN_NONE);
            ck_assert_int_ge(cut, 0);
            ck_assert_str_eq(g.layers[cut].name, "gap");
            plan_free(&p);
        }
    }
    graph_free(&g);
}
END_TEST

START_TEST(layerwise_groups)
{
    load_graph(tiny);
    TrainSpec t;
    LrGroups gr;
    char err[256];
    strategy_defaults(&t, STRAT_LAYERWISE);
    t.lr = 0.01f;
    /* explicit ranges by layer names */
    strcpy(t.lr_groups, "stem..b1_add=1e-4,b2..=1e-3,head=1e-2");
    ck_assert_msg(strategy_apply(&t, 0, &g, &gr, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(gr.n, 4);
    ck_assert_float_eq_tol(gr.scale[1], 0.01f, 1e-6);
    ck_assert_float_eq_tol(gr.scale[2], 0.1f, 1e-6);
    ck_assert_float_eq_tol(gr.scale[3], 1.0f, 1e-6);
    ck_assert_int_eq(g.layers[graph_find(&g, "stem")].lr_group, 1);
    ck_assert_int_eq(g.layers[graph_find(&g, "b1_proj_bn")].lr_group, 1);
    ck_assert_int_eq(g.layers[graph_find(&g, "b2_conv")].lr_group, 2);
    ck_assert_int_eq(g.layers[graph_find(&g, "head")].lr_group, 3);
    /* the plan's LR segments follow the groups */
    Plan p;
    PlanOptions po = {.batch = 4, .fuse = 1, .fold = 1};
    ck_assert_int_eq(plan_build(&p, &g, &po, err, sizeof err), 0);
    ck_assert_int_ge(p.n_segs, 3);
    ck_assert_int_eq(p.segs[p.n_segs - 1].group, 3);
    plan_free(&p);
    /* a range naming no layer is an error */
    strcpy(t.lr_groups, "nothere..=1e-3");
    ck_assert_int_eq(strategy_apply(&t, 0, &g, &gr, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "nothere") != NULL, "%s", err);
    /* depth decay: 5 groups, deepest at the full LR */
    t.lr_groups[0] = 0;
    t.layer_decay = 0.5f;
    ck_assert_int_eq(strategy_apply(&t, 0, &g, &gr, err, sizeof err), 0);
    ck_assert_int_eq(gr.n, 5);
    ck_assert_float_eq_tol(gr.scale[4], 1.0f, 1e-6);
    ck_assert_float_eq_tol(gr.scale[0], 0.0625f, 1e-6);
    ck_assert_int_eq(g.layers[graph_find(&g, "stem")].lr_group, 0);
    ck_assert_int_eq(g.layers[graph_find(&g, "head")].lr_group, 4);
    graph_free(&g);
}
END_TEST

START_TEST(schedule_values)
{
    Schedule s;
    /* warm-up from lr/100 over 100 steps */
    schedule_init(&s, 0.1f, 0, 100, 2, 0.1f, 1e-4f, 3);
    ck_assert_float_eq_tol(schedule_lr_at(&s, 0), 0.001f, 1e-9);
    ck_assert_float_eq_tol(schedule_lr_at(&s, 50), 0.0505f, 1e-7);
    ck_assert_float_eq_tol(schedule_lr_at(&s, 99), 0.1f - 0.099f / 100, 1e-7);
    ck_assert_float_eq_tol(schedule_lr_at(&s, 100), 0.1f, 1e-9);
    ck_assert_float_eq_tol(schedule_lr_at(&s, 1000), 0.1f, 1e-9);
    s.step = 25;
    ck_assert_float_eq_tol(schedule_lr(&s), 0.02575f, 1e-7);
    /* plateau after 2 epochs without improvement, early stop after 3 */
    int stop;
    s.step = 200;
    ck_assert_int_eq(schedule_epoch_end(&s, 0.5, 1, &stop), 1);
    ck_assert_int_eq(stop, 0);
    ck_assert_int_eq(schedule_epoch_end(&s, 0.4, 2, &stop), 0);
    ck_assert_float_eq_tol(schedule_lr(&s), 0.1f, 1e-9);
    ck_assert_int_eq(schedule_epoch_end(&s, 0.5, 3, &stop), 0);   /* equal is no improvement */
    ck_assert_float_eq_tol(schedule_lr(&s), 0.01f, 1e-9);
    ck_assert_int_eq(stop, 0);
    ck_assert_int_eq(schedule_epoch_end(&s, 0.45, 4, &stop), 0);
    ck_assert_int_eq(stop, 1);
    ck_assert_int_eq(s.best_epoch, 1);
    /* min LR floor */
    for (int e = 5; e < 20; e++) schedule_epoch_end(&s, 0.1, e, &stop);
    ck_assert_float_eq_tol(schedule_lr(&s), 1e-4f, 1e-10);
}
END_TEST

/* Each strategy's schedule at chosen steps (100 steps an epoch, lr 0.1). */
START_TEST(strategy_schedules)
{
    struct { Strategy s; int phase; long step; float lr; } want[] = {
        {STRAT_RANDOM, 0, 0, 0.1f}, {STRAT_RANDOM, 0, 1000, 0.1f},
        {STRAT_NAIVE, 0, 0, 0.1f},
        {STRAT_NAIVE_BN_FROZEN, 0, 250, 0.1f},
        {STRAT_FROZEN, 0, 0, 0.1f},
        {STRAT_FREEZE_FINETUNE, 0, 0, 0.1f}, {STRAT_FREEZE_FINETUNE, 1, 0, 0.01f},
        {STRAT_FREEZE_FINETUNE, 1, 700, 0.01f},
        {STRAT_LAYERWISE, 0, 0, 0.1f},
        /* warm-up: 0.001 -> 0.1 linearly over 5 epochs = 500 steps */
        {STRAT_WARMUP, 0, 0, 0.001f}, {STRAT_WARMUP, 0, 100, 0.0208f}, {STRAT_WARMUP, 0, 250, 0.0505f},
        {STRAT_WARMUP, 0, 499, 0.1f - 0.099f / 500}, {STRAT_WARMUP, 0, 500, 0.1f}, {STRAT_WARMUP, 0, 5000, 0.1f},
        {STRAT_AUTO, 0, 0, 0.001f}, {STRAT_AUTO, 0, 500, 0.1f},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        TrainSpec t;
        Schedule s;
        strategy_defaults(&t, want[k].s);
        strategy_schedule(&s, &t, want[k].phase, 0.1f, 100);
        float got = schedule_lr_at(&s, want[k].step);
        ck_assert_msg(fabsf(got - want[k].lr) <= 1e-6f, "%s phase %d step %ld: lr %g, want %g",
                      strategy_name(want[k].s), want[k].phase, want[k].step, got, want[k].lr);
        ck_assert_int_eq(s.patience, 20);
        ck_assert_int_eq(s.plateau_patience, 8);
    }
}
END_TEST

/* ---- runs ------------------------------------------------------------------------ */

static FILE *quiet;

static void cfg_for(RunConfig *c, const char *arch, const char *data, Strategy s)
{
    run_config_default(c);
    strategy_defaults(&c->spec, s);
    c->arch = arch;
    c->data = data;
    c->progress = 0;
    c->log = quiet;
}

static int run(RunConfig *c, RunResult *r, char *err, size_t n)
{
    return run_train(c, NULL, r, err, n);
}

/* The reference article's observation on a small network: a convnet with no
 * BatchNorm (conv, max pool, conv, max pool, dense), pretrained on one
 * synthetic task, transferred to another at lr 2. Without warm-up the weights
 * blow up within the first epoch until the loss is not finite: the run stops
 * as diverged, keeping the last good weights. The same LR reached after a
 * 5-epoch linear warm-up from lr/100 trains. (lr 1, 2 and 5 all diverge
 * without warm-up and train with it; 0.5 trains either way.) */
START_TEST(warmup_rescues_divergence)
{
    quiet = fopen("/dev/null", "w");
    char arch[512], pre[512], err[512];
    snprintf(arch, sizeof arch, "%s/plain.arch", tmpdir);
    snprintf(pre, sizeof pre, "%s/pre.safetensors", tmpdir);
    FILE *f = fopen(arch, "w");
    fputs("input in size=16x16x3 scale=1/255 mean=0.5 std=0.25\nconv c1 filters=16 kernel=3 padding=same\n"
          "maxpool p1\nconv c2 filters=32 kernel=3 padding=same\nmaxpool p2\ngap g\n"
          "dense head units=4\nsoftmax_ce loss\n", f);
    fclose(f);
    RunConfig c;
    RunResult r;
    cfg_for(&c, arch, "synthetic:noise=0.5,n=600", STRAT_NAIVE);
    c.spec.lr = 0.02f; c.spec.max_epochs = 5; c.save = pre;
    ck_assert_msg(run(&c, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(r.test_acc > 0.9, "pretraining reached only %.3f", r.test_acc);
    /* lr 2 without warm-up: a non-finite loss, caught before the update,
     * recorded as diverged; the weights tested are the last good ones */
    cfg_for(&c, arch, "synthetic:noise=0.5,n=600,seed=7", STRAT_NAIVE);
    char out[512];
    snprintf(out, sizeof out, "%s/div", tmpdir);
    c.weights = pre; c.spec.lr = 2; c.spec.max_epochs = 8; c.out = out;
    ck_assert_msg(run(&c, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.diverged, 1);
    ck_assert_int_eq(r.div_epoch, 1);
    ck_assert_int_ge(r.div_step, 1);
    ck_assert_msg(r.test_acc >= 0 && r.test_acc <= 1, "test_acc %g of the last good weights", r.test_acc);
    char path[600];
    snprintf(path, sizeof path, "%s/summary.json", out);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char buf[4096];
    size_t nr = fread(buf, 1, sizeof buf - 1, f);
    buf[nr] = 0;
    fclose(f);
    ck_assert_msg(strstr(buf, "\"diverged\": true"), "summary does not record the divergence: %s", buf);
    /* the same LR after 5 epochs of warm-up trains */
    cfg_for(&c, arch, "synthetic:noise=0.5,n=600,seed=7", STRAT_NAIVE);
    c.weights = pre; c.spec.lr = 2; c.spec.max_epochs = 8; c.spec.warmup_epochs = 5;
    ck_assert_msg(run(&c, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.diverged, 0);
    ck_assert_msg(r.val_acc >= 0.95, "with warm-up val_acc %.3f < 0.95", r.val_acc);
    /* rollback: restores the epoch's start, halves the LR, goes on */
    cfg_for(&c, arch, "synthetic:noise=0.5,n=600,seed=7", STRAT_NAIVE);
    c.weights = pre; c.spec.lr = 5; c.spec.max_epochs = 2;
    c.spec.on_diverge = DIVERGE_ROLLBACK; c.spec.max_rollbacks = 8;
    ck_assert_msg(run(&c, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.diverged, 0);
    ck_assert_int_ge(r.rollbacks, 1);
    ck_assert_int_eq(r.epochs[0], 2);
    fclose(quiet);
}
END_TEST

START_TEST(resume_is_bit_identical)
{
    quiet = fopen("/dev/null", "w");
    char full[512], part[512], wa[512], wb[512], err[512];
    snprintf(full, sizeof full, "%s/full", tmpdir);
    snprintf(part, sizeof part, "%s/part", tmpdir);
    snprintf(wa, sizeof wa, "%s/a.safetensors", tmpdir);
    snprintf(wb, sizeof wb, "%s/b.safetensors", tmpdir);
    const char *data = "synthetic:noise=0.6,n=400";    /* 320 train images: 10 steps an epoch */
    RunConfig c;
    RunResult r;
    /* freeze-finetune: two phases, the feature cache, dropout, BN statistics */
    cfg_for(&c, tiny, data, STRAT_FREEZE_FINETUNE);
    c.spec.max_epochs = 3; c.spec.lr = 0.05f; c.out = full; c.save = wa;
    ck_assert_msg(run(&c, &r, err, sizeof err) == 0, "%s", err);
    /* killed mid-epoch in phase 1 (epoch 2, step 5) */
    cfg_for(&c, tiny, data, STRAT_FREEZE_FINETUNE);
    c.spec.max_epochs = 3; c.spec.lr = 0.05f; c.out = part; c.stop_after_steps = 15;
    ck_assert_int_eq(run(&c, &r, err, sizeof err), 130);
    ck_assert_int_eq(r.interrupted, 1);
    /* resumed, killed again mid-epoch in phase 2 (15 + 20 steps: epoch 1, step 5) */
    cfg_for(&c, tiny, data, STRAT_FREEZE_FINETUNE);
    c.spec.max_epochs = 3; c.spec.lr = 0.05f; c.resume = part; c.stop_after_steps = 20;
    ck_assert_int_eq(run(&c, &r, err, sizeof err), 130);
    /* the resumed run wrote its own checkpoint, in phase 2 */
    char ckpath[600];
    snprintf(ckpath, sizeof ckpath, "%s/last.ckpt", part);
    Checkpoint ckp;
    ck_assert_msg(checkpoint_load(ckpath, &ckp, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(ckp.phase, 1);
    ck_assert_int_eq(ckp.ls.epoch, 0);
    ck_assert_int_eq(ckp.ls.pos, 5);
    checkpoint_free(&ckp);
    /* resumed to the end */
    cfg_for(&c, tiny, data, STRAT_FREEZE_FINETUNE);
    c.spec.max_epochs = 3; c.spec.lr = 0.05f; c.resume = part; c.save = wb;
    ck_assert_msg(run(&c, &r, err, sizeof err) == 0, "%s", err);
    size_t na, nb;
    char *a = slurp(wa, &na), *b = slurp(wb, &nb);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq((int)na, (int)nb);
    ck_assert_msg(memcmp(a, b, na) == 0, "resumed final weights differ from the uninterrupted run's");
    free(a); free(b);
    /* and so does the best-weights file of the run folder */
    char fb[600], pb[600];
    snprintf(fb, sizeof fb, "%s/best.safetensors", full);
    snprintf(pb, sizeof pb, "%s/best.safetensors", part);
    a = slurp(fb, &na);
    b = slurp(pb, &nb);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_msg(na == nb && memcmp(a, b, na) == 0, "the resumed run's best.safetensors differs");
    free(a); free(b);
    /* the metrics of the resumed run have every epoch once */
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.csv", part);
    char *m = slurp(path, &na);
    int lines = 0;
    for (size_t i = 0; i < na; i++) lines += m[i] == '\n';
    ck_assert_int_eq(lines, 1 + 6);
    free(m);
    fclose(quiet);
}
END_TEST

/* `kiln train --resume DIR` alone: the options come from DIR/config.json. */
START_TEST(cli_resume_needs_only_the_folder)
{
    const char *bin = getenv("KILN_BIN");
    ck_assert_ptr_nonnull(bin);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' train --arch '%s' --data synthetic:n=200 --strategy warmup --warmup-epochs 1 "
             "--epochs 2 --lr 0.05 --out '%s/cli' --stop-after-steps 7 --no-progress >/dev/null 2>&1", bin, tiny, tmpdir);
    int st = system(cmd);
    ck_assert_int_eq(WEXITSTATUS(st), 130);
    snprintf(cmd, sizeof cmd, "'%s' train --resume '%s/cli' --no-progress >/dev/null 2>&1", bin, tmpdir);
    st = system(cmd);
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/cli/summary.json", tmpdir);
    size_t n;
    char *sum = slurp(path, &n);
    ck_assert_ptr_nonnull(sum);
    ck_assert_msg(strstr(sum, "\"strategy\": \"warmup\"") && strstr(sum, "\"epochs\": 2"), "%s", sum);
    free(sum);
}
END_TEST

/* Option values out of range (inf, nan, beyond a float or a size) are bad
 * usage: exit 2 naming the option, not a run that diverges (exit 1) or a
 * value cast out of range. */
START_TEST(cli_bad_option_values)
{
    static const char *const BAD[][2] = {
        {"--lr inf", "--lr"},
        {"--lr 1e39", "--lr"},
        {"--wd nan", "--wd"},
        {"--min-lr inf", "--min-lr"},
        {"--memory-budget inf", "--memory-budget"},
        {"--memory-budget 1e30", "--memory-budget"},
        {"--memory-budget nan", "--memory-budget"},
        {"--strategy layerwise --lr-groups head=inf", "--lr-groups"},
        {"--input-size 16x16junk", "--input-size"},
        {"--bogus", "unknown option '--bogus'"},
    };
    const char *bin = getenv("KILN_BIN");
    ck_assert_ptr_nonnull(bin);
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        char cmd[2048], path[600];
        snprintf(path, sizeof path, "%s/err.txt", tmpdir);
        snprintf(cmd, sizeof cmd, "timeout 120 '%s' train --arch '%s' --data synthetic:n=64 --epochs 1 --no-out "
                 "--no-progress --weights none %s >/dev/null 2>'%s'", bin, tiny, BAD[i][0], path);
        int st = system(cmd);
        size_t n;
        char *err = slurp(path, &n);
        ck_assert_ptr_nonnull(err);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s: exit %d, stderr '%s'", BAD[i][0],
                      WIFEXITED(st) ? WEXITSTATUS(st) : -1, err);
        ck_assert_msg(strstr(err, BAD[i][1]) != NULL, "%s: stderr '%s' lacks '%s'", BAD[i][0], err, BAD[i][1]);
        free(err);
    }
}
END_TEST

START_TEST(corrupted_checkpoint_refused)
{
    quiet = fopen("/dev/null", "w");
    char out[512], err[512], path[600];
    snprintf(out, sizeof out, "%s/run", tmpdir);
    RunConfig c;
    RunResult r;
    cfg_for(&c, tiny, "synthetic:n=200", STRAT_NAIVE);
    c.spec.max_epochs = 2; c.out = out; c.stop_after_steps = 7;
    ck_assert_int_eq(run(&c, &r, err, sizeof err), 130);
    snprintf(path, sizeof path, "%s/last.ckpt", out);
    size_t n;
    char *b = slurp(path, &n);
    ck_assert_ptr_nonnull(b);
    b[n - 100] ^= 0x40;               /* one bit in the tensor data */
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
    free(b);
    cfg_for(&c, tiny, "synthetic:n=200", STRAT_NAIVE);
    c.spec.max_epochs = 2; c.resume = out;
    ck_assert_int_eq(run(&c, &r, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "last.ckpt") && strstr(err, "corrupt"), "%s", err);
    fclose(quiet);
}
END_TEST

START_TEST(bad_setup_fails_before_training)
{
    quiet = fopen("/dev/null", "w");
    char err[512];
    RunConfig c;
    RunResult r;
    /* a run folder that cannot be created (a path through a regular file) */
    cfg_for(&c, tiny, "synthetic:n=200", STRAT_NAIVE);
    c.out = "/dev/null/run";
    ck_assert_int_eq(run(&c, &r, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "/dev/null/run"), "%s", err);
    ck_assert_int_eq(r.epochs[0], 0);
    /* a run folder path too long for its files' paths: the reason is
     * said, not cut off by the path, and nothing is made */
    char longdir[1200];
    int o = snprintf(longdir, sizeof longdir, "%s/long", tmpdir);
    while (o < 1100) o += snprintf(longdir + o, sizeof longdir - (size_t)o, "/d");
    cfg_for(&c, tiny, "synthetic:n=200", STRAT_NAIVE);
    c.spec.max_epochs = 1;
    c.out = longdir;
    ck_assert_int_eq(run(&c, &r, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "too long") && strstr(err, tmpdir), "%s", err);
    char made[600];
    snprintf(made, sizeof made, "%s/long", tmpdir);
    ck_assert_int_ne(access(made, F_OK), 0);
    /* a class count other than the data set's */
    cfg_for(&c, tiny, "synthetic:n=200,classes=4", STRAT_NAIVE);
    c.num_classes = 10;
    ck_assert_int_eq(run(&c, &r, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "4 classes") && strstr(err, "10"), "%s", err);
    ck_assert_int_eq(r.epochs[0], 0);
    fclose(quiet);
}
END_TEST

Suite *test_suite(void)
{
    Suite *s = suite_create("strategy");
    TCase *tc = tcase_create("strategy");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, strategy_flags);
    tcase_add_test(tc, layerwise_groups);
    tcase_add_test(tc, schedule_values);
    tcase_add_test(tc, strategy_schedules);
    tcase_add_test(tc, warmup_rescues_divergence);
    tcase_add_test(tc, resume_is_bit_identical);
    tcase_add_test(tc, cli_resume_needs_only_the_folder);
    tcase_add_test(tc, cli_bad_option_values);
    tcase_add_test(tc, corrupted_checkpoint_refused);
    tcase_add_test(tc, bad_setup_fails_before_training);
    suite_add_tcase(s, tc);
    return s;
}
