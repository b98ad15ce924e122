/* kernels/cpu/dense.c — the BLAS wrapper and the dense (fully connected)
 * layer on top of it.
 *
 * Contract: gemm() is row-major C = alpha*op(A)op(B) + beta*C and dispatches
 * to cblas_sgemm or cblas_dgemm following `real` (KILN_REAL_IS_DOUBLE); with
 * beta == 0, C is not read. Dense: out (N,K) = x (N,F) w (F,K) + bias;
 * dw/dbias are overwritten, dx honours `acc`; dbias is summed in double.
 */
#include "kernels/cpu/internal.h"

#include <cblas.h>
#include <stdlib.h>

/* ---- BLAS ----------------------------------------------------------------------- */

/* Row-major GEMM in the precision of `real`. */
void gemm(int transA, int transB, int M, int N, int K, real alpha,
          const real *A, int lda, const real *B, int ldb, real beta,
          real *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
#if KILN_REAL_IS_DOUBLE
    cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb,
                beta, C, ldc);
#else
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb,
                beta, C, ldc);
#endif
}

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
