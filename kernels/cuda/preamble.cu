//@ preamble
/* kiln generated kernels. Shared definitions: NVRTC has no libc headers, so
 * everything the kernels use is here. Under the host emulation
 * (KILN_EMULATE, tests/cuda_emu.h) the same text compiles as C. */
#ifndef KILN_EMULATE
#define KILN_KERNEL extern "C" __global__
#define KILN_DEV __device__ __forceinline__
#define KILN_SHARED __shared__
#define KILN_SYNC() __syncthreads()
#define KILN_RESTRICT __restrict__
typedef unsigned long long kiln_u64;
typedef unsigned int kiln_u32;
#endif

/* Per-element formulas, the same expressions as kernels/cpu/internal.h. */
KILN_DEV float kiln_relu(float x) { return x > 0.0f ? x : 0.0f; }
KILN_DEV float kiln_relu6(float x) { return x > 0.0f ? (x < 6.0f ? x : 6.0f) : 0.0f; }
KILN_DEV float kiln_swish(float x) { return x / (1.0f + expf(-x)); }
KILN_DEV float kiln_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
KILN_DEV float kiln_none(float x) { return x; }
KILN_DEV float kiln_relu_grad(float x) { return x > 0.0f ? 1.0f : 0.0f; }
KILN_DEV float kiln_relu6_grad(float x) { return (x > 0.0f && x < 6.0f) ? 1.0f : 0.0f; }
KILN_DEV float kiln_swish_grad(float x)
{
    float sg = 1.0f / (1.0f + expf(-x));
    return sg * (1.0f + x * (1.0f - sg));
}
KILN_DEV float kiln_sigmoid_grad(float x)
{
    float sg = 1.0f / (1.0f + expf(-x));
    return sg * (1.0f - sg);
}
KILN_DEV float kiln_none_grad(float x) { (void)x; return 1.0f; }
KILN_DEV float kiln_bn(float x, float mean, float invstd, float gamma, float beta)
{
    return (x - mean) * (invstd * gamma) + beta;
}
/* Finite without isfinite(): x - x is 0 exactly for finite x, NaN otherwise. */
KILN_DEV int kiln_finite(float x) { return x - x == 0.0f; }

/* Split a flat index i of an (n, H, W, C) tensor, channels fastest: sets
 * *h, *w, *c and returns the image. */
KILN_DEV long kiln_nhwc(long i, int H, int W, int C, int *h, int *w, int *c)
{
    *c = (int)(i % C);
    long t = i / C;
    *w = (int)(t % W);
    t /= W;
    *h = (int)(t % H);
    return t / H;
}

/* Global thread index over the x dimension. */
KILN_DEV long kiln_gid(void) { return (long)blockIdx.x * (long)blockDim.x + (long)threadIdx.x; }

/* Sum of v over the block. Every thread of the block calls it (no early
 * return before it); blockDim.x is a power of two, sh holds blockDim.x
 * doubles; every thread gets the sum. */
KILN_DEV double kiln_block_sum(double v, double *sh)
{
    int t = (int)threadIdx.x;
    sh[t] = v;
    KILN_SYNC();
    for (int s = (int)blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] += sh[t + s];
        KILN_SYNC();
    }
    double r = sh[0];
    KILN_SYNC();
    return r;
}

/* Dropout: the mask is a pure function of (seed, index), the same as
 * dropout_keep in kernels/cpu/elementwise.c, so forward and backward agree
 * without a stored mask. The seed is step * 1000003 + layer, with step the
 * uint64 at word `word` of the control block (low word first). */
KILN_DEV kiln_u64 kiln_dropout_seed(const float *ctrl, int word, long layer)
{
    const kiln_u32 *cw = (const kiln_u32 *)ctrl;
    kiln_u64 step = (kiln_u64)cw[word] | ((kiln_u64)cw[word + 1] << 32);
    return step * 1000003ull + (kiln_u64)layer;
}
KILN_DEV int kiln_dropout_keep(kiln_u64 seed, long i, float rate)
{
    kiln_u64 z = seed + 0x9E3779B97F4A7C15ull * ((kiln_u64)i + 1);
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBull;
    z ^= z >> 31;
    double u = (double)(z >> 11) * (1.0 / 9007199254740992.0);
    return u >= (double)rate;
}

/* The output positions p0..p1 (stride st, window k, P outputs) whose window
 * covers position hp of the padded input: the gather form of a scatter. */
KILN_DEV void kiln_window_cover(int hp, int k, int st, int P, int *p0, int *p1)
{
    *p0 = hp - k + 1 <= 0 ? 0 : (hp - k + st) / st;
    *p1 = hp / st;
    if (*p1 > P - 1) *p1 = P - 1;
}
//@ gelu
/* GELU, erf form (kernels/cpu/internal.h): emitted after the preamble only
 * in programs that use it. */
KILN_DEV float kiln_gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f)); }
KILN_DEV float kiln_gelu_grad(float x)
{
    return 0.5f * (1.0f + erff(x * 0.70710678118654752440f))
           + x * 0.39894228040143267794f * expf(-0.5f * x * x);
}
