/* runtime/cuda/cuda.c — the CUDA device table (runtime/cuda/exec.h DevOps)
 * and the backend constructor (runtime/cuda/cuda.h): the emitted program's
 * kernels come compiled and loaded from runtime/cuda/nvrtc.c, cudart
 * launches them on one stream, cuBLAS runs the GEMMs on the same stream, and
 * the training step can be captured once into a CUDA graph and replayed.
 * Also here: opening cuBLAS and NVRTC, and the error reporting both files
 * use (runtime/cuda/cuda_impl.h).
 *
 * The driver is reached only through cudart (linked statically), never by
 * linking libcuda: a machine without a driver runs this binary and gets
 * "no NVIDIA driver" (or one too old, with the release it needs) from
 * cuda_available().
 *
 * Invariants:
 *  - every operation goes to c->stream, in order; d2h waits for the stream;
 *    the one exception is h2d_async, on c->copy, which c->stream waits for
 *    only from a copy_fence on (an event), so a batch is copied while the
 *    previous step computes;
 *  - h2d copies through a pinned staging ring: a region is reused only
 *    after the copy out of it is done (an event per wrap), so the caller's
 *    source may change as soon as h2d returns;
 *  - cuBLAS runs on a fixed workspace (cublasSetWorkspace), so GEMMs never
 *    allocate and may be captured into a graph;
 *  - during a capture nothing runs: launches and GEMMs are recorded. One
 *    that the capture refuses (an invalidated capture shows first there,
 *    not at EndCapture) is not fatal: it returns 1, the capture is marked
 *    broken, graph_end fails saying why, and the executor runs the step
 *    directly; only outside a capture does a failed launch end the process;
 *  - KILN_CUDA_POISON (gpu_poison_mode): allocations are filled with NaN
 *    (=1), or not at all (=uninit), instead of zeros, so that
 *    compute-sanitizer's runs (tools/gpu-check) see a read before the first
 *    write: as NaN in the results, or as initcheck's report.
 */
#include "runtime/cuda/cuda.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dlfcn.h>

#include "codegen/emit.h"
#include "runtime/cuda/cuda_impl.h"
#include "runtime/cuda/exec.h"

/* ---- cuBLAS and NVRTC, loaded on first use (cuda_impl.h) -----------------------------
 * Opened with dlopen when a CUDA backend is created: by soname first, then
 * at the path the build found (KILN_CUBLAS_LIB / KILN_NVRTC_LIB, from CMake). */
CudaLazy kiln_cuda_lz;

/* dlopen by soname, then by path; NULL with both reasons in err. */
static void *open_lib(const char *what, const char *soname, const char *path, char *err, size_t errlen)
{
    void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (h) return h;
    char first[512];
    snprintf(first, sizeof first, "%s", dlerror());
    if ((h = dlopen(path, RTLD_NOW | RTLD_LOCAL))) return h;
    snprintf(err, errlen, "cannot load %s: %s; %s", what, first, dlerror());
    return NULL;
}

int cuda_load_libraries(char *err, size_t errlen)
{
    if (kiln_cuda_lz.loaded) return 0;
    void *hb = open_lib("cuBLAS", KILN_CUBLAS_SONAME, KILN_CUBLAS_LIB, err, errlen);
    if (!hb) return 1;
    void *hn = open_lib("NVRTC", KILN_NVRTC_SONAME, KILN_NVRTC_LIB, err, errlen);
    if (!hn) { dlclose(hb); return 1; }
/* (pasting and stringizing keep the names from expanding to the table) */
#define LAZY_SYM(h, field, name) \
    if (!(*(void **)&kiln_cuda_lz.field = dlsym(h, name))) { \
        snprintf(err, errlen, "no symbol %s in %s", name, h == hb ? KILN_CUBLAS_SONAME : KILN_NVRTC_SONAME); \
        memset(&kiln_cuda_lz, 0, sizeof kiln_cuda_lz); dlclose(hb); dlclose(hn); return 1; }
#define LAZY_SYM_B(f) LAZY_SYM(hb, p_##f, #f)
#define LAZY_SYM_N(f) LAZY_SYM(hn, p_##f, #f)
    LAZY_BLAS(LAZY_SYM_B)
    LAZY_NVRTC(LAZY_SYM_N)
    kiln_cuda_lz.loaded = 1;
    return 0;
}

#define BLAS_WORKSPACE ((size_t)32 << 20)   /* what cuBLAS asks for on Hopper */
#define STAGING_MIN ((size_t)16 << 20)
#define STAGING_DIRECT ((size_t)256 << 20)  /* larger copies go straight from pageable memory */

/* ---- error reporting (cuda_impl.h) ------------------------------------------------- */

const char *cuda_short_file(const char *f)
{
    const char *s = strstr(f, "runtime/cuda/");
    return s ? s : f;
}

int cuda_ok(cudaError_t e, const char *call, const char *file, int line, char *err, size_t errlen)
{
    if (e == cudaSuccess) return 1;
    snprintf(err, errlen, "%s:%d: %s: %s (%s)", cuda_short_file(file), line, call, cudaGetErrorString(e),
             cudaGetErrorName(e));
    return 0;
}

int cuda_ok_blas(cublasStatus_t s, const char *call, const char *file, int line, char *err, size_t errlen)
{
    if (s == CUBLAS_STATUS_SUCCESS) return 1;
    snprintf(err, errlen, "%s:%d: %s: %s (%s)", cuda_short_file(file), line, call, cublasGetStatusString(s),
             cublasGetStatusName(s));
    return 0;
}

int cuda_ok_nvrtc(nvrtcResult r, const char *call, const char *file, int line, char *err, size_t errlen)
{
    if (r == NVRTC_SUCCESS) return 1;
    snprintf(err, errlen, "%s:%d: %s: %s", cuda_short_file(file), line, call, nvrtcGetErrorString(r));
    return 0;
}

void cuda_die(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kiln: %s:%d: ", cuda_short_file(file), line);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* ---- availability ------------------------------------------------------------------ */

void cuda_options_default(CudaOptions *o)
{
    o->tf32 = 0;
    o->graphs = 1;
    o->quiet = 0;
}

int cuda_available(char *why, size_t len)
{
    static int known = -1;
    static char reason[256];
    if (known < 0) {
        int n = 0;
        cudaError_t e = cudaGetDeviceCount(&n);
        if (e == cudaErrorInsufficientDriver) {
            /* the static runtime needs a driver of its own CUDA release or newer */
            const char *need = CUDART_VERSION >= 13000 ? "580" : CUDART_VERSION >= 12000 ? "525" : "?";
            int dv = 0;
            if (cudaDriverGetVersion(&dv) != cudaSuccess) dv = 0;
            cudaGetLastError();
            if (dv > 0)
                snprintf(reason, sizeof reason, "the NVIDIA driver supports CUDA %d.%d, older than this kiln's "
                         "CUDA %d.%d runtime: it needs driver %s or newer", dv / 1000, dv % 1000 / 10,
                         CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10, need);
            else
                snprintf(reason, sizeof reason, "no NVIDIA driver (this kiln's CUDA %d.%d runtime needs driver %s "
                         "or newer)", CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10, need);
        }
        else if (e == cudaErrorNoDevice || (e == cudaSuccess && n == 0))
            snprintf(reason, sizeof reason, "no CUDA device");
        else if (e != cudaSuccess)
            snprintf(reason, sizeof reason, "cudaGetDeviceCount: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
        known = e == cudaSuccess && n > 0;
    }
    if (!known && why) snprintf(why, len, "%s", reason);
    return known;
}

int cuda_device_name(char *buf, size_t len)
{
    struct cudaDeviceProp prop;
    if (!cuda_available(NULL, 0) || cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
        snprintf(buf, len, "none");
        return 1;
    }
    snprintf(buf, len, "%s, sm_%d%d, %.1f GiB", prop.name, prop.major, prop.minor,
             (double)prop.totalGlobalMem / (1u << 30));
    return 0;
}

int cuda_memory_info(size_t *free_b, size_t *total_b)
{
    *free_b = *total_b = 0;
    if (!cuda_available(NULL, 0) || cudaMemGetInfo(free_b, total_b) != cudaSuccess) {
        cudaGetLastError();
        return 1;
    }
    return 0;
}

/* ---- the device table -------------------------------------------------------------- */

typedef struct { int key; cudaGraphExec_t exec; } GraphSlot;

typedef struct {
    cudaStream_t stream;
    cudaStream_t copy;              /* uploads of the next batch */
    cudaEvent_t copied;             /* recorded on copy by copy_fence */
    cublasHandle_t blas;
    void *blas_ws;
    CudaKernels k;                  /* the program's kernels (nvrtc.c) */
    unsigned char *staging;         /* pinned, a ring of h2d sources */
    size_t staging_cap, staging_off;
    cudaEvent_t staged;             /* after the last copy out of staging */
    int staging_pending;
    int no_pinned;                  /* page-locked memory was refused: stop asking */
    GraphSlot *graphs; int n_graphs;
    int capturing;
    int capture_broken;             /* a launch or GEMM of this capture was refused */
    char capture_error[320];        /* the first refusal, for graph_end's message */
    int sync_each;                  /* KILN_CUDA_SYNC=1: wait after every launch and GEMM */
    int poison;                     /* gpu_poison_mode(): 1 NaN-fill allocations, 2 no fill */
} Cuda;

/* A launch or GEMM that failed during a capture: the capture is unusable
 * (CUDA invalidated it, or its graph would lack the operation) but the
 * context is not. The first reason is kept for graph_end. Returns 1. */
static int capture_refused(Cuda *c, const char *what, const char *why, const char *name)
{
    cudaGetLastError();   /* not sticky: clear it */
    if (!c->capture_broken)
        snprintf(c->capture_error, sizeof c->capture_error, "%s: %s (%s)", what, why, name);
    c->capture_broken = 1;
    return 1;
}

/* KILN_CUDA_SYNC=1: a fault is reported at the launch that made it (kernel
 * faults are otherwise seen at the next wait, without a name). */
static void sync_after(Cuda *c, const char *what)
{
    if (!c->sync_each || c->capturing) return;
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess)
        cuda_die(__FILE__, __LINE__, "after %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

static void *dev_alloc(void *ctx, size_t bytes)
{
    Cuda *c = ctx;
    void *p = NULL;
    if (c->capturing) cuda_die(__FILE__, __LINE__, "an allocation inside a CUDA graph capture");
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();   /* not sticky: clear it */
        return NULL;
    }
    MUST(e);
    if (c->poison != 2) MUST(cudaMemsetAsync(p, c->poison ? 0xff : 0, bytes, c->stream));   /* 0xffffffff: NaN */
    return p;
}

static void dev_release(void *ctx, void *ptr)
{
    Cuda *c = ctx;
    if (c->capturing) cuda_die(__FILE__, __LINE__, "a release inside a CUDA graph capture");
    if (ptr) MUST(cudaFree(ptr));
}

/* A staging region of `bytes`, or NULL when the copy should go direct. */
static unsigned char *staging_take(Cuda *c, size_t bytes)
{
    if (bytes > STAGING_DIRECT || c->no_pinned) return NULL;
    if (c->staging_off + bytes > c->staging_cap) {
        /* wrap: everything copied out of the ring so far must be done */
        if (c->staging_pending) MUST(cudaEventSynchronize(c->staged));
        c->staging_pending = 0;
        c->staging_off = 0;
        if (bytes > c->staging_cap) {
            size_t cap = bytes > STAGING_MIN / 2 ? 2 * bytes : STAGING_MIN;
            if (c->staging) MUST(cudaFreeHost(c->staging));
            c->staging = NULL;
            c->staging_cap = 0;
            void *p = NULL;
            if (cudaHostAlloc(&p, cap, cudaHostAllocDefault) != cudaSuccess) {
                cudaGetLastError();
                c->no_pinned = 1;
                return NULL;   /* no pinned memory: copy from pageable memory */
            }
            c->staging = p;
            c->staging_cap = cap;
        }
    }
    unsigned char *r = c->staging + c->staging_off;
    c->staging_off += (bytes + 255) & ~(size_t)255;
    return r;
}

static void dev_h2d(void *ctx, void *dst, const void *src, size_t bytes)
{
    Cuda *c = ctx;
    if (!bytes) return;
    if (c->capturing) cuda_die(__FILE__, __LINE__, "a host-to-device copy inside a CUDA graph capture");
    unsigned char *s = staging_take(c, bytes);
    if (!s) {
        MUST(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
        return;
    }
    memcpy(s, src, bytes);
    MUST(cudaMemcpyAsync(dst, s, bytes, cudaMemcpyHostToDevice, c->stream));
    MUST(cudaEventRecord(c->staged, c->stream));
    c->staging_pending = 1;
}

static void dev_d2h(void *ctx, void *dst, const void *src, size_t bytes)
{
    Cuda *c = ctx;
    if (!bytes) return;
    if (c->capturing) cuda_die(__FILE__, __LINE__, "a device-to-host copy inside a CUDA graph capture");
    MUST(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    MUST(cudaStreamSynchronize(c->stream));
}

static int dev_launch(void *ctx, int kernel, unsigned gx, unsigned gy, unsigned block, void **args)
{
    Cuda *c = ctx;
    if (kernel < 0 || kernel >= c->k.n) cuda_die(__FILE__, __LINE__, "launch of kernel %d of %d", kernel, c->k.n);
    dim3 grid = {gx, gy, 1}, blk = {block, 1, 1};
    cudaError_t e = cudaLaunchKernel((const void *)c->k.fn[kernel], grid, blk, args, 0, c->stream);
    if (e != cudaSuccess && c->capturing)
        return capture_refused(c, "cudaLaunchKernel", cudaGetErrorString(e), c->k.name[kernel]);
    if (e != cudaSuccess)
        cuda_die(__FILE__, __LINE__, "cudaLaunchKernel(%s, grid %ux%u, block %u): %s (%s)", c->k.name[kernel], gx, gy,
            block, cudaGetErrorString(e), cudaGetErrorName(e));
    sync_after(c, c->k.name[kernel]);
    return 0;
}

/* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the
 * operands swap and so do m and n; each matrix's memory, read column-major,
 * is its transpose, so the transpose flags stay with their operand. */
static int dev_gemm(void *ctx, int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc)
{
    Cuda *c = ctx;
    if (m <= 0 || n <= 0) return 0;
    cublasStatus_t s = cublasSgemm(c->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                                   &alpha, B, ldb, A, lda, &beta, C, ldc);
    if (s != CUBLAS_STATUS_SUCCESS && c->capturing)
        return capture_refused(c, "cublasSgemm", cublasGetStatusString(s), cublasGetStatusName(s));
    MUSTB(s);
    sync_after(c, "cublasSgemm");
    return 0;
}

static GraphSlot *slot_find(Cuda *c, int key)
{
    for (int i = 0; i < c->n_graphs; i++)
        if (c->graphs[i].key == key) return &c->graphs[i];
    return NULL;
}

static int dev_graph_begin(void *ctx, int key)
{
    Cuda *c = ctx;
    (void)key;
    if (c->capturing) return 1;
    /* relaxed: cuBLAS and lazily loaded kernels may do their one-time set-up
     * (attributes, module loads) during the first capture */
    if (cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed) != cudaSuccess) {
        cudaGetLastError();
        return 1;
    }
    c->capturing = 1;
    c->capture_broken = 0;
    return 0;
}

/* A capture that failed (an operation the capture could not take, at a
 * launch, a GEMM, EndCapture or Instantiate: its error invalidates the
 * capture, not the context) is reported once and the executor runs the
 * step directly from then on. */
static int dev_graph_end(void *ctx, int key)
{
    Cuda *c = ctx;
    if (!c->capturing) return 1;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    c->capturing = 0;
    if (c->capture_broken) {
        if (g) cudaGraphDestroy(g);
        cudaGetLastError();
        fprintf(stderr, "kiln: CUDA graph capture failed (%s); running the step without a graph\n",
                c->capture_error);
        return 1;
    }
    cudaGraphExec_t x;
    if (e == cudaSuccess) {
        e = cudaGraphInstantiate(&x, g, 0);
        cudaGraphDestroy(g);
    }
    if (e != cudaSuccess) {
        cudaGetLastError();
        fprintf(stderr, "kiln: CUDA graph capture failed (%s: %s); running the step without a graph\n",
                cudaGetErrorName(e), cudaGetErrorString(e));
        return 1;
    }
    GraphSlot *s = slot_find(c, key);
    if (s) {
        MUST(cudaGraphExecDestroy(s->exec));
        s->exec = x;
        return 0;
    }
    GraphSlot *v = realloc(c->graphs, sizeof *v * (size_t)(c->n_graphs + 1));
    if (!v) cuda_die(__FILE__, __LINE__, "out of memory");
    c->graphs = v;
    c->graphs[c->n_graphs++] = (GraphSlot){key, x};
    return 0;
}

static int dev_graph_run(void *ctx, int key)
{
    Cuda *c = ctx;
    GraphSlot *s = slot_find(c, key);
    if (!s) return 1;
    MUST(cudaGraphLaunch(s->exec, c->stream));
    sync_after(c, "the training step's graph");
    return 0;
}

static void *dev_host_alloc(void *ctx, size_t bytes)
{
    (void)ctx;
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void dev_host_free(void *ctx, void *ptr)
{
    (void)ctx;
    if (ptr) MUST(cudaFreeHost(ptr));
}

static void dev_h2d_async(void *ctx, void *dst, const void *src, size_t bytes)
{
    Cuda *c = ctx;
    if (!bytes) return;
    MUST(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->copy));
}

static void dev_copy_fence(void *ctx)
{
    Cuda *c = ctx;
    if (c->capturing) cuda_die(__FILE__, __LINE__, "a copy fence inside a CUDA graph capture");
    MUST(cudaEventRecord(c->copied, c->copy));
    MUST(cudaStreamWaitEvent(c->stream, c->copied, 0));
}

static void dev_copy_sync(void *ctx)
{
    MUST(cudaStreamSynchronize(((Cuda *)ctx)->copy));
}

static void dev_d2d(void *ctx, void *dst, const void *src, size_t bytes)
{
    Cuda *c = ctx;
    if (!bytes) return;
    if (c->capturing) cuda_die(__FILE__, __LINE__, "a device copy inside a CUDA graph capture");
    MUST(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
    sync_after(c, "a device-to-device copy");
}

static int dev_mem_info(void *ctx, size_t *free_b, size_t *total_b)
{
    (void)ctx;
    if (cudaMemGetInfo(free_b, total_b) != cudaSuccess) {
        cudaGetLastError();
        return 1;
    }
    return 0;
}

static void dev_destroy(void *ctx)
{
    Cuda *c = ctx;
    if (!c) return;
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->copy) cudaStreamSynchronize(c->copy);
    for (int i = 0; i < c->n_graphs; i++) cudaGraphExecDestroy(c->graphs[i].exec);
    free(c->graphs);
    if (c->blas) cublasDestroy(c->blas);
    if (c->blas_ws) cudaFree(c->blas_ws);
    cuda_kernels_free(&c->k);
    if (c->staging) cudaFreeHost(c->staging);
    if (c->staged) cudaEventDestroy(c->staged);
    if (c->stream) cudaStreamDestroy(c->stream);
    if (c->copied) cudaEventDestroy(c->copied);
    if (c->copy) cudaStreamDestroy(c->copy);
    free(c);
}

/* ---- the backend ------------------------------------------------------------------------ */

static int open_device(Cuda *c, const CudaOptions *o, int *cc, char *err, size_t errlen)
{
    int major = 0, minor = 0;
    if (!CK(cudaSetDevice(0))) return 1;
    if (!CK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0))) return 1;
    if (!CK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0))) return 1;
    *cc = 10 * major + minor;
    if (!CK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking))) return 1;
    if (!CK(cudaEventCreateWithFlags(&c->staged, cudaEventDisableTiming))) return 1;
    if (!CK(cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking))) return 1;
    if (!CK(cudaEventCreateWithFlags(&c->copied, cudaEventDisableTiming))) return 1;
    if (!CKB(cublasCreate(&c->blas))) { c->blas = NULL; return 1; }
    if (!CKB(cublasSetStream(c->blas, c->stream))) return 1;
    if (!CKB(cublasSetMathMode(c->blas, o->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH))) return 1;
    if (!CK(cudaMalloc(&c->blas_ws, BLAS_WORKSPACE))) { c->blas_ws = NULL; return 1; }
    if (!CKB(cublasSetWorkspace(c->blas, c->blas_ws, BLAS_WORKSPACE))) return 1;
    return 0;
}

Backend *cuda_backend_create(const Plan *p, const CudaOptions *o, char *err, size_t errlen)
{
    char why[256];
    if (!cuda_available(why, sizeof why)) {
        snprintf(err, errlen, "%s", why);
        return NULL;
    }
    if (cuda_load_libraries(err, errlen)) return NULL;
    CudaOptions def;
    if (!o) { cuda_options_default(&def); o = &def; }
    Cuda *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *sy = getenv("KILN_CUDA_SYNC");
    c->sync_each = sy && *sy && strcmp(sy, "0");
    c->poison = gpu_poison_mode();
    Program pr;
    EmitOptions eo = {0};
    char emsg[512];
    if (emit_program(&pr, p, &eo, emsg, sizeof emsg)) {
        snprintf(err, errlen, "emitting the CUDA program: %s", emsg);
        free(c);
        return NULL;
    }
    int cc = 0;
    if (open_device(c, o, &cc, err, errlen) || cuda_kernels_build(&c->k, &pr, cc, o->quiet, err, errlen)) {
        dev_destroy(c);
        emit_free(&pr);
        return NULL;
    }
    DevOps ops = {
        .ctx = c, .alloc = dev_alloc, .release = dev_release, .h2d = dev_h2d, .d2h = dev_d2h,
        .launch = dev_launch, .gemm = dev_gemm, .graph_begin = dev_graph_begin, .graph_end = dev_graph_end,
        .graph_run = dev_graph_run, .mem_info = dev_mem_info, .destroy = dev_destroy,
        .host_alloc = dev_host_alloc, .host_free = dev_host_free, .h2d_async = dev_h2d_async,
        .copy_fence = dev_copy_fence, .copy_sync = dev_copy_sync, .d2d = dev_d2d,
    };
    /* from here the executor owns the program and the device (also on failure) */
    /* KILN_CUDA_SYNC names the faulting kernel only when kernels are launched
     * one by one: no graphs then */
    return gpu_backend_create(p, &pr, &ops, o->graphs && !c->sync_each, err, errlen);
}
