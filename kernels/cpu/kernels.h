/* kernels/cpu/kernels.h — the CPU kernels: forward and backward of every op,
 * the fused conv epilogue, the loss and the optimizer update.
 *
 * Contract:
 *  - Layout NHWC for activations; conv weights (R, S, C, K) = HWIO, depthwise
 *    weights (R, S, C) = HWC, dense weights (F, K) = IO.
 *  - Outputs come first, inputs next, shapes last. Every pointer has a shape
 *    comment.
 *  - `real` is float in production. The gradient tests compile the same
 *    sources with -DKILN_REAL=double so that finite differences are taken in
 *    double precision on the very code that runs.
 *  - Backward kernels OVERWRITE parameter gradients (each parameter belongs to
 *    one layer) and write the input gradient either by overwriting (acc = 0) or
 *    by adding to it (acc = 1); the planner decides statically which consumer
 *    of a tensor writes first. A NULL gradient pointer means "not needed"
 *    (frozen parameters, or an input that has no trainable ancestor) and that
 *    part of the work is skipped.
 *  - Dimension letters: N batch; H, W, C input height, width, channels;
 *    P, Q output height, width; K output channels; R, S kernel height, width;
 *    M = N*H*W (or N*P*Q) rows of a per-channel op; F dense input features.
 */
#ifndef KILN_KERNELS_H
#define KILN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifndef KILN_REAL
#define KILN_REAL float
#endif
typedef KILN_REAL real;

/* KILN_REAL_IS_DOUBLE: 1 when `real` is double, 0 when float, usable in #if
 * (KILN_REAL must be spelled `float` or `double`). */
#define KILN_REAL_IS_float 0
#define KILN_REAL_IS_double 1
#define KILN_PASTE_(a, b) a##b
#define KILN_PASTE(a, b) KILN_PASTE_(a, b)
#define KILN_REAL_IS_DOUBLE KILN_PASTE(KILN_REAL_IS_, KILN_REAL)

/* ---- activations ------------------------------------------------------- */

/* ACT_GELU is the erf form, 0.5*x*(1 + erf(x/sqrt(2))) (PyTorch's default).
 * New kinds go at the end: tests and the emitter index tables by the value. */
typedef enum { ACT_NONE = 0, ACT_RELU, ACT_RELU6, ACT_SWISH, ACT_SIGMOID, ACT_GELU } Act;

/* out = act(x), elementwise over n values. out may alias x. */
void act_forward(real *out, const real *x, size_t n, Act act);
/* dx (+)= dout * act'(x), from the activation's input x. */
void act_backward(real *dx, const real *dout, const real *x, size_t n, Act act, int acc);

/* ---- convolution -------------------------------------------------------- */

typedef struct {
    int N, H, W, C;       /* input */
    int K, R, S;          /* output channels (== C for depthwise), kernel */
    int stride_h, stride_w;
    int pad_t, pad_l;     /* top/left padding; bottom/right follow from P, Q */
    int P, Q;             /* output height, width */
} ConvShape;

/* Workspace (in reals) that conv2d_forward / conv2d_backward need: the
 * im2col matrix of the whole batch, 0 for a 1x1 stride-1 unpadded conv. */
size_t conv2d_workspace(const ConvShape *s);

/* out = conv(x, w) + bias.  out (N,P,Q,K), x (N,H,W,C), w (R,S,C,K),
 * bias (K) or NULL, ws >= conv2d_workspace(s). Through BLAS sgemm. */
void conv2d_forward(real *out, const real *x, const real *w, const real *bias,
                    real *ws, const ConvShape *s);
/* dx (N,H,W,C) or NULL, dw (R,S,C,K) or NULL, dbias (K) or NULL,
 * dout (N,P,Q,K). x is read only for dw (may be NULL otherwise); the same
 * holds for dwconv2d_backward and dense_backward. */
void conv2d_backward(real *dx, real *dw, real *dbias, const real *dout,
                     const real *x, const real *w, real *ws,
                     const ConvShape *s, int acc);

/* Depthwise: out (N,P,Q,C), x (N,H,W,C), w (R,S,C), bias (C) or NULL. */
void dwconv2d_forward(real *out, const real *x, const real *w, const real *bias,
                      const ConvShape *s);
void dwconv2d_backward(real *dx, real *dw, real *dbias, const real *dout,
                       const real *x, const real *w, const ConvShape *s, int acc);

/* ---- zero padding -------------------------------------------------------- */

/* out (N, H+pt+pb, W+pl+pr, C), x (N,H,W,C). */
void zeropad_forward(real *out, const real *x, int N, int H, int W, int C,
                     int pt, int pb, int pl, int pr);
void zeropad_backward(real *dx, const real *dout, int N, int H, int W, int C,
                      int pt, int pb, int pl, int pr, int acc);

/* ---- batch normalization --------------------------------------------------
 * Three modes: train (batch statistics; running statistics updated with
 * run = momentum*run + (1-momentum)*batch, Keras convention, unbiased batch
 * variance for the running update), infer-trainable (running statistics,
 * gamma/beta learn), frozen (a constant per-channel scale/shift). */

/* Train: out (M,C), mean/invstd (C) written for the backward pass,
 * x (M,C), gamma/beta (C), run_mean/run_var (C) updated in place. */
void bn_train_forward(real *out, real *mean, real *invstd, const real *x,
                      const real *gamma, const real *beta,
                      real *run_mean, real *run_var,
                      real momentum, real eps, size_t M, int C);
void bn_train_backward(real *dx, real *dgamma, real *dbeta, const real *dout,
                       const real *x, const real *mean, const real *invstd,
                       const real *gamma, size_t M, int C, int acc);

/* scale = gamma / sqrt(var + eps), shift = beta - mean * scale, per channel.
 * Used for infer-trainable and frozen BN and for folding. */
void bn_scale_shift(real *scale, real *shift, const real *gamma, const real *beta,
                    const real *mean, const real *var, real eps, int C);

/* out = x * scale + shift per channel: out (M,C), x (M,C), scale/shift (C).
 * out may alias x. */
void channel_affine_forward(real *out, const real *x, const real *scale,
                            const real *shift, size_t M, int C);
/* Infer-trainable BN backward: dx (+)= dout*scale; dgamma = sum dout*xhat,
 * dbeta = sum dout, with xhat = (x - mean) * invstd from running statistics
 * (invstd = 1/sqrt(var+eps)). dgamma/dbeta NULL when frozen. */
void bn_infer_backward(real *dx, real *dgamma, real *dbeta, const real *dout,
                       const real *x, const real *gamma, const real *mean,
                       const real *var, real eps, size_t M, int C, int acc);

/* Fold a BN into the conv before it: w' = w * scale[k], b' = (b - mean)*scale
 * + beta, i.e. b' = b*scale + shift. w (R*S*C, K) for conv (cols = K) or
 * (R*S, C) for depthwise (cols = C); bias may be NULL (treated as 0).
 * wout (rows, cols), bout (cols). */
void bn_fold(real *wout, real *bout, const real *w, const real *bias,
             const real *scale, const real *shift, size_t rows, int cols);

/* ---- the fused conv epilogue ---------------------------------------------
 * out = act(bn(z)) (+ res), in one pass after the batch statistics.
 * bn is one of: none, train (batch statistics), affine (scale/shift from
 * running statistics or constants). The unfused twin is the sequence
 * bn_* -> act_* -> add_*; the two must agree to 1e-5 relative. */

typedef enum { EPI_BN_NONE = 0, EPI_BN_TRAIN, EPI_BN_AFFINE } EpiBn;

typedef struct {
    EpiBn bn;
    Act act;
    int residual;      /* 1: add res after the activation */
    real eps, momentum; /* for EPI_BN_TRAIN */
} Epilogue;

/* out (M,C); z (M,C) the conv output; for EPI_BN_TRAIN: mean/invstd (C)
 * written, gamma/beta (C), run_mean/run_var (C) updated; for EPI_BN_AFFINE:
 * scale/shift (C); res (M,C) or NULL. Unused pointers may be NULL. */
void epilogue_forward(real *out, real *mean, real *invstd, const real *z,
                      const real *gamma, const real *beta,
                      real *run_mean, real *run_var,
                      const real *scale, const real *shift,
                      const real *res, const Epilogue *e, size_t M, int C);
/* From dout (M,C) and the saved z (M,C): dz (M,C) overwritten; dgamma/dbeta
 * (C) for EPI_BN_TRAIN, or for EPI_BN_AFFINE with trainable gamma (then
 * mean/invstd are the running mean and 1/sqrt(var+eps), and gamma given);
 * NULL when not trained. dres (M,C) gets dout (acc: added), NULL if none.
 * For EPI_BN_TRAIN mean/invstd are the saved batch statistics, scale is
 * unused and `shift` must carry beta (C) whenever act != ACT_NONE: the
 * activation's derivative needs the pre-activation gamma*xhat + beta, and
 * there is no beta parameter. For EPI_BN_AFFINE mean/invstd are needed only
 * when dgamma is wanted. z is read only for EPI_BN_TRAIN, for an activation
 * other than ACT_NONE, or for dgamma; otherwise it may be NULL. */
void epilogue_backward(real *dz, real *dgamma, real *dbeta, real *dres, int dres_acc,
                       const real *dout, const real *z,
                       const real *mean, const real *invstd,
                       const real *gamma, const real *scale, const real *shift,
                       const Epilogue *e, size_t M, int C);

/* ---- layer normalization and layer scale ------------------------------------
 * Channel LayerNorm normalizes each row (one pixel's C values, NHWC) over its
 * C channels with the biased variance, then applies a per-channel gamma/beta.
 * The per-row statistics are saved by the forward pass for the backward pass
 * as stats (M, 2): stats[2m] = mean, stats[2m+1] = 1/sqrt(var + eps). */

/* out (M,C), stats (M,2) written, x (M,C), gamma/beta (C). out may alias x.
 * out NULL: the statistics only (the backward pass recomputes them this way
 * into workspace, so no per-row tensor lives from forward to backward;
 * gamma/beta are then unread). */
void layernorm_forward(real *out, real *stats, const real *x, const real *gamma,
                       const real *beta, real eps, size_t M, int C);
/* dx (M,C) (+)= the input gradient; dgamma = sum_m dout*xhat, dbeta = sum_m
 * dout (C, overwritten); x (M,C) and stats (M,2) as saved by the forward.
 * dx may alias dout. x is read only for dx or dgamma. */
void layernorm_backward(real *dx, real *dgamma, real *dbeta, const real *dout,
                        const real *x, const real *stats, const real *gamma,
                        size_t M, int C, int acc);

/* Layer scale: out (M,C) = x (M,C) * s (C). out may alias x. */
void layerscale_forward(real *out, const real *x, const real *s, size_t M, int C);
/* dx (M,C) (+)= dout * s; ds (C) = sum_m dout*x (overwritten). Either NULL to
 * skip it; x is read only for ds. */
void layerscale_backward(real *dx, real *ds, const real *dout, const real *x,
                         const real *s, size_t M, int C, int acc);

/* ---- elementwise and pooling ---------------------------------------------- */

/* out = a + b, n values. */
void add_forward(real *out, const real *a, const real *b, size_t n);
/* dx (+)= dout, n values (the backward of add for each operand; also a copy). */
void grad_pass(real *dx, const real *dout, size_t n, int acc);

/* Channel-wise multiply (squeeze-and-excitation): out (N,HW,C) =
 * x (N,HW,C) * s (N,C). */
void chanmul_forward(real *out, const real *x, const real *s, int N, int HW, int C);
/* dx (N,HW,C) or NULL, ds (N,C) or NULL. */
void chanmul_backward(real *dx, real *ds, const real *dout, const real *x,
                      const real *s, int N, int HW, int C, int accx, int accs);

/* Global average pool: out (N,C), x (N,HW,C). */
void gap_forward(real *out, const real *x, int N, int HW, int C);
void gap_backward(real *dx, const real *dout, int N, int HW, int C, int acc);

/* Max pool, window R x S, padding with -inf (padded cells never win):
 * out (N,P,Q,C), x (N,H,W,C). Uses ConvShape with K == C. The backward
 * recomputes the argmax from x (first maximum wins). */
void maxpool_forward(real *out, const real *x, const ConvShape *s);
void maxpool_backward(real *dx, const real *dout, const real *x, const ConvShape *s, int acc);

/* ---- dense ---------------------------------------------------------------- */

/* out (N,K) = x (N,F) w (F,K) + bias (K) or NULL. */
void dense_forward(real *out, const real *x, const real *w, const real *bias,
                   int N, int F, int K);
void dense_backward(real *dx, real *dw, real *dbias, const real *dout,
                    const real *x, const real *w, int N, int F, int K, int acc);

/* ---- dropout ---------------------------------------------------------------
 * Inverted dropout: kept values scaled by 1/(1-rate). The mask is a pure
 * function of (seed, index), so the backward pass recomputes it and no mask is
 * stored. rate 0 or evaluation: a copy. */
int dropout_keep(uint64_t seed, size_t i, real rate);
void dropout_forward(real *out, const real *x, size_t n, real rate, uint64_t seed);
void dropout_backward(real *dx, const real *dout, size_t n, real rate, uint64_t seed, int acc);

/* ---- loss ------------------------------------------------------------------ */

/* Softmax cross-entropy, mean over the batch. logits (N,K), labels (N).
 * dlogits (N,K) = (softmax - onehot)/N, or NULL. Returns the mean loss
 * (computed in double). correct, if non-NULL, gets the count of argmax hits. */
double softmax_ce(real *dlogits, int *correct, const real *logits,
                  const int32_t *labels, int N, int K);

/* ---- optimizer ------------------------------------------------------------- */

/* One segment of the trainable arena with its own LR and weight decay. */
typedef struct {
    size_t begin, end;   /* element range in the arena */
    float lr, wd;
} LrSegment;

/* SGD with momentum over the whole trainable arena, one pass:
 *   g = grad + wd * p;  m = momentum * m + g;  p -= lr * m
 * (the PyTorch/Keras-SGD-compatible form, lr applied after momentum).
 * param/grad/mom (n); segs sorted, covering [0, n). */
void sgd_update(real *param, const real *grad, real *mom, size_t n,
                const LrSegment *segs, int nseg, real momentum);

/* ---- BLAS ------------------------------------------------------------------ */

/* C (M,N) = alpha * op(A) op(B) + beta * C, row-major; dispatches to
 * cblas_sgemm or cblas_dgemm with `real`, in blocks of C fixed by the shape
 * (gemm.c), so the result is the same for any thread count. */
void gemm(int transA, int transB, int M, int N, int K, real alpha,
          const real *A, int lda, const real *B, int ldb, real beta,
          real *C, int ldc);

#endif
