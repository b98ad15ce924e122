/* datasets/base.h — the base of datasets/: the in-memory image table and
 * what every loader and the dispatch use (allocation, caps, name escaping,
 * resizing, the per-class pick, the split, batches, the PRNG). Every source
 * (synthetic, Fashion-MNIST IDX, ImageFolder zip or directory) turns into
 * this one table of uint8 HWC images with int labels and class names.
 *
 * Layering: base (base.c, resize.c) <- loaders (loaders.h: synthetic.c,
 * idx.c, imagefolder*.c over listing.c) <- dispatch (dataset.h: dataset.c).
 * Nothing here calls a loader or the dispatch.
 *
 * Invariants:
 *  - pixels holds n images of h*w*c bytes each, all the same size (loaders
 *    resize once, to the size asked for in DataOptions, when one is given).
 *  - labels are in [0, num_classes); class_names are sorted the way
 *    torchvision's ImageFolder sorts them (byte order) for folder sources.
 *  - n_fixed_test > 0 means the source has its own test split: the LAST
 *    n_fixed_test images are the test set and the split keeps them as test.
 *  - Errors: functions return 0 on success, 2 on bad input (a message naming
 *    the file and the problem in err), 1 on other failures.
 */
#ifndef KILN_DATASETS_BASE_H
#define KILN_DATASETS_BASE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char source[512];      /* what was read, for reports */
    int n;                 /* images */
    int h, w, c;           /* stored size of every image */
    int src_h, src_w;      /* size in the source, before any resize (the
                              first image's, for sources of mixed sizes) */
    int num_classes;
    char **class_names;    /* num_classes strings */
    uint8_t *pixels;       /* (n, h, w, c) */
    int32_t *labels;       /* (n) */
    int n_fixed_test;      /* see above */
    long skipped_nonimage; /* entries that were not images (__MACOSX, text) */
    long skipped_corrupt;  /* images that failed to decode (skip-and-count) */
    double decode_seconds; /* wall time spent reading and decoding */
} Dataset;

/* The seed of the split, the --per-class pick, the shuffles and the weight
 * init when none is given: kiln data, train, eval and compare all default to
 * it, so the split `kiln data` prints is the one training uses. */
#define KILN_DEFAULT_SEED 1

typedef struct {
    int h, w, c;           /* resize to this once (0: keep the source size) */
    int per_class;         /* >0: keep at most this many images per class,
                              chosen reproducibly from seed */
    uint64_t seed;
} DataOptions;

void dataset_free(Dataset *ds);

/* Post-processing that dataset_open applies after any loader:
 * keep at most per_class images of each class (reproducible from seed; a
 * fixed test split is subset the same way, separately), then resize every
 * image to (h, w) and convert channels (gray -> RGB by replication) when the
 * table's size differs from opt's. */
int dataset_take_per_class(Dataset *ds, int per_class, uint64_t seed);
int dataset_resize_all(Dataset *ds, int h, int w, int c);

/* Resize one uint8 HWC image (bilinear, half-pixel centres, edge clamp) and
 * convert channels 1->3 (replicate) or 3->1 (luma). */
void image_resize(uint8_t *dst, int dh, int dw, int dc,
                  const uint8_t *src, int sh, int sw, int sc);

/* Pick at most per_class images of each class, reproducibly from seed:
 * keep[i] = 1 for the images kept. The first n - n_fixed_test images and the
 * last n_fixed_test are picked separately. Per class (and part), the indices
 * of that class in table order are shuffled with a state derived from
 * (seed, class, part) and the first per_class kept. Returns 0, or 1 when out
 * of memory. dataset_take_per_class and the ImageFolder loaders (which pick
 * before decoding) share it, so both choose the same images. */
int dataset_pick_per_class(const int32_t *labels, int n, int n_fixed_test,
                           int num_classes, int per_class, uint64_t seed,
                           uint8_t *keep);

/* ---- caps against hostile input (datasets/README.md) ------------------------ */

typedef struct {
    uint64_t max_entry_bytes;  /* one file or zip entry, declared and actual */
    uint64_t max_total_bytes;  /* all image entries read from one archive or
                                  tree; one IDX payload */
    uint64_t max_pixels;       /* width*height claimed by one image header */
} DataLimits;

#define KILN_MAX_ENTRY_BYTES (64ull << 20)  /* 64 MiB */
#define KILN_MAX_TOTAL_BYTES (16ull << 30)  /* 16 GiB */
#define KILN_MAX_PIXELS      (64ull << 20)  /* 64 Mpixel */

/* The caps in force (the defaults above unless set). */
void dataset_get_limits(DataLimits *lim);
/* Replace the caps (NULL: back to the defaults). For tests; not thread-safe
 * against a load in progress. */
void dataset_set_limits(const DataLimits *lim);

/* Copy len bytes of s into dst (at most dstlen bytes, always NUL-terminated)
 * for printing: control bytes, DEL and bytes that are not part of valid
 * UTF-8 are written as \xNN, a backslash as \\. A result cut short by dstlen
 * ends in "...". Returns dst. Class and entry names go through this wherever
 * they are printed. */
const char *dataset_escape(char *dst, size_t dstlen, const char *s, size_t len);

/* Allocate the table for n images of h*w*c and num_classes classes (names
 * NULL). Returns 0, or 1 when out of memory. */
int dataset_alloc(Dataset *ds, int n, int h, int w, int c, int num_classes);

/* ---- splits ------------------------------------------------------------------ */

typedef struct {
    int *train, *val, *test;   /* image indices */
    int n_train, n_val, n_test;
} Split;

/* Stratified 80/10/10 split from seed (per class: shuffle with the seed, then
 * the first 80% train, next 10% val, rest test, rounding so that every class
 * with >= 3 images has at least one of each). With n_fixed_test > 0 the test
 * set is the fixed one and validation is 1/9 of the rest, stratified. The same
 * seed gives the same split on every machine (own PRNG, no libc rand). */
int dataset_split(const Dataset *ds, uint64_t seed, Split *sp);
void split_free(Split *sp);

/* ---- batches ------------------------------------------------------------------ */

/* Per-channel normalization from the architecture's input line:
 * x = (pixel * scale - mean[c]) / std[c]. */
typedef struct {
    float scale;
    float mean[4], std[4];
} Preproc;

/* Make a float NHWC batch of n images from idx: x (n, h, w, c), y (n). */
void dataset_batch(float *x, int32_t *y, const Dataset *ds, const int *idx,
                   int n, const Preproc *pp);

/* ---- deterministic randomness (same numbers on every machine) --------------- */

/* splitmix64 step. */
uint64_t kiln_rand_next(uint64_t *state);
/* Uniform in [0, 1). */
double kiln_rand_uniform(uint64_t *state);
/* Fisher-Yates shuffle of a[0..n) with state. */
void kiln_shuffle(int *a, int n, uint64_t *state);

#endif
