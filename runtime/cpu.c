/* runtime/cpu.c — the CPU executor: runs a plan's steps with the C kernels.
 *
 * Arenas are allocated once at exactly the sizes the plan predicted. The
 * dispatch is two switch statements over OpKind (forward, backward) that only
 * pick arena pointers and call kernels; all decisions were taken by the plan.
 * Derived constants (folded weights, BN scale/shift/invstd) are recomputed
 * when they can have changed: a node's folded weights at its first forward
 * after write_params, the others on every forward.
 */
#include "runtime/backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/kernels.h"

typedef struct {
    const Plan *p;
    float *params, *grads, *mom, *act, *derived, *ws;
    int n;                  /* images in the current batch */
    char *dirty;            /* per node: its folded constants need recomputing */
    uint64_t step;          /* dropout seed counter */
    int entry_node;         /* batches enter after this node (0: the input) */
    int entry_tensor;       /* where upload() writes */
} Cpu;

/* ---- pointers into the arenas ------------------------------------------------ */

static float *T(Cpu *c, int t) { return t < 0 ? NULL : c->act + c->p->tensors[t].offset; }

/* Parameter k (0-based) of layer l, and its gradient (NULL if frozen). */
static float *P(Cpu *c, int layer, int k)
{
    return c->params + c->p->param_off[c->p->g->layers[layer].first_param + k];
}
static float *G(Cpu *c, int layer, int k)
{
    size_t o = c->p->grad_off[c->p->g->layers[layer].first_param + k];
    return o == KILN_NONE ? NULL : c->grads + o;
}
static int has_bias(const Layer *l)
{
    return (l->op == OP_DENSE && l->a.dense.bias) ||
           ((l->op == OP_CONV || l->op == OP_DWCONV) && l->a.conv.bias);
}

static ConvShape conv_shape(const Graph *g, const Layer *l, int n)
{
    Shape x = g->layers[l->in[0]].out;
    const ConvAttr *a = &l->a.conv;
    return (ConvShape){n, x.h, x.w, x.c, l->out.c, a->kh, a->kw, a->sh, a->sw,
                       a->pt, a->pl, l->out.h, l->out.w};
}

static Act act_of(OpKind op)
{
    return (Act)op_act(op);   /* ActKind follows Act's order */
}

/* The BN layer a node normalizes with (own or absorbed, not folded), or -1. */
static int node_bn(const Plan *p, const Node *nd)
{
    if (p->g->layers[nd->layer].op == OP_BN) return nd->layer;
    return nd->fold ? -1 : nd->bn;
}

/* ---- derived constants ----------------------------------------------------- */

static void compute_derived(Cpu *c, int ni)
{
    const Plan *p = c->p;
    const Node *nd = &p->nodes[ni];
    const Graph *g = p->g;
    if (nd->derived == KILN_NONE) return;
    float *d = c->derived + nd->derived;
    if (nd->fold) {
        const Layer *l = &g->layers[nd->layer];
        const Layer *bl = &g->layers[nd->bn];
        int C = bl->out.c;
        float scale[C > 0 ? C : 1], shift[C > 0 ? C : 1];
        bn_scale_shift(scale, shift, P(c, nd->bn, 0), P(c, nd->bn, 1), P(c, nd->bn, 2),
                       P(c, nd->bn, 3), bl->a.bn.eps, C);
        size_t numel = g->params[l->first_param].numel;
        bn_fold(d, d + numel, P(c, nd->layer, 0), has_bias(l) ? P(c, nd->layer, 1) : NULL,
                scale, shift, numel / (size_t)C, C);
        return;
    }
    int b = node_bn(p, nd);
    const Layer *bl = &g->layers[b];
    int C = bl->out.c;
    bn_scale_shift(d, d + C, P(c, b, 0), P(c, b, 1), P(c, b, 2), P(c, b, 3), bl->a.bn.eps, C);
    for (int k = 0; k < C; k++) d[2 * C + k] = 1.0f / sqrtf(P(c, b, 3)[k] + bl->a.bn.eps);
}

/* ---- forward ------------------------------------------------------------------ */

static Epilogue node_epilogue(const Plan *p, const Node *nd, int training)
{
    Epilogue e = {EPI_BN_NONE, ACT_NONE, nd->add >= 0, 0, 0};
    int b = node_bn(p, nd);
    if (b >= 0) {
        const Layer *bl = &p->g->layers[b];
        e.bn = training && bl->bn_mode == BN_TRAIN ? EPI_BN_TRAIN : EPI_BN_AFFINE;
        e.eps = bl->a.bn.eps;
        e.momentum = bl->a.bn.momentum;
    }
    if (nd->act >= 0) e.act = act_of(p->g->layers[nd->act].op);
    return e;
}

static int has_epilogue(const Node *nd)
{
    return (nd->bn >= 0 && !nd->fold) || nd->act >= 0 || nd->add >= 0;
}

static void forward_node(Cpu *c, int ni, int training)
{
    const Plan *p = c->p;
    const Graph *g = p->g;
    const Node *nd = &p->nodes[ni];
    const Layer *l = &g->layers[nd->layer];
    int n = c->n;
    Shape xs = l->n_in ? g->layers[l->in[0]].out : l->out;
    size_t xin = (size_t)n * xs.h * xs.w * xs.c;          /* input elements */
    size_t M = (size_t)n * l->out.h * l->out.w;           /* output rows */
    float *x = nd->n_in ? T(c, nd->in[0]) : NULL, *out = T(c, nd->out);
    int b = node_bn(p, nd);
    if (nd->fold ? c->dirty[ni] : b >= 0 && !(training && g->layers[b].bn_mode == BN_TRAIN)) {
        compute_derived(c, ni);
        c->dirty[ni] = 0;
    }
    switch (l->op) {
    case OP_INPUT: case OP_COUNT:
        break;
    case OP_CONV: case OP_DWCONV: {
        ConvShape s = conv_shape(g, l, n);
        const float *w = P(c, nd->layer, 0), *bias = has_bias(l) ? P(c, nd->layer, 1) : NULL;
        if (nd->fold) {
            w = c->derived + nd->derived;
            bias = w + g->params[l->first_param].numel;
        }
        float *z = T(c, nd->z);
        if (l->op == OP_CONV) conv2d_forward(z, x, w, bias, c->ws, &s);
        else dwconv2d_forward(z, x, w, bias, &s);
        if (has_epilogue(nd)) {
            Epilogue e = node_epilogue(p, nd, training);
            float *st = T(c, nd->stats), *d = nd->derived != KILN_NONE ? c->derived + nd->derived : NULL;
            int K = l->out.c;
            epilogue_forward(out, st, st ? st + K : NULL, z,
                             b >= 0 ? P(c, b, 0) : NULL, b >= 0 ? P(c, b, 1) : NULL,
                             b >= 0 ? P(c, b, 2) : NULL, b >= 0 ? P(c, b, 3) : NULL,
                             d, d ? d + K : NULL, nd->add >= 0 ? T(c, nd->in[1]) : NULL,
                             &e, M, K);
        }
        break;
    }
    case OP_BN: {
        int C = l->out.c;
        if (training && l->bn_mode == BN_TRAIN) {
            float *st = T(c, nd->stats);
            bn_train_forward(out, st, st + C, x, P(c, b, 0), P(c, b, 1), P(c, b, 2), P(c, b, 3),
                             l->a.bn.momentum, l->a.bn.eps, M, C);
        } else {
            float *d = c->derived + nd->derived;
            channel_affine_forward(out, x, d, d + C, M, C);
        }
        break;
    }
    case OP_RELU: case OP_RELU6: case OP_SWISH: case OP_SIGMOID: case OP_GELU:
        act_forward(out, x, xin, act_of(l->op));
        break;
    case OP_LAYERNORM:   /* the per-row statistics go to the workspace */
        layernorm_forward(out, c->ws, x, P(c, nd->layer, 0), P(c, nd->layer, 1), l->a.norm.eps,
                          M, l->out.c);
        break;
    case OP_LAYERSCALE:
        layerscale_forward(out, x, P(c, nd->layer, 0), M, l->out.c);
        break;
    case OP_ADD:
        add_forward(out, x, T(c, nd->in[1]), xin);
        break;
    case OP_MUL:
        chanmul_forward(out, x, T(c, nd->in[1]), n, xs.h * xs.w, xs.c);
        break;
    case OP_GAP:
        gap_forward(out, x, n, xs.h * xs.w, xs.c);
        break;
    case OP_MAXPOOL: {
        ConvShape s = conv_shape(g, l, n);
        maxpool_forward(out, x, &s);
        break;
    }
    case OP_ZEROPAD: {
        const PadAttr *a = &l->a.pad;
        zeropad_forward(out, x, n, xs.h, xs.w, xs.c, a->pt, a->pb, a->pl, a->pr);
        break;
    }
    case OP_DENSE:
        dense_forward(out, x, P(c, nd->layer, 0), has_bias(l) ? P(c, nd->layer, 1) : NULL,
                      n, xs.h * xs.w * xs.c, l->out.c);
        break;
    case OP_DROPOUT:
        if (training) dropout_forward(out, x, xin, l->a.dropout.rate, c->step * 1000003u + (uint64_t)nd->layer);
        else grad_pass(out, x, xin, 0);
        break;
    case OP_LOSS:
        break;
    }
}

/* ---- backward ------------------------------------------------------------------- */

static void backward_node(Cpu *c, int ni)
{
    const Plan *p = c->p;
    const Graph *g = p->g;
    const Node *nd = &p->nodes[ni];
    const Layer *l = &g->layers[nd->layer];
    int n = c->n;
    Shape xs = g->layers[l->in[0]].out;
    size_t xin = (size_t)n * xs.h * xs.w * xs.c;
    size_t M = (size_t)n * l->out.h * l->out.w;
    float *x = nd->save_in ? T(c, nd->in[0]) : NULL;
    float *dx = T(c, nd->din[0]), *dout = T(c, nd->dout);
    int acc = nd->din_acc[0];
    int b = node_bn(p, nd);
    switch (l->op) {
    case OP_CONV: case OP_DWCONV: {
        ConvShape s = conv_shape(g, l, n);
        const float *w = nd->fold ? c->derived + nd->derived : P(c, nd->layer, 0);
        const float *d = dout;
        size_t cws = conv2d_workspace(&s);
        if (l->op == OP_DWCONV) cws = 0;
        if (has_epilogue(nd)) {
            Epilogue e = node_epilogue(p, nd, 1);
            int K = l->out.c;
            float *dz = c->ws + cws, *st = T(c, nd->stats);
            float *der = nd->derived != KILN_NONE && !nd->fold ? c->derived + nd->derived : NULL;
            const float *mean = st ? st : (der ? P(c, b, 2) : NULL);
            const float *invstd = st ? st + K : (der ? der + 2 * K : NULL);
            epilogue_backward(dz, b >= 0 && nd->train_bn ? G(c, b, 0) : NULL,
                              b >= 0 && nd->train_bn ? G(c, b, 1) : NULL,
                              T(c, nd->din[1]), nd->din_acc[1], dout,
                              nd->save_z ? T(c, nd->z) : NULL, mean, invstd,
                              b >= 0 ? P(c, b, 0) : NULL, der,
                              /* batch-statistics BN takes beta where the others take shift */
                              e.bn == EPI_BN_TRAIN ? P(c, b, 1) : der ? der + K : NULL, &e, M, K);
            d = dz;
        }
        float *dw = nd->train_w ? G(c, nd->layer, 0) : NULL;
        float *db = nd->train_w && has_bias(l) && !nd->fold ? G(c, nd->layer, 1) : NULL;
        if (!dx && !dw && !db) break;
        if (l->op == OP_CONV) conv2d_backward(dx, dw, db, d, x, w, c->ws, &s, acc);
        else dwconv2d_backward(dx, dw, db, d, x, w, &s, acc);
        break;
    }
    case OP_BN: {
        int C = l->out.c;
        float *dg = nd->train_bn ? G(c, b, 0) : NULL, *dbeta = nd->train_bn ? G(c, b, 1) : NULL;
        if (l->bn_mode == BN_TRAIN) {
            float *st = T(c, nd->stats);
            bn_train_backward(dx, dg, dbeta, dout, x, st, st + C, P(c, b, 0), M, C, acc);
        } else {
            bn_infer_backward(dx, dg, dbeta, dout, x, P(c, b, 0), P(c, b, 2), P(c, b, 3),
                              l->a.bn.eps, M, C, acc);
        }
        break;
    }
    case OP_RELU: case OP_RELU6: case OP_SWISH: case OP_SIGMOID: case OP_GELU:
        if (dx) act_backward(dx, dout, x, xin, act_of(l->op), acc);
        break;
    case OP_LAYERNORM: {   /* statistics recomputed into the workspace */
        int C = l->out.c;
        layernorm_forward(NULL, c->ws, x, NULL, NULL, l->a.norm.eps, M, C);
        layernorm_backward(dx, nd->train_w ? G(c, nd->layer, 0) : NULL,
                           nd->train_w ? G(c, nd->layer, 1) : NULL, dout, x, c->ws,
                           P(c, nd->layer, 0), M, C, acc);
        break;
    }
    case OP_LAYERSCALE:
        layerscale_backward(dx, nd->train_w ? G(c, nd->layer, 0) : NULL, dout, x,
                            P(c, nd->layer, 0), M, l->out.c, acc);
        break;
    case OP_ADD:
        if (dx) grad_pass(dx, dout, xin, acc);
        if (nd->din[1] >= 0) grad_pass(T(c, nd->din[1]), dout, xin, nd->din_acc[1]);
        break;
    case OP_MUL:
        chanmul_backward(dx, T(c, nd->din[1]), dout, x, T(c, nd->in[1]), n, xs.h * xs.w, xs.c,
                         acc, nd->din_acc[1]);
        break;
    case OP_GAP:
        if (dx) gap_backward(dx, dout, n, xs.h * xs.w, xs.c, acc);
        break;
    case OP_MAXPOOL: {
        ConvShape s = conv_shape(g, l, n);
        if (dx) maxpool_backward(dx, dout, x, &s, acc);
        break;
    }
    case OP_ZEROPAD: {
        const PadAttr *a = &l->a.pad;
        if (dx) zeropad_backward(dx, dout, n, xs.h, xs.w, xs.c, a->pt, a->pb, a->pl, a->pr, acc);
        break;
    }
    case OP_DENSE:
        dense_backward(dx, nd->train_w ? G(c, nd->layer, 0) : NULL,
                       nd->train_w && has_bias(l) ? G(c, nd->layer, 1) : NULL, dout, x,
                       P(c, nd->layer, 0), n, xs.h * xs.w * xs.c, l->out.c, acc);
        break;
    case OP_DROPOUT:
        if (dx) dropout_backward(dx, dout, xin, l->a.dropout.rate, c->step * 1000003u + (uint64_t)nd->layer, acc);
        break;
    case OP_INPUT: case OP_LOSS: case OP_COUNT:
        break;
    }
}

/* ---- the interface ------------------------------------------------------------- */

static void cpu_upload(Backend *be, const float *x, const int32_t *y, int n)
{
    Cpu *c = be->impl;
    const Plan *p = c->p;
    c->n = n;
    int t = c->entry_tensor;
    memcpy(T(c, t), x, sizeof(float) * p->tensors[t].floats / (size_t)p->opt.batch * (size_t)n);
    memcpy(T(c, p->labels_tensor), y, sizeof(int32_t) * (size_t)n);
}

/* Forward steps (and the loss) after the entry node, up to node `last`
 * (-1: all). Returns the mean loss. */
static double run_forward(Cpu *c, int training, int *correct, int last)
{
    const Plan *p = c->p;
    double loss = 0;
    for (int s = 0; s < p->n_steps; s++) {
        const Step *st = &p->steps[s];
        if (st->kind == STEP_FWD && st->node <= c->entry_node) continue;
        if (last >= 0 && st->node > last) break;
        if (st->kind == STEP_FWD) {
            forward_node(c, st->node, training);
        } else if (st->kind == STEP_LOSS) {
            const Node *ln = &p->nodes[p->loss_node];
            int K = p->g->layers[ln->layer].out.c;
            loss = softmax_ce(training ? T(c, ln->din[0]) : NULL, correct, T(c, p->logits_tensor),
                              (const int32_t *)T(c, p->labels_tensor), c->n, K);
        }
    }
    return loss;
}

static int all_finite(const float *a, size_t n)
{
    int ok = 1;
    #pragma omp parallel for reduction(&&:ok) schedule(static)
    for (size_t i = 0; i < n; i++) ok = ok && isfinite(a[i]);
    return ok;
}

static int cpu_train_step(Backend *be, int n, const StepConfig *cfg, double *loss, int *correct)
{
    Cpu *c = be->impl;
    const Plan *p = c->p;
    c->n = n;
    c->step++;
    *correct = 0;
    *loss = run_forward(c, 1, correct, -1);
    if (!isfinite(*loss)) return 1;
    for (int s = 0; s < p->n_steps; s++)
        if (p->steps[s].kind == STEP_BWD) backward_node(c, p->steps[s].node);
    if (!p->trainable_floats) return 0;
    if (!all_finite(c->grads, p->grad_floats)) return 1;
    LrSegment segs[p->n_segs > 0 ? p->n_segs : 1];
    for (int i = 0; i < p->n_segs; i++) {
        int gi = p->segs[i].group;
        segs[i] = (LrSegment){p->segs[i].begin, p->segs[i].end,
                              gi < cfg->n_groups ? cfg->group_lr[gi] : cfg->group_lr[0],
                              cfg->weight_decay};
    }
    sgd_update(c->params, c->grads, c->mom, p->trainable_floats, segs, p->n_segs, cfg->momentum);
    return 0;
}

static void cpu_evaluate(Backend *be, int n, double *loss, int *correct)
{
    Cpu *c = be->impl;
    c->n = n;
    *correct = 0;
    *loss = run_forward(c, 0, correct, -1);
}

static void cpu_extract(Backend *be, int n, int cut, float *dst)
{
    Cpu *c = be->impl;
    const Plan *p = c->p;
    int correct = 0, t = p->layer_tensor[cut];
    c->n = n;
    run_forward(c, 0, &correct, p->layer_node[cut]);
    memcpy(dst, T(c, t), sizeof(float) * plan_layer_floats(p, cut) * (size_t)n);
}

static void cpu_set_entry(Backend *be, int cut)
{
    Cpu *c = be->impl;
    c->entry_node = cut > 0 ? c->p->layer_node[cut] : 0;
    c->entry_tensor = cut > 0 ? c->p->layer_tensor[cut] : c->p->input_tensor;
}

static uint64_t cpu_get_step(Backend *be) { return ((Cpu *)be->impl)->step; }
static void cpu_set_step(Backend *be, uint64_t step) { ((Cpu *)be->impl)->step = step; }

static const float *cpu_logits(Backend *be)
{
    Cpu *c = be->impl;
    return T(c, c->p->logits_tensor);
}

static const float *cpu_layer_output(Backend *be, int layer)
{
    Cpu *c = be->impl;
    return T(c, c->p->layer_tensor[layer]);
}

static void cpu_read_params(Backend *be, float *dst)
{
    Cpu *c = be->impl;
    memcpy(dst, c->params, sizeof(float) * c->p->param_floats);
}

static void cpu_write_params(Backend *be, const float *src)
{
    Cpu *c = be->impl;
    memcpy(c->params, src, sizeof(float) * c->p->param_floats);
    memset(c->dirty, 1, (size_t)c->p->n_nodes);
}

static void cpu_read_momentum(Backend *be, float *dst)
{
    Cpu *c = be->impl;
    memcpy(dst, c->mom, sizeof(float) * c->p->opt_floats);
}

static void cpu_write_momentum(Backend *be, const float *src)
{
    Cpu *c = be->impl;
    memcpy(c->mom, src, sizeof(float) * c->p->opt_floats);
}

static void cpu_read_grads(Backend *be, float *dst)
{
    Cpu *c = be->impl;
    memcpy(dst, c->grads, sizeof(float) * c->p->grad_floats);
}

static void cpu_destroy(Backend *be)
{
    if (!be) return;
    Cpu *c = be->impl;
    if (c) {
        free(c->params); free(c->grads); free(c->mom);
        free(c->act); free(c->derived); free(c->ws); free(c->dirty);
        free(c);
    }
    free(be);
}

/* calloc that never returns NULL for a zero size. */
static float *arena(size_t floats) { return calloc(floats ? floats : 1, sizeof(float)); }

Backend *cpu_backend_create(const Plan *p, char *err, size_t errlen)
{
    Backend *be = calloc(1, sizeof *be);
    Cpu *c = calloc(1, sizeof *c);
    if (!be || !c) { free(be); free(c); snprintf(err, errlen, "out of memory"); return NULL; }
    be->impl = c;
    c->p = p;
    c->params = arena(p->param_floats);
    c->grads = arena(p->grad_floats);
    c->mom = arena(p->opt_floats);
    c->act = arena(p->act_floats);
    c->derived = arena(p->derived_floats);
    c->ws = arena(p->ws_floats);
    c->dirty = malloc((size_t)p->n_nodes + 1);
    if (c->dirty) memset(c->dirty, 1, (size_t)p->n_nodes);
    c->entry_tensor = p->input_tensor;
    if (!c->params || !c->grads || !c->mom || !c->act || !c->derived || !c->ws || !c->dirty) {
        snprintf(err, errlen, "cannot allocate the plan's %zu bytes of arenas", plan_bytes(p));
        cpu_destroy(be);
        return NULL;
    }
    be->name = "cpu";
    be->plan = p;
    be->upload = cpu_upload;
    be->train_step = cpu_train_step;
    be->evaluate = cpu_evaluate;
    be->logits = cpu_logits;
    be->layer_output = cpu_layer_output;
    be->read_params = cpu_read_params;
    be->write_params = cpu_write_params;
    be->read_momentum = cpu_read_momentum;
    be->write_momentum = cpu_write_momentum;
    be->read_grads = cpu_read_grads;
    be->extract = cpu_extract;
    be->set_entry = cpu_set_entry;
    be->get_step = cpu_get_step;
    be->set_step = cpu_set_step;
    be->destroy = cpu_destroy;
    return be;
}
