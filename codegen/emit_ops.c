/* codegen/emit_ops.c — the emitter of every op but conv, depthwise conv and
 * BN (standalone activations, add, channel multiply, global average pool,
 * max pool, zero padding, dense, dropout), of the loss and of the optimizer
 * update, from the templates of kernels/cuda/ops.cu.
 *
 * Contract: the launches of a node compute what runtime/cpu.c's
 * forward_node/backward_node compute for it with the kernels/cpu functions:
 * the same pointers (a NULL gradient skips its work), input gradients
 * overwritten or added following the node's din_acc, parameter gradients
 * overwritten. The loss mirrors run_forward's softmax_ce (dlogits into the
 * loss node's din[0] in training only) and leaves the summed loss, the hit
 * count and the non-finite flag in the control block; the update mirrors
 * cpu_train_step: the finite check of the whole gradient arena, then one
 * SGD-momentum kernel over the trainable arena that does nothing when the
 * flag is set.
 *
 * Invariants: shapes are baked into the kernel text, the batch count is the
 * launch's n; the same plan gives the same text and launches.
 */
#include "codegen/emit_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------ */

static int ops_kernel(Emitter *e, const char *section, const char *tag, int n_args, const Kv *k)
{
    return em_kernel(e, "ops", section, tag, n_args, 0, k->v);
}

static int ops_sync_kernel(Emitter *e, const char *section, const char *tag, int n_args, const Kv *k)
{
    return em_kernel(e, "ops", section, tag, n_args, 1, k->v);
}

/* A pointer the CPU executor would dereference: fail when the plan gives none. */
static Ref need(Emitter *e, int ni, Ref r, const char *what)
{
    if (r.buf == BUF_NULL) em_fail(e, "node %d: %s is not kept by the plan", ni, what);
    return r;
}

static int same_ref(Ref a, Ref b) { return a.buf == b.buf && a.off == b.off; }

static Shape in_shape(const Emitter *e, const Layer *l)
{
    return l->n_in ? e->g->layers[l->in[0]].out : l->out;
}

static long shape_elems(Shape s) { return (long)s.h * s.w * s.c; }

static const char *shape_tag(Emitter *e, Shape s) { return em_fmt(e, "%dx%dx%d", s.h, s.w, s.c); }

/* dx (+)= dout over `per` elements an image (add backward, copies). */
static void emit_grad_pass(Emitter *e, LaunchList *l, Shape s, Ref dx, Ref dout, int acc)
{
    if (!acc && same_ref(dx, dout)) return;
    long per = shape_elems(s);
    Kv kv = {0};
    kv_int(e, &kv, "PER", per);
    kv_flag(e, &kv, "ACC", acc);
    int k = ops_kernel(e, "grad_pass", shape_tag(e, s), 2, &kv);
    Ref a[] = {dx, dout};
    em_launch_elems(e, l, k, (Dim){per, 0}, 2, a);
}

/* out = x over `per` elements an image (skipped when out is x). */
static void emit_copy(Emitter *e, LaunchList *l, Shape s, Ref out, Ref x)
{
    if (same_ref(out, x)) return;
    long per = shape_elems(s);
    Kv kv = {0};
    kv_int(e, &kv, "PER", per);
    int k = ops_kernel(e, "copy", shape_tag(e, s), 2, &kv);
    Ref a[] = {out, x};
    em_launch_elems(e, l, k, (Dim){per, 0}, 2, a);
}

/* ---- activations, add, channel multiply ------------------------------------------------- */

static void emit_act_fwd(Emitter *e, LaunchList *l, const Layer *L, Ref out, Ref x)
{
    Shape s = in_shape(e, L);
    long per = shape_elems(s);
    const char *act = em_act_name(L->op);
    Kv kv = {0};
    kv_int(e, &kv, "PER", per);
    kv_str(e, &kv, "ACT", act);
    int k = ops_kernel(e, "act_fwd", em_fmt(e, "%s_%s", act, shape_tag(e, s)), 2, &kv);
    Ref a[] = {out, x};
    em_launch_elems(e, l, k, (Dim){per, 0}, 2, a);
}

static void emit_act_bwd(Emitter *e, LaunchList *l, int ni, const Layer *L, Ref dx, Ref dout,
                         Ref x, int acc)
{
    Shape s = in_shape(e, L);
    long per = shape_elems(s);
    const char *act = em_act_name(L->op);
    Kv kv = {0};
    kv_int(e, &kv, "PER", per);
    kv_str(e, &kv, "ACT", act);
    kv_flag(e, &kv, "ACC", acc);
    int k = ops_kernel(e, "act_bwd", em_fmt(e, "%s_%s", act, shape_tag(e, s)), 3, &kv);
    Ref a[] = {dx, need(e, ni, dout, "the output gradient"), need(e, ni, x, "the input")};
    em_launch_elems(e, l, k, (Dim){per, 0}, 3, a);
}

static void emit_add_fwd(Emitter *e, LaunchList *l, Shape s, Ref out, Ref a0, Ref a1)
{
    long per = shape_elems(s);
    Kv kv = {0};
    kv_int(e, &kv, "PER", per);
    int k = ops_kernel(e, "add_fwd", shape_tag(e, s), 3, &kv);
    Ref a[] = {out, a0, a1};
    em_launch_elems(e, l, k, (Dim){per, 0}, 3, a);
}

/* Keys HW, C (and ACC) of the channel multiply and the pool. */
static const Kv *hw_c_kv(Emitter *e, Kv *k, Shape s, int acc)
{
    *k = (Kv){0};
    kv_int(e, k, "HW", (long)s.h * s.w);
    kv_int(e, k, "C", s.c);
    kv_flag(e, k, "ACC", acc);
    return k;
}

static void emit_mul_fwd(Emitter *e, LaunchList *l, Shape s, Ref out, Ref x, Ref sc)
{
    Kv kv;
    int k = ops_kernel(e, "chanmul_fwd", shape_tag(e, s), 3, hw_c_kv(e, &kv, s, 0));
    Ref a[] = {out, x, sc};
    em_launch_elems(e, l, k, (Dim){shape_elems(s), 0}, 3, a);
}

/* chanmul_backward: dx (din[0]) and ds (din[1]), each when wanted. */
static void emit_mul_bwd(Emitter *e, LaunchList *l, int ni, Shape s)
{
    const Node *nd = &e->p->nodes[ni];
    Ref dout = need(e, ni, R_ACT(e, nd->dout), "the output gradient");
    Kv kv;
    if (nd->din[0] >= 0) {
        int k = ops_kernel(e, "chanmul_dx", shape_tag(e, s), 3, hw_c_kv(e, &kv, s, nd->din_acc[0]));
        Ref a[] = {R_ACT(e, nd->din[0]), dout, need(e, ni, R_ACT(e, nd->in[1]), "the scale")};
        em_launch_elems(e, l, k, (Dim){shape_elems(s), 0}, 3, a);
    }
    if (nd->din[1] >= 0) {
        Ref x = nd->save_in ? R_ACT(e, nd->in[0]) : R_NULL();
        int k = ops_kernel(e, "chanmul_ds", shape_tag(e, s), 3, hw_c_kv(e, &kv, s, nd->din_acc[1]));
        Ref a[] = {R_ACT(e, nd->din[1]), dout, need(e, ni, x, "the input")};
        em_launch_elems(e, l, k, (Dim){s.c, 0}, 3, a);
    }
}

/* ---- pooling and padding ---------------------------------------------------------------- */

static void emit_gap_fwd(Emitter *e, LaunchList *l, Shape s, Ref out, Ref x)
{
    Kv kv;
    int k = ops_kernel(e, "gap_fwd", shape_tag(e, s), 2, hw_c_kv(e, &kv, s, 0));
    Ref a[] = {out, x};
    em_launch_elems(e, l, k, (Dim){s.c, 0}, 2, a);
}

static void emit_gap_bwd(Emitter *e, LaunchList *l, Shape s, Ref dx, Ref dout, int acc)
{
    Kv kv;
    int k = ops_kernel(e, "gap_bwd", shape_tag(e, s), 2, hw_c_kv(e, &kv, s, acc));
    Ref a[] = {dx, dout};
    em_launch_elems(e, l, k, (Dim){shape_elems(s), 0}, 2, a);
}

/* Keys of the max pool: the input, the window, the output, ACC. */
static const Kv *pool_kv(Emitter *e, Kv *k, const Layer *L, int acc)
{
    Geo gw = geo_of(e->g, L);
    *k = (Kv){0};
    kv_geo(e, k, &gw);
    kv_flag(e, k, "ACC", acc);
    return k;
}

static const char *pool_tag(Emitter *e, const Layer *L, Shape s)
{
    const ConvAttr *c = &L->a.conv;
    return em_fmt(e, "%s_k%dx%ds%dx%d", shape_tag(e, s), c->kh, c->kw, c->sh, c->sw);
}

static void emit_maxpool_fwd(Emitter *e, LaunchList *l, const Layer *L, Ref out, Ref x)
{
    Shape s = in_shape(e, L);
    Kv kv;
    int k = ops_kernel(e, "maxpool_fwd", pool_tag(e, L, s), 2, pool_kv(e, &kv, L, 0));
    Ref a[] = {out, x};
    em_launch_elems(e, l, k, (Dim){shape_elems(L->out), 0}, 2, a);
}

static void emit_maxpool_bwd(Emitter *e, LaunchList *l, int ni, const Layer *L, Ref dx,
                             Ref dout, Ref x, int acc)
{
    Shape s = in_shape(e, L);
    Kv kv;
    int k = ops_kernel(e, "maxpool_bwd", pool_tag(e, L, s), 3, pool_kv(e, &kv, L, acc));
    Ref a[] = {dx, need(e, ni, dout, "the output gradient"), need(e, ni, x, "the input")};
    em_launch_elems(e, l, k, (Dim){shape_elems(s), 0}, 3, a);
}

static const Kv *pad_kv(Emitter *e, Kv *k, const Layer *L, Shape s, int acc)
{
    const PadAttr *p = &L->a.pad;
    *k = (Kv){0};
    kv_int(e, k, "H", s.h); kv_int(e, k, "W", s.w); kv_int(e, k, "C", s.c);
    kv_int(e, k, "PT", p->pt); kv_int(e, k, "PL", p->pl);
    kv_int(e, k, "HO", s.h + p->pt + p->pb); kv_int(e, k, "WO", s.w + p->pl + p->pr);
    kv_flag(e, k, "ACC", acc);
    return k;
}

static const char *pad_tag(Emitter *e, const Layer *L, Shape s)
{
    const PadAttr *p = &L->a.pad;
    return em_fmt(e, "%s_p%d_%d_%d_%d", shape_tag(e, s), p->pt, p->pb, p->pl, p->pr);
}

static void emit_zeropad_fwd(Emitter *e, LaunchList *l, const Layer *L, Ref out, Ref x)
{
    Shape s = in_shape(e, L);
    Kv kv;
    int k = ops_kernel(e, "zeropad_fwd", pad_tag(e, L, s), 2, pad_kv(e, &kv, L, s, 0));
    Ref a[] = {out, x};
    const PadAttr *p = &L->a.pad;
    Shape o = {s.h + p->pt + p->pb, s.w + p->pl + p->pr, s.c};
    em_launch_elems(e, l, k, (Dim){shape_elems(o), 0}, 2, a);
}

static void emit_zeropad_bwd(Emitter *e, LaunchList *l, const Layer *L, Ref dx, Ref dout, int acc)
{
    Shape s = in_shape(e, L);
    Kv kv;
    int k = ops_kernel(e, "zeropad_bwd", pad_tag(e, L, s), 2, pad_kv(e, &kv, L, s, acc));
    Ref a[] = {dx, dout};
    em_launch_elems(e, l, k, (Dim){shape_elems(s), 0}, 2, a);
}

/* ---- dense -------------------------------------------------------------------------------- */

/* out (n, K) = x (n, F) w (F, K) + bias, as dense_forward. */
static void emit_dense_fwd(Emitter *e, LaunchList *l, int ni, Ref out, Ref x)
{
    const Node *nd = &e->p->nodes[ni];
    const Layer *L = &e->g->layers[nd->layer];
    int F = (int)shape_elems(in_shape(e, L)), K = L->out.c;
    em_gemm(e, l, 0, 0, (Dim){1, 0}, (Dim){0, K}, (Dim){0, F}, 1.0f, x, F,
            R_PARAM(e, nd->layer, 0), K, 0.0f, out, K);
    if (!em_has_bias(L)) return;
    Kv kv = {0};
    kv_int(e, &kv, "K", K);
    int k = ops_kernel(e, "dense_bias", em_fmt(e, "%d", K), 2, &kv);
    Ref a[] = {out, R_PARAM(e, nd->layer, 1)};
    em_launch_elems(e, l, k, (Dim){K, 0}, 2, a);
}

/* dense_backward: dw = x^T dout, dbias = column sums (double), dx (+)= dout w^T. */
static void emit_dense_bwd(Emitter *e, LaunchList *l, int ni)
{
    const Node *nd = &e->p->nodes[ni];
    const Layer *L = &e->g->layers[nd->layer];
    int F = (int)shape_elems(in_shape(e, L)), K = L->out.c;
    Ref dout = need(e, ni, R_ACT(e, nd->dout), "the output gradient");
    Ref dw = nd->train_w ? R_GRAD(e, nd->layer, 0) : R_NULL();
    Ref db = nd->train_w && em_has_bias(L) ? R_GRAD(e, nd->layer, 1) : R_NULL();
    if (dw.buf != BUF_NULL) {
        Ref x = need(e, ni, nd->save_in ? R_ACT(e, nd->in[0]) : R_NULL(), "the input");
        em_gemm(e, l, 1, 0, (Dim){0, F}, (Dim){0, K}, (Dim){1, 0}, 1.0f, x, F, dout, K,
                0.0f, dw, K);
    }
    if (db.buf != BUF_NULL) {
        Kv kv = {0};
        kv_int(e, &kv, "K", K);
        kv_int(e, &kv, "BLOCK", EMIT_SYNC_BLOCK);
        int k = ops_sync_kernel(e, "dense_dbias", em_fmt(e, "%d", K), 2, &kv);
        Ref a[] = {db, dout};
        em_launch(e, l, k, (Dim){0, K}, 1, 1, EMIT_SYNC_BLOCK, 2, a);
    }
    if (nd->din[0] >= 0)
        em_gemm(e, l, 0, 1, (Dim){1, 0}, (Dim){0, F}, (Dim){0, K}, 1.0f, dout, K,
                R_PARAM(e, nd->layer, 0), K, nd->din_acc[0] ? 1.0f : 0.0f,
                R_ACT(e, nd->din[0]), F);
}

/* ---- dropout ------------------------------------------------------------------------------- */

static const Kv *drop_kv(Emitter *e, Kv *k, int ni, Shape s, int acc)
{
    const Layer *L = &e->g->layers[e->p->nodes[ni].layer];
    *k = (Kv){0};
    kv_int(e, k, "PER", shape_elems(s));
    kv_float(e, k, "RATE", L->a.dropout.rate);
    kv_int(e, k, "LAYER", e->p->nodes[ni].layer);
    kv_int(e, k, "STEP", CTRL_STEP);
    kv_flag(e, k, "ACC", acc);
    return k;
}

/* dropout_forward in training (rate <= 0: a copy), a copy in inference. */
static void emit_dropout_fwd(Emitter *e, LaunchList *l, int ni, int training, Ref out, Ref x)
{
    const Layer *L = &e->g->layers[e->p->nodes[ni].layer];
    Shape s = in_shape(e, L);
    if (!training || L->a.dropout.rate <= 0) { emit_copy(e, l, s, out, x); return; }
    Kv kv;
    int k = ops_kernel(e, "dropout_fwd", shape_tag(e, s), 3, drop_kv(e, &kv, ni, s, 0));
    Ref a[] = {out, x, R_CTRL()};
    em_launch_elems(e, l, k, (Dim){shape_elems(s), 0}, 3, a);
}

static void emit_dropout_bwd(Emitter *e, LaunchList *l, int ni, Ref dx, Ref dout, int acc)
{
    const Layer *L = &e->g->layers[e->p->nodes[ni].layer];
    Shape s = in_shape(e, L);
    if (L->a.dropout.rate <= 0) { emit_grad_pass(e, l, s, dx, dout, acc); return; }
    Kv kv;
    int k = ops_kernel(e, "dropout_bwd", shape_tag(e, s), 3, drop_kv(e, &kv, ni, s, acc));
    Ref a[] = {dx, dout, R_CTRL()};
    em_launch_elems(e, l, k, (Dim){shape_elems(s), 0}, 3, a);
}

/* ---- the per-node entry points --------------------------------------------------------- */

void em_op_fwd(Emitter *e, int ni, int training, LaunchList *l)
{
    const Node *nd = &e->p->nodes[ni];
    const Layer *L = &e->g->layers[nd->layer];
    Shape s = in_shape(e, L);
    Ref x = nd->n_in ? R_ACT(e, nd->in[0]) : R_NULL(), out = R_ACT(e, nd->out);
    switch (L->op) {
    case OP_RELU: case OP_RELU6: case OP_SWISH: case OP_SIGMOID: case OP_GELU:
        emit_act_fwd(e, l, L, out, x);
        break;
    case OP_LAYERNORM: em_layernorm_fwd(e, ni, training, l); break;
    case OP_LAYERSCALE: em_layerscale_fwd(e, ni, training, l); break;
    case OP_ADD: emit_add_fwd(e, l, s, out, x, R_ACT(e, nd->in[1])); break;
    case OP_MUL: emit_mul_fwd(e, l, s, out, x, R_ACT(e, nd->in[1])); break;
    case OP_GAP: emit_gap_fwd(e, l, s, out, x); break;
    case OP_MAXPOOL: emit_maxpool_fwd(e, l, L, out, x); break;
    case OP_ZEROPAD: emit_zeropad_fwd(e, l, L, out, x); break;
    case OP_DENSE: emit_dense_fwd(e, l, ni, out, x); break;
    case OP_DROPOUT: emit_dropout_fwd(e, l, ni, training, out, x); break;
    default:
        em_fail(e, "node %d (%s): no template for this op", ni, L->name);
        break;
    }
}

void em_op_bwd(Emitter *e, int ni, LaunchList *l)
{
    const Node *nd = &e->p->nodes[ni];
    const Layer *L = &e->g->layers[nd->layer];
    Shape s = in_shape(e, L);
    Ref x = nd->save_in ? R_ACT(e, nd->in[0]) : R_NULL();
    Ref dx = R_ACT(e, nd->din[0]), dout = R_ACT(e, nd->dout);
    int acc = nd->din_acc[0], has_dx = dx.buf != BUF_NULL;
    switch (L->op) {
    case OP_RELU: case OP_RELU6: case OP_SWISH: case OP_SIGMOID: case OP_GELU:
        if (has_dx) emit_act_bwd(e, l, ni, L, dx, dout, x, acc);
        break;
    case OP_LAYERNORM: em_layernorm_bwd(e, ni, l); break;
    case OP_LAYERSCALE: em_layerscale_bwd(e, ni, l); break;
    case OP_ADD:
        if (has_dx) emit_grad_pass(e, l, s, dx, need(e, ni, dout, "the output gradient"), acc);
        if (nd->din[1] >= 0)
            emit_grad_pass(e, l, s, R_ACT(e, nd->din[1]), need(e, ni, dout, "the output gradient"),
                           nd->din_acc[1]);
        break;
    case OP_MUL: emit_mul_bwd(e, l, ni, s); break;
    case OP_GAP:
        if (has_dx) emit_gap_bwd(e, l, s, dx, need(e, ni, dout, "the output gradient"), acc);
        break;
    case OP_MAXPOOL:
        if (has_dx) emit_maxpool_bwd(e, l, ni, L, dx, dout, x, acc);
        break;
    case OP_ZEROPAD:
        if (has_dx) emit_zeropad_bwd(e, l, L, dx, need(e, ni, dout, "the output gradient"), acc);
        break;
    case OP_DENSE: emit_dense_bwd(e, l, ni); break;
    case OP_DROPOUT:
        if (has_dx) emit_dropout_bwd(e, l, ni, dx, need(e, ni, dout, "the output gradient"), acc);
        break;
    default:
        em_fail(e, "node %d (%s): no backward template for this op", ni, L->name);
        break;
    }
}

/* ---- loss ----------------------------------------------------------------------------------- */

void em_loss(Emitter *e, int training, LaunchList *l)
{
    const Plan *p = e->p;
    const Node *ln = &p->nodes[p->loss_node];
    int K = e->g->layers[ln->layer].out.c;
    int train = training && ln->din[0] >= 0;
    Kv kv = {0};
    kv_int(e, &kv, "K", K);
    kv_flag(e, &kv, "TRAIN", train);
    kv_int(e, &kv, "BLOCK", EMIT_SYNC_BLOCK);
    kv_int(e, &kv, "LOSS", CTRL_LOSS);
    kv_int(e, &kv, "CORRECT", CTRL_CORRECT);
    kv_int(e, &kv, "BAD", CTRL_BAD);
    int k = ops_sync_kernel(e, "softmax_ce", em_fmt(e, "%s%d", train ? "train" : "eval", K), 4, &kv);
    Ref a[] = {R_CTRL(), R_ACT(e, p->logits_tensor), R_ACT(e, p->labels_tensor),
               train ? R_ACT(e, ln->din[0]) : R_NULL()};
    em_launch(e, l, k, (Dim){0, 1}, 1, 1, EMIT_SYNC_BLOCK, 4, a);
}

/* ---- update --------------------------------------------------------------------------------- */

typedef struct { char *s; size_t len, cap; int failed; } Text;

static void text_add(Text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_add(Text *t, const char *fmt, ...)
{
    if (t->failed) return;
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= sizeof buf) { t->failed = 1; return; }
    if (t->len + (size_t)w + 1 > t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 1024;
        while (cap < t->len + (size_t)w + 1) cap *= 2;
        char *s = realloc(t->s, cap);
        if (!s) { t->failed = 1; return; }
        t->s = s; t->cap = cap;
    }
    memcpy(t->s + t->len, buf, (size_t)w + 1);
    t->len += (size_t)w;
}

/* The segments [lo, hi) (sorted, disjoint) as a balanced comparison tree
 * that sets grp for element i. */
static void seg_tree(Text *t, const PlanSegment *s, int lo, int hi)
{
    if (hi - lo == 1) {
        text_add(t, "if (i >= %zuL && i < %zuL) grp = %d;", s[lo].begin, s[lo].end, s[lo].group);
        return;
    }
    int mid = (lo + hi) / 2;
    text_add(t, "if (i < %zuL) { ", s[mid].begin);
    seg_tree(t, s, lo, mid);
    text_add(t, " } else { ");
    seg_tree(t, s, mid, hi);
    text_add(t, " }");
}

/* Check the plan's segment table: sorted, disjoint, groups in the control block. */
static int segs_ok(Emitter *e)
{
    const Plan *p = e->p;
    for (int i = 0; i < p->n_segs; i++) {
        const PlanSegment *s = &p->segs[i];
        if (s->group < 0 || s->group >= EMIT_MAX_GROUPS) {
            em_fail(e, "LR group %d: at most %d groups", s->group, EMIT_MAX_GROUPS);
            return 0;
        }
        if (s->end < s->begin || (i > 0 && s->begin < p->segs[i - 1].end)) {
            em_fail(e, "LR segment %d: not sorted or overlapping", i);
            return 0;
        }
    }
    return 1;
}

void em_update(Emitter *e, LaunchList *l)
{
    const Plan *p = e->p;
    if (p->grad_floats) {
        Kv kv = {0};
        kv_str(e, &kv, "TOTAL", em_fmt(e, "%zuL", p->grad_floats));
        kv_int(e, &kv, "BAD", CTRL_BAD);
        int k = ops_kernel(e, "finite_check", em_fmt(e, "%zu", p->grad_floats), 2, &kv);
        Ref a[] = {R_CTRL(), R_GRADS(0)};
        em_launch_elems(e, l, k, (Dim){0, (long)p->grad_floats}, 2, a);
    }
    if (!p->trainable_floats || !segs_ok(e)) return;
    Text find = {0};
    if (p->n_segs) seg_tree(&find, p->segs, 0, p->n_segs);
    if (find.failed) { free(find.s); em_fail(e, "out of memory"); return; }
    Kv kv = {0};
    kv_str(e, &kv, "TOTAL", em_fmt(e, "%zuL", p->trainable_floats));
    kv_str(e, &kv, "FIND", find.s ? find.s : "");
    kv_int(e, &kv, "BAD", CTRL_BAD);
    kv_int(e, &kv, "LR", CTRL_LR);
    kv_int(e, &kv, "WD", CTRL_WD);
    kv_int(e, &kv, "MOMENTUM", CTRL_MOMENTUM);
    int k = ops_kernel(e, "sgd", em_fmt(e, "%zu_%dseg", p->trainable_floats, p->n_segs), 4, &kv);
    free(find.s);
    Ref a[] = {R_PARAMS(0), R_GRADS(0), R_MOM(0), R_CTRL()};
    em_launch_elems(e, l, k, (Dim){0, (long)p->trainable_floats}, 4, a);
}
