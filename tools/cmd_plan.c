/* tools/cmd_plan.c — `kiln plan`: the static plan in words. One line per
 * layer (output shape, parameters, FLOPs, trainable, BN mode), the step list,
 * and the bytes of every arena with the total, which is exactly what a
 * backend allocates for this plan. */
#include <stdio.h>
#include <string.h>

#include "tools/cmds.h"

static void plan_usage(FILE *f)
{
    fprintf(f, "usage: kiln plan --arch FILE [--batch N] [--freeze-until LAYER] [--bn train|infer|frozen]\n"
               "                 [--no-fuse] [--no-fold] [--quiet]\n");
}

int cmd_plan(int argc, char **argv)
{
    ModelOptions m;
    model_options_default(&m);
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        int r = model_option(&m, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(argv[i], "--quiet")) { quiet = 1; continue; }
        if (!strcmp(argv[i], "--help")) { plan_usage(stdout); return 0; }
        fprintf(stderr, "kiln plan: unknown option '%s'\n", argv[i]);
        plan_usage(stderr);
        return 2;
    }
    Graph g;
    int rc = model_load(&m, &g);
    if (rc) return rc;
    Plan p;
    char err[512];
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
