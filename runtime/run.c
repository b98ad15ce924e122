/* runtime/run.c — one training run from start to end (see run.h), in four
 * stages over one state (Run, runtime/run_state.h):
 *
 *   set-up     the device, the graph at its input size, the data set (shared
 *              across a sweep's trials) and its split, the strategy's
 *              phases and auto's batch                         (this file)
 *   run folder made before anything long runs; resume checks; config.json
 *              and metrics.csv                                 (run_folder.c)
 *   phases     per phase: plan, backend, parameters, cache, loop with its
 *              checkpoints and early stopping                  (run_phase.c)
 *   finish     test accuracy, --save, the result line (this file), then
 *              config.json and summary.json                    (run_folder.c)
 *
 * A stage's failure ends the run with its code; run_release frees what the
 * stages made, whatever stage was reached. */
#include "runtime/run_state.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/device.h"
#include "runtime/evaluate.h"
#include "runtime/weights.h"

void run_config_default(RunConfig *c)
{
    memset(c, 0, sizeof *c);
    strategy_defaults(&c->spec, STRAT_NAIVE);
    c->fuse = c->fold = 1;
    c->cache = 1;
    c->cache_limit = (size_t)4 << 30;
    c->progress = 1;
    c->log_every = 30;
    cuda_options_default(&c->cuda);
}

void run_shared_free(RunShared *sh)
{
    if (sh->have_ds) dataset_free(&sh->ds);
    feature_cache_free(&sh->cache);
    memset(sh, 0, sizeof *sh);
}

/* ---- set-up ------------------------------------------------------------------------------ */

/* The device, once for every phase (a missing GPU fails before anything
 * long), and the graph at the input size asked for (R->g, R->in). */
static int setup_graph(Run *R)
{
    const RunConfig *c = R->c;
    int rc;
    R->device = "cpu";
    if ((rc = device_resolve(c->device, R->log, &R->device, R->err, R->errlen))) return rc;
    if ((rc = graph_load(&R->g, c->arch, R->err, R->errlen))) return rc;
    if (c->input_h > 0 &&
        (rc = graph_set_input_size(&R->g, c->input_h, c->input_w ? c->input_w : c->input_h, R->err, R->errlen)))
        return rc;
    R->in = &R->g.layers[0].a.input;
    return 0;
}

/* When the data's images are resized to the input size, say so: as a
 * WARNING with both sizes, the compute factor and the --input-size hint when
 * the size is the arch's default, as a plain line when it was asked for. */
static void size_warning(FILE *log, const Dataset *ds, const Graph *g, int asked)
{
    const InputAttr *in = &g->layers[0].a.input;
    if (ds->src_h == in->h && ds->src_w == in->w) return;
    double factor = (double)in->h * in->w / ((double)ds->src_h * ds->src_w);
    if (asked) {
        fprintf(log, "input %dx%d (--input-size): the data's %dx%d images are resized to it, %.3gx the compute\n",
                in->h, in->w, ds->src_h, ds->src_w, factor);
        return;
    }
    fprintf(log, "WARNING: the data's images are %dx%d, %s's input is %dx%d: without --input-size every image is "
            "%s to %dx%d, %.3gx the compute of training at %dx%d. Give --input-size %dx%d to train at the data's "
            "size.\n",
            ds->src_h, ds->src_w, g->name, in->h, in->w, factor > 1 ? "upscaled" : "downscaled", in->h, in->w,
            factor, ds->src_h, ds->src_w, ds->src_h, ds->src_w);
}

/* The data set at the graph's input size (R->ds): loaded into R->sh unless a
 * sweep's earlier trial loaded the same (data, size, per-class, seed), which
 * drops that trial's feature cache otherwise. Then --num-classes checked,
 * the split (R->sp; each part must have an image), the head resized to the
 * data's classes, and the data's line and warnings on the log. */
static int setup_data(Run *R)
{
    const RunConfig *c = R->c;
    RunShared *sh = R->sh;
    const InputAttr *in = R->in;
    char *err = R->err;
    size_t errlen = R->errlen;
    int rc;
    snprintf(R->key, sizeof R->key, "%s|%dx%dx%d|%d|%llu", c->data, in->h, in->w, in->c, c->per_class,
             (unsigned long long)R->spec.seed);
    if (!sh->have_ds || strcmp(sh->ds_key, R->key)) {
        if (sh->have_ds) dataset_free(&sh->ds);
        sh->have_ds = sh->have_ds_crc = 0;
        feature_cache_free(&sh->cache);
        sh->cache_key[0] = 0;
        DataOptions dopt = {in->h, in->w, in->c, c->per_class, R->spec.seed};
        if ((rc = dataset_open(&sh->ds, c->data, &dopt, err, errlen))) return rc;
        sh->have_ds = 1;
        snprintf(sh->ds_key, sizeof sh->ds_key, "%s", R->key);
    }
    Dataset *ds = R->ds = &sh->ds;
    if (c->num_classes && c->num_classes != ds->num_classes) {
        snprintf(err, errlen, "%s: the data set has %d classes, --num-classes says %d", c->data, ds->num_classes,
                 c->num_classes);
        return 2;
    }
    Split *sp = &R->sp;
    if (dataset_split(ds, R->spec.seed, sp)) { snprintf(err, errlen, "out of memory"); return 1; }
    if (sp->n_train < 1 || sp->n_val < 1 || sp->n_test < 1) {
        snprintf(err, errlen, "%s: too few images to split (train %d, val %d, test %d)", c->data, sp->n_train,
                 sp->n_val, sp->n_test);
        return 2;
    }
    int h = graph_head(&R->g);
    if (h >= 0 && R->g.layers[h].out.c != ds->num_classes &&
        (rc = graph_set_num_classes(&R->g, ds->num_classes, err, errlen)))
        return rc;
    fprintf(R->log, "data %s: %d images %dx%dx%d, %d classes; split train %d / val %d / test %d\n", ds->source,
            ds->n, ds->h, ds->w, ds->c, ds->num_classes, sp->n_train, sp->n_val, sp->n_test);
    size_warning(R->log, ds, &R->g, c->input_h > 0);
    warn_coarse_split(R->log, "validation", sp->n_val);
    warn_coarse_split(R->log, "test", sp->n_test);
    return 0;
}

/* The input's normalization (R->pp), the strategy's phase count, and for a
 * new auto run the batch that fits memory (R->spec.batch). */
static int setup_strategy(Run *R)
{
    const InputAttr *in = R->in;
    TrainSpec *spec = &R->spec;
    int rc;
    R->pp = (Preproc){in->scale, {in->mean[0], in->mean[1], in->mean[2], in->mean[3]},
                      {in->std[0], in->std[1], in->std[2], in->std[3]}};
    R->phases = R->r->phases = strategy_phases(spec);
    if (spec->strategy == STRAT_AUTO && !R->have_resume) {
        if ((rc = strategy_apply(spec, 0, &R->g, &R->groups, R->err, R->errlen))) return rc;
        int b = auto_batch(&R->g, R->c, R->device, R->sp.n_train, R->log, R->err, R->errlen);
        if (b < 0) return 2;
        spec->batch = b;
    }
    R->r->batch = spec->batch;
    return 0;
}

/* ---- finish ------------------------------------------------------------------------------ */

/* The last phase's backend (holding the best weights) on the test split,
 * --save's weights (a failure kept in R->save_err, reported after the
 * summary is written), and the result line on the log. */
static void finish_test(Run *R)
{
    const RunConfig *c = R->c;
    RunResult *r = R->r;
    int last = r->phases - 1;
    Backend *b = R->be[last];
    r->train_seconds = r->phase_seconds[0] + (r->phases > 1 ? r->phase_seconds[1] : 0);
    r->test_acc = evaluate_set(b, &R->dv, R->sp.test, R->sp.n_test, NULL);
    if (c->save) {
        char *se = R->save_err;
        size_t sn = sizeof R->save_err;
        float *fin = malloc(sizeof(float) * (R->plans[last].param_floats + 1));
        if (!fin) snprintf(se, sn, "%s: out of memory for the final weights", c->save);
        if (fin) b->read_params(b, fin);
        if (fin && weights_save(&R->plans[last], fin, c->save, R->ds->class_names, R->ds->num_classes, se, sn) &&
            !se[0])
            snprintf(se, sn, "%s: cannot write the final weights", c->save);
        free(fin);
    }
    if (r->diverged) {
        fprintf(R->log, "result: DIVERGED at epoch %d step %d (lr %g); test_acc %.4f of the last good weights, "
                "train time %.2fs\n", r->div_epoch, r->div_step, r->div_lr, r->test_acc, r->train_seconds);
        return;
    }
    char ep[32];
    if (r->phases > 1) snprintf(ep, sizeof ep, "%d+%d", r->epochs[0], r->epochs[1]);
    else snprintf(ep, sizeof ep, "%d", r->epochs[0]);
    fprintf(R->log, "result: test_acc %.4f  val_acc %.4f  epochs %s  train time %.2fs (setup %.2fs apart%s)\n",
            r->test_acc, r->val_acc, ep, r->train_seconds, r->setup_seconds,
            r->cache_seconds > 0 ? ", feature caching included" : "");
}

/* Free whatever the stages made; metrics.csv is closed here, and a failure
 * to close it fails a run that had succeeded. Returns the run's code. */
static int run_release(Run *R, int rc)
{
    for (int k = 0; k < 2; k++)
        if (R->be[k]) R->be[k]->destroy(R->be[k]);
    for (int k = 0; k < R->nplans; k++) plan_free(&R->plans[k]);
    free(R->params);
    checkpoint_free(&R->ck);
    if (R->hk.metrics && fclose(R->hk.metrics) && rc == 0) {
        snprintf(R->err, R->errlen, "%s/metrics.csv: cannot write: %s", R->dir, strerror(errno));
        rc = 1;
    }
    split_free(&R->sp);
    checkpoint_free(&R->resume);
    graph_free(&R->g);
    return rc;
}

/* ---- the run ------------------------------------------------------------------------------ */

/* The stages in order (the file's comment); 0 when every one succeeded. */
static int run_stages(Run *R)
{
    int rc;
    if ((rc = setup_graph(R)) || (rc = folder_open(R)) || (rc = setup_data(R)) || (rc = setup_strategy(R)) ||
        (rc = folder_check_resume(R)))
        return rc;
    if (R->finished) return 0;          /* a finished run is left as it is */
    if ((rc = folder_start(R))) return rc;
    R->r->setup_seconds = kiln_now() - R->t0;

    R->dv = (DataView){R->ds, &R->sp, R->pp, NULL};
    for (int ph = 0; ph < R->phases; ph++)     /* a divergence lowers R->phases */
        if ((rc = phase_run(R, ph))) return rc;

    finish_test(R);
    if ((rc = folder_finish(R))) return rc;
    if (R->save_err[0]) {
        snprintf(R->err, R->errlen, "%s", R->save_err);
        return 1;
    }
    return 0;
}

int run_train(const RunConfig *c, RunShared *sh, RunResult *r, char *err, size_t errlen)
{
    RunShared local = {0};
    Run run, *R = &run;
    memset(R, 0, sizeof *R);
    memset(r, 0, sizeof *r);
    r->cached_layer = -1;
    R->c = c;
    R->sh = sh ? sh : &local;
    R->r = r;
    R->err = err;
    R->errlen = errlen;
    R->log = c->log ? c->log : stdout;
    R->t0 = kiln_now();
    R->spec = c->spec;
    int rc = run_release(R, run_stages(R));
    if (!sh) run_shared_free(&local);
    return rc;
}
