/* tests/test_logs.c — what `kiln` tells its user, read as a user reads it:
 * the built binary (KILN_BIN, set by ctest) run with its output in a pipe.
 *  - the log is line-buffered: header and progress lines arrive while the
 *    first epoch still runs, and without a terminal a progress line comes
 *    every --log-every seconds.
 *  - a data set whose images differ from the arch's input size, without
 *    --input-size, is a WARNING naming both sizes and the compute factor;
 *  - validation accuracy back at chance after an epoch above it is a
 *    WARNING and summary.json's phases[].collapsed_epoch;
 *  - kiln data, train and eval default to one seed;
 *  - metrics.csv names its columns for what they hold: train_img_per_s is
 *    the images of the epoch over the time of its training steps (a
 *    rolled-back attempt and validation apart), elapsed_s the phase's time;
 *  - validation and test splits under 30 images are a WARNING in train and
 *    eval.
 * Each case runs archs/tiny.arch on a synthetic source for a few seconds. */
#include <check.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runtime/run.h"
#include "tests/file_fixture.h"
#include "tests/kiln_cli.h"
#include "tests/suite_main.h"

static char tiny[1024], tmpdir[256];

static void setup(void) { test_dirs_make(tiny, sizeof tiny, tmpdir, sizeof tmpdir, "logs"); }

static void teardown(void) { test_dir_remove(tmpdir); }

/* Start `kiln ARGV...` with stdout and stderr into one pipe; *out reads it.
 * Returns the child's pid. */
static pid_t spawn_kiln(char *const *args, FILE **out)
{
    int fd[2];
    ck_assert_int_eq(pipe(fd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fd[1], 1);
        dup2(fd[1], 2);
        close(fd[0]);
        close(fd[1]);
        char *argv[64];
        int n = 0;
        argv[n++] = (char *)kiln_bin();
        while (args[n - 1] && n < 63) { argv[n] = args[n - 1]; n++; }
        argv[n] = NULL;
        execv(argv[0], argv);
        _exit(127);
    }
    close(fd[1]);
    *out = fdopen(fd[0], "r");
    ck_assert_ptr_nonnull(*out);
    return pid;
}

/* ---- line buffering and timed progress -------------------------------------------- */

/* Piped, the header and a progress line arrive while epoch 1 runs: on the
 * first progress line the test interrupts the run, which must then stop in
 * epoch 1, within a step or two, with no epoch line printed. A fully
 * buffered stdout holds lines back until the epoch's end or until 4 KiB of
 * them are waiting (dozens of progress lines), so the interruption lands
 * later. */
START_TEST(piped_log_arrives_during_the_first_epoch)
{
    char *args[] = {"train", "--arch", tiny, "--data", "synthetic:n=20000", "--epochs", "3", "--weights", "none",
                    "--no-out", "--log-every", "1", NULL};
    FILE *out;
    pid_t pid = spawn_kiln(args, &out);
    char line[1024];
    int n = 0, header = 0, progress = 0, progress_at = -1, epoch_line_at = -1, interrupted_at = -1;
    char interrupted[1024] = "";
    while (fgets(line, sizeof line, out)) {
        if (!strncmp(line, "data ", 5) || !strncmp(line, "phase 1: ", 9)) header++;
        if (strstr(line, "phase 1 epoch") && strstr(line, " step ") && !progress++) {
            progress_at = n;
            ck_assert_int_eq(kill(pid, SIGINT), 0);
        }
        if (epoch_line_at < 0 && strstr(line, "phase 1 epoch") && strstr(line, " val_acc ")) epoch_line_at = n;
        if (!strncmp(line, "interrupted at ", 15)) {
            interrupted_at = n;
            snprintf(interrupted, sizeof interrupted, "%s", line);
        }
        n++;
    }
    fclose(out);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(progress_at >= 0, "no progress line in %d lines", n);
    ck_assert_int_eq(header, 2);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 130, "exit status %d", st);
    ck_assert_msg(interrupted_at > progress_at, "no interruption message after the progress line");
    ck_assert_msg(strstr(interrupted, "phase 1, epoch 1, after step "),
                  "the progress line arrived after epoch 1 ended: %s", interrupted);
    ck_assert_msg(epoch_line_at < 0, "an epoch line (line %d) before the interruption", epoch_line_at);
    /* one line a second: the interruption follows the first one at once */
    ck_assert_msg(progress <= 3, "%d progress lines were written before the first one arrived", progress);
}
END_TEST

/* ---- messages -------------------------------------------------------------------- */

/* 8x8 images for tiny (16x16): a WARNING with both sizes, the factor and the
 * hint; given --input-size, a plain line; at the data's size, nothing. */
START_TEST(input_size_mismatch_warns)
{
    int rc;
    char *out = kiln_output(&rc, "train --arch '%s' --data synthetic:n=200,size=8 --epochs 1 --weights none --no-out", tiny);
    ck_assert_msg(rc == 0, "%s", out);
    ck_assert_msg(strstr(out, "WARNING: the data's images are 8x8, tiny's input is 16x16: without --input-size every "
                              "image is upscaled to 16x16, 4x the compute of training at 8x8. Give --input-size 8x8"),
                  "%s", out);
    free(out);
    out = kiln_output(&rc, "train --arch '%s' --data synthetic:n=200,size=8 --epochs 1 --weights none --no-out "
                   "--input-size 12x12", tiny);
    ck_assert_msg(rc == 0 && !strstr(out, "WARNING: the data's"), "%s", out);
    ck_assert_msg(strstr(out, "input 12x12 (--input-size): the data's 8x8 images are resized to it, 2.25x the compute"),
                  "%s", out);
    free(out);
    out = kiln_output(&rc, "train --arch '%s' --data synthetic:n=200,size=16 --epochs 1 --weights none --no-out", tiny);
    ck_assert_msg(rc == 0 && !strstr(out, "WARNING: the data's") && !strstr(out, "resized"), "%s", out);
    free(out);
}
END_TEST

/* tiny with BN frozen at lr 0.5 reaches 0.45 validation accuracy in epoch 1
 * and falls to 0.25, chance for 4 classes, in epoch 2 (no NaN); the checks
 * allow the collapse an epoch later. */
START_TEST(collapse_to_chance_warns)
{
    int rc;
    char *out = kiln_output(&rc, "train --arch '%s' --data synthetic:n=400 --strategy naive-bn-frozen --weights none "
                         "--epochs 3 --lr 0.5 --out '%s/collapse'", tiny, tmpdir);
    ck_assert_msg(rc == 0, "%s", out);
    const char *w = strstr(out, "WARNING: validation accuracy ");
    ck_assert_msg(w != NULL, "%s", out);
    double v, before;
    int k, phase, epoch;
    ck_assert_msg(sscanf(w, "WARNING: validation accuracy %lf is at chance (1/%d classes) at phase %d epoch %d, after %lf",
                         &v, &k, &phase, &epoch, &before) == 5, "%s", w);
    ck_assert_int_eq(k, 4);
    ck_assert_int_eq(phase, 1);
    ck_assert_msg(v > 0.2 && v < 0.3 && before > 0.35 && epoch >= 2, "%s", w);
    ck_assert_msg(strstr(w, "the run has collapsed without a NaN"), "%s", w);
    ck_assert_msg(!strstr(w + 1, "WARNING: validation accuracy "), "warned twice for one collapse: %s", out);
    free(out);
    char path[600], want[64];
    snprintf(path, sizeof path, "%s/collapse/summary.json", tmpdir);
    char *sum = slurp(path, NULL);
    ck_assert_ptr_nonnull(sum);
    snprintf(want, sizeof want, "\"collapsed_epoch\": %d", epoch);
    ck_assert_msg(strstr(sum, want), "%s", sum);
    free(sum);
    /* a run that learns has none */
    out = kiln_output(&rc, "train --arch '%s' --data synthetic:n=400 --weights none --epochs 2 --out '%s/learns'", tiny,
                   tmpdir);
    ck_assert_msg(rc == 0 && !strstr(out, "WARNING"), "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s/learns/summary.json", tmpdir);
    sum = slurp(path, NULL);
    ck_assert_ptr_nonnull(sum);
    ck_assert_msg(strstr(sum, "\"collapsed_epoch\": null"), "%s", sum);
    free(sum);
}
END_TEST

/* The seed in `needle<seed>` within text, or -1. */
static int seed_after(const char *text, const char *needle)
{
    const char *p = strstr(text, needle);
    int seed = -1;
    if (p) sscanf(p + strlen(needle), "%d", &seed);
    return seed;
}

/* Without --seed, `kiln data` prints the split of the seed that `kiln train`
 * (config.json) and `kiln eval --split test` (weights outside a run folder)
 * use. */
START_TEST(one_default_seed)
{
    int rc;
    char *out = kiln_output(&rc, "data synthetic:n=200");
    ck_assert_msg(rc == 0, "%s", out);
    int data_seed = seed_after(out, "split:    seed ");
    free(out);
    out = kiln_output(&rc, "train --arch '%s' --data synthetic:n=200 --weights none --epochs 1 --out '%s/run' --save "
                   "'%s/final.safetensors'", tiny, tmpdir, tmpdir);
    ck_assert_msg(rc == 0, "%s", out);
    free(out);
    char path[600];
    snprintf(path, sizeof path, "%s/run/config.json", tmpdir);
    char *cfg = slurp(path, NULL);
    ck_assert_ptr_nonnull(cfg);
    int train_seed = seed_after(cfg, "\"seed\": ");
    free(cfg);
    out = kiln_output(&rc, "eval --arch '%s' --data synthetic:n=200 --split test --weights '%s/final.safetensors'", tiny,
                   tmpdir);
    ck_assert_msg(rc == 0, "%s", out);
    int eval_seed = seed_after(out, "split test (seed ");
    free(out);
    ck_assert_int_ge(train_seed, 0);
    ck_assert_int_eq(data_seed, train_seed);
    ck_assert_int_eq(eval_seed, train_seed);
}
END_TEST

/* 200 images: validation and test splits of 20, each a WARNING, in train
 * and in eval; 400 images (splits of 40): none. */
START_TEST(small_splits_warn)
{
    int rc;
    char *out = kiln_output(&rc, "train --arch '%s' --data synthetic:n=200 --weights none --epochs 1 --no-out --save "
                         "'%s/w.safetensors'", tiny, tmpdir);
    ck_assert_msg(rc == 0, "%s", out);
    const char *tail = "images (fewer than 30): its accuracy moves in steps of 0.05, a coarse estimate";
    char want[256];
    snprintf(want, sizeof want, "WARNING: the validation split has 20 %s", tail);
    ck_assert_msg(strstr(out, want), "%s", out);
    snprintf(want, sizeof want, "WARNING: the test split has 20 %s", tail);
    ck_assert_msg(strstr(out, want), "%s", out);
    free(out);
    out = kiln_output(&rc, "eval --arch '%s' --data synthetic:n=200 --split test --weights '%s/w.safetensors'", tiny,
                   tmpdir);
    ck_assert_msg(rc == 0 && strstr(out, want), "%s", out);
    free(out);
    out = kiln_output(&rc, "train --arch '%s' --data synthetic:n=400 --weights none --epochs 1 --no-out", tiny);
    ck_assert_msg(rc == 0 && strstr(out, "val 40 / test 40") && !strstr(out, "coarse"), "%s", out);
    free(out);
}
END_TEST

/* ---- metrics.csv ------------------------------------------------------------------ */

/* The CPU backend with a train_step that takes 20 ms more, whose 6th call
 * reports a non-finite loss (a rollback), and whose evaluate takes 200 ms
 * more. It sums the time spent in calls 7..16: the ten steps of epoch 1 that
 * count after the rollback (320 training images, batch 32). */
static int (*cpu_step)(Backend *, int, const StepConfig *, double *, int *);
static void (*cpu_eval)(Backend *, int, double *, int *);
static int step_calls;
static double epoch1_step_s;

static void sleep_s(double s)
{
    struct timespec ts = {0, (long)(s * 1e9)};
    nanosleep(&ts, NULL);
}

static int slow_step(Backend *b, int n, const StepConfig *cfg, double *loss, int *correct)
{
    double t = kiln_now();
    int k = ++step_calls;
    sleep_s(0.02);
    int bad = k == 6 ? 1 : cpu_step(b, n, cfg, loss, correct);
    if (k >= 7 && k <= 16) epoch1_step_s += kiln_now() - t;
    return bad;
}

static void slow_eval(Backend *b, int n, double *loss, int *correct)
{
    sleep_s(0.2);
    cpu_eval(b, n, loss, correct);
}

static Backend *make_slow_backend(const Plan *p, void *ctx, char *err, size_t errlen)
{
    (void)ctx;
    Backend *b = cpu_backend_create(p, err, errlen);
    if (!b) return NULL;
    cpu_step = b->train_step;
    cpu_eval = b->evaluate;
    b->train_step = slow_step;
    b->train_launch = NULL;
    b->train_wait = NULL;
    b->evaluate = slow_eval;
    return b;
}

START_TEST(metrics_columns_say_what_they_hold)
{
    FILE *quiet = fopen("/dev/null", "w");
    RunConfig c;
    run_config_default(&c);
    strategy_defaults(&c.spec, STRAT_NAIVE);
    char out[600], err[512];
    snprintf(out, sizeof out, "%s/metrics", tmpdir);
    c.arch = tiny;
    c.data = "synthetic:n=400";
    c.out = out;
    c.log = quiet;
    c.progress = 0;
    c.spec.max_epochs = 2;
    c.spec.on_diverge = DIVERGE_ROLLBACK;
    c.make_backend = make_slow_backend;
    RunResult r;
    ck_assert_msg(run_train(&c, NULL, &r, err, sizeof err) == 0, "%s", err);
    fclose(quiet);
    ck_assert_int_eq(r.rollbacks, 1);
    ck_assert_int_eq(step_calls, 6 + 2 * 10);
    char path[700];
    snprintf(path, sizeof path, "%s/metrics.csv", out);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "epoch,phase,lr,loss,train_acc,val_acc,train_img_per_s,elapsed_s\n");
    double rate[2], elapsed[2];
    for (int e = 0; e < 2; e++) {
        ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
        int ep, ph;
        double lr, loss, ta, va;
        ck_assert_int_eq(sscanf(line, "%d,%d,%lf,%lf,%lf,%lf,%lf,%lf", &ep, &ph, &lr, &loss, &ta, &va, &rate[e],
                                &elapsed[e]), 8);
    }
    fclose(f);
    /* the rate of epoch 1 comes from its ten counted steps only: not the
     * five before the rollback, not validation */
    double steps_rate = 320 / epoch1_step_s;
    ck_assert_msg(rate[0] <= steps_rate * 1.0001 && rate[0] > 0.85 * steps_rate,
                  "epoch 1: %.1f img/s, its steps ran at %.1f", rate[0], steps_rate);
    /* elapsed: the phase's time so far, the 16 steps and validation included */
    ck_assert_msg(elapsed[0] > 16 * 0.02 + 0.2 && elapsed[1] > elapsed[0] + 10 * 0.02 + 0.2,
                  "elapsed %.3f, %.3f", elapsed[0], elapsed[1]);
}
END_TEST

Suite *test_suite(void)
{
    Suite *s = suite_create("logs");
    TCase *tc = tcase_create("logs");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, piped_log_arrives_during_the_first_epoch);
    tcase_add_test(tc, input_size_mismatch_warns);
    tcase_add_test(tc, collapse_to_chance_warns);
    tcase_add_test(tc, one_default_seed);
    tcase_add_test(tc, metrics_columns_say_what_they_hold);
    tcase_add_test(tc, small_splits_warn);
    suite_add_tcase(s, tc);
    return s;
}
