/* tests/fuzz/fuzz_jpeg.c — fuzz target: any bytes as a JPEG in an
 * ImageFolder archive. The input is stored (uncompressed) as a/1.jpg and
 * b/2.jpg of a zip made here, so that the whole path of one image runs: the
 * header probe that sizes the table, the pixel and scan caps, the decode
 * with its warnings, CMYK and gray conversion, the final size. Invariant
 * checked: a load either fails with a message (a JPEG that does not decode
 * cleanly is skipped, which leaves no images) or yields both images, one in
 * each class. */
#include "tests/fuzz/fuzz_caps.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *put16(uint8_t *p, unsigned v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); return p + 2; }
static uint8_t *put32(uint8_t *p, uint32_t v) { return put16(put16(p, v & 0xFFFF), v >> 16); }

/* A stored zip of the given entries, all holding the same bytes; its size in *len. */
static uint8_t *stored_zip(const char *const *names, int n, const uint8_t *data, size_t size, size_t *len)
{
    const uint32_t crc = (uint32_t)crc32(crc32(0, NULL, 0), data, (uInt)size);
    uint8_t *z = malloc((size_t)n * (30 + 46 + 16 + size) + 22), *p = z;
    uint32_t off[8];
    if (!z) return NULL;
    for (int i = 0; i < n; i++) {           /* local headers and data */
        const unsigned nl = (unsigned)strlen(names[i]);
        off[i] = (uint32_t)(p - z);
        p = put32(p, 0x04034b50u); p = put16(p, 10); p = put16(p, 0); p = put16(p, 0);
        p = put32(p, 0); p = put32(p, crc); p = put32(p, (uint32_t)size); p = put32(p, (uint32_t)size);
        p = put16(p, nl); p = put16(p, 0);
        memcpy(p, names[i], nl); p += nl;
        memcpy(p, data, size); p += size;
    }
    const uint32_t cd = (uint32_t)(p - z);
    for (int i = 0; i < n; i++) {           /* central directory */
        const unsigned nl = (unsigned)strlen(names[i]);
        p = put32(p, 0x02014b50u); p = put16(p, 20); p = put16(p, 10); p = put16(p, 0); p = put16(p, 0);
        p = put32(p, 0); p = put32(p, crc); p = put32(p, (uint32_t)size); p = put32(p, (uint32_t)size);
        p = put16(p, nl); p = put16(p, 0); p = put16(p, 0); p = put16(p, 0); p = put16(p, 0);
        p = put32(p, 0); p = put32(p, off[i]);
        memcpy(p, names[i], nl); p += nl;
    }
    const uint32_t cdlen = (uint32_t)(p - z) - cd;
    p = put32(p, 0x06054b50u); p = put16(p, 0); p = put16(p, 0); p = put16(p, (unsigned)n);
    p = put16(p, (unsigned)n); p = put32(p, cdlen); p = put32(p, cd); p = put16(p, 0);
    *len = (size_t)(p - z);
    return z;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[2] = {"a/1.jpg", "b/2.jpg"};
    fuzz_caps();
    size_t zl = 0;
    uint8_t *z = stored_zip(names, 2, data, size, &zl);
    if (!z) return 0;
    Dataset ds;
    char err[512] = "";
    int rc = dataset_zip_mem(&ds, z, zl, "fuzz.zip", NULL, err, sizeof err);
    free(z);
    if (rc) {
        if (!err[0]) abort();
        return 0;
    }
    if (ds.n != 2 || ds.num_classes != 2 || ds.labels[0] == ds.labels[1] || ds.h < 1 || ds.w < 1 ||
        (ds.c != 1 && ds.c != 3))
        abort();
    dataset_free(&ds);
    return 0;
}
