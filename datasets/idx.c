/* datasets/idx.c — Fashion-MNIST (and any data set in its file layout) from
 * gzipped IDX files, read with zlib.
 *
 * Contract:
 *  - DIR holds train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
 *    t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (each may also be
 *    present uncompressed, without .gz). DIR NULL: /usr/share/datasets/
 *    fashion-mnist, where Debian's dataset-fashion-mnist installs them.
 *  - The table is the train images followed by the t10k images, gray (c = 1),
 *    n_fixed_test = the t10k count: the package's own test split stays test.
 *  - IDX: 4-byte magic 0x00 0x00 TYPE RANK, then RANK big-endian uint32
 *    dimensions, then the payload. Only TYPE 0x08 (unsigned byte) is read;
 *    images must have rank 3 (N, rows, cols), labels rank 1 (N).
 *  - Every check names the file: bad magic or type, wrong rank, a zero or
 *    oversized dimension, a payload shorter or longer than the dimensions say,
 *    a truncated or corrupt gzip stream, a gzip CRC-32 or length check that
 *    fails, bytes after the gzip data that are not another (valid) member,
 *    label and image counts that differ, a label outside 0..9, train and test
 *    images of different sizes. All are bad input (2).
 *  - A loader (loaders.h): calls only the base.
 */
#include "datasets/loaders.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

static const char *const fmnist_classes[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};

/* ---- one IDX file -------------------------------------------------------------- */

/* An IDX file read through zlib's inflate, member by member: a file that
 * starts with the gzip magic is one gzip member or several concatenated,
 * each checked (CRC-32 and length) by inflate, and nothing but another
 * member may follow one; any other file is read as it is. */
typedef struct {
    FILE *fp;
    z_stream zs;
    int gz, zinit, in_member;
    uint64_t file_off;          /* bytes read from the file so far */
    unsigned char *in;          /* GZ_IN bytes */
    char path[1024];
    uint32_t dims[3];
} IdxFile;

#define GZ_IN (1u << 18)

/* Have at least `need` unread bytes in the input buffer if the file holds
 * them; returns how many there are, or -1 on a read error (message in err). */
static long gz_avail(IdxFile *f, size_t need, char *err, size_t errlen)
{
    if (f->zs.avail_in >= need)
        return (long)f->zs.avail_in;
    if (f->zs.avail_in)
        memmove(f->in, f->zs.next_in, f->zs.avail_in);
    f->zs.next_in = f->in;
    while (f->zs.avail_in < need) {
        size_t r = fread(f->in + f->zs.avail_in, 1, GZ_IN - f->zs.avail_in, f->fp);
        if (r == 0) {
            if (ferror(f->fp)) {
                snprintf(err, errlen, "%s: read error: %s", f->path, strerror(errno));
                return -1;
            }
            break;
        }
        f->zs.avail_in += (uInt)r;
        f->file_off += r;
    }
    return (long)f->zs.avail_in;
}

/* Read up to len bytes of the IDX content into dst; *got says how many (short
 * only at a clean end). Returns 0, or 2 with a message naming the file:
 * truncated or corrupt gzip data (what: where in the IDX file), a CRC-32 or
 * length check that fails, bytes after a member that are not another member.
 * 1 on a read error or when zlib runs out of memory. */
static int idx_read(IdxFile *f, uint8_t *dst, uint64_t len, uint64_t *got, const char *what,
                    char *err, size_t errlen)
{
    *got = 0;
    if (!f->gz) {
        *got = fread(dst, 1, len, f->fp);
        if (*got < len && ferror(f->fp)) {
            snprintf(err, errlen, "%s: read error: %s", f->path, strerror(errno));
            return 1;
        }
        return 0;
    }
    while (*got < len) {
        long a = gz_avail(f, f->in_member ? 1 : 2, err, errlen);
        if (a < 0)
            return 1;
        if (!f->in_member) {
            if (a == 0)
                return 0;   /* the end, right after a whole member */
            if (a < 2 || f->zs.next_in[0] != 0x1f || f->zs.next_in[1] != 0x8b) {
                snprintf(err, errlen, "%s: data after the end of the gzip stream (at byte %llu) that is not "
                         "another gzip member", f->path, (unsigned long long)(f->file_off - f->zs.avail_in));
                return 2;
            }
            inflateReset(&f->zs);
            f->in_member = 1;
        } else if (a == 0) {
            snprintf(err, errlen, "%s: truncated gzip stream (%s)", f->path, what);
            return 2;
        }
        uint64_t want = len - *got;
        f->zs.next_out = dst + *got;
        f->zs.avail_out = want > (1u << 30) ? 1u << 30 : (uInt)want;
        uInt before = f->zs.avail_out;
        int z = inflate(&f->zs, Z_NO_FLUSH);
        *got += before - f->zs.avail_out;
        if (z == Z_STREAM_END)
            f->in_member = 0;
        else if (z == Z_MEM_ERROR) {
            snprintf(err, errlen, "%s: out of memory in zlib", f->path);
            return 1;
        } else if (z == Z_DATA_ERROR && f->zs.msg &&
                   (!strcmp(f->zs.msg, "incorrect data check") || !strcmp(f->zs.msg, "incorrect length check"))) {
            snprintf(err, errlen, "%s: the gzip %s of the data does not match: the file is damaged", f->path,
                     !strcmp(f->zs.msg, "incorrect data check") ? "CRC-32" : "length field");
            return 2;
        } else if (z != Z_OK && z != Z_BUF_ERROR) {
            snprintf(err, errlen, "%s: corrupt gzip data: %s (%s)", f->path, f->zs.msg ? f->zs.msg : "?", what);
            return 2;
        }
    }
    return 0;
}

static int idx_header(IdxFile *f, int rank, char *err, size_t errlen);

/* Open DIR/BASE.gz (or DIR/BASE) and read and check its header. */
static int idx_open(IdxFile *f, const char *dir, const char *base, int rank,
                    char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s/%s.gz", dir, base);
    f->fp = fopen(f->path, "rb");
    if (!f->fp && errno == ENOENT) {
        snprintf(f->path, sizeof f->path, "%s/%s", dir, base);
        f->fp = fopen(f->path, "rb");
    }
    if (!f->fp) {
        snprintf(err, errlen, "%s/%s.gz: cannot open: %s", dir, base, strerror(errno));
        return 2;
    }
    return idx_header(f, rank, err, errlen);
}

/* Open the len bytes at buf (gzip or not) as the IDX file NAME, read in
 * place through a memory stream, and check its header. */
static int idx_open_mem(IdxFile *f, const char *name, const void *buf, size_t len, int rank,
                        char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", name);
    if (len == 0) {             /* a memory stream cannot be empty */
        snprintf(err, errlen, "%s: file ends inside the IDX header (0 bytes)", f->path);
        return 2;
    }
    if (!(f->fp = fmemopen((void *)buf, len, "rb"))) {
        snprintf(err, errlen, "%s: cannot open a memory stream: %s", name, strerror(errno));
        return 1;
    }
    return idx_header(f, rank, err, errlen);
}

/* Set up inflate for the open f->fp (a gzip stream when it starts with the
 * gzip magic, else read as it is), then read and check the IDX header. */
static int idx_header(IdxFile *f, int rank, char *err, size_t errlen)
{
    if (!(f->in = malloc(GZ_IN)) || inflateInit2(&f->zs, 15 + 16) != Z_OK) {
        snprintf(err, errlen, "%s: out of memory", f->path);
        return 1;
    }
    f->zinit = 1;
    long a = gz_avail(f, 2, err, errlen);
    if (a < 0)
        return 1;
    f->gz = a >= 2 && f->in[0] == 0x1f && f->in[1] == 0x8b;
    if (!f->gz)
        rewind(f->fp);
    uint8_t h[4 + 4 * 3];
    const size_t hlen = 4 + 4 * (size_t)rank;
    uint64_t got = 0, more = 0;
    int rc = idx_read(f, h, 4, &got, "inside the IDX header", err, errlen);
    if (!rc && got == 4 && h[3] == rank)
        rc = idx_read(f, h + 4, hlen - 4, &more, "inside the IDX header", err, errlen);
    if (rc)
        return rc;
    got += more;
    if (got < 4 || (h[3] == rank && got < hlen)) {
        snprintf(err, errlen, "%s: file ends inside the IDX header (%d bytes)", f->path, (int)got);
        return 2;
    }
    const uint32_t magic = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (h[0] != 0 || h[1] != 0 || h[2] != 0x08) {
        snprintf(err, errlen, "%s: bad IDX magic 0x%08x (want 0x000008%02x: unsigned bytes, rank %d)",
                 f->path, magic, rank, rank);
        return 2;
    }
    if (h[3] != rank) {
        snprintf(err, errlen, "%s: IDX rank %d, want %d (%s)", f->path, h[3], rank,
                 rank == 3 ? "images: count, rows, cols" : "labels: count");
        return 2;
    }
    for (int d = 0; d < rank; d++) {
        const uint8_t *p = h + 4 + 4 * d;
        f->dims[d] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (f->dims[d] == 0 || f->dims[d] > INT_MAX) {
            snprintf(err, errlen, "%s: IDX dimension %d is %u (want 1..%d)", f->path, d,
                     f->dims[d], INT_MAX);
            return 2;
        }
    }
    return 0;
}

/* Read the payload (exactly len bytes) and check that nothing follows it. */
static int idx_payload(IdxFile *f, uint8_t *dst, uint64_t len, char *err, size_t errlen)
{
    uint64_t got;
    int rc = idx_read(f, dst, len, &got, "inside the payload", err, errlen);
    if (rc)
        return rc;
    if (got < len) {
        snprintf(err, errlen, "%s: payload is %llu bytes but the dimensions say %llu",
                 f->path, (unsigned long long)got, (unsigned long long)len);
        return 2;
    }
    uint8_t extra[64];
    if ((rc = idx_read(f, extra, sizeof extra, &got, "after the payload", err, errlen)))
        return rc;
    if (got > 0) {
        snprintf(err, errlen, "%s: payload is longer than the dimensions say (%llu bytes)",
                 f->path, (unsigned long long)len);
        return 2;
    }
    return 0;
}

static void idx_close(IdxFile *f)
{
    if (f->zinit)
        inflateEnd(&f->zs);
    free(f->in);
    if (f->fp)
        fclose(f->fp);
    memset(f, 0, sizeof *f);
}

/* ---- the loader ------------------------------------------------------------------ */

/* Load from DIR, or (mem not NULL) from the four files' bytes mem[k],
 * mem_len[k] in the order of names[] below, DIR then naming them. */
static int fmnist_load(Dataset *ds, const char *dir, const void *const mem[4],
                       const size_t mem_len[4], char *err, size_t errlen)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(ds, 0, sizeof *ds);
    if (!dir || !*dir)
        dir = FMNIST_DEFAULT_DIR;
    static const char *const names[4] = {
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
    };
    IdxFile f[4];
    memset(f, 0, sizeof f);
    int rc = 0;
    for (int k = 0; k < 4 && !rc; k++)
        rc = mem ? idx_open_mem(&f[k], names[k], mem[k], mem_len[k], k % 2 ? 1 : 3, err, errlen)
                 : idx_open(&f[k], dir, names[k], k % 2 ? 1 : 3, err, errlen);
    if (rc)
        goto done;

    /* Headers agree with each other and the caps before anything is read. */
    for (int k = 0; k < 4; k += 2) {
        if (f[k + 1].dims[0] != f[k].dims[0]) {
            snprintf(err, errlen, "%s: %u labels but %s has %u images", f[k + 1].path,
                     f[k + 1].dims[0], f[k].path, f[k].dims[0]);
            rc = 2;
            goto done;
        }
    }
    if (f[2].dims[1] != f[0].dims[1] || f[2].dims[2] != f[0].dims[2]) {
        snprintf(err, errlen, "%s: images are %ux%u but %s has %ux%u", f[2].path, f[2].dims[1],
                 f[2].dims[2], f[0].path, f[0].dims[1], f[0].dims[2]);
        rc = 2;
        goto done;
    }
    DataLimits lim;
    dataset_get_limits(&lim);
    const uint64_t n_train = f[0].dims[0], n_test = f[2].dims[0];
    const uint64_t hw = (uint64_t)f[0].dims[1] * f[0].dims[2];
    const uint64_t n = n_train + n_test;
    if (hw > lim.max_pixels || n > INT_MAX || n * hw > lim.max_total_bytes) {
        snprintf(err, errlen, "%s: %llu images of %ux%u are over the caps (%llu pixels an image, "
                 "%llu bytes in all)", f[0].path, (unsigned long long)n, f[0].dims[1], f[0].dims[2],
                 (unsigned long long)lim.max_pixels, (unsigned long long)lim.max_total_bytes);
        rc = 2;
        goto done;
    }

    if (dataset_alloc(ds, (int)n, (int)f[0].dims[1], (int)f[0].dims[2], 1, 10)) {
        snprintf(err, errlen, "%s: out of memory for %llu images", dir, (unsigned long long)n);
        rc = 1;
        goto done;
    }
    uint8_t *lab = malloc(n);
    if (!lab) {
        snprintf(err, errlen, "%s: out of memory", dir);
        rc = 1;
        goto done;
    }
    rc = idx_payload(&f[0], ds->pixels, n_train * hw, err, errlen);
    if (!rc)
        rc = idx_payload(&f[2], ds->pixels + n_train * hw, n_test * hw, err, errlen);
    if (!rc)
        rc = idx_payload(&f[1], lab, n_train, err, errlen);
    if (!rc)
        rc = idx_payload(&f[3], lab + n_train, n_test, err, errlen);
    for (uint64_t i = 0; i < n && !rc; i++) {
        if (lab[i] >= 10) {
            const int tr = i < n_train;
            snprintf(err, errlen, "%s: label %d at index %llu is outside the class range 0..9",
                     f[tr ? 1 : 3].path, lab[i], (unsigned long long)(tr ? i : i - n_train));
            rc = 2;
        }
        ds->labels[i] = lab[i];
    }
    free(lab);
    if (rc)
        goto done;

    for (int k = 0; k < 10; k++) {
        ds->class_names[k] = strdup(fmnist_classes[k]);
        if (!ds->class_names[k]) {
            snprintf(err, errlen, "%s: out of memory", dir);
            rc = 1;
            goto done;
        }
    }
    snprintf(ds->source, sizeof ds->source, "fashion-mnist:%s", dir);
    ds->n_fixed_test = (int)n_test;
    ds->skipped_nonimage = 0;
    ds->skipped_corrupt = 0;

done:
    for (int k = 0; k < 4; k++)
        idx_close(&f[k]);
    if (rc) {
        dataset_free(ds);
        memset(ds, 0, sizeof *ds);
        return rc;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ds->decode_seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return 0;
}

int dataset_fashion_mnist(Dataset *ds, const char *dir, const DataOptions *opt,
                          char *err, size_t errlen)
{
    (void)opt; /* dataset_open applies per_class and the resize afterwards */
    return fmnist_load(ds, dir, NULL, NULL, err, errlen);
}

int dataset_fashion_mnist_mem(Dataset *ds, const void *const data[4], const size_t len[4],
                              char *err, size_t errlen)
{
    return fmnist_load(ds, "memory", data, len, err, errlen);
}
