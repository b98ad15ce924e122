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
 * Parallelism: one thread reads entries serially (libzip handles are not
 * shared) and hands chunks of compressed bytes to OpenMP tasks that decode
 * (and resize, when a size is asked for) while it reads on.
 */
#include "datasets/dataset.h"

#include <ctype.h>
#include <dirent.h>
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

/* Escaped copy of a C string into a caller buffer, for messages. */
#define ESC(buf, str) dataset_escape(buf, sizeof buf, str, strlen(str))

/* ---- the listing: every entry of the archive or tree ----------------------------- */

typedef struct {
    char *name;        /* as stored: zip entry name, or path relative to the root */
    int is_dir;
    int special;       /* dir source: not a regular file (fifo, device, link to dir) */
    int64_t zindex;    /* libzip index, -1 for a tree */
    uint64_t size;     /* declared (zip) or stat (tree) size */
    int32_t comp;      /* zip compression method */
    uint16_t enc;      /* zip encryption method */
} Entry;

typedef struct {
    Entry *v;
    size_t n, cap;
} EntryVec;

static int entries_push(EntryVec *ev, const Entry *e)
{
    if (ev->n == ev->cap) {
        size_t cap = ev->cap ? 2 * ev->cap : 256;
        Entry *v = realloc(ev->v, cap * sizeof *v);
        if (!v)
            return 1;
        ev->v = v;
        ev->cap = cap;
    }
    ev->v[ev->n++] = *e;
    return 0;
}

static void entries_free(EntryVec *ev)
{
    for (size_t i = 0; i < ev->n; i++)
        free(ev->v[i].name);
    free(ev->v);
    memset(ev, 0, sizeof *ev);
}

/* Why an entry name is unsafe, or NULL. Names never become paths in kiln, but
 * a name that could escape an extraction directory marks a hostile archive. */
static const char *unsafe_name(const char *name)
{
    if (!*name)
        return "empty name";
    if (name[0] == '/')
        return "absolute path";
    if (isalpha((unsigned char)name[0]) && name[1] == ':')
        return "absolute path (drive letter)";
    if (strchr(name, '\\'))
        return "backslash in name";
    for (const char *p = name; *p;) {
        const char *q = strchr(p, '/');
        size_t l = q ? (size_t)(q - p) : strlen(p);
        if (l == 2 && p[0] == '.' && p[1] == '.')
            return "'..' component (path traversal)";
        p += l + (q != NULL);
    }
    return NULL;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static int read_at(FILE *fp, uint64_t off, void *dst, size_t len)
{
    return fseeko(fp, (off_t)off, SEEK_SET) != 0 || fread(dst, 1, len, fp) != len;
}

/* libzip turns a NUL inside an entry name into a space, so the raw central
 * directory is walked here (zip format: EOCD record, zip64 locator and record,
 * central file headers) to find names that contain a NUL byte. */
static int zip_raw_names(const char *path, char *err, size_t errlen)
{
    char esc[256];
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return 2;
    }
    int rc = 2;
    uint8_t *tail = NULL, *cd = NULL;
    if (fseeko(fp, 0, SEEK_END) != 0)
        goto bad;
    const uint64_t fsz = (uint64_t)ftello(fp);
    const size_t tl = fsz < 22 + 65535 + 20 ? (size_t)fsz : 22 + 65535 + 20;
    tail = malloc(tl + 1);
    if (!tail || tl < 22 || read_at(fp, fsz - tl, tail, tl))
        goto bad;
    long e = (long)tl - 22;
    for (; e >= 0; e--)
        if (rd32(tail + e) == 0x06054b50u && (size_t)e + 22 + rd16(tail + e + 20) <= tl)
            break;
    if (e < 0)
        goto bad;
    uint64_t count = rd16(tail + e + 10), cdsize = rd32(tail + e + 12), cdoff = rd32(tail + e + 16);
    if (count == 0xFFFF || cdsize == 0xFFFFFFFFu || cdoff == 0xFFFFFFFFu) {
        uint8_t z64[56];
        if (e < 20 || rd32(tail + e - 20) != 0x07064b50u ||
            read_at(fp, rd64(tail + e - 20 + 8), z64, sizeof z64) || rd32(z64) != 0x06064b50u)
            goto bad;
        count = rd64(z64 + 32);
        cdsize = rd64(z64 + 40);
        cdoff = rd64(z64 + 48);
    }
    if (cdoff > fsz || cdsize > fsz - cdoff)
        goto bad;
    cd = malloc(cdsize + 1);
    if (!cd || read_at(fp, cdoff, cd, cdsize))
        goto bad;
    uint64_t off = 0;
    for (uint64_t i = 0; i < count; i++) {
        if (cdsize - off < 46 || rd32(cd + off) != 0x02014b50u)
            goto bad;
        const uint64_t nl = rd16(cd + off + 28), xl = rd16(cd + off + 30), cl = rd16(cd + off + 32);
        if (cdsize - off - 46 < nl + xl + cl)
            goto bad;
        const char *name = (const char *)cd + off + 46;
        if (memchr(name, 0, nl)) {
            snprintf(err, errlen, "%s: entry '%s': NUL byte in name", path,
                     dataset_escape(esc, sizeof esc, name, nl));
            goto out;
        }
        off += 46 + nl + xl + cl;
    }
    rc = 0;
    goto out;
bad:
    snprintf(err, errlen, "%s: damaged or truncated zip central directory", path);
out:
    free(tail);
    free(cd);
    fclose(fp);
    return rc;
}

/* List a zip: every name checked, sizes and methods from the central directory. */
static int list_zip(zip_t *z, const char *path, EntryVec *ev, char *err, size_t errlen)
{
    char esc[256];
    const zip_int64_t ne = zip_get_num_entries(z, 0);
    for (zip_int64_t i = 0; i < ne; i++) {
        const char *name = zip_get_name(z, (zip_uint64_t)i, 0);
        zip_stat_t st;
        if (!name || zip_stat_index(z, (zip_uint64_t)i, 0, &st) != 0) {
            snprintf(err, errlen, "%s: entry %lld: %s", path, (long long)i, zip_strerror(z));
            return 2;
        }
        const char *why = unsafe_name(name);
        if (why) {
            snprintf(err, errlen, "%s: entry '%s': %s", path, ESC(esc, name), why);
            return 2;
        }
        Entry en = {0};
        en.name = strdup(name);
        en.is_dir = name[strlen(name) - 1] == '/';
        en.zindex = i;
        en.size = (st.valid & ZIP_STAT_SIZE) ? st.size : 0;
        en.comp = (st.valid & ZIP_STAT_COMP_METHOD) ? st.comp_method : ZIP_CM_STORE;
        en.enc = (st.valid & ZIP_STAT_ENCRYPTION_METHOD) ? st.encryption_method : ZIP_EM_NONE;
        if (!en.name || entries_push(ev, &en)) {
            free(en.name);
            snprintf(err, errlen, "%s: out of memory", path);
            return 1;
        }
    }
    return 0;
}

/* List a directory tree (symlinks to files followed, to folders not). */
static int list_dir(const char *root, const char *rel, int depth, EntryVec *ev,
                    char *err, size_t errlen)
{
    char full[PATH_MAX];
    snprintf(full, sizeof full, "%s%s%s", root, rel ? "/" : "", rel ? rel : "");
    DIR *d = opendir(full);
    if (!d) {
        snprintf(err, errlen, "%s: cannot open directory: %s", full, strerror(errno));
        return 2;
    }
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char relc[PATH_MAX], fc[PATH_MAX];
        if ((size_t)snprintf(relc, sizeof relc, "%s%s%s", rel ? rel : "", rel ? "/" : "",
                             de->d_name) >= sizeof relc ||
            (size_t)snprintf(fc, sizeof fc, "%s/%s", root, relc) >= sizeof fc) {
            snprintf(err, errlen, "%s: path too long under '%s'", root, rel ? rel : ".");
            rc = 2;
            break;
        }
        struct stat st;
        Entry en = {0};
        en.zindex = -1;
        if (lstat(fc, &st) != 0) {
            snprintf(err, errlen, "%s: cannot stat: %s", fc, strerror(errno));
            rc = 2;
            break;
        }
        if (S_ISLNK(st.st_mode) && (stat(fc, &st) != 0 || S_ISDIR(st.st_mode)))
            en.special = 1;
        else if (S_ISDIR(st.st_mode))
            en.is_dir = 1;
        else if (!S_ISREG(st.st_mode))
            en.special = 1;
        en.size = en.special ? 0 : (uint64_t)st.st_size;
        en.name = strdup(relc);
        if (!en.name || entries_push(ev, &en)) {
            free(en.name);
            snprintf(err, errlen, "%s: out of memory", root);
            rc = 1;
            break;
        }
        if (en.is_dir) {
            if (depth >= 32) {
                snprintf(err, errlen, "%s: folders nested more than 32 deep at '%s'", root, relc);
                rc = 2;
                break;
            }
            rc = list_dir(root, relc, depth + 1, ev, err, errlen);
        }
    }
    closedir(d);
    return rc;
}

/* ---- classification: entries -> images with classes --------------------------------- */

enum { ST_PENDING, ST_OK, ST_CORRUPT, ST_OVERCAP, ST_READERR, ST_NOMEM };

typedef struct {
    const Entry *e;    /* the listing entry (name for messages, size, zip index) */
    char *cls;         /* class name: the folder directly above the file */
    int label;
    uint8_t *data;     /* compressed bytes while in flight */
    size_t len;
    uint8_t *px;       /* decoded (and resized) pixels (h, w, c) */
    int h, w, c;
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

typedef struct {
    int th, tw, tc;        /* resize to this (0: keep the decoded size/channels) */
    uint64_t max_pixels;
    int stop;              /* set (atomically) on a fatal error: the rest is skipped */
} DecodeCfg;

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    int warnings;
    char last[JMSG_LENGTH_MAX];
} JErr;

static void jerr_exit(j_common_ptr ci) { longjmp(((JErr *)ci->err)->jb, 1); }

static void jerr_emit(j_common_ptr ci, int level)
{
    JErr *je = (JErr *)ci->err;
    if (level < 0 && je->warnings++ == 0)
        ci->err->format_message(ci, je->last);
}

static void jerr_output(j_common_ptr ci) { (void)ci; }

static void set_status(Item *it, int st, const char *why)
{
    it->status = st;
    it->why = why ? strdup(why) : NULL;
}

/* Decode it->data into it->px (RGB or gray; CMYK converted to RGB), then
 * resize to the target when one is set. */
static void decode_one(struct jpeg_decompress_struct *ci, JErr *je, Item *it, const DecodeCfg *cfg)
{
    uint8_t *volatile px = NULL;
    je->warnings = 0;
    if (setjmp(je->jb)) {
        char msg[JMSG_LENGTH_MAX];
        ci->err->format_message((j_common_ptr)ci, msg);
        jpeg_abort_decompress(ci);
        free(px);
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
    int w = (int)ci->output_width, h = (int)ci->output_height;
    const int oc = ci->output_components;
    px = malloc((size_t)w * h * oc);
    if (!px) {
        jpeg_abort_decompress(ci);
        set_status(it, ST_NOMEM, "out of memory");
        return;
    }
    while (ci->output_scanline < ci->output_height) {
        JSAMPROW row = px + (size_t)ci->output_scanline * w * oc;
        jpeg_read_scanlines(ci, &row, 1);
    }
    const int adobe = ci->saw_Adobe_marker;
    jpeg_finish_decompress(ci);
    if (je->warnings) {
        free(px);
        set_status(it, ST_CORRUPT, je->last);
        return;
    }
    uint8_t *img = px;
    int c = oc;
    if (oc == 4) { /* CMYK: Adobe writes it inverted */
        for (size_t p = 0; p < (size_t)w * h; p++) {
            int k = adobe ? img[4 * p + 3] : 255 - img[4 * p + 3];
            for (int j = 0; j < 3; j++) {
                int v = adobe ? img[4 * p + j] : 255 - img[4 * p + j];
                img[3 * p + j] = (uint8_t)((v * k + 127) / 255);
            }
        }
        c = 3;
    }
    const int tc = cfg->tc > 0 ? cfg->tc : c;
    if (cfg->th > 0 && (cfg->th != h || cfg->tw != w || tc != c)) {
        uint8_t *r = malloc((size_t)cfg->th * cfg->tw * tc);
        if (!r) {
            free(img);
            set_status(it, ST_NOMEM, "out of memory");
            return;
        }
        image_resize(r, cfg->th, cfg->tw, tc, img, h, w, c);
        free(img);
        img = r;
        h = cfg->th;
        w = cfg->tw;
        c = tc;
    }
    it->px = img;
    it->h = h;
    it->w = w;
    it->c = c;
    it->status = ST_OK;
}

/* Decode items [lo, hi) with one decompressor; frees their compressed bytes. */
static void decode_range(Item *it, int lo, int hi, DecodeCfg *cfg)
{
    struct jpeg_decompress_struct ci;
    JErr je;
    memset(&je, 0, sizeof je);
    ci.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = jerr_exit;
    je.pub.emit_message = jerr_emit;
    je.pub.output_message = jerr_output;
    if (setjmp(je.jb)) { /* jpeg_create_decompress ran out of memory */
        for (int i = lo; i < hi; i++) {
            set_status(&it[i], ST_NOMEM, "out of memory");
            free(it[i].data);
            it[i].data = NULL;
        }
        return;
    }
    jpeg_create_decompress(&ci);
    for (int i = lo; i < hi; i++) {
        int stop;
#pragma omp atomic read
        stop = cfg->stop;
        if (!stop)
            decode_one(&ci, &je, &it[i], cfg);
        free(it[i].data);
        it[i].data = NULL;
        if (it[i].status == ST_OVERCAP || it[i].status == ST_NOMEM) {
#pragma omp atomic write
            cfg->stop = 1;
        }
    }
    jpeg_destroy_decompress(&ci);
}

#define CHUNK_ITEMS 32
#define CHUNK_BYTES (4u << 20)
#define PENDING_BYTES (256u << 20)

/* Read every item serially and decode in parallel. Statuses tell the rest. */
static void read_and_decode(const Source *s, Item *it, int n, DecodeCfg *cfg)
{
#pragma omp parallel
#pragma omp single
    {
        int lo = 0;
        size_t chunk = 0, pending = 0;
        for (int i = 0; i < n; i++) {
            int stop;
#pragma omp atomic read
            stop = cfg->stop;
            const int failed = stop || read_item(s, &it[i]) != 0;
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
#pragma omp task firstprivate(a, b)
                decode_range(it, a, b, cfg);
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
    char esc[256];

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
    rc = check_items(s, it, n, err, errlen);
    if (rc)
        goto out;

    DecodeCfg cfg = {0};
    cfg.max_pixels = s->lim.max_pixels;
    if (opt && opt->h > 0 && opt->w > 0) {
        cfg.th = opt->h;
        cfg.tw = opt->w;
        cfg.tc = opt->c > 0 ? opt->c : 0; /* 0: channels settled when assembling */
    }
    read_and_decode(s, it, n, &cfg);

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
    SizeCount *sizes = calloc((size_t)(unsigned)n + 1, sizeof *sizes);
    if (!per_class || !sizes) {
        free(per_class);
        free(sizes);
        snprintf(err, errlen, "%s: out of memory", s->path);
        rc = 1;
        goto out;
    }
    int maxc = 1;
    for (int i = 0; i < n; i++) {
        if (it[i].status != ST_OK) {
            corrupt++;
            if (first_bad < 0)
                first_bad = i;
            continue;
        }
        per_class[it[i].label]++;
        sizes[ok].h = it[i].h;
        sizes[ok].w = it[i].w;
        maxc = it[i].c > maxc ? it[i].c : maxc;
        ok++;
    }
    for (int k = 0; k < ncls && !rc; k++) {
        if (per_class[k])
            continue;
        int first = 0;
        while (it[first].label != k)
            first++;
        char esc2[256];
        snprintf(err, errlen, "%s: class '%s': none of its images could be decoded (first: %s "
                 "'%s': %s)", s->path, ESC(esc, classes[k]), s->z ? "entry" : "file",
                 ESC(esc2, it[first].e->name), it[first].why ? it[first].why : "?");
        rc = 2;
    }
    /* Stored size: the one asked for, else the most common one. */
    int th = cfg.th, tw = cfg.tw, tc = opt && opt->c > 0 ? opt->c : maxc;
    if (!rc && th == 0) {
        qsort(sizes, (size_t)ok, sizeof *sizes, cmp_size);
        int best = 0;
        for (int i = 0; i < ok;) {
            int j = i;
            while (j < ok && !cmp_size(&sizes[j], &sizes[i]))
                j++;
            if (j - i > best) {
                best = j - i;
                th = sizes[i].h;
                tw = sizes[i].w;
            }
            i = j;
        }
    }
    free(per_class);
    free(sizes);
    if (rc)
        goto out;
    if (dataset_alloc(ds, ok, th, tw, tc, ncls)) {
        snprintf(err, errlen, "%s: out of memory for %d images of %dx%dx%d", s->path, ok, th, tw, tc);
        rc = 1;
        goto out;
    }
    int *slot = malloc((size_t)n * sizeof *slot);
    if (!slot) {
        snprintf(err, errlen, "%s: out of memory", s->path);
        rc = 1;
        goto out;
    }
    for (int i = 0, m = 0; i < n; i++)
        slot[i] = it[i].status == ST_OK ? m++ : -1;
    const size_t isz = (size_t)th * tw * tc;
#pragma omp parallel for schedule(dynamic, 64)
    for (int i = 0; i < n; i++) {
        if (slot[i] < 0)
            continue;
        image_resize(ds->pixels + isz * slot[i], th, tw, tc, it[i].px, it[i].h, it[i].w, it[i].c);
        ds->labels[slot[i]] = it[i].label;
    }
    free(slot);
    for (int k = 0; k < ncls; k++) {
        ds->class_names[k] = classes[k];
        classes[k] = NULL;
    }
    snprintf(ds->source, sizeof ds->source, "%s:%s", kind, s->path);
    ds->n = ok;
    ds->h = th;
    ds->w = tw;
    ds->c = tc;
    ds->num_classes = ncls;
    ds->n_fixed_test = 0;
    ds->skipped_nonimage = nonimage;
    ds->skipped_corrupt = corrupt;
    ds->decode_seconds = now_s() - t0;
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

int dataset_zip(Dataset *ds, const char *path, const DataOptions *opt, char *err, size_t errlen)
{
    const double t0 = now_s();
    memset(ds, 0, sizeof *ds);
    Source s = {path, NULL, {0, 0, 0}};
    dataset_get_limits(&s.lim);
    int zerr = 0;
    s.z = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &zerr);
    if (!s.z) {
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
    EntryVec ev = {0};
    int rc = zip_raw_names(path, err, errlen);
    if (!rc)
        rc = list_zip(s.z, path, &ev, err, errlen);
    if (!rc)
        rc = load_listing(ds, &s, "zip", &ev, opt, t0, err, errlen);
    entries_free(&ev);
    zip_discard(s.z);
    if (rc) {
        dataset_free(ds);
        memset(ds, 0, sizeof *ds);
    }
    return rc;
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
    int rc = list_dir(path, NULL, 0, &ev, err, errlen);
    if (!rc)
        rc = load_listing(ds, &s, "dir", &ev, opt, t0, err, errlen);
    entries_free(&ev);
    if (rc) {
        dataset_free(ds);
        memset(ds, 0, sizeof *ds);
    }
    return rc;
}
