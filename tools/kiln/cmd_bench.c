/* tools/kiln/cmd_bench.c — `kiln bench`: times the training step (forward,
 * backward, update) of one arch, fused and unfused side by side in one run,
 * on random data. Prints images/s of each, the ratio, achieved GFLOP/s (the
 * planned training FLOPs over the measured time), and the planner's predicted
 * bytes against the measured growth of peak resident memory.
 *
 * Fairness: the two plans alternate in rounds and the best round of each is
 * reported, so a slow moment of the machine hits both. Peak memory is taken
 * per plan from /proc/self/status (VmHWM) after resetting it through
 * /proc/self/clear_refs, relative to the resident size before the backend was
 * created. On the GPU (--device cuda) the measured bytes are the growth of
 * the device memory in use (cudaMemGetInfo) over the backend's creation and
 * one step: arenas, cuBLAS's workspace and the loaded kernels.
 *
 * Below the table, one line per plan gives its traffic floor
 * (plan_traffic_bytes: the fewest DRAM bytes a step can move) and, on the
 * GPU, the bandwidth that floor implies at the measured step time; the
 * table's rows are unchanged (tools/gpu-check reads them by column):
 *   traffic floor fused: 123.4 MB/step (123400000 bytes); 1234.5 GB/s achieved at 12.34 ms/step
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/device.h"
#include "runtime/params.h"
#include "runtime/train.h"
#include "tools/kiln/cmds.h"

/* A field of /proc/self/status in bytes, or 0 where unavailable. */
static size_t status_bytes(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0, n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') { kb = strtoull(line + n + 1, NULL, 10); break; }
    fclose(f);
    return kb * 1024;
}

static void reset_peak(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) { fputs("5", f); fclose(f); }
}

typedef struct {
    Plan plan;
    Backend *be;
    double best;          /* seconds per step, best round */
    size_t measured;      /* peak RSS growth */
} Config;

static void bench_usage(FILE *f)
{
    fprintf(f, "usage: kiln bench --arch FILE [--batch N] [--steps N] [--rounds N] [--input-size HxW]\n"
               "                  [--freeze-until LAYER] [--bn train|infer|frozen] [--no-fold]\n"
               "                  [--device cpu|cuda|auto] [--no-graph] [--tf32]\n");
}

/* Memory in use now: resident bytes (cpu) or device bytes in use (cuda). */
static size_t used_bytes(int gpu)
{
    if (!gpu) return status_bytes("VmRSS");
    size_t f, t;
    return cuda_memory_info(&f, &t) ? 0 : t - f;
}

/* `steps` training steps on the same batch, uploaded before each as the
 * training loop does: while the previous step runs where the backend can
 * launch a step and wait for it apart (the GPU), before it otherwise. */
static void run_steps(Backend *be, const float *x, const int32_t *y, int B, const StepConfig *sc, int steps)
{
    double loss;
    int correct;
    be->upload(be, x, y, B);
    for (int s = 0; s < steps; s++) {
        if (be->train_launch && be->train_wait) {
            be->train_launch(be, B, sc);
            if (s + 1 < steps) be->upload(be, x, y, B);
            be->train_wait(be, &loss, &correct);
        } else {
            if (s) be->upload(be, x, y, B);
            be->train_step(be, B, sc, &loss, &correct);
        }
    }
}

/* What the command line asked. */
typedef struct {
    ModelOptions m;
    int steps, rounds;
    const char *device;   /* resolved: "cpu" or "cuda" */
    CudaOptions co;
} BenchArgs;

/* Parse argv into a. Returns -1 to go on, else the exit code (0 after
 * --help; 2 on bad usage, message printed). */
static int bench_args(int argc, char **argv, BenchArgs *b)
{
    model_options_default(&b->m);
    b->steps = 10;
    b->rounds = 3;
    b->device = device_default();
    cuda_options_default(&b->co);
    for (int i = 1; i < argc; i++) {
        int r = model_option(&b->m, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) { bench_usage(stdout); return 0; }
        if (!strcmp(a, "--steps") && v && !parse_int_arg(v, &b->steps) && b->steps > 0) { i++; continue; }
        if (!strcmp(a, "--rounds") && v && !parse_int_arg(v, &b->rounds) && b->rounds > 0) { i++; continue; }
        if (!strcmp(a, "--device") && v && device_valid(v)) { b->device = v; i++; continue; }
        if (!strcmp(a, "--no-graph")) { b->co.graphs = 0; continue; }
        if (!strcmp(a, "--tf32")) { b->co.tf32 = 1; continue; }
        fprintf(stderr, "kiln bench: unknown option or bad value '%s'\n", a);
        bench_usage(stderr);
        return 2;
    }
    char err[512];
    if (device_resolve(b->device, stdout, &b->device, err, sizeof err)) {
        fprintf(stderr, "kiln bench: %s\n", err);
        return 2;
    }
    return -1;
}

/* The random batch both plans train on. */
typedef struct {
    float *x;             /* (B, H, W, C) uniform in [-1, 1) */
    int32_t *y;           /* (B) labels i % K */
    int B;
    StepConfig sc;
    float lr;
} Batch;

/* One throwaway step of a fused plan, so that OpenMP's threads and the
 * BLAS's buffers exist before memory is measured for either plan. Returns
 * 0, or 1 when g cannot be planned (message printed). */
static int warm_up(const Graph *g, const BenchArgs *b, const Batch *bt)
{
    char err[512];
    double loss;
    int correct;
    PlanOptions wo = {.batch = bt->B, .fuse = 1, .fold = b->m.fold};
    Plan wp;
    if (plan_build(&wp, g, &wo, err, sizeof err)) { fprintf(stderr, "kiln bench: %s\n", err); return 1; }
    Backend *wb = backend_create(b->device, &wp, &b->co, err, sizeof err);
    if (wb) {
        wb->upload(wb, bt->x, bt->y, bt->B);
        wb->train_step(wb, bt->B, &bt->sc, &loss, &correct);
        wb->destroy(wb);
    }
    plan_free(&wp);
    return 0;
}

/* cf's plan (fused or not) and backend with initial parameters, after one
 * step; cf->measured: the memory that plan alone added (see the file
 * comment). Returns 0, or 1 (message printed; what was made is in cf). */
static int config_open(Config *cf, const Graph *g, int fuse, const BenchArgs *b, const Batch *bt)
{
    char err[512];
    double loss;
    int correct, gpu = !strcmp(b->device, "cuda");
    PlanOptions po = {.batch = bt->B, .fuse = fuse, .fold = b->m.fold};
    if (plan_build(&cf->plan, g, &po, err, sizeof err)) { fprintf(stderr, "kiln bench: %s\n", err); return 1; }
    reset_peak();
    size_t before = used_bytes(gpu);
    Backend *be = backend_create(b->device, &cf->plan, &b->co, err, sizeof err);
    if (!be) { fprintf(stderr, "kiln bench: %s\n", err); return 1; }
    float *params = calloc(cf->plan.param_floats + 1, sizeof(float));
    if (!params) { be->destroy(be); return 1; }
    params_init(&cf->plan, params, 1, 0, g->n_layers - 1);
    be->write_params(be, params);
    free(params);
    be->upload(be, bt->x, bt->y, bt->B);
    be->train_step(be, bt->B, &bt->sc, &loss, &correct);
    size_t peak = gpu ? used_bytes(gpu) : status_bytes("VmHWM");
    cf->measured = peak > before ? peak - before : 0;
    cf->be = be;
    cf->best = 1e30;
    return 0;
}

/* The two plans in alternating rounds of `steps` steps after a warm-up
 * step each; every plan keeps its best round (seconds per step). */
static void bench_rounds(Config cf[2], const BenchArgs *b, const Batch *bt)
{
    double loss;
    int correct;
    for (int r = 0; r < b->rounds; r++)
        for (int k = 0; k < 2; k++) {
            Backend *be = cf[k].be;
            be->upload(be, bt->x, bt->y, bt->B);
            be->train_step(be, bt->B, &bt->sc, &loss, &correct);     /* warm-up */
            double t0 = kiln_now();
            run_steps(be, bt->x, bt->y, bt->B, &bt->sc, b->steps);
            double t = (kiln_now() - t0) / b->steps;
            if (t < cf[k].best) cf[k].best = t;
        }
}

/* The table, the ratios and the traffic floors (see the file comment). */
static void bench_print(const Config cf[2], const Graph *g, const BenchArgs *b, int B)
{
    int gpu = !strcmp(b->device, "cuda");
    const Layer *in = &g->layers[0];
    if (gpu)
        printf("bench %s (%s): batch %d, input %dx%dx%d, %d steps x %d rounds (best round), backend %s, CUDA graphs %s, %s GEMMs\n",
               g->name, g->path, B, in->out.h, in->out.w, in->out.c, b->steps, b->rounds, cf[0].be->name,
               b->co.graphs ? "on" : "off", b->co.tf32 ? "TF32" : "FP32");
    else
        printf("bench %s (%s): batch %d, input %dx%dx%d, %d steps x %d rounds (best round), backend cpu, %d OpenMP threads\n",
               g->name, g->path, B, in->out.h, in->out.w, in->out.c, b->steps, b->rounds, omp_get_max_threads());
    printf("%-9s %10s %10s %10s %16s %16s\n", "plan", "img/s", "ms/step", "GFLOP/s", "predicted bytes", "measured bytes");
    for (int k = 0; k < 2; k++) {
        double flops = (double)cf[k].plan.train_flops * B;
        printf("%-9s %10.1f %10.2f %10.2f %16zu %16zu\n", k == 0 ? "fused" : "unfused", B / cf[k].best,
               1e3 * cf[k].best, flops / cf[k].best * 1e-9, plan_bytes(&cf[k].plan), cf[k].measured);
    }
    printf("fused/unfused speed ratio %.3f; fused/unfused predicted memory ratio %.3f\n",
           cf[1].best / cf[0].best, (double)plan_bytes(&cf[0].plan) / (double)plan_bytes(&cf[1].plan));
    for (int k = 0; k < 2; k++) {
        size_t fb = plan_traffic_bytes(&cf[k].plan);
        printf("traffic floor %s: %.1f MB/step (%zu bytes)", k == 0 ? "fused" : "unfused", fb * 1e-6, fb);
        if (gpu) printf("; %.1f GB/s achieved at %.2f ms/step", fb / cf[k].best * 1e-9, 1e3 * cf[k].best);
        printf("\n");
    }
    if (gpu)
        printf("(measured bytes: growth of the device memory in use over creation and one step: arenas, cuBLAS's\n"
               " workspace, the loaded kernels and the two input slots of the copy stream)\n");
    else
        printf("(measured bytes: growth of peak resident memory over one step, arenas plus the BLAS's and OpenMP's own buffers;\n"
               " pages never touched are not counted)\n");
}

/* `kiln bench`: parse, load the arch, a random batch, warm up, the fused
 * and the unfused plan, rounds, the table. */
int cmd_bench(int argc, char **argv)
{
    BenchArgs b;
    int rc = bench_args(argc, argv, &b);
    if (rc >= 0) return rc;
    Graph g;
    if ((rc = model_load(&b.m, &g))) return rc;
    int B = b.m.batch, K = g.layers[g.n_layers - 1].out.c;
    const Layer *in = &g.layers[0];
    size_t img = (size_t)in->out.h * in->out.w * in->out.c;
    Batch bt = {malloc(sizeof(float) * img * (size_t)B), malloc(sizeof(int32_t) * (size_t)B), B, {0}, 1e-3f};
    bt.sc = (StepConfig){&bt.lr, 1, 0.9f, 0.0f};
    Config cf[2];
    memset(cf, 0, sizeof cf);
    rc = 1;
    if (bt.x && bt.y) {
        uint64_t st = 7;
        for (size_t i = 0; i < img * (size_t)B; i++) bt.x[i] = (float)(2 * kiln_rand_uniform(&st) - 1);
        for (int i = 0; i < B; i++) bt.y[i] = i % K;
        if (!warm_up(&g, &b, &bt) && !config_open(&cf[0], &g, 1, &b, &bt) && !config_open(&cf[1], &g, 0, &b, &bt)) {
            bench_rounds(cf, &b, &bt);
            bench_print(cf, &g, &b, B);
            rc = 0;
        }
    }
    for (int k = 0; k < 2; k++) {
        if (cf[k].be) cf[k].be->destroy(cf[k].be);
        plan_free(&cf[k].plan);
    }
    free(bt.x); free(bt.y);
    graph_free(&g);
    return rc;
}
