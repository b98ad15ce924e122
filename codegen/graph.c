/* codegen/graph.c — the .arch parser and graph utilities.
 *
 * Format (archs/README.md is the full reference): one layer per line,
 *     OP NAME [from=A[,B]] [key=value ...]      # comment
 * plus an optional first directive `arch NAME`. A layer without `from` takes
 * the layer on the line above as its input. Tokens are separated by spaces or
 * tabs. Errors name file:line:column and what was expected; unknown keys,
 * empty keys, a key given twice in a line, a UTF-8 byte order mark, CRLF
 * line ends and lines over KILN_LINE_MAX bytes are errors.
 * What an op accepts comes from its registry row (codegen/ops.c): its input
 * count, its keys (each parsed by the kind of its value into the layer, with
 * the row's defaults, and required when the row says `need`) and its traits
 * (the input comes first, the loss last); no op is named here.
 */
#include "codegen/graph.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
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

#define KILN_INT_MAX 1000000000L

/* A whole-token integer: -1 if s is not one, -2 if it is beyond
 * +-KILN_INT_MAX. */
static int parse_int(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end) return -1;
    if (errno || v < -KILN_INT_MAX || v > KILN_INT_MAX) return -2;
    *out = (int)v;
    return 0;
}

/* A whole-token number, or A/B, that fits a float. */
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
    if (*end || !(fabs(v) <= FLT_MAX)) return -1;
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

/* ---- one key=value, by the kind of its value --------------------------------------- */

/* Parse `val` for key k of layer l into the layer. Returns the count of
 * values given for a KEY_CHANNELS key, 1 for the others, or the parse error's
 * 2 as -2. */
static int set_key(Ctx *cx, Layer *l, const KeyDef *k, const char *val, int col)
{
    const char *key = k->name;
    void *dst = (char *)l + k->off;
    int vcol = col + (int)strlen(key) + 1;
    switch (k->kind) {
    case KEY_SIZE: {
        int v[3];
        if (parse_ints(val, 'x', v, 3) != 3)
            return -fail(cx, vcol, "expected %s=HxWxC, got '%s'", key, val);
        if (v[0] <= 0 || v[1] <= 0 || v[2] <= 0 || v[2] > 4 || v[0] > 4096 || v[1] > 4096)
            return -fail(cx, vcol, "%s %s out of range (1..4096 pixels, 1..4 channels)", key, val);
        memcpy(dst, v, sizeof v);
        return 1;
    }
    case KEY_COUNT: {
        int v, rc = parse_int(val, &v);
        if (rc == -1) return -fail(cx, vcol, "expected an integer for %s, got '%s'", key, val);
        if (rc == -2) return -fail(cx, vcol, "%s out of range (1..%ld), got '%s'", key, KILN_INT_MAX, val);
        if (v <= 0) return -fail(cx, vcol, "%s must be positive, got %d", key, v);
        *(int *)dst = v;
        return 1;
    }
    case KEY_PAIR: {
        int v[2];
        if (parse_pair(val, &v[0], &v[1]))
            return -fail(cx, vcol, "expected %s=N or %s=NxM, got '%s'", key, key, val);
        if (v[0] <= 0 || v[1] <= 0) return -fail(cx, vcol, "%s must be positive, got '%s'", key, val);
        memcpy(dst, v, sizeof v);
        return 1;
    }
    case KEY_PADDING: case KEY_PAD: {
        int v[4], n, modes = k->kind == KEY_PADDING;
        ConvAttr *c = dst;
        if (modes && !strcmp(val, "same")) { c->pad_mode = PAD_SAME; return 1; }
        if (modes && !strcmp(val, "valid")) { c->pad_mode = PAD_VALID; return 1; }
        n = parse_ints(val, ',', v, 4);
        if (n != 1 && n != 2 && n != 4)
            return -fail(cx, vcol, "expected %s=%sP, P_VERTICAL,P_HORIZONTAL or T,B,L,R, got '%s'",
                         key, modes ? "same, valid, " : "", val);
        if (n == 1) v[1] = v[2] = v[3] = v[0];
        else if (n == 2) { v[2] = v[3] = v[1]; v[1] = v[0]; }
        for (int i = 0; i < 4; i++)
            if (v[i] < 0 || v[i] > 1024) return -fail(cx, vcol, "padding out of range in '%s'", val);
        if (modes) {
            c->pad_mode = PAD_EXPLICIT;
            c->pt = v[0]; c->pb = v[1]; c->pl = v[2]; c->pr = v[3];
        } else {
            *(PadAttr *)dst = (PadAttr){v[0], v[1], v[2], v[3]};
        }
        return 1;
    }
    case KEY_BOOL: {
        int b = !strcmp(val, "true") ? 1 : !strcmp(val, "false") ? 0 : -1;
        if (b < 0) return -fail(cx, vcol, "expected %s=true or %s=false, got '%s'", key, key, val);
        *(int *)dst = b;
        return 1;
    }
    case KEY_NUMBER: case KEY_POSITIVE: case KEY_FRACTION: {
        float v;
        if (parse_float(val, &v)) return -fail(cx, vcol, "expected a number for %s, got '%s'", key, val);
        if (k->kind == KEY_POSITIVE && !(v > 0))
            return -fail(cx, vcol, "%s must be positive, got '%s'", key, val);
        if (k->kind == KEY_FRACTION && !(v >= 0 && v < 1))
            return -fail(cx, vcol, "%s must be in [0, 1), got '%s'", key, val);
        *(float *)dst = v;
        return 1;
    }
    case KEY_CHANNELS: case KEY_CHANNELS_POSITIVE: {
        float v[4], *out = dst;
        int n = parse_floats(val, v, 4);
        if (n < 1) return -fail(cx, vcol, "expected 1 to 4 comma-separated numbers for %s, got '%s'", key, val);
        for (int i = 0; i < 4; i++) out[i] = v[n == 1 ? 0 : (i < n ? i : n - 1)];
        if (k->kind == KEY_CHANNELS_POSITIVE)
            for (int i = 0; i < n; i++)
                if (!(v[i] > 0)) return -fail(cx, vcol, "%s must be positive, got '%s'", key, val);
        return n;
    }
    }
    return 1;
}

/* Zero the attributes, then give every key of the op its default (the row's
 * `def`: a count, bool, pair part, number or every channel). */
static void set_defaults(Layer *l)
{
    memset(&l->a, 0, sizeof l->a);
    const OpInfo *info = op_info(l->op);
    for (const KeyDef *k = info->keys; k < info->keys + KILN_MAX_KEYS && k->name; k++) {
        void *dst = (char *)l + k->off;
        switch (k->kind) {
        case KEY_COUNT: case KEY_BOOL: *(int *)dst = (int)k->def; break;
        case KEY_PAIR: ((int *)dst)[0] = ((int *)dst)[1] = (int)k->def; break;
        case KEY_NUMBER: case KEY_POSITIVE: case KEY_FRACTION: *(float *)dst = (float)k->def; break;
        case KEY_CHANNELS: case KEY_CHANNELS_POSITIVE:
            for (int i = 0; i < 4; i++) ((float *)dst)[i] = (float)k->def;
            break;
        case KEY_SIZE: case KEY_PADDING: case KEY_PAD: break;
        }
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

/* "from=A[,B]": the layer's inputs, defined above it. */
static int parse_from(Graph *g, Ctx *cx, Layer *l, const OpInfo *info, char *val, int col)
{
    const char *op = info->keyword;
    if (info->max_in == 0) return fail(cx, col, "`%s` takes no from=", op);
    int vcol = col + 5, n = 0;
    char *save = NULL;
    for (char *p = strtok_r(val, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (n == info->max_in) return fail(cx, vcol, "%s takes %d input%s", op, info->max_in, info->max_in > 1 ? "s" : "");
        int j = graph_find(g, p);
        if (j < 0 || j == g->n_layers - 1)
            return fail(cx, vcol, "unknown input '%s' (inputs must be defined above)", p);
        if (op_is(g->layers[j].op, TRAIT_LOSS))
            return fail(cx, vcol, "'%s' is the loss and cannot be an input", p);
        l->in[n++] = j;
    }
    if (n < info->min_in) return fail(cx, vcol, "%s takes %d inputs, got %d", op, info->min_in, n);
    l->n_in = n;
    return 0;
}

/* The "unknown key" message: the op's keys from its row. */
static int unknown_key(Ctx *cx, const OpInfo *info, const char *key, int col)
{
    char keys[256] = "from";
    size_t n = strlen(keys);
    for (const KeyDef *k = info->keys; k < info->keys + KILN_MAX_KEYS && k->name && n < sizeof keys; k++)
        n += (size_t)snprintf(keys + n, sizeof keys - n, " %s", k->name);
    return fail(cx, col, "unknown key '%s' for %s (expected %s)", key, info->keyword, keys);
}

/* The op word and layer name of a layer line: the row, or NULL after an error. */
static const OpInfo *parse_head(Graph *g, Ctx *cx, const Tok *t, int nt, char *name)
{
    char op[32];
    if (t[0].len >= (int)sizeof op) { fail(cx, t[0].col, "unknown op '%.*s'", t[0].len, t[0].s); return NULL; }
    memcpy(op, t[0].s, (size_t)t[0].len); op[t[0].len] = 0;
    const OpInfo *info = op_find(op);
    if (!info) {
        char kw[512];
        op_keywords(kw, sizeof kw);
        fail(cx, t[0].col, "unknown op '%s' (expected %s)", op, kw);
        return NULL;
    }
    int rc = 2;
    if (nt < 2) fail(cx, t[0].col + t[0].len, "expected a layer name after '%s'", op);
    else if (t[1].len >= KILN_NAME_MAX) fail(cx, t[1].col, "layer name too long (max %d)", KILN_NAME_MAX - 1);
    else rc = 0;
    if (rc) return NULL;
    memcpy(name, t[1].s, (size_t)t[1].len); name[t[1].len] = 0;
    for (const char *p = name; *p; p++)
        if (!(*p == '_' || *p == '-' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
              (*p >= 'A' && *p <= 'Z'))) {
            fail(cx, t[1].col, "layer name '%s' may hold only letters, digits, '_' and '-'", name);
            return NULL;
        }
    if (strchr(name, '=')) rc = fail(cx, t[1].col, "expected a layer name, got '%s'", name);
    else if (graph_find(g, name) >= 0) rc = fail(cx, t[1].col, "layer '%s' is defined twice", name);
    else if (g->n_layers == 0 && !(info->traits & TRAIT_INPUT))
        rc = fail(cx, t[0].col, "the first layer must be `%s`", op_with(TRAIT_INPUT)->keyword);
    else if (g->n_layers > 0 && (info->traits & TRAIT_INPUT))
        rc = fail(cx, t[0].col, "only one `%s` layer is allowed", op);
    else if (g->n_layers > 0 && op_is(g->layers[g->n_layers - 1].op, TRAIT_LOSS))
        rc = fail(cx, t[0].col, "%s must be the last layer", op_info(g->layers[g->n_layers - 1].op)->keyword);
    return rc ? NULL : info;
}

static int parse_line(Graph *g, Ctx *cx, Tok *t, int nt)
{
    char name[KILN_NAME_MAX];
    if (t[0].len == 4 && !memcmp(t[0].s, "arch", 4)) {
        if (nt != 2 || g->n_layers) return fail(cx, t[0].col, "expected `arch NAME` as the first line");
        if (t[1].len >= KILN_NAME_MAX) return fail(cx, t[1].col, "name too long (max %d)", KILN_NAME_MAX - 1);
        memcpy(g->name, t[1].s, (size_t)t[1].len); g->name[t[1].len] = 0;
        return 0;
    }
    const OpInfo *info = parse_head(g, cx, t, nt, name);
    if (!info) return 2;
    const char *op = info->keyword;
    Layer *l = new_layer(g);
    if (!l) return fail(cx, 1, "out of memory");
    strcpy(l->name, name);
    l->op = info->op;
    l->line = cx->line;
    set_defaults(l);
    int have_from = 0, given[KILN_MAX_KEYS] = {0};   /* per key: values given, 0 if absent */
    for (int i = 2; i < nt; i++) {
        int rc = check_key_token(cx, t, i);
        if (rc) return rc;
        char key[32], val[256];
        const char *eq = memchr(t[i].s, '=', (size_t)t[i].len);
        int kl = (int)(eq - t[i].s), vl = t[i].len - kl - 1;
        if (kl >= (int)sizeof key || vl >= (int)sizeof val || vl == 0)
            return fail(cx, t[i].col, "bad key=value '%.*s'", t[i].len, t[i].s);
        memcpy(key, t[i].s, (size_t)kl); key[kl] = 0;
        memcpy(val, eq + 1, (size_t)vl); val[vl] = 0;
        if (!strcmp(key, "from")) {
            if ((rc = parse_from(g, cx, l, info, val, t[i].col))) return rc;
            have_from = 1;
            continue;
        }
        const KeyDef *k = op_key(info->op, key);
        if (!k) return unknown_key(cx, info, key, t[i].col);
        int n = set_key(cx, l, k, val, t[i].col);
        if (n < 0) return -n;
        given[k - info->keys] = n;
    }
    if (!have_from && info->max_in > 0) {
        if (info->min_in > 1) return fail(cx, t[0].col, "%s needs from=A,B", op);
        l->in[0] = g->n_layers - 2;
        l->n_in = 1;
    }
    int endcol = t[nt - 1].col + t[nt - 1].len;
    for (int k = 0; k < KILN_MAX_KEYS && info->keys[k].name; k++)
        if (info->keys[k].need && !given[k]) return fail(cx, endcol, "%s needs %s", op, info->keys[k].need);
    char msg[400];
    int rc = op_infer(g, l, msg, sizeof msg);
    if (rc) return fail(cx, t[0].col, "%s: %s", name, msg);
    /* per-channel values: one for all, or one per channel */
    for (int k = 0; k < KILN_MAX_KEYS && info->keys[k].name; k++) {
        KeyKind kind = info->keys[k].kind;
        if ((kind == KEY_CHANNELS || kind == KEY_CHANNELS_POSITIVE) && given[k] > 1 && given[k] != l->out.c)
            return fail(cx, endcol, "%s needs 1 or %d values", info->keys[k].name, l->out.c);
    }
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
        if (cx.line == 1 && ll >= 3 && !memcmp(line, "\xef\xbb\xbf", 3)) {
            fail(&cx, 1, "UTF-8 byte order mark (EF BB BF) at the start of the file; save without it");
            goto bad;
        }
        const char *nul = memchr(line, '\0', ll);
        if (nul) { fail(&cx, (int)(nul - line) + 1, "NUL byte"); goto bad; }
        Tok t[64];
        int nt = tokenize(line, (int)ll, t, 64);
        if (nt < 0) { fail(&cx, 1, "too many tokens (max 64)"); goto bad; }
        if (nt == 0) continue;
        if (parse_line(g, &cx, t, nt)) goto bad;
    }
    if (g->n_layers == 0) { cx.line = 1; fail(&cx, 1, "no layers"); goto bad; }
    if (!op_is(g->layers[g->n_layers - 1].op, TRAIT_LOSS)) {
        cx.line = g->layers[g->n_layers - 1].line;
        fail(&cx, 1, "the last layer must be %s", op_with(TRAIT_LOSS)->keyword);
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
    while (i > 0 && g->layers[i].n_in == 1 && op_is(g->layers[i].op, TRAIT_HEAD_PASS))
        i = g->layers[i].in[0];
    return op_is(g->layers[i].op, TRAIT_CLASSIFIER) ? i : -1;
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
