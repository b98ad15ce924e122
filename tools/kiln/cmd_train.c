/* tools/kiln/cmd_train.c — `kiln train`: the command line of one training run.
 * Parses options into a RunConfig (strategy defaults first, then every
 * override), installs the Ctrl-C handler (a checkpoint is written and the run
 * stops cleanly), and calls run_train. */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/device.h"
#include "runtime/run.h"
#include "tools/kiln/cmds.h"

static void train_usage(FILE *f)
{
    fprintf(f,
        "usage: kiln train --arch FILE --data SPEC [options]\n"
        "  --strategy S        random | naive | naive-bn-frozen | frozen | freeze-finetune |\n"
        "                      layerwise | warmup | auto   (default naive)\n"
        "  --weights FILE|none pretrained weights (default: weights/<arch>.safetensors when it\n"
        "                      exists; none = random init, which `random` always uses)\n"
        "  --out DIR           run folder (default runs/<arch>-<strategy>[-N]); --no-out for none\n"
        "  --resume DIR        continue the run in DIR from its last checkpoint, with its own\n"
        "                      settings: only --epochs, --patience, --plateau-*, --min-lr,\n"
        "                      --max-rollbacks, --no-fuse/--no-fold/--no-cache and --device may change\n"
        "  --save FILE         also write the final weights here\n"
        "  --epochs N (100) --batch N (32) --lr X (0.01) --momentum X (0.9) --wd X (0)\n"
        "  --patience N (20) --plateau-patience N (8) --plateau-factor X (0.1) --min-lr X (1e-6)\n"
        "  --warmup-epochs N (5 for warmup/auto) --warmup-start X (lr/100)\n"
        "  --finetune-factor X (0.1)  --bn train|infer|frozen (strategy's)\n"
        "  --lr-groups 'A..B=lr,C..=lr,head=lr'  --layer-decay X (0.7 for layerwise) --depth-groups N (5)\n"
        "  --on-diverge stop|rollback (stop; rollback for auto) --max-rollbacks N (3)\n"
        "  --seed N (%d) --per-class N --num-classes K --input-size HxW --memory-budget BYTES\n"
        "  --no-fuse --no-fold --no-cache --no-progress (no progress bar on a terminal)\n"
        "  --log-every SECONDS when the output is not a terminal, a progress line this often\n"
        "                      (30; 0: only the line at each epoch's end)\n"
        "  --device cpu|cuda|auto (auto: cuda when a GPU can be used; default $KILN_DEVICE or auto)\n"
        "  --tf32 (cuda: TF32 tensor-core GEMMs; default FP32)  --no-graph (cuda: no CUDA graph replay)\n",
        KILN_DEFAULT_SEED);
}

static void on_sigint(int sig)
{
    (void)sig;
    kiln_interrupted = 1;
}

/* A free run folder name: runs/BASE, runs/BASE-2, ... */
static void default_out(char *buf, size_t n, const char *arch, const char *strategy)
{
    char b[256];
    struct stat st;
    arch_base_name(b, sizeof b, arch);
    snprintf(buf, n, "runs/%s-%s", b, strategy);
    for (int k = 2; stat(buf, &st) == 0 && k < 10000; k++)
        snprintf(buf, n, "runs/%s-%s-%d", b, strategy, k);
}

/* The options a resume may change, from a config.json or resumes.json entry. */
static void changeable_from(RunConfig *c, json_t *o)
{
    TrainSpec *t = &c->spec;
#define NUM(key) json_number_value(json_object_get(o, key))
#define HAS(key) (json_object_get(o, key) != NULL)
    if (HAS("max_epochs")) t->max_epochs = (int)NUM("max_epochs");
    if (HAS("patience")) t->patience = (int)NUM("patience");
    if (HAS("plateau_patience")) t->plateau_patience = (int)NUM("plateau_patience");
    if (HAS("plateau_factor")) t->plateau_factor = (float)NUM("plateau_factor");
    if (HAS("min_lr")) t->min_lr = (float)NUM("min_lr");
    if (HAS("max_rollbacks")) t->max_rollbacks = (int)NUM("max_rollbacks");
    if (HAS("fuse")) c->fuse = json_is_true(json_object_get(o, "fuse"));
    if (HAS("fold")) c->fold = json_is_true(json_object_get(o, "fold"));
    if (HAS("cache_features")) c->cache = json_is_true(json_object_get(o, "cache_features"));
#undef NUM
#undef HAS
}

/* `--resume DIR` alone is enough: the run's config.json gives every option,
 * the last entry of its resumes.json the ones an earlier resume changed
 * (the command line may still override). Strings live in the json object,
 * which the caller keeps until the run ends. Returns 0, or 2 with a message. */
static int config_from_run(RunConfig *c, const char *dir, json_t **keep)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    if (!o || !json_is_object(o)) {
        fprintf(stderr, "kiln train: %s: cannot read the run's configuration: %s\n", path, o ? "not an object" : je.text);
        json_decref(o);
        return 2;
    }
    const char *strategy = json_string_value(json_object_get(o, "strategy"));
    int s = strategy ? strategy_parse(strategy) : -1;
    if (s < 0) {
        fprintf(stderr, "kiln train: %s: no known strategy\n", path);
        json_decref(o);
        return 2;
    }
    TrainSpec *t = &c->spec;
    strategy_defaults(t, (Strategy)s);
#define NUM(key) json_number_value(json_object_get(o, key))
#define HAS(key) (json_object_get(o, key) != NULL)
    c->arch = json_string_value(json_object_get(o, "arch"));
    c->data = json_string_value(json_object_get(o, "data"));
    c->weights = json_string_value(json_object_get(o, "weights"));
    if (HAS("lr")) t->lr = (float)NUM("lr");
    if (HAS("momentum")) t->momentum = (float)NUM("momentum");
    if (HAS("weight_decay")) t->weight_decay = (float)NUM("weight_decay");
    if (HAS("batch")) t->batch = (int)NUM("batch");
    if (HAS("warmup_epochs")) t->warmup_epochs = (int)NUM("warmup_epochs");
    if (HAS("warmup_start")) t->warmup_start = (float)NUM("warmup_start");
    if (HAS("finetune_factor")) t->finetune_factor = (float)NUM("finetune_factor");
    if (HAS("layer_decay")) t->layer_decay = (float)NUM("layer_decay");
    if (HAS("depth_groups")) t->n_depth_groups = (int)NUM("depth_groups");
    if (HAS("seed")) t->seed = (uint64_t)NUM("seed");
    if (HAS("per_class")) c->per_class = (int)NUM("per_class");
    const char *bn = json_string_value(json_object_get(o, "bn"));
    if (bn) t->bn_override = !strcmp(bn, "train") ? BN_TRAIN : !strcmp(bn, "infer") ? BN_INFER : !strcmp(bn, "frozen") ? BN_FROZEN : -1;
    const char *od = json_string_value(json_object_get(o, "on_diverge"));
    if (od) t->on_diverge = !strcmp(od, "rollback") ? DIVERGE_ROLLBACK : DIVERGE_STOP;
    const char *lg = json_string_value(json_object_get(o, "lr_groups"));
    if (lg) snprintf(t->lr_groups, sizeof t->lr_groups, "%s", lg);
    changeable_from(c, o);
    json_t *is = json_object_get(o, "input_size");
    if (json_array_size(is) == 2) {
        c->input_h = (int)json_integer_value(json_array_get(is, 0));
        c->input_w = (int)json_integer_value(json_array_get(is, 1));
    }
#undef NUM
#undef HAS
    if (!c->arch || !c->data) {
        fprintf(stderr, "kiln train: %s: no arch or data\n", path);
        json_decref(o);
        return 2;
    }
    snprintf(path, sizeof path, "%s/resumes.json", dir);
    json_t *rs = json_load_file(path, 0, &je);
    if (rs && json_array_size(rs)) changeable_from(c, json_array_get(rs, json_array_size(rs) - 1));
    json_decref(rs);
    *keep = o;
    return 0;
}

int cmd_train(int argc, char **argv)
{
    RunConfig c;
    run_config_default(&c);
    const char *strategy = "naive", *weights = NULL, *given = NULL;
    int no_out = 0;
    /* pass 1: the strategy, whose defaults the other options override */
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--strategy")) strategy = given = argv[i + 1];
    int s = strategy_parse(strategy);
    if (s < 0) {
        fprintf(stderr, "kiln train: unknown strategy '%s'\n", strategy);
        train_usage(stderr);
        return 2;
    }
    strategy_defaults(&c.spec, (Strategy)s);
    c.device = device_default();
    TrainSpec *t = &c.spec;
    json_t *resumed = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--resume")) {
            int rc = config_from_run(&c, argv[i + 1], &resumed);
            if (rc) return rc;
            if (given && strategy_parse(given) != (int)t->strategy) {
                fprintf(stderr, "kiln train: --strategy %s with --resume %s: the run's strategy is %s, which a resume "
                        "keeps\n", given, argv[i + 1], strategy_name(t->strategy));
                json_decref(resumed);
                return 2;
            }
            strategy = strategy_name(t->strategy);
            weights = c.weights ? c.weights : "none";
        }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0, flag = 1;
        if (!strcmp(a, "--help")) { train_usage(stdout); return 0; }
        else if (!strcmp(a, "--no-fuse")) c.fuse = 0;
        else if (!strcmp(a, "--no-fold")) c.fold = 0;
        else if (!strcmp(a, "--no-cache")) c.cache = 0;
        else if (!strcmp(a, "--no-out")) no_out = 1;
        else if (!strcmp(a, "--no-progress")) c.progress = 0;
        else if (!strcmp(a, "--tf32")) c.cuda.tf32 = 1;
        else if (!strcmp(a, "--no-graph")) c.cuda.graphs = 0;
        else flag = 0;
        if (flag) continue;
        int so = spec_option(t, argc, argv, &i);
        if (so < 0) return 2;
        if (so) continue;
        /* a missing value is told only once the option is known */
        int missing = !v;
        if (missing) v = "";
        if (!strcmp(a, "--strategy")) ;
        else if (!strcmp(a, "--arch")) c.arch = v;
        else if (!strcmp(a, "--data")) c.data = v;
        else if (!strcmp(a, "--weights")) weights = v;
        else if (!strcmp(a, "--out")) c.out = v;
        else if (!strcmp(a, "--resume")) c.resume = v;
        else if (!strcmp(a, "--save")) c.save = v;
        else if (!strcmp(a, "--device")) bad = !device_valid(c.device = v);
        else if (!strcmp(a, "--per-class")) bad = parse_int_arg(v, &c.per_class) || c.per_class < 1;
        else if (!strcmp(a, "--num-classes")) bad = parse_int_arg(v, &c.num_classes) || c.num_classes < 2;
        else if (!strcmp(a, "--input-size")) bad = parse_hw_arg(v, &c.input_h, &c.input_w);
        else if (!strcmp(a, "--memory-budget")) bad = parse_bytes_arg(v, &c.memory_budget);
        else if (!strcmp(a, "--log-every")) { float le; bad = parse_float_arg(v, &le) || !(le >= 0 && le < 1e9f); c.log_every = le; }
        else if (!strcmp(a, "--stop-after-steps")) { int n; bad = parse_int_arg(v, &n) || n < 1; c.stop_after_steps = n; }
        else {
            fprintf(stderr, "kiln train: unknown option '%s'\n", a);
            train_usage(stderr);
            return 2;
        }
        if (missing) { fprintf(stderr, "kiln train: %s needs a value\n", a); return 2; }
        if (bad) { fprintf(stderr, "kiln train: bad value '%s' for %s\n", v, a); return 2; }
        i++;
    }
    if (!c.arch || !c.data) {
        fprintf(stderr, "kiln train: --arch FILE and --data SPEC are required\n");
        train_usage(stderr);
        return 2;
    }
    /* weights: explicit, none, or the bootstrap's file for this arch */
    char wbuf[1024];
    if (weights && strcmp(weights, "none")) {
        c.weights = weights;
    } else if (!weights && t->pretrained) {
        if (default_weights(wbuf, sizeof wbuf, c.arch)) c.weights = wbuf;
        else fprintf(stderr, "kiln train: no %s; strategy %s starts from random weights (give --weights FILE)\n",
                     wbuf, strategy);
    }
    if (t->strategy == STRAT_RANDOM) c.weights = NULL;
    char obuf[1024];
    if (!no_out && !c.out && !c.resume) {
        default_out(obuf, sizeof obuf, c.arch, strategy);
        c.out = obuf;
    }
    if (no_out && c.resume) {
        fprintf(stderr, "kiln train: --no-out with --resume %s: a resumed run writes to its own folder\n", c.resume);
        json_decref(resumed);
        return 2;
    }
    if (no_out) c.out = NULL;
    signal(SIGINT, on_sigint);
    char err[1024];
    RunResult r;
    int rc = run_train(&c, NULL, &r, err, sizeof err);
    json_decref(resumed);
    if (rc && rc != 130) fprintf(stderr, "kiln train: %s\n", err);
    if (!rc && (c.out || c.resume)) printf("run folder: %s\n", c.resume ? c.resume : c.out);
    return rc == 130 ? 130 : rc ? rc : r.diverged ? 1 : 0;
}
