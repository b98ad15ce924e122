/* codegen/ops.c — the op registry: one row per op holding everything
 * codegen knows about it (keyword, inputs, keys and their defaults, traits,
 * its activation, FLOPs, shape inference and parameter list), read by the
 * parser, the planner, `kiln plan` and both executors.
 *
 * Shape rules (per image, NHWC):
 *  - padding=same follows TensorFlow: out = ceil(in/stride), the total pad
 *    max((out-1)*stride + k - in, 0) split with the extra row/column at the
 *    bottom/right; padding=valid: out = floor((in-k)/stride)+1; explicit
 *    padding T,B,L,R: out = floor((in+T+B-k)/stride)+1.
 *  - dense flattens its input (h*w*c features) and outputs 1x1xunits.
 *  - mul is channel-wise: its second input must be 1x1xC of the first's C.
 *  - layernorm normalizes over C at each pixel (ConvNeXt's LayerNorm);
 *    layerscale multiplies each channel by a learned factor.
 * FLOPs count 2 per multiply-add; elementwise ops count 1 per element (4 for
 * swish and sigmoid, 8 for gelu); layernorm counts 5 per element (fvcore's
 * count, which timm's tables quote).
 * Invariant: OPS[k].op == k for every k < OP_COUNT (tests/test_arch.c checks
 * it, with unique keywords).
 */
#include "codegen/graph.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *param_role_name(ParamRole r)
{
    static const char *ROLE[] = {"kernel", "depthwise_kernel", "bias", "gamma", "beta",
                                 "moving_mean", "moving_variance"};
    return r >= 0 && r < (int)(sizeof ROLE / sizeof ROLE[0]) ? ROLE[r] : "?";
}

/* Append a parameter of layer l. */
static int add_param(Graph *g, Layer *l, ParamRole role, int learnable, int ndim,
                     const int *dims)
{
    if (g->n_params == g->cap_params) {
        int cap = g->cap_params ? 2 * g->cap_params : 64;
        Param *p = realloc(g->params, sizeof(Param) * (size_t)cap);
        if (!p) return 1;
        g->params = p; g->cap_params = cap;
    }
    Param *p = &g->params[g->n_params++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s.%s", l->name, param_role_name(role));
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

/* ---- shape inference, per op ---------------------------------------------------- */

static Shape in_shape(const Graph *g, const Layer *l, int k)
{
    return l->n_in > k ? g->layers[l->in[k]].out : (Shape){0, 0, 0};
}

static int oom(char *err, size_t errlen)
{
    snprintf(err, errlen, "out of memory");
    return 1;
}

static int infer_input(Graph *g, Layer *l, char *err, size_t errlen)
{
    (void)g; (void)err; (void)errlen;
    l->out = (Shape){l->a.input.h, l->a.input.w, l->a.input.c};
    return 0;
}

/* The window of conv, dwconv and maxpool: resolves the padding and sets the
 * output (K channels). Returns 0, or 2 when the window does not fit. */
static int infer_window(Graph *g, Layer *l, int K, char *err, size_t errlen)
{
    Shape x = in_shape(g, l, 0);
    ConvAttr *c = &l->a.conv;
    int P = window_out(x.h, c->kh, c->sh, c->pad_mode, &c->pt, &c->pb);
    int Q = window_out(x.w, c->kw, c->sw, c->pad_mode, &c->pl, &c->pr);
    if (P <= 0 || Q <= 0) {
        snprintf(err, errlen, "kernel %dx%d is larger than its input %dx%d (with padding %d,%d,%d,%d)",
                 c->kh, c->kw, x.h, x.w, c->pt, c->pb, c->pl, c->pr);
        return 2;
    }
    l->out = (Shape){P, Q, K};
    return 0;
}

/* The optional bias of conv and dwconv: one per output channel. */
static int infer_bias(Graph *g, Layer *l, char *err, size_t errlen)
{
    if (!layer_has_bias(l)) return 0;
    if (add_param(g, l, ROLE_BIAS, 1, 1, &l->out.c)) return oom(err, errlen);
    l->flops += (int64_t)l->out.h * l->out.w * l->out.c;
    return 0;
}

static int infer_conv(Graph *g, Layer *l, char *err, size_t errlen)
{
    Shape x = in_shape(g, l, 0);
    const ConvAttr *c = &l->a.conv;
    int rc = infer_window(g, l, c->filters, err, errlen);
    if (rc) return rc;
    Shape o = l->out;
    int d[4] = {c->kh, c->kw, x.c, o.c};
    if (add_param(g, l, ROLE_KERNEL, 1, 4, d)) return oom(err, errlen);
    l->flops = 2LL * o.h * o.w * o.c * c->kh * c->kw * x.c;
    return infer_bias(g, l, err, errlen);
}

static int infer_dwconv(Graph *g, Layer *l, char *err, size_t errlen)
{
    Shape x = in_shape(g, l, 0);
    const ConvAttr *c = &l->a.conv;
    int rc = infer_window(g, l, x.c, err, errlen);
    if (rc) return rc;
    Shape o = l->out;
    int d[3] = {c->kh, c->kw, x.c};
    if (add_param(g, l, ROLE_DWKERNEL, 1, 3, d)) return oom(err, errlen);
    l->flops = 2LL * o.h * o.w * o.c * c->kh * c->kw;
    return infer_bias(g, l, err, errlen);
}

static int infer_maxpool(Graph *g, Layer *l, char *err, size_t errlen)
{
    int rc = infer_window(g, l, in_shape(g, l, 0).c, err, errlen);
    if (rc) return rc;
    l->flops = (int64_t)l->out.h * l->out.w * l->out.c * l->a.conv.kh * l->a.conv.kw;
    return 0;
}

static int infer_zeropad(Graph *g, Layer *l, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    Shape x = in_shape(g, l, 0);
    const PadAttr *p = &l->a.pad;
    l->out = (Shape){x.h + p->pt + p->pb, x.w + p->pl + p->pr, x.c};
    return 0;
}

static int infer_bn(Graph *g, Layer *l, char *err, size_t errlen)
{
    Shape x = in_shape(g, l, 0);
    l->out = x;
    for (ParamRole r = ROLE_GAMMA; r <= ROLE_VAR; r++)
        if (add_param(g, l, r, r == ROLE_GAMMA || r == ROLE_BETA, 1, &x.c)) return oom(err, errlen);
    return 0;
}

static int infer_add(Graph *g, Layer *l, char *err, size_t errlen)
{
    Shape x = in_shape(g, l, 0), y = in_shape(g, l, 1);
    if (x.h != y.h || x.w != y.w || x.c != y.c) {
        snprintf(err, errlen, "add of mismatched shapes %dx%dx%d (%s) and %dx%dx%d (%s)",
                 x.h, x.w, x.c, g->layers[l->in[0]].name, y.h, y.w, y.c,
                 g->layers[l->in[1]].name);
        return 2;
    }
    l->out = x;
    return 0;
}

static int infer_mul(Graph *g, Layer *l, char *err, size_t errlen)
{
    Shape x = in_shape(g, l, 0), y = in_shape(g, l, 1);
    if (y.h != 1 || y.w != 1 || y.c != x.c) {
        snprintf(err, errlen, "mul scales %dx%dx%d (%s) channel-wise: its second input "
                 "must be 1x1x%d, got %dx%dx%d (%s)", x.h, x.w, x.c, g->layers[l->in[0]].name,
                 x.c, y.h, y.w, y.c, g->layers[l->in[1]].name);
        return 2;
    }
    l->out = x;
    return 0;
}

static int infer_gap(Graph *g, Layer *l, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    l->out = (Shape){1, 1, in_shape(g, l, 0).c};
    return 0;
}

static int infer_dense(Graph *g, Layer *l, char *err, size_t errlen)
{
    Shape x = in_shape(g, l, 0);
    int64_t elems = (int64_t)x.h * x.w * x.c;
    int d[2] = {(int)elems, l->a.dense.units};
    l->out = (Shape){1, 1, l->a.dense.units};
    if (add_param(g, l, ROLE_KERNEL, 1, 2, d)) return oom(err, errlen);
    if (layer_has_bias(l) && add_param(g, l, ROLE_BIAS, 1, 1, &d[1])) return oom(err, errlen);
    l->flops = 2 * elems * d[1] + (layer_has_bias(l) ? d[1] : 0);
    return 0;
}

static int infer_loss(Graph *g, Layer *l, char *err, size_t errlen)
{
    Shape x = in_shape(g, l, 0);
    if (x.h != 1 || x.w != 1) {
        snprintf(err, errlen, "softmax_ce needs 1x1xK logits, got %dx%dx%d (put a gap or "
                 "dense before it)", x.h, x.w, x.c);
        return 2;
    }
    l->out = x;
    return 0;
}

/* layernorm: gamma and beta, one per channel. */
static int infer_layernorm(Graph *g, Layer *l, char *err, size_t errlen)
{
    Shape x = in_shape(g, l, 0);
    l->out = x;
    for (ParamRole r = ROLE_GAMMA; r <= ROLE_BETA; r++)
        if (add_param(g, l, r, 1, 1, &x.c)) return oom(err, errlen);
    return 0;
}

/* layerscale: one factor per channel (named gamma, as timm's). */
static int infer_layerscale(Graph *g, Layer *l, char *err, size_t errlen)
{
    Shape x = in_shape(g, l, 0);
    l->out = x;
    if (add_param(g, l, ROLE_GAMMA, 1, 1, &x.c)) return oom(err, errlen);
    return 0;
}

/* layernorm: the per-row statistics (mean, invstd) of the batch, which the
 * forward writes and the backward recomputes. */
static size_t layernorm_workspace(const Graph *g, const Layer *l, int n)
{
    (void)g;
    return 2 * (size_t)n * l->out.h * l->out.w;
}

/* im2col columns of a conv that is not a plain 1x1 stride-1 GEMM. */
static size_t conv_workspace(const Graph *g, const Layer *l, int n)
{
    const ConvAttr *c = &l->a.conv;
    if (c->kh == 1 && c->kw == 1 && c->sh == 1 && c->sw == 1 && !c->pt && !c->pb && !c->pl && !c->pr)
        return 0;
    Shape x = g->layers[l->in[0]].out;
    return (size_t)n * l->out.h * l->out.w * c->kh * c->kw * x.c;
}

/* ---- the registry ------------------------------------------------------------------ */

#define AT(field) offsetof(Layer, a.field)

/* Keys shared by the windowed ops. */
#define K_KERNEL_NEEDED {"kernel", KEY_PAIR, AT(conv.kh), 0, "kernel=N"}
#define K_STRIDE(d) {"stride", KEY_PAIR, AT(conv.sh), d, NULL}
#define K_PADDING {"padding", KEY_PADDING, AT(conv), 0, NULL}
#define K_BIAS(attr) {"bias", KEY_BOOL, AT(attr.bias), 1, NULL}

/* Backward-read traits, by family. */
#define T_ACT (TRAIT_ACTIVATION | TRAIT_ELEMENTWISE | TRAIT_BWD_X)
#define T_HEAD (TRAIT_CHAIN_HEAD | TRAIT_WINDOWED | TRAIT_WEIGHTS | TRAIT_BWD_X_FOR_W)

/* The table. Defaults are Keras's where there is one. */
static const OpInfo OPS[OP_COUNT] = {
    [OP_INPUT] = {"input", OP_INPUT, 0, 0,
        {{"size", KEY_SIZE, AT(input), 0, "size=HxWxC"},
         {"scale", KEY_NUMBER, AT(input.scale), 1, NULL},
         {"mean", KEY_CHANNELS, AT(input.mean), 0, NULL},
         {"std", KEY_CHANNELS_POSITIVE, AT(input.std), 1, NULL}},
        TRAIT_INPUT, ACTK_NONE, 0, infer_input, NULL},
    [OP_CONV] = {"conv", OP_CONV, 1, 1,
        {{"filters", KEY_COUNT, AT(conv.filters), 0, "filters=N"},
         K_KERNEL_NEEDED, K_STRIDE(1), K_PADDING, K_BIAS(conv)},
        T_HEAD, ACTK_NONE, 0, infer_conv, conv_workspace},
    [OP_DWCONV] = {"dwconv", OP_DWCONV, 1, 1,
        {K_KERNEL_NEEDED, K_STRIDE(1), K_PADDING, K_BIAS(conv)},
        T_HEAD, ACTK_NONE, 0, infer_dwconv, NULL},
    [OP_ZEROPAD] = {"zeropad", OP_ZEROPAD, 1, 1,
        {{"pad", KEY_PAD, AT(pad), 0, "pad=P or pad=T,B,L,R"}},
        0, ACTK_NONE, 0, infer_zeropad, NULL},
    [OP_BN] = {"bn", OP_BN, 1, 1,
        {{"eps", KEY_POSITIVE, AT(bn.eps), 1e-3, NULL},
         {"momentum", KEY_FRACTION, AT(bn.momentum), 0.99, NULL}},
        TRAIT_BN, ACTK_NONE, 2, infer_bn, NULL},
    [OP_RELU]    = {"relu", OP_RELU, 1, 1, {{0}}, T_ACT, ACTK_RELU, 1, NULL, NULL},
    [OP_RELU6]   = {"relu6", OP_RELU6, 1, 1, {{0}}, T_ACT, ACTK_RELU6, 1, NULL, NULL},
    [OP_SWISH]   = {"swish", OP_SWISH, 1, 1, {{0}}, T_ACT, ACTK_SWISH, 4, NULL, NULL},
    [OP_SIGMOID] = {"sigmoid", OP_SIGMOID, 1, 1, {{0}}, T_ACT, ACTK_SIGMOID, 4, NULL, NULL},
    [OP_ADD] = {"add", OP_ADD, 2, 2, {{0}},
        TRAIT_ELEMENTWISE | TRAIT_CHAIN_ADD, ACTK_NONE, 1, infer_add, NULL},
    [OP_MUL] = {"mul", OP_MUL, 2, 2, {{0}},
        TRAIT_BWD_X | TRAIT_BWD_X2, ACTK_NONE, 1, infer_mul, NULL},
    [OP_GAP] = {"gap", OP_GAP, 1, 1, {{0}},
        TRAIT_HEAD_PASS, ACTK_NONE, 1, infer_gap, NULL},
    [OP_MAXPOOL] = {"maxpool", OP_MAXPOOL, 1, 1,
        {{"kernel", KEY_PAIR, AT(conv.kh), 2, NULL}, K_STRIDE(2), K_PADDING},
        TRAIT_WINDOWED | TRAIT_BWD_X, ACTK_NONE, 0, infer_maxpool, NULL},
    [OP_DENSE] = {"dense", OP_DENSE, 1, 1,
        {{"units", KEY_COUNT, AT(dense.units), 0, "units=N"}, K_BIAS(dense)},
        TRAIT_CLASSIFIER | TRAIT_WEIGHTS | TRAIT_BWD_X_FOR_W, ACTK_NONE, 0, infer_dense, NULL},
    [OP_DROPOUT] = {"dropout", OP_DROPOUT, 1, 1,
        {{"rate", KEY_FRACTION, AT(dropout.rate), 0, "rate=R"}},
        TRAIT_ELEMENTWISE | TRAIT_HEAD_PASS | TRAIT_RANDOM, ACTK_NONE, 1, NULL, NULL},
    [OP_LOSS] = {"softmax_ce", OP_LOSS, 1, 1, {{0}},
        TRAIT_LOSS, ACTK_NONE, 4, infer_loss, NULL},
    [OP_LAYERNORM] = {"layernorm", OP_LAYERNORM, 1, 1,
        {{"eps", KEY_POSITIVE, AT(norm.eps), 1e-6, NULL}},
        TRAIT_BWD_X, ACTK_NONE, 5, infer_layernorm, layernorm_workspace},
    [OP_GELU] = {"gelu", OP_GELU, 1, 1, {{0}}, T_ACT, ACTK_GELU, 8, NULL, NULL},
    [OP_LAYERSCALE] = {"layerscale", OP_LAYERSCALE, 1, 1, {{0}},
        TRAIT_ELEMENTWISE | TRAIT_BWD_X_FOR_W, ACTK_NONE, 1, infer_layerscale, NULL},
};

const OpInfo *op_info(OpKind op) { return &OPS[op]; }

const OpInfo *op_find(const char *keyword)
{
    for (int i = 0; i < OP_COUNT; i++)
        if (strcmp(OPS[i].keyword, keyword) == 0) return &OPS[i];
    return NULL;
}

const OpInfo *op_with(unsigned trait)
{
    for (int i = 0; i < OP_COUNT; i++)
        if (OPS[i].traits & trait) return &OPS[i];
    return NULL;
}

void op_keywords(char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; i < OP_COUNT && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : "", OPS[i].keyword);
}

unsigned op_traits(OpKind op) { return OPS[op].traits; }

ActKind op_act(OpKind op) { return OPS[op].act; }

const char *act_name(ActKind a)
{
    static const char *NAME[ACTK_COUNT] = {"none", "relu", "relu6", "swish", "sigmoid", "gelu"};
    return a >= 0 && a < ACTK_COUNT ? NAME[a] : "none";
}

const KeyDef *op_key(OpKind op, const char *name)
{
    for (const KeyDef *k = OPS[op].keys; k < OPS[op].keys + KILN_MAX_KEYS && k->name; k++)
        if (!strcmp(k->name, name)) return k;
    return NULL;
}

int layer_has_bias(const Layer *l)
{
    const KeyDef *k = op_key(l->op, "bias");
    return k && *(const int *)((const char *)l + k->off);
}

size_t layer_workspace(const Graph *g, const Layer *l, int n)
{
    return OPS[l->op].workspace ? OPS[l->op].workspace(g, l, n) : 0;
}

int op_infer(Graph *g, Layer *l, char *err, size_t errlen)
{
    const OpInfo *info = &OPS[l->op];
    Shape x = in_shape(g, l, 0);
    l->first_param = g->n_params;
    l->n_params = 0;
    l->flops = info->flops_per_elem * (int64_t)x.h * x.w * x.c;
    if (!info->infer) {
        l->out = x;
        return 0;
    }
    return info->infer(g, l, err, errlen);
}
