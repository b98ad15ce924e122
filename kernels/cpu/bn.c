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

/* The BN part of the epilogue for one value: z itself, batch-stat BN, or the affine. */
static inline real epi_pre(real z, int c, const Epilogue *e, const real *mean,
                           const real *invstd, const real *gamma, const real *beta,
                           const real *scale, const real *shift)
{
    switch (e->bn) {
    case EPI_BN_TRAIN:  return kiln_bn(z, mean[c], invstd[c], gamma[c], beta[c]);
    case EPI_BN_AFFINE: return z * scale[c] + shift[c];
    case EPI_BN_NONE:   break;
    }
    return z;
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
    const real *r = e->residual ? res : NULL;
    #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
    for (size_t m = 0; m < M; m++)
        for (int c = 0; c < C; c++) {
            size_t i = m * C + c;
            real v = kiln_act(epi_pre(z[i], c, e, mean, invstd, gamma, beta, scale, shift),
                              e->act);
            out[i] = r ? v + r[i] : v;
        }
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

    #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
    for (size_t m = 0; m < M; m++)
        for (int c = 0; c < C; c++) {
            size_t i = m * C + c;
            real g = dout[i];
            if (dr) dr[i] = dres_acc ? dr[i] + g : g;
            if (e->act != ACT_NONE)
                g *= kiln_act_grad(epi_pre(z[i], c, e, mean, invstd, gamma, beta, scale, shift),
                                   e->act);
            dz[i] = g;
        }

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
        for (size_t m = 0; m < M; m++)
            for (int c = 0; c < C; c++) dz[m * C + c] *= scale[c];
    }
    free(sums);
}
