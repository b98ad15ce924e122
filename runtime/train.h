/* runtime/train.h — the training loop, backend-agnostic: epochs over the
 * train split in a seeded shuffled order, SGD steps through the backend,
 * validation every epoch, test accuracy at the end. */
#ifndef KILN_TRAIN_H
#define KILN_TRAIN_H

#include <stdio.h>

#include "datasets/dataset.h"
#include "runtime/backend.h"

typedef struct {
    int epochs;
    float lr, momentum, weight_decay;
    const float *group_scale;  /* LR multiplier per LR group (NULL: all 1) */
    int n_groups;
    uint64_t seed;
} TrainConfig;

typedef struct {
    double train_loss, train_acc;   /* last epoch, as seen during training */
    double val_acc, test_acc;
    double seconds;                 /* the loop's wall clock, validation included */
    int epochs;
    int diverged;                   /* 1: a step met a non-finite loss/gradient */
    int diverged_epoch, diverged_step;
} TrainResult;

/* Accuracy (and mean loss in *loss if non-NULL) of the backend's current
 * parameters on images idx[0..n), in inference mode. */
double evaluate_set(Backend *be, const Dataset *ds, const int *idx, int n,
                    const Preproc *pp, double *loss);

/* Train; per-epoch lines go to log (NULL: silent). Returns 0, 1 on failure. */
int train_run(Backend *be, const Dataset *ds, const Split *sp, const Preproc *pp,
              const TrainConfig *cfg, TrainResult *res, FILE *log);

/* Wall-clock seconds from a monotonic clock. */
double kiln_now(void);

#endif
