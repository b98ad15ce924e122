/* tests/test_data.c — the data loaders: ImageFolder zips and trees, gzipped
 * IDX, resize, per-class subsets, the split on loaded data, and every bad
 * input the loaders must refuse (exit code 2, a message naming the archive
 * and the entry).
 *
 * Every file is made here, in a temporary folder: JPEGs with libjpeg's
 * compressor, zips with libzip (then patched byte-wise where a hostile
 * archive is needed: the zip fields are at fixed offsets of the local and
 * central headers), IDX files with zlib. Fashion-MNIST is read from
 * /usr/share/datasets/fashion-mnist when the Debian package is installed and
 * skipped, saying so, when not. `kiln data` is run when KILN_BIN is built.
 */
#include "datasets/dataset.h"

#include <check.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jpeglib.h>
#include <zip.h>
#include <zlib.h>

#include "zip_fixture.h"
#include "tests/kiln_cli.h"
#include "tests/suite_main.h"

static char g_tmp[512];

/* A path inside the temporary folder. */
static const char *tpath(char *buf, const char *name)
{
    snprintf(buf, PATH_MAX, "%s/%s", g_tmp, name);
    return buf;
}

/* ---- files: JPEG, zip, tree ------------------------------------------------------- */

static uint8_t *solid_jpeg(int w, int h, const uint8_t rgb[3], size_t *len)
{
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h; i++)
        memcpy(px + 3 * i, rgb, 3);
    uint8_t *j = jpeg_encode(px, w, h, 3, 95, len);
    free(px);
    return j;
}

/* R rises left to right, G top to bottom, B constant. */
static uint8_t grad_value(int x, int y, int k, int w, int h)
{
    return (uint8_t)(k == 0 ? 255 * x / (w - 1) : k == 1 ? 255 * y / (h - 1) : 100);
}

static uint8_t *gradient_jpeg(int w, int h, size_t *len)
{
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < 3; k++)
                px[(y * w + x) * 3 + k] = grad_value(x, y, k, w, h);
    uint8_t *j = jpeg_encode(px, w, h, 3, 95, len);
    free(px);
    return j;
}

/* The test's own decode (plain libjpeg, RGB out), for reference values. */
static uint8_t *ref_decode(const uint8_t *buf, size_t len, int *w, int *h)
{
    struct jpeg_decompress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, buf, (unsigned long)len);
    jpeg_read_header(&ci, TRUE);
    ci.out_color_space = JCS_RGB;
    jpeg_start_decompress(&ci);
    *w = (int)ci.output_width;
    *h = (int)ci.output_height;
    uint8_t *px = malloc((size_t)*w * *h * 3);
    while (ci.output_scanline < ci.output_height) {
        JSAMPROW row = px + (size_t)ci.output_scanline * *w * 3;
        jpeg_read_scanlines(&ci, &row, 1);
    }
    jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    return px;
}

/* Reference bilinear (half-pixel centres, clamp), in double, one channel. */
static double ref_bilinear(const uint8_t *src, int sh, int sw, int sc, int k, int dh, int dw,
                           int y, int x)
{
    double sy = (y + 0.5) * sh / dh - 0.5, sx = (x + 0.5) * sw / dw - 0.5;
    sy = sy < 0 ? 0 : sy;
    sx = sx < 0 ? 0 : sx;
    int y0 = (int)sy, x0 = (int)sx;
    y0 = y0 > sh - 1 ? sh - 1 : y0;
    x0 = x0 > sw - 1 ? sw - 1 : x0;
    int y1 = y0 + 1 < sh ? y0 + 1 : sh - 1, x1 = x0 + 1 < sw ? x0 + 1 : sw - 1;
    double fy = sy - y0, fx = sx - x0;
#define P(yy, xx) ((double)src[((size_t)(yy) * sw + (xx)) * sc + k])
    return (1 - fy) * ((1 - fx) * P(y0, x0) + fx * P(y0, x1)) + fy * ((1 - fx) * P(y1, x0) + fx * P(y1, x1));
#undef P
}

/* Write the same entries as files and folders under root. */
static void write_tree(const char *root, const ZEntry *e, int n)
{
    mkdir(root, 0755);
    for (int i = 0; i < n; i++) {
        char p[PATH_MAX];
        ck_assert_int_lt(snprintf(p, sizeof p, "%s/%s", root, e[i].name), (int)sizeof p);
        for (char *s = p + strlen(root) + 1; *s; s++) /* parent folders */
            if (*s == '/') {
                *s = 0;
                mkdir(p, 0755);
                *s = '/';
            }
        if (e[i].is_dir)
            continue;
        FILE *f = fopen(p, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(e[i].data, 1, e[i].len, f), e[i].len);
        fclose(f);
    }
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len + 1);
    ck_assert_uint_eq(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static void spit(const char *path, const uint8_t *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, len, f), len);
    fclose(f);
}

static uint32_t le32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }

enum { PATCH_FLAGS_OR, PATCH_METHOD, PATCH_USIZE, PATCH_NAME_BYTE, PATCH_DATA_XOR };

/* Patch a field of every entry whose name starts with prefix, in both the
 * central and the local header (zip format offsets: central flags +8,
 * method +10, uncompressed size +24, name +46, local header offset +42;
 * local flags +6, method +8, uncompressed size +22, name +30, data after the
 * name and the extra field). For PATCH_NAME_BYTE and PATCH_DATA_XOR, arg is
 * the byte index in the name or the stored data. Returns entries hit. */
static int zip_patch(const char *path, const char *prefix, int what, uint32_t value, int arg)
{
    size_t len;
    uint8_t *b = slurp(path, &len);
    const uint8_t *eocd = b + len - 22; /* the tests write no archive comment */
    ck_assert_uint_eq(le32(eocd), 0x06054b50u);
    const int count = le16(eocd + 10);
    uint32_t off = le32(eocd + 16);
    int hit = 0;
    for (int i = 0; i < count; i++) {
        uint8_t *c = b + off;
        ck_assert_uint_eq(le32(c), 0x02014b50u);
        const int nl = le16(c + 28), xl = le16(c + 30), cl = le16(c + 32);
        uint8_t *l = b + le32(c + 42);
        ck_assert_uint_eq(le32(l), 0x04034b50u);
        if (nl >= (int)strlen(prefix) && !memcmp(c + 46, prefix, strlen(prefix))) {
            hit++;
            switch (what) {
            case PATCH_FLAGS_OR:
                put16(c + 8, (uint16_t)(le16(c + 8) | value));
                put16(l + 6, (uint16_t)(le16(l + 6) | value));
                break;
            case PATCH_METHOD:
                put16(c + 10, (uint16_t)value);
                put16(l + 8, (uint16_t)value);
                break;
            case PATCH_USIZE:
                put32(c + 24, value);
                put32(l + 22, value);
                break;
            case PATCH_NAME_BYTE:
                c[46 + arg] = (uint8_t)value;
                l[30 + arg] = (uint8_t)value;
                break;
            case PATCH_DATA_XOR:
                l[30 + le16(l + 26) + le16(l + 28) + arg] ^= (uint8_t)value;
                break;
            }
        }
        off += 46 + nl + xl + cl;
    }
    spit(path, b, len);
    free(b);
    return hit;
}

/* ---- the EuroSAT-layout archive ---------------------------------------------------- */

static const char *const CLS[5] = {"AnnualCrop", "Forest", "Highway", "River", "lake"};
static const int CLS_COUNT[5] = {10, 12, 8, 10, 10}; /* decodable images per class */
static const uint8_t CLS_RGB[5][3] = {
    {200, 40, 90}, {30, 160, 40}, {120, 120, 120}, {20, 60, 200}, {240, 230, 20},
};

/* Image i of class k: the class's red and green, blue 10 + 20 i, so every
 * image differs from every other. */
static void image_rgb(int k, int i, uint8_t rgb[3])
{
    rgb[0] = CLS_RGB[k][0];
    rgb[1] = CLS_RGB[k][1];
    rgb[2] = (uint8_t)(10 + 20 * i);
}

/* Entries: wrapper/CLASS/CLASS_ii.jpg, solid image_rgb colours, every third
 * one 64x64 and the rest 32x32; Highway_00 a 64x64 gradient; Forest_99.jpg a
 * truncated JPEG; plus __MACOSX, .DS_Store and a text file (3 non-images). */
static int eurosat_entries(ZEntry *e, const char *wrap, int corrupt, char names[][96])
{
    int n = 0;
    const char *w = wrap ? wrap : "";
    const char *sep = wrap ? "/" : "";
    if (wrap) {
        snprintf(names[n], 96, "%s/", wrap);
        e[n] = (ZEntry){names[n], NULL, 0, 1};
        n++;
    }
    for (int k = 0; k < 5; k++) {
        snprintf(names[n], 96, "%s%s%s/", w, sep, CLS[k]);
        e[n] = (ZEntry){names[n], NULL, 0, 1};
        n++;
        for (int i = 0; i < CLS_COUNT[k]; i++) {
            size_t len;
            uint8_t *j, rgb[3];
            image_rgb(k, i, rgb);
            if (k == 2 && i == 0)
                j = gradient_jpeg(64, 64, &len);
            else
                j = solid_jpeg(i % 3 == 0 ? 64 : 32, i % 3 == 0 ? 64 : 32, rgb, &len);
            snprintf(names[n], 96, "%s%s%s/%s_%02d.jpg", w, sep, CLS[k], CLS[k], i);
            e[n] = (ZEntry){names[n], j, len, 0};
            n++;
        }
    }
    if (corrupt) {
        size_t len;
        uint8_t *j = gradient_jpeg(64, 64, &len); /* cut inside the entropy-coded data */
        snprintf(names[n], 96, "%s%sForest/Forest_99.jpg", w, sep);
        e[n] = (ZEntry){names[n], j, len * 2 / 3, 0};
        n++;
    }
    static const uint8_t text[] = "EuroSAT-like test archive\n";
    snprintf(names[n], 96, "__MACOSX/%s%sForest/._Forest_1.jpg", w, sep);
    e[n] = (ZEntry){names[n], text, sizeof text - 1, 0};
    n++;
    snprintf(names[n], 96, "%s%s.DS_Store", w, sep);
    e[n] = (ZEntry){names[n], text, sizeof text - 1, 0};
    n++;
    snprintf(names[n], 96, "%s%sreadme.txt", w, sep);
    e[n] = (ZEntry){names[n], text, sizeof text - 1, 0};
    n++;
    return n;
}

static void free_entries(ZEntry *e, int n)
{
    for (int i = 0; i < n; i++)
        if (!e[i].is_dir && e[i].data && e[i].len > 40) /* the JPEGs */
            free((void *)e[i].data);
}

/* Build the EuroSAT-layout zip at tmp/name. */
static const char *eurosat_zip(char *buf, const char *name, const char *wrap, int corrupt)
{
    ZEntry e[96];
    char names[96][96];
    int n = eurosat_entries(e, wrap, corrupt, names);
    write_zip(tpath(buf, name), e, n);
    free_entries(e, n);
    return buf;
}

static void check_eurosat(const Dataset *ds, int corrupt)
{
    ck_assert_int_eq(ds->num_classes, 5);
    for (int k = 0; k < 5; k++) /* bytewise: uppercase before "lake" */
        ck_assert_str_eq(ds->class_names[k], CLS[k]);
    ck_assert_int_eq(ds->n, 50);
    int count[5] = {0};
    for (int i = 0; i < ds->n; i++) {
        ck_assert_int_ge(ds->labels[i], 0);
        ck_assert_int_lt(ds->labels[i], 5);
        if (i > 0) /* ordered by class */
            ck_assert_int_ge(ds->labels[i], ds->labels[i - 1]);
        count[ds->labels[i]]++;
    }
    for (int k = 0; k < 5; k++)
        ck_assert_int_eq(count[k], CLS_COUNT[k]);
    ck_assert_int_eq(ds->skipped_nonimage, 3);
    ck_assert_int_eq(ds->skipped_corrupt, corrupt);
    ck_assert_int_eq(ds->n_fixed_test, 0);
}

/* ---- tests: resize and subsets ---------------------------------------------------- */

START_TEST(resize_exact_values)
{
    /* 1x2 -> 1x4: half-pixel centres give 0, 25, 75, 100. */
    const uint8_t src[2] = {0, 100};
    uint8_t dst[4];
    image_resize(dst, 1, 4, 1, src, 1, 2, 1);
    ck_assert_int_eq(dst[0], 0);
    ck_assert_int_eq(dst[1], 25);
    ck_assert_int_eq(dst[2], 75);
    ck_assert_int_eq(dst[3], 100);
    /* 2x2 -> 1x1: the centre is the mean, (10+20+30+41)/4 = 25.25 -> 25. */
    const uint8_t q[4] = {10, 20, 30, 41};
    image_resize(dst, 1, 1, 1, q, 2, 2, 1);
    ck_assert_int_eq(dst[0], 25);
    /* 4 -> 2: each output averages a pair: (0+10)/2, (20+31)/2 = 5, 25.5 -> 26. */
    const uint8_t r[4] = {0, 10, 20, 31};
    image_resize(dst, 1, 2, 1, r, 1, 4, 1);
    ck_assert_int_eq(dst[0], 5);
    ck_assert_int_eq(dst[1], 26);
    /* Same size copies. */
    uint8_t id[4];
    image_resize(id, 2, 2, 1, q, 2, 2, 1);
    ck_assert_mem_eq(id, q, 4);
}
END_TEST

START_TEST(resize_channels)
{
    const uint8_t g[2] = {7, 200};
    uint8_t rgb[6];
    image_resize(rgb, 1, 2, 3, g, 1, 2, 1);
    const uint8_t want[6] = {7, 7, 7, 200, 200, 200};
    ck_assert_mem_eq(rgb, want, 6);
    /* Luma of (255, 0, 0) is 0.299 * 255 = 76.2 -> 76; of (0, 255, 0) 149.7 -> 150;
     * of (10, 20, 30): 2.99 + 11.74 + 3.42 = 18.15 -> 18. */
    const uint8_t c3[9] = {255, 0, 0, 0, 255, 0, 10, 20, 30};
    uint8_t l[3];
    image_resize(l, 1, 3, 1, c3, 1, 3, 3);
    ck_assert_int_eq(l[0], 76);
    ck_assert_int_eq(l[1], 150);
    ck_assert_int_eq(l[2], 18);
}
END_TEST

START_TEST(resize_all_table)
{
    Dataset ds;
    memset(&ds, 0, sizeof ds);
    ck_assert_int_eq(dataset_alloc(&ds, 2, 1, 2, 1, 1), 0);
    const uint8_t px[4] = {0, 100, 50, 50};
    memcpy(ds.pixels, px, 4);
    ds.labels[0] = ds.labels[1] = 0;
    ck_assert_int_eq(dataset_resize_all(&ds, 1, 4, 3), 0);
    ck_assert_int_eq(ds.h, 1);
    ck_assert_int_eq(ds.w, 4);
    ck_assert_int_eq(ds.c, 3);
    const uint8_t want[24] = {0, 0, 0, 25, 25, 25, 75, 75, 75, 100, 100, 100,
                              50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50};
    ck_assert_mem_eq(ds.pixels, want, 24);
    dataset_free(&ds);
}
END_TEST

/* A table of n images whose first pixel is the image's index. */
static void tagged_table(Dataset *ds, int n, int k, int fixed_test)
{
    memset(ds, 0, sizeof *ds);
    ck_assert_int_eq(dataset_alloc(ds, n, 1, 1, 1, k), 0);
    for (int i = 0; i < n; i++) {
        ds->pixels[i] = (uint8_t)i;
        ds->labels[i] = i % k;
    }
    for (int c = 0; c < k; c++) {
        char nm[16];
        snprintf(nm, sizeof nm, "c%d", c);
        ds->class_names[c] = strdup(nm);
    }
    ds->n_fixed_test = fixed_test;
}

START_TEST(take_per_class)
{
    Dataset a, b, c;
    tagged_table(&a, 100, 4, 20); /* train part 80 (20 a class), test part 20 (5 a class) */
    tagged_table(&b, 100, 4, 20);
    tagged_table(&c, 100, 4, 20);
    ck_assert_int_eq(dataset_take_per_class(&a, 6, 42), 0);
    ck_assert_int_eq(dataset_take_per_class(&b, 6, 42), 0);
    ck_assert_int_eq(dataset_take_per_class(&c, 6, 43), 0);
    ck_assert_int_eq(a.n, 4 * 6 + 20); /* the test part has 5 a class: all kept */
    ck_assert_int_eq(a.n_fixed_test, 20);
    int count[4] = {0};
    for (int i = 0; i < a.n; i++) {
        ck_assert_int_eq(a.labels[i], a.pixels[i] % 4);        /* label follows image */
        if (i > 0)
            ck_assert_int_gt(a.pixels[i], a.pixels[i - 1]);    /* order kept */
        if (i < a.n - a.n_fixed_test) {
            ck_assert_int_lt(a.pixels[i], 80);
            count[a.labels[i]]++;
        } else {
            ck_assert_int_ge(a.pixels[i], 80);
        }
    }
    for (int k = 0; k < 4; k++)
        ck_assert_int_eq(count[k], 6);
    ck_assert_mem_eq(a.pixels, b.pixels, (size_t)a.n);          /* same seed, same pick */
    ck_assert_int_ne(memcmp(a.pixels, c.pixels, (size_t)a.n), 0); /* another seed differs */
    /* Taking again with a larger N keeps everything. */
    ck_assert_int_eq(dataset_take_per_class(&a, 100, 1), 0);
    ck_assert_int_eq(a.n, 44);
    dataset_free(&a);
    dataset_free(&b);
    dataset_free(&c);
}
END_TEST

START_TEST(escape_names)
{
    char out[64];
    ck_assert_str_eq(dataset_escape(out, sizeof out, "Forest", 6), "Forest");
    ck_assert_str_eq(dataset_escape(out, sizeof out, "a\x01" "b\x7f", 4), "a\\x01b\\x7f");
    ck_assert_str_eq(dataset_escape(out, sizeof out, "x\\y", 3), "x\\\\y");
    ck_assert_str_eq(dataset_escape(out, sizeof out, "caf\xc3\xa9", 5), "caf\xc3\xa9"); /* UTF-8 kept */
    ck_assert_str_eq(dataset_escape(out, sizeof out, "bad\xff\xc3", 5), "bad\\xff\\xc3");
    ck_assert_str_eq(dataset_escape(out, sizeof out, "n\0l", 3), "n\\x00l");
    char small[8];
    ck_assert_str_eq(dataset_escape(small, sizeof small, "abcdefghij", 10), "abcd...");
}
END_TEST

/* ---- tests: the EuroSAT-layout archive --------------------------------------------- */

START_TEST(zip_eurosat_layout)
{
    char zp[PATH_MAX], err[1024];
    eurosat_zip(zp, "eurosat.zip", "2750", 1);
    Dataset ds;
    const DataOptions opt = {16, 16, 3, 0, 0};
    ck_assert_int_eq(dataset_zip(&ds, zp, &opt, err, sizeof err), 0);
    check_eurosat(&ds, 1);
    ck_assert_int_eq(ds.h, 16);
    ck_assert_int_eq(ds.w, 16);
    ck_assert_int_eq(ds.c, 3);
    ck_assert_ptr_nonnull(strstr(ds.source, "eurosat.zip"));
    /* Solid images stay their colour within JPEG error, whatever their size:
     * image j of class k is at offset(k) + j (ordered by class, then name). */
    const size_t isz = 16 * 16 * 3;
    const int highway0 = CLS_COUNT[0] + CLS_COUNT[1]; /* Highway_00, the gradient */
    for (int k = 0, at = 0; k < 5; at += CLS_COUNT[k++])
        for (int i = 0; i < CLS_COUNT[k]; i++) {
            if (at + i == highway0)
                continue;
            uint8_t rgb[3];
            image_rgb(k, i, rgb);
            const uint8_t *p = ds.pixels + isz * (at + i);
            ck_assert_int_eq(ds.labels[at + i], k);
            for (size_t q = 0; q < isz; q++)
                ck_assert_int_le(abs((int)p[q] - rgb[q % 3]), 4);
        }
    /* The gradient: against the test's own decode + reference bilinear (±1),
     * and against the analytic gradient (JPEG error, ±8). */
    size_t jl;
    uint8_t *j = gradient_jpeg(64, 64, &jl);
    int w, h;
    uint8_t *ref = ref_decode(j, jl, &w, &h);
    ck_assert_int_eq(w, 64);
    ck_assert_int_eq(h, 64);
    const uint8_t *p = ds.pixels + isz * highway0;
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++)
            for (int k = 0; k < 3; k++) {
                double want = ref_bilinear(ref, 64, 64, 3, k, 16, 16, y, x);
                ck_assert_double_le(fabs(p[(y * 16 + x) * 3 + k] - want), 1.0);
                /* Output x samples source 4x + 1.5: value 255 * (4x + 1.5) / 63. */
                double ideal = k == 0 ? 255.0 * (4 * x + 1.5) / 63 : k == 1 ? 255.0 * (4 * y + 1.5) / 63 : 100;
                ck_assert_double_le(fabs(p[(y * 16 + x) * 3 + k] - ideal), 8.0);
            }
    free(ref);
    free(j);
    dataset_free(&ds);
}
END_TEST

START_TEST(zip_native_size_is_most_common)
{
    char zp[PATH_MAX], err[1024];
    eurosat_zip(zp, "native.zip", "2750", 0);
    Dataset ds;
    const DataOptions opt = {0, 0, 0, 0, 0};
    ck_assert_int_eq(dataset_zip(&ds, zp, &opt, err, sizeof err), 0);
    check_eurosat(&ds, 0);
    /* 32x32 outnumbers 64x64 (every third image), so 32x32 is kept. */
    ck_assert_int_eq(ds.h, 32);
    ck_assert_int_eq(ds.w, 32);
    ck_assert_int_eq(ds.c, 3);
    /* AnnualCrop_00 was 64x64 and was resized: still its colour. */
    uint8_t rgb[3];
    image_rgb(0, 0, rgb);
    for (int q = 0; q < 32 * 32 * 3; q++)
        ck_assert_int_le(abs((int)ds.pixels[q] - rgb[q % 3]), 4);
    dataset_free(&ds);
}
END_TEST

START_TEST(zip_wrappers_and_tree_agree)
{
    char zp[PATH_MAX], err[1024];
    const DataOptions opt = {8, 8, 3, 0, 0};
    Dataset ref;
    ck_assert_int_eq(dataset_zip(&ref, eurosat_zip(zp, "w1.zip", "2750", 1), &opt, err, sizeof err), 0);
    Dataset ds[3];
    ck_assert_int_eq(dataset_zip(&ds[0], eurosat_zip(zp, "w2.zip", "EuroSAT_RGB", 1), &opt, err, sizeof err), 0);
    ck_assert_int_eq(dataset_zip(&ds[1], eurosat_zip(zp, "w3.zip", NULL, 1), &opt, err, sizeof err), 0);
    /* The same tree unpacked on disk, read with dir:. */
    ZEntry e[96];
    char names[96][96];
    int n = eurosat_entries(e, "2750", 1, names);
    write_tree(tpath(zp, "tree"), e, n);
    free_entries(e, n);
    ck_assert_int_eq(dataset_dir(&ds[2], zp, &opt, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(ds[2].source, "dir:"));
    for (int v = 0; v < 3; v++) {
        check_eurosat(&ds[v], 1);
        ck_assert_mem_eq(ds[v].labels, ref.labels, sizeof(int32_t) * (size_t)ref.n);
        ck_assert_mem_eq(ds[v].pixels, ref.pixels, (size_t)ref.n * 8 * 8 * 3);
        dataset_free(&ds[v]);
    }
    dataset_free(&ref);
}
END_TEST

START_TEST(zip_per_class_before_decode)
{
    char zp[PATH_MAX], err[1024];
    eurosat_zip(zp, "pc.zip", "2750", 0);
    Dataset full, full8, picked, again, other;
    const DataOptions all = {8, 8, 3, 0, 7};
    const DataOptions pc = {8, 8, 3, 4, 7};
    const DataOptions pc2 = {8, 8, 3, 4, 8};
    ck_assert_int_eq(dataset_zip(&full, zp, &all, err, sizeof err), 0);
    ck_assert_int_eq(dataset_zip(&full8, zp, &all, err, sizeof err), 0);
    ck_assert_int_eq(dataset_zip(&picked, zp, &pc, err, sizeof err), 0);
    ck_assert_int_eq(dataset_zip(&again, zp, &pc, err, sizeof err), 0);
    ck_assert_int_eq(dataset_zip(&other, zp, &pc2, err, sizeof err), 0);
    ck_assert_int_eq(picked.n, 20);
    /* Picking from the listing = picking from the decoded table. */
    ck_assert_int_eq(dataset_take_per_class(&full, 4, 7), 0);
    ck_assert_int_eq(full.n, 20);
    ck_assert_mem_eq(full.labels, picked.labels, sizeof(int32_t) * 20);
    ck_assert_mem_eq(full.pixels, picked.pixels, 20 * 8 * 8 * 3);
    ck_assert_mem_eq(again.pixels, picked.pixels, 20 * 8 * 8 * 3);
    /* Every image differs (blue channel), so pixels show which were picked:
     * another seed picks others, again the same as the decoded-table pick. */
    ck_assert_int_eq(other.n, 20);
    ck_assert_int_ne(memcmp(other.pixels, picked.pixels, 20 * 8 * 8 * 3), 0);
    ck_assert_int_eq(dataset_take_per_class(&full8, 4, 8), 0);
    ck_assert_mem_eq(full8.pixels, other.pixels, 20 * 8 * 8 * 3);
    dataset_free(&full8);
    dataset_free(&full);
    dataset_free(&picked);
    dataset_free(&again);
    dataset_free(&other);
}
END_TEST

START_TEST(split_stratified_and_reproducible)
{
    char zp[PATH_MAX], err[1024];
    eurosat_zip(zp, "split.zip", "2750", 1);
    const DataOptions opt = {8, 8, 3, 0, 0};
    Dataset a, b;
    ck_assert_int_eq(dataset_zip(&a, zp, &opt, err, sizeof err), 0);
    ck_assert_int_eq(dataset_zip(&b, zp, &opt, err, sizeof err), 0);
    Split s1, s2, s3;
    ck_assert_int_eq(dataset_split(&a, 1234, &s1), 0);
    ck_assert_int_eq(dataset_split(&b, 1234, &s2), 0);
    ck_assert_int_eq(dataset_split(&a, 99, &s3), 0);
    /* Two loads, one seed: the same split. */
    ck_assert_int_eq(s1.n_train, s2.n_train);
    ck_assert_int_eq(s1.n_val, s2.n_val);
    ck_assert_int_eq(s1.n_test, s2.n_test);
    ck_assert_mem_eq(s1.train, s2.train, sizeof(int) * (size_t)s1.n_train);
    ck_assert_mem_eq(s1.val, s2.val, sizeof(int) * (size_t)s1.n_val);
    ck_assert_mem_eq(s1.test, s2.test, sizeof(int) * (size_t)s1.n_test);
    /* A partition of the 50 images, stratified per class. */
    ck_assert_int_eq(s1.n_train + s1.n_val + s1.n_test, 50);
    int seen[50] = {0}, part[3][5] = {{0}};
    const int *lists[3] = {s1.train, s1.val, s1.test};
    const int sizes[3] = {s1.n_train, s1.n_val, s1.n_test};
    for (int l = 0; l < 3; l++)
        for (int i = 0; i < sizes[l]; i++) {
            seen[lists[l][i]]++;
            part[l][a.labels[lists[l][i]]]++;
        }
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(seen[i], 1);
    for (int k = 0; k < 5; k++) {
        const double m = CLS_COUNT[k];
        ck_assert_double_le(fabs(part[0][k] - 0.8 * m), 1.0);
        ck_assert_double_le(fabs(part[1][k] - 0.1 * m), 1.0);
        ck_assert_int_ge(part[1][k], 1);
        ck_assert_int_ge(part[2][k], 1);
    }
    /* Another seed: another split (50 images, the chance of equality is nil). */
    ck_assert_int_ne(memcmp(s1.train, s3.train, sizeof(int) * (size_t)s1.n_train), 0);
    split_free(&s1);
    split_free(&s2);
    split_free(&s3);
    dataset_free(&a);
    dataset_free(&b);
}
END_TEST

/* ---- tests: bad archives ---------------------------------------------------------- */

/* A valid small archive: data/A (2 images), data/B (1 image), plus extra. */
static const char *small_zip(char *buf, const char *name, const ZEntry *extra, int nextra)
{
    ZEntry e[16];
    size_t la, lb;
    uint8_t *ja = solid_jpeg(16, 16, CLS_RGB[0], &la), *jb = solid_jpeg(16, 16, CLS_RGB[1], &lb);
    int n = 0;
    e[n++] = (ZEntry){"data/A/a1.jpg", ja, la, 0};
    e[n++] = (ZEntry){"data/A/a2.jpg", ja, la, 0};
    e[n++] = (ZEntry){"data/B/b1.jpg", jb, lb, 0};
    for (int i = 0; i < nextra; i++)
        e[n++] = extra[i];
    write_zip(tpath(buf, name), e, n);
    free(ja);
    free(jb);
    return buf;
}

/* Load and expect bad input naming the archive and (when given) the entry. */
static void expect_bad(const char *zp, const char *entry, const char *what)
{
    char err[1024];
    Dataset ds;
    const DataOptions opt = {8, 8, 3, 0, 0};
    int rc = dataset_zip(&ds, zp, &opt, err, sizeof err);
    if (getenv("KILN_TEST_VERBOSE"))
        printf("bad input: %s\n", err);
    ck_assert_msg(rc == 2, "rc %d for %s (%s)", rc, zp, rc ? err : "loaded");
    ck_assert_msg(strstr(err, zp) != NULL, "message does not name the archive: %s", err);
    if (entry)
        ck_assert_msg(strstr(err, entry) != NULL, "message does not name '%s': %s", entry, err);
    ck_assert_msg(strstr(err, what) != NULL, "message does not say '%s': %s", what, err);
    ck_assert_int_eq(ds.n, 0);
    ck_assert_ptr_null(ds.pixels);
}

START_TEST(bad_not_a_zip)
{
    char zp[PATH_MAX];
    static const uint8_t text[] = "this is a text file, not a zip archive\n";
    spit(tpath(zp, "text.zip"), text, sizeof text - 1);
    expect_bad(zp, NULL, "not a zip");
    expect_bad(tpath(zp, "missing.zip"), NULL, "No such file");
}
END_TEST

START_TEST(bad_truncated_central_directory)
{
    char zp[PATH_MAX], zq[PATH_MAX];
    small_zip(zp, "trunc.zip", NULL, 0);
    size_t len;
    uint8_t *b = slurp(zp, &len);
    const uint32_t cdoff = le32(b + len - 22 + 16), cdsize = le32(b + len - 22 + 12);
    /* Cut inside the central directory: the end record is gone. */
    spit(tpath(zq, "trunc-cut.zip"), b, cdoff + cdsize / 2);
    expect_bad(zq, NULL, "not a zip");
    /* Keep the end record but drop the second half of the central directory. */
    uint8_t *c = malloc(len);
    const size_t keep = cdoff + cdsize / 2;
    memcpy(c, b, keep);
    memcpy(c + keep, b + len - 22, 22);
    spit(zp, c, keep + 22);
    expect_bad(zp, NULL, "truncated");
    free(b);
    free(c);
}
END_TEST

START_TEST(bad_name_dotdot)
{
    char zp[PATH_MAX];
    size_t l;
    uint8_t *j = solid_jpeg(8, 8, CLS_RGB[2], &l);
    const ZEntry x = {"data/../../etc/evil.jpg", j, l, 0};
    expect_bad(small_zip(zp, "dotdot.zip", &x, 1), "data/../../etc/evil.jpg", "traversal");
    free(j);
}
END_TEST

START_TEST(bad_name_absolute)
{
    char zp[PATH_MAX];
    size_t l;
    uint8_t *j = solid_jpeg(8, 8, CLS_RGB[2], &l);
    const ZEntry x = {"/tmp/A/evil.jpg", j, l, 0};
    expect_bad(small_zip(zp, "abs.zip", &x, 1), "/tmp/A/evil.jpg", "absolute");
    free(j);
}
END_TEST

START_TEST(bad_name_backslash)
{
    char zp[PATH_MAX];
    size_t l;
    uint8_t *j = solid_jpeg(8, 8, CLS_RGB[2], &l);
    const ZEntry x = {"data\\A\\evil.jpg", j, l, 0};
    /* The name is printed escaped: each backslash doubled. */
    expect_bad(small_zip(zp, "bs.zip", &x, 1), "data\\\\A\\\\evil.jpg", "backslash");
    free(j);
}
END_TEST

START_TEST(bad_name_nul)
{
    char zp[PATH_MAX];
    size_t l;
    uint8_t *j = solid_jpeg(8, 8, CLS_RGB[2], &l);
    const ZEntry x = {"data/A/evilQname.jpg", j, l, 0};
    small_zip(zp, "nul.zip", &x, 1);
    ck_assert_int_eq(zip_patch(zp, "data/A/evilQ", PATCH_NAME_BYTE, 0, 11), 1);
    expect_bad(zp, "data/A/evil\\x00name.jpg", "NUL");
    free(j);
}
END_TEST

START_TEST(bad_entry_declared_over_cap)
{
    char zp[PATH_MAX];
    small_zip(zp, "bigdecl.zip", NULL, 0);
    /* 100 MiB declared, over the default 64 MiB per-entry cap. */
    ck_assert_int_eq(zip_patch(zp, "data/B/b1.jpg", PATCH_USIZE, 100u << 20, 0), 1);
    expect_bad(zp, "data/B/b1.jpg", "per-entry cap");
}
END_TEST

START_TEST(bad_entry_actual_over_declared)
{
    char zp[PATH_MAX];
    small_zip(zp, "bomb.zip", NULL, 0);
    /* Declares 100 bytes, inflates to several hundred: a lying entry. */
    ck_assert_int_eq(zip_patch(zp, "data/A/a2.jpg", PATCH_USIZE, 100, 0), 1);
    expect_bad(zp, "data/A/a2.jpg", "more than its declared 100 bytes");
}
END_TEST

START_TEST(bad_entry_actual_over_cap)
{
    /* With a 2,000-byte per-entry cap: an entry declaring 1,500 bytes that
     * holds more is stopped at 1,501 bytes read. */
    char zp[PATH_MAX];
    uint8_t *px = malloc(48 * 48 * 3);
    for (int i = 0; i < 48 * 48 * 3; i++)
        px[i] = (uint8_t)(i * 7919 % 251); /* noise: compresses badly */
    size_t l;
    uint8_t *j = jpeg_encode(px, 48, 48, 3, 95, &l);
    ck_assert_uint_gt(l, 2000);
    const ZEntry x = {"data/B/noise.jpg", j, l, 0};
    small_zip(zp, "capped.zip", &x, 1);
    DataLimits lim;
    dataset_get_limits(&lim);
    lim.max_entry_bytes = 2000;
    dataset_set_limits(&lim);
    expect_bad(zp, "data/B/noise.jpg", "per-entry cap"); /* declared over the cap */
    ck_assert_int_eq(zip_patch(zp, "data/B/noise.jpg", PATCH_USIZE, 1500, 0), 1);
    expect_bad(zp, "data/B/noise.jpg", "more than its declared 1500 bytes");
    dataset_set_limits(NULL);
    free(px);
    free(j);
}
END_TEST

START_TEST(bad_archive_total_over_cap)
{
    /* 300 entries declaring 60 MiB each: 17.6 GiB, over the 16 GiB default. */
    char zp[PATH_MAX];
    size_t l;
    uint8_t *j = solid_jpeg(8, 8, CLS_RGB[3], &l);
    static ZEntry x[300];
    static char nm[300][32];
    for (int i = 0; i < 300; i++) {
        snprintf(nm[i], sizeof nm[i], "data/C/c%03d.jpg", i);
        x[i] = (ZEntry){nm[i], j, l, 0};
    }
    ZEntry e[300];
    memcpy(e, x, sizeof e);
    write_zip(tpath(zp, "total.zip"), e, 300);
    ck_assert_int_eq(zip_patch(zp, "data/C/", PATCH_USIZE, 60u << 20, 0), 300);
    /* 16 GiB / 60 MiB = 273.07: the 274th entry (c273) crosses the cap. */
    expect_bad(zp, "data/C/c273.jpg", "whole-archive cap");
    /* With a cap one byte short of small_zip's three images, the third
     * (data/B/b1.jpg in table order) crosses it. */
    size_t la, lb;
    uint8_t *ja = solid_jpeg(16, 16, CLS_RGB[0], &la), *jb = solid_jpeg(16, 16, CLS_RGB[1], &lb);
    free(ja);
    free(jb);
    small_zip(zp, "total2.zip", NULL, 0);
    DataLimits lim;
    dataset_get_limits(&lim);
    lim.max_total_bytes = 2 * la + lb - 1;
    dataset_set_limits(&lim);
    expect_bad(zp, "data/B/b1.jpg", "whole-archive cap");
    lim.max_total_bytes = 2 * la + lb; /* exactly enough: loads */
    dataset_set_limits(&lim);
    Dataset ds;
    char err[1024];
    const DataOptions opt = {0, 0, 0, 0, 0};
    ck_assert_int_eq(dataset_zip(&ds, zp, &opt, err, sizeof err), 0);
    ck_assert_int_eq(ds.n, 3);
    dataset_free(&ds);
    dataset_set_limits(NULL);
    free(j);
}
END_TEST

START_TEST(bad_entry_data_damaged)
{
    /* A flipped byte in an entry's stored data: the archive is damaged (CRC
     * or inflate error), which is bad input, not a corrupt image. */
    char zp[PATH_MAX];
    small_zip(zp, "damaged.zip", NULL, 0);
    ck_assert_int_eq(zip_patch(zp, "data/A/a2.jpg", PATCH_DATA_XOR, 0x5a, 40), 1);
    expect_bad(zp, "data/A/a2.jpg", "data unreadable");
}
END_TEST

START_TEST(bad_encrypted_entry)
{
    char zp[PATH_MAX];
    small_zip(zp, "enc.zip", NULL, 0);
    ck_assert_int_eq(zip_patch(zp, "data/A/a2.jpg", PATCH_FLAGS_OR, 1, 0), 1); /* bit 0: encrypted */
    expect_bad(zp, "data/A/a2.jpg", "encrypted");
}
END_TEST

START_TEST(bad_unsupported_compression)
{
    char zp[PATH_MAX];
    small_zip(zp, "implode.zip", NULL, 0);
    ck_assert_int_eq(zip_patch(zp, "data/B/b1.jpg", PATCH_METHOD, 6, 0), 1); /* 6: implode */
    expect_bad(zp, "data/B/b1.jpg", "unsupported compression method 6");
}
END_TEST

START_TEST(bad_class_folder_without_images)
{
    char zp[PATH_MAX];
    static const uint8_t text[] = "notes\n";
    const ZEntry x = {"data/C/notes.txt", text, sizeof text - 1, 0};
    expect_bad(small_zip(zp, "noimg.zip", &x, 1), "data/C/", "has no images");
    const ZEntry d = {"data/D/", NULL, 0, 1};
    expect_bad(small_zip(zp, "emptydir.zip", &d, 1), "data/D/", "has no images");
    /* Control bytes in a zip name reach kiln as CP437 glyphs (libzip decodes
     * names without the UTF-8 flag as CP437, and refuses flagged names that
     * hold control bytes): the message holds no raw control byte. */
    const ZEntry h = {"data/E\x01\x1b[31m/", NULL, 0, 1};
    char err[1024];
    Dataset ds;
    const DataOptions opt = {0, 0, 0, 0, 0};
    ck_assert_int_eq(dataset_zip(&ds, small_zip(zp, "ctrl.zip", &h, 1), &opt, err, sizeof err), 2);
    ck_assert_ptr_nonnull(strstr(err, "has no images"));
    for (const char *c = err; *c; c++)
        ck_assert_int_ge((unsigned char)*c, 0x20);
}
END_TEST

/* Overwrite the SOF0 frame's height and width (marker FF C0: length,
 * precision, height, width, big-endian). */
static void jpeg_patch_dims(uint8_t *j, size_t len, int h, int w)
{
    for (size_t i = 2; i + 9 < len; i++)
        if (j[i] == 0xFF && j[i + 1] == 0xC0) {
            j[i + 5] = (uint8_t)(h >> 8);
            j[i + 6] = (uint8_t)h;
            j[i + 7] = (uint8_t)(w >> 8);
            j[i + 8] = (uint8_t)w;
            return;
        }
    ck_abort_msg("no SOF0 marker");
}

START_TEST(bad_jpeg_pixel_cap)
{
    char zp[PATH_MAX];
    size_t l;
    uint8_t *j = solid_jpeg(16, 16, CLS_RGB[4], &l);
    jpeg_patch_dims(j, l, 60000, 60000); /* 3.6 Gpixel claimed by a 16x16 file */
    const ZEntry x = {"data/B/huge.jpg", j, l, 0};
    expect_bad(small_zip(zp, "huge.zip", &x, 1), "data/B/huge.jpg", "60000x60000");
    /* Under a lowered cap, an honest 16x16 (256 pixels) trips it too. */
    DataLimits lim;
    dataset_get_limits(&lim);
    lim.max_pixels = 255;
    dataset_set_limits(&lim);
    expect_bad(small_zip(zp, "cap256.zip", NULL, 0), "data/A/a1.jpg", "over the cap of 255");
    dataset_set_limits(NULL);
    /* A size asked for over the cap (10000 x 10000 = 100 Mpixel) is refused too. */
    char err[1024];
    Dataset ds;
    const DataOptions big = {10000, 10000, 3, 0, 0};
    ck_assert_int_eq(dataset_zip(&ds, zp, &big, err, sizeof err), 2);
    ck_assert_ptr_nonnull(strstr(err, "10000x10000x3"));
    free(j);
}
END_TEST

/* A solid w x w JPEG of c channels, every pixel v[0..c). */
static uint8_t *solid_any(int w, int c, const uint8_t *v, size_t *len)
{
    uint8_t *px = malloc((size_t)w * w * c);
    for (int i = 0; i < w * w; i++)
        memcpy(px + (size_t)c * i, v, (size_t)c);
    uint8_t *j = jpeg_encode(px, w, w, c, 95, len);
    free(px);
    return j;
}

START_TEST(zip_mixed_images_in_place)
{
    /* The first image read (data/A/a1.jpg, 16x16 RGB) sets the table; the
     * rest: a corrupt one sorted first (the slots close up over it), an 8x8
     * (placed when assembling), a gray and a CMYK one (converted to RGB). */
    char zp[PATH_MAX], err[1024];
    size_t l0, l1, l2, l3;
    const uint8_t gray = 77, cmyk[4] = {200, 100, 50, 255}; /* Adobe-inverted: RGB 200,100,50 */
    uint8_t *j8 = solid_jpeg(8, 8, CLS_RGB[4], &l0);
    uint8_t *jg = solid_any(16, 1, &gray, &l1);
    uint8_t *jc = solid_any(16, 4, cmyk, &l2);
    uint8_t *jx = gradient_jpeg(64, 64, &l3);
    const ZEntry x[4] = {
        {"data/A/a0.jpg", jx, 100, 0}, /* header cut: no size to take from it */
        {"data/B/b0.jpg", j8, l0, 0},
        {"data/B/b2.jpg", jg, l1, 0},
        {"data/B/b3.jpg", jc, l2, 0},
    };
    Dataset ds;
    const DataOptions opt = {0, 0, 0, 0, 0};
    ck_assert_int_eq(dataset_zip(&ds, small_zip(zp, "mixed.zip", x, 4), &opt, err, sizeof err), 0);
    ck_assert_int_eq(ds.n, 6);
    ck_assert_int_eq(ds.skipped_corrupt, 1);
    ck_assert_int_eq(ds.h, 16);
    ck_assert_int_eq(ds.w, 16);
    ck_assert_int_eq(ds.c, 3);
    /* a1, a2, b0 (8x8 upscaled), b1, b2 (gray), b3 (CMYK) */
    const uint8_t want[6][3] = {
        {200, 40, 90}, {200, 40, 90}, {240, 230, 20}, {30, 160, 40}, {77, 77, 77}, {200, 100, 50},
    };
    const int32_t labels[6] = {0, 0, 1, 1, 1, 1};
    for (int i = 0; i < 6; i++) {
        ck_assert_int_eq(ds.labels[i], labels[i]);
        for (int q = 0; q < 16 * 16 * 3; q++)
            ck_assert_msg(abs((int)ds.pixels[(size_t)i * 768 + q] - want[i][q % 3]) <= 4,
                          "image %d byte %d: %d, want %d", i, q, ds.pixels[(size_t)i * 768 + q],
                          want[i][q % 3]);
    }
    dataset_free(&ds);
    free(j8);
    free(jg);
    free(jc);
    free(jx);
}
END_TEST

START_TEST(corrupt_jpegs_skipped_and_counted)
{
    char zp[PATH_MAX], err[1024];
    size_t l;
    uint8_t *j = gradient_jpeg(64, 64, &l);
    ck_assert_uint_gt(l, 1000);
    uint8_t junk[300];
    memcpy(junk, j, 300);
    memset(junk + 200, 0x55, 100); /* tables overwritten, no image data */
    static const uint8_t text[] = "not a jpeg at all";
    const ZEntry x[3] = {
        {"data/A/trunc.jpg", j, l * 2 / 3, 0}, /* cut inside the entropy-coded data */
        {"data/B/garbled.jpg", junk, sizeof junk, 0},
        {"data/B/text.jpg", text, sizeof text - 1, 0},
    };
    Dataset ds;
    const DataOptions opt = {8, 8, 3, 0, 0};
    ck_assert_int_eq(dataset_zip(&ds, small_zip(zp, "corrupt.zip", x, 3), &opt, err, sizeof err), 0);
    ck_assert_int_eq(ds.n, 3);
    ck_assert_int_eq(ds.skipped_corrupt, 3);
    ck_assert_int_eq(ds.skipped_nonimage, 0);
    dataset_free(&ds);
    /* A class left with no decodable image is an error. */
    const ZEntry y = {"data/C/only.jpg", j, l / 3, 0};
    expect_bad(small_zip(zp, "allbad.zip", &y, 1), "'C'", "none of its images");
    free(j);
}
END_TEST

/* A 16x16 gray progressive JPEG with 11 scans for DC and 11 for each AC
 * coefficient 1..last (successive approximation one bit at a time, Al 10
 * down to 0): 11 * (1 + last) scans. */
static uint8_t *many_scans_jpeg(int last, size_t *len, int *nscans)
{
    uint8_t px[256];
    for (int i = 0; i < 256; i++)
        px[i] = (uint8_t)(i * 37 % 251);
    static jpeg_scan_info sc[11 * 64];
    int n = 0;
    for (int k = 0; k <= last; k++)
        for (int al = 10; al >= 0; al--) {
            memset(&sc[n], 0, sizeof sc[n]);
            sc[n].comps_in_scan = 1;
            sc[n].Ss = sc[n].Se = k;
            sc[n].Ah = al == 10 ? 0 : al + 1;
            sc[n].Al = al;
            n++;
        }
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    unsigned char *out = NULL;
    unsigned long outlen = 0;
    jpeg_mem_dest(&ci, &out, &outlen);
    ci.image_width = ci.image_height = 16;
    ci.input_components = 1;
    ci.in_color_space = JCS_GRAYSCALE;
    jpeg_set_defaults(&ci);
    ci.scan_info = sc;
    ci.num_scans = n;
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < 16) {
        JSAMPROW row = px + 16 * ci.next_scanline;
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    *len = outlen;
    *nscans = n;
    return out;
}

START_TEST(jpeg_scan_limit)
{
    char zp[PATH_MAX], err[1024];
    size_t la, lb;
    int na, nb;
    uint8_t *ja = many_scans_jpeg(35, &la, &na), *jb = many_scans_jpeg(63, &lb, &nb);
    ck_assert_int_eq(na, 396); /* under the limit of 500: decodes */
    ck_assert_int_eq(nb, 704); /* over it: skipped as corrupt */
    const ZEntry x[2] = {{"data/A/scans396.jpg", ja, la, 0}, {"data/B/scans704.jpg", jb, lb, 0}};
    Dataset ds;
    const DataOptions opt = {16, 16, 1, 0, 0};
    ck_assert_int_eq(dataset_zip(&ds, small_zip(zp, "scans.zip", x, 2), &opt, err, sizeof err), 0);
    ck_assert_int_eq(ds.n, 4);
    ck_assert_int_eq(ds.skipped_corrupt, 1);
    /* data/A/scans396.jpg is third (after a1, a2); it matches plain libjpeg. */
    struct jpeg_decompress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, ja, (unsigned long)la);
    jpeg_read_header(&ci, TRUE);
    jpeg_start_decompress(&ci);
    uint8_t ref[256];
    while (ci.output_scanline < 16) {
        JSAMPROW row = ref + 16 * ci.output_scanline;
        jpeg_read_scanlines(&ci, &row, 1);
    }
    jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    ck_assert_mem_eq(ds.pixels + 2 * 256, ref, 256);
    dataset_free(&ds);
    free(ja);
    free(jb);
}
END_TEST

START_TEST(bad_dir_source)
{
    char p[PATH_MAX], err[1024];
    Dataset ds;
    const DataOptions opt = {0, 0, 0, 0, 0};
    ck_assert_int_eq(dataset_dir(&ds, tpath(p, "no-such-dir"), &opt, err, sizeof err), 2);
    ck_assert_ptr_nonnull(strstr(err, "no-such-dir"));
    /* A tree whose class folder holds no images. */
    static const uint8_t text[] = "x";
    size_t l;
    uint8_t *j = solid_jpeg(8, 8, CLS_RGB[0], &l);
    const ZEntry e[3] = {{"A/a.jpg", j, l, 0}, {"B/b.jpg", j, l, 0}, {"C/c.txt", text, 1, 0}};
    write_tree(tpath(p, "badtree"), e, 3);
    ck_assert_int_eq(dataset_dir(&ds, p, &opt, err, sizeof err), 2);
    ck_assert_ptr_nonnull(strstr(err, "badtree"));
    ck_assert_ptr_nonnull(strstr(err, "'C/'"));
    /* A hostile folder name is printed escaped. */
    const ZEntry h[3] = {{"A/a.jpg", j, l, 0}, {"B/b.jpg", j, l, 0}, {"E\x01\x1b[31m\\/x.txt", text, 1, 0}};
    write_tree(tpath(p, "ctrltree"), h, 3);
    ck_assert_int_eq(dataset_dir(&ds, p, &opt, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "class folder 'E\\x01\\x1b[31m\\\\/' has no images") != NULL, "%s", err);
    free(j);
}
END_TEST

/* ---- tests: synthetic ---------------------------------------------------------------- */

/* Values no generator can use are refused with the key named, before any
 * conversion (nan or 1e300 cast to an integer is undefined). */
START_TEST(synthetic_bad_values)
{
    static const char *const BAD[][2] = {
        {"synthetic:noise=nan", "for noise"},      {"synthetic:noise=inf", "for noise"},
        {"synthetic:noise=1e300", "noise 0..100"}, {"synthetic:n=1e300", "n takes a whole number"},
        {"synthetic:classes=nan", "for classes"},  {"synthetic:size=7.5", "size takes a whole number"},
        {"synthetic:seed=-1", "seed takes"},       {"synthetic:seed=1e30", "seed takes"},
        {"synthetic:bogus=1.5", "unknown key 'bogus'"},
    };
    const DataOptions opt = {0, 0, 0, 0, 0};
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        Dataset ds;
        char err[512] = "";
        int rc = dataset_open(&ds, BAD[i][0], &opt, err, sizeof err);
        if (rc == 0) dataset_free(&ds);
        ck_assert_msg(rc == 2, "%s: rc %d", BAD[i][0], rc);
        ck_assert_msg(strstr(err, BAD[i][1]) != NULL, "%s: '%s' lacks '%s'", BAD[i][0], err, BAD[i][1]);
    }
    Dataset ds;
    char err[512];
    ck_assert_msg(dataset_open(&ds, "synthetic:n=8,noise=0.5,seed=7,size=4", &opt, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(ds.n, 8);
    dataset_free(&ds);
}
END_TEST

/* The source name a synthetic set reports (size=HxW) opens the same set. */
START_TEST(synthetic_source_reopens)
{
    const DataOptions opt = {0, 0, 0, 0, 0};
    Dataset a, b;
    char err[512], spec[600];
    ck_assert_msg(dataset_open(&a, "synthetic:n=12,size=8x12,channels=1,noise=0.1234567", &opt, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(a.h, 8);
    ck_assert_int_eq(a.w, 12);
    snprintf(spec, sizeof spec, "%s", a.source);
    ck_assert_msg(dataset_open(&b, spec, &opt, err, sizeof err) == 0, "%s: %s", spec, err);
    ck_assert_str_eq(b.source, a.source);
    ck_assert_int_eq(memcmp(a.pixels, b.pixels, (size_t)a.n * a.h * a.w * a.c), 0);
    dataset_free(&a);
    dataset_free(&b);
    ck_assert_int_eq(dataset_open(&a, "synthetic:size=8x", &opt, err, sizeof err), 2);
}
END_TEST

/* ---- tests: IDX -------------------------------------------------------------------- */

/* Write a gzipped IDX file: magic bytes, dims, payload. */
static void write_idx(const char *path, uint8_t type, int rank, const uint32_t *dims,
                      const uint8_t *payload, size_t len)
{
    gzFile gz = gzopen(path, "wb");
    ck_assert_ptr_nonnull(gz);
    uint8_t h[16] = {0, 0, type, (uint8_t)rank};
    for (int d = 0; d < rank; d++) {
        h[4 + 4 * d] = (uint8_t)(dims[d] >> 24);
        h[5 + 4 * d] = (uint8_t)(dims[d] >> 16);
        h[6 + 4 * d] = (uint8_t)(dims[d] >> 8);
        h[7 + 4 * d] = (uint8_t)dims[d];
    }
    ck_assert_int_eq(gzwrite(gz, h, (unsigned)(4 + 4 * rank)), 4 + 4 * rank);
    if (len)
        ck_assert_int_eq(gzwrite(gz, payload, (unsigned)len), (int)len);
    ck_assert_int_eq(gzclose(gz), Z_OK);
}

#define NTR 30
#define NTE 10
#define IH 5
#define IW 4

/* A good IDX set in tmp/name: pixel (i, p) = (i * 7 + p) & 255, label i % 10. */
static const char *idx_set(char *dir, const char *name)
{
    char p[PATH_MAX + 64];
    mkdir(tpath(dir, name), 0755);
    static uint8_t px[(NTR + NTE) * IH * IW], lab[NTR + NTE];
    for (int i = 0; i < NTR + NTE; i++) {
        lab[i] = (uint8_t)(i % 10);
        for (int q = 0; q < IH * IW; q++)
            px[i * IH * IW + q] = (uint8_t)((i * 7 + q) & 255);
    }
    const uint32_t dtr[3] = {NTR, IH, IW}, dte[3] = {NTE, IH, IW}, ltr[1] = {NTR}, lte[1] = {NTE};
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    write_idx(p, 8, 3, dtr, px, NTR * IH * IW);
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte.gz", dir);
    write_idx(p, 8, 3, dte, px + NTR * IH * IW, NTE * IH * IW);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    write_idx(p, 8, 1, ltr, lab, NTR);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", dir);
    write_idx(p, 8, 1, lte, lab + NTR, NTE);
    return dir;
}

START_TEST(idx_round_trip)
{
    char dir[PATH_MAX], err[1024];
    idx_set(dir, "idx-good");
    Dataset ds;
    ck_assert_int_eq(dataset_fashion_mnist(&ds, dir, NULL, err, sizeof err), 0);
    ck_assert_int_eq(ds.n, NTR + NTE);
    ck_assert_int_eq(ds.n_fixed_test, NTE);
    ck_assert_int_eq(ds.h, IH);
    ck_assert_int_eq(ds.w, IW);
    ck_assert_int_eq(ds.c, 1);
    ck_assert_int_eq(ds.num_classes, 10);
    ck_assert_str_eq(ds.class_names[0], "T-shirt/top");
    ck_assert_str_eq(ds.class_names[9], "Ankle boot");
    for (int i = 0; i < ds.n; i++) {
        ck_assert_int_eq(ds.labels[i], i % 10);
        for (int q = 0; q < IH * IW; q++)
            ck_assert_int_eq(ds.pixels[i * IH * IW + q], (i * 7 + q) & 255);
    }
    dataset_free(&ds);
    /* The same files uncompressed are read too. */
    char p[PATH_MAX + 64], u[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", dir);
    snprintf(u, sizeof u, "%s/t10k-labels-idx1-ubyte", dir);
    gzFile gz = gzopen(p, "rb");
    uint8_t raw[64];
    int r = gzread(gz, raw, sizeof raw);
    gzclose(gz);
    ck_assert_int_eq(r, 8 + NTE);
    spit(u, raw, (size_t)r);
    unlink(p);
    ck_assert_int_eq(dataset_fashion_mnist(&ds, dir, NULL, err, sizeof err), 0);
    ck_assert_int_eq(ds.labels[NTR + 3], (NTR + 3) % 10);
    dataset_free(&ds);
}
END_TEST

/* Load dir and expect bad input naming file with text what. */
static void expect_bad_idx(const char *dir, const char *file, const char *what)
{
    char err[1024];
    Dataset ds;
    int rc = dataset_fashion_mnist(&ds, dir, NULL, err, sizeof err);
    if (getenv("KILN_TEST_VERBOSE"))
        printf("bad input: %s\n", err);
    ck_assert_msg(rc == 2, "rc %d for %s (%s)", rc, dir, rc ? err : "loaded");
    ck_assert_msg(strstr(err, file) != NULL, "message does not name %s: %s", file, err);
    ck_assert_msg(strstr(err, what) != NULL, "message does not say '%s': %s", what, err);
    ck_assert_ptr_null(ds.pixels);
}

START_TEST(idx_bad_magic)
{
    char dir[PATH_MAX], p[PATH_MAX + 64];
    idx_set(dir, "idx-magic");
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    const uint32_t d[3] = {NTR, IH, IW};
    uint8_t px[NTR * IH * IW] = {0};
    write_idx(p, 0x0D, 3, d, px, sizeof px); /* 0x0D: float */
    expect_bad_idx(dir, "train-images-idx3-ubyte.gz", "bad IDX magic 0x00000d03");
}
END_TEST

START_TEST(idx_wrong_rank)
{
    char dir[PATH_MAX], p[PATH_MAX + 64];
    idx_set(dir, "idx-rank");
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", dir);
    const uint32_t d[2] = {NTE, 1};
    uint8_t lab[NTE] = {0};
    write_idx(p, 8, 2, d, lab, sizeof lab);
    expect_bad_idx(dir, "t10k-labels-idx1-ubyte.gz", "rank 2, want 1");
}
END_TEST

START_TEST(idx_dims_disagree_with_payload)
{
    char dir[PATH_MAX], p[PATH_MAX + 64];
    uint8_t px[(NTE + 1) * IH * IW] = {0};
    const uint32_t d[3] = {NTE, IH, IW};
    idx_set(dir, "idx-short");
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte.gz", dir);
    write_idx(p, 8, 3, d, px, (NTE - 1) * IH * IW); /* one image short */
    expect_bad_idx(dir, "t10k-images-idx3-ubyte.gz", "payload is 180 bytes but the dimensions say 200");
    idx_set(dir, "idx-long");
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte.gz", dir);
    write_idx(p, 8, 3, d, px, (NTE + 1) * IH * IW); /* one image too many */
    expect_bad_idx(dir, "t10k-images-idx3-ubyte.gz", "longer than the dimensions say");
}
END_TEST

START_TEST(idx_truncated_gzip)
{
    char dir[PATH_MAX], p[PATH_MAX + 64];
    idx_set(dir, "idx-trunc");
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    size_t len;
    uint8_t *b = slurp(p, &len);
    spit(p, b, len - 12); /* the deflate end and the gzip trailer are gone */
    free(b);
    expect_bad_idx(dir, "train-images-idx3-ubyte.gz", "truncated gzip");
    /* Only the gzip trailer's length field missing: every payload byte is
     * there, the check after the payload catches it. */
    idx_set(dir, "idx-trailer");
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", dir);
    b = slurp(p, &len);
    spit(p, b, len - 4);
    free(b);
    expect_bad_idx(dir, "t10k-labels-idx1-ubyte.gz", "truncated gzip stream (after the payload)");
}
END_TEST

/* A CRC-32 that does not match is said to be one, wherever inflate finds it
 * (a small file is inflated whole while its header is read). */
START_TEST(idx_gzip_crc_mismatch)
{
    char dir[PATH_MAX], p[PATH_MAX + 64];
    idx_set(dir, "idx-crc");
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", dir);
    size_t len;
    uint8_t *b = slurp(p, &len);
    b[len - 8] ^= 0x5a; /* the trailer's CRC-32 */
    spit(p, b, len);
    free(b);
    char err[1024];
    Dataset ds;
    expect_bad_idx(dir, "t10k-labels-idx1-ubyte.gz", "gzip CRC-32 of the data does not match");
    ck_assert_int_eq(dataset_fashion_mnist(&ds, dir, NULL, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "IDX header") == NULL, "%s", err);
}
END_TEST

/* After a gzip member only another valid member may follow: garbage is
 * refused, a concatenated member is read. */
START_TEST(idx_gzip_after_the_member)
{
    char dir[PATH_MAX], p[PATH_MAX + 64];
    idx_set(dir, "idx-garbage");
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    size_t len;
    uint8_t *b = slurp(p, &len);
    uint8_t *g = malloc(len + 8);
    memcpy(g, b, len);
    memcpy(g + len, "garbage!", 8);
    spit(p, g, len + 8);
    expect_bad_idx(dir, "train-labels-idx1-ubyte.gz", "not another gzip member");
    /* the same file twice over: a second member whose labels are one too many */
    memcpy(g, b, len);
    spit(p, g, len);
    FILE *f = fopen(p, "ab");
    ck_assert_int_eq((int)fwrite(b, 1, len, f), (int)len);
    fclose(f);
    expect_bad_idx(dir, "train-labels-idx1-ubyte.gz", "longer than the dimensions say");
    free(b);
    free(g);
    /* header and labels in two members: loads */
    idx_set(dir, "idx-members");
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", dir);
    const uint8_t h[8] = {0, 0, 8, 1, 0, 0, 0, NTE};
    uint8_t lab[NTE];
    for (int i = 0; i < NTE; i++) lab[i] = (uint8_t)((NTR + i) % 10);
    gzFile gz = gzopen(p, "wb");
    ck_assert_int_eq(gzwrite(gz, h, 8), 8);
    ck_assert_int_eq(gzclose(gz), Z_OK);
    gz = gzopen(p, "ab");
    ck_assert_int_eq(gzwrite(gz, lab, NTE), NTE);
    ck_assert_int_eq(gzclose(gz), Z_OK);
    char err[1024];
    Dataset ds;
    ck_assert_msg(dataset_fashion_mnist(&ds, dir, NULL, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(ds.labels[NTR + 7], (NTR + 7) % 10);
    dataset_free(&ds);
}
END_TEST

START_TEST(idx_label_count_differs)
{
    char dir[PATH_MAX], p[PATH_MAX + 64];
    idx_set(dir, "idx-count");
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    const uint32_t d[1] = {NTR - 1};
    uint8_t lab[NTR] = {0};
    write_idx(p, 8, 1, d, lab, NTR - 1);
    expect_bad_idx(dir, "train-labels-idx1-ubyte.gz", "29 labels but");
}
END_TEST

START_TEST(idx_label_out_of_range)
{
    char dir[PATH_MAX], p[PATH_MAX + 64];
    idx_set(dir, "idx-range");
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", dir);
    const uint32_t d[1] = {NTE};
    uint8_t lab[NTE] = {0, 1, 2, 3, 4, 5, 6, 10, 8, 9};
    write_idx(p, 8, 1, d, lab, NTE);
    expect_bad_idx(dir, "t10k-labels-idx1-ubyte.gz", "label 10 at index 7");
}
END_TEST

START_TEST(idx_missing_files)
{
    char dir[PATH_MAX];
    expect_bad_idx(tpath(dir, "idx-none"), "idx-none/train-images-idx3-ubyte.gz", "cannot open");
}
END_TEST

START_TEST(fashion_mnist_debian)
{
    const char *dir = "/usr/share/datasets/fashion-mnist";
    char p[PATH_MAX], err[1024];
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    if (access(p, R_OK) != 0) {
        printf("fashion_mnist_debian: SKIPPED: %s not found (apt install dataset-fashion-mnist)\n", p);
        return;
    }
    Dataset ds;
    ck_assert_int_eq(dataset_fashion_mnist(&ds, NULL, NULL, err, sizeof err), 0);
    ck_assert_int_eq(ds.n, 70000);
    ck_assert_int_eq(ds.n_fixed_test, 10000);
    ck_assert_int_eq(ds.h, 28);
    ck_assert_int_eq(ds.w, 28);
    ck_assert_int_eq(ds.c, 1);
    ck_assert_int_eq(ds.num_classes, 10);
    ck_assert_str_eq(ds.class_names[6], "Shirt");
    int count[10][2] = {{0}};
    for (int i = 0; i < ds.n; i++)
        count[ds.labels[i]][i >= 60000]++;
    for (int k = 0; k < 10; k++) {
        ck_assert_int_eq(count[k][0], 6000);
        ck_assert_int_eq(count[k][1], 1000);
    }
    /* Known facts of the data set: the first train and test labels and the
     * pixel sums of the first train and test images. */
    ck_assert_int_eq(ds.labels[0], 9);
    ck_assert_int_eq(ds.labels[1], 0);
    ck_assert_int_eq(ds.labels[60000], 9);
    ck_assert_int_eq(ds.labels[60001], 2);
    long s0 = 0, s1 = 0;
    for (int q = 0; q < 784; q++) {
        s0 += ds.pixels[q];
        s1 += ds.pixels[(size_t)60000 * 784 + q];
    }
    ck_assert_int_eq(s0, 76247);
    ck_assert_int_eq(s1, 33456);
    dataset_free(&ds);
}
END_TEST

/* ---- tests: the command ------------------------------------------------------------ */

/* Run "$KILN_BIN data ARGS" (stdout and stderr together into out, cut to
 * outlen); returns the exit code, -1 if no binary, -2 if it did not exit. */
static int run_kiln(const char *args, char *out, size_t outlen)
{
    const char *bin = getenv("KILN_BIN");
    if (!bin || access(bin, X_OK) != 0)
        return -1;
    int rc;
    char *o = kiln_output(&rc, "data %s", args);
    snprintf(out, outlen, "%s", o);
    free(o);
    return rc < 0 ? -2 : rc;
}

START_TEST(kiln_data_command)
{
    char zp[PATH_MAX], bp[PATH_MAX], args[PATH_MAX * 2], out[8192];
    eurosat_zip(zp, "cmd.zip", "2750", 1);
    snprintf(args, sizeof args, "zip:'%s' --size 16x16 --seed 3", zp);
    int rc = run_kiln(args, out, sizeof out);
    if (rc == -1) {
        printf("kiln_data_command: SKIPPED: no kiln binary (KILN_BIN unset or not built)\n");
        return;
    }
    ck_assert_msg(rc == 0, "kiln data exited %d: %s", rc, out);
    ck_assert_ptr_nonnull(strstr(out, "50 of 16x16x3"));
    ck_assert_ptr_nonnull(strstr(out, "Forest"));
    ck_assert_ptr_nonnull(strstr(out, "3 non-image entries, 1 corrupt images"));
    ck_assert_ptr_nonnull(strstr(out, "images/s"));
    ck_assert_ptr_nonnull(strstr(out, "split:"));
    small_zip(bp, "cmd-bad.zip", NULL, 0);
    zip_patch(bp, "data/A/a2.jpg", PATCH_FLAGS_OR, 1, 0);
    snprintf(args, sizeof args, "zip:'%s'", bp);
    ck_assert_int_eq(run_kiln(args, out, sizeof out), 2);
    ck_assert_ptr_nonnull(strstr(out, bp));
    ck_assert_ptr_nonnull(strstr(out, "data/A/a2.jpg"));
    ck_assert_int_eq(run_kiln("--size 0x3 fashion-mnist", out, sizeof out), 2);
}
END_TEST

/* ---- suite ---------------------------------------------------------------------------- */

static Suite *data_suite(void)
{
    Suite *s = suite_create("data");
    TCase *t = tcase_create("resize");
    tcase_add_test(t, resize_exact_values);
    tcase_add_test(t, resize_channels);
    tcase_add_test(t, resize_all_table);
    tcase_add_test(t, take_per_class);
    tcase_add_test(t, escape_names);
    suite_add_tcase(s, t);
    t = tcase_create("imagefolder");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, zip_eurosat_layout);
    tcase_add_test(t, zip_native_size_is_most_common);
    tcase_add_test(t, zip_mixed_images_in_place);
    tcase_add_test(t, zip_wrappers_and_tree_agree);
    tcase_add_test(t, zip_per_class_before_decode);
    tcase_add_test(t, split_stratified_and_reproducible);
    tcase_add_test(t, corrupt_jpegs_skipped_and_counted);
    tcase_add_test(t, jpeg_scan_limit);
    suite_add_tcase(s, t);
    t = tcase_create("bad_input");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, bad_not_a_zip);
    tcase_add_test(t, bad_truncated_central_directory);
    tcase_add_test(t, bad_name_dotdot);
    tcase_add_test(t, bad_name_absolute);
    tcase_add_test(t, bad_name_backslash);
    tcase_add_test(t, bad_name_nul);
    tcase_add_test(t, bad_entry_declared_over_cap);
    tcase_add_test(t, bad_entry_actual_over_declared);
    tcase_add_test(t, bad_entry_actual_over_cap);
    tcase_add_test(t, bad_archive_total_over_cap);
    tcase_add_test(t, bad_entry_data_damaged);
    tcase_add_test(t, bad_encrypted_entry);
    tcase_add_test(t, bad_unsupported_compression);
    tcase_add_test(t, bad_class_folder_without_images);
    tcase_add_test(t, bad_jpeg_pixel_cap);
    tcase_add_test(t, bad_dir_source);
    suite_add_tcase(s, t);

    t = tcase_create("synthetic");
    tcase_add_test(t, synthetic_bad_values);
    tcase_add_test(t, synthetic_source_reopens);
    suite_add_tcase(s, t);

    t = tcase_create("idx");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, idx_round_trip);
    tcase_add_test(t, idx_bad_magic);
    tcase_add_test(t, idx_wrong_rank);
    tcase_add_test(t, idx_dims_disagree_with_payload);
    tcase_add_test(t, idx_truncated_gzip);
    tcase_add_test(t, idx_gzip_crc_mismatch);
    tcase_add_test(t, idx_gzip_after_the_member);
    tcase_add_test(t, idx_label_count_differs);
    tcase_add_test(t, idx_label_out_of_range);
    tcase_add_test(t, idx_missing_files);
    tcase_add_test(t, fashion_mnist_debian);
    suite_add_tcase(s, t);
    t = tcase_create("command");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, kiln_data_command);
    suite_add_tcase(s, t);
    return s;
}

/* After the suite: the temporary folder removed. */
static void remove_tmp(void)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "test_data: could not remove %s\n", g_tmp);
}

/* The suite, in a fresh temporary folder (removed after). */
Suite *test_suite(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_tmp, sizeof g_tmp, "%s/kiln-test-data-XXXXXX", base);
    if (!mkdtemp(g_tmp)) {
        fprintf(stderr, "test_data: cannot make a temporary folder in %s: %s\n", base, strerror(errno));
        exit(1);
    }
    test_at_end(remove_tmp);
    return data_suite();
}
