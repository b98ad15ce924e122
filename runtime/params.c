/* runtime/params.c — parameter initialization (see params.h). */
#include "runtime/params.h"

#include <math.h>

#include "datasets/dataset.h"

void params_init(const Plan *p, float *arena, uint64_t seed, int first, int last)
{
    const Graph *g = p->g;
    for (int i = 0; i < g->n_params; i++) {
        const Param *pa = &g->params[i];
        if (pa->layer < first || pa->layer > last) continue;
        float *w = arena + p->param_off[i];
        uint64_t st = seed * 0x9E3779B97F4A7C15ull + (uint64_t)i * 0xD1B54A32D192ED03ull;
        switch (pa->role) {
        case ROLE_KERNEL: case ROLE_DWKERNEL: {
            size_t fan_in = pa->ndim == 4 ? (size_t)pa->dims[0] * pa->dims[1] * pa->dims[2]
                          : pa->ndim == 3 ? (size_t)pa->dims[0] * pa->dims[1]
                          : (size_t)pa->dims[0];
            double sd = sqrt(2.0 / (double)fan_in);
            for (size_t k = 0; k < pa->numel; k++) {
                double u1 = kiln_rand_uniform(&st), u2 = kiln_rand_uniform(&st);
                if (u1 < 1e-300) u1 = 1e-300;
                w[k] = (float)(sd * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
            }
            break;
        }
        case ROLE_GAMMA: case ROLE_VAR:
            for (size_t k = 0; k < pa->numel; k++) w[k] = 1.0f;
            break;
        case ROLE_BIAS: case ROLE_BETA: case ROLE_MEAN:
            for (size_t k = 0; k < pa->numel; k++) w[k] = 0.0f;
            break;
        }
    }
}
