/* datasets/imagefolder.c — ImageFolder sources: a zip read in place with
 * libzip (nothing is extracted to disk) or a plain directory tree; JPEGs
 * decoded with libjpeg(-turbo), in parallel.
 *
 * Layout: [WRAPPER/]...CLASS/FILE.jpg. The class of an image is the folder
 * directly above it. One leading wrapper folder is recognised (EuroSAT's
 * `2750/`, `EuroSAT_RGB/`): it is a wrapper when every entry lies under it
 * and some image lies two folders below it. Class names are sorted bytewise
 * (torchvision's ImageFolder order); images are ordered by (class, path).
 *
 * Skipped and counted (skipped_nonimage): anything under `__MACOSX/` or with
 * a path component starting with '.', files whose extension is not .jpg or
 * .jpeg, files not inside a class folder. Skipped and counted
 * (skipped_corrupt): JPEGs that fail to decode or decode with warnings
 * (truncated, corrupt data); the count and the first reason go to stderr.
 *
 * Bad input (2, message naming the archive and the entry): not a zip or a
 * damaged central directory; an entry name with a `..` component, an absolute
 * path, a backslash or a NUL byte; an image entry whose declared or actual
 * size is over the per-entry cap, or image entries whose declared sizes sum
 * over the whole-archive cap (actual sizes are held to the declared ones:
 * reading stops one byte past it); encrypted image entries; compression
 * libzip cannot inflate; a class-level folder with no images; a JPEG header
 * claiming more pixels than the cap (checked before any pixel is decoded).
 * Caps are in dataset.h (64 MiB an entry, 16 GiB an archive, 64 Mpixel an
 * image) and can be lowered by tests through dataset_set_limits.
 *
 * The listing, the name checks, the caps and the escaping are in listing.c;
 * this file classifies, reads, decodes and builds the table.
 *
 * Parallelism: one thread reads entries serially (libzip handles are not
 * shared) and hands chunks of compressed bytes to OpenMP tasks that decode
 * (and resize, when a size is asked for) while it reads on. The table is
 * allocated at the first readable JPEG header, and images of its size decode
 * straight into their slot; others wait in their own buffer until the final
 * size is known.
 */
#include "datasets/dataset.h"
#include "datasets/listing.h"

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <jpeglib.h>
#include <zip.h>

/* ---- classification: entries -> images with classes --------------------------------- */

enum { ST_PENDING, ST_OK, ST_CORRUPT, ST_OVERCAP, ST_READERR, ST_NOMEM };

typedef struct {
    const Entry *e;    /* the listing entry (name for messages, size, zip index) */
    char *cls;         /* class name: the folder directly above the file */
    int label;
    uint8_t *data;     /* compressed bytes while in flight */
    size_t len;
    int in_table;      /* decoded into its slot of the table */
    uint8_t *px;       /* else: decoded pixels (h, w, c), placed when assembling */
    int h, w, c;
    int src_h, src_w;  /* the size the image has in the source */
    int status;
    char *why;         /* reason for a non-OK status */
} Item;

/* Split a stored name into its non-empty, non-"." components (at most max). */
static int components(const char *name, const char **comp, size_t *clen, int max)
{
    int k = 0;
    for (const char *p = name; *p;) {
        const char *q = strchr(p, '/');
        size_t l = q ? (size_t)(q - p) : strlen(p);
        if (l && !(l == 1 && p[0] == '.')) {
            if (k == max)
                return -1;
            comp[k] = p;
            clen[k++] = l;
        }
        p += l + (q != NULL);
    }
    return k;
}

static int is_junk(const char *const *comp, const size_t *clen, int k)
{
    for (int i = 0; i < k; i++)
        if (comp[i][0] == '.' || (clen[i] == 8 && !memcmp(comp[i], "__MACOSX", 8)))
            return 1;
    return 0;
}

static int is_jpeg_name(const char *last, size_t l)
{
    const char *dot = NULL;
    for (size_t i = 0; i < l; i++)
        if (last[i] == '.')
            dot = last + i;
    if (!dot)
        return 0;
    size_t el = l - (size_t)(dot + 1 - last);
    return (el == 3 && !strncasecmp(dot + 1, "jpg", 3)) || (el == 4 && !strncasecmp(dot + 1, "jpeg", 4));
}

static int cmp_item(const void *a, const void *b)
{
    const Item *x = a, *y = b;
    int c = strcmp(x->cls, y->cls);
    return c ? c : strcmp(x->e->name, y->e->name);
}

typedef struct {
    char *name;
    int images;
} Folder;

static int cmp_folder(const void *a, const void *b)
{
    return strcmp(((const Folder *)a)->name, ((const Folder *)b)->name);
}

#define MAXDEPTH 64

/* Turn the listing into sorted images with labels and sorted class names. */
static int classify(const EntryVec *ev, const char *src, Item **items_out, int *n_out,
                    char ***classes_out, int *ncls_out, long *nonimage, char *err, size_t errlen)
{
    const char *comp[MAXDEPTH];
    size_t clen[MAXDEPTH];
    char esc[256];
    int rc = 0;
    *nonimage = 0;
    if (ev->n >= (size_t)INT_MAX / 2) {
        snprintf(err, errlen, "%s: %zu entries: more than kiln handles", src, ev->n);
        return 2;
    }
    /* The wrapper: one first component shared by every kept entry, with an
     * image two folders below it. */
    const char *wrap = NULL;
    size_t wlen = 0;
    int shared = 1, deep = 0;
    for (size_t i = 0; i < ev->n; i++) {
        int k = components(ev->v[i].name, comp, clen, MAXDEPTH);
        if (k <= 0 || is_junk(comp, clen, k))
            continue;
        if (!wrap) {
            wrap = comp[0];
            wlen = clen[0];
        }
        if (clen[0] != wlen || memcmp(comp[0], wrap, wlen) || (k == 1 && !ev->v[i].is_dir))
            shared = 0;
        if (k >= 3 && !ev->v[i].is_dir && is_jpeg_name(comp[k - 1], clen[k - 1]))
            deep = 1;
    }
    const int skip = (wrap && shared && deep) ? 1 : 0;

    Item *items = calloc(ev->n + 1, sizeof *items);
    Folder *folders = calloc(ev->n + 1, sizeof *folders);
    int n = 0, nf = 0;
    char **classes = NULL;
    int ncls = 0;
    if (!items || !folders)
        goto oom;
    for (size_t i = 0; i < ev->n; i++) {
        const Entry *e = &ev->v[i];
        int k = components(e->name, comp, clen, MAXDEPTH);
        if (k < 0) {
            snprintf(err, errlen, "%s: entry '%s': nested more than %d deep", src, ESC(esc, e->name),
                     MAXDEPTH);
            rc = 2;
            goto fail;
        }
        if (k == 0 || is_junk(comp, clen, k)) {
            *nonimage += !e->is_dir;
            continue;
        }
        const int d = k - skip; /* depth below the wrapper */
        if (d <= 0)
            continue; /* the wrapper folder itself */
        const int image = !e->is_dir && !e->special && d >= 2 && is_jpeg_name(comp[k - 1], clen[k - 1]);
        if (!e->is_dir && !image)
            (*nonimage)++;
        /* The class-level folder this entry lies in (or is). */
        if (d >= 2 || e->is_dir) {
            folders[nf].name = strndup(comp[skip], clen[skip]);
            folders[nf].images = image;
            if (!folders[nf++].name)
                goto oom;
        }
        if (image) {
            items[n].e = e;
            items[n].cls = strndup(comp[k - 2], clen[k - 2]);
            if (!items[n++].cls)
                goto oom;
        }
    }
    /* Every class-level folder must hold images. */
    qsort(folders, (size_t)nf, sizeof *folders, cmp_folder);
    for (int i = 0; i < nf;) {
        int j = i, images = 0;
        for (; j < nf && !strcmp(folders[j].name, folders[i].name); j++)
            images += folders[j].images;
        if (!images) {
            char ew[128];
            snprintf(err, errlen, "%s: class folder '%s%s%s/' has no images", src,
                     skip ? dataset_escape(ew, sizeof ew, wrap, wlen) : "", skip ? "/" : "",
                     ESC(esc, folders[i].name));
            rc = 2;
            goto fail;
        }
        i = j;
    }
    if (n == 0) {
        snprintf(err, errlen, "%s: no .jpg/.jpeg images inside class folders (%ld other entries)",
                 src, *nonimage);
        rc = 2;
        goto fail;
    }
    /* Sorted classes, labels by class order. */
    qsort(items, (size_t)n, sizeof *items, cmp_item);
    classes = calloc((size_t)n, sizeof *classes);
    if (!classes)
        goto oom;
    for (int i = 0; i < n; i++) {
        if (i == 0 || strcmp(items[i].cls, items[i - 1].cls)) {
            classes[ncls] = strdup(items[i].cls);
            if (!classes[ncls++])
                goto oom;
        }
        items[i].label = ncls - 1;
    }
    for (int i = 0; i < nf; i++)
        free(folders[i].name);
    free(folders);
    *items_out = items;
    *n_out = n;
    *classes_out = classes;
    *ncls_out = ncls;
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory", src);
    rc = 1;
fail:
    for (int i = 0; i < nf; i++)
        free(folders[i].name);
    free(folders);
    for (int i = 0; i < n; i++)
        free(items[i].cls);
    free(items);
    for (int i = 0; i < ncls; i++)
        free(classes[i]);
    free(classes);
    return rc;
}

/* ---- reading ----------------------------------------------------------------------- */

typedef struct {
    const char *path;  /* archive or root, for messages */
    zip_t *z;          /* NULL for a tree */
    DataLimits lim;
} Source;

/* Checks on what will be read, before any of it is: caps, encryption,
 * compression. */
static int check_items(const Source *s, const Item *it, int n, char *err, size_t errlen)
{
    char esc[256];
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        const Entry *e = it[i].e;
        const char *what = s->z ? "entry" : "file";
        if (s->z && e->enc != ZIP_EM_NONE) {
            snprintf(err, errlen, "%s: entry '%s': encrypted (method 0x%04x); kiln reads no "
                     "encrypted entries", s->path, ESC(esc, e->name), e->enc);
            return 2;
        }
        if (s->z && !zip_compression_method_supported(e->comp, 0)) {
            snprintf(err, errlen, "%s: entry '%s': unsupported compression method %d", s->path,
                     ESC(esc, e->name), e->comp);
            return 2;
        }
        if (e->size > s->lim.max_entry_bytes) {
            snprintf(err, errlen, "%s: %s '%s': declared size %llu bytes is over the per-entry "
                     "cap of %llu bytes", s->path, what, ESC(esc, e->name),
                     (unsigned long long)e->size, (unsigned long long)s->lim.max_entry_bytes);
            return 2;
        }
        total += e->size;
        if (total > s->lim.max_total_bytes) {
            snprintf(err, errlen, "%s: %s '%s': image entries total %llu bytes so far, over the "
                     "whole-archive cap of %llu bytes", s->path, what, ESC(esc, e->name),
                     (unsigned long long)total, (unsigned long long)s->lim.max_total_bytes);
            return 2;
        }
    }
    return 0;
}

/* Read one item's bytes: at most declared size + 1, so a lying entry is
 * caught without inflating more than that. Errors go to it->why. */
static int read_item(const Source *s, Item *it)
{
    char esc[256], msg[1024];
    const Entry *e = it->e;
    const uint64_t want = e->size + 1;
    uint8_t *buf = malloc(want);
    uint64_t got = 0;
    int rc = 0;
    if (!buf) {
        snprintf(msg, sizeof msg, "%s: out of memory", s->path);
        it->status = ST_NOMEM;
        it->why = strdup(msg);
        return 1;
    }
    if (s->z) {
        zip_file_t *zf = zip_fopen_index(s->z, (zip_uint64_t)e->zindex, 0);
        if (!zf) {
            snprintf(msg, sizeof msg, "%s: entry '%s': cannot open: %s", s->path,
                     ESC(esc, e->name), zip_strerror(s->z));
            rc = 2;
        }
        while (zf && got < want) {
            zip_int64_t r = zip_fread(zf, buf + got, want - got);
            if (r < 0) {
                snprintf(msg, sizeof msg, "%s: entry '%s': data unreadable: %s", s->path,
                         ESC(esc, e->name), zip_file_strerror(zf));
                rc = 2;
                break;
            }
            if (r == 0)
                break;
            got += (uint64_t)r;
        }
        if (zf)
            zip_fclose(zf);
    } else {
        char full[PATH_MAX];
        snprintf(full, sizeof full, "%s/%s", s->path, e->name);
        FILE *fp = fopen(full, "rb");
        if (!fp) {
            snprintf(msg, sizeof msg, "%s: file '%s': cannot open: %s", s->path,
                     ESC(esc, e->name), strerror(errno));
            rc = 2;
        } else {
            got = fread(buf, 1, want, fp);
            if (ferror(fp)) {
                snprintf(msg, sizeof msg, "%s: file '%s': read error", s->path, ESC(esc, e->name));
                rc = 2;
            }
            fclose(fp);
        }
    }
    const char *what = s->z ? "entry" : "file";
    if (!rc && got > e->size) {
        snprintf(msg, sizeof msg, "%s: %s '%s': holds more than its declared %llu bytes "
                 "(reading stopped there; per-entry cap %llu)", s->path, what, ESC(esc, e->name),
                 (unsigned long long)e->size, (unsigned long long)s->lim.max_entry_bytes);
        rc = 2;
    } else if (!rc && got < e->size) {
        snprintf(msg, sizeof msg, "%s: %s '%s': holds %llu bytes, fewer than its declared %llu",
                 s->path, what, ESC(esc, e->name), (unsigned long long)got,
                 (unsigned long long)e->size);
        rc = 2;
    }
    if (rc) {
        free(buf);
        it->status = ST_READERR;
        it->why = strdup(msg);
        return rc;
    }
    it->data = buf;
    it->len = (size_t)got;
    return 0;
}

/* ---- decoding ---------------------------------------------------------------------- */

/* The table being filled: n slots of th*tw*tc bytes, slot i for item i. Made
 * from the first readable JPEG header (or the size asked for), so that
 * images of that size decode straight into their slot. */
typedef struct {
    uint8_t *px;
    int th, tw, tc;
} Table;

typedef struct {
    int fix_hw, fix_c;     /* the options fixed the size / the channels */
    uint64_t max_pixels;
    int stop;              /* set (atomically) on a fatal error: the rest is skipped */
} DecodeCfg;

/* A progressive JPEG can hold thousands of scans, each a pass over every
 * coefficient: a small file that costs seconds to decode. More scans than
 * this is treated as corrupt. */
#define MAX_SCANS 500

typedef struct {
    struct jpeg_error_mgr pub;  /* first: libjpeg hands back &pub */
    struct jpeg_progress_mgr prog;
    jmp_buf jb;
    int warnings, too_many_scans;
    char last[JMSG_LENGTH_MAX];
} JErr;

static void jerr_exit(j_common_ptr ci) { longjmp(((JErr *)ci->err)->jb, 1); }

static void jerr_progress(j_common_ptr ci)
{
    JErr *je = (JErr *)ci->err;
    if (ci->is_decompressor && ((j_decompress_ptr)ci)->input_scan_number > MAX_SCANS) {
        je->too_many_scans = 1;
        longjmp(je->jb, 1);
    }
}

static void jerr_emit(j_common_ptr ci, int level)
{
    JErr *je = (JErr *)ci->err;
    if (level < 0 && je->warnings++ == 0)
        ci->err->format_message(ci, je->last);
}

static void jerr_output(j_common_ptr ci) { (void)ci; }

/* A decompressor whose errors longjmp to je->jb instead of exiting: first
 * jpeg_setup, then (with je->jb set: creating can run out of memory)
 * jpeg_open, which also installs the scan limit. */
static void jpeg_setup(struct jpeg_decompress_struct *ci, JErr *je)
{
    memset(je, 0, sizeof *je);
    ci->err = jpeg_std_error(&je->pub);
    je->pub.error_exit = jerr_exit;
    je->pub.emit_message = jerr_emit;
    je->pub.output_message = jerr_output;
}

static void jpeg_open(struct jpeg_decompress_struct *ci, JErr *je)
{
    jpeg_create_decompress(ci);
    je->prog.progress_monitor = jerr_progress;
    ci->progress = &je->prog;
}

static void set_status(Item *it, int st, const char *why)
{
    it->status = st;
    it->why = why ? strdup(why) : NULL;
}

/* Size and channels (1 gray, 3 colour) a JPEG header claims; 0 if readable. */
static int jpeg_probe(struct jpeg_decompress_struct *ci, JErr *je, const uint8_t *buf,
                      size_t len, int *h, int *w, int *c)
{
    if (setjmp(je->jb)) {
        jpeg_abort_decompress(ci);
        return 1;
    }
    jpeg_mem_src(ci, buf, (unsigned long)len);
    jpeg_read_header(ci, TRUE);
    *h = (int)ci->image_height;
    *w = (int)ci->image_width;
    *c = ci->num_components == 1 ? 1 : 3;
    jpeg_abort_decompress(ci);
    return 0;
}

/* Scratch space of one decoding task. */
typedef struct {
    uint8_t *buf;
    size_t cap;
} Scratch;

static uint8_t *scratch(Scratch *s, size_t n)
{
    if (n > s->cap) {
        free(s->buf);
        s->buf = malloc(n);
        s->cap = s->buf ? n : 0;
    }
    return s->buf;
}

/* Decode one item. An image of the table's size goes straight into its slot;
 * one that the options resize (or gray into a colour table) goes through
 * scratch into its slot; any other keeps its own buffer (it->px) until the
 * table's final size is known. CMYK is converted to RGB. */
static void decode_one(struct jpeg_decompress_struct *ci, JErr *je, Item *it, size_t slot,
                       const Table *t, const DecodeCfg *cfg, Scratch *sc)
{
    je->warnings = je->too_many_scans = 0;
    if (setjmp(je->jb)) {
        char msg[JMSG_LENGTH_MAX];
        if (je->too_many_scans)
            snprintf(msg, sizeof msg, "more than %d scans (progressive JPEG)", MAX_SCANS);
        else
            ci->err->format_message((j_common_ptr)ci, msg);
        jpeg_abort_decompress(ci);
        set_status(it, ST_CORRUPT, msg);
        return;
    }
    jpeg_mem_src(ci, it->data, (unsigned long)it->len);
    jpeg_read_header(ci, TRUE);
    const uint64_t pixels = (uint64_t)ci->image_width * ci->image_height;
    if (pixels > cfg->max_pixels) {
        char msg[256];
        snprintf(msg, sizeof msg, "JPEG header claims %ux%u = %llu pixels, over the cap of %llu",
                 ci->image_width, ci->image_height, (unsigned long long)pixels,
                 (unsigned long long)cfg->max_pixels);
        jpeg_abort_decompress(ci);
        set_status(it, ST_OVERCAP, msg);
        return;
    }
    const int cmyk = ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK;
    ci->out_color_space = ci->num_components == 1 ? JCS_GRAYSCALE : cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(ci);
    const int w = (int)ci->output_width, h = (int)ci->output_height, oc = ci->output_components;
    const int c = oc == 4 ? 3 : oc;
    it->src_h = h;
    it->src_w = w;
    uint8_t *dst = t->px ? t->px + slot * (size_t)t->th * t->tw * t->tc : NULL;
    const int direct = t->px && h == t->th && w == t->tw && oc == t->tc;
    uint8_t *px = direct ? dst : scratch(sc, (size_t)w * h * oc);
    if (!px) {
        jpeg_abort_decompress(ci);
        set_status(it, ST_NOMEM, "out of memory");
        return;
    }
    while (ci->output_scanline < ci->output_height) {
        JSAMPROW rows[16];
        const JDIMENSION y = ci->output_scanline, left = ci->output_height - y;
        const JDIMENSION k = left < 16 ? left : 16;
        for (JDIMENSION r = 0; r < k; r++)
            rows[r] = px + (size_t)(y + r) * w * oc;
        jpeg_read_scanlines(ci, rows, k);
    }
    const int adobe = ci->saw_Adobe_marker;
    jpeg_finish_decompress(ci);
    if (je->warnings) {
        set_status(it, ST_CORRUPT, je->last);
        return;
    }
    it->status = ST_OK;
    it->in_table = 1;
    if (direct)
        return;
    if (oc == 4) { /* CMYK: Adobe writes it inverted */
        for (size_t p = 0; p < (size_t)w * h; p++) {
            int k = adobe ? px[4 * p + 3] : 255 - px[4 * p + 3];
            for (int j = 0; j < 3; j++) {
                int v = adobe ? px[4 * p + j] : 255 - px[4 * p + j];
                px[3 * p + j] = (uint8_t)((v * k + 127) / 255);
            }
        }
    }
    if (t->px && (cfg->fix_hw || (h == t->th && w == t->tw)) && (cfg->fix_c || c <= t->tc)) {
        image_resize(dst, t->th, t->tw, t->tc, px, h, w, c);
        return;
    }
    /* Another size than the table's: kept aside, placed when assembling. */
    it->in_table = 0;
    it->px = malloc((size_t)w * h * c);
    if (!it->px) {
        set_status(it, ST_NOMEM, "out of memory");
        return;
    }
    memcpy(it->px, px, (size_t)w * h * c);
    it->h = h;
    it->w = w;
    it->c = c;
}

/* Decode items [lo, hi) with one decompressor; frees their compressed bytes. */
static void decode_range(Item *it, int lo, int hi, Table t, DecodeCfg *cfg)
{
    struct jpeg_decompress_struct ci;
    JErr je;
    Scratch sc = {NULL, 0};
    jpeg_setup(&ci, &je);
    if (setjmp(je.jb)) { /* jpeg_create_decompress ran out of memory */
        for (int i = lo; i < hi; i++) {
            set_status(&it[i], ST_NOMEM, "out of memory");
            free(it[i].data);
            it[i].data = NULL;
        }
        return;
    }
    jpeg_open(&ci, &je);
    for (int i = lo; i < hi; i++) {
        int stop;
#pragma omp atomic read
        stop = cfg->stop;
        if (!stop)
            decode_one(&ci, &je, &it[i], (size_t)i, &t, cfg, &sc);
        free(it[i].data);
        it[i].data = NULL;
        if (it[i].status == ST_OVERCAP || it[i].status == ST_NOMEM) {
#pragma omp atomic write
            cfg->stop = 1;
        }
    }
    jpeg_destroy_decompress(&ci);
    free(sc.buf);
}

#define CHUNK_ITEMS 32
#define CHUNK_BYTES (4u << 20)
#define PENDING_BYTES (256u << 20)

/* Read every item serially and decode in parallel; make the table (through
 * dataset_alloc, n slots) at the first readable header. want is the size the
 * options ask for (0s: none). Statuses tell the rest; returns 1 if the table
 * could not be allocated. */
static int read_and_decode(const Source *s, Item *it, int n, int ncls, const int want[3],
                           Dataset *ds, Table *table, DecodeCfg *cfg)
{
    int rc = 0;
    struct jpeg_decompress_struct probe;
    JErr pje;
    jpeg_setup(&probe, &pje);
    if (setjmp(pje.jb))
        return 1;
    jpeg_open(&probe, &pje);
#pragma omp parallel
#pragma omp single
    {
        int lo = 0;
        size_t chunk = 0, pending = 0;
        for (int i = 0; i < n; i++) {
            int stop, h, w, c;
#pragma omp atomic read
            stop = cfg->stop;
            int failed = stop || read_item(s, &it[i]) != 0;
            if (!failed && !table->px && !jpeg_probe(&probe, &pje, it[i].data, it[i].len, &h, &w, &c)) {
                table->th = want[0] > 0 ? want[0] : h;
                table->tw = want[1] > 0 ? want[1] : w;
                table->tc = want[2] > 0 ? want[2] : c;
                if ((uint64_t)table->th * table->tw <= cfg->max_pixels) {
                    if (dataset_alloc(ds, n, table->th, table->tw, table->tc, ncls)) {
                        set_status(&it[i], ST_NOMEM, "out of memory for the image table");
                        rc = failed = 1;
                    }
                    table->px = ds->pixels;
                }
            }
            if (failed) {
#pragma omp atomic write
                cfg->stop = 1;
            } else {
                chunk += it[i].len;
                pending += it[i].len;
            }
            const int end = failed ? i : i + 1;
            if (end > lo && (failed || end - lo >= CHUNK_ITEMS || chunk >= CHUNK_BYTES || end == n)) {
                const int a = lo, b = end;
                const Table t = *table;
#pragma omp task firstprivate(a, b, t)
                decode_range(it, a, b, t, cfg);
                lo = end;
                chunk = 0;
                if (pending >= PENDING_BYTES) {
#pragma omp taskwait
                    pending = 0;
                }
            }
            if (failed)
                break;
        }
#pragma omp taskwait
    }
    jpeg_destroy_decompress(&probe);
    return rc;
}

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

/* The whole ImageFolder load once the listing exists. */
static int load_listing(Dataset *ds, const Source *s, const char *kind, const EntryVec *ev,
                        const DataOptions *opt, double t0, char *err, size_t errlen)
{
    Item *it = NULL;
    char **classes = NULL;
    int n = 0, ncls = 0;
    long nonimage = 0;
    int rc = classify(ev, s->path, &it, &n, &classes, &ncls, &nonimage, err, errlen);
    if (rc)
        return rc;
    char esc[256], esc2[256];

    /* --per-class picks before anything is read (same choice as
     * dataset_take_per_class on the full table). */
    if (opt && opt->per_class > 0) {
        int32_t *lab = malloc((size_t)n * sizeof *lab);
        uint8_t *keep = malloc((size_t)n);
        rc = !lab || !keep;
        for (int i = 0; i < n && !rc; i++)
            lab[i] = it[i].label;
        if (!rc)
            rc = dataset_pick_per_class(lab, n, 0, ncls, opt->per_class, opt->seed, keep);
        int m = 0;
        for (int i = 0; i < n && !rc; i++) {
            if (keep[i])
                it[m++] = it[i];
            else
                free(it[i].cls);
        }
        if (!rc)
            n = m;
        free(lab);
        free(keep);
        if (rc) {
            snprintf(err, errlen, "%s: out of memory", s->path);
            goto out;
        }
    }
    if (opt && ((opt->c < 0 || opt->c > 4) ||
                (opt->h > 0 && opt->w > 0 && (uint64_t)opt->h * (uint64_t)opt->w > s->lim.max_pixels))) {
        snprintf(err, errlen, "%s: size %dx%dx%d asked for: over the pixel cap of %llu or more "
                 "than 4 channels", s->path, opt->h, opt->w, opt->c,
                 (unsigned long long)s->lim.max_pixels);
        rc = 2;
        goto out;
    }
    rc = check_items(s, it, n, err, errlen);
    if (rc)
        goto out;

    DecodeCfg cfg = {0};
    cfg.max_pixels = s->lim.max_pixels;
    int want[3] = {0, 0, 0};
    if (opt && opt->h > 0 && opt->w > 0) {
        want[0] = opt->h;
        want[1] = opt->w;
        cfg.fix_hw = 1;
    }
    if (opt && opt->c > 0) {
        want[2] = opt->c;
        cfg.fix_c = 1;
    }
    Table table = {NULL, 0, 0, 0};
    if (read_and_decode(s, it, n, ncls, want, ds, &table, &cfg)) {
        snprintf(err, errlen, "%s: out of memory", s->path);
        rc = 1;
        goto out;
    }

    /* The first fatal problem, in table order. */
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
            goto out;
    }
    /* Skip-and-count the corrupt ones; a class must keep at least one image. */
    long corrupt = 0;
    int first_bad = -1, ok = 0;
    int *per_class = calloc((size_t)ncls, sizeof *per_class);
    if (!per_class) {
        snprintf(err, errlen, "%s: out of memory", s->path);
        rc = 1;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (it[i].status != ST_OK) {
            corrupt++;
            first_bad = first_bad < 0 ? i : first_bad;
        } else {
            per_class[it[i].label]++;
            ok++;
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
    if (rc)
        goto out;
    if (!table.px) { /* cannot happen: a decoded image had a readable header */
        snprintf(err, errlen, "%s: no image table was made", s->path);
        rc = 1;
        goto out;
    }
    int fh = table.th, fw = table.tw, fc = table.tc;
    if ((!cfg.fix_hw || !cfg.fix_c) && final_size(it, n, &table, &fh, &fw, &fc)) {
        snprintf(err, errlen, "%s: out of memory", s->path);
        rc = 1;
        goto out;
    }
    fh = cfg.fix_hw ? table.th : fh;
    fw = cfg.fix_hw ? table.tw : fw;
    fc = cfg.fix_c ? table.tc : fc;
    if (assemble(ds, it, n, ok, &table, fh, fw, fc)) {
        snprintf(err, errlen, "%s: out of memory for %d images of %dx%dx%d", s->path, ok, fh, fw, fc);
        rc = 1;
        goto out;
    }
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
    if (corrupt)
        fprintf(stderr, "kiln: %s: skipped %ld corrupt JPEG%s (first: '%s': %s)\n", s->path, corrupt,
                corrupt == 1 ? "" : "s", ESC(esc, it[first_bad].e->name),
                it[first_bad].why ? it[first_bad].why : "?");
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
