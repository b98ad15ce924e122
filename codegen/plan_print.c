/* codegen/plan_print.c — the static plan as text: one line per layer
 * (output shape, parameters, FLOPs, trainable, BN mode), the counts, the
 * ordered steps and the bytes of every arena. `kiln plan` prints it and every
 * run folder keeps a copy (plan.txt). */
#include <stdio.h>

#include "codegen/plan.h"

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

void plan_print(FILE *f, const Plan *p, int layers, int steps)
{
    const Graph *g = p->g;
    char a[32], b[32], c[32], d[32];
    const Layer *in = &g->layers[0];
    fprintf(f, "plan %s (%s): input %dx%dx%d, batch %d, fusion %s, BN folding %s\n", g->name, g->path,
            in->out.h, in->out.w, in->out.c, p->opt.batch, p->opt.fuse ? "on" : "off", p->opt.fold ? "on" : "off");
    if (layers) {
        fprintf(f, "%4s  %-28s %-10s %-14s %12s %14s  %-5s %s\n", "#", "layer", "op", "output", "params",
                "FLOPs/image", "train", "bn");
        for (int i = 0; i < g->n_layers; i++) {
            const Layer *l = &g->layers[i];
            size_t np = 0;
            for (int k = l->first_param; k < l->first_param + l->n_params; k++) np += g->params[k].numel;
            char shape[40];
            snprintf(shape, sizeof shape, "%dx%dx%d", l->out.h, l->out.w, l->out.c);
            int tr = 0;
            for (int k = l->first_param; k < l->first_param + l->n_params; k++) tr |= param_trainable(g, k);
            fprintf(f, "%4d  %-28s %-10s %-14s %12s %14s  %-5s %s\n", i, l->name, op_info(l->op)->keyword,
                    shape, commas((long long)np, a), commas(l->flops, b), l->n_params ? (tr ? "yes" : "no") : "-",
                    op_is(l->op, TRAIT_BN) ? bn_mode_name(l->bn_mode) : "-");
        }
    }
    size_t tr = p->trainable_floats;
    fprintf(f, "learnable parameters %s (trainable %s, frozen %s), BN statistics %s\n",
            commas((long long)graph_learnable(g), a), commas((long long)tr, b),
            commas((long long)(graph_learnable(g) - tr), c), commas((long long)graph_bn_stats(g), d));
    fprintf(f, "forward FLOPs per image %s; training step FLOPs per image as planned %s\n",
            commas(graph_flops(g), a), commas(p->train_flops, b));
    if (steps) {
        fprintf(f, "steps (%d):\n", p->n_steps);
        for (int s = 0; s < p->n_steps; s++) {
            static const char *K[] = {"fwd", "loss", "bwd", "update"};
            char label[300] = "";
            if (p->steps[s].kind == STEP_UPDATE)
                snprintf(label, sizeof label, "sgd-momentum over %zu trainable floats, %d LR segment%s",
                         p->trainable_floats, p->n_segs, p->n_segs == 1 ? "" : "s");
            else
                plan_node_label(p, p->steps[s].node, label, sizeof label);
            fprintf(f, "%5d  %-6s %s\n", s, K[p->steps[s].kind], label);
        }
    }
    size_t ab[6];
    plan_arena_bytes(p, ab);
    fprintf(f, "arenas (bytes):\n");
    for (int k = 0; k < 6; k++) fprintf(f, "  %-12s %16s\n", PLAN_ARENA_NAMES[k], commas((long long)ab[k], a));
    fprintf(f, "  %-12s %16s   (exact: what the backend allocates)\n", "total", commas((long long)plan_bytes(p), a));
}
