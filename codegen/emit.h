/* codegen/emit.h — the CUDA C emitter: from a plan to one translation unit of
 * kernels plus the static launch program that runs them.
 *
 * The emitter specializes the templates in kernels/cuda/ (embedded into the
 * binary at build time) for every plan step: shapes and strides become
 * constants, the epilogue chain (conv output -> BN -> activation -> residual
 * add) is inlined. Kernels are `extern "C"`, named
 * <template>_<shape>_<hash of their text>, and emitted once however many steps
 * launch them. Output is deterministic: the same plan gives the same bytes.
 *
 * Besides the source, the emitter returns the launch program: for every plan
 * step the kernel launches and GEMMs (cuBLAS on a GPU) that implement it, with
 * every pointer given as (arena, offset). An executor (runtime/cuda/exec.c)
 * only walks these lists; it takes no decision of its own.
 *
 * Kernel calling convention (every kernel, every template):
 *     KILN_KERNEL void NAME(int n, float *a0, float *a1, ...)
 * n is the number of images in the batch (<= the plan's batch); every other
 * argument is a pointer into one of the arenas (labels and the control block
 * are reached through float pointers and cast inside the kernel). Pointer
 * arguments may be const-qualified in the template.
 *
 * The control block (BUF_CTRL) is a small device array of 32-bit words that
 * carries per-step scalars in (LRs, momentum, weight decay, the dropout step)
 * and results out (loss, correct count, the non-finite flag), so a captured
 * CUDA graph stays valid from step to step. Its layout is below.
 *
 * Pure C, no CUDA headers: tested on any machine.
 */
#ifndef KILN_EMIT_H
#define KILN_EMIT_H

#include <stddef.h>
#include <stdint.h>

#include "codegen/plan.h"

/* Arenas a launch argument can point into. */
typedef enum {
    BUF_NULL = 0,   /* a NULL pointer */
    BUF_PARAM, BUF_GRAD, BUF_MOM, BUF_ACT, BUF_DERIVED, BUF_WS, BUF_CTRL,
    BUF_COUNT
} BufId;

/* Control block layout, in 32-bit words. */
#define CTRL_LOSS      0   /* double (words 0-1): summed loss of the batch (not the mean) */
#define CTRL_CORRECT   2   /* int32: argmax hits */
#define CTRL_BAD       3   /* int32: nonzero when the loss or a gradient is not finite */
#define CTRL_STEP      4   /* uint64 (words 4-5): the dropout seed counter */
#define CTRL_MOMENTUM  8   /* float */
#define CTRL_WD        9   /* float: weight decay */
#define CTRL_LR       16   /* float[EMIT_MAX_GROUPS]: LR of each LR group */
#define EMIT_MAX_GROUPS 48
#define CTRL_WORDS    (CTRL_LR + EMIT_MAX_GROUPS)

#define EMIT_MAX_ARGS 16

typedef struct { uint8_t buf; size_t off; } Ref;   /* off in 4-byte words */

/* A size that depends on the batch: per_n * n + fixed. */
typedef struct { long per_n, fixed; } Dim;

typedef enum { L_KERNEL = 0, L_GEMM } LaunchKind;

typedef struct {
    LaunchKind kind;
    /* L_KERNEL: kernel index; grid.x = max(1, ceil(gx / gx_div)) with gx a
     * Dim, grid.y = gy, grid.z = 1, block = (block, 1, 1). */
    int kernel;
    Dim gx; long gx_div;
    int gy, block;
    int n_args; Ref args[EMIT_MAX_ARGS];
    /* L_GEMM, row-major like kernels/cpu's gemm():
     *   C (m, k2) = alpha * op(A) (m, k) * op(B) (k, k2) + beta * C
     * op = transpose when ta/tb; A, B, C are args[0..2]. The executor maps it
     * to a column-major cuBLAS call. */
    int ta, tb;
    Dim m, n, k;     /* n is the number of columns of C */
    int lda, ldb, ldc;
    float alpha, beta;
} Launch;

typedef struct { Launch *v; int n, cap; } LaunchList;

typedef struct {
    char *name;          /* the extern "C" name */
    int n_args;          /* pointer arguments after n */
    int uses_sync;       /* uses __shared__ / __syncthreads (block cooperation) */
} EmitKernel;

typedef struct {
    int fuse_override;   /* unused; the plan's own fuse flag decides */
    int block;           /* threads per block for elementwise kernels (default 256) */
} EmitOptions;

typedef struct {
    char *source; size_t source_len;   /* the translation unit */
    EmitKernel *kernels; int n_kernels;
    /* Per plan node (index = node). */
    LaunchList *fwd_train;   /* forward in training mode (batch-statistics BN, dropout on) */
    LaunchList *fwd_eval;    /* forward in inference mode */
    LaunchList *bwd;         /* backward; empty when the node has none */
    LaunchList *derive;      /* folded constants of a node (after write_params) */
    int n_nodes;
    LaunchList loss_train;   /* loss + dlogits; sets CTRL_LOSS/CORRECT/BAD */
    LaunchList loss_eval;    /* loss only */
    LaunchList update;       /* the finite check of the gradients, then the fused SGD update
                                (skipped on the device when CTRL_BAD is set) */
    uint64_t hash;           /* FNV-1a of the source */
} Program;

/* Emit the program of plan p. Returns 0, or 1 with a message (out of memory,
 * a plan the templates do not cover). */
int emit_program(Program *pr, const Plan *p, const EmitOptions *o, char *err, size_t errlen);
void emit_free(Program *pr);

/* Value of a batch-dependent size. */
static inline long dim_at(Dim d, int n) { return d.per_n * (long)n + d.fixed; }

/* The kernel templates embedded at build time (kernels/cuda/NAME.cu), by file
 * name without the extension; NULL when unknown. */
const char *emit_template_file(const char *name);

#endif
