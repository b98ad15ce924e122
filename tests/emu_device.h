/* tests/emu_device.h — a DevOps table (runtime/cuda/exec.h) that runs an
 * emitted Program on the host: the kernels compiled by the host C compiler
 * under tests/cuda_emu.h into a shared object, GEMMs through the CPU BLAS,
 * "device" memory in host memory, CUDA graphs emulated by recording the
 * launches and replaying them, a copy stream emulated by deferring its copies
 * as long as CUDA allows and checking the hazards that would be races.
 *
 * One emulated device runs at a time in a process (the fiber scheduler is
 * process-wide state); tests are single-threaded.
 */
#ifndef KILN_EMU_DEVICE_H
#define KILN_EMU_DEVICE_H

#include <stddef.h>

#include "runtime/cuda/exec.h"

/* Counters of what the device did, for tests. */
typedef struct {
    long launches;        /* kernel launches executed (replayed ones included) */
    long fiber_launches;  /* of which ran their blocks as fibers (uses_sync) */
    long fiber_blocks;    /* blocks run as fibers */
    long fiber_rounds;    /* barrier rounds of those blocks (barriers + 1 each) */
    long gemms;           /* GEMMs executed */
    long recorded;        /* launches + GEMMs recorded into graphs */
    long replays;         /* graph_run calls that replayed a graph */
    long async_copies;    /* h2d_async calls (the copy stream) */
    long overlapped;      /* of which were queued while compute work was in flight */
    long refused;         /* launches + GEMMs refused while recording (emu_device_refuse_in_capture) */
    long poisoned;        /* allocations NaN-filled (KILN_CUDA_POISON) */
} EmuStats;

/* Compile pr's source with the C compiler `cc` and extra options `flags`
 * (the sanitizers of a sanitized build; no shell characters), include_dir
 * holding cuda_emu.h; load it and fill *ops. A source compiled before in
 * this process with the same options is not compiled again: its loaded
 * object is reused (objects stay loaded until the process ends). Returns 0,
 * or 1 with a message in err (a compile error carries the compiler's
 * output). ops->ctx is released by ops->destroy. */
int emu_device_open(DevOps *ops, const Program *pr, const char *cc, const char *flags,
                    const char *include_dir, char *err, size_t errlen);

/* The GPU executor (runtime/cuda/exec.h) over an emulated device running
 * p's emitted program: emit_program into *pr (the backend owns it; read it
 * until the backend is destroyed), emu_device_open with this build's
 * compiler (KILN_EMU_CC, KILN_EMU_CFLAGS, KILN_EMU_INCLUDE, defined by the
 * build for the tests that link this file), memory limited to mem_limit
 * bytes when nonzero, then gpu_backend_create. *dev: the device, for the
 * functions below. NULL with the message in err (a compile error carries the
 * compiler's whole output). */
Backend *emu_backend_create(const Plan *p, Program *pr, int graphs, size_t mem_limit, void **dev,
                            char *err, size_t errlen);

/* Make alloc fail past `bytes` in all and mem_info report that much memory
 * (0: no limit, and mem_info reports nothing). */
void emu_device_set_limit(void *ctx, size_t bytes);

/* Run every launch's blocks and threads in reverse order (on: 1). */
void emu_device_set_reverse(void *ctx, int on);

/* Make the next `count` graph captures fail at graph_end. */
void emu_device_fail_captures(void *ctx, int count);

/* Make the next recording refuse (return 1, record nothing) its first
 * kernel launch (EMU_REFUSE_LAUNCH) or GEMM (EMU_REFUSE_GEMM). invalidates:
 * as a failure that invalidates a CUDA capture, every op after it is
 * refused too and graph_end fails; 0: as a launch CUDA refuses without
 * invalidating the capture, the rest records and graph_end succeeds. */
enum { EMU_REFUSE_LAUNCH = 1, EMU_REFUSE_GEMM = 2 };
void emu_device_refuse_in_capture(void *ctx, int what, int invalidates);

/* The counters of a device made by emu_device_open (ctx = ops->ctx). */
const EmuStats *emu_device_stats(void *ctx);

#endif
