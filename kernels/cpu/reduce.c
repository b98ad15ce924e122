/* kernels/cpu/reduce.c — per-channel reductions over rows and the checked
 * allocation used by the kernels' scratch buffers.
 *
 * Contract: see internal.h. Rows are cut into a number of chunks that depends
 * only on M (never on the thread count); each chunk sums into its own double
 * row of partials and the partials are added in chunk order, so every result
 * is the same for any OMP_NUM_THREADS and accumulated in double whatever
 * `real` is.
 */
#include "kernels/cpu/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- failure and allocation ----------------------------------------------- */

/* Report a broken kernel precondition and stop. */
void kiln_kernel_fail(const char *file, int line, const char *msg)
{
    fprintf(stderr, "%s:%d: kernel error: %s\n", file, line, msg);
    abort();
}

/* malloc that never returns NULL (a 0-byte request gets 1 byte). */
void *kiln_kernel_malloc(size_t bytes, const char *file, int line)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "%s:%d: kernel error: out of memory allocating %zu bytes\n",
                file, line, bytes);
        abort();
    }
    return p;
}

/* ---- chunking -------------------------------------------------------------- */

/* Number of row chunks for a reduction over M rows: about 512 rows each, at
 * most 64 chunks, at least 1. */
static int row_chunks(size_t M)
{
    size_t n = M / 512;
    if (n < 1) n = 1;
    if (n > 64) n = 64;
    return (int)n;
}

/* ---- reductions ------------------------------------------------------------- */

/* sum_a[c] = sum a[:,c]; sum_axhat[c] = sum a[:,c]*(x[:,c]-mean[c])*invstd[c]. */
void kiln_chan_sums(double *sum_a, double *sum_axhat, const real *a,
                    const real *x, const real *mean, const real *invstd,
                    size_t M, int C)
{
    int nch = row_chunks(M);
    int nacc = sum_axhat ? 2 : 1;
    double *part = KILN_KMALLOC((size_t)nch * nacc * C * sizeof *part);
    memset(part, 0, (size_t)nch * nacc * C * sizeof *part);

    #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
    for (int ch = 0; ch < nch; ch++) {
        size_t m0 = M * ch / nch, m1 = M * (ch + 1) / nch;
        double *pa = part + (size_t)ch * nacc * C;
        double *px = pa + C;
        for (size_t m = m0; m < m1; m++) {
            const real *ar = a + m * C;
            for (int c = 0; c < C; c++)
                pa[c] += ar[c];
            if (sum_axhat) {
                const real *xr = x + m * C;
                for (int c = 0; c < C; c++)
                    px[c] += (double)ar[c] * (double)((xr[c] - mean[c]) * invstd[c]);
            }
        }
    }

    for (int c = 0; c < C; c++) {
        double s = 0, t = 0;
        for (int ch = 0; ch < nch; ch++) {
            s += part[(size_t)ch * nacc * C + c];
            if (sum_axhat) t += part[(size_t)ch * nacc * C + C + c];
        }
        sum_a[c] = s;
        if (sum_axhat) sum_axhat[c] = t;
    }
    free(part);
}

/* sum_a[c] = sum a[:,c] (when wanted); sum_axhat[c] = sum a[:,c]*xhat[:,c],
 * xhat = (x[m,c] - stats[2m]) * stats[2m+1], or x itself without stats. */
void kiln_chan_sums_rowstats(double *sum_a, double *sum_axhat, const real *a,
                             const real *x, const real *stats, size_t M, int C)
{
    int nch = row_chunks(M);
    double *part = KILN_KMALLOC((size_t)nch * 2 * C * sizeof *part);
    memset(part, 0, (size_t)nch * 2 * C * sizeof *part);

    #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
    for (int ch = 0; ch < nch; ch++) {
        size_t m0 = M * ch / nch, m1 = M * (ch + 1) / nch;
        double *pa = part + (size_t)ch * 2 * C;
        double *px = pa + C;
        for (size_t m = m0; m < m1; m++) {
            const real *ar = a + m * C;
            const real *xr = x ? x + m * C : NULL;
            if (sum_a)
                for (int c = 0; c < C; c++) pa[c] += ar[c];
            if (!sum_axhat) continue;
            if (stats) {
                real mu = stats[2 * m], inv = stats[2 * m + 1];
                for (int c = 0; c < C; c++) px[c] += (double)ar[c] * (double)((xr[c] - mu) * inv);
            } else {
                for (int c = 0; c < C; c++) px[c] += (double)ar[c] * (double)xr[c];
            }
        }
    }

    for (int c = 0; c < C; c++) {
        double s = 0, t = 0;
        for (int ch = 0; ch < nch; ch++) {
            s += part[(size_t)ch * 2 * C + c];
            t += part[(size_t)ch * 2 * C + C + c];
        }
        if (sum_a) sum_a[c] = s;
        if (sum_axhat) sum_axhat[c] = t;
    }
    free(part);
}

/* Per-channel mean, then biased variance around it (two passes, double). */
void kiln_chan_mean_var(double *mean, double *var, const real *x, size_t M, int C)
{
    int nch = row_chunks(M);
    double *part = KILN_KMALLOC((size_t)nch * C * sizeof *part);

    memset(part, 0, (size_t)nch * C * sizeof *part);
    #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
    for (int ch = 0; ch < nch; ch++) {
        size_t m0 = M * ch / nch, m1 = M * (ch + 1) / nch;
        double *p = part + (size_t)ch * C;
        for (size_t m = m0; m < m1; m++)
            for (int c = 0; c < C; c++)
                p[c] += x[m * C + c];
    }
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int ch = 0; ch < nch; ch++) s += part[(size_t)ch * C + c];
        mean[c] = M ? s / (double)M : 0;
    }

    memset(part, 0, (size_t)nch * C * sizeof *part);
    #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
    for (int ch = 0; ch < nch; ch++) {
        size_t m0 = M * ch / nch, m1 = M * (ch + 1) / nch;
        double *p = part + (size_t)ch * C;
        for (size_t m = m0; m < m1; m++)
            for (int c = 0; c < C; c++) {
                double d = x[m * C + c] - mean[c];
                p[c] += d * d;
            }
    }
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int ch = 0; ch < nch; ch++) s += part[(size_t)ch * C + c];
        var[c] = M ? s / (double)M : 0;
    }
    free(part);
}

/* ---- BN train halves shared by bn.c's op and the fused epilogue ------------ */

/* Batch statistics, saved statistics and the running-statistics update. */
void kiln_bn_batch_stats(real *mean, real *invstd, real *run_mean, real *run_var,
                         const real *x, real momentum, real eps, size_t M, int C)
{
    double *mv = KILN_KMALLOC(2 * (size_t)C * sizeof *mv);
    double *bm = mv, *bv = mv + C;
    kiln_chan_mean_var(bm, bv, x, M, C);
    double unbias = M > 1 ? (double)M / (double)(M - 1) : 1.0;
    for (int c = 0; c < C; c++) {
        mean[c] = (real)bm[c];
        invstd[c] = (real)(1.0 / sqrt(bv[c] + (double)eps));
        if (run_mean)
            run_mean[c] = (real)(momentum * (double)run_mean[c] + (1 - (double)momentum) * bm[c]);
        if (run_var)
            run_var[c] = (real)(momentum * (double)run_var[c]
                                + (1 - (double)momentum) * bv[c] * unbias);
    }
    free(mv);
}

/* dx (+)= gamma*invstd*(a - mean(a) - xhat*mean(a*xhat)), per channel. */
void kiln_bn_train_dx(real *dx, const real *a, const real *x, const real *mean,
                      const real *invstd, const real *gamma, const double *sum_a,
                      const double *sum_axhat, size_t M, int C, int acc)
{
    double *k = KILN_KMALLOC(3 * (size_t)C * sizeof *k);
    double *g = k, *ma = k + C, *mx = k + 2 * C;
    for (int c = 0; c < C; c++) {
        g[c] = (double)gamma[c] * (double)invstd[c];
        ma[c] = M ? sum_a[c] / (double)M : 0;
        mx[c] = M ? sum_axhat[c] / (double)M : 0;
    }
    #pragma omp parallel for schedule(static) if (M * (size_t)C >= KILN_PAR_MIN)
    for (size_t m = 0; m < M; m++) {
        for (int c = 0; c < C; c++) {
            size_t i = m * C + c;
            real xhat = (x[i] - mean[c]) * invstd[c];
            real v = (real)(g[c] * ((double)a[i] - ma[c] - (double)xhat * mx[c]));
            dx[i] = acc ? dx[i] + v : v;
        }
    }
    free(k);
}
