/* codegen/emit_conv.c — the per-op emitters of conv and depthwise-conv nodes
 * (with their fused epilogue: BN absorbed, activation, residual add),
 * standalone BN nodes and BN folding, from the templates of
 * kernels/cuda/conv.cu. The walk (emit.c) reaches them through its op
 * table; they call only the base (emit_base.c).
 *
 * Contract: the launches of a node compute exactly what runtime/cpu.c's
 * forward_node / backward_node / compute_derived compute for it, with the
 * kernels/cpu formulas (kernels.h contract: parameter gradients overwritten,
 * input gradients overwritten or added per din_acc, NULL = skipped).
 *
 * Per node kind (n = images in the batch, M = P*Q rows per image):
 *  - derived constants of a non-folded BN on running statistics (inference,
 *    or BN_INFER/BN_FROZEN): bn_derive first in the forward list, as cpu.c
 *    recomputes them on every forward;
 *  - conv k x k: im2col into the workspace, GEMM cols (nM, RSC) x w (RSC, K);
 *    a 1x1 stride-1 unpadded conv is a GEMM on x. Depthwise: dwconv_fwd
 *    (bias inside). Conv bias: inside epi_fwd when there is an epilogue
 *    whose BN is not on batch statistics, else conv_bias;
 *  - epilogue: batch statistics then epi_fwd;
 *  - backward: epi_bwd (+ chan_bwd for the BN column sums / input gradient)
 *    into dz at R_WS(conv workspace) (an epilogue that is only a residual
 *    add writes dres alone, and the conv reads dout), then dbias (chan_bwd),
 *    dW (im2col + GEMM), dx (GEMM + col2im, or one GEMM); depthwise:
 *    chan_bwd (dbias), dwconv_dx, dwconv_dw (split over the output cells
 *    like the column sums: dwconv_dw_part + dwconv_dw_fin);
 *  - standalone BN: the same bn_stats / bn_derive / epi_fwd forward, and
 *    chan_bwd (+ bn_infer_dx) backward;
 *  - fold: bn_fold into the node's derived slot (weights, then bias).
 *
 * Column sums (batch statistics, chan_bwd's sums) are split over rows when
 * their double partials fit in a free stretch of the workspace (see
 * split_count): col_part + a per-channel finish (bn_stats_mean, col_part,
 * bn_stats_fin; col_part, chan_fin, chan_dx); otherwise bn_stats / chan_bwd
 * with one block per channel. Free stretches: in the forward the whole
 * workspace (the im2col columns are dead after the GEMM); in a conv's
 * backward all but dz at [conv workspace, + out floats) (the im2col of dW
 * comes after the sums).
 *
 * Invariants: every shape is baked into the kernel text; the text depends on
 * the plan only, so the output is deterministic. The workspace offset of dz
 * is the layer's workspace (layer_workspace, 0 for a depthwise conv) at the
 * plan's full batch (the plan sized ws for it).
 */
#include "codegen/emit_internal.h"

/* ---- shapes ---------------------------------------------------------------------------- */

static const char *geo_tag(Emitter *e, const Geo *s)
{
    return em_fmt(e, "%dx%dx%d_%dx%d_s%d", s->H, s->W, s->C, s->R, s->S, s->SH);
}

/* The tag of a per-channel kernel: rows per image x channels. */
static const char *rc_tag(Emitter *e, long rows, int C) { return em_fmt(e, "%ldx%d", rows, C); }

/* As conv_is_gemm in kernels/cpu/conv.c: a plain GEMM on x. */
static int geo_direct(const Geo *s)
{
    return s->R == 1 && s->S == 1 && s->SH == 1 && s->SW == 1 && s->PT == 0 && s->PL == 0 &&
           s->P == s->H && s->Q == s->W;
}

/* ---- workspace scratch of the split column sums ------------------------------------------ */

/* A free stretch of the workspace, in floats; off is even (doubles). */
typedef struct { size_t off, len; } WsSpan;

/* The larger free part of the workspace around a live stretch [used,
 * used + n) (n = 0: the whole workspace). */
static WsSpan ws_free_around(const Emitter *e, size_t used, size_t n)
{
    size_t ws = e->p->ws_floats, end = used + n;
    WsSpan lo = {0, used < ws ? used : ws};
    WsSpan hi = {end, end < ws ? ws - end : 0};
    WsSpan r = hi.len > lo.len ? hi : lo;
    if (r.off % 2) {
        r.off++;
        r.len = r.len ? r.len - 1 : 0;
    }
    return r;
}

#define SPLIT_MAX 64     /* row splits of a column sum, at most */
#define SPLIT_ROWS 256   /* rows per split, at least (at the plan's batch) */

/* Row splits G of a column sum over (n*M, C): `arrays` partial arrays of
 * G*C doubles plus `extra` arrays of C doubles must fit in sp; a run with
 * fewer images than the plan's batch visits fewer rows per split. 0: too
 * little room (or rows) for G >= 2, use the one-block-per-channel kernel. */
static int split_count_max(const Emitter *e, long M, int C, int arrays, int extra, WsSpan sp, int max)
{
    long rows = (long)e->p->opt.batch * M;
    long g = (rows + SPLIT_ROWS - 1) / SPLIT_ROWS;
    long fit = ((long)(sp.len / 2 / (size_t)C) - extra) / arrays;
    if (g > max) g = max;
    if (g > fit) g = fit;
    return g >= 2 ? (int)g : 0;
}

static int split_count(const Emitter *e, long M, int C, int arrays, int extra, WsSpan sp)
{
    return split_count_max(e, M, C, arrays, extra, sp, SPLIT_MAX);
}

/* A depthwise dW does R*S products per row where a column sum does one or
 * two, and its early layers have few channel tiles (32 channels: one), so
 * it takes up to 4x the splits to keep a GPU's multiprocessors busy. */
#define DW_SPLIT_MAX (4 * SPLIT_MAX)

/* Launch col_part (see the template) into part, G splits. */
static void emit_col_part(Emitter *e, LaunchList *l, long M, int C, int G, int mode, int sx,
                          int inv, float eps, const Ref a[6])
{
    Kv k = {0};
    kv_int(e, &k, "C", C);
    kv_int(e, &k, "M", M);
    kv_int(e, &k, "G", G);
    kv_int(e, &k, "MODE", mode);
    kv_flag(e, &k, "SX", sx);
    kv_flag(e, &k, "INV", inv);
    kv_float(e, &k, "EPS", eps);
    int kern = em_kernel(e, "conv", "col_part", em_fmt(e, "%ldx%d_g%d", M, C, G), 6, 1, k.v);
    em_launch(e, l, kern, (Dim){0, (C + 31) / 32}, 1, G, EMIT_SYNC_BLOCK, 6, a);
}

/* ---- shared launch helpers ---------------------------------------------------------------- */

/* The BN of a node on running statistics, as cpu.c's compute_derived: d =
 * the node's derived slot (scale, shift, invstd). */
static void emit_derive(Emitter *e, int ni, LaunchList *l)
{
    const Node *nd = &e->p->nodes[ni];
    int b = plan_node_bn(e->p, nd);
    const Layer *bl = &e->g->layers[b];
    int C = bl->out.c;
    Kv k = {0};
    kv_int(e, &k, "C", C);
    kv_float(e, &k, "EPS", bl->a.bn.eps);
    int kern = em_kernel(e, "conv", "bn_derive", em_fmt(e, "%d", C), 5, 0, k.v);
    Ref a[5] = {R_DERIVED(e, nd->derived), R_PARAM(e, b, 0), R_PARAM(e, b, 1),
                R_PARAM(e, b, 2), R_PARAM(e, b, 3)};
    em_launch_elems(e, l, kern, (Dim){0, C}, 5, a);
}

/* Does node ni's forward recompute its BN constants (cpu.c's condition)? */
static int needs_derive(const Emitter *e, const Node *nd, int training)
{
    int b = plan_node_bn(e->p, nd);
    return !nd->fold && b >= 0 && !(training && e->g->layers[b].bn_mode == BN_TRAIN);
}

/* Batch statistics of x (n*M, C) into stats, running statistics of BN b
 * updated; split over rows with scratch in sp when it fits (partials, then
 * the C double means). */
static void emit_stats(Emitter *e, LaunchList *l, int b, long M, int C, Ref stats, Ref x,
                       WsSpan sp)
{
    const Layer *bl = &e->g->layers[b];
    int G = split_count(e, M, C, 1, 1, sp);
    Kv k = {0};
    kv_int(e, &k, "C", C);
    kv_int(e, &k, "M", M);
    kv_float(e, &k, "EPS", bl->a.bn.eps);
    kv_float(e, &k, "MOM", bl->a.bn.momentum);
    if (!G) {
        int kern = em_kernel(e, "conv", "bn_stats", rc_tag(e, M, C), 4, 1, k.v);
        Ref a[4] = {stats, R_PARAM(e, b, 2), R_PARAM(e, b, 3), x};
        em_launch(e, l, kern, (Dim){0, C}, 1, 1, EMIT_SYNC_BLOCK, 4, a);
        return;
    }
    kv_int(e, &k, "G", G);
    Ref part = R_WS(sp.off), dmean = R_WS(sp.off + 2 * (size_t)G * C);
    Ref p0[6] = {part, x, R_NULL(), R_NULL(), R_NULL(), R_NULL()};
    emit_col_part(e, l, M, C, G, 0, 0, 0, 0.0f, p0);
    const char *tag = em_fmt(e, "%ldx%d_g%d", M, C, G);
    int km = em_kernel(e, "conv", "bn_stats_mean", tag, 2, 0, k.v);
    Ref am[2] = {dmean, part};
    em_launch_elems(e, l, km, (Dim){0, C}, 2, am);
    Ref p1[6] = {part, x, dmean, R_NULL(), R_NULL(), R_NULL()};
    emit_col_part(e, l, M, C, G, 1, 0, 0, 0.0f, p1);
    int kf = em_kernel(e, "conv", "bn_stats_fin", tag, 5, 0, k.v);
    Ref af[5] = {stats, R_PARAM(e, b, 2), R_PARAM(e, b, 3), dmean, part};
    em_launch_elems(e, l, kf, (Dim){0, C}, 5, af);
}

/* The elementwise forward epilogue (epi_fwd): bn 0 none, 1 batch
 * statistics, 2 affine. */
typedef struct {
    int bn, bias, store_z, res;
    const char *act;
    Ref out, z, bias_p, mean, invstd, gamma, beta, scale, shift, res_p;
} EpiFwd;

static void emit_epi_fwd(Emitter *e, LaunchList *l, long M, int C, const EpiFwd *f)
{
    Kv k = {0};
    kv_int(e, &k, "M", M);
    kv_int(e, &k, "C", C);
    kv_flag(e, &k, "BIAS", f->bias);
    kv_flag(e, &k, "STORE_Z", f->store_z);
    kv_int(e, &k, "BN", f->bn);
    kv_str(e, &k, "ACT", f->act);
    kv_flag(e, &k, "RES", f->res);
    int kern = em_kernel(e, "conv", "epi_fwd", rc_tag(e, M, C), 10, 0, k.v);
    Ref a[10] = {f->out, f->z, f->bias_p, f->mean, f->invstd, f->gamma, f->beta,
                 f->scale, f->shift, f->res_p};
    em_launch_elems(e, l, kern, (Dim){M * C, 0}, 10, a);
}

/* Per-channel sums and their consequences (chan_bwd); see the template. */
typedef struct {
    int sx, dg, db, dx, acc, inv;
    float eps;
    Ref dx_p, dgamma, dbeta, a, x, mean, invstd, gamma, scale;
    WsSpan ws;   /* free workspace for the split sums */
} ChanBwd;

/* chan_bwd split over rows: col_part, chan_fin (partials, then sa and sx
 * as 2C doubles in the scratch), chan_dx. */
static void emit_chan_split(Emitter *e, LaunchList *l, long M, int C, int G, const ChanBwd *cb,
                            const char *const *kv)
{
    size_t arrays = cb->sx ? 2 : 1;
    Ref part = R_WS(cb->ws.off), sums = R_WS(cb->ws.off + 2 * arrays * (size_t)G * C);
    Ref ap[6] = {part, cb->a, R_NULL(), cb->x, cb->mean, cb->invstd};
    emit_col_part(e, l, M, C, G, 2, cb->sx, cb->inv, cb->eps, ap);
    const char *tag = em_fmt(e, "%ldx%d_g%d", M, C, G);
    int kf = em_kernel(e, "conv", "chan_fin", tag, 4, 0, kv);
    Ref af[4] = {sums, cb->dgamma, cb->dbeta, part};
    em_launch_elems(e, l, kf, (Dim){0, C}, 4, af);
    if (!cb->dx) return;
    int kd = em_kernel(e, "conv", "chan_dx", tag, 8, 0, kv);
    Ref ad[8] = {cb->dx_p, cb->a, cb->x, cb->mean, cb->invstd, cb->gamma, cb->scale, sums};
    em_launch_elems(e, l, kd, (Dim){M * C, 0}, 8, ad);
}

static void emit_chan(Emitter *e, LaunchList *l, long M, int C, const ChanBwd *cb)
{
    int G = split_count(e, M, C, cb->sx ? 2 : 1, 2, cb->ws);
    Kv k = {0};
    kv_int(e, &k, "M", M);
    kv_int(e, &k, "C", C);
    kv_flag(e, &k, "SX", cb->sx);
    kv_flag(e, &k, "INV", cb->inv);
    kv_float(e, &k, "EPS", cb->eps);
    kv_flag(e, &k, "DG", cb->dg);
    kv_flag(e, &k, "DB", cb->db);
    kv_int(e, &k, "DX", cb->dx);
    kv_flag(e, &k, "ACC", cb->acc);
    if (G) {
        kv_int(e, &k, "G", G);
        emit_chan_split(e, l, M, C, G, cb, k.v);
        return;
    }
    int kern = em_kernel(e, "conv", "chan_bwd", rc_tag(e, M, C), 9, 1, k.v);
    Ref a[9] = {cb->dx_p, cb->dgamma, cb->dbeta, cb->a, cb->x, cb->mean, cb->invstd,
                cb->gamma, cb->scale};
    em_launch(e, l, kern, (Dim){0, C}, 1, 1, EMIT_SYNC_BLOCK, 9, a);
}

/* dbias (C) = column sums of d (n*M, C), in double. */
static void emit_dbias(Emitter *e, LaunchList *l, long M, int C, Ref db, Ref d, WsSpan sp)
{
    ChanBwd cb = {0};
    cb.ws = sp;
    cb.db = 1;
    cb.dbeta = db;
    cb.a = d;
    emit_chan(e, l, M, C, &cb);
}

/* ---- conv / dwconv forward ------------------------------------------------------------------ */

/* Weights and bias the node convolves with (folded ones from the derived
 * arena); *has_b: a bias exists. */
static void conv_wb(const Emitter *e, const Node *nd, Ref *w, Ref *bias, int *has_b)
{
    const Layer *l = &e->g->layers[nd->layer];
    if (nd->fold) {
        size_t numel = e->g->params[l->first_param].numel;
        *w = R_DERIVED(e, nd->derived);
        *bias = R_DERIVED(e, nd->derived + numel);
        *has_b = 1;
        return;
    }
    *w = R_PARAM(e, nd->layer, 0);
    *has_b = layer_has_bias(l);
    *bias = *has_b ? R_PARAM(e, nd->layer, 1) : R_NULL();
}

/* z = conv(x, w) for a k x k conv (bias not added). */
static void emit_conv_gemm(Emitter *e, LaunchList *l, const Geo *s, Ref z, Ref x, Ref w)
{
    long kc = (long)s->R * s->S * s->C, M = (long)s->P * s->Q;
    Ref a = x;
    if (!geo_direct(s)) {
        Kv k = {0};
        kv_geo(e, &k, s);
        int kern = em_kernel(e, "conv", "im2col", geo_tag(e, s), 2, 0, k.v);
        Ref args[2] = {R_WS(0), x};
        em_launch_elems(e, l, kern, (Dim){M * kc, 0}, 2, args);
        a = R_WS(0);
    }
    em_gemm(e, l, 0, 0, (Dim){M, 0}, (Dim){0, s->K}, (Dim){0, kc}, 1.0f, a, (int)kc, w, s->K,
            0.0f, z, s->K);
}

/* z = dwconv(x, w) + bias. */
static void emit_dwconv_fwd(Emitter *e, LaunchList *l, const Geo *s, Ref z, Ref x, Ref w,
                            Ref bias, int has_b)
{
    Kv k = {0};
    kv_geo(e, &k, s);
    kv_flag(e, &k, "BIAS", has_b);
    int kern = em_kernel(e, "conv", "dwconv_fwd", geo_tag(e, s), 4, 0, k.v);
    Ref args[4] = {z, x, w, bias};
    em_launch_elems(e, l, kern, (Dim){(long)s->P * s->Q * s->C, 0}, 4, args);
}

/* The epilogue's BN mode: 0 none, 1 batch statistics, 2 affine (as cpu.c's
 * node_epilogue). */
static int epi_bn_mode(const Emitter *e, const Node *nd, int training)
{
    int b = plan_node_bn(e->p, nd);
    if (b < 0) return 0;
    return training && e->g->layers[b].bn_mode == BN_TRAIN ? 1 : 2;
}

static const char *node_act(const Emitter *e, const Node *nd)
{
    return nd->act >= 0 ? act_name(op_act(e->g->layers[nd->act].op)) : "none";
}

/* The per-channel operands of an epilogue's BN in mode 1 (batch statistics:
 * the saved stats, gamma, beta) or 2 (affine: the running mean and the
 * derived scale, shift, invstd); all NULL in mode 0. */
typedef struct { Ref mean, invstd, gamma, beta, scale, shift; } BnRefs;

static BnRefs bn_refs(const Emitter *e, const Node *nd, int mode)
{
    BnRefs r = {R_NULL(), R_NULL(), R_NULL(), R_NULL(), R_NULL(), R_NULL()};
    int b = plan_node_bn(e->p, nd);
    size_t K = (size_t)e->g->layers[nd->layer].out.c;
    if (mode == 1) {
        r.mean = R_ACT(e, nd->stats);
        r.invstd = R_OFF(r.mean, K);
        r.gamma = R_PARAM(e, b, 0);
        r.beta = R_PARAM(e, b, 1);
    } else if (mode == 2) {
        r.mean = R_PARAM(e, b, 2);
        r.scale = R_DERIVED(e, nd->derived);
        r.shift = R_DERIVED(e, nd->derived + K);
        r.invstd = R_DERIVED(e, nd->derived + 2 * K);
    }
    return r;
}

/* z += bias, in place (a conv whose bias cannot go into the epilogue). */
static void emit_conv_bias(Emitter *e, LaunchList *l, long M, int K, Ref z, Ref bias)
{
    Kv k = {0};
    kv_int(e, &k, "M", M);
    kv_int(e, &k, "C", K);
    int kern = em_kernel(e, "conv", "conv_bias", rc_tag(e, M, K), 2, 0, k.v);
    Ref args[2] = {z, bias};
    em_launch_elems(e, l, kern, (Dim){M * K, 0}, 2, args);
}

/* The node's forward epilogue from z (bias added first when bias_p is not
 * NULL): batch statistics for mode 1, then epi_fwd. */
static void emit_node_epi_fwd(Emitter *e, const Node *nd, int mode, LaunchList *l, Ref z,
                              Ref bias_p)
{
    const Layer *L = &e->g->layers[nd->layer];
    long M = (long)L->out.h * L->out.w;
    int K = L->out.c, b = plan_node_bn(e->p, nd);
    EpiFwd f = {0};   /* every Ref NULL */
    f.bn = mode;
    f.bias = bias_p.buf != BUF_NULL;
    f.store_z = f.bias && nd->z != nd->out;
    f.res = nd->add >= 0;
    f.act = node_act(e, nd);
    f.out = R_ACT(e, nd->out);
    f.z = z;
    f.bias_p = bias_p;
    f.res_p = f.res ? R_ACT(e, nd->in[1]) : R_NULL();
    BnRefs r = bn_refs(e, nd, mode);
    if (mode == 1) {
        emit_stats(e, l, b, M, K, r.mean, z, ws_free_around(e, 0, 0));
        f.mean = r.mean;
        f.invstd = r.invstd;
        f.gamma = r.gamma;
        f.beta = r.beta;
    } else if (mode == 2) {
        f.scale = r.scale;
        f.shift = r.shift;
    }
    emit_epi_fwd(e, l, M, K, &f);
}

/* The forward of a conv (dw = 0) or depthwise conv (dw = 1) node: derived
 * BN constants when due, the convolution, its bias, the epilogue. */
static void conv_fwd(Emitter *e, int ni, int training, int dw, LaunchList *l)
{
    const Node *nd = &e->p->nodes[ni];
    const Layer *L = &e->g->layers[nd->layer];
    Geo s = geo_of(e->g, L);
    int epi = node_has_epilogue(nd), mode = epi ? epi_bn_mode(e, nd, training) : 0;
    Ref x = R_ACT(e, nd->in[0]), z = R_ACT(e, nd->z), w, bias;
    int has_b;
    conv_wb(e, nd, &w, &bias, &has_b);
    if (needs_derive(e, nd, training)) emit_derive(e, ni, l);
    /* a conv's bias goes into the epilogue unless batch statistics need it
     * first; a depthwise conv adds its own */
    int bias_in_epi = !dw && has_b && epi && mode != 1;
    if (dw) {
        emit_dwconv_fwd(e, l, &s, z, x, w, bias, has_b);
    } else {
        emit_conv_gemm(e, l, &s, z, x, w);
        if (has_b && !bias_in_epi) emit_conv_bias(e, l, (long)s.P * s.Q, s.K, z, bias);
    }
    if (epi) emit_node_epi_fwd(e, nd, mode, l, z, bias_in_epi ? bias : R_NULL());
}

void em_conv_fwd(Emitter *e, int ni, int training, LaunchList *l) { conv_fwd(e, ni, training, 0, l); }

void em_dwconv_fwd(Emitter *e, int ni, int training, LaunchList *l) { conv_fwd(e, ni, training, 1, l); }

/* ---- conv / dwconv backward -------------------------------------------------------------- */

/* The BN column sums of the epilogue backward and what follows (chan_bwd):
 * dgamma/dbeta, then dz turned into the BN input gradient in place. */
static void emit_epi_bwd_sums(Emitter *e, const Node *nd, int mode, const BnRefs *r,
                              LaunchList *l, Ref dz, Ref z, WsSpan sp)
{
    const Layer *L = &e->g->layers[nd->layer];
    int b = plan_node_bn(e->p, nd), dgb = nd->train_bn;
    ChanBwd cb = {0};
    cb.ws = sp;
    cb.sx = 1;
    cb.dg = cb.db = dgb;
    cb.dx = mode == 1 ? 1 : 2;
    cb.eps = e->g->layers[b].a.bn.eps;
    cb.dx_p = dz;
    cb.dgamma = dgb ? R_GRAD(e, b, 0) : R_NULL();
    cb.dbeta = dgb ? R_GRAD(e, b, 1) : R_NULL();
    cb.a = dz;
    cb.x = z;
    cb.mean = r->mean;
    cb.invstd = r->invstd;
    cb.gamma = r->gamma;
    cb.scale = r->scale;
    emit_chan(e, l, (long)L->out.h * L->out.w, L->out.c, &cb);
}

/* The epilogue backward into dz (epilogue_backward): epi_bwd, then the BN
 * column sums when they are needed (batch statistics, or a trained gamma).
 * An epilogue that is only a residual add leaves dz = dout: then dz is not
 * written (the caller reads dout) and only dres is, when wanted. */
static void emit_epi_bwd(Emitter *e, int ni, LaunchList *l, Ref dz, WsSpan sp)
{
    const Node *nd = &e->p->nodes[ni];
    const Layer *L = &e->g->layers[nd->layer];
    long M = (long)L->out.h * L->out.w;
    int K = L->out.c, mode = epi_bn_mode(e, nd, 1);
    int sums = mode == 1 || (mode == 2 && nd->train_bn);
    BnRefs r = bn_refs(e, nd, mode);
    Ref z = nd->save_z ? R_ACT(e, nd->z) : R_NULL();
    Ref dres = nd->add >= 0 ? R_ACT(e, nd->din[1]) : R_NULL();
    int has_act = nd->act >= 0, write_dz = mode != 0 || has_act;
    if (!write_dz && dres.buf == BUF_NULL) return;
    Kv k = {0};
    kv_int(e, &k, "M", M);
    kv_int(e, &k, "C", K);
    kv_flag(e, &k, "RES", dres.buf != BUF_NULL);
    kv_flag(e, &k, "RES_ACC", nd->din_acc[1]);
    kv_flag(e, &k, "HAS_ACT", has_act);
    kv_int(e, &k, "BN", mode);
    kv_str(e, &k, "ACT", node_act(e, nd));
    kv_flag(e, &k, "SCALE", mode == 2 && !sums);
    kv_flag(e, &k, "DZ", write_dz);
    int kern = em_kernel(e, "conv", "epi_bwd", rc_tag(e, M, K), 10, 0, k.v);
    Ref a[10] = {write_dz ? dz : R_NULL(), dres, R_ACT(e, nd->dout), z, r.mean, r.invstd,
                 r.gamma, r.beta, r.scale, r.shift};
    em_launch_elems(e, l, kern, (Dim){M * K, 0}, 10, a);
    if (sums) emit_epi_bwd_sums(e, nd, mode, &r, l, dz, z, sp);
}

/* dW, dx of a k x k conv from d (n*P*Q, K) (conv2d_backward; dbias done). */
static void emit_conv_dwdx(Emitter *e, LaunchList *l, const Geo *s, Ref dx, Ref dw, Ref d,
                           Ref x, Ref w, int acc)
{
    long kc = (long)s->R * s->S * s->C, M = (long)s->P * s->Q;
    int direct = geo_direct(s);
    if (dw.buf != BUF_NULL) {
        Ref a = x;
        if (!direct) {
            Kv k = {0};
            kv_geo(e, &k, s);
            int kern = em_kernel(e, "conv", "im2col", geo_tag(e, s), 2, 0, k.v);
            Ref args[2] = {R_WS(0), x};
            em_launch_elems(e, l, kern, (Dim){M * kc, 0}, 2, args);
            a = R_WS(0);
        }
        em_gemm(e, l, 1, 0, (Dim){0, kc}, (Dim){0, s->K}, (Dim){M, 0}, 1.0f, a, (int)kc, d,
                s->K, 0.0f, dw, s->K);
    }
    if (dx.buf == BUF_NULL) return;
    if (direct) {
        em_gemm(e, l, 0, 1, (Dim){M, 0}, (Dim){0, kc}, (Dim){0, s->K}, 1.0f, d, s->K, w, s->K,
                acc ? 1.0f : 0.0f, dx, (int)kc);
        return;
    }
    em_gemm(e, l, 0, 1, (Dim){M, 0}, (Dim){0, kc}, (Dim){0, s->K}, 1.0f, d, s->K, w, s->K,
            0.0f, R_WS(0), (int)kc);
    Kv k = {0};
    kv_geo(e, &k, s);
    kv_flag(e, &k, "ACC", acc);
    int kern = em_kernel(e, "conv", "col2im", geo_tag(e, s), 2, 0, k.v);
    Ref args[2] = {dx, R_WS(0)};
    em_launch_elems(e, l, kern, (Dim){(long)s->H * s->W * s->C, 0}, 2, args);
}

/* dW, dx of a depthwise conv from d (n*P*Q, C) (dwconv2d_backward; dbias
 * done). dW is split over the output cells with its partials in sp when
 * they fit (R*S arrays of G*C doubles), else one block per (channel, tap). */
static void emit_dwconv_dwdx(Emitter *e, LaunchList *l, const Geo *s, Ref dx, Ref dw, Ref d,
                             Ref x, Ref w, int acc, WsSpan sp)
{
    if (dx.buf != BUF_NULL) {
        Kv k = {0};
        kv_geo(e, &k, s);
        kv_flag(e, &k, "ACC", acc);
        int kern = em_kernel(e, "conv", "dwconv_dx", geo_tag(e, s), 3, 0, k.v);
        Ref args[3] = {dx, d, w};
        em_launch_elems(e, l, kern, (Dim){(long)s->H * s->W * s->C, 0}, 3, args);
    }
    if (dw.buf == BUF_NULL) return;
    int G = split_count_max(e, (long)s->P * s->Q, s->C, s->R * s->S, 0, sp, DW_SPLIT_MAX);
    if (G) {
        Kv k = {0};
        kv_geo(e, &k, s);
        kv_int(e, &k, "G", G);
        const char *tag = em_fmt(e, "%s_g%d", geo_tag(e, s), G);
        int kp = em_kernel(e, "conv", "dwconv_dw_part", tag, 3, 1, k.v);
        Ref pa[3] = {R_WS(sp.off), d, x};
        em_launch(e, l, kp, (Dim){0, (s->C + 31) / 32}, 1, G, EMIT_SYNC_BLOCK, 3, pa);
        int kf = em_kernel(e, "conv", "dwconv_dw_fin", tag, 2, 0, k.v);
        Ref fa[2] = {dw, R_WS(sp.off)};
        em_launch_elems(e, l, kf, (Dim){0, (long)s->R * s->S * s->C}, 2, fa);
        return;
    }
    {
        Kv k = {0};
        kv_geo(e, &k, s);
        int kern = em_kernel(e, "conv", "dwconv_dw", geo_tag(e, s), 3, 1, k.v);
        Ref args[3] = {dw, d, x};
        em_launch(e, l, kern, (Dim){0, s->C}, 1, s->R * s->S, EMIT_SYNC_BLOCK, 3, args);
    }
}

/* The backward of a conv (dw = 0) or depthwise conv (dw = 1) node: the
 * epilogue's backward into dz, then dbias, dW, dx. */
static void conv_bwd(Emitter *e, int ni, int dw, LaunchList *l)
{
    const Node *nd = &e->p->nodes[ni];
    const Layer *L = &e->g->layers[nd->layer];
    Geo s = geo_of(e->g, L);
    Ref w = nd->fold ? R_DERIVED(e, nd->derived) : R_PARAM(e, nd->layer, 0);
    Ref d = R_ACT(e, nd->dout);
    WsSpan sp = ws_free_around(e, 0, 0);
    if (node_has_epilogue(nd)) {
        size_t cws = layer_workspace(e->g, L, e->p->opt.batch);
        sp = ws_free_around(e, cws, e->p->tensors[nd->out].floats);
        emit_epi_bwd(e, ni, l, R_WS(cws), sp);
        if (plan_node_bn(e->p, nd) >= 0 || nd->act >= 0) d = R_WS(cws);
    }
    Ref dx = R_ACT(e, nd->din[0]);
    Ref dW = nd->train_w ? R_GRAD(e, nd->layer, 0) : R_NULL();
    Ref db = nd->train_w && layer_has_bias(L) && !nd->fold ? R_GRAD(e, nd->layer, 1) : R_NULL();
    Ref x = nd->save_in ? R_ACT(e, nd->in[0]) : R_NULL();
    if (db.buf != BUF_NULL) emit_dbias(e, l, (long)s.P * s.Q, s.K, db, d, sp);
    if (!dw) emit_conv_dwdx(e, l, &s, dx, dW, d, x, w, nd->din_acc[0]);
    else emit_dwconv_dwdx(e, l, &s, dx, dW, d, x, w, nd->din_acc[0], sp);
}

void em_conv_bwd(Emitter *e, int ni, LaunchList *l) { conv_bwd(e, ni, 0, l); }

void em_dwconv_bwd(Emitter *e, int ni, LaunchList *l) { conv_bwd(e, ni, 1, l); }

/* ---- standalone BN ------------------------------------------------------------------------- */

void em_bn_fwd(Emitter *e, int ni, int training, LaunchList *l)
{
    const Node *nd = &e->p->nodes[ni];
    const Layer *L = &e->g->layers[nd->layer];
    int b = nd->layer, C = L->out.c;
    long M = (long)L->out.h * L->out.w;
    Ref x = R_ACT(e, nd->in[0]);
    EpiFwd f = {0};
    f.act = "none";
    f.out = R_ACT(e, nd->out);
    f.z = x;
    f.bias_p = f.mean = f.invstd = f.gamma = f.beta = f.scale = f.shift = f.res_p = R_NULL();
    if (training && L->bn_mode == BN_TRAIN) {
        Ref st = R_ACT(e, nd->stats);
        emit_stats(e, l, b, M, C, st, x, ws_free_around(e, 0, 0));
        f.bn = 1;
        f.mean = st;
        f.invstd = R_OFF(st, (size_t)C);
        f.gamma = R_PARAM(e, b, 0);
        f.beta = R_PARAM(e, b, 1);
    } else {
        emit_derive(e, ni, l);
        f.bn = 2;
        f.scale = R_DERIVED(e, nd->derived);
        f.shift = R_DERIVED(e, nd->derived + (size_t)C);
    }
    emit_epi_fwd(e, l, M, C, &f);
}

void em_bn_bwd(Emitter *e, int ni, LaunchList *l)
{
    const Node *nd = &e->p->nodes[ni];
    const Layer *L = &e->g->layers[nd->layer];
    int b = nd->layer, C = L->out.c, acc = nd->din_acc[0];
    long M = (long)L->out.h * L->out.w;
    Ref dx = R_ACT(e, nd->din[0]), dout = R_ACT(e, nd->dout);
    Ref x = nd->save_in ? R_ACT(e, nd->in[0]) : R_NULL();
    ChanBwd cb = {0};
    cb.ws = ws_free_around(e, 0, 0);
    cb.sx = 1;
    cb.dg = cb.db = nd->train_bn;
    cb.eps = L->a.bn.eps;
    cb.dgamma = nd->train_bn ? R_GRAD(e, b, 0) : R_NULL();
    cb.dbeta = nd->train_bn ? R_GRAD(e, b, 1) : R_NULL();
    cb.a = dout;
    cb.x = x;
    cb.scale = R_NULL();
    if (L->bn_mode == BN_TRAIN) {
        Ref st = R_ACT(e, nd->stats);
        cb.dx = dx.buf != BUF_NULL ? 1 : 0;
        cb.acc = acc;
        cb.dx_p = dx;
        cb.mean = st;
        cb.invstd = R_OFF(st, (size_t)C);
        cb.gamma = R_PARAM(e, b, 0);
        emit_chan(e, l, M, C, &cb);
        return;
    }
    if (nd->train_bn) {
        cb.inv = 1;
        cb.dx_p = cb.gamma = R_NULL();
        cb.mean = R_PARAM(e, b, 2);
        cb.invstd = R_PARAM(e, b, 3);   /* the variance: INV computes invstd from it */
        emit_chan(e, l, M, C, &cb);
    }
    if (dx.buf == BUF_NULL) return;
    Kv k = {0};
    kv_int(e, &k, "M", M);
    kv_int(e, &k, "C", C);
    kv_float(e, &k, "EPS", L->a.bn.eps);
    kv_flag(e, &k, "ACC", acc);
    int kern = em_kernel(e, "conv", "bn_infer_dx", rc_tag(e, M, C), 4, 0, k.v);
    Ref args[4] = {dx, dout, R_PARAM(e, b, 0), R_PARAM(e, b, 3)};
    em_launch_elems(e, l, kern, (Dim){M * C, 0}, 4, args);
}

/* ---- folding ------------------------------------------------------------------------------- */

void em_fold(Emitter *e, int ni, LaunchList *l)
{
    const Node *nd = &e->p->nodes[ni];
    const Layer *L = &e->g->layers[nd->layer];
    const Layer *bl = &e->g->layers[nd->bn];
    int C = bl->out.c;
    size_t numel = e->g->params[L->first_param].numel;
    long rows = (long)(numel / (size_t)C);
    int has_b = layer_has_bias(L);
    Kv k = {0};
    kv_int(e, &k, "C", C);
    kv_int(e, &k, "ROWS", rows);
    kv_float(e, &k, "EPS", bl->a.bn.eps);
    kv_flag(e, &k, "BIAS", has_b);
    int kern = em_kernel(e, "conv", "bn_fold", rc_tag(e, rows, C), 7, 0, k.v);
    Ref a[7] = {R_DERIVED(e, nd->derived), R_PARAM(e, nd->layer, 0),
                has_b ? R_PARAM(e, nd->layer, 1) : R_NULL(), R_PARAM(e, nd->bn, 0),
                R_PARAM(e, nd->bn, 1), R_PARAM(e, nd->bn, 2), R_PARAM(e, nd->bn, 3)};
    em_launch_elems(e, l, kern, (Dim){0, (long)numel + C}, 7, a);
}
