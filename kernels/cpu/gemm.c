/* kernels/cpu/gemm.c — the one way the CPU kernels multiply matrices: gemm(),
 * row-major C = alpha*op(A)op(B) + beta*C through cblas_sgemm or cblas_dgemm
 * following `real` (KILN_REAL_IS_DOUBLE); with beta == 0, C is not read.
 *
 * Invariant: the result does not depend on the thread count. C is cut into
 * a grid of blocks whose sizes depend only on (M, N, K), never on the
 * threads; K is never cut, so each output element is one BLAS dot product
 * over the whole of K. Each block is one BLAS call that runs on one thread
 * (OpenBLAS's OpenMP build runs single-threaded inside an active parallel
 * region or when the OpenMP thread count is 1; blas_one_thread makes sure of
 * it otherwise), and the blocks are shared among the OpenMP threads: the
 * thread count decides only who computes a block, never how. (OpenBLAS left
 * to split a GEMM among its threads itself gives other bits for another
 * count with some of its kernels, Haswell and Zen among them.)
 */
#include "kernels/cpu/internal.h"

#include <cblas.h>
#include <omp.h>

/* GEMMs with fewer multiply-adds than this are one BLAS call (a block's
 * start-up costs more than sharing it would save); larger ones are cut into
 * at most KILN_GEMM_MAX_BLOCKS blocks of at least this many multiply-adds
 * each. 12 blocks share evenly among 2, 3, 4 or 6 threads. */
#define KILN_GEMM_MIN_WORK (1L << 20)
#define KILN_GEMM_MAX_BLOCKS 12

/* Block edges are multiples of this, so the BLAS's register tiles (16 wide
 * at most on x86-64) meet block edges only where they meet the matrix's. */
#define KILN_GEMM_ALIGN 16

/* How a GEMM's C is cut: bm rows by bn columns a block (the last block of a
 * row or column may be smaller), nbm x nbn blocks. */
typedef struct {
    int bm, bn, nbm, nbn;
} GemmGrid;

/* ceil(a / b) for positive ints. */
static int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* The block grid of an (M,N) x K GEMM; a function of the shape only. The
 * longer side of C is cut (rows when equal); a side too short to give every
 * block KILN_GEMM_ALIGN of it leaves the rest of the cut to the other. */
static GemmGrid gemm_grid(int M, int N, int K)
{
    GemmGrid g = {M, N, 1, 1};
    double work = (double)M * N * K;
    if (work < 2.0 * KILN_GEMM_MIN_WORK) return g;
    long want = (long)(work / KILN_GEMM_MIN_WORK);
    int nb = want < KILN_GEMM_MAX_BLOCKS ? (int)want : KILN_GEMM_MAX_BLOCKS;
    int rows_first = M >= N;
    int side = rows_first ? M : N, other = rows_first ? N : M;
    int n1 = ceil_div(side, KILN_GEMM_ALIGN) < nb ? ceil_div(side, KILN_GEMM_ALIGN) : nb;
    int n2 = nb / n1;
    if (ceil_div(other, KILN_GEMM_ALIGN) < n2) n2 = ceil_div(other, KILN_GEMM_ALIGN);
    int b1 = ceil_div(ceil_div(side, n1), KILN_GEMM_ALIGN) * KILN_GEMM_ALIGN;
    int b2 = n2 > 1 ? ceil_div(ceil_div(other, n2), KILN_GEMM_ALIGN) * KILN_GEMM_ALIGN : other;
    if (b1 > side) b1 = side;
    if (b2 > other) b2 = other;
    if (rows_first) { g.bm = b1; g.bn = b2; }
    else { g.bm = b2; g.bn = b1; }
    g.nbm = ceil_div(M, g.bm);
    g.nbn = ceil_div(N, g.bn);
    return g;
}

/* One BLAS GEMM, row-major, in the precision of `real`. */
static void blas_gemm(int transA, int transB, int M, int N, int K, real alpha,
                      const real *A, int lda, const real *B, int ldb, real beta,
                      real *C, int ldc)
{
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

/* blas_gemm on the calling thread alone: outside an active parallel region
 * the OpenMP thread count (which OpenBLAS's OpenMP build follows) is 1 for
 * the duration of the call. */
static void blas_one_thread(int transA, int transB, int M, int N, int K, real alpha,
                            const real *A, int lda, const real *B, int ldb, real beta,
                            real *C, int ldc)
{
    int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (threads > 1) omp_set_num_threads(1);
    blas_gemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (threads > 1) omp_set_num_threads(threads);
}

/* Row-major GEMM in the precision of `real`, the blocks of C shared among
 * the OpenMP threads. */
void gemm(int transA, int transB, int M, int N, int K, real alpha,
          const real *A, int lda, const real *B, int ldb, real beta,
          real *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    const GemmGrid g = gemm_grid(M, N, K);
    const int nblocks = g.nbm * g.nbn;
    #pragma omp parallel for schedule(dynamic, 1) if (nblocks > 1)
    for (int b = 0; b < nblocks; b++) {
        int i0 = (b / g.nbn) * g.bm, j0 = (b % g.nbn) * g.bn;
        int m = M - i0 < g.bm ? M - i0 : g.bm, n = N - j0 < g.bn ? N - j0 : g.bn;
        /* op(A) rows i0.. and op(B) columns j0.. where each is stored */
        const real *a = transA ? A + i0 : A + (size_t)i0 * lda;
        const real *bb = transB ? B + (size_t)j0 * ldb : B + j0;
        blas_one_thread(transA, transB, m, n, K, alpha, a, lda, bb, ldb, beta,
                        C + (size_t)i0 * ldc + j0, ldc);
    }
}
