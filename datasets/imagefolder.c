/* datasets/imagefolder.c — the ImageFolder loaders (loaders.h): a zip read
 * in place with libzip (nothing is extracted to disk) or a plain directory
 * tree, each listed (listing.c), classified (imagefolder_classify.c), picked
 * per class, read and decoded (imagefolder_decode.c), and assembled here
 * into the table at its final size.
 *
 * Skipped and counted (skipped_nonimage): what classification says is not
 * an image. Skipped and counted (skipped_corrupt): JPEGs that fail to decode
 * or decode with warnings (truncated, corrupt data); the count and the first
 * reason go to stderr. A class left with no decodable image is bad input.
 *
 * Bad input (2, message naming the archive and the entry): not a zip or a
 * damaged central directory; an entry name with a `..` component, an absolute
 * path, a backslash or a NUL byte; an image entry whose declared or actual
 * size is over the per-entry cap, or image entries whose declared sizes sum
 * over the whole-archive cap (actual sizes are held to the declared ones:
 * reading stops one byte past it); encrypted image entries; compression
 * libzip cannot inflate; a class-level folder with no images; a JPEG header
 * claiming more pixels than the cap (checked before any pixel is decoded).
 * Caps are in base.h (64 MiB an entry, 16 GiB an archive, 64 Mpixel an
 * image) and can be lowered by tests through dataset_set_limits.
 *
 * Layering: a loader, the top of the ImageFolder parts (imagefolder.h); it
 * calls them and the base, nothing above.
 */
#include "datasets/imagefolder.h"
#include "datasets/loaders.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <zip.h>

/* ---- assembling the table ----------------------------------------------------------- */

typedef struct {
    int h, w, count;
} SizeCount;

static int cmp_size(const void *a, const void *b)
{
    const SizeCount *x = a, *y = b;
    return x->h != y->h ? (x->h > y->h) - (x->h < y->h) : (x->w > y->w) - (x->w < y->w);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The stored size: the most common one among the decoded images (table
 * slots count as the table's size), the most channels. */
static int final_size(const Item *it, int n, const Table *t, int *fh, int *fw, int *fc)
{
    SizeCount *sizes = calloc((size_t)(unsigned)n + 1, sizeof *sizes);
    if (!sizes)
        return 1;
    int m = 0;
    *fc = t->tc;
    for (int i = 0; i < n; i++) {
        if (it[i].status != ST_OK)
            continue;
        sizes[m].h = it[i].in_table ? t->th : it[i].h;
        sizes[m++].w = it[i].in_table ? t->tw : it[i].w;
        if (!it[i].in_table && it[i].c > *fc)
            *fc = it[i].c;
    }
    qsort(sizes, (size_t)m, sizeof *sizes, cmp_size);
    int best = 0;
    for (int i = 0; i < m;) {
        int j = i;
        while (j < m && !cmp_size(&sizes[j], &sizes[i]))
            j++;
        /* Ties go to the table's size, then to the larger. */
        const int is_t = sizes[i].h == t->th && sizes[i].w == t->tw;
        if (j - i > best || (j - i == best && is_t)) {
            best = j - i;
            *fh = sizes[i].h;
            *fw = sizes[i].w;
        }
        i = j;
    }
    free(sizes);
    return 0;
}

/* Put the decoded images, in item order, into ds as n_ok images of
 * (fh, fw, fc): in place when the table already has that size, else into a
 * new buffer. */
static int assemble(Dataset *ds, const Item *it, int n, int n_ok, const Table *t, int fh, int fw,
                    int fc)
{
    const size_t tsz = (size_t)t->th * t->tw * t->tc, fsz = (size_t)fh * fw * fc;
    int *slot = malloc(((size_t)(unsigned)n + 1) * sizeof *slot);
    if (!slot)
        return 1;
    for (int i = 0, m = 0; i < n; i++)
        slot[i] = it[i].status == ST_OK ? m++ : -1;
    if (fsz == tsz && fh == t->th && fw == t->tw && fc == t->tc) {
        /* Compact over the skipped slots (in order: m <= i), then place the
         * ones kept aside. */
        for (int i = 0; i < n; i++)
            if (slot[i] >= 0 && slot[i] != i && it[i].in_table)
                memmove(t->px + tsz * slot[i], t->px + tsz * i, tsz);
#pragma omp parallel for schedule(dynamic, 64)
        for (int i = 0; i < n; i++)
            if (slot[i] >= 0 && !it[i].in_table)
                image_resize(t->px + tsz * slot[i], fh, fw, fc, it[i].px, it[i].h, it[i].w, it[i].c);
        uint8_t *px = realloc(ds->pixels, fsz * (size_t)(n_ok > 0 ? n_ok : 1));
        if (px)
            ds->pixels = px;
    } else {
        uint8_t *px = malloc(fsz * (size_t)(n_ok > 0 ? n_ok : 1));
        if (!px) {
            free(slot);
            return 1;
        }
#pragma omp parallel for schedule(dynamic, 64)
        for (int i = 0; i < n; i++) {
            if (slot[i] < 0)
                continue;
            if (it[i].in_table)
                image_resize(px + fsz * slot[i], fh, fw, fc, t->px + tsz * i, t->th, t->tw, t->tc);
            else
                image_resize(px + fsz * slot[i], fh, fw, fc, it[i].px, it[i].h, it[i].w, it[i].c);
        }
        free(ds->pixels);
        ds->pixels = px;
    }
    for (int i = 0; i < n; i++)
        if (slot[i] >= 0)
            ds->labels[slot[i]] = it[i].label;
    free(slot);
    ds->n = n_ok;
    ds->h = fh;
    ds->w = fw;
    ds->c = fc;
    return 0;
}

/* --per-class picks before anything is read (the same choice as
 * dataset_take_per_class on the full table): items not kept are dropped
 * from it[0..*n), which keeps its order. 0, or 1 (err set) when out of
 * memory. */
static int pick_per_class(const Source *s, Item *it, int *n, int ncls, const DataOptions *opt, char *err,
                          size_t errlen)
{
    int32_t *lab = malloc((size_t)*n * sizeof *lab);
    uint8_t *keep = malloc((size_t)*n);
    int rc = !lab || !keep;
    for (int i = 0; i < *n && !rc; i++)
        lab[i] = it[i].label;
    if (!rc)
        rc = dataset_pick_per_class(lab, *n, 0, ncls, opt->per_class, opt->seed, keep);
    int m = 0;
    for (int i = 0; i < *n && !rc; i++) {
        if (keep[i])
            it[m++] = it[i];
        else
            free(it[i].cls);
    }
    if (!rc)
        *n = m;
    free(lab);
    free(keep);
    if (rc)
        snprintf(err, errlen, "%s: out of memory", s->path);
    return rc;
}

/* What decoding is asked for: a size the options fix (want, cfg's fix_hw and
 * fix_c) within the caps. 2 (err set) when the size asked for is over the
 * pixel cap or has more than 4 channels. */
static int decode_options(const Source *s, const DataOptions *opt, int want[3], DecodeCfg *cfg, char *err,
                          size_t errlen)
{
    if (opt && ((opt->c < 0 || opt->c > 4) ||
                (opt->h > 0 && opt->w > 0 && (uint64_t)opt->h * (uint64_t)opt->w > s->lim.max_pixels))) {
        snprintf(err, errlen, "%s: size %dx%dx%d asked for: over the pixel cap of %llu or more "
                 "than 4 channels", s->path, opt->h, opt->w, opt->c,
                 (unsigned long long)s->lim.max_pixels);
        return 2;
    }
    memset(cfg, 0, sizeof *cfg);
    cfg->max_pixels = s->lim.max_pixels;
    want[0] = want[1] = want[2] = 0;
    if (opt && opt->h > 0 && opt->w > 0) {
        want[0] = opt->h;
        want[1] = opt->w;
        cfg->fix_hw = 1;
    }
    if (opt && opt->c > 0) {
        want[2] = opt->c;
        cfg->fix_c = 1;
    }
    return 0;
}

/* The first fatal problem after decoding, in table order: an image over the
 * pixel cap or an unreadable entry (2), out of memory (1). 0 when none. */
static int first_fatal(const Source *s, const Item *it, int n, char *err, size_t errlen)
{
    char esc[256];
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (it[i].status == ST_OVERCAP) {
            snprintf(err, errlen, "%s: %s '%s': %s", s->path, s->z ? "entry" : "file",
                     ESC(esc, it[i].e->name), it[i].why ? it[i].why : "too many pixels");
            rc = 2;
        } else if (it[i].status == ST_READERR || it[i].status == ST_NOMEM) {
            snprintf(err, errlen, "%s", it[i].why ? it[i].why : "out of memory");
            rc = it[i].status == ST_NOMEM ? 1 : 2;
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* Skip-and-count the corrupt ones: *corrupt of them (the first at
 * *first_bad, -1 when none), *ok decoded. A class must keep at least one
 * image: 2 (err naming the class and its first image's reason) when one has
 * none; 1 when out of memory. */
static int count_corrupt(const Source *s, const Item *it, int n, char **classes, int ncls, long *corrupt,
                         int *first_bad, int *ok, char *err, size_t errlen)
{
    char esc[256], esc2[256];
    int rc = 0;
    *corrupt = 0;
    *first_bad = -1;
    *ok = 0;
    int *per_class = calloc((size_t)ncls, sizeof *per_class);
    if (!per_class) {
        snprintf(err, errlen, "%s: out of memory", s->path);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        if (it[i].status != ST_OK) {
            (*corrupt)++;
            *first_bad = *first_bad < 0 ? i : *first_bad;
        } else {
            per_class[it[i].label]++;
            (*ok)++;
        }
    }
    for (int k = 0; k < ncls && !rc; k++) {
        if (per_class[k])
            continue;
        int first = 0;
        while (it[first].label != k)
            first++;
        snprintf(err, errlen, "%s: class '%s': none of its images could be decoded (first: %s "
                 "'%s': %s)", s->path, ESC(esc, classes[k]), s->z ? "entry" : "file",
                 ESC(esc2, it[first].e->name), it[first].why ? it[first].why : "?");
        rc = 2;
    }
    free(per_class);
    return rc;
}

/* The table at its final size: the one the options fix, else final_size's;
 * the ok decoded images assembled into ds in item order. 0, or 1 (err set). */
static int build_table(Dataset *ds, const Source *s, const Item *it, int n, int ok, const Table *table,
                       const DecodeCfg *cfg, char *err, size_t errlen)
{
    if (!table->px) { /* cannot happen: a decoded image had a readable header */
        snprintf(err, errlen, "%s: no image table was made", s->path);
        return 1;
    }
    int fh = table->th, fw = table->tw, fc = table->tc;
    if ((!cfg->fix_hw || !cfg->fix_c) && final_size(it, n, table, &fh, &fw, &fc)) {
        snprintf(err, errlen, "%s: out of memory", s->path);
        return 1;
    }
    fh = cfg->fix_hw ? table->th : fh;
    fw = cfg->fix_hw ? table->tw : fw;
    fc = cfg->fix_c ? table->tc : fc;
    if (assemble(ds, it, n, ok, table, fh, fw, fc)) {
        snprintf(err, errlen, "%s: out of memory for %d images of %dx%dx%d", s->path, ok, fh, fw, fc);
        return 1;
    }
    return 0;
}

/* The whole ImageFolder load once the listing ev of source s exists:
 * classify, pick, check, read and decode, then the table; kind ("zip",
 * "dir") and s->path name the source in ds->source, t0 is when the load
 * began. Returns 0, 2 on bad input, 1 on other failures (err set). */
static int load_listing(Dataset *ds, const Source *s, const char *kind, const EntryVec *ev,
                        const DataOptions *opt, double t0, char *err, size_t errlen)
{
    Item *it = NULL;
    char **classes = NULL;
    int n = 0, ncls = 0, want[3], ok, first_bad;
    long nonimage = 0, corrupt;
    DecodeCfg cfg;
    Table table = {NULL, 0, 0, 0};
    int rc = imagefolder_classify(ev, s->path, &it, &n, &classes, &ncls, &nonimage, err, errlen);
    if (rc)
        return rc;
    if (opt && opt->per_class > 0 && (rc = pick_per_class(s, it, &n, ncls, opt, err, errlen)))
        goto out;
    if ((rc = decode_options(s, opt, want, &cfg, err, errlen)) || (rc = imagefolder_check_items(s, it, n, err, errlen)))
        goto out;
    if (imagefolder_read_and_decode(s, it, n, ncls, want, ds, &table, &cfg)) {
        snprintf(err, errlen, "%s: out of memory", s->path);
        rc = 1;
        goto out;
    }
    if ((rc = first_fatal(s, it, n, err, errlen)) ||
        (rc = count_corrupt(s, it, n, classes, ncls, &corrupt, &first_bad, &ok, err, errlen)) ||
        (rc = build_table(ds, s, it, n, ok, &table, &cfg, err, errlen)))
        goto out;
    for (int k = 0; k < ncls; k++) {
        ds->class_names[k] = classes[k];
        classes[k] = NULL;
    }
    snprintf(ds->source, sizeof ds->source, "%s:%s", kind, s->path);
    ds->num_classes = ncls;
    ds->n_fixed_test = 0;
    ds->skipped_nonimage = nonimage;
    ds->skipped_corrupt = corrupt;
    ds->decode_seconds = now_s() - t0;
    for (int i = 0; i < n && !ds->src_h; i++)
        if (it[i].status == ST_OK) {
            ds->src_h = it[i].src_h;
            ds->src_w = it[i].src_w;
        }
    if (corrupt) {
        char esc[256];
        fprintf(stderr, "kiln: %s: skipped %ld corrupt JPEG%s (first: '%s': %s)\n", s->path, corrupt,
                corrupt == 1 ? "" : "s", ESC(esc, it[first_bad].e->name),
                it[first_bad].why ? it[first_bad].why : "?");
    }
out:
    for (int i = 0; i < n; i++) {
        free(it[i].cls);
        free(it[i].data);
        free(it[i].px);
        free(it[i].why);
    }
    free(it);
    for (int k = 0; k < ncls; k++)
        free(classes[k]);
    free(classes);
    return rc;
}

/* ---- the two loaders ------------------------------------------------------------------- */

/* Why libzip could not open the archive at path (libzip's error code zerr). */
static int zip_open_failed(const char *path, int zerr, char *err, size_t errlen)
{
    zip_error_t ze;
    zip_error_init_with_code(&ze, zerr);
    const int sys = zerr == ZIP_ER_NOENT || zerr == ZIP_ER_OPEN || zerr == ZIP_ER_READ;
    const char *why = zerr == ZIP_ER_NOZIP ? "not a zip archive (no end of central directory)"
                    : zerr == ZIP_ER_INCONS ? "inconsistent zip archive (damaged or truncated "
                                              "central directory, or an invalid entry name)"
                    : zip_error_strerror(&ze);
    snprintf(err, errlen, "%s: %s%s", path, sys ? "cannot open: " : "", why);
    zip_error_fini(&ze);
    return 2;
}

/* Load the archive s->z (opened at t0; discarded here) whose bytes are the
 * len bytes at raw, or (raw NULL) the file s->path. */
static int zip_load(Dataset *ds, Source *s, const void *raw, size_t len, const DataOptions *opt,
                    double t0, char *err, size_t errlen)
{
    const char *path = s->path;
    EntryVec ev = {0};
    int rc = raw ? listing_zip_raw_names_mem(raw, len, path, err, errlen)
                 : listing_zip_raw_names(path, err, errlen);
    if (!rc)
        rc = listing_zip(s->z, path, &ev, err, errlen);
    if (!rc)
        rc = load_listing(ds, s, "zip", &ev, opt, t0, err, errlen);
    listing_free(&ev);
    zip_discard(s->z);
    if (rc) {
        dataset_free(ds);
        memset(ds, 0, sizeof *ds);
    }
    return rc;
}

int dataset_zip(Dataset *ds, const char *path, const DataOptions *opt, char *err, size_t errlen)
{
    const double t0 = now_s();
    memset(ds, 0, sizeof *ds);
    Source s = {path, NULL, {0, 0, 0}};
    dataset_get_limits(&s.lim);
    int zerr = 0;
    /* No ZIP_CHECKCONS: it re-reads every local header (a second pass over a
     * 27,000-entry archive) to compare it with the central directory, and
     * kiln trusts only the central directory: names, sizes and methods come
     * from it, nothing is extracted, and whatever bytes an entry yields go
     * through the size caps and the JPEG decoder. */
    s.z = zip_open(path, ZIP_RDONLY, &zerr);
    if (!s.z)
        return zip_open_failed(path, zerr, err, errlen);
    return zip_load(ds, &s, NULL, 0, opt, t0, err, errlen);
}

int dataset_zip_mem(Dataset *ds, const void *buf, size_t len, const char *name,
                    const DataOptions *opt, char *err, size_t errlen)
{
    const double t0 = now_s();
    memset(ds, 0, sizeof *ds);
    Source s = {name, NULL, {0, 0, 0}};
    dataset_get_limits(&s.lim);
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(buf, len, 0, &ze);
    if (!src) {
        zip_error_fini(&ze);
        snprintf(err, errlen, "%s: out of memory", name);
        return 1;
    }
    if (!(s.z = zip_open_from_source(src, ZIP_RDONLY, &ze)))
        zip_source_free(src);
    const int zerr = zip_error_code_zip(&ze);
    zip_error_fini(&ze);
    if (!s.z)
        return zip_open_failed(name, zerr, err, errlen);
    return zip_load(ds, &s, buf, len, opt, t0, err, errlen);
}

int dataset_dir(Dataset *ds, const char *path, const DataOptions *opt, char *err, size_t errlen)
{
    const double t0 = now_s();
    memset(ds, 0, sizeof *ds);
    Source s = {path, NULL, {0, 0, 0}};
    dataset_get_limits(&s.lim);
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return 2;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: not a directory", path);
        return 2;
    }
    EntryVec ev = {0};
    int rc = listing_dir(path, NULL, 0, &ev, err, errlen);
    if (!rc)
        rc = load_listing(ds, &s, "dir", &ev, opt, t0, err, errlen);
    listing_free(&ev);
    if (rc) {
        dataset_free(ds);
        memset(ds, 0, sizeof *ds);
    }
    return rc;
}
