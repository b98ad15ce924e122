/* kernels/cpu/internal.h — helpers shared by the CPU kernel files only (not
 * part of the kernel contract; nothing outside kernels/cpu/ includes it).
 *
 * Holds: the checked allocation used for the small scratch buffers of
 * reductions, the per-element activation and BN formulas (so that the fused
 * epilogue and the unfused ops evaluate the very same expressions), and the
 * deterministic per-channel reductions.
 *
 * Invariants: every reduction over rows is accumulated in double and split
 * into a number of chunks that depends only on the problem size, never on the
 * thread count, so results are bitwise reproducible for any OMP_NUM_THREADS.
 */
#ifndef KILN_KERNELS_INTERNAL_H
#define KILN_KERNELS_INTERNAL_H

#include "kernels/cpu/kernels.h"

#include <math.h>

/* Loops over fewer elements than this stay serial (OpenMP start-up costs
 * more than the work). */
#define KILN_PAR_MIN 32768

/* Print "file:line: kernel error: msg" and abort; for programming errors. */
_Noreturn void kiln_kernel_fail(const char *file, int line, const char *msg);
#define KILN_KCHECK(cond, msg) \
    do { if (!(cond)) kiln_kernel_fail(__FILE__, __LINE__, (msg)); } while (0)

/* malloc that aborts with file/line when it fails. */
void *kiln_kernel_malloc(size_t bytes, const char *file, int line);
#define KILN_KMALLOC(bytes) kiln_kernel_malloc((bytes), __FILE__, __LINE__)

/* ---- per-element formulas ------------------------------------------------ */

/* exp in the precision of `real`. */
static inline real kiln_exp(real x)
{
#if KILN_REAL_IS_DOUBLE
    return exp(x);
#else
    return expf(x);
#endif
}

/* erf in the precision of `real`. */
static inline real kiln_erf(real x)
{
#if KILN_REAL_IS_DOUBLE
    return erf(x);
#else
    return erff(x);
#endif
}

/* 1/sqrt(2) and 1/sqrt(2*pi), for GELU. */
#define KILN_SQRT1_2 ((real)0.70710678118654752440)
#define KILN_INV_SQRT_2PI ((real)0.39894228040143267794)

/* act(x) for one value. */
static inline real kiln_act(real x, Act act)
{
    switch (act) {
    case ACT_RELU:    return x > 0 ? x : 0;
    case ACT_RELU6:   return x > 0 ? (x < 6 ? x : 6) : 0;
    case ACT_SWISH:   return x / (1 + kiln_exp(-x));
    case ACT_SIGMOID: return 1 / (1 + kiln_exp(-x));
    case ACT_GELU:    return (real)0.5 * x * (1 + kiln_erf(x * KILN_SQRT1_2));
    case ACT_NONE:    break;
    }
    return x;
}

/* act'(x) for one value (0 at the relu kinks). */
static inline real kiln_act_grad(real x, Act act)
{
    switch (act) {
    /* comparisons as 0/1 values, not branches: the loops vectorize */
    case ACT_RELU:  return (real)(x > 0);
    case ACT_RELU6: return (real)((x > 0) & (x < 6));
    case ACT_SWISH: {
        real sg = 1 / (1 + kiln_exp(-x));
        return sg * (1 + x * (1 - sg));
    }
    case ACT_SIGMOID: {
        real sg = 1 / (1 + kiln_exp(-x));
        return sg * (1 - sg);
    }
    case ACT_GELU: /* Phi(x) + x * phi(x) */
        return (real)0.5 * (1 + kiln_erf(x * KILN_SQRT1_2))
               + x * KILN_INV_SQRT_2PI * kiln_exp((real)-0.5 * x * x);
    case ACT_NONE: break;
    }
    return 1;
}

/* Batch-norm with batch statistics for one value: gamma*(x-mean)*invstd+beta. */
static inline real kiln_bn(real x, real mean, real invstd, real gamma, real beta)
{
    return (x - mean) * (invstd * gamma) + beta;
}

/* ---- reductions (reduce.c) ------------------------------------------------ */

/* Column sums of a (M,C) in double: sum_a[c] = sum_m a[m,c]; and, when
 * sum_axhat is non-NULL, sum_axhat[c] = sum_m a[m,c]*(x[m,c]-mean[c])*invstd[c]. */
void kiln_chan_sums(double *sum_a, double *sum_axhat, const real *a,
                    const real *x, const real *mean, const real *invstd,
                    size_t M, int C);

/* Column sums of a (M,C) in double with per-ROW statistics (layer norm):
 * sum_a[c] = sum_m a[m,c] when sum_a is non-NULL; sum_axhat[c] = sum_m
 * a[m,c]*xhat[m,c] with xhat = (x - stats[2m]) * stats[2m+1] (real), or
 * xhat = x when stats is NULL (layer scale). */
void kiln_chan_sums_rowstats(double *sum_a, double *sum_axhat, const real *a,
                             const real *x, const real *stats, size_t M, int C);

/* Batch mean and biased variance per channel of x (M,C), two-pass, double. */
void kiln_chan_mean_var(double *mean, double *var, const real *x, size_t M, int C);

/* The batch-statistics half of BN train: mean/invstd (C) written,
 * run_mean/run_var (C) updated (Keras momentum, unbiased variance). */
void kiln_bn_batch_stats(real *mean, real *invstd, real *run_mean, real *run_var,
                         const real *x, real momentum, real eps, size_t M, int C);

/* The input-gradient half of BN train, from the column sums of a = dL/dy:
 * dx (+)= gamma*invstd*(a - sum_a/M - xhat*sum_axhat/M). dx may alias a. */
void kiln_bn_train_dx(real *dx, const real *a, const real *x, const real *mean,
                      const real *invstd, const real *gamma, const double *sum_a,
                      const double *sum_axhat, size_t M, int C, int acc);

#endif
