/* codegen/plan.c — the passes that turn a flagged graph into a static plan:
 * chains (fold + fuse), nodes, backward marking, steps, parameters,
 * lifetimes, memory and FLOPs, one function each, called in that order by
 * plan_build. See plan.h for the contract. The passes ask the ops' traits
 * (codegen/graph.h), never their names. Pure C: no kernels, no device, just
 * data.
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
    if (op_is(l->op, TRAIT_BN) && l->bn_mode == BN_FROZEN) return 0;
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

/* ---- building blocks ------------------------------------------------------- */

/* The planner's state between passes: the plan being built and per-layer
 * and per-node scratch arrays, freed together by builder_free. */
typedef struct {
    Plan *p;
    const Graph *g;
    int cap_t;
    int *grad_of;        /* activation tensor -> its gradient tensor, -1 */
    int *ncons, *cons;   /* layer -> consumer count, and its last consumer */
    /* chains (pass fold + fuse), per layer */
    int *main_of;        /* absorbed layer -> main layer, -1 */
    int *tail_of;        /* main layer -> its last absorbed layer (itself when none) */
    int *main_at;        /* tail layer -> its main, -1 */
    int *fold_of, *bn_of, *act_of, *add_of;   /* main layer -> its chain */
    int *fwd_step, *bwd_step;                  /* node -> step, -1 */
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

static void builder_free(Builder *b)
{
    free(b->grad_of); free(b->ncons); free(b->cons);
    free(b->main_of); free(b->tail_of); free(b->main_at);
    free(b->fold_of); free(b->bn_of); free(b->act_of); free(b->add_of);
    free(b->fwd_step); free(b->bwd_step);
}

/* Allocate the plan's per-layer and per-parameter tables and the builder's
 * per-layer scratch. Returns 0, or 1 when out of memory. */
static int plan_alloc(Builder *b)
{
    Plan *p = b->p;
    const Graph *g = b->g;
    size_t L = (size_t)g->n_layers, P1 = (size_t)g->n_params + 1;
    p->layer_node = malloc(sizeof(int) * L);
    p->layer_tensor = malloc(sizeof(int) * L);
    p->nodes = calloc(L, sizeof(Node));
    p->param_off = malloc(sizeof(size_t) * P1);
    p->grad_off = malloc(sizeof(size_t) * P1);
    p->segs = malloc(sizeof(PlanSegment) * P1);
    b->ncons = calloc(L, sizeof(int));
    b->fold_of = calloc(L, sizeof(int));
    int **perlayer[] = {&b->cons, &b->main_of, &b->tail_of, &b->main_at,
                        &b->bn_of, &b->act_of, &b->add_of};
    int ok = p->layer_node && p->layer_tensor && p->nodes && p->param_off && p->grad_off &&
             p->segs && b->ncons && b->fold_of;
    for (size_t k = 0; k < sizeof perlayer / sizeof perlayer[0]; k++)
        ok &= (*perlayer[k] = malloc(sizeof(int) * L)) != NULL;
    return ok ? 0 : 1;
}

/* Pass fold + fuse. Contract: for every chain head (TRAIT_CHAIN_HEAD: conv,
 * dwconv) whose output has one consumer, absorb a following BN when it folds
 * (opt.fold, the head trains nothing, the BN is frozen) or fusion is on; then,
 * fusion on and one consumer each time, an activation, then a residual add
 * (TRAIT_CHAIN_ADD) of two different inputs not yet absorbed by an earlier
 * chain. Sets main_of (absorbed -> head), tail_of (head -> last absorbed),
 * main_at (tail -> head) and the head's fold/bn/act/add. */
static void pass_chains(Builder *b)
{
    const Graph *g = b->g;
    const PlanOptions *opt = &b->p->opt;
    int L = g->n_layers;
    for (int i = 0; i < L; i++)
        for (int k = 0; k < g->layers[i].n_in; k++) {
            b->ncons[g->layers[i].in[k]]++;
            b->cons[g->layers[i].in[k]] = i;
        }
    for (int i = 0; i < L; i++) { b->main_of[i] = -1; b->tail_of[i] = i; b->main_at[i] = -1; }
    for (int i = 0; i < L; i++) {
        b->bn_of[i] = b->act_of[i] = b->add_of[i] = -1;
        if (!op_is(g->layers[i].op, TRAIT_CHAIN_HEAD)) continue;
        int tail = i, next = b->ncons[tail] == 1 ? b->cons[tail] : -1;
        if (next >= 0 && op_is(g->layers[next].op, TRAIT_BN)) {
            if (opt->fold && !layer_trains(g, i) && g->layers[next].bn_mode == BN_FROZEN) b->fold_of[i] = 1;
            if (b->fold_of[i] || opt->fuse) { b->bn_of[i] = next; tail = next; }
        }
        next = b->ncons[tail] == 1 ? b->cons[tail] : -1;
        if (opt->fuse && next >= 0 && op_is(g->layers[next].op, TRAIT_ACTIVATION)) {
            b->act_of[i] = next; tail = next;
        }
        next = b->ncons[tail] == 1 ? b->cons[tail] : -1;
        if (opt->fuse && next >= 0 && op_is(g->layers[next].op, TRAIT_CHAIN_ADD)) {
            const Layer *a = &g->layers[next];
            /* an add of two conv chains (a projection shortcut) is absorbed once */
            if (a->in[0] != a->in[1] && b->main_of[next] < 0) { b->add_of[i] = next; tail = next; }
        }
        b->tail_of[i] = tail;
        for (int j = i + 1; j <= tail; j++)
            if (j == b->bn_of[i] || j == b->act_of[i] || j == b->add_of[i]) b->main_of[j] = i;
    }
    for (int i = 0; i < L; i++)
        if (b->main_of[i] < 0 && b->tail_of[i] != i) b->main_at[b->tail_of[i]] = i;
}

/* Pass nodes. Contract: one node per chain (or unabsorbed layer), in the
 * order of each chain's last layer, so every node's inputs are made by
 * earlier nodes; a fused add's other input becomes in[1]. Every node but the
 * loss gets its output tensor; layer_node/layer_tensor map layers to them
 * (-1 inside a chain); the labels tensor comes last. Returns 0, or 1 when
 * out of memory. */
static int pass_nodes(Builder *b)
{
    Plan *p = b->p;
    const Graph *g = b->g;
    int L = g->n_layers, N = p->opt.batch;
    for (int i = 0; i < L; i++) { p->layer_node[i] = -1; p->layer_tensor[i] = -1; }
    for (int i = 0; i < L; i++) {
        int m;
        if (b->main_at[i] >= 0) m = b->main_at[i];
        else if (b->main_of[i] >= 0) continue;       /* absorbed, emitted at its tail */
        else if (b->tail_of[i] != i) continue;       /* a main whose tail comes later */
        else m = i;
        const Layer *l = &g->layers[m];
        int ni = p->n_nodes++;
        Node *nd = &p->nodes[ni];
        nd->layer = m;
        nd->bn = b->bn_of[m]; nd->act = b->act_of[m]; nd->add = b->add_of[m];
        nd->fold = b->fold_of[m];
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
        if (op_is(l->op, TRAIT_LOSS)) {
            p->loss_node = ni;
            p->logits_tensor = nd->in[0];
            continue;
        }
        Shape o = g->layers[i].out;
        nd->out = new_tensor(b, (size_t)N * o.h * o.w * o.c, T_ACT, ni);
        if (nd->out < 0) return 1;
        p->layer_tensor[i] = nd->out;
        if (op_is(l->op, TRAIT_INPUT)) p->input_tensor = nd->out;
    }
    p->labels_tensor = new_tensor(b, (size_t)N, T_LABELS, 0);
    return p->labels_tensor < 0;
}

/* Which inputs node nd's backward reads: 1 when it reads in[0] (and in[1]
 * for TRAIT_BWD_X2), by the op's traits and what trains. */
static int node_saves_input(const Node *nd, const Layer *l, BnMode bm)
{
    unsigned t = op_traits(l->op);
    if (!nd->bwd) return 0;
    if (t & TRAIT_BWD_X) return 1;
    if (t & TRAIT_BWD_X_FOR_W) return nd->train_w;
    if (t & TRAIT_BN) return bm == BN_TRAIN || nd->train_bn;
    return 0;
}

/* Pass backward marking, for node ni (nodes are visited in forward order).
 * Contract: train_w/train_bn from the layer flags; bwd iff something trains
 * in the node or an input comes from a node with a backward step (never for
 * the input; the loss's gradient is its step's din[0]); the BN statistics
 * tensor for a BN on batch statistics; which inputs and which z the backward
 * reads (a chain head keeps z apart from out when its epilogue's backward
 * needs it); the gradient tensors; the workspace; the derived constants
 * (folded weights, or BN scale/shift/invstd). Returns 0, or 1 when out of
 * memory. */
static int mark_node(Builder *b, int ni)
{
    Plan *p = b->p;
    const Graph *g = b->g;
    int N = p->opt.batch;
    Node *nd = &p->nodes[ni];
    const Layer *l = &g->layers[nd->layer];
    unsigned tr = op_traits(l->op);
    int bnl = plan_node_bn(p, nd);
    nd->train_w = !(tr & TRAIT_BN) && layer_trains(g, nd->layer);
    nd->train_bn = bnl >= 0 && layer_trains(g, bnl);
    int need = nd->train_w || nd->train_bn;
    for (int k = 0; k < nd->n_in; k++)
        if (nd->in[k] >= 0 && p->nodes[p->tensors[nd->in[k]].node].bwd) need = 1;
    if (tr & TRAIT_INPUT) need = 0;
    nd->bwd = need && !(tr & TRAIT_LOSS);
    /* the loss's "backward" (dlogits) is part of the loss step */
    if ((tr & TRAIT_LOSS) && need && (nd->din[0] = grad_tensor(b, nd->in[0])) < 0) return 1;
    int has_epi = node_has_epilogue(nd);
    BnMode bm = bnl >= 0 ? g->layers[bnl].bn_mode : BN_FROZEN;
    if (bnl >= 0 && bm == BN_TRAIN) {
        nd->stats = new_tensor(b, 2 * (size_t)g->layers[bnl].out.c, T_STAT, ni);
        if (nd->stats < 0) return 1;
    }
    nd->save_in = node_saves_input(nd, l, bm);
    if (tr & TRAIT_CHAIN_HEAD) {
        nd->save_z = nd->bwd && ((bnl >= 0 && (bm == BN_TRAIN || nd->train_bn)) || nd->act >= 0);
        if (has_epi && nd->save_z) {
            Shape o = l->out;
            nd->z = new_tensor(b, (size_t)N * o.h * o.w * o.c, T_ACT, ni);
            if (nd->z < 0) return 1;
        } else {
            nd->z = nd->out;
        }
    }
    /* an epilogue's backward writes dz to the workspace after the im2col columns */
    nd->ws = layer_workspace(g, l, N) + (has_epi && nd->bwd ? p->tensors[nd->out].floats : 0);
    if (nd->bwd) {
        if ((nd->dout = grad_tensor(b, nd->out)) < 0) return 1;
        for (int k = 0; k < nd->n_in; k++)
            if (nd->in[k] >= 0 && p->nodes[p->tensors[nd->in[k]].node].bwd &&
                (nd->din[k] = grad_tensor(b, nd->in[k])) < 0)
                return 1;
    }
    if (nd->fold) {
        nd->derived = p->derived_floats;
        p->derived_floats += g->params[l->first_param].numel + (size_t)l->out.c;
    } else if (bnl >= 0) {
        /* scale, shift, invstd from the running statistics */
        nd->derived = p->derived_floats;
        p->derived_floats += 3 * (size_t)g->layers[bnl].out.c;
    }
    return 0;
}

/* Pass steps. Contract: a forward step per node but the input (whose
 * "step" is 0), the loss step in forward order, then a backward step per
 * node with bwd in reverse order; fwd_step/bwd_step map nodes to them (-1).
 * The update step is appended by pass_params. Returns 0, or 1 when out of
 * memory. */
static int pass_steps(Builder *b)
{
    Plan *p = b->p;
    p->steps = malloc(sizeof(Step) * (size_t)(2 * p->n_nodes + 2));
    b->fwd_step = malloc(sizeof(int) * (size_t)p->n_nodes);
    b->bwd_step = malloc(sizeof(int) * (size_t)p->n_nodes);
    if (!p->steps || !b->fwd_step || !b->bwd_step) return 1;
    for (int ni = 0; ni < p->n_nodes; ni++) {
        b->bwd_step[ni] = -1;
        if (op_is(b->g->layers[p->nodes[ni].layer].op, TRAIT_INPUT)) { b->fwd_step[ni] = 0; continue; }
        b->fwd_step[ni] = p->n_steps;
        p->steps[p->n_steps++] = (Step){ni == p->loss_node ? STEP_LOSS : STEP_FWD, ni};
    }
    for (int ni = p->n_nodes - 1; ni >= 0; ni--)
        if (p->nodes[ni].bwd) {
            b->bwd_step[ni] = p->n_steps;
            p->steps[p->n_steps++] = (Step){STEP_BWD, ni};
        }
    return 0;
}

/* Pass flags -> parameter arena. Contract: trainable parameters first (in
 * graph order, merged into LR-group segments), then frozen learnable ones,
 * then BN statistics; grads and momentum mirror the trainable part; one
 * update step when anything trains. */
static void pass_params(Builder *b)
{
    Plan *p = b->p;
    const Graph *g = b->g;
    size_t off = 0;
    for (int pass = 0; pass < 3; pass++) {
        for (int i = 0; i < g->n_params; i++) {
            int tr = param_trainable(g, i), le = g->params[i].learnable;
            if (!((pass == 0 && tr) || (pass == 1 && le && !tr) || (pass == 2 && !le))) continue;
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
}

/* Pass lifetimes. Contract: every tensor lives from its first to its last
 * step (writers and readers, forward and backward, the labels from step 0 to
 * the loss; the kept layer's output to the end); the first backward writer
 * of a gradient stores, later ones accumulate (din_acc). Returns 0, 1 when
 * out of memory, 2 when the kept layer is inside a fused node (err says). */
static int pass_lifetimes(Builder *b, char *err, size_t errlen)
{
    Plan *p = b->p;
    const Graph *g = b->g;
    touch(p, p->input_tensor, 0);
    touch(p, p->labels_tensor, 0);
    touch(p, p->labels_tensor, b->fwd_step[p->loss_node]);
    int *written = calloc((size_t)p->n_tensors, sizeof(int));
    if (!written) return 1;
    for (int ni = 0; ni < p->n_nodes; ni++) {
        Node *nd = &p->nodes[ni];
        int fs = b->fwd_step[ni];
        touch(p, nd->out, fs);
        touch(p, nd->z, fs);
        touch(p, nd->stats, fs);
        for (int k = 0; k < nd->n_in; k++) touch(p, nd->in[k], fs);
    }
    /* the loss writes dlogits */
    Node *ln = &p->nodes[p->loss_node];
    if (ln->din[0] >= 0) { touch(p, ln->din[0], b->fwd_step[p->loss_node]); written[ln->din[0]] = 1; }
    for (int s = 0; s < p->n_steps; s++) {
        if (p->steps[s].kind != STEP_BWD) continue;
        Node *nd = &p->nodes[p->steps[s].node];
        touch(p, nd->dout, s);
        if (nd->save_in) {
            touch(p, nd->in[0], s);
            if (op_is(g->layers[nd->layer].op, TRAIT_BWD_X2)) touch(p, nd->in[1], s);
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
    if (p->opt.keep > 0 && p->opt.keep < g->n_layers) {
        /* keep the layer's output (not absorbed by a fused node) to the end */
        int t = p->layer_tensor[p->opt.keep];
        if (t < 0) {
            snprintf(err, errlen, "layer '%s' is fused into another node; plan with fusion off to keep it",
                     g->layers[p->opt.keep].name);
            return 2;
        }
        touch(p, t, p->n_steps);
    }
    for (int t = 0; t < p->n_tensors; t++)
        if (p->tensors[t].first < 0) p->tensors[t].first = p->tensors[t].last = 0;
    return 0;
}

/* Pass FLOPs. Contract: per image, every layer's forward FLOPs, plus for a
 * node with a backward step its layers' backward: a weighted op
 * (TRAIT_WEIGHTS) costs its forward once for dx (when wanted) and once for
 * the weight gradients (when they train), any other op its forward once. */
static void pass_flops(Builder *b)
{
    Plan *p = b->p;
    const Graph *g = b->g;
    for (int j = 0; j < g->n_layers; j++) {
        int ni = p->layer_node[j];
        if (ni < 0) continue;
        const Node *nd = &p->nodes[ni];
        int64_t f = g->layers[j].flops;
        p->train_flops += f;
        if (!nd->bwd) continue;
        if (op_is(g->layers[j].op, TRAIT_WEIGHTS))
            p->train_flops += f * ((nd->din[0] >= 0) + nd->train_w);
        else
            p->train_flops += f;
    }
}

/* The passes in order (plan.h): chains (fold + fuse), nodes, backward
 * marking, steps, parameters (flags), lifetimes, memory, FLOPs. */
int plan_build(Plan *p, const Graph *g, const PlanOptions *opt, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->g = g;
    p->opt = *opt;
    Builder b = {.p = p, .g = g};
    int rc = plan_alloc(&b);
    if (!rc) {
        pass_chains(&b);
        rc = pass_nodes(&b);
    }
    for (int ni = 0; !rc && ni < p->n_nodes; ni++) rc = mark_node(&b, ni);
    if (!rc) rc = pass_steps(&b);
    if (!rc) {
        pass_params(&b);
        rc = pass_lifetimes(&b, err, errlen);
    }
    if (!rc) {
        /* memory: first-fit offsets over lifetimes; the largest node's workspace */
        p->act_floats = assign_offsets(p);
        rc = p->act_floats == KILN_NONE;
        for (int ni = 0; ni < p->n_nodes; ni++)
            if (p->nodes[ni].ws > p->ws_floats) p->ws_floats = p->nodes[ni].ws;
    }
    if (!rc) pass_flops(&b);
    builder_free(&b);
    if (rc) {
        if (rc == 1) snprintf(err, errlen, "out of memory while planning");
        plan_free(p);
        return 1;
    }
    return 0;
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
        if (nd->bwd || op_is(l->op, TRAIT_LOSS | TRAIT_RANDOM)) break;
        int b = op_is(l->op, TRAIT_BN) ? nd->layer : nd->bn;
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
