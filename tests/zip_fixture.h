/* tests/zip_fixture.h — making ImageFolder sources in tests: pixels to a
 * JPEG in memory (libjpeg's compressor) and entries to a zip (libzip,
 * deflate), shared by the data loader suite and the evaluation tests.
 * Header-only (static inline), for tests. */
#ifndef KILN_TESTS_ZIP_FIXTURE_H
#define KILN_TESTS_ZIP_FIXTURE_H

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <zip.h>

/* Compress (h, w, c) pixels to a JPEG in memory (c 4: CMYK, with libjpeg's
 * Adobe marker). */
static inline uint8_t *jpeg_encode(const uint8_t *px, int w, int h, int c, int quality, size_t *len)
{
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    unsigned char *out = NULL;
    unsigned long outlen = 0;
    jpeg_mem_dest(&ci, &out, &outlen);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = c;
    ci.in_color_space = c == 1 ? JCS_GRAYSCALE : c == 4 ? JCS_CMYK : JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)ci.next_scanline * w * c);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    *len = outlen;
    return out;
}

typedef struct {
    const char *name;
    const uint8_t *data; /* NULL with is_dir */
    size_t len;
    int is_dir;
} ZEntry;

/* Write a zip (deflate) holding the entries, in order. */
static inline void write_zip(const char *path, const ZEntry *e, int n)
{
    int zerr;
    zip_t *z = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
    ck_assert_ptr_nonnull(z);
    for (int i = 0; i < n; i++) {
        if (e[i].is_dir) {
            ck_assert_int_ge(zip_dir_add(z, e[i].name, 0), 0);
            continue;
        }
        void *copy = malloc(e[i].len + 1);
        memcpy(copy, e[i].data, e[i].len);
        zip_source_t *s = zip_source_buffer(z, copy, e[i].len, 1);
        ck_assert_ptr_nonnull(s);
        ck_assert_int_ge(zip_file_add(z, e[i].name, s, 0), 0);
    }
    ck_assert_int_eq(zip_close(z), 0);
}

#endif
