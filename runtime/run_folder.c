/* runtime/run_folder.c — the run folder of run_train (see run.h for its
 * files, run_state.h for the stages): made and probed before anything long
 * runs, the resume checkpoint loaded and held to the run's settings,
 * config.json and metrics.csv at the start, plan.txt with the first plan,
 * config.json again and summary.json at the end. Every file is written
 * atomically (runtime/files.c) except metrics.csv, which grows a row an
 * epoch and is flushed after each; a failed write names the file. */
#include "runtime/run_state.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>

#include "runtime/classes.h"
#include "runtime/files.h"
#include "runtime/resume.h"

void run_path(char *buf, size_t n, const char *dir, const char *file)
{
    snprintf(buf, n, "%s/%s", dir, file);
}

/* The resolved configuration: what `kiln train --resume DIR` reads back. */
static json_t *spec_json(const RunConfig *c, const TrainSpec *t, const LrGroups *gr, const InputAttr *in,
                         const Dataset *ds)
{
    json_t *o = json_object();
    json_object_set_new(o, "arch", json_string(c->arch));
    json_object_set_new(o, "data", json_string(c->data));
    json_t *cls = classes_json(ds->class_names, ds->num_classes);
    json_object_set_new(o, "classes", cls ? cls : json_null());
    json_object_set_new(o, "weights", c->weights ? json_string(c->weights) : json_null());
    json_object_set_new(o, "strategy", json_string(strategy_name(t->strategy)));
    json_object_set_new(o, "lr", json_real(t->lr));
    json_object_set_new(o, "momentum", json_real(t->momentum));
    json_object_set_new(o, "weight_decay", json_real(t->weight_decay));
    json_object_set_new(o, "batch", json_integer(t->batch));
    json_object_set_new(o, "max_epochs", json_integer(t->max_epochs));
    json_object_set_new(o, "patience", json_integer(t->patience));
    json_object_set_new(o, "plateau_patience", json_integer(t->plateau_patience));
    json_object_set_new(o, "plateau_factor", json_real(t->plateau_factor));
    json_object_set_new(o, "min_lr", json_real(t->min_lr));
    json_object_set_new(o, "warmup_epochs", json_integer(t->warmup_epochs));
    json_object_set_new(o, "warmup_start", json_real(t->warmup_start > 0 ? t->warmup_start : t->lr / 100));
    json_object_set_new(o, "finetune_factor", json_real(t->finetune_factor));
    json_object_set_new(o, "bn", json_string(t->bn_override < 0 ? "strategy" : bn_mode_name((BnMode)t->bn_override)));
    json_object_set_new(o, "lr_groups", json_string(t->lr_groups));
    json_object_set_new(o, "layer_decay", json_real(t->layer_decay));
    json_object_set_new(o, "on_diverge", json_string(t->on_diverge == DIVERGE_ROLLBACK ? "rollback" : "stop"));
    json_object_set_new(o, "seed", json_integer((json_int_t)t->seed));
    json_object_set_new(o, "per_class", json_integer(c->per_class));
    json_object_set_new(o, "fuse", json_boolean(c->fuse));
    json_object_set_new(o, "fold", json_boolean(c->fold));
    json_object_set_new(o, "cache_features", json_boolean(c->cache));
    json_object_set_new(o, "input_size", json_pack("[i,i]", in->h, in->w));
    json_object_set_new(o, "max_rollbacks", json_integer(t->max_rollbacks));
    json_object_set_new(o, "depth_groups", json_integer(t->n_depth_groups));
    if (gr) {
        json_t *a = json_array();
        for (int k = 0; k < gr->n; k++) {
            json_t *g = json_object();
            json_object_set_new(g, "layers", json_string(gr->name[k]));
            json_object_set_new(g, "lr_scale", json_real(gr->scale[k]));
            json_array_append_new(a, g);
        }
        json_object_set_new(o, "lr_group_table", a);
    }
    return o;
}

/* ---- metrics.csv on resume ---------------------------------------------------- */

typedef struct { FILE *in; int phase, epoch; } Trim;

/* metrics_trim's content: the header and the rows up to (phase, epoch). */
static int fill_trimmed(FILE *o, void *ctx)
{
    Trim *t = ctx;
    char line[512];
    int first = 1;
    while (fgets(line, sizeof line, t->in)) {
        int e, ph;
        if (first || (sscanf(line, "%d,%d", &e, &ph) == 2 && (ph - 1 < t->phase || (ph - 1 == t->phase && e <= t->epoch))))
            fputs(line, o);
        first = 0;
    }
    return ferror(t->in);
}

/* Truncate metrics.csv to the rows up to (phase, epoch), for a resumed run
 * (atomically). Returns 0, or -1 with errno set. */
static int metrics_trim(const char *path, int phase, int epoch)
{
    Trim t = {fopen(path, "r"), phase, epoch};
    if (!t.in) return errno == ENOENT ? 0 : -1;
    int rc = kiln_write_atomic(path, fill_trimmed, &t), e = errno;
    fclose(t.in);
    errno = e;
    return rc;
}

/* plan.txt's content. */
static int fill_plan(FILE *f, void *p)
{
    plan_print(f, p, 1, 1);
    return 0;
}

/* ---- the stages ------------------------------------------------------------------ */

int folder_open(Run *R)
{
    const RunConfig *c = R->c;
    char *err = R->err;
    size_t errlen = R->errlen;
    if (c->resume && c->out && strcmp(c->resume, c->out)) {
        snprintf(err, errlen, "--out %s with --resume %s: a resumed run writes to its own folder", c->out, c->resume);
        return 2;
    }
    const char *dir = R->dir = c->resume ? c->resume : c->out;
    if (dir && strlen(dir) > KILN_RUN_DIR_MAX) {
        /* the reason first: the path itself may not fit the message */
        snprintf(err, errlen, "run folder path too long (%zu bytes, at most %d): '%.160s...'", strlen(dir),
                 KILN_RUN_DIR_MAX, dir);
        return 2;
    }
    if (dir) {
        snprintf(R->hk.dir, sizeof R->hk.dir, "%s", dir);
        char probe[1100];
        run_path(probe, sizeof probe, dir, ".write-test");
        if (kiln_mkdirs(dir) || kiln_probe_write(probe)) {
            snprintf(err, errlen, "%s: cannot write to the run folder: %s", dir, strerror(errno));
            return 2;
        }
    }
    if (c->save && kiln_probe_write(c->save)) {
        snprintf(err, errlen, "%s: the final weights (--save) cannot be written there: %s", c->save, strerror(errno));
        return 2;
    }
    if (c->resume) {
        char path[1100];
        int rc;
        run_path(path, sizeof path, c->resume, "last.ckpt");
        if ((rc = checkpoint_load(path, &R->resume, err, errlen))) return rc;
        if (strcmp(R->resume.arch, R->g.name)) {
            snprintf(err, errlen, "%s: a checkpoint of architecture '%s', not '%s'", path, R->resume.arch, R->g.name);
            return 2;
        }
        R->have_resume = 1;
    }
    return 0;
}

int folder_check_resume(Run *R)
{
    const RunConfig *c = R->c;
    RunShared *sh = R->sh;
    int rc;
    if (R->dir) {
        if (!sh->have_ds_crc) sh->ds_crc = resume_data_crc(R->ds), sh->have_ds_crc = 1;
        if ((rc = resume_settings(R->ck.settings, sizeof R->ck.settings, c, &R->spec, R->in, R->ds, sh->ds_crc,
                                  R->err, R->errlen)))
            return rc;
    }
    if (!R->have_resume) return 0;
    char path[1100], diff[1536];
    run_path(path, sizeof path, c->resume, "last.ckpt");
    if (checkpoint_settings_diff(R->resume.settings, R->ck.settings, diff, sizeof diff)) {
        snprintf(R->err, R->errlen, "%s: the run was made with other settings, which a resume cannot change "
                 "(checkpoint -> now): %s", path, diff);
        return 2;
    }
    const TrainSpec *t = &R->spec;
    CheckpointRun cr = {R->phases, t->max_epochs, (R->sp.n_train + t->batch - 1) / t->batch, t->batch,
                        R->sp.n_train, t->max_rollbacks};
    if ((rc = checkpoint_fits(&R->resume, &cr, path, R->err, R->errlen))) return rc;
    R->finished = resume_finished(c->resume, &R->resume, R->phases, t->max_epochs, c->save, R->log, R->r);
    return 0;
}

int folder_start(Run *R)
{
    const char *dir = R->dir;
    char *err = R->err;
    size_t errlen = R->errlen;
    char path[1100];
    int rc;
    if (!dir) return 0;
    if (!R->have_resume) {
        if ((rc = strategy_apply(&R->spec, 0, &R->g, &R->groups, err, errlen))) return rc;
        json_t *cfg = spec_json(R->c, &R->spec, &R->groups, R->in, R->ds);
        run_path(path, sizeof path, dir, "config.json");
        int bad = kiln_write_json(path, cfg);
        json_decref(cfg);
        if (bad) { snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno)); return 1; }
    }
    run_path(path, sizeof path, dir, "metrics.csv");
    if (R->have_resume && metrics_trim(path, R->resume.phase, R->resume.ls.epoch)) {
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        return 1;
    }
    FILE *m = R->hk.metrics = fopen(path, R->have_resume ? "a" : "w");
    if (!m) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); return 1; }
    if (!fseek(m, 0, SEEK_END) && ftell(m) == 0)   /* new (or, on resume, missing) */
        fprintf(m, "epoch,phase,lr,loss,train_acc,val_acc,train_img_per_s,elapsed_s\n");
    if (fflush(m) || ferror(m)) {
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        return 1;
    }
    return 0;
}

int folder_write_plan(Run *R, const Plan *p)
{
    char path[1100];
    run_path(path, sizeof path, R->dir, "plan.txt");
    if (kiln_write_atomic(path, fill_plan, (void *)p)) {
        snprintf(R->err, R->errlen, "%s: cannot write: %s", path, strerror(errno));
        return 1;
    }
    return 0;
}

/* summary.json's content: the run's results (R->r), diverged runs marked. */
static json_t *summary_json(const Run *R)
{
    const RunResult *r = R->r;
    const Dataset *ds = R->ds;
    json_t *s = json_object();
    json_object_set_new(s, "arch", json_string(R->g.name));
    json_object_set_new(s, "strategy", json_string(strategy_name(R->spec.strategy)));
    json_object_set_new(s, "data", json_string(ds->source));
    json_t *cls = classes_json(ds->class_names, ds->num_classes);
    json_object_set_new(s, "classes", cls ? cls : json_null());
    json_object_set_new(s, "num_classes", json_integer(ds->num_classes));
    json_object_set_new(s, "images", json_pack("{s:i,s:i,s:i}", "train", R->sp.n_train, "val", R->sp.n_val,
                                               "test", R->sp.n_test));
    json_object_set_new(s, "lr", json_real(r->lr));
    json_object_set_new(s, "batch", json_integer(R->spec.batch));
    json_object_set_new(s, "diverged", json_boolean(r->diverged));
    if (r->diverged) {
        json_object_set_new(s, "diverged_epoch", json_integer(r->div_epoch));
        json_object_set_new(s, "diverged_step", json_integer(r->div_step));
        json_object_set_new(s, "diverged_lr", json_real(r->div_lr));
    }
    json_object_set_new(s, "test_acc", json_real(r->test_acc));
    json_object_set_new(s, "val_acc", json_real(r->val_acc));
    json_object_set_new(s, "train_seconds", json_real(r->train_seconds));
    json_object_set_new(s, "setup_seconds", json_real(r->setup_seconds));
    json_object_set_new(s, "cache_seconds", json_real(r->cache_seconds));
    json_t *pa = json_array();
    for (int k = 0; k < r->phases; k++) {
        json_t *o = json_object();
        json_object_set_new(o, "epochs", json_integer(r->epochs[k]));
        json_object_set_new(o, "best_epoch", json_integer(r->best_epoch[k]));
        json_object_set_new(o, "seconds", json_real(r->phase_seconds[k]));
        json_object_set_new(o, "collapsed_epoch",
                            r->collapsed_epoch[k] ? json_integer(r->collapsed_epoch[k]) : json_null());
        json_array_append_new(pa, o);
    }
    json_object_set_new(s, "phases", pa);
    json_object_set_new(s, "rollbacks", json_integer(r->rollbacks));
    json_object_set_new(s, "plan_bytes", json_integer((json_int_t)r->plan_bytes));
    json_object_set_new(s, "trainable_parameters", json_integer((json_int_t)r->trainable));
    json_object_set_new(s, "cached_layer",
                        r->cached_layer >= 0 ? json_string(R->g.layers[r->cached_layer].name) : json_null());
    return s;
}

int folder_finish(Run *R)
{
    const char *dir = R->dir;
    char path[1100];
    int bad = 0, cfg_errno = 0;
    if (!dir) return 0;
    if (!R->have_resume) {         /* with auto's choices; a resume keeps the run's own */
        json_t *cfg = spec_json(R->c, &R->spec, &R->groups, R->in, R->ds);
        run_path(path, sizeof path, dir, "config.json");
        bad = kiln_write_json(path, cfg);
        cfg_errno = errno;
        json_decref(cfg);
    }
    json_t *s = summary_json(R);
    run_path(path, sizeof path, dir, "summary.json");
    int sbad = kiln_write_json(path, s);
    if (sbad) snprintf(R->err, R->errlen, "%s: cannot write: %s", path, strerror(errno));
    else if (bad) snprintf(R->err, R->errlen, "%s/config.json: cannot write: %s", dir, strerror(cfg_errno));
    json_decref(s);
    return sbad || bad ? 1 : 0;
}
