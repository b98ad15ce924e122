/* runtime/cuda/exec.h — the GPU executor: runs an emitted Program (codegen/
 * emit.h) through a small table of device operations.
 *
 * The executor is pure C and knows nothing of CUDA: it allocates the plan's
 * arenas, walks the launch lists of the program in plan order and implements
 * the Backend interface (runtime/backend.h). Two device tables exist:
 *  - runtime/cuda/cuda.c: cudart + NVRTC + cuBLAS, with CUDA graph capture
 *    (built when the CUDA toolkit is found);
 *  - tests/emu_device.c: the same kernels compiled by the host C compiler
 *    under tests/cuda_emu.h, GEMMs through the CPU BLAS — the proof that the
 *    generated kernels and this executor match the CPU backend, on machines
 *    without a GPU.
 */
#ifndef KILN_CUDA_EXEC_H
#define KILN_CUDA_EXEC_H

#include <stddef.h>

#include "codegen/emit.h"
#include "runtime/backend.h"

typedef struct DevOps {
    void *ctx;
    /* Device memory, zero-filled (in the poison modes of gpu_poison_mode
     * NaN-filled or left unfilled: the executor initializes what it reads
     * before writing). Returns NULL when it cannot (then the executor reports the
     * bytes asked for and, when mem_info works, free). */
    void *(*alloc)(void *ctx, size_t bytes);
    void (*release)(void *ctx, void *ptr);
    /* Copies on the device's stream, in order with launches: h2d may return
     * before the copy is done when the source stays valid (the executor keeps
     * its own staging buffer); d2h waits for everything before it. */
    void (*h2d)(void *ctx, void *dst, const void *src, size_t bytes);
    void (*d2h)(void *ctx, void *dst, const void *src, size_t bytes);
    /* Launch kernel `kernel` (index into Program.kernels) with grid
     * (gx, gy, 1) and block (block, 1, 1); args[0] points to the int n,
     * args[1..n_args] to the pointer values. Returns 0; 1 only while
     * recording a graph, when the launch could not be recorded (the
     * recording is then unusable). Outside a recording a failure ends the
     * process. */
    int (*launch)(void *ctx, int kernel, unsigned gx, unsigned gy, unsigned block, void **args);
    /* Row-major C (m, n) = alpha op(A) op(B) + beta C, as kernels/cpu gemm().
     * Returns as launch. */
    int (*gemm)(void *ctx, int ta, int tb, int m, int n, int k, float alpha,
                const float *A, int lda, const float *B, int ldb, float beta,
                float *C, int ldc);
    /* Optional (NULL when the device has none): record the launches made
     * between begin and end under `key` and replay them with run. begin
     * returns 0 when recording started, end 0 when the graph is ready (else
     * nothing recorded ran, and nothing is kept). A recording in which a
     * launch or GEMM returned 1 is never replayed, whatever end returns. */
    int (*graph_begin)(void *ctx, int key);
    int (*graph_end)(void *ctx, int key);
    int (*graph_run)(void *ctx, int key);   /* 0: replayed; 1: nothing recorded under key */
    /* Optional, all or none (NULL: uploads go through h2d on the compute
     * stream): a second, copy stream so that a batch is uploaded while the
     * previous step runs.
     *  - host_alloc/host_free: page-locked host memory (NULL when none);
     *  - h2d_async: a copy on the copy stream; src must stay unchanged, and
     *    dst must not be in use by queued device work, until the copy is
     *    done (copy_sync, or copy_fence followed by a d2h);
     *  - copy_fence: work queued on the compute stream after it waits for
     *    every copy queued on the copy stream before it;
     *  - copy_sync: the host waits for the copy stream;
     *  - d2d: a device copy on the compute stream, in order with launches. */
    void *(*host_alloc)(void *ctx, size_t bytes);
    void (*host_free)(void *ctx, void *ptr);
    void (*h2d_async)(void *ctx, void *dst, const void *src, size_t bytes);
    void (*copy_fence)(void *ctx);
    void (*copy_sync)(void *ctx);
    void (*d2d)(void *ctx, void *dst, const void *src, size_t bytes);
    /* Optional: free and total device bytes. */
    int (*mem_info)(void *ctx, size_t *free_b, size_t *total_b);
    void (*destroy)(void *ctx);
} DevOps;

/* How device tables fill new allocations, from KILN_CUDA_POISON: 0 (unset
 * or "0") with zeros; 1 (any other value) with NaN (all bits set), so that
 * a read before the first write shows as NaN in the results; 2 ("uninit")
 * not at all, so that compute-sanitizer's initcheck sees such a read (a
 * device that cannot leave memory unfilled fills it with NaN). */
int gpu_poison_mode(void);

/* A Backend over a device table. Takes ownership of pr (emit_free at
 * destroy) and of ops->ctx (ops->destroy). use_graphs: replay the training
 * step of a full batch from a captured graph when the device supports it.
 * Returns NULL with a message in err (allocation failure names the bytes
 * asked for and free). */
Backend *gpu_backend_create(const Plan *p, Program *pr, const DevOps *ops, int use_graphs,
                            char *err, size_t errlen);

#endif
