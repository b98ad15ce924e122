/* runtime/checkpoint.c — checkpoints (see checkpoint.h). Numbers go into the
 * metadata as text that reads back to the same bits (%.17g for doubles,
 * %.9g for floats, integers as integers), one key each; the table FIELDS
 * says for every key its type, where it lives in a Checkpoint and the range
 * it may take on its own, and both the writer and the reader walk it. */
#include "runtime/checkpoint.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "runtime/safetensors.h"

#define FORMAT "2"          /* kiln.checkpoint: 1 had unchecked metadata */

typedef enum { M_INT, M_LONG, M_U64, M_F32, M_F64 } MetaType;

/* One number of the metadata. lo == FLT_MIN means "positive". */
typedef struct {
    const char *key;
    MetaType type;
    size_t off;
    double lo, hi;
} MetaField;

#define AT(member) offsetof(Checkpoint, member)

/* To add a number: a row here (its key, type, member, range); the CRC, the
 * writer and the strict reader follow. */
static const MetaField FIELDS[] = {
    {"kiln.phase", M_INT, AT(phase), 0, 1},
    {"kiln.epoch", M_INT, AT(ls.epoch), 0, INT_MAX},
    {"kiln.pos", M_INT, AT(ls.pos), 0, INT_MAX},
    {"kiln.seconds", M_F64, AT(ls.seconds), 0, DBL_MAX},
    {"kiln.loss_sum", M_F64, AT(ls.loss_sum), 0, DBL_MAX},
    {"kiln.correct", M_LONG, AT(ls.correct), 0, (double)INT_MAX * INT_MAX},
    {"kiln.seen", M_LONG, AT(ls.seen), 0, (double)INT_MAX * INT_MAX},
    {"kiln.rollbacks", M_INT, AT(ls.rollbacks), 0, INT_MAX},
    {"kiln.stopped", M_INT, AT(ls.stopped), 0, 1},
    {"kiln.backend_step", M_U64, AT(backend_step), 0, 0},
    {"kiln.sched.lr", M_F32, AT(ls.sched.lr), FLT_MIN, FLT_MAX},
    {"kiln.sched.warmup_start", M_F32, AT(ls.sched.warmup_start), FLT_MIN, FLT_MAX},
    {"kiln.sched.warmup_steps", M_LONG, AT(ls.sched.warmup_steps), 0, (double)INT_MAX * INT_MAX},
    {"kiln.sched.base", M_F32, AT(ls.sched.base), FLT_MIN, FLT_MAX},
    {"kiln.sched.step", M_LONG, AT(ls.sched.step), 0, (double)INT_MAX * INT_MAX},
    {"kiln.sched.plateau_best", M_F64, AT(ls.sched.plateau_best), -1, 1},
    {"kiln.sched.plateau_wait", M_INT, AT(ls.sched.plateau_wait), 0, INT_MAX},
    {"kiln.sched.best", M_F64, AT(ls.sched.best), -1, 1},
    {"kiln.sched.best_epoch", M_INT, AT(ls.sched.best_epoch), 0, INT_MAX},
    {"kiln.sched.wait", M_INT, AT(ls.sched.wait), 0, INT_MAX},
    {"kiln.sched.reductions", M_INT, AT(ls.sched.reductions), 0, INT_MAX},
    {"kiln.prev.epochs", M_INT, AT(prev_epochs), 0, INT_MAX},
    {"kiln.prev.best_epoch", M_INT, AT(prev_best_epoch), 0, INT_MAX},
    {"kiln.prev.seconds", M_F64, AT(prev_seconds), 0, DBL_MAX},
    {"kiln.prev.best_val", M_F64, AT(prev_best_val), -1, 1},
};
#define NFIELDS ((int)(sizeof FIELDS / sizeof FIELDS[0]))
#define NMETA (NFIELDS + 4)  /* + kiln.checkpoint, kiln.arch, kiln.settings, kiln.crc32 */

static uint32_t crc_floats(uint32_t crc, const float *a, size_t n)
{
    const unsigned char *b = (const unsigned char *)a;
    size_t bytes = n * sizeof(float);
    while (bytes) {
        unsigned chunk = bytes > (1u << 30) ? (1u << 30) : (unsigned)bytes;
        crc = (uint32_t)crc32(crc, b, chunk);
        b += chunk; bytes -= chunk;
    }
    return crc;
}

/* CRC-32 of the metadata pairs (each key and value with its NUL, in the
 * order given) and then the tensor data. */
static uint32_t checkpoint_crc(const Checkpoint *c, const char *const *keys, const char *const *vals, int n)
{
    uint32_t crc = (uint32_t)crc32(0, NULL, 0);
    for (int i = 0; i < n; i++) {
        crc = (uint32_t)crc32(crc, (const unsigned char *)keys[i], (unsigned)strlen(keys[i]) + 1);
        crc = (uint32_t)crc32(crc, (const unsigned char *)vals[i], (unsigned)strlen(vals[i]) + 1);
    }
    crc = crc_floats(crc, c->params, c->param_floats);
    crc = crc_floats(crc, c->momentum, c->opt_floats);
    if (c->has_best) crc = crc_floats(crc, c->best, c->param_floats);
    return crc;
}

/* The text of field f of c. */
static void field_format(const MetaField *f, const Checkpoint *c, char *buf, size_t n)
{
    const char *p = (const char *)c + f->off;
    switch (f->type) {
    case M_INT: snprintf(buf, n, "%d", *(const int *)p); break;
    case M_LONG: snprintf(buf, n, "%ld", *(const long *)p); break;
    case M_U64: snprintf(buf, n, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    case M_F32: snprintf(buf, n, "%.9g", (double)*(const float *)p); break;
    case M_F64: snprintf(buf, n, "%.17g", *(const double *)p); break;
    }
}

int checkpoint_save(const char *path, const Checkpoint *c, char *err, size_t errlen)
{
    char val[NMETA][64];
    const char *keys[NMETA], *vals[NMETA];
    int n = 0;
    keys[n] = "kiln.checkpoint"; vals[n++] = FORMAT;
    keys[n] = "kiln.arch"; vals[n++] = c->arch;
    keys[n] = "kiln.settings"; vals[n++] = c->settings;
    for (int i = 0; i < NFIELDS; i++, n++) {
        field_format(&FIELDS[i], c, val[n], sizeof val[n]);
        keys[n] = FIELDS[i].key;
        vals[n] = val[n];
    }
    snprintf(val[n], sizeof val[n], "%08x", checkpoint_crc(c, keys, vals, n));
    keys[n] = "kiln.crc32"; vals[n] = val[n]; n++;
    StTensor t[3] = {
        {"params", 1, {(int64_t)c->param_floats}, c->param_floats, c->params},
        {"momentum", 1, {(int64_t)c->opt_floats}, c->opt_floats, c->momentum},
        {"best", 1, {(int64_t)c->param_floats}, c->param_floats, c->best},
    };
    return st_save(path, t, c->has_best ? 3 : 2, keys, vals, n, err, errlen) ? 1 : 0;
}

/* "PATH: KEY = 'VALUE': why" into err; returns 2. */
static int bad_field(char *err, size_t errlen, const char *path, const char *key, const char *v, const char *fmt, ...)
{
    int k = snprintf(err, errlen, "%s: corrupt checkpoint: %s = '%.40s': ", path, key, v ? v : "");
    if (k >= 0 && (size_t)k < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return 2;
}

/* Parse v into field f of c: the whole text as a decimal integer (a leading
 * '-' only where the type is signed) or a decimal floating-point number,
 * finite, within the field's range. Returns 0, or 2 with a message. */
static int field_parse(const MetaField *f, const char *v, Checkpoint *c, const char *path, char *err, size_t errlen)
{
    char *p = (char *)c + f->off, *end;
    size_t len = strlen(v);
    double d;
    errno = 0;
    if (f->type == M_F32 || f->type == M_F64) {
        if (!len || strspn(v, "0123456789+-.eE") != len) return bad_field(err, errlen, path, f->key, v, "not a decimal number");
        d = f->type == M_F32 ? (double)strtof(v, &end) : strtod(v, &end);
        if (*end || !isfinite(d)) return bad_field(err, errlen, path, f->key, v, "not a finite number");
    } else {
        size_t sign = v[0] == '-' && f->type != M_U64;
        if (len == sign || strspn(v + sign, "0123456789") != len - sign)
            return bad_field(err, errlen, path, f->key, v, "not a%s integer", f->type == M_U64 ? " non-negative" : "n");
        if (f->type == M_U64) {
            unsigned long long u = strtoull(v, &end, 10);
            if (errno) return bad_field(err, errlen, path, f->key, v, "too large");
            *(uint64_t *)p = u;
            return 0;
        }
        long long ll = strtoll(v, &end, 10);
        if (errno) return bad_field(err, errlen, path, f->key, v, "too large");
        d = (double)ll;
    }
    if (d < f->lo || d > f->hi) {
        if (f->lo == FLT_MIN) return bad_field(err, errlen, path, f->key, v, "must be positive");
        return bad_field(err, errlen, path, f->key, v, "out of range (%.17g to %.17g)", f->lo, f->hi);
    }
    switch (f->type) {
    case M_INT: *(int *)p = (int)d; break;
    case M_LONG: *(long *)p = (long)d; break;
    case M_F32: *(float *)p = (float)d; break;
    case M_F64: *(double *)p = d; break;
    case M_U64: break;
    }
    return 0;
}

/* The text of the field named key in c, for messages. */
static void field_text(const Checkpoint *c, const char *key, char *buf, size_t n)
{
    buf[0] = 0;
    for (int i = 0; i < NFIELDS; i++)
        if (!strcmp(FIELDS[i].key, key)) field_format(&FIELDS[i], c, buf, n);
}

/* Relations between loaded values that hold in any run. Returns 0, or 2
 * with a message naming the key. */
static int checkpoint_consistent(const Checkpoint *c, const char *path, char *err, size_t errlen)
{
    const LoopState *ls = &c->ls;
    const char *key = NULL, *why = NULL;
    if (ls->correct > ls->seen) key = "kiln.correct", why = "more correct answers than images seen (kiln.seen)";
    else if (ls->pos > 0 && ls->seen == 0) key = "kiln.seen", why = "no images seen after a step (kiln.pos)";
    else if (ls->sched.best_epoch > ls->epoch) key = "kiln.sched.best_epoch", why = "later than the epochs done (kiln.epoch)";
    else if (ls->sched.best_epoch > 0 && !c->has_best) key = "kiln.sched.best_epoch", why = "a best epoch but no best tensor";
    else if (ls->sched.wait > ls->epoch) key = "kiln.sched.wait", why = "more epochs without improvement than epochs done";
    else if (ls->sched.plateau_wait > ls->epoch) key = "kiln.sched.plateau_wait", why = "more epochs on a plateau than epochs done";
    else if (ls->stopped && (ls->epoch < 1 || ls->pos > 0)) key = "kiln.stopped", why = "stopped early, but not at an epoch's end";
    else if (c->prev_best_epoch > c->prev_epochs) key = "kiln.prev.best_epoch", why = "later than the epochs of phase 1 (kiln.prev.epochs)";
    if (!key) return 0;
    char text[64];
    field_text(c, key, text, sizeof text);
    return bad_field(err, errlen, path, key, text, "%s", why);
}

/* Settings text: shorter than size, lines "name=value", names of [a-z0-9_],
 * no control bytes. */
static int settings_valid(const char *s, size_t size)
{
    if (strlen(s) >= size) return 0;
    for (const char *l = s; *l;) {
        size_t name = strspn(l, "abcdefghijklmnopqrstuvwxyz0123456789_");
        if (!name || l[name] != '=') return 0;
        const char *e = l + name + 1;
        while (*e && *e != '\n') {
            if ((unsigned char)*e < 0x20) return 0;
            e++;
        }
        l = *e ? e + 1 : e;
    }
    return 1;
}

/* Fill c from the loaded file f (freed here); returns as checkpoint_load. */
static int checkpoint_from(const char *path, StFile f, Checkpoint *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    int rc = 2;
    const char *format = st_meta(&f, "kiln.checkpoint"), *arch = st_meta(&f, "kiln.arch");
    const char *settings = st_meta(&f, "kiln.settings");
    const char *crc_text = st_meta(&f, "kiln.crc32");
    const StTensor *tp = st_find(&f, "params"), *tm = st_find(&f, "momentum"), *tb = st_find(&f, "best");
    if (!format || !arch || !tp || !tm) {
        snprintf(err, errlen, "%s: not a kiln checkpoint (no kiln.checkpoint metadata or tensors)", path);
        goto out;
    }
    if (strcmp(format, FORMAT)) {
        snprintf(err, errlen, "%s: kiln.checkpoint = '%.20s': format " FORMAT " is the only one read (format 1, from an "
                 "older kiln, has no checksum over its state): start the run again", path, format);
        goto out;
    }
    if (strlen(arch) >= sizeof c->arch) {
        bad_field(err, errlen, path, "kiln.arch", arch, "longer than %zu bytes", sizeof c->arch - 1);
        goto out;
    }
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    if (!settings || !settings_valid(settings, sizeof c->settings)) {
        bad_field(err, errlen, path, "kiln.settings", settings, "not name=value lines");
        goto out;
    }
    snprintf(c->settings, sizeof c->settings, "%s", settings);
    const char *keys[NMETA], *vals[NMETA];
    int n = 0;
    keys[n] = "kiln.checkpoint"; vals[n++] = format;
    keys[n] = "kiln.arch"; vals[n++] = arch;
    keys[n] = "kiln.settings"; vals[n++] = settings;
    c->has_best = tb != NULL;
    for (int i = 0; i < NFIELDS; i++, n++) {
        keys[n] = FIELDS[i].key;
        vals[n] = st_meta(&f, FIELDS[i].key);
        if (!vals[n]) { snprintf(err, errlen, "%s: corrupt checkpoint: no %s", path, FIELDS[i].key); goto out; }
        if (field_parse(&FIELDS[i], vals[n], c, path, err, errlen)) goto out;
    }
    if (!crc_text || strlen(crc_text) != 8 || strspn(crc_text, "0123456789abcdef") != 8) {
        bad_field(err, errlen, path, "kiln.crc32", crc_text, "not 8 lowercase hexadecimal digits");
        goto out;
    }
    if (checkpoint_consistent(c, path, err, errlen)) goto out;
    c->param_floats = tp->numel;
    c->opt_floats = tm->numel;
    if (tb && tb->numel != tp->numel) {
        snprintf(err, errlen, "%s: corrupt checkpoint: best and params differ in size", path);
        goto out;
    }
    c->params = malloc(sizeof(float) * (c->param_floats + 1));
    c->momentum = malloc(sizeof(float) * (c->opt_floats + 1));
    c->best = malloc(sizeof(float) * (c->param_floats + 1));
    if (!c->params || !c->momentum || !c->best) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = 1;
        goto out;
    }
    memcpy(c->params, tp->data, sizeof(float) * c->param_floats);
    memcpy(c->momentum, tm->data, sizeof(float) * c->opt_floats);
    if (tb) memcpy(c->best, tb->data, sizeof(float) * c->param_floats);
    uint32_t crc = (uint32_t)strtoul(crc_text, NULL, 16), got = checkpoint_crc(c, keys, vals, n);
    if (got != crc) {
        snprintf(err, errlen, "%s: corrupt checkpoint: kiln.crc32 = %08x, but the metadata and tensors give %08x "
                 "(edited or damaged)", path, crc, got);
        goto out;
    }
    rc = 0;
out:
    st_free(&f);
    if (rc) checkpoint_free(c);
    return rc;
}

/* "PATH: KEY: why; ..." into err; returns 2. */
static int no_fit(char *err, size_t errlen, const char *path, const char *key, const char *fmt, ...)
{
    int k = snprintf(err, errlen, "%s: %s: ", path, key);
    if (k >= 0 && (size_t)k < errlen) {
        va_list ap;
        va_start(ap, fmt);
        k += vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    if (k >= 0 && (size_t)k < errlen) snprintf(err + k, errlen - (size_t)k, ": the checkpoint does not fit this run");
    return 2;
}

int checkpoint_fits(const Checkpoint *c, const CheckpointRun *r, const char *path, char *err, size_t errlen)
{
    const LoopState *ls = &c->ls;
    if (c->phase >= r->phases)
        return no_fit(err, errlen, path, "kiln.phase", "phase %d of a run of %d phase%s", c->phase + 1, r->phases,
                      r->phases > 1 ? "s" : "");
    if (ls->epoch > r->max_epochs)
        return no_fit(err, errlen, path, "kiln.epoch", "%d epochs done, more than the run's %d (--epochs)", ls->epoch,
                      r->max_epochs);
    if (ls->pos > r->steps || (ls->epoch == r->max_epochs && ls->pos > 0))
        return no_fit(err, errlen, path, "kiln.pos", "step %d of epoch %d, whose epochs have %d steps", ls->pos,
                      ls->epoch + 1, r->steps);
    long full = (long)ls->pos * r->batch < r->n_train ? (long)ls->pos * r->batch : r->n_train;
    if (ls->pos > 0 ? ls->seen != full : ls->seen != 0 && ls->seen != r->n_train)
        return no_fit(err, errlen, path, "kiln.seen", "%ld images after %d steps of batch %d (expected %ld)", ls->seen,
                      ls->pos, r->batch, ls->pos > 0 ? full : (long)r->n_train);
    if (ls->sched.step != (long)ls->epoch * r->steps + ls->pos)
        return no_fit(err, errlen, path, "kiln.sched.step", "%ld steps taken, but %d epochs of %d steps and %d more make %ld",
                      ls->sched.step, ls->epoch, r->steps, ls->pos, (long)ls->epoch * r->steps + ls->pos);
    if (ls->rollbacks > r->max_rollbacks)
        return no_fit(err, errlen, path, "kiln.rollbacks", "%d rollbacks, more than the run's %d", ls->rollbacks,
                      r->max_rollbacks);
    if (c->phase == 1 && (c->prev_epochs < 1 || c->prev_epochs > r->max_epochs))
        return no_fit(err, errlen, path, "kiln.prev.epochs", "phase 1 ran %d epochs, not 1 to %d", c->prev_epochs,
                      r->max_epochs);
    return 0;
}

/* The value of setting `name` (len bytes) in s, its length in *vlen; NULL
 * when s has no such line. */
static const char *setting_get(const char *s, const char *name, size_t len, size_t *vlen)
{
    for (const char *l = s; *l;) {
        const char *e = strchr(l, '\n');
        if (!e) e = l + strlen(l);
        if ((size_t)(e - l) > len && !strncmp(l, name, len) && l[len] == '=') {
            *vlen = (size_t)(e - l) - len - 1;
            return l + len + 1;
        }
        l = *e ? e + 1 : e;
    }
    return NULL;
}

/* Append the settings of a that differ in b (or that b lacks) to out; the
 * values shown are a's then b's, in that order unless swap. */
static int settings_walk(const char *a, const char *b, int swap, char *out, size_t n)
{
    int count = 0;
    for (const char *l = a; *l;) {
        const char *e = strchr(l, '\n'), *eq = strchr(l, '=');
        if (!e) e = l + strlen(l);
        size_t len = (size_t)(eq - l), va = (size_t)(e - eq - 1), vb = 0;
        const char *v = setting_get(b, l, len, &vb);
        if (!v || vb != va || strncmp(v, eq + 1, va)) {
            if (swap && v) { l = *e ? e + 1 : e; continue; }     /* listed by the first walk */
            size_t k = strlen(out);
            const char *x = swap ? "(none)" : eq + 1, *y = swap ? eq + 1 : v ? v : "(none)";
            int xl = swap ? 6 : (int)va, yl = swap ? (int)va : v ? (int)vb : 6;
            snprintf(out + k, n - k, "%s%.*s %.*s -> %.*s", k ? "; " : "", (int)len, l, xl, x, yl, y);
            count++;
        }
        l = *e ? e + 1 : e;
    }
    return count;
}

int checkpoint_settings_diff(const char *saved, const char *now, char *out, size_t n)
{
    if (n) out[0] = 0;
    return settings_walk(saved, now, 0, out, n) + settings_walk(now, saved, 1, out, n);
}

int checkpoint_load(const char *path, Checkpoint *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    StFile f;
    int rc = st_load(path, &f, err, errlen);
    return rc ? rc : checkpoint_from(path, f, c, err, errlen);
}

int checkpoint_load_mem(const void *buf, size_t len, const char *name, Checkpoint *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    StFile f;
    int rc = st_load_mem(buf, len, name, &f, err, errlen);
    return rc ? rc : checkpoint_from(name, f, c, err, errlen);
}

void checkpoint_free(Checkpoint *c)
{
    free(c->params); free(c->momentum); free(c->best);
    c->params = c->momentum = c->best = NULL;
}
