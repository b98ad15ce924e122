/* kernels/cpu/dense.c — the dense (fully connected) layer, on gemm().
 *
 * Contract: out (N,K) = x (N,F) w (F,K) + bias; dw/dbias are overwritten, dx
 * honours `acc`; dbias is summed in double.
 */
#include "kernels/cpu/internal.h"

#include <stdlib.h>

/* ---- dense ---------------------------------------------------------------------- */

/* out = x . w + bias. */
void dense_forward(real *out, const real *x, const real *w, const real *bias,
                   int N, int F, int K)
{
    gemm(0, 0, N, K, F, 1, x, F, w, K, 0, out, K);
    if (bias)
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) out[(size_t)n * K + k] += bias[k];
}

/* dw = x^T . dout, dbias = column sums of dout, dx (+)= dout . w^T. */
void dense_backward(real *dx, real *dw, real *dbias, const real *dout,
                    const real *x, const real *w, int N, int F, int K, int acc)
{
    if (dw) gemm(1, 0, F, K, N, 1, x, F, dout, K, 0, dw, K);
    if (dbias) {
        double *sb = KILN_KMALLOC((size_t)K * sizeof *sb);
        kiln_chan_sums(sb, NULL, dout, NULL, NULL, NULL, (size_t)N, K);
        for (int k = 0; k < K; k++) dbias[k] = (real)sb[k];
        free(sb);
    }
    if (dx) gemm(0, 1, N, F, K, 1, dout, K, w, K, acc ? 1 : 0, dx, F);
}
