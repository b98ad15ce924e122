/* tools/kiln/cmd_emit.c — `kiln emit`: the CUDA C translation unit that the GPU
 * backend would compile for a plan, on stdout (the same bytes for the same
 * plan). The plan comes from the model options (as for kiln plan) and,
 * optionally, a strategy's flags (--strategy S, --phase 2 for the second
 * phase of freeze-finetune). --stats prints kernel and launch counts on
 * stderr. Needs no GPU and no CUDA toolkit. */
#include <stdio.h>
#include <string.h>

#include "codegen/emit.h"
#include "runtime/strategy.h"
#include "tools/kiln/cmds.h"

static void emit_usage(FILE *f)
{
    fprintf(f, "usage: kiln emit --arch FILE [--input-size HxW] [--batch N] [--strategy S [--phase 1|2]]\n"
               "                 [--freeze-until LAYER] [--bn train|infer|frozen] [--no-fuse] [--no-fold] [--stats]\n"
               "Prints the CUDA C translation unit of the plan on stdout.\n");
}

static long count_launches(const Program *pr)
{
    long n = pr->loss_train.n + pr->loss_eval.n + pr->update.n;
    for (int i = 0; i < pr->n_nodes; i++)
        n += pr->fwd_train[i].n + pr->fwd_eval[i].n + pr->bwd[i].n + pr->derive[i].n;
    return n;
}

int cmd_emit(int argc, char **argv)
{
    ModelOptions m;
    model_options_default(&m);
    const char *strategy = NULL;
    int phase = 1, stats = 0;
    for (int i = 1; i < argc; i++) {
        int r = model_option(&m, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) { emit_usage(stdout); return 0; }
        if (!strcmp(a, "--stats")) { stats = 1; continue; }
        if (!strcmp(a, "--strategy") && v) { strategy = v; i++; continue; }
        if (!strcmp(a, "--phase") && v && !parse_int_arg(v, &phase) && (phase == 1 || phase == 2)) { i++; continue; }
        fprintf(stderr, "kiln emit: unknown option or bad value '%s'\n", a);
        emit_usage(stderr);
        return 2;
    }
    int si = strategy ? strategy_parse(strategy) : 0;
    if (si < 0) { fprintf(stderr, "kiln emit: unknown strategy '%s'\n", strategy); return 2; }
    Graph g;
    int rc = model_load(&m, &g);
    if (rc) return rc;
    char err[1024];
    if (strategy) {
        TrainSpec t;
        strategy_defaults(&t, (Strategy)si);
        if (phase > strategy_phases(&t)) {
            fprintf(stderr, "kiln emit: strategy %s has one phase\n", strategy);
            graph_free(&g);
            return 2;
        }
        LrGroups gr;
        if ((rc = strategy_apply(&t, phase - 1, &g, &gr, err, sizeof err))) {
            fprintf(stderr, "kiln emit: %s\n", err);
            graph_free(&g);
            return rc;
        }
    }
    Plan p;
    PlanOptions po = {.batch = m.batch, .fuse = m.fuse, .fold = m.fold};
    if (plan_build(&p, &g, &po, err, sizeof err)) {
        fprintf(stderr, "kiln emit: %s\n", err);
        graph_free(&g);
        return 1;
    }
    Program pr;
    EmitOptions eo = {0};
    rc = 0;
    if (emit_program(&pr, &p, &eo, err, sizeof err)) {
        fprintf(stderr, "kiln emit: %s: %s\n", m.arch, err);
        rc = 1;
    } else {
        if (fwrite(pr.source, 1, pr.source_len, stdout) != pr.source_len || fflush(stdout)) {
            fprintf(stderr, "kiln emit: cannot write the source\n");
            rc = 1;
        }
        if (stats)
            fprintf(stderr, "kiln emit: %s: %d kernels, %ld launches, %zu bytes of source, hash %016llx\n", g.name,
                    pr.n_kernels, count_launches(&pr), pr.source_len, (unsigned long long)pr.hash);
        emit_free(&pr);
    }
    plan_free(&p);
    graph_free(&g);
    return rc;
}
