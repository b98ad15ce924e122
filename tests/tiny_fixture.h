/* tests/tiny_fixture.h — set-up shared by the suites that run plans of
 * archs/tiny.arch on real backends (test_train, test_cuda_emu, test_gpu) and
 * the ones that load other archs (test_gpu, test_nvrtc): loading an arch,
 * tiny with a synthetic data set, and parameters away from their
 * trivial values so that BN folding and the inference modes are exercised.
 * Header-only (static inline), for tests. */
#ifndef KILN_TESTS_TINY_FIXTURE_H
#define KILN_TESTS_TINY_FIXTURE_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#include "codegen/plan.h"
#include "datasets/dataset.h"
#include "runtime/params.h"

/* archs/NAME.arch (under $KILN_SOURCE_DIR) into g, at size x size when size
 * is nonzero. */
static inline void arch_load(Graph *g, const char *name, int size)
{
    const char *src = getenv("KILN_SOURCE_DIR");
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/archs/%s.arch", src ? src : ".", name);
    ck_assert_msg(graph_load(g, path, err, sizeof err) == 0, "%s", err);
    if (size) ck_assert_msg(graph_set_input_size(g, size, size, err, sizeof err) == 0, "%s", err);
}

/* archs/tiny.arch into g, the synthetic data set `spec` at its input size
 * into ds, its preprocessing into pp. */
static inline void tiny_load(Graph *g, Dataset *ds, Preproc *pp, const char *spec)
{
    char err[512];
    arch_load(g, "tiny", 0);
    const InputAttr *in = &g->layers[0].a.input;
    DataOptions o = {in->h, in->w, in->c, 0, 1};
    ck_assert_msg(dataset_open(ds, spec, &o, err, sizeof err) == 0, "%s", err);
    *pp = (Preproc){in->scale, {in->mean[0], in->mean[1], in->mean[2]}, {in->std[0], in->std[1], in->std[2]}};
}

/* He-initialized weights (seed 3), then BN gamma, beta and statistics set
 * to deterministic values away from 1 and 0. */
static inline void params_nontrivial(const Graph *g, const Plan *p, float *params)
{
    params_init(p, params, 3, 0, g->n_layers - 1);
    for (int i = 0; i < g->n_params; i++) {
        const Param *pa = &g->params[i];
        float *v = params + p->param_off[i];
        for (size_t k = 0; k < pa->numel; k++) {
            float u = (float)((k * 7919 + (size_t)i * 104729) % 1000) / 1000.0f;
            if (pa->role == ROLE_GAMMA) v[k] = 0.5f + u;
            if (pa->role == ROLE_BETA) v[k] = u - 0.5f;
            if (pa->role == ROLE_MEAN) v[k] = 0.2f * (u - 0.5f);
            if (pa->role == ROLE_VAR) v[k] = 0.5f + u;
        }
    }
}

#endif
