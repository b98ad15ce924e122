/* kernels/cpu/act.c — elementwise activations: relu, relu6, swish, sigmoid.
 *
 * Contract: act_forward may run in place (out == x). act_backward takes the
 * activation's INPUT x (not its output) and gives 0 at the relu kinks; dx may
 * alias dout. The per-element formulas live in internal.h and are shared with
 * the fused epilogue.
 */
#include "kernels/cpu/internal.h"

/* out = act(x), n values. */
void act_forward(real *out, const real *x, size_t n, Act act)
{
    #pragma omp parallel for schedule(static) if (n >= KILN_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        out[i] = kiln_act(x[i], act);
}

/* dx (+)= dout * act'(x), n values. */
void act_backward(real *dx, const real *dout, const real *x, size_t n, Act act, int acc)
{
    #pragma omp parallel for schedule(static) if (n >= KILN_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        real v = dout[i] * kiln_act_grad(x[i], act);
        dx[i] = acc ? dx[i] + v : v;
    }
}
