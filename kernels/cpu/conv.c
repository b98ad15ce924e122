/* kernels/cpu/conv.c — spatial ops on NHWC tensors: convolution (im2col +
 * one GEMM), depthwise convolution (direct loops), zero padding, max pooling.
 *
 * Contract (see kernels.h): x (N,H,W,C), out (N,P,Q,K); conv weights
 * (R,S,C,K), depthwise weights (R,S,C). An output cell (p,q) reads input rows
 * h = p*stride_h - pad_t + r and columns w = q*stride_w - pad_l + s; cells
 * outside [0,H) x [0,W) are zero for convolutions and -inf for max pooling.
 * Bottom/right padding is implied by P and Q.
 *
 * Invariants: the im2col matrix has one row per output cell (n,p,q) and
 * columns ordered (r,s,c), so the HWIO weights are a plain (R*S*C, K) matrix.
 * A 1x1, stride-1, unpadded conv with P == H, Q == W uses x itself as that
 * matrix (workspace 0). Parameter gradients are overwritten; input gradients
 * honour `acc`. Backward loops that scatter into dx are parallel over images,
 * so no two threads ever write the same dx element.
 */
#include "kernels/cpu/internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ---- convolution ----------------------------------------------------------- */

/* True when the conv is a plain GEMM on x (1x1, stride 1, no padding). */
static int conv_is_gemm(const ConvShape *s)
{
    return s->R == 1 && s->S == 1 && s->stride_h == 1 && s->stride_w == 1 &&
           s->pad_t == 0 && s->pad_l == 0 && s->P == s->H && s->Q == s->W;
}

/* Reals of workspace for the im2col matrix, 0 on the GEMM fast path. */
size_t conv2d_workspace(const ConvShape *s)
{
    if (conv_is_gemm(s)) return 0;
    return (size_t)s->N * s->P * s->Q * s->R * s->S * s->C;
}

/* col (N*P*Q, R*S*C) = the receptive field of every output cell, 0 outside x. */
static void im2col(real *col, const real *x, const ConvShape *s)
{
    const int H = s->H, W = s->W, C = s->C, R = s->R, S = s->S, P = s->P, Q = s->Q;
    const size_t kc = (size_t)R * S * C;
    const long rows = (long)s->N * P;

    #pragma omp parallel for schedule(static) if (rows * Q * kc >= KILN_PAR_MIN)
    for (long np = 0; np < rows; np++) {
        int n = (int)(np / P), p = (int)(np % P);
        for (int q = 0; q < Q; q++) {
            real *row = col + ((size_t)np * Q + q) * kc;
            for (int r = 0; r < R; r++) {
                int h = p * s->stride_h - s->pad_t + r;
                for (int t = 0; t < S; t++) {
                    int w = q * s->stride_w - s->pad_l + t;
                    real *dst = row + ((size_t)r * S + t) * C;
                    if (h < 0 || h >= H || w < 0 || w >= W)
                        memset(dst, 0, (size_t)C * sizeof *dst);
                    else
                        memcpy(dst, x + (((size_t)n * H + h) * W + w) * C,
                               (size_t)C * sizeof *dst);
                }
            }
        }
    }
}

/* dx (+)= the receptive-field gradients in col scattered back onto the input. */
static void col2im(real *dx, const real *col, const ConvShape *s, int acc)
{
    const int H = s->H, W = s->W, C = s->C, R = s->R, S = s->S, P = s->P, Q = s->Q;
    const size_t kc = (size_t)R * S * C;

    #pragma omp parallel for schedule(static) if ((size_t)s->N * P * Q * kc >= KILN_PAR_MIN)
    for (int n = 0; n < s->N; n++) {
        real *dxn = dx + (size_t)n * H * W * C;
        if (!acc) memset(dxn, 0, (size_t)H * W * C * sizeof *dxn);
        for (int p = 0; p < P; p++)
            for (int q = 0; q < Q; q++) {
                const real *row = col + (((size_t)n * P + p) * Q + q) * kc;
                for (int r = 0; r < R; r++) {
                    int h = p * s->stride_h - s->pad_t + r;
                    if (h < 0 || h >= H) continue;
                    for (int t = 0; t < S; t++) {
                        int w = q * s->stride_w - s->pad_l + t;
                        if (w < 0 || w >= W) continue;
                        const real *src = row + ((size_t)r * S + t) * C;
                        real *dst = dxn + ((size_t)h * W + w) * C;
                        for (int c = 0; c < C; c++) dst[c] += src[c];
                    }
                }
            }
    }
}

/* out (N,P,Q,K) = im2col(x) . w + bias, one GEMM for the whole batch. */
void conv2d_forward(real *out, const real *x, const real *w, const real *bias,
                    real *ws, const ConvShape *s)
{
    const size_t rows = (size_t)s->N * s->P * s->Q;
    const int kc = s->R * s->S * s->C, K = s->K;
    KILN_KCHECK(rows <= INT_MAX, "conv2d: N*P*Q exceeds the BLAS int range");
    const real *a = x;
    if (!conv_is_gemm(s)) {
        KILN_KCHECK(ws != NULL, "conv2d_forward: workspace required");
        im2col(ws, x, s);
        a = ws;
    }
    gemm(0, 0, (int)rows, K, kc, 1, a, kc, w, K, 0, out, K);
    if (bias) {
        #pragma omp parallel for schedule(static) if (rows * K >= KILN_PAR_MIN)
        for (size_t m = 0; m < rows; m++)
            for (int k = 0; k < K; k++) out[m * K + k] += bias[k];
    }
}

/* dw = col^T . dout, dbias = column sums of dout, dcol = dout . w^T -> dx. */
void conv2d_backward(real *dx, real *dw, real *dbias, const real *dout,
                     const real *x, const real *w, real *ws,
                     const ConvShape *s, int acc)
{
    const size_t rows = (size_t)s->N * s->P * s->Q;
    const int kc = s->R * s->S * s->C, K = s->K;
    const int direct = conv_is_gemm(s);
    KILN_KCHECK(rows <= INT_MAX, "conv2d: N*P*Q exceeds the BLAS int range");
    KILN_KCHECK(direct || ws != NULL || (!dw && !dx), "conv2d_backward: workspace required");

    if (dbias) {
        double *sb = KILN_KMALLOC((size_t)K * sizeof *sb);
        kiln_chan_sums(sb, NULL, dout, NULL, NULL, NULL, rows, K);
        for (int k = 0; k < K; k++) dbias[k] = (real)sb[k];
        free(sb);
    }
    if (dw) {
        const real *a = x;
        if (!direct) {
            im2col(ws, x, s);
            a = ws;
        }
        gemm(1, 0, kc, K, (int)rows, 1, a, kc, dout, K, 0, dw, K);
    }
    if (dx) {
        if (direct) {
            gemm(0, 1, (int)rows, kc, K, 1, dout, K, w, K, acc ? 1 : 0, dx, kc);
        } else {
            gemm(0, 1, (int)rows, kc, K, 1, dout, K, w, K, 0, ws, kc);
            col2im(dx, ws, s, acc);
        }
    }
}

/* ---- depthwise convolution --------------------------------------------------- */

/* out[n,p,q,c] = sum_{r,s} x[n,h,w,c] * w[r,s,c] + bias[c]. */
void dwconv2d_forward(real *out, const real *x, const real *w, const real *bias,
                      const ConvShape *s)
{
    const int H = s->H, W = s->W, C = s->C, R = s->R, S = s->S, P = s->P, Q = s->Q;
    const long rows = (long)s->N * P;

    #pragma omp parallel for schedule(static) if ((size_t)rows * Q * C * R * S >= KILN_PAR_MIN)
    for (long np = 0; np < rows; np++) {
        int n = (int)(np / P), p = (int)(np % P);
        for (int q = 0; q < Q; q++) {
            real *o = out + ((size_t)np * Q + q) * C;
            for (int c = 0; c < C; c++) o[c] = bias ? bias[c] : 0;
            for (int r = 0; r < R; r++) {
                int h = p * s->stride_h - s->pad_t + r;
                if (h < 0 || h >= H) continue;
                for (int t = 0; t < S; t++) {
                    int wc = q * s->stride_w - s->pad_l + t;
                    if (wc < 0 || wc >= W) continue;
                    const real *xr = x + (((size_t)n * H + h) * W + wc) * C;
                    const real *wr = w + ((size_t)r * S + t) * C;
                    for (int c = 0; c < C; c++) o[c] += xr[c] * wr[c];
                }
            }
        }
    }
}

/* Channels per task of the depthwise weight gradient: one 64-byte line of
 * floats, so each task reads whole cache lines. */
#define DW_CBLOCK 16

/* dx scattered per image; dw/dbias reduced in double per channel block. */
void dwconv2d_backward(real *dx, real *dw, real *dbias, const real *dout,
                       const real *x, const real *w, const ConvShape *s, int acc)
{
    const int H = s->H, W = s->W, C = s->C, R = s->R, S = s->S, P = s->P, Q = s->Q;
    const size_t work = (size_t)s->N * P * Q * C * R * S;

    if (dx) {
        #pragma omp parallel for schedule(static) if (work >= KILN_PAR_MIN)
        for (int n = 0; n < s->N; n++) {
            real *dxn = dx + (size_t)n * H * W * C;
            if (!acc) memset(dxn, 0, (size_t)H * W * C * sizeof *dxn);
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++) {
                    const real *g = dout + (((size_t)n * P + p) * Q + q) * C;
                    for (int r = 0; r < R; r++) {
                        int h = p * s->stride_h - s->pad_t + r;
                        if (h < 0 || h >= H) continue;
                        for (int t = 0; t < S; t++) {
                            int wc = q * s->stride_w - s->pad_l + t;
                            if (wc < 0 || wc >= W) continue;
                            real *d = dxn + ((size_t)h * W + wc) * C;
                            const real *wr = w + ((size_t)r * S + t) * C;
                            for (int c = 0; c < C; c++) d[c] += g[c] * wr[c];
                        }
                    }
                }
        }
    }

    if (dw || dbias) {
        const int nblk = (C + DW_CBLOCK - 1) / DW_CBLOCK;
        #pragma omp parallel for schedule(static) if (work >= KILN_PAR_MIN)
        for (int b = 0; b < nblk; b++) {
            const int c0 = b * DW_CBLOCK;
            const int cb = C - c0 < DW_CBLOCK ? C - c0 : DW_CBLOCK;
            double *aw = KILN_KMALLOC(((size_t)R * S + 1) * DW_CBLOCK * sizeof *aw);
            double *ab = aw + (size_t)R * S * DW_CBLOCK;
            memset(aw, 0, ((size_t)R * S + 1) * DW_CBLOCK * sizeof *aw);
            for (int n = 0; n < s->N; n++)
                for (int p = 0; p < P; p++)
                    for (int q = 0; q < Q; q++) {
                        const real *g = dout + (((size_t)n * P + p) * Q + q) * C + c0;
                        for (int c = 0; c < cb; c++) ab[c] += g[c];
                        if (!dw) continue; /* x may be NULL when only dbias is wanted */
                        for (int r = 0; r < R; r++) {
                            int h = p * s->stride_h - s->pad_t + r;
                            if (h < 0 || h >= H) continue;
                            for (int t = 0; t < S; t++) {
                                int wc = q * s->stride_w - s->pad_l + t;
                                if (wc < 0 || wc >= W) continue;
                                const real *xr = x + (((size_t)n * H + h) * W + wc) * C + c0;
                                double *a = aw + ((size_t)r * S + t) * DW_CBLOCK;
                                for (int c = 0; c < cb; c++) a[c] += (double)g[c] * xr[c];
                            }
                        }
                    }
            if (dw)
                for (int rs = 0; rs < R * S; rs++)
                    for (int c = 0; c < cb; c++)
                        dw[(size_t)rs * C + c0 + c] = (real)aw[(size_t)rs * DW_CBLOCK + c];
            if (dbias)
                for (int c = 0; c < cb; c++) dbias[c0 + c] = (real)ab[c];
            free(aw);
        }
    }
}

/* ---- zero padding ------------------------------------------------------------- */

/* out = x surrounded by pt/pb rows and pl/pr columns of zeros. */
void zeropad_forward(real *out, const real *x, int N, int H, int W, int C,
                     int pt, int pb, int pl, int pr)
{
    const int Ho = H + pt + pb, Wo = W + pl + pr;
    const long rows = (long)N * Ho;
    #pragma omp parallel for schedule(static) if ((size_t)rows * Wo * C >= KILN_PAR_MIN)
    for (long nh = 0; nh < rows; nh++) {
        int n = (int)(nh / Ho), h = (int)(nh % Ho) - pt;
        real *o = out + (size_t)nh * Wo * C;
        if (h < 0 || h >= H) {
            memset(o, 0, (size_t)Wo * C * sizeof *o);
            continue;
        }
        memset(o, 0, (size_t)pl * C * sizeof *o);
        memcpy(o + (size_t)pl * C, x + ((size_t)n * H + h) * W * C, (size_t)W * C * sizeof *o);
        memset(o + (size_t)(pl + W) * C, 0, (size_t)pr * C * sizeof *o);
    }
}

/* dx (+)= the interior of dout. */
void zeropad_backward(real *dx, const real *dout, int N, int H, int W, int C,
                      int pt, int pb, int pl, int pr, int acc)
{
    const int Ho = H + pt + pb, Wo = W + pl + pr;
    const long rows = (long)N * H;
    #pragma omp parallel for schedule(static) if ((size_t)rows * W * C >= KILN_PAR_MIN)
    for (long nh = 0; nh < rows; nh++) {
        int n = (int)(nh / H), h = (int)(nh % H);
        real *d = dx + (size_t)nh * W * C;
        const real *g = dout + (((size_t)n * Ho + h + pt) * Wo + pl) * C;
        for (size_t i = 0; i < (size_t)W * C; i++) d[i] = acc ? d[i] + g[i] : g[i];
    }
}

/* ---- max pooling --------------------------------------------------------------- */

/* out = max over each window; padded cells never win. A window that holds no
 * input cell at all (impossible for sane shapes) gives 0. */
void maxpool_forward(real *out, const real *x, const ConvShape *s)
{
    const int H = s->H, W = s->W, C = s->C, R = s->R, S = s->S, P = s->P, Q = s->Q;
    const long rows = (long)s->N * P;

    #pragma omp parallel for schedule(static) if ((size_t)rows * Q * C * R * S >= KILN_PAR_MIN)
    for (long np = 0; np < rows; np++) {
        int n = (int)(np / P), p = (int)(np % P);
        for (int q = 0; q < Q; q++) {
            real *o = out + ((size_t)np * Q + q) * C;
            int any = 0;
            for (int c = 0; c < C; c++) o[c] = -INFINITY;
            for (int r = 0; r < R; r++) {
                int h = p * s->stride_h - s->pad_t + r;
                if (h < 0 || h >= H) continue;
                for (int t = 0; t < S; t++) {
                    int wc = q * s->stride_w - s->pad_l + t;
                    if (wc < 0 || wc >= W) continue;
                    const real *xr = x + (((size_t)n * H + h) * W + wc) * C;
                    for (int c = 0; c < C; c++)
                        if (xr[c] > o[c]) o[c] = xr[c];
                    any = 1;
                }
            }
            if (!any)
                for (int c = 0; c < C; c++) o[c] = 0;
        }
    }
}

/* dx (+)= dout routed to the first maximum of each window (scan order r, s). */
void maxpool_backward(real *dx, const real *dout, const real *x, const ConvShape *s, int acc)
{
    const int H = s->H, W = s->W, C = s->C, R = s->R, S = s->S, P = s->P, Q = s->Q;

    #pragma omp parallel for schedule(static) if ((size_t)s->N * P * Q * C * R * S >= KILN_PAR_MIN)
    for (int n = 0; n < s->N; n++) {
        real *dxn = dx + (size_t)n * H * W * C;
        const real *xn = x + (size_t)n * H * W * C;
        if (!acc) memset(dxn, 0, (size_t)H * W * C * sizeof *dxn);
        for (int p = 0; p < P; p++)
            for (int q = 0; q < Q; q++) {
                const real *g = dout + (((size_t)n * P + p) * Q + q) * C;
                for (int c = 0; c < C; c++) {
                    real best = -INFINITY;
                    size_t arg = (size_t)-1;
                    for (int r = 0; r < R; r++) {
                        int h = p * s->stride_h - s->pad_t + r;
                        if (h < 0 || h >= H) continue;
                        for (int t = 0; t < S; t++) {
                            int wc = q * s->stride_w - s->pad_l + t;
                            if (wc < 0 || wc >= W) continue;
                            size_t i = ((size_t)h * W + wc) * C + c;
                            if (arg == (size_t)-1 || xn[i] > best) {
                                best = xn[i];
                                arg = i;
                            }
                        }
                    }
                    if (arg != (size_t)-1) dxn[arg] += g[c];
                }
            }
    }
}
