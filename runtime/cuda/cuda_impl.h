/* runtime/cuda/cuda_impl.h — what the two files of the CUDA device share
 * (private to runtime/cuda/, built only with the toolkit):
 *  - cuda.c: the libraries opened on first use, error reporting, the device
 *    table (memory, copies, launches, cuBLAS, graphs) and the backend;
 *  - nvrtc.c: the program's kernels, compiled by NVRTC or read from the
 *    on-disk cache, and loaded.
 *
 * cuBLAS and NVRTC are not linked: they are opened with dlopen by
 * cuda_load_libraries (cuda.h), because linking them would map and relocate
 * a few hundred MB of libraries at the start of every kiln command, GPU or
 * not (measured: 0.11 s and 249 MiB peak for `kiln plan` against 6 ms and
 * 12 MiB). The table below holds the libraries' own symbols (cublas_v2.h maps
 * cublasSgemm to cublasSgemm_v2, etc.); after it each is redefined to call
 * through it, so both files read as plain cuBLAS/NVRTC calls. Nothing here
 * may be called before cuda_load_libraries has returned 0.
 *
 * Errors: while creating, CK/CKB/CKN(call) write "file:line: call: message"
 * into the caller's err (errlen) and are 0 on failure; while running,
 * MUST/MUSTB(call) and cuda_die print it and end the process (cuda.h). */
#ifndef KILN_CUDA_IMPL_H
#define KILN_CUDA_IMPL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <nvrtc.h>
#include <stddef.h>

#include "codegen/emit.h"

/* ---- cuBLAS and NVRTC, loaded on first use -------------------------------------- */

#define LAZY_BLAS(X) X(cublasCreate_v2) X(cublasDestroy_v2) X(cublasSetStream_v2) \
    X(cublasSetMathMode) X(cublasSetWorkspace_v2) X(cublasSgemm_v2) X(cublasGetStatusName) \
    X(cublasGetStatusString)
#define LAZY_NVRTC(X) X(nvrtcCreateProgram) X(nvrtcCompileProgram) X(nvrtcDestroyProgram) \
    X(nvrtcGetErrorString) X(nvrtcGetNumSupportedArchs) X(nvrtcGetSupportedArchs) \
    X(nvrtcGetProgramLogSize) X(nvrtcGetProgramLog) X(nvrtcVersion) X(nvrtcGetPTXSize) \
    X(nvrtcGetCUBINSize) X(nvrtcGetPTX) X(nvrtcGetCUBIN)
typedef struct {
#define LAZY_FIELD(f) __typeof__(f) *p_##f;
    LAZY_BLAS(LAZY_FIELD)
    LAZY_NVRTC(LAZY_FIELD)
#undef LAZY_FIELD
    int loaded;
} CudaLazy;
extern CudaLazy kiln_cuda_lz;   /* defined and filled by cuda.c */
#define cublasCreate_v2 (*kiln_cuda_lz.p_cublasCreate_v2)
#define cublasDestroy_v2 (*kiln_cuda_lz.p_cublasDestroy_v2)
#define cublasSetStream_v2 (*kiln_cuda_lz.p_cublasSetStream_v2)
#define cublasSetMathMode (*kiln_cuda_lz.p_cublasSetMathMode)
#define cublasSetWorkspace_v2 (*kiln_cuda_lz.p_cublasSetWorkspace_v2)
#define cublasSgemm_v2 (*kiln_cuda_lz.p_cublasSgemm_v2)
#define cublasGetStatusName (*kiln_cuda_lz.p_cublasGetStatusName)
#define cublasGetStatusString (*kiln_cuda_lz.p_cublasGetStatusString)
#define nvrtcCreateProgram (*kiln_cuda_lz.p_nvrtcCreateProgram)
#define nvrtcCompileProgram (*kiln_cuda_lz.p_nvrtcCompileProgram)
#define nvrtcDestroyProgram (*kiln_cuda_lz.p_nvrtcDestroyProgram)
#define nvrtcGetErrorString (*kiln_cuda_lz.p_nvrtcGetErrorString)
#define nvrtcGetNumSupportedArchs (*kiln_cuda_lz.p_nvrtcGetNumSupportedArchs)
#define nvrtcGetSupportedArchs (*kiln_cuda_lz.p_nvrtcGetSupportedArchs)
#define nvrtcGetProgramLogSize (*kiln_cuda_lz.p_nvrtcGetProgramLogSize)
#define nvrtcGetProgramLog (*kiln_cuda_lz.p_nvrtcGetProgramLog)
#define nvrtcVersion (*kiln_cuda_lz.p_nvrtcVersion)
#define nvrtcGetPTXSize (*kiln_cuda_lz.p_nvrtcGetPTXSize)
#define nvrtcGetCUBINSize (*kiln_cuda_lz.p_nvrtcGetCUBINSize)
#define nvrtcGetPTX (*kiln_cuda_lz.p_nvrtcGetPTX)
#define nvrtcGetCUBIN (*kiln_cuda_lz.p_nvrtcGetCUBIN)

/* ---- error reporting (cuda.c) ---------------------------------------------------- */

/* f from "runtime/cuda/" on, for messages. */
const char *cuda_short_file(const char *f);
/* While creating: the message into err; 1 on success, 0 on failure. */
int cuda_ok(cudaError_t e, const char *call, const char *file, int line, char *err, size_t errlen);
int cuda_ok_blas(cublasStatus_t s, const char *call, const char *file, int line, char *err, size_t errlen);
int cuda_ok_nvrtc(nvrtcResult r, const char *call, const char *file, int line, char *err, size_t errlen);
/* While running: "kiln: file:line: message" on stderr, then exit(1). */
void cuda_die(const char *file, int line, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));

#define CK(call) cuda_ok((call), #call, __FILE__, __LINE__, err, errlen)
#define CKB(call) cuda_ok_blas((call), #call, __FILE__, __LINE__, err, errlen)
#define CKN(call) cuda_ok_nvrtc((call), #call, __FILE__, __LINE__, err, errlen)
#define MUST(call) do { cudaError_t e_ = (call); \
    if (e_ != cudaSuccess) cuda_die(__FILE__, __LINE__, "%s: %s (%s)", #call, cudaGetErrorString(e_), cudaGetErrorName(e_)); \
} while (0)
#define MUSTB(call) do { cublasStatus_t s_ = (call); \
    if (s_ != CUBLAS_STATUS_SUCCESS) cuda_die(__FILE__, __LINE__, "%s: %s (%s)", #call, cublasGetStatusString(s_), cublasGetStatusName(s_)); \
} while (0)

/* ---- the program's kernels (nvrtc.c) ------------------------------------------- */

typedef struct {
    cudaLibrary_t lib;          /* NULL when nothing is loaded */
    cudaKernel_t *fn;           /* fn[i]: the program's kernel i */
    char **name;                /* its name, for messages */
    int n;
} CudaKernels;

/* Compile pr for a device of compute capability cc (major*10+minor), or
 * take it from the cache, and load it into ks (zeroed). quiet: no line on
 * stderr saying what was compiled or loaded. Returns 0; 1 with a message in
 * err; 2 when a kernel cannot be launched with the blocks pr asks for.
 * On failure ks may hold a part: cuda_kernels_free it. */
int cuda_kernels_build(CudaKernels *ks, const Program *pr, int cc, int quiet, char *err, size_t errlen);
/* Unload the library and free ks (zeroed again). */
void cuda_kernels_free(CudaKernels *ks);

#endif
