/* tests/test_resume.c — what a resume may trust and what it refuses, on
 * archs/tiny.arch and a synthetic set (160 training images, batch 32: five
 * steps an epoch):
 *  - a table of edits to a real checkpoint, each refused with exit code 2
 *    and the metadata key named; every single-bit flip of its metadata is
 *    refused (the CRC covers the metadata);
 *  - a finished run (stopped early, or all its epochs run) resumed says so
 *    and changes no file of its folder, however often; given more epochs,
 *    a run that ran all of its epochs continues;
 *  - a resume with other data, arch, weights or options is refused, naming
 *    each difference; config.json is never rewritten by a resume, which
 *    records what it may change (--epochs...) in resumes.json, read back by
 *    the next `--resume`; --strategy, --out, --no-out with --resume are
 *    refused;
 *  - a --save path that cannot be written is refused before training; one
 *    that fails after training leaves the summary written;
 *  - a full disk (a file size limit, so that writes fail with EFBIG) at each
 *    of the run's writes: exit code 1, the file and the reason named, no
 *    temporary file left, the files written before intact;
 *  - the messages: where a run was interrupted and where it resumed in the
 *    same words; no "fresh He init" for a head the checkpoint replaces;
 *  - a resumed epoch that diverges goes back to where it resumed. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/backend.h"
#include "runtime/checkpoint.h"
#include "runtime/run.h"
#include "runtime/safetensors.h"
#include "tiny_fixture.h"
#include "tests/file_fixture.h"
#include "tests/suite_main.h"

static char tiny[1024], tmpdir[256], out[512], ckpath[600];
static FILE *quiet;
static const char *DATA = "synthetic:n=200";

static void setup(void)
{
    test_dirs_make(tiny, sizeof tiny, tmpdir, sizeof tmpdir, "resume");
    snprintf(out, sizeof out, "%s/run", tmpdir);
    snprintf(ckpath, sizeof ckpath, "%s/last.ckpt", out);
    quiet = fopen("/dev/null", "w");
}

static void teardown(void)
{
    fclose(quiet);
    test_dir_remove(tmpdir);
}

/* The run every test starts from: naive, two epochs, lr 0.05. */
static void cfg(RunConfig *c)
{
    run_config_default(c);
    strategy_defaults(&c->spec, STRAT_NAIVE);
    c->arch = tiny;
    c->data = DATA;
    c->progress = 0;
    c->log = quiet;
    c->spec.max_epochs = 2;
    c->spec.lr = 0.05f;
}

/* A run in `out` stopped after 7 steps (epoch 2, step 2): its checkpoint. */
static void interrupted_run(void)
{
    RunConfig c;
    RunResult r;
    char err[1024];
    cfg(&c);
    c.out = out;
    c.stop_after_steps = 7;
    ck_assert_int_eq(run_train(&c, NULL, &r, err, sizeof err), 130);
}

/* Resume `out` with the settings of cfg; returns the code, err the message. */
static int resume(char *err, size_t n)
{
    RunConfig c;
    RunResult r;
    cfg(&c);
    c.resume = out;
    return run_train(&c, NULL, &r, err, n);
}

static void spill(const char *path, const char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq((int)fwrite(b, 1, n, f), (int)n);
    ck_assert_int_eq(fclose(f), 0);
}

/* Rewrite the checkpoint with metadata `key` set to the text `value`, the
 * CRC left as it was (a hand edit). */
static void edit_text(const char *key, const char *value)
{
    StFile f;
    char err[512];
    ck_assert_msg(st_load(ckpath, &f, err, sizeof err) == 0, "%s", err);
    int found = 0;
    for (int i = 0; i < f.n_meta; i++)
        if (!strcmp(f.meta_keys[i], key)) {
            free(f.meta_values[i]);
            f.meta_values[i] = strdup(value);
            found = 1;
        }
    ck_assert_msg(found, "no %s in the checkpoint", key);
    ck_assert_msg(st_save(ckpath, f.tensors, f.n, (const char *const *)f.meta_keys,
                          (const char *const *)f.meta_values, f.n_meta, err, sizeof err) == 0, "%s", err);
    st_free(&f);
}

/* The edits that keep the CRC right (made through the checkpoint writer):
 * values that are fine on their own and wrong for the run. */
typedef enum { E_PHASE1, E_EPOCH99, E_SEEN64, E_POS9, E_STEP } SignedEdit;

static void edit_signed(SignedEdit e)
{
    Checkpoint k;
    char err[512];
    ck_assert_msg(checkpoint_load(ckpath, &k, err, sizeof err) == 0, "%s", err);
    switch (e) {
    case E_PHASE1: k.phase = 1; k.prev_epochs = 1; break;
    case E_EPOCH99: k.ls.epoch = 99; k.ls.sched.step = 99 * 5 + 2; break;
    case E_SEEN64: k.ls.seen = 60; k.ls.correct = 10; break;
    case E_POS9: k.ls.pos = 9; k.ls.sched.step = 14; k.ls.seen = 160; k.ls.correct = 10; break;
    case E_STEP: k.ls.sched.step = 3; break;
    }
    ck_assert_msg(checkpoint_save(ckpath, &k, err, sizeof err) == 0, "%s", err);
    checkpoint_free(&k);
}

START_TEST(edited_checkpoints_refused_naming_the_key)
{
    static const struct { const char *key, *value, *named; } TEXT[] = {
        {"kiln.pos", "-2", "kiln.pos"},
        {"kiln.phase", "-1", "kiln.phase"},
        {"kiln.phase", "2", "kiln.phase"},
        {"kiln.sched.lr", "-0.05", "kiln.sched.lr"},
        {"kiln.sched.base", "-0.05", "kiln.sched.base"},
        {"kiln.sched.lr", "0", "kiln.sched.lr"},
        {"kiln.sched.lr", "nan", "kiln.sched.lr"},
        {"kiln.loss_sum", "1e999", "kiln.loss_sum"},
        {"kiln.epoch", "2xyz", "kiln.epoch"},
        {"kiln.epoch", " 1", "kiln.epoch"},
        {"kiln.epoch", "", "kiln.epoch"},
        {"kiln.backend_step", "-1", "kiln.backend_step"},
        {"kiln.seen", "0", "kiln.seen"},
        {"kiln.correct", "1000", "kiln.correct"},
        {"kiln.sched.best_epoch", "5", "kiln.sched.best_epoch"},
        {"kiln.pos", "3", "kiln.crc32"},            /* in range: the checksum catches it */
        {"kiln.seconds", "1.5", "kiln.crc32"},
        {"kiln.arch", "tinier", "kiln.crc32"},
        {"kiln.crc32", "0000000g", "kiln.crc32"},
    };
    static const struct { SignedEdit e; const char *named; } SIGNED[] = {
        {E_PHASE1, "kiln.phase"},   /* phase 2 of a one-phase run */
        {E_EPOCH99, "kiln.epoch"},
        {E_SEEN64, "kiln.seen"},
        {E_POS9, "kiln.pos"},
        {E_STEP, "kiln.sched.step"},
    };
    char err[1024], mpath[600];
    interrupted_run();
    size_t n, nm;
    char *orig = slurp(ckpath, &n);
    snprintf(mpath, sizeof mpath, "%s/metrics.csv", out);
    char *metrics = slurp(mpath, &nm);
    ck_assert_ptr_nonnull(orig);
    ck_assert_ptr_nonnull(metrics);
    int rows = (int)(sizeof TEXT / sizeof TEXT[0]), srows = (int)(sizeof SIGNED / sizeof SIGNED[0]);
    for (int i = 0; i < rows + srows; i++) {
        spill(ckpath, orig, n);
        const char *named = i < rows ? TEXT[i].named : SIGNED[i - rows].named;
        if (i < rows) edit_text(TEXT[i].key, TEXT[i].value);
        else edit_signed(SIGNED[i - rows].e);
        int rc = resume(err, sizeof err);
        ck_assert_msg(rc == 2, "row %d (%s): code %d: %s", i, named, rc, err);
        ck_assert_msg(strstr(err, ckpath) && strstr(err, named), "row %d: '%s' not named in: %s", i, named, err);
        size_t k;
        char *m = slurp(mpath, &k);
        ck_assert_msg(k == nm && !memcmp(m, metrics, nm), "row %d: metrics.csv changed by a refused resume", i);
        free(m);
    }
    /* the file as written resumes */
    spill(ckpath, orig, n);
    ck_assert_msg(resume(err, sizeof err) == 0, "%s", err);
    /* and the command line exits 2 on an edit */
    interrupted_run();
    edit_text("kiln.pos", "-2");
    const char *bin = getenv("KILN_BIN");
    ck_assert_ptr_nonnull(bin);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' train --resume '%s' --no-progress >/dev/null 2>&1", bin, out);
    int st = system(cmd);
    ck_assert_int_eq(WEXITSTATUS(st), 2);
    free(orig);
    free(metrics);
}
END_TEST

/* Every single-bit flip of the metadata (keys, values, JSON punctuation) is
 * refused: by the JSON reader, the strict number reader or the CRC. */
START_TEST(metadata_bit_flips_refused)
{
    interrupted_run();
    size_t n;
    char *orig = slurp(ckpath, &n), err[1024];
    ck_assert_ptr_nonnull(orig);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)(unsigned char)orig[i] << (8 * i);
    char *hdr = strndup(orig + 8, (size_t)hl);
    char *meta = strstr(hdr, "\"__metadata__\"");
    ck_assert_ptr_nonnull(meta);
    size_t lo = 8 + (size_t)(meta - hdr), hi = 8 + (size_t)(strrchr(hdr, '}') - hdr);
    char *b = malloc(n);
    int flips = 0, accepted = 0;
    for (size_t at = lo; at < hi; at++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(b, orig, n);
            b[at] ^= (char)(1 << bit);
            spill(ckpath, b, n);
            Checkpoint k;
            int rc = checkpoint_load(ckpath, &k, err, sizeof err);
            if (rc == 0) {
                checkpoint_free(&k);
                accepted++;
                fprintf(stderr, "accepted: bit %d of byte %zu ('%c')\n", bit, at, orig[at]);
            }
            ck_assert_msg(rc == 0 || rc == 2, "code %d: %s", rc, err);
            flips++;
        }
    printf("%d single-bit flips of the checkpoint's metadata: %d accepted\n", flips, accepted);
    ck_assert_int_ge(flips, 8 * 400);
    ck_assert_int_eq(accepted, 0);
    free(b); free(hdr); free(orig);
}
END_TEST

/* The files of the run folder `dir` (NULL where absent), to compare before
 * and after. */
#define NKEEP 5
static const char *KEEP[NKEEP] = {"metrics.csv", "summary.json", "config.json", "last.ckpt", "best.safetensors"};
typedef struct { char *b[NKEEP]; size_t n[NKEEP]; } Folder;

static void folder_read(Folder *f, const char *dir)
{
    char path[700];
    for (int i = 0; i < NKEEP; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, KEEP[i]);
        f->b[i] = slurp(path, &f->n[i]);    /* NULL: none */
    }
}

static void folder_same(const Folder *a, const char *dir, const char *when)
{
    Folder b;
    folder_read(&b, dir);
    for (int i = 0; i < NKEEP; i++) {
        ck_assert_msg(!a->b[i] == !b.b[i] && a->n[i] == b.n[i] && (!a->n[i] || !memcmp(a->b[i], b.b[i], a->n[i])),
                      "%s: %s changed", when, KEEP[i]);
        free(b.b[i]);
    }
}

static int lines_of(const char *path)
{
    size_t n;
    char *b = slurp(path, &n);
    ck_assert_ptr_nonnull(b);
    int k = 0;
    for (size_t i = 0; i < n; i++) k += b[i] == '\n';
    free(b);
    return k;
}

START_TEST(finished_run_resumes_to_nothing)
{
    RunConfig c;
    RunResult r;
    char err[1024], log[4096], path[700];
    /* stopped early: patience 1 of 30 epochs */
    cfg(&c);
    c.out = out; c.spec.max_epochs = 30; c.spec.patience = 1;
    ck_assert_msg(run_train(&c, NULL, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(r.epochs[0] < 30, "did not stop early (%d epochs)", r.epochs[0]);
    int epochs = r.epochs[0];
    double test_acc = r.test_acc;
    Folder before;
    folder_read(&before, out);
    ck_assert_ptr_nonnull(before.b[1]);
    for (int k = 0; k < 4; k++) {
        cfg(&c);
        c.resume = out; c.spec.max_epochs = k < 3 ? 30 : 40; c.spec.patience = 1;
        c.log = tmpfile();
        ck_assert_msg(run_train(&c, NULL, &r, err, sizeof err) == 0, "%s", err);
        rewind(c.log);
        size_t n = fread(log, 1, sizeof log - 1, c.log);
        log[n] = 0;
        fclose(c.log);
        ck_assert_msg(r.finished && strstr(log, "finished (early stopping after epoch"), "resume %d: %s", k, log);
        ck_assert_int_eq(r.epochs[0], epochs);
        ck_assert_msg(r.test_acc == test_acc, "test_acc %g, the summary's %g", r.test_acc, test_acc);
        folder_same(&before, out, "an early-stopped run resumed");
    }
    for (int i = 0; i < NKEEP; i++) free(before.b[i]);
    /* all its epochs: nothing again with the same count, one more epoch with a larger one */
    cfg(&c);
    strcat(out, "2");
    c.out = out;
    ck_assert_msg(run_train(&c, NULL, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.epochs[0], 2);
    folder_read(&before, out);
    ck_assert_ptr_nonnull(before.b[1]);
    cfg(&c);
    c.resume = out;
    ck_assert_msg(run_train(&c, NULL, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.finished, 1);
    folder_same(&before, out, "a completed run resumed");
    for (int i = 0; i < NKEEP; i++) free(before.b[i]);
    cfg(&c);
    c.resume = out; c.spec.max_epochs = 3;
    ck_assert_msg(run_train(&c, NULL, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.finished, 0);
    ck_assert_int_eq(r.epochs[0], 3);
    snprintf(path, sizeof path, "%s/metrics.csv", out);
    ck_assert_int_eq(lines_of(path), 1 + 3);
}
END_TEST

/* A copy of tiny.arch at `path` with `from` replaced by `to`. */
static void tiny_variant(const char *path, const char *from, const char *to)
{
    size_t n;
    char *t = slurp(tiny, &n), *at = strstr(t, from);
    ck_assert_ptr_nonnull(at);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%.*s%s%s", (int)(at - t), t, to, at + strlen(from));
    ck_assert_int_eq(fclose(f), 0);
    free(t);
}

START_TEST(resume_with_other_settings_refused)
{
    char eps[600], wide[600], w[600], other[600], err[2048], path[700], cmd[1400];
    snprintf(eps, sizeof eps, "%s/eps.arch", tmpdir);
    snprintf(wide, sizeof wide, "%s/wide.arch", tmpdir);
    snprintf(w, sizeof w, "%s/w.safetensors", tmpdir);
    snprintf(other, sizeof other, "%s/other", tmpdir);
    tiny_variant(eps, "bn         stem_bn", "bn         stem_bn eps=0.01");
    tiny_variant(wide, "conv       b2_conv       filters=32", "conv       b2_conv       filters=48");
    interrupted_run();
    snprintf(cmd, sizeof cmd, "cp '%s/best.safetensors' '%s'", out, w);
    ck_assert_int_eq(system(cmd), 0);
    static const char *NAMED[] = {"data_crc32", "images", "input 16x16 -> 32x32", "arch_file_crc32", "arch_file_crc32",
                                  "seed 1 -> 2", "strategy naive -> frozen", "batch 32 -> 16", "lr 0.05 -> 0.1",
                                  "weights_crc32 none -> ", "--out", "seed 1 -> 3; lr 0.05 -> 0.2"};
    int rows = (int)(sizeof NAMED / sizeof NAMED[0]);
    Folder before;
    folder_read(&before, out);
    for (int i = 0; i < rows; i++) {
        RunConfig c;
        RunResult r;
        cfg(&c);
        switch (i) {
        case 0: c.data = "synthetic:n=200,seed=5"; break;
        case 1: c.data = "synthetic:n=240"; break;
        case 2: c.input_h = c.input_w = 32; break;
        case 3: c.arch = eps; break;
        case 4: c.arch = wide; break;
        case 5: c.spec.seed = 2; break;
        case 6: strategy_defaults(&c.spec, STRAT_FROZEN); c.spec.max_epochs = 2; c.spec.lr = 0.05f; break;
        case 7: c.spec.batch = 16; break;
        case 8: c.spec.lr = 0.1f; break;
        case 9: c.weights = w; break;
        case 10: c.out = other; break;
        case 11: c.spec.seed = 3; c.spec.lr = 0.2f; break;
        }
        c.resume = out;
        int rc = run_train(&c, NULL, &r, err, sizeof err);
        ck_assert_msg(rc == 2, "row %d: code %d: %s", i, rc, err);
        ck_assert_msg(strstr(err, NAMED[i]), "row %d: '%s' not in: %s", i, NAMED[i], err);
        folder_same(&before, out, NAMED[i]);
        snprintf(path, sizeof path, "%s/resumes.json", out);
        ck_assert_msg(access(path, F_OK) != 0, "row %d: a refused resume wrote resumes.json", i);
    }
    /* what a resume may change: epochs, patience; config.json stays as it was */
    RunConfig c;
    RunResult r;
    cfg(&c);
    c.resume = out; c.spec.max_epochs = 3; c.spec.patience = 5;
    ck_assert_msg(run_train(&c, NULL, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.epochs[0], 3);
    snprintf(path, sizeof path, "%s/config.json", out);
    size_t n;
    char *now = slurp(path, &n);
    ck_assert_msg(n == before.n[2] && !memcmp(now, before.b[2], n), "config.json rewritten by a resume");
    free(now);
    snprintf(path, sizeof path, "%s/resumes.json", out);
    char *rs = slurp(path, &n);
    ck_assert_ptr_nonnull(rs);
    ck_assert_msg(strstr(rs, "\"max_epochs\": 3") && strstr(rs, "\"patience\": 5") && strstr(rs, "\"epoch\": 2") &&
                  strstr(rs, "\"after_step\": 2"), "%s", rs);
    free(rs);
    for (int i = 0; i < NKEEP; i++) free(before.b[i]);
}
END_TEST

/* kiln train --resume: the refusals of the command line, and resumes.json
 * read back by the next resume. */
START_TEST(cli_resume_options)
{
    const char *bin = getenv("KILN_BIN");
    ck_assert_ptr_nonnull(bin);
    char cmd[2048], msg[700], path[700];
    snprintf(msg, sizeof msg, "%s/stderr", tmpdir);
    snprintf(cmd, sizeof cmd, "'%s' train --arch '%s' --data %s --weights none --epochs 2 --lr 0.05 --out '%s' "
             "--stop-after-steps 7 --no-progress >/dev/null 2>&1", bin, tiny, DATA, out);
    ck_assert_int_eq(WEXITSTATUS(system(cmd)), 130);
    snprintf(path, sizeof path, "%s/config.json", out);
    size_t n0, n;
    char *config = slurp(path, &n0);
    static const struct { const char *args, *says; int code; } CASES[] = {
        {"--strategy frozen", "--strategy frozen with --resume", 2},
        {"--out /tmp/elsewhere", "--out /tmp/elsewhere with --resume", 2},
        {"--no-out", "--no-out with --resume", 2},
        {"--seed 2", "seed 1 -> 2", 2},
        {"--strategy naive --epochs 3", "", 0},
        {"", "finished (all 3 epochs", 0},      /* --epochs 3 from resumes.json */
    };
    for (int i = 0; i < (int)(sizeof CASES / sizeof CASES[0]); i++) {
        snprintf(cmd, sizeof cmd, "'%s' train --resume '%s' %s --no-progress >'%s' 2>&1", bin, out, CASES[i].args, msg);
        int code = WEXITSTATUS(system(cmd));
        char *said = slurp(msg, &n);
        ck_assert_msg(code == CASES[i].code && strstr(said, CASES[i].says), "'%s': code %d: %s", CASES[i].args, code, said);
        free(said);
        char *now = slurp(path, &n);
        ck_assert_msg(n == n0 && !memcmp(now, config, n), "'%s': config.json rewritten", CASES[i].args);
        free(now);
    }
    free(config);
}
END_TEST

/* make_backend for the runs below: removes the folder ctx (what --save
 * writes into) once the run is under way, then makes the CPU backend. */
static Backend *backend_removing(const Plan *p, void *ctx, char *err, size_t errlen)
{
    rmdir((const char *)ctx);
    return cpu_backend_create(p, err, errlen);
}

START_TEST(save_path_checked_before_and_summary_kept_after)
{
    RunConfig c;
    RunResult r;
    char err[1024], path[700], gone[600];
    cfg(&c);
    c.out = out; c.save = "/dev/null/w.safetensors";
    ck_assert_int_eq(run_train(&c, NULL, &r, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "/dev/null/w.safetensors") && strstr(err, "--save") && strstr(err, "Not a directory"), "%s", err);
    ck_assert_int_eq(r.epochs[0], 0);
    snprintf(path, sizeof path, "%s/config.json", out);
    ck_assert_msg(access(path, F_OK) != 0, "a refused --save still started the run");
    cfg(&c);
    c.out = out; c.save = tmpdir;     /* a folder */
    ck_assert_int_eq(run_train(&c, NULL, &r, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "Is a directory"), "%s", err);
    /* writable when the run starts, gone when it ends */
    snprintf(gone, sizeof gone, "%s/gone", tmpdir);
    ck_assert_int_eq(mkdir(gone, 0777), 0);
    strcat(gone, "/w.safetensors");
    cfg(&c);
    c.out = out; c.save = gone;
    c.make_backend = backend_removing;
    snprintf(path, sizeof path, "%s/gone", tmpdir);
    c.make_backend_ctx = path;
    ck_assert_int_eq(run_train(&c, NULL, &r, err, sizeof err), 1);
    ck_assert_msg(strstr(err, gone), "%s", err);
    ck_assert_int_eq(r.epochs[0], 2);
    snprintf(path, sizeof path, "%s/summary.json", out);
    size_t n;
    char *s = slurp(path, &n);
    ck_assert_msg(s && strstr(s, "\"test_acc\""), "no summary after the failed --save");
    free(s);
}
END_TEST

/* `kiln train` of the cfg run (resuming `out` when resume_it, else into
 * `out`) in a process whose files cannot grow past `limit` bytes, as on a
 * full disk (SIGXFSZ ignored, so a write past it fails with EFBIG). Returns
 * its exit code, what it printed on stderr in err. */
static int run_limited(rlim_t limit, int resume_it, char *err, size_t n)
{
    const char *bin = getenv("KILN_BIN");
    ck_assert_ptr_nonnull(bin);
    int fd[2];
    ck_assert_int_eq(pipe(fd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 1);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {limit, limit};
        if (setrlimit(RLIMIT_FSIZE, &rl)) _exit(99);
        if (resume_it)
            execl(bin, bin, "train", "--resume", out, "--no-progress", (char *)NULL);
        else
            execl(bin, bin, "train", "--arch", tiny, "--data", DATA, "--weights", "none", "--epochs", "2", "--lr",
                  "0.05", "--out", out, "--no-progress", (char *)NULL);
        _exit(98);
    }
    close(fd[1]);
    size_t got = 0;
    ssize_t k;
    while (got + 1 < n && (k = read(fd[0], err + got, n - 1 - got)) > 0) got += (size_t)k;
    err[got] = 0;
    close(fd[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st), "kiln train did not exit (status %d): %s", st, err);
    return WEXITSTATUS(st);
}

/* No file of `out` has ".tmp" in its name. */
static void no_temporaries(const char *when)
{
    DIR *d = opendir(out);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)))
        ck_assert_msg(!strstr(e->d_name, ".tmp"), "%s: %s left in the run folder", when, e->d_name);
    closedir(d);
}

START_TEST(full_disk_damages_nothing)
{
    char err[1024], ref[600], path[700], refpath[700], cmd[1400];
    snprintf(ref, sizeof ref, "%s/ref", tmpdir);
    /* the same run without a limit, to compare the files written before the failure */
    ck_assert_msg(run_limited(RLIM_INFINITY, 0, err, sizeof err) == 0, "%s", err);
    snprintf(cmd, sizeof cmd, "mv '%s' '%s'", out, ref);
    ck_assert_int_eq(system(cmd), 0);
    /* config.json (802 bytes) is the first file written */
    ck_assert_int_eq(run_limited(300, 0, err, sizeof err), 1);
    ck_assert_msg(strstr(err, "config.json: cannot write: File too large"), "%s", err);
    no_temporaries("config.json");
    /* config.json and plan.txt fit; best.safetensors (26 kB) at the end of epoch 1 does not */
    ck_assert_int_eq(run_limited(8192, 0, err, sizeof err), 1);
    ck_assert_msg(strstr(err, "best.safetensors") && strstr(err, "File too large"), "%s", err);
    no_temporaries("best.safetensors");
    static const char *SAME[] = {"config.json", "plan.txt"};
    for (int i = 0; i < 2; i++) {
        size_t na, nb;
        snprintf(path, sizeof path, "%s/%s", out, SAME[i]);
        snprintf(refpath, sizeof refpath, "%s/%s", ref, SAME[i]);
        char *a = slurp(path, &na), *b = slurp(refpath, &nb);
        ck_assert_msg(a && b && na == nb && !memcmp(a, b, na), "%s differs from the unlimited run's", SAME[i]);
        free(a); free(b);
    }
    snprintf(path, sizeof path, "%s/last.ckpt", out);
    ck_assert_msg(access(path, F_OK) != 0, "a checkpoint after a failed write");
    /* a resume on a full disk: metrics.csv is rewritten first, and kept whole */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    ck_assert_int_eq(system(cmd), 0);
    interrupted_run();
    Folder before;
    folder_read(&before, out);
    ck_assert_int_eq(run_limited(100, 1, err, sizeof err), 1);
    ck_assert_msg(strstr(err, "metrics.csv: cannot write: File too large"), "%s", err);
    no_temporaries("resume");
    folder_same(&before, out, "a resume on a full disk");
    for (int i = 0; i < NKEEP; i++) free(before.b[i]);
}
END_TEST

/* All that a run printed to a temporary log. */
static char *log_of(FILE *f)
{
    long n = ftell(f);
    char *b = malloc((size_t)n + 1);
    rewind(f);
    b[fread(b, 1, (size_t)n, f)] = 0;
    fclose(f);
    return b;
}

START_TEST(resume_messages)
{
    RunConfig c;
    RunResult r;
    char err[1024], w[600];
    snprintf(w, sizeof w, "%s/w.safetensors", tmpdir);
    cfg(&c);
    c.spec.max_epochs = 1; c.save = w;        /* weights with a 4-class head */
    ck_assert_msg(run_train(&c, NULL, &r, err, sizeof err) == 0, "%s", err);
    cfg(&c);
    c.data = "synthetic:n=200,classes=3"; c.weights = w; c.out = out; c.stop_after_steps = 7;
    c.log = tmpfile();
    ck_assert_int_eq(run_train(&c, NULL, &r, err, sizeof err), 130);
    char *first = log_of(c.log);
    cfg(&c);
    c.data = "synthetic:n=200,classes=3"; c.weights = w; c.resume = out;
    c.log = tmpfile();
    ck_assert_msg(run_train(&c, NULL, &r, err, sizeof err) == 0, "%s", err);
    char *second = log_of(c.log);
    const char *at = "phase 1, epoch 2, after step 2 of 5";
    ck_assert_msg(strstr(first, "4 -> 3 classes, fresh He init"), "%s", first);
    ck_assert_msg(strstr(first, "interrupted at ") && strstr(strstr(first, "interrupted at "), at), "%s", first);
    ck_assert_msg(strstr(second, "resumed from ") && strstr(strstr(second, "resumed from "), at), "%s", second);
    ck_assert_msg(!strstr(second, "He init") && strstr(second, "last.ckpt replace them"), "%s", second);
    free(first);
    free(second);
}
END_TEST

/* The loop resumed after 2 steps of epoch 1 at an LR that diverges: the
 * last good state is the resume point (there is no epoch start to go back
 * to), and that is what the backend and the loop state hold afterwards. */
START_TEST(divergence_after_a_mid_epoch_resume)
{
    Graph g;
    Dataset ds;
    Preproc pp;
    Split sp;
    Plan p;
    char err[512];
    tiny_load(&g, &ds, &pp, DATA);
    graph_flags_all(&g, 1, BN_TRAIN);
    ck_assert_int_eq(dataset_split(&ds, 1, &sp), 0);
    PlanOptions po = {.batch = 32, .fuse = 1, .fold = 1};
    ck_assert_msg(plan_build(&p, &g, &po, err, sizeof err) == 0, "%s", err);
    Backend *be = cpu_backend_create(&p, err, sizeof err);
    ck_assert_msg(be != NULL, "%s", err);
    float *w = malloc(sizeof(float) * p.param_floats), *after = malloc(sizeof(float) * p.param_floats);
    params_init(&p, w, 1, 0, g.n_layers - 1);
    be->write_params(be, w);
    DataView dv = {&ds, &sp, pp, NULL};
    PhaseConfig pc = {.max_epochs = 1, .momentum = 0.9f, .seed = 1, .log = quiet};
    LoopState ls;
    memset(&ls, 0, sizeof ls);
    schedule_init(&ls.sched, 1e30f, 0, 0, 0, 0.1f, 0, 0);
    ls.pos = 2; ls.seen = 64; ls.correct = 20; ls.loss_sum = 90; ls.sched.step = 2;
    PhaseResult res;
    ck_assert_int_eq(train_phase(be, &dv, &pc, &ls, NULL, &res), 0);
    ck_assert_msg(res.diverged, "lr 1e30 did not diverge");
    be->read_params(be, after);
    ck_assert_msg(!memcmp(w, after, sizeof(float) * p.param_floats), "the weights are not the resume point's");
    ck_assert_int_eq(ls.pos, 2);
    ck_assert_int_eq((int)ls.seen, 64);
    ck_assert_int_eq((int)ls.sched.step, 2);
    free(w); free(after);
    be->destroy(be);
    plan_free(&p);
    split_free(&sp);
    dataset_free(&ds);
    graph_free(&g);
}
END_TEST

/* One case per concern (CK_RUN_CASE=NAME runs one). */
static void add_case(Suite *s, const char *name, const TTest *t1, const TTest *t2)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, t1);
    if (t2) tcase_add_test(tc, t2);
    suite_add_tcase(s, tc);
}

Suite *test_suite(void)
{
    Suite *s = suite_create("resume");
    add_case(s, "checkpoint", edited_checkpoints_refused_naming_the_key, metadata_bit_flips_refused);
    add_case(s, "finished", finished_run_resumes_to_nothing, NULL);
    add_case(s, "settings", resume_with_other_settings_refused, cli_resume_options);
    add_case(s, "files", save_path_checked_before_and_summary_kept_after, full_disk_damages_nothing);
    add_case(s, "messages", resume_messages, NULL);
    add_case(s, "loop", divergence_after_a_mid_epoch_resume, NULL);
    return s;
}
