/* runtime/safetensors.c — safetensors read and write (see safetensors.h).
 *
 * Reading: fstat, fread the 8-byte length and the JSON header, parse it with
 * jansson (duplicate keys rejected), validate every entry, sort the entries
 * by data_offsets and check that they tile the data section exactly, as the
 * reference implementation does; only then allocate and read the data,
 * converting F16/BF16 to float, and reject NaN/Inf. Nothing is allocated
 * before the header is known to be sound, so the allocation is bounded by the
 * file size (twice it for half-precision files).
 *
 * Writing: the header is a compact JSON object (__metadata__ first, then the
 * tensors in the caller's order, contiguous from offset 0) padded with spaces
 * to a multiple of 8 bytes, so that every F32 tensor starts 4-byte aligned in
 * a mapped file, as the reference writer does. The bytes are written
 * atomically by kiln_write_atomic (runtime/files.h: a temporary file beside
 * PATH, fsynced and renamed over it).
 *
 * Invariant: the host is little-endian (checked at compile time where the
 * compiler says, and at run time before any float crosses the file).
 */
#include "runtime/safetensors.h"
#include "datasets/dataset.h"
#include "runtime/files.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kiln's safetensors I/O assumes a little-endian host"
#endif

#define ST_HEADER_LIMIT 100000000ull   /* the reference's MAX_HEADER_SIZE */
#define ST_META_KEY "__metadata__"

/* ==== helpers ============================================================= */

/* Format a message into err and return rc. Tensor names and metadata come
 * from the file: the message is escaped (dataset_escape) as a whole. */
static int st_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        dataset_escape(err, errlen, msg, strlen(msg));
    }
    return rc;
}

/* 1 when the host stores the least significant byte first. */
static int host_little_endian(void)
{
    uint16_t v = 1;
    unsigned char b;
    memcpy(&b, &v, 1);
    return b == 1;
}

/* The dtypes the reference knows, with their width in bits. To add one: a
 * row here (the name as the reference spells it); loading it as weights
 * also needs a case in convert(). */
typedef struct { const char *name; int bits; } DtypeInfo;
static const DtypeInfo DTYPES[] = {
    {"BOOL", 8}, {"F4", 4}, {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8}, {"I8", 8},
    {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"I16", 16}, {"U16", 16},
    {"F16", 16}, {"BF16", 16}, {"I32", 32}, {"U32", 32}, {"F32", 32}, {"C64", 64},
    {"F64", 64}, {"I64", 64}, {"U64", 64},
};

/* The row of dtype NAME, or NULL. */
static const DtypeInfo *dtype_find(const char *name)
{
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (!strcmp(DTYPES[i].name, name)) return &DTYPES[i];
    return NULL;
}

/* "[3,3,3,32]" into buf. */
static void shape_str(char *buf, size_t len, const int64_t *shape, int ndim)
{
    size_t o = 0;
    o += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

/* IEEE half (1-5-10) to float, exactly: every half is a float. */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu, bits;
    if (exp == 0) {                          /* zero or subnormal: mant x 2^-24 */
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);   /* Inf, NaN */
    else bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* bfloat16 is the top half of a float32. */
static float bf16_to_float(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* ==== reading ============================================================= */

/* One header entry while validating. */
typedef struct {
    const char *name;         /* jansson's key, valid while the root lives */
    const DtypeInfo *dt;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    uint64_t begin, end;
    size_t order;             /* position in the header, to keep sorting stable */
} Entry;

/* Order entries by (begin, end), as the reference sorts them. */
static int entry_cmp(const void *a, const void *b)
{
    const Entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* A JSON integer >= 0 into *out; -1 if v is not one. */
static int json_uint(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v)) return -1;
    json_int_t i = json_integer_value(v);
    if (i < 0) return -1;
    *out = (uint64_t)i;
    return 0;
}

/* Validate one tensor entry into e. Returns 0 or 2 with a message. */
static int parse_entry(const char *path, const char *name, json_t *v, Entry *e,
                       char *err, size_t errlen)
{
    e->name = name;
    if (!json_is_object(v))
        return st_fail(err, errlen, 2, "%s: tensor '%s': the header entry is not a JSON object", path, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return st_fail(err, errlen, 2, "%s: tensor '%s': no \"dtype\" string", path, name);
    if (!(e->dt = dtype_find(json_string_value(jd))))
        return st_fail(err, errlen, 2, "%s: tensor '%s': unknown dtype '%s'", path, name,
                       json_string_value(jd));
    if (!json_is_array(js))
        return st_fail(err, errlen, 2, "%s: tensor '%s': no \"shape\" array", path, name);
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return st_fail(err, errlen, 2, "%s: tensor '%s': %zu dimensions, kiln reads at most %d",
                       path, name, nd, ST_MAX_DIMS);
    e->ndim = (int)nd;
    uint64_t numel = 1;
    int overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (json_is_integer(d) && json_integer_value(d) < 0)
            return st_fail(err, errlen, 2, "%s: tensor '%s': negative dimension %lld in its shape",
                           path, name, (long long)json_integer_value(d));
        uint64_t u;
        if (json_uint(d, &u))
            return st_fail(err, errlen, 2, "%s: tensor '%s': shape entries must be non-negative integers",
                           path, name);
        e->shape[i] = (int64_t)u;
        if (u && numel > UINT64_MAX / u) overflow = 1;
        else numel *= u;
    }
    /* numel x bits must fit (the reference: checked_mul over usize) */
    uint64_t bits = (uint64_t)e->dt->bits;
    char shp[200];
    shape_str(shp, sizeof shp, e->shape, e->ndim);
    if (overflow || numel > SIZE_MAX || (numel && bits > UINT64_MAX / numel))
        return st_fail(err, errlen, 2, "%s: tensor '%s': shape %s x %s overflows", path, name, shp,
                       e->dt->name);
    e->numel = (size_t)numel;
    if ((numel * bits) % 8)
        return st_fail(err, errlen, 2, "%s: tensor '%s': shape %s x %s is not a whole number of bytes",
                       path, name, shp, e->dt->name);
    uint64_t nbytes = numel * bits / 8;
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        json_uint(json_array_get(jo, 0), &e->begin) || json_uint(json_array_get(jo, 1), &e->end))
        return st_fail(err, errlen, 2,
                       "%s: tensor '%s': \"data_offsets\" must be [begin, end], two non-negative integers",
                       path, name);
    if (e->end < e->begin)
        return st_fail(err, errlen, 2, "%s: tensor '%s': data_offsets [%llu,%llu] end before they begin",
                       path, name, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end - e->begin != nbytes)
        return st_fail(err, errlen, 2,
                       "%s: tensor '%s': shape %s x %s is %llu bytes but data_offsets [%llu,%llu] span %llu",
                       path, name, shp, e->dt->name, (unsigned long long)nbytes,
                       (unsigned long long)e->begin, (unsigned long long)e->end,
                       (unsigned long long)(e->end - e->begin));
    return 0;
}

/* __metadata__ into f. Returns 0, 2 with a message, 1 out of memory. */
static int parse_meta(const char *path, json_t *m, StFile *f, char *err, size_t errlen)
{
    if (json_is_null(m)) return 0;    /* the reference reads null as absent */
    if (!json_is_object(m))
        return st_fail(err, errlen, 2, "%s: \"%s\" must be an object mapping strings to strings",
                       path, ST_META_KEY);
    size_t n = json_object_size(m);
    f->meta_keys = calloc(n + 1, sizeof(char *));
    f->meta_values = calloc(n + 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_values) return st_fail(err, errlen, 1, "%s: out of memory", path);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) {
        if (!json_is_string(v))
            return st_fail(err, errlen, 2, "%s: \"%s\" must map strings to strings; '%s' is not a string",
                           path, ST_META_KEY, k);
        f->meta_keys[f->n_meta] = strdup(k);
        f->meta_values[f->n_meta] = strdup(json_string_value(v));
        f->n_meta++;
        if (!f->meta_keys[f->n_meta - 1] || !f->meta_values[f->n_meta - 1])
            return st_fail(err, errlen, 1, "%s: out of memory", path);
    }
    return 0;
}

/* Read the data of entry e (at file offset `at`) into t as floats. Returns 0,
 * 2 with a message (dtype not loadable, NaN/Inf), 1 on I/O or memory. */
static int read_tensor(const char *path, FILE *fp, uint64_t at, const Entry *e, StTensor *t,
                       char *err, size_t errlen)
{
    int is32 = !strcmp(e->dt->name, "F32"), is16 = !strcmp(e->dt->name, "F16"),
        isb16 = !strcmp(e->dt->name, "BF16");
    if (!is32 && !is16 && !isb16)
        return st_fail(err, errlen, 2, "%s: tensor '%s' has dtype %s; kiln loads F32, F16 and BF16 weights only",
                       path, e->name, e->dt->name);
    if (!(t->data = malloc(sizeof(float) * (e->numel ? e->numel : 1))))
        return st_fail(err, errlen, 1, "%s: out of memory for tensor '%s' (%zu floats)", path, e->name, e->numel);
    if (e->numel == 0) return 0;
    if (fseeko(fp, (off_t)at, SEEK_SET))
        return st_fail(err, errlen, 1, "%s: seek failed: %s", path, strerror(errno));
    if (is32) {
        if (fread(t->data, sizeof(float), e->numel, fp) != e->numel)
            return st_fail(err, errlen, 1, "%s: read error in tensor '%s'", path, e->name);
    } else {
        /* convert in chunks so that the temporary stays small */
        uint16_t buf[4096];
        for (size_t done = 0; done < e->numel;) {
            size_t k = e->numel - done < 4096 ? e->numel - done : 4096;
            if (fread(buf, 2, k, fp) != k)
                return st_fail(err, errlen, 1, "%s: read error in tensor '%s'", path, e->name);
            for (size_t i = 0; i < k; i++)
                t->data[done + i] = is16 ? half_to_float(buf[i]) : bf16_to_float(buf[i]);
            done += k;
        }
    }
    for (size_t i = 0; i < e->numel; i++)
        if (!isfinite(t->data[i]))
            return st_fail(err, errlen, 2, "%s: tensor '%s' has %s at index %zu", path, e->name,
                           isnan(t->data[i]) ? "a NaN" : "an infinite value", i);
    return 0;
}

/* Parse and validate the header; fill out->tensors names and shapes (data
 * not yet read) and the metadata; sorted entries into *entries. */
static int read_header(const char *path, FILE *fp, uint64_t fsize, StFile *out, Entry **entries,
                       uint64_t *data_start, char *err, size_t errlen)
{
    unsigned char lb[8];
    if (fsize < 8)
        return st_fail(err, errlen, 2, "%s: %llu bytes, shorter than the 8-byte header length of a safetensors file",
                       path, (unsigned long long)fsize);
    if (fread(lb, 1, 8, fp) != 8) return st_fail(err, errlen, 1, "%s: read error", path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | lb[i];
    if (n > ST_HEADER_LIMIT)
        return st_fail(err, errlen, 2, "%s: header length %llu is over the limit of %llu bytes "
                       "(not a safetensors file?)", path, (unsigned long long)n, ST_HEADER_LIMIT);
    if (n > fsize - 8)
        return st_fail(err, errlen, 2, "%s: header length %llu goes past the end of the file (%llu bytes)",
                       path, (unsigned long long)n, (unsigned long long)fsize);
    char *hdr = malloc((size_t)n + 1);
    if (!hdr) return st_fail(err, errlen, 1, "%s: out of memory for a %llu-byte header", path, (unsigned long long)n);
    if (fread(hdr, 1, (size_t)n, fp) != (size_t)n) {
        free(hdr);
        return st_fail(err, errlen, 1, "%s: read error", path);
    }
    json_error_t je;
    json_t *root = json_loadb(hdr, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    free(hdr);
    if (!root) {
#if JANSSON_VERSION_HEX >= 0x020b00
        if (json_error_code(&je) == json_error_duplicate_key)
            return st_fail(err, errlen, 2, "%s: a name appears twice in the header (%s)", path, je.text);
#endif
        return st_fail(err, errlen, 2, "%s: header is not valid JSON: %s (header byte %d)", path, je.text,
                       je.position);
    }
    int rc = 0;
    if (!json_is_object(root)) {
        rc = st_fail(err, errlen, 2, "%s: header is JSON but not a JSON object", path);
        goto done;
    }
    size_t cap = json_object_size(root);
    Entry *es = calloc(cap + 1, sizeof *es);
    out->tensors = calloc(cap + 1, sizeof *out->tensors);
    *entries = es;
    if (!es || !out->tensors) { rc = st_fail(err, errlen, 1, "%s: out of memory", path); goto done; }
    size_t ne = 0;
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) {
        if (!strcmp(k, ST_META_KEY)) {
            if ((rc = parse_meta(path, v, out, err, errlen))) goto done;
            continue;
        }
        if ((rc = parse_entry(path, k, v, &es[ne], err, errlen))) goto done;
        es[ne].order = ne;
        ne++;
    }
    qsort(es, ne, sizeof *es, entry_cmp);
    /* contiguous from 0, in bounds, covering the data section */
    uint64_t data_len = fsize - 8 - n, at = 0;
    for (size_t i = 0; i < ne; i++) {
        const Entry *e = &es[i];
        if (e->begin > at) {
            if (i == 0)
                rc = st_fail(err, errlen, 2, "%s: tensor '%s': data starts at byte %llu, not 0 (a gap before it)",
                             path, e->name, (unsigned long long)e->begin);
            else
                rc = st_fail(err, errlen, 2, "%s: tensor '%s': a gap of %llu bytes between '%s' (ends at %llu) and it "
                             "(begins at %llu)", path, e->name, (unsigned long long)(e->begin - at),
                             es[i - 1].name, (unsigned long long)at, (unsigned long long)e->begin);
            goto done;
        }
        if (e->begin < at) {
            rc = st_fail(err, errlen, 2, "%s: tensor '%s': data_offsets [%llu,%llu] overlap '%s' (ends at %llu)",
                         path, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                         es[i - 1].name, (unsigned long long)at);
            goto done;
        }
        if (e->end > data_len) {
            rc = st_fail(err, errlen, 2, "%s: tensor '%s': data_offsets [%llu,%llu] go past the end of the "
                         "data section (%llu bytes)", path, e->name, (unsigned long long)e->begin,
                         (unsigned long long)e->end, (unsigned long long)data_len);
            goto done;
        }
        at = e->end;
    }
    if (at != data_len) {
        rc = st_fail(err, errlen, 2, "%s: the tensors cover %llu bytes of a %llu-byte data section "
                     "(%llu bytes at the end belong to no tensor)", path, (unsigned long long)at,
                     (unsigned long long)data_len, (unsigned long long)(data_len - at));
        goto done;
    }
    /* names and shapes, in file order */
    for (size_t i = 0; i < ne; i++) {
        StTensor *t = &out->tensors[i];
        if (!(t->name = strdup(es[i].name))) { rc = st_fail(err, errlen, 1, "%s: out of memory", path); goto done; }
        out->n = (int)i + 1;
        t->ndim = es[i].ndim;
        memcpy(t->shape, es[i].shape, sizeof t->shape);
        t->numel = es[i].numel;
        es[i].name = t->name;    /* outlives the JSON root */
    }
    *data_start = 8 + n;
done:
    json_decref(root);
    return rc;
}

/* Header, then every tensor, from fp holding fsize bytes; out is freed on
 * failure. Returns as st_load. */
static int load_stream(const char *path, FILE *fp, uint64_t fsize, StFile *out, char *err, size_t errlen)
{
    Entry *es = NULL;
    uint64_t data_start = 0;
    int rc = read_header(path, fp, fsize, out, &es, &data_start, err, errlen);
    for (int i = 0; !rc && i < out->n; i++)
        rc = read_tensor(path, fp, data_start + es[i].begin, &es[i], &out->tensors[i], err, errlen);
    free(es);
    if (rc) st_free(out);
    return rc;
}

int st_load(const char *path, StFile *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!host_little_endian())
        return st_fail(err, errlen, 1, "%s: kiln reads safetensors on little-endian hosts only", path);
    /* O_NONBLOCK so that a FIFO or device is refused instead of waited on;
     * reads of a regular file ignore the flag */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return st_fail(err, errlen, errno == ENOENT ? 2 : 1, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) {
        int e = errno;
        close(fd);
        return st_fail(err, errlen, 1, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return st_fail(err, errlen, 2, "%s: not a regular file", path);
    }
    FILE *fp = fdopen(fd, "rb");
    if (!fp) {
        int e = errno;
        close(fd);
        return st_fail(err, errlen, 1, "%s: cannot open: %s", path, strerror(e));
    }
    int rc = load_stream(path, fp, (uint64_t)st.st_size, out, err, errlen);
    fclose(fp);
    return rc;
}

int st_load_mem(const void *buf, size_t len, const char *name, StFile *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!host_little_endian())
        return st_fail(err, errlen, 1, "%s: kiln reads safetensors on little-endian hosts only", name);
    /* fmemopen refuses an empty buffer; read_header refuses under 8 bytes unread */
    static const char one;
    FILE *fp = fmemopen(len ? (void *)buf : (void *)&one, len ? len : 1, "r");
    if (!fp) return st_fail(err, errlen, 1, "%s: cannot open in memory: %s", name, strerror(errno));
    int rc = load_stream(name, fp, len, out, err, errlen);
    fclose(fp);
    return rc;
}

void st_free(StFile *f)
{
    if (!f) return;
    for (int i = 0; i < f->n; i++) {
        free(f->tensors[i].name);
        free(f->tensors[i].data);
    }
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

const char *st_meta(const StFile *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
    return NULL;
}

/* ==== writing ============================================================= */

/* Check the arguments of st_save. Returns 0 or 2 with a message. */
static int check_save_args(const char *path, const StTensor *ts, int n, const char *const *mk,
                           const char *const *mv, int n_meta, char *err, size_t errlen)
{
    if (n < 0 || n_meta < 0 || (n && !ts) || (n_meta && (!mk || !mv)))
        return st_fail(err, errlen, 2, "%s: bad arguments to st_save", path);
    for (int i = 0; i < n; i++) {
        const StTensor *t = &ts[i];
        if (!t->name || !strcmp(t->name, ST_META_KEY))
            return st_fail(err, errlen, 2, "%s: tensor %d has no name or the reserved name '%s'", path, i, ST_META_KEY);
        for (int j = 0; j < i; j++)
            if (!strcmp(ts[j].name, t->name))
                return st_fail(err, errlen, 2, "%s: tensor '%s' given twice", path, t->name);
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS)
            return st_fail(err, errlen, 2, "%s: tensor '%s': %d dimensions (0..%d)", path, t->name, t->ndim, ST_MAX_DIMS);
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0)
                return st_fail(err, errlen, 2, "%s: tensor '%s': negative dimension %lld", path, t->name,
                               (long long)t->shape[d]);
            uint64_t s = (uint64_t)t->shape[d];
            if (s && numel > SIZE_MAX / 4 / s)
                return st_fail(err, errlen, 2, "%s: tensor '%s': shape overflows", path, t->name);
            numel *= (size_t)s;
        }
        char shp[200];
        shape_str(shp, sizeof shp, t->shape, t->ndim);
        if (numel != t->numel)
            return st_fail(err, errlen, 2, "%s: tensor '%s': shape %s has %zu elements, numel says %zu", path,
                           t->name, shp, numel, t->numel);
        if (numel && !t->data)
            return st_fail(err, errlen, 2, "%s: tensor '%s' has no data", path, t->name);
        for (size_t k = 0; k < numel; k++)
            if (!isfinite(t->data[k]))
                return st_fail(err, errlen, 2, "%s: tensor '%s' has %s at index %zu; not written", path, t->name,
                               isnan(t->data[k]) ? "a NaN" : "an infinite value", k);
    }
    for (int i = 0; i < n_meta; i++) {
        if (!mk[i] || !mv[i]) return st_fail(err, errlen, 2, "%s: metadata pair %d is NULL", path, i);
        for (int j = 0; j < i; j++)
            if (!strcmp(mk[j], mk[i]))
                return st_fail(err, errlen, 2, "%s: metadata key '%s' given twice", path, mk[i]);
    }
    return 0;
}

/* The header JSON for the tensors, laid out contiguously in order. Returns
 * a malloc'ed string (NULL when out of memory or a string is not UTF-8). */
static char *build_header(const StTensor *ts, int n, const char *const *mk, const char *const *mv, int n_meta)
{
    json_t *root = json_object();
    int bad = !root;
    if (!bad && n_meta) {
        json_t *m = json_object();
        bad = !m || json_object_set_new(root, ST_META_KEY, m);
        for (int i = 0; !bad && i < n_meta; i++) {
            json_t *s = json_string(mv[i]);
            bad = !s || json_object_set_new(m, mk[i], s);
        }
    }
    uint64_t at = 0;
    for (int i = 0; !bad && i < n; i++) {
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        bad = !e || !shape || !offs;
        for (int d = 0; !bad && d < ts[i].ndim; d++)
            bad = json_array_append_new(shape, json_integer((json_int_t)ts[i].shape[d]));
        uint64_t end = at + (uint64_t)ts[i].numel * 4;
        bad = bad || json_array_append_new(offs, json_integer((json_int_t)at)) ||
              json_array_append_new(offs, json_integer((json_int_t)end));
        bad = bad || json_object_set_new(e, "dtype", json_string("F32"));
        if (!bad) { bad = json_object_set_new(e, "shape", shape); shape = NULL; }
        if (!bad) { bad = json_object_set_new(e, "data_offsets", offs); offs = NULL; }
        if (!bad) { bad = json_object_set_new(root, ts[i].name, e); e = NULL; }
        json_decref(shape);
        json_decref(offs);
        json_decref(e);
        at = end;
    }
    char *s = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

/* What st_save writes: the header's length, the header padded with
 * spaces to a multiple of 8, and each tensor's floats. */
typedef struct {
    const unsigned char *lb;      /* the 8 length bytes */
    const char *hdr;
    size_t hl, padded;
    const StTensor *tensors;
    int n;
} SaveBody;

/* kiln_write_atomic's fill for st_save; non-zero on a failed write. */
static int fill_body(FILE *fp, void *ctx)
{
    static const char spaces[] = "       ";   /* up to 7 pad bytes */
    const SaveBody *b = ctx;
    if (fwrite(b->lb, 1, 8, fp) != 8 || fwrite(b->hdr, 1, b->hl, fp) != b->hl ||
        fwrite(spaces, 1, b->padded - b->hl, fp) != b->padded - b->hl)
        return 1;
    for (int i = 0; i < b->n; i++)
        if (b->tensors[i].numel &&
            fwrite(b->tensors[i].data, sizeof(float), b->tensors[i].numel, fp) != b->tensors[i].numel)
            return 1;
    return 0;
}

int st_save(const char *path, const StTensor *tensors, int n,
            const char *const *meta_keys, const char *const *meta_values, int n_meta,
            char *err, size_t errlen)
{
    if (!host_little_endian())
        return st_fail(err, errlen, 1, "%s: kiln writes safetensors on little-endian hosts only", path);
    int rc = check_save_args(path, tensors, n, meta_keys, meta_values, n_meta, err, errlen);
    if (rc) return rc;
    char *hdr = build_header(tensors, n, meta_keys, meta_values, n_meta);
    if (!hdr)
        return st_fail(err, errlen, 2, "%s: cannot build the header (out of memory, or a name that is not UTF-8)", path);
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;
    if (padded > ST_HEADER_LIMIT) {
        free(hdr);
        return st_fail(err, errlen, 2, "%s: header of %zu bytes is over the format's limit", path, padded);
    }
    unsigned char lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    SaveBody body = {lb, hdr, hl, padded, tensors, n};
    errno = 0;
    if (kiln_write_atomic(path, fill_body, &body)) {
        int e = errno;
        /* which step failed: making the temporary file (a folder that is
         * missing or read-only), or writing it */
        if (kiln_probe_write(path))
            rc = st_fail(err, errlen, 1, "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
        else
            rc = st_fail(err, errlen, 1, "%s: write failed: %s (the old file, if any, is untouched)", path,
                         strerror(e));
        free(hdr);
        return rc;
    }
    free(hdr);
    return 0;
}
