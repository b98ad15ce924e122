/* runtime/evaluate.c — the confusion matrix of a backend on a set of images
 * (see evaluate.h). Batches are made on the host exactly as the training
 * loop makes them: from the uint8 table through the preprocessing, or
 * gathered from a feature cache when the view has one. */
#include "runtime/evaluate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Index of the first maximal value of l[0..K). */
static int argmax_first(const float *l, int K)
{
    int arg = 0;
    for (int k = 1; k < K; k++)
        if (l[k] > l[arg]) arg = k;
    return arg;
}

/* Batch by batch: upload, evaluate, argmax of each logits row into cm. */
int confusion_matrix(Backend *be, const DataView *dv, const int *idx, int n, int K, long *cm)
{
    int B = be->plan->opt.batch;
    const Dataset *ds = dv->ds;
    size_t row = dv->cache ? dv->cache->floats : (size_t)ds->h * ds->w * ds->c;
    memset(cm, 0, sizeof(long) * (size_t)K * (size_t)K);
    for (int i = 0; i < n; i++)
        if (ds->labels[idx[i]] < 0 || ds->labels[idx[i]] >= K) return 2;
    float *x = malloc(sizeof(float) * row * (size_t)B + 1);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)B + 1);
    if (!x || !y) { free(x); free(y); return 1; }
    for (int i = 0; i < n; i += B) {
        int m = n - i < B ? n - i : B, correct = 0;
        double loss;
        if (dv->cache) {
            for (int k = 0; k < m; k++) {
                memcpy(x + (size_t)k * row, dv->cache->data + (size_t)idx[i + k] * row, sizeof(float) * row);
                y[k] = ds->labels[idx[i + k]];
            }
        } else {
            dataset_batch(x, y, ds, idx + i, m, &dv->pp);
        }
        be->upload(be, x, y, m);
        be->evaluate(be, m, &loss, &correct);
        const float *logits = be->logits(be);            /* (m, K) */
        for (int k = 0; k < m; k++)
            cm[(size_t)y[k] * K + argmax_first(logits + (size_t)k * K, K)]++;
    }
    free(x);
    free(y);
    return 0;
}

/* Trace over total. */
double confusion_accuracy(const long *cm, int K)
{
    long diag = 0, total = 0;
    for (int t = 0; t < K; t++)
        for (int p = 0; p < K; p++) {
            total += cm[(size_t)t * K + p];
            if (t == p) diag += cm[(size_t)t * K + p];
        }
    return total ? (double)diag / (double)total : 0;
}

void warn_coarse_split(FILE *f, const char *split, int n)
{
    if (n >= KILN_COARSE_SPLIT || n < 1) return;
    fprintf(f, "WARNING: the %s split has %d image%s (fewer than %d): its accuracy moves in steps of %.3g, a coarse "
            "estimate; more images (a larger --per-class, or more data) give a finer one\n", split, n,
            n == 1 ? "" : "s", KILN_COARSE_SPLIT, 1.0 / n);
}
