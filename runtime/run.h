/* runtime/run.h — one training run from start to end: arch, data, strategy
 * flags per phase, plan, backend, weights, feature cache, the loop, test
 * accuracy, and the run folder:
 *
 *   runs/NAME/config.json    the resolved configuration, as the run began
 *   runs/NAME/resumes.json   one entry per --resume: where it continued and
 *                            the options a resume may change (epochs...)
 *   runs/NAME/metrics.csv    epoch, phase, lr, loss, train_acc, val_acc, train_img_per_s
 *                            (images/s of the epoch's training steps, validation
 *                            apart), elapsed_s (the phase's train time so far)
 *   runs/NAME/summary.json   results (diverged runs included, marked)
 *   runs/NAME/plan.txt       the static plan, as `kiln plan` prints it
 *   runs/NAME/best.safetensors  the best weights (kiln eval, --weights)
 *   runs/NAME/last.ckpt      the state to continue from (--resume)
 *
 * `kiln train` is one call; `kiln compare` is many, sharing the loaded data
 * set and the frozen-prefix feature cache through RunShared.
 */
#ifndef KILN_RUN_H
#define KILN_RUN_H

#include "runtime/cuda/cuda.h"
#include "runtime/strategy.h"
#include "runtime/train.h"

/* The longest run folder path taken (a longer one is refused, exit 2), so
 * that every file path inside it fits the 1024-byte path buffers. */
#define KILN_RUN_DIR_MAX 900

typedef struct {
    const char *arch;          /* .arch path */
    const char *data;          /* SPEC */
    const char *weights;       /* safetensors to start from, or NULL (random init) */
    const char *out;           /* run folder, or NULL for none */
    const char *resume;        /* run folder to continue, or NULL */
    const char *save;          /* also write the final weights here, or NULL */
    TrainSpec spec;
    int per_class;
    int fuse, fold;
    int input_h, input_w;      /* 0: the arch's */
    int cache;                 /* cache frozen-prefix features (1) */
    size_t cache_limit;        /* bytes; larger caches are not built (4 GiB) */
    size_t memory_budget;      /* auto: bytes the plan may use (0: physical memory / 2) */
    int num_classes;           /* 0: the data set's; else must equal it */
    int progress;              /* progress bar when stdout is a terminal */
    double log_every;          /* seconds between progress lines when the log is
                                  not a terminal (30; 0: none) */
    long stop_after_steps;     /* testing: behave as if killed after this many steps */
    FILE *log;                 /* per-epoch lines (NULL: stdout) */
    const char *device;        /* cpu | cuda | auto (runtime/device.h); NULL: cpu */
    CudaOptions cuda;          /* TF32, graphs (cuda only) */
    /* For tests: when set, every backend of the run (each phase's) is made by
     * make_backend(plan, make_backend_ctx, err, errlen) instead of by
     * backend_create on `device` (which is still resolved and still sizes
     * auto's batch); NULL with a message in err fails the run (rc 1). The
     * emulated GPU device of tests/test_cuda_emu.c runs whole trainings this
     * way. NULL (the default): backend_create. */
    Backend *(*make_backend)(const Plan *p, void *ctx, char *err, size_t errlen);
    void *make_backend_ctx;
} RunConfig;

typedef struct {
    double test_acc, val_acc;
    double train_seconds;      /* the loop's wall clock, validation and feature caching included */
    double setup_seconds;      /* loading, planning (apart) */
    double cache_seconds;      /* feature caching part of train_seconds (0 when reused) */
    int phases;
    int epochs[2], best_epoch[2];
    double phase_seconds[2];
    int diverged, div_epoch, div_step;
    float div_lr;
    int rollbacks;
    int collapsed_epoch[2];    /* per phase, the first epoch whose validation accuracy
                                  fell back to chance after being above it (0: none) */
    int interrupted;
    int finished;              /* --resume of a finished run: nothing ran, nothing was written */
    int batch;
    float lr;
    size_t plan_bytes, trainable;
    int cached_layer;          /* the cut, or -1 */
} RunResult;

/* What trials of a sweep share. Zero-initialize; free with run_shared_free. */
typedef struct {
    Dataset ds;
    int have_ds;
    char ds_key[1024];
    uint32_t ds_crc;           /* CRC-32 of ds's pixels, labels and class names, once have_ds_crc */
    int have_ds_crc;
    FeatureCache cache;
    char cache_key[1024];
} RunShared;

void run_config_default(RunConfig *c);
/* Returns 0, 2 on bad input (message names the file), 1 on failure while
 * running (a write: the file and the reason named), 130 when interrupted
 * (a checkpoint was written). With c->resume, the checkpoint must match the
 * run's settings (arch, weights and data content, the options that shape
 * training) and fit its plan; a finished run is left as it is. */
int run_train(const RunConfig *c, RunShared *sh, RunResult *r, char *err, size_t errlen);
void run_shared_free(RunShared *sh);

#endif
