/* tests/test_kernels.c — the CPU kernels at production precision (float,
 * linked against kiln_kernels).
 *
 * Checks, each with `atol + rtol*|ref|` and the worst error in the message:
 *  - the fused epilogue (forward and backward) against the unfused sequence
 *    bn_train_forward / channel_affine_forward -> act_forward -> add_forward
 *    and its backwards, for every EpiBn x Act x residual, at a realistic size;
 *  - BN folding: conv with folded weights and bias equals conv followed by
 *    the BN affine, for conv and depthwise conv;
 *  - conv2d and dwconv2d against a naive direct convolution in double
 *    (stride 2, asymmetric padding, the 1x1 fast path);
 *  - gemm() against a product in double, for every transpose and beta, on
 *    shapes that run as one BLAS call and as blocks of C cut every way;
 *  - thread invariance: on sizes large enough to run in parallel, every
 *    OpenMP kernel and every GEMM caller (conv 3x3 and 1x1, dense; forward
 *    and backward) gives bitwise the same result on 2 and on 3 threads as on
 *    1, whichever kernels OpenBLAS picks (OPENBLAS_CORETYPE).
 * Each comparison prints one line with its measured worst error.
 */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/kernels.h"
#include "tests/suite_main.h"
#include "tests/test_rng.h"   /* rng_seed, urand, irand */

#define RTOL 1e-5
#define ATOL 1e-6

/* ---- helpers ------------------------------------------------------------------ */

/* A zeroed buffer of n reals (never NULL). */
static real *vec(size_t n)
{
    real *p = calloc(n ? n : 1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* a[i] uniform in [lo, hi). */
static void fill(real *a, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++) a[i] = (real)(lo + (hi - lo) * urand());
}

/* Assert |got - ref| <= atol + rtol*|ref| everywhere; print the worst ratio. */
static void expect_close(const char *what, const real *got, const real *ref, size_t n,
                         double atol, double rtol)
{
    double worst = 0, wabs = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        double e = d / (atol + rtol * fabs((double)ref[i]));
        if (!(e <= worst)) {
            worst = e;
            at = i;
        }
        if (d > wabs) wabs = d;
    }
    printf("close %-52s n=%7zu  worst/tol %.3f  max abs %.2e\n", what, n, worst, wabs);
    fflush(stdout);
    ck_assert_msg(worst <= 1,
                  "%s: element %zu got %.9g, want %.9g (|diff| %.3e > atol %.0e + rtol %.0e*|ref|)",
                  what, at, (double)got[at], (double)ref[at],
                  fabs((double)got[at] - (double)ref[at]), atol, rtol);
}

/* Assert bitwise equality. */
static void expect_same(const char *what, const real *a, const real *b, size_t n)
{
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += memcmp(&a[i], &b[i], sizeof a[i]) != 0;
    printf("same  %-52s n=%7zu  differing %zu\n", what, n, diff);
    fflush(stdout);
    ck_assert_msg(diff == 0, "%s: %zu of %zu values differ between thread counts", what, diff, n);
}

/* ---- fused vs unfused epilogue ------------------------------------------------------- */

static const char *const act_names[] = {"none", "relu", "relu6", "swish", "sigmoid"};
static const char *const bn_names[] = {"none", "train", "affine"};

/* Case i = (bn * 5 + act) * 2 + residual, M = 2*17*17 rows, C = 24. */
START_TEST(fused_vs_unfused)
{
    const size_t M = 2 * 17 * 17;
    const int C = 24;
    const size_t n = M * C;
    Epilogue e = {(EpiBn)(_i / 10), (Act)(_i / 2 % 5), _i % 2, 1e-3f, 0.99f};
    char tag[64], what[96];
    snprintf(tag, sizeof tag, "epi bn=%s act=%s res=%d", bn_names[e.bn], act_names[e.act],
             e.residual);
    rng_seed(100 + (uint64_t)_i);

    real *z = vec(n), *res = vec(n), *dout = vec(n);
    real *gamma = vec(C), *beta = vec(C), *rm = vec(C), *rv = vec(C);
    real *scale = vec(C), *shift = vec(C), *rinv = vec(C);
    fill(z, n, -2, 2);
    for (size_t i = 0; i < n; i++) z[i] = z[i] * (real)(0.5 + (i % C) * 0.1) + (real)((i % C) * 0.2 - 2);
    fill(res, n, -1, 1);
    fill(dout, n, -1, 1);
    fill(gamma, C, 0.5, 3);
    fill(beta, C, -1, 4);
    fill(rm, C, -2, 2);
    fill(rv, C, 0.3, 3);
    bn_scale_shift(scale, shift, gamma, beta, rm, rv, e.eps, C);
    /* 1/sqrt(var+eps) as the kernels compute it (double, then rounded): the
     * dgamma sums cancel, so a 1-ulp difference here would show. */
    for (int c = 0; c < C; c++) rinv[c] = (real)(1.0 / sqrt((double)rv[c] + (double)e.eps));

    /* fused forward */
    real *out_f = vec(n), *mean_f = vec(C), *inv_f = vec(C);
    real *rm_f = vec(C), *rv_f = vec(C);
    memcpy(rm_f, rm, C * sizeof *rm);
    memcpy(rv_f, rv, C * sizeof *rv);
    epilogue_forward(out_f, mean_f, inv_f, z, gamma, beta, rm_f, rv_f, scale, shift,
                     e.residual ? res : NULL, &e, M, C);

    /* unfused forward */
    real *pre = vec(n), *act = vec(n), *out_u = vec(n), *mean_u = vec(C), *inv_u = vec(C);
    real *rm_u = vec(C), *rv_u = vec(C);
    memcpy(rm_u, rm, C * sizeof *rm);
    memcpy(rv_u, rv, C * sizeof *rv);
    if (e.bn == EPI_BN_TRAIN)
        bn_train_forward(pre, mean_u, inv_u, z, gamma, beta, rm_u, rv_u, e.momentum, e.eps, M, C);
    else if (e.bn == EPI_BN_AFFINE)
        channel_affine_forward(pre, z, scale, shift, M, C);
    else
        memcpy(pre, z, n * sizeof *z);
    act_forward(act, pre, n, e.act);
    if (e.residual)
        add_forward(out_u, act, res, n);
    else
        memcpy(out_u, act, n * sizeof *act);

    snprintf(what, sizeof what, "%s out", tag);
    expect_close(what, out_f, out_u, n, ATOL, RTOL);
    if (e.bn == EPI_BN_TRAIN) {
        snprintf(what, sizeof what, "%s mean", tag);
        expect_close(what, mean_f, mean_u, C, ATOL, RTOL);
        snprintf(what, sizeof what, "%s invstd", tag);
        expect_close(what, inv_f, inv_u, C, ATOL, RTOL);
        snprintf(what, sizeof what, "%s run_mean", tag);
        expect_close(what, rm_f, rm_u, C, ATOL, RTOL);
        snprintf(what, sizeof what, "%s run_var", tag);
        expect_close(what, rv_f, rv_u, C, ATOL, RTOL);
    }

    /* fused backward (BN train: `shift` carries beta) */
    real *dz_f = vec(n), *dg_f = vec(C), *db_f = vec(C), *dres_f = vec(n);
    int params = e.bn != EPI_BN_NONE;
    if (e.bn == EPI_BN_TRAIN)
        epilogue_backward(dz_f, dg_f, db_f, e.residual ? dres_f : NULL, 0, dout, z, mean_f,
                          inv_f, gamma, NULL, beta, &e, M, C);
    else if (e.bn == EPI_BN_AFFINE)
        epilogue_backward(dz_f, dg_f, db_f, e.residual ? dres_f : NULL, 0, dout, z, rm, rinv,
                          gamma, scale, shift, &e, M, C);
    else
        epilogue_backward(dz_f, NULL, NULL, e.residual ? dres_f : NULL, 0, dout, z, NULL, NULL,
                          NULL, NULL, NULL, &e, M, C);

    /* unfused backward */
    real *dz_u = vec(n), *dg_u = vec(C), *db_u = vec(C), *dres_u = vec(n), *dpre = vec(n);
    if (e.residual) grad_pass(dres_u, dout, n, 0);
    act_backward(dpre, dout, pre, n, e.act, 0);
    if (e.bn == EPI_BN_TRAIN)
        bn_train_backward(dz_u, dg_u, db_u, dpre, z, mean_u, inv_u, gamma, M, C, 0);
    else if (e.bn == EPI_BN_AFFINE)
        bn_infer_backward(dz_u, dg_u, db_u, dpre, z, gamma, rm, rv, e.eps, M, C, 0);
    else
        memcpy(dz_u, dpre, n * sizeof *dpre);

    snprintf(what, sizeof what, "%s dz", tag);
    expect_close(what, dz_f, dz_u, n, ATOL, RTOL);
    if (params) {
        snprintf(what, sizeof what, "%s dgamma", tag);
        expect_close(what, dg_f, dg_u, C, ATOL, RTOL);
        snprintf(what, sizeof what, "%s dbeta", tag);
        expect_close(what, db_f, db_u, C, ATOL, RTOL);
    }
    if (e.residual) {
        snprintf(what, sizeof what, "%s dres", tag);
        expect_close(what, dres_f, dres_u, n, ATOL, RTOL);
    }

    real *bufs[] = {z, res, dout, gamma, beta, rm, rv, scale, shift, rinv, out_f, mean_f,
                    inv_f, rm_f, rv_f, pre, act, out_u, mean_u, inv_u, rm_u, rv_u, dz_f, dg_f,
                    db_f, dres_f, dz_u, dg_u, db_u, dres_u, dpre};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}
END_TEST

/* ---- convolution shapes and the naive reference --------------------------------------- */

typedef struct {
    int N, H, W, C, K, R, S, sh, sw, pt, pb, pl, pr;
} Cfg;

/* Realistic and awkward cases: same padding, stride 2, TF-style asymmetric
 * "same" (bottom/right only), padding top/left only, odd kernels, 1x1. */
static const Cfg cfgs[] = {
    /* N   H   W   C   K  R  S sh sw pt pb pl pr */
    {2, 17, 17, 24, 32, 3, 3, 1, 1, 1, 1, 1, 1},
    {2, 17, 17, 24, 32, 3, 3, 2, 2, 1, 1, 1, 1},
    {2, 16, 15, 16, 24, 3, 3, 2, 2, 0, 1, 0, 1},
    {1, 13, 11, 8, 12, 5, 3, 2, 1, 2, 0, 1, 0},
    {2, 9, 9, 3, 16, 7, 7, 2, 2, 3, 3, 3, 3},
    {2, 17, 17, 24, 40, 1, 1, 1, 1, 0, 0, 0, 0}, /* 1x1 GEMM fast path */
    {2, 17, 17, 24, 16, 1, 1, 2, 2, 0, 0, 0, 0},
};
#define N_CFG ((int)(sizeof cfgs / sizeof cfgs[0]))

/* The ConvShape of a case; depthwise sets K = C. */
static ConvShape shape_of(const Cfg *c, int depthwise)
{
    ConvShape s = {
        .N = c->N, .H = c->H, .W = c->W, .C = c->C, .K = depthwise ? c->C : c->K,
        .R = c->R, .S = c->S, .stride_h = c->sh, .stride_w = c->sw,
        .pad_t = c->pt, .pad_l = c->pl,
        .P = (c->H + c->pt + c->pb - c->R) / c->sh + 1,
        .Q = (c->W + c->pl + c->pr - c->S) / c->sw + 1,
    };
    return s;
}

/* Direct convolution in double: out (N,P,Q,K); depthwise reads w (R,S,C). */
static void naive_conv(real *out, const real *x, const real *w, const real *bias,
                       const ConvShape *s, int depthwise)
{
    for (int n = 0; n < s->N; n++)
        for (int p = 0; p < s->P; p++)
            for (int q = 0; q < s->Q; q++)
                for (int k = 0; k < s->K; k++) {
                    double acc = bias ? bias[k] : 0;
                    for (int r = 0; r < s->R; r++)
                        for (int t = 0; t < s->S; t++) {
                            int h = p * s->stride_h - s->pad_t + r;
                            int wc = q * s->stride_w - s->pad_l + t;
                            if (h < 0 || h >= s->H || wc < 0 || wc >= s->W) continue;
                            const real *xr = x + (((size_t)n * s->H + h) * s->W + wc) * s->C;
                            if (depthwise) {
                                acc += (double)xr[k] * w[((size_t)r * s->S + t) * s->C + k];
                                continue;
                            }
                            for (int c = 0; c < s->C; c++)
                                acc += (double)xr[c] *
                                       w[(((size_t)r * s->S + t) * s->C + c) * s->K + k];
                        }
                    out[(((size_t)n * s->P + p) * s->Q + q) * s->K + k] = (real)acc;
                }
}

/* Random x, weights scaled by 1/sqrt(fan-in) (outputs of order 1), bias. */
static void conv_data(const ConvShape *s, int depthwise, real **x, real **w, real **b)
{
    size_t nx = (size_t)s->N * s->H * s->W * s->C;
    size_t fan = depthwise ? (size_t)s->R * s->S : (size_t)s->R * s->S * s->C;
    size_t nw = depthwise ? fan * s->C : fan * s->K;
    *x = vec(nx);
    *w = vec(nw);
    *b = vec((size_t)s->K);
    fill(*x, nx, -1, 1);
    fill(*w, nw, -sqrt(3.0 / fan), sqrt(3.0 / fan));
    fill(*b, (size_t)s->K, -0.5, 0.5);
}

/* Short text naming a case. */
static void cfg_name(char *buf, size_t n, const char *op, int i, const Cfg *c)
{
    snprintf(buf, n, "%s[%d] %dx%dx%d->%d k%dx%d/%d,%d p%d%d%d%d", op, i, c->H, c->W, c->C,
             strstr(op, "dwconv") ? c->C : c->K, c->R, c->S, c->sh, c->sw, c->pt, c->pb, c->pl, c->pr);
}

START_TEST(conv_vs_naive)
{
    const Cfg *c = &cfgs[_i];
    ConvShape s = shape_of(c, 0);
    char what[96];
    cfg_name(what, sizeof what, "conv2d vs naive", _i, c);
    rng_seed(200 + (uint64_t)_i);
    real *x, *w, *b;
    conv_data(&s, 0, &x, &w, &b);
    size_t no = (size_t)s.N * s.P * s.Q * s.K;
    size_t nws = conv2d_workspace(&s);
    if (c->R == 1 && c->S == 1 && c->sh == 1 && c->sw == 1)
        ck_assert_msg(nws == 0, "%s: 1x1 stride-1 conv should need no workspace (%zu)", what, nws);
    real *ws = nws ? vec(nws) : NULL, *got = vec(no), *ref = vec(no);
    conv2d_forward(got, x, w, _i % 2 ? NULL : b, ws, &s);
    naive_conv(ref, x, w, _i % 2 ? NULL : b, &s, 0);
    expect_close(what, got, ref, no, 1e-5, RTOL);
    free(x); free(w); free(b); free(ws); free(got); free(ref);
}
END_TEST

START_TEST(dwconv_vs_naive)
{
    const Cfg *c = &cfgs[_i];
    ConvShape s = shape_of(c, 1);
    char what[96];
    cfg_name(what, sizeof what, "dwconv2d vs naive", _i, c);
    rng_seed(300 + (uint64_t)_i);
    real *x, *w, *b;
    conv_data(&s, 1, &x, &w, &b);
    size_t no = (size_t)s.N * s.P * s.Q * s.K;
    real *got = vec(no), *ref = vec(no);
    dwconv2d_forward(got, x, w, _i % 2 ? NULL : b, &s);
    naive_conv(ref, x, w, _i % 2 ? NULL : b, &s, 1);
    expect_close(what, got, ref, no, 1e-5, RTOL);
    free(x); free(w); free(b); free(got); free(ref);
}
END_TEST

/* ---- BN folding ------------------------------------------------------------------------ */

/* Case i: cfgs[i / 2] (first four), depthwise when i is odd; with bias for
 * i / 2 even. conv(x; fold(w, b)) == affine(conv(x; w, b)). */
START_TEST(bn_fold_matches)
{
    const Cfg *c = &cfgs[_i / 2];
    int depthwise = _i % 2, with_bias = (_i / 2) % 2 == 0;
    ConvShape s = shape_of(c, depthwise);
    char what[96];
    cfg_name(what, sizeof what, depthwise ? "bn_fold dwconv" : "bn_fold conv", _i / 2, c);
    if (!with_bias) strncat(what, " nobias", sizeof what - strlen(what) - 1);
    rng_seed(400 + (uint64_t)_i);
    real *x, *w, *b;
    conv_data(&s, depthwise, &x, &w, &b);
    const int K = s.K;
    real *gamma = vec(K), *beta = vec(K), *mean = vec(K), *var = vec(K);
    real *scale = vec(K), *shift = vec(K);
    fill(gamma, K, 0.5, 2);
    fill(beta, K, -1, 1);
    fill(mean, K, -0.5, 0.5);
    fill(var, K, 0.2, 2);
    bn_scale_shift(scale, shift, gamma, beta, mean, var, 1e-3f, K);

    size_t rows = depthwise ? (size_t)s.R * s.S : (size_t)s.R * s.S * s.C;
    real *wf = vec(rows * K), *bf = vec(K);
    bn_fold(wf, bf, w, with_bias ? b : NULL, scale, shift, rows, K);

    size_t no = (size_t)s.N * s.P * s.Q * K;
    size_t nws = depthwise ? 0 : conv2d_workspace(&s);
    real *ws = nws ? vec(nws) : NULL, *ref = vec(no), *got = vec(no);
    if (depthwise) {
        dwconv2d_forward(ref, x, w, with_bias ? b : NULL, &s);
        dwconv2d_forward(got, x, wf, bf, &s);
    } else {
        conv2d_forward(ref, x, w, with_bias ? b : NULL, ws, &s);
        conv2d_forward(got, x, wf, bf, ws, &s);
    }
    channel_affine_forward(ref, ref, scale, shift, s.N * (size_t)s.P * s.Q, K);
    expect_close(what, got, ref, no, 1e-5, RTOL);

    real *bufs[] = {x, w, b, gamma, beta, mean, var, scale, shift, wf, bf, ws, ref, got};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}
END_TEST

/* ---- reductions at a large size ------------------------------------------------------ */

/* Per-channel reductions over many rows (several reduction chunks) against
 * plain double sums: BN batch statistics and running update, BN parameter
 * gradients, conv/dense bias gradients, global average pooling. */
START_TEST(reductions_vs_naive)
{
    const int N = 8, HW = 33 * 31, C = 20;
    const size_t M = (size_t)N * HW, n = M * C;
    rng_seed(600);
    real *x = vec(n), *dout = vec(n), *out = vec(n), *dx = vec(n);
    real *gamma = vec(C), *beta = vec(C), *mean = vec(C), *inv = vec(C), *rm = vec(C), *rv = vec(C);
    real *dg = vec(C), *db = vec(C), *gap = vec((size_t)N * C);
    real *want = vec(n > 4 * (size_t)C ? n : 4 * (size_t)C);
    fill(x, n, -1, 3);
    fill(dout, n, -1, 1);
    fill(gamma, C, 0.5, 2);
    fill(beta, C, -1, 1);
    fill(rv, C, 0.5, 2);
    real *rm0 = vec(C), *rv0 = vec(C);
    memcpy(rv0, rv, C * sizeof *rv);
    bn_train_forward(out, mean, inv, x, gamma, beta, rm, rv, 0.9f, 1e-3f, M, C);
    bn_train_backward(dx, dg, db, dout, x, mean, inv, gamma, M, C, 0);

    double *sx = calloc((size_t)C * 6, sizeof *sx);
    ck_assert_ptr_nonnull(sx);
    double *sxx = sx + C, *sd = sx + 2 * C, *sdx = sx + 3 * C;
    for (size_t m = 0; m < M; m++)
        for (int c = 0; c < C; c++) sx[c] += x[m * C + c];
    for (int c = 0; c < C; c++) sx[c] /= (double)M;
    for (size_t m = 0; m < M; m++)
        for (int c = 0; c < C; c++) {
            double d = x[m * C + c] - sx[c];
            sxx[c] += d * d;
            sd[c] += dout[m * C + c];
            sdx[c] += dout[m * C + c] * ((x[m * C + c] - (double)mean[c]) * inv[c]);
        }
    real *w_mean = want, *w_inv = want + C, *w_rm = want + 2 * C, *w_rv = want + 3 * C;
    for (int c = 0; c < C; c++) {
        double var = sxx[c] / (double)M;
        w_mean[c] = (real)sx[c];
        w_inv[c] = (real)(1 / sqrt(var + 1e-3));
        w_rm[c] = (real)(0.9 * rm0[c] + 0.1 * sx[c]);
        w_rv[c] = (real)(0.9 * rv0[c] + 0.1 * var * (double)M / (double)(M - 1));
    }
    expect_close("bn_train_forward mean, M=8184", mean, w_mean, C, 1e-6, RTOL);
    expect_close("bn_train_forward invstd, M=8184", inv, w_inv, C, 1e-6, RTOL);
    expect_close("bn_train_forward run_mean, M=8184", rm, w_rm, C, 1e-6, RTOL);
    expect_close("bn_train_forward run_var, M=8184", rv, w_rv, C, 1e-6, RTOL);
    for (int c = 0; c < C; c++) {
        want[c] = (real)sdx[c];
        want[C + c] = (real)sd[c];
    }
    expect_close("bn_train_backward dgamma, M=8184", dg, want, C, 1e-5, RTOL);
    expect_close("bn_train_backward dbeta, M=8184", db, want + C, C, 1e-5, RTOL);
    for (size_t m = 0; m < M; m++)
        for (int c = 0; c < C; c++) {
            size_t i = m * C + c;
            double xh = (x[i] - (double)mean[c]) * inv[c];
            want[i] = (real)(gamma[c] * inv[c] * (dout[i] - sd[c] / M - xh * sdx[c] / M));
        }
    expect_close("bn_train_backward dx, M=8184", dx, want, n, 1e-6, RTOL);

    /* bias gradients: conv (1x1 fast path) and dense, both column sums */
    ConvShape cs = {.N = N, .H = 33, .W = 31, .C = C, .K = C, .R = 1, .S = 1,
                    .stride_h = 1, .stride_w = 1, .P = 33, .Q = 31};
    conv2d_backward(NULL, NULL, dg, dout, x, gamma, NULL, &cs, 0);
    dense_backward(NULL, NULL, db, dout, x, gamma, (int)M, 1, C, 0);
    for (int c = 0; c < C; c++) want[c] = (real)sd[c];
    expect_close("conv2d_backward dbias, 8184 rows", dg, want, C, 1e-5, RTOL);
    expect_close("dense_backward dbias, 8184 rows", db, want, C, 1e-5, RTOL);

    gap_forward(gap, x, N, HW, C);
    for (int b = 0; b < N; b++)
        for (int c = 0; c < C; c++) {
            double t = 0;
            for (int i = 0; i < HW; i++) t += x[((size_t)b * HW + i) * C + c];
            want[(size_t)b * C + c] = (real)(t / HW);
        }
    expect_close("gap_forward, HW=1023", gap, want, (size_t)N * C, 1e-6, RTOL);

    real *bufs[] = {x, dout, out, dx, gamma, beta, mean, inv, rm, rv, dg, db, gap, want, rm0, rv0};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(sx);
}
END_TEST

/* ---- gemm against a naive product ---------------------------------------------------- */

/* (M, N, K): one BLAS call, C cut into rows, into columns, into both, and
 * cut with ragged last blocks. */
static const int gemm_shapes[][3] = {
    {5, 7, 3}, {1000, 40, 300}, {40, 1000, 300}, {40, 40, 8192}, {33, 50, 2000},
};
#define N_GEMM_SHAPES ((int)(sizeof gemm_shapes / sizeof gemm_shapes[0]))

/* Case i = ((shape * 2 + transA) * 2 + transB) * 2 + (beta != 0): gemm() with
 * padded leading dimensions against the product in double; the padding of C
 * stays untouched. */
START_TEST(gemm_vs_naive)
{
    const int *sh = gemm_shapes[_i / 8];
    const int M = sh[0], N = sh[1], K = sh[2];
    const int ta = _i / 4 % 2, tb = _i / 2 % 2, acc = _i % 2;
    const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
    const real alpha = 0.5f, beta = acc ? 0.75f : 0;
    rng_seed(700 + (uint64_t)_i);
    real *A = vec((size_t)(ta ? K : M) * lda), *B = vec((size_t)(tb ? N : K) * ldb);
    real *C = vec((size_t)M * ldc), *C0 = vec((size_t)M * ldc), *want = vec((size_t)M * N);
    real *got = vec((size_t)M * N);
    fill(A, (size_t)(ta ? K : M) * lda, -1, 1);
    fill(B, (size_t)(tb ? N : K) * ldb, -1, 1);
    fill(C0, (size_t)M * ldc, -1, 1);
    memcpy(C, C0, (size_t)M * ldc * sizeof *C);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double t = 0;
            for (int k = 0; k < K; k++)
                t += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                     (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
            want[(size_t)i * N + j] = (real)(alpha * t + beta * C0[(size_t)i * ldc + j]);
        }
    gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    size_t pad_changed = 0;
    for (int i = 0; i < M; i++) {
        memcpy(got + (size_t)i * N, C + (size_t)i * ldc, (size_t)N * sizeof *got);
        pad_changed += memcmp(C + (size_t)i * ldc + N, C0 + (size_t)i * ldc + N,
                              (size_t)(ldc - N) * sizeof *C) != 0;
    }
    char what[96];
    snprintf(what, sizeof what, "gemm %dx%dx%d ta=%d tb=%d beta=%g", M, N, K, ta, tb, (double)beta);
    expect_close(what, got, want, (size_t)M * N, 1e-6 * K, RTOL);
    ck_assert_msg(pad_changed == 0, "%s: wrote into the padding of %zu rows of C", what, pad_changed);
    real *bufs[] = {A, B, C, C0, want, got};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}
END_TEST

/* ---- thread invariance ---------------------------------------------------------------- */

/* Every output of the OpenMP kernels and of every GEMM caller at a size above
 * the parallel thresholds (a GEMM cut into several blocks), computed with
 * `threads` threads into out (a list of buffers). cs is a 3x3 conv (im2col),
 * pw a 1x1 conv (the GEMM on x), ps the depthwise and pooling shape; the
 * dense layer is (DENSE_N, DENSE_F) x (DENSE_F, DENSE_K) on x. */
enum { DENSE_N = 256, DENSE_F = 1024, DENSE_K = 100 };

typedef struct {
    ConvShape cs, pw, ps;
    real *x, *w, *wd, *wdense, *dout, *doutp, *gamma, *beta, *scale, *shift, *res, *s, *ds_in;
    size_t nx, no, nop, M;
} Big;

enum { T_CONV_OUT, T_CONV_DX, T_CONV_DW, T_CONV_DB, T_PW_OUT, T_PW_DX, T_PW_DW, T_DENSE_OUT,
       T_DENSE_DX, T_DENSE_DW, T_DW_OUT, T_DW_DX, T_DW_DW, T_DW_DB, T_MP_OUT, T_MP_DX,
       T_BN_OUT, T_BN_MEAN, T_BN_INV, T_BN_DX, T_BN_DG, T_EPI_OUT, T_EPI_DZ, T_EPI_DG,
       T_CM_DX, T_CM_DS, T_GAP, T_DROP, T_PAD, T_COUNT };

static const char *const t_names[T_COUNT] = {
    "conv2d_forward", "conv2d_backward dx", "conv2d_backward dw", "conv2d_backward dbias",
    "conv2d_forward 1x1", "conv2d_backward 1x1 dx", "conv2d_backward 1x1 dw", "dense_forward",
    "dense_backward dx", "dense_backward dw", "dwconv2d_forward",
    "dwconv2d_backward dx", "dwconv2d_backward dw", "dwconv2d_backward dbias",
    "maxpool_forward", "maxpool_backward", "bn_train_forward out", "bn_train_forward mean",
    "bn_train_forward invstd", "bn_train_backward dx", "bn_train_backward dgamma",
    "epilogue_forward", "epilogue_backward dz", "epilogue_backward dgamma",
    "chanmul_backward dx", "chanmul_backward ds", "gap_forward", "dropout_forward",
    "zeropad_forward"};

/* Sizes of each output. */
static size_t t_size(const Big *b, int t)
{
    int C = b->cs.C, K = b->cs.K;
    switch (t) {
    case T_CONV_DW: return (size_t)9 * C * K;
    case T_PW_DW: return (size_t)C * K;
    case T_DENSE_OUT: return (size_t)DENSE_N * DENSE_K;
    case T_DENSE_DW: return (size_t)DENSE_F * DENSE_K;
    case T_CONV_DB: case T_BN_MEAN: case T_BN_INV: case T_BN_DG: case T_EPI_DG: return (size_t)K;
    case T_DW_DW: return (size_t)9 * C;
    case T_DW_DB: return (size_t)C;
    case T_DW_OUT: case T_MP_OUT: return b->nop;
    case T_CM_DS: case T_GAP: return (size_t)b->cs.N * C;
    case T_PAD: return (size_t)b->cs.N * (b->cs.H + 2) * (b->cs.W + 2) * C;
    case T_BN_OUT: case T_BN_DX: case T_EPI_OUT: case T_EPI_DZ: return b->no;
    default: return b->nx;
    }
}

/* Run every kernel once on `threads` threads. */
static void big_run(const Big *b, real **o, int threads)
{
    omp_set_num_threads(threads);
    const int C = b->cs.C, K = b->cs.K;
    real *ws = vec(conv2d_workspace(&b->cs));
    real *mean = vec(K), *inv = vec(K), *rm = vec(K), *rv = vec(K), *tmp = vec(b->no);
    conv2d_forward(o[T_CONV_OUT], b->x, b->w, b->gamma, ws, &b->cs);
    conv2d_backward(o[T_CONV_DX], o[T_CONV_DW], o[T_CONV_DB], b->dout, b->x, b->w, ws, &b->cs, 0);
    conv2d_forward(o[T_PW_OUT], b->x, b->w, NULL, NULL, &b->pw);
    conv2d_backward(o[T_PW_DX], o[T_PW_DW], NULL, b->dout, b->x, b->w, NULL, &b->pw, 0);
    dense_forward(o[T_DENSE_OUT], b->x, b->wdense, b->s, DENSE_N, DENSE_F, DENSE_K);
    dense_backward(o[T_DENSE_DX], o[T_DENSE_DW], NULL, b->dout, b->x, b->wdense, DENSE_N, DENSE_F,
                   DENSE_K, 0);
    dwconv2d_forward(o[T_DW_OUT], b->x, b->wd, b->gamma, &b->ps);
    dwconv2d_backward(o[T_DW_DX], o[T_DW_DW], o[T_DW_DB], b->doutp, b->x, b->wd, &b->ps, 0);
    maxpool_forward(o[T_MP_OUT], b->x, &b->ps);
    maxpool_backward(o[T_MP_DX], b->doutp, b->x, &b->ps, 0);
    bn_train_forward(o[T_BN_OUT], o[T_BN_MEAN], o[T_BN_INV], b->dout, b->gamma, b->beta, rm, rv,
                     0.9f, 1e-3f, b->M, K);
    bn_train_backward(o[T_BN_DX], o[T_BN_DG], tmp, b->res, b->dout, o[T_BN_MEAN], o[T_BN_INV],
                      b->gamma, b->M, K, 0);
    Epilogue e = {EPI_BN_TRAIN, ACT_SWISH, 1, 1e-3f, 0.9f};
    epilogue_forward(o[T_EPI_OUT], mean, inv, b->dout, b->gamma, b->beta, rm, rv, NULL, NULL,
                     b->res, &e, b->M, K);
    epilogue_backward(o[T_EPI_DZ], o[T_EPI_DG], tmp, NULL, 0, b->res, b->dout, mean, inv,
                      b->gamma, NULL, b->beta, &e, b->M, K);
    chanmul_backward(o[T_CM_DX], o[T_CM_DS], b->x, b->x, b->s, b->cs.N, b->cs.H * b->cs.W, C,
                     0, 0);
    gap_forward(o[T_GAP], b->x, b->cs.N, b->cs.H * b->cs.W, C);
    dropout_forward(o[T_DROP], b->x, b->nx, 0.25f, 4242);
    zeropad_forward(o[T_PAD], b->x, b->cs.N, b->cs.H, b->cs.W, C, 1, 1, 1, 1);
    free(ws); free(mean); free(inv); free(rm); free(rv); free(tmp);
}

START_TEST(thread_invariance)
{
    Big b;
    Cfg conv = {8, 32, 32, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1};
    Cfg pool = {8, 32, 32, 32, 32, 3, 3, 2, 2, 1, 1, 1, 1};
    Cfg pw = {8, 32, 32, 32, 32, 1, 1, 1, 1, 0, 0, 0, 0};
    b.cs = shape_of(&conv, 0);
    b.pw = shape_of(&pw, 0);
    b.ps = shape_of(&pool, 1);
    b.nx = (size_t)8 * 32 * 32 * 32;
    b.no = b.nx;
    b.M = (size_t)8 * 32 * 32;
    b.nop = (size_t)8 * b.ps.P * b.ps.Q * 32;
    rng_seed(500);
    b.x = vec(b.nx); fill(b.x, b.nx, -1, 1);
    b.w = vec(9 * 32 * 32); fill(b.w, 9 * 32 * 32, -0.1, 0.1);
    b.wd = vec(9 * 32); fill(b.wd, 9 * 32, -0.3, 0.3);
    b.wdense = vec(DENSE_F * DENSE_K); fill(b.wdense, DENSE_F * DENSE_K, -0.05, 0.05);
    b.dout = vec(b.no); fill(b.dout, b.no, -1, 1);
    b.doutp = vec(b.nop); fill(b.doutp, b.nop, -1, 1);
    b.res = vec(b.no); fill(b.res, b.no, -1, 1);
    b.gamma = vec(32); fill(b.gamma, 32, 0.5, 2);
    b.beta = vec(32); fill(b.beta, 32, -1, 1);
    b.s = vec(8 * 32); fill(b.s, 8 * 32, -1, 1);
    ck_assert(b.pw.P == 32 && b.pw.Q == 32 && conv2d_workspace(&b.pw) == 0);
    real *o1[T_COUNT], *on[T_COUNT];
    for (int t = 0; t < T_COUNT; t++) {
        o1[t] = vec(t_size(&b, t));
        on[t] = vec(t_size(&b, t));
    }
    big_run(&b, o1, 1);
    for (int threads = 2; threads <= 3; threads++) {
        printf("%d threads against 1:\n", threads);
        big_run(&b, on, threads);
        for (int t = 0; t < T_COUNT; t++) expect_same(t_names[t], on[t], o1[t], t_size(&b, t));
    }
    for (int t = 0; t < T_COUNT; t++) {
        free(o1[t]);
        free(on[t]);
    }
    real *bufs[] = {b.x, b.w, b.wd, b.wdense, b.dout, b.doutp, b.res, b.gamma, b.beta, b.s};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}
END_TEST

/* ---- suite ---------------------------------------------------------------------------- */

static Suite *kernels_suite(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("float");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, fused_vs_unfused, 0, 30);
    tcase_add_loop_test(tc, conv_vs_naive, 0, N_CFG);
    tcase_add_loop_test(tc, dwconv_vs_naive, 0, N_CFG);
    tcase_add_loop_test(tc, bn_fold_matches, 0, 8);
    tcase_add_test(tc, reductions_vs_naive);
    tcase_add_loop_test(tc, gemm_vs_naive, 0, 8 * N_GEMM_SHAPES);
    tcase_add_test(tc, thread_invariance);
    suite_add_tcase(s, tc);
    return s;
}

Suite *test_suite(void)
{
    return kernels_suite();
}
