/* runtime/schedule.c — warm-up, reduce-on-plateau and early stopping (see
 * schedule.h). Improvement means strictly greater validation accuracy. */
#include "runtime/schedule.h"

#include <string.h>

void schedule_init(Schedule *s, float lr, float warmup_start, long warmup_steps,
                   int plateau_patience, float plateau_factor, float min_lr, int patience)
{
    memset(s, 0, sizeof *s);
    s->lr = s->base = lr;
    s->warmup_start = warmup_start > 0 ? warmup_start : lr / 100;
    s->warmup_steps = warmup_steps;
    s->plateau_patience = plateau_patience;
    s->plateau_factor = plateau_factor;
    s->min_lr = min_lr;
    s->patience = patience;
    s->plateau_best = -1;
    s->best = -1;
}

/* Linear ramp from warmup_start to `base` over warmup_steps. */
static float ramp(const Schedule *s, long step, float base)
{
    if (step >= s->warmup_steps) return base;
    double f = (double)step / (double)s->warmup_steps;
    return (float)(s->warmup_start + (base - s->warmup_start) * f);
}

float schedule_lr(const Schedule *s) { return ramp(s, s->step, s->base); }

float schedule_lr_at(const Schedule *s, long step) { return ramp(s, step, s->lr); }

int schedule_epoch_end(Schedule *s, double val_acc, int epoch, int *stop)
{
    *stop = 0;
    if (val_acc > s->plateau_best) {
        s->plateau_best = val_acc;
        s->plateau_wait = 0;
    } else if (s->plateau_patience > 0 && ++s->plateau_wait >= s->plateau_patience) {
        float nb = s->base * s->plateau_factor;
        s->base = nb < s->min_lr ? s->min_lr : nb;
        s->plateau_wait = 0;
        s->reductions++;
    }
    int improved = val_acc > s->best;
    if (improved) {
        s->best = val_acc;
        s->best_epoch = epoch;
        s->wait = 0;
    } else if (s->patience > 0 && ++s->wait >= s->patience) {
        *stop = 1;
    }
    return improved;
}
