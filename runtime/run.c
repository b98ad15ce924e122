/* runtime/run.c — one training run from start to end (see run.h): the
 * orchestration around the loop, the run folder, resumption (its checks and
 * records in resume.c) and the auto strategy's choices. */
#include "runtime/run.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/checkpoint.h"
#include "runtime/classes.h"
#include "runtime/device.h"
#include "runtime/evaluate.h"
#include "runtime/files.h"
#include "runtime/params.h"
#include "runtime/resume.h"
#include "runtime/weights.h"

void run_config_default(RunConfig *c)
{
    memset(c, 0, sizeof *c);
    strategy_defaults(&c->spec, STRAT_NAIVE);
    c->fuse = c->fold = 1;
    c->cache = 1;
    c->cache_limit = (size_t)4 << 30;
    c->progress = 1;
    c->log_every = 30;
    cuda_options_default(&c->cuda);
}

void run_shared_free(RunShared *sh)
{
    if (sh->have_ds) dataset_free(&sh->ds);
    feature_cache_free(&sh->cache);
    memset(sh, 0, sizeof *sh);
}

/* ---- files ------------------------------------------------------------------- */

/* dir/file into buf. */
static void path_in(char *buf, size_t n, const char *dir, const char *file)
{
    snprintf(buf, n, "%s/%s", dir, file);
}

/* The resolved configuration: what `kiln train --resume DIR` reads back. */
static json_t *spec_json(const RunConfig *c, const TrainSpec *t, const LrGroups *gr, const InputAttr *in,
                         const Dataset *ds)
{
    json_t *o = json_object();
    json_object_set_new(o, "arch", json_string(c->arch));
    json_object_set_new(o, "data", json_string(c->data));
    json_t *cls = classes_json(ds->class_names, ds->num_classes);
    json_object_set_new(o, "classes", cls ? cls : json_null());
    json_object_set_new(o, "weights", c->weights ? json_string(c->weights) : json_null());
    json_object_set_new(o, "strategy", json_string(strategy_name(t->strategy)));
    json_object_set_new(o, "lr", json_real(t->lr));
    json_object_set_new(o, "momentum", json_real(t->momentum));
    json_object_set_new(o, "weight_decay", json_real(t->weight_decay));
    json_object_set_new(o, "batch", json_integer(t->batch));
    json_object_set_new(o, "max_epochs", json_integer(t->max_epochs));
    json_object_set_new(o, "patience", json_integer(t->patience));
    json_object_set_new(o, "plateau_patience", json_integer(t->plateau_patience));
    json_object_set_new(o, "plateau_factor", json_real(t->plateau_factor));
    json_object_set_new(o, "min_lr", json_real(t->min_lr));
    json_object_set_new(o, "warmup_epochs", json_integer(t->warmup_epochs));
    json_object_set_new(o, "warmup_start", json_real(t->warmup_start > 0 ? t->warmup_start : t->lr / 100));
    json_object_set_new(o, "finetune_factor", json_real(t->finetune_factor));
    json_object_set_new(o, "bn", json_string(t->bn_override < 0 ? "strategy" : bn_mode_name((BnMode)t->bn_override)));
    json_object_set_new(o, "lr_groups", json_string(t->lr_groups));
    json_object_set_new(o, "layer_decay", json_real(t->layer_decay));
    json_object_set_new(o, "on_diverge", json_string(t->on_diverge == DIVERGE_ROLLBACK ? "rollback" : "stop"));
    json_object_set_new(o, "seed", json_integer((json_int_t)t->seed));
    json_object_set_new(o, "per_class", json_integer(c->per_class));
    json_object_set_new(o, "fuse", json_boolean(c->fuse));
    json_object_set_new(o, "fold", json_boolean(c->fold));
    json_object_set_new(o, "cache_features", json_boolean(c->cache));
    json_object_set_new(o, "input_size", json_pack("[i,i]", in->h, in->w));
    json_object_set_new(o, "max_rollbacks", json_integer(t->max_rollbacks));
    json_object_set_new(o, "depth_groups", json_integer(t->n_depth_groups));
    if (gr) {
        json_t *a = json_array();
        for (int k = 0; k < gr->n; k++) {
            json_t *g = json_object();
            json_object_set_new(g, "layers", json_string(gr->name[k]));
            json_object_set_new(g, "lr_scale", json_real(gr->scale[k]));
            json_array_append_new(a, g);
        }
        json_object_set_new(o, "lr_group_table", a);
    }
    return o;
}

/* ---- hooks: metrics, progress, checkpoints, best weights ------------------------------ */

typedef struct {
    const RunConfig *c;
    const Plan *plan;
    const Dataset *ds;          /* its class names go into every weights file */
    FILE *log;
    FILE *metrics;
    int tty;
    double log_every, last_log; /* timed progress lines (not a terminal) */
    int num_classes, n_val;
    double peak;                /* best validation accuracy so far, any phase */
    int peak_phase, peak_epoch;
    int warned;                 /* the collapse since the last epoch above chance was reported */
    int *collapsed;             /* RunResult.collapsed_epoch of this phase */
    int phase, max_epochs;
    Checkpoint *ck;             /* template: prev-phase fields filled */
    char dir[1024];
    int failed;                 /* a write failed: the loop stops at the next checkpoint */
    char msg[1024];             /* the first failure, for the run's error */
} Hooks;

/* A collapse that is not a NaN: validation accuracy back at chance (1/K,
 * within a quarter of it plus one image) for an epoch after an epoch above
 * it. Warned once until the accuracy rises again; the first such epoch of
 * each phase is kept for summary.json. */
static void check_collapse(Hooks *h, const EpochStats *st)
{
    double chance = 1.0 / h->num_classes, margin = 0.25 * chance + 1.0 / h->n_val;
    if (st->val_acc > chance + margin) {
        h->warned = 0;
        if (st->val_acc > h->peak) { h->peak = st->val_acc; h->peak_phase = st->phase; h->peak_epoch = st->epoch; }
        return;
    }
    if (fabs(st->val_acc - chance) > margin || h->peak <= chance + margin || h->warned) return;
    h->warned = 1;
    if (!*h->collapsed) *h->collapsed = st->epoch;
    fprintf(h->log, "WARNING: validation accuracy %.4f is at chance (1/%d classes) at phase %d epoch %d, after %.4f "
            "at phase %d epoch %d: the run has collapsed without a NaN (a lower --lr usually avoids it); the best "
            "weights are the ones kept\n", st->val_acc, h->num_classes, st->phase + 1, st->epoch, h->peak,
            h->peak_phase + 1, h->peak_epoch);
}

/* Record a failed write (the first one's message is kept). */
static void hook_fail(Hooks *h, const char *fmt, ...)
{
    if (!h->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(h->msg, sizeof h->msg, fmt, ap);
        va_end(ap);
    }
    h->failed = 1;
}

static void hook_epoch(void *ctx, const EpochStats *st)
{
    Hooks *h = ctx;
    if (h->tty) fprintf(h->log, "\r\033[K");
    fprintf(h->log, "phase %d epoch %3d  lr %.3g  loss %.4f  train_acc %.4f  val_acc %.4f  %.0f img/s  %.1fs\n",
            st->phase + 1, st->epoch, st->lr, st->loss, st->train_acc, st->val_acc, st->train_img_per_s,
            st->elapsed_s);
    check_collapse(h, st);
    fflush(h->log);
    h->last_log = kiln_now();
    if (h->metrics) {
        fprintf(h->metrics, "%d,%d,%.9g,%.6f,%.6f,%.6f,%.1f,%.3f\n", st->epoch, st->phase + 1, st->lr, st->loss,
                st->train_acc, st->val_acc, st->train_img_per_s, st->elapsed_s);
        if (fflush(h->metrics) || ferror(h->metrics))
            hook_fail(h, "%s/metrics.csv: cannot write: %s", h->dir, strerror(errno));
    }
}

/* Progress within an epoch: a bar redrawn in place on a terminal; otherwise
 * one line every log_every seconds (images/s, running loss and accuracy, the
 * epoch's ETA), which a log file or pipe receives as it is written. */
static void hook_step(void *ctx, int epoch, int pos, int steps, double loss, double acc, double img_s)
{
    Hooks *h = ctx;
    double eta = img_s > 0 ? (double)(steps - pos) * h->plan->opt.batch / img_s : 0;
    if (!h->tty) {
        double now = kiln_now();
        if (h->log_every <= 0 || pos == steps || now - h->last_log < h->log_every) return;
        h->last_log = now;
        fprintf(h->log, "phase %d epoch %3d/%d  step %d/%d (%d%%)  %.0f img/s  loss %.4f  acc %.4f  epoch ETA %d:%02d\n",
                h->phase + 1, epoch, h->max_epochs, pos, steps, 100 * pos / steps, img_s, loss, acc, (int)eta / 60,
                (int)eta % 60);
        return;
    }
    if (pos % 4 && pos != steps) return;
    int w = 30, done = (int)((double)pos / steps * w);
    char bar[40];
    for (int i = 0; i < w; i++) bar[i] = i < done ? '=' : (i == done ? '>' : ' ');
    bar[w] = 0;
    fprintf(h->log, "\r\033[Kepoch %d/%d [%s] %3d%%  %.0f img/s  loss %.4f  acc %.4f  ETA %d:%02d",
            epoch, h->max_epochs, bar, 100 * pos / steps, img_s, loss, acc, (int)eta / 60, (int)eta % 60);
    fflush(h->log);
}

static int hook_checkpoint(void *ctx, Backend *be, const LoopState *ls)
{
    Hooks *h = ctx;
    if (!h->dir[0]) return 0;
    if (h->failed) return 1;
    Checkpoint *ck = h->ck;
    ck->phase = h->phase;
    ck->ls = *ls;
    ck->backend_step = be->get_step(be);
    be->read_params(be, ck->params);
    be->read_momentum(be, ck->momentum);
    char path[1100], err[768];
    path_in(path, sizeof path, h->dir, "last.ckpt");
    if (checkpoint_save(path, ck, err, sizeof err)) {
        hook_fail(h, "cannot write the checkpoint: %s", err);
        return 1;
    }
    return 0;
}

static void hook_best(void *ctx, const float *params, int epoch, double val)
{
    Hooks *h = ctx;
    memcpy(h->ck->best, params, sizeof(float) * h->plan->param_floats);
    h->ck->has_best = 1;
    if (!h->dir[0]) return;
    char path[1100], err[768];
    path_in(path, sizeof path, h->dir, "best.safetensors");
    if (weights_save(h->plan, params, path, h->ds->class_names, h->ds->num_classes, err, sizeof err)) hook_fail(h, "cannot write the best weights: %s", err);
}

/* ---- parameters across phases -------------------------------------------------------- */

/* Copy every parameter by name from one plan's arena to another's (the two
 * plans share a graph whose flags changed, so the arenas are ordered
 * differently). */
static void params_remap(const Plan *to, float *dst, const Plan *from, const float *src)
{
    const Graph *g = to->g;
    for (int i = 0; i < g->n_params; i++)
        memcpy(dst + to->param_off[i], src + from->param_off[i], sizeof(float) * g->params[i].numel);
}

/* ---- auto: batch from memory, LR from a range test ------------------------------------- */

static int auto_batch(Graph *g, const RunConfig *c, const char *device, int n_train, FILE *log, char *err,
                      size_t errlen)
{
    size_t budget = c->memory_budget, dfree, dtotal;
    if (!budget && !strcmp(device, "cuda") && !cuda_memory_info(&dfree, &dtotal))
        budget = dfree / 10 * 9;   /* the GPU's free memory, less a margin for cuBLAS and the context */
    if (!budget) {
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        budget = pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz / 2 : (size_t)1 << 30;
    }
    int best = 0;
    size_t best_bytes = 0;
    for (int b = 8; b <= 256 && b <= n_train; b *= 2) {
        Plan p;
        PlanOptions po = {.batch = b, .fuse = c->fuse, .fold = c->fold};
        if (plan_build(&p, g, &po, err, errlen)) return -1;
        size_t bytes = plan_bytes(&p);
        plan_free(&p);
        if (bytes > budget) break;
        best = b;
        best_bytes = bytes;
    }
    if (!best) {
        snprintf(err, errlen, "auto: even batch 8 needs more than the memory budget of %zu bytes", budget);
        return -1;
    }
    fprintf(log, "auto: batch %d, the largest power of two up to 256 whose plan (%zu bytes) fits the budget of %zu bytes\n",
            best, best_bytes, budget);
    return best;
}

/* An LR range test: from the loaded weights, steps at an LR rising
 * geometrically from 1e-5 to 1; the loss is smoothed; the pick is a tenth of
 * the LR at the smoothed minimum (before the loss climbs above 4x it).
 * Weights and momentum are restored afterwards. */
static float auto_lr(Backend *be, const DataView *dv, const PhaseConfig *pc, FILE *log)
{
    const Plan *p = be->plan;
    int B = p->opt.batch, n = dv->sp->n_train, steps = 60;
    float *saved = malloc(sizeof(float) * (p->param_floats + 1)), *mom = malloc(sizeof(float) * (p->opt_floats + 1));
    size_t rowf = dv->cache ? dv->cache->floats : p->tensors[p->input_tensor].floats / (size_t)B;
    float *x = malloc(sizeof(float) * rowf * (size_t)B);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)B);
    int *order = malloc(sizeof(int) * (size_t)(n + 1));
    float pick = 0.01f;
    if (!saved || !mom || !x || !y || !order) goto out;
    be->read_params(be, saved);
    be->read_momentum(be, mom);
    uint64_t step0 = be->get_step(be);
    memcpy(order, dv->sp->train, sizeof(int) * (size_t)n);
    uint64_t st = pc->seed ^ 0xA070u;
    kiln_shuffle(order, n, &st);
    double smooth = 0, best = INFINITY;
    float best_lr = 0;
    int ng = pc->groups ? pc->groups->n : 1;
    for (int s = 0; s < steps; s++) {
        float lr = (float)(1e-5 * pow(1e5, (double)s / (steps - 1)));
        int i = (s * B) % (n > B ? n - B : 1), m = n < B ? n : B, c = 0;
        double l;
        if (dv->cache) {
            for (int k = 0; k < m; k++) {
                memcpy(x + (size_t)k * rowf, dv->cache->data + (size_t)order[i + k] * rowf, sizeof(float) * rowf);
                y[k] = dv->ds->labels[order[i + k]];
            }
        } else {
            dataset_batch(x, y, dv->ds, order + i, m, &dv->pp);
        }
        be->upload(be, x, y, m);
        float glr[KILN_MAX_GROUPS];
        for (int k = 0; k < ng; k++) glr[k] = lr * (pc->groups ? pc->groups->scale[k] : 1.0f);
        StepConfig sc = {glr, ng, pc->momentum, pc->weight_decay};
        if (be->train_step(be, m, &sc, &l, &c)) break;
        smooth = s ? 0.8 * smooth + 0.2 * l : l;
        if (smooth < best) { best = smooth; best_lr = lr; }
        if (s > 5 && smooth > 4 * best) break;
    }
    if (best_lr > 0) pick = best_lr / 10;
    fprintf(log, "auto: LR range test over %d steps from 1e-5 to 1: smoothed loss lowest (%.4f) at lr %.3g; chose lr %.3g (a tenth of it)\n",
            steps, best, best_lr, pick);
    be->write_params(be, saved);
    be->write_momentum(be, mom);
    be->set_step(be, step0);
out:
    free(saved); free(mom); free(x); free(y); free(order);
    return pick;
}

/* ---- the run ------------------------------------------------------------------------------ */

/* When the data's images are resized to the input size, say so: as a
 * WARNING with both sizes, the compute factor and the --input-size hint when
 * the size is the arch's default, as a plain line when it was asked for. */
static void size_warning(FILE *log, const Dataset *ds, const Graph *g, int asked)
{
    const InputAttr *in = &g->layers[0].a.input;
    if (ds->src_h == in->h && ds->src_w == in->w) return;
    double factor = (double)in->h * in->w / ((double)ds->src_h * ds->src_w);
    if (asked) {
        fprintf(log, "input %dx%d (--input-size): the data's %dx%d images are resized to it, %.3gx the compute\n",
                in->h, in->w, ds->src_h, ds->src_w, factor);
        return;
    }
    fprintf(log, "WARNING: the data's images are %dx%d, %s's input is %dx%d: without --input-size every image is "
            "%s to %dx%d, %.3gx the compute of training at %dx%d. Give --input-size %dx%d to train at the data's "
            "size.\n",
            ds->src_h, ds->src_w, g->name, in->h, in->w, factor > 1 ? "upscaled" : "downscaled", in->h, in->w,
            factor, ds->src_h, ds->src_w, ds->src_h, ds->src_w);
}

typedef struct { FILE *in; int phase, epoch; } Trim;

/* metrics_trim's content: the header and the rows up to (phase, epoch). */
static int fill_trimmed(FILE *o, void *ctx)
{
    Trim *t = ctx;
    char line[512];
    int first = 1;
    while (fgets(line, sizeof line, t->in)) {
        int e, ph;
        if (first || (sscanf(line, "%d,%d", &e, &ph) == 2 && (ph - 1 < t->phase || (ph - 1 == t->phase && e <= t->epoch))))
            fputs(line, o);
        first = 0;
    }
    return ferror(t->in);
}

/* Truncate metrics.csv to the rows up to (phase, epoch), for a resumed run
 * (atomically). Returns 0, or -1 with errno set. */
static int metrics_trim(const char *path, int phase, int epoch)
{
    Trim t = {fopen(path, "r"), phase, epoch};
    if (!t.in) return errno == ENOENT ? 0 : -1;
    int rc = kiln_write_atomic(path, fill_trimmed, &t), e = errno;
    fclose(t.in);
    errno = e;
    return rc;
}

/* Where a phase stands, in the same words when a run stops and when it
 * resumes: the epoch under way (1-based) and the steps of it done. */
static void where_text(char *buf, size_t n, int phase, const LoopState *ls, int steps)
{
    snprintf(buf, n, "phase %d, epoch %d, after step %d of %d", phase + 1, ls->epoch + 1, ls->pos, steps);
}

/* plan.txt's content. */
static int fill_plan(FILE *f, void *p)
{
    plan_print(f, p, 1, 1);
    return 0;
}

int run_train(const RunConfig *c, RunShared *sh, RunResult *r, char *err, size_t errlen)
{
    RunShared local = {0};
    if (!sh) sh = &local;
    memset(r, 0, sizeof *r);
    r->cached_layer = -1;
    FILE *log = c->log ? c->log : stdout;
    double t0 = kiln_now();
    TrainSpec spec = c->spec;
    Graph g;
    Split sp = {0};
    Plan plans[2];
    Backend *be[2] = {NULL, NULL};
    float *params = NULL;
    Checkpoint ck = {0}, resume = {0};
    Hooks hk = {0};
    int have_resume = 0, nplans = 0, rc;
    char save_err[1024] = "";
    memset(plans, 0, sizeof plans);

    /* the device, once for every phase: a missing GPU fails before anything long */
    const char *device = "cpu";
    if ((rc = device_resolve(c->device, log, &device, err, errlen))) return rc;
    if ((rc = graph_load(&g, c->arch, err, errlen))) return rc;
    if (c->input_h > 0 && (rc = graph_set_input_size(&g, c->input_h, c->input_w ? c->input_w : c->input_h, err, errlen)))
        goto out_graph;
    const InputAttr *in = &g.layers[0].a.input;

    /* the run folder, before anything long happens */
    if (c->resume && c->out && strcmp(c->resume, c->out)) {
        snprintf(err, errlen, "--out %s with --resume %s: a resumed run writes to its own folder", c->out, c->resume);
        rc = 2;
        goto out_graph;
    }
    const char *dir = c->resume ? c->resume : c->out;
    if (dir && strlen(dir) > KILN_RUN_DIR_MAX) {
        /* the reason first: the path itself may not fit the message */
        snprintf(err, errlen, "run folder path too long (%zu bytes, at most %d): '%.160s...'", strlen(dir),
                 KILN_RUN_DIR_MAX, dir);
        rc = 2;
        goto out_graph;
    }
    if (dir) {
        snprintf(hk.dir, sizeof hk.dir, "%s", dir);
        char probe[1100];
        path_in(probe, sizeof probe, dir, ".write-test");
        if (kiln_mkdirs(dir) || kiln_probe_write(probe)) {
            snprintf(err, errlen, "%s: cannot write to the run folder: %s", dir, strerror(errno));
            rc = 2;
            goto out_graph;
        }
    }
    if (c->save && kiln_probe_write(c->save)) {
        snprintf(err, errlen, "%s: the final weights (--save) cannot be written there: %s", c->save, strerror(errno));
        rc = 2;
        goto out_graph;
    }
    if (c->resume) {
        char path[1100];
        path_in(path, sizeof path, c->resume, "last.ckpt");
        if ((rc = checkpoint_load(path, &resume, err, errlen))) goto out_graph;
        if (strcmp(resume.arch, g.name)) {
            snprintf(err, errlen, "%s: a checkpoint of architecture '%s', not '%s'", path, resume.arch, g.name);
            rc = 2;
            goto out_graph;
        }
        have_resume = 1;
    }

    /* data, shared across the trials of a sweep */
    char key[1024];
    snprintf(key, sizeof key, "%s|%dx%dx%d|%d|%llu", c->data, in->h, in->w, in->c, c->per_class,
             (unsigned long long)spec.seed);
    if (!sh->have_ds || strcmp(sh->ds_key, key)) {
        if (sh->have_ds) dataset_free(&sh->ds);
        sh->have_ds = sh->have_ds_crc = 0;
        feature_cache_free(&sh->cache);
        sh->cache_key[0] = 0;
        DataOptions dopt = {in->h, in->w, in->c, c->per_class, spec.seed};
        if ((rc = dataset_open(&sh->ds, c->data, &dopt, err, errlen))) goto out_graph;
        sh->have_ds = 1;
        snprintf(sh->ds_key, sizeof sh->ds_key, "%s", key);
    }
    Dataset *ds = &sh->ds;
    if (c->num_classes && c->num_classes != ds->num_classes) {
        snprintf(err, errlen, "%s: the data set has %d classes, --num-classes says %d", c->data, ds->num_classes,
                 c->num_classes);
        rc = 2;
        goto out_graph;
    }
    if (dataset_split(ds, spec.seed, &sp)) { snprintf(err, errlen, "out of memory"); rc = 1; goto out_graph; }
    if (sp.n_train < 1 || sp.n_val < 1 || sp.n_test < 1) {
        snprintf(err, errlen, "%s: too few images to split (train %d, val %d, test %d)", c->data, sp.n_train,
                 sp.n_val, sp.n_test);
        rc = 2;
        goto out_split;
    }
    int h = graph_head(&g);
    if (h >= 0 && g.layers[h].out.c != ds->num_classes &&
        (rc = graph_set_num_classes(&g, ds->num_classes, err, errlen)))
        goto out_split;
    fprintf(log, "data %s: %d images %dx%dx%d, %d classes; split train %d / val %d / test %d\n", ds->source,
            ds->n, ds->h, ds->w, ds->c, ds->num_classes, sp.n_train, sp.n_val, sp.n_test);
    size_warning(log, ds, &g, c->input_h > 0);
    warn_coarse_split(log, "validation", sp.n_val);
    warn_coarse_split(log, "test", sp.n_test);

    Preproc pp = {in->scale, {in->mean[0], in->mean[1], in->mean[2], in->mean[3]},
                  {in->std[0], in->std[1], in->std[2], in->std[3]}};
    int phases = strategy_phases(&spec);
    r->phases = phases;
    LrGroups groups;
    if (spec.strategy == STRAT_AUTO && !have_resume) {
        if ((rc = strategy_apply(&spec, 0, &g, &groups, err, errlen))) goto out_split;
        int b = auto_batch(&g, c, device, sp.n_train, log, err, errlen);
        if (b < 0) { rc = 2; goto out_split; }
        spec.batch = b;
    }
    r->batch = spec.batch;
    if (dir) {
        if (!sh->have_ds_crc) sh->ds_crc = resume_data_crc(ds), sh->have_ds_crc = 1;
        if ((rc = resume_settings(ck.settings, sizeof ck.settings, c, &spec, in, ds, sh->ds_crc, err, errlen)))
            goto out_split;
    }
    if (have_resume) {
        char path[1100], diff[1536];
        path_in(path, sizeof path, c->resume, "last.ckpt");
        if (checkpoint_settings_diff(resume.settings, ck.settings, diff, sizeof diff)) {
            snprintf(err, errlen, "%s: the run was made with other settings, which a resume cannot change (checkpoint "
                     "-> now): %s", path, diff);
            rc = 2;
            goto out_split;
        }
        CheckpointRun cr = {phases, spec.max_epochs, (sp.n_train + spec.batch - 1) / spec.batch, spec.batch,
                            sp.n_train, spec.max_rollbacks};
        if ((rc = checkpoint_fits(&resume, &cr, path, err, errlen))) goto out_split;
        if (resume_finished(c->resume, &resume, phases, spec.max_epochs, c->save, log, r)) { rc = 0; goto out_split; }
    }

    /* metrics and config files */
    if (dir && !have_resume) {
        char path[1100];
        if ((rc = strategy_apply(&spec, 0, &g, &groups, err, errlen))) goto out_split;
        json_t *cfg = spec_json(c, &spec, &groups, in, ds);
        path_in(path, sizeof path, dir, "config.json");
        int bad = kiln_write_json(path, cfg);
        json_decref(cfg);
        if (bad) { snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno)); rc = 1; goto out_split; }
    }
    if (dir) {
        char path[1100];
        path_in(path, sizeof path, dir, "metrics.csv");
        if (have_resume && metrics_trim(path, resume.phase, resume.ls.epoch)) {
            snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
            rc = 1;
            goto out_split;
        }
        hk.metrics = fopen(path, have_resume ? "a" : "w");
        if (!hk.metrics) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); rc = 1; goto out_split; }
        if (!fseek(hk.metrics, 0, SEEK_END) && ftell(hk.metrics) == 0)   /* new (or, on resume, missing) */
            fprintf(hk.metrics, "epoch,phase,lr,loss,train_acc,val_acc,train_img_per_s,elapsed_s\n");
        if (fflush(hk.metrics) || ferror(hk.metrics)) {
            snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
            rc = 1;
            goto out_split;
        }
    }
    r->setup_seconds = kiln_now() - t0;

    DataView dv = {ds, &sp, pp, NULL};
    long steps_done = 0;        /* by this call, for stop_after_steps */
    for (int ph = 0; ph < phases; ph++) {
        if ((rc = strategy_apply(&spec, ph, &g, &groups, err, errlen))) goto out_plans;
        PlanOptions po = {.batch = spec.batch, .fuse = c->fuse, .fold = c->fold};
        if ((rc = plan_build(&plans[ph], &g, &po, err, errlen))) goto out_plans;
        nplans = ph + 1;
        Plan *p = &plans[ph];
        be[ph] = c->make_backend ? c->make_backend(p, c->make_backend_ctx, err, errlen)
                                 : backend_create(device, p, &c->cuda, err, errlen);
        if (!be[ph]) { rc = 1; goto out_plans; }
        free(params);
        if (!(params = malloc(sizeof(float) * (p->param_floats + 1)))) { snprintf(err, errlen, "out of memory"); rc = 1; goto out_plans; }
        if (ph == 0) {
            params_init(p, params, spec.seed, 0, g.n_layers - 1);
            if (c->weights) {
                WeightsReport wr;
                if ((rc = weights_load(p, params, c->weights, &wr, log, err, errlen))) goto out_plans;
                int hh = graph_head(&g);
                fprintf(log, "weights %s: %d tensors loaded", c->weights, wr.loaded);
                if (have_resume)
                    fprintf(log, "; the parameters of %s/last.ckpt replace them\n", c->resume);
                else if (wr.head_replaced && wr.head_from)
                    fprintf(log, "; head '%s' replaced: %d -> %d classes, fresh He init\n", g.layers[hh].name,
                            wr.head_from, ds->num_classes);
                else if (wr.head_replaced)
                    fprintf(log, "; head '%s' not in the file: fresh He init for %d classes\n", g.layers[hh].name,
                            ds->num_classes);
                else
                    fprintf(log, "\n");
            }
        } else {
            float *prev = malloc(sizeof(float) * (plans[0].param_floats + 1));
            if (!prev) { snprintf(err, errlen, "out of memory"); rc = 1; goto out_plans; }
            be[0]->read_params(be[0], prev);
            params_remap(p, params, &plans[0], prev);
            free(prev);
            be[0]->destroy(be[0]);
            be[0] = NULL;
        }
        be[ph]->write_params(be[ph], params);
        if (ph == 0 && dir) {
            char path[1100];
            path_in(path, sizeof path, dir, "plan.txt");
            if (kiln_write_atomic(path, fill_plan, p)) {
                snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
                rc = 1;
                goto out_plans;
            }
        }
        r->plan_bytes = plan_bytes(p);
        r->trainable = p->trainable_floats;
        fprintf(log, "phase %d: %s, %zu of %zu learnable parameters train, plan %zu bytes, batch %d, backend %s\n",
                ph + 1, strategy_name(spec.strategy), p->trainable_floats, graph_learnable(&g), plan_bytes(p),
                spec.batch, be[ph]->name);

        /* resuming into a later phase: skip this one */
        if (have_resume && resume.phase > ph) {
            r->epochs[ph] = resume.prev_epochs;
            r->best_epoch[ph] = resume.prev_best_epoch;
            r->phase_seconds[ph] = resume.prev_seconds;
            continue;
        }

        /* the frozen prefix's features, computed once */
        double cache_t = 0;
        dv.cache = NULL;
        int cut = c->cache ? plan_find_cut(p, c->cache_limit / sizeof(float) / (size_t)ds->n) : -1;
        if (cut > 0) {
            char ckey[1024];
            snprintf(ckey, sizeof ckey, "%.400s|%.300s|%.300s|%d", key, c->arch, c->weights ? c->weights : "-", cut);
            if (ph == 0 && !strcmp(ckey, sh->cache_key)) {
                fprintf(log, "features of '%s' (%zu floats per image) reused from an earlier trial\n",
                        g.layers[cut].name, sh->cache.floats);
            } else {
                feature_cache_free(&sh->cache);
                sh->cache_key[0] = 0;
                if (feature_cache_build(&sh->cache, be[ph], ds, &pp, cut)) {
                    snprintf(err, errlen, "out of memory building the feature cache");
                    rc = 1;
                    goto out_plans;
                }
                cache_t = sh->cache.seconds;
                if (ph == 0) memcpy(sh->cache_key, ckey, sizeof ckey);
                fprintf(log, "features of '%s' (%zu floats per image) cached for %d images in %.1fs: epochs run only the trainable part\n",
                        g.layers[cut].name, sh->cache.floats, ds->n, cache_t);
            }
            dv.cache = &sh->cache;
            r->cached_layer = cut;
        }
        r->cache_seconds += cache_t;

        PhaseConfig pc = {ph, spec.max_epochs, spec.momentum, spec.weight_decay, &groups, spec.on_diverge,
                          spec.max_rollbacks, spec.warmup_epochs > 0, spec.seed,
                          c->stop_after_steps ? c->stop_after_steps - steps_done : 0, NULL, log};
        if (spec.strategy == STRAT_AUTO && !have_resume) {
            be[ph]->set_entry(be[ph], dv.cache ? dv.cache->cut : 0);
            spec.lr = auto_lr(be[ph], &dv, &pc, log);
        }
        r->lr = spec.lr;              /* the run's LR; phase 2 runs at lr * finetune_factor */
        int steps = (sp.n_train + spec.batch - 1) / spec.batch;
        LoopState ls;
        memset(&ls, 0, sizeof ls);
        strategy_schedule(&ls.sched, &spec, ph, spec.lr, steps);
        ls.seconds = cache_t;
        ck.param_floats = p->param_floats;
        ck.opt_floats = p->opt_floats;
        snprintf(ck.arch, sizeof ck.arch, "%s", g.name);
        free(ck.params); free(ck.momentum); free(ck.best);
        ck.params = malloc(sizeof(float) * (p->param_floats + 1));
        ck.momentum = malloc(sizeof(float) * (p->opt_floats + 1));
        ck.best = malloc(sizeof(float) * (p->param_floats + 1));
        ck.has_best = 0;
        if (!ck.params || !ck.momentum || !ck.best) { snprintf(err, errlen, "out of memory"); rc = 1; goto out_plans; }
        if (ph == 1) {
            ck.prev_epochs = r->epochs[0];
            ck.prev_best_epoch = r->best_epoch[0];
            ck.prev_seconds = r->phase_seconds[0];
        }
        if (have_resume && resume.phase == ph) {
            if (resume.param_floats != p->param_floats || resume.opt_floats != p->opt_floats) {
                snprintf(err, errlen, "%s/last.ckpt: params, momentum: %zu and %zu values, but this plan has %zu and %zu: the checkpoint does not fit this run",
                         c->resume, resume.param_floats, resume.opt_floats, p->param_floats, p->opt_floats);
                rc = 2;
                goto out_plans;
            }
            be[ph]->write_params(be[ph], resume.params);
            be[ph]->write_momentum(be[ph], resume.momentum);
            be[ph]->set_step(be[ph], resume.backend_step);
            Schedule cfg = ls.sched;
            ls = resume.ls;
            /* configuration comes from the command line, state from the file */
            ls.sched.plateau_patience = cfg.plateau_patience;
            ls.sched.plateau_factor = cfg.plateau_factor;
            ls.sched.min_lr = cfg.min_lr;
            ls.sched.patience = cfg.patience;
            if (resume.has_best) { memcpy(ck.best, resume.best, sizeof(float) * p->param_floats); ck.has_best = 1; pc.resume_best = ck.best; }
            ck.prev_epochs = resume.prev_epochs;
            ck.prev_best_epoch = resume.prev_best_epoch;
            ck.prev_seconds = resume.prev_seconds;
            char at[96];
            where_text(at, sizeof at, ph, &ls, steps);
            fprintf(log, "resumed from %s/last.ckpt at %s\n", c->resume, at);
            /* recorded once the checkpoint's state is in the backend: a resume
             * refused before this point leaves no entry */
            if (dir && (rc = resume_record(dir, c, &spec, &resume, device, err, errlen))) goto out_plans;
        }
        hk.c = c; hk.plan = p; hk.ds = ds; hk.log = log; hk.tty = c->progress && isatty(fileno(log));
        hk.log_every = c->log_every; hk.last_log = kiln_now();
        hk.num_classes = ds->num_classes; hk.n_val = sp.n_val; hk.collapsed = &r->collapsed_epoch[ph];
        hk.phase = ph; hk.max_epochs = spec.max_epochs; hk.ck = &ck;
        LoopHooks hooks = {hook_epoch, hook_step, hook_checkpoint, hook_best, &hk};
        PhaseResult pr;
        if (train_phase(be[ph], &dv, &pc, &ls, &hooks, &pr)) {
            snprintf(err, errlen, "%s", hk.failed ? hk.msg : "out of memory in the training loop");
            rc = 1;
            goto out_plans;
        }
        if (hk.tty) fprintf(log, "\r\033[K");
        steps_done += pr.steps_run;
        r->epochs[ph] = pr.epochs;
        r->best_epoch[ph] = pr.best_epoch;
        r->phase_seconds[ph] = pr.seconds;
        r->rollbacks += pr.rollbacks;
        r->val_acc = pr.best_val;
        if (pr.interrupted) {
            r->interrupted = 1;
            char at[96];
            where_text(at, sizeof at, ph, &ls, steps);
            fprintf(log, "interrupted at %s%s%s\n", at, dir ? ": checkpoint written; continue with --resume " : "",
                    dir ? dir : "");
            rc = 130;
            goto out_plans;
        }
        if (pr.diverged) {
            r->diverged = 1;
            r->div_epoch = pr.div_epoch;
            r->div_step = pr.div_step;
            r->div_lr = pr.div_lr;
            phases = ph + 1;
            r->phases = phases;
        }
    }
    {
        int last = r->phases - 1;
        Backend *b = be[last];
        r->train_seconds = r->phase_seconds[0] + (r->phases > 1 ? r->phase_seconds[1] : 0);
        r->test_acc = evaluate_set(b, &dv, sp.test, sp.n_test, NULL);
        if (c->save) {              /* a failure is reported after the summary is written */
            float *fin = malloc(sizeof(float) * (plans[last].param_floats + 1));
            if (!fin) snprintf(save_err, sizeof save_err, "%s: out of memory for the final weights", c->save);
            if (fin) b->read_params(b, fin);
            if (fin && weights_save(&plans[last], fin, c->save, ds->class_names, ds->num_classes, save_err, sizeof save_err) && !save_err[0])
                snprintf(save_err, sizeof save_err, "%s: cannot write the final weights", c->save);
            free(fin);
        }
        if (r->diverged)
            fprintf(log, "result: DIVERGED at epoch %d step %d (lr %g); test_acc %.4f of the last good weights, train time %.2fs\n",
                    r->div_epoch, r->div_step, r->div_lr, r->test_acc, r->train_seconds);
        else
        {
            char ep[32];
            if (r->phases > 1) snprintf(ep, sizeof ep, "%d+%d", r->epochs[0], r->epochs[1]);
            else snprintf(ep, sizeof ep, "%d", r->epochs[0]);
            fprintf(log, "result: test_acc %.4f  val_acc %.4f  epochs %s  train time %.2fs (setup %.2fs apart%s)\n",
                    r->test_acc, r->val_acc, ep, r->train_seconds, r->setup_seconds,
                    r->cache_seconds > 0 ? ", feature caching included" : "");
        }
    }
    if (dir) {
        char path[1100];
        int bad = 0, cfg_errno = 0;
        if (!have_resume) {         /* with auto's choices; a resume keeps the run's own */
            json_t *cfg = spec_json(c, &spec, &groups, in, ds);
            path_in(path, sizeof path, dir, "config.json");
            bad = kiln_write_json(path, cfg);
            cfg_errno = errno;
            json_decref(cfg);
        }
        json_t *s = json_object();
        json_object_set_new(s, "arch", json_string(g.name));
        json_object_set_new(s, "strategy", json_string(strategy_name(spec.strategy)));
        json_object_set_new(s, "data", json_string(ds->source));
        json_t *cls = classes_json(ds->class_names, ds->num_classes);
        json_object_set_new(s, "classes", cls ? cls : json_null());
        json_object_set_new(s, "num_classes", json_integer(ds->num_classes));
        json_object_set_new(s, "images", json_pack("{s:i,s:i,s:i}", "train", sp.n_train, "val", sp.n_val,
                                                   "test", sp.n_test));
        json_object_set_new(s, "lr", json_real(r->lr));
        json_object_set_new(s, "batch", json_integer(spec.batch));
        json_object_set_new(s, "diverged", json_boolean(r->diverged));
        if (r->diverged) {
            json_object_set_new(s, "diverged_epoch", json_integer(r->div_epoch));
            json_object_set_new(s, "diverged_step", json_integer(r->div_step));
            json_object_set_new(s, "diverged_lr", json_real(r->div_lr));
        }
        json_object_set_new(s, "test_acc", json_real(r->test_acc));
        json_object_set_new(s, "val_acc", json_real(r->val_acc));
        json_object_set_new(s, "train_seconds", json_real(r->train_seconds));
        json_object_set_new(s, "setup_seconds", json_real(r->setup_seconds));
        json_object_set_new(s, "cache_seconds", json_real(r->cache_seconds));
        json_t *pa = json_array();
        for (int k = 0; k < r->phases; k++) {
            json_t *o = json_object();
            json_object_set_new(o, "epochs", json_integer(r->epochs[k]));
            json_object_set_new(o, "best_epoch", json_integer(r->best_epoch[k]));
            json_object_set_new(o, "seconds", json_real(r->phase_seconds[k]));
            json_object_set_new(o, "collapsed_epoch",
                                r->collapsed_epoch[k] ? json_integer(r->collapsed_epoch[k]) : json_null());
            json_array_append_new(pa, o);
        }
        json_object_set_new(s, "phases", pa);
        json_object_set_new(s, "rollbacks", json_integer(r->rollbacks));
        json_object_set_new(s, "plan_bytes", json_integer((json_int_t)r->plan_bytes));
        json_object_set_new(s, "trainable_parameters", json_integer((json_int_t)r->trainable));
        json_object_set_new(s, "cached_layer", r->cached_layer >= 0 ? json_string(g.layers[r->cached_layer].name) : json_null());
        path_in(path, sizeof path, dir, "summary.json");
        int sbad = kiln_write_json(path, s);
        if (sbad) snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        else if (bad) snprintf(err, errlen, "%s/config.json: cannot write: %s", dir, strerror(cfg_errno));
        json_decref(s);
        if (sbad || bad) { rc = 1; goto out_plans; }
    }
    if (save_err[0]) { snprintf(err, errlen, "%s", save_err); rc = 1; goto out_plans; }
    rc = 0;
out_plans:
    for (int k = 0; k < 2; k++)
        if (be[k]) be[k]->destroy(be[k]);
    for (int k = 0; k < nplans; k++) plan_free(&plans[k]);
    free(params);
    checkpoint_free(&ck);
    if (hk.metrics && fclose(hk.metrics) && rc == 0) {
        snprintf(err, errlen, "%s/metrics.csv: cannot write: %s", dir, strerror(errno));
        rc = 1;
    }
out_split:
    split_free(&sp);
out_graph:
    checkpoint_free(&resume);
    graph_free(&g);
    if (sh == &local) run_shared_free(&local);
    return rc;
}
