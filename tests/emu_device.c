/* tests/emu_device.c — the emulated device: a DevOps table (runtime/cuda/
 * exec.h) over the host, for running emitted programs without a GPU.
 *
 *  - Kernels: the Program's source, prefixed with #include "cuda_emu.h", is
 *    compiled by the host C compiler into a shared object in a temporary
 *    folder and loaded with dlopen; kernel k is called through its exported
 *    trampoline NAME__emu(void **args), once per thread. Loaded objects are
 *    kept for the whole process, by source (and compiler, flags, include
 *    folder): a program emitted again (the same plan in another phase or
 *    another run) is not compiled again. Devices that share an object share
 *    its KilnEmuState, which holds only what a launch sets before it runs.
 *  - Grid: blocks run one after another (y outer, x inner), or all in
 *    reverse (emu_device_set_reverse: blocks, threads and each barrier
 *    round from the last to the first; a kernel whose result depends on
 *    the order, a race on a GPU, then gives other bits). Launches past
 *    CUDA's grid and block limits abort. A kernel without
 *    block cooperation (EmitKernel.uses_sync == 0) runs its threads as plain
 *    calls in a loop; a uses_sync kernel runs each block's threads as
 *    cooperative fibers, one per thread with a stack of its own (a register
 *    swap on x86-64, else ucontext). A round resumes every fiber up to its
 *    next KILN_SYNC or its return, each one passing on straight to the next,
 *    and rounds repeat until all returned. A block whose threads disagree
 *    (some returned while others wait at a barrier) and a KILN_SYNC in a
 *    kernel not declared uses_sync are reported.
 *  - The indices: the shared object exports one KilnEmuState (tests/
 *    cuda_emu.h), found with dlsym; the launcher writes the grid, block and
 *    thread indices there before it runs (or resumes) a thread, and installs
 *    its barrier function.
 *  - Memory: 64-byte aligned host blocks, zero-filled, or NaN-filled (all
 *    bits set) in the poison modes (gpu_poison_mode: KILN_CUDA_POISON; for
 *    "uninit" too, the emulation's stand-in for memory never written); copies are memcpy (so they complete at
 *    once); GEMMs are cblas_sgemm, row-major.
 *  - Graphs: graph_begin..graph_end records the launches and GEMMs (pointer
 *    and n values copied) without running them, as CUDA stream capture does;
 *    graph_run replays them. emu_device_fail_captures makes graph_end fail
 *    (nothing kept), as CUDA does when a capture was invalidated;
 *    emu_device_refuse_in_capture makes a launch or GEMM of the next
 *    recording return 1 unrecorded, as CUDA refuses one in a capture (and,
 *    when that invalidates the capture, every op after it and graph_end).
 *  - The copy stream (h2d_async ... d2d): the compute stream runs at once,
 *    but a copy on the copy stream is deferred to the latest point CUDA
 *    allows, the next copy_fence or copy_sync, so whatever reads its
 *    destination without that order reads stale memory. The hazards that
 *    would be races on a GPU abort with a message: a copy's host source
 *    changed before the copy ran (a hash taken when it was queued); a d2d, a
 *    release or a host_free touching a queued copy's memory; a copy into
 *    device memory that compute work queued since the last d2h (a d2d, an
 *    allocation's zero fill) may still use.
 *  - An optional memory limit (emu_device_set_limit) makes alloc fail past it
 *    and mem_info report it, to test the executor's out-of-memory message.
 * Errors that a kernel makes at run time (barrier misuse) print a message and
 * abort: the test that ran it fails with it.
 */
#include "emu_device.h"

#include <cblas.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>

#include "codegen/hash.h"

#define KILN_EMU_HOST_SIDE
#include "cuda_emu.h"

typedef void (*EmuFn)(void **);

/* One recorded launch or GEMM. */
typedef struct {
    int gemm;
    int kernel; unsigned gx, gy, block; int n; int n_args; float *ptr[EMIT_MAX_ARGS];
    int ta, tb, m, nn, k, lda, ldb, ldc; float alpha, beta;
    const float *A, *B; float *C;
} EmuOp;

typedef struct { int key, ready; EmuOp *v; int n, cap; } EmuGraph;

typedef struct { char *dst; const char *src; size_t bytes; uint64_t hash; } EmuCopy;
typedef struct { const char *p; size_t bytes; } EmuRange;

typedef struct {
    void *dl;              /* the loaded object (the process's: never closed) */
    KilnEmuState *st;
    int n_kernels;
    EmuFn *fn;
    char **names;
    int *uses_sync;
    int *n_args;
    EmuGraph *graphs; int n_graphs;
    EmuGraph *recording;   /* the graph being recorded, or NULL */
    size_t limit, used;    /* limit 0: none */
    EmuCopy *copies; int n_copies, cap_copies;      /* queued on the copy stream */
    EmuRange *inflight; int n_inflight, cap_inflight; /* used by compute work since the last d2h */
    int busy;              /* compute work queued since the last d2h */
    int fail_captures;     /* graph_end fails this many more times */
    int refuse;            /* EMU_REFUSE_LAUNCH or _GEMM: the next recording refuses its first such op */
    int refuse_invalidates;/* ... and every op after it, and its graph_end */
    int rec_invalid;       /* the recording in progress was invalidated */
    int poison;            /* allocations NaN-filled (gpu_poison_mode() != 0) */
    int reverse;           /* run blocks and threads in reverse order */
    EmuStats stats;
} Emu;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "emulated device: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

/* ---- fibers ------------------------------------------------------------------------ */

/* A fiber context. On x86-64 a switch is a register swap: the callee-saved
 * registers pushed on the running stack, the stack pointer saved and the
 * other fiber's loaded, its registers popped, and `ret` into it (the
 * floating-point control words are not switched: no kernel changes them;
 * nor is a CET shadow stack, which Linux enables for no process by default).
 * Elsewhere, and under AddressSanitizer (which must learn of stack switches
 * and knows those of swapcontext), ucontext: makecontext/swapcontext, whose
 * every switch also saves the signal mask with a system call: a training
 * epoch of tiny with batch-statistics BN emulates about 4x slower that way. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FIBER_UCONTEXT 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || !defined(__x86_64__)
#define FIBER_UCONTEXT 1
#endif

#ifdef FIBER_UCONTEXT
typedef ucontext_t FiberCtx;
#else
typedef struct { void *sp; } FiberCtx;

/* Push rbp, rbx, r12-r15; *save_sp = rsp; rsp = to_sp; pop them; ret. */
void kiln_emu_fiber_swap(void **save_sp, void *to_sp);
__asm__(".text\n"
        ".globl kiln_emu_fiber_swap\n"
        ".hidden kiln_emu_fiber_swap\n"
        ".type kiln_emu_fiber_swap, @function\n"
        "kiln_emu_fiber_swap:\n"
        "    pushq %rbp\n    pushq %rbx\n    pushq %r12\n    pushq %r13\n    pushq %r14\n    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n    popq %r14\n    popq %r13\n    popq %r12\n    popq %rbx\n    popq %rbp\n"
        "    ret\n"
        ".size kiln_emu_fiber_swap, .-kiln_emu_fiber_swap\n");
#endif

enum { F_READY = 0, F_WAIT, F_DONE };
#define FIBER_STACK (64 * 1024)

/* Process-wide: one block runs at a time. */
static struct {
    FiberCtx sched;
    FiberCtx *ctx;
    char *stacks;
    int *state;
    int cap;
    int n;            /* threads of the running block */
    int cur;          /* the fiber running now */
    KilnEmuState *st;
    int active;       /* 1 while a uses_sync block runs */
    EmuFn fn;
    void **args;
    const char *kernel;
    int reverse;      /* rounds run the threads from the last to the first */
} fib;

static void fiber_switch(FiberCtx *save, FiberCtx *to)
{
#ifdef FIBER_UCONTEXT
    if (swapcontext(save, to) != 0) die("swapcontext failed");
#else
    kiln_emu_fiber_swap(&save->sp, to->sp);
#endif
}

static void fibers_free(void)
{
    free(fib.ctx); free(fib.stacks); free(fib.state);
    fib.ctx = NULL; fib.stacks = NULL; fib.state = NULL;
    fib.cap = 0;
}

static void fibers_reserve(int n)
{
    if (n <= fib.cap) return;
    fibers_free();
    fib.ctx = calloc((size_t)n, sizeof *fib.ctx);
    fib.stacks = aligned_alloc(64, (size_t)n * FIBER_STACK);
    fib.state = calloc((size_t)n, sizeof *fib.state);
    if (!fib.ctx || !fib.stacks || !fib.state) die("out of memory for %d fibers", n);
    fib.cap = n;
}

/* The next fiber after t in the round's order that has not returned, or -1. */
static int next_live(int t)
{
    if (fib.reverse) {
        for (t--; t >= 0; t--)
            if (fib.state[t] != F_DONE) return t;
        return -1;
    }
    for (t++; t < fib.n; t++)
        if (fib.state[t] != F_DONE) return t;
    return -1;
}

/* Make fiber t the running thread and switch to it, saving into `save`. */
static void resume(FiberCtx *save, int t)
{
    fib.cur = t;
    fib.st->thread_idx = (KilnEmuDim3){(unsigned)t, 0, 0};
    fiber_switch(save, &fib.ctx[t]);
}

/* The running fiber t stops (at a barrier or for good): the next live fiber
 * of the round runs, or the scheduler after the last one. */
static void pass_on(int t)
{
    int nx = next_live(t);
    if (nx >= 0) resume(&fib.ctx[t], nx);
    else fiber_switch(&fib.ctx[t], &fib.sched);
}

static void fiber_main(void)
{
    int t = fib.cur;
    fib.fn(fib.args);
    fib.state[t] = F_DONE;
    pass_on(t);
    die("a finished fiber was resumed");
}

/* Fiber t, ready to start fiber_main on its own stack. */
static void fiber_make(int t)
{
    char *stack = fib.stacks + (size_t)t * FIBER_STACK;
#ifdef FIBER_UCONTEXT
    ucontext_t *c = &fib.ctx[t];
    if (getcontext(c) != 0) die("getcontext failed");
    c->uc_stack.ss_sp = stack;
    c->uc_stack.ss_size = FIBER_STACK;
    c->uc_link = NULL;
    makecontext(c, fiber_main, 0);
#else
    /* From the (16-byte aligned) top down: a null return address for
     * fiber_main, fiber_main as the address the first switch returns to,
     * six zero registers. After that `ret`, rsp is 8 mod 16, as at the entry
     * of a called function. */
    void **top = (void **)(stack + FIBER_STACK);
    void (*entry)(void) = fiber_main;
    top[-1] = NULL;
    memcpy(&top[-2], &entry, sizeof entry);
    for (int k = 3; k <= 8; k++) top[-k] = NULL;
    fib.ctx[t].sp = &top[-8];
#endif
}

/* KILN_SYNC(): the calling thread waits at the barrier. */
static void emu_sync(void)
{
    if (!fib.active) die("kernel %s: KILN_SYNC in a kernel launched as uses_sync = 0", fib.kernel);
    fib.state[fib.cur] = F_WAIT;
    pass_on(fib.cur);
}

/* Run one block's threads as fibers, barrier round by barrier round: a round
 * runs every live thread, in order, up to its next barrier or its return.
 * Returns the number of rounds. */
static int run_block_fibers(KilnEmuState *st, unsigned block)
{
    int T = (int)block;
    fibers_reserve(T);
    fib.n = T;
    fib.st = st;
    for (int t = 0; t < T; t++) {
        fiber_make(t);
        fib.state[t] = F_READY;
    }
    fib.active = 1;
    int rounds = 0;
    for (;;) {
        rounds++;
        resume(&fib.sched, fib.reverse ? T - 1 : 0);   /* back when the round's last live thread stopped */
        int waiting = 0, done = 0;
        for (int t = 0; t < T; t++) {
            waiting += fib.state[t] == F_WAIT;
            done += fib.state[t] == F_DONE;
        }
        if (!waiting) break;
        if (done)
            die("kernel %s, block (%u, %u): %d threads returned while %d wait at barrier %d "
                "(a uses_sync kernel must not return before its last KILN_SYNC)",
                fib.kernel, st->block_idx.x, st->block_idx.y, done, waiting, rounds);
        for (int t = 0; t < T; t++) fib.state[t] = F_READY;
    }
    fib.active = 0;
    return rounds;
}

/* ---- execution ----------------------------------------------------------------------- */

static void exec_launch(Emu *e, int k, unsigned gx, unsigned gy, unsigned block, void **args)
{
    if (k < 0 || k >= e->n_kernels) die("launch of kernel %d: no such kernel", k);
    if (block < 1 || gx < 1 || gy < 1) die("kernel %s: empty launch (%u, %u) x %u", e->names[k], gx, gy, block);
    KilnEmuState *st = e->st;
    EmuFn fn = e->fn[k];
    st->grid_dim = (KilnEmuDim3){gx, gy, 1};
    st->block_dim = (KilnEmuDim3){block, 1, 1};
    if (gx > 2147483647u || gy > 65535u || block > 1024u)
        die("kernel %s: launch (%u, %u) x %u is past CUDA's limits (2^31-1, 65535) x 1024", e->names[k], gx, gy,
            block);
    fib.kernel = e->names[k];
    fib.fn = fn;
    fib.args = args;
    fib.reverse = e->reverse;
    for (unsigned iy = 0; iy < gy; iy++)
        for (unsigned ix = 0; ix < gx; ix++) {
            unsigned by = e->reverse ? gy - 1 - iy : iy, bx = e->reverse ? gx - 1 - ix : ix;
            st->block_idx = (KilnEmuDim3){bx, by, 0};
            if (e->uses_sync[k]) {
                e->stats.fiber_blocks++;
                e->stats.fiber_rounds += run_block_fibers(st, block);
                continue;
            }
            for (unsigned i = 0; i < block; i++) {
                unsigned t = e->reverse ? block - 1 - i : i;
                st->thread_idx = (KilnEmuDim3){t, 0, 0};
                fn(args);
            }
        }
    e->stats.launches++;
    e->stats.fiber_launches += e->uses_sync[k] != 0;
}

static void exec_gemm(Emu *e, const EmuOp *o)
{
    e->stats.gemms++;
    if (o->m <= 0 || o->nn <= 0) return;
    cblas_sgemm(CblasRowMajor, o->ta ? CblasTrans : CblasNoTrans, o->tb ? CblasTrans : CblasNoTrans,
                o->m, o->nn, o->k, o->alpha, o->A, o->lda, o->B, o->ldb, o->beta, o->C, o->ldc);
}

static EmuOp *record(Emu *e)
{
    EmuGraph *g = e->recording;
    if (g->n == g->cap) {
        int cap = g->cap ? 2 * g->cap : 64;
        EmuOp *v = realloc(g->v, sizeof *v * (size_t)cap);
        if (!v) die("out of memory recording a graph");
        g->v = v; g->cap = cap;
    }
    e->stats.recorded++;
    EmuOp *o = &g->v[g->n++];
    memset(o, 0, sizeof *o);
    return o;
}

/* While recording: 1 when an op of kind `what` (EMU_REFUSE_*) is refused,
 * as CUDA refuses one that cannot be captured or that follows an
 * invalidating failure. */
static int refused(Emu *e, int what)
{
    if (!e->rec_invalid && e->refuse != what) return 0;
    if (e->refuse == what) {
        e->refuse = 0;
        e->rec_invalid = e->refuse_invalidates;
    }
    e->stats.refused++;
    return 1;
}

static int emu_launch(void *ctx, int kernel, unsigned gx, unsigned gy, unsigned block, void **args)
{
    Emu *e = ctx;
    e->busy = 1;
    if (!e->recording) { exec_launch(e, kernel, gx, gy, block, args); return 0; }
    if (kernel < 0 || kernel >= e->n_kernels) die("launch of kernel %d: no such kernel", kernel);
    if (refused(e, EMU_REFUSE_LAUNCH)) return 1;
    EmuOp *o = record(e);
    o->kernel = kernel; o->gx = gx; o->gy = gy; o->block = block;
    o->n = *(int *)args[0];
    o->n_args = e->n_args[kernel];
    for (int a = 0; a < o->n_args; a++) o->ptr[a] = *(float **)args[a + 1];
    return 0;
}

static int emu_gemm(void *ctx, int ta, int tb, int m, int n, int k, float alpha,
                    const float *A, int lda, const float *B, int ldb, float beta,
                    float *C, int ldc)
{
    Emu *e = ctx;
    e->busy = 1;
    if (e->recording && refused(e, EMU_REFUSE_GEMM)) return 1;
    EmuOp tmp, *o = e->recording ? record(e) : &tmp;
    *o = (EmuOp){.gemm = 1, .ta = ta, .tb = tb, .m = m, .nn = n, .k = k, .lda = lda, .ldb = ldb,
                 .ldc = ldc, .alpha = alpha, .beta = beta, .A = A, .B = B, .C = C};
    if (!e->recording) exec_gemm(e, o);
    return 0;
}

static void replay(Emu *e, const EmuGraph *g)
{
    for (int i = 0; i < g->n; i++) {
        const EmuOp *o = &g->v[i];
        if (o->gemm) { exec_gemm(e, o); continue; }
        int n = o->n;
        float *ptr[EMIT_MAX_ARGS];
        void *args[EMIT_MAX_ARGS + 1];
        args[0] = &n;
        for (int a = 0; a < o->n_args; a++) { ptr[a] = o->ptr[a]; args[a + 1] = &ptr[a]; }
        exec_launch(e, o->kernel, o->gx, o->gy, o->block, args);
    }
}

/* ---- graphs ------------------------------------------------------------------------------ */

static EmuGraph *find_graph(Emu *e, int key)
{
    for (int i = 0; i < e->n_graphs; i++)
        if (e->graphs[i].key == key) return &e->graphs[i];
    return NULL;
}

static int emu_graph_begin(void *ctx, int key)
{
    Emu *e = ctx;
    if (e->recording) return 1;
    EmuGraph *g = find_graph(e, key);
    if (!g) {
        EmuGraph *v = realloc(e->graphs, sizeof *v * (size_t)(e->n_graphs + 1));
        if (!v) return 1;
        e->graphs = v;
        g = &e->graphs[e->n_graphs++];
        *g = (EmuGraph){key, 0, NULL, 0, 0};
    }
    g->n = 0;
    g->ready = 0;
    e->recording = g;
    return 0;
}

static int emu_graph_end(void *ctx, int key)
{
    Emu *e = ctx;
    if (!e->recording || e->recording->key != key) die("graph_end(%d) without graph_begin", key);
    EmuGraph *g = e->recording;
    e->recording = NULL;
    if (e->fail_captures || e->rec_invalid) {      /* as a capture CUDA invalidated: nothing kept */
        if (!e->rec_invalid) e->fail_captures--;
        e->rec_invalid = 0;
        g->n = 0;
        g->ready = 0;
        return 1;
    }
    g->ready = 1;
    return 0;
}

void emu_device_fail_captures(void *ctx, int count) { ((Emu *)ctx)->fail_captures = count; }

void emu_device_refuse_in_capture(void *ctx, int what, int invalidates)
{
    Emu *e = ctx;
    e->refuse = what;
    e->refuse_invalidates = invalidates;
}

void emu_device_set_reverse(void *ctx, int on) { ((Emu *)ctx)->reverse = on; }

static int emu_graph_run(void *ctx, int key)
{
    Emu *e = ctx;
    EmuGraph *g = find_graph(e, key);
    if (!g || !g->ready || e->recording) return 1;
    replay(e, g);
    e->busy = 1;
    e->stats.replays++;
    return 0;
}

/* ---- memory ------------------------------------------------------------------------------- */

/* Each block carries its size in a 64-byte header, for the limit's accounting. */
#define HDR 64

static int overlaps(const void *a, size_t an, const void *b, size_t bn)
{
    const char *x = a, *y = b;
    return an && bn && x < y + bn && y < x + an;
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static void note_inflight(Emu *e, const void *p, size_t bytes)
{
    if (e->n_inflight == e->cap_inflight) {
        int cap = e->cap_inflight ? 2 * e->cap_inflight : 16;
        EmuRange *v = realloc(e->inflight, sizeof *v * (size_t)cap);
        if (!v) die("out of memory");
        e->inflight = v; e->cap_inflight = cap;
    }
    e->inflight[e->n_inflight++] = (EmuRange){p, bytes};
    e->busy = 1;
}

/* No queued copy reads or writes [p, p + bytes). */
static void check_no_copy(Emu *e, const void *p, size_t bytes, const char *what)
{
    for (int i = 0; i < e->n_copies; i++)
        if (overlaps(p, bytes, e->copies[i].dst, e->copies[i].bytes) ||
            overlaps(p, bytes, e->copies[i].src, e->copies[i].bytes))
            die("%s touches the memory of a copy still queued on the copy stream (no copy_fence/copy_sync before it)", what);
}

/* Run the queued copies, as the copy stream would have by now. */
static void run_copies(Emu *e)
{
    for (int i = 0; i < e->n_copies; i++) {
        EmuCopy *c = &e->copies[i];
        if (hash_bytes(c->src, c->bytes) != c->hash)
            die("the host source of a queued copy changed before the copy ran");
        memcpy(c->dst, c->src, c->bytes);
    }
    e->n_copies = 0;
}

static void *emu_alloc(void *ctx, size_t bytes)
{
    Emu *e = ctx;
    size_t sz = (bytes + HDR - 1) / HDR * HDR;
    if (sz < HDR) sz = HDR;
    if (e->limit && (e->used > e->limit || sz > e->limit - e->used)) return NULL;
    char *b = aligned_alloc(HDR, HDR + sz);
    if (!b) return NULL;
    memset(b, 0, HDR);
    memset(b + HDR, e->poison ? 0xff : 0, sz);   /* all bits set: a NaN in every float */
    e->stats.poisoned += e->poison != 0;
    memcpy(b, &sz, sizeof sz);
    e->used += sz;
    note_inflight(e, b + HDR, sz);   /* cudaMemsetAsync on the compute stream */
    return b + HDR;
}

static void emu_release(void *ctx, void *ptr)
{
    Emu *e = ctx;
    if (!ptr) return;
    char *b = (char *)ptr - HDR;
    size_t sz;
    memcpy(&sz, b, sizeof sz);
    check_no_copy(e, ptr, sz, "release");
    e->used -= sz;
    free(b);
}

static void *emu_host_alloc(void *ctx, size_t bytes)
{
    (void)ctx;
    return malloc(bytes ? bytes : 1);
}

static void emu_host_free(void *ctx, void *ptr)
{
    Emu *e = ctx;
    if (!ptr) return;
    /* the emulation does not know the block's size: one byte is enough to
     * find a copy whose source starts in it */
    for (int i = 0; i < e->n_copies; i++)
        if ((const char *)ptr == e->copies[i].src) die("host_free of the source of a queued copy");
    free(ptr);
}

static void emu_h2d_async(void *ctx, void *dst, const void *src, size_t bytes)
{
    Emu *e = ctx;
    if (!bytes) return;
    if (e->recording) die("a copy-stream copy during graph recording");
    for (int i = 0; i < e->n_inflight; i++)
        if (overlaps(dst, bytes, e->inflight[i].p, e->inflight[i].bytes))
            die("a copy-stream copy into device memory that compute work queued since the last d2h may still use");
    if (e->n_copies == e->cap_copies) {
        int cap = e->cap_copies ? 2 * e->cap_copies : 8;
        EmuCopy *v = realloc(e->copies, sizeof *v * (size_t)cap);
        if (!v) die("out of memory");
        e->copies = v; e->cap_copies = cap;
    }
    e->copies[e->n_copies++] = (EmuCopy){dst, src, bytes, hash_bytes(src, bytes)};
    e->stats.async_copies++;
    e->stats.overlapped += e->busy;
}

static void emu_copy_fence(void *ctx) { run_copies(ctx); }

static void emu_copy_sync(void *ctx) { run_copies(ctx); }

static void emu_d2d(void *ctx, void *dst, const void *src, size_t bytes)
{
    Emu *e = ctx;
    if (!bytes) return;
    if (e->recording) die("a device copy during graph recording");
    check_no_copy(e, src, bytes, "a device copy (source)");
    check_no_copy(e, dst, bytes, "a device copy (destination)");
    memmove(dst, src, bytes);
    note_inflight(e, src, bytes);
    note_inflight(e, dst, bytes);
}

static void emu_h2d(void *ctx, void *dst, const void *src, size_t bytes)
{
    Emu *e = ctx;
    if (!bytes) return;
    check_no_copy(e, dst, bytes, "a compute-stream copy");
    memcpy(dst, src, bytes);
    e->busy = 1;
}

static void emu_d2h(void *ctx, void *dst, const void *src, size_t bytes)
{
    Emu *e = ctx;
    if (bytes) memcpy(dst, src, bytes);
    e->n_inflight = 0;     /* the compute stream is idle; the copy stream is not waited for */
    e->busy = 0;
}

static int emu_mem_info(void *ctx, size_t *free_b, size_t *total_b)
{
    Emu *e = ctx;
    if (!e->limit) return 1;
    *free_b = e->used < e->limit ? e->limit - e->used : 0;
    *total_b = e->limit;
    return 0;
}

void emu_device_set_limit(void *ctx, size_t bytes) { ((Emu *)ctx)->limit = bytes; }

const EmuStats *emu_device_stats(void *ctx) { return &((Emu *)ctx)->stats; }

/* ---- set-up ------------------------------------------------------------------------------- */

static void emu_destroy(void *ctx)
{
    Emu *e = ctx;
    if (!e) return;
    for (int k = 0; k < e->n_kernels && e->names; k++) free(e->names[k]);
    free(e->names); free(e->fn); free(e->uses_sync); free(e->n_args);
    for (int i = 0; i < e->n_graphs; i++) free(e->graphs[i].v);
    free(e->graphs);
    free(e->copies); free(e->inflight);
    free(e);
    fibers_free();
}

static int write_file(const char *path, const char *head, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    int bad = fputs(head, f) < 0 || fwrite(text, 1, len, f) != len;
    return fclose(f) != 0 || bad;
}

/* Run `cmd`, its output into a fresh string. Returns the exit status (-1: not run). */
static int run_capture(const char *cmd, char **out)
{
    *out = NULL;
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t len = 0, cap = 4096;
    char *s = malloc(cap);
    for (size_t got; s && (got = fread(s + len, 1, cap - len - 1, p)) > 0;) {
        len += got;
        if (cap - len < 1024) {
            char *t = realloc(s, cap * 2);
            if (!t) break;
            s = t; cap *= 2;
        }
    }
    if (s) s[len] = 0;
    *out = s;
    int st = pclose(p);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* Compile pr's source into dir/k.so. Returns 0, or 1 with the compiler's output in err. */
static int compile(const Program *pr, const char *cc, const char *flags, const char *inc,
                   const char *dir, char *err, size_t errlen)
{
    char src[1100], so[1100], cmd[4096];
    snprintf(src, sizeof src, "%s/k.c", dir);
    snprintf(so, sizeof so, "%s/k.so", dir);
    if (write_file(src, "#include \"cuda_emu.h\"\n", pr->source, pr->source_len)) {
        snprintf(err, errlen, "cannot write %s", src);
        return 1;
    }
    /* the C-versus-CUDA mistakes a template can make are errors, not warnings */
    snprintf(cmd, sizeof cmd,
             "'%s' -std=c11 -O1 -fPIC -shared -fvisibility=hidden "
             "-Werror=implicit-function-declaration -Werror=incompatible-pointer-types "
             "-Werror=int-conversion -Werror=discarded-qualifiers %s -I'%s' -o '%s' '%s' -lm 2>&1",
             cc, flags, inc, so, src);
    char *log;
    int rc = run_capture(cmd, &log);
    if (rc != 0) {
        snprintf(err, errlen, "compiling the emitted kernels failed (%s, exit %d; source kept in %s):\n%s",
                 cc, rc, src, log ? log : "");
        free(log);
        return 1;
    }
    free(log);
    return 0;
}

/* The loaded objects of this process (never unloaded), newest first. */
typedef struct EmuObject {
    uint64_t hash;
    size_t len;
    char *key;          /* cc, flags and include folder, then the source */
    void *dl;
    struct EmuObject *next;
} EmuObject;

static EmuObject *objects;

/* The options and the source as one key (NULs between the parts), its
 * length in *len. NULL when out of memory. */
static char *object_key(const Program *pr, const char *cc, const char *flags, const char *inc, size_t *len)
{
    size_t a = strlen(cc) + 1, b = strlen(flags) + 1, c = strlen(inc) + 1;
    *len = a + b + c + pr->source_len;
    char *k = malloc(*len + 1);
    if (!k) return NULL;
    memcpy(k, cc, a);
    memcpy(k + a, flags, b);
    memcpy(k + a + b, inc, c);
    memcpy(k + a + b + c, pr->source, pr->source_len);
    return k;
}

/* Compile and dlopen pr's source in a fresh temporary folder (removed
 * after; kept with the source when the compiler fails). Returns the handle,
 * or NULL with a message in err. */
static void *compile_and_open(const Program *pr, const char *cc, const char *flags, const char *inc,
                              char *err, size_t errlen)
{
    const char *tmp = getenv("TMPDIR");
    char dir[1024], src[1100], so[1100];
    snprintf(dir, sizeof dir, "%s/kiln-emu-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) { snprintf(err, errlen, "cannot create a temporary folder %s", dir); return NULL; }
    snprintf(src, sizeof src, "%s/k.c", dir);
    snprintf(so, sizeof so, "%s/k.so", dir);
    if (compile(pr, cc, flags, inc, dir, err, errlen)) return NULL;
    void *dl = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!dl) snprintf(err, errlen, "dlopen %s: %s", so, dlerror());
    unlink(so);   /* a loaded object stays mapped */
    unlink(src);
    rmdir(dir);
    return dl;
}

/* The loaded object of pr: from the process's objects, or compiled now and
 * added to them. Returns NULL with a message in err. */
static void *object_for(const Program *pr, const char *cc, const char *flags, const char *inc, char *err,
                        size_t errlen)
{
    size_t len;
    char *key = object_key(pr, cc, flags, inc, &len);
    if (!key) { snprintf(err, errlen, "out of memory"); return NULL; }
    uint64_t h = kiln_hash(KILN_HASH_INIT, key, len);
    for (EmuObject *o = objects; o; o = o->next)
        if (o->hash == h && o->len == len && !memcmp(o->key, key, len)) {
            free(key);
            return o->dl;
        }
    EmuObject *o = malloc(sizeof *o);
    void *dl = o ? compile_and_open(pr, cc, flags, inc, err, errlen) : NULL;
    if (!o) snprintf(err, errlen, "out of memory");
    if (!dl) { free(o); free(key); return NULL; }
    *o = (EmuObject){h, len, key, dl, objects};
    objects = o;
    return dl;
}

static int load(Emu *e, const Program *pr, void *dl, char *err, size_t errlen)
{
    const char *so = "the compiled kernels";
    e->dl = dl;
    e->st = dlsym(e->dl, KILN_EMU_STATE_SYMBOL);
    if (!e->st) { snprintf(err, errlen, "%s: no symbol %s", so, KILN_EMU_STATE_SYMBOL); return 1; }
    e->st->sync = emu_sync;
    e->n_kernels = pr->n_kernels;
    int nk = pr->n_kernels > 0 ? pr->n_kernels : 1;
    e->fn = calloc((size_t)nk, sizeof *e->fn);
    e->names = calloc((size_t)nk, sizeof *e->names);
    e->uses_sync = calloc((size_t)nk, sizeof *e->uses_sync);
    e->n_args = calloc((size_t)nk, sizeof *e->n_args);
    if (!e->fn || !e->names || !e->uses_sync || !e->n_args) { snprintf(err, errlen, "out of memory"); return 1; }
    for (int k = 0; k < pr->n_kernels; k++) {
        char sym[512];
        snprintf(sym, sizeof sym, "%s__emu", pr->kernels[k].name);
        void *f = dlsym(e->dl, sym);
        if (!f) { snprintf(err, errlen, "%s: no symbol %s", so, sym); return 1; }
        memcpy(&e->fn[k], &f, sizeof f);   /* object pointer to function pointer, as POSIX allows */
        e->names[k] = strdup(pr->kernels[k].name);
        if (!e->names[k]) { snprintf(err, errlen, "out of memory"); return 1; }
        e->uses_sync[k] = pr->kernels[k].uses_sync;
        e->n_args[k] = pr->kernels[k].n_args;
        if (e->n_args[k] < 0 || e->n_args[k] > EMIT_MAX_ARGS) {
            snprintf(err, errlen, "kernel %s takes %d pointers (at most %d)", e->names[k], e->n_args[k],
                     EMIT_MAX_ARGS);
            return 1;
        }
    }
    return 0;
}

int emu_device_open(DevOps *ops, const Program *pr, const char *cc, const char *flags,
                    const char *include_dir, char *err, size_t errlen)
{
    memset(ops, 0, sizeof *ops);
    if (strchr(cc, '\'') || strchr(include_dir, '\'') || strpbrk(flags, "'\"`$;|&<>")) {
        snprintf(err, errlen, "compiler or include path contains a quote");
        return 1;
    }
    void *dl = object_for(pr, cc, flags, include_dir, err, errlen);
    if (!dl) return 1;
    Emu *e = calloc(1, sizeof *e);
    int bad = !e || load(e, pr, dl, err, errlen);
    if (!e) snprintf(err, errlen, "out of memory");
    if (bad) { emu_destroy(e); return 1; }
    e->poison = gpu_poison_mode() != 0;
    ops->ctx = e;
    ops->alloc = emu_alloc;
    ops->release = emu_release;
    ops->h2d = emu_h2d;
    ops->d2h = emu_d2h;
    ops->launch = emu_launch;
    ops->gemm = emu_gemm;
    ops->graph_begin = emu_graph_begin;
    ops->graph_end = emu_graph_end;
    ops->graph_run = emu_graph_run;
    ops->mem_info = emu_mem_info;
    ops->host_alloc = emu_host_alloc;
    ops->host_free = emu_host_free;
    ops->h2d_async = emu_h2d_async;
    ops->copy_fence = emu_copy_fence;
    ops->copy_sync = emu_copy_sync;
    ops->d2d = emu_d2d;
    ops->destroy = emu_destroy;
    return 0;
}

Backend *emu_backend_create(const Plan *p, Program *pr, int graphs, size_t mem_limit, void **dev,
                            char *err, size_t errlen)
{
    EmitOptions eo = {0, 0};
    if (emit_program(pr, p, &eo, err, errlen)) return NULL;
    DevOps ops;
    if (emu_device_open(&ops, pr, KILN_EMU_CC, KILN_EMU_CFLAGS, KILN_EMU_INCLUDE, err, errlen)) {
        emit_free(pr);
        return NULL;
    }
    *dev = ops.ctx;
    if (mem_limit) emu_device_set_limit(ops.ctx, mem_limit);
    return gpu_backend_create(p, pr, &ops, graphs, err, errlen);
}
