/* runtime/strategy.c — strategy presets and their per-layer flags (see
 * strategy.h). The only place that knows what each strategy means. */
#include "runtime/strategy.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/dataset.h"

static const char *const NAMES[STRAT_COUNT] = {
    "random", "naive", "naive-bn-frozen", "frozen", "freeze-finetune", "layerwise", "warmup", "auto"};

const char *strategy_name(Strategy s) { return s < STRAT_COUNT ? NAMES[s] : "?"; }

int strategy_parse(const char *name)
{
    for (int i = 0; i < STRAT_COUNT; i++)
        if (!strcmp(name, NAMES[i])) return i;
    return -1;
}

void strategy_defaults(TrainSpec *t, Strategy s)
{
    memset(t, 0, sizeof *t);
    t->strategy = s;
    t->lr = 0.01f;
    t->momentum = 0.9f;
    t->batch = 32;
    t->max_epochs = 100;
    t->patience = 20;
    t->plateau_patience = 8;
    t->plateau_factor = 0.1f;
    t->min_lr = 1e-6f;
    t->finetune_factor = 0.1f;
    t->bn_override = -1;
    t->n_depth_groups = 5;
    t->max_rollbacks = 3;
    t->pretrained = s != STRAT_RANDOM;
    t->seed = KILN_DEFAULT_SEED;
    if (s == STRAT_WARMUP || s == STRAT_AUTO) t->warmup_epochs = 5;
    if (s == STRAT_LAYERWISE) t->layer_decay = 0.7f;
    if (s == STRAT_AUTO) t->on_diverge = DIVERGE_ROLLBACK;
}

int strategy_phases(const TrainSpec *t) { return t->strategy == STRAT_FREEZE_FINETUNE ? 2 : 1; }

void strategy_schedule(Schedule *s, const TrainSpec *t, int phase, float lr, int steps)
{
    if (phase == 1) lr *= t->finetune_factor;
    schedule_init(s, lr, t->warmup_start, (long)t->warmup_epochs * steps, t->plateau_patience,
                  t->plateau_factor, t->min_lr, t->patience);
}

/* First / last layer whose name starts with prefix, or -1. */
static int first_with(const Graph *g, const char *p, size_t n)
{
    for (int i = 0; i < g->n_layers; i++)
        if (!strncmp(g->layers[i].name, p, n)) return i;
    return -1;
}
static int last_with(const Graph *g, const char *p, size_t n)
{
    for (int i = g->n_layers - 1; i >= 0; i--)
        if (!strncmp(g->layers[i].name, p, n)) return i;
    return -1;
}

/* Explicit groups "A..B=lr,C..=lr,head=lr": group 0 is every layer no range
 * names, at the base LR; each entry adds a group with scale lr/base. A..B
 * runs from the first layer whose name starts with A to the last whose name
 * starts with B; "A.." to the end, "..B" from the start, "A" alone is A..A,
 * "head" the head to the end. Where ranges overlap, the later one wins. */
static int explicit_groups(const TrainSpec *t, Graph *g, LrGroups *gr, char *err, size_t errlen)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", t->lr_groups);
    char *save = NULL;
    for (char *e = strtok_r(buf, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        char *eq = strrchr(e, '='), *end;
        if (!eq) { snprintf(err, errlen, "--lr-groups: '%s' is not RANGE=LR", e); return 2; }
        *eq = 0;
        double lr = strtod(eq + 1, &end);
        if (end == eq + 1 || *end || !(lr > 0 && lr <= FLT_MAX)) {
            snprintf(err, errlen, "--lr-groups: '%s' is not a positive learning rate", eq + 1);
            return 2;
        }
        int lo, hi;
        char *dots = strstr(e, "..");
        if (!strcmp(e, "head")) {
            lo = hi = graph_head(g);
            if (lo >= 0) hi = g->n_layers - 1;
        } else if (dots) {
            size_t na = (size_t)(dots - e);
            const char *b = dots + 2;
            lo = na ? first_with(g, e, na) : 0;
            hi = *b ? last_with(g, b, strlen(b)) : g->n_layers - 1;
            if (na && lo < 0) { snprintf(err, errlen, "--lr-groups: no layer name starts with '%.*s'", (int)na, e); return 2; }
            if (*b && hi < 0) { snprintf(err, errlen, "--lr-groups: no layer name starts with '%s'", b); return 2; }
        } else {
            lo = first_with(g, e, strlen(e));
            hi = last_with(g, e, strlen(e));
        }
        if (lo < 0 || hi < lo) { snprintf(err, errlen, "--lr-groups: range '%s' names no layers", e); return 2; }
        if (gr->n == KILN_MAX_GROUPS) { snprintf(err, errlen, "--lr-groups: more than %d groups", KILN_MAX_GROUPS - 1); return 2; }
        int k = gr->n++;
        gr->scale[k] = (float)(lr / t->lr);
        snprintf(gr->name[k], sizeof gr->name[k], "%s..%s", g->layers[lo].name, g->layers[hi].name);
        for (int i = lo; i <= hi; i++) {   /* a later range overrides an earlier one */
            g->layers[i].lr_group = k;
        }
    }
    return 0;
}

/* Depth decay: the layers with parameters split into n equal runs from the
 * input; run k (0 = nearest the input) gets decay^(n-1-k). */
static void depth_groups(const TrainSpec *t, Graph *g, LrGroups *gr)
{
    int n = t->n_depth_groups < 1 ? 1 : t->n_depth_groups > KILN_MAX_GROUPS ? KILN_MAX_GROUPS : t->n_depth_groups;
    int np = 0;
    for (int i = 0; i < g->n_layers; i++) np += g->layers[i].n_params > 0;
    gr->n = n;
    int seen = 0;
    int first[KILN_MAX_GROUPS], last[KILN_MAX_GROUPS];
    for (int k = 0; k < n; k++) { first[k] = -1; last[k] = -1; }
    for (int i = 0; i < g->n_layers; i++) {
        int k = np ? seen * n / np : 0;
        if (k >= n) k = n - 1;
        g->layers[i].lr_group = k;
        if (first[k] < 0) first[k] = i;
        last[k] = i;
        seen += g->layers[i].n_params > 0;
    }
    for (int k = 0; k < n; k++) {
        gr->scale[k] = powf(t->layer_decay, (float)(n - 1 - k));
        if (first[k] >= 0)
            snprintf(gr->name[k], sizeof gr->name[k], "%s..%s", g->layers[first[k]].name, g->layers[last[k]].name);
        else
            snprintf(gr->name[k], sizeof gr->name[k], "(empty)");
    }
}

int strategy_apply(const TrainSpec *t, int phase, Graph *g, LrGroups *gr, char *err, size_t errlen)
{
    memset(gr, 0, sizeof *gr);
    gr->n = 1;
    gr->scale[0] = 1;
    snprintf(gr->name[0], sizeof gr->name[0], "all");
    Strategy s = t->strategy;
    BnMode bn = (s == STRAT_RANDOM || s == STRAT_NAIVE) ? BN_TRAIN : BN_FROZEN;
    if (t->bn_override >= 0) bn = (BnMode)t->bn_override;
    graph_flags_all(g, 1, bn);
    int frozen = s == STRAT_FROZEN || (s == STRAT_FREEZE_FINETUNE && phase == 0);
    if (frozen) {
        int h = graph_head(g);
        if (h < 0) { snprintf(err, errlen, "%s: no dense head before the loss to train", g->path); return 2; }
        for (int i = 0; i < h; i++) {
            g->layers[i].trainable = 0;
            g->layers[i].bn_mode = BN_FROZEN;
        }
    }
    if (s == STRAT_LAYERWISE) {
        if (t->lr_groups[0]) return explicit_groups(t, g, gr, err, errlen);
        if (t->layer_decay > 0) depth_groups(t, g, gr);
    }
    return 0;
}
