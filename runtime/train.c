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

/* train_phase in four parts: the epoch (its order and its snapshot), its
 * steps (step_run, one step with the next batch made while it runs), what a
 * diverged step does (on_bad_step: roll back, or end the phase), and the
 * epoch's end (validation, the schedule, best weights, the hooks). */

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

/* One call of train_phase: its arguments and working memory. */
typedef struct {
    Backend *be;
    const DataView *dv;
    const PhaseConfig *pc;
    const LoopHooks *hooks;
    LoopState *ls;
    PhaseResult *res;
    int B, steps;               /* batch, steps an epoch */
    float *x;                   /* (B, row floats): the batch being uploaded */
    int32_t *y;                 /* (B) */
    int *order;                 /* (n_train): this epoch's order of the train split */
    float *best;                /* (param floats): the best weights seen */
    int have_best;
    Snapshot snap;
    double t0;                  /* when the phase's train time began (resumed time subtracted) */
} Loop;

/* How an epoch's steps ended. */
enum { STEPS_DONE, STEPS_DIVERGED, STEPS_INTERRUPTED, STEPS_FAILED };

/* The images of step s under this epoch's order: m rows from row i. */
static int step_rows(const Loop *L, int s, int *i)
{
    int n = L->dv->sp->n_train;
    *i = s * L->B;
    return n - *i < L->B ? n - *i : L->B;
}

/* Step s at the schedule's LR (*lr), its batch uploaded unless *ready says
 * it already is. A backend that launches and waits apart gets the next
 * batch made and uploaded while the step runs (*ready = s + 1). Returns
 * non-zero when the step diverged (a non-finite loss), with its loss and
 * correct count in *l, *c. */
static int step_run(Loop *L, int s, int *ready, float *lr, double *l, int *c)
{
    Backend *be = L->be;
    const PhaseConfig *pc = L->pc;
    int i, m = step_rows(L, s, &i);
    if (*ready != s) {
        make_batch(L->x, L->y, L->dv, L->order + i, m);
        be->upload(be, L->x, L->y, m);
    }
    *ready = -1;
    *lr = schedule_lr(&L->ls->sched);
    int ng = pc->groups ? pc->groups->n : 1;
    float glr[KILN_MAX_GROUPS];
    for (int k = 0; k < ng; k++) glr[k] = *lr * (pc->groups ? pc->groups->scale[k] : 1.0f);
    StepConfig sc = {glr, ng, pc->momentum, pc->weight_decay};
    if (!be->train_launch || !be->train_wait) return be->train_step(be, m, &sc, l, c);
    /* the next batch is made and uploaded while this step runs */
    be->train_launch(be, m, &sc);
    if (s + 1 < L->steps) {
        int i1, m1 = step_rows(L, s + 1, &i1);
        make_batch(L->x, L->y, L->dv, L->order + i1, m1);
        be->upload(be, L->x, L->y, m1);
        *ready = s + 1;
    }
    return be->train_wait(be, l, c);
}

/* Step s of epoch e diverged at LR lr. With rollbacks left under the
 * rollback policy: the snapshot restored (the epoch's start, or where a
 * resumed epoch resumed), the warm-up lengthened or the LR halved, a new
 * snapshot taken; returns 1 (the caller runs the epoch again from ls->pos).
 * Else the phase has diverged: res says where, the snapshot is restored
 * (never keep poisoned weights); returns 0. */
static int on_bad_step(Loop *L, int e, int s, float lr)
{
    const PhaseConfig *pc = L->pc;
    LoopState *ls = L->ls;
    FILE *log = pc->log ? pc->log : stderr;
    if (pc->on_diverge == DIVERGE_ROLLBACK && ls->rollbacks < pc->max_rollbacks) {
        int rb = ls->rollbacks + 1;
        snap_restore(&L->snap, L->be, ls);
        ls->rollbacks = rb;
        if (pc->rollback_warmup)
            ls->sched.warmup_steps = ls->sched.warmup_steps ? 2 * ls->sched.warmup_steps : L->steps;
        else
            ls->sched.base *= 0.5f;
        char to[64] = "the epoch's start";
        if (ls->pos > 0) snprintf(to, sizeof to, "step %d, where the epoch resumed", ls->pos);
        fprintf(log, "diverged at epoch %d step %d, lr=%g: rolled back to %s, %s (rollback %d of %d)\n",
                e + 1, s + 1, lr, to, pc->rollback_warmup ? "warm-up lengthened" : "LR halved", rb, pc->max_rollbacks);
        snap_take(&L->snap, L->be, ls);
        return 1;
    }
    PhaseResult *res = L->res;
    res->diverged = 1;
    res->div_epoch = e + 1;
    res->div_step = s + 1;
    res->div_lr = lr;
    fprintf(log, "diverged at epoch %d step %d, lr=%g\n", e + 1, s + 1, lr);
    snap_restore(&L->snap, L->be, ls);
    return 0;
}

/* Epoch e's steps from ls->pos to its end, each one counted in ls and
 * reported to the step hook. Stops early when the phase diverges, or on an
 * interruption (SIGINT, stop_after_steps), after the checkpoint hook.
 * *lr: the last step's LR; *step_s and *seen0: the time in training steps
 * and the images seen before them, since the epoch (re)started, for its
 * images/s. */
static int epoch_steps(Loop *L, int e, float *lr, double *step_s, int *seen0)
{
    LoopState *ls = L->ls;
    const LoopHooks *hooks = L->hooks;
    *step_s = 0;
    *seen0 = (int)ls->seen;
    *lr = schedule_lr(&ls->sched);
    int ready = -1;                 /* the step whose batch is uploaded already */
    for (int s = ls->pos; s < L->steps; s++) {
        int i, m = step_rows(L, s, &i), c = 0;
        double l, ts = kiln_now();
        if (step_run(L, s, &ready, lr, &l, &c)) {
            ready = -1;
            if (!on_bad_step(L, e, s, *lr)) return STEPS_DIVERGED;
            s = ls->pos - 1;   /* the epoch again, from its start or where it resumed */
            *seen0 = (int)ls->seen; *step_s = 0;
            continue;
        }
        *step_s += kiln_now() - ts;
        ls->sched.step++;
        ls->pos = s + 1;
        ls->loss_sum += l * m; ls->correct += c; ls->seen += m;
        if (hooks && hooks->step_end)
            hooks->step_end(hooks->ctx, e + 1, s + 1, L->steps, ls->loss_sum / ls->seen,
                            (double)ls->correct / ls->seen, *step_s > 0 ? (ls->seen - *seen0) / *step_s : 0);
        L->res->steps_run++;
        if (kiln_interrupted || (L->pc->stop_after_steps && L->res->steps_run >= L->pc->stop_after_steps)) {
            ls->seconds = kiln_now() - L->t0;
            if (hooks && hooks->checkpoint && hooks->checkpoint(hooks->ctx, L->be, ls)) return STEPS_FAILED;
            L->res->interrupted = 1;
            return STEPS_INTERRUPTED;
        }
    }
    return STEPS_DONE;
}

/* Epoch e's end: validation accuracy, the schedule's epoch end (plateau,
 * early stopping into *stop), the best weights kept when it improved, then
 * the epoch and checkpoint hooks. Returns non-zero when the checkpoint hook
 * aborts the run. */
static int epoch_end(Loop *L, int e, float lr, double step_s, int seen0, int *stop)
{
    LoopState *ls = L->ls;
    const LoopHooks *hooks = L->hooks;
    const Split *sp = L->dv->sp;
    double val = evaluate_set(L->be, L->dv, sp->val, sp->n_val, NULL);
    EpochStats es = {L->pc->phase, e + 1, lr, ls->seen ? ls->loss_sum / ls->seen : 0,
                     ls->seen ? (double)ls->correct / ls->seen : 0, val,
                     step_s > 0 ? (ls->seen - seen0) / step_s : 0, 0};
    L->res->train_loss = es.loss;
    L->res->train_acc = es.train_acc;
    ls->epoch = e + 1;
    ls->pos = 0;
    if (schedule_epoch_end(&ls->sched, val, e + 1, stop)) {
        L->be->read_params(L->be, L->best);
        L->have_best = 1;
        if (hooks && hooks->best) hooks->best(hooks->ctx, L->best, e + 1, val);
    }
    ls->stopped = *stop;
    ls->seconds = kiln_now() - L->t0;
    es.elapsed_s = ls->seconds;
    if (hooks && hooks->epoch_end) hooks->epoch_end(hooks->ctx, &es);
    return hooks && hooks->checkpoint && hooks->checkpoint(hooks->ctx, L->be, ls);
}

int train_phase(Backend *be, const DataView *dv, const PhaseConfig *pc, LoopState *ls,
                const LoopHooks *hooks, PhaseResult *res)
{
    const Plan *p = be->plan;
    const Split *sp = dv->sp;
    Loop L = {.be = be, .dv = dv, .pc = pc, .hooks = hooks, .ls = ls, .res = res, .B = p->opt.batch};
    L.steps = (sp->n_train + L.B - 1) / L.B;
    memset(res, 0, sizeof *res);
    L.x = malloc(sizeof(float) * row_floats(be, dv) * (size_t)L.B);
    L.y = malloc(sizeof(int32_t) * (size_t)L.B);
    L.order = malloc(sizeof(int) * (size_t)(sp->n_train + 1));
    L.best = malloc(sizeof(float) * (p->param_floats + 1));
    L.snap.params = malloc(sizeof(float) * (p->param_floats + 1));
    L.snap.mom = malloc(sizeof(float) * (p->opt_floats + 1));
    int rc = 1;
    if (!L.x || !L.y || !L.order || !L.best || !L.snap.params || !L.snap.mom) goto out;
    if (ls->sched.best_epoch > 0 && pc->resume_best) {
        memcpy(L.best, pc->resume_best, sizeof(float) * p->param_floats);
        L.have_best = 1;
    }
    be->set_entry(be, dv->cache ? dv->cache->cut : 0);
    L.t0 = kiln_now() - ls->seconds;
    int stop = ls->stopped;
    while (ls->epoch < pc->max_epochs && !stop) {
        int e = ls->epoch;
        if (ls->pos == 0) { ls->loss_sum = 0; ls->correct = 0; ls->seen = 0; }
        snap_take(&L.snap, be, ls);   /* the epoch's start, or where a resumed epoch resumed */
        memcpy(L.order, sp->train, sizeof(int) * (size_t)sp->n_train);
        uint64_t st = pc->seed ^ (0x5851F42D4C957F2Dull * (uint64_t)(e + 1)) ^ ((uint64_t)pc->phase << 40);
        kiln_shuffle(L.order, sp->n_train, &st);
        float lr;
        double step_s;
        int seen0, how = epoch_steps(&L, e, &lr, &step_s, &seen0);
        if (how == STEPS_INTERRUPTED) { rc = 0; goto out; }
        if (how == STEPS_FAILED) goto out;
        if (how == STEPS_DIVERGED) break;
        if (epoch_end(&L, e, lr, step_s, seen0, &stop)) goto out;
    }
    ls->seconds = kiln_now() - L.t0;
    if (L.have_best) be->write_params(be, L.best);
    rc = 0;
out:
    res->epochs = ls->epoch;
    res->best_epoch = ls->sched.best_epoch;
    res->best_val = ls->sched.best;
    res->seconds = ls->seconds;
    res->rollbacks = ls->rollbacks;
    res->stopped_early = ls->stopped;
    free(L.x); free(L.y); free(L.order); free(L.best); free(L.snap.params); free(L.snap.mom);
    return rc;
}
