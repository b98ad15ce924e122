/* runtime/train.h — the training loop, backend-agnostic: epochs over the
 * train split in a seeded shuffled order, SGD steps through the backend with
 * the schedule's LR per group, validation every epoch, early stopping that
 * restores the best weights, reduce-on-plateau, divergence handling, and the
 * hooks that outputs and checkpoints hang on. It never knows which backend
 * runs or where the batches come from (images, or cached features of a
 * frozen prefix).
 *
 * Determinism: the order of epoch e is a shuffle of the train indices seeded
 * with (seed, e); a run's state between two steps is (parameters, momentum,
 * backend step counter, LoopState), so saving those and continuing gives the
 * same bits as never stopping (on the CPU backend, whose kernels are
 * deterministic for any thread count).
 */
#ifndef KILN_TRAIN_H
#define KILN_TRAIN_H

#include <stdio.h>

#include "datasets/dataset.h"
#include "runtime/backend.h"
#include "runtime/schedule.h"
#include "runtime/strategy.h"

/* Features of a frozen prefix, one row per data-set image. */
typedef struct {
    int cut;                 /* the layer whose output is cached */
    size_t floats;           /* per image */
    float *data;             /* (n images, floats) */
    double seconds;          /* time it took to compute */
} FeatureCache;

/* Where batches come from. */
typedef struct {
    const Dataset *ds;
    const Split *sp;
    Preproc pp;
    const FeatureCache *cache;   /* NULL: images */
} DataView;

/* One phase's configuration. */
typedef struct {
    int phase;                  /* 0, or 1 (freeze-finetune's second phase) */
    int max_epochs;
    float momentum, weight_decay;
    const LrGroups *groups;
    DivergePolicy on_diverge;
    int max_rollbacks;
    int rollback_warmup;        /* on rollback lengthen the warm-up (else halve the LR) */
    uint64_t seed;
    long stop_after_steps;      /* testing: return as if killed after this many steps of this call (0: never) */
    const float *resume_best;   /* resuming: the best weights so far (param arena), or NULL */
    FILE *log;                  /* divergence and rollback messages (NULL: stderr) */
} PhaseConfig;

/* Everything besides parameters, momentum and the backend step counter that
 * a resumed run needs. */
typedef struct {
    Schedule sched;
    int epoch;                  /* epochs completed in this phase */
    int pos;                    /* steps taken in the current epoch */
    double seconds;             /* train time so far in this phase */
    double loss_sum;            /* current epoch's running sums */
    long correct, seen;
    int rollbacks;
    int stopped;                /* early stopping ended the phase */
} LoopState;

typedef struct {
    int phase, epoch;
    float lr;                   /* base LR of group 0 at the epoch's last step */
    double loss, train_acc, val_acc;
    double train_img_per_s;     /* images over the time of this epoch's training steps
                                   (batches made, uploaded and stepped; not validation) */
    double elapsed_s;           /* the phase's train time so far, validation included */
} EpochStats;

typedef struct {
    /* after every epoch (metrics, progress) */
    void (*epoch_end)(void *ctx, const EpochStats *st);
    /* after every step: progress display (may be NULL) */
    void (*step_end)(void *ctx, int epoch, int pos, int steps, double loss, double acc, double img_s);
    /* at every epoch end and on interruption: write the "last" checkpoint.
     * Returns 0, or non-zero to abort the run. */
    int (*checkpoint)(void *ctx, Backend *be, const LoopState *ls);
    /* when validation accuracy improves: best weights (param arena). */
    void (*best)(void *ctx, const float *params, int epoch, double val_acc);
    void *ctx;
} LoopHooks;

typedef struct {
    int epochs, best_epoch;
    double best_val, seconds;
    double train_loss, train_acc;
    int diverged, div_epoch, div_step;
    float div_lr;
    int rollbacks;
    int stopped_early;
    int interrupted;            /* SIGINT, or stop_after_steps reached */
    long steps_run;             /* steps taken by this call */
} PhaseResult;

/* Set by a SIGINT handler: the loop writes a checkpoint and returns. */
extern volatile int kiln_interrupted;

/* Accuracy (and mean loss if non-NULL) on images idx[0..n), inference mode. */
double evaluate_set(Backend *be, const DataView *dv, const int *idx, int n, double *loss);

/* Run (or continue, from ls) one phase. ls->sched must be initialized. On
 * return the backend holds the best weights seen (or the last good ones).
 * Returns 0, or 1 on an allocation failure or an aborting hook. */
int train_phase(Backend *be, const DataView *dv, const PhaseConfig *pc, LoopState *ls,
                const LoopHooks *hooks, PhaseResult *res);

/* Compute the features of layer `cut` for every image of the data set, in
 * inference mode. Returns 0, or 1 when out of memory. */
int feature_cache_build(FeatureCache *fc, Backend *be, const Dataset *ds, const Preproc *pp, int cut);
void feature_cache_free(FeatureCache *fc);

/* Wall-clock seconds from a monotonic clock. */
double kiln_now(void);

#endif
