/* tests/reference_input.h — the two reference images of the fixture makers
 * that compare kiln with Keras and timm (tests/fixtures/make-keras-fixtures,
 * make-timm-fixtures): integer pixels from a fixed formula of (image, row,
 * column, channel), normalized with the arch's preprocessing the way
 * dataset_batch does. The makers compute the same pixels in numpy. */
#ifndef KILN_TESTS_REFERENCE_INPUT_H
#define KILN_TESTS_REFERENCE_INPUT_H

#include <math.h>
#include <stdlib.h>

#include "codegen/graph.h"

/* n images at g's input size, NHWC, preprocessed; malloc'd (NULL when out
 * of memory). */
static inline float *reference_input(const Graph *g, int n)
{
    const InputAttr *in = &g->layers[0].a.input;
    int H = in->h, W = in->w, C = in->c;
    float mul[4], add[4];
    for (int c = 0; c < C; c++) {
        mul[c] = in->scale / in->std[c];
        add[c] = -in->mean[c] / in->std[c];
    }
    float *x = malloc(sizeof(float) * (size_t)n * H * W * C);
    if (!x) return NULL;
    for (int b = 0; b < n; b++)
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++)
                for (int c = 0; c < C; c++) {
                    double N = b, Y = y, X = xx, Cc = c;
                    double v = 127.5 * (1.0 + 0.6 * sin(0.05 * (N + 1.0) * X + 0.09 * Y + 2.1 * Cc + 1.3 * N)
                                        + 0.4 * sin(0.0123 * X * Y + 0.7 * Cc - 0.5 * N));
                    v = floor(v + 0.5);
                    v = v < 0 ? 0 : v > 255 ? 255 : v;
                    x[(((size_t)b * H + y) * W + xx) * C + c] = (float)v * mul[c] + add[c];
                }
    return x;
}

#endif
