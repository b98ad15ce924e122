/* datasets/listing.c — the first part of an ImageFolder load: the listing
 * of a source (every entry of a zip, names checked, or every file and folder
 * of a tree). Below imagefolder*.c, on the base (base.h) alone.
 *
 * Contract (listing.h): a listing holds names as stored, sizes as declared
 * (zip central directory) or as stat says (tree), and for a zip the
 * compression and encryption method; nothing is read or decompressed here.
 * Unsafe zip names (a `..` component, absolute, backslash, NUL) are bad
 * input (2) for the whole archive, whatever the entry is.
 */
#include "datasets/listing.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zip.h>

/* ---- the listing: every entry of the archive or tree ----------------------------- */

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

void listing_free(EntryVec *ev)
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

/* The bytes of a zip: an open file, or (mem not NULL) a buffer; size bytes. */
typedef struct {
    FILE *fp;
    const uint8_t *mem;
    uint64_t size;
} RawZip;

/* Read len bytes at off; nonzero if they are not all there. */
static int read_at(const RawZip *r, uint64_t off, void *dst, size_t len)
{
    if (r->mem) {
        if (off > r->size || len > r->size - off)
            return 1;
        memcpy(dst, r->mem + off, len);
        return 0;
    }
    return fseeko(r->fp, (off_t)off, SEEK_SET) != 0 || fread(dst, 1, len, r->fp) != len;
}

/* libzip turns a NUL inside an entry name into a space, so the raw central
 * directory is walked here (zip format: EOCD record, zip64 locator and record,
 * central file headers) to find names that contain a NUL byte. */
static int raw_names(const RawZip *r, const char *path, char *err, size_t errlen)
{
    char esc[256];
    int rc = 2;
    uint8_t *tail = NULL, *cd = NULL;
    const uint64_t fsz = r->size;
    const size_t tl = fsz < 22 + 65535 + 20 ? (size_t)fsz : 22 + 65535 + 20;
    tail = malloc(tl + 1);
    if (!tail || tl < 22 || read_at(r, fsz - tl, tail, tl))
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
            read_at(r, rd64(tail + e - 20 + 8), z64, sizeof z64) || rd32(z64) != 0x06064b50u)
            goto bad;
        count = rd64(z64 + 32);
        cdsize = rd64(z64 + 40);
        cdoff = rd64(z64 + 48);
    }
    if (cdoff > fsz || cdsize > fsz - cdoff)
        goto bad;
    cd = malloc(cdsize + 1);
    if (!cd || read_at(r, cdoff, cd, cdsize))
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
    return rc;
}

int listing_zip_raw_names(const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return 2;
    }
    int rc = 2;
    off_t end = fseeko(fp, 0, SEEK_END) ? -1 : ftello(fp);
    if (end < 0)
        snprintf(err, errlen, "%s: damaged or truncated zip central directory", path);
    else {
        const RawZip r = {fp, NULL, (uint64_t)end};
        rc = raw_names(&r, path, err, errlen);
    }
    fclose(fp);
    return rc;
}

int listing_zip_raw_names_mem(const void *buf, size_t len, const char *name, char *err, size_t errlen)
{
    const RawZip r = {NULL, buf, len};
    return raw_names(&r, name, err, errlen);
}

/* List a zip: every name checked, sizes and methods from the central directory. */
int listing_zip(zip_t *z, const char *path, EntryVec *ev, char *err, size_t errlen)
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
int listing_dir(const char *root, const char *rel, int depth, EntryVec *ev,
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
            rc = listing_dir(root, relc, depth + 1, ev, err, errlen);
        }
    }
    closedir(d);
    return rc;
}
