/* kernels/cpu/act.c — elementwise activations: relu, relu6, swish, sigmoid,
 * gelu (erf form).
 *
 * Contract: act_forward may run in place (out == x). act_backward takes the
 * activation's INPUT x (not its output) and gives 0 at the relu kinks; dx may
 * alias dout. The per-element formulas live in internal.h and are shared with
 * the fused epilogue.
 */
#include "kernels/cpu/internal.h"

/* One loop per activation, as the fused epilogue's (bn.c): ACT is a
 * constant there, so kiln_act's switch folds away and the loop vectorizes
 * (with the switch inside, the relu loops ran as scalar branches). */
#define ACT_SWITCH(act, LOOP)                         \
    switch (act) {                                    \
    case ACT_NONE:    LOOP(ACT_NONE) break;           \
    case ACT_RELU:    LOOP(ACT_RELU) break;           \
    case ACT_RELU6:   LOOP(ACT_RELU6) break;          \
    case ACT_SWISH:   LOOP(ACT_SWISH) break;          \
    case ACT_SIGMOID: LOOP(ACT_SIGMOID) break;        \
    case ACT_GELU:    LOOP(ACT_GELU) break;           \
    }

#define ACT_FWD_LOOP(ACT)                                           \
    _Pragma("omp parallel for schedule(static) if (n >= KILN_PAR_MIN)") \
    for (size_t i = 0; i < n; i++)                                  \
        out[i] = kiln_act(x[i], ACT);

/* out = act(x), n values. */
void act_forward(real *out, const real *x, size_t n, Act act)
{
    ACT_SWITCH(act, ACT_FWD_LOOP)
}

#define ACT_BWD_LOOP(ACT)                                           \
    _Pragma("omp parallel for schedule(static) if (n >= KILN_PAR_MIN)") \
    for (size_t i = 0; i < n; i++) {                                \
        real v = dout[i] * kiln_act_grad(x[i], ACT);                \
        dx[i] = acc ? dx[i] + v : v;                                \
    }

/* dx (+)= dout * act'(x), n values. */
void act_backward(real *dx, const real *dout, const real *x, size_t n, Act act, int acc)
{
    ACT_SWITCH(act, ACT_BWD_LOOP)
}
