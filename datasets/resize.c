/* datasets/resize.c — part of the base (base.h): the post-processing every
 * loader's table goes through (one bilinear resize to the network's input
 * size, channel conversion, a reproducible per-class subset), whose pieces
 * the ImageFolder loader also uses while decoding. Calls only base.c.
 *
 * Contract:
 *  - image_resize is bilinear with half-pixel centres and edge clamp (what
 *    OpenCV's INTER_LINEAR and torchvision's resize without antialias do):
 *    source coordinate sx = (x + 0.5) * sw / dw - 0.5, clamped to the image.
 *    One rounding, at the end (round half up). No antialiasing: a large
 *    downscale aliases; kiln's sources are at most a few times the input size.
 *  - Channels: equal counts copy; 1 -> 3 (or 4) replicates gray; 3 (or 4) -> 1
 *    is Rec. 601 luma 0.299 R + 0.587 G + 0.114 B (what Pillow's "L" does);
 *    any other pair takes channel min(k, sc - 1).
 *  - dataset_take_per_class keeps table order: the kept images stay in the
 *    order they had, so labels and the fixed test tail keep their meaning.
 */
#include "datasets/base.h"

#include <stdlib.h>
#include <string.h>

/* ---- one image ----------------------------------------------------------------- */

/* Source position for output index i: integer base, neighbour and weight. */
static void src_coord(int i, int dn, int sn, int *i0, int *i1, float *f)
{
    double s = ((double)i + 0.5) * (double)sn / (double)dn - 0.5;
    if (s < 0.0)
        s = 0.0;
    int b = (int)s;
    if (b > sn - 1)
        b = sn - 1;
    *i0 = b;
    *i1 = b + 1 < sn ? b + 1 : sn - 1;
    *f = (float)(s - (double)b);
}

static uint8_t to_u8(float v)
{
    if (v <= 0.0f)
        return 0;
    if (v >= 255.0f)
        return 255;
    return (uint8_t)(v + 0.5f);
}

void image_resize(uint8_t *dst, int dh, int dw, int dc,      /* (dh, dw, dc) */
                  const uint8_t *src, int sh, int sw, int sc) /* (sh, sw, sc) */
{
    if (dh == sh && dw == sw && dc == sc) {
        memcpy(dst, src, (size_t)sh * sw * sc);
        return;
    }
    const int luma = dc == 1 && sc >= 3;
    for (int y = 0; y < dh; y++) {
        int y0, y1;
        float fy;
        src_coord(y, dh, sh, &y0, &y1, &fy);
        const uint8_t *r0 = src + (size_t)y0 * sw * sc;
        const uint8_t *r1 = src + (size_t)y1 * sw * sc;
        uint8_t *out = dst + (size_t)y * dw * dc;
        for (int x = 0; x < dw; x++) {
            int x0, x1;
            float fx;
            src_coord(x, dw, sw, &x0, &x1, &fx);
            float v[4];
            for (int k = 0; k < sc && k < 4; k++) {
                float a = r0[x0 * sc + k] + fx * (r0[x1 * sc + k] - r0[x0 * sc + k]);
                float b = r1[x0 * sc + k] + fx * (r1[x1 * sc + k] - r1[x0 * sc + k]);
                v[k] = a + fy * (b - a);
            }
            if (luma) {
                out[x] = to_u8(0.299f * v[0] + 0.587f * v[1] + 0.114f * v[2]);
            } else {
                for (int k = 0; k < dc; k++)
                    out[x * dc + k] = to_u8(v[k < sc ? k : sc - 1]);
            }
        }
    }
}

/* ---- the whole table ----------------------------------------------------------- */

int dataset_resize_all(Dataset *ds, int h, int w, int c)
{
    if (h <= 0)
        h = ds->h;
    if (w <= 0)
        w = ds->w;
    if (c <= 0)
        c = ds->c;
    if (h == ds->h && w == ds->w && c == ds->c)
        return 0;
    DataLimits lim;
    dataset_get_limits(&lim);
    if (c > 4 || ds->c < 1 || ds->c > 4 || (uint64_t)h * (uint64_t)w > lim.max_pixels)
        return 2;
    const size_t isz = (size_t)h * w * c, ssz = (size_t)ds->h * ds->w * ds->c;
    uint8_t *px = malloc(isz * (ds->n > 0 ? (size_t)ds->n : 1));
    if (!px)
        return 1;
#pragma omp parallel for schedule(dynamic, 16)
    for (int i = 0; i < ds->n; i++)
        image_resize(px + isz * i, h, w, c, ds->pixels + ssz * i, ds->h, ds->w, ds->c);
    free(ds->pixels);
    ds->pixels = px;
    ds->h = h;
    ds->w = w;
    ds->c = c;
    return 0;
}

/* ---- per-class subset ------------------------------------------------------------ */

int dataset_pick_per_class(const int32_t *labels, int n, int n_fixed_test,
                           int num_classes, int per_class, uint64_t seed,
                           uint8_t *keep)
{
    if (per_class <= 0 || num_classes <= 0) {
        memset(keep, 1, (size_t)n);
        return 0;
    }
    memset(keep, 0, (size_t)n);
    int *count = calloc((size_t)num_classes + 1, sizeof(int));
    int *idx = malloc(((size_t)n + 1) * sizeof(int));
    if (!count || !idx) {
        free(count);
        free(idx);
        return 1;
    }
    const int split = n - (n_fixed_test > 0 ? n_fixed_test : 0);
    for (int part = 0; part < 2; part++) {
        const int lo = part ? split : 0, hi = part ? n : split;
        /* Bucket the part's indices by class, in table order. */
        memset(count, 0, ((size_t)num_classes + 1) * sizeof(int));
        for (int i = lo; i < hi; i++)
            count[labels[i] + 1]++;
        for (int k = 0; k < num_classes; k++)
            count[k + 1] += count[k];
        for (int i = lo; i < hi; i++)
            idx[count[labels[i]]++] = i;
        /* count[k] is now the end of class k's bucket. */
        for (int k = 0; k < num_classes; k++) {
            const int b = k ? count[k - 1] : 0, m = count[k] - b;
            if (m > per_class) {
                uint64_t st = seed ^ (0x9E3779B97F4A7C15ull * (2ull * (uint64_t)k + (uint64_t)part + 1ull));
                kiln_rand_next(&st);
                kiln_shuffle(idx + b, m, &st);
            }
            for (int j = 0; j < m && j < per_class; j++)
                keep[idx[b + j]] = 1;
        }
    }
    free(count);
    free(idx);
    return 0;
}

int dataset_take_per_class(Dataset *ds, int per_class, uint64_t seed)
{
    if (per_class <= 0 || ds->n == 0)
        return 0;
    uint8_t *keep = malloc((size_t)ds->n);
    if (!keep)
        return 1;
    if (dataset_pick_per_class(ds->labels, ds->n, ds->n_fixed_test, ds->num_classes,
                               per_class, seed, keep)) {
        free(keep);
        return 1;
    }
    const size_t isz = (size_t)ds->h * ds->w * ds->c;
    const int split = ds->n - ds->n_fixed_test;
    int m = 0, test = 0;
    for (int i = 0; i < ds->n; i++) {
        if (!keep[i])
            continue;
        if (m != i) {
            memmove(ds->pixels + isz * m, ds->pixels + isz * i, isz);
            ds->labels[m] = ds->labels[i];
        }
        test += i >= split;
        m++;
    }
    free(keep);
    ds->n = m;
    ds->n_fixed_test = ds->n_fixed_test > 0 ? test : ds->n_fixed_test;
    /* Give the tail back; keeping the larger block is fine if that fails. */
    uint8_t *px = realloc(ds->pixels, isz * (m > 0 ? (size_t)m : 1));
    if (px)
        ds->pixels = px;
    return 0;
}
