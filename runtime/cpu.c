/* runtime/cpu.c — the CPU executor: runs a plan's steps with the C kernels.
 *
 * Arenas are allocated once at exactly the sizes the plan predicted. The
 * dispatch is one table indexed by OpKind (CPU_OPS: forward and backward per
 * op) whose entries only pick arena pointers and call kernels; all decisions
 * were taken by the plan, and nothing else here asks which op a node is.
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

static ConvShape conv_shape(const Graph *g, const Layer *l, int n)
{
    Shape x = g->layers[l->in[0]].out;
    const ConvAttr *a = &l->a.conv;
    return (ConvShape){n, x.h, x.w, x.c, l->out.c, a->kh, a->kw, a->sh, a->sw,
                       a->pt, a->pl, l->out.h, l->out.w};
}

/* The kernels' Act has the registry's ActKind values. */
_Static_assert((int)ACT_NONE == (int)ACTK_NONE && (int)ACT_RELU == (int)ACTK_RELU &&
               (int)ACT_RELU6 == (int)ACTK_RELU6 && (int)ACT_SWISH == (int)ACTK_SWISH &&
               (int)ACT_SIGMOID == (int)ACTK_SIGMOID, "Act and ActKind differ");

static Act act_of(OpKind op) { return (Act)op_act(op); }

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
        bn_fold(d, d + numel, P(c, nd->layer, 0), layer_has_bias(l) ? P(c, nd->layer, 1) : NULL,
                scale, shift, numel / (size_t)C, C);
        return;
    }
    int b = plan_node_bn(p, nd);
    const Layer *bl = &g->layers[b];
    int C = bl->out.c;
    bn_scale_shift(d, d + C, P(c, b, 0), P(c, b, 1), P(c, b, 2), P(c, b, 3), bl->a.bn.eps, C);
    for (int k = 0; k < C; k++) d[2 * C + k] = 1.0f / sqrtf(P(c, b, 3)[k] + bl->a.bn.eps);
}

/* ---- one node's call ---------------------------------------------------------- */

/* What an op's forward or backward needs, picked from the arenas once by
 * forward_node / backward_node. */
typedef struct {
    Cpu *c;
    const Plan *p;
    const Graph *g;
    const Node *nd;
    const Layer *l;
    int n;                  /* images */
    Shape xs;               /* input shape per image */
    size_t xin, M;          /* input elements; output rows (n * out.h * out.w) */
    int bn;                 /* plan_node_bn */
    int training;           /* forward only */
    float *x, *out;         /* forward: in[0], out; backward: x when saved */
    float *dx, *dout;       /* backward */
    int acc;                /* backward: add into dx */
} Call;

typedef void (*OpRun)(const Call *k);

static Epilogue node_epilogue(const Call *k)
{
    const Node *nd = k->nd;
    Epilogue e = {EPI_BN_NONE, ACT_NONE, nd->add >= 0, 0, 0};
    if (k->bn >= 0) {
        const Layer *bl = &k->g->layers[k->bn];
        e.bn = k->training && bl->bn_mode == BN_TRAIN ? EPI_BN_TRAIN : EPI_BN_AFFINE;
        e.eps = bl->a.bn.eps;
        e.momentum = bl->a.bn.momentum;
    }
    if (nd->act >= 0) e.act = act_of(k->g->layers[nd->act].op);
    return e;
}

/* ---- forward, per op ------------------------------------------------------------ */

/* A chain head's weights: its kernel and bias, or the folded copies. */
static void head_weights(const Call *k, const float **w, const float **bias)
{
    Cpu *c = k->c;
    const Node *nd = k->nd;
    *w = P(c, nd->layer, 0);
    *bias = layer_has_bias(k->l) ? P(c, nd->layer, 1) : NULL;
    if (nd->fold) {
        *w = c->derived + nd->derived;
        *bias = *w + k->g->params[k->l->first_param].numel;
    }
}

/* A chain head's epilogue (BN, activation, residual add) from z into out. */
static void head_epilogue_forward(const Call *k, const float *z)
{
    Cpu *c = k->c;
    const Node *nd = k->nd;
    int b = k->bn, K = k->l->out.c;
    if (!node_has_epilogue(nd)) return;
    Epilogue e = node_epilogue(k);
    float *st = T(c, nd->stats), *d = nd->derived != KILN_NONE ? c->derived + nd->derived : NULL;
    epilogue_forward(k->out, st, st ? st + K : NULL, z,
                     b >= 0 ? P(c, b, 0) : NULL, b >= 0 ? P(c, b, 1) : NULL,
                     b >= 0 ? P(c, b, 2) : NULL, b >= 0 ? P(c, b, 3) : NULL,
                     d, d ? d + K : NULL, nd->add >= 0 ? T(c, nd->in[1]) : NULL, &e, k->M, K);
}

static void fwd_conv(const Call *k)
{
    ConvShape s = conv_shape(k->g, k->l, k->n);
    const float *w, *bias;
    head_weights(k, &w, &bias);
    float *z = T(k->c, k->nd->z);
    conv2d_forward(z, k->x, w, bias, k->c->ws, &s);
    head_epilogue_forward(k, z);
}

static void fwd_dwconv(const Call *k)
{
    ConvShape s = conv_shape(k->g, k->l, k->n);
    const float *w, *bias;
    head_weights(k, &w, &bias);
    float *z = T(k->c, k->nd->z);
    dwconv2d_forward(z, k->x, w, bias, &s);
    head_epilogue_forward(k, z);
}

static void fwd_bn(const Call *k)
{
    Cpu *c = k->c;
    const Layer *l = k->l;
    int C = l->out.c, b = k->bn;
    if (k->training && l->bn_mode == BN_TRAIN) {
        float *st = T(c, k->nd->stats);
        bn_train_forward(k->out, st, st + C, k->x, P(c, b, 0), P(c, b, 1), P(c, b, 2), P(c, b, 3),
                         l->a.bn.momentum, l->a.bn.eps, k->M, C);
    } else {
        float *d = c->derived + k->nd->derived;
        channel_affine_forward(k->out, k->x, d, d + C, k->M, C);
    }
}

static void fwd_act(const Call *k) { act_forward(k->out, k->x, k->xin, act_of(k->l->op)); }

static void fwd_add(const Call *k) { add_forward(k->out, k->x, T(k->c, k->nd->in[1]), k->xin); }

static void fwd_mul(const Call *k)
{
    chanmul_forward(k->out, k->x, T(k->c, k->nd->in[1]), k->n, k->xs.h * k->xs.w, k->xs.c);
}

static void fwd_gap(const Call *k) { gap_forward(k->out, k->x, k->n, k->xs.h * k->xs.w, k->xs.c); }

static void fwd_maxpool(const Call *k)
{
    ConvShape s = conv_shape(k->g, k->l, k->n);
    maxpool_forward(k->out, k->x, &s);
}

static void fwd_zeropad(const Call *k)
{
    const PadAttr *a = &k->l->a.pad;
    zeropad_forward(k->out, k->x, k->n, k->xs.h, k->xs.w, k->xs.c, a->pt, a->pb, a->pl, a->pr);
}

static void fwd_dense(const Call *k)
{
    const Layer *l = k->l;
    int layer = k->nd->layer;
    dense_forward(k->out, k->x, P(k->c, layer, 0), layer_has_bias(l) ? P(k->c, layer, 1) : NULL,
                  k->n, k->xs.h * k->xs.w * k->xs.c, l->out.c);
}

/* The dropout mask's seed: the step counter and the layer. */
static uint64_t dropout_seed(const Call *k) { return k->c->step * 1000003u + (uint64_t)k->nd->layer; }

static void fwd_dropout(const Call *k)
{
    if (k->training) dropout_forward(k->out, k->x, k->xin, k->l->a.dropout.rate, dropout_seed(k));
    else grad_pass(k->out, k->x, k->xin, 0);
}

/* ---- backward, per op -------------------------------------------------------------- */

/* A chain head's epilogue backward: dz into the workspace after the head's
 * own cws floats; returns the gradient the head's kernel reads (dout itself
 * when there is no epilogue). */
static const float *head_epilogue_backward(const Call *k, size_t cws)
{
    Cpu *c = k->c;
    const Node *nd = k->nd;
    int b = k->bn, K = k->l->out.c;
    if (!node_has_epilogue(nd)) return k->dout;
    Epilogue e = node_epilogue(k);
    float *dz = c->ws + cws, *st = T(c, nd->stats);
    float *der = nd->derived != KILN_NONE && !nd->fold ? c->derived + nd->derived : NULL;
    const float *mean = st ? st : (der ? P(c, b, 2) : NULL);
    const float *invstd = st ? st + K : (der ? der + 2 * K : NULL);
    epilogue_backward(dz, b >= 0 && nd->train_bn ? G(c, b, 0) : NULL,
                      b >= 0 && nd->train_bn ? G(c, b, 1) : NULL,
                      T(c, nd->din[1]), nd->din_acc[1], k->dout,
                      nd->save_z ? T(c, nd->z) : NULL, mean, invstd,
                      b >= 0 ? P(c, b, 0) : NULL, der,
                      /* batch-statistics BN takes beta where the others take shift */
                      e.bn == EPI_BN_TRAIN ? P(c, b, 1) : der ? der + K : NULL, &e, k->M, K);
    return dz;
}

/* A chain head's weight gradients (NULL when frozen; no bias gradient for a
 * folded head, whose bias is derived). */
static void head_grads(const Call *k, float **dw, float **db)
{
    const Node *nd = k->nd;
    *dw = nd->train_w ? G(k->c, nd->layer, 0) : NULL;
    *db = nd->train_w && layer_has_bias(k->l) && !nd->fold ? G(k->c, nd->layer, 1) : NULL;
}

static void bwd_conv(const Call *k)
{
    ConvShape s = conv_shape(k->g, k->l, k->n);
    const float *w = k->nd->fold ? k->c->derived + k->nd->derived : P(k->c, k->nd->layer, 0);
    const float *d = head_epilogue_backward(k, conv2d_workspace(&s));
    float *dw, *db;
    head_grads(k, &dw, &db);
    if (k->dx || dw || db) conv2d_backward(k->dx, dw, db, d, k->x, w, k->c->ws, &s, k->acc);
}

static void bwd_dwconv(const Call *k)
{
    ConvShape s = conv_shape(k->g, k->l, k->n);
    const float *w = k->nd->fold ? k->c->derived + k->nd->derived : P(k->c, k->nd->layer, 0);
    const float *d = head_epilogue_backward(k, 0);
    float *dw, *db;
    head_grads(k, &dw, &db);
    if (k->dx || dw || db) dwconv2d_backward(k->dx, dw, db, d, k->x, w, &s, k->acc);
}

static void bwd_bn(const Call *k)
{
    Cpu *c = k->c;
    const Layer *l = k->l;
    int C = l->out.c, b = k->bn;
    float *dg = k->nd->train_bn ? G(c, b, 0) : NULL, *dbeta = k->nd->train_bn ? G(c, b, 1) : NULL;
    if (l->bn_mode == BN_TRAIN) {
        float *st = T(c, k->nd->stats);
        bn_train_backward(k->dx, dg, dbeta, k->dout, k->x, st, st + C, P(c, b, 0), k->M, C, k->acc);
    } else {
        bn_infer_backward(k->dx, dg, dbeta, k->dout, k->x, P(c, b, 0), P(c, b, 2), P(c, b, 3),
                          l->a.bn.eps, k->M, C, k->acc);
    }
}

static void bwd_act(const Call *k)
{
    if (k->dx) act_backward(k->dx, k->dout, k->x, k->xin, act_of(k->l->op), k->acc);
}

static void bwd_add(const Call *k)
{
    if (k->dx) grad_pass(k->dx, k->dout, k->xin, k->acc);
    if (k->nd->din[1] >= 0) grad_pass(T(k->c, k->nd->din[1]), k->dout, k->xin, k->nd->din_acc[1]);
}

static void bwd_mul(const Call *k)
{
    const Node *nd = k->nd;
    chanmul_backward(k->dx, T(k->c, nd->din[1]), k->dout, k->x, T(k->c, nd->in[1]), k->n,
                     k->xs.h * k->xs.w, k->xs.c, k->acc, nd->din_acc[1]);
}

static void bwd_gap(const Call *k)
{
    if (k->dx) gap_backward(k->dx, k->dout, k->n, k->xs.h * k->xs.w, k->xs.c, k->acc);
}

static void bwd_maxpool(const Call *k)
{
    ConvShape s = conv_shape(k->g, k->l, k->n);
    if (k->dx) maxpool_backward(k->dx, k->dout, k->x, &s, k->acc);
}

static void bwd_zeropad(const Call *k)
{
    const PadAttr *a = &k->l->a.pad;
    if (k->dx) zeropad_backward(k->dx, k->dout, k->n, k->xs.h, k->xs.w, k->xs.c, a->pt, a->pb, a->pl, a->pr, k->acc);
}

static void bwd_dense(const Call *k)
{
    const Node *nd = k->nd;
    const Layer *l = k->l;
    dense_backward(k->dx, nd->train_w ? G(k->c, nd->layer, 0) : NULL,
                   nd->train_w && layer_has_bias(l) ? G(k->c, nd->layer, 1) : NULL, k->dout, k->x,
                   P(k->c, nd->layer, 0), k->n, k->xs.h * k->xs.w * k->xs.c, l->out.c, k->acc);
}

static void bwd_dropout(const Call *k)
{
    if (k->dx) dropout_backward(k->dx, k->dout, k->xin, k->l->a.dropout.rate, dropout_seed(k), k->acc);
}

/* Channel layer norm: the per-row statistics (mean, invstd) go to the
 * workspace in the forward pass and are recomputed there in the backward. */
static void fwd_layernorm(const Call *k)
{
    int L = k->nd->layer;
    layernorm_forward(k->out, k->c->ws, k->x, P(k->c, L, 0), P(k->c, L, 1), k->l->a.norm.eps, k->M,
                      k->l->out.c);
}

static void bwd_layernorm(const Call *k)
{
    int L = k->nd->layer, C = k->l->out.c, tw = k->nd->train_w;
    layernorm_forward(NULL, k->c->ws, k->x, NULL, NULL, k->l->a.norm.eps, k->M, C);
    layernorm_backward(k->dx, tw ? G(k->c, L, 0) : NULL, tw ? G(k->c, L, 1) : NULL, k->dout, k->x,
                       k->c->ws, P(k->c, L, 0), k->M, C, k->acc);
}

static void fwd_layerscale(const Call *k)
{
    layerscale_forward(k->out, k->x, P(k->c, k->nd->layer, 0), k->M, k->l->out.c);
}

static void bwd_layerscale(const Call *k)
{
    int L = k->nd->layer;
    layerscale_backward(k->dx, k->nd->train_w ? G(k->c, L, 0) : NULL, k->dout, k->x, P(k->c, L, 0),
                        k->M, k->l->out.c, k->acc);
}

/* ---- the op table ------------------------------------------------------------------- */

/* Each op's forward and backward on the CPU, by OpKind. The input has no
 * step and the loss runs in the loss step (run_forward), so theirs are NULL.
 * Adding an op: its row here, calling its kernel pair in kernels/cpu/. */
static const struct { OpRun fwd, bwd; } CPU_OPS[OP_COUNT] = {
    [OP_CONV]    = {fwd_conv, bwd_conv},
    [OP_DWCONV]  = {fwd_dwconv, bwd_dwconv},
    [OP_ZEROPAD] = {fwd_zeropad, bwd_zeropad},
    [OP_BN]      = {fwd_bn, bwd_bn},
    [OP_RELU]    = {fwd_act, bwd_act},
    [OP_RELU6]   = {fwd_act, bwd_act},
    [OP_SWISH]   = {fwd_act, bwd_act},
    [OP_SIGMOID] = {fwd_act, bwd_act},
    [OP_ADD]     = {fwd_add, bwd_add},
    [OP_MUL]     = {fwd_mul, bwd_mul},
    [OP_GAP]     = {fwd_gap, bwd_gap},
    [OP_MAXPOOL] = {fwd_maxpool, bwd_maxpool},
    [OP_DENSE]   = {fwd_dense, bwd_dense},
    [OP_DROPOUT] = {fwd_dropout, bwd_dropout},
    [OP_LAYERNORM]  = {fwd_layernorm, bwd_layernorm},
    [OP_GELU]       = {fwd_act, bwd_act},
    [OP_LAYERSCALE] = {fwd_layerscale, bwd_layerscale},
};

/* The call of node ni for a batch of c->n, with its input shape and sizes. */
static Call node_call(Cpu *c, int ni)
{
    const Plan *p = c->p;
    const Node *nd = &p->nodes[ni];
    const Layer *l = &p->g->layers[nd->layer];
    Call k = {.c = c, .p = p, .g = p->g, .nd = nd, .l = l, .n = c->n, .bn = plan_node_bn(p, nd)};
    k.xs = l->n_in ? p->g->layers[l->in[0]].out : l->out;
    k.xin = (size_t)k.n * k.xs.h * k.xs.w * k.xs.c;
    k.M = (size_t)k.n * l->out.h * l->out.w;
    return k;
}

static void forward_node(Cpu *c, int ni, int training)
{
    Call k = node_call(c, ni);
    const Node *nd = k.nd;
    k.training = training;
    k.x = nd->n_in ? T(c, nd->in[0]) : NULL;
    k.out = T(c, nd->out);
    int b = k.bn;
    if (nd->fold ? c->dirty[ni] : b >= 0 && !(training && k.g->layers[b].bn_mode == BN_TRAIN)) {
        compute_derived(c, ni);
        c->dirty[ni] = 0;
    }
    if (CPU_OPS[k.l->op].fwd) CPU_OPS[k.l->op].fwd(&k);
}

static void backward_node(Cpu *c, int ni)
{
    Call k = node_call(c, ni);
    const Node *nd = k.nd;
    k.training = 1;
    k.x = nd->save_in ? T(c, nd->in[0]) : NULL;
    k.dx = T(c, nd->din[0]);
    k.dout = T(c, nd->dout);
    k.acc = nd->din_acc[0];
    if (CPU_OPS[k.l->op].bwd) CPU_OPS[k.l->op].bwd(&k);
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
