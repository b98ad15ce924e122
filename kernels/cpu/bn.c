/* kernels/cpu/bn.c — batch normalization in its three modes, BN folding, and
 * the fused conv epilogue out = act(bn(z)) (+ res).
 *
 * Contract (see kernels.h): tensors are (M, C) with channels fastest. Train
 * mode normalizes with the biased batch variance and updates the running
 * statistics with run = momentum*run + (1-momentum)*batch, using the unbiased
 * batch variance M/(M-1) for run_var (Keras). Infer-trainable and frozen BN
 * are the per-channel affine x*scale + shift with scale = gamma/sqrt(var+eps),
 * shift = beta - mean*scale.
 *
 * Invariants: the fused epilogue evaluates exactly the per-element formulas
 * of the unfused ops (kiln_bn, kiln_act in internal.h) and the same reduction
 * helpers, so fused and unfused agree to rounding. Every reduction over rows
 * is in double (reduce.c). Parameter gradients are overwritten.
 */
#include "kernels/cpu/internal.h"

#include <stdlib.h>

/* ---- train mode ---------------------------------------------------------------- */

/* out = gamma*(x-mean)*invstd + beta with batch statistics; running stats updated. */
void bn_train_forward(real *out, real *mean, real *invstd, const real *x,
                      const real *gamma, const real *beta,
                      real *run_mean, real *run_var,
                      real momentum, real eps, size_t M, int C)
{
    kiln_bn_batch_stats(mean, invstd, run_mean, run_var, x, momentum, eps, M, C);
    #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
    for (size_t m = 0; m < M; m++)
        for (int c = 0; c < C; c++) {
            size_t i = m * C + c;
            out[i] = kiln_bn(x[i], mean[c], invstd[c], gamma[c], beta[c]);
        }
}

/* dgamma = sum dout*xhat, dbeta = sum dout, dx (+)= the full batch-stat gradient. */
void bn_train_backward(real *dx, real *dgamma, real *dbeta, const real *dout,
                       const real *x, const real *mean, const real *invstd,
                       const real *gamma, size_t M, int C, int acc)
{
    double *sums = KILN_KMALLOC(2 * (size_t)C * sizeof *sums);
    double *sa = sums, *sx = sums + C;
    kiln_chan_sums(sa, sx, dout, x, mean, invstd, M, C);
    for (int c = 0; c < C; c++) {
        if (dgamma) dgamma[c] = (real)sx[c];
        if (dbeta) dbeta[c] = (real)sa[c];
    }
    if (dx) kiln_bn_train_dx(dx, dout, x, mean, invstd, gamma, sa, sx, M, C, acc);
    free(sums);
}

/* ---- running statistics / constants: a per-channel affine ---------------------- */

/* scale = gamma/sqrt(var+eps), shift = beta - mean*scale (computed in double). */
void bn_scale_shift(real *scale, real *shift, const real *gamma, const real *beta,
                    const real *mean, const real *var, real eps, int C)
{
    for (int c = 0; c < C; c++) {
        double sc = (double)gamma[c] / sqrt((double)var[c] + (double)eps);
        scale[c] = (real)sc;
        shift[c] = (real)((double)beta[c] - (double)mean[c] * sc);
    }
}

/* out = x*scale + shift per channel; out may alias x. */
void channel_affine_forward(real *out, const real *x, const real *scale,
                            const real *shift, size_t M, int C)
{
    #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
    for (size_t m = 0; m < M; m++)
        for (int c = 0; c < C; c++) {
            size_t i = m * C + c;
            out[i] = x[i] * scale[c] + shift[c];
        }
}

/* Infer-trainable BN backward: statistics are constants, so dx = dout*scale. */
void bn_infer_backward(real *dx, real *dgamma, real *dbeta, const real *dout,
                       const real *x, const real *gamma, const real *mean,
                       const real *var, real eps, size_t M, int C, int acc)
{
    real *k = KILN_KMALLOC(2 * (size_t)C * sizeof *k);
    real *invstd = k, *scale = k + C;
    for (int c = 0; c < C; c++) {
        invstd[c] = (real)(1.0 / sqrt((double)var[c] + (double)eps));
        scale[c] = gamma[c] * invstd[c];
    }
    if (dgamma || dbeta) {
        double *sums = KILN_KMALLOC(2 * (size_t)C * sizeof *sums);
        kiln_chan_sums(sums, sums + C, dout, x, mean, invstd, M, C);
        for (int c = 0; c < C; c++) {
            if (dgamma) dgamma[c] = (real)sums[C + c];
            if (dbeta) dbeta[c] = (real)sums[c];
        }
        free(sums);
    }
    if (dx) {
        #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
        for (size_t m = 0; m < M; m++)
            for (int c = 0; c < C; c++) {
                size_t i = m * C + c;
                real v = dout[i] * scale[c];
                dx[i] = acc ? dx[i] + v : v;
            }
    }
    free(k);
}

/* wout = w * scale per column, bout = bias*scale + shift. wout may alias w. */
void bn_fold(real *wout, real *bout, const real *w, const real *bias,
             const real *scale, const real *shift, size_t rows, int cols)
{
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            wout[r * cols + c] = w[r * cols + c] * scale[c];
    for (int c = 0; c < cols; c++)
        bout[c] = (bias ? bias[c] : 0) * scale[c] + shift[c];
}

/* ---- the fused epilogue ----------------------------------------------------------- */

/* The epilogue's BN as one per-channel form for every mode, so the element
 * loops below have no mode switch: pre = (z - m[c]) * a[c] + b[c], with
 * (m, a, b) = (mean, invstd*gamma, beta) for batch statistics (the very
 * expression of kiln_bn), (0, scale, shift) for the affine, (0, 1, 0) for
 * none. Fills k (3C reals). beta/shift may be NULL where no activation
 * reads pre (backward without activation). */
static void epi_coeffs(real *k, const Epilogue *e, const real *mean, const real *invstd,
                       const real *gamma, const real *beta, const real *scale,
                       const real *shift, int C)
{
    real *m = k, *a = k + C, *b = k + 2 * C;
    for (int c = 0; c < C; c++) {
        switch (e->bn) {
        case EPI_BN_TRAIN:  m[c] = mean[c]; a[c] = invstd[c] * gamma[c]; b[c] = beta ? beta[c] : 0; break;
        case EPI_BN_AFFINE: m[c] = 0; a[c] = scale[c]; b[c] = shift ? shift[c] : 0; break;
        case EPI_BN_NONE:   m[c] = 0; a[c] = 1; b[c] = 0; break;
        }
    }
}

/* One element loop per activation: ACT is a constant there, so kiln_act's
 * switch folds away and the loop vectorizes. */
#define EPI_FWD_LOOP(ACT)                                                         \
    _Pragma("omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)") \
    for (size_t r_ = 0; r_ < M; r_++) {                                           \
        const real *zr = z + r_ * C;                                              \
        real *o = out + r_ * C;                                                   \
        const real *rr = r ? r + r_ * C : NULL;                                   \
        for (int c = 0; c < C; c++) {                                             \
            real v = kiln_act((zr[c] - m[c]) * a[c] + b[c], ACT);                 \
            o[c] = rr ? v + rr[c] : v;                                            \
        }                                                                         \
    }

/* out = act(bn(z)) (+ res): batch statistics first (train), then one pass. */
void epilogue_forward(real *out, real *mean, real *invstd, const real *z,
                      const real *gamma, const real *beta,
                      real *run_mean, real *run_var,
                      const real *scale, const real *shift,
                      const real *res, const Epilogue *e, size_t M, int C)
{
    if (e->bn == EPI_BN_TRAIN)
        kiln_bn_batch_stats(mean, invstd, run_mean, run_var, z, e->momentum, e->eps, M, C);
    real *k = KILN_KMALLOC(3 * (size_t)C * sizeof *k);
    epi_coeffs(k, e, mean, invstd, gamma, beta, scale, shift, C);
    const real *m = k, *a = k + C, *b = k + 2 * C;
    const real *r = e->residual ? res : NULL;
    switch (e->act) {
    case ACT_NONE:    EPI_FWD_LOOP(ACT_NONE) break;
    case ACT_RELU:    EPI_FWD_LOOP(ACT_RELU) break;
    case ACT_RELU6:   EPI_FWD_LOOP(ACT_RELU6) break;
    case ACT_SWISH:   EPI_FWD_LOOP(ACT_SWISH) break;
    case ACT_SIGMOID: EPI_FWD_LOOP(ACT_SIGMOID) break;
    case ACT_GELU:    EPI_FWD_LOOP(ACT_GELU) break;
    }
    free(k);
}

/* dz = dout * act'(pre), per activation as above; dres gets dout. Each row
 * is two plain loops (dres, then dz), so that both vectorize. */
#define EPI_BWD_LOOP(ACT)                                                         \
    _Pragma("omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)") \
    for (size_t r_ = 0; r_ < M; r_++) {                                           \
        const real *g = dout + r_ * C;                                            \
        const real *zr = z ? z + r_ * C : NULL;                                   \
        real *d = dz + r_ * C;                                                    \
        if (dr) {                                                                 \
            real *q = dr + r_ * C;                                                \
            if (dres_acc) for (int c = 0; c < C; c++) q[c] += g[c];               \
            else for (int c = 0; c < C; c++) q[c] = g[c];                         \
        }                                                                         \
        if (ACT == ACT_NONE) {                                                    \
            for (int c = 0; c < C; c++) d[c] = g[c];                              \
        } else {                                                                  \
            for (int c = 0; c < C; c++)                                           \
                d[c] = g[c] * kiln_act_grad((zr[c] - m[c]) * a[c] + b[c], ACT);   \
        }                                                                         \
    }

/* Pass 1: dres and dz = dout*act'(pre); pass 2: column sums (BN); pass 3: the
 * BN input gradient in place in dz. For EPI_BN_TRAIN `shift` carries beta. */
void epilogue_backward(real *dz, real *dgamma, real *dbeta, real *dres, int dres_acc,
                       const real *dout, const real *z,
                       const real *mean, const real *invstd,
                       const real *gamma, const real *scale, const real *shift,
                       const Epilogue *e, size_t M, int C)
{
    const real *beta = e->bn == EPI_BN_TRAIN ? shift : NULL;
    KILN_KCHECK(e->bn != EPI_BN_TRAIN || e->act == ACT_NONE || beta != NULL,
                "epilogue_backward: EPI_BN_TRAIN with an activation needs beta in `shift`");
    real *dr = e->residual ? dres : NULL;
    real *k = KILN_KMALLOC(3 * (size_t)C * sizeof *k);
    epi_coeffs(k, e, mean, invstd, gamma, beta, scale, shift, C);
    const real *m = k, *a = k + C, *b = k + 2 * C;
    switch (e->act) {
    case ACT_NONE:    EPI_BWD_LOOP(ACT_NONE) break;
    case ACT_RELU:    EPI_BWD_LOOP(ACT_RELU) break;
    case ACT_RELU6:   EPI_BWD_LOOP(ACT_RELU6) break;
    case ACT_SWISH:   EPI_BWD_LOOP(ACT_SWISH) break;
    case ACT_SIGMOID: EPI_BWD_LOOP(ACT_SIGMOID) break;
    case ACT_GELU:    EPI_BWD_LOOP(ACT_GELU) break;
    }
    free(k);

    if (e->bn == EPI_BN_NONE) return;

    double *sums = KILN_KMALLOC(2 * (size_t)C * sizeof *sums);
    double *sa = sums, *sx = sums + C;
    if (e->bn == EPI_BN_TRAIN || dgamma || dbeta) {
        kiln_chan_sums(sa, (dgamma || e->bn == EPI_BN_TRAIN) ? sx : NULL, dz, z, mean, invstd, M, C);
        for (int c = 0; c < C; c++) {
            if (dgamma) dgamma[c] = (real)sx[c];
            if (dbeta) dbeta[c] = (real)sa[c];
        }
    }
    if (e->bn == EPI_BN_TRAIN) {
        kiln_bn_train_dx(dz, dz, z, mean, invstd, gamma, sa, sx, M, C, 0);
    } else {
        #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
        for (size_t row = 0; row < M; row++)
            for (int c = 0; c < C; c++) dz[row * C + c] *= scale[c];
    }
    free(sums);
}
