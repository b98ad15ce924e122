/* datasets/imagefolder_decode.c — the ImageFolder loader's reading and
 * decoding (imagefolder.h): the caps checked on what will be read, each
 * item's bytes read (a zip entry with libzip, nothing extracted to disk, or
 * a file of the tree), and JPEGs decoded with libjpeg(-turbo) in parallel.
 *
 * Reading holds an entry to its declared size: at most one byte past it is
 * read, so a lying entry (a zip bomb) is caught without inflating more.
 * Decoding: a JPEG that fails, decodes with warnings, or has more than
 * MAX_SCANS scans is ST_CORRUPT (skipped and counted by the caller); a header
 * over the pixel cap is ST_OVERCAP, checked before any pixel is decoded. Gray
 * stays gray, YCbCr becomes RGB, CMYK/YCCK becomes RGB (Adobe's inverted form
 * recognised).
 *
 * Parallelism: one thread reads entries serially (libzip handles are not
 * shared) and hands chunks of compressed bytes to OpenMP tasks that decode
 * (and resize, when a size is asked for) while it reads on. The table is
 * allocated at the first readable JPEG header, and images of its size decode
 * straight into their slot; others wait in their own buffer until the final
 * size is known.
 */
#include "datasets/imagefolder.h"

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <zip.h>

/* ---- reading ----------------------------------------------------------------------- */

/* The checks before reading (imagefolder.h). */
int imagefolder_check_items(const Source *s, const Item *it, int n, char *err, size_t errlen)
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

/* Reading and decoding (imagefolder.h): this thread reads, OpenMP tasks
 * decode chunks of CHUNK_ITEMS items or CHUNK_BYTES bytes; after
 * PENDING_BYTES of compressed bytes in flight the reader waits for the
 * decoders. */
int imagefolder_read_and_decode(const Source *s, Item *it, int n, int ncls, const int want[3], Dataset *ds,
                                Table *table, DecodeCfg *cfg)
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
