/* kernels/cpu/sgd.c — the optimizer: SGD with momentum and weight decay over
 * the whole trainable arena in one pass.
 *
 * Contract: per element i in segment [begin, end) with (lr, wd):
 *   g = grad + wd*p;  m = momentum*m + g;  p -= lr*m
 * (PyTorch SGD form: lr applied after momentum). Segments are sorted and
 * cover [0, n); an element outside every segment is left untouched.
 */
#include "kernels/cpu/internal.h"

/* One fused update of param and mom over all segments. */
void sgd_update(real *param, const real *grad, real *mom, size_t n,
                const LrSegment *segs, int nseg, real momentum)
{
    for (int k = 0; k < nseg; k++) {
        size_t b = segs[k].begin, e = segs[k].end < n ? segs[k].end : n;
        const real lr = (real)segs[k].lr, wd = (real)segs[k].wd;
        #pragma omp parallel for schedule(static) if (e > b && e - b >= KILN_PAR_MIN)
        for (size_t i = b; i < e; i++) {
            real g = grad[i] + wd * param[i];
            real m = momentum * mom[i] + g;
            mom[i] = m;
            param[i] -= lr * m;
        }
    }
}
