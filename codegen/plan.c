/* codegen/plan.c — the passes that turn a flagged graph into a static plan:
 * fold, fuse, backward marking, step ordering and memory assignment. See
 * plan.h for the contract. Pure C: no kernels, no device, just data.
 */
#include "codegen/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const PLAN_ARENA_NAMES[6] = {"params", "grads", "optimizer", "activations",
                                          "derived", "workspace"};

#define ALIGN_FLOATS 16   /* 64-byte alignment of every activation tensor */

int param_trainable(const Graph *g, int i)
{
    const Param *pa = &g->params[i];
    const Layer *l = &g->layers[pa->layer];
    if (!pa->learnable || !l->trainable) return 0;
    if (l->op == OP_BN && l->bn_mode == BN_FROZEN) return 0;
    return 1;
}

int plan_node_bn(const Plan *p, const Node *nd)
{
    if (op_is(p->g->layers[nd->layer].op, TRAIT_BN)) return nd->layer;
    return nd->fold ? -1 : nd->bn;
}

int node_has_epilogue(const Node *nd)
{
    return (nd->bn >= 0 && !nd->fold) || nd->act >= 0 || nd->add >= 0;
}

/* Does layer i own a trained parameter? */
static int layer_trains(const Graph *g, int i)
{
    const Layer *l = &g->layers[i];
    for (int p = l->first_param; p < l->first_param + l->n_params; p++)
        if (param_trainable(g, p)) return 1;
    return 0;
}

static int is_act(OpKind op)
{
    return op == OP_RELU || op == OP_RELU6 || op == OP_SWISH || op == OP_SIGMOID;
}

/* ---- building blocks ------------------------------------------------------- */

typedef struct {
    Plan *p;
    int cap_t;
    int *grad_of;        /* activation tensor -> its gradient tensor, -1 */
    int cap_g;
} Builder;

static int new_tensor(Builder *b, size_t floats, TensorKind kind, int node)
{
    Plan *p = b->p;
    if (p->n_tensors == b->cap_t) {
        int cap = b->cap_t ? 2 * b->cap_t : 256;
        Tensor *t = realloc(p->tensors, sizeof(Tensor) * (size_t)cap);
        int *gof = realloc(b->grad_of, sizeof(int) * (size_t)cap);
        if (!t || !gof) { if (t) p->tensors = t; if (gof) b->grad_of = gof; return -1; }
        p->tensors = t; b->grad_of = gof; b->cap_t = cap;
    }
    int i = p->n_tensors++;
    p->tensors[i] = (Tensor){floats, 0, -1, -1, kind, node};
    b->grad_of[i] = -1;
    return i;
}

/* The gradient tensor of activation tensor t, created on first use. */
static int grad_tensor(Builder *b, int t)
{
    if (b->grad_of[t] >= 0) return b->grad_of[t];
    int g = new_tensor(b, b->p->tensors[t].floats, T_GRAD, b->p->tensors[t].node);
    if (g >= 0) b->grad_of[t] = g;
    return g;
}

/* Extend tensor t's lifetime to cover step s. */
static void touch(Plan *p, int t, int s)
{
    if (t < 0) return;
    Tensor *x = &p->tensors[t];
    if (x->first < 0 || s < x->first) x->first = s;
    if (s > x->last) x->last = s;
}

static size_t conv_ws_floats(const Graph *g, const Layer *l, int N)
{
    const ConvAttr *c = &l->a.conv;
    if (l->op != OP_CONV) return 0;
    if (c->kh == 1 && c->kw == 1 && c->sh == 1 && c->sw == 1 && !c->pt && !c->pb && !c->pl && !c->pr)
        return 0;
    Shape x = g->layers[l->in[0]].out;
    return (size_t)N * l->out.h * l->out.w * c->kh * c->kw * x.c;
}

static int cmp_size_desc(const void *a, const void *b, void *ctx)
{
    const Tensor *t = ctx;
    int i = *(const int *)a, j = *(const int *)b;
    if (t[i].floats != t[j].floats) return t[i].floats < t[j].floats ? 1 : -1;
    return i - j;
}

/* qsort with a context, portable: a tiny insertion-merge would do, but the
 * tensor count is small (hundreds), so a plain insertion sort is enough. */
static void sort_ctx(int *a, int n, int (*cmp)(const void *, const void *, void *), void *ctx)
{
    for (int i = 1; i < n; i++) {
        int v = a[i], j = i - 1;
        while (j >= 0 && cmp(&a[j], &v, ctx) > 0) { a[j + 1] = a[j]; j--; }
        a[j + 1] = v;
    }
}

/* First-fit offsets by decreasing size; returns the arena size in floats. */
static size_t assign_offsets(Plan *p)
{
    int n = p->n_tensors;
    int *order = malloc(sizeof(int) * (size_t)(n + 1));
    int *placed = malloc(sizeof(int) * (size_t)(n + 1));
    if (!order || !placed) { free(order); free(placed); return KILN_NONE; }
    for (int i = 0; i < n; i++) order[i] = i;
    sort_ctx(order, n, cmp_size_desc, p->tensors);
    size_t top = 0;
    int np = 0;
    for (int k = 0; k < n; k++) {
        Tensor *t = &p->tensors[order[k]];
        size_t need = (t->floats + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
        size_t off = 0;
        /* Repeatedly bump past any time-overlapping, address-overlapping tensor. */
        for (int moved = 1; moved;) {
            moved = 0;
            for (int j = 0; j < np; j++) {
                Tensor *u = &p->tensors[placed[j]];
                size_t uneed = (u->floats + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
                if (u->last < t->first || t->last < u->first) continue;
                if (off + need <= u->offset || u->offset + uneed <= off) continue;
                off = u->offset + uneed;
                moved = 1;
            }
        }
        t->offset = off;
        if (off + need > top) top = off + need;
        placed[np++] = order[k];
    }
    free(order); free(placed);
    return top;
}

/* ---- the passes -------------------------------------------------------------- */

int plan_build(Plan *p, const Graph *g, const PlanOptions *opt, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->g = g;
    p->opt = *opt;
    int L = g->n_layers, N = opt->batch;
    Builder b = {p, 0, NULL, 0};
    int *ncons = calloc((size_t)L, sizeof(int)), *cons = malloc(sizeof(int) * (size_t)L);
    int *main_of = malloc(sizeof(int) * (size_t)L);   /* absorbed layer -> main layer */
    int *tail_of = malloc(sizeof(int) * (size_t)L);   /* main layer -> last absorbed */
    int *fwd_step = NULL, *bwd_step = NULL;
    p->layer_node = malloc(sizeof(int) * (size_t)L);
    p->layer_tensor = malloc(sizeof(int) * (size_t)L);
    p->nodes = calloc((size_t)L, sizeof(Node));
    p->param_off = malloc(sizeof(size_t) * (size_t)(g->n_params + 1));
    p->grad_off = malloc(sizeof(size_t) * (size_t)(g->n_params + 1));
    p->segs = malloc(sizeof(PlanSegment) * (size_t)(g->n_params + 1));
    if (!ncons || !cons || !main_of || !tail_of || !p->layer_node || !p->layer_tensor ||
        !p->nodes || !p->param_off || !p->grad_off || !p->segs)
        goto oom;

    /* Consumers: count, and the last one seen (the only one when count is 1). */
    for (int i = 0; i < L; i++)
        for (int k = 0; k < g->layers[i].n_in; k++) {
            ncons[g->layers[i].in[k]]++;
            cons[g->layers[i].in[k]] = i;
        }

    /* Pass: fold + fuse — find each conv's chain. */
    for (int i = 0; i < L; i++) { main_of[i] = -1; tail_of[i] = i; }
    int *fold_of = calloc((size_t)L, sizeof(int));
    int *bn_of = malloc(sizeof(int) * (size_t)L), *act_of = malloc(sizeof(int) * (size_t)L);
    int *add_of = malloc(sizeof(int) * (size_t)L);
    if (!fold_of || !bn_of || !act_of || !add_of) {
        free(fold_of); free(bn_of); free(act_of); free(add_of);
        goto oom;
    }
    for (int i = 0; i < L; i++) {
        bn_of[i] = act_of[i] = add_of[i] = -1;
        const Layer *l = &g->layers[i];
        if (l->op != OP_CONV && l->op != OP_DWCONV) continue;
        int tail = i;
        if (ncons[tail] == 1 && g->layers[cons[tail]].op == OP_BN) {
            int c = cons[tail];
            if (opt->fold && !layer_trains(g, i) && g->layers[c].bn_mode == BN_FROZEN) fold_of[i] = 1;
            if (fold_of[i] || opt->fuse) { bn_of[i] = c; tail = c; }
        }
        if (opt->fuse && ncons[tail] == 1 && is_act(g->layers[cons[tail]].op)) {
            act_of[i] = cons[tail]; tail = cons[tail];
        }
        if (opt->fuse && ncons[tail] == 1 && g->layers[cons[tail]].op == OP_ADD) {
            const Layer *a = &g->layers[cons[tail]];
            /* an add of two conv chains (a projection shortcut) is absorbed once */
            if (a->in[0] != a->in[1] && main_of[cons[tail]] < 0) { add_of[i] = cons[tail]; tail = cons[tail]; }
        }
        tail_of[i] = tail;
        for (int j = i + 1; j <= tail; j++)
            if (j == bn_of[i] || j == act_of[i] || j == add_of[i]) main_of[j] = i;
    }
    int *main_at = malloc(sizeof(int) * (size_t)L);   /* tail layer -> its main */
    if (!main_at) { free(fold_of); free(bn_of); free(act_of); free(add_of); goto oom; }
    for (int i = 0; i < L; i++) main_at[i] = -1;
    for (int i = 0; i < L; i++)
        if (main_of[i] < 0 && tail_of[i] != i) main_at[tail_of[i]] = i;

    /* Emit nodes in the order of their last absorbed layer. */
    for (int i = 0; i < L; i++) { p->layer_node[i] = -1; p->layer_tensor[i] = -1; }
    for (int i = 0; i < L; i++) {
        int m;
        if (main_at[i] >= 0) m = main_at[i];
        else if (main_of[i] >= 0) continue;       /* absorbed, emitted at its tail */
        else if (tail_of[i] != i) continue;       /* a main whose tail comes later */
        else m = i;
        const Layer *l = &g->layers[m];
        int ni = p->n_nodes++;
        Node *nd = &p->nodes[ni];
        nd->layer = m;
        nd->bn = bn_of[m]; nd->act = act_of[m]; nd->add = add_of[m];
        nd->fold = fold_of[m];
        nd->stats = -1; nd->z = -1; nd->out = -1;
        nd->din[0] = nd->din[1] = nd->dout = -1;
        nd->derived = KILN_NONE;
        nd->n_in = l->n_in;
        for (int k = 0; k < l->n_in; k++) nd->in[k] = p->layer_tensor[l->in[k]];
        if (nd->add >= 0) {
            const Layer *a = &g->layers[nd->add];
            int prev = nd->act >= 0 ? nd->act : nd->bn >= 0 ? nd->bn : m;
            int other = a->in[0] == prev ? a->in[1] : a->in[0];
            nd->in[1] = p->layer_tensor[other];
            nd->n_in = 2;
        }
        for (int j = m; j <= i; j++)
            if (j == m || j == nd->bn || j == nd->act || j == nd->add) p->layer_node[j] = ni;
        Shape o = g->layers[i].out;
        size_t floats = (size_t)N * o.h * o.w * o.c;
        if (l->op == OP_LOSS) {
            p->loss_node = ni;
            p->logits_tensor = nd->in[0];
            continue;
        }
        nd->out = new_tensor(&b, floats, T_ACT, ni);
        if (nd->out < 0) goto oom2;
        p->layer_tensor[i] = nd->out;
        if (l->op == OP_INPUT) p->input_tensor = nd->out;
    }
    p->labels_tensor = new_tensor(&b, (size_t)N, T_LABELS, 0);
    if (p->labels_tensor < 0) goto oom2;

    /* Pass: trainability and backward marking (forward order). */
    for (int ni = 0; ni < p->n_nodes; ni++) {
        Node *nd = &p->nodes[ni];
        const Layer *l = &g->layers[nd->layer];
        int bnl = l->op == OP_BN ? nd->layer : (nd->fold ? -1 : nd->bn);
        nd->train_w = l->op != OP_BN && layer_trains(g, nd->layer);
        nd->train_bn = bnl >= 0 && layer_trains(g, bnl);
        int need = nd->train_w || nd->train_bn;
        for (int k = 0; k < nd->n_in; k++)
            if (nd->in[k] >= 0 && p->nodes[p->tensors[nd->in[k]].node].bwd) need = 1;
        if (l->op == OP_INPUT) need = 0;
        nd->bwd = need && l->op != OP_LOSS;
        /* the loss's "backward" (dlogits) is part of the loss step */
        if (l->op == OP_LOSS && need) nd->din[0] = grad_tensor(&b, nd->in[0]);
        int has_epi = (nd->bn >= 0 && !nd->fold) || nd->act >= 0 || nd->add >= 0;
        BnMode bm = bnl >= 0 ? g->layers[bnl].bn_mode : BN_FROZEN;
        if (bnl >= 0 && bm == BN_TRAIN) {
            nd->stats = new_tensor(&b, 2 * (size_t)g->layers[bnl].out.c, T_STAT, ni);
            if (nd->stats < 0) goto oom2;
        }
        if (l->op == OP_CONV || l->op == OP_DWCONV) {
            nd->save_in = nd->bwd && nd->train_w;
            nd->save_z = nd->bwd && ((bnl >= 0 && (bm == BN_TRAIN || nd->train_bn)) || nd->act >= 0);
            if (has_epi && nd->save_z) {
                Shape o = l->out;
                nd->z = new_tensor(&b, (size_t)N * o.h * o.w * o.c, T_ACT, ni);
                if (nd->z < 0) goto oom2;
            } else {
                nd->z = nd->out;
            }
            nd->ws = conv_ws_floats(g, l, N) + (has_epi && nd->bwd ? p->tensors[nd->out].floats : 0);
        } else if (l->op == OP_BN) {
            nd->save_in = nd->bwd && (bm == BN_TRAIN || nd->train_bn);
        } else if (l->op == OP_DENSE) {
            nd->save_in = nd->bwd && nd->train_w;
        } else if (is_act(l->op) || l->op == OP_MUL || l->op == OP_MAXPOOL) {
            nd->save_in = nd->bwd;
        }
        if (nd->bwd) {
            nd->dout = grad_tensor(&b, nd->out);
            if (nd->dout < 0) goto oom2;
            for (int k = 0; k < nd->n_in; k++)
                if (nd->in[k] >= 0 && p->nodes[p->tensors[nd->in[k]].node].bwd) {
                    nd->din[k] = grad_tensor(&b, nd->in[k]);
                    if (nd->din[k] < 0) goto oom2;
                }
        }
        /* derived constants */
        if (nd->fold) {
            const Param *kp = &g->params[l->first_param];
            p->nodes[ni].derived = p->derived_floats;
            p->derived_floats += kp->numel + (size_t)l->out.c;
        } else if (bnl >= 0) {
            /* scale, shift, invstd from the running statistics */
            p->nodes[ni].derived = p->derived_floats;
            p->derived_floats += 3 * (size_t)g->layers[bnl].out.c;
        }
    }

    /* Steps: forward (input excluded), loss, backward in reverse, update. */
    int maxsteps = 2 * p->n_nodes + 2;
    p->steps = malloc(sizeof(Step) * (size_t)maxsteps);
    fwd_step = malloc(sizeof(int) * (size_t)p->n_nodes);
    bwd_step = malloc(sizeof(int) * (size_t)p->n_nodes);
    if (!p->steps || !fwd_step || !bwd_step) goto oom2;
    for (int ni = 0; ni < p->n_nodes; ni++) {
        fwd_step[ni] = bwd_step[ni] = -1;
        if (g->layers[p->nodes[ni].layer].op == OP_INPUT) { fwd_step[ni] = 0; continue; }
        fwd_step[ni] = p->n_steps;
        p->steps[p->n_steps++] = (Step){ni == p->loss_node ? STEP_LOSS : STEP_FWD, ni};
    }
    for (int ni = p->n_nodes - 1; ni >= 0; ni--)
        if (p->nodes[ni].bwd) {
            bwd_step[ni] = p->n_steps;
            p->steps[p->n_steps++] = (Step){STEP_BWD, ni};
        }

    /* Parameters: trainable first, then frozen learnable, then BN statistics. */
    size_t off = 0;
    for (int pass = 0; pass < 3; pass++)
        for (int i = 0; i < g->n_params; i++) {
            int tr = param_trainable(g, i), le = g->params[i].learnable;
            if ((pass == 0 && tr) || (pass == 1 && le && !tr) || (pass == 2 && !le)) {
                p->param_off[i] = off;
                p->grad_off[i] = tr ? off : KILN_NONE;
                if (tr) {
                    int grp = g->layers[g->params[i].layer].lr_group;
                    if (p->n_segs && p->segs[p->n_segs - 1].group == grp)
                        p->segs[p->n_segs - 1].end = off + g->params[i].numel;
                    else
                        p->segs[p->n_segs++] = (PlanSegment){off, off + g->params[i].numel, grp};
                }
                off += g->params[i].numel;
            }
            if (pass == 0) p->trainable_floats = off;
        }
    p->param_floats = off;
    p->grad_floats = p->opt_floats = p->trainable_floats;
    if (p->trainable_floats) p->steps[p->n_steps++] = (Step){STEP_UPDATE, -1};

    /* Lifetimes. */
    touch(p, p->input_tensor, 0);
    touch(p, p->labels_tensor, 0);
    touch(p, p->labels_tensor, fwd_step[p->loss_node]);
    {
        /* first writer of each gradient decides acc */
        int *written = calloc((size_t)p->n_tensors, sizeof(int));
        if (!written) goto oom2;
        for (int ni = 0; ni < p->n_nodes; ni++) {
            Node *nd = &p->nodes[ni];
            int fs = fwd_step[ni];
            touch(p, nd->out, fs);
            touch(p, nd->z, fs);
            touch(p, nd->stats, fs);
            for (int k = 0; k < nd->n_in; k++) touch(p, nd->in[k], fs);
        }
        /* the loss writes dlogits */
        Node *ln = &p->nodes[p->loss_node];
        if (ln->din[0] >= 0) { touch(p, ln->din[0], fwd_step[p->loss_node]); written[ln->din[0]] = 1; }
        for (int s = 0; s < p->n_steps; s++) {
            if (p->steps[s].kind != STEP_BWD) continue;
            int ni = p->steps[s].node;
            Node *nd = &p->nodes[ni];
            touch(p, nd->dout, s);
            if (nd->save_in) {
                touch(p, nd->in[0], s);
                if (g->layers[nd->layer].op == OP_MUL) touch(p, nd->in[1], s);
            }
            if (nd->save_z) touch(p, nd->z, s);
            if (nd->stats >= 0) touch(p, nd->stats, s);
            for (int k = 0; k < nd->n_in; k++)
                if (nd->din[k] >= 0) {
                    touch(p, nd->din[k], s);
                    nd->din_acc[k] = written[nd->din[k]];
                    written[nd->din[k]] = 1;
                }
        }
        free(written);
    }
    if (opt->keep > 0 && opt->keep < L) {
        /* keep the layer's output (not absorbed by a fused node) to the end */
        int t = p->layer_tensor[opt->keep];
        if (t < 0) {
            snprintf(err, errlen, "layer '%s' is fused into another node; plan with fusion off to keep it",
                     g->layers[opt->keep].name);
            goto oom2_msg;
        }
        touch(p, t, p->n_steps);
    }
    for (int t = 0; t < p->n_tensors; t++)
        if (p->tensors[t].first < 0) p->tensors[t].first = p->tensors[t].last = 0;
    p->act_floats = assign_offsets(p);
    if (p->act_floats == KILN_NONE) goto oom2;
    for (int ni = 0; ni < p->n_nodes; ni++)
        if (p->nodes[ni].ws > p->ws_floats) p->ws_floats = p->nodes[ni].ws;

    /* FLOPs of a training step per image, as planned. */
    for (int ni = 0; ni < p->n_nodes; ni++) {
        const Node *nd = &p->nodes[ni];
        for (int j = 0; j < L; j++) {
            if (p->layer_node[j] != ni) continue;
            int64_t f = g->layers[j].flops;
            p->train_flops += f;
            if (!nd->bwd) continue;
            OpKind op = g->layers[j].op;
            if (op == OP_CONV || op == OP_DWCONV || op == OP_DENSE)
                p->train_flops += f * ((nd->din[0] >= 0) + nd->train_w);
            else
                p->train_flops += f;
        }
    }

    free(fwd_step); free(bwd_step);
    free(fold_of); free(bn_of); free(act_of); free(add_of); free(main_at);
    free(ncons); free(cons); free(main_of); free(tail_of); free(b.grad_of);
    return 0;
oom2:
    snprintf(err, errlen, "out of memory while planning");
oom2_msg:
    free(fold_of); free(bn_of); free(act_of); free(add_of); free(main_at);
    free(fwd_step); free(bwd_step);
    free(ncons); free(cons); free(main_of); free(tail_of); free(b.grad_of);
    plan_free(p);
    return 1;
oom:
    free(fwd_step); free(bwd_step);
    free(ncons); free(cons); free(main_of); free(tail_of); free(b.grad_of);
    plan_free(p);
    snprintf(err, errlen, "out of memory while planning");
    return 1;
}

void plan_free(Plan *p)
{
    free(p->nodes); free(p->tensors); free(p->steps);
    free(p->layer_node); free(p->layer_tensor);
    free(p->param_off); free(p->grad_off); free(p->segs);
    memset(p, 0, sizeof *p);
}

void plan_arena_bytes(const Plan *p, size_t out[6])
{
    out[0] = p->param_floats * 4;
    out[1] = p->grad_floats * 4;
    out[2] = p->opt_floats * 4;
    out[3] = p->act_floats * 4;
    out[4] = p->derived_floats * 4;
    out[5] = p->ws_floats * 4;
}

size_t plan_bytes(const Plan *p)
{
    size_t a[6], t = 0;
    plan_arena_bytes(p, a);
    for (int i = 0; i < 6; i++) t += a[i];
    return t;
}

/* Parameter floats node ni reads in one pass: its layers' parameters, or
 * for a folded conv+BN the derived copy (kernel + per-channel bias) instead
 * of the conv's and the BN's. */
static size_t node_param_floats(const Plan *p, int ni)
{
    const Graph *g = p->g;
    const Node *nd = &p->nodes[ni];
    const Layer *l = &g->layers[nd->layer];
    size_t f = nd->fold ? g->params[l->first_param].numel + (size_t)l->out.c : 0;
    int parts[4] = {nd->layer, nd->bn, nd->act, nd->add};
    for (int k = nd->fold ? 2 : 0; k < 4; k++) {
        if (parts[k] < 0) continue;
        const Layer *pl = &g->layers[parts[k]];
        for (int i = pl->first_param; i < pl->first_param + pl->n_params; i++) f += g->params[i].numel;
    }
    return f;
}

size_t plan_traffic_bytes(const Plan *p)
{
    size_t floats = 0;
    for (int t = 0; t < p->n_tensors; t++) floats += 2 * p->tensors[t].floats;
    for (int ni = 0; ni < p->n_nodes; ni++)
        floats += node_param_floats(p, ni) * (size_t)(1 + (p->nodes[ni].bwd != 0));
    floats += 6 * p->trainable_floats;
    return floats * 4;
}

void plan_node_label(const Plan *p, int node, char *buf, size_t len)
{
    const Node *nd = &p->nodes[node];
    const Graph *g = p->g;
    int n = snprintf(buf, len, "%s %s", op_info(g->layers[nd->layer].op)->keyword,
                     g->layers[nd->layer].name);
    int parts[3] = {nd->bn, nd->act, nd->add};
    for (int k = 0; k < 3; k++)
        if (parts[k] >= 0 && n > 0 && (size_t)n < len)
            n += snprintf(buf + n, len - (size_t)n, "%s%s", k == 0 && nd->fold ? "+fold:" : "+",
                          g->layers[parts[k]].name);
}

size_t plan_layer_floats(const Plan *p, int layer)
{
    Shape o = p->g->layers[layer].out;
    return (size_t)o.h * o.w * o.c;
}

int plan_find_cut(const Plan *p, size_t max_floats)
{
    const Graph *g = p->g;
    int best = -1;
    /* walk nodes in order while the prefix stays frozen and deterministic */
    for (int ni = 1; ni < p->n_nodes; ni++) {
        const Node *nd = &p->nodes[ni];
        const Layer *l = &g->layers[nd->layer];
        if (nd->bwd || l->op == OP_LOSS || l->op == OP_DROPOUT) break;
        int b = l->op == OP_BN ? nd->layer : nd->bn;
        if (b >= 0 && g->layers[b].bn_mode == BN_TRAIN) break;
        int t = nd->out;
        /* later nodes may read only t from this prefix */
        int ok = 1;
        for (int nj = ni + 1; nj < p->n_nodes && ok; nj++)
            for (int k = 0; k < p->nodes[nj].n_in; k++) {
                int u = p->nodes[nj].in[k];
                if (u != t && u >= 0 && p->tensors[u].node <= ni) ok = 0;
            }
        if (!ok) continue;
        int layer = -1;
        for (int j = 0; j < g->n_layers; j++)
            if (p->layer_tensor[j] == t) layer = j;
        if (layer < 0) continue;
        if (plan_layer_floats(p, layer) <= max_floats) best = layer;
    }
    return best;
}
