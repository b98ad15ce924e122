/* kernels/cpu/norm.c — channel layer normalization (ConvNeXt's LayerNorm over
 * C at each pixel of an NHWC tensor) and layer scale (a learnable per-channel
 * multiplier).
 *
 * Contract (see kernels.h): tensors are (M, C) with channels fastest, one row
 * per pixel. LayerNorm: mean and biased variance of each row in double (two
 * passes), stats[2m] = mean, stats[2m+1] = invstd = 1/sqrt(var + eps), then
 * out = (x - mean) * (invstd * gamma) + beta, the expression of kiln_bn with
 * per-row statistics. Its backward, from the saved stats:
 *   xhat = (x - mean) * invstd,  g = dout * gamma,
 *   dx = invstd * (g - mean_c(g) - xhat * mean_c(g * xhat)),
 *   dgamma = sum_m dout * xhat,  dbeta = sum_m dout.
 * Layer scale: out = x * s[c]; dx = dout * s[c], ds = sum_m dout * x.
 *
 * Invariants: row reductions run over one row in order; column reductions use
 * the chunked double sums of reduce.c, so results do not depend on the thread
 * count. Parameter gradients are overwritten; dx honours `acc`.
 */
#include "kernels/cpu/internal.h"

#include <stdlib.h>

/* ---- layer normalization --------------------------------------------------- */

/* Per row: statistics (double, two passes), then the affine (unless out is
 * NULL). */
void layernorm_forward(real *out, real *stats, const real *x, const real *gamma,
                       const real *beta, real eps, size_t M, int C)
{
    #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
    for (size_t m = 0; m < M; m++) {
        const real *xr = x + m * C;
        real *o = out ? out + m * C : NULL;
        double s = 0, v = 0;
        for (int c = 0; c < C; c++) s += xr[c];
        double mean = C ? s / C : 0;
        for (int c = 0; c < C; c++) {
            double d = xr[c] - mean;
            v += d * d;
        }
        real mu = (real)mean;
        real inv = (real)(1.0 / sqrt((C ? v / C : 0) + (double)eps));
        stats[2 * m] = mu;
        stats[2 * m + 1] = inv;
        if (!out) continue;
        for (int c = 0; c < C; c++) o[c] = kiln_bn(xr[c], mu, inv, gamma[c], beta[c]);
    }
}

/* Column sums for dgamma/dbeta, then the row-wise input gradient. */
void layernorm_backward(real *dx, real *dgamma, real *dbeta, const real *dout,
                        const real *x, const real *stats, const real *gamma,
                        size_t M, int C, int acc)
{
    if (dgamma || dbeta) {
        double *sums = KILN_KMALLOC(2 * (size_t)C * sizeof *sums);
        kiln_chan_sums_rowstats(dbeta ? sums : NULL, dgamma ? sums + C : NULL, dout, x, stats,
                                M, C);
        for (int c = 0; c < C; c++) {
            if (dgamma) dgamma[c] = (real)sums[C + c];
            if (dbeta) dbeta[c] = (real)sums[c];
        }
        free(sums);
    }
    if (!dx) return;
    #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
    for (size_t m = 0; m < M; m++) {
        const real *xr = x + m * C, *gr = dout + m * C;
        real *d = dx + m * C;
        real mu = stats[2 * m], inv = stats[2 * m + 1];
        double sg = 0, sgx = 0;
        for (int c = 0; c < C; c++) {
            real g = gr[c] * gamma[c];
            sg += g;
            sgx += (double)g * (double)((xr[c] - mu) * inv);
        }
        double mg = C ? sg / C : 0, mgx = C ? sgx / C : 0;
        for (int c = 0; c < C; c++) {
            real g = gr[c] * gamma[c];
            real xhat = (xr[c] - mu) * inv;
            real v = (real)((double)inv * ((double)g - mg - (double)xhat * mgx));
            d[c] = acc ? d[c] + v : v;
        }
    }
}

/* ---- layer scale ------------------------------------------------------------ */

/* out = x * s per channel; out may alias x. */
void layerscale_forward(real *out, const real *x, const real *s, size_t M, int C)
{
    #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
    for (size_t m = 0; m < M; m++)
        for (int c = 0; c < C; c++) out[m * C + c] = x[m * C + c] * s[c];
}

/* ds = column sums of dout * x (double); dx (+)= dout * s. */
void layerscale_backward(real *dx, real *ds, const real *dout, const real *x,
                         const real *s, size_t M, int C, int acc)
{
    if (ds) {
        double *sums = KILN_KMALLOC((size_t)C * sizeof *sums);
        kiln_chan_sums_rowstats(NULL, sums, dout, x, NULL, M, C);
        for (int c = 0; c < C; c++) ds[c] = (real)sums[c];
        free(sums);
    }
    if (!dx) return;
    #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
    for (size_t m = 0; m < M; m++)
        for (int c = 0; c < C; c++) {
            real v = dout[m * C + c] * s[c];
            dx[m * C + c] = acc ? dx[m * C + c] + v : v;
        }
}
