/* datasets/synthetic.c — a generated, learnable image set for tests, demos
 * and benchmarks that need no files.
 *
 * SPEC: synthetic[:classes=K,n=N,size=S|HxW,channels=C,noise=X,seed=Z]
 * Defaults: 4 classes, 2000 images, the architecture's input size (32x32x3
 * without one), noise 0.25, seed 1. Every value is a finite number, and all
 * but noise (0..100) whole numbers, or the spec is refused.
 *
 * Image i of class k is a sinusoidal grating: orientation theta_k = pi*k/K,
 * 2 + (k mod 3) periods across the image, a uniformly random phase, a random
 * per-channel contrast in [0.6, 1], plus Gaussian pixel noise of standard
 * deviation noise*100 grey levels, clamped to [0, 255]. Classes differ only
 * in orientation and frequency, so telling them apart needs spatial filters
 * (no single pixel or channel mean separates them). Labels cycle 0..K-1, so
 * classes are balanced. Same SPEC, same bytes on every machine (own PRNG).
 *
 * A loader (loaders.h): calls only the base.
 */
#include "datasets/loaders.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Box-Muller normal from the project PRNG. */
static double rand_normal(uint64_t *st)
{
    double u1 = kiln_rand_uniform(st), u2 = kiln_rand_uniform(st);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

int dataset_synthetic(Dataset *ds, const char *args, const DataOptions *opt,
                      char *err, size_t errlen)
{
    int classes = 4, n = 2000, size = opt && opt->h > 0 ? opt->h : 32;
    int width = opt && opt->w > 0 ? opt->w : size, channels = opt && opt->c > 0 ? opt->c : 3;
    double noise = 0.25;
    unsigned long long seed = 1;
    char buf[256];
    if (strlen(args) >= sizeof buf) {
        snprintf(err, errlen, "synthetic:%s: argument list too long", args);
        return 2;
    }
    strcpy(buf, args);
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '='), *end;
        if (!eq) {
            snprintf(err, errlen, "synthetic:%s: expected key=value, got '%s'", args, kv);
            return 2;
        }
        *eq = 0;
        const char *v = eq + 1;
        static const char *const KEYS[] = {"classes", "n", "size", "channels", "seed", "noise"};
        int k = 0;
        while (k < 6 && strcmp(KEYS[k], kv)) k++;
        if (k == 6) {
            snprintf(err, errlen, "synthetic:%s: unknown key '%s' (classes, n, size, "
                     "channels, noise, seed)", args, kv);
            return 2;
        }
        double d = strtod(v, &end);
        if (k == 2 && end != v && *end == 'x') {   /* size=HxW, as the source's name writes it */
            char *wend;
            double w = strtod(end + 1, &wend);
            if (wend != end + 1 && !*wend && w == floor(w) && w >= 1 && w <= 1e9 && d == floor(d) && d >= 1 && d <= 1e9) {
                size = (int)d;
                width = (int)w;
                continue;
            }
        }
        if (end == v || *end || !isfinite(d)) {
            snprintf(err, errlen, "synthetic:%s: '%s' is not a finite number for %s", args, v, kv);
            return 2;
        }
        /* every key but noise is a whole number, checked before the cast */
        double most = k == 4 ? 0x1p53 : 1e9;
        if (k < 5 && (d != floor(d) || d < 0 || d > most)) {
            snprintf(err, errlen, "synthetic:%s: %s takes a whole number from 0 to %s, not '%s'", args, kv,
                     k == 4 ? "2^53" : "1e9", v);
            return 2;
        }
        switch (k) {
        case 0: classes = (int)d; break;
        case 1: n = (int)d; break;
        case 2: size = width = (int)d; break;
        case 3: channels = (int)d; break;
        case 4: seed = (unsigned long long)d; break;
        default: noise = d; break;
        }
    }
    if (classes < 2 || classes > 1000 || n < classes || n > 10000000 || size < 4 ||
        size > 1024 || width < 4 || width > 1024 || (channels != 1 && channels != 3) ||
        !(noise >= 0 && noise <= 100)) {
        snprintf(err, errlen, "synthetic:%s: out of range (classes 2..1000, n >= classes, "
                 "size 4..1024, channels 1 or 3, noise 0..100)", args);
        return 2;
    }
    if (dataset_alloc(ds, n, size, width, channels, classes)) {
        snprintf(err, errlen, "synthetic:%s: out of memory", args);
        return 1;
    }
    snprintf(ds->source, sizeof ds->source, "synthetic:classes=%d,n=%d,size=%dx%d,channels=%d,noise=%.17g,seed=%llu",
             classes, n, size, width, channels, noise, seed);
    for (int k = 0; k < classes; k++) {
        char name[32];
        snprintf(name, sizeof name, "grating%d", k);
        ds->class_names[k] = strdup(name);
    }
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        uint64_t st = seed * 0x9E3779B97F4A7C15ull + (uint64_t)i;
        int k = i % classes;
        double th = M_PI * k / classes, freq = 2 + k % 3;
        double ph = 2 * M_PI * kiln_rand_uniform(&st);
        double contrast[3];
        for (int c = 0; c < channels; c++) contrast[c] = 0.6 + 0.4 * kiln_rand_uniform(&st);
        uint8_t *px = ds->pixels + (size_t)i * size * width * channels;
        for (int y = 0; y < size; y++)
            for (int x = 0; x < width; x++) {
                double t = 2 * M_PI * freq * (x * cos(th) / width + y * sin(th) / size) + ph;
                for (int c = 0; c < channels; c++) {
                    double v = 128 + 100 * contrast[c] * sin(t) + noise * 100 * rand_normal(&st);
                    v = v < 0 ? 0 : v > 255 ? 255 : v;
                    px[((size_t)y * width + x) * channels + c] = (uint8_t)(v + 0.5);
                }
            }
        ds->labels[i] = k;
    }
    return 0;
}
