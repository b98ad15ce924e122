/* runtime/weights.c — a network's parameters to and from safetensors files
 * (see weights.h).
 *
 * Loading checks everything before it writes anything: on any error the
 * arena is left exactly as it was. Order of checks, most telling first: a
 * PyTorch/Keras file given by mistake (named, with its importer), the
 * safetensors format itself (st_load), the architecture name and the
 * preprocessing in the metadata, then every parameter by name and shape. The
 * head (graph_head) is the one exception to "every parameter, exact shape":
 * absent from the file (a "notop" export) or with another class count, it
 * keeps the caller's fresh values and the report says so.
 */
#include "runtime/weights.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/safetensors.h"

/* Format a message into err and return rc. */
static int w_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int w_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

/* ==== not a safetensors file ================================================ */

/* A PyTorch .pth (zip or legacy pickle) or Keras HDF5 file where safetensors
 * was expected: returns 2 with a message naming the importer, else 0 (an
 * unreadable file, or one that is not a regular file, is left to st_load to
 * report). A magic number only counts when the first 8 bytes are not a
 * plausible safetensors header length, so a real safetensors file is never
 * mistaken for one (its length's low byte may well be 0x80). */
static int sniff_foreign(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) || !S_ISREG(st.st_mode)) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char b[8] = {0};
    size_t got = fread(b, 1, 8, f);
    int have_size = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode);
    fclose(f);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    if (got == 8 && have_size && n <= 100000000u && n + 8 <= (uint64_t)st.st_size) return 0;
    if (got >= 4 && !memcmp(b, "PK\x03\x04", 4))
        return w_fail(err, errlen, 2, "%s: a PyTorch .pth file (zip archive), not safetensors: "
                      "convert it with tools/import-pth", path);
    if (got >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5)
        return w_fail(err, errlen, 2, "%s: a PyTorch .pth file (legacy pickle), not safetensors: "
                      "convert it with tools/import-pth", path);
    if (got == 8 && !memcmp(b, "\x89HDF\r\n\x1a\n", 8))
        return w_fail(err, errlen, 2, "%s: a Keras HDF5 file, not safetensors: "
                      "convert it with tools/import-keras", path);
    return 0;
}

/* ==== metadata ================================================================ */

/* Whole-string number into *out; -1 if s is not one. */
static int parse_num(const char *s, size_t len, double *out)
{
    char buf[64], *end;
    if (len == 0 || len >= sizeof buf) return -1;
    memcpy(buf, s, len);
    buf[len] = 0;
    *out = strtod(buf, &end);
    return *end || !isfinite(*out) ? -1 : 0;
}

/* Equal as preprocessing constants (files written by other tools print
 * more or fewer digits than "%.9g"). */
static int close_enough(double a, double b)
{
    return fabs(a - b) <= 1e-7 + 1e-5 * fabs(b);
}

/* Compare a per-channel list "v0,v1,..." (one value, or one per channel)
 * with the arch's. Returns 0, or 2 with a message. */
static int check_list(const char *path, const char *key, const char *val, const float *want, int c,
                      char *err, size_t errlen)
{
    double v[4];
    int n = 0;
    for (const char *s = val;; n++) {
        size_t len = strcspn(s, ",");
        if (n == 4 || parse_num(s, len, &v[n]))
            return w_fail(err, errlen, 2, "%s: metadata %s is '%s', not 1 to 4 comma-separated numbers",
                          path, key, val);
        if (!s[len]) { n++; break; }
        s += len + 1;
    }
    if (n != 1 && n != c)
        return w_fail(err, errlen, 2, "%s: metadata %s '%s' has %d values for %d channels", path, key, val, n, c);
    for (int i = 0; i < c; i++)
        if (!close_enough(v[n == 1 ? 0 : i], want[i])) {
            char arch[128];
            size_t o = 0;
            for (int k = 0; k < c && o < sizeof arch; k++)
                o += (size_t)snprintf(arch + o, sizeof arch - o, "%s%.9g", k ? "," : "", want[k]);
            return w_fail(err, errlen, 2, "%s: weights made for other preprocessing: %s is %s in the file, "
                          "%s in the arch", path, key, val, arch);
        }
    return 0;
}

/* The architecture name and preprocessing in the file's metadata against the
 * graph's. Returns 0 (warnings on `warn`), or 2 with a message. */
static int check_meta(const Graph *g, const StFile *f, const char *path, FILE *warn, char *err, size_t errlen)
{
    static const char *const keys[5] = {"kiln.arch", "kiln.input", "kiln.scale", "kiln.mean", "kiln.std"};
    const char *v[5];
    int present = 0;
    for (int i = 0; i < 5; i++) present += (v[i] = st_meta(f, keys[i])) != NULL;
    if (!present) {
        if (warn)
            fprintf(warn, "warning: %s: no kiln metadata (a foreign converter's file?): the architecture "
                    "and the preprocessing are not checked\n", path);
        return 0;
    }
    if (v[0] && strcmp(v[0], g->name))
        return w_fail(err, errlen, 2, "%s: a checkpoint of another architecture: kiln.arch is '%s', the arch is '%s'",
                      path, v[0], g->name);
    const InputAttr *in = &g->layers[0].a.input;
    if (v[1]) {
        int h, w, c, used = 0;
        if (sscanf(v[1], "%dx%dx%d%n", &h, &w, &c, &used) != 3 || v[1][used] || h < 1 || w < 1 || c < 1)
            return w_fail(err, errlen, 2, "%s: metadata kiln.input is '%s', not HxWxC", path, v[1]);
        if (c != in->c)
            return w_fail(err, errlen, 2, "%s: weights for %d-channel input (kiln.input %s), the arch takes "
                          "%d channels", path, c, v[1], in->c);
    }
    if (v[2]) {
        double s;
        if (parse_num(v[2], strlen(v[2]), &s))
            return w_fail(err, errlen, 2, "%s: metadata kiln.scale is '%s', not a number", path, v[2]);
        if (!close_enough(s, in->scale))
            return w_fail(err, errlen, 2, "%s: weights made for other preprocessing: kiln.scale is %s in the "
                          "file, %.9g in the arch", path, v[2], in->scale);
    }
    int rc;
    if (v[3] && (rc = check_list(path, "kiln.mean", v[3], in->mean, in->c, err, errlen))) return rc;
    if (v[4] && (rc = check_list(path, "kiln.std", v[4], in->std, in->c, err, errlen))) return rc;
    if (warn && present < 5) {
        fprintf(warn, "warning: %s: metadata without", path);
        for (int i = 0; i < 5; i++)
            if (!v[i]) fprintf(warn, " %s", keys[i]);
        fprintf(warn, ": not checked\n");
    }
    return 0;
}

/* ==== loading ================================================================== */

/* "[3,3,3,32]" of a graph parameter. */
static void param_shape_str(char *buf, size_t len, const Param *pa)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < pa->ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%d", i ? "," : "", pa->dims[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

/* "[3,3,3,32]" of a file tensor. */
static void tensor_shape_str(char *buf, size_t len, const StTensor *t)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

/* How t's shape compares with pa's: 0 equal, 1 differs only in the last
 * dimension (a head's class count), 2 otherwise. */
static int shape_diff(const Param *pa, const StTensor *t)
{
    if (t->ndim != pa->ndim) return 2;
    int last = 0;
    for (int i = 0; i < pa->ndim; i++)
        if (t->shape[i] != pa->dims[i]) {
            if (i != pa->ndim - 1) return 2;
            last = 1;
        }
    return last;
}

int weights_load(const Plan *p, float *arena, const char *path, WeightsReport *rep,
                 FILE *warn, char *err, size_t errlen)
{
    WeightsReport r;
    memset(&r, 0, sizeof r);
    if (rep) *rep = r;
    int rc = sniff_foreign(path, err, errlen);
    if (rc) return rc;
    StFile f;
    if ((rc = st_load(path, &f, err, errlen))) return rc;
    const Graph *g = p->g;
    const StTensor **src = calloc((size_t)g->n_params + 1, sizeof *src);
    if (!src) { rc = w_fail(err, errlen, 1, "%s: out of memory", path); goto out; }
    if ((rc = check_meta(g, &f, path, warn, err, errlen))) goto out;

    /* the head: loaded like the rest, or replaced as a whole when the file
     * has none of it or another class count (and nothing else differs) */
    int head = graph_head(g), n_head = 0, present = 0, classdiff = 0, bad = 0, from = 0;
    for (int i = 0; head >= 0 && i < g->n_params; i++) {
        if (g->params[i].layer != head) continue;
        n_head++;
        const StTensor *t = st_find(&f, g->params[i].name);
        if (!t) continue;
        present++;
        int d = shape_diff(&g->params[i], t);
        if (d == 1) { classdiff++; from = (int)t->shape[t->ndim - 1]; }
        if (d == 2) bad++;
    }
    int replace = n_head > 0 && !bad && (present == 0 || classdiff > 0);

    /* every other parameter: present, same shape */
    int missing = 0;
    for (int i = 0; i < g->n_params; i++) {
        const Param *pa = &g->params[i];
        if (replace && pa->layer == head) continue;
        const StTensor *t = st_find(&f, pa->name);
        if (!t) { missing++; continue; }
        if (shape_diff(pa, t)) {
            char have[160], want[160];
            tensor_shape_str(have, sizeof have, t);
            param_shape_str(want, sizeof want, pa);
            rc = w_fail(err, errlen, 2, "%s: tensor '%s' has shape %s, the arch wants %s", path, pa->name, have, want);
            goto out;
        }
        src[i] = t;
    }
    if (missing) {
        /* name the first few */
        size_t o = 0;
        int listed = 0;
        for (int i = 0; i < g->n_params && o < errlen; i++) {
            if (src[i] || (replace && g->params[i].layer == head)) continue;
            if (listed == 0)
                o += (size_t)snprintf(err + o, errlen - o, "%s: tensor '%s' is missing (the arch has it, the file "
                                      "does not)", path, g->params[i].name);
            else if (listed < 6)
                o += (size_t)snprintf(err + o, errlen - o, "%s'%s'", listed == 1 ? "; also missing: " : ", ",
                                      g->params[i].name);
            listed++;
        }
        if (listed > 6 && o < errlen) snprintf(err + o, errlen - o, " and %d more", listed - 6);
        rc = 2;
        goto out;
    }

    /* tensors the arch does not have: counted, listed on one warning line */
    for (int i = 0; i < f.n; i++)
        r.extra += graph_find_param(g, f.tensors[i].name) < 0;
    if (warn && r.extra) {
        fprintf(warn, "warning: %s: %d tensor%s the arch does not have, ignored:", path, r.extra,
                r.extra == 1 ? "" : "s");
        for (int i = 0, k = 0; i < f.n && k < 20; i++)
            if (graph_find_param(g, f.tensors[i].name) < 0)
                fprintf(warn, "%s '%s'", k++ ? "," : "", f.tensors[i].name);
        if (r.extra > 20) fprintf(warn, " and %d more", r.extra - 20);
        fprintf(warn, "\n");
    }

    for (int i = 0; i < g->n_params; i++)
        if (src[i]) {
            memcpy(arena + p->param_off[i], src[i]->data, sizeof(float) * src[i]->numel);
            r.loaded++;
        }
    r.head_replaced = replace;
    r.head_from = replace ? from : 0;
    if (rep) *rep = r;
out:
    free(src);
    st_free(&f);
    return rc;
}

/* ==== saving ==================================================================== */

int weights_save(const Plan *p, const float *arena, const char *path, char *err, size_t errlen)
{
    const Graph *g = p->g;
    StTensor *ts = calloc((size_t)g->n_params + 1, sizeof *ts);
    if (!ts) return w_fail(err, errlen, 1, "%s: out of memory", path);
    for (int i = 0; i < g->n_params; i++) {
        const Param *pa = &g->params[i];
        ts[i].name = (char *)pa->name;
        ts[i].ndim = pa->ndim;
        for (int d = 0; d < pa->ndim; d++) ts[i].shape[d] = pa->dims[d];
        ts[i].numel = pa->numel;
        ts[i].data = (float *)(arena + p->param_off[i]);
    }
    const InputAttr *in = &g->layers[0].a.input;
    char input[64], scale[32], mean[128], std[128];
    snprintf(input, sizeof input, "%dx%dx%d", in->h, in->w, in->c);
    snprintf(scale, sizeof scale, "%.9g", in->scale);
    size_t om = 0, os = 0;
    for (int c = 0; c < in->c && c < 4; c++) {   /* 4 numbers of <= 16 bytes each: no truncation */
        om += (size_t)snprintf(mean + om, sizeof mean - om, "%s%.9g", c ? "," : "", in->mean[c]);
        os += (size_t)snprintf(std + os, sizeof std - os, "%s%.9g", c ? "," : "", in->std[c]);
    }
    const char *keys[5] = {"kiln.arch", "kiln.input", "kiln.scale", "kiln.mean", "kiln.std"};
    const char *vals[5] = {g->name, input, scale, mean, std};
    int rc = st_save(path, ts, g->n_params, keys, vals, 5, err, errlen);
    free(ts);
    return rc ? 1 : 0;
}
