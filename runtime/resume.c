/* runtime/resume.c — what a resume checks and records around a run (see
 * resume.h). */
#include "runtime/resume.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "runtime/files.h"

/* CRC-32 of a data set's content: pixels, labels, class names. */
uint32_t resume_data_crc(const Dataset *ds)
{
    uLong crc = crc32(0, NULL, 0);
    const unsigned char *px = ds->pixels;
    for (size_t left = (size_t)ds->n * ds->h * ds->w * ds->c; left;) {
        uInt chunk = left > (1u << 30) ? (1u << 30) : (uInt)left;
        crc = crc32(crc, px, chunk);
        px += chunk; left -= chunk;
    }
    crc = crc32(crc, (const unsigned char *)ds->labels, (uInt)(sizeof(int32_t) * (size_t)ds->n));
    for (int k = 0; k < ds->num_classes; k++)
        crc = crc32(crc, (const unsigned char *)ds->class_names[k], (uInt)strlen(ds->class_names[k]) + 1);
    return (uint32_t)crc;
}

/* v in the fewest significant digits (6 to 9) that read back to the same
 * float, so that settings compare exactly and read plainly. */
static const char *float_text(char *buf, size_t n, float v)
{
    for (int d = 6; d <= 9; d++) {
        snprintf(buf, n, "%.*g", d, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return buf;
}

/* The settings a resume must share with the run that wrote the checkpoint,
 * as name=value lines (Checkpoint.settings): CRC-32 of the arch file, the
 * starting weights and the data, and every option that shapes training.
 * auto's LR (and so its warm-up start) is its own choice, kept in the
 * checkpoint's schedule. Returns 0, or 2 when a file cannot be read. */
int resume_settings(char *buf, size_t n, const RunConfig *c, const TrainSpec *t, const InputAttr *in,
                    const Dataset *ds, uint32_t data_crc, char *err, size_t errlen)
{
    uint32_t arch_crc, w_crc;
    char w[16] = "none", lr[32] = "auto", ws[32] = "auto", lg[sizeof t->lr_groups], f[4][32];
    if (kiln_file_crc32(c->arch, &arch_crc)) {
        snprintf(err, errlen, "%s: %s", c->arch, strerror(errno));
        return 2;
    }
    if (c->weights) {
        if (kiln_file_crc32(c->weights, &w_crc)) {
            snprintf(err, errlen, "%s: %s", c->weights, strerror(errno));
            return 2;
        }
        snprintf(w, sizeof w, "%08x", w_crc);
    }
    if (t->strategy != STRAT_AUTO) {
        float_text(lr, sizeof lr, t->lr);
        float_text(ws, sizeof ws, t->warmup_start > 0 ? t->warmup_start : t->lr / 100);
    }
    snprintf(lg, sizeof lg, "%s", t->lr_groups);
    for (char *p = lg; *p; p++)
        if ((unsigned char)*p < 0x20) *p = '?';
    snprintf(buf, n,
             "arch_file_crc32=%08x\nweights_crc32=%s\ndata_crc32=%08x\nimages=%d\nclasses=%d\ninput=%dx%d\n"
             "seed=%llu\nper_class=%d\nstrategy=%s\nbatch=%d\nlr=%s\nmomentum=%s\nweight_decay=%s\n"
             "warmup_epochs=%d\nwarmup_start=%s\nfinetune_factor=%s\nbn=%s\nlr_groups=%s\nlayer_decay=%s\n"
             "depth_groups=%d\non_diverge=%s",
             arch_crc, w, data_crc, ds->n, ds->num_classes, in->h, in->w, (unsigned long long)t->seed,
             c->per_class, strategy_name(t->strategy), t->batch, lr, float_text(f[0], sizeof f[0], t->momentum),
             float_text(f[1], sizeof f[1], t->weight_decay), t->warmup_epochs, ws,
             float_text(f[2], sizeof f[2], t->finetune_factor),
             t->bn_override < 0 ? "strategy" : bn_mode_name((BnMode)t->bn_override), lg,
             float_text(f[3], sizeof f[3], t->layer_decay),
             t->n_depth_groups, t->on_diverge == DIVERGE_ROLLBACK ? "rollback" : "stop");
    return 0;
}

/* A resume leaves config.json as the run began and appends to
 * DIR/resumes.json where it continued and the options a resume may change
 * (`kiln train --resume` applies the last entry's). Returns 0, 2 when the
 * file is not a JSON array, 1 when it cannot be written. */
int resume_record(const char *dir, const RunConfig *c, const TrainSpec *t, const Checkpoint *k,
                  const char *device, char *err, size_t errlen)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/resumes.json", dir);
    json_error_t je;
    json_t *a = access(path, F_OK) ? json_array() : json_load_file(path, 0, &je);
    if (!json_is_array(a)) {
        snprintf(err, errlen, "%s: not a JSON array: %s", path, a ? "another value" : je.text);
        json_decref(a);
        return 2;
    }
    json_t *e = json_object();
    json_object_set_new(e, "phase", json_integer(k->phase + 1));
    json_object_set_new(e, "epoch", json_integer(k->ls.epoch + 1));
    json_object_set_new(e, "after_step", json_integer(k->ls.pos));
    json_object_set_new(e, "max_epochs", json_integer(t->max_epochs));
    json_object_set_new(e, "patience", json_integer(t->patience));
    json_object_set_new(e, "plateau_patience", json_integer(t->plateau_patience));
    json_object_set_new(e, "plateau_factor", json_real(t->plateau_factor));
    json_object_set_new(e, "min_lr", json_real(t->min_lr));
    json_object_set_new(e, "max_rollbacks", json_integer(t->max_rollbacks));
    json_object_set_new(e, "fuse", json_boolean(c->fuse));
    json_object_set_new(e, "fold", json_boolean(c->fold));
    json_object_set_new(e, "cache_features", json_boolean(c->cache));
    json_object_set_new(e, "device", json_string(device));
    json_array_append_new(a, e);
    int bad = kiln_write_json(path, a);
    json_decref(a);
    if (bad) {
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        return 1;
    }
    return 0;
}

/* A checkpoint of a run that ended (its last phase stopped early or ran all
 * its epochs) in a folder that holds the run's summary: says so, fills r from
 * the summary and returns 1; resuming it must change nothing. Else 0. */
int resume_finished(const char *dir, const Checkpoint *k, int phases, int max_epochs, const char *save,
                    FILE *log, RunResult *r)
{
    char path[1100];
    if (k->phase != phases - 1 || (!k->ls.stopped && k->ls.epoch < max_epochs)) return 0;
    snprintf(path, sizeof path, "%s/summary.json", dir);
    json_t *s = json_load_file(path, 0, NULL);
    if (!s) return 0;           /* ended before its summary was written: finish it */
    r->finished = 1;
    r->test_acc = json_number_value(json_object_get(s, "test_acc"));
    r->val_acc = json_number_value(json_object_get(s, "val_acc"));
    r->phases = phases;
    r->epochs[phases - 1] = k->ls.epoch;
    r->best_epoch[phases - 1] = k->ls.sched.best_epoch;
    json_decref(s);
    if (k->ls.stopped)
        fprintf(log, "%s: the run finished (early stopping after epoch %d%s): nothing to resume, nothing changed; "
                "its results are in %s\n", dir, k->ls.epoch, phases > 1 ? " of phase 2" : "", path);
    else
        fprintf(log, "%s: the run finished (all %d epochs%s): nothing to resume, nothing changed (--epochs N with a "
                "larger N continues it); its results are in %s\n", dir, max_epochs, phases > 1 ? " of phase 2" : "", path);
    if (save) fprintf(log, "--save %s not written: the run's final weights are %s/best.safetensors\n", save, dir);
    return 1;
}
