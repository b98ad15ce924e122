/* kernels/cpu/elementwise.c — residual add and gradient pass-through,
 * squeeze-and-excitation channel multiply, global average pooling, dropout.
 *
 * Contract (see kernels.h): input gradients honour `acc` (0 overwrite, 1 add);
 * a NULL gradient pointer skips that gradient. Per-image loops are parallel
 * over the batch, so each thread owns whole images of every output.
 *
 * Invariants: the dropout mask is a pure function of (seed, index), computed
 * by dropout_keep, so forward and backward agree without a stored mask and
 * the result does not depend on the thread count. Sums over HW are in double.
 */
#include "kernels/cpu/internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- add ------------------------------------------------------------------------ */

/* out = a + b; out may alias a or b. */
void add_forward(real *out, const real *a, const real *b, size_t n)
{
    #pragma omp parallel for schedule(static) if (n >= KILN_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* dx (+)= dout. */
void grad_pass(real *dx, const real *dout, size_t n, int acc)
{
    if (!acc) {
        if (dx != dout) memcpy(dx, dout, n * sizeof *dx);
        return;
    }
    #pragma omp parallel for schedule(static) if (n >= KILN_PAR_MIN)
    for (size_t i = 0; i < n; i++) dx[i] += dout[i];
}

/* ---- channel multiply -------------------------------------------------------------- */

/* out[n,i,c] = x[n,i,c] * s[n,c]. */
void chanmul_forward(real *out, const real *x, const real *s, int N, int HW, int C)
{
    #pragma omp parallel for schedule(static) if ((size_t)N * HW * C >= KILN_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < HW; i++) {
            size_t o = ((size_t)n * HW + i) * C;
            for (int c = 0; c < C; c++) out[o + c] = x[o + c] * s[(size_t)n * C + c];
        }
}

/* dx (+)= dout*s; ds[n,c] (+)= sum_i dout[n,i,c]*x[n,i,c] (double). */
void chanmul_backward(real *dx, real *ds, const real *dout, const real *x,
                      const real *s, int N, int HW, int C, int accx, int accs)
{
    #pragma omp parallel if ((size_t)N * HW * C >= KILN_PAR_MIN)
    {
        double *acc = ds ? KILN_KMALLOC((size_t)C * sizeof *acc) : NULL;
        #pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            const real *sn = s + (size_t)n * C;
            if (acc) memset(acc, 0, (size_t)C * sizeof *acc);
            for (int i = 0; i < HW; i++) {
                size_t o = ((size_t)n * HW + i) * C;
                for (int c = 0; c < C; c++) {
                    if (dx) {
                        real v = dout[o + c] * sn[c];
                        dx[o + c] = accx ? dx[o + c] + v : v;
                    }
                    if (acc) acc[c] += (double)dout[o + c] * x[o + c];
                }
            }
            if (acc)
                for (int c = 0; c < C; c++) {
                    real *d = ds + (size_t)n * C + c;
                    *d = accs ? *d + (real)acc[c] : (real)acc[c];
                }
        }
        free(acc);
    }
}

/* ---- global average pool ------------------------------------------------------------ */

/* out[n,c] = mean_i x[n,i,c] (summed in double). */
void gap_forward(real *out, const real *x, int N, int HW, int C)
{
    #pragma omp parallel if ((size_t)N * HW * C >= KILN_PAR_MIN)
    {
        double *acc = KILN_KMALLOC((size_t)C * sizeof *acc);
        #pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            memset(acc, 0, (size_t)C * sizeof *acc);
            for (int i = 0; i < HW; i++) {
                const real *xr = x + ((size_t)n * HW + i) * C;
                for (int c = 0; c < C; c++) acc[c] += xr[c];
            }
            for (int c = 0; c < C; c++) out[(size_t)n * C + c] = (real)(acc[c] / HW);
        }
        free(acc);
    }
}

/* dx[n,i,c] (+)= dout[n,c] / HW. */
void gap_backward(real *dx, const real *dout, int N, int HW, int C, int acc)
{
    const real inv = (real)(1.0 / HW);
    #pragma omp parallel for schedule(static) if ((size_t)N * HW * C >= KILN_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < HW; i++) {
            real *d = dx + ((size_t)n * HW + i) * C;
            const real *g = dout + (size_t)n * C;
            for (int c = 0; c < C; c++) d[c] = acc ? d[c] + g[c] * inv : g[c] * inv;
        }
}

/* ---- dropout ---------------------------------------------------------------------- */

/* 1 when element i is kept: u(seed, i) >= rate, u a splitmix64-style hash of
 * (seed, i) mapped to [0, 1) with 53 bits. */
int dropout_keep(uint64_t seed, size_t i, real rate)
{
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * ((uint64_t)i + 1);
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBull;
    z ^= z >> 31;
    double u = (double)(z >> 11) * (1.0 / 9007199254740992.0);
    return u >= (double)rate;
}

/* out = keep ? x/(1-rate) : 0; rate <= 0: a copy; rate >= 1: all zero. */
void dropout_forward(real *out, const real *x, size_t n, real rate, uint64_t seed)
{
    if (rate <= 0) {
        if (out != x) memcpy(out, x, n * sizeof *out);
        return;
    }
    const real scale = rate < 1 ? (real)(1.0 / (1.0 - (double)rate)) : 0;
    #pragma omp parallel for schedule(static) if (n >= KILN_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        out[i] = (rate < 1 && dropout_keep(seed, i, rate)) ? x[i] * scale : 0;
}

/* dx (+)= keep ? dout/(1-rate) : 0, with the mask recomputed from (seed, i). */
void dropout_backward(real *dx, const real *dout, size_t n, real rate, uint64_t seed, int acc)
{
    if (rate <= 0) {
        grad_pass(dx, dout, n, acc);
        return;
    }
    const real scale = rate < 1 ? (real)(1.0 / (1.0 - (double)rate)) : 0;
    #pragma omp parallel for schedule(static) if (n >= KILN_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        real v = (rate < 1 && dropout_keep(seed, i, rate)) ? dout[i] * scale : 0;
        dx[i] = acc ? dx[i] + v : v;
    }
}
