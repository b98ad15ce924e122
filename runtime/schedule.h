/* runtime/schedule.h — the learning-rate schedule of one phase: a linear
 * warm-up per step, then the base LR, lowered by reduce-on-plateau at epoch
 * ends; and early stopping. All of its state is plain numbers, saved in
 * checkpoints. */
#ifndef KILN_SCHEDULE_H
#define KILN_SCHEDULE_H

typedef struct {
    /* configuration */
    float lr;                 /* target (base) LR */
    float warmup_start;       /* first LR of the ramp */
    long warmup_steps;        /* 0: no warm-up */
    int plateau_patience;     /* 0: never reduce */
    float plateau_factor, min_lr;
    int patience;             /* early stopping; 0: never stop early */
    /* state */
    float base;               /* current base LR (after reductions) */
    long step;                /* steps taken in this phase */
    double plateau_best;      /* best val accuracy seen by the plateau rule */
    int plateau_wait;         /* epochs since it improved */
    double best;              /* best val accuracy (early stopping) */
    int best_epoch;           /* epoch that reached it (1-based; 0: none) */
    int wait;                 /* epochs since best */
    int reductions;           /* plateau reductions so far */
} Schedule;

void schedule_init(Schedule *s, float lr, float warmup_start, long warmup_steps,
                   int plateau_patience, float plateau_factor, float min_lr, int patience);
/* The LR of the next step (before the step counter advances). */
float schedule_lr(const Schedule *s);
/* The LR at a given step of the phase, ignoring plateau reductions (what
 * `kiln plan --schedule` prints). */
float schedule_lr_at(const Schedule *s, long step);
/* After a validation: update plateau and early-stopping state. Returns 1
 * when val_acc is a new best (the caller keeps those weights), and sets
 * *stop when patience has run out. */
int schedule_epoch_end(Schedule *s, double val_acc, int epoch, int *stop);

#endif
