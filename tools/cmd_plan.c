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

/* Thousands separators, for reading big counts. */
static const char *commas(long long v, char *buf)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v < 0 ? -v : v), o = 0;
    if (v < 0) buf[o++] = '-';
    for (int i = 0; i < n; i++) {
        buf[o++] = tmp[i];
        if ((n - i - 1) % 3 == 0 && i < n - 1) buf[o++] = ',';
    }
    buf[o] = 0;
    return buf;
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
    char err[512], a[32], b[32], c[32], d[32];
    PlanOptions po = {.batch = m.batch, .fuse = m.fuse, .fold = m.fold};
    if (plan_build(&p, &g, &po, err, sizeof err)) {
        fprintf(stderr, "kiln plan: %s\n", err);
        graph_free(&g);
        return 1;
    }
    const Layer *in = &g.layers[0];
    printf("plan %s (%s): input %dx%dx%d, batch %d, fusion %s, BN folding %s\n", g.name, g.path,
           in->out.h, in->out.w, in->out.c, m.batch, m.fuse ? "on" : "off", m.fold ? "on" : "off");
    if (!quiet) {
        printf("%4s  %-28s %-10s %-14s %12s %14s  %-5s %s\n", "#", "layer", "op", "output", "params",
               "FLOPs/image", "train", "bn");
        for (int i = 0; i < g.n_layers; i++) {
            const Layer *l = &g.layers[i];
            size_t np = 0;
            for (int k = l->first_param; k < l->first_param + l->n_params; k++) np += g.params[k].numel;
            char shape[40];
            snprintf(shape, sizeof shape, "%dx%dx%d", l->out.h, l->out.w, l->out.c);
            printf("%4d  %-28s %-10s %-14s %12s %14s  %-5s %s\n", i, l->name, op_info(l->op)->keyword,
                   shape, commas((long long)np, a), commas(l->flops, b),
                   l->n_params ? (l->trainable && !(l->op == OP_BN && l->bn_mode == BN_FROZEN) ? "yes" : "no") : "-",
                   l->op == OP_BN ? bn_mode_name(l->bn_mode) : "-");
        }
    }
    size_t tr = p.trainable_floats;
    printf("learnable parameters %s (trainable %s, frozen %s), BN statistics %s\n",
           commas((long long)graph_learnable(&g), a), commas((long long)tr, b),
           commas((long long)(graph_learnable(&g) - tr), c), commas((long long)graph_bn_stats(&g), d));
    printf("forward FLOPs per image %s; training step FLOPs per image as planned %s\n",
           commas(graph_flops(&g), a), commas(p.train_flops, b));
    if (!quiet) {
        printf("steps (%d):\n", p.n_steps);
        for (int s = 0; s < p.n_steps; s++) {
            static const char *K[] = {"fwd", "loss", "bwd", "update"};
            char label[300] = "";
            if (p.steps[s].kind == STEP_UPDATE)
                snprintf(label, sizeof label, "sgd-momentum over %zu trainable floats, %d LR segment%s",
                         p.trainable_floats, p.n_segs, p.n_segs == 1 ? "" : "s");
            else
                plan_node_label(&p, p.steps[s].node, label, sizeof label);
            printf("%5d  %-6s %s\n", s, K[p.steps[s].kind], label);
        }
    }
    size_t ab[6];
    plan_arena_bytes(&p, ab);
    printf("arenas (bytes):\n");
    for (int k = 0; k < 6; k++) printf("  %-12s %16s\n", PLAN_ARENA_NAMES[k], commas((long long)ab[k], a));
    printf("  %-12s %16s   (exact: what the backend allocates)\n", "total", commas((long long)plan_bytes(&p), a));
    plan_free(&p);
    graph_free(&g);
    return 0;
}
