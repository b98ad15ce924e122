/* datasets/dataset.c — the source-independent half of the data interface:
 * SPEC dispatch, allocation, the stratified split, batch making and the
 * deterministic PRNG.
 *
 * Invariants: the PRNG is splitmix64 with our own uniform/shuffle, so a seed
 * gives the same split and the same epoch order on every machine and libc.
 */
#include "datasets/dataset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- PRNG ----------------------------------------------------------------- */

uint64_t kiln_rand_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double kiln_rand_uniform(uint64_t *state)
{
    return (double)(kiln_rand_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

void kiln_shuffle(int *a, int n, uint64_t *state)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(kiln_rand_next(state) % (uint64_t)(i + 1));
        int t = a[i]; a[i] = a[j]; a[j] = t;
    }
}

/* ---- allocation and dispatch ------------------------------------------------- */

int dataset_alloc(Dataset *ds, int n, int h, int w, int c, int num_classes)
{
    ds->n = n; ds->h = h; ds->w = w; ds->c = c;
    ds->num_classes = num_classes;
    ds->pixels = malloc((size_t)n * h * w * c + 1);
    ds->labels = malloc(sizeof(int32_t) * (size_t)(n + 1));
    ds->class_names = calloc((size_t)num_classes + 1, sizeof(char *));
    if (!ds->pixels || !ds->labels || !ds->class_names) {
        dataset_free(ds);
        return 1;
    }
    return 0;
}

void dataset_free(Dataset *ds)
{
    if (ds->class_names)
        for (int i = 0; i < ds->num_classes; i++) free(ds->class_names[i]);
    free(ds->class_names);
    free(ds->pixels);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

/* Does spec start with prefix? Returns what follows it, or NULL. */
static const char *after(const char *spec, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(spec, prefix, n) == 0 ? spec + n : NULL;
}

int dataset_open(Dataset *ds, const char *spec, const DataOptions *opt,
                 char *err, size_t errlen)
{
    memset(ds, 0, sizeof *ds);
    const char *rest;
    int rc;
    if (strcmp(spec, "synthetic") == 0)
        rc = dataset_synthetic(ds, "", opt, err, errlen);
    else if ((rest = after(spec, "synthetic:")))
        rc = dataset_synthetic(ds, rest, opt, err, errlen);
    else if (strcmp(spec, "fashion-mnist") == 0)
        rc = dataset_fashion_mnist(ds, NULL, opt, err, errlen);
    else if ((rest = after(spec, "fashion-mnist:")))
        rc = dataset_fashion_mnist(ds, rest, opt, err, errlen);
    else if ((rest = after(spec, "zip:")))
        rc = dataset_zip(ds, rest, opt, err, errlen);
    else if ((rest = after(spec, "dir:")))
        rc = dataset_dir(ds, rest, opt, err, errlen);
    else {
        snprintf(err, errlen, "%s: unknown data source (expected synthetic[:...], "
                 "fashion-mnist[:DIR], zip:PATH or dir:PATH)", spec);
        return 2;
    }
    if (rc) return rc;
    if (opt && opt->per_class > 0 && (rc = dataset_take_per_class(ds, opt->per_class, opt->seed))) {
        snprintf(err, errlen, "%s: out of memory taking a per-class subset", spec);
        return rc;
    }
    if (!ds->src_h) {
        ds->src_h = ds->h;
        ds->src_w = ds->w;
    }
    if (opt && opt->h > 0 && (ds->h != opt->h || ds->w != opt->w || ds->c != opt->c) &&
        (rc = dataset_resize_all(ds, opt->h, opt->w, opt->c))) {
        snprintf(err, errlen, rc == 2 ? "%s: %dx%dx%d images exceed the size cap" : "%s: out of memory resizing to %dx%dx%d",
                 spec, opt->h, opt->w, opt->c);
        return rc;
    }
    return 0;
}

/* ---- split ----------------------------------------------------------------------- */

/* Append to dst the indices in pool[0..n) of each class, shuffled per class,
 * divided by the fractions ftrain/fval (rest to the third list). */
static void split_pool(const Dataset *ds, const int *pool, int n, double ftrain,
                       double fval, uint64_t seed, int *a, int *na, int *b,
                       int *nb, int *c, int *nc)
{
    int *idx = malloc(sizeof(int) * (size_t)(n + 1));
    for (int k = 0; k < ds->num_classes; k++) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (ds->labels[pool[i]] == k) idx[m++] = pool[i];
        uint64_t st = seed ^ (0xA5A5A5A5ull * (uint64_t)(k + 1));
        kiln_shuffle(idx, m, &st);
        int nb_k = (int)(fval * m + 0.5), nc_k;
        if (c) {
            nc_k = (int)((1.0 - ftrain - fval) * m + 0.5);
            if (m >= 3 && nc_k == 0) nc_k = 1;
        } else {
            nc_k = 0;
        }
        if (m >= 2 + (c != NULL) && nb_k == 0) nb_k = 1;
        int na_k = m - nb_k - nc_k;
        for (int i = 0; i < na_k; i++) a[(*na)++] = idx[i];
        for (int i = 0; i < nb_k; i++) b[(*nb)++] = idx[na_k + i];
        for (int i = 0; i < nc_k; i++) c[(*nc)++] = idx[na_k + nb_k + i];
    }
    free(idx);
}

int dataset_split(const Dataset *ds, uint64_t seed, Split *sp)
{
    memset(sp, 0, sizeof *sp);
    size_t sz = sizeof(int) * (size_t)(ds->n + 1);
    sp->train = malloc(sz); sp->val = malloc(sz); sp->test = malloc(sz);
    int *pool = malloc(sz);
    if (!sp->train || !sp->val || !sp->test || !pool) {
        free(pool); split_free(sp);
        return 1;
    }
    int n_pool = ds->n - ds->n_fixed_test;
    for (int i = 0; i < n_pool; i++) pool[i] = i;
    if (ds->n_fixed_test > 0) {
        split_pool(ds, pool, n_pool, 8.0 / 9.0, 1.0 / 9.0, seed, sp->train, &sp->n_train,
                   sp->val, &sp->n_val, NULL, NULL);
        for (int i = n_pool; i < ds->n; i++) sp->test[sp->n_test++] = i;
    } else {
        split_pool(ds, pool, n_pool, 0.8, 0.1, seed, sp->train, &sp->n_train, sp->val,
                   &sp->n_val, sp->test, &sp->n_test);
    }
    free(pool);
    return 0;
}

void split_free(Split *sp)
{
    free(sp->train); free(sp->val); free(sp->test);
    memset(sp, 0, sizeof *sp);
}

/* ---- batches ------------------------------------------------------------------------ */

void dataset_batch(float *x, int32_t *y, const Dataset *ds, const int *idx,
                   int n, const Preproc *pp)
{
    size_t hw = (size_t)ds->h * ds->w;
    int c = ds->c;
    float mul[4], add[4];
    for (int k = 0; k < c && k < 4; k++) {
        mul[k] = pp->scale / pp->std[k];
        add[k] = -pp->mean[k] / pp->std[k];
    }
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const uint8_t *src = ds->pixels + (size_t)idx[i] * hw * c;
        float *dst = x + (size_t)i * hw * c;
        for (size_t p = 0; p < hw; p++)
            for (int k = 0; k < c; k++)
                dst[p * c + k] = src[p * c + k] * mul[k] + add[k];
        y[i] = ds->labels[idx[i]];
    }
}
