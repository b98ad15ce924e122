/* tests/test_nvrtc.c — every kernel the emitter can make compiles with NVRTC,
 * without a GPU (NVRTC needs none), and the emitted source is deterministic.
 *
 * For each network (archs/tiny.arch at its own size; EfficientNet-Lite0,
 * EfficientNet-B0 and ResNet50V2 at 64x64) and each strategy's flags (both
 * phases of freeze-finetune), fused and unfused, with and without BN
 * folding, batch 8: emit the program, and gather the distinct kernels of all
 * these programs (a kernel's name carries a hash of its text, so one name is
 * one text) into one translation unit per network, the shared preamble once.
 * That unit is compiled for sm_80 and sm_90 with the options the runtime
 * uses; any error, and any warning (NVRTC has no -Werror: a non-empty log
 * fails), fails the test with the log.
 *
 * A kernel is cut out of a program's source as the text between the end of
 * the previous kernel (or of the preamble) and the end of its emulation
 * trampoline ("#ifdef KILN_EMULATE ... NAME__emu ... #endif"), which
 * codegen/emit_base.c appends after every kernel in kernel order.
 */
#include <check.h>
#include <nvrtc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen/emit.h"
#include "runtime/cuda/cuda.h"
#include "runtime/strategy.h"
#include "tiny_fixture.h"
#include "tests/suite_main.h"

typedef struct {
    char *s;
    size_t len, cap;
} Text;

static void text_add(Text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 1 << 16;
        while (cap < t->len + n + 1) cap *= 2;
        t->s = realloc(t->s, cap);
        ck_assert(t->s != NULL);
        t->cap = cap;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = 0;
}

/* The distinct kernels of one network's programs, as one translation unit. */
typedef struct {
    Text tu;
    char **names;
    int n, cap;
    int programs;
} Unit;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int unit_has(const Unit *u, const char *name)
{
    for (int i = 0; i < u->n; i++)
        if (!strcmp(u->names[i], name)) return 1;
    return 0;
}

/* Where the preamble ends in a program's source. */
static size_t preamble_end(const Program *pr)
{
    const char *file = emit_template_file("preamble");
    ck_assert_msg(file != NULL, "no preamble template");
    const char *body = strchr(file, '\n');   /* after the "//@ preamble" line */
    ck_assert(body != NULL);
    body++;
    const char *next = strstr(body, "\n//@ ");
    size_t len = next ? (size_t)(next - body) + 1 : strlen(body);
    char *copy = strndup(body, len);
    const char *at = strstr(pr->source, copy);
    free(copy);
    ck_assert_msg(at != NULL, "the preamble is not in the source");
    return (size_t)(at - pr->source) + len;
}

/* Add pr's kernels that u does not have yet (the preamble with the first). */
static void unit_add_program(Unit *u, const Program *pr)
{
    size_t pos = preamble_end(pr);
    if (!u->tu.len) text_add(&u->tu, pr->source, pos);
    for (int k = 0; k < pr->n_kernels; k++) {
        const char *name = pr->kernels[k].name;
        char tramp[600];
        snprintf(tramp, sizeof tramp, "KILN_EMU_EXPORT void %s__emu(", name);
        const char *t = strstr(pr->source + pos, tramp);
        ck_assert_msg(t != NULL, "kernel %s: no trampoline after offset %zu", name, pos);
        const char *end = strstr(t, "#endif\n");
        ck_assert_msg(end != NULL, "kernel %s: trampoline not closed", name);
        size_t stop = (size_t)(end - pr->source) + strlen("#endif\n");
        if (!unit_has(u, name)) {
            text_add(&u->tu, pr->source + pos, stop - pos);
            if (u->n == u->cap) {
                u->cap = u->cap ? 2 * u->cap : 64;
                u->names = realloc(u->names, sizeof *u->names * (size_t)u->cap);
                ck_assert(u->names != NULL);
            }
            u->names[u->n++] = strdup(name);
        }
        pos = stop;
    }
    u->programs++;
}

static void unit_free(Unit *u)
{
    for (int i = 0; i < u->n; i++) free(u->names[i]);
    free(u->names);
    free(u->tu.s);
    memset(u, 0, sizeof *u);
}

static void emit_plan(Program *pr, const Graph *g, int fuse, int fold, const char *what)
{
    char err[512];
    Plan p;
    PlanOptions po = {.batch = 8, .fuse = fuse, .fold = fold};
    ck_assert_msg(plan_build(&p, g, &po, err, sizeof err) == 0, "%s: %s", what, err);
    int rc = emit_program(pr, &p, NULL, err, sizeof err);
    plan_free(&p);
    ck_assert_msg(rc == 0, "%s: emit: %s", what, err);
}

/* Every strategy's flags (each phase) x fused/unfused x folded/not. */
static void collect(Unit *u, const char *arch, int size)
{
    Graph g;
    arch_load(&g, arch, size);
    for (int s = 0; s < STRAT_COUNT; s++) {
        TrainSpec t;
        strategy_defaults(&t, (Strategy)s);
        for (int ph = 0; ph < strategy_phases(&t); ph++) {
            LrGroups gr;
            char err[512];
            ck_assert_msg(strategy_apply(&t, ph, &g, &gr, err, sizeof err) == 0, "%s", err);
            for (int v = 0; v < 4; v++) {
                char what[256];
                snprintf(what, sizeof what, "%s, %s phase %d, %s, %s", arch, strategy_name((Strategy)s), ph + 1,
                         v & 1 ? "unfused" : "fused", v & 2 ? "unfolded" : "folded");
                Program pr;
                emit_plan(&pr, &g, !(v & 1), !(v & 2), what);
                ck_assert_msg(pr.n_kernels > 0, "%s: no kernels", what);
                unit_add_program(u, &pr);
                emit_free(&pr);
            }
        }
    }
    graph_free(&g);
}

/* Compile the unit for arch; fails on an error or any log output. Returns
 * the seconds taken (wall in *wall, CPU of every thread as the result). */
static double compile_unit(const Unit *u, const char *net, const char *arch, double *wall)
{
    char opt_arch[64];
    snprintf(opt_arch, sizeof opt_arch, "--gpu-architecture=%s", arch);
    /* the runtime's options (runtime/cuda/cuda.c) */
    const char *opts[] = {opt_arch, "-DKILN_NVRTC=1", "--generate-line-info", "--split-compile=0"};
    double t0 = now_s();
    clock_t c0 = clock();
    nvrtcProgram prog;
    ck_assert_int_eq(nvrtcCreateProgram(&prog, u->tu.s, "kiln.cu", 0, NULL, NULL), NVRTC_SUCCESS);
    nvrtcResult r = nvrtcCompileProgram(prog, (int)(sizeof opts / sizeof opts[0]), opts);
    size_t n = 0;
    ck_assert_int_eq(nvrtcGetProgramLogSize(prog, &n), NVRTC_SUCCESS);
    char *log = calloc(n + 1, 1);
    ck_assert(log != NULL);
    if (n) ck_assert_int_eq(nvrtcGetProgramLog(prog, log), NVRTC_SUCCESS);
    int quiet = 1;
    for (const char *c = log; *c; c++)
        if (*c != ' ' && *c != '\n' && *c != '\r' && *c != '\t') quiet = 0;
    size_t cubin = 0;
    if (r == NVRTC_SUCCESS) nvrtcGetCUBINSize(prog, &cubin);
    nvrtcDestroyProgram(&prog);
    if (r != NVRTC_SUCCESS || !quiet) {
        fprintf(stderr, "test_nvrtc: %s for %s: %s\n%s\n", net, arch, nvrtcGetErrorString(r), log);
        ck_abort_msg("%s for %s: %s (%zu bytes of log, on stderr): %.2000s", net, arch, nvrtcGetErrorString(r),
                     strlen(log), log);
    }
    free(log);
    ck_assert_msg(cubin > 0, "%s for %s: empty CUBIN", net, arch);
    *wall = now_s() - t0;
    return (double)(clock() - c0) / CLOCKS_PER_SEC;
}

static void check_arch(const char *net, int size)
{
    Unit u = {0};
    double t0 = now_s();
    collect(&u, net, size);
    double te = now_s() - t0;
    ck_assert_msg(u.n > 0, "%s: no kernels", net);
    double w80, w90;
    double c80 = compile_unit(&u, net, "sm_80", &w80);
    double c90 = compile_unit(&u, net, "sm_90", &w90);
    int major = 0, minor = 0;
    nvrtcVersion(&major, &minor);
    printf("test_nvrtc: %s: %d programs, %d distinct kernels, %zu bytes; emitted in %.2f s; NVRTC %d.%d: "
           "sm_80 %.1f s (CPU %.1f s), sm_90 %.1f s (CPU %.1f s), no warnings\n",
           net, u.programs, u.n, u.tu.len, te, major, minor, w80, c80, w90, c90);
    fflush(stdout);
    unit_free(&u);
}

START_TEST(compiles_tiny) { check_arch("tiny", 0); }
END_TEST

START_TEST(compiles_efficientnet_lite0) { check_arch("efficientnet_lite0", 64); }
END_TEST

START_TEST(compiles_efficientnet_b0) { check_arch("efficientnet_b0", 64); }
END_TEST

START_TEST(compiles_resnet50v2) { check_arch("resnet50v2", 64); }
END_TEST

/* The same plan, built twice from freshly loaded graphs, gives the same
 * bytes (the disk cache of compiled kernels is keyed by them). */
static void check_deterministic(const char *net, int size, int strategy, int fuse)
{
    Program a, b;
    for (int k = 0; k < 2; k++) {
        Graph g;
        arch_load(&g, net, size);
        TrainSpec t;
        LrGroups gr;
        char err[512];
        strategy_defaults(&t, (Strategy)strategy);
        ck_assert_msg(strategy_apply(&t, 0, &g, &gr, err, sizeof err) == 0, "%s", err);
        emit_plan(k ? &b : &a, &g, fuse, 1, net);
        graph_free(&g);
    }
    ck_assert_msg(a.source_len == b.source_len && !memcmp(a.source, b.source, a.source_len),
                  "%s: two emissions of one plan differ", net);
    ck_assert(a.hash == b.hash);
    ck_assert_int_eq(a.n_kernels, b.n_kernels);
    for (int k = 0; k < a.n_kernels; k++) ck_assert_str_eq(a.kernels[k].name, b.kernels[k].name);
    emit_free(&a);
    emit_free(&b);
}

/* The CUDA backend opens cuBLAS and NVRTC at run time: both open and every
 * function it calls resolves (twice: the second call reuses the table). */
START_TEST(libraries_load)
{
    char err[512];
    ck_assert_msg(cuda_load_libraries(err, sizeof err) == 0, "%s", err);
    ck_assert_msg(cuda_load_libraries(err, sizeof err) == 0, "second call: %s", err);
}
END_TEST

START_TEST(emission_is_deterministic)
{
    check_deterministic("tiny", 0, STRAT_NAIVE, 1);
    check_deterministic("tiny", 0, STRAT_FROZEN, 0);
    check_deterministic("efficientnet_lite0", 64, STRAT_NAIVE, 1);
    check_deterministic("resnet50v2", 64, STRAT_WARMUP, 0);
}
END_TEST

Suite *test_suite(void)
{
    Suite *s = suite_create("nvrtc");
    TCase *tc = tcase_create("nvrtc");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, libraries_load);
    tcase_add_test(tc, emission_is_deterministic);
    tcase_add_test(tc, compiles_tiny);
    tcase_add_test(tc, compiles_efficientnet_lite0);
    tcase_add_test(tc, compiles_efficientnet_b0);
    tcase_add_test(tc, compiles_resnet50v2);
    suite_add_tcase(s, tc);
    return s;
}
