/* runtime/run_phase.c — the phase loop of run_train (see run_state.h): for
 * each phase of the strategy, its plan and backend, its starting parameters
 * (initialized and loaded for the first, carried over by name from the first
 * for the second), the frozen prefix's feature cache, the loop state (fresh,
 * or the checkpoint's when the resume lands in this phase), and
 * train_phase (runtime/train.c) with the hooks that turn its events into the
 * log, metrics.csv rows, last.ckpt and best.safetensors.
 *
 * Invariant: the checkpoint written at each epoch end (R->ck) always holds
 * the current phase's state and the finished phase's results, so a resume
 * can land in either phase. */
#include "runtime/run_state.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/device.h"
#include "runtime/params.h"
#include "runtime/resume.h"
#include "runtime/weights.h"

/* ---- hooks: metrics, progress, checkpoints, best weights ------------------------------ */

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

/* An epoch ended: its line on the log, the collapse check, its row in metrics.csv. */
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

/* dir/last.ckpt from the backend's state and the loop's (nothing without a
 * folder). Non-zero, which stops the loop, after any failed write. */
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
    run_path(path, sizeof path, h->dir, "last.ckpt");
    if (checkpoint_save(path, ck, err, sizeof err)) {
        hook_fail(h, "cannot write the checkpoint: %s", err);
        return 1;
    }
    return 0;
}

/* Validation improved: the weights kept in the checkpoint's best copy and
 * written to dir/best.safetensors (with the class names). */
static void hook_best(void *ctx, const float *params, int epoch, double val)
{
    Hooks *h = ctx;
    memcpy(h->ck->best, params, sizeof(float) * h->plan->param_floats);
    h->ck->has_best = 1;
    if (!h->dir[0]) return;
    char path[1100], err[768];
    run_path(path, sizeof path, h->dir, "best.safetensors");
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

/* ---- one phase, step by step ----------------------------------------------------------- */

void where_text(char *buf, size_t n, int phase, const LoopState *ls, int steps)
{
    snprintf(buf, n, "phase %d, epoch %d, after step %d of %d", phase + 1, ls->epoch + 1, ls->pos, steps);
}

/* The strategy's flags for phase ph on R->g, its plan (R->plans[ph]) and its
 * backend (R->be[ph]: RunConfig.make_backend's, or one on R->device). */
static int phase_build(Run *R, int ph)
{
    const RunConfig *c = R->c;
    int rc;
    if ((rc = strategy_apply(&R->spec, ph, &R->g, &R->groups, R->err, R->errlen))) return rc;
    PlanOptions po = {.batch = R->spec.batch, .fuse = c->fuse, .fold = c->fold};
    if ((rc = plan_build(&R->plans[ph], &R->g, &po, R->err, R->errlen))) return rc;
    R->nplans = ph + 1;
    Plan *p = &R->plans[ph];
    R->be[ph] = c->make_backend ? c->make_backend(p, c->make_backend_ctx, R->err, R->errlen)
                                : backend_create(R->device, p, &c->cuda, R->err, R->errlen);
    return R->be[ph] ? 0 : 1;
}

/* The first phase's parameters into R->params: He init from the seed, then
 * --weights when given (the log says what was loaded and what happened to
 * the head; on resume the checkpoint's replace them later). */
static int start_weights(Run *R, const Plan *p)
{
    const RunConfig *c = R->c;
    const Graph *g = &R->g;
    FILE *log = R->log;
    params_init(p, R->params, R->spec.seed, 0, g->n_layers - 1);
    if (!c->weights) return 0;
    WeightsReport wr;
    int rc;
    if ((rc = weights_load(p, R->params, c->weights, &wr, log, R->err, R->errlen))) return rc;
    int hh = graph_head(g);
    fprintf(log, "weights %s: %d tensors loaded", c->weights, wr.loaded);
    if (R->have_resume)
        fprintf(log, "; the parameters of %s/last.ckpt replace them\n", c->resume);
    else if (wr.head_replaced && wr.head_from)
        fprintf(log, "; head '%s' replaced: %d -> %d classes, fresh He init\n", g->layers[hh].name,
                wr.head_from, R->ds->num_classes);
    else if (wr.head_replaced)
        fprintf(log, "; head '%s' not in the file: fresh He init for %d classes\n", g->layers[hh].name,
                R->ds->num_classes);
    else
        fprintf(log, "\n");
    return 0;
}

/* Phase ph's starting parameters into its backend: start_weights for the
 * first, the first phase's final ones (remapped by name) for the second,
 * whose backend is then the only one left. With a folder, the first plan
 * goes to plan.txt. Ends with the phase's line on the log. */
static int phase_params(Run *R, int ph)
{
    Plan *p = &R->plans[ph];
    Backend **be = R->be;
    int rc;
    free(R->params);
    if (!(R->params = malloc(sizeof(float) * (p->param_floats + 1)))) {
        snprintf(R->err, R->errlen, "out of memory");
        return 1;
    }
    if (ph == 0) {
        if ((rc = start_weights(R, p))) return rc;
    } else {
        float *prev = malloc(sizeof(float) * (R->plans[0].param_floats + 1));
        if (!prev) { snprintf(R->err, R->errlen, "out of memory"); return 1; }
        be[0]->read_params(be[0], prev);
        params_remap(p, R->params, &R->plans[0], prev);
        free(prev);
        be[0]->destroy(be[0]);
        be[0] = NULL;
    }
    be[ph]->write_params(be[ph], R->params);
    if (ph == 0 && R->dir && (rc = folder_write_plan(R, p))) return rc;
    R->r->plan_bytes = plan_bytes(p);
    R->r->trainable = p->trainable_floats;
    fprintf(R->log, "phase %d: %s, %zu of %zu learnable parameters train, plan %zu bytes, batch %d, backend %s\n",
            ph + 1, strategy_name(R->spec.strategy), p->trainable_floats, graph_learnable(&R->g), plan_bytes(p),
            R->spec.batch, be[ph]->name);
    return 0;
}

/* The frozen prefix's features, computed once (R->dv.cache): when caching
 * is on and the plan has a cut whose features fit cache_limit. A sweep's
 * first phase reuses the cache of an earlier trial with the same data, arch,
 * weights and cut. *cache_t: the seconds spent building it (0 if reused). */
static int phase_cache(Run *R, int ph, double *cache_t)
{
    const RunConfig *c = R->c;
    RunShared *sh = R->sh;
    const Dataset *ds = R->ds;
    const Plan *p = &R->plans[ph];
    *cache_t = 0;
    R->dv.cache = NULL;
    int cut = c->cache ? plan_find_cut(p, c->cache_limit / sizeof(float) / (size_t)ds->n) : -1;
    if (cut <= 0) return 0;
    char ckey[1024];
    snprintf(ckey, sizeof ckey, "%.400s|%.300s|%.300s|%d", R->key, c->arch, c->weights ? c->weights : "-", cut);
    if (ph == 0 && !strcmp(ckey, sh->cache_key)) {
        fprintf(R->log, "features of '%s' (%zu floats per image) reused from an earlier trial\n",
                R->g.layers[cut].name, sh->cache.floats);
    } else {
        feature_cache_free(&sh->cache);
        sh->cache_key[0] = 0;
        if (feature_cache_build(&sh->cache, R->be[ph], ds, &R->pp, cut)) {
            snprintf(R->err, R->errlen, "out of memory building the feature cache");
            return 1;
        }
        *cache_t = sh->cache.seconds;
        if (ph == 0) memcpy(sh->cache_key, ckey, sizeof ckey);
        fprintf(R->log, "features of '%s' (%zu floats per image) cached for %d images in %.1fs: epochs run only "
                "the trainable part\n", R->g.layers[cut].name, sh->cache.floats, ds->n, *cache_t);
    }
    R->dv.cache = &sh->cache;
    R->r->cached_layer = cut;
    return 0;
}

/* A fresh start of phase ph: auto's LR (range test) when it is to be chosen,
 * the schedule into ls, and R->ck sized for this plan, holding the finished
 * first phase's results when ph is the second. */
static int phase_fresh_state(Run *R, int ph, const PhaseConfig *pc, LoopState *ls, int steps, double cache_t)
{
    TrainSpec *spec = &R->spec;
    Checkpoint *ck = &R->ck;
    const Plan *p = &R->plans[ph];
    if (spec->strategy == STRAT_AUTO && !R->have_resume) {
        R->be[ph]->set_entry(R->be[ph], R->dv.cache ? R->dv.cache->cut : 0);
        spec->lr = auto_lr(R->be[ph], &R->dv, pc, R->log);
    }
    R->r->lr = spec->lr;              /* the run's LR; phase 2 runs at lr * finetune_factor */
    memset(ls, 0, sizeof *ls);
    strategy_schedule(&ls->sched, spec, ph, spec->lr, steps);
    ls->seconds = cache_t;
    ck->param_floats = p->param_floats;
    ck->opt_floats = p->opt_floats;
    snprintf(ck->arch, sizeof ck->arch, "%s", R->g.name);
    free(ck->params); free(ck->momentum); free(ck->best);
    ck->params = malloc(sizeof(float) * (p->param_floats + 1));
    ck->momentum = malloc(sizeof(float) * (p->opt_floats + 1));
    ck->best = malloc(sizeof(float) * (p->param_floats + 1));
    ck->has_best = 0;
    if (!ck->params || !ck->momentum || !ck->best) { snprintf(R->err, R->errlen, "out of memory"); return 1; }
    if (ph == 1) {
        ck->prev_epochs = R->r->epochs[0];
        ck->prev_best_epoch = R->r->best_epoch[0];
        ck->prev_seconds = R->r->phase_seconds[0];
    }
    return 0;
}

/* The resume lands in phase ph: the checkpoint's parameters, momentum, step
 * counter and loop state go into the backend and ls (the schedule's
 * configuration stays the command line's), its best weights into R->ck and
 * pc, its first phase's results into R->ck; the log says where it resumed and
 * resumes.json records it. 2 when the checkpoint does not fit this plan. */
static int phase_resume(Run *R, int ph, PhaseConfig *pc, LoopState *ls, int steps)
{
    const Checkpoint *k = &R->resume;
    Checkpoint *ck = &R->ck;
    const Plan *p = &R->plans[ph];
    Backend *be = R->be[ph];
    if (k->param_floats != p->param_floats || k->opt_floats != p->opt_floats) {
        snprintf(R->err, R->errlen, "%s/last.ckpt: params, momentum: %zu and %zu values, but this plan has %zu and "
                 "%zu: the checkpoint does not fit this run", R->c->resume, k->param_floats, k->opt_floats,
                 p->param_floats, p->opt_floats);
        return 2;
    }
    be->write_params(be, k->params);
    be->write_momentum(be, k->momentum);
    be->set_step(be, k->backend_step);
    Schedule cfg = ls->sched;
    *ls = k->ls;
    /* configuration comes from the command line, state from the file */
    ls->sched.plateau_patience = cfg.plateau_patience;
    ls->sched.plateau_factor = cfg.plateau_factor;
    ls->sched.min_lr = cfg.min_lr;
    ls->sched.patience = cfg.patience;
    if (k->has_best) {
        memcpy(ck->best, k->best, sizeof(float) * p->param_floats);
        ck->has_best = 1;
        pc->resume_best = ck->best;
    }
    ck->prev_epochs = k->prev_epochs;
    ck->prev_best_epoch = k->prev_best_epoch;
    ck->prev_seconds = k->prev_seconds;
    char at[96];
    where_text(at, sizeof at, ph, ls, steps);
    fprintf(R->log, "resumed from %s/last.ckpt at %s\n", R->c->resume, at);
    /* recorded once the checkpoint's state is in the backend: a resume
     * refused before this point leaves no entry */
    if (R->dir) return resume_record(R->dir, R->c, &R->spec, k, R->device, R->err, R->errlen);
    return 0;
}

/* The loop itself (train_phase) with the hooks pointed at this phase, and
 * its results into R->r: 130 when it was interrupted, a divergence making
 * this the run's last phase. */
static int phase_train(Run *R, int ph, const PhaseConfig *pc, LoopState *ls, int steps)
{
    const RunConfig *c = R->c;
    RunResult *r = R->r;
    Hooks *hk = &R->hk;
    FILE *log = R->log;
    hk->c = c; hk->plan = &R->plans[ph]; hk->ds = R->ds; hk->log = log; hk->tty = c->progress && isatty(fileno(log));
    hk->log_every = c->log_every; hk->last_log = kiln_now();
    hk->num_classes = R->ds->num_classes; hk->n_val = R->sp.n_val; hk->collapsed = &r->collapsed_epoch[ph];
    hk->phase = ph; hk->max_epochs = R->spec.max_epochs; hk->ck = &R->ck;
    LoopHooks hooks = {hook_epoch, hook_step, hook_checkpoint, hook_best, hk};
    PhaseResult pr;
    if (train_phase(R->be[ph], &R->dv, pc, ls, &hooks, &pr)) {
        snprintf(R->err, R->errlen, "%s", hk->failed ? hk->msg : "out of memory in the training loop");
        return 1;
    }
    if (hk->tty) fprintf(log, "\r\033[K");
    R->steps_done += pr.steps_run;
    r->epochs[ph] = pr.epochs;
    r->best_epoch[ph] = pr.best_epoch;
    r->phase_seconds[ph] = pr.seconds;
    r->rollbacks += pr.rollbacks;
    r->val_acc = pr.best_val;
    if (pr.interrupted) {
        r->interrupted = 1;
        char at[96];
        where_text(at, sizeof at, ph, ls, steps);
        fprintf(log, "interrupted at %s%s%s\n", at, R->dir ? ": checkpoint written; continue with --resume " : "",
                R->dir ? R->dir : "");
        return 130;
    }
    if (pr.diverged) {
        r->diverged = 1;
        r->div_epoch = pr.div_epoch;
        r->div_step = pr.div_step;
        r->div_lr = pr.div_lr;
        R->phases = ph + 1;
        r->phases = R->phases;
    }
    return 0;
}

int phase_run(Run *R, int ph)
{
    const TrainSpec *spec = &R->spec;
    RunResult *r = R->r;
    int rc;
    if ((rc = phase_build(R, ph)) || (rc = phase_params(R, ph))) return rc;
    if (R->have_resume && R->resume.phase > ph) {   /* resuming into a later phase: this one is done */
        r->epochs[ph] = R->resume.prev_epochs;
        r->best_epoch[ph] = R->resume.prev_best_epoch;
        r->phase_seconds[ph] = R->resume.prev_seconds;
        return 0;
    }
    double cache_t;
    if ((rc = phase_cache(R, ph, &cache_t))) return rc;
    r->cache_seconds += cache_t;
    PhaseConfig pc = {ph, spec->max_epochs, spec->momentum, spec->weight_decay, &R->groups, spec->on_diverge,
                      spec->max_rollbacks, spec->warmup_epochs > 0, spec->seed,
                      R->c->stop_after_steps ? R->c->stop_after_steps - R->steps_done : 0, NULL, R->log};
    int steps = (R->sp.n_train + spec->batch - 1) / spec->batch;
    LoopState ls;
    if ((rc = phase_fresh_state(R, ph, &pc, &ls, steps, cache_t))) return rc;
    if (R->have_resume && R->resume.phase == ph && (rc = phase_resume(R, ph, &pc, &ls, steps))) return rc;
    return phase_train(R, ph, &pc, &ls, steps);
}
