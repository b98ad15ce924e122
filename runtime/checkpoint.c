/* runtime/checkpoint.c — checkpoints (see checkpoint.h). Numbers go into the
 * metadata as text that reads back to the same bits (%.17g for doubles,
 * %.9g for floats, integers as integers). */
#include "runtime/checkpoint.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "runtime/safetensors.h"

#define NMETA 24

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

static uint32_t checkpoint_crc(const Checkpoint *c)
{
    uint32_t crc = (uint32_t)crc32(0, NULL, 0);
    crc = crc_floats(crc, c->params, c->param_floats);
    crc = crc_floats(crc, c->momentum, c->opt_floats);
    if (c->has_best) crc = crc_floats(crc, c->best, c->param_floats);
    return crc;
}

int checkpoint_save(const char *path, const Checkpoint *c, char *err, size_t errlen)
{
    char val[NMETA][256];
    const char *keys[NMETA];
    const char *vals[NMETA];
    int n = 0;
#define META(k, ...) do { keys[n] = k; snprintf(val[n], sizeof val[n], __VA_ARGS__); vals[n] = val[n]; n++; } while (0)
    const Schedule *s = &c->ls.sched;
    META("kiln.checkpoint", "1");
    META("kiln.arch", "%s", c->arch);
    META("kiln.phase", "%d", c->phase);
    META("kiln.epoch", "%d", c->ls.epoch);
    META("kiln.pos", "%d", c->ls.pos);
    META("kiln.seconds", "%.17g", c->ls.seconds);
    META("kiln.loss_sum", "%.17g", c->ls.loss_sum);
    META("kiln.correct", "%ld", c->ls.correct);
    META("kiln.seen", "%ld", c->ls.seen);
    META("kiln.rollbacks", "%d", c->ls.rollbacks);
    META("kiln.backend_step", "%llu", (unsigned long long)c->backend_step);
    META("kiln.sched", "%.9g %ld %.9g %.17g %d %.17g %d %d %d %ld %.9g",
         s->base, s->step, s->lr, s->plateau_best, s->plateau_wait, s->best, s->best_epoch,
         s->wait, s->reductions, s->warmup_steps, s->warmup_start);
    META("kiln.prev", "%d %d %.17g %.17g", c->prev_epochs, c->prev_best_epoch, c->prev_seconds, c->prev_best_val);
    META("kiln.crc32", "%08x", checkpoint_crc(c));
#undef META
    StTensor t[3] = {
        {"params", 1, {(int64_t)c->param_floats}, c->param_floats, c->params},
        {"momentum", 1, {(int64_t)c->opt_floats}, c->opt_floats, c->momentum},
        {"best", 1, {(int64_t)c->param_floats}, c->param_floats, c->best},
    };
    return st_save(path, t, c->has_best ? 3 : 2, keys, vals, n, err, errlen) ? 1 : 0;
}

/* Parse meta key as per fmt; returns 0 when all conversions matched. */
static int meta_scan(const StFile *f, const char *key, int count, const char *fmt, ...)
{
    const char *v = st_meta(f, key);
    if (!v) return -1;
    va_list ap;
    va_start(ap, fmt);
    int got = vsscanf(v, fmt, ap);
    va_end(ap);
    return got == count ? 0 : -1;
}

/* Fill c from the loaded file f (freed here); returns as checkpoint_load. */
static int checkpoint_from(const char *path, StFile f, Checkpoint *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    int rc = 2;
    const char *arch = st_meta(&f, "kiln.arch");
    const StTensor *tp = st_find(&f, "params"), *tm = st_find(&f, "momentum"), *tb = st_find(&f, "best");
    if (!st_meta(&f, "kiln.checkpoint") || !arch || !tp || !tm) {
        snprintf(err, errlen, "%s: not a kiln checkpoint (no kiln.checkpoint metadata or tensors)", path);
        goto out;
    }
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    Schedule *s = &c->ls.sched;
    unsigned long long bstep;
    unsigned crc;
    if (meta_scan(&f, "kiln.phase", 1, "%d", &c->phase) || meta_scan(&f, "kiln.epoch", 1, "%d", &c->ls.epoch) ||
        meta_scan(&f, "kiln.pos", 1, "%d", &c->ls.pos) || meta_scan(&f, "kiln.seconds", 1, "%lf", &c->ls.seconds) ||
        meta_scan(&f, "kiln.loss_sum", 1, "%lf", &c->ls.loss_sum) ||
        meta_scan(&f, "kiln.correct", 1, "%ld", &c->ls.correct) || meta_scan(&f, "kiln.seen", 1, "%ld", &c->ls.seen) ||
        meta_scan(&f, "kiln.rollbacks", 1, "%d", &c->ls.rollbacks) ||
        meta_scan(&f, "kiln.backend_step", 1, "%llu", &bstep) ||
        meta_scan(&f, "kiln.sched", 11, "%f %ld %f %lf %d %lf %d %d %d %ld %f", &s->base, &s->step, &s->lr,
                  &s->plateau_best, &s->plateau_wait, &s->best, &s->best_epoch, &s->wait, &s->reductions,
                  &s->warmup_steps, &s->warmup_start) ||
        meta_scan(&f, "kiln.prev", 4, "%d %d %lf %lf", &c->prev_epochs, &c->prev_best_epoch, &c->prev_seconds,
                  &c->prev_best_val) ||
        meta_scan(&f, "kiln.crc32", 1, "%x", &crc)) {
        snprintf(err, errlen, "%s: corrupt checkpoint: a state field is missing or malformed", path);
        goto out;
    }
    c->backend_step = bstep;
    c->param_floats = tp->numel;
    c->opt_floats = tm->numel;
    c->has_best = tb != NULL;
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
    if (checkpoint_crc(c) != crc) {
        snprintf(err, errlen, "%s: corrupt checkpoint: CRC-32 of the tensor data does not match (%08x stored, %08x computed)",
                 path, crc, checkpoint_crc(c));
        goto out;
    }
    rc = 0;
out:
    st_free(&f);
    if (rc) checkpoint_free(c);
    return rc;
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
