/* tests/test_grad.c — gradient checks of every CPU kernel's backward pass.
 *
 * Built with -DKILN_REAL=double against the kernel sources themselves, so the
 * code under test is the production code evaluated in double precision. For
 * each op the scalar loss is L = sum(out * r) with r random and fixed; the
 * backward pass is run with dout = r and every input and parameter gradient is
 * compared with central finite differences of L (step FD_H). Per tensor the
 * check asserts
 *   normwise  ||a - fd|| / ||fd||                               < NORM_TOL
 *   per element |a - fd| / max(|a|, |fd|, 1e-6 * max|fd|)     < ELEM_TOL.
 * Inputs are kept away from the relu/relu6 kinks and max-pool ties so the
 * finite differences never straddle a non-differentiable point. Each check
 * prints one line "grad <op> <tensor> norm ... elem ..." (the measured error).
 *
 * Also here: acc = 0 overwrites / acc = 1 adds for every input gradient, NULL
 * gradient pointers, the SGD update against a hand-computed example, the BN
 * running-statistics update, dropout's recomputed mask, softmax stability.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/kernels.h"
#include "tests/suite_main.h"
#include "tests/test_rng.h"   /* rng_seed, urand, irand */

#define FD_H 1e-5
#define NORM_TOL 1e-6
#define ELEM_TOL 1e-3

/* ---- helpers: buffers (the PRNG: tests/test_rng.h) ------------------------------ */

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

/* a[i] uniform in [lo, hi) but at least `gap` away from 0 and from 6 (the
 * relu and relu6 kinks). */
static void fill_away(real *a, size_t n, double lo, double hi, double gap)
{
    for (size_t i = 0; i < n; i++) {
        double v;
        do v = lo + (hi - lo) * urand();
        while (fabs(v) < gap || fabs(v - 6) < gap);
        a[i] = (real)v;
    }
}

/* sum a[i]*r[i] in double: the scalar loss. */
static double dot(const real *a, const real *r, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * r[i];
    return s;
}

/* Largest |a[i] - b[i]| / (atol + rtol*|b[i]|) over n; <= 1 means they agree. */
static double worst_close(const real *a, const real *b, size_t n, double atol, double rtol)
{
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (atol + rtol * fabs((double)b[i]));
        if (!(e <= w)) w = e; /* NaN counts as worst */
    }
    return w;
}

/* ---- the finite-difference checker ----------------------------------------------- */

typedef double (*LossFn)(void *ctx);

/* Compare the analytic gradient g (n) of f() with respect to p (n) against
 * central differences, perturbing p in place; prints and asserts the errors. */
static void grad_check(const char *op, const char *tensor, LossFn f, void *ctx,
                       real *p, const real *g, size_t n)
{
    real *fd = vec(n);
    for (size_t i = 0; i < n; i++) {
        real keep = p[i];
        p[i] = keep + FD_H;
        double lp = f(ctx);
        p[i] = keep - FD_H;
        double lm = f(ctx);
        p[i] = keep;
        fd[i] = (real)((lp - lm) / (2 * FD_H));
    }
    double scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)fd[i]));
    double num = 0, den = 0, elem = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)g[i] - fd[i]);
        num += d * d;
        den += (double)fd[i] * fd[i];
        double e = d / fmax(fmax(fabs((double)g[i]), fabs((double)fd[i])), 1e-6 * scale + 1e-300);
        if (!(e <= elem)) {
            elem = e;
            at = i;
        }
    }
    double norm = den > 0 ? sqrt(num) / sqrt(den) : sqrt(num);
    printf("grad %-36s %-7s n=%5zu  norm %.2e  elem %.2e\n", op, tensor, n, norm, elem);
    fflush(stdout);
    ck_assert_msg(scale > 0 || n == 0, "%s d%s: finite differences are all zero (test is vacuous)",
                  op, tensor);
    ck_assert_msg(norm < NORM_TOL,
                  "%s d%s: normwise relative error %.3e >= %.0e (worst element %zu: analytic %.12g, fd %.12g)",
                  op, tensor, norm, NORM_TOL, at, (double)g[at], (double)fd[at]);
    ck_assert_msg(elem < ELEM_TOL,
                  "%s d%s: element %zu relative error %.3e >= %.0e (analytic %.12g, fd %.12g)",
                  op, tensor, at, elem, ELEM_TOL, (double)g[at], (double)fd[at]);
    free(fd);
}

/* ---- convolution shapes ------------------------------------------------------------ */

typedef struct {
    int N, H, W, C, K, R, S, sh, sw, pt, pb, pl, pr, bias;
} ConvCfg;

/* Hand-picked cases: same padding, stride 2, padding on each single side,
 * asymmetric (TF "same" stride 2), non-square kernels, the 1x1 fast path. */
static const ConvCfg conv_cfgs[] = {
    /* N  H  W  C  K  R  S sh sw pt pb pl pr bias */
    {2, 5, 7, 3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {2, 7, 9, 3, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1},
    {1, 8, 7, 2, 3, 3, 3, 2, 2, 0, 1, 0, 1, 0},
    {2, 5, 5, 2, 3, 3, 3, 1, 1, 1, 0, 0, 0, 1},
    {2, 5, 5, 2, 3, 3, 3, 1, 1, 0, 2, 0, 0, 0},
    {2, 5, 5, 2, 3, 3, 3, 1, 1, 0, 0, 1, 0, 1},
    {2, 5, 5, 2, 3, 3, 3, 1, 1, 0, 0, 0, 2, 0},
    {1, 6, 9, 3, 2, 5, 3, 1, 2, 2, 0, 0, 1, 1},
    {3, 4, 5, 1, 3, 2, 2, 1, 1, 0, 1, 1, 0, 1},
    {2, 5, 3, 4, 6, 1, 1, 1, 1, 0, 0, 0, 0, 1}, /* 1x1 fast path */
    {2, 5, 3, 4, 6, 1, 1, 1, 1, 0, 0, 0, 0, 0}, /* 1x1 fast path, no bias */
    {2, 5, 5, 3, 4, 1, 1, 2, 2, 0, 0, 0, 0, 0}, /* 1x1 stride 2: im2col */
    {1, 7, 7, 3, 2, 7, 7, 2, 2, 3, 3, 3, 3, 1}, /* stem-like 7x7/2 */
    {1, 5, 4, 19, 3, 3, 3, 2, 1, 1, 1, 1, 1, 1}, /* C > 16: crosses dwconv channel blocks */
};
#define N_CONV_FIXED ((int)(sizeof conv_cfgs / sizeof conv_cfgs[0]))
#define N_CONV_RANDOM 6

/* Case i: a fixed case, or a random one (odd sizes) from a seed derived from i. */
static ConvCfg conv_cfg(int i)
{
    if (i < N_CONV_FIXED) return conv_cfgs[i];
    rng_seed(7000 + (uint64_t)i);
    ConvCfg c;
    c.N = irand(1, 2);
    c.H = 2 * irand(1, 4) + 1;
    c.W = 2 * irand(1, 4) + 1;
    c.C = irand(1, 4);
    c.K = irand(1, 5);
    c.R = irand(1, 4);
    c.S = irand(1, 4);
    c.sh = irand(1, 2);
    c.sw = irand(1, 2);
    c.pt = irand(0, c.R - 1);
    c.pb = irand(0, c.R - 1);
    c.pl = irand(0, c.S - 1);
    c.pr = irand(0, c.S - 1);
    if (c.H + c.pt + c.pb < c.R) c.pb = c.R - c.H - c.pt;
    if (c.W + c.pl + c.pr < c.S) c.pr = c.S - c.W - c.pl;
    c.bias = irand(0, 1);
    return c;
}

/* The ConvShape of a case (K overridden to C for depthwise and pooling). */
static ConvShape conv_shape(const ConvCfg *c, int depthwise)
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

/* Short text naming a case, for messages. */
static void conv_name(char *buf, size_t n, const char *op, int i, const ConvShape *s,
                      const ConvCfg *c)
{
    snprintf(buf, n, "%s[%d] %dx%dx%d k%dx%d/%d,%d p%d%d%d%d%s", op, i, s->H, s->W, s->C,
             s->R, s->S, s->stride_h, s->stride_w, c->pt, c->pb, c->pl, c->pr,
             c->bias ? " b" : "");
}

/* ---- conv2d ------------------------------------------------------------------------ */

typedef struct {
    ConvShape s;
    real *x, *w, *b, *out, *ws, *r;
    int depthwise;
} ConvCtx;

/* L = sum(conv(x, w, b) * r), conv or depthwise. */
static double conv_loss(void *p)
{
    ConvCtx *c = p;
    if (c->depthwise)
        dwconv2d_forward(c->out, c->x, c->w, c->b, &c->s);
    else
        conv2d_forward(c->out, c->x, c->w, c->b, c->ws, &c->s);
    return dot(c->out, c->r, (size_t)c->s.N * c->s.P * c->s.Q * c->s.K);
}

/* Gradient check of conv2d or dwconv2d for case i. */
static void conv_grad_case(int i, int depthwise)
{
    ConvCfg cfg = conv_cfg(i);
    ConvCtx c = {.s = conv_shape(&cfg, depthwise), .depthwise = depthwise};
    const ConvShape *s = &c.s;
    char name[96];
    conv_name(name, sizeof name, depthwise ? "dwconv2d" : "conv2d", i, s, &cfg);
    ck_assert_msg(s->P >= 1 && s->Q >= 1, "%s: bad case", name);
    rng_seed(100 + (uint64_t)i);
    size_t nx = (size_t)s->N * s->H * s->W * s->C;
    size_t nw = depthwise ? (size_t)s->R * s->S * s->C : (size_t)s->R * s->S * s->C * s->K;
    size_t no = (size_t)s->N * s->P * s->Q * s->K;
    size_t nws = depthwise ? 0 : conv2d_workspace(s);
    if (!depthwise && cfg.R == 1 && cfg.S == 1 && cfg.sh == 1 && cfg.sw == 1 && !cfg.pt &&
        !cfg.pb && !cfg.pl && !cfg.pr)
        ck_assert_msg(nws == 0, "%s: 1x1 fast path should need no workspace, got %zu", name, nws);
    c.x = vec(nx);
    c.w = vec(nw);
    c.b = cfg.bias ? vec((size_t)s->K) : NULL;
    c.out = vec(no);
    c.ws = nws ? vec(nws) : NULL;
    c.r = vec(no);
    fill(c.x, nx, -1, 1);
    fill(c.w, nw, -1, 1);
    if (c.b) fill(c.b, (size_t)s->K, -1, 1);
    fill(c.r, no, -1, 1);

    real *dx = vec(nx), *dw = vec(nw), *db = vec((size_t)s->K);
    if (depthwise)
        dwconv2d_backward(dx, dw, c.b ? db : NULL, c.r, c.x, c.w, s, 0);
    else
        conv2d_backward(dx, dw, c.b ? db : NULL, c.r, c.x, c.w, c.ws, s, 0);
    grad_check(name, "x", conv_loss, &c, c.x, dx, nx);
    grad_check(name, "w", conv_loss, &c, c.w, dw, nw);
    if (c.b) grad_check(name, "bias", conv_loss, &c, c.b, db, (size_t)s->K);
    free(dx); free(dw); free(db);
    free(c.x); free(c.w); free(c.b); free(c.out); free(c.ws); free(c.r);
}

START_TEST(grad_conv2d) { conv_grad_case(_i, 0); }
END_TEST

START_TEST(grad_dwconv2d) { conv_grad_case(_i, 1); }
END_TEST

/* ---- max pool --------------------------------------------------------------------- */

/* Window / stride / padding cases, including stride 2 and uneven padding. */
static const ConvCfg pool_cfgs[] = {
    {2, 6, 6, 3, 0, 2, 2, 2, 2, 0, 0, 0, 0, 0},
    {2, 7, 9, 3, 0, 3, 3, 2, 2, 1, 1, 1, 1, 0},
    {1, 5, 7, 2, 0, 3, 3, 1, 1, 1, 1, 1, 1, 0},
    {2, 7, 5, 2, 0, 3, 2, 2, 1, 1, 0, 0, 1, 0},
    {1, 8, 8, 4, 0, 3, 3, 2, 2, 0, 1, 0, 1, 0},
};
#define N_POOL ((int)(sizeof pool_cfgs / sizeof pool_cfgs[0]))

/* L = sum(maxpool(x) * r). */
static double pool_loss(void *p)
{
    ConvCtx *c = p;
    maxpool_forward(c->out, c->x, &c->s);
    return dot(c->out, c->r, (size_t)c->s.N * c->s.P * c->s.Q * c->s.C);
}

START_TEST(grad_maxpool)
{
    ConvCfg cfg = pool_cfgs[_i];
    ConvCtx c = {.s = conv_shape(&cfg, 1)};
    const ConvShape *s = &c.s;
    char name[96];
    conv_name(name, sizeof name, "maxpool", _i, s, &cfg);
    rng_seed(300 + (uint64_t)_i);
    size_t nx = (size_t)s->N * s->H * s->W * s->C, no = (size_t)s->N * s->P * s->Q * s->C;
    c.x = vec(nx);
    c.out = vec(no);
    c.r = vec(no);
    /* Distinct values 0.01 apart (a shuffled grid): no ties, no swaps under +-h. */
    for (size_t i = 0; i < nx; i++) c.x[i] = (real)(0.01 * (double)i - 0.005 * (double)nx);
    for (size_t i = nx; i > 1; i--) {
        size_t j = (size_t)(urand() * (double)i);
        real t = c.x[i - 1]; c.x[i - 1] = c.x[j]; c.x[j] = t;
    }
    fill(c.r, no, -1, 1);
    real *dx = vec(nx);
    maxpool_backward(dx, c.r, c.x, s, 0);
    grad_check(name, "x", pool_loss, &c, c.x, dx, nx);
    free(dx); free(c.x); free(c.out); free(c.r);
}
END_TEST

/* Ties: every window value equal, so the whole gradient of a window goes to
 * its first valid cell in scan order (r, then s); padded cells never win. */
START_TEST(maxpool_ties)
{
    ConvCfg cfg = {1, 4, 4, 2, 0, 3, 3, 2, 2, 1, 0, 1, 0, 0};
    ConvShape s = conv_shape(&cfg, 1); /* P = Q = 2; window (p,q) starts at (2p-1, 2q-1) */
    real x[32], dout[8], dx[32], out[8];
    for (int i = 0; i < 32; i++) x[i] = -3; /* below the padding's 0 would be, if it were 0 */
    for (int i = 0; i < 8; i++) dout[i] = (real)(i + 1);
    maxpool_forward(out, x, &s);
    for (int i = 0; i < 8; i++)
        ck_assert_msg(out[i] == -3, "maxpool: out[%d] = %g, padding must not win", i, (double)out[i]);
    maxpool_backward(dx, dout, x, &s, 0);
    for (int h = 0; h < 4; h++)
        for (int w = 0; w < 4; w++)
            for (int c = 0; c < 2; c++) {
                /* first valid cell of window (p,q): (max(2p-1,0), max(2q-1,0)) */
                double want = 0;
                for (int p = 0; p < 2; p++)
                    for (int q = 0; q < 2; q++)
                        if (h == (p ? 1 : 0) && w == (q ? 1 : 0)) want += dout[(p * 2 + q) * 2 + c];
                double got = dx[(h * 4 + w) * 2 + c];
                ck_assert_msg(got == want, "maxpool ties: dx[%d,%d,%d] = %g, want %g", h, w, c,
                              got, want);
            }
}
END_TEST

/* ---- zero padding ------------------------------------------------------------------- */

typedef struct {
    int N, H, W, C, pt, pb, pl, pr;
    real *x, *out, *r;
} PadCtx;

/* Number of output values of a zero pad. */
static size_t pad_out_n(const PadCtx *c)
{
    return (size_t)c->N * (c->H + c->pt + c->pb) * (c->W + c->pl + c->pr) * c->C;
}

/* L = sum(zeropad(x) * r). */
static double pad_loss(void *p)
{
    PadCtx *c = p;
    zeropad_forward(c->out, c->x, c->N, c->H, c->W, c->C, c->pt, c->pb, c->pl, c->pr);
    return dot(c->out, c->r, pad_out_n(c));
}

START_TEST(grad_zeropad)
{
    static const int pads[][4] = {{1, 1, 1, 1}, {0, 1, 0, 1}, {2, 0, 1, 3}, {0, 0, 0, 0}};
    PadCtx c = {2, 3, 5, 3, pads[_i][0], pads[_i][1], pads[_i][2], pads[_i][3], 0, 0, 0};
    char name[64];
    snprintf(name, sizeof name, "zeropad[%d] p%d%d%d%d", _i, c.pt, c.pb, c.pl, c.pr);
    rng_seed(400 + (uint64_t)_i);
    size_t nx = (size_t)c.N * c.H * c.W * c.C, no = pad_out_n(&c);
    c.x = vec(nx);
    c.out = vec(no);
    c.r = vec(no);
    fill(c.x, nx, -1, 1);
    fill(c.r, no, -1, 1);
    real *dx = vec(nx);
    zeropad_backward(dx, c.r, c.N, c.H, c.W, c.C, c.pt, c.pb, c.pl, c.pr, 0);
    grad_check(name, "x", pad_loss, &c, c.x, dx, nx);
    free(dx); free(c.x); free(c.out); free(c.r);
}
END_TEST

/* ---- batch norm ---------------------------------------------------------------------- */

typedef struct {
    size_t M;
    int C;
    real *x, *gamma, *beta, *out, *mean, *invstd, *rm, *rv, *var, *scale, *shift, *r;
    real eps, momentum;
} BnCtx;

/* L = sum(bn_train(x) * r). */
static double bn_train_loss(void *p)
{
    BnCtx *c = p;
    bn_train_forward(c->out, c->mean, c->invstd, c->x, c->gamma, c->beta, c->rm, c->rv,
                     c->momentum, c->eps, c->M, c->C);
    return dot(c->out, c->r, c->M * c->C);
}

/* L = sum(channel_affine(x; bn_scale_shift(gamma, beta, mean, var)) * r). */
static double bn_infer_loss(void *p)
{
    BnCtx *c = p;
    bn_scale_shift(c->scale, c->shift, c->gamma, c->beta, c->mean, c->var, c->eps, c->C);
    channel_affine_forward(c->out, c->x, c->scale, c->shift, c->M, c->C);
    return dot(c->out, c->r, c->M * c->C);
}

/* Buffers of a BN context with random data (x with a channel-dependent offset). */
static void bn_setup(BnCtx *c, size_t M, int C)
{
    c->M = M;
    c->C = C;
    c->eps = 1e-3;
    c->momentum = 0.99;
    size_t n = M * C;
    c->x = vec(n); c->out = vec(n); c->r = vec(n);
    c->gamma = vec(C); c->beta = vec(C); c->mean = vec(C); c->invstd = vec(C);
    c->rm = vec(C); c->rv = vec(C); c->var = vec(C); c->scale = vec(C); c->shift = vec(C);
    fill(c->x, n, -1, 1);
    for (size_t i = 0; i < n; i++) c->x[i] = c->x[i] * (real)(1 + i % C) + (real)(i % C);
    fill(c->gamma, C, 0.5, 2);
    fill(c->beta, C, -1, 1);
    fill(c->r, n, -1, 1);
    fill(c->mean, C, -0.5, 0.5);
    fill(c->var, C, 0.5, 2);
    fill(c->rv, C, 0.5, 2);
}

/* Release a BN context. */
static void bn_free(BnCtx *c)
{
    free(c->x); free(c->out); free(c->r); free(c->gamma); free(c->beta); free(c->mean);
    free(c->invstd); free(c->rm); free(c->rv); free(c->var); free(c->scale); free(c->shift);
}

START_TEST(grad_bn_train)
{
    BnCtx c;
    rng_seed(500);
    bn_setup(&c, 3 * 5 * 3, 5);
    bn_train_loss(&c);
    real *dx = vec(c.M * c.C), *dg = vec(c.C), *db = vec(c.C);
    bn_train_backward(dx, dg, db, c.r, c.x, c.mean, c.invstd, c.gamma, c.M, c.C, 0);
    grad_check("bn_train M=45 C=5", "x", bn_train_loss, &c, c.x, dx, c.M * c.C);
    grad_check("bn_train M=45 C=5", "gamma", bn_train_loss, &c, c.gamma, dg, c.C);
    grad_check("bn_train M=45 C=5", "beta", bn_train_loss, &c, c.beta, db, c.C);
    free(dx); free(dg); free(db);
    bn_free(&c);
}
END_TEST

START_TEST(grad_bn_infer)
{
    BnCtx c;
    rng_seed(501);
    bn_setup(&c, 3 * 5 * 3, 5);
    real *dx = vec(c.M * c.C), *dg = vec(c.C), *db = vec(c.C);
    bn_infer_backward(dx, dg, db, c.r, c.x, c.gamma, c.mean, c.var, c.eps, c.M, c.C, 0);
    grad_check("bn_infer M=45 C=5", "x", bn_infer_loss, &c, c.x, dx, c.M * c.C);
    grad_check("bn_infer M=45 C=5", "gamma", bn_infer_loss, &c, c.gamma, dg, c.C);
    grad_check("bn_infer M=45 C=5", "beta", bn_infer_loss, &c, c.beta, db, c.C);
    free(dx); free(dg); free(db);
    bn_free(&c);
}
END_TEST

/* The running statistics after one train step, by hand: x = 1,2,3,4 (one
 * channel): mean 2.5, biased var 1.25, unbiased var 5/3. */
START_TEST(bn_running_stats)
{
    real x[4] = {1, 2, 3, 4}, out[4], g = 2, b = 0.5, mean, invstd, rm = 1, rv = 2;
    bn_train_forward(out, &mean, &invstd, x, &g, &b, &rm, &rv, 0.9, 1e-3, 4, 1);
    ck_assert_msg(fabs(mean - 2.5) < 1e-12, "batch mean %.15g, want 2.5", (double)mean);
    ck_assert_msg(fabs(invstd - 1 / sqrt(1.25 + 1e-3)) < 1e-12,
                  "invstd %.15g, want 1/sqrt(1.25+eps) (biased variance)", (double)invstd);
    ck_assert_msg(fabs(rm - (0.9 * 1 + 0.1 * 2.5)) < 1e-12, "run_mean %.15g, want 1.15", (double)rm);
    ck_assert_msg(fabs(rv - (0.9 * 2 + 0.1 * 5.0 / 3.0)) < 1e-12,
                  "run_var %.15g, want 0.9*2 + 0.1*5/3 (unbiased, Keras momentum)", (double)rv);
    ck_assert_msg(fabs(out[0] - (2 * (1 - 2.5) / sqrt(1.25 + 1e-3) + 0.5)) < 1e-12,
                  "out[0] %.15g", (double)out[0]);
}
END_TEST

/* ---- activations ---------------------------------------------------------------------- */

typedef struct {
    size_t n;
    Act act;
    real *x, *out, *r;
} ActCtx;

static const char *const act_names[] = {"none", "relu", "relu6", "swish", "sigmoid"};

/* L = sum(act(x) * r). */
static double act_loss(void *p)
{
    ActCtx *c = p;
    act_forward(c->out, c->x, c->n, c->act);
    return dot(c->out, c->r, c->n);
}

START_TEST(grad_act)
{
    ActCtx c = {.n = 257, .act = (Act)_i};
    char name[48];
    snprintf(name, sizeof name, "act %s", act_names[_i]);
    rng_seed(600 + (uint64_t)_i);
    c.x = vec(c.n); c.out = vec(c.n); c.r = vec(c.n);
    fill_away(c.x, c.n, -8, 8, 0.05);
    fill(c.r, c.n, -1, 1);
    real *dx = vec(c.n);
    act_backward(dx, c.r, c.x, c.n, c.act, 0);
    grad_check(name, "x", act_loss, &c, c.x, dx, c.n);
    free(dx); free(c.x); free(c.out); free(c.r);
}
END_TEST

/* ---- add / grad_pass, chanmul, gap --------------------------------------------------- */

typedef struct {
    int N, HW, C;
    real *a, *b, *out, *r;
} EwCtx;

/* L = sum((a + b) * r). */
static double add_loss(void *p)
{
    EwCtx *c = p;
    size_t n = (size_t)c->N * c->HW * c->C;
    add_forward(c->out, c->a, c->b, n);
    return dot(c->out, c->r, n);
}

/* L = sum(chanmul(a, b) * r), a (N,HW,C), b (N,C). */
static double chanmul_loss(void *p)
{
    EwCtx *c = p;
    chanmul_forward(c->out, c->a, c->b, c->N, c->HW, c->C);
    return dot(c->out, c->r, (size_t)c->N * c->HW * c->C);
}

/* L = sum(gap(a) * r). */
static double gap_loss(void *p)
{
    EwCtx *c = p;
    gap_forward(c->out, c->a, c->N, c->HW, c->C);
    return dot(c->out, c->r, (size_t)c->N * c->C);
}

/* An elementwise context (N,HW,C) with a, r of full size and b of size (N,C)
 * or full size. */
static void ew_setup(EwCtx *c, int N, int HW, int C, int b_full)
{
    size_t n = (size_t)N * HW * C;
    c->N = N; c->HW = HW; c->C = C;
    c->a = vec(n); c->b = vec(b_full ? n : (size_t)N * C); c->out = vec(n); c->r = vec(n);
    fill(c->a, n, -1, 1);
    fill(c->b, b_full ? n : (size_t)N * C, -1, 1);
    fill(c->r, n, -1, 1);
}

/* Release an elementwise context. */
static void ew_free(EwCtx *c) { free(c->a); free(c->b); free(c->out); free(c->r); }

START_TEST(grad_add)
{
    EwCtx c;
    rng_seed(700);
    ew_setup(&c, 2, 15, 3, 1);
    size_t n = (size_t)c.N * c.HW * c.C;
    real *da = vec(n), *db = vec(n);
    grad_pass(da, c.r, n, 0);
    grad_pass(db, c.r, n, 0);
    grad_check("add/grad_pass", "a", add_loss, &c, c.a, da, n);
    grad_check("add/grad_pass", "b", add_loss, &c, c.b, db, n);
    free(da); free(db);
    ew_free(&c);
}
END_TEST

START_TEST(grad_chanmul)
{
    EwCtx c;
    rng_seed(701);
    ew_setup(&c, 3, 7, 5, 0);
    size_t n = (size_t)c.N * c.HW * c.C;
    real *dx = vec(n), *ds = vec((size_t)c.N * c.C);
    chanmul_backward(dx, ds, c.r, c.a, c.b, c.N, c.HW, c.C, 0, 0);
    grad_check("chanmul N=3 HW=7 C=5", "x", chanmul_loss, &c, c.a, dx, n);
    grad_check("chanmul N=3 HW=7 C=5", "s", chanmul_loss, &c, c.b, ds, (size_t)c.N * c.C);
    free(dx); free(ds);
    ew_free(&c);
}
END_TEST

START_TEST(grad_gap)
{
    EwCtx c;
    rng_seed(702);
    ew_setup(&c, 3, 9, 5, 0);
    size_t n = (size_t)c.N * c.HW * c.C;
    real *dx = vec(n);
    gap_backward(dx, c.r, c.N, c.HW, c.C, 0);
    grad_check("gap N=3 HW=9 C=5", "x", gap_loss, &c, c.a, dx, n);
    free(dx);
    ew_free(&c);
}
END_TEST

/* ---- dense, dropout, softmax ------------------------------------------------------------ */

typedef struct {
    int N, F, K;
    real *x, *w, *b, *out, *r;
    int32_t *labels;
    real rate;
    uint64_t seed;
} DenseCtx;

/* L = sum(dense(x) * r). */
static double dense_loss(void *p)
{
    DenseCtx *c = p;
    dense_forward(c->out, c->x, c->w, c->b, c->N, c->F, c->K);
    return dot(c->out, c->r, (size_t)c->N * c->K);
}

START_TEST(grad_dense)
{
    DenseCtx c = {.N = 3, .F = 7, .K = 5};
    rng_seed(800);
    c.x = vec(21); c.w = vec(35); c.b = vec(5); c.out = vec(15); c.r = vec(15);
    fill(c.x, 21, -1, 1); fill(c.w, 35, -1, 1); fill(c.b, 5, -1, 1); fill(c.r, 15, -1, 1);
    real *dx = vec(21), *dw = vec(35), *db = vec(5);
    dense_backward(dx, dw, db, c.r, c.x, c.w, c.N, c.F, c.K, 0);
    grad_check("dense N=3 F=7 K=5", "x", dense_loss, &c, c.x, dx, 21);
    grad_check("dense N=3 F=7 K=5", "w", dense_loss, &c, c.w, dw, 35);
    grad_check("dense N=3 F=7 K=5", "bias", dense_loss, &c, c.b, db, 5);
    free(dx); free(dw); free(db);
    free(c.x); free(c.w); free(c.b); free(c.out); free(c.r);
}
END_TEST

/* L = sum(dropout(x) * r). */
static double dropout_loss(void *p)
{
    DenseCtx *c = p;
    size_t n = (size_t)c->N * c->F;
    dropout_forward(c->out, c->x, n, c->rate, c->seed);
    return dot(c->out, c->r, n);
}

START_TEST(grad_dropout)
{
    DenseCtx c = {.N = 7, .F = 37, .rate = 0.3, .seed = 12345};
    size_t n = 7 * 37;
    rng_seed(801);
    c.x = vec(n); c.out = vec(n); c.r = vec(n);
    fill(c.x, n, -1, 1); fill(c.r, n, -1, 1);
    real *dx = vec(n);
    dropout_backward(dx, c.r, n, c.rate, c.seed, 0);
    grad_check("dropout rate=0.3", "x", dropout_loss, &c, c.x, dx, n);
    free(dx); free(c.x); free(c.out); free(c.r);
}
END_TEST

/* L = mean softmax cross-entropy. */
static double softmax_loss(void *p)
{
    DenseCtx *c = p;
    return softmax_ce(NULL, NULL, c->x, c->labels, c->N, c->K);
}

START_TEST(grad_softmax_ce)
{
    DenseCtx c = {.N = 5, .K = 7};
    int32_t labels[5] = {0, 6, 3, 3, 1};
    rng_seed(802);
    c.x = vec(35);
    c.labels = labels;
    fill(c.x, 35, -3, 3);
    real *dl = vec(35);
    softmax_ce(dl, NULL, c.x, labels, c.N, c.K);
    grad_check("softmax_ce N=5 K=7", "logits", softmax_loss, &c, c.x, dl, 35);
    free(dl); free(c.x);
}
END_TEST

/* ---- the fused epilogue ------------------------------------------------------------------ */

typedef struct {
    Epilogue e;
    size_t M;
    int C;
    real *z, *gamma, *beta, *rm, *rv, *rm_s, *rv_s, *scale, *shift, *res, *out, *mean,
        *invstd, *r;
} EpiCtx;

/* One epilogue forward; for EPI_BN_AFFINE the scale/shift are derived from
 * gamma/beta and the running statistics so that gamma/beta can be perturbed. */
static void epi_run(EpiCtx *c, const Epilogue *e, real *out)
{
    if (e->bn == EPI_BN_AFFINE)
        bn_scale_shift(c->scale, c->shift, c->gamma, c->beta, c->rm, c->rv, e->eps, c->C);
    memcpy(c->rm_s, c->rm, c->C * sizeof *c->rm_s);
    memcpy(c->rv_s, c->rv, c->C * sizeof *c->rv_s);
    epilogue_forward(out, c->mean, c->invstd, c->z, c->gamma, c->beta, c->rm_s, c->rv_s,
                     c->scale, c->shift, c->res, e, c->M, c->C);
}

/* L = sum(epilogue(z) * r). */
static double epi_loss(void *p)
{
    EpiCtx *c = p;
    epi_run(c, &c->e, c->out);
    return dot(c->out, c->r, c->M * c->C);
}

/* Case i = (bn * 5 + act) * 2 + residual: every EpiBn x Act x residual. */
START_TEST(grad_epilogue)
{
    EpiCtx c = {.M = 2 * 3 * 5, .C = 3};
    c.e.bn = (EpiBn)(_i / 10);
    c.e.act = (Act)(_i / 2 % 5);
    c.e.residual = _i % 2;
    c.e.eps = 1e-3;
    c.e.momentum = 0.9;
    static const char *const bn_names[] = {"none", "train", "affine"};
    char name[64];
    snprintf(name, sizeof name, "epilogue bn=%s act=%s res=%d", bn_names[c.e.bn],
             act_names[c.e.act], c.e.residual);
    size_t n = c.M * c.C;
    c.z = vec(n); c.res = vec(n); c.out = vec(n); c.r = vec(n);
    c.gamma = vec(c.C); c.beta = vec(c.C); c.rm = vec(c.C); c.rv = vec(c.C);
    c.rm_s = vec(c.C); c.rv_s = vec(c.C); c.scale = vec(c.C); c.shift = vec(c.C);
    c.mean = vec(c.C); c.invstd = vec(c.C);

    /* Draw data until every pre-activation is 0.01 away from the relu kinks. */
    rng_seed(900 + (uint64_t)_i);
    Epilogue lin = c.e;
    lin.act = ACT_NONE;
    lin.residual = 0;
    int tries = 0;
    for (;;) {
        ck_assert_msg(++tries < 1000, "%s: could not draw kink-free data", name);
        fill_away(c.z, n, -4, 4, 0.05);
        fill(c.res, n, -1, 1);
        fill(c.r, n, -1, 1);
        fill(c.gamma, c.C, 1.5, 4);
        fill(c.beta, c.C, 0, 3);
        fill(c.rm, c.C, -0.5, 0.5);
        fill(c.rv, c.C, 0.5, 2);
        epi_run(&c, &lin, c.out);
        int ok = 1;
        for (size_t i = 0; i < n; i++)
            if (fabs(c.out[i]) < 0.01 || fabs(c.out[i] - 6) < 0.01) ok = 0;
        if (ok) break;
    }

    /* Analytic gradients at the base point. */
    epi_loss(&c);
    real *dz = vec(n), *dres = vec(n), *dg = vec(c.C), *db = vec(c.C);
    real *rinv = vec(c.C);
    for (int k = 0; k < c.C; k++) rinv[k] = 1 / sqrt(c.rv[k] + c.e.eps);
    int params = c.e.bn != EPI_BN_NONE;
    if (c.e.bn == EPI_BN_TRAIN)
        epilogue_backward(dz, dg, db, c.e.residual ? dres : NULL, 0, c.r, c.z, c.mean,
                          c.invstd, c.gamma, NULL, c.beta, &c.e, c.M, c.C);
    else if (c.e.bn == EPI_BN_AFFINE)
        epilogue_backward(dz, dg, db, c.e.residual ? dres : NULL, 0, c.r, c.z, c.rm, rinv,
                          c.gamma, c.scale, c.shift, &c.e, c.M, c.C);
    else
        epilogue_backward(dz, NULL, NULL, c.e.residual ? dres : NULL, 0, c.r, c.z, NULL,
                          NULL, NULL, NULL, NULL, &c.e, c.M, c.C);

    grad_check(name, "z", epi_loss, &c, c.z, dz, n);
    if (params) {
        grad_check(name, "gamma", epi_loss, &c, c.gamma, dg, c.C);
        grad_check(name, "beta", epi_loss, &c, c.beta, db, c.C);
    }
    if (c.e.residual) grad_check(name, "res", epi_loss, &c, c.res, dres, n);

    free(dz); free(dres); free(dg); free(db); free(rinv);
    free(c.z); free(c.res); free(c.out); free(c.r); free(c.gamma); free(c.beta);
    free(c.rm); free(c.rv); free(c.rm_s); free(c.rv_s); free(c.scale); free(c.shift);
    free(c.mean); free(c.invstd);
}
END_TEST

/* ---- acc semantics: acc = 0 overwrites, acc = 1 adds ----------------------------------- */

/* Inputs shared by the acc and NULL-pointer tests: one small instance of
 * every op with random data. */
typedef struct {
    ConvShape cs, cs1, ds, ps;
    real *x, *w, *w1, *wd, *ws, *dout, *dout1, *doutd, *doutp;
    real *bx, *bdout, *gamma, *beta, *mean, *invstd, *var, *scale, *shift;
    real *s, *gdout, *fx, *fw, *fdout;
    int N, HW, C, F, K;
    size_t M;
    Epilogue epi;
} Fix;

static Fix fx_;

/* Build the shared instance (conv 3x3/2 with padding, 1x1 fast-path conv,
 * depthwise 3x3, pool 3x3/2, BN/chanmul/gap/dense shapes). */
static void fix_setup(void)
{
    Fix *f = &fx_;
    ConvCfg c3 = {2, 7, 5, 3, 4, 3, 3, 2, 2, 1, 1, 0, 1, 0};
    ConvCfg c1 = {2, 5, 3, 3, 4, 1, 1, 1, 1, 0, 0, 0, 0, 0};
    rng_seed(4242);
    f->cs = conv_shape(&c3, 0);
    f->cs1 = conv_shape(&c1, 0);
    f->ds = conv_shape(&c3, 1);
    f->ps = conv_shape(&c3, 1);
    size_t nx = 2 * 7 * 5 * 3;
    f->x = vec(nx);
    fill(f->x, nx, -1, 1);
    f->w = vec(3 * 3 * 3 * 4); fill(f->w, 108, -1, 1);
    f->w1 = vec(3 * 4); fill(f->w1, 12, -1, 1);
    f->wd = vec(3 * 3 * 3); fill(f->wd, 27, -1, 1);
    f->ws = vec(conv2d_workspace(&f->cs));
    size_t no = (size_t)f->cs.N * f->cs.P * f->cs.Q * f->cs.K;
    f->dout = vec(no); fill(f->dout, no, -1, 1);
    f->dout1 = vec(2 * 5 * 3 * 4); fill(f->dout1, 120, -1, 1);
    size_t nd = (size_t)f->ds.N * f->ds.P * f->ds.Q * f->ds.C;
    f->doutd = vec(nd); fill(f->doutd, nd, -1, 1);
    f->doutp = vec(nd); fill(f->doutp, nd, -1, 1);
    f->N = 3; f->HW = 5; f->C = 4; f->M = 15; f->F = 6; f->K = 5;
    f->bx = vec(60); fill(f->bx, 60, -2, 2);
    f->bdout = vec(60); fill(f->bdout, 60, -1, 1);
    f->gamma = vec(4); fill(f->gamma, 4, 0.5, 2);
    f->beta = vec(4); fill(f->beta, 4, -1, 1);
    f->mean = vec(4); fill(f->mean, 4, -0.5, 0.5);
    f->invstd = vec(4); fill(f->invstd, 4, 0.5, 2);
    f->var = vec(4); fill(f->var, 4, 0.5, 2);
    f->scale = vec(4); fill(f->scale, 4, 0.5, 2);
    f->shift = vec(4); fill(f->shift, 4, -1, 1);
    f->s = vec(12); fill(f->s, 12, -1, 1);
    f->gdout = vec(12); fill(f->gdout, 12, -1, 1);
    f->fx = vec(18); fill(f->fx, 18, -1, 1);
    f->fw = vec(30); fill(f->fw, 30, -1, 1);
    f->fdout = vec(15); fill(f->fdout, 15, -1, 1);
    f->epi = (Epilogue){EPI_BN_TRAIN, ACT_SWISH, 1, 1e-3, 0.9};
}

/* Release the shared instance. */
static void fix_free(void)
{
    Fix *f = &fx_;
    real *bufs[] = {f->x, f->w, f->w1, f->wd, f->ws, f->dout, f->dout1, f->doutd, f->doutp,
                    f->bx, f->bdout, f->gamma, f->beta, f->mean, f->invstd, f->var, f->scale,
                    f->shift, f->s, f->gdout, f->fx, f->fw, f->fdout};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    memset(f, 0, sizeof *f);
}

typedef void (*AccFn)(real *dst, int acc);

/* Each wrapper runs one backward writing only the gradient under test into dst. */
static void acc_act(real *d, int acc) { act_backward(d, fx_.bdout, fx_.bx, 60, ACT_SWISH, acc); }
static void acc_relu(real *d, int acc) { act_backward(d, fx_.bdout, fx_.bx, 60, ACT_RELU, acc); }
static void acc_conv(real *d, int acc)
{
    conv2d_backward(d, NULL, NULL, fx_.dout, fx_.x, fx_.w, fx_.ws, &fx_.cs, acc);
}
static void acc_conv1(real *d, int acc)
{
    conv2d_backward(d, NULL, NULL, fx_.dout1, fx_.x, fx_.w1, NULL, &fx_.cs1, acc);
}
static void acc_dwconv(real *d, int acc)
{
    dwconv2d_backward(d, NULL, NULL, fx_.doutd, fx_.x, fx_.wd, &fx_.ds, acc);
}
static void acc_zeropad(real *d, int acc)
{
    zeropad_backward(d, fx_.bdout, 1, 2, 3, 2, 1, 0, 1, 2, acc); /* dout (1,3,6,2) of 60 */
}
static void acc_bn_train(real *d, int acc)
{
    bn_train_backward(d, NULL, NULL, fx_.bdout, fx_.bx, fx_.mean, fx_.invstd, fx_.gamma,
                      fx_.M, fx_.C, acc);
}
static void acc_bn_infer(real *d, int acc)
{
    bn_infer_backward(d, NULL, NULL, fx_.bdout, fx_.bx, fx_.gamma, fx_.mean, fx_.var, 1e-3,
                      fx_.M, fx_.C, acc);
}
static void acc_grad_pass(real *d, int acc) { grad_pass(d, fx_.bdout, 60, acc); }
static void acc_chanmul_x(real *d, int acc)
{
    chanmul_backward(d, NULL, fx_.bdout, fx_.bx, fx_.s, fx_.N, fx_.HW, fx_.C, acc, 0);
}
static void acc_chanmul_s(real *d, int acc)
{
    chanmul_backward(NULL, d, fx_.bdout, fx_.bx, fx_.s, fx_.N, fx_.HW, fx_.C, 0, acc);
}
static void acc_gap(real *d, int acc) { gap_backward(d, fx_.gdout, fx_.N, fx_.HW, fx_.C, acc); }
static void acc_maxpool(real *d, int acc) { maxpool_backward(d, fx_.doutp, fx_.x, &fx_.ps, acc); }
static void acc_dense(real *d, int acc)
{
    dense_backward(d, NULL, NULL, fx_.fdout, fx_.fx, fx_.fw, 3, fx_.F, fx_.K, acc);
}
static void acc_dropout(real *d, int acc) { dropout_backward(d, fx_.bdout, 60, 0.4, 99, acc); }
static void acc_dropout0(real *d, int acc) { dropout_backward(d, fx_.bdout, 60, 0, 99, acc); }
static void acc_epi_dres(real *d, int acc)
{
    real *dz = vec(60);
    epilogue_backward(dz, NULL, NULL, d, acc, fx_.bdout, fx_.bx, fx_.mean, fx_.invstd,
                      fx_.gamma, NULL, fx_.beta, &fx_.epi, fx_.M, fx_.C);
    free(dz);
}

static const struct {
    const char *name;
    AccFn fn;
    size_t n;
} acc_cases[] = {
    {"act_backward swish", acc_act, 60},
    {"act_backward relu", acc_relu, 60},
    {"conv2d_backward dx (im2col)", acc_conv, 2 * 7 * 5 * 3},
    {"conv2d_backward dx (1x1 gemm)", acc_conv1, 2 * 5 * 3 * 3},
    {"dwconv2d_backward dx", acc_dwconv, 2 * 7 * 5 * 3},
    {"zeropad_backward dx", acc_zeropad, 12},
    {"bn_train_backward dx", acc_bn_train, 60},
    {"bn_infer_backward dx", acc_bn_infer, 60},
    {"grad_pass", acc_grad_pass, 60},
    {"chanmul_backward dx", acc_chanmul_x, 60},
    {"chanmul_backward ds", acc_chanmul_s, 12},
    {"gap_backward dx", acc_gap, 60},
    {"maxpool_backward dx", acc_maxpool, 2 * 7 * 5 * 3},
    {"dense_backward dx", acc_dense, 18},
    {"dropout_backward dx", acc_dropout, 60},
    {"dropout_backward dx rate 0", acc_dropout0, 60},
    {"epilogue_backward dres", acc_epi_dres, 60},
};
#define N_ACC ((int)(sizeof acc_cases / sizeof acc_cases[0]))

/* acc = 0 over garbage equals acc = 0 over zeros; acc = 1 adds to what was there. */
START_TEST(acc_semantics)
{
    const char *name = acc_cases[_i].name;
    size_t n = acc_cases[_i].n;
    real *clean = vec(n), *over = vec(n), *pre = vec(n), *sum = vec(n);
    acc_cases[_i].fn(clean, 0);
    for (size_t i = 0; i < n; i++) over[i] = 12345.0;
    acc_cases[_i].fn(over, 0);
    fill(pre, n, -1, 1);
    memcpy(sum, pre, n * sizeof *sum);
    acc_cases[_i].fn(sum, 1);
    double mx = 0, e0 = 0, e1 = 0;
    for (size_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs((double)clean[i]));
        e0 = fmax(e0, fabs((double)over[i] - clean[i]));
        e1 = fmax(e1, fabs((double)sum[i] - (pre[i] + clean[i])));
    }
    ck_assert_msg(mx > 0, "%s: gradient is all zero (test is vacuous)", name);
    ck_assert_msg(e0 < 1e-12, "%s: acc=0 did not overwrite (max diff %.3e)", name, e0);
    ck_assert_msg(e1 < 1e-12, "%s: acc=1 did not add (max diff %.3e)", name, e1);
    free(clean); free(over); free(pre); free(sum);
}
END_TEST

/* ---- NULL gradient pointers ------------------------------------------------------------ */

/* Up to three outputs of one backward call; mask bit k set = output k wanted. */
typedef void (*NullFn)(real *o0, real *o1, real *o2);

static void null_conv(real *a, real *b, real *c)
{
    conv2d_backward(a, b, c, fx_.dout, fx_.x, fx_.w, fx_.ws, &fx_.cs, 0);
}
static void null_conv1(real *a, real *b, real *c)
{
    conv2d_backward(a, b, c, fx_.dout1, fx_.x, fx_.w1, NULL, &fx_.cs1, 0);
}
static void null_dwconv(real *a, real *b, real *c)
{
    dwconv2d_backward(a, b, c, fx_.doutd, fx_.x, fx_.wd, &fx_.ds, 0);
}
static void null_bn_train(real *a, real *b, real *c)
{
    bn_train_backward(a, b, c, fx_.bdout, fx_.bx, fx_.mean, fx_.invstd, fx_.gamma, fx_.M,
                      fx_.C, 0);
}
static void null_bn_infer(real *a, real *b, real *c)
{
    bn_infer_backward(a, b, c, fx_.bdout, fx_.bx, fx_.gamma, fx_.mean, fx_.var, 1e-3, fx_.M,
                      fx_.C, 0);
}
static void null_chanmul(real *a, real *b, real *c)
{
    (void)c;
    chanmul_backward(a, b, fx_.bdout, fx_.bx, fx_.s, fx_.N, fx_.HW, fx_.C, 0, 0);
}
static void null_dense(real *a, real *b, real *c)
{
    dense_backward(a, b, c, fx_.fdout, fx_.fx, fx_.fw, 3, fx_.F, fx_.K, 0);
}
/* Epilogue with batch-stat BN: outputs dgamma, dbeta, dres (dz always). */
static void null_epi_train(real *a, real *b, real *c)
{
    real *dz = vec(60);
    epilogue_backward(dz, a, b, c, 0, fx_.bdout, fx_.bx, fx_.mean, fx_.invstd, fx_.gamma,
                      NULL, fx_.beta, &fx_.epi, fx_.M, fx_.C);
    free(dz);
}
/* Epilogue with affine BN (trainable gamma): outputs dgamma, dbeta, dres. */
static void null_epi_affine(real *a, real *b, real *c)
{
    real *dz = vec(60);
    Epilogue e = {EPI_BN_AFFINE, ACT_RELU6, 1, 1e-3, 0.9};
    epilogue_backward(dz, a, b, c, 0, fx_.bdout, fx_.bx, fx_.mean, fx_.invstd, fx_.gamma,
                      fx_.scale, fx_.shift, &e, fx_.M, fx_.C);
    free(dz);
}

static const struct {
    const char *name;
    NullFn fn;
    size_t n[3];
} null_cases[] = {
    {"conv2d_backward (im2col)", null_conv, {2 * 7 * 5 * 3, 108, 4}},
    {"conv2d_backward (1x1 gemm)", null_conv1, {2 * 5 * 3 * 3, 12, 4}},
    {"dwconv2d_backward", null_dwconv, {2 * 7 * 5 * 3, 27, 3}},
    {"bn_train_backward", null_bn_train, {60, 4, 4}},
    {"bn_infer_backward", null_bn_infer, {60, 4, 4}},
    {"chanmul_backward", null_chanmul, {60, 12, 0}},
    {"dense_backward", null_dense, {18, 30, 5}},
    {"epilogue_backward train", null_epi_train, {4, 4, 60}},
    {"epilogue_backward affine", null_epi_affine, {4, 4, 60}},
};
#define N_NULL ((int)(sizeof null_cases / sizeof null_cases[0]))

/* Every subset of NULL outputs gives the same values in the outputs computed,
 * even when those start as garbage (parameter gradients are overwritten). */
START_TEST(null_grads)
{
    const char *name = null_cases[_i].name;
    const size_t *n = null_cases[_i].n;
    real *full[3], *part[3];
    for (int k = 0; k < 3; k++) full[k] = n[k] ? vec(n[k]) : NULL;
    null_cases[_i].fn(full[0], full[1], full[2]);
    for (int mask = 0; mask < 8; mask++) {
        for (int k = 0; k < 3; k++) {
            part[k] = (mask >> k & 1) && n[k] ? vec(n[k]) : NULL;
            if (part[k])
                for (size_t i = 0; i < n[k]; i++) part[k][i] = -777.0;
        }
        null_cases[_i].fn(part[0], part[1], part[2]);
        for (int k = 0; k < 3; k++) {
            if (!part[k]) continue;
            double w = worst_close(part[k], full[k], n[k], 1e-12, 1e-12);
            ck_assert_msg(w <= 1, "%s: output %d differs with NULL mask %d (worst %.3e)", name,
                          k, mask, w);
            free(part[k]);
        }
    }
    for (int k = 0; k < 3; k++) free(full[k]);
}
END_TEST

/* dz of the epilogue must not depend on which parameter gradients are wanted. */
START_TEST(null_epilogue_dz)
{
    real *full = vec(60), *part = vec(60), *dg = vec(4), *db = vec(4);
    epilogue_backward(full, dg, db, NULL, 0, fx_.bdout, fx_.bx, fx_.mean, fx_.invstd,
                      fx_.gamma, NULL, fx_.beta, &fx_.epi, fx_.M, fx_.C);
    epilogue_backward(part, NULL, NULL, NULL, 0, fx_.bdout, fx_.bx, fx_.mean, fx_.invstd,
                      fx_.gamma, NULL, fx_.beta, &fx_.epi, fx_.M, fx_.C);
    double w = worst_close(part, full, 60, 1e-12, 1e-12);
    ck_assert_msg(w <= 1, "epilogue_backward: dz changes when dgamma/dbeta are NULL (%.3e)", w);
    free(full); free(part); free(dg); free(db);
}
END_TEST

/* Inputs a backward does not need may be NULL: x when no weight gradient is
 * wanted (conv, depthwise, dense), z for an epilogue without BN statistics,
 * activation or dgamma. Results equal those computed with the inputs given. */
START_TEST(null_inputs_unread)
{
    size_t nx = 2 * 7 * 5 * 3;
    real *a = vec(nx), *b = vec(nx), *db1 = vec(8), *db2 = vec(8);
    conv2d_backward(a, NULL, NULL, fx_.dout, fx_.x, fx_.w, fx_.ws, &fx_.cs, 0);
    conv2d_backward(b, NULL, db1, fx_.dout, NULL, fx_.w, fx_.ws, &fx_.cs, 0);
    ck_assert_msg(worst_close(b, a, nx, 1e-12, 1e-12) <= 1, "conv2d_backward: dx changed with x NULL");
    conv2d_backward(a, NULL, NULL, fx_.dout1, fx_.x, fx_.w1, NULL, &fx_.cs1, 0);
    conv2d_backward(b, NULL, NULL, fx_.dout1, NULL, fx_.w1, NULL, &fx_.cs1, 0);
    ck_assert_msg(worst_close(b, a, 90, 1e-12, 1e-12) <= 1, "conv2d_backward 1x1: dx changed with x NULL");
    dwconv2d_backward(a, NULL, db1, fx_.doutd, fx_.x, fx_.wd, &fx_.ds, 0);
    dwconv2d_backward(b, NULL, db2, fx_.doutd, NULL, fx_.wd, &fx_.ds, 0);
    ck_assert_msg(worst_close(b, a, nx, 1e-12, 1e-12) <= 1, "dwconv2d_backward: dx changed with x NULL");
    ck_assert_msg(worst_close(db2, db1, 3, 1e-12, 1e-12) <= 1, "dwconv2d_backward: dbias changed with x NULL");
    dense_backward(a, NULL, db1, fx_.fdout, fx_.fx, fx_.fw, 3, fx_.F, fx_.K, 0);
    dense_backward(b, NULL, db2, fx_.fdout, NULL, fx_.fw, 3, fx_.F, fx_.K, 0);
    ck_assert_msg(worst_close(b, a, 18, 1e-12, 1e-12) <= 1, "dense_backward: dx changed with x NULL");
    ck_assert_msg(worst_close(db2, db1, 5, 1e-12, 1e-12) <= 1, "dense_backward: dbias changed with x NULL");
    Epilogue e = {EPI_BN_AFFINE, ACT_NONE, 0, 1e-3, 0.9};
    epilogue_backward(a, NULL, db1, NULL, 0, fx_.bdout, fx_.bx, fx_.mean, fx_.invstd, fx_.gamma,
                      fx_.scale, fx_.shift, &e, fx_.M, fx_.C);
    epilogue_backward(b, NULL, db2, NULL, 0, fx_.bdout, NULL, NULL, NULL, NULL, fx_.scale, NULL,
                      &e, fx_.M, fx_.C);
    ck_assert_msg(worst_close(b, a, 60, 1e-12, 1e-12) <= 1, "epilogue_backward affine: dz changed with z NULL");
    ck_assert_msg(worst_close(db2, db1, 4, 1e-12, 1e-12) <= 1, "epilogue_backward affine: dbeta changed with z NULL");
    free(a); free(b); free(db1); free(db2);
}
END_TEST

/* ---- optimizer ---------------------------------------------------------------------- */

/* Two steps by hand. Segment 0 = [0,2): lr 0.1, wd 0.01; segment 1 = [2,4):
 * lr 0.05, wd 0; momentum 0.9; mom starts at (0.1, 0, -0.2, 0).
 * Step 1, grad (0.5, -1, 2, 0.25):
 *   p0: g = 0.5 + 0.01*1 = 0.51,      m = 0.09 + 0.51 = 0.6,      p = 1 - 0.06 = 0.94
 *   p1: g = -1 + 0.01*(-2) = -1.02,   m = -1.02,                  p = -2 + 0.102 = -1.898
 *   p2: g = 2,                        m = -0.18 + 2 = 1.82,       p = 0.5 - 0.091 = 0.409
 *   p3: g = 0.25,                     m = 0.25,                   p = 3 - 0.0125 = 2.9875
 * Step 2, grad (-0.5, 0, 1, -1):
 *   p0: g = -0.5 + 0.0094 = -0.4906,  m = 0.54 - 0.4906 = 0.0494, p = 0.94 - 0.00494 = 0.93506
 *   p1: g = -0.01898,                 m = -0.918 - 0.01898 = -0.93698, p = -1.898 + 0.093698 = -1.804302
 *   p2: g = 1,                        m = 1.638 + 1 = 2.638,      p = 0.409 - 0.1319 = 0.2771
 *   p3: g = -1,                       m = 0.225 - 1 = -0.775,     p = 2.9875 + 0.03875 = 3.02625
 * (lr is a float in LrSegment, so 0.1f etc. differ from 0.1 by ~1e-9.) */
START_TEST(sgd_two_steps)
{
    real p[4] = {1, -2, 0.5, 3}, m[4] = {0.1, 0, -0.2, 0};
    real g1[4] = {0.5, -1, 2, 0.25}, g2[4] = {-0.5, 0, 1, -1};
    LrSegment segs[2] = {{0, 2, 0.1f, 0.01f}, {2, 4, 0.05f, 0.0f}};
    const double p1[4] = {0.94, -1.898, 0.409, 2.9875}, m1[4] = {0.6, -1.02, 1.82, 0.25};
    const double p2[4] = {0.93506, -1.804302, 0.2771, 3.02625};
    const double m2[4] = {0.0494, -0.93698, 2.638, -0.775};
    sgd_update(p, g1, m, 4, segs, 2, 0.9);
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(fabs(p[i] - p1[i]) < 1e-7, "step 1 param[%d] = %.12g, want %.12g", i,
                      (double)p[i], p1[i]);
        ck_assert_msg(fabs(m[i] - m1[i]) < 1e-7, "step 1 mom[%d] = %.12g, want %.12g", i,
                      (double)m[i], m1[i]);
    }
    sgd_update(p, g2, m, 4, segs, 2, 0.9);
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(fabs(p[i] - p2[i]) < 1e-7, "step 2 param[%d] = %.12g, want %.12g", i,
                      (double)p[i], p2[i]);
        ck_assert_msg(fabs(m[i] - m2[i]) < 1e-7, "step 2 mom[%d] = %.12g, want %.12g", i,
                      (double)m[i], m2[i]);
    }
}
END_TEST

/* ---- dropout mask, softmax details ------------------------------------------------------ */

/* The backward recomputes the forward's mask; the kept fraction is 1 - rate;
 * the mask depends on the seed; rate 0 is a copy. */
START_TEST(dropout_mask)
{
    const size_t n = 100000;
    const real rate = 0.3;
    real *x = vec(n), *out = vec(n), *dx = vec(n), *ones = vec(n), *out2 = vec(n);
    rng_seed(31);
    fill(x, n, 0.5, 1.5);
    for (size_t i = 0; i < n; i++) ones[i] = 1;
    dropout_forward(out, x, n, rate, 777);
    dropout_backward(dx, ones, n, rate, 777, 0);
    size_t kept = 0, mismatch = 0, same_other = 0;
    for (size_t i = 0; i < n; i++) {
        int k_fwd = out[i] != 0, k_bwd = dx[i] != 0;
        kept += k_fwd;
        mismatch += k_fwd != k_bwd || k_fwd != dropout_keep(777, i, rate);
        if (k_fwd) {
            ck_assert_msg(fabs(out[i] - x[i] / (1 - rate)) < 1e-12, "kept value not scaled");
            ck_assert_msg(fabs(dx[i] - 1 / (1 - rate)) < 1e-12, "kept gradient not scaled");
        }
    }
    ck_assert_msg(mismatch == 0, "dropout: %zu of %zu mask bits differ between forward and backward",
                  mismatch, n);
    double frac = (double)kept / (double)n;
    ck_assert_msg(fabs(frac - 0.7) < 0.01, "dropout: kept fraction %.4f, want 0.7", frac);
    dropout_forward(out2, x, n, rate, 778);
    for (size_t i = 0; i < n; i++) same_other += (out[i] != 0) == (out2[i] != 0);
    ck_assert_msg(same_other < n * 0.65, "dropout: seeds 777 and 778 give nearly the same mask (%zu)",
                  same_other);
    dropout_forward(out2, x, n, 0, 777);
    ck_assert_msg(memcmp(out2, x, n * sizeof *x) == 0, "dropout rate 0 is not a copy");
    free(x); free(out); free(dx); free(ones); free(out2);
}
END_TEST

/* Huge logits stay finite and equal the shifted problem; argmax hits counted. */
START_TEST(softmax_stability)
{
    real big[6] = {1000, 1001, 999, -1000, 0, 1000.5};
    real small[6] = {0, 1, -1, -2000, -1000, 0.5};
    int32_t labels[2] = {1, 0};
    real d1[6], d2[6];
    int hits = -1;
    double l1 = softmax_ce(d1, &hits, big, labels, 2, 3);
    double l2 = softmax_ce(d2, NULL, small, labels, 2, 3);
    ck_assert_msg(isfinite(l1) && fabs(l1 - l2) < 1e-9, "softmax_ce: loss %.12g vs shifted %.12g",
                  l1, l2);
    ck_assert_msg(worst_close(d1, d2, 6, 1e-12, 1e-9) <= 1, "softmax_ce: gradient not shift-invariant");
    ck_assert_msg(hits == 1, "softmax_ce: %d correct, want 1 (row 0 argmax 1 = label)", hits);
    /* row 0: max 1001 at the label; row 1: max 1000.5, label logit -1000. */
    double want = (log(exp(-1.0) + 1 + exp(-2.0)) + 2000.5) / 2;
    ck_assert_msg(fabs(l1 - want) < 1e-9, "softmax_ce: loss %.12g, want %.12g", l1, want);
}
END_TEST

/* ---- suite ---------------------------------------------------------------------------- */

static Suite *grad_suite(void)
{
    Suite *s = suite_create("grad");
    TCase *tc = tcase_create("fd");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, grad_conv2d, 0, N_CONV_FIXED + N_CONV_RANDOM);
    tcase_add_loop_test(tc, grad_dwconv2d, 0, N_CONV_FIXED + N_CONV_RANDOM);
    tcase_add_loop_test(tc, grad_maxpool, 0, N_POOL);
    tcase_add_loop_test(tc, grad_zeropad, 0, 4);
    tcase_add_test(tc, grad_bn_train);
    tcase_add_test(tc, grad_bn_infer);
    tcase_add_loop_test(tc, grad_act, 0, 5);
    tcase_add_test(tc, grad_add);
    tcase_add_test(tc, grad_chanmul);
    tcase_add_test(tc, grad_gap);
    tcase_add_test(tc, grad_dense);
    tcase_add_test(tc, grad_dropout);
    tcase_add_test(tc, grad_softmax_ce);
    tcase_add_loop_test(tc, grad_epilogue, 0, 30);
    suite_add_tcase(s, tc);

    TCase *tk = tcase_create("contract");
    tcase_set_timeout(tk, 60);
    tcase_add_checked_fixture(tk, fix_setup, fix_free);
    tcase_add_loop_test(tk, acc_semantics, 0, N_ACC);
    tcase_add_loop_test(tk, null_grads, 0, N_NULL);
    tcase_add_test(tk, null_epilogue_dz);
    tcase_add_test(tk, null_inputs_unread);
    tcase_add_test(tk, bn_running_stats);
    tcase_add_test(tk, maxpool_ties);
    tcase_add_test(tk, sgd_two_steps);
    tcase_add_test(tk, dropout_mask);
    tcase_add_test(tk, softmax_stability);
    suite_add_tcase(s, tk);
    return s;
}

Suite *test_suite(void)
{
#if !KILN_REAL_IS_DOUBLE
#error "test_grad must be built with -DKILN_REAL=double"
#endif
    return grad_suite();
}
