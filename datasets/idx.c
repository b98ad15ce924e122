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
 *    a truncated or corrupt gzip stream, label and image counts that differ,
 *    a label outside 0..9, train and test images of different sizes. All are
 *    bad input (2).
 */
#include "datasets/dataset.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

static const char *const fmnist_classes[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};

/* ---- one IDX file -------------------------------------------------------------- */

typedef struct {
    gzFile gz;
    char path[1024];
    uint32_t dims[3];
} IdxFile;

/* Explain why the stream stopped short: a gzip error, or a clean end. */
static int gz_problem(IdxFile *f, const char *what, char *err, size_t errlen)
{
    int zerr = Z_OK;
    const char *msg = gzerror(f->gz, &zerr);
    if (zerr == Z_BUF_ERROR)
        snprintf(err, errlen, "%s: truncated gzip stream (%s)", f->path, what);
    else if (zerr == Z_ERRNO)
        snprintf(err, errlen, "%s: read error: %s", f->path, strerror(errno));
    else if (zerr != Z_OK)
        snprintf(err, errlen, "%s: corrupt gzip data: %s (%s)", f->path, msg, what);
    else
        return 0;
    return 2;
}

/* Read exactly len bytes; returns the count actually read (short on EOF or
 * error, -1 on a zlib error before any byte). */
static int64_t gz_read_all(gzFile gz, uint8_t *dst, uint64_t len)
{
    uint64_t got = 0;
    while (got < len) {
        uint64_t want = len - got;
        if (want > (1u << 30))
            want = 1u << 30;
        int r = gzread(gz, dst + got, (unsigned)want);
        if (r <= 0)
            break;
        got += (uint64_t)r;
    }
    return (int64_t)got;
}

static int idx_header(IdxFile *f, int rank, char *err, size_t errlen);

/* Open DIR/BASE.gz (or DIR/BASE) and read and check its header. */
static int idx_open(IdxFile *f, const char *dir, const char *base, int rank,
                    char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s/%s.gz", dir, base);
    f->gz = gzopen(f->path, "rb");
    if (!f->gz && errno == ENOENT) {
        snprintf(f->path, sizeof f->path, "%s/%s", dir, base);
        f->gz = gzopen(f->path, "rb");
    }
    if (!f->gz) {
        snprintf(err, errlen, "%s/%s.gz: cannot open: %s", dir, base, strerror(errno));
        return 2;
    }
    return idx_header(f, rank, err, errlen);
}

/* Open the len bytes at buf (gzip or not) as the IDX file NAME through an
 * unlinked temporary file (zlib reads from descriptors), and check its header. */
static int idx_open_mem(IdxFile *f, const char *name, const void *buf, size_t len, int rank,
                        char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", name);
    FILE *tmp = tmpfile();
    int fd = -1;
    if (tmp && fwrite(buf, 1, len, tmp) == len && !fflush(tmp) && !fseek(tmp, 0, SEEK_SET))
        fd = dup(fileno(tmp));
    if (tmp)
        fclose(tmp);
    if (fd < 0 || !(f->gz = gzdopen(fd, "rb"))) {
        snprintf(err, errlen, "%s: cannot make a temporary file: %s", name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    return idx_header(f, rank, err, errlen);
}

/* Read and check the header of the open f->gz. */
static int idx_header(IdxFile *f, int rank, char *err, size_t errlen)
{
    gzbuffer(f->gz, 1u << 18);
    uint8_t h[4 + 4 * 3];
    const size_t hlen = 4 + 4 * (size_t)rank;
    int64_t got = gz_read_all(f->gz, h, 4);
    if (got == 4 && h[3] == rank)
        got += gz_read_all(f->gz, h + 4, hlen - 4);
    if (got < 4 || (h[3] == rank && (size_t)got < hlen)) {
        if (gz_problem(f, "inside the IDX header", err, errlen))
            return 2;
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
    int64_t got = gz_read_all(f->gz, dst, len);
    if ((uint64_t)got < len) {
        if (gz_problem(f, "inside the payload", err, errlen))
            return 2;
        snprintf(err, errlen, "%s: payload is %lld bytes but the dimensions say %llu",
                 f->path, (long long)got, (unsigned long long)len);
        return 2;
    }
    uint8_t extra[64];
    int r = gzread(f->gz, extra, sizeof extra);
    if (r > 0) {
        snprintf(err, errlen, "%s: payload is longer than the dimensions say (%llu bytes)",
                 f->path, (unsigned long long)len);
        return 2;
    }
    if (gz_problem(f, "after the payload", err, errlen))
        return 2;
    return 0;
}

static void idx_close(IdxFile *f)
{
    if (f->gz)
        gzclose(f->gz);
    f->gz = NULL;
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
