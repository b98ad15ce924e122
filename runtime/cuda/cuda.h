/* runtime/cuda/cuda.h — the CUDA device: NVRTC compilation of an emitted
 * program, cudart for memory, launches and graphs, cuBLAS for GEMMs, under
 * the pure-C executor of runtime/cuda/exec.h.
 *
 * Two implementations, one chosen at build time:
 *  - runtime/cuda/cuda.c with runtime/cuda/nvrtc.c (KILN_HAVE_CUDA): the
 *    real one (cuda.c the device, nvrtc.c compilation and the cache; their
 *    shared parts in runtime/cuda/cuda_impl.h). cudart is linked
 *    statically and reaches the driver at run time, so the binary starts on
 *    machines with no NVIDIA driver; there cuda_available() says why not.
 *  - runtime/cuda/none.c: a build without the toolkit; every function says
 *    "this kiln was built without CUDA".
 *
 * Compilation: the program's translation unit is compiled with NVRTC for
 * the device's compute capability (sm_XY; PTX for the newest architecture
 * NVRTC knows when the device is newer still) and the result is cached on
 * disk under $KILN_CACHE, else ~/.cache/kiln/kernels, in a file named by a
 * hash of (source hash and length, options, NVRTC version, architecture),
 * written atomically (temporary file + rename). One line on stderr says
 * what was compiled or loaded and how long it took. KILN_DUMP_KERNELS=DIR
 * writes the source to DIR/kiln_<hash>.cu.
 *
 * Errors: while creating the backend, every failure comes back in err with
 * the file and line of the failed call, the call and the CUDA, cuBLAS or
 * NVRTC error string (and the NVRTC log on a compile failure). Once running,
 * the device table has no error return: a failed call prints the same
 * message on stderr and ends the process with exit code 1 (a CUDA context
 * after a device fault is unusable anyway). A fault inside a kernel shows at
 * the next wait; KILN_CUDA_SYNC=1 waits after every launch and GEMM so the
 * message names the kernel (slow: for debugging; CUDA graphs are off then,
 * since a replayed graph would report its fault without a kernel name).
 * KILN_CUDA_POISON=1 fills every device allocation with NaN instead of
 * zeros, KILN_CUDA_POISON=uninit leaves it unfilled (runtime/cuda/exec.h
 * gpu_poison_mode), for runs under compute-sanitizer: a read before the
 * first write then shows in the results, or in initcheck's report. A launch or GEMM refused while a training step is captured into
 * a CUDA graph is not fatal: the step runs without a graph, saying why.
 */
#ifndef KILN_CUDA_H
#define KILN_CUDA_H

#include <stddef.h>

#include "codegen/plan.h"
#include "runtime/backend.h"

typedef struct {
    int tf32;        /* cuBLAS GEMMs on TF32 tensor cores (0: plain FP32) */
    int graphs;      /* replay the training step from a captured CUDA graph (1) */
    int quiet;       /* no compile line on stderr */
} CudaOptions;

void cuda_options_default(CudaOptions *o);

/* 1 when a CUDA device can be used; 0 with the reason in why ("no NVIDIA
 * driver (... needs driver 580 or newer)", "the NVIDIA driver supports CUDA
 * 12.8, older than ...", "no CUDA device", "this kiln was built without
 * CUDA"). */
int cuda_available(char *why, size_t len);

/* Open cuBLAS and NVRTC (dlopen, once) and resolve every function the
 * backend calls; cuda_backend_create does it first. Needs no GPU. Returns
 * 0, or 1 with the library or symbol that is missing in err. Builds without
 * the toolkit do not have it. */
int cuda_load_libraries(char *err, size_t errlen);

/* "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB" of the device kiln uses, into
 * buf; returns 0, or 1 when there is none. */
int cuda_device_name(char *buf, size_t len);

/* Free and total bytes of the device (cudaMemGetInfo): for kiln bench's
 * measured memory and auto's batch budget. Returns 0, or 1 when unknown. */
int cuda_memory_info(size_t *free_b, size_t *total_b);

/* The CUDA backend of plan p: emits the program, compiles (or loads from
 * the cache) its kernels, and hands them to gpu_backend_create. Returns
 * NULL with a message in err. */
Backend *cuda_backend_create(const Plan *p, const CudaOptions *o, char *err, size_t errlen);

#endif
