/* codegen/emit_ops.c — the per-op emitters of every op but conv, depthwise
 * conv and BN: standalone activations, add, channel multiply, global average
 * pool, max pool, zero padding, dense, dropout, from the templates of
 * kernels/cuda/ops.cu. The walk (emit.c) reaches them through its op table;
 * they call only the base (emit_base.c).
 *
 * Contract: the launches of a node compute what runtime/cpu.c's
 * forward_node/backward_node compute for it with the kernels/cpu functions:
 * the same pointers (a NULL gradient skips its work), input gradients
 * overwritten or added following the node's din_acc, parameter gradients
 * overwritten.
 *
 * Invariants: shapes are baked into the kernel text, the batch count is the
 * launch's n; the same plan gives the same text and launches.
 */
#include "codegen/emit_internal.h"


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

/* What a node's forward reads and writes: x the first input (NULL for none),
 * s its shape. */
typedef struct { const Node *nd; const Layer *L; Shape s; Ref x, out; } NodeFwd;

static NodeFwd node_fwd(const Emitter *e, int ni)
{
    NodeFwd f;
    f.nd = &e->p->nodes[ni];
    f.L = &e->g->layers[f.nd->layer];
    f.s = in_shape(e, f.L);
    f.x = f.nd->n_in ? R_ACT(e, f.nd->in[0]) : R_NULL();
    f.out = R_ACT(e, f.nd->out);
    return f;
}

/* What a node's backward reads and writes: x the saved first input (NULL
 * when the plan keeps none), dx the first input's gradient (NULL when not
 * wanted) with its acc flag, dout the output gradient. */
typedef struct { const Node *nd; const Layer *L; Shape s; Ref x, dx, dout; int acc; } NodeBwd;

static NodeBwd node_bwd(const Emitter *e, int ni)
{
    NodeBwd b;
    b.nd = &e->p->nodes[ni];
    b.L = &e->g->layers[b.nd->layer];
    b.s = in_shape(e, b.L);
    b.x = b.nd->save_in ? R_ACT(e, b.nd->in[0]) : R_NULL();
    b.dx = R_ACT(e, b.nd->din[0]);
    b.dout = R_ACT(e, b.nd->dout);
    b.acc = b.nd->din_acc[0];
    return b;
}

/* ---- activations, add, channel multiply ------------------------------------------------- */

void em_act_fwd(Emitter *e, int ni, int training, LaunchList *l)
{
    (void)training;
    NodeFwd f = node_fwd(e, ni);
    long per = shape_elems(f.s);
    const char *act = act_name(op_act(f.L->op));
    Kv kv = {0};
    kv_int(e, &kv, "PER", per);
    kv_str(e, &kv, "ACT", act);
    int k = ops_kernel(e, "act_fwd", em_fmt(e, "%s_%s", act, shape_tag(e, f.s)), 2, &kv);
    Ref a[] = {f.out, f.x};
    em_launch_elems(e, l, k, (Dim){per, 0}, 2, a);
}

void em_act_bwd(Emitter *e, int ni, LaunchList *l)
{
    NodeBwd b = node_bwd(e, ni);
    if (b.dx.buf == BUF_NULL) return;
    long per = shape_elems(b.s);
    const char *act = act_name(op_act(b.L->op));
    Kv kv = {0};
    kv_int(e, &kv, "PER", per);
    kv_str(e, &kv, "ACT", act);
    kv_flag(e, &kv, "ACC", b.acc);
    int k = ops_kernel(e, "act_bwd", em_fmt(e, "%s_%s", act, shape_tag(e, b.s)), 3, &kv);
    Ref a[] = {b.dx, need(e, ni, b.dout, "the output gradient"), need(e, ni, b.x, "the input")};
    em_launch_elems(e, l, k, (Dim){per, 0}, 3, a);
}

void em_add_fwd(Emitter *e, int ni, int training, LaunchList *l)
{
    (void)training;
    NodeFwd f = node_fwd(e, ni);
    long per = shape_elems(f.s);
    Kv kv = {0};
    kv_int(e, &kv, "PER", per);
    int k = ops_kernel(e, "add_fwd", shape_tag(e, f.s), 3, &kv);
    Ref a[] = {f.out, f.x, R_ACT(e, f.nd->in[1])};
    em_launch_elems(e, l, k, (Dim){per, 0}, 3, a);
}

/* Both inputs' gradients are the output gradient. */
void em_add_bwd(Emitter *e, int ni, LaunchList *l)
{
    NodeBwd b = node_bwd(e, ni);
    if (b.dx.buf != BUF_NULL)
        emit_grad_pass(e, l, b.s, b.dx, need(e, ni, b.dout, "the output gradient"), b.acc);
    if (b.nd->din[1] >= 0)
        emit_grad_pass(e, l, b.s, R_ACT(e, b.nd->din[1]), need(e, ni, b.dout, "the output gradient"),
                       b.nd->din_acc[1]);
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

void em_mul_fwd(Emitter *e, int ni, int training, LaunchList *l)
{
    (void)training;
    NodeFwd f = node_fwd(e, ni);
    Kv kv;
    int k = ops_kernel(e, "chanmul_fwd", shape_tag(e, f.s), 3, hw_c_kv(e, &kv, f.s, 0));
    Ref a[] = {f.out, f.x, R_ACT(e, f.nd->in[1])};
    em_launch_elems(e, l, k, (Dim){shape_elems(f.s), 0}, 3, a);
}

/* chanmul_backward: dx (din[0]) and ds (din[1]), each when wanted. */
void em_mul_bwd(Emitter *e, int ni, LaunchList *l)
{
    const Node *nd = &e->p->nodes[ni];
    Shape s = in_shape(e, &e->g->layers[nd->layer]);
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

void em_gap_fwd(Emitter *e, int ni, int training, LaunchList *l)
{
    (void)training;
    NodeFwd f = node_fwd(e, ni);
    Kv kv;
    int k = ops_kernel(e, "gap_fwd", shape_tag(e, f.s), 2, hw_c_kv(e, &kv, f.s, 0));
    Ref a[] = {f.out, f.x};
    em_launch_elems(e, l, k, (Dim){f.s.c, 0}, 2, a);
}

void em_gap_bwd(Emitter *e, int ni, LaunchList *l)
{
    NodeBwd b = node_bwd(e, ni);
    if (b.dx.buf == BUF_NULL) return;
    Ref dout = need(e, ni, b.dout, "the output gradient");
    Kv kv;
    int k = ops_kernel(e, "gap_bwd", shape_tag(e, b.s), 2, hw_c_kv(e, &kv, b.s, b.acc));
    Ref a[] = {b.dx, dout};
    em_launch_elems(e, l, k, (Dim){shape_elems(b.s), 0}, 2, a);
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

void em_maxpool_fwd(Emitter *e, int ni, int training, LaunchList *l)
{
    (void)training;
    NodeFwd f = node_fwd(e, ni);
    Kv kv;
    int k = ops_kernel(e, "maxpool_fwd", pool_tag(e, f.L, f.s), 2, pool_kv(e, &kv, f.L, 0));
    Ref a[] = {f.out, f.x};
    em_launch_elems(e, l, k, (Dim){shape_elems(f.L->out), 0}, 2, a);
}

void em_maxpool_bwd(Emitter *e, int ni, LaunchList *l)
{
    NodeBwd b = node_bwd(e, ni);
    if (b.dx.buf == BUF_NULL) return;
    Kv kv;
    int k = ops_kernel(e, "maxpool_bwd", pool_tag(e, b.L, b.s), 3, pool_kv(e, &kv, b.L, b.acc));
    Ref a[] = {b.dx, need(e, ni, b.dout, "the output gradient"), need(e, ni, b.x, "the input")};
    em_launch_elems(e, l, k, (Dim){shape_elems(b.s), 0}, 3, a);
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

void em_zeropad_fwd(Emitter *e, int ni, int training, LaunchList *l)
{
    (void)training;
    NodeFwd f = node_fwd(e, ni);
    Kv kv;
    int k = ops_kernel(e, "zeropad_fwd", pad_tag(e, f.L, f.s), 2, pad_kv(e, &kv, f.L, f.s, 0));
    Ref a[] = {f.out, f.x};
    const PadAttr *p = &f.L->a.pad;
    Shape o = {f.s.h + p->pt + p->pb, f.s.w + p->pl + p->pr, f.s.c};
    em_launch_elems(e, l, k, (Dim){shape_elems(o), 0}, 2, a);
}

void em_zeropad_bwd(Emitter *e, int ni, LaunchList *l)
{
    NodeBwd b = node_bwd(e, ni);
    if (b.dx.buf == BUF_NULL) return;
    Ref dout = need(e, ni, b.dout, "the output gradient");
    Kv kv;
    int k = ops_kernel(e, "zeropad_bwd", pad_tag(e, b.L, b.s), 2, pad_kv(e, &kv, b.L, b.s, b.acc));
    Ref a[] = {b.dx, dout};
    em_launch_elems(e, l, k, (Dim){shape_elems(b.s), 0}, 2, a);
}

/* ---- dense -------------------------------------------------------------------------------- */

/* out (n, K) = x (n, F) w (F, K) + bias, as dense_forward. */
void em_dense_fwd(Emitter *e, int ni, int training, LaunchList *l)
{
    (void)training;
    NodeFwd f = node_fwd(e, ni);
    int F = (int)shape_elems(f.s), K = f.L->out.c, layer = f.nd->layer;
    em_gemm(e, l, 0, 0, (Dim){1, 0}, (Dim){0, K}, (Dim){0, F}, 1.0f, f.x, F,
            R_PARAM(e, layer, 0), K, 0.0f, f.out, K);
    if (!layer_has_bias(f.L)) return;
    Kv kv = {0};
    kv_int(e, &kv, "K", K);
    int k = ops_kernel(e, "dense_bias", em_fmt(e, "%d", K), 2, &kv);
    Ref a[] = {f.out, R_PARAM(e, layer, 1)};
    em_launch_elems(e, l, k, (Dim){K, 0}, 2, a);
}

/* dense_backward: dw = x^T dout, dbias = column sums (double), dx (+)= dout w^T. */
void em_dense_bwd(Emitter *e, int ni, LaunchList *l)
{
    NodeBwd b = node_bwd(e, ni);
    const Node *nd = b.nd;
    int F = (int)shape_elems(b.s), K = b.L->out.c;
    Ref dout = need(e, ni, b.dout, "the output gradient");
    Ref dw = nd->train_w ? R_GRAD(e, nd->layer, 0) : R_NULL();
    Ref db = nd->train_w && layer_has_bias(b.L) ? R_GRAD(e, nd->layer, 1) : R_NULL();
    if (dw.buf != BUF_NULL) {
        Ref x = need(e, ni, b.x, "the input");
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
                R_PARAM(e, nd->layer, 0), K, b.acc ? 1.0f : 0.0f, b.dx, F);
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
void em_dropout_fwd(Emitter *e, int ni, int training, LaunchList *l)
{
    NodeFwd f = node_fwd(e, ni);
    if (!training || f.L->a.dropout.rate <= 0) { emit_copy(e, l, f.s, f.out, f.x); return; }
    Kv kv;
    int k = ops_kernel(e, "dropout_fwd", shape_tag(e, f.s), 3, drop_kv(e, &kv, ni, f.s, 0));
    Ref a[] = {f.out, f.x, R_CTRL()};
    em_launch_elems(e, l, k, (Dim){shape_elems(f.s), 0}, 3, a);
}

void em_dropout_bwd(Emitter *e, int ni, LaunchList *l)
{
    NodeBwd b = node_bwd(e, ni);
    if (b.dx.buf == BUF_NULL) return;
    Ref dout = need(e, ni, b.dout, "the output gradient");
    if (b.L->a.dropout.rate <= 0) { emit_grad_pass(e, l, b.s, b.dx, dout, b.acc); return; }
    Kv kv;
    int k = ops_kernel(e, "dropout_bwd", shape_tag(e, b.s), 3, drop_kv(e, &kv, ni, b.s, b.acc));
    Ref a[] = {b.dx, dout, R_CTRL()};
    em_launch_elems(e, l, k, (Dim){shape_elems(b.s), 0}, 3, a);
}
