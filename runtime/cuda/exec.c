/* runtime/cuda/exec.c — the GPU executor: a Backend that runs an emitted
 * Program (codegen/emit.h) through a DevOps table (exec.h).
 *
 * It mirrors runtime/cpu.c's control flow and takes no decision of its own:
 *  - arenas: the six of the plan plus the control block, allocated once
 *    through ops->alloc at the plan's sizes; a Ref is (arena, word offset),
 *    BUF_NULL a NULL pointer. Every Ref and kernel index of the program is
 *    checked against them when the backend is made.
 *  - a training step writes the control block (momentum, weight decay, the
 *    LR of each group, the dropout step counter; loss, correct and the bad
 *    flag zeroed) with one h2d, runs the derive lists when parameters were
 *    written since they last ran, then the training forward lists of the
 *    nodes after the entry node in plan step order, the training loss, every
 *    node's backward list in step order, and the update list (which the
 *    device skips when CTRL_BAD is set); one d2h of the control block's head
 *    gives the loss (summed in double on the device, divided by n here), the
 *    correct count and the bad flag: 1 is returned when it is set (nothing
 *    was updated), as cpu.c returns 1 on a non-finite loss or gradient.
 *  - CUDA graphs: when use_graphs and the device has them, the launch
 *    sequence of a step with n == the plan's batch runs directly the first
 *    time (a warm-up: libraries finish their one-time set-up outside any
 *    capture), is recorded the second time under key = the entry node (0
 *    for images) and replayed from then on. The launches made between
 *    graph_begin and graph_end are recorded, not run (CUDA stream-capture
 *    semantics), so the recording step records and then replays; a capture
 *    that fails (graph_end != 0, or a launch or GEMM that could not be
 *    recorded: an invalidated capture shows there first) runs the step
 *    directly, as every later one.
 *    The control block's h2d and the derive lists stay outside the graph;
 *    every pointer is fixed, so a graph stays valid from step to step.
 *  - uploads, with a copy stream (DevOps.h2d_async and the rest): the batch
 *    goes into one of two input slots, each a page-locked host buffer and a
 *    device buffer of its own (outside the activation arena, whose input
 *    region the running step may still read or reuse), copied on the copy
 *    stream, so that upload k+1 runs while step k does (train_launch ...
 *    upload ... train_wait). The step, evaluation or extraction that follows
 *    makes the compute stream wait for the copy (copy_fence) and copies the
 *    slot into the plan's input and label tensors (d2d), outside any graph.
 *    A slot's state says what it may still be part of: QUEUED (its copy may
 *    be running: copy_sync before refilling it), FENCED (queued compute work
 *    reads it: a compute-stream sync before refilling it; any d2h is one).
 *    Uploads alternate between the slots, so in the training loop's pattern
 *    no upload waits. Without a copy stream, or when a slot cannot be
 *    allocated, upload stages x and the labels in a host buffer of its own
 *    and copies on the compute stream; that buffer is reused only after a
 *    later d2h (which waits for all before it).
 *  - other h2d copies (parameters, momentum) wait for completion before
 *    returning, through a one-word d2h.
 *  - the state arenas (parameters, gradients, momentum, control) start at
 *    zero, as the CPU backend's, zeroed here rather than left to the
 *    device's fill; the scratch arenas (activations, derived constants,
 *    workspace) and the input slots keep the device's fill, NaN or none in
 *    the poison modes (gpu_poison_mode), so that a kernel reading them
 *    before writing shows.
 *  - DevOps.mem_info returns 0 when it filled in the sizes.
 *  - ownership: the backend keeps a copy of *pr and ops->ctx and releases
 *    both at destroy, and also when creation fails; the caller may read *pr
 *    until then but must not free it.
 */
#include "runtime/cuda/exec.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const BUF_NAMES[BUF_COUNT] = {
    "null", "parameter", "gradient", "momentum", "activation", "derived", "workspace", "control"};

enum { SLOT_IDLE, SLOT_QUEUED, SLOT_FENCED };

typedef struct {
    void *dev; void *host; size_t cap;   /* bytes, each */
    int state;
    int tensor, n;                       /* where it goes, for how many images */
    size_t x_bytes;                      /* then n labels */
} InSlot;

typedef struct {
    const Plan *p;
    Program pr;              /* owned (a copy of the caller's struct) */
    DevOps ops;
    int use_graphs;
    void *buf[BUF_COUNT];    /* device arenas, buf[BUF_NULL] = NULL */
    size_t bytes[BUF_COUNT];
    int n;                   /* images of the step, evaluation or extraction last started (not of uploads:
                              * one may come between train_launch and train_wait) */
    uint64_t step;           /* dropout seed counter, as cpu.c */
    int entry_node, entry_tensor;
    int dirty;               /* parameters written since the derive lists ran */
    int pending;             /* an upload's h2d may still read the staging buffer */
    InSlot in[2];            /* with a copy stream: the two input slots */
    int cur;                 /* the slot of the last upload, -1: none (or the direct path) */
    uint32_t ctrl[CTRL_WORDS];
    uint32_t zero_head[4];
    float *stage; size_t stage_floats;
    signed char *graph;      /* per entry node: GRAPH_NONE, _WARM (one direct step run), _READY, _CANNOT */
    int rec_failed;          /* a launch or GEMM of the recording in progress was not recorded */
    float *logits; size_t logits_floats;
    float *out; size_t out_floats;
} Gpu;

/* ---- small helpers ---------------------------------------------------------------- */

static float *ref_ptr(const Gpu *g, Ref r)
{
    return r.buf == BUF_NULL ? NULL : (float *)g->buf[r.buf] + r.off;
}

static float *tensor_ptr(const Gpu *g, int t)
{
    return (float *)g->buf[BUF_ACT] + g->p->tensors[t].offset;
}

/* Floats of tensor t for n images. */
static size_t tensor_floats(const Gpu *g, int t, int n)
{
    return g->p->tensors[t].floats / (size_t)g->p->opt.batch * (size_t)n;
}

/* After a d2h: the compute stream is idle, and with it the copies it
 * waited for. */
static void synced(Gpu *g)
{
    g->pending = 0;
    for (int i = 0; i < 2; i++)
        if (g->in[i].state == SLOT_FENCED) g->in[i].state = SLOT_IDLE;
}

/* Wait for everything queued on the device (a d2h waits for all before it). */
static void dev_sync(Gpu *g)
{
    uint32_t w;
    g->ops.d2h(g->ops.ctx, &w, g->buf[BUF_CTRL], sizeof w);
    synced(g);
}

static void d2h(Gpu *g, void *dst, const void *src, size_t bytes)
{
    if (!bytes) return;
    g->ops.d2h(g->ops.ctx, dst, src, bytes);
    synced(g);
}

static int has_copy_stream(const Gpu *g)
{
    const DevOps *o = &g->ops;
    return o->host_alloc && o->host_free && o->h2d_async && o->copy_fence && o->copy_sync && o->d2d;
}

/* Slot i idle: nothing queued reads or writes it. */
static void slot_idle(Gpu *g, int i)
{
    if (g->in[i].state == SLOT_FENCED) dev_sync(g);
    if (g->in[i].state == SLOT_QUEUED) {
        g->ops.copy_sync(g->ops.ctx);
        for (int k = 0; k < 2; k++)
            if (g->in[k].state == SLOT_QUEUED) g->in[k].state = SLOT_IDLE;
    }
}

static void slot_free(Gpu *g, InSlot *S)
{
    if (S->dev) g->ops.release(g->ops.ctx, S->dev);
    if (S->host) g->ops.host_free(g->ops.ctx, S->host);
    S->dev = S->host = NULL;
    S->cap = 0;
}

/* Both slots hold at least `bytes` (grown together, so that growing never
 * waits in the middle of a run of overlapped uploads). Returns 0, or 1 when
 * out of memory (then there are none). */
static int slots_reserve(Gpu *g, size_t bytes)
{
    if (bytes <= g->in[0].cap && bytes <= g->in[1].cap) return 0;
    for (int i = 0; i < 2; i++) {
        slot_idle(g, i);
        slot_free(g, &g->in[i]);
    }
    g->cur = -1;
    for (int i = 0; i < 2; i++) {
        InSlot *S = &g->in[i];
        S->dev = g->ops.alloc(g->ops.ctx, bytes);
        S->host = S->dev ? g->ops.host_alloc(g->ops.ctx, bytes) : NULL;
        if (!S->host) {
            slot_free(g, &g->in[0]);
            slot_free(g, &g->in[1]);
            return 1;
        }
        S->cap = bytes;
    }
    dev_sync(g);                 /* alloc's zero fill runs on the compute stream */
    return 0;
}

/* Bytes of a slot for n rows of tensor t and their labels. */
static size_t slot_bytes(const Gpu *g, int t, int n)
{
    return sizeof(float) * tensor_floats(g, t, n) + sizeof(int32_t) * (size_t)n;
}

/* Upload through the next slot. Returns 0, or 1 when the slots cannot hold
 * the batch (out of memory: the caller copies directly). */
static int upload_slot(Gpu *g, int t, const float *x, const int32_t *y, int n)
{
    size_t xb = sizeof(float) * tensor_floats(g, t, n);
    size_t bytes = slot_bytes(g, t, n);
    if (slots_reserve(g, bytes)) return 1;
    int i = g->cur < 0 ? 0 : 1 - g->cur;
    InSlot *S = &g->in[i];
    slot_idle(g, i);
    memcpy(S->host, x, xb);
    memcpy((char *)S->host + xb, y, sizeof(int32_t) * (size_t)n);
    g->ops.h2d_async(g->ops.ctx, S->dev, S->host, bytes);
    S->state = SLOT_QUEUED;
    S->tensor = t;
    S->n = n;
    S->x_bytes = xb;
    g->cur = i;
    return 0;
}

/* Before work that reads the batch: the uploaded slot into the input and
 * label tensors, once its copy is done. */
static void take_input(Gpu *g)
{
    if (g->cur < 0) return;
    InSlot *S = &g->in[g->cur];
    if (S->state == SLOT_QUEUED) {
        g->ops.copy_fence(g->ops.ctx);    /* covers every copy queued so far */
        for (int k = 0; k < 2; k++)
            if (g->in[k].state == SLOT_QUEUED) g->in[k].state = SLOT_FENCED;
    }
    S->state = SLOT_FENCED;
    if (S->x_bytes) g->ops.d2d(g->ops.ctx, tensor_ptr(g, S->tensor), S->dev, S->x_bytes);
    if (S->n)
        g->ops.d2d(g->ops.ctx, tensor_ptr(g, g->p->labels_tensor), (char *)S->dev + S->x_bytes,
                   sizeof(int32_t) * (size_t)S->n);
}

/* h2d from a buffer the caller may reuse at once. */
static void h2d_sync(Gpu *g, void *dst, const void *src, size_t bytes)
{
    if (!bytes) return;
    g->ops.h2d(g->ops.ctx, dst, src, bytes);
    dev_sync(g);
}

static void appendf(char *err, size_t errlen, const char *fmt, ...)
{
    size_t len = strlen(err);
    if (len + 1 >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + len, errlen - len, fmt, ap);
    va_end(ap);
}

/* ---- running launch lists ----------------------------------------------------------- */

/* One launch or GEMM. Once one of a recording was refused, the rest of
 * that recording is skipped (the recording is not used). */
static void run_launch(Gpu *g, const Launch *L)
{
    int n = g->n;
    if (g->rec_failed) return;
    if (L->kind == L_GEMM) {
        g->rec_failed = g->ops.gemm(g->ops.ctx, L->ta, L->tb, (int)dim_at(L->m, n), (int)dim_at(L->n, n),
                                    (int)dim_at(L->k, n), L->alpha, ref_ptr(g, L->args[0]), L->lda,
                                    ref_ptr(g, L->args[1]), L->ldb, L->beta, ref_ptr(g, L->args[2]), L->ldc);
        return;
    }
    long gx = dim_at(L->gx, n), div = L->gx_div > 0 ? L->gx_div : 1;
    long grid = (gx + div - 1) / div;
    if (grid < 1) grid = 1;
    int nv = n;
    float *ptr[EMIT_MAX_ARGS];
    void *args[EMIT_MAX_ARGS + 1];
    args[0] = &nv;
    for (int a = 0; a < L->n_args; a++) {
        ptr[a] = ref_ptr(g, L->args[a]);
        args[a + 1] = &ptr[a];
    }
    g->rec_failed = g->ops.launch(g->ops.ctx, L->kernel, (unsigned)grid, (unsigned)(L->gy > 0 ? L->gy : 1),
                                  (unsigned)L->block, args);
}

static void run_list(Gpu *g, const LaunchList *l)
{
    for (int i = 0; i < l->n; i++) run_launch(g, &l->v[i]);
}

/* Folded constants, when parameters were written since they were computed. */
static void run_derive(Gpu *g)
{
    if (!g->dirty) return;
    for (int i = 0; i < g->pr.n_nodes; i++) run_list(g, &g->pr.derive[i]);
    g->dirty = 0;
}

/* Forward lists (and the loss) after the entry node, up to node `last`
 * (-1: all), as cpu.c's run_forward. */
static void run_forward(Gpu *g, int training, int last)
{
    const Plan *p = g->p;
    for (int s = 0; s < p->n_steps; s++) {
        const Step *st = &p->steps[s];
        if (st->kind == STEP_FWD && st->node <= g->entry_node) continue;
        if (last >= 0 && st->node > last) break;
        if (st->kind == STEP_FWD)
            run_list(g, training ? &g->pr.fwd_train[st->node] : &g->pr.fwd_eval[st->node]);
        else if (st->kind == STEP_LOSS)
            run_list(g, training ? &g->pr.loss_train : &g->pr.loss_eval);
    }
}

/* The launch sequence of one training step (what a graph records). */
static void step_lists(Gpu *g)
{
    const Plan *p = g->p;
    run_forward(g, 1, -1);
    for (int s = 0; s < p->n_steps; s++)
        if (p->steps[s].kind == STEP_BWD) run_list(g, &g->pr.bwd[p->steps[s].node]);
    run_list(g, &g->pr.update);
}

enum { GRAPH_CANNOT = -1, GRAPH_NONE = 0, GRAPH_READY = 1, GRAPH_WARM = 2 };

static void run_step(Gpu *g)
{
    const DevOps *o = &g->ops;
    int key = g->entry_node;
    if (!g->use_graphs || !o->graph_begin || !o->graph_end || !o->graph_run ||
        g->n != g->p->opt.batch || g->graph[key] == GRAPH_CANNOT) {
        step_lists(g);
        return;
    }
    if (g->graph[key] == GRAPH_NONE) {
        /* the first step runs directly: one-time set-up of the libraries
         * (lazily loaded kernels, cuBLAS's choices) happens outside the
         * capture */
        step_lists(g);
        g->graph[key] = GRAPH_WARM;
        return;
    }
    if (g->graph[key] == GRAPH_WARM) {
        if (o->graph_begin(o->ctx, key) != 0) {
            g->graph[key] = GRAPH_CANNOT;
            step_lists(g);
            return;
        }
        g->rec_failed = 0;
        step_lists(g);
        int refused = g->rec_failed;
        g->rec_failed = 0;
        if (o->graph_end(o->ctx, key) != 0 || refused) {   /* recorded launches did not run */
            g->graph[key] = GRAPH_CANNOT;
            step_lists(g);
            return;
        }
        g->graph[key] = GRAPH_READY;
    }
    if (o->graph_run(o->ctx, key) != 0) {
        g->graph[key] = GRAPH_CANNOT;
        step_lists(g);
    }
}

/* The head of the control block: summed loss, correct, bad. */
static int read_head(Gpu *g, int n, double *loss, int *correct)
{
    uint32_t head[4];
    d2h(g, head, g->buf[BUF_CTRL], sizeof head);
    double sum;
    memcpy(&sum, &head[CTRL_LOSS], sizeof sum);
    *loss = n > 0 ? sum / n : 0;
    *correct = (int)head[CTRL_CORRECT];
    return head[CTRL_BAD] != 0;
}

int gpu_poison_mode(void)
{
    const char *v = getenv("KILN_CUDA_POISON");
    if (!v || !*v || !strcmp(v, "0")) return 0;
    return strcmp(v, "uninit") ? 1 : 2;
}

/* ---- the interface ------------------------------------------------------------------- */

static void gpu_upload(Backend *be, const float *x, const int32_t *y, int n)
{
    Gpu *g = be->impl;
    const Plan *p = g->p;
    int t = g->entry_tensor;
    size_t xf = tensor_floats(g, t, n);
    float *dx = tensor_ptr(g, t), *dy = tensor_ptr(g, p->labels_tensor);
    if (has_copy_stream(g) && upload_slot(g, t, x, y, n) == 0) return;
    g->cur = -1;
    if (g->pending) dev_sync(g);
    if (xf + (size_t)n > g->stage_floats) {
        float *s = realloc(g->stage, sizeof(float) * (xf + (size_t)n));
        if (!s) {   /* no staging memory: copy from the caller's buffers and wait */
            h2d_sync(g, dx, x, sizeof(float) * xf);
            h2d_sync(g, dy, y, sizeof(int32_t) * (size_t)n);
            return;
        }
        g->stage = s;
        g->stage_floats = xf + (size_t)n;
    }
    memcpy(g->stage, x, sizeof(float) * xf);
    memcpy(g->stage + xf, y, sizeof(int32_t) * (size_t)n);
    if (xf) g->ops.h2d(g->ops.ctx, dx, g->stage, sizeof(float) * xf);
    if (n) g->ops.h2d(g->ops.ctx, dy, g->stage + xf, sizeof(int32_t) * (size_t)n);
    g->pending = 1;
}

static void write_ctrl(Gpu *g, const StepConfig *cfg)
{
    uint32_t *c = g->ctrl;
    memset(c, 0, sizeof g->ctrl);
    memcpy(&c[CTRL_STEP], &g->step, sizeof g->step);
    memcpy(&c[CTRL_MOMENTUM], &cfg->momentum, sizeof(float));
    memcpy(&c[CTRL_WD], &cfg->weight_decay, sizeof(float));
    /* as cpu.c: a group without its own LR takes group 0's */
    for (int k = 0; k < EMIT_MAX_GROUPS && cfg->n_groups > 0; k++) {
        float lr = k < cfg->n_groups ? cfg->group_lr[k] : cfg->group_lr[0];
        memcpy(&c[CTRL_LR + k], &lr, sizeof lr);
    }
    g->ops.h2d(g->ops.ctx, g->buf[BUF_CTRL], c, sizeof g->ctrl);
}

static void gpu_train_launch(Backend *be, int n, const StepConfig *cfg)
{
    Gpu *g = be->impl;
    g->n = n;
    g->step++;
    take_input(g);
    write_ctrl(g, cfg);
    run_derive(g);
    run_step(g);
}

static int gpu_train_wait(Backend *be, double *loss, int *correct)
{
    Gpu *g = be->impl;
    int bad = read_head(g, g->n, loss, correct);
    return bad || !isfinite(*loss);
}

static int gpu_train_step(Backend *be, int n, const StepConfig *cfg, double *loss, int *correct)
{
    gpu_train_launch(be, n, cfg);
    return gpu_train_wait(be, loss, correct);
}

static void gpu_evaluate(Backend *be, int n, double *loss, int *correct)
{
    Gpu *g = be->impl;
    g->n = n;
    take_input(g);
    g->ops.h2d(g->ops.ctx, g->buf[BUF_CTRL], g->zero_head, sizeof g->zero_head);
    run_derive(g);
    run_forward(g, 0, -1);
    read_head(g, n, loss, correct);
}

static void gpu_extract(Backend *be, int n, int cut, float *dst)
{
    Gpu *g = be->impl;
    const Plan *p = g->p;
    g->n = n;
    take_input(g);
    run_derive(g);
    run_forward(g, 0, p->layer_node[cut]);
    d2h(g, dst, tensor_ptr(g, p->layer_tensor[cut]), sizeof(float) * plan_layer_floats(p, cut) * (size_t)n);
}

static void gpu_set_entry(Backend *be, int cut)
{
    Gpu *g = be->impl;
    g->entry_node = cut > 0 ? g->p->layer_node[cut] : 0;
    g->entry_tensor = cut > 0 ? g->p->layer_tensor[cut] : g->p->input_tensor;
}

static uint64_t gpu_get_step(Backend *be) { return ((Gpu *)be->impl)->step; }
static void gpu_set_step(Backend *be, uint64_t step) { ((Gpu *)be->impl)->step = step; }

static const float *gpu_logits(Backend *be)
{
    Gpu *g = be->impl;
    int t = g->p->logits_tensor;
    d2h(g, g->logits, tensor_ptr(g, t), sizeof(float) * tensor_floats(g, t, g->n));
    return g->logits;
}

static const float *gpu_layer_output(Backend *be, int layer)
{
    Gpu *g = be->impl;
    int t = g->p->layer_tensor[layer];
    if (t < 0) return NULL;
    size_t f = tensor_floats(g, t, g->n);
    if (f > g->out_floats) {
        float *o = realloc(g->out, sizeof(float) * f);
        if (!o) return NULL;
        g->out = o;
        g->out_floats = f;
    }
    d2h(g, g->out, tensor_ptr(g, t), sizeof(float) * f);
    return g->out;
}

static void gpu_read_params(Backend *be, float *dst)
{
    Gpu *g = be->impl;
    d2h(g, dst, g->buf[BUF_PARAM], sizeof(float) * g->p->param_floats);
}

static void gpu_write_params(Backend *be, const float *src)
{
    Gpu *g = be->impl;
    h2d_sync(g, g->buf[BUF_PARAM], src, sizeof(float) * g->p->param_floats);
    g->dirty = 1;
}

static void gpu_read_momentum(Backend *be, float *dst)
{
    Gpu *g = be->impl;
    d2h(g, dst, g->buf[BUF_MOM], sizeof(float) * g->p->opt_floats);
}

static void gpu_write_momentum(Backend *be, const float *src)
{
    Gpu *g = be->impl;
    h2d_sync(g, g->buf[BUF_MOM], src, sizeof(float) * g->p->opt_floats);
}

static void gpu_read_grads(Backend *be, float *dst)
{
    Gpu *g = be->impl;
    d2h(g, dst, g->buf[BUF_GRAD], sizeof(float) * g->p->grad_floats);
}

static void release_arenas(Gpu *g)
{
    for (int b = 1; b < BUF_COUNT; b++)
        if (g->buf[b]) {
            g->ops.release(g->ops.ctx, g->buf[b]);
            g->buf[b] = NULL;
        }
}

static void gpu_destroy(Backend *be)
{
    if (!be) return;
    Gpu *g = be->impl;
    if (g) {
        if (g->buf[BUF_CTRL]) dev_sync(g);
        for (int i = 0; i < 2; i++) {
            if (g->in[i].state == SLOT_QUEUED) g->ops.copy_sync(g->ops.ctx);
            slot_free(g, &g->in[i]);
        }
        release_arenas(g);
        if (g->ops.destroy) g->ops.destroy(g->ops.ctx);
        emit_free(&g->pr);
        free(g->stage); free(g->graph); free(g->logits); free(g->out);
        free(g);
    }
    free(be);
}

/* ---- creation ---------------------------------------------------------------------------- */

/* Check one list against the kernels and the arenas. Returns 0 or 1 with err. */
static int check_list(const Gpu *g, const LaunchList *l, const char *what, int node,
                      char *err, size_t errlen)
{
    char where[192] = "";
    if (node >= 0) {
        char label[160];
        plan_node_label(g->p, node, label, sizeof label);
        snprintf(where, sizeof where, "node %d (%s) ", node, label);
    }
    for (int i = 0; i < l->n; i++) {
        const Launch *L = &l->v[i];
        if (L->kind == L_KERNEL) {
            if (L->kernel < 0 || L->kernel >= g->pr.n_kernels) {
                snprintf(err, errlen, "%s%s launch %d: no kernel %d", where, what, i, L->kernel);
                return 1;
            }
            const EmitKernel *k = &g->pr.kernels[L->kernel];
            if (L->n_args != k->n_args || L->n_args > EMIT_MAX_ARGS || L->block < 1) {
                snprintf(err, errlen, "%s%s launch %d: kernel %s takes %d pointers, given %d (block %d)",
                         where, what, i, k->name, k->n_args, L->n_args, L->block);
                return 1;
            }
        } else if (L->kind != L_GEMM || L->n_args != 3) {
            snprintf(err, errlen, "%s%s launch %d: not a kernel or a GEMM", where, what, i);
            return 1;
        }
        for (int a = 0; a < L->n_args; a++) {
            Ref r = L->args[a];
            if (r.buf >= BUF_COUNT || (r.buf != BUF_NULL && r.off * 4 > g->bytes[r.buf])) {
                snprintf(err, errlen, "%s%s launch %d: argument %d points to word %zu of the %s arena "
                         "(%zu words)", where, what, i, a, r.off,
                         r.buf < BUF_COUNT ? BUF_NAMES[r.buf] : "unknown",
                         r.buf < BUF_COUNT ? g->bytes[r.buf] / 4 : 0);
                return 1;
            }
        }
    }
    return 0;
}

static int check_program(const Gpu *g, char *err, size_t errlen)
{
    const Plan *p = g->p;
    if (g->pr.n_nodes != p->n_nodes) {
        snprintf(err, errlen, "the program has %d nodes, the plan %d", g->pr.n_nodes, p->n_nodes);
        return 1;
    }
    for (int i = 0; i < p->n_nodes; i++)
        if (check_list(g, &g->pr.fwd_train[i], "training forward", i, err, errlen) ||
            check_list(g, &g->pr.fwd_eval[i], "inference forward", i, err, errlen) ||
            check_list(g, &g->pr.bwd[i], "backward", i, err, errlen) ||
            check_list(g, &g->pr.derive[i], "derive", i, err, errlen))
            return 1;
    if (check_list(g, &g->pr.loss_train, "training loss", -1, err, errlen) ||
        check_list(g, &g->pr.loss_eval, "inference loss", -1, err, errlen) ||
        check_list(g, &g->pr.update, "update", -1, err, errlen))
        return 1;
    for (int i = 0; i < p->n_segs; i++)
        if (p->segs[i].group < 0 || p->segs[i].group >= EMIT_MAX_GROUPS) {
            snprintf(err, errlen, "the plan uses LR group %d; the GPU backend has at most %d groups",
                     p->segs[i].group, EMIT_MAX_GROUPS);
            return 1;
        }
    return 0;
}

/* The out-of-memory message: what was asked, what is free, what batch fits. */
static void oom_message(Gpu *g, int which, char *err, size_t errlen)
{
    const Plan *p = g->p;
    size_t total = 0;
    for (int b = 1; b < BUF_COUNT; b++) total += g->bytes[b];
    release_arenas(g);
    snprintf(err, errlen, "out of device memory: cannot allocate %zu bytes for the %s arena "
             "(the plan needs %zu bytes in all at batch %d)",
             g->bytes[which], BUF_NAMES[which], total, p->opt.batch);
    size_t free_b, total_b;
    if (!g->ops.mem_info || g->ops.mem_info(g->ops.ctx, &free_b, &total_b) != 0) return;
    appendf(err, errlen, "; %zu bytes free of %zu", free_b, total_b);
    /* activations and workspace scale with the batch, the rest does not */
    size_t per_batch = g->bytes[BUF_ACT] + g->bytes[BUF_WS];
    size_t fixed = total - per_batch;
    double per_image = (double)per_batch / p->opt.batch;
    if (free_b <= fixed || per_image <= 0) {
        appendf(err, errlen, "; no batch fits: the parameters, gradients, momentum and derived "
                "constants alone need %zu bytes", fixed);
        return;
    }
    double fit = floor((double)(free_b - fixed) / per_image);
    if (fit >= 1) appendf(err, errlen, "; the largest batch that fits is about %.0f", fit);
    else appendf(err, errlen, "; not even a batch of 1 fits (%.0f bytes an image)", per_image);
}

static void arena_sizes(Gpu *g)
{
    size_t a[6];
    plan_arena_bytes(g->p, a);
    static const int ids[6] = {BUF_PARAM, BUF_GRAD, BUF_MOM, BUF_ACT, BUF_DERIVED, BUF_WS};
    for (int i = 0; i < 6; i++) g->bytes[ids[i]] = a[i];
    g->bytes[BUF_CTRL] = sizeof(uint32_t) * CTRL_WORDS;
}

static int alloc_arenas(Gpu *g, char *err, size_t errlen)
{
    for (int b = 1; b < BUF_COUNT; b++) {
        g->buf[b] = g->ops.alloc(g->ops.ctx, g->bytes[b] ? g->bytes[b] : 4);
        if (!g->buf[b]) { oom_message(g, b, err, errlen); return 1; }
    }
    return 0;
}

/* The state arenas to zero (see the head of this file), through h2d from a
 * zeroed host block of at most 1 MiB. Returns 0, or 1 when out of memory. */
static int zero_state(Gpu *g)
{
    static const int state[] = {BUF_PARAM, BUF_GRAD, BUF_MOM, BUF_CTRL};
    size_t chunk = (size_t)1 << 20;
    void *zeros = calloc(1, chunk);
    if (!zeros) return 1;
    for (size_t i = 0; i < sizeof state / sizeof *state; i++)
        for (size_t off = 0; off < g->bytes[state[i]]; off += chunk) {
            size_t left = g->bytes[state[i]] - off;
            g->ops.h2d(g->ops.ctx, (char *)g->buf[state[i]] + off, zeros, left < chunk ? left : chunk);
        }
    dev_sync(g);
    free(zeros);
    return 0;
}

Backend *gpu_backend_create(const Plan *p, Program *pr, const DevOps *ops, int use_graphs,
                            char *err, size_t errlen)
{
    Backend *be = calloc(1, sizeof *be);
    Gpu *g = calloc(1, sizeof *g);
    if (!be || !g) {
        free(be); free(g);
        emit_free(pr);
        if (ops->destroy) ops->destroy(ops->ctx);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    be->impl = g;
    g->p = p;
    g->pr = *pr;
    g->ops = *ops;
    g->use_graphs = use_graphs;
    g->cur = -1;
    g->entry_tensor = p->input_tensor;
    g->dirty = 1;
    g->n = p->opt.batch;
    g->graph = calloc((size_t)p->n_nodes + 1, 1);
    g->logits_floats = p->tensors[p->logits_tensor].floats;
    g->logits = malloc(sizeof(float) * (g->logits_floats ? g->logits_floats : 1));
    if (!g->graph || !g->logits) {
        snprintf(err, errlen, "out of memory");
        gpu_destroy(be);
        return NULL;
    }
    arena_sizes(g);
    if (check_program(g, err, errlen) || alloc_arenas(g, err, errlen)) {
        gpu_destroy(be);
        return NULL;
    }
    if (zero_state(g)) {
        snprintf(err, errlen, "out of memory");
        gpu_destroy(be);
        return NULL;
    }
    /* the input slots for a batch of images (without them: direct uploads) */
    if (has_copy_stream(g)) slots_reserve(g, slot_bytes(g, p->input_tensor, p->opt.batch));
    be->name = "cuda";
    be->plan = p;
    be->upload = gpu_upload;
    be->train_step = gpu_train_step;
    be->train_launch = gpu_train_launch;
    be->train_wait = gpu_train_wait;
    be->evaluate = gpu_evaluate;
    be->logits = gpu_logits;
    be->layer_output = gpu_layer_output;
    be->read_params = gpu_read_params;
    be->write_params = gpu_write_params;
    be->read_momentum = gpu_read_momentum;
    be->write_momentum = gpu_write_momentum;
    be->read_grads = gpu_read_grads;
    be->extract = gpu_extract;
    be->set_entry = gpu_set_entry;
    be->get_step = gpu_get_step;
    be->set_step = gpu_set_step;
    be->destroy = gpu_destroy;
    return be;
}
