/* tests/test_safetensors.c — safetensors I/O and weight loading for transfer.
 *
 *  - round trips through st_save/st_load (names, order, shapes, values,
 *    metadata), the exact bytes the reference layout gives (8-byte length,
 *    compact JSON padded with spaces to 8 bytes, data), hand-written F16 and
 *    BF16 files with known values (subnormals, 65504, 3.140625);
 *  - st_save is atomic: a failed write (file size limit, missing directory,
 *    bad arguments) leaves the old file byte for byte and no temporary file;
 *  - every malformed file is its own test: rc 2, a message naming the file
 *    (and the tensor where there is one) and saying what is wrong;
 *  - weights_load/weights_save on a small arch: round trip into a plan's
 *    arena, missing/extra tensors, shape mismatch, a head with another class
 *    count or none at all, another architecture, other preprocessing,
 *    PyTorch and Keras files refused with the importer named;
 *  - `kiln train --weights/--save` end to end when the binary is built.
 */
#include <check.h>
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/params.h"
#include "runtime/safetensors.h"
#include "runtime/weights.h"
#include "tests/kiln_cli.h"
#include "tests/suite_main.h"

/* ==== fixtures ============================================================= */

static char dir[64];

/* A fresh directory per test (Check forks each test). */
static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/kiln-st-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

/* Remove the test's directory and the files in it. */
static void teardown(void)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[PATH_MAX];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

/* PATH of NAME in the test's directory. */
static void tpath(char *out, const char *name)
{
    snprintf(out, PATH_MAX, "%s/%s", dir, name);
}

/* Write n bytes to path. */
static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

/* The whole file at path (malloc'ed, *n bytes). */
static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    ck_assert_uint_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* A safetensors file by hand: length field `len` (the header's own length
 * plus pad when len is UINT64_MAX), the header, pad spaces, then the data. */
static void write_st(const char *path, uint64_t len, const char *hdr, int pad, const void *data, size_t dlen)
{
    size_t hl = strlen(hdr);
    if (len == UINT64_MAX) len = hl + (size_t)pad;
    unsigned char *b = malloc(8 + hl + (size_t)pad + dlen + 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(len >> (8 * i));
    memcpy(b + 8, hdr, hl);
    memset(b + 8 + hl, ' ', (size_t)pad);
    if (dlen) memcpy(b + 8 + hl + pad, data, dlen);
    write_bytes(path, b, 8 + hl + (size_t)pad + dlen);
    free(b);
}

/* A well-formed file's header with its real length and no padding. */
static void write_hdr(const char *path, const char *hdr, const void *data, size_t dlen)
{
    write_st(path, UINT64_MAX, hdr, 0, data, dlen);
}

/* st_load must refuse path with rc 2, a message naming the file, saying
 * `what`, and naming `tensor` (quoted) when not NULL. */
static void expect_bad(const char *path, const char *what, const char *tensor)
{
    StFile f;
    char err[1024] = "";
    int rc = st_load(path, &f, err, sizeof err);
    ck_assert_msg(rc == 2, "st_load returned %d (%s)", rc, err);
    ck_assert_msg(strstr(err, path) != NULL, "message does not name the file: %s", err);
    ck_assert_msg(strstr(err, what) != NULL, "expected '%s' in: %s", what, err);
    if (tensor) {
        char q[256];
        snprintf(q, sizeof q, "'%s'", tensor);
        ck_assert_msg(strstr(err, q) != NULL, "message does not name tensor %s: %s", q, err);
    }
    ck_assert_int_eq(f.n, 0);
    ck_assert_ptr_null(f.tensors);
}

static const float eight[8] = {1, 2, 3, 4, 5, 6, 7, 8};

/* ==== round trips ========================================================== */

START_TEST(round_trip_f32)
{
    char path[PATH_MAX], err[512];
    tpath(path, "rt.safetensors");
    float k[12], b[2] = {-0.5f, 1e-30f}, s[1] = {3.25f};
    for (int i = 0; i < 12; i++) k[i] = (float)i * 0.25f - 1.0f;
    StTensor ts[4] = {
        {"conv.kernel", 4, {2, 3, 1, 2}, 12, k},
        {"conv.bias", 1, {2}, 2, b},
        {"scalar", 0, {0}, 1, s},
        {"empty", 2, {0, 3}, 0, NULL},
    };
    const char *mk[2] = {"kiln.arch", "note"}, *mv[2] = {"tiny", "caf\xc3\xa9 \"quoted\" \\ \xe2\x9c\x93"};
    ck_assert_msg(st_save(path, ts, 4, mk, mv, 2, err, sizeof err) == 0, "%s", err);

    StFile f;
    ck_assert_msg(st_load(path, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(f.n, 4);
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(f.tensors[i].name, ts[i].name);         /* the order given */
        ck_assert_int_eq(f.tensors[i].ndim, ts[i].ndim);
        for (int d = 0; d < ts[i].ndim; d++) ck_assert_int_eq(f.tensors[i].shape[d], ts[i].shape[d]);
        ck_assert_uint_eq(f.tensors[i].numel, ts[i].numel);
        ck_assert_ptr_nonnull(f.tensors[i].data);
        for (size_t j = 0; j < ts[i].numel; j++) ck_assert_float_eq(f.tensors[i].data[j], ts[i].data[j]);
    }
    ck_assert_ptr_eq(st_find(&f, "conv.bias"), &f.tensors[1]);
    ck_assert_ptr_null(st_find(&f, "conv.gamma"));
    ck_assert_str_eq(st_meta(&f, "kiln.arch"), "tiny");
    ck_assert_str_eq(st_meta(&f, "note"), mv[1]);
    ck_assert_ptr_null(st_meta(&f, "kiln.mean"));
    st_free(&f);
    ck_assert_int_eq(f.n, 0);

    /* layout: header length a multiple of 8, file = 8 + N + 15 floats */
    size_t n;
    unsigned char *bytes = read_bytes(path, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | bytes[i];
    ck_assert_uint_eq(hl % 8, 0);
    ck_assert_uint_eq(n, 8 + hl + 15 * 4);
    ck_assert_int_eq(bytes[8], '{');
    free(bytes);
    /* the file has the usual permissions, not mkstemp's 0600 */
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    mode_t um = umask(022);
    umask(um);
    ck_assert_int_eq(st.st_mode & 0777, 0666 & ~um);
}
END_TEST

/* The reference writer's layout for one F32 tensor: these exact bytes. */
START_TEST(exact_bytes_and_padding)
{
    char path[PATH_MAX], err[512];
    tpath(path, "exact.safetensors");
    float v[6] = {0, 1, 2, 3, 4, 5};
    const char *json[2] = {"{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}",
                           "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}"};
    StTensor ts[2] = {{"attn.0", 3, {1, 2, 3}, 6, v}, {"attn0", 4, {1, 1, 2, 3}, 6, v}};
    size_t want_len[2] = {64, 72};   /* 64 needs no padding; 65 is padded to 72 */
    for (int c = 0; c < 2; c++) {
        ck_assert_msg(st_save(path, &ts[c], 1, NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
        size_t n;
        unsigned char *b = read_bytes(path, &n);
        ck_assert_uint_eq(n, 8 + want_len[c] + 24);
        ck_assert_int_eq(b[0], (int)want_len[c]);
        for (int i = 1; i < 8; i++) ck_assert_int_eq(b[i], 0);
        size_t jl = strlen(json[c]);
        ck_assert_int_eq(memcmp(b + 8, json[c], jl), 0);
        for (size_t i = jl; i < want_len[c]; i++) ck_assert_int_eq(b[8 + i], ' ');
        ck_assert_int_eq(memcmp(b + 8 + want_len[c], v, 24), 0);
        free(b);
    }
}
END_TEST

/* IEEE half bits (1 sign, 5 exponent, 10 mantissa) and bfloat16 bits, with
 * the floats they stand for, converted by hand. */
static const uint16_t F16_BITS[8] = {0x3E00, 0xC000, 0x7BFF, 0x0001, 0x03FF, 0x8000, 0x3C00, 0x0400};
static const uint16_t BF16_BITS[6] = {0x4049, 0x3F80, 0xC000, 0x7F7F, 0x0001, 0xBF00};

START_TEST(load_f16)
{
    char path[PATH_MAX], err[512];
    tpath(path, "h.safetensors");
    write_hdr(path, "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,4],\"data_offsets\":[0,16]}}", F16_BITS, 16);
    float want[8] = {1.5f, -2.0f, 65504.0f, ldexpf(1, -24) /* smallest subnormal */,
                     1023 * ldexpf(1, -24) /* largest subnormal */, -0.0f, 1.0f, ldexpf(1, -14)};
    StFile f;
    ck_assert_msg(st_load(path, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(f.n, 1);
    ck_assert_int_eq(f.tensors[0].ndim, 2);
    ck_assert_uint_eq(f.tensors[0].numel, 8);
    for (int i = 0; i < 8; i++)
        ck_assert_msg(f.tensors[0].data[i] == want[i], "F16 %04x -> %.9g, want %.9g", F16_BITS[i],
                      f.tensors[0].data[i], want[i]);
    ck_assert_float_eq(f.tensors[0].data[3], 5.9604644775390625e-08f);
    ck_assert(signbit(f.tensors[0].data[5]));
    st_free(&f);
}
END_TEST

START_TEST(load_bf16)
{
    char path[PATH_MAX], err[512];
    tpath(path, "b.safetensors");
    write_hdr(path, "{\"b\":{\"dtype\":\"BF16\",\"shape\":[6],\"data_offsets\":[0,12]}}", BF16_BITS, 12);
    float want[6] = {3.140625f, 1.0f, -2.0f, ldexpf(255, 120) /* largest finite */, ldexpf(1, -133), -0.5f};
    StFile f;
    ck_assert_msg(st_load(path, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(f.n, 1);
    for (int i = 0; i < 6; i++)
        ck_assert_msg(f.tensors[0].data[i] == want[i], "BF16 %04x -> %.9g, want %.9g", BF16_BITS[i],
                      f.tensors[0].data[i], want[i]);
    st_free(&f);
}
END_TEST

/* F16, BF16 and F32 in one file, listed in the header out of offset order
 * (the reference sorts by offsets), the header padded with spaces: loaded in
 * data order. */
START_TEST(mixed_dtypes_any_header_order_padded)
{
    char path[PATH_MAX], err[512];
    tpath(path, "mix.safetensors");
    unsigned char data[16 + 12 + 8];
    memcpy(data, F16_BITS, 16);
    memcpy(data + 16, BF16_BITS, 12);
    float f32[2] = {0.125f, -7.5f};
    memcpy(data + 28, f32, 8);
    write_st(path, UINT64_MAX,
             "{\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[28,36]},"
             "\"__metadata__\":{\"format\":\"pt\"},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[3,2],\"data_offsets\":[16,28]},"
             "\"a\":{\"dtype\":\"F16\",\"shape\":[8],\"data_offsets\":[0,16]}}", 13, data, sizeof data);
    StFile f;
    ck_assert_msg(st_load(path, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(f.n, 3);
    ck_assert_str_eq(f.tensors[0].name, "a");
    ck_assert_str_eq(f.tensors[1].name, "b");
    ck_assert_str_eq(f.tensors[2].name, "c");
    ck_assert_float_eq(st_find(&f, "a")->data[0], 1.5f);
    ck_assert_float_eq(st_find(&f, "b")->data[0], 3.140625f);
    ck_assert_int_eq(st_find(&f, "b")->shape[0], 3);
    ck_assert_float_eq(st_find(&f, "c")->data[1], -7.5f);
    ck_assert_str_eq(st_meta(&f, "format"), "pt");
    ck_assert_int_eq(f.n_meta, 1);
    st_free(&f);
}
END_TEST

/* An empty file (no tensors) and a file with only metadata are valid. */
START_TEST(no_tensors)
{
    char path[PATH_MAX], err[512];
    tpath(path, "e.safetensors");
    ck_assert_msg(st_save(path, NULL, 0, NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    size_t n;
    unsigned char *b = read_bytes(path, &n);
    ck_assert_uint_eq(n, 16);                      /* "{}" padded to 8 */
    ck_assert_int_eq(memcmp(b + 8, "{}      ", 8), 0);
    free(b);
    StFile f;
    ck_assert_msg(st_load(path, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(f.n, 0);
    ck_assert_int_eq(f.n_meta, 0);
    st_free(&f);
}
END_TEST

/* ==== atomic writes ======================================================== */

/* No PATH.tmp.* file left in the test directory. */
static void assert_no_temp(void)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)))
        ck_assert_msg(strstr(e->d_name, ".tmp.") == NULL, "temporary file left: %s", e->d_name);
    closedir(d);
}

/* The write fails half-way (the file size limit, which binds root too): the
 * old file is intact, the temporary is gone. */
START_TEST(failed_write_keeps_old_file)
{
    char path[PATH_MAX], err[512];
    tpath(path, "w.safetensors");
    StTensor old = {"w", 1, {8}, 8, (float *)eight};
    ck_assert_msg(st_save(path, &old, 1, NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    size_t n0;
    unsigned char *before = read_bytes(path, &n0);

    size_t big = 100000;
    float *v = calloc(big, sizeof(float));
    StTensor nt = {"w", 1, {(int64_t)big}, big, v};
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit saved, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    lim = saved;
    lim.rlim_cur = 4096;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = st_save(path, &nt, 1, NULL, NULL, 0, err, sizeof err);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    ck_assert_msg(rc == 1, "rc %d: %s", rc, err);
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_ptr_nonnull(strstr(err, "write failed"));

    size_t n1;
    unsigned char *after = read_bytes(path, &n1);
    ck_assert_uint_eq(n1, n0);
    ck_assert_int_eq(memcmp(before, after, n0), 0);
    assert_no_temp();
    StFile f;
    ck_assert_msg(st_load(path, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_float_eq(f.tensors[0].data[7], 8.0f);
    st_free(&f);
    free(before); free(after); free(v);
}
END_TEST

START_TEST(save_into_missing_directory)
{
    char path[PATH_MAX], err[512];
    tpath(path, "no-such-dir/w.safetensors");
    StTensor t = {"w", 1, {8}, 8, (float *)eight};
    int rc = st_save(path, &t, 1, NULL, NULL, 0, err, sizeof err);
    ck_assert_msg(rc == 1, "rc %d: %s", rc, err);
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_ptr_nonnull(strstr(err, "temporary"));
}
END_TEST

/* Bad arguments are refused before anything is written. */
START_TEST(save_bad_arguments_keep_old_file)
{
    char path[PATH_MAX], err[512];
    tpath(path, "w.safetensors");
    StTensor good = {"w", 1, {8}, 8, (float *)eight};
    ck_assert_msg(st_save(path, &good, 1, NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    size_t n0;
    unsigned char *before = read_bytes(path, &n0);
    float nan8[8] = {0, 0, 0, NAN, 0, 0, 0, 0};
    StTensor dup[2] = {good, good};
    StTensor neg = {"neg", 2, {-2, -4}, 8, (float *)eight};
    StTensor count = {"count", 2, {3, 2}, 8, (float *)eight};
    StTensor nan = {"nan", 1, {8}, 8, nan8};
    StTensor reserved = {"__metadata__", 1, {8}, 8, (float *)eight};
    struct { const StTensor *t; int n; const char *what; } cases[] = {
        {dup, 2, "'w' given twice"}, {&neg, 1, "negative"}, {&count, 1, "6 elements"},
        {&nan, 1, "NaN at index 3"}, {&reserved, 1, "reserved"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int rc = st_save(path, cases[c].t, cases[c].n, NULL, NULL, 0, err, sizeof err);
        ck_assert_msg(rc == 2, "case %zu: rc %d (%s)", c, rc, err);
        ck_assert_msg(strstr(err, cases[c].what) && strstr(err, path), "case %zu: %s", c, err);
    }
    const char *mk[2] = {"k", "k"}, *mv[2] = {"1", "2"};
    ck_assert_int_eq(st_save(path, &good, 1, mk, mv, 2, err, sizeof err), 2);
    ck_assert_ptr_nonnull(strstr(err, "'k' given twice"));
    size_t n1;
    unsigned char *after = read_bytes(path, &n1);
    ck_assert_uint_eq(n1, n0);
    ck_assert_int_eq(memcmp(before, after, n0), 0);
    assert_no_temp();
    free(before); free(after);
}
END_TEST

/* ==== malformed files: each fault its own test ============================== */

START_TEST(fault_shorter_than_8_bytes)
{
    char path[PATH_MAX];
    tpath(path, "short.safetensors");
    write_bytes(path, "\x10\0\0\0\0", 5);
    expect_bad(path, "shorter than the 8-byte", NULL);
}
END_TEST

START_TEST(fault_header_length_beyond_file)
{
    char path[PATH_MAX];
    tpath(path, "beyond.safetensors");
    write_st(path, 1000, "{}", 0, NULL, 0);
    expect_bad(path, "header length 1000 goes past the end", NULL);
}
END_TEST

START_TEST(fault_header_over_limit)
{
    char path[PATH_MAX];
    tpath(path, "limit.safetensors");
    write_st(path, 100000001ull, "{}", 0, NULL, 0);
    expect_bad(path, "over the limit of 100000000", NULL);
}
END_TEST

START_TEST(fault_header_not_json)
{
    char path[PATH_MAX];
    tpath(path, "notjson.safetensors");
    write_hdr(path, "{\"a\":{\"dtype\":\"F32\",", NULL, 0);
    expect_bad(path, "not valid JSON", NULL);
}
END_TEST

START_TEST(fault_header_not_utf8)
{
    char path[PATH_MAX];
    tpath(path, "utf8.safetensors");
    write_hdr(path, "{\"\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", eight, 8);
    expect_bad(path, "not valid JSON", NULL);
}
END_TEST

START_TEST(fault_header_trailing_garbage)
{
    char path[PATH_MAX];
    tpath(path, "garbage.safetensors");
    write_hdr(path, "{} x", NULL, 0);
    expect_bad(path, "not valid JSON", NULL);
}
END_TEST

START_TEST(fault_json_not_object)
{
    char path[PATH_MAX];
    tpath(path, "array.safetensors");
    write_hdr(path, "[1,2,3]", NULL, 0);
    expect_bad(path, "not a JSON object", NULL);
}
END_TEST

START_TEST(fault_duplicate_names)
{
    char path[PATH_MAX];
    tpath(path, "dup.safetensors");
    write_hdr(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", eight, 8);
    expect_bad(path, "duplicate", NULL);
    StFile f;
    char err[512];
    st_load(path, &f, err, sizeof err);
    ck_assert_msg(strstr(err, "\"w\"") != NULL, "duplicate name not shown: %s", err);
}
END_TEST

START_TEST(fault_unknown_dtype)
{
    char path[PATH_MAX];
    tpath(path, "dtype.safetensors");
    write_hdr(path, "{\"w\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", eight, 8);
    expect_bad(path, "unknown dtype 'F33'", "w");
}
END_TEST

/* A name from the file is printed with its control bytes escaped. */
START_TEST(fault_name_escaped)
{
    char path[PATH_MAX];
    tpath(path, "ctrl.safetensors");
    write_hdr(path, "{\"w\\u001b[2J\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", eight, 8);
    expect_bad(path, "tensor 'w\\x1b[2J': unknown dtype", NULL);
}
END_TEST

START_TEST(fault_missing_field)
{
    char path[PATH_MAX];
    tpath(path, "field.safetensors");
    write_hdr(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", eight, 8);
    expect_bad(path, "data_offsets", "w");
}
END_TEST

START_TEST(fault_size_not_matching_offsets)
{
    char path[PATH_MAX];
    tpath(path, "size.safetensors");
    write_hdr(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", eight, 12);
    expect_bad(path, "shape [2,2] x F32 is 16 bytes but data_offsets [0,12] span 12", "w");
}
END_TEST

START_TEST(fault_offsets_reversed)
{
    char path[PATH_MAX];
    tpath(path, "reversed.safetensors");
    write_hdr(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", eight, 8);
    expect_bad(path, "end before they begin", "w");
}
END_TEST

START_TEST(fault_offsets_gap)
{
    char path[PATH_MAX];
    tpath(path, "gap.safetensors");
    write_hdr(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}", eight, 16);
    expect_bad(path, "a gap of 4 bytes", "b");
}
END_TEST

START_TEST(fault_offsets_not_from_zero)
{
    char path[PATH_MAX];
    tpath(path, "zero.safetensors");
    write_hdr(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", eight, 8);
    expect_bad(path, "not 0", "a");
}
END_TEST

START_TEST(fault_offsets_overlap)
{
    char path[PATH_MAX];
    tpath(path, "overlap.safetensors");
    write_hdr(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", eight, 12);
    expect_bad(path, "overlap 'a'", "b");
}
END_TEST

START_TEST(fault_offsets_not_covering)
{
    char path[PATH_MAX];
    tpath(path, "cover.safetensors");
    write_hdr(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", eight, 12);
    expect_bad(path, "cover 8 bytes of a 12-byte data section", NULL);
}
END_TEST

START_TEST(fault_offsets_out_of_bounds)
{
    char path[PATH_MAX];
    tpath(path, "bounds.safetensors");
    write_hdr(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", eight, 8);
    expect_bad(path, "past the end of the data section (8 bytes)", "a");
}
END_TEST

START_TEST(fault_negative_shape)
{
    char path[PATH_MAX];
    tpath(path, "neg.safetensors");
    write_hdr(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2,-1],\"data_offsets\":[0,8]}}", eight, 8);
    expect_bad(path, "negative dimension -2", "a");
}
END_TEST

START_TEST(fault_shape_not_integers)
{
    char path[PATH_MAX];
    tpath(path, "float.safetensors");
    write_hdr(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", eight, 8);
    expect_bad(path, "non-negative integers", "a");
}
END_TEST

START_TEST(fault_shape_overflow)
{
    char path[PATH_MAX];
    tpath(path, "overflow.safetensors");
    write_hdr(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],"
                    "\"data_offsets\":[0,8]}}", eight, 8);
    expect_bad(path, "overflows", "a");
    /* numel fits, numel x 32 bits does not */
    write_hdr(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1152921504606846976],\"data_offsets\":[0,8]}}", eight, 8);
    expect_bad(path, "overflows", "a");
}
END_TEST

START_TEST(fault_too_many_dims)
{
    char path[PATH_MAX];
    tpath(path, "dims.safetensors");
    write_hdr(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", eight, 8);
    expect_bad(path, "9 dimensions", "a");
}
END_TEST

START_TEST(fault_metadata_not_string_map)
{
    char path[PATH_MAX];
    tpath(path, "meta.safetensors");
    write_hdr(path, "{\"__metadata__\":{\"kiln.arch\":\"tiny\",\"epochs\":3},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", eight, 8);
    expect_bad(path, "'epochs' is not a string", NULL);
    write_hdr(path, "{\"__metadata__\":[\"x\"],"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", eight, 8);
    expect_bad(path, "must be an object mapping strings to strings", NULL);
}
END_TEST

START_TEST(fault_nan_value)
{
    char path[PATH_MAX];
    tpath(path, "nan.safetensors");
    float v[3] = {1, NAN, 2};
    write_hdr(path, "{\"bn.gamma\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", v, 12);
    expect_bad(path, "a NaN at index 1", "bn.gamma");
}
END_TEST

START_TEST(fault_inf_value)
{
    char path[PATH_MAX];
    tpath(path, "inf.safetensors");
    uint16_t h[2] = {0x3C00, 0xFC00};   /* F16: 1, -Inf */
    write_hdr(path, "{\"conv.kernel\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", h, 4);
    expect_bad(path, "an infinite value at index 1", "conv.kernel");
    uint16_t b[1] = {0x7F80};           /* BF16 +Inf */
    write_hdr(path, "{\"conv.bias\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]}}", b, 2);
    expect_bad(path, "an infinite value at index 0", "conv.bias");
}
END_TEST

START_TEST(fault_unsupported_dtype_i64)
{
    char path[PATH_MAX];
    tpath(path, "i64.safetensors");
    int64_t v[1] = {7};
    write_hdr(path, "{\"step\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}", v, 8);
    expect_bad(path, "dtype I64; kiln loads F32, F16 and BF16", "step");
}
END_TEST

START_TEST(fault_not_a_regular_file)
{
    expect_bad(dir, "not a regular file", NULL);
}
END_TEST

/* A FIFO with no writer: refused at once, not waited on (the tcase's
 * timeout bounds the wait if it is not). */
START_TEST(fault_fifo)
{
    char path[PATH_MAX];
    tpath(path, "pipe.safetensors");
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    expect_bad(path, "not a regular file", NULL);
}
END_TEST

/* ==== weights: a small arch ================================================= */

static const char SMALL[] =
    "arch small\n"
    "input in size=8x8x3 scale=1/255 mean=0.5 std=0.25\n"
    "conv c1 filters=%d kernel=3 padding=same\n"
    "bn bn1\n"
    "relu r1\n"
    "gap gap\n"
    "dense head units=5\n"
    "softmax_ce loss\n";

typedef struct { Graph g; Plan p; float *arena; } Net;

/* The small arch (conv with `filters`, head with `classes` or 5 when 0),
 * planned, every parameter float set to a value that tells seed and place. */
static void net_open(Net *n, int filters, int classes, int seed)
{
    char text[512], err[512];
    snprintf(text, sizeof text, SMALL, filters);
    ck_assert_msg(graph_parse(&n->g, text, strlen(text), "small.arch", err, sizeof err) == 0, "%s", err);
    if (classes) ck_assert_msg(graph_set_num_classes(&n->g, classes, err, sizeof err) == 0, "%s", err);
    PlanOptions po = {.batch = 2, .fuse = 1, .fold = 1};
    ck_assert_msg(plan_build(&n->p, &n->g, &po, err, sizeof err) == 0, "%s", err);
    n->arena = calloc(n->p.param_floats + 1, sizeof(float));
    params_init(&n->p, n->arena, (uint64_t)seed, 0, n->g.n_layers - 1);
    for (size_t k = 0; k < n->p.param_floats; k++) n->arena[k] += (float)seed + (float)k * 1e-3f;
}

static void net_close(Net *n)
{
    free(n->arena);
    plan_free(&n->p);
    graph_free(&n->g);
}

/* Parameter NAME of n. */
static const float *net_param(const Net *n, const char *name)
{
    int i = graph_find_param(&n->g, name);
    ck_assert_msg(i >= 0, "no parameter %s", name);
    return n->arena + n->p.param_off[i];
}

/* Do a's and b's parameter NAME hold the same values? */
static int same_param(const Net *a, const Net *b, const char *name)
{
    int i = graph_find_param(&a->g, name), j = graph_find_param(&b->g, name);
    return a->g.params[i].numel == b->g.params[j].numel &&
           !memcmp(net_param(a, name), net_param(b, name), sizeof(float) * a->g.params[i].numel);
}

static const char *const SMALL_PARAMS[8] = {"c1.kernel", "c1.bias", "bn1.gamma", "bn1.beta",
                                            "bn1.moving_mean", "bn1.moving_variance", "head.kernel", "head.bias"};

/* Copy src to dst through st_load/st_save, dropping tensors whose names
 * start with `drop`, adding a 4-float tensor `add`, reshaping tensor `reshape`
 * to [numel] and, when set_key is not NULL, setting metadata set_key =
 * set_val (set_val NULL: remove every metadata pair). */
static void rewrite(const char *src, const char *dst, const char *drop, const char *add, const char *reshape,
                    const char *set_key, const char *set_val)
{
    StFile f;
    char err[512];
    ck_assert_msg(st_load(src, &f, err, sizeof err) == 0, "%s", err);
    StTensor ts[32];
    int n = 0;
    float four[4] = {1, 2, 3, 4};
    for (int i = 0; i < f.n; i++) {
        if (drop && !strncmp(f.tensors[i].name, drop, strlen(drop))) continue;
        ts[n] = f.tensors[i];
        if (reshape && !strcmp(ts[n].name, reshape)) { ts[n].ndim = 1; ts[n].shape[0] = (int64_t)ts[n].numel; }
        n++;
    }
    if (add) ts[n++] = (StTensor){(char *)add, 1, {4}, 4, four};
    const char *mk[16], *mv[16];
    int nm = 0, seen = 0;
    for (int i = 0; i < f.n_meta && set_key; i++) {
        if (!set_val) break;
        mk[nm] = f.meta_keys[i];
        mv[nm] = f.meta_values[i];
        if (!strcmp(mk[nm], set_key)) { mv[nm] = set_val; seen = 1; }
        nm++;
    }
    if (!set_key)
        for (int i = 0; i < f.n_meta; i++) { mk[nm] = f.meta_keys[i]; mv[nm] = f.meta_values[i]; nm++; }
    else if (set_val && !seen) { mk[nm] = set_key; mv[nm] = set_val; nm++; }
    ck_assert_msg(st_save(dst, ts, n, mk, mv, nm, err, sizeof err) == 0, "%s", err);
    st_free(&f);
}

/* weights_load into net b from path: rc, err, report, the warning text. */
typedef struct { int rc; char err[1024]; WeightsReport rep; char warn[2048]; } LoadResult;

static void load_into(Net *b, const char *path, LoadResult *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *w = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(w);
    r->err[0] = 0;
    r->rc = weights_load(&b->p, b->arena, path, &r->rep, w, r->err, sizeof r->err);
    fclose(w);
    snprintf(r->warn, sizeof r->warn, "%s", buf ? buf : "");
    free(buf);
}

/* A saved small net (seed 1) at dir/NAME. */
static void saved_small(Net *a, char *path, const char *name)
{
    char err[512];
    net_open(a, 4, 0, 1);
    tpath(path, name);
    ck_assert_msg(weights_save(&a->p, a->arena, path, NULL, 0, err, sizeof err) == 0, "%s", err);
}

/* Loading must fail with rc 2, the file named, `what` said, and net b's
 * arena untouched. */
static void expect_load_fails(Net *b, const char *path, const char *what, LoadResult *r)
{
    float *before = malloc(sizeof(float) * (b->p.param_floats + 1));
    memcpy(before, b->arena, sizeof(float) * b->p.param_floats);
    load_into(b, path, r);
    ck_assert_msg(r->rc == 2, "rc %d: %s", r->rc, r->err);
    ck_assert_msg(strstr(r->err, path) != NULL, "file not named: %s", r->err);
    ck_assert_msg(strstr(r->err, what) != NULL, "expected '%s' in: %s", what, r->err);
    ck_assert_int_eq(memcmp(before, b->arena, sizeof(float) * b->p.param_floats), 0);
    free(before);
}

START_TEST(weights_round_trip)
{
    char path[PATH_MAX], err[512];
    Net a, b;
    saved_small(&a, path, "small.safetensors");
    net_open(&b, 4, 0, 2);
    ck_assert(!same_param(&a, &b, "c1.kernel"));
    LoadResult r;
    load_into(&b, path, &r);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    ck_assert_int_eq(r.rep.loaded, 8);
    ck_assert_int_eq(r.rep.extra, 0);
    ck_assert_int_eq(r.rep.head_replaced, 0);
    ck_assert_str_eq(r.warn, "");
    for (int i = 0; i < 8; i++) ck_assert_msg(same_param(&a, &b, SMALL_PARAMS[i]), "%s differs", SMALL_PARAMS[i]);
    ck_assert_int_eq(memcmp(a.arena, b.arena, sizeof(float) * a.p.param_floats), 0);

    /* the file: graph names and shapes, kiln metadata */
    StFile f;
    ck_assert_msg(st_load(path, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(f.n, 8);
    const StTensor *k = st_find(&f, "c1.kernel");
    ck_assert_ptr_nonnull(k);
    ck_assert_int_eq(k->ndim, 4);
    ck_assert_int_eq(k->shape[0], 3);
    ck_assert_int_eq(k->shape[2], 3);
    ck_assert_int_eq(k->shape[3], 4);
    ck_assert_int_eq(st_find(&f, "head.kernel")->shape[1], 5);
    ck_assert_str_eq(st_meta(&f, "kiln.arch"), "small");
    ck_assert_str_eq(st_meta(&f, "kiln.input"), "8x8x3");
    ck_assert_str_eq(st_meta(&f, "kiln.mean"), "0.5,0.5,0.5");
    ck_assert_str_eq(st_meta(&f, "kiln.std"), "0.25,0.25,0.25");
    ck_assert_float_eq((float)strtod(st_meta(&f, "kiln.scale"), NULL), 1.0f / 255.0f);
    st_free(&f);
    net_close(&a); net_close(&b);
}
END_TEST

START_TEST(weights_missing_tensor)
{
    char path[PATH_MAX], cut[PATH_MAX];
    Net a, b;
    saved_small(&a, path, "full.safetensors");
    tpath(cut, "cut.safetensors");
    rewrite(path, cut, "bn1.gamma", NULL, NULL, NULL, NULL);
    net_open(&b, 4, 0, 2);
    LoadResult r;
    expect_load_fails(&b, cut, "tensor 'bn1.gamma' is missing", &r);
    net_close(&a); net_close(&b);
}
END_TEST

START_TEST(weights_extra_tensor_warns)
{
    char path[PATH_MAX], more[PATH_MAX];
    Net a, b;
    saved_small(&a, path, "full.safetensors");
    tpath(more, "more.safetensors");
    rewrite(path, more, NULL, "aux_head.kernel", NULL, NULL, NULL);
    net_open(&b, 4, 0, 2);
    LoadResult r;
    load_into(&b, more, &r);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    ck_assert_int_eq(r.rep.extra, 1);
    ck_assert_int_eq(r.rep.loaded, 8);
    ck_assert_msg(strstr(r.warn, "1 tensor the arch does not have") && strstr(r.warn, "'aux_head.kernel'") &&
                  strstr(r.warn, more), "warning: %s", r.warn);
    ck_assert(same_param(&a, &b, "bn1.moving_variance"));
    net_close(&a); net_close(&b);
}
END_TEST

/* Tensor names and metadata values from the file reach the warning and the
 * error with their control bytes escaped. */
START_TEST(weights_names_escaped)
{
    char path[PATH_MAX], more[PATH_MAX];
    Net a, b;
    saved_small(&a, path, "full.safetensors");
    tpath(more, "ctrl.safetensors");
    rewrite(path, more, NULL, "aux\x1b[31m", NULL, NULL, NULL);
    net_open(&b, 4, 0, 2);
    LoadResult r;
    load_into(&b, more, &r);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    ck_assert_msg(strstr(r.warn, "'aux\\x1b[31m'") && !strchr(r.warn, '\x1b'), "warning: %s", r.warn);
    rewrite(path, more, NULL, NULL, NULL, "kiln.arch", "x\x1b[2J");
    expect_load_fails(&b, more, "kiln.arch is 'x\\x1b[2J'", &r);
    ck_assert_ptr_null(strchr(r.err, '\x1b'));
    net_close(&a); net_close(&b);
}
END_TEST

START_TEST(weights_shape_mismatch)
{
    char path[PATH_MAX], err[512];
    Net wide, b;
    net_open(&wide, 8, 0, 1);
    tpath(path, "wide.safetensors");
    ck_assert_msg(weights_save(&wide.p, wide.arena, path, NULL, 0, err, sizeof err) == 0, "%s", err);
    net_open(&b, 4, 0, 2);
    LoadResult r;
    expect_load_fails(&b, path, "tensor 'c1.kernel' has shape [3,3,3,8], the arch wants [3,3,3,4]", &r);
    net_close(&wide); net_close(&b);
}
END_TEST

/* A head with another class count keeps its fresh init; the rest loads. */
START_TEST(weights_head_replaced)
{
    char path[PATH_MAX];
    Net a, b, fresh;
    saved_small(&a, path, "five.safetensors");
    net_open(&b, 4, 3, 2);
    net_open(&fresh, 4, 3, 2);           /* b's values before loading */
    LoadResult r;
    load_into(&b, path, &r);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    ck_assert_int_eq(r.rep.head_replaced, 1);
    ck_assert_int_eq(r.rep.head_from, 5);
    ck_assert_int_eq(r.rep.loaded, 6);
    ck_assert_int_eq(r.rep.extra, 0);
    ck_assert(same_param(&b, &fresh, "head.kernel"));
    ck_assert(same_param(&b, &fresh, "head.bias"));
    for (int i = 0; i < 6; i++) ck_assert_msg(same_param(&a, &b, SMALL_PARAMS[i]), "%s", SMALL_PARAMS[i]);
    net_close(&a); net_close(&b); net_close(&fresh);
}
END_TEST

/* A "notop" file (no head at all) loads, the head keeps its fresh init. */
START_TEST(weights_head_absent)
{
    char path[PATH_MAX], notop[PATH_MAX];
    Net a, b, fresh;
    saved_small(&a, path, "full.safetensors");
    tpath(notop, "notop.safetensors");
    rewrite(path, notop, "head.", NULL, NULL, NULL, NULL);
    net_open(&b, 4, 0, 2);
    net_open(&fresh, 4, 0, 2);
    LoadResult r;
    load_into(&b, notop, &r);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    ck_assert_int_eq(r.rep.head_replaced, 1);
    ck_assert_int_eq(r.rep.head_from, 0);
    ck_assert_int_eq(r.rep.loaded, 6);
    ck_assert(same_param(&b, &fresh, "head.kernel"));
    ck_assert(same_param(&a, &b, "c1.kernel"));
    net_close(&a); net_close(&b); net_close(&fresh);
}
END_TEST

/* A head that differs in more than its class count is a shape mismatch. */
START_TEST(weights_head_other_features)
{
    char path[PATH_MAX], flat[PATH_MAX];
    Net a, b;
    saved_small(&a, path, "full.safetensors");
    tpath(flat, "flat.safetensors");
    rewrite(path, flat, NULL, NULL, "head.kernel", NULL, NULL);
    net_open(&b, 4, 0, 2);
    LoadResult r;
    expect_load_fails(&b, flat, "tensor 'head.kernel' has shape [20], the arch wants [4,5]", &r);
    net_close(&a); net_close(&b);
}
END_TEST

START_TEST(weights_other_architecture)
{
    char path[PATH_MAX], other[PATH_MAX];
    Net a, b;
    saved_small(&a, path, "full.safetensors");
    tpath(other, "other.safetensors");
    rewrite(path, other, NULL, NULL, NULL, "kiln.arch", "resnet50v2");
    net_open(&b, 4, 0, 2);
    LoadResult r;
    expect_load_fails(&b, other, "a checkpoint of another architecture: kiln.arch is 'resnet50v2', the arch is 'small'", &r);
    net_close(&a); net_close(&b);
}
END_TEST

START_TEST(weights_other_preprocessing)
{
    char path[PATH_MAX], other[PATH_MAX];
    Net a, b;
    saved_small(&a, path, "full.safetensors");
    net_open(&b, 4, 0, 2);
    LoadResult r;
    tpath(other, "scale.safetensors");
    rewrite(path, other, NULL, NULL, NULL, "kiln.scale", "0.00784313725");
    expect_load_fails(&b, other, "other preprocessing: kiln.scale is 0.00784313725", &r);
    tpath(other, "mean.safetensors");
    rewrite(path, other, NULL, NULL, NULL, "kiln.mean", "0.485,0.456,0.406");
    expect_load_fails(&b, other, "kiln.mean is 0.485,0.456,0.406 in the file, 0.5,0.5,0.5 in the arch", &r);
    tpath(other, "std.safetensors");
    rewrite(path, other, NULL, NULL, NULL, "kiln.std", "0.5");
    expect_load_fails(&b, other, "kiln.std is 0.5", &r);
    tpath(other, "gray.safetensors");
    rewrite(path, other, NULL, NULL, NULL, "kiln.input", "8x8x1");
    expect_load_fails(&b, other, "1-channel input", &r);
    /* another resolution is ordinary fine-tuning; one mean for all channels
     * equals the per-channel list */
    tpath(other, "big.safetensors");
    rewrite(path, other, NULL, NULL, NULL, "kiln.input", "224x224x3");
    load_into(&b, other, &r);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    rewrite(path, other, NULL, NULL, NULL, "kiln.mean", "0.5");
    load_into(&b, other, &r);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    net_close(&a); net_close(&b);
}
END_TEST

/* Foreign converters write no kiln metadata: accepted, with a warning. */
START_TEST(weights_without_metadata_warns)
{
    char path[PATH_MAX], bare[PATH_MAX];
    Net a, b;
    saved_small(&a, path, "full.safetensors");
    tpath(bare, "bare.safetensors");
    rewrite(path, bare, NULL, NULL, NULL, "kiln.arch", NULL);
    net_open(&b, 4, 0, 2);
    LoadResult r;
    load_into(&b, bare, &r);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    ck_assert_int_eq(r.rep.loaded, 8);
    ck_assert_msg(strstr(r.warn, "no kiln metadata") && strstr(r.warn, "preprocessing are not checked") &&
                  strstr(r.warn, bare), "warning: %s", r.warn);
    net_close(&a); net_close(&b);
}
END_TEST

START_TEST(weights_unsupported_dtype)
{
    char path[PATH_MAX];
    Net b;
    tpath(path, "i64.safetensors");
    int64_t v[4] = {1, 2, 3, 4};
    write_hdr(path, "{\"c1.bias\":{\"dtype\":\"I64\",\"shape\":[4],\"data_offsets\":[0,32]}}", v, 32);
    net_open(&b, 4, 0, 2);
    LoadResult r;
    expect_load_fails(&b, path, "tensor 'c1.bias' has dtype I64", &r);
    net_close(&b);
}
END_TEST

/* PyTorch and Keras files are named as such, with the importer to use. */
START_TEST(weights_pytorch_and_keras_files_refused)
{
    char path[PATH_MAX];
    Net b;
    net_open(&b, 4, 0, 2);
    unsigned char buf[256];
    memset(buf, 0, sizeof buf);
    struct { const char *name, *magic; size_t len; const char *what; } cases[] = {
        {"model.pth", "PK\x03\x04\x14\x00\x00\x00", 8, "a PyTorch .pth file (zip archive), not safetensors: convert it with tools/import-pth"},
        {"legacy.pth", "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46", 8, "a PyTorch .pth file (legacy pickle), not safetensors: convert it with tools/import-pth"},
        {"model.h5", "\x89HDF\r\n\x1a\n", 8, "a Keras HDF5 file, not safetensors: convert it with tools/import-keras"},
    };
    for (size_t c = 0; c < 3; c++) {
        tpath(path, cases[c].name);
        memcpy(buf, cases[c].magic, cases[c].len);
        write_bytes(path, buf, sizeof buf);
        LoadResult r;
        expect_load_fails(&b, path, cases[c].what, &r);
    }
    net_close(&b);
}
END_TEST

/* A real safetensors file whose header length starts with the bytes 80 05
 * (a pickle protocol marker) is not mistaken for a .pth file. */
START_TEST(weights_pickle_lookalike_length_loads)
{
    char path[PATH_MAX], odd[PATH_MAX];
    Net a, b;
    saved_small(&a, path, "full.safetensors");
    size_t n;
    unsigned char *src = read_bytes(path, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | src[i];
    size_t jl = hl;
    while (jl && src[8 + jl - 1] == ' ') jl--;
    ck_assert_uint_lt(jl, 1408);
    char *hdr = calloc(1409, 1);
    memcpy(hdr, src + 8, jl);
    tpath(odd, "odd.safetensors");
    write_st(odd, 1408, hdr, 1408 - (int)jl, src + 8 + hl, n - 8 - hl);   /* 1408 = 0x0580 */
    size_t m;
    unsigned char *b2 = read_bytes(odd, &m);
    ck_assert_int_eq(b2[0], 0x80);
    ck_assert_int_eq(b2[1], 0x05);
    net_open(&b, 4, 0, 2);
    LoadResult r;
    load_into(&b, odd, &r);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    ck_assert_int_eq(r.rep.loaded, 8);
    ck_assert(same_param(&a, &b, "head.bias"));
    free(src); free(hdr); free(b2);
    net_close(&a); net_close(&b);
}
END_TEST

START_TEST(weights_missing_file)
{
    char path[PATH_MAX];
    Net b;
    net_open(&b, 4, 0, 2);
    tpath(path, "nothing.safetensors");
    LoadResult r;
    expect_load_fails(&b, path, "cannot open", &r);
    net_close(&b);
}
END_TEST

START_TEST(weights_fifo_refused)
{
    char path[PATH_MAX];
    Net b;
    net_open(&b, 4, 0, 2);
    tpath(path, "pipe.safetensors");
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    LoadResult r;
    expect_load_fails(&b, path, "not a regular file", &r);
    net_close(&b);
}
END_TEST

/* ==== the command =========================================================== */

/* Run "$KILN_BIN train ARGS" on tiny.arch for one epoch (stdout and stderr
 * together into out, cut to outlen); returns the exit code, -1 if there is
 * no binary, -2 if it did not exit. */
static int run_train(const char *args, char *out, size_t outlen)
{
    const char *bin = getenv("KILN_BIN"), *src = getenv("KILN_SOURCE_DIR");
    if (!bin || access(bin, X_OK) != 0) return -1;
    int rc;
    char *o = kiln_output(&rc, "train --arch '%s/archs/tiny.arch' --epochs 1 --batch 16 --no-out %s", src ? src : ".",
                          args);
    snprintf(out, outlen, "%s", o);
    free(o);
    return rc < 0 ? -2 : rc;
}

START_TEST(kiln_train_weights_command)
{
    char w[PATH_MAX], pth[PATH_MAX], args[PATH_MAX * 2], out[16384];
    tpath(w, "tiny.safetensors");
    snprintf(args, sizeof args, "--data synthetic:n=64 --weights none --save '%s'", w);
    int rc = run_train(args, out, sizeof out);
    if (rc == -1) {
        printf("kiln_train_weights_command: SKIPPED: no kiln binary (KILN_BIN unset or not built)\n");
        return;
    }
    ck_assert_msg(rc == 0, "kiln train --save exited %d: %s", rc, out);
    /* tiny.arch's parameters, and how many belong to its head */
    Graph g;
    char err[512], line[PATH_MAX + 64], arch[PATH_MAX];
    const char *src = getenv("KILN_SOURCE_DIR");
    snprintf(arch, sizeof arch, "%s/archs/tiny.arch", src ? src : ".");
    ck_assert_msg(graph_load(&g, arch, err, sizeof err) == 0, "%s", err);
    int n_params = g.n_params, n_head = g.layers[graph_head(&g)].n_params;
    graph_free(&g);
    ck_assert_int_eq(n_head, 2);
    StFile f;
    ck_assert_msg(st_load(w, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(f.n, n_params);
    ck_assert_str_eq(st_meta(&f, "kiln.arch"), "tiny");
    ck_assert_int_eq(st_find(&f, "head.kernel")->shape[1], 4);
    st_free(&f);

    /* 3 classes: the 4-class head is resized before planning, replaced on
     * load; the other tensors load */
    snprintf(args, sizeof args, "--data synthetic:classes=3,n=60 --weights '%s'", w);
    rc = run_train(args, out, sizeof out);
    ck_assert_msg(rc == 0, "kiln train --weights exited %d: %s", rc, out);
    snprintf(line, sizeof line, "weights %s: %d tensors loaded", w, n_params - n_head);
    ck_assert_msg(strstr(out, line) && strstr(out, "head 'head' replaced") && strstr(out, "4 -> 3 classes") &&
                  strstr(out, "fresh He init"), "%s", out);

    /* same class count: all load */
    snprintf(args, sizeof args, "--data synthetic:n=64 --weights '%s'", w);
    rc = run_train(args, out, sizeof out);
    ck_assert_msg(rc == 0, "exited %d: %s", rc, out);
    snprintf(line, sizeof line, "weights %s: %d tensors loaded", w, n_params);
    ck_assert_msg(strstr(out, line) && !strstr(out, "replaced"), "%s", out);

    tpath(pth, "model.pth");
    write_bytes(pth, "PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00", 12);
    snprintf(args, sizeof args, "--data synthetic:n=64 --weights '%s'", pth);
    ck_assert_int_eq(run_train(args, out, sizeof out), 2);
    ck_assert_msg(strstr(out, "tools/import-pth") && strstr(out, pth), "%s", out);
}
END_TEST

/* ==== suite ================================================================= */

static Suite *st_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *io = tcase_create("io");
    tcase_add_checked_fixture(io, setup, teardown);
    tcase_add_test(io, round_trip_f32);
    tcase_add_test(io, exact_bytes_and_padding);
    tcase_add_test(io, load_f16);
    tcase_add_test(io, load_bf16);
    tcase_add_test(io, mixed_dtypes_any_header_order_padded);
    tcase_add_test(io, no_tensors);
    tcase_add_test(io, failed_write_keeps_old_file);
    tcase_add_test(io, save_into_missing_directory);
    tcase_add_test(io, save_bad_arguments_keep_old_file);
    suite_add_tcase(s, io);

    TCase *bad = tcase_create("faults");
    tcase_add_checked_fixture(bad, setup, teardown);
    tcase_add_test(bad, fault_shorter_than_8_bytes);
    tcase_add_test(bad, fault_header_length_beyond_file);
    tcase_add_test(bad, fault_header_over_limit);
    tcase_add_test(bad, fault_header_not_json);
    tcase_add_test(bad, fault_header_not_utf8);
    tcase_add_test(bad, fault_header_trailing_garbage);
    tcase_add_test(bad, fault_json_not_object);
    tcase_add_test(bad, fault_duplicate_names);
    tcase_add_test(bad, fault_unknown_dtype);
    tcase_add_test(bad, fault_missing_field);
    tcase_add_test(bad, fault_name_escaped);
    tcase_add_test(bad, fault_size_not_matching_offsets);
    tcase_add_test(bad, fault_offsets_reversed);
    tcase_add_test(bad, fault_offsets_gap);
    tcase_add_test(bad, fault_offsets_not_from_zero);
    tcase_add_test(bad, fault_offsets_overlap);
    tcase_add_test(bad, fault_offsets_not_covering);
    tcase_add_test(bad, fault_offsets_out_of_bounds);
    tcase_add_test(bad, fault_negative_shape);
    tcase_add_test(bad, fault_shape_not_integers);
    tcase_add_test(bad, fault_shape_overflow);
    tcase_add_test(bad, fault_too_many_dims);
    tcase_add_test(bad, fault_metadata_not_string_map);
    tcase_add_test(bad, fault_nan_value);
    tcase_add_test(bad, fault_inf_value);
    tcase_add_test(bad, fault_unsupported_dtype_i64);
    tcase_add_test(bad, fault_not_a_regular_file);
    tcase_add_test(bad, fault_fifo);
    suite_add_tcase(s, bad);

    TCase *w = tcase_create("weights");
    tcase_add_checked_fixture(w, setup, teardown);
    tcase_add_test(w, weights_round_trip);
    tcase_add_test(w, weights_missing_tensor);
    tcase_add_test(w, weights_extra_tensor_warns);
    tcase_add_test(w, weights_names_escaped);
    tcase_add_test(w, weights_shape_mismatch);
    tcase_add_test(w, weights_head_replaced);
    tcase_add_test(w, weights_head_absent);
    tcase_add_test(w, weights_head_other_features);
    tcase_add_test(w, weights_other_architecture);
    tcase_add_test(w, weights_other_preprocessing);
    tcase_add_test(w, weights_without_metadata_warns);
    tcase_add_test(w, weights_unsupported_dtype);
    tcase_add_test(w, weights_pytorch_and_keras_files_refused);
    tcase_add_test(w, weights_pickle_lookalike_length_loads);
    tcase_add_test(w, weights_missing_file);
    tcase_add_test(w, weights_fifo_refused);
    suite_add_tcase(s, w);

    TCase *cmd = tcase_create("command");
    tcase_add_checked_fixture(cmd, setup, teardown);
    tcase_set_timeout(cmd, 300);
    tcase_add_test(cmd, kiln_train_weights_command);
    suite_add_tcase(s, cmd);
    return s;
}

Suite *test_suite(void)
{
    return st_suite();
}
