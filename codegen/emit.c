/* codegen/emit.c — the top of the CUDA C emitter (see emit.h): emit_program
 * walks the plan's steps in order and fills the program: the preamble, per
 * node its forward launches (training and inference) and backward launches,
 * the folded constants, the loss, and the optimizer update. An op reaches
 * the walk only through its row of EMIT_OPS below.
 *
 * Layering (see emit_internal.h): this file calls the per-op emitters
 * (emit_conv.c, emit_ops.c) and the base (emit_base.c); nothing below calls
 * it.
 *
 * The loss mirrors runtime/cpu.c's softmax_ce (dlogits into the loss node's
 * din[0] in training only) and leaves the summed loss, the hit count and the
 * non-finite flag in the control block; the update mirrors cpu_train_step:
 * the finite check of the whole gradient arena, then one SGD-momentum kernel
 * over the trainable arena that does nothing when the flag is set. Both use
 * the templates of kernels/cuda/ops.cu.
 */
#include "codegen/emit_internal.h"
#include "codegen/hash.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the op table -------------------------------------------------------------------------
 * One row per op: the emitters of its forward and backward step (contracts
 * in emit_internal.h). To add an op, write the pair (in emit_ops.c, or a new
 * emit_<family>.c for a family of ops with its own template file) and add
 * its row here. An op with no row fails the emission ("no template"). The
 * input and the loss launch nothing per node: the loss is emitted at the
 * plan's loss step. */
typedef struct { EmitFwd fwd; EmitBwd bwd; } EmitOp;

static void no_fwd(Emitter *e, int ni, int training, LaunchList *l)
{
    (void)e; (void)ni; (void)training; (void)l;
}

static void no_bwd(Emitter *e, int ni, LaunchList *l)
{
    (void)e; (void)ni; (void)l;
}

static const EmitOp EMIT_OPS[OP_COUNT] = {
    [OP_INPUT]   = {no_fwd,          no_bwd},
    [OP_CONV]    = {em_conv_fwd,     em_conv_bwd},
    [OP_DWCONV]  = {em_dwconv_fwd,   em_dwconv_bwd},
    [OP_ZEROPAD] = {em_zeropad_fwd,  em_zeropad_bwd},
    [OP_BN]      = {em_bn_fwd,       em_bn_bwd},
    [OP_RELU]    = {em_act_fwd,      em_act_bwd},
    [OP_RELU6]   = {em_act_fwd,      em_act_bwd},
    [OP_SWISH]   = {em_act_fwd,      em_act_bwd},
    [OP_SIGMOID] = {em_act_fwd,      em_act_bwd},
    [OP_ADD]     = {em_add_fwd,      em_add_bwd},
    [OP_MUL]     = {em_mul_fwd,      em_mul_bwd},
    [OP_GAP]     = {em_gap_fwd,      em_gap_bwd},
    [OP_MAXPOOL] = {em_maxpool_fwd,  em_maxpool_bwd},
    [OP_DENSE]   = {em_dense_fwd,    em_dense_bwd},
    [OP_DROPOUT] = {em_dropout_fwd,  em_dropout_bwd},
    [OP_LOSS]    = {no_fwd,          no_bwd},
};

static const EmitOp *emit_op(const Emitter *e, int ni)
{
    OpKind op = e->g->layers[e->p->nodes[ni].layer].op;
    return (unsigned)op < OP_COUNT ? &EMIT_OPS[op] : NULL;
}

static void emit_fwd(Emitter *e, int ni, int training, LaunchList *l)
{
    const EmitOp *r = emit_op(e, ni);
    if (r && r->fwd) r->fwd(e, ni, training, l);
    else em_fail(e, "node %d (%s): no template for this op", ni, e->g->layers[e->p->nodes[ni].layer].name);
}

static void emit_bwd(Emitter *e, int ni, LaunchList *l)
{
    const EmitOp *r = emit_op(e, ni);
    if (r && r->bwd) r->bwd(e, ni, l);
    else em_fail(e, "node %d (%s): no backward template for this op", ni,
                 e->g->layers[e->p->nodes[ni].layer].name);
}

/* ---- loss ----------------------------------------------------------------------------------- */

/* softmax_ce of the logits (dlogits into the loss node's din[0] when
 * training and wanted); sums into the control block. */
static void emit_loss(Emitter *e, int training, LaunchList *l)
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
    int k = em_kernel(e, "ops", "softmax_ce", em_fmt(e, "%s%d", train ? "train" : "eval", K), 4, 1, kv.v);
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

/* The finite check of the gradient arena, then one SGD-momentum kernel over
 * the trainable arena (a no-op on the device when CTRL_BAD is set). */
static void emit_update(Emitter *e, LaunchList *l)
{
    const Plan *p = e->p;
    if (p->grad_floats) {
        Kv kv = {0};
        kv_str(e, &kv, "TOTAL", em_fmt(e, "%zuL", p->grad_floats));
        kv_int(e, &kv, "BAD", CTRL_BAD);
        int k = em_kernel(e, "ops", "finite_check", em_fmt(e, "%zu", p->grad_floats), 2, 0, kv.v);
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
    int k = em_kernel(e, "ops", "sgd", em_fmt(e, "%zu_%dseg", p->trainable_floats, p->n_segs), 4, 0, kv.v);
    free(find.s);
    Ref a[] = {R_PARAMS(0), R_GRADS(0), R_MOM(0), R_CTRL()};
    em_launch_elems(e, l, k, (Dim){0, (long)p->trainable_floats}, 4, a);
}

/* ---- the program ---------------------------------------------------------------------------- */

static void free_list(LaunchList *l) { free(l->v); l->v = NULL; l->n = l->cap = 0; }

void emit_free(Program *pr)
{
    if (!pr) return;
    free(pr->source);
    for (int k = 0; k < pr->n_kernels; k++) free(pr->kernels[k].name);
    free(pr->kernels);
    for (int i = 0; i < pr->n_nodes; i++) {
        if (pr->fwd_train) free_list(&pr->fwd_train[i]);
        if (pr->fwd_eval) free_list(&pr->fwd_eval[i]);
        if (pr->bwd) free_list(&pr->bwd[i]);
        if (pr->derive) free_list(&pr->derive[i]);
    }
    free(pr->fwd_train); free(pr->fwd_eval); free(pr->bwd); free(pr->derive);
    free_list(&pr->loss_train); free_list(&pr->loss_eval); free_list(&pr->update);
    memset(pr, 0, sizeof *pr);
}

/* The head of the translation unit (a comment naming the plan, then the
 * preamble) and the per-node launch lists. Returns 1 when the preamble is
 * missing (err set). */
static int program_begin(Emitter *e)
{
    const Plan *p = e->p;
    Program *pr = e->pr;
    size_t len;
    const char *pre = em_section("preamble", "preamble", &len);
    if (!pre) { snprintf(e->err, e->errlen, "kernels/cuda/preamble.cu: missing"); return 1; }
    char head[128];
    snprintf(head, sizeof head, "/* plan: %s, batch %d, %s */\n", p->g->name, p->opt.batch,
             p->opt.fuse ? "fused" : "unfused");
    em_text(e, head, strlen(head));
    em_text(e, pre, len);
    pr->n_nodes = p->n_nodes;
    pr->fwd_train = calloc((size_t)p->n_nodes + 1, sizeof *pr->fwd_train);
    pr->fwd_eval = calloc((size_t)p->n_nodes + 1, sizeof *pr->fwd_eval);
    pr->bwd = calloc((size_t)p->n_nodes + 1, sizeof *pr->bwd);
    pr->derive = calloc((size_t)p->n_nodes + 1, sizeof *pr->derive);
    if (!pr->fwd_train || !pr->fwd_eval || !pr->bwd || !pr->derive) em_fail(e, "out of memory");
    return 0;
}

/* The launches of plan step s. */
static void emit_step(Emitter *e, const Step *st)
{
    Program *pr = e->pr;
    int ni = st->node;
    switch (st->kind) {
    case STEP_FWD:
        if (e->p->nodes[ni].fold) em_fold(e, ni, &pr->derive[ni]);
        emit_fwd(e, ni, 1, &pr->fwd_train[ni]);
        emit_fwd(e, ni, 0, &pr->fwd_eval[ni]);
        break;
    case STEP_LOSS:
        emit_loss(e, 1, &pr->loss_train);
        emit_loss(e, 0, &pr->loss_eval);
        break;
    case STEP_BWD:
        emit_bwd(e, ni, &pr->bwd[ni]);
        break;
    case STEP_UPDATE:
        break;
    }
}

int emit_program(Program *pr, const Plan *p, const EmitOptions *o, char *err, size_t errlen)
{
    memset(pr, 0, sizeof *pr);
    Emitter e = {0};
    e.p = p; e.g = p->g; e.pr = pr;
    e.o = o ? *o : (EmitOptions){0};
    if (e.o.block <= 0) e.o.block = 256;
    e.err = err; e.errlen = errlen;
    if (program_begin(&e)) {
        em_release(&e);
        free(e.src.s);
        emit_free(pr);
        return 1;
    }
    for (int s = 0; s < p->n_steps && !e.failed; s++) {
        emit_step(&e, &p->steps[s]);
        em_scratch_reset(&e);
    }
    if (!e.failed && p->trainable_floats) emit_update(&e, &pr->update);
    em_release(&e);
    if (e.failed) {
        free(e.src.s);
        pr->source = NULL;
        emit_free(pr);
        return 1;
    }
    pr->source = e.src.s;
    pr->source_len = e.src.len;
    pr->hash = kiln_hash(KILN_HASH_INIT, pr->source, pr->source_len);
    return 0;
}
