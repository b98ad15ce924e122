/* kernels/cuda/ops.cu — templates of every op but conv, depthwise conv and BN:
 * standalone activations, add, channel multiply (squeeze-and-excitation),
 * global average pool, max pool, zero padding, the dense bias and its
 * gradient, dropout, the softmax cross-entropy loss, the gradient finite
 * check, the fused SGD-momentum update, and ConvNeXt's channel layer norm
 * and layer scale. Rendered by codegen/emit_ops.c.
 *
 * Contract: each section computes what the kernels/cpu function of the same
 * op computes, with the same per-element float expressions, and reductions
 * in double (elementwise.c, conv.c's pooling and padding, dense.c, loss.c,
 * sgd.c, norm.c). Input gradients overwrite when {{ACC}} is 0 and add when it is 1.
 * Shapes are baked in as constants; `n` is the batch count of the launch.
 * Elementwise kernels run one thread per element (blocks of any size);
 * kernels that use KILN_SHARED run with blocks of {{BLOCK}} threads and reach
 * every KILN_SYNC from every thread (no early return).
 *
 * Invariants: no atomics on floats, so every result is the same from run to
 * run: GAP, the channel-multiply scale gradient and the loss sum run in the
 * CPU's order (one thread per output, or thread 0 over the rows); max pool
 * backward gathers per input cell; the dense bias gradient sums with
 * kiln_block_sum. The dropout mask is the CPU's dropout_keep hash of
 * (step * 1000003 + layer, element index), step read from the control block.
 */

//@ act_fwd
/* out = act(x); keys PER (elements per image), ACT. out may alias x. */
KILN_KERNEL void {{NAME}}(int n, float *out, const float *x)
{
    long i = kiln_gid();
    if (i >= (long)n * {{PER}}) return;
    out[i] = kiln_{{ACT}}(x[i]);
}

//@ act_bwd
/* dx (+)= dout * act'(x), x the activation's input; keys PER, ACT, ACC. */
KILN_KERNEL void {{NAME}}(int n, float *dx, const float *dout, const float *x)
{
    long i = kiln_gid();
    if (i >= (long)n * {{PER}}) return;
    float v = dout[i] * kiln_{{ACT}}_grad(x[i]);
    dx[i] = {{ACC}} ? dx[i] + v : v;
}

//@ add_fwd
/* out = a + b; key PER. */
KILN_KERNEL void {{NAME}}(int n, float *out, const float *a, const float *b)
{
    long i = kiln_gid();
    if (i >= (long)n * {{PER}}) return;
    out[i] = a[i] + b[i];
}

//@ grad_pass
/* dx (+)= dout (the add backward, and a copy when ACC is 0); keys PER, ACC. */
KILN_KERNEL void {{NAME}}(int n, float *dx, const float *dout)
{
    long i = kiln_gid();
    if (i >= (long)n * {{PER}}) return;
    float v = dout[i];
    dx[i] = {{ACC}} ? dx[i] + v : v;
}

//@ chanmul_fwd
/* out[b,i,c] = x[b,i,c] * s[b,c]; keys HW, C. */
KILN_KERNEL void {{NAME}}(int n, float *out, const float *x, const float *s)
{
    long i = kiln_gid();
    if (i >= (long)n * ({{HW}} * {{C}})) return;
    long b = i / ({{HW}} * {{C}});
    int c = (int)(i % {{C}});
    out[i] = x[i] * s[b * {{C}} + c];
}

//@ chanmul_dx
/* dx[b,i,c] (+)= dout[b,i,c] * s[b,c]; keys HW, C, ACC. */
KILN_KERNEL void {{NAME}}(int n, float *dx, const float *dout, const float *s)
{
    long i = kiln_gid();
    if (i >= (long)n * ({{HW}} * {{C}})) return;
    long b = i / ({{HW}} * {{C}});
    int c = (int)(i % {{C}});
    float v = dout[i] * s[b * {{C}} + c];
    dx[i] = {{ACC}} ? dx[i] + v : v;
}

//@ chanmul_ds
/* ds[b,c] (+)= sum_i dout[b,i,c] * x[b,i,c] in double, i in order; one
 * thread per (b, c); keys HW, C, ACC. */
KILN_KERNEL void {{NAME}}(int n, float *ds, const float *dout, const float *x)
{
    long j = kiln_gid();
    if (j >= (long)n * {{C}}) return;
    long b = j / {{C}};
    int c = (int)(j % {{C}});
    const float *d = dout + b * ({{HW}} * (long){{C}}) + c;
    const float *xb = x + b * ({{HW}} * (long){{C}}) + c;
    double acc = 0.0;
    for (long i = 0; i < {{HW}}; i++) acc += (double)d[i * {{C}}] * xb[i * {{C}}];
    ds[j] = {{ACC}} ? ds[j] + (float)acc : (float)acc;
}

//@ gap_fwd
/* out[b,c] = mean_i x[b,i,c], summed in double in order; one thread per
 * (b, c); keys HW, C. */
KILN_KERNEL void {{NAME}}(int n, float *out, const float *x)
{
    long j = kiln_gid();
    if (j >= (long)n * {{C}}) return;
    long b = j / {{C}};
    int c = (int)(j % {{C}});
    const float *xb = x + b * ({{HW}} * (long){{C}}) + c;
    double acc = 0.0;
    for (long i = 0; i < {{HW}}; i++) acc += xb[i * {{C}}];
    out[j] = (float)(acc / {{HW}});
}

//@ gap_bwd
/* dx[b,i,c] (+)= dout[b,c] * (float)(1/HW); keys HW, C, ACC. */
KILN_KERNEL void {{NAME}}(int n, float *dx, const float *dout)
{
    long i = kiln_gid();
    if (i >= (long)n * ({{HW}} * {{C}})) return;
    const float inv = (float)(1.0 / {{HW}});
    long b = i / ({{HW}} * {{C}});
    int c = (int)(i % {{C}});
    float v = dout[b * {{C}} + c] * inv;
    dx[i] = {{ACC}} ? dx[i] + v : v;
}

//@ maxpool_fwd
/* out[b,p,q,c] = max over the window's cells inside x (padding never wins;
 * a window without any cell gives 0); keys H, W, C, R, S, SH, SW, PT, PL,
 * P, Q. */
KILN_KERNEL void {{NAME}}(int n, float *out, const float *x)
{
    long i = kiln_gid();
    if (i >= (long)n * ({{P}} * {{Q}} * {{C}})) return;
    int p, q, c;
    long b = kiln_nhwc(i, {{P}}, {{Q}}, {{C}}, &p, &q, &c);
    const float *xb = x + b * ({{H}} * {{W}} * (long){{C}}) + c;
    float o = -1.0f / 0.0f;
    int any = 0;
    for (int r = 0; r < {{R}}; r++) {
        int h = p * {{SH}} - {{PT}} + r;
        if (h < 0 || h >= {{H}}) continue;
        for (int t = 0; t < {{S}}; t++) {
            int w = q * {{SW}} - {{PL}} + t;
            if (w < 0 || w >= {{W}}) continue;
            float v = xb[((long)h * {{W}} + w) * {{C}}];
            if (v > o) o = v;
            any = 1;
        }
    }
    out[i] = any ? o : 0.0f;
}

//@ maxpool_bwd
/* dx[b,h,w,c] (+)= the dout of every window whose first maximum (scan
 * order r, s) is this cell, windows in the CPU's order (p, then q): a
 * gather, one thread per input cell; keys as maxpool_fwd, and ACC. */
KILN_KERNEL void {{NAME}}(int n, float *dx, const float *dout, const float *x)
{
    long i = kiln_gid();
    if (i >= (long)n * ({{H}} * {{W}} * {{C}})) return;
    int h, w, c;
    long b = kiln_nhwc(i, {{H}}, {{W}}, {{C}}, &h, &w, &c);
    const float *xb = x + b * ({{H}} * {{W}} * (long){{C}}) + c;
    const float *db = dout + b * ({{P}} * {{Q}} * (long){{C}}) + c;
    /* windows p with p*SH - PT <= h < p*SH - PT + R, likewise q */
    int p0, p1, q0, q1;
    kiln_window_cover(h + {{PT}}, {{R}}, {{SH}}, {{P}}, &p0, &p1);
    kiln_window_cover(w + {{PL}}, {{S}}, {{SW}}, {{Q}}, &q0, &q1);
    float v = {{ACC}} ? dx[i] : 0.0f;
    for (int p = p0; p <= p1; p++)
        for (int q = q0; q <= q1; q++) {
            float best = 0.0f;
            int ah = -1, aw = -1;
            for (int r = 0; r < {{R}}; r++) {
                int hh = p * {{SH}} - {{PT}} + r;
                if (hh < 0 || hh >= {{H}}) continue;
                for (int t = 0; t < {{S}}; t++) {
                    int ww = q * {{SW}} - {{PL}} + t;
                    if (ww < 0 || ww >= {{W}}) continue;
                    float u = xb[((long)hh * {{W}} + ww) * {{C}}];
                    if (ah < 0 || u > best) { best = u; ah = hh; aw = ww; }
                }
            }
            if (ah == h && aw == w) v += db[((long)p * {{Q}} + q) * {{C}}];
        }
    dx[i] = v;
}

//@ zeropad_fwd
/* out (N, HO, WO, C) = x (N, H, W, C) placed at (PT, PL), zeros around;
 * keys H, W, C, PT, PL, HO, WO. */
KILN_KERNEL void {{NAME}}(int n, float *out, const float *x)
{
    long i = kiln_gid();
    if (i >= (long)n * ({{HO}} * {{WO}} * {{C}})) return;
    int h, w, c;
    long b = kiln_nhwc(i, {{HO}}, {{WO}}, {{C}}, &h, &w, &c);
    h -= {{PT}};
    w -= {{PL}};
    int inside = h >= 0 && h < {{H}} && w >= 0 && w < {{W}};
    out[i] = inside ? x[((b * {{H}} + h) * {{W}} + w) * {{C}} + c] : 0.0f;
}

//@ zeropad_bwd
/* dx (+)= the interior of dout; keys as zeropad_fwd, and ACC. */
KILN_KERNEL void {{NAME}}(int n, float *dx, const float *dout)
{
    long i = kiln_gid();
    if (i >= (long)n * ({{H}} * {{W}} * {{C}})) return;
    int h, w, c;
    long b = kiln_nhwc(i, {{H}}, {{W}}, {{C}}, &h, &w, &c);
    float v = dout[((b * {{HO}} + h + {{PT}}) * {{WO}} + w + {{PL}}) * {{C}} + c];
    dx[i] = {{ACC}} ? dx[i] + v : v;
}

//@ dense_bias
/* out[b,k] += bias[k] after the GEMM; key K. */
KILN_KERNEL void {{NAME}}(int n, float *out, const float *bias)
{
    long i = kiln_gid();
    if (i >= (long)n * {{K}}) return;
    out[i] += bias[i % {{K}}];
}

//@ dense_dbias
/* dbias[k] = sum_b dout[b,k] in double; one block of {{BLOCK}} threads per
 * column k (grid.x = K); key K. */
KILN_KERNEL void {{NAME}}(int n, float *dbias, const float *dout)
{
    KILN_SHARED double sh[{{BLOCK}}];
    long k = (long)blockIdx.x;
    double s = 0.0;
    for (long r = (long)threadIdx.x; r < n; r += (long)blockDim.x) s += dout[r * {{K}} + k];
    s = kiln_block_sum(s, sh);
    if (threadIdx.x == 0) dbias[k] = (float)s;
}

//@ copy
/* out = x (dropout in inference mode, or at rate 0); key PER. */
KILN_KERNEL void {{NAME}}(int n, float *out, const float *x)
{
    long i = kiln_gid();
    if (i >= (long)n * {{PER}}) return;
    out[i] = x[i];
}

//@ dropout_fwd
/* out = keep ? x / (1 - RATE) : 0, keep = dropout_keep(step * 1000003 +
 * LAYER, i, RATE) of kernels/cpu/elementwise.c with step the uint64 at word
 * STEP of the control block; keys PER, RATE (a float literal, 0 < RATE),
 * LAYER, STEP. */
KILN_KERNEL void {{NAME}}(int n, float *out, const float *x, const float *ctrl)
{
    long i = kiln_gid();
    if (i >= (long)n * {{PER}}) return;
    kiln_u64 seed = kiln_dropout_seed(ctrl, {{STEP}}, {{LAYER}});
    const float rate = {{RATE}};
    const float scale = rate < 1.0f ? (float)(1.0 / (1.0 - (double)rate)) : 0.0f;
    out[i] = (rate < 1.0f && kiln_dropout_keep(seed, i, rate)) ? x[i] * scale : 0.0f;
}

//@ dropout_bwd
/* dx (+)= keep ? dout / (1 - RATE) : 0 with the forward's mask; keys as
 * dropout_fwd, and ACC. */
KILN_KERNEL void {{NAME}}(int n, float *dx, const float *dout, const float *ctrl)
{
    long i = kiln_gid();
    if (i >= (long)n * {{PER}}) return;
    kiln_u64 seed = kiln_dropout_seed(ctrl, {{STEP}}, {{LAYER}});
    const float rate = {{RATE}};
    const float scale = rate < 1.0f ? (float)(1.0 / (1.0 - (double)rate)) : 0.0f;
    float v = (rate < 1.0f && kiln_dropout_keep(seed, i, rate)) ? dout[i] * scale : 0.0f;
    dx[i] = {{ACC}} ? dx[i] + v : v;
}

//@ softmax_ce
/* Softmax cross-entropy of logits (n, K) against int32 labels, as
 * kernels/cpu/loss.c: per row in double; the SUM of the row losses (added
 * in row order by thread 0) as a double at words LOSS..LOSS+1 of the
 * control block, the argmax hits at CORRECT, and BAD = 1 when the sum is
 * not finite or a label is out of range, else 0. TRAIN 1: dlogits (n, K) =
 * (softmax - onehot) / n. One block of {{BLOCK}} threads, a row a thread;
 * keys K, TRAIN, LOSS, CORRECT, BAD. */
KILN_KERNEL void {{NAME}}(int n, float *ctrl, const float *logits, const float *lab,
                          float *dlogits)
{
    KILN_SHARED double sh_loss[{{BLOCK}}];
    KILN_SHARED int sh_hit[{{BLOCK}}];
    const int *y = (const int *)lab;
    int t = (int)threadIdx.x;
    double total = 0.0;
    int hits = 0, bad = 0;
    for (int r0 = 0; r0 < n; r0 += {{BLOCK}}) {
        int r = r0 + t;
        double rl = 0.0;
        int hit = 0;
        if (r < n) {
            const float *l = logits + (long)r * {{K}};
            int yr = y[r];
            if (yr < 0 || yr >= {{K}}) {
                hit = -1;
            } else {
                int arg = 0;
                for (int k = 1; k < {{K}}; k++)
                    if (l[k] > l[arg]) arg = k;
                hit = arg == yr;
                double mx = l[arg], sum = 0.0;
                for (int k = 0; k < {{K}}; k++) sum += exp((double)l[k] - mx);
                rl = log(sum) - ((double)l[yr] - mx);
                if ({{TRAIN}}) {
                    float *d = dlogits + (long)r * {{K}};
                    for (int k = 0; k < {{K}}; k++) {
                        double pk = exp((double)l[k] - mx) / sum;
                        d[k] = (float)((pk - (double)(k == yr)) / (double)n);
                    }
                }
            }
        }
        sh_loss[t] = rl;
        sh_hit[t] = hit;
        KILN_SYNC();
        if (t == 0)
            for (int k = 0; k < {{BLOCK}} && r0 + k < n; k++) {
                total += sh_loss[k];
                if (sh_hit[k] < 0) bad = 1;
                else hits += sh_hit[k];
            }
        KILN_SYNC();
    }
    if (t == 0) {
        int *ci = (int *)ctrl;
        *(double *)(ctrl + {{LOSS}}) = total;
        ci[{{CORRECT}}] = hits;
        ci[{{BAD}}] = (bad || !(total - total == 0.0)) ? 1 : 0;
    }
}

//@ finite_check
/* Word BAD of the control block |= 1 when any of the TOTAL gradients is not
 * finite (it was reset by the loss of the step); key TOTAL. */
KILN_KERNEL void {{NAME}}(int n, float *ctrl, const float *grad)
{
    long i = kiln_gid();
    (void)n;
    if (i >= {{TOTAL}}) return;
    if (!kiln_finite(grad[i])) atomicOr((int *)ctrl + {{BAD}}, 1);
}

//@ sgd
/* SGD with momentum over the TOTAL trainable floats, as kernels/cpu/sgd.c:
 *   g = grad + wd*p;  m = momentum*m + g;  p -= lr*m
 * lr = float word LR + group of the control block, for the segment holding
 * element i (FIND: the plan's segment table as a comparison tree that sets
 * grp, -1 outside every segment: untouched); wd and momentum at words WD,
 * MOMENTUM. Nothing changes when word BAD is set. Keys TOTAL, FIND, BAD,
 * LR, WD, MOMENTUM. */
KILN_KERNEL void {{NAME}}(int n, float *param, const float *grad, float *mom, const float *ctrl)
{
    long i = kiln_gid();
    (void)n;
    if (i >= {{TOTAL}} || ((const int *)ctrl)[{{BAD}}] != 0) return;
    int grp = -1;
    {{FIND}}
    if (grp < 0) return;
    const float lr = ctrl[{{LR}} + grp], wd = ctrl[{{WD}}], momentum = ctrl[{{MOMENTUM}}];
    float g = grad[i] + wd * param[i];
    float m = momentum * mom[i] + g;
    mom[i] = m;
    param[i] -= lr * m;
}
//@ ln_fwd
/* Channel layer norm, one block of {{BLOCK}} threads per row (a pixel's C
 * values; grid.x = n * rows per image), as kernels/cpu/norm.c: mean and
 * biased variance of the row in double (two passes), stats[2m] = mean,
 * stats[2m+1] = invstd = (float)(1/sqrt(var + EPS)), out = kiln_bn(x, mean,
 * invstd, gamma[c], beta[c]) when OUT (else the statistics only, as the
 * backward pass recomputes them; out, gamma, beta unread). Keys C, EPS, OUT,
 * BLOCK. out may alias x. */
KILN_KERNEL void {{NAME}}(int n, float *out, float *stats, const float *x, const float *gamma,
                          const float *beta)
{
    KILN_SHARED double sh[{{BLOCK}}];
    const int C = {{C}};
    long m = (long)blockIdx.x;
    const float *xr = x + m * C;
    (void)n;
    double s = 0.0;
    for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x) s += xr[c];
    double mean = kiln_block_sum(s, sh) / C;
    double v = 0.0;
    for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x) {
        double d = xr[c] - mean;
        v += d * d;
    }
    v = kiln_block_sum(v, sh);
    float mu = (float)mean, inv = (float)(1.0 / sqrt(v / C + (double){{EPS}}));
    if (threadIdx.x == 0) {
        stats[2 * m] = mu;
        stats[2 * m + 1] = inv;
    }
    if ({{OUT}})
        for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x)
            out[m * C + c] = kiln_bn(xr[c], mu, inv, gamma[c], beta[c]);
}

//@ ln_dx
/* The layer norm's input gradient, one block of {{BLOCK}} threads per row:
 * g = dout*gamma[c], xhat = (x - mean)*invstd from the saved stats, sums of
 * g and g*xhat over the row in double, dx (+)= invstd*(g - sum g/C - xhat *
 * sum(g*xhat)/C) (ACC: add). Keys C, ACC, BLOCK. dx may alias dout. */
KILN_KERNEL void {{NAME}}(int n, float *dx, const float *dout, const float *x,
                          const float *stats, const float *gamma)
{
    KILN_SHARED double sh[{{BLOCK}}];
    const int C = {{C}};
    long m = (long)blockIdx.x;
    const float *xr = x + m * C, *gr = dout + m * C;
    const float mu = stats[2 * m], inv = stats[2 * m + 1];
    (void)n;
    double sg = 0.0, sgx = 0.0;
    for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x) {
        float g = gr[c] * gamma[c];
        sg += g;
        sgx += (double)g * (double)((xr[c] - mu) * inv);
    }
    double mg = kiln_block_sum(sg, sh) / C;
    double mgx = kiln_block_sum(sgx, sh) / C;
    for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x) {
        float g = gr[c] * gamma[c];
        float xhat = (xr[c] - mu) * inv;
        float v = (float)((double)inv * ((double)g - mg - (double)xhat * mgx));
        dx[m * C + c] = {{ACC}} ? dx[m * C + c] + v : v;
    }
}

//@ ln_dparams
/* The layer norm's parameter gradients, one block of {{BLOCK}} threads per
 * channel c (grid.x = C) over the n*M rows: dgamma[c] = sum dout*xhat
 * (when DG), dbeta[c] = sum dout (when DB), in double, overwritten; xhat
 * from the saved per-row stats. Keys C, M (rows per image), DG, DB, BLOCK. */
KILN_KERNEL void {{NAME}}(int n, float *dgamma, float *dbeta, const float *dout, const float *x,
                          const float *stats)
{
    KILN_SHARED double sh[{{BLOCK}}];
    const int C = {{C}};
    const long M = (long)n * {{M}};
    int c = (int)blockIdx.x;
    double sa = 0.0, sx = 0.0;
    for (long m = (long)threadIdx.x; m < M; m += (long)blockDim.x) {
        float a = dout[m * C + c];
        sa += a;
        if ({{DG}}) sx += (double)a * (double)((x[m * C + c] - stats[2 * m]) * stats[2 * m + 1]);
    }
    sa = kiln_block_sum(sa, sh);
    if ({{DG}}) sx = kiln_block_sum(sx, sh);
    if (threadIdx.x == 0) {
        if ({{DG}}) dgamma[c] = (float)sx;
        if ({{DB}}) dbeta[c] = (float)sa;
    }
}

//@ ls_fwd
/* Layer scale: out = x * s[c], one thread per element; keys PER (elements
 * per image), C. out may alias x. */
KILN_KERNEL void {{NAME}}(int n, float *out, const float *x, const float *s)
{
    long i = kiln_gid();
    if (i >= (long)n * {{PER}}) return;
    out[i] = x[i] * s[i % {{C}}];
}

//@ ls_dx
/* dx (+)= dout * s[c], one thread per element; keys PER, C, ACC. */
KILN_KERNEL void {{NAME}}(int n, float *dx, const float *dout, const float *s)
{
    long i = kiln_gid();
    if (i >= (long)n * {{PER}}) return;
    float v = dout[i] * s[i % {{C}}];
    dx[i] = {{ACC}} ? dx[i] + v : v;
}

//@ ls_ds
/* ds[c] = sum_m dout*x over the n*M rows in double (overwritten), one block
 * of {{BLOCK}} threads per channel c (grid.x = C); keys C, M, BLOCK. */
KILN_KERNEL void {{NAME}}(int n, float *ds, const float *dout, const float *x)
{
    KILN_SHARED double sh[{{BLOCK}}];
    const int C = {{C}};
    const long M = (long)n * {{M}};
    int c = (int)blockIdx.x;
    double s = 0.0;
    for (long m = (long)threadIdx.x; m < M; m += (long)blockDim.x)
        s += (double)dout[m * C + c] * (double)x[m * C + c];
    s = kiln_block_sum(s, sh);
    if (threadIdx.x == 0) ds[c] = (float)s;
}
