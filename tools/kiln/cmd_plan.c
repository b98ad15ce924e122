/* tools/kiln/cmd_plan.c — `kiln plan`: the static plan in words. One line per
 * layer (output shape, parameters, FLOPs, trainable, BN mode), the step list,
 * and the bytes of every arena with the total, which is exactly what a
 * backend allocates for this plan. With --json, the graph as JSON instead
 * (tools/kiln/cmd_plan_json.c). */
#include <stdio.h>
#include <string.h>

#include "datasets/dataset.h"
#include "runtime/schedule.h"
#include "tools/kiln/cmds.h"

static void plan_usage(FILE *f)
{
    fprintf(f, "usage: kiln plan --arch FILE [--batch N] [--freeze-until LAYER] [--bn train|infer|frozen]\n"
               "                 [--input-size HxW] [--num-classes N] [--no-fuse] [--no-fold] [--quiet | --json]\n"
               "       kiln plan --arch FILE --schedule --strategy S (--data SPEC | --train-images N)\n"
               "                 [training options as for kiln train]\n"
               "With --schedule: the LR of every group at the first step of every epoch (warm-up x\n"
               "LR groups x phase; plateau reductions depend on validation and are not shown) and\n"
               "what is cached.\n"
               "With --json: the graph (layers, inputs, shapes, attributes, parameters with names,\n"
               "shapes and roles, FLOPs, totals) as JSON, the form tools read; no plan is built.\n");
}

/* `kiln plan --schedule`: per phase, the plan's flags from the strategy, the
 * LR of each group at the first step of every epoch, and the cut whose
 * features are cached. */
static int print_schedule(const ModelOptions *m, Graph *g, TrainSpec *t, const char *data, int n_train)
{
    char err[1024];
    if (data) {
        const InputAttr *in = &g->layers[0].a.input;
        Dataset ds;
        DataOptions o = {in->h, in->w, in->c, 0, t->seed};
        int rc = dataset_open(&ds, data, &o, err, sizeof err);
        if (rc) { fprintf(stderr, "kiln plan: %s\n", err); return rc; }
        Split sp;
        if (dataset_split(&ds, t->seed, &sp)) { dataset_free(&ds); return 1; }
        n_train = sp.n_train;
        split_free(&sp);
        if (graph_head(g) >= 0 && ds.num_classes != g->layers[graph_head(g)].out.c &&
            graph_set_num_classes(g, ds.num_classes, err, sizeof err)) {
            fprintf(stderr, "kiln plan: %s\n", err);
            dataset_free(&ds);
            return 2;
        }
        dataset_free(&ds);
    }
    int steps = (n_train + t->batch - 1) / t->batch;
    printf("schedule %s for %s: lr %g, batch %d, %d training images = %d steps per epoch, up to %d epochs a phase\n",
           strategy_name(t->strategy), g->name, t->lr, t->batch, n_train, steps, t->max_epochs);
    if (t->warmup_epochs)
        printf("warm-up: linear per step from %g to %g over %d epochs (%d steps)\n",
               t->warmup_start > 0 ? t->warmup_start : t->lr / 100, t->lr, t->warmup_epochs, t->warmup_epochs * steps);
    printf("not shown: reduce-on-plateau (x%g after %d epochs without a better val accuracy, floor %g) and early stopping (%d epochs)\n",
           t->plateau_factor, t->plateau_patience, t->min_lr, t->patience);
    for (int ph = 0; ph < strategy_phases(t); ph++) {
        LrGroups gr;
        int rc = strategy_apply(t, ph, g, &gr, err, sizeof err);
        if (rc) { fprintf(stderr, "kiln plan: %s\n", err); return rc; }
        Plan p;
        PlanOptions po = {.batch = t->batch, .fuse = m->fuse, .fold = m->fold};
        if (plan_build(&p, g, &po, err, sizeof err)) { fprintf(stderr, "kiln plan: %s\n", err); return 1; }
        int cut = plan_find_cut(&p, KILN_NONE);
        printf("phase %d: %zu of %zu learnable parameters train; ", ph + 1, p.trainable_floats, graph_learnable(g));
        if (cut > 0)
            printf("cached: the features of '%s' (%zu floats per image), computed once; epochs run the %d layers after it\n",
                   g->layers[cut].name, plan_layer_floats(&p, cut), g->n_layers - 1 - cut);
        else
            printf("nothing cached (no frozen forward-only prefix)\n");
        plan_free(&p);
        Schedule s;
        strategy_schedule(&s, t, ph, t->lr, steps);
        for (int k = 0; k < gr.n; k++) printf("  group %d: layers %s, LR x%g\n", k, gr.name[k], gr.scale[k]);
        printf("%6s %6s", "phase", "epoch");
        for (int k = 0; k < gr.n; k++) printf("  group %-8d", k);
        printf("\n");
        for (int e = 0; e < t->max_epochs; e++) {
            printf("%6d %6d", ph + 1, e + 1);
            float base = schedule_lr_at(&s, (long)e * steps);
            for (int k = 0; k < gr.n; k++) printf("  %-14.4g", base * gr.scale[k]);
            printf("\n");
        }
    }
    return 0;
}

int cmd_plan(int argc, char **argv)
{
    ModelOptions m;
    model_options_default(&m);
    int quiet = 0, schedule = 0, n_train = 0, json = 0, classes = 0;
    const char *data = NULL, *strategy = "naive";
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--strategy")) strategy = argv[i + 1];
    int si = strategy_parse(strategy);
    if (si < 0) { fprintf(stderr, "kiln plan: unknown strategy '%s'\n", strategy); return 2; }
    TrainSpec t;
    strategy_defaults(&t, (Strategy)si);
    for (int i = 1; i < argc; i++) {
        int r = model_option(&m, argc, argv, &i);
        if (r < 0) return 2;
        if (r) { if (!strcmp(argv[i - 1], "--batch")) t.batch = m.batch; continue; }
        if ((r = spec_option(&t, argc, argv, &i)) < 0) return 2;
        if (r) continue;
        if (!strcmp(argv[i], "--quiet")) { quiet = 1; continue; }
        if (!strcmp(argv[i], "--schedule")) { schedule = 1; continue; }
        if (!strcmp(argv[i], "--json")) { json = 1; continue; }
        if (!strcmp(argv[i], "--num-classes") && i + 1 < argc) {
            if (parse_int_arg(argv[++i], &classes) || classes < 1) { fprintf(stderr, "kiln plan: bad --num-classes\n"); return 2; }
            continue;
        }
        if (!strcmp(argv[i], "--strategy") && i + 1 < argc) { i++; continue; }
        if (!strcmp(argv[i], "--data") && i + 1 < argc) { data = argv[++i]; continue; }
        if (!strcmp(argv[i], "--train-images") && i + 1 < argc) {
            if (parse_int_arg(argv[++i], &n_train) || n_train < 1) { fprintf(stderr, "kiln plan: bad --train-images\n"); return 2; }
            continue;
        }
        if (!strcmp(argv[i], "--help")) { plan_usage(stdout); return 0; }
        fprintf(stderr, "kiln plan: unknown option '%s'\n", argv[i]);
        plan_usage(stderr);
        return 2;
    }
    Graph g;
    int rc = model_load(&m, &g);
    if (rc) return rc;
    char err[1024];
    if (classes && (rc = graph_set_num_classes(&g, classes, err, sizeof err))) {
        fprintf(stderr, "kiln plan: %s: --num-classes %d: %s\n", m.arch, classes, err);
        graph_free(&g);
        return rc;
    }
    if (json) {
        rc = plan_json_print(stdout, &g);
        graph_free(&g);
        return rc;
    }
    if (schedule) {
        if (!data && !n_train) {
            fprintf(stderr, "kiln plan: --schedule needs --data SPEC or --train-images N\n");
            graph_free(&g);
            return 2;
        }
        rc = print_schedule(&m, &g, &t, data, n_train);
        graph_free(&g);
        return rc;
    }
    Plan p;
    PlanOptions po = {.batch = m.batch, .fuse = m.fuse, .fold = m.fold};
    if (plan_build(&p, &g, &po, err, sizeof err)) {
        fprintf(stderr, "kiln plan: %s\n", err);
        graph_free(&g);
        return 1;
    }
    plan_print(stdout, &p, !quiet, !quiet);
    plan_free(&p);
    graph_free(&g);
    return 0;
}
