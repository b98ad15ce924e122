/* datasets/base.c — the base of datasets/ (base.h): the table's allocation,
 * the caps in force, the escaping of names for messages, the stratified
 * split, batch making and the deterministic PRNG. Calls nothing above it;
 * resize.c is the other half of the base.
 *
 * Invariants: the PRNG is splitmix64 with our own uniform/shuffle, so a seed
 * gives the same split and the same epoch order on every machine and libc.
 */
#include "datasets/base.h"

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

/* ---- allocation ------------------------------------------------------------------- */

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

/* ---- caps and escaping ------------------------------------------------------------ */

static DataLimits g_limits = {KILN_MAX_ENTRY_BYTES, KILN_MAX_TOTAL_BYTES, KILN_MAX_PIXELS};

void dataset_get_limits(DataLimits *lim) { *lim = g_limits; }

void dataset_set_limits(const DataLimits *lim)
{
    const DataLimits def = {KILN_MAX_ENTRY_BYTES, KILN_MAX_TOTAL_BYTES, KILN_MAX_PIXELS};
    g_limits = lim ? *lim : def;
}

/* Length of the valid UTF-8 sequence at s (2..4), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (s[0] >= 0xC2 && s[0] <= 0xDF)
        n = 2;
    else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        n = 3;
        if (s[0] == 0xE0)
            lo = 0xA0;
        if (s[0] == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        n = 4;
        if (s[0] == 0xF0)
            lo = 0x90;
        if (s[0] == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if (s[k] < 0x80 || s[k] > 0xBF)
            return 0;
    return n;
}

const char *dataset_escape(char *dst, size_t dstlen, const char *s, size_t len)
{
    if (!dstlen)
        return dst;
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        char piece[8];
        size_t pl = 1, adv = 1;
        if (u[i] == '\\') {
            memcpy(piece, "\\\\", 2);
            pl = 2;
        } else if (u[i] < 0x20 || u[i] == 0x7f) {
            snprintf(piece, sizeof piece, "\\x%02x", u[i]);
            pl = 4;
        } else if (u[i] < 0x80) {
            piece[0] = (char)u[i];
        } else if ((adv = utf8_seq(u + i, len - i)) > 0) {
            memcpy(piece, u + i, adv);
            pl = adv;
        } else {
            snprintf(piece, sizeof piece, "\\x%02x", u[i]);
            pl = 4;
            adv = 1;
        }
        if (o + pl + 4 > dstlen) { /* no room for this piece and "..." */
            if (dstlen >= 4) {
                o = o + 4 > dstlen ? dstlen - 4 : o;
                memcpy(dst + o, "...", 3);
                o += 3;
            }
            break;
        }
        memcpy(dst + o, piece, pl);
        o += pl;
        i += adv;
    }
    dst[o < dstlen ? o : dstlen - 1] = 0;
    return dst;
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
