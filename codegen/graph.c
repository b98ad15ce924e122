/* codegen/graph.c — the .arch parser and graph utilities.
 *
 * Format (archs/README.md is the full reference): one layer per line,
 *     OP NAME [from=A[,B]] [key=value ...]      # comment
 * plus an optional first directive `arch NAME`. A layer without `from` takes
 * the layer on the line above as its input. Tokens are separated by spaces or
 * tabs. Errors name file:line:column and what was expected; unknown keys,
 * CRLF line ends and lines over KILN_LINE_MAX bytes are errors.
 */
#include "codegen/graph.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KILN_LINE_MAX 1024

/* ---- parse context and errors ---------------------------------------------- */

typedef struct {
    const char *path;
    int line;
    char *err; size_t errlen;
} Ctx;

static int fail(Ctx *cx, int col, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(cx->err, cx->errlen, "%s:%d:%d: %s", cx->path, cx->line, col, msg);
    return 2;
}

/* ---- value parsers ---------------------------------------------------------- */

/* A whole-token integer. */
static int parse_int(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < -1000000000L || v > 1000000000L) return -1;
    *out = (int)v;
    return 0;
}

/* A whole-token number, or A/B. */
static int parse_float(const char *s, float *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s) return -1;
    if (*end == '/') {
        const char *d = end + 1;
        double w = strtod(d, &end);
        if (end == d || w == 0) return -1;
        v /= w;
    }
    if (*end || !isfinite(v)) return -1;
    *out = (float)v;
    return 0;
}

/* Up to max integers separated by sep; returns the count or -1. */
static int parse_ints(const char *s, char sep, int *out, int max)
{
    char buf[128];
    if (strlen(s) >= sizeof buf) return -1;
    strcpy(buf, s);
    int n = 0;
    char *p = buf;
    for (;;) {
        char *q = strchr(p, sep);
        if (q) *q = 0;
        if (n == max || parse_int(p, &out[n])) return -1;
        n++;
        if (!q) return n;
        p = q + 1;
    }
}

static int parse_floats(const char *s, float *out, int max)
{
    char buf[256];
    if (strlen(s) >= sizeof buf) return -1;
    strcpy(buf, s);
    int n = 0;
    char *p = buf;
    for (;;) {
        char *q = strchr(p, ',');
        if (q) *q = 0;
        if (n == max || parse_float(p, &out[n])) return -1;
        n++;
        if (!q) return n;
        p = q + 1;
    }
}

/* "k" or "kxk" into a pair. */
static int parse_pair(const char *s, int *a, int *b)
{
    int v[2];
    int n = parse_ints(s, 'x', v, 2);
    if (n == 1) { *a = *b = v[0]; return 0; }
    if (n == 2) { *a = v[0]; *b = v[1]; return 0; }
    return -1;
}

/* ---- one key=value -------------------------------------------------------------- */

static int set_key(Ctx *cx, Layer *l, const char *key, const char *val, int col)
{
    int vcol = col + (int)strlen(key) + 1;
    if (!strcmp(key, "size")) {
        int v[3];
        if (parse_ints(val, 'x', v, 3) != 3)
            return fail(cx, vcol, "expected size=HxWxC, got '%s'", val);
        if (v[0] <= 0 || v[1] <= 0 || v[2] <= 0 || v[2] > 4 || v[0] > 4096 || v[1] > 4096)
            return fail(cx, vcol, "size %s out of range (1..4096 pixels, 1..4 channels)", val);
        l->a.input.h = v[0]; l->a.input.w = v[1]; l->a.input.c = v[2];
    } else if (!strcmp(key, "scale")) {
        if (parse_float(val, &l->a.input.scale))
            return fail(cx, vcol, "expected a number for scale, got '%s'", val);
    } else if (!strcmp(key, "mean") || !strcmp(key, "std")) {
        float v[4];
        int n = parse_floats(val, v, 4);
        if (n < 1) return fail(cx, vcol, "expected 1 to 4 comma-separated numbers for %s, got '%s'", key, val);
        float *dst = key[0] == 'm' ? l->a.input.mean : l->a.input.std;
        for (int i = 0; i < 4; i++) dst[i] = v[n == 1 ? 0 : (i < n ? i : n - 1)];
        if (key[0] == 's')
            for (int i = 0; i < n; i++)
                if (!(v[i] > 0)) return fail(cx, vcol, "std must be positive, got '%s'", val);
    } else if (!strcmp(key, "filters") || !strcmp(key, "units")) {
        int v;
        if (parse_int(val, &v)) return fail(cx, vcol, "expected an integer for %s, got '%s'", key, val);
        if (v <= 0) return fail(cx, vcol, "%s must be positive, got %d", key, v);
        if (key[0] == 'f') l->a.conv.filters = v; else l->a.dense.units = v;
    } else if (!strcmp(key, "kernel") || !strcmp(key, "stride")) {
        int a, b;
        if (parse_pair(val, &a, &b))
            return fail(cx, vcol, "expected %s=N or %s=NxM, got '%s'", key, key, val);
        if (a <= 0 || b <= 0) return fail(cx, vcol, "%s must be positive, got '%s'", key, val);
        if (key[0] == 'k') { l->a.conv.kh = a; l->a.conv.kw = b; }
        else { l->a.conv.sh = a; l->a.conv.sw = b; }
    } else if (!strcmp(key, "padding") || !strcmp(key, "pad")) {
        int v[4], n;
        ConvAttr *c = &l->a.conv;
        if (l->op != OP_ZEROPAD && !strcmp(val, "same")) c->pad_mode = PAD_SAME;
        else if (l->op != OP_ZEROPAD && !strcmp(val, "valid")) c->pad_mode = PAD_VALID;
        else if ((n = parse_ints(val, ',', v, 4)) == 1 || n == 2 || n == 4) {
            if (n == 1) v[1] = v[2] = v[3] = v[0];
            else if (n == 2) { v[2] = v[3] = v[1]; v[1] = v[0]; }
            for (int i = 0; i < 4; i++)
                if (v[i] < 0 || v[i] > 1024) return fail(cx, vcol, "padding out of range in '%s'", val);
            if (l->op == OP_ZEROPAD) {
                l->a.pad = (PadAttr){v[0], v[1], v[2], v[3]};
            } else {
                c->pad_mode = PAD_EXPLICIT;
                c->pt = v[0]; c->pb = v[1]; c->pl = v[2]; c->pr = v[3];
            }
        } else {
            return fail(cx, vcol, "expected %s=%sP, P_VERTICAL,P_HORIZONTAL or T,B,L,R, got '%s'",
                        key, l->op == OP_ZEROPAD ? "" : "same, valid, ", val);
        }
    } else if (!strcmp(key, "bias")) {
        int b = !strcmp(val, "true") ? 1 : !strcmp(val, "false") ? 0 : -1;
        if (b < 0) return fail(cx, vcol, "expected bias=true or bias=false, got '%s'", val);
        if (l->op == OP_DENSE) l->a.dense.bias = b; else l->a.conv.bias = b;
    } else if (!strcmp(key, "eps") || !strcmp(key, "momentum") || !strcmp(key, "rate")) {
        float v;
        if (parse_float(val, &v)) return fail(cx, vcol, "expected a number for %s, got '%s'", key, val);
        if (key[0] == 'e') {
            if (!(v > 0)) return fail(cx, vcol, "eps must be positive, got '%s'", val);
            l->a.bn.eps = v;
        } else if (key[0] == 'm') {
            if (!(v >= 0 && v < 1)) return fail(cx, vcol, "momentum must be in [0, 1), got '%s'", val);
            l->a.bn.momentum = v;
        } else {
            if (!(v >= 0 && v < 1)) return fail(cx, vcol, "rate must be in [0, 1), got '%s'", val);
            l->a.dropout.rate = v;
        }
    }
    return 0;
}

/* Defaults before keys are read (Keras's where there is one). */
static void set_defaults(Layer *l)
{
    memset(&l->a, 0, sizeof l->a);
    switch (l->op) {
    case OP_INPUT:
        l->a.input.scale = 1;
        for (int i = 0; i < 4; i++) l->a.input.std[i] = 1;
        break;
    case OP_CONV: case OP_DWCONV: case OP_MAXPOOL:
        l->a.conv.sh = l->a.conv.sw = 1;
        l->a.conv.bias = l->op != OP_MAXPOOL;
        if (l->op == OP_MAXPOOL) l->a.conv.kh = l->a.conv.kw = 2, l->a.conv.sh = l->a.conv.sw = 2;
        break;
    case OP_BN:
        l->a.bn.eps = 1e-3f; l->a.bn.momentum = 0.99f;
        break;
    case OP_DENSE:
        l->a.dense.bias = 1;
        break;
    default:
        break;
    }
}

/* ---- the line parser ---------------------------------------------------------- */

typedef struct { const char *s; int len, col; } Tok;

static int tokenize(const char *line, int len, Tok *t, int max)
{
    int n = 0, i = 0;
    while (i < len) {
        while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
        if (i >= len || line[i] == '#') break;
        int start = i;
        while (i < len && line[i] != ' ' && line[i] != '\t' && line[i] != '#') i++;
        if (n == max) return -1;
        t[n++] = (Tok){line + start, i - start, start + 1};
    }
    return n;
}

static Layer *new_layer(Graph *g)
{
    if (g->n_layers == g->cap_layers) {
        int cap = g->cap_layers ? 2 * g->cap_layers : 64;
        Layer *l = realloc(g->layers, sizeof(Layer) * (size_t)cap);
        if (!l) return NULL;
        g->layers = l; g->cap_layers = cap;
    }
    Layer *l = &g->layers[g->n_layers++];
    memset(l, 0, sizeof *l);
    return l;
}

/* Does the space-separated list `keys` contain key? An empty key never matches. */
static int has_key(const char *keys, const char *key)
{
    size_t n = strlen(key);
    if (n == 0) return 0;
    for (const char *p = keys; (p = strstr(p, key)); p += n)
        if ((p == keys || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0)) return 1;
    return 0;
}

/* Token i of a layer line must be key=value with a non-empty key that no
 * earlier token of the line already set. */
static int check_key_token(Ctx *cx, const Tok *t, int i)
{
    const char *eq = memchr(t[i].s, '=', (size_t)t[i].len);
    if (!eq) return fail(cx, t[i].col, "expected key=value, got '%.*s'", t[i].len, t[i].s);
    int kl = (int)(eq - t[i].s);
    if (kl == 0) return fail(cx, t[i].col, "empty key in '%.*s' (expected key=value)", t[i].len, t[i].s);
    for (int j = 2; j < i; j++)
        if (t[j].len > kl && memcmp(t[j].s, t[i].s, (size_t)kl + 1) == 0)
            return fail(cx, t[i].col, "key '%.*s' given twice (first at column %d)", kl, t[i].s, t[j].col);
    return 0;
}

static int parse_line(Graph *g, Ctx *cx, Tok *t, int nt)
{
    char op[32], name[KILN_NAME_MAX];
    if (t[0].len >= (int)sizeof op) return fail(cx, t[0].col, "unknown op '%.*s'", t[0].len, t[0].s);
    memcpy(op, t[0].s, (size_t)t[0].len); op[t[0].len] = 0;
    if (!strcmp(op, "arch")) {
        if (nt != 2 || g->n_layers) return fail(cx, t[0].col, "expected `arch NAME` as the first line");
        if (t[1].len >= KILN_NAME_MAX) return fail(cx, t[1].col, "name too long (max %d)", KILN_NAME_MAX - 1);
        memcpy(g->name, t[1].s, (size_t)t[1].len); g->name[t[1].len] = 0;
        return 0;
    }
    const OpInfo *info = op_find(op);
    if (!info) return fail(cx, t[0].col, "unknown op '%s' (expected input, conv, dwconv, zeropad, bn, relu, "
                           "relu6, swish, sigmoid, add, mul, gap, maxpool, dense, dropout, softmax_ce)", op);
    if (nt < 2) return fail(cx, t[0].col + t[0].len, "expected a layer name after '%s'", op);
    if (t[1].len >= KILN_NAME_MAX) return fail(cx, t[1].col, "layer name too long (max %d)", KILN_NAME_MAX - 1);
    memcpy(name, t[1].s, (size_t)t[1].len); name[t[1].len] = 0;
    for (const char *p = name; *p; p++)
        if (!(*p == '_' || *p == '-' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
              (*p >= 'A' && *p <= 'Z')))
            return fail(cx, t[1].col, "layer name '%s' may hold only letters, digits, '_' and '-'", name);
    if (strchr(name, '=')) return fail(cx, t[1].col, "expected a layer name, got '%s'", name);
    if (graph_find(g, name) >= 0) return fail(cx, t[1].col, "layer '%s' is defined twice", name);
    if (g->n_layers == 0 && info->op != OP_INPUT) return fail(cx, t[0].col, "the first layer must be `input`");
    if (g->n_layers > 0 && info->op == OP_INPUT) return fail(cx, t[0].col, "only one `input` layer is allowed");
    if (g->n_layers > 0 && g->layers[g->n_layers - 1].op == OP_LOSS)
        return fail(cx, t[0].col, "softmax_ce must be the last layer");

    Layer *l = new_layer(g);
    if (!l) return fail(cx, 1, "out of memory");
    strcpy(l->name, name);
    l->op = info->op;
    l->line = cx->line;
    set_defaults(l);
    int have_from = 0, have_size = 0, have_filters = 0, have_units = 0, have_kernel = 0, have_rate = 0;
    int have_pad = 0, mean_n = 0, std_n = 0;
    for (int i = 2; i < nt; i++) {
        int rc = check_key_token(cx, t, i);
        if (rc) return rc;
        char key[32], val[256];
        const char *eq = memchr(t[i].s, '=', (size_t)t[i].len);
        if (!eq) return fail(cx, t[i].col, "expected key=value, got '%.*s'", t[i].len, t[i].s);
        int kl = (int)(eq - t[i].s), vl = t[i].len - kl - 1;
        if (kl >= (int)sizeof key || vl >= (int)sizeof val || vl == 0)
            return fail(cx, t[i].col, "bad key=value '%.*s'", t[i].len, t[i].s);
        memcpy(key, t[i].s, (size_t)kl); key[kl] = 0;
        memcpy(val, eq + 1, (size_t)vl); val[vl] = 0;
        if (!strcmp(key, "from")) {
            if (info->max_in == 0) return fail(cx, t[i].col, "`input` takes no from=");
            int vcol = t[i].col + 5, n = 0;
            char *save = NULL;
            for (char *p = strtok_r(val, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
                if (n == info->max_in) return fail(cx, vcol, "%s takes %d input%s", op, info->max_in, info->max_in > 1 ? "s" : "");
                int j = graph_find(g, p);
                if (j < 0 || j == g->n_layers - 1)
                    return fail(cx, vcol, "unknown input '%s' (inputs must be defined above)", p);
                if (g->layers[j].op == OP_LOSS) return fail(cx, vcol, "'%s' is the loss and cannot be an input", p);
                l->in[n++] = j;
            }
            if (n < info->min_in) return fail(cx, vcol, "%s takes %d inputs, got %d", op, info->min_in, n);
            l->n_in = n;
            have_from = 1;
            continue;
        }
        if (!has_key(info->keys, key))
            return fail(cx, t[i].col, "unknown key '%s' for %s (expected from%s%s)", key, op,
                        info->keys[0] ? " " : "", info->keys);
        rc = set_key(cx, l, key, val, t[i].col);
        if (rc) return rc;
        have_size |= !strcmp(key, "size");
        have_filters |= !strcmp(key, "filters");
        have_units |= !strcmp(key, "units");
        have_kernel |= !strcmp(key, "kernel");
        have_rate |= !strcmp(key, "rate");
        have_pad |= !strcmp(key, "pad");
        if (!strcmp(key, "mean")) mean_n = parse_floats(val, (float[4]){0}, 4);
        if (!strcmp(key, "std")) std_n = parse_floats(val, (float[4]){0}, 4);
    }
    if (!have_from && info->max_in > 0) {
        if (info->min_in > 1) return fail(cx, t[0].col, "%s needs from=A,B", op);
        l->in[0] = g->n_layers - 2;
        l->n_in = 1;
    }
    int endcol = t[nt - 1].col + t[nt - 1].len;
    if (info->op == OP_INPUT) {
        if (!have_size) return fail(cx, endcol, "input needs size=HxWxC");
        if ((mean_n > 1 && mean_n != l->a.input.c) || (std_n > 1 && std_n != l->a.input.c))
            return fail(cx, endcol, "mean/std need 1 or %d values", l->a.input.c);
    }
    if (info->op == OP_CONV && !have_filters) return fail(cx, endcol, "conv needs filters=N");
    if ((info->op == OP_CONV || info->op == OP_DWCONV) && !have_kernel)
        return fail(cx, endcol, "%s needs kernel=N", op);
    if (info->op == OP_DENSE && !have_units) return fail(cx, endcol, "dense needs units=N");
    if (info->op == OP_DROPOUT && !have_rate) return fail(cx, endcol, "dropout needs rate=R");
    if (info->op == OP_ZEROPAD && !have_pad) return fail(cx, endcol, "zeropad needs pad=P or pad=T,B,L,R");
    char msg[400];
    int rc = op_infer(g, l, msg, sizeof msg);
    if (rc) return fail(cx, t[0].col, "%s: %s", name, msg);
    return 0;
}

int graph_parse(Graph *g, const char *text, size_t len, const char *path,
                char *err, size_t errlen)
{
    memset(g, 0, sizeof *g);
    snprintf(g->path, sizeof g->path, "%s", path);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(g->name, sizeof g->name, "%.*s", (int)strcspn(base, "."), base);
    Ctx cx = {path, 0, err, errlen};
    size_t pos = 0;
    while (pos < len) {
        cx.line++;
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - line) : len - pos;
        pos += ll + (nl != NULL);
        if (ll > KILN_LINE_MAX) { fail(&cx, KILN_LINE_MAX + 1, "line longer than %d bytes", KILN_LINE_MAX); goto bad; }
        const char *cr = memchr(line, '\r', ll);
        if (cr) { fail(&cx, (int)(cr - line) + 1, "carriage return (CRLF line ends are not accepted; save with LF)"); goto bad; }
        const char *nul = memchr(line, '\0', ll);
        if (nul) { fail(&cx, (int)(nul - line) + 1, "NUL byte"); goto bad; }
        Tok t[64];
        int nt = tokenize(line, (int)ll, t, 64);
        if (nt < 0) { fail(&cx, 1, "too many tokens (max 64)"); goto bad; }
        if (nt == 0) continue;
        if (parse_line(g, &cx, t, nt)) goto bad;
    }
    if (g->n_layers == 0) { cx.line = 1; fail(&cx, 1, "no layers"); goto bad; }
    if (g->layers[g->n_layers - 1].op != OP_LOSS) {
        cx.line = g->layers[g->n_layers - 1].line;
        fail(&cx, 1, "the last layer must be softmax_ce");
        goto bad;
    }
    graph_flags_all(g, 1, BN_TRAIN);
    return 0;
bad:
    graph_free(g);
    return 2;
}

int graph_load(Graph *g, const char *path, char *err, size_t errlen)
{
    memset(g, 0, sizeof *g);
    /* O_NONBLOCK so that a FIFO or device is refused instead of waited on;
     * reads of a regular file ignore the flag */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return 2;
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, errlen, "%s: not a regular file", path);
        return 2;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return 1;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 65536;
            if (cap > (64u << 20)) {
                snprintf(err, errlen, "%s: larger than 64 MiB, not an .arch file", path);
                free(buf); fclose(f);
                return 2;
            }
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); snprintf(err, errlen, "%s: out of memory", path); return 1; }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        snprintf(err, errlen, "%s: read error", path);
        return 2;
    }
    int rc = graph_parse(g, buf, len, path, err, errlen);
    free(buf);
    return rc;
}

void graph_free(Graph *g)
{
    free(g->layers);
    free(g->params);
    memset(g, 0, sizeof *g);
}

int graph_find(const Graph *g, const char *name)
{
    for (int i = 0; i < g->n_layers; i++)
        if (!strcmp(g->layers[i].name, name)) return i;
    return -1;
}

int graph_find_param(const Graph *g, const char *name)
{
    for (int i = 0; i < g->n_params; i++)
        if (!strcmp(g->params[i].name, name)) return i;
    return -1;
}

/* ---- reshaping -------------------------------------------------------------- */

/* Run shape inference over every layer again (after an attribute changed). */
static int graph_reinfer(Graph *g, char *err, size_t errlen)
{
    g->n_params = 0;
    for (int i = 0; i < g->n_layers; i++) {
        char msg[400];
        int rc = op_infer(g, &g->layers[i], msg, sizeof msg);
        if (rc) {
            snprintf(err, errlen, "%s:%d: %s: %s", g->path, g->layers[i].line, g->layers[i].name, msg);
            return rc;
        }
    }
    return 0;
}

int graph_set_input_size(Graph *g, int h, int w, char *err, size_t errlen)
{
    if (h <= 0 || w <= 0 || h > 4096 || w > 4096) {
        snprintf(err, errlen, "input size %dx%d out of range (1..4096)", h, w);
        return 2;
    }
    g->layers[0].a.input.h = h;
    g->layers[0].a.input.w = w;
    return graph_reinfer(g, err, errlen);
}

int graph_head(const Graph *g)
{
    int i = g->layers[g->n_layers - 1].in[0];
    while (i > 0 && g->layers[i].op != OP_DENSE && g->layers[i].n_in == 1 &&
           (g->layers[i].op == OP_DROPOUT || g->layers[i].op == OP_GAP))
        i = g->layers[i].in[0];
    return g->layers[i].op == OP_DENSE ? i : -1;
}

int graph_set_num_classes(Graph *g, int classes, char *err, size_t errlen)
{
    int h = graph_head(g);
    if (h < 0) {
        snprintf(err, errlen, "%s: no dense head before softmax_ce to resize", g->path);
        return 2;
    }
    if (classes < 2) {
        snprintf(err, errlen, "%s: a head needs at least 2 classes, got %d", g->path, classes);
        return 2;
    }
    g->layers[h].a.dense.units = classes;
    return graph_reinfer(g, err, errlen);
}

/* ---- counts and flags ------------------------------------------------------- */

size_t graph_learnable(const Graph *g)
{
    size_t n = 0;
    for (int i = 0; i < g->n_params; i++) n += g->params[i].learnable ? g->params[i].numel : 0;
    return n;
}

size_t graph_bn_stats(const Graph *g)
{
    size_t n = 0;
    for (int i = 0; i < g->n_params; i++) n += g->params[i].learnable ? 0 : g->params[i].numel;
    return n;
}

int64_t graph_flops(const Graph *g)
{
    int64_t f = 0;
    for (int i = 0; i < g->n_layers; i++) f += g->layers[i].flops;
    return f;
}

int layer_has_learnable(const Graph *g, int i)
{
    const Layer *l = &g->layers[i];
    for (int p = l->first_param; p < l->first_param + l->n_params; p++)
        if (g->params[p].learnable) return 1;
    return 0;
}

void graph_flags_all(Graph *g, int trainable, BnMode mode)
{
    for (int i = 0; i < g->n_layers; i++) {
        g->layers[i].trainable = trainable;
        g->layers[i].bn_mode = mode;
        g->layers[i].lr_group = 0;
    }
}

int graph_freeze_until(Graph *g, const char *name)
{
    int k = graph_find(g, name);
    if (k < 0) return 2;
    for (int i = 0; i <= k; i++) {
        g->layers[i].trainable = 0;
        g->layers[i].bn_mode = BN_FROZEN;
    }
    return 0;
}

const char *bn_mode_name(BnMode m)
{
    return m == BN_TRAIN ? "train" : m == BN_INFER ? "infer" : "frozen";
}
