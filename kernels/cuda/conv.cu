//@ header
/* kernels/cuda/conv.cu — templates of the convolution family, rendered by
 * codegen/emit_conv.c: im2col / col2im around the GEMMs of a k x k conv,
 * depthwise conv forward and backward, batch normalization (batch
 * statistics, the per-channel constants of the running statistics, folding
 * into conv weights) and the fused conv epilogue out = act(bn(z)) (+ res)
 * with its backward.
 *
 * Contract: the same formulas, in the same precision, as kernels/cpu (conv.c,
 * bn.c, reduce.c); NHWC activations, HWIO conv weights, HWC depthwise
 * weights. Every shape is a {{KEY}} constant; the batch count is the runtime
 * n, so a row count is n * (rows per image). Flags ({{BN}}, {{ACC}}, ...;
 * the comments below name them without braces) are 0/1 (or small mode
 * numbers) and only select branches; a pointer behind a false flag is never
 * read (it may be NULL).
 *
 * Three kinds of kernels:
 *  - elementwise: one thread per output element, early return past the end;
 *  - per-channel reductions (one block of 256 threads per channel, the
 *    channel is blockIdx.x, blockIdx.y a second index where said): each
 *    thread sums a strided subset of rows in double, kiln_block_sum adds the
 *    partials; no return before the last KILN_SYNC;
 *  - split column sums (col_part, then a per-channel finish): the rows are
 *    cut into G splits (blockIdx.y), a block of 256 threads covers 32
 *    consecutive channels (blockIdx.x tiles) x 8 row lanes, so a warp reads
 *    one contiguous stretch of a row; each block writes its per-channel
 *    double partials to a workspace scratch, and a one-thread-per-channel
 *    kernel adds the G partials in split order. Every sum has a fixed order
 *    for a given n: deterministic, though not the CPU's order.
 * Gathers (col2im, depthwise dx) add their terms in the CPU's scan order, so
 * no atomics are needed and results are deterministic.
 */
//@ im2col
/* cols (n*P*Q, R*S*C) = the receptive field of every output cell (img, p, q),
 * columns ordered (r, s, c), 0 outside x. x (n, H, W, C). */
KILN_KERNEL void {{NAME}}(int n, float *cols, const float *x)
{
    const int H = {{H}}, W = {{W}}, C = {{C}}, R = {{R}}, S = {{S}}, P = {{P}}, Q = {{Q}};
    long i = kiln_gid();
    if (i >= (long)n * P * Q * R * S * C) return;
    int c = (int)(i % C);
    long t = i / C;
    int s = (int)(t % S); t /= S;
    int r = (int)(t % R); t /= R;
    int q = (int)(t % Q); t /= Q;
    int p = (int)(t % P);
    long img = t / P;
    int h = p * {{SH}} - {{PT}} + r, w = q * {{SW}} - {{PL}} + s;
    cols[i] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((img * H + h) * W + w) * C + c] : 0.0f;
}
//@ col2im
/* dx (n, H, W, C) (+)= the column gradients cols (n*P*Q, R*S*C) gathered back
 * onto the input: each input cell adds the cells (p, q) that read it, in
 * (p, q) order like the CPU's scatter. */
KILN_KERNEL void {{NAME}}(int n, float *dx, const float *cols)
{
    const int H = {{H}}, W = {{W}}, C = {{C}}, R = {{R}}, S = {{S}}, P = {{P}}, Q = {{Q}};
    const int SH = {{SH}}, SW = {{SW}};
    long i = kiln_gid();
    if (i >= (long)n * H * W * C) return;
    int h, w, c;
    long img = kiln_nhwc(i, H, W, C, &h, &w, &c);
    int hp = h + {{PT}}, wp = w + {{PL}};
    int p0, p1, q0, q1;
    kiln_window_cover(hp, R, SH, P, &p0, &p1);
    kiln_window_cover(wp, S, SW, Q, &q0, &q1);
    float v = {{ACC}} ? dx[i] : 0.0f;
    for (int p = p0; p <= p1; p++) {
        int r = hp - p * SH;
        for (int q = q0; q <= q1; q++) {
            int s = wp - q * SW;
            v += cols[((img * P + p) * Q + q) * ((long)R * S * C) + ((long)r * S + s) * C + c];
        }
    }
    dx[i] = v;
}
//@ conv_bias
/* z (n*M, C) += bias (C), in place. */
KILN_KERNEL void {{NAME}}(int n, float *z, const float *bias)
{
    long i = kiln_gid();
    if (i >= (long)n * {{M}} * {{C}}) return;
    z[i] += bias[i % {{C}}];
}
//@ dwconv_fwd
/* z (n, P, Q, C) = sum_{r,s} x (n, H, W, C) * w (R, S, C) + bias (C) (when
 * BIAS), summed in (r, s) order from the bias like the CPU. */
KILN_KERNEL void {{NAME}}(int n, float *z, const float *x, const float *wt, const float *bias)
{
    const int H = {{H}}, W = {{W}}, C = {{C}}, R = {{R}}, S = {{S}}, P = {{P}}, Q = {{Q}};
    long i = kiln_gid();
    if (i >= (long)n * P * Q * C) return;
    int p, q, c;
    long img = kiln_nhwc(i, P, Q, C, &p, &q, &c);
    float o = {{BIAS}} ? bias[c] : 0.0f;
    for (int r = 0; r < R; r++) {
        int h = p * {{SH}} - {{PT}} + r;
        if (h < 0 || h >= H) continue;
        for (int s = 0; s < S; s++) {
            int w = q * {{SW}} - {{PL}} + s;
            if (w < 0 || w >= W) continue;
            o += x[((img * H + h) * W + w) * C + c] * wt[(r * S + s) * C + c];
        }
    }
    z[i] = o;
}
//@ dwconv_dx
/* dx (n, H, W, C) (+)= sum over the cells (p, q) that read it of
 * dout (n, P, Q, C) * w (R, S, C), gathered in (p, q) order. */
KILN_KERNEL void {{NAME}}(int n, float *dx, const float *dout, const float *wt)
{
    const int H = {{H}}, W = {{W}}, C = {{C}}, R = {{R}}, S = {{S}}, P = {{P}}, Q = {{Q}};
    const int SH = {{SH}}, SW = {{SW}};
    long i = kiln_gid();
    if (i >= (long)n * H * W * C) return;
    int h, w, c;
    long img = kiln_nhwc(i, H, W, C, &h, &w, &c);
    int hp = h + {{PT}}, wp = w + {{PL}};
    int p0, p1, q0, q1;
    kiln_window_cover(hp, R, SH, P, &p0, &p1);
    kiln_window_cover(wp, S, SW, Q, &q0, &q1);
    float v = {{ACC}} ? dx[i] : 0.0f;
    for (int p = p0; p <= p1; p++) {
        int r = hp - p * SH;
        for (int q = q0; q <= q1; q++) {
            int s = wp - q * SW;
            v += dout[((img * P + p) * Q + q) * C + c] * wt[(r * S + s) * C + c];
        }
    }
    dx[i] = v;
}
//@ dwconv_dw
/* dw (R, S, C), overwritten: one block per (c = blockIdx.x, r*S+s =
 * blockIdx.y), the sum over all output cells of dout * x in double. */
KILN_KERNEL void {{NAME}}(int n, float *dw, const float *dout, const float *x)
{
    KILN_SHARED double sh[256];
    const int H = {{H}}, W = {{W}}, C = {{C}}, S = {{S}}, P = {{P}}, Q = {{Q}};
    int c = (int)blockIdx.x, rs = (int)blockIdx.y;
    int r = rs / S, s = rs % S;
    long M = (long)n * P * Q;
    double a = 0.0;
    for (long m = (long)threadIdx.x; m < M; m += (long)blockDim.x) {
        int q = (int)(m % Q);
        long t = m / Q;
        int p = (int)(t % P);
        long img = t / P;
        int h = p * {{SH}} - {{PT}} + r, w = q * {{SW}} - {{PL}} + s;
        if (h >= 0 && h < H && w >= 0 && w < W)
            a += (double)dout[m * C + c] * x[((img * H + h) * W + w) * C + c];
    }
    a = kiln_block_sum(a, sh);
    if (threadIdx.x == 0) dw[(long)rs * C + c] = (float)a;
}
//@ dwconv_dw_part
/* dwconv_dw split over the output cells (n*P*Q of them) like col_part:
 * split blockIdx.y of G takes cells [y*chunk, min((y+1)*chunk, n*P*Q)),
 * chunk = ceil(n*P*Q / G); a block of 256 threads covers the 32 channels
 * blockIdx.x*32 + threadIdx.x%32 x 8 cell lanes (threadIdx.x/32, every 8th
 * cell), so a warp reads one contiguous stretch of a row of dout and of x.
 * Each thread keeps the R*S tap sums in double; per tap the 8 lanes are
 * added in lane order into part (doubles) at [(y*R*S + r*S+s)*C + c]. */
KILN_KERNEL void {{NAME}}(int n, float *part, const float *dout, const float *x)
{
    KILN_SHARED double sh[256];
    const int H = {{H}}, W = {{W}}, C = {{C}}, R = {{R}}, S = {{S}}, P = {{P}}, Q = {{Q}}, G = {{G}};
    const long M = (long)n * P * Q;
    const long chunk = (M + G - 1) / G;
    int t = (int)threadIdx.x, lane = t % 32, row = t / 32;
    int c = (int)blockIdx.x * 32 + lane, y = (int)blockIdx.y;
    long m0 = (long)y * chunk, m1 = m0 + chunk < M ? m0 + chunk : M;
    double acc[{{R}} * {{S}}];
    for (int k = 0; k < R * S; k++) acc[k] = 0.0;
    if (c < C)
        for (long m = m0 + row; m < m1; m += 8) {
            int q = (int)(m % Q);
            long u = m / Q;
            int p = (int)(u % P);
            long img = u / P;
            double d = dout[m * C + c];
            for (int r = 0; r < R; r++) {
                int h = p * {{SH}} - {{PT}} + r;
                if (h < 0 || h >= H) continue;
                for (int s = 0; s < S; s++) {
                    int w = q * {{SW}} - {{PL}} + s;
                    if (w >= 0 && w < W) acc[r * S + s] += d * x[((img * H + h) * W + w) * C + c];
                }
            }
        }
    double *pt = (double *)part;
    for (int k = 0; k < R * S; k++) {
        sh[t] = acc[k];
        KILN_SYNC();   /* every lane's sum of tap k is in sh */
        if (row == 0 && c < C) {
            double v = 0.0;
            for (int j = 0; j < 8; j++) v += sh[j * 32 + lane];
            pt[((long)y * R * S + k) * C + c] = v;
        }
        KILN_SYNC();   /* read before the next tap overwrites it */
    }
}
//@ dwconv_dw_fin
/* dw (R*S, C), overwritten: the G partials of dwconv_dw_part added in split
 * order, one thread per (tap, channel). */
KILN_KERNEL void {{NAME}}(int n, float *dw, const float *part)
{
    const int C = {{C}}, RS = {{R}} * {{S}}, G = {{G}};
    long i = kiln_gid();
    (void)n;
    if (i >= (long)RS * C) return;
    const double *pt = (const double *)part;
    double v = 0.0;
    for (int y = 0; y < G; y++) v += pt[(long)y * RS * C + i];
    dw[i] = (float)v;
}
//@ bn_derive
/* The constants of a BN on running statistics, per channel c < C:
 * d[c] = scale = gamma/sqrt(var+eps), d[C+c] = shift = beta - mean*scale
 * (in double, as bn_scale_shift), d[2C+c] = invstd = 1/sqrtf(var+eps) in
 * float (as runtime/cpu.c). */
KILN_KERNEL void {{NAME}}(int n, float *d, const float *gamma, const float *beta,
                          const float *mean, const float *var)
{
    const int C = {{C}};
    long i = kiln_gid();
    (void)n;
    if (i >= C) return;
    double sc = (double)gamma[i] / sqrt((double)var[i] + (double){{EPS}});
    d[i] = (float)sc;
    d[C + i] = (float)((double)beta[i] - (double)mean[i] * sc);
    d[2 * C + i] = 1.0f / sqrtf(var[i] + {{EPS}});
}
//@ bn_fold
/* A frozen BN folded into the conv before it: wout (ROWS, C) = w * scale[c],
 * then bout (C) = bias*scale + shift (bias 0 when !BIAS), with scale and
 * shift as bn_scale_shift (double, rounded to float). wout and bout are one
 * array of ROWS*C + C floats. */
KILN_KERNEL void {{NAME}}(int n, float *wout, const float *w, const float *bias,
                          const float *gamma, const float *beta, const float *mean,
                          const float *var)
{
    const int C = {{C}};
    const long NW = (long){{ROWS}} * C;
    long i = kiln_gid();
    (void)n;
    if (i >= NW + C) return;
    int c = (int)(i < NW ? i % C : i - NW);
    double scd = (double)gamma[c] / sqrt((double)var[c] + (double){{EPS}});
    float sc = (float)scd;
    if (i < NW) {
        wout[i] = w[i] * sc;
    } else {
        float sh = (float)((double)beta[c] - (double)mean[c] * scd);
        wout[i] = ({{BIAS}} ? bias[c] : 0.0f) * sc + sh;
    }
}
//@ bn_stats
/* Batch statistics of x (n*M, C), one block per channel c (when the
 * scratch of the split form, col_part + bn_stats_mean/_fin, does not fit
 * the workspace): mean and biased variance in double (two passes),
 * stats[c] = mean, stats[C+c] = invstd; run_mean/run_var updated with
 * momentum and the unbiased variance (as kiln_bn_batch_stats). */
KILN_KERNEL void {{NAME}}(int n, float *stats, float *run_mean, float *run_var, const float *x)
{
    KILN_SHARED double sh[256];
    const int C = {{C}};
    const long M = (long)n * {{M}};
    int c = (int)blockIdx.x;
    double s = 0.0;
    for (long m = (long)threadIdx.x; m < M; m += (long)blockDim.x) s += x[m * C + c];
    s = kiln_block_sum(s, sh);
    double mean = M ? s / (double)M : 0.0;
    double v = 0.0;
    for (long m = (long)threadIdx.x; m < M; m += (long)blockDim.x) {
        double d = x[m * C + c] - mean;
        v += d * d;
    }
    v = kiln_block_sum(v, sh);
    double var = M ? v / (double)M : 0.0;
    if (threadIdx.x == 0) {
        double mom = (double){{MOM}};
        double unbias = M > 1 ? (double)M / (double)(M - 1) : 1.0;
        stats[c] = (float)mean;
        stats[C + c] = (float)(1.0 / sqrt(var + (double){{EPS}}));
        run_mean[c] = (float)(mom * (double)run_mean[c] + (1.0 - mom) * mean);
        run_var[c] = (float)(mom * (double)run_var[c] + (1.0 - mom) * var * unbias);
    }
}
//@ col_part
/* Partial column sums of a (n*M, C) over row split blockIdx.y of G (rows
 * [y*chunk, min((y+1)*chunk, n*M)), chunk = ceil(n*M / G)), channels
 * blockIdx.x*32 + threadIdx.x%32, row lane threadIdx.x/32 taking every 8th
 * row; sums in double. MODE 0: p0 = sum a; 1: p0 = sum (a - m[c])^2 with
 * m the double means in dsum; 2: p0 = sum a and, when SX, p1 = sum a * xhat,
 * xhat = (x - mean[c]) * inv (float), inv = invstd[c] or, when INV,
 * (float)(1/sqrt(invstd[c] + eps)) (as chan_bwd). part (doubles): p0 at
 * [y*C + c], p1 at [G*C + y*C + c]. The 8 lanes are added in lane order. */
KILN_KERNEL void {{NAME}}(int n, float *part, const float *a, const float *dsum,
                          const float *x, const float *mean, const float *invstd)
{
    KILN_SHARED double sh[512];
    const int C = {{C}}, G = {{G}}, MODE = {{MODE}};
    const long M = (long)n * {{M}};
    const long chunk = (M + G - 1) / G;
    int t = (int)threadIdx.x, lane = t % 32, row = t / 32;
    int c = (int)blockIdx.x * 32 + lane, y = (int)blockIdx.y;
    long m0 = (long)y * chunk, m1 = m0 + chunk < M ? m0 + chunk : M;
    double s0 = 0.0, s1 = 0.0;
    if (c < C) {
        double dm = MODE == 1 ? ((const double *)dsum)[c] : 0.0;
        float mu = 0.0f, inv = 0.0f;
        if (MODE == 2 && {{SX}}) {
            mu = mean[c];
            inv = {{INV}} ? (float)(1.0 / sqrt((double)invstd[c] + (double){{EPS}})) : invstd[c];
        }
        for (long m = m0 + row; m < m1; m += 8) {
            float av = a[m * C + c];
            if (MODE == 1) {
                double d = av - dm;
                s0 += d * d;
            } else {
                s0 += av;
            }
            if (MODE == 2 && {{SX}}) s1 += (double)av * (double)((x[m * C + c] - mu) * inv);
        }
    }
    sh[t] = s0;
    sh[256 + t] = s1;
    KILN_SYNC();   /* every lane's sums are in sh before row 0 reads them */
    if (row == 0 && c < C) {
        double r0 = 0.0, r1 = 0.0;
        for (int k = 0; k < 8; k++) {
            r0 += sh[k * 32 + lane];
            r1 += sh[256 + k * 32 + lane];
        }
        double *p = (double *)part;
        p[(long)y * C + c] = r0;
        if (MODE == 2 && {{SX}}) p[(long)G * C + (long)y * C + c] = r1;
    }
}
//@ bn_stats_mean
/* The first half of bn_stats after col_part MODE 0: the mean of channel c
 * in double, the G partials added in split order, into dmean (C doubles). */
KILN_KERNEL void {{NAME}}(int n, float *dmean, const float *part)
{
    const int C = {{C}}, G = {{G}};
    const long M = (long)n * {{M}};
    long i = kiln_gid();
    if (i >= C) return;
    const double *p = (const double *)part;
    double s = 0.0;
    for (int y = 0; y < G; y++) s += p[(long)y * C + i];
    ((double *)dmean)[i] = M ? s / (double)M : 0.0;
}
//@ bn_stats_fin
/* The end of bn_stats after col_part MODE 1: the biased variance from the
 * G partials (split order), then stats and the running statistics exactly
 * as bn_stats. */
KILN_KERNEL void {{NAME}}(int n, float *stats, float *run_mean, float *run_var,
                          const float *dmean, const float *part)
{
    const int C = {{C}}, G = {{G}};
    const long M = (long)n * {{M}};
    long i = kiln_gid();
    if (i >= C) return;
    int c = (int)i;
    const double *p = (const double *)part;
    double v = 0.0;
    for (int y = 0; y < G; y++) v += p[(long)y * C + c];
    double mean = ((const double *)dmean)[c];
    double var = M ? v / (double)M : 0.0;
    double mom = (double){{MOM}};
    double unbias = M > 1 ? (double)M / (double)(M - 1) : 1.0;
    stats[c] = (float)mean;
    stats[C + c] = (float)(1.0 / sqrt(var + (double){{EPS}}));
    run_mean[c] = (float)(mom * (double)run_mean[c] + (1.0 - mom) * mean);
    run_var[c] = (float)(mom * (double)run_var[c] + (1.0 - mom) * var * unbias);
}
//@ epi_fwd
/* out (n*M, C) = act(bn(z + bias)) (+ res), one thread per element.
 * BIAS: add bias (C) first, and store z + bias back into z when
 * STORE_Z (z is kept for the backward pass). BN: 0 none; 1 batch
 * statistics, (v - mean)*(invstd*gamma) + beta with mean/invstd from the
 * stats; 2 affine, v*scale + shift. RES: add res after the activation.
 * out may alias z. */
KILN_KERNEL void {{NAME}}(int n, float *out, float *z, const float *bias,
                          const float *mean, const float *invstd, const float *gamma,
                          const float *beta, const float *scale, const float *shift,
                          const float *res)
{
    long i = kiln_gid();
    if (i >= (long)n * {{M}} * {{C}}) return;
    int c = (int)(i % {{C}});
    float v = z[i];
    if ({{BIAS}}) {
        v += bias[c];
        if ({{STORE_Z}}) z[i] = v;
    }
    float pre = v;
    if ({{BN}} == 1) pre = kiln_bn(v, mean[c], invstd[c], gamma[c], beta[c]);
    if ({{BN}} == 2) pre = v * scale[c] + shift[c];
    float o = kiln_{{ACT}}(pre);
    if ({{RES}}) o += res[i];
    out[i] = o;
}
//@ epi_bwd
/* The elementwise half of the epilogue backward, one thread per element of
 * (n*M, C): dres (+)= dout when RES (RES_ACC: add); dz = dout *
 * act'(pre) with pre recomputed from z as in epi_fwd (z read only when
 * HAS_ACT); times scale[c] when SCALE (an affine BN whose gamma does
 * not train: no column sums are needed, so its input gradient is done here).
 * dz is not written when !DZ (no BN, no activation: dz would equal dout,
 * and the conv's backward reads dout instead). */
KILN_KERNEL void {{NAME}}(int n, float *dz, float *dres, const float *dout, const float *z,
                          const float *mean, const float *invstd, const float *gamma,
                          const float *beta, const float *scale, const float *shift)
{
    long i = kiln_gid();
    if (i >= (long)n * {{M}} * {{C}}) return;
    int c = (int)(i % {{C}});
    float g = dout[i];
    if ({{RES}}) dres[i] = {{RES_ACC}} ? dres[i] + g : g;
    float v = g;
    if ({{HAS_ACT}}) {
        float pre = z[i];
        if ({{BN}} == 1) pre = kiln_bn(pre, mean[c], invstd[c], gamma[c], beta[c]);
        if ({{BN}} == 2) pre = pre * scale[c] + shift[c];
        v = g * kiln_{{ACT}}_grad(pre);
    }
    if ({{SCALE}}) v = v * scale[c];
    if ({{DZ}}) dz[i] = v;
}
//@ chan_bwd
/* Per-channel column sums and what follows from them, one block per channel
 * c, over a (n*M, C) (the split form is col_part + chan_fin + chan_dx):
 * sa = sum a, and when SX sx = sum a * xhat with
 * xhat = (x - mean[c]) * inv (float), inv = invstd[c], or when INV
 * (float)(1/sqrt(invstd[c] + eps)) (the pointer then holds the variance);
 * sums in double (kiln_chan_sums). dgamma[c] = sx when DG, dbeta[c] = sa
 * when DB (overwritten). Then DX: 0 nothing; 1 the BN-train input
 * gradient dx (+)= gamma*inv*(a - sa/M - xhat*sx/M) (ACC: add; dx may
 * alias a), as kiln_bn_train_dx; 2 dx = a * scale[c] (in place allowed). */
KILN_KERNEL void {{NAME}}(int n, float *dx, float *dgamma, float *dbeta, const float *a,
                          const float *x, const float *mean, const float *invstd,
                          const float *gamma, const float *scale)
{
    KILN_SHARED double sh[256];
    const int C = {{C}};
    const long M = (long)n * {{M}};
    int c = (int)blockIdx.x;
    float mu = 0.0f, inv = 0.0f;
    if ({{SX}}) {
        mu = mean[c];
        inv = {{INV}} ? (float)(1.0 / sqrt((double)invstd[c] + (double){{EPS}})) : invstd[c];
    }
    double sa = 0.0, sx = 0.0;
    for (long m = (long)threadIdx.x; m < M; m += (long)blockDim.x) {
        float av = a[m * C + c];
        sa += av;
        if ({{SX}}) sx += (double)av * (double)((x[m * C + c] - mu) * inv);
    }
    sa = kiln_block_sum(sa, sh);
    if ({{SX}}) sx = kiln_block_sum(sx, sh);
    if (threadIdx.x == 0) {
        if ({{DG}}) dgamma[c] = (float)sx;
        if ({{DB}}) dbeta[c] = (float)sa;
    }
    if ({{DX}} == 1) {
        double gi = (double)gamma[c] * (double)inv;
        double ma = M ? sa / (double)M : 0.0, mx = M ? sx / (double)M : 0.0;
        for (long m = (long)threadIdx.x; m < M; m += (long)blockDim.x) {
            long i = m * C + c;
            float xhat = (x[i] - mu) * inv;
            float v = (float)(gi * ((double)a[i] - ma - (double)xhat * mx));
            dx[i] = {{ACC}} ? dx[i] + v : v;
        }
    }
    if ({{DX}} == 2) {
        float s = scale[c];
        for (long m = (long)threadIdx.x; m < M; m += (long)blockDim.x)
            dx[m * C + c] = a[m * C + c] * s;
    }
}
//@ chan_fin
/* chan_bwd's sums after col_part MODE 2: sa, sx of channel c from the G
 * partials (split order); dgamma[c] = sx when DG, dbeta[c] = sa when DB
 * (overwritten); sums (2C doubles) = sa, then sx, for chan_dx. */
KILN_KERNEL void {{NAME}}(int n, float *sums, float *dgamma, float *dbeta, const float *part)
{
    const int C = {{C}}, G = {{G}};
    long i = kiln_gid();
    (void)n;
    if (i >= C) return;
    const double *p = (const double *)part;
    double sa = 0.0, sx = 0.0;
    for (int y = 0; y < G; y++) {
        sa += p[(long)y * C + i];
        if ({{SX}}) sx += p[(long)G * C + (long)y * C + i];
    }
    if ({{DG}}) dgamma[i] = (float)sx;
    if ({{DB}}) dbeta[i] = (float)sa;
    ((double *)sums)[i] = sa;
    ((double *)sums)[C + i] = sx;
}
//@ chan_dx
/* chan_bwd's per-element part, one thread per element of (n*M, C), with
 * sa, sx from chan_fin's sums: DX 1 the BN-train input gradient dx (+)=
 * gamma*inv*(a - sa/M - xhat*sx/M) (ACC: add; dx may alias a); 2 dx =
 * a * scale[c] (in place allowed). mean/invstd/INV as chan_bwd. */
KILN_KERNEL void {{NAME}}(int n, float *dx, const float *a, const float *x, const float *mean,
                          const float *invstd, const float *gamma, const float *scale,
                          const float *sums)
{
    const int C = {{C}};
    const long M = (long)n * {{M}};
    long i = kiln_gid();
    if (i >= M * C) return;
    int c = (int)(i % C);
    if ({{DX}} == 1) {
        float mu = mean[c];
        float inv = {{INV}} ? (float)(1.0 / sqrt((double)invstd[c] + (double){{EPS}})) : invstd[c];
        const double *sm = (const double *)sums;
        double gi = (double)gamma[c] * (double)inv;
        double ma = M ? sm[c] / (double)M : 0.0, mx = M ? sm[C + c] / (double)M : 0.0;
        float xhat = (x[i] - mu) * inv;
        float v = (float)(gi * ((double)a[i] - ma - (double)xhat * mx));
        dx[i] = {{ACC}} ? dx[i] + v : v;
    }
    if ({{DX}} == 2) dx[i] = a[i] * scale[c];
}
//@ bn_infer_dx
/* The input gradient of a BN on running statistics (bn_infer_backward):
 * dx (n*M, C) (+)= dout * (gamma * invstd), invstd = (float)(1/sqrt(var+eps))
 * in double. */
KILN_KERNEL void {{NAME}}(int n, float *dx, const float *dout, const float *gamma, const float *var)
{
    long i = kiln_gid();
    if (i >= (long)n * {{M}} * {{C}}) return;
    int c = (int)(i % {{C}});
    float inv = (float)(1.0 / sqrt((double)var[c] + (double){{EPS}}));
    float v = dout[i] * (gamma[c] * inv);
    dx[i] = {{ACC}} ? dx[i] + v : v;
}
