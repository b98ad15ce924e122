/* codegen/emit_norm.c — the emitter of ConvNeXt's per-pixel ops: channel
 * layer norm and layer scale, from the ln_* and ls_* templates of
 * kernels/cuda/ops.cu.
 *
 * Contract: the launches of a node compute what runtime/cpu.c computes for it
 * with kernels/cpu/norm.c: layer norm writes its per-row statistics (mean,
 * invstd; 2 floats a pixel) to the workspace in the forward pass and
 * recomputes them there in the backward pass, then the parameter gradients
 * (overwritten; before dx, which may alias dout) and dx (din_acc: added);
 * layer scale's ds (overwritten) and dx likewise. A NULL gradient skips its
 * launch.
 *
 * Invariants: shapes are baked into the kernel text; row kernels run one
 * block per pixel with a power-of-two block of at most EMIT_SYNC_BLOCK
 * threads (the smallest that covers C, at least 32), column kernels one
 * block of EMIT_SYNC_BLOCK threads per channel.
 */
#include "codegen/emit_internal.h"

/* Threads per block of a row kernel over C channels. */
static int row_block(int C)
{
    int b = 32;
    while (b < C && b < EMIT_SYNC_BLOCK) b *= 2;
    return b;
}

static Shape node_shape(const Emitter *e, int ni)
{
    return e->g->layers[e->p->nodes[ni].layer].out;
}

static const char *tag_of(Emitter *e, Shape s) { return em_fmt(e, "%dx%dx%d", s.h, s.w, s.c); }

/* ln_fwd of node ni: out (or, when out is NULL, the statistics only). */
static void ln_rows(Emitter *e, int ni, LaunchList *l, Ref out, Ref x)
{
    const Layer *L = &e->g->layers[e->p->nodes[ni].layer];
    Shape s = L->out;
    int B = row_block(s.c), has_out = out.buf != BUF_NULL;
    Kv kv = {0};
    kv_int(e, &kv, "C", s.c);
    kv_float(e, &kv, "EPS", L->a.norm.eps);
    kv_flag(e, &kv, "OUT", has_out);
    kv_int(e, &kv, "BLOCK", B);
    int k = em_kernel(e, "ops", "ln_fwd", tag_of(e, s), 5, 1, kv.v);
    Ref a[] = {out, R_WS(0), x, has_out ? R_PARAM(e, L - e->g->layers, 0) : R_NULL(),
               has_out ? R_PARAM(e, L - e->g->layers, 1) : R_NULL()};
    em_launch(e, l, k, (Dim){(long)s.h * s.w, 0}, 1, 1, B, 5, a);
}

void em_layernorm_fwd(Emitter *e, int ni, int training, LaunchList *l)
{
    const Node *nd = &e->p->nodes[ni];
    (void)training;
    ln_rows(e, ni, l, R_ACT(e, nd->out), R_ACT(e, nd->in[0]));
}

void em_layernorm_bwd(Emitter *e, int ni, LaunchList *l)
{
    const Node *nd = &e->p->nodes[ni];
    int layer = nd->layer;
    Shape s = node_shape(e, ni);
    Ref x = R_ACT(e, nd->save_in ? nd->in[0] : -1), dout = R_ACT(e, nd->dout);
    if (x.buf == BUF_NULL || dout.buf == BUF_NULL) {
        em_fail(e, "node %d: layer norm's backward needs its input and output gradient", ni);
        return;
    }
    ln_rows(e, ni, l, R_NULL(), x);
    if (nd->train_w) {
        Kv kv = {0};
        kv_int(e, &kv, "C", s.c);
        kv_int(e, &kv, "M", (long)s.h * s.w);
        kv_flag(e, &kv, "DG", 1);
        kv_flag(e, &kv, "DB", 1);
        kv_int(e, &kv, "BLOCK", EMIT_SYNC_BLOCK);
        int k = em_kernel(e, "ops", "ln_dparams", tag_of(e, s), 5, 1, kv.v);
        Ref a[] = {R_GRAD(e, layer, 0), R_GRAD(e, layer, 1), dout, x, R_WS(0)};
        em_launch(e, l, k, (Dim){0, s.c}, 1, 1, EMIT_SYNC_BLOCK, 5, a);
    }
    if (nd->din[0] >= 0) {
        int B = row_block(s.c);
        Kv kv = {0};
        kv_int(e, &kv, "C", s.c);
        kv_flag(e, &kv, "ACC", nd->din_acc[0]);
        kv_int(e, &kv, "BLOCK", B);
        int k = em_kernel(e, "ops", "ln_dx", tag_of(e, s), 5, 1, kv.v);
        Ref a[] = {R_ACT(e, nd->din[0]), dout, x, R_WS(0), R_PARAM(e, layer, 0)};
        em_launch(e, l, k, (Dim){(long)s.h * s.w, 0}, 1, 1, B, 5, a);
    }
}

void em_layerscale_fwd(Emitter *e, int ni, int training, LaunchList *l)
{
    const Node *nd = &e->p->nodes[ni];
    Shape s = node_shape(e, ni);
    long per = (long)s.h * s.w * s.c;
    (void)training;
    Kv kv = {0};
    kv_int(e, &kv, "PER", per);
    kv_int(e, &kv, "C", s.c);
    int k = em_kernel(e, "ops", "ls_fwd", tag_of(e, s), 3, 0, kv.v);
    Ref a[] = {R_ACT(e, nd->out), R_ACT(e, nd->in[0]), R_PARAM(e, nd->layer, 0)};
    em_launch_elems(e, l, k, (Dim){per, 0}, 3, a);
}

void em_layerscale_bwd(Emitter *e, int ni, LaunchList *l)
{
    const Node *nd = &e->p->nodes[ni];
    Shape s = node_shape(e, ni);
    long per = (long)s.h * s.w * s.c;
    Ref dout = R_ACT(e, nd->dout);
    if (nd->train_w) {
        Ref x = R_ACT(e, nd->save_in ? nd->in[0] : -1);
        if (x.buf == BUF_NULL) {
            em_fail(e, "node %d: layer scale's gradient needs its input", ni);
            return;
        }
        Kv kv = {0};
        kv_int(e, &kv, "C", s.c);
        kv_int(e, &kv, "M", (long)s.h * s.w);
        kv_int(e, &kv, "BLOCK", EMIT_SYNC_BLOCK);
        int k = em_kernel(e, "ops", "ls_ds", tag_of(e, s), 3, 1, kv.v);
        Ref a[] = {R_GRAD(e, nd->layer, 0), dout, x};
        em_launch(e, l, k, (Dim){0, s.c}, 1, 1, EMIT_SYNC_BLOCK, 3, a);
    }
    if (nd->din[0] >= 0) {
        Kv kv = {0};
        kv_int(e, &kv, "PER", per);
        kv_int(e, &kv, "C", s.c);
        kv_flag(e, &kv, "ACC", nd->din_acc[0]);
        int k = em_kernel(e, "ops", "ls_dx", tag_of(e, s), 3, 0, kv.v);
        Ref a[] = {R_ACT(e, nd->din[0]), dout, R_PARAM(e, nd->layer, 0)};
        em_launch_elems(e, l, k, (Dim){per, 0}, 3, a);
    }
}
