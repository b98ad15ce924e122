/* tests/cuda_emu.h — the CUDA features kiln's kernel templates use, emulated
 * on the host, so that the emitted translation unit (codegen/emit.h)
 * compiles as plain C11 with the host compiler and runs on the CPU.
 *
 * Covered (and nothing else; kernels/cuda/preamble.cu gives the rules):
 *  - kernel and device function qualifiers: KILN_KERNEL (static: every kernel
 *    is reached through its exported NAME__emu trampoline, which emit_base.c
 *    appends under #ifdef KILN_EMULATE), KILN_DEV (static inline),
 *    KILN_EMU_EXPORT (a visible extern symbol);
 *  - blockIdx, threadIdx, blockDim, gridDim: unsigned {x, y, z}, set by the
 *    launcher (tests/emu_device.c) before each thread runs;
 *  - __shared__ as KILN_SHARED = `static`: the blocks of a grid run one after
 *    another, so a function-local static is the shared memory of the block
 *    that runs now (uninitialized-at-block-start is respected by the
 *    templates, as on a GPU);
 *  - __syncthreads as KILN_SYNC(): the threads of a block of a kernel that
 *    declares uses_sync run as cooperative fibers (ucontext), and KILN_SYNC
 *    returns to the launcher's scheduler, which resumes every fiber of the
 *    block up to its next barrier; a block where some threads returned while
 *    others wait at a barrier is reported as an error (the templates must not
 *    return before their last KILN_SYNC);
 *  - __restrict__ as KILN_RESTRICT = C99 `restrict`;
 *  - two atomics, atomicAdd(float *, float) and atomicOr(int *, int), as plain
 *    read-modify-write (one thread runs at a time; a fiber never switches
 *    inside them), returning the old value as CUDA does;
 *  - the math functions of <math.h> (expf, logf, sqrtf, fmaxf, ...).
 * Not covered: warp shuffles and votes, other atomics, dynamic shared memory,
 * streams, texture memory, cooperative groups.
 *
 * Where the state lives: the kernels are compiled into a shared object that
 * the launcher loads with dlopen. The grid and thread indices and the barrier
 * hook are one struct, KilnEmuState, defined in that shared object (this
 * header, included in kernel mode) and exported under the name
 * KILN_EMU_STATE_SYMBOL; the launcher finds it with dlsym, writes the indices
 * through the pointer and installs its barrier function in `sync`. The
 * launcher includes this header with KILN_EMU_HOST_SIDE defined, which gives
 * it the types only (no macros named like CUDA built-ins, no definitions).
 */
#ifndef KILN_CUDA_EMU_H
#define KILN_CUDA_EMU_H

#include <math.h>

typedef struct { unsigned x, y, z; } KilnEmuDim3;

typedef struct {
    KilnEmuDim3 block_idx, thread_idx, block_dim, grid_dim;
    void (*sync)(void);   /* the launcher's barrier: yield to the scheduler */
} KilnEmuState;

#define KILN_EMU_STATE_SYMBOL "kiln_emu_state"

#ifndef KILN_EMU_HOST_SIDE

#define KILN_EMULATE 1
#define KILN_EMU_EXPORT __attribute__((visibility("default")))
#define KILN_KERNEL static
#define KILN_DEV static inline
#define KILN_SHARED static
#define KILN_RESTRICT restrict
#define KILN_SYNC() kiln_emu_state.sync()

typedef unsigned long long kiln_u64;
typedef unsigned int kiln_u32;

KILN_EMU_EXPORT KilnEmuState kiln_emu_state;

#define blockIdx (kiln_emu_state.block_idx)
#define threadIdx (kiln_emu_state.thread_idx)
#define blockDim (kiln_emu_state.block_dim)
#define gridDim (kiln_emu_state.grid_dim)

static inline float atomicAdd(float *p, float v)
{
    float old = *p;
    *p = old + v;
    return old;
}

static inline int atomicOr(int *p, int v)
{
    int old = *p;
    *p = old | v;
    return old;
}

#endif /* KILN_EMU_HOST_SIDE */

#endif
