/* tools/kiln/cmd_compare.c — `kiln compare`: the reference article's experiment
 * as one command. For every architecture and every strategy, T trials over a
 * grid of learning rates and batch sizes, each a whole run_train into its own
 * folder OUT/<arch>/<strategy>/trial-K (K from 0), then `kiln report OUT`.
 *
 * The grid spread (trial_point): trial k takes lrs[k % nl] and
 * batches[(k % nl + k / nl) % nb]. So the first nl trials try every LR once
 * with the batch sizes alternating, the first nl * nb trials cover the whole
 * grid exactly once, and later trials go round it again with seed + round
 * (another shuffle, initialization and split). The defaults (5 LRs, 2
 * batches, 5 trials) give 0.1/32, 0.03/64, 0.01/32, 0.003/64, 0.001/32.
 * `auto` has no hyperparameters: it ignores the grid, and its trials differ
 * by seed (seed + k). `random` always starts from random weights. Other
 * training options (kiln train's, through spec_option) apply to every trial
 * of the strategies they belong to (option_strategies): a warm-up option
 * reaches warmup and auto only, so naive-bn-frozen beside warmup stays
 * itself; an option that belongs to none of the strategies asked is refused.
 * The strategies' order as asked is kept in OUT/compare.json, which orders
 * the report's rows.
 *
 * Trials are independent: `--trial K` runs trial K of every (arch, strategy)
 * only, so a sweep can be spread over machines and merged with `kiln
 * report`. A trial whose folder already holds a finished run of the same
 * settings (trial.json, written last, equal; summary.json present) is kept,
 * not rerun, so an interrupted sweep continues where it stopped (--force
 * reruns). Diverged trials are results: kept, marked, reported apart.
 * All trials of one invocation share one RunShared: the data set is loaded
 * once and a frozen prefix's features are computed once per arch and
 * weights. Each trial's own log goes to its folder's train.log; stdout gets
 * one line per trial.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/device.h"
#include "runtime/files.h"
#include "runtime/report/report.h"
#include "runtime/run.h"
#include "tools/kiln/cmds.h"

#define MAX_ARCHS 16
#define MAX_GRID 32

typedef struct {
    const char *arch[MAX_ARCHS];
    char *weights[MAX_ARCHS];       /* per arch; NULL: random init */
    int n_arch;
    Strategy strat[STRAT_COUNT];
    int n_strat;
    int trials, only_trial;         /* only_trial -1: all */
    float lrs[MAX_GRID];
    int nl;
    int batches[MAX_GRID];
    int nb;
    int epochs, patience;           /* 0 / -1: the strategy's */
    int per_class, input_h, input_w;
    const char *data, *out;
    uint64_t seed;
    int force;
    char *knobs[64];                /* other training options (--wd X, ...), as pairs */
    int n_knobs;
    const char *device;             /* resolved once: cpu or cuda */
    char archbuf[4096];             /* --arch's list, split: arch[] points into it */
} Sweep;

/* The options, on f. */
static void compare_usage(FILE *f)
{
    fprintf(f,
        "usage: kiln compare --arch FILE[,FILE...] --data SPEC --strategies all|S1,S2,... [options]\n"
        "  --trials T          trials per (arch, strategy) (default 5)\n"
        "  --lrs X,Y,...       learning-rate grid (default 0.1,0.03,0.01,0.003,0.001)\n"
        "  --batches N,M,...   batch-size grid (default 32,64)\n"
        "                      trial k: lrs[k %% nl], batches[(k %% nl + k / nl) %% nb]; auto ignores the grid\n"
        "  --epochs N --patience N   override the strategies' (100, 20)\n"
        "  --per-class N --input-size HxW --seed N (%d)\n"
        "  --weights FILE[,FILE...]|none  per arch (default weights/<arch>.safetensors; random never loads)\n"
        "  --out DIR           (default runs/compare): DIR/<arch>/<strategy>/trial-K, then the report\n"
        "  --trial K           run only trial K (0..T-1) of every (arch, strategy); merge with kiln report DIR\n"
        "  --force             rerun trials that already finished with the same settings\n"
        "  --device cpu|cuda|auto  where the trials run (default $KILN_DEVICE or auto)\n"
        "  and any training option of kiln train but --lr/--batch (--wd, --momentum, --on-diverge, ...):\n"
        "  applied to every trial after its strategy's defaults; the options of one strategy apply to it\n"
        "  only: --warmup-epochs, --warmup-start (warmup, auto), --finetune-factor (freeze-finetune),\n"
        "  --lr-groups, --layer-decay, --depth-groups (layerwise)\n",
        KILN_DEFAULT_SEED);
}

/* Training options that belong to some strategies only, as runtime/strategy.c
 * uses them: the warm-up ramp is warmup's (and auto's, which warms up), the
 * second phase's LR factor is freeze-finetune's, LR groups are layerwise's.
 * To add one: its option name and the strategies whose presets read it. */
static const struct { const char *option; unsigned strategies; } OWNED_OPTIONS[] = {
    {"--warmup-epochs", 1u << STRAT_WARMUP | 1u << STRAT_AUTO},
    {"--warmup-start", 1u << STRAT_WARMUP | 1u << STRAT_AUTO},
    {"--finetune-factor", 1u << STRAT_FREEZE_FINETUNE},
    {"--lr-groups", 1u << STRAT_LAYERWISE},
    {"--layer-decay", 1u << STRAT_LAYERWISE},
    {"--depth-groups", 1u << STRAT_LAYERWISE},
};

/* The strategies (a bit per Strategy) that training option `opt` applies to. */
static unsigned option_strategies(const char *opt)
{
    for (size_t i = 0; i < sizeof OWNED_OPTIONS / sizeof OWNED_OPTIONS[0]; i++)
        if (!strcmp(OWNED_OPTIONS[i].option, opt)) return OWNED_OPTIONS[i].strategies;
    return (1u << STRAT_COUNT) - 1;
}

/* Names of the strategies in mask, comma-separated, into buf. */
static void strategy_list(char *buf, size_t n, unsigned mask)
{
    size_t len = 0;
    buf[0] = 0;
    for (int k = 0; k < STRAT_COUNT && len < n; k++)
        if (mask >> k & 1) len += (size_t)snprintf(buf + len, n - len, "%s%s", len ? ", " : "", strategy_name((Strategy)k));
}

/* Every strategy-specific option must reach one of the strategies asked:
 * 0, or 2 (message printed). Prints which strategies each applies to. */
static int check_option_owners(const Sweep *s)
{
    unsigned asked = 0;
    for (int i = 0; i < s->n_strat; i++) asked |= 1u << s->strat[i];
    for (int e = 0; e + 1 < s->n_knobs; e += 2) {
        unsigned own = option_strategies(s->knobs[e]);
        if (own == (1u << STRAT_COUNT) - 1) continue;
        char owners[256], to[256], not_to[256];
        strategy_list(owners, sizeof owners, own);
        strategy_list(to, sizeof to, own & asked);
        strategy_list(not_to, sizeof not_to, asked & ~own);
        if (!(own & asked)) {
            fprintf(stderr, "kiln compare: %s belongs to %s, and none of the strategies asked (%s) uses it\n",
                    s->knobs[e], owners, not_to);
            return 2;
        }
        printf("%s %s applies to %s only%s%s%s\n", s->knobs[e], s->knobs[e + 1], to, not_to[0] ? " (not to " : "",
               not_to, not_to[0] ? ")" : "");
    }
    return 0;
}

/* Ctrl-C: the running trial writes its checkpoint and stops; so does the sweep. */
static void on_sigint(int sig)
{
    (void)sig;
    kiln_interrupted = 1;
}

/* ---- options ------------------------------------------------------------------ */

/* Split a comma list in place into at most max items; returns the count or -1. */
static int split_list(char *s, char **items, int max)
{
    int n = 0;
    for (char *save = NULL, *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (n == max) return -1;
        items[n++] = t;
    }
    return n;
}

/* "0.1,0.03" into lrs; 0, or -1 on a bad or non-positive value. */
static int parse_lrs(const char *v, Sweep *s)
{
    char buf[1024], *it[MAX_GRID];
    snprintf(buf, sizeof buf, "%s", v);
    int n = split_list(buf, it, MAX_GRID);
    if (n < 1) return -1;
    for (int i = 0; i < n; i++)
        if (parse_float_arg(it[i], &s->lrs[i]) || !(s->lrs[i] > 0) || !isfinite(s->lrs[i])) return -1;
    s->nl = n;
    return 0;
}

/* "32,64" into batches; 0, or -1. */
static int parse_batches(const char *v, Sweep *s)
{
    char buf[1024], *it[MAX_GRID];
    snprintf(buf, sizeof buf, "%s", v);
    int n = split_list(buf, it, MAX_GRID);
    if (n < 1) return -1;
    for (int i = 0; i < n; i++)
        if (parse_int_arg(it[i], &s->batches[i]) || s->batches[i] < 1 || s->batches[i] > 65536) return -1;
    s->nb = n;
    return 0;
}

/* "all" or a comma list of strategy names; 0, or -1 (message printed). */
static int parse_strategies(const char *v, Sweep *s)
{
    s->n_strat = 0;
    if (!strcmp(v, "all")) {
        for (int i = 0; i < STRAT_COUNT; i++) s->strat[s->n_strat++] = (Strategy)i;
        return 0;
    }
    char buf[1024], *it[STRAT_COUNT + 1];
    snprintf(buf, sizeof buf, "%s", v);
    int n = split_list(buf, it, STRAT_COUNT + 1);
    for (int i = 0; i < n; i++) {
        int k = strategy_parse(it[i]);
        if (k < 0) {
            fprintf(stderr, "kiln compare: unknown strategy '%s' (random, naive, naive-bn-frozen, frozen, "
                    "freeze-finetune, layerwise, warmup, auto, or all)\n", it[i]);
            return -1;
        }
        for (int j = 0; j < s->n_strat; j++)
            if (s->strat[j] == (Strategy)k) {
                fprintf(stderr, "kiln compare: strategy '%s' named twice\n", it[i]);
                return -1;
            }
        if (s->n_strat == STRAT_COUNT) return -1;
        s->strat[s->n_strat++] = (Strategy)k;
    }
    return s->n_strat ? 0 : -1;
}

/* Fill s->weights: explicit per-arch list, "none", or weights/<arch>.safetensors
 * for every arch that some pretrained strategy needs. 0, or 2 (message printed). */
static int resolve_weights(Sweep *s, const char *opt)
{
    int need = 0;
    for (int i = 0; i < s->n_strat; i++) need |= s->strat[i] != STRAT_RANDOM;
    if (opt && !strcmp(opt, "none")) {
        if (need) fprintf(stderr, "kiln compare: --weights none: every strategy starts from random weights\n");
        return 0;
    }
    if (opt) {
        char buf[4096], *it[MAX_ARCHS];
        snprintf(buf, sizeof buf, "%s", opt);
        int n = split_list(buf, it, MAX_ARCHS);
        if (n != s->n_arch) {
            fprintf(stderr, "kiln compare: --weights names %d files for %d architectures (give one per arch, in order)\n",
                    n, s->n_arch);
            return 2;
        }
        for (int a = 0; a < n; a++) s->weights[a] = strdup(it[a]);
    } else if (need) {
        for (int a = 0; a < s->n_arch; a++) {
            char path[512];
            if (!default_weights(path, sizeof path, s->arch[a])) {
                fprintf(stderr, "kiln compare: no %s for %s: transfer strategies need pretrained weights "
                        "(give --weights FILE, or --weights none to start every strategy from random weights)\n",
                        path, s->arch[a]);
                return 2;
            }
            s->weights[a] = strdup(path);
        }
    }
    for (int a = 0; a < s->n_arch; a++) {
        struct stat st;
        if (s->weights[a] && stat(s->weights[a], &st)) {
            fprintf(stderr, "kiln compare: %s: %s\n", s->weights[a], strerror(errno));
            return 2;
        }
    }
    return 0;
}

/* ---- trials -------------------------------------------------------------------- */

/* Trial k's learning rate, batch size and seed (see the file comment). */
static void trial_point(const Sweep *s, Strategy st, int k, float *lr, int *batch, uint64_t *seed)
{
    int i = k % s->nl, j = (i + k / s->nl) % s->nb, round = k / (s->nl * s->nb);
    *lr = s->lrs[i];
    *batch = s->batches[j];
    *seed = s->seed + (uint64_t)(st == STRAT_AUTO ? k : round);
}


/* Everything a trial's result depends on: equal descriptors, equal runs. */
static json_t *trial_json(const Sweep *s, int a, Strategy st, int k, const RunConfig *c)
{
    json_t *o = json_object();
    json_object_set_new(o, "arch", json_string(s->arch[a]));
    json_object_set_new(o, "data", json_string(s->data));
    json_object_set_new(o, "weights", c->weights ? json_string(c->weights) : json_null());
    json_object_set_new(o, "strategy", json_string(strategy_name(st)));
    json_object_set_new(o, "trial", json_integer(k));
    json_object_set_new(o, "lr", st == STRAT_AUTO ? json_null() : json_real(c->spec.lr));
    json_object_set_new(o, "batch", st == STRAT_AUTO ? json_null() : json_integer(c->spec.batch));
    json_object_set_new(o, "seed", json_integer((json_int_t)c->spec.seed));
    json_object_set_new(o, "max_epochs", json_integer(c->spec.max_epochs));
    json_object_set_new(o, "patience", json_integer(c->spec.patience));
    json_object_set_new(o, "per_class", json_integer(c->per_class));
    json_object_set_new(o, "input_h", json_integer(c->input_h));
    json_object_set_new(o, "input_w", json_integer(c->input_w));
    json_t *kn = json_array();
    for (int e = 0; e + 1 < s->n_knobs; e += 2)
        if (option_strategies(s->knobs[e]) >> st & 1) {
            json_array_append_new(kn, json_string(s->knobs[e]));
            json_array_append_new(kn, json_string(s->knobs[e + 1]));
        }
    json_object_set_new(o, "options", kn);
    return o;
}

/* Is `dir` a finished trial with descriptor `want`? Prints its result if so. */
static int trial_done(const char *dir, json_t *want)
{
    char path[1200];
    json_error_t je;
    snprintf(path, sizeof path, "%s/trial.json", dir);
    json_t *have = json_load_file(path, 0, &je);
    int same = have && json_equal(have, want);
    json_decref(have);
    if (!same) return 0;
    snprintf(path, sizeof path, "%s/summary.json", dir);
    json_t *sum = json_load_file(path, 0, &je);
    if (!sum) return 0;
    printf("kept from an earlier run: test_acc %.4f  train %.2fs%s\n",
           json_number_value(json_object_get(sum, "test_acc")),
           json_number_value(json_object_get(sum, "train_seconds")),
           json_is_true(json_object_get(sum, "diverged")) ? "  (diverged)" : "");
    json_decref(sum);
    return 1;
}

/* Run one trial into dir. Returns run_train's code (0 for a diverged run). */
static int run_trial(const Sweep *s, RunShared *sh, int a, Strategy st, int k, const char *dir)
{
    RunConfig c;
    run_config_default(&c);
    strategy_defaults(&c.spec, st);
    float lr;
    int batch;
    uint64_t seed;
    trial_point(s, st, k, &lr, &batch, &seed);
    for (int e = 0; e + 1 < s->n_knobs; e += 2) {
        if (!(option_strategies(s->knobs[e]) >> st & 1)) continue;
        int j = 0;
        char *kv[2] = {s->knobs[e], s->knobs[e + 1]};
        spec_option(&c.spec, 2, kv, &j);          /* validated when parsed */
    }
    c.spec.lr = lr;
    c.spec.batch = batch;
    c.spec.seed = seed;
    if (s->epochs > 0) c.spec.max_epochs = s->epochs;
    if (s->patience >= 0) c.spec.patience = s->patience;
    c.arch = s->arch[a];
    c.data = s->data;
    c.weights = st == STRAT_RANDOM ? NULL : s->weights[a];
    c.out = dir;
    c.per_class = s->per_class;
    c.input_h = s->input_h;
    c.input_w = s->input_w;
    c.progress = 0;
    c.device = s->device;

    json_t *want = trial_json(s, a, st, k, &c);
    char path[1200];
    if (st == STRAT_AUTO) printf("seed %llu  (auto picks lr and batch) ... ", (unsigned long long)seed);
    else printf("lr %-8g batch %-4d ... ", lr, batch);
    fflush(stdout);
    if (!s->force && trial_done(dir, want)) { json_decref(want); return 0; }

    snprintf(path, sizeof path, "%s/trial.json", dir);
    unlink(path);                       /* a stale descriptor must not bless a new run */
    if (kiln_mkdirs(dir)) {
        printf("\n");
        fprintf(stderr, "kiln compare: %s: cannot create the trial folder: %s\n", dir, strerror(errno));
        json_decref(want);
        return 2;
    }
    snprintf(path, sizeof path, "%s/train.log", dir);
    FILE *log = fopen(path, "w");
    if (!log) {
        printf("\n");
        fprintf(stderr, "kiln compare: %s: %s\n", path, strerror(errno));
        json_decref(want);
        return 2;
    }
    setvbuf(log, NULL, _IOLBF, 0);      /* progress lines reach the file as they are written */
    c.log = log;
    char err[1024];
    RunResult r;
    int rc = run_train(&c, sh, &r, err, sizeof err);
    if (rc) fprintf(log, "error: %s\n", err);
    fclose(log);
    if (rc == 130) {
        printf("interrupted\n");
    } else if (rc) {
        printf("FAILED\n");
        fprintf(stderr, "kiln compare: %s: %s (log: %s)\n", dir, err, path);
    } else {
        int epochs = r.epochs[0] + (r.phases > 1 ? r.epochs[1] : 0);
        if (r.diverged)
            printf("DIVERGED at epoch %d step %d (lr %g)  train %.2fs\n", r.div_epoch, r.div_step, r.div_lr,
                   r.train_seconds);
        else if (st == STRAT_AUTO)
            printf("lr %g batch %d: test_acc %.4f  train %.2fs  epochs %d\n", r.lr, r.batch, r.test_acc,
                   r.train_seconds, epochs);
        else
            printf("test_acc %.4f  train %.2fs  epochs %d\n", r.test_acc, r.train_seconds, epochs);
        snprintf(path, sizeof path, "%s/trial.json", dir);
        if (kiln_write_json(path, want))
            fprintf(stderr, "kiln compare: %s: cannot write: %s\n", path, strerror(errno));
    }
    fflush(stdout);
    json_decref(want);
    return rc;
}

/* OUT/compare.json: the strategies in the order asked, which the report's
 * rows follow. 0, or 1 (message printed). */
static int write_order(const Sweep *s)
{
    char path[1100];
    json_t *o = json_object(), *a = json_array();
    for (int i = 0; i < s->n_strat; i++) json_array_append_new(a, json_string(strategy_name(s->strat[i])));
    json_object_set_new(o, "strategies", a);
    snprintf(path, sizeof path, "%s/compare.json", s->out);
    int bad = kiln_write_json(path, o);
    json_decref(o);
    if (bad) fprintf(stderr, "kiln compare: %s: cannot write: %s\n", path, strerror(errno));
    return bad ? 1 : 0;
}

/* ---- the command ---------------------------------------------------------------- */

/* The options of one command line, before they are checked together. */
typedef struct { const char *archs, *strategies, *weights, *device; } CompareArgs;

/* Parse argv into s (defaults first) and a. Returns -1 to go on, else the
 * exit code (0 after --help; 2 on bad usage, message printed). */
static int compare_parse(int argc, char **argv, Sweep *s, CompareArgs *ca)
{
    memset(s, 0, sizeof *s);
    s->trials = 5;
    s->only_trial = -1;
    s->patience = -1;
    s->seed = KILN_DEFAULT_SEED;
    s->out = "runs/compare";
    parse_lrs("0.1,0.03,0.01,0.003,0.001", s);
    parse_batches("32,64", s);
    *ca = (CompareArgs){NULL, NULL, NULL, device_default()};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { compare_usage(stdout); return 0; }
        if (!strcmp(a, "--force")) { s->force = 1; continue; }
        if (!strcmp(a, "--no-progress")) continue;    /* compare never draws progress bars */
        /* a missing value is told only once the option is known */
        int missing = !v;
        if (missing) v = "";
        if (!strcmp(a, "--arch")) ca->archs = v;
        else if (!strcmp(a, "--data")) s->data = v;
        else if (!strcmp(a, "--strategies")) ca->strategies = v;
        else if (!strcmp(a, "--weights")) ca->weights = v;
        else if (!strcmp(a, "--out")) s->out = v;
        else if (!strcmp(a, "--device")) bad = !device_valid(ca->device = v);
        else if (!strcmp(a, "--trials")) bad = parse_int_arg(v, &s->trials) || s->trials < 1 || s->trials > 10000;
        else if (!strcmp(a, "--trial")) bad = parse_int_arg(v, &s->only_trial) || s->only_trial < 0;
        else if (!strcmp(a, "--lrs")) bad = parse_lrs(v, s);
        else if (!strcmp(a, "--batches")) bad = parse_batches(v, s);
        else if (!strcmp(a, "--epochs")) bad = parse_int_arg(v, &s->epochs) || s->epochs < 1;
        else if (!strcmp(a, "--patience")) bad = parse_int_arg(v, &s->patience) || s->patience < 0;
        else if (!strcmp(a, "--per-class")) bad = parse_int_arg(v, &s->per_class) || s->per_class < 1;
        else if (!strcmp(a, "--input-size")) bad = parse_hw_arg(v, &s->input_h, &s->input_w);
        else if (!strcmp(a, "--seed")) { int sd; bad = parse_int_arg(v, &sd) || sd < 0; s->seed = (uint64_t)sd; }
        else if (!strcmp(a, "--lr") || !strcmp(a, "--batch")) {
            fprintf(stderr, "kiln compare: %s: the trials take it from the grid (give %s)\n", a,
                    !strcmp(a, "--lr") ? "--lrs" : "--batches");
            return 2;
        } else {
            TrainSpec probe;
            strategy_defaults(&probe, STRAT_NAIVE);
            int at = i, r = spec_option(&probe, argc, argv, &i);
            if (r < 0) return 2;
            if (r && s->n_knobs + 2 <= (int)(sizeof s->knobs / sizeof s->knobs[0])) {
                s->knobs[s->n_knobs++] = argv[at];
                s->knobs[s->n_knobs++] = argv[at + 1];
                continue;
            }
            fprintf(stderr, "kiln compare: %s option '%s'\n", r ? "too many training options at" : "unknown", a);
            compare_usage(stderr);
            return 2;
        }
        if (missing) { fprintf(stderr, "kiln compare: %s needs a value\n", a); return 2; }
        if (bad) { fprintf(stderr, "kiln compare: bad value '%s' for %s\n", v, a); return 2; }
        i++;
    }
    return -1;
}

/* Check the options together and fill the rest of s: strategies, device,
 * --trial's range, the archs (no two with one folder name). Returns 0, or
 * 2 (message printed). */
static int compare_check(Sweep *s, const CompareArgs *ca)
{
    if (!ca->archs || !s->data || !ca->strategies) {
        fprintf(stderr, "kiln compare: --arch, --data and --strategies are required\n");
        compare_usage(stderr);
        return 2;
    }
    if (parse_strategies(ca->strategies, s) || check_option_owners(s)) return 2;
    char derr[512];
    if (device_resolve(ca->device, stdout, &s->device, derr, sizeof derr)) {
        fprintf(stderr, "kiln compare: %s\n", derr);
        return 2;
    }
    if (s->only_trial >= s->trials) {
        fprintf(stderr, "kiln compare: --trial %d is outside 0..%d (--trials %d)\n", s->only_trial, s->trials - 1,
                s->trials);
        return 2;
    }
    char *ait[MAX_ARCHS];
    snprintf(s->archbuf, sizeof s->archbuf, "%s", ca->archs);
    s->n_arch = split_list(s->archbuf, ait, MAX_ARCHS);
    if (s->n_arch < 1) { fprintf(stderr, "kiln compare: --arch takes 1 to %d files\n", MAX_ARCHS); return 2; }
    for (int a = 0; a < s->n_arch; a++) {
        s->arch[a] = ait[a];
        char ba[256], bb[256];
        arch_base_name(ba, sizeof ba, s->arch[a]);
        for (int b = 0; b < a; b++) {
            arch_base_name(bb, sizeof bb, s->arch[b]);
            if (!strcmp(ba, bb)) {
                fprintf(stderr, "kiln compare: %s and %s share the folder name '%s'\n", s->arch[b], s->arch[a], ba);
                return 2;
            }
        }
    }
    return 0;
}

/* The sweep's first lines: runs, grid, epochs and patience. */
static void compare_announce(const Sweep *s, int per, int total)
{
    printf("compare: %d arch%s x %d strateg%s x %d trial%s = %d runs into %s\n", s->n_arch, s->n_arch > 1 ? "s" : "",
           s->n_strat, s->n_strat > 1 ? "ies" : "y", per, per > 1 ? "s" : "", total, s->out);
    printf("grid: lr");
    for (int i = 0; i < s->nl; i++) printf("%s%g", i ? "," : " ", s->lrs[i]);
    printf(" x batch");
    for (int i = 0; i < s->nb; i++) printf("%s%d", i ? "," : " ", s->batches[i]);
    TrainSpec dflt;
    strategy_defaults(&dflt, STRAT_NAIVE);
    printf("; at most %d epoch(s) a phase, early-stopping patience %d; each trial's log in its train.log\n",
           s->epochs > 0 ? s->epochs : dflt.max_epochs,
           s->patience >= 0 ? s->patience : dflt.patience);
}

/* Every trial of the sweep (or only --trial's), in order. Returns 0 with
 * the failed trials counted in *failed, or 130 (interrupted) or 2 (a trial
 * refused its set-up), which stop the sweep. */
static int compare_run(const Sweep *s, int total, int *failed)
{
    int rc = 0, done = 0;
    RunShared sh;
    memset(&sh, 0, sizeof sh);
    for (int a = 0; a < s->n_arch && !rc; a++) {
        char base[256];
        arch_base_name(base, sizeof base, s->arch[a]);
        for (int si = 0; si < s->n_strat && !rc; si++) {
            for (int k = s->only_trial >= 0 ? s->only_trial : 0; k < (s->only_trial >= 0 ? s->only_trial + 1 : s->trials); k++) {
                char dir[1100];
                snprintf(dir, sizeof dir, "%s/%s/%s/trial-%d", s->out, base, strategy_name(s->strat[si]), k);
                printf("[%d/%d] %s %s trial-%d  ", ++done, total, base, strategy_name(s->strat[si]), k);
                int r = run_trial(s, &sh, a, s->strat[si], k, dir);
                if (r == 130 || r == 2) { rc = r; break; }
                if (r) (*failed)++;
            }
        }
    }
    run_shared_free(&sh);
    return rc;
}

/* `kiln compare`: parse, check weights and folders, run the trials, report. */
int cmd_compare(int argc, char **argv)
{
    Sweep s;
    CompareArgs ca;
    int rc = compare_parse(argc, argv, &s, &ca);
    if (rc >= 0) return rc;
    if (compare_check(&s, &ca)) return 2;
    if ((rc = resolve_weights(&s, ca.weights))) goto out;
    if (kiln_mkdirs(s.out)) {
        fprintf(stderr, "kiln compare: %s: cannot create the output folder: %s\n", s.out, strerror(errno));
        rc = 2;
        goto out;
    }
    if ((rc = write_order(&s))) goto out;
    int per = s.only_trial >= 0 ? 1 : s.trials, total = s.n_arch * s.n_strat * per, failed = 0;
    compare_announce(&s, per, total);
    signal(SIGINT, on_sigint);
    rc = compare_run(&s, total, &failed);
    if (rc == 130) {
        printf("interrupted: finished trials are kept; run the same command again to continue\n");
        goto out;
    }
    if (rc) goto out;
    if (s.only_trial >= 0) {
        printf("trial %d done; when every trial is, merge with: kiln report %s\n", s.only_trial, s.out);
    } else {
        rc = report_build(s.out);
    }
    if (!rc && failed) {
        fprintf(stderr, "kiln compare: %d trial%s failed (see their train.log)\n", failed, failed > 1 ? "s" : "");
        rc = 1;
    }
out:
    for (int a = 0; a < MAX_ARCHS; a++) free(s.weights[a]);
    return rc;
}
