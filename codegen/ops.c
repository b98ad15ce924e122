/* codegen/ops.c — the op registry: one row per op, and the per-op shape
 * inference, parameter list and FLOP count that the parser, the planner and
 * `kiln plan` all use.
 *
 * Shape rules (per image, NHWC):
 *  - padding=same follows TensorFlow: out = ceil(in/stride), the total pad
 *    max((out-1)*stride + k - in, 0) split with the extra row/column at the
 *    bottom/right; padding=valid: out = floor((in-k)/stride)+1; explicit
 *    padding T,B,L,R: out = floor((in+T+B-k)/stride)+1.
 *  - dense flattens its input (h*w*c features) and outputs 1x1xunits.
 *  - mul is channel-wise: its second input must be 1x1xC of the first's C.
 * FLOPs count 2 per multiply-add; elementwise ops count 1 per element (4 for
 * swish and sigmoid).
 */
#include "codegen/graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The registry. Keys are the .arch keys each op accepts besides `from`. */
static const OpInfo OPS[OP_COUNT] = {
    [OP_INPUT]   = {"input",   OP_INPUT,   0, 0, "size scale mean std"},
    [OP_CONV]    = {"conv",    OP_CONV,    1, 1, "filters kernel stride padding bias"},
    [OP_DWCONV]  = {"dwconv",  OP_DWCONV,  1, 1, "kernel stride padding bias"},
    [OP_ZEROPAD] = {"zeropad", OP_ZEROPAD, 1, 1, "pad"},
    [OP_BN]      = {"bn",      OP_BN,      1, 1, "eps momentum"},
    [OP_RELU]    = {"relu",    OP_RELU,    1, 1, ""},
    [OP_RELU6]   = {"relu6",   OP_RELU6,   1, 1, ""},
    [OP_SWISH]   = {"swish",   OP_SWISH,   1, 1, ""},
    [OP_SIGMOID] = {"sigmoid", OP_SIGMOID, 1, 1, ""},
    [OP_ADD]     = {"add",     OP_ADD,     2, 2, ""},
    [OP_MUL]     = {"mul",     OP_MUL,     2, 2, ""},
    [OP_GAP]     = {"gap",     OP_GAP,     1, 1, ""},
    [OP_MAXPOOL] = {"maxpool", OP_MAXPOOL, 1, 1, "kernel stride padding"},
    [OP_DENSE]   = {"dense",   OP_DENSE,   1, 1, "units bias"},
    [OP_DROPOUT] = {"dropout", OP_DROPOUT, 1, 1, "rate"},
    [OP_LOSS]    = {"softmax_ce", OP_LOSS, 1, 1, ""},
};

const OpInfo *op_info(OpKind op) { return &OPS[op]; }

const OpInfo *op_find(const char *keyword)
{
    for (int i = 0; i < OP_COUNT; i++)
        if (strcmp(OPS[i].keyword, keyword) == 0) return &OPS[i];
    return NULL;
}

/* Append a parameter of layer l. */
static int add_param(Graph *g, Layer *l, ParamRole role, int learnable, int ndim,
                     const int *dims)
{
    static const char *ROLE[] = {"kernel", "depthwise_kernel", "bias", "gamma", "beta",
                                 "moving_mean", "moving_variance"};
    if (g->n_params == g->cap_params) {
        int cap = g->cap_params ? 2 * g->cap_params : 64;
        Param *p = realloc(g->params, sizeof(Param) * (size_t)cap);
        if (!p) return 1;
        g->params = p; g->cap_params = cap;
    }
    Param *p = &g->params[g->n_params++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s.%s", l->name, ROLE[role]);
    p->layer = (int)(l - g->layers);
    p->role = role;
    p->learnable = learnable;
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) { p->dims[i] = dims[i]; p->numel *= (size_t)dims[i]; }
    l->n_params++;
    return 0;
}

/* Resolve the padding of a windowed op and the output size along one axis. */
static int window_out(int in, int k, int s, PadMode mode, int *p0, int *p1)
{
    if (mode == PAD_SAME) {
        int out = (in + s - 1) / s;
        int total = (out - 1) * s + k - in;
        if (total < 0) total = 0;
        *p0 = total / 2; *p1 = total - *p0;
        return out;
    }
    if (mode == PAD_VALID) *p0 = *p1 = 0;
    int span = in + *p0 + *p1 - k;
    return span < 0 ? -1 : span / s + 1;
}

int op_infer(Graph *g, Layer *l, char *err, size_t errlen)
{
    Shape x = l->n_in > 0 ? g->layers[l->in[0]].out : (Shape){0, 0, 0};
    int64_t elems = (int64_t)x.h * x.w * x.c;
    l->first_param = g->n_params;
    l->n_params = 0;
    l->flops = elems;
    switch (l->op) {
    case OP_INPUT:
        l->out = (Shape){l->a.input.h, l->a.input.w, l->a.input.c};
        l->flops = 0;
        break;
    case OP_CONV: case OP_DWCONV: case OP_MAXPOOL: {
        ConvAttr *c = &l->a.conv;
        int P = window_out(x.h, c->kh, c->sh, c->pad_mode, &c->pt, &c->pb);
        int Q = window_out(x.w, c->kw, c->sw, c->pad_mode, &c->pl, &c->pr);
        if (P <= 0 || Q <= 0) {
            snprintf(err, errlen, "kernel %dx%d is larger than its input %dx%d (with padding %d,%d,%d,%d)",
                     c->kh, c->kw, x.h, x.w, c->pt, c->pb, c->pl, c->pr);
            return 2;
        }
        int K = l->op == OP_CONV ? c->filters : x.c;
        l->out = (Shape){P, Q, K};
        if (l->op == OP_CONV) {
            int d[4] = {c->kh, c->kw, x.c, K};
            if (add_param(g, l, ROLE_KERNEL, 1, 4, d)) goto oom;
            l->flops = 2LL * P * Q * K * c->kh * c->kw * x.c;
        } else if (l->op == OP_DWCONV) {
            int d[3] = {c->kh, c->kw, x.c};
            if (add_param(g, l, ROLE_DWKERNEL, 1, 3, d)) goto oom;
            l->flops = 2LL * P * Q * K * c->kh * c->kw;
        } else {
            l->flops = (int64_t)P * Q * K * c->kh * c->kw;
        }
        if (l->op != OP_MAXPOOL && c->bias) {
            if (add_param(g, l, ROLE_BIAS, 1, 1, &K)) goto oom;
            l->flops += (int64_t)P * Q * K;
        }
        break;
    }
    case OP_ZEROPAD: {
        PadAttr *p = &l->a.pad;
        l->out = (Shape){x.h + p->pt + p->pb, x.w + p->pl + p->pr, x.c};
        l->flops = 0;
        break;
    }
    case OP_BN:
        l->out = x;
        for (ParamRole r = ROLE_GAMMA; r <= ROLE_VAR; r++)
            if (add_param(g, l, r, r == ROLE_GAMMA || r == ROLE_BETA, 1, &x.c)) goto oom;
        l->flops = 2 * elems;
        break;
    case OP_RELU: case OP_RELU6: case OP_DROPOUT:
        l->out = x;
        break;
    case OP_SWISH: case OP_SIGMOID:
        l->out = x;
        l->flops = 4 * elems;
        break;
    case OP_ADD: {
        Shape y = g->layers[l->in[1]].out;
        if (x.h != y.h || x.w != y.w || x.c != y.c) {
            snprintf(err, errlen, "add of mismatched shapes %dx%dx%d (%s) and %dx%dx%d (%s)",
                     x.h, x.w, x.c, g->layers[l->in[0]].name, y.h, y.w, y.c,
                     g->layers[l->in[1]].name);
            return 2;
        }
        l->out = x;
        break;
    }
    case OP_MUL: {
        Shape y = g->layers[l->in[1]].out;
        if (y.h != 1 || y.w != 1 || y.c != x.c) {
            snprintf(err, errlen, "mul scales %dx%dx%d (%s) channel-wise: its second input "
                     "must be 1x1x%d, got %dx%dx%d (%s)", x.h, x.w, x.c, g->layers[l->in[0]].name,
                     x.c, y.h, y.w, y.c, g->layers[l->in[1]].name);
            return 2;
        }
        l->out = x;
        break;
    }
    case OP_GAP:
        l->out = (Shape){1, 1, x.c};
        break;
    case OP_DENSE: {
        int d[2] = {(int)elems, l->a.dense.units};
        l->out = (Shape){1, 1, l->a.dense.units};
        if (add_param(g, l, ROLE_KERNEL, 1, 2, d)) goto oom;
        if (l->a.dense.bias && add_param(g, l, ROLE_BIAS, 1, 1, &d[1])) goto oom;
        l->flops = 2 * elems * d[1] + (l->a.dense.bias ? d[1] : 0);
        break;
    }
    case OP_LOSS:
        if (x.h != 1 || x.w != 1) {
            snprintf(err, errlen, "softmax_ce needs 1x1xK logits, got %dx%dx%d (put a gap or "
                     "dense before it)", x.h, x.w, x.c);
            return 2;
        }
        l->out = x;
        l->flops = 4 * elems;
        break;
    case OP_COUNT:
        break;
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return 1;
}
