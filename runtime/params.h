/* runtime/params.h — parameter initialization and host-side views of the
 * plan's parameter arena. */
#ifndef KILN_PARAMS_H
#define KILN_PARAMS_H

#include <stdint.h>

#include "codegen/plan.h"

/* Fresh values for every parameter of the layers in [first, last]:
 * He-normal kernels (std sqrt(2/fan_in), fan_in = R*S*C, R*S for depthwise,
 * F for dense), zero biases and betas, unit gammas, BN statistics mean 0 and
 * variance 1. Deterministic from seed (the same numbers on every machine). */
void params_init(const Plan *p, float *arena, uint64_t seed, int first, int last);

#endif
