/* runtime/cuda/nvrtc.c — an emitted program's kernels, compiled and loaded
 * (runtime/cuda/cuda_impl.h cuda_kernels_build): NVRTC compiles the
 * translation unit for the device's architecture (PTX for the newest one
 * NVRTC knows when the device is newer), the image is kept in the on-disk
 * cache (runtime/cuda/cuda.h says where and under which name) and loaded as
 * a cudaLibrary whose kernels are looked up by name.
 *
 * Invariants:
 *  - the cache file's name hashes everything the image depends on (source,
 *    options, NVRTC version, architecture): a hit is the image a compile
 *    would make; a file that does not load is compiled afresh and replaced;
 *  - a fresh image is cached (kiln_write_bytes: whole or not at all) only
 *    once it has loaded;
 *  - every kernel is loaded into the context here, not at its first launch
 *    (which may be inside a graph capture), and its launches' blocks are
 *    checked against its register use.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codegen/hash.h"
#include "runtime/cuda/cuda_impl.h"
#include "runtime/files.h"

/* ---- the kernel cache ---------------------------------------------------------------- */

/* Monotonic seconds, for the line saying how long a compile or load took. */
static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The cache folder into buf; 1 when there is none. */
static int cache_dir(char *buf, size_t n)
{
    const char *k = getenv("KILN_CACHE"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    int w;
    if (k && *k) w = snprintf(buf, n, "%s", k);
    else if (x && *x) w = snprintf(buf, n, "%s/kiln/kernels", x);
    else if (h && *h) w = snprintf(buf, n, "%s/.cache/kiln/kernels", h);
    else return 1;
    return w < 0 || (size_t)w >= n;
}

/* Whole file into a fresh buffer; NULL when absent or unreadable. */
static void *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            if (fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
            else { ((char *)buf)[n] = 0; *len = (size_t)n; }
        }
    }
    fclose(f);
    return buf;
}

/* KILN_DUMP_KERNELS=DIR: the source into DIR/kiln_<hash>.cu. */
static void dump_source(const Program *pr)
{
    const char *d = getenv("KILN_DUMP_KERNELS");
    if (!d || !*d) return;
    char path[1100];
    snprintf(path, sizeof path, "%s/kiln_%016llx.cu", d, (unsigned long long)pr->hash);
    if (kiln_mkdirs(d) || kiln_write_bytes(path, pr->source, pr->source_len))
        fprintf(stderr, "kiln: KILN_DUMP_KERNELS: cannot write %s: %s\n", path, strerror(errno));
    else fprintf(stderr, "kiln: kernel source written to %s\n", path);
}

/* ---- compilation ------------------------------------------------------------------------ */

typedef struct {
    char arch[32];        /* "sm_90", or "compute_90" (PTX for a newer device) */
    int ptx;
    const char *opt[8];
    int n_opt;
    char arch_opt[64];
} Target;

/* The target for a device of compute capability cc (major*10+minor). */
static int pick_target(Target *t, int cc, char *err, size_t errlen)
{
    int n = 0;
    if (!CKN(nvrtcGetNumSupportedArchs(&n))) return 1;
    int *a = malloc(sizeof(int) * (size_t)(n + 1));
    if (!a) { snprintf(err, errlen, "out of memory"); return 1; }
    if (!CKN(nvrtcGetSupportedArchs(a))) { free(a); return 1; }
    int best = -1, exact = 0;
    for (int i = 0; i < n; i++) {
        if (a[i] == cc) exact = 1;
        if (a[i] <= cc && a[i] > best) best = a[i];
    }
    int lo = n ? a[0] : 0;
    free(a);
    if (best < 0) {
        snprintf(err, errlen, "the device is sm_%d; this NVRTC compiles for sm_%d and newer", cc, lo);
        return 1;
    }
    t->ptx = !exact;
    snprintf(t->arch, sizeof t->arch, "%s_%d", exact ? "sm" : "compute", exact ? cc : best);
    snprintf(t->arch_opt, sizeof t->arch_opt, "--gpu-architecture=%s", t->arch);
    t->n_opt = 0;
    t->opt[t->n_opt++] = t->arch_opt;
    t->opt[t->n_opt++] = "-DKILN_NVRTC=1";
    t->opt[t->n_opt++] = "--generate-line-info";   /* source lines in compute-sanitizer reports */
    t->opt[t->n_opt++] = "--split-compile=0";      /* optimize on every core */
    return 0;
}

/* Compile pr for t into a fresh buffer (*image, *len). On failure the
 * message and the head of the log go to err, the whole log to stderr. */
static int nvrtc_compile(const Program *pr, const Target *t, void **image, size_t *len, char *err, size_t errlen)
{
    nvrtcProgram prog;
    if (!CKN(nvrtcCreateProgram(&prog, pr->source, "kiln.cu", 0, NULL, NULL))) return 1;
    nvrtcResult r = nvrtcCompileProgram(prog, t->n_opt, t->opt);
    size_t logn = 0;
    char *log = NULL;
    if (nvrtcGetProgramLogSize(prog, &logn) == NVRTC_SUCCESS && logn > 1 && (log = malloc(logn + 1)))
        if (nvrtcGetProgramLog(prog, log) != NVRTC_SUCCESS) log[0] = 0;
    int rc = 1;
    if (r != NVRTC_SUCCESS) {
        if (log) fprintf(stderr, "kiln: NVRTC log (%s):\n%s\n", t->arch, log);
        snprintf(err, errlen, "%s:%d: nvrtcCompileProgram for %s: %s%s%.600s%s", cuda_short_file(__FILE__), __LINE__,
                 t->arch, nvrtcGetErrorString(r), log ? "\n" : "", log ? log : "",
                 log && strlen(log) > 600 ? "\n[log continues on stderr]" : "");
        goto out;
    }
    if (log && log[0]) fprintf(stderr, "kiln: NVRTC warnings (%s):\n%s\n", t->arch, log);
    nvrtcResult (*size_fn)(nvrtcProgram, size_t *) = t->ptx ? nvrtcGetPTXSize : nvrtcGetCUBINSize;
    nvrtcResult (*get_fn)(nvrtcProgram, char *) = t->ptx ? nvrtcGetPTX : nvrtcGetCUBIN;
    if (!CKN(size_fn(prog, len))) goto out;
    if (!(*image = malloc(*len + 1))) { snprintf(err, errlen, "out of memory"); goto out; }
    if (!CKN(get_fn(prog, *image))) { free(*image); *image = NULL; goto out; }
    rc = 0;
out:
    free(log);
    nvrtcDestroyProgram(&prog);
    return rc;
}

/* The cache file of (pr, t) into path; 1 when there is no cache folder. */
static int cache_path(char *path, size_t n, const Program *pr, const Target *t, char *dir, size_t dn)
{
    if (cache_dir(dir, dn)) return 1;
    int maj = 0, min = 0;
    nvrtcVersion(&maj, &min);
    char head[128];
    snprintf(head, sizeof head, "kiln-kernels-v1|%016llx|%zu|nvrtc %d.%d|%s", (unsigned long long)pr->hash,
             pr->source_len, maj, min, t->arch);
    uint64_t h = kiln_hash(KILN_HASH_INIT, head, strlen(head));
    h = kiln_hash(h, pr->source, pr->source_len);
    for (int i = 0; i < t->n_opt; i++) h = kiln_hash(h, t->opt[i], strlen(t->opt[i]) + 1);
    return snprintf(path, n, "%s/%016llx.%s", dir, (unsigned long long)h, t->ptx ? "ptx" : "cubin") >= (int)n;
}

static void note_blocks(const LaunchList *l, int *mb)
{
    for (int i = 0; i < l->n; i++)
        if (l->v[i].kind == L_KERNEL && l->v[i].block > mb[l->v[i].kernel]) mb[l->v[i].kernel] = l->v[i].block;
}

/* Largest block each kernel is launched with. */
static void launch_blocks(const Program *pr, int *mb)
{
    for (int i = 0; i < pr->n_nodes; i++) {
        note_blocks(&pr->fwd_train[i], mb);
        note_blocks(&pr->fwd_eval[i], mb);
        note_blocks(&pr->bwd[i], mb);
        note_blocks(&pr->derive[i], mb);
    }
    note_blocks(&pr->loss_train, mb);
    note_blocks(&pr->loss_eval, mb);
    note_blocks(&pr->update, mb);
}

/* Load the image into a library and look up every kernel. Asking each
 * kernel's attributes loads it into the context now (with lazy loading it
 * would load at its first launch, which may be inside a graph capture) and
 * checks that its launches' blocks fit its register use. */
static int load_kernels(CudaKernels *ks, const Program *pr, const void *image, char *err, size_t errlen)
{
    if (!CK(cudaLibraryLoadData(&ks->lib, image, NULL, NULL, 0, NULL, NULL, 0))) { ks->lib = NULL; return 1; }
    ks->fn = calloc((size_t)pr->n_kernels + 1, sizeof *ks->fn);
    ks->name = calloc((size_t)pr->n_kernels + 1, sizeof *ks->name);
    if (!ks->fn || !ks->name) { snprintf(err, errlen, "out of memory"); return 1; }
    for (int k = 0; k < pr->n_kernels; k++) {
        if (!(ks->name[k] = strdup(pr->kernels[k].name))) { snprintf(err, errlen, "out of memory"); return 1; }
        ks->n = k + 1;
        if (!CK(cudaLibraryGetKernel(&ks->fn[k], ks->lib, pr->kernels[k].name))) return 1;
    }
    int *mb = calloc((size_t)pr->n_kernels + 1, sizeof *mb);
    if (!mb) { snprintf(err, errlen, "out of memory"); return 1; }
    launch_blocks(pr, mb);
    for (int k = 0; k < pr->n_kernels; k++) {
        struct cudaFuncAttributes fa;
        if (!CK(cudaFuncGetAttributes(&fa, (const void *)ks->fn[k]))) { free(mb); return 1; }
        if (mb[k] > fa.maxThreadsPerBlock) {
            snprintf(err, errlen, "kernel %s is launched with %d threads per block; with %d registers a thread "
                     "the device runs at most %d", pr->kernels[k].name, mb[k], fa.numRegs, fa.maxThreadsPerBlock);
            free(mb);
            return 2;
        }
    }
    free(mb);
    return 0;
}

void cuda_kernels_free(CudaKernels *ks)
{
    if (ks->lib) cudaLibraryUnload(ks->lib);
    ks->lib = NULL;
    for (int k = 0; k < ks->n; k++) free(ks->name[k]);
    free(ks->name); free(ks->fn);
    ks->name = NULL; ks->fn = NULL; ks->n = 0;
    cudaGetLastError();
}

/* A cached image that does not load is replaced; one that loads but cannot
 * be launched as planned (load_kernels 2) fails as a fresh one would. A
 * fresh image is cached only once it has loaded. */
int cuda_kernels_build(CudaKernels *ks, const Program *pr, int cc, int quiet, char *err, size_t errlen)
{
    Target t;
    if (pick_target(&t, cc, err, errlen)) return 1;
    dump_source(pr);
    char dir[1024], path[1200], note[1400];
    int have_cache = !cache_path(path, sizeof path, pr, &t, dir, sizeof dir);
    double t0 = now_s();
    size_t len = 0;
    void *image = have_cache ? read_all(path, &len) : NULL;
    if (image) {
        int rc = load_kernels(ks, pr, image, err, errlen);
        if (!rc && !quiet)
            fprintf(stderr, "kiln: %d kernels for %s from the cache (%s) in %.2f s\n", pr->n_kernels, t.arch,
                    path, now_s() - t0);
        free(image);
        if (rc != 1) return rc;
        /* a damaged or foreign file: compile afresh and replace it */
        fprintf(stderr, "kiln: ignoring the cached kernels %s: %s\n", path, err);
        image = NULL;
        cuda_kernels_free(ks);
        unlink(path);
    }
    if (nvrtc_compile(pr, &t, &image, &len, err, errlen)) return 1;
    double secs = now_s() - t0;
    int rc = load_kernels(ks, pr, image, err, errlen);
    if (rc) {
        free(image);
        return rc;
    }
    if (!have_cache) snprintf(note, sizeof note, "not cached: no $KILN_CACHE or $HOME");
    else if (!kiln_mkdirs(dir) && !kiln_write_bytes(path, image, len)) snprintf(note, sizeof note, "cached: %s", path);
    else snprintf(note, sizeof note, "not cached: %s: %s", path, strerror(errno));
    free(image);
    if (!quiet)
        fprintf(stderr, "kiln: compiled %d kernels for %s in %.1f s (%s)\n", pr->n_kernels, t.arch, secs, note);
    return 0;
}

