/* runtime/backend.h — the one small interface between the training loop and
 * whatever executes a plan: the CPU executor (runtime/cpu.c,
 * cpu_backend_create below) and the GPU executor (runtime/cuda/exec.c over
 * the CUDA device, runtime/cuda/cuda.h cuda_backend_create).
 *
 * Contract: a backend owns the arenas the plan sized, and nothing else of
 * size. Batches are n <= plan batch images; kernels run with n so a short
 * last batch needs no padding. Parameters cross the interface as the plan's
 * param arena (plan->param_off gives each tensor's place).
 */
#ifndef KILN_BACKEND_H
#define KILN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "codegen/plan.h"

typedef struct Backend Backend;

typedef struct {
    const float *group_lr;   /* LR of each LR group (index = Layer.lr_group) */
    int n_groups;
    float momentum, weight_decay;
} StepConfig;

struct Backend {
    const char *name;
    const Plan *plan;
    void *impl;
    /* Copy a batch in: x (n, H, W, C) normalized floats, y (n) labels. */
    void (*upload)(Backend *b, const float *x, const int32_t *y, int n);
    /* Forward, loss, backward, update. Returns 0, or 1 when the loss or a
     * gradient is not finite (then nothing is updated). */
    int (*train_step)(Backend *b, int n, const StepConfig *cfg, double *loss, int *correct);
    /* Optional (NULL: the backend runs a step only as train_step): the same
     * step in two halves. train_launch queues it and returns at once;
     * train_wait waits for it and returns what train_step would have. In
     * between the caller may prepare and upload the next batch (the step
     * keeps the batch it started with) and must call nothing else. */
    void (*train_launch)(Backend *b, int n, const StepConfig *cfg);
    int (*train_wait)(Backend *b, double *loss, int *correct);
    /* Forward in inference mode (BN on running statistics, no dropout). */
    void (*evaluate)(Backend *b, int n, double *loss, int *correct);
    /* The logits of the last evaluate() call: (n, K). (A training step
     * reuses their memory for gradients, and the batch's too: upload before
     * every step.) */
    const float *(*logits)(Backend *b);
    /* The output of layer l after the last forward pass, valid only for the
     * final layer's input (the logits) and for PlanOptions.keep. */
    const float *(*layer_output)(Backend *b, int layer);
    /* Parameters (the whole param arena, plan->param_floats) out and in. */
    void (*read_params)(Backend *b, float *dst);
    void (*write_params)(Backend *b, const float *src);
    /* Momentum (plan->opt_floats) out and in, for checkpoints. */
    void (*read_momentum)(Backend *b, float *dst);
    void (*write_momentum)(Backend *b, const float *src);
    /* Feature caching for a frozen prefix (plan_find_cut): extract runs the
     * inference forward pass of the uploaded images up to layer `cut` and
     * copies its output, (n, floats per image), to dst. set_entry(cut) makes
     * later uploads carry such features, entering the plan after `cut`
     * (set_entry(0): images again). */
    void (*extract)(Backend *b, int n, int cut, float *dst);
    void (*set_entry)(Backend *b, int cut);
    /* The dropout seed counter, saved in checkpoints for exact resumption. */
    uint64_t (*get_step)(Backend *b);
    void (*set_step)(Backend *b, uint64_t step);
    /* Gradients of the last step (plan->grad_floats), for tests and tools. */
    void (*read_grads)(Backend *b, float *dst);
    void (*destroy)(Backend *b);
};

/* The CPU executor. Returns NULL with a message in err when the arenas cannot
 * be allocated (the message gives the bytes asked for). */
Backend *cpu_backend_create(const Plan *p, char *err, size_t errlen);

#endif
