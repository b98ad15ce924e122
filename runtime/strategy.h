/* runtime/strategy.h — the transfer strategies: each a preset of per-layer
 * flags (what trains, BN modes, LR groups) and of the schedule, with every
 * knob still overridable from the command line.
 *
 *   random           He init, everything trains, BN train
 *   naive            pretrained, new head, everything trains, BN train
 *   naive-bn-frozen  as naive, every BN frozen (inference mode, constants)
 *   frozen           encoder frozen (forward-only, BN folded), head trains
 *   freeze-finetune  phase 1 `frozen` to early stopping, phase 2 everything
 *                    trains at lr * finetune_factor (0.1), BN frozen
 *   layerwise        everything trains, BN frozen, LR per group: explicit
 *                    (--lr-groups) or decayed by depth (--layer-decay)
 *   warmup           everything trains, BN frozen, LR ramps linearly per step
 *                    from lr/100 to lr over the first 5 epochs
 *   auto             warmup with the LR from a range test and the batch size
 *                    from the memory plan, BN frozen, rollback on divergence
 */
#ifndef KILN_STRATEGY_H
#define KILN_STRATEGY_H

#include <stdint.h>
#include <stdio.h>

#include "codegen/graph.h"

typedef enum {
    STRAT_RANDOM = 0, STRAT_NAIVE, STRAT_NAIVE_BN_FROZEN, STRAT_FROZEN,
    STRAT_FREEZE_FINETUNE, STRAT_LAYERWISE, STRAT_WARMUP, STRAT_AUTO, STRAT_COUNT
} Strategy;

typedef enum { DIVERGE_STOP = 0, DIVERGE_ROLLBACK } DivergePolicy;

#define KILN_MAX_GROUPS 64

/* Everything a run's schedule and flags depend on. `strategy_defaults` fills
 * it from the strategy; the caller may then override any field. */
typedef struct {
    Strategy strategy;
    float lr, momentum, weight_decay;
    int batch;
    int max_epochs;
    int patience;            /* early stopping on val accuracy (20) */
    int plateau_patience;    /* reduce-LR-on-plateau (8) */
    float plateau_factor;    /* 0.1 */
    float min_lr;            /* floor for plateau reductions (1e-6) */
    int warmup_epochs;       /* 0: none */
    float warmup_start;      /* first LR of the ramp (lr/100 when 0) */
    float finetune_factor;   /* freeze-finetune phase 2 LR factor (0.1) */
    int bn_override;         /* -1, or a BnMode forced on every BN */
    char lr_groups[512];     /* explicit groups: "A..B=lr,C..=lr,head=lr" */
    float layer_decay;       /* >0: depth decay over n_depth_groups groups */
    int n_depth_groups;      /* 5 */
    DivergePolicy on_diverge;
    int max_rollbacks;       /* 3 */
    int pretrained;          /* 1: load weights (all but random) */
    uint64_t seed;
} TrainSpec;

const char *strategy_name(Strategy s);
/* Returns -1 for an unknown name. */
int strategy_parse(const char *name);
/* Defaults of strategy s (lr 0.01, batch 32, 100 epochs, ...). */
void strategy_defaults(TrainSpec *t, Strategy s);

/* The LR groups of a run: group_scale[k] multiplies the base LR for layers
 * whose lr_group is k. */
typedef struct {
    int n;
    float scale[KILN_MAX_GROUPS];
    char name[KILN_MAX_GROUPS][2 * KILN_NAME_MAX + 8];
} LrGroups;

/* Set g's per-layer flags for `phase` (0, or 1 for freeze-finetune's second
 * phase) and fill the LR groups. Returns 0, or 2 with a message (an
 * --lr-groups range naming an unknown layer, a bad LR). */
int strategy_apply(const TrainSpec *t, int phase, Graph *g, LrGroups *groups,
                   char *err, size_t errlen);

/* The schedule of phase `phase` with `steps` steps an epoch: base LR `lr`
 * (x finetune_factor in freeze-finetune's second phase), the warm-up, the
 * plateau and early-stopping rules of t. What runs use and what
 * `kiln plan --schedule` prints. */
#include "runtime/schedule.h"
void strategy_schedule(Schedule *s, const TrainSpec *t, int phase, float lr, int steps);

/* Number of phases (2 for freeze-finetune, else 1). */
int strategy_phases(const TrainSpec *t);

#endif
