/* runtime/train.c — the training loop (see train.h).
 *
 * The batch buffer is made on the host from the uint8 table and uploaded;
 * the backend never sees the data set. Shuffling uses the project PRNG seeded
 * with (seed, epoch), so a run is reproducible on any machine.
 */
#include "runtime/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double kiln_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Floats in one image of the plan's input. */
static size_t image_floats(const Plan *p)
{
    return p->tensors[p->input_tensor].floats / (size_t)p->opt.batch;
}

double evaluate_set(Backend *be, const Dataset *ds, const int *idx, int n,
                    const Preproc *pp, double *loss)
{
    const Plan *p = be->plan;
    int B = p->opt.batch;
    float *x = malloc(sizeof(float) * image_floats(p) * (size_t)B);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)B);
    long correct = 0;
    double lsum = 0;
    for (int i = 0; x && y && i < n; i += B) {
        int m = n - i < B ? n - i : B, c = 0;
        double l;
        dataset_batch(x, y, ds, idx + i, m, pp);
        be->upload(be, x, y, m);
        be->evaluate(be, m, &l, &c);
        correct += c;
        lsum += l * m;
    }
    free(x); free(y);
    if (loss) *loss = n ? lsum / n : 0;
    return n ? (double)correct / n : 0;
}

int train_run(Backend *be, const Dataset *ds, const Split *sp, const Preproc *pp,
              const TrainConfig *cfg, TrainResult *res, FILE *log)
{
    const Plan *p = be->plan;
    int B = p->opt.batch;
    memset(res, 0, sizeof *res);
    float *x = malloc(sizeof(float) * image_floats(p) * (size_t)B);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)B);
    int *order = malloc(sizeof(int) * (size_t)(sp->n_train + 1));
    int ng = cfg->n_groups > 0 ? cfg->n_groups : 1;
    float *glr = malloc(sizeof(float) * (size_t)ng);
    if (!x || !y || !order || !glr) {
        free(x); free(y); free(order); free(glr);
        return 1;
    }
    for (int k = 0; k < ng; k++) glr[k] = cfg->lr * (cfg->group_scale ? cfg->group_scale[k] : 1.0f);
    StepConfig sc = {glr, ng, cfg->momentum, cfg->weight_decay};
    double t0 = kiln_now();
    for (int ep = 0; ep < cfg->epochs && !res->diverged; ep++) {
        memcpy(order, sp->train, sizeof(int) * (size_t)sp->n_train);
        uint64_t st = cfg->seed ^ (0x5851F42D4C957F2Dull * (uint64_t)(ep + 1));
        kiln_shuffle(order, sp->n_train, &st);
        double lsum = 0;
        long correct = 0, seen = 0;
        for (int i = 0, s = 0; i < sp->n_train; i += B, s++) {
            int m = sp->n_train - i < B ? sp->n_train - i : B, c = 0;
            double l;
            dataset_batch(x, y, ds, order + i, m, pp);
            be->upload(be, x, y, m);
            if (be->train_step(be, m, &sc, &l, &c)) {
                res->diverged = 1;
                res->diverged_epoch = ep + 1;
                res->diverged_step = s + 1;
                if (log) fprintf(log, "diverged at epoch %d step %d, lr=%g\n", ep + 1, s + 1, cfg->lr);
                break;
            }
            lsum += l * m; correct += c; seen += m;
        }
        res->epochs = ep + 1;
        res->train_loss = seen ? lsum / seen : 0;
        res->train_acc = seen ? (double)correct / seen : 0;
        res->val_acc = evaluate_set(be, ds, sp->val, sp->n_val, pp, NULL);
        if (log)
            fprintf(log, "epoch %3d  loss %.4f  train_acc %.4f  val_acc %.4f  %.1fs\n", ep + 1,
                    res->train_loss, res->train_acc, res->val_acc, kiln_now() - t0);
    }
    res->seconds = kiln_now() - t0;
    res->test_acc = evaluate_set(be, ds, sp->test, sp->n_test, pp, NULL);
    free(x); free(y); free(order); free(glr);
    return 0;
}
