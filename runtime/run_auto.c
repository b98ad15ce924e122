/* runtime/run_auto.c — the auto strategy's two choices for run_train (see
 * run_state.h): the batch size from the plan's memory against a budget,
 * before any backend exists, and the LR from a range test on the first
 * phase's backend, which leaves its weights, momentum and step counter as it
 * found them. */
#include "runtime/run_state.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The largest batch that fits (contract in run_state.h): plans are built
 * for batch 8, 16, ... 256 and measured, never run. */
int auto_batch(Graph *g, const RunConfig *c, const char *device, int n_train, FILE *log, char *err,
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
float auto_lr(Backend *be, const DataView *dv, const PhaseConfig *pc, FILE *log)
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
