/* runtime/train.c — the training loop (see train.h).
 *
 * Batches are made on the host (from the uint8 table, or gathered from a
 * feature cache) and uploaded; the backend never sees the data set. With a
 * backend that can launch a step and wait for it apart (the GPU), batch k+1
 * is made and uploaded while step k runs. At each epoch start the loop keeps
 * a copy of parameters, momentum and its own state: the last good state that
 * a rollback restores, and what a diverged run ends with when no epoch
 * improved. A resumed epoch keeps the state it resumed from instead, as
 * there is no epoch start to go back to.
 */
#include "runtime/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

volatile int kiln_interrupted = 0;

double kiln_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Floats in one batch row as uploaded: an image, or a cached feature row. */
static size_t row_floats(const Backend *be, const DataView *dv)
{
    const Plan *p = be->plan;
    if (dv->cache) return dv->cache->floats;
    return p->tensors[p->input_tensor].floats / (size_t)p->opt.batch;
}

/* Fill x, y with rows idx[0..n). */
static void make_batch(float *x, int32_t *y, const DataView *dv, const int *idx, int n)
{
    if (!dv->cache) {
        dataset_batch(x, y, dv->ds, idx, n, &dv->pp);
        return;
    }
    size_t f = dv->cache->floats;
    for (int i = 0; i < n; i++) {
        memcpy(x + (size_t)i * f, dv->cache->data + (size_t)idx[i] * f, sizeof(float) * f);
        y[i] = dv->ds->labels[idx[i]];
    }
}

double evaluate_set(Backend *be, const DataView *dv, const int *idx, int n, double *loss)
{
    int B = be->plan->opt.batch;
    float *x = malloc(sizeof(float) * row_floats(be, dv) * (size_t)B);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)B);
    long correct = 0;
    double lsum = 0;
    for (int i = 0; x && y && i < n; i += B) {
        int m = n - i < B ? n - i : B, c = 0;
        double l;
        make_batch(x, y, dv, idx + i, m);
        be->upload(be, x, y, m);
        be->evaluate(be, m, &l, &c);
        correct += c;
        lsum += l * m;
    }
    free(x); free(y);
    if (loss) *loss = n ? lsum / n : 0;
    return n ? (double)correct / n : 0;
}

int feature_cache_build(FeatureCache *fc, Backend *be, const Dataset *ds, const Preproc *pp, int cut)
{
    const Plan *p = be->plan;
    int B = p->opt.batch;
    double t0 = kiln_now();
    memset(fc, 0, sizeof *fc);
    fc->cut = cut;
    fc->floats = plan_layer_floats(p, cut);
    fc->data = malloc(sizeof(float) * fc->floats * (size_t)ds->n + 1);
    size_t img = p->tensors[p->input_tensor].floats / (size_t)B;
    float *x = malloc(sizeof(float) * img * (size_t)B);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)B);
    int *idx = malloc(sizeof(int) * (size_t)B);
    if (!fc->data || !x || !y || !idx) {
        free(x); free(y); free(idx); feature_cache_free(fc);
        return 1;
    }
    be->set_entry(be, 0);
    for (int i = 0; i < ds->n; i += B) {
        int m = ds->n - i < B ? ds->n - i : B;
        for (int k = 0; k < m; k++) idx[k] = i + k;
        dataset_batch(x, y, ds, idx, m, pp);
        be->upload(be, x, y, m);
        be->extract(be, m, cut, fc->data + (size_t)i * fc->floats);
    }
    free(x); free(y); free(idx);
    fc->seconds = kiln_now() - t0;
    return 0;
}

void feature_cache_free(FeatureCache *fc)
{
    free(fc->data);
    memset(fc, 0, sizeof *fc);
}

/* ---- the loop ------------------------------------------------------------------- */

typedef struct {            /* the last good state, taken at epoch start */
    float *params, *mom;
    uint64_t step;
    LoopState ls;
} Snapshot;

static void snap_take(Snapshot *s, Backend *be, const LoopState *ls)
{
    be->read_params(be, s->params);
    be->read_momentum(be, s->mom);
    s->step = be->get_step(be);
    s->ls = *ls;
}

static void snap_restore(const Snapshot *s, Backend *be, LoopState *ls)
{
    be->write_params(be, s->params);
    be->write_momentum(be, s->mom);
    be->set_step(be, s->step);
    *ls = s->ls;
}

int train_phase(Backend *be, const DataView *dv, const PhaseConfig *pc, LoopState *ls,
                const LoopHooks *hooks, PhaseResult *res)
{
    const Plan *p = be->plan;
    const Split *sp = dv->sp;
    int B = p->opt.batch;
    int steps = (sp->n_train + B - 1) / B;
    memset(res, 0, sizeof *res);
    int ng = pc->groups ? pc->groups->n : 1;
    float glr[KILN_MAX_GROUPS];
    Snapshot snap = {0};
    float *x = malloc(sizeof(float) * row_floats(be, dv) * (size_t)B);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)B);
    int *order = malloc(sizeof(int) * (size_t)(sp->n_train + 1));
    float *best = malloc(sizeof(float) * (p->param_floats + 1));
    snap.params = malloc(sizeof(float) * (p->param_floats + 1));
    snap.mom = malloc(sizeof(float) * (p->opt_floats + 1));
    int rc = 1, have_best = 0;
    if (!x || !y || !order || !best || !snap.params || !snap.mom) goto out;
    if (ls->sched.best_epoch > 0 && pc->resume_best) {
        memcpy(best, pc->resume_best, sizeof(float) * p->param_floats);
        have_best = 1;
    }
    be->set_entry(be, dv->cache ? dv->cache->cut : 0);
    double t0 = kiln_now() - ls->seconds;
    int stop = ls->stopped;
    while (ls->epoch < pc->max_epochs && !stop) {
        int e = ls->epoch;
        if (ls->pos == 0) { ls->loss_sum = 0; ls->correct = 0; ls->seen = 0; }
        snap_take(&snap, be, ls);   /* the epoch's start, or where a resumed epoch resumed */
        memcpy(order, sp->train, sizeof(int) * (size_t)sp->n_train);
        uint64_t st = pc->seed ^ (0x5851F42D4C957F2Dull * (uint64_t)(e + 1)) ^ ((uint64_t)pc->phase << 40);
        kiln_shuffle(order, sp->n_train, &st);
        double step_s = 0;              /* time in this epoch's training steps */
        int seen0 = (int)ls->seen;
        float lr = schedule_lr(&ls->sched);
        int ready = -1;                 /* the step whose batch is uploaded already */
        for (int s = ls->pos; s < steps; s++) {
            int i = s * B, m = sp->n_train - i < B ? sp->n_train - i : B, c = 0;
            double l, ts = kiln_now();
            if (ready != s) {
                make_batch(x, y, dv, order + i, m);
                be->upload(be, x, y, m);
            }
            ready = -1;
            lr = schedule_lr(&ls->sched);
            for (int k = 0; k < ng; k++) glr[k] = lr * (pc->groups ? pc->groups->scale[k] : 1.0f);
            StepConfig sc = {glr, ng, pc->momentum, pc->weight_decay};
            int bad;
            if (be->train_launch && be->train_wait) {
                /* the next batch is made and uploaded while this step runs */
                be->train_launch(be, m, &sc);
                if (s + 1 < steps) {
                    int i1 = i + B, m1 = sp->n_train - i1 < B ? sp->n_train - i1 : B;
                    make_batch(x, y, dv, order + i1, m1);
                    be->upload(be, x, y, m1);
                    ready = s + 1;
                }
                bad = be->train_wait(be, &l, &c);
            } else {
                bad = be->train_step(be, m, &sc, &l, &c);
            }
            if (bad) {
                ready = -1;
                if (pc->on_diverge == DIVERGE_ROLLBACK && ls->rollbacks < pc->max_rollbacks) {
                    int rb = ls->rollbacks + 1;
                    snap_restore(&snap, be, ls);
                    ls->rollbacks = rb;
                    if (pc->rollback_warmup)
                        ls->sched.warmup_steps = ls->sched.warmup_steps ? 2 * ls->sched.warmup_steps : steps;
                    else
                        ls->sched.base *= 0.5f;
                    char to[64] = "the epoch's start";
                    if (ls->pos > 0) snprintf(to, sizeof to, "step %d, where the epoch resumed", ls->pos);
                    fprintf(pc->log ? pc->log : stderr, "diverged at epoch %d step %d, lr=%g: rolled back to %s, %s (rollback %d of %d)\n",
                            e + 1, s + 1, lr, to, pc->rollback_warmup ? "warm-up lengthened" : "LR halved", rb, pc->max_rollbacks);
                    snap_take(&snap, be, ls);
                    s = ls->pos - 1;   /* the epoch again, from its start or where it resumed */
                    seen0 = (int)ls->seen; step_s = 0;
                    continue;
                }
                res->diverged = 1;
                res->div_epoch = e + 1;
                res->div_step = s + 1;
                res->div_lr = lr;
                fprintf(pc->log ? pc->log : stderr, "diverged at epoch %d step %d, lr=%g\n", e + 1, s + 1, lr);
                snap_restore(&snap, be, ls);     /* never keep poisoned weights */
                stop = 1;
                break;
            }
            step_s += kiln_now() - ts;
            ls->sched.step++;
            ls->pos = s + 1;
            ls->loss_sum += l * m; ls->correct += c; ls->seen += m;
            if (hooks && hooks->step_end)
                hooks->step_end(hooks->ctx, e + 1, s + 1, steps, ls->loss_sum / ls->seen,
                                (double)ls->correct / ls->seen, step_s > 0 ? (ls->seen - seen0) / step_s : 0);
            res->steps_run++;
            if (kiln_interrupted || (pc->stop_after_steps && res->steps_run >= pc->stop_after_steps)) {
                ls->seconds = kiln_now() - t0;
                if (hooks && hooks->checkpoint && hooks->checkpoint(hooks->ctx, be, ls)) goto out;
                res->interrupted = 1;
                rc = 0;
                goto out;
            }
        }
        if (stop) break;
        double val = evaluate_set(be, dv, sp->val, sp->n_val, NULL);
        EpochStats es = {pc->phase, e + 1, lr, ls->seen ? ls->loss_sum / ls->seen : 0,
                         ls->seen ? (double)ls->correct / ls->seen : 0, val,
                         step_s > 0 ? (ls->seen - seen0) / step_s : 0, 0};
        res->train_loss = es.loss;
        res->train_acc = es.train_acc;
        ls->epoch = e + 1;
        ls->pos = 0;
        if (schedule_epoch_end(&ls->sched, val, e + 1, &stop)) {
            be->read_params(be, best);
            have_best = 1;
            if (hooks && hooks->best) hooks->best(hooks->ctx, best, e + 1, val);
        }
        ls->stopped = stop;
        ls->seconds = kiln_now() - t0;
        es.elapsed_s = ls->seconds;
        if (hooks && hooks->epoch_end) hooks->epoch_end(hooks->ctx, &es);
        if (hooks && hooks->checkpoint && hooks->checkpoint(hooks->ctx, be, ls)) goto out;
    }
    ls->seconds = kiln_now() - t0;
    if (have_best) be->write_params(be, best);
    rc = 0;
out:
    res->epochs = ls->epoch;
    res->best_epoch = ls->sched.best_epoch;
    res->best_val = ls->sched.best;
    res->seconds = ls->seconds;
    res->rollbacks = ls->rollbacks;
    res->stopped_early = ls->stopped;
    free(x); free(y); free(order); free(best); free(snap.params); free(snap.mom);
    return rc;
}
